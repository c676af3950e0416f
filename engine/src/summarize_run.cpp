// The summarization runner: executes a SummaryPlan step by step with one Session.
//
// Per step: render the prompt, make sure prompt + answer budget fit the context (combine inputs are
// only bounded by the plan, so the real prompt is checked here), prefill it in chunks of
// `prefill_chunk` tokens with a progress report after each (reusing whatever prefix the cache already
// holds), then generate; Session::generate finds the prompt in the cache and runs only its last token.
#include <algorithm>
#include <chrono>

#include "wkv/summarize.h"

namespace wkv {
namespace {

std::string trimmed(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\n' || s[a] == '\t' || s[a] == '\r')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\n' || s[b - 1] == '\t' || s[b - 1] == '\r')) --b;
  return s.substr(a, b - a);
}

constexpr int kMinAnswer = 16;

}  // namespace

SummarizeResult summarize(Session& session, std::string_view text, const SummarizeOptions& options,
                          const SummarizeCallbacks& callbacks) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const Model& model = session.model();
  const Tokenizer& tok = model.tokenizer();
  const ChatTemplateKind format = options.prompt_format.value_or(model.chat_template());
  const int n_ctx = session.n_ctx();
  const int overhead = summary_prompt_overhead(format, tok);

  SummarizeResult result;
  result.plan = plan_summary(text, tok, n_ctx, overhead, options.max_answer_tokens, options.plan);
  const SummaryPlan& plan = result.plan;
  if (callbacks.on_plan) callbacks.on_plan(plan);
  const int n_steps = static_cast<int>(plan.steps.size());
  result.answers.reserve(plan.steps.size());
  const int prefill_chunk = std::max(1, options.prefill_chunk);
  auto report = [&](SummarizeProgress p) { return !callbacks.progress || callbacks.progress(p); };
  auto finish = [&] {
    result.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    return result;
  };

  for (int si = 0; si < n_steps; ++si) {
    const SummaryStep& step = plan.steps[size_t(si)];
    const bool combine = step.kind == SummaryStep::Kind::combine;
    std::string input;
    if (combine) {
      for (int in : step.inputs) {
        if (!input.empty()) input += "\n\n";
        input += result.answers[size_t(in)];
      }
    } else {
      input.assign(text.substr(step.begin, step.end - step.begin));
    }
    std::vector<TokenId> ids = summary_prompt(format, tok, input, combine);
    int answer = step.answer_tokens;
    if (static_cast<int>(ids.size()) + answer > n_ctx) answer = n_ctx - static_cast<int>(ids.size());
    if (answer < kMinAnswer) {
      // Only reachable when joined partials tokenize longer than their bound: keep the input's
      // first tokens so that the prompt and the full answer budget fit.
      answer = std::min(step.answer_tokens, n_ctx - overhead - 1);
      const int keep = std::max(0, n_ctx - overhead - answer);
      std::vector<TokenId> in_ids = tok.encode(input, false);
      while (static_cast<int>(ids.size()) + answer > n_ctx && !in_ids.empty()) {
        in_ids.resize(std::min(in_ids.size(), size_t(keep)));
        input = tok.decode(in_ids);
        ids = summary_prompt(format, tok, input, combine);
        in_ids.resize(in_ids.size() * 9 / 10);
      }
      if (static_cast<int>(ids.size()) + answer > n_ctx)
        throw Error(ErrorCode::internal, "summarize: step " + std::to_string(si) + " does not fit the context");
    }

    // Prefill all but the last prompt token, in chunks, after the prefix already in the cache.
    const int n = static_cast<int>(ids.size());
    int common = 0;
    const auto& have = session.tokens();
    while (common < session.n_past() && common < n - 1 && have[size_t(common)] == ids[size_t(common)]) ++common;
    session.truncate(common);
    SummarizeProgress p;
    p.step = si;
    p.n_steps = n_steps;
    p.kind = step.kind;
    p.total = n;
    p.phase = SummarizeProgress::Phase::prefill;
    p.done = common;
    p.n_past = session.n_past();
    if (!report(p)) {
      result.cancelled = true;
      return finish();
    }
    while (session.n_past() < n - 1) {
      const int len = std::min(prefill_chunk, n - 1 - session.n_past());
      session.eval(std::span<const TokenId>(ids.data() + session.n_past(), size_t(len)), nullptr, prefill_chunk);
      result.tokens_prefilled += len;
      p.done = p.n_past = session.n_past();
      if (!report(p)) {
        result.cancelled = true;
        return finish();
      }
    }

    GenerateOptions gen;
    gen.sampling = options.sampling;
    gen.max_tokens = answer;
    bool cancelled = false;
    int produced = 0;
    p.phase = SummarizeProgress::Phase::generate;
    p.total = answer;
    const GenerateResult r = session.generate(ids, gen, [&](const TokenEvent& ev) {
      ++produced;
      if (!ev.text.empty() && callbacks.on_text) callbacks.on_text(si, ev.text);
      p.done = produced;
      p.n_past = ev.n_past;
      if (!report(p)) cancelled = true;
      return !cancelled;
    });
    result.tokens_prefilled += r.n_prompt_evaluated;
    result.tokens_generated += static_cast<int64_t>(r.tokens.size());
    if (cancelled || r.stop == StopReason::cancelled) {
      result.cancelled = true;
      return finish();
    }
    result.answers.push_back(trimmed(r.text));
    ++result.steps_done;
    p.phase = SummarizeProgress::Phase::step_done;
    p.done = static_cast<int>(r.tokens.size());
    p.n_past = session.n_past();
    if (!report(p) && si + 1 < n_steps) {
      result.cancelled = true;
      return finish();
    }
  }
  result.summary = result.answers.empty() ? std::string() : result.answers.back();
  return finish();
}

}  // namespace wkv
