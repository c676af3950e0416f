#!/usr/bin/env bash
# On the GPU machine (repo root): build the CUDA backend and all tests, run the `gpu` tests, a
# compute-sanitizer memcheck pass over the KV4 and W4 kernel tests, and the kernel benchmarks.
# Logs land in $OUT. Usage: SHARED=path/to/shared GTEST_SRC=path/to/googletest OUT=dir tests/tools/device_gpu_check.sh
set -uo pipefail
B=build/dev
cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1 \
  || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build $B -j16 > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
(cd $B && ctest -L gpu --output-on-failure -j4 --timeout 300) > "$OUT/gpu_tests.log" 2>&1
grep -E "tests passed|tests failed|Failed|\(Failed|Skipped" "$OUT/gpu_tests.log" | head -40
if command -v compute-sanitizer >/dev/null; then
  for t in kv4_append_test kv4_decode_attention_test w4_gemv_test elementwise_test; do
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 99 $B/tests/$t --gtest_brief=1 > "$OUT/memcheck_$t.log" 2>&1
    echo "memcheck $t: exit $? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$t.log" | tail -1)"
  done
fi
for b in $B/kernels/bench/wkv_kernel_bench_*; do
  echo "== $b"; timeout 120 "$b" 2>&1 | tee "$OUT/$(basename "$b").log" | tail -25
done
