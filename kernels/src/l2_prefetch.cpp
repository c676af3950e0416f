// Host-side checks of the L2 prefetch hints (wkv_kernels/l2_prefetch.h), shared by every kernel that takes
// one.
#include "wkv_kernels/l2_prefetch.h"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace wkv::kernels {

void validate_l2_prefetch_region(const L2PrefetchRegion& r, const std::string& what) {
  if (r.base == nullptr) return;
  auto fail = [&](const std::string& m) { throw std::invalid_argument(what + m); };
  if (reinterpret_cast<uintptr_t>(r.base) % 16 != 0) fail("base must be 16-byte aligned");
  if (r.units < 0 || r.parts < 1 || r.unit_bytes < 0 || r.unit_bytes % 16 != 0)
    fail("units " + std::to_string(r.units) + ", parts " + std::to_string(r.parts) + ", unit_bytes " +
         std::to_string(r.unit_bytes) + ": want units ≥ 0, parts ≥ 1 and unit_bytes a multiple of 16");
  if (!(r.fraction >= 0.0f && r.fraction <= 1.0f))
    fail("fraction " + std::to_string(r.fraction) + " must be in [0, 1]");
}

}  // namespace wkv::kernels
