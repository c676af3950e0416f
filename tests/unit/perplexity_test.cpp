// Perplexity: the NLL arithmetic by hand, and the windowing protocol of shared/models/README.md
// checked against windows built and scored independently.
#include <cmath>

#include "test_support.h"
#include "wkv/perplexity.h"

namespace wkv {
namespace {

TEST(Perplexity, MeanNllByHand) {
  // Row 0: logits (0, ln 3) → p(1) = 3/4; row 1: (ln 2, ln 2) → p(0) = 1/2.
  const float logits[] = {0.0f, std::log(3.0f), std::log(2.0f), std::log(2.0f)};
  const TokenId targets[] = {1, 0};
  EXPECT_NEAR(mean_nll(logits, 2, 2, targets), (-std::log(0.75) - std::log(0.5)) / 2, 1e-7);
}

TEST(Perplexity, ProtocolMatchesIndependentWindows) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  LoadOptions lo;
  lo.n_threads = 2;
  auto model = Model::load(test::shared_path("models/ref-a"), lo);
  const std::string text = test::read_file(test::shared_path("data/wikitext-2-raw/wiki.test.raw")).substr(0, 6000);
  PerplexityOptions opt;
  opt.ctx = 128;
  opt.max_windows = 3;
  int calls = 0;
  opt.progress = [&](int done, int total, double) {
    EXPECT_EQ(done, ++calls);
    EXPECT_EQ(total, 3);
    return true;
  };
  const PerplexityResult r = evaluate_perplexity(model, text, opt);
  // Independent: encode without BOS, cut into pieces of 127, [BOS] + piece, score 127 predictions each.
  const std::vector<TokenId> ids = model->tokenizer().encode(text, false);
  EXPECT_EQ(r.n_tokens, static_cast<int64_t>(ids.size()));
  EXPECT_EQ(r.n_windows_total, static_cast<int>(ids.size() / 127));
  ASSERT_EQ(r.n_windows, 3);
  EXPECT_EQ(r.n_predictions, 3 * 127);
  double total = 0;
  for (int w = 0; w < 3; ++w) {
    std::vector<TokenId> win = {1};
    win.insert(win.end(), ids.begin() + w * 127, ids.begin() + (w + 1) * 127);
    Session s(model);
    std::vector<float> logits;
    s.eval(win, &logits);
    double nll = 0;
    for (int i = 0; i < 127; ++i) {
      const float* row = logits.data() + size_t(i) * 8192;
      double m = row[0], sum = 0;
      for (int v = 0; v < 8192; ++v) m = std::max(m, double(row[v]));
      for (int v = 0; v < 8192; ++v) sum += std::exp(row[v] - m);
      nll += m + std::log(sum) - row[win[i + 1]];
    }
    EXPECT_NEAR(r.window_mean_nll[w], nll / 127, 1e-9);
    total += nll;
  }
  EXPECT_NEAR(r.ppl, std::exp(total / (3 * 127)), 1e-9 * r.ppl);
  opt.progress = [](int, int, double) { return false; };
  EXPECT_THROW(evaluate_perplexity(model, text, opt), Error);
  opt.ctx = 4096;  // beyond the model's context
  EXPECT_THROW(evaluate_perplexity(model, text, opt), Error);
}

}  // namespace
}  // namespace wkv
