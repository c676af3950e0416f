// Streaming KV4 decode attention on tensor cores, the default split kernel since session 6 (WKV_KV4_ATTN=tc
// runs the former one, decode_split_tc_kernel in kv4_decode_attention.cu, whose file comment describes the
// split plan, the smoothing and the fused combine that both share).
//
// Why: Nsight Compute on decode_split_tc_kernel (docs/kernel-notes.md, session 5) found it latency-bound:
// 25% occupancy (128 registers × 128 threads), 31% of the stall cycles at the block barriers between its
// three phases (scores / softmax / V), 39% of HBM bandwidth at 32K keys and 15% at 4K. Each phase issues its
// loads in a burst and then every warp waits for the slowest. Here each warp streams its own keys through all
// three steps, one 16-key tile at a time, with the next tile's K and V words in flight while the current tile
// is computed, and the warps meet once, at the end, to merge.
//
// Arithmetic (unchanged from the tensor-core kernel): codes unpacked to exact FP16 (code − 8); the FP32 side
// of each MMA (q' for the scores, the softmax weights for V) split into two FP16 columns hi + lo with a
// power-of-two prescale, FP32 accumulation. With one header {scale, min} per row and b = min + 8·scale:
//   score_j = scale_j·Σ_c q'_c (code_jc − 8) + b_j·Σ_c q'_c + C        (q' = q·s_K/√D, C = Σ q·δ_K/√D)
//   Σ_j p_j x̃_jc = Σ_j (p_j·vscale_j)(code_jc − 8) + Σ_j p_j vb_j
// The partial written per (query head, split) is the one of the other split kernels: m = the split's score
// maximum, l = Σ e^{score − m}, acc[D] = Σ e^{score − m}·x̃ (smoothed domain; the combine applies s_V, δ_V
// and, with POQ, adds the current token's full-precision k, v).
//
// Block (split, kvh, z): 4 warps, NH ≤ 4 query heads sharing KV head kvh (heads h0 … h0 + NH − 1). The
// split's keys [j0, j0 + n) are cut into n_tiles = ceil(n / 16) tiles; warp w takes tiles w, w + 4, w + 8, …
// (the four warps read neighbouring tiles at the same time). Lane = 4g + t (g = lane / 4, t = lane % 4).
//
// Per tile, registers of lane (g, t) (StreamTile; two sets, the next tile's loading while this one computes):
//   K words   k[0][i], k[1][i] = code word 4i + t (i < D/32) of keys g and g + 8; kh[0], kh[1] their headers.
//   V headers vh[0], vh[1] of keys g and g + 8 (the weights are formed in the score layout).
//   V words   v[kk][i] = code word g + 8i (i < D/64) of key 2t + (kk & 1) + 8·(kk >> 1), kk = 0 … 3, i.e. of
//             keys 2t, 2t + 1, 2t + 8, 2t + 9.
// D = 128: 20 words per tile per lane (8 K + 2 K headers + 8 V + 2 V headers), 2.2 KB per warp and tile.
//
// Step 1, scores (mma.m16n8k16, M = 16 keys, N = 8 columns, K = 16 channels per step s = 2i + e):
//   A: rows g, g + 8 = keys g, g + 8 of the tile; A column pair (2t, 2t+1) = channels (8w + 2e, 8w + 2e + 4),
//      pair (2t+8, 2t+9) = channels (8w + 2e + 1, 8w + 2e + 5), w = 4i + t: exactly decode_word_f16's
//      pairs r[2e], r[2e + 1] of word w (the channel order inside a step is a permutation that B follows).
//   B (qf, fixed for the block): column g = (head g/2, term g%2: 0 = hi, 1 = lo of q'·2^kq), rows 2t, 2t+1
//      (b0) and 2t+8, 2t+9 (b1) = q' at the channels above; zero for heads ≥ NH.
//   D: lane (g, t) gets keys g (d0 hi, d1 lo) and g + 8 (d2, d3) of head t: score = scale·2^−kq·(hi + lo)
//      + b·Σq' + C; keys ≥ n (the last tile's padding, whose rows repeat key n − 1) are −inf.
// Step 2, online softmax per warp and head (lane (g, t) holds head t; its m, K, α are uniform over g):
//   tile max over g (shuffles xor 4, 8, 16); m' = max(m, tile max), α = e^{m − m'} (0 on the first tile);
//   p = e^{score − m'}; l ← α·l + Σp and pb ← α·pb + Σ p·vb per lane (summed over g at the end);
//   w = p·vscale, prescaled by 2^K' (K' below) and split into FP16 hi, lo.
// Step 3, V (mma.m16n8k16, M = 16 channels, N = 8 columns, K = 16 keys of the tile):
//   B: column g = (head g/2, term g%2); b0 = weights of keys 2t, 2t+1, b1 = keys 2t+8, 2t+9. Lane (g, t)
//      holds them in the score layout for keys g, g + 8 of head t, so lane (g', t') reads lanes
//      (2t', g'/2) and (2t'+1, g'/2) (4 shuffles: hi and lo of both keys each, keys j and j + 8 packed in one
//      register) and keeps term g'%2: b0 = (w_2t', w_2t'+1), b1 = (w_2t'+8, w_2t'+9).
//   A (channel tile mt): D = 128: row g = channel 8g + mt (word g), row g + 8 = channel 8(g + 8) + mt
//      (word g + 8); D = 64: row g = channel 8g + 2mt, row g + 8 = 8g + 2mt + 1 (word g). Columns = keys
//      2t, 2t+1 (a0: row g, a1: row g+8) and 2t+8, 2t+9 (a2, a3): decode_pair_f16 of the same word of two
//      keys gives exactly these FP16 pairs.
//   D: acc[mt] of lane (g, t) = head t, channels ch(mt, g) (d0 hi, d1 lo) and ch(mt, g + 8) (d2, d3).
// The accumulators live in the prescaled domain of the warp's exponent K (per head): before a tile's MMAs
// they are multiplied by α·2^(K' − K). K' is the tile's own prescale (max |w|·2^K' ∈ [2^13, 2^14), so its
// hi and lo stay normal FP16) but may rise above K only by as much as α shrank the old contents
// (K' ≤ K + 1 − e, α ∈ [2^(e−1), 2^e)): a tile of tiny weights after large ones must not scale the old sums
// up by 2^80 and overflow FP32. Weights far below 2^K'·max lose relative precision, not absolute: their share
// of the output is below FP32 rounding.
// Merge (the block's one barrier after the setup): warp w stores m_w, l_w and acc_w·2^−K_w + pb_w per head
// and channel to shared memory; then thread (head, d) forms M = max m_w, acc = Σ e^{m_w − M}·acc_w[d],
// l = Σ e^{m_w − M} l_w (a warp without tiles has m = −inf: weight 0) and writes the partial; then the
// fused combine (finish_group) as in the other kernels. The combine's scratch reuses the merge buffer.
//
// Registers (D = 128): two tile sets 40, qf 16, accumulators 32, softmax state and addresses ~15. ptxas -v
// (sm_90, bound 4 blocks per SM): D = 128 uses 128 for NH = 1, 2, 4, D = 64 96 / 99 / 96 (113 for NH = 4
// before session 7), no spills; static shared memory 4.6 / 7.3 / 12.5 KB (D = 128), 3.4 / 4.7 / 7.4 KB
// (D = 64). So 16 warps per SM, as the default kernel, each with one tile (2.2 KB at D = 128) in flight while
// it computes the previous one.
#include <cuda_fp16.h>

#include <cmath>

#include "cuda_check.h"
#include "kernel_util.h"
#include "kv4_decode_split.cuh"
#include "l2_prefetch.cuh"

namespace wkv::kernels::kv4split {

namespace {

// One tile's code and header words of lane (g, t) (see the file comment).
template <int D>
struct StreamTile {
  static constexpr int KW = D / 32, VW = D / 64;
  uint32_t k[2][KW];   // word 4i + t of keys g, g + 8
  uint32_t kh[2];      // K headers of keys g, g + 8
  uint32_t vh[2];      // V headers of keys g, g + 8
  uint32_t v[4][VW];   // word g + 8i of keys 2t, 2t + 1, 2t + 8, 2t + 9
};

// Issues the loads of the tile whose 16 row indices start at `rows` (shared memory).
template <int D>
__device__ __forceinline__ void load_tile(StreamTile<D>& b, const uint8_t* __restrict__ kpool,
                                          const uint8_t* __restrict__ vpool, const uint32_t* rows, int g,
                                          int t) {
  constexpr int HB = D / 2 + 4;  // row bytes with one header (G = D)
  const size_t oa = size_t(rows[g]) * HB, ob = size_t(rows[g + 8]) * HB;
#pragma unroll
  for (int i = 0; i < StreamTile<D>::KW; ++i) {
    b.k[0][i] = ldg_u32(kpool + oa + 4 * (4 * i + t));
    b.k[1][i] = ldg_u32(kpool + ob + 4 * (4 * i + t));
  }
  b.kh[0] = ldg_u32(kpool + oa + D / 2);
  b.kh[1] = ldg_u32(kpool + ob + D / 2);
  b.vh[0] = ldg_u32(vpool + oa + D / 2);
  b.vh[1] = ldg_u32(vpool + ob + D / 2);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint8_t* r = vpool + size_t(rows[2 * t + (kk & 1) + 8 * (kk >> 1)]) * HB;
#pragma unroll
    for (int i = 0; i < StreamTile<D>::VW; ++i) b.v[kk][i] = ldg_u32(r + 4 * (g + 8 * i));
  }
}

// A warp's running state for head t of lane (g, t): score max m, per-lane Σp (l) and Σ p·vb (pb), the
// accumulators' exponent K and the accumulators acc[mt] (prescaled by 2^K, columns hi, lo).
template <int D>
struct StreamState {
  static constexpr int MT = D / 16;
  float m, l, pb;
  int K;
  float acc[MT][4];
};

// What lane (g, t) keeps of q' for step 1: its B fragments qf and, for head min(t, NH − 1), qi = 2^−kq,
// qs = Σq' and cs = C (lanes t ≥ NH compute a head of zero columns with head NH − 1's constants: finite,
// never stored).
template <int D>
struct LaneQ {
  uint32_t qf[D / 16][2];
  float qi, qs, cs;
};

// Steps 1–3 of the file comment for the tile at split-relative key jt (n keys in the split).
template <int D>
__device__ __forceinline__ void compute_tile(const StreamTile<D>& b, const LaneQ<D>& q, int jt, int n, int g, int t,
                                             StreamState<D>& st) {
  const auto& qf = q.qf;
  const float qi = q.qi, qs = q.qs, cs = q.cs;
  constexpr int KW = D / 32, MT = D / 16;
  // Step 1: scores of keys g, g + 8 for head t.
  float sa[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int i = 0; i < KW; ++i) {
    uint32_t ra4[4], rb4[4];
    decode_word_f16(b.k[0][i], ra4);
    decode_word_f16(b.k[1][i], rb4);
    mma_m16n8k16(sa, ra4[0], rb4[0], ra4[1], rb4[1], qf[2 * i][0], qf[2 * i][1]);
    mma_m16n8k16(sa, ra4[2], rb4[2], ra4[3], rb4[3], qf[2 * i + 1][0], qf[2 * i + 1][1]);
  }
  // Keys outside [0, n) of the split (the stream kernel's padding after the last key; the ring kernel's tiles
  // also start before the split) get score −inf and V header {0, 0}: their rows may hold anything, even NaN
  // bits (cache rows past n_cache), so they are selected away, never multiplied by a zero weight.
  const int ja = jt + g, jb = ja + 8;
  const bool oka = unsigned(ja) < unsigned(n), okb = unsigned(jb) < unsigned(n);
  const float2 afa = header_affine(b.kh[0]), afb = header_affine(b.kh[1]);
  const float s0 = oka ? fmaf(afa.x * qi, sa[0] + sa[1], fmaf(afa.y, qs, cs)) : -INFINITY;
  const float s1 = okb ? fmaf(afb.x * qi, sa[2] + sa[3], fmaf(afb.y, qs, cs)) : -INFINITY;

  // Step 2: online softmax (every tile holds at least one key of the split, so the tile max is finite).
  float tmax = fmaxf(s0, s1);
  tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 4));
  tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 8));
  tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 16));
  const float m_new = fmaxf(st.m, tmax);
  const float alpha = expf(st.m - m_new);  // ≤ 1; 0 on the warp's first tile (m = −inf)
  const float p0 = expf(s0 - m_new), p1 = expf(s1 - m_new);
  const float2 va = oka ? header_affine(b.vh[0]) : make_float2(0.0f, 0.0f);
  const float2 vb = okb ? header_affine(b.vh[1]) : make_float2(0.0f, 0.0f);
  st.l = fmaf(st.l, alpha, p0 + p1);
  st.pb = fmaf(st.pb, alpha, fmaf(p0, va.y, p1 * vb.y));
  const float w0 = p0 * va.x, w1 = p1 * vb.x;
  float wm = fmaxf(fabsf(w0), fabsf(w1));
  wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, 4));
  wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, 8));
  wm = fmaxf(wm, __shfl_xor_sync(0xffffffffu, wm, 16));
  // α = f·2^e_a with f ∈ [0.5, 1) (e_a = 1 for α = 1; α = 0 reads as e_a = −126, so K' = the tile's own).
  const int e_a = int((__float_as_uint(alpha) >> 23) & 0xFFu) - 126;
  const int k_new = min(prescale_exponent(wm), st.K + 1 - e_a);
  // k_new − K < −126 only when the old sums are ≥ 2^126 below the new weights (the clamp's error is far below
  // FP32 rounding of the result); > 127 only for α < 2^−126.
  const float f = alpha * pow2f(min(max(k_new - st.K, -126), 127));
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 4; ++r) st.acc[mt][r] *= f;
  st.m = m_new;
  st.K = k_new;

  // Weights → B fragments. Source lane (g, t) packs (key g: low half, key g + 8: high half) of hi and of lo.
  const float mul = pow2f(k_new);
  const float x0 = w0 * mul, x1 = w1 * mul;
  const __half h0 = __float2half_rn(x0), h1 = __float2half_rn(x1);
  const __half l0 = __float2half_rn(x0 - __half2float(h0)), l1 = __float2half_rn(x1 - __half2float(h1));
  const uint32_t p_hi = uint32_t(__half_as_ushort(h0)) | (uint32_t(__half_as_ushort(h1)) << 16);
  const uint32_t p_lo = uint32_t(__half_as_ushort(l0)) | (uint32_t(__half_as_ushort(l1)) << 16);
  // Destination lane (g, t) = column g (head g/2, term g%2), keys 2t, 2t+1, 2t+8, 2t+9: sources
  // (g_s, t_s) = (2t, g/2) → lane 8t + g/2, and (2t + 1, g/2) → lane 8t + 4 + g/2.
  const int src_a = 8 * t + (g >> 1), src_b = src_a + 4;
  const uint32_t a_hi = __shfl_sync(0xffffffffu, p_hi, src_a), a_lo = __shfl_sync(0xffffffffu, p_lo, src_a);
  const uint32_t b_hi = __shfl_sync(0xffffffffu, p_hi, src_b), b_lo = __shfl_sync(0xffffffffu, p_lo, src_b);
  const uint32_t xa = (g & 1) ? a_lo : a_hi;  // (w_2t, w_2t+8)
  const uint32_t xb = (g & 1) ? b_lo : b_hi;  // (w_2t+1, w_2t+9)
  const uint32_t b0 = __byte_perm(xa, xb, 0x5410), b1 = __byte_perm(xa, xb, 0x7632);

  // Step 3: acc[mt] += codes(channels of tile mt × keys) · weights.
  constexpr int VW = D / 64;
  uint32_t pab[VW][8], pcd[VW][8];
#pragma unroll
  for (int i = 0; i < VW; ++i) {
    decode_pair_f16(b.v[0][i], b.v[1][i], pab[i]);  // keys 2t, 2t + 1
    decode_pair_f16(b.v[2][i], b.v[3][i], pcd[i]);  // keys 2t + 8, 2t + 9
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    if constexpr (D == 128)
      mma_m16n8k16(st.acc[mt], pab[0][mt], pab[1][mt], pcd[0][mt], pcd[1][mt], b0, b1);
    else
      mma_m16n8k16(st.acc[mt], pab[0][2 * mt], pab[0][2 * mt + 1], pcd[0][2 * mt], pcd[0][2 * mt + 1], b0,
                   b1);
  }
}

// Blocks per SM the register allocation must allow: 4 → ≤ 128 registers (ptxas -v, sm_90: D = 128 uses all
// 128 without spills; 5 blocks (≤ 96) spill ~150 bytes).
constexpr int kStreamMinBlocks = 4;

// The block's shared state besides the tiles: q' of its NH heads with their constants (setup), then each
// warp's merged sums and (m, l) (merge; red is the fused combine's scratch afterwards).
template <int D, int NH>
struct BlockShared {
  static_assert(D == 64 || D == 128, "tensor-core path: D ∈ {64, 128}");
  static_assert(NH >= 1 && NH <= 4 && NH <= kWarps, "N = 8 columns hold 4 heads × (hi, lo); a warp per head");
  static_assert(kWarps * D >= kCombineTile + D / 32, "the combine's scratch fits in red");
  float q[NH][D];  // q' = q·s_K/√D
  float qsum[NH], cst[NH], qinv[NH], qmul[NH];
  float red[kWarps][NH][D];  // per-warp acc·2^−K + pb
  float wml[kWarps][NH][2];  // per-warp m, l
};

// q' of head `warp` (warps 0 … NH − 1), its Σq', max |q'| (→ prescale 2^kq) and C. With the fused RoPE
// (a.rope_pos_dev) q is read before RoPE and rotated here. The caller synchronizes the block before reading
// sh.
template <int D, int NH>
__device__ __forceinline__ void setup_q(const Kv4LayerCache& c, const Kv4DecodeArgs& a, int kvh, int h0,
                                        int warp, int lane, BlockShared<D, NH>& sh) {
  if (warp >= NH) return;
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));
  const int hh = warp;
  const float* qh = a.q + (h0 + hh) * D;
  float qsum = 0.0f, cs = 0.0f, amax = 0.0f;
  for (int d = lane; d < D; d += 32) {
    const float s = c.k_scale ? c.k_scale[kvh * D + d] : 1.0f;
    const float qr = a.rope_pos_dev ? ropedev::rope_element_cs(qh, d, D, a.rope_cs) : qh[d];
    const float qv = qr * s * inv_sqrt_d;
    sh.q[hh][d] = qv;
    qsum += qv;
    amax = fmaxf(amax, fabsf(qv));
    if (c.k_delta) cs += qr * c.k_delta[kvh * D + d];
  }
  const QHeadConst k = reduce_q_head(qsum, cs, amax, inv_sqrt_d);
  if (lane == 0) {
    sh.qmul[hh] = k.qmul;
    sh.qinv[hh] = k.qinv;
    sh.qsum[hh] = k.qsum;
    sh.cst[hh] = k.cst;
  }
}

// The block's setup (every thread calls it): q' into shared memory, then lane (g, t)'s LaneQ. B fragments of
// step 1 (file comment): column g = (head g/2, term g%2); step s = 2i + e, word w = 4i + t: b0 = q' at
// channels (8w + 2e, 8w + 2e + 4), b1 = (8w + 2e + 1, 8w + 2e + 5).
template <int D, int NH>
__device__ __forceinline__ LaneQ<D> setup_block(const Kv4LayerCache& c, const Kv4DecodeArgs& a, int kvh,
                                                int h0, BlockShared<D, NH>& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  setup_q<D, NH>(c, a, kvh, h0, warp, lane, sh);
  __syncthreads();
  LaneQ<D> r;
  auto& qf = r.qf;
  const int hh = g >> 1, v = g & 1;
#pragma unroll
  for (int s = 0; s < D / 16; ++s) {
    const int c0 = 8 * (4 * (s >> 1) + t) + 2 * (s & 1);
    if (hh < NH) {
      const float mul = sh.qmul[hh];
      qf[s][0] = split_term(sh.q[hh][c0] * mul, v) | (split_term(sh.q[hh][c0 + 4] * mul, v) << 16);
      qf[s][1] = split_term(sh.q[hh][c0 + 1] * mul, v) | (split_term(sh.q[hh][c0 + 5] * mul, v) << 16);
    } else {
      qf[s][0] = qf[s][1] = 0u;
    }
  }
  const int th = min(t, NH - 1);
  r.qi = sh.qinv[th];
  r.qs = sh.qsum[th];
  r.cs = sh.cst[th];
  return r;
}

template <int D>
__device__ __forceinline__ void init_state(StreamState<D>& st) {
  st.m = -INFINITY;
  st.l = 0.0f;
  st.pb = 0.0f;
  st.K = 126;
#pragma unroll
  for (int mt = 0; mt < D / 16; ++mt) st.acc[mt][0] = st.acc[mt][1] = st.acc[mt][2] = st.acc[mt][3] = 0.0f;
}

// The end of every block of both streaming kernels (every thread, after its partials or at once for an empty
// split): the fused combine (finish_group), then, with the fused RoPE (a.rope_pos_dev), block (split 0, kvh,
// z 0) appends this token's rotated key and its value for KV head kvh at row p (warps 0 and 1, each with D
// floats of sh.red as scratch once the combine is done with it). No block of this launch reads row p (they
// read rows < n_cache ≤ p; the ring kernel's padding rows past n_cache are selected away, never used).
template <int D, int NH>
__device__ __forceinline__ void end_block(const Kv4LayerCache& c, const Kv4DecodeArgs& a,
                                          const SplitPlan& plan, int n_splits, int kvh, int h0,
                                          float* __restrict__ ws_ml, float* __restrict__ ws_acc,
                                          unsigned int* __restrict__ counters, BlockShared<D, NH>& sh) {
  finish_group<D, NH, kCombinePassTc, true>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters,
                                            &sh.red[0][0][0]);
  if (!a.rope_pos_dev || blockIdx.x != 0 || blockIdx.z != 0) return;  // block-uniform
  __syncthreads();                                                    // every thread is done with sh.red
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (warp >= 2) return;
  const int pos = __ldg(a.rope_pos_dev);
  kv4append::rope_append_head(c, (warp == 0 ? a.k_cur : a.v_cur) + kvh * D, nullptr, warp, kvh, pos,
                              kv4append::pos_in_range(c, pos), 0.0f, a.rope_cs, size_t(D / 2 + 4),
                              &sh.red[0][0][0] + warp * D, lane);
}

// The block's one merge (every thread calls it): l, pb summed over the 8 lanes g of head t; acc back from the
// 2^K domain with pb folded in; then thread (head, d) merges the warps and writes the split's partial, and
// the block arrives at its group's counter (the last one combines).
template <int D, int NH>
__device__ __forceinline__ void merge_and_finish(const StreamState<D>& st, BlockShared<D, NH>& sh,
                                                 const Kv4LayerCache& c, const Kv4DecodeArgs& a,
                                                 const SplitPlan& plan, int n_splits, int split, int kvh, int h0,
                                                 float* __restrict__ ws_ml, float* __restrict__ ws_acc,
                                                 unsigned int* __restrict__ counters) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  float l = st.l, pb = st.pb;
#pragma unroll
  for (int off = 4; off < 32; off <<= 1) {
    l += __shfl_xor_sync(0xffffffffu, l, off);
    pb += __shfl_xor_sync(0xffffffffu, pb, off);
  }
  if (t < NH) {
    const float kinv = pow2f(-st.K);  // K ∈ [−126, 126]
#pragma unroll
    for (int mt = 0; mt < D / 16; ++mt) {
      const int c0 = D == 128 ? 8 * g + mt : 8 * g + 2 * mt;
      const int c1 = D == 128 ? 8 * (g + 8) + mt : 8 * g + 2 * mt + 1;
      sh.red[warp][t][c0] = fmaf(st.acc[mt][0] + st.acc[mt][1], kinv, pb);
      sh.red[warp][t][c1] = fmaf(st.acc[mt][2] + st.acc[mt][3], kinv, pb);
    }
    if (g == 0) {
      sh.wml[warp][t][0] = st.m;
      sh.wml[warp][t][1] = l;
    }
  }
  __syncthreads();
  for (int i = tid; i < NH * D; i += kThreads) {
    const int hh = i / D, d = i % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sh.wml[w][hh][0]);
    float s = 0.0f, L = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float e = expf(sh.wml[w][hh][0] - M);  // 0 for a warp without tiles (m = −inf)
      s = fmaf(e, sh.red[w][hh][d], s);
      L = fmaf(e, sh.wml[w][hh][1], L);
    }
    ws_acc[(size_t(h0 + hh) * n_splits + split) * D + d] = s;
    if (d == 0) {
      ws_ml[(size_t(h0 + hh) * n_splits + split) * 2 + 0] = M;
      ws_ml[(size_t(h0 + hh) * n_splits + split) * 2 + 1] = L;
    }
  }
  end_block<D, NH>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters, sh);
}

// Which work block (split, kvh, z) of the grid has: KV head kvh, query heads h0 … h0 + NH − 1, the split's
// keys [j0, j0 + n) (n ≤ 0: a split past the device n_cache, which only arrives at its group's counter).
struct SplitBlock {
  int kvh, h0, split, j0, n, n_cache;
};

template <int NH>
__device__ __forceinline__ SplitBlock split_block(const Kv4LayerCache& c, const Kv4DecodeArgs& a,
                                                  const SplitPlan& plan) {
  SplitBlock b;
  b.kvh = blockIdx.y;
  b.h0 = b.kvh * (a.n_heads / c.n_kv_heads) + blockIdx.z * NH;
  const int n_cache = plan_n_cache(plan), chunk = plan_chunk(plan, n_cache);
  b.split = blockIdx.x;
  b.j0 = b.split * chunk;
  b.n = min(n_cache - b.j0, chunk);
  b.n_cache = n_cache;
  return b;
}

// The launch's L2 prefetch hints (Kv4DecodeArgs::prefetch), from thread 0 of block b (b = blockIdx.x +
// gridDim.x·(blockIdx.y + gridDim.y·blockIdx.z), the order blocks are dispatched in), unless the cache is
// longer than prefetch_max_keys. At the start: piece b of each region, so the first wave asks. After the
// key loop: the last blocks ask (piece b − (blocks − parts)), so that at long contexts, several waves of
// 512-key splits, the requests come from the last wave and nothing streams after them.
__device__ __forceinline__ void block_prefetch(const Kv4DecodeArgs& a, const SplitBlock& B) {
  if (threadIdx.x == 0 && (a.prefetch_max_keys <= 0 || B.n_cache <= a.prefetch_max_keys)) {
    const int b = int(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
    const int blocks = int(gridDim.x * gridDim.y * gridDim.z);
    for (const L2PrefetchRegion& r : a.prefetch)
      detail::l2_prefetch_piece(r, a.prefetch_after_keys ? b - (blocks - r.parts) : b);
  }
}

// The start of both streaming kernels: wait for the predecessor (a no-op unless launched with PDL,
// WKV_PDL_CHAIN), find the block's work, and issue the hints first thing (so the requests overlap the
// attention) unless they are asked for after the key loop (Kv4DecodeArgs::prefetch_after_keys).
template <int NH>
__device__ __forceinline__ SplitBlock begin_block(const Kv4LayerCache& c, const Kv4DecodeArgs& a,
                                                  const SplitPlan& plan) {
  grid_dependency_wait();
  const SplitBlock B = split_block<NH>(c, a, plan);
  if (!a.prefetch_after_keys) block_prefetch(a, B);
  return B;
}

template <int D, int NH>
__global__ void __launch_bounds__(kThreads, kStreamMinBlocks)
    decode_split_stream_kernel(Kv4LayerCache c, Kv4DecodeArgs a, SplitPlan plan, int n_splits,
                               float* __restrict__ ws_ml, float* __restrict__ ws_acc,
                               unsigned int* __restrict__ counters) {
  __shared__ uint32_t row_s[kMaxChunk];  // cache row of each key of the split (slots of a tile: its warp's)
  __shared__ BlockShared<D, NH> sh;

  const SplitBlock B = begin_block<NH>(c, a, plan);
  const int Hkv = c.n_kv_heads, kvh = B.kvh, h0 = B.h0, split = B.split, j0 = B.j0, n = B.n;
  if (n <= 0) {  // block-uniform: a split past the (device) n_cache: no partials, but it arrives
    if (a.prefetch_after_keys) block_prefetch(a, B);  // no keys to wait for
    end_block<D, NH>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters, sh);
    return;
  }
  const int n_tiles = (n + 15) / 16;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

  // Row indices of this warp's tiles only (so a __syncwarp suffices); the last tile's padding keys repeat
  // key n − 1, so every load is in bounds without a branch.
  for (int x = lane;; x += 32) {
    const int tile = warp + kWarps * (x >> 4);
    if (tile >= n_tiles) break;
    const int jj = tile * 16 + (x & 15);
    const int j = j0 + min(jj, n - 1);
    const int page = __ldg(c.page_table + j / c.page_size);
    row_s[jj] = uint32_t(kv4_row_index(page, j % c.page_size, kvh, Hkv, c.page_size));
  }
  __syncwarp();

  const uint8_t* kpool = c.k_pool;
  const uint8_t* vpool = c.v_pool;
  const bool active = warp < n_tiles;  // warp-uniform
  StreamTile<D> ta, tb;
  if (active) load_tile<D>(ta, kpool, vpool, row_s + 16 * warp, g, t);  // in flight during the setup

  const LaneQ<D> lq = setup_block<D, NH>(c, a, kvh, h0, sh);
  StreamState<D> st;
  init_state(st);

  // Two tile sets, ta and tb, alternate: the next tile's loads are issued before the current one's math.
  // Every branch below is warp-uniform (the MMAs and shuffles need the whole warp).
  if (active) {
#pragma unroll 1
    for (int tile = warp;;) {
      const int t1 = tile + kWarps;
      if (t1 < n_tiles) load_tile<D>(tb, kpool, vpool, row_s + 16 * t1, g, t);
      compute_tile<D>(ta, lq, 16 * tile, n, g, t, st);
      if (t1 >= n_tiles) break;
      const int t2 = t1 + kWarps;
      if (t2 < n_tiles) load_tile<D>(ta, kpool, vpool, row_s + 16 * t2, g, t);
      compute_tile<D>(tb, lq, 16 * t1, n, g, t, st);
      if (t2 >= n_tiles) break;
      tile = t2;
    }
  }
  // The next grid (the output projection, with PDL) may start once every block is here: the last wave of
  // this grid is then resident, so its blocks take no SM slot a block of this one still needs.
  grid_dependents_launch();
  if (a.prefetch_after_keys) block_prefetch(a, B);
  merge_and_finish<D, NH>(st, sh, c, a, plan, n_splits, split, kvh, h0, ws_ml, ws_acc, counters);
}

// ---- The ring variant (WKV_KV4_ATTN=ring / ring3) -------------------------------------------------------
//
// Why: the streaming kernel keeps at most two tiles per warp in flight, as 20 scattered 4-byte loads per lane
// and tile (each warp-wide load touches 8 rows of 68 bytes), and reads 1.8 TB/s at 32K keys (H200, session 6:
// 75.7 µs per layer for 134 MB). Here each warp copies whole tiles into its own ring of S slots in shared
// memory with cp.async (16 bytes per lane, coalesced, no registers held while in flight), S − 1 tiles ahead
// of the one it computes, and reads the fragments of StreamTile from shared memory; the math (compute_tile)
// and the merge are the streaming kernel's.
//
// Tiles are 16 keys aligned to absolute positions (16·T … 16·T + 15), not to the split's start: with the
// cache layout [page][H_kv][P] (kv4_cache.h) and P % 16 == 0, such a tile's 16 rows of one KV head are
// contiguous, 16·HB bytes (HB = D/2 + 4: 1,088 bytes at D = 128, 576 at D = 64, multiples of 16, so every
// tile starts 16-byte aligned in a 16-byte aligned pool). A split covers tiles floor(j0/16) … floor((j0 +
// n − 1)/16); keys of those tiles outside [j0, j0 + n) — the neighbouring split's, or rows past n_cache in
// the same (allocated) page, whose contents may be anything — are selected away by compute_tile.
// Shared memory (D = 128): kWarps × S × 2 × 1,088 bytes = 34.8 KB at S = 4, plus BlockShared (NH = 1: 2.6 KB,
// NH = 4: 10.3 KB): static, under 48 KB; 4 blocks per SM use ≤ 181 KB of the 228 KB.
// Pipeline per warp, slot of its k-th tile = k mod S: the prologue issues tiles 0 … S − 2 (one commit group
// each, empty groups past the warp's last tile keep the count uniform); iteration k waits until at most S − 2
// groups are pending (tile k landed), __syncwarp (the lanes' copies visible to all lanes; every lane is done
// reading slot k − 1, read in iteration k − 1), reads tile k into registers, issues tile k + S − 1 into slot
// (k − 1) mod S, commits, and computes tile k. Every real copy is waited for inside the loop: the groups
// committed after the warp's last tile are empty.

// An L2 policy for data read once: the cache rows of this token are read again only one token later, after
// the whole model's weights have streamed through L2, so they should not push out what the next kernels read
// (the weights the L2 prefetch hints fetched, Kv4DecodeArgs::prefetch).
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

// 16 bytes global → shared, bypassing L1 (.cg), with an L2 cache policy.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, uint64_t policy) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "l"(policy)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Copies the K and V rows of the tile whose first cache row is `row` (16 rows of HB bytes each) into a slot.
template <int D>
__device__ __forceinline__ void issue_tile_copy(uint8_t* dst_k, uint8_t* dst_v, const uint8_t* __restrict__ kpool,
                                                const uint8_t* __restrict__ vpool, uint32_t row, int lane,
                                                uint64_t policy) {
  constexpr int CH = D / 2 + 4;  // 16-byte chunks per 16-row tile (16·HB / 16)
  const size_t off = size_t(row) * CH;
  for (int ch = lane; ch < 2 * CH; ch += 32) {
    const bool isv = ch >= CH;
    const int cc = isv ? ch - CH : ch;
    cp_async16((isv ? dst_v : dst_k) + 16 * cc, (isv ? vpool : kpool) + off + 16 * cc, policy);
  }
}

// StreamTile of lane (g, t) from a slot (rows of HB bytes, as in the pool; the header is word D/8 of a row).
template <int D>
__device__ __forceinline__ void read_tile(StreamTile<D>& b, const uint8_t* ks, const uint8_t* vs, int g, int t) {
  constexpr int HB = D / 2 + 4;
  const uint32_t* ka = reinterpret_cast<const uint32_t*>(ks + g * HB);
  const uint32_t* kb = reinterpret_cast<const uint32_t*>(ks + (g + 8) * HB);
#pragma unroll
  for (int i = 0; i < StreamTile<D>::KW; ++i) {
    b.k[0][i] = ka[4 * i + t];
    b.k[1][i] = kb[4 * i + t];
  }
  b.kh[0] = ka[D / 8];
  b.kh[1] = kb[D / 8];
  b.vh[0] = reinterpret_cast<const uint32_t*>(vs + g * HB)[D / 8];
  b.vh[1] = reinterpret_cast<const uint32_t*>(vs + (g + 8) * HB)[D / 8];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint32_t* r = reinterpret_cast<const uint32_t*>(vs + (2 * t + (kk & 1) + 8 * (kk >> 1)) * HB);
#pragma unroll
    for (int i = 0; i < StreamTile<D>::VW; ++i) b.v[kk][i] = r[g + 8 * i];
  }
}

template <int D, int NH, int S>
__global__ void __launch_bounds__(kThreads, kStreamMinBlocks)
    decode_split_ring_kernel(Kv4LayerCache c, Kv4DecodeArgs a, SplitPlan plan, int n_splits,
                             float* __restrict__ ws_ml, float* __restrict__ ws_acc,
                             unsigned int* __restrict__ counters) {
  static_assert(S >= 2, "a ring needs a slot to compute from and one to fill");
  constexpr int TB = 16 * (D / 2 + 4);  // bytes of a 16-row tile of one pool
  __shared__ __align__(16) uint8_t ring[kWarps][S][2][TB];
  __shared__ uint32_t tile_row_s[kMaxChunk / 16 + 1];  // first cache row of each tile (slots: its warp's)
  __shared__ BlockShared<D, NH> sh;

  const SplitBlock B = begin_block<NH>(c, a, plan);
  const int Hkv = c.n_kv_heads, kvh = B.kvh, h0 = B.h0, split = B.split, j0 = B.j0, n = B.n;
  if (n <= 0) {
    if (a.prefetch_after_keys) block_prefetch(a, B);
    end_block<D, NH>(c, a, plan, n_splits, kvh, h0, ws_ml, ws_acc, counters, sh);
    return;
  }
  const int T0 = j0 / 16, n_tiles = (j0 + n - 1) / 16 - T0 + 1;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;

  for (int x = lane;; x += 32) {
    const int tile = warp + kWarps * x;
    if (tile >= n_tiles) break;
    const int j = 16 * (T0 + tile);
    const int page = __ldg(c.page_table + j / c.page_size);
    tile_row_s[tile] = uint32_t(kv4_row_index(page, j % c.page_size, kvh, Hkv, c.page_size));
  }
  __syncwarp();
  const uint8_t* kpool = c.k_pool;
  const uint8_t* vpool = c.v_pool;
  const uint64_t policy = l2_evict_first_policy();
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {  // in flight during the setup
    const int tile = warp + kWarps * s;
    if (tile < n_tiles)
      issue_tile_copy<D>(ring[warp][s][0], ring[warp][s][1], kpool, vpool, tile_row_s[tile], lane, policy);
    cp_async_commit();
  }

  const LaneQ<D> lq = setup_block<D, NH>(c, a, kvh, h0, sh);
  StreamState<D> st;
  init_state(st);

#pragma unroll 1
  for (int k = 0;; ++k) {  // warp-uniform
    const int tile = warp + kWarps * k;
    if (tile >= n_tiles) break;
    cp_async_wait<S - 2>();
    __syncwarp();
    StreamTile<D> b;
    const int slot = k % S;
    read_tile<D>(b, ring[warp][slot][0], ring[warp][slot][1], g, t);
    const int tn = tile + kWarps * (S - 1);
    if (tn < n_tiles) {
      const int fill = (k + S - 1) % S;
      issue_tile_copy<D>(ring[warp][fill][0], ring[warp][fill][1], kpool, vpool, tile_row_s[tn], lane, policy);
    }
    cp_async_commit();
    compute_tile<D>(b, lq, 16 * (T0 + tile) - j0, n, g, t, st);
  }
  // The next grid (the output projection, with PDL) may start once every block is here: the last wave of
  // this grid is then resident, so its blocks take no SM slot a block of this one still needs.
  grid_dependents_launch();
  if (a.prefetch_after_keys) block_prefetch(a, B);
  merge_and_finish<D, NH>(st, sh, c, a, plan, n_splits, split, kvh, h0, ws_ml, ws_acc, counters);
}

template <int D, int NH, int S>
void launch(const Kv4LayerCache& c, const Kv4DecodeArgs& a, const SplitPlan& plan, int n_splits,
            const SplitWorkspace& ws, cudaStream_t stream) {
  const dim3 grid(n_splits, c.n_kv_heads, a.n_heads / c.n_kv_heads / NH);
  if constexpr (S == 0)
    launch_kernel_pdl(pdl_chain(), decode_split_stream_kernel<D, NH>, grid, dim3(kThreads), 0, stream, c, a, plan,
                      n_splits, ws.ml, ws.acc, ws.counters);
  else
    launch_kernel_pdl(pdl_chain(), decode_split_ring_kernel<D, NH, S>, grid, dim3(kThreads), 0, stream, c, a, plan,
                      n_splits, ws.ml, ws.acc, ws.counters);
  WKV_CHECK_LAUNCH();
}

template <int D, int S>
void launch_nh(int nh, const Kv4LayerCache& c, const Kv4DecodeArgs& a, const SplitPlan& plan, int n_splits,
               const SplitWorkspace& ws, cudaStream_t stream) {
  switch (nh) {
    case 4: launch<D, 4, S>(c, a, plan, n_splits, ws, stream); break;
    case 2: launch<D, 2, S>(c, a, plan, n_splits, ws, stream); break;
    default: launch<D, 1, S>(c, a, plan, n_splits, ws, stream); break;
  }
}

template <int D>
void launch_d(int ring_slots, int nh, const Kv4LayerCache& c, const Kv4DecodeArgs& a, const SplitPlan& plan,
              int n_splits, const SplitWorkspace& ws, cudaStream_t stream) {
  switch (ring_slots) {
    case 4: launch_nh<D, 4>(nh, c, a, plan, n_splits, ws, stream); break;
    case 3: launch_nh<D, 3>(nh, c, a, plan, n_splits, ws, stream); break;
    default: launch_nh<D, 0>(nh, c, a, plan, n_splits, ws, stream); break;
  }
}

}  // namespace

bool ring_supported(const Kv4LayerCache& c) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return c.page_size % 16 == 0 && aligned(c.k_pool) && aligned(c.v_pool);
}

void launch_split_stream(int D, int nh, int ring_slots, const Kv4LayerCache& c, const Kv4DecodeArgs& a,
                         const SplitPlan& plan, int n_splits, const SplitWorkspace& ws, cudaStream_t stream) {
  if (ring_slots != 0 && !ring_supported(c)) ring_slots = 0;
  if (D == 64)
    launch_d<64>(ring_slots, nh, c, a, plan, n_splits, ws, stream);
  else
    launch_d<128>(ring_slots, nh, c, a, plan, n_splits, ws, stream);
}

}  // namespace wkv::kernels::kv4split
