#!/usr/bin/env bash
# On the GPU machine (repo root), session 6: programmatic dependent launch for W4 GEMV F (WKV_W4_PACKED_PDL
# 0 / 1 / 2, default 2) and the KV4 attention occupancy variants (WKV_KV4_TC_OCC), in one call: build, every
# gpu test (the PDL registrations included), the F kernel bench per PDL mode, the attention kernel bench per
# occupancy variant, `wkv bench` w4kv4 at all depths per PDL mode 0 / 2, with the best occupancy variant at
# 16K / 32K, and with host sampling (WKV_DEVICE_SAMPLING=0) at depth 0.
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_s6_pdl.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
source "$(dirname "$0")/device_build_and_test.sh" >> "$S" 2>&1
stamp "built and tested"
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
( $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth.log" 2>&1 ) &
for m in 0 1 2; do
  WKV_W4_PACKED_PDL=$m WKV_BENCH_VARIANTS=F timeout 60 $B/kernels/bench/wkv_kernel_bench_w4_gemv \
    > "$OUT/kbench_gemv_pdl$m.log" 2>&1
  echo "== w4_gemv bench F, PDL $m: exit $?" >> "$S"
  grep -E "^ +F B=1 |^ +F: |FAILED|^[a-z|]+ +[0-9]+ x" "$OUT/kbench_gemv_pdl$m.log" >> "$S"
done
best=default; best_t=999999
for v in default base 2x6 2x8; do
  occ=$v; [ $v = default ] && occ=
  WKV_KV4_TC_OCC=$occ timeout 100 $B/kernels/bench/wkv_kernel_bench_kv4_attention > "$OUT/kbench_attn_$v.log" 2>&1
  echo "== kv4 attention bench, $v: exit $?" >> "$S"
  grep -E "validate decode|^graph H32" "$OUT/kbench_attn_$v.log" >> "$S"
  t=$(grep -E "^graph H32/KV32 +ctx 32768" "$OUT/kbench_attn_$v.log" | awk '{print $5}')
  [ -n "$t" ] && awk "BEGIN{exit !($t < $best_t)}" && best=$v && best_t=$t
done
echo "best occupancy variant at 32K: $best ($best_t us)" >> "$S"
stamp "kernel benches done"
wait
bench() {  # name, env..., then wkv bench arguments after --
  local name=$1; shift
  local envs=(); while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
  env "${envs[@]}" timeout 150 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 128 "$@" \
    > "$OUT/bench_$name.txt" 2>&1
  echo "== wkv bench w4kv4, $name: exit $?" >> "$S"; grep -E "^\| +[0-9]" "$OUT/bench_$name.txt" >> "$S"
}
bench pdl2 WKV_W4_PACKED_PDL=2 -- --depth 0,4096,16384,32768 --repeats 1
bench pdl0 WKV_W4_PACKED_PDL=0 -- --depth 0,4096,16384,32768 --repeats 1
stamp "pdl benches done"
if [ $best != default ]; then bench "occ$best" WKV_KV4_TC_OCC=$best -- --depth 16384,32768 --repeats 1; fi
bench hostsampling WKV_DEVICE_SAMPLING=0 -- --depth 0 --repeats 1
stamp "done"
pack_logs
