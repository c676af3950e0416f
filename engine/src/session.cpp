// Session: a context (tokens + KV cache) and streaming generation over it.
#include <algorithm>
#include <chrono>
#include <limits>

#include "backend.h"
#include "cuda_backend.h"

namespace wkv {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::stop_string: return "stop string";
    case StopReason::max_tokens: return "max tokens";
    case StopReason::context_full: return "context full";
    case StopReason::cancelled: return "cancelled";
  }
  return "?";
}

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? n_prompt_evaluated / prefill_seconds : 0.0;
}
double GenerateResult::decode_tokens_per_second() const {
  // The first generated token comes from the prefill's logits; decode steps = tokens − 1.
  const size_t steps = tokens.empty() ? 0 : tokens.size() - 1;
  return decode_seconds > 0 ? steps / decode_seconds : 0.0;
}

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options) : model_(std::move(model)) {
  if (!model_) throw Error(ErrorCode::invalid_argument, "Session: no model");
  const int max_ctx = model_->info().max_context;
  if (options.n_ctx < 0) throw Error(ErrorCode::invalid_argument, "n_ctx must be >= 0");
  n_ctx_ = options.n_ctx == 0 ? max_ctx : std::min(options.n_ctx, max_ctx);
  state_ = model_->backend() == BackendKind::cuda ? make_cuda_session_state(*model_, options, n_ctx_)
                                                   : make_cpu_session_state(*model_, options, n_ctx_);
}

MemoryStats Session::memory_stats() const {
  MemoryStats s = model_->weight_memory();
  const ModelInfo& info = model_->info();
  s.kv_format = state_->kv_format();
  s.n_tokens = n_past();
  s.n_ctx = n_ctx_;
  s.kv_bytes_per_token = state_->kv_format_bytes_per_token();
  s.kv_bytes_per_token_fp16 = 2 * int64_t(info.n_layers) * info.n_kv_heads * info.head_dim * 2;
  s.kv_bytes_used = s.kv_bytes_per_token * s.n_tokens;
  s.kv_bytes_used_fp16 = s.kv_bytes_per_token_fp16 * s.n_tokens;
  s.kv_bytes_allocated = s.kv_bytes_per_token * n_ctx_;
  s.kv_bytes_allocated_fp16 = s.kv_bytes_per_token_fp16 * n_ctx_;
  s.backend_kv_bytes = state_->kv_resident_bytes();
  s.backend = backend_name(model_->backend());
  state_->device_memory(&s.device_bytes_used, &s.device_bytes_total);
  for (auto& layer : s.layers) {
    layer.kv_bytes_used = s.kv_bytes_used / info.n_layers;
    layer.kv_bytes_used_fp16 = s.kv_bytes_used_fp16 / info.n_layers;
  }
  return s;
}

Session::~Session() = default;

std::span<const float> Session::last_logits() const {
  if (logits_on_device_) {
    state_->copy_last_logits(last_logits_.data());
    logits_on_device_ = false;
  }
  return last_logits_;
}

void Session::eval(std::span<const TokenId> tokens, std::vector<float>* all_logits, int chunk) {
  if (tokens.empty()) return;
  logits_on_device_ = false;
  const int n = static_cast<int>(tokens.size());
  if (n_past() + n > n_ctx_)
    throw Error(ErrorCode::context_full, std::to_string(n) + " more tokens do not fit: " + std::to_string(n_past()) +
                                             " of " + std::to_string(n_ctx_) + " context positions are used");
  if (chunk <= 0) chunk = n;
  const int vocab = model_->info().vocab_size;
  if (all_logits) all_logits->assign(size_t(n) * vocab, 0.0f);
  last_logits_.resize(vocab);
  // Several chunks per forward call where the backend prefers it (a multiple of chunk, so the chunks and
  // their POQ semantics are the same as one call per chunk).
  const int batch = n <= chunk ? chunk : std::max(chunk, state_->forward_batch(chunk) / chunk * chunk);
  for (int start = 0; start < n; start += batch) {
    const int len = std::min(batch, n - start);
    const int pos0 = n_past();
    float* out = all_logits ? all_logits->data() + size_t(start) * vocab : last_logits_.data();
    state_->forward(tokens.data() + start, len, pos0, out, all_logits != nullptr, chunk);
    tokens_.insert(tokens_.end(), tokens.begin() + start, tokens.begin() + start + len);
  }
  if (all_logits) std::copy(all_logits->end() - vocab, all_logits->end(), last_logits_.begin());
}

void Session::truncate(int n) {
  if (n < 0 || n > n_past())
    throw Error(ErrorCode::invalid_argument, "truncate(" + std::to_string(n) + "): context has " +
                                                 std::to_string(n_past()) + " tokens");
  tokens_.resize(size_t(n));
  if (n == 0) {
    last_logits_.clear();
    logits_on_device_ = false;
  }
}

namespace {

// Length of the longest suffix of `text` that is a proper prefix of some stop string: those bytes
// must be held back because the next token may complete the stop string.
size_t held_back_suffix(const std::string& text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const auto& s : stops)
    for (size_t len = std::min(s.size() - 1, text.size()); len > best; --len)
      if (text.compare(text.size() - len, len, s, 0, len) == 0) {
        best = len;
        break;
      }
  return best;
}

}  // namespace

GenerateResult Session::generate(std::span<const TokenId> prompt, const GenerateOptions& options,
                                 const TokenCallback& on_token) {
  using clock = std::chrono::steady_clock;
  if (prompt.empty()) throw Error(ErrorCode::invalid_argument, "generate: empty prompt");
  if (options.max_tokens < 0) throw Error(ErrorCode::invalid_argument, "max_tokens must be >= 0");
  for (const auto& s : options.stop_strings)
    if (s.empty()) throw Error(ErrorCode::invalid_argument, "stop strings must not be empty");
  if (static_cast<int>(prompt.size()) > n_ctx_)
    throw Error(ErrorCode::context_full, "the prompt has " + std::to_string(prompt.size()) +
                                             " tokens but the context holds " + std::to_string(n_ctx_));
  GenerateResult result;
  // Reuse the longest common prefix already in the cache; always re-run at least the last prompt token
  // so last_logits() belongs to this prompt.
  size_t common = 0;
  while (common < tokens_.size() && common < prompt.size() && tokens_[common] == prompt[common]) ++common;
  if (common == prompt.size()) --common;
  truncate(static_cast<int>(common));
  result.n_prompt_reused = static_cast<int>(common);
  result.n_prompt_evaluated = static_cast<int>(prompt.size() - common);
  auto t0 = clock::now();
  eval(prompt.subspan(common));
  result.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();

  Sampler sampler(options.sampling);
  // Sampling on the device (CUDA, top-k within its limits): each decode step leaves its logits there and only
  // the top_k candidates come back; the prompt's last logits, and every other case, sample on the host.
  // Greedy is the top-1 candidate (ties to the lowest id, after the penalty: the host's argmax).
  const int vocab = model_->info().vocab_size;
  const bool greedy = options.sampling.temperature <= 0.0f;
  const int k = greedy ? 1 : options.sampling.top_k;
  const bool on_device =
      (greedy || sampler.top_k_on_candidates(size_t(vocab))) && state_->samples_on_device(vocab, k);
  std::vector<TokenId> cand_ids(on_device ? size_t(k) : 0);
  std::vector<float> cand_vals(on_device ? size_t(k) : 0);
  std::vector<int32_t> penalized;
  const auto next_token = [&]() -> TokenId {
    if (!logits_on_device_) return sampler.sample(last_logits_, tokens_);
    penalized.clear();
    const float penalty = options.sampling.repetition_penalty;
    if (penalty != 1.0f) {  // the distinct ids of the window, as the host sampler penalizes them
      const size_t window = std::min(tokens_.size(), size_t(std::max(options.sampling.repetition_window, 0)));
      penalized.assign(tokens_.end() - std::ptrdiff_t(window), tokens_.end());
      std::sort(penalized.begin(), penalized.end());
      penalized.erase(std::unique(penalized.begin(), penalized.end()), penalized.end());
    }
    // A NaN / +inf logit, or (greedy) nothing but −inf: the host sampler names the problem and throws.
    if (state_->top_k(k, penalized, penalty, cand_ids.data(), cand_vals.data()) >= 0 ||
        (greedy && cand_vals[0] == -std::numeric_limits<float>::infinity()))
      return sampler.sample(last_logits(), tokens_);
    return greedy ? cand_ids[0] : sampler.sample_top_k(cand_ids, cand_vals);
  };
  StreamDecoder decoder(model_->tokenizer());
  const TokenId eos = model_->tokenizer().eos_id();
  std::string all_text;  // decoded so far
  size_t emitted = 0;    // bytes of all_text handed to the callback
  const auto emit = [&](TokenId id, size_t upto) -> bool {
    TokenEvent ev;
    ev.id = id;
    ev.text = all_text.substr(emitted, upto - emitted);
    ev.n_past = n_past();
    emitted = upto;
    return !on_token || on_token(ev);
  };
  result.stop = StopReason::max_tokens;
  auto t1 = clock::now();
  for (int i = 0; i < options.max_tokens; ++i) {
    const TokenId id = next_token();
    if (options.stop_at_eos && id == eos) {
      result.stop = StopReason::eos;
      break;
    }
    result.tokens.push_back(id);
    all_text += decoder.push(id);
    // Stop strings: cut the text before the first occurrence.
    size_t stop_at = std::string::npos;
    for (const auto& s : options.stop_strings) {
      const size_t from = emitted >= s.size() ? emitted - s.size() + 1 : 0;
      const size_t p = all_text.find(s, from);
      if (p != std::string::npos) stop_at = std::min(stop_at, p);
    }
    if (stop_at != std::string::npos) {
      all_text.resize(std::max(stop_at, emitted));
      emit(id, all_text.size());  // the text before the stop string; generation ends either way
      result.stop = StopReason::stop_string;
      break;
    }
    const size_t safe = all_text.size() - held_back_suffix(all_text, options.stop_strings);
    if (!emit(id, std::max(safe, emitted))) {
      result.stop = StopReason::cancelled;
      break;
    }
    if (i + 1 == options.max_tokens) break;
    if (n_past() >= n_ctx_) {
      result.stop = StopReason::context_full;
      break;
    }
    if (on_device) {  // one decode step whose logits stay on the device for next_token
      state_->forward(&id, 1, n_past(), nullptr, false, 0);
      tokens_.push_back(id);
      logits_on_device_ = true;
    } else {
      const TokenId one[1] = {id};
      eval(one);
    }
  }
  if (result.stop != StopReason::stop_string && result.stop != StopReason::cancelled) {
    all_text += decoder.flush();
    if (emitted < all_text.size()) emit(result.tokens.empty() ? eos : result.tokens.back(), all_text.size());
  }
  // The last sampled token is part of the context only once it has been evaluated; keep the
  // context consistent with what the model has seen.
  result.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  result.text = all_text.substr(0, emitted);
  return result;
}

}  // namespace wkv
