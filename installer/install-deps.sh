#!/usr/bin/env bash
# Installs every build and test dependency of WKV Chat from Debian 12 (bookworm) apt repositories.
#
#   installer/install-deps.sh            # everything: toolchain, engine, tests, Qt6 app, Xvfb, screenshots
#   installer/install-deps.sh --no-gui   # engine + CLI + tests only (no Qt, no Xvfb)
#   installer/install-deps.sh --check    # only report what is missing (exit 1 if anything is)
#
# Idempotent and non-interactive: when every package is already installed it returns at once without
# touching apt. Runs as root, or through sudo when started by another user. CUDA is not installed here:
# the CUDA backend is optional (WKV_CUDA=AUTO) and needs NVIDIA's toolkit (nvcc) from NVIDIA.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

gui=1
check_only=0
for arg in "$@"; do
  case "$arg" in
    --no-gui) gui=0 ;;
    --check) check_only=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install-deps: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

# Toolchain, engine (sentencepiece), tests (GoogleTest/GoogleMock), packaging (CPack .deb needs
# dpkg-dev and file for dpkg-shlibdeps).
packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates dpkg-dev file
  libsentencepiece-dev
  libgtest-dev libgmock-dev
  libsqlite3-dev sqlite3
)
# The Qt6 desktop app and its tests: Widgets/Sql/Test/Concurrent come with qt6-base-dev; the SQLite
# driver, the offscreen/xcb platform plugins and a font must be named explicitly because we skip
# "Recommends". Xvfb runs the app headless for screenshots; ImageMagick crops/compares them.
gui_packages=(
  qt6-base-dev qt6-base-dev-tools libqt6opengl6-dev qt6-charts-dev qt6-svg-dev qt6-pdf-dev
  libqt6sql6-sqlite qt6-qpa-plugins
  libgl1-mesa-dev
  xvfb xauth imagemagick fonts-dejavu-core
)
if [[ $gui == 1 ]]; then
  packages+=("${gui_packages[@]}")
fi

if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  . /etc/os-release
  if [[ "${ID:-}" != debian || "${VERSION_ID:-}" != 12 ]]; then
    echo "install-deps: note: written for Debian 12; this is ${PRETTY_NAME:-unknown}. Trying anyway." >&2
  fi
fi
if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  echo "install-deps: needs dpkg and apt-get (Debian/Ubuntu). Install the equivalents of: ${packages[*]}" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} == 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed$([[ $gui == 0 ]] && echo ' (--no-gui)')."
  exit 0
fi
echo "install-deps: missing ${#missing[@]} of ${#packages[@]} packages: ${missing[*]}"
if [[ $check_only == 1 ]]; then
  exit 1
fi

if [[ $EUID == 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo --preserve-env=DEBIAN_FRONTEND)
  echo "install-deps: not root: using sudo"
else
  echo "install-deps: must run as root (or with sudo installed) to install: ${missing[*]}" >&2
  exit 1
fi

run() {
  echo "+ $*"
  "$@"
}

run "${as_root[@]}" apt-get update -q

# Fail early, with the names, if this distribution lacks a package (e.g. not Debian 12).
unavailable=()
for p in "${missing[@]}"; do
  if [[ "$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')" =~ ^(\(none\))?$ ]]; then
    unavailable+=("$p")
  fi
done
if [[ ${#unavailable[@]} != 0 ]]; then
  echo "install-deps: no installable candidate for: ${unavailable[*]} (this list is for Debian 12)" >&2
  exit 1
fi

run "${as_root[@]}" apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

echo "install-deps: done. Tools now:"
cmake --version | head -1
ninja --version | sed 's/^/ninja /'
g++ --version | head -1
if [[ $gui == 1 ]]; then
  echo "Qt $(dpkg-query -W -f='${Version}' qt6-base-dev)"
fi
