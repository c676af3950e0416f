// WKVQuant calibration on the GPU: the CUDA CalibBackend of run_calibration (memory plan in calib_cuda.h).
//
// Everything runs on the legacy default stream (stream 0), so kernels, cuBLAS calls and the synchronous
// cudaMemcpy / cudaMemset calls are ordered without explicit events; the host waits once per step (reading
// the loss). The block forward / backward below mirror calib_block.cpp line by line for one segment, with
// the same tape contents, so the two can be compared op by op.
#include "calib_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <utility>

#include "cuda_error.h"
#include "wkv/error.h"
#include "wkv_kernels/calib_ops.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/elementwise.h"

namespace wkv::calib {
namespace {

namespace kc = wkv::kernels::calib;
namespace wk = wkv::kernels;

void check(cudaError_t e, const char* what) {
  throw_on_cuda_error(e, what, "during calibration", "use fewer or shorter segments, or a smaller CRR k");
}

// Bytes currently held in device buffers by one calibrator, and the peak.
struct Tracker {
  int64_t cur = 0, peak = 0;
};

// One device allocation of `n` elements of 4 or 8 bytes, freed on destruction; counted in a Tracker.
class DBuf {
 public:
  DBuf() = default;
  DBuf(size_t bytes, Tracker* t, const char* what) : bytes_(bytes), t_(t) {
    if (bytes) check(cudaMalloc(&p_, bytes), what);
    if (t_) {
      t_->cur += int64_t(bytes);
      t_->peak = std::max(t_->peak, t_->cur);
    }
  }
  static DBuf floats(size_t n, Tracker* t, const char* what) { return DBuf(n * sizeof(float), t, what); }
  ~DBuf() { reset(); }
  DBuf(DBuf&& o) noexcept { *this = std::move(o); }
  DBuf& operator=(DBuf&& o) noexcept {
    if (this != &o) {
      reset();
      std::swap(p_, o.p_);
      std::swap(bytes_, o.bytes_);
      std::swap(t_, o.t_);
    }
    return *this;
  }
  float* f() const { return static_cast<float*>(p_); }
  double* d() const { return static_cast<double*>(p_); }
  size_t bytes() const { return bytes_; }
  void reset() {
    if (p_) cudaFree(p_);
    if (t_) t_->cur -= int64_t(bytes_);
    p_ = nullptr;
    bytes_ = 0;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
  Tracker* t_ = nullptr;
};

// Copies and fills of n floats (no-ops for n = 0, where the pointers may be null).
void to_device(float* dst, const float* src, size_t n) {
  if (n) check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice), "upload");
}
void to_host(float* dst, const float* src, size_t n) {
  if (n) check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToHost), "download");
}
void d2d(float* dst, const float* src, size_t n) {
  if (n) check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice), "device copy");
}
void zero(float* p, size_t n) {
  if (n) check(cudaMemset(p, 0, n * sizeof(float)), "memset");
}

DBuf upload(const std::vector<float>& v, Tracker* t, const char* what) {
  DBuf b = DBuf::floats(v.size(), t, what);
  to_device(b.f(), v.data(), v.size());
  return b;
}

// Shapes of the seven linears (calib_block.h's order).
void linear_dims(const BlockShape& s, int i, int* out, int* in) {
  const int outs[kNumLinears] = {s.q_dim(), s.kv_dim(), s.kv_dim(), s.dim, s.ffn, s.ffn, s.dim};
  const int ins[kNumLinears] = {s.dim, s.dim, s.dim, s.q_dim(), s.dim, s.dim, s.ffn};
  *out = outs[i];
  *in = ins[i];
}

// Dense FP32 weights of one block on the device.
struct DevLayer {
  std::array<DBuf, kNumLinears> W;
  DBuf attn_norm, ffn_norm;
};

std::unique_ptr<DevLayer> upload_layer(const BlockShape& s, const LayerWeights& w, Tracker* t) {
  auto d = std::make_unique<DevLayer>();
  for (int i = 0; i < kNumLinears; ++i) {
    const Linear& lin = block_linear(w, i);
    int out, in;
    linear_dims(s, i, &out, &in);
    if (lin.out != out || lin.in != in || lin.w.size() != size_t(out) * in)
      throw Error(ErrorCode::invalid_argument, std::string("calibration: block linear ") + linear_name(i) +
                                                   " has no dense FP32 weights of the model's shape (is the model "
                                                   "already quantized?)");
    d->W[i] = upload(lin.w, t, "calibration weights");
  }
  d->attn_norm = upload(w.attn_norm, t, "calibration norms");
  d->ffn_norm = upload(w.ffn_norm, t, "calibration norms");
  return d;
}

// The trained vectors of a block, flattened in for_each_param order (LWC a0, b0, …, a6, b6, then δk, sk, δv,
// sv): one device buffer each for the parameters, gradients and Adam moments.
struct ParamLayout {
  bool lwc = false, smooth = false;
  std::vector<size_t> off, len;  // per vector, in walk order
  size_t lwc_total = 0, total = 0;

  explicit ParamLayout(const BlockQuantParams& p) : lwc(p.lwc), smooth(p.smooth) {
    for_each_param(p, [&](const std::vector<float>& v, bool is_lwc) {
      off.push_back(total);
      len.push_back(v.size());
      total += v.size();
      if (is_lwc) lwc_total += v.size();
    });
  }
  size_t smooth_index(int j) const { return size_t(lwc ? 2 * kNumLinears : 0) + size_t(j); }
};

std::vector<float> flatten(const BlockQuantParams& p) {
  std::vector<float> f;
  for_each_param(p, [&](const std::vector<float>& v, bool) { f.insert(f.end(), v.begin(), v.end()); });
  return f;
}

void unflatten(const std::vector<float>& f, BlockQuantParams& p) {
  size_t o = 0;
  for_each_param(p, [&](std::vector<float>& v, bool) {
    std::copy(f.begin() + int64_t(o), f.begin() + int64_t(o + v.size()), v.begin());
    o += v.size();
  });
}

// Pointers into a flat device parameter (or gradient) buffer; null where the part is not trained.
struct DevParams {
  const ParamLayout* lay = nullptr;
  float* base = nullptr;
  float* a(int i) const { return lay->lwc ? base + lay->off[size_t(2 * i)] : nullptr; }
  float* b(int i) const { return lay->lwc ? base + lay->off[size_t(2 * i + 1)] : nullptr; }
  float* sm(int j) const { return lay->smooth ? base + lay->off[lay->smooth_index(j)] : nullptr; }  // δk sk δv sv
};

// calib_block.h's BlockTape for one segment, on the device.
struct DevTape {
  bool quantized = false;
  std::array<DBuf, kNumLinears> wq;
  DBuf x, h1, inv1, q, k, v, kq, vq, probs, att, x2, h2, inv2, g, u, act;

  DevTape(const BlockShape& s, int L, bool quant, Tracker* t) : quantized(quant) {
    const size_t Ls = size_t(L), d = size_t(s.dim), qd = size_t(s.q_dim()), kvd = size_t(s.kv_dim()),
                 F = size_t(s.ffn);
    const char* w = "calibration tape";
    if (quant)
      for (int i = 0; i < kNumLinears; ++i) {
        int out, in;
        linear_dims(s, i, &out, &in);
        wq[i] = DBuf::floats(size_t(out) * in, t, w);
      }
    x = DBuf::floats(Ls * d, t, w);
    h1 = DBuf::floats(Ls * d, t, w);
    inv1 = DBuf::floats(Ls, t, w);
    q = DBuf::floats(Ls * qd, t, w);
    k = DBuf::floats(Ls * kvd, t, w);
    v = DBuf::floats(Ls * kvd, t, w);
    if (quant) {
      kq = DBuf::floats(Ls * kvd, t, w);
      vq = DBuf::floats(Ls * kvd, t, w);
    }
    probs = DBuf::floats(size_t(s.n_heads) * Ls * Ls, t, w);
    att = DBuf::floats(Ls * qd, t, w);
    x2 = DBuf::floats(Ls * d, t, w);
    h2 = DBuf::floats(Ls * d, t, w);
    inv2 = DBuf::floats(Ls, t, w);
    g = DBuf::floats(Ls * F, t, w);
    u = DBuf::floats(Ls * F, t, w);
    act = DBuf::floats(Ls * F, t, w);
  }
};

// Scratch of the block forward / backward (one segment), shared by all blocks.
struct Work {
  DBuf tmp, attn_f, attn_b, kv_s, dx2, dact, dg, du, dh, datt, dq, dk, dv, dkq, dvq;
  std::array<DBuf, kNumLinears> dW;  // dL/dW' (LWC only)

  Work(const BlockShape& s, int L, bool lwc, Tracker* t) {
    const size_t Ls = size_t(L), d = size_t(s.dim), qd = size_t(s.q_dim()), kvd = size_t(s.kv_dim()),
                 F = size_t(s.ffn);
    const kc::AttnShape as{L, s.n_heads, s.n_kv_heads, s.head_dim};
    const char* w = "calibration scratch";
    tmp = DBuf::floats(Ls * d, t, w);
    attn_f = DBuf::floats(kc::poq_attention_fwd_scratch_floats(as), t, w);
    attn_b = DBuf::floats(kc::poq_attention_bwd_scratch_floats(as), t, w);
    kv_s = DBuf::floats(kc::kv_fake_quant_bwd_scratch_floats(L, s.kv_dim()), t, w);
    dx2 = DBuf::floats(Ls * d, t, w);
    dh = DBuf::floats(Ls * d, t, w);
    dact = DBuf::floats(Ls * F, t, w);
    dg = DBuf::floats(Ls * F, t, w);
    du = DBuf::floats(Ls * F, t, w);
    datt = DBuf::floats(Ls * qd, t, w);
    dq = DBuf::floats(Ls * qd, t, w);
    dk = DBuf::floats(Ls * kvd, t, w);
    dv = DBuf::floats(Ls * kvd, t, w);
    dkq = DBuf::floats(Ls * kvd, t, w);
    dvq = DBuf::floats(Ls * kvd, t, w);
    if (lwc)
      for (int i = 0; i < kNumLinears; ++i) {
        int out, in;
        linear_dims(s, i, &out, &in);
        dW[i] = DBuf::floats(size_t(out) * in, t, w);
      }
  }
};

const float* weights_of(const DevLayer& w, const DevTape& tp, int i) { return tp.quantized ? tp.wq[i].f() : w.W[i].f(); }

// calib_block.cpp's block_forward for one segment (N = 1). params null: full-precision path. y ≠ x.
void dev_block_forward(kc::Blas& blas, const BlockShape& s, const DevLayer& w, const DevParams* P, const float* x,
                       int L, float* y, DevTape& tp, Work& wk) {
  const int d = s.dim, qd = s.q_dim(), kvd = s.kv_dim(), F = s.ffn;
  const size_t Ld = size_t(L) * d;
  if (tp.quantized != (P != nullptr)) throw Error(ErrorCode::internal, "calibration: tape / params mismatch");
  if (P)
    for (int i = 0; i < kNumLinears; ++i) {
      int out, in;
      linear_dims(s, i, &out, &in);
      kc::lwc_fake_quant_fwd(w.W[i].f(), out, in, s.weight_group, P->a(i), P->b(i), tp.wq[i].f());
    }
  d2d(tp.x.f(), x, Ld);
  kc::rmsnorm_fwd(tp.x.f(), w.attn_norm.f(), L, d, s.norm_eps, tp.h1.f(), tp.inv1.f());
  kc::linear_fwd(blas, tp.h1.f(), L, d, weights_of(w, tp, kWq), qd, tp.q.f());
  kc::linear_fwd(blas, tp.h1.f(), L, d, weights_of(w, tp, kWk), kvd, tp.k.f());
  kc::linear_fwd(blas, tp.h1.f(), L, d, weights_of(w, tp, kWv), kvd, tp.v.f());
  kc::rope_fwd(tp.q.f(), L, s.n_heads, s.head_dim, 0, s.rope_theta);
  kc::rope_fwd(tp.k.f(), L, s.n_kv_heads, s.head_dim, 0, s.rope_theta);
  const float* kq = nullptr;
  const float* vq = nullptr;
  if (P) {
    kc::kv_fake_quant_fwd(tp.k.f(), L, kvd, s.kv_g(), P->sm(0), P->sm(1), tp.kq.f());
    kc::kv_fake_quant_fwd(tp.v.f(), L, kvd, s.kv_g(), P->sm(2), P->sm(3), tp.vq.f());
    kq = tp.kq.f();
    vq = tp.vq.f();
  }
  const kc::AttnShape as{L, s.n_heads, s.n_kv_heads, s.head_dim};
  kc::poq_attention_fwd(blas, as, tp.q.f(), tp.k.f(), tp.v.f(), kq, vq, tp.probs.f(), tp.att.f(), wk.attn_f.f());
  kc::linear_fwd(blas, tp.att.f(), L, qd, weights_of(w, tp, kWo), d, wk.tmp.f());
  d2d(tp.x2.f(), tp.x.f(), Ld);
  wk::add_inplace(tp.x2.f(), wk.tmp.f(), int64_t(Ld));
  kc::rmsnorm_fwd(tp.x2.f(), w.ffn_norm.f(), L, d, s.norm_eps, tp.h2.f(), tp.inv2.f());
  kc::linear_fwd(blas, tp.h2.f(), L, d, weights_of(w, tp, kWgate), F, tp.g.f());
  kc::linear_fwd(blas, tp.h2.f(), L, d, weights_of(w, tp, kWup), F, tp.u.f());
  kc::swiglu_fwd(tp.g.f(), tp.u.f(), int64_t(L) * F, tp.act.f());
  kc::linear_fwd(blas, tp.act.f(), L, F, weights_of(w, tp, kWdown), d, wk.tmp.f());
  d2d(y, tp.x2.f(), Ld);
  wk::add_inplace(y, wk.tmp.f(), int64_t(Ld));
}

// calib_block.cpp's block_backward for one segment: dx (overwritten; may be null) and, on the quantized path,
// G (accumulated; may be null) from dy.
void dev_block_backward(kc::Blas& blas, const BlockShape& s, const DevLayer& w, const DevParams* P,
                        const DevTape& tp, const float* dy, float* dx, const DevParams* G, Work& wk) {
  if (tp.quantized != (P != nullptr)) throw Error(ErrorCode::internal, "calibration: tape / params mismatch");
  const int L = int(tp.inv1.bytes() / sizeof(float)), d = s.dim, qd = s.q_dim(), kvd = s.kv_dim(), F = s.ffn;
  const size_t Ld = size_t(L) * d, LF = size_t(L) * F, Lq = size_t(L) * qd, Lkv = size_t(L) * kvd;
  const bool want_w = P && G && P->lay->lwc;
  const bool want_kv = P && G && P->lay->smooth;
  if (want_w)
    for (int i = 0; i < kNumLinears; ++i) zero(wk.dW[i].f(), wk.dW[i].bytes() / sizeof(float));
  auto dw = [&](int i) { return want_w ? wk.dW[i].f() : nullptr; };
  // y = x2 + act·Wdᵀ
  d2d(wk.dx2.f(), dy, Ld);
  zero(wk.dact.f(), LF);
  kc::linear_bwd(blas, tp.act.f(), L, F, weights_of(w, tp, kWdown), d, dy, wk.dact.f(), dw(kWdown));
  zero(wk.dg.f(), LF);
  zero(wk.du.f(), LF);
  kc::swiglu_bwd(tp.g.f(), tp.u.f(), wk.dact.f(), int64_t(LF), wk.dg.f(), wk.du.f());
  zero(wk.dh.f(), Ld);
  kc::linear_bwd(blas, tp.h2.f(), L, d, weights_of(w, tp, kWgate), F, wk.dg.f(), wk.dh.f(), dw(kWgate));
  kc::linear_bwd(blas, tp.h2.f(), L, d, weights_of(w, tp, kWup), F, wk.du.f(), wk.dh.f(), dw(kWup));
  kc::rmsnorm_bwd(tp.x2.f(), w.ffn_norm.f(), tp.inv2.f(), wk.dh.f(), L, d, wk.dx2.f());
  // x2 = x + att·Woᵀ
  zero(wk.datt.f(), Lq);
  kc::linear_bwd(blas, tp.att.f(), L, qd, weights_of(w, tp, kWo), d, wk.dx2.f(), wk.datt.f(), dw(kWo));
  zero(wk.dq.f(), Lq);
  zero(wk.dk.f(), Lkv);
  zero(wk.dv.f(), Lkv);
  const kc::AttnShape as{L, s.n_heads, s.n_kv_heads, s.head_dim};
  if (P) {
    zero(wk.dkq.f(), Lkv);
    zero(wk.dvq.f(), Lkv);
    kc::poq_attention_bwd(blas, as, tp.q.f(), tp.k.f(), tp.v.f(), tp.kq.f(), tp.vq.f(), tp.probs.f(), wk.datt.f(),
                          wk.dq.f(), wk.dk.f(), wk.dv.f(), wk.dkq.f(), wk.dvq.f(), wk.attn_b.f());
    // k̂ = KVfq(k): the quantized past's gradient flows (STE) into k and into δ, s.
    kc::kv_fake_quant_bwd(tp.k.f(), L, kvd, s.kv_g(), P->sm(0), P->sm(1), wk.dkq.f(), wk.dk.f(),
                          want_kv ? G->sm(0) : nullptr, want_kv ? G->sm(1) : nullptr, wk.kv_s.f());
    kc::kv_fake_quant_bwd(tp.v.f(), L, kvd, s.kv_g(), P->sm(2), P->sm(3), wk.dvq.f(), wk.dv.f(),
                          want_kv ? G->sm(2) : nullptr, want_kv ? G->sm(3) : nullptr, wk.kv_s.f());
  } else {
    kc::poq_attention_bwd(blas, as, tp.q.f(), tp.k.f(), tp.v.f(), nullptr, nullptr, tp.probs.f(), wk.datt.f(),
                          wk.dq.f(), wk.dk.f(), wk.dv.f(), nullptr, nullptr, wk.attn_b.f());
  }
  kc::rope_bwd(wk.dq.f(), L, s.n_heads, s.head_dim, 0, s.rope_theta);
  kc::rope_bwd(wk.dk.f(), L, s.n_kv_heads, s.head_dim, 0, s.rope_theta);
  zero(wk.dh.f(), Ld);
  kc::linear_bwd(blas, tp.h1.f(), L, d, weights_of(w, tp, kWq), qd, wk.dq.f(), wk.dh.f(), dw(kWq));
  kc::linear_bwd(blas, tp.h1.f(), L, d, weights_of(w, tp, kWk), kvd, wk.dk.f(), wk.dh.f(), dw(kWk));
  kc::linear_bwd(blas, tp.h1.f(), L, d, weights_of(w, tp, kWv), kvd, wk.dv.f(), wk.dh.f(), dw(kWv));
  if (dx) {
    d2d(dx, wk.dx2.f(), Ld);
    kc::rmsnorm_bwd(tp.x.f(), w.attn_norm.f(), tp.inv1.f(), wk.dh.f(), L, d, dx);
  }
  if (want_w)
    for (int i = 0; i < kNumLinears; ++i) {
      int out, in;
      linear_dims(s, i, &out, &in);
      kc::lwc_fake_quant_bwd(w.W[i].f(), out, in, s.weight_group, P->a(i), P->b(i), wk.dW[i].f(), G->a(i), G->b(i));
    }
}

constexpr float kMinSmoothScale = 1e-5f;  // = calibrate.cpp's: s stays positive whatever Adam does

// The CUDA backend of run_calibration.
class CudaCalibBackend final : public CalibBackend {
 public:
  CudaCalibBackend(const BlockShape& shape, const ModelInfo& info, const CpuModelWeights& weights, int N, int L,
                   const CalibrationConfig& cfg, const CudaCalibOptions& opt)
      : s_(shape), w_(weights), cfg_(cfg), N_(N), L_(L), seg_(size_t(L) * shape.dim), blas_(0, opt.allow_tf32),
        layers_(size_t(info.n_layers)) {
    const char* what = "calibration activations";
    fp_ = DBuf::floats(size_t(N) * seg_, &t_, what);
    qx_ = DBuf::floats(size_t(N) * seg_, &t_, what);
    bufs_[0] = DBuf::floats(seg_, &t_, what);
    bufs_[1] = DBuf::floats(seg_, &t_, what);
    bufs_[2] = DBuf::floats(seg_, &t_, what);
    partials_ = DBuf(kc::kLossBlocks * sizeof(double), &t_, "calibration loss");
    loss_ = DBuf(sizeof(double), &t_, "calibration loss");
    work_ = std::make_unique<Work>(s_, L, cfg.use_lwc, &t_);
    q_tape_ = std::make_unique<DevTape>(s_, L, true, &t_);
  }

  int64_t peak_bytes() const { return t_.peak; }

  void load_inputs(const std::vector<std::vector<TokenId>>& segments) override {
    const int d = s_.dim;
    std::vector<float> e(seg_);
    for (int n = 0; n < N_; ++n) {
      for (int t = 0; t < L_; ++t)
        std::copy_n(w_.embed.data() + size_t(segments[n][t]) * d, d, e.data() + size_t(t) * d);
      to_device(fp_.f() + n * seg_, e.data(), seg_);
    }
    d2d(qx_.f(), fp_.f(), size_t(N_) * seg_);
  }

  void advance_fp(int layer, KvChannelStats* kst, KvChannelStats* vst) override {
    DevTape& tp = fp_tape(0);
    const DevLayer& w = dev_layer(layer);
    const size_t kvd = size_t(s_.kv_dim());
    std::vector<float> hk, hv;
    if (kst) {
      hk.resize(size_t(L_) * kvd);
      hv.resize(size_t(L_) * kvd);
    }
    for (int n = 0; n < N_; ++n) {
      float* x = fp_.f() + n * seg_;
      dev_block_forward(blas_, s_, w, nullptr, x, L_, bufs_[0].f(), tp, *work_);
      d2d(x, bufs_[0].f(), seg_);
      if (kst) {
        to_host(hk.data(), tp.k.f(), hk.size());
        to_host(hv.data(), tp.v.f(), hv.size());
        kst->add_tokens(hk.data() + kvd, L_ - 1);
        vst->add_tokens(hv.data() + kvd, L_ - 1);
      }
    }
  }

  void begin_block(int l, int k, const BlockQuantParams& init) override {
    l_ = l;
    k_ = k;
    for (int i = 0; i < l; ++i) layers_[size_t(i)].reset();  // blocks behind are never needed again
    for (int j = 1; j < k; ++j) fp_tape(j - 1);
    host_params_ = init;
    lay_ = std::make_unique<ParamLayout>(init);
    const char* what = "calibration parameters";
    P_ = upload(flatten(init), &t_, what);
    G_ = DBuf::floats(lay_->total, &t_, what);
    M_ = DBuf::floats(lay_->total, &t_, what);
    V_ = DBuf::floats(lay_->total, &t_, what);
    zero(M_.f(), lay_->total);
    zero(V_.f(), lay_->total);
    adam_t_ = 0;
  }

  double eval_loss(int n) override { return run(n, false); }
  double train_step(int n) override { return run(n, true); }

  BlockQuantParams params() override {
    std::vector<float> f(lay_->total);
    to_host(f.data(), P_.f(), f.size());
    BlockQuantParams p = host_params_;
    unflatten(f, p);
    return p;
  }

  void advance_quantized(int l) override {
    const DevParams P{lay_.get(), P_.f()};
    const DevLayer& w = dev_layer(l);
    for (int n = 0; n < N_; ++n) {
      float* x = qx_.f() + n * seg_;
      dev_block_forward(blas_, s_, w, &P, x, L_, bufs_[0].f(), *q_tape_, *work_);
      d2d(x, bufs_[0].f(), seg_);
    }
  }

 private:
  const DevLayer& dev_layer(int l) {
    auto& p = layers_[size_t(l)];
    if (!p) p = upload_layer(s_, w_.layers[size_t(l)], &t_);
    return *p;
  }

  DevTape& fp_tape(int i) {
    while (int(fp_tapes_.size()) <= i) fp_tapes_.push_back(std::make_unique<DevTape>(s_, L_, false, &t_));
    return *fp_tapes_[size_t(i)];
  }

  // calibrate.cpp's run: loss of segment n; with grads, its gradient and an AdamW step.
  double run(int n, bool grads) {
    const DevParams P{lay_.get(), P_.f()};
    float* a = bufs_[0].f();
    float* b = bufs_[1].f();
    float* grad = bufs_[2].f();
    dev_block_forward(blas_, s_, dev_layer(l_), &P, qx_.f() + n * seg_, L_, a, *q_tape_, *work_);
    for (int j = 1; j < k_; ++j) {
      dev_block_forward(blas_, s_, dev_layer(l_ + j), nullptr, a, L_, b, fp_tape(j - 1), *work_);
      std::swap(a, b);
    }
    kc::loss_and_grad(a, fp_.f() + n * seg_, int64_t(seg_), cfg_.use_crr, grad, partials_.d(), loss_.d());
    if (grads) {
      const DevParams G{lay_.get(), G_.f()};
      zero(G_.f(), lay_->total);
      for (int j = k_ - 1; j >= 1; --j) {
        dev_block_backward(blas_, s_, dev_layer(l_ + j), nullptr, fp_tape(j - 1), grad, b, nullptr, *work_);
        std::swap(grad, b);
      }
      dev_block_backward(blas_, s_, dev_layer(l_), &P, *q_tape_, grad, nullptr, &G, *work_);
      adam_step();
    }
    double loss = 0;
    check(cudaMemcpy(&loss, loss_.d(), sizeof(double), cudaMemcpyDeviceToHost), "loss download");
    return loss * (1.0 / double(seg_));
  }

  // calibrate.cpp's Adam: bias corrections in double on the host, the update in double on the device.
  void adam_step() {
    ++adam_t_;
    const double c1 = 1.0 - std::pow(0.9, adam_t_), c2 = 1.0 - std::pow(0.999, adam_t_);
    const size_t nl = lay_->lwc_total, ns = lay_->total - nl;
    const double wd = cfg_.weight_decay;
    kc::adamw_step(P_.f(), G_.f(), M_.f(), V_.f(), int64_t(nl), double(cfg_.lr_lwc), wd, c1, c2);
    kc::adamw_step(P_.f() + nl, G_.f() + nl, M_.f() + nl, V_.f() + nl, int64_t(ns), double(cfg_.lr_smooth), wd, c1,
                   c2);
    if (lay_->smooth) {
      const DevParams P{lay_.get(), P_.f()};
      kc::clamp_min(P.sm(1), s_.kv_dim(), kMinSmoothScale);
      kc::clamp_min(P.sm(3), s_.kv_dim(), kMinSmoothScale);
    }
  }

  const BlockShape s_;
  const CpuModelWeights& w_;
  const CalibrationConfig& cfg_;
  const int N_, L_;
  const size_t seg_;
  Tracker t_;  // declared before every buffer: outlives them
  kc::Blas blas_;
  std::vector<std::unique_ptr<DevLayer>> layers_;
  DBuf fp_, qx_, partials_, loss_;
  std::array<DBuf, 3> bufs_;  // a, b, grad of one segment
  std::unique_ptr<Work> work_;
  std::unique_ptr<DevTape> q_tape_;
  std::vector<std::unique_ptr<DevTape>> fp_tapes_;
  int l_ = 0, k_ = 1, adam_t_ = 0;
  BlockQuantParams host_params_;
  std::unique_ptr<ParamLayout> lay_;
  DBuf P_, G_, M_, V_;
};

void require_gpu() {
  std::string why;
  if (!cuda_calibration_available(&why)) throw Error(ErrorCode::unsupported, "GPU calibration unavailable: " + why);
}

}  // namespace

bool cuda_calibration_available(std::string* why) {
  const wk::DeviceInfo info = wk::query_device();
  if (!info.available && why) *why = info.reason.empty() ? "no usable CUDA device" : info.reason;
  return info.available;
}

CalibrationResult calibrate_wkvquant_cuda(const ModelInfo& info, const CpuModelWeights& weights,
                                          const std::vector<std::vector<TokenId>>& segments,
                                          const CalibrationConfig& cfg, const CudaCalibOptions& options) {
  const BlockShape shape = check_calibration_inputs(info, segments, cfg);
  require_gpu();
  const auto t0 = std::chrono::steady_clock::now();
  CalibrationResult r;
  int64_t peak = 0;
  {
    CudaCalibBackend backend(shape, info, weights, int(segments.size()), int(segments[0].size()), cfg, options);
    r = run_calibration(backend, info, shape, segments, cfg);
    peak = backend.peak_bytes();
  }
  r.device = "cuda: " + wk::query_device().name;
  r.peak_device_bytes = peak;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void cuda_block_forward_backward(const BlockShape& s, const LayerWeights& w, const BlockQuantParams* params,
                                 const float* x, int L, const float* dy, std::vector<float>* y,
                                 std::vector<float>* dx, BlockQuantParams* grads, BlockTape* tape_out) {
  require_gpu();
  Tracker t;
  kc::Blas blas(0, false);
  auto layer = upload_layer(s, w, &t);
  const bool lwc = params && params->lwc;
  Work wk(s, L, lwc, &t);
  DevTape tape(s, L, params != nullptr, &t);
  const size_t Ld = size_t(L) * s.dim;
  DBuf dxb = DBuf::floats(Ld, &t, "x"), dyb = DBuf::floats(Ld, &t, "y");
  to_device(dxb.f(), x, Ld);
  std::unique_ptr<ParamLayout> lay;
  DBuf P, G;
  DevParams dp, dg;
  if (params) {
    lay = std::make_unique<ParamLayout>(*params);
    P = upload(flatten(*params), &t, "params");
    G = DBuf::floats(lay->total, &t, "grads");
    zero(G.f(), lay->total);
    dp = {lay.get(), P.f()};
    dg = {lay.get(), G.f()};
  }
  dev_block_forward(blas, s, *layer, params ? &dp : nullptr, dxb.f(), L, dyb.f(), tape, wk);
  if (y) {
    y->resize(Ld);
    to_host(y->data(), dyb.f(), Ld);
  }
  if (tape_out) {
    BlockTape& h = *tape_out;
    h.N = 1;
    h.L = L;
    h.quantized = tape.quantized;
    auto get = [](std::vector<float>& v, const DBuf& b) {
      v.resize(b.bytes() / sizeof(float));
      if (!v.empty()) to_host(v.data(), b.f(), v.size());
    };
    for (int i = 0; i < kNumLinears; ++i) get(h.wq[i], tape.wq[i]);
    get(h.x, tape.x);
    get(h.h1, tape.h1);
    get(h.inv1, tape.inv1);
    get(h.q, tape.q);
    get(h.k, tape.k);
    get(h.v, tape.v);
    get(h.kq, tape.kq);
    get(h.vq, tape.vq);
    get(h.probs, tape.probs);
    get(h.att, tape.att);
    get(h.x2, tape.x2);
    get(h.h2, tape.h2);
    get(h.inv2, tape.inv2);
    get(h.g, tape.g);
    get(h.u, tape.u);
    get(h.act, tape.act);
  }
  if (!dy) return;
  to_device(dyb.f(), dy, Ld);
  dev_block_backward(blas, s, *layer, params ? &dp : nullptr, tape, dyb.f(), dxb.f(), params ? &dg : nullptr, wk);
  if (dx) {
    dx->resize(Ld);
    to_host(dx->data(), dxb.f(), Ld);
  }
  if (grads && params) {
    std::vector<float> f(lay->total);
    to_host(f.data(), G.f(), f.size());
    *grads = *params;
    unflatten(f, *grads);
  }
}

}  // namespace wkv::calib
