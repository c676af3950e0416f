// The GPU calibration ops (kernels/calib_ops.h) against the CPU reference (engine/src/calib_ops.h) on fresh
// random inputs: odd sizes, GQA, head_dim 64 / 128, several group sizes. Forward outputs are poisoned (NaN)
// before the launch; backward outputs start from the same random values on both sides (they accumulate).
//
// Budgets (relative L2 against the CPU in FP32): 1e-5 for the smooth ops (the GPU sums in another order
// and its expf / sincosf are within 2 ulp of the host's). The fake quantizers round: an element whose
// quantizer input u lies within an ulp of k + 0.5 can round to the other level when an upstream value
// (σ(a) through expf, or the input itself) differs in the last bit. Random data hits this with a
// probability of ~1e-6 per element, so there at least 99.9 % of the elements must match to 1e-5 (relative
// to the tensor's scale) and every element must lie within one quantization step of the CPU's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "calib_ops.h"
#include "gpu_test_util.h"
#include "test_support.h"
#include "wkv_kernels/calib_ops.h"

namespace {

namespace cc = wkv::calib;
namespace kc = wkv::kernels::calib;
using wkv::test::DeviceBuffer;
using Vec = std::vector<float>;

struct Rng {
  uint32_t seed = wkv::test::fresh_seed();
  std::mt19937 gen{seed};
  Vec normal(size_t n, float sd = 1.0f, float mean = 0.0f) { return wkv::test::random_normal(gen, n, sd, mean); }
  Vec uniform(size_t n, float lo, float hi) { return wkv::test::uniform(gen, n, lo, hi); }
};

#define SEED_TRACE(r) SCOPED_TRACE("seed " + std::to_string((r).seed))

void expect_finite(const Vec& v, const std::string& what) {
  for (size_t i = 0; i < v.size(); ++i)
    ASSERT_TRUE(std::isfinite(v[i])) << what << ": element " << i << " not written or not finite";
}

void expect_close(const Vec& gpu, const Vec& cpu, double budget, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  expect_finite(gpu, what);
  const double r = wkv::test::rel_l2(gpu.data(), cpu.data(), cpu.size());
  EXPECT_LE(r, budget) << what << ": rel L2 " << r << ", max abs " << wkv::test::max_abs_diff(gpu.data(), cpu.data(), cpu.size());
}

double rms(const Vec& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

// ≥ 99.9 % of the elements within tol (absolute), all within step + tol.
void expect_mostly_equal(const Vec& gpu, const Vec& cpu, double tol, double step, const std::string& what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  expect_finite(gpu, what);
  size_t ok = 0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double d = std::fabs(double(gpu[i]) - cpu[i]);
    if (d <= tol) ++ok;
    EXPECT_LE(d, step + tol) << what << ": element " << i << " gpu " << gpu[i] << " cpu " << cpu[i];
  }
  EXPECT_GE(double(ok), 0.999 * double(cpu.size())) << what << ": " << cpu.size() - ok << " elements off";
}

class CalibOpsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    WKV_REQUIRE_GPU();
  }
};

TEST_F(CalibOpsGpu, Linear) {
  Rng r;
  SEED_TRACE(r);
  kc::Blas blas;
  for (auto [T, in, out] : {std::array<int, 3>{1, 24, 40}, {7, 72, 17}, {33, 128, 96}}) {
    SCOPED_TRACE("T " + std::to_string(T) + " in " + std::to_string(in) + " out " + std::to_string(out));
    const Vec x = r.normal(size_t(T) * in), W = r.normal(size_t(out) * in, 0.2f), dy = r.normal(size_t(T) * out);
    Vec y(size_t(T) * out), dx = r.normal(size_t(T) * in), dW = r.normal(size_t(out) * in);
    DeviceBuffer<float> dx_d(x), dW_d(W), ddy(dy), dy_d(y.size()), ddx(dx), ddW(dW);
    dy_d.poison();
    kc::linear_fwd(blas, dx_d.get(), T, in, dW_d.get(), out, dy_d.get());
    kc::linear_bwd(blas, dx_d.get(), T, in, dW_d.get(), out, ddy.get(), ddx.get(), ddW.get());
    cc::linear_fwd(x.data(), T, in, W.data(), out, y.data());
    cc::linear_bwd(x.data(), T, in, W.data(), out, dy.data(), dx.data(), dW.data());
    expect_close(dy_d.download(), y, 1e-5, "y");
    expect_close(ddx.download(), dx, 1e-5, "dx");
    expect_close(ddW.download(), dW, 1e-5, "dW");
  }
}

TEST_F(CalibOpsGpu, RmsNorm) {
  Rng r;
  SEED_TRACE(r);
  for (auto [T, n] : {std::array<int, 2>{1, 96}, {5, 257}, {19, 1024}}) {
    const Vec x = r.normal(size_t(T) * n, 2.0f, 0.3f), w = r.uniform(size_t(n), 0.5f, 1.5f), dy = r.normal(x.size());
    Vec y(x.size()), inv(static_cast<size_t>(T)), dx = r.normal(x.size());
    DeviceBuffer<float> xd(x), wd(w), dyd(dy), yd(y.size()), invd(inv.size()), dxd(dx);
    yd.poison();
    invd.poison();
    kc::rmsnorm_fwd(xd.get(), wd.get(), T, n, 1e-5f, yd.get(), invd.get());
    cc::rmsnorm_fwd(x.data(), w.data(), T, n, 1e-5f, y.data(), inv.data());
    kc::rmsnorm_bwd(xd.get(), wd.get(), invd.get(), dyd.get(), T, n, dxd.get());
    cc::rmsnorm_bwd(x.data(), w.data(), inv.data(), dy.data(), T, n, dx.data());
    expect_close(yd.download(), y, 1e-5, "y");
    expect_close(invd.download(), inv, 1e-6, "inv_rms");
    expect_close(dxd.download(), dx, 1e-5, "dx");
  }
}

TEST_F(CalibOpsGpu, Rope) {
  Rng r;
  SEED_TRACE(r);
  for (auto [T, H, D, pos0] : {std::array<int, 4>{37, 3, 64, 0}, {9, 2, 128, 1000}, {1, 1, 2, 5}}) {
    const Vec x0 = r.normal(size_t(T) * H * D);
    Vec x = x0, g = x0;
    DeviceBuffer<float> xd(x0), gd(x0);
    kc::rope_fwd(xd.get(), T, H, D, pos0, 10000.0f);
    kc::rope_bwd(gd.get(), T, H, D, pos0, 10000.0f);
    cc::rope_fwd(x.data(), T, H, D, pos0, 10000.0f);
    cc::rope_bwd(g.data(), T, H, D, pos0, 10000.0f);
    expect_close(xd.download(), x, 1e-5, "rope fwd");
    expect_close(gd.download(), g, 1e-5, "rope bwd");
  }
}

TEST_F(CalibOpsGpu, SwiGlu) {
  Rng r;
  SEED_TRACE(r);
  const int64_t n = 1001;
  const Vec g = r.normal(n, 3.0f), u = r.normal(n), dout = r.normal(n);
  Vec out(n), dg = r.normal(n), du = r.normal(n);
  DeviceBuffer<float> gd(g), ud(u), doutd(dout), outd(static_cast<size_t>(n)), dgd(dg), dud(du);
  outd.poison();
  kc::swiglu_fwd(gd.get(), ud.get(), n, outd.get());
  kc::swiglu_bwd(gd.get(), ud.get(), doutd.get(), n, dgd.get(), dud.get());
  cc::swiglu_fwd(g.data(), u.data(), n, out.data());
  cc::swiglu_bwd(g.data(), u.data(), dout.data(), n, dg.data(), du.data());
  expect_close(outd.download(), out, 1e-5, "out");
  expect_close(dgd.download(), dg, 1e-5, "dg");
  expect_close(dud.download(), du, 1e-5, "du");
}

TEST_F(CalibOpsGpu, PoqAttention) {
  Rng r;
  SEED_TRACE(r);
  kc::Blas blas;
  const std::array<int, 4> shapes[] = {{1, 1, 1, 64}, {37, 4, 2, 64}, {50, 3, 1, 128}, {19, 2, 2, 128}};
  for (const auto& sh : shapes)
    for (bool poq : {true, false}) {
      const int T = sh[0], H = sh[1], Hkv = sh[2], D = sh[3];
      SCOPED_TRACE("T " + std::to_string(T) + " H " + std::to_string(H) + " Hkv " + std::to_string(Hkv) + " D " +
                   std::to_string(D) + (poq ? " POQ" : " plain"));
      const size_t nq = size_t(T) * H * D, nkv = size_t(T) * Hkv * D, np = size_t(H) * T * T;
      const Vec q = r.normal(nq), k = r.normal(nkv), v = r.normal(nkv), dout = r.normal(nq);
      // The quantized past: k, v perturbed as a 4-bit quantizer would (≈ range/15 noise).
      Vec kq = k, vq = v;
      const Vec nk = r.uniform(nkv, -0.2f, 0.2f), nv = r.uniform(nkv, -0.2f, 0.2f);
      for (size_t i = 0; i < nkv; ++i) {
        kq[i] += nk[i];
        vq[i] += nv[i];
      }
      const cc::AttnShape cs{T, H, Hkv, D};
      const kc::AttnShape ks{T, H, Hkv, D};
      Vec probs(np), out(nq);
      cc::poq_attention_fwd(cs, q.data(), k.data(), v.data(), poq ? kq.data() : nullptr, poq ? vq.data() : nullptr,
                            probs.data(), out.data());
      DeviceBuffer<float> qd(q), kd(k), vd(v), kqd(kq), vqd(vq), doutd(dout), probsd(np), outd(nq),
          fs(kc::poq_attention_fwd_scratch_floats(ks)), bs(kc::poq_attention_bwd_scratch_floats(ks));
      probsd.poison();
      outd.poison();
      kc::poq_attention_fwd(blas, ks, qd.get(), kd.get(), vd.get(), poq ? kqd.get() : nullptr,
                            poq ? vqd.get() : nullptr, probsd.get(), outd.get(), fs.get());
      expect_close(probsd.download(), probs, 1e-5, "probs");
      expect_close(outd.download(), out, 1e-5, "out");

      // Backward from the CPU's probabilities, gradients accumulated onto random starting values.
      Vec dq = r.normal(nq, 0.1f), dk = r.normal(nkv, 0.1f), dv = r.normal(nkv, 0.1f), dkq = r.normal(nkv, 0.1f),
          dvq = r.normal(nkv, 0.1f);
      DeviceBuffer<float> pin(probs), dqd(dq), dkd(dk), dvd(dv), dkqd(dkq), dvqd(dvq);
      kc::poq_attention_bwd(blas, ks, qd.get(), kd.get(), vd.get(), poq ? kqd.get() : nullptr,
                            poq ? vqd.get() : nullptr, pin.get(), doutd.get(), dqd.get(), dkd.get(), dvd.get(),
                            poq ? dkqd.get() : nullptr, poq ? dvqd.get() : nullptr, bs.get());
      cc::poq_attention_bwd(cs, q.data(), k.data(), v.data(), poq ? kq.data() : nullptr, poq ? vq.data() : nullptr,
                            probs.data(), dout.data(), dq.data(), dk.data(), dv.data(), poq ? dkq.data() : nullptr,
                            poq ? dvq.data() : nullptr);
      expect_close(dqd.download(), dq, 1e-5, "dq");
      expect_close(dkd.download(), dk, 1e-5, "dk");
      expect_close(dvd.download(), dv, 1e-5, "dv");
      expect_close(dkqd.download(), dkq, 1e-5, "dkq");
      expect_close(dvqd.download(), dvq, 1e-5, "dvq");
    }
}

TEST_F(CalibOpsGpu, LwcFakeQuant) {
  Rng r;
  SEED_TRACE(r);
  for (auto [rows, cols, group] : {std::array<int, 3>{61, 128, 32}, {13, 96, 8}, {7, 256, 128}}) {
    for (bool lwc : {true, false}) {
      SCOPED_TRACE("rows " + std::to_string(rows) + " cols " + std::to_string(cols) + " group " +
                   std::to_string(group) + (lwc ? " LWC" : " RTN"));
      Vec W = r.normal(size_t(rows) * cols, 0.05f);
      for (int c = 0; c < cols; ++c) W[size_t(2) * cols + c] = 0.01f;  // a constant row: h clamps at 1e-5
      const size_t ng = size_t(rows) * (cols / group);
      const Vec a = r.uniform(ng, -1.0f, 5.0f), b = r.uniform(ng, -1.0f, 5.0f), g = r.normal(W.size());
      Vec Wq(W.size()), da = r.normal(ng, 1e-4f), db = r.normal(ng, 1e-4f);  // below the gradients' scale
      DeviceBuffer<float> Wd(W), ad(a), bd(b), gd(g), Wqd(W.size()), dad(da), dbd(db);
      Wqd.poison();
      kc::lwc_fake_quant_fwd(Wd.get(), rows, cols, group, lwc ? ad.get() : nullptr, lwc ? bd.get() : nullptr,
                             Wqd.get());
      cc::lwc_fake_quant_fwd(W.data(), rows, cols, group, lwc ? a.data() : nullptr, lwc ? b.data() : nullptr,
                             Wq.data());
      // One quantization step is at most (max − min)/15 of a group; bound it by the matrix's range.
      const float wmax = *std::max_element(W.begin(), W.end()), wmin = *std::min_element(W.begin(), W.end());
      expect_mostly_equal(Wqd.download(), Wq, 1e-5 * rms(W), (wmax - wmin) / 15.0, "Wq");
      if (!lwc) continue;
      kc::lwc_fake_quant_bwd(Wd.get(), rows, cols, group, ad.get(), bd.get(), gd.get(), dad.get(), dbd.get());
      cc::lwc_fake_quant_bwd(W.data(), rows, cols, group, a.data(), b.data(), g.data(), da.data(), db.data());
      // Per-group sums in double of the same float terms: ≥ 99 % of the groups to 1e-4 of the gradient's
      // scale (a rounding flip moves one group's sum by one element's term), all of it to 1e-3.
      for (auto [gpu_v, cpu_v, name] : {std::tuple{dad.download(), da, "da"}, std::tuple{dbd.download(), db, "db"}}) {
        expect_finite(gpu_v, name);
        const double tol = 1e-4 * rms(cpu_v);
        size_t ok = 0;
        for (size_t i = 0; i < ng; ++i) ok += std::fabs(double(gpu_v[i]) - cpu_v[i]) <= tol + 1e-4 * std::fabs(cpu_v[i]);
        EXPECT_GE(double(ok), 0.99 * double(ng)) << name;
        EXPECT_LE(wkv::test::rel_l2(gpu_v.data(), cpu_v.data(), ng), 1e-3) << name;
      }
    }
  }
}

TEST_F(CalibOpsGpu, KvFakeQuant) {
  Rng r;
  SEED_TRACE(r);
  for (auto [T, C, G] : {std::array<int, 3>{29, 128, 64}, {17, 128, 128}, {33, 256, 32}, {1, 64, 64}}) {
    for (bool smooth : {true, false}) {
      SCOPED_TRACE("T " + std::to_string(T) + " C " + std::to_string(C) + " G " + std::to_string(G) +
                   (smooth ? " smoothed" : " identity"));
      Vec x = r.normal(size_t(T) * C, 1.5f, 0.2f);
      if (T > 3)
        for (int c = 0; c < G; ++c) x[size_t(3) * C + c] = 0.75f;  // a constant group (scale 0)
      const Vec delta = r.uniform(size_t(C), -0.3f, 0.3f), s = r.uniform(size_t(C), 0.5f, 2.0f);
      const Vec g = r.normal(x.size());
      if (smooth && T > 3)  // constant after smoothing too
        for (int c = 0; c < G; ++c) x[size_t(3) * C + c] = 0.75f * s[c] + delta[c];
      const float* dp = smooth ? delta.data() : nullptr;
      const float* sp = smooth ? s.data() : nullptr;
      Vec xq(x.size()), dx = r.normal(x.size()), dd = r.normal(size_t(C)), ds = r.normal(size_t(C));
      DeviceBuffer<float> xd(x), deltad(delta), sd(s), gd(g), xqd(x.size()), dxd(dx), ddd(dd), dsd(ds),
          scratch(kc::kv_fake_quant_bwd_scratch_floats(T, C));
      xqd.poison();
      const float* dpd = smooth ? deltad.get() : nullptr;
      const float* spd = smooth ? sd.get() : nullptr;
      kc::kv_fake_quant_fwd(xd.get(), T, C, G, dpd, spd, xqd.get());
      cc::kv_fake_quant_fwd(x.data(), T, C, G, dp, sp, xq.data());
      // One step: (range of x̃)/15 · s, bounded with the whole tensor's range.
      const float xmax = *std::max_element(x.begin(), x.end()), xmin = *std::min_element(x.begin(), x.end());
      // x̃ = (x − δ)/s spans at most (xmax − xmin + 0.6)/0.5, and x̂ scales the step back by s ≤ 2.
      const double step = smooth ? (xmax - xmin + 0.6) / 0.5 / 15.0 * 2.0 : (xmax - xmin) / 15.0;
      expect_mostly_equal(xqd.download(), xq, 1e-5 * rms(x), step, "xq");
      kc::kv_fake_quant_bwd(xd.get(), T, C, G, dpd, spd, gd.get(), dxd.get(), smooth ? ddd.get() : nullptr,
                            smooth ? dsd.get() : nullptr, scratch.get());
      cc::kv_fake_quant_bwd(x.data(), T, C, G, dp, sp, g.data(), dx.data(), smooth ? dd.data() : nullptr,
                            smooth ? ds.data() : nullptr);
      // dx differs from dxq only at each group's argmin / argmax (R/15), which a rounding flip moves by
      // one element's |g|/15: compare with the tie rule; the per-channel sums over tokens as a whole.
      double gmax = 0;
      for (float v : g) gmax = std::max(gmax, double(std::fabs(v)));
      expect_mostly_equal(dxd.download(), dx, 1e-5 * rms(dx), 4.0 * gmax * (smooth ? 4.0 : 1.0), "dx");
      if (smooth) {
        expect_close(ddd.download(), dd, 1e-4, "ddelta");
        expect_close(dsd.download(), ds, 1e-4, "ds");
      }
    }
  }
}

TEST_F(CalibOpsGpu, LossAndGradient) {
  Rng r;
  SEED_TRACE(r);
  const int64_t n = 10007;
  const Vec pred = r.normal(size_t(n)), target = r.normal(size_t(n));
  for (bool mae : {true, false}) {
    DeviceBuffer<float> pd(pred), td(target), gd(static_cast<size_t>(n));
    DeviceBuffer<double> partials(kc::kLossBlocks), loss(1);
    gd.poison();
    kc::loss_and_grad(pd.get(), td.get(), n, mae, gd.get(), partials.get(), loss.get());
    // calibrate.cpp's formulas, restated.
    double ref = 0;
    Vec grad(static_cast<size_t>(n));
    const double inv = 1.0 / double(n);
    for (int64_t i = 0; i < n; ++i) {
      const double e = double(pred[i]) - target[i];
      ref += mae ? std::fabs(e) : e * e;
      grad[i] = mae ? float((e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0) * inv) : float(2.0 * e * inv);
    }
    EXPECT_NEAR(loss.download()[0], ref, 1e-10 * ref) << (mae ? "MAE" : "MSE");
    const Vec g = gd.download();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(g[i], grad[i]) << i;  // the same double arithmetic
  }
}

TEST_F(CalibOpsGpu, AdamWStepAndClamp) {
  Rng r;
  SEED_TRACE(r);
  const int64_t n = 5003;
  Vec p = r.normal(size_t(n)), g = r.normal(size_t(n), 0.01f), m = r.normal(size_t(n), 0.001f);
  Vec v = r.uniform(size_t(n), 0.0f, 1e-4f);
  DeviceBuffer<float> pd(p), gd(g), md(m), vd(v);
  const int t = 3;
  const double lr = 1e-2, wd = 0.1;
  const double c1 = 1.0 - std::pow(0.9, t), c2 = 1.0 - std::pow(0.999, t);
  kc::adamw_step(pd.get(), gd.get(), md.get(), vd.get(), n, lr, wd, c1, c2);
  // calibrate.cpp's Adam, restated.
  for (int64_t i = 0; i < n; ++i) {
    const double gi = g[i];
    m[i] = float(0.9 * m[i] + (1 - 0.9) * gi);
    v[i] = float(0.999 * v[i] + (1 - 0.999) * gi * gi);
    double x = double(p[i]) * (1.0 - lr * wd);
    x -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + 1e-8);
    p[i] = float(x);
  }
  expect_close(pd.download(), p, 1e-6, "p");
  expect_close(md.download(), m, 1e-6, "m");
  expect_close(vd.download(), v, 1e-6, "v");
  const Vec before = pd.download();
  kc::clamp_min(pd.get(), n, 0.5f);
  const Vec after = pd.download();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(after[i], std::max(before[i], 0.5f)) << i;
}

}  // namespace
