#!/usr/bin/env bash
# On the GPU machine (repo root): build, run the gpu tests, then `wkv bench` on a random-weight
# LLaMA-2-7B-shaped model at the depths of the CUDA issue, in the modes of $MODES (default: w4kv4 and w4
# from one .wkvq file; add fp16 to also synthesize and bench the FP16 checkpoint, ~13 GB). Logs in $OUT.
# Usage: SHARED=... GTEST_SRC=... OUT=... [MODES="w4kv4 w4 fp16"] [SKIP_TESTS=1] tests/tools/device_cuda_backend.sh
set -uo pipefail
source "$(dirname "$0")/device_build_and_test.sh"
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
HF=/tmp/llama2-7b-fp16
for mode in ${MODES:-w4kv4 w4}; do
  if [ "$mode" = fp16 ]; then
    [ -d $HF ] || $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" -o $HF 2>&1 | tail -1
    model=$HF
  else
    [ -f $WKVQ ] || $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ 2>&1 | tail -1
    model=$WKVQ
  fi
  $B/engine/wkv info $model --mode $mode | grep -E "backend|weights|KV cache"
  timeout ${BENCH_TIMEOUT:-240} $B/engine/wkv bench $model --mode $mode --prompt-tokens 2048 --gen 128 \
    --depth ${DEPTHS:-0,4096,16384,32768} --repeats ${REPEATS:-3} 2>&1 | tee "$OUT/bench_$mode.txt"
done
