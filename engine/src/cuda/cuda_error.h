// CUDA runtime errors → wkv::Error at the engine's CUDA boundaries (backend, calibrator).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "wkv/error.h"

namespace wkv {

// Throws unless e == cudaSuccess: out_of_memory for an allocation failure (the message names `what` and
// adds `oom_advice`), internal otherwise ("CUDA error <context>: <what>: <CUDA's text>"). Clears the
// runtime's sticky last error first so later calls are not blamed for this one.
inline void throw_on_cuda_error(cudaError_t e, const char* what, const char* context, const char* oom_advice) {
  if (e == cudaSuccess) return;
  cudaGetLastError();
  if (e == cudaErrorMemoryAllocation)
    throw Error(ErrorCode::out_of_memory,
                "GPU out of memory " + std::string(context) + " while allocating " + what + " (" + oom_advice + ")");
  throw Error(ErrorCode::internal,
              "CUDA error " + std::string(context) + ": " + what + ": " + cudaGetErrorString(e));
}

}  // namespace wkv
