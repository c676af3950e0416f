#!/usr/bin/env bash
# On the GPU machine (repo root): the streaming KV4 decode attention (WKV_KV4_ATTN=stream,
# kernels/src/kv4_decode_attention_stream.cu) against the default tensor-core kernel — the kernel tests and the
# CUDA backend tests under the variant (ctest prefix "stream.") next to the default kernel tests, the kernel bench
# (validates first) with and without the variant, and `wkv bench` w4kv4 at depths 4K/16K/32K with and without it
# (one run each). Writes $OUT/summary.txt and $OUT/logs.tgz.
# Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_attn_stream.sh
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
(cd $B && ctest -R "stream\.|GpuKv4DecodeAttention" --output-on-failure -j4 --timeout 200) > "$OUT/tests.log" 2>&1
grep -E "tests passed|tests failed|\(Failed|\*\*\*Failed" "$OUT/tests.log" >> "$S"
stamp "tests done"
for v in default stream; do
  attn=$v; [ $v = default ] && attn=
  WKV_KV4_ATTN=$attn timeout 100 $B/kernels/bench/wkv_kernel_bench_kv4_attention > "$OUT/kbench_$v.log" 2>&1
  echo "== kv4 attention bench, $v: exit $?" >> "$S"
  grep -E "validate decode|^graph|^stream" "$OUT/kbench_$v.log" >> "$S"
done
wait
stamp "kernel benches done"
for v in default stream; do
  attn=$v; [ $v = default ] && attn=
  WKV_KV4_ATTN=$attn timeout 150 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 128 \
    --depth 4096,16384,32768 --repeats 1 > "$OUT/bench_$v.txt" 2>&1
  echo "== wkv bench w4kv4, $v: exit $?" >> "$S"; grep -E "^\| +[0-9]" "$OUT/bench_$v.txt" >> "$S"
done
stamp "done"
pack_logs
