// FP32 forward and backward building blocks of WKVQuant calibration on the CPU (the reference the GPU
// calibrator is checked against).
//
// Layouts follow cpu_ops.h: activations row-major [T][n] (one row per token), weights [out][in]. Every
// *_bwd ACCUMULATES into its gradient outputs (callers zero them), so a tensor used twice (h feeding q,
// k and v) simply collects both contributions. Gradient pointers may be null where not needed.
//
// Fake quantization in training (DESIGN "Calibration"): the forward value is quantize→dequantize as in
// quant_formats.h but in plain float, without the FP16 rounding of stored scales / mins (the stored
// format is produced afterwards by quantize_w4_ref / quantize_kv4_ref with the learned parameters; the
// difference is the FP16 rounding of h, scale and min, ≤ 2^-11 relative). Backward uses the
// straight-through estimator (STE): d round(u)/du := 1. Precisely, the backward pass computes the exact
// derivative of the *STE surrogate* at the evaluation point θ0: the function in which every round(u) is
// replaced by u + (round(u0) − u0), every clamp by its branch at θ0 (the identity where
// lo ≤ v0 ≤ hi, inclusive as in torch.clamp, else the constant bound) and every max/min by the element
// that attains it at θ0. The surrogate equals the fake quantizer at θ0 and is smooth near θ0; the
// gradient tests finite-difference exactly this surrogate.
#pragma once

#include <cstdint>

namespace wkv::calib {

// y[t][o] = Σ_i x[t][i]·W[o][i].
void linear_fwd(const float* x, int T, int in, const float* W, int out, float* y);
// dx[t][i] += Σ_o dy[t][o]·W[o][i];  dW[o][i] += Σ_t dy[t][o]·x[t][i].
void linear_bwd(const float* x, int T, int in, const float* W, int out, const float* dy, float* dx, float* dW);

// y = x·r ⊙ w with r = (mean(x²) + eps)^(−1/2) per row; inv_rms[T] receives r (needed by the backward).
void rmsnorm_fwd(const float* x, const float* w, int T, int n, float eps, float* y, float* inv_rms);
// dx_j += r·w_j·dy_j − (r³·x_j/n)·Σ_i dy_i·w_i·x_i   (∂r/∂x_j = −r³·x_j/n). The norm weight is not trained.
void rmsnorm_bwd(const float* x, const float* w, const float* inv_rms, const float* dy, int T, int n, float* dx);

// RoPE in place, identical to cpu::rope (half-split pairs, position pos0 + t).
void rope_fwd(float* x, int T, int n_heads, int head_dim, int pos0, float theta);
// The rotation is orthogonal, so the backward rotates the gradient by −angle (in place).
void rope_bwd(float* dx, int T, int n_heads, int head_dim, int pos0, float theta);

// out = silu(g)·u, silu(g) = g·σ(g).
void swiglu_fwd(const float* g, const float* u, int64_t n, float* out);
// dg += dout·u·σ(g)·(1 + g·(1 − σ(g))),  du += dout·silu(g).
void swiglu_bwd(const float* g, const float* u, const float* dout, int64_t n, float* dg, float* du);

// Causal attention of T tokens at positions 0..T−1 with POQ token-level semantics (cpu_forward.cpp,
// token_level_poq): query t reads its own key/value k_t, v_t at full precision and every earlier j < t
// from the quantized kq_j, vq_j. kq == vq == nullptr: plain full-precision causal attention.
//   q [T][H·D] (after RoPE), k, v, kq, vq [T][Hkv·D]; head h uses KV head h / (H / Hkv).
//   probs [H][T][T]: softmax row t of head h in probs[(h·T + t)·T + j], j ≤ t (the rest is written 0).
//   out [T][H·D].
struct AttnShape {
  int T = 0, H = 0, Hkv = 0, D = 0;
};
void poq_attention_fwd(const AttnShape& s, const float* q, const float* k, const float* v, const float* kq,
                       const float* vq, float* probs, float* out);
// With s_tj = q_t·key_tj/√D, p = softmax_j(s), out_t = Σ_j p_tj·val_tj (key_tj = k_t for j = t, kq_j for
// j < t; same for val):  dp_tj = dout_t·val_tj;  ds_tj = p_tj·(dp_tj − Σ_i p_ti·dp_ti);
// dq_t += Σ_j ds_tj·key_tj/√D;  dkey_tj += ds_tj·q_t/√D;  dval_tj += p_tj·dout_t. The j = t terms go to
// dk / dv, the j < t terms to dkq / dvq (to dk / dv when kq is null).
void poq_attention_bwd(const AttnShape& s, const float* q, const float* k, const float* v, const float* kq,
                       const float* vq, const float* probs, const float* dout, float* dq, float* dk, float* dv,
                       float* dkq, float* dvq);

// ---- LWC weight fake quantization (OmniQuant's learnable weight clipping) ------------------------------
//
// W [rows][cols], groups of `group` consecutive input channels per row, logits a, b [rows][cols/group]
// (both null = RTN, γ = β = 1). Per group, with mx = max w, mn = min w:
//   γ = σ(a), β = σ(b), hi = γ·mx, lo = β·mn, h = max((hi − lo)/15, kLwcMinScale),
//   z = round(−lo/h), v = round(w/h) + z, q = clamp(v, 0, 15), w' = (q − z)·h.
// (quantize_w4_ref additionally rounds h to FP16 and has a fallback for degenerate groups.)
constexpr float kLwcMinScale = 1e-5f;  // OmniQuant's CLIPMIN: keeps h > 0 for constant groups
void lwc_fake_quant_fwd(const float* W, int rows, int cols, int group, const float* a, const float* b, float* Wq);
// Gradient w.r.t. a, b from g = dL/dw' (accumulated). STE surrogate per element, m = [0 ≤ v0 ≤ 15]:
//   q = m·(w/h + z) + const,  z = −lo/h + const
//   ⇒ dw' = [(q − z) − m·w/h + (m − 1)·lo/h]·dh + (1 − m)·dlo.
// Summed over the group: G_h = Σ g·[…], G_lo = Σ g·(1 − m). With h = (hi − lo)/15 (unclamped):
//   dL/dhi = G_h/15, dL/dlo = G_lo − G_h/15; dL/da = γ(1 − γ)·mx·dL/dhi, dL/db = β(1 − β)·mn·dL/dlo.
// (When h is clamped at kLwcMinScale it is constant: dL/dhi = 0, dL/dlo = G_lo.)
// The weights themselves are not trained, so no dL/dW is produced.
void lwc_fake_quant_bwd(const float* W, int rows, int cols, int group, const float* a, const float* b,
                        const float* dWq, float* da, float* db);

// ---- KV fake quantization, 2D (static smoothing + dynamic per-token groups) ----------------------------
//
// x [T][C] (C = Hkv·D, keys after RoPE or values), groups of G consecutive channels inside a token's row
// (G divides D, so a group never crosses a head), δ, s [C] (both null = identity). Per token and group:
//   x̃_c = (x_c − δ_c)/s_c, mn = min x̃, mx = max x̃, scale = (mx − mn)/15,
//   u_c = (x̃_c − mn)/scale ∈ [0, 15], q_c = round(u_c) (clamp never binds), y_c = q_c·scale + mn,
//   x̂_c = y_c·s_c + δ_c.            scale == 0 (constant group): y_c = mn.
void kv_fake_quant_fwd(const float* x, int T, int C, int G, const float* delta, const float* s, float* xq);
// From G_c = dL/dx̂_c (accumulated into dx, ddelta, ds; any may be null). STE surrogate: y_c = x̃_c +
// (q_c − u_c)·scale with q_c − u_c frozen, mn / mx the frozen argmin / argmax elements:
//   gy_c = G_c·s_c;  R = Σ_c gy_c·(q_c − u_c);  gx̃_c = gy_c + (R/15)·([c = argmax] − [c = argmin])
//   dL/dx_c = gx̃_c/s_c;  dL/dδ_c = G_c − gx̃_c/s_c;  dL/ds_c = G_c·y_c − gx̃_c·x̃_c/s_c.
// (scale == 0: y_c = mn for all c, so gx̃_argmin = Σ_c gy_c and every other gx̃_c = 0.)
void kv_fake_quant_bwd(const float* x, int T, int C, int G, const float* delta, const float* s, const float* dxq,
                       float* dx, float* ddelta, float* ds);

}  // namespace wkv::calib
