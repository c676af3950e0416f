# Sourced by the device_*.sh scripts that report through one summary (GPU machine): $OUT (the folder the
# device tool returns) gets summary.txt ($S) and, via pack_logs, logs.tgz; the logs go to $OUT/logs while
# the script runs (OUT is pointed there, FINAL_OUT keeps the original). stamp MESSAGE adds "[seconds] MESSAGE".
FINAL_OUT=$OUT
mkdir -p "$FINAL_OUT/logs"
OUT=$FINAL_OUT/logs
S=$FINAL_OUT/summary.txt
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*" >> "$S"; }
pack_logs() { tar czf "$FINAL_OUT/logs.tgz" -C "$FINAL_OUT" logs && rm -rf "$FINAL_OUT/logs"; }
