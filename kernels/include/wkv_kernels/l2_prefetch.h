// L2 prefetch hints one kernel gives for the data of the kernels after it (performance only: a hint never
// changes a result, and a kernel that ignores it is correct).
//
// Why: at short contexts the KV4 decode attention is latency-bound (H200, session 6: ~20 µs per layer at 4K
// keys while reading ~17 MB, under 1 TB/s of the ~4.3), so HBM idles while it runs, and the output projection
// and gate|up linears that follow read their weights from HBM only after it ends. Requests issued by the
// attention's blocks pull the start of those weights into L2 during that idle time.
//
// A region is cut into `parts` contiguous pieces the way its consumer's thread blocks read it — piece p is
// units [units·p/parts, units·(p+1)/parts) of unit_bytes each — and the first `fraction` of every piece is
// requested, so each consumer block finds the start of its own range in L2 rather than some blocks finding
// all of theirs and the others none (the consumer ends with its slowest block). For the packed W4 GEMV a
// piece is one thread block's range of 16-row tiles: w4_packed_prefetch_region (w4_gemv_packed.h).
#pragma once

#include <string>

namespace wkv::kernels {

struct L2PrefetchRegion {
  const void* base = nullptr;  // 16-byte aligned; nullptr: no region
  int units = 0;               // the region is units · unit_bytes bytes
  int parts = 0;               // pieces, ≥ 1 when base is set
  int unit_bytes = 0;          // a multiple of 16
  float fraction = 0.0f;       // of each piece requested, in [0, 1]
};

// Throws std::invalid_argument, the message starting with `what`, unless r is empty (base null) or well
// formed: base 16-byte aligned, units ≥ 0, parts ≥ 1, unit_bytes a non-negative multiple of 16, fraction in
// [0, 1].
void validate_l2_prefetch_region(const L2PrefetchRegion& r, const std::string& what);

}  // namespace wkv::kernels
