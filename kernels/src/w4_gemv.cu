// W4 GEMV (decode): y[b][row] = Σ_c x[b][c]·(q − z)·h. See wkv_kernels/w4_gemv.h for the contract and
// w4_gemv_variant.h for the three fast-path math variants and their error budgets. This file holds
// variants A and B and the generic path; variant C (tensor cores) is in w4_gemv_tc.cu.
//
// Fast path (cols % 32 == 0, group % 32 == 0, qweight and x 16-byte aligned, cols ≤ kFastMaxCols)
// ---------------------------------------------------------------------------------------------------
// Target: stream the weights at HBM speed (H200 ~4.3 TB/s). A 4096×4096 g128 matrix is 8.9 MB, ~2 µs,
// so both the bytes in flight (Little: ~4.3 TB/s × ~1 µs ≈ 33 KB per SM) and the instructions per byte
// (132 SMs × 4 schedulers × ~1.98 GHz ≈ 1.05e12 warp-instr/s → ~7.8 thread-instructions per weight byte
// at 4.3 TB/s) are the limits.
//
// Work split. A "chunk" is 16 bytes of a row of qweight: 4 words = 32 consecutive input channels, inside
// one group (group % 32 == 0). One block of 512 threads (16 warps) per SM; the grid has ≤ #SMs blocks
// and every warp gets a contiguous, balanced range of rows (rows·gw/W … rows·(gw+1)/W for W warps, so
// 22016 rows over 2112 warps is 10 or 11 rows each, not a whole extra step for some warps). A warp walks
// its rows kR = 2 at a time; lane l takes chunks l, l + 32, l + 64, … of both rows, so one warp-wide
// uint4 load reads 512 contiguous bytes of a row (fully coalesced), and every x value a lane reads from
// shared memory serves kR rows. Per "step" a lane holds U chunks of each of the kR rows (kR·U uint4
// plus their scale / zero), loaded with ld.global.nc.L1::no_allocate (read once: do not pollute L1).
//
// Latency hiding: two register tiles, ping-pong. The loads of step n+1 are issued before the math of
// step n, so each warp always has one tile of kR·U·16 B per lane in flight while it computes (U = 4:
// 4 KB per warp, 64 KB per SM — twice the Little's-law need). The first tile is loaded before x is
// staged, so the weight stream starts at once and the staging (an L2 round trip and a barrier) hides
// under it. No barrier after staging: warps run independently to the end.
//
// x staging (once per block, shared memory; the kernel then reads x only from shared memory):
//   fp32 (A)  x[b][cols] as FP32. Lane l reads its chunk's 32 floats as 8 float4 slots; lanes 128 B
//             apart would all hit the same 4 banks (8-way conflict per LDS.128 phase), so slot m of
//             chunk c is stored at slot m ^ (c & 7): the 8 lanes of a phase read 8 distinct slots.
//   half2 (B) x[b][cols] as FP16, scaled per 32-channel chunk by 2^e (chunk max |x| into [2, 4)), plus
//             2^-e per chunk as FP32. Half2 k of a word = channels (2k, 2k+1) in natural order, which is
//             exactly the order of the interleaved nibble pairs, so one 16-byte slot = the 8 x of one
//             word. A chunk is 64 B (4 slots); slot m of chunk c is stored at m ^ ((c >> 1) & 3), which
//             makes the 8 lanes of a phase hit 8 distinct 16-byte bank groups.
//   The scale keeps every FP16 partial sum finite: |q − z| ≤ 1039, |x̂| < 4, 8 terms per FP16 lane →
//   < 33248 < 65504; FP16 keeps 11 significant bits at any magnitude, so the scale costs nothing there.
//
// Dequantization (quant_formats.h explains the trick): for word w and pair j,
//   bits = ((w >> 4j) & 0x000F000F) | 0x64006400   → half2 (1024 + q_2j, 1024 + q_2j+1), exact;
//   d    = bits − half2(1024 + z)                  → (q − z) for both channels, exact.
// Instruction budget per 16-byte chunk and row (B = 1): extraction 7 SHF/LOP3 + 4 HSUB2 per word
// (44), then
//   A: 32 HADD2.F32 widenings + 32 FFMA + 8 LDS / kR + scale ≈ 120 → ~7.5 per byte: at the issue limit;
//   B: 16 HFMA2 + 4 widenings + 3 FADD + FMUL + FFMA + 4 LDS / kR ≈ 75 → ~4.7 per byte: headroom.
// The sum over a chunk is scaled by h once: Σ h(q − z)x = h·Σ (q − z)x with no cancellation (unlike
// h·(Σ q·x − z·Σ x)).
//
// Generic path: any valid W4 shape; one warp per row, lane l takes words l, l + 32, …, scalar FP32 math.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "cuda_check.h"
#include "gemv_prologue.h"
#include "kernel_util.h"
#include "quant_formats.h"
#include "w4_gemv_bulk.h"
#include "w4_gemv_lean.h"
#include "w4_gemv_tc.h"
#include "w4_gemv_variant.h"
#include "wkv_kernels/elementwise.h"
#include "wkv_kernels/w4_gemv.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace wkv::kernels {

namespace {

using detail::Prologue;
using detail::PrologueArgs;

constexpr int kBlockThreads = 128;  // generic path: 4 warps, one row each
constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;
constexpr int kMaxBatch = 8;  // batch rows per launch

constexpr int kFastThreads = 512;  // fast path: one block of 16 warps per SM
constexpr int kFastWarps = kFastThreads / kWarpSize;
constexpr int kR = 2;                // rows per warp step
constexpr int kFastMaxCols = 32768;  // FP32 x of one batch row (128 KB) must fit in shared memory

struct W4Args {
  int rows, cols, group;
  const uint32_t* qweight;
  const uint16_t* scales;
  const uint16_t* zeros;
};

struct FastArgs {
  int rows;
  int chunks;     // cols / 32: 16-byte qweight chunks per row
  int groups;     // cols / group
  int cpg;        // chunks per group, group / 32
  int cpg_shift;  // log2(cpg) when cpg is a power of two, else −1 (then c / cpg)
  const uint4* qweight;
  const uint16_t* scales;
  const uint16_t* zeros;
};

__device__ __forceinline__ uint32_t word_of(const uint4& v, int w) {
  return w == 0 ? v.x : w == 1 ? v.y : w == 2 ? v.z : v.w;  // w is a compile-time constant after unrolling
}

// (q − z) of channels (2j, 2j + 1) of `word` as an exact half2 (low half = channel 2j).
__device__ __forceinline__ __half2 pair_minus_zero(uint32_t word, int j, __half2 bias) {
  return __hsub2(half2_from_bits(((word >> (4 * j)) & kW4PairMask) | kFp16x2Bias1024), bias);
}

// Scale h (low 16 bits) and zero z (high 16 bits) of a chunk, as FP32 h and half2 (1024 + z) twice.
__device__ __forceinline__ void unpack_hz(uint32_t hz, float& h, __half2& bias) {
  h = __half2float(__ushort_as_half((unsigned short)(hz & 0xFFFFu)));
  const __half z = __ushort_as_half((unsigned short)(hz >> 16));
  bias = __hadd2(__half2half2(z), half2_from_bits(kFp16x2Bias1024));  // 1024 + z: exact, |z| ≤ 1024
}

// One step's weights: chunks k0 + lane + 32u (u < U) of rows r0 .. r0 + kR − 1.
template <int U>
struct Tile {
  uint4 q[kR][U];
  uint32_t hz[kR][U];  // scale bits | zero bits << 16
};

// Issues the loads of a tile. Rows ≥ nr (the odd last row of a warp's range) and chunks past the row
// are not loaded; they get q = 0, h = 0 (their math contributes exactly 0, and chunks past the row are
// skipped by the math anyway).
template <int U>
__device__ __forceinline__ void load_tile(const FastArgs& a, int r0, int nr, int k0, int lane, Tile<U>& t) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = k0 + lane + 32 * u;
    const int g = a.cpg_shift >= 0 ? c >> a.cpg_shift : c / a.cpg;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      if (r < nr && c < a.chunks) {
        const size_t row = (size_t)(r0 + r);
        t.q[r][u] = load_stream_u4(a.qweight + row * a.chunks + c);
        const uint32_t h = __ldg(a.scales + row * a.groups + g);
        const uint32_t z = __ldg(a.zeros + row * a.groups + g);
        t.hz[r][u] = h | (z << 16);
      } else {
        t.q[r][u] = make_uint4(0u, 0u, 0u, 0u);
        t.hz[r][u] = 0u;
      }
    }
  }
}

// ---- variant A: FP32 math --------------------------------------------------------------------------

// x [B][cols] FP32 → shared, slot m of chunk c at slot m ^ (c & 7) (see the header comment).
template <int B>
__device__ __forceinline__ void stage_x_fp32(const float* __restrict__ x, int cols, float4* xs) {
  const int cols4 = cols / 4;
  for (int i = (int)threadIdx.x; i < B * cols4; i += kFastThreads) {
    const int b = i / cols4, f = i - b * cols4, c = f >> 3, m = f & 7;
    xs[b * cols4 + c * 8 + (m ^ (c & 7))] = __ldg(reinterpret_cast<const float4*>(x) + i);
  }
}

// ---- fused decode prologues (variant A, B = 1): the input is computed while the first weights stream ----

constexpr int kProMaxF4 = 4;  // add_rmsnorm keeps ≤ 4 float4 per thread in registers: cols ≤ 8192
constexpr int kProMaxCols = kProMaxF4 * 4 * kFastThreads;

__device__ __forceinline__ void store_x_fp32(float4* xs, int f, float4 v) {  // float4 f of the row (B = 1)
  const int c = f >> 3, m = f & 7;
  xs[c * 8 + (m ^ (c & 7))] = v;
}

// v = res + r (stored to res_out by block 0), x = v / sqrt(mean(v²) + eps) ⊙ weight → shared, with the
// products and sums of add_rmsnorm_f32 (the block's sum of squares runs in another order: ≤ 1 ulp apart).
__device__ __forceinline__ void stage_x_add_rmsnorm(const PrologueArgs& p, int cols, float4* xs) {
  __shared__ float part[kFastWarps];
  const int cols4 = cols / 4, lane = (int)threadIdx.x % kWarpSize, warp = (int)threadIdx.x / kWarpSize;
  const float4* res4 = reinterpret_cast<const float4*>(p.res);
  const float4* r4 = reinterpret_cast<const float4*>(p.r);
  float4 v[kProMaxF4];
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kProMaxF4; ++k) {
    const int f = (int)threadIdx.x + k * kFastThreads;
    if (f < cols4) {
      const float4 a = res4[f], b = r4[f];
      v[k] = make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z), __fadd_rn(a.w, b.w));
      ss = fmaf(v[k].x, v[k].x, ss);
      ss = fmaf(v[k].y, v[k].y, ss);
      ss = fmaf(v[k].z, v[k].z, ss);
      ss = fmaf(v[k].w, v[k].w, ss);
    }
  }
  ss = warp_sum(ss);
  if (lane == 0) part[warp] = ss;
  __syncthreads();
  const float total = warp_sum(lane < kFastWarps ? part[lane] : 0.0f);
  const float inv = rms_inverse(total, cols, p.eps);
  const float4* w4 = reinterpret_cast<const float4*>(p.weight);
#pragma unroll
  for (int k = 0; k < kProMaxF4; ++k) {
    const int f = (int)threadIdx.x + k * kFastThreads;
    if (f < cols4) {
      const float4 w = w4[f];
      store_x_fp32(
          xs, f,
          make_float4(__fmul_rn(__fmul_rn(v[k].x, inv), w.x), __fmul_rn(__fmul_rn(v[k].y, inv), w.y),
                      __fmul_rn(__fmul_rn(v[k].z, inv), w.z), __fmul_rn(__fmul_rn(v[k].w, inv), w.w)));
      if (blockIdx.x == 0) reinterpret_cast<float4*>(p.res_out)[f] = v[k];
    }
  }
}

// x = silu(g) · u with swiglu()'s operations (silu_mul: same bits as the separate kernel) → shared.
__device__ __forceinline__ void stage_x_swiglu(const float* __restrict__ g, const float* __restrict__ u,
                                               int cols, float4* xs) {
  const int cols4 = cols / 4;
  for (int f = (int)threadIdx.x; f < cols4; f += kFastThreads) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(g) + f),
                 b = __ldg(reinterpret_cast<const float4*>(u) + f);
    store_x_fp32(xs, f,
                 make_float4(silu_mul(a.x, b.x), silu_mul(a.y, b.y), silu_mul(a.z, b.z), silu_mul(a.w, b.w)));
  }
}

// Accumulates U chunks of the tile into acc. kFull: all U chunks exist for every lane (no guards).
template <int B, int U, bool kFull>
__device__ __forceinline__ void math_fp32(const Tile<U>& t, int k0, int lane, int chunks, int cols4,
                                          const float4* xs, float (&acc)[kR][B]) {
  const int key = lane & 7;  // c & 7 of every chunk this lane touches (k0 and 32u are multiples of 8)
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = k0 + lane + 32 * u;
    if (!kFull && c >= chunks) break;
    const float4* xc = xs + c * 8;
    float h[kR];
    __half2 bias[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) unpack_hz(t.hz[r][u], h[r], bias[r]);
    float s[kR][B];
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      float d[kR][8];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const uint32_t word = word_of(t.q[r][u], w);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 f = __half22float2(pair_minus_zero(word, j, bias[r]));
          d[r][2 * j] = f.x;
          d[r][2 * j + 1] = f.y;
        }
      }
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float4 x0 = xc[b * cols4 + ((2 * w) ^ key)];      // channels 8w .. 8w+3 of the chunk
        const float4 x1 = xc[b * cols4 + ((2 * w + 1) ^ key)];  // channels 8w+4 .. 8w+7
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          float v = w == 0 ? d[r][0] * x0.x : fmaf(d[r][0], x0.x, s[r][b]);
          v = fmaf(d[r][1], x0.y, v);
          v = fmaf(d[r][2], x0.z, v);
          v = fmaf(d[r][3], x0.w, v);
          v = fmaf(d[r][4], x1.x, v);
          v = fmaf(d[r][5], x1.y, v);
          v = fmaf(d[r][6], x1.z, v);
          s[r][b] = fmaf(d[r][7], x1.w, v);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) acc[r][b] = fmaf(h[r], s[r][b], acc[r][b]);
  }
}

// ---- variant B: half2 math -------------------------------------------------------------------------

// x [B][cols] → shared FP16 (x·2^e per chunk, slot m of chunk c at m ^ ((c >> 1) & 3)), then
// xinv [B][chunks] FP32 = 2^-e. Thread i handles 16-byte slot i (8 channels); the 4 slots of a chunk are
// 4 adjacent lanes, which share the chunk max through two shuffles.
template <int B>
__device__ __forceinline__ void stage_x_half(const float* __restrict__ x, int cols, uint4* xh, float* xinv) {
  const int cols8 = cols / 8, chunks = cols / 32, total = B * cols8;  // total % 4 == 0
  for (int base = 0; base < total; base += kFastThreads) {            // every lane runs every trip (shuffles)
    const int i = base + (int)threadIdx.x;
    const bool ok = i < total;
    float4 v0 = make_float4(0.f, 0.f, 0.f, 0.f), v1 = v0;
    if (ok) {
      v0 = __ldg(reinterpret_cast<const float4*>(x) + 2 * i);
      v1 = __ldg(reinterpret_cast<const float4*>(x) + 2 * i + 1);
    }
    // fmaxf ignores NaN, so a NaN x keeps a finite scale and stays NaN through the conversion.
    float mx = fmaxf(fmaxf(fmaxf(fabsf(v0.x), fabsf(v0.y)), fmaxf(fabsf(v0.z), fabsf(v0.w))),
                     fmaxf(fmaxf(fabsf(v1.x), fabsf(v1.y)), fmaxf(fabsf(v1.z), fabsf(v1.w))));
    mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 2));
    // mx = f·2^k, f ∈ [0.5, 1) → mx·2^(2−k) ∈ [2, 4). e clamped so that 2^e and 2^-e are normal FP32
    // (a chunk below 2^-124 gets a smaller scale; its FP16 values may then flush: absolute error
    // < 2^-148, far below any budget). Zero / Inf chunks keep e = 0 (Inf propagates like the reference).
    int e = 0;
    if (mx > 0.0f && mx <= 3.402823466e38f) {
      int k = 0;
      (void)frexpf(mx, &k);
      e = min(2 - k, 126);
    }
    const float sc = __int_as_float((e + 127) << 23);
    if (ok) {
      const int b = i / cols8, f = i - b * cols8, c = f >> 2, m = f & 3;
      const __half2 p0 = __floats2half2_rn(v0.x * sc, v0.y * sc),
                    p1 = __floats2half2_rn(v0.z * sc, v0.w * sc);
      const __half2 p2 = __floats2half2_rn(v1.x * sc, v1.y * sc),
                    p3 = __floats2half2_rn(v1.z * sc, v1.w * sc);
      uint4 o;
      memcpy(&o.x, &p0, 4);
      memcpy(&o.y, &p1, 4);
      memcpy(&o.z, &p2, 4);
      memcpy(&o.w, &p3, 4);
      xh[b * cols8 + c * 4 + (m ^ ((c >> 1) & 3))] = o;
      if (m == 0) xinv[b * chunks + c] = __int_as_float((127 - e) << 23);
    }
  }
}

template <int B, int U, bool kFull>
__device__ __forceinline__ void math_half(const Tile<U>& t, int k0, int lane, int chunks, int cols8,
                                          const uint4* xh, const float* xinv, float (&acc)[kR][B]) {
  const int key = (lane >> 1) & 3;  // (c >> 1) & 3 of every chunk this lane touches
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = k0 + lane + 32 * u;
    if (!kFull && c >= chunks) break;
    const uint4* xc = xh + c * 4;
    float h[kR];
    __half2 bias[kR];
#pragma unroll
    for (int r = 0; r < kR; ++r) unpack_hz(t.hz[r][u], h[r], bias[r]);
    // hs[r][b]: FP16 partial sums of words 0–1 and of words 2–3, each lane of a half2 summing 8 channels.
    __half2 hs[kR][B][2];
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      __half2 d[kR][4];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const uint32_t word = word_of(t.q[r][u], w);
#pragma unroll
        for (int j = 0; j < 4; ++j) d[r][j] = pair_minus_zero(word, j, bias[r]);
      }
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const uint4 xv = xc[b * cols8 + (w ^ key)];  // the 8 channels of word w, as 4 half2
        const __half2 x0 = half2_from_bits(xv.x), x1 = half2_from_bits(xv.y);
        const __half2 x2 = half2_from_bits(xv.z), x3 = half2_from_bits(xv.w);
#pragma unroll
        for (int r = 0; r < kR; ++r) {
          __half2 v = (w & 1) == 0 ? __hmul2(d[r][0], x0) : __hfma2(d[r][0], x0, hs[r][b][w >> 1]);
          v = __hfma2(d[r][1], x1, v);
          v = __hfma2(d[r][2], x2, v);
          hs[r][b][w >> 1] = __hfma2(d[r][3], x3, v);
        }
      }
    }
#pragma unroll
    for (int b = 0; b < B; ++b) {
      const float inv = xinv[b * chunks + c];
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const float2 f0 = __half22float2(hs[r][b][0]), f1 = __half22float2(hs[r][b][1]);
        acc[r][b] = fmaf(h[r] * inv, (f0.x + f0.y) + (f1.x + f1.y), acc[r][b]);
      }
    }
  }
}

// ---- the fast kernel -------------------------------------------------------------------------------

template <bool kHalf>
constexpr size_t smem_bytes_per_batch(int cols) {
  return kHalf ? (size_t)cols * 2 + (size_t)(cols / 32) * 4 : (size_t)cols * 4;
}

template <int B, int U, bool kHalf>
__device__ __forceinline__ void math(const FastArgs& a, const Tile<U>& t, int k0, int lane, const void* xs,
                                     float (&acc)[kR][B]) {
  const int cols = a.chunks * 32;
  const bool full = k0 + 32 * U <= a.chunks;  // warp-uniform
  if constexpr (kHalf) {
    const uint4* xh = static_cast<const uint4*>(xs);
    const float* xinv = reinterpret_cast<const float*>(xh + (size_t)B * (cols / 8));
    if (full)
      math_half<B, U, true>(t, k0, lane, a.chunks, cols / 8, xh, xinv, acc);
    else
      math_half<B, U, false>(t, k0, lane, a.chunks, cols / 8, xh, xinv, acc);
  } else {
    const float4* xf = static_cast<const float4*>(xs);
    if (full)
      math_fp32<B, U, true>(t, k0, lane, a.chunks, cols / 4, xf, acc);
    else
      math_fp32<B, U, false>(t, k0, lane, a.chunks, cols / 4, xf, acc);
  }
}

// One step of a warp: issue the loads of the next step into `nxt`, do the math of `cur` (step r0, k0),
// write the rows when they are complete, advance (r0, k0). Returns true when the warp's rows are done.
template <int B, int U, bool kHalf>
__device__ __forceinline__ bool step(const FastArgs& a, int& r0, int& k0, int row_end, int lane,
                                     const void* xs, const Tile<U>& cur, Tile<U>& nxt, float (&acc)[kR][B],
                                     float* __restrict__ y) {
  int k1 = k0 + 32 * U, r1 = r0;
  if (k1 >= a.chunks) k1 = 0, r1 = r0 + kR;
  if (r1 < row_end) load_tile<U>(a, r1, min(kR, row_end - r1), k1, lane, nxt);
  math<B, U, kHalf>(a, cur, k0, lane, xs, acc);
  if (k1 == 0) {  // rows r0 .. r0 + nr − 1 complete: reduce over the warp and write
    const int nr = min(kR, row_end - r0);
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float v = warp_sum(acc[r][b]);
        if (lane == 0 && r < nr) y[(size_t)b * a.rows + r0 + r] = v;
        acc[r][b] = 0.0f;
      }
  }
  r0 = r1;
  k0 = k1;
  return r0 >= row_end;
}

template <int B, int U, bool kHalf, Prologue kPro = Prologue::none>
__global__ void __launch_bounds__(kFastThreads, 1)
    w4_gemv_fast_kernel(FastArgs a, const float* __restrict__ x, float* __restrict__ y, PrologueArgs pro) {
  extern __shared__ uint4 smem_x[];  // staged x (layout per variant, see the top of the file)
  const int lane = (int)threadIdx.x % kWarpSize;
  const int warps = (int)gridDim.x * kFastWarps;
  const int gw = (int)blockIdx.x * kFastWarps + (int)threadIdx.x / kWarpSize;
  // Balanced contiguous row range of this warp.
  int r0 = (int)((long long)gw * a.rows / warps);
  const int row_end = (int)((long long)(gw + 1) * a.rows / warps);
  int k0 = 0;

  Tile<U> ta, tb;
  if (r0 < row_end) load_tile<U>(a, r0, min(kR, row_end - r0), 0, lane, ta);  // in flight during staging
  const int cols = a.chunks * 32;
  if constexpr (kPro == Prologue::add_rmsnorm) {
    static_assert(B == 1 && !kHalf, "fused prologues: variant A, one token");
    stage_x_add_rmsnorm(pro, cols, reinterpret_cast<float4*>(smem_x));
  } else if constexpr (kPro == Prologue::swiglu) {
    static_assert(B == 1 && !kHalf, "fused prologues: variant A, one token");
    stage_x_swiglu(x, pro.u, cols, reinterpret_cast<float4*>(smem_x));
  } else if constexpr (kHalf) {
    uint4* xh = smem_x;
    stage_x_half<B>(x, cols, xh, reinterpret_cast<float*>(xh + (size_t)B * (cols / 8)));
  } else {
    stage_x_fp32<B>(x, cols, reinterpret_cast<float4*>(smem_x));
  }
  __syncthreads();
  if (r0 >= row_end) return;  // after the barrier: every thread helped stage x

  float acc[kR][B];
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int b = 0; b < B; ++b) acc[r][b] = 0.0f;
  // Ping-pong between the two tiles (no register copies): ta holds the current step, then tb.
  while (true) {
    if (step<B, U, kHalf>(a, r0, k0, row_end, lane, smem_x, ta, tb, acc, y)) break;
    if (step<B, U, kHalf>(a, r0, k0, row_end, lane, smem_x, tb, ta, acc, y)) break;
  }
}

// ---- generic path ----------------------------------------------------------------------------------

// Any valid W4 shape: one warp per row, lane l handles words l, l + 32, … (8 channels each).
template <int B>
__global__ void __launch_bounds__(kBlockThreads)
    w4_gemv_generic_kernel(W4Args a, const float* __restrict__ x, float* __restrict__ y) {
  const int row = (int)((blockIdx.x * kBlockThreads + threadIdx.x) / kWarpSize);
  const int lane = (int)(threadIdx.x % kWarpSize);
  if (row >= a.rows) return;
  const int words = a.cols / kW4ChannelsPerWord;
  const int groups = a.cols / a.group;
  const uint32_t* qrow = a.qweight + (size_t)row * words;
  float acc[B];
#pragma unroll
  for (int b = 0; b < B; ++b) acc[b] = 0.0f;
  for (int k = lane; k < words; k += kWarpSize) {
    const int g = k * kW4ChannelsPerWord / a.group;
    const uint32_t word = qrow[k];
    const float h = __half2float(__ushort_as_half(a.scales[(size_t)row * groups + g]));
    const float z = __half2float(__ushort_as_half(a.zeros[(size_t)row * groups + g]));
#pragma unroll
    for (int c = 0; c < kW4ChannelsPerWord; ++c) {
      const float w = w4_dequantize_value(w4_unpack(word, c), h, z);  // exact in FP32
      const size_t col = (size_t)k * kW4ChannelsPerWord + c;
#pragma unroll
      for (int b = 0; b < B; ++b) acc[b] = fmaf(w, x[(size_t)b * a.cols + col], acc[b]);
    }
  }
#pragma unroll
  for (int b = 0; b < B; ++b) {
    const float s = warp_sum(acc[b]);
    if (lane == 0) y[(size_t)b * a.rows + row] = s;
  }
}

// ---- host side -------------------------------------------------------------------------------------

template <int B, int U, bool kHalf, Prologue kPro = Prologue::none>
void launch_fast(const FastArgs& a, const float* x, float* y, cudaStream_t stream,
                 const PrologueArgs& pro = {}) {
  const DeviceLimits& lim = device_limits();
  // Once per instantiation: allow more than the default 48 KB of dynamic shared memory (the add_rmsnorm
  // prologue's static shared memory comes off the limit).
  static const bool attr_set = (allow_max_dynamic_smem(w4_gemv_fast_kernel<B, U, kHalf, kPro>), true);
  (void)attr_set;
  const size_t smem = (size_t)B * smem_bytes_per_batch<kHalf>(a.chunks * 32);
  const int pairs_per_block = kFastWarps * kR;
  const int blocks = std::max(1, std::min(lim.sms, (a.rows + pairs_per_block - 1) / pairs_per_block));
  w4_gemv_fast_kernel<B, U, kHalf, kPro><<<blocks, kFastThreads, smem, stream>>>(a, x, y, pro);
  WKV_CHECK_LAUNCH();
}

FastArgs fast_args(const W4DeviceWeights& w) {
  FastArgs fa{};
  fa.rows = w.rows;
  fa.chunks = w.cols / 32;
  fa.groups = w.cols / w.group;
  fa.cpg = w.group / 32;
  fa.cpg_shift = (fa.cpg & (fa.cpg - 1)) == 0 ? __builtin_ctz((unsigned)fa.cpg) : -1;
  fa.qweight = reinterpret_cast<const uint4*>(w.qweight);
  fa.scales = w.scales;
  fa.zeros = w.zeros;
  return fa;
}

// U (chunks per row per step), chosen so that nothing spills under the 128-register cap of 512-thread
// blocks (ptxas -v, sm_90): two tiles hold 2·kR·U·5 registers. B = 1: U = 4 (4 KB per warp in flight);
// larger batches hold kR·B accumulators and FP32 partial sums and do B times the math per byte, so
// fewer bytes in flight suffice: U = 2 up to B = 4 (B = 2 in FP32: U = 2; half2: U = 4 fits), U = 1 above.
template <bool kHalf>
void dispatch_fast(const FastArgs& a, const float* x, int B, float* y, cudaStream_t stream) {
  switch (B) {
    case 1: launch_fast<1, 4, kHalf>(a, x, y, stream); break;
    case 2: launch_fast<2, kHalf ? 4 : 2, kHalf>(a, x, y, stream); break;
    case 3: launch_fast<3, 2, kHalf>(a, x, y, stream); break;
    case 4: launch_fast<4, 2, kHalf>(a, x, y, stream); break;
    case 5: launch_fast<5, 1, kHalf>(a, x, y, stream); break;
    case 6: launch_fast<6, 1, kHalf>(a, x, y, stream); break;
    case 7: launch_fast<7, 1, kHalf>(a, x, y, stream); break;
    case 8: launch_fast<8, 1, kHalf>(a, x, y, stream); break;
    default: require_arg(false, "w4_gemv: internal batch dispatch " + std::to_string(B));
  }
}

template <int B>
void launch_generic(const W4Args& a, const float* x, float* y, cudaStream_t stream) {
  const int blocks = (a.rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  w4_gemv_generic_kernel<B><<<blocks, kBlockThreads, 0, stream>>>(a, x, y);
  WKV_CHECK_LAUNCH();
}

void dispatch_generic(const W4Args& a, const float* x, int B, float* y, cudaStream_t stream) {
  switch (B) {
    case 1: launch_generic<1>(a, x, y, stream); break;
    case 2: launch_generic<2>(a, x, y, stream); break;
    case 3: launch_generic<3>(a, x, y, stream); break;
    case 4: launch_generic<4>(a, x, y, stream); break;
    case 5: launch_generic<5>(a, x, y, stream); break;
    case 6: launch_generic<6>(a, x, y, stream); break;
    case 7: launch_generic<7>(a, x, y, stream); break;
    case 8: launch_generic<8>(a, x, y, stream); break;
    default: require_arg(false, "w4_gemv: internal batch dispatch " + std::to_string(B));
  }
}

bool uses_packed(const W4DeviceWeights& w) { return w.packed != nullptr; }

W4PackedView packed_view(const W4DeviceWeights& w) {
  return {w.rows, w.cols, w.packed, w.next_l2, w.predecessor};
}

detail::W4GemvVariant parse_variant_env() {
  const char* v = std::getenv("WKV_W4_GEMV_VARIANT");
  if (!v || !*v) return detail::W4GemvVariant::packed;  // default: F where it runs, else A (w4_gemv.h)
  const std::string s(v);
  if (s == "A" || s == "a") return detail::W4GemvVariant::fp32;
  if (s == "B" || s == "b") return detail::W4GemvVariant::half2;
  if (s == "C" || s == "c") return detail::W4GemvVariant::tc;
  if (s == "D" || s == "d") return detail::W4GemvVariant::bulk;
  if (s == "E" || s == "e") return detail::W4GemvVariant::lean;
  if (s == "F" || s == "f") return detail::W4GemvVariant::packed;
  require_arg(
      false,
      "WKV_W4_GEMV_VARIANT='" + s +
          "': expected A (FP32 math), B (half2 math), C (tensor cores), D (bulk copies + tensor cores), E (lean "
          "tensor cores) or F (packed layout, integer tensor cores)");
  return detail::W4GemvVariant::fp32;
}

}  // namespace

void validate_w4_device(const W4DeviceWeights& w, const char* what) {
  const std::string n = what ? what : "W4 weights";
  require_arg(w.rows >= 1 && w.cols >= 1, n + ": W4 shape " + std::to_string(w.rows) + "x" +
                                              std::to_string(w.cols) + " must have rows, cols >= 1");
  require_arg(w.group >= 8 && w.group % 8 == 0 && w.cols % w.group == 0,
              n + ": W4 group " + std::to_string(w.group) + " must be a multiple of 8 dividing cols " +
                  std::to_string(w.cols));
  require_arg((w.qweight && w.scales && w.zeros) || (w.packed && !w.qweight && !w.scales && !w.zeros),
              n + ": W4 qweight / scales / zeros must be non-null (or all null with a packed copy)");
}

bool w4_gemv_fast_path(const W4DeviceWeights& w, const float* x) {
  return w.cols % 32 == 0 && w.group % 32 == 0 && w.cols <= kFastMaxCols && aligned16(w.qweight) &&
         aligned16(x);
}

namespace detail {

const char* w4_gemv_variant_name(W4GemvVariant v) {
  return v == W4GemvVariant::half2    ? "B"
         : v == W4GemvVariant::tc     ? "C"
         : v == W4GemvVariant::bulk   ? "D"
         : v == W4GemvVariant::lean   ? "E"
         : v == W4GemvVariant::packed ? "F"
                                      : "A";
}

W4GemvVariant w4_gemv_default_variant() {
  static const W4GemvVariant v = parse_variant_env();
  return v;
}

void w4_gemv_with_variant(const W4DeviceWeights& w, const float* x, int B, float* y, W4GemvVariant v,
                          cudaStream_t stream) {
  validate_w4_device(w, "w4_gemv");
  require_arg(B >= 1, "w4_gemv: batch " + std::to_string(B) + " must be >= 1");
  require_arg(x && y, "w4_gemv: x and y must be non-null device pointers");
  // F: ≤ 2 batch rows per launch, so more rows re-read the weights; A takes up to 8 in one launch when the
  // storage format is there too. Packed-only weights always run F.
  if ((v == W4GemvVariant::packed && uses_packed(w) && aligned16(x) && B <= 2) || !w.qweight) {
    w4_gemv_packed(packed_view(w), x, B, y, stream);
    return;
  }  // F without a packed copy, or for more batch rows than one launch takes: A below
  const bool half = v == W4GemvVariant::half2;
  const bool tc = v == W4GemvVariant::tc;
  const int bulk_fit = w4_gemv_fast_path(w, x) && v == W4GemvVariant::bulk
                           ? w4_gemv_bulk_max_batch(w.cols, device_limits().smem_optin)
                           : 0;
  if (bulk_fit > 0) {  // D: ≤ 4 batch rows per launch, split evenly
    const int launches = (B + bulk_fit - 1) / bulk_fit, per = (B + launches - 1) / launches;
    for (int b0 = 0; b0 < B; b0 += per)
      w4_gemv_bulk_launch(w, x + (size_t)b0 * w.cols, std::min(per, B - b0), y + (size_t)b0 * w.rows,
                          device_limits().sms, device_limits().smem_optin, stream);
    return;
  }  // D on a shape or device it cannot run: A below
  const int lean_fit = w4_gemv_fast_path(w, x) && v == W4GemvVariant::lean
                           ? w4_gemv_lean_max_batch(w, device_limits().smem_optin)
                           : 0;
  if (lean_fit > 0) {  // E: ≤ 4 batch rows per launch, split evenly
    const int launches = (B + lean_fit - 1) / lean_fit, per = (B + launches - 1) / launches;
    for (int b0 = 0; b0 < B; b0 += per)
      w4_gemv_lean_launch(w, x + (size_t)b0 * w.cols, std::min(per, B - b0), y + (size_t)b0 * w.rows,
                          device_limits().sms, stream);
    return;
  }  // E on a shape it cannot run: A below
  // Batch rows per launch: ≤ 8 and x of all of them in shared memory; B is split evenly (8 at a budget
  // of 5 runs as 4 + 4, not 5 + 3: same weight traffic, smaller kernels).
  int per_launch = kMaxBatch;
  bool fast = w4_gemv_fast_path(w, x);
  if (fast) {
    const size_t per_batch = tc     ? w4_gemv_tc_smem_bytes(1, w.cols) - w4_gemv_tc_smem_bytes(0, w.cols)
                             : half ? smem_bytes_per_batch<true>(w.cols)
                                    : smem_bytes_per_batch<false>(w.cols);
    const size_t fixed = tc ? w4_gemv_tc_smem_bytes(0, w.cols) : 0;
    const size_t optin = (size_t)device_limits().smem_optin;
    const int fit = optin <= fixed ? 0 : (int)std::min<size_t>(kMaxBatch, (optin - fixed) / per_batch);
    if (fit < 1) {
      fast = false;  // a device with less shared memory than one row of x needs
    } else {
      const int launches = (B + fit - 1) / fit;
      per_launch = (B + launches - 1) / launches;
    }
  }
  const W4Args ga{w.rows, w.cols, w.group, w.qweight, w.scales, w.zeros};
  const FastArgs fa = fast ? fast_args(w) : FastArgs{};
  for (int b0 = 0; b0 < B; b0 += per_launch) {
    const int nb = std::min(per_launch, B - b0);
    const float* xb = x + (size_t)b0 * w.cols;
    float* yb = y + (size_t)b0 * w.rows;
    if (!fast) {
      dispatch_generic(ga, xb, nb, yb, stream);
    } else if (tc) {
      w4_gemv_tc_launch(w, xb, nb, yb, device_limits().sms, device_limits().smem_optin, stream);
    } else if (half) {
      dispatch_fast<true>(fa, xb, nb, yb, stream);
    } else {
      dispatch_fast<false>(fa, xb, nb, yb, stream);
    }
  }
}

}  // namespace detail

void w4_gemv(const W4DeviceWeights& w, const float* x, int B, float* y, cudaStream_t stream) {
  detail::w4_gemv_with_variant(w, x, B, y, detail::w4_gemv_default_variant(), stream);
}

namespace {

// Variant F with a packed copy: the packed kernel with its own prologues.
bool packed_selected(const W4DeviceWeights& w) {
  return detail::w4_gemv_default_variant() == detail::W4GemvVariant::packed && uses_packed(w);
}

// A's fused prologues: A selected, or F selected for weights without a packed copy (A runs for those).
bool a_fuses_prologue(const W4DeviceWeights& w, bool add_rmsnorm) {
  const detail::W4GemvVariant v = detail::w4_gemv_default_variant();
  const bool a_runs = v == detail::W4GemvVariant::fp32 || (v == detail::W4GemvVariant::packed && !uses_packed(w));
  return a_runs && w.cols % 32 == 0 &&
         w.group % 32 == 0 && w.cols <= (add_rmsnorm ? kProMaxCols : kFastMaxCols) && aligned16(w.qweight) &&
         (size_t)w.cols * 4 + 1024 <= (size_t)device_limits().smem_optin;  // + the prologue's static memory
}

}  // namespace

bool w4_gemv_wants_packed(int rows, int cols, int group) {
  return detail::w4_gemv_default_variant() == detail::W4GemvVariant::packed &&
         w4_gemv_packed_supported(rows, cols, group);
}

bool w4_gemv_fuses_prologue(const W4DeviceWeights& w, bool add_rmsnorm) {
  return packed_selected(w) || a_fuses_prologue(w, add_rmsnorm);
}

void w4_gemv_add_rmsnorm(const W4DeviceWeights& w, const float* res, const float* r, const float* norm_weight,
                         float eps, float* res_out, float* input_scratch, float* y, cudaStream_t stream) {
  validate_w4_device(w, "w4_gemv_add_rmsnorm");
  require_arg(res && r && norm_weight && res_out && input_scratch && y,
              "w4_gemv_add_rmsnorm: every pointer must be a non-null device pointer");
  require_arg(res_out != res && res_out != r, "w4_gemv_add_rmsnorm: res_out must not alias res or r");
  require_arg(std::isfinite(eps) && eps >= 0.0f, "w4_gemv_add_rmsnorm: eps must be finite and >= 0");
  const bool aligned = aligned16(res) && aligned16(r) && aligned16(norm_weight) && aligned16(res_out);
  if (packed_selected(w) && aligned) {
    w4_gemv_packed_add_rmsnorm(packed_view(w), res, r, norm_weight, eps, res_out, y, stream);
    return;
  }
  if (a_fuses_prologue(w, true) && aligned) {
    launch_fast<1, 4, false, Prologue::add_rmsnorm>(fast_args(w), res, y, stream,
                                                    detail::add_rmsnorm_prologue(res, r, norm_weight, eps, res_out));
    return;
  }
  CUDA_CHECK(cudaMemcpyAsync(res_out, res, sizeof(float) * (size_t)w.cols, cudaMemcpyDeviceToDevice, stream));
  add_rmsnorm_f32(res_out, r, norm_weight, 1, w.cols, eps, input_scratch, stream);
  w4_gemv(w, input_scratch, 1, y, stream);
}

void w4_gemv_swiglu(const W4DeviceWeights& w, float* g, const float* u, float* y, cudaStream_t stream) {
  validate_w4_device(w, "w4_gemv_swiglu");
  require_arg(g && u && y, "w4_gemv_swiglu: g, u and y must be non-null device pointers");
  if (packed_selected(w) && aligned16(g) && aligned16(u)) {
    w4_gemv_packed_swiglu(packed_view(w), g, u, y, stream);
    return;
  }
  if (a_fuses_prologue(w, false) && aligned16(g) && aligned16(u)) {
    launch_fast<1, 4, false, Prologue::swiglu>(fast_args(w), g, y, stream, detail::swiglu_prologue(u));
    return;
  }
  swiglu(g, u, w.cols, stream);
  w4_gemv(w, g, 1, y, stream);
}

}  // namespace wkv::kernels
