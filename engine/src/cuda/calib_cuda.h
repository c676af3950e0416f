// WKVQuant calibration on the GPU (CUDA + cuBLAS, FP32): the same algorithm and results as the CPU
// reference (calibrate.h, calib_block.h) up to FP32 rounding. The loop is calibrate.cpp's
// run_calibration; this file provides its CUDA backend (device block forward / backward with a device
// tape, device loss and AdamW). Plain C++ header (no CUDA types); builds without CUDA get stubs
// (backend_select.cpp) that say so.
//
// Memory plan (FP32 device buffers; N segments of L tokens, d = dim, q = H·D, c = Hkv·D, F = ffn, k = CRR
// blocks, P = parameters of one block's seven linears = 2dq + 2dc + 3dF):
//   activations  2·N·L·d          the full-precision stream (the CRR target) and the quantized-path input;
//                                 one full-precision boundary suffices because run_calibration advances
//                                 it block by block (targets are needed in increasing order)
//   weights      (k+1)·(P + 2d)   the dense FP32 blocks l … l+k (uploaded on demand, freed behind)
//   tapes        k·(L·(4d + 2q + 4c + 3F + 2) + H·L²) + P   one segment each (the quantized block's tape
//                                 and k−1 full-precision ones); tape 0 also holds the fake-quantized
//                                 weights; the probabilities H·L² dominate
//   backward     P (dL/dW') + L·(6d + 2q + 4c + 3F) + 2L² + 2L·c   (incl. the a / b / grad segment buffers;
//                                 the block's parameters, gradients and Adam moments are tiny)
// LLaMA-2-7B (d 4096, H = Hkv 32 × 128, F 11008, 32 layers; P = 202.4 M), N = 128, L = 2048, k = 5:
//   activations 2 × 4.29 GB = 8.6 GB; weights 6 × 0.81 GB = 4.9 GB; tapes 5 × 1.14 GB + 0.81 GB = 6.5 GB;
//   backward 0.81 + 0.67 + 0.03 + 0.07 GB = 1.6 GB  →  ~21.6 GB, well inside the H200's 141 GB. (Keeping
//   one full-precision copy per block boundary, as the first CPU version did, would need 33 × 4.29 GB =
//   142 GB; streaming the target avoids that, so nothing is stored in FP16 or streamed from the host.)
// ref-a (d 256, 8 layers, H = Hkv 2 × 128, F 768, vocab 8192, ctx 2048; P = 0.85 M), N = 128, L = 2048,
// k = 5:  activations 2 × 268 MB = 537 MB; weights 6 × 3.4 MB = 20 MB; tapes 5 × 73 MB + 3.4 MB = 370 MB
// (probs 33.6 MB each); backward ~85 MB  →  ~1.0 GB.
// Not counted: the CUDA context and cuBLAS's workspace (a few hundred MB). peak_device_bytes in the result
// is the peak of what this calibrator allocated (tracked by its allocator), not of the whole process.
#pragma once

#include <string>
#include <vector>

#include "../calibrate.h"

namespace wkv::calib {

struct CudaCalibOptions {
  // cuBLAS may use TF32 tensor cores for the FP32 GEMMs: several times faster on large models, but products
  // with a 10-bit mantissa (~1e-3 relative per GEMM), so results drift further from the CPU reference.
  // Off by default; the tests run with it off.
  bool allow_tf32 = false;
};

// Whether this build and machine can calibrate on the GPU; `why` says why not.
bool cuda_calibration_available(std::string* why);

// calibrate_wkvquant on the GPU (device 0). result.device = "cuda: <GPU name>", peak_device_bytes set.
// Throws Error(unsupported) without CUDA / GPU, Error(out_of_memory) when the device is too small.
CalibrationResult calibrate_wkvquant_cuda(const ModelInfo& info, const CpuModelWeights& weights,
                                          const std::vector<std::vector<TokenId>>& segments,
                                          const CalibrationConfig& cfg, const CudaCalibOptions& options = {});

// For tests: block_forward + block_backward of ONE segment of L tokens on the GPU, host in / out (the
// device code the calibrator runs). params null = full-precision path. y [L][dim]; with dy [L][dim] given,
// dx [L][dim] and (quantized path) grads (same layout as params, overwritten) are filled. tape, when
// non-null, receives a host copy of the device tape (N = 1), comparable with block_forward's.
void cuda_block_forward_backward(const BlockShape& s, const LayerWeights& w, const BlockQuantParams* params,
                                 const float* x, int L, const float* dy, std::vector<float>* y,
                                 std::vector<float>* dx, BlockQuantParams* grads, BlockTape* tape = nullptr);

}  // namespace wkv::calib
