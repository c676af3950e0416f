// Internal to the KV4 decode attention (kv4_decode_attention.cu, kv4_decode_attention_stream.cu): the split
// plan, the fused combine at the end of every split block, the FP16 code unpacking and hi/lo helpers of the
// tensor-core kernels, and the entry point of the streaming kernel (the default) and its ring variant. The partials'
// layout in the workspace is split_combine.cuh's; the algorithms are described in kv4_decode_attention.cu.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kv4_append_device.cuh"
#include "kv4_device.cuh"
#include "split_combine.cuh"
#include "wkv_kernels/kv4_decode_attention.h"

namespace wkv::kernels::kv4split {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMinChunk = 32;
constexpr int kMaxChunk = 512;
constexpr int kCombineTile = 128;    // splits whose weights the combine stages per step
// Heads a combine thread merges at a time (4 loads in flight each): the tensor-core kernel keeps 128
// registers with 4, the FP32 kernel's register use and spills (ptxas -v, sm_90) are lowest with 2.
constexpr int kCombinePassFp32 = 2, kCombinePassTc = 4;
// The combine's shared scratch reuses the split kernels' score array (≥ NH·kMaxChunk floats).
static_assert(kCombineTile + 128 / 32 <= kMaxChunk, "combine scratch fits in sc");

// {scale, min + 8·scale} of a header word (fp16 scale low, fp16 min high).
__device__ __forceinline__ float2 header_affine(uint32_t hb) {
  const float scale = kv4dev::half_bits_to_float(hb & 0xFFFFu), mn = kv4dev::half_bits_to_float(hb >> 16);
  return make_float2(scale, fmaf(8.0f, scale, mn));
}

// Which keys each split block handles. The grid (gridDim.x = the split count) is fixed by n_max (the
// host n_cache, or n_cache_max on the graph path); the keys per split are a pure function of the actual
// n_cache, evaluated identically on the host and in every block, so the host path and the device path use
// the same plan for the same n_cache (and give the same bits). Blocks past the last active split do no work
// (but arrive at their group's counter).
struct SplitPlan {
  const int32_t* n_dev;  // device n_cache (graph path) or nullptr
  int n_host;            // n_cache when n_dev == nullptr
  int n_max;             // ≥ every n_cache this launch may see (the device value is clamped to it)
  int target_splits;     // automatic plan: splits to aim for (from the SM count and the grid's other dims)
  int fixed_chunk;       // keys_per_split, 0 = automatic
};

// Automatic keys per split: about n/target_splits rounded up to 32, at least 64 (each split costs a
// (D + 2)-float partial write and read, ~4% of a 64-key split's KV bytes at D = 128) and at most kMaxChunk.
__host__ __device__ inline int plan_chunk(const SplitPlan& p, int n_cache) {
  if (p.fixed_chunk > 0) return p.fixed_chunk;
  const int per = (n_cache + p.target_splits - 1) / p.target_splits;
  const int c = (per + 31) / 32 * 32;
  return c < 64 ? 64 : c > kMaxChunk ? kMaxChunk : c;
}

// Split count the grid needs so that every n_cache ≤ n_max is covered: with the automatic plan the chunk
// is ≥ n/target_splits and ≥ 64, or it is kMaxChunk, so ceil(n/chunk) ≤ max(min(target, n_max/64),
// n_max/kMaxChunk) (rounded up).
inline int plan_grid_splits(const SplitPlan& p) {
  const int64_t n = p.n_max;
  if (n <= 0) return 0;
  if (p.fixed_chunk > 0) return int((n + p.fixed_chunk - 1) / p.fixed_chunk);
  const int64_t a = std::min<int64_t>(p.target_splits, (n + 63) / 64), b = (n + kMaxChunk - 1) / kMaxChunk;
  return int(std::max(a, b));
}

__device__ __forceinline__ int plan_n_cache(const SplitPlan& p) {
  return p.n_dev ? min(max(__ldg(p.n_dev), 0), p.n_max) : p.n_host;
}

// The end of every split block (after its partial stores; at once for an empty split): arrive at the group's
// counter; the last of the group's gridDim.x blocks merges the active splits (ceil(n_cache / chunk), n_cache
// read on the device on the graph path; the workspace stride is the grid's split count n_splits) of heads
// h0 … h0 + NH − 1 and writes their outputs (see the file comment). scratch: the kernel's sc array. kMaxPass:
// heads merged at a time per team (combine_group).
template <int D, int NH, int kMaxPass, bool kFusedRope = false>
__device__ __forceinline__ void finish_group(const Kv4LayerCache& c, const Kv4DecodeArgs& a,
                                             const SplitPlan& plan, int n_splits, int kvh, int h0,
                                             const float* ws_ml, const float* ws_acc, unsigned int* counters,
                                             float* scratch) {
  if (!arrive_last(counters + h0 / NH, gridDim.x)) return;
  const int n_cache = plan_n_cache(plan), chunk = plan_chunk(plan, n_cache);
  const int n_active = min((n_cache + chunk - 1) / chunk, n_splits);
  combine_group<D, NH, kThreads, kCombineTile, kMaxPass>(
      ws_ml, ws_acc, h0, n_splits, n_active, a.poq,
      [&](int hh, int d) {
        const float *qh = a.q + (h0 + hh) * D, *kh = a.k_cur + kvh * D;
        // Fused RoPE (the streaming kernels): q and k_cur as kv4_rope_append_at would rotate them in memory.
        if (kFusedRope && a.rope_pos_dev)
          return ropedev::rope_element_cs(qh, d, D, a.rope_cs) *
                 ropedev::rope_element_cs(kh, d, D, a.rope_cs);
        return qh[d] * kh[d];
      },
      1.0f / sqrtf(float(D)), scratch,
      [&](int hh, int d, float acc, float l_cache, float M, float mt) {
        const float sv = c.v_scale ? c.v_scale[kvh * D + d] : 1.0f;
        const float dv = c.v_delta ? c.v_delta[kvh * D + d] : 0.0f;
        float num = acc * sv + dv * l_cache, den = l_cache;
        if (a.poq) {
          const float wt = expf(mt - M);
          num += wt * a.v_cur[kvh * D + d];
          den += wt;
        }
        a.out[(h0 + hh) * D + d] = num / den;
      });
}

// f16x2 helpers on raw 32-bit registers (low half = first element).
__device__ __forceinline__ uint32_t hsub2_bits(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ uint32_t hfma2_bits(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// The 8 codes of one word as FP16 (code − 8), exact: OR-ing a nibble at bits 0–3 into 0x6400 (1024.0,
// mantissa LSB = 1) gives 1024 + code, minus 1032; a nibble at bits 4–7 gives 1024 + 16·code, times 1/16
// (0x2C00) minus 72 (0xD480) in one FMA. r[0] = (ch0, ch4), r[1] = (ch1, ch5), r[2] = (ch2, ch6),
// r[3] = (ch3, ch7) of the word (channel 8w + k is nibble k, bits 4k … 4k+3).
__device__ __forceinline__ void decode_word_f16(uint32_t w, uint32_t (&r)[4]) {
  const uint32_t w8 = w >> 8;
  r[0] = hsub2_bits((w & 0x000F000Fu) | 0x64006400u, 0x64086408u);
  r[1] = hfma2_bits((w & 0x00F000F0u) | 0x64006400u, 0x2C002C00u, 0xD480D480u);
  r[2] = hsub2_bits((w8 & 0x000F000Fu) | 0x64006400u, 0x64086408u);
  r[3] = hfma2_bits((w8 & 0x00F000F0u) | 0x64006400u, 0x2C002C00u, 0xD480D480u);
}

// The same word index of two keys a, b → p[x] = (code_a[8w + x] − 8, code_b[8w + x] − 8), x = 0 … 7.
__device__ __forceinline__ void decode_pair_f16(uint32_t wa, uint32_t wb, uint32_t (&p)[8]) {
  uint32_t lo[4], hi[4];
  decode_word_f16(__byte_perm(wa, wb, 0x5410), lo);  // bytes a0 a1 b0 b1: channels 0–3 of a (low), b (high)
  decode_word_f16(__byte_perm(wa, wb, 0x7632), hi);  // bytes a2 a3 b2 b3: channels 4–7
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    p[k] = lo[k];
    p[k + 4] = hi[k];
  }
}

// 2^k as a float for k ∈ [−126, 127] (exact).
__device__ __forceinline__ float pow2f(int k) { return __int_as_float((127 + k) << 23); }

// Exponent k ∈ [−126, 126] with amax·2^k ∈ [2^13, 2^14) (any k for amax = 0): hi and lo of x·2^k then stay
// normal FP16 for |x| down to ~2^−11·amax, and |x·2^k| < 2^14 < 65504.
__device__ __forceinline__ int prescale_exponent(float amax) {
  int e = 0;
  frexpf(amax, &e);  // amax = f·2^e, f ∈ [0.5, 1)
  return min(max(14 - e, -126), 126);
}

// Constants of one query head for the tensor-core kernels' step 1, from a warp's per-lane partial sums of
// q' (qsum), of q·δ_K (cs) and max |q'| (amax): every lane calls it and gets the warp's values — the prescale
// 2^kq and its inverse, Σq' and C = Σ q·δ_K/√D.
struct QHeadConst {
  float qmul, qinv, qsum, cst;
};
__device__ __forceinline__ QHeadConst reduce_q_head(float qsum, float cs, float amax, float inv_sqrt_d) {
  QHeadConst r;
  r.qsum = kv4dev::warp_sum(qsum);
  r.cst = kv4dev::warp_sum(cs) * inv_sqrt_d;
  const int k = prescale_exponent(kv4dev::warp_max(amax));
  r.qmul = pow2f(k);
  r.qinv = pow2f(-k);
  return r;
}

// FP16 bits of term v (0 = hi, 1 = lo) of x: hi = fp16(x), lo = fp16(x − hi).
__device__ __forceinline__ uint32_t split_term(float x, int v) {
  const __half hi = __float2half_rn(x);
  return v == 0 ? __half_as_ushort(hi) : __half_as_ushort(__float2half_rn(x - __half2float(hi)));
}

__device__ __forceinline__ uint32_t ldg_u32(const uint8_t* p) { return __ldg(reinterpret_cast<const uint32_t*>(p)); }

// The workspace's parts (split_combine.cuh): arrival counters, then the partials ml [H][n_splits][2] and
// acc [H][n_splits][D].
struct SplitWorkspace {
  unsigned int* counters;
  float* ml;
  float* acc;
};

// The streaming tensor-core kernel (kv4_decode_attention_stream.cu): same preconditions, grid and partials
// as the tensor-core kernel (G == D, D ∈ {64, 128}, sm_80+, nh = heads per block ∈ {1, 2, 4} dividing
// H/H_kv). ring_slots 0: tiles loaded into registers (decode_split_stream_kernel); 3 or 4: its ring variant
// (decode_split_ring_kernel, tiles copied into a per-warp shared-memory ring of that many slots), used where
// ring_supported(c) holds and the register variant otherwise.
void launch_split_stream(int D, int nh, int ring_slots, const Kv4LayerCache& c, const Kv4DecodeArgs& a,
                         const SplitPlan& plan, int n_splits, const SplitWorkspace& ws, cudaStream_t stream);

// The ring variant's precondition: 16-row tiles of one KV head are contiguous and 16-byte aligned
// (page_size % 16 == 0, both pools 16-byte aligned).
bool ring_supported(const Kv4LayerCache& c);

}  // namespace wkv::kernels::kv4split
