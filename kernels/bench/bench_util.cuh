// Helpers shared by the kernel benchmarks (not part of the kernels library): a deterministic device-side
// fill for inputs too large to generate on the host, CUDA-event timing with a median, and the paged-cache
// setup the attention benches share (a shuffled page table, calibrated-looking smoothing, a KV4 view).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_check.h"
#include "wkv_kernels/kv4_cache.h"

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

// A page table, on the host and uploaded: a fixed shuffle of 0 … n_pages − 1 (pages scattered as in a
// long-running session's pool). The caller owns `dev` (cudaFree).
struct PageTable {
  std::vector<int32_t> host;
  int32_t* dev = nullptr;
};

inline PageTable shuffled_page_table(int n_pages) {
  PageTable t;
  t.host.resize(n_pages);
  std::iota(t.host.begin(), t.host.end(), 0);
  std::shuffle(t.host.begin(), t.host.end(), std::mt19937(7));
  CUDA_CHECK(cudaMalloc(&t.dev, sizeof(int32_t) * n_pages));
  CUDA_CHECK(cudaMemcpy(t.dev, t.host.data(), sizeof(int32_t) * n_pages, cudaMemcpyHostToDevice));
  return t;
}

// KV smoothing that looks calibrated, [k_delta | k_scale | v_delta | v_scale] of kvdim floats each (deltas in
// [−0.5, 0.5), scales in [0.5, 2)). The caller owns it (cudaFree).
inline float* random_smoothing(size_t kvdim) {
  float* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, sizeof(float) * kvdim * 4));
  fill_uniform(d, kvdim, 11, -0.5f, 0.5f);
  fill_uniform(d + kvdim, kvdim, 12, 0.5f, 2.0f);
  fill_uniform(d + 2 * kvdim, kvdim, 13, -0.5f, 0.5f);
  fill_uniform(d + 3 * kvdim, kvdim, 14, 0.5f, 2.0f);
  return d;
}

// A KV4 layer view over the given pools and page table, smoothed by `sm` (random_smoothing's layout).
inline wkv::kernels::Kv4LayerCache kv4_view(uint8_t* k_pool, uint8_t* v_pool, const int32_t* table, int n_pages,
                                           int page_size, int n_kv_heads, int head_dim, int group, const float* sm) {
  wkv::kernels::Kv4LayerCache c;
  const size_t kvdim = size_t(n_kv_heads) * head_dim;
  c.k_pool = k_pool;
  c.v_pool = v_pool;
  c.page_table = table;
  c.n_pages = n_pages;
  c.page_size = page_size;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.group = group;
  c.k_delta = sm;
  c.k_scale = sm + kvdim;
  c.v_delta = sm + 2 * kvdim;
  c.v_scale = sm + 3 * kvdim;
  return c;
}

}  // namespace wkv::bench
