// WKVQuant calibration loop (algorithm in calibrate.h), written once over CalibBackend, and the CPU backend.
#include "calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "quant_formats.h"
#include "wkv/error.h"

namespace wkv::calib {
namespace {

constexpr float kMinSmoothScale = 1e-5f;  // s stays positive (validate_kv_smoothing) whatever Adam does

// AdamW (torch.optim.AdamW with its defaults β1 0.9, β2 0.999, ε 1e-8): p ← p·(1 − lr·wd) − lr·m̂/(√v̂ + ε).
struct Adam {
  BlockQuantParams m, v;
  int t = 0;
  explicit Adam(const BlockQuantParams& p) : m(zeros_like(p)), v(zeros_like(p)) {}

  void step(BlockQuantParams& p, BlockQuantParams& g, float lr_lwc, float lr_smooth, float wd) {
    ++t;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const double c1 = 1.0 - std::pow(b1, t), c2 = 1.0 - std::pow(b2, t);
    std::vector<std::vector<float>*> ps, gs, ms, vs;
    std::vector<bool> lwc;
    for_each_param(p, [&](std::vector<float>& x, bool is_lwc) {
      ps.push_back(&x);
      lwc.push_back(is_lwc);
    });
    for_each_param(g, [&](std::vector<float>& x, bool) { gs.push_back(&x); });
    for_each_param(m, [&](std::vector<float>& x, bool) { ms.push_back(&x); });
    for_each_param(v, [&](std::vector<float>& x, bool) { vs.push_back(&x); });
    for (size_t k = 0; k < ps.size(); ++k) {
      const double lr = lwc[k] ? lr_lwc : lr_smooth;
      std::vector<float>& P = *ps[k];
      for (size_t i = 0; i < P.size(); ++i) {
        const double gi = (*gs[k])[i];
        float& mi = (*ms[k])[i];
        float& vi = (*vs[k])[i];
        mi = float(b1 * mi + (1 - b1) * gi);
        vi = float(b2 * vi + (1 - b2) * gi * gi);
        double x = double(P[i]) * (1.0 - lr * wd);
        x -= lr * (mi / c1) / (std::sqrt(vi / c2) + eps);
        P[i] = float(x);
      }
    }
    for (std::vector<float>* s : {&p.k_scale, &p.v_scale})
      for (float& x : *s) x = std::max(x, kMinSmoothScale);
  }
};

}  // namespace

std::vector<std::vector<TokenId>> draw_calibration_segments(const std::vector<TokenId>& ids, int n, int L,
                                                            TokenId bos, uint64_t seed) {
  if (L < 2) throw Error(ErrorCode::invalid_argument, "calibration segments need at least 2 tokens");
  if (n < 1) throw Error(ErrorCode::invalid_argument, "calibration needs at least one segment");
  if (int64_t(ids.size()) < L - 1)
    throw Error(ErrorCode::invalid_argument, "calibration text has " + std::to_string(ids.size()) +
                                                 " tokens, fewer than one segment of " + std::to_string(L - 1));
  std::mt19937_64 rng(seed);
  std::vector<std::vector<TokenId>> segments;
  for (int i = 0; i < n; ++i) {
    const uint64_t start = rng() % uint64_t(ids.size() - (L - 1) + 1);
    std::vector<TokenId> seg = {bos};
    seg.insert(seg.end(), ids.begin() + int64_t(start), ids.begin() + int64_t(start) + L - 1);
    segments.push_back(std::move(seg));
  }
  return segments;
}

BlockShape check_calibration_inputs(const ModelInfo& info, const std::vector<std::vector<TokenId>>& segments,
                                    const CalibrationConfig& cfg) {
  const BlockShape shape = block_shape_of(info, cfg.weight_group, cfg.kv_group);
  if (segments.empty()) throw Error(ErrorCode::invalid_argument, "calibration: no segments");
  if (cfg.epochs < 1 || cfg.crr_k < 1)
    throw Error(ErrorCode::invalid_argument, "calibration: epochs (" + std::to_string(cfg.epochs) + ") and CRR k (" +
                                                 std::to_string(cfg.crr_k) + ") must be at least 1");
  const int L = int(segments[0].size());
  if (L < 2) throw Error(ErrorCode::invalid_argument, "calibration: segments need at least 2 tokens");
  for (const auto& seg : segments) {
    if (int(seg.size()) != L) throw Error(ErrorCode::invalid_argument, "calibration: segments differ in length");
    for (TokenId id : seg)
      if (id < 0 || id >= info.vocab_size)
        throw Error(ErrorCode::invalid_argument, "calibration: token id " + std::to_string(id) + " outside the vocabulary");
  }
  return shape;
}

CalibrationResult run_calibration(CalibBackend& backend, const ModelInfo& info, const BlockShape& shape,
                                  const std::vector<std::vector<TokenId>>& segments, const CalibrationConfig& cfg) {
  const auto t_start = std::chrono::steady_clock::now();
  const int N = int(segments.size()), kvd = shape.kv_dim();
  const int n_layers = info.n_layers;
  const int n_blocks = cfg.max_blocks > 0 ? std::min(cfg.max_blocks, n_layers) : n_layers;
  auto k_of = [&](int l) { return cfg.use_crr ? std::min(cfg.crr_k, n_layers - l) : 1; };

  // The full-precision stream advances to boundary l + k_l before block l trains (l + k_l never decreases);
  // passing block b collects the K/V channel statistics of b (BOS row left out) for the blocks to calibrate.
  backend.load_inputs(segments);
  int fp_at = 0;
  std::vector<KvChannelStats> kstats, vstats;
  for (int l = 0; l < n_blocks; ++l) {
    kstats.emplace_back(kvd);
    vstats.emplace_back(kvd);
  }
  auto advance_fp_to = [&](int boundary) {
    for (; fp_at < boundary; ++fp_at) {
      const bool stats = fp_at < n_blocks;
      backend.advance_fp(fp_at, stats ? &kstats[fp_at] : nullptr, stats ? &vstats[fp_at] : nullptr);
    }
  };

  CalibrationResult result;
  std::mt19937_64 rng(cfg.seed);
  const int total_steps = n_blocks * cfg.epochs * N;
  int steps_done = 0;

  for (int l = 0; l < n_blocks; ++l) {
    const int k = k_of(l);
    advance_fp_to(l + k);
    BlockCalibration bc;
    BlockQuantParams init = make_block_params(shape, cfg.use_lwc, cfg.use_smooth);
    if (cfg.use_smooth) {
      kv_smoothing_from_stats(kstats[l].min.data(), kstats[l].max.data(), kvd, init.k_delta.data(),
                              init.k_scale.data());
      kv_smoothing_from_stats(vstats[l].min.data(), vstats[l].max.data(), kvd, init.v_delta.data(),
                              init.v_scale.data());
    }
    backend.begin_block(l, k, init);
    auto eval_all = [&]() {
      double s = 0;
      for (int n = 0; n < N; ++n) s += backend.eval_loss(n);
      return s / N;
    };

    bc.initial_loss = eval_all();
    std::vector<int> order(static_cast<size_t>(N));
    for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
      for (int i = 0; i < N; ++i) order[i] = i;
      for (int i = N - 1; i > 0; --i) std::swap(order[i], order[rng() % uint64_t(i + 1)]);
      double epoch_loss = 0;
      for (int i = 0; i < N; ++i) {
        epoch_loss += backend.train_step(order[i]);
        ++steps_done;
        if (cfg.progress) {
          CalibrationProgress pr;
          pr.block = l;
          pr.n_blocks = n_blocks;
          pr.epoch = epoch;
          pr.epochs = cfg.epochs;
          pr.step = steps_done;
          pr.steps = total_steps;
          pr.loss = epoch_loss / (i + 1);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
          pr.eta_seconds = s / steps_done * (total_steps - steps_done);
          if (!cfg.progress(pr)) throw Error(ErrorCode::cancelled, "calibration cancelled");
        }
      }
    }
    bc.final_loss = eval_all();
    bc.params = backend.params();
    // The next block's input: this block, quantized with what it learned.
    if (l + 1 < n_blocks) backend.advance_quantized(l);
    result.blocks.push_back(std::move(bc));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return result;
}

namespace {

// The CPU reference backend (FP32, calib_block.h), one segment at a time.
class CpuCalibBackend final : public CalibBackend {
 public:
  CpuCalibBackend(const BlockShape& shape, const CpuModelWeights& weights, int N, int L, const CalibrationConfig& cfg)
      : s_(shape), w_(weights), cfg_(cfg), N_(N), L_(L), seg_(size_t(L) * shape.dim),
        a_(seg_), b_(seg_), grad_(seg_) {}

  void load_inputs(const std::vector<std::vector<TokenId>>& segments) override {
    const int d = s_.dim;
    fp_.resize(size_t(N_) * seg_);
    for (int n = 0; n < N_; ++n)
      for (int t = 0; t < L_; ++t)
        std::memcpy(fp_.data() + n * seg_ + size_t(t) * d, w_.embed.data() + size_t(segments[n][t]) * d,
                    sizeof(float) * d);
    qx_ = fp_;
  }

  void advance_fp(int layer, KvChannelStats* kst, KvChannelStats* vst) override {
    BlockTape tape;
    const int kvd = s_.kv_dim();
    for (int n = 0; n < N_; ++n) {
      float* x = fp_.data() + n * seg_;
      block_forward(s_, w_.layers[layer], nullptr, x, 1, L_, a_.data(), kst ? &tape : nullptr);
      std::copy(a_.begin(), a_.end(), x);
      if (kst) {
        kst->add_tokens(tape.k.data() + kvd, L_ - 1);
        vst->add_tokens(tape.v.data() + kvd, L_ - 1);
      }
    }
  }

  void begin_block(int l, int k, const BlockQuantParams& init) override {
    l_ = l;
    k_ = k;
    P_ = init;
    tapes_.assign(size_t(k), BlockTape{});
    adam_ = std::make_unique<Adam>(P_);
  }

  double eval_loss(int n) override { return run(n, nullptr); }

  double train_step(int n) override {
    BlockQuantParams g = zeros_like(P_);
    const double loss = run(n, &g);
    adam_->step(P_, g, cfg_.lr_lwc, cfg_.lr_smooth, cfg_.weight_decay);
    return loss;
  }

  BlockQuantParams params() override { return P_; }

  void advance_quantized(int l) override {
    std::vector<float> next(qx_.size());
    block_forward(s_, w_.layers[l], &P_, qx_.data(), N_, L_, next.data(), nullptr);
    qx_.swap(next);
  }

 private:
  // Loss of segment n; with `grads`, also accumulates its gradient.
  double run(int n, BlockQuantParams* grads) {
    const float* x = qx_.data() + n * seg_;
    block_forward(s_, w_.layers[l_], &P_, x, 1, L_, a_.data(), grads ? &tapes_[0] : nullptr);
    for (int j = 1; j < k_; ++j) {
      block_forward(s_, w_.layers[l_ + j], nullptr, a_.data(), 1, L_, b_.data(), grads ? &tapes_[j] : nullptr);
      a_.swap(b_);
    }
    const float* tg = fp_.data() + n * seg_;
    double loss = 0;
    const double inv = 1.0 / double(seg_);
    for (size_t i = 0; i < seg_; ++i) {
      const double e = double(a_[i]) - tg[i];
      if (cfg_.use_crr) {
        loss += std::fabs(e);
        grad_[i] = float((e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0) * inv);  // d|e|/de = sign(e)
      } else {
        loss += e * e;
        grad_[i] = float(2.0 * e * inv);
      }
    }
    if (grads) {
      for (int j = k_ - 1; j >= 1; --j) {
        block_backward(s_, w_.layers[l_ + j], nullptr, tapes_[j], grad_.data(), b_.data(), nullptr);
        grad_.swap(b_);
      }
      block_backward(s_, w_.layers[l_], &P_, tapes_[0], grad_.data(), nullptr, grads);
    }
    return loss * inv;
  }

  const BlockShape s_;
  const CpuModelWeights& w_;
  const CalibrationConfig& cfg_;
  const int N_, L_;
  const size_t seg_;
  std::vector<float> fp_, qx_, a_, b_, grad_;
  int l_ = 0, k_ = 1;
  BlockQuantParams P_;
  std::vector<BlockTape> tapes_;
  std::unique_ptr<Adam> adam_;
};

}  // namespace

CalibrationResult calibrate_wkvquant(const ModelInfo& info, const CpuModelWeights& weights,
                                     const std::vector<std::vector<TokenId>>& segments, const CalibrationConfig& cfg) {
  const BlockShape shape = check_calibration_inputs(info, segments, cfg);
  CpuCalibBackend backend(shape, weights, int(segments.size()), int(segments[0].size()), cfg);
  CalibrationResult r = run_calibration(backend, info, shape, segments, cfg);
  r.device = "cpu";
  return r;
}

}  // namespace wkv::calib
