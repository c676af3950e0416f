// One decoder block's calibration forward / backward on the GPU (cuda/calib_cuda.h) against the CPU
// reference (calib_block.h) on small random blocks: full-precision and quantized paths, GQA, head_dim
// 32 / 64 / 128, W4 groups 16 / 32 / 128, KV groups smaller than and equal to head_dim. Compared: the
// output, every tape tensor, dx and every parameter gradient.
//
// Budgets: relative L2 1e-4 for outputs, tape and dx (a chain of ~10 FP32 ops, each ~1e-6 apart), 1e-3 for
// the parameter gradients (per-group sums with cancellation). The LWC logits are 0 (σ = 0.5 exactly on
// both sides, so the weight fake quantization is bit-identical); the KV fake quantization sees K/V that
// differ in the last bits, so a value on a rounding tie can land on the other level on the GPU (~1e-6 per
// element). Such a flip changes the attention visibly, so a draw with a flipped K/V element is detected
// (from the tapes) and redrawn; five draws in a row with a flip would be a real bug.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "calib_block.h"
#include "cuda/calib_cuda.h"
#include "gpu_test_util.h"
#include "test_support.h"

namespace {

namespace cc = wkv::calib;
using Vec = std::vector<float>;

struct Case {
  int dim, H, Hkv, D, ffn, wg, kvg, L;
};

Vec normal(std::mt19937& g, size_t n, float sd) { return wkv::test::random_normal(g, n, sd); }
using wkv::test::uniform;

wkv::LayerWeights random_layer(std::mt19937& g, const cc::BlockShape& s) {
  wkv::LayerWeights w;
  const int outs[cc::kNumLinears] = {s.q_dim(), s.kv_dim(), s.kv_dim(), s.dim, s.ffn, s.ffn, s.dim};
  const int ins[cc::kNumLinears] = {s.dim, s.dim, s.dim, s.q_dim(), s.dim, s.dim, s.ffn};
  for (int i = 0; i < cc::kNumLinears; ++i)
    cc::block_linear(w, i) = wkv::Linear(outs[i], ins[i], normal(g, size_t(outs[i]) * ins[i], 1.0f / std::sqrt(float(ins[i]))));
  w.attn_norm = uniform(g, size_t(s.dim), 0.8f, 1.2f);
  w.ffn_norm = uniform(g, size_t(s.dim), 0.8f, 1.2f);
  return w;
}

double rel(const Vec& a, const Vec& b) { return wkv::test::rel_l2(a.data(), b.data(), b.size()); }

void expect_close(const Vec& gpu, const Vec& cpu, double budget, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  for (size_t i = 0; i < gpu.size(); ++i) ASSERT_TRUE(std::isfinite(gpu[i])) << what << " element " << i;
  if (cpu.empty()) return;
  EXPECT_LE(rel(gpu, cpu), budget) << what << " (max abs " << wkv::test::max_abs_diff(gpu.data(), cpu.data(), cpu.size())
                                   << ")";
}

// Elements of the quantized K / V that landed on another level than the CPU's (a tie flip).
int kv_flips(const cc::BlockTape& gpu, const cc::BlockTape& cpu) {
  int n = 0;
  for (auto [g, c] : {std::pair{&gpu.kq, &cpu.kq}, std::pair{&gpu.vq, &cpu.vq}}) {
    double ss = 0;
    for (float x : *c) ss += double(x) * x;
    const double tol = 1e-3 * std::sqrt(ss / double(std::max<size_t>(c->size(), 1)));
    for (size_t i = 0; i < c->size(); ++i) n += std::fabs(double((*g)[i]) - (*c)[i]) > tol;
  }
  return n;
}

void run_case(const Case& c, bool quantized, bool lwc, bool smooth) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + ", dim " + std::to_string(c.dim) + " H " + std::to_string(c.H) +
               " Hkv " + std::to_string(c.Hkv) + " D " + std::to_string(c.D) + " L " + std::to_string(c.L) +
               (quantized ? std::string(" quantized") + (lwc ? " lwc" : "") + (smooth ? " smooth" : "") : " fp"));
  std::mt19937 g(seed);
  cc::BlockShape s;
  s.dim = c.dim;
  s.n_heads = c.H;
  s.n_kv_heads = c.Hkv;
  s.head_dim = c.D;
  s.ffn = c.ffn;
  s.weight_group = c.wg;
  s.kv_group = c.kvg;
  s.rope_theta = 10000.0f;
  s.norm_eps = 1e-5f;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const wkv::LayerWeights w = random_layer(g, s);
    cc::BlockQuantParams P = cc::make_block_params(s, lwc, smooth, 0.0f);
    if (smooth) {
      P.k_delta = normal(g, size_t(s.kv_dim()), 0.1f);
      P.v_delta = normal(g, size_t(s.kv_dim()), 0.1f);
      P.k_scale = uniform(g, size_t(s.kv_dim()), 0.5f, 2.0f);
      P.v_scale = uniform(g, size_t(s.kv_dim()), 0.5f, 2.0f);
    }
    const cc::BlockQuantParams* params = quantized ? &P : nullptr;
    const size_t Ld = size_t(c.L) * c.dim;
    const Vec x = normal(g, Ld, 1.0f), dy = normal(g, Ld, 1.0f);

    Vec y_cpu(Ld), dx_cpu(Ld), y_gpu, dx_gpu;
    cc::BlockTape t_cpu, t_gpu;
    cc::BlockQuantParams g_cpu = cc::zeros_like(P), g_gpu;
    cc::block_forward(s, w, params, x.data(), 1, c.L, y_cpu.data(), &t_cpu);
    cc::block_backward(s, w, params, t_cpu, dy.data(), dx_cpu.data(), quantized ? &g_cpu : nullptr);
    cc::cuda_block_forward_backward(s, w, params, x.data(), c.L, dy.data(), &y_gpu, &dx_gpu,
                                    quantized ? &g_gpu : nullptr, &t_gpu);
    if (quantized) {
      const int flips = kv_flips(t_gpu, t_cpu);
      if (flips > 0) {
        std::printf("draw %d: %d K/V elements on a rounding tie quantized to another level; redrawing\n", attempt,
                    flips);
        continue;
      }
      for (int i = 0; i < cc::kNumLinears; ++i)
        expect_close(t_gpu.wq[i], t_cpu.wq[i], 1e-6, std::string("fake-quantized ") + cc::linear_name(i));
    }
    expect_close(t_gpu.h1, t_cpu.h1, 1e-5, "h1");
    expect_close(t_gpu.q, t_cpu.q, 1e-4, "q");
    expect_close(t_gpu.k, t_cpu.k, 1e-4, "k");
    expect_close(t_gpu.v, t_cpu.v, 1e-4, "v");
    expect_close(t_gpu.kq, t_cpu.kq, 1e-4, "kq");
    expect_close(t_gpu.vq, t_cpu.vq, 1e-4, "vq");
    expect_close(t_gpu.probs, t_cpu.probs, 1e-4, "probs");
    expect_close(t_gpu.att, t_cpu.att, 1e-4, "att");
    expect_close(t_gpu.x2, t_cpu.x2, 1e-4, "x2");
    expect_close(t_gpu.act, t_cpu.act, 1e-4, "act");
    expect_close(y_gpu, y_cpu, 1e-4, "y");
    expect_close(dx_gpu, dx_cpu, 1e-4, "dx");
    if (quantized) {
      std::vector<const Vec*> gv, cv;
      cc::for_each_param(g_gpu, [&](const Vec& v, bool) { gv.push_back(&v); });
      cc::for_each_param(g_cpu, [&](const Vec& v, bool) { cv.push_back(&v); });
      ASSERT_EQ(gv.size(), cv.size());
      ASSERT_EQ(gv.size(), size_t((lwc ? 2 * cc::kNumLinears : 0) + (smooth ? 4 : 0)));
      for (size_t i = 0; i < gv.size(); ++i) {
        double norm = 0;
        for (float v : *cv[i]) norm += double(v) * v;
        EXPECT_GT(norm, 0.0) << "gradient " << i << " is zero on the CPU: the case tests nothing";
        expect_close(*gv[i], *cv[i], 1e-3, "gradient " + std::to_string(i));
      }
    }
    return;
  }
  FAIL() << "five draws in a row with K/V rounding flips: the GPU KV fake quantization disagrees with the CPU";
}

const Case kCases[] = {
    {64, 4, 2, 32, 96, 16, 16, 23},     // GQA, KV group < head_dim
    {128, 2, 1, 64, 160, 32, 0, 17},    // GQA 2:1, D 64
    {256, 2, 2, 128, 384, 128, 0, 9},   // D 128, W4 group 128
};

class CalibBlockGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    WKV_REQUIRE_GPU();
  }
};

TEST_F(CalibBlockGpu, FullPrecisionPath) {
  for (const Case& c : kCases) run_case(c, false, false, false);
}

TEST_F(CalibBlockGpu, QuantizedPathLwcAndSmoothing) {
  for (const Case& c : kCases) run_case(c, true, true, true);
}

TEST_F(CalibBlockGpu, QuantizedPathAblations) {
  run_case(kCases[0], true, false, true);  // RTN weights, learned smoothing
  run_case(kCases[1], true, true, false);  // LWC, identity smoothing
}

}  // namespace
