// llama2.c checkpoint loader.
//
// Legacy (version 0) layout, all little-endian:
//   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
//     (vocab_size < 0 means a separate classifier follows; |vocab_size| is the vocabulary)
//   float32 token_embedding[vocab][dim], rms_att[L][dim], wq[L][dim][dim], wk[L][kv_dim][dim],
//           wv[L][kv_dim][dim], wo[L][dim][dim], rms_ffn[L][dim], w1[L][hidden][dim],
//           w2[L][dim][hidden], w3[L][hidden][dim], rms_final[dim],
//           freq_cis_real[seq_len][head/2], freq_cis_imag[seq_len][head/2], (wcls[vocab][dim])
// Version 1 ("ak42" magic, int32 version = 1, the 7 ints, uint8 shared_classifier, zero padding to 256
// bytes) stores: rms_att[L], rms_ffn[L], rms_final, token_embedding, wq, wk, wv, wo, w1, w2, w3, (wcls).
// Version 2 (int8 Q8_0 export) is refused.
//
// llama2.c applies RoPE to interleaved pairs (2j, 2j+1); we permute wq/wk rows to the half-split
// convention of cpu_weights.h. w1 = gate, w3 = up, w2 = down.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "model_config.h"
#include "model_loader.h"

namespace fs = std::filesystem;

namespace wkv {
namespace {

class Reader {
 public:
  Reader(const std::string& path, std::vector<char> bytes) : path_(path), bytes_(std::move(bytes)) {}
  // Copies `n` floats; `what` names the tensor in errors.
  std::vector<float> floats(size_t n, const std::string& what) {
    if (n > (bytes_.size() - pos_) / 4)
      throw Error(ErrorCode::format, path_ + ": file ends inside tensor '" + what + "' (need " +
                                         std::to_string(n * 4) + " bytes at offset " + std::to_string(pos_) +
                                         ", file has " + std::to_string(bytes_.size()) + ")");
    std::vector<float> out(n);
    std::memcpy(out.data(), bytes_.data() + pos_, n * 4);
    pos_ += n * 4;
    return out;
  }
  void skip(size_t n) { pos_ += n; }
  size_t pos() const { return pos_; }
  size_t size() const { return bytes_.size(); }
  const char* data() const { return bytes_.data(); }

 private:
  std::string path_;
  std::vector<char> bytes_;
  size_t pos_ = 0;
};

Linear take_linear(Reader& r, int out, int in, const std::string& what) {
  return Linear{out, in, r.floats(size_t(out) * in, what)};
}

std::string find_tokenizer(const fs::path& model_path, int vocab, const LoadOptions& options) {
  if (!options.tokenizer_path.empty()) return options.tokenizer_path;
  const fs::path dir = model_path.parent_path();
  const fs::path candidates[] = {dir / "tokenizer.model", dir / ("tok" + std::to_string(vocab) + ".model"),
                                 fs::path(model_path).replace_extension(".model")};
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.string();
  throw Error(ErrorCode::not_found, model_path.string() + ": no SentencePiece tokenizer found beside it (looked for " +
                                        candidates[0].string() + ", " + candidates[1].string() + ", " +
                                        candidates[2].string() + "); pass one with --tokenizer");
}

}  // namespace

LoadedModel load_llama2c_model(const std::string& path, const LoadOptions& options) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(fs::exists(path) ? ErrorCode::io : ErrorCode::not_found, path + ": cannot open");
  const std::streamsize size = in.tellg();
  in.seekg(0);
  std::vector<char> bytes(static_cast<size_t>(size));
  if (!in.read(bytes.data(), size)) throw Error(ErrorCode::io, path + ": read failed");
  Reader r(path, std::move(bytes));
  if (r.size() < 28) throw Error(ErrorCode::format, path + ": too small for a llama2.c header (28 bytes)");

  int version = 0;
  int32_t hdr[7];
  bool shared_classifier = true;
  uint32_t magic;
  std::memcpy(&magic, r.data(), 4);
  if (magic == 0x616b3432u) {  // "ak42"
    if (r.size() < 256) throw Error(ErrorCode::format, path + ": truncated llama2.c v1 header (256 bytes)");
    std::memcpy(&version, r.data() + 4, 4);
    if (version != 1)
      throw Error(ErrorCode::unsupported, path + ": llama2.c export version " + std::to_string(version) +
                                              " is not supported (only the FP32 versions 0 and 1)");
    std::memcpy(hdr, r.data() + 8, 28);
    shared_classifier = r.data()[36] != 0;
    r.skip(256);
  } else {
    std::memcpy(hdr, r.data(), 28);
    shared_classifier = hdr[5] > 0;
    hdr[5] = hdr[5] < 0 ? -hdr[5] : hdr[5];
    r.skip(28);
  }

  ModelInfo I;
  I.dim = hdr[0];
  I.ffn_dim = hdr[1];
  I.n_layers = hdr[2];
  I.n_heads = hdr[3];
  I.n_kv_heads = hdr[4];
  I.vocab_size = hdr[5];
  I.max_context = hdr[6];
  auto bad = [&](const std::string& what) { throw Error(ErrorCode::format, path + ": llama2.c header: " + what); };
  if (I.dim <= 0 || I.dim > (1 << 16) || I.ffn_dim <= 0 || I.ffn_dim > (1 << 18) || I.n_layers <= 0 ||
      I.n_layers > 1024 || I.n_heads <= 0 || I.n_kv_heads <= 0 || I.vocab_size <= 0 || I.vocab_size > (1 << 22) ||
      I.max_context <= 0 || I.max_context > (1 << 22))
    bad("implausible sizes (dim " + std::to_string(I.dim) + ", hidden " + std::to_string(I.ffn_dim) + ", layers " +
        std::to_string(I.n_layers) + ", heads " + std::to_string(I.n_heads) + "/" + std::to_string(I.n_kv_heads) +
        ", vocab " + std::to_string(I.vocab_size) + ", seq_len " + std::to_string(I.max_context) + ")");
  if (I.dim % I.n_heads != 0) bad("dim is not divisible by n_heads");
  I.head_dim = I.dim / I.n_heads;
  I.rope_theta = 10000.0f;
  I.norm_eps = 1e-5f;
  I.tied_embeddings = shared_classifier;
  I.path = path;
  I.format = "llama2c";
  I.name = fs::path(path).stem().string();
  I.weight_dtype = "F32";
  validate_model_info(I, path);

  const size_t L = I.n_layers, d = I.dim, kv = size_t(I.n_kv_heads) * I.head_dim, f = I.ffn_dim, V = I.vocab_size;
  const size_t rope_floats = version == 0 ? 2 * size_t(I.max_context) * (I.head_dim / 2) : 0;
  const size_t expected_floats = V * d + L * (2 * d + 2 * d * d + 2 * kv * d + 3 * f * d) + d + rope_floats +
                                 (shared_classifier ? 0 : V * d);
  const size_t expected = r.pos() + expected_floats * 4;
  if (r.size() != expected)
    throw Error(ErrorCode::format, path + ": size " + std::to_string(r.size()) + " bytes does not match the header (" +
                                       std::to_string(expected) + " bytes expected for dim " + std::to_string(I.dim) +
                                       ", " + std::to_string(I.n_layers) + " layers, vocab " + std::to_string(V) +
                                       (shared_classifier ? ", shared classifier" : ", separate classifier") + ")");

  auto w = std::make_unique<CpuModelWeights>();
  w->layers.resize(L);
  auto per_layer_linear = [&](Linear LayerWeights::*field, int out, int inn, const char* name) {
    for (size_t l = 0; l < L; ++l) w->layers[l].*field = take_linear(r, out, inn, std::string(name) + "[" + std::to_string(l) + "]");
  };
  auto per_layer_norm = [&](std::vector<float> LayerWeights::*field, const char* name) {
    for (size_t l = 0; l < L; ++l) w->layers[l].*field = r.floats(d, std::string(name) + "[" + std::to_string(l) + "]");
  };
  if (version == 0) {
    w->embed = r.floats(V * d, "token_embedding");
    per_layer_norm(&LayerWeights::attn_norm, "rms_att");
  } else {
    per_layer_norm(&LayerWeights::attn_norm, "rms_att");
    per_layer_norm(&LayerWeights::ffn_norm, "rms_ffn");
    w->final_norm = r.floats(d, "rms_final");
    w->embed = r.floats(V * d, "token_embedding");
  }
  per_layer_linear(&LayerWeights::wq, I.dim, I.dim, "wq");
  per_layer_linear(&LayerWeights::wk, int(kv), I.dim, "wk");
  per_layer_linear(&LayerWeights::wv, int(kv), I.dim, "wv");
  per_layer_linear(&LayerWeights::wo, I.dim, I.dim, "wo");
  if (version == 0) per_layer_norm(&LayerWeights::ffn_norm, "rms_ffn");
  per_layer_linear(&LayerWeights::w_gate, I.ffn_dim, I.dim, "w1");
  per_layer_linear(&LayerWeights::w_down, I.dim, I.ffn_dim, "w2");
  per_layer_linear(&LayerWeights::w_up, I.ffn_dim, I.dim, "w3");
  if (version == 0) {
    w->final_norm = r.floats(d, "rms_final");
    r.floats(rope_floats, "freq_cis");  // precomputed RoPE tables: we compute our own
  }
  if (shared_classifier) w->lm_head = Linear{I.vocab_size, I.dim, w->embed};
  else w->lm_head = take_linear(r, I.vocab_size, I.dim, "wcls");
  for (auto& layer : w->layers) {
    permute_rope_rows_to_half_split(layer.wq, I.n_heads, I.head_dim);
    permute_rope_rows_to_half_split(layer.wk, I.n_kv_heads, I.head_dim);
  }

  LoadedModel m;
  m.tokenizer = Tokenizer::from_file(find_tokenizer(fs::path(path), I.vocab_size, options));
  if (m.tokenizer->vocab_size() != I.vocab_size)
    throw Error(ErrorCode::format, path + ": checkpoint vocabulary is " + std::to_string(I.vocab_size) +
                                       " but the tokenizer has " + std::to_string(m.tokenizer->vocab_size()) + " pieces");
  I.n_params = static_cast<int64_t>(expected_floats - rope_floats);
  m.info = I;
  m.weights = std::move(w);
  return m;
}

}  // namespace wkv
