// Elementwise ops against the CPU reference (engine/src/cpu_ops.h) and exact expectations.
// Budgets: rmsnorm rel L2 ≤ 1e-5 per row (FP32 vs double sum of squares), FP16 output within one FP16
//   rounding step of the FP32 reference; rope rel L2 ≤ 1e-5 and max abs ≤ 1e-5·max|x| (same angle
//   bits, sincosf ≤ 2 ulp); swiglu per element ≤ 1e-5·|ref| + 1e-30 (expf ≤ 2 ulp); add, embedding and
//   argmax exact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cpu_ops.h"
#include "gpu_test_util.h"
#include "half.h"
#include "test_support.h"
#include "wkv/error.h"
#include "wkv_kernels/elementwise.h"

namespace {

using wkv::test::DeviceBuffer;

TEST(Elementwise, RmsNormMatchesCpu) {
  WKV_REQUIRE_GPU();
  for (int T : {1, 3, 17})
    for (int n : {1, 7, 4096, 5120}) {
      const uint32_t seed = wkv::test::fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " T " + std::to_string(T) + " n " + std::to_string(n));
      std::mt19937 rng(seed);
      const auto x = wkv::test::random_normal(rng, (size_t)T * n, 2.0f, 0.3f);
      const auto w = wkv::test::random_normal(rng, n, 0.5f, 1.0f);
      const float eps = 1e-5f;
      std::vector<float> ref((size_t)T * n);
      wkv::cpu::rmsnorm(x.data(), w.data(), T, n, eps, ref.data());
      DeviceBuffer<float> dx(x), dw(w), dy((size_t)T * n);
      DeviceBuffer<uint16_t> dh((size_t)T * n);
      dy.poison(0xFF);
      dh.poison(0xFF);
      wkv::kernels::rmsnorm_f32(dx.get(), dw.get(), T, n, eps, dy.get());
      wkv::kernels::rmsnorm_f16(dx.get(), dw.get(), T, n, eps, dh.get());
      const auto y = dy.download();
      const auto h = dh.download();
      for (int t = 0; t < T; ++t) {
        const size_t o = (size_t)t * n;
        for (int i = 0; i < n; ++i) {
          ASSERT_TRUE(std::isfinite(y[o + i])) << "not written: t " << t << " i " << i;
          const float hf = wkv::fp16_to_float(h[o + i]);
          ASSERT_TRUE(std::isfinite(hf)) << "fp16 not written: t " << t << " i " << i;
          // One FP16 step at |ref| (2^-10 relative for normals) plus the FP32 difference.
          ASSERT_LE(std::fabs(hf - ref[o + i]), std::fabs(ref[o + i]) * 0x1p-10f + 0x1p-24f) << t << " " << i;
        }
        EXPECT_LE(wkv::test::rel_l2(y.data() + o, ref.data() + o, n), 1e-5) << "row " << t;
      }
    }
}

TEST(Elementwise, RopeMatchesCpu) {
  WKV_REQUIRE_GPU();
  struct Case {
    int T, heads, D, pos0;
    float theta;
  };
  for (const Case c : {Case{1, 1, 2, 0, 10000.0f}, Case{5, 4, 64, 17, 10000.0f}, Case{33, 32, 128, 0, 10000.0f},
                       Case{3, 8, 128, 4000, 10000.0f}, Case{2, 8, 128, 100000, 500000.0f},
                       Case{7, 3, 64, 123, 500000.0f}}) {
    const uint32_t seed = wkv::test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " T " + std::to_string(c.T) + " heads " +
                 std::to_string(c.heads) + " D " + std::to_string(c.D) + " pos0 " + std::to_string(c.pos0));
    std::mt19937 rng(seed);
    const size_t n = (size_t)c.T * c.heads * c.D;
    const auto x = wkv::test::random_normal(rng, n, 1.0f);
    auto ref = x;
    wkv::cpu::rope(ref.data(), c.T, c.heads, c.D, c.pos0, c.theta);
    DeviceBuffer<float> dx(x);
    wkv::kernels::rope(dx.get(), c.T, c.heads, c.D, c.pos0, c.theta);
    const auto y = dx.download();
    float mx = 0;
    for (float v : x) mx = std::max(mx, std::fabs(v));
    EXPECT_LE(wkv::test::rel_l2(y.data(), ref.data(), n), 1e-5);
    EXPECT_LE(wkv::test::max_abs_diff(y.data(), ref.data(), n), 1e-5 * mx);
  }
}

// rope_at reads the position on the device (captured once in a CUDA graph, replayed at several positions):
// the same bits as rope(x, T = 1, …, pos0 = position).
TEST(Elementwise, RopeAtMatchesRopeBitExact) {
  WKV_REQUIRE_GPU();
  struct Case {
    int heads, D;
    float theta;
  };
  for (const Case c : {Case{1, 2, 10000.0f}, Case{32, 128, 10000.0f}, Case{8, 64, 500000.0f}, Case{3, 130, 1e6f}}) {
    const uint32_t seed = wkv::test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " heads " + std::to_string(c.heads) + " D " + std::to_string(c.D));
    std::mt19937 rng(seed);
    const size_t n = (size_t)c.heads * c.D;
    DeviceBuffer<float> dx(n), dref(n);
    DeviceBuffer<int32_t> dpos(1);
    cudaStream_t stream = nullptr;
    wkv::test::cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    wkv::test::cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
    wkv::kernels::rope_at(dx.get(), c.heads, c.D, dpos.get(), c.theta, stream);
    wkv::test::cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
    wkv::test::cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    for (int pos : {0, 1, 17, 4095, 32767, 100000}) {
      SCOPED_TRACE("pos " + std::to_string(pos));
      const auto x = wkv::test::random_normal(rng, n, 1.0f);
      dx.upload(x);
      dref.upload(x);
      const int32_t p = pos;
      wkv::test::cuda_ok(cudaMemcpy(dpos.get(), &p, sizeof(p), cudaMemcpyHostToDevice), "pos");
      wkv::test::cuda_ok(cudaDeviceSynchronize(), "pageable copy landed");  // before non-blocking-stream work
      wkv::test::cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
      wkv::test::cuda_ok(cudaStreamSynchronize(stream), "graph sync");
      wkv::kernels::rope(dref.get(), 1, c.heads, c.D, pos, c.theta);
      const auto got = dx.download(), want = dref.download();
      ASSERT_EQ(0, std::memcmp(got.data(), want.data(), n * sizeof(float)));
      auto cpu = x;  // and the CPU reference, to the rope budget
      wkv::cpu::rope(cpu.data(), 1, c.heads, c.D, pos, c.theta);
      float mx = 0;
      for (float v : x) mx = std::max(mx, std::fabs(v));
      EXPECT_LE(wkv::test::max_abs_diff(got.data(), cpu.data(), n), 1e-5 * mx);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST(Elementwise, SwigluMatchesCpu) {
  WKV_REQUIRE_GPU();
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(11008) * 3 + 5}) {
    const uint32_t seed = wkv::test::fresh_seed();
    SCOPED_TRACE("seed " + std::to_string(seed) + " n " + std::to_string(n));
    std::mt19937 rng(seed);
    auto g = wkv::test::random_normal(rng, n, 4.0f);
    const auto u = wkv::test::random_normal(rng, n, 1.0f);
    if (n > 4) g[0] = -100.0f, g[1] = 100.0f, g[2] = 0.0f, g[3] = -0.0f;  // exp overflow / saturation / zeros
    auto ref = g;
    wkv::cpu::swiglu(ref.data(), u.data(), n);
    DeviceBuffer<float> dg(g), du(u);
    wkv::kernels::swiglu(dg.get(), du.get(), n);
    const auto y = dg.download();
    for (int64_t i = 0; i < n; ++i)
      ASSERT_LE(std::fabs(y[i] - ref[i]), 1e-5f * std::fabs(ref[i]) + 1e-30f) << "i " << i << " g " << g[i];
  }
}

TEST(Elementwise, AddIsExact) {
  WKV_REQUIRE_GPU();
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t n = 4096 * 3 + 1;
  const auto x = wkv::test::random_normal(rng, n, 3.0f);
  const auto r = wkv::test::random_normal(rng, n, 0.1f);
  DeviceBuffer<float> dx(x), dr(r);
  wkv::kernels::add_inplace(dx.get(), dr.get(), n);
  const auto y = dx.download();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], x[i] + r[i]) << i;
}

// The fused residual add + norm of the decode step equals the two separate kernels bit for bit.
TEST(Elementwise, AddRmsNormEqualsAddThenRmsNorm) {
  WKV_REQUIRE_GPU();
  for (int T : {1, 3})
    for (int n : {1, 255, 4096, 5120}) {
      const uint32_t seed = wkv::test::fresh_seed();
      SCOPED_TRACE("seed " + std::to_string(seed) + " T " + std::to_string(T) + " n " + std::to_string(n));
      std::mt19937 rng(seed);
      const auto x = wkv::test::random_normal(rng, (size_t)T * n, 2.0f);
      const auto r = wkv::test::random_normal(rng, (size_t)T * n, 0.5f);
      const auto w = wkv::test::random_normal(rng, n, 0.5f, 1.0f);
      DeviceBuffer<float> x1(x), x2(x), dr(r), dw(w), y1((size_t)T * n), y2((size_t)T * n);
      y2.poison(0xFF);
      wkv::kernels::add_inplace(x1.get(), dr.get(), (int64_t)T * n);
      wkv::kernels::rmsnorm_f32(x1.get(), dw.get(), T, n, 1e-5f, y1.get());
      wkv::kernels::add_rmsnorm_f32(x2.get(), dr.get(), dw.get(), T, n, 1e-5f, y2.get());
      EXPECT_EQ(x1.download(), x2.download());
      EXPECT_EQ(y1.download(), y2.download());
    }
  DeviceBuffer<float> d(4);
  EXPECT_THROW(wkv::kernels::add_rmsnorm_f32(d.get(), nullptr, d.get(), 1, 4, 1e-5f, d.get()), wkv::Error);
}

TEST(Elementwise, EmbeddingLookupIsExact) {
  WKV_REQUIRE_GPU();
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int vocab = 1001, dim = 300;
  std::vector<uint16_t> table((size_t)vocab * dim);
  for (auto& h : table) h = wkv::float_to_fp16(std::normal_distribution<float>(0.0f, 0.1f)(rng));
  const std::vector<int32_t> ids = {0, 1000, 7, 7, -1, 1001, 500};
  DeviceBuffer<uint16_t> dt(table);
  DeviceBuffer<int32_t> di(ids);
  DeviceBuffer<float> out(ids.size() * dim);
  out.poison(0x00);
  wkv::kernels::embedding_lookup(dt.get(), vocab, dim, di.get(), (int)ids.size(), out.get());
  const auto y = out.download();
  for (size_t t = 0; t < ids.size(); ++t)
    for (int j = 0; j < dim; ++j) {
      const float v = y[t * dim + j];
      if (ids[t] < 0 || ids[t] >= vocab)
        ASSERT_TRUE(std::isnan(v)) << "invalid id " << ids[t] << " must give NaN";
      else
        ASSERT_EQ(v, wkv::fp16_to_float(table[(size_t)ids[t] * dim + j])) << "t " << t << " j " << j;
    }
}

int argmax_ref(const float* v, int n) {
  int best = -1;
  for (int i = 0; i < n; ++i)
    if (!std::isnan(v[i]) && (best < 0 || v[i] > v[best])) best = i;  // strict >: ties keep the lowest
  return best;
}

TEST(Elementwise, ArgmaxExactWithTies) {
  WKV_REQUIRE_GPU();
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int vocab : {1, 31, 257, 32000, 128256}) {
    SCOPED_TRACE("vocab " + std::to_string(vocab));
    std::vector<std::vector<float>> rows;
    rows.push_back(wkv::test::random_normal(rng, vocab, 3.0f));       // plain
    auto tie = wkv::test::random_normal(rng, vocab, 3.0f);           // max repeated at random places
    std::uniform_int_distribution<int> pick(0, vocab - 1);
    for (int k = 0; k < 5; ++k) tie[pick(rng)] = 50.0f;
    rows.push_back(tie);
    rows.push_back(std::vector<float>(vocab, 1.25f));                // all equal → 0
    rows.push_back(std::vector<float>(vocab, -inf));                 // all −Inf → 0
    auto withnan = wkv::test::random_normal(rng, vocab, 3.0f);       // NaN never wins
    for (int k = 0; k < 7; ++k) withnan[pick(rng)] = nan;
    rows.push_back(withnan);
    rows.push_back(std::vector<float>(vocab, nan));                  // nothing but NaN → −1
    auto last = std::vector<float>(vocab, 0.0f);                     // max at the last index
    last[vocab - 1] = 1.0f;
    rows.push_back(last);
    const int B = (int)rows.size();
    std::vector<float> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    DeviceBuffer<float> dl(flat);
    DeviceBuffer<int32_t> out(B);
    out.poison(0x7F);
    wkv::kernels::argmax(dl.get(), B, vocab, out.get());
    const auto got = out.download();
    for (int b = 0; b < B; ++b) EXPECT_EQ(got[b], argmax_ref(rows[b].data(), vocab)) << "row " << b;
  }
}

TEST(Elementwise, RejectsInvalidArguments) {
  float x = 0;
  EXPECT_THROW(wkv::kernels::rope(&x, 1, 1, 3, 0, 10000.0f), wkv::Error);  // odd head_dim
  EXPECT_THROW(wkv::kernels::rope(&x, 1, 1, 4, -1, 10000.0f), wkv::Error);
  EXPECT_THROW(wkv::kernels::rope_at(&x, 1, 3, nullptr, 10000.0f), wkv::Error);  // odd head_dim
  EXPECT_THROW(wkv::kernels::rope_at(&x, 1, 4, nullptr, 10000.0f), wkv::Error);  // no position
  EXPECT_THROW(wkv::kernels::rmsnorm_f32(&x, &x, 0, 4, 1e-5f, &x), wkv::Error);
  EXPECT_THROW(wkv::kernels::argmax(&x, 1, 0, nullptr), wkv::Error);
  EXPECT_THROW(wkv::kernels::embedding_lookup(nullptr, 1, 1, nullptr, 1, &x), wkv::Error);
}

}  // namespace
