// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty. Seeded and
// reproducible: the same logits, settings, history and seed always give the same token.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "wkv/tokenizer.h"

namespace wkv {

struct SamplingParams {
  float temperature = 0.8f;         // <= 0 means greedy (argmax; ties → lowest id)
  int top_k = 40;                   // <= 0 disables
  float top_p = 0.95f;              // >= 1 disables
  float min_p = 0.05f;              // <= 0 disables; keeps p >= min_p * p_max
  float repetition_penalty = 1.0f;  // 1 disables; applied to the last `repetition_window` tokens
  int repetition_window = 64;
  uint64_t seed = 0;                // 0 = pick a random seed (reported back by Sampler::seed())

  static SamplingParams greedy() {
    SamplingParams p;
    p.temperature = 0.0f;
    return p;
  }
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks the next token from `logits` (size = vocab). `history` is the context so far (for the
  // repetition penalty). Does not modify `logits`.
  TokenId sample(std::span<const float> logits, std::span<const TokenId> history);
  // The probability distribution sample() draws from after every transform (for tests / UI):
  // sorted by descending probability, only the kept tokens, probabilities summing to 1.
  std::vector<std::pair<TokenId, float>> distribution(std::span<const float> logits,
                                                      std::span<const TokenId> history) const;
  // Device-side top-k (wkv_kernels/top_k.h): true when sample() keeps exactly the top_k best tokens of a
  // vocabulary of `vocab`, ranked (penalized logit descending, id ascending) — then the draw needs only them.
  bool top_k_on_candidates(size_t vocab) const;
  // Those candidates as (id, penalized logit), best first: the specification a device selection must meet.
  // Throws unless top_k_on_candidates(logits.size()).
  std::vector<std::pair<TokenId, float>> top_k_reference(std::span<const float> logits,
                                                         std::span<const TokenId> history) const;
  // sample() from the top_k candidates alone (ids and penalized logits, best first, as top_k_reference gives
  // them): the same token as sample() on the full logits with the same seed, consuming the same one draw.
  TokenId sample_top_k(std::span<const TokenId> ids, std::span<const float> logits);
  uint64_t seed() const { return seed_; }
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  uint64_t seed_;
  std::mt19937_64 rng_;
};

}  // namespace wkv
