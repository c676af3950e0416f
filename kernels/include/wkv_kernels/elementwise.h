// Elementwise and row-wise ops of the LLaMA step on the GPU (FP32 activations, device memory).
// Each matches the CPU reference in engine/src/cpu_ops.h up to FP32 rounding (see the tests' budgets).
// All launches are asynchronous on `stream`; invalid sizes throw wkv::Error(invalid_argument).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace wkv::kernels {

// y[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight, x: [T][n] FP32, weight: [n] FP32. One block per row.
void rmsnorm_f32(const float* x, const float* weight, int T, int n, float eps, float* y,
                 cudaStream_t stream = 0);
// x[t] += r[t], then y[t] = rmsnorm(x[t]) as above: bit-identical to add_inplace + rmsnorm_f32, one launch.
// y may be the same buffer as r (not as x).
void add_rmsnorm_f32(float* x, const float* r, const float* weight, int T, int n, float eps, float* y,
                     cudaStream_t stream = 0);
// Same, output rounded to FP16 bits (round to nearest even) for a following FP16 GEMM.
void rmsnorm_f16(const float* x, const float* weight, int T, int n, float eps, uint16_t* y,
                 cudaStream_t stream = 0);

// Rotary embedding, half-split convention, in place on x [T][n_heads][head_dim]: for i < head_dim/2,
// (x_i, x_{i+D/2}) rotated by angle = float(pos0 + t) · (1 / theta^(2i/D)), the same float operations
// as cpu::rope (the power is evaluated in double and rounded, i.e. correctly rounded like powf).
void rope(float* x, int T, int n_heads, int head_dim, int pos0, float theta, cudaStream_t stream = 0);
// One token (T = 1) at the position in device int32 *pos_dev (graph-capturable); same bits as rope().
void rope_at(float* x, int n_heads, int head_dim, const int32_t* pos_dev, float theta, cudaStream_t stream = 0);
// The angles of one position for every layer's fused RoPE (Kv4DecodeArgs::rope_cs): cs [2][head_dim/2] =
// cos, then sin, of pair i's angle at *pos_dev, the values rope_at rotates with (same bits).
void rope_table_at(const int32_t* pos_dev, int head_dim, float theta, float* cs, cudaStream_t stream = 0);

// g[i] = silu(g[i]) · u[i] = g / (1 + exp(−g)) · u, in place over n elements.
void swiglu(float* g, const float* u, int64_t n, cudaStream_t stream = 0);

// x[i] += r[i] (residual add), n elements.
void add_inplace(float* x, const float* r, int64_t n, cudaStream_t stream = 0);

// out[t][j] = table[ids[t]][j] as FP32; table: FP16 bits [vocab][dim], ids: device int32 [T].
// An id outside [0, vocab) cannot be reported from the device: its row is filled with NaN.
void embedding_lookup(const uint16_t* table, int vocab, int dim, const int32_t* ids, int T, float* out,
                      cudaStream_t stream = 0);

// out[b] = argmax_v logits[b][v] over [B][vocab] FP32; ties go to the lowest index, NaN never wins,
// a row with nothing but NaN gives −1. out: device int32 [B]. One block per row.
void argmax(const float* logits, int B, int vocab, int32_t* out, cudaStream_t stream = 0);

}  // namespace wkv::kernels
