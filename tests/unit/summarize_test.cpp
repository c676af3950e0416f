// Summarization: planner properties over random documents (fixed seeds), prompt formats, and an
// end-to-end run with ref-a on the CPU (greedy) including cancellation.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "test_support.h"
#include "wkv/summarize.h"

namespace {

using namespace wkv;

const char* const kTok = "models/ref-a/tokenizer.model";

struct Doc {
  std::string text;
  std::vector<size_t> para_starts;  // byte offsets where paragraphs begin (0 included)
};

// Paragraphs of sentences of common words, separated by "\n\n" (some by "\n \n" with a space, which
// is still a blank line); some paragraphs have single line breaks inside, and with probability
// `p_huge` a paragraph is huge (hundreds of sentences), sometimes without any sentence punctuation.
Doc random_doc(std::mt19937& rng, int n_paras, double p_huge) {
  static const char* const kWords[] = {"the", "cat", "sat", "on", "a", "mat", "and", "looked", "at", "bright",
                                       "stars", "over", "quiet", "river", "while", "children", "played", "with",
                                       "red", "kites", "near", "old", "stone", "bridge", "every", "morning"};
  std::uniform_int_distribution<int> word(0, int(std::size(kWords)) - 1);
  std::uniform_real_distribution<double> u(0, 1);
  Doc d;
  for (int p = 0; p < n_paras; ++p) {
    if (p > 0) d.text += u(rng) < 0.2 ? "\n \n" : "\n\n";
    d.para_starts.push_back(d.text.size());
    const bool huge = u(rng) < p_huge;
    const bool no_punct = huge && u(rng) < 0.5;
    const int n_sent = huge ? 150 + int(u(rng) * 200) : 1 + int(u(rng) * 8);
    for (int s = 0; s < n_sent; ++s) {
      if (s > 0) d.text += u(rng) < 0.15 ? "\n" : " ";
      const int n_words = 3 + int(u(rng) * 12);
      for (int w = 0; w < n_words; ++w) {
        if (w > 0) d.text += ' ';
        d.text += kWords[word(rng)];
      }
      if (!no_punct) d.text += u(rng) < 0.8 ? "." : "?";
    }
  }
  return d;
}

int ntok(const Tokenizer& tok, const std::string& s) { return int(tok.encode(s, false).size()); }

void check_plan(const Tokenizer& tok, const Doc& d, const SummaryPlan& plan, int n_ctx, int overhead, int answer) {
  const std::string& t = d.text;
  ASSERT_FALSE(plan.steps.empty());
  for (const auto& s : plan.steps) {
    EXPECT_LE(s.prompt_tokens + s.answer_tokens, n_ctx);
    EXPECT_EQ(s.prompt_tokens, overhead + s.input_tokens);
  }
  if (plan.direct) {
    ASSERT_EQ(plan.steps.size(), 1u);
    EXPECT_EQ(plan.steps[0].end, t.size());
    EXPECT_LE(ntok(tok, t) + overhead + answer, n_ctx);
    return;
  }
  EXPECT_GT(ntok(tok, t), plan.chunk_budget);
  ASSERT_GE(plan.n_chunks, 2);
  std::vector<const SummaryStep*> chunks;
  for (int i = 0; i < plan.n_chunks; ++i) chunks.push_back(&plan.steps[size_t(i)]);
  // Coverage in order: new content tiles [0, size) without gaps.
  EXPECT_EQ(chunks.front()->begin, 0u);
  EXPECT_EQ(chunks.front()->new_begin, 0u);
  EXPECT_EQ(chunks.back()->end, t.size());
  int with_overlap = 0;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SummaryStep& c = *chunks[i];
    EXPECT_EQ(c.kind, SummaryStep::Kind::chunk);
    ASSERT_LT(c.new_begin, c.end);
    // The budget holds for the real text of the chunk, counted independently.
    const std::string body = t.substr(c.begin, c.end - c.begin);
    EXPECT_EQ(ntok(tok, body), c.input_tokens);
    EXPECT_LE(overhead + ntok(tok, body) + answer, n_ctx);
    if (i > 0) {
      const SummaryStep& prev = *chunks[i - 1];
      EXPECT_EQ(c.new_begin, prev.end) << "chunk " << i;
      EXPECT_GE(c.begin, prev.new_begin) << "overlap reaches beyond the previous chunk";
      EXPECT_LE(c.begin, c.new_begin);
      if (c.begin < c.new_begin) {
        ++with_overlap;
        EXPECT_LE(ntok(tok, t.substr(c.begin, c.new_begin - c.begin)), plan.overlap_tokens);
      }
    }
    // Chunk ends at a paragraph start unless the paragraph around the cut alone exceeds the budget.
    if (i + 1 < chunks.size()) {
      const auto it = std::upper_bound(d.para_starts.begin(), d.para_starts.end(), c.end);
      const size_t pb = *(it - 1);
      if (pb != c.end) {
        const size_t pe = it == d.para_starts.end() ? t.size() : *it;
        EXPECT_GT(ntok(tok, t.substr(pb, pe - pb)), plan.new_budget)
            << "chunk " << i << " ends inside a paragraph that would fit a chunk";
      } else {
        EXPECT_EQ(c.end_boundary, BoundaryKind::paragraph);
      }
    }
  }
  if (plan.overlap_tokens >= 16) {
    EXPECT_EQ(with_overlap, plan.n_chunks - 1);
  }
  // Combine levels: every step but the last is consumed exactly once, by a step of the next level.
  std::vector<int> consumed(plan.steps.size(), 0);
  for (size_t i = size_t(plan.n_chunks); i < plan.steps.size(); ++i) {
    const SummaryStep& s = plan.steps[i];
    EXPECT_EQ(s.kind, SummaryStep::Kind::combine);
    ASSERT_FALSE(s.inputs.empty());
    int prev = -1;
    for (int in : s.inputs) {
      ASSERT_LT(size_t(in), i);
      EXPECT_GT(in, prev);  // in order
      prev = in;
      ++consumed[size_t(in)];
      EXPECT_EQ(plan.steps[size_t(in)].level + 1, s.level);
    }
  }
  for (size_t i = 0; i + 1 < plan.steps.size(); ++i) EXPECT_EQ(consumed[i], 1) << "step " << i;
  EXPECT_EQ(consumed.back(), 0);
  EXPECT_EQ(plan.steps.back().level, plan.n_levels);
  int top = 0;
  for (const auto& s : plan.steps) top += s.level == plan.n_levels;
  EXPECT_EQ(top, 1);
}

TEST(SummaryPlanner, RandomDocumentsKeepEveryInvariant) {
  WKV_REQUIRE_SHARED(kTok);
  auto tok = Tokenizer::from_file(wkv::test::shared_path(kTok));
  std::mt19937 rng(20240611);
  int n_direct = 0, n_multi_level = 0, n_split_para = 0;
  for (int iter = 0; iter < 60; ++iter) {
    const Doc d = random_doc(rng, 1 + int(rng() % 40), iter % 3 == 0 ? 0.3 : 0.0);
    const int n_ctx = 256 + int(rng() % 1800);
    const int answer = 16 + int(rng() % 96);
    const int overhead = 3 + int(rng() % 20);
    SCOPED_TRACE("iter " + std::to_string(iter) + " ctx " + std::to_string(n_ctx) + " answer " +
                 std::to_string(answer) + " chars " + std::to_string(d.text.size()));
    const SummaryPlan plan = plan_summary(d.text, *tok, n_ctx, overhead, answer);
    check_plan(*tok, d, plan, n_ctx, overhead, answer);
    n_direct += plan.direct;
    n_multi_level += plan.n_levels >= 2;
    for (int i = 0; i + 1 < plan.n_chunks; ++i) n_split_para += plan.steps[size_t(i)].end_boundary != BoundaryKind::paragraph;
  }
  // The seed loop exercises every branch.
  EXPECT_GT(n_direct, 0);
  EXPECT_GT(n_multi_level, 0);
  EXPECT_GT(n_split_para, 0);
}

TEST(SummaryPlanner, SmallContextRecursesUntilOnePart) {
  WKV_REQUIRE_SHARED(kTok);
  auto tok = Tokenizer::from_file(wkv::test::shared_path(kTok));
  std::mt19937 rng(7);
  const Doc d = random_doc(rng, 300, 0.0);
  // Fan-in (300 - 10 - 48 - 8) / (48 + 8) = 4 partials per combine.
  const SummaryPlan plan = plan_summary(d.text, *tok, 300, 10, 48);
  check_plan(*tok, d, plan, 300, 10, 48);
  EXPECT_GE(plan.n_levels, 3);
  for (const auto& s : plan.steps)
    if (s.kind == SummaryStep::Kind::combine) {
      EXPECT_LE(s.inputs.size(), 4u);
    }
}

TEST(SummaryPlanner, RejectsContextsTooSmall) {
  WKV_REQUIRE_SHARED(kTok);
  auto tok = Tokenizer::from_file(wkv::test::shared_path(kTok));
  try {
    plan_summary("some text", *tok, 100, 10, 80);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("--max-tokens"), std::string::npos);
  }
  std::mt19937 rng(3);
  const Doc d = random_doc(rng, 40, 0.0);
  // Chunks fit (200 - 4 - 60 - 8 = 128 ≥ 32) but two 60-token partials plus slack do not.
  EXPECT_THROW(plan_summary(d.text, *tok, 200, 4, 60), Error);
}

TEST(SummaryPrompt, FormatsForBaseAndChatModels) {
  WKV_REQUIRE_SHARED(kTok);
  auto tok = Tokenizer::from_file(wkv::test::shared_path(kTok));
  EXPECT_EQ(summary_prompt(ChatTemplateKind::plain, *tok, "A story.", false), tok->encode("A story.\n\nTL;DR:", true));
  const auto chat = summary_prompt(ChatTemplateKind::llama2, *tok, "A story.", false);
  EXPECT_NE(tok->decode(chat).find("Summarize the following text:\n\nA story."), std::string::npos);
  EXPECT_EQ(summary_prompt_overhead(ChatTemplateKind::plain, *tok), int(tok->encode("\n\nTL;DR:", true).size()));
}

std::string story_text() {
  return wkv::test::read_file(wkv::test::shared_path("data/tinystories/TinyStories-validation-head.txt")).substr(0, 6000);
}

TEST(Summarize, EndToEndOnRefAInParts) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  WKV_REQUIRE_SHARED("data/tinystories/TinyStories-validation-head.txt");
  auto model = Model::load(wkv::test::shared_path("models/ref-a"));
  Session session(model, SessionOptions{512, false});
  const std::string text = story_text();
  SummarizeOptions opt;
  opt.max_answer_tokens = 32;
  opt.prefill_chunk = 64;
  std::vector<SummarizeProgress> events;
  SummaryPlan seen;
  std::string streamed_last;
  SummarizeCallbacks cb;
  cb.on_plan = [&](const SummaryPlan& p) { seen = p; };
  cb.progress = [&](const SummarizeProgress& p) {
    EXPECT_LE(p.n_past, 512);
    events.push_back(p);
    return true;
  };
  cb.on_text = [&](int step, const std::string& t) {
    if (step == int(seen.steps.size()) - 1) streamed_last += t;
  };
  const SummarizeResult r = summarize(session, text, opt, cb);
  ASSERT_FALSE(r.cancelled);
  EXPECT_FALSE(r.plan.direct);
  EXPECT_GE(r.plan.n_chunks, 3);
  EXPECT_EQ(seen.steps.size(), r.plan.steps.size());
  EXPECT_EQ(r.steps_done, int(r.plan.steps.size()));
  EXPECT_FALSE(r.summary.empty());
  EXPECT_NE(streamed_last.find(r.summary), std::string::npos);
  // Progress in order: per step, prefill reports (non-decreasing), then generation, then done.
  int step = 0, phase = 0, last_done = -1, n_step_done = 0;
  for (const auto& e : events) {
    ASSERT_GE(e.step, step);
    if (e.step > step) {
      step = e.step;
      phase = 0;
      last_done = -1;
    }
    ASSERT_GE(int(e.phase), phase) << "step " << e.step;
    if (int(e.phase) > phase) last_done = -1;
    phase = int(e.phase);
    EXPECT_GE(e.done, last_done);
    last_done = e.done;
    EXPECT_EQ(e.n_steps, int(r.plan.steps.size()));
    n_step_done += e.phase == SummarizeProgress::Phase::step_done;
  }
  EXPECT_EQ(n_step_done, int(r.plan.steps.size()));
  EXPECT_EQ(step, int(r.plan.steps.size()) - 1);
}

TEST(Summarize, CancelMidwayLeavesTheSessionUsable) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  WKV_REQUIRE_SHARED("data/tinystories/TinyStories-validation-head.txt");
  auto model = Model::load(wkv::test::shared_path("models/ref-a"));
  Session session(model, SessionOptions{512, false});
  SummarizeOptions opt;
  opt.max_answer_tokens = 24;
  opt.prefill_chunk = 32;
  SummarizeCallbacks cb;
  cb.progress = [&](const SummarizeProgress& p) {
    return !(p.step == 1 && p.phase == SummarizeProgress::Phase::prefill && p.done > 0);
  };
  const SummarizeResult r = summarize(session, story_text(), opt, cb);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.steps_done, 1);
  EXPECT_TRUE(r.summary.empty());
  EXPECT_GT(session.n_past(), 0);
  // The same session now answers exactly as a fresh one does.
  GenerateOptions g;
  g.sampling = SamplingParams::greedy();
  g.max_tokens = 12;
  const auto prompt = model->tokenizer().encode("Once upon a time", true);
  const GenerateResult a = session.generate(prompt, g);
  Session fresh(model, SessionOptions{512, false});
  const GenerateResult b = fresh.generate(prompt, g);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_FALSE(a.tokens.empty());
}

}  // namespace
