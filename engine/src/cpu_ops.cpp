#include "cpu_ops.h"

#include <algorithm>
#include <cmath>
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

// Four tokens against one weight row: the row is loaded once for four dot products.
inline void dot4(const float* w, const float* x0, const float* x1, const float* x2, const float* x3, int n,
                 float* out) {
  constexpr int kLanes = 8;
  float a0[kLanes] = {}, a1[kLanes] = {}, a2[kLanes] = {}, a3[kLanes] = {};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const float wk = w[i + k];
      a0[k] += wk * x0[i + k];
      a1[k] += wk * x1[i + k];
      a2[k] += wk * x2[i + k];
      a3[k] += wk * x3[i + k];
    }
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int k = 0; k < kLanes; ++k) {
    s0 += a0[k];
    s1 += a1[k];
    s2 += a2[k];
    s3 += a3[k];
  }
  for (; i < n; ++i) {
    s0 += w[i] * x0[i];
    s1 += w[i] * x1[i];
    s2 += w[i] * x2[i];
    s3 += w[i] * x3[i];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

}  // namespace

void matmul(ThreadPool& pool, const float* x, int T, const DenseLinear& W, float* y) {
  const int in = W.in, out = W.out;
  const float* w = W.w.data();
  // Tokens in tiles of 64 so a tile of x stays in cache while every row of W streams past it.
  constexpr int kTokenTile = 64;
  pool.parallel_for(out, [&](int64_t o_begin, int64_t o_end) {
    for (int t0 = 0; t0 < T; t0 += kTokenTile) {
      const int t1 = std::min(T, t0 + kTokenTile);
      for (int64_t o = o_begin; o < o_end; ++o) {
        const float* wr = w + o * in;
        int t = t0;
        for (; t + 4 <= t1; t += 4) {
          float r[4];
          dot4(wr, x + size_t(t) * in, x + size_t(t + 1) * in, x + size_t(t + 2) * in, x + size_t(t + 3) * in, in, r);
          for (int k = 0; k < 4; ++k) y[size_t(t + k) * out + o] = r[k];
        }
        for (; t < t1; ++t) y[size_t(t) * out + o] = dot(wr, x + size_t(t) * in, in);
      }
    }
  }, 16);
}

void rmsnorm(const float* x, const float* weight, int T, int n, float eps, float* y) {
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * n;
    float* yr = y + size_t(t) * n;
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(float(ss / n) + eps);
    for (int i = 0; i < n; ++i) yr[i] = (xr[i] * inv) * weight[i];
  }
}

void rope(float* x, int T, int n_heads, int head_dim, int pos0, float theta) {
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = 1.0f / std::pow(theta, float(2 * i) / float(head_dim));
  for (int t = 0; t < T; ++t) {
    const float pos = float(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
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
