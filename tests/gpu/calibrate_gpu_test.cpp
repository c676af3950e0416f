// WKVQuant calibration on the GPU against the CPU reference: a few steps on the first blocks of ref-a
// (stories260K cannot be calibrated: its ffn 172 admits no W4 group, see tests/unit/calibrate_test.cpp)
// give the same losses (1e-3 relative) and nearly the same parameters, and the loss decreases.
//
// Parameters: Adam normalizes each update (≈ ±lr while the gradient keeps its sign), so a parameter whose
// gradient is near zero can step the other way on one side; the comparison therefore asks that 99 % of
// the parameters agree to a small fraction of a step (2e-3 for the LWC logits, lr 1e-2; 1e-4 for the
// smoothing, lr 5e-4) rather than all of them.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "calibrate.h"
#include "gpu_test_util.h"
#include "cuda/calib_cuda.h"
#include "model_loader.h"
#include "test_support.h"
#include "wkv/engine.h"
#include "wkv_kernels/device.h"

namespace {

namespace cc = wkv::calib;

const char* kModel = "models/ref-a";
const char* kText = "data/wikitext-2-raw/wiki.valid.raw";

double rel_diff(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-30); }

TEST(CalibrateGpu, MatchesCpuAndLowersTheLoss) {
  WKV_REQUIRE_GPU();
  WKV_REQUIRE_SHARED(kModel);
  WKV_REQUIRE_SHARED(kText);
  wkv::LoadOptions lo;
  lo.mode = wkv::QuantMode::fp16;
  const wkv::LoadedModel m = wkv::load_hf_model(wkv::test::shared_path(kModel), lo);
  const std::string text = wkv::test::read_file(wkv::test::shared_path(kText)).substr(0, 40000);
  const auto ids = m.tokenizer->encode(text, false);
  const auto segments = cc::draw_calibration_segments(ids, 4, 48, m.tokenizer->bos_id(), 7);

  cc::CalibrationConfig c;
  c.epochs = 2;
  c.max_blocks = 2;
  c.crr_k = 3;
  c.seed = 3;
  int gpu_calls = 0;
  c.progress = [&](const cc::CalibrationProgress& p) {
    ++gpu_calls;
    EXPECT_EQ(p.steps, 2 * 2 * 4);
    return true;
  };
  const cc::CalibrationResult gpu = cc::calibrate_wkvquant_cuda(m.info, *m.weights, segments, c);
  c.progress = nullptr;
  const cc::CalibrationResult cpu = cc::calibrate_wkvquant(m.info, *m.weights, segments, c);
  EXPECT_EQ(gpu_calls, 2 * 2 * 4);
  EXPECT_EQ(gpu.device.rfind("cuda: ", 0), 0u) << gpu.device;
  EXPECT_GT(gpu.peak_device_bytes, 0);
  std::printf("GPU calibration: %s, %.2f s, peak %.1f MiB; CPU %.2f s\n", gpu.device.c_str(), gpu.seconds,
              gpu.peak_device_bytes / 1048576.0, cpu.seconds);
  ASSERT_EQ(gpu.blocks.size(), 2u);
  ASSERT_EQ(cpu.blocks.size(), 2u);
  for (size_t l = 0; l < 2; ++l) {
    SCOPED_TRACE("block " + std::to_string(l));
    const cc::BlockCalibration& g = gpu.blocks[l];
    const cc::BlockCalibration& r = cpu.blocks[l];
    std::printf("block %zu: loss GPU %.6f → %.6f, CPU %.6f → %.6f\n", l, g.initial_loss, g.final_loss,
                r.initial_loss, r.final_loss);
    EXPECT_LE(rel_diff(g.initial_loss, r.initial_loss), 1e-3);
    EXPECT_LE(rel_diff(g.final_loss, r.final_loss), 1e-3);
    EXPECT_LT(g.final_loss, g.initial_loss);
    // Initial values the parameters moved from (for the movement's scale).
    std::vector<const std::vector<float>*> gv, rv;
    std::vector<bool> is_lwc;
    cc::for_each_param(g.params, [&](const std::vector<float>& v, bool lwc) {
      gv.push_back(&v);
      is_lwc.push_back(lwc);
    });
    cc::for_each_param(r.params, [&](const std::vector<float>& v, bool) { rv.push_back(&v); });
    ASSERT_EQ(gv.size(), rv.size());
    // Block 0 sees the same input on both sides, so its parameters agree element by element. Later blocks
    // take their input from block 0's quantized output, which differs from the CPU's in the last bits; a
    // value near a rounding boundary then changes a gradient, and Adam's normalized step turns even a small
    // gradient difference into a step of up to lr. So from block 1 on the test compares how far the LWC
    // logits moved from their initial value 4 (rel L2 of the two movements ≤ 0.5; measured ~0.3 on an
    // H200 with these settings), on top of the losses above agreeing to 1e-3.
    if (l > 0) {
      double num = 0, den = 0;
      for (size_t i = 0; i < gv.size(); ++i) {
        if (!is_lwc[i]) continue;
        for (size_t j = 0; j < gv[i]->size(); ++j) {
          const double mg = (*gv[i])[j] - 4.0, mc = (*rv[i])[j] - 4.0;
          num += (mg - mc) * (mg - mc);
          den += mc * mc;
        }
      }
      const double rel = std::sqrt(num / std::max(den, 1e-300));
      std::printf("block %zu: rel L2 of the LWC movement, GPU vs CPU %.3f\n", l, rel);
      EXPECT_GT(den, 0.0);
      EXPECT_LE(rel, 0.5);
      continue;
    }
    size_t total = 0, ok = 0;
    for (size_t i = 0; i < gv.size(); ++i) {
      ASSERT_EQ(gv[i]->size(), rv[i]->size());
      const double tol = is_lwc[i] ? 2e-3 : 1e-4;
      for (size_t j = 0; j < gv[i]->size(); ++j) {
        ASSERT_TRUE(std::isfinite((*gv[i])[j]));
        ok += std::fabs(double((*gv[i])[j]) - (*rv[i])[j]) <= tol;
        ++total;
      }
    }
    EXPECT_GE(double(ok), 0.99 * double(total)) << total - ok << " of " << total << " parameters differ";
    for (float s : g.params.k_scale) EXPECT_GE(s, 1e-5f);
  }
}

TEST(CalibrateGpu, CancellableAndValidated) {
  WKV_REQUIRE_GPU();
  WKV_REQUIRE_SHARED(kModel);
  wkv::LoadOptions lo;
  lo.mode = wkv::QuantMode::fp16;
  const wkv::LoadedModel m = wkv::load_hf_model(wkv::test::shared_path(kModel), lo);
  std::vector<std::vector<wkv::TokenId>> segments(2, std::vector<wkv::TokenId>(16, 5));
  cc::CalibrationConfig c;
  c.epochs = 1;
  c.max_blocks = 1;
  c.progress = [](const cc::CalibrationProgress& p) { return p.step < 1; };
  try {
    cc::calibrate_wkvquant_cuda(m.info, *m.weights, segments, c);
    FAIL() << "no cancellation";
  } catch (const wkv::Error& e) {
    EXPECT_EQ(e.code(), wkv::ErrorCode::cancelled);
  }
  segments[1].push_back(5);  // lengths differ
  EXPECT_THROW(cc::calibrate_wkvquant_cuda(m.info, *m.weights, segments, c), wkv::Error);
}

}  // namespace
