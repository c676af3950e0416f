// WKVQuant calibration on the CPU (DESIGN "Calibration, WKVQuant"): learns per block the LWC logits a, b
// of its seven linears and the K/V smoothing δ, s, block by block, with cross-block reconstruction (CRR).
//
// For block l (0-based, n blocks):
//   input   the calibration segments passed through the already calibrated, quantized blocks < l
//   path    block l quantized (current a, b, δ, s; KV fake-quantized with token-level POQ), then the
//           full-precision blocks l+1 … l+k_l−1, k_l = min(k, n − l)
//   target  the full-precision model's output of block l+k_l−1 on the full-precision input
//   loss    CRR: mean |path − target| over every element; --no-crr: MSE of block l's own output (k_l = 1)
//   update  AdamW (β = 0.9, 0.999, ε = 1e-8, weight decay 0), lr 1e-2 for a, b and 5e-4 for δ, s, one
//           segment per step, `epochs` passes over the segments in a seeded random order
// Initialization: a = b = 4 (γ = β ≈ 0.982); δ, s from the full-precision K (after RoPE) / V channel
// ranges of block l on the calibration data (kv_smoothing_from_stats, BOS position excluded, like
// method stats). Ablations: use_lwc = false keeps RTN weights (γ = β = 1, nothing learned), use_smooth =
// false keeps identity smoothing. After block l is trained, the segments are passed through it
// (quantized, learned parameters) to give block l+1 its input.
#pragma once

#include <functional>
#include <vector>

#include "calib_block.h"
#include "wkv/engine.h"

namespace wkv::calib {

struct CalibrationProgress {
  int block = 0, n_blocks = 0;  // block being trained (0-based)
  int epoch = 0, epochs = 0;    // 1-based epoch
  int step = 0, steps = 0;      // steps done / total over the whole calibration
  double loss = 0;              // mean loss of the steps of this epoch so far
  double eta_seconds = 0;
};

struct CalibrationConfig {
  int epochs = 5;
  int crr_k = 5;
  bool use_crr = true;
  bool use_lwc = true;
  bool use_smooth = true;
  float lr_lwc = 1e-2f;
  float lr_smooth = 5e-4f;
  float weight_decay = 0.0f;
  int weight_group = 128;
  int kv_group = 0;  // 0 = head_dim
  uint64_t seed = 1;
  int max_blocks = 0;  // 0 = every block; n > 0 calibrates only blocks 0…n−1 (quick runs, tests)
  // Called after every step; return false to cancel (calibrate_wkvquant throws Error(cancelled)).
  std::function<bool(const CalibrationProgress&)> progress;
};

struct BlockCalibration {
  BlockQuantParams params;
  double initial_loss = 0;  // loss over all segments before training (initial parameters)
  double final_loss = 0;    // loss over all segments after training
};

struct CalibrationResult {
  std::vector<BlockCalibration> blocks;  // one per calibrated block, in order
};

// `n` segments of [BOS] + L−1 consecutive tokens of `ids`, start positions drawn uniformly with
// std::mt19937_64(seed) (the rule method stats uses). Throws when ids has fewer than L−1 tokens.
std::vector<std::vector<TokenId>> draw_calibration_segments(const std::vector<TokenId>& ids, int n, int L,
                                                            TokenId bos, uint64_t seed);

// Calibrates the blocks of a full-precision model (dense FP32 weights) on `segments` (all of one length).
CalibrationResult calibrate_wkvquant(const ModelInfo& info, const CpuModelWeights& weights,
                                     const std::vector<std::vector<TokenId>>& segments, const CalibrationConfig& cfg);

}  // namespace wkv::calib
