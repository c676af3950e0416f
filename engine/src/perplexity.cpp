#include "wkv/perplexity.h"

#include <chrono>
#include <cmath>

namespace wkv {

double mean_nll(const float* logits, int n, int vocab, const TokenId* targets) {
  double total = 0;
  for (int i = 0; i < n; ++i) {
    const float* row = logits + size_t(i) * vocab;
    double m = row[0];
    for (int v = 1; v < vocab; ++v) m = std::max(m, double(row[v]));
    double sum = 0;
    for (int v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - m);
    total += (m + std::log(sum)) - double(row[targets[i]]);
  }
  return n > 0 ? total / n : 0.0;
}

PerplexityResult evaluate_perplexity(std::shared_ptr<const Model> model, const std::string& text,
                                     const PerplexityOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PerplexityResult r;
  r.ctx = options.ctx > 0 ? options.ctx : model->info().max_context;
  if (r.ctx < 2) throw Error(ErrorCode::invalid_argument, "perplexity window must be at least 2 tokens");
  if (r.ctx > model->info().max_context)
    throw Error(ErrorCode::invalid_argument, "perplexity window " + std::to_string(r.ctx) +
                                                 " exceeds the model's context of " +
                                                 std::to_string(model->info().max_context));
  const Tokenizer& tok = model->tokenizer();
  const std::vector<TokenId> ids = tok.encode(text, false);
  r.n_tokens = static_cast<int64_t>(ids.size());
  const int piece = r.ctx - 1;
  r.n_windows_total = static_cast<int>(ids.size() / piece);
  const int n_windows = options.max_windows > 0 ? std::min(options.max_windows, r.n_windows_total) : r.n_windows_total;
  if (n_windows == 0)
    throw Error(ErrorCode::invalid_argument, "the text has " + std::to_string(ids.size()) +
                                                 " tokens, fewer than one window of " + std::to_string(piece));
  SessionOptions so;
  so.n_ctx = r.ctx;
  so.token_level_poq = true;  // measure what token-by-token decoding computes (POQ per token)
  Session session(model, so);
  const int vocab = model->info().vocab_size;
  std::vector<TokenId> window(r.ctx);
  std::vector<float> logits;
  double total = 0;
  for (int w = 0; w < n_windows; ++w) {
    window[0] = tok.bos_id();
    std::copy(ids.begin() + int64_t(w) * piece, ids.begin() + int64_t(w + 1) * piece, window.begin() + 1);
    session.reset();
    session.eval(window, &logits, r.ctx);
    const double nll = mean_nll(logits.data(), piece, vocab, window.data() + 1);
    r.window_mean_nll.push_back(nll);
    total += nll * piece;
    ++r.n_windows;
    r.n_predictions += piece;
    if (options.progress && !options.progress(r.n_windows, n_windows, std::exp(total / r.n_predictions)))
      throw Error(ErrorCode::cancelled, "perplexity evaluation cancelled after " + std::to_string(r.n_windows) + " windows");
  }
  r.mean_nll = total / r.n_predictions;
  r.ppl = std::exp(r.mean_nll);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace wkv
