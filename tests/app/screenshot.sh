#!/usr/bin/env bash
# Launches the real app under Xvfb with a fresh data folder, sends one chat message (--demo-prompt),
# and saves the window (QWidget::grab) to docs/screenshots/main-window.png once the reply is done.
#   tests/app/screenshot.sh [BUILD_DIR] [MODEL]
# BUILD_DIR defaults to build (the app at BUILD_DIR/app/wkvchat); MODEL defaults to the bundled model,
# else ../shared/models/ref-a.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
model=${2:-}
if [[ -z $model ]]; then
  bundled=$(ls "$build"/app/models/*.wkvq 2>/dev/null | head -n1 || true)
  shared=${WKV_SHARED_DIR:-$root/../shared}
  [[ -d $shared ]] || shared=/work/shared
  model=${bundled:-$shared/models/ref-a}
fi
# The bundled .wkvq runs WKVQuant's w4kv4; an FP16 checkpoint shows the round-to-nearest W4KV4 mode.
mode=w4kv4
[[ $model == *.wkvq ]] || mode=w4kv4-rtn
out=$root/docs/screenshots/main-window.png
mkdir -p "$(dirname "$out")"
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
export WKVCHAT_DATA_DIR=$data WKVCHAT_MODEL=$model QT_QPA_PLATFORM=xcb
command -v xvfb-run >/dev/null || { echo "xvfb-run not found (apt install xvfb)"; exit 1; }
xvfb-run -a -s "-screen 0 1400x900x24" "$build/app/wkvchat" \
  --mode "${WKVCHAT_MODE:-$mode}" --demo-prompt "Once upon a time, there was a little" --screenshot "$out"
echo "wrote $out"
