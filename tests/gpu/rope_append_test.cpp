// GPU fused decode RoPE + KV append (kv4_rope_append_at, kv16_rope_append_at) against
//   (a) the two launches it replaces, rope_at + kv4_append_at / kv16_append_at, on the GPU: bit for bit, the
//       rotated q and k heads, the untouched v and the guard floats after it, and both cache pools;
//   (b) the CPU references: the rotated q and k heads against cpu::rope within the rope budget of
//       elementwise_test (max abs ≤ 1e-5·max|x|: same angle bits, sincosf ≤ 2 ulp), and the cache pools
//       exactly equal to a poisoned host image with the slot at p written by the reference quantizer
//       (quantize_kv4_ref / float_to_fp16) from the GPU's rotated keys and v — the appends' exact contract,
//       and proof that nothing around the slot was written.
// Fresh random inputs every run (the seed is printed), GQA / MQA / MHA shapes with odd head counts, head_dim
// 64 and 128 (plus odd sizes the kernels also take), positions across 64-token page boundaries, the fused
// launch both eager and replayed from a captured CUDA graph, with and without the angle table
// (rope_table_at), and out-of-range device positions (rotate, write nothing to the cache).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu_ops.h"
#include "gpu_test_util.h"
#include "kv16_test_util.h"
#include "kv4_test_util.h"
#include "wkv_kernels/elementwise.h"
#include "wkv_kernels/kv16_append.h"
#include "wkv_kernels/kv4_append.h"

namespace {

using namespace wkv::test;
namespace wk = wkv::kernels;

// Guard floats after v in the qkv buffer: neither path may write there.
constexpr size_t kGuard = 37;
constexpr float kGuardValue = -12345.5f;

// One decode token's q|k|v as the q|k|v GEMV leaves it: q [H][D], k [H_kv][D], v [H_kv][D], then the guard.
struct Qkv {
  int H, Hkv, D;
  size_t qk() const { return size_t(H + Hkv) * D; }
  size_t n() const { return size_t(H + 2 * Hkv) * D; }
  size_t total() const { return n() + kGuard; }
};

// Random q (normal), k (uniform ±3), v (uniform ±1) plus the guard; with `edges`: a zero key head (a constant
// group after rotation: scale 0), a NaN and an outlier in the keys, a NaN and −0 in v.
std::vector<float> make_qkv(std::mt19937& rng, const Qkv& L, bool edges) {
  std::vector<float> x = random_normal(rng, size_t(L.H) * L.D, 1.0f);
  const auto k = uniform(rng, size_t(L.Hkv) * L.D, -3.0f, 3.0f),
             v = uniform(rng, size_t(L.Hkv) * L.D, -1.0f, 1.0f);
  x.insert(x.end(), k.begin(), k.end());
  x.insert(x.end(), v.begin(), v.end());
  x.resize(L.total(), kGuardValue);
  if (edges) {
    float* kk = x.data() + size_t(L.H) * L.D;
    float* vv = x.data() + L.qk();
    std::fill(kk, kk + L.D, 0.0f);
    kk[size_t(L.Hkv - 1) * L.D + 3] = std::numeric_limits<float>::quiet_NaN();
    kk[size_t(L.Hkv - 1) * L.D + L.D / 2 + 1] = 250.0f;
    vv[3] = std::numeric_limits<float>::quiet_NaN();
    vv[4] = -0.0f;
  }
  return x;
}

// The fused result `got` against the input x at position pos: v and the guard bit-identical to the input, and
// (pos ≥ 0, where cpu::rope is defined) the q and k heads within the rope budget of cpu::rope.
void check_against_cpu(const std::vector<float>& got, const std::vector<float>& x, const Qkv& L, int pos,
                       float theta) {
  EXPECT_EQ(0, std::memcmp(got.data() + L.qk(), x.data() + L.qk(), (L.total() - L.qk()) * sizeof(float)))
      << "v or the guard after it changed";
  if (pos < 0) return;
  std::vector<float> ref(x.begin(), x.begin() + L.qk());
  wkv::cpu::rope(ref.data(), 1, L.H + L.Hkv, L.D, pos, theta);
  float mx = 0.0f;
  for (size_t i = 0; i < L.qk(); ++i)
    if (std::fabs(x[i]) > mx) mx = std::fabs(x[i]);  // NaN never wins
  const double budget = 1e-5 * mx;
  size_t bad = 0;
  for (size_t i = 0; i < L.qk(); ++i) {
    const bool ok = std::isnan(ref[i]) ? std::isnan(got[i]) : std::fabs(double(got[i]) - ref[i]) <= budget;
    if (!ok && ++bad <= 5)
      ADD_FAILURE() << "head " << i / L.D << " channel " << i % L.D << ": got " << got[i] << " cpu::rope "
                    << ref[i] << " (budget " << budget << ")";
  }
  EXPECT_EQ(bad, 0u);
}

// KV4: a poisoned host image (written only by the reference quantizer) and two device copies of it, one for
// rope_at + kv4_append_at, one for the fused launch.
struct Kv4Fixture {
  HostKv4Cache host;
  DeviceKv4Cache by_two, by_fused;
  Kv4Fixture(std::mt19937& rng, int Hkv, int D, int G, int capacity, int P, bool smoothing)
      : host(rng, Hkv, D, G, capacity, P, smoothing), by_two(host), by_fused(host) {}
  int capacity() const { return host.n_pages * host.P; }
  void two_launches(float* qkv, int H, const int32_t* pos, float theta) {
    const size_t hd = size_t(host.D);
    wk::rope_at(qkv, H + host.Hkv, host.D, pos, theta);
    wk::kv4_append_at(by_two.view, qkv + H * hd, qkv + (H + host.Hkv) * hd, pos);
  }
  void fused(float* qkv, int H, const int32_t* pos, float theta, const float* cs, cudaStream_t s) {
    wk::kv4_rope_append_at(by_fused.view, qkv, qkv + size_t(H + host.Hkv) * host.D, H, pos, theta, cs, s);
  }
  void write_reference(int p, const float* k, const float* v) {
    host.set_row(false, p, k);
    host.set_row(true, p, v);
  }
  void expect_pools() const {
    const auto fk = by_fused.k_pool.download(), fv = by_fused.v_pool.download();
    EXPECT_TRUE(fk == by_two.k_pool.download()) << "K pool: fused ≠ rope_at + kv4_append_at";
    EXPECT_TRUE(fv == by_two.v_pool.download()) << "V pool: fused ≠ rope_at + kv4_append_at";
    EXPECT_TRUE(fk == host.k_pool) << "K pool ≠ the reference image";
    EXPECT_TRUE(fv == host.v_pool) << "V pool ≠ the reference image";
  }
};

// FP16 KV: the same with the FP16 paged cache.
struct Kv16Fixture {
  HostKv16Cache host;
  DeviceKv16Cache by_two, by_fused;
  Kv16Fixture(std::mt19937& rng, int Hkv, int D, int capacity, int P)
      : host(rng, Hkv, D, capacity, P), by_two(host), by_fused(host) {}
  int capacity() const { return host.capacity(); }
  void two_launches(float* qkv, int H, const int32_t* pos, float theta) {
    const size_t hd = size_t(host.D);
    wk::rope_at(qkv, H + host.Hkv, host.D, pos, theta);
    wk::kv16_append_at(by_two.view, qkv + H * hd, qkv + (H + host.Hkv) * hd, pos);
  }
  void fused(float* qkv, int H, const int32_t* pos, float theta, const float* cs, cudaStream_t s) {
    wk::kv16_rope_append_at(by_fused.view, qkv, qkv + size_t(H + host.Hkv) * host.D, H, pos, theta, cs, s);
  }
  void write_reference(int p, const float* k, const float* v) {
    host.set_row(false, p, k);
    host.set_row(true, p, v);
  }
  void expect_pools() const {
    const auto fk = by_fused.k_pool.download(), fv = by_fused.v_pool.download();
    EXPECT_TRUE(fk == by_two.k_pool.download()) << "K pool: fused ≠ rope_at + kv16_append_at";
    EXPECT_TRUE(fv == by_two.v_pool.download()) << "V pool: fused ≠ rope_at + kv16_append_at";
    EXPECT_TRUE(fk == host.k_pool) << "K pool ≠ the reference image";
    EXPECT_TRUE(fv == host.v_pool) << "V pool ≠ the reference image";
  }
};

// Drives one cache at the positions 0, 1, P−1, P, P+1, 2P−1, 2P, capacity−1 (those inside the capacity), then
// the out-of-range cap, cap + 100000 and −1; even steps replay a graph captured once, odd steps launch
// eagerly. With `table` the fused launch reads the angles from rope_table_at's table for the position (the
// decode step's default), written right before it (in the graph too); otherwise it computes them itself.
template <typename Fixture>
void run_positions(Fixture& f, const Qkv& L, int page, float theta, bool table, std::mt19937& rng) {
  const int cap = f.capacity();
  std::vector<int> positions;
  for (int p : {0, 1, page - 1, page, page + 1, 2 * page - 1, 2 * page, cap - 1})
    if (p >= 0 && p < cap && (positions.empty() || p > positions.back())) positions.push_back(p);
  for (int p : {cap, cap + 100000, -1}) positions.push_back(p);

  DeviceBuf<float> two(L.total()), fused(L.total());
  DeviceBuf<int32_t> pos(1);
  DeviceBuf<float> cs(size_t(L.D));
  cudaStream_t stream = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  auto launch_fused = [&] {
    if (table) wk::rope_table_at(pos.ptr, L.D, theta, cs.ptr, stream);
    f.fused(fused.ptr, L.H, pos.ptr, theta, table ? cs.ptr : nullptr, stream);
  };
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  launch_fused();
  cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");

  for (size_t step = 0; step < positions.size(); ++step) {
    const int p = positions[step];
    const bool in_range = p >= 0 && p < cap;
    SCOPED_TRACE("pos " + std::to_string(p) + (step % 2 ? " eager" : " graph") +
                 (table ? ", angle table" : ""));
    const auto x = make_qkv(rng, L, step == 1);
    two.upload(x);
    fused.upload(x);
    const int32_t pv = p;
    cuda_ok(cudaMemcpy(pos.ptr, &pv, sizeof(pv), cudaMemcpyHostToDevice), "set pos");
    cuda_ok(cudaDeviceSynchronize(), "uploads");
    f.two_launches(two.ptr, L.H, pos.ptr, theta);
    if (step % 2)
      launch_fused();
    else
      cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
    cuda_ok(cudaDeviceSynchronize(), "launches");
    const auto got = fused.download(), want = two.download();
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), L.total() * sizeof(float)))
        << "qkv buffer: fused ≠ rope_at + append (q, k heads or beyond)";
    check_against_cpu(got, x, L, p, theta);
    if (in_range) f.write_reference(p, got.data() + size_t(L.H) * L.D, x.data() + L.qk());
    f.expect_pools();
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(GpuRopeAppend, Kv4MatchesRopeAtPlusAppendAndReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = fresh_seed();
  std::printf("seed %u\n", seed);
  struct Case {
    int H, Hkv, D, G, P, capacity;
    bool smoothing;
    float theta;
  };
  const Case cases[] = {
      {32, 8, 128, 128, 64, 200, true, 500000.0f},  // LLaMA-3-8B shape, GQA 4
      {12, 4, 64, 32, 64, 130, false, 10000.0f},    // GQA 3, head_dim 64
      {7, 7, 64, 64, 64, 70, true, 10000.0f},       // MHA, odd head count
      {6, 2, 128, 2, 64, 129, true, 1e6f},          // G = 2: a header per channel pair
      {5, 1, 128, 32, 64, 300, false, 10000.0f},    // MQA
      {3, 1, 40, 8, 16, 50, true, 10000.0f},        // D/2 = 20 < 32 lanes, small pages
      {4, 2, 192, 64, 64, 70, false, 10000.0f},     // three pairs per lane
  };
  unsigned i = 0;
  for (const auto& c : cases) {
    const unsigned s = seed + i++;
    SCOPED_TRACE("seed " + std::to_string(s) + " H " + std::to_string(c.H) + " Hkv " + std::to_string(c.Hkv) +
                 " D " + std::to_string(c.D) + " G " + std::to_string(c.G) + " P " + std::to_string(c.P) +
                 (c.smoothing ? " smoothed" : " identity"));
    std::mt19937 rng(s);
    for (bool table : {false, true}) {
      Kv4Fixture f(rng, c.Hkv, c.D, c.G, c.capacity, c.P, c.smoothing);  // pools poisoned with 0xFF
      run_positions(f, Qkv{c.H, c.Hkv, c.D}, c.P, c.theta, table, rng);
    }
  }
}

TEST(GpuRopeAppend, Kv16MatchesRopeAtPlusAppendAndReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = fresh_seed();
  std::printf("seed %u\n", seed);
  struct Case {
    int H, Hkv, D, P, capacity;
    float theta;
  };
  const Case cases[] = {
      {32, 8, 128, 64, 200, 500000.0f}, {12, 4, 64, 64, 130, 10000.0f}, {7, 7, 64, 64, 70, 10000.0f},
      {5, 1, 128, 64, 300, 1e6f},       {3, 1, 40, 16, 50, 10000.0f},   {4, 2, 192, 64, 70, 10000.0f},
  };
  unsigned i = 0;
  for (const auto& c : cases) {
    const unsigned s = seed + i++;
    SCOPED_TRACE("seed " + std::to_string(s) + " H " + std::to_string(c.H) + " Hkv " + std::to_string(c.Hkv) +
                 " D " + std::to_string(c.D) + " P " + std::to_string(c.P));
    std::mt19937 rng(s);
    for (bool table : {false, true}) {
      Kv16Fixture f(rng, c.Hkv, c.D, c.capacity, c.P);  // pools poisoned with 0xFFFF
      run_positions(f, Qkv{c.H, c.Hkv, c.D}, c.P, c.theta, table, rng);
    }
  }
}

TEST(GpuRopeAppend, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  std::mt19937 rng(1);
  Kv4Fixture f4(rng, 2, 64, 64, 64, 64, false);
  Kv16Fixture f16(rng, 2, 64, 64, 16);
  DeviceBuf<float> x(size_t(8) * 64);
  DeviceBuf<int32_t> pos(1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // `call(qk, v, n_heads, pos_dev, theta)` must reject each bad argument.
  auto rejects_bad_arguments = [&](auto call) {
    EXPECT_THROW(call(nullptr, x.ptr, 2, pos.ptr, 10000.0f), std::invalid_argument);
    EXPECT_THROW(call(x.ptr, nullptr, 2, pos.ptr, 10000.0f), std::invalid_argument);
    EXPECT_THROW(call(x.ptr, x.ptr + 256, 2, nullptr, 10000.0f), std::invalid_argument);
    EXPECT_THROW(call(x.ptr, x.ptr + 256, 0, pos.ptr, 10000.0f), std::invalid_argument);
    EXPECT_THROW(call(x.ptr, x.ptr + 256, 2, pos.ptr, 0.0f), std::invalid_argument);
    EXPECT_THROW(call(x.ptr, x.ptr + 256, 2, pos.ptr, nan), std::invalid_argument);
    EXPECT_THROW(call(x.ptr, x.ptr + 256, 2, pos.ptr, INFINITY), std::invalid_argument);
  };
  rejects_bad_arguments([&](float* qk, const float* v, int H, const int32_t* p, float theta) {
    wk::kv4_rope_append_at(f4.by_fused.view, qk, v, H, p, theta);
  });
  rejects_bad_arguments([&](float* qk, const float* v, int H, const int32_t* p, float theta) {
    wk::kv16_rope_append_at(f16.by_fused.view, qk, v, H, p, theta);
  });
  // A misaligned angle table is refused, not read.
  const float* odd_cs = reinterpret_cast<const float*>(reinterpret_cast<const char*>(x.ptr) + 2);
  EXPECT_THROW(wk::kv4_rope_append_at(f4.by_fused.view, x.ptr, x.ptr + 256, 2, pos.ptr, 10000.0f, odd_cs),
               std::invalid_argument);
  EXPECT_THROW(wk::kv16_rope_append_at(f16.by_fused.view, x.ptr, x.ptr + 256, 2, pos.ptr, 10000.0f, odd_cs),
               std::invalid_argument);
  auto c4 = f4.by_fused.view;
  c4.group = 48;  // does not divide head_dim
  EXPECT_THROW(wk::kv4_rope_append_at(c4, x.ptr, x.ptr + 256, 2, pos.ptr, 10000.0f), std::invalid_argument);
  auto c16 = f16.by_fused.view;
  c16.head_dim = 12;
  EXPECT_THROW(wk::kv16_rope_append_at(c16, x.ptr, x.ptr + 256, 2, pos.ptr, 10000.0f), std::invalid_argument);
  cuda_ok(cudaDeviceSynchronize(), "sync");
  f4.expect_pools();  // nothing was launched: the pools still equal the poisoned image
  f16.expect_pools();
}

}  // namespace
