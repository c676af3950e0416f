#!/usr/bin/env bash
# On the GPU machine (repo root): W4 GEMV variant F's tests (its own program, the CUDA backend under F), the
# kernel bench with its per-block phase breakdown (with and without the L2 prefetch hint), `wkv bench` under F,
# the per-kernel times of one decode step under F (ncu), and with NCU_FULL=1 the full Nsight Compute section set
# of F's first q|k|v launch.
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_packed_probe.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
B=build/dev
cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
cmake --build $B -j16 --target wkv w4_gemv_packed_test cuda_backend_test wkv_kernel_bench_w4_gemv > "$OUT/build.log" 2>&1 \
  || { grep -E "error" -A3 "$OUT/build.log" | head -60 >> "$S"; pack_logs; exit 1; }
stamp "built"
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
( $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth.log" 2>&1 ) &
timeout 120 $B/tests/w4_gemv_packed_test > "$OUT/packed_test.log" 2>&1
echo "== w4_gemv_packed_test: exit $?" >> "$S"
grep -E "^\[  (PASSED|FAILED) |Failure|Which is|actual|trace:|seed|differs|determ" "$OUT/packed_test.log" | head -30 >> "$S"
WKV_W4_GEMV_VARIANT=F timeout 200 $B/tests/cuda_backend_test > "$OUT/backend_F.log" 2>&1
echo "== cuda_backend_test under F: exit $?" >> "$S"
grep -E "^\[  (PASSED|FAILED) |mean rel L2|actual" "$OUT/backend_F.log" | head -30 >> "$S"
stamp "tests done"
for pf in ${PREFETCH:-0}; do
  WKV_W4_PACKED_PREFETCH=$pf timeout 150 $B/kernels/bench/wkv_kernel_bench_w4_gemv > "$OUT/bench_w4_gemv_pf$pf.log" 2>&1
  echo "== w4_gemv bench, prefetch $pf: exit $?" >> "$S"
  grep -E "^ +[AF] B=1 |F phases|^ +[AF]: |FAILED|^[a-z|]+ +[0-9]+ x" "$OUT/bench_w4_gemv_pf$pf.log" >> "$S"
done
stamp "kernel benches done"
wait
WKV_W4_GEMV_VARIANT=F timeout 150 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 128 \
  --depth ${DEPTHS:-0,4096,16384,32768} --repeats 2 > "$OUT/bench_F.txt" 2>&1
echo "== wkv bench under F: exit $?" >> "$S"
grep -E "^\|" "$OUT/bench_F.txt" >> "$S"
WKV_W4_GEMV_VARIANT=F WKV_CUDA_GRAPH=0 timeout 120 ncu --clock-control none --cache-control none \
  --metrics gpu__time_duration.sum --csv --page raw --log-file "$OUT/ncu_step_F.csv" $B/engine/wkv bench $WKVQ \
  --mode w4kv4 --prompt-tokens 16 --gen 3 --depth 0 --repeats 1 > "$OUT/ncu_step_F.out" 2>&1
echo "== ncu, one decode step under F: exit $?" >> "$S"
python3 "$(dirname "$0")/ncu_kernel_summary.py" "$OUT/ncu_step_F.csv" >> "$S" 2>&1
[ -n "${NCU_FULL:-}" ] && WKV_W4_GEMV_VARIANT=F WKV_CUDA_GRAPH=0 timeout 120 ncu --clock-control none --set full -k regex:w4_gemv_packed \
  --launch-skip 128 --launch-count 1 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 16 --gen 2 --depth 0 \
  --repeats 1 > "$OUT/ncu_F_full.txt" 2>&1
echo "== ncu --set full, F q|k|v: exit $?" >> "$S"
grep -E "Duration|DRAM Throughput|Memory Throughput|Executed Ipc|Issue Slots Busy|Registers|Achieved Occupancy|Stall|stall|Warp Cycles Per Issued|Eligible|L2 Hit|Shared Memory Configuration|Dynamic Shared|Waves" "$OUT/ncu_F_full.txt" | head -40 >> "$S"
stamp "done"
pack_logs
