// One LLaMA decoder block, forward and backward in FP32 on the CPU, for WKVQuant calibration.
//
// Input x [N][L][dim]: N calibration segments of L tokens, every segment at positions 0..L−1. Per segment
// (the arithmetic of cpu_forward.cpp):
//   h1 = RMSNorm(x)·attn_norm;  q = h1·Wq'ᵀ, k = h1·Wk'ᵀ, v = h1·Wv'ᵀ;  RoPE(q), RoPE(k)
//   k̂ = KVfq(k; δk, sk), v̂ = KVfq(v; δv, sv)                    (2D fake quantization, calib_ops.h)
//   att = POQ attention(q, k, v, k̂, v̂)                           (token-level POQ)
//   x2 = x + att·Wo'ᵀ;  h2 = RMSNorm(x2)·ffn_norm
//   y  = x2 + (silu(h2·Wg'ᵀ) ⊙ h2·Wu'ᵀ)·Wd'ᵀ
// Quantized path (params given): W' = LWC fake quantization of W with the block's a, b (RTN γ = β = 1
// when LWC is off), KV fake-quantized with the smoothing (identity when smoothing is off). Full-precision
// path (params null): W' = W, k̂ = k, v̂ = v (plain causal attention).
//
// The backward propagates dL/dy to dL/dx (always possible, so CRR reaches block l through the FP blocks
// l+1…l+k−1) and, on the quantized path, to dL/d(a, b, δ, s). The weights and norms are not trained.
#pragma once

#include <array>
#include <vector>

#include "calib_ops.h"
#include "cpu_weights.h"
#include "wkv/engine.h"

namespace wkv::calib {

struct BlockShape {
  int dim = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, ffn = 0;
  float rope_theta = 10000.0f, norm_eps = 1e-5f;
  int weight_group = 128;  // W4 group (must divide every linear's input size, multiple of 8)
  int kv_group = 0;        // KV4 group (0 = head_dim)

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int kv_g() const { return kv_group > 0 ? kv_group : head_dim; }
};
// Shape of the model's blocks; throws wkv::Error(invalid_argument) when a group size does not fit.
BlockShape block_shape_of(const ModelInfo& info, int weight_group, int kv_group);

// The seven linears of a block, in this order everywhere (params, grads, tape).
enum LinearIndex { kWq, kWk, kWv, kWo, kWgate, kWup, kWdown, kNumLinears };
const char* linear_name(int i);  // "wq", …, "w_down"
const Linear& block_linear(const LayerWeights& w, int i);
Linear& block_linear(LayerWeights& w, int i);

// Learnable quantization parameters of one block (also used for their gradients and Adam moments).
struct BlockQuantParams {
  bool lwc = true;                                 // false: RTN weights, a / b unused (empty)
  std::array<std::vector<float>, kNumLinears> a;   // [out][in/group]
  std::array<std::vector<float>, kNumLinears> b;
  bool smooth = true;                              // false: identity smoothing, δ / s unused (empty)
  std::vector<float> k_delta, k_scale, v_delta, v_scale;  // [Hkv·D]
};
// a = b = lwc_init for every group when lwc; δ = 0, s = 1 when smooth (callers overwrite with statistics).
BlockQuantParams make_block_params(const BlockShape& s, bool lwc, bool smooth, float lwc_init = 4.0f);
// Same layout, every value 0 (gradient accumulators, moments).
BlockQuantParams zeros_like(const BlockQuantParams& p);
// Calls f(param_vector, is_lwc) for every trained vector.
template <class P, class F>
void for_each_param(P& p, F&& f) {
  if (p.lwc)
    for (int i = 0; i < kNumLinears; ++i) {
      f(p.a[i], true);
      f(p.b[i], true);
    }
  if (p.smooth) {
    f(p.k_delta, false);
    f(p.k_scale, false);
    f(p.v_delta, false);
    f(p.v_scale, false);
  }
}

// What the backward needs from the forward, for N segments of L tokens.
struct BlockTape {
  int N = 0, L = 0;
  bool quantized = false;
  std::array<std::vector<float>, kNumLinears> wq;  // fake-quantized weights (quantized path only)
  std::vector<float> x, h1, inv1, q, k, v, kq, vq, probs, att, x2, h2, inv2, g, u, act;
};

// y [N][L][dim] from x [N][L][dim]. `tape` (may be null) receives what block_backward needs.
void block_forward(const BlockShape& s, const LayerWeights& w, const BlockQuantParams* params, const float* x,
                   int N, int L, float* y, BlockTape* tape);
// dx [N][L][dim] (overwritten; may be null) and, when the tape is of the quantized path, grads (accumulated;
// same layout as the params) from dy [N][L][dim].
void block_backward(const BlockShape& s, const LayerWeights& w, const BlockQuantParams* params,
                    const BlockTape& tape, const float* dy, float* dx, BlockQuantParams* grads);

}  // namespace wkv::calib
