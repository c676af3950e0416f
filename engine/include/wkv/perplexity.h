// Perplexity evaluation with the protocol of shared/models/README.md:
//   text → one token stream encode(whole text) (no BOS) → consecutive non-overlapping pieces of
//   ctx − 1 tokens (the remainder is dropped) → each window is [BOS] + piece (ctx tokens) →
//   perplexity = exp(mean next-token NLL over every prediction in every window).
// Each window is evaluated in one batch with token-level POQ (SessionOptions::token_level_poq), so in
// KV4 modes every prediction sees exactly what token-by-token decoding would: its own key/value at
// full precision and every earlier one from the 4-bit cache.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "wkv/engine.h"

namespace wkv {

struct PerplexityOptions {
  int ctx = 0;          // window length including BOS; 0 = the model's max_context
  int max_windows = 0;  // 0 = all
  // Called after each window; return false to cancel (throws Error(cancelled)).
  std::function<bool(int done, int total, double running_ppl)> progress;
};

struct PerplexityResult {
  int ctx = 0;
  int n_windows = 0;          // evaluated
  int n_windows_total = 0;    // available in the text
  int64_t n_tokens = 0;       // tokens in the whole text
  int64_t n_predictions = 0;  // n_windows × (ctx − 1)
  double mean_nll = 0;
  double ppl = 0;
  double seconds = 0;
  std::vector<double> window_mean_nll;
};

PerplexityResult evaluate_perplexity(std::shared_ptr<const Model> model, const std::string& text,
                                     const PerplexityOptions& options = {});

// Mean next-token NLL of `targets` given logits rows ([n][vocab], row i predicts targets[i]).
double mean_nll(const float* logits, int n, int vocab, const TokenId* targets);

}  // namespace wkv
