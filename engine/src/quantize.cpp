// quantize_to_file: FP16/BF16/FP32 checkpoint → .wkvq.
//
//   rtn    W4 round-to-nearest (γ = β = 1), identity KV smoothing
//   stats  W4 round-to-nearest + KV smoothing initialized from calibration statistics: the model runs
//          at full precision over `samples` segments of `seqlen` tokens drawn (seeded) from the
//          calibration text; per layer and KV channel the min/max of keys (after RoPE) and values give
//          δ = mid-range and s ∝ half-range^0.5 (quant_formats.h: kv_smoothing_from_stats). Each
//          segment is [BOS] + seqlen−1 tokens, like the model's training windows; the BOS position is
//          left out of the statistics because its keys/values are outliers of their own (the
//          attention sink) that per-token quantization already handles.
//   wkvquant  learned LWC clipping and KV smoothing, trained block by block with CRR on the CPU
//          (calibrate.h); the W4 weights are then quantized with the learned a, b and the learned δ, s are
//          saved. Runs on the GPU (cuda/calib_cuda.h) when options.device is "cuda", or "auto" and a GPU
//          is present. Defaults: on the GPU the paper's 128 segments × min(2048, context) tokens; on the
//          CPU 16 × min(512, context), which the reference can afford (--samples / --seqlen override both).
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "backend.h"
#include "calibrate.h"
#include "cuda/calib_cuda.h"
#include "model_loader.h"
#include "model_quant.h"
#include "sha256.h"
#include "wkv/quantize.h"
#include "wkvq.h"

namespace fs = std::filesystem;

namespace wkv {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, path + ": cannot open calibration text");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// SHA-256 over the files that define the source weights (config + safetensors, or the .bin).
std::string source_hash(const std::string& model_path) {
  Sha256 sha;
  std::vector<fs::path> files;
  if (fs::is_directory(model_path)) {
    for (const auto& e : fs::directory_iterator(model_path)) {
      const std::string n = e.path().filename().string();
      if (n == "config.json" || e.path().extension() == ".safetensors" || n == "model.safetensors.index.json")
        files.push_back(e.path());
    }
  } else {
    files.push_back(model_path);
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    const std::string h = sha256_file(f.string());
    const std::string line = f.filename().string() + " " + h + "\n";
    sha.update(line.data(), line.size());
  }
  return sha.hex_digest();
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct CalibStats {
  std::vector<KvChannelStats> k, v;
};

CalibStats collect_kv_stats(const Model& model, const std::vector<std::vector<TokenId>>& segments,
                            const QuantizeOptions& opt) {
  const ModelInfo& I = model.info();
  const int kv_dim = I.n_kv_heads * I.head_dim;
  CalibStats st;
  for (int l = 0; l < I.n_layers; ++l) {
    st.k.emplace_back(kv_dim);
    st.v.emplace_back(kv_dim);
  }
  SessionOptions so;
  const int seqlen = int(segments.front().size());
  auto state = make_cpu_session_state(model, so, seqlen);
  state->kv_observer = [&](int layer, const float* k, const float* v, int T) {
    st.k[layer].add_tokens(k + kv_dim, T - 1);  // skip the BOS row
    st.v[layer].add_tokens(v + kv_dim, T - 1);
  };
  std::vector<float> logits(I.vocab_size);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < segments.size(); ++i) {
    state->forward(segments[i].data(), seqlen, 0, logits.data(), false, 0);
    if (opt.progress) {
      QuantizeProgress p;
      p.stage = "calibration statistics";
      p.step = int(i + 1);
      p.total = int(segments.size());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      p.eta_seconds = s / p.step * (p.total - p.step);
      if (!opt.progress(p)) throw Error(ErrorCode::cancelled, "quantization cancelled");
    }
  }
  return st;
}

// Whether calibration runs on the GPU (QuantizeOptions::device).
bool calibrate_on_gpu(const QuantizeOptions& opt) {
  if (opt.device == "cpu") return false;
  if (opt.device != "auto" && opt.device != "cuda")
    throw Error(ErrorCode::invalid_argument, "quantize: device '" + opt.device + "': expected auto, cpu or cuda");
  std::string why;
  const bool gpu = calib::cuda_calibration_available(&why);
  if (opt.device == "cuda" && !gpu)
    throw Error(ErrorCode::unsupported, "quantize: --device cuda but GPU calibration is unavailable: " + why);
  return gpu;
}

}  // namespace

QuantizeReport quantize_to_file(const std::string& model_path, const std::string& out_path, const QuantizeOptions& opt) {
  auto report = [&](const char* stage, int step, int total) {
    if (!opt.progress) return;
    QuantizeProgress p;
    p.stage = stage;
    p.step = step;
    p.total = total;
    if (!opt.progress(p)) throw Error(ErrorCode::cancelled, "quantization cancelled");
  };
  if (out_path.empty()) throw Error(ErrorCode::invalid_argument, "quantize: no output path");
  // Decided before loading, so --device cuda without a GPU fails at once.
  const bool gpu_calib = opt.method == QuantMethod::wkvquant && calibrate_on_gpu(opt);
  QuantizeReport out_report;
  report("loading", 0, 1);
  LoadOptions lo;
  lo.n_threads = opt.n_threads;
  lo.mode = QuantMode::fp16;
  auto model = Model::load(model_path, lo);
  const ModelInfo& I = model->info();
  if (I.format == "wkvq") throw Error(ErrorCode::invalid_argument, model_path + ": already quantized (.wkvq)");

  json::Object calib;
  CalibStats stats;
  calib::CalibrationResult learned;
  if (opt.method == QuantMethod::stats || opt.method == QuantMethod::wkvquant) {
    if (opt.calib_path.empty())
      throw Error(ErrorCode::invalid_argument, std::string("method ") + quant_method_name(opt.method) +
                                                   " needs calibration text (--calib FILE, e.g. wiki.valid.raw)");
    const bool wkvq = opt.method == QuantMethod::wkvquant;
    const bool cpu_calib = wkvq && !gpu_calib;
    const int default_len = cpu_calib ? 512 : 2048;
    const int seqlen = opt.seqlen > 0 ? std::min(opt.seqlen, I.max_context) : std::min(default_len, I.max_context);
    const int samples = opt.samples > 0 ? opt.samples : (cpu_calib ? 16 : wkvq ? 128 : 32);
    const std::vector<TokenId> ids = model->tokenizer().encode(read_text(opt.calib_path), false);
    const auto segments = calib::draw_calibration_segments(ids, samples, seqlen, model->tokenizer().bos_id(), opt.seed);
    calib.emplace_back("file", fs::path(opt.calib_path).filename().string());
    calib.emplace_back("sha256", sha256_file(opt.calib_path));
    calib.emplace_back("samples", samples);
    calib.emplace_back("seqlen", seqlen);
    calib.emplace_back("seed", int64_t(opt.seed));
    if (!wkvq) {
      stats = collect_kv_stats(*model, segments, opt);
      calib.emplace_back("statistics", "per-channel min/max of K (after RoPE) and V, BOS position excluded");
    } else {
      calib::CalibrationConfig cc;
      cc.epochs = opt.epochs;
      cc.crr_k = opt.crr_k;
      cc.use_crr = opt.use_crr;
      cc.use_lwc = opt.use_lwc;
      cc.use_smooth = opt.use_smooth;
      cc.weight_group = opt.weight_group;
      cc.kv_group = opt.kv_group;
      cc.seed = opt.seed;
      if (opt.progress)
        cc.progress = [&](const calib::CalibrationProgress& p) {
          QuantizeProgress q;
          q.stage = "calibrating block " + std::to_string(p.block + 1) + "/" + std::to_string(p.n_blocks) + ", epoch " +
                    std::to_string(p.epoch) + "/" + std::to_string(p.epochs);
          q.step = p.step;
          q.total = p.steps;
          q.loss = p.loss;
          q.eta_seconds = p.eta_seconds;
          return opt.progress(q);
        };
      if (gpu_calib) {
        calib::CudaCalibOptions co;
        co.allow_tf32 = opt.allow_tf32;
        learned = calib::calibrate_wkvquant_cuda(I, model->cpu_weights(), segments, cc, co);
      } else {
        learned = calib::calibrate_wkvquant(I, model->cpu_weights(), segments, cc);
      }
      out_report.calib_device = learned.device;
      out_report.calib_seconds = learned.seconds;
      out_report.peak_device_bytes = learned.peak_device_bytes;
      json::Object run;
      run.emplace_back("device", learned.device);
      run.emplace_back("seconds", learned.seconds);
      if (learned.peak_device_bytes > 0) {
        run.emplace_back("peak_device_bytes", learned.peak_device_bytes);
        run.emplace_back("tf32", opt.allow_tf32);
      }
      calib.emplace_back("run", json::Value(std::move(run)));
      json::Object settings;
      settings.emplace_back("epochs", opt.epochs);
      settings.emplace_back("loss", opt.use_crr ? "CRR: mean absolute error after k blocks" : "block output MSE");
      settings.emplace_back("crr_k", opt.use_crr ? opt.crr_k : 1);
      settings.emplace_back("lwc", opt.use_lwc);
      settings.emplace_back("smoothing", opt.use_smooth);
      settings.emplace_back("optimizer", "AdamW (0.9, 0.999, eps 1e-8), weight decay 0, one segment per step");
      settings.emplace_back("lr_lwc", 1e-2);
      settings.emplace_back("lr_smoothing", 5e-4);
      settings.emplace_back("lwc_init", "a = b = 4");
      settings.emplace_back("smoothing_init", "K/V channel statistics (BOS excluded)");
      settings.emplace_back("poq", "token level");
      calib.emplace_back("settings", json::Value(std::move(settings)));
      json::Array losses;
      for (size_t l = 0; l < learned.blocks.size(); ++l) {
        json::Object b;
        b.emplace_back("block", int64_t(l));
        b.emplace_back("initial", learned.blocks[l].initial_loss);
        b.emplace_back("final", learned.blocks[l].final_loss);
        losses.emplace_back(json::Value(std::move(b)));
      }
      calib.emplace_back("losses", json::Value(std::move(losses)));
    }
  }

  if (out_report.calib_seconds > 0) {  // the calibration's figures as soon as they exist (long runs)
    char line[160];
    std::snprintf(line, sizeof line, "calibrated on %s in %.1f s, peak device memory %.1f MiB",
                  out_report.calib_device.c_str(), out_report.calib_seconds,
                  double(out_report.peak_device_bytes) / 1048576.0);
    report(line, 1, 1);
  }
  report("quantizing", 0, I.n_layers);
  // Model is immutable: quantize a copy of its weights (no second read or parse of the files).
  LoadedModel m;
  m.info = I;
  m.weights = std::make_unique<CpuModelWeights>(model->cpu_weights());
  m.tokenizer = Tokenizer::from_bytes(model->tokenizer().model_bytes(), model_path + " tokenizer");
  apply_quant_mode(m, QuantMode::w4, opt.weight_group);
  // wkvquant: re-quantize each block's linears with its learned clipping (the dense copies of `model`).
  for (size_t l = 0; l < learned.blocks.size(); ++l) {
    const calib::BlockQuantParams& P = learned.blocks[l].params;
    if (P.lwc)
      for (int i = 0; i < calib::kNumLinears; ++i) {
        const Linear& src = calib::block_linear(model->cpu_weights().layers[l], i);
        calib::block_linear(m.weights->layers[l], i).q4 = std::make_shared<const W4Matrix>(
            quantize_w4_ref(src.w.data(), src.out, src.in, opt.weight_group, P.a[i].data(), P.b[i].data()));
      }
    if (P.smooth) {
      KvSmoothing& sm = m.weights->layers[l].kv_smoothing;
      sm.k_delta = P.k_delta;
      sm.k_scale = P.k_scale;
      sm.v_delta = P.v_delta;
      sm.v_scale = P.v_scale;
    }
  }
  const int kv_group = opt.kv_group > 0 ? opt.kv_group : I.head_dim;
  validate_kv4_shape(I.head_dim, kv_group, "--kv-group");
  if (opt.method == QuantMethod::stats) {
    const int kv_dim = I.n_kv_heads * I.head_dim;
    for (int l = 0; l < I.n_layers; ++l) {
      KvSmoothing& sm = m.weights->layers[l].kv_smoothing;
      sm.k_delta.resize(kv_dim);
      sm.k_scale.resize(kv_dim);
      sm.v_delta.resize(kv_dim);
      sm.v_scale.resize(kv_dim);
      kv_smoothing_from_stats(stats.k[l].min.data(), stats.k[l].max.data(), kv_dim, sm.k_delta.data(), sm.k_scale.data());
      kv_smoothing_from_stats(stats.v[l].min.data(), stats.v[l].max.data(), kv_dim, sm.v_delta.data(), sm.v_scale.data());
    }
  }

  report("writing", 0, 1);
  WkvqMeta meta;
  meta.method = quant_method_name(opt.method);
  meta.weight_group = opt.weight_group;
  meta.kv_group = kv_group;
  json::Object prov;
  prov.emplace_back("source", fs::path(model_path).lexically_normal().filename().string());
  prov.emplace_back("source_format", I.format);
  prov.emplace_back("source_sha256", source_hash(model_path));
  prov.emplace_back("tool", std::string("wkv ") + WKV_VERSION);
  prov.emplace_back("created", utc_now());
  prov.emplace_back("method", meta.method);
  prov.emplace_back("weights", opt.method == QuantMethod::wkvquant && opt.use_lwc
                                   ? "learned weight clipping (LWC logits trained with WKVQuant)"
                                   : "round-to-nearest (LWC gamma = beta = 1)");
  if (!calib.empty()) prov.emplace_back("calibration", json::Value(std::move(calib)));
  meta.provenance = json::Value(std::move(prov));
  save_wkvq(out_path, m.info, *m.weights, *m.tokenizer, meta);
  report("writing", 1, 1);
  return out_report;
}

}  // namespace wkv
