// The persistent chain of packed W4 GEMVs (wkv_kernels/w4_gemv_chain.h) against independent references:
//   * each op's output against an FP64 matvec of the dequantized weights (dequantize_w4_ref) applied to that
//     op's input computed on the host in FP64 from the chain's own earlier outputs (so every op is checked on
//     its own, with F's error budget: rel L2 ≤ 2e-6, expected ~1e-7), and the residual sums res_out bit for
//     bit against the host's FP32 res + r;
//   * the same ops run as separate single-launch F kernels (w4_gemv_packed, _add_rmsnorm, _swiglu) on the
//   same
//     inputs: rel L2 ≤ 1e-6 (only the per-row summation order may differ with the chain's block count);
//   * repeated launches and a CUDA-graph replay give the same bits, and the counters are left zeroed;
//   * outputs are poisoned with guard elements (nothing written past a row count, every row written).
// Shapes: a decode layer's run (o → gate|up → down → next q|k|v) on the ref-a shapes (dim 256, ffn 768: 16
// blocks), a GQA-like layer with rows that are not multiples of 16 (padded tiles), and the 7B shapes (4096,
// 11008: one block per SM); runs of 1 … 4 ops; bad arguments refused with the op and field named.
#include "wkv_kernels/w4_gemv_chain.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "quant_formats.h"
#include "w4_packed_test_util.h"
#include "wkv/error.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace {

using wkv::test::device_runs_packed;
using wkv::test::DeviceBuffer;
using wkv::test::Packed;
using wkv::test::random_w4;
namespace wk = wkv::kernels;

constexpr size_t kGuard = 32;  // poisoned elements after every output vector

// Host FP64 y = W'·x for a dequantized [rows][cols] matrix.
std::vector<double> matvec(const std::vector<float>& Wd, int rows, int cols, const std::vector<double>& x) {
  std::vector<double> y(rows, 0.0);
  for (int r = 0; r < rows; ++r) {
    double s = 0;
    for (int c = 0; c < cols; ++c) s += (double)Wd[(size_t)r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

std::vector<double> rmsnorm_d(const std::vector<float>& v, const std::vector<float>& w, float eps) {
  double ss = 0;
  for (float a : v) ss += (double)a * a;
  const double inv = 1.0 / std::sqrt(ss / v.size() + eps);
  std::vector<double> x(v.size());
  for (size_t i = 0; i < v.size(); ++i) x[i] = v[i] * inv * w[i];
  return x;
}

void expect_poison_intact(const std::vector<float>& y, size_t n, const std::string& what) {
  for (size_t i = n; i < y.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &y[i], 4);
    ASSERT_EQ(bits, 0xFFFFFFFFu) << what << ": write past the end at " << i;
  }
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(std::isfinite(y[i])) << what << ": row " << i << " not written";
}

std::vector<float> head(const std::vector<float>& v, size_t n) {
  return std::vector<float>(v.begin(), v.begin() + n);
}

// One decode layer's run of linears: o (dim × dim) → gate|up (2·ffn × dim, add + RMSNorm) → down (dim × ffn,
// SwiGLU) → next q|k|v (qkv_rows × dim, add + RMSNorm), as the engine chains them.
struct LayerRun {
  int dim, ffn, qkv_rows;
  wkv::W4Matrix wo, wgu, wd, wqkv;
  std::unique_ptr<Packed> po, pgu, pd, pqkv;
  std::vector<float> att, res, ffn_norm, attn_norm;
  DeviceBuffer<float> d_att, d_res, d_res1, d_res2, d_ffn_norm, d_attn_norm, d_h, d_g, d_h2, d_qkv;

  LayerRun(std::mt19937& rng, int dim_, int ffn_, int qkv_rows_)
      : dim(dim_),
        ffn(ffn_),
        qkv_rows(qkv_rows_),
        wo(random_w4(rng, dim, dim)),
        wgu(random_w4(rng, 2 * ffn, dim)),
        wd(random_w4(rng, dim, ffn)),
        wqkv(random_w4(rng, qkv_rows, dim)),
        po(std::make_unique<Packed>(wo)),
        pgu(std::make_unique<Packed>(wgu)),
        pd(std::make_unique<Packed>(wd)),
        pqkv(std::make_unique<Packed>(wqkv)),
        att(wkv::test::random_normal(rng, dim, 1.0f)),
        res(wkv::test::random_normal(rng, dim, 2.0f)),
        ffn_norm(wkv::test::uniform(rng, dim, 0.5f, 1.5f)),
        attn_norm(wkv::test::uniform(rng, dim, 0.5f, 1.5f)),
        d_att(att),
        d_res(res),
        d_res1(dim + kGuard),
        d_res2(dim + kGuard),
        d_ffn_norm(ffn_norm),
        d_attn_norm(attn_norm),
        d_h(dim + kGuard),
        d_g(2 * ffn + kGuard),
        d_h2(dim + kGuard),
        d_qkv(qkv_rows + kGuard) {}

  void poison_outputs() {
    for (auto* b : {&d_res1, &d_res2, &d_h, &d_g, &d_h2, &d_qkv}) b->poison(0xFF);
  }

  std::vector<wk::W4ChainOp> ops() const {
    std::vector<wk::W4ChainOp> v(4);
    v[0].w = po->view, v[0].x = d_att.get(), v[0].y = d_h.get();
    v[1].w = pgu->view, v[1].input = wk::W4ChainInput::add_rmsnorm, v[1].res = d_res.get(),
    v[1].r = d_h.get();
    v[1].norm_weight = d_ffn_norm.get(), v[1].eps = 1e-5f, v[1].res_out = d_res1.get(), v[1].y = d_g.get();
    v[2].w = pd->view, v[2].input = wk::W4ChainInput::swiglu, v[2].x = d_g.get(), v[2].u = d_g.get() + ffn;
    v[2].y = d_h2.get();
    v[3].w = pqkv->view, v[3].input = wk::W4ChainInput::add_rmsnorm, v[3].res = d_res1.get(),
    v[3].r = d_h2.get();
    v[3].norm_weight = d_attn_norm.get(), v[3].eps = 1e-5f, v[3].res_out = d_res2.get(), v[3].y = d_qkv.get();
    return v;
  }
};

struct Outputs {
  std::vector<float> h, g, res1, h2, res2, qkv;
};

Outputs download(const LayerRun& L) {
  return {L.d_h.download(),  L.d_g.download(),    L.d_res1.download(),
          L.d_h2.download(), L.d_res2.download(), L.d_qkv.download()};
}

// Every op against FP64 on the inputs the chain itself produced; the residual sums bit for bit.
void check_against_fp64(const LayerRun& L, const Outputs& o, int n_ops) {
  const int d = L.dim, f = L.ffn;
  std::vector<double> x0(L.att.begin(), L.att.end());
  EXPECT_LE(wkv::test::rel_l2_d(head(o.h, d), matvec(wkv::dequantize_w4_ref(L.wo), d, d, x0)), 2e-6)
      << "op 0 (o)";
  if (n_ops < 2) return;
  std::vector<float> res1(d);
  for (int i = 0; i < d; ++i) res1[i] = L.res[i] + o.h[i];
  ASSERT_EQ(std::memcmp(res1.data(), o.res1.data(), d * 4), 0) << "op 1 res_out differs from res + h";
  EXPECT_LE(wkv::test::rel_l2_d(head(o.g, 2 * f), matvec(wkv::dequantize_w4_ref(L.wgu), 2 * f, d,
                                                         rmsnorm_d(res1, L.ffn_norm, 1e-5f))),
            2e-6)
      << "op 1 (gate|up)";
  if (n_ops < 3) return;
  std::vector<double> x2(f);
  for (int i = 0; i < f; ++i) {
    const double gt = o.g[i];
    x2[i] = gt / (1.0 + std::exp(-gt)) * o.g[f + i];
  }
  EXPECT_LE(wkv::test::rel_l2_d(head(o.h2, d), matvec(wkv::dequantize_w4_ref(L.wd), d, f, x2)), 2e-6)
      << "op 2 (down)";
  if (n_ops < 4) return;
  std::vector<float> res2(d);
  for (int i = 0; i < d; ++i) res2[i] = o.res1[i] + o.h2[i];
  ASSERT_EQ(std::memcmp(res2.data(), o.res2.data(), d * 4), 0) << "op 3 res_out differs from res1 + h2";
  EXPECT_LE(wkv::test::rel_l2_d(head(o.qkv, L.qkv_rows), matvec(wkv::dequantize_w4_ref(L.wqkv), L.qkv_rows, d,
                                                                rmsnorm_d(res2, L.attn_norm, 1e-5f))),
            2e-6)
      << "op 3 (q|k|v)";
}

// The first n elements of v as the FP64 reference of wkv::test::rel_l2_d.
std::vector<double> ref_of(const std::vector<float>& v, size_t n) {
  return std::vector<double>(v.begin(), v.begin() + n);
}

// The same ops as single-launch F kernels, each on the chain's own inputs (so the comparison is per op).
void check_against_single_launches(const LayerRun& L, const Outputs& o) {
  const int d = L.dim, f = L.ffn;
  DeviceBuffer<float> y(std::max(2 * f, L.qkv_rows)), scratch(d), h(head(o.h, d)), g(head(o.g, 2 * f)),
      h2(head(o.h2, d)), res1(head(o.res1, d));
  wk::w4_gemv_packed(L.po->view, L.d_att.get(), 1, y.get());
  EXPECT_LE(wkv::test::rel_l2_d(head(y.download(), d), ref_of(o.h, d)), 1e-6) << "o vs single launch";
  wk::w4_gemv_packed_add_rmsnorm(L.pgu->view, L.d_res.get(), h.get(), L.d_ffn_norm.get(), 1e-5f,
                                 scratch.get(), y.get());
  EXPECT_LE(wkv::test::rel_l2_d(head(y.download(), 2 * f), ref_of(o.g, 2 * f)), 1e-6)
      << "gate|up vs single launch";
  wk::w4_gemv_packed_swiglu(L.pd->view, g.get(), g.get() + f, y.get());
  EXPECT_LE(wkv::test::rel_l2_d(head(y.download(), d), ref_of(o.h2, d)), 1e-6) << "down vs single launch";
  wk::w4_gemv_packed_add_rmsnorm(L.pqkv->view, res1.get(), h2.get(), L.d_attn_norm.get(), 1e-5f,
                                 scratch.get(), y.get());
  EXPECT_LE(wkv::test::rel_l2_d(head(y.download(), L.qkv_rows), ref_of(o.qkv, L.qkv_rows)), 1e-6)
      << "q|k|v vs single launch";
}

bool same_bits(const Outputs& a, const Outputs& b) {
  auto eq = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
  };
  return eq(a.h, b.h) && eq(a.g, b.g) && eq(a.res1, b.res1) && eq(a.h2, b.h2) && eq(a.res2, b.res2) &&
         eq(a.qkv, b.qkv);
}

void check_layer(int dim, int ffn, int qkv_rows) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " dim " + std::to_string(dim) + " ffn " +
               std::to_string(ffn) + " qkv rows " + std::to_string(qkv_rows));
  std::mt19937 rng(seed);
  LayerRun L(rng, dim, ffn, qkv_rows);
  const auto ops = L.ops();
  ASSERT_TRUE(wk::w4_gemv_chain_supported(ops.data(), 4));
  DeviceBuffer<unsigned int> counters(wk::kW4ChainCounters);
  counters.poison(0);
  L.poison_outputs();
  wk::w4_gemv_chain(ops.data(), 4, counters.get());
  const Outputs o = download(L);
  expect_poison_intact(o.h, dim, "h");
  expect_poison_intact(o.g, 2 * ffn, "g");
  expect_poison_intact(o.res1, dim, "res1");
  expect_poison_intact(o.h2, dim, "h2");
  expect_poison_intact(o.res2, dim, "res2");
  expect_poison_intact(o.qkv, qkv_rows, "qkv");
  for (unsigned int c : counters.download()) ASSERT_EQ(c, 0u) << "counters not reset";
  check_against_fp64(L, o, 4);
  check_against_single_launches(L, o);

  // Launched again (counters reused) and replayed from a CUDA graph: the same bits.
  L.poison_outputs();
  wk::w4_gemv_chain(ops.data(), 4, counters.get());
  ASSERT_TRUE(same_bits(download(L), o)) << "second launch differs";
  cudaStream_t s;
  wkv::test::cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  wkv::test::cuda_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture");
  wk::w4_gemv_chain(ops.data(), 4, counters.get(), s);
  wkv::test::cuda_ok(cudaStreamEndCapture(s, &graph), "end capture");
  wkv::test::cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  for (int rep = 0; rep < 3; ++rep) {
    L.poison_outputs();
    wkv::test::cuda_ok(cudaGraphLaunch(exec, s), "graph launch");
    wkv::test::cuda_ok(cudaStreamSynchronize(s), "graph sync");
    ASSERT_TRUE(same_bits(download(L), o)) << "graph replay " << rep << " differs";
  }
  for (unsigned int c : counters.download()) ASSERT_EQ(c, 0u) << "counters not reset after the graph";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

TEST(W4GemvChain, RefALayerMatchesFp64AndSingleLaunches) {
  WKV_REQUIRE_PACKED_GPU("the packed GEMV chain");
  check_layer(256, 768, 768);
}

TEST(W4GemvChain, GqaLayerWithPaddedTiles) {
  WKV_REQUIRE_PACKED_GPU("the packed GEMV chain");
  check_layer(640, 1664, 640 + 2 * 168 + 5);  // q|k|v rows not a multiple of 16; 40 tiles → 40 blocks
}

TEST(W4GemvChain, SevenBLayerMatchesFp64AndSingleLaunches) {
  WKV_REQUIRE_PACKED_GPU("the packed GEMV chain");
  check_layer(4096, 11008, 3 * 4096);
}

// Runs of 1, 2 and 3 ops (the last layer's chain has 3) give what the longer run gives for those ops.
TEST(W4GemvChain, ShorterRunsMatchFp64) {
  WKV_REQUIRE_PACKED_GPU("the packed GEMV chain");
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  LayerRun L(rng, 384, 1024, 1152);
  const auto ops = L.ops();
  DeviceBuffer<unsigned int> counters(wk::kW4ChainCounters);
  counters.poison(0);
  for (int n = 1; n <= 3; ++n) {
    SCOPED_TRACE(std::to_string(n) + " ops");
    L.poison_outputs();
    wk::w4_gemv_chain(ops.data(), n, counters.get());
    const Outputs o = download(L);
    check_against_fp64(L, o, n);
    // Ops beyond the run were not executed: their outputs keep the poison.
    if (n < 4) {
      uint32_t bits;
      std::memcpy(&bits, &o.qkv[0], 4);
      EXPECT_EQ(bits, 0xFFFFFFFFu) << "an op beyond the run wrote its output";
    }
    for (unsigned int c : counters.download()) ASSERT_EQ(c, 0u);
  }
}

TEST(W4GemvChain, RefusesBadRunsNamingTheField) {
  WKV_REQUIRE_PACKED_GPU("the packed GEMV chain");
  std::mt19937 rng(7);
  LayerRun L(rng, 256, 768, 768);
  auto ops = L.ops();
  DeviceBuffer<unsigned int> counters(wk::kW4ChainCounters);
  counters.poison(0);
  auto message_of = [&](const std::vector<wk::W4ChainOp>& v, int n, unsigned int* c) -> std::string {
    try {
      wk::w4_gemv_chain(v.data(), n, c);
    } catch (const wkv::Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message_of(ops, 0, counters.get()).find("needs 1"), std::string::npos);
  EXPECT_NE(message_of(ops, 5, counters.get()).find("needs 1"), std::string::npos);
  EXPECT_NE(message_of(ops, 4, nullptr).find("counters"), std::string::npos);
  auto bad = ops;
  bad[1].y = nullptr;
  EXPECT_NE(message_of(bad, 4, counters.get()).find("op 1: y is null"), std::string::npos);
  bad = ops;
  bad[2].u = nullptr;
  EXPECT_NE(message_of(bad, 4, counters.get()).find("op 2: swiglu"), std::string::npos);
  bad = ops;
  bad[3].res_out = const_cast<float*>(bad[3].res);
  EXPECT_NE(message_of(bad, 4, counters.get()).find("op 3: res_out and y must not alias"), std::string::npos);
  bad = ops;
  bad[0].w.cols = 200;  // not a multiple of 128: no packed layout
  EXPECT_FALSE(wk::w4_gemv_chain_supported(bad.data(), 4));
  EXPECT_NE(message_of(bad, 4, counters.get()).find("not all packed matrices"), std::string::npos);
  // Nothing was launched by the refused calls: the counters are still zero.
  for (unsigned int c : counters.download()) ASSERT_EQ(c, 0u);
}

}  // namespace
