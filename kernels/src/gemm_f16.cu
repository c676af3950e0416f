// Prefill GEMM via cuBLAS (FP16 inputs on tensor cores, FP32 accumulate/output). See wkv_kernels/gemm_f16.h.
//
// Layout mapping: cuBLAS is column-major. Row-major y[T][rows] is column-major Y [rows][T] (ld = rows);
// row-major W [rows][cols] is column-major [cols][rows] (ld = cols), so op(A) = Aᵀ gives [rows][cols];
// row-major x[T][cols] is column-major [cols][T] (ld = cols), op(B) = N. Hence Y = Wᵀᵀ·x: m = rows,
// n = T, k = cols.
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "cublas_check.h"
#include "cuda_check.h"
#include "kernel_util.h"
#include "wkv_kernels/gemm_f16.h"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 256;

__global__ void f32_to_f16_kernel(const float* __restrict__ x, __half* __restrict__ out, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * kThreads;
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += stride)
    out[i] = __float2half_rn(x[i]);
}

}  // namespace

CublasContext::CublasContext() {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  handle_ = h;
}

CublasContext::~CublasContext() {
  if (scratch_) cudaFree(scratch_);  // destructor: errors cannot be reported
  if (handle_) cublasDestroy(handle_);
}

void* CublasContext::scratch(size_t bytes) {
  if (bytes > scratch_bytes_) {
    if (scratch_) CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    CUDA_CHECK(cudaMalloc(&scratch_, bytes));
    scratch_bytes_ = bytes;
  }
  return scratch_;
}

void f32_to_f16(const float* x, uint16_t* out, int64_t n, cudaStream_t stream) {
  require_arg(n >= 0, "f32_to_f16: n must be >= 0");
  if (n == 0) return;
  require_arg(x && out, "f32_to_f16: x and out must be non-null device pointers");
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535);
  f32_to_f16_kernel<<<(unsigned)blocks, kThreads, 0, stream>>>(x, reinterpret_cast<__half*>(out), n);
  WKV_CHECK_LAUNCH();
}

namespace {
void check_gemm_sizes(const char* name, int T, int rows, int cols) {
  require_arg(T >= 1 && rows >= 1 && cols >= 1, std::string(name) + ": sizes T=" + std::to_string(T) + " rows=" +
                                                    std::to_string(rows) + " cols=" + std::to_string(cols) +
                                                    " must all be >= 1");
}
}  // namespace

void gemm_f16(CublasContext& ctx, const float* x, int T, const uint16_t* W, int rows, int cols, float* y,
              cudaStream_t stream) {
  check_gemm_sizes("gemm_f16", T, rows, cols);
  require_arg(x && W && y, "gemm_f16: x, W and y must be non-null device pointers");
  const int64_t nx = (int64_t)T * cols;
  auto* x16 = static_cast<uint16_t*>(ctx.scratch((size_t)nx * sizeof(uint16_t)));
  f32_to_f16(x, x16, nx, stream);
  gemm_f16_h(ctx, x16, T, W, rows, cols, y, stream);
}

void gemm_f16_h(CublasContext& ctx, const uint16_t* x16, int T, const uint16_t* W, int rows, int cols, float* y,
                cudaStream_t stream) {
  check_gemm_sizes("gemm_f16_h", T, rows, cols);
  require_arg(x16 && W && y, "gemm_f16_h: x16, W and y must be non-null device pointers");
  CUBLAS_CHECK(cublasSetStream(ctx.handle(), stream));
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(ctx.handle(), CUBLAS_OP_T, CUBLAS_OP_N, rows, T, cols, &alpha, W, CUDA_R_16F, cols,
                            x16, CUDA_R_16F, cols, &beta, y, CUDA_R_32F, rows, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

}  // namespace wkv::kernels
