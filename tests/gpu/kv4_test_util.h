// Helpers for the KV4 cache GPU tests: device buffers and a host mirror of one layer's paged KV4 cache,
// filled with the CPU reference quantizer (quantize_kv4_ref) so the attention tests do not depend on the
// GPU append kernel.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "quant_formats.h"
#include "wkv_kernels/kv4_cache.h"

namespace wkv::test {

template <typename T>
struct DeviceBuf {
  T* ptr = nullptr;
  size_t n = 0;
  DeviceBuf() = default;
  explicit DeviceBuf(size_t count) : n(count) { cuda_ok(cudaMalloc(&ptr, sizeof(T) * std::max<size_t>(count, 1)), "cudaMalloc"); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
  DeviceBuf(DeviceBuf&& o) noexcept : ptr(o.ptr), n(o.n) { o.ptr = nullptr; }
  DeviceBuf& operator=(DeviceBuf&& o) noexcept {
    std::swap(ptr, o.ptr);
    std::swap(n, o.n);
    return *this;
  }
  ~DeviceBuf() { if (ptr) cudaFree(ptr); }
  void upload(const std::vector<T>& h) {
    if (h.size() != n) throw std::runtime_error("DeviceBuf::upload size mismatch");
    cuda_ok(cudaMemcpy(ptr, h.data(), sizeof(T) * n, cudaMemcpyHostToDevice), "upload");
    // From pageable memory the copy may return before its DMA has landed, and kernels on non-blocking
    // streams are not ordered after it: wait, so every later launch sees the data.
    cuda_ok(cudaDeviceSynchronize(), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    cuda_ok(cudaMemcpy(h.data(), ptr, sizeof(T) * n, cudaMemcpyDeviceToHost), "download");
    return h;
  }
};

template <typename T>
DeviceBuf<T> to_device(const std::vector<T>& h) {
  DeviceBuf<T> d(h.size());
  if (!h.empty()) d.upload(h);
  return d;
}

// Host image of one layer's paged KV4 cache with a shuffled page table (plus spare physical pages that no
// logical page maps to, so a wrong address lands in poison that is checked).
struct HostKv4Cache {
  int Hkv, D, G, P, n_pages, n_phys;
  size_t hb;
  std::vector<int32_t> table;
  std::vector<uint8_t> k_pool, v_pool;
  std::vector<float> k_delta, k_scale, v_delta, v_scale;  // empty = identity

  HostKv4Cache(std::mt19937& rng, int hkv, int d, int g, int capacity, int page, bool smoothing)
      : Hkv(hkv), D(d), G(g), P(page) {
    n_pages = std::max(1, (capacity + P - 1) / P);
    n_phys = n_pages + 2;
    hb = kv4_bytes_per_head(D, G);
    std::vector<int32_t> perm(n_phys);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(perm.begin(), perm.begin() + n_pages);
    k_pool.assign(size_t(n_phys) * P * Hkv * hb, 0xFF);
    v_pool = k_pool;
    if (smoothing) {
      const size_t n = size_t(Hkv) * D;
      k_delta = uniform(rng, n, -0.5f, 0.5f);
      k_scale = uniform(rng, n, 0.5f, 2.0f);
      v_delta = uniform(rng, n, -0.5f, 0.5f);
      v_scale = uniform(rng, n, 0.5f, 2.0f);
    }
  }

  size_t offset(int j, int h) const { return wkv::kernels::kv4_row_index(table[j / P], j % P, h, Hkv, P) * hb; }

  static const float* ptr_or_null(const std::vector<float>& v, int h, int D) {
    return v.empty() ? nullptr : v.data() + size_t(h) * D;
  }

  // Quantizes x[Hkv·D] (one token) into position j with the reference quantizer.
  void set_row(bool is_v, int j, const float* x) {
    auto& pool = is_v ? v_pool : k_pool;
    for (int h = 0; h < Hkv; ++h) {
      uint8_t* row = pool.data() + offset(j, h);
      quantize_kv4_ref(x + size_t(h) * D, D, G, ptr_or_null(is_v ? v_delta : k_delta, h, D),
                       ptr_or_null(is_v ? v_scale : k_scale, h, D), row,
                       reinterpret_cast<KV4GroupHeader*>(row + D / 2));
    }
  }
  // Dequantized position j, out[Hkv·D], with the reference dequantizer.
  void get_row(bool is_v, int j, float* out) const {
    const auto& pool = is_v ? v_pool : k_pool;
    for (int h = 0; h < Hkv; ++h) {
      const uint8_t* row = pool.data() + offset(j, h);
      dequantize_kv4_ref(row, reinterpret_cast<const KV4GroupHeader*>(row + D / 2), D, G,
                         ptr_or_null(is_v ? v_delta : k_delta, h, D), ptr_or_null(is_v ? v_scale : k_scale, h, D),
                         out + size_t(h) * D);
    }
  }
};

// Device copy of a HostKv4Cache and the kernels' view of it.
struct DeviceKv4Cache {
  DeviceBuf<uint8_t> k_pool, v_pool;
  DeviceBuf<int32_t> table;
  DeviceBuf<float> kd, ks, vd, vs;
  wkv::kernels::Kv4LayerCache view{};

  explicit DeviceKv4Cache(const HostKv4Cache& h)
      : k_pool(to_device(h.k_pool)), v_pool(to_device(h.v_pool)), table(to_device(h.table)), kd(to_device(h.k_delta)),
        ks(to_device(h.k_scale)), vd(to_device(h.v_delta)), vs(to_device(h.v_scale)) {
    view.k_pool = k_pool.ptr;
    view.v_pool = v_pool.ptr;
    view.page_table = table.ptr;
    view.n_pages = h.n_pages;
    view.page_size = h.P;
    view.n_kv_heads = h.Hkv;
    view.head_dim = h.D;
    view.group = h.G;
    if (!h.k_delta.empty()) {
      view.k_delta = kd.ptr;
      view.k_scale = ks.ptr;
      view.v_delta = vd.ptr;
      view.v_scale = vs.ptr;
    }
  }
};

// out[D] = Σ_j softmax(q·k_j/√D)·v_j in double; keys[j] / vals[j] point at D floats.
inline void attend_ref(const float* q, const std::vector<const float*>& keys, const std::vector<const float*>& vals,
                       int D, double* out) {
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> s(keys.size());
  double m = -INFINITY;
  for (size_t j = 0; j < keys.size(); ++j) {
    double d = 0;
    for (int c = 0; c < D; ++c) d += double(q[c]) * keys[j][c];
    s[j] = d * scale;
    m = std::max(m, s[j]);
  }
  double l = 0;
  for (auto& x : s) l += (x = std::exp(x - m));
  for (int c = 0; c < D; ++c) out[c] = 0;
  for (size_t j = 0; j < keys.size(); ++j)
    for (int c = 0; c < D; ++c) out[c] += s[j] / l * vals[j][c];
}

}  // namespace wkv::test
