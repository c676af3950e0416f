// CUDA_CHECK: every CUDA runtime call's status is checked; failures throw with file, line and the
// error string. WKV_CHECK_LAUNCH checks the last error after a kernel launch.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace wkv::kernels {

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr + " failed: " +
                           cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace wkv::kernels

#define CUDA_CHECK(expr)                                                                   \
  do {                                                                                     \
    const cudaError_t wkv_err_ = (expr);                                                   \
    if (wkv_err_ != cudaSuccess) ::wkv::kernels::throw_cuda_error(wkv_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define WKV_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
