#!/usr/bin/env bash
# On the GPU machine (repo root): why W4 prefill is slower than FP16 prefill. Runs one 2048-token prefill of the
# 7B shape per mode in $MODES (default "w4 fp16": the same FP16 KV cache, only the linears differ) under ncu
# (gpu__time_duration of every kernel) and prints the per-kernel totals of the whole run for each mode
# (tests/tools/ncu_kernel_summary.py), plus `wkv bench` prefill rates without the profiler.
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_prefill_profile.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
B=build/dev
cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DWKV_BUILD_TESTS=OFF \
  -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build $B -j16 --target wkv > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40 >> "$S"; pack_logs; exit 1; }
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
for mode in ${MODES:-w4 fp16}; do
  if [ "$mode" = fp16 ]; then
    model=/tmp/llama2-7b-fp16
    [ -d $model ] || $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" -o $model > "$OUT/synth_fp16.log" 2>&1
  else
    model=/tmp/llama2-7b-w4.wkvq
    [ -f $model ] || $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $model > "$OUT/synth_w4.log" 2>&1
  fi
  timeout 150 $B/engine/wkv bench $model --mode $mode --prompt-tokens 2048 --gen 8 --depth 0 --repeats 2 \
    > "$OUT/bench_$mode.txt" 2>&1
  echo "== wkv bench $mode: exit $?" >> "$S"
  grep -E "^\|" "$OUT/bench_$mode.txt" >> "$S"
  WKV_CUDA_GRAPH=0 timeout 200 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    --page raw --log-file "$OUT/ncu_prefill_$mode.csv" $B/engine/wkv bench $model --mode $mode --prompt-tokens 2048 \
    --gen 1 --depth 0 --repeats 1 > "$OUT/ncu_prefill_$mode.out" 2>&1
  echo "== ncu, 2048-token prefill, $mode: exit $?" >> "$S"
  python3 "$(dirname "$0")/ncu_kernel_summary.py" "$OUT/ncu_prefill_$mode.csv" | sed -n '/whole log/,$p' | head -25 >> "$S"
  stamp "$mode done"
done
pack_logs
