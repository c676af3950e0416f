// Causal prefill attention over a paged KV4 cache with POQ blocks: a tiled FP32 flash-attention kernel
// (attention_prefill_fp32; the reference of the tests) and the dispatch of attention_prefill, which sends
// poq_block 0 / ≥ T to the tensor-core kernel of attention_prefill_tc.cu and everything else here.
//
// Block = (tile of R = 16 "rows", KV head kvh); a row is one (token t, query head of kvh's group) pair,
// row index = t·gq + hg, so a K/V tile in shared memory serves all gq query heads of the group. 256 threads.
// Per key tile of BK = 32 keys:
//   1. load the tile's keys dequantized from the cache (x̂ = (q·scale + min)·s + δ) into Kq and, when the tile
//      reaches into the chunk and POQ is on, the chunk's full-precision keys into Kf;
//   2. warp w owns rows w and w+8, lane = key: each lane computes its score from Kq or Kf per the POQ rule
//      (the form depends on the query, so both forms may be needed in one tile), masks j > p, and the warp
//      does the online-softmax update (running max m, sum l, rescale factor α) with shuffles; the
//      probabilities go to Pq or Pf (the other is 0) so step 4 needs no per-element branch;
//   3. load V the same way into the same buffers;
//   4. thread (row r = tid/16, channels tid%16 + 16i): acc = α·acc + Σ_k Pq·Vq + Pf·Vf.
// Shared rows are padded to D+1 floats so lane-indexed rows hit distinct banks.
// Every row's first tile contains key 0 ≤ p unmasked, so m is finite after it and α never sees −∞ − −∞.
#include <stdexcept>
#include <string>

#include "attention_prefill_tc.h"
#include "cuda_check.h"
#include "kv4_device.cuh"
#include "wkv_kernels/attention_prefill.h"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 256;
constexpr int kRows = 16;
constexpr int kKeys = 32;

template <int D, bool kOneGroup>
__device__ void load_tile(const Kv4LayerCache& c, const uint8_t* pool, const float* delta, const float* scale,
                          const float* full, size_t head_bytes, int kvh, int j0, int jmax, int pos0, bool need_full,
                          float (*tq)[D + 1], float (*tf)[D + 1]) {
  constexpr int W = D / 8;
  for (int idx = threadIdx.x; idx < kKeys * W; idx += kThreads) {
    const int kk = idx / W, w = idx % W, j = j0 + kk;
    float x[8];
    if (j <= jmax) {
      const uint8_t* row = kv4dev::row_ptr(pool, c, head_bytes, j, kvh);
      kv4dev::word_smoothed<kOneGroup>(row, w, D, c.group, x);
      if (scale) {
#pragma unroll
        for (int k = 0; k < 8; ++k) x[k] = x[k] * scale[kvh * D + 8 * w + k] + delta[kvh * D + 8 * w + k];
      }
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) x[k] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) tq[kk][8 * w + k] = x[k];
  }
  if (need_full) {
    for (int idx = threadIdx.x; idx < kKeys * D; idx += kThreads) {
      const int kk = idx / D, d = idx % D, j = j0 + kk;
      tf[kk][d] = (j >= pos0 && j <= jmax) ? full[size_t(j - pos0) * c.n_kv_heads * D + kvh * D + d] : 0.0f;
    }
  }
}

template <int D, bool kOneGroup>
__global__ void __launch_bounds__(kThreads)
    prefill_kernel(Kv4LayerCache c, PrefillAttentionArgs a, size_t head_bytes) {
  __shared__ float q_s[kRows][D];
  __shared__ float tq[kKeys][D + 1];
  __shared__ float tf[kKeys][D + 1];
  __shared__ float pq[kRows][kKeys];
  __shared__ float pf[kRows][kKeys];
  __shared__ float alpha_s[kRows];
  __shared__ float l_s[kRows];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int kvh = blockIdx.y, Hkv = c.n_kv_heads, H = a.n_heads, gq = H / Hkv, T = a.T, pos0 = a.pos0, B = a.poq_block;
  const int row0 = blockIdx.x * kRows, n_rows = T * gq;
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));

  // Rows past the end act as the last token with q = 0 (never written back) so the softmax stays finite.
  for (int i = tid; i < kRows * D; i += kThreads) {
    const int r = i / D, d = i % D, gr = row0 + r;
    q_s[r][d] = gr < n_rows ? a.q[size_t(gr / gq) * H * D + (kvh * gq + gr % gq) * D + d] : 0.0f;
  }
  const int t_last = min(T - 1, (min(row0 + kRows, n_rows) - 1) / gq);
  const int jmax = pos0 + t_last;

  // Per-warp row state: rows warp and warp + 8.
  int p_abs[2], bound[2];
  float m[2], l[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int gr = row0 + warp + 8 * i;
    const int t = gr < n_rows ? gr / gq : T - 1;
    p_abs[i] = pos0 + t;
    bound[i] = B == 0 ? p_abs[i] + 1 : pos0 + (t / B) * B;  // j < bound → cache
    m[i] = -INFINITY;
    l[i] = 0.0f;
  }
  constexpr int kCh = D / 16;
  float acc[kCh];
#pragma unroll
  for (int i = 0; i < kCh; ++i) acc[i] = 0.0f;
  const int pr = tid / 16, pc = tid % 16;

  for (int j0 = 0; j0 <= jmax; j0 += kKeys) {
    const bool need_full = B > 0 && j0 + kKeys > pos0;
    __syncthreads();  // previous tile's PV reads are done
    load_tile<D, kOneGroup>(c, c.k_pool, c.k_delta, c.k_scale, a.k_full, head_bytes, kvh, j0, jmax, pos0, need_full,
                            tq, tf);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = warp + 8 * i, j = j0 + lane;
      const bool use_full = j >= bound[i];
      const float* kr = use_full ? tf[lane] : tq[lane];
      float dot = 0.0f;
#pragma unroll 16
      for (int d = 0; d < D; ++d) dot += q_s[r][d] * kr[d];
      const float s = j <= p_abs[i] ? dot * inv_sqrt_d : -INFINITY;
      const float m_new = fmaxf(m[i], kv4dev::warp_max(s));
      const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
      const float al = expf(m[i] - m_new);  // m[i] = −∞ on the first tile → 0
      l[i] = l[i] * al + kv4dev::warp_sum(p);
      m[i] = m_new;
      pq[r][lane] = use_full ? 0.0f : p;
      pf[r][lane] = use_full ? p : 0.0f;
      if (lane == 0) alpha_s[r] = al;
    }
    __syncthreads();
    load_tile<D, kOneGroup>(c, c.v_pool, c.v_delta, c.v_scale, a.v_full, head_bytes, kvh, j0, jmax, pos0, need_full,
                            tq, tf);
    __syncthreads();
    const float al = alpha_s[pr];
#pragma unroll
    for (int i = 0; i < kCh; ++i) acc[i] *= al;
    if (need_full) {
      for (int k = 0; k < kKeys; ++k) {
        const float a_q = pq[pr][k], a_f = pf[pr][k];
#pragma unroll
        for (int i = 0; i < kCh; ++i) acc[i] += a_q * tq[k][pc + 16 * i] + a_f * tf[k][pc + 16 * i];
      }
    } else {
      for (int k = 0; k < kKeys; ++k) {
        const float a_q = pq[pr][k];
#pragma unroll
        for (int i = 0; i < kCh; ++i) acc[i] += a_q * tq[k][pc + 16 * i];
      }
    }
  }
  if (lane == 0) {
    l_s[warp] = l[0];
    l_s[warp + 8] = l[1];
  }
  __syncthreads();
  const int gr = row0 + pr;
  if (gr < n_rows) {
    const float inv_l = 1.0f / l_s[pr];
    float* o = a.out + size_t(gr / gq) * H * D + (kvh * gq + gr % gq) * D;
#pragma unroll
    for (int i = 0; i < kCh; ++i) o[pc + 16 * i] = acc[i] * inv_l;
  }
}

template <int D>
void launch(const Kv4LayerCache& c, const PrefillAttentionArgs& a, cudaStream_t stream) {
  const int gq = a.n_heads / c.n_kv_heads;
  const dim3 grid((a.T * gq + kRows - 1) / kRows, c.n_kv_heads);
  const size_t hb = kv4_head_bytes(D, c.group);
  if (c.group % 8 == 0)
    prefill_kernel<D, true><<<grid, kThreads, 0, stream>>>(c, a, hb);
  else
    prefill_kernel<D, false><<<grid, kThreads, 0, stream>>>(c, a, hb);
  WKV_CHECK_LAUNCH();
}

void validate(const Kv4LayerCache& c, const PrefillAttentionArgs& a, const char* what) {
  auto fail = [what](const std::string& m) { throw std::invalid_argument(std::string(what) + ": " + m); };
  if (a.T < 0 || a.pos0 < 0 || a.poq_block < 0) fail("T, pos0 and poq_block must be ≥ 0");
  validate_kv4_cache(c, a.pos0 + a.T, what);
  const int D = c.head_dim;
  if (D != 64 && D != 128) fail("head_dim " + std::to_string(D) + " is not supported (64 or 128)");
  if (a.n_heads < 1 || a.n_heads % c.n_kv_heads != 0)
    fail("n_heads " + std::to_string(a.n_heads) + " must be a positive multiple of n_kv_heads " +
         std::to_string(c.n_kv_heads));
  if (!a.q || !a.out) fail("q and out must be non-null device pointers");
  if (a.poq_block > 0 && (!a.k_full || !a.v_full)) fail("with POQ (poq_block > 0) k_full and v_full must be non-null");
}

}  // namespace

void attention_prefill_fp32(const Kv4LayerCache& c, const PrefillAttentionArgs& a, cudaStream_t stream) {
  if (a.T < 0 || a.pos0 < 0 || a.poq_block < 0)
    throw std::invalid_argument("attention_prefill_fp32: T, pos0 and poq_block must be ≥ 0");
  if (a.T == 0) return;
  validate(c, a, "attention_prefill_fp32");
  if (c.head_dim == 64)
    launch<64>(c, a, stream);
  else
    launch<128>(c, a, stream);
}

void attention_prefill(const Kv4LayerCache& c, const PrefillAttentionArgs& a, cudaStream_t stream) {
  if (a.T < 0 || a.pos0 < 0 || a.poq_block < 0)
    throw std::invalid_argument("attention_prefill: T, pos0 and poq_block must be ≥ 0");
  if (a.T == 0) return;
  validate(c, a, "attention_prefill");
  if (prefill_tc_supported(c, a))
    prefill_tc_kv4(c, a, stream);
  else if (c.head_dim == 64)
    launch<64>(c, a, stream);
  else
    launch<128>(c, a, stream);
}

}  // namespace wkv::kernels
