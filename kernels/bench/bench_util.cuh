// Helpers shared by the kernel benchmarks (not part of the kernels library): a deterministic device-side
// fill for inputs too large to generate on the host, and CUDA-event timing with a median.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cuda_check.h"

namespace wkv::bench {

// x[i] = lo + (hi − lo)·u_i with u_i a hash of (i, seed) in [0, 1): reproducible, no host round trip.
__global__ void fill_uniform_kernel(float* x, size_t n, uint32_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    x[i] = lo + (hi - lo) * float(h >> 8) * (1.0f / 16777216.0f);
  }
}

inline void fill_uniform(float* x, size_t n, uint32_t seed, float lo, float hi) {
  fill_uniform_kernel<<<1024, 256>>>(x, n, seed, lo, hi);
  WKV_CHECK_LAUNCH();
}

// Median over `runs` timed calls of launch(i) (after 5 untimed warm-up calls), in microseconds, each call
// bracketed by CUDA events on the default stream.
template <typename F>
double median_us(int runs, F&& launch) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i) launch(i);
  std::vector<float> t;
  for (int i = 0; i < runs; ++i) {
    CUDA_CHECK(cudaEventRecord(a));
    launch(i);
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.0f);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace wkv::bench
