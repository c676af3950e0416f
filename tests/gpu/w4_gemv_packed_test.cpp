// W4 GEMV "F" (wkv_kernels/w4_gemv_packed.h) against independent references:
//   * the device packer against w4_pack_ref (the layout spec, engine/src/w4_packed_format.h), byte for byte;
//   * the GEMV against dequantize_w4_ref + an FP64 matvec. Budget per output element (mag = Σ|w'x|,
//     X_g = max |x| of the 128-channel group, A_g = Σ_{c∈g} |q_c − z|·h):
//       |y − ref| ≤ 2^-28·Σ_g X_g·A_g + (cols/128 + 64)·2^-24·mag
//     (x as a 30-bit integer per group: ≤ 2^-30·2·X_g per channel after rounding, bound ×8; the integer dot
//     products Σ (q − z)·digit are exact, then 3 FP32 roundings per record, one per record in the running sum
//     and ≤ 16 + a few in the warp / block sums); rel L2 ≤ 2e-6 on the LLM-like data (expected ~1e-7);
//   * the fused prologues against the separate kernels followed by the packed GEMV: SwiGLU bit-identical,
//     add + RMSNorm with res_out bit-identical and y within the norm's last-ulp difference.
// Shapes sweep rows that are not multiples of 16 (padded tiles), fewer and more tiles than SMs, one to 86 groups
// per row (cols 128 … 11008), the ref-a shapes, B = 1 … 5 (2 per launch), with poisoned outputs and guard elements.
#include "wkv_kernels/w4_gemv_packed.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "gpu_test_util.h"
#include "half.h"
#include "quant_formats.h"
#include "test_support.h"
#include "w4_packed_format.h"
#include "w4_packed_test_util.h"
#include "wkv/error.h"
#include "wkv_kernels/elementwise.h"
#include "wkv_kernels/w4_dequant.h"

namespace {

using wkv::test::DeviceBuffer;
using wkv::test::device_runs_packed;
using wkv::test::Packed;
using wkv::test::random_w4;
namespace wk = wkv::kernels;

TEST(W4GemvPacked, PackMatchesReferenceBytes) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  const uint32_t seed = wkv::test::fresh_seed();
  std::mt19937 rng(seed);
  for (auto [rows, cols] : {std::pair{1, 128}, {17, 256}, {48, 384}, {301, 4096}}) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + std::to_string(rows) + "x" + std::to_string(cols));
    const wkv::W4Matrix m = random_w4(rng, rows, cols);
    Packed p(m);
    const std::vector<wkv::W4PackedRecord> ref = wkv::w4_pack_ref(m);
    const std::vector<uint8_t> got = p.records.download();
    ASSERT_EQ(got.size(), ref.size() * sizeof(wkv::W4PackedRecord));
    ASSERT_EQ(std::memcmp(got.data(), ref.data(), got.size()), 0);
  }
}

// Quantizes random weights, runs B = 1 … maxB, checks every output against the FP64 reference and the bound.
void check_gemv(int rows, int cols, int maxB, bool outliers) {
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " rows " + std::to_string(rows) + " cols " + std::to_string(cols));
  std::mt19937 rng(seed);
  const wkv::W4Matrix m = random_w4(rng, rows, cols);
  auto x = wkv::test::random_normal(rng, (size_t)maxB * cols, 1.0f);
  if (outliers) {
    for (size_t i = 0; i < x.size(); i += 53) x[i] *= 3.0e4f;
    for (size_t i = 5; i < x.size(); i += 211) x[i] *= 1.0e-6f;
  }
  const std::vector<float> Wd = wkv::dequantize_w4_ref(m);
  const int groups = cols / 128;
  Packed p(m);
  DeviceBuffer<float> dx(x);
  for (int B = 1; B <= maxB; ++B) {
    SCOPED_TRACE("B " + std::to_string(B));
    const size_t guard = 64;
    DeviceBuffer<float> dy((size_t)B * rows + guard);
    dy.poison(0xFF);
    wk::w4_gemv_packed(p.view, dx.get(), B, dy.get());
    const auto y = dy.download();
    for (size_t i = (size_t)B * rows; i < y.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &y[i], 4);
      ASSERT_EQ(bits, 0xFFFFFFFFu) << "write past the end at " << i;
    }
    // A second run must give the same bits (fixed summation order).
    DeviceBuffer<float> dy2((size_t)B * rows);
    wk::w4_gemv_packed(p.view, dx.get(), B, dy2.get());
    const auto y2 = dy2.download();
    ASSERT_EQ(std::memcmp(y.data(), y2.data(), y2.size() * 4), 0) << "not deterministic";
    for (int b = 0; b < B; ++b) {
      const float* xb = x.data() + (size_t)b * cols;
      double num = 0, den = 0;
      for (int r = 0; r < rows; ++r) {
        double s = 0, mag = 0, fixed = 0;
        for (int gi = 0; gi < groups; ++gi) {
          double xm = 0, a = 0;
          for (int c = gi * 128; c < gi * 128 + 128; ++c) {
            const double w = Wd[(size_t)r * cols + c];
            s += w * xb[c];
            mag += std::fabs(w * xb[c]);
            xm = std::max(xm, (double)std::fabs(xb[c]));
            a += std::fabs(w);  // |q − z|·h = |w'|
          }
          fixed += xm * a;
        }
        const float got = y[(size_t)b * rows + r];
        ASSERT_TRUE(std::isfinite(got)) << "output not written: b " << b << " row " << r;
        const double bound = 0x1p-28 * fixed + (cols / 128.0 + 64.0) * 0x1p-24 * mag + 1e-30;
        ASSERT_LE(std::fabs(got - s), bound) << "b " << b << " row " << r << " y " << got << " ref " << s;
        num += (got - s) * (got - s);
        den += s * s;
      }
      if (rows >= 32 && !outliers) {
        EXPECT_LE(std::sqrt(num / den), 2e-6) << "rel L2, b " << b;
      }
    }
  }
}

TEST(W4GemvPacked, ShapeSweepAgainstFp64) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  // Fewer tiles than SMs, rows off the 16-row tile grid, many tiles per block.
  for (int rows : {1, 15, 37, 1000})
    for (int cols : {128, 384, 4096}) check_gemv(rows, cols, 3, false);
  for (auto [rows, cols] : {std::pair{768, 256}, {256, 256}, {1536, 256}, {256, 768}}) check_gemv(rows, cols, 2, false);
  check_gemv(4096, 11008, 2, false);
  check_gemv(22016, 4096, 1, false);
  check_gemv(333, 2048, 5, true);
}

TEST(W4GemvPacked, NonFiniteInputPoisonsItsRows) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  std::mt19937 rng(7);
  const wkv::W4Matrix m = random_w4(rng, 40, 512);
  Packed p(m);
  auto x = wkv::test::random_normal(rng, 512, 1.0f);
  x[300] = std::nanf("");
  DeviceBuffer<float> dx(x), dy(40);
  wk::w4_gemv_packed(p.view, dx.get(), 1, dy.get());
  for (float v : dy.download()) EXPECT_TRUE(std::isnan(v));
}

TEST(W4GemvPacked, FusedProloguesMatchSeparateKernels) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (auto [rows, cols] :
       {std::pair{4096 + 16 * 3, 4096}, {96, 11008}, {50, 384}, {768, 256}, {1536, 256}, {256, 768}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    const wkv::W4Matrix m = random_w4(rng, rows, cols);
    Packed p(m);
    const auto res = wkv::test::random_normal(rng, cols, 1.0f), r = wkv::test::random_normal(rng, cols, 0.5f);
    const auto nw = wkv::test::uniform(rng, cols, 0.5f, 1.5f);
    DeviceBuffer<float> dres(res), dr(r), dnw(nw), dout(cols), dy(rows), dsum(cols), dxin(cols), dref(rows);
    wk::w4_gemv_packed_add_rmsnorm(p.view, dres.get(), dr.get(), dnw.get(), 1e-5f, dout.get(), dy.get());
    // Separate: res + r, rmsnorm, GEMV.
    wkv::test::cuda_ok(cudaMemcpy(dsum.get(), dres.get(), cols * 4, cudaMemcpyDeviceToDevice), "copy");
    wk::add_rmsnorm_f32(dsum.get(), dr.get(), dnw.get(), 1, cols, 1e-5f, dxin.get());
    wk::w4_gemv_packed(p.view, dxin.get(), 1, dref.get());
    const auto out = dout.download(), sum = dsum.download(), y = dy.download(), yref = dref.download();
    ASSERT_EQ(std::memcmp(out.data(), sum.data(), cols * 4), 0) << "res_out differs from res + r";
    double num = 0, den = 0;
    for (int i = 0; i < rows; ++i) num += (y[i] - yref[i]) * (double)(y[i] - yref[i]), den += (double)yref[i] * yref[i];
    EXPECT_LE(std::sqrt(num / den), 1e-6) << "add + rmsnorm prologue";  // norm's sum order: ≤ 1 ulp of x

    // SwiGLU: x bit-identical, so y too.
    const auto gate = wkv::test::random_normal(rng, cols, 2.0f), up = wkv::test::random_normal(rng, cols, 1.0f);
    DeviceBuffer<float> dg(gate), du(up), dg2(gate), dys(rows), dys2(rows);
    wk::w4_gemv_packed_swiglu(p.view, dg.get(), du.get(), dys.get());
    wk::swiglu(dg2.get(), du.get(), cols);
    wk::w4_gemv_packed(p.view, dg2.get(), 1, dys2.get());
    const auto a = dys.download(), b = dys2.download();
    ASSERT_EQ(std::memcmp(a.data(), b.data(), rows * 4), 0) << "swiglu prologue";
  }
}

// Packed-only weights (no storage-format copy): prefill's dequantization and the row views read the packed
// records; the dense FP16 must be bit-identical to w4_dequant_f16 of the storage format, row views included.
TEST(W4GemvPacked, DequantFromPackedMatchesStorageFormatBits) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (auto [rows, cols, row0, nrows] :
       {std::tuple{37, 256, 0, 37}, {768, 256, 256, 256}, {96, 1024, 16, 75}, {4096 + 32, 4096, 4096, 32}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " rows " + std::to_string(row0) + "+" +
                 std::to_string(nrows));
    const wkv::W4Matrix m = random_w4(rng, rows, cols);
    Packed p(m);
    DeviceBuffer<uint16_t> a((size_t)nrows * cols), b((size_t)nrows * cols);
    a.poison(0x11);
    b.poison(0x22);
    wk::W4DeviceWeights sub = p.dense(m);
    sub.rows = nrows;
    sub.qweight += (size_t)row0 * cols / 8;
    sub.scales += (size_t)row0 * cols / 128;
    sub.zeros += (size_t)row0 * cols / 128;
    wk::w4_dequant_f16(sub, a.get());
    wk::w4_dequant_f16_packed(wk::w4_packed_rows(p.view, row0, nrows), b.get());
    const auto da = a.download(), db = b.download();
    ASSERT_EQ(std::memcmp(da.data(), db.data(), da.size() * 2), 0);
    // The same through the public entry point with packed-only weights.
    const wk::W4DeviceWeights only{nrows, cols, 128, nullptr, nullptr, nullptr,
                                   wk::w4_packed_rows(p.view, row0, nrows).records};
    b.poison(0x33);
    wk::w4_dequant_f16(only, b.get());
    const auto dc = b.download();
    ASSERT_EQ(std::memcmp(da.data(), dc.data(), da.size() * 2), 0);
  }
  EXPECT_THROW(wk::w4_packed_rows({64, 256, reinterpret_cast<void*>(256)}, 8, 16), wkv::Error);  // not a tile
}

// w4_gemv with packed-only weights runs F for every batch size (≤ 2 rows per launch), bit-identical to
// w4_gemv_packed.
TEST(W4GemvPacked, PublicEntryWithPackedOnlyWeights) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  std::mt19937 rng(wkv::test::fresh_seed());
  const wkv::W4Matrix m = random_w4(rng, 300, 1024);
  Packed p(m);
  const auto x = wkv::test::random_normal(rng, (size_t)5 * 1024, 1.0f);
  DeviceBuffer<float> dx(x), y1((size_t)5 * 300), y2((size_t)5 * 300);
  const wk::W4DeviceWeights only{300, 1024, 128, nullptr, nullptr, nullptr, p.records.get()};
  for (int B : {1, 2, 3, 5}) {
    y1.poison(0xFF);
    y2.poison(0xFF);
    wk::w4_gemv(only, dx.get(), B, y1.get());
    wk::w4_gemv_packed(p.view, dx.get(), B, y2.get());
    const auto a = y1.download(), b = y2.download();
    ASSERT_EQ(std::memcmp(a.data(), b.data(), (size_t)B * 300 * 4), 0) << "B " << B;
  }
}

// F launches with programmatic dependent launch (WKV_W4_PACKED_PDL=1 / 2, or F1 / F2 for launches marked
// predecessor w4_gemv, as every launch here but the first is): each may start, and fill its ring with
// weights, while its predecessor still runs, and must read x, the residual stream and write y only after
// griddepcontrol.wait. A chain where every launch reads what the one before wrote, run back to back on a
// stream and replayed as a captured graph, must equal the same launches with the host waiting after each
// (no overlap possible), bit for bit. Large matrices keep each kernel running long enough for an early read
// to see the previous round's values.
TEST(W4GemvPacked, ChainedLaunchesReadTheirPredecessorsOutput) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  constexpr int kDim = 2048, kFfn = 5504;
  const wkv::W4Matrix up_m = random_w4(rng, kFfn, kDim), down_m = random_w4(rng, kDim, kFfn);
  const wkv::W4Matrix sq_m = random_w4(rng, kDim, kDim);
  Packed up(up_m), down(down_m), sq(sq_m);
  const auto x0 = wkv::test::random_normal(rng, kDim, 1.0f), u = wkv::test::random_normal(rng, kFfn, 1.0f);
  const auto nw = wkv::test::uniform(rng, kDim, 0.5f, 1.5f);
  DeviceBuffer<float> dx0(x0), du(u), dnw(nw), gate(kFfn), h(kDim), res(kDim), xa(kDim), xb(kDim);
  cudaStream_t stream = nullptr;
  wkv::test::cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  // One round: gate = up·x; h = down·swiglu(gate, u); res = x + h and x' = sq·rmsnorm(res), x' alternating
  // between xa and xb (a launch never writes what it reads). Three rounds, so every buffer is rewritten while
  // the launches after its last reader may already be running.
  auto run = [&](bool sync_each) {
    auto step = [&]() {
      if (sync_each) wkv::test::cuda_ok(cudaStreamSynchronize(stream), "sync");
    };
    auto after_f = [](wk::W4PackedView v) {
      v.predecessor = wk::W4Predecessor::w4_gemv;
      return v;
    };
    const float* x = dx0.get();
    for (int round = 0; round < 3; ++round) {
      wk::w4_gemv_packed(round == 0 ? up.view : after_f(up.view), x, 1, gate.get(), stream);
      step();
      wk::w4_gemv_packed_swiglu(after_f(down.view), gate.get(), du.get(), h.get(), stream);
      step();
      float* next = round % 2 == 0 ? xa.get() : xb.get();
      wk::w4_gemv_packed_add_rmsnorm(after_f(sq.view), x, h.get(), dnw.get(), 1e-5f, res.get(), next, stream);
      step();
      x = next;
    }
  };
  auto outputs = [&]() {
    wkv::test::cuda_ok(cudaStreamSynchronize(stream), "sync");
    std::vector<float> all;
    for (auto* b : {&gate, &h, &res, &xa, &xb}) {
      const auto v = b->download();
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  };
  auto poison_all = [&]() {
    for (auto* b : {&gate, &h, &res, &xa, &xb}) b->poison(0xFF);
    // cudaMemset runs on the legacy stream, which the non-blocking stream does not wait for.
    wkv::test::cuda_ok(cudaDeviceSynchronize(), "poison");
  };
  poison_all();
  run(true);
  const auto want = outputs();
  for (float v : want) ASSERT_TRUE(std::isfinite(v)) << "the reference chain left a poisoned output";
  for (int rep = 0; rep < 3; ++rep) {
    poison_all();
    run(false);
    const auto got = outputs();
    ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0) << "back-to-back launches, repeat " << rep;
  }
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  wkv::test::cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
  run(false);
  wkv::test::cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
  wkv::test::cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  for (int rep = 0; rep < 3; ++rep) {
    poison_all();
    wkv::test::cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
    const auto got = outputs();
    ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0) << "graph replay " << rep;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// The next-kernel L2 hint (W4PackedView / W4DeviceWeights::next_l2) is only a hint: y (and res_out) with any
// well-formed region — the whole next matrix, the start of every piece, more and fewer pieces than thread
// blocks — equal the launch without one bit for bit, through the plain, add + RMSNorm and SwiGLU kernels and
// the public entry; a malformed region is refused before anything is launched (y keeps its poison).
TEST(W4GemvPacked, NextKernelL2HintChangesNoResult) {
  WKV_REQUIRE_PACKED_GPU("packed GEMV");
  const uint32_t seed = wkv::test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int rows = 1000, cols = 2048;
  const wkv::W4Matrix m = random_w4(rng, rows, cols), next = random_w4(rng, 4096 + 16, 1024);
  Packed p(m), pn(next);
  const auto x = wkv::test::random_normal(rng, cols, 1.0f), u = wkv::test::random_normal(rng, cols, 1.0f);
  const auto res = wkv::test::random_normal(rng, cols, 1.0f), nw = wkv::test::uniform(rng, cols, 0.5f, 1.5f);
  DeviceBuffer<float> dx(x), du(u), dres(res), dnw(nw), y(rows), out(cols);
  // The three launch kinds with the view v; returns y of each (and res_out) concatenated.
  auto run = [&](const wk::W4PackedView& v) {
    std::vector<float> all;
    auto take = [&](DeviceBuffer<float>& b) {
      const auto h = b.download();
      all.insert(all.end(), h.begin(), h.end());
      b.poison(0xFF);
    };
    y.poison(0xFF);
    out.poison(0xFF);
    wk::w4_gemv_packed(v, dx.get(), 1, y.get());
    take(y);
    wk::w4_gemv_packed_add_rmsnorm(v, dres.get(), dx.get(), dnw.get(), 1e-5f, out.get(), y.get());
    take(y);
    take(out);
    wk::w4_gemv_packed_swiglu(v, dx.get(), du.get(), y.get());
    take(y);
    wk::W4DeviceWeights pub{rows, cols, 128, nullptr, nullptr, nullptr, v.records};
    pub.next_l2 = v.next_l2;
    wk::w4_gemv(pub, dx.get(), 1, y.get());
    take(y);
    return all;
  };
  const auto want = run(p.view);
  const wk::L2PrefetchRegion regions[] = {
      wk::w4_packed_prefetch_region(pn.view, 1.0f),   // all of the next matrix
      wk::w4_packed_prefetch_region(pn.view, 0.05f),  // the start of every block's piece
      {pn.view.records, 64, 1000, 1024, 1.0f},        // more pieces than blocks
      {pn.view.records, 100, 3, 16, 0.5f},            // fewer
      {pn.view.records, 10, 4, 1024, 0.0f},           // nothing requested
  };
  for (const auto& r : regions) {
    SCOPED_TRACE("region units " + std::to_string(r.units) + " parts " + std::to_string(r.parts) +
                 " fraction " + std::to_string(r.fraction));
    wk::W4PackedView v = p.view;
    v.next_l2 = r;
    const auto got = run(v);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0) << "a hint changed a result";
  }
  const wk::L2PrefetchRegion bad[] = {
      {static_cast<const uint8_t*>(pn.view.records) + 8, 4, 2, 1024, 0.5f},  // base not 16-byte aligned
      {pn.view.records, 4, 2, 1000, 0.5f},  // unit_bytes not a multiple of 16
      {pn.view.records, 4, 0, 1024, 0.5f},  // no pieces
      {pn.view.records, 4, 2, 1024, 1.5f},  // fraction outside [0, 1]
  };
  for (const auto& r : bad) {
    wk::W4PackedView v = p.view;
    v.next_l2 = r;
    y.poison(0xFF);
    EXPECT_THROW(wk::w4_gemv_packed(v, dx.get(), 1, y.get()), std::invalid_argument);
    wkv::test::cuda_ok(cudaDeviceSynchronize(), "sync");
    const auto h = y.download();
    for (float f : h) ASSERT_TRUE(std::isnan(f)) << "a refused launch wrote y";
  }
}

TEST(W4GemvPacked, RefusesShapesWithoutPackedLayout) {
  WKV_REQUIRE_GPU();
  EXPECT_FALSE(wk::w4_gemv_packed_supported(64, 4096, 64));
  EXPECT_FALSE(wk::w4_gemv_packed_supported(64, 4160, 128));  // 4160 % 128 != 0
  std::mt19937 rng(3);
  auto W = wkv::test::random_normal(rng, 16 * 256, 0.02f);
  const wkv::W4Matrix m = wkv::quantize_w4_ref(W.data(), 16, 256, 64);
  DeviceBuffer<uint32_t> q(m.qweight);
  DeviceBuffer<uint16_t> s(m.scales), z(m.zeros);
  DeviceBuffer<uint8_t> out(1 << 16);
  try {
    wk::w4_pack({m.rows, m.cols, m.group, q.get(), s.get(), z.get()}, out.get());
    FAIL() << "w4_pack accepted group 64";
  } catch (const wkv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("group 64"), std::string::npos) << e.what();
  }
}

}  // namespace
