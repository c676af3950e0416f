// W4 GEMV benchmark on LLaMA-2-7B decode shapes (W4 g128 linears, FP16 output head).
//
// For each shape: validate one B = 1 launch against dequantize_w4_ref + an FP64 matvec (exit 1 if the
// rel L2 exceeds 1e-5), then time with CUDA events: each sample runs one launch on each of `copies`
// distinct weight copies (> 2× the 50 MB L2 in total, so every launch streams from HBM) and divides;
// the median of 21 samples after warm-up is reported. Bytes counted: qweight + scales + zeros + x + y.
// Then the sum over one token's linears (7 per layer × 32 layers + head) as µs/token at B = 1.
//
// Usage: wkv_kernel_bench_w4_gemv [--quick]   (--quick: fewer samples, for smoke runs)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "half.h"
#include "quant_formats.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/gemv_f16.h"
#include "wkv_kernels/w4_gemv.h"

namespace {

constexpr double kPeakGBs = 4300.0;  // H200 measured copy bandwidth (DESIGN.md)
constexpr size_t kRotateBytes = 200u << 20;  // total bytes of weight copies per shape (> 2× L2)

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

// Median time in µs of one call of `launch(copy)`, each sample covering every copy once.
template <typename F>
double time_us(int copies, int samples, F&& launch) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int w = 0; w < 3; ++w)
    for (int c = 0; c < copies; ++c) launch(c);
  check(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> t;
  for (int s = 0; s < samples; ++s) {
    check(cudaEventRecord(a), "record");
    for (int c = 0; c < copies; ++c) launch(c);
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(1000.0 * ms / copies);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double rel_l2(const std::vector<float>& y, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += (y[i] - ref[i]) * (y[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

struct Shape {
  const char* name;
  int rows, cols;
};

// Returns the B = 1 time in µs.
double bench_w4(const Shape& s, int group, int samples, std::mt19937& rng) {
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
  std::normal_distribution<float> xd(0.0f, 1.0f);
  std::vector<float> x((size_t)8 * s.cols);
  for (auto& v : x) v = xd(rng);
  float* dx = device_copy(x);
  float* dy = nullptr;
  check(cudaMalloc(&dy, (size_t)8 * s.rows * sizeof(float)), "cudaMalloc");

  // Validation (B = 1).
  const std::vector<float> Wd = wkv::dequantize_w4_ref(m);
  std::vector<double> ref(s.rows);
  for (int r = 0; r < s.rows; ++r) {
    double acc = 0;
    for (int c = 0; c < s.cols; ++c) acc += (double)Wd[(size_t)r * s.cols + c] * x[c];
    ref[r] = acc;
  }
  wkv::kernels::w4_gemv(dev[0], dx, 1, dy);
  std::vector<float> y(s.rows);
  check(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost), "download");
  const double err = rel_l2(y, ref);
  std::printf("%-14s %5d x %-5d g%-4d copies %2d  validate rel L2 %.2e %s\n", s.name, s.rows, s.cols, group, copies,
              err, err <= 1e-5 ? "ok" : "FAILED");
  if (!(err <= 1e-5)) std::exit(1);

  double t1 = 0;
  for (int B : {1, 2, 4, 8}) {
    const double us = time_us(copies, samples, [&](int c) { wkv::kernels::w4_gemv(dev[c], dx, B, dy); });
    const double bytes = (double)wbytes + 4.0 * B * (s.cols + s.rows);
    const double gbs = bytes / (us * 1e-6) / 1e9;
    std::printf("    B=%d  %8.2f us  %7.1f GB/s  %5.1f%% of %.1f TB/s\n", B, us, gbs, 100.0 * gbs / kPeakGBs,
                kPeakGBs / 1000);
    if (B == 1) t1 = us;
  }
  for (auto& d : dev) {
    cudaFree(const_cast<uint32_t*>(d.qweight));
    cudaFree(const_cast<uint16_t*>(d.scales));
    cudaFree(const_cast<uint16_t*>(d.zeros));
  }
  cudaFree(dx);
  cudaFree(dy);
  return t1;
}

double bench_head(int rows, int cols, int samples, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<uint16_t> W((size_t)rows * cols);
  std::vector<float> Wf(W.size());
  for (size_t i = 0; i < W.size(); ++i) {
    W[i] = wkv::float_to_fp16(nd(rng));
    Wf[i] = wkv::fp16_to_float(W[i]);
  }
  const size_t wbytes = W.size() * 2;
  const int copies = (int)std::max<size_t>(2, kRotateBytes / wbytes + 1);
  std::vector<uint16_t*> dW(copies);
  dW[0] = device_copy(W);
  for (int c = 1; c < copies; ++c) {
    check(cudaMalloc(&dW[c], wbytes), "cudaMalloc");
    check(cudaMemcpy(dW[c], dW[0], wbytes, cudaMemcpyDeviceToDevice), "copy");
  }
  std::normal_distribution<float> xd(0.0f, 1.0f);
  std::vector<float> x((size_t)8 * cols);
  for (auto& v : x) v = xd(rng);
  float* dx = device_copy(x);
  float* dy = nullptr;
  check(cudaMalloc(&dy, (size_t)8 * rows * sizeof(float)), "cudaMalloc");
  std::vector<double> ref(rows);
  for (int r = 0; r < rows; ++r) {
    double acc = 0;
    for (int c = 0; c < cols; ++c) acc += (double)Wf[(size_t)r * cols + c] * x[c];
    ref[r] = acc;
  }
  wkv::kernels::gemv_f16({rows, cols, dW[0]}, dx, 1, dy);
  std::vector<float> y(rows);
  check(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost), "download");
  const double err = rel_l2(y, ref);
  std::printf("%-14s %5d x %-5d fp16  copies %2d  validate rel L2 %.2e %s\n", "head (fp16)", rows, cols, copies, err,
              err <= 1e-5 ? "ok" : "FAILED");
  if (!(err <= 1e-5)) std::exit(1);
  double t1 = 0;
  for (int B : {1, 2, 4, 8}) {
    const double us =
        time_us(copies, samples, [&](int c) { wkv::kernels::gemv_f16({rows, cols, dW[c]}, dx, B, dy); });
    const double bytes = (double)wbytes + 4.0 * B * (cols + rows);
    const double gbs = bytes / (us * 1e-6) / 1e9;
    std::printf("    B=%d  %8.2f us  %7.1f GB/s  %5.1f%% of %.1f TB/s\n", B, us, gbs, 100.0 * gbs / kPeakGBs,
                kPeakGBs / 1000);
    if (B == 1) t1 = us;
  }
  for (auto* p : dW) cudaFree(p);
  cudaFree(dx);
  cudaFree(dy);
  return t1;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const auto info = wkv::kernels::query_device();
  if (!info.available) {
    std::printf("no CUDA device: %s\n", info.reason.c_str());
    return 0;
  }
  std::printf("device: %s (sm_%d%d, %d SMs)\n", info.name.c_str(), info.compute_major, info.compute_minor,
              info.multiprocessors);
  const int samples = quick ? 5 : 21;
  std::mt19937 rng(1234);
  const Shape qkvo{"q/k/v/o", 4096, 4096}, gate_up{"gate/up", 11008, 4096}, down{"down", 4096, 11008};
  const double t_qkvo = bench_w4(qkvo, 128, samples, rng);
  const double t_gu = bench_w4(gate_up, 128, samples, rng);
  const double t_down = bench_w4(down, 128, samples, rng);
  const double t_head = bench_head(32000, 4096, samples, rng);
  const double layer_us = 4 * t_qkvo + 2 * t_gu + t_down;
  const double token_us = 32 * layer_us + t_head;
  auto w4_bytes = [](int rows, int cols) { return (double)rows * cols / 2 + 4.0 * rows * cols / 128; };
  const double bytes = 32 * (4 * w4_bytes(4096, 4096) + 2 * w4_bytes(11008, 4096) + w4_bytes(4096, 11008)) +
                       2.0 * 32000 * 4096;
  std::printf("\nLLaMA-2-7B linears per token (B=1): 32 x (4 q/k/v/o + 2 gate/up + 1 down) + head\n");
  std::printf("  %.1f us/token (%.1f us/layer + head %.1f us); weight bytes %.2f GB -> ceiling %.1f us at %.1f TB/s"
              " (%.1f%%)\n",
              token_us, layer_us, t_head, bytes / 1e9, bytes / (kPeakGBs * 1e3), kPeakGBs / 1000,
              100.0 * bytes / (kPeakGBs * 1e3) / token_us);
  return 0;
}
