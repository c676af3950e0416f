// Prefill GEMM through cuBLAS tensor cores: y[T][rows] = x[T][cols] · Wᵀ.
//
// x: FP32 [T][cols] (converted to FP16 into the context's scratch), W: FP16 bits [rows][cols] row-major
// (nn.Linear layout, e.g. from w4_dequant_f16), y: FP32 [T][rows]. FP16 inputs, FP32 accumulation and
// output (cublasGemmEx, CUBLAS_COMPUTE_32F). Expected error vs an FP64 product of the FP32 inputs: the FP16
// rounding of x and W (relative ~2^-11 per element), i.e. rel L2 ~1e-4..1e-3.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

struct cublasContext;  // cublas_api.h: typedef struct cublasContext* cublasHandle_t

namespace wkv::kernels {

// Owns a cuBLAS handle and a device scratch buffer (x in FP16). Not thread-safe; one per stream user.
class CublasContext {
 public:
  CublasContext();
  ~CublasContext();
  CublasContext(const CublasContext&) = delete;
  CublasContext& operator=(const CublasContext&) = delete;

  cublasContext* handle() const { return handle_; }
  // Device scratch of at least `bytes`. Growing it frees the old buffer (cudaFree synchronizes the
  // device), so reserve the largest size before capturing a CUDA graph.
  void* scratch(size_t bytes);

 private:
  cublasContext* handle_ = nullptr;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
};

// out[i] = fp16(x[i]) (round to nearest even; beyond ±65504 → ±Inf), n elements, device memory.
void f32_to_f16(const float* x, uint16_t* out, int64_t n, cudaStream_t stream = 0);

// y[T][rows] = x[T][cols] · Wᵀ (see above). Throws wkv::Error(invalid_argument) on bad sizes,
// std::runtime_error on CUDA / cuBLAS failures.
void gemm_f16(CublasContext& ctx, const float* x, int T, const uint16_t* W, int rows, int cols, float* y,
              cudaStream_t stream = 0);
// The same with x already in FP16 bits [T][cols] (e.g. one f32_to_f16 shared by the linears of one input):
// gemm_f16 is f32_to_f16 followed by this, so both give identical bits.
void gemm_f16_h(CublasContext& ctx, const uint16_t* x16, int T, const uint16_t* W, int rows, int cols, float* y,
                cudaStream_t stream = 0);

}  // namespace wkv::kernels
