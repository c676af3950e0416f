#!/usr/bin/env bash
# On the GPU machine (repo root), the closing check of a session: build, every gpu test (ctest -L gpu; the
# GPU-filling cuda_oom_test runs alone), a compute-sanitizer memcheck of the programs in $MEMCHECK_ONLY
# (default: all), with KBENCH=1 the W4 GEMV kernel bench, and `wkv bench` on the 7B shape at the issue's depths
# in $MODES (default w4kv4 w4 fp16).
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_session_check.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
source "$(dirname "$0")/device_build_and_test.sh" >> "$S" 2>&1
stamp "built and tested"
SKIP_BUILD=1 SKIP_TESTS=1 NO_BENCH=1 bash "$(dirname "$0")/device_gpu_check.sh" >> "$S" 2>&1
stamp "memcheck done"
if [ -n "${KBENCH:-}" ]; then  # the W4 GEMV kernel bench (all variants, F's phase breakdown)
  timeout 150 $B/kernels/bench/wkv_kernel_bench_w4_gemv > "$OUT/bench_w4_gemv.log" 2>&1
  echo "== w4_gemv bench: exit $?" >> "$S"
  grep -E "^ +[A-F] B=1 |F phases|^ +[A-F]: |FAILED|^[a-z|]+ +[0-9]+ x" "$OUT/bench_w4_gemv.log" >> "$S"
  stamp "kernel bench done"
fi
SKIP_BUILD=1 SKIP_TESTS=1 MODES="${MODES:-w4kv4 w4 fp16}" REPEATS=${REPEATS:-2} BENCH_TIMEOUT=${BENCH_TIMEOUT:-200} \
  bash "$(dirname "$0")/device_cuda_backend.sh" > "$OUT/benches.txt" 2>&1
grep -vE "^depth .* run [0-9]+:" "$OUT/benches.txt" >> "$S"
stamp "benches done"
pack_logs
