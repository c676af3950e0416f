// The decode-step fusions of the W4 GEMV (wkv_kernels/w4_gemv.h): residual add + RMSNorm, and SwiGLU, computed
// in the GEMV's x staging. Checked against an FP64 reference on the CPU (dequantize_w4_ref, the norm and
// SiLU in double) and against the separate GPU kernels they replace, on fused shapes and on shapes that take
// the unfused fallback (cols % 32 != 0, cols > 8192 for the norm).
//
// Error budgets per output i (mag_i = Σ_c |w'_c x_c|, k = cols/32 + 64 as for variant A in w4_gemv_test):
//   add + norm: |y − ref| ≤ (k + 32)·2^-24·mag. Beyond A's GEMV rounding, the FP32 sum of squares (all terms
//     positive; every term passes through ≤ 16 sequential adds and a 9-level tree: ≤ 25·2^-24 relative) moves
//     1/sqrt by ≤ 13·2^-24, and x = (v·inv)·w rounds twice. Against the separate kernels (add_rmsnorm_f32, whose
//     sum runs in another order, then w4_gemv): rel L2 ≤ 2e-6. res_out = res + r bit for bit.
//   SwiGLU: bit-identical to swiglu() + w4_gemv() (same operations in the same order); against FP64,
//     |y − ref| ≤ (k + 8)·2^-24·mag (expf ≤ 2 ulp, a division and a product).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "quant_formats.h"
#include "test_support.h"
#include "wkv/error.h"
#include "wkv_kernels/elementwise.h"
#include "wkv_kernels/w4_gemv.h"

namespace {

using wkv::test::DeviceBuffer;

struct Case {
  int rows, cols, group;
};

struct Quantized {
  wkv::W4Matrix m;
  std::vector<float> wd;  // dequantize_w4_ref(m)
  DeviceBuffer<uint32_t> q;
  DeviceBuffer<uint16_t> s, z;
  Quantized(const Case& c, std::mt19937& rng)
      : m(quantize(c, rng)), wd(wkv::dequantize_w4_ref(m)), q(m.qweight), s(m.scales), z(m.zeros) {}
  wkv::kernels::W4DeviceWeights view() const { return {m.rows, m.cols, m.group, q.get(), s.get(), z.get()}; }
  static wkv::W4Matrix quantize(const Case& c, std::mt19937& rng) {
    const auto W = wkv::test::random_normal(rng, (size_t)c.rows * c.cols, 0.02f);
    return wkv::quantize_w4_ref(W.data(), c.rows, c.cols, c.group);
  }
};

// Checks y against the FP64 product W'·x with the per-element bound (k + extra)·2^-24·Σ|w'x|.
void expect_close_to_fp64(const Quantized& w, const std::vector<double>& x, const std::vector<float>& y,
                          double extra) {
  const int rows = w.m.rows, cols = w.m.cols;
  const double k = cols / 32.0 + 64.0 + extra;
  double num = 0, den = 0;
  for (int r = 0; r < rows; ++r) {
    double s = 0, mag = 0;
    for (int c = 0; c < cols; ++c) {
      const double p = (double)w.wd[(size_t)r * cols + c] * x[c];
      s += p;
      mag += std::fabs(p);
    }
    ASSERT_TRUE(std::isfinite(y[r])) << "row " << r << " not written";
    ASSERT_LE(std::fabs(y[r] - s), k * 0x1p-24 * mag + 1e-30) << "row " << r << " y " << y[r] << " ref " << s;
    num += (y[r] - s) * (y[r] - s);
    den += s * s;
  }
  if (rows >= 32) {
    EXPECT_LE(std::sqrt(num / den), 1e-5);
  }
}

std::string describe(const Case& c, uint32_t seed) {
  return "seed " + std::to_string(seed) + " rows " + std::to_string(c.rows) + " cols " + std::to_string(c.cols) +
         " group " + std::to_string(c.group);
}

void check_add_rmsnorm(const Case& c) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE(describe(c, seed));
  std::mt19937 rng(seed);
  const Quantized w(c, rng);
  const auto res = wkv::test::random_normal(rng, c.cols, 1.0f);
  const auto r = wkv::test::random_normal(rng, c.cols, 0.5f);
  auto weight = wkv::test::random_normal(rng, c.cols, 0.1f);
  for (auto& v : weight) v += 1.0f;
  const float eps = 1e-5f;

  std::vector<float> v(c.cols);
  double ss = 0;
  for (int i = 0; i < c.cols; ++i) {
    v[i] = res[i] + r[i];  // one FP32 add, as on the device
    ss += (double)v[i] * v[i];
  }
  const double inv = 1.0 / std::sqrt(ss / c.cols + eps);
  std::vector<double> x(c.cols);
  for (int i = 0; i < c.cols; ++i) x[i] = v[i] * inv * weight[i];

  DeviceBuffer<float> dres(res), dr(r), dw(weight), dout(c.cols), dxin(c.cols), dy(c.rows + 64);
  dout.poison();
  dxin.poison();
  dy.poison();
  wkv::kernels::w4_gemv_add_rmsnorm(w.view(), dres.get(), dr.get(), dw.get(), eps, dout.get(), dxin.get(), dy.get());
  const auto y_all = dy.download();
  for (size_t i = c.rows; i < y_all.size(); ++i) ASSERT_TRUE(std::isnan(y_all[i])) << "write past the end at " << i;
  const std::vector<float> y(y_all.begin(), y_all.begin() + c.rows);
  const auto out = dout.download();
  ASSERT_EQ(0, std::memcmp(out.data(), v.data(), v.size() * sizeof(float))) << "res_out != res + r";
  // The fused kernel never touches the fallback's scratch.
  const auto xin = dxin.download();
  if (wkv::kernels::w4_gemv_fuses_prologue(w.view(), true)) {
    for (int i = 0; i < c.cols; ++i) ASSERT_TRUE(std::isnan(xin[i])) << "fused path wrote the scratch at " << i;
  }
  expect_close_to_fp64(w, x, y, 32.0);

  // The separate kernels it replaces.
  DeviceBuffer<float> dres2(res), dh(c.cols), dy2(c.rows);
  wkv::kernels::add_rmsnorm_f32(dres2.get(), dr.get(), dw.get(), 1, c.cols, eps, dh.get());
  wkv::kernels::w4_gemv(w.view(), dh.get(), 1, dy2.get());
  const auto y2 = dy2.download();
  EXPECT_LE(wkv::test::rel_l2(y.data(), y2.data(), y.size()), 2e-6);
}

void check_swiglu(const Case& c) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE(describe(c, seed));
  std::mt19937 rng(seed);
  const Quantized w(c, rng);
  const auto g = wkv::test::random_normal(rng, c.cols, 2.0f);
  const auto u = wkv::test::random_normal(rng, c.cols, 1.0f);
  std::vector<double> x(c.cols);
  for (int i = 0; i < c.cols; ++i) x[i] = (double)g[i] / (1.0 + std::exp(-(double)g[i])) * u[i];

  DeviceBuffer<float> dg(g), du(u), dy(c.rows + 64);
  dy.poison();
  wkv::kernels::w4_gemv_swiglu(w.view(), dg.get(), du.get(), dy.get());
  const auto y_all = dy.download();
  for (size_t i = c.rows; i < y_all.size(); ++i) ASSERT_TRUE(std::isnan(y_all[i])) << "write past the end at " << i;
  const std::vector<float> y(y_all.begin(), y_all.begin() + c.rows);
  expect_close_to_fp64(w, x, y, 8.0);

  DeviceBuffer<float> dg2(g), dy2(c.rows);
  wkv::kernels::swiglu(dg2.get(), du.get(), c.cols);
  wkv::kernels::w4_gemv(w.view(), dg2.get(), 1, dy2.get());
  const auto y2 = dy2.download();
  EXPECT_EQ(0, std::memcmp(y.data(), y2.data(), y.size() * sizeof(float))) << "not bit-identical to swiglu + w4_gemv";
}

TEST(W4GemvFused, AddRmsnormPrologue) {
  WKV_REQUIRE_GPU();
  for (const Case& c : {Case{37, 256, 128}, Case{300, 4096, 128}, Case{4097, 4096, 128}, Case{12288, 4096, 128},
                        Case{70, 2016, 96}, Case{33, 8192, 32}})
    check_add_rmsnorm(c);
}

TEST(W4GemvFused, AddRmsnormFallbackShapes) {
  WKV_REQUIRE_GPU();
  for (const Case& c : {Case{5, 200, 40}, Case{9, 9216, 128}}) {  // cols % 32 != 0; cols > 8192
    EXPECT_FALSE(wkv::kernels::w4_gemv_fuses_prologue(
        {c.rows, c.cols, c.group, reinterpret_cast<const uint32_t*>(16), nullptr, nullptr}, true));
    check_add_rmsnorm(c);
  }
}

TEST(W4GemvFused, SwigluPrologue) {
  WKV_REQUIRE_GPU();
  for (const Case& c : {Case{37, 256, 128}, Case{4096, 11008, 128}, Case{70, 2016, 96}, Case{5, 200, 40}})
    check_swiglu(c);
}

TEST(W4GemvFused, RejectsAliasingAndNullPointers) {
  // Validation happens before any CUDA call, so this runs without a GPU too.
  uint32_t q = 0;
  uint16_t s = 0, z = 0;
  float a[4] = {}, b[4] = {}, wt[4] = {}, y[4] = {};
  const wkv::kernels::W4DeviceWeights w{4, 256, 128, &q, &s, &z};
  EXPECT_THROW(wkv::kernels::w4_gemv_add_rmsnorm(w, a, b, wt, 1e-5f, a, y, y), wkv::Error);  // res_out == res
  EXPECT_THROW(wkv::kernels::w4_gemv_add_rmsnorm(w, a, b, wt, 1e-5f, b, y, y), wkv::Error);  // res_out == r
  EXPECT_THROW(wkv::kernels::w4_gemv_add_rmsnorm(w, a, nullptr, wt, 1e-5f, y, y, y), wkv::Error);
  EXPECT_THROW(wkv::kernels::w4_gemv_swiglu(w, a, nullptr, y), wkv::Error);
}

}  // namespace
