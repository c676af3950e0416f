// Benchmark of the KV4 cache kernels at LLaMA-2-7B shapes (H = H_kv = 32, D = 128, G = 128, pages of 64):
// decode attention per layer at contexts 4096 / 16384 / 32768 (µs, effective GB/s of KV4 bytes read against
// the H200's ~4.3 TB/s) and the KV append (one decode token, a 512-token chunk).
// First validates append (bit-exact on sampled rows vs quantize_kv4_ref) and decode attention (vs a double
// reference on the reference-dequantized cache) at 4096; exits 1 on a mismatch.
// Decode attention is timed the way the engine runs it: through the device-n_cache path (n_cache_dev,
// n_cache_max = 32768) captured ONCE in a CUDA graph of one launch per layer over several layer caches
// (working set ≥ 3× the 50 MB L2), replayed at every context: median over ≥ 50 replays of the replay time
// divided by the layers. Shapes: H = H_kv = 32 and GQA H = 32, H_kv = 8 (D = 128, G = 128, POQ).
// The host-n_cache path is also timed per call (stream launches, includes launch overhead) for comparison.
// Append: CUDA events, median of 50 runs after 5 warm-ups.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "bench_util.cuh"
#include "cuda_check.h"
#include "quant_formats.h"
#include "wkv_kernels/kv4_append.h"
#include "wkv_kernels/kv4_decode_attention.h"

namespace wk = wkv::kernels;

namespace {

constexpr int kH = 32, kHkv = 32, kD = 128, kG = 128, kP = 64;
constexpr double kPeakGBs = 4300.0;

void fill(float* x, size_t n, uint32_t seed, float lo, float hi) { wkv::bench::fill_uniform(x, n, seed, lo, hi); }

struct Layer {
  uint8_t* k = nullptr;
  uint8_t* v = nullptr;
  wk::Kv4LayerCache view{};
};

using wkv::bench::median_us;

}  // namespace

int main() {
  try {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (%d SMs, L2 %.0f MB)\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
    const size_t hb = wk::kv4_head_bytes(kD, kG);
    const int max_ctx = 32768;
    const int n_pages = (max_ctx + 1 + kP - 1) / kP;
    const size_t pool_bytes = size_t(n_pages) * kP * kHkv * hb;
    // Layers to rotate through: ≥ 3× L2 of KV4 bytes at the smallest context.
    const size_t bytes_4k = size_t(4096) * kHkv * hb * 2;
    const int n_layers = int(std::max<size_t>(2, (3 * size_t(prop.l2CacheSize) + bytes_4k - 1) / bytes_4k));

    // Shared shuffled page table (the layers differ in pools).
    const wkv::bench::PageTable pages = wkv::bench::shuffled_page_table(n_pages);
    const std::vector<int32_t>& table = pages.host;
    int32_t* d_table = pages.dev;
    // Smoothing (random, like a calibrated model).
    const size_t kvdim = size_t(kHkv) * kD;
    float* d_sm = wkv::bench::random_smoothing(kvdim);

    // Fill every layer's cache to max_ctx + 1 tokens through the append kernel, in chunks.
    const int fill_chunk = 4096;
    float *d_k = nullptr, *d_v = nullptr;
    CUDA_CHECK(cudaMalloc(&d_k, sizeof(float) * kvdim * fill_chunk));
    CUDA_CHECK(cudaMalloc(&d_v, sizeof(float) * kvdim * fill_chunk));
    std::vector<Layer> layers(n_layers);
    for (int l = 0; l < n_layers; ++l) {
      CUDA_CHECK(cudaMalloc(&layers[l].k, pool_bytes));
      CUDA_CHECK(cudaMalloc(&layers[l].v, pool_bytes));
      auto& c = layers[l].view;
      c = wkv::bench::kv4_view(layers[l].k, layers[l].v, d_table, n_pages, kP, kHkv, kD, kG, d_sm);
      for (int p0 = 0; p0 < max_ctx + 1; p0 += fill_chunk) {
        const int T = std::min(fill_chunk, max_ctx + 1 - p0);
        fill(d_k, kvdim * T, 1000 + l * 97 + p0, -2.0f, 2.0f);
        fill(d_v, kvdim * T, 5000 + l * 97 + p0, -1.0f, 1.0f);
        wk::kv4_append(c, d_k, d_v, T, p0);
      }
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    std::printf("layers rotated: %d, KV4 pools %.1f MB per layer\n", n_layers, 2.0 * pool_bytes / 1e6);

    // ---- validation at 4096 on layer 0 --------------------------------------------------------------
    const int vctx = 4096;
    std::vector<float> h_sm(kvdim * 4);
    CUDA_CHECK(cudaMemcpy(h_sm.data(), d_sm, sizeof(float) * kvdim * 4, cudaMemcpyDeviceToHost));
    std::vector<uint8_t> hk(pool_bytes), hv(pool_bytes);
    CUDA_CHECK(cudaMemcpy(hk.data(), layers[0].k, pool_bytes, cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(hv.data(), layers[0].v, pool_bytes, cudaMemcpyDeviceToHost));
    auto off = [&](int j, int h) { return wkv::kernels::kv4_row_index(table[j / kP], j % kP, h, kHkv, kP) * hb; };
    {  // append: re-append known rows at positions 4096 … 4096+63 of layer 0 and compare bits on the host.
      const int T = 64;
      std::vector<float> xk(kvdim * T), xv(kvdim * T);
      std::mt19937 rng(3);
      std::uniform_real_distribution<float> u(-2.0f, 2.0f);
      for (auto& x : xk) x = u(rng);
      for (auto& x : xv) x = u(rng);
      CUDA_CHECK(cudaMemcpy(d_k, xk.data(), sizeof(float) * xk.size(), cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(d_v, xv.data(), sizeof(float) * xv.size(), cudaMemcpyHostToDevice));
      wk::kv4_append(layers[0].view, d_k, d_v, T, vctx);
      CUDA_CHECK(cudaMemcpy(hk.data(), layers[0].k, pool_bytes, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(hv.data(), layers[0].v, pool_bytes, cudaMemcpyDeviceToHost));
      std::vector<uint8_t> want(hb);
      size_t mismatches = 0;
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < kHkv; ++h)
          for (int which = 0; which < 2; ++which) {
            const float* x = (which ? xv.data() : xk.data()) + t * kvdim + h * kD;
            const float* dl = h_sm.data() + (which ? 2 : 0) * kvdim + h * kD;
            wkv::quantize_kv4_ref(x, kD, kG, dl, dl + kvdim, want.data(),
                                  reinterpret_cast<wkv::KV4GroupHeader*>(want.data() + kD / 2));
            const uint8_t* got = (which ? hv.data() : hk.data()) + off(vctx + t, h);
            mismatches += std::memcmp(got, want.data(), hb) != 0;
          }
      std::printf("validate append: %zu of %d rows differ from quantize_kv4_ref\n", mismatches, T * kHkv * 2);
      if (mismatches) return 1;
    }
    float *d_q = nullptr, *d_kc = nullptr, *d_vc = nullptr, *d_out = nullptr;
    CUDA_CHECK(cudaMalloc(&d_q, sizeof(float) * kH * kD));
    CUDA_CHECK(cudaMalloc(&d_kc, sizeof(float) * kvdim));
    CUDA_CHECK(cudaMalloc(&d_vc, sizeof(float) * kvdim));
    CUDA_CHECK(cudaMalloc(&d_out, sizeof(float) * kH * kD));
    fill(d_q, size_t(kH) * kD, 21, -1.0f, 1.0f);
    fill(d_kc, kvdim, 22, -2.0f, 2.0f);
    fill(d_vc, kvdim, 23, -1.0f, 1.0f);
    const size_t ws_bytes = wk::kv4_decode_workspace_bytes(kH, kD, max_ctx + 1);
    void* d_ws = nullptr;
    CUDA_CHECK(cudaMalloc(&d_ws, ws_bytes));
    CUDA_CHECK(cudaMemset(d_ws, 0, ws_bytes));  // arrival counters start at 0 (kv4_decode_attention.h)
    auto args_for = [&](int n_cache) {
      wk::Kv4DecodeArgs a;
      a.q = d_q;
      a.k_cur = d_kc;
      a.v_cur = d_vc;
      a.out = d_out;
      a.n_heads = kH;
      a.n_cache = n_cache;
      a.poq = true;
      return a;
    };
    int32_t* d_nval = nullptr;
    CUDA_CHECK(cudaMalloc(&d_nval, sizeof(int32_t)));
    {  // validated through the device-n_cache path (grid for max_ctx, n_cache = vctx on the device)
      const int32_t nv = vctx;
      CUDA_CHECK(cudaMemcpy(d_nval, &nv, sizeof(nv), cudaMemcpyHostToDevice));
      wk::Kv4DecodeArgs va = args_for(0);
      va.n_cache_dev = d_nval;
      va.n_cache_max = max_ctx;
      wk::kv4_decode_attention(layers[0].view, va, d_ws, ws_bytes);
      std::vector<float> got(kH * kD), q(kH * kD), kc(kvdim), vc(kvdim);
      CUDA_CHECK(cudaMemcpy(got.data(), d_out, sizeof(float) * got.size(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(q.data(), d_q, sizeof(float) * q.size(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(kc.data(), d_kc, sizeof(float) * kvdim, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(vc.data(), d_vc, sizeof(float) * kvdim, cudaMemcpyDeviceToHost));
      double num = 0, den = 0;
      std::vector<float> kx(kD), vx(kD);
      for (int h = 0; h < kH; ++h) {
        const float* qh = q.data() + h * kD;
        std::vector<double> s(vctx + 1), o(kD, 0.0);
        std::vector<std::vector<float>> vals(vctx + 1, std::vector<float>(kD));
        double m = -INFINITY;
        for (int j = 0; j <= vctx; ++j) {
          if (j < vctx) {
            const uint8_t* kr = hk.data() + off(j, h);
            const uint8_t* vr = hv.data() + off(j, h);
            wkv::dequantize_kv4_ref(kr, reinterpret_cast<const wkv::KV4GroupHeader*>(kr + kD / 2), kD, kG,
                                    h_sm.data() + h * kD, h_sm.data() + kvdim + h * kD, kx.data());
            wkv::dequantize_kv4_ref(vr, reinterpret_cast<const wkv::KV4GroupHeader*>(vr + kD / 2), kD, kG,
                                    h_sm.data() + 2 * kvdim + h * kD, h_sm.data() + 3 * kvdim + h * kD,
                                    vals[j].data());
          } else {
            std::copy(kc.begin() + h * kD, kc.begin() + (h + 1) * kD, kx.begin());
            std::copy(vc.begin() + h * kD, vc.begin() + (h + 1) * kD, vals[j].begin());
          }
          double d = 0;
          for (int c = 0; c < kD; ++c) d += double(qh[c]) * kx[c];
          s[j] = d / std::sqrt(double(kD));
          m = std::max(m, s[j]);
        }
        double l = 0;
        for (auto& x : s) l += (x = std::exp(x - m));
        for (int j = 0; j <= vctx; ++j)
          for (int c = 0; c < kD; ++c) o[c] += s[j] / l * vals[j][c];
        for (int c = 0; c < kD; ++c) {
          num += (got[h * kD + c] - o[c]) * (got[h * kD + c] - o[c]);
          den += o[c] * o[c];
        }
      }
      const double rel = std::sqrt(num / den);
      std::printf("validate decode attention (ctx %d, POQ, device n_cache): rel L2 %.3g (budget 2.8e-5)\n", vctx,
                  rel);
      if (!(rel <= 2.8e-5)) return 1;  // the tests' budget at 4096 keys: 1e-5·√(4096/512)
    }

    // ---- timing ----------------------------------------------------------------------------------------
    int32_t* d_ncache = nullptr;
    CUDA_CHECK(cudaMalloc(&d_ncache, sizeof(int32_t)));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    // Graph of one decode-attention launch per layer (device n_cache, grid for max_ctx); µs per layer.
    auto time_graph = [&](std::vector<Layer>& ls, int H, int ctx, int keys_per_split = 0) {
      const int32_t nv = ctx;
      CUDA_CHECK(cudaMemcpy(d_ncache, &nv, sizeof(nv), cudaMemcpyHostToDevice));
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      for (auto& l : ls) {
        wk::Kv4DecodeArgs a = args_for(0);
        a.n_heads = H;
        a.n_cache_dev = d_ncache;
        a.n_cache_max = max_ctx;
        a.keys_per_split = keys_per_split;
        wk::kv4_decode_attention(l.view, a, d_ws, ws_bytes, stream);
      }
      CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      cudaEvent_t e0, e1;
      CUDA_CHECK(cudaEventCreate(&e0));
      CUDA_CHECK(cudaEventCreate(&e1));
      for (int i = 0; i < 5; ++i) CUDA_CHECK(cudaGraphLaunch(exec, stream));
      std::vector<float> t;
      for (int i = 0; i < 60; ++i) {
        CUDA_CHECK(cudaEventRecord(e0, stream));
        CUDA_CHECK(cudaGraphLaunch(exec, stream));
        CUDA_CHECK(cudaEventRecord(e1, stream));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms * 1000.0f / float(ls.size()));
      }
      CUDA_CHECK(cudaEventDestroy(e0));
      CUDA_CHECK(cudaEventDestroy(e1));
      CUDA_CHECK(cudaGraphExecDestroy(exec));
      CUDA_CHECK(cudaGraphDestroy(graph));
      std::sort(t.begin(), t.end());
      return double(t[t.size() / 2]);
    };
    auto report = [&](const char* what, int hkv, int ctx, double us) {
      const double bytes = double(ctx) * hkv * hb * 2;
      const double gbs = bytes / (us * 1e-6) / 1e9;
      std::printf("%-18s ctx %-8d %10.2f %10.1f %7.1f%%\n", what, ctx, us, gbs, 100.0 * gbs / kPeakGBs);
    };
    std::printf("\n%-31s %10s %10s %8s\n", "decode attention / layer", "us", "GB/s", "of peak");
    for (int ctx : {2048, 4096, 16384, 32768}) report("graph H32/KV32", kHkv, ctx, time_graph(layers, kH, ctx));
    // WKV_BENCH_SPLITS="64,128,…": the same graphs with fixed keys per split instead of the automatic plan.
    if (const char* e = std::getenv("WKV_BENCH_SPLITS")) {
      for (const char* p = e; *p;) {
        const int kps = std::atoi(p);
        char label[32];
        std::snprintf(label, sizeof label, "split %d", kps);
        for (int ctx : {4096, 16384, 32768}) report(label, kHkv, ctx, time_graph(layers, kH, ctx, kps));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
      }
    }
    for (int ctx : {4096, 16384, 32768}) {
      const double us = median_us(50, [&](int i) {
        wk::kv4_decode_attention(layers[i % n_layers].view, args_for(ctx), d_ws, ws_bytes);
      });
      report("stream H32/KV32", kHkv, ctx, us);
    }
    {  // GQA: H = 32 query heads over H_kv = 8 (each KV byte serves 4 heads).
      const int hkv8 = 8;
      const size_t pool8 = size_t(n_pages) * kP * hkv8 * hb;
      const size_t bytes8_4k = size_t(4096) * hkv8 * hb * 2;
      const int n8 = int(std::max<size_t>(2, (3 * size_t(prop.l2CacheSize) + bytes8_4k - 1) / bytes8_4k));
      std::vector<Layer> gqa(n8);
      for (int l = 0; l < n8; ++l) {
        CUDA_CHECK(cudaMalloc(&gqa[l].k, pool8));
        CUDA_CHECK(cudaMalloc(&gqa[l].v, pool8));
        auto& c = gqa[l].view;
        c = layers[0].view;
        c.k_pool = gqa[l].k;
        c.v_pool = gqa[l].v;
        c.n_kv_heads = hkv8;
        for (int p0 = 0; p0 < max_ctx + 1; p0 += fill_chunk) {
          const int T = std::min(fill_chunk, max_ctx + 1 - p0);
          fill(d_k, size_t(hkv8) * kD * T, 7000 + l * 97 + p0, -2.0f, 2.0f);
          fill(d_v, size_t(hkv8) * kD * T, 9000 + l * 97 + p0, -1.0f, 1.0f);
          wk::kv4_append(c, d_k, d_v, T, p0);
        }
      }
      CUDA_CHECK(cudaDeviceSynchronize());
      for (int ctx : {4096, 16384, 32768}) report("graph H32/KV8", hkv8, ctx, time_graph(gqa, kH, ctx));
      for (auto& l : gqa) {
        CUDA_CHECK(cudaFree(l.k));
        CUDA_CHECK(cudaFree(l.v));
      }
    }
    std::printf("\n%-28s %10s\n", "KV append / layer", "us");
    for (int T : {1, 512}) {
      const double us = median_us(50, [&](int i) { wk::kv4_append(layers[i % n_layers].view, d_k, d_v, T, 8192); });
      std::printf("T = %-24d %10.2f\n", T, us);
    }
    std::printf("(KV4 bytes per token per layer: %zu; ceiling at 4.3 TB/s: ctx 32768 → %.1f us)\n", kHkv * hb * 2,
                32768.0 * kHkv * hb * 2 / (kPeakGBs * 1e9) * 1e6);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
