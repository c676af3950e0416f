#include "wkv/compare.h"

#include <cmath>
#include <cstdio>
#include <random>

#include "wkv/perplexity.h"

namespace wkv {
namespace {

bool is_wkvq_path(const std::string& p) { return p.size() >= 5 && p.compare(p.size() - 5, 5, ".wkvq") == 0; }

std::vector<TokenId> render_prompt(const Model& m, const std::string& prompt) {
  return apply_chat_template(m.chat_template(), m.tokenizer(), {{ChatMessage::Role::user, prompt}});
}

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", double(bytes) / (1024.0 * 1024.0));
  return buf;
}

std::string fixed(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

int first_divergence(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return static_cast<int>(i);
  return a.size() == b.size() ? -1 : static_cast<int>(n);
}

double answer_nll(Session& session, const std::vector<TokenId>& prompt, const std::vector<TokenId>& answer) {
  if (prompt.empty() || answer.empty())
    throw Error(ErrorCode::invalid_argument, "answer_nll: the prompt and the answer must not be empty");
  const int vocab = session.model().info().vocab_size;
  session.reset();
  // The prompt's last logits predict answer[0]; rows of answer[0..n-2] predict answer[1..n-1]. Only
  // the answer's rows are kept (n × vocab floats), never the prompt's.
  session.eval(prompt);
  const std::vector<float> first(session.last_logits().begin(), session.last_logits().end());
  double sum = mean_nll(first.data(), 1, vocab, answer.data());
  const int rest = static_cast<int>(answer.size()) - 1;
  if (rest > 0) {
    std::vector<float> logits;
    session.eval(std::span<const TokenId>(answer.data(), size_t(rest)), &logits);
    sum += mean_nll(logits.data(), rest, vocab, answer.data() + 1) * rest;
  }
  return sum / static_cast<double>(answer.size());
}

CompareResult compare_modes(const CompareOptions& options, const CompareCallbacks& cb) {
  if (options.panes.empty()) throw Error(ErrorCode::invalid_argument, "compare: no panes (modes) given");
  if (options.prompt.empty()) throw Error(ErrorCode::invalid_argument, "compare: empty prompt");
  CompareResult result;
  GenerateOptions gen = options.generate;
  if (gen.sampling.seed == 0) {
    std::random_device rd;
    gen.sampling.seed = (uint64_t(rd()) << 32 | rd()) | 1;
  }
  result.seed = gen.sampling.seed;
  const auto keep_going = [&] { return !cb.keep_going || cb.keep_going(); };

  // The FP16 reference model path.
  std::string fp16_path = options.fp16_model_path;
  for (size_t i = 0; fp16_path.empty() && i < options.panes.size(); ++i)
    if (options.panes[i].mode == QuantMode::fp16)
      fp16_path = options.panes[i].model_path.empty() ? options.model_path : options.panes[i].model_path;
  for (size_t i = 0; fp16_path.empty() && i < options.panes.size(); ++i) {
    const std::string p = options.panes[i].model_path.empty() ? options.model_path : options.panes[i].model_path;
    if (!p.empty() && !is_wkvq_path(p)) fp16_path = p;
  }
  std::shared_ptr<Model> fp16_model;

  for (size_t i = 0; i < options.panes.size(); ++i) {
    PaneResult pr;
    pr.pane = options.panes[i];
    if (pr.pane.model_path.empty()) pr.pane.model_path = options.model_path;
    if (!keep_going()) {
      result.cancelled = true;
      break;
    }
    if (cb.on_pane_start) cb.on_pane_start(static_cast<int>(i));
    try {
      LoadOptions lo = options.load;
      lo.mode = pr.pane.mode;
      std::shared_ptr<Model> model = Model::load(pr.pane.model_path, lo);
      pr.model_name = model->info().name;
      SessionOptions so;
      so.n_ctx = options.n_ctx;
      Session session(model, so);
      pr.prompt_tokens = render_prompt(*model, options.prompt);
      GenerateOptions g = gen;
      g.max_tokens = std::min(g.max_tokens, std::max(0, session.n_ctx() - static_cast<int>(pr.prompt_tokens.size())));
      const GenerateResult r = session.generate(pr.prompt_tokens, g, [&](const TokenEvent& ev) {
        return !cb.on_token || cb.on_token(static_cast<int>(i), ev);
      });
      pr.text = r.text;
      pr.tokens = r.tokens;
      pr.stop = r.stop;
      pr.cancelled = r.stop == StopReason::cancelled;
      pr.tokens_per_second = r.decode_tokens_per_second();
      pr.prefill_tokens_per_second = r.prefill_tokens_per_second();
      pr.memory = session.memory_stats();
      pr.kv_bytes = pr.memory.kv_bytes_used;
      pr.kv_bytes_fp16 = pr.memory.kv_bytes_used_fp16;
      pr.weight_bytes = pr.memory.weight_bytes;
      if (pr.pane.mode == QuantMode::fp16 && pr.pane.model_path == fp16_path && !fp16_model) fp16_model = model;
      if (pr.pane.mode == QuantMode::fp16 && result.fp16_pane < 0 && !pr.cancelled)
        result.fp16_pane = static_cast<int>(i);
    } catch (const Error& e) {
      pr.error = e.what();
    } catch (const std::bad_alloc&) {
      pr.error = "out of memory";
    }
    if (cb.on_pane_done) cb.on_pane_done(static_cast<int>(i), pr);
    result.panes.push_back(std::move(pr));
    if (result.panes.back().cancelled) {
      result.cancelled = true;
      break;
    }
  }

  // Divergence from the FP16 pane.
  if (result.fp16_pane >= 0) {
    const auto& ref = result.panes[size_t(result.fp16_pane)].tokens;
    for (auto& p : result.panes)
      if (p.error.empty()) p.diverge_at = first_divergence(p.tokens, ref);
  }

  // NLL under the FP16 model.
  if (!options.compute_nll || result.cancelled) {
    if (result.cancelled) result.fp16_note = "cancelled before the FP16 scoring";
    return result;
  }
  if (fp16_path.empty()) {
    result.fp16_note = "FP16 model unavailable: only .wkvq files were given (pass the FP16 checkpoint with "
                       "--fp16-model PATH); NLL and perplexity under FP16 are not computed";
    return result;
  }
  try {
    if (!fp16_model) {
      LoadOptions lo = options.load;
      lo.mode = QuantMode::fp16;
      fp16_model = Model::load(fp16_path, lo);
    }
  } catch (const Error& e) {
    result.fp16_note = std::string("FP16 model unavailable (") + e.what() + "); NLL and perplexity not computed";
    return result;
  }
  result.fp16_model_path = fp16_path;
  SessionOptions so;
  so.n_ctx = options.n_ctx;
  Session ref(fp16_model, so);
  const std::vector<TokenId> prompt = render_prompt(*fp16_model, options.prompt);
  for (auto& p : result.panes) {
    if (!keep_going()) {
      result.cancelled = true;
      break;
    }
    if (!p.error.empty() || p.tokens.empty()) continue;
    if (p.prompt_tokens != prompt) continue;  // a different tokenizer or template: ids not comparable
    if (static_cast<int>(prompt.size() + p.tokens.size()) > ref.n_ctx()) continue;
    p.nll = answer_nll(ref, prompt, p.tokens);
    p.ppl = std::exp(*p.nll);
  }
  return result;
}

std::string compare_markdown_table(const CompareResult& r) {
  std::string s =
      "| Mode | Model | Tokens | Tok/s | KV cache | Weights | Diverges at | NLL (FP16) | PPL (FP16) |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& p : r.panes) {
    s += "| " + std::string(quant_mode_name(p.pane.mode)) + " | " + (p.model_name.empty() ? p.pane.model_path : p.model_name);
    if (!p.error.empty()) {
      s += " | error: " + p.error + " | | | | | | |\n";
      continue;
    }
    s += " | " + std::to_string(p.tokens.size()) + " | " + fixed(p.tokens_per_second, 1) + " | " + mib(p.kv_bytes) +
         " | " + mib(p.weight_bytes) + " | " +
         (p.diverge_at ? (*p.diverge_at < 0 ? std::string("none") : std::to_string(*p.diverge_at)) : "n/a") + " | " +
         (p.nll ? fixed(*p.nll, 4) : "n/a") + " | " + (p.ppl ? fixed(*p.ppl, 3) : "n/a") + " |\n";
  }
  return s;
}

std::string compare_report(const CompareResult& r) {
  std::string s;
  for (const auto& p : r.panes) {
    s += "### " + std::string(quant_mode_name(p.pane.mode)) + " · " +
         (p.model_name.empty() ? p.pane.model_path : p.model_name) + "\n\n";
    s += p.error.empty() ? p.text : "error: " + p.error;
    s += "\n\n";
  }
  s += compare_markdown_table(r);
  s += "\nSeed " + std::to_string(r.seed) + ".";
  if (!r.fp16_note.empty()) s += " " + r.fp16_note + ".";
  s += "\n";
  return s;
}

}  // namespace wkv
