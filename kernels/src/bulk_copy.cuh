// sm_90 asynchronous-copy primitives (PTX ISA: mbarrier, cp.async.bulk), shared by the W4 GEMV variants that
// stream weights with the copy engine (w4_gemv_bulk.cu, w4_gemv_packed.cu). Each traps on older devices; the
// launch wrappers only select those kernels on compute capability 9.0 and newer.
#pragma once

#include <cstdint>

namespace wkv::kernels::detail {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

// Initializes a barrier that completes a phase after `count` arrivals (and the expected transaction bytes).
// Call mbar_init_fence() once after the last init (then a block barrier) before any thread or copy uses them.
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count = 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
#else
  (void)bar, (void)count;
  __trap();
#endif
}

// Makes the barrier inits visible to the copy engine (one fence for all of them: it costs hundreds of cycles).
__device__ __forceinline__ void mbar_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#else
  __trap();
#endif
}

// Arrives on the barrier and raises its transaction count by `bytes` (the copies that complete it).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
#else
  (void)bar, (void)bytes;
  __trap();
#endif
}

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n\t.reg .pred done;\n"
      "WKV_BULK_WAIT:\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n\t"
      "@!done bra WKV_BULK_WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#else
  (void)bar, (void)parity;
  __trap();
#endif
}

// Global → shared bulk copy of `bytes` (multiple of 16, both addresses 16-byte aligned), completing on bar.
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
#else
  (void)dst, (void)src, (void)bytes, (void)bar;
  __trap();
#endif
}

// Arrives once on the barrier (no transaction bytes): a consumer releasing a ring slot.
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
#else
  (void)bar;
  __trap();
#endif
}

// Hint: bring `bytes` (multiple of 16, 16-byte aligned) of global memory into L2, without waiting.
__device__ __forceinline__ void bulk_prefetch_l2(const void* src, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(bytes) : "memory");
#else
  (void)src, (void)bytes;
  __trap();
#endif
}

}  // namespace wkv::kernels::detail
