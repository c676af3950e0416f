// FP16 KV cache append: T new K and V rows (FP32) rounded to FP16 and scattered into the paged, head-major
// layout of kv16_cache.h.
//
// One thread per (token, KV head, channel) and both K and V; consecutive threads take consecutive channels,
// so a warp reads 128 contiguous bytes of k and writes 64 contiguous bytes of the pool (a head's channels are
// contiguous in both). The rounding is wkv::float_to_fp16 (half.h, round-to-nearest-even, the host
// reference's bits for every input including NaN payloads, which __float2half_rn canonicalizes differently).
// Stores are 2-byte, so the pools need no alignment beyond uint16_t.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "half.h"
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

}  // namespace wkv::kernels
