#!/usr/bin/env bash
# On the GPU machine (repo root): why a W4 GEMV variant runs below the bandwidth limit. Builds only `wkv` and
# the W4 GEMV bench (Release), runs the bench, dumps where the loads / mma / barriers sit in the SASS of each
# fast kernel (cuobjdump), and asks ncu for the per-reason warp stall cycles of the first decode-step launch of
# each variant in $VARIANTS (default "A C D") in a 7B decode step.
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_gemv_probe.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
B=build/dev
cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DWKV_BUILD_TESTS=OFF \
  -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build $B -j16 --target wkv wkv_kernel_bench_w4_gemv > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40 >> "$S"; exit 1; }
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
( [ -f $WKVQ ] || $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth.log" 2>&1 ) &
timeout 150 $B/kernels/bench/wkv_kernel_bench_w4_gemv > "$OUT/bench_w4_gemv.log" 2>&1
echo "== w4_gemv bench: exit $?" >> "$S"
grep -E "B=1 |per token|A:|B:|C:|D:|FAILED|^[a-z|]+ +[0-9]+ x" "$OUT/bench_w4_gemv.log" >> "$S"
wait
# SASS: the order of global / shared loads, mma, barriers and branches in each fast kernel's main loop.
for o in $(find $B/kernels -name "w4_gemv*.o"); do cuobjdump -sass "$o" >> "$OUT/sass.txt" 2>&1; done
python3 - "$OUT/sass.txt" >> "$S" <<'PY'
import re, sys
fn, lines = None, {}
for l in open(sys.argv[1]):
    m = re.search(r"Function : (\S+)", l)
    if m: fn = m.group(1); lines[fn] = []; continue
    if fn and re.search(r"/\*[0-9a-f]{4}\*/", l): lines[fn].append(l.strip())
for fn, ls in lines.items():
    if not re.search(r"fast_kernelILi1ELi4ELb0E|tc_kernelILb1E|bulk_kernelILb1E", fn): continue
    ops = []
    for l in ls:
        m = re.search(r"/\*([0-9a-f]{4})\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)", l)
        if m and re.match(r"(LDG|LDS|HMMA|BAR|BRA|SYNCS|UBLKCP|UTMA|LDGSTS|EXIT|FFMA|HADD2|WARPSYNC)", m.group(3)):
            ops.append(m.group(3).split(".")[0])
    # run-length encode the op sequence
    out, prev, n = [], None, 0
    for o in ops + [None]:
        if o == prev: n += 1; continue
        if prev: out.append(f"{prev}x{n}" if n > 1 else prev)
        prev, n = o, 1
    print(f"== SASS {fn[:60]}: {len(ls)} instructions\n  " + " ".join(out)[:3000])
PY
STALLS="smsp__average_warp_latency_issue_stalled_barrier,smsp__average_warp_latency_issue_stalled_long_scoreboard,smsp__average_warp_latency_issue_stalled_short_scoreboard,smsp__average_warp_latency_issue_stalled_wait,smsp__average_warp_latency_issue_stalled_math_pipe_throttle,smsp__average_warp_latency_issue_stalled_mio_throttle,smsp__average_warp_latency_issue_stalled_lg_throttle,smsp__average_warp_latency_issue_stalled_not_selected,smsp__average_warp_latency_issue_stalled_selected,smsp__average_warp_latency_issue_stalled_dispatch_stall,smsp__average_warp_latency_issue_stalled_no_instruction,smsp__average_warp_latency_issue_stalled_sleeping,smsp__average_warp_latency_issue_stalled_branch_resolving,smsp__average_warp_latency_issue_stalled_membar,smsp__average_warp_latency_issue_stalled_drain,smsp__average_warp_latency_issue_stalled_imc_miss,smsp__average_warp_latency_issue_stalled_tex_throttle,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum,smsp__warps_issue_stalled_long_scoreboard_per_issue_active.ratio"
for v in ${VARIANTS:-A C D}; do
  WKV_W4_GEMV_VARIANT=$v WKV_CUDA_GRAPH=0 timeout 60 ncu --clock-control none --metrics "$STALLS" -k regex:w4_gemv \
    --launch-skip 128 --launch-count 3 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 16 --gen 2 --depth 0 \
    --repeats 1 > "$OUT/ncu_stalls_$v.txt" 2>&1
  echo "== stall reasons, variant $v: exit $?" >> "$S"
  grep -E "w4_gemv|stalled|duration|throughput|inst_executed" "$OUT/ncu_stalls_$v.txt" | grep -vE "==PROF==" \
    | awk '{ if ($NF+0 > 0.05 || $0 ~ /w4_gemv|duration|throughput|inst/) print }' | cut -c1-150 >> "$S"
done
pack_logs
