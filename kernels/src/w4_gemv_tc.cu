// W4 GEMV fast path, variant C: tensor cores. y[b][row] = Σ_c x[b][c]·(q − z)·h with
// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32: A = 16 weight rows × 16 channels (FP16), B = 16
// channels × 8 batch columns (FP16 x; columns ≥ B are zero), D = 16 rows × 8 batch columns (FP32). Every
// x value a lane loads serves 16 rows, and B = 1 … 8 cost the same instructions (only the zero columns
// differ). Preconditions as variants A / B (w4_gemv.cu): cols % 32 == 0, group % 32 == 0, 16-byte
// aligned qweight and x, B·cols·2 + fixed bytes of shared memory.
//
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), g = lane / 4,
// t = lane % 4, registers of .f16x2 with the lower k in the low half:
//   A reg0 = (row g,   k 2t, 2t+1)   reg1 = (row g+8, k 2t, 2t+1)
//     reg2 = (row g,   k 2t+8, 2t+9) reg3 = (row g+8, k 2t+8, 2t+9)
//   B reg0 = (k 2t, 2t+1, n g)       reg1 = (k 2t+8, 2t+9, n g)
//   D d0, d1 = (row g, n 2t, 2t+1)   d2, d3 = (row g+8, n 2t, 2t+1)
//
// Work split. A warp works on "tiles" of 16 consecutive rows; a "step" s of a tile is 256 channels
// (8 chunks of 16 qweight bytes = 32 channels each). In step s lane (g, t) loads chunks c = 8s + t and
// c = 8s + 4 + t ("chunk set" i = 0, 1) of rows g and g + 8 with L1-bypassing 16-byte loads: per load
// instruction the 4 lanes of a row read 64 contiguous bytes, and the two chunk sets fill one 128-byte
// line per row. No shuffles: a dot product does not care in which order its channels are summed as
// long as A and B use the same order, so each lane feeds the mma with the channels it loaded itself.
//
// The k permutation. Chunk set i of step s is 8 mma (one per half word): for word w (0..3) and half
// p (0, 1) of lane t's chunk c_t = 8s + 4i + t, the mma's logical k index maps to the real channel
//     k = 2t + e      → 32·c_t + 8w + 4p + e        (e = 0, 1)
//     k = 2t + 8 + e  → 32·c_t + 8w + 4p + 2 + e
// i.e. every lane contributes 4 consecutive channels of its own chunk per mma, and the 16 k of an mma
// are 4 channels from each of 4 chunks (c_0 … c_3, 128 consecutive channels). Every (chunk, channel)
// is used exactly once. Since the A fragment of lane (g, t) and the B fragment of lane (g', t) hold the
// same k, both must name the same channels: they do, because c_t depends on t only.
//
// Dequantization of one word (quant_formats.h): with 0x64006400 = FP16 1024 in both halves,
//   lo  = word & 0x000F000F | bias → (1024 + q0, 1024 + q1)        hsub2(lo, 1024 + z)        = q − z
//   hi  = word & 0x00F000F0 | bias → (1024 + 16q2, 1024 + 16q3)    hfma2(hi, 1/16, −(64 + z)) = q − z
//   the same on word >> 8 for channels 4, 5 (lo) and 6, 7 (hi).
// All exact: 1024 + 16q ≤ 1264 and every integer ≤ 2048 is an FP16, |z| ≤ 1024, and the FMA rounds
// only the exact integer q − z (|q − z| ≤ 1039). So A-fragment pair (2t, 2t+1) of half p of word w is
// pair 2p (lo) and (2t+8, 2t+9) is pair 2p + 1 (hi), matching the channel map above (lo of word >> 8 =
// channels 4, 5 etc.). Per word: 1 SHF + 4 LOP3 + 4 half2 ops, then 2 mma per 2 words (rows g, g+8).
// Scale h, two sub-variants:
//   group % 128 == 0 ("scale after"): the 4 chunks of a chunk set lie in ONE group of each row, so the
//     8 mma of a chunk set run on the exact integers (q − z) from a zero accumulator and the FP32 result
//     is scaled once: acc += h·d (4 FFMA per chunk set). Weights are not rounded at all.
//   otherwise (group 32, 64, 96, …): the 4 lanes of an mma may hold different groups, so the weight is
//     formed in FP16 before the mma: hmul2((q − z), h), one rounding (2^-11 relative; |w'| < 65504 is
//     required: any real LLM weight; a larger w' would become Inf).
//
// x staging (once per block): per batch row b one power-of-two scale 2^e_b with max|x[b]|·2^e_b in
// [2^14, 2^15) (the block reduces the row max first), x̂ = x·2^e_b rounded to FP16 and stored in shared
// memory; 2^-e_b multiplies the FP32 result at the end (exact). A whole-row scale (not per 32 channels
// as in B) because the FP32 accumulator spans the whole row. Values below max|x|·2^-14 land in FP16
// subnormals: absolute error ≤ 2^-25·2^-e_b ≤ 2^-39·max|x[b]| per x.
// Layout: 16-byte slots, 4 per chunk (slot q = channels 8q … 8q+7 = word q, natural order, so one LDS.128
// gives the B registers of the 2 mma of word q: (.x, .y) and (.z, .w)). Slot q of chunk c of batch b is
// stored at b·cols/8 + 4c + (q ^ key), key = ((c >> 1) & 1) | ((b & 1) << 1). Bank check for one
// LDS.128 phase (8 lanes: g ∈ {2m, 2m+1}, t = 0..3, same q, batch row b = g, c = 8s + 4i + t): the slot's
// position mod 8 has bit 2 = (t & 1) ^ (bit 2 of g·cols/8) and bits 0–1 = q ^ (t >> 1) ^ ((g & 1) << 1):
// the low bits identify (t >> 1, g & 1), bit 2 then identifies t & 1, so the 8 lanes hit 8 distinct
// 16-byte bank groups: conflict-free. Lanes with g ≥ B (no such batch row) and chunks past the row do
// not read and use x = 0.
//
// Grid and split-K. One block of 16 warps per SM (512 threads, ≤ 128 registers); block k of n gets the
// contiguous tiles [T·k/n, T·(k+1)/n) of all T = ⌈rows/16⌉ tiles, and its U = tiles·steps "units"
// (tile-major) are divided evenly over its 16 warps: warp w takes units [U·w/16, U·(w+1)/16). A warp's
// range thus covers parts of at most two tiles plus whole tiles in between; 4096 rows × 4096 cols gives
// 2 tiles × 16 steps per block, 2 steps per warp (split-K 8), 22016 rows ~10.4 tiles per block
// (no split for most tiles). Partial tiles are combined in shared memory, deterministically:
//   a piece that starts mid-tile (only a warp's first piece) is stored in the warp's slot;
//   a piece that starts at step 0 and ends early (only a warp's last piece) stays in registers, and
//   after the block barrier that warp adds the slots of the following warps that start inside the
//   tile, in warp order, and writes y; whole-tile pieces are written directly.
//
// Latency: two register tiles, ping-pong as in A — the loads of the next kTcU steps (kTcU·4 uint4 per
// lane, 4 KB per warp, 64 KB per SM) are issued before the math of the current ones; the first loads
// are issued before x is staged.
//
// Instructions per chunk set (1 KB of weights per warp): 32 SHF/LOP3 + 32 half2 (+ 32 HMUL2 without
// "scale after") + 8 HMMA + 4 LDS.128 + ~20 loads / unpack / FFMA ≈ 100: ~3 thread-instructions per
// weight byte against ~7.8 available at 4.3 TB/s (A ~7.5, B ~4.7).
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "quant_formats.h"
#include "w4_gemv_tc.h"
#include "w4_mma.cuh"

namespace wkv::kernels::detail {

namespace {

constexpr int kTcThreads = 512;
constexpr int kTcWarps = kTcThreads / kWarpSize;
constexpr int kTileRows = 16;
constexpr int kChunksPerStep = 8;  // one step: 8 chunks (256 channels) of each of the 16 rows
constexpr int kTcU = 2;            // steps per pipeline stage (ptxas -v: no spills under 128 registers)
constexpr int kMaxBatchTc = 8;     // the mma's N

// Fixed part of the dynamic shared memory, after the x slots: split-K slots [16 warps][32 lanes] float4,
// per-warp row maxima [16][8] float, x scales [8] and their inverses [8].
constexpr size_t kRedBytes = (size_t)kTcWarps * kWarpSize * 16;
constexpr size_t kFixedBytes = kRedBytes + (size_t)kTcWarps * kMaxBatchTc * 4 + 2 * kMaxBatchTc * 4;

struct TcArgs {
  int rows, chunks, groups;
  int cpg, cpg_shift;  // chunks per group; log2(cpg) when a power of two, else −1
  int steps;           // ⌈chunks / 8⌉ steps per row
  int B;               // batch rows, 1 … 8
  const uint4* qweight;
  const uint16_t* scales;
  const uint16_t* zeros;
};

// The weights of kTcU steps of one lane: [step][chunk set][row g, row g + 8].
struct TcTile {
  uint4 q[kTcU][2][2];
  uint32_t hz[kTcU][2][2];  // scale bits | zero bits << 16; 0 for absent rows / chunks
};

// Issues the loads of steps s0 … s0 + kTcU − 1 of the tile whose first row is row0. Steps ≥ pe (past
// the warp's piece), chunks past the row and rows past the matrix get q = 0, hz = 0 (weight exactly 0).
__device__ __forceinline__ void load_tile(const TcArgs& a, int row0, int s0, int pe, int g, int t,
                                          TcTile& tl) {
#pragma unroll
  for (int u = 0; u < kTcU; ++u) {
    const int s = s0 + u;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int c = kChunksPerStep * s + 4 * i + t;
      const int grp = a.cpg_shift >= 0 ? c >> a.cpg_shift : c / a.cpg;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = row0 + g + 8 * r;
        if (s < pe && c < a.chunks && row < a.rows) {
          tl.q[u][i][r] = load_stream_u4(a.qweight + (size_t)row * a.chunks + c);
          const uint32_t h = __ldg(a.scales + (size_t)row * a.groups + grp);
          const uint32_t z = __ldg(a.zeros + (size_t)row * a.groups + grp);
          tl.hz[u][i][r] = h | (z << 16);
        } else {
          tl.q[u][i][r] = make_uint4(0u, 0u, 0u, 0u);
          tl.hz[u][i][r] = 0u;
        }
      }
    }
  }
}

// Accumulates steps s0 … min(s0 + kTcU, pe) − 1 of the tile into acc (D layout).
template <bool kScaleAfter>
__device__ __forceinline__ void math_tile(const TcArgs& a, const TcTile& tl, int s0, int pe, int g, int t,
                                          int xkey, const uint4* xs, float (&acc)[4]) {
  const int cols8 = a.chunks * 4;
  const bool xlane = g < a.B;
#pragma unroll
  for (int u = 0; u < kTcU; ++u) {
    const int s = s0 + u;
    if (s >= pe) break;  // warp-uniform
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int cbase = kChunksPerStep * s + 4 * i;
      if (cbase >= a.chunks) break;  // warp-uniform: the whole chunk set is past the row
      const int c = cbase + t;
      const bool has_x = xlane && c < a.chunks;
      const uint4* xc = xs + (size_t)g * cols8 + 4 * c;  // read only when has_x
      const RowParams p0 = unpack_params(tl.hz[u][i][0]), p1 = unpack_params(tl.hz[u][i][1]);
      float d[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) d[k] = kScaleAfter ? 0.0f : acc[k];
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        uint4 xv = make_uint4(0u, 0u, 0u, 0u);
        if (has_x) xv = xc[w ^ xkey];  // channels 8w … 8w+7 of chunk c, batch row g
        uint32_t r0[4], r1[4];
        dequant_word<kScaleAfter>(tc_word_of(tl.q[u][i][0], w), p0, r0);  // row g
        dequant_word<kScaleAfter>(tc_word_of(tl.q[u][i][1], w), p1, r1);  // row g + 8
        mma_m16n8k16(d, r0[0], r1[0], r0[1], r1[1], xv.x, xv.y);          // channels 8w + 0..3
        mma_m16n8k16(d, r0[2], r1[2], r0[3], r1[3], xv.z, xv.w);          // channels 8w + 4..7
      }
      if constexpr (kScaleAfter) {
        acc[0] = fmaf(p0.h, d[0], acc[0]);
        acc[1] = fmaf(p0.h, d[1], acc[1]);
        acc[2] = fmaf(p1.h, d[2], acc[2]);
        acc[3] = fmaf(p1.h, d[3], acc[3]);
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[k] = d[k];
      }
    }
  }
}

// Writes a finished tile: lane (g, t) holds rows g, g + 8 for batch columns 2t, 2t + 1.
__device__ __forceinline__ void write_tile(const TcArgs& a, int tile, int g, int t, const float (&acc)[4],
                                           const float* xinv, float* __restrict__ y) {
  const int ra = tile * kTileRows + g, rb = ra + 8;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int n = 2 * t + e;
    if (n < a.B) {
      const float inv = xinv[n];
      if (ra < a.rows) y[(size_t)n * a.rows + ra] = acc[e] * inv;
      if (rb < a.rows) y[(size_t)n * a.rows + rb] = acc[2 + e] * inv;
    }
  }
}

// x [B][cols] FP32 → shared FP16 slots (layout at the top), xinv[b] = 2^-e_b. Contains two barriers;
// every thread of the block must call it.
__device__ __forceinline__ void stage_x(const float* __restrict__ x, int cols, int B, uint4* xs, float* wmax,
                                        float* xsc, float* xinv) {
  const int tid = (int)threadIdx.x, cols8 = cols / 8;
  x_row_scales<kTcThreads, kMaxBatchTc>(x, cols, B, wmax, xsc, xinv);  // 1. one scale per batch row
  // 2. convert: thread i → slot i (8 channels) in row-major order, stored swizzled.
  for (int i = tid; i < B * cols8; i += kTcThreads) {
    const int b = i / cols8, f = i - b * cols8, c = f >> 2, q = f & 3;
    const float4 v0 = __ldg(reinterpret_cast<const float4*>(x) + 2 * i);
    const float4 v1 = __ldg(reinterpret_cast<const float4*>(x) + 2 * i + 1);
    const float sc = xsc[b];
    uint4 o;
    o.x = bits_of(__floats2half2_rn(v0.x * sc, v0.y * sc));
    o.y = bits_of(__floats2half2_rn(v0.z * sc, v0.w * sc));
    o.z = bits_of(__floats2half2_rn(v1.x * sc, v1.y * sc));
    o.w = bits_of(__floats2half2_rn(v1.z * sc, v1.w * sc));
    const int key = ((c >> 1) & 1) | ((b & 1) << 1);
    xs[(size_t)b * cols8 + 4 * c + (q ^ key)] = o;
  }
}

// Position of a warp in its unit range: local tile j (relative to the block's first tile), step s0.
struct WarpPos {
  int u0, u1;  // the warp's units [u0, u1), block-local, tile-major
  int t0;      // the block's first tile
  int j, s0;
  bool pending;  // the last piece started at step 0 of tile pend_j and ended early (see the top)
  int pend_j;
};

// One pipeline stage: issue the loads of the next stage into `nxt`, do the math of `cur`, finish the
// tile piece when the next stage moves to another tile. Returns true when the warp's range is done.
template <bool kScaleAfter>
__device__ __forceinline__ bool stage(const TcArgs& a, WarpPos& wp, int g, int t, int lane, int warp,
                                      int xkey, const uint4* xs, const float* xinv, float4* red,
                                      const TcTile& cur, TcTile& nxt, float (&acc)[4],
                                      float* __restrict__ y) {
  const int steps = a.steps;
  const int pe = min(steps, wp.u1 - wp.j * steps);  // end of this tile's piece (step index)
  int j1 = wp.j, s1 = wp.s0 + kTcU;
  if (s1 >= pe) j1 = wp.j + 1, s1 = 0;
  const bool more = j1 * steps + s1 < wp.u1;
  if (more) load_tile(a, (wp.t0 + j1) * kTileRows, s1, min(steps, wp.u1 - j1 * steps), g, t, nxt);
  math_tile<kScaleAfter>(a, cur, wp.s0, pe, g, t, xkey, xs, acc);
  if (j1 != wp.j) {  // the piece of tile j is complete (always the case when !more)
    const int ps = max(0, wp.u0 - wp.j * steps);
    if (ps == 0 && pe == steps) {  // the whole tile
      write_tile(a, wp.t0 + wp.j, g, t, acc, xinv, y);
      acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
    } else if (ps > 0) {  // continues a tile begun by an earlier warp: hand over through the slot
      red[warp * kWarpSize + lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
      acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
    } else {  // begins a tile that later warps finish: this is the warp's last piece (more == false)
      wp.pending = true;
      wp.pend_j = wp.j;
    }
  }
  wp.j = j1;
  wp.s0 = s1;
  return !more;
}

template <bool kScaleAfter>
__global__ void __launch_bounds__(kTcThreads, 1)
    w4_gemv_tc_kernel(TcArgs a, const float* __restrict__ x, float* __restrict__ y) {
  extern __shared__ uint4 smem_tc[];
  const int cols8 = a.chunks * 4;
  uint4* xs = smem_tc;
  float4* red = reinterpret_cast<float4*>(xs + (size_t)a.B * cols8);
  float* wmax = reinterpret_cast<float*>(red + kTcWarps * kWarpSize);
  float* xsc = wmax + kTcWarps * kMaxBatchTc;
  float* xinv = xsc + kMaxBatchTc;

  const int lane = (int)threadIdx.x % kWarpSize, warp = (int)threadIdx.x / kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int xkey = ((t >> 1) & 1) | ((g & 1) << 1);  // ((c >> 1) & 1) | ((b & 1) << 1) for b = g, c ≡ t mod 4
  const int tiles = (a.rows + kTileRows - 1) / kTileRows;
  const int t0 = (int)((long long)tiles * blockIdx.x / gridDim.x);
  const int t1 = (int)((long long)tiles * (blockIdx.x + 1) / gridDim.x);
  const long long units = (long long)(t1 - t0) * a.steps;
  WarpPos wp;
  wp.u0 = (int)(units * warp / kTcWarps);
  wp.u1 = (int)(units * (warp + 1) / kTcWarps);
  wp.t0 = t0;
  wp.j = wp.u0 / a.steps;
  wp.s0 = wp.u0 - wp.j * a.steps;
  wp.pending = false;
  wp.pend_j = 0;

  TcTile ta, tb;
  if (wp.u0 < wp.u1)  // the first loads are in flight while x is staged
    load_tile(a, (t0 + wp.j) * kTileRows, wp.s0, min(a.steps, wp.u1 - wp.j * a.steps), g, t, ta);
  stage_x(x, a.chunks * 32, a.B, xs, wmax, xsc, xinv);
  __syncthreads();

  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (wp.u0 < wp.u1) {
    // Ping-pong between the two register tiles (no copies): ta holds the current stage, then tb.
    while (true) {
      if (stage<kScaleAfter>(a, wp, g, t, lane, warp, xkey, xs, xinv, red, ta, tb, acc, y)) break;
      if (stage<kScaleAfter>(a, wp, g, t, lane, warp, xkey, xs, xinv, red, tb, ta, acc, y)) break;
    }
  }
  __syncthreads();  // every slot is written
  if (wp.pending) {
    // Add the pieces of the following warps that start inside tile pend_j, in warp order.
    const long long end = (long long)(wp.pend_j + 1) * a.steps;
    for (int w2 = warp + 1; w2 < kTcWarps; ++w2) {
      const long long st = units * w2 / kTcWarps;
      if (st >= end) break;
      if (units * (w2 + 1) / kTcWarps > st) {  // non-empty range: its first piece is in this tile
        const float4 v = red[w2 * kWarpSize + lane];
        acc[0] += v.x;
        acc[1] += v.y;
        acc[2] += v.z;
        acc[3] += v.w;
      }
    }
    write_tile(a, t0 + wp.pend_j, g, t, acc, xinv, y);
  }
}

template <bool kScaleAfter>
void launch(const TcArgs& a, const float* x, float* y, int sms, cudaStream_t stream) {
  // Once per instantiation: allow more than the default 48 KB of dynamic shared memory.
  static const bool attr_set = (allow_max_dynamic_smem(w4_gemv_tc_kernel<kScaleAfter>), true);
  (void)attr_set;
  const int tiles = (a.rows + kTileRows - 1) / kTileRows;
  const int blocks = std::max(1, std::min(sms, tiles));
  const size_t smem = w4_gemv_tc_smem_bytes(a.B, a.chunks * 32);
  w4_gemv_tc_kernel<kScaleAfter><<<blocks, kTcThreads, smem, stream>>>(a, x, y);
  WKV_CHECK_LAUNCH();
}

}  // namespace

size_t w4_gemv_tc_smem_bytes(int B, int cols) {
  return (size_t)B * cols * 2 + kFixedBytes;
}

void w4_gemv_tc_launch(const W4DeviceWeights& w, const float* x, int B, float* y, int sms, int smem_optin,
                       cudaStream_t stream) {
  require_arg(B >= 1 && B <= kMaxBatchTc, "w4_gemv (C): internal batch " + std::to_string(B));
  require_arg(w.cols % 32 == 0 && w.group % 32 == 0 && aligned16(w.qweight) && aligned16(x),
              "w4_gemv (C): internal: not a fast-path shape");
  require_arg(w4_gemv_tc_smem_bytes(B, w.cols) <= (size_t)smem_optin,
              "w4_gemv (C): internal: x of " + std::to_string(B) + " rows does not fit in shared memory");
  TcArgs a{};
  a.rows = w.rows;
  a.chunks = w.cols / 32;
  a.groups = w.cols / w.group;
  a.cpg = w.group / 32;
  a.cpg_shift = (a.cpg & (a.cpg - 1)) == 0 ? __builtin_ctz((unsigned)a.cpg) : -1;
  a.steps = (a.chunks + kChunksPerStep - 1) / kChunksPerStep;
  a.B = B;
  a.qweight = reinterpret_cast<const uint4*>(w.qweight);
  a.scales = w.scales;
  a.zeros = w.zeros;
  if (w.group % 128 == 0) {
    launch<true>(a, x, y, sms, stream);
  } else {
    launch<false>(a, x, y, sms, stream);
  }
}

}  // namespace wkv::kernels::detail
