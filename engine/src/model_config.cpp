#include "model_config.h"

#include <cmath>

namespace wkv {
namespace {

[[noreturn]] void fail(ErrorCode code, const std::string& source, const std::string& msg) {
  throw Error(code, source + ": " + msg);
}

int get_int(const json::Value& cfg, const char* key, const std::string& source, int64_t lo, int64_t hi) {
  const json::Value* v = cfg.find(key);
  if (!v) fail(ErrorCode::format, source, std::string("missing field '") + key + "'");
  return static_cast<int>(v->as_int(source + ": field '" + key + "'", lo, hi));
}

int get_int_or(const json::Value& cfg, const char* key, int fallback, const std::string& source, int64_t lo,
               int64_t hi) {
  const json::Value* v = cfg.find(key);
  if (!v || v->is_null()) return fallback;
  return static_cast<int>(v->as_int(source + ": field '" + key + "'", lo, hi));
}

bool get_bool_or(const json::Value& cfg, const char* key, bool fallback, const std::string& source) {
  const json::Value* v = cfg.find(key);
  if (!v || v->is_null()) return fallback;
  return v->as_bool(source + ": field '" + key + "'");
}

// A rope_scaling / rope_parameters object that is anything but plain RoPE is refused.
void check_rope_type(const json::Value& rope, const std::string& field, const std::string& source) {
  if (rope.is_null()) return;
  if (!rope.is_object()) fail(ErrorCode::format, source, "field '" + field + "' must be an object or null");
  std::string type = "default";
  if (const json::Value* t = rope.find("rope_type")) type = t->as_string(source + ": " + field + ".rope_type");
  else if (const json::Value* t2 = rope.find("type")) type = t2->as_string(source + ": " + field + ".type");
  if (type != "default")
    fail(ErrorCode::unsupported, source,
         field + ".rope_type '" + type + "' (RoPE scaling) is not supported; only plain RoPE ('default') is implemented");
}

}  // namespace

ModelInfo parse_llama_config(const json::Value& cfg, const std::string& source) {
  if (!cfg.is_object()) fail(ErrorCode::format, source, "expected a JSON object");
  bool is_llama = false;
  std::string arch_seen;
  if (const json::Value* archs = cfg.find("architectures"); archs && !archs->is_null()) {
    for (const auto& a : archs->as_array(source + ": field 'architectures'")) {
      const std::string& name = a.as_string(source + ": architectures[]");
      if (!arch_seen.empty()) arch_seen += ", ";
      arch_seen += name;
      if (name == "LlamaForCausalLM") is_llama = true;
    }
  } else if (const json::Value* mt = cfg.find("model_type")) {
    arch_seen = "model_type " + mt->as_string(source + ": field 'model_type'");
    is_llama = mt->as_string() == "llama";
  }
  if (!is_llama)
    fail(ErrorCode::unsupported, source,
         "architecture " + (arch_seen.empty() ? std::string("(none given)") : "'" + arch_seen + "'") +
             " is not supported; expected LlamaForCausalLM");

  ModelInfo info;
  info.dim = get_int(cfg, "hidden_size", source, 1, 1 << 20);
  info.n_layers = get_int(cfg, "num_hidden_layers", source, 1, 4096);
  info.n_heads = get_int(cfg, "num_attention_heads", source, 1, 4096);
  info.n_kv_heads = get_int_or(cfg, "num_key_value_heads", info.n_heads, source, 1, 4096);
  info.ffn_dim = get_int(cfg, "intermediate_size", source, 1, 1 << 22);
  info.vocab_size = get_int(cfg, "vocab_size", source, 1, 1 << 24);
  info.max_context = get_int_or(cfg, "max_position_embeddings", 2048, source, 1, 1 << 24);
  if (info.dim % info.n_heads != 0 && !cfg.find("head_dim"))
    fail(ErrorCode::format, source, "hidden_size is not divisible by num_attention_heads and no head_dim is given");
  info.head_dim = get_int_or(cfg, "head_dim", info.dim / info.n_heads, source, 1, 4096);

  if (const json::Value* act = cfg.find("hidden_act")) {
    const std::string& a = act->as_string(source + ": field 'hidden_act'");
    if (a != "silu") fail(ErrorCode::unsupported, source, "hidden_act '" + a + "' is not supported; expected 'silu'");
  }
  if (get_bool_or(cfg, "attention_bias", false, source))
    fail(ErrorCode::unsupported, source, "attention_bias = true is not supported");
  if (get_bool_or(cfg, "mlp_bias", false, source)) fail(ErrorCode::unsupported, source, "mlp_bias = true is not supported");
  if (const json::Value* sw = cfg.find("sliding_window"); sw && !sw->is_null())
    fail(ErrorCode::unsupported, source, "sliding_window attention is not supported");

  if (const json::Value* eps = cfg.find("rms_norm_eps"))
    info.norm_eps = static_cast<float>(eps->as_number(source + ": field 'rms_norm_eps'"));
  // RoPE: newer transformers put theta under rope_parameters; older ones use top-level rope_theta
  // with an optional rope_scaling object.
  bool have_theta = false;
  if (const json::Value* rp = cfg.find("rope_parameters"); rp && !rp->is_null()) {
    check_rope_type(*rp, "rope_parameters", source);
    if (const json::Value* t = rp->find("rope_theta")) {
      info.rope_theta = static_cast<float>(t->as_number(source + ": rope_parameters.rope_theta"));
      have_theta = true;
    }
  }
  if (const json::Value* rs = cfg.find("rope_scaling")) check_rope_type(*rs, "rope_scaling", source);
  if (const json::Value* t = cfg.find("rope_theta")) {
    const float top = static_cast<float>(t->as_number(source + ": field 'rope_theta'"));
    if (have_theta && top != info.rope_theta)
      fail(ErrorCode::format, source, "rope_theta and rope_parameters.rope_theta disagree");
    info.rope_theta = top;
  }
  info.tied_embeddings = get_bool_or(cfg, "tie_word_embeddings", false, source);
  validate_model_info(info, source);
  return info;
}

void validate_model_info(const ModelInfo& info, const std::string& source) {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) fail(ErrorCode::format, source, what);
  };
  need(info.dim > 0 && info.n_layers > 0 && info.n_heads > 0 && info.n_kv_heads > 0 && info.ffn_dim > 0 &&
           info.vocab_size > 0 && info.max_context > 0,
       "model dimensions must be positive");
  need(info.head_dim > 0 && info.head_dim % 2 == 0, "head_dim " + std::to_string(info.head_dim) + " must be even (RoPE pairs)");
  need(info.n_heads % info.n_kv_heads == 0,
       "num_attention_heads (" + std::to_string(info.n_heads) + ") must be a multiple of num_key_value_heads (" +
           std::to_string(info.n_kv_heads) + ")");
  need(std::isfinite(info.rope_theta) && info.rope_theta > 0, "rope_theta must be positive");
  need(std::isfinite(info.norm_eps) && info.norm_eps > 0 && info.norm_eps < 1, "rms_norm_eps must be in (0, 1)");
}

int64_t llama_param_count(const ModelInfo& i) {
  const int64_t d = i.dim, q = int64_t(i.n_heads) * i.head_dim, kv = int64_t(i.n_kv_heads) * i.head_dim;
  const int64_t per_layer = d * q + 2 * d * kv + q * d + 3 * d * i.ffn_dim + 2 * d;
  return int64_t(i.vocab_size) * d * (i.tied_embeddings ? 1 : 2) + i.n_layers * per_layer + d;
}

}  // namespace wkv
