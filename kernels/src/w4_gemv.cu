// W4 GEMV (decode): y[b][row] = Σ_c x[b][c]·(q − z)·h. See wkv_kernels/w4_gemv.h for the contract.
//
// Fast path (cols % 32 == 0, group % 32 == 0, aligned pointers)
//   Each block of 128 threads owns kRows consecutive rows; thread t takes the words (8 channels) t, t + 128,
//   t + 256, … of every one of its rows (split-K inside the block, reduced through shared memory at the
//   end), so one warp-wide load instruction reads 128 contiguous bytes of a row and each x value a thread
//   loads is reused for kRows rows. Loads of U word-steps (and their scales / zeros) are issued before any
//   math. (The fast-path conditions, cols % 32 and group % 32, are those of an earlier uint4 mapping.) Why split-K: with one warp per kRows rows, a 4096-row matrix gave only
//   ~8 warps per SM, too few bytes in flight and too little latency hiding (20% of HBM bandwidth).
//
//   Dequantization (quant_formats.h explains the trick): for word w and pair j,
//     bits = ((w >> 4j) & 0x000F000F) | 0x64006400   → half2 (1024 + q_2j, 1024 + q_2j+1), exact;
//     d    = bits − half2(1024 + z)                  → (q − z) for both channels, exact (|q − z| ≤ 1039,
//                                                      every integer ≤ 2048 is an FP16);
//   then d is widened to FP32 and multiplied by x in FP32. The chunk's partial sum Σ (q − z)·x is scaled
//   by h once per chunk: Σ h(q − z)x = h·Σ (q − z)x up to FP32 rounding, with no cancellation (unlike
//   h·(Σ q·x − z·Σ x)). So accuracy is that of an FP32 dot product of the exact dequantized weights.
//
//   x is read with __ldg (read-only path, L1-cached) rather than staged in shared memory: no limit on
//   B·cols, no block barrier, and since the weights bypass L1 (load_stream_u4) the activations stay
//   resident in L1 for every warp of the SM.
//
// Generic path: any valid W4 shape; one warp per row, lane l takes words l, l + 32, …, scalar float math.
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "quant_formats.h"
#include "wkv_kernels/w4_gemv.h"

namespace wkv::kernels {

namespace {

constexpr int kBlockThreads = 128;  // 4 warps
constexpr int kWarpsPerBlock = kBlockThreads / kWarpSize;
constexpr int kRows = 4;            // rows per block on the fast path
constexpr int kMaxBatch = 8;        // batch rows per launch
// Fast path: at least 8 blocks (32 warps) per SM, so registers ≤ 64: the loads of the other warps hide
// each warp's latency; without the cap the compiler dequantized everything up front (160+ registers).
// B ≥ 2 holds B·kRows accumulators and gets a looser cap (more work per byte, fewer warps needed).
constexpr int min_blocks(int B) { return B == 1 ? 7 : B == 2 ? 4 : B <= 4 ? 3 : 2; }

struct W4Args {
  int rows, cols, group;
  const uint32_t* qweight;
  const uint16_t* scales;
  const uint16_t* zeros;
};

// (q − z) of the 8 channels of one word, channel order, as FP32 (exact).
__device__ __forceinline__ void word_minus_zero(uint32_t word, __half2 bias, float (&d)[8]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t bits = ((word >> (4 * j)) & kW4PairMask) | kFp16x2Bias1024;
    const float2 f = __half22float2(__hsub2(half2_from_bits(bits), bias));
    d[2 * j] = f.x;      // channel 2j (low half)
    d[2 * j + 1] = f.y;  // channel 2j + 1 (high half)
  }
}

template <int B, int U>
__global__ void __launch_bounds__(kBlockThreads, min_blocks(B)) w4_gemv_fast_kernel(W4Args a, const float* __restrict__ x,
                                                                      float* __restrict__ y) {
  // Block = kRows rows; its kBlockThreads threads split the row's chunks (thread t: chunks t, t + 128, …).
  // At B = 1 each thread then holds U·kRows 16-byte loads in flight, and the grid has rows/kRows blocks of
  // 4 warps (4096 rows → 1024 blocks ≈ 31 warps per SM), enough bytes in flight to cover HBM latency.
  __shared__ float red[kWarpsPerBlock][B][kRows];
  const int tid = (int)threadIdx.x;
  const int lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int row0 = (int)blockIdx.x * kRows;
  const int chunks = a.cols / 32;
  const int groups = a.cols / a.group;
  const size_t x_stride4 = (size_t)a.cols / 4;  // batch stride of x in float4

  // Rows past the end (rows % kRows != 0) read the last row again and are not written.
  const uint4* qrow[kRows];
  const uint16_t* srow[kRows];
  const uint16_t* zrow[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = min(row0 + r, a.rows - 1);
    qrow[r] = reinterpret_cast<const uint4*>(a.qweight) + (size_t)row * chunks;
    srow[r] = a.scales + (size_t)row * groups;
    zrow[r] = a.zeros + (size_t)row * groups;
  }

  float acc[B][kRows];
#pragma unroll
  for (int b = 0; b < B; ++b)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[b][r] = 0.0f;

  const __half bias1024 = __ushort_as_half((unsigned short)0x6400u);  // 1024.0
  // Thread t takes words t, t + 128, … of each row: a warp's weight load reads 128 contiguous bytes of a
  // row, and its x reads (8 floats = 32 bytes per lane, two float4) cover 1 KB contiguous, 8 L1 wavefronts
  // per instruction. (Taking a uint4 of 4 words per lane instead made lanes read x 128 bytes apart: 32
  // wavefronts per x load, which capped the kernel at ~20% of HBM bandwidth — L1-bound, not HBM-bound.)
  const int words = a.cols / 8;
  const int words_per_group = a.group / 8;
  const uint32_t* qw[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) qw[r] = reinterpret_cast<const uint32_t*>(qrow[r]);
  for (int k0 = tid; k0 < words; k0 += kBlockThreads * U) {
    uint32_t q[U][kRows];
    float h[U][kRows];
    __half2 bias[U][kRows];
    // All loads of this step first (weights, then their scales / zeros), math after.
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * kBlockThreads;
      if (k < words) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) q[u][r] = load_stream_u32(qw[r] + k);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * kBlockThreads;
      if (k < words) {
        const int g = k / words_per_group;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          h[u][r] = __half2float(__ushort_as_half(__ldg(srow[r] + g)));
          // 1024 + z is exact: z is an integer in [−1024, 1024].
          bias[u][r] = __half2half2(__hadd(__ushort_as_half(__ldg(zrow[r] + g)), bias1024));
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int k = k0 + u * kBlockThreads;
      if (k >= words) break;
      const float4* xc = reinterpret_cast<const float4*>(x) + (size_t)k * 2;  // 8 floats of word k
      float d[kRows][8];
#pragma unroll
      for (int r = 0; r < kRows; ++r) word_minus_zero(q[u][r], bias[u][r], d[r]);
#pragma unroll
      for (int b = 0; b < B; ++b) {
        const float4 x0 = __ldg(xc + b * x_stride4);
        const float4 x1 = __ldg(xc + b * x_stride4 + 1);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          float s = d[r][0] * x0.x;
          s = fmaf(d[r][1], x0.y, s);
          s = fmaf(d[r][2], x0.z, s);
          s = fmaf(d[r][3], x0.w, s);
          s = fmaf(d[r][4], x1.x, s);
          s = fmaf(d[r][5], x1.y, s);
          s = fmaf(d[r][6], x1.z, s);
          s = fmaf(d[r][7], x1.w, s);
          acc[b][r] = fmaf(h[u][r], s, acc[b][r]);
        }
      }
    }
  }

  // Reduce over the block: lanes by shuffles, warps through shared memory.
#pragma unroll
  for (int b = 0; b < B; ++b)
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc[b][r] = warp_sum(acc[b][r]);
  if (lane == 0) {
#pragma unroll
    for (int b = 0; b < B; ++b)
#pragma unroll
      for (int r = 0; r < kRows; ++r) red[warp][b][r] = acc[b][r];
  }
  __syncthreads();
  if (tid < B * kRows) {
    const int b = tid / kRows, r = tid % kRows;
    float s = red[0][b][r];
#pragma unroll
    for (int i = 1; i < kWarpsPerBlock; ++i) s += red[i][b][r];
    if (row0 + r < a.rows) y[(size_t)b * a.rows + row0 + r] = s;
  }
}

// Any valid W4 shape: one warp per row, lane l handles words l, l + 32, … (8 channels each).
template <int B>
__global__ void __launch_bounds__(kBlockThreads) w4_gemv_generic_kernel(W4Args a, const float* __restrict__ x,
                                                                        float* __restrict__ y) {
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

template <int B, int U>
void launch_fast(const W4Args& a, const float* x, float* y, cudaStream_t stream) {
  const int blocks = (a.rows + kRows - 1) / kRows;
  w4_gemv_fast_kernel<B, U><<<blocks, kBlockThreads, 0, stream>>>(a, x, y);
  WKV_CHECK_LAUNCH();
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

// Register budget: U·kRows uint4 in flight plus 2·B·kRows accumulators. Small batches are bound by
// memory and get deep prefetch; large ones by FP32 issue and get more accumulators instead.
void dispatch_fast(const W4Args& a, const float* x, int B, float* y, cudaStream_t stream) {
  switch (B) {
    case 1: launch_fast<1, 2>(a, x, y, stream); break;
    case 2: launch_fast<2, 2>(a, x, y, stream); break;
    case 3: launch_fast<3, 2>(a, x, y, stream); break;
    case 4: launch_fast<4, 2>(a, x, y, stream); break;
    case 5: launch_fast<5, 1>(a, x, y, stream); break;
    case 6: launch_fast<6, 1>(a, x, y, stream); break;
    case 7: launch_fast<7, 1>(a, x, y, stream); break;
    case 8: launch_fast<8, 1>(a, x, y, stream); break;
    default: require_arg(false, "w4_gemv: internal batch dispatch " + std::to_string(B));
  }
}

}  // namespace

void validate_w4_device(const W4DeviceWeights& w, const char* what) {
  const std::string n = what ? what : "W4 weights";
  require_arg(w.rows >= 1 && w.cols >= 1, n + ": W4 shape " + std::to_string(w.rows) + "x" +
                                              std::to_string(w.cols) + " must have rows, cols >= 1");
  require_arg(w.group >= 8 && w.group % 8 == 0 && w.cols % w.group == 0,
              n + ": W4 group " + std::to_string(w.group) + " must be a multiple of 8 dividing cols " +
                  std::to_string(w.cols));
  require_arg(w.qweight && w.scales && w.zeros, n + ": W4 qweight / scales / zeros must be non-null");
}

bool w4_gemv_fast_path(const W4DeviceWeights& w, const float* x) {
  return w.cols % 32 == 0 && w.group % 32 == 0 && aligned16(w.qweight) && aligned16(x);
}

void w4_gemv(const W4DeviceWeights& w, const float* x, int B, float* y, cudaStream_t stream) {
  validate_w4_device(w, "w4_gemv");
  require_arg(B >= 1, "w4_gemv: batch " + std::to_string(B) + " must be >= 1");
  require_arg(x && y, "w4_gemv: x and y must be non-null device pointers");
  const W4Args a{w.rows, w.cols, w.group, w.qweight, w.scales, w.zeros};
  const bool fast = w4_gemv_fast_path(w, x);
  for (int b0 = 0; b0 < B; b0 += kMaxBatch) {
    const int nb = std::min(kMaxBatch, B - b0);
    const float* xb = x + (size_t)b0 * w.cols;
    float* yb = y + (size_t)b0 * w.rows;
    if (fast) {
      dispatch_fast(a, xb, nb, yb, stream);
    } else {
      dispatch_generic(a, xb, nb, yb, stream);
    }
  }
}

}  // namespace wkv::kernels
