// `wkv`: the engine's command-line tool.
//
//   wkv info MODEL
//   wkv generate MODEL -p TEXT [sampling options]
//   wkv chat MODEL [--system TEXT] [sampling options]
//   wkv ppl MODEL FILE [--ctx L] [--max-windows N]
//
// Exit codes: 0 success, 1 runtime error (bad file, out of memory, …), 2 usage error, 130 interrupted.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli_args.h"
#include "wkv/engine.h"
#include "wkv/perplexity.h"

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

MODEL is a Hugging Face directory (config.json + *.safetensors + tokenizer.model) or a llama2.c
checkpoint (.bin with a tokenizer .model beside it).

common options:
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

  -h, --help                      this help
)";

std::atomic<bool> g_interrupted{false};

void on_sigint(int) { g_interrupted = true; }

const std::set<std::string> kValueFlags = {"--tokenizer", "--threads", "--ctx", "--prompt", "--file", "--max-tokens",
                                           "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                                           "--repeat-window", "--seed", "--stop", "--system", "--template",
                                           "--max-windows"};
const std::set<std::string> kSwitches = {"--no-bos", "--ignore-eos", "--verbose", "--help"};
const std::map<std::string, std::string> kAliases = {
    {"-p", "--prompt"}, {"-f", "--file"}, {"-n", "--max-tokens"}, {"-v", "--verbose"}, {"-h", "--help"}, {"-t", "--threads"}};

std::string model_arg(const Args& a, const char* cmd) {
  if (a.positional().empty()) throw UsageError(std::string(cmd) + ": missing MODEL");
  return a.positional()[0];
}

std::shared_ptr<Model> load_model(const Args& a, const std::string& path) {
  LoadOptions opt;
  opt.tokenizer_path = a.str("--tokenizer");
  opt.n_threads = a.integer("--threads", 0, 0, 1024);
  if (a.has("--template")) opt.chat_template = chat_template_from_name(a.str("--template"));
  return Model::load(path, opt);
}

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
  std::printf("backend         %s (%d threads)\n", backend_name(model->backend()), model->n_threads());
  const double kv_fp16 = 2.0 * i.n_layers * i.n_kv_heads * i.head_dim * 2;
  std::printf("KV cache        %s per token at FP16; %s for the full context\n", human_bytes(kv_fp16).c_str(),
              human_bytes(kv_fp16 * i.max_context).c_str());
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

int cmd_ppl(const Args& a) {
  if (a.positional().size() < 2) throw UsageError("ppl: usage: wkv ppl MODEL FILE [--ctx L] [--max-windows N]");
  const std::string file = a.positional()[1];
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, file + ": cannot open text file");
  std::ostringstream ss;
  ss << in.rdbuf();
  auto model = load_model(a, a.positional()[0]);
  PerplexityOptions opt;
  opt.ctx = a.integer("--ctx", 0, 0, 1 << 24);
  opt.max_windows = a.integer("--max-windows", 0, 0, 1 << 30);
  std::signal(SIGINT, on_sigint);
  const auto t0 = std::chrono::steady_clock::now();
  opt.progress = [&](int done, int total, double ppl) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\r[%d/%d] ppl %.4f  %.1f s elapsed, ~%.0f s left   ", done, total, ppl, s,
                 s / done * (total - done));
    return !g_interrupted.load();
  };
  const PerplexityResult r = evaluate_perplexity(model, ss.str(), opt);
  std::fprintf(stderr, "\n");
  std::printf("model %s\nfile %s\ntokens %lld, windows %d of %d (ctx %d), predictions %lld\nmean NLL %.6f\nperplexity %.4f\n"
              "time %.1f s (%.0f tokens/s)\n",
              model->info().path.c_str(), file.c_str(), static_cast<long long>(r.n_tokens), r.n_windows,
              r.n_windows_total, r.ctx, static_cast<long long>(r.n_predictions), r.mean_nll, r.ppl, r.seconds,
              r.n_windows * r.ctx / r.seconds);
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
