// Long-document summarization: a map-reduce planner (pure) and a runner that executes a plan with a
// Session.
//
//   SummaryPlan plan = plan_summary(text, tok, n_ctx, overhead, max_answer);  // what will run
//   SummarizeResult r = summarize(session, text, opts, callbacks);            // plans and runs it
//
// The plan. When prompt overhead + document tokens + answer budget fit the context, one direct pass.
// Otherwise the document is cut into chunks whose new content starts and ends at paragraph boundaries
// (blank lines); a paragraph too large for one chunk is cut at line, then sentence, then word, then
// character boundaries. Every chunk after the first repeats about `overlap` × budget tokens of the text
// before it (starting at a sentence / line / word boundary), so a fact split across the cut is seen
// whole once. Each chunk becomes a partial summary of at most max_answer tokens; combine steps join
// groups of partial summaries (as many as fit one prompt) and summarize them again, level by level,
// until a single step remains, whose answer is the summary. Every step satisfies
//   prompt_overhead + input tokens + answer budget ≤ n_ctx.
// Combine inputs are not known while planning: they are bounded by the partials' answer budgets plus
// a per-part slack; the runner re-checks the real prompt and never exceeds the context.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wkv/engine.h"

namespace wkv {

struct SummaryPlanOptions {
  double overlap = 0.10;       // fraction of the chunk budget repeated from the previous chunk
  int slack_tokens = 8;        // safety margin per chunk / per combined part (tokenization at joins)
  int min_chunk_tokens = 32;   // a context leaving fewer tokens of text per chunk is an error
};

// Where a chunk boundary lies (the strongest boundary at that byte offset).
enum class BoundaryKind { document, paragraph, line, sentence, word, character };
const char* boundary_kind_name(BoundaryKind k);

struct SummaryStep {
  enum class Kind { direct, chunk, combine };
  Kind kind = Kind::direct;
  int level = 0;  // 0: direct / chunks of the document; 1, 2, …: combine levels
  // direct / chunk: the byte range [begin, end) of the document this step reads. For chunks,
  // [begin, new_begin) is the overlap repeated from the previous chunk (empty for the first one).
  size_t begin = 0, new_begin = 0, end = 0;
  BoundaryKind end_boundary = BoundaryKind::document;
  // combine: indices (into SummaryPlan::steps) of the steps whose answers it joins, in order.
  std::vector<int> inputs;
  int input_tokens = 0;   // chunk/direct: exact tokens of the text; combine: upper bound
  int answer_tokens = 0;  // answer budget of this step
  int prompt_tokens = 0;  // prompt_overhead + input_tokens (upper bound of the rendered prompt)
};

struct SummaryPlan {
  int n_ctx = 0;
  int document_tokens = 0;  // tokens of the whole document (no BOS)
  int prompt_overhead = 0;  // tokens the prompt format adds around the text
  int max_answer_tokens = 0;
  int chunk_budget = 0;     // text tokens per chunk (overlap included)
  int new_budget = 0;       // of those, new content (units larger than this are split further)
  int overlap_tokens = 0;   // target overlap per chunk
  bool direct = true;
  int n_chunks = 0;         // level-0 steps
  int n_levels = 0;         // combine levels
  // Execution order: chunks first, then each combine level; the last step gives the summary.
  std::vector<SummaryStep> steps;
};

// Pure: depends only on its arguments. Throws Error(invalid_argument) when the context cannot hold
// overhead + min_chunk_tokens + answer, or a combine step cannot join at least two parts.
SummaryPlan plan_summary(std::string_view text, const Tokenizer& tok, int n_ctx, int prompt_overhead,
                         int max_answer_tokens, const SummaryPlanOptions& options = {});

// ---- prompts ----
// plain (base models):  BOS "{text}\n\nTL;DR:"   combine: BOS "{parts joined by \n\n}\n\nTL;DR:"
// llama2 (chat models): [INST] "Summarize the following text:\n\n{text}" [/INST]
//                       combine: "The following are summaries of consecutive parts of one document. "
//                                "Write one concise summary of the whole document:\n\n{parts}"
std::vector<TokenId> summary_prompt(ChatTemplateKind kind, const Tokenizer& tok, std::string_view text,
                                    bool combine);
// Tokens the format adds around the text (the larger of the chunk and combine formats).
int summary_prompt_overhead(ChatTemplateKind kind, const Tokenizer& tok);

// ---- runner ----
struct SummarizeOptions {
  int max_answer_tokens = 256;    // per step (partial summaries and the final one)
  SamplingParams sampling = SamplingParams::greedy();
  int prefill_chunk = 256;        // tokens per eval() call between progress reports
  SummaryPlanOptions plan;
  std::optional<ChatTemplateKind> prompt_format;  // default: the model's chat template
};

struct SummarizeProgress {
  enum class Phase { prefill, generate, step_done };
  Phase phase = Phase::prefill;
  int step = 0;      // 0-based index into plan.steps
  int n_steps = 0;
  SummaryStep::Kind kind = SummaryStep::Kind::direct;
  int done = 0;      // prefill: prompt tokens in the cache; generate / step_done: tokens generated
  int total = 0;     // prefill: prompt tokens; generate: answer budget
  int n_past = 0;    // the session's context length now (for live memory displays)
};

struct SummarizeCallbacks {
  std::function<void(const SummaryPlan&)> on_plan;  // once, before anything runs
  // Return false to cancel (the runner stops at the next prefill chunk or token).
  std::function<bool(const SummarizeProgress&)> progress;
  // Streaming text of step `step`'s answer.
  std::function<void(int step, const std::string& text)> on_text;
};

struct SummarizeResult {
  SummaryPlan plan;
  std::string summary;                // the last step's answer (empty when cancelled before it)
  std::vector<std::string> answers;   // per finished step, in plan order
  bool cancelled = false;
  int steps_done = 0;
  int64_t tokens_prefilled = 0;
  int64_t tokens_generated = 0;
  double seconds = 0;
};

// Plans with the session's context and runs every step through `session` (which is reused: its
// previous contents are replaced). After a cancel the session is consistent and usable.
SummarizeResult summarize(Session& session, std::string_view text, const SummarizeOptions& options = {},
                          const SummarizeCallbacks& callbacks = {});

}  // namespace wkv
