// CUBLAS_CHECK: the cuBLAS counterpart of CUDA_CHECK (cuda_check.h); failures throw std::runtime_error
// with file, line, the expression and cuBLAS's status name.
#pragma once

#include <cublas_v2.h>

#include <stdexcept>
#include <string>

namespace wkv::kernels {

[[noreturn]] inline void throw_cublas_error(cublasStatus_t s, const char* expr, const char* file, int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr + " failed: " +
                           cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

}  // namespace wkv::kernels

#define CUBLAS_CHECK(expr)                                                                    \
  do {                                                                                        \
    const cublasStatus_t wkv_st_ = (expr);                                                    \
    if (wkv_st_ != CUBLAS_STATUS_SUCCESS)                                                     \
      ::wkv::kernels::throw_cublas_error(wkv_st_, #expr, __FILE__, __LINE__);                 \
  } while (0)
