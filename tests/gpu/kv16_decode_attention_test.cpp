// GPU decode attention over the paged FP16 KV cache vs a double-precision reference over the same
// FP16-rounded keys and values (float_to_fp16). Error budget: relative L2 ≤ 1e-5 and max abs ≤ 1e-5 over all
// heads (only the FP32 arithmetic differs: q/√D, dots, expf, sums; outputs are ≤ 1 in magnitude). The
// device-n_cache path (one fixed n_cache_max, as in a captured CUDA graph) must give the host path's outputs
// bit for bit: both plan the splits from the effective n alone (kv16_decode_attention.cu). The combine is
// fused into the split kernel (the last block of each group of query heads merges the splits, counted on
// arrival counters at the workspace's start): every workspace here has its partials poisoned and its
// counters zeroed once, and the counters must read 0 after every launch; the reuse test runs many launches
// of varying n on one workspace and wants each to equal a launch on a fresh workspace bit for bit.
#include "wkv_kernels/kv16_decode_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "kv16_test_util.h"

namespace {

using namespace wkv::test;
namespace wk = wkv::kernels;

constexpr int kNMax = 4160;  // the fixed n_cache_max of the device-n_cache runs (≥ every n below)

struct DecodeCase {
  int H, Hkv, D, P, n_cache;
};

// Fills positions 0 … n−1 with random K ∈ [−2, 2], V ∈ [−1, 1] (FP16-rounded by the reference).
HostKv16Cache make_cache(std::mt19937& rng, int Hkv, int D, int P, int n, int capacity) {
  HostKv16Cache host(rng, Hkv, D, capacity, P);
  const size_t row = size_t(Hkv) * D;
  for (int j = 0; j < n; ++j) {
    const auto kr = uniform(rng, row, -2.0f, 2.0f), vr = uniform(rng, row, -1.0f, 1.0f);
    host.set_row(false, j, kr.data());
    host.set_row(true, j, vr.data());
  }
  return host;
}

// Poisons the workspace's partials (NaN bytes) and zeroes its arrival counters, as a caller does once.
void init_workspace(DeviceBuffer<uint8_t>& ws, int H) {
  ws.poison();
  cuda_ok(cudaMemset(ws.get(), 0, wk::kv16_decode_counter_bytes(H)), "zero counters");
}

// Every launch must leave the arrival counters at 0 (the next launch, or graph replay, starts from there).
void expect_counters_zero(const DeviceBuffer<uint8_t>& ws, int H) {
  cuda_ok(cudaDeviceSynchronize(), "sync");
  std::vector<uint8_t> c(wk::kv16_decode_counter_bytes(H));
  cuda_ok(cudaMemcpy(c.data(), ws.get(), c.size(), cudaMemcpyDeviceToHost), "download counters");
  size_t nonzero = 0;
  for (uint8_t b : c) nonzero += b != 0;
  EXPECT_EQ(nonzero, 0u) << "arrival counters not back to 0 after the launch";
}

// Runs the kernel (host path when n_dev is null) into a NaN-poisoned output with a fresh workspace (poisoned
// partials, zeroed counters).
std::vector<float> run_kernel(const DeviceKv16Cache& dev, const DeviceBuffer<float>& q, int H, int D,
                              int n_cache, const int32_t* n_dev, int n_max) {
  DeviceBuffer<float> out(size_t(H) * D);
  out.poison();
  const size_t ws_bytes = wk::kv16_decode_workspace_bytes(H, D, n_dev ? n_max : n_cache);
  DeviceBuffer<uint8_t> ws(ws_bytes);
  init_workspace(ws, H);
  wk::Kv16DecodeArgs a;
  a.q = q.get();
  a.out = out.get();
  a.n_heads = H;
  a.n_cache = n_dev ? -7 : n_cache;  // the field is ignored on the device path
  a.n_cache_dev = n_dev;
  a.n_cache_max = n_max;
  wk::kv16_decode_attention(dev.view, a, ws.get(), ws_bytes);
  expect_counters_zero(ws, H);
  return out.download();
}

void expect_bit_equal(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size());
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && ++bad <= 5)
      ADD_FAILURE() << what << ": element " << i << " " << a[i] << " vs " << b[i];
  EXPECT_EQ(bad, 0u) << what;
}

void run_decode_case(const DecodeCase& c, unsigned seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " H " + std::to_string(c.H) + " Hkv " +
               std::to_string(c.Hkv) + " D " + std::to_string(c.D) + " P " + std::to_string(c.P) +
               " n_cache " + std::to_string(c.n_cache));
  std::mt19937 rng(seed);
  const HostKv16Cache host = make_cache(rng, c.Hkv, c.D, c.P, c.n_cache, kNMax);
  const auto q = uniform(rng, size_t(c.H) * c.D, -1.0f, 1.0f);
  const auto ref = attention_ref(host, q, c.H, c.n_cache);

  DeviceKv16Cache dev(host);
  DeviceBuffer<float> dq(q);
  const auto got = run_kernel(dev, dq, c.H, c.D, c.n_cache, nullptr, 0);
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_TRUE(std::isfinite(got[i])) << "output " << i << " not written";
  const double rel = rel_l2_d(got, ref), mx = max_abs_d(got, ref);
  std::printf("H %2d Hkv %2d D %3d P %2d n %5d: rel L2 %.3g, max abs %.3g\n", c.H, c.Hkv, c.D, c.P, c.n_cache,
              rel, mx);
  EXPECT_LE(rel, 1e-5) << "max abs " << mx;
  EXPECT_LE(mx, 1e-5) << "rel L2 " << rel;

  // Device n_cache with the fixed bound kNMax: same bits as the host path.
  DeviceBuffer<int32_t> n_dev(std::vector<int32_t>{c.n_cache});
  const auto got_dev = run_kernel(dev, dq, c.H, c.D, 0, n_dev.get(), kNMax);
  expect_bit_equal(got_dev, got, "device n_cache vs host n_cache");
}

TEST(GpuKv16DecodeAttention, MatchesReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = fresh_seed();
  std::printf("seed %u\n", seed);
  const int shapes[][2] = {{2, 2}, {8, 2}, {16, 2}};  // GQA ratio 1, 4, 8
  const int n_caches[] = {1, 2, 63, 64, 65, 1000, 4097};
  unsigned i = 0;
  for (const auto& s : shapes)
    for (int D : {64, 128})
      for (int n : n_caches) {
        const int P = (i % 3 == 0) ? 64 : (i % 3 == 1) ? 16 : 5;  // odd page size: tiles straddle pages
        run_decode_case({s[0], s[1], D, P, n}, seed + i++);
      }
  // Odd group ratio (NH = 1, Z = 3), NH = 2, LLaMA-2-7B shape, GQA 8 with many KV heads, one token per page.
  run_decode_case({6, 2, 128, 64, 333}, seed + i++);
  run_decode_case({12, 2, 64, 32, 2049}, seed + i++);
  run_decode_case({32, 32, 128, 64, 4097}, seed + i++);
  run_decode_case({64, 8, 128, 64, 700}, seed + i++);
  run_decode_case({4, 1, 64, 1, 130}, seed + i++);
}

// One fixed n_cache_max, several device values: a captured CUDA graph replayed at each n (three times) equals
// the host path; a device value above n_cache_max is clamped to it, one below 1 gives zeros.
TEST(GpuKv16DecodeAttention, CapturedGraphFollowsDeviceNCache) {
  WKV_REQUIRE_GPU();
  const unsigned seed = fresh_seed();
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  const int H = 8, Hkv = 2, D = 128, P = 64, n_max = 3000;
  const HostKv16Cache host = make_cache(rng, Hkv, D, P, n_max, n_max + 64);
  const auto q = uniform(rng, size_t(H) * D, -1.0f, 1.0f);
  DeviceKv16Cache dev(host);
  DeviceBuffer<float> dq(q), out(size_t(H) * D);
  DeviceBuffer<int32_t> n_dev(1);
  const size_t ws_bytes = wk::kv16_decode_workspace_bytes(H, D, n_max);
  DeviceBuffer<uint8_t> ws(ws_bytes);
  init_workspace(ws, H);

  cudaStream_t stream;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  wk::Kv16DecodeArgs a;
  a.q = dq.get();
  a.out = out.get();
  a.n_heads = H;
  a.n_cache_dev = n_dev.get();
  a.n_cache_max = n_max;
  // One eager run first (loads the kernels; drivers ≥ 12.3 could also load them during capture).
  (void)run_kernel(dev, dq, H, D, n_max, nullptr, 0);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
  wk::kv16_decode_attention(dev.view, a, ws.get(), ws_bytes, stream);
  cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");

  for (int n : {1, 64, 65, 777, 2999, 3000, 3001, 1 << 30, 0, -5, 130, 1}) {
    SCOPED_TRACE("device n_cache " + std::to_string(n));
    n_dev.upload({n});
    const int n_eff = std::min(n, n_max);
    const auto want = n < 1 ? std::vector<float>() : run_kernel(dev, dq, H, D, n_eff, nullptr, 0);
    for (int replay = 0; replay < 3; ++replay) {
      SCOPED_TRACE("replay " + std::to_string(replay));
      // On the graph's stream: a plain cudaMemset (legacy stream) is not ordered before a non-blocking stream.
      cuda_ok(cudaMemsetAsync(out.get(), 0xFF, sizeof(float) * size_t(H) * D, stream), "poison");
      cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
      cuda_ok(cudaStreamSynchronize(stream), "sync");
      expect_counters_zero(ws, H);
      const auto got = out.download();
      if (n < 1) {
        for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], 0.0f) << i;
        continue;
      }
      expect_bit_equal(got, want, "graph replay vs host n_cache");
      if (replay == 0) {
        const auto ref = attention_ref(host, q, H, n_eff);
        EXPECT_LE(rel_l2_d(got, ref), 1e-5);
      }
    }
  }
  cuda_ok(cudaGraphExecDestroy(exec), "destroy exec");
  cuda_ok(cudaGraphDestroy(graph), "destroy graph");
  cuda_ok(cudaStreamDestroy(stream), "destroy stream");
}

// Many launches on ONE workspace (counters zeroed once): n goes up and down (one split … a full wave of
// splits), host and device n_cache alternate (different grids, so the partials' layout moves). Each launch
// equals a launch on a fresh workspace bit for bit, meets the budget and leaves the counters at 0.
TEST(GpuKv16DecodeAttention, ReusedWorkspaceCountersReset) {
  WKV_REQUIRE_GPU();
  const unsigned seed = fresh_seed();
  std::printf("seed %u\n", seed);
  const int shapes[][3] = {{4, 4, 64}, {8, 2, 128}, {16, 2, 64}, {6, 2, 128}};  // {H, Hkv, D}: GQA 1, 4, 8, 3
  unsigned k = 0;
  for (const auto& sh : shapes) {
    const int H = sh[0], Hkv = sh[1], D = sh[2], n_max = 3000;
    std::mt19937 rng(seed + k++);
    SCOPED_TRACE("seed " + std::to_string(seed + k - 1) + " H " + std::to_string(H) + " Hkv " +
                 std::to_string(Hkv) + " D " + std::to_string(D));
    const HostKv16Cache host = make_cache(rng, Hkv, D, 16, n_max, n_max);
    const auto q = uniform(rng, size_t(H) * D, -1.0f, 1.0f);
    DeviceKv16Cache dev(host);
    DeviceBuffer<float> dq(q), out(size_t(H) * D);
    DeviceBuffer<int32_t> n_dev(1);
    const size_t ws_bytes = wk::kv16_decode_workspace_bytes(H, D, n_max);
    DeviceBuffer<uint8_t> ws(ws_bytes);
    init_workspace(ws, H);  // once: shared by every launch below
    std::vector<int> sweep = {n_max, 1, 63, 65, 700, 2, n_max, 64, 129};
    std::uniform_int_distribution<int> pick(1, n_max);
    for (int i = 0; i < 6; ++i) sweep.push_back(pick(rng));
    for (size_t i = 0; i < sweep.size(); ++i) {
      const int n = sweep[i];
      const bool device_n = i % 2 == 1;
      SCOPED_TRACE("launch " + std::to_string(i) + " n " + std::to_string(n) + (device_n ? " device" : " host"));
      out.poison();
      wk::Kv16DecodeArgs a;
      a.q = dq.get();
      a.out = out.get();
      a.n_heads = H;
      a.n_cache = n;
      if (device_n) {
        n_dev.upload({n});
        a.n_cache = -7;  // ignored on the device path
        a.n_cache_dev = n_dev.get();
        a.n_cache_max = n_max;
      }
      wk::kv16_decode_attention(dev.view, a, ws.get(), ws_bytes);
      expect_counters_zero(ws, H);
      const auto got = out.download();
      for (size_t e = 0; e < got.size(); ++e) ASSERT_TRUE(std::isfinite(got[e])) << "output " << e << " not written";
      const auto want = run_kernel(dev, dq, H, D, n, device_n ? n_dev.get() : nullptr, n_max);
      expect_bit_equal(got, want, "reused workspace vs fresh workspace");
      const auto ref = attention_ref(host, q, H, n);
      const double rel = rel_l2_d(got, ref), mx = max_abs_d(got, ref);
      EXPECT_LE(rel, 1e-5) << "max abs " << mx;
      EXPECT_LE(mx, 1e-5) << "rel L2 " << rel;
    }
  }
}

TEST(GpuKv16DecodeAttention, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  std::mt19937 rng(1);
  const HostKv16Cache host = make_cache(rng, 2, 64, 16, 8, 64);  // capacity 64
  DeviceKv16Cache dev(host);
  DeviceBuffer<float> buf(1024);
  DeviceBuffer<int32_t> n_dev(std::vector<int32_t>{8});
  const size_t ws_bytes = wk::kv16_decode_workspace_bytes(4, 64, 64);
  DeviceBuffer<uint8_t> ws(ws_bytes);
  init_workspace(ws, 4);  // the calls below that are valid launch
  auto args = [&] {
    wk::Kv16DecodeArgs a;
    a.q = buf.get();
    a.out = buf.get();
    a.n_heads = 4;
    a.n_cache = 8;
    return a;
  };
  auto expect_throw = [&](const wk::Kv16LayerCache& c, const wk::Kv16DecodeArgs& a, void* w, size_t wb,
                          const char* what) {
    EXPECT_THROW(wk::kv16_decode_attention(c, a, w, wb), std::invalid_argument) << what;
  };
  EXPECT_NO_THROW(wk::kv16_decode_attention(dev.view, args(), ws.get(), ws_bytes));
  {
    auto a = args();
    a.n_heads = 3;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "H not a multiple of H_kv");
  }
  {
    auto a = args();
    a.n_heads = 0;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "H = 0");
  }
  {
    auto a = args();
    a.n_cache = 0;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "n_cache 0");
  }
  {
    auto a = args();
    a.n_cache = 65;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "n_cache > capacity");
  }
  {
    auto a = args();
    a.q = nullptr;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "null q");
  }
  {
    auto a = args();
    a.out = nullptr;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "null out");
  }
  expect_throw(dev.view, args(), ws.get(), 16, "workspace too small");
  expect_throw(dev.view, args(), nullptr, ws_bytes, "null workspace");
  {
    auto a = args();
    a.n_cache_dev = n_dev.get();
    a.n_cache_max = 0;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "n_cache_max 0 with n_cache_dev");
    a.n_cache_max = 65;
    expect_throw(dev.view, a, ws.get(), ws_bytes, "n_cache_max > capacity");
    a.n_cache_max = 64;
    EXPECT_NO_THROW(wk::kv16_decode_attention(dev.view, a, ws.get(), ws_bytes));
  }
  {
    auto c = dev.view;
    c.head_dim = 96;
    expect_throw(c, args(), ws.get(), ws_bytes, "D = 96 unsupported");
  }
  {
    auto c = dev.view;
    c.head_dim = 12;
    expect_throw(c, args(), ws.get(), ws_bytes, "D not a multiple of 8");
  }
  {
    auto c = dev.view;
    c.k_pool = nullptr;
    expect_throw(c, args(), ws.get(), ws_bytes, "null k_pool");
  }
  {
    auto c = dev.view;
    c.page_table = nullptr;
    expect_throw(c, args(), ws.get(), ws_bytes, "null page table");
  }
  {
    auto c = dev.view;
    c.v_pool += 1;
    expect_throw(c, args(), ws.get(), ws_bytes, "misaligned v_pool");
  }
  cuda_ok(cudaDeviceSynchronize(), "sync");
}

}  // namespace
