// GPU prefill attention with POQ blocks vs a double-precision reference: keys/values j < pos0 + floor(t/B)·B
// from the reference-dequantized cache, the rest of j ≤ p from the chunk's full-precision rows (B = 0: all from
// the cache). The cache holds the past and the chunk, quantized by quantize_kv4_ref (the caller appends the
// chunk before attention).
// Error budgets:
//   FP32 kernel (attention_prefill_fp32; attention_prefill for 1 ≤ B < T or misaligned pointers): relative
//   L2 ≤ 1e-5, max abs ≤ 1e-4.
//   Tensor-core kernel (attention_prefill for B = 0 / B ≥ T, attention_prefill_kv16): Q (pre-scaled by
//   log2(e)/√D), K, V and the probabilities P are rounded to FP16 (relative error ≤ 2^-11 each), with FP32
//   accumulation. With |v| ≤ 2.5 (smoothed values) one FP16 rounding of V costs ≤ 1e-3 absolute, the P
//   rounding ≤ 2^-11·max|v| more, the score error (~1e-4 in the exponent) is smaller: max abs ≤ 5e-3,
//   relative L2 ≤ 3e-3 (typically ~3e-4).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>

#include "gpu_test_util.h"
#include "half.h"
#include "kv4_test_util.h"
#include "wkv_kernels/attention_prefill.h"
#include "wkv_kernels/device.h"

namespace {

using namespace wkv::test;
namespace wk = wkv::kernels;

struct PrefillCase {
  int H, Hkv, D, G, T, pos0, B;
  bool smoothing;
};

enum class Entry {
  kFp32,          // attention_prefill_fp32
  kDispatch,      // attention_prefill (tensor cores for B = 0 / B ≥ T, else FP32)
  kMisalignedQ,   // attention_prefill with q 4 bytes off 16-byte alignment (must fall back to FP32)
};

struct Budget {
  double rel_l2, max_abs;
};
constexpr Budget kFp32Budget{1e-5, 1e-4};
constexpr Budget kTensorCoreBudget{3e-3, 5e-3};

void run_prefill_case(const PrefillCase& c, unsigned seed, Entry entry = Entry::kFp32) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " H " + std::to_string(c.H) + " Hkv " + std::to_string(c.Hkv) +
               " D " + std::to_string(c.D) + " G " + std::to_string(c.G) + " T " + std::to_string(c.T) + " pos0 " +
               std::to_string(c.pos0) + " B " + std::to_string(c.B) + (c.smoothing ? " smoothed" : " identity"));
  std::mt19937 rng(seed);
  const int n = c.pos0 + c.T;
  HostKv4Cache host(rng, c.Hkv, c.D, c.G, n + 5, 16, c.smoothing);
  const size_t kv = size_t(c.Hkv) * c.D, qd = size_t(c.H) * c.D;
  const auto k_full = uniform(rng, size_t(c.T) * kv, -2.0f, 2.0f), v_full = uniform(rng, size_t(c.T) * kv, -1.0f, 1.0f);
  for (int j = 0; j < c.pos0; ++j) {
    const auto kr = uniform(rng, kv, -2.0f, 2.0f), vr = uniform(rng, kv, -1.0f, 1.0f);
    host.set_row(false, j, kr.data());
    host.set_row(true, j, vr.data());
  }
  for (int t = 0; t < c.T; ++t) {
    host.set_row(false, c.pos0 + t, k_full.data() + t * kv);
    host.set_row(true, c.pos0 + t, v_full.data() + t * kv);
  }
  const auto q = uniform(rng, size_t(c.T) * qd, -1.0f, 1.0f);

  std::vector<float> kd(size_t(n) * kv), vd(size_t(n) * kv);
  for (int j = 0; j < n; ++j) {
    host.get_row(false, j, kd.data() + j * kv);
    host.get_row(true, j, vd.data() + j * kv);
  }
  std::vector<double> ref(size_t(c.T) * qd);
  const int gq = c.H / c.Hkv;
  for (int t = 0; t < c.T; ++t) {
    const int p = c.pos0 + t, bound = c.B == 0 ? p + 1 : c.pos0 + (t / c.B) * c.B;
    for (int h = 0; h < c.H; ++h) {
      const int kvh = h / gq;
      std::vector<const float*> keys, vals;
      for (int j = 0; j <= p; ++j) {
        const bool cached = j < bound;
        keys.push_back((cached ? kd.data() + j * kv : k_full.data() + (j - c.pos0) * kv) + kvh * c.D);
        vals.push_back((cached ? vd.data() + j * kv : v_full.data() + (j - c.pos0) * kv) + kvh * c.D);
      }
      attend_ref(q.data() + t * qd + h * c.D, keys, vals, c.D, ref.data() + t * qd + h * c.D);
    }
  }

  DeviceKv4Cache dev(host);
  std::vector<float> q_padded(q.size() + 1, 0.0f);  // q at offset 1 for kMisalignedQ
  std::copy(q.begin(), q.end(), q_padded.begin() + 1);
  auto dq = to_device(entry == Entry::kMisalignedQ ? q_padded : q), dk = to_device(k_full), dv = to_device(v_full);
  DeviceBuf<float> out(size_t(c.T) * qd);
  cuda_ok(cudaMemset(out.ptr, 0xFF, sizeof(float) * out.n), "poison");
  wk::PrefillAttentionArgs a;
  a.q = dq.ptr + (entry == Entry::kMisalignedQ ? 1 : 0);
  a.k_full = dk.ptr;
  a.v_full = dv.ptr;
  a.out = out.ptr;
  a.n_heads = c.H;
  a.T = c.T;
  a.pos0 = c.pos0;
  a.poq_block = c.B;
  if (entry == Entry::kFp32)
    wk::attention_prefill_fp32(dev.view, a);
  else
    wk::attention_prefill(dev.view, a);
  cuda_ok(cudaDeviceSynchronize(), "sync");
  const auto got = out.download();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_TRUE(std::isfinite(got[i])) << "output " << i << " not written";
  const bool tensor_cores = entry == Entry::kDispatch && (c.B == 0 || c.B >= c.T);
  const Budget b = tensor_cores ? kTensorCoreBudget : kFp32Budget;
  const double rel = rel_l2_d(got, ref), mx = max_abs_d(got, ref);
  EXPECT_LE(rel, b.rel_l2) << "max abs " << mx << (tensor_cores ? " (tensor cores)" : " (FP32)");
  EXPECT_LE(mx, b.max_abs) << "rel L2 " << rel << (tensor_cores ? " (tensor cores)" : " (FP32)");
}

TEST(GpuAttentionPrefill, MatchesReferenceWithPoqBlocks) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  unsigned i = 0;
  for (int T : {1, 7, 64, 130})
    for (int pos0 : {0, 5, 100})
      for (int B : {0, 1, T}) {
        // Alternate shapes so every path is covered: GQA 8/4 D=128 G=D, 6/2 (gq = 3) D=64 with G=32 / G=4.
        const int variant = i % 3;
        const PrefillCase c = variant == 0   ? PrefillCase{8, 4, 128, 128, T, pos0, B, (i % 2) == 1}
                              : variant == 1 ? PrefillCase{6, 2, 64, 32, T, pos0, B, (i % 2) == 1}
                                             : PrefillCase{4, 4, 64, 4, T, pos0, B, (i % 2) == 1};
        run_prefill_case(c, seed + i++);
      }
  run_prefill_case({32, 8, 128, 32, 37, 300, 5, true}, seed + i++);  // B not dividing T
}

// attention_prefill's tensor-core path (B = 0 and B = T) over odd chunk lengths (partial tiles), chunks at
// pos0 > 0 behind a filled cache (tiles straddling the cache / chunk split), GQA group sizes 1 … 8, D 64 and
// 128, G = D / 32 / 4 / 2 (one header per word and the per-pair header path), RTN and smoothed caches.
TEST(GpuAttentionPrefill, TensorCorePathMatchesReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  unsigned i = 0;
  for (int T : {1, 5, 16, 17, 64, 100, 257})
    for (int pos0 : {0, 37, 128})
      for (int B : {0, T}) {
        const int variant = i % 4;
        const bool smoothing = (i / 4) % 2 == 1;
        const PrefillCase c = variant == 0   ? PrefillCase{8, 4, 128, 128, T, pos0, B, smoothing}
                              : variant == 1 ? PrefillCase{6, 2, 64, 32, T, pos0, B, smoothing}
                              : variant == 2 ? PrefillCase{4, 4, 64, 4, T, pos0, B, smoothing}
                                             : PrefillCase{8, 1, 128, 2, T, pos0, B, smoothing};
        run_prefill_case(c, seed + i++, Entry::kDispatch);
      }
  // B > T (also chunk semantics) and a long chunk with many row blocks per KV head.
  run_prefill_case({8, 2, 128, 128, 70, 20, 1000, true}, seed + i++, Entry::kDispatch);
  run_prefill_case({4, 4, 128, 128, 600, 64, 0, true}, seed + i++, Entry::kDispatch);
}

// attention_prefill keeps the FP32 kernel (and its budget) for token-level / sub-chunk POQ and for pointers
// the tensor-core kernel cannot vector-load.
TEST(GpuAttentionPrefill, DispatchFallsBackToFp32) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  run_prefill_case({8, 4, 128, 128, 40, 37, 1, true}, seed, Entry::kDispatch);
  run_prefill_case({6, 2, 64, 32, 40, 37, 16, false}, seed + 1, Entry::kDispatch);
  run_prefill_case({8, 4, 128, 128, 40, 37, 0, true}, seed + 2, Entry::kMisalignedQ);
  run_prefill_case({8, 4, 64, 64, 17, 5, 17, false}, seed + 3, Entry::kMisalignedQ);
}

// ---- FP16 cache (attention_prefill_kv16) --------------------------------------------------------------

// Host image of a paged FP16 cache in kv16_cache.h's head-major layout, shuffled page table, two spare
// physical pages; every element starts as FP16 NaN so reading a position that was never written (the chunk's
// positions ≥ pos0 are deliberately left unwritten: they must come from k_full / v_full) poisons the output.
struct HostKv16Cache {
  int Hkv, D, P, n_pages, n_phys;
  std::vector<int32_t> table;
  std::vector<uint16_t> k_pool, v_pool;

  HostKv16Cache(std::mt19937& rng, int hkv, int d, int capacity, int page) : Hkv(hkv), D(d), P(page) {
    n_pages = std::max(1, (capacity + P - 1) / P);
    n_phys = n_pages + 2;
    std::vector<int32_t> perm(n_phys);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(perm.begin(), perm.begin() + n_pages);
    k_pool.assign(size_t(n_phys) * Hkv * P * D, 0xFFFF);
    v_pool = k_pool;
  }
  size_t index(int j, int h) const {
    return wk::Kv16LayerCache::offset(table[j / P], h, j % P, Hkv, P, D);
  }
  // Stores x[Hkv·D] (one token) at position j, rounded to FP16; returns the stored values in x.
  void set_row(bool is_v, int j, float* x) {
    auto& pool = is_v ? v_pool : k_pool;
    for (int h = 0; h < Hkv; ++h)
      for (int d = 0; d < D; ++d) {
        const uint16_t bits = wkv::float_to_fp16(x[h * D + d]);
        pool[index(j, h) + d] = bits;
        x[h * D + d] = wkv::fp16_to_float(bits);
      }
  }
};

struct Kv16Case {
  int H, Hkv, D, T, pos0;
};

void run_kv16_case(const Kv16Case& c, unsigned seed) {
  SCOPED_TRACE("kv16 seed " + std::to_string(seed) + " H " + std::to_string(c.H) + " Hkv " + std::to_string(c.Hkv) +
               " D " + std::to_string(c.D) + " T " + std::to_string(c.T) + " pos0 " + std::to_string(c.pos0));
  std::mt19937 rng(seed);
  const int n = c.pos0 + c.T;
  HostKv16Cache host(rng, c.Hkv, c.D, n + 3, 16);
  const size_t kv = size_t(c.Hkv) * c.D, qd = size_t(c.H) * c.D;
  std::vector<float> kd(size_t(n) * kv), vd(size_t(n) * kv);  // the keys / values attention must see
  for (int j = 0; j < c.pos0; ++j) {
    auto kr = uniform(rng, kv, -2.0f, 2.0f), vr = uniform(rng, kv, -2.5f, 2.5f);
    host.set_row(false, j, kr.data());
    host.set_row(true, j, vr.data());
    std::copy(kr.begin(), kr.end(), kd.begin() + j * kv);
    std::copy(vr.begin(), vr.end(), vd.begin() + j * kv);
  }
  const auto k_full = uniform(rng, size_t(c.T) * kv, -2.0f, 2.0f), v_full = uniform(rng, size_t(c.T) * kv, -2.5f, 2.5f);
  std::copy(k_full.begin(), k_full.end(), kd.begin() + size_t(c.pos0) * kv);
  std::copy(v_full.begin(), v_full.end(), vd.begin() + size_t(c.pos0) * kv);
  const auto q = uniform(rng, size_t(c.T) * qd, -1.0f, 1.0f);

  std::vector<double> ref(size_t(c.T) * qd);
  const int gq = c.H / c.Hkv;
  for (int t = 0; t < c.T; ++t)
    for (int h = 0; h < c.H; ++h) {
      const int kvh = h / gq;
      std::vector<const float*> keys, vals;
      for (int j = 0; j <= c.pos0 + t; ++j) {
        keys.push_back(kd.data() + j * kv + kvh * c.D);
        vals.push_back(vd.data() + j * kv + kvh * c.D);
      }
      attend_ref(q.data() + t * qd + h * c.D, keys, vals, c.D, ref.data() + t * qd + h * c.D);
    }

  auto dkp = to_device(host.k_pool), dvp = to_device(host.v_pool);
  auto dtab = to_device(host.table);
  wk::Kv16LayerCache view;
  view.k_pool = dkp.ptr;
  view.v_pool = dvp.ptr;
  view.page_table = dtab.ptr;
  view.n_pages = host.n_pages;
  view.page_size = host.P;
  view.n_kv_heads = c.Hkv;
  view.head_dim = c.D;
  auto dq = to_device(q), dk = to_device(k_full), dv = to_device(v_full);
  DeviceBuf<float> out(size_t(c.T) * qd);
  cuda_ok(cudaMemset(out.ptr, 0xFF, sizeof(float) * out.n), "poison");
  wk::PrefillAttentionArgs a;
  a.q = dq.ptr;
  a.k_full = dk.ptr;
  a.v_full = dv.ptr;
  a.out = out.ptr;
  a.n_heads = c.H;
  a.T = c.T;
  a.pos0 = c.pos0;
  a.poq_block = 3;  // ignored by the FP16 cache
  wk::attention_prefill_kv16(view, a);
  cuda_ok(cudaDeviceSynchronize(), "sync");
  const auto got = out.download();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_TRUE(std::isfinite(got[i])) << "output " << i << " not written";
  const double rel = rel_l2_d(got, ref), mx = max_abs_d(got, ref);
  EXPECT_LE(rel, kTensorCoreBudget.rel_l2) << "max abs " << mx;
  EXPECT_LE(mx, kTensorCoreBudget.max_abs) << "rel L2 " << rel;
}

TEST(GpuAttentionPrefillKv16, MatchesReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  unsigned i = 0;
  for (int T : {1, 5, 16, 17, 64, 100, 257})
    for (int pos0 : {0, 37, 128}) {
      const int variant = i % 4;
      const Kv16Case c = variant == 0   ? Kv16Case{8, 4, 128, T, pos0}
                         : variant == 1 ? Kv16Case{6, 2, 64, T, pos0}
                         : variant == 2 ? Kv16Case{4, 4, 64, T, pos0}
                                        : Kv16Case{8, 1, 128, T, pos0};
      run_kv16_case(c, seed + i++);
    }
  run_kv16_case({4, 4, 128, 300, 200}, seed + i++);
}

TEST(GpuAttentionPrefillKv16, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  DeviceBuf<uint16_t> pool(size_t(4) * 2 * 16 * 64);
  DeviceBuf<int32_t> table(4);
  DeviceBuf<float> buf(size_t(64) * 4 * 64 + 4);
  wk::Kv16LayerCache c;
  c.k_pool = pool.ptr;
  c.v_pool = pool.ptr;
  c.page_table = table.ptr;
  c.n_pages = 4;
  c.page_size = 16;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  wk::PrefillAttentionArgs a;
  a.q = a.k_full = a.v_full = buf.ptr;
  a.out = buf.ptr;
  a.n_heads = 4;
  a.T = 10;
  a.pos0 = 60;  // 70 > capacity 64
  EXPECT_THROW(wk::attention_prefill_kv16(c, a), std::invalid_argument);
  a.pos0 = 0;
  a.n_heads = 3;  // not a multiple of H_kv
  EXPECT_THROW(wk::attention_prefill_kv16(c, a), std::invalid_argument);
  a.n_heads = 4;
  a.k_full = nullptr;
  EXPECT_THROW(wk::attention_prefill_kv16(c, a), std::invalid_argument);
  a.k_full = buf.ptr;
  a.q = buf.ptr + 1;  // not 16-byte aligned
  EXPECT_THROW(wk::attention_prefill_kv16(c, a), std::invalid_argument);
  a.q = buf.ptr;
  c.head_dim = 96;
  EXPECT_THROW(wk::attention_prefill_kv16(c, a), std::invalid_argument);
  c.head_dim = 64;
  a.T = 0;  // no-op
  EXPECT_NO_THROW(wk::attention_prefill_kv16(c, a));
}

TEST(GpuAttentionPrefill, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  std::mt19937 rng(1);
  HostKv4Cache host(rng, 2, 64, 64, 64, 64, false);
  DeviceKv4Cache dev(host);
  DeviceBuf<float> buf(64 * 64 * 4);
  wk::PrefillAttentionArgs a;
  a.q = buf.ptr;
  a.out = buf.ptr;
  a.n_heads = 4;
  a.T = 10;
  a.pos0 = 60;  // beyond capacity
  EXPECT_THROW(wk::attention_prefill(dev.view, a), std::invalid_argument);
  a.pos0 = 0;
  a.poq_block = 1;  // POQ without full-precision rows
  EXPECT_THROW(wk::attention_prefill(dev.view, a), std::invalid_argument);
}

}  // namespace
