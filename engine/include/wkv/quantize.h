// Producing a .wkvq file from an FP16/BF16/FP32 checkpoint (`wkv quantize`, the app's Quantize dialog).
#pragma once

#include <functional>
#include <string>

#include "wkv/engine.h"

namespace wkv {

enum class QuantMethod {
  rtn,       // round-to-nearest W4 (γ = β = 1), identity KV smoothing
  stats,     // RTN W4 + KV smoothing initialized from calibration statistics (channel ranges)
  wkvquant,  // learned LWC + learned smoothing, trained with CRR (needs the calibration support)
};
const char* quant_method_name(QuantMethod m);
QuantMethod quant_method_from_name(const std::string& name);  // throws invalid_argument

struct QuantizeProgress {
  std::string stage;   // "loading", "calibration statistics", "calibrating", "quantizing", "writing"
  int step = 0;        // e.g. layer or sample index
  int total = 0;
  double loss = 0;     // calibration loss where meaningful
  double eta_seconds = 0;
};

struct QuantizeOptions {
  QuantMethod method = QuantMethod::stats;
  int weight_group = 128;
  int kv_group = 0;             // 0 = head_dim
  std::string calib_path;       // calibration text (stats / wkvquant); e.g. wiki.valid.raw
  int samples = 0;              // segments (0 = method default)
  int seqlen = 0;               // tokens per segment (0 = min(2048, model context))
  uint64_t seed = 1;
  int n_threads = 0;
  // wkvquant only: epochs over the segments, CRR block count k, and the ablation switches (--no-crr:
  // block-output MSE instead of CRR; --no-lwc: RTN weights; --no-smooth: identity KV smoothing).
  int epochs = 5;
  int crr_k = 5;
  bool use_crr = true;
  bool use_lwc = true;
  bool use_smooth = true;
  // Return false to cancel (quantize_to_file then throws Error(cancelled) and writes nothing).
  std::function<bool(const QuantizeProgress&)> progress;
};

// Loads `model_path` (an FP16/BF16/FP32 checkpoint), quantizes it and writes `out_path` (.wkvq).
void quantize_to_file(const std::string& model_path, const std::string& out_path, const QuantizeOptions& options);

}  // namespace wkv
