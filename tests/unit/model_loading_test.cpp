// Loader tests on small synthetic checkpoints written by the test itself:
//   - the same weights stored as F32, F16, BF16 and as a sharded index give identical logits
//   - a llama2.c v0/v1 export (interleaved RoPE) of those weights gives the same logits as the HF form
//   - config.json variants: rope_theta vs rope_parameters, head_dim default, GQA, tied embeddings
//   - refusals: other architectures, RoPE scaling, missing/misshaped tensors, truncated llama2.c files
#include <cmath>
#include <filesystem>
#include <random>

#include "half.h"
#include "json.h"
#include "model_config.h"
#include "safetensors.h"
#include "test_support.h"
#include "wkv/engine.h"

namespace fs = std::filesystem;

namespace wkv {
namespace {

struct Tiny {
  int dim = 64, layers = 2, heads = 4, kv_heads = 2, head_dim = 16, ffn = 96, vocab = 512;
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors;
};

// Random weights rounded to BF16 and kept out of FP16's subnormal range, so F32, F16 and BF16 files
// hold exactly the same values.
Tiny make_tiny(uint32_t seed, bool tied) {
  Tiny t;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.08f);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float base = 0.0f) {
    size_t n = 1;
    for (auto s : shape) n *= size_t(s);
    std::vector<float> v(n);
    for (auto& x : v) {
      x = base + nd(rng);
      if (std::fabs(x) < 1e-3f) x = x < 0 ? -1e-3f : 1e-3f;
      x = bf16_to_float(float_to_bf16(x));
    }
    t.tensors[name] = {shape, v};
  };
  const int q = t.heads * t.head_dim, kv = t.kv_heads * t.head_dim;
  add("model.embed_tokens.weight", {t.vocab, t.dim});
  for (int l = 0; l < t.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {t.dim}, 1.0f);
    add(p + "self_attn.q_proj.weight", {q, t.dim});
    add(p + "self_attn.k_proj.weight", {kv, t.dim});
    add(p + "self_attn.v_proj.weight", {kv, t.dim});
    add(p + "self_attn.o_proj.weight", {t.dim, q});
    add(p + "post_attention_layernorm.weight", {t.dim}, 1.0f);
    add(p + "mlp.gate_proj.weight", {t.ffn, t.dim});
    add(p + "mlp.up_proj.weight", {t.ffn, t.dim});
    add(p + "mlp.down_proj.weight", {t.dim, t.ffn});
  }
  add("model.norm.weight", {t.dim}, 1.0f);
  if (!tied) add("lm_head.weight", {t.vocab, t.dim});
  return t;
}

json::Value tiny_config(const Tiny& t, bool tied, bool new_rope_form) {
  json::Object o;
  o.emplace_back("architectures", json::Array{json::Value("LlamaForCausalLM")});
  o.emplace_back("hidden_size", t.dim);
  o.emplace_back("intermediate_size", t.ffn);
  o.emplace_back("num_hidden_layers", t.layers);
  o.emplace_back("num_attention_heads", t.heads);
  o.emplace_back("num_key_value_heads", t.kv_heads);
  o.emplace_back("vocab_size", t.vocab);
  o.emplace_back("max_position_embeddings", 64);
  o.emplace_back("rms_norm_eps", 1e-5);
  o.emplace_back("hidden_act", "silu");
  o.emplace_back("tie_word_embeddings", tied);
  if (new_rope_form) o.emplace_back("rope_parameters", json::Object{{"rope_theta", 500.0}, {"rope_type", "default"}});
  else o.emplace_back("rope_theta", 500.0);
  return json::Value(o);
}

// Writes the tiny model as an HF directory. dtype F32/F16/BF16; shards > 1 writes an index.
void write_hf(const Tiny& t, const std::string& dir, DType dtype, int shards, bool tied, bool new_rope_form) {
  fs::create_directories(dir);
  test::write_file(dir + "/config.json", tiny_config(t, tied, new_rope_form).dump(2));
  fs::copy_file(test::shared_path("data/llama2c/stories260K/tok512.model"), dir + "/tokenizer.model",
                fs::copy_options::overwrite_existing);
  std::vector<std::vector<uint8_t>> storage;
  std::vector<std::vector<TensorToWrite>> per_shard(shards);
  json::Object weight_map;
  int i = 0;
  for (const auto& [name, tv] : t.tensors) {
    const auto& [shape, v] = tv;
    std::vector<uint8_t> bytes(v.size() * dtype_size(dtype));
    for (size_t k = 0; k < v.size(); ++k) {
      if (dtype == DType::f32) std::memcpy(&bytes[k * 4], &v[k], 4);
      else {
        const uint16_t h = dtype == DType::f16 ? float_to_fp16(v[k]) : float_to_bf16(v[k]);
        std::memcpy(&bytes[k * 2], &h, 2);
      }
    }
    storage.push_back(std::move(bytes));
    const int s = i++ % shards;
    per_shard[s].push_back({name, dtype, shape, storage.back().data(), storage.back().size()});
    weight_map.emplace_back(name, "model-0000" + std::to_string(s + 1) + ".safetensors");
  }
  if (shards == 1) {
    write_safetensors(dir + "/model.safetensors", per_shard[0]);
    return;
  }
  for (int s = 0; s < shards; ++s)
    write_safetensors(dir + "/model-0000" + std::to_string(s + 1) + ".safetensors", per_shard[s]);
  test::write_file(dir + "/model.safetensors.index.json",
                   json::Value(json::Object{{"metadata", json::Object{}}, {"weight_map", weight_map}}).dump(1));
}

// Half-split rows → interleaved rows (the inverse of the loader's permutation), as llama2.c stores them.
std::vector<float> to_interleaved(const std::vector<float>& w, int heads, int head_dim, int in) {
  std::vector<float> out(w.size());
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h)
    for (int p = 0; p < 2; ++p)
      for (int j = 0; j < half; ++j)
        std::memcpy(&out[size_t(h * head_dim + 2 * j + p) * in], &w[size_t(h * head_dim + p * half + j) * in],
                    sizeof(float) * in);
  return out;
}

void write_llama2c(const Tiny& t, const std::string& path, int version, bool tied) {
  std::string b;
  auto put_i32 = [&](int32_t x) { b.append(reinterpret_cast<const char*>(&x), 4); };
  auto put = [&](const std::vector<float>& v) { b.append(reinterpret_cast<const char*>(v.data()), v.size() * 4); };
  auto get = [&](const std::string& n) { return t.tensors.at(n).second; };
  auto L = [&](int l, const std::string& n) { return get("model.layers." + std::to_string(l) + "." + n); };
  const int seq_len = 64;
  if (version == 1) {
    put_i32(0x616b3432);
    put_i32(1);
  }
  for (int32_t x : {t.dim, t.ffn, t.layers, t.heads, t.kv_heads, (version == 0 && !tied) ? -t.vocab : t.vocab, seq_len})
    put_i32(x);
  if (version == 1) {
    b.push_back(tied ? 1 : 0);
    b.resize(256, '\0');
  }
  auto norms = [&](const char* n) { for (int l = 0; l < t.layers; ++l) put(L(l, n)); };
  auto lin = [&](const char* n, int heads) {
    for (int l = 0; l < t.layers; ++l)
      put(heads ? to_interleaved(L(l, n), heads, t.head_dim, t.dim) : L(l, n));
  };
  if (version == 0) {
    put(get("model.embed_tokens.weight"));
    norms("input_layernorm.weight");
  } else {
    norms("input_layernorm.weight");
    norms("post_attention_layernorm.weight");
    put(get("model.norm.weight"));
    put(get("model.embed_tokens.weight"));
  }
  lin("self_attn.q_proj.weight", t.heads);
  lin("self_attn.k_proj.weight", t.kv_heads);
  lin("self_attn.v_proj.weight", 0);
  lin("self_attn.o_proj.weight", 0);
  if (version == 0) norms("post_attention_layernorm.weight");
  lin("mlp.gate_proj.weight", 0);
  lin("mlp.down_proj.weight", 0);
  lin("mlp.up_proj.weight", 0);
  if (version == 0) {
    put(get("model.norm.weight"));
    put(std::vector<float>(size_t(seq_len) * t.head_dim, 0.25f));  // freq_cis tables (ignored)
  }
  if (!tied) put(get("lm_head.weight"));
  test::write_file(path, b);
}

std::vector<float> logits_of(const std::string& path, const std::vector<TokenId>& ids) {
  LoadOptions opt;
  opt.n_threads = 2;
  Session s(Model::load(path, opt));
  std::vector<float> out;
  s.eval(ids, &out);
  return out;
}

const std::vector<TokenId> kIds = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};

class TinyModels : public ::testing::Test {
 protected:
  void SetUp() override { WKV_REQUIRE_SHARED("data/llama2c/stories260K/tok512.model"); }
};

TEST_F(TinyModels, AllDtypesAndShardingGiveIdenticalLogits) {
  const std::string root = test::temp_dir();
  const Tiny t = make_tiny(7, false);
  write_hf(t, root + "/f32", DType::f32, 1, false, true);
  write_hf(t, root + "/f16", DType::f16, 1, false, false);
  write_hf(t, root + "/bf16", DType::bf16, 1, false, true);
  write_hf(t, root + "/sharded", DType::f16, 3, false, true);
  const auto ref = logits_of(root + "/f32", kIds);
  ASSERT_EQ(ref.size(), kIds.size() * 512);
  for (const char* v : {"f16", "bf16", "sharded"}) EXPECT_EQ(logits_of(root + "/" + v, kIds), ref) << v;
  EXPECT_EQ(Model::load(root + "/bf16")->info().weight_dtype, "BF16");
  EXPECT_FLOAT_EQ(Model::load(root + "/f16")->info().rope_theta, 500.0f);  // top-level rope_theta form
}

TEST_F(TinyModels, Llama2cExportsMatchTheHfForm) {
  const std::string root = test::temp_dir();
  for (bool tied : {false, true}) {
    const Tiny t = make_tiny(tied ? 11 : 12, tied);
    const std::string hf = root + (tied ? "/hf_tied" : "/hf");
    write_hf(t, hf, DType::f32, 1, tied, true);
    // llama2.c files use RoPE theta 10000; give the HF form the same.
    json::Value cfg = tiny_config(t, tied, true);
    cfg.set("rope_parameters", json::Object{{"rope_theta", 10000.0}, {"rope_type", "default"}});
    test::write_file(hf + "/config.json", cfg.dump());
    const auto ref = logits_of(hf, kIds);
    for (int version : {0, 1}) {
      const std::string dir = root + "/l2c_v" + std::to_string(version) + (tied ? "_tied" : "");
      fs::create_directories(dir);
      fs::copy_file(test::shared_path("data/llama2c/stories260K/tok512.model"), dir + "/tokenizer.model");
      write_llama2c(t, dir + "/model.bin", version, tied);
      const auto got = logits_of(dir + "/model.bin", kIds);
      ASSERT_EQ(got.size(), ref.size());
      EXPECT_LT(test::rel_l2(got.data(), ref.data(), ref.size()), 1e-6) << "version " << version << " tied " << tied;
      EXPECT_EQ(Model::load(dir + "/model.bin")->info().tied_embeddings, tied);
    }
  }
}

TEST_F(TinyModels, TruncatedLlama2cIsRefusedWithSizes) {
  const std::string dir = test::temp_dir();
  const Tiny t = make_tiny(3, true);
  fs::copy_file(test::shared_path("data/llama2c/stories260K/tok512.model"), dir + "/tokenizer.model");
  write_llama2c(t, dir + "/m.bin", 0, true);
  std::string bytes = test::read_file(dir + "/m.bin");
  test::write_file(dir + "/m.bin", bytes.substr(0, bytes.size() - 100));
  try {
    Model::load(dir + "/m.bin");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::format);
    EXPECT_NE(std::string(e.what()).find("does not match the header"), std::string::npos) << e.what();
  }
  test::write_file(dir + "/tiny.bin", "abc");
  EXPECT_THROW(Model::load(dir + "/tiny.bin"), Error);
}

TEST_F(TinyModels, MissingOrMisshapedTensorsNameTheTensor) {
  const std::string root = test::temp_dir();
  Tiny t = make_tiny(5, false);
  t.tensors.erase("model.layers.1.mlp.up_proj.weight");
  write_hf(t, root + "/missing", DType::f16, 1, false, true);
  try {
    Model::load(root + "/missing");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << e.what();
  }
  Tiny u = make_tiny(5, false);
  u.tensors["model.layers.0.self_attn.k_proj.weight"].first = {16, 128};
  write_hf(u, root + "/shape", DType::f16, 1, false, true);
  try {
    Model::load(root + "/shape");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("k_proj.weight' has shape [16,128], expected [32,64]"), std::string::npos)
        << e.what();
  }
}

ModelInfo parse(const std::string& text) { return parse_llama_config(json::parse(text, "config.json"), "config.json"); }

TEST(ModelConfig, ReadsBothRopeFormsAndDefaults) {
  const std::string base = R"("architectures":["LlamaForCausalLM"],"hidden_size":4096,"intermediate_size":11008,)"
                           R"("num_hidden_layers":32,"num_attention_heads":32,"vocab_size":32000)";
  ModelInfo a = parse("{" + base + R"(,"rope_theta":500000.0,"rope_scaling":null})");
  EXPECT_FLOAT_EQ(a.rope_theta, 500000.0f);
  EXPECT_EQ(a.head_dim, 128);
  EXPECT_EQ(a.n_kv_heads, 32);
  EXPECT_FALSE(a.tied_embeddings);
  ModelInfo b = parse("{" + base + R"(,"num_key_value_heads":8,"rope_parameters":{"rope_theta":1e6,"rope_type":"default"}})");
  EXPECT_FLOAT_EQ(b.rope_theta, 1e6f);
  EXPECT_EQ(b.n_kv_heads, 8);
  ModelInfo c = parse("{" + base + "}");
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
}

TEST(ModelConfig, RefusesWhatIsNotImplemented) {
  const std::string base = R"("hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,)"
                           R"("num_attention_heads":4,"vocab_size":100)";
  auto expect_refusal = [&](const std::string& extra, ErrorCode code, const std::string& needle) {
    try {
      parse("{" + base + "," + extra + "}");
      FAIL() << extra;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << extra;
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_refusal(R"("architectures":["MistralForCausalLM"])", ErrorCode::unsupported, "MistralForCausalLM");
  expect_refusal(R"("architectures":["LlamaForCausalLM"],"rope_scaling":{"rope_type":"llama3","factor":8.0})",
                 ErrorCode::unsupported, "llama3");
  expect_refusal(R"("architectures":["LlamaForCausalLM"],"rope_parameters":{"rope_type":"yarn","rope_theta":1e4})",
                 ErrorCode::unsupported, "yarn");
  expect_refusal(R"("architectures":["LlamaForCausalLM"],"hidden_act":"gelu")", ErrorCode::unsupported, "gelu");
  expect_refusal(R"("architectures":["LlamaForCausalLM"],"num_key_value_heads":3)", ErrorCode::format,
                 "num_key_value_heads");
  expect_refusal(R"("architectures":["LlamaForCausalLM"],"attention_bias":true)", ErrorCode::unsupported,
                 "attention_bias");
}

}  // namespace
}  // namespace wkv
