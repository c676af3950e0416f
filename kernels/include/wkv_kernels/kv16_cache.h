// One layer's paged FP16 KV cache (the fp16 and w4 modes, whose KV cache is full precision).
//
// Layout: pages of P tokens, like the KV4 cache (kv4_cache.h), but ordered head-major inside a page so a
// head's keys for P consecutive tokens are one contiguous run of P·D FP16 values (coalesced reads in the
// decode attention, which walks one head's keys):
//   element (token j, KV head h, channel d) of K is at
//     k_pool[((page_table[j / P] · H_kv + h) · P + j % P) · D + d]       (FP16 bits, round-to-nearest-even)
//   and the same index in v_pool. K and V share the page table. All pointers are device memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wkv::kernels {

struct Kv16LayerCache {
  uint16_t* k_pool = nullptr;            // [n_physical_pages][H_kv][P][D] FP16 bits
  uint16_t* v_pool = nullptr;            // same layout
  const int32_t* page_table = nullptr;   // [n_pages] logical page → physical page
  int n_pages = 0;
  int page_size = 64;                    // P
  int n_kv_heads = 0;                    // H_kv
  int head_dim = 0;                      // D

  int capacity() const { return n_pages * page_size; }
  // Index of (token j, head h, channel 0) given the physical page (host and device code may use it).
  static constexpr size_t offset(int phys_page, int h, int j_in_page, int n_kv_heads, int page_size, int D) {
    return ((size_t(phys_page) * n_kv_heads + h) * page_size + j_in_page) * size_t(D);
  }
};

// Throws std::invalid_argument naming `what` and the field unless: pools and page table non-null,
// n_pages ≥ 1, page_size ≥ 1, H_kv ≥ 1, D ≥ 8 with D % 8 == 0, and n_tokens ≤ capacity().
void validate_kv16_cache(const Kv16LayerCache& cache, int n_tokens, const char* what);

}  // namespace wkv::kernels
