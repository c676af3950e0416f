// Weights of a LLaMA model as the CPU backend holds them.
//
// All matrices are row-major [out][in] (the PyTorch nn.Linear / safetensors layout), converted to FP32
// at load time whatever the file's dtype (FP16 / BF16 / FP32): the CPU backend is the numerical
// reference, so it computes in FP32 over the exact values the file holds.
//
// RoPE convention: rows of wq / wk are in the Hugging Face "half-split" order (rotation pairs
// (i, i + D/2) inside each head). Loaders of checkpoints with the interleaved convention (llama2.c,
// Meta) permute rows at load time so one forward pass serves all formats.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "quant_formats.h"

namespace wkv {

// A linear layer y = x·Wᵀ. Exactly one of `w` (dense FP32) and `q4` (W4, see quant_formats.h) holds
// the weights. `act4` marks the W4A4 baseline: the input is fake-quantized per token to 4 bits first.
struct Linear {
  int out = 0;
  int in = 0;
  std::vector<float> w;  // [out][in], empty when quantized
  std::shared_ptr<const W4Matrix> q4;
  bool act4 = false;

  Linear() = default;
  Linear(int out_, int in_, std::vector<float> w_) : out(out_), in(in_), w(std::move(w_)) {}
  bool quantized() const { return q4 != nullptr; }
  // Bytes of the weights in their storage format (FP16 for dense ones) and at FP16.
  int64_t format_bytes() const { return q4 ? int64_t(q4->bytes()) : int64_t(out) * in * 2; }
  int64_t resident_bytes() const { return q4 ? int64_t(q4->bytes()) : int64_t(w.size()) * 4; }
};

// Static KV smoothing of one layer (DESIGN 2D quantization, step 1), [H_kv·D] each. Empty = identity.
struct KvSmoothing {
  std::vector<float> k_delta, k_scale, v_delta, v_scale;
  bool identity() const { return k_delta.empty(); }
};

struct LayerWeights {
  std::vector<float> attn_norm;  // [dim]
  Linear wq;                // [H·D][dim]
  Linear wk;                // [H_kv·D][dim]
  Linear wv;                // [H_kv·D][dim]
  Linear wo;                // [dim][H·D]
  std::vector<float> ffn_norm;   // [dim]
  Linear w_gate;            // [ffn][dim]
  Linear w_up;              // [ffn][dim]
  Linear w_down;            // [dim][ffn]
  KvSmoothing kv_smoothing;
};

class CpuModelWeights {
 public:
  std::vector<float> embed;  // [vocab][dim]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [dim]
  Linear lm_head;            // [vocab][dim] (a copy of embed when tied)
};

}  // namespace wkv
