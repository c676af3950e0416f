// WKVQuant calibration building blocks on the GPU: the device versions of engine/src/calib_ops.h, with
// the SAME semantics (derivations, STE surrogate and layouts are documented there and not repeated).
//
// All pointers are FP32 device memory; all launches are asynchronous on the stream of `blas` or the
// given stream. Layouts: activations row-major [T][n], weights [out][in], probs [H][T][T]. Every *_bwd
// ACCUMULATES into its gradient outputs (callers zero them); gradient pointers may be null where not
// needed. Invalid sizes throw wkv::Error(invalid_argument); CUDA / cuBLAS failures throw runtime_error.
//
// Differences from the CPU reference, all at FP32 rounding level (the GPU tests state the budgets):
// - sums run in another order (cuBLAS GEMMs, warp/block reductions; the reductions the CPU does in double
//   are done in double here too);
// - expf on the device is within 2 ulp of the host's exp, so a sigmoid / softmax value can differ in the
//   last bit, and a fake-quantization rounding that sits on a tie (u within an ulp of k + 0.5) can flip
//   to the neighbouring level; random data hits this with probability ~1e-6 per element;
// - the fake-quantization formulas are evaluated with separately rounded products and sums (no FMA
//   contraction), i.e. the plain float semantics the header of calib_ops.h states.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace wkv::kernels::calib {

// A cuBLAS handle bound to a stream. allow_tf32 = true lets cuBLAS use TF32 tensor cores for the FP32
// GEMMs (~8× the FP32 rate on H100/H200 but a 10-bit mantissa for the products, i.e. ~1e-3 relative
// error per GEMM instead of ~1e-6); the default (false) computes in full FP32, which is what the tests
// compare against the CPU. TF32 is meant for large models where the calibration time matters more.
class Blas {
 public:
  explicit Blas(cudaStream_t stream = 0, bool allow_tf32 = false);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cudaStream_t stream() const { return stream_; }
  bool tf32() const { return tf32_; }
  void* handle() const { return handle_; }  // cublasHandle_t

 private:
  void* handle_ = nullptr;
  cudaStream_t stream_ = 0;
  bool tf32_ = false;
};

// y[t][o] = Σ_i x[t][i]·W[o][i]  (overwritten).
void linear_fwd(Blas& blas, const float* x, int T, int in, const float* W, int out, float* y);
// dx[t][i] += Σ_o dy[t][o]·W[o][i];  dW[o][i] += Σ_t dy[t][o]·x[t][i]  (either may be null).
void linear_bwd(Blas& blas, const float* x, int T, int in, const float* W, int out, const float* dy, float* dx,
                float* dW);

// y = x·r ⊙ w, r = (mean(x²) + eps)^(−1/2) per row (sum of squares in double, like cpu::rmsnorm);
// inv_rms [T] receives r. One block per row.
void rmsnorm_fwd(const float* x, const float* w, int T, int n, float eps, float* y, float* inv_rms,
                 cudaStream_t stream = 0);
// dx_j += r·w_j·dy_j − (r³·x_j/n)·Σ_i dy_i·w_i·x_i  (the dot in double).
void rmsnorm_bwd(const float* x, const float* w, const float* inv_rms, const float* dy, int T, int n, float* dx,
                 cudaStream_t stream = 0);

// RoPE in place on [T][n_heads·D] (half-split pairs, position pos0 + t), the float operations of
// cpu::rope / kernels::rope (θ power in double, rounded once); the backward rotates by −angle.
void rope_fwd(float* x, int T, int n_heads, int head_dim, int pos0, float theta, cudaStream_t stream = 0);
void rope_bwd(float* dx, int T, int n_heads, int head_dim, int pos0, float theta, cudaStream_t stream = 0);

// out = silu(g)·u;  dg += dout·u·σ(g)·(1 + g·(1 − σ(g))),  du += dout·silu(g).
void swiglu_fwd(const float* g, const float* u, int64_t n, float* out, cudaStream_t stream = 0);
void swiglu_bwd(const float* g, const float* u, const float* dout, int64_t n, float* dg, float* du,
                cudaStream_t stream = 0);

// ---- POQ attention (token level; kq == vq == null: plain causal) ----------------------------------------
//
// q [T][H·D], k, v, kq, vq [T][Hkv·D], probs [H][T][T] (row t of head h, zeros above the diagonal),
// out [T][H·D]; head h reads KV head h / (H / Hkv). Per head:
//   S = Q·Kqᵀ/√D by cuBLAS into probs (the full T×T; the upper triangle is wasted work but keeps it one
//   GEMM); a row kernel replaces the diagonal by q_t·k_t/√D (the token's own full-precision key), masks
//   j > t, applies the softmax (sum in double), and parks p_tt in the scratch with the diagonal zeroed;
//   out = P·Vq by cuBLAS (the strictly-lower part); a diagonal kernel adds p_tt·v_t and restores p_tt.
struct AttnShape {
  int T = 0, H = 0, Hkv = 0, D = 0;
};
size_t poq_attention_fwd_scratch_floats(const AttnShape& s);  // T
void poq_attention_fwd(Blas& blas, const AttnShape& s, const float* q, const float* k, const float* v,
                       const float* kq, const float* vq, float* probs, float* out, float* scratch);
// Per head: dP = dOut·Vqᵀ (cuBLAS, into scratch SB [T][T]); a row kernel computes dp_tt = dout_t·v_t,
// Σ_j p_tj·dp_tj (double), ds_tj = p_tj·(dp_tj − Σ)/√D for j < t into SB (zero elsewhere), the strictly
// lower P into scratch PB, and adds every diagonal term itself (dq_t += ds_tt·k_t, dk_t += ds_tt·q_t,
// dv_t += p_tt·dout_t); then cuBLAS: dq += SB·Kq, dkq += SBᵀ·Q, dvq += PBᵀ·dOut. Heads run one after
// another on the stream, so the GQA heads sharing a KV head accumulate into it without races.
size_t poq_attention_bwd_scratch_floats(const AttnShape& s);  // 2·T·T
void poq_attention_bwd(Blas& blas, const AttnShape& s, const float* q, const float* k, const float* v,
                       const float* kq, const float* vq, const float* probs, const float* dout, float* dq,
                       float* dk, float* dv, float* dkq, float* dvq, float* scratch);

// ---- LWC weight fake quantization (one warp per group) --------------------------------------------------
// W [rows][cols], groups of `group` input channels, a, b [rows][cols/group] logits (both null: RTN).
void lwc_fake_quant_fwd(const float* W, int rows, int cols, int group, const float* a, const float* b, float* Wq,
                        cudaStream_t stream = 0);
// da, db += the STE gradients from dWq (per-group sums in double).
void lwc_fake_quant_bwd(const float* W, int rows, int cols, int group, const float* a, const float* b,
                        const float* dWq, float* da, float* db, cudaStream_t stream = 0);

// ---- KV 2D fake quantization (one warp per token and group) ---------------------------------------------
// x [T][C], G | C, delta, s [C] (both null: identity). Ties in min / max go to the lowest channel, as on
// the CPU.
void kv_fake_quant_fwd(const float* x, int T, int C, int G, const float* delta, const float* s, float* xq,
                       cudaStream_t stream = 0);
// dx += per element; ddelta, ds += per channel summed over tokens in token order (deterministic: the
// per-(token, channel) terms go to the scratch first, then one thread per channel adds them up).
size_t kv_fake_quant_bwd_scratch_floats(int T, int C);  // 2·T·C
void kv_fake_quant_bwd(const float* x, int T, int C, int G, const float* delta, const float* s, const float* dxq,
                       float* dx, float* ddelta, float* ds, float* scratch, cudaStream_t stream = 0);

// ---- loss and optimizer ----------------------------------------------------------------------------------
// e = pred − target (in double). mae: loss = Σ|e|, grad = sign(e)/n; else loss = Σe², grad = 2e/n (grad as
// float, overwritten). *loss_out (device double) receives the SUM (the caller divides by n), reduced in a
// fixed order (per-block partials in `partials`, then one block), so the result is deterministic.
constexpr int kLossBlocks = 256;  // partials must hold kLossBlocks doubles
void loss_and_grad(const float* pred, const float* target, int64_t n, bool mae, float* grad, double* partials,
                   double* loss_out, cudaStream_t stream = 0);

// AdamW step over n parameters, exactly calibrate.cpp's arithmetic (double intermediates, moments stored as
// float): m ← b1·m + (1−b1)·g, v ← b2·v + (1−b2)·g², p ← p·(1 − lr·wd) − lr·(m/c1)/(√(v/c2) + eps), with
// b1 0.9, b2 0.999, eps 1e-8 and the bias corrections c1 = 1 − b1^t, c2 = 1 − b2^t computed on the host
// in double by the caller (passed as double, so nothing is lost).
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, double lr, double wd, double c1, double c2,
                cudaStream_t stream = 0);
// p = max(p, lo) elementwise (keeps the smoothing scales positive).
void clamp_min(float* p, int64_t n, float lo, cudaStream_t stream = 0);

}  // namespace wkv::kernels::calib
