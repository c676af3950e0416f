#!/usr/bin/env python3
"""Per-kernel time of one decode step from an `ncu --csv --page raw` log of an eager (WKV_CUDA_GRAPH=0) run.

Each forward starts with embedding_kernel, so the launches after its last occurrence are the last decode
step. Prints, for that step, every kernel (short name) with its launch count, total and mean duration
(gpu__time_duration.sum), sorted by total, and the step's sum; then the same totals for the whole log.
Usage: ncu_kernel_summary.py NCU_CSV
"""
import csv
import re
import sys
from collections import OrderedDict


def short(name):
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"(\(anonymous namespace\)|<unnamed>|unnamed>|wkv|kernels)::", "", name)
    # template arguments stay (they tell the variants apart); the parameter list goes
    depth, out = 0, ""
    for ch in name:
        if ch == "(" and depth == 0:
            break
        depth += ch == "<"
        depth -= ch == ">"
        out += ch
    return out.strip()


def main(path):
    rows = []
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    reader = csv.reader(lines)
    header = next(reader)
    ki = header.index("Kernel Name")
    ti = header.index("gpu__time_duration.sum")
    for r in reader:
        try:
            rows.append((short(r[ki]), float(r[ti].replace(",", ""))))
        except (ValueError, IndexError):
            continue  # the units row
    starts = [i for i, (n, _) in enumerate(rows) if n.startswith("embedding_kernel")]
    if not starts:
        sys.exit("no embedding_kernel launch in the log")
    step = rows[starts[-1]:]
    for title, part in (("last decode step", step), ("whole log", rows)):
        agg = OrderedDict()
        for n, t in part:
            c, s = agg.get(n, (0, 0.0))
            agg[n] = (c + 1, s + t)
        total = sum(t for _, t in part)
        print(f"== {title}: {len(part)} launches, sum {total / 1000:.1f} us")
        for n, (c, s) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
            print(f"{s / 1000:10.1f} us {100 * s / total:5.1f}%  x{c:<5d} mean {s / c / 1000:8.2f} us  {n}")


if __name__ == "__main__":
    main(sys.argv[1])
