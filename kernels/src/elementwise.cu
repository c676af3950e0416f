// Elementwise / row-wise ops of the LLaMA step. See wkv_kernels/elementwise.h.
//
// Matching the CPU reference (engine/src/cpu_ops.cpp): products and sums that the reference evaluates
// as separate float operations are written with __fmul_rn / __fadd_rn / __fdiv_rn here, so nvcc cannot
// contract them into FMAs and the only differences left are the last bits of expf / sincosf (≤ 2 ulp)
// and, in RMSNorm, the summation order of Σx² (the reference sums in double).
#include <cuda_fp16.h>

#include <cmath>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "rope_device.cuh"
#include "wkv_kernels/elementwise.h"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxGridX = 65535;

// Sum over the block (blockDim.x == kThreads); every thread gets the result.
__device__ float block_sum(float v) {
  __shared__ float part[kThreads / kWarpSize];
  v = warp_sum(v);
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = lane < kThreads / kWarpSize ? part[lane] : 0.0f;
  t = warp_sum(t);
  __syncthreads();  // part may be reused by a later call
  return t;
}

__device__ __forceinline__ void store_out(float* y, size_t i, float v) { y[i] = v; }
__device__ __forceinline__ void store_out(__half* y, size_t i, float v) { y[i] = __float2half_rn(v); }

// Row-wise norms, one block per row. Thread t owns elements t, t + kThreads, … in that order (the order of
// its partial Σx², so results do not depend on how the loads are batched). A pass loads kPer of them
// at once — all loads issued before any use, so a 4096-wide row costs one memory round trip instead of
// 16 dependent ones — and rows of ≤ kThreads·kPer elements (every LLaMA width up to 8192) stay in
// registers for the scaling pass.
constexpr int kPer = 32;

// One block per row t: y[t] = (x[t]·inv)·weight with inv = 1 / sqrt(Σx²/n + eps).
template <typename Out>
__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(const float* __restrict__ x,
                                                           const float* __restrict__ weight, int n, float eps,
                                                           Out* __restrict__ y) {
  const size_t base = (size_t)blockIdx.x * n;
  float v[kPer];
  float ss = 0.0f;
  for (int c0 = 0; c0 < n; c0 += kThreads * kPer) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = c0 + threadIdx.x + k * kThreads;
      v[k] = i < n ? x[base + i] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kPer; ++k)
      if (c0 + threadIdx.x + k * kThreads < n) ss = fmaf(v[k], v[k], ss);
  }
  ss = block_sum(ss);
  const float inv = rms_inverse(ss, n, eps);
  if (n <= kThreads * kPer) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = threadIdx.x + k * kThreads;
      if (i < n) store_out(y, base + i, __fmul_rn(__fmul_rn(v[k], inv), weight[i]));
    }
  } else {
    for (int i = threadIdx.x; i < n; i += kThreads)
      store_out(y, base + i, __fmul_rn(__fmul_rn(x[base + i], inv), weight[i]));
  }
}

// x += r, then y = rmsnorm(x) — the residual add of a block fused with the norm that follows it (one launch
// instead of two in the decode step). Each thread adds, stores and squares the same elements the plain
// rmsnorm kernel's thread would read, in the same order, so y and x are bit-identical to add_inplace
// followed by rmsnorm_f32. y may alias r (each thread reads r[i] before the block reduction and writes y[i]
// after it, for the same i), hence no __restrict__ on either.
__global__ void __launch_bounds__(kThreads) add_rmsnorm_kernel(float* x, const float* r,
                                                               const float* __restrict__ weight, int n, float eps,
                                                               float* y) {
  const size_t base = (size_t)blockIdx.x * n;
  float v[kPer];
  float ss = 0.0f;
  for (int c0 = 0; c0 < n; c0 += kThreads * kPer) {
    float rv[kPer];
#pragma unroll
    for (int k = 0; k < kPer; ++k) {  // every load of the pass before the first store
      const int i = c0 + threadIdx.x + k * kThreads;
      v[k] = i < n ? x[base + i] : 0.0f;
      rv[k] = i < n ? r[base + i] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = c0 + threadIdx.x + k * kThreads;
      if (i < n) {
        v[k] = __fadd_rn(v[k], rv[k]);
        x[base + i] = v[k];
        ss = fmaf(v[k], v[k], ss);
      }
    }
  }
  ss = block_sum(ss);
  const float inv = rms_inverse(ss, n, eps);
  if (n <= kThreads * kPer) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = threadIdx.x + k * kThreads;
      if (i < n) y[base + i] = __fmul_rn(__fmul_rn(v[k], inv), weight[i]);
    }
  } else {
    for (int i = threadIdx.x; i < n; i += kThreads) y[base + i] = __fmul_rn(__fmul_rn(x[base + i], inv), weight[i]);
  }
}

// RoPE. Thread (t, g, i), i < D/2, computes the angle of pair i at token t once and rotates pair
// (i, i + D/2) of the kRopeHeads heads of head group g: consecutive threads take consecutive i (coalesced),
// and a thread issues all its loads before its first store (one memory round trip, not one per head).
// The per-pair arithmetic (and why it matches cpu::rope's angle bit for bit) is rope_device.cuh's.
constexpr int kRopeHeads = 8;

// Rotates pair (i, i + D/2) of heads h0 … min(h0 + kRopeHeads, n_heads) − 1 of one token at absolute
// position `pos`: the per-element code shared by rope (host position) and rope_at (device position), so
// both produce the same bits.
__device__ __forceinline__ void rope_heads(float* __restrict__ x_t, int n_heads, int h0, int head_dim, int i,
                                           int pos, float theta) {
  const int half = head_dim / 2;
  float a[kRopeHeads], b[kRopeHeads];
#pragma unroll
  for (int k = 0; k < kRopeHeads; ++k) {
    if (h0 + k < n_heads) {
      const float* v = x_t + (size_t)(h0 + k) * head_dim;
      a[k] = v[i];
      b[k] = v[i + half];
    }
  }
  float c, s;
  ropedev::rope_cos_sin(i, head_dim, pos, theta, c, s);
#pragma unroll
  for (int k = 0; k < kRopeHeads; ++k) {
    if (h0 + k < n_heads) {
      float* v = x_t + (size_t)(h0 + k) * head_dim;
      ropedev::rope_rotate(a[k], b[k], c, s);
      v[i] = a[k];
      v[i + half] = b[k];
    }
  }
}

__device__ __forceinline__ int rope_groups(int n_heads) { return (n_heads + kRopeHeads - 1) / kRopeHeads; }

__global__ void __launch_bounds__(kThreads) rope_kernel(float* __restrict__ x, int T, int n_heads, int head_dim,
                                                        int pos0, float theta) {
  const int half = head_dim / 2, groups = rope_groups(n_heads);
  const int64_t idx = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (idx >= (int64_t)T * groups * half) return;
  const int t = (int)(idx / (groups * half)), r = (int)(idx % (groups * half));
  rope_heads(x + (size_t)t * n_heads * head_dim, n_heads, (r / half) * kRopeHeads, head_dim, r % half, pos0 + t,
             theta);
}

// T = 1 with the position read on the device (graph replay at every decode step).
__global__ void __launch_bounds__(kThreads) rope_at_kernel(float* __restrict__ x, int n_heads, int head_dim,
                                                           const int32_t* __restrict__ pos_dev, float theta) {
  const int half = head_dim / 2;
  const int r = blockIdx.x * kThreads + threadIdx.x;
  if (r >= rope_groups(n_heads) * half) return;
  rope_heads(x, n_heads, (r / half) * kRopeHeads, head_dim, r % half, *pos_dev, theta);
}

// Thread i < D/2: cos and sin of pair i's angle at *pos_dev (rope_cos_sin: the bits every rotating kernel
// uses).
__global__ void __launch_bounds__(kThreads)
    rope_table_kernel(const int32_t* __restrict__ pos_dev, int head_dim, float theta,
                      float* __restrict__ cs) {
  const int half = head_dim / 2;
  const int i = blockIdx.x * kThreads + threadIdx.x;
  if (i >= half) return;
  float c, s;
  ropedev::rope_cos_sin(i, head_dim, *pos_dev, theta, c, s);
  cs[i] = c;
  cs[half + i] = s;
}

__global__ void swiglu_kernel(float* __restrict__ g, const float* __restrict__ u, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * kThreads;
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += stride) {
    g[i] = silu_mul(g[i], u[i]);
  }
}

__global__ void add_kernel(float* __restrict__ x, const float* __restrict__ r, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * kThreads;
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += stride) x[i] = __fadd_rn(x[i], r[i]);
}

// grid (ceil(dim / kThreads), T).
__global__ void embedding_kernel(const __half* __restrict__ table, int vocab, int dim,
                                 const int32_t* __restrict__ ids, float* __restrict__ out) {
  const int t = blockIdx.y;
  const int j = blockIdx.x * kThreads + threadIdx.x;
  if (j >= dim) return;
  const int id = ids[t];
  out[(size_t)t * dim + j] = (id >= 0 && id < vocab) ? __half2float(table[(size_t)id * dim + j]) : nanf("");
}

// (v, i) beats (bv, bi) when v is larger, or equal with a lower index. NaN compares false: never wins.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

// One block per row; a strict total order on (value desc, index asc) makes the result independent of
// the reduction tree.
__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* __restrict__ logits, int vocab,
                                                          int32_t* __restrict__ out) {
  __shared__ float sv[kThreads / kWarpSize];
  __shared__ int si[kThreads / kWarpSize];
  const float* row = logits + (size_t)blockIdx.x * vocab;
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = row[i];
    if (better(v, i, bv, bi)) bv = v, bi = i;
  }
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xFFFFFFFFu, bv, off);
    const int oi = __shfl_xor_sync(0xFFFFFFFFu, bi, off);
    if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / kWarpSize; ++w)
      if (better(sv[w], si[w], bv, bi)) bv = sv[w], bi = si[w];
    out[blockIdx.x] = bi == INT_MAX ? -1 : bi;  // INT_MAX: nothing but NaN in the row
  }
}

unsigned grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b < kMaxGridX ? b : kMaxGridX);
}

template <typename Out>
void rmsnorm_launch(const float* x, const float* weight, int T, int n, float eps, Out* y, cudaStream_t stream) {
  require_arg(T >= 1 && n >= 1, "rmsnorm: T=" + std::to_string(T) + " and n=" + std::to_string(n) +
                                    " must be >= 1");
  require_arg(T <= 0x7FFFFFFF && std::isfinite(eps) && eps >= 0.0f, "rmsnorm: eps must be finite and >= 0");
  require_arg(x && weight && y, "rmsnorm: x, weight and y must be non-null device pointers");
  rmsnorm_kernel<Out><<<T, kThreads, 0, stream>>>(x, weight, n, eps, y);
  WKV_CHECK_LAUNCH();
}

}  // namespace

void rmsnorm_f32(const float* x, const float* weight, int T, int n, float eps, float* y, cudaStream_t stream) {
  rmsnorm_launch(x, weight, T, n, eps, y, stream);
}

void add_rmsnorm_f32(float* x, const float* r, const float* weight, int T, int n, float eps, float* y,
                     cudaStream_t stream) {
  require_arg(T >= 1 && n >= 1, "add_rmsnorm: T=" + std::to_string(T) + " and n=" + std::to_string(n) +
                                    " must be >= 1");
  require_arg(std::isfinite(eps) && eps >= 0.0f, "add_rmsnorm: eps must be finite and >= 0");
  require_arg(x && r && weight && y, "add_rmsnorm: x, r, weight and y must be non-null device pointers");
  add_rmsnorm_kernel<<<T, kThreads, 0, stream>>>(x, r, weight, n, eps, y);
  WKV_CHECK_LAUNCH();
}

void rmsnorm_f16(const float* x, const float* weight, int T, int n, float eps, uint16_t* y,
                 cudaStream_t stream) {
  rmsnorm_launch(x, weight, T, n, eps, reinterpret_cast<__half*>(y), stream);
}

void rope(float* x, int T, int n_heads, int head_dim, int pos0, float theta, cudaStream_t stream) {
  require_arg(T >= 1 && n_heads >= 1, "rope: T and n_heads must be >= 1");
  require_arg(head_dim >= 2 && head_dim % 2 == 0, "rope: head_dim " + std::to_string(head_dim) +
                                                      " must be even and >= 2");
  require_arg(pos0 >= 0 && (int64_t)pos0 + T <= 0x7FFFFFFF, "rope: positions must be in [0, 2^31)");
  require_arg(std::isfinite(theta) && theta > 0.0f, "rope: theta must be finite and > 0");
  require_arg(x != nullptr, "rope: x must be a non-null device pointer");
  const int64_t threads = (int64_t)T * ((n_heads + kRopeHeads - 1) / kRopeHeads) * (head_dim / 2);
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  require_arg(blocks <= 0x7FFFFFFF, "rope: too many tokens for one launch");
  rope_kernel<<<(unsigned)blocks, kThreads, 0, stream>>>(x, T, n_heads, head_dim, pos0, theta);
  WKV_CHECK_LAUNCH();
}

void rope_at(float* x, int n_heads, int head_dim, const int32_t* pos_dev, float theta, cudaStream_t stream) {
  require_arg(n_heads >= 1, "rope_at: n_heads must be >= 1");
  require_arg(head_dim >= 2 && head_dim % 2 == 0, "rope_at: head_dim " + std::to_string(head_dim) +
                                                      " must be even and >= 2");
  require_arg(std::isfinite(theta) && theta > 0.0f, "rope_at: theta must be finite and > 0");
  require_arg(x != nullptr && pos_dev != nullptr, "rope_at: x and pos_dev must be non-null device pointers");
  const int threads = (n_heads + kRopeHeads - 1) / kRopeHeads * (head_dim / 2);
  const int blocks = (threads + kThreads - 1) / kThreads;
  rope_at_kernel<<<blocks, kThreads, 0, stream>>>(x, n_heads, head_dim, pos_dev, theta);
  WKV_CHECK_LAUNCH();
}

void rope_table_at(const int32_t* pos_dev, int head_dim, float theta, float* cs, cudaStream_t stream) {
  require_arg(head_dim >= 2 && head_dim % 2 == 0,
              "rope_table_at: head_dim " + std::to_string(head_dim) + " must be even and >= 2");
  require_arg(std::isfinite(theta) && theta > 0.0f, "rope_table_at: theta must be finite and > 0");
  require_arg(pos_dev != nullptr && cs != nullptr,
              "rope_table_at: pos_dev and cs must be non-null device pointers");
  const int half = head_dim / 2;
  rope_table_kernel<<<(half + kThreads - 1) / kThreads, kThreads, 0, stream>>>(pos_dev, head_dim, theta, cs);
  WKV_CHECK_LAUNCH();
}

void swiglu(float* g, const float* u, int64_t n, cudaStream_t stream) {
  require_arg(n >= 0, "swiglu: n must be >= 0");
  if (n == 0) return;
  require_arg(g && u, "swiglu: g and u must be non-null device pointers");
  swiglu_kernel<<<grid_for(n), kThreads, 0, stream>>>(g, u, n);
  WKV_CHECK_LAUNCH();
}

void add_inplace(float* x, const float* r, int64_t n, cudaStream_t stream) {
  require_arg(n >= 0, "add_inplace: n must be >= 0");
  if (n == 0) return;
  require_arg(x && r, "add_inplace: x and r must be non-null device pointers");
  add_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, r, n);
  WKV_CHECK_LAUNCH();
}

void embedding_lookup(const uint16_t* table, int vocab, int dim, const int32_t* ids, int T, float* out,
                      cudaStream_t stream) {
  require_arg(vocab >= 1 && dim >= 1 && T >= 1, "embedding_lookup: vocab, dim and T must be >= 1");
  require_arg(T <= kMaxGridX, "embedding_lookup: T " + std::to_string(T) + " exceeds " +
                                  std::to_string(kMaxGridX) + " tokens per launch");
  require_arg(table && ids && out, "embedding_lookup: table, ids and out must be non-null device pointers");
  const dim3 grid((unsigned)((dim + kThreads - 1) / kThreads), (unsigned)T);
  embedding_kernel<<<grid, kThreads, 0, stream>>>(reinterpret_cast<const __half*>(table), vocab, dim, ids, out);
  WKV_CHECK_LAUNCH();
}

void argmax(const float* logits, int B, int vocab, int32_t* out, cudaStream_t stream) {
  require_arg(B >= 1 && vocab >= 1, "argmax: B and vocab must be >= 1");
  require_arg(logits && out, "argmax: logits and out must be non-null device pointers");
  argmax_kernel<<<B, kThreads, 0, stream>>>(logits, vocab, out);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels
