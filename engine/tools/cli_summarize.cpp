// `wkv summarize` (map-reduce summary of a long text file) and `wkv compare` (one prompt through
// several quantization modes, answers plus a Markdown table).
#include <cstdio>
#include <sstream>

#include "cli_common.h"
#include "wkv/compare.h"
#include "wkv/summarize.h"

namespace wkv::cli {

int cmd_summarize(const Args& a) {
  if (a.positional().size() < 2) throw UsageError("summarize: usage: wkv summarize MODEL FILE [--max-tokens N]");
  const std::string text = read_text_file(a.positional()[1]);
  auto model = load_model(a, a.positional()[0]);
  SessionOptions so;
  so.n_ctx = a.integer("--ctx", 0, 0, 1 << 24);
  Session session(model, so);
  SummarizeOptions opt;
  opt.max_answer_tokens = a.integer("--max-tokens", opt.max_answer_tokens, 1, 1 << 20);
  opt.sampling = a.has("--temp") ? sampling_from(a) : SamplingParams::greedy();
  if (a.has("--seed")) opt.sampling.seed = sampling_from(a).seed;
  install_sigint_handler();
  SummarizeCallbacks cb;
  const bool verbose = a.has("--verbose");
  cb.on_plan = [&](const SummaryPlan& p) {
    if (p.direct)
      std::fprintf(stderr, "wkv: %d tokens fit the %d-token context: one pass\n", p.document_tokens, p.n_ctx);
    else
      std::fprintf(stderr, "wkv: %d tokens > %d per part: %d parts, %d combine level(s), %zu steps\n",
                   p.document_tokens, p.chunk_budget, p.n_chunks, p.n_levels, p.steps.size());
  };
  int last_step = -1;
  cb.progress = [&](const SummarizeProgress& p) {
    if (p.phase == SummarizeProgress::Phase::prefill && p.step != last_step) {
      last_step = p.step;
      std::fprintf(stderr, "wkv: part %d/%d (%s, %d prompt tokens)\n", p.step + 1, p.n_steps,
                   p.kind == SummaryStep::Kind::combine ? "combine" : "text", p.total);
    }
    return !g_interrupted.load();
  };
  if (verbose)
    cb.on_text = [](int, const std::string& t) {
      std::fwrite(t.data(), 1, t.size(), stderr);
      std::fflush(stderr);
    };
  const SummarizeResult r = summarize(session, text, opt, cb);
  if (r.cancelled) {
    std::fprintf(stderr, "wkv: interrupted after %d of %zu steps\n", r.steps_done, r.plan.steps.size());
    return 130;
  }
  std::printf("%s\n", r.summary.c_str());
  if (verbose)
    std::fprintf(stderr, "\nwkv: %lld tokens prefilled, %lld generated, %.1f s\n",
                 static_cast<long long>(r.tokens_prefilled), static_cast<long long>(r.tokens_generated), r.seconds);
  return 0;
}

int cmd_compare(const Args& a) {
  const std::string model_path = model_arg(a, "compare");
  if (!a.has("--prompt")) throw UsageError("compare: give the prompt with -p TEXT");
  CompareOptions opt;
  opt.model_path = model_path;
  opt.prompt = a.str("--prompt");
  opt.fp16_model_path = a.str("--fp16-model");
  opt.load = load_options(a);
  opt.n_ctx = a.integer("--ctx", 0, 0, 1 << 24);
  opt.generate = generate_options(a);
  if (!a.has("--temp")) opt.generate.sampling = SamplingParams::greedy();
  if (a.has("--seed")) opt.generate.sampling.seed = sampling_from(a).seed;
  if (!a.has("--max-tokens")) opt.generate.max_tokens = 64;
  // --modes fp16,w4kv4 ; a mode may name its own model: w4kv4=path/to/model.wkvq
  std::stringstream ss(a.str("--modes", "fp16,w4,w4kv4-rtn,w4kv4-nopoq,w4a4"));
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    ComparePane p;
    const size_t eq = item.find('=');
    p.mode = quant_mode_from_name(item.substr(0, eq));
    if (eq != std::string::npos) p.model_path = item.substr(eq + 1);
    opt.panes.push_back(p);
  }
  install_sigint_handler();
  CompareCallbacks cb;
  cb.on_pane_start = [&](int i) {
    std::fprintf(stderr, "wkv: pane %d/%zu: %s\n", i + 1, opt.panes.size(), quant_mode_name(opt.panes[size_t(i)].mode));
  };
  cb.on_token = [](int, const TokenEvent&) { return !g_interrupted.load(); };
  cb.keep_going = [] { return !g_interrupted.load(); };
  const CompareResult r = compare_modes(opt, cb);
  std::fputs(compare_report(r).c_str(), stdout);
  return r.cancelled ? 130 : 0;
}

}  // namespace wkv::cli
