#!/usr/bin/env bash
# On the GPU machine (repo root): build the CUDA backend and all tests, run the `gpu` tests, a
# compute-sanitizer memcheck pass over the KV4 and W4 kernel tests, and the kernel benchmarks.
# Logs land in $OUT. Usage: SHARED=path/to/shared GTEST_SRC=path/to/googletest OUT=dir tests/tools/device_gpu_check.sh
set -uo pipefail
source "$(dirname "$0")/device_build_and_test.sh"
if command -v compute-sanitizer >/dev/null; then
  for t in kv4_append_test kv4_decode_attention_test w4_gemv_test elementwise_test; do
    timeout 150 compute-sanitizer --tool memcheck --error-exitcode 99 $B/tests/$t --gtest_brief=1 > "$OUT/memcheck_$t.log" 2>&1
    echo "memcheck $t: exit $? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$t.log" | tail -1)"
  done
fi
for b in $B/kernels/bench/wkv_kernel_bench_*; do
  echo "== $b"; timeout 120 "$b" 2>&1 | tee "$OUT/$(basename "$b").log" | tail -25
done
