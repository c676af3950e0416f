// GPU decode attention over the paged KV4 cache vs a double-precision reference on the reference-dequantized
// cache (dequantize_kv4_ref). Error budget: relative L2 ≤ 1e-5 (growing like √n past 512 keys) and max abs
// ≤ 1e-4 over all heads: the FP32 kernel (G ≠ D) folds the smoothing into q and accumulates in FP32; the
// tensor-core kernel (G = D) multiplies exact FP16 codes by hi + lo FP16 splits of q' and of the softmax
// weights (22 significant bits) with FP32 accumulation, so both differ from the reference only by rounding.
// The graph test checks the device-n_cache path: one captured launch (sized for n_cache_max) replayed at
// many n_cache values, each several times, gives the same bits as the host-n_cache path (same split plan)
// and meets the budget. The combine is fused into the split kernel (the last block of each group of query
// heads merges the splits, counted on arrival counters at the workspace's start): every test zeroes the
// counters once after allocating (and poisoning the partials of) a workspace, and checks that they read 0
// after every launch; the reuse test runs many launches of varying n_cache, host and device paths, on one
// workspace and wants each to equal a launch on a fresh workspace bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "gpu_test_util.h"
#include "kv4_test_util.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/kv4_decode_attention.h"

namespace {

using namespace wkv::test;
namespace wk = wkv::kernels;

// A workspace as a caller makes it: partials poisoned (NaN bytes, so reading an unwritten one shows), the
// arrival counters zeroed once.
DeviceBuf<uint8_t> make_workspace(int H, size_t bytes) {
  DeviceBuf<uint8_t> ws(bytes);
  cuda_ok(cudaMemset(ws.ptr, 0xFF, bytes), "poison workspace");
  cuda_ok(cudaMemset(ws.ptr, 0, wk::kv4_decode_counter_bytes(H)), "zero counters");
  return ws;
}

// Every launch must leave the arrival counters at 0 (the next launch, or graph replay, starts from there).
void expect_counters_zero(const DeviceBuf<uint8_t>& ws, int H) {
  cuda_ok(cudaDeviceSynchronize(), "sync");
  std::vector<uint8_t> c(wk::kv4_decode_counter_bytes(H));
  cuda_ok(cudaMemcpy(c.data(), ws.ptr, c.size(), cudaMemcpyDeviceToHost), "download counters");
  size_t nonzero = 0;
  for (uint8_t b : c) nonzero += b != 0;
  EXPECT_EQ(nonzero, 0u) << "arrival counters not back to 0 after the launch";
}

struct DecodeCase {
  int H, Hkv, D, G, n_cache;
  bool poq, smoothing;
  int keys_per_split;  // 0 = automatic
  int page_size = 64;  // the ring variant (WKV_KV4_ATTN=ring) needs a multiple of 16, else falls back
};

// The kernels' budget against the FP64 reference over n cached keys: rel L2 1e-5 up to 512 keys, growing like
// √n beyond (FP32 sums over n keys err like √n·ε while the output, a softmax average of n random values,
// shrinks like 1/√n; seen: 1.16e-5 at 4097 keys with 32-key splits and smoothing, H200, 2026-11-29), and
// max abs 1e-4.
void expect_within_budget(const std::vector<float>& got, const std::vector<double>& ref, int n) {
  const double rel = rel_l2_d(got, ref), mx = max_abs_d(got, ref);
  EXPECT_LE(rel, 1e-5 * std::max(1.0, std::sqrt(n / 512.0))) << "max abs " << mx;
  EXPECT_LE(mx, 1e-4) << "rel L2 " << rel;
}

void run_decode_case(const DecodeCase& c, unsigned seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " H " + std::to_string(c.H) + " Hkv " + std::to_string(c.Hkv) +
               " D " + std::to_string(c.D) + " G " + std::to_string(c.G) + " n_cache " + std::to_string(c.n_cache) +
               (c.poq ? " poq" : " no-poq") + (c.smoothing ? " smoothed" : " identity") + " split " +
               std::to_string(c.keys_per_split) + " page " + std::to_string(c.page_size));
  std::mt19937 rng(seed);
  const int P = c.page_size;
  HostKv4Cache host(rng, c.Hkv, c.D, c.G, c.n_cache + 1, P, c.smoothing);
  const size_t kv = size_t(c.Hkv) * c.D;
  for (int j = 0; j < c.n_cache; ++j) {
    const auto kr = uniform(rng, kv, -2.0f, 2.0f), vr = uniform(rng, kv, -1.0f, 1.0f);
    host.set_row(false, j, kr.data());
    host.set_row(true, j, vr.data());
  }
  const auto q = uniform(rng, size_t(c.H) * c.D, -1.0f, 1.0f);
  const auto k_cur = uniform(rng, kv, -2.0f, 2.0f), v_cur = uniform(rng, kv, -1.0f, 1.0f);

  // Reference.
  std::vector<float> kd(size_t(c.n_cache) * kv), vd(size_t(c.n_cache) * kv);
  for (int j = 0; j < c.n_cache; ++j) {
    host.get_row(false, j, kd.data() + j * kv);
    host.get_row(true, j, vd.data() + j * kv);
  }
  std::vector<double> ref(size_t(c.H) * c.D);
  const int gq = c.H / c.Hkv;
  for (int h = 0; h < c.H; ++h) {
    const int kvh = h / gq;
    std::vector<const float*> keys, vals;
    for (int j = 0; j < c.n_cache; ++j) {
      keys.push_back(kd.data() + j * kv + kvh * c.D);
      vals.push_back(vd.data() + j * kv + kvh * c.D);
    }
    if (c.poq) {
      keys.push_back(k_cur.data() + kvh * c.D);
      vals.push_back(v_cur.data() + kvh * c.D);
    }
    attend_ref(q.data() + h * c.D, keys, vals, c.D, ref.data() + h * c.D);
  }

  DeviceKv4Cache dev(host);
  auto dq = to_device(q), dk = to_device(k_cur), dv = to_device(v_cur);
  DeviceBuf<float> out(size_t(c.H) * c.D);
  cuda_ok(cudaMemset(out.ptr, 0xFF, sizeof(float) * out.n), "poison");  // NaN pattern
  const size_t ws_bytes = wk::kv4_decode_workspace_bytes(c.H, c.D, c.n_cache);
  DeviceBuf<uint8_t> ws = make_workspace(c.H, ws_bytes);
  wk::Kv4DecodeArgs a;
  a.q = dq.ptr;
  a.k_cur = dk.ptr;
  a.v_cur = dv.ptr;
  a.out = out.ptr;
  a.n_heads = c.H;
  a.n_cache = c.n_cache;
  a.poq = c.poq;
  a.keys_per_split = c.keys_per_split;
  wk::kv4_decode_attention(dev.view, a, ws.ptr, ws_bytes);
  cuda_ok(cudaDeviceSynchronize(), "sync");
  expect_counters_zero(ws, c.H);
  const auto got = out.download();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_TRUE(std::isfinite(got[i])) << "output " << i << " not written";
  expect_within_budget(got, ref, c.n_cache);
}

TEST(GpuKv4DecodeAttention, MatchesReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  const int shapes[][2] = {{2, 2}, {8, 4}, {32, 8}};
  const int n_caches[] = {0, 1, 63, 64, 65, 1000, 4097};
  unsigned i = 0;
  for (const auto& s : shapes)
    for (int D : {64, 128})
      for (bool poq : {true, false})
        for (int n : n_caches) {
          if (!poq && n == 0) continue;  // without POQ the current token is in the cache
          const bool smoothing = (i % 2) == 1;
          const int G = (i % 3 == 2) ? 32 : D;
          const int split = (i % 4 == 3) ? 32 : 0;
          run_decode_case({s[0], s[1], D, G, n, poq, smoothing, split}, seed + i);
          ++i;
        }
  // Odd group ratio (NH = 1, grid.z = 3), tiny groups (per-pair headers), LLaMA-2-7B-like shape.
  run_decode_case({6, 2, 64, 4, 333, true, true, 0}, seed + i++);
  run_decode_case({6, 2, 128, 2, 130, false, true, 96}, seed + i++);
  run_decode_case({32, 32, 128, 128, 2049, true, true, 0}, seed + i++);
  run_decode_case({64, 8, 128, 32, 700, true, false, 0}, seed + i++);  // gq = 8
  // Tensor-core kernel (G = D): gq = 8 (NH = 4, grid.z = 2), gq = 3 (NH = 1, grid.z = 3), ragged splits.
  run_decode_case({64, 8, 128, 128, 700, true, true, 0}, seed + i++);
  run_decode_case({6, 2, 128, 128, 333, false, true, 0}, seed + i++);
  run_decode_case({6, 2, 64, 64, 517, true, false, 80}, seed + i++);
  // Splits that do not start on a 4-row boundary (no V staging), and a page-crossing 7B-like split.
  run_decode_case({8, 4, 128, 128, 333, true, true, 50}, seed + i++);
  run_decode_case({32, 32, 128, 128, 1001, true, true, 200}, seed + i++);
  // Pages of 16 rows (the ring variant's smallest) and of 40 (not a multiple of 16: the ring falls back).
  run_decode_case({8, 4, 128, 128, 700, true, false, 0, 16}, seed + i++);
  run_decode_case({32, 8, 128, 128, 333, true, true, 50, 40}, seed + i++);
  run_decode_case({4, 2, 64, 64, 129, false, true, 0, 16}, seed + i++);
}

// Reference output for `n` cached keys (and k_cur/v_cur with POQ), all heads, in double.
std::vector<double> reference_output(const HostKv4Cache& host, int H, int n, bool poq, const std::vector<float>& q,
                                     const std::vector<float>& k_cur, const std::vector<float>& v_cur) {
  const int D = host.D, Hkv = host.Hkv, gq = H / Hkv;
  const size_t kv = size_t(Hkv) * D;
  std::vector<float> kd(size_t(n) * kv), vd(size_t(n) * kv);
  for (int j = 0; j < n; ++j) {
    host.get_row(false, j, kd.data() + j * kv);
    host.get_row(true, j, vd.data() + j * kv);
  }
  std::vector<double> ref(size_t(H) * D);
  for (int h = 0; h < H; ++h) {
    const int kvh = h / gq;
    std::vector<const float*> keys, vals;
    for (int j = 0; j < n; ++j) {
      keys.push_back(kd.data() + j * kv + kvh * D);
      vals.push_back(vd.data() + j * kv + kvh * D);
    }
    if (poq) {
      keys.push_back(k_cur.data() + kvh * D);
      vals.push_back(v_cur.data() + kvh * D);
    }
    attend_ref(q.data() + h * D, keys, vals, D, ref.data() + h * D);
  }
  return ref;
}

// The shape of a sweep test (graph replay, workspace reuse) and its data: a cache of n_max random rows, q and
// the current token's k, v.
struct SweepCase {
  int H, Hkv, D, G, n_max;
  bool poq, smoothing;
  int keys_per_split;
};

std::string describe(const SweepCase& c, unsigned seed) {
  return "seed " + std::to_string(seed) + " H " + std::to_string(c.H) + " Hkv " + std::to_string(c.Hkv) + " D " +
         std::to_string(c.D) + " G " + std::to_string(c.G) + " n_max " + std::to_string(c.n_max) +
         (c.poq ? " poq" : " no-poq") + (c.smoothing ? " smoothed" : " identity") + " split " +
         std::to_string(c.keys_per_split);
}

struct SweepData {
  std::mt19937 rng;
  HostKv4Cache host;
  std::vector<float> q, k_cur, v_cur;
  SweepData(const SweepCase& c, unsigned seed) : rng(seed), host(rng, c.Hkv, c.D, c.G, c.n_max + 1, 64, c.smoothing) {
    const size_t kv = size_t(c.Hkv) * c.D;
    for (int j = 0; j < c.n_max; ++j) {
      const auto kr = uniform(rng, kv, -2.0f, 2.0f), vr = uniform(rng, kv, -1.0f, 1.0f);
      host.set_row(false, j, kr.data());
      host.set_row(true, j, vr.data());
    }
    q = uniform(rng, size_t(c.H) * c.D, -1.0f, 1.0f);
    k_cur = uniform(rng, kv, -2.0f, 2.0f);
    v_cur = uniform(rng, kv, -1.0f, 1.0f);
  }
  std::vector<double> reference(int H, int n, bool poq) const {
    return reference_output(host, H, n, poq, q, k_cur, v_cur);
  }
};

// The sweep data on the device, and the launch arguments every launch of a case shares (out and n_cache are
// the caller's).
struct SweepDevice {
  DeviceKv4Cache dev;
  DeviceBuf<float> dq, dk, dv;
  explicit SweepDevice(const SweepData& d)
      : dev(d.host), dq(to_device(d.q)), dk(to_device(d.k_cur)), dv(to_device(d.v_cur)) {}
  wk::Kv4DecodeArgs args(const SweepCase& c) const {
    wk::Kv4DecodeArgs a;
    a.q = dq.ptr;
    a.k_cur = dk.ptr;
    a.v_cur = dv.ptr;
    a.n_heads = c.H;
    a.poq = c.poq;
    a.keys_per_split = c.keys_per_split;
    return a;
  }
};

// One CUDA graph captured with n_cache_dev (grid sized for n_max) and replayed at every n of the sweep.
void run_graph_case(const SweepCase& c, unsigned seed) {
  SCOPED_TRACE(describe(c, seed));
  SweepData data(c, seed);
  SweepDevice d(data);
  const DeviceKv4Cache& dev = d.dev;
  DeviceBuf<float> out_graph(size_t(c.H) * c.D), out_host(size_t(c.H) * c.D);
  DeviceBuf<int32_t> n_dev(1);
  const size_t ws_bytes = wk::kv4_decode_workspace_bytes(c.H, c.D, c.n_max);
  DeviceBuf<uint8_t> ws_graph = make_workspace(c.H, ws_bytes), ws_host = make_workspace(c.H, ws_bytes);

  const wk::Kv4DecodeArgs a = d.args(c);

  cudaStream_t stream = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  wk::Kv4DecodeArgs ag = a;
  ag.out = out_graph.ptr;
  ag.n_cache = -12345;  // ignored on the device path
  ag.n_cache_dev = n_dev.ptr;
  ag.n_cache_max = c.n_max;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
  wk::kv4_decode_attention(dev.view, ag, ws_graph.ptr, ws_bytes, stream);
  cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");

  // Decreasing n after increasing n: the counters must be back to 0 whichever splits the last replay had.
  std::vector<int> sweep = {1, 63, 64, 65, 1000, c.n_max, 33, 1};
  if (c.poq) sweep.insert(sweep.begin(), 0);
  for (int n : sweep) {
    if (n > c.n_max) continue;
    SCOPED_TRACE("n_cache " + std::to_string(n));
    const int32_t nv = n;
    cuda_ok(cudaMemcpy(n_dev.ptr, &nv, sizeof(nv), cudaMemcpyHostToDevice), "set n_cache");
    cuda_ok(cudaDeviceSynchronize(), "pageable copy landed");  // before non-blocking-stream work
    cuda_ok(cudaMemset(out_host.ptr, 0xFF, sizeof(float) * out_host.n), "poison");
    wk::Kv4DecodeArgs ah = a;
    ah.out = out_host.ptr;
    ah.n_cache = n;
    wk::kv4_decode_attention(dev.view, ah, ws_host.ptr, ws_bytes);
    cuda_ok(cudaDeviceSynchronize(), "sync");
    expect_counters_zero(ws_host, c.H);
    const auto want = out_host.download();
    for (int replay = 0; replay < 3; ++replay) {  // the same step replayed: same bits every time
      SCOPED_TRACE("replay " + std::to_string(replay));
      // On the graph's stream: a plain cudaMemset (legacy stream) is not ordered before a non-blocking stream.
      cuda_ok(cudaMemsetAsync(out_graph.ptr, 0xFF, sizeof(float) * out_graph.n, stream), "poison");
      cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
      cuda_ok(cudaStreamSynchronize(stream), "graph sync");
      expect_counters_zero(ws_graph, c.H);
      const auto got = out_graph.download();
      for (size_t i = 0; i < got.size(); ++i) ASSERT_TRUE(std::isfinite(got[i])) << "output " << i << " not written";
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), sizeof(float) * got.size()))
          << "device-n_cache output differs from the host-n_cache output (same split plan)";
      if (replay > 0) continue;
      const auto ref = data.reference(c.H, n, c.poq);
      expect_within_budget(got, ref, n);
    }
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(GpuKv4DecodeAttention, DeviceNCacheGraphReplay) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  unsigned i = 0;
  const int shapes[][2] = {{2, 2}, {32, 8}, {12, 4}};
  for (const auto& s : shapes)
    for (int D : {64, 128})
      for (int G : {D, 32}) {
        const int split = (i % 3 == 1) ? 32 : (i % 3 == 2) ? 96 : 0;
        run_graph_case({s[0], s[1], D, G, 1500, (i % 4) != 3, (i % 2) == 0, split}, seed + i);
        ++i;
      }
  run_graph_case({32, 32, 128, 128, 4100, true, true, 0}, seed + i++);  // LLaMA-2-7B-like, many splits
}

// Many launches on ONE workspace (zeroed once): n_cache varies up and down (one split … many splits, more
// than one combine tile of 128 splits with 32-key splits), host and device n_cache alternate (their grids,
// hence the partials' layout, differ). Each launch must equal a launch on a fresh workspace bit for bit,
// meet the reference budget, and leave the counters at 0.
void run_reuse_case(const SweepCase& c, unsigned seed) {
  SCOPED_TRACE(describe(c, seed));
  SweepData data(c, seed);
  SweepDevice d(data);
  const DeviceKv4Cache& dev = d.dev;
  DeviceBuf<float> out(size_t(c.H) * c.D);
  DeviceBuf<int32_t> n_dev(1);
  const size_t ws_bytes = wk::kv4_decode_workspace_bytes(c.H, c.D, c.n_max);
  DeviceBuf<uint8_t> ws = make_workspace(c.H, ws_bytes);  // shared by every launch below

  wk::Kv4DecodeArgs a = d.args(c);
  a.out = out.ptr;
  auto launch = [&](int n, bool device_n, void* w, size_t w_bytes) {
    cuda_ok(cudaMemset(out.ptr, 0xFF, sizeof(float) * out.n), "poison");
    wk::Kv4DecodeArgs x = a;
    x.n_cache = n;
    if (device_n) {
      const int32_t nv = n;
      cuda_ok(cudaMemcpy(n_dev.ptr, &nv, sizeof(nv), cudaMemcpyHostToDevice), "set n_cache");
      cuda_ok(cudaDeviceSynchronize(), "pageable copy landed");  // before non-blocking-stream work
      x.n_cache = -1;  // ignored on the device path
      x.n_cache_dev = n_dev.ptr;
      x.n_cache_max = c.n_max;
    }
    wk::kv4_decode_attention(dev.view, x, w, w_bytes);
    cuda_ok(cudaDeviceSynchronize(), "sync");
    return out.download();
  };

  std::vector<int> sweep = {c.n_max, 1, 31, 33, 700, 2, c.n_max, 64, 65};
  std::uniform_int_distribution<int> pick(1, c.n_max);
  for (int i = 0; i < 6; ++i) sweep.push_back(pick(data.rng));
  if (c.poq) sweep.insert(sweep.begin() + 2, 0);
  for (size_t i = 0; i < sweep.size(); ++i) {
    const int n = std::min(sweep[i], c.n_max);
    const bool device_n = i % 2 == 1;
    SCOPED_TRACE("launch " + std::to_string(i) + " n_cache " + std::to_string(n) + (device_n ? " device" : " host"));
    const auto got = launch(n, device_n, ws.ptr, ws_bytes);
    expect_counters_zero(ws, c.H);
    for (size_t e = 0; e < got.size(); ++e) ASSERT_TRUE(std::isfinite(got[e])) << "output " << e << " not written";
    DeviceBuf<uint8_t> fresh = make_workspace(c.H, ws_bytes);
    const auto want = launch(n, device_n, fresh.ptr, ws_bytes);
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), sizeof(float) * got.size()))
        << "a launch on the reused workspace differs from one on a fresh workspace";
    const auto ref = data.reference(c.H, n, c.poq);
    expect_within_budget(got, ref, n);
  }
}

TEST(GpuKv4DecodeAttention, ReusedWorkspaceCountersReset) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  unsigned i = 0;
  // Tensor-core kernel: GQA 4 (NH = 4), D = 128; odd group ratio 3 at D = 64 (NH = 1: one idle combine team).
  run_reuse_case({8, 2, 128, 128, 2500, true, true, 0}, seed + i++);
  run_reuse_case({6, 2, 64, 64, 2500, false, false, 0}, seed + i++);
  // 32-key splits: 141 splits per group at n_max (two combine tiles), D = 128 and 64.
  run_reuse_case({32, 8, 128, 128, 4500, true, false, 32}, seed + i++);
  run_reuse_case({4, 4, 64, 64, 4500, false, true, 32}, seed + i++);
  // FP32 kernel (G ≠ D): GQA 8 (NH = 8, two combine passes), MHA; per-pair headers.
  run_reuse_case({16, 2, 128, 32, 3000, true, true, 0}, seed + i++);
  run_reuse_case({4, 4, 64, 32, 3000, false, false, 32}, seed + i++);
  run_reuse_case({4, 2, 64, 4, 1200, true, true, 0}, seed + i++);
}

// L2 prefetch hints are performance only: launches with hints over a real buffer (more pieces than blocks and
// fewer, fractions 0.3 and 1, key limits below and above n_cache, issued at the block's start or after its
// key loop, host and device n_cache) give the same bits as the launch without; malformed regions are refused.
TEST(GpuKv4DecodeAttention, L2PrefetchHintsChangeNothing) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  const SweepCase c{32, 8, 128, 128, 1500, true, true, 0};
  SCOPED_TRACE(describe(c, seed));
  SweepData data(c, seed);
  SweepDevice d(data);
  DeviceBuf<float> out(size_t(c.H) * c.D);
  DeviceBuf<int32_t> n_dev(1);
  const int32_t nv = c.n_max;
  cuda_ok(cudaMemcpy(n_dev.ptr, &nv, sizeof(nv), cudaMemcpyHostToDevice), "set n_cache");
  cuda_ok(cudaDeviceSynchronize(), "pageable copy landed");  // before non-blocking-stream work
  const size_t ws_bytes = wk::kv4_decode_workspace_bytes(c.H, c.D, c.n_max);
  DeviceBuf<uint8_t> ws = make_workspace(c.H, ws_bytes);
  DeviceBuf<uint8_t> target(size_t(3) << 20);  // what the hints point at: 96 units of 32 KB
  auto launch = [&](wk::Kv4DecodeArgs a, bool device_n) {
    cuda_ok(cudaMemset(out.ptr, 0xFF, sizeof(float) * out.n), "poison");
    a.out = out.ptr;
    a.n_cache = c.n_max;
    if (device_n) {
      a.n_cache = -1;
      a.n_cache_dev = n_dev.ptr;
      a.n_cache_max = c.n_max;
    }
    wk::kv4_decode_attention(d.dev.view, a, ws.ptr, ws_bytes);
    cuda_ok(cudaDeviceSynchronize(), "sync");
    return out.download();
  };
  for (bool device_n : {false, true}) {
    const auto want = launch(d.args(c), device_n);
    expect_within_budget(want, data.reference(c.H, c.n_max, c.poq), c.n_max);
    for (float f : {0.3f, 1.0f})
      for (int max_keys : {0, c.n_max - 1, c.n_max})
        for (bool after_keys : {false, true}) {
          SCOPED_TRACE(std::string(device_n ? "device" : "host") + " n_cache, fraction " + std::to_string(f) +
                       ", max keys " + std::to_string(max_keys) +
                       (after_keys ? ", after the key loop" : ", at start"));
          wk::Kv4DecodeArgs a = d.args(c);
          a.prefetch[0] = {target.ptr, 96, 1000, 32768, f};   // more pieces than blocks
          a.prefetch[1] = {target.ptr + 16, 50, 7, 1024, f};  // fewer, at an offset
          a.prefetch_max_keys = max_keys;
          a.prefetch_after_keys = after_keys;
          const auto got = launch(a, device_n);
          EXPECT_EQ(0, std::memcmp(got.data(), want.data(), sizeof(float) * got.size()))
              << "the output changed with L2 prefetch hints";
        }
  }
  wk::Kv4DecodeArgs a = d.args(c);
  a.out = out.ptr;
  a.n_cache = c.n_max;
  a.prefetch[1] = {target.ptr + 8, 4, 2, 1024, 0.5f};  // base not 16-byte aligned
  EXPECT_THROW(wk::kv4_decode_attention(d.dev.view, a, ws.ptr, ws_bytes), std::invalid_argument);
  a.prefetch[1] = {target.ptr, 4, 2, 1000, 0.5f};  // unit bytes not a multiple of 16
  EXPECT_THROW(wk::kv4_decode_attention(d.dev.view, a, ws.ptr, ws_bytes), std::invalid_argument);
  a.prefetch[1] = {target.ptr, 4, 0, 1024, 0.5f};  // no pieces
  EXPECT_THROW(wk::kv4_decode_attention(d.dev.view, a, ws.ptr, ws_bytes), std::invalid_argument);
  a.prefetch[1] = {target.ptr, 4, 2, 1024, 1.5f};  // fraction outside [0, 1]
  EXPECT_THROW(wk::kv4_decode_attention(d.dev.view, a, ws.ptr, ws_bytes), std::invalid_argument);
}

TEST(GpuKv4DecodeAttention, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  std::mt19937 rng(1);
  HostKv4Cache host(rng, 2, 64, 64, 64, 64, false);
  DeviceKv4Cache dev(host);
  DeviceBuf<float> buf(1024);
  DeviceBuf<uint8_t> ws(wk::kv4_decode_workspace_bytes(4, 64, 64));
  wk::Kv4DecodeArgs a;
  a.q = a.k_cur = a.v_cur = buf.ptr;
  a.out = buf.ptr;
  a.n_heads = 3;  // not a multiple of H_kv
  a.n_cache = 10;
  EXPECT_THROW(wk::kv4_decode_attention(dev.view, a, ws.ptr, ws.n), std::invalid_argument);
  a.n_heads = 4;
  a.n_cache = 65;  // beyond capacity
  EXPECT_THROW(wk::kv4_decode_attention(dev.view, a, ws.ptr, ws.n), std::invalid_argument);
  a.n_cache = 0;
  a.poq = false;  // nothing to attend to
  EXPECT_THROW(wk::kv4_decode_attention(dev.view, a, ws.ptr, ws.n), std::invalid_argument);
  a.poq = true;
  a.n_cache = 64;
  EXPECT_THROW(wk::kv4_decode_attention(dev.view, a, ws.ptr, 16), std::invalid_argument);  // workspace too small
  a.n_cache = 0;  // POQ only: no partials, but the arrival counters live in the workspace
  EXPECT_THROW(wk::kv4_decode_attention(dev.view, a, nullptr, 0), std::invalid_argument);
  // Device n_cache: the host checks n_cache_max (against the capacity), not the ignored n_cache field.
  DeviceBuf<int32_t> n_dev(1);
  a.n_cache = 0;
  a.n_cache_dev = n_dev.ptr;
  a.n_cache_max = 65;  // beyond capacity
  EXPECT_THROW(wk::kv4_decode_attention(dev.view, a, ws.ptr, ws.n), std::invalid_argument);
  a.n_cache_max = 0;
  a.poq = false;  // nothing to attend to
  EXPECT_THROW(wk::kv4_decode_attention(dev.view, a, ws.ptr, ws.n), std::invalid_argument);
}

}  // namespace
