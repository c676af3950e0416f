// FP16 KV cache append: T new K and V rows (FP32) rounded to FP16 and scattered into the paged, head-major
// layout of kv16_cache.h.
//
// One thread per (token, KV head, channel) and both K and V; consecutive threads take consecutive channels,
// so a warp reads 128 contiguous bytes of k and writes 64 contiguous bytes of the pool (a head's channels are
// contiguous in both). The rounding is wkv::float_to_fp16 (half.h, round-to-nearest-even, the host
// reference's bits for every input including NaN payloads, which __float2half_rn canonicalizes differently).
// Stores are 2-byte, so the pools need no alignment beyond uint16_t.
//
// kv16_rope_append_at, the decode step's RoPE fused into the append (one launch instead of rope_at +
// kv16_append_at): one thread per rotation pair of the query and key heads (rope_device.cuh's arithmetic, so
// the bits of rope_at), a key pair's thread also storing its two rotated values, then one thread per channel
// pair of the value heads.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "half.h"
#include "rope_device.cuh"
#include "wkv_kernels/kv16_append.h"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 256;

// pos_dev != nullptr: one token at *pos_dev, skipped unless 0 ≤ pos < capacity (graph replay may hand an
// out-of-range position; writing nothing is the documented, memory-safe answer).
__global__ void __launch_bounds__(kThreads)
    kv16_append_kernel(Kv16LayerCache c, const float* __restrict__ k, const float* __restrict__ v, int T,
                       int pos0, const int32_t* __restrict__ pos_dev) {
  if (pos_dev) {
    pos0 = *pos_dev;
    if (pos0 < 0 || int64_t(pos0) >= int64_t(c.n_pages) * c.page_size) return;
  }
  const int D = c.head_dim, Hkv = c.n_kv_heads;
  const size_t row = size_t(Hkv) * D;
  const size_t total = size_t(T) * row;
  for (size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x; i < total; i += size_t(gridDim.x) * kThreads) {
    const int t = int(i / row);
    const int hd = int(i % row);
    const int h = hd / D, d = hd % D;
    const int j = pos0 + t;
    const int page = c.page_table[j / c.page_size];
    const size_t dst = Kv16LayerCache::offset(page, h, j % c.page_size, Hkv, c.page_size, D) + d;
    c.k_pool[dst] = wkv::float_to_fp16(k[i]);
    c.v_pool[dst] = wkv::float_to_fp16(v[i]);
  }
}

// kv16_rope_append_at. Thread r covers pair i = r % (D/2) of head r / (D/2) over the H query heads, the H_kv
// key heads (qk = [H + H_kv][D]) and the H_kv value heads (v [H_kv][D]): query and key pairs are rotated in
// place for p = *pos_dev; key and value pairs (x_i, x_{i+D/2}) of head h are stored rounded to FP16 at
// channels i and i + D/2 of (p, h) — the rotated key from registers, the same float that rope_at leaves in
// memory for kv16_append_at to read. Consecutive threads take consecutive i (coalesced loads and stores).
// Out-of-range p: the heads are still rotated (as rope_at does), the cache untouched (as kv16_append_at
// does). v must not overlap qk. cs: p's angle table (rope_table_at) or null (angles computed here).
__global__ void __launch_bounds__(kThreads)
    kv16_rope_append_kernel(Kv16LayerCache c, float* __restrict__ qk, const float* __restrict__ v,
                            int n_heads, const int32_t* __restrict__ pos_dev, float theta,
                            const float* __restrict__ cs) {
  const int D = c.head_dim, half = D / 2, Hkv = c.n_kv_heads;
  const int r = blockIdx.x * kThreads + threadIdx.x;
  if (r >= (n_heads + 2 * Hkv) * half) return;
  const int head = r / half, i = r % half;
  const int pos = *pos_dev;
  const bool in_range = pos >= 0 && int64_t(pos) < int64_t(c.n_pages) * c.page_size;
  float a, b;
  int h;
  uint16_t* pool;
  if (head < n_heads + Hkv) {  // query or key head: rotate
    ropedev::rope_pair_in_place(qk + size_t(head) * D, i, D, pos, theta, cs, a, b);
    if (head < n_heads || !in_range) return;
    h = head - n_heads;
    pool = c.k_pool;
  } else {  // value head: store only
    if (!in_range) return;
    h = head - n_heads - Hkv;
    a = v[size_t(h) * D + i];
    b = v[size_t(h) * D + i + half];
    pool = c.v_pool;
  }
  const int page = c.page_table[pos / c.page_size];
  const size_t dst = Kv16LayerCache::offset(page, h, pos % c.page_size, Hkv, c.page_size, D);
  pool[dst + i] = wkv::float_to_fp16(a);
  pool[dst + i + half] = wkv::float_to_fp16(b);
}

int blocks_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return int(b < 4096 ? (b ? b : 1) : 4096);  // grid-stride beyond 4096 blocks (≥ 1M elements)
}

}  // namespace

void kv16_append(const Kv16LayerCache& cache, const float* k, const float* v, int T, int pos0,
                 cudaStream_t stream) {
  if (T < 0 || pos0 < 0)
    throw std::invalid_argument("kv16_append: T " + std::to_string(T) + " and pos0 " + std::to_string(pos0) +
                                " must be ≥ 0");
  if (T == 0) return;
  if (int64_t(pos0) + T > int64_t(INT32_MAX))
    throw std::invalid_argument("kv16_append: pos0 + T overflows int");
  validate_kv16_cache(cache, pos0 + T, "kv16_append");
  if (!k || !v) throw std::invalid_argument("kv16_append: k and v must be non-null device pointers");
  const size_t n = size_t(T) * cache.n_kv_heads * cache.head_dim;
  kv16_append_kernel<<<blocks_for(n), kThreads, 0, stream>>>(cache, k, v, T, pos0, nullptr);
  WKV_CHECK_LAUNCH();
}

void kv16_append_at(const Kv16LayerCache& cache, const float* k, const float* v, const int32_t* pos_dev,
                    cudaStream_t stream) {
  validate_kv16_cache(cache, 0, "kv16_append_at");
  if (!k || !v) throw std::invalid_argument("kv16_append_at: k and v must be non-null device pointers");
  if (!pos_dev) throw std::invalid_argument("kv16_append_at: pos_dev must be a non-null device pointer");
  const size_t n = size_t(cache.n_kv_heads) * cache.head_dim;
  kv16_append_kernel<<<blocks_for(n), kThreads, 0, stream>>>(cache, k, v, 1, 0, pos_dev);
  WKV_CHECK_LAUNCH();
}

void kv16_rope_append_at(const Kv16LayerCache& cache, float* qk, const float* v, int n_heads,
                         const int32_t* pos_dev, float theta, const float* cs, cudaStream_t stream) {
  validate_kv16_cache(cache, 0, "kv16_rope_append_at");
  if (!qk || !v || !pos_dev)
    throw std::invalid_argument("kv16_rope_append_at: qk, v and pos_dev must be non-null device pointers");
  if (n_heads < 1) throw std::invalid_argument("kv16_rope_append_at: n_heads must be ≥ 1");
  if (!std::isfinite(theta) || !(theta > 0.0f))
    throw std::invalid_argument("kv16_rope_append_at: theta must be finite and > 0");
  if (reinterpret_cast<uintptr_t>(cs) % alignof(float) != 0)
    throw std::invalid_argument("kv16_rope_append_at: cs (the angle table) must be null or 4-byte aligned");
  const int64_t threads = (int64_t(n_heads) + 2 * int64_t(cache.n_kv_heads)) * (cache.head_dim / 2);
  if (threads > int64_t(INT32_MAX) - kThreads) throw std::invalid_argument("kv16_rope_append_at: too many heads");
  const int blocks = int((threads + kThreads - 1) / kThreads);
  kv16_rope_append_kernel<<<blocks, kThreads, 0, stream>>>(cache, qk, v, n_heads, pos_dev, theta, cs);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels
