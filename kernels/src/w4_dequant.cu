// W4 → dense FP16 [rows][cols] for prefill GEMMs. See wkv_kernels/w4_dequant.h.
//
// One thread per qweight word (8 channels): (q − z)·h is computed exactly in FP32 with the shared
// helpers of quant_formats.h and rounded once to FP16 (RNE, __float2half_rn == float_to_fp16 for every
// finite input), then the 8 halves are written as one 16-byte store (cols % 8 == 0 by the format, so
// every word's output is 16-byte aligned when `out` is).
#include <cuda_fp16.h>

#include "cuda_check.h"
#include "kernel_util.h"
#include "quant_formats.h"
#include "wkv_kernels/w4_dequant.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) w4_dequant_kernel(int rows, int cols, int group,
                                                              const uint32_t* __restrict__ qweight,
                                                              const uint16_t* __restrict__ scales,
                                                              const uint16_t* __restrict__ zeros,
                                                              uint4* __restrict__ out) {
  const int words_per_row = cols / kW4ChannelsPerWord;
  const size_t total = (size_t)rows * words_per_row;
  const size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x;
  if (i >= total) return;
  const size_t row = i / words_per_row;
  const int k = (int)(i - row * words_per_row);
  const int groups = cols / group;
  const size_t gi = row * groups + (size_t)k * kW4ChannelsPerWord / group;
  float v[kW4ChannelsPerWord];
  w4_dequantize_word(qweight[i], scales[gi], zeros[gi], v);  // exact FP32 values
  uint32_t packed[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t lo = __half_as_ushort(__float2half_rn(v[2 * j]));
    const uint32_t hi = __half_as_ushort(__float2half_rn(v[2 * j + 1]));
    packed[j] = lo | (hi << 16);
  }
  out[i] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

}  // namespace

void w4_dequant_f16(const W4DeviceWeights& w, uint16_t* out, cudaStream_t stream) {
  validate_w4_device(w, "w4_dequant_f16");
  require_arg(out != nullptr && aligned16(out), "w4_dequant_f16: out must be a 16-byte aligned device pointer");
  if (!w.qweight) {  // packed-only weights (validate_w4_device: then packed is set)
    w4_dequant_f16_packed({w.rows, w.cols, w.packed}, out, stream);
    return;
  }
  const size_t words = (size_t)w.rows * (w.cols / kW4ChannelsPerWord);
  const size_t blocks = (words + kThreads - 1) / kThreads;
  require_arg(blocks <= 0x7FFFFFFFu, "w4_dequant_f16: matrix too large for one launch");
  w4_dequant_kernel<<<(unsigned)blocks, kThreads, 0, stream>>>(w.rows, w.cols, w.group, w.qweight, w.scales,
                                                              w.zeros, reinterpret_cast<uint4*>(out));
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels
