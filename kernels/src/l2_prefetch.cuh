// Device side of the L2 prefetch hints (wkv_kernels/l2_prefetch.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "bulk_copy.cuh"
#include "wkv_kernels/l2_prefetch.h"

namespace wkv::kernels::detail {

// Requests the first `fraction` of piece `part` of r into L2 (one thread; a few bulk prefetches of ≤ 64 KB,
// which do not wait: bulk_copy.cuh). Nothing for part ≥ r.parts, an empty region, or devices before sm_90.
__device__ __forceinline__ void l2_prefetch_piece(const L2PrefetchRegion& r, int part) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (r.base == nullptr || part < 0 || part >= r.parts || !(r.fraction > 0.0f)) return;
  const size_t u0 = size_t(r.units) * part / r.parts, u1 = size_t(r.units) * (part + 1) / r.parts;
  const size_t bytes = size_t(double(u1 - u0) * r.unit_bytes * r.fraction) & ~size_t(15);  // fraction ≤ 1: checked
  const uint8_t* p = static_cast<const uint8_t*>(r.base) + u0 * size_t(r.unit_bytes);
  for (size_t o = 0; o < bytes; o += 65536) {
    const uint32_t n = uint32_t(bytes - o < 65536 ? bytes - o : 65536);
    bulk_prefetch_l2(p + o, n);
  }
#else
  (void)r, (void)part;
#endif
}

}  // namespace wkv::kernels::detail
