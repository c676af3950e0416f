#!/usr/bin/env bash
# On the GPU machine (repo root): the KV4 decode attention's V staging (WKV_KV4_STAGE_V) — its tests (staged and
# unstaged), a memcheck of its reference cases, cuda_backend_test, the KV4 attention kernel bench with and without
# it, and `wkv bench` w4kv4 with it (all depths) and without it (16K, 32K).
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_stage_v_check.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
B=build/dev
cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build $B -j16 --target wkv kv4_decode_attention_test cuda_backend_test wkv_kernel_bench_kv4_attention \
  > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40 >> "$S"; pack_logs; exit 1; }
stamp "built"
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
( $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth.log" 2>&1 ) &
(cd $B && ctest -R "GpuKv4DecodeAttention|unstagedV|^CudaBackend" --output-on-failure -j3 --timeout 200) \
  > "$OUT/tests.log" 2>&1
grep -E "tests passed|tests failed|\(Failed" "$OUT/tests.log" >> "$S"
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 99 $B/tests/kv4_decode_attention_test \
  --gtest_filter=*MatchesReference* --gtest_brief=1 > "$OUT/memcheck.log" 2>&1
echo "memcheck kv4_decode_attention_test MatchesReference: exit $? $(grep 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)" >> "$S"
stamp "tests done"
for sv in 1 0; do
  WKV_KV4_STAGE_V=$sv timeout 100 $B/kernels/bench/wkv_kernel_bench_kv4_attention > "$OUT/kbench_sv$sv.log" 2>&1
  echo "== kv4 attention bench, stage_v $sv: exit $?" >> "$S"
  grep -E "validate|ctx" "$OUT/kbench_sv$sv.log" | head -20 >> "$S"
done
stamp "kernel benches done"
wait
WKV_KV4_STAGE_V=1 timeout 150 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 128 \
  --depth 0,4096,16384,32768 --repeats 2 > "$OUT/bench_sv1.txt" 2>&1
echo "== wkv bench w4kv4, stage_v 1: exit $?" >> "$S"; grep -E "^\|" "$OUT/bench_sv1.txt" >> "$S"
WKV_KV4_STAGE_V=0 timeout 100 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 128 \
  --depth 16384,32768 --repeats 2 > "$OUT/bench_sv0.txt" 2>&1
echo "== wkv bench w4kv4, stage_v 0: exit $?" >> "$S"; grep -E "^\|" "$OUT/bench_sv0.txt" >> "$S"
stamp "done"
pack_logs
