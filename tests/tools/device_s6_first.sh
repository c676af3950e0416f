#!/usr/bin/env bash
# On the GPU machine (repo root), branch wip-s6 (= main + wip-attn-occupancy + wip-gpu-topk + wip-f-trace) in
# one device call: build, every gpu test (the attention's occupancy variants and top_k_test included), memcheck
# of the new or changed programs, the W4 GEMV kernel bench (F's cold and warm phases), the KV4 attention
# occupancy sweep (kernel bench + wkv bench at 4K/16K/32K) and `wkv bench` w4kv4 at all depths.
# Writes $OUT/summary.txt (and the sub-scripts' logs). Usage: SHARED=... GTEST_SRC=... OUT=... tests/tools/device_s6_first.sh
set -uo pipefail
ROOT_OUT=$OUT
OUT=$ROOT_OUT/check; mkdir -p "$OUT"; export OUT
KBENCH=1 MODES="w4kv4" MEMCHECK_ONLY="top_k_test cuda_backend_test kv4_decode_attention_test w4_gemv_packed_test" \
  MEMCHECK_NO_OOM=1 bash "$(dirname "$0")/device_session_check.sh"
OUT=$ROOT_OUT/occupancy; mkdir -p "$OUT"; export OUT
bash "$(dirname "$0")/device_attn_occupancy.sh"
cat "$ROOT_OUT/check/summary.txt" "$ROOT_OUT/occupancy/summary.txt" > "$ROOT_OUT/summary.txt"
