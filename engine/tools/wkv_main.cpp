// `wkv`: the engine's command-line tool.
//
//   wkv info MODEL
//   wkv quantize MODEL --method rtn|stats [--calib F] -o OUT.wkvq
//   wkv generate MODEL -p TEXT [sampling options]
//   wkv chat MODEL [--system TEXT] [sampling options]
//   wkv ppl MODEL FILE [--ctx L] [--max-windows N]
//
// Exit codes: 0 success, 1 runtime error (bad file, out of memory, …), 2 usage error, 130 interrupted.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <iostream>
#include <sstream>

#include "cli_args.h"
#include "wkv/engine.h"
#include "wkv/perplexity.h"
#include "wkv/quantize.h"

namespace {

using namespace wkv;
using cli::Args;
using cli::UsageError;

constexpr const char* kUsage = R"(wkv — WKV Chat inference engine (CPU reference backend)

usage: wkv COMMAND [options]

commands:
  info MODEL                      print the model's configuration and sizes
  generate MODEL -p TEXT          complete TEXT, streaming tokens to stdout
  chat MODEL                      interactive chat in the terminal (empty line or /exit quits)
  ppl MODEL FILE                  perplexity of FILE (protocol of shared/models/README.md)
  quantize MODEL -o OUT.wkvq      quantize an FP16/BF16/FP32 checkpoint to a .wkvq file

MODEL is a Hugging Face directory (config.json + *.safetensors + tokenizer.model), a llama2.c
checkpoint (.bin with a tokenizer .model beside it), or a .wkvq file.

common options:
  --mode M                        quantization mode: fp16 w4 kv4 w4kv4 w4kv4-rtn w4kv4-nopoq w4a4
                                  (default: fp16 for checkpoints, w4kv4 for .wkvq files)
  --group G                       W4 group size in input channels (default 128)
  --kv-group G                    KV4 group size in channels of one head (default: head_dim)
  --tokenizer PATH                SentencePiece tokenizer.model to use instead of the one beside MODEL
  --threads N                     CPU threads (default: all cores)
  --ctx N                         context length (default: the model's maximum)

generation options (generate, chat):
  -p, --prompt TEXT               prompt text (generate)
  -f, --file PATH                 read the prompt from a file (generate)
  -n, --max-tokens N              tokens to generate (default 256)
  --temp T                        temperature; 0 = greedy (default 0.8)
  --top-k K  --top-p P  --min-p M --repeat-penalty R --repeat-window N
  --seed S                        sampling seed (default: random, printed with --verbose)
  --stop TEXT                     stop before TEXT (repeatable)
  --no-bos                        do not prepend BOS (generate)
  --ignore-eos                    keep generating after the end-of-sequence token
  --system TEXT                   system prompt (chat)
  --template plain|llama2         chat template (default: chosen from the model name)
  -v, --verbose                   print timing and stop reason to stderr

perplexity options (ppl):
  --ctx L                         window length including BOS (default: the model's maximum)
  --max-windows N                 evaluate only the first N windows
  --modes all|M1,M2,...           evaluate several modes and print one table

quantize options:
  --method rtn|stats              rtn: round-to-nearest W4, no KV smoothing; stats: KV smoothing from
                                  calibration statistics (needs --calib) (default stats)
  --calib FILE                    calibration text (use wiki.valid.raw for ref-a, never the test split)
  --samples N  --seqlen L         calibration segments and their length (default 32 x min(2048, context))
  -o, --output FILE               the .wkvq file to write

  -h, --help                      this help
)";

std::atomic<bool> g_interrupted{false};

void on_sigint(int) { g_interrupted = true; }

const std::set<std::string> kValueFlags = {"--tokenizer", "--threads", "--ctx", "--prompt", "--file", "--max-tokens",
                                           "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                                           "--repeat-window", "--seed", "--stop", "--system", "--template",
                                           "--max-windows", "--mode", "--group", "--kv-group", "--modes",
                                           "--method", "--calib", "--samples", "--seqlen", "--output"};
const std::set<std::string> kSwitches = {"--no-bos", "--ignore-eos", "--verbose", "--help"};
const std::map<std::string, std::string> kAliases = {
    {"-p", "--prompt"}, {"-f", "--file"}, {"-n", "--max-tokens"}, {"-v", "--verbose"}, {"-h", "--help"}, {"-t", "--threads"}, {"-o", "--output"}};

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

int cmd_info(const Args& a) {
  auto model = load_model(a, model_arg(a, "info"));
  const ModelInfo& i = model->info();
  std::printf("path            %s\n", i.path.c_str());
  std::printf("format          %s\n", i.format.c_str());
  std::printf("architecture    LlamaForCausalLM\n");
  std::printf("parameters      %lld (%.2f M)\n", static_cast<long long>(i.n_params), i.n_params / 1e6);
  std::printf("weights dtype   %s\n", i.weight_dtype.c_str());
  std::printf("vocab           %d\n", i.vocab_size);
  std::printf("hidden          %d\n", i.dim);
  std::printf("layers          %d\n", i.n_layers);
  std::printf("heads           %d (kv heads %d%s), head_dim %d\n", i.n_heads, i.n_kv_heads,
              i.n_kv_heads < i.n_heads ? ", GQA" : "", i.head_dim);
  std::printf("ffn             %d (SwiGLU)\n", i.ffn_dim);
  std::printf("context         %d\n", i.max_context);
  std::printf("rope theta      %g (half-split)\n", i.rope_theta);
  std::printf("rms norm eps    %g\n", i.norm_eps);
  std::printf("embeddings      %s\n", i.tied_embeddings ? "tied" : "untied");
  std::printf("chat template   %s\n", chat_template_name(model->chat_template()));
  std::printf("mode            %s\n", quant_mode_name(model->mode()));
  if (i.format == "wkvq")
    std::printf("quantization    method %s, W4 group %d, KV4 group %d\nprovenance      %s\n", i.quant_method.c_str(),
                i.weight_group, i.kv_group, i.provenance.c_str());
  Session probe(model);
  const MemoryStats mem = probe.memory_stats();
  std::printf("weights         %s (%s): %s, FP16 %s (%.2fx smaller)\n", mem.weight_format.c_str(),
              quant_mode_name(model->mode()), human_bytes(double(mem.weight_bytes)).c_str(),
              human_bytes(double(mem.weight_bytes_fp16)).c_str(), double(mem.weight_bytes_fp16) / mem.weight_bytes);
  std::printf("KV cache        %s: %s per token (FP16 %s, %.2fx smaller); %s for the full context\n",
              mem.kv_format.c_str(), human_bytes(double(mem.kv_bytes_per_token)).c_str(),
              human_bytes(double(mem.kv_bytes_per_token_fp16)).c_str(),
              double(mem.kv_bytes_per_token_fp16) / mem.kv_bytes_per_token,
              human_bytes(double(mem.kv_bytes_allocated)).c_str());
  std::printf("backend         %s (%d threads)\n", backend_name(model->backend()), model->n_threads());
  std::printf("tokenizer       %d pieces, bos %d, eos %d\n", model->tokenizer().vocab_size(), model->tokenizer().bos_id(),
              model->tokenizer().eos_id());
  return 0;
}

void print_stats(const GenerateResult& r, const Sampler* s) {
  std::fprintf(stderr, "\n[%s] prompt %d tokens (%d reused) %.1f t/s | generated %zu tokens %.1f t/s\n",
               stop_reason_name(r.stop), r.n_prompt_evaluated, r.n_prompt_reused, r.prefill_tokens_per_second(),
               r.tokens.size(), r.decode_tokens_per_second());
  (void)s;
}

TokenCallback streaming_printer() {
  return [](const TokenEvent& ev) {
    std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
    std::fflush(stdout);
    return !g_interrupted.load();
  };
}

int cmd_generate(const Args& a) {
  const std::string path = model_arg(a, "generate");
  std::string prompt;
  if (a.has("--prompt")) prompt = a.str("--prompt");
  else if (a.has("--file")) {
    std::ifstream in(a.str("--file"), std::ios::binary);
    if (!in) throw Error(ErrorCode::not_found, a.str("--file") + ": cannot open prompt file");
    std::ostringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
  } else {
    throw UsageError("generate: give a prompt with -p TEXT or -f FILE");
  }
  GenerateOptions g = generate_options(a);
  auto model = load_model(a, path);
  SessionOptions so;
  so.n_ctx = a.integer("--ctx", 0, 0, 1 << 24);
  Session session(model, so);
  const std::vector<TokenId> ids = model->tokenizer().encode(prompt, !a.has("--no-bos"));
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  std::signal(SIGINT, on_sigint);
  const GenerateResult r = session.generate(ids, g, streaming_printer());
  std::printf("\n");
  if (a.has("--verbose")) print_stats(r, nullptr);
  if (r.stop == StopReason::context_full)
    std::fprintf(stderr, "wkv: the context of %d tokens is full; generation stopped\n", session.n_ctx());
  return r.stop == StopReason::cancelled ? 130 : 0;
}

int cmd_chat(const Args& a) {
  GenerateOptions g = generate_options(a);
  auto model = load_model(a, model_arg(a, "chat"));
  SessionOptions so;
  so.n_ctx = a.integer("--ctx", 0, 0, 1 << 24);
  Session session(model, so);
  std::vector<ChatMessage> messages;
  if (a.has("--system")) messages.push_back({ChatMessage::Role::system, a.str("--system")});
  std::fprintf(stderr, "wkv chat: %s (%s template, %d-token context). Empty line or /exit quits; Ctrl-C stops a reply.\n",
               model->info().name.c_str(), chat_template_name(model->chat_template()), session.n_ctx());
  std::signal(SIGINT, on_sigint);
  std::string line;
  for (;;) {
    std::fprintf(stderr, "\n> ");
    if (!std::getline(std::cin, line) || line.empty() || line == "/exit") break;
    messages.push_back({ChatMessage::Role::user, line});
    const std::vector<TokenId> ids = apply_chat_template(model->chat_template(), model->tokenizer(), messages);
    if (static_cast<int>(ids.size()) >= session.n_ctx()) {
      std::fprintf(stderr, "wkv: the conversation (%zu tokens) no longer fits the %d-token context; start a new chat\n",
                   ids.size(), session.n_ctx());
      messages.pop_back();
      continue;
    }
    g_interrupted = false;
    const GenerateResult r = session.generate(ids, g, streaming_printer());
    std::printf("\n");
    if (a.has("--verbose")) print_stats(r, nullptr);
    if (r.stop == StopReason::context_full) std::fprintf(stderr, "wkv: context full; reply cut short\n");
    messages.push_back({ChatMessage::Role::assistant, r.text});
  }
  return 0;
}

std::vector<QuantMode> modes_arg(const Args& a) {
  std::vector<QuantMode> modes;
  const std::string list = a.str("--modes");
  if (list == "all") return all_quant_modes();
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) modes.push_back(quant_mode_from_name(item));
  if (modes.empty()) throw UsageError("--modes needs 'all' or a comma-separated list of modes");
  return modes;
}

int cmd_ppl(const Args& a) {
  if (a.positional().size() < 2) throw UsageError("ppl: usage: wkv ppl MODEL FILE [--ctx L] [--max-windows N] [--mode M | --modes all]");
  const std::string file = a.positional()[1];
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, file + ": cannot open text file");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  PerplexityOptions opt;
  opt.ctx = a.integer("--ctx", 0, 0, 1 << 24);
  opt.max_windows = a.integer("--max-windows", 0, 0, 1 << 30);
  std::signal(SIGINT, on_sigint);
  std::vector<std::optional<QuantMode>> modes;
  if (a.has("--modes")) {
    if (a.has("--mode")) throw UsageError("give either --mode or --modes");
    for (QuantMode m : modes_arg(a)) modes.emplace_back(m);
  } else {
    modes.emplace_back(std::nullopt);  // --mode or the model's default
  }
  struct Row {
    std::string mode, result;
  };
  std::vector<Row> rows;
  for (const auto& mode : modes) {
    LoadOptions lo = load_options(a);
    if (mode) lo.mode = *mode;
    std::shared_ptr<Model> model;
    try {
      model = Model::load(a.positional()[0], lo);
    } catch (const Error& e) {
      if (modes.size() == 1 || e.code() != ErrorCode::unsupported) throw;
      rows.push_back({quant_mode_name(*mode), std::string("n/a: ") + e.what()});
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const std::string mode_name = quant_mode_name(model->mode());
    opt.progress = [&](int done, int total, double ppl) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\r%s [%d/%d] ppl %.4f  %.1f s elapsed, ~%.0f s left   ", mode_name.c_str(), done, total, ppl,
                   s, s / done * (total - done));
      return !g_interrupted.load();
    };
    const PerplexityResult r = evaluate_perplexity(model, text, opt);
    std::fprintf(stderr, "\n");
    if (modes.size() == 1) {
      std::printf("model %s\nmode %s\nfile %s\ntokens %lld, windows %d of %d (ctx %d), predictions %lld\nmean NLL %.6f\n"
                  "perplexity %.4f\ntime %.1f s (%.0f tokens/s)\n",
                  model->info().path.c_str(), mode_name.c_str(), file.c_str(), static_cast<long long>(r.n_tokens),
                  r.n_windows, r.n_windows_total, r.ctx, static_cast<long long>(r.n_predictions), r.mean_nll, r.ppl,
                  r.seconds, r.n_windows * r.ctx / r.seconds);
      return 0;
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, "%10.4f  %8.6f  %7d  %8.1f", r.ppl, r.mean_nll, r.n_windows, r.seconds);
    rows.push_back({mode_name, buf});
  }
  std::printf("model %s, file %s, ctx %s\n\n", a.positional()[0].c_str(), file.c_str(),
              opt.ctx > 0 ? std::to_string(opt.ctx).c_str() : "model maximum");
  std::printf("%-12s  %10s  %8s  %7s  %8s\n", "mode", "ppl", "mean NLL", "windows", "seconds");
  for (const Row& r : rows) std::printf("%-12s  %s\n", r.mode.c_str(), r.result.c_str());
  return 0;
}

int cmd_quantize(const Args& a) {
  const std::string path = model_arg(a, "quantize");
  if (!a.has("--output")) throw UsageError("quantize: give the output file with -o FILE.wkvq");
  QuantizeOptions q;
  q.method = quant_method_from_name(a.str("--method", "stats"));
  q.weight_group = a.integer("--group", 128, 8, 1 << 20);
  q.kv_group = a.integer("--kv-group", 0, 0, 1 << 20);
  q.calib_path = a.str("--calib");
  q.samples = a.integer("--samples", 0, 0, 1 << 20);
  q.seqlen = a.integer("--seqlen", 0, 0, 1 << 24);
  q.seed = static_cast<uint64_t>(a.number("--seed", 1, 0, 9.0e15));
  q.n_threads = a.integer("--threads", 0, 0, 1024);
  std::signal(SIGINT, on_sigint);
  q.progress = [](const QuantizeProgress& p) {
    if (p.total > 0) {
      const int width = 30, filled = p.total ? width * p.step / p.total : 0;
      std::fprintf(stderr, "\r%-24s [%s%s] %d/%d", p.stage.c_str(), std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), p.step, p.total);
      if (p.eta_seconds > 0) std::fprintf(stderr, "  ~%.0f s left", p.eta_seconds);
      std::fprintf(stderr, "   ");
    }
    return !g_interrupted.load();
  };
  const auto t0 = std::chrono::steady_clock::now();
  quantize_to_file(path, a.str("--output"), q);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "\nwrote %s (%s, method %s) in %.1f s\n", a.str("--output").c_str(),
               human_bytes(double(std::filesystem::file_size(a.str("--output")))).c_str(), quant_method_name(q.method), s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    const Args a(args, kValueFlags, kSwitches, kAliases);
    if (a.has("--help")) {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (cmd == "info") return cmd_info(a);
    if (cmd == "generate") return cmd_generate(a);
    if (cmd == "chat") return cmd_chat(a);
    if (cmd == "ppl") return cmd_ppl(a);
    if (cmd == "quantize") return cmd_quantize(a);
    throw UsageError("unknown command '" + cmd + "' (try wkv --help)");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "wkv: %s\n", e.what());
    return 2;
  } catch (const wkv::Error& e) {
    std::fprintf(stderr, "wkv: %s: %s\n", wkv::error_code_name(e.code()), e.what());
    return e.code() == ErrorCode::cancelled ? 130 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wkv: error: %s\n", e.what());
    return 1;
  }
}
