// Sampler tests. Expected distributions are derived by hand: most tests use logits = log(weight), so
// softmax at temperature 1 gives weight / sum(weights) and temperature T gives weight^(1/T) / sum.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "wkv/error.h"
#include "wkv/sampling.h"

namespace wkv {
namespace {

using Dist = std::vector<std::pair<TokenId, float>>;
const std::vector<TokenId> kNoHistory;

// No filtering at all: plain softmax(logit / T).
SamplingParams plain(float temperature = 1.0f, uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.repetition_penalty = 1.0f;
  p.seed = seed;
  return p;
}

std::vector<float> log_weights(const std::vector<double>& w) {
  std::vector<float> l;
  for (double x : w) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

// Checks ids in order and probabilities within `tol`.
void expect_dist(const Dist& got, const std::vector<std::pair<TokenId, double>>& want, double tol = 2e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first) << "entry " << i;
    EXPECT_NEAR(got[i].second, want[i].second, tol) << "entry " << i << " (token " << want[i].first << ")";
  }
}

std::vector<float> random_logits(size_t n, uint64_t seed, float scale = 4.0f) {
  std::mt19937_64 g(seed);
  std::vector<float> l(n);
  // Reproducible values without <random> distributions: 24 random bits mapped to [-scale, scale).
  for (float& x : l) x = (static_cast<float>(g() >> 40) / 16777216.0f * 2.0f - 1.0f) * scale;
  return l;
}

// ---- greedy ------------------------------------------------------------------------------------

TEST(SamplerGreedy, ArgmaxWithTiesToLowestId) {
  Sampler s(SamplingParams::greedy());
  const std::vector<float> l = {1.0f, 3.0f, -2.0f, 3.0f, 2.5f};
  EXPECT_EQ(s.sample(l, kNoHistory), 1);
  expect_dist(s.distribution(l, kNoHistory), {{1, 1.0}});

  const std::vector<float> all_equal(7, 0.25f);
  EXPECT_EQ(s.sample(all_equal, kNoHistory), 0);

  const std::vector<float> with_neg_inf = {-std::numeric_limits<float>::infinity(), -5.0f, -7.0f};
  EXPECT_EQ(s.sample(with_neg_inf, kNoHistory), 1);
}

TEST(SamplerGreedy, NegativeTemperatureIsGreedyAndIgnoresFilters) {
  SamplingParams p = plain(-1.0f);
  p.top_k = 3;
  p.top_p = 0.1f;
  p.min_p = 0.9f;
  Sampler s(p);
  std::vector<float> l = random_logits(32000, 7);
  l[12345] = 100.0f;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(l, kNoHistory), 12345);
}

TEST(SamplerGreedy, TopK1EqualsGreedy) {
  SamplingParams p = plain(0.7f, 99);
  p.top_k = 1;
  Sampler s(p);
  Sampler g(SamplingParams::greedy());
  for (uint64_t r = 0; r < 50; ++r) {
    std::vector<float> l = random_logits(32000, 1000 + r);
    // Plant a tie for the maximum so the lowest-id rule is exercised too.
    const auto mx = std::max_element(l.begin(), l.end());
    l[(mx - l.begin() + 777) % l.size()] = *mx;
    size_t expected = 0;
    for (size_t i = 1; i < l.size(); ++i)
      if (l[i] > l[expected]) expected = i;
    EXPECT_EQ(s.sample(l, kNoHistory), static_cast<TokenId>(expected));
    EXPECT_EQ(g.sample(l, kNoHistory), static_cast<TokenId>(expected));
    expect_dist(s.distribution(l, kNoHistory), {{static_cast<TokenId>(expected), 1.0}});
  }
}

// ---- reproducibility ---------------------------------------------------------------------------

TEST(SamplerSeed, SameSeedSameSequenceDifferentSeedsDiffer) {
  const std::vector<float> l = random_logits(64, 5, 1.0f);  // flat-ish: many plausible tokens
  auto run = [&](uint64_t seed) {
    Sampler s(plain(1.0f, seed));
    EXPECT_EQ(s.seed(), seed);
    std::vector<TokenId> out;
    for (int i = 0; i < 1000; ++i) out.push_back(s.sample(l, kNoHistory));
    return out;
  };
  const auto a = run(42), b = run(42), c = run(43);
  EXPECT_EQ(a, b);
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != c[i];
  EXPECT_GT(differ, 500u);  // independent streams over ~64 tokens agree only ~1/40 of the time
}

TEST(SamplerSeed, ZeroSeedPicksAReportedReproducibleSeed) {
  const std::vector<float> l = random_logits(64, 6, 1.0f);
  Sampler a(plain(1.0f, 0));
  ASSERT_NE(a.seed(), 0u);
  Sampler b(plain(1.0f, a.seed()));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(a.sample(l, kNoHistory), b.sample(l, kNoHistory));
}

TEST(SamplerSeed, DrawIsTheTop53BitsOfMt19937_64) {
  // Documented draw: u = (x >> 11) * 2^-53 with x the next mt19937_64 output, walked through the
  // cumulative distribution. With two equally likely tokens, token 0 owns [0, 0.5).
  std::mt19937_64 ref(1234);
  Sampler s(plain(1.0f, 1234));
  const std::vector<float> l = {0.0f, 0.0f};
  for (int i = 0; i < 64; ++i) {
    const double u = static_cast<double>(ref() >> 11) * 0x1.0p-53;
    EXPECT_EQ(s.sample(l, kNoHistory), u < 0.5 ? 0 : 1) << "draw " << i;
  }
  // The standard fixes the 10000th output of a default-seeded mt19937_64, so the stream is portable.
  std::mt19937_64 std_check;
  std_check.discard(9999);
  EXPECT_EQ(std_check(), 9981545732273789042ull);
}

// ---- temperature / top-k / top-p / min-p ---------------------------------------------------------

TEST(SamplerDistribution, TemperatureSoftmax) {
  const std::vector<float> l = log_weights({4, 3, 2, 1});
  expect_dist(Sampler(plain(1.0f)).distribution(l, kNoHistory), {{0, 0.4}, {1, 0.3}, {2, 0.2}, {3, 0.1}});
  // T = 0.5 squares the weights: 16, 9, 4, 1 over 30.
  expect_dist(Sampler(plain(0.5f)).distribution(l, kNoHistory),
              {{0, 16.0 / 30}, {1, 9.0 / 30}, {2, 4.0 / 30}, {3, 1.0 / 30}});
  // T = 2 takes square roots: 2, sqrt3, sqrt2, 1.
  const double s = 2 + std::sqrt(3.0) + std::sqrt(2.0) + 1;
  expect_dist(Sampler(plain(2.0f)).distribution(l, kNoHistory),
              {{0, 2 / s}, {1, std::sqrt(3.0) / s}, {2, std::sqrt(2.0) / s}, {3, 1 / s}});
  // Output is sorted by probability, whatever the id order; -inf tokens are never kept.
  const std::vector<float> shuffled = {static_cast<float>(std::log(1.0)),
                                       -std::numeric_limits<float>::infinity(),
                                       static_cast<float>(std::log(3.0)), static_cast<float>(std::log(4.0))};
  expect_dist(Sampler(plain(1.0f)).distribution(shuffled, kNoHistory), {{3, 0.5}, {2, 0.375}, {0, 0.125}});
}

TEST(SamplerDistribution, TopK) {
  SamplingParams p = plain(1.0f);
  p.top_k = 2;
  expect_dist(Sampler(p).distribution(log_weights({3, 1, 4, 2}), kNoHistory), {{2, 4.0 / 7}, {0, 3.0 / 7}});
  // Ties at the cut are resolved toward the lowest id.
  expect_dist(Sampler(p).distribution(std::vector<float>{1.0f, 2.0f, 2.0f, 2.0f}, kNoHistory),
              {{1, 0.5}, {2, 0.5}});
  // top_k >= vocab keeps everything.
  p.top_k = 10;
  expect_dist(Sampler(p).distribution(log_weights({1, 3}), kNoHistory), {{1, 0.75}, {0, 0.25}});
}

TEST(SamplerDistribution, TopPExactBoundaries) {
  SamplingParams p = plain(1.0f);
  const std::vector<float> uniform(4, 0.0f);  // p = 0.25 exactly each
  p.top_p = 0.5f;                             // 0.25 + 0.25 reaches 0.5 exactly: keep two
  expect_dist(Sampler(p).distribution(uniform, kNoHistory), {{0, 0.5}, {1, 0.5}});
  p.top_p = std::nextafter(0.5f, 1.0f);  // just above: a third token is needed
  expect_dist(Sampler(p).distribution(uniform, kNoHistory), {{0, 1.0 / 3}, {1, 1.0 / 3}, {2, 1.0 / 3}});
  p.top_p = 0.25f;
  expect_dist(Sampler(p).distribution(uniform, kNoHistory), {{0, 1.0}});
  p.top_p = 0.01f;  // always keep at least one
  expect_dist(Sampler(p).distribution(uniform, kNoHistory), {{0, 1.0}});

  // Weights 0.4 0.3 0.2 0.1: cumulative 0.4 0.7 0.9 1.0.
  const std::vector<float> l = log_weights({0.1, 0.4, 0.2, 0.3});
  p.top_p = 0.35f;
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{1, 1.0}});
  p.top_p = 0.6f;
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{1, 4.0 / 7}, {3, 3.0 / 7}});
  p.top_p = 0.8f;
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{1, 4.0 / 9}, {3, 3.0 / 9}, {2, 2.0 / 9}});
  p.top_p = 0.95f;
  EXPECT_EQ(Sampler(p).distribution(l, kNoHistory).size(), 4u);

  // The floats just below / above the cumulative probability of the first two tokens, computed
  // here from the actual float logits: keeps exactly 2 / exactly 3.
  double w[4], z = 0;
  for (int i = 0; i < 4; ++i) z += w[i] = std::exp(static_cast<double>(l[i]) - static_cast<double>(l[1]));
  const double cum2 = (w[1] + w[3]) / z;
  const float below = std::nextafter(static_cast<float>(cum2), 0.0f);
  const float above = std::nextafter(static_cast<float>(cum2), 1.0f);
  ASSERT_LT(below, cum2 - 1e-12);
  ASSERT_GT(above, cum2 + 1e-12);
  p.top_p = below;
  EXPECT_EQ(Sampler(p).distribution(l, kNoHistory).size(), 2u);
  p.top_p = above;
  EXPECT_EQ(Sampler(p).distribution(l, kNoHistory).size(), 3u);
}

TEST(SamplerDistribution, TopPIsNormalizedOverTheTopKSet) {
  const std::vector<float> l = log_weights({5, 4, 3, 2, 1});
  SamplingParams p = plain(1.0f);
  p.top_p = 0.5f;  // over all five: 5/15 < 0.5 <= 9/15 → two tokens
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{0, 5.0 / 9}, {1, 4.0 / 9}});
  p.top_k = 2;  // over the top two: 5/9 >= 0.5 → one token
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{0, 1.0}});
  p.top_k = 4;  // 5 4 3 2 over 14; top_p 0.6: 5/14 < 0.6 <= 9/14
  p.top_p = 0.6f;
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{0, 5.0 / 9}, {1, 4.0 / 9}});
  p.min_p = 0.9f;  // 4/5 < 0.9: only the best
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{0, 1.0}});
}

TEST(SamplerDistribution, MinP) {
  const std::vector<float> l = log_weights({4, 3, 2, 1});  // p / p_max = 1, 0.75, 0.5, 0.25
  SamplingParams p = plain(1.0f);
  p.min_p = 0.6f;
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{0, 4.0 / 7}, {1, 3.0 / 7}});
  p.min_p = 0.3f;
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{0, 4.0 / 9}, {1, 3.0 / 9}, {2, 2.0 / 9}});
  p.min_p = 1.0f;  // only tokens tied with the maximum survive
  expect_dist(Sampler(p).distribution(std::vector<float>{1.0f, 0.5f, 1.0f}, kNoHistory),
              {{0, 0.5}, {2, 0.5}});
  // With temperature 0.5 the ratios square: 1, 0.5625, 0.25, 0.0625; min_p 0.2 keeps three.
  p = plain(0.5f);
  p.min_p = 0.2f;
  expect_dist(Sampler(p).distribution(l, kNoHistory), {{0, 16.0 / 29}, {1, 9.0 / 29}, {2, 4.0 / 29}});

  // Exact boundary from the actual float logits: ratio of token 2 to the best.
  p = plain(1.0f);
  const double ratio = std::exp(static_cast<double>(l[2]) - static_cast<double>(l[0]));
  const float below = std::nextafter(static_cast<float>(ratio), 0.0f);
  const float above = std::nextafter(static_cast<float>(ratio), 1.0f);
  ASSERT_LT(below, ratio - 1e-12);
  ASSERT_GT(above, ratio + 1e-12);
  p.min_p = below;
  EXPECT_EQ(Sampler(p).distribution(l, kNoHistory).size(), 3u);
  p.min_p = above;
  EXPECT_EQ(Sampler(p).distribution(l, kNoHistory).size(), 2u);
}

// Straightforward reference of the documented chain (no penalty): full sort by (logit desc, id asc),
// cut to top_k, softmax(logit / T) in double, smallest prefix reaching top_p, keep w >= min_p * w_max.
std::vector<std::pair<TokenId, double>> naive_chain(const std::vector<float>& l, const SamplingParams& p) {
  std::vector<TokenId> order(l.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](TokenId a, TokenId b) { return l[a] != l[b] ? l[a] > l[b] : a < b; });
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < order.size()) order.resize(p.top_k);
  const double mx = l[order[0]];
  std::vector<double> w;
  double z = 0;
  for (TokenId id : order) {
    w.push_back(std::exp((l[id] - mx) / p.temperature));
    z += w.back();
  }
  size_t n = order.size();
  if (p.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      cum += w[i] / z;
      if (cum >= p.top_p) {
        n = i + 1;
        break;
      }
    }
  }
  std::vector<std::pair<TokenId, double>> out;
  double kept = 0;
  for (size_t i = 0; i < n; ++i) {
    if (w[i] == 0.0 || w[i] < p.min_p) break;
    out.emplace_back(order[i], w[i]);
    kept += w[i];
  }
  for (auto& e : out) e.second /= kept;
  return out;
}

TEST(SamplerDistribution, LargeVocabMatchesNaiveReference) {
  // A narrow logit range makes the nucleus span thousands of tokens: without top-k that exercises the
  // incremental sort over several chunks; top_k 500 / 5000 exercise the heap and nth_element paths.
  const std::vector<float> l = random_logits(128000, 11, 0.5f);
  struct Case {
    int top_k;
    float top_p, min_p;
    size_t min_size;
  };
  for (const Case& c : {Case{0, 0.3f, 0.0f, 1000}, Case{500, 0.9f, 0.0f, 400}, Case{5000, 0.8f, 0.0f, 3000},
                        Case{5000, 1.0f, 0.5f, 2000}, Case{0, 1.0f, 0.9f, 1000}}) {
    SamplingParams p = plain(0.9f);
    p.top_k = c.top_k, p.top_p = c.top_p, p.min_p = c.min_p;
    const Dist got = Sampler(p).distribution(l, kNoHistory);
    const auto want = naive_chain(l, p);
    SCOPED_TRACE(testing::Message() << "top_k " << c.top_k << " top_p " << c.top_p << " min_p " << c.min_p);
    ASSERT_GT(want.size(), c.min_size);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_EQ(got[i].first, want[i].first) << i;
      ASSERT_NEAR(got[i].second, want[i].second, 1e-9) << i;
    }
  }
}

// ---- repetition penalty ------------------------------------------------------------------------

TEST(SamplerPenalty, CtrlStylePenaltyByHand) {
  const std::vector<float> l = {2.0f, -1.0f, 0.5f, 1.5f};
  SamplingParams p = plain(1.0f);
  p.repetition_penalty = 2.0f;
  const std::vector<TokenId> history = {0, 0, 1};
  // Penalized: 2 / 2 = 1 (once, although seen twice), -1 * 2 = -2, others unchanged.
  const double e[4] = {std::exp(1.0), std::exp(-2.0), std::exp(0.5), std::exp(1.5)};
  const double z = e[0] + e[1] + e[2] + e[3];
  expect_dist(Sampler(p).distribution(l, history),
              {{3, e[3] / z}, {0, e[0] / z}, {2, e[2] / z}, {1, e[1] / z}});

  SamplingParams g = SamplingParams::greedy();
  g.repetition_penalty = 2.0f;
  EXPECT_EQ(Sampler(g).sample(l, kNoHistory), 0);
  EXPECT_EQ(Sampler(g).sample(l, history), 3);  // 1.5 beats the penalized 1.0

  // Each distinct token once: three occurrences of token 0 give 2/2 = 1 > 0.9, not 2/8 = 0.25.
  const std::vector<float> l2 = {2.0f, 0.0f, 0.0f, 0.9f};
  EXPECT_EQ(Sampler(g).sample(l2, std::vector<TokenId>{0, 0, 0}), 0);

  // Only the last `repetition_window` tokens count.
  g.repetition_window = 2;
  EXPECT_EQ(Sampler(g).sample(l, std::vector<TokenId>{0, 3, 3}), 0);  // 0 is outside the window
  EXPECT_EQ(Sampler(g).sample(l, std::vector<TokenId>{3, 0, 0}), 3);  // only 0 is in the window
  g.repetition_window = 0;
  EXPECT_EQ(Sampler(g).sample(l, history), 0);

  // A penalty below 1 rewards repetition: 0.5 * 2 = ... positive logits are divided (1.5 / 0.5 = 3).
  SamplingParams r = SamplingParams::greedy();
  r.repetition_penalty = 0.5f;
  EXPECT_EQ(Sampler(r).sample(l, std::vector<TokenId>{3}), 3);
}

// ---- empirical frequencies -------------------------------------------------------------------------

// Pearson chi-square of `n` draws against distribution(); returns the statistic and the degrees of freedom.
std::pair<double, int> chi_square(Sampler& s, const std::vector<float>& l,
                                  const std::vector<TokenId>& history, int n) {
  const Dist d = s.distribution(l, history);
  std::map<TokenId, int> counts;
  for (int i = 0; i < n; ++i) ++counts[s.sample(l, history)];
  double chi = 0;
  for (const auto& [id, prob] : d) {
    const double expected = prob * n;
    const double diff = counts[id] - expected;
    chi += diff * diff / expected;
    counts.erase(id);
  }
  EXPECT_TRUE(counts.empty()) << "sample() returned a token outside distribution()";
  return {chi, static_cast<int>(d.size()) - 1};
}

TEST(SamplerEmpirical, FrequenciesMatchDistribution) {
  // Critical values of chi-square at p = 0.001 (tables): df 5 → 20.52, df 3 → 16.27.
  {
    Sampler s(plain(1.0f, 2024));
    const auto [chi, df] = chi_square(s, log_weights({0.3, 0.25, 0.2, 0.15, 0.07, 0.03}), kNoHistory, 20000);
    ASSERT_EQ(df, 5);
    EXPECT_LT(chi, 20.52);
  }
  {
    // Full chain on a vocabulary larger than top_k: penalty, top-k, temperature, top-p, min-p.
    SamplingParams p;
    p.seed = 77;
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.6f;
    p.min_p = 0.05f;
    p.repetition_penalty = 1.3f;
    std::vector<float> l = random_logits(4096, 3, 1.0f);
    l[10] = 4.0f, l[20] = 3.8f, l[30] = 3.5f, l[40] = 3.3f, l[50] = 3.0f;
    Sampler s(p);
    const std::vector<TokenId> history = {10, 99, 10};
    const Dist d = s.distribution(l, history);
    // After the penalty (10: 4 / 1.3) the best is 20 at 3.8; the ~1.0 logits fall to min-p
    // (exp(-2.8 / 0.8) < 0.05) and top-p 0.6 stops after 20, 30, 40, 10 (cumulative ~0.55 → ~0.66).
    ASSERT_EQ(d.size(), 4u);
    const auto [chi, df] = chi_square(s, l, history, 20000);
    EXPECT_LT(chi, 16.27) << "df " << df;
  }
}

// ---- invalid input -----------------------------------------------------------------------------

void expect_invalid(const SamplingParams& p, const std::string& field) {
  try {
    Sampler s(p);
    ADD_FAILURE() << "no error for bad " << field;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(SamplerInvalid, ParamsNameTheField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto with = [](auto set) {
    SamplingParams p;
    set(p);
    return p;
  };
  expect_invalid(with([](SamplingParams& p) { p.top_p = 0.0f; }), "top_p");
  expect_invalid(with([](SamplingParams& p) { p.top_p = -0.5f; }), "top_p");
  expect_invalid(with([](SamplingParams& p) { p.top_p = 1.5f; }), "top_p");
  expect_invalid(with([&](SamplingParams& p) { p.top_p = nan; }), "top_p");
  expect_invalid(with([](SamplingParams& p) { p.repetition_penalty = 0.0f; }), "repetition_penalty");
  expect_invalid(with([](SamplingParams& p) { p.repetition_penalty = -1.0f; }), "repetition_penalty");
  expect_invalid(with([&](SamplingParams& p) { p.repetition_penalty = nan; }), "repetition_penalty");
  expect_invalid(with([&](SamplingParams& p) { p.repetition_penalty = inf; }), "repetition_penalty");
  expect_invalid(with([&](SamplingParams& p) { p.temperature = nan; }), "temperature");
  expect_invalid(with([&](SamplingParams& p) { p.temperature = inf; }), "temperature");
  expect_invalid(with([&](SamplingParams& p) { p.min_p = nan; }), "min_p");
  expect_invalid(with([](SamplingParams& p) { p.min_p = 1.5f; }), "min_p");
  expect_invalid(with([](SamplingParams& p) { p.repetition_window = -1; }), "repetition_window");
  // Documented "disabled" values are accepted.
  EXPECT_NO_THROW(Sampler(with([](SamplingParams& p) { p.top_k = -1, p.min_p = -1.0f, p.top_p = 1.0f; })));
}

TEST(SamplerInvalid, BadLogitsAndHistory) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  Sampler s(plain(1.0f));
  Sampler g(SamplingParams::greedy());
  auto expect_bad = [&](Sampler& x, const std::vector<float>& l, const std::vector<TokenId>& h,
                        const char* what) {
    try {
      x.sample(l, h);
      ADD_FAILURE() << "sample(): no error for " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    EXPECT_THROW(x.distribution(l, h), Error) << what;
  };
  for (Sampler* x : {&s, &g}) {
    expect_bad(*x, {1.0f, nan, 2.0f}, {}, "NaN");
    expect_bad(*x, {1.0f, inf}, {}, "+inf");
    expect_bad(*x, {-inf, -inf}, {}, "-inf");
    expect_bad(*x, {}, {}, "empty");
  }
  SamplingParams pen = plain(1.0f);
  pen.repetition_penalty = 1.2f;
  Sampler sp(pen);
  expect_bad(sp, {1.0f, 2.0f}, {0, 5}, "history");
  expect_bad(sp, {1.0f, 2.0f}, {-1}, "history");
}

// Device-side top-k: sampling from the top_k candidates alone (as a GPU selection returns them) gives the
// token sample() gives on the full logits, draw for draw, with ties, -inf logits, the penalty and every filter.
TEST(SamplerTopKCandidates, SameTokensAsFullLogits) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<int> level(-40, 40);
  for (int round = 0; round < 24; ++round) {
    const int vocab = 300 + round * 97;
    std::vector<float> logits(vocab);
    for (float& v : logits) v = level(gen) * 0.125f;  // coarse levels: many ties
    for (int i = 0; i < vocab; i += 17) logits[i] = -std::numeric_limits<float>::infinity();
    std::vector<TokenId> history;
    for (int i = 0; i < 80; ++i) history.push_back(TokenId(gen() % vocab));
    SamplingParams p;
    p.temperature = 0.4f + 0.1f * (round % 8);
    p.top_k = 1 + (round * 13) % 128;
    p.top_p = round % 3 == 0 ? 1.0f : 0.9f;
    p.min_p = round % 4 == 0 ? 0.0f : 0.05f;
    p.repetition_penalty = round % 2 ? 1.3f : 1.0f;
    p.seed = 100 + round;
    Sampler full(p), cand(p);
    ASSERT_TRUE(full.top_k_on_candidates(logits.size()));
    for (int draw = 0; draw < 50; ++draw) {
      const Dist top = full.top_k_reference(logits, history);
      ASSERT_EQ(top.size(), size_t(p.top_k));
      std::vector<TokenId> ids;
      std::vector<float> vals;
      for (const auto& [id, v] : top) ids.push_back(id), vals.push_back(v);
      EXPECT_EQ(cand.sample_top_k(ids, vals), full.sample(logits, history)) << "round " << round << " draw " << draw;
    }
  }
}

TEST(SamplerTopKCandidates, RefusesWhatIsNotATopKSet) {
  SamplingParams p;
  p.top_k = 2;
  p.seed = 1;
  Sampler s(p);
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f};
  EXPECT_FALSE(s.top_k_on_candidates(2));  // top_k must be below the vocabulary
  EXPECT_TRUE(s.top_k_on_candidates(3));
  EXPECT_EQ(s.top_k_reference(logits, kNoHistory), (Dist{{2, 2.0f}, {1, 1.0f}}));
  const std::vector<TokenId> ids = {2, 1}, one = {2};
  EXPECT_THROW(s.sample_top_k(one, std::vector<float>{2.0f}), Error);                       // not top_k of them
  EXPECT_THROW(s.sample_top_k(std::vector<TokenId>{1, 2}, std::vector<float>{1.0f, 2.0f}), Error);  // order
  EXPECT_THROW(s.sample_top_k(ids, std::vector<float>{std::nanf(""), 1.0f}), Error);
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_THROW(s.sample_top_k(ids, std::vector<float>{ninf, ninf}), Error);
  const TokenId got = s.sample_top_k(ids, std::vector<float>{2.0f, 1.0f});
  EXPECT_TRUE(got == 1 || got == 2);
  Sampler greedy(SamplingParams::greedy());
  EXPECT_FALSE(greedy.top_k_on_candidates(3));
  EXPECT_THROW(greedy.top_k_reference(logits, kNoHistory), Error);
}

}  // namespace
}  // namespace wkv
