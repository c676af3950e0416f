// Helpers shared by the packed W4 GEMV tests (w4_gemv_packed_test, w4_gemv_chain_test): random LLM-like W4
// weights and their device copies (storage format and packed records).
#pragma once

#include <random>

#include "gpu_test_util.h"
#include "quant_formats.h"
#include "test_support.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace wkv::test {

// A W4 matrix on the device: the storage-format arrays and the packed records written by w4_pack (the records
// are poisoned first, so bytes the packer misses show).
struct Packed {
  DeviceBuffer<uint32_t> q;
  DeviceBuffer<uint16_t> s, z;
  DeviceBuffer<uint8_t> records;
  kernels::W4PackedView view;
  explicit Packed(const wkv::W4Matrix& m)
      : q(m.qweight), s(m.scales), z(m.zeros), records(kernels::w4_packed_device_bytes(m.rows, m.cols)) {
    records.poison(0xAB);
    kernels::w4_pack(dense(m), records.get());
    view = {m.rows, m.cols, records.get()};
  }
  kernels::W4DeviceWeights dense(const wkv::W4Matrix& m) const {
    return {m.rows, m.cols, m.group, q.get(), s.get(), z.get()};
  }
};

inline wkv::W4Matrix random_w4(std::mt19937& rng, int rows, int cols) {
  auto W = wkv::test::random_normal(rng, (size_t)rows * cols, 0.02f);
  for (int r = 0; r < rows; r += 7) W[(size_t)r * cols + (r % cols)] *= 40.0f;  // outlier channels
  return wkv::quantize_w4_ref(W.data(), rows, cols, 128);
}

// True on devices that run the packed GEMV (and so the chain): compute capability 9.0.
inline bool device_runs_packed() {
  return kernels::w4_gemv_packed_supported(64, 4096, 128);
}

}  // namespace wkv::test

// A test of `what` (a string literal) needs a GPU (WKV_REQUIRE_GPU: skipped loudly without one) that runs the
// packed GEMV; on any other GPU it is skipped, saying why.
#define WKV_REQUIRE_PACKED_GPU(what)                                                              \
  do {                                                                                            \
    WKV_REQUIRE_GPU();                                                                            \
    if (!::wkv::test::device_runs_packed()) GTEST_SKIP() << what " needs compute capability 9.0"; \
  } while (0)
