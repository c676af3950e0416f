// The CPU reference forward pass of a LLaMA decoder (FP32 math) in every quantization mode.
//
// Per layer, for a chunk of T tokens at positions pos0…pos0+T−1 (x: [T][dim]):
//   h   = RMSNorm(x)·attn_norm                     (W4A4: h fake-quantized per token to 4 bits)
//   q   = h·Wqᵀ [T][H·D], k = h·Wkᵀ, v = h·Wvᵀ [T][H_kv·D]; RoPE on q and k
//   attention (below); the chunk's k, v are then appended to the cache
//   x  += a·Woᵀ
//   h   = RMSNorm(x)·ffn_norm;  x += (silu(h·Wgᵀ) ⊙ h·Wuᵀ)·Wdᵀ
// then logits = RMSNorm(x)·final_norm·Wheadᵀ. W4 linears compute with dequantized weights.
//
// KV cache, layout [layer][position][H_kv·D]:
//   full precision: FP32 rows (this is the reference; a deployment would hold FP16)
//   KV4: per (position, KV head) the packed codes and group headers of quant_formats.h, with the
//        layer's static smoothing. Attention reads the past through dequantize_kv4_ref, so it sees
//        exactly what is stored.
// POQ (DESIGN.md): a query at position p uses, for key/value j,
//   j < pos0                      → the quantized cache
//   j ≥ pos0, same POQ block as p → the full-precision k_j, v_j of this chunk
//   j ≥ pos0, earlier block       → the quantized form of this chunk's k_j, v_j
// POQ blocks are the whole chunk (DESIGN's prefill semantics) or single tokens (token_level_poq, which
// equals token-by-token decoding). Without POQ every key/value, the query's own included, is quantized.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend.h"
#include "cpu_ops.h"
#include "cpu_weights.h"
#include "quant_formats.h"

namespace wkv {
namespace {

class CpuSessionState final : public SessionState {
 public:
  CpuSessionState(const Model& model, const SessionOptions& options, int n_ctx)
      : info_(model.info()), w_(model.cpu_weights()), n_ctx_(n_ctx), pool_(model.n_threads()) {
    const QuantSpec spec = quant_spec(model.mode());
    kv4_ = spec.kv4;
    poq_ = spec.poq;
    token_level_poq_ = options.token_level_poq;
    D_ = info_.head_dim;
    G_ = model.kv_group() > 0 ? model.kv_group() : D_;
    kv_dim_ = info_.n_kv_heads * D_;
    const size_t rows = size_t(n_ctx_) * info_.n_layers;
    try {
      if (kv4_) {
        validate_kv4_shape(D_, G_, "KV cache");
        head_bytes_ = kv4_bytes_per_head(D_, G_);
        k_packed_.resize(rows * info_.n_kv_heads * head_bytes_);
        v_packed_.resize(rows * info_.n_kv_heads * head_bytes_);
      } else {
        k_cache_.resize(rows * kv_dim_);
        v_cache_.resize(rows * kv_dim_);
      }
    } catch (const std::bad_alloc&) {
      throw Error(ErrorCode::out_of_memory, "KV cache for " + std::to_string(n_ctx_) + " tokens (" +
                                                std::to_string(kv_resident_bytes_for(n_ctx_) >> 20) +
                                                " MiB) could not be allocated");
    }
  }

  int64_t kv_format_bytes_per_token() const override {
    const int64_t per_layer = kv4_ ? 2 * int64_t(info_.n_kv_heads) * int64_t(kv4_bytes_per_head(D_, G_))
                                   : 2 * int64_t(kv_dim_) * 2;  // FP16
    return per_layer * info_.n_layers;
  }
  int64_t kv_resident_bytes() const override { return kv_resident_bytes_for(n_ctx_); }
  std::string kv_format() const override { return kv4_ ? "KV4 G" + std::to_string(G_) : "FP16"; }

  void forward(const TokenId* tokens, int T, int pos0, float* logits, bool all_logits, int poq_chunk) override {
    if (T <= 0) return;
    if (pos0 < 0 || pos0 + T > n_ctx_)
      throw Error(ErrorCode::context_full, "positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
                                               " exceed the context of " + std::to_string(n_ctx_) + " tokens");
    const int d = info_.dim;
    ensure_scratch(T, pos0);
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
      const float* in = maybe_act4(L.wq, h_.data(), T, d);
      cpu::matmul(pool_, in, T, L.wq, q_.data());
      cpu::matmul(pool_, in, T, L.wk, k_.data());
      cpu::matmul(pool_, in, T, L.wv, v_.data());
      cpu::rope(q_.data(), T, info_.n_heads, D_, pos0, info_.rope_theta);
      cpu::rope(k_.data(), T, info_.n_kv_heads, D_, pos0, info_.rope_theta);
      if (kv_observer) kv_observer(l, k_.data(), v_.data(), T);
      attend_and_append(l, T, pos0, poq_chunk > 0 && poq_chunk < T ? poq_chunk : T);
      in = maybe_act4(L.wo, att_.data(), T, L.wo.in);
      cpu::matmul(pool_, in, T, L.wo, h_.data());
      for (size_t i = 0; i < size_t(T) * d; ++i) x_[i] += h_[i];

      cpu::rmsnorm(x_.data(), L.ffn_norm.data(), T, d, info_.norm_eps, h_.data());
      in = maybe_act4(L.w_gate, h_.data(), T, d);
      cpu::matmul(pool_, in, T, L.w_gate, g_.data());
      cpu::matmul(pool_, in, T, L.w_up, u_.data());
      cpu::swiglu(g_.data(), u_.data(), int64_t(T) * info_.ffn_dim);
      in = maybe_act4(L.w_down, g_.data(), T, info_.ffn_dim);
      cpu::matmul(pool_, in, T, L.w_down, h_.data());
      for (size_t i = 0; i < size_t(T) * d; ++i) x_[i] += h_[i];
    }
    const int first = all_logits ? 0 : T - 1;
    const int rows = T - first;
    cpu::rmsnorm(x_.data() + size_t(first) * d, w_.final_norm.data(), rows, d, info_.norm_eps, h_.data());
    cpu::matmul(pool_, h_.data(), rows, w_.lm_head, logits);
  }

 private:
  int64_t kv_resident_bytes_for(int n) const {
    return kv4_ ? 2 * int64_t(n) * info_.n_layers * info_.n_kv_heads * int64_t(kv4_bytes_per_head(D_, G_))
                : 2 * int64_t(n) * info_.n_layers * kv_dim_ * 4;
  }

  void ensure_scratch(int T, int pos0) {
    const size_t t = size_t(T);
    const size_t q_dim = size_t(info_.n_heads) * D_;
    if (T > scratch_tokens_) {
      x_.resize(t * info_.dim);
      h_.resize(t * std::max<size_t>(info_.dim, q_dim));
      q_.resize(t * q_dim);
      att_.resize(t * q_dim);
      k_.resize(t * kv_dim_);
      v_.resize(t * kv_dim_);
      g_.resize(t * info_.ffn_dim);
      u_.resize(t * info_.ffn_dim);
      a4_.resize(t * std::max<size_t>({size_t(info_.dim), q_dim, size_t(info_.ffn_dim)}));
      if (kv4_) {
        kq_.resize(t * kv_dim_);
        vq_.resize(t * kv_dim_);
      }
      scratch_tokens_ = T;
    }
    if (kv4_ && size_t(pos0) * kv_dim_ > k_past_.size()) {
      k_past_.resize(size_t(pos0) * kv_dim_);
      v_past_.resize(size_t(pos0) * kv_dim_);
    }
  }

  // W4A4: a per-token 4-bit copy of the linear's input; otherwise the input itself.
  const float* maybe_act4(const Linear& lin, const float* x, int T, int n) {
    if (!lin.act4) return x;
    std::memcpy(a4_.data(), x, sizeof(float) * size_t(T) * n);
    for (int t = 0; t < T; ++t) fake_quant_a4_per_token(a4_.data() + size_t(t) * n, n);
    return a4_.data();
  }

  uint8_t* packed_head(std::vector<uint8_t>& cache, int layer, int pos, int kvh) {
    return cache.data() + ((size_t(layer) * n_ctx_ + pos) * info_.n_kv_heads + kvh) * head_bytes_;
  }

  // Quantizes rows [T][H_kv·D] of one layer into the packed cache at pos0…, and writes their
  // dequantized form to `deq`.
  void quantize_rows(const float* src, int T, int layer, int pos0, const std::vector<float>& delta,
                     const std::vector<float>& scale, std::vector<uint8_t>& cache, float* deq) {
    const int ng = D_ / G_;
    for (int t = 0; t < T; ++t)
      for (int kvh = 0; kvh < info_.n_kv_heads; ++kvh) {
        uint8_t* p = packed_head(cache, layer, pos0 + t, kvh);
        auto* hdr = reinterpret_cast<KV4GroupHeader*>(p + D_ / 2);
        const float* dl = delta.empty() ? nullptr : delta.data() + kvh * D_;
        const float* sc = scale.empty() ? nullptr : scale.data() + kvh * D_;
        const size_t off = size_t(t) * kv_dim_ + size_t(kvh) * D_;
        quantize_kv4_ref(src + off, D_, G_, dl, sc, p, hdr);
        dequantize_kv4_ref(p, hdr, D_, G_, dl, sc, deq + off);
        (void)ng;
      }
  }

  void dequantize_past(int layer, int pos0, const std::vector<float>& delta, const std::vector<float>& scale,
                       std::vector<uint8_t>& cache, float* out) {
    pool_.parallel_for(pos0, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j)
        for (int kvh = 0; kvh < info_.n_kv_heads; ++kvh) {
          const uint8_t* p = packed_head(cache, layer, int(j), kvh);
          const auto* hdr = reinterpret_cast<const KV4GroupHeader*>(p + D_ / 2);
          dequantize_kv4_ref(p, hdr, D_, G_, delta.empty() ? nullptr : delta.data() + kvh * D_,
                             scale.empty() ? nullptr : scale.data() + kvh * D_,
                             out + size_t(j) * kv_dim_ + size_t(kvh) * D_);
        }
    }, 16);
  }

  // chunk: DESIGN's prefill chunk length inside these T tokens (POQ blocks at chunk level).
  void attend_and_append(int l, int T, int pos0, int chunk) {
    if (!kv4_) {
      float* kc = k_cache_.data() + size_t(l) * n_ctx_ * kv_dim_;
      float* vc = v_cache_.data() + size_t(l) * n_ctx_ * kv_dim_;
      std::memcpy(kc + size_t(pos0) * kv_dim_, k_.data(), sizeof(float) * T * kv_dim_);
      std::memcpy(vc + size_t(pos0) * kv_dim_, v_.data(), sizeof(float) * T * kv_dim_);
      // Everything is full precision: the chunk's own rows are already in the cache.
      attention(kc, vc, kc + size_t(pos0) * kv_dim_, vc + size_t(pos0) * kv_dim_, nullptr, nullptr, T, pos0, 0);
      return;
    }
    const KvSmoothing& sm = w_.layers[l].kv_smoothing;
    dequantize_past(l, pos0, sm.k_delta, sm.k_scale, k_packed_, k_past_.data());
    dequantize_past(l, pos0, sm.v_delta, sm.v_scale, v_packed_, v_past_.data());
    // Quantize the chunk into the cache now: POQ only decides which form attention reads.
    quantize_rows(k_.data(), T, l, pos0, sm.k_delta, sm.k_scale, k_packed_, kq_.data());
    quantize_rows(v_.data(), T, l, pos0, sm.v_delta, sm.v_scale, v_packed_, vq_.data());
    const int block = !poq_ ? 0 : (token_level_poq_ ? 1 : chunk);
    attention(k_past_.data(), v_past_.data(), k_.data(), v_.data(), kq_.data(), vq_.data(), T, pos0, block);
  }

  // Causal attention of the chunk's queries. Keys/values j < pos0 come from k_past/v_past ([pos0][H_kv·D]);
  // chunk rows j ≥ pos0 from k_full/v_full when j is in the query's POQ block (poq_block > 0), else from
  // k_q/v_q (null = same as full). Work items are (head, block of kQueryBlock queries): each key and value
  // row is loaded once per block.
  void attention(const float* k_past, const float* v_past, const float* k_full, const float* v_full, const float* k_q,
                 const float* v_q, int T, int pos0, int poq_block) {
    constexpr int kQueryBlock = 8;
    if (!k_q) {
      k_q = k_full;
      v_q = v_full;
    }
    const int H = info_.n_heads, D = D_, group = info_.n_heads / info_.n_kv_heads;
    const float scale = 1.0f / std::sqrt(float(D));
    const int n_blocks = (T + kQueryBlock - 1) / kQueryBlock;
    // Row of key/value j as seen by the query at chunk offset t.
    auto row = [&](const float* past, const float* full, const float* quant, int j, int t) -> const float* {
      if (j < pos0) return past + size_t(j) * kv_dim_;
      const int c = j - pos0;
      const bool own_block = poq_block > 0 && c / poq_block == t / poq_block;
      return (own_block ? full : quant) + size_t(c) * kv_dim_;
    };
    pool_.parallel_for(int64_t(n_blocks) * H, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(size_t(kQueryBlock) * (pos0 + T));
      const int stride = pos0 + T;
      for (int64_t task = begin; task < end; ++task) {
        const int h = int(task % H), kvh = h / group;
        const int t_begin = int(task / H) * kQueryBlock, t_end = std::min(T, t_begin + kQueryBlock);
        const int nq = t_end - t_begin, n_keys = pos0 + t_end;
        for (int j = 0; j < n_keys; ++j)
          for (int i = 0; i < nq; ++i) {
            const int t = t_begin + i;
            float& s = scores[size_t(i) * stride + j];
            if (j > pos0 + t) {
              s = -INFINITY;
              continue;
            }
            s = cpu::dot(q_.data() + (size_t(t) * H + h) * D, row(k_past, k_full, k_q, j, t) + kvh * D, D) * scale;
          }
        for (int i = 0; i < nq; ++i) {
          cpu::softmax(scores.data() + size_t(i) * stride, pos0 + t_begin + i + 1);
          float* out = att_.data() + (size_t(t_begin + i) * H + h) * D;
          std::fill(out, out + D, 0.0f);
        }
        for (int j = 0; j < n_keys; ++j)
          for (int i = std::max(0, j - pos0 - t_begin); i < nq; ++i) {
            const int t = t_begin + i;
            const float p = scores[size_t(i) * stride + j];
            const float* v = row(v_past, v_full, v_q, j, t) + kvh * D;
            float* out = att_.data() + (size_t(t) * H + h) * D;
            for (int c = 0; c < D; ++c) out[c] += p * v[c];
          }
      }
    });
  }

  const ModelInfo& info_;
  const CpuModelWeights& w_;
  int n_ctx_;
  int D_ = 0, G_ = 0, kv_dim_ = 0;
  bool kv4_ = false, poq_ = false, token_level_poq_ = false;
  size_t head_bytes_ = 0;
  ThreadPool pool_;
  std::vector<float> k_cache_, v_cache_;      // full precision: [layer][pos][H_kv·D]
  std::vector<uint8_t> k_packed_, v_packed_;  // KV4: [layer][pos][H_kv][codes + headers]
  int scratch_tokens_ = 0;
  std::vector<float> x_, h_, q_, att_, k_, v_, g_, u_, a4_, kq_, vq_, k_past_, v_past_;
};

}  // namespace

std::unique_ptr<SessionState> make_cpu_session_state(const Model& model, const SessionOptions& options, int n_ctx) {
  return std::make_unique<CpuSessionState>(model, options, n_ctx);
}

}  // namespace wkv
