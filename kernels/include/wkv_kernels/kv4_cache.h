// One layer's paged KV4 cache as the CUDA kernels see it (plain C++, no CUDA types).
//
// Storage format per (token, KV head): quant_formats.h "KV4" — qs[D/2] bytes (channel 2i in the low
// nibble of byte i) followed by D/G KV4GroupHeader {fp16 scale, fp16 min}; kv4_head_bytes(D, G) bytes.
//
// Paging: the cache of one layer is a set of pages of P tokens. page_table[i] (device int32, i = logical
// page) is the physical page index into the pools. Token j's row for KV head h starts at
//   pool + kv4_row_index(page_table[j / P], j % P, h, H_kv, P) · kv4_head_bytes(D, G)
//        = pool + ((page_table[j / P] · H_kv + h) · P + j % P) · kv4_head_bytes(D, G)
// i.e. head-major inside a page: one head's rows of P consecutive tokens are one contiguous run of
// P · head_bytes bytes, so the decode attention, which walks one head's keys, reads whole DRAM sectors
// (token-major rows of 68 bytes interleaved across heads wasted about a third of every sector fetched). K and V have separate pools that share
// the page table. All pointers are device memory; pools must be 4-byte aligned (cudaMalloc is).
//
// Smoothing (DESIGN.md, per layer and per KV channel c = h·D + d): x̃ = (x − δ)/s on the way in,
// x̂ = (q·scale + min)·s + δ on the way out. FP32 [H_kv·D] device arrays; nullptr means identity
// (δ = 0, s = 1, the "RTN" variant). Each δ/s pair is both-or-neither.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wkv::kernels {

struct Kv4LayerCache {
  uint8_t* k_pool = nullptr;           // [n_physical_pages][P][H_kv][head_bytes]
  uint8_t* v_pool = nullptr;           // same layout as k_pool
  const int32_t* page_table = nullptr;  // [n_pages] logical page → physical page
  int n_pages = 0;                     // logical capacity is n_pages · page_size tokens
  int page_size = 64;                  // P
  int n_kv_heads = 0;                  // H_kv
  int head_dim = 0;                    // D
  int group = 0;                       // G (G even, divides D; G = D is the default)
  const float* k_delta = nullptr;      // [H_kv·D] or nullptr
  const float* k_scale = nullptr;      // [H_kv·D] or nullptr (s > 0)
  const float* v_delta = nullptr;
  const float* v_scale = nullptr;

  int capacity() const { return n_pages * page_size; }
};

// Row number (in units of head_bytes) of token j_in_page of physical page `page`, KV head h (host and
// device code).
constexpr size_t kv4_row_index(int page, int j_in_page, int h, int n_kv_heads, int page_size) {
  return (size_t(page) * n_kv_heads + h) * page_size + j_in_page;
}

// Bytes of one (token, KV head) row: D/2 code bytes + 4·(D/G) header bytes (== wkv::kv4_bytes_per_head).
inline size_t kv4_head_bytes(int D, int G) { return size_t(D / 2) + 4 * size_t(D / G); }

// Throws std::invalid_argument naming `what` and the field unless: pools and page table non-null,
// n_pages ≥ 1, page_size ≥ 1, H_kv ≥ 1, D ≥ 2 even with D % 8 == 0 (rows stay 4-byte aligned),
// G ≥ 2 even dividing D, δ/s pairs both-or-neither, and `n_tokens` ≤ capacity().
void validate_kv4_cache(const Kv4LayerCache& cache, int n_tokens, const char* what);

}  // namespace wkv::kernels
