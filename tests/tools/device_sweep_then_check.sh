#!/usr/bin/env bash
# On the GPU machine (repo root): device_ring_sweep.sh, then device_session_check.sh (same build/dev), in one
# device call. Results under $OUT/sweep and $OUT/check.
set -uo pipefail
ROOT_OUT=$OUT
OUT=$ROOT_OUT/sweep; mkdir -p "$OUT"; export OUT; bash "$(dirname "$0")/device_ring_sweep.sh"
OUT=$ROOT_OUT/check; mkdir -p "$OUT"; export OUT; bash "$(dirname "$0")/device_session_check.sh"
