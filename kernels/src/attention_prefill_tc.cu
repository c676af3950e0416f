// Tensor-core causal flash attention for prefill (FA2-style) over a KV4 or FP16 paged cache plus the chunk's
// full-precision rows. FP16 operands in shared memory / registers, FP32 accumulation and online softmax.
//
// Why mma.sync.m16n8k16 (inline PTX) rather than WMMA: the online softmax needs row-wise max / sum of the
// score tile and a rescale of the output accumulator per row. mma.sync's accumulator layout is documented
// (thread lane holds rows lane/4 and lane/4 + 8, columns 2·(lane%4) + {0,1} of each 16×8 tile), so both are
// done in registers with two quad shuffles, and the score accumulator re-packs directly into the A operand
// of the P·V product (no shared-memory round trip). WMMA fragments are opaque and would need one.
//
// Work decomposition. A "row" is one (token t, query head of KV head kvh's group) pair, row = t·gq + hg
// (gq = H / H_kv), so one K/V tile in shared memory serves the whole GQA group. Block = 4 warps = 64 rows of
// one KV head (blockIdx.x = kvh, blockIdx.y = row block, heaviest causal blocks launched first); warp w owns
// rows 16w … 16w+15 and keeps its Q tile in registers as m16n8k16 A fragments, pre-scaled by log2(e)/√D so
// the softmax uses exp2. Per key tile of kBN = 64 keys:
//   1. all 128 threads load K and V rows j0 … j0+63 into FP16 tiles [64][D+8] (the +8 halves = 16 bytes of
//      padding make the 8 row addresses of every ldmatrix phase hit distinct banks). Source per key row:
//      j < split → the cache (KV4: dequantized x̂ = (q·scale + min)·s + δ in FP32, then rounded; FP16: copied),
//      else the chunk row j − pos0 of k_full / v_full (FP32 rounded to FP16). Rows past jmax (the block's last
//      visible key) repeat row jmax: finite values whose probabilities are masked to 0.
//   2. S = Q·Kᵀ (ldmatrix non-transposed gives the col-major B fragment from row-major K), causal mask by
//      absolute position on diagonal tiles only, online softmax (running max m, per-thread partial sums l,
//      rescale α = 2^(m_old − m_new)), P rounded to FP16 as A fragments, O += P·V (ldmatrix.trans of V).
// Every active row sees key 0 in the first tile, so m is finite afterwards and 2^(m_old − m_new) never sees
// −∞ − (−∞). Warps whose rows all precede a tile skip its math (they still load and hit the barriers).
#include <cuda_fp16.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "attention_prefill_tc.h"
#include "cuda_check.h"
#include "kv4_device.cuh"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kBM = 64;        // rows per block (16 per warp)
constexpr int kBN = 64;        // keys per tile
constexpr int kPad = 8;        // halves of padding per shared tile row

enum class Src { kKv4, kKv4Grouped, kKv16 };  // kKv4: G % 8 == 0 (one header per 8-channel word)

struct TcArgs {
  Kv4LayerCache kv4;
  Kv16LayerCache kv16;
  size_t kv4_head_bytes;
  const float* q;       // [T][H·D]
  const float* k_full;  // [T][H_kv·D] (null when split ≥ pos0 + T)
  const float* v_full;
  float* out;           // [T][H·D]
  int H, Hkv, gq, T, pos0, n_rows;
  int split;            // keys j < split come from the cache, the others from the chunk rows j − pos0
  float q_scale;        // log2(e)/√D, folded into Q before rounding
};

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // lo in the low 16 bits
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ float fast_exp2(float x) {  // ex2.approx: 2^−∞ = +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Four 8×8 FP16 matrices; lanes 8i … 8i+7 give the row addresses of matrix i (16 contiguous bytes each).
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}

struct F8 {
  float4 a, b;
};

__device__ __forceinline__ uint4 pack8(const float x[8]) {
  return make_uint4(pack_half2(x[0], x[1]), pack_half2(x[2], x[3]), pack_half2(x[4], x[5]), pack_half2(x[6], x[7]));
}

// Loads kN rows through fetch(i) (global loads only) in batches of kBatch, then store(i, raw): all loads of
// a batch are in flight before the first conversion waits on one.
template <int kN, int kBatch, class Fetch, class Store>
__device__ __forceinline__ void staged(Fetch fetch, Store store) {
  using Raw = decltype(fetch(0));
#pragma unroll
  for (int i0 = 0; i0 < kN; i0 += kBatch) {
    Raw raw[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) raw[i] = fetch(i0 + i);
#pragma unroll
    for (int i = 0; i < kBatch; ++i) store(i0 + i, raw[i]);
  }
}

// Chunk row t (FP32), channels 8w … 8w+7 of KV head kvh. Rows are D floats at 16-byte-aligned offsets.
template <int D>
__device__ __forceinline__ F8 chunk_fetch(const float* full, int Hkv, int t, int kvh, int w) {
  const float4* p = reinterpret_cast<const float4*>(full + (size_t(t) * Hkv + kvh) * D + 8 * w);
  return F8{__ldg(p), __ldg(p + 1)};
}
__device__ __forceinline__ uint4 chunk_convert(const F8& f) {
  const float x[8] = {f.a.x, f.a.y, f.a.z, f.a.w, f.b.x, f.b.y, f.b.z, f.b.w};
  return pack8(x);
}

// KV4 (G % 8 == 0): the code word and the group header of channels 8w … 8w+7 of token j.
template <int D>
__device__ __forceinline__ uint2 kv4_fetch(const TcArgs& a, const uint8_t* pool, int j, int kvh, int w, int hdr_idx) {
  const uint8_t* row = kv4dev::row_ptr(pool, a.kv4, a.kv4_head_bytes, j, kvh);
  return make_uint2(__ldg(reinterpret_cast<const uint32_t*>(row) + w),
                    __ldg(reinterpret_cast<const uint32_t*>(row + D / 2) + hdr_idx));
}
// x̂ = (q·scale + min)·s + δ in FP32 (the order of kv4dev::word_smoothed and the CPU reference), then FP16.
__device__ __forceinline__ uint4 kv4_convert(uint2 raw, const float* sc, const float* dl) {
  const float scale = kv4dev::half_bits_to_float(raw.y & 0xFFFFu), mn = kv4dev::half_bits_to_float(raw.y >> 16);
  float x[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) x[k] = (kv4dev::code_to_float(raw.x, k) * scale + mn) * sc[k] + dl[k];
  return pack8(x);
}

// The channels 8w … 8w+7 of token j for the cache source (any G), as 8 FP16 values.
template <int D, Src kSrc>
__device__ __forceinline__ uint4 cache_word(const TcArgs& a, bool is_v, int j, int kvh, int w, int hdr_idx,
                                            const float* sc, const float* dl) {
  if constexpr (kSrc == Src::kKv16) {
    const Kv16LayerCache& c = a.kv16;
    const uint16_t* pool = is_v ? c.v_pool : c.k_pool;
    const int page = __ldg(c.page_table + j / c.page_size);
    return __ldg(reinterpret_cast<const uint4*>(
        pool + Kv16LayerCache::offset(page, kvh, j % c.page_size, c.n_kv_heads, c.page_size, D) + 8 * w));
  } else if constexpr (kSrc == Src::kKv4) {
    return kv4_convert(kv4_fetch<D>(a, is_v ? a.kv4.v_pool : a.kv4.k_pool, j, kvh, w, hdr_idx), sc, dl);
  } else {
    const uint8_t* row = kv4dev::row_ptr(is_v ? a.kv4.v_pool : a.kv4.k_pool, a.kv4, a.kv4_head_bytes, j, kvh);
    float x[8];
    kv4dev::word_smoothed<false>(row, w, D, a.kv4.group, x);
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = x[k] * sc[k] + dl[k];
    return pack8(x);
  }
}

// Fills tile[kBN][D + kPad] with the keys (is_v = false) or values of tokens j0 … j0+kBN−1 (clamped to jmax)
// of KV head kvh. Thread mapping: word w = tid % (D/8) (8 channels, one 16-byte shared store), rows
// tid / (D/8) + kStep·i. smooth = {scale, delta} [2][D] of this head (identity for FP16 / RTN).
template <int D, Src kSrc>
__device__ __forceinline__ void load_tile(const TcArgs& a, bool is_v, int kvh, int j0, int jmax,
                                          uint16_t (*tile)[D + kPad], const float (*smooth)[D]) {
  constexpr int W = D / 8, kStep = kThreads / W, kPasses = kBN / kStep;
  const int w = threadIdx.x % W, r0 = threadIdx.x / W;
  const int hdr_idx = kSrc == Src::kKv4 ? (8 * w) / a.kv4.group : 0;
  float sc[8], dl[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    sc[k] = smooth[0][8 * w + k];
    dl[k] = smooth[1][8 * w + k];
  }
  auto row_j = [&](int i) { return min(j0 + r0 + kStep * i, jmax); };
  auto put = [&](int i, uint4 v) { *reinterpret_cast<uint4*>(&tile[r0 + kStep * i][8 * w]) = v; };
  const float* full = is_v ? a.v_full : a.k_full;
  const int last = min(j0 + kBN - 1, jmax);
  if (last < a.split) {  // the whole tile from the cache (the common case)
    if constexpr (kSrc == Src::kKv4) {
      const uint8_t* pool = is_v ? a.kv4.v_pool : a.kv4.k_pool;
      staged<kPasses, 4>([&](int i) { return kv4_fetch<D>(a, pool, row_j(i), kvh, w, hdr_idx); },
                               [&](int i, uint2 raw) { put(i, kv4_convert(raw, sc, dl)); });
    } else if constexpr (kSrc == Src::kKv16) {
      staged<kPasses, kPasses>([&](int i) { return cache_word<D, kSrc>(a, is_v, row_j(i), kvh, w, 0, sc, dl); },
                               [&](int i, uint4 v) { put(i, v); });
    } else {
#pragma unroll
      for (int i = 0; i < kPasses; ++i) put(i, cache_word<D, kSrc>(a, is_v, row_j(i), kvh, w, 0, sc, dl));
    }
  } else if (j0 >= a.split) {  // the whole tile from the chunk
    staged<kPasses, 4>([&](int i) { return chunk_fetch<D>(full, a.Hkv, row_j(i) - a.pos0, kvh, w); },
                       [&](int i, const F8& f) { put(i, chunk_convert(f)); });
  } else {  // the tile straddles split: per-row source (at most one such tile per block)
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int j = row_j(i);
      put(i, j < a.split ? cache_word<D, kSrc>(a, is_v, j, kvh, w, hdr_idx, sc, dl)
                         : chunk_convert(chunk_fetch<D>(full, a.Hkv, j - a.pos0, kvh, w)));
    }
  }
}

// Dynamic shared memory: Q [kBM][D+kPad], K and V [kBN][D+kPad] FP16, then the smoothing table [4][D] FP32
// (k scale, k delta, v scale, v delta of this KV head). 54 KB at D = 128: 3 blocks per SM.
template <int D>
constexpr size_t smem_bytes() {
  return sizeof(uint16_t) * (kBM + 2 * kBN) * (D + kPad) + sizeof(float) * 4 * D;
}

template <int D, Src kSrc>
__global__ void __launch_bounds__(kThreads, 3) prefill_tc_kernel(const TcArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  using Row = uint16_t[D + kPad];
  Row* qs = reinterpret_cast<Row*>(smem);
  Row* ks = qs + kBM;
  Row* vs = ks + kBN;
  float(*smooth)[D] = reinterpret_cast<float(*)[D]>(vs + kBN);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tq = lane & 3;
  const int kvh = blockIdx.x;
  const int row0 = (gridDim.y - 1 - blockIdx.y) * kBM;  // the longest (last) row blocks are scheduled first
  const int gq = a.gq, n_rows = a.n_rows;

  if constexpr (kSrc != Src::kKv16) {
    for (int i = tid; i < D; i += kThreads) {
      const size_t c = size_t(kvh) * D + i;
      smooth[0][i] = a.kv4.k_scale ? a.kv4.k_scale[c] : 1.0f;
      smooth[1][i] = a.kv4.k_delta ? a.kv4.k_delta[c] : 0.0f;
      smooth[2][i] = a.kv4.v_scale ? a.kv4.v_scale[c] : 1.0f;
      smooth[3][i] = a.kv4.v_delta ? a.kv4.v_delta[c] : 0.0f;
    }
  } else {
    for (int i = tid; i < D; i += kThreads) {
      smooth[0][i] = smooth[2][i] = 1.0f;
      smooth[1][i] = smooth[3][i] = 0.0f;
    }
  }

  // Q tile, scaled and rounded to FP16 (thread: 8 channels of rows tid / (D/8) + kStep·i). Rows past n_rows
  // are q = 0 and act as the last token (finite softmax, never written). Keeping Q in shared memory rather
  // than as register fragments frees the 32 registers that keep 3 blocks per SM without spills.
  {
    constexpr int W = D / 8, kStep = kThreads / W;
    const int w = tid % W;
#pragma unroll
    for (int r = tid / W; r < kBM; r += kStep) {
      const int gr = row0 + r;
      float x[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      if (gr < n_rows) {
        const float4* src = reinterpret_cast<const float4*>(a.q + size_t(gr / gq) * a.H * D +
                                                            size_t(kvh * gq + gr % gq) * D + 8 * w);
        const float4 u = __ldg(src), v = __ldg(src + 1);
        x[0] = u.x, x[1] = u.y, x[2] = u.z, x[3] = u.w, x[4] = v.x, x[5] = v.y, x[6] = v.z, x[7] = v.w;
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) x[k] *= a.q_scale;
      *reinterpret_cast<uint4*>(&qs[r][8 * w]) = pack8(x);
    }
  }

  // This thread's two rows: g and g + 8 of the warp's 16.
  const int wrow0 = row0 + 16 * warp;
  int p_abs[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int gr = wrow0 + g + 8 * h;
    p_abs[h] = a.pos0 + (gr < n_rows ? gr / gq : a.T - 1);
  }
  const bool warp_active = wrow0 < n_rows;
  const int warp_pmin = a.pos0 + min(wrow0, n_rows - 1) / gq;
  const int warp_pmax = warp_active ? a.pos0 + min(wrow0 + 15, n_rows - 1) / gq : -1;
  const int jmax = a.pos0 + (min(row0 + kBM, n_rows) - 1) / gq;

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int mat = lane >> 3, mrow = lane & 7;  // ldmatrix: which 8×8 matrix this lane addresses, and its row

  for (int j0 = 0; j0 <= jmax; j0 += kBN) {
    __syncthreads();  // Q and the smoothing table are written / the previous tile's ldmatrix reads are done
    load_tile<D, kSrc>(a, false, kvh, j0, jmax, ks, &smooth[0]);
    load_tile<D, kSrc>(a, true, kvh, j0, jmax, vs, &smooth[2]);
    __syncthreads();
    if (j0 > warp_pmax) continue;  // warp-uniform: no key of this tile is visible to the warp's rows

    // S = Q·Kᵀ: s[nt] is keys j0 + 8nt … +7. Q's A fragment of channels 16kc … +15 by ldmatrix: lanes 0–15
    // address rows 0–15 at the low 8 channels, lanes 16–31 the same rows at the high 8 → regs {row g, lo},
    // {row g+8, lo}, {row g, hi}, {row g+8, hi}. K: matrices (keys 16np+0..7, ch lo), (same, ch hi),
    // (keys 16np+8..15, ch lo), (same, ch hi) → B fragments {b0,b1} of n-tiles 2np and 2np+1.
    float s[kBN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
      uint32_t qa[4];
      ldsm_x4(qa, &qs[16 * warp + (lane & 15)][16 * kc + 8 * (lane >> 4)]);
#pragma unroll
      for (int np = 0; np < kBN / 16; ++np) {
        uint32_t b[4];
        ldsm_x4(b, &ks[16 * np + 8 * (mat >> 1) + mrow][16 * kc + 8 * (mat & 1)]);
        mma_m16n8k16(s[2 * np], qa, b[0], b[1]);
        mma_m16n8k16(s[2 * np + 1], qa, b[2], b[3]);
      }
    }
    if (j0 + kBN - 1 > warp_pmin) {  // diagonal tile: mask keys after each row's absolute position
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (j0 + 8 * nt + 2 * tq + (e & 1) > p_abs[e >> 1]) s[nt][e] = -INFINITY;
    }

    // Online softmax; a row's 64 scores are spread over the 4 lanes of a quad.
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
      mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      alpha[h] = fast_exp2(m[h] - mx[h]);  // first tile: 2^(−∞) = 0
      m[h] = mx[h];
      l[h] *= alpha[h];
    }
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[i][0] *= alpha[0];
      o[i][1] *= alpha[0];
      o[i][2] *= alpha[1];
      o[i][3] *= alpha[1];
    }
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = fast_exp2(s[nt][e] - mx[e >> 1]);
        l[e >> 1] += s[nt][e];
      }

    // O += P·V: the accumulators of n-tiles 2kk, 2kk+1 are the A fragment of keys 16kk … 16kk+15.
    // ldmatrix.trans matrices: (keys lo, ch 16dp..+7), (keys hi, same), (keys lo, ch 16dp+8..), (keys hi, same).
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t pa[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
                              pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldsm_x4_trans(b, &vs[16 * kk + 8 * (mat & 1) + mrow][16 * dp + 8 * (mat >> 1)]);
        mma_m16n8k16(o[2 * dp], pa, b[0], b[1]);
        mma_m16n8k16(o[2 * dp + 1], pa, b[2], b[3]);
      }
    }
  }

  if (!warp_active) return;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int gr = wrow0 + g + 8 * h;
    if (gr >= n_rows) continue;
    const float inv_l = 1.0f / l[h];
    float* out = a.out + size_t(gr / gq) * a.H * D + size_t(kvh * gq + gr % gq) * D;
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
      *reinterpret_cast<float2*>(out + 8 * i + 2 * tq) = make_float2(o[i][2 * h] * inv_l, o[i][2 * h + 1] * inv_l);
  }
}

int row_blocks(int T, int gq) { return int((int64_t(T) * gq + kBM - 1) / kBM); }

TcArgs make_args(const PrefillAttentionArgs& p, int Hkv, int D, int split) {
  TcArgs a{};
  a.q = p.q;
  a.k_full = p.k_full;
  a.v_full = p.v_full;
  a.out = p.out;
  a.H = p.n_heads;
  a.Hkv = Hkv;
  a.gq = p.n_heads / Hkv;
  a.T = p.T;
  a.pos0 = p.pos0;
  a.n_rows = p.T * a.gq;
  a.split = split;
  a.q_scale = 1.4426950408889634f / sqrtf(float(D));
  return a;
}

template <int D, Src kSrc>
void launch(const TcArgs& a, cudaStream_t stream) {
  constexpr size_t kSmem = smem_bytes<D>();
  // Above 48 KB of dynamic shared memory needs an opt-in, once per instantiation (one device per process).
  static const bool attr_set = [] {
    CUDA_CHECK(cudaFuncSetAttribute(prefill_tc_kernel<D, kSrc>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kSmem)));
    return true;
  }();
  (void)attr_set;
  const dim3 grid(a.Hkv, row_blocks(a.T, a.gq));
  prefill_tc_kernel<D, kSrc><<<grid, kThreads, kSmem, stream>>>(a);
  WKV_CHECK_LAUNCH();
}

template <Src kSrc>
void launch_d(const TcArgs& a, int D, cudaStream_t stream) {
  if (D == 64)
    launch<64, kSrc>(a, stream);
  else
    launch<128, kSrc>(a, stream);
}

}  // namespace

bool prefill_tc_supported(const Kv4LayerCache& c, const PrefillAttentionArgs& a) {
  const int D = c.head_dim;
  if (D != 64 && D != 128) return false;
  if (a.poq_block != 0 && a.poq_block < a.T) return false;  // token-level / sub-chunk POQ: FP32 kernel
  if (!aligned16(a.q) || !aligned16(a.out)) return false;
  if (a.poq_block != 0 && (!aligned16(a.k_full) || !aligned16(a.v_full))) return false;
  if (int64_t(a.T) * (a.n_heads / c.n_kv_heads) > int64_t(kBM) * 65535) return false;  // grid.y limit
  return true;
}

void prefill_tc_kv4(const Kv4LayerCache& c, const PrefillAttentionArgs& p, cudaStream_t stream) {
  // poq_block == 0: every visible key from the cache; poq_block ≥ T: keys j < pos0 from the cache.
  TcArgs a = make_args(p, c.n_kv_heads, c.head_dim, p.poq_block == 0 ? INT_MAX : p.pos0);
  a.kv4 = c;
  a.kv4_head_bytes = kv4_head_bytes(c.head_dim, c.group);
  if (c.group % 8 == 0)
    launch_d<Src::kKv4>(a, c.head_dim, stream);
  else
    launch_d<Src::kKv4Grouped>(a, c.head_dim, stream);
}

void attention_prefill_kv16(const Kv16LayerCache& c, const PrefillAttentionArgs& p, cudaStream_t stream) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("attention_prefill_kv16: " + m); };
  if (p.T < 0 || p.pos0 < 0) fail("T and pos0 must be ≥ 0");
  if (p.T == 0) return;
  // Cache checks (the layout contract of kv16_cache.h), done here so this file stands alone.
  if (!c.k_pool || !c.v_pool || !c.page_table) fail("cache pools and page table must be non-null");
  if (c.n_pages < 1 || c.page_size < 1 || c.n_kv_heads < 1) fail("cache n_pages, page_size, n_kv_heads must be ≥ 1");
  const int D = c.head_dim;
  if (D != 64 && D != 128) fail("head_dim " + std::to_string(D) + " is not supported (64 or 128)");
  if (int64_t(p.pos0) + p.T > int64_t(c.n_pages) * c.page_size)
    fail("pos0 + T = " + std::to_string(int64_t(p.pos0) + p.T) + " exceeds the cache capacity " +
         std::to_string(int64_t(c.n_pages) * c.page_size));
  if (!aligned16(c.k_pool) || !aligned16(c.v_pool)) fail("cache pools must be 16-byte aligned");
  if (p.n_heads < 1 || p.n_heads % c.n_kv_heads != 0)
    fail("n_heads " + std::to_string(p.n_heads) + " must be a positive multiple of n_kv_heads " +
         std::to_string(c.n_kv_heads));
  if (!p.q || !p.out || !p.k_full || !p.v_full) fail("q, k_full, v_full and out must be non-null device pointers");
  if (!aligned16(p.q) || !aligned16(p.out) || !aligned16(p.k_full) || !aligned16(p.v_full))
    fail("q, k_full, v_full and out must be 16-byte aligned");
  if (int64_t(p.T) * (p.n_heads / c.n_kv_heads) > int64_t(kBM) * 65535) fail("T · H / H_kv is too large");
  TcArgs a = make_args(p, c.n_kv_heads, D, p.pos0);
  a.kv16 = c;
  launch_d<Src::kKv16>(a, D, stream);
}

}  // namespace wkv::kernels
