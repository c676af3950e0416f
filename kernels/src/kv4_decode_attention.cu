// Batch-1 decode attention over a paged KV4 cache: split-K ("flash-decoding").
//
// Two split kernels write the same partials; the last block of each group of query heads to finish merges
// them (the combine, fused into both kernels: finish_group, split_combine.cuh), so a call is one launch:
//  * decode_split_stream_kernel (G == D, sm_80+, the default format; kv4_decode_attention_stream.cu): FP16
//    tensor-core MMAs on codes unpacked in registers, each warp streaming its keys through scores, softmax
//    and V (online softmax, one merge per block). WKV_KV4_ATTN=tc runs decode_split_tc_kernel instead: the
//    same arithmetic in three block-wide phases (see the comment above it), the default until session 6.
//  * decode_split_kernel (any G, FP32 CUDA cores), described next.
//
// Graph capture: the key range of each split block is a function of n_cache (SplitPlan), which the kernels
// read from device memory when Kv4DecodeArgs::n_cache_dev is set; the grid is sized for n_cache_max. Blocks
// whose key range is empty skip the work but still arrive at their group's counter (the last arrival is the
// grid's blocks per group, a launch constant), and the combine visits only the active splits, so n_cache = 0
// (POQ: only k_cur/v_cur) needs no partials at all: the grid then has one block per group, which combines.
//
// FP32 kernel (split): grid (n_splits, H_kv, gq/NH), 128 threads. Block (s, kvh, z) handles keys
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
// Combine: block (s, kvh, z) arrives at counter (kvh·gq + z·NH)/NH of the workspace once its partials are
// stored (split_combine.cuh: layout, memory ordering); the last of the group's n_splits blocks merges the
// splits of its NH heads (and, with POQ, the current token's full-precision k, v as one more term) with the
// arithmetic of the former combine kernel (D threads per head) and applies s and δ of V:
//   out_c = (s_c·Σ_s w_s acc_sc + δ_c·Σ_s w_s l_s + w_t v_c) / (Σ_s w_s l_s + w_t),  w_s = e^{m_s − M}.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "kv4_decode_split.cuh"
#include "kv4_device.cuh"
#include "split_combine.cuh"
#include "wkv_kernels/kv4_decode_attention.h"

namespace wkv::kernels {

namespace {

using namespace kv4split;  // the plan, the fused combine, the FP16 helpers (kv4_decode_split.cuh)

// Keys whose loads a thread issues before it computes on any of them (one lane per code word, phases 1
// and 3): a block keeps 128 / (D/8) · 16 rows in flight, 128 rows = 8.7 KB at D = 128.
constexpr int kUnrollV = 16;

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

template <int D, int NH, Hdr kHdr>
__global__ void __launch_bounds__(kThreads)
    decode_split_kernel(Kv4LayerCache c, Kv4DecodeArgs a, SplitPlan plan, int n_splits, size_t head_bytes,
                        float* __restrict__ ws_ml, float* __restrict__ ws_acc, unsigned int* __restrict__ counters) {
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

  const float* __restrict__ q = a.q;
  const int H = a.n_heads;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int G = c.group, Hkv = c.n_kv_heads;
  const int split = blockIdx.x, kvh = blockIdx.y, gq = H / Hkv;
  const int h0 = kvh * gq + blockIdx.z * NH;
  const int n_cache = plan_n_cache(plan), chunk = plan_chunk(plan, n_cache);
  const int j0 = split * chunk, n = min(n_cache - j0, chunk);
  if (n <= 0) {  // block-uniform: a split past the (device) n_cache: no partials, but it arrives
    finish_group<D, NH, kCombinePassFp32>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters, &sc[0][0]);
    return;
  }
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));

  // Row index (page·P + j % P)·H_kv + kvh of each key: one page-table read per key, all independent, so the
  // main loops below issue code loads with no dependent global load in front of them.
  for (int jj = tid; jj < n; jj += kThreads) {
    const int j = j0 + jj;
    const int page = __ldg(c.page_table + j / c.page_size);
    row_s[jj] = uint32_t(kv4_row_index(page, j % c.page_size, kvh, Hkv, c.page_size));
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
  finish_group<D, NH, kCombinePassFp32>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters, &sc[0][0]);
}

// ---- Tensor-core split kernel (G == D, D ∈ {64, 128}) ----------------------------------------------------
//
// Why: the FP32 kernel above spends ~9 instructions per 4-bit code (unpack, convert, FMA, shuffles) and is
// issue-bound at ~30% of HBM bandwidth. Here the codes are unpacked straight into FP16 pairs (exact: codes
// −8 … 7) with 9 instructions per 8 codes, and the dot products run on the tensor cores
// (mma.m16n8k16, FP16 × FP16 → FP32). The FP32 operand (q', or the softmax weights) is split into two FP16
// terms hi + lo (hi = fp16(x), lo = fp16(x − hi): 22 significant bits) that occupy two columns of the MMA
// and are summed in FP32 afterwards, so the products keep ~FP32 accuracy. Power-of-two prescales (exact)
// keep hi/lo inside the FP16 normal range: max|x| is mapped into [2^13, 2^14).
//
// With G = D every row has one header {scale, min}; with b = min + 8·scale,
//   x̃_jc = scale_j·(code_jc − 8) + b_j,
//   q'·x̃_j = scale_j·Σ_c q'_c (code_jc − 8) + b_j·Σ_c q'_c                       (K: MMA over channels)
//   Σ_j p_j x̃_jc = Σ_j (p_j·scale_j)(code_jc − 8) + Σ_j p_j b_j                   (V: MMA over keys)
//
// Block (split, kvh, z): 4 warps, NH ≤ 4 query heads (all of a GQA group up to 4), so each K/V byte is read
// once per NH heads. Keys are handled in tiles of 16; warp w takes tiles w·U …, w·U + U − 1, then steps by
// 4·U (U = kTcUnrollK / kTcUnrollV tiles whose loads are all issued before any is consumed).
//   Phase 1 (K): MMA M = 16 keys, N = 8 = (head, hi|lo) columns, K = 16 channels per step. Lane (g, t)
//     (g = lane/4, t = lane%4) loads code words t, t+4, … of keys g and g+8 of the tile (a quad reads 16
//     contiguous bytes of a row per instruction) and its FP16 pairs ARE its A fragment: the channel order
//     inside an MMA step is a permutation that the B fragment (q') follows. The accumulator gives lane
//     (g, t) the scores of keys g, g+8 for head t (columns 2t = hi, 2t+1 = lo). Scores → shared memory.
//   Phase 2: one warp per head: max, p = exp(s − m), l = Σp, Σ p·b, w = p·scale → FP16 hi/lo (prescaled).
//   Phase 3 (V): MMA M = 16 channels, N = 8 = (head, hi|lo), K = 16 keys. Lane (g, t) loads word g (and
//     g + 8 at D = 128) of keys 2t, 2t+1, 2t+8, 2t+9 (4 rows × 32 contiguous bytes per instruction); a byte
//     permute pairs the same channel of two keys into one FP16x2 register = an A fragment element pair.
//   The 4 warps' accumulators are summed through shared memory; the partial (m, l, acc) goes to the
//   workspace in the same format as the FP32 kernel's, so the (fused) combine is shared.
// Expected cost per (key, KV head) at D = 128: ~0.5 + 0.5 MMA and ~2 instructions per code (vs ~9), so the
// kernel is bound by HBM bandwidth rather than issue slots (see the bench for numbers).

// Tiles whose loads a warp issues before consuming any: phase 1 (K) holds 16 words per tile in flight
// per lane, phase 3 (V) 8 words per tile next to 32 accumulators.
constexpr int kTcUnrollK = 4;
constexpr int kTcUnrollV = 2;

// U: K tiles whose loads a warp issues at once (kTcUnrollK by default); MinB: blocks per SM the register
// allocation must allow (0: no constraint, ptxas's choice: 128 registers at D = 128, no spills, 4 blocks per SM.
// Not 1: with it ptxas takes 148 registers and only 3 blocks fit, 103 against 85 µs per layer at 32K, session
// 6; nor 4: 128 registers with spills). The occupancy variants trade loads in flight per warp for resident
// blocks (WKV_KV4_TC_OCC, launch_split_tc).
template <int D, int NH, int U = kTcUnrollK, int MinB = 0>
__global__ void __launch_bounds__(kThreads, MinB)
    decode_split_tc_kernel(Kv4LayerCache c, Kv4DecodeArgs a, SplitPlan plan, int n_splits,
                           float* __restrict__ ws_ml, float* __restrict__ ws_acc,
                           unsigned int* __restrict__ counters) {
  static_assert(D == 64 || D == 128, "tensor-core path: D ∈ {64, 128}");
  static_assert(NH >= 1 && NH <= 4, "N = 8 columns hold 4 heads × (hi, lo)");
  constexpr int HB = D / 2 + 4;   // row bytes with one header (G = D)
  constexpr int KSTEPS = D / 16;  // MMA steps over the channels of a K row
  constexpr int KW = D / 32;      // code words per key per lane in phase 1
  constexpr int VW = D / 64;      // code words per key per lane in phase 3
  constexpr int MT = D / 16;      // channel tiles (MMAs per key tile) in phase 3
  __shared__ uint32_t row_s[kMaxChunk];
  __shared__ float sc[NH][kMaxChunk];               // scores, then w = p·scale
  __shared__ float vsc_s[kMaxChunk], vb_s[kMaxChunk];  // V header: scale, min + 8·scale
  __shared__ __align__(16) __half wv_s[2][NH][kMaxChunk];  // prescaled w: hi, lo
  __shared__ float q_s[NH][D];
  __shared__ float red[kWarps][NH][D];
  __shared__ float qsum_s[NH], cst_s[NH], qinv_s[NH], qmul_s[NH];
  __shared__ float m_s[NH], l_s[NH], pb_s[NH], vinv_s[NH];

  const float* __restrict__ q = a.q;
  const int H = a.n_heads;
  const int Hkv = c.n_kv_heads, kvh = blockIdx.y, gq = H / Hkv;
  const int h0 = kvh * gq + blockIdx.z * NH;
  const int n_cache = plan_n_cache(plan), chunk = plan_chunk(plan, n_cache);
  const int split = blockIdx.x, j0 = split * chunk;
  const int n = min(n_cache - j0, chunk);
  if (n <= 0) {  // block-uniform: a split past the (device) n_cache: no partials, but it arrives
    finish_group<D, NH, kCombinePassTc>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters, &sc[0][0]);
    return;
  }
  const int n16 = (n + 15) & ~15, n_tiles = n16 / 16;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));

  // Row index of each key; the padding keys of the last tile (n … n16−1) repeat key n−1 so every load below
  // is in bounds without a branch (their scores are masked to −inf and their weights are 0).
  for (int jj = tid; jj < n16; jj += kThreads) {
    const int j = j0 + min(jj, n - 1);
    const int page = __ldg(c.page_table + j / c.page_size);
    row_s[jj] = uint32_t(kv4_row_index(page, j % c.page_size, kvh, Hkv, c.page_size));
  }
  for (int i = tid; i < NH * D; i += kThreads) {
    const int hh = i / D, d = i % D;
    const float s = c.k_scale ? c.k_scale[kvh * D + d] : 1.0f;
    q_s[hh][d] = q[(h0 + hh) * D + d] * s * inv_sqrt_d;
  }
  __syncthreads();
  for (int hh = warp; hh < NH; hh += kWarps) {
    float qsum = 0.0f, cs = 0.0f, amax = 0.0f;
    for (int d = lane; d < D; d += 32) {
      qsum += q_s[hh][d];
      amax = fmaxf(amax, fabsf(q_s[hh][d]));
      if (c.k_delta) cs += q[(h0 + hh) * D + d] * c.k_delta[kvh * D + d];
    }
    const QHeadConst k = reduce_q_head(qsum, cs, amax, inv_sqrt_d);
    if (lane == 0) {
      qmul_s[hh] = k.qmul;
      qinv_s[hh] = k.qinv;
      qsum_s[hh] = k.qsum;
      cst_s[hh] = k.cst;
    }
  }
  __syncthreads();

  // B fragments of phase 1 (constant over keys): column g = (head g/2, term g%2); k-step s = 2i + e covers
  // word w = 4i + t of this lane's quad: b0 = channels (8w + 2e, 8w + 2e + 4), b1 = (8w + 2e + 1, 8w + 2e + 5),
  // exactly the channels of the A pairs r[2e], r[2e+1] of decode_word_f16.
  uint32_t kb[KSTEPS][2];
  {
    const int hh = g >> 1, v = g & 1;
#pragma unroll
    for (int s = 0; s < KSTEPS; ++s) {
      const int c0 = 8 * (4 * (s >> 1) + t) + 2 * (s & 1);
      if (hh < NH) {
        const float mul = qmul_s[hh];
        kb[s][0] = split_term(q_s[hh][c0] * mul, v) | (split_term(q_s[hh][c0 + 4] * mul, v) << 16);
        kb[s][1] = split_term(q_s[hh][c0 + 1] * mul, v) | (split_term(q_s[hh][c0 + 5] * mul, v) << 16);
      } else {
        kb[s][0] = kb[s][1] = 0u;
      }
    }
  }

  const uint8_t* kpool = c.k_pool;
  const uint8_t* vpool = c.v_pool;

  // Phase 1: scores. The loop bounds are warp-uniform (the MMAs need the whole warp).
  for (int tb = warp * U; tb < n_tiles; tb += kWarps * U) {
    uint32_t wa[U][KW], wb[U][KW], ha[U], hbv[U], vh[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int tile = min(tb + u, n_tiles - 1);  // past the end: reload the last tile, unused
      const int ja = tile * 16 + g, jb = ja + 8;
      const uint8_t* ra = kpool + size_t(row_s[ja]) * HB;
      const uint8_t* rb = kpool + size_t(row_s[jb]) * HB;
#pragma unroll
      for (int i = 0; i < KW; ++i) {
        wa[u][i] = ldg_u32(ra + 4 * (4 * i + t));
        wb[u][i] = ldg_u32(rb + 4 * (4 * i + t));
      }
      ha[u] = ldg_u32(ra + D / 2);
      hbv[u] = ldg_u32(rb + D / 2);
      vh[u] = ldg_u32(vpool + size_t(row_s[(t & 1) ? jb : ja]) * HB + D / 2);  // for phase 2 (t < 2 use it)
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int tile = tb + u;
      if (tile >= n_tiles) break;
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < KW; ++i) {
        uint32_t ra4[4], rb4[4];
        decode_word_f16(wa[u][i], ra4);
        decode_word_f16(wb[u][i], rb4);
        mma_m16n8k16(acc, ra4[0], rb4[0], ra4[1], rb4[1], kb[2 * i][0], kb[2 * i][1]);
        mma_m16n8k16(acc, ra4[2], rb4[2], ra4[3], rb4[3], kb[2 * i + 1][0], kb[2 * i + 1][1]);
      }
      const int ja = tile * 16 + g, jb = ja + 8;
      if (t < NH) {
        const float2 afa = header_affine(ha[u]), afb = header_affine(hbv[u]);
        const float qi = qinv_s[t], qs = qsum_s[t], cs = cst_s[t];
        sc[t][ja] = ja < n ? fmaf(afa.x * qi, acc[0] + acc[1], fmaf(afa.y, qs, cs)) : -INFINITY;
        sc[t][jb] = jb < n ? fmaf(afb.x * qi, acc[2] + acc[3], fmaf(afb.y, qs, cs)) : -INFINITY;
      }
      if (t < 2) {
        const float2 af = header_affine(vh[u]);
        const int j = t ? jb : ja;
        vsc_s[j] = af.x;
        vb_s[j] = af.y;
      }
    }
  }
  __syncthreads();

  // Phase 2: softmax statistics (n ≥ 1, so m is finite) and the V weights w = p·scale as prescaled hi/lo.
  for (int hh = warp; hh < NH; hh += kWarps) {
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, sc[hh][j]);
    m = kv4dev::warp_max(m);
    float l = 0.0f, pb = 0.0f, wmax = 0.0f;
    for (int j = lane; j < n16; j += 32) {
      const float p = j < n ? expf(sc[hh][j] - m) : 0.0f;
      const float w = p * vsc_s[j];
      l += p;
      pb = fmaf(p, vb_s[j], pb);
      wmax = fmaxf(wmax, w);
      sc[hh][j] = w;
    }
    l = kv4dev::warp_sum(l);
    pb = kv4dev::warp_sum(pb);
    wmax = kv4dev::warp_max(wmax);
    const int k = prescale_exponent(wmax);
    const float mul = pow2f(k);
    for (int j = lane; j < n16; j += 32) {
      const float x = sc[hh][j] * mul;
      const __half hi = __float2half_rn(x);
      wv_s[0][hh][j] = hi;
      wv_s[1][hh][j] = __float2half_rn(x - __half2float(hi));
    }
    if (lane == 0) {
      m_s[hh] = m;
      l_s[hh] = l;
      pb_s[hh] = pb;
      vinv_s[hh] = pow2f(-k);
    }
  }
  __syncthreads();

  // Phase 3: acc[m] = MMA over keys. B: column g = (head g/2, term g%2), rows = keys 2t, 2t+1 (b0) and
  // 2t+8, 2t+9 (b1) of the tile, read as FP16 pairs from wv_s. A: row r of channel tile m is channel
  //   D = 128: row g ↔ 8g + m (word g), row g+8 ↔ 8(g+8) + m (word g+8);
  //   D = 64:  row g ↔ 8g + 2m, row g+8 ↔ 8g + 2m + 1 (word g);
  // so lane (g, t) needs exactly the words it loaded, of keys 2t, 2t+1 (a0, a1) and 2t+8, 2t+9 (a2, a3).
  float acc[MT][4];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = 0.0f;
  const bool has_b = (g >> 1) < NH;
  const __half* wrow = &wv_s[g & 1][has_b ? (g >> 1) : 0][0];
  for (int tb = warp * kTcUnrollV; tb < n_tiles; tb += kWarps * kTcUnrollV) {
    constexpr int UV = kTcUnrollV;
    uint32_t vw[UV][4][VW];  // [tile][key 2t, 2t+1, 2t+8, 2t+9][word g + 8·i]
#pragma unroll
    for (int u = 0; u < UV; ++u) {
      const int tile = min(tb + u, n_tiles - 1);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const int jj = tile * 16 + 2 * t + (kk & 1) + 8 * (kk >> 1);
        const uint8_t* r = vpool + size_t(row_s[jj]) * HB;
#pragma unroll
        for (int i = 0; i < VW; ++i) vw[u][kk][i] = ldg_u32(r + 4 * (g + 8 * i));
      }
    }
#pragma unroll
    for (int u = 0; u < UV; ++u) {
      const int tile = tb + u;
      if (tile >= n_tiles) break;
      const int jb = tile * 16 + 2 * t;
      const uint32_t b0 = has_b ? *reinterpret_cast<const uint32_t*>(wrow + jb) : 0u;
      const uint32_t b1 = has_b ? *reinterpret_cast<const uint32_t*>(wrow + jb + 8) : 0u;
      uint32_t pab[VW][8], pcd[VW][8];
#pragma unroll
      for (int i = 0; i < VW; ++i) {
        decode_pair_f16(vw[u][0][i], vw[u][1][i], pab[i]);
        decode_pair_f16(vw[u][2][i], vw[u][3][i], pcd[i]);
      }
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if constexpr (D == 128)
          mma_m16n8k16(acc[m], pab[0][m], pab[1][m], pcd[0][m], pcd[1][m], b0, b1);
        else
          mma_m16n8k16(acc[m], pab[0][2 * m], pab[0][2 * m + 1], pcd[0][2 * m], pcd[0][2 * m + 1], b0, b1);
      }
    }
  }
  // Lane (g, t) holds head t's channels ch(m, g) (d0 + d1: hi + lo) and ch(m, g+8) (d2 + d3).
  if (t < NH) {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const int c0 = D == 128 ? 8 * g + m : 8 * g + 2 * m;
      const int c1 = D == 128 ? 8 * (g + 8) + m : 8 * g + 2 * m + 1;
      red[warp][t][c0] = acc[m][0] + acc[m][1];
      red[warp][t][c1] = acc[m][2] + acc[m][3];
    }
  }
  __syncthreads();
  for (int i = tid; i < NH * D; i += kThreads) {
    const int hh = i / D, d = i % D;
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[w][hh][d];
    ws_acc[(size_t(h0 + hh) * n_splits + split) * D + d] = fmaf(s, vinv_s[hh], pb_s[hh]);
  }
  if (tid < NH) {
    ws_ml[(size_t(h0 + tid) * n_splits + split) * 2 + 0] = m_s[tid];
    ws_ml[(size_t(h0 + tid) * n_splits + split) * 2 + 1] = l_s[tid];
  }
  finish_group<D, NH, kCombinePassTc>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters, &sc[0][0]);
}

// Heads per block: FP32 kernel up to 8, tensor-core kernel up to 4 (N = 8 MMA columns = 4 × (hi, lo)).
int heads_per_block(int gq, bool tc) {
  if (!tc && gq % 8 == 0) return 8;
  return gq % 4 == 0 ? 4 : gq % 2 == 0 ? 2 : 1;
}

template <int D, int NH, Hdr kOne>
void launch_split(const Kv4LayerCache& c, const Kv4DecodeArgs& a, const SplitPlan& plan, int n_splits, int z,
                  const SplitWorkspace& ws, cudaStream_t stream) {
  const dim3 grid(n_splits, c.n_kv_heads, z);
  decode_split_kernel<D, NH, kOne><<<grid, kThreads, 0, stream>>>(c, a, plan, n_splits, kv4_head_bytes(D, c.group),
                                                                   ws.ml, ws.acc, ws.counters);
  WKV_CHECK_LAUNCH();
}

template <int D, Hdr kOne>
void dispatch_nh(const Kv4LayerCache& c, const Kv4DecodeArgs& a, const SplitPlan& plan, int n_splits,
                 const SplitWorkspace& ws, cudaStream_t stream) {
  const int gq = a.n_heads / c.n_kv_heads;
  switch (heads_per_block(gq, false)) {
    case 8: launch_split<D, 8, kOne>(c, a, plan, n_splits, gq / 8, ws, stream); break;
    case 4: launch_split<D, 4, kOne>(c, a, plan, n_splits, gq / 4, ws, stream); break;
    case 2: launch_split<D, 2, kOne>(c, a, plan, n_splits, gq / 2, ws, stream); break;
    default: launch_split<D, 1, kOne>(c, a, plan, n_splits, gq, ws, stream); break;
  }
}

// Occupancy variant of the tensor-core kernel, read once per process from WKV_KV4_TC_OCC: "base" (U = 4, 128
// registers, 4 blocks per SM), "2x6" (U = 2, ≤ 80 registers: 6 blocks), "2x8" (U = 2, ≤ 64: 8 blocks); unset:
// 2x6 where one query head reads each KV head at D = 128 (LLaMA-2-7B), base elsewhere. H200, session 6
// (kernel bench, µs per layer, graph, H32/KV32 at 4K / 16K / 32K): base 27.7 / 51.0 / 87.1, 2x6 23.3 / 51.7 /
// 81.6, 2x8 22.4 / 48.8 / 87.1; wkv bench 7B w4kv4 decode at depth 0 / 32K: 2x6 330.9 / 193.7 t/s against
// base 314.4 / 181.6 (interleaved rounds). With GQA (H32/KV8) base is faster: 45.8 against 68.3 µs at 32K.
// (4x6, 80 registers with 240 bytes of spills, measured 119.9 µs at 32K and was dropped.)
enum class TcOcc { automatic, base, u2b6, u2b8 };

TcOcc tc_occupancy_variant() {
  static const TcOcc v = [] {
    const char* e = std::getenv("WKV_KV4_TC_OCC");
    const std::string s = e ? e : "";
    return s == "base" ? TcOcc::base : s == "2x6" ? TcOcc::u2b6 : s == "2x8" ? TcOcc::u2b8 : TcOcc::automatic;
  }();
  return v;
}

template <int D, int NH>
void launch_split_tc(const Kv4LayerCache& c, const Kv4DecodeArgs& a, const SplitPlan& plan, int n_splits,
                     const SplitWorkspace& ws, cudaStream_t stream) {
  const dim3 grid(n_splits, c.n_kv_heads, a.n_heads / c.n_kv_heads / NH);
  TcOcc v = tc_occupancy_variant();
  if (v == TcOcc::automatic) v = D == 128 && NH == 1 ? TcOcc::u2b6 : TcOcc::base;
  switch (v) {
    case TcOcc::u2b6:
      decode_split_tc_kernel<D, NH, 2, 6><<<grid, kThreads, 0, stream>>>(c, a, plan, n_splits, ws.ml, ws.acc, ws.counters);
      break;
    case TcOcc::u2b8:
      decode_split_tc_kernel<D, NH, 2, 8><<<grid, kThreads, 0, stream>>>(c, a, plan, n_splits, ws.ml, ws.acc, ws.counters);
      break;
    default:
      decode_split_tc_kernel<D, NH><<<grid, kThreads, 0, stream>>>(c, a, plan, n_splits, ws.ml, ws.acc, ws.counters);
  }
  WKV_CHECK_LAUNCH();
}

// Tensor-core kernel variant, read once per process from WKV_KV4_ATTN: "" (default: decode_split_stream_kernel,
// kv4_decode_attention_stream.cu: each warp streams its keys through all three steps with an online softmax,
// one merge per block) or "tc" (decode_split_tc_kernel: three block-wide phases; WKV_KV4_TC_OCC picks its
// occupancy variant). Same shapes, grid and partials, so the split plan and the fused combine are shared.
// H200, session 6 (kernel bench, µs per layer, graph, 4K / 16K / 32K): stream 22.8 / 44.8 / 75.7 against
// tc (2x6) 23.2 / 51.8 / 81.8 for H32/KV32, 20.7 / 33.2 / 40.6 against tc 22.6 / 37.1 / 45.6 for H32/KV8.
// "ring" / "ring3" run the streaming kernel's shared-memory ring variant with 4 / 3 slots per warp
// (decode_split_ring_kernel; kv4_decode_attention_stream.cu says why).
struct AttnVariant {
  bool stream = true;  // false: decode_split_tc_kernel
  int ring_slots = 0;  // streaming kernel: 0 = tiles in registers, 3 or 4 = the ring variant
};

AttnVariant attn_variant() {
  static const AttnVariant v = [] {
    const char* e = std::getenv("WKV_KV4_ATTN");
    const std::string s = e ? e : "";
    AttnVariant r;
    if (s == "tc") r.stream = false;
    if (s == "ring") r.ring_slots = 4;
    if (s == "ring3") r.ring_slots = 3;
    if (!s.empty() && s != "tc" && s != "ring" && s != "ring3" && s != "stream")
      std::fprintf(stderr, "WKV_KV4_ATTN=%s is not a variant (tc, ring, ring3); the streaming kernel runs\n", e);
    return r;
  }();
  return v;
}

// One launch: the split kernel, whose last block per group combines.
template <int D>
void dispatch_d(const Kv4LayerCache& c, const Kv4DecodeArgs& a, const SplitPlan& plan, int n_splits, bool tc,
                const SplitWorkspace& ws, cudaStream_t stream) {
  if (tc && attn_variant().stream) {
    launch_split_stream(D, heads_per_block(a.n_heads / c.n_kv_heads, true), attn_variant().ring_slots, c, a, plan,
                        n_splits, ws, stream);
  } else if (tc) {
    switch (heads_per_block(a.n_heads / c.n_kv_heads, true)) {
      case 4: launch_split_tc<D, 4>(c, a, plan, n_splits, ws, stream); break;
      case 2: launch_split_tc<D, 2>(c, a, plan, n_splits, ws, stream); break;
      default: launch_split_tc<D, 1>(c, a, plan, n_splits, ws, stream); break;
    }
  } else if (c.group == D) {
    dispatch_nh<D, Hdr::kRow>(c, a, plan, n_splits, ws, stream);
  } else if (c.group % 8 == 0) {
    dispatch_nh<D, Hdr::kWord>(c, a, plan, n_splits, ws, stream);
  } else {
    dispatch_nh<D, Hdr::kPair>(c, a, plan, n_splits, ws, stream);
  }
}

}  // namespace

size_t kv4_decode_counter_bytes(int n_heads) { return split_counter_bytes(n_heads); }

bool kv4_decode_attention_fuses_rope(const Kv4LayerCache& c, const Kv4DecodeArgs& a) {
  return a.poq && c.group == c.head_dim && kv4_decode_supports_head_dim(c.head_dim) &&
         device_limits().compute_major >= 8 && attn_variant().stream;
}

// Blocks per SM the automatic split plan aims for (the keys per split follow from n_cache: about
// n / (blocks · SMs / other grid dims), 64 … 512), read once per process from WKV_KV4_SPLIT_BLOCKS (1 … 64),
// default 2. H200, session 6, streaming kernel, wkv bench 7B w4kv4 decode at depth 0 / 4K / 16K / 32K (one
// round, same call): 8 blocks 344.0 / 318.3 / 256.4 / 203.5 t/s, 4: 354.3 / 329.0 / 255.9 / 203.7, 2: 361.4 /
// 326.2 / 257.2 / 203.4. Few keys per block leave each warp one or two 16-key tiles behind a fixed setup and
// merge; long contexts reach the 512-key cap either way.
static int split_blocks_per_sm() {
  static const int v = [] {
    const char* e = std::getenv("WKV_KV4_SPLIT_BLOCKS");
    const int n = e ? std::atoi(e) : 0;
    return n >= 1 && n <= 64 ? n : 2;
  }();
  return v;
}

size_t kv4_decode_workspace_bytes(int n_heads, int head_dim, int n_cache_max) {
  // Grid split counts are ≤ ceil(n_cache_max / 32) (chunks ≥ kMinChunk keys), and ≥ 1 (see below).
  const size_t splits = std::max<size_t>(1, (size_t(std::max(n_cache_max, 0)) + kMinChunk - 1) / kMinChunk);
  return split_counter_bytes(n_heads) +
         sizeof(float) * size_t(std::max(n_heads, 0)) * splits * (size_t(std::max(head_dim, 0)) + 2);
}

void kv4_decode_attention(const Kv4LayerCache& c, const Kv4DecodeArgs& a, void* workspace, size_t workspace_bytes,
                          cudaStream_t stream) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("kv4_decode_attention: " + m); };
  const bool dev_n = a.n_cache_dev != nullptr;
  // Graph path: n_cache_max bounds the device value and alone decides the launch configuration.
  const int n_max = dev_n ? a.n_cache_max : a.n_cache;
  if (n_max < 0) fail(dev_n ? "n_cache_max must be ≥ 0" : "n_cache must be ≥ 0");
  validate_kv4_cache(c, n_max, "kv4_decode_attention");
  const int D = c.head_dim;
  if (!kv4_decode_supports_head_dim(D)) fail("head_dim " + std::to_string(D) + " is not supported (64 or 128)");
  if (a.n_heads < 1 || a.n_heads % c.n_kv_heads != 0)
    fail("n_heads " + std::to_string(a.n_heads) + " must be a positive multiple of n_kv_heads " +
         std::to_string(c.n_kv_heads));
  if (!a.poq && n_max == 0)
    fail(dev_n ? "without POQ the current token must be in the cache (n_cache_max ≥ 1, device n_cache ≥ 1)"
               : "without POQ the current token must be in the cache (n_cache ≥ 1)");
  if (!a.q || !a.out) fail("q and out must be non-null device pointers");
  if (a.poq && (!a.k_cur || !a.v_cur)) fail("with POQ, k_cur and v_cur must be non-null device pointers");
  if (a.keys_per_split != 0 && (a.keys_per_split < kMinChunk || a.keys_per_split > kMaxChunk))
    fail("keys_per_split " + std::to_string(a.keys_per_split) + " must be 0 or in [32, 512]");
  if (a.rope_pos_dev) {
    if (!kv4_decode_attention_fuses_rope(c, a))
      fail(
          "rope_pos_dev (fused RoPE + append) needs POQ, group == head_dim on a device with tensor cores and "
          "the streaming kernel (WKV_KV4_ATTN unset, ring or ring3); got poq " +
          std::to_string(int(a.poq)) + ", group " + std::to_string(c.group) + ", head_dim " +
          std::to_string(D) + ": run kv4_rope_append_at first instead");
    if (!a.rope_cs || reinterpret_cast<uintptr_t>(a.rope_cs) % alignof(float) != 0)
      fail(
          "rope_cs (the position's cos/sin table, rope_table_at) must be a non-null, 4-byte aligned device "
          "pointer when rope_pos_dev is set");
  }
  for (int i = 0; i < 2; ++i)
    validate_l2_prefetch_region(a.prefetch[i], "kv4_decode_attention: prefetch[" + std::to_string(i) + "]: ");

  // Tensor-core kernel for one header per row (the default G = D) on sm_80+; the FP32 kernel otherwise.
  const bool tc = c.group == D && device_limits().compute_major >= 8;
  const int gq = a.n_heads / c.n_kv_heads;
  const int nh = heads_per_block(gq, tc);
  // Automatic plan: ~split_blocks_per_sm() blocks per SM over the grid's other dimensions (H_kv · gq/NH).
  const int64_t others = int64_t(c.n_kv_heads) * (gq / nh);
  const int64_t target = std::max<int64_t>(1, (split_blocks_per_sm() * int64_t(device_limits().sms) +
                                               others - 1) / others);
  SplitPlan plan{};
  plan.n_dev = a.n_cache_dev;
  plan.n_host = a.n_cache;
  plan.n_max = n_max;
  plan.target_splits = int(std::min<int64_t>(target, 1 << 20));
  plan.fixed_chunk = a.keys_per_split;
  // At least one block per group even when n_max = 0 (POQ, empty cache): that block combines k_cur/v_cur alone.
  const int n_splits = std::max(plan_grid_splits(plan), 1);

  const size_t counter_bytes = split_counter_bytes(a.n_heads);
  const size_t need = counter_bytes + sizeof(float) * size_t(a.n_heads) * size_t(n_splits) * size_t(D + 2);
  if (!workspace || workspace_bytes < need)
    fail("workspace of " + std::to_string(workspace_bytes) + " bytes is smaller than the " + std::to_string(need) +
         " needed (see kv4_decode_workspace_bytes)");
  if (reinterpret_cast<uintptr_t>(workspace) % alignof(float) != 0) fail("workspace must be 4-byte aligned");
  SplitWorkspace ws{};
  ws.counters = static_cast<unsigned int*>(workspace);
  ws.ml = reinterpret_cast<float*>(static_cast<char*>(workspace) + counter_bytes);
  ws.acc = ws.ml + size_t(a.n_heads) * n_splits * 2;
  if (D == 64)
    dispatch_d<64>(c, a, plan, n_splits, tc, ws, stream);
  else
    dispatch_d<128>(c, a, plan, n_splits, tc, ws, stream);
}

}  // namespace wkv::kernels
