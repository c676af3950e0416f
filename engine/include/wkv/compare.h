// Side-by-side comparison of quantization modes: one prompt through several {model, mode} panes with
// the same seed and sampling, one pane after another (one model in memory at a time, plus the FP16
// reference once the panes are done).
//
// Per pane: the text and tokens, decode tokens/s, KV-cache bytes after the answer (Session::
// memory_stats), weight bytes, the first token index where the answer diverges from the FP16 pane's
// answer, and the answer's negative log-likelihood under the FP16 model (teacher forcing: prompt +
// answer through an FP16 Session; mean NLL over the answer tokens; perplexity = exp(NLL)).
//
// Modes depend on the file: an HF/llama2.c checkpoint runs fp16, w4, kv4, w4kv4-rtn, w4kv4-nopoq and
// w4a4; a .wkvq file runs w4kv4, w4kv4-nopoq, w4 (and w4kv4-rtn for RTN files). A pane names its own
// model path, so "w4kv4 from the .wkvq" sits next to "fp16 from the HF folder". A pane whose model
// cannot run its mode reports the error and the others still run.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "wkv/engine.h"

namespace wkv {

struct ComparePane {
  std::string model_path;  // empty: CompareOptions::model_path
  QuantMode mode = QuantMode::fp16;
};

struct CompareOptions {
  std::string model_path;       // default model of the panes
  std::vector<ComparePane> panes;
  std::string prompt;           // rendered with each model's chat template as one user message
  GenerateOptions generate;     // the same for every pane; seed 0 = one random seed shared by all
  // The FP16 reference for NLL: default the first pane model path that is not a .wkvq file loaded as
  // fp16 (the first fp16 pane's model when there is one).
  std::string fp16_model_path;
  bool compute_nll = true;
  int n_ctx = 0;                // 0 = each model's maximum
  LoadOptions load;             // threads, backend, group sizes (mode is set per pane)
};

struct PaneResult {
  ComparePane pane;
  std::string model_name;
  std::string error;            // non-empty: the pane did not run (or failed); other fields unset
  bool cancelled = false;
  std::string text;
  std::vector<TokenId> prompt_tokens;
  std::vector<TokenId> tokens;  // the generated ids
  StopReason stop = StopReason::max_tokens;
  double tokens_per_second = 0;          // decode
  double prefill_tokens_per_second = 0;
  MemoryStats memory;                    // after the answer
  int64_t kv_bytes = 0;                  // = memory.kv_bytes_used
  int64_t kv_bytes_fp16 = 0;
  int64_t weight_bytes = 0;              // = memory.weight_bytes
  // First index where tokens differ from the FP16 pane's (a length difference counts at the shorter
  // length); -1 = identical; nullopt = no FP16 pane to compare with.
  std::optional<int> diverge_at;
  std::optional<double> nll;             // mean NLL of `tokens` under the FP16 model
  std::optional<double> ppl;             // exp(nll)
};

struct CompareResult {
  std::vector<PaneResult> panes;
  uint64_t seed = 0;                     // the seed every pane used
  int fp16_pane = -1;                    // the pane divergences are measured against
  std::string fp16_model_path;           // the model NLL was computed with ("" when unavailable)
  std::string fp16_note;                 // why NLL / divergence are missing, when they are
  bool cancelled = false;
};

struct CompareCallbacks {
  std::function<void(int pane)> on_pane_start;
  // Streaming tokens of a pane; return false to cancel the whole comparison.
  std::function<bool(int pane, const TokenEvent& ev)> on_token;
  std::function<void(int pane, const PaneResult& result)> on_pane_done;  // before NLL is known
  std::function<bool()> keep_going;  // polled between phases; false = cancel
};

CompareResult compare_modes(const CompareOptions& options, const CompareCallbacks& callbacks = {});

// First index where a and b differ; a length difference counts at min(|a|, |b|); -1 if equal.
int first_divergence(const std::vector<TokenId>& a, const std::vector<TokenId>& b);

// Mean NLL of `answer` given `prompt` under `session`'s model (teacher forcing; the session is reset).
// Throws invalid_argument for an empty answer or prompt, context_full when they do not fit.
double answer_nll(Session& session, const std::vector<TokenId>& prompt, const std::vector<TokenId>& answer);

// The comparison as text: per pane "### <mode> · <model>" and its answer, then the Markdown table
//   | Mode | Model | Tokens | Tok/s | KV cache | Weights | Diverges at | NLL (FP16) | PPL (FP16) |
// (bytes as MiB with two decimals; "none" for no divergence, "n/a" for missing figures).
std::string compare_markdown_table(const CompareResult& result);
std::string compare_report(const CompareResult& result);

}  // namespace wkv
