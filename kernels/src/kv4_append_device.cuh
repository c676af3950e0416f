// Device code of one KV4 row append, shared by the append kernels (kv4_append.cu) and the decode attention's
// fused RoPE + append (kv4_decode_split.cuh): a warp smooths one head vector into shared memory, then
// quantizes it into its cache row. All bit-deciding arithmetic goes through the WKV_HD helpers of
// quant_formats.h and rope_device.cuh, so every caller stores exactly what the host reference stores.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kv4_device.cuh"
#include "quant_formats.h"
#include "rope_device.cuh"
#include "wkv_kernels/kv4_cache.h"

namespace wkv::kernels::kv4append {

// Quantizes one smoothed head vector xs[D] (this warp's shared-memory slice, complete: the caller synced the
// warp after writing it) into `row` (D/2 code bytes, then the D/G group headers): per group of G channels a
// shuffle min/max, lane 0 writes the header, the lanes write one code byte per channel pair.
__device__ __forceinline__ void quantize_smoothed_row(const float* xs, uint8_t* row, int D, int G, int lane) {
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
      row[i] =
          kv4_pack_byte(kv4_quantize_value(xs[2 * i], mnf, sc), kv4_quantize_value(xs[2 * i + 1], mnf, sc));
  }
}

// One warp's share of the decode step's RoPE + append for KV head h at position pos (every lane calls it):
//   which = 0: the key head x [D] rotated for pos (pairs (i, i + D/2), lane takes i = lane, lane + 32, …);
//              the rotated values are written back to `store` when it is non-null (kv4_rope_append_at, whose
//              attention reads them as k_cur; the fused attention passes null and rotates k_cur itself);
//   which = 1: the value head x [D], not rotated.
// With in_range (pos inside the cache's capacity) the head is smoothed (per element, so the stored row is the
// one kv4_append_at makes from the rotated key) into xs [D] (this warp's shared scratch) and quantized into
// row pos; otherwise only the rotation (and its store) happens. cs: the position's cos/sin table
// (rope_table_at) or null to compute the angles here (the same bits either way).
__device__ __forceinline__ void rope_append_head(const Kv4LayerCache& c, const float* x, float* store,
                                                 int which, int h, int pos, bool in_range, float theta,
                                                 const float* cs, size_t head_bytes, float* xs, int lane) {
  const int D = c.head_dim, half = D / 2;
  const float* delta = which ? c.v_delta : c.k_delta;
  const float* scale = which ? c.v_scale : c.k_scale;
  if (which == 0) {
    for (int i = lane; i < half; i += 32) {
      float a, b;
      ropedev::rope_pair_at(x, i, D, pos, theta, cs, a, b);
      if (store) {
        store[i] = a;
        store[i + half] = b;
      }
      if (in_range) {
        const int lo = h * D + i, hi = lo + half;
        xs[i] = kv4_smooth(a, delta ? delta[lo] : 0.0f, scale ? scale[lo] : 1.0f);
        xs[i + half] = kv4_smooth(b, delta ? delta[hi] : 0.0f, scale ? scale[hi] : 1.0f);
      }
    }
  } else if (in_range) {
    for (int ch = lane; ch < D; ch += 32)
      xs[ch] = kv4_smooth(x[ch], delta ? delta[h * D + ch] : 0.0f, scale ? scale[h * D + ch] : 1.0f);
  }
  if (!in_range) return;  // warp-uniform: nothing to store
  __syncwarp();
  uint8_t* row = const_cast<uint8_t*>(kv4dev::row_ptr(which ? c.v_pool : c.k_pool, c, head_bytes, pos, h));
  quantize_smoothed_row(xs, row, D, c.group, lane);
}

// Whether position pos is inside the cache's capacity (out of range: rotate, store nothing, as
// kv4_append_at).
__device__ __forceinline__ bool pos_in_range(const Kv4LayerCache& c, int pos) {
  return pos >= 0 && int64_t(pos) < int64_t(c.n_pages) * c.page_size;
}

}  // namespace wkv::kernels::kv4append
