// .wkvq files: quantize → save → load round trips bit for bit, and damaged files are refused clearly.
#include <unistd.h>

#include <filesystem>

#include "cpu_weights.h"
#include "json.h"
#include "safetensors.h"
#include "test_support.h"
#include "wkv/engine.h"
#include "wkv/quantize.h"
#include "wkvq.h"

namespace fs = std::filesystem;

namespace wkv {
namespace {

const std::vector<TokenId> kPrompt = {1, 3784, 990, 260, 691, 8114, 614, 432, 260, 1405};

std::shared_ptr<Model> load(const std::string& path, std::optional<QuantMode> mode = std::nullopt) {
  LoadOptions o;
  o.n_threads = 2;
  o.mode = mode;
  o.backend = BackendKind::cpu;
  return Model::load(path, o);
}

// Logits of kPrompt with token-level POQ, so the 4-bit cache is read (a single prefill chunk would see
// itself at full precision).
std::vector<float> logits(std::shared_ptr<Model> m) {
  SessionOptions so;
  so.token_level_poq = true;
  Session s(m, so);
  std::vector<float> out;
  s.eval(kPrompt, &out);
  return out;
}

std::array<const Linear*, 7> linears(const LayerWeights& L) {
  return {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
}

class Wkvq : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!test::shared_exists("models/ref-a/model.safetensors")) return;
    // One folder per process: ctest runs each test of the suite as its own process, in parallel, and a
    // shared folder let one process rewrite the files another was comparing byte for byte.
    dir_ = new std::string(fs::path(WKV_TEST_TMP_DIR) / ("wkvq_suite_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    QuantizeOptions q;
    q.method = QuantMethod::rtn;
    quantize_to_file(test::shared_path("models/ref-a"), *dir_ + "/rtn.wkvq", q);
    q.method = QuantMethod::stats;
    q.calib_path = test::shared_path("data/wikitext-2-raw/wiki.valid.raw");
    q.samples = 2;
    q.seqlen = 256;
    quantize_to_file(test::shared_path("models/ref-a"), *dir_ + "/stats.wkvq", q);
  }
  static void TearDownTestSuite() {
    if (dir_) fs::remove_all(*dir_);
  }
  void SetUp() override { WKV_REQUIRE_SHARED("models/ref-a/model.safetensors"); }
  static std::string* dir_;
};
std::string* Wkvq::dir_ = nullptr;

TEST_F(Wkvq, RtnFileHoldsExactlyTheRoundToNearestModel) {
  auto file = load(*dir_ + "/rtn.wkvq");
  auto mem = load(test::shared_path("models/ref-a"), QuantMode::w4kv4_rtn);
  EXPECT_EQ(file->mode(), QuantMode::w4kv4);
  EXPECT_EQ(file->info().quant_method, "rtn");
  EXPECT_EQ(file->info().n_params, mem->info().n_params);
  for (int l = 0; l < 8; ++l) {
    const auto a = linears(file->cpu_weights().layers[l]), b = linears(mem->cpu_weights().layers[l]);
    for (int i = 0; i < 7; ++i) {
      EXPECT_EQ(a[i]->q4->qweight, b[i]->q4->qweight) << l << " " << i;
      EXPECT_EQ(a[i]->q4->scales, b[i]->q4->scales);
      EXPECT_EQ(a[i]->q4->zeros, b[i]->q4->zeros);
    }
    EXPECT_TRUE(file->cpu_weights().layers[l].kv_smoothing.identity());
  }
  // FP16 embeddings/norms/head survive exactly, so the logits are identical.
  EXPECT_EQ(logits(file), logits(mem));
  EXPECT_EQ(file->tokenizer().encode("Once upon a time", true), mem->tokenizer().encode("Once upon a time", true));
}

TEST_F(Wkvq, SaveLoadSaveIsBitIdentical) {
  for (const char* name : {"rtn", "stats"}) {
    const std::string src = *dir_ + "/" + name + ".wkvq";
    auto m = load(src);
    WkvqMeta meta;
    meta.method = m->info().quant_method;
    meta.weight_group = m->info().weight_group;
    meta.kv_group = m->info().kv_group;
    meta.provenance = json::parse(m->info().provenance, "provenance");
    const std::string again = test::temp_dir() + "/again.wkvq";
    save_wkvq(again, m->info(), m->cpu_weights(), m->tokenizer(), meta);
    EXPECT_EQ(test::read_file(again), test::read_file(src)) << name;
  }
}

TEST_F(Wkvq, StatsFileCarriesSmoothingAndProvenance) {
  auto m = load(*dir_ + "/stats.wkvq");
  EXPECT_EQ(m->info().quant_method, "stats");
  const KvSmoothing& sm = m->cpu_weights().layers[3].kv_smoothing;
  ASSERT_EQ(sm.k_scale.size(), 256u);
  double mean = 0;
  for (float s : sm.k_scale) {
    EXPECT_GT(s, 0.0f);
    mean += s / 256.0;
  }
  EXPECT_NEAR(mean, 1.0, 1e-4);  // s is normalized to mean 1 per KV head group of channels (DESIGN)
  const json::Value prov = json::parse(m->info().provenance, "provenance");
  EXPECT_EQ(prov.at("calibration").at("file").as_string(), "wiki.valid.raw");
  EXPECT_EQ(prov.at("calibration").at("samples").as_int(), 2);
  EXPECT_EQ(prov.at("source_sha256").as_string().size(), 64u);
  // w4kv4 uses the smoothing, w4kv4-rtn drops it, w4 keeps a full-precision cache.
  const auto with = logits(m), without = logits(load(*dir_ + "/stats.wkvq", QuantMode::w4kv4_rtn));
  EXPECT_NE(with, without);
  EXPECT_EQ(without, logits(load(*dir_ + "/rtn.wkvq")));
  EXPECT_THROW(load(*dir_ + "/stats.wkvq", QuantMode::fp16), Error);
}

// Rewrites a .wkvq with one change, to build damaged files.
void rewrite(const std::string& src, const std::string& dst,
             const std::function<void(std::vector<TensorToWrite>&, std::map<std::string, std::string>&)>& change) {
  auto f = SafetensorsFile::open(src);
  std::vector<TensorToWrite> ts;
  for (const auto& t : f->tensors()) ts.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
  auto md = f->metadata();
  change(ts, md);
  write_safetensors(dst, ts, md);
}

void expect_refused(const std::string& path, ErrorCode code, const std::string& needle) {
  try {
    load(path);
    FAIL() << "loaded " << path;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(fs::path(path).filename().string()), std::string::npos) << e.what();
  }
}

TEST_F(Wkvq, DamagedFilesAreRefusedClearly) {
  const std::string src = *dir_ + "/stats.wkvq", dir = test::temp_dir();
  const std::string bytes = test::read_file(src);
  test::write_file(dir + "/truncated.wkvq", bytes.substr(0, bytes.size() / 2));
  expect_refused(dir + "/truncated.wkvq", ErrorCode::format, "truncated.wkvq");

  rewrite(src, dir + "/version.wkvq", [](auto&, auto& md) { md["format_version"] = "99"; });
  expect_refused(dir + "/version.wkvq", ErrorCode::unsupported, "format version 99");

  rewrite(src, dir + "/notwkvq.wkvq", [](auto&, auto& md) { md["format"] = "something"; });
  expect_refused(dir + "/notwkvq.wkvq", ErrorCode::format, "expected 'wkvq'");

  rewrite(src, dir + "/missing.wkvq", [](auto& ts, auto&) {
    std::erase_if(ts, [](const TensorToWrite& t) { return t.name == "model.layers.5.mlp.up_proj.scales"; });
  });
  expect_refused(dir + "/missing.wkvq", ErrorCode::format, "model.layers.5.mlp.up_proj.scales");

  rewrite(src, dir + "/shape.wkvq", [](auto& ts, auto&) {
    for (auto& t : ts)
      if (t.name == "model.layers.2.self_attn.k_proj.qweight") t.shape = {64, 128};
  });
  expect_refused(dir + "/shape.wkvq", ErrorCode::format, "model.layers.2.self_attn.k_proj.qweight' has shape [64,128]");

  rewrite(src, dir + "/config.wkvq", [](auto&, auto& md) {
    json::Value c = json::parse(md["config"], "config");
    c.set("hidden_size", 512);
    md["config"] = c.dump();
  });
  expect_refused(dir + "/config.wkvq", ErrorCode::format, "expected [8192,512]");

  static std::vector<float> bad_scale(256, 0.0f);
  rewrite(src, dir + "/smoothing.wkvq", [](auto& ts, auto&) {
    for (auto& t : ts)
      if (t.name == "model.layers.1.self_attn.kv_smooth.v_scale") t.data = bad_scale.data();
  });
  expect_refused(dir + "/smoothing.wkvq", ErrorCode::invalid_argument, "kv_smooth");
}

TEST(WkvqQuantize, RefusesBadSettingsClearly) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  const std::string out = test::temp_dir() + "/x.wkvq";
  QuantizeOptions q;
  q.method = QuantMethod::stats;  // no calibration text
  EXPECT_THROW(quantize_to_file(test::shared_path("models/ref-a"), out, q), Error);
  q.method = QuantMethod::rtn;
  q.weight_group = 100;
  EXPECT_THROW(quantize_to_file(test::shared_path("models/ref-a"), out, q), Error);
  EXPECT_FALSE(fs::exists(out));
  // Cancelling through the progress callback writes nothing.
  q.weight_group = 128;
  q.progress = [](const QuantizeProgress& p) { return p.stage != "writing"; };
  try {
    quantize_to_file(test::shared_path("models/ref-a"), out, q);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::cancelled);
  }
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace wkv
