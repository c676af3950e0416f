// W4 GEMV against the CPU reference: dequantize_w4_ref + an FP64 matvec, for weights quantized with
// quantize_w4_ref. All four fast-path math variants run on the same inputs (w4_gemv_variant.h).
// Error budgets, per output element i (mag_i = Σ_c |w'_c x_c|, k = cols/32 + 64 bounds the longest FP32
// summation chain of any path):
//   A (fp32) and the generic path: |y − ref| ≤ k·2^-24·mag;  rel L2 of each y[b] ≤ 1e-5.
//   B (half2): |y − ref| ≤ (10·2^-11 + k·2^-24)·mag + 2^-22·Σ_c (|w'_c| + h_c)·X_c
//              (x rounded to FP16 after a power-of-two scale 2^e per 32-channel chunk: 2^-11 relative;
//              ≤ 8 FP16 FMA roundings per partial sum, each ≤ 2^-11 of a partial sum ≤ mag; the last term
//              covers FP16 subnormals — an absolute 2^-25 in scaled units per rounded x (times |q − z|) or
//              per FMA (times 1), scaled back by h·2^-e with 2^-e ≤ X_c/2, X_c = max |x| of c's chunk);
//              rel L2 of each y[b] ≤ 2e-3 (a CPU emulation of B's rounding gives ~5e-4), checked when
//              rows ≥ 32 (a few outputs near zero would make the ratio meaningless).
//   C (tc):    |y − ref| ≤ (2^-10 + (cols/16 + 64)·2^-22)·mag + 2^-36·Xrow_b·Σ_c |w'_c|
//              (x̂ and, for group % 128 != 0, the FP16 weight each rounded once: 2^-11 relative each;
//              tensor-core FP32 accumulation, possibly truncating, ≤ 2^-22·mag per mma / add along the
//              longest chain; x̂ = x·2^e with one scale per batch row, Xrow_b·2^e ∈ [2^14, 2^15), so an
//              FP16 subnormal x̂ is off by ≤ 2^-25·2^-e ≤ 2^-39·Xrow_b, Xrow_b = max |x[b]|, bound ×8);
//              rel L2 of each y[b] ≤ 2e-3 (expected ~2–4e-4), checked when rows ≥ 32.
//   E (lean):  cols % 128 == 0 and group = 128·2^k: D's exact-weight bound; other shapes run A: A's bounds.
//   D (bulk):  group % 128 == 0: |y − ref| ≤ (2^-20 + (cols/16 + 64)·2^-22)·mag + 2^-36·Xrow_b·Σ_c |w'_c|
//              (x as hi + lo FP16 halves: 22 significant bits, ≤ 2^-22 relative, bound ×4; accumulation
//              and subnormals as C); rel L2 ≤ 2e-5. Other groups round the weight to FP16 as C: C's bounds.
#include "wkv_kernels/w4_gemv.h"
#include "wkv_kernels/w4_gemv_packed.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../kernels/src/w4_gemv_variant.h"  // internal: per-variant entry point
#include "gpu_test_util.h"
#include "half.h"
#include "quant_formats.h"
#include "test_support.h"
#include "wkv/error.h"

namespace {

using wkv::kernels::detail::W4GemvVariant;
using wkv::test::DeviceBuffer;

const std::vector<W4GemvVariant> kVariants = {W4GemvVariant::fp32, W4GemvVariant::half2, W4GemvVariant::tc,
                                              W4GemvVariant::bulk, W4GemvVariant::lean};

struct Case {
  int rows, cols, group;
};

struct Uploaded {
  DeviceBuffer<uint32_t> q;
  DeviceBuffer<uint16_t> s, z;
  explicit Uploaded(const wkv::W4Matrix& m) : q(m.qweight), s(m.scales), z(m.zeros) {}
  wkv::kernels::W4DeviceWeights view(const wkv::W4Matrix& m) const {
    return {m.rows, m.cols, m.group, q.get(), s.get(), z.get()};
  }
};

// How the random inputs are drawn.
enum class Data {
  normal,   // W ~ N(0, 0.02²) with an outlier every 7 rows, x ~ N(0, 1)
  extreme,  // also one-sided narrow groups (|z| up to ~1000) and activation outliers up to ~3e4
};

// Quantizes a random W, runs every variant and every B in `batches` (x misaligned by one float when
// `misalign`), checks against the budgets above.
void check_case(const Case& c, const std::vector<int>& batches, bool expect_fast, bool misalign = false,
                Data data = Data::normal) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " rows " + std::to_string(c.rows) + " cols " +
               std::to_string(c.cols) + " group " + std::to_string(c.group));
  std::mt19937 rng(seed);
  auto W = wkv::test::random_normal(rng, (size_t)c.rows * c.cols, 0.02f);
  // A few outlier channels, as in real LLaMA weights, widen some groups' ranges.
  for (int r = 0; r < c.rows; r += 7) W[(size_t)r * c.cols + (r % c.cols)] *= 40.0f;
  int maxB = 0;
  for (int b : batches) maxB = std::max(maxB, b);
  auto x = wkv::test::random_normal(rng, (size_t)maxB * c.cols, 1.0f);
  if (data == Data::extreme) {
    // Odd rows: every group a narrow one-sided range far from 0, so z ≈ −1000 and |q − z| ≈ 1000 (the
    // largest products B's FP16 partial sums must hold).
    std::uniform_real_distribution<float> u01(0.0f, 1.0f);
    for (int r = 1; r < c.rows; r += 2)
      for (int i = 0; i < c.cols; ++i) W[(size_t)r * c.cols + i] = 1.0f + 0.015f * u01(rng);
    for (size_t i = 0; i < x.size(); i += 53) x[i] *= 3.0e4f;    // activation outliers
    for (size_t i = 5; i < x.size(); i += 211) x[i] *= 1.0e-6f;  // and tiny values
  }
  const wkv::W4Matrix m = wkv::quantize_w4_ref(W.data(), c.rows, c.cols, c.group);
  const std::vector<float> Wd = wkv::dequantize_w4_ref(m);

  // FP64 reference, Σ|w'x| and B's subnormal slack Σ (|w'| + h)·X per output (X: chunk max |x|).
  const int groups = c.cols / c.group;
  std::vector<double> xmax(x.size(), 0.0);  // max |x| of the 32-channel chunk of each x (cols % 32 == 0)
  if (c.cols % 32 == 0)
    for (size_t i0 = 0; i0 < x.size(); i0 += 32) {
      double mx = 0;
      for (size_t i = i0; i < i0 + 32; ++i) mx = std::max(mx, (double)std::fabs(x[i]));
      for (size_t i = i0; i < i0 + 32; ++i) xmax[i] = mx;
    }
  std::vector<double> ref((size_t)maxB * c.rows), mag(ref.size()), hx(ref.size());
  std::vector<double> xrow(maxB, 0.0), wabs(c.rows, 0.0);  // C: max |x[b]| and Σ_c |w'_rc|
  for (int b = 0; b < maxB; ++b)
    for (int i = 0; i < c.cols; ++i)
      xrow[b] = std::max(xrow[b], (double)std::fabs(x[(size_t)b * c.cols + i]));
  for (int r = 0; r < c.rows; ++r)
    for (int i = 0; i < c.cols; ++i) wabs[r] += std::fabs((double)Wd[(size_t)r * c.cols + i]);
  for (int b = 0; b < maxB; ++b)
    for (int r = 0; r < c.rows; ++r) {
      double s = 0, a = 0, t = 0;
      const float* wr = Wd.data() + (size_t)r * c.cols;
      const float* xb = x.data() + (size_t)b * c.cols;
      const double* xm = xmax.data() + (size_t)b * c.cols;
      for (int i = 0; i < c.cols; ++i) {
        s += (double)wr[i] * xb[i];
        a += std::fabs((double)wr[i] * xb[i]);
        const double h = wkv::fp16_to_float(m.scales[(size_t)r * groups + i / c.group]);
        t += (std::fabs((double)wr[i]) + h) * xm[i];
      }
      ref[(size_t)b * c.rows + r] = s;
      mag[(size_t)b * c.rows + r] = a;
      hx[(size_t)b * c.rows + r] = t;
    }

  Uploaded dev(m);
  const auto w = dev.view(m);
  const int off = misalign ? 1 : 0;
  std::vector<float> xpad(x.size() + off, 0.0f);
  std::memcpy(xpad.data() + off, x.data(), x.size() * sizeof(float));
  DeviceBuffer<float> dx(xpad);
  const float* xptr = dx.get() + off;
  ASSERT_EQ(wkv::kernels::w4_gemv_fast_path(w, xptr), expect_fast);
  const double k = c.cols / 32.0 + 64.0;
  for (W4GemvVariant v : kVariants) {
    // The generic path ignores the variant: it is FP32 either way.
    const bool half = expect_fast && v == W4GemvVariant::half2;
    const bool bulk = expect_fast && v == W4GemvVariant::bulk;
    const int per = c.group / 128;
    const bool lean = expect_fast && v == W4GemvVariant::lean && c.cols % 128 == 0 && c.group % 128 == 0 &&
                      (per & (per - 1)) == 0;  // E runs this shape (otherwise A does)
    const bool exact_w = (bulk && c.group % 128 == 0) || lean;  // D / E with exact weights: near-FP32
    const bool tc = (expect_fast && v == W4GemvVariant::tc) || (bulk && !exact_w);
    SCOPED_TRACE(std::string("variant ") + wkv::kernels::detail::w4_gemv_variant_name(v));
    for (int B : batches) {
      SCOPED_TRACE("B " + std::to_string(B));
      const size_t guard = 64;  // poisoned elements past the end must stay untouched
      DeviceBuffer<float> dy((size_t)B * c.rows + guard);
      dy.poison(0xFF);
      wkv::kernels::detail::w4_gemv_with_variant(w, xptr, B, dy.get(), v);
      const auto y = dy.download();
      for (size_t i = (size_t)B * c.rows; i < y.size(); ++i) {
        uint32_t bits;
        std::memcpy(&bits, &y[i], 4);
        ASSERT_EQ(bits, 0xFFFFFFFFu) << "write past the end at " << i;
      }
      for (int b = 0; b < B; ++b) {
        double num = 0, den = 0;
        for (int r = 0; r < c.rows; ++r) {
          const size_t i = (size_t)b * c.rows + r;
          ASSERT_TRUE(std::isfinite(y[i])) << "output not written: b " << b << " row " << r;
          const double d = (double)y[i] - ref[i];
          num += d * d;
          den += ref[i] * ref[i];
          const double bound = exact_w ? (0x1p-20 + (c.cols / 16.0 + 64.0) * 0x1p-22) * mag[i] +
                                             0x1p-36 * xrow[b] * wabs[r] + 1e-30
                               : tc ? (0x1p-10 + (c.cols / 16.0 + 64.0) * 0x1p-22) * mag[i] +
                                          0x1p-36 * xrow[b] * wabs[r] + 1e-30
                               : half ? (10.0 * 0x1p-11 + k * 0x1p-24) * mag[i] + 0x1p-22 * hx[i]
                                      : k * 0x1p-24 * mag[i] + 1e-30;
          ASSERT_LE(std::fabs(d), bound) << "b " << b << " row " << r << " y " << y[i] << " ref " << ref[i];
        }
        const double rel = std::sqrt(num / std::max(den, 1e-300));
        // rel L2 over a handful of rows is one dot product's relative error, unbounded when it cancels
        // (Σ w'x ≪ Σ|w'x|), and the extreme-value data (outliers of 3e4 beside 1e-6) is made of such
        // cancellations; the per-element bound above covers those cases.
        if (c.rows < 32 || data == Data::extreme) {
        } else if (exact_w) {
          EXPECT_LE(rel, 2e-5) << "rel L2, b " << b;
        } else if (!half && !tc) {
          EXPECT_LE(rel, 1e-5) << "rel L2, b " << b;
        } else {
          EXPECT_LE(rel, 2e-3) << "rel L2, b " << b;
        }
      }
    }
  }
}

const std::vector<int> kAllBatches = {1, 2, 3, 4, 5, 6, 7, 8};

TEST(W4Gemv, FastPathShapeSweep) {
  WKV_REQUIRE_GPU();
  for (int rows : {1, 3, 37, 4097})
    for (int cols : {256, 4096, 11008})
      for (int group : {128, 32}) check_case({rows, cols, group}, kAllBatches, true);
}

TEST(W4Gemv, FastPathLlama7bShapes) {
  WKV_REQUIRE_GPU();
  check_case({12288, 4096, 128}, {1, 2, 5, 8}, true);  // q | k | v stacked
  check_case({22016, 4096, 128}, {1, 3, 8}, true);     // gate | up stacked
  check_case({4096, 11008, 128}, {1, 4, 8}, true);     // down
  check_case({4096, 4096, 128}, {1, 2, 7}, true);      // o
}

TEST(W4Gemv, FastPathOtherGroupsAndLargeBatch) {
  WKV_REQUIRE_GPU();
  check_case({5, 192, 64}, kAllBatches, true);    // group 64, cols not a multiple of 128
  check_case({11, 1024, 1024}, {1, 8}, true);     // per-channel (group = cols)
  check_case({70, 2016, 96}, {1, 2, 6}, true);    // group / 32 = 3, not a power of two
  check_case({33, 512, 128}, {9, 11, 17}, true);  // B > 8 runs in batches of ≤ 8
  check_case({65, 32768, 128}, {1, 3, 8}, true);  // the widest fast-path row; B split for shared memory
}

TEST(W4Gemv, FastPathExtremeValues) {
  WKV_REQUIRE_GPU();
  check_case({64, 4096, 128}, {1, 2, 8}, true, false, Data::extreme);
  check_case({37, 11008, 128}, {1, 5}, true, false, Data::extreme);
  check_case({48, 2048, 32}, {1, 8}, true, false, Data::extreme);  // C: |q − z|·h formed in FP16
}

// Variant C splits each block's tiles × 256-channel steps evenly over its 16 warps and combines the
// pieces of a tile in shared memory. On a 132-SM H200, 396 tiles give 3 tiles per block, so some warps
// finish one tile and start the next (both reduction roles in one warp); 11008 cols = 43 steps, 2016
// cols = 8 steps with a partial last chunk set (63 chunks). Any device runs them as ordinary cases.
TEST(W4Gemv, FastPathSplitKPieces) {
  WKV_REQUIRE_GPU();
  check_case({6336, 11008, 128}, {1, 8}, true);
  check_case({6336, 2016, 96}, {1, 3}, true);
  check_case({16, 32768, 128}, {1, 2}, true);  // one tile: 128 steps over 16 warps of one block
}

TEST(W4Gemv, GenericPathShapes) {
  WKV_REQUIRE_GPU();
  check_case({5, 24, 8}, kAllBatches, false);                       // cols % 32 != 0
  check_case({33, 200, 40}, kAllBatches, false);                    // group 40
  check_case({7, 4096, 16}, {1, 3, 8}, false);                      // group % 32 != 0
  check_case({37, 256, 128}, {1, 4, 8}, false, /*misalign=*/true);  // x not 16-byte aligned
  check_case({3, 33024, 128}, {1, 2}, false);  // cols beyond the fast path's shared-memory limit
}

// The public entry point runs the variant WKV_W4_GEMV_VARIANT names (F when unset), bit for bit; F runs the
// packed kernel when the weights carry a packed copy and A when they do not.
TEST(W4Gemv, PublicEntryUsesTheConfiguredVariant) {
  WKV_REQUIRE_GPU();
  const char* env = std::getenv("WKV_W4_GEMV_VARIANT");
  const std::string e = env ? env : "";
  const W4GemvVariant expected = (e == "A" || e == "a")   ? W4GemvVariant::fp32
                                 : (e == "B" || e == "b") ? W4GemvVariant::half2
                                 : (e == "C" || e == "c") ? W4GemvVariant::tc
                                 : (e == "D" || e == "d") ? W4GemvVariant::bulk
                                 : (e == "E" || e == "e") ? W4GemvVariant::lean
                                                          : W4GemvVariant::packed;
  ASSERT_EQ(wkv::kernels::detail::w4_gemv_default_variant(), expected);
  std::mt19937 rng(wkv::test::fresh_seed());
  const Case c{300, 4096, 128};
  const auto W = wkv::test::random_normal(rng, (size_t)c.rows * c.cols, 0.02f);
  const auto x = wkv::test::random_normal(rng, (size_t)2 * c.cols, 1.0f);
  const wkv::W4Matrix m = wkv::quantize_w4_ref(W.data(), c.rows, c.cols, c.group);
  Uploaded dev(m);
  DeviceBuffer<float> dx(x), y1((size_t)2 * c.rows), y2((size_t)2 * c.rows);
  y1.poison(0xFF);
  y2.poison(0xFF);
  wkv::kernels::w4_gemv(dev.view(m), dx.get(), 2, y1.get());
  wkv::kernels::detail::w4_gemv_with_variant(dev.view(m), dx.get(), 2, y2.get(), expected);
  const auto a = y1.download(), b = y2.download();
  ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  if (expected != W4GemvVariant::packed || !wkv::kernels::w4_gemv_packed_supported(c.rows, c.cols, c.group)) return;
  // With a packed copy the public entry point is the packed kernel (B ≤ 2 per call).
  DeviceBuffer<uint8_t> rec(wkv::kernels::w4_packed_device_bytes(c.rows, c.cols));
  wkv::kernels::w4_pack(dev.view(m), rec.get());
  auto pv = dev.view(m);
  pv.packed = rec.get();
  y1.poison(0xFF);
  y2.poison(0xFF);
  wkv::kernels::w4_gemv(pv, dx.get(), 2, y1.get());
  wkv::kernels::w4_gemv_packed({c.rows, c.cols, rec.get()}, dx.get(), 2, y2.get());
  const auto pa = y1.download(), pb = y2.download();
  ASSERT_EQ(0, std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)));
}

TEST(W4Gemv, RejectsInvalidArguments) {
  // Validation happens before any CUDA call, so this runs without a GPU too.
  uint32_t q = 0;
  uint16_t s = 0, z = 0;
  float x = 0, y = 0;
  const auto call = [&](int rows, int cols, int group, int B) {
    wkv::kernels::w4_gemv({rows, cols, group, &q, &s, &z}, &x, B, &y);
  };
  EXPECT_THROW(call(4, 256, 12, 1), wkv::Error);   // group not a multiple of 8
  EXPECT_THROW(call(4, 256, 96, 1), wkv::Error);   // group does not divide cols
  EXPECT_THROW(call(0, 256, 128, 1), wkv::Error);  // no rows
  EXPECT_THROW(call(4, 256, 128, 0), wkv::Error);  // no batch
  EXPECT_THROW(wkv::kernels::w4_gemv({4, 256, 128, nullptr, &s, &z}, &x, 1, &y), wkv::Error);
  for (W4GemvVariant v : kVariants)
    EXPECT_THROW(wkv::kernels::detail::w4_gemv_with_variant({4, 256, 128, &q, &s, &z}, &x, 0, &y, v),
                 wkv::Error);
}

}  // namespace
