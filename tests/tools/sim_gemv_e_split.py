# Simulates variant E's work split and pipeline bookkeeping (not the math): every (row, slice) of the matrix
# must be consumed exactly once by the math step of the warp that owns it, with the right loads in the buffer.
import itertools
def sim(rows, cols, sms=132, kWarps=16, kStep=2):
    slices = cols // 128
    tiles = (rows + 15) // 16
    blocks = max(1, min(sms, tiles))
    used = {}
    for b in range(blocks):
        t0 = tiles * b // blocks; t1 = tiles * (b + 1) // blocks
        for w in range(kWarps):
            sb = w * slices // kWarps; se = (w + 1) * slices // kWarps
            nsteps = (se - sb + kStep - 1) // kStep
            cur = None
            if nsteps > 0 and t0 < t1: cur = (t0, sb, min(kStep, se - sb))
            for tile in range(t0, t1):
                s0 = sb
                for c in range(nsteps):
                    n = min(kStep, se - s0)
                    nxt = None
                    if c + 1 < nsteps: nxt = (tile, s0 + kStep, min(kStep, se - s0 - kStep))
                    elif tile + 1 < t1: nxt = (tile + 1, sb, min(kStep, se - sb))
                    assert cur == (tile, s0, n), (cur, tile, s0, n)
                    for u in range(n):
                        key = (tile, s0 + u)
                        assert key not in used; used[key] = (b, w)
                    cur = nxt; s0 += kStep
    assert len(used) == tiles * slices, (len(used), tiles * slices)
    return blocks
for r, c in [(12288, 4096), (22016, 4096), (4096, 11008), (4096, 4096), (37, 256), (1, 128), (4097, 1024), (16, 32768), (65, 32768), (300, 2048), (70, 1920)]:
    print(r, c, sim(r, c), "ok")
