// Small device and host helpers shared by the kernels in this folder (internal).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

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

// Programmatic dependent launch (sm_90; no-ops elsewhere and for grids launched without the attribute).
// grid_dependency_wait: returns once the grids this one depends on have completed and their memory is
// visible; a kernel launched with PDL must call it before it reads what they wrote or writes what they read.
// grid_dependents_launch: lets the next grid in the stream, if launched with PDL, start before this one ends.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) with the launch attributes attrs[0 … n_attrs).
template <typename... KernelArgs, typename... Args>
void launch_kernel_ex(cudaLaunchAttribute* attrs, unsigned n_attrs, void (*kernel)(KernelArgs...), dim3 grid,
                      dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = n_attrs ? attrs : nullptr;
  cfg.numAttrs = n_attrs;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

// Launches kernel<<<grid, block, smem, stream>>>(args...), with programmatic dependent launch when `pdl` (the
// kernel must then call grid_dependency_wait before touching its predecessors' data).
template <typename... KernelArgs, typename... Args>
void launch_kernel_pdl(bool pdl, void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                       cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  launch_kernel_ex(&attr, pdl ? 1u : 0u, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) as a cooperative launch: the runtime refuses it
// (cudaErrorCooperativeLaunchTooLarge) unless every block can be resident at once, and never runs it beside
// another cooperative grid that could hold part of the SMs. Valid under stream capture (a cooperative
// kernel node). For persistent kernels whose blocks wait on each other through global memory.
template <typename... KernelArgs, typename... Args>
void launch_kernel_cooperative(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                               cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeCooperative;
  attr.val.cooperative = 1;
  launch_kernel_ex(&attr, 1u, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

// WKV_PDL_CHAIN=1 (an experiment, off by default): the decode step's RoPE + KV4 append and the streaming KV4
// attention are launched with programmatic dependent launch too, so that with WKV_W4_PACKED_PDL the whole
// layer is one chain of early launches (each waits for its predecessor before touching its data).
inline bool pdl_chain() {
  static const bool on = [] {
    const char* e = std::getenv("WKV_PDL_CHAIN");
    return e && *e == '1';
  }();
  return on;
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

// D += A·B with mma.sync.m16n8k16 (FP16 A and B, FP32 D). Fragments (PTX ISA, g = lane / 4, t = lane % 4;
// .f16x2 registers hold the lower k / column in the low half): A row-major 16×16, a0 = (row g, k 2t, 2t+1),
// a1 = (row g+8, k 2t, 2t+1), a2 = (row g, k 2t+8, 2t+9), a3 = (row g+8, k 2t+8, 2t+9); B col-major
// 16×8, b0 = (k 2t, 2t+1, col g), b1 = (k 2t+8, 2t+9, col g); D 16×8, d0, d1 = (row g, cols 2t, 2t+1),
// d2, d3 = (row g+8, cols 2t, 2t+1). Launch wrappers select these kernels on compute capability ≥ 8.0 only.
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  (void)d, (void)a0, (void)a1, (void)a2, (void)a3, (void)b0, (void)b1;
  __trap();
#endif
}
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  mma_m16n8k16(d, a[0], a[1], a[2], a[3], b0, b1);
}

// Lets `kernel` take dynamic shared memory up to the device's opt-in limit: the limit covers static and
// dynamic memory together, so the kernel's static shared memory is subtracted. Call once per kernel
// instantiation (a function-local static in the launch wrapper).
template <class Kernel>
void allow_max_dynamic_smem(Kernel kernel) {
  cudaFuncAttributes attr{};
  CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  device_limits().smem_optin - (int)attr.sharedSizeBytes));
}

// silu(g)·u with the exact operations of swiglu() (elementwise.cu), so fused and separate paths agree bitwise.
__device__ __forceinline__ float silu_mul(float g, float u) {
  return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

// 1 / sqrt(mean of squares + eps) with the operations of add_rmsnorm_f32 (elementwise.cu).
__device__ __forceinline__ float rms_inverse(float sum_squares, int n, float eps) {
  return __fdiv_rn(1.0f, sqrtf(__fadd_rn(__fdiv_rn(sum_squares, (float)n), eps)));
}

__device__ __forceinline__ __half2 half2_from_bits(uint32_t bits) {
  __half2 h;
  memcpy(&h, &bits, sizeof(h));
  return h;
}

}  // namespace wkv::kernels
