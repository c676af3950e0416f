// W4 GEMV fast path, variant E: the tensor-core math of C (w4_mma.cuh) with x as D's FP16 hi + lo columns
// (FP32-accurate), in a main loop cut to the fewest instructions per weight byte.
//
// Why. Nsight Compute on the H200 (docs/kernel-notes.md, "Session 3") put A at 11, C at 8.7 and D at 14
// thread-instructions per weight byte — at 4.3 TB/s an SM can issue only ~7.8 — while the dequantization and
// the mma themselves need ~2.5. The rest was bookkeeping: 64-bit index products and predicates per load,
// divisions, per-stage barriers, piece tracking. E keeps only what the data needs:
//   * shapes: cols % 128 == 0 and group = 128·2^k, so a 128-channel "slice" of a row is whole 16-byte
//     chunks of one group: no chunk or group predicates, the group of slice s is s >> k;
//   * rows of the last partial tile are clamped (they load a valid row; their results are not written),
//     so no row predicates either;
//   * each warp owns a fixed slice range [w·S/16, (w+1)·S/16) of every tile of its block (S = cols / 128),
//     so the loop counters are plain increments; the 16 warps' partial tile sums meet in shared memory once
//     per tile (one barrier per tile, the next tile's first loads already in flight across it);
//   * weights stream through registers, kStep slices (per lane: 2 rows × kStep × 16 bytes) per pipeline
//     step, the next step's loads issued before the current step's math.
// Work split: tiles of 16 rows; block k of n = min(#SMs, tiles) takes the contiguous tiles
// [T·k/n, T·(k+1)/n). Lane (g, t) of a warp reads chunk t of each of its slices of rows g and g + 8.
// Per slice and lane: 2 LDG.128 + 4 LDG.U16 (scale, zero), 4 LDS.128 of x (lanes g < 2B), 8 × (1 SHF +
// 4 LOP3 + 4 HADD2/HFMA2) dequantization, 8 HMMA, ~10 for the scale-after FFMAs and the per-row unpack: ~100
// instructions per 32 weight bytes, ~3.2 per byte.
#include "w4_gemv_lean.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "w4_mma.cuh"

namespace wkv::kernels::detail {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kTileRows = 16;
constexpr int kSliceCols = 128;
constexpr int kStep = 2;  // slices per pipeline step (ptxas -v: no spills under the 128-register cap)

// red [2][kWarps][kLeanMaxBatch][16] (tile parity), wmax [kWarps][kLeanMaxBatch], xsc [4], xinv [4].
constexpr size_t kRedFloats = 2 * kWarps * kLeanMaxBatch * kTileRows;
constexpr size_t kSmallBytes = (kRedFloats + kWarps * kLeanMaxBatch + 2 * kLeanMaxBatch) * 4;

size_t smem_bytes(int B, int cols) { return (size_t)B * hilo_bytes_per_batch(cols) + kSmallBytes; }

struct LeanArgs {
  int rows, B;
  int slices;  // cols / 128
  int row_u4;  // cols / 32: 16-byte chunks per qweight row
  int groups;  // cols / group
  int gshift;  // log2(group / 128)
  const uint4* q;
  const uint16_t* scales;
  const uint16_t* zeros;
};

// One pipeline step of a lane: slices u < n of rows g (r = 0) and g + 8 (r = 1).
struct Step {
  uint4 q[kStep][2];
  uint32_t hz[kStep][2];  // scale bits | zero bits << 16
};

// Issues the loads of slices s0 … s0 + n − 1 (n ≤ kStep, warp-uniform) of rows ra and rb, chunk t.
__device__ __forceinline__ void load_step(const LeanArgs& a, int ra, int rb, int s0, int n, int t, Step& st) {
  const uint4* qa = a.q + (size_t)ra * a.row_u4 + t;
  const uint4* qb = a.q + (size_t)rb * a.row_u4 + t;
  const size_t ma = (size_t)ra * a.groups, mb = (size_t)rb * a.groups;
#pragma unroll
  for (int u = 0; u < kStep; ++u) {
    if (u < n) {
      const int s = s0 + u, gi = s >> a.gshift;
      st.q[u][0] = load_stream_u4(qa + 4 * s);
      st.q[u][1] = load_stream_u4(qb + 4 * s);
      st.hz[u][0] = (uint32_t)__ldg(a.scales + ma + gi) | ((uint32_t)__ldg(a.zeros + ma + gi) << 16);
      st.hz[u][1] = (uint32_t)__ldg(a.scales + mb + gi) | ((uint32_t)__ldg(a.zeros + mb + gi) << 16);
    }
  }
}

// acc (D layout) += the slices u < n of the step; xcol: this lane's B column (hi or lo of batch row g / 2).
__device__ __forceinline__ void math_step(const Step& st, int s0, int n, int t, bool xlane, const uint4* xcol,
                                          float (&acc)[4]) {
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
  for (int u = 0; u < kStep; ++u) {
    if (u < n) {
      const int cg = (s0 + u) * 4 + t;  // the chunk's index in the row
      const uint4* xc = xcol + cg * 4;
      const int key = (cg >> 1) & 1;
      const RowParams pa = unpack_params(st.hz[u][0]), pb = unpack_params(st.hz[u][1]);
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const uint4 xv = xlane ? xc[w ^ key] : zero;
        uint32_t ra[4], rb[4];
        dequant_word<true>(tc_word_of(st.q[u][0], w), pa, ra);
        dequant_word<true>(tc_word_of(st.q[u][1], w), pb, rb);
        mma_m16n8k16(d, ra[0], rb[0], ra[1], rb[1], xv.x, xv.y);  // channels 8w + 0 … 3
        mma_m16n8k16(d, ra[2], rb[2], ra[3], rb[3], xv.z, xv.w);  // channels 8w + 4 … 7
      }
      acc[0] = fmaf(pa.h, d[0], acc[0]);
      acc[1] = fmaf(pa.h, d[1], acc[1]);
      acc[2] = fmaf(pb.h, d[2], acc[2]);
      acc[3] = fmaf(pb.h, d[3], acc[3]);
    }
  }
}

__global__ void __launch_bounds__(kThreads, 1)
    w4_gemv_lean_kernel(LeanArgs a, const float* __restrict__ x, float* __restrict__ y) {
  extern __shared__ __align__(16) uint8_t smem_lean[];
  const int cols = a.slices * kSliceCols;
  uint8_t* xs = smem_lean;
  float* red = reinterpret_cast<float*>(xs + (size_t)a.B * hilo_bytes_per_batch(cols));
  float* wmax = red + kRedFloats;
  float* xsc = wmax + kWarps * kLeanMaxBatch;
  float* xinv = xsc + kLeanMaxBatch;

  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int tiles = (a.rows + kTileRows - 1) / kTileRows;
  const int t0 = (int)((long long)tiles * blockIdx.x / gridDim.x);
  const int t1 = (int)((long long)tiles * (blockIdx.x + 1) / gridDim.x);
  const int s_begin = warp * a.slices / kWarps, s_end = (warp + 1) * a.slices / kWarps;
  const int nsteps = (s_end - s_begin + kStep - 1) / kStep;  // 0 when this warp has no slice (cols < 2048)
  auto row_a = [&](int tile) { return min(tile * kTileRows + g, a.rows - 1); };
  auto row_b = [&](int tile) { return min(tile * kTileRows + g + 8, a.rows - 1); };

  Step cur, nxt;
  if (nsteps > 0 && t0 < t1) load_step(a, row_a(t0), row_b(t0), s_begin, min(kStep, s_end - s_begin), t, cur);
  stage_x_hilo<kThreads, kLeanMaxBatch>(x, cols, a.B, xs, wmax, xsc, xinv);
  __syncthreads();

  const bool xlane = g < 2 * a.B;  // supplies B column g: batch row g / 2, hi (g even) or lo (g odd)
  const uint4* xcol =
      reinterpret_cast<const uint4*>(xs + (size_t)(g >> 1) * hilo_bytes_per_batch(cols) + ((g & 1) ? cols * 2 + 32 : 0));
  for (int tile = t0; tile < t1; ++tile) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int c = 0, s0 = s_begin; c < nsteps; ++c, s0 += kStep) {
      const int n = min(kStep, s_end - s0);
      if (c + 1 < nsteps) {
        load_step(a, row_a(tile), row_b(tile), s0 + kStep, min(kStep, s_end - s0 - kStep), t, nxt);
      } else if (tile + 1 < t1) {  // the next tile's first step, in flight across the tile-end barrier
        load_step(a, row_a(tile + 1), row_b(tile + 1), s_begin, min(kStep, s_end - s_begin), t, nxt);
      }
      math_step(cur, s0, n, t, xlane, xcol, acc);
      cur = nxt;
    }
    // The 16 warps' partial sums of this tile, combined in warp order (deterministic).
    float* red_t = red + (size_t)((tile - t0) & 1) * (kRedFloats / 2);
    if (t < a.B) {  // lane (g, t): batch row t, rows g and g + 8 (hi + lo columns)
      red_t[(warp * kLeanMaxBatch + t) * kTileRows + g] = acc[0] + acc[1];
      red_t[(warp * kLeanMaxBatch + t) * kTileRows + g + 8] = acc[2] + acc[3];
    }
    __syncthreads();
    if (tid < kTileRows * a.B) {
      const int b = tid / kTileRows, r = tid % kTileRows, row = tile * kTileRows + r;
      float sum = 0.0f;
      for (int w = 0; w < kWarps; ++w) sum += red_t[(w * kLeanMaxBatch + b) * kTileRows + r];
      if (row < a.rows) y[(size_t)b * a.rows + row] = sum * xinv[b];
    }
  }
}

}  // namespace

int w4_gemv_lean_max_batch(const W4DeviceWeights& w, int smem_optin) {
  const int per = w.group / kSliceCols;
  if (w.cols % kSliceCols != 0 || w.group % kSliceCols != 0 || (per & (per - 1)) != 0 || !aligned16(w.qweight))
    return 0;
  for (int B = kLeanMaxBatch; B >= 1; --B)
    if (smem_bytes(B, w.cols) <= (size_t)smem_optin) return B;
  return 0;
}

void w4_gemv_lean_launch(const W4DeviceWeights& w, const float* x, int B, float* y, int sms, cudaStream_t stream) {
  require_arg(B >= 1 && B <= w4_gemv_lean_max_batch(w, device_limits().smem_optin) && aligned16(x),
              "w4_gemv (E): internal: batch " + std::to_string(B) + " or shape not supported");
  static const bool attr_set = (allow_max_dynamic_smem(w4_gemv_lean_kernel), true);
  (void)attr_set;
  LeanArgs a{};
  a.rows = w.rows;
  a.B = B;
  a.slices = w.cols / kSliceCols;
  a.row_u4 = w.cols / 32;
  a.groups = w.cols / w.group;
  a.gshift = __builtin_ctz((unsigned)(w.group / kSliceCols));
  a.q = reinterpret_cast<const uint4*>(w.qweight);
  a.scales = w.scales;
  a.zeros = w.zeros;
  const int tiles = (w.rows + kTileRows - 1) / kTileRows;
  const int blocks = std::max(1, std::min(sms, tiles));
  w4_gemv_lean_kernel<<<blocks, kThreads, smem_bytes(B, w.cols), stream>>>(a, x, y);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels::detail
