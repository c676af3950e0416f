// Helpers for the GPU tests: a skip guard, device buffers with poisoning, seeded randomness.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "wkv_kernels/device.h"

// Skips the test (loudly) on a machine without a usable CUDA device.
#define WKV_REQUIRE_GPU()                                                           \
  do {                                                                              \
    const auto wkv_info_ = ::wkv::kernels::query_device();                          \
    if (!wkv_info_.available) GTEST_SKIP() << "GPU test skipped: " << wkv_info_.reason; \
  } while (0)

namespace wkv::test {

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// n elements of T in device memory (cudaMalloc: 256-byte aligned).
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { cuda_ok(cudaMalloc(&p_, (n ? n : 1) * sizeof(T)), "cudaMalloc"); }
  explicit DeviceBuffer(const std::vector<T>& v) : DeviceBuffer(v.size()) { upload(v); }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& v) {
    if (v.size() != n_) throw std::runtime_error("DeviceBuffer::upload: size mismatch");
    cuda_ok(cudaMemcpy(p_, v.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
    // From pageable memory the copy may return before its DMA has landed, and kernels on non-blocking
    // streams are not ordered after it: wait, so every later launch sees the data.
    cuda_ok(cudaDeviceSynchronize(), "upload");
  }
  std::vector<T> download() const {
    cuda_ok(cudaDeviceSynchronize(), "kernel");
    std::vector<T> v(n_);
    cuda_ok(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return v;
  }
  // Fills every byte with `byte` (0xFF makes FP32 / FP16 NaN) so unwritten outputs are detectable. Waits for the
  // fill: cudaMemset runs on the legacy stream, which work on non-blocking streams is not ordered after.
  void poison(int byte = 0xFF) {
    cuda_ok(cudaMemset(p_, byte, (n_ ? n_ : 1) * sizeof(T)), "poison");
    cuda_ok(cudaDeviceSynchronize(), "poison");
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

inline uint32_t fresh_seed() { return std::random_device{}(); }

inline std::vector<float> random_normal(std::mt19937& rng, size_t n, float stddev, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<float> uniform(std::mt19937& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// ||a − b|| / ||b|| (||a − b|| when b = 0) and max |a − b|, in double, against an FP64 reference.
inline double rel_l2_d(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline double max_abs_d(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

}  // namespace wkv::test
