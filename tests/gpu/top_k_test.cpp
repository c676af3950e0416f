// top_k_logits (wkv_kernels/top_k.h) against its specification, Sampler::top_k_reference: the same ids and
// the same penalized logits, bit for bit, in the same order — and so the same sampled token.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "wkv/sampling.h"
#include "wkv_kernels/top_k.h"

namespace {

using wkv::test::DeviceBuffer;
namespace wk = wkv::kernels;

struct Case {
  int vocab, k;
  float penalty;
  int window;   // history tokens under the penalty
  int levels;   // distinct logit values (few: many ties)
  int ninf_every;  // every n-th logit −inf (0: none)
};

void run_case(const Case& c, uint32_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " vocab " + std::to_string(c.vocab) + " k " + std::to_string(c.k) +
               " penalty " + std::to_string(c.penalty) + " levels " + std::to_string(c.levels));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> level(0, c.levels - 1);
  std::vector<float> logits(c.vocab);
  for (float& v : logits) v = (level(rng) - c.levels / 2) * 0.37f;
  if (c.ninf_every > 0)
    for (int i = 0; i < c.vocab; i += c.ninf_every) logits[i] = -std::numeric_limits<float>::infinity();
  std::vector<wkv::TokenId> history;
  for (int i = 0; i < c.window + 10; ++i) history.push_back(wkv::TokenId(rng() % c.vocab));

  wkv::SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = c.k;
  p.repetition_penalty = c.penalty;
  p.repetition_window = c.window;
  p.seed = seed | 1u;
  const wkv::Sampler sampler(p);
  const auto want = sampler.top_k_reference(logits, history);

  // The distinct ids of the window, as the sampler penalizes them.
  std::vector<int32_t> pen(history.end() - c.window, history.end());
  std::sort(pen.begin(), pen.end());
  pen.erase(std::unique(pen.begin(), pen.end()), pen.end());
  DeviceBuffer<float> d_logits(logits);
  DeviceBuffer<int32_t> d_pen(pen.empty() ? std::vector<int32_t>{0} : pen), ids(c.k), bad(1);
  DeviceBuffer<float> vals(c.k);
  ids.poison();
  vals.poison();
  const size_t ws_bytes = wk::top_k_workspace_bytes(c.vocab, c.k);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  wk::TopKArgs a;
  a.logits = d_logits.get();
  a.vocab = c.vocab;
  a.k = c.k;
  a.penalized = d_pen.get();
  a.n_penalized = c.penalty == 1.0f ? 0 : int(pen.size());
  a.penalty = c.penalty;
  a.out_ids = ids.get();
  a.out_vals = vals.get();
  a.out_bad = bad.get();
  wk::top_k_logits(a, ws.get(), ws_bytes);
  const auto got_ids = ids.download();
  const auto got_vals = vals.download();
  EXPECT_GE(bad.download()[0], c.vocab) << "no logit is NaN or +inf";
  ASSERT_EQ(want.size(), size_t(c.k));
  for (int i = 0; i < c.k; ++i) {
    EXPECT_EQ(got_ids[i], want[i].first) << "rank " << i;
    EXPECT_EQ(0, std::memcmp(&got_vals[i], &want[i].second, sizeof(float)))
        << "rank " << i << ": " << got_vals[i] << " vs " << want[i].second;
  }
}

TEST(GpuTopK, MatchesSamplerSelection) {
  WKV_REQUIRE_GPU();
  const uint32_t seed = wkv::test::fresh_seed();
  std::printf("seed %u\n", seed);
  const Case cases[] = {
      {129, 1, 1.0f, 0, 1000, 0},          // one slice, k = 1
      {4096, 40, 1.3f, 64, 50, 0},         // exactly one slice, many ties, penalty
      {4097, 40, 1.3f, 64, 7, 9},          // a second slice of one id, heavy ties, −inf
      {32000, 40, 1.1f, 64, 100000, 0},    // LLaMA-2 vocabulary, sampler defaults
      {32000, 128, 0.8f, 200, 11, 5},      // largest k, a penalty below 1, ties and −inf everywhere
      {128256, 7, 1.3f, 64, 1000, 0},      // LLaMA-3 vocabulary
      {262144, 128, 1.0f, 0, 3, 0},        // largest vocabulary: the merge holds 64 · 128 candidates
      {1000, 128, 1.3f, 64, 5, 2},         // half the logits −inf, fewer than k finite ones per slice
      {32000, 1, 1.3f, 64, 7, 9},          // greedy (k = 1, the block reduction): ties, penalty, −inf
      {128256, 1, 1.0f, 0, 3, 0},          // greedy over 32 slices of heavy ties: the lowest id wins
  };
  for (size_t i = 0; i < std::size(cases); ++i) run_case(cases[i], seed + uint32_t(i));
}

TEST(GpuTopK, ReportsTheFirstNaNOrInfinity) {
  WKV_REQUIRE_GPU();
  std::vector<float> logits(9000, 0.5f);
  logits[7000] = std::numeric_limits<float>::infinity();
  logits[5000] = std::nanf("");
  logits[8000] = std::nanf("");
  DeviceBuffer<float> d_logits(logits);
  DeviceBuffer<int32_t> ids(4), bad(1);
  DeviceBuffer<float> vals(4);
  const size_t ws_bytes = wk::top_k_workspace_bytes(9000, 4);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  wk::TopKArgs a;
  a.logits = d_logits.get();
  a.vocab = 9000;
  a.k = 4;
  a.out_ids = ids.get();
  a.out_vals = vals.get();
  a.out_bad = bad.get();
  wk::top_k_logits(a, ws.get(), ws_bytes);
  EXPECT_EQ(bad.download()[0], 5000);
  logits[5000] = logits[8000] = 0.5f;  // only the +inf left; the report is reset on every call
  d_logits.upload(logits);
  wk::top_k_logits(a, ws.get(), ws_bytes);
  EXPECT_EQ(bad.download()[0], 7000);
}

TEST(GpuTopK, RefusesBadArguments) {
  WKV_REQUIRE_GPU();
  DeviceBuffer<float> logits(100), vals(200);
  DeviceBuffer<int32_t> ids(200), bad(1);
  const size_t ws_bytes = wk::top_k_workspace_bytes(100, 128);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  wk::TopKArgs a;
  a.logits = logits.get();
  a.vocab = 100;
  a.k = 10;
  a.out_ids = ids.get();
  a.out_vals = vals.get();
  a.out_bad = bad.get();
  auto bad_k = a;
  bad_k.k = 0;
  EXPECT_THROW(wk::top_k_logits(bad_k, ws.get(), ws_bytes), std::invalid_argument);
  bad_k.k = 100;  // not below the vocabulary
  EXPECT_THROW(wk::top_k_logits(bad_k, ws.get(), ws_bytes), std::invalid_argument);
  bad_k.k = wk::kTopKMax + 1;
  EXPECT_THROW(wk::top_k_logits(bad_k, ws.get(), ws_bytes), std::invalid_argument);
  auto bad_pen = a;
  bad_pen.n_penalized = 3;  // ids missing
  EXPECT_THROW(wk::top_k_logits(bad_pen, ws.get(), ws_bytes), std::invalid_argument);
  bad_pen.n_penalized = 0;
  bad_pen.penalty = 0.0f;
  EXPECT_THROW(wk::top_k_logits(bad_pen, ws.get(), ws_bytes), std::invalid_argument);
  EXPECT_THROW(wk::top_k_logits(a, ws.get(), 4), std::invalid_argument);  // workspace too small
  EXPECT_NO_THROW(wk::top_k_logits(a, ws.get(), ws_bytes));
}

}  // namespace
