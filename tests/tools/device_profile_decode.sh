#!/usr/bin/env bash
# On the GPU machine (repo root): where the time of one 7B W4KV4 decode step goes.
#   1. build (unless SKIP_BUILD) and run the gpu tests (unless SKIP_TESTS), with a compute-sanitizer memcheck
#      of every gpu test program beside them (unless NO_MEMCHECK) and the 7B .wkvq synthesized meanwhile;
#   2. `wkv bench` at depth 0 with the graph and eager (WKV_CUDA_GRAPH=0): the per-token launch overhead;
#   3. ncu (one metric, gpu__time_duration) over an eager run: every kernel of one decode step
#      (tests/tools/ncu_kernel_summary.py);
#   4. ncu's detailed sections for $NCU_DETAIL_KERNELS (regex, default the W4 GEMV) in that step, once per
#      W4 GEMV variant in $NCU_VARIANTS (default A).
# Before 2: the kernel benches named in $KERNEL_BENCHES (e.g. "w4_gemv"), if any. WKV_W4_GEMV_VARIANT, when
# exported, applies to everything (tests, benches, ncu runs).
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_profile_decode.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
SKIP_TESTS_SAVED=${SKIP_TESTS:-}
SKIP_TESTS=1
source "$(dirname "$0")/device_build_and_test.sh" >> "$S" 2>&1
stamp built
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
( [ -f $WKVQ ] || $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth.log" 2>&1 ) &
if [ -z "$SKIP_TESTS_SAVED" ]; then
  # Correctness only, so the gpu tests and the memcheck pass share the GPU; the test that fills the GPU
  # (cuda_oom_test) runs alone afterwards, plain and under memcheck.
  ( (cd $B && ctest -L gpu -E OutOfMemory --output-on-failure -j2 --timeout ${CTEST_TIMEOUT:-300}) > "$OUT/gpu_tests.log" 2>&1 ) &
  if [ -z "${NO_MEMCHECK:-}" ]; then
    ( SKIP_BUILD=1 SKIP_TESTS=1 NO_BENCH=1 MEMCHECK_NO_OOM=1 MEMCHECK_JOBS=${MEMCHECK_JOBS:-6} MEMCHECK_TIMEOUT=${MEMCHECK_TIMEOUT:-240} \
      bash "$(dirname "$0")/device_gpu_check.sh" > "$OUT/memcheck.txt" 2>&1 ) &
  fi
  wait
  (cd $B && ctest -R OutOfMemory --output-on-failure --timeout 120) > "$OUT/gpu_tests_oom.log" 2>&1
  [ -z "${NO_MEMCHECK:-}" ] && SKIP_BUILD=1 SKIP_TESTS=1 NO_BENCH=1 MEMCHECK_ONLY=cuda_oom_test MEMCHECK_TIMEOUT=120 \
    bash "$(dirname "$0")/device_gpu_check.sh" >> "$OUT/memcheck.txt" 2>&1
fi
wait
stamp "tests done"
grep -hE "tests passed|tests failed|\(Failed|\(Skipped" "$OUT"/gpu_tests*.log >> "$S" 2>/dev/null
cat "$OUT/memcheck.txt" >> "$S" 2>/dev/null
for kb in ${KERNEL_BENCHES:-}; do  # e.g. KERNEL_BENCHES="w4_gemv kv4_attention"
  echo "== kernel bench $kb" >> "$S"
  timeout 150 $B/kernels/bench/wkv_kernel_bench_$kb > "$OUT/bench_$kb.log" 2>&1
  echo "exit $?" >> "$S"
  grep -vE "^\s*$" "$OUT/bench_$kb.log" | grep -vE "validate .* ok$" | tail -${KERNEL_BENCH_LINES:-60} >> "$S"
done
stamp "kernel benches done"
for g in 1 0; do
  echo "== wkv bench depth 0, WKV_CUDA_GRAPH=$g" >> "$S"
  WKV_CUDA_GRAPH=$g timeout 120 $B/engine/wkv bench $WKVQ --mode ${MODE:-w4kv4} --prompt-tokens 2048 --gen 128 \
    --depth 0 --repeats 2 > "$OUT/bench_graph$g.txt" 2>&1
  tail -8 "$OUT/bench_graph$g.txt" >> "$S"
done
stamp "bench done"
NCU="ncu --clock-control none"
left() { echo $(( ${BUDGET_S:-560} - ($(date +%s) - T0) )); }
WKV_CUDA_GRAPH=0 timeout $(left) $NCU --cache-control none --metrics gpu__time_duration.sum --csv --page raw --log-file "$OUT/ncu_step.csv" \
  $B/engine/wkv bench $WKVQ --mode ${MODE:-w4kv4} --prompt-tokens 16 --gen 3 --depth 0 --repeats 1 > "$OUT/ncu_step.out" 2>&1
echo "ncu step exit $?" >> "$S"
python3 "$(dirname "$0")/ncu_kernel_summary.py" "$OUT/ncu_step.csv" >> "$S" 2>&1
stamp "ncu step done"
# Detailed sections of the 4 W4 GEMV launches of layer 0 of the second decode step, per variant.
for v in ${NCU_VARIANTS:-A}; do
  WKV_W4_GEMV_VARIANT=$v WKV_CUDA_GRAPH=0 timeout $(left) $NCU --set full -k "regex:${NCU_DETAIL_KERNELS:-w4_gemv}" \
    --launch-skip ${NCU_SKIP:-128} --launch-count ${NCU_COUNT:-4} $B/engine/wkv bench $WKVQ --mode ${MODE:-w4kv4} \
    --prompt-tokens 16 --gen 2 --depth 0 --repeats 1 > "$OUT/ncu_detail_$v.txt" 2>&1
  echo "== ncu detail, variant $v: exit $?" >> "$S"
  grep -E "^  [a-z].*\(|Duration|DRAM Throughput|Executed Instructions   |Issue Slots Busy|Registers Per|Eligible Warps|Warp Cycles Per Issued|Achieved Active Warps|Dynamic Shared|cycles being stalled" -A1 \
    "$OUT/ncu_detail_$v.txt" | grep -vE "^--$|^\s+Section|Warning|Metric Name" >> "$S"
done
stamp "ncu detail done"
pack_logs
