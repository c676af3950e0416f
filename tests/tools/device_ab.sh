#!/usr/bin/env bash
# On the GPU machine (repo root): interleaved A/B runs of `wkv bench` w4kv4 on the 7B shape, so that drifting
# clocks do not pass for a difference between settings. Each setting is one line of $AB: "name ENV=V ..."
# ("name -" for no variables); ROUNDS rounds, each running every setting once at the depths $DEPTHS. A setting
# with BENCH_MODE=m benches mode m instead (e.g. w4: the same W4 linears over an FP16 KV cache).
# Builds first (only the targets in BUILD_TARGETS if set) unless SKIP_BUILD=1; TESTS="ctest regex" runs those
# gpu tests after the build (TEST_EXCLUDE: a regex of tests left out, TEST_J: parallel tests, default 2,
# TEST_TIMEOUT: seconds per test, default 200); KATTN="v1 v2 ..." runs the KV4 attention kernel bench per
# setting ("default", "attn:tc", "attn:ring", "occ:2x6" = the tc kernel's variant), KW4 (lines as in AB) the
# W4 GEMV kernel bench per setting, KEXTRA="op ..." the kernel benches wkv_kernel_bench_<op> once each,
# MEMCHECK="test ..." a compute-sanitizer memcheck of those gpu test programs (before any timing;
# MEMCHECK_FILTER: a gtest filter for them), NCU (below) Nsight Compute's full sections of chosen launches.
# GPU clocks are logged before and after.
# Writes $OUT/summary.txt and $OUT/logs.tgz. Usage: SHARED=... GTEST_SRC=... OUT=... AB=... tests/tools/device_ab.sh
set -uo pipefail
source "$(dirname "$0")/device_out.sh"
B=build/dev
if [ -z "${SKIP_BUILD:-}" ]; then
  cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1
  cmake --build $B -j16 ${BUILD_TARGETS:+--target $BUILD_TARGETS} > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40 >> "$S"; pack_logs; exit 1; }
  stamp "built"
fi
TOK="$SHARED/data/llama2c/llama2-tokenizer/tokenizer.model"
WKVQ=/tmp/llama2-7b-w4.wkvq
[ -f $WKVQ ] || ( $B/engine/wkv synth --shape llama2-7b --tokenizer "$TOK" --wkvq -o $WKVQ > "$OUT/synth.log" 2>&1 ) &
if [ -n "${TESTS:-}" ]; then
  (cd $B && ctest -L gpu -R "$TESTS" ${TEST_EXCLUDE:+-E "$TEST_EXCLUDE"} --output-on-failure -j${TEST_J:-2} \
    --timeout ${TEST_TIMEOUT:-200}) > "$OUT/tests.log" 2>&1
  grep -E "tests passed|tests failed|\((Failed|Timeout)\)" "$OUT/tests.log" >> "$S"
  stamp "tests done"
fi
for t in ${MEMCHECK:-}; do
  timeout 180 compute-sanitizer --tool memcheck --error-exitcode 99 $B/tests/$t --gtest_brief=1 \
    ${MEMCHECK_FILTER:+--gtest_filter=$MEMCHECK_FILTER} > "$OUT/memcheck_$t.log" 2>&1
  echo "memcheck $t: exit $? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$t.log" | tail -1)" >> "$S"
done
nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv >> "$S" 2>&1
for k in ${KEXTRA:-}; do
  timeout 150 $B/kernels/bench/wkv_kernel_bench_$k > "$OUT/kbench_$k.log" 2>&1
  echo "== kernel bench $k: exit $?" >> "$S"; grep -vE "^$" "$OUT/kbench_$k.log" | tail -6 >> "$S"
done
for v in ${KATTN:-}; do
  envs=(); case $v in occ:*) envs=(WKV_KV4_ATTN=tc WKV_KV4_TC_OCC=${v#occ:});; attn:*) envs=(WKV_KV4_ATTN=${v#attn:});; esac
  env "${envs[@]}" timeout 100 $B/kernels/bench/wkv_kernel_bench_kv4_attention > "$OUT/kbench_attn_${v/:/_}.log" 2>&1
  echo "== kv4 attention bench, $v: exit $?" >> "$S"
  grep -E "validate decode|^graph H32|^split" "$OUT/kbench_attn_${v/:/_}.log" >> "$S"
done
# Reads setting lines "name ENV=V ..." ("name -": none) from stdin and prints "name<TAB>env" per setting.
settings() { while read -r name envs; do [ -n "$name" ] && printf '%s\t%s\n' "$name" "${envs/#-/}"; done; }
# KW4: W4 GEMV kernel bench per setting, lines as in AB (the per-token graph of all linears).
while IFS=$'\t' read -r name envs; do
  env $envs timeout 150 $B/kernels/bench/wkv_kernel_bench_w4_gemv > "$OUT/kbench_w4_${name}.log" 2>&1
  echo "== w4 gemv bench, $name ($envs): exit $?" >> "$S"
  grep -E "^ +F B=1 |^ +[A-F]: |FAILED|validate F" "$OUT/kbench_w4_${name}.log" >> "$S"
done < <(settings <<< "${KW4:-}")
wait
[ -n "${KATTN:-}${KW4:-}" ] && stamp "kernel benches done"
# NCU="name regex skip ...": Nsight Compute's full section set of one launch per triple (the first launch of a
# kernel matching regex after `skip` such launches) in an eager w4kv4 run (2048-token prompt, 3 tokens).
set -- ${NCU:-}
while [ $# -ge 3 ]; do
  name=$1 re=$2 skip=$3
  shift 3
  WKV_CUDA_GRAPH=0 timeout 200 ncu --clock-control none --set full -k "regex:$re" --launch-skip "$skip" \
    --launch-count 1 $B/engine/wkv bench $WKVQ --mode w4kv4 --prompt-tokens 2048 --gen 3 --depth 0 \
    --repeats 1 > "$OUT/ncu_$name.txt" 2>&1
  echo "== ncu --set full, $name ($re, skip $skip): exit $?" >> "$S"
  grep -E "^  [a-zA-Z_].*\(|Duration|DRAM Throughput|Memory Throughput|L2 Hit|Executed Ipc|Issue Slots Busy|Registers Per|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Eligible Warps|No Eligible|Waves Per SM|Block Limit|Stall|stall" \
    "$OUT/ncu_$name.txt" | head -45 >> "$S"
done
for r in $(seq 1 ${ROUNDS:-2}); do
  while IFS=$'\t' read -r name envs; do
    mode=$(sed -n 's/.*BENCH_MODE=\([a-z0-9-]*\).*/\1/p' <<< "$envs")
    env $envs timeout 150 $B/engine/wkv bench $WKVQ --mode ${mode:-w4kv4} --prompt-tokens 2048 --gen 128 \
      --depth ${DEPTHS:-0,32768} --repeats 1 > "$OUT/bench_${name}_$r.txt" 2>&1
    echo "== round $r, $name ($envs): exit $?" >> "$S"; grep -E "^\| +[0-9]" "$OUT/bench_${name}_$r.txt" >> "$S"
  done < <(settings <<< "$AB")
done
nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv >> "$S" 2>&1
stamp "done"
pack_logs
