// Small device and host helpers shared by the kernels in this folder (internal).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "cuda_check.h"
#include "wkv/error.h"

namespace wkv::kernels {

constexpr int kWarpSize = 32;

// Throws wkv::Error(invalid_argument) with `message` unless `ok`.
inline void require_arg(bool ok, const std::string& message) {
  if (!ok) throw wkv::Error(wkv::ErrorCode::invalid_argument, message);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// What launch planning needs of the current device, queried once per process (the engine uses one device
// per process), so launch wrappers on the decode path make no per-call attribute queries.
struct DeviceLimits {
  int sms = 0;            // multiprocessors
  int smem_optin = 0;     // max dynamic shared memory per block (opt-in), bytes
  int compute_major = 0;  // compute capability major version
};

inline const DeviceLimits& device_limits() {
  static const DeviceLimits limits = [] {
    DeviceLimits l;
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&l.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&l.compute_major, cudaDevAttrComputeCapabilityMajor, dev));
    return l;
  }();
  return limits;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
  return v;
}

// 16-byte load that streams through L2 without allocating in L1, so weights read once do not evict
// the activations every warp of the SM re-reads. Read-only (.nc): the weights never change in a launch.
__device__ __forceinline__ uint4 load_stream_u4(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// 4-byte variant of load_stream_u4.
__device__ __forceinline__ uint32_t load_stream_u32(const void* p) {
  uint32_t v;
  asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
  return v;
}

__device__ __forceinline__ __half2 half2_from_bits(uint32_t bits) {
  __half2 h;
  memcpy(&h, &bits, sizeof(h));
  return h;
}

}  // namespace wkv::kernels
