// W4 GEMV fast path, variant D: bulk asynchronous weight streaming + tensor cores (sm_90).
//
// Why. Variants A–C load weights into registers, so the bytes a warp keeps in flight are bounded by its
// registers; Nsight Compute on the H200 (7B decode shapes, docs/performance.md) showed all three at ~29% of
// DRAM bandwidth with 4 warps per scheduler and < 1.2 of them eligible: latency-bound, not issue- or
// bandwidth-bound. Here one thread per block hands the copy engine (cp.async.bulk, the TMA unit) whole
// row segments, which land in a ring of shared-memory stages: (stages − 1) × 17 KB ≈ 85 KB per SM stay
// in flight regardless of registers, and the 16 warps only compute.
//
// Work split. Tiles of 16 consecutive rows; block k of n (n = min(#SMs, tiles)) takes the contiguous tiles
// [T·k/n, T·(k+1)/n). A tile is cut along the channels into stages of kStageCols = 2048 channels (the last
// one shorter): a stage is 16 row segments of ≤ 1 KB, each one bulk copy into its own 1088-byte row slot
// of a ring buffer (64 bytes of padding per row spread the rows over the shared-memory banks). Warp w
// computes slice w (128 channels) of every stage; the partial sums of the 16 warps are combined in shared
// memory at the end of each tile in warp order (deterministic).
//
// Pipeline, per block: S ring slots, each with an mbarrier (arrival count 1). Before the loop the lanes of
// warp 0 issue stages 0 … S − 1 (lane 0: arrive.expect_tx with the stage's bytes; lanes 0–15: one bulk copy
// per row, completing on that barrier). Stage i waits on slot i % S with parity (i / S) & 1, is computed,
// then a block barrier (every warp is done reading the slot) lets warp 0 refill the slot with stage i + S.
// x is staged while the first stages stream in.
//
// Math (lane (g, t) = (lane / 4, lane % 4); fragments and dequantization as in variant C, w4_mma.cuh):
// in a stage, lane (g, t) of warp w reads chunk c = 4w + t (32 channels, 16 bytes) of rows g and g + 8 from
// the slot (LDS.128: the 8 lanes of a phase hit 8 distinct 16-byte bank groups thanks to the padding) and
// feeds each word as 2 mma.m16n8k16 with the channels of its own chunk — A and B use the same channel
// permutation, so the dot product is unchanged.
// x as two FP16 columns per batch row: column 2b = hi = fp16(x̂), column 2b + 1 = lo = fp16(x̂ − hi), with
// x̂ = x·2^e_b (one power-of-two scale per batch row, max |x̂| in [2^14, 2^15)). hi + lo carries 22
// significant bits, and the mma sums (q − z)·hi + (q − z)·lo in FP32, so y is FP32-accurate (error
// ~2^-22 relative per product instead of variant C's 2^-11) at no cost: the mma's N = 8 columns are
// there anyway. Up to 4 batch rows per launch (N = 8 = 4 × 2). Lanes g < 2B supply B columns; the others
// supply zeros. D: lane (g, t) holds rows g, g + 8 × columns 2t, 2t + 1 = batch row t, hi and lo.
// Scale h: group % 128 == 0 → a slice is one group of every row: the 8 mma of a slice start from zero and
// the FP32 result is scaled once (exact weights); otherwise (group 32, 64, 96, …) the weights are scaled
// in FP16 before the mma (one rounding), as in C.
// x layout in shared memory, per batch row b: hi [cols] FP16 then, 32 bytes further, lo [cols]; 16-byte slot
// w (channels 8w … 8w + 7) of chunk c at c·4 + (w ^ ((c >> 1) & 1)): with lo 2 slots off hi, the 8 lanes of
// an LDS.128 phase (g ∈ {0, 1}, t = 0 … 3) hit 8 distinct 16-byte bank groups.
//
// Instructions per 16 bytes of weights and row: 4 × (1 SHF + 4 LOP3 + 4 half2) + 8 HMMA / 2 rows +
// 2 LDS.128 (x, lanes g < 2B) + ~4 ≈ 46: ~2.9 per weight byte (A: ~7.5).
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "bulk_copy.cuh"
#include "w4_gemv_bulk.h"
#include "w4_mma.cuh"

namespace wkv::kernels::detail {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kTileRows = 16;
constexpr int kStageCols = 2048;                         // channels of a row per stage
constexpr int kSliceCols = 128;                          // channels per warp and stage
constexpr int kRowPad = 64;                              // bytes after each row of a slot
constexpr int kSlotRowBytes = kStageCols / 2 + kRowPad;  // 1088
constexpr int kSlotBytes = kTileRows * kSlotRowBytes;    // 17408
constexpr int kMaxStages = 6;
static_assert(kStageCols == kWarps * kSliceCols, "a full stage gives every warp one slice");
static_assert(kSlotRowBytes % 16 == 0, "bulk copies need 16-byte aligned destinations");

// Fixed shared memory after the ring and x: red [2][kWarps][kBulkMaxBatch][16] floats (double-buffered by
// tile parity), wmax [kWarps][kBulkMaxBatch], xsc [4], xinv [4], then the S mbarriers.
constexpr size_t kRedFloats = 2 * kWarps * kBulkMaxBatch * kTileRows;
constexpr size_t kSmallBytes = (kRedFloats + kWarps * kBulkMaxBatch + 2 * kBulkMaxBatch) * 4;

__host__ __device__ __forceinline__ size_t x_bytes_per_batch(int cols) { return hilo_bytes_per_batch(cols); }

size_t smem_bytes(int B, int cols, int stages) {
  return (size_t)stages * kSlotBytes + (size_t)B * x_bytes_per_batch(cols) + kSmallBytes + (size_t)stages * 8;
}

struct BulkArgs {
  int rows, cols, groups, group;
  int B;    // batch rows, 1 … 4
  int nks;  // stages per tile: ⌈cols / kStageCols⌉
  int S;    // ring slots
  const uint8_t* qweight;
  const uint16_t* scales;
  const uint16_t* zeros;
};

// ---- the kernel ---------------------------------------------------------------------------------------

// Stage i of a block whose first tile is t0: tile t0 + i / nks, channels [k0, k0 + kc).
struct Stage {
  int row0, k0, kc;
};

__device__ __forceinline__ Stage stage_of(const BulkArgs& a, int t0, int i) {
  const int j = i / a.nks, p = i - j * a.nks;
  Stage s;
  s.row0 = (t0 + j) * kTileRows;
  s.k0 = p * kStageCols;
  s.kc = min(kStageCols, a.cols - s.k0);
  return s;
}

// Warp 0 (all lanes): start the copies of stage i into its slot.
__device__ __forceinline__ void issue_stage(const BulkArgs& a, int t0, int i, uint8_t* ring, uint64_t* bars,
                                            int lane) {
  const Stage s = stage_of(a, t0, i);
  const int slot = i % a.S;
  const int nrows = min(kTileRows, a.rows - s.row0);
  const uint32_t row_bytes = (uint32_t)s.kc / 2;
  const uint32_t bar = smem_u32(bars + slot);
  if (lane == 0) mbar_arrive_expect_tx(bar, row_bytes * (uint32_t)nrows);
  __syncwarp();
  if (lane < nrows)
    bulk_copy(smem_u32(ring + (size_t)slot * kSlotBytes + (size_t)lane * kSlotRowBytes),
              a.qweight + (size_t)(s.row0 + lane) * (a.cols / 2) + s.k0 / 2, row_bytes, bar);
}

// Scale | zero << 16 of rows g and g + 8 for lane (g, t)'s chunk of warp `warp` in stage i (0 where the
// chunk or the row does not exist: weight exactly 0).
__device__ __forceinline__ void load_params(const BulkArgs& a, int t0, int i, int warp, int g, int t,
                                            uint32_t (&hz)[2]) {
  const Stage s = stage_of(a, t0, i);
  const int cl = warp * 4 + t;
  hz[0] = hz[1] = 0u;
  if (cl * 32 >= s.kc) return;
  const int gi = (s.k0 + cl * 32) / a.group;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = s.row0 + g + 8 * r;
    if (row < a.rows) {
      const size_t o = (size_t)row * a.groups + gi;
      hz[r] = (uint32_t)__ldg(a.scales + o) | ((uint32_t)__ldg(a.zeros + o) << 16);
    }
  }
}

template <bool kScaleAfter>
__global__ void __launch_bounds__(kThreads, 1)
    w4_gemv_bulk_kernel(BulkArgs a, const float* __restrict__ x, float* __restrict__ y) {
  extern __shared__ __align__(16) uint8_t smem_bulk[];
  uint8_t* ring = smem_bulk;
  uint8_t* xs = ring + (size_t)a.S * kSlotBytes;
  float* red = reinterpret_cast<float*>(xs + (size_t)a.B * x_bytes_per_batch(a.cols));
  float* wmax = red + kRedFloats;
  float* xsc = wmax + kWarps * kBulkMaxBatch;
  float* xinv = xsc + kBulkMaxBatch;
  uint64_t* bars = reinterpret_cast<uint64_t*>(xinv + kBulkMaxBatch);

  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int tiles = (a.rows + kTileRows - 1) / kTileRows;
  const int t0 = (int)((long long)tiles * blockIdx.x / gridDim.x);
  const int t1 = (int)((long long)tiles * (blockIdx.x + 1) / gridDim.x);
  const int nstages = (t1 - t0) * a.nks;

  if (tid == 0) {
    for (int s = 0; s < a.S; ++s) mbar_init(smem_u32(bars + s));
    mbar_init_fence();
  }
  __syncthreads();
  if (warp == 0)
    for (int i = 0; i < min(a.S, nstages); ++i) issue_stage(a, t0, i, ring, bars, lane);
  uint32_t hz[2];
  load_params(a, t0, 0, warp, g, t, hz);
  stage_x_hilo<kThreads, kBulkMaxBatch>(x, a.cols, a.B, xs, wmax, xsc, xinv);
  __syncthreads();

  const bool xlane = g < 2 * a.B;  // supplies B column g: batch row g / 2, hi (g even) or lo (g odd)
  const uint4* xcol = reinterpret_cast<const uint4*>(xs + (size_t)(g >> 1) * x_bytes_per_batch(a.cols) +
                                                     ((g & 1) ? a.cols * 2 + 32 : 0));
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int i = 0; i < nstages; ++i) {
    const Stage s = stage_of(a, t0, i);
    const int slot = i % a.S;
    const bool tile_end = s.k0 + s.kc == a.cols;
    uint32_t hz_next[2] = {0u, 0u};
    if (i + 1 < nstages) load_params(a, t0, i + 1, warp, g, t, hz_next);  // one stage ahead
    mbar_wait(smem_u32(bars + slot), (uint32_t)(i / a.S) & 1u);
    if (warp * kSliceCols < s.kc) {  // warp-uniform: this warp has a slice in the stage
      const int cl = warp * 4 + t;
      const bool has = cl * 32 < s.kc;
      const uint8_t* st = ring + (size_t)slot * kSlotBytes + (size_t)cl * 16;
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      const uint4 qa =
          has && s.row0 + g < a.rows ? *reinterpret_cast<const uint4*>(st + g * kSlotRowBytes) : zero;
      const uint4 qb = has && s.row0 + g + 8 < a.rows
                           ? *reinterpret_cast<const uint4*>(st + (g + 8) * kSlotRowBytes)
                           : zero;
      const int cg = s.k0 / 32 + cl;  // the chunk's index in the whole row (for x)
      const uint4* xc = xcol + cg * 4;
      const int xkey = (cg >> 1) & 1;
      const RowParams pa = unpack_params(hz[0]), pb = unpack_params(hz[1]);
      float d[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) d[k] = kScaleAfter ? 0.0f : acc[k];
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const uint4 xv = xlane && has ? xc[w ^ xkey] : zero;
        uint32_t ra[4], rb[4];
        dequant_word<kScaleAfter>(tc_word_of(qa, w), pa, ra);
        dequant_word<kScaleAfter>(tc_word_of(qb, w), pb, rb);
        mma_m16n8k16(d, ra[0], rb[0], ra[1], rb[1], xv.x, xv.y);  // channels 8w + 0 … 3
        mma_m16n8k16(d, ra[2], rb[2], ra[3], rb[3], xv.z, xv.w);  // channels 8w + 4 … 7
      }
      if constexpr (kScaleAfter) {
        acc[0] = fmaf(pa.h, d[0], acc[0]);
        acc[1] = fmaf(pa.h, d[1], acc[1]);
        acc[2] = fmaf(pb.h, d[2], acc[2]);
        acc[3] = fmaf(pb.h, d[3], acc[3]);
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) acc[k] = d[k];
      }
    }
    float* red_t = red + (size_t)((i / a.nks) & 1) * (kRedFloats / 2);
    if (tile_end) {  // lane (g, t < B): batch row t, rows g and g + 8 (hi + lo columns)
      if (t < a.B) {
        red_t[(warp * kBulkMaxBatch + t) * kTileRows + g] = acc[0] + acc[1];
        red_t[(warp * kBulkMaxBatch + t) * kTileRows + g + 8] = acc[2] + acc[3];
      }
      acc[0] = acc[1] = acc[2] = acc[3] = 0.0f;
    }
    hz[0] = hz_next[0];
    hz[1] = hz_next[1];
    __syncthreads();  // the slot is consumed; this tile's partial sums are in red_t
    if (warp == 0 && i + a.S < nstages) issue_stage(a, t0, i + a.S, ring, bars, lane);
    if (tile_end && tid < kTileRows * a.B) {
      const int b = tid / kTileRows, r = tid % kTileRows, row = s.row0 + r;
      float sum = 0.0f;
      for (int w = 0; w < kWarps; ++w) sum += red_t[(w * kBulkMaxBatch + b) * kTileRows + r];
      if (row < a.rows) y[(size_t)b * a.rows + row] = sum * xinv[b];
    }
  }
}

template <bool kScaleAfter>
void launch(const BulkArgs& a, const float* x, float* y, int blocks, size_t smem, cudaStream_t stream) {
  // Once per instantiation: the opt-in shared-memory size.
  static const bool attr_set = (allow_max_dynamic_smem(w4_gemv_bulk_kernel<kScaleAfter>), true);
  (void)attr_set;
  w4_gemv_bulk_kernel<kScaleAfter><<<blocks, kThreads, smem, stream>>>(a, x, y);
  WKV_CHECK_LAUNCH();
}

}  // namespace

int w4_gemv_bulk_max_batch(int cols, int smem_optin) {
  if (device_limits().compute_major < 9) return 0;  // cp.async.bulk and mbarrier transactions: sm_90+
  for (int B = kBulkMaxBatch; B >= 1; --B)
    if (smem_bytes(B, cols, 2) <= (size_t)smem_optin) return B;
  return 0;
}

void w4_gemv_bulk_launch(const W4DeviceWeights& w, const float* x, int B, float* y, int sms, int smem_optin,
                         cudaStream_t stream) {
  require_arg(B >= 1 && B <= w4_gemv_bulk_max_batch(w.cols, smem_optin),
              "w4_gemv (D): internal batch " + std::to_string(B));
  require_arg(w.cols % 32 == 0 && w.group % 32 == 0 && aligned16(w.qweight) && aligned16(x),
              "w4_gemv (D): internal: not a fast-path shape");
  BulkArgs a{};
  a.rows = w.rows;
  a.cols = w.cols;
  a.groups = w.cols / w.group;
  a.group = w.group;
  a.B = B;
  a.nks = (w.cols + kStageCols - 1) / kStageCols;
  const size_t rest = smem_bytes(B, w.cols, 0);
  a.S = (int)std::min<size_t>(kMaxStages, ((size_t)smem_optin - rest) / (kSlotBytes + 8));
  a.qweight = reinterpret_cast<const uint8_t*>(w.qweight);
  a.scales = w.scales;
  a.zeros = w.zeros;
  const int tiles = (w.rows + kTileRows - 1) / kTileRows;
  const int blocks = std::max(1, std::min(sms, tiles));
  const size_t smem = smem_bytes(B, w.cols, a.S);
  if (w.group % 128 == 0) {
    launch<true>(a, x, y, blocks, smem, stream);
  } else {
    launch<false>(a, x, y, blocks, smem, stream);
  }
}

}  // namespace wkv::kernels::detail
