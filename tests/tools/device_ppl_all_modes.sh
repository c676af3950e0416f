#!/usr/bin/env bash
# Full WikiText-2 perplexity of ref-a in every mode, run in parallel on a many-core machine (the GPU
# machine's CPUs): the CPU reference backend, 2 threads per mode. Writes $OUT/ppl_<mode>.txt.
# Usage (repo root): SHARED=path/to/shared OUT=dir tests/tools/device_ppl_all_modes.sh BUILD_DIR
set -euo pipefail
B=${1:-build/dev}
W=$SHARED/data/wikitext-2-raw/wiki.test.raw
M=$SHARED/models/ref-a
WKV=$B/engine/wkv
"$WKV" quantize "$M" --method stats --calib "$SHARED/data/wikitext-2-raw/wiki.valid.raw" --threads 4 \
  -o "$OUT/ref-a-stats.wkvq" 2>/dev/null
for mode in fp16 w4 kv4 w4kv4-rtn w4kv4-nopoq w4a4; do
  "$WKV" ppl "$M" "$W" --mode "$mode" --threads 2 > "$OUT/ppl_$mode.txt" 2>/dev/null &
done
"$WKV" ppl "$OUT/ref-a-stats.wkvq" "$W" --mode w4kv4 --threads 2 > "$OUT/ppl_w4kv4-stats.txt" 2>/dev/null &
"$WKV" ppl "$OUT/ref-a-stats.wkvq" "$W" --mode w4kv4-nopoq --threads 2 > "$OUT/ppl_w4kv4-nopoq-stats.txt" 2>/dev/null &
wait
grep -H perplexity "$OUT"/ppl_*.txt
