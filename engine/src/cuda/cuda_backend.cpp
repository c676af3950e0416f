// The CUDA backend: one decode step or prefill chunk of a LLaMA decoder on the GPU, over the kernels of
// kernels/ (every mode runs here for head_dim 64 or 128; see cuda_backend.h).
//
// Device data per layer: W4 weights as uploaded (qweight/scales/zeros) or FP16 dense (fp16 / kv4 modes),
// FP32 norm weights and KV smoothing, and a paged KV cache — KV4 (kv4_cache.h) in the 4-bit KV modes,
// FP16 (kv16_cache.h) in fp16 / w4 — in pages of 64 tokens; the page table maps logical to physical pages
// (identity today; the indirection is what lets caches grow or be shared).
// Activations are FP32: x [T][dim] residual, h [T][max(dim, H·D)], q/att [T][H·D], k/v [T][H_kv·D],
// g/u [T][ffn].
//
// Per layer:  h = rmsnorm(x); q,k,v = linears(h);
//   decode (T = 1): rope(q), rope(k) and append k, v at pos in one launch (kv*_rope_append_at), then
//                   KV4 + POQ → attention over the cache's n_past = pos keys (the slot just written is not
//                   read) + the full-precision current k, v;  otherwise attention over n_past + 1 cached keys;
//   prefill (T > 1): rope(q), rope(k), append the chunk, then causal attention (KV4: POQ blocks at chunk or
//                   token level);
//   x += o(att); h = rmsnorm(x); x += down(swiglu(gate(h), up(h))).
// w4a4 fake-quantizes every block linear's input per token first (a4_fake_quant.h).
// Linears: T ≤ 8 → GEMV (W4 or FP16) reading the weights once; T > 8 → W4 dequantized to an FP16
// scratch matrix (once per forward call of up to kPrefillBatch tokens), input converted to FP16 once per
// group, then cuBLAS GEMM on tensor cores (FP32 accumulate). q|k|v and gate|up are stored stacked, so a
// decode step computes each group with one GEMV launch.
//
// Decode is one CUDA graph: the token id and the position live in a small device array (written by one
// 12-byte copy before each launch), every position-dependent kernel reads them on the device
// (kv*_rope_append_at, the decode attentions' n_cache_dev), so the graph captured at the first decode step is
// replayed unchanged for every later token — no per-kernel launch gaps. It is captured again only when the
// scratch buffers it points at are reallocated (a longer prefill chunk). WKV_CUDA_GRAPH=0 disables it
// (eager launches, same results) for debugging.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "../cpu_weights.h"
#include "../cuda_backend.h"
#include "../quant_formats.h"
#include "cuda_error.h"
#include "wkv_kernels/a4_fake_quant.h"
#include "wkv_kernels/attention_prefill.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/elementwise.h"
#include "wkv_kernels/gemm_f16.h"
#include "wkv_kernels/gemv_f16.h"
#include "wkv_kernels/kv16_append.h"
#include "wkv_kernels/kv16_cache.h"
#include "wkv_kernels/kv16_decode_attention.h"
#include "wkv_kernels/kv4_append.h"
#include "wkv_kernels/kv4_cache.h"
#include "wkv_kernels/kv4_decode_attention.h"
#include "wkv_kernels/top_k.h"
#include "wkv_kernels/w4_dequant.h"
#include "wkv_kernels/w4_gemv.h"
#include "wkv_kernels/w4_gemv_chain.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace wkv {
namespace {

namespace wk = wkv::kernels;

void check(cudaError_t e, const char* what) {
  throw_on_cuda_error(e, what, "in the CUDA backend", "free device memory or use a shorter context");
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

// Page-locked host memory (fast, truly asynchronous copies), freed on destruction.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(size_t bytes, const char* what) {
    check(cudaMallocHost(&ptr_, bytes ? bytes : 1), what);
  }
  ~PinnedBuffer() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(o.ptr_) { o.ptr_ = nullptr; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    return *this;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

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
  DeviceBuffer packed;                  // W4 in the packed decode layout, when GEMV variant F runs
  DeviceBuffer dense;                   // FP16 [rows][cols] when not quantized
  bool act4 = false;                    // w4a4: fake-quantize the input per token first
};

// Rows [row0, row0 + rows) of a DeviceLinear.
struct LinearView {
  int rows = 0, cols = 0, group = 0;
  const uint32_t* qweight = nullptr;
  const uint16_t* scales = nullptr;
  const uint16_t* zeros = nullptr;
  const uint16_t* dense = nullptr;
  const void* packed = nullptr;  // whole linears only
  bool w4() const { return qweight != nullptr || packed != nullptr; }
  wk::W4DeviceWeights w4_view() const { return {rows, cols, group, qweight, scales, zeros, packed}; }
  wk::W4PackedView packed_view() const { return {rows, cols, packed}; }
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
    if (row0 == 0 && rows == d.rows && d.packed.bytes()) v.packed = d.packed.as<void>();
  } else if (d.packed.bytes()) {  // packed-only: whole tiles of the packed records (row0 % 16 == 0)
    v.packed = wk::w4_packed_rows({d.rows, d.cols, d.packed.as<void>()}, row0, rows).records;
  } else {
    v.dense = d.dense.as<uint16_t>() + size_t(row0) * d.cols;
  }
  return v;
}
LinearView view_of(const DeviceLinear& d) { return view_of(d, 0, d.rows); }

// WKV_KEEP_W4_STORAGE=1 keeps the storage-format copy of W4 linears beside the packed one (A/B timing).
bool keep_w4_storage() {
  static const bool keep = [] {
    const char* e = std::getenv("WKV_KEEP_W4_STORAGE");
    return e && std::string(e) == "1";
  }();
  return keep;
}

// WKV_L2_PREFETCH=f (0 < f ≤ 1; unset or 0: off, the default): in decode, the KV4 attention asks L2 for the
// layer's whole output projection and the first f of every GEMV block's range of gate|up, which HBM can
// deliver while the attention, latency-bound at short contexts, leaves it idle (wkv_kernels/l2_prefetch.h).
// WKV_L2_PREFETCH_MAX_KEYS=n: only while the cache holds at most n keys (longer contexts keep HBM busier).
// WKV_L2_PREFETCH_AT=end: each block asks after its key loop instead of at its start, so that at long
// contexts the keys streamed in between do not evict the lines before the output projection reads them.
struct L2PrefetchSetting {
  float fraction = 0.0f;
  int max_keys = 0;
  bool after_keys = false;  // WKV_L2_PREFETCH_AT=end: issued after each block's key loop, not at its start
};

const L2PrefetchSetting& l2_prefetch_setting() {
  static const L2PrefetchSetting s = [] {
    L2PrefetchSetting r;
    if (const char* e = std::getenv("WKV_L2_PREFETCH")) r.fraction = std::clamp(float(std::atof(e)), 0.0f, 1.0f);
    if (const char* e = std::getenv("WKV_L2_PREFETCH_MAX_KEYS")) r.max_keys = std::max(0, std::atoi(e));
    if (const char* e = std::getenv("WKV_L2_PREFETCH_AT")) r.after_keys = std::string(e) == "end";
    return r;
  }();
  return s;
}

// An on/off switch of the environment: "1" on, any other non-empty value off, unset or empty `fallback`.
bool env_switch(const char* name, bool fallback) {
  const char* e = std::getenv(name);
  return e && *e ? *e == '1' : fallback;
}

// WKV_W4_CHAIN=1 / 0 (unset: kW4ChainDefault, off: slower than separate launches on the H100, docs/performance.md
// session 9): the fused decode step runs each layer's o → gate|up → down → next layer's q|k|v as one persistent
// launch (wkv_kernels/w4_gemv_chain.h) where every weight has a packed copy; otherwise, or with WKV_DECODE_SKIP
// set, one launch per linear.
constexpr bool kW4ChainDefault = false;

bool w4_chain_requested() {
  static const bool on = env_switch("WKV_W4_CHAIN", kW4ChainDefault);
  return on;
}

// WKV_KV4_FUSED_ROPE=1 / 0 (unset: kKv4FusedRopeDefault, on: +2–3% decode on the H100 at every depth,
// docs/performance.md session 10): the fused decode step with a KV4 cache and POQ leaves out the RoPE +
// append launch (kv4_rope_append_at) and lets the attention rotate q and k where it reads them and append the
// row (Kv4DecodeArgs::rope_pos_dev), one launch per layer fewer. Where the attention cannot fuse it
// (kv4_decode_attention_fuses_rope: no POQ, WKV_KV4_ATTN=tc), the separate launch runs.
constexpr bool kKv4FusedRopeDefault = true;

bool kv4_fused_rope_requested() {
  static const bool on = env_switch("WKV_KV4_FUSED_ROPE", kKv4FusedRopeDefault);
  return on;
}

// WKV_ROPE_TABLE=1 / 0 (unset: on): the decode step computes RoPE's cos/sin once per token (rope_table_at)
// and every layer's RoPE + append launch reads them instead of computing them per head (a double-precision
// pow per pair); the same bits either way (tests/gpu/rope_append_test.cpp). Off only to measure what it
// saves.
bool rope_table_requested() {
  static const bool on = env_switch("WKV_ROPE_TABLE", true);
  return on;
}

// WKV_W4_NEXT_PREFETCH=KB (unset: 64; 0: off): each W4 GEMV of the fused decode step hints the next linear's
// first KB kilobytes per thread block into L2 once its own weights are all requested
// (W4DeviceWeights::next_l2), so that launch's first chunks need not wait a full HBM latency. H100, session
// 11 (docs/performance.md): 64 KB +4% decode at depth 0 and +2% at 32K, 32 and 128 KB less.
constexpr int kNextPrefetchDefaultKb = 64;
int next_prefetch_kb() {
  static const int kb = [] {
    const char* e = std::getenv("WKV_W4_NEXT_PREFETCH");
    return e && *e ? std::clamp(std::atoi(e), 0, 1 << 20) : kNextPrefetchDefaultKb;
  }();
  return kb;
}

// WKV_DECODE_SKIP=stage[,stage...] — measurement only, the outputs are wrong: the fused decode step leaves
// those launches out, so `wkv bench` times the step without them and the difference to a normal run is what
// they cost in place, launch gaps and overlap included. Stages: rope (RoPE + KV append), attn, qkv, wo,
// gate_up, down, head. Every buffer a skipped launch would write keeps the previous step's (finite) values.
struct DecodeSkip {
  bool rope = false, attn = false, qkv = false, wo = false, gate_up = false, down = false, head = false;
  bool any() const { return rope || attn || qkv || wo || gate_up || down || head; }
};

const DecodeSkip& decode_skip() {
  static const DecodeSkip s = [] {
    DecodeSkip r;
    const char* e = std::getenv("WKV_DECODE_SKIP");
    std::string list = e ? e : "";
    for (size_t b = 0; b < list.size();) {
      size_t c = list.find(',', b);
      if (c == std::string::npos) c = list.size();
      const std::string name = list.substr(b, c - b);
      static constexpr std::pair<const char*, bool DecodeSkip::*> kStages[] = {
          {"rope", &DecodeSkip::rope}, {"attn", &DecodeSkip::attn},       {"qkv", &DecodeSkip::qkv},
          {"wo", &DecodeSkip::wo},     {"gate_up", &DecodeSkip::gate_up}, {"down", &DecodeSkip::down},
          {"head", &DecodeSkip::head}};
      bool known = name.empty();
      for (const auto& [stage, flag] : kStages)
        if (name == stage) r.*flag = known = true;
      if (!known)
        std::fprintf(stderr, "WKV_DECODE_SKIP: unknown stage '%s' ignored (rope, attn, qkv, wo, gate_up, down, head)\n",
                     name.c_str());
      b = c + 1;
    }
    if (r.any())
      std::fprintf(stderr, "WKV_DECODE_SKIP=%s: decode launches left out for timing; the outputs are wrong\n",
                   list.c_str());
    return r;
  }();
  return s;
}

// Uploads linears with the same input size and format, stacked in the given order.
DeviceLinear upload_stacked(std::initializer_list<const Linear*> parts, const char* what) {
  DeviceLinear d;
  const Linear& first = **parts.begin();
  d.cols = first.in;
  d.act4 = first.act4;
  std::vector<uint32_t> qw;
  std::vector<uint16_t> sc, ze, dense;
  for (const Linear* l : parts) {
    if (l->in != first.in || bool(l->q4) != bool(first.q4) || l->act4 != first.act4 ||
        (l->q4 && l->q4->group != first.q4->group))
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
    if (wk::w4_gemv_wants_packed(d.rows, d.cols, d.group)) {  // GEMV variant F: the packed decode layout
      d.packed = DeviceBuffer(wk::w4_packed_device_bytes(d.rows, d.cols), what);
      wk::w4_pack(view_of(d).w4_view(), d.packed.as<void>(), 0);
      check(cudaDeviceSynchronize(), what);
      // Every part starting on a 16-row tile (the prefill's row views are then whole tiles of the records):
      // the packed copy serves every use, so the storage format is dropped (half the device memory).
      bool tile_aligned = true;
      int row0 = 0;
      for (const Linear* l : parts) {
        tile_aligned = tile_aligned && row0 % 16 == 0;
        row0 += l->out;
      }
      if (tile_aligned && !keep_w4_storage()) {
        d.qweight = DeviceBuffer();
        d.scales = DeviceBuffer();
        d.zeros = DeviceBuffer();
      }
    }
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
  int64_t device_bytes = 0;  // every buffer above
  int64_t resident_bytes() const override { return device_bytes; }
};

class CudaSessionState final : public SessionState {
 public:
  CudaSessionState(const Model& model, const SessionOptions& options, int n_ctx)
      : info_(model.info()), w_(static_cast<const CudaWeights&>(*model.backend_weights())), n_ctx_(n_ctx) {
    const QuantSpec spec = quant_spec(model.mode());
    kv4_ = spec.kv4;
    poq_ = spec.kv4 && spec.poq;
    token_level_poq_ = options.token_level_poq;
    D_ = info_.head_dim;
    G_ = model.kv_group();
    kv_dim_ = info_.n_kv_heads * D_;
    const char* g = std::getenv("WKV_CUDA_GRAPH");
    use_graph_ = !(g && std::string(g) == "0");
    // Decode fusions (residual add + norm into the next W4 GEMV, SwiGLU into the down projection) need
    // W4 linears without activation quantization; WKV_FUSE_DECODE=0 turns them off (A/B timing, debugging).
    const char* f = std::getenv("WKV_FUSE_DECODE");
    fuse_decode_ = !(f && std::string(f) == "0");
    for (const DeviceLayer& L : w_.layers)
      for (const DeviceLinear* lin : {&L.qkv, &L.wo, &L.gate_up, &L.w_down})
        fuse_decode_ = fuse_decode_ && (lin->qweight.bytes() || lin->packed.bytes()) && !lin->act4;
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    const int pages = (n_ctx_ + kPage - 1) / kPage;
    std::vector<int32_t> table(pages);
    for (int i = 0; i < pages; ++i) table[i] = i;
    page_table_ = upload(table, "KV page table");
    head_bytes_ = kv4_ ? wk::kv4_head_bytes(D_, G_) : size_t(D_) * 2;
    const size_t pool = size_t(pages) * kPage * info_.n_kv_heads * head_bytes_;
    // The paging fields both cache views share (Kv4LayerCache / Kv16LayerCache).
    auto paged = [&](auto c) {
      c.page_table = page_table_.as<int32_t>();
      c.n_pages = pages;
      c.page_size = kPage;
      c.n_kv_heads = info_.n_kv_heads;
      c.head_dim = D_;
      return c;
    };
    for (int l = 0; l < info_.n_layers; ++l) {
      k_pools_.emplace_back(pool, kv4_ ? "KV4 cache (K)" : "FP16 KV cache (K)");
      v_pools_.emplace_back(pool, kv4_ ? "KV4 cache (V)" : "FP16 KV cache (V)");
      if (kv4_) {
        wk::Kv4LayerCache c = paged(wk::Kv4LayerCache{});
        c.k_pool = k_pools_.back().as<uint8_t>();
        c.v_pool = v_pools_.back().as<uint8_t>();
        c.group = G_;
        const DeviceLayer& L = w_.layers[l];
        c.k_delta = L.k_delta.as<float>();
        c.k_scale = L.k_scale.as<float>();
        c.v_delta = L.v_delta.as<float>();
        c.v_scale = L.v_scale.as<float>();
        caches_.push_back(c);
      } else {
        wk::Kv16LayerCache c = paged(wk::Kv16LayerCache{});
        c.k_pool = k_pools_.back().as<uint16_t>();
        c.v_pool = v_pools_.back().as<uint16_t>();
        caches16_.push_back(c);
      }
    }
    ws_bytes_ = kv4_ ? wk::kv4_decode_workspace_bytes(info_.n_heads, D_, n_ctx_)
                     : wk::kv16_decode_workspace_bytes(info_.n_heads, D_, n_ctx_);
    workspace_ = DeviceBuffer(ws_bytes_, "attention workspace");
    // The decode attention (one launch: its split blocks' last arrival per head group does the combine)
    // counts arrivals on counters at the workspace's start, which must be zero before its first launch;
    // every launch leaves them at zero, so zeroing once here serves the whole session, graph replays too.
    check(cudaMemsetAsync(workspace_.as<void>(), 0, ws_bytes_, stream_), "attention workspace");
    chain_counters_ = DeviceBuffer(sizeof(unsigned int) * wk::kW4ChainCounters, "linear chain counters");
    check(cudaMemsetAsync(chain_counters_.as<void>(), 0, chain_counters_.bytes(), stream_), "linear chain counters");
    step_dev_ = DeviceBuffer(sizeof(int32_t) * 3, "decode step");
    rope_cs_ = DeviceBuffer(sizeof(float) * size_t(D_), "RoPE angles");
    step_host_ = PinnedBuffer(sizeof(int32_t) * 3, "decode step");
    logits_host_ = PinnedBuffer(sizeof(float) * size_t(info_.vocab_size), "logits");
  }

  ~CudaSessionState() override {
    if (graph_exec_) cudaGraphExecDestroy(graph_exec_);
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
  std::string kv_format() const override { return kv4_ ? "KV4 G" + std::to_string(G_) : "FP16"; }
  bool device_memory(int64_t* used, int64_t* total) const override { return cuda_device_memory(nullptr, used, total); }

  // Prefill batches of up to kPrefillBatch tokens: each W4 linear is dequantized once per forward call (about
  // 6 ms per call on the 7B shape), so chunks of 512 cost 4× the dequantization of one 2048-token call. A GPU
  // with little free memory gets smaller batches (down to one chunk) instead of an out-of-memory error.
  int forward_batch(int chunk) const override {
    const int cap = std::max(chunk, kPrefillBatch / chunk * chunk);
    int64_t used = 0, total = 0;
    if (cap <= scratch_tokens_ || !cuda_device_memory(nullptr, &used, &total)) return cap;
    return fit_forward_batch(chunk, cap, scratch_tokens_, scratch_bytes_per_token(), total - used, kScratchReserve);
  }

  // WKV_DEVICE_SAMPLING=0 samples on the host from the copied logits (A/B checks; read at every generate).
  bool samples_on_device(int vocab, int k) const override {
    const char* e = std::getenv("WKV_DEVICE_SAMPLING");
    const bool off = e && std::string(e) == "0";
    return !off && k >= 1 && k <= wk::kTopKMax && vocab > k && vocab <= wk::kTopKMaxVocab;
  }

  int top_k(int k, std::span<const int32_t> penalized, float penalty, TokenId* ids, float* vals) override {
    const int vocab = info_.vocab_size;
    if (!samples_on_device(vocab, k)) throw Error(ErrorCode::invalid_argument, "top_k: k " + std::to_string(k) +
                                                                                   " is not selectable on the device");
    if (!topk_ws_.bytes()) {
      topk_ws_bytes_ = wk::top_k_workspace_bytes(vocab, wk::kTopKMax);
      topk_ws_ = DeviceBuffer(topk_ws_bytes_, "sampling workspace");
      topk_dev_ = DeviceBuffer((2 * size_t(wk::kTopKMax) + 1) * 4 + size_t(n_ctx_) * 4, "sampling candidates");
      topk_host_ = PinnedBuffer((2 * size_t(wk::kTopKMax) + 1) * 4 + size_t(n_ctx_) * 4, "sampling candidates");
    }
    // Layout (device and pinned host): ids [k] | vals [k] | bad | penalized ids.
    int32_t* h = topk_host_.as<int32_t>();
    int32_t* d = topk_dev_.as<int32_t>();
    const size_t n_pen = std::min(penalized.size(), size_t(n_ctx_));
    std::copy(penalized.begin(), penalized.begin() + n_pen, h + 2 * wk::kTopKMax + 1);
    if (n_pen)
      check(cudaMemcpyAsync(d + 2 * wk::kTopKMax + 1, h + 2 * wk::kTopKMax + 1, n_pen * 4, cudaMemcpyHostToDevice,
                            stream_),
            "sampling");
    wk::TopKArgs a;
    a.logits = logits_.as<float>();
    a.vocab = vocab;
    a.k = k;
    a.penalized = d + 2 * wk::kTopKMax + 1;
    a.n_penalized = int(n_pen);
    a.penalty = penalty;
    a.out_ids = d;
    a.out_vals = reinterpret_cast<float*>(d + wk::kTopKMax);
    a.out_bad = d + 2 * wk::kTopKMax;
    wk::top_k_logits(a, topk_ws_.as<void>(), topk_ws_bytes_, stream_);
    check(cudaMemcpyAsync(h, d, (2 * size_t(wk::kTopKMax) + 1) * 4, cudaMemcpyDeviceToHost, stream_), "sampling");
    check(cudaStreamSynchronize(stream_), "sampling");
    std::copy(h, h + k, ids);
    std::memcpy(vals, h + wk::kTopKMax, sizeof(float) * size_t(k));
    return h[2 * wk::kTopKMax] < vocab ? h[2 * wk::kTopKMax] : -1;
  }

  void copy_last_logits(float* logits) override {
    const size_t vocab = size_t(info_.vocab_size);
    check(cudaMemcpyAsync(logits_host_.as<float>(), logits_.as<float>(), sizeof(float) * vocab, cudaMemcpyDeviceToHost,
                          stream_),
          "logits");
    check(cudaStreamSynchronize(stream_), "logits");
    std::memcpy(logits, logits_host_.as<float>(), sizeof(float) * vocab);
  }

  void forward(const TokenId* tokens, int T, int pos0, float* logits, bool all_logits, int poq_chunk) override {
    if (T <= 0) return;
    if (pos0 < 0 || pos0 + T > n_ctx_)
      throw Error(ErrorCode::context_full, "positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
                                               " exceed the context of " + std::to_string(n_ctx_) + " tokens");
    for (int t = 0; t < T; ++t)
      if (tokens[t] < 0 || tokens[t] >= info_.vocab_size)
        throw Error(ErrorCode::invalid_argument, "token id " + std::to_string(tokens[t]) + " outside the vocabulary");
    if (!logits && (T != 1 || all_logits))
      throw Error(ErrorCode::invalid_argument, "forward: only one token's logits can stay on the device");
    ensure_scratch(T, all_logits ? T : 1);
    const size_t vocab = size_t(info_.vocab_size);
    if (T == 1) {
      // The step's token and position go to the device first; the graph (or the eager launches in
      // device-position form) read them there.
      int32_t* step = step_host_.as<int32_t>();
      step[0] = tokens[0];
      step[1] = pos0;
      step[2] = pos0 + 1;
      check(cudaMemcpyAsync(step_dev_.as<int32_t>(), step, sizeof(int32_t) * 3, cudaMemcpyHostToDevice, stream_),
            "decode step");
      if (use_graph_) {
        launch_decode_graph();
      } else {
        enqueue_decode();
      }
      if (!logits) {  // kept on the device for top_k / copy_last_logits (which synchronize)
        check(cudaGetLastError(), "decode step");
        return;
      }
      check(cudaMemcpyAsync(logits_host_.as<float>(), logits_.as<float>(), sizeof(float) * vocab,
                            cudaMemcpyDeviceToHost, stream_),
            "logits");
      check(cudaStreamSynchronize(stream_), "decode step");
      std::memcpy(logits, logits_host_.as<float>(), sizeof(float) * vocab);
      return;
    }
    check(cudaMemcpyAsync(ids_.as<int32_t>(), tokens, sizeof(int32_t) * T, cudaMemcpyHostToDevice, stream_), "ids");
    const int first = all_logits ? 0 : T - 1;
    enqueue_forward(T, Positions{pos0, nullptr, poq_chunk > 0 && poq_chunk < T ? poq_chunk : T}, ids_.as<int32_t>(),
                    first);
    check(cudaMemcpyAsync(logits, logits_.as<float>(), sizeof(float) * size_t(T - first) * vocab,
                          cudaMemcpyDeviceToHost, stream_),
          "logits");
    check(cudaStreamSynchronize(stream_), "forward");
  }

 private:
  static constexpr int kPage = 64;
  static constexpr int kGemvMaxBatch = 8;
  static constexpr int kPrefillBatch = 2048;
  static constexpr int64_t kScratchReserve = int64_t(256) << 20;  // left free beside a larger prefill batch

  // Device bytes ensure_scratch allocates per token (activations, FP16 inputs, cuBLAS's FP16 copy of x).
  int64_t scratch_bytes_per_token() const {
    const int64_t qd = int64_t(info_.n_heads) * D_, d = info_.dim, f = info_.ffn_dim;
    return 4 * (1 + d + std::max(d, qd) + 2 * qd + 2 * int64_t(kv_dim_) + 2 * f) + 2 * d + 2 * f;
  }

  // Where a chunk's positions come from: the host value pos0, or (decode, graph-capturable) the device
  // array step_dev_ = {token, pos, pos + 1} when dev is set; and (prefill) the length of the POQ chunks the
  // call's tokens form (DESIGN's prefill chunks; ≥ T: one chunk).
  struct Positions {
    int pos0 = 0;
    const int32_t* dev = nullptr;
    int poq_chunk = 1;
    const int32_t* pos_dev() const { return dev + 1; }
    const int32_t* pos_plus_one_dev() const { return dev + 2; }
  };

  void enqueue_decode() {
    const Positions P{0, step_dev_.as<int32_t>()};
    if (fuse_decode_) enqueue_decode_fused(P);
    else enqueue_forward(1, P, step_dev_.as<int32_t>(), 0);
  }

  // Captures the decode step once (again after the scratch was reallocated) and launches it.
  void launch_decode_graph() {
    if (!graph_exec_ || graph_generation_ != scratch_generation_) {
      if (graph_exec_) {
        cudaGraphExecDestroy(graph_exec_);
        graph_exec_ = nullptr;
      }
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "decode graph capture");
      try {
        enqueue_decode();
      } catch (...) {
        cudaGraph_t broken = nullptr;
        cudaStreamEndCapture(stream_, &broken);
        if (broken) cudaGraphDestroy(broken);
        cudaGetLastError();
        throw;
      }
      cudaGraph_t graph = nullptr;
      check(cudaStreamEndCapture(stream_, &graph), "decode graph capture");
      const cudaError_t e = cudaGraphInstantiate(&graph_exec_, graph, 0);
      cudaGraphDestroy(graph);
      check(e, "decode graph instantiation");
      graph_generation_ = scratch_generation_;
    }
    check(cudaGraphLaunch(graph_exec_, stream_), "decode graph launch");
  }

  // The whole forward of T tokens on stream_; logits of tokens first … T−1 into logits_.
  void enqueue_forward(int T, const Positions& P, const int32_t* ids, int first) {
    const int d = info_.dim, H = info_.n_heads;
    float *x = x_.as<float>(), *h = h_.as<float>();
    wk::embedding_lookup(w_.embed.as<uint16_t>(), info_.vocab_size, d, ids, T, x, stream_);
    // Residual adds are fused with the norm that follows them (add_rmsnorm_f32): h = attn_norm(x) of layer
    // 0 here, of layer l + 1 at the end of layer l.
    wk::rmsnorm_f32(x, w_.layers[0].attn_norm.as<float>(), T, d, info_.norm_eps, h, stream_);
    const float* cs = P.dev ? rope_table(P) : nullptr;
    for (int l = 0; l < info_.n_layers; ++l) {
      const DeviceLayer& L = w_.layers[l];
      float *q = q_.as<float>(), *k = k_.as<float>(), *v = v_.as<float>();
      const int qd = H * D_;
      act4_input(L.qkv, h, T, d);
      if (T == 1) {  // one launch for q, k and v: their outputs are consecutive in qkv_
        linear(view_of(L.qkv), h, 1, qkv_.as<float>());
        q = qkv_.as<float>();
        k = q + qd;
        v = k + kv_dim_;
      } else {
        const uint16_t* h16 = shared_input_f16(h, T, d);
        linear(view_of(L.qkv, 0, qd), h, T, q, h16);
        linear(view_of(L.qkv, qd, kv_dim_), h, T, k, h16);
        linear(view_of(L.qkv, qd + kv_dim_, kv_dim_), h, T, v, h16);
      }
      if (P.dev) {  // decode (T = 1): q and k are consecutive in qkv_; one launch rotates both, appends k, v
        rope_append_at(l, P, q, v, cs);
      } else {
        wk::rope(q, T, H, D_, P.pos0, info_.rope_theta, stream_);
        wk::rope(k, T, info_.n_kv_heads, D_, P.pos0, info_.rope_theta, stream_);
      }
      if (kv4_) attention_kv4(l, T, P, q, k, v);
      else attention_kv16(l, T, P, q, k, v);
      act4_input(L.wo, att_.as<float>(), T, qd);
      linear(view_of(L.wo), att_.as<float>(), T, h);
      wk::add_rmsnorm_f32(x, h, L.ffn_norm.as<float>(), T, d, info_.norm_eps, h, stream_);
      act4_input(L.gate_up, h, T, d);
      float *g = g_.as<float>(), *u = u_.as<float>();
      if (T == 1) {  // gate and up in one launch
        linear(view_of(L.gate_up), h, 1, g);
        u = g + info_.ffn_dim;
      } else {
        const uint16_t* h16 = shared_input_f16(h, T, d);
        linear(view_of(L.gate_up, 0, info_.ffn_dim), h, T, g, h16);
        linear(view_of(L.gate_up, info_.ffn_dim, info_.ffn_dim), h, T, u, h16);
      }
      wk::swiglu(g, u, int64_t(T) * info_.ffn_dim, stream_);
      act4_input(L.w_down, g, T, info_.ffn_dim);
      linear(view_of(L.w_down), g, T, h);
      if (l + 1 < info_.n_layers) {
        wk::add_rmsnorm_f32(x, h, w_.layers[l + 1].attn_norm.as<float>(), T, d, info_.norm_eps, h, stream_);
      } else if (first == 0) {  // every row's logits: the final norm fused like the others
        wk::add_rmsnorm_f32(x, h, w_.final_norm.as<float>(), T, d, info_.norm_eps, h, stream_);
      } else {
        wk::add_inplace(x, h, int64_t(T) * d, stream_);
        wk::rmsnorm_f32(x + size_t(first) * d, w_.final_norm.as<float>(), T - first, d, info_.norm_eps, h, stream_);
      }
    }
    linear(view_of(w_.lm_head), h, T - first, logits_.as<float>());
  }

  // The decode step (T = 1, W4 linears) with the small kernels folded into the GEMVs: the residual add and
  // norm that precede q|k|v (from layer 1 on) and gate|up run in those GEMVs' x staging, SwiGLU in the down
  // projection's (wkv_kernels/w4_gemv.h). The fused add cannot write the residual stream in place (other
  // blocks still read it), so the stream alternates between x_ and x2_. Same operations as enqueue_forward
  // up to the norms' summation order.
  void enqueue_decode_fused(const Positions& P) {
    const int d = info_.dim, H = info_.n_heads;
    float* xs[2] = {x_.as<float>(), x2_.as<float>()};
    int cur = 0;  // xs[cur] holds the residual stream
    float *h = h_.as<float>(), *qkv = qkv_.as<float>(), *g = g_.as<float>(), *att = att_.as<float>();
    float *xin = xin_.as<float>(), *u = g + info_.ffn_dim;
    float *q = qkv, *k = q + H * D_, *v = k + kv_dim_;
    wk::embedding_lookup(w_.embed.as<uint16_t>(), info_.vocab_size, d, P.dev, 1, xs[0], stream_);
    wk::rmsnorm_f32(xs[0], w_.layers[0].attn_norm.as<float>(), 1, d, info_.norm_eps, h, stream_);
    const DecodeSkip& skip = decode_skip();
    // RoPE's angles depend only on the position: computed once per token for every layer (the fused RoPE
    // always reads them; the separate RoPE + append launch unless WKV_ROPE_TABLE=0).
    const bool fused_rope = !skip.any() && fuses_rope();
    const float* cs = fused_rope ? rope_table(P, true) : skip.rope ? nullptr : rope_table(P);
    bool qkv_done = false;  // the previous layer's chain computed this layer's q|k|v
    for (int l = 0; l < info_.n_layers; ++l) {
      const DeviceLayer& L = w_.layers[l];
      const DeviceLayer* next_layer = l + 1 < info_.n_layers ? &w_.layers[l + 1] : nullptr;
      if (qkv_done) {
        qkv_done = false;
      } else if (l == 0) {
        if (!skip.qkv) wk::w4_gemv(decode_w4(L.qkv, &L.wo, nullptr), h, 1, qkv, stream_);
      } else if (!skip.qkv) {  // h = the previous layer's down projection
        wk::w4_gemv_add_rmsnorm(decode_w4(L.qkv, &L.wo, &w_.layers[l - 1].w_down), xs[cur], h,
                                L.attn_norm.as<float>(), info_.norm_eps, xs[cur ^ 1], xin, qkv, stream_);
        cur ^= 1;
      }
      if (!skip.rope && !fused_rope) rope_append_at(l, P, q, v, cs);
      if (!skip.attn) {
        if (kv4_)
          attention_kv4(l, 1, P, q, k, v, fused_rope);
        else
          attention_kv16(l, 1, P, q, k, v);
      }
      if (enqueue_layer_chain(l, xs, cur, att, h, g, qkv)) {
        qkv_done = l + 1 < info_.n_layers;
        continue;
      }
      if (!skip.wo)
        wk::w4_gemv(decode_w4(L.wo, &L.gate_up, nullptr,
                              kv4_ ? wk::W4Predecessor::kv4_attention : wk::W4Predecessor::other),
                    att, 1, h, stream_);
      if (!skip.gate_up) {
        wk::w4_gemv_add_rmsnorm(decode_w4(L.gate_up, &L.w_down, &L.wo), xs[cur], h, L.ffn_norm.as<float>(),
                                info_.norm_eps, xs[cur ^ 1], xin, g, stream_);
        cur ^= 1;
      }
      if (!skip.down)
        wk::w4_gemv_swiglu(decode_w4(L.w_down, next_layer ? &next_layer->qkv : nullptr, &L.gate_up), g, u, h,
                           stream_);
    }
    wk::add_rmsnorm_f32(xs[cur], h, w_.final_norm.as<float>(), 1, d, info_.norm_eps, h, stream_);
    if (!skip.head) linear(view_of(w_.lm_head), h, 1, logits_.as<float>());
  }

  // WKV_W4_CHAIN: layer l's o → gate|up (add + RMSNorm) → down (SwiGLU) → layer l + 1's q|k|v (add + RMSNorm) as
  // one persistent launch, the same buffers and residual alternation as the separate launches (cur flips once
  // per add + RMSNorm). False (nothing enqueued) when the switch is off, a stage is skipped for timing, or a
  // weight has no packed copy or the shapes do not fit one chain.
  bool enqueue_layer_chain(int l, float* const xs[2], int& cur, const float* att, float* h, float* g, float* qkv) {
    if (!w4_chain_requested() || decode_skip().any()) return false;
    const DeviceLayer& L = w_.layers[l];
    const bool next = l + 1 < info_.n_layers;
    const DeviceLayer* N = next ? &w_.layers[l + 1] : nullptr;
    for (const DeviceLinear* lin : {&L.wo, &L.gate_up, &L.w_down, next ? &N->qkv : &L.wo})
      if (lin->packed.bytes() == 0) return false;
    wk::W4ChainOp ops[wk::kW4ChainMaxOps];
    auto packed = [](const DeviceLinear& d) { return wk::W4PackedView{d.rows, d.cols, d.packed.as<void>()}; };
    ops[0].w = packed(L.wo), ops[0].x = att, ops[0].y = h;
    ops[1].w = packed(L.gate_up), ops[1].input = wk::W4ChainInput::add_rmsnorm;
    ops[1].res = xs[cur], ops[1].r = h, ops[1].norm_weight = L.ffn_norm.as<float>(), ops[1].eps = info_.norm_eps;
    ops[1].res_out = xs[cur ^ 1], ops[1].y = g;
    ops[2].w = packed(L.w_down), ops[2].input = wk::W4ChainInput::swiglu, ops[2].x = g, ops[2].u = g + info_.ffn_dim;
    ops[2].y = h;
    if (next) {
      ops[3].w = packed(N->qkv), ops[3].input = wk::W4ChainInput::add_rmsnorm;
      ops[3].res = xs[cur ^ 1], ops[3].r = h, ops[3].norm_weight = N->attn_norm.as<float>();
      ops[3].eps = info_.norm_eps, ops[3].res_out = xs[cur], ops[3].y = qkv;
    }
    const int n = next ? 4 : 3;
    if (!wk::w4_gemv_chain_supported(ops, n)) return false;
    wk::w4_gemv_chain(ops, n, chain_counters_.as<unsigned int>(), stream_);
    if (!next) cur ^= 1;  // with the next q|k|v the residual stream is back in xs[cur]
    return true;
  }

  // Activations for T tokens and logits for `logit_rows` rows (1 unless every row's logits are wanted).
  void ensure_scratch(int T, int logit_rows) {
    if (logit_rows > logit_rows_) {
      logits_ = DeviceBuffer(size_t(logit_rows) * info_.vocab_size * 4, "logits");
      logit_rows_ = logit_rows;
      ++scratch_generation_;
    }
    if (T <= scratch_tokens_) return;
    const size_t t = size_t(T), qd = size_t(info_.n_heads) * D_;
    ids_ = DeviceBuffer(t * 4, "token ids");
    x_ = DeviceBuffer(t * info_.dim * 4, "activations");
    x2_ = DeviceBuffer(size_t(info_.dim) * 4, "activations");   // decode: the residual stream's other half
    xin_ = DeviceBuffer(size_t(info_.dim) * 4, "activations");  // decode: input of the unfused fallback
    h_ = DeviceBuffer(t * std::max<size_t>(info_.dim, qd) * 4, "activations");
    q_ = DeviceBuffer(t * qd * 4, "activations");
    att_ = DeviceBuffer(t * qd * 4, "activations");
    k_ = DeviceBuffer(t * kv_dim_ * 4, "activations");
    v_ = DeviceBuffer(t * kv_dim_ * 4, "activations");
    g_ = DeviceBuffer(t * info_.ffn_dim * 4 * (T == 1 ? 2 : 1), "activations");  // decode: gate | up
    qkv_ = DeviceBuffer((qd + 2 * size_t(kv_dim_)) * 4, "activations");
    u_ = DeviceBuffer(t * info_.ffn_dim * 4, "activations");
    if (T > kGemvMaxBatch && !w16_.bytes()) w16_ = DeviceBuffer(w_.max_linear_elems * 2, "FP16 weight scratch");
    if (T > kGemvMaxBatch) x16_ = DeviceBuffer(t * info_.dim * 2, "activations");  // shared_input_f16
    scratch_tokens_ = T;
    ++scratch_generation_;
  }

  // w4a4: the linear's input x [T][n] fake-quantized per token, in place (x feeds only this group of
  // linears, and quantizing it again for a second linear of the group would give the same values).
  void act4_input(const DeviceLinear& lin, float* x, int T, int n) {
    if (lin.act4) wk::a4_fake_quant(x, T, n, stream_);
  }

  // The input [T][n] of several linears in FP16, converted once (prefill GEMMs, T > kGemvMaxBatch), else null.
  const uint16_t* shared_input_f16(const float* x, int T, int n) {
    if (T <= kGemvMaxBatch) return nullptr;
    wk::f32_to_f16(x, x16_.as<uint16_t>(), int64_t(T) * n, stream_);
    return x16_.as<uint16_t>();
  }

  // y = x·Wᵀ; x16: x already in FP16 (shared_input_f16) for the GEMM path, or null.
  void linear(const LinearView& W, const float* x, int T, float* y, const uint16_t* x16 = nullptr) {
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
    if (x16) wk::gemm_f16_h(cublas_, x16, T, w16, W.rows, W.cols, y, stream_);
    else wk::gemm_f16(cublas_, x, T, w16, W.rows, W.cols, y, stream_);
  }

  // The decode step (device positions): qk = q|k of qkv_ [H + H_kv][D] rotated in place and this token's k, v
  // appended at pos, one launch, before the attention. That order is right for every mode: without POQ (and
  // with FP16 KV) the attention reads the current token back from the cache; with POQ it reads cache
  // positions < pos only (n_cache = pos) and the current k, v at full precision from qkv_.
  // cs: this token's angle table (rope_table) or null.
  void rope_append_at(int l, const Positions& P, float* qk, const float* v, const float* cs) {
    const float theta = info_.rope_theta;
    if (kv4_)
      wk::kv4_rope_append_at(caches_[l], qk, v, info_.n_heads, P.pos_dev(), theta, cs, stream_);
    else
      wk::kv16_rope_append_at(caches16_[l], qk, v, info_.n_heads, P.pos_dev(), theta, cs, stream_);
  }

  // The decode step's RoPE angle table for the device position (rope_cs_, [2][D/2]), enqueued once per token;
  // null when WKV_ROPE_TABLE=0 turns it off (unless `required`: the fused attention RoPE reads nothing else).
  const float* rope_table(const Positions& P, bool required = false) {
    if (!required && !rope_table_requested()) return nullptr;
    wk::rope_table_at(P.pos_dev(), D_, info_.rope_theta, rope_cs_.as<float>(), stream_);
    return rope_cs_.as<float>();
  }

  // The W4 view of the fused decode step's linear `cur`, with an L2 hint for `next` (the linear after it, or
  // null) when WKV_W4_NEXT_PREFETCH (default 64) asks for one and both have packed copies: the first KB
  // kilobytes of every thread block's piece of next, as its own launch's blocks will read it. `pred` is the
  // kernel launched just before it in the stream (W4DeviceWeights::predecessor, read by WKV_W4_PACKED_PDL=F1
  // / F2 / A1 / A2): `prev` (the linear before it: an F launch when both have packed copies) or the KV4
  // decode attention, and `other` whenever a stage is skipped for timing.
  wk::W4DeviceWeights decode_w4(const DeviceLinear& cur, const DeviceLinear* next, const DeviceLinear* prev,
                                wk::W4Predecessor pred = wk::W4Predecessor::other) const {
    wk::W4DeviceWeights w = view_of(cur).w4_view();
    if (prev && view_of(*prev).packed) pred = wk::W4Predecessor::w4_gemv;
    w.predecessor = decode_skip().any() || !w.packed ? wk::W4Predecessor::other : pred;
    const int kb = next_prefetch_kb();
    if (kb == 0 || !next || !w.packed) return w;
    const LinearView n = view_of(*next);
    if (!n.packed) return w;
    wk::L2PrefetchRegion r = wk::w4_packed_prefetch_region(n.packed_view(), 1.0f);
    const double piece_bytes = double(r.units) * r.unit_bytes / r.parts;
    r.fraction = float(std::min(1.0, kb * 1024.0 / piece_bytes));
    w.next_l2 = r;
    return w;
  }

  // The decode attention's L2 prefetch hints (l2_prefetch_setting): the weights of the two linears after it.
  void set_l2_prefetch(int l, wk::Kv4DecodeArgs& a) const {
    const L2PrefetchSetting& s = l2_prefetch_setting();
    if (!(s.fraction > 0.0f)) return;
    const DeviceLayer& L = w_.layers[l];
    const LinearView o = view_of(L.wo), gu = view_of(L.gate_up);
    if (o.packed) a.prefetch[0] = wk::w4_packed_prefetch_region(o.packed_view(), 1.0f);
    if (gu.packed) a.prefetch[1] = wk::w4_packed_prefetch_region(gu.packed_view(), s.fraction);
    a.prefetch_max_keys = s.max_keys;
    a.prefetch_after_keys = s.after_keys;
  }

  // The decode attention's arguments (T = 1) for this token's q, k, v; the caller sets the cache length.
  wk::Kv4DecodeArgs decode_args_kv4(const float* q, const float* k, const float* v) {
    wk::Kv4DecodeArgs a;
    a.q = q;
    a.k_cur = k;
    a.v_cur = v;
    a.out = att_.as<float>();
    a.n_heads = info_.n_heads;
    a.poq = poq_;
    return a;
  }

  // Whether the fused decode step lets the KV4 attention do RoPE + append (WKV_KV4_FUSED_ROPE); every layer's
  // cache has the same format, so the first one answers for all.
  bool fuses_rope() {
    return kv4_ && kv4_fused_rope_requested() &&
           wk::kv4_decode_attention_fuses_rope(caches_.front(), decode_args_kv4(nullptr, nullptr, nullptr));
  }

  // Decode (T = 1): with device positions k, v are already in the cache (rope_append_at) unless fused_rope
  // (then q, k are still unrotated and the attention rotates them and appends k, v); with a host position
  // they are appended here, also before the attention.
  void attention_kv4(int l, int T, const Positions& P, const float* q, const float* k, const float* v,
                     bool fused_rope = false) {
    const wk::Kv4LayerCache& cache = caches_[l];
    if (T == 1) {
      wk::Kv4DecodeArgs a = decode_args_kv4(q, k, v);
      if (fused_rope) {
        a.rope_pos_dev = P.pos_dev();
        a.rope_cs = rope_cs_.as<float>();  // rope_table wrote it for this token
      }
      // POQ: the attention reads the n_past = pos earlier tokens from the cache and the current one at full
      // precision from k, v; without POQ it reads the current one back from the cache like the past.
      if (!P.dev) wk::kv4_append(cache, k, v, 1, P.pos0, stream_);
      a.n_cache = poq_ ? P.pos0 : P.pos0 + 1;
      if (P.dev) {
        a.n_cache_dev = poq_ ? P.pos_dev() : P.pos_plus_one_dev();
        a.n_cache_max = n_ctx_;
      }
      set_l2_prefetch(l, a);
      wk::kv4_decode_attention(cache, a, workspace_.as<void>(), ws_bytes_, stream_);
      return;
    }
    wk::kv4_append(cache, k, v, T, P.pos0, stream_);
    if (!poq_ || token_level_poq_ || P.poq_chunk >= T) {
      wk::PrefillAttentionArgs a = prefill_args(T, P, q, k, v);
      a.poq_block = !poq_ ? 0 : (token_level_poq_ ? 1 : T);
      wk::attention_prefill(cache, a, stream_);
      return;
    }
    // Chunk-level POQ over several chunks: one launch per chunk, each the single-chunk case (its own rows
    // full precision, everything before it from the cache, which already holds the whole call), so every
    // launch runs the tensor-core kernel.
    const size_t qd = size_t(info_.n_heads) * D_;
    for (int r0 = 0; r0 < T; r0 += P.poq_chunk) {
      const int len = std::min(P.poq_chunk, T - r0);
      wk::PrefillAttentionArgs a = prefill_args(len, Positions{P.pos0 + r0, nullptr, len}, q + r0 * qd,
                                                k + size_t(r0) * kv_dim_, v + size_t(r0) * kv_dim_);
      a.out += r0 * qd;
      a.poq_block = len;
      wk::attention_prefill(cache, a, stream_);
    }
  }

  // The prefill attention's arguments common to both cache formats: T queries at positions pos0 … over
  // their own full-precision k / v and the cache.
  wk::PrefillAttentionArgs prefill_args(int T, const Positions& P, const float* q, const float* k, const float* v) {
    wk::PrefillAttentionArgs a;
    a.q = q;
    a.k_full = k;
    a.v_full = v;
    a.out = att_.as<float>();
    a.n_heads = info_.n_heads;
    a.T = T;
    a.pos0 = P.pos0;
    return a;
  }

  // FP16 KV (fp16, w4): the current keys are appended first (decode with device positions: by rope_append_at)
  // and attention reads everything from the cache (prefill reads its own chunk from k/v at FP32, which differs
  // from the cache only by FP16 rounding).
  void attention_kv16(int l, int T, const Positions& P, const float* q, const float* k, const float* v) {
    const wk::Kv16LayerCache& cache = caches16_[l];
    if (T == 1) {
      if (!P.dev) wk::kv16_append(cache, k, v, 1, P.pos0, stream_);
      wk::Kv16DecodeArgs a;
      a.q = q;
      a.out = att_.as<float>();
      a.n_heads = info_.n_heads;
      a.n_cache = P.pos0 + 1;
      if (P.dev) {
        a.n_cache_dev = P.pos_plus_one_dev();
        a.n_cache_max = n_ctx_;
      }
      wk::kv16_decode_attention(cache, a, workspace_.as<void>(), ws_bytes_, stream_);
      return;
    }
    wk::kv16_append(cache, k, v, T, P.pos0, stream_);
    wk::attention_prefill_kv16(cache, prefill_args(T, P, q, k, v), stream_);
  }

  const ModelInfo& info_;
  const CudaWeights& w_;
  int n_ctx_;
  int D_ = 0, G_ = 0, kv_dim_ = 0;
  bool kv4_ = true, poq_ = true, token_level_poq_ = false, use_graph_ = true, fuse_decode_ = true;
  size_t head_bytes_ = 0, ws_bytes_ = 0;
  cudaStream_t stream_ = nullptr;
  wk::CublasContext cublas_;
  DeviceBuffer page_table_, workspace_, step_dev_;
  DeviceBuffer chain_counters_;  // w4_gemv_chain's counters (zeroed once; every launch leaves them zeroed)
  DeviceBuffer rope_cs_;         // decode: this token's RoPE cos/sin [2][D/2] (rope_table)
  PinnedBuffer step_host_, logits_host_;
  std::vector<DeviceBuffer> k_pools_, v_pools_;
  std::vector<wk::Kv4LayerCache> caches_;
  std::vector<wk::Kv16LayerCache> caches16_;
  int scratch_tokens_ = 0, logit_rows_ = 0;
  uint64_t scratch_generation_ = 0, graph_generation_ = 0;
  cudaGraphExec_t graph_exec_ = nullptr;
  DeviceBuffer ids_, x_, x2_, xin_, h_, q_, att_, k_, v_, g_, u_, qkv_, logits_, w16_, x16_;
  DeviceBuffer topk_ws_, topk_dev_;  // device sampling (top_k): workspace; ids | vals | bad | penalized ids
  PinnedBuffer topk_host_;
  size_t topk_ws_bytes_ = 0;
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

bool cuda_copy_bandwidth(double* bytes_per_second, std::string* why) {
  try {
    *bytes_per_second = wk::measure_device_copy_bandwidth();
    return true;
  } catch (const std::exception& e) {
    cudaGetLastError();
    if (why) *why = e.what();
    return false;
  }
}

bool cuda_can_run(const ModelInfo& info, QuantMode mode, int kv_group, std::string* why) {
  const wk::DeviceInfo d = wk::query_device();
  auto no = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  if (!d.available) return no("no CUDA device (" + d.reason + "): running on the CPU");
  if (!wk::kv4_decode_supports_head_dim(info.head_dim) || info.head_dim % 8 != 0)
    return no("head_dim " + std::to_string(info.head_dim) + " has no GPU attention kernel (64 or 128): running on the CPU");
  if (quant_spec(mode).kv4 && (kv_group <= 0 || info.head_dim % kv_group != 0))
    return no("KV group size not supported on the GPU");
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
  auto lin_bytes = [](const DeviceLinear& d) {
    return int64_t(d.qweight.bytes() + d.scales.bytes() + d.zeros.bytes() + d.packed.bytes() + d.dense.bytes());
  };
  w->device_bytes = int64_t(w->embed.bytes() + w->final_norm.bytes()) + lin_bytes(w->lm_head);
  for (const DeviceLayer& L : w->layers) {
    w->device_bytes += int64_t(L.attn_norm.bytes() + L.ffn_norm.bytes() + L.k_delta.bytes() + L.k_scale.bytes() +
                               L.v_delta.bytes() + L.v_scale.bytes());
    for (const DeviceLinear* d : {&L.qkv, &L.wo, &L.gate_up, &L.w_down}) w->device_bytes += lin_bytes(*d);
  }
  return w;
}

std::unique_ptr<SessionState> make_cuda_session_state(const Model& model, const SessionOptions& options, int n_ctx) {
  // Every allocation of the state is RAII, so a failure part-way frees what was taken and leaves the
  // model and other sessions untouched. The kernels library reports cuBLAS / CUDA failures as
  // std::runtime_error (file, line, status): an allocation failure among them becomes out_of_memory here.
  try {
    return std::make_unique<CudaSessionState>(model, options, n_ctx);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (what.find("ALLOC_FAILED") != std::string::npos || what.find("out of memory") != std::string::npos)
      throw Error(ErrorCode::out_of_memory, "GPU out of memory while creating a session of " + std::to_string(n_ctx) +
                                                " tokens (" + what + "); free device memory or use a shorter context");
    throw Error(ErrorCode::internal, "CUDA backend: " + what);
  }
}

}  // namespace wkv
