// Benchmark of the prefill attention at the LLaMA-2-7B shape (H = H_kv = 32, D = 128, KV4 G = 128, pages of
// 64, smoothed cache): the FP32 CUDA-core kernel (attention_prefill_fp32) against the tensor-core kernel
// (attention_prefill with poq_block 0 and T) and the FP16-cache kernel (attention_prefill_kv16), for a
// 2048-token prompt (T = 2048, pos0 = 0) and a 512-token chunk behind 1536 cached tokens.
// Validation first (exits 1 on a mismatch): tensor cores vs the FP32 kernel on the same KV4 cache (relative L2
// ≤ 3e-3), and the FP16-cache kernel vs a double-precision CPU reference on sampled query rows.
// Timing: CUDA events, median of 30 runs after 3 warm-ups. Effective TFLOP/s count the causal work,
// 4·D·H·(T·pos0 + T²/2) FLOPs (QKᵀ and PV, 2 FLOPs per MAC); H200 dense FP16 tensor peak ~990 TFLOP/s. The
// working set of one run (Q 32 MB + out 32 MB + k_full / v_full + cache at T = 2048) exceeds the 50 MB L2,
// so no rotation is needed; the kernels are compute-bound anyway.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "bench_util.cuh"
#include "cuda_check.h"
#include "half.h"
#include "wkv_kernels/attention_prefill.h"
#include "wkv_kernels/kv4_append.h"

namespace wk = wkv::kernels;

namespace {

constexpr int kH = 32, kHkv = 32, kD = 128, kG = 128, kP = 64, kMaxTokens = 2048;

void fill(float* x, size_t n, uint32_t seed, float lo, float hi) { wkv::bench::fill_uniform(x, n, seed, lo, hi); }

// x [n_tokens][H_kv·D] FP32 → the FP16 cache (kv16_cache.h layout), round-to-nearest-even.
__global__ void to_kv16(const float* x, uint16_t* pool, const int32_t* table, int n_tokens) {
  const size_t n = size_t(n_tokens) * kHkv * kD;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const int d = int(i % kD), h = int(i / kD % kHkv), j = int(i / (size_t(kD) * kHkv));
    pool[wk::Kv16LayerCache::offset(table[j / kP], h, j % kP, kHkv, kP, kD) + d] = __half_as_ushort(__float2half_rn(x[i]));
  }
}

template <typename F>
double median_ms(int runs, F&& launch) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) launch();
  std::vector<float> t;
  for (int i = 0; i < runs; ++i) {
    CUDA_CHECK(cudaEventRecord(a));
    launch();
    CUDA_CHECK(cudaEventRecord(b));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<float> download(const float* d, size_t n) {
  std::vector<float> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, sizeof(float) * n, cudaMemcpyDeviceToHost));
  return h;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace

int main() {
  try {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (%d SMs, L2 %.0f MB)\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
    const size_t kvdim = size_t(kHkv) * kD, qdim = size_t(kH) * kD;
    const int n_pages = kMaxTokens / kP;
    int32_t* d_table = wkv::bench::shuffled_page_table(n_pages).dev;

    float *d_q, *d_k, *d_v, *d_out, *d_ref;
    CUDA_CHECK(cudaMalloc(&d_q, sizeof(float) * qdim * kMaxTokens));
    CUDA_CHECK(cudaMalloc(&d_k, sizeof(float) * kvdim * kMaxTokens));
    CUDA_CHECK(cudaMalloc(&d_v, sizeof(float) * kvdim * kMaxTokens));
    CUDA_CHECK(cudaMalloc(&d_out, sizeof(float) * qdim * kMaxTokens));
    CUDA_CHECK(cudaMalloc(&d_ref, sizeof(float) * qdim * kMaxTokens));
    fill(d_q, qdim * kMaxTokens, 1, -1.0f, 1.0f);
    fill(d_k, kvdim * kMaxTokens, 2, -2.0f, 2.0f);
    fill(d_v, kvdim * kMaxTokens, 3, -1.0f, 1.0f);
    float* d_sm = wkv::bench::random_smoothing(kvdim);

    // KV4 cache of all 2048 tokens (the chunk is appended before attention, as the engine does).
    const size_t pool_bytes = size_t(n_pages) * kP * kHkv * wk::kv4_head_bytes(kD, kG);
    uint8_t *k4 = nullptr, *v4 = nullptr;
    CUDA_CHECK(cudaMalloc(&k4, pool_bytes));
    CUDA_CHECK(cudaMalloc(&v4, pool_bytes));
    const wk::Kv4LayerCache c4 = wkv::bench::kv4_view(k4, v4, d_table, n_pages, kP, kHkv, kD, kG, d_sm);
    wk::kv4_append(c4, d_k, d_v, kMaxTokens, 0);
    // FP16 cache of the same rows.
    wk::Kv16LayerCache c16;
    CUDA_CHECK(cudaMalloc(&c16.k_pool, sizeof(uint16_t) * kvdim * kMaxTokens));
    CUDA_CHECK(cudaMalloc(&c16.v_pool, sizeof(uint16_t) * kvdim * kMaxTokens));
    c16.page_table = d_table;
    c16.n_pages = n_pages;
    c16.page_size = kP;
    c16.n_kv_heads = kHkv;
    c16.head_dim = kD;
    to_kv16<<<1024, 256>>>(d_k, c16.k_pool, d_table, kMaxTokens);
    WKV_CHECK_LAUNCH();
    to_kv16<<<1024, 256>>>(d_v, c16.v_pool, d_table, kMaxTokens);
    WKV_CHECK_LAUNCH();
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto h_q = download(d_q, qdim * kMaxTokens), h_k = download(d_k, kvdim * kMaxTokens),
               h_v = download(d_v, kvdim * kMaxTokens);

    bool ok = true;
    const int cases[2][2] = {{2048, 0}, {512, 1536}};  // {T, pos0}
    for (const auto& cs : cases) {
      const int T = cs[0], pos0 = cs[1];
      wk::PrefillAttentionArgs a;
      a.q = d_q;
      a.k_full = d_k + size_t(pos0) * kvdim;
      a.v_full = d_v + size_t(pos0) * kvdim;
      a.n_heads = kH;
      a.T = T;
      a.pos0 = pos0;
      const size_t n_out = size_t(T) * qdim;
      std::printf("\nT = %d, pos0 = %d\n", T, pos0);

      // ---- validation ----
      for (int B : {0, T}) {
        a.poq_block = B;
        a.out = d_ref;
        wk::attention_prefill_fp32(c4, a);
        a.out = d_out;
        CUDA_CHECK(cudaMemset(d_out, 0xFF, sizeof(float) * n_out));
        wk::attention_prefill(c4, a);
        CUDA_CHECK(cudaDeviceSynchronize());
        const double rel = rel_l2(download(d_out, n_out), download(d_ref, n_out));
        std::printf("validate KV4 tensor cores vs FP32 kernel, poq_block %d: rel L2 %.2e (budget 3e-3)\n", B, rel);
        ok = ok && rel <= 3e-3;  // NaN (an unwritten output) fails too
      }
      {
        a.out = d_out;
        CUDA_CHECK(cudaMemset(d_out, 0xFF, sizeof(float) * n_out));
        wk::attention_prefill_kv16(c16, a);
        CUDA_CHECK(cudaDeviceSynchronize());
        const auto got = download(d_out, n_out);
        std::vector<float> want, have;
        for (int t : {0, T / 2 + 1, T - 1})
          for (int h = 0; h < kH; ++h) {
            const float* q = h_q.data() + size_t(t) * qdim + size_t(h) * kD;
            const int n_keys = pos0 + t + 1;
            std::vector<double> s(n_keys);
            double m = -INFINITY;
            auto key = [&](const std::vector<float>& x, int j, int d) {  // cache rows are FP16
              const float v = x[size_t(j) * kvdim + size_t(h) * kD + d];
              return j < pos0 ? double(wkv::fp16_to_float(wkv::float_to_fp16(v))) : double(v);
            };
            for (int j = 0; j < n_keys; ++j) {
              double dot = 0;
              for (int d = 0; d < kD; ++d) dot += double(q[d]) * key(h_k, j, d);
              s[j] = dot / std::sqrt(double(kD));
              m = std::max(m, s[j]);
            }
            double l = 0;
            for (auto& x : s) l += (x = std::exp(x - m));
            for (int d = 0; d < kD; ++d) {
              double o = 0;
              for (int j = 0; j < n_keys; ++j) o += s[j] * key(h_v, j, d);
              want.push_back(float(o / l));
              have.push_back(got[size_t(t) * qdim + size_t(h) * kD + d]);
            }
          }
        const double rel = rel_l2(have, want);
        std::printf("validate FP16 cache vs CPU double (3 query rows × %d heads): rel L2 %.2e (budget 3e-3)\n", kH, rel);
        ok = ok && rel <= 3e-3;
      }
      if (!ok) {
        std::printf("VALIDATION FAILED\n");
        return 1;
      }

      // ---- timing ----
      const double flops = 4.0 * kD * kH * (double(T) * pos0 + 0.5 * double(T) * T);
      a.out = d_out;
      auto report = [&](const char* name, double ms) {
        std::printf("  %-34s %8.3f ms  %7.1f TFLOP/s\n", name, ms, flops / (ms * 1e-3) / 1e12);
      };
      a.poq_block = 0;
      report("FP32 kernel, KV4, poq_block 0", median_ms(30, [&] { wk::attention_prefill_fp32(c4, a); }));
      a.poq_block = T;
      report("FP32 kernel, KV4, poq_block T", median_ms(30, [&] { wk::attention_prefill_fp32(c4, a); }));
      a.poq_block = 0;
      report("tensor cores, KV4, poq_block 0", median_ms(30, [&] { wk::attention_prefill(c4, a); }));
      a.poq_block = T;
      report("tensor cores, KV4, poq_block T", median_ms(30, [&] { wk::attention_prefill(c4, a); }));
      report("tensor cores, FP16 cache", median_ms(30, [&] { wk::attention_prefill_kv16(c16, a); }));
    }
    std::printf("\n(%d layers of a 7B model: multiply a per-layer time by %d for the prompt's attention.)\n", 32, 32);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
