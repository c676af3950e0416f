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
// Keys whose loads a thread issues before it computes on any of them (one lane per code word, phases 1
// and 3): a block keeps 128 / (D/8) · 16 rows in flight, 128 rows = 8.7 KB at D = 128.
constexpr int kUnrollV = 16;
constexpr int kCombineTile = 128;    // splits whose weights the combine kernel stages per step

// How a code word's 8 channels find their {scale, min} header.
enum class Hdr { kRow, kWord, kPair };  // G == D: one per row; G % 8 == 0: one per word; else per pair

// code_k − 8 (k = 0 … 7, channel order) of one word as exact FP32, in 17 instructions for 8 codes.
// Nibble k ≤ 4 sits at bits 4k, so (word & 0xF << 4k) | 0x4B000000 is the float 2^23 + code·16^k
// (< 2^24, exact); one FMA with 16^−k and −(2^(23−4k) + 8) gives code − 8 exactly (every intermediate is an
// integer below 2^24). Nibbles 5 … 7 take the same path after one shift right by 12 (positions 2 … 4).
// Centering at 8 keeps the two terms of x̃ = scale·(code − 8) + (min + 8·scale) of similar size as the data
// (min ≈ −7.5·scale for zero-centred rows), so factoring scale out of a dot product adds no cancellation.
__device__ __forceinline__ void centered_codes(uint32_t word, float (&c)[8]) {
  const uint32_t hi = word >> 12;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int pos = k < 5 ? k : k - 3;
    const uint32_t src = k < 5 ? word : hi;
    const float f = __uint_as_float((src & (0xFu << (4 * pos))) | 0x4B000000u);
    const float inv = 1.0f / float(1u << (4 * pos));                 // 16^−pos, exact
    const float off = -(float(1u << (23 - 4 * pos)) + 8.0f);          // −(2^(23−4·pos) + 8), exact
    c[k] = fmaf(f, inv, off);
  }
}

// {scale, min + 8·scale} of a header word (fp16 scale low, fp16 min high).
__device__ __forceinline__ float2 header_affine(uint32_t hb) {
  const float scale = kv4dev::half_bits_to_float(hb & 0xFFFFu), mn = kv4dev::half_bits_to_float(hb >> 16);
  return make_float2(scale, fmaf(8.0f, scale, mn));
}

template <int D, int NH, Hdr kHdr>
__global__ void __launch_bounds__(kThreads)
    decode_split_kernel(Kv4LayerCache c, const float* __restrict__ q, int H, int n_cache, int chunk, int n_splits,
                        size_t head_bytes, float* __restrict__ ws_ml, float* __restrict__ ws_acc) {
  constexpr int W = D / 8;    // 32-bit code words per row
  constexpr int TL = D / 32;  // lanes per key in phase 1 (each owns 4 words)
  constexpr int kTeams = kThreads / TL;
  constexpr int KS = kThreads / W;  // key subsets in phase 3
  __shared__ float q_s[NH][D];
  __shared__ float qw_s[NH][W];   // Σ of q' over each word's 8 channels
  __shared__ float sc[NH][kMaxChunk];
  __shared__ uint32_t row_s[kMaxChunk];  // cache row index of each key of this split (page table hoisted)
  __shared__ float cst[NH];
  __shared__ float ml[NH][2];
  __shared__ float red[KS * D];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = c.group, Hkv = c.n_kv_heads;
  const int split = blockIdx.x, kvh = blockIdx.y, gq = H / Hkv;
  const int h0 = kvh * gq + blockIdx.z * NH;
  const int j0 = split * chunk, n = min(n_cache, j0 + chunk) - j0;
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));

  // Row index (page·P + j % P)·H_kv + kvh of each key: one page-table read per key, all independent, so the
  // main loops below issue code loads with no dependent global load in front of them.
  for (int jj = tid; jj < n; jj += kThreads) {
    const int j = j0 + jj;
    const int page = __ldg(c.page_table + j / c.page_size);
    row_s[jj] = uint32_t((size_t(page) * c.page_size + j % c.page_size) * Hkv + kvh);
  }
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
  for (int i = tid; i < NH * W; i += kThreads) {
    const int hh = i / W, w = i % W;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) s += q_s[hh][8 * w + k];
    qw_s[hh][w] = s;
  }
  __syncthreads();

  const uint8_t* kbase = c.k_pool;
  const uint8_t* vbase = c.v_pool;

  // Phase 1: scores.
  if constexpr (kHdr != Hdr::kPair) {
    // Lane owns word w = tid % W of keys ks, ks + KS, … (as in phase 3): a warp's load instruction reads
    // 32/W whole rows' code bytes (64 contiguous bytes per key at D = 128), and q' of word w stays in
    // registers. Per word: q'·x̃ = scale·Σ_k q'_k (code_k − 8) + (min + 8·scale)·Σ_k q'_k; the W lanes of
    // a key then sum their words with log2(W) shuffles. kUnrollV keys per thread per step, loads first.
    const int w = tid % W, ks = tid / W;
    float qr[NH][8], qwr[NH];
#pragma unroll
    for (int hh = 0; hh < NH; ++hh) {
      qwr[hh] = qw_s[hh][w];
#pragma unroll
      for (int k = 0; k < 8; ++k) qr[hh][k] = q_s[hh][8 * w + k];
    }
    for (int base = 0; base < n; base += KS * kUnrollV) {  // uniform trip count: shuffles below
      uint32_t codes[kUnrollV], hdr[kUnrollV];
#pragma unroll
      for (int u = 0; u < kUnrollV; ++u) {
        const int jj = base + ks + KS * u;
        if (jj < n) {
          const uint8_t* row = kbase + size_t(row_s[jj]) * head_bytes;
          codes[u] = __ldg(reinterpret_cast<const uint32_t*>(row) + w);
          hdr[u] = __ldg(reinterpret_cast<const uint32_t*>(row + D / 2) + (kHdr == Hdr::kRow ? 0 : (8 * w) / G));
        }
      }
#pragma unroll
      for (int u = 0; u < kUnrollV; ++u) {
        const int jj = base + ks + KS * u;
        const bool valid = jj < n;
        float dot[NH];
#pragma unroll
        for (int hh = 0; hh < NH; ++hh) dot[hh] = 0.0f;
        if (valid) {
          float cc[8];
          centered_codes(codes[u], cc);
          const float2 af = header_affine(hdr[u]);
#pragma unroll
          for (int hh = 0; hh < NH; ++hh) {
            float part = 0.0f;
#pragma unroll
            for (int k = 0; k < 8; ++k) part = fmaf(qr[hh][k], cc[k], part);
            dot[hh] = fmaf(af.x, part, af.y * qwr[hh]);
          }
        }
#pragma unroll
        for (int off = W / 2; off > 0; off >>= 1)
#pragma unroll
          for (int hh = 0; hh < NH; ++hh) dot[hh] += __shfl_xor_sync(0xffffffffu, dot[hh], off);
        if (valid && w == 0)
#pragma unroll
          for (int hh = 0; hh < NH; ++hh) sc[hh][jj] = dot[hh] + cst[hh];
      }
    }
  } else {
    // Per-pair headers (G < 8, rare): team of TL lanes per key, lane `sub` owns words sub, sub + TL, ….
    const int team = tid / TL, sub = tid % TL;
    for (int base = 0; base < n; base += kTeams) {  // uniform trip count: shuffles below
      const int jj = base + team;
      const bool valid = jj < n;
      float dot[NH];
#pragma unroll
      for (int hh = 0; hh < NH; ++hh) dot[hh] = 0.0f;
      if (valid) {
        const uint8_t* row = kbase + size_t(row_s[jj]) * head_bytes;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int w = sub + TL * i;
          float x[8];
          kv4dev::word_smoothed<false>(row, w, D, G, x);
#pragma unroll
          for (int hh = 0; hh < NH; ++hh)
#pragma unroll
            for (int k = 0; k < 8; ++k) dot[hh] = fmaf(q_s[hh][8 * w + k], x[k], dot[hh]);
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

  // Phase 3: Σ_j p_j x̃_j in the smoothed domain. Thread owns word w of keys ks, ks + KS, … (a warp's load
  // instruction reads 32/W whole rows' code bytes). With one header per word:
  //   Σ_j p_j x̃_jk = Σ_j (p_j·scale_j)(code_jk − 8) + Σ_j p_j (min_j + 8·scale_j)
  // so each channel costs one FMA per key, and the second sum is one FMA per key for all 8 channels.
  const int w = tid % W, ks = tid / W;
  float acc[NH][8];
  float accb[NH];
#pragma unroll
  for (int hh = 0; hh < NH; ++hh) {
    accb[hh] = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[hh][k] = 0.0f;
  }
  for (int j1 = ks; j1 < n; j1 += KS * kUnrollV) {
    uint32_t codes[kUnrollV], hdr[kUnrollV];
#pragma unroll
    for (int u = 0; u < kUnrollV; ++u) {
      const int jj = j1 + KS * u;
      if (jj < n && kHdr != Hdr::kPair) {
        const uint8_t* row = vbase + size_t(row_s[jj]) * head_bytes;
        codes[u] = __ldg(reinterpret_cast<const uint32_t*>(row) + w);
        hdr[u] = __ldg(reinterpret_cast<const uint32_t*>(row + D / 2) + (kHdr == Hdr::kRow ? 0 : (8 * w) / G));
      }
    }
#pragma unroll
    for (int u = 0; u < kUnrollV; ++u) {
      const int jj = j1 + KS * u;
      if (jj >= n) break;
      if constexpr (kHdr == Hdr::kPair) {
        const uint8_t* row = vbase + size_t(row_s[jj]) * head_bytes;
        float x[8];
        kv4dev::word_smoothed<false>(row, w, D, G, x);
#pragma unroll
        for (int hh = 0; hh < NH; ++hh) {
          const float p = sc[hh][jj];
#pragma unroll
          for (int k = 0; k < 8; ++k) acc[hh][k] = fmaf(p, x[k], acc[hh][k]);
        }
      } else {
        float cc[8];
        centered_codes(codes[u], cc);
        const float2 af = header_affine(hdr[u]);
#pragma unroll
        for (int hh = 0; hh < NH; ++hh) {
          const float p = sc[hh][jj];
          const float ps = p * af.x;
#pragma unroll
          for (int k = 0; k < 8; ++k) acc[hh][k] = fmaf(ps, cc[k], acc[hh][k]);
          accb[hh] = fmaf(p, af.y, accb[hh]);
        }
      }
    }
  }
#pragma unroll
  for (int hh = 0; hh < NH; ++hh) {
    __syncthreads();  // the previous head's reads of red are done
#pragma unroll
    for (int k = 0; k < 8; ++k) red[ks * D + 8 * w + k] = acc[hh][k] + accb[hh];
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

// One block of D threads per query head. The splits' maxima are reduced in parallel, then each tile of
// kCombineTile splits gets its weights w_s = e^{m_s − M} computed once into shared memory, and every thread
// sums its channel over the tile with independent loads (no serial chain of global loads per split).
template <int D>
__global__ void __launch_bounds__(D)
    decode_combine_kernel(Kv4LayerCache c, Kv4DecodeArgs a, int n_splits, const float* __restrict__ ws_ml,
                          const float* __restrict__ ws_acc) {
  __shared__ float part[D / 32];
  __shared__ float wt_s[kCombineTile];
  __shared__ float bcast;
  const int h = blockIdx.x, d = threadIdx.x, lane = d & 31, warp = d >> 5;
  const int kvh = h / (a.n_heads / c.n_kv_heads);
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));
  const float* ml = ws_ml + size_t(h) * n_splits * 2;

  float M = -INFINITY;
  for (int s = d; s < n_splits; s += D) M = fmaxf(M, ml[2 * s]);
  M = kv4dev::warp_max(M);
  if (lane == 0) part[warp] = M;
  __syncthreads();
  M = part[0];
#pragma unroll
  for (int i = 1; i < D / 32; ++i) M = fmaxf(M, part[i]);
  __syncthreads();  // part is reused below

  float mt = -INFINITY;
  if (a.poq) {
    const float v = kv4dev::warp_sum(a.q[h * D + d] * a.k_cur[kvh * D + d]);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < D / 32; ++i) dot += part[i];
    mt = dot * inv_sqrt_d;
    M = fmaxf(M, mt);
  }

  float l_part = 0.0f, acc = 0.0f;
  for (int s0 = 0; s0 < n_splits; s0 += kCombineTile) {
    const int ns = min(kCombineTile, n_splits - s0);
    __syncthreads();  // previous tile's weights are consumed
    for (int i = d; i < ns; i += D) {
      const float wgt = expf(ml[2 * (s0 + i)] - M);
      wt_s[i] = wgt;
      l_part += wgt * ml[2 * (s0 + i) + 1];
    }
    __syncthreads();
    const float* src = ws_acc + (size_t(h) * n_splits + s0) * D + d;
    int i = 0;
    for (; i + 4 <= ns; i += 4) {
      const float a0 = src[size_t(i) * D], a1 = src[size_t(i + 1) * D];
      const float a2 = src[size_t(i + 2) * D], a3 = src[size_t(i + 3) * D];
      acc = fmaf(wt_s[i], a0, acc);
      acc = fmaf(wt_s[i + 1], a1, acc);
      acc = fmaf(wt_s[i + 2], a2, acc);
      acc = fmaf(wt_s[i + 3], a3, acc);
    }
    for (; i < ns; ++i) acc = fmaf(wt_s[i], src[size_t(i) * D], acc);
  }
  // l_cache = Σ_s w_s l_s, summed over the threads that computed the weights.
  l_part = kv4dev::warp_sum(l_part);
  __syncthreads();
  if (lane == 0) part[warp] = l_part;
  __syncthreads();
  if (d == 0) {
    float l = 0.0f;
#pragma unroll
    for (int i = 0; i < D / 32; ++i) l += part[i];
    bcast = l;
  }
  __syncthreads();
  const float l_cache = bcast;

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

template <int D, int NH, Hdr kOne>
void launch_split(const Kv4LayerCache& c, const Kv4DecodeArgs& a, int chunk, int n_splits, int z, float* ws_ml,
                  float* ws_acc, cudaStream_t stream) {
  const dim3 grid(n_splits, c.n_kv_heads, z);
  decode_split_kernel<D, NH, kOne><<<grid, kThreads, 0, stream>>>(
      c, a.q, a.n_heads, a.n_cache, chunk, n_splits, kv4_head_bytes(D, c.group), ws_ml, ws_acc);
  WKV_CHECK_LAUNCH();
}

template <int D, Hdr kOne>
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
    if (c.group == D)
      dispatch_nh<D, Hdr::kRow>(c, a, chunk, n_splits, ws_ml, ws_acc, stream);
    else if (c.group % 8 == 0)
      dispatch_nh<D, Hdr::kWord>(c, a, chunk, n_splits, ws_ml, ws_acc, stream);
    else
      dispatch_nh<D, Hdr::kPair>(c, a, chunk, n_splits, ws_ml, ws_acc, stream);
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
    // Enough blocks for ~8 per SM (bytes in flight), but splits of at least 64 keys (each split costs a
    // partial write + read of (D + 2) floats per head, ~4% of a 64-key split's KV bytes at D = 128).
    const int gq = a.n_heads / c.n_kv_heads;
    const int nh = gq % 8 == 0 ? 8 : gq % 4 == 0 ? 4 : gq % 2 == 0 ? 2 : 1;
    const int64_t others = int64_t(c.n_kv_heads) * (gq / nh);
    const int64_t target_splits = std::max<int64_t>(1, (8 * int64_t(multiprocessor_count()) + others - 1) / others);
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
