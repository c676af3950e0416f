// W4 GEMV benchmark on LLaMA-2-7B decode shapes (W4 g128), all fast-path variants (w4_gemv_variant.h):
// A = FP32 math, B = half2 math, C = tensor cores, D = bulk copies + tensor cores, E = lean tensor cores,
// F = packed layout + integer tensor cores (each weight copy also packed; sm_90 only, else F runs A). (The FP16 output head, 32000×4096, is gemv_f16's: not
// benchmarked here.)
//
// For each shape: quantize a random W, validate every variant at B = 1 and B = 8 against
// dequantize_w4_ref + an FP64 matvec (rel L2 budgets: A 1e-5, D 2e-5, B and C 2e-3; exit 1 on failure), then for
// B = 1, 2, 4, 8 and each variant time
//   stream  median over ≥ 50 samples; a sample launches once on each of `copies` distinct weight copies
//           (> 200 MB in total, 4× the 50 MB L2, so every launch streams from HBM) and divides by copies.
//           Includes whatever gap the host leaves between launches.
//   graph   a CUDA graph of 100 back-to-back launches (rotating through the copies), median over ≥ 50
//           graph launches, divided by 100: the kernel time without launch gaps.
// Bytes counted: qweight + scales + zeros + x + y. Printed: µs, GB/s, % of 4300 GB/s (H200 copy bandwidth).
// Finally the W4 linears of one 7B decode token (32 layers × (qkv + o + gate|up + down)) at B = 1.
//
// Usage: wkv_kernel_bench_w4_gemv [--quick]   (--quick: fewer samples, for smoke runs)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "quant_formats.h"
#include "w4_gemv_variant.h"
#include "wkv_kernels/w4_gemv_packed.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/w4_gemv.h"

namespace {

using wkv::kernels::detail::W4GemvVariant;

constexpr double kPeakGBs = 4300.0;          // H200 measured copy bandwidth (DESIGN.md)
constexpr size_t kRotateBytes = 200u << 20;  // total bytes of weight copies per shape (4× L2)
constexpr int kGraphLaunches = 100;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

template <typename T>
T* device_copy(const std::vector<T>& v) {
  T* p = nullptr;
  check(cudaMalloc(&p, v.size() * sizeof(T)), "cudaMalloc");
  check(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median time in µs of one call of `launch(copy, stream)`, each sample covering every copy once.
template <typename F>
double time_stream_us(cudaStream_t s, int copies, int samples, F&& launch) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int w = 0; w < 3; ++w)
    for (int c = 0; c < copies; ++c) launch(c, s);
  check(cudaStreamSynchronize(s), "warm-up");
  std::vector<double> t;
  for (int i = 0; i < samples; ++i) {
    check(cudaEventRecord(a, s), "record");
    for (int c = 0; c < copies; ++c) launch(c, s);
    check(cudaEventRecord(b, s), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(1000.0 * ms / copies);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(t);
}

// Median time in µs per launch of a graph of kGraphLaunches launches (copy i % copies for launch i).
template <typename F>
double time_graph_us(cudaStream_t s, int copies, int samples, F&& launch) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture");
  for (int i = 0; i < kGraphLaunches; ++i) launch(i % copies, s);
  check(cudaStreamEndCapture(s, &graph), "end capture");
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int w = 0; w < 3; ++w) check(cudaGraphLaunch(exec, s), "graph launch");
  check(cudaStreamSynchronize(s), "warm-up");
  std::vector<double> t;
  for (int i = 0; i < samples; ++i) {
    check(cudaEventRecord(a, s), "record");
    check(cudaGraphLaunch(exec, s), "graph launch");
    check(cudaEventRecord(b, s), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(1000.0 * ms / kGraphLaunches);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return median(t);
}

double rel_l2(const std::vector<float>& y, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += (y[i] - ref[i]) * (y[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

// WKV_BENCH_VARIANTS (e.g. "AF") limits the timed variants; unset: all.
bool variant_selected(W4GemvVariant v) {
  const char* e = std::getenv("WKV_BENCH_VARIANTS");
  return !e || !*e || std::strchr(e, wkv::kernels::detail::w4_gemv_variant_name(v)[0]) != nullptr;
}

struct Shape {
  const char* name;
  int rows, cols;
};

constexpr int kNumVariants = 6;
const W4GemvVariant kVariants[kNumVariants] = {W4GemvVariant::fp32, W4GemvVariant::half2, W4GemvVariant::tc,
                                               W4GemvVariant::bulk, W4GemvVariant::lean, W4GemvVariant::packed};

struct Result {
  double stream_us[kNumVariants] = {};  // B = 1, per variant
  double graph_us[kNumVariants] = {};
};

Result bench_w4(const Shape& s, int group, int samples, std::mt19937& rng, cudaStream_t stream) {
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> W((size_t)s.rows * s.cols);
  for (auto& v : W) v = nd(rng);
  const wkv::W4Matrix m = wkv::quantize_w4_ref(W.data(), s.rows, s.cols, group);
  const size_t wbytes = m.bytes();
  const int copies = (int)std::max<size_t>(2, kRotateBytes / wbytes + 1);
  std::vector<wkv::kernels::W4DeviceWeights> dev(copies);
  dev[0] = {s.rows, s.cols, group, device_copy(m.qweight), device_copy(m.scales), device_copy(m.zeros)};
  for (int c = 1; c < copies; ++c) {
    dev[c] = dev[0];
    uint32_t* q;
    uint16_t *sc, *z;
    check(cudaMalloc(&q, m.qweight.size() * 4), "cudaMalloc");
    check(cudaMalloc(&sc, m.scales.size() * 2), "cudaMalloc");
    check(cudaMalloc(&z, m.zeros.size() * 2), "cudaMalloc");
    check(cudaMemcpy(q, dev[0].qweight, m.qweight.size() * 4, cudaMemcpyDeviceToDevice), "copy");
    check(cudaMemcpy(sc, dev[0].scales, m.scales.size() * 2, cudaMemcpyDeviceToDevice), "copy");
    check(cudaMemcpy(z, dev[0].zeros, m.zeros.size() * 2, cudaMemcpyDeviceToDevice), "copy");
    dev[c].qweight = q, dev[c].scales = sc, dev[c].zeros = z;
  }
  const bool packed = wkv::kernels::w4_gemv_packed_supported(s.rows, s.cols, group);
  if (packed) {  // variant F: a packed copy of every weight copy
    for (auto& d : dev) {
      void* rec = nullptr;
      check(cudaMalloc(&rec, wkv::kernels::w4_packed_device_bytes(s.rows, s.cols)), "cudaMalloc");
      wkv::kernels::w4_pack(d, rec, stream);
      d.packed = rec;
    }
    check(cudaStreamSynchronize(stream), "pack");
  }
  std::normal_distribution<float> xd(0.0f, 1.0f);
  std::vector<float> x((size_t)8 * s.cols);
  for (auto& v : x) v = xd(rng);
  float* dx = device_copy(x);
  float* dy = nullptr;
  check(cudaMalloc(&dy, (size_t)8 * s.rows * sizeof(float)), "cudaMalloc");
  std::printf("%-10s %5d x %-5d g%-4d %.1f MB, copies %d, fast path %s\n", s.name, s.rows, s.cols, group,
              wbytes / 1e6, copies, wkv::kernels::w4_gemv_fast_path(dev[0], dx) ? "yes" : "NO");

  // Validation, B = 1 and B = 8, every variant.
  const std::vector<float> Wd = wkv::dequantize_w4_ref(m);
  std::vector<double> ref((size_t)8 * s.rows);
  for (int b = 0; b < 8; ++b)
    for (int r = 0; r < s.rows; ++r) {
      double acc = 0;
      const float* wr = Wd.data() + (size_t)r * s.cols;
      const float* xb = x.data() + (size_t)b * s.cols;
      for (int c = 0; c < s.cols; ++c) acc += (double)wr[c] * xb[c];
      ref[(size_t)b * s.rows + r] = acc;
    }
  for (W4GemvVariant v : kVariants) {
    const double budget = v == W4GemvVariant::fp32                                     ? 1e-5
                          : v == W4GemvVariant::bulk || v == W4GemvVariant::lean ? 2e-5
                          : v == W4GemvVariant::packed                           ? 2e-6
                                                                                 : 2e-3;
    for (int B : {1, 8}) {
      check(cudaMemset(dy, 0xFF, (size_t)8 * s.rows * sizeof(float)), "poison");
      wkv::kernels::detail::w4_gemv_with_variant(dev[0], dx, B, dy, v, stream);
      std::vector<float> y((size_t)B * s.rows);
      check(cudaStreamSynchronize(stream), "validate");
      check(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost), "download");
      const double err = rel_l2(y, std::vector<double>(ref.begin(), ref.begin() + (long)y.size()));
      std::printf("    validate %s B=%d rel L2 %.2e (budget %.0e) %s\n", wkv::kernels::detail::w4_gemv_variant_name(v),
                  B, err, budget, err <= budget ? "ok" : "FAILED");
      if (!(err <= budget)) std::exit(1);
    }
  }

  Result res;
  for (int B : {1, 2, 4, 8}) {
    const double bytes = (double)wbytes + 4.0 * B * (s.cols + s.rows);
    for (int vi = 0; vi < kNumVariants; ++vi) {
      const W4GemvVariant v = kVariants[vi];
      if (!variant_selected(v)) continue;
      const auto launch = [&](int c, cudaStream_t st) {
        wkv::kernels::detail::w4_gemv_with_variant(dev[c], dx, B, dy, v, st);
      };
      const double us = time_stream_us(stream, copies, samples, launch);
      const double gus = time_graph_us(stream, copies, samples, launch);
      const double gbs = bytes / (us * 1e-6) / 1e9, ggbs = bytes / (gus * 1e-6) / 1e9;
      std::printf("    %s B=%d  stream %8.2f us %7.1f GB/s %5.1f%%   graph %8.2f us %7.1f GB/s %5.1f%%\n",
                  wkv::kernels::detail::w4_gemv_variant_name(v), B, us, gbs, 100.0 * gbs / kPeakGBs, gus, ggbs,
                  100.0 * ggbs / kPeakGBs);
      if (B == 1) res.stream_us[vi] = us, res.graph_us[vi] = gus;
    }
  }
  if (packed) {  // F: where the time goes (per-block phase timestamps), a cold launch and a warm one
    constexpr int kPoints = 12;
    const int sms = wkv::kernels::query_device().multiprocessors;
    unsigned long long* tr = nullptr;
    check(cudaMalloc(&tr, sizeof(unsigned long long) * kPoints * sms), "cudaMalloc");
    const wkv::kernels::W4PackedView pv{s.rows, s.cols, dev[copies - 1].packed};
    const char* names[kPoints] = {"start",        "barriers",  "x in",          "x staged",
                                  "first record", "loop done", "reduced",       "end",
                                  "w0 converted", "w15 x in",  "w15 converted", "w0 zeroed"};
    for (int run = 0; run < 3; ++run) {  // runs 0 (cold) and 2 (warm: the same launch just ran twice)
      const int nb = wkv::kernels::detail::w4_gemv_packed_trace(pv, dx, dy, tr, stream);
      check(cudaStreamSynchronize(stream), "trace");
      if (run == 1) continue;
      std::vector<unsigned long long> t((size_t)kPoints * nb);
      check(cudaMemcpy(t.data(), tr, t.size() * 8, cudaMemcpyDeviceToHost), "download");
      unsigned long long t0 = ~0ull;
      for (int b = 0; b < nb; ++b) t0 = std::min(t0, t[(size_t)b * kPoints]);
      std::printf("    F phases, %s launch (us after the first block's start; median / max over %d blocks):",
                  run == 0 ? "cold" : "warm", nb);
      for (int p = 0; p < kPoints; ++p) {
        std::vector<double> v(nb);
        for (int b = 0; b < nb; ++b) v[b] = (t[(size_t)b * kPoints + p] - t0) / 1000.0;
        std::sort(v.begin(), v.end());
        std::printf(" %s %.2f/%.2f%s", names[p], v[nb / 2], v[nb - 1], p < kPoints - 1 ? "," : "\n");
      }
    }
    cudaFree(tr);
  }
  for (auto& d : dev) {
    cudaFree(const_cast<void*>(d.packed));
    cudaFree(const_cast<uint32_t*>(d.qweight));
    cudaFree(const_cast<uint16_t*>(d.scales));
    cudaFree(const_cast<uint16_t*>(d.zeros));
  }
  cudaFree(dx);
  cudaFree(dy);
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const auto info = wkv::kernels::query_device();
  if (!info.available) {
    std::printf("no CUDA device: %s\n", info.reason.c_str());
    return 0;
  }
  std::printf("device: %s (sm_%d%d, %d SMs); w4_gemv default variant %s (WKV_W4_GEMV_VARIANT)\n", info.name.c_str(),
              info.compute_major, info.compute_minor, info.multiprocessors,
              wkv::kernels::detail::w4_gemv_variant_name(wkv::kernels::detail::w4_gemv_default_variant()));
  std::printf("A = FP32 math, B = half2 math, C = tensor cores; %% of %.1f TB/s; stream = back-to-back launches from the host, "
              "graph = %d launches in one CUDA graph\n",
              kPeakGBs / 1000, kGraphLaunches);
  const int samples = quick ? 5 : 51;
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  std::mt19937 rng(1234);
  const Shape qkv{"q|k|v", 12288, 4096}, gate_up{"gate|up", 22016, 4096}, down{"down", 4096, 11008},
      o{"o", 4096, 4096};
  const Result r_qkv = bench_w4(qkv, 128, samples, rng, stream);
  const Result r_gu = bench_w4(gate_up, 128, samples, rng, stream);
  const Result r_down = bench_w4(down, 128, samples, rng, stream);
  const Result r_o = bench_w4(o, 128, samples, rng, stream);
  auto w4_bytes = [](double rows, double cols) { return rows * cols / 2 + 4.0 * rows * cols / 128; };
  const double bytes =
      32 * (w4_bytes(12288, 4096) + w4_bytes(22016, 4096) + w4_bytes(4096, 11008) + w4_bytes(4096, 4096));
  std::printf("\nLLaMA-2-7B W4 linears per token (B=1): 32 x (q|k|v + o + gate|up + down), head excluded; "
              "weights %.2f GB -> ceiling %.1f us at %.1f TB/s\n",
              bytes / 1e9, bytes / (kPeakGBs * 1e3), kPeakGBs / 1000);
  for (int vi = 0; vi < kNumVariants; ++vi) {
    const double st = 32 * (r_qkv.stream_us[vi] + r_gu.stream_us[vi] + r_down.stream_us[vi] + r_o.stream_us[vi]);
    const double gr = 32 * (r_qkv.graph_us[vi] + r_gu.graph_us[vi] + r_down.graph_us[vi] + r_o.graph_us[vi]);
    std::printf("  %s: stream %.1f us/token (%.1f%% of ceiling), graph %.1f us/token (%.1f%%)\n",
                wkv::kernels::detail::w4_gemv_variant_name(kVariants[vi]), st, 100.0 * bytes / (kPeakGBs * 1e3) / st,
                gr, 100.0 * bytes / (kPeakGBs * 1e3) / gr);
  }
  cudaStreamDestroy(stream);
  return 0;
}
