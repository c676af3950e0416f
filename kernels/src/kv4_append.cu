// KV4 cache append: quantizes T new K and V rows into a paged cache, bit-identical to quantize_kv4_ref.
//
// One warp per (token, KV head, K|V): the warp smooths the head vector into shared memory (IEEE division,
// like kv4_smooth on the host), then for each group of G channels reduces min/max with shuffles (the
// reduction ignores NaN and its order cannot change the stored bits: see quant_formats.h), lane 0 writes the
// FP16 header and the lanes write one code byte per channel pair. All bit-deciding arithmetic goes through
// the WKV_HD helpers of quant_formats.h, so the device stores exactly what the host reference stores.
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kv4_device.cuh"
#include "quant_formats.h"
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

  KV4GroupHeader* hdr = reinterpret_cast<KV4GroupHeader*>(row + D / 2);
  for (int g0 = 0; g0 < D; g0 += G) {
    float mn = INFINITY, mx = -INFINITY;
    for (int ch = g0 + lane; ch < g0 + G; ch += 32) q4_minmax_update(xs[ch], mn, mx);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float omn = __shfl_xor_sync(0xffffffffu, mn, off), omx = __shfl_xor_sync(0xffffffffu, mx, off);
      // Partials are never NaN (q4_minmax_update skips NaN), so plain comparisons merge them exactly.
      if (omn < mn) mn = omn;
      if (omx > mx) mx = omx;
    }
    const KV4GroupHeader gh = kv4_group_header(mn, mx);
    if (lane == 0) hdr[g0 / G] = gh;
    const float sc = fp16_to_float(gh.scale), mnf = fp16_to_float(gh.min);
    for (int i = g0 / 2 + lane; i < (g0 + G) / 2; i += 32)
      row[i] = kv4_pack_byte(kv4_quantize_value(xs[2 * i], mnf, sc), kv4_quantize_value(xs[2 * i + 1], mnf, sc));
  }
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

}  // namespace wkv::kernels
