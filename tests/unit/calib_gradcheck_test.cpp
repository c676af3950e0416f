// Gradient checks of the WKVQuant calibration backward passes against central finite differences.
//
// Smooth ops (linear, RMSNorm, RoPE, SwiGLU, POQ attention, the full-precision block): the FP32 forward
// of calib_ops is differentiated numerically (step 1e-2 (ops) / 3e-3 (block), loss L = Σ r ⊙ out with a
// fixed random r, summed in double); tolerance: max |fd − analytic| ≤ 2e-3 · max(1, max |analytic|).
//
// Fake quantization (LWC, KV 2D, the quantized block): the backward is the straight-through estimator,
// i.e. the exact derivative of the STE SURROGATE at θ0 (calib_ops.h): each round(u) becomes
// u + (round(u0) − u0), each clamp its branch at θ0, each max/min the element attaining it at θ0. The test
// builds that surrogate independently in double (the discrete decisions are recorded at θ0, then replayed),
// checks that it equals the op's forward at θ0 (rel. 1e-5), and differentiates it numerically (step 1e-5,
// double): tolerance max |fd − analytic| ≤ 1e-3 · max(1, max |analytic|). Inputs are fixed random data,
// so no value sits on a rounding tie.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "calib_block.h"
#include "calib_ops.h"
#include "quant_formats.h"

namespace wkv::calib {
namespace {

std::vector<float> randv(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

double proj(const std::vector<float>& out, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += double(out[i]) * r[i];
  return s;
}

// Central differences of f w.r.t. every element of p (float parameters).
std::vector<double> fd_float(std::vector<float>& p, const std::function<double()>& f, float eps) {
  std::vector<double> g(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const float x0 = p[i];
    p[i] = x0 + eps;
    const double fp = f();
    p[i] = x0 - eps;
    const double fm = f();
    p[i] = x0;
    g[i] = (fp - fm) / (double(x0 + eps) - double(x0 - eps));
  }
  return g;
}

std::vector<double> fd_double(std::vector<double>& p, const std::function<double()>& f, double eps = 1e-5) {
  std::vector<double> g(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double x0 = p[i];
    p[i] = x0 + eps;
    const double fp = f();
    p[i] = x0 - eps;
    const double fm = f();
    p[i] = x0;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

void expect_grad(const std::vector<float>& analytic, const std::vector<double>& fd, double tol, const char* what) {
  ASSERT_EQ(analytic.size(), fd.size()) << what;
  double scale = 1.0, worst = 0;
  for (float a : analytic) scale = std::max(scale, double(std::fabs(a)));
  size_t wi = 0;
  for (size_t i = 0; i < fd.size(); ++i)
    if (std::fabs(fd[i] - analytic[i]) > worst) {
      worst = std::fabs(fd[i] - analytic[i]);
      wi = i;
    }
  EXPECT_LE(worst, tol * scale) << what << ": element " << wi << " analytic " << analytic[wi] << " fd " << fd[wi];
  double norm = 0;
  for (float a : analytic) norm += double(a) * a;
  EXPECT_GT(norm, 0.0) << what << ": gradient is identically zero (nothing tested)";
}

std::vector<double> to_d(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

constexpr double kSmoothTol = 2e-3;
constexpr double kSteTol = 1e-3;

TEST(CalibGradcheck, Linear) {
  std::mt19937 rng(1);
  const int T = 3, in = 5, out = 4;
  auto x = randv(rng, T * in), W = randv(rng, out * in), r = randv(rng, T * out);
  std::vector<float> y(T * out);
  auto f = [&] {
    linear_fwd(x.data(), T, in, W.data(), out, y.data());
    return proj(y, r);
  };
  std::vector<float> dx(T * in, 0.0f), dW(out * in, 0.0f);
  linear_bwd(x.data(), T, in, W.data(), out, r.data(), dx.data(), dW.data());
  expect_grad(dx, fd_float(x, f, 1e-2f), kSmoothTol, "dx");
  expect_grad(dW, fd_float(W, f, 1e-2f), kSmoothTol, "dW");
}

TEST(CalibGradcheck, RmsNorm) {
  std::mt19937 rng(2);
  const int T = 3, n = 6;
  auto x = randv(rng, T * n), w = randv(rng, n, 0.5f, 1.5f), r = randv(rng, T * n);
  std::vector<float> y(T * n), inv(T);
  auto f = [&] {
    rmsnorm_fwd(x.data(), w.data(), T, n, 1e-5f, y.data(), inv.data());
    return proj(y, r);
  };
  f();
  std::vector<float> dx(T * n, 0.0f);
  rmsnorm_bwd(x.data(), w.data(), inv.data(), r.data(), T, n, dx.data());
  expect_grad(dx, fd_float(x, f, 1e-2f), kSmoothTol, "dx");
}

TEST(CalibGradcheck, Rope) {
  std::mt19937 rng(3);
  const int T = 4, H = 2, D = 6;
  auto x = randv(rng, T * H * D), r = randv(rng, T * H * D);
  auto f = [&] {
    std::vector<float> y = x;
    rope_fwd(y.data(), T, H, D, 3, 10000.0f);
    return proj(y, r);
  };
  std::vector<float> dx = r;
  rope_bwd(dx.data(), T, H, D, 3, 10000.0f);
  expect_grad(dx, fd_float(x, f, 1e-2f), kSmoothTol, "dx");
}

TEST(CalibGradcheck, SwiGlu) {
  std::mt19937 rng(4);
  const int n = 12;
  auto g = randv(rng, n, -3, 3), u = randv(rng, n), r = randv(rng, n);
  std::vector<float> y(n);
  auto f = [&] {
    swiglu_fwd(g.data(), u.data(), n, y.data());
    return proj(y, r);
  };
  std::vector<float> dg(n, 0.0f), du(n, 0.0f);
  swiglu_bwd(g.data(), u.data(), r.data(), n, dg.data(), du.data());
  expect_grad(dg, fd_float(g, f, 1e-2f), kSmoothTol, "dg");
  expect_grad(du, fd_float(u, f, 1e-2f), kSmoothTol, "du");
}

// POQ attention with GQA (4 query heads on 2 KV heads): value against a direct double evaluation of
// DESIGN's formula, and gradients w.r.t. q and both forms of k, v.
TEST(CalibGradcheck, PoqAttention) {
  std::mt19937 rng(5);
  const AttnShape s{5, 4, 2, 4};
  const int qd = s.H * s.D, kvd = s.Hkv * s.D;
  auto q = randv(rng, s.T * qd, -2, 2), k = randv(rng, s.T * kvd, -2, 2), v = randv(rng, s.T * kvd);
  auto kq = randv(rng, s.T * kvd, -2, 2), vq = randv(rng, s.T * kvd), r = randv(rng, s.T * qd);
  std::vector<float> probs(size_t(s.H) * s.T * s.T), out(s.T * qd);
  auto f = [&] {
    poq_attention_fwd(s, q.data(), k.data(), v.data(), kq.data(), vq.data(), probs.data(), out.data());
    return proj(out, r);
  };
  f();
  // Direct evaluation: token t reads its own k_t, v_t and the quantized kq_j, vq_j of j < t.
  for (int t = 0; t < s.T; ++t)
    for (int h = 0; h < s.H; ++h) {
      const int kvh = h / 2;
      std::vector<double> sc(t + 1);
      double mx = -1e300, z = 0;
      for (int j = 0; j <= t; ++j) {
        const float* key = (j == t ? k : kq).data() + j * kvd + kvh * s.D;
        double d = 0;
        for (int c = 0; c < s.D; ++c) d += double(q[(t * s.H + h) * s.D + c]) * key[c];
        sc[j] = d / std::sqrt(double(s.D));
        mx = std::max(mx, sc[j]);
      }
      for (auto& e : sc) z += (e = std::exp(e - mx));
      for (int c = 0; c < s.D; ++c) {
        double o = 0;
        for (int j = 0; j <= t; ++j) o += sc[j] / z * (j == t ? v : vq)[j * kvd + kvh * s.D + c];
        EXPECT_NEAR(out[(t * s.H + h) * s.D + c], o, 1e-5) << "t " << t << " h " << h << " c " << c;
      }
    }
  std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f), dkq(k.size(), 0.0f),
      dvq(v.size(), 0.0f);
  poq_attention_bwd(s, q.data(), k.data(), v.data(), kq.data(), vq.data(), probs.data(), r.data(), dq.data(),
                    dk.data(), dv.data(), dkq.data(), dvq.data());
  expect_grad(dq, fd_float(q, f, 1e-2f), kSmoothTol, "dq");
  expect_grad(dk, fd_float(k, f, 1e-2f), kSmoothTol, "dk (own token)");
  expect_grad(dv, fd_float(v, f, 1e-2f), kSmoothTol, "dv (own token)");
  expect_grad(dkq, fd_float(kq, f, 1e-2f), kSmoothTol, "dkq (quantized past)");
  expect_grad(dvq, fd_float(vq, f, 1e-2f), kSmoothTol, "dvq (quantized past)");
  // The last token's quantized key/value is never read (no later query).
  for (int c = 0; c < kvd; ++c) EXPECT_EQ(dkq[(s.T - 1) * kvd + c], 0.0f);

  // Without quantized inputs: plain causal attention, gradients w.r.t. k, v only.
  auto f_plain = [&] {
    poq_attention_fwd(s, q.data(), k.data(), v.data(), nullptr, nullptr, probs.data(), out.data());
    return proj(out, r);
  };
  f_plain();
  std::fill(dk.begin(), dk.end(), 0.0f);
  std::fill(dv.begin(), dv.end(), 0.0f);
  poq_attention_bwd(s, q.data(), k.data(), v.data(), nullptr, nullptr, probs.data(), r.data(), nullptr, dk.data(),
                    dv.data(), nullptr, nullptr);
  expect_grad(dk, fd_float(k, f_plain, 1e-2f), kSmoothTol, "dk (causal)");
  expect_grad(dv, fd_float(v, f_plain, 1e-2f), kSmoothTol, "dv (causal)");
}

// ---- STE surrogates in double ------------------------------------------------------------------------

// Records discrete decisions at θ0 and replays them afterwards.
struct Freeze {
  bool record = true;
  std::vector<double> vals;
  size_t pos = 0;
  double operator()(double x) {  // record x, or replay the recorded one
    if (record) {
      vals.push_back(x);
      return x;
    }
    return vals.at(pos++);
  }
  void replay() {
    record = false;
    pos = 0;
  }
};

double sigmoid(double a) { return 1.0 / (1.0 + std::exp(-a)); }

// LWC fake quantization surrogate: W fixed (float), a, b variables.
std::vector<double> lwc_surrogate(const std::vector<float>& W, int rows, int cols, int group,
                                  const std::vector<double>& a, const std::vector<double>& b, Freeze& fz,
                                  int* clipped = nullptr) {
  std::vector<double> out(W.size());
  const int gpr = cols / group;
  for (int r = 0; r < rows; ++r)
    for (int gi = 0; gi < gpr; ++gi) {
      const size_t off = size_t(r) * cols + size_t(gi) * group, pi = size_t(r) * gpr + gi;
      int imax = 0, imin = 0;
      for (int i = 1; i < group; ++i) {
        if (W[off + i] > W[off + imax]) imax = i;
        if (W[off + i] < W[off + imin]) imin = i;
      }
      imax = int(fz(imax));
      imin = int(fz(imin));
      const double hi = sigmoid(a[pi]) * W[off + imax], lo = sigmoid(b[pi]) * W[off + imin];
      const double h = (hi - lo) / 15.0;
      const double z_raw = -lo / h;
      const double z = z_raw + fz(std::nearbyint(z_raw) - z_raw);
      for (int i = 0; i < group; ++i) {
        const double u = W[off + i] / h;
        const double v = u + fz(std::nearbyint(u) - u) + z;
        const double branch = fz(v < -0.5 ? 0.0 : v > 15.5 ? 15.0 : -1.0);  // −1: inside the clamp
        if (branch >= 0 && clipped) ++*clipped;
        const double qv = branch >= 0 ? branch : v;
        out[off + i] = (qv - z) * h;
      }
    }
  return out;
}

TEST(CalibGradcheck, LwcFakeQuantSte) {
  std::mt19937 rng(6);
  const int rows = 3, cols = 32, group = 16, ng = rows * cols / group;
  auto W = randv(rng, rows * cols);
  W[5] = 3.0f;                                        // an outlier: γ < 1 clips it
  for (int i = 0; i < group; ++i) W[2 * cols + i] = std::fabs(W[2 * cols + i]) + 0.1f;  // all-positive group
  auto af = randv(rng, ng, -1.0f, 3.0f), bf = randv(rng, ng, -1.0f, 3.0f), r = randv(rng, rows * cols);
  std::vector<float> wq(W.size());
  lwc_fake_quant_fwd(W.data(), rows, cols, group, af.data(), bf.data(), wq.data());
  Freeze fz;
  std::vector<double> a = to_d(af), b = to_d(bf);
  int clipped = 0;
  const std::vector<double> s0 = lwc_surrogate(W, rows, cols, group, a, b, fz, &clipped);
  EXPECT_GT(clipped, 0) << "the clamp branch is not exercised";
  for (size_t i = 0; i < W.size(); ++i) EXPECT_NEAR(wq[i], s0[i], 1e-5 * (1 + std::fabs(s0[i]))) << i;
  fz.replay();
  auto f = [&] {
    fz.pos = 0;
    const auto o = lwc_surrogate(W, rows, cols, group, a, b, fz);
    double s = 0;
    for (size_t i = 0; i < o.size(); ++i) s += o[i] * r[i];
    return s;
  };
  std::vector<float> da(ng, 0.0f), db(ng, 0.0f);
  lwc_fake_quant_bwd(W.data(), rows, cols, group, af.data(), bf.data(), r.data(), da.data(), db.data());
  expect_grad(da, fd_double(a, f), kSteTol, "dL/da");
  expect_grad(db, fd_double(b, f), kSteTol, "dL/db");
  // The training forward agrees with the storage quantizer up to the FP16 rounding of h.
  std::vector<float> ref = W;
  fake_quant_w4(ref.data(), rows, cols, group, af.data(), bf.data());
  for (size_t i = 0; i < W.size(); ++i) EXPECT_NEAR(wq[i], ref[i], 2e-3) << i;
}

// KV 2D fake quantization surrogate: x, δ, s variables.
std::vector<double> kv_surrogate(const std::vector<double>& x, int T, int C, int G, const std::vector<double>& dl,
                                 const std::vector<double>& s, Freeze& fz) {
  std::vector<double> out(x.size());
  std::vector<double> xs(G);
  for (int t = 0; t < T; ++t)
    for (int c0 = 0; c0 < C; c0 += G) {
      const size_t off = size_t(t) * C + c0;
      int imin = 0, imax = 0;
      for (int i = 0; i < G; ++i) {
        xs[i] = (x[off + i] - dl[c0 + i]) / s[c0 + i];
        if (xs[i] < xs[imin]) imin = i;
        if (xs[i] > xs[imax]) imax = i;
      }
      imin = int(fz(imin));
      imax = int(fz(imax));
      const double mn = xs[imin], scale = (xs[imax] - mn) / 15.0;
      for (int i = 0; i < G; ++i) {
        const double u = (xs[i] - mn) / scale;
        const double y = (u + fz(std::nearbyint(u) - u)) * scale + mn;
        out[off + i] = y * s[c0 + i] + dl[c0 + i];
      }
    }
  return out;
}

void kv_check(int G) {
  std::mt19937 rng(7 + G);
  const int T = 3, C = 16, D = 8;
  auto xf = randv(rng, T * C, -2, 2), df = randv(rng, C, -0.5f, 0.5f), sf = randv(rng, C, 0.5f, 2.0f);
  auto r = randv(rng, T * C);
  std::vector<float> xq(xf.size());
  kv_fake_quant_fwd(xf.data(), T, C, G, df.data(), sf.data(), xq.data());
  std::vector<double> x = to_d(xf), dl = to_d(df), s = to_d(sf);
  Freeze fz;
  const auto s0 = kv_surrogate(x, T, C, G, dl, s, fz);
  for (size_t i = 0; i < xq.size(); ++i) EXPECT_NEAR(xq[i], s0[i], 1e-5 * (1 + std::fabs(s0[i]))) << i;
  // The training forward equals the storage quantizer up to the FP16 rounding of scale and min.
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < C / D; ++h) {
      std::vector<float> ref(xf.begin() + t * C + h * D, xf.begin() + t * C + h * D + D);
      fake_quant_kv4(ref.data(), D, G, df.data() + h * D, sf.data() + h * D);
      for (int c = 0; c < D; ++c) EXPECT_NEAR(xq[t * C + h * D + c], ref[c], 5e-3);
    }
  fz.replay();
  auto f = [&] {
    fz.pos = 0;
    const auto o = kv_surrogate(x, T, C, G, dl, s, fz);
    double acc = 0;
    for (size_t i = 0; i < o.size(); ++i) acc += o[i] * r[i];
    return acc;
  };
  std::vector<float> dx(x.size(), 0.0f), dd(C, 0.0f), ds(C, 0.0f);
  kv_fake_quant_bwd(xf.data(), T, C, G, df.data(), sf.data(), r.data(), dx.data(), dd.data(), ds.data());
  expect_grad(dx, fd_double(x, f), kSteTol, "dL/dx");
  expect_grad(dd, fd_double(dl, f), kSteTol, "dL/ddelta");
  expect_grad(ds, fd_double(s, f), kSteTol, "dL/ds");
}

TEST(CalibGradcheck, KvFakeQuantSteGroupIsHead) { kv_check(8); }
TEST(CalibGradcheck, KvFakeQuantSteSmallerGroups) { kv_check(4); }

// Without quantization error the smoothing cancels exactly: a group whose values all sit on the 4-bit
// grid has dL/dδ = dL/ds = 0 and dL/dx = G.
TEST(CalibGradcheck, KvSmoothingGradientVanishesOnGrid) {
  const int C = 4;
  const std::vector<float> delta = {0.5f, -0.25f, 1.0f, 0.0f}, s = {2.0f, 1.0f, 0.5f, 1.0f};
  const float grid[C] = {0.0f, 15.0f, 3.0f, 7.0f};  // smoothed values, scale 1
  std::vector<float> x(C);
  for (int c = 0; c < C; ++c) x[c] = grid[c] * s[c] + delta[c];
  const std::vector<float> g = {0.3f, -0.7f, 1.1f, 0.2f};
  std::vector<float> dx(C, 0.0f), dd(C, 0.0f), ds(C, 0.0f);
  kv_fake_quant_bwd(x.data(), 1, C, C, delta.data(), s.data(), g.data(), dx.data(), dd.data(), ds.data());
  for (int c = 0; c < C; ++c) {
    EXPECT_NEAR(dx[c], g[c], 1e-6);
    EXPECT_NEAR(dd[c], 0.0f, 1e-6);
    EXPECT_NEAR(ds[c], 0.0f, 1e-5);
  }
}

// ---- whole block ---------------------------------------------------------------------------------------

BlockShape tiny_shape() {
  BlockShape s;
  s.dim = 16;
  s.n_heads = 2;
  s.n_kv_heads = 2;
  s.head_dim = 8;
  s.ffn = 32;
  s.weight_group = 8;
  s.kv_group = 0;
  return s;
}

LayerWeights tiny_weights(std::mt19937& rng, const BlockShape& s) {
  LayerWeights w;
  const float sc_d = 1.0f / std::sqrt(float(s.dim)), sc_f = 1.0f / std::sqrt(float(s.ffn));
  auto lin = [&](int out, int in, float sc) { return Linear(out, in, randv(rng, size_t(out) * in, -2 * sc, 2 * sc)); };
  w.attn_norm = randv(rng, s.dim, 0.5f, 1.5f);
  w.ffn_norm = randv(rng, s.dim, 0.5f, 1.5f);
  w.wq = lin(s.q_dim(), s.dim, sc_d);
  w.wk = lin(s.kv_dim(), s.dim, sc_d);
  w.wv = lin(s.kv_dim(), s.dim, sc_d);
  w.wo = lin(s.dim, s.q_dim(), sc_d);
  w.w_gate = lin(s.ffn, s.dim, sc_d);
  w.w_up = lin(s.ffn, s.dim, sc_d);
  w.w_down = lin(s.dim, s.ffn, sc_f);
  return w;
}

TEST(CalibGradcheck, FullPrecisionBlock) {
  std::mt19937 rng(8);
  const BlockShape s = tiny_shape();
  const LayerWeights w = tiny_weights(rng, s);
  const int N = 2, L = 5;
  auto x = randv(rng, size_t(N) * L * s.dim), r = randv(rng, x.size());
  std::vector<float> y(x.size());
  auto f = [&] {
    block_forward(s, w, nullptr, x.data(), N, L, y.data(), nullptr);
    return proj(y, r);
  };
  BlockTape tape;
  block_forward(s, w, nullptr, x.data(), N, L, y.data(), &tape);
  std::vector<float> dx(x.size());
  block_backward(s, w, nullptr, tape, r.data(), dx.data(), nullptr);
  expect_grad(dx, fd_float(x, f, 3e-3f), kSmoothTol, "block dx");
}

// Reference block in double on the STE surrogates (calib_block.h's formulas, written out again).
struct RefParams {
  std::array<std::vector<double>, kNumLinears> a, b;
  std::vector<double> kd, ks, vd, vs, x;
};

std::vector<double> ref_block(const BlockShape& s, const LayerWeights& w, const RefParams& p, int N, int L, Freeze& fz) {
  const int d = s.dim, qd = s.q_dim(), kvd = s.kv_dim(), F = s.ffn, D = s.head_dim;
  std::array<std::vector<double>, kNumLinears> W;
  for (int i = 0; i < kNumLinears; ++i) {
    const Linear& lin = block_linear(w, i);
    W[i] = lwc_surrogate(lin.w, lin.out, lin.in, s.weight_group, p.a[i], p.b[i], fz);
  }
  auto linear = [&](const std::vector<double>& x, int in, int i, int out) {
    std::vector<double> y(size_t(L) * out, 0.0);
    for (int t = 0; t < L; ++t)
      for (int o = 0; o < out; ++o)
        for (int c = 0; c < in; ++c) y[t * out + o] += x[t * in + c] * W[i][o * in + c];
    return y;
  };
  auto rms = [&](const std::vector<double>& x, const std::vector<float>& nw) {
    std::vector<double> y(x.size());
    for (int t = 0; t < L; ++t) {
      double ss = 0;
      for (int c = 0; c < d; ++c) ss += x[t * d + c] * x[t * d + c];
      const double inv = 1.0 / std::sqrt(ss / d + s.norm_eps);
      for (int c = 0; c < d; ++c) y[t * d + c] = x[t * d + c] * inv * nw[c];
    }
    return y;
  };
  auto rope = [&](std::vector<double>& x, int nh) {
    for (int t = 0; t < L; ++t)
      for (int i = 0; i < D / 2; ++i) {
        const double ang = t / std::pow(double(s.rope_theta), 2.0 * i / D);
        for (int h = 0; h < nh; ++h) {
          double* v = x.data() + (t * nh + h) * D;
          const double a = v[i], b = v[i + D / 2];
          v[i] = a * std::cos(ang) - b * std::sin(ang);
          v[i + D / 2] = b * std::cos(ang) + a * std::sin(ang);
        }
      }
  };
  std::vector<double> y(size_t(N) * L * d);
  for (int n = 0; n < N; ++n) {
    std::vector<double> x(p.x.begin() + n * L * d, p.x.begin() + (n + 1) * L * d);
    auto h1 = rms(x, w.attn_norm);
    auto q = linear(h1, d, kWq, qd), k = linear(h1, d, kWk, kvd), v = linear(h1, d, kWv, kvd);
    rope(q, s.n_heads);
    rope(k, s.n_kv_heads);
    auto kq = kv_surrogate(k, L, kvd, s.kv_g(), p.kd, p.ks, fz);
    auto vq = kv_surrogate(v, L, kvd, s.kv_g(), p.vd, p.vs, fz);
    std::vector<double> att(size_t(L) * qd, 0.0);
    for (int h = 0; h < s.n_heads; ++h) {
      const int kvh = h / (s.n_heads / s.n_kv_heads);
      for (int t = 0; t < L; ++t) {
        std::vector<double> sc(t + 1);
        double mx = -1e300, z = 0;
        for (int j = 0; j <= t; ++j) {
          double dd = 0;
          for (int c = 0; c < D; ++c) dd += q[(t * s.n_heads + h) * D + c] * (j == t ? k : kq)[j * kvd + kvh * D + c];
          sc[j] = dd / std::sqrt(double(D));
          mx = std::max(mx, sc[j]);
        }
        for (auto& e : sc) z += (e = std::exp(e - mx));
        for (int j = 0; j <= t; ++j)
          for (int c = 0; c < D; ++c)
            att[(t * s.n_heads + h) * D + c] += sc[j] / z * (j == t ? v : vq)[j * kvd + kvh * D + c];
      }
    }
    auto o = linear(att, qd, kWo, d);
    for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
    auto h2 = rms(x, w.ffn_norm);
    auto g = linear(h2, d, kWgate, F), u = linear(h2, d, kWup, F);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    auto dn = linear(g, F, kWdown, d);
    for (size_t i = 0; i < x.size(); ++i) y[n * L * d + i] = x[i] + dn[i];
  }
  return y;
}

TEST(CalibGradcheck, QuantizedBlockSte) {
  std::mt19937 rng(9);
  const BlockShape s = tiny_shape();
  const LayerWeights w = tiny_weights(rng, s);
  const int N = 2, L = 5;
  auto xf = randv(rng, size_t(N) * L * s.dim), r = randv(rng, xf.size());
  BlockQuantParams P = make_block_params(s, true, true);
  for (int i = 0; i < kNumLinears; ++i) {
    P.a[i] = randv(rng, P.a[i].size(), 0.0f, 4.0f);
    P.b[i] = randv(rng, P.b[i].size(), 0.0f, 4.0f);
  }
  P.k_delta = randv(rng, s.kv_dim(), -0.3f, 0.3f);
  P.v_delta = randv(rng, s.kv_dim(), -0.3f, 0.3f);
  P.k_scale = randv(rng, s.kv_dim(), 0.5f, 2.0f);
  P.v_scale = randv(rng, s.kv_dim(), 0.5f, 2.0f);

  std::vector<float> y(xf.size()), dx(xf.size());
  BlockTape tape;
  block_forward(s, w, &P, xf.data(), N, L, y.data(), &tape);
  BlockQuantParams G = zeros_like(P);
  block_backward(s, w, &P, tape, r.data(), dx.data(), &G);

  RefParams rp;
  for (int i = 0; i < kNumLinears; ++i) {
    rp.a[i] = to_d(P.a[i]);
    rp.b[i] = to_d(P.b[i]);
  }
  rp.kd = to_d(P.k_delta);
  rp.ks = to_d(P.k_scale);
  rp.vd = to_d(P.v_delta);
  rp.vs = to_d(P.v_scale);
  rp.x = to_d(xf);
  Freeze fz;
  const auto y0 = ref_block(s, w, rp, N, L, fz);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], y0[i], 1e-4 * (1 + std::fabs(y0[i]))) << "output " << i;
  fz.replay();
  auto f = [&] {
    fz.pos = 0;
    const auto o = ref_block(s, w, rp, N, L, fz);
    double acc = 0;
    for (size_t i = 0; i < o.size(); ++i) acc += o[i] * r[i];
    return acc;
  };
  expect_grad(dx, fd_double(rp.x, f), kSteTol, "block dL/dx");
  expect_grad(G.k_delta, fd_double(rp.kd, f), kSteTol, "block dL/dk_delta");
  expect_grad(G.k_scale, fd_double(rp.ks, f), kSteTol, "block dL/dk_scale");
  expect_grad(G.v_delta, fd_double(rp.vd, f), kSteTol, "block dL/dv_delta");
  expect_grad(G.v_scale, fd_double(rp.vs, f), kSteTol, "block dL/dv_scale");
  for (int i = 0; i < kNumLinears; ++i) {
    expect_grad(G.a[i], fd_double(rp.a[i], f), kSteTol, (std::string("block dL/da ") + linear_name(i)).c_str());
    expect_grad(G.b[i], fd_double(rp.b[i], f), kSteTol, (std::string("block dL/db ") + linear_name(i)).c_str());
  }
}

}  // namespace
}  // namespace wkv::calib
