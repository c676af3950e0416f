// The W4 linears of one LLaMA-2-7B decode token as the decode step runs them, two ways, B = 1:
//   separate  per layer o → gate|up (add + RMSNorm) → down (SwiGLU) → next q|k|v (add + RMSNorm), four
//   launches
//             of the packed GEMV F (w4_gemv_packed*), 128 launches per token;
//   chain     the same four linears as one persistent launch per layer (w4_gemv_chain), 32 per token;
//   singles   each linear as a chain of one op (128 launches): against `separate` it isolates the chain
//             kernel's own cost per op (its shared-memory layout, registers, block ranges) from what the
//             grid-wide waits between ops cost, which `chain` against `singles` shows.
// Each is captured once as a CUDA graph of a whole token (32 layers, each with its own weights: 3.2 GB, far
// beyond L2) and replayed; printed: median µs per token over the replays, GB/s of weight bytes, and % of the
// H200's 4.3 TB/s copy bandwidth (docs/performance.md). Nothing sits between the linears here (the real step
// has RoPE/append and attention between q|k|v and o), so this isolates the launch boundaries.
// Validation first: one layer's q|k|v and residual from the chain against the separate launches' (rel L2 ≤
// 1e-6: the same arithmetic up to per-row summation order); exit 1 on failure. Weights: random 4-bit codes,
// scale 1/64 (FP16 0x2400), zero point 8, packed on the device; x ~ U(−1, 1).
//
// Usage: wkv_kernel_bench_w4_gemv_chain [--quick]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

#include "bench_util.cuh"
#include "cuda_check.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/w4_gemv.h"
#include "wkv_kernels/w4_gemv_chain.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace {

namespace wk = wkv::kernels;

constexpr int kLayers = 32, kDim = 4096, kFfn = 11008, kQkv = 3 * 4096;
constexpr double kPeakGBs = 4300.0;

// Random codes → packed records of a rows × cols matrix (the storage arrays are freed after packing).
__global__ void random_codes_kernel(uint32_t* q, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    q[i] = h;
  }
}

__global__ void fill_u16_kernel(uint16_t* p, size_t n, uint16_t v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

wk::W4PackedView random_packed(int rows, int cols, uint32_t seed) {
  const size_t words = (size_t)rows * cols / 8, groups = (size_t)rows * cols / 128;
  uint32_t* q;
  uint16_t *s, *z;
  CUDA_CHECK(cudaMalloc(&q, words * 4));
  CUDA_CHECK(cudaMalloc(&s, groups * 2));
  CUDA_CHECK(cudaMalloc(&z, groups * 2));
  random_codes_kernel<<<1024, 256>>>(q, words, seed);
  fill_u16_kernel<<<256, 256>>>(s, groups, 0x2400);  // FP16 1/64
  fill_u16_kernel<<<256, 256>>>(z, groups, 0x4800);  // FP16 8
  void* rec;
  CUDA_CHECK(cudaMalloc(&rec, wk::w4_packed_device_bytes(rows, cols)));
  wk::w4_pack({rows, cols, 128, q, s, z}, rec);
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaFree(q), cudaFree(s), cudaFree(z);
  return {rows, cols, rec};
}

struct Layer {
  wk::W4PackedView wo, gu, down, qkv;
  float *ffn_norm, *attn_norm;
};

struct Buffers {
  float *att, *x[2], *h, *g, *qkv;
};

float* device_floats(size_t n, uint32_t seed, float lo, float hi) {
  float* p;
  CUDA_CHECK(cudaMalloc(&p, n * 4));
  wkv::bench::fill_uniform(p, n, seed, lo, hi);
  return p;
}

// The linears of `layers` layers of a token; the residual stream starts in x[0] and alternates as in the
// decode step (an even count of add + RMSNorm per layer, so it is back in x[0] after each layer).
enum Mode { kSeparate, kChain, kSingles, kModes };
const char* const kModeName[kModes] = {"separate", "chain", "singles"};

void enqueue_token(const std::vector<Layer>& L, const Buffers& b, Mode mode, unsigned int* counters,
                   cudaStream_t s, int layers = kLayers) {
  int cur = 0;
  for (int l = 0; l < layers; ++l) {
    const Layer& c = L[l];
    const Layer& n =
        L[(l + 1) % kLayers];  // the last layer feeds layer 0's q|k|v (a stand-in for the next token)
    if (mode != kSeparate) {
      wk::W4ChainOp ops[4];
      ops[0].w = c.wo, ops[0].x = b.att, ops[0].y = b.h;
      ops[1].w = c.gu, ops[1].input = wk::W4ChainInput::add_rmsnorm, ops[1].res = b.x[cur], ops[1].r = b.h;
      ops[1].norm_weight = c.ffn_norm, ops[1].eps = 1e-5f, ops[1].res_out = b.x[cur ^ 1], ops[1].y = b.g;
      ops[2].w = c.down, ops[2].input = wk::W4ChainInput::swiglu, ops[2].x = b.g, ops[2].u = b.g + kFfn,
      ops[2].y = b.h;
      ops[3].w = n.qkv, ops[3].input = wk::W4ChainInput::add_rmsnorm, ops[3].res = b.x[cur ^ 1],
      ops[3].r = b.h;
      ops[3].norm_weight = n.attn_norm, ops[3].eps = 1e-5f, ops[3].res_out = b.x[cur], ops[3].y = b.qkv;
      if (mode == kChain)
        wk::w4_gemv_chain(ops, 4, counters, s);
      else
        for (const wk::W4ChainOp& op : ops) wk::w4_gemv_chain(&op, 1, counters, s);
    } else {
      wk::w4_gemv_packed(c.wo, b.att, 1, b.h, s);
      wk::w4_gemv_packed_add_rmsnorm(c.gu, b.x[cur], b.h, c.ffn_norm, 1e-5f, b.x[cur ^ 1], b.g, s);
      wk::w4_gemv_packed_swiglu(c.down, b.g, b.g + kFfn, b.h, s);
      wk::w4_gemv_packed_add_rmsnorm(n.qkv, b.x[cur ^ 1], b.h, n.attn_norm, 1e-5f, b.x[cur], b.qkv, s);
    }
  }
}

std::vector<float> download(const float* p, size_t n) {
  std::vector<float> v(n);
  CUDA_CHECK(cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost));
  return v;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i)
    num += (a[i] - (double)ref[i]) * (a[i] - (double)ref[i]), den += (double)ref[i] * ref[i];
  return std::sqrt(num / den);
}

int run(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const auto info = wk::query_device();
  if (!info.available) {
    std::printf("no CUDA device: %s\n", info.reason.c_str());
    return 0;
  }
  if (!wk::w4_gemv_packed_supported(kDim, kDim, 128)) {
    std::printf("device %s: the packed GEMV needs compute capability 9.0; nothing to time\n",
                info.name.c_str());
    return 0;
  }
  std::printf("device: %s (%d SMs)\n", info.name.c_str(), info.multiprocessors);
  std::vector<Layer> L(kLayers);
  for (int l = 0; l < kLayers; ++l) {
    const uint32_t seed = 1000u * (l + 1);
    L[l] = {random_packed(kDim, kDim, seed + 1),       random_packed(2 * kFfn, kDim, seed + 2),
            random_packed(kDim, kFfn, seed + 3),       random_packed(kQkv, kDim, seed + 4),
            device_floats(kDim, seed + 5, 0.5f, 1.5f), device_floats(kDim, seed + 6, 0.5f, 1.5f)};
  }
  Buffers b{};
  b.att = device_floats(kDim, 7, -1.0f, 1.0f);
  b.x[1] = device_floats(kDim, 9, -1.0f, 1.0f);
  CUDA_CHECK(cudaMalloc(&b.x[0], kDim * 4));
  CUDA_CHECK(cudaMalloc(&b.h, kDim * 4));
  CUDA_CHECK(cudaMalloc(&b.g, 2 * kFfn * 4));
  CUDA_CHECK(cudaMalloc(&b.qkv, kQkv * 4));
  const float* x_init = device_floats(kDim, 8, -1.0f, 1.0f);
  unsigned int* counters;
  CUDA_CHECK(cudaMalloc(&counters, wk::kW4ChainCounters * 4));
  CUDA_CHECK(cudaMemset(counters, 0, wk::kW4ChainCounters * 4));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreate(&s));  // blocking: median_us's events on the legacy stream order with it

  // Validation: one layer each way from the same residual stream (one layer: random weights amplify the
  // summation-order differences from layer to layer, so deeper runs would test the weights, not the chain).
  std::vector<float> out[kModes][2];
  bool ok = true;
  for (int m = 0; m < kModes; ++m) {
    CUDA_CHECK(cudaMemcpy(b.x[0], x_init, kDim * 4, cudaMemcpyDeviceToDevice));
    enqueue_token(L, b, Mode(m), counters, s, 1);
    CUDA_CHECK(cudaStreamSynchronize(s));
    out[m][0] = download(b.qkv, kQkv);
    out[m][1] = download(b.x[0], kDim);
    if (m == kSeparate) continue;
    const double eq = rel_l2(out[m][0], out[0][0]), er = rel_l2(out[m][1], out[0][1]);
    const bool good = eq <= 1e-6 && er <= 1e-6 && std::isfinite(eq) && std::isfinite(er);
    std::printf(
        "validate %s vs separate launches, one layer: q|k|v rel L2 %.2e, residual %.2e (budget 1e-6) %s\n",
        kModeName[m], eq, er, good ? "ok" : "FAILED");
    ok = ok && good;
  }
  if (!ok) return 1;

  double bytes = 0;
  for (const auto* w : {&L[0].wo, &L[0].gu, &L[0].down, &L[0].qkv})
    bytes += kLayers * (double)wk::w4_packed_device_bytes(w->rows, w->cols);
  const int replays = quick ? 5 : 41;
  double us[kModes];
  for (int m = 0; m < kModes; ++m) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    enqueue_token(L, b, Mode(m), counters, s);
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    us[m] = wkv::bench::median_us(replays, [&](int) { CUDA_CHECK(cudaGraphLaunch(exec, s)); });
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
  std::printf(
      "\nLLaMA-2-7B W4 linears per token (o, gate|up, down, q|k|v; packed %.2f GB), CUDA graph of one "
      "token:\n",
      bytes / 1e9);
  for (int m = 0; m < kModes; ++m) {
    const double gbs = bytes / (us[m] * 1e-6) / 1e9;
    std::printf("  %-9s %4d launches  %9.1f us/token  %7.1f GB/s  %5.1f%% of %.1f TB/s\n", kModeName[m],
                m == kChain ? kLayers : 4 * kLayers, us[m], gbs, 100.0 * gbs / kPeakGBs, kPeakGBs / 1000);
  }
  return 0;
}

}  // namespace

// CUDA errors throw (CUDA_CHECK, with file and line): reported, exit 2.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wkv_kernel_bench_w4_gemv_chain: %s\n", e.what());
    return 2;
  }
}
