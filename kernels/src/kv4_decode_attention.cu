// Batch-1 decode attention over a paged KV4 cache: split-K ("flash-decoding").
//
// Kernel 1 (split): grid (n_splits, H_kv, gq/NH), 128 threads. Block (s, kvh, z) handles keys
// [s·chunk, min(n_cache, (s+1)·chunk)) of KV head kvh for NH of its gq = H/H_kv query heads, so every K/V
// row is read once per NH query heads. It writes, per query head, the partial (max m, Σ exp l, acc[D]) of
// its key range; acc is in the SMOOTHED domain: acc_c = Σ_j e^{score_j − m}·x̃_jc with x̃ = q·scale + min.
//   Scores fold the smoothing: q·k̂ = Σ_c q_c(s_c x̃_c + δ_c) = Σ_c (q_c s_c) x̃_c + Σ_c q_c δ_c, so the
//   block precomputes q' = q·s/√D and the constant C = Σ q·δ/√D once.
//   Phase 1: teams of TL = D/32 lanes per key; lane `sub` of a team owns words sub, sub+TL, … (4 words = 32
//            channels), so a team's loads cover 16 consecutive bytes per step and its q' reads hit distinct
//            banks; partial dots are summed with TL−1 shuffles. Scores go to shared memory.
//   Phase 2: one warp per head: max, then p = exp(score − max) in place and Σp.
//   Phase 3: thread owns word w = tid % (D/8) of keys ks, ks + KS, … (KS = 128/(D/8)); per-thread sums are
//            reduced over KS through shared memory.
// Kernel 2 (combine): one block of D threads per query head merges the splits (and, with POQ, the current
// token's full-precision k, v as one more term) and applies s and δ of V:
//   out_c = (s_c·Σ_s w_s acc_sc + δ_c·Σ_s w_s l_s + w_t v_c) / (Σ_s w_s l_s + w_t),  w_s = e^{m_s − M}.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kv4_device.cuh"
#include "wkv_kernels/kv4_decode_attention.h"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMinChunk = 32;
constexpr int kMaxChunk = 512;

template <int D, int NH, bool kOneGroup>
__global__ void __launch_bounds__(kThreads)
    decode_split_kernel(Kv4LayerCache c, const float* __restrict__ q, int H, int n_cache, int chunk, int n_splits,
                        size_t head_bytes, float* __restrict__ ws_ml, float* __restrict__ ws_acc) {
  constexpr int W = D / 8;    // 32-bit code words per row
  constexpr int TL = D / 32;  // lanes per key in phase 1 (each owns 4 words)
  constexpr int kTeams = kThreads / TL;
  constexpr int KS = kThreads / W;  // key subsets in phase 3
  __shared__ float q_s[NH][D];
  __shared__ float sc[NH][kMaxChunk];
  __shared__ float cst[NH];
  __shared__ float ml[NH][2];
  __shared__ float red[KS * D];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = c.group, Hkv = c.n_kv_heads;
  const int split = blockIdx.x, kvh = blockIdx.y, gq = H / Hkv;
  const int h0 = kvh * gq + blockIdx.z * NH;
  const int j0 = split * chunk, n = min(n_cache, j0 + chunk) - j0;
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));

  for (int i = tid; i < NH * D; i += kThreads) {
    const int hh = i / D, d = i % D;
    const float s = c.k_scale ? c.k_scale[kvh * D + d] : 1.0f;
    q_s[hh][d] = q[(h0 + hh) * D + d] * s * inv_sqrt_d;
  }
  for (int hh = warp; hh < NH; hh += kWarps) {
    float a = 0.0f;
    if (c.k_delta)
      for (int d = lane; d < D; d += 32) a += q[(h0 + hh) * D + d] * c.k_delta[kvh * D + d];
    a = kv4dev::warp_sum(a);
    if (lane == 0) cst[hh] = a * inv_sqrt_d;
  }
  __syncthreads();

  // Phase 1: scores.
  const int team = tid / TL, sub = tid % TL;
  for (int base = 0; base < n; base += kTeams) {  // uniform trip count: every lane takes part in the shuffles
    const int jj = base + team;
    const bool valid = jj < n;
    float dot[NH];
#pragma unroll
    for (int hh = 0; hh < NH; ++hh) dot[hh] = 0.0f;
    if (valid) {
      const uint8_t* row = kv4dev::row_ptr(c.k_pool, c, head_bytes, j0 + jj, kvh);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int w = sub + TL * i;
        float x[8];
        kv4dev::word_smoothed<kOneGroup>(row, w, D, G, x);
#pragma unroll
        for (int hh = 0; hh < NH; ++hh)
#pragma unroll
          for (int k = 0; k < 8; ++k) dot[hh] += q_s[hh][8 * w + k] * x[k];
      }
    }
#pragma unroll
    for (int off = TL / 2; off > 0; off >>= 1)
#pragma unroll
      for (int hh = 0; hh < NH; ++hh) dot[hh] += __shfl_xor_sync(0xffffffffu, dot[hh], off);
    if (valid && sub == 0)
#pragma unroll
      for (int hh = 0; hh < NH; ++hh) sc[hh][jj] = dot[hh] + cst[hh];
  }
  __syncthreads();

  // Phase 2: softmax statistics of this split (n ≥ 1, so m is finite).
  for (int hh = warp; hh < NH; hh += kWarps) {
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, sc[hh][j]);
    m = kv4dev::warp_max(m);
    float l = 0.0f;
    for (int j = lane; j < n; j += 32) {
      const float p = expf(sc[hh][j] - m);
      sc[hh][j] = p;
      l += p;
    }
    l = kv4dev::warp_sum(l);
    if (lane == 0) {
      ml[hh][0] = m;
      ml[hh][1] = l;
    }
  }
  __syncthreads();

  // Phase 3: Σ_j p_j x̃_j in the smoothed domain.
  const int w = tid % W, ks = tid / W;
  float acc[NH][8];
#pragma unroll
  for (int hh = 0; hh < NH; ++hh)
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[hh][k] = 0.0f;
  for (int jj = ks; jj < n; jj += KS) {
    const uint8_t* row = kv4dev::row_ptr(c.v_pool, c, head_bytes, j0 + jj, kvh);
    float x[8];
    kv4dev::word_smoothed<kOneGroup>(row, w, D, G, x);
#pragma unroll
    for (int hh = 0; hh < NH; ++hh) {
      const float p = sc[hh][jj];
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[hh][k] += p * x[k];
    }
  }
#pragma unroll
  for (int hh = 0; hh < NH; ++hh) {
    __syncthreads();  // the previous head's reads of red are done
#pragma unroll
    for (int k = 0; k < 8; ++k) red[ks * D + 8 * w + k] = acc[hh][k];
    __syncthreads();
    for (int d = tid; d < D; d += kThreads) {
      float s = 0.0f;
      for (int r = 0; r < KS; ++r) s += red[r * D + d];
      ws_acc[(size_t(h0 + hh) * n_splits + split) * D + d] = s;
    }
  }
  if (tid < NH) {
    ws_ml[(size_t(h0 + tid) * n_splits + split) * 2 + 0] = ml[tid][0];
    ws_ml[(size_t(h0 + tid) * n_splits + split) * 2 + 1] = ml[tid][1];
  }
}

template <int D>
__global__ void __launch_bounds__(D)
    decode_combine_kernel(Kv4LayerCache c, Kv4DecodeArgs a, int n_splits, const float* __restrict__ ws_ml,
                          const float* __restrict__ ws_acc) {
  __shared__ float part[D / 32];
  const int h = blockIdx.x, d = threadIdx.x;
  const int kvh = h / (a.n_heads / c.n_kv_heads);
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));
  float M = -INFINITY;
  for (int s = 0; s < n_splits; ++s) M = fmaxf(M, ws_ml[(size_t(h) * n_splits + s) * 2]);
  float mt = -INFINITY;
  if (a.poq) {
    float v = kv4dev::warp_sum(a.q[h * D + d] * a.k_cur[kvh * D + d]);
    if ((d & 31) == 0) part[d >> 5] = v;
    __syncthreads();
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < D / 32; ++i) dot += part[i];
    mt = dot * inv_sqrt_d;
    M = fmaxf(M, mt);
  }
  float l_cache = 0.0f, acc = 0.0f;
  for (int s = 0; s < n_splits; ++s) {
    const size_t i = size_t(h) * n_splits + s;
    const float wgt = expf(ws_ml[i * 2] - M);
    l_cache += wgt * ws_ml[i * 2 + 1];
    acc += wgt * ws_acc[i * D + d];
  }
  const float sv = c.v_scale ? c.v_scale[kvh * D + d] : 1.0f;
  const float dv = c.v_delta ? c.v_delta[kvh * D + d] : 0.0f;
  float num = acc * sv + dv * l_cache, den = l_cache;
  if (a.poq) {
    const float wt = expf(mt - M);
    num += wt * a.v_cur[kvh * D + d];
    den += wt;
  }
  a.out[h * D + d] = num / den;
}

int multiprocessor_count() {
  int dev = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return std::max(sms, 1);
}

template <int D, int NH, bool kOne>
void launch_split(const Kv4LayerCache& c, const Kv4DecodeArgs& a, int chunk, int n_splits, int z, float* ws_ml,
                  float* ws_acc, cudaStream_t stream) {
  const dim3 grid(n_splits, c.n_kv_heads, z);
  decode_split_kernel<D, NH, kOne><<<grid, kThreads, 0, stream>>>(
      c, a.q, a.n_heads, a.n_cache, chunk, n_splits, kv4_head_bytes(D, c.group), ws_ml, ws_acc);
  WKV_CHECK_LAUNCH();
}

template <int D, bool kOne>
void dispatch_nh(const Kv4LayerCache& c, const Kv4DecodeArgs& a, int chunk, int n_splits, float* ws_ml,
                 float* ws_acc, cudaStream_t stream) {
  const int gq = a.n_heads / c.n_kv_heads;
  // NH = the largest of 8, 4, 2, 1 dividing gq; grid.z covers the rest of the group.
  const int nh = gq % 8 == 0 ? 8 : gq % 4 == 0 ? 4 : gq % 2 == 0 ? 2 : 1;
  switch (nh) {
    case 8: launch_split<D, 8, kOne>(c, a, chunk, n_splits, gq / 8, ws_ml, ws_acc, stream); break;
    case 4: launch_split<D, 4, kOne>(c, a, chunk, n_splits, gq / 4, ws_ml, ws_acc, stream); break;
    case 2: launch_split<D, 2, kOne>(c, a, chunk, n_splits, gq / 2, ws_ml, ws_acc, stream); break;
    default: launch_split<D, 1, kOne>(c, a, chunk, n_splits, gq, ws_ml, ws_acc, stream); break;
  }
}

template <int D>
void dispatch_d(const Kv4LayerCache& c, const Kv4DecodeArgs& a, int chunk, int n_splits, float* ws_ml,
                float* ws_acc, cudaStream_t stream) {
  if (n_splits > 0) {
    if (c.group % 8 == 0)
      dispatch_nh<D, true>(c, a, chunk, n_splits, ws_ml, ws_acc, stream);
    else
      dispatch_nh<D, false>(c, a, chunk, n_splits, ws_ml, ws_acc, stream);
  }
  decode_combine_kernel<D><<<a.n_heads, D, 0, stream>>>(c, a, n_splits, ws_ml, ws_acc);
  WKV_CHECK_LAUNCH();
}

}  // namespace

size_t kv4_decode_workspace_bytes(int n_heads, int head_dim, int n_cache_max) {
  const size_t splits = (size_t(std::max(n_cache_max, 0)) + kMinChunk - 1) / kMinChunk;
  return sizeof(float) * size_t(std::max(n_heads, 0)) * splits * (size_t(std::max(head_dim, 0)) + 2);
}

void kv4_decode_attention(const Kv4LayerCache& c, const Kv4DecodeArgs& a, void* workspace, size_t workspace_bytes,
                          cudaStream_t stream) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("kv4_decode_attention: " + m); };
  validate_kv4_cache(c, std::max(a.n_cache, 0), "kv4_decode_attention");
  const int D = c.head_dim;
  if (!kv4_decode_supports_head_dim(D)) fail("head_dim " + std::to_string(D) + " is not supported (64 or 128)");
  if (a.n_heads < 1 || a.n_heads % c.n_kv_heads != 0)
    fail("n_heads " + std::to_string(a.n_heads) + " must be a positive multiple of n_kv_heads " +
         std::to_string(c.n_kv_heads));
  if (a.n_cache < 0) fail("n_cache must be ≥ 0");
  if (!a.poq && a.n_cache == 0) fail("without POQ the current token must be in the cache (n_cache ≥ 1)");
  if (!a.q || !a.out) fail("q and out must be non-null device pointers");
  if (a.poq && (!a.k_cur || !a.v_cur)) fail("with POQ, k_cur and v_cur must be non-null device pointers");
  if (a.keys_per_split != 0 && (a.keys_per_split < kMinChunk || a.keys_per_split > kMaxChunk))
    fail("keys_per_split " + std::to_string(a.keys_per_split) + " must be 0 or in [32, 512]");

  int chunk = a.keys_per_split;
  if (chunk == 0) {
    // Enough blocks for ~4 per SM, but splits of at least 64 keys (each split costs a partial write + read).
    const int gq = a.n_heads / c.n_kv_heads;
    const int nh = gq % 8 == 0 ? 8 : gq % 4 == 0 ? 4 : gq % 2 == 0 ? 2 : 1;
    const int64_t others = int64_t(c.n_kv_heads) * (gq / nh);
    const int64_t target_splits = std::max<int64_t>(1, (4 * int64_t(multiprocessor_count()) + others - 1) / others);
    const int64_t per = (a.n_cache + target_splits - 1) / target_splits;
    chunk = int(std::clamp<int64_t>((per + 31) / 32 * 32, 64, kMaxChunk));
  }
  const int n_splits = (a.n_cache + chunk - 1) / chunk;
  const size_t need = sizeof(float) * size_t(a.n_heads) * size_t(n_splits) * size_t(D + 2);
  if (n_splits > 0 && (!workspace || workspace_bytes < need))
    fail("workspace of " + std::to_string(workspace_bytes) + " bytes is smaller than the " + std::to_string(need) +
         " needed (see kv4_decode_workspace_bytes)");
  float* ws_ml = static_cast<float*>(workspace);
  float* ws_acc = ws_ml ? ws_ml + size_t(a.n_heads) * n_splits * 2 : nullptr;
  if (D == 64)
    dispatch_d<64>(c, a, chunk, n_splits, ws_ml, ws_acc, stream);
  else
    dispatch_d<128>(c, a, chunk, n_splits, ws_ml, ws_acc, stream);
}

}  // namespace wkv::kernels
