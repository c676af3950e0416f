// Mode comparison on ref-a: divergence, NLL under FP16 (checked against an independent Session), KV
// bytes of a KV4 pane against the layout computed by hand, and the .wkvq-only case.
#include <gtest/gtest.h>

#include <cmath>

#include "test_support.h"
#include "wkv/compare.h"
#include "wkv/perplexity.h"

namespace {

using namespace wkv;

const char* const kRefA = "models/ref-a/model.safetensors";

std::string ref_a() { return wkv::test::shared_path("models/ref-a"); }
std::string ref_a_wkvq() { return std::string(WKV_SOURCE_DIR_FOR_TESTS) + "/resources/models/ref-a.wkvq"; }

CompareOptions two_modes() {
  CompareOptions o;
  o.model_path = ref_a();
  o.panes = {{"", QuantMode::fp16}, {"", QuantMode::w4kv4_rtn}};
  o.prompt = "Once upon a time, there was a little dog named";
  o.generate.sampling = SamplingParams::greedy();
  o.generate.max_tokens = 24;
  o.generate.stop_at_eos = false;
  return o;
}

TEST(FirstDivergence, ByHand) {
  EXPECT_EQ(first_divergence({1, 2, 3}, {1, 2, 3}), -1);
  EXPECT_EQ(first_divergence({1, 2, 3}, {1, 5, 3}), 1);
  EXPECT_EQ(first_divergence({1, 2}, {1, 2, 3}), 2);
  EXPECT_EQ(first_divergence({}, {}), -1);
  EXPECT_EQ(first_divergence({4}, {}), 0);
}

TEST(Compare, TwoModesOnRefA) {
  WKV_REQUIRE_SHARED(kRefA);
  std::vector<int> streamed(2, 0);
  CompareCallbacks cb;
  cb.on_token = [&](int pane, const TokenEvent&) {
    ++streamed[size_t(pane)];
    return true;
  };
  const CompareOptions opt = two_modes();
  const CompareResult r = compare_modes(opt, cb);
  ASSERT_EQ(r.panes.size(), 2u);
  ASSERT_TRUE(r.panes[0].error.empty()) << r.panes[0].error;
  ASSERT_TRUE(r.panes[1].error.empty()) << r.panes[1].error;
  EXPECT_EQ(r.fp16_pane, 0);
  EXPECT_TRUE(r.fp16_note.empty()) << r.fp16_note;
  const PaneResult& f = r.panes[0];
  const PaneResult& q = r.panes[1];
  ASSERT_EQ(f.tokens.size(), 24u);
  EXPECT_GE(streamed[0], 24);
  EXPECT_GE(streamed[1], 1);

  // Divergence: the FP16 pane against itself is none; the KV4 pane as counted by hand.
  ASSERT_TRUE(f.diverge_at.has_value());
  EXPECT_EQ(*f.diverge_at, -1);
  size_t d = 0;
  while (d < f.tokens.size() && d < q.tokens.size() && f.tokens[d] == q.tokens[d]) ++d;
  const int expect = d == f.tokens.size() && d == q.tokens.size() ? -1 : int(d);
  ASSERT_TRUE(q.diverge_at.has_value());
  EXPECT_EQ(*q.diverge_at, expect);

  // NLL of FP16's own greedy answer: an independent FP16 session over prompt + answer in one batch.
  auto model = Model::load(ref_a());
  Session s(model);
  const auto prompt = model->tokenizer().encode(opt.prompt, true);  // plain template, one user message
  ASSERT_EQ(f.prompt_tokens, prompt);
  std::vector<TokenId> all = prompt;
  all.insert(all.end(), f.tokens.begin(), f.tokens.end());
  std::vector<float> logits;
  s.eval(all, &logits);
  const int V = model->info().vocab_size;
  const int P = int(prompt.size());
  const double nll = mean_nll(logits.data() + size_t(P - 1) * V, int(f.tokens.size()), V, f.tokens.data());
  ASSERT_TRUE(f.nll.has_value());
  EXPECT_NEAR(*f.nll, nll, 1e-4 * std::max(1.0, nll));
  EXPECT_NEAR(*f.ppl, std::exp(nll), 1e-3 * std::exp(nll));
  // Greedy answers are the model's argmax: their NLL is below the KV4 pane's (or equal when identical).
  ASSERT_TRUE(q.nll.has_value());
  if (expect < 0) {
    EXPECT_NEAR(*q.nll, *f.nll, 1e-4);
  }

  // KV bytes: KV4 with G = head_dim = 128, 2 KV heads, 8 layers: per layer and K/V 2 × (128 / 2 bytes of
  // nibbles + 2 bytes FP16 scale + 2 bytes FP16 min) = 136 bytes → 8 × 2 × 136 = 2176 bytes per token.
  // The context after a max-tokens stop holds the prompt and every answer token but the last.
  EXPECT_EQ(q.memory.kv_bytes_per_token, 2176);
  const int64_t n_ctx_tokens = int64_t(q.prompt_tokens.size() + q.tokens.size() - 1);
  EXPECT_EQ(q.memory.n_tokens, n_ctx_tokens);
  EXPECT_EQ(q.kv_bytes, 2176 * n_ctx_tokens);
  EXPECT_EQ(q.kv_bytes, q.memory.kv_bytes_used);
  // FP16: 8 layers × K/V × 2 heads × 128 channels × 2 bytes = 8192 per token.
  EXPECT_EQ(f.kv_bytes, 8192 * int64_t(f.prompt_tokens.size() + f.tokens.size() - 1));
  EXPECT_LT(q.weight_bytes, f.weight_bytes);

  const std::string table = compare_markdown_table(r);
  EXPECT_EQ(table.rfind("| Mode | Model | Tokens | Tok/s | KV cache | Weights | Diverges at | NLL (FP16) | PPL (FP16) |\n", 0),
            0u);
  EXPECT_NE(table.find("| fp16 | ref-a | 24 | "), std::string::npos);
  EXPECT_NE(table.find(" | none | "), std::string::npos);
}

TEST(Compare, WkvqOnlySaysFp16IsUnavailable) {
  WKV_REQUIRE_SHARED(kRefA);
  CompareOptions o = two_modes();
  o.model_path = ref_a_wkvq();
  o.panes = {{"", QuantMode::w4kv4}, {"", QuantMode::fp16}};
  o.generate.max_tokens = 8;
  const CompareResult r = compare_modes(o);
  ASSERT_EQ(r.panes.size(), 2u);
  EXPECT_TRUE(r.panes[0].error.empty()) << r.panes[0].error;
  EXPECT_EQ(r.panes[0].tokens.size(), 8u);
  EXPECT_FALSE(r.panes[1].error.empty());  // fp16 from a .wkvq cannot run; the other pane still did
  EXPECT_FALSE(r.panes[0].nll.has_value());
  EXPECT_FALSE(r.panes[0].diverge_at.has_value());
  EXPECT_NE(r.fp16_note.find("FP16 model unavailable"), std::string::npos) << r.fp16_note;

  // With the FP16 checkpoint named, the .wkvq pane is scored under it.
  o.fp16_model_path = ref_a();
  o.panes = {{"", QuantMode::w4kv4}, {ref_a(), QuantMode::fp16}};
  const CompareResult r2 = compare_modes(o);
  ASSERT_EQ(r2.panes.size(), 2u);
  EXPECT_TRUE(r2.panes[1].error.empty()) << r2.panes[1].error;
  EXPECT_TRUE(r2.panes[0].nll.has_value());
  EXPECT_TRUE(r2.panes[0].diverge_at.has_value());
  EXPECT_EQ(r2.panes[0].tokens, r.panes[0].tokens);  // same seed and settings → same answer
}

TEST(Compare, CancelStopsAfterTheCurrentPane) {
  WKV_REQUIRE_SHARED(kRefA);
  CompareCallbacks cb;
  cb.on_token = [](int pane, const TokenEvent&) { return pane == 0; };
  const CompareResult r = compare_modes(two_modes(), cb);
  EXPECT_TRUE(r.cancelled);
  ASSERT_EQ(r.panes.size(), 2u);
  EXPECT_TRUE(r.panes[1].cancelled);
  EXPECT_FALSE(r.panes[0].cancelled);
}

}  // namespace
