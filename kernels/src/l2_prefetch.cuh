// Device side of the L2 prefetch hints (wkv_kernels/l2_prefetch.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "wkv_kernels/l2_prefetch.h"

namespace wkv::kernels::detail {

// Requests the first `fraction` of piece `part` of r into L2 (one thread; a few bulk prefetches of ≤ 64 KB,
// which do not wait). Nothing for part ≥ r.parts, an empty region, or devices before sm_90 (no bulk prefetch).
__device__ __forceinline__ void l2_prefetch_piece(const L2PrefetchRegion& r, int part) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (r.base == nullptr || part < 0 || part >= r.parts || !(r.fraction > 0.0f)) return;
  const size_t u0 = size_t(r.units) * part / r.parts, u1 = size_t(r.units) * (part + 1) / r.parts;
  const float f = r.fraction < 1.0f ? r.fraction : 1.0f;
  const size_t bytes = size_t(double(u1 - u0) * r.unit_bytes * f) & ~size_t(15);
  const uint8_t* p = static_cast<const uint8_t*>(r.base) + u0 * size_t(r.unit_bytes);
  for (size_t o = 0; o < bytes; o += 65536) {
    const uint32_t n = uint32_t(bytes - o < 65536 ? bytes - o : 65536);
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + o), "r"(n) : "memory");
  }
#else
  (void)r, (void)part;
#endif
}

}  // namespace wkv::kernels::detail
