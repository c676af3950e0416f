// Internal to the packed W4 GEMV kernels (w4_gemv_packed.cu: one linear per launch; w4_gemv_chain.cu: several
// linears in one persistent launch): the launch plan and shared-memory layout, x staging through the prologues,
// and the per-record integer tensor-core math. The design is described at the top of w4_gemv_packed.cu.
#pragma once

#include <cuda_fp16.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "bulk_copy.cuh"
#include "gemv_prologue.h"
#include "kernel_util.h"
#include "w4_packed_format.h"

namespace wkv::kernels::packed {

using detail::Prologue;
using detail::PrologueArgs;

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


// Phase timestamps of one block, for the benchmark's breakdown of where a launch spends its time.
// start, barriers ready, first x values in (warp 0), x staged, first record in, loop done, warps reduced, end,
// then inside the staging: warp 0's first round converted, warp 15's first value in, warp 15's first round
// converted, warp 0 done zeroing (before the consumers' barrier).
constexpr int kTracePoints = 12;

// `dep`: a value the timestamp must wait for (the comparison reads it; it adds 0 ns unless dep is NaN).
__device__ __forceinline__ void trace_point(unsigned long long* trace, int point, float dep = 0.0f) {
  if (trace) {
    unsigned long long t;
    const unsigned long long wait = dep != dep ? 1ull : 0ull;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t) : "l"(wait));
    trace[(size_t)blockIdx.x * kTracePoints + point] = t + wait;
  }
}

inline size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Lays out the shared memory of a block that stages up to `groups` groups of x for B batch rows and keeps partial
// sums of up to `max_tiles` tiles: x digits, zero block, epilogue constants, partial sums, ring barriers, then as
// many ring slots as fit (at most max_slots and, when chunks > 0, no more than a block's chunks need). Sets
// p.off_*, p.slots (0: does not fit) and p.smem.
inline void plan_layout(Plan& p, int groups, int max_tiles, int B, int smem_optin, int max_slots, int chunks) {
  size_t o = 0;
  p.off_x = (uint32_t)o;
  o += (size_t)groups * 4 * B * kDigitColBytes;
  p.off_zero = (uint32_t)o;
  o += kZeroBytes;
  p.off_cst = (uint32_t)o;
  o += (size_t)groups * 4 * sizeof(float4);
  p.off_red = (uint32_t)o;
  o += (size_t)max_tiles * kConsumerWarps * B * kW4PackedRows * sizeof(float);
  o = align_up(o, 16);
  p.off_bar = (uint32_t)o;
  o += 2 * kMaxSlots * sizeof(uint64_t);
  o = align_up(o, 128);
  const size_t fixed = o + 1024;  // + static shared memory and slack
  p.slots = fixed >= (size_t)smem_optin ? 0 : (int)std::min<size_t>(max_slots, ((size_t)smem_optin - fixed) / kChunkBytes);
  if (chunks > 0) p.slots = std::min(p.slots, std::max(2, chunks));
  p.smem = o + (size_t)p.slots * kChunkBytes;
  if (max_tiles * B > kMaxTileSlots || p.slots < 2) p.slots = 0;  // unsupported
}

// The tiles and blocks of one rows × cols matrix (blocks = min(sms, tiles) unless `blocks` > 0 is given).
inline Plan plan_shape(int rows, int cols, int B, int sms, int blocks = 0) {
  Plan p;
  p.rows = rows;
  p.groups = cols / kW4PackedGroup;
  p.B = B;
  p.tiles = (int)w4_packed_tiles(rows);
  p.blocks = blocks > 0 ? blocks : std::max(1, std::min(sms, p.tiles));
  p.max_tiles = (p.tiles + p.blocks - 1) / p.blocks;
  return p;
}

inline Plan make_plan(int rows, int cols, int B, int sms, int smem_optin, int max_slots = kMaxSlots) {
  Plan p = plan_shape(rows, cols, B, sms);
  const int per_block = p.max_tiles * p.groups;  // records
  plan_layout(p, p.groups, p.max_tiles, B, smem_optin, max_slots, (per_block + kChunkRecords - 1) / kChunkRecords);
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
  float4 u[kRound];  // deferred prologue: the second raw input (swiglu: up, add_rmsnorm: r, then the weight)
  float inv = 0.0f;  // add_rmsnorm: 1 / rms
};

// Deferred prologue (kDefer, the default; WKV_W4_PACKED_DEFER=0 turns it off): stage_x_load leaves the
// prologue's raw loads in flight (gate and up, or res and r) instead of waiting for them before the block
// barrier, and stage_x_convert does the arithmetic after it, while the producer already fills the ring: the
// weights stream from the launch's first microsecond instead of after one (swiglu) or two (add_rmsnorm: the
// sum of squares, then the loads scaled by it) L2 round trips. Only where the first round covers every item
// (B · groups ≤ kRound · 16; the 7B shapes: 32 groups for add_rmsnorm, 86 for swiglu). Bit-identical to the
// plain staging: thread tid's channels f = tid + 512·k of the sum-of-squares pass are exactly its items'
// channels (group warp + 16·k, lane), so its partial sums the same squares in the same order.
__host__ __device__ constexpr bool defer_fits(int B, int groups) {
  return B * groups <= kRound * kConsumerWarps;
}

// Loads of the GEMV's inputs. kCoherent (the chain kernel, whose inputs other blocks of the same launch wrote):
// through L2 only (ld.global.cg), never the non-coherent read-only path or a possibly stale L1 line.
template <bool kCoherent>
__device__ __forceinline__ float4 load_x4(const float* p, size_t f) {
  if constexpr (kCoherent) return __ldcg(reinterpret_cast<const float4*>(p) + f);
  else return __ldg(reinterpret_cast<const float4*>(p) + f);
}

// The prologues' arithmetic on a lane's four channels, written once for every staging path (plain, deferred,
// the chain's): they must all produce the same bits.
__device__ __forceinline__ float4 add4(float4 a, float4 b) {  // res + r
  return make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z), __fadd_rn(a.w, b.w));
}
__device__ __forceinline__ float sum_squares4(float4 v, float ss) {  // ss + x² + y² + z² + w², in this order
  ss = fmaf(v.x, v.x, ss);
  ss = fmaf(v.y, v.y, ss);
  ss = fmaf(v.z, v.z, ss);
  return fmaf(v.w, v.w, ss);
}
__device__ __forceinline__ float4 norm4(float4 v, float inv, float4 w) {  // (res + r)·(1/rms)·weight
  return make_float4(__fmul_rn(__fmul_rn(v.x, inv), w.x), __fmul_rn(__fmul_rn(v.y, inv), w.y),
                     __fmul_rn(__fmul_rn(v.z, inv), w.z), __fmul_rn(__fmul_rn(v.w, inv), w.w));
}
__device__ __forceinline__ float4 silu_mul4(float4 g, float4 u) {
  return make_float4(silu_mul(g.x, u.x), silu_mul(g.y, u.y), silu_mul(g.z, u.z), silu_mul(g.w, u.w));
}

// Consumers: 1 / rms from each thread's partial sum of squares (warp sums in shared `part`, one consumer
// barrier, then every thread adds the 16 partials in the same order).
__device__ __forceinline__ float consumers_rms_inverse(float ss, float* part, int cols, float eps) {
  const int lane = (int)threadIdx.x % kWarpSize, warp = (int)threadIdx.x / kWarpSize;
  ss = warp_sum(ss);
  if (lane == 0) part[warp] = ss;
  consumer_sync();
  float total = 0.0f;
  for (int w = 0; w < kConsumerWarps; ++w) total += part[w];
  return rms_inverse(total, cols, eps);
}

// The lane's 4 channels of item (batch row, group), through the prologue.
template <Prologue kPro, bool kCoherent = false>
__device__ __forceinline__ float4 x_item(const Plan& p, const float* __restrict__ x, const PrologueArgs& pro,
                                         float inv, int item, int lane) {
  const int cols = p.groups * kW4PackedGroup, b = item / p.groups, grp = item - b * p.groups;
  const size_t f = ((size_t)b * cols + (size_t)grp * kW4PackedGroup) / 4 + lane;
  if constexpr (kPro == Prologue::add_rmsnorm) {
    const float4 rs = kCoherent ? load_x4<true>(pro.res, f) : reinterpret_cast<const float4*>(pro.res)[f];
    const float4 rr = kCoherent ? load_x4<true>(pro.r, f) : reinterpret_cast<const float4*>(pro.r)[f];
    const float4 w = reinterpret_cast<const float4*>(pro.weight)[f];
    return norm4(add4(rs, rr), inv, w);
  } else if constexpr (kPro == Prologue::swiglu) {
    const float4 gt = load_x4<kCoherent>(x, f), up = load_x4<kCoherent>(pro.u, f);
    return silu_mul4(gt, up);
  } else {
    return load_x4<kCoherent>(x, f);
  }
}

// Consumers: the add_rmsnorm prologue's sum of squares (one consumer barrier), then the loads of the warp's
// first round of groups, left in flight in `r` (the caller's block barrier comes next). kDefer: only the
// prologue's raw loads, its arithmetic waits for stage_x_convert.
template <Prologue kPro, bool kCoherent = false, bool kDefer = false>
__device__ __forceinline__ void stage_x_load(const Plan& p, const float* __restrict__ x,
                                             const PrologueArgs& pro, float* part, XRound& r) {
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int cols = p.groups * kW4PackedGroup;
  if constexpr (kDefer && kPro != Prologue::none) {
    // Raw loads only (defer_fits: one round covers every item; B = 1 for add_rmsnorm, rows are contiguous).
    const float* a = kPro == Prologue::swiglu ? x : pro.res;
    const float* b = kPro == Prologue::swiglu ? pro.u : pro.r;
#pragma unroll
    for (int k = 0; k < kRound; ++k) {
      const int item = warp + k * kConsumerWarps;
      if (item < p.B * p.groups) {
        const size_t f = (size_t)item * (kW4PackedGroup / 4) + lane;
        r.v[k] = load_x4<kCoherent>(a, f);
        r.u[k] = load_x4<kCoherent>(b, f);
      }
    }
    return;
  }
  if constexpr (kPro == Prologue::add_rmsnorm) {
    const float4* res4 = reinterpret_cast<const float4*>(pro.res);
    const float4* r4 = reinterpret_cast<const float4*>(pro.r);
    float ss = 0.0f;
#pragma unroll 4
    for (int f = tid; f < cols / 4; f += kConsumerWarps * kWarpSize) {
      const float4 rs = kCoherent ? __ldcg(res4 + f) : res4[f], rr = kCoherent ? __ldcg(r4 + f) : r4[f];
      const float4 v = add4(rs, rr);
      ss = sum_squares4(v, ss);
      if (blockIdx.x == 0) reinterpret_cast<float4*>(pro.res_out)[f] = v;
    }
    r.inv = consumers_rms_inverse(ss, part, cols, pro.eps);
  }
  const int items = p.B * p.groups;
#pragma unroll
  for (int k = 0; k < kRound; ++k) {
    const int item = warp + k * kConsumerWarps;
    if (item < items) r.v[k] = x_item<kPro, kCoherent>(p, x, pro, r.inv, item, lane);
  }
}

// The deferred prologue's arithmetic on the raw loads of stage_x_load<…, kDefer>: afterwards r.v holds what
// x_item returns for each item (and block 0 has written add_rmsnorm's res_out), as the plain staging leaves
// it.
template <Prologue kPro>
__device__ __forceinline__ void finish_deferred_prologue(const Plan& p, const PrologueArgs& pro, float* part,
                                                         XRound& r) {
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int items = p.B * p.groups;
  if constexpr (kPro == Prologue::swiglu) {
#pragma unroll
    for (int k = 0; k < kRound; ++k)
      if (warp + k * kConsumerWarps < items) r.v[k] = silu_mul4(r.v[k], r.u[k]);
  } else if constexpr (kPro == Prologue::add_rmsnorm) {
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < kRound; ++k) {
      const int item = warp + k * kConsumerWarps;
      if (item < items) {
        const float4 v = add4(r.v[k], r.u[k]);
        ss = sum_squares4(v, ss);
        const size_t f = (size_t)item * (kW4PackedGroup / 4) + lane;
        if (blockIdx.x == 0) reinterpret_cast<float4*>(pro.res_out)[f] = v;
        r.v[k] = v;
        // The norm weight, in flight over the consumer barrier below.
        r.u[k] = reinterpret_cast<const float4*>(pro.weight)[f];
      }
    }
    r.inv = consumers_rms_inverse(ss, part, p.groups * kW4PackedGroup, pro.eps);
#pragma unroll
    for (int k = 0; k < kRound; ++k)
      if (warp + k * kConsumerWarps < items) r.v[k] = norm4(r.v[k], r.inv, r.u[k]);
  }
}

// Consumers: converts the first round from `r` (kDefer: after the prologue's arithmetic), loads and converts
// any further rounds (cols > 16·6·128), zeroes the partial sums; ends with a consumer barrier. part: the
// add_rmsnorm partial sums' shared array (kDefer only).
template <Prologue kPro, bool kCoherent = false, bool kDefer = false>
__device__ __forceinline__ void stage_x_convert(const Plan& p, const float* __restrict__ x,
                                                const PrologueArgs& pro, uint8_t* sm,
                                                unsigned long long* trace, XRound& r, float* part = nullptr) {
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int items = p.B * p.groups;
  if constexpr (kDefer) finish_deferred_prologue<kPro>(p, pro, part, r);
  if (warp == 0 && lane == 0) trace_point(trace, 2, r.v[0].x);  // once the first value is in
  if (warp == kConsumerWarps - 1 && lane == 0) trace_point(trace, 9, r.v[0].x);
#pragma unroll
  for (int k = 0; k < kRound; ++k) {
    const int item = warp + k * kConsumerWarps;
    if (item < items) {
      const int b = item / p.groups;
      stage_group(r.v[k], b, item - b * p.groups, lane, p, sm);
    }
  }
  if (warp == 0 && lane == 0) trace_point(trace, 8);
  if (warp == kConsumerWarps - 1 && lane == 0) trace_point(trace, 10);
  for (int item = warp + kRound * kConsumerWarps; item < items; item += kConsumerWarps) {
    const int b = item / p.groups;
    stage_group(x_item<kPro, kCoherent>(p, x, pro, r.inv, item, lane), b, item - b * p.groups, lane, p, sm);
  }
  constexpr int kN = kConsumerWarps * kWarpSize;
  // Zero block, the epilogue weights of the batch row a B = 1 launch does not have, the partial sums.
  for (int i = tid; i < kZeroBytes / 4; i += kN) reinterpret_cast<uint32_t*>(sm + p.off_zero)[i] = 0u;
  if (p.B == 1)
    for (int i = tid; i < 2 * p.groups; i += kN)
      reinterpret_cast<float4*>(sm + p.off_cst)[(i / 2) * 4 + 2 + (i & 1)] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float* red = reinterpret_cast<float*>(sm + p.off_red);
  for (int i = tid; i < p.max_tiles * kConsumerWarps * p.B * kW4PackedRows; i += kN) red[i] = 0.0f;
  if (warp == 0 && lane == 0) trace_point(trace, 11);
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

}  // namespace wkv::kernels::packed
