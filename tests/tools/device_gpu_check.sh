#!/usr/bin/env bash
# On the GPU machine (repo root): build the CUDA backend and all tests, run the `gpu` tests, a
# compute-sanitizer memcheck pass over every gpu test program (tests/gpu/*_test.cpp; $MEMCHECK_ONLY limits
# it to a space-separated list), and the kernel benchmarks (skipped with NO_BENCH=1).
# Logs land in $OUT. Usage: SHARED=path/to/shared GTEST_SRC=path/to/googletest OUT=dir tests/tools/device_gpu_check.sh
set -uo pipefail
source "$(dirname "$0")/device_build_and_test.sh"
run_memcheck() {
  # cuda_oom_test's failed cudaMalloc calls are the point of the test: not reported as API errors.
  local api=explicit
  [ "$1" = cuda_oom_test ] && api=no
  timeout ${MEMCHECK_TIMEOUT:-300} compute-sanitizer --tool memcheck --report-api-errors $api --error-exitcode 99 \
    $B/tests/$1 --gtest_brief=1 \
    > "$OUT/memcheck_$1.log" 2>&1
  echo "memcheck $1: exit $? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$1.log" | tail -1)"
}
if command -v compute-sanitizer >/dev/null && [ -z "${NO_MEMCHECK:-}" ]; then
  export -f run_memcheck
  export B OUT
  tests=${MEMCHECK_ONLY:-$(ls tests/gpu/*_test.cpp | xargs -n1 basename | sed 's/\.cpp$//')}
  # cuda_oom_test fills the GPU: it runs alone, after the others (and not at all with MEMCHECK_NO_OOM=1).
  printf "%s\n" $tests | grep -v '^cuda_oom_test$' | xargs -P ${MEMCHECK_JOBS:-6} -I{} bash -c 'run_memcheck {}'
  if printf "%s\n" $tests | grep -q '^cuda_oom_test$' && [ -z "${MEMCHECK_NO_OOM:-}" ]; then run_memcheck cuda_oom_test; fi
fi
[ -n "${NO_BENCH:-}" ] && exit 0
for b in $B/kernels/bench/wkv_kernel_bench_*; do
  echo "== $b"; timeout 120 "$b" 2>&1 | tee "$OUT/$(basename "$b").log" | tail -25
done
