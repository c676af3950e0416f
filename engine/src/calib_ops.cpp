// WKVQuant calibration ops: forward and backward in FP32 (derivations in calib_ops.h).
#include "calib_ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_ops.h"
#include "quant_formats.h"

namespace wkv::calib {

// ---- linear ---------------------------------------------------------------------------------------------

void linear_fwd(const float* x, int T, int in, const float* W, int out, float* y) {
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * in;
    float* yr = y + size_t(t) * out;
    for (int o = 0; o < out; ++o) yr[o] = cpu::dot(xr, W + size_t(o) * in, in);
  }
}

void linear_bwd(const float* x, int T, int in, const float* W, int out, const float* dy, float* dx, float* dW) {
  if (dx)
    for (int t = 0; t < T; ++t) {
      float* dxr = dx + size_t(t) * in;
      const float* dyr = dy + size_t(t) * out;
      for (int o = 0; o < out; ++o) {
        const float g = dyr[o];
        const float* wr = W + size_t(o) * in;
        for (int i = 0; i < in; ++i) dxr[i] += g * wr[i];
      }
    }
  if (dW)
    for (int o = 0; o < out; ++o) {
      float* dwr = dW + size_t(o) * in;
      for (int t = 0; t < T; ++t) {
        const float g = dy[size_t(t) * out + o];
        const float* xr = x + size_t(t) * in;
        for (int i = 0; i < in; ++i) dwr[i] += g * xr[i];
      }
    }
}

// ---- RMSNorm --------------------------------------------------------------------------------------------

void rmsnorm_fwd(const float* x, const float* w, int T, int n, float eps, float* y, float* inv_rms) {
  cpu::rmsnorm(x, w, T, n, eps, y, inv_rms);  // the inference arithmetic, so the FP path matches it
}

void rmsnorm_bwd(const float* x, const float* w, const float* inv_rms, const float* dy, int T, int n, float* dx) {
  for (int t = 0; t < T; ++t) {
    const float* xr = x + size_t(t) * n;
    const float* dyr = dy + size_t(t) * n;
    float* dxr = dx + size_t(t) * n;
    const float r = inv_rms[t];
    double dot = 0;
    for (int i = 0; i < n; ++i) dot += double(dyr[i]) * w[i] * xr[i];
    const float c = float(dot) * r * r * r / float(n);
    for (int i = 0; i < n; ++i) dxr[i] += r * w[i] * dyr[i] - c * xr[i];
  }
}

// ---- RoPE -----------------------------------------------------------------------------------------------

void rope_fwd(float* x, int T, int n_heads, int head_dim, int pos0, float theta) {
  cpu::rope(x, T, n_heads, head_dim, pos0, theta);
}

void rope_bwd(float* dx, int T, int n_heads, int head_dim, int pos0, float theta) {
  // Forward: (a, b) → R·(a, b) with R the rotation by the angle; backward: Rᵀ = rotation by −angle.
  cpu::rope(dx, T, n_heads, head_dim, pos0, theta, /*inverse=*/true);
}

// ---- SwiGLU ---------------------------------------------------------------------------------------------

void swiglu_fwd(const float* g, const float* u, int64_t n, float* out) {
  // Same expression as cpu::swiglu.
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void swiglu_bwd(const float* g, const float* u, const float* dout, int64_t n, float* dg, float* du) {
  for (int64_t i = 0; i < n; ++i) {
    const float sg = 1.0f / (1.0f + std::exp(-g[i]));
    if (dg) dg[i] += dout[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    if (du) du[i] += dout[i] * g[i] * sg;
  }
}

// ---- attention with POQ -----------------------------------------------------------------------------------

void poq_attention_fwd(const AttnShape& s, const float* q, const float* k, const float* v, const float* kq,
                       const float* vq, float* probs, float* out) {
  const int T = s.T, H = s.H, D = s.D, kv_dim = s.Hkv * D, group = s.H / s.Hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  if (!kq) kq = k;
  if (!vq) vq = v;
  for (int h = 0; h < H; ++h) {
    const int kvh = h / group;
    for (int t = 0; t < T; ++t) {
      float* p = probs + (size_t(h) * T + t) * T;
      const float* qt = q + (size_t(t) * H + h) * D;
      for (int j = 0; j <= t; ++j) {
        const float* key = (j == t ? k : kq) + size_t(j) * kv_dim + size_t(kvh) * D;
        p[j] = cpu::dot(qt, key, D) * scale;
      }
      cpu::softmax(p, t + 1);
      std::fill(p + t + 1, p + T, 0.0f);
      float* o = out + (size_t(t) * H + h) * D;
      std::fill(o, o + D, 0.0f);
      for (int j = 0; j <= t; ++j) {
        const float* val = (j == t ? v : vq) + size_t(j) * kv_dim + size_t(kvh) * D;
        for (int c = 0; c < D; ++c) o[c] += p[j] * val[c];
      }
    }
  }
}

void poq_attention_bwd(const AttnShape& s, const float* q, const float* k, const float* v, const float* kq,
                       const float* vq, const float* probs, const float* dout, float* dq, float* dk, float* dv,
                       float* dkq, float* dvq) {
  const int T = s.T, H = s.H, D = s.D, kv_dim = s.Hkv * D, group = s.H / s.Hkv;
  const float scale = 1.0f / std::sqrt(float(D));
  if (!kq) {
    kq = k;
    dkq = dk;
  }
  if (!vq) {
    vq = v;
    dvq = dv;
  }
  std::vector<float> dp(size_t(T) + 1);
  for (int h = 0; h < H; ++h) {
    const int kvh = h / group;
    const size_t hoff = size_t(kvh) * D;
    for (int t = 0; t < T; ++t) {
      const float* p = probs + (size_t(h) * T + t) * T;
      const float* qt = q + (size_t(t) * H + h) * D;
      const float* go = dout + (size_t(t) * H + h) * D;
      float* dqt = dq ? dq + (size_t(t) * H + h) * D : nullptr;
      double sum = 0;
      for (int j = 0; j <= t; ++j) {
        const bool own = j == t;
        const float* val = (own ? v : vq) + size_t(j) * kv_dim + hoff;
        dp[j] = cpu::dot(go, val, D);
        sum += double(p[j]) * dp[j];
        float* dval = own ? dv : dvq;
        if (dval) {
          float* dvr = dval + size_t(j) * kv_dim + hoff;
          for (int c = 0; c < D; ++c) dvr[c] += p[j] * go[c];
        }
      }
      for (int j = 0; j <= t; ++j) {
        const bool own = j == t;
        const float ds = p[j] * (dp[j] - float(sum)) * scale;
        const float* key = (own ? k : kq) + size_t(j) * kv_dim + hoff;
        if (dqt)
          for (int c = 0; c < D; ++c) dqt[c] += ds * key[c];
        float* dkey = own ? dk : dkq;
        if (dkey) {
          float* dkr = dkey + size_t(j) * kv_dim + hoff;
          for (int c = 0; c < D; ++c) dkr[c] += ds * qt[c];
        }
      }
    }
  }
}

// ---- LWC ------------------------------------------------------------------------------------------------

namespace {

struct LwcGroup {
  float mx, mn, gamma, beta, lo, h, z;
  bool h_clamped;
};

LwcGroup lwc_group(const float* w, int n, const float* a, const float* b, size_t gi) {
  LwcGroup g;
  g.mn = INFINITY;
  g.mx = -INFINITY;
  for (int i = 0; i < n; ++i) q4_minmax_update(w[i], g.mn, g.mx);
  g.gamma = a ? lwc_sigmoid(a[gi]) : 1.0f;
  g.beta = b ? lwc_sigmoid(b[gi]) : 1.0f;
  const float hi = g.gamma * g.mx;
  g.lo = g.beta * g.mn;
  const float h_raw = (hi - g.lo) / 15.0f;
  g.h_clamped = !(h_raw >= kLwcMinScale);
  g.h = g.h_clamped ? kLwcMinScale : h_raw;
  g.z = q4_round(-g.lo / g.h);
  return g;
}

}  // namespace

void lwc_fake_quant_fwd(const float* W, int rows, int cols, int group, const float* a, const float* b, float* Wq) {
  const int gpr = cols / group;
  for (int r = 0; r < rows; ++r)
    for (int gi = 0; gi < gpr; ++gi) {
      const size_t off = size_t(r) * cols + size_t(gi) * group;
      const LwcGroup g = lwc_group(W + off, group, a, b, size_t(r) * gpr + gi);
      for (int i = 0; i < group; ++i) {
        const float qv = float(q4_clamp(q4_round(W[off + i] / g.h) + g.z));
        Wq[off + i] = (qv - g.z) * g.h;
      }
    }
}

void lwc_fake_quant_bwd(const float* W, int rows, int cols, int group, const float* a, const float* b,
                        const float* dWq, float* da, float* db) {
  const int gpr = cols / group;
  for (int r = 0; r < rows; ++r)
    for (int gi = 0; gi < gpr; ++gi) {
      const size_t off = size_t(r) * cols + size_t(gi) * group;
      const size_t pi = size_t(r) * gpr + gi;
      const LwcGroup g = lwc_group(W + off, group, a, b, pi);
      double G_h = 0, G_lo = 0;
      for (int i = 0; i < group; ++i) {
        const float w = W[off + i];
        const float v = q4_round(w / g.h) + g.z;
        const bool in_range = v >= 0.0f && v <= 15.0f;  // inclusive, as torch.clamp's backward
        const float qv = float(q4_clamp(v));
        const float gr = dWq[off + i];
        const float m = in_range ? 1.0f : 0.0f;
        G_h += double(gr) * ((qv - g.z) - m * w / g.h + (m - 1.0f) * g.lo / g.h);
        G_lo += double(gr) * (1.0f - m);
      }
      const double d_hi = g.h_clamped ? 0.0 : G_h / 15.0;
      const double d_lo = g.h_clamped ? G_lo : G_lo - G_h / 15.0;
      if (da && a) da[pi] += float(double(g.gamma) * (1.0 - g.gamma) * g.mx * d_hi);
      if (db && b) db[pi] += float(double(g.beta) * (1.0 - g.beta) * g.mn * d_lo);
    }
}

// ---- KV 2D fake quantization --------------------------------------------------------------------------

namespace {

// One group of G smoothed values: x̃, u, q, y and the arg-extremes.
struct KvGroup {
  int imin = 0, imax = 0;
  float mn = 0, scale = 0;
};

KvGroup kv_group(const float* xs, int G) {
  KvGroup g;
  float mn = xs[0], mx = xs[0];
  for (int i = 1; i < G; ++i) {
    if (xs[i] < mn) {
      mn = xs[i];
      g.imin = i;
    }
    if (xs[i] > mx) {
      mx = xs[i];
      g.imax = i;
    }
  }
  g.mn = mn;
  const float range = mx - mn;
  g.scale = range > 0.0f ? range / 15.0f : 0.0f;
  return g;
}

}  // namespace

void kv_fake_quant_fwd(const float* x, int T, int C, int G, const float* delta, const float* s, float* xq) {
  std::vector<float> xs(G);
  for (int t = 0; t < T; ++t)
    for (int c0 = 0; c0 < C; c0 += G) {
      const size_t off = size_t(t) * C + c0;
      for (int i = 0; i < G; ++i)
        xs[i] = delta ? kv4_smooth(x[off + i], delta[c0 + i], s[c0 + i]) : x[off + i];
      const KvGroup g = kv_group(xs.data(), G);
      for (int i = 0; i < G; ++i) {
        const float y = g.scale > 0.0f ? float(q4_clamp(q4_round((xs[i] - g.mn) / g.scale))) * g.scale + g.mn : g.mn;
        xq[off + i] = delta ? y * s[c0 + i] + delta[c0 + i] : y;
      }
    }
}

void kv_fake_quant_bwd(const float* x, int T, int C, int G, const float* delta, const float* s, const float* dxq,
                       float* dx, float* ddelta, float* ds) {
  std::vector<float> xs(G), y(G), gy(G), gxs(G);
  for (int t = 0; t < T; ++t)
    for (int c0 = 0; c0 < C; c0 += G) {
      const size_t off = size_t(t) * C + c0;
      for (int i = 0; i < G; ++i)
        xs[i] = delta ? kv4_smooth(x[off + i], delta[c0 + i], s[c0 + i]) : x[off + i];
      const KvGroup g = kv_group(xs.data(), G);
      double R = 0, sum_gy = 0;
      for (int i = 0; i < G; ++i) {
        const float sc = delta ? s[c0 + i] : 1.0f;
        gy[i] = dxq[off + i] * sc;
        sum_gy += gy[i];
        if (g.scale > 0.0f) {
          const float u = (xs[i] - g.mn) / g.scale;
          const float qv = float(q4_clamp(q4_round(u)));
          y[i] = qv * g.scale + g.mn;
          R += double(gy[i]) * (qv - u);
        } else {
          y[i] = g.mn;
        }
      }
      if (g.scale > 0.0f) {
        for (int i = 0; i < G; ++i) gxs[i] = gy[i];
        gxs[g.imax] += float(R / 15.0);
        gxs[g.imin] -= float(R / 15.0);
      } else {
        std::fill(gxs.begin(), gxs.end(), 0.0f);
        gxs[g.imin] = float(sum_gy);
      }
      for (int i = 0; i < G; ++i) {
        const int c = c0 + i;
        const float sc = delta ? s[c] : 1.0f;
        if (dx) dx[off + i] += gxs[i] / sc;
        if (delta && ddelta) ddelta[c] += dxq[off + i] - gxs[i] / sc;
        if (delta && ds) ds[c] += dxq[off + i] * y[i] - gxs[i] * xs[i] / sc;
      }
    }
}

}  // namespace wkv::calib
