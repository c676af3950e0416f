// Hugging Face LlamaForCausalLM loader (config.json + safetensors, single file or sharded).
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "half.h"
#include "json.h"
#include "model_config.h"
#include "model_loader.h"
#include "safetensors.h"

namespace fs = std::filesystem;

namespace wkv {
namespace {

// All safetensors files of a checkpoint and which file holds each tensor.
class TensorSource {
 public:
  explicit TensorSource(const fs::path& dir) {
    const fs::path single = dir / "model.safetensors";
    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::exists(index)) {
      const json::Value idx = json::parse_file(index.string());
      const json::Value& map = idx.at("weight_map", index.string());
      for (const auto& [name, file] : map.as_object(index.string() + ": weight_map")) {
        const std::string& shard = file.as_string(index.string() + ": weight_map['" + name + "']");
        if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
          throw Error(ErrorCode::format, index.string() + ": shard name '" + shard + "' must be a plain file name");
        if (!files_.count(shard)) files_[shard] = SafetensorsFile::open((dir / shard).string());
        where_[name] = files_[shard].get();
      }
      source_ = index.string();
    } else if (fs::exists(single)) {
      files_["model.safetensors"] = SafetensorsFile::open(single.string());
      for (const auto& t : files_["model.safetensors"]->tensors()) where_[t.name] = files_["model.safetensors"].get();
      source_ = single.string();
    } else {
      throw Error(ErrorCode::not_found, dir.string() + ": no model.safetensors or model.safetensors.index.json " +
                                            "(only safetensors checkpoints are supported; convert .bin/.pth first)");
    }
  }

  const TensorView* find(const std::string& name) const {
    auto it = where_.find(name);
    if (it == where_.end()) return nullptr;
    const TensorView* t = it->second->find(name);
    if (!t)
      throw Error(ErrorCode::format, source_ + ": index says tensor '" + name + "' is in " + it->second->path() +
                                         " but that file does not contain it");
    return t;
  }

  const TensorView& get(const std::string& name) const {
    const TensorView* t = find(name);
    if (!t) throw Error(ErrorCode::not_found, source_ + ": missing tensor '" + name + "'");
    return *t;
  }

  const std::string& file_of(const std::string& name) const { return where_.at(name)->path(); }
  std::string dtype_of_linears() const {
    const TensorView* t = find("model.layers.0.self_attn.q_proj.weight");
    return t ? dtype_name(t->dtype) : "?";
  }

 private:
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, SafetensorsFile*> where_;
  std::string source_;
};

std::vector<float> to_f32(const TensorSource& src, const std::string& name, std::vector<int64_t> shape) {
  return tensor_to_f32(src.get(name), src.file_of(name), shape);
}

Linear linear(const TensorSource& src, const std::string& name, int out, int in) {
  Linear l;
  l.out = out;
  l.in = in;
  l.w = to_f32(src, name, {out, in});
  return l;
}

}  // namespace

LoadedModel load_hf_model(const std::string& dir_str, const LoadOptions& options) {
  const fs::path dir(dir_str);
  const fs::path cfg_path = dir / "config.json";
  if (!fs::exists(cfg_path))
    throw Error(ErrorCode::not_found, dir_str + ": not a Hugging Face model directory (no config.json)");
  LoadedModel m;
  m.info = parse_llama_config(json::parse_file(cfg_path.string()), cfg_path.string());
  m.info.path = dir_str;
  m.info.format = "hf-safetensors";
  m.info.name = fs::path(dir_str).lexically_normal().filename().string();
  if (m.info.name.empty()) m.info.name = fs::path(dir_str).lexically_normal().parent_path().filename().string();

  const std::string tok_path = options.tokenizer_path.empty() ? (dir / "tokenizer.model").string() : options.tokenizer_path;
  if (!fs::exists(tok_path))
    throw Error(ErrorCode::not_found, tok_path + ": tokenizer not found (a SentencePiece tokenizer.model is required; "
                                                 "tokenizer.json-only models are not supported)");
  m.tokenizer = Tokenizer::from_file(tok_path);
  if (m.tokenizer->vocab_size() > m.info.vocab_size)
    throw Error(ErrorCode::format, tok_path + ": tokenizer has " + std::to_string(m.tokenizer->vocab_size()) +
                                       " pieces but config.json vocab_size is " + std::to_string(m.info.vocab_size));

  TensorSource src(dir);
  const ModelInfo& I = m.info;
  const int q_dim = I.n_heads * I.head_dim, kv_dim = I.n_kv_heads * I.head_dim;
  auto w = std::make_unique<CpuModelWeights>();
  w->embed = to_f32(src, "model.embed_tokens.weight", {I.vocab_size, I.dim});
  w->layers.resize(I.n_layers);
  for (int l = 0; l < I.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& L = w->layers[l];
    L.attn_norm = to_f32(src, p + "input_layernorm.weight", {I.dim});
    L.wq = linear(src, p + "self_attn.q_proj.weight", q_dim, I.dim);
    L.wk = linear(src, p + "self_attn.k_proj.weight", kv_dim, I.dim);
    L.wv = linear(src, p + "self_attn.v_proj.weight", kv_dim, I.dim);
    L.wo = linear(src, p + "self_attn.o_proj.weight", I.dim, q_dim);
    L.ffn_norm = to_f32(src, p + "post_attention_layernorm.weight", {I.dim});
    L.w_gate = linear(src, p + "mlp.gate_proj.weight", I.ffn_dim, I.dim);
    L.w_up = linear(src, p + "mlp.up_proj.weight", I.ffn_dim, I.dim);
    L.w_down = linear(src, p + "mlp.down_proj.weight", I.dim, I.ffn_dim);
  }
  w->final_norm = to_f32(src, "model.norm.weight", {I.dim});
  if (src.find("lm_head.weight") && !I.tied_embeddings) {
    w->lm_head = linear(src, "lm_head.weight", I.vocab_size, I.dim);
  } else if (I.tied_embeddings) {
    w->lm_head = Linear{I.vocab_size, I.dim, w->embed};
  } else {
    throw Error(ErrorCode::not_found, dir_str + ": missing tensor 'lm_head.weight' (config.json says "
                                                "tie_word_embeddings is false)");
  }
  m.info.weight_dtype = src.dtype_of_linears();
  m.info.n_params = llama_param_count(m.info);
  m.weights = std::move(w);
  return m;
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ',';
    r += std::to_string(s[i]);
  }
  return r + "]";
}

std::vector<float> tensor_to_f32(const TensorView& t, const std::string& file, const std::vector<int64_t>& shape) {
  if (t.shape != shape)
    throw Error(ErrorCode::format, file + ": tensor '" + t.name + "' has shape " + shape_string(t.shape) +
                                       ", expected " + shape_string(shape));
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  switch (t.dtype) {
    case DType::f32:
      std::memcpy(out.data(), t.data, static_cast<size_t>(n) * 4);
      break;
    case DType::f16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = fp16_to_float(h);
      }
      break;
    case DType::bf16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = bf16_to_float(h);
      }
      break;
    default:
      throw Error(ErrorCode::unsupported, file + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) +
                                              "; expected F16, BF16 or F32");
  }
  return out;
}

void permute_rope_rows_to_half_split(Linear& w, int n_heads, int head_dim) {
  std::vector<float> out(w.w.size());
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h)
    for (int p = 0; p < 2; ++p)
      for (int j = 0; j < half; ++j) {
        const size_t dst = static_cast<size_t>(h * head_dim + p * half + j) * w.in;
        const size_t src = static_cast<size_t>(h * head_dim + 2 * j + p) * w.in;
        std::memcpy(out.data() + dst, w.w.data() + src, sizeof(float) * w.in);
      }
  w.w.swap(out);
}

}  // namespace wkv
