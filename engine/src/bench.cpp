#include "wkv/bench.h"

#include "cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

extern char** environ;  // POSIX: the process environment

namespace wkv {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : (v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<std::string> engine_switches() {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, "WKV_", 4) == 0) out.emplace_back(*e);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<BenchRow> run_bench(std::shared_ptr<const Model> model, const BenchOptions& o) {
  const int vocab = model->info().vocab_size;
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  // Random ids away from the special tokens: the content does not change the work.
  auto random_ids = [&](int n) {
    std::vector<TokenId> ids(n);
    for (auto& id : ids) id = TokenId(3 + rng() % uint32_t(vocab - 3));
    return ids;
  };
  std::vector<BenchRow> rows;
  for (int depth : o.depths) {
    const int need = depth + std::max(o.prompt, 1) + o.gen;
    SessionOptions so;
    so.n_ctx = std::min(model->info().max_context, need);
    if (need > model->info().max_context)
      throw Error(ErrorCode::invalid_argument, "depth " + std::to_string(depth) + " + prompt " + std::to_string(o.prompt) +
                                                   " + gen " + std::to_string(o.gen) + " exceeds the model's context of " +
                                                   std::to_string(model->info().max_context));
    Session s(model, so);
    const std::vector<TokenId> fill = random_ids(depth);
    if (depth > 0) s.eval(fill);
    if (o.warmup) {
      s.eval(random_ids(std::max(o.prompt, 1)));
      for (TokenId id : random_ids(std::min(o.gen, 2))) s.eval(std::span(&id, 1));
      if (o.log) o.log("depth " + std::to_string(depth) + " warm-up run done (untimed)");
    }
    std::vector<double> prefill_tps, decode_tps;
    MemoryStats mem;
    for (int r = 0; r < std::max(1, o.repeats); ++r) {
      s.truncate(depth);
      if (o.prompt > 0) {
        const std::vector<TokenId> prompt = random_ids(o.prompt);
        const auto t0 = std::chrono::steady_clock::now();
        s.eval(prompt);
        prefill_tps.push_back(o.prompt / seconds_since(t0));
      } else {
        const std::vector<TokenId> one = random_ids(1);
        s.eval(one);
      }
      if (o.gen > 0) {
        const std::vector<TokenId> gen = random_ids(o.gen);
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < o.gen; ++i) s.eval(std::span(&gen[i], 1));
        decode_tps.push_back(o.gen / seconds_since(t0));
      }
      mem = s.memory_stats();
      if (o.log)
        o.log("depth " + std::to_string(depth) + " run " + std::to_string(r + 1) + ": prefill " +
              (prefill_tps.empty() ? "-" : std::to_string(prefill_tps.back())) + " t/s, decode " +
              (decode_tps.empty() ? "-" : std::to_string(decode_tps.back())) + " t/s");
    }
    BenchRow row;
    row.depth = depth;
    row.prefill_tokens_per_second = median(prefill_tps);
    row.decode_tokens_per_second = median(decode_tps);
    // A decode step at this depth reads every weight once and the KV cache of the context so far
    // (taken at the middle of the generated span).
    row.decode_bytes_per_token = mem.weight_bytes + mem.kv_bytes_per_token * (depth + std::max(o.prompt, 1) + o.gen / 2);
    row.decode_gb_per_second = row.decode_bytes_per_token * row.decode_tokens_per_second / 1e9;
    row.kv_bytes = mem.kv_bytes_used;
    row.kv_bytes_fp16 = mem.kv_bytes_used_fp16;
    rows.push_back(row);
  }
  return rows;
}

double measure_host_copy_bandwidth() {
  const size_t n = size_t(256) << 20;  // 256 MiB: far beyond any cache
  std::vector<char> a(n, 1), b(n, 2);
  std::vector<double> rates;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), n);
    rates.push_back(2.0 * double(n) / seconds_since(t0));
    std::swap(a, b);
  }
  return median(rates);
}

double measure_copy_bandwidth(const Model& model, std::string* source) {
  if (model.backend() == BackendKind::cuda) {
    double bw = 0;
    std::string why;
    if (cuda_copy_bandwidth(&bw, &why)) {
      std::string name;
      cuda_device_memory(&name, nullptr, nullptr);
      if (source) *source = "device " + name;
      return bw;
    }
    if (source) *source = "host (the GPU copy could not be measured: " + why + ")";
    return measure_host_copy_bandwidth();
  }
  if (source) *source = "host";
  return measure_host_copy_bandwidth();
}

}  // namespace wkv
