// Token sampler. The chain, in order (as in llama.cpp's common sampler):
//   repetition penalty → [temperature <= 0: argmax, done] → top-k → softmax(logit / T) → top-p
//   → min-p → renormalize → one seeded draw.
//
// Candidates are ranked by (penalized logit descending, token id ascending), a strict total order
// (NaN logits are rejected), so ties always go to the lowest id and no result depends on how a sort
// or selection permutes equal elements. Probabilities are non-increasing along that ranking, so top-p
// and min-p both keep a prefix of it: min-p is applied as a plain filter (it only compares each weight
// with the maximum, which top-p always keeps), and nothing is fully sorted on the sampling path —
// top-k is a bounded-heap or nth_element selection, top-p without top-k a mass-weighted selection.
//
// Reproducibility: std::mt19937_64's output sequence is fixed by the standard, and the 64-bit output
// is turned into a double in [0, 1) here (53 high bits), not with std::uniform_real_distribution whose
// algorithm is implementation-defined. Exactly one 64-bit draw is consumed per non-greedy sample(),
// and the draw is mapped through the kept tokens in a canonical order (see Kept). What remains
// platform-dependent is std::exp's last bit and, for top-p without top-k, the summation order of the
// cumulative mass — both only matter when a cut lands within ~1e-15 of a threshold.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include "wkv/error.h"
#include "wkv/sampling.h"

namespace wkv {

namespace {

// Above this top_k, selection uses nth_element over all candidates instead of a bounded heap.
constexpr size_t kHeapTopK = 1024;

struct Candidate {
  TokenId id;
  float logit;  // after the repetition penalty
  double w;     // exp((logit - max_logit) / T): 1 for the best token, p = w / Z
};

// Strict total order on candidates: higher logit first, then lower id.
bool before(const Candidate& a, const Candidate& b) {
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.id < b.id;
}

std::string fmt(double v) {
  if (std::isnan(v)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

[[noreturn]] void invalid(const std::string& msg) { throw Error(ErrorCode::invalid_argument, msg); }

void validate(const SamplingParams& p) {
  if (!std::isfinite(p.temperature))
    invalid("sampling: temperature must be finite (<= 0 means greedy), got " + fmt(p.temperature));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    invalid("sampling: top_p must be in (0, 1] (1 disables), got " + fmt(p.top_p));
  if (!(p.min_p <= 1.0f))  // also rejects NaN; <= 0 disables
    invalid("sampling: min_p must be <= 1 (<= 0 disables), got " + fmt(p.min_p));
  if (!(std::isfinite(p.repetition_penalty) && p.repetition_penalty > 0.0f))
    invalid("sampling: repetition_penalty must be finite and > 0 (1 disables), got " +
            fmt(p.repetition_penalty));
  if (p.repetition_window < 0)
    invalid("sampling: repetition_window must be >= 0, got " + std::to_string(p.repetition_window));
}

uint64_t random_seed() {
  std::random_device rd;
  uint64_t s = 0;
  // Never report 0: passing the reported seed back must reproduce the run, and 0 means "random".
  while (s == 0) s = (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
  return s;
}

// The logits after the repetition penalty, without copying the vocabulary: the caller's array plus
// the few penalized entries, sorted by id.
struct Penalized {
  std::span<const float> base;
  std::vector<std::pair<TokenId, float>> overrides;

  // Calls f(id, logit) for every token in id order.
  template <class F>
  void for_each(F&& f) const {
    size_t j = 0;
    for (size_t i = 0; i < base.size(); ++i) {
      float v = base[i];
      if (j < overrides.size() && static_cast<size_t>(overrides[j].first) == i) v = overrides[j++].second;
      f(static_cast<TokenId>(i), v);
    }
  }
};

// Checks the logits and history, and computes the repetition penalty.
Penalized penalize(const SamplingParams& params, std::span<const float> logits,
                   std::span<const TokenId> history) {
  if (logits.empty()) invalid("sampling: logits are empty (expected one value per vocabulary entry)");
  if (logits.size() > static_cast<size_t>(std::numeric_limits<TokenId>::max()))
    invalid("sampling: vocabulary of " + std::to_string(logits.size()) + " logits is too large");
  bool bad = false, any_finite = false;
  for (float v : logits) {  // branch-free scan; the slow path below finds the culprit
    bad |= std::isnan(v) || v == std::numeric_limits<float>::infinity();
    any_finite |= std::isfinite(v);
  }
  if (bad) {
    for (size_t i = 0; i < logits.size(); ++i) {
      if (std::isnan(logits[i])) invalid("sampling: logits[" + std::to_string(i) + "] is NaN");
      if (logits[i] > 0 && std::isinf(logits[i]))
        invalid("sampling: logits[" + std::to_string(i) + "] is +inf (expected finite or -inf)");
    }
  }
  if (!any_finite) invalid("sampling: every logit is -inf (no token can be chosen)");

  Penalized out{logits, {}};
  const size_t window = std::min(history.size(), static_cast<size_t>(params.repetition_window));
  if (params.repetition_penalty == 1.0f || window == 0) return out;
  // Each distinct token in the window is penalized once, however often it occurs.
  std::vector<TokenId> recent(history.end() - static_cast<std::ptrdiff_t>(window), history.end());
  std::sort(recent.begin(), recent.end());
  recent.erase(std::unique(recent.begin(), recent.end()), recent.end());
  const double penalty = params.repetition_penalty;
  for (TokenId t : recent) {
    if (t < 0 || static_cast<size_t>(t) >= logits.size())
      invalid("sampling: history token " + std::to_string(t) + " is outside the vocabulary of " +
              std::to_string(logits.size()));
    const double v = logits[t];
    if (!std::isfinite(v)) continue;  // -inf stays -inf
    // CTRL-style: shrink positive logits, push negative ones further down. Computed in double and
    // clamped so an extreme penalty cannot turn a finite logit into +inf.
    const double r = v > 0.0 ? v / penalty : v * penalty;
    out.overrides.emplace_back(t, static_cast<float>(std::clamp(r, -double{FLT_MAX}, double{FLT_MAX})));
  }
  return out;
}

TokenId argmax(const Penalized& l) {
  TokenId best = 0;
  float best_v = -std::numeric_limits<float>::infinity();
  bool first = true;
  l.for_each([&](TokenId id, float v) {
    if (first || v > best_v) best = id, best_v = v, first = false;  // strict: ties keep the lowest id
  });
  return best;
}

// The kept candidates with their unnormalized weights (p_i = w_i / total), in the canonical order
// sample() walks: best-first when top-k selected them, id order otherwise. Both orders are fully
// determined by the logits (never by an unspecified permutation such as nth_element's), so the same
// 64-bit draw maps to the same token on every standard library.
struct Kept {
  std::span<Candidate> items;  // into Scratch::cand
  double total = 0.0;
  bool sorted = false;
};

// Per-thread buffers reused across calls: at a 128k vocabulary the candidate arrays are megabytes,
// and allocating them fresh for every token costs more in page faults than the sampling itself.
struct Scratch {
  std::vector<Candidate> cand, sel;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// top-p on candidates in id order, without sorting them all: a selection on a scratch copy that
// halves the range holding the cut each round (O(n)), keeping the mass of everything before it.
// Returns the last kept candidate of the nucleus, or nullopt when round-off keeps everything.
std::optional<Candidate> nucleus_cut(const std::vector<Candidate>& c, double need,
                                     std::vector<Candidate>& s) {
  s.assign(c.begin(), c.end());
  size_t lo = 0, hi = s.size();
  double acc = 0.0;  // mass of s[0, lo), all of which are before every element of s[lo, hi)
  while (hi - lo > 64) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(s.begin() + lo, s.begin() + mid, s.begin() + hi, before);
    double m = 0.0;
    for (size_t i = lo; i < mid; ++i) m += s[i].w;
    if (acc + m >= need) {
      hi = mid;  // the cut is in s[lo, mid)
    } else {
      acc += m;
      lo = mid;
    }
  }
  std::sort(s.begin() + lo, s.begin() + hi, before);
  for (size_t i = lo; i < hi; ++i) {
    acc += s[i].w;
    if (acc >= need) return s[i];
  }
  return std::nullopt;
}

// The candidates top-k keeps (all tokens without top-k), into scratch.cand; true when they are sorted best
// first.
bool select_candidates(const SamplingParams& params, const Penalized& logits, Scratch& scratch) {
  const size_t vocab = logits.base.size();
  std::vector<Candidate>& c = scratch.cand;
  c.clear();
  bool sorted = false;
  const bool top_k = params.top_k > 0 && static_cast<size_t>(params.top_k) < vocab;
  const size_t n_keep = top_k ? static_cast<size_t>(params.top_k) : vocab;
  if (top_k && n_keep <= kHeapTopK) {
    // One pass with a bounded heap whose front is the worst kept candidate: most logits lose the
    // comparison with it and cost one compare, so this is ~O(V) without materializing V candidates.
    c.reserve(n_keep);
    logits.for_each([&](TokenId id, float v) {
      const Candidate x{id, v, 0.0};
      if (c.size() < n_keep) {
        c.push_back(x);
        std::push_heap(c.begin(), c.end(), before);
      } else if (before(x, c.front())) {
        std::pop_heap(c.begin(), c.end(), before);
        c.back() = x;
        std::push_heap(c.begin(), c.end(), before);
      }
    });
    std::sort_heap(c.begin(), c.end(), before);  // ascending in `before` = best first
    sorted = true;
  } else {
    c.reserve(vocab);
    logits.for_each([&](TokenId id, float v) { c.push_back({id, v, 0.0}); });
    if (top_k) {  // O(V) selection, then sort only the k survivors
      const auto kth = c.begin() + static_cast<std::ptrdiff_t>(n_keep);
      std::nth_element(c.begin(), kth, c.end(), before);
      c.erase(kth, c.end());
      std::sort(c.begin(), c.end(), before);
      sorted = true;
    }
  }
  return sorted;
}

// Everything after top-k, for temperature > 0, on the candidates in scratch.cand.
Kept finish_distribution(const SamplingParams& params, bool sorted, Scratch& scratch) {
  std::vector<Candidate>& c = scratch.cand;
  // Softmax with temperature, in double, shifted by the maximum so the best weight is exactly 1.
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const Candidate& x : c) max_logit = std::max(max_logit, x.logit);
  const double inv_t = 1.0 / static_cast<double>(params.temperature);
  double z = 0.0;
  for (Candidate& x : c) {
    x.w = std::exp((static_cast<double>(x.logit) - static_cast<double>(max_logit)) * inv_t);
    z += x.w;
  }

  // min-p: p >= min_p * p_max  <=>  w / z >= min_p * (1 / z)  <=>  w >= min_p. Candidates whose weight
  // underflowed to 0 can never be drawn and are dropped as well. Order is preserved.
  const double min_w = params.min_p > 0.0f ? static_cast<double>(params.min_p) : 0.0;
  std::erase_if(c, [&](const Candidate& x) { return x.w == 0.0 || x.w < min_w; });

  // top-p over probabilities normalized on the top-k set (z): the smallest best-first prefix whose
  // cumulative probability reaches top_p (compared as cumulative weight >= top_p * z). The prefix
  // property makes it commute with min-p above. Always keeps the best token.
  if (params.top_p < 1.0f) {
    const double need = static_cast<double>(params.top_p) * z;
    if (sorted) {
      double cum = 0.0;
      for (size_t i = 0; i < c.size(); ++i) {
        cum += c[i].w;
        if (cum >= need) {
          c.resize(i + 1);
          break;
        }
      }
    } else if (const auto cut = nucleus_cut(c, need, scratch.sel)) {
      std::erase_if(c, [&](const Candidate& x) { return before(*cut, x); });
    }
  }

  Kept k;
  for (const Candidate& x : c) k.total += x.w;
  k.items = c;
  k.sorted = sorted;
  return k;
}

// Everything after the penalty for temperature > 0.
Kept build_distribution(const SamplingParams& params, const Penalized& logits, Scratch& scratch) {
  return finish_distribution(params, select_candidates(params, logits, scratch), scratch);
}

// One draw through the kept tokens in their canonical order.
TokenId draw(const Kept& k, std::mt19937_64& rng) {
  // 53 random bits → a double uniform on [0, 1) with spacing 2^-53, exactly representable.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
  const double target = u * k.total;
  double cum = 0.0;
  for (const Candidate& x : k.items) {
    cum += x.w;  // same summation order as k.total, so the last cum equals k.total
    if (target < cum) return x.id;
  }
  return k.items.back().id;  // only if u * total rounded up to total
}

}  // namespace

Sampler::Sampler(const SamplingParams& params) : params_(params), seed_(params.seed) {
  validate(params_);
  if (seed_ == 0) seed_ = random_seed();
  rng_.seed(seed_);
}

TokenId Sampler::sample(std::span<const float> logits, std::span<const TokenId> history) {
  const Penalized pen = penalize(params_, logits, history);
  if (params_.temperature <= 0.0f) return argmax(pen);
  return draw(build_distribution(params_, pen, scratch()), rng_);
}

bool Sampler::top_k_on_candidates(size_t vocab) const {
  return params_.temperature > 0.0f && params_.top_k > 0 && static_cast<size_t>(params_.top_k) < vocab &&
         static_cast<size_t>(params_.top_k) <= kHeapTopK;
}

std::vector<std::pair<TokenId, float>> Sampler::top_k_reference(std::span<const float> logits,
                                                                std::span<const TokenId> history) const {
  if (!top_k_on_candidates(logits.size()))
    invalid("sampling: top_k_reference needs temperature > 0 and 0 < top_k < vocabulary, top_k <= " +
            std::to_string(kHeapTopK));
  Scratch& sc = scratch();
  select_candidates(params_, penalize(params_, logits, history), sc);
  std::vector<std::pair<TokenId, float>> out;
  out.reserve(sc.cand.size());
  for (const Candidate& x : sc.cand) out.emplace_back(x.id, x.logit);
  return out;
}

TokenId Sampler::sample_top_k(std::span<const TokenId> ids, std::span<const float> logits) {
  if (params_.temperature <= 0.0f || params_.top_k <= 0 || ids.size() != static_cast<size_t>(params_.top_k) ||
      logits.size() != ids.size())
    invalid("sampling: sample_top_k needs temperature > 0 and exactly top_k = " + std::to_string(params_.top_k) +
            " candidates, got " + std::to_string(ids.size()) + " ids and " + std::to_string(logits.size()) +
            " logits");
  Scratch& sc = scratch();
  sc.cand.clear();
  bool any_finite = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v) || v == std::numeric_limits<float>::infinity())
      invalid("sampling: candidate logit " + fmt(v) + " of token " + std::to_string(ids[i]) + " (expected finite or -inf)");
    if (i > 0 && !before(sc.cand.back(), Candidate{ids[i], v, 0.0}))
      invalid("sampling: candidates are not in ranking order at position " + std::to_string(i));
    any_finite |= std::isfinite(v);
    sc.cand.push_back({ids[i], v, 0.0});
  }
  if (!any_finite) invalid("sampling: every logit is -inf (no token can be chosen)");
  return draw(finish_distribution(params_, true, sc), rng_);
}

std::vector<std::pair<TokenId, float>> Sampler::distribution(std::span<const float> logits,
                                                             std::span<const TokenId> history) const {
  const Penalized pen = penalize(params_, logits, history);
  if (params_.temperature <= 0.0f) return {{argmax(pen), 1.0f}};
  Kept k = build_distribution(params_, pen, scratch());
  // Same set and the same total as sample(); only the presentation order is best-first here.
  if (!k.sorted) std::sort(k.items.begin(), k.items.end(), before);
  std::vector<std::pair<TokenId, float>> out;
  out.reserve(k.items.size());
  for (const Candidate& x : k.items) out.emplace_back(x.id, static_cast<float>(x.w / k.total));
  return out;
}

}  // namespace wkv
