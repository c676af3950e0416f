// `wkv ppl` (one mode or a table of modes) and `wkv quantize`.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include "cli_common.h"
#include "wkv/perplexity.h"
#include "wkv/quantize.h"

namespace wkv::cli {
namespace {

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

}  // namespace

int cmd_ppl(const Args& a) {
  if (a.positional().size() < 2) throw UsageError("ppl: usage: wkv ppl MODEL FILE [--ctx L] [--max-windows N] [--mode M | --modes all]");
  const std::string file = a.positional()[1];
  const std::string text = read_text_file(file);
  PerplexityOptions opt;
  opt.ctx = a.integer("--ctx", 0, 0, 1 << 24);
  opt.max_windows = a.integer("--max-windows", 0, 0, 1 << 30);
  install_sigint_handler();
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
  q.epochs = a.integer("--epochs", 5, 1, 100000);
  q.crr_k = a.integer("--crr-k", 5, 1, 100000);
  q.use_crr = !a.has("--no-crr");
  q.use_lwc = !a.has("--no-lwc");
  q.use_smooth = !a.has("--no-smooth");
  q.device = a.str("--device", "auto");
  if (q.device != "auto" && q.device != "cpu" && q.device != "cuda")
    throw UsageError("--device expects auto, cpu or cuda, got '" + q.device + "'");
  q.allow_tf32 = a.has("--tf32");
  if (q.method != QuantMethod::wkvquant)
    for (const char* f : {"--epochs", "--crr-k", "--no-crr", "--no-lwc", "--no-smooth", "--device", "--tf32"})
      if (a.has(f)) throw UsageError(std::string(f) + " applies to --method wkvquant only");
  install_sigint_handler();
  q.progress = [](const QuantizeProgress& p) {
    if (p.total > 0) {
      const int width = 30, filled = p.total ? width * p.step / p.total : 0;
      std::fprintf(stderr, "\r%-24s [%s%s] %d/%d", p.stage.c_str(), std::string(filled, '#').c_str(),
                   std::string(width - filled, ' ').c_str(), p.step, p.total);
      if (p.loss > 0) std::fprintf(stderr, "  loss %.5f", p.loss);
      if (p.eta_seconds > 0) std::fprintf(stderr, "  ~%.0f s left", p.eta_seconds);
      std::fprintf(stderr, "   ");
    }
    return !g_interrupted.load();
  };
  const auto t0 = std::chrono::steady_clock::now();
  const QuantizeReport r = quantize_to_file(path, a.str("--output"), q);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "\nwrote %s (%s, method %s) in %.1f s\n", a.str("--output").c_str(),
               human_bytes(double(std::filesystem::file_size(a.str("--output")))).c_str(), quant_method_name(q.method), s);
  if (!r.calib_device.empty()) {
    std::fprintf(stderr, "calibration on %s: %.1f s", r.calib_device.c_str(), r.calib_seconds);
    if (r.peak_device_bytes > 0)
      std::fprintf(stderr, ", peak GPU memory %s%s", human_bytes(double(r.peak_device_bytes)).c_str(),
                   q.allow_tf32 ? " (TF32 GEMMs)" : "");
    std::fprintf(stderr, "\n");
  }
  return 0;
}

}  // namespace wkv::cli
