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
#include <string>
#include <vector>

namespace wkv {

struct DenseLinear {
  int out = 0;
  int in = 0;
  std::vector<float> w;  // [out][in]
};

struct LayerWeights {
  std::vector<float> attn_norm;  // [dim]
  DenseLinear wq;                // [H·D][dim]
  DenseLinear wk;                // [H_kv·D][dim]
  DenseLinear wv;                // [H_kv·D][dim]
  DenseLinear wo;                // [dim][H·D]
  std::vector<float> ffn_norm;   // [dim]
  DenseLinear w_gate;            // [ffn][dim]
  DenseLinear w_up;              // [ffn][dim]
  DenseLinear w_down;            // [dim][ffn]
};

class CpuModelWeights {
 public:
  std::vector<float> embed;  // [vocab][dim]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [dim]
  DenseLinear lm_head;            // [vocab][dim] (a copy of embed when tied)
};

}  // namespace wkv
