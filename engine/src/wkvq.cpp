#include "wkvq.h"

#include <array>
#include <cstring>
#include <deque>
#include <filesystem>

#include "half.h"
#include "model_config.h"
#include "safetensors.h"

namespace fs = std::filesystem;

namespace wkv {
namespace {

const char* const kLinearNames[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

std::array<const Linear*, 7> linears_of(const LayerWeights& L) {
  return {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
}
std::array<Linear*, 7> linears_of(LayerWeights& L) { return {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}; }

// Owns the bytes of the tensors being written.
class Writer {
 public:
  void f16(const std::string& name, const std::vector<float>& v, std::vector<int64_t> shape) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_fp16(v[i]);
    add(name, DType::f16, std::move(shape), h.data(), h.size() * 2);
  }
  void f32(const std::string& name, const std::vector<float>& v) {
    add(name, DType::f32, {int64_t(v.size())}, v.data(), v.size() * 4);
  }
  void add(const std::string& name, DType dt, std::vector<int64_t> shape, const void* data, size_t n) {
    store_.emplace_back(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + n);
    tensors_.push_back({name, dt, std::move(shape), store_.back().data(), n});
  }
  const std::vector<TensorToWrite>& tensors() const { return tensors_; }

 private:
  std::deque<std::vector<uint8_t>> store_;
  std::vector<TensorToWrite> tensors_;
};

const TensorView& need(const SafetensorsFile& f, const std::string& name, DType dt, const std::vector<int64_t>& shape) {
  const TensorView* t = f.find(name);
  if (!t) throw Error(ErrorCode::format, f.path() + ": missing tensor '" + name + "'");
  if (t->dtype != dt)
    throw Error(ErrorCode::format, f.path() + ": tensor '" + name + "' has dtype " + dtype_name(t->dtype) + ", expected " +
                                       dtype_name(dt));
  if (t->shape != shape)
    throw Error(ErrorCode::format, f.path() + ": tensor '" + name + "' has shape " + shape_string(t->shape) +
                                       ", expected " + shape_string(shape));
  return *t;
}

template <typename T>
std::vector<T> copy_of(const TensorView& t) {
  std::vector<T> v(t.nbytes / sizeof(T));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

std::string meta_or_throw(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  if (it == f.metadata().end()) throw Error(ErrorCode::format, f.path() + ": __metadata__ has no '" + key + "'");
  return it->second;
}

}  // namespace

json::Value model_config_json(const ModelInfo& i) {
  json::Object o;
  o.emplace_back("architectures", json::Array{json::Value("LlamaForCausalLM")});
  o.emplace_back("model_type", "llama");
  o.emplace_back("hidden_size", i.dim);
  o.emplace_back("intermediate_size", i.ffn_dim);
  o.emplace_back("num_hidden_layers", i.n_layers);
  o.emplace_back("num_attention_heads", i.n_heads);
  o.emplace_back("num_key_value_heads", i.n_kv_heads);
  o.emplace_back("head_dim", i.head_dim);
  o.emplace_back("vocab_size", i.vocab_size);
  o.emplace_back("max_position_embeddings", i.max_context);
  o.emplace_back("rms_norm_eps", double(i.norm_eps));
  o.emplace_back("rope_theta", double(i.rope_theta));
  o.emplace_back("hidden_act", "silu");
  o.emplace_back("tie_word_embeddings", i.tied_embeddings);
  return json::Value(std::move(o));
}

void save_wkvq(const std::string& path, const ModelInfo& info, const CpuModelWeights& w, const Tokenizer& tok,
               const WkvqMeta& meta) {
  Writer out;
  out.f16("model.embed_tokens.weight", w.embed, {info.vocab_size, info.dim});
  for (int l = 0; l < info.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.f16(p + "input_layernorm.weight", L.attn_norm, {info.dim});
    out.f16(p + "post_attention_layernorm.weight", L.ffn_norm, {info.dim});
    const auto lins = linears_of(L);
    for (int i = 0; i < 7; ++i) {
      const Linear& lin = *lins[i];
      const std::string n = p + kLinearNames[i];
      if (!lin.q4) throw Error(ErrorCode::invalid_argument, "save_wkvq: " + n + " is not quantized to W4");
      const W4Matrix& q = *lin.q4;
      out.add(n + ".qweight", DType::u32, {q.rows, q.words_per_row()}, q.qweight.data(), q.qweight.size() * 4);
      out.add(n + ".scales", DType::f16, {q.rows, q.groups_per_row()}, q.scales.data(), q.scales.size() * 2);
      out.add(n + ".zeros", DType::f16, {q.rows, q.groups_per_row()}, q.zeros.data(), q.zeros.size() * 2);
    }
    if (!L.kv_smoothing.identity()) {
      out.f32(p + "self_attn.kv_smooth.k_delta", L.kv_smoothing.k_delta);
      out.f32(p + "self_attn.kv_smooth.k_scale", L.kv_smoothing.k_scale);
      out.f32(p + "self_attn.kv_smooth.v_delta", L.kv_smoothing.v_delta);
      out.f32(p + "self_attn.kv_smooth.v_scale", L.kv_smoothing.v_scale);
    }
  }
  out.f16("model.norm.weight", w.final_norm, {info.dim});
  if (!info.tied_embeddings) out.f16("lm_head.weight", w.lm_head.w, {info.vocab_size, info.dim});
  const std::string& tb = tok.model_bytes();
  out.add("tokenizer.model", DType::u8, {int64_t(tb.size())}, tb.data(), tb.size());

  json::Object q;
  q.emplace_back("method", meta.method);
  q.emplace_back("weight_group", meta.weight_group);
  q.emplace_back("kv_group", meta.kv_group > 0 ? meta.kv_group : info.head_dim);
  q.emplace_back("weight_format", "W4 asymmetric uint4, interleaved nibbles, FP16 scale + zero per group");
  q.emplace_back("kv_format", "KV4 per-token asymmetric uint4 per group of channels, FP16 scale + min, static smoothing");
  std::map<std::string, std::string> md = {
      {"format", "wkvq"},
      {"format_version", std::to_string(kWkvqFormatVersion)},
      {"config", model_config_json(info).dump()},
      {"quantization", json::Value(std::move(q)).dump()},
      {"provenance", meta.provenance.is_null() ? "{}" : meta.provenance.dump()},
  };
  write_safetensors(path, out.tensors(), md);
}

LoadedModel load_wkvq(const std::string& path, const LoadOptions& options) {
  const auto file = SafetensorsFile::open(path);
  const SafetensorsFile& f = *file;
  if (meta_or_throw(f, "format") != "wkvq")
    throw Error(ErrorCode::format, path + ": __metadata__.format is '" + meta_or_throw(f, "format") + "', expected 'wkvq'");
  const std::string version = meta_or_throw(f, "format_version");
  if (version != std::to_string(kWkvqFormatVersion))
    throw Error(ErrorCode::unsupported, path + ": .wkvq format version " + version + " is not supported (this build reads version " +
                                            std::to_string(kWkvqFormatVersion) + ")");
  LoadedModel m;
  m.info = parse_llama_config(json::parse(meta_or_throw(f, "config"), path + " __metadata__.config"), path + " config");
  const json::Value q = json::parse(meta_or_throw(f, "quantization"), path + " __metadata__.quantization");
  const std::string qsrc = path + ": quantization";
  m.info.quant_method = q.at("method", qsrc).as_string(qsrc + ".method");
  m.info.weight_group = int(q.at("weight_group", qsrc).as_int(qsrc + ".weight_group", 8, 1 << 20));
  m.info.kv_group = int(q.at("kv_group", qsrc).as_int(qsrc + ".kv_group", 2, 1 << 20));
  m.info.provenance = f.metadata().count("provenance") ? f.metadata().at("provenance") : "{}";
  m.info.path = path;
  m.info.format = "wkvq";
  m.info.name = fs::path(path).stem().string();
  m.info.weight_dtype = "W4";
  m.info.n_params = llama_param_count(m.info);
  const ModelInfo& I = m.info;
  const int g = I.weight_group;
  const int q_dim = I.n_heads * I.head_dim, kv_dim = I.n_kv_heads * I.head_dim;

  const TensorView& tb = need(f, "tokenizer.model", DType::u8, {int64_t(f.find("tokenizer.model") ? f.find("tokenizer.model")->nbytes : 0)});
  if (options.tokenizer_path.empty())
    m.tokenizer = Tokenizer::from_bytes(std::string(reinterpret_cast<const char*>(tb.data), tb.nbytes), path + " tokenizer.model");
  else
    m.tokenizer = Tokenizer::from_file(options.tokenizer_path);

  auto w = std::make_unique<CpuModelWeights>();
  auto f16 = [&](const std::string& name, std::vector<int64_t> shape) {
    need(f, name, DType::f16, shape);
    return tensor_to_f32(*f.find(name), path, shape);
  };
  w->embed = f16("model.embed_tokens.weight", {I.vocab_size, I.dim});
  w->layers.resize(I.n_layers);
  for (int l = 0; l < I.n_layers; ++l) {
    LayerWeights& L = w->layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.attn_norm = f16(p + "input_layernorm.weight", {I.dim});
    L.ffn_norm = f16(p + "post_attention_layernorm.weight", {I.dim});
    const int outs[7] = {q_dim, kv_dim, kv_dim, I.dim, I.ffn_dim, I.ffn_dim, I.dim};
    const int ins[7] = {I.dim, I.dim, I.dim, q_dim, I.dim, I.dim, I.ffn_dim};
    auto lins = linears_of(L);
    for (int i = 0; i < 7; ++i) {
      const std::string n = p + kLinearNames[i];
      if (ins[i] % g != 0)
        throw Error(ErrorCode::format, path + ": weight_group " + std::to_string(g) + " does not divide the input size " +
                                           std::to_string(ins[i]) + " of " + n);
      auto q4 = std::make_shared<W4Matrix>();
      q4->rows = outs[i];
      q4->cols = ins[i];
      q4->group = g;
      q4->qweight = copy_of<uint32_t>(need(f, n + ".qweight", DType::u32, {outs[i], ins[i] / 8}));
      q4->scales = copy_of<uint16_t>(need(f, n + ".scales", DType::f16, {outs[i], ins[i] / g}));
      q4->zeros = copy_of<uint16_t>(need(f, n + ".zeros", DType::f16, {outs[i], ins[i] / g}));
      validate_w4_matrix(*q4, (path + ": " + n).c_str());
      lins[i]->out = outs[i];
      lins[i]->in = ins[i];
      lins[i]->q4 = std::move(q4);
    }
    const std::string s = p + "self_attn.kv_smooth.";
    if (f.find(s + "k_delta")) {
      KvSmoothing& sm = L.kv_smoothing;
      sm.k_delta = tensor_to_f32(need(f, s + "k_delta", DType::f32, {kv_dim}), path, {kv_dim});
      sm.k_scale = tensor_to_f32(need(f, s + "k_scale", DType::f32, {kv_dim}), path, {kv_dim});
      sm.v_delta = tensor_to_f32(need(f, s + "v_delta", DType::f32, {kv_dim}), path, {kv_dim});
      sm.v_scale = tensor_to_f32(need(f, s + "v_scale", DType::f32, {kv_dim}), path, {kv_dim});
      validate_kv_smoothing(sm.k_delta.data(), sm.k_scale.data(), kv_dim, (path + ": " + s + "k").c_str());
      validate_kv_smoothing(sm.v_delta.data(), sm.v_scale.data(), kv_dim, (path + ": " + s + "v").c_str());
    }
  }
  w->final_norm = f16("model.norm.weight", {I.dim});
  if (I.tied_embeddings) w->lm_head = Linear(I.vocab_size, I.dim, w->embed);
  else w->lm_head = Linear(I.vocab_size, I.dim, f16("lm_head.weight", {I.vocab_size, I.dim}));
  m.weights = std::move(w);
  return m;
}

}  // namespace wkv
