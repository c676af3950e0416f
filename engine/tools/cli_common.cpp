#include "cli_common.h"

#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace wkv::cli {

std::atomic<bool> g_interrupted{false};

namespace {
void on_sigint(int) { g_interrupted = true; }
}  // namespace

void install_sigint_handler() { std::signal(SIGINT, on_sigint); }

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, path + ": cannot open text file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string model_arg(const Args& a, const char* cmd) {
  if (a.positional().empty()) throw UsageError(std::string(cmd) + ": missing MODEL");
  return a.positional()[0];
}

LoadOptions load_options(const Args& a) {
  LoadOptions opt;
  opt.tokenizer_path = a.str("--tokenizer");
  opt.n_threads = a.integer("--threads", 0, 0, 1024);
  if (a.has("--template")) opt.chat_template = chat_template_from_name(a.str("--template"));
  if (a.has("--mode")) opt.mode = quant_mode_from_name(a.str("--mode"));
  opt.weight_group = a.integer("--group", opt.weight_group, 8, 1 << 20);
  opt.kv_group = a.integer("--kv-group", 0, 0, 1 << 20);
  return opt;
}

std::shared_ptr<Model> load_model(const Args& a, const std::string& path) { return Model::load(path, load_options(a)); }

SamplingParams sampling_from(const Args& a) {
  SamplingParams p;
  p.temperature = static_cast<float>(a.number("--temp", p.temperature, 0, 100));
  p.top_k = a.integer("--top-k", p.top_k, 0, 1 << 24);
  p.top_p = static_cast<float>(a.number("--top-p", p.top_p, 1e-6, 1));
  p.min_p = static_cast<float>(a.number("--min-p", p.min_p, 0, 1));
  p.repetition_penalty = static_cast<float>(a.number("--repeat-penalty", p.repetition_penalty, 1e-3, 100));
  p.repetition_window = a.integer("--repeat-window", p.repetition_window, 0, 1 << 24);
  if (a.has("--seed")) p.seed = static_cast<uint64_t>(a.number("--seed", 0, 0, 9.0e15));
  return p;
}

GenerateOptions generate_options(const Args& a) {
  GenerateOptions g;
  g.sampling = sampling_from(a);
  g.max_tokens = a.integer("--max-tokens", g.max_tokens, 0, 1 << 24);
  g.stop_strings = a.all("--stop");
  g.stop_at_eos = !a.has("--ignore-eos");
  return g;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}


}  // namespace wkv::cli
