// The CUDA backend: one decode step or prefill chunk of a LLaMA decoder on the GPU, over the kernels of
// kernels/ (see cuda_backend.h for which modes run here).
//
// Device data per layer: W4 weights as uploaded (qweight/scales/zeros, or FP16 dense for the kv4 mode),
// FP32 norm weights and KV smoothing, and a paged KV4 cache (pages of 64 tokens; the page table maps
// logical to physical pages — identity today, the indirection is what lets caches grow or be shared).
// Activations are FP32: x [T][dim] residual, h [T][max(dim, H·D)], q/att [T][H·D], k/v [T][H_kv·D],
// g/u [T][ffn].
//
// Per layer:  h = rmsnorm(x); q,k,v = linears(h); rope(q), rope(k);
//   decode (T = 1): POQ → attention over the cache (n_past keys) + the full-precision current k, v, then
//                   append k, v;  no POQ → append first, attention over n_past + 1 cached keys;
//   prefill (T > 1): append the chunk, then causal attention with POQ blocks (chunk or token level);
//   x += o(att); h = rmsnorm(x); x += down(swiglu(gate(h), up(h))).
// Linears: T ≤ 8 → GEMV (W4 or FP16) reading the weights once; T > 8 → W4 dequantized to an FP16
// scratch matrix, then cuBLAS GEMM on tensor cores (FP32 accumulate). q|k|v and gate|up are stored
// stacked, so a decode step computes each group with one GEMV launch.
#include <cuda_runtime.h>

#include <cstring>
#include <mutex>

#include "../cpu_weights.h"
#include "../cuda_backend.h"
#include "../quant_formats.h"
#include "wkv_kernels/attention_prefill.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/elementwise.h"
#include "wkv_kernels/gemm_f16.h"
#include "wkv_kernels/gemv_f16.h"
#include "wkv_kernels/kv4_append.h"
#include "wkv_kernels/kv4_cache.h"
#include "wkv_kernels/kv4_decode_attention.h"
#include "wkv_kernels/w4_dequant.h"
#include "wkv_kernels/w4_gemv.h"

namespace wkv {
namespace {

namespace wk = wkv::kernels;

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  const std::string msg = std::string(what) + ": " + cudaGetErrorString(e);
  cudaGetLastError();
  if (e == cudaErrorMemoryAllocation)
    throw Error(ErrorCode::out_of_memory, "GPU out of memory while allocating " + std::string(what) +
                                              " (free device memory or use a shorter context)");
  throw Error(ErrorCode::internal, "CUDA error in " + msg);
}

// One device allocation, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, const char* what) : bytes_(bytes) {
    if (bytes) check(cudaMalloc(&ptr_, bytes), what);
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
DeviceBuffer upload(const std::vector<T>& v, const char* what) {
  DeviceBuffer b(v.size() * sizeof(T), what);
  if (!v.empty()) check(cudaMemcpy(b.as<void>(), v.data(), b.bytes(), cudaMemcpyHostToDevice), what);
  return b;
}

DeviceBuffer upload_f16(const std::vector<float>& v, const char* what) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_fp16(v[i]);
  return upload(h, what);
}

// Weights of one or more linears that share their input, stacked row-wise in one allocation (q|k|v and
// gate|up): one GEMV launch computes them all in decode, and each part stays addressable as a view.
struct DeviceLinear {
  int rows = 0, cols = 0, group = 0;
  DeviceBuffer qweight, scales, zeros;  // W4
  DeviceBuffer dense;                   // FP16 [rows][cols] when not quantized
};

// Rows [row0, row0 + rows) of a DeviceLinear.
struct LinearView {
  int rows = 0, cols = 0, group = 0;
  const uint32_t* qweight = nullptr;
  const uint16_t* scales = nullptr;
  const uint16_t* zeros = nullptr;
  const uint16_t* dense = nullptr;
  bool w4() const { return qweight != nullptr; }
  wk::W4DeviceWeights w4_view() const { return {rows, cols, group, qweight, scales, zeros}; }
};

LinearView view_of(const DeviceLinear& d, int row0, int rows) {
  LinearView v;
  v.rows = rows;
  v.cols = d.cols;
  v.group = d.group;
  if (d.qweight.bytes()) {
    v.qweight = d.qweight.as<uint32_t>() + size_t(row0) * d.cols / 8;
    v.scales = d.scales.as<uint16_t>() + size_t(row0) * d.cols / d.group;
    v.zeros = d.zeros.as<uint16_t>() + size_t(row0) * d.cols / d.group;
  } else {
    v.dense = d.dense.as<uint16_t>() + size_t(row0) * d.cols;
  }
  return v;
}
LinearView view_of(const DeviceLinear& d) { return view_of(d, 0, d.rows); }

// Uploads linears with the same input size and format, stacked in the given order.
DeviceLinear upload_stacked(std::initializer_list<const Linear*> parts, const char* what) {
  DeviceLinear d;
  const Linear& first = **parts.begin();
  d.cols = first.in;
  std::vector<uint32_t> qw;
  std::vector<uint16_t> sc, ze, dense;
  for (const Linear* l : parts) {
    if (l->in != first.in || bool(l->q4) != bool(first.q4) || (l->q4 && l->q4->group != first.q4->group))
      throw Error(ErrorCode::internal, std::string(what) + ": stacked linears differ in shape or format");
    d.rows += l->out;
    if (l->q4) {
      d.group = l->q4->group;
      qw.insert(qw.end(), l->q4->qweight.begin(), l->q4->qweight.end());
      sc.insert(sc.end(), l->q4->scales.begin(), l->q4->scales.end());
      ze.insert(ze.end(), l->q4->zeros.begin(), l->q4->zeros.end());
    } else {
      dense.reserve(dense.size() + l->w.size());
      for (float x : l->w) dense.push_back(float_to_fp16(x));
    }
  }
  if (first.q4) {
    d.qweight = upload(qw, what);
    d.scales = upload(sc, what);
    d.zeros = upload(ze, what);
  } else {
    d.dense = upload(dense, what);
  }
  return d;
}

struct DeviceLayer {
  DeviceBuffer attn_norm, ffn_norm;
  DeviceLinear qkv, wo, gate_up, w_down;  // qkv = [q | k | v] rows, gate_up = [gate | up] rows
  DeviceBuffer k_delta, k_scale, v_delta, v_scale;  // empty = identity smoothing
};

struct CudaWeights final : BackendWeights {
  DeviceBuffer embed;  // FP16 [vocab][dim]
  std::vector<DeviceLayer> layers;
  DeviceBuffer final_norm;
  DeviceLinear lm_head;  // FP16
  size_t max_linear_elems = 0;
};

class CudaSessionState final : public SessionState {
 public:
  CudaSessionState(const Model& model, const SessionOptions& options, int n_ctx)
      : info_(model.info()), w_(static_cast<const CudaWeights&>(*model.backend_weights())), n_ctx_(n_ctx) {
    const QuantSpec spec = quant_spec(model.mode());
    poq_ = spec.poq;
    token_level_poq_ = options.token_level_poq;
    D_ = info_.head_dim;
    G_ = model.kv_group();
    kv_dim_ = info_.n_kv_heads * D_;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    const int pages = (n_ctx_ + kPage - 1) / kPage;
    std::vector<int32_t> table(pages);
    for (int i = 0; i < pages; ++i) table[i] = i;
    page_table_ = upload(table, "KV page table");
    head_bytes_ = wk::kv4_head_bytes(D_, G_);
    const size_t pool = size_t(pages) * kPage * info_.n_kv_heads * head_bytes_;
    for (int l = 0; l < info_.n_layers; ++l) {
      k_pools_.emplace_back(pool, "KV4 cache (K)");
      v_pools_.emplace_back(pool, "KV4 cache (V)");
      wk::Kv4LayerCache c;
      c.k_pool = k_pools_.back().as<uint8_t>();
      c.v_pool = v_pools_.back().as<uint8_t>();
      c.page_table = page_table_.as<int32_t>();
      c.n_pages = pages;
      c.page_size = kPage;
      c.n_kv_heads = info_.n_kv_heads;
      c.head_dim = D_;
      c.group = G_;
      const DeviceLayer& L = w_.layers[l];
      c.k_delta = L.k_delta.as<float>();
      c.k_scale = L.k_scale.as<float>();
      c.v_delta = L.v_delta.as<float>();
      c.v_scale = L.v_scale.as<float>();
      caches_.push_back(c);
    }
    ws_bytes_ = wk::kv4_decode_workspace_bytes(info_.n_heads, D_, n_ctx_);
    workspace_ = DeviceBuffer(ws_bytes_, "attention workspace");
  }

  ~CudaSessionState() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  int64_t kv_format_bytes_per_token() const override {
    return 2 * int64_t(info_.n_layers) * info_.n_kv_heads * int64_t(head_bytes_);
  }
  int64_t kv_resident_bytes() const override {
    int64_t b = 0;
    for (const auto& p : k_pools_) b += int64_t(p.bytes());
    return 2 * b;
  }
  std::string kv_format() const override { return "KV4 G" + std::to_string(G_); }
  bool device_memory(int64_t* used, int64_t* total) const override { return cuda_device_memory(nullptr, used, total); }

  void forward(const TokenId* tokens, int T, int pos0, float* logits, bool all_logits) override {
    if (T <= 0) return;
    if (pos0 < 0 || pos0 + T > n_ctx_)
      throw Error(ErrorCode::context_full, "positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
                                               " exceed the context of " + std::to_string(n_ctx_) + " tokens");
    for (int t = 0; t < T; ++t)
      if (tokens[t] < 0 || tokens[t] >= info_.vocab_size)
        throw Error(ErrorCode::invalid_argument, "token id " + std::to_string(tokens[t]) + " outside the vocabulary");
    ensure_scratch(T);
    const int d = info_.dim, H = info_.n_heads;
    check(cudaMemcpyAsync(ids_.as<int32_t>(), tokens, sizeof(int32_t) * T, cudaMemcpyHostToDevice, stream_), "ids");
    wk::embedding_lookup(w_.embed.as<uint16_t>(), info_.vocab_size, d, ids_.as<int32_t>(), T, x_.as<float>(), stream_);
    for (int l = 0; l < info_.n_layers; ++l) {
      const DeviceLayer& L = w_.layers[l];
      float *x = x_.as<float>(), *h = h_.as<float>(), *q = q_.as<float>(), *k = k_.as<float>(), *v = v_.as<float>();
      wk::rmsnorm_f32(x, L.attn_norm.as<float>(), T, d, info_.norm_eps, h, stream_);
      const int qd = H * D_;
      if (T == 1) {  // one launch for q, k and v: their outputs are consecutive in qkv_
        linear(view_of(L.qkv), h, 1, qkv_.as<float>());
        q = qkv_.as<float>();
        k = q + qd;
        v = k + kv_dim_;
      } else {
        linear(view_of(L.qkv, 0, qd), h, T, q);
        linear(view_of(L.qkv, qd, kv_dim_), h, T, k);
        linear(view_of(L.qkv, qd + kv_dim_, kv_dim_), h, T, v);
      }
      wk::rope(q, T, H, D_, pos0, info_.rope_theta, stream_);
      wk::rope(k, T, info_.n_kv_heads, D_, pos0, info_.rope_theta, stream_);
      attention(l, T, pos0, q, k, v);
      linear(view_of(L.wo), att_.as<float>(), T, h);
      wk::add_inplace(x, h, int64_t(T) * d, stream_);
      wk::rmsnorm_f32(x, L.ffn_norm.as<float>(), T, d, info_.norm_eps, h, stream_);
      float *g = g_.as<float>(), *u = u_.as<float>();
      if (T == 1) {  // gate and up in one launch
        linear(view_of(L.gate_up), h, 1, g);
        u = g + info_.ffn_dim;
      } else {
        linear(view_of(L.gate_up, 0, info_.ffn_dim), h, T, g);
        linear(view_of(L.gate_up, info_.ffn_dim, info_.ffn_dim), h, T, u);
      }
      wk::swiglu(g, u, int64_t(T) * info_.ffn_dim, stream_);
      linear(view_of(L.w_down), g, T, h);
      wk::add_inplace(x, h, int64_t(T) * d, stream_);
    }
    const int first = all_logits ? 0 : T - 1, rows = T - first;
    wk::rmsnorm_f32(x_.as<float>() + size_t(first) * d, w_.final_norm.as<float>(), rows, d, info_.norm_eps,
                    h_.as<float>(), stream_);
    linear(view_of(w_.lm_head), h_.as<float>(), rows, logits_.as<float>());
    check(cudaMemcpyAsync(logits, logits_.as<float>(), sizeof(float) * size_t(rows) * info_.vocab_size,
                          cudaMemcpyDeviceToHost, stream_),
          "logits");
    check(cudaStreamSynchronize(stream_), "forward");
  }

 private:
  static constexpr int kPage = 64;

  void ensure_scratch(int T) {
    if (T <= scratch_tokens_) return;
    const size_t t = size_t(T), qd = size_t(info_.n_heads) * D_;
    ids_ = DeviceBuffer(t * 4, "token ids");
    x_ = DeviceBuffer(t * info_.dim * 4, "activations");
    h_ = DeviceBuffer(t * std::max<size_t>(info_.dim, qd) * 4, "activations");
    q_ = DeviceBuffer(t * qd * 4, "activations");
    att_ = DeviceBuffer(t * qd * 4, "activations");
    k_ = DeviceBuffer(t * kv_dim_ * 4, "activations");
    v_ = DeviceBuffer(t * kv_dim_ * 4, "activations");
    g_ = DeviceBuffer(t * info_.ffn_dim * 4 * (T == 1 ? 2 : 1), "activations");  // decode: gate | up
    qkv_ = DeviceBuffer((qd + 2 * size_t(kv_dim_)) * 4, "activations");
    u_ = DeviceBuffer(t * info_.ffn_dim * 4, "activations");
    logits_ = DeviceBuffer(t * info_.vocab_size * 4, "logits");
    if (T > kGemvMaxBatch && !w16_.bytes()) w16_ = DeviceBuffer(w_.max_linear_elems * 2, "FP16 weight scratch");
    scratch_tokens_ = T;
  }

  static constexpr int kGemvMaxBatch = 8;

  void linear(const LinearView& W, const float* x, int T, float* y) {
    if (T <= kGemvMaxBatch) {
      if (W.w4()) wk::w4_gemv(W.w4_view(), x, T, y, stream_);
      else wk::gemv_f16({W.rows, W.cols, W.dense}, x, T, y, stream_);
      return;
    }
    const uint16_t* w16 = W.dense;
    if (W.w4()) {
      wk::w4_dequant_f16(W.w4_view(), w16_.as<uint16_t>(), stream_);
      w16 = w16_.as<uint16_t>();
    }
    wk::gemm_f16(cublas_, x, T, w16, W.rows, W.cols, y, stream_);
  }

  void attention(int l, int T, int pos0, const float* q, const float* k, const float* v) {
    const wk::Kv4LayerCache& cache = caches_[l];
    if (T == 1) {
      wk::Kv4DecodeArgs a;
      a.q = q;
      a.k_cur = k;
      a.v_cur = v;
      a.out = att_.as<float>();
      a.n_heads = info_.n_heads;
      a.poq = poq_;
      if (poq_) {
        a.n_cache = pos0;
        wk::kv4_decode_attention(cache, a, workspace_.as<void>(), ws_bytes_, stream_);
        wk::kv4_append(cache, k, v, 1, pos0, stream_);
      } else {
        wk::kv4_append(cache, k, v, 1, pos0, stream_);
        a.n_cache = pos0 + 1;
        wk::kv4_decode_attention(cache, a, workspace_.as<void>(), ws_bytes_, stream_);
      }
      return;
    }
    wk::kv4_append(cache, k, v, T, pos0, stream_);
    wk::PrefillAttentionArgs a;
    a.q = q;
    a.k_full = k;
    a.v_full = v;
    a.out = att_.as<float>();
    a.n_heads = info_.n_heads;
    a.T = T;
    a.pos0 = pos0;
    a.poq_block = !poq_ ? 0 : (token_level_poq_ ? 1 : T);
    wk::attention_prefill(cache, a, stream_);
  }

  const ModelInfo& info_;
  const CudaWeights& w_;
  int n_ctx_;
  int D_ = 0, G_ = 0, kv_dim_ = 0;
  bool poq_ = true, token_level_poq_ = false;
  size_t head_bytes_ = 0, ws_bytes_ = 0;
  cudaStream_t stream_ = nullptr;
  wk::CublasContext cublas_;
  DeviceBuffer page_table_, workspace_;
  std::vector<DeviceBuffer> k_pools_, v_pools_;
  std::vector<wk::Kv4LayerCache> caches_;
  int scratch_tokens_ = 0;
  DeviceBuffer ids_, x_, h_, q_, att_, k_, v_, g_, u_, qkv_, logits_, w16_;
};

}  // namespace

bool cuda_device_memory(std::string* name, int64_t* used, int64_t* total) {
  const wk::DeviceInfo d = wk::query_device();
  if (!d.available) return false;
  if (name) *name = d.name;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (used) *used = int64_t(total_b - free_b);
  if (total) *total = int64_t(total_b);
  return true;
}

bool cuda_can_run(const ModelInfo& info, QuantMode mode, int kv_group, std::string* why) {
  const wk::DeviceInfo d = wk::query_device();
  auto no = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  if (!d.available) return no("no CUDA device (" + d.reason + "): running on the CPU");
  const QuantSpec spec = quant_spec(mode);
  if (!spec.kv4 || spec.act4)
    return no(std::string("mode ") + quant_mode_name(mode) +
              " has no GPU kernels yet (the GPU runs the KV4 modes: kv4, w4kv4, w4kv4-rtn, w4kv4-nopoq): running on the CPU");
  if (!wk::kv4_decode_supports_head_dim(info.head_dim) || info.head_dim % 8 != 0)
    return no("head_dim " + std::to_string(info.head_dim) + " has no GPU attention kernel (64 or 128): running on the CPU");
  if (kv_group <= 0 || info.head_dim % kv_group != 0) return no("KV group size not supported on the GPU");
  return true;
}

std::shared_ptr<BackendWeights> upload_cuda_weights(const Model& model) {
  const CpuModelWeights& c = model.cpu_weights();
  auto w = std::make_shared<CudaWeights>();
  w->embed = upload_f16(c.embed, "embeddings");
  for (const LayerWeights& L : c.layers) {
    DeviceLayer d;
    d.attn_norm = upload(L.attn_norm, "norm weights");
    d.ffn_norm = upload(L.ffn_norm, "norm weights");
    d.qkv = upload_stacked({&L.wq, &L.wk, &L.wv}, "linear weights (q|k|v)");
    d.wo = upload_stacked({&L.wo}, "linear weights (o)");
    d.gate_up = upload_stacked({&L.w_gate, &L.w_up}, "linear weights (gate|up)");
    d.w_down = upload_stacked({&L.w_down}, "linear weights (down)");
    for (const Linear* hl : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
      w->max_linear_elems = std::max(w->max_linear_elems, size_t(hl->out) * hl->in);
    if (!L.kv_smoothing.identity()) {
      d.k_delta = upload(L.kv_smoothing.k_delta, "KV smoothing");
      d.k_scale = upload(L.kv_smoothing.k_scale, "KV smoothing");
      d.v_delta = upload(L.kv_smoothing.v_delta, "KV smoothing");
      d.v_scale = upload(L.kv_smoothing.v_scale, "KV smoothing");
    }
    w->layers.push_back(std::move(d));
  }
  w->final_norm = upload(c.final_norm, "norm weights");
  w->lm_head = upload_stacked({&c.lm_head}, "output head");
  return w;
}

std::unique_ptr<SessionState> make_cuda_session_state(const Model& model, const SessionOptions& options, int n_ctx) {
  return std::make_unique<CudaSessionState>(model, options, n_ctx);
}

}  // namespace wkv
