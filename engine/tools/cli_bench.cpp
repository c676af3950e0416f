// `wkv bench` (throughput per context depth) and `wkv synth` (random-weight models of real shapes).
#include <cstdio>
#include <sstream>

#include "cli_common.h"
#include "wkv/bench.h"
#include "wkv/synth.h"

namespace wkv::cli {

int cmd_bench(const Args& a) {
  auto model = load_model(a, model_arg(a, "bench"));
  BenchOptions o;
  o.prompt = a.integer("--prompt-tokens", 512, 0, 1 << 24);
  o.gen = a.integer("--gen", 128, 0, 1 << 24);
  o.repeats = a.integer("--repeats", 3, 1, 1000);
  o.warmup = !a.has("--no-warmup");
  if (a.has("--depth")) {
    o.depths.clear();
    std::stringstream ss(a.str("--depth"));
    for (std::string item; std::getline(ss, item, ',');) {
      if (item.empty()) continue;
      try {
        o.depths.push_back(std::stoi(item));
      } catch (const std::exception&) {
        throw UsageError("--depth expects comma-separated integers, got '" + item + "'");
      }
    }
  }
  if (a.has("--verbose")) o.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  const MemoryStats w = model->weight_memory();
  std::string bw_source;
  const double copy_bw = measure_copy_bandwidth(*model, &bw_source);
  std::printf("model %s | mode %s | backend %s (%d threads) | weights %s (%s, FP16 %s) | KV %s\n",
              model->info().name.c_str(), quant_mode_name(model->mode()), backend_name(model->backend()),
              model->n_threads(), w.weight_format.c_str(), human_bytes(double(w.weight_bytes)).c_str(),
              human_bytes(double(w.weight_bytes_fp16)).c_str(),
              quant_spec(model->mode()).kv4 ? "KV4" : "full precision");
  std::printf("weights resident on the backend: %s\n", human_bytes(double(w.backend_weight_bytes)).c_str());
  std::printf("measured copy bandwidth %.1f GB/s (read + write; %s)\n", copy_bw / 1e9, bw_source.c_str());
  std::string switches;
  for (const std::string& s : engine_switches()) switches += " " + s;
  std::printf("engine switches:%s\n\n", switches.empty() ? " none (defaults)" : switches.c_str());
  std::printf("| %7s | %6s | %4s | %12s | %11s | %14s | %8s | %7s | %10s |\n", "depth", "prompt", "gen",
              "prefill t/s", "decode t/s", "bytes/token", "GB/s", "% copy", "KV MiB");
  std::printf(
      "|--------:|-------:|-----:|-------------:|------------:|---------------:|---------:|--------:|-----------:|\n");
  for (const BenchRow& r : run_bench(model, o))
    std::printf("| %7d | %6d | %4d | %12.1f | %11.2f | %14lld | %8.2f | %7.1f | %10.2f |\n", r.depth, o.prompt,
                o.gen, r.prefill_tokens_per_second, r.decode_tokens_per_second,
                static_cast<long long>(r.decode_bytes_per_token), r.decode_gb_per_second,
                copy_bw > 0 ? 100.0 * r.decode_gb_per_second * 1e9 / copy_bw : 0.0, r.kv_bytes / 1048576.0);
  return 0;
}

int cmd_synth(const Args& a) {
  if (!a.has("--shape") || !a.has("--output"))
    throw UsageError("synth: usage: wkv synth --shape NAME --tokenizer PATH [--wkvq] -o OUT");
  SynthOptions o;
  o.tokenizer_path = a.str("--tokenizer");
  o.seed = static_cast<uint64_t>(a.number("--seed", 1, 0, 9.0e15));
  o.wkvq = a.has("--wkvq");
  o.weight_group = a.integer("--group", 128, 8, 1 << 20);
  write_synthetic_model(synth_shape(a.str("--shape")), a.str("--output"), o);
  std::fprintf(stderr, "wrote %s (%s, random weights)\n", a.str("--output").c_str(), a.str("--shape").c_str());
  return 0;
}

}  // namespace wkv::cli
