// WKVQuant calibration loop (algorithm in calibrate.h).
#include "calibrate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
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

CalibrationResult calibrate_wkvquant(const ModelInfo& info, const CpuModelWeights& weights,
                                     const std::vector<std::vector<TokenId>>& segments, const CalibrationConfig& cfg) {
  const BlockShape shape = block_shape_of(info, cfg.weight_group, cfg.kv_group);
  if (segments.empty()) throw Error(ErrorCode::invalid_argument, "calibration: no segments");
  if (cfg.epochs < 1 || cfg.crr_k < 1)
    throw Error(ErrorCode::invalid_argument, "calibration: epochs (" + std::to_string(cfg.epochs) + ") and CRR k (" +
                                                 std::to_string(cfg.crr_k) + ") must be at least 1");
  const int N = int(segments.size()), L = int(segments[0].size()), d = shape.dim, kvd = shape.kv_dim();
  if (L < 2) throw Error(ErrorCode::invalid_argument, "calibration: segments need at least 2 tokens");
  for (const auto& seg : segments) {
    if (int(seg.size()) != L) throw Error(ErrorCode::invalid_argument, "calibration: segments differ in length");
    for (TokenId id : seg)
      if (id < 0 || id >= info.vocab_size)
        throw Error(ErrorCode::invalid_argument, "calibration: token id " + std::to_string(id) + " outside the vocabulary");
  }
  const int n_layers = info.n_layers;
  const int n_blocks = cfg.max_blocks > 0 ? std::min(cfg.max_blocks, n_layers) : n_layers;
  auto k_of = [&](int l) { return cfg.use_crr ? std::min(cfg.crr_k, n_layers - l) : 1; };
  const size_t seg_elems = size_t(L) * d;

  // Full-precision activations at block boundaries: fp[l] = input of block l, [N][L][d] each, for the
  // boundaries targets need; K/V channel statistics of the blocks to calibrate (BOS row left out).
  const int last_boundary = n_blocks - 1 + k_of(n_blocks - 1);
  std::vector<std::vector<float>> fp(size_t(last_boundary) + 1, std::vector<float>(size_t(N) * seg_elems));
  for (int n = 0; n < N; ++n)
    for (int t = 0; t < L; ++t)
      std::memcpy(fp[0].data() + n * seg_elems + size_t(t) * d, weights.embed.data() + size_t(segments[n][t]) * d,
                  sizeof(float) * d);
  std::vector<KvChannelStats> kstats, vstats;
  for (int l = 0; l < n_blocks; ++l) {
    kstats.emplace_back(kvd);
    vstats.emplace_back(kvd);
  }
  {
    BlockTape tape;
    for (int l = 0; l < last_boundary; ++l)
      for (int n = 0; n < N; ++n) {
        block_forward(shape, weights.layers[l], nullptr, fp[l].data() + n * seg_elems, 1, L,
                      fp[l + 1].data() + n * seg_elems, l < n_blocks ? &tape : nullptr);
        if (l < n_blocks) {
          kstats[l].add_tokens(tape.k.data() + kvd, L - 1);
          vstats[l].add_tokens(tape.v.data() + kvd, L - 1);
        }
      }
  }

  CalibrationResult result;
  std::vector<float> qx = fp[0];  // input of the current block through the quantized blocks before it
  std::mt19937_64 rng(cfg.seed);
  const int total_steps = n_blocks * cfg.epochs * N;
  int steps_done = 0;
  const auto t_start = std::chrono::steady_clock::now();

  for (int l = 0; l < n_blocks; ++l) {
    const int k = k_of(l);
    BlockCalibration bc;
    BlockQuantParams& P = bc.params;
    P = make_block_params(shape, cfg.use_lwc, cfg.use_smooth);
    if (cfg.use_smooth) {
      kv_smoothing_from_stats(kstats[l].min.data(), kstats[l].max.data(), kvd, P.k_delta.data(), P.k_scale.data());
      kv_smoothing_from_stats(vstats[l].min.data(), vstats[l].max.data(), kvd, P.v_delta.data(), P.v_scale.data());
    }
    const std::vector<float>& target = fp[size_t(l) + k];
    std::vector<BlockTape> tapes(static_cast<size_t>(k));
    std::vector<float> a(seg_elems), b(seg_elems), grad(seg_elems);

    // Loss of segment n; with `grads`, also accumulates its gradient.
    auto run = [&](int n, BlockQuantParams* grads) -> double {
      const float* x = qx.data() + n * seg_elems;
      block_forward(shape, weights.layers[l], &P, x, 1, L, a.data(), grads ? &tapes[0] : nullptr);
      for (int j = 1; j < k; ++j) {
        block_forward(shape, weights.layers[l + j], nullptr, a.data(), 1, L, b.data(), grads ? &tapes[j] : nullptr);
        a.swap(b);
      }
      const float* tg = target.data() + n * seg_elems;
      double loss = 0;
      const double inv = 1.0 / double(seg_elems);
      for (size_t i = 0; i < seg_elems; ++i) {
        const double e = double(a[i]) - tg[i];
        if (cfg.use_crr) {
          loss += std::fabs(e);
          grad[i] = float((e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0) * inv);  // d|e|/de = sign(e)
        } else {
          loss += e * e;
          grad[i] = float(2.0 * e * inv);
        }
      }
      if (grads) {
        for (int j = k - 1; j >= 1; --j) {
          block_backward(shape, weights.layers[l + j], nullptr, tapes[j], grad.data(), b.data(), nullptr);
          grad.swap(b);
        }
        block_backward(shape, weights.layers[l], &P, tapes[0], grad.data(), nullptr, grads);
      }
      return loss * inv;
    };
    auto eval_all = [&]() {
      double s = 0;
      for (int n = 0; n < N; ++n) s += run(n, nullptr);
      return s / N;
    };

    bc.initial_loss = eval_all();
    Adam adam(P);
    std::vector<int> order(static_cast<size_t>(N));
    for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
      for (int i = 0; i < N; ++i) order[i] = i;
      for (int i = N - 1; i > 0; --i) std::swap(order[i], order[rng() % uint64_t(i + 1)]);
      double epoch_loss = 0;
      for (int i = 0; i < N; ++i) {
        BlockQuantParams g = zeros_like(P);
        epoch_loss += run(order[i], &g);
        adam.step(P, g, cfg.lr_lwc, cfg.lr_smooth, cfg.weight_decay);
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

    // The next block's input: this block, quantized with what it learned.
    std::vector<float> next(qx.size());
    block_forward(shape, weights.layers[l], &P, qx.data(), N, L, next.data(), nullptr);
    qx.swap(next);
    result.blocks.push_back(std::move(bc));
  }
  return result;
}

}  // namespace wkv::calib
