// The KV4 decode attention with RoPE + append fused in (Kv4DecodeArgs::rope_pos_dev) against the two launches
// it replaces in the decode step — kv4_rope_append_at (q and k rotated in place, k and v appended at p), then
// kv4_decode_attention over the rotated q, k — which rope_append_test and kv4_decode_attention_test check
// against the CPU references. Wanted, bit for bit: the attention output, both cache pools in full (the row
// at p written identically, nothing else touched), and q, k, v left exactly as they were (the fused launch
// rotates where it reads and writes nothing back). Fresh random inputs (the seed is printed), smoothing on
// and off, MHA and GQA shapes (NH = 1 with several blocks per KV head, NH = 2 and 4), head_dim 64 and 128,
// empty and page-crossing caches, the host n_cache path and a captured graph replayed at several positions
// (device n_cache), and an out-of-range position (nothing appended). Where the attention cannot fuse
// (kv4_decode_attention_fuses_rope: no POQ, G ≠ D, WKV_KV4_ATTN=tc) the launch is refused with a message
// naming rope_pos_dev.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "gpu_test_util.h"
#include "kv4_test_util.h"
#include "wkv_kernels/elementwise.h"
#include "wkv_kernels/kv4_append.h"
#include "wkv_kernels/kv4_decode_attention.h"

namespace {

using namespace wkv::test;
namespace wk = wkv::kernels;

constexpr float kTheta = 10000.0f;

struct RopeCase {
  int H, Hkv, D, n_cache;
  bool smoothing;
  int capacity = 0;  // 0: n_cache + 1 rounded up to pages
};

// One side of the comparison: its own copy of the cache, of q|k (kv4_rope_append_at's layout [H + H_kv][D])
// and v, a poisoned output and a fresh workspace.
struct Side {
  DeviceKv4Cache cache;
  DeviceBuf<float> qk, v, out;
  DeviceBuf<uint8_t> ws;
  size_t ws_bytes;
  Side(const HostKv4Cache& host, const std::vector<float>& qk_h, const std::vector<float>& v_h, int H, int D,
       int n_max)
      : cache(host),
        qk(to_device(qk_h)),
        v(to_device(v_h)),
        out(size_t(H) * D),
        ws_bytes(wk::kv4_decode_workspace_bytes(H, D, n_max)) {
    ws = DeviceBuf<uint8_t>(ws_bytes);
    cuda_ok(cudaMemset(ws.ptr, 0xFF, ws_bytes), "poison workspace");
    cuda_ok(cudaMemset(ws.ptr, 0, wk::kv4_decode_counter_bytes(H)), "zero counters");
    cuda_ok(cudaMemset(out.ptr, 0xFF, sizeof(float) * out.n), "poison out");
    cuda_ok(cudaDeviceSynchronize(), "sync");
  }
  wk::Kv4DecodeArgs args(int H, int D) const {
    wk::Kv4DecodeArgs a;
    a.q = qk.ptr;
    a.k_cur = qk.ptr + size_t(H) * D;
    a.v_cur = v.ptr;
    a.out = out.ptr;
    a.n_heads = H;
    a.poq = true;
    return a;
  }
};

// a and b equal bit for bit; otherwise how many elements differ and where the first one is.
template <typename T>
void expect_same_bits(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t diff = 0, first = a.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0 && diff++ == 0) first = i;
  EXPECT_EQ(diff, 0u) << what << ": " << diff << " elements differ, the first at " << first;
}

// The separate launches (ref) and the fused one (got). With no `positions`: once on the host n_cache path at
// position p = n_cache; otherwise both are captured once with device n_cache (sized for the capacity) and
// replayed at each position of `positions` (each position's n_cache = p).
void run_rope_case(const RopeCase& c, unsigned seed, const std::vector<int>& positions = {}) {
  const bool graph = !positions.empty();
  SCOPED_TRACE("seed " + std::to_string(seed) + " H " + std::to_string(c.H) + " Hkv " +
               std::to_string(c.Hkv) + " D " + std::to_string(c.D) + " n_cache " + std::to_string(c.n_cache) +
               (c.smoothing ? " smoothed" : " identity") + (graph ? " graph" : " host n_cache"));
  std::mt19937 rng(seed);
  const int capacity = c.capacity > 0 ? c.capacity : c.n_cache + 1;
  HostKv4Cache host(rng, c.Hkv, c.D, c.D, capacity, 64, c.smoothing);
  const size_t kv = size_t(c.Hkv) * c.D;
  for (int j = 0; j < c.n_cache; ++j) {
    const auto kr = uniform(rng, kv, -2.0f, 2.0f), vr = uniform(rng, kv, -1.0f, 1.0f);
    host.set_row(false, j, kr.data());
    host.set_row(true, j, vr.data());
  }
  std::vector<float> qk = uniform(rng, size_t(c.H) * c.D, -1.0f, 1.0f);
  const auto k = uniform(rng, kv, -2.0f, 2.0f), v = uniform(rng, kv, -1.0f, 1.0f);
  qk.insert(qk.end(), k.begin(), k.end());

  const int n_max = graph ? host.n_pages * host.P : c.n_cache;
  Side ref(host, qk, v, c.H, c.D, n_max), got(host, qk, v, c.H, c.D, n_max);
  DeviceBuf<int32_t> pos_dev(1);
  DeviceBuf<float> cs(c.D);  // the position's cos/sin table, as the decode step computes it once per token
  wk::Kv4DecodeArgs ar = ref.args(c.H, c.D), ag = got.args(c.H, c.D);
  ag.rope_pos_dev = pos_dev.ptr;
  ag.rope_cs = cs.ptr;
  ASSERT_TRUE(wk::kv4_decode_attention_fuses_rope(got.cache.view, ag));

  cudaStream_t stream = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  auto enqueue_ref = [&] {
    wk::kv4_rope_append_at(ref.cache.view, ref.qk.ptr, ref.v.ptr, c.H, pos_dev.ptr, kTheta, nullptr, stream);
    wk::kv4_decode_attention(ref.cache.view, ar, ref.ws.ptr, ref.ws_bytes, stream);
  };
  auto enqueue_got = [&] {
    wk::rope_table_at(pos_dev.ptr, c.D, kTheta, cs.ptr, stream);
    wk::kv4_decode_attention(got.cache.view, ag, got.ws.ptr, got.ws_bytes, stream);
  };
  auto compare = [&](int pos) {
    SCOPED_TRACE("pos " + std::to_string(pos));
    cuda_ok(cudaStreamSynchronize(stream), "sync");
    const auto o_ref = ref.out.download(), o_got = got.out.download();
    for (size_t i = 0; i < o_got.size(); ++i)
      ASSERT_TRUE(std::isfinite(o_got[i])) << "output " << i << " not written";
    expect_same_bits(o_got, o_ref, "attention output");
    expect_same_bits(got.cache.k_pool.download(), ref.cache.k_pool.download(), "k pool");
    expect_same_bits(got.cache.v_pool.download(), ref.cache.v_pool.download(), "v pool");
    expect_same_bits(got.qk.download(), qk, "q|k of the fused launch (must stay unrotated)");
    expect_same_bits(got.v.download(), v, "v of the fused launch");
  };
  // The separate launches rotate q|k in place: every step starts again from the unrotated values.
  auto set_pos = [&](int pos) {
    pos_dev.upload(std::vector<int32_t>{pos});
    ref.qk.upload(qk);
  };

  if (!graph) {
    ar.n_cache = ag.n_cache = c.n_cache;
    set_pos(c.n_cache);
    enqueue_ref();
    enqueue_got();
    compare(c.n_cache);
  } else {
    // n_cache_dev = the position, as the decode step's POQ path passes it (a position past the capacity is
    // clamped to n_cache_max by the kernels).
    ar.n_cache_dev = ag.n_cache_dev = pos_dev.ptr;
    ar.n_cache_max = ag.n_cache_max = n_max;
    cudaGraph_t gr = nullptr, gg = nullptr;
    cudaGraphExec_t er = nullptr, eg = nullptr;
    cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
    enqueue_ref();
    cuda_ok(cudaStreamEndCapture(stream, &gr), "end capture");
    cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
    enqueue_got();
    cuda_ok(cudaStreamEndCapture(stream, &gg), "end capture");
    cuda_ok(cudaGraphInstantiate(&er, gr, 0), "instantiate");
    cuda_ok(cudaGraphInstantiate(&eg, gg, 0), "instantiate");
    for (int pos : positions) {
      set_pos(pos);
      cuda_ok(cudaMemsetAsync(got.out.ptr, 0xFF, sizeof(float) * got.out.n, stream), "poison");
      cuda_ok(cudaGraphLaunch(er, stream), "replay ref");
      cuda_ok(cudaGraphLaunch(eg, stream), "replay fused");
      compare(pos);
    }
    cudaGraphExecDestroy(er);
    cudaGraphExecDestroy(eg);
    cudaGraphDestroy(gr);
    cudaGraphDestroy(gg);
  }
  cudaStreamDestroy(stream);
}

// Whether the attention kernel this process selected fuses RoPE for a POQ cache with one header per row.
bool fusable_here() {
  wk::Kv4LayerCache v{};
  v.head_dim = v.group = 128;
  wk::Kv4DecodeArgs a;
  a.poq = true;
  return wk::kv4_decode_attention_fuses_rope(v, a);
}

#define WKV_REQUIRE_FUSABLE()                                                                           \
  do {                                                                                                  \
    WKV_REQUIRE_GPU();                                                                                  \
    if (!fusable_here())                                                                                \
      GTEST_SKIP()                                                                                      \
          << "the selected attention kernel (WKV_KV4_ATTN) does not fuse RoPE: RefusedWhereNotFusable " \
             "checks the refusal";                                                                      \
  } while (0)

TEST(GpuKv4AttentionRope, FusedEqualsSeparateLaunchesBitForBit) {
  WKV_REQUIRE_FUSABLE();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  // MHA 7B-like (NH = 1), GQA with NH = 2 and 4, NH = 1 with three blocks per KV head (only z = 0 appends),
  // an empty cache (p = 0: the split-0 block has no keys and still appends), page-crossing caches.
  const RopeCase shapes[] = {{32, 32, 128, 0, true}, {8, 4, 64, 1, false},       {8, 2, 128, 63, true},
                             {6, 2, 128, 64, true},  {32, 32, 128, 1000, false}, {4, 4, 64, 333, true},
                             {16, 2, 64, 130, false}};
  unsigned i = 0;
  for (const RopeCase& s : shapes) run_rope_case(s, seed + i++);
}

TEST(GpuKv4AttentionRope, GraphReplaysAtEveryPositionEqualSeparateLaunches) {
  WKV_REQUIRE_FUSABLE();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  // Capacity 256 (4 pages): positions from the empty cache over page boundaries to the last row.
  run_rope_case({32, 32, 128, 255, true, 256}, seed, {0, 1, 63, 64, 65, 200, 255});
  run_rope_case({8, 2, 64, 255, false, 256}, seed + 1, {5, 128, 254});
}

TEST(GpuKv4AttentionRope, PositionPastTheCapacityAppendsNothing) {
  WKV_REQUIRE_FUSABLE();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  // p = capacity and far beyond: the device n_cache clamps to n_cache_max (every row), the append is skipped
  // by both paths, and the pools must still equal (the separate append writes nothing either).
  run_rope_case({8, 4, 128, 128, true, 128}, seed, {128, 1 << 20});
}

// rope_table_at against the CPU's angles (cpu::rope's inv_freq, std::cos / std::sin of the float angle):
// sincosf is within 2 ulp of the correctly rounded value, so 4e-7 absolute on values in [−1, 1].
TEST(GpuKv4AttentionRope, AngleTableMatchesCpu) {
  WKV_REQUIRE_GPU();
  for (int D : {64, 128, 6}) {
    for (int pos : {0, 1, 77, 4095, 32767}) {
      SCOPED_TRACE("D " + std::to_string(D) + " pos " + std::to_string(pos));
      DeviceBuf<int32_t> p(1);
      p.upload(std::vector<int32_t>{pos});
      DeviceBuf<float> cs(D);
      cuda_ok(cudaMemset(cs.ptr, 0xFF, sizeof(float) * D), "poison");
      wk::rope_table_at(p.ptr, D, kTheta, cs.ptr);
      cuda_ok(cudaDeviceSynchronize(), "sync");
      const auto got = cs.download();
      for (int i = 0; i < D / 2; ++i) {
        const float inv = 1.0f / float(std::pow(double(kTheta), double(float(2 * i) / float(D))));
        const float angle = float(pos) * inv;
        EXPECT_NEAR(got[i], std::cos(angle), 4e-7) << "cos of pair " << i;
        EXPECT_NEAR(got[D / 2 + i], std::sin(angle), 4e-7) << "sin of pair " << i;
      }
    }
  }
  EXPECT_THROW(wk::rope_table_at(nullptr, 64, kTheta, nullptr), std::exception);
}

TEST(GpuKv4AttentionRope, RefusedWhereNotFusable) {
  WKV_REQUIRE_GPU();
  std::mt19937 rng(7);
  HostKv4Cache host_g32(rng, 2, 64, 32, 64, 64, false), host_d(rng, 2, 64, 64, 64, 64, false);
  DeviceKv4Cache g32(host_g32), d(host_d);
  DeviceBuf<float> q(4 * 64), k(2 * 64), v(2 * 64), out(4 * 64);
  DeviceBuf<int32_t> pos(1);
  pos.upload(std::vector<int32_t>{3});
  const size_t ws_bytes = wk::kv4_decode_workspace_bytes(4, 64, 64);
  DeviceBuf<uint8_t> ws(ws_bytes);
  cuda_ok(cudaMemset(ws.ptr, 0, ws_bytes), "zero workspace");
  wk::Kv4DecodeArgs a;
  a.q = q.ptr, a.k_cur = k.ptr, a.v_cur = v.ptr, a.out = out.ptr, a.n_heads = 4, a.n_cache = 3;
  a.rope_pos_dev = pos.ptr;
  auto expect_refused = [&](const wk::Kv4LayerCache& c, const wk::Kv4DecodeArgs& args, const char* why) {
    SCOPED_TRACE(why);
    EXPECT_FALSE(wk::kv4_decode_attention_fuses_rope(c, args));
    try {
      wk::kv4_decode_attention(c, args, ws.ptr, ws_bytes);
      ADD_FAILURE() << "not refused";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("rope_pos_dev"), std::string::npos) << e.what();
    }
  };
  expect_refused(g32.view, a, "group 32 ≠ head_dim 64 (the FP32 kernel)");
  wk::Kv4DecodeArgs no_poq = a;
  no_poq.poq = false;
  no_poq.n_cache = 4;
  expect_refused(d.view, no_poq, "no POQ (the current row is read from the cache)");
  if (!fusable_here()) expect_refused(d.view, a, "WKV_KV4_ATTN=tc");
  if (fusable_here()) {
    try {  // a.rope_cs is null
      wk::kv4_decode_attention(d.view, a, ws.ptr, ws_bytes);
      ADD_FAILURE() << "a null rope_cs not refused";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("rope_cs"), std::string::npos) << e.what();
    }
  }
  cuda_ok(cudaDeviceSynchronize(), "sync");
}

}  // namespace
