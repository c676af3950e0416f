// Benchmark of the FP16 KV cache kernels at LLaMA-2-7B shapes (H = H_kv = 32, D = 128, pages of 64, shuffled
// page table): decode attention per layer at contexts 4096 / 16384 / 32768 through the device-n_cache path
// (launch configuration fixed by n_cache_max = 32768, as in a captured CUDA graph) and the host path (µs,
// GB/s of K+V bytes read, % of the H200's ~4.3 TB/s), and the append (one token via kv16_append_at; a
// 512-token chunk).
// First validates append (bit-exact vs float_to_fp16 on re-appended rows) and decode attention (device path
// vs a double reference over the FP16 cache) at 4096; exits 1 on a mismatch.
// Timing: CUDA events, median of 50 runs after 5 warm-ups; each run uses the next of several layer caches so
// the working set exceeds the 50 MB L2.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "bench_util.cuh"
#include "cuda_check.h"
#include "half.h"
#include "wkv_kernels/kv16_append.h"
#include "wkv_kernels/kv16_decode_attention.h"

namespace wk = wkv::kernels;

namespace {

constexpr int kH = 32, kHkv = 32, kD = 128, kP = 64;
constexpr double kPeakGBs = 4300.0;

void fill(float* x, size_t n, uint32_t seed, float lo, float hi) { wkv::bench::fill_uniform(x, n, seed, lo, hi); }

using wkv::bench::median_us;

}  // namespace

int main() {
  try {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (%d SMs, L2 %.0f MB)\n", prop.name, prop.multiProcessorCount,
                prop.l2CacheSize / 1e6);
    const int max_ctx = 32768;
    const int n_pages = (max_ctx + 64 + kP - 1) / kP;
    const size_t pool_elems = size_t(n_pages) * kHkv * kP * kD;
    const size_t bytes_4k = size_t(4096) * kHkv * kD * 2 * 2;
    const int n_layers = int(std::max<size_t>(2, (3 * size_t(prop.l2CacheSize) + bytes_4k - 1) / bytes_4k));

    const wkv::bench::PageTable pages = wkv::bench::shuffled_page_table(n_pages);
    const std::vector<int32_t>& table = pages.host;
    int32_t* d_table = pages.dev;

    const size_t kvdim = size_t(kHkv) * kD;
    const int fill_chunk = 4096;
    float *d_k = nullptr, *d_v = nullptr;
    CUDA_CHECK(cudaMalloc(&d_k, sizeof(float) * kvdim * fill_chunk));
    CUDA_CHECK(cudaMalloc(&d_v, sizeof(float) * kvdim * fill_chunk));
    std::vector<wk::Kv16LayerCache> layers(n_layers);
    std::vector<uint16_t*> pools;
    for (int l = 0; l < n_layers; ++l) {
      auto& c = layers[l];
      CUDA_CHECK(cudaMalloc(&c.k_pool, pool_elems * sizeof(uint16_t)));
      CUDA_CHECK(cudaMalloc(&c.v_pool, pool_elems * sizeof(uint16_t)));
      pools.push_back(c.k_pool);
      pools.push_back(c.v_pool);
      c.page_table = d_table;
      c.n_pages = n_pages;
      c.page_size = kP;
      c.n_kv_heads = kHkv;
      c.head_dim = kD;
      for (int p0 = 0; p0 < max_ctx + 1; p0 += fill_chunk) {
        const int T = std::min(fill_chunk, max_ctx + 1 - p0);
        fill(d_k, kvdim * T, 1000 + l * 97 + p0, -2.0f, 2.0f);
        fill(d_v, kvdim * T, 5000 + l * 97 + p0, -1.0f, 1.0f);
        wk::kv16_append(c, d_k, d_v, T, p0);
      }
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    std::printf("layers rotated: %d, FP16 K+V pools %.1f MB per layer\n", n_layers,
                2.0 * pool_elems * 2 / 1e6);

    // ---- validation at 4096 on layer 0 --------------------------------------------------------------
    const int vctx = 4096;
    auto off = [&](int j, int h) { return ((size_t(table[j / kP]) * kHkv + h) * kP + j % kP) * kD; };
    std::vector<uint16_t> hk(pool_elems), hv(pool_elems);
    {  // append: re-append known rows at positions 4096 … 4159 and compare bits on the host.
      const int T = 64;
      std::vector<float> xk(kvdim * T), xv(kvdim * T);
      std::mt19937 rng(3);
      std::uniform_real_distribution<float> u(-2.0f, 2.0f);
      for (auto& x : xk) x = u(rng);
      for (auto& x : xv) x = u(rng);
      CUDA_CHECK(cudaMemcpy(d_k, xk.data(), sizeof(float) * xk.size(), cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(d_v, xv.data(), sizeof(float) * xv.size(), cudaMemcpyHostToDevice));
      wk::kv16_append(layers[0], d_k, d_v, T, vctx);
      CUDA_CHECK(cudaMemcpy(hk.data(), layers[0].k_pool, pool_elems * 2, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(hv.data(), layers[0].v_pool, pool_elems * 2, cudaMemcpyDeviceToHost));
      size_t mismatches = 0;
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < kHkv; ++h)
          for (int d = 0; d < kD; ++d) {
            const size_t i = t * kvdim + h * kD + d;
            mismatches += hk[off(vctx + t, h) + d] != wkv::float_to_fp16(xk[i]);
            mismatches += hv[off(vctx + t, h) + d] != wkv::float_to_fp16(xv[i]);
          }
      std::printf("validate append: %zu of %zu values differ from float_to_fp16\n", mismatches,
                  2 * T * kvdim);
      if (mismatches) return 1;
    }
    float *d_q = nullptr, *d_out = nullptr;
    int32_t* d_n = nullptr;
    CUDA_CHECK(cudaMalloc(&d_q, sizeof(float) * kH * kD));
    CUDA_CHECK(cudaMalloc(&d_out, sizeof(float) * kH * kD));
    CUDA_CHECK(cudaMalloc(&d_n, sizeof(int32_t) * 4));
    fill(d_q, size_t(kH) * kD, 21, -1.0f, 1.0f);
    const int ctxs[] = {4096, 16384, 32768};
    for (int i = 0; i < 3; ++i)
      CUDA_CHECK(cudaMemcpy(d_n + i, &ctxs[i], sizeof(int32_t), cudaMemcpyHostToDevice));
    const size_t ws_bytes = wk::kv16_decode_workspace_bytes(kH, kD, max_ctx);
    void* d_ws = nullptr;
    CUDA_CHECK(cudaMalloc(&d_ws, ws_bytes));
    CUDA_CHECK(cudaMemset(d_ws, 0, ws_bytes));  // arrival counters start at 0 (kv16_decode_attention.h)
    auto args_dev = [&](int i) {  // device n_cache = ctxs[i], fixed n_cache_max
      wk::Kv16DecodeArgs a;
      a.q = d_q;
      a.out = d_out;
      a.n_heads = kH;
      a.n_cache_dev = d_n + i;
      a.n_cache_max = max_ctx;
      return a;
    };
    auto args_host = [&](int n) {
      wk::Kv16DecodeArgs a;
      a.q = d_q;
      a.out = d_out;
      a.n_heads = kH;
      a.n_cache = n;
      return a;
    };
    {
      CUDA_CHECK(cudaMemset(d_out, 0xFF, sizeof(float) * kH * kD));
      wk::kv16_decode_attention(layers[0], args_dev(0), d_ws, ws_bytes);
      std::vector<float> got(kH * kD), q(kH * kD);
      CUDA_CHECK(cudaMemcpy(got.data(), d_out, sizeof(float) * got.size(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(q.data(), d_q, sizeof(float) * q.size(), cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      for (int h = 0; h < kH; ++h) {
        std::vector<double> s(vctx), o(kD, 0.0);
        double m = -INFINITY;
        for (int j = 0; j < vctx; ++j) {
          double dot = 0;
          for (int d = 0; d < kD; ++d) dot += double(q[h * kD + d]) * wkv::fp16_to_float(hk[off(j, h) + d]);
          s[j] = dot / std::sqrt(double(kD));
          m = std::max(m, s[j]);
        }
        double l = 0;
        for (auto& x : s) l += (x = std::exp(x - m));
        for (int j = 0; j < vctx; ++j)
          for (int d = 0; d < kD; ++d) o[d] += s[j] / l * wkv::fp16_to_float(hv[off(j, h) + d]);
        for (int d = 0; d < kD; ++d) {
          num += (got[h * kD + d] - o[d]) * (got[h * kD + d] - o[d]);
          den += o[d] * o[d];
        }
      }
      const double rel = std::sqrt(num / den);
      std::printf("validate decode attention (ctx %d, device n_cache): rel L2 %.3g (budget 1e-5)\n", vctx,
                  rel);
      if (!(rel <= 1e-5)) return 1;
    }

    // ---- timing --------------------------------------------------------------------------------------
    std::printf("\n%-34s %10s %10s %8s\n", "decode attention / layer", "us", "GB/s", "of peak");
    for (int i = 0; i < 3; ++i) {
      const double bytes = double(ctxs[i]) * kHkv * kD * 2 * 2;
      const double us_dev = median_us(
          50, [&](int r) { wk::kv16_decode_attention(layers[r % n_layers], args_dev(i), d_ws, ws_bytes); });
      const double us_host = median_us(50, [&](int r) {
        wk::kv16_decode_attention(layers[r % n_layers], args_host(ctxs[i]), d_ws, ws_bytes);
      });
      for (int path = 0; path < 2; ++path) {
        const double us = path ? us_host : us_dev;
        const double gbs = bytes / (us * 1e-6) / 1e9;
        std::printf("ctx %-6d %-23s %10.2f %10.1f %7.1f%%\n", ctxs[i],
                    path ? "host n_cache" : "device n_cache (max 32K)", us, gbs, 100.0 * gbs / kPeakGBs);
      }
    }
    std::printf("\n%-34s %10s\n", "KV append / layer", "us");
    {
      const double us =
          median_us(50, [&](int r) { wk::kv16_append_at(layers[r % n_layers], d_k, d_v, d_n + 2); });
      std::printf("%-34s %10.2f\n", "T = 1 (kv16_append_at)", us);
      const double us512 =
          median_us(50, [&](int r) { wk::kv16_append(layers[r % n_layers], d_k, d_v, 512, 8192); });
      std::printf("%-34s %10.2f\n", "T = 512 (kv16_append)", us512);
    }
    std::printf("(K+V bytes per token per layer: %zu; ceiling at 4.3 TB/s: ctx 32768 → %.1f us)\n",
                size_t(kHkv) * kD * 2 * 2, 32768.0 * kHkv * kD * 4 / (kPeakGBs * 1e9) * 1e6);
    for (auto* p : pools) CUDA_CHECK(cudaFree(p));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
