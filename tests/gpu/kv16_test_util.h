// Helpers for the FP16 KV cache GPU tests: a host image of one layer's paged FP16 cache in the documented
// head-major layout (kv16_cache.h), written out here independently of the kernels' offset helper, with a
// shuffled page table and spare physical pages, plus a double-precision attention reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "half.h"
#include "wkv_kernels/kv16_cache.h"

namespace wkv::test {

// Host image of the pools; every element starts as the poison 0xFFFF (an FP16 NaN).
struct HostKv16Cache {
  int Hkv, D, P, n_pages, n_phys;
  std::vector<int32_t> table;
  std::vector<uint16_t> k_pool, v_pool;

  HostKv16Cache(std::mt19937& rng, int hkv, int d, int capacity, int page) : Hkv(hkv), D(d), P(page) {
    n_pages = std::max(1, (capacity + P - 1) / P);
    n_phys = n_pages + 2;  // two physical pages no logical page maps to: stray writes land in checked poison
    std::vector<int32_t> perm(n_phys);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(perm.begin(), perm.begin() + n_pages);
    k_pool.assign(size_t(n_phys) * Hkv * P * D, 0xFFFF);
    v_pool = k_pool;
  }
  int capacity() const { return n_pages * P; }
  // Element (token j, head h, channel 0): ((page_table[j / P]·H_kv + h)·P + j % P)·D.
  size_t offset(int j, int h) const { return ((size_t(table[j / P]) * Hkv + h) * P + j % P) * D; }
  // Stores x[Hkv·D] (one token) at position j, rounded by the reference float_to_fp16.
  void set_row(bool is_v, int j, const float* x) {
    auto& pool = is_v ? v_pool : k_pool;
    for (int h = 0; h < Hkv; ++h)
      for (int d = 0; d < D; ++d) pool[offset(j, h) + d] = wkv::float_to_fp16(x[size_t(h) * D + d]);
  }
  float get(bool is_v, int j, int h, int d) const {
    return wkv::fp16_to_float((is_v ? v_pool : k_pool)[offset(j, h) + d]);
  }
};

// Device copy of a HostKv16Cache and the kernels' view of it.
struct DeviceKv16Cache {
  DeviceBuffer<uint16_t> k_pool, v_pool;
  DeviceBuffer<int32_t> table;
  wkv::kernels::Kv16LayerCache view{};

  explicit DeviceKv16Cache(const HostKv16Cache& h) : k_pool(h.k_pool), v_pool(h.v_pool), table(h.table) {
    view.k_pool = k_pool.get();
    view.v_pool = v_pool.get();
    view.page_table = table.get();
    view.n_pages = h.n_pages;
    view.page_size = h.P;
    view.n_kv_heads = h.Hkv;
    view.head_dim = h.D;
  }
};

// out[H·D]: for every query head h (KV head h / (H/H_kv)), softmax_j(q_h·k_j/√D)·v_j over positions
// 0 … n−1 of the FP16 cache, in double.
inline std::vector<double> attention_ref(const HostKv16Cache& c, const std::vector<float>& q, int H, int n) {
  const int D = c.D, gq = H / c.Hkv;
  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> out(size_t(H) * D, 0.0), s(n);
  for (int h = 0; h < H; ++h) {
    const int kvh = h / gq;
    double m = -INFINITY;
    for (int j = 0; j < n; ++j) {
      double dot = 0;
      for (int d = 0; d < D; ++d) dot += double(q[size_t(h) * D + d]) * c.get(false, j, kvh, d);
      s[j] = dot * scale;
      m = std::max(m, s[j]);
    }
    double l = 0;
    for (auto& x : s) l += (x = std::exp(x - m));
    for (int j = 0; j < n; ++j)
      for (int d = 0; d < D; ++d) out[size_t(h) * D + d] += s[j] / l * c.get(true, j, kvh, d);
  }
  return out;
}

}  // namespace wkv::test
