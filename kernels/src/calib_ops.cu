// WKVQuant calibration ops on the GPU (semantics in calib_ops.h here and in engine/src/calib_ops.h).
//
// Kept deliberately simple: one block per row for the row-wise ops, one warp per quantization group,
// one thread per element for elementwise ops, cuBLAS (column-major) for every matrix product. A
// row-major [R][C] matrix is, to cuBLAS, a column-major C×R matrix with leading dimension C; each GEMM
// below is annotated with the row-major product it computes.
#include <cublas_v2.h>

#include <climits>
#include <cmath>
#include <string>

#include "cublas_check.h"
#include "cuda_check.h"
#include "kernel_util.h"
#include "quant_formats.h"
#include "wkv_kernels/calib_ops.h"

namespace wkv::kernels::calib {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
constexpr float kLwcMinScale = 1e-5f;  // = wkv::calib::kLwcMinScale (engine/src/calib_ops.h)

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Reduction over the block (blockDim.x a multiple of 32); every thread gets the result. `smem` holds 32
// values. The leading barrier lets the same smem be reused by consecutive calls.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* smem) {
  const int lane = threadIdx.x & (kWarpSize - 1), warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = smem[0];
  for (int i = 1; i < (int)(blockDim.x / kWarpSize); ++i) r = op(r, smem[i]);
  return r;
}

template <typename T>
__device__ T warp_reduce_sum(T v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
  return v;
}

__device__ __forceinline__ float sigmoidf_dev(float a) { return 1.0f / (1.0f + expf(-a)); }

unsigned grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b < 65535 * 16 ? b : 65535 * 16);
}

cublasHandle_t h_of(Blas& b) { return static_cast<cublasHandle_t>(b.handle()); }

// C (column-major m×n, ldc) = alpha·op(A)·op(B) + beta·C.
void gemm(Blas& b, bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc) {
  CUBLAS_CHECK(cublasSgemm(h_of(b), ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha,
                           A, lda, B, ldb, &beta, C, ldc));
}

// ---- kernels ----------------------------------------------------------------------------------------------

__global__ void rmsnorm_fwd_kernel(const float* __restrict__ x, const float* __restrict__ w, int n, float eps,
                                   float* __restrict__ y, float* __restrict__ inv_rms) {
  __shared__ double sd[32];
  const float* xr = x + (size_t)blockIdx.x * n;
  float* yr = y + (size_t)blockIdx.x * n;
  double ss = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xr[i] * xr[i];
  ss = block_reduce(ss, SumOp{}, sd);
  const float inv = 1.0f / sqrtf((float)(ss / n) + eps);
  if (threadIdx.x == 0 && inv_rms) inv_rms[blockIdx.x] = inv;
  for (int i = threadIdx.x; i < n; i += blockDim.x) yr[i] = __fmul_rn(__fmul_rn(xr[i], inv), w[i]);
}

__global__ void rmsnorm_bwd_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                   const float* __restrict__ inv_rms, const float* __restrict__ dy, int n,
                                   float* __restrict__ dx) {
  __shared__ double sd[32];
  const size_t off = (size_t)blockIdx.x * n;
  double dot = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) dot += (double)dy[off + i] * w[i] * x[off + i];
  dot = block_reduce(dot, SumOp{}, sd);
  const float r = inv_rms[blockIdx.x];
  const float c = (float)dot * r * r * r / (float)n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) dx[off + i] += r * w[i] * dy[off + i] - c * x[off + i];
}

// kernels::rope's arithmetic (elementwise.cu), with the sign of sin flipped for the inverse rotation.
__global__ void rope_kernel(float* __restrict__ x, int T, int n_heads, int head_dim, int pos0, float theta,
                            bool inverse) {
  const int half = head_dim / 2;
  const int64_t idx = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (idx >= (int64_t)T * half) return;
  const int t = (int)(idx / half), i = (int)(idx % half);
  const float expo = __fdiv_rn((float)(2 * i), (float)head_dim);
  const float p = (float)pow((double)theta, (double)expo);
  const float inv_freq = __fdiv_rn(1.0f, p);
  const float angle = __fmul_rn((float)(pos0 + t), inv_freq);
  float s, c;
  sincosf(angle, &s, &c);
  if (inverse) s = -s;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + ((size_t)t * n_heads + h) * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

__global__ void swiglu_fwd_kernel(const float* __restrict__ g, const float* __restrict__ u, int64_t n,
                                  float* __restrict__ out) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = __fmul_rn(__fdiv_rn(g[i], __fadd_rn(1.0f, expf(-g[i]))), u[i]);
}

__global__ void swiglu_bwd_kernel(const float* __restrict__ g, const float* __restrict__ u,
                                  const float* __restrict__ dout, int64_t n, float* __restrict__ dg,
                                  float* __restrict__ du) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float sg = 1.0f / (1.0f + expf(-g[i]));
    if (dg) dg[i] += dout[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    if (du) du[i] += dout[i] * g[i] * sg;
  }
}

// Row t (blockIdx.x) of one head: P holds Q·Kqᵀ/√D (the full T×T); see poq_attention_fwd.
__global__ void attn_fwd_row_kernel(float* __restrict__ P, const float* __restrict__ qh, int ldq,
                                    const float* __restrict__ kh, int ldk, int T, int D, float scale,
                                    float* __restrict__ diag) {
  __shared__ float sf[32];
  __shared__ double sd[32];
  const int t = blockIdx.x;
  float* row = P + (size_t)t * T;
  float dot = 0;
  for (int c = threadIdx.x; c < D; c += blockDim.x) dot += qh[(size_t)t * ldq + c] * kh[(size_t)t * ldk + c];
  const float s_tt = block_reduce(dot, SumOp{}, sf) * scale;
  float m = s_tt;
  for (int j = threadIdx.x; j < t; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_reduce(m, MaxOp{}, sf);
  double sum = 0;
  for (int j = threadIdx.x; j < t; j += blockDim.x) sum += (double)expf(row[j] - m);
  if (threadIdx.x == 0) sum += (double)expf(s_tt - m);
  sum = block_reduce(sum, SumOp{}, sd);
  const float inv = (float)(1.0 / sum);
  // Every j is read (above) before this loop and written by the thread that owns it here.
  for (int j = threadIdx.x; j < T; j += blockDim.x) row[j] = j < t ? expf(row[j] - m) * inv : 0.0f;
  if (threadIdx.x == 0) diag[t] = expf(s_tt - m) * inv;
}

// out_t += p_tt·v_t and the diagonal of P restored (one block per row).
__global__ void attn_fwd_diag_kernel(float* __restrict__ outh, int ldo, const float* __restrict__ vh, int ldv,
                                     float* __restrict__ P, int T, int D, const float* __restrict__ diag) {
  const int t = blockIdx.x;
  const float p = diag[t];
  for (int c = threadIdx.x; c < D; c += blockDim.x) outh[(size_t)t * ldo + c] += p * vh[(size_t)t * ldv + c];
  if (threadIdx.x == 0) P[(size_t)t * T + t] = p;
}

// Row t of one head's backward: SB holds dOut·Vqᵀ on entry; see poq_attention_bwd.
__global__ void attn_bwd_row_kernel(float* __restrict__ SB, float* __restrict__ PB, const float* __restrict__ P,
                                    const float* __restrict__ qh, int ldq, const float* __restrict__ kh,
                                    const float* __restrict__ vh, int ldk, const float* __restrict__ doh,
                                    float* __restrict__ dqh, float* __restrict__ dkh, float* __restrict__ dvh, int T,
                                    int D, float scale) {
  __shared__ float sf[32];
  __shared__ double sd[32];
  const int t = blockIdx.x;
  const float* prow = P + (size_t)t * T;
  float* sb = SB + (size_t)t * T;
  float* pb = PB + (size_t)t * T;
  const float* q_t = qh + (size_t)t * ldq;
  const float* go = doh + (size_t)t * ldq;  // dout has q's layout
  const float* k_t = kh + (size_t)t * ldk;
  const float* v_t = vh + (size_t)t * ldk;
  float dot = 0;
  for (int c = threadIdx.x; c < D; c += blockDim.x) dot += go[c] * v_t[c];
  const float dp_tt = block_reduce(dot, SumOp{}, sf);
  const float p_tt = prow[t];
  double sum = 0;
  for (int j = threadIdx.x; j < t; j += blockDim.x) sum += (double)prow[j] * sb[j];
  if (threadIdx.x == 0) sum += (double)p_tt * dp_tt;
  sum = block_reduce(sum, SumOp{}, sd);
  const float fs = (float)sum;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    if (j < t) {
      const float p = prow[j];
      sb[j] = p * (sb[j] - fs) * scale;
      pb[j] = p;
    } else {
      sb[j] = 0.0f;
      pb[j] = 0.0f;
    }
  }
  const float ds_tt = p_tt * (dp_tt - fs) * scale;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    if (dqh) dqh[(size_t)t * ldq + c] += ds_tt * k_t[c];
    if (dkh) dkh[(size_t)t * ldk + c] += ds_tt * q_t[c];
    if (dvh) dvh[(size_t)t * ldk + c] += p_tt * go[c];
  }
}

// LWC group statistics, computed identically by every lane of the warp that owns the group.
struct LwcG {
  float mx, mn, gamma, beta, lo, h, z;
  bool h_clamped;
};

__device__ LwcG lwc_group_dev(const float* w, int n, const float* a, const float* b, size_t gi) {
  const int lane = threadIdx.x & (kWarpSize - 1);
  float mn = INFINITY, mx = -INFINITY;
  for (int i = lane; i < n; i += kWarpSize) q4_minmax_update(w[i], mn, mx);
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) {
    mn = fminf(mn, __shfl_xor_sync(0xFFFFFFFFu, mn, off));
    mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, off));
  }
  LwcG g;
  g.mn = mn;
  g.mx = mx;
  g.gamma = a ? sigmoidf_dev(a[gi]) : 1.0f;
  g.beta = b ? sigmoidf_dev(b[gi]) : 1.0f;
  const float hi = __fmul_rn(g.gamma, g.mx);
  g.lo = __fmul_rn(g.beta, g.mn);
  const float h_raw = __fdiv_rn(__fsub_rn(hi, g.lo), 15.0f);
  g.h_clamped = !(h_raw >= kLwcMinScale);
  g.h = g.h_clamped ? kLwcMinScale : h_raw;
  g.z = q4_round(__fdiv_rn(-g.lo, g.h));
  return g;
}

__global__ void lwc_fwd_kernel(const float* __restrict__ W, int rows, int cols, int group, const float* a,
                               const float* b, float* __restrict__ Wq) {
  const int gpr = cols / group;
  const int64_t gid = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (gid >= (int64_t)rows * gpr) return;  // whole warps leave together
  const size_t off = (size_t)(gid / gpr) * cols + (size_t)(gid % gpr) * group;
  const LwcG g = lwc_group_dev(W + off, group, a, b, (size_t)gid);
  for (int i = threadIdx.x & (kWarpSize - 1); i < group; i += kWarpSize) {
    const float qv = (float)q4_clamp(__fadd_rn(q4_round(__fdiv_rn(W[off + i], g.h)), g.z));
    Wq[off + i] = __fmul_rn(__fsub_rn(qv, g.z), g.h);
  }
}

__global__ void lwc_bwd_kernel(const float* __restrict__ W, int rows, int cols, int group, const float* a,
                               const float* b, const float* __restrict__ dWq, float* da, float* db) {
  const int gpr = cols / group;
  const int64_t gid = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (gid >= (int64_t)rows * gpr) return;
  const size_t off = (size_t)(gid / gpr) * cols + (size_t)(gid % gpr) * group;
  const LwcG g = lwc_group_dev(W + off, group, a, b, (size_t)gid);
  double G_h = 0, G_lo = 0;
  for (int i = threadIdx.x & (kWarpSize - 1); i < group; i += kWarpSize) {
    const float w = W[off + i];
    const float v = __fadd_rn(q4_round(__fdiv_rn(w, g.h)), g.z);
    const bool in_range = v >= 0.0f && v <= 15.0f;
    const float qv = (float)q4_clamp(v);
    const float gr = dWq[off + i];
    const float m = in_range ? 1.0f : 0.0f;
    const float term = __fadd_rn(__fsub_rn(__fsub_rn(qv, g.z), __fdiv_rn(__fmul_rn(m, w), g.h)),
                                 __fdiv_rn(__fmul_rn(m - 1.0f, g.lo), g.h));
    G_h += (double)gr * term;
    G_lo += (double)gr * (1.0f - m);
  }
  G_h = warp_reduce_sum(G_h);
  G_lo = warp_reduce_sum(G_lo);
  if ((threadIdx.x & (kWarpSize - 1)) != 0) return;
  const double d_hi = g.h_clamped ? 0.0 : G_h / 15.0;
  const double d_lo = g.h_clamped ? G_lo : G_lo - G_h / 15.0;
  if (da && a) da[gid] += (float)((double)g.gamma * (1.0 - g.gamma) * g.mx * d_hi);
  if (db && b) db[gid] += (float)((double)g.beta * (1.0 - g.beta) * g.mn * d_lo);
}

// KV group statistics (min / max of the smoothed values and their first indices), per warp.
struct KvG {
  int imin, imax;
  float mn, scale;
};

__device__ __forceinline__ float kv_smoothed(const float* x, size_t off, int c, const float* delta, const float* s) {
  return delta ? kv4_smooth(x[off], delta[c], s[c]) : x[off];
}

__device__ KvG kv_group_dev(const float* x, size_t off, int c0, int G, const float* delta, const float* s) {
  const int lane = threadIdx.x & (kWarpSize - 1);
  float mn = INFINITY, mx = -INFINITY;
  int imin = INT_MAX, imax = INT_MAX;
  for (int i = lane; i < G; i += kWarpSize) {  // ascending i: strict comparisons keep the first index
    const float v = kv_smoothed(x, off + i, c0 + i, delta, s);
    if (v < mn) {
      mn = v;
      imin = i;
    }
    if (v > mx) {
      mx = v;
      imax = i;
    }
  }
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) {
    const float omn = __shfl_xor_sync(0xFFFFFFFFu, mn, o), omx = __shfl_xor_sync(0xFFFFFFFFu, mx, o);
    const int oimin = __shfl_xor_sync(0xFFFFFFFFu, imin, o), oimax = __shfl_xor_sync(0xFFFFFFFFu, imax, o);
    if (omn < mn || (omn == mn && oimin < imin)) {
      mn = omn;
      imin = oimin;
    }
    if (omx > mx || (omx == mx && oimax < imax)) {
      mx = omx;
      imax = oimax;
    }
  }
  KvG g;
  g.imin = imin;
  g.imax = imax;
  g.mn = mn;
  const float range = __fsub_rn(mx, mn);
  g.scale = range > 0.0f ? __fdiv_rn(range, 15.0f) : 0.0f;
  return g;
}

__global__ void kv_fwd_kernel(const float* __restrict__ x, int T, int C, int G, const float* delta, const float* s,
                              float* __restrict__ xq) {
  const int gpt = C / G;
  const int64_t gid = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (gid >= (int64_t)T * gpt) return;
  const int c0 = (int)(gid % gpt) * G;
  const size_t off = (size_t)(gid / gpt) * C + c0;
  const KvG g = kv_group_dev(x, off, c0, G, delta, s);
  for (int i = threadIdx.x & (kWarpSize - 1); i < G; i += kWarpSize) {
    const float xs = kv_smoothed(x, off + i, c0 + i, delta, s);
    const float y =
        g.scale > 0.0f
            ? __fadd_rn(__fmul_rn((float)q4_clamp(q4_round(__fdiv_rn(__fsub_rn(xs, g.mn), g.scale))), g.scale), g.mn)
            : g.mn;
    xq[off + i] = delta ? __fadd_rn(__fmul_rn(y, s[c0 + i]), delta[c0 + i]) : y;
  }
}

// Per (token, group): dx += gx̃/s; the per-channel terms of dδ and ds go to dd / dsc [T][C] (when non-null).
__global__ void kv_bwd_kernel(const float* __restrict__ x, int T, int C, int G, const float* delta, const float* s,
                              const float* __restrict__ dxq, float* dx, float* dd, float* dsc) {
  const int gpt = C / G;
  const int64_t gid = (int64_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (gid >= (int64_t)T * gpt) return;
  const int lane = threadIdx.x & (kWarpSize - 1);
  const int c0 = (int)(gid % gpt) * G;
  const size_t off = (size_t)(gid / gpt) * C + c0;
  const KvG g = kv_group_dev(x, off, c0, G, delta, s);
  double R = 0, sum_gy = 0;
  for (int i = lane; i < G; i += kWarpSize) {
    const float sc = delta ? s[c0 + i] : 1.0f;
    const float gy = __fmul_rn(dxq[off + i], sc);
    sum_gy += gy;
    if (g.scale > 0.0f) {
      const float xs = kv_smoothed(x, off + i, c0 + i, delta, s);
      const float u = __fdiv_rn(__fsub_rn(xs, g.mn), g.scale);
      const float qv = (float)q4_clamp(q4_round(u));
      R += (double)gy * __fsub_rn(qv, u);
    }
  }
  R = warp_reduce_sum(R);
  sum_gy = warp_reduce_sum(sum_gy);
  const float r15 = (float)(R / 15.0);
  for (int i = lane; i < G; i += kWarpSize) {
    const int c = c0 + i;
    const float sc = delta ? s[c] : 1.0f;
    const float gq = dxq[off + i];
    const float xs = kv_smoothed(x, off + i, c, delta, s);
    float gx, y;
    if (g.scale > 0.0f) {
      gx = __fmul_rn(gq, sc);
      if (i == g.imax) gx = __fadd_rn(gx, r15);
      if (i == g.imin) gx = __fsub_rn(gx, r15);
      const float qv = (float)q4_clamp(q4_round(__fdiv_rn(__fsub_rn(xs, g.mn), g.scale)));
      y = __fadd_rn(__fmul_rn(qv, g.scale), g.mn);
    } else {
      gx = i == g.imin ? (float)sum_gy : 0.0f;
      y = g.mn;
    }
    const float gxs = __fdiv_rn(gx, sc);
    if (dx) dx[off + i] += gxs;
    if (dd) dd[off + i] = __fsub_rn(gq, gxs);
    if (dsc) dsc[off + i] = __fsub_rn(__fmul_rn(gq, y), __fdiv_rn(__fmul_rn(gx, xs), sc));
  }
}

// acc[c] += Σ_t terms[t][c] in token order (the CPU's accumulation order).
__global__ void column_sum_kernel(const float* __restrict__ terms, int T, int C, float* __restrict__ acc) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float a = acc[c];
  for (int t = 0; t < T; ++t) a += terms[(size_t)t * C + c];
  acc[c] = a;
}

__global__ void loss_partial_kernel(const float* __restrict__ pred, const float* __restrict__ target, int64_t n,
                                    bool mae, float* __restrict__ grad, double* __restrict__ partials) {
  __shared__ double sd[32];
  const double inv = 1.0 / (double)n;
  double acc = 0;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double e = (double)pred[i] - target[i];
    if (mae) {
      acc += fabs(e);
      grad[i] = (float)((e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0) * inv);
    } else {
      acc += e * e;
      grad[i] = (float)(2.0 * e * inv);
    }
  }
  acc = block_reduce(acc, SumOp{}, sd);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void loss_final_kernel(const double* __restrict__ partials, int n, double* __restrict__ out) {
  __shared__ double sd[32];
  double acc = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partials[i];
  acc = block_reduce(acc, SumOp{}, sd);
  if (threadIdx.x == 0) *out = acc;
}

__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m,
                             float* __restrict__ v, int64_t n, double lr, double wd, double c1, double c2) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double gi = g[i];
    const float mi = (float)(b1 * m[i] + (1 - b1) * gi);
    const float vi = (float)(b2 * v[i] + (1 - b2) * gi * gi);
    m[i] = mi;
    v[i] = vi;
    double x = (double)p[i] * (1.0 - lr * wd);
    x -= lr * (mi / c1) / (sqrt(vi / c2) + eps);
    p[i] = (float)x;
  }
}

__global__ void clamp_min_kernel(float* __restrict__ p, int64_t n, float lo) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) p[i] = fmaxf(p[i], lo);
}

void check_attn(const AttnShape& s, const char* what) {
  require_arg(s.T >= 1 && s.H >= 1 && s.Hkv >= 1 && s.D >= 1 && s.H % s.Hkv == 0,
              std::string(what) + ": shape T " + std::to_string(s.T) + ", H " + std::to_string(s.H) + ", Hkv " +
                  std::to_string(s.Hkv) + ", D " + std::to_string(s.D) + " must be positive with Hkv | H");
}

void check_rope(int T, int n_heads, int head_dim, int pos0, float theta) {
  require_arg(T >= 1 && n_heads >= 1 && head_dim >= 2 && head_dim % 2 == 0 && pos0 >= 0 && std::isfinite(theta) &&
                  theta > 0.0f,
              "calib rope: T, n_heads >= 1, even head_dim >= 2, pos0 >= 0 and theta > 0 required");
}

}  // namespace

// ---- host API ---------------------------------------------------------------------------------------------

Blas::Blas(cudaStream_t stream, bool allow_tf32) : stream_(stream), tf32_(allow_tf32) {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  handle_ = h;
  CUBLAS_CHECK(cublasSetStream(h, stream));
  CUBLAS_CHECK(cublasSetMathMode(h, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
}

Blas::~Blas() {
  if (handle_) cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

void linear_fwd(Blas& blas, const float* x, int T, int in, const float* W, int out, float* y) {
  require_arg(T >= 0 && in >= 1 && out >= 1, "calib linear_fwd: T >= 0, in, out >= 1 required");
  if (T == 0) return;
  // y[T][out] = x[T][in]·W[out][in]ᵀ  ⇔  (col-major) y' [out×T] = W'ᵀ [out×in] · x' [in×T].
  gemm(blas, true, false, out, T, in, 1.0f, W, in, x, in, 0.0f, y, out);
}

void linear_bwd(Blas& blas, const float* x, int T, int in, const float* W, int out, const float* dy, float* dx,
                float* dW) {
  require_arg(T >= 0 && in >= 1 && out >= 1, "calib linear_bwd: T >= 0, in, out >= 1 required");
  if (T == 0) return;
  // dx[T][in] += dy[T][out]·W[out][in]  ⇔  dx' [in×T] += W' [in×out] · dy' [out×T].
  if (dx) gemm(blas, false, false, in, T, out, 1.0f, W, in, dy, out, 1.0f, dx, in);
  // dW[out][in] += dy[T][out]ᵀ·x[T][in]  ⇔  dW' [in×out] += x' [in×T] · dy'ᵀ [T×out].
  if (dW) gemm(blas, false, true, in, out, T, 1.0f, x, in, dy, out, 1.0f, dW, in);
}

void rmsnorm_fwd(const float* x, const float* w, int T, int n, float eps, float* y, float* inv_rms,
                 cudaStream_t stream) {
  require_arg(T >= 1 && n >= 1, "calib rmsnorm_fwd: T, n >= 1 required");
  rmsnorm_fwd_kernel<<<T, kThreads, 0, stream>>>(x, w, n, eps, y, inv_rms);
  WKV_CHECK_LAUNCH();
}

void rmsnorm_bwd(const float* x, const float* w, const float* inv_rms, const float* dy, int T, int n, float* dx,
                 cudaStream_t stream) {
  require_arg(T >= 1 && n >= 1, "calib rmsnorm_bwd: T, n >= 1 required");
  rmsnorm_bwd_kernel<<<T, kThreads, 0, stream>>>(x, w, inv_rms, dy, n, dx);
  WKV_CHECK_LAUNCH();
}

void rope_fwd(float* x, int T, int n_heads, int head_dim, int pos0, float theta, cudaStream_t stream) {
  check_rope(T, n_heads, head_dim, pos0, theta);
  const int64_t threads = (int64_t)T * (head_dim / 2);
  rope_kernel<<<(unsigned)((threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(x, T, n_heads, head_dim,
                                                                                        pos0, theta, false);
  WKV_CHECK_LAUNCH();
}

void rope_bwd(float* dx, int T, int n_heads, int head_dim, int pos0, float theta, cudaStream_t stream) {
  check_rope(T, n_heads, head_dim, pos0, theta);
  const int64_t threads = (int64_t)T * (head_dim / 2);
  rope_kernel<<<(unsigned)((threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(dx, T, n_heads, head_dim,
                                                                                        pos0, theta, true);
  WKV_CHECK_LAUNCH();
}

void swiglu_fwd(const float* g, const float* u, int64_t n, float* out, cudaStream_t stream) {
  require_arg(n >= 0, "calib swiglu_fwd: n >= 0 required");
  if (n == 0) return;
  swiglu_fwd_kernel<<<grid_for(n), kThreads, 0, stream>>>(g, u, n, out);
  WKV_CHECK_LAUNCH();
}

void swiglu_bwd(const float* g, const float* u, const float* dout, int64_t n, float* dg, float* du,
                cudaStream_t stream) {
  require_arg(n >= 0, "calib swiglu_bwd: n >= 0 required");
  if (n == 0 || (!dg && !du)) return;
  swiglu_bwd_kernel<<<grid_for(n), kThreads, 0, stream>>>(g, u, dout, n, dg, du);
  WKV_CHECK_LAUNCH();
}

size_t poq_attention_fwd_scratch_floats(const AttnShape& s) { return size_t(s.T); }
size_t poq_attention_bwd_scratch_floats(const AttnShape& s) { return 2 * size_t(s.T) * s.T; }

void poq_attention_fwd(Blas& blas, const AttnShape& s, const float* q, const float* k, const float* v,
                       const float* kq, const float* vq, float* probs, float* out, float* scratch) {
  check_attn(s, "calib poq_attention_fwd");
  const int T = s.T, D = s.D, qd = s.H * D, kvd = s.Hkv * D, group = s.H / s.Hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  if (!kq) kq = k;
  if (!vq) vq = v;
  const int threads = 128;
  for (int h = 0; h < s.H; ++h) {
    const size_t ko = size_t(h / group) * D;
    float* P = probs + size_t(h) * T * T;
    // P[t][j] = scale·q_t·kq_j  ⇔  P' [T(j)×T(t)] = scale·Kq'ᵀ [T×D] · Q' [D×T].
    gemm(blas, true, false, T, T, D, scale, kq + ko, kvd, q + size_t(h) * D, qd, 0.0f, P, T);
    attn_fwd_row_kernel<<<T, kThreads, 0, blas.stream()>>>(P, q + size_t(h) * D, qd, k + ko, kvd, T, D, scale,
                                                            scratch);
    WKV_CHECK_LAUNCH();
    // out[t][c] = Σ_{j<t} P[t][j]·vq[j][c]  ⇔  out' [D×T] = Vq' [D×T] · P' [T×T].
    gemm(blas, false, false, D, T, T, 1.0f, vq + ko, kvd, P, T, 0.0f, out + size_t(h) * D, qd);
    attn_fwd_diag_kernel<<<T, threads, 0, blas.stream()>>>(out + size_t(h) * D, qd, v + ko, kvd, P, T, D, scratch);
    WKV_CHECK_LAUNCH();
  }
}

void poq_attention_bwd(Blas& blas, const AttnShape& s, const float* q, const float* k, const float* v,
                       const float* kq, const float* vq, const float* probs, const float* dout, float* dq,
                       float* dk, float* dv, float* dkq, float* dvq, float* scratch) {
  check_attn(s, "calib poq_attention_bwd");
  const int T = s.T, D = s.D, qd = s.H * D, kvd = s.Hkv * D, group = s.H / s.Hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  if (!kq) {
    kq = k;
    dkq = dk;
  }
  if (!vq) {
    vq = v;
    dvq = dv;
  }
  float* SB = scratch;
  float* PB = scratch + size_t(T) * T;
  for (int h = 0; h < s.H; ++h) {
    const size_t ko = size_t(h / group) * D, qo = size_t(h) * D;
    const float* P = probs + size_t(h) * T * T;
    // SB[t][j] = dout_t·vq_j  ⇔  SB' [T(j)×T(t)] = Vq'ᵀ [T×D] · dOut' [D×T].
    gemm(blas, true, false, T, T, D, 1.0f, vq + ko, kvd, dout + qo, qd, 0.0f, SB, T);
    attn_bwd_row_kernel<<<T, kThreads, 0, blas.stream()>>>(SB, PB, P, q + qo, qd, k + ko, v + ko, kvd, dout + qo,
                                                            dq ? dq + qo : nullptr, dk ? dk + ko : nullptr,
                                                            dv ? dv + ko : nullptr, T, D, scale);
    WKV_CHECK_LAUNCH();
    // dq[t][c] += Σ_j SB[t][j]·kq[j][c]  ⇔  dq' [D×T] += Kq' [D×T] · SB' [T×T].
    if (dq) gemm(blas, false, false, D, T, T, 1.0f, kq + ko, kvd, SB, T, 1.0f, dq + qo, qd);
    // dkq[j][c] += Σ_t SB[t][j]·q[t][c]  ⇔  dkq' [D×T(j)] += Q' [D×T(t)] · SB'ᵀ.
    if (dkq) gemm(blas, false, true, D, T, T, 1.0f, q + qo, qd, SB, T, 1.0f, dkq + ko, kvd);
    // dvq[j][c] += Σ_t PB[t][j]·dout[t][c].
    if (dvq) gemm(blas, false, true, D, T, T, 1.0f, dout + qo, qd, PB, T, 1.0f, dvq + ko, kvd);
  }
}

void lwc_fake_quant_fwd(const float* W, int rows, int cols, int group, const float* a, const float* b, float* Wq,
                        cudaStream_t stream) {
  require_arg(rows >= 1 && cols >= 1 && group >= 1 && cols % group == 0 && (a == nullptr) == (b == nullptr),
              "calib lwc_fake_quant_fwd: group must divide cols, a and b both given or both null");
  const int64_t groups = int64_t(rows) * (cols / group);
  lwc_fwd_kernel<<<(unsigned)((groups + kWarpsPerBlock - 1) / kWarpsPerBlock), kThreads, 0, stream>>>(
      W, rows, cols, group, a, b, Wq);
  WKV_CHECK_LAUNCH();
}

void lwc_fake_quant_bwd(const float* W, int rows, int cols, int group, const float* a, const float* b,
                        const float* dWq, float* da, float* db, cudaStream_t stream) {
  require_arg(rows >= 1 && cols >= 1 && group >= 1 && cols % group == 0,
              "calib lwc_fake_quant_bwd: group must divide cols");
  if (!a || !b) return;  // RTN: nothing learned
  const int64_t groups = int64_t(rows) * (cols / group);
  lwc_bwd_kernel<<<(unsigned)((groups + kWarpsPerBlock - 1) / kWarpsPerBlock), kThreads, 0, stream>>>(
      W, rows, cols, group, a, b, dWq, da, db);
  WKV_CHECK_LAUNCH();
}

void kv_fake_quant_fwd(const float* x, int T, int C, int G, const float* delta, const float* s, float* xq,
                       cudaStream_t stream) {
  require_arg(T >= 1 && C >= 1 && G >= 1 && C % G == 0 && (delta == nullptr) == (s == nullptr),
              "calib kv_fake_quant_fwd: G must divide C, delta and s both given or both null");
  const int64_t groups = int64_t(T) * (C / G);
  kv_fwd_kernel<<<(unsigned)((groups + kWarpsPerBlock - 1) / kWarpsPerBlock), kThreads, 0, stream>>>(x, T, C, G,
                                                                                                     delta, s, xq);
  WKV_CHECK_LAUNCH();
}

size_t kv_fake_quant_bwd_scratch_floats(int T, int C) { return 2 * size_t(T) * C; }

void kv_fake_quant_bwd(const float* x, int T, int C, int G, const float* delta, const float* s, const float* dxq,
                       float* dx, float* ddelta, float* ds, float* scratch, cudaStream_t stream) {
  require_arg(T >= 1 && C >= 1 && G >= 1 && C % G == 0 && (delta == nullptr) == (s == nullptr),
              "calib kv_fake_quant_bwd: G must divide C, delta and s both given or both null");
  const bool params = delta && (ddelta || ds);
  require_arg(!params || scratch, "calib kv_fake_quant_bwd: scratch needed for the smoothing gradients");
  float* dd = params && ddelta ? scratch : nullptr;
  float* dsc = params && ds ? scratch + size_t(T) * C : nullptr;
  const int64_t groups = int64_t(T) * (C / G);
  kv_bwd_kernel<<<(unsigned)((groups + kWarpsPerBlock - 1) / kWarpsPerBlock), kThreads, 0, stream>>>(
      x, T, C, G, delta, s, dxq, dx, dd, dsc);
  WKV_CHECK_LAUNCH();
  const unsigned cb = (unsigned)((C + kThreads - 1) / kThreads);
  if (dd) {
    column_sum_kernel<<<cb, kThreads, 0, stream>>>(dd, T, C, ddelta);
    WKV_CHECK_LAUNCH();
  }
  if (dsc) {
    column_sum_kernel<<<cb, kThreads, 0, stream>>>(dsc, T, C, ds);
    WKV_CHECK_LAUNCH();
  }
}

void loss_and_grad(const float* pred, const float* target, int64_t n, bool mae, float* grad, double* partials,
                   double* loss_out, cudaStream_t stream) {
  require_arg(n >= 1, "calib loss_and_grad: n >= 1 required");
  loss_partial_kernel<<<kLossBlocks, kThreads, 0, stream>>>(pred, target, n, mae, grad, partials);
  WKV_CHECK_LAUNCH();
  loss_final_kernel<<<1, kThreads, 0, stream>>>(partials, kLossBlocks, loss_out);
  WKV_CHECK_LAUNCH();
}

void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, double lr, double wd, double c1, double c2,
                cudaStream_t stream) {
  require_arg(n >= 0 && c1 > 0 && c2 > 0, "calib adamw_step: n >= 0 and positive bias corrections required");
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, g, m, v, n, lr, wd, c1, c2);
  WKV_CHECK_LAUNCH();
}

void clamp_min(float* p, int64_t n, float lo, cudaStream_t stream) {
  require_arg(n >= 0, "calib clamp_min: n >= 0 required");
  if (n == 0) return;
  clamp_min_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, n, lo);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels::calib
