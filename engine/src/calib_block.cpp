// Decoder block forward/backward for calibration (semantics in calib_block.h, op derivations in calib_ops.h).
#include "calib_block.h"

#include <algorithm>
#include <array>
#include <string>

#include "wkv/error.h"

namespace wkv::calib {
namespace {

// The KV smoothing the quantized path applies (δ_k, s_k, δ_v, s_v), all null for identity / no params.
std::array<const float*, 4> smoothing_of(const BlockQuantParams* p) {
  if (!p || !p->smooth) return {nullptr, nullptr, nullptr, nullptr};
  return {p->k_delta.data(), p->k_scale.data(), p->v_delta.data(), p->v_scale.data()};
}

const float* dense(const Linear& lin, int i) {
  if (lin.w.empty() || lin.w.size() != size_t(lin.out) * lin.in)
    throw Error(ErrorCode::invalid_argument, std::string("calibration: block linear ") + linear_name(i) +
                                                 " has no dense FP32 weights (is the model already quantized?)");
  return lin.w.data();
}

// Weights the block computes with: the tape's fake-quantized copy or the dense weights.
const float* weights_of(const LayerWeights& w, const BlockTape& tape, int i) {
  return tape.quantized ? tape.wq[i].data() : dense(block_linear(w, i), i);
}

}  // namespace

BlockShape block_shape_of(const ModelInfo& info, int weight_group, int kv_group) {
  BlockShape s;
  s.dim = info.dim;
  s.n_heads = info.n_heads;
  s.n_kv_heads = info.n_kv_heads;
  s.head_dim = info.head_dim;
  s.ffn = info.ffn_dim;
  s.rope_theta = info.rope_theta;
  s.norm_eps = info.norm_eps;
  s.weight_group = weight_group;
  s.kv_group = kv_group;
  for (int in : {s.dim, s.q_dim(), s.ffn})
    if (weight_group < 8 || weight_group % 8 != 0 || in % weight_group != 0)
      throw Error(ErrorCode::invalid_argument,
                  "calibration: W4 group size " + std::to_string(weight_group) +
                      " must be a multiple of 8 dividing every linear's input size (dim " + std::to_string(s.dim) +
                      ", attention " + std::to_string(s.q_dim()) + ", ffn " + std::to_string(s.ffn) + ")");
  validate_kv4_shape(s.head_dim, s.kv_g(), "calibration KV group");
  return s;
}

const char* linear_name(int i) {
  static const char* const names[kNumLinears] = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"};
  return (i >= 0 && i < kNumLinears) ? names[i] : "?";
}

const Linear& block_linear(const LayerWeights& w, int i) {
  switch (i) {
    case kWq: return w.wq;
    case kWk: return w.wk;
    case kWv: return w.wv;
    case kWo: return w.wo;
    case kWgate: return w.w_gate;
    case kWup: return w.w_up;
    case kWdown: return w.w_down;
    default: throw Error(ErrorCode::internal, "block_linear: index " + std::to_string(i));
  }
}

Linear& block_linear(LayerWeights& w, int i) {
  return const_cast<Linear&>(block_linear(static_cast<const LayerWeights&>(w), i));
}

BlockQuantParams make_block_params(const BlockShape& s, bool lwc, bool smooth, float lwc_init) {
  BlockQuantParams p;
  p.lwc = lwc;
  p.smooth = smooth;
  const int outs[kNumLinears] = {s.q_dim(), s.kv_dim(), s.kv_dim(), s.dim, s.ffn, s.ffn, s.dim};
  const int ins[kNumLinears] = {s.dim, s.dim, s.dim, s.q_dim(), s.dim, s.dim, s.ffn};
  if (lwc)
    for (int i = 0; i < kNumLinears; ++i) {
      p.a[i].assign(size_t(outs[i]) * (ins[i] / s.weight_group), lwc_init);
      p.b[i].assign(size_t(outs[i]) * (ins[i] / s.weight_group), lwc_init);
    }
  if (smooth) {
    p.k_delta.assign(size_t(s.kv_dim()), 0.0f);
    p.v_delta.assign(size_t(s.kv_dim()), 0.0f);
    p.k_scale.assign(size_t(s.kv_dim()), 1.0f);
    p.v_scale.assign(size_t(s.kv_dim()), 1.0f);
  }
  return p;
}

BlockQuantParams zeros_like(const BlockQuantParams& p) {
  BlockQuantParams z = p;
  for_each_param(z, [](std::vector<float>& v, bool) { std::fill(v.begin(), v.end(), 0.0f); });
  return z;
}

void block_forward(const BlockShape& s, const LayerWeights& w, const BlockQuantParams* params, const float* x,
                   int N, int L, float* y, BlockTape* tape) {
  BlockTape local;
  BlockTape& tp = tape ? *tape : local;
  const int d = s.dim, qd = s.q_dim(), kvd = s.kv_dim(), F = s.ffn;
  const size_t NL = size_t(N) * L;
  tp.N = N;
  tp.L = L;
  tp.quantized = params != nullptr;
  if (params) {
    for (int i = 0; i < kNumLinears; ++i) {
      const Linear& lin = block_linear(w, i);
      const float* W = dense(lin, i);
      tp.wq[i].resize(size_t(lin.out) * lin.in);
      lwc_fake_quant_fwd(W, lin.out, lin.in, s.weight_group, params->lwc ? params->a[i].data() : nullptr,
                         params->lwc ? params->b[i].data() : nullptr, tp.wq[i].data());
    }
  }
  tp.x.assign(x, x + NL * d);
  tp.h1.resize(NL * d);
  tp.inv1.resize(NL);
  tp.q.resize(NL * qd);
  tp.k.resize(NL * kvd);
  tp.v.resize(NL * kvd);
  tp.kq.resize(params ? NL * kvd : 0);
  tp.vq.resize(params ? NL * kvd : 0);
  tp.probs.resize(size_t(N) * s.n_heads * L * L);
  tp.att.resize(NL * qd);
  tp.x2.resize(NL * d);
  tp.h2.resize(NL * d);
  tp.inv2.resize(NL);
  tp.g.resize(NL * F);
  tp.u.resize(NL * F);
  tp.act.resize(NL * F);
  std::vector<float> tmp(size_t(L) * d);
  const AttnShape as{L, s.n_heads, s.n_kv_heads, s.head_dim};
  const auto [kd, ks, vd, vs] = smoothing_of(params);
  for (int n = 0; n < N; ++n) {
    const size_t t0 = size_t(n) * L;
    const float* xn = x + t0 * d;
    float* h1 = tp.h1.data() + t0 * d;
    rmsnorm_fwd(xn, w.attn_norm.data(), L, d, s.norm_eps, h1, tp.inv1.data() + t0);
    float* q = tp.q.data() + t0 * qd;
    float* k = tp.k.data() + t0 * kvd;
    float* v = tp.v.data() + t0 * kvd;
    linear_fwd(h1, L, d, weights_of(w, tp, kWq), qd, q);
    linear_fwd(h1, L, d, weights_of(w, tp, kWk), kvd, k);
    linear_fwd(h1, L, d, weights_of(w, tp, kWv), kvd, v);
    rope_fwd(q, L, s.n_heads, s.head_dim, 0, s.rope_theta);
    rope_fwd(k, L, s.n_kv_heads, s.head_dim, 0, s.rope_theta);
    float* kq = nullptr;
    float* vq = nullptr;
    if (params) {
      kq = tp.kq.data() + t0 * kvd;
      vq = tp.vq.data() + t0 * kvd;
      kv_fake_quant_fwd(k, L, kvd, s.kv_g(), kd, ks, kq);
      kv_fake_quant_fwd(v, L, kvd, s.kv_g(), vd, vs, vq);
    }
    float* att = tp.att.data() + t0 * qd;
    poq_attention_fwd(as, q, k, v, kq, vq, tp.probs.data() + size_t(n) * s.n_heads * L * L, att);
    float* x2 = tp.x2.data() + t0 * d;
    linear_fwd(att, L, qd, weights_of(w, tp, kWo), d, tmp.data());
    for (size_t i = 0; i < size_t(L) * d; ++i) x2[i] = xn[i] + tmp[i];
    float* h2 = tp.h2.data() + t0 * d;
    rmsnorm_fwd(x2, w.ffn_norm.data(), L, d, s.norm_eps, h2, tp.inv2.data() + t0);
    float* g = tp.g.data() + t0 * F;
    float* u = tp.u.data() + t0 * F;
    float* act = tp.act.data() + t0 * F;
    linear_fwd(h2, L, d, weights_of(w, tp, kWgate), F, g);
    linear_fwd(h2, L, d, weights_of(w, tp, kWup), F, u);
    swiglu_fwd(g, u, int64_t(L) * F, act);
    linear_fwd(act, L, F, weights_of(w, tp, kWdown), d, tmp.data());
    float* yn = y + t0 * d;
    for (size_t i = 0; i < size_t(L) * d; ++i) yn[i] = x2[i] + tmp[i];
  }
}

void block_backward(const BlockShape& s, const LayerWeights& w, const BlockQuantParams* params,
                    const BlockTape& tp, const float* dy, float* dx, BlockQuantParams* grads) {
  if (tp.quantized != (params != nullptr))
    throw Error(ErrorCode::internal, "block_backward: params must be given exactly for a quantized-path tape");
  const int N = tp.N, L = tp.L, d = s.dim, qd = s.q_dim(), kvd = s.kv_dim(), F = s.ffn;
  const AttnShape as{L, s.n_heads, s.n_kv_heads, s.head_dim};
  const bool want_w = params && grads && params->lwc;
  const bool want_kv = params && grads && params->smooth;
  // dL/dW' per linear, summed over segments (only for LWC).
  std::array<std::vector<float>, kNumLinears> dW;
  if (want_w)
    for (int i = 0; i < kNumLinears; ++i) dW[i].assign(tp.wq[i].size(), 0.0f);
  auto dw = [&](int i) { return want_w ? dW[i].data() : nullptr; };
  std::vector<float> dx2(size_t(L) * d), dact(size_t(L) * F), dg(size_t(L) * F), du(size_t(L) * F);
  std::vector<float> dh(size_t(L) * d), datt(size_t(L) * qd), dq(size_t(L) * qd), dk(size_t(L) * kvd),
      dv(size_t(L) * kvd), dkq, dvq;
  if (params) {
    dkq.resize(size_t(L) * kvd);
    dvq.resize(size_t(L) * kvd);
  }
  const auto [kd, ks, vd, vs] = smoothing_of(params);
  for (int n = 0; n < N; ++n) {
    const size_t t0 = size_t(n) * L;
    const float* dyn = dy + t0 * d;
    // y = x2 + act·Wdᵀ
    std::copy(dyn, dyn + size_t(L) * d, dx2.begin());
    std::fill(dact.begin(), dact.end(), 0.0f);
    linear_bwd(tp.act.data() + t0 * F, L, F, weights_of(w, tp, kWdown), d, dyn, dact.data(), dw(kWdown));
    std::fill(dg.begin(), dg.end(), 0.0f);
    std::fill(du.begin(), du.end(), 0.0f);
    swiglu_bwd(tp.g.data() + t0 * F, tp.u.data() + t0 * F, dact.data(), int64_t(L) * F, dg.data(), du.data());
    std::fill(dh.begin(), dh.end(), 0.0f);
    const float* h2 = tp.h2.data() + t0 * d;
    linear_bwd(h2, L, d, weights_of(w, tp, kWgate), F, dg.data(), dh.data(), dw(kWgate));
    linear_bwd(h2, L, d, weights_of(w, tp, kWup), F, du.data(), dh.data(), dw(kWup));
    rmsnorm_bwd(tp.x2.data() + t0 * d, w.ffn_norm.data(), tp.inv2.data() + t0, dh.data(), L, d, dx2.data());
    // x2 = x + att·Woᵀ
    std::fill(datt.begin(), datt.end(), 0.0f);
    linear_bwd(tp.att.data() + t0 * qd, L, qd, weights_of(w, tp, kWo), d, dx2.data(), datt.data(), dw(kWo));
    std::fill(dq.begin(), dq.end(), 0.0f);
    std::fill(dk.begin(), dk.end(), 0.0f);
    std::fill(dv.begin(), dv.end(), 0.0f);
    const float* k = tp.k.data() + t0 * kvd;
    const float* v = tp.v.data() + t0 * kvd;
    if (params) {
      std::fill(dkq.begin(), dkq.end(), 0.0f);
      std::fill(dvq.begin(), dvq.end(), 0.0f);
      poq_attention_bwd(as, tp.q.data() + t0 * qd, k, v, tp.kq.data() + t0 * kvd, tp.vq.data() + t0 * kvd,
                        tp.probs.data() + size_t(n) * s.n_heads * L * L, datt.data(), dq.data(), dk.data(),
                        dv.data(), dkq.data(), dvq.data());
      // k̂ = KVfq(k): the quantized past's gradient flows (STE) into k and into δ, s.
      kv_fake_quant_bwd(k, L, kvd, s.kv_g(), kd, ks, dkq.data(), dk.data(), want_kv ? grads->k_delta.data() : nullptr,
                        want_kv ? grads->k_scale.data() : nullptr);
      kv_fake_quant_bwd(v, L, kvd, s.kv_g(), vd, vs, dvq.data(), dv.data(), want_kv ? grads->v_delta.data() : nullptr,
                        want_kv ? grads->v_scale.data() : nullptr);
    } else {
      poq_attention_bwd(as, tp.q.data() + t0 * qd, k, v, nullptr, nullptr,
                        tp.probs.data() + size_t(n) * s.n_heads * L * L, datt.data(), dq.data(), dk.data(),
                        dv.data(), nullptr, nullptr);
    }
    rope_bwd(dq.data(), L, s.n_heads, s.head_dim, 0, s.rope_theta);
    rope_bwd(dk.data(), L, s.n_kv_heads, s.head_dim, 0, s.rope_theta);
    std::fill(dh.begin(), dh.end(), 0.0f);
    const float* h1 = tp.h1.data() + t0 * d;
    linear_bwd(h1, L, d, weights_of(w, tp, kWq), qd, dq.data(), dh.data(), dw(kWq));
    linear_bwd(h1, L, d, weights_of(w, tp, kWk), kvd, dk.data(), dh.data(), dw(kWk));
    linear_bwd(h1, L, d, weights_of(w, tp, kWv), kvd, dv.data(), dh.data(), dw(kWv));
    if (dx) {
      float* dxn = dx + t0 * d;
      std::copy(dx2.begin(), dx2.end(), dxn);
      rmsnorm_bwd(tp.x.data() + t0 * d, w.attn_norm.data(), tp.inv1.data() + t0, dh.data(), L, d, dxn);
    }
  }
  if (want_w)
    for (int i = 0; i < kNumLinears; ++i) {
      const Linear& lin = block_linear(w, i);
      lwc_fake_quant_bwd(lin.w.data(), lin.out, lin.in, s.weight_group, params->a[i].data(), params->b[i].data(),
                         dW[i].data(), grads->a[i].data(), grads->b[i].data());
    }
}

}  // namespace wkv::calib
