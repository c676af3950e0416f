// KV4 cache append: quantizes T new K and V rows into a paged cache, bit-identical to quantize_kv4_ref.
//
// One warp per (token, KV head, K|V): the warp smooths the head vector into shared memory (IEEE division,
// like kv4_smooth on the host), then for each group of G channels reduces min/max with shuffles (the
// reduction ignores NaN and its order cannot change the stored bits: see quant_formats.h), lane 0 writes the
// FP16 header and the lanes write one code byte per channel pair. All bit-deciding arithmetic goes through
// the WKV_HD helpers of quant_formats.h, so the device stores exactly what the host reference stores.
//
// kv4_rope_append_at, the decode step's RoPE fused into the append (one launch instead of rope_at +
// kv4_append_at): the K warps rotate their key head in place first (rope_device.cuh's arithmetic, so the bits
// of rope_at) and smooth the rotated values straight from registers; extra warps rotate the query heads.
#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "kv4_append_device.cuh"
#include "kv4_device.cuh"
#include "quant_formats.h"
#include "rope_device.cuh"
#include "wkv_kernels/kv4_append.h"

namespace wkv::kernels {

void validate_kv4_cache(const Kv4LayerCache& c, int n_tokens, const char* what) {
  auto fail = [&](const std::string& m) { throw std::invalid_argument(std::string(what) + ": " + m); };
  if (!c.k_pool || !c.v_pool) fail("k_pool / v_pool must be non-null device pointers");
  if (!c.page_table) fail("page_table must be a non-null device pointer");
  if (c.n_pages < 1 || c.page_size < 1)
    fail("n_pages " + std::to_string(c.n_pages) + " and page_size " + std::to_string(c.page_size) + " must be ≥ 1");
  if (c.n_kv_heads < 1) fail("n_kv_heads " + std::to_string(c.n_kv_heads) + " must be ≥ 1");
  if (c.head_dim < 8 || c.head_dim % 8 != 0)
    fail("head_dim " + std::to_string(c.head_dim) + " must be a positive multiple of 8");
  if (c.group < 2 || c.group % 2 != 0 || c.head_dim % c.group != 0)
    fail("group " + std::to_string(c.group) + " must be even and divide head_dim " + std::to_string(c.head_dim));
  if ((c.k_delta == nullptr) != (c.k_scale == nullptr)) fail("k_delta and k_scale must be both set or both null");
  if ((c.v_delta == nullptr) != (c.v_scale == nullptr)) fail("v_delta and v_scale must be both set or both null");
  if (n_tokens < 0 || int64_t(n_tokens) > int64_t(c.n_pages) * c.page_size)
    fail(std::to_string(n_tokens) + " tokens exceed the capacity " + std::to_string(c.n_pages) + " pages × " +
         std::to_string(c.page_size));
}

namespace {

constexpr int kWarpsPerBlock = 4;

using kv4append::quantize_smoothed_row;

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    kv4_append_kernel(Kv4LayerCache c, const float* __restrict__ k, const float* __restrict__ v, int T, int pos0,
                      const int32_t* __restrict__ pos_dev, size_t head_bytes) {
  extern __shared__ float smem[];  // [kWarpsPerBlock][D]
  const int D = c.head_dim, G = c.group, Hkv = c.n_kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int item = blockIdx.x * kWarpsPerBlock + warp;  // (t, h, which) with which fastest
  if (item >= T * Hkv * 2) return;                       // warp-uniform
  if (pos_dev) {  // kv4_append_at (T = 1): the position lives on the device; out of range writes nothing
    pos0 = *pos_dev;
    if (pos0 < 0 || pos0 >= c.n_pages * c.page_size) return;
  }
  const int which = item & 1, h = (item >> 1) % Hkv, t = (item >> 1) / Hkv;
  const float* x = (which ? v : k) + (size_t(t) * Hkv + h) * D;
  const float* delta = which ? c.v_delta : c.k_delta;
  const float* scale = which ? c.v_scale : c.k_scale;
  uint8_t* pool = which ? c.v_pool : c.k_pool;
  uint8_t* row = const_cast<uint8_t*>(kv4dev::row_ptr(pool, c, head_bytes, pos0 + t, h));
  float* xs = smem + warp * D;

  for (int ch = lane; ch < D; ch += 32)
    xs[ch] = kv4_smooth(x[ch], delta ? delta[h * D + ch] : 0.0f, scale ? scale[h * D + ch] : 1.0f);
  __syncwarp();

  quantize_smoothed_row(xs, row, D, G, lane);
}

// kv4_rope_append_at: the H query heads and H_kv key heads of qk = [H + H_kv][D] rotated in place for
// position p = *pos_dev, and the rotated keys and v [H_kv][D] appended at p. Items (one warp each), four per
// block:
//   [0, 2·H_kv)            (h, K|V), K|V fastest, as in kv4_append_kernel. The K warp rotates key head h
//                          (lane takes the pairs i = lane, lane + 32, … < D/2), stores it back to qk (the
//                          decode attention reads it as k_cur) and smooths the two rotated values from
//                          registers; smoothing is per element, so the smoothed row, and with it every stored
//                          bit, is what kv4_append_at computes from the rotated k that rope_at leaves in
//                          memory.
//   [2·H_kv, 2·H_kv + H)   query head item − 2·H_kv: rotated in place, nothing else.
// Out-of-range p (outside [0, capacity)): the heads are still rotated (as rope_at does), the cache untouched
// (as kv4_append_at does). v must not overlap qk. cs: p's angle table (rope_table_at) or null (angles here).
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    kv4_rope_append_kernel(Kv4LayerCache c, float* __restrict__ qk, const float* __restrict__ v, int n_heads,
                           const int32_t* __restrict__ pos_dev, float theta, const float* __restrict__ cs,
                           size_t head_bytes) {
  extern __shared__ float smem[];  // [kWarpsPerBlock][D]
  const int D = c.head_dim, half = D / 2, Hkv = c.n_kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int item = blockIdx.x * kWarpsPerBlock + warp;
  // WKV_PDL_CHAIN: launched early behind the q|k|v projection; the attention may launch as early behind this.
  grid_dependents_launch();
  grid_dependency_wait();
  if (item >= 2 * Hkv + n_heads) return;  // warp-uniform
  const int pos = *pos_dev;
  const bool in_range = kv4append::pos_in_range(c, pos);
  if (item >= 2 * Hkv) {  // a query head
    float a, b;
    for (int i = lane; i < half; i += 32)
      ropedev::rope_pair_in_place(qk + size_t(item - 2 * Hkv) * D, i, D, pos, theta, cs, a, b);
    return;
  }
  const int which = item & 1, h = item >> 1;
  float* key = qk + size_t(n_heads + h) * D;
  kv4append::rope_append_head(c, which ? v + size_t(h) * D : key, which ? nullptr : key, which, h, pos,
                              in_range, theta, cs, head_bytes, smem + warp * D, lane);
}

}  // namespace

void kv4_append(const Kv4LayerCache& cache, const float* k, const float* v, int T, int pos0, cudaStream_t stream) {
  if (T < 0 || pos0 < 0)
    throw std::invalid_argument("kv4_append: T " + std::to_string(T) + " and pos0 " + std::to_string(pos0) +
                                " must be ≥ 0");
  if (T == 0) return;
  validate_kv4_cache(cache, pos0 + T, "kv4_append");
  if (!k || !v) throw std::invalid_argument("kv4_append: k and v must be non-null device pointers");
  const size_t head_bytes = kv4_head_bytes(cache.head_dim, cache.group);
  const int items = T * cache.n_kv_heads * 2;
  const int blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const size_t smem = sizeof(float) * kWarpsPerBlock * cache.head_dim;
  if (smem > 48 * 1024) throw std::invalid_argument("kv4_append: head_dim too large");
  kv4_append_kernel<<<blocks, kWarpsPerBlock * 32, smem, stream>>>(cache, k, v, T, pos0, nullptr, head_bytes);
  WKV_CHECK_LAUNCH();
}

void kv4_append_at(const Kv4LayerCache& cache, const float* k, const float* v, const int32_t* pos_dev,
                   cudaStream_t stream) {
  validate_kv4_cache(cache, 0, "kv4_append_at");
  if (!k || !v || !pos_dev)
    throw std::invalid_argument("kv4_append_at: k, v and pos_dev must be non-null device pointers");
  const size_t head_bytes = kv4_head_bytes(cache.head_dim, cache.group);
  const int items = cache.n_kv_heads * 2;
  const int blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const size_t smem = sizeof(float) * kWarpsPerBlock * cache.head_dim;
  if (smem > 48 * 1024) throw std::invalid_argument("kv4_append_at: head_dim too large");
  kv4_append_kernel<<<blocks, kWarpsPerBlock * 32, smem, stream>>>(cache, k, v, 1, 0, pos_dev, head_bytes);
  WKV_CHECK_LAUNCH();
}

void kv4_rope_append_at(const Kv4LayerCache& cache, float* qk, const float* v, int n_heads,
                        const int32_t* pos_dev, float theta, const float* cs, cudaStream_t stream) {
  validate_kv4_cache(cache, 0, "kv4_rope_append_at");
  if (!qk || !v || !pos_dev)
    throw std::invalid_argument("kv4_rope_append_at: qk, v and pos_dev must be non-null device pointers");
  if (n_heads < 1) throw std::invalid_argument("kv4_rope_append_at: n_heads must be ≥ 1");
  if (!std::isfinite(theta) || !(theta > 0.0f))
    throw std::invalid_argument("kv4_rope_append_at: theta must be finite and > 0");
  if (reinterpret_cast<uintptr_t>(cs) % alignof(float) != 0)
    throw std::invalid_argument("kv4_rope_append_at: cs (the angle table) must be null or 4-byte aligned");
  const size_t head_bytes = kv4_head_bytes(cache.head_dim, cache.group);
  const int64_t items = 2 * int64_t(cache.n_kv_heads) + n_heads;
  if (items > int64_t(INT32_MAX) - kWarpsPerBlock) throw std::invalid_argument("kv4_rope_append_at: too many heads");
  const int blocks = int((items + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const size_t smem = sizeof(float) * kWarpsPerBlock * cache.head_dim;
  if (smem > 48 * 1024) throw std::invalid_argument("kv4_rope_append_at: head_dim too large");
  launch_kernel_pdl(pdl_chain(), kv4_rope_append_kernel, dim3(blocks), dim3(kWarpsPerBlock * 32), smem,
                    stream, cache, qk, v, n_heads, pos_dev, theta, cs, head_bytes);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels
