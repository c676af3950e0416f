#!/usr/bin/env bash
# On the GPU machine (repo root): build, run the gpu tests, then `wkv bench` on a random-weight
# LLaMA-2-7B-shaped W4KV4 model at the depths of the CUDA issue. Logs in $OUT.
# Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_cuda_backend.sh
set -uo pipefail
source "$(dirname "$0")/device_build_and_test.sh"
grep -E "mean rel L2" -r $B/Testing 2>/dev/null | head -3
MODEL=/tmp/llama2-7b-w4.wkvq
$B/engine/wkv synth --shape llama2-7b --tokenizer "$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model" --wkvq -o $MODEL 2>&1 | tail -1
$B/engine/wkv info $MODEL | grep -E "backend|weights|KV cache"
timeout ${BENCH_TIMEOUT:-240} $B/engine/wkv bench $MODEL --prompt-tokens 2048 --gen 128 --depth ${DEPTHS:-0,4096,16384,32768} --repeats 3 2>&1 | tee "$OUT/bench_w4kv4.txt"
