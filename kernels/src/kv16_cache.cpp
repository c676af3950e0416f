// Validation of a paged FP16 KV cache view (kv16_cache.h); mirrors validate_kv4_cache.
#include "wkv_kernels/kv16_cache.h"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace wkv::kernels {

void validate_kv16_cache(const Kv16LayerCache& c, int n_tokens, const char* what) {
  auto fail = [&](const std::string& m) { throw std::invalid_argument(std::string(what) + ": " + m); };
  if (!c.k_pool || !c.v_pool) fail("k_pool / v_pool must be non-null device pointers");
  if (!c.page_table) fail("page_table must be a non-null device pointer");
  if (c.n_pages < 1 || c.page_size < 1)
    fail("n_pages " + std::to_string(c.n_pages) + " and page_size " + std::to_string(c.page_size) +
         " must be ≥ 1");
  if (c.n_kv_heads < 1) fail("n_kv_heads " + std::to_string(c.n_kv_heads) + " must be ≥ 1");
  if (c.head_dim < 8 || c.head_dim % 8 != 0)
    fail("head_dim " + std::to_string(c.head_dim) + " must be a positive multiple of 8");
  if (n_tokens < 0 || int64_t(n_tokens) > int64_t(c.n_pages) * c.page_size)
    fail(std::to_string(n_tokens) + " tokens exceed the capacity " + std::to_string(c.n_pages) + " pages × " +
         std::to_string(c.page_size));
}

}  // namespace wkv::kernels
