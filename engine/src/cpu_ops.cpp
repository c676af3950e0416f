#include "cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace wkv::cpu {

float dot(const float* a, const float* b, int n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) acc[k] += a[i + k] * b[i + k];
  float s = 0.f;
  for (int k = 0; k < kLanes; ++k) s += acc[k];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

namespace {

// SIMD vector of kLanes floats through the GCC/Clang vector extension: the compiler lowers it to
// AVX-512, AVX2 or SSE as the target allows, and to scalar code elsewhere.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float))));

inline vfloat load(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline float hsum(vfloat v) {
  float s = 0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// Register-blocked micro-kernel: R weight rows × C tokens, accumulating over k in vectors.
// w points at the first of the R rows (row stride `in`); writes y[t][o0 + r] for t in [t0, t0+C).
// Requires in % kLanes == 0.
template <int R, int C>
inline void micro_kernel(const float* w, const float* x, int in, int out, int o0, int t0, float* y) {
  vfloat acc[R][C] = {};
  for (int k = 0; k < in; k += kLanes) {
    vfloat wv[R], xv[C];
    for (int r = 0; r < R; ++r) wv[r] = load(w + size_t(r) * in + k);
    for (int c = 0; c < C; ++c) xv[c] = load(x + size_t(t0 + c) * in + k);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] += wv[r] * xv[c];
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[size_t(t0 + c) * out + o0 + r] = hsum(acc[r][c]);
}

}  // namespace

void matmul(ThreadPool& pool, const float* x, int T, const Linear& W, float* y) {
  const int in = W.in, out = W.out;
  if (in % kLanes != 0) {  // odd shapes: plain dot products over (dequantized) rows
    pool.parallel_for(out, [&](int64_t o_begin, int64_t o_end) {
      std::vector<float> row(W.quantized() ? in : 0);
      for (int64_t o = o_begin; o < o_end; ++o) {
        const float* wr = W.w.data() + o * in;
        if (W.quantized()) {
          dequantize_w4_row(*W.q4, int(o), row.data());
          wr = row.data();
        }
        for (int t = 0; t < T; ++t) y[size_t(t) * out + o] = dot(wr, x + size_t(t) * in, in);
      }
    }, 16);
    return;
  }
  // Rows in blocks of 4 spread over threads; tokens in tiles of 64 so a tile of x stays in cache while
  // the thread's rows stream past it; inside, 4×4 register blocks. W4 rows are dequantized to FP32 four
  // at a time (once per token tile), which keeps the reference exact: y = x·dequant(W)ᵀ.
  constexpr int kTokenTile = 64;
  pool.parallel_for(out, [&](int64_t o_begin, int64_t o_end) {
    std::vector<float> rows(W.quantized() ? size_t(4) * in : 0);
    for (int t0 = 0; t0 < T; t0 += kTokenTile) {
      const int t1 = std::min(T, t0 + kTokenTile);
      int o = int(o_begin);
      for (; o < o_end; o += 4) {
        const int R = int(std::min<int64_t>(4, o_end - o));
        const float* wr = W.w.data() + size_t(o) * in;
        if (W.quantized()) {
          for (int r = 0; r < R; ++r) dequantize_w4_row(*W.q4, o + r, rows.data() + size_t(r) * in);
          wr = rows.data();
        }
        if (R == 4) {
          int t = t0;
          for (; t + 4 <= t1; t += 4) micro_kernel<4, 4>(wr, x, in, out, o, t, y);
          for (; t < t1; ++t) micro_kernel<4, 1>(wr, x, in, out, o, t, y);
        } else {
          for (int r = 0; r < R; ++r)
            for (int t = t0; t < t1; ++t) micro_kernel<1, 1>(wr + size_t(r) * in, x, in, out, o + r, t, y);
        }
      }
    }
  }, 4);
}

void rmsnorm(const float* x, const float* weight, int T, int n, float eps, float* y, float* inv_rms) {
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * n;
    float* yr = y + size_t(t) * n;
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(float(ss / n) + eps);
    if (inv_rms) inv_rms[t] = inv;
    for (int i = 0; i < n; ++i) yr[i] = (xr[i] * inv) * weight[i];
  }
}

void rope(float* x, int T, int n_heads, int head_dim, int pos0, float theta, bool inverse) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  // θ^(2i/D) in double, rounded once: the correctly rounded value whatever the libm, and exactly what
  // the CUDA kernel computes, so CPU and GPU angles agree bit for bit even at large positions.
  for (int i = 0; i < half; ++i)
    inv_freq[i] = 1.0f / float(std::pow(double(theta), double(float(2 * i) / float(head_dim))));
  for (int t = 0; t < T; ++t) {
    const float pos = float(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      const float c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
      for (int h = 0; h < n_heads; ++h) {
        float* v = x + (size_t(t) * n_heads + h) * head_dim;
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

void swiglu(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void softmax(float* x, int n) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = std::max(m, x[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace wkv::cpu
