// FP32 building blocks of the CPU reference forward pass.
//
// Layouts: activations are row-major [T][n] (one row per token); weights [out][in] (nn.Linear).
// Each op is written plainly (it is the reference the CUDA kernels are checked against) but laid out so
// the compiler vectorizes the inner loops (independent accumulators, contiguous rows).
#pragma once

#include <cstdint>

#include "cpu_weights.h"
#include "thread_pool.h"

namespace wkv::cpu {

// y[t][o] = Σ_i x[t][i] · W[o][i]   for t < T.  x: [T][in], y: [T][out].
void matmul(ThreadPool& pool, const float* x, int T, const Linear& W, float* y);

// y[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight   (LlamaRMSNorm, in FP32). inv_rms[t], if given,
// receives 1/sqrt(mean(x[t]²) + eps) (what the backward pass needs).
void rmsnorm(const float* x, const float* weight, int T, int n, float eps, float* y, float* inv_rms = nullptr);

// Rotary embedding, half-split convention, in place on [T][n_heads·D]: for each head and i < D/2,
// (x_i, x_{i+D/2}) is rotated by angle pos·theta^(−2i/D), pos = pos0 + t. `inverse` rotates by −angle,
// which is also the transpose: the backward pass of RoPE.
void rope(float* x, int T, int n_heads, int head_dim, int pos0, float theta, bool inverse = false);

// g[i] = silu(g[i]) · u[i]   (SwiGLU, in place over n elements).
void swiglu(float* g, const float* u, int64_t n);

// In-place numerically stable softmax over n values.
void softmax(float* x, int n);

float dot(const float* a, const float* b, int n);

}  // namespace wkv::cpu
