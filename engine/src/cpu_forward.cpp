// The CPU reference forward pass of a LLaMA decoder (FP32 math).
//
// Per layer, for a chunk of T tokens at positions pos0…pos0+T−1 (x: [T][dim]):
//   h   = RMSNorm(x)·attn_norm
//   q   = h·Wqᵀ [T][H·D], k = h·Wkᵀ, v = h·Wvᵀ [T][H_kv·D]; RoPE on q and k
//   K/V cache rows pos0… ← k, v            cache layout [layer][position][H_kv·D]
//   a   = softmax(q·Kᵀ/√D + causal mask)·V  per head; head h reads KV head h / (H/H_kv)
//   x  += a·Woᵀ
//   h   = RMSNorm(x)·ffn_norm;  x += (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ
// then logits = RMSNorm(x)·final_norm·Wheadᵀ.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend.h"
#include "cpu_ops.h"
#include "cpu_weights.h"

namespace wkv {
namespace {

class CpuSessionState final : public SessionState {
 public:
  CpuSessionState(const Model& model, int n_ctx)
      : info_(model.info()), w_(model.cpu_weights()), n_ctx_(n_ctx), pool_(model.n_threads()) {
    kv_dim_ = info_.n_kv_heads * info_.head_dim;
    const size_t per_layer = size_t(n_ctx_) * kv_dim_;
    try {
      k_cache_.resize(per_layer * info_.n_layers);
      v_cache_.resize(per_layer * info_.n_layers);
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::out_of_memory, "KV cache for " + std::to_string(n_ctx_) + " tokens (" +
                                                std::to_string(2 * per_layer * info_.n_layers * 4 >> 20) +
                                                " MiB) could not be allocated");
    }
  }

  void forward(const TokenId* tokens, int T, int pos0, float* logits, bool all_logits) override {
    if (T <= 0) return;
    if (pos0 < 0 || pos0 + T > n_ctx_)
      throw Error(ErrorCode::context_full, "positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
                                               " exceed the context of " + std::to_string(n_ctx_) + " tokens");
    const int d = info_.dim, q_dim = info_.n_heads * info_.head_dim;
    ensure_scratch(T);
    for (int t = 0; t < T; ++t) {
      const TokenId id = tokens[t];
      if (id < 0 || id >= info_.vocab_size)
        throw Error(ErrorCode::invalid_argument, "token id " + std::to_string(id) + " outside the vocabulary [0, " +
                                                     std::to_string(info_.vocab_size) + ")");
      std::memcpy(x_.data() + size_t(t) * d, w_.embed.data() + size_t(id) * d, sizeof(float) * d);
    }
    for (int l = 0; l < info_.n_layers; ++l) {
      const LayerWeights& L = w_.layers[l];
      cpu::rmsnorm(x_.data(), L.attn_norm.data(), T, d, info_.norm_eps, h_.data());
      cpu::matmul(pool_, h_.data(), T, L.wq, q_.data());
      cpu::matmul(pool_, h_.data(), T, L.wk, k_.data());
      cpu::matmul(pool_, h_.data(), T, L.wv, v_.data());
      cpu::rope(q_.data(), T, info_.n_heads, info_.head_dim, pos0, info_.rope_theta);
      cpu::rope(k_.data(), T, info_.n_kv_heads, info_.head_dim, pos0, info_.rope_theta);
      float* kc = k_cache_.data() + size_t(l) * n_ctx_ * kv_dim_;
      float* vc = v_cache_.data() + size_t(l) * n_ctx_ * kv_dim_;
      std::memcpy(kc + size_t(pos0) * kv_dim_, k_.data(), sizeof(float) * T * kv_dim_);
      std::memcpy(vc + size_t(pos0) * kv_dim_, v_.data(), sizeof(float) * T * kv_dim_);
      attention(kc, vc, T, pos0);
      cpu::matmul(pool_, att_.data(), T, L.wo, h_.data());
      for (size_t i = 0; i < size_t(T) * d; ++i) x_[i] += h_[i];

      cpu::rmsnorm(x_.data(), L.ffn_norm.data(), T, d, info_.norm_eps, h_.data());
      cpu::matmul(pool_, h_.data(), T, L.w_gate, g_.data());
      cpu::matmul(pool_, h_.data(), T, L.w_up, u_.data());
      cpu::swiglu(g_.data(), u_.data(), int64_t(T) * info_.ffn_dim);
      cpu::matmul(pool_, g_.data(), T, L.w_down, h_.data());
      for (size_t i = 0; i < size_t(T) * d; ++i) x_[i] += h_[i];
    }
    const int first = all_logits ? 0 : T - 1;
    const int rows = T - first;
    cpu::rmsnorm(x_.data() + size_t(first) * d, w_.final_norm.data(), rows, d, info_.norm_eps, h_.data());
    cpu::matmul(pool_, h_.data(), rows, w_.lm_head, logits);
    (void)q_dim;
  }

 private:
  void ensure_scratch(int T) {
    if (T <= scratch_tokens_) return;
    const size_t t = size_t(T);
    x_.resize(t * info_.dim);
    h_.resize(t * std::max(info_.dim, info_.n_heads * info_.head_dim));
    q_.resize(t * info_.n_heads * info_.head_dim);
    att_.resize(t * info_.n_heads * info_.head_dim);
    k_.resize(t * kv_dim_);
    v_.resize(t * kv_dim_);
    g_.resize(t * info_.ffn_dim);
    u_.resize(t * info_.ffn_dim);
    scratch_tokens_ = T;
  }

  // Causal attention of the chunk's queries over cache positions [0, pos0 + t]. Work items are
  // (head, block of kQueryBlock queries): each key and value row is loaded once per block.
  void attention(const float* kc, const float* vc, int T, int pos0) {
    constexpr int kQueryBlock = 8;
    const int H = info_.n_heads, D = info_.head_dim, group = info_.n_heads / info_.n_kv_heads;
    const float scale = 1.0f / std::sqrt(float(D));
    const int n_blocks = (T + kQueryBlock - 1) / kQueryBlock;
    pool_.parallel_for(int64_t(n_blocks) * H, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(size_t(kQueryBlock) * (pos0 + T));
      for (int64_t task = begin; task < end; ++task) {
        const int h = int(task % H), kvh = h / group;
        const int t_begin = int(task / H) * kQueryBlock, t_end = std::min(T, t_begin + kQueryBlock);
        const int nq = t_end - t_begin, n_keys = pos0 + t_end;
        const int stride = pos0 + T;
        for (int j = 0; j < n_keys; ++j) {
          const float* k = kc + size_t(j) * kv_dim_ + kvh * D;
          for (int i = 0; i < nq; ++i) {
            const int t = t_begin + i;
            scores[size_t(i) * stride + j] =
                j <= pos0 + t ? cpu::dot(q_.data() + (size_t(t) * H + h) * D, k, D) * scale : -INFINITY;
          }
        }
        for (int i = 0; i < nq; ++i) {
          cpu::softmax(scores.data() + size_t(i) * stride, pos0 + t_begin + i + 1);
          float* out = att_.data() + (size_t(t_begin + i) * H + h) * D;
          std::fill(out, out + D, 0.0f);
        }
        for (int j = 0; j < n_keys; ++j) {
          const float* v = vc + size_t(j) * kv_dim_ + kvh * D;
          for (int i = std::max(0, j - pos0 - t_begin); i < nq; ++i) {
            const float p = scores[size_t(i) * stride + j];
            float* out = att_.data() + (size_t(t_begin + i) * H + h) * D;
            for (int c = 0; c < D; ++c) out[c] += p * v[c];
          }
        }
      }
    });
  }

  const ModelInfo& info_;
  const CpuModelWeights& w_;
  int n_ctx_;
  int kv_dim_ = 0;
  ThreadPool pool_;
  std::vector<float> k_cache_, v_cache_;
  int scratch_tokens_ = 0;
  std::vector<float> x_, h_, q_, att_, k_, v_, g_, u_;
};

}  // namespace

std::unique_ptr<SessionState> make_cpu_session_state(const Model& model, int n_ctx) {
  return std::make_unique<CpuSessionState>(model, n_ctx);
}

}  // namespace wkv
