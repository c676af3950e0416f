#include "wkv/synth.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "half.h"
#include "json.h"
#include "model_config.h"
#include "safetensors.h"
#include "thread_pool.h"
#include "wkv/error.h"
#include "wkvq.h"

namespace fs = std::filesystem;

namespace wkv {
namespace {

// xorshift64* with a Box–Muller-free approximation of N(0, σ): the sum of four uniforms (Irwin–Hall),
// rescaled. Fast enough for billions of values, and plenty for timing.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1Dull;
  }
  float normal(float sigma) {
    const uint64_t r = next();
    float sum = 0;
    for (int i = 0; i < 4; ++i) sum += float((r >> (16 * i)) & 0xFFFF) / 65535.0f;
    return (sum - 2.0f) * 1.7320508f * sigma;  // variance of the sum is 4/12
  }

 private:
  uint64_t s_;
};

ModelInfo info_of(const SynthShape& s) {
  ModelInfo i;
  i.dim = s.dim;
  i.n_layers = s.n_layers;
  i.n_heads = s.n_heads;
  i.n_kv_heads = s.n_kv_heads;
  i.head_dim = s.dim / s.n_heads;
  i.ffn_dim = s.ffn;
  i.vocab_size = s.vocab;
  i.max_context = s.max_context;
  i.rope_theta = 10000.0f;
  i.norm_eps = 1e-5f;
  return i;
}

// n FP16 values ~ N(0, σ). Chunks of 2^20 values have their own generator, seeded from (stream, chunk),
// so the values do not depend on the thread count; a 7B checkpoint (6.7e9 values) takes seconds, not
// minutes, on a many-core machine.
std::vector<uint16_t> random_f16(ThreadPool& pool, uint64_t stream, size_t n, float sigma) {
  constexpr size_t kChunk = size_t(1) << 20;
  std::vector<uint16_t> v(n);
  pool.parallel_for(int64_t((n + kChunk - 1) / kChunk), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Rng rng(stream * 0x100000001B3ull + uint64_t(c));
      const size_t end = std::min(n, size_t(c + 1) * kChunk);
      for (size_t i = size_t(c) * kChunk; i < end; ++i) v[i] = float_to_fp16(rng.normal(sigma));
    }
  });
  return v;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, path + ": cannot open tokenizer");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_hf(const SynthShape& s, const ModelInfo& I, const std::string& dir, const SynthOptions& o) {
  fs::create_directories(dir);
  uint64_t stream = o.seed * 0x9E3779B97F4A7C15ull;  // one generator stream per tensor
  ThreadPool pool(0);
  std::ofstream(dir + "/config.json") << model_config_json(I).dump(2);
  std::ofstream(dir + "/tokenizer.model", std::ios::binary) << read_all(o.tokenizer_path);
  const int q = I.n_heads * I.head_dim, kv = I.n_kv_heads * I.head_dim;
  json::Object weight_map;
  const std::vector<uint16_t> ones(std::max(I.dim, 1), float_to_fp16(1.0f));
  int shard = 0;
  auto write_shard = [&](const std::vector<std::pair<std::string, std::vector<int64_t>>>& specs) {
    const std::string name = "model-" + std::to_string(100000 + ++shard).substr(1) + ".safetensors";
    std::vector<std::vector<uint16_t>> data;
    std::vector<TensorToWrite> ts;
    data.reserve(specs.size());
    for (const auto& [tname, shape] : specs) {
      size_t n = 1;
      for (auto d : shape) n *= size_t(d);
      if (tname.find("norm") != std::string::npos) data.emplace_back(ones.begin(), ones.begin() + n);
      else data.push_back(random_f16(pool, ++stream, n, 0.02f));
      ts.push_back({tname, DType::f16, shape, data.back().data(), n * 2});
      weight_map.emplace_back(tname, name);
    }
    write_safetensors(dir + "/" + name, ts);
  };
  write_shard({{"model.embed_tokens.weight", {I.vocab_size, I.dim}}});
  for (int l = 0; l < I.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    write_shard({{p + "input_layernorm.weight", {I.dim}},
                 {p + "self_attn.q_proj.weight", {q, I.dim}},
                 {p + "self_attn.k_proj.weight", {kv, I.dim}},
                 {p + "self_attn.v_proj.weight", {kv, I.dim}},
                 {p + "self_attn.o_proj.weight", {I.dim, q}},
                 {p + "post_attention_layernorm.weight", {I.dim}},
                 {p + "mlp.gate_proj.weight", {I.ffn_dim, I.dim}},
                 {p + "mlp.up_proj.weight", {I.ffn_dim, I.dim}},
                 {p + "mlp.down_proj.weight", {I.dim, I.ffn_dim}}});
  }
  write_shard({{"model.norm.weight", {I.dim}}, {"lm_head.weight", {I.vocab_size, I.dim}}});
  std::ofstream(dir + "/model.safetensors.index.json")
      << json::Value(json::Object{{"metadata", json::Object{{"synthetic", s.name}}}, {"weight_map", weight_map}}).dump(1);
}

// Random W4 codes with h = 0.005 and z = 8: dequantized weights uniform in ±0.04 (σ ≈ 0.023).
std::shared_ptr<const W4Matrix> random_w4(Rng& rng, int rows, int cols, int group) {
  auto m = std::make_shared<W4Matrix>();
  m->rows = rows;
  m->cols = cols;
  m->group = group;
  m->qweight.resize(size_t(rows) * cols / 8);
  for (auto& w : m->qweight) w = uint32_t(rng.next());
  m->scales.assign(size_t(rows) * cols / group, float_to_fp16(0.005f));
  m->zeros.assign(size_t(rows) * cols / group, float_to_fp16(8.0f));
  return m;
}

}  // namespace

const std::vector<SynthShape>& synth_shapes() {
  static const std::vector<SynthShape> shapes = {
      {"llama2-7b", 4096, 32, 32, 32, 11008, 32000, 65536},
      {"llama2-13b", 5120, 40, 40, 40, 13824, 32000, 65536},
      {"llama3-8b", 4096, 32, 32, 8, 14336, 32000, 65536},
      {"tiny", 256, 2, 2, 2, 512, 512, 4096},
  };
  return shapes;
}

const SynthShape& synth_shape(const std::string& name) {
  std::string names;
  for (const auto& s : synth_shapes()) {
    if (s.name == name) return s;
    names += (names.empty() ? "" : ", ") + s.name;
  }
  throw Error(ErrorCode::invalid_argument, "unknown synthetic shape '" + name + "' (known: " + names + ")");
}

void write_synthetic_model(const SynthShape& s, const std::string& out, const SynthOptions& o) {
  ModelInfo I = info_of(s);
  validate_model_info(I, "synthetic shape " + s.name);
  if (o.tokenizer_path.empty())
    throw Error(ErrorCode::invalid_argument, "synth needs a SentencePiece tokenizer (--tokenizer PATH) with at most " +
                                                 std::to_string(s.vocab) + " pieces");
  auto tok = Tokenizer::from_file(o.tokenizer_path);
  if (tok->vocab_size() > s.vocab)
    throw Error(ErrorCode::invalid_argument, o.tokenizer_path + ": " + std::to_string(tok->vocab_size()) +
                                                 " pieces, more than the shape's vocabulary " + std::to_string(s.vocab));
  if (!o.wkvq) return write_hf(s, I, out, o);
  Rng rng(o.seed);
  CpuModelWeights w;
  auto normal_f32 = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = fp16_to_float(float_to_fp16(rng.normal(0.02f)));
    return v;
  };
  w.embed = normal_f32(size_t(I.vocab_size) * I.dim);
  const int q = I.n_heads * I.head_dim, kv = I.n_kv_heads * I.head_dim;
  w.layers.resize(I.n_layers);
  for (auto& L : w.layers) {
    L.attn_norm.assign(I.dim, 1.0f);
    L.ffn_norm.assign(I.dim, 1.0f);
    const std::pair<Linear*, std::pair<int, int>> lins[] = {
        {&L.wq, {q, I.dim}},           {&L.wk, {kv, I.dim}},          {&L.wv, {kv, I.dim}},
        {&L.wo, {I.dim, q}},           {&L.w_gate, {I.ffn_dim, I.dim}}, {&L.w_up, {I.ffn_dim, I.dim}},
        {&L.w_down, {I.dim, I.ffn_dim}}};
    for (const auto& [lin, shape] : lins) {
      lin->out = shape.first;
      lin->in = shape.second;
      lin->q4 = random_w4(rng, shape.first, shape.second, o.weight_group);
    }
  }
  w.final_norm.assign(I.dim, 1.0f);
  w.lm_head = Linear(I.vocab_size, I.dim, normal_f32(size_t(I.vocab_size) * I.dim));
  WkvqMeta meta;
  meta.method = "rtn";
  meta.weight_group = o.weight_group;
  meta.kv_group = I.head_dim;
  meta.provenance = json::Object{{"synthetic", s.name}, {"seed", int64_t(o.seed)}, {"note", "random weights, for timing only"}};
  save_wkvq(out, I, w, *tok, meta);
}

}  // namespace wkv
