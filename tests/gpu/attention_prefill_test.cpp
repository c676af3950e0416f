// GPU prefill attention with POQ blocks vs a double-precision reference: keys/values j < pos0 + floor(t/B)·B
// from the reference-dequantized cache, the rest of j ≤ p from the chunk's full-precision rows (B = 0: all from
// the cache). The cache holds the past and the chunk, quantized by quantize_kv4_ref (the caller appends the
// chunk before attention). Error budget: relative L2 ≤ 1e-5, max abs ≤ 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

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

void run_prefill_case(const PrefillCase& c, unsigned seed) {
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
  a.poq_block = c.B;
  wk::attention_prefill(dev.view, a);
  cuda_ok(cudaDeviceSynchronize(), "sync");
  const auto got = out.download();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_TRUE(std::isfinite(got[i])) << "output " << i << " not written";
  const double rel = rel_l2_d(got, ref), mx = max_abs_d(got, ref);
  EXPECT_LE(rel, 1e-5) << "max abs " << mx;
  EXPECT_LE(mx, 1e-4) << "rel L2 " << rel;
}

TEST(GpuAttentionPrefill, MatchesReferenceWithPoqBlocks) {
  const auto info = wkv::kernels::query_device();
  if (!info.available) GTEST_SKIP() << "GPU test skipped: " << info.reason;
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

TEST(GpuAttentionPrefill, RejectsBadArguments) {
  const auto info = wkv::kernels::query_device();
  if (!info.available) GTEST_SKIP() << "GPU test skipped: " << info.reason;
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
