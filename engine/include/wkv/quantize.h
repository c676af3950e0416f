// Producing a .wkvq file from an FP16/BF16/FP32 checkpoint (`wkv quantize`, the app's Quantize dialog).
#pragma once

#include <cstdint>
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
  int samples = 0;              // segments (0 = method default: stats 32; wkvquant 128 on the GPU, 16 on the CPU)
  int seqlen = 0;               // tokens per segment (0 = min(2048, context); CPU wkvquant min(512, context))
  uint64_t seed = 1;
  int n_threads = 0;
  // wkvquant only: epochs over the segments, CRR block count k, and the ablation switches (--no-crr:
  // block-output MSE instead of CRR; --no-lwc: RTN weights; --no-smooth: identity KV smoothing).
  int epochs = 5;
  int crr_k = 5;
  bool use_crr = true;
  bool use_lwc = true;
  bool use_smooth = true;
  // wkvquant only: where calibration runs. "auto" = the GPU when this build has CUDA and a device is present,
  // else the CPU; "cpu"; "cuda" (an error without CUDA / GPU). allow_tf32 lets the GPU's FP32 GEMMs use TF32
  // tensor cores (faster on big models, ~1e-3 relative per product; off = full FP32).
  std::string device = "auto";
  bool allow_tf32 = false;
  // Return false to cancel (quantize_to_file then throws Error(cancelled) and writes nothing).
  std::function<bool(const QuantizeProgress&)> progress;
};

// What quantize_to_file did beyond writing the file (also recorded in the file's provenance).
struct QuantizeReport {
  std::string calib_device;        // wkvquant: "cpu" or "cuda: <GPU name>"; empty when nothing was trained
  double calib_seconds = 0;        // wall time of the calibration
  int64_t peak_device_bytes = 0;   // GPU calibration: peak device memory its buffers held
};

// Loads `model_path` (an FP16/BF16/FP32 checkpoint), quantizes it and writes `out_path` (.wkvq).
QuantizeReport quantize_to_file(const std::string& model_path, const std::string& out_path, const QuantizeOptions& options);

}  // namespace wkv
