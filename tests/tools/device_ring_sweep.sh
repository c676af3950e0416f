#!/usr/bin/env bash
# On the GPU machine (repo root): variant F's ring-fill policy swept in the W4 GEMV kernel bench (F only, with
# its phase breakdown): pairs "EARLY/INFLIGHT" from $PAIRS (WKV_W4_PACKED_EARLY / WKV_W4_PACKED_INFLIGHT;
# default a baseline and the limits under test). Builds only the bench (build/dev); SKIP_BUILD=1 reuses it.
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_ring_sweep.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
B=build/dev
if [ -z "${SKIP_BUILD:-}" ]; then
  cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
  cmake --build $B -j16 --target wkv_kernel_bench_w4_gemv > "$OUT/build.log" 2>&1 \
    || { grep -E "error" -A3 "$OUT/build.log" | head -40 >> "$S"; pack_logs; exit 1; }
fi
for pair in ${PAIRS:-12/0 0/0 1/0 12/1 12/2 12/3 1/1 1/2}; do
  e=${pair%/*} i=${pair#*/}
  WKV_BENCH_VARIANTS=F WKV_W4_PACKED_EARLY=$e WKV_W4_PACKED_INFLIGHT=$i timeout 100 \
    $B/kernels/bench/wkv_kernel_bench_w4_gemv > "$OUT/bench_e${e}_i${i}.log" 2>&1
  echo "== early $e inflight $i: exit $?" >> "$S"
  grep -E "^ +F B=1 |F phases|^ +F: |FAILED" "$OUT/bench_e${e}_i${i}.log" >> "$S"
  stamp "early $e inflight $i done"
done
pack_logs
