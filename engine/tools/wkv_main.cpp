// `wkv`: the engine's command-line tool.
//
//   wkv info MODEL
//   wkv quantize MODEL --method rtn|stats|wkvquant [--calib F] -o OUT.wkvq
//   wkv generate MODEL -p TEXT [sampling options]
//   wkv chat MODEL [--system TEXT] [sampling options]
//   wkv ppl MODEL FILE [--ctx L] [--max-windows N]
//   wkv summarize MODEL FILE [--mode M] [--max-tokens N]
//   wkv compare MODEL --modes fp16,w4,... -p TEXT [--fp16-model PATH]
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

#include "cli_common.h"
#include "wkv/engine.h"
#include "wkv/perplexity.h"
#include "wkv/quantize.h"

namespace {

using namespace wkv;
using namespace wkv::cli;

const std::set<std::string> kValueFlags = {"--tokenizer", "--threads", "--ctx", "--prompt", "--file", "--max-tokens",
                                           "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                                           "--repeat-window", "--seed", "--stop", "--system", "--template",
                                           "--max-windows", "--mode", "--group", "--kv-group", "--modes",
                                           "--method", "--calib", "--samples", "--seqlen", "--output",
                                           "--prompt-tokens", "--gen", "--depth", "--repeats", "--shape",
                                           "--fp16-model", "--epochs", "--crr-k", "--device"};
const std::set<std::string> kSwitches = {"--no-bos", "--ignore-eos", "--verbose", "--help", "--wkvq",
                                         "--no-crr", "--no-lwc", "--no-smooth", "--tf32", "--no-warmup"};
const std::map<std::string, std::string> kAliases = {
    {"-p", "--prompt"}, {"-f", "--file"}, {"-n", "--max-tokens"}, {"-v", "--verbose"}, {"-h", "--help"}, {"-t", "--threads"}, {"-o", "--output"}};

constexpr const char* kUsage = R"(wkv — WKV Chat inference engine (CUDA backend and CPU reference for every mode)

usage: wkv COMMAND [options]

commands:
  info MODEL                      print the model's configuration and sizes
  generate MODEL -p TEXT          complete TEXT, streaming tokens to stdout
  chat MODEL                      interactive chat in the terminal (empty line or /exit quits)
  ppl MODEL FILE                  perplexity of FILE (protocol of shared/models/README.md)
  quantize MODEL -o OUT.wkvq      quantize an FP16/BF16/FP32 checkpoint to a .wkvq file
  bench MODEL                     prefill and decode throughput per context depth (llama-bench style)
  synth --shape S -o OUT          write a random-weight model of a real shape (for timing)
  summarize MODEL FILE            summarize a text file (in parts when it exceeds the context)
  compare MODEL -p TEXT           one prompt through several modes: answers + Markdown table

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
  --method rtn|stats|wkvquant     rtn: round-to-nearest W4, no KV smoothing; stats: KV smoothing from
                                  calibration statistics (needs --calib); wkvquant: learned weight clipping
                                  and KV smoothing trained with CRR (needs --calib) (default stats)
  --calib FILE                    calibration text (use wiki.valid.raw for ref-a, never the test split)
  --samples N  --seqlen L         calibration segments and their length (default stats 32 x min(2048,
                                  context), wkvquant 128 x min(2048, context) on the GPU, 16 x
                                  min(512, context) on the CPU)
  --seed S                        seed of the segment draw and of the training order (default 1)
  --epochs E                      wkvquant: passes over the segments per block (default 5)
  --crr-k K                       wkvquant: CRR reconstructs the output of K blocks (default 5)
  --no-crr                        wkvquant: block-output MSE instead of CRR
  --no-lwc                        wkvquant: keep round-to-nearest weights (no learned clipping)
  --no-smooth                     wkvquant: keep identity KV smoothing (no learned smoothing)
  --device auto|cpu|cuda          wkvquant: where calibration runs; auto = the GPU when this build has CUDA
                                  and a GPU is present, else the CPU (default auto)
  --tf32                          wkvquant on the GPU: allow TF32 tensor cores in the FP32 GEMMs (faster on
                                  big models, ~1e-3 relative error per product; default full FP32)
  -o, --output FILE               the .wkvq file to write

bench options:
  --prompt-tokens N --gen N       prefill and decode lengths (default 512 and 128)
  --depth D1,D2,...               context already filled before timing (default 0)
  --repeats N                     runs per depth, the median is reported (default 3)
  --no-warmup                     skip the untimed run per depth (first kernel loads, graph capture)

summarize options:
  -n, --max-tokens N              answer tokens per part and for the summary (default 256); greedy
                                  unless --temp is given

compare options:
  --modes M1,M2,...               modes, one pane each (default fp16,w4,w4kv4-rtn,w4kv4-nopoq,w4a4);
                                  M=PATH runs that pane from its own model (e.g. w4kv4=ref-a.wkvq)
  --fp16-model PATH               FP16 checkpoint for divergence / NLL when MODEL is a .wkvq
  -n, --max-tokens N              tokens per answer (default 64); greedy unless --temp is given

synth options:
  --shape llama2-7b|llama2-13b|llama3-8b|tiny  --tokenizer PATH  [--wkvq] [--seed S] -o OUT

  -h, --help                      this help
)";

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
  if (model->backend() == BackendKind::cuda)
    std::printf("backend         cuda (%s)\n", model->device_name().c_str());
  else
    std::printf("backend         cpu (%d threads)%s%s\n", model->n_threads(), model->backend_notice().empty() ? "" : ": ",
                model->backend_notice().c_str());
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
    prompt = read_text_file(a.str("--file"));
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
  install_sigint_handler();
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
  install_sigint_handler();
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
    if (cmd == "bench") return cmd_bench(a);
    if (cmd == "synth") return cmd_synth(a);
    if (cmd == "summarize") return cmd_summarize(a);
    if (cmd == "compare") return cmd_compare(a);
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
