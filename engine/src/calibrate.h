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

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "calib_block.h"
#include "quant_formats.h"
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
  std::string device = "cpu";            // where it ran: "cpu" or "cuda: <GPU name>"
  double seconds = 0;                    // wall time of the whole calibration
  int64_t peak_device_bytes = 0;         // CUDA: peak bytes the calibrator held in device buffers (else 0)
};

// What the calibration loop asks of the device it runs on; the loop itself (run_calibration) is written
// once. Implementations: the CPU reference (calibrate.cpp) and CUDA (cuda/calib_cuda.cpp).
//
// The backend holds two activation sets of the N segments, [N][L][dim] each:
//   fp  the full-precision stream: starts as the embeddings (input of block 0) and is advanced one block at
//       a time; while block l trains it holds fp[l + k_l], the CRR target (targets are needed in increasing
//       order, so one buffer suffices instead of one per boundary);
//   qx  the input of the block being trained, through the already calibrated quantized blocks before it.
class CalibBackend {
 public:
  virtual ~CalibBackend() = default;
  // fp = qx = the embeddings of the segments.
  virtual void load_inputs(const std::vector<std::vector<TokenId>>& segments) = 0;
  // fp ← full-precision block `layer` applied to fp (which must be that block's input). With kstats /
  // vstats, adds every segment's K (after RoPE) / V rows of the block except the BOS row.
  virtual void advance_fp(int layer, KvChannelStats* kstats, KvChannelStats* vstats) = 0;
  // Starts block l with the CRR path l … l+k−1 and the parameters `init`; resets the optimizer.
  virtual void begin_block(int l, int k, const BlockQuantParams& init) = 0;
  // Loss of segment n with the current parameters (no gradient).
  virtual double eval_loss(int n) = 0;
  // Loss of segment n, its gradient, and one AdamW step (calibrate.h's settings) on the parameters.
  virtual double train_step(int n) = 0;
  // The current parameters.
  virtual BlockQuantParams params() = 0;
  // qx ← block l quantized with the current parameters applied to qx (the next block's input).
  virtual void advance_quantized(int l) = 0;
};

// Checks the segments (non-empty, one length ≥ 2, ids in the vocabulary) and cfg; returns the block shape.
BlockShape check_calibration_inputs(const ModelInfo& info, const std::vector<std::vector<TokenId>>& segments,
                                    const CalibrationConfig& cfg);
// The calibration loop over a backend: statistics, initialization, epochs in the seeded order, progress and
// cancellation, next-block inputs. Fills blocks and seconds (device / peak memory are the caller's).
CalibrationResult run_calibration(CalibBackend& backend, const ModelInfo& info, const BlockShape& shape,
                                  const std::vector<std::vector<TokenId>>& segments, const CalibrationConfig& cfg);

// `n` segments of [BOS] + L−1 consecutive tokens of `ids`, start positions drawn uniformly with
// std::mt19937_64(seed) (the rule method stats uses). Throws when ids has fewer than L−1 tokens.
std::vector<std::vector<TokenId>> draw_calibration_segments(const std::vector<TokenId>& ids, int n, int L,
                                                            TokenId bos, uint64_t seed);

// Calibrates the blocks of a full-precision model (dense FP32 weights) on `segments` (all of one length).
CalibrationResult calibrate_wkvquant(const ModelInfo& info, const CpuModelWeights& weights,
                                     const std::vector<std::vector<TokenId>>& segments, const CalibrationConfig& cfg);

}  // namespace wkv::calib
