// ref-a on the first 16 WikiText-2 test windows (the full protocol, 2048-token windows): quantization
// costs quality in the expected order, fp16 < w4kv4-rtn < w4a4, and fp16 stays close to the reference
// implementation's full-test figure. Label `slow` (minutes under sanitizers; skipped there).
#include "test_support.h"
#include "wkv/perplexity.h"

namespace wkv {
namespace {

TEST(PerplexitySlow, ModesOrderOnSixteenWindows) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "16 full windows × 3 modes take too long under AddressSanitizer; the ci preset runs this";
#endif
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  WKV_REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  const std::string text = test::read_file(test::shared_path("data/wikitext-2-raw/wiki.test.raw"));
  std::map<QuantMode, double> ppl;
  for (QuantMode mode : {QuantMode::fp16, QuantMode::w4kv4_rtn, QuantMode::w4a4}) {
    LoadOptions lo;
    lo.mode = mode;
    lo.backend = BackendKind::cpu;
    PerplexityOptions opt;
    opt.max_windows = 16;
    ppl[mode] = evaluate_perplexity(Model::load(test::shared_path("models/ref-a"), lo), text, opt).ppl;
    std::printf("%s: ppl %.4f over 16 windows\n", quant_mode_name(mode), ppl[mode]);
  }
  EXPECT_LT(ppl[QuantMode::fp16], ppl[QuantMode::w4kv4_rtn]);
  EXPECT_LT(ppl[QuantMode::w4kv4_rtn], ppl[QuantMode::w4a4]);
  // The same windows' mean NLL the reference reports over all 195 windows is 165.98; 16 windows of
  // one text land in the same region (measured: see docs/quality.md).
  EXPECT_GT(ppl[QuantMode::fp16], 100.0);
  EXPECT_LT(ppl[QuantMode::fp16], 250.0);
}

}  // namespace
}  // namespace wkv
