# Sourced by the device_*.sh scripts (GPU machine, repo root): configures and builds the CUDA build in
# build/dev with all tests (SKIP_BUILD=1: already built), then runs the `gpu` tests (SKIP_TESTS=1: not).
# Needs SHARED, GTEST_SRC and OUT; sets B.
B=build/dev
if [ -z "${SKIP_BUILD:-}" ]; then
  cmake -S . -B $B -G Ninja -DWKV_BUILD_APP=OFF -DWKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DWKV_GTEST_SOURCE_DIR="$GTEST_SRC" -DWKV_SHARED_DIR="$SHARED" -DCMAKE_BUILD_TYPE=Release > "$OUT/configure.log" 2>&1 \
    || { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build $B -j16 > "$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -60; exit 1; }
fi
if [ -z "${SKIP_TESTS:-}" ]; then
  (cd $B && ctest -L gpu --output-on-failure -j2 --timeout 300) > "$OUT/gpu_tests.log" 2>&1
  grep -E "tests passed|tests failed|\(Failed|mean rel L2" "$OUT/gpu_tests.log" | head -40
fi
