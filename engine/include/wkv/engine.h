// The engine's public API: load a model, open a session, generate with streaming, read stats.
//
//   auto model = wkv::Model::load("path/to/model-dir-or-file", {});
//   wkv::Session session(model, {});
//   auto ids = wkv::apply_chat_template(model->chat_template(), model->tokenizer(), messages);
//   session.generate(ids, opts, [](const wkv::TokenEvent& ev) { print(ev.text); return true; });
//
// A Model is immutable after load and may be shared by several Sessions (threads). A Session is
// single-threaded: one caller at a time. Everything throws wkv::Error on failure.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "wkv/chat_template.h"
#include "wkv/error.h"
#include "wkv/quant.h"
#include "wkv/sampling.h"
#include "wkv/tokenizer.h"

namespace wkv {

enum class BackendKind { automatic, cpu, cuda };
const char* backend_name(BackendKind b);

struct LoadOptions {
  std::string tokenizer_path;       // override; default: tokenizer.model beside the weights
  BackendKind backend = BackendKind::automatic;
  int n_threads = 0;                // CPU backend threads; 0 = hardware concurrency
  std::optional<ChatTemplateKind> chat_template;  // override the per-model default
  // Quantization mode; default: fp16 for FP16/BF16/FP32 checkpoints, the file's own mode for .wkvq.
  // Weights of FP16 checkpoints are quantized at load (round to nearest) when the mode asks for W4.
  std::optional<QuantMode> mode;
  int weight_group = 128;  // W4 group size g (input channels); must divide every linear's input size
  int kv_group = 0;        // KV4 group size G (channels of one head); 0 = head_dim
};

struct ModelInfo {
  std::string path;
  std::string format;        // "hf-safetensors", "llama2c", "wkvq"
  std::string name;          // directory / file stem
  std::string weight_dtype;  // dtype of the linear weights on disk: "F16", "BF16", "F32"
  int vocab_size = 0;
  int dim = 0;               // hidden size d
  int n_layers = 0;
  int n_heads = 0;           // H
  int n_kv_heads = 0;        // H_kv (GQA when < H)
  int head_dim = 0;          // D
  int ffn_dim = 0;
  int max_context = 0;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tied_embeddings = false;
  int64_t n_params = 0;
  // .wkvq files: how they were made ("rtn", "stats", "wkvquant") and their group sizes; empty / 0 for
  // floating-point checkpoints.
  std::string quant_method;
  int weight_group = 0;
  int kv_group = 0;
  std::string provenance;  // .wkvq: JSON (source model and hash, tool, calibration data/settings/losses)
};

class CpuModelWeights;  // internal
struct BackendWeights;  // internal: weights resident on a device

class Model {
 public:
  // `path` is an HF model directory (config.json + model.safetensors[.index.json] + tokenizer.model),
  // a llama2.c checkpoint (.bin, tokenizer .model beside it), or a .wkvq file.
  static std::shared_ptr<Model> load(const std::string& path, const LoadOptions& options = {});
  ~Model();

  const ModelInfo& info() const { return info_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  ChatTemplateKind chat_template() const { return chat_template_; }
  BackendKind backend() const { return backend_; }
  // Why the backend is what it is when `automatic` did not pick the GPU (empty otherwise), e.g.
  // "no CUDA device" or "head_dim 96 has no GPU attention kernel (64 or 128): running on the CPU".
  const std::string& backend_notice() const { return backend_notice_; }
  const std::string& device_name() const { return device_name_; }
  int n_threads() const { return n_threads_; }
  QuantMode mode() const { return mode_; }
  int kv_group() const { return kv_group_; }
  // Weight memory (KV fields zero): see MemoryStats.
  MemoryStats weight_memory() const;

  // internal
  const CpuModelWeights& cpu_weights() const { return *weights_; }
  const std::shared_ptr<BackendWeights>& backend_weights() const { return backend_weights_; }
  Model(ModelInfo info, std::unique_ptr<Tokenizer> tok, std::unique_ptr<CpuModelWeights> w,
        const LoadOptions& options);

 private:
  ModelInfo info_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<CpuModelWeights> weights_;
  ChatTemplateKind chat_template_ = ChatTemplateKind::plain;
  BackendKind backend_ = BackendKind::cpu;
  int n_threads_ = 1;
  QuantMode mode_ = QuantMode::fp16;
  int kv_group_ = 0;
  std::shared_ptr<BackendWeights> backend_weights_;
  std::string backend_notice_;
  std::string device_name_;
};

struct SessionOptions {
  int n_ctx = 0;  // context length; 0 = the model's max_context
  // POQ inside a prefill chunk (KV4 modes with POQ). false: DESIGN.md's chunk semantics — every key and
  // value of the chunk is full precision for attention inside the chunk. true: token semantics — each
  // token sees only its own K/V at full precision and every earlier one quantized, exactly as
  // token-by-token decoding does (perplexity uses this, so it measures what decoding does).
  bool token_level_poq = false;
};

struct TokenEvent {
  TokenId id = 0;
  std::string text;  // newly completed UTF-8 text (may be empty while a character is incomplete)
  int n_past = 0;    // tokens in the context after this one
};
// Return false to cancel generation.
using TokenCallback = std::function<bool(const TokenEvent&)>;

enum class StopReason { eos, stop_string, max_tokens, context_full, cancelled };
const char* stop_reason_name(StopReason r);

struct GenerateOptions {
  SamplingParams sampling;
  int max_tokens = 256;
  std::vector<std::string> stop_strings;  // generation ends before any of these (not emitted)
  bool stop_at_eos = true;
};

struct GenerateResult {
  std::string text;              // the generated text (stop string excluded)
  std::vector<TokenId> tokens;   // the generated ids
  StopReason stop = StopReason::max_tokens;
  int n_prompt_evaluated = 0;    // prompt tokens actually run (after reusing the cached prefix)
  int n_prompt_reused = 0;       // prompt tokens found already in the KV cache
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

struct SessionState;  // internal: KV cache and scratch of one backend

class Session {
 public:
  explicit Session(std::shared_ptr<const Model> model, const SessionOptions& options = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const Model& model() const { return *model_; }
  int n_ctx() const { return n_ctx_; }
  int n_past() const { return static_cast<int>(tokens_.size()); }
  const std::vector<TokenId>& tokens() const { return tokens_; }

  // Runs `tokens` at positions n_past … n_past+n−1 (prefill in chunks of `chunk` tokens).
  // Afterwards last_logits() holds the logits after the final token. If `all_logits` is given it
  // receives n × vocab logits (row i = after token i). Throws context_full if they do not fit.
  void eval(std::span<const TokenId> tokens, std::vector<float>* all_logits = nullptr, int chunk = 512);
  std::span<const float> last_logits() const;

  // Drops everything after the first n tokens (n ≤ n_past).
  void truncate(int n);
  void reset() { truncate(0); }

  // Weight and KV-cache memory now (updated per token).
  MemoryStats memory_stats() const;

  // Makes `prompt` the context (reusing the longest common prefix with the current context), then
  // samples up to max_tokens, streaming each token through `on_token`.
  GenerateResult generate(std::span<const TokenId> prompt, const GenerateOptions& options,
                          const TokenCallback& on_token = {});

 private:
  std::shared_ptr<const Model> model_;
  int n_ctx_ = 0;
  std::vector<TokenId> tokens_;
  // After a generate step that sampled on the device, the logits stay there until last_logits() asks.
  mutable std::vector<float> last_logits_;
  mutable bool logits_on_device_ = false;
  std::unique_ptr<SessionState> state_;
};

}  // namespace wkv
