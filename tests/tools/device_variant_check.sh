#!/usr/bin/env bash
# On the GPU machine (repo root): a new W4 GEMV variant's first run. Builds (Release, all tests), runs the
# variant's own test program first under a short timeout ($FIRST_TEST, a hang must not eat the lease), then all
# gpu tests, a memcheck of $FIRST_TEST, the W4 GEMV kernel bench, `wkv bench` (7B w4kv4, $DEPTHS) for each
# variant in $VARIANTS (default "A F"), and ncu counters of one decode step's W4 GEMV launches per variant.
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_variant_check.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
B=build/dev
FIRST_TEST=${FIRST_TEST:-w4_gemv_packed_test}
cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build $B -j16 > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -60 >> "$S"; pack_logs; exit 1; }
stamp "built"
timeout 120 $B/tests/$FIRST_TEST > "$OUT/first_test.log" 2>&1
rc=$?
echo "== $FIRST_TEST: exit $rc" >> "$S"
grep -E "^\[  (PASSED|FAILED|SKIPPED) |Failure|Expected|Which is|seed|y .* ref|rel L2|not determ|differs" "$OUT/first_test.log" | head -40 >> "$S"
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
( $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth.log" 2>&1 ) &
(cd $B && ctest -L gpu --output-on-failure -j2 --timeout 200) > "$OUT/gpu_tests.log" 2>&1
grep -E "tests passed|tests failed|\(Failed|\(Timeout" "$OUT/gpu_tests.log" | head -30 >> "$S"
stamp "gpu tests done"
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 99 $B/tests/$FIRST_TEST --gtest_brief=1 > "$OUT/memcheck.log" 2>&1
echo "memcheck $FIRST_TEST: exit $? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)" >> "$S"
wait
timeout 200 $B/kernels/bench/wkv_kernel_bench_w4_gemv > "$OUT/bench_w4_gemv.log" 2>&1
echo "== w4_gemv bench: exit $?" >> "$S"
grep -E "B=1 |per token|^ +[A-F]: |FAILED|^[a-z|]+ +[0-9]+ x" "$OUT/bench_w4_gemv.log" >> "$S"
stamp "kernel bench done"
for v in ${VARIANTS:-A F}; do
  WKV_W4_GEMV_VARIANT=$v timeout 200 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 128 \
    --depth ${DEPTHS:-0,4096,16384,32768} --repeats ${REPEATS:-2} > "$OUT/bench_$v.txt" 2>&1
  echo "== wkv bench, variant $v: exit $?" >> "$S"
  grep -E "^\|" "$OUT/bench_$v.txt" >> "$S"
done
for v in ${VARIANTS:-A F}; do
  WKV_W4_GEMV_VARIANT=$v WKV_CUDA_GRAPH=0 timeout 90 ncu --clock-control none \
    --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__inst_executed.sum \
    -k regex:w4_gemv --launch-skip 128 --launch-count 4 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 16 \
    --gen 2 --depth 0 --repeats 1 > "$OUT/ncu_$v.txt" 2>&1
  echo "== ncu, variant $v: exit $?" >> "$S"
  grep -E "w4_gemv|duration|throughput|inst_executed" "$OUT/ncu_$v.txt" | grep -v "==PROF==" | cut -c1-120 >> "$S"
done
stamp "done"
pack_logs
