#!/usr/bin/env bash
# On the GPU machine (repo root): WKVQuant calibration of ref-a on the GPU and the full WikiText-2
# perplexity table of docs/quality.md — every mode of the FP16 model, the WKVQuant .wkvq, and the ablations
# (each one a separate calibration; up to $JOBS run at once on the one GPU). Logs in $OUT.
# Usage: SHARED=... GTEST_SRC=... OUT=... [VARIANTS="default no-crr …"] [CALIB_ARGS="--samples 32 …"]
#        [TAG=name (suffix of the files of this set)] [BASE_MODES="" to skip the base table] [SKIP_TESTS=1]
#        tests/tools/device_calibration.sh
set -uo pipefail
source "$(dirname "$0")/device_build_and_test.sh"
WKV=$B/engine/wkv
M=$SHARED/models/ref-a
W=$SHARED/data/wikitext-2-raw/wiki.test.raw
V=$SHARED/data/wikitext-2-raw/wiki.valid.raw
ppl() {  # model mode tag
  "$WKV" ppl "$1" "$W" --mode "$2" > "$OUT/ppl_$3.txt" 2>&1
  echo "ppl $3 ($2): $(grep -E 'perplexity' "$OUT/ppl_$3.txt" | tail -1)"
}
calibrate() {  # variant
  local flags=""
  case $1 in
    default) ;; no-crr) flags="--no-crr" ;; no-lwc) flags="--no-lwc" ;; no-smooth) flags="--no-smooth" ;;
    k*) flags="--crr-k ${1#k}" ;;
  esac
  local v=$1$TAG
  /usr/bin/time -f "wall %e s, host peak RSS %M KiB" "$WKV" quantize "$M" --method wkvquant --calib "$V" \
    --device cuda ${CALIB_ARGS:-} $flags -o "/tmp/ref-a-$v.wkvq" > "$OUT/quantize_$v.log" 2>&1
  echo "calibration $v: exit $? | $(tr '\r' '\n' < "$OUT/quantize_$v.log" | grep -iE 'calibrat|peak|wall|loss' | tail -3 | tr '\n' ' ')"
  ppl "/tmp/ref-a-$v.wkvq" w4kv4 "wkvquant-$v"
  [ "$1" = default ] && ppl "/tmp/ref-a-$v.wkvq" w4kv4-nopoq "wkvquant-$v-nopoq"
}
export -f ppl calibrate
TAG=${TAG:-}
export WKV M W V OUT CALIB_ARGS TAG
(for mode in ${BASE_MODES-fp16 w4 kv4 w4kv4-rtn w4kv4-nopoq w4a4}; do ppl "$M" $mode $mode; done) &
printf "%s\n" ${VARIANTS:-default} | xargs -P ${JOBS:-4} -I{} bash -c 'calibrate {}'
wait
