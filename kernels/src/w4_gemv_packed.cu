// W4 GEMV "F": packed records streamed by the copy engine, 8-bit integer tensor cores (sm_90).
//
// Why. Nsight Compute on the H200 (docs/kernel-notes.md) found every earlier variant limited by the work per
// weight byte — A 11, C 8.7, D 14, E 8.5 thread-instructions per byte where an SM can issue ~7.8 at 4.3 TB/s —
// and by the bytes a warp keeps in flight through registers. Here:
//   * Memory: one producer thread per block hands the copy engine (cp.async.bulk) 34 KB chunks of the block's
//     contiguous record range into a ring of up to 12 shared-memory slots, so ~100–200 KB per SM are in flight
//     whatever the math does, for a few instructions per chunk.
//   * Math: the packed layout (w4_packed_format.h) puts each lane's mma.m16n8k32 A fragments (8-bit codes
//     q ∈ [0, 15]) in one 16-byte shared load per 32 weights; AND / SHIFT+AND extract them, with no conversions.
//     x goes in as B: per 128-channel group x = 2^E·V, V an integer of ≤ 30 bits split into four signed 8-bit
//     digits, one mma column each (columns 4b … 4b + 3 for batch row b, so 2 batch rows per mma). The int32
//     accumulators start at −z·Σ digit, so the tensor core leaves Σ (q − z)·digit exactly; the epilogue weighs
//     the digits by 2^(E + 8d) in FP32 and scales by h. Per 1088-byte record and lane: 6 shared loads,
//     ~18 integer ops, 4 mma, ~10 FP32 ops: about 1.8 instructions per weight byte (E: 8.5 measured).
//
// Work split. Records (16 rows × 128 channels) are tile-major, so block k of n = min(#SMs, tiles) takes the
// contiguous tiles [T·k/n, T·(k+1)/n): whole tiles, so no row is shared between blocks (the imbalance is at most
// one tile: 3–6% on the 7B shapes, against a cross-block reduction that measured ~3 µs per launch). Consumer warp
// w (16 of them) takes records w and w + 16 of every 32-record chunk of the block's range (so its records are
// w, w + 16, w + 32, … in order) and keeps one partial sum per row
// of its current tile; when the tile changes it stores the partial to shared memory [tile][warp]. At the end
// the block sums the warps in order and writes y. Deterministic.
//
// Order in a block: the 16 consumer warps issue the loads of their groups of x while the producer initializes
// the ring's barriers; then the producer fills the ring while the consumers convert x and meet at a named
// barrier of their own (staging behind a full ring measured 4–10 µs: x's loads queued behind the copies; with
// the producer warp among the stagers the block barrier also waited for its copy issue), then the loop.
//
// Lane (g, t) = (lane / 4, lane % 4): A rows g and g + 8; B column g = digit g % 4 of batch row g / 4 (lanes of
// columns beyond 4·B read a zero block); D: rows g, g + 8 × columns 2t, 2t + 1, i.e. batch row t / 2 and digits
// (0, 1) for even t, (2, 3) for odd t. The epilogue constants are per (group, t): even t (2^E, 2^(E+8),
// Σ digit 0, Σ digit 1), odd t (2^(E+16), 2^(E+24), Σ digit 2, Σ digit 3); the two lanes' partials are added
// when a tile is flushed.
#include "wkv_kernels/w4_gemv_packed.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "bulk_copy.cuh"
#include "cuda_check.h"
#include "gemv_prologue.h"
#include "kernel_util.h"
#include "w4_gemv_variant.h"
#include "w4_packed_format.h"

namespace wkv::kernels {

namespace {

using detail::bulk_copy;
using detail::bulk_prefetch_l2;
using detail::mbar_arrive;
using detail::mbar_arrive_expect_tx;
using detail::mbar_init;
using detail::mbar_init_fence;
using detail::mbar_wait;
using detail::Prologue;
using detail::PrologueArgs;
using detail::smem_u32;

constexpr int kConsumerWarps = 16;
constexpr int kThreads = (kConsumerWarps + 1) * kWarpSize;  // + one producer warp
constexpr int kWarps = kThreads / kWarpSize;
// Records per consumer warp and chunk: 2 makes the chunks 34 KB, halving the bulk copies the producer issues
// (each may hold its thread for a few hundred ns: docs/kernel-notes.md, session 4).
constexpr int kRecordsPerWarp = 2;
constexpr int kChunkRecords = kConsumerWarps * kRecordsPerWarp;
constexpr int kRecordBytes = (int)sizeof(W4PackedRecord);
constexpr int kChunkBytes = kChunkRecords * kRecordBytes;
constexpr int kMaxSlots = 12;
constexpr int kMaxBatch = 2;          // batch rows per launch: 4 digit columns each, 8 mma columns
constexpr int kDigitColBytes = 144;   // one digit column of one group: 4 lanes t × 32 bytes + 16 (bank spread)
constexpr int kZeroBytes = 128;       // what lanes of unused columns read
constexpr int kMaxTileSlots = 32;     // (tiles a block touches) × B partial-sum rows in shared memory
constexpr uint32_t kLowNibbles = 0x0F0F0F0Fu;
static_assert(kRecordBytes % 16 == 0 && kChunkBytes % 16 == 0, "bulk copies move multiples of 16 bytes");

// Host-computed launch plan: shared-memory offsets (bytes) and sizes.
struct Plan {
  int rows = 0, groups = 0, B = 0, tiles = 0, blocks = 0, slots = 0, max_tiles = 0;
  uint32_t off_x = 0, off_zero = 0, off_cst = 0, off_red = 0, off_bar = 0;
  size_t smem = 0;
};

struct Args {
  Plan p;
  const uint8_t* records;
  int prefetch;        // 1: hint L2 with the block's records beyond the first ring fill
  int early_ring;      // 1: the ring fill is issued before the grid-dependency wait (launched with PDL)
  unsigned long long* trace;  // profiling (w4_gemv_packed_trace): [blocks][kTracePoints] %globaltimer, or null
};

// Phase timestamps of one block, for the benchmark's breakdown of where a launch spends its time.
// start, barriers ready, first x values in (warp 0), x staged, first record in, loop done, warps reduced, end,
// then inside the staging: warp 0's first round converted, warp 15's first value in, warp 15's first round
// converted, warp 0 done zeroing (before the consumers' barrier).
constexpr int kTracePoints = 12;

// `dep`: a value the timestamp must wait for (the comparison reads it; it adds 0 ns unless dep is NaN).
__device__ __forceinline__ void trace_point(const Args& a, int point, float dep = 0.0f) {
  if (a.trace) {
    unsigned long long t;
    const unsigned long long wait = dep != dep ? 1ull : 0ull;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t) : "l"(wait));
    a.trace[(size_t)blockIdx.x * kTracePoints + point] = t + wait;
  }
}

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

Plan make_plan(int rows, int cols, int B, int sms, int smem_optin, int max_slots = kMaxSlots) {
  Plan p;
  p.rows = rows;
  p.groups = cols / kW4PackedGroup;
  p.B = B;
  p.tiles = (int)w4_packed_tiles(rows);
  p.blocks = std::max(1, std::min(sms, p.tiles));
  p.max_tiles = (p.tiles + p.blocks - 1) / p.blocks;
  const int per_block = p.max_tiles * p.groups;  // records
  size_t o = 0;
  p.off_x = (uint32_t)o;
  o += (size_t)p.groups * 4 * B * kDigitColBytes;
  p.off_zero = (uint32_t)o;
  o += kZeroBytes;
  p.off_cst = (uint32_t)o;
  o += (size_t)p.groups * 4 * sizeof(float4);
  p.off_red = (uint32_t)o;
  o += (size_t)p.max_tiles * kConsumerWarps * B * kW4PackedRows * sizeof(float);
  o = align_up(o, 16);
  p.off_bar = (uint32_t)o;
  o += 2 * kMaxSlots * sizeof(uint64_t);
  o = align_up(o, 128);
  const size_t fixed = o + 1024;  // + static shared memory and slack
  p.slots = fixed >= (size_t)smem_optin ? 0 : (int)std::min<size_t>(max_slots, ((size_t)smem_optin - fixed) / kChunkBytes);
  const int chunks = (per_block + kChunkRecords - 1) / kChunkRecords;
  p.slots = std::min(p.slots, std::max(2, chunks));
  p.smem = o + (size_t)p.slots * kChunkBytes;
  if (p.max_tiles * B > kMaxTileSlots || p.slots < 2) p.slots = 0;  // unsupported
  return p;
}

// The ring starts after the fixed part (128-byte aligned).
__device__ __forceinline__ uint8_t* ring_of(uint8_t* sm, const Plan& p) {
  return sm + ((p.off_bar + 2 * kMaxSlots * sizeof(uint64_t) + 127) / 128) * 128;
}

// ---- x staging: per (batch row, group) one warp turns 128 FP32 values into digits ------------------

// v·2^e exactly (no rounding unless the result leaves the normal range): one multiply when 2^e is a normal float.
__device__ __forceinline__ float scale_pow2(float v, int e) {
  return e >= -126 && e <= 127 ? v * __int_as_float((127 + e) << 23) : ldexpf(v, e);
}

// Warp reductions of integers: one REDUX instruction on sm_80+ (the only devices F runs on are sm_90; the
// shuffle form keeps other architectures compiling).
__device__ __forceinline__ uint32_t warp_max_u32(uint32_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_max_sync(0xFFFFFFFFu, v);
#else
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
  return v;
#endif
}
__device__ __forceinline__ int warp_sum_i32(int v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_add_sync(0xFFFFFFFFu, v);
#else
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
  return v;
#endif
}

// Lane `lane` holds channels 4·lane … 4·lane + 3 of group `grp` of batch row b in v.
__device__ __forceinline__ void stage_group(float4 v, int b, int grp, int lane, const Plan& p, uint8_t* sm) {
  const float vv[4] = {v.x, v.y, v.z, v.w};
  // max |x| of the group as bits (non-negative floats order like their bit patterns; NaN and Inf sort above
  // every finite value), one warp-reduce instruction.
  uint32_t mb = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) mb = max(mb, __float_as_uint(vv[i]) & 0x7FFFFFFFu);
  mb = warp_max_u32(mb);
  const bool bad = mb >= 0x7F800000u;
  // mx < 2^k with k = biased exponent − 126 (subnormals: 2^-125), E = k − 29 so that |x|·2^-E < 2^29.
  const int E = bad || mb == 0 ? 0 : max((int)(mb >> 23), 1) - 126 - 29;
  // V = rint(x·2^-E), |V| ≤ 2^29, in balanced base-256 digits: D0 = the low byte of V read as int8, V1 =
  // (V + 128) >> 8 = (V − D0) / 256, D1 = the low byte of V1, …, D3 = V3 ∈ [−32, 32]. The packed digit words are
  // byte gathers; Σ D_d = Σ V_d − 256·Σ V_(d+1) (wrapping int32 sums: the results are small).
  int u[4][4];  // [digit level][channel]
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    u[0][i] = bad ? 0 : __float2int_rn(scale_pow2(vv[i], -E));
#pragma unroll
    for (int d = 1; d < 4; ++d) u[d][i] = (u[d - 1][i] + 128) >> 8;
  }
  uint32_t dw[4];
  int sum[4];
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    dw[d] = __byte_perm(__byte_perm(u[d][0], u[d][1], 0x0040), __byte_perm(u[d][2], u[d][3], 0x0040), 0x5410);
    sum[d] = (int)((uint32_t)u[d][0] + (uint32_t)u[d][1] + (uint32_t)u[d][2] + (uint32_t)u[d][3]);
  }
  int dsum[4];
#pragma unroll
  for (int d = 0; d < 4; ++d) {
    const int own = d < 3 ? (int)((uint32_t)sum[d] - ((uint32_t)sum[d + 1] << 8)) : sum[3];
    dsum[d] = warp_sum_i32(own);
  }
  // Channels 4·lane … of the group are k-step s = lane / 8 and, within it, B register 0 (k 4t …) of lane
  // t = lane % 8 for lane % 8 < 4, else register 1 (k 16 + 4t …) of t = lane % 8 − 4.
  const int s = lane >> 3, t = lane & 3, word = 2 * s + ((lane >> 2) & 1);
  uint8_t* col = sm + p.off_x + ((size_t)grp * 4 * p.B + 4 * b) * kDigitColBytes + t * 32 + word * 4;
#pragma unroll
  for (int d = 0; d < 4; ++d) *reinterpret_cast<uint32_t*>(col + d * kDigitColBytes) = dw[d];
  if (lane < 2) {  // lane 0: digits 0, 1 (D columns 4b, 4b + 1), lane 1: digits 2, 3
    const float nan = __int_as_float(0x7FC00000);
    const int d0 = 2 * lane;
    const float4 c = make_float4(bad ? nan : scale_pow2(1.0f, E + 8 * d0), bad ? nan : scale_pow2(1.0f, E + 8 * d0 + 8),
                                 __int_as_float(dsum[d0]), __int_as_float(dsum[d0 + 1]));
    reinterpret_cast<float4*>(sm + p.off_cst)[grp * 4 + 2 * b + lane] = c;
  }
}

// ---- x staging, by the 16 consumer warps only (the producer warp fills the ring meanwhile) --------

constexpr int kRound = 6;  // groups per warp kept in registers between load and conversion (7B: all of them)

// Consumer warps meet without the producer warp (named barrier 1; 0 is __syncthreads).
__device__ __forceinline__ void consumer_sync() {
  asm volatile("bar.sync 1, %0;" ::"n"(kConsumerWarps * kWarpSize) : "memory");
}

struct XRound {
  float4 v[kRound];  // lane's 4 channels of groups warp, warp + 16, … (first round)
  float inv = 0.0f;  // add_rmsnorm: 1 / rms
};

// The lane's 4 channels of item (batch row, group), through the prologue.
template <Prologue kPro>
__device__ __forceinline__ float4 x_item(const Plan& p, const float* __restrict__ x, const PrologueArgs& pro,
                                         float inv, int item, int lane) {
  const int cols = p.groups * kW4PackedGroup, b = item / p.groups, grp = item - b * p.groups;
  const size_t f = ((size_t)b * cols + (size_t)grp * kW4PackedGroup) / 4 + lane;
  if constexpr (kPro == Prologue::add_rmsnorm) {
    const float4 rs = reinterpret_cast<const float4*>(pro.res)[f], rr = reinterpret_cast<const float4*>(pro.r)[f];
    const float4 w = reinterpret_cast<const float4*>(pro.weight)[f];
    return make_float4(__fmul_rn(__fmul_rn(__fadd_rn(rs.x, rr.x), inv), w.x),
                       __fmul_rn(__fmul_rn(__fadd_rn(rs.y, rr.y), inv), w.y),
                       __fmul_rn(__fmul_rn(__fadd_rn(rs.z, rr.z), inv), w.z),
                       __fmul_rn(__fmul_rn(__fadd_rn(rs.w, rr.w), inv), w.w));
  } else if constexpr (kPro == Prologue::swiglu) {
    const float4 gt = __ldg(reinterpret_cast<const float4*>(x) + f);
    const float4 up = __ldg(reinterpret_cast<const float4*>(pro.u) + f);
    return make_float4(silu_mul(gt.x, up.x), silu_mul(gt.y, up.y), silu_mul(gt.z, up.z), silu_mul(gt.w, up.w));
  } else {
    return __ldg(reinterpret_cast<const float4*>(x) + f);
  }
}

// Consumers: the add_rmsnorm prologue's sum of squares (one consumer barrier), then the loads of the warp's
// first round of groups, left in flight in `r` (the caller's block barrier comes next).
template <Prologue kPro>
__device__ __forceinline__ void stage_x_load(const Plan& p, const float* __restrict__ x, const PrologueArgs& pro,
                                             float* part, XRound& r) {
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int cols = p.groups * kW4PackedGroup;
  if constexpr (kPro == Prologue::add_rmsnorm) {
    const float4* res4 = reinterpret_cast<const float4*>(pro.res);
    const float4* r4 = reinterpret_cast<const float4*>(pro.r);
    float ss = 0.0f;
#pragma unroll 4
    for (int f = tid; f < cols / 4; f += kConsumerWarps * kWarpSize) {
      const float4 rs = res4[f], rr = r4[f];
      const float4 v =
          make_float4(__fadd_rn(rs.x, rr.x), __fadd_rn(rs.y, rr.y), __fadd_rn(rs.z, rr.z), __fadd_rn(rs.w, rr.w));
      ss = fmaf(v.x, v.x, ss);
      ss = fmaf(v.y, v.y, ss);
      ss = fmaf(v.z, v.z, ss);
      ss = fmaf(v.w, v.w, ss);
      if (blockIdx.x == 0) reinterpret_cast<float4*>(pro.res_out)[f] = v;
    }
    ss = warp_sum(ss);
    if (lane == 0) part[warp] = ss;
    consumer_sync();
    float total = 0.0f;
    for (int w = 0; w < kConsumerWarps; ++w) total += part[w];
    r.inv = rms_inverse(total, cols, pro.eps);
  }
  const int items = p.B * p.groups;
#pragma unroll
  for (int k = 0; k < kRound; ++k) {
    const int item = warp + k * kConsumerWarps;
    if (item < items) r.v[k] = x_item<kPro>(p, x, pro, r.inv, item, lane);
  }
}

// Consumers: converts the first round from `r`, loads and converts any further rounds (cols > 16·6·128), zeroes
// the partial sums; ends with a consumer barrier.
template <Prologue kPro>
__device__ __forceinline__ void stage_x_convert(const Plan& p, const float* __restrict__ x, const PrologueArgs& pro,
                                                uint8_t* sm, const Args& a, XRound& r) {
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int items = p.B * p.groups;
  if (warp == 0 && lane == 0) trace_point(a, 2, r.v[0].x);  // once the first value is in
  if (warp == kConsumerWarps - 1 && lane == 0) trace_point(a, 9, r.v[0].x);
#pragma unroll
  for (int k = 0; k < kRound; ++k) {
    const int item = warp + k * kConsumerWarps;
    if (item < items) {
      const int b = item / p.groups;
      stage_group(r.v[k], b, item - b * p.groups, lane, p, sm);
    }
  }
  if (warp == 0 && lane == 0) trace_point(a, 8);
  if (warp == kConsumerWarps - 1 && lane == 0) trace_point(a, 10);
  for (int item = warp + kRound * kConsumerWarps; item < items; item += kConsumerWarps) {
    const int b = item / p.groups;
    stage_group(x_item<kPro>(p, x, pro, r.inv, item, lane), b, item - b * p.groups, lane, p, sm);
  }
  constexpr int kN = kConsumerWarps * kWarpSize;
  // Zero block, the epilogue weights of the batch row a B = 1 launch does not have, the partial sums.
  for (int i = tid; i < kZeroBytes / 4; i += kN) reinterpret_cast<uint32_t*>(sm + p.off_zero)[i] = 0u;
  if (p.B == 1)
    for (int i = tid; i < 2 * p.groups; i += kN)
      reinterpret_cast<float4*>(sm + p.off_cst)[(i / 2) * 4 + 2 + (i & 1)] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float* red = reinterpret_cast<float*>(sm + p.off_red);
  for (int i = tid; i < p.max_tiles * kConsumerWarps * p.B * kW4PackedRows; i += kN) red[i] = 0.0f;
  if (warp == 0 && lane == 0) trace_point(a, 11);
  consumer_sync();
}

// ---- the main loop ------------------------------------------------------------------------------

// D (int32, rows g / g + 8 × columns 2t, 2t + 1) += A (u8 codes) · B (s8 digits), m16n8k32.
__device__ __forceinline__ void mma_u8s8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  (void)d, (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1;
  __trap();
#endif
}

// One k-step: words wa (row g) and wb (row g + 8) hold channels 4t … (low nibbles) and 16 + 4t … (high).
__device__ __forceinline__ void mma_step(int (&d)[4], uint32_t wa, uint32_t wb, uint32_t b0, uint32_t b1) {
  mma_u8s8(d, wa & kLowNibbles, wb & kLowNibbles, (wa >> 4) & kLowNibbles, (wb >> 4) & kLowNibbles, b0, b1);
}

// acc += this lane's share of one record (see the top of the file). The zero point enters the integer
// accumulators: D starts at −z·Σ digit (exact, |z·Σ| ≤ 1024·2^14), so D = Σ (q − z)·digit exactly.
__device__ __forceinline__ void record_math(const uint8_t* rec, const uint8_t* xcol, const float4& cs, int lane,
                                            int g, float& acc0, float& acc1) {
  const uint4 q0 = *reinterpret_cast<const uint4*>(rec + lane * 16);
  const uint4 q1 = *reinterpret_cast<const uint4*>(rec + 512 + lane * 16);
  const uint2 hz = *reinterpret_cast<const uint2*>(rec + 1024 + g * 8);
  const uint4 b0 = *reinterpret_cast<const uint4*>(xcol);
  const uint4 b1 = *reinterpret_cast<const uint4*>(xcol + 16);
  const int za = (int)(int16_t)(hz.y & 0xFFFFu), zb = (int)hz.y >> 16;  // z of rows g, g + 8 (int16)
  const int s0 = __float_as_int(cs.z), s1 = __float_as_int(cs.w);       // Σ digit of columns 2t, 2t + 1
  int d[4] = {-za * s0, -za * s1, -zb * s0, -zb * s1};
  mma_step(d, q0.x, q0.y, b0.x, b0.y);  // channels 0 … 31 of the group
  mma_step(d, q0.z, q0.w, b0.z, b0.w);  // 32 … 63
  mma_step(d, q1.x, q1.y, b1.x, b1.y);  // 64 … 95
  mma_step(d, q1.z, q1.w, b1.z, b1.w);  // 96 … 127
  const float2 h = __half22float2(half2_from_bits(hz.x));  // rows g, g + 8
  acc0 = fmaf(h.x, fmaf((float)d[1], cs.y, (float)d[0] * cs.x), acc0);
  acc1 = fmaf(h.y, fmaf((float)d[3], cs.y, (float)d[2] * cs.x), acc1);
}

// kMinBlocks 2 (WKV_W4_PACKED_PAIR): registers bounded so that two blocks fit on one SM (≤ 60 per thread at
// 544 threads), for a following launch's block to start beside this one (launch() says why).
template <Prologue kPro, int kMinBlocks>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    w4_gemv_packed_kernel(Args a, const float* __restrict__ x, float* __restrict__ y, PrologueArgs pro) {
  extern __shared__ __align__(128) uint8_t sm[];
  __shared__ float part[kWarps];
  const Plan& p = a.p;
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int t0 = (int)((long long)p.tiles * blockIdx.x / p.blocks);
  const int t1 = (int)((long long)p.tiles * (blockIdx.x + 1) / p.blocks);
  const int rb = t0 * p.groups, nrec = (t1 - t0) * p.groups;
  const int nchunks = (nrec + kChunkRecords - 1) / kChunkRecords;
  uint64_t* full = reinterpret_cast<uint64_t*>(sm + p.off_bar);
  uint64_t* empty = full + kMaxSlots;
  uint8_t* ring = ring_of(sm, p);
  const uint8_t* src = a.records + (size_t)rb * kRecordBytes;

  if (tid == 0) trace_point(a, 0);
  const bool producer_warp = warp == kConsumerWarps, producer = producer_warp && lane == 0;
  // Programmatic dependent launch: the next kernel of the stream may launch now. Its blocks cannot share an SM
  // with this one (shared memory), so each takes an SM as this kernel's block there exits, without the launch
  // gap between kernels (~3.8 µs per F launch in a graph, session 6).
  grid_dependents_launch();
  auto init_barriers = [&]() {
    for (int s = 0; s < p.slots; ++s) {
      mbar_init(smem_u32(full + s), 1);
      mbar_init(smem_u32(empty + s), kConsumerWarps);
    }
    mbar_init_fence();
  };
  auto issue = [&](int c) {
    const int slot = c % p.slots;
    const uint32_t bytes = (uint32_t)min(kChunkRecords, nrec - c * kChunkRecords) * kRecordBytes;
    mbar_arrive_expect_tx(smem_u32(full + slot), bytes);
    bulk_copy(smem_u32(ring + (size_t)slot * kChunkBytes), src + (size_t)c * kChunkBytes, bytes, smem_u32(full + slot));
  };
  auto fill_ring = [&]() {
    for (int c = 0; c < min(p.slots, nchunks); ++c) issue(c);
    if (a.prefetch)
      for (size_t o = (size_t)p.slots * kChunkBytes; o < (size_t)nrec * kRecordBytes; o += 65536)
        bulk_prefetch_l2(src + o, (uint32_t)min((size_t)65536, (size_t)nrec * kRecordBytes - o));
  };
  XRound xr;
  if (a.early_ring) {
    // Launched early (PDL): the weights are constant, so the ring fills while the previous kernel finishes;
    // x and the residual stream are read only after the grid-dependency wait, and y is written after it.
    if (producer) {
      init_barriers();
      fill_ring();
    }
    __syncthreads();  // the barriers are visible to every warp
    if (tid == 0) trace_point(a, 1);
    grid_dependency_wait();
    if (!producer_warp) stage_x_load<kPro>(p, x, pro, part, xr);
  } else {
    grid_dependency_wait();  // a no-op unless launched with PDL
    // 1. Consumers issue x's loads (nothing else is in flight yet, so they are not queued behind weights)
    //    while the producer sets up the ring's barriers.
    if (!producer_warp) stage_x_load<kPro>(p, x, pro, part, xr);
    if (producer) init_barriers();
    __syncthreads();  // the barriers are visible to every warp
    if (tid == 0) trace_point(a, 1);
    // 2. The producer fills the ring while the consumers convert x (they meet at a consumer-only barrier).
    if (producer) fill_ring();
  }
  if (!producer_warp) stage_x_convert<kPro>(p, x, pro, sm, a, xr);
  if (tid == 0) trace_point(a, 3);

  float* red = reinterpret_cast<float*>(sm + p.off_red);
  if (warp == kConsumerWarps) {
    if (producer) {
      int slot = 0;
      uint32_t parity = 0;
      for (int c = p.slots; c < nchunks; ++c) {  // refill slot c % S once its 16 consumers released it
        mbar_wait(smem_u32(empty + slot), parity);
        issue(c);
        if (++slot == p.slots) slot = 0, parity ^= 1u;
      }
    }
  } else if (warp < nrec) {
    // This lane's B column: digit g % 4 of batch row g / 4, or zeros.
    const bool real = g < 4 * p.B;
    const uint8_t* xbase = sm + (real ? p.off_x + g * kDigitColBytes : p.off_zero) + t * 32;
    const size_t xstride = real ? (size_t)4 * p.B * kDigitColBytes : 0;
    const float4* cst = reinterpret_cast<const float4*>(sm + p.off_cst) + t;
    int tile = t0 + warp / p.groups, grp = warp % p.groups, cur = tile;  // the warp's records: warp, warp + 16, …
    float acc0 = 0.0f, acc1 = 0.0f;
    auto flush = [&]() {  // rows g, g + 8 of tile `cur`, batch row t / 2: digits (0, 1) + (2, 3)
      const float s0 = acc0 + __shfl_xor_sync(0xFFFFFFFFu, acc0, 1);
      const float s1 = acc1 + __shfl_xor_sync(0xFFFFFFFFu, acc1, 1);
      if ((t & 1) == 0 && (t >> 1) < p.B) {
        float* r = red + (((size_t)(cur - t0) * kConsumerWarps + warp) * p.B + (t >> 1)) * kW4PackedRows;
        r[g] = s0;
        r[g + 8] = s1;
      }
      acc0 = acc1 = 0.0f;
    };
    int slot = 0;
    uint32_t parity = 0;
    for (int c = 0; c < nchunks; ++c) {
      if (c * kChunkRecords + warp < nrec) mbar_wait(smem_u32(full + slot), parity);
      if (c == 0 && tid == 0) trace_point(a, 4);
#pragma unroll
      for (int j = 0; j < kRecordsPerWarp; ++j) {  // records warp, warp + 16, … of the chunk
        const int rc = j * kConsumerWarps + warp;
        if (c * kChunkRecords + rc >= nrec) break;
        if (tile != cur) {
          flush();
          cur = tile;
        }
        record_math(ring + (size_t)slot * kChunkBytes + (size_t)rc * kRecordBytes, xbase + grp * xstride,
                    cst[grp * 4], lane, g, acc0, acc1);
        grp += kConsumerWarps;
        while (grp >= p.groups) grp -= p.groups, ++tile;
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(smem_u32(empty + slot));
      if (++slot == p.slots) slot = 0, parity ^= 1u;
    }
    flush();
    if (tid == 0) trace_point(a, 5);
  }
  __syncthreads();
  if (tid == 0) trace_point(a, 6);

  // Sum the warps' partials per row, in warp order, and write y.
  for (int i = tid; i < (t1 - t0) * p.B * kW4PackedRows; i += kThreads) {
    const int tl = i / (p.B * kW4PackedRows), b = (i / kW4PackedRows) % p.B, r = i % kW4PackedRows;
    float sum = 0.0f;
    for (int w = 0; w < kConsumerWarps; ++w) sum += red[(((size_t)tl * kConsumerWarps + w) * p.B + b) * kW4PackedRows + r];
    const int row = (t0 + tl) * kW4PackedRows + r;
    if (row < p.rows) y[(size_t)b * p.rows + row] = sum;
  }
  if (tid == 0) trace_point(a, 7);
}

// ---- packing --------------------------------------------------------------------------------------

// One block per record: threads 0 … 255 write the code words, 256 … 271 the FP16 parameter words.
__global__ void w4_pack_kernel(W4DeviceWeights w, uint32_t* __restrict__ out) {
  const int groups = w.cols / kW4PackedGroup;
  const size_t rec = blockIdx.x;
  const int tile = (int)(rec / groups), gi = (int)(rec % groups);
  const int i = (int)threadIdx.x;
  const int words_per_row = w.cols / kW4ChannelsPerWord;
  uint32_t v = 0;
  if (i < 256) {
    const int j = (i / 128) * 4 + i % 4, L = (i % 128) / 4, s = j / 2, r = j % 2, g = L / 4, t = L % 4;
    const int row = tile * kW4PackedRows + g + 8 * r;
    if (row < w.rows) {
      for (int b = 0; b < 4; ++b) {
        const int c_lo = gi * kW4PackedGroup + 32 * s + 4 * t + b, c_hi = c_lo + 16;
        const uint32_t lo = (uint32_t)w4_unpack(w.qweight[(size_t)row * words_per_row + c_lo / 8], c_lo % 8);
        const uint32_t hi = (uint32_t)w4_unpack(w.qweight[(size_t)row * words_per_row + c_hi / 8], c_hi % 8);
        v |= (lo | hi << 4) << (8 * b);
      }
    }
  } else {  // hz[2g] = FP16 h of rows g, g + 8; hz[2g + 1] = int16 z of rows g, g + 8
    const int k = i - 256, g = k / 2;
    for (int half = 0; half < 2; ++half) {
      const int row = tile * kW4PackedRows + g + 8 * half;
      if (row >= w.rows) continue;
      const size_t o = (size_t)row * groups + gi;
      const uint32_t bits = k % 2 == 0 ? w.scales[o] : w4_packed_zero_bits(w.zeros[o]);
      v |= bits << (16 * half);
    }
  }
  out[rec * (kRecordBytes / 4) + i] = v;
}

// Dense FP16 from packed records: thread i writes channels 8k … 8k + 7 of one row (16 bytes), read from the two
// code words that hold them (each 4 consecutive channels are one word's low or high nibbles).
__global__ void w4_dequant_packed_kernel(int rows, int groups, const W4PackedRecord* __restrict__ rec,
                                         uint4* __restrict__ out) {
  const int per_row = groups * kW4PackedGroup / 8;
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)rows * per_row) return;
  const int row = (int)(i / per_row), k = (int)(i % per_row), gi = k / (kW4PackedGroup / 8);
  const int rt = row % kW4PackedRows, c0 = (k * 8) % kW4PackedGroup;
  const W4PackedRecord& r = rec[(size_t)(row / kW4PackedRows) * groups + gi];
  const int shift = rt < 8 ? 0 : 16;
  const float h = __half2float(__ushort_as_half((unsigned short)(r.hz[2 * (rt % 8)] >> shift)));
  const float z = (float)(int16_t)(uint16_t)(r.hz[2 * (rt % 8) + 1] >> shift);
  uint32_t packed[4];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int c = c0 + 4 * half;
    const uint32_t word = r.q[w4_packed_word_index(rt, c)];
    const int base = w4_packed_nibble_shift(c);  // c % 4 == 0: channel c + b at base + 8b
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float lo = ((float)((word >> (base + 16 * j)) & 0xFu) - z) * h;
      const float hi = ((float)((word >> (base + 16 * j + 8)) & 0xFu) - z) * h;
      packed[2 * half + j] = (uint32_t)__half_as_ushort(__float2half_rn(lo)) |
                             ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
    }
  }
  out[i] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

// Experiment switches, read once per process: WKV_W4_PACKED_PREFETCH=1 (L2 prefetch hints for the records beyond
// the first ring fill).
bool env_flag(const char* name) {
  const char* e = std::getenv(name);
  return e && *e == '1';
}

// Programmatic dependent launch, WKV_W4_PACKED_PDL: 0 off (default); 1 launched early, everything after the
// wait; 2 launched early with the ring fill issued before the wait. H200, session 6: in the kernel bench's
// graph of F launches the linears take 1,599.9 µs per token with 0, 1,479.5 with 1 and 1,500.0 with 2, but the
// whole 7B decode step is slower with either (wkv bench w4kv4, two interleaved rounds, depth 0: 325.9 / 328.2
// t/s with 0, 315.2 / 314.3 with 1, 314.4 / 316.4 with 2; 32K: 185.3 / 185.6, 181.3 / 181.2, 181.6 / 181.5).
enum class PdlMode { off = 0, wait_first = 1, early_ring = 2 };
constexpr PdlMode kDefaultPdl = PdlMode::off;

PdlMode pdl_mode() {
  static const PdlMode m = [] {
    const char* e = std::getenv("WKV_W4_PACKED_PDL");
    if (!e || !*e) return kDefaultPdl;
    return *e == '0' ? PdlMode::off : *e == '1' ? PdlMode::wait_first : PdlMode::early_ring;
  }();
  return m;
}

// Paired blocks, WKV_W4_PACKED_PAIR=1 (an experiment, off by default): every launch plans a ring of 2 slots
// (the smallest that streams: session 5's sweep found at most 2 chunks in flight as fast as 12) and bounds its
// registers for two blocks per SM, so that with programmatic dependent launch (WKV_W4_PACKED_PDL=2) the next
// linear's block can start beside this one and stream its weights while this one finishes; with the
// whole-SM ring it can only start once this block has left. The grid is the same (one block per SM and
// launch). 7B shapes, dynamic shared memory with 2 slots (make_plan): q|k|v 96,640 bytes, o 92,544, gate|up
// 101,760, down 127,104 (its staged x and constants of 11,008 columns take 55 K), so every consecutive pair
// fits one SM's 233,472 bytes with 1,024 reserved per block (gate|up → down: 231,040). The kernels ask for
// the largest shared-memory carveout: an SM configured for a smaller one would have to drain before a second
// block fits.
bool pair_mode() {
  static const bool on = env_flag("WKV_W4_PACKED_PAIR");
  return on;
}

template <Prologue kPro, int kMinBlocks>
void launch_kernel(const Args& a, const float* x, float* y, const PrologueArgs& pro, cudaStream_t stream) {
  static const bool attr_set = [] {
    allow_max_dynamic_smem(w4_gemv_packed_kernel<kPro, kMinBlocks>);
    if (kMinBlocks > 1)
      CUDA_CHECK(cudaFuncSetAttribute(w4_gemv_packed_kernel<kPro, kMinBlocks>,
                                      cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)attr_set;
  launch_kernel_pdl(pdl_mode() != PdlMode::off, w4_gemv_packed_kernel<kPro, kMinBlocks>, dim3((unsigned)a.p.blocks),
                    dim3(kThreads), a.p.smem, stream, a, x, y, pro);
  WKV_CHECK_LAUNCH();
}

template <Prologue kPro>
// Launches one kernel (B ≤ kMaxBatch); returns its block count. One launch plan per call: the checks below are
// w4_gemv_packed_supported's, on the plan this launch uses.
int launch(const W4PackedView& w, const float* x, int B, float* y, const PrologueArgs& pro, cudaStream_t stream,
           unsigned long long* trace = nullptr) {
  const DeviceLimits& dl = device_limits();
  Args a{};
  const bool paired = pair_mode();
  a.p = make_plan(w.rows, w.cols, B, dl.sms, dl.smem_optin, paired ? 2 : kMaxSlots);
  require_arg(w4_packable(w.rows, w.cols, kW4PackedGroup) && dl.compute_major >= 9 && a.p.slots >= 2 && w.records,
              "w4_gemv_packed: " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " batch " +
                  std::to_string(B) + " is not a supported packed matrix on this device, or records is null");
  a.records = static_cast<const uint8_t*>(w.records);
  static const int prefetch = env_flag("WKV_W4_PACKED_PREFETCH") ? 1 : 0;
  a.prefetch = prefetch;
  a.trace = trace;
  a.early_ring = pdl_mode() == PdlMode::early_ring ? 1 : 0;
  if (paired)
    launch_kernel<kPro, 2>(a, x, y, pro, stream);
  else
    launch_kernel<kPro, 1>(a, x, y, pro, stream);
  return a.p.blocks;
}

}  // namespace

size_t w4_packed_device_bytes(int rows, int cols) { return w4_packed_bytes(rows, cols); }

L2PrefetchRegion w4_packed_prefetch_region(const W4PackedView& w, float fraction) {
  require_arg(w.records && w.rows >= 1 && w.cols >= kW4PackedGroup && w.cols % kW4PackedGroup == 0,
              "w4_packed_prefetch_region: " + std::to_string(w.rows) + "x" + std::to_string(w.cols) +
                  " is not a packed matrix with records");
  const DeviceLimits& dl = device_limits();
  const Plan p = make_plan(w.rows, w.cols, 1, dl.sms, dl.smem_optin);  // the blocks a B = 1 launch uses
  L2PrefetchRegion r;
  r.base = w.records;
  r.units = p.tiles;
  r.parts = p.blocks;
  r.unit_bytes = p.groups * kRecordBytes;
  r.fraction = fraction;
  return r;
}

W4PackedView w4_packed_rows(const W4PackedView& w, int row0, int rows) {
  require_arg(row0 >= 0 && row0 % kW4PackedRows == 0 && rows >= 1 && row0 + rows <= w.rows && w.records,
              "w4_packed_rows: rows [" + std::to_string(row0) + ", " + std::to_string(row0 + rows) +
                  ") must start on a 16-row tile inside the " + std::to_string(w.rows) + " rows");
  W4PackedView v = w;
  v.rows = rows;
  v.records = static_cast<const uint8_t*>(w.records) +
              (size_t)(row0 / kW4PackedRows) * (w.cols / kW4PackedGroup) * sizeof(W4PackedRecord);
  return v;
}

void w4_dequant_f16_packed(const W4PackedView& w, uint16_t* out, cudaStream_t stream) {
  require_arg(w.records && w.rows >= 1 && w.cols >= kW4PackedGroup && w.cols % kW4PackedGroup == 0 && out &&
                  aligned16(out),
              "w4_dequant_f16_packed: needs packed records of a rows x (multiple of 128) matrix and a 16-byte "
              "aligned output");
  const size_t n = (size_t)w.rows * (w.cols / 8);
  const size_t blocks = (n + 255) / 256;
  require_arg(blocks <= 0x7FFFFFFFu, "w4_dequant_f16_packed: matrix too large for one launch");
  w4_dequant_packed_kernel<<<(unsigned)blocks, 256, 0, stream>>>(
      w.rows, w.cols / kW4PackedGroup, static_cast<const W4PackedRecord*>(w.records), reinterpret_cast<uint4*>(out));
  WKV_CHECK_LAUNCH();
}

bool w4_gemv_packed_supported(int rows, int cols, int group) {
  if (!w4_packable(rows, cols, group) || device_limits().compute_major < 9) return false;
  return make_plan(rows, cols, 1, device_limits().sms, device_limits().smem_optin).slots >= 2;
}

void w4_pack(const W4DeviceWeights& w, void* records, cudaStream_t stream) {
  validate_w4_device(w, "w4_pack");
  require_arg(w4_packable(w.rows, w.cols, w.group) && records,
              "w4_pack: W4 " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " group " +
                  std::to_string(w.group) + " has no packed layout (needs group 128, cols % 128 == 0) or records is null");
  const size_t n = w4_packed_records(w.rows, w.cols);
  require_arg(n <= 0x7FFFFFFFu, "w4_pack: too many records");
  w4_pack_kernel<<<(unsigned)n, 272, 0, stream>>>(w, static_cast<uint32_t*>(records));
  WKV_CHECK_LAUNCH();
}

void w4_gemv_packed(const W4PackedView& w, const float* x, int B, float* y, cudaStream_t stream) {
  require_arg(B >= 1 && x && y && aligned16(x), "w4_gemv_packed: batch must be >= 1, x (16-byte aligned) and y non-null");
  const int launches = (B + kMaxBatch - 1) / kMaxBatch, per = (B + launches - 1) / launches;
  for (int b0 = 0; b0 < B; b0 += per)
    launch<Prologue::none>(w, x + (size_t)b0 * w.cols, std::min(per, B - b0), y + (size_t)b0 * w.rows, {}, stream);
}

namespace detail {

int w4_gemv_packed_trace(const W4PackedView& w, const float* x, float* y, unsigned long long* trace,
                         cudaStream_t stream) {
  return launch<Prologue::none>(w, x, 1, y, {}, stream, trace);
}

}  // namespace detail

void w4_gemv_packed_add_rmsnorm(const W4PackedView& w, const float* res, const float* r, const float* norm_weight,
                                float eps, float* res_out, float* y, cudaStream_t stream) {
  require_arg(res && r && norm_weight && res_out && y && aligned16(res) && aligned16(r) && aligned16(norm_weight) &&
                  aligned16(res_out),
              "w4_gemv_packed_add_rmsnorm: every pointer must be a non-null, 16-byte aligned device pointer");
  require_arg(res_out != res && res_out != r, "w4_gemv_packed_add_rmsnorm: res_out must not alias res or r");
  launch<Prologue::add_rmsnorm>(w, res, 1, y, detail::add_rmsnorm_prologue(res, r, norm_weight, eps, res_out), stream);
}

void w4_gemv_packed_swiglu(const W4PackedView& w, const float* g, const float* u, float* y, cudaStream_t stream) {
  require_arg(g && u && y && aligned16(g) && aligned16(u),
              "w4_gemv_packed_swiglu: every pointer must be a non-null, 16-byte aligned device pointer");
  launch<Prologue::swiglu>(w, g, 1, y, detail::swiglu_prologue(u), stream);
}

}  // namespace wkv::kernels
