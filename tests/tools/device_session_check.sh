#!/usr/bin/env bash
# On the GPU machine (repo root), the closing check of a session: build, every gpu test (ctest -L gpu; the
# GPU-filling cuda_oom_test runs alone), a compute-sanitizer memcheck of the programs in $MEMCHECK_ONLY
# (default: all), with KBENCH=1 the W4 GEMV kernel bench, and `wkv bench` on the 7B shape at the issue's depths
# in $MODES (default w4kv4 w4 fp16); NO_WARMUP_ROW=1 adds a w4kv4 depth-0 run without the bench's warm-up,
# NCU_STEP=1 the per-kernel times of one eager w4kv4 decode step.
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
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
[ -f $WKVQ ] || $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth_extra.log" 2>&1
if [ -n "${NO_WARMUP_ROW:-}" ]; then  # what the untimed warm-up run changes (w4kv4, depth 0)
  timeout 120 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 128 --depth 0 --repeats 2 --no-warmup \
    > "$OUT/bench_no_warmup.txt" 2>&1
  echo "== wkv bench w4kv4 --no-warmup: exit $?" >> "$S"
  grep -E "^\|" "$OUT/bench_no_warmup.txt" >> "$S"
fi
if [ -n "${NCU_STEP:-}" ]; then  # one eager w4kv4 decode step, kernel by kernel
  WKV_CUDA_GRAPH=0 timeout 120 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    --page raw --log-file "$OUT/ncu_step.csv" $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 16 --gen 3 \
    --depth 0 --repeats 1 --no-warmup > "$OUT/ncu_step.out" 2>&1
  echo "== ncu, one w4kv4 decode step: exit $?" >> "$S"
  python3 "$(dirname "$0")/ncu_kernel_summary.py" "$OUT/ncu_step.csv" | sed '/whole log/,$d' >> "$S" 2>&1
fi
stamp "extras done"
pack_logs
