// The CUDA backend end to end on ref-a, against the CPU reference, in every mode it runs.
//
// Error budgets. Decode (GEMV, FP32 math over exactly dequantized weights) agrees with the CPU to ~1e-5,
// except that KV4 quantization rounds: a key computed on the GPU can differ from the CPU's in the last
// bit and land on the other side of a rounding boundary, moving that position's logits by up to ~1e-2
// (the same effect is analysed in tests/unit/quant_modes_test.cpp). So: the first position (no past,
// POQ) must match to 1e-4; every position to 3e-2; the mean over positions to 2e-2. Prefill (T > 8)
// runs the linears on tensor cores with FP16 inputs, so keys differ from the CPU's by ~1e-3 relative and
// about one code in a hundred lands on the other side of a rounding boundary: with chunk POQ (the chunk
// attends to itself at full precision) 1e-2 per position and 3e-3 on average; with token-level POQ
// (every earlier key quantized) 6e-2 per position and 3e-2 on average (measured 2–3.6e-2, H200).
#include <cmath>

#include "test_support.h"
#include "wkv/engine.h"
#include "wkv_kernels/device.h"

namespace wkv {
namespace {

const std::vector<TokenId> kPrompt = {1,    3207, 7825, 396,  5737, 354, 309, 260, 691, 285,
                                      1015, 260,  1405, 639, 702,  260, 1405, 8111, 13, 1574};

std::shared_ptr<Model> load(const std::string& path, QuantMode mode, BackendKind backend) {
  LoadOptions o;
  o.mode = mode;
  o.backend = backend;
  return Model::load(path, o);
}

std::vector<std::vector<float>> decode(std::shared_ptr<Model> m) {
  Session s(m);
  std::vector<std::vector<float>> out;
  for (TokenId id : kPrompt) {
    s.eval(std::span(&id, 1));
    out.emplace_back(s.last_logits().begin(), s.last_logits().end());
  }
  return out;
}

class CudaBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto info = kernels::query_device();
    if (!info.available) GTEST_SKIP() << "GPU test skipped: " << info.reason;
    WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  }
};

TEST_F(CudaBackend, DecodeMatchesCpuInEveryGpuMode) {
  for (QuantMode mode : {QuantMode::kv4, QuantMode::w4kv4_rtn, QuantMode::w4kv4_nopoq}) {
    auto gpu = load(test::shared_path("models/ref-a"), mode, BackendKind::cuda);
    auto cpu = load(test::shared_path("models/ref-a"), mode, BackendKind::cpu);
    ASSERT_EQ(gpu->backend(), BackendKind::cuda);
    const auto g = decode(gpu), c = decode(cpu);
    double mean = 0;
    for (size_t p = 0; p < kPrompt.size(); ++p) {
      const double rel = test::rel_l2(g[p].data(), c[p].data(), c[p].size());
      std::printf("%s position %zu rel L2 %.2e\n", quant_mode_name(mode), p, rel);
      if (p == 0 && mode != QuantMode::w4kv4_nopoq) {
        EXPECT_LT(rel, 1e-4) << quant_mode_name(mode);
      }
      EXPECT_LT(rel, 3e-2) << quant_mode_name(mode) << " position " << p;
      mean += rel / kPrompt.size();
    }
    // A near-tie (a key value within FP32 noise of a KV4 rounding boundary; quant_modes_test meets one
    // on the CPU too) moves every later position by ~1e-2, so the mean budget is 2e-2: a real error in
    // the GPU path (a wrong key, scale or mask) shows up as O(1) differences from the first position on.
    // Measured means (H200): kv4 2.2e-7; w4kv4-rtn 2.2e-7 with the first kernels and 1.9e-3 after the
    // GEMV rewrite changed the FP32 summation order (a near-tie flipped); w4kv4-nopoq 1.4e-2.
    EXPECT_LT(mean, 2e-2) << quant_mode_name(mode);
    std::printf("%s: mean rel L2 GPU vs CPU over %zu decode steps %.2e\n", quant_mode_name(mode), kPrompt.size(), mean);
  }
}

TEST_F(CudaBackend, PrefillMatchesCpuWithTokenAndChunkPoq) {
  for (bool token_level : {false, true}) {
    SessionOptions so;
    so.token_level_poq = token_level;
    Session g(load(test::shared_path("models/ref-a"), QuantMode::w4kv4_rtn, BackendKind::cuda), so);
    Session c(load(test::shared_path("models/ref-a"), QuantMode::w4kv4_rtn, BackendKind::cpu), so);
    std::vector<float> lg, lc;
    g.eval(kPrompt, &lg, 12);  // chunks of 12 then 8: GEMM path, then GEMV path
    c.eval(kPrompt, &lc, 12);
    double mean = 0;
    for (size_t p = 0; p < kPrompt.size(); ++p) {
      const double rel = test::rel_l2(lg.data() + p * 8192, lc.data() + p * 8192, 8192);
      EXPECT_LT(rel, token_level ? 6e-2 : 1e-2) << "token_level " << token_level << " position " << p;
      mean += rel / kPrompt.size();
    }
    EXPECT_LT(mean, token_level ? 3e-2 : 3e-3) << "token_level " << token_level;
  }
}

TEST_F(CudaBackend, GreedyTextAndMemoryFigures) {
  auto gpu = load(test::shared_path("models/ref-a"), QuantMode::w4kv4_rtn, BackendKind::cuda);
  Session s(gpu);
  GenerateOptions opt;
  opt.sampling = SamplingParams::greedy();
  opt.max_tokens = 16;
  const GenerateResult r = s.generate(kPrompt, opt);
  EXPECT_EQ(r.tokens.size(), 16u);
  const MemoryStats m = s.memory_stats();
  EXPECT_EQ(m.backend, "cuda");
  EXPECT_EQ(m.kv_bytes_per_token, 8 * 2 * 2 * (64 + 4));
  EXPECT_GT(m.device_bytes_total, 0);
  EXPECT_GT(m.device_bytes_used, 0);
  EXPECT_FALSE(gpu->device_name().empty());
  // Modes without GPU kernels fall back to the CPU and say why.
  LoadOptions o;
  o.mode = QuantMode::fp16;
  auto fp = Model::load(test::shared_path("models/ref-a"), o);
  EXPECT_EQ(fp->backend(), BackendKind::cpu);
  EXPECT_NE(fp->backend_notice().find("no GPU kernels"), std::string::npos) << fp->backend_notice();
  o.backend = BackendKind::cuda;
  EXPECT_THROW(Model::load(test::shared_path("models/ref-a"), o), Error);
}

}  // namespace
}  // namespace wkv
