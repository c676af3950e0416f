// `wkv synth` models load with the shapes they claim, and `wkv bench` reports consistent figures.
#include <algorithm>
#include <cstdlib>

#include "test_support.h"
#include "wkv/bench.h"
#include "wkv/synth.h"

namespace wkv {
namespace {

TEST(Synth, TinyShapesRoundTripThroughTheLoaders) {
  WKV_REQUIRE_SHARED("data/llama2c/stories260K/tok512.model");
  const std::string dir = test::temp_dir();
  SynthOptions o;
  o.tokenizer_path = test::shared_path("data/llama2c/stories260K/tok512.model");
  const SynthShape& s = synth_shape("tiny");
  write_synthetic_model(s, dir + "/hf", o);
  o.wkvq = true;
  write_synthetic_model(s, dir + "/tiny.wkvq", o);
  for (const std::string& path : {dir + "/hf", dir + "/tiny.wkvq"}) {
    LoadOptions lo;
    lo.n_threads = 2;
    lo.backend = BackendKind::cpu;
    auto m = Model::load(path, lo);
    EXPECT_EQ(m->info().dim, s.dim);
    EXPECT_EQ(m->info().n_layers, s.n_layers);
    EXPECT_EQ(m->info().ffn_dim, s.ffn);
    EXPECT_EQ(m->info().vocab_size, s.vocab);
    EXPECT_EQ(m->info().max_context, s.max_context);
    Session sess(m);
    GenerateOptions g;
    g.sampling = SamplingParams::greedy();
    g.max_tokens = 8;
    g.stop_at_eos = false;
    EXPECT_EQ(sess.generate(std::vector<TokenId>{1, 5, 6}, g).tokens.size(), 8u) << path;
  }
  EXPECT_THROW(synth_shape("llama9-1t"), Error);
  o.tokenizer_path.clear();
  EXPECT_THROW(write_synthetic_model(s, dir + "/x", o), Error);
}

TEST(Bench, RowsAreConsistentWithMemoryAccounting) {
  WKV_REQUIRE_SHARED("data/llama2c/stories260K/tok512.model");
  const std::string dir = test::temp_dir();
  SynthOptions o;
  o.tokenizer_path = test::shared_path("data/llama2c/stories260K/tok512.model");
  o.wkvq = true;
  write_synthetic_model(synth_shape("tiny"), dir + "/t.wkvq", o);
  LoadOptions lo;
  lo.n_threads = 2;
  lo.backend = BackendKind::cpu;
  auto m = Model::load(dir + "/t.wkvq", lo);
  BenchOptions b;
  b.prompt = 16;
  b.gen = 4;
  b.depths = {0, 32};
  b.repeats = 1;
  std::vector<std::string> log;
  b.log = [&](const std::string& line) { log.push_back(line); };
  const auto rows = run_bench(m, b);
  ASSERT_EQ(rows.size(), 2u);
  // Per depth: the untimed warm-up, then one timed run.
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[0], "depth 0 warm-up run done (untimed)");
  EXPECT_EQ(log[1].rfind("depth 0 run 1: prefill ", 0), 0u) << log[1];
  EXPECT_EQ(log[2], "depth 32 warm-up run done (untimed)");
  b.warmup = false;
  b.depths = {0};
  log.clear();
  run_bench(m, b);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].rfind("depth 0 run 1: ", 0), 0u) << log[0];
  b.depths = {0, 32};
  Session probe(m);
  const MemoryStats mem = probe.memory_stats();
  for (const BenchRow& r : rows) {
    EXPECT_GT(r.prefill_tokens_per_second, 0);
    EXPECT_GT(r.decode_tokens_per_second, 0);
    EXPECT_EQ(r.kv_bytes, mem.kv_bytes_per_token * (r.depth + 16 + 4));  // every timed token is cached
    EXPECT_EQ(r.decode_bytes_per_token, mem.weight_bytes + mem.kv_bytes_per_token * (r.depth + 16 + 2));
  }
  b.depths = {4096};  // beyond the context
  EXPECT_THROW(run_bench(m, b), Error);
  // On the CPU backend the decode streams host memory: the bandwidth it is compared with is the host's.
  std::string source;
  const double bw = measure_copy_bandwidth(*m, &source);
  EXPECT_EQ(source, "host");
  EXPECT_GT(bw, 1e8);  // any machine copies more than 100 MB/s
}

// The bench header names the WKV_* switches in effect, exactly and sorted, and nothing else from the environment.
TEST(Bench, EngineSwitchesListTheWkvVariablesSorted) {
  ::setenv("WKV_ZZ_TEST_SWITCH", "2", 1);
  ::setenv("WKV_AA_TEST_SWITCH", "a,b", 1);
  ::setenv("NOT_WKV_TEST_SWITCH", "1", 1);
  const std::vector<std::string> s = engine_switches();
  ::unsetenv("WKV_ZZ_TEST_SWITCH");
  ::unsetenv("WKV_AA_TEST_SWITCH");
  ::unsetenv("NOT_WKV_TEST_SWITCH");
  EXPECT_TRUE(std::is_sorted(s.begin(), s.end()));
  const auto a = std::find(s.begin(), s.end(), "WKV_AA_TEST_SWITCH=a,b");
  const auto z = std::find(s.begin(), s.end(), "WKV_ZZ_TEST_SWITCH=2");
  ASSERT_NE(a, s.end());
  ASSERT_NE(z, s.end());
  EXPECT_LT(a, z);
  for (const std::string& v : s) EXPECT_EQ(v.rfind("WKV_", 0), 0u) << v;
  const std::vector<std::string> after = engine_switches();
  EXPECT_EQ(std::find(after.begin(), after.end(), "WKV_ZZ_TEST_SWITCH=2"), after.end());
}

}  // namespace
}  // namespace wkv
