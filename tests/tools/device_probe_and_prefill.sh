#!/usr/bin/env bash
# On the GPU machine (repo root): device_packed_probe.sh then device_prefill_profile.sh in one device call (they
# share build/dev and the synthesized 7B model). Results under $OUT/probe and $OUT/prefill.
set -uo pipefail
ROOT_OUT=$OUT
OUT=$ROOT_OUT/probe; mkdir -p "$OUT"; export OUT; bash "$(dirname "$0")/device_packed_probe.sh"
OUT=$ROOT_OUT/prefill; mkdir -p "$OUT"; export OUT; bash "$(dirname "$0")/device_prefill_profile.sh"
