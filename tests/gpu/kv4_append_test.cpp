// GPU KV4 append: the bytes written into the paged cache equal quantize_kv4_ref's bit for bit, and nothing
// outside the appended rows changes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

#include "gpu_test_util.h"
#include "kv4_test_util.h"
#include "wkv_kernels/device.h"
#include "wkv_kernels/kv4_append.h"

namespace {

using namespace wkv::test;

struct AppendCase {
  int Hkv, D, G, P, T, pos0;
  bool smoothing;
};

void run_append_case(const AppendCase& c, unsigned seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " Hkv " + std::to_string(c.Hkv) + " D " + std::to_string(c.D) +
               " G " + std::to_string(c.G) + " P " + std::to_string(c.P) + " T " + std::to_string(c.T) + " pos0 " +
               std::to_string(c.pos0) + (c.smoothing ? " smoothed" : " identity"));
  std::mt19937 rng(seed);
  const int capacity = c.pos0 + c.T + 3;
  HostKv4Cache host(rng, c.Hkv, c.D, c.G, capacity, c.P, c.smoothing);  // pools poisoned with 0xFF
  const size_t row = size_t(c.Hkv) * c.D;
  std::vector<float> k = uniform(rng, size_t(c.T) * row, -3.0f, 3.0f);
  std::vector<float> v = uniform(rng, size_t(c.T) * row, -1.0f, 1.0f);
  // Edge cases of the spec: a constant head vector (scale 0), a NaN, −0, an outlier.
  if (c.T >= 1) std::fill(k.begin(), k.begin() + c.D, 0.75f);
  if (c.T >= 2) {
    v[row + 3] = std::numeric_limits<float>::quiet_NaN();
    v[row + 4] = -0.0f;
    k[row + 1] = 250.0f;
  }
  DeviceKv4Cache dev(host);
  auto dk = to_device(k), dv = to_device(v);
  wkv::kernels::kv4_append(dev.view, dk.ptr, dv.ptr, c.T, c.pos0);
  cuda_ok(cudaDeviceSynchronize(), "sync");
  const auto got_k = dev.k_pool.download(), got_v = dev.v_pool.download();

  // Expected image: the poisoned pools with the appended rows quantized by the reference.
  for (int t = 0; t < c.T; ++t) {
    host.set_row(false, c.pos0 + t, k.data() + t * row);
    host.set_row(true, c.pos0 + t, v.data() + t * row);
  }
  size_t bad = 0;
  for (size_t i = 0; i < got_k.size() && bad < 10; ++i) {
    if (got_k[i] != host.k_pool[i]) {
      ADD_FAILURE() << "K pool byte " << i << ": got " << int(got_k[i]) << " expected " << int(host.k_pool[i]);
      ++bad;
    }
    if (got_v[i] != host.v_pool[i]) {
      ADD_FAILURE() << "V pool byte " << i << ": got " << int(got_v[i]) << " expected " << int(host.v_pool[i]);
      ++bad;
    }
  }
}

TEST(GpuKv4Append, BitExactAgainstReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  const AppendCase cases[] = {
      {1, 64, 64, 64, 1, 0, false},    {2, 64, 32, 16, 7, 5, true},    {4, 128, 128, 64, 33, 61, false},
      {4, 128, 32, 64, 65, 3, true},   {8, 128, 128, 64, 129, 100, true}, {3, 64, 2, 8, 17, 9, true},
      {32, 128, 128, 64, 5, 4094, true}, {2, 128, 4, 32, 9, 31, false},
  };
  int i = 0;
  for (const auto& c : cases) run_append_case(c, seed + i++);
}

// kv4_append_at (device position, captured once in a CUDA graph and replayed) writes the same bytes as
// kv4_append at that position, and a device position outside [0, capacity) writes nothing.
TEST(GpuKv4Append, DevicePositionMatchesHostPosition) {
  WKV_REQUIRE_GPU();
  const unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  struct Case {
    int Hkv, D, G, P, capacity;
    bool smoothing;
  };
  const Case cases[] = {{1, 64, 64, 64, 70, false}, {4, 128, 128, 64, 200, true}, {3, 64, 2, 8, 41, true},
                        {8, 128, 32, 16, 100, false}};
  int ci = 0;
  for (const auto& c : cases) {
    const unsigned s = seed + ci++;
    SCOPED_TRACE("seed " + std::to_string(s) + " Hkv " + std::to_string(c.Hkv) + " D " + std::to_string(c.D) +
                 " G " + std::to_string(c.G) + " P " + std::to_string(c.P) + " capacity " +
                 std::to_string(c.capacity));
    std::mt19937 rng(s);
    HostKv4Cache host(rng, c.Hkv, c.D, c.G, c.capacity, c.P, c.smoothing);  // pools poisoned with 0xFF
    const int cap = host.n_pages * host.P;
    const size_t row = size_t(c.Hkv) * c.D;
    const std::vector<int> positions = {0, 1, c.P - 1, c.P, cap / 2, cap - 1};
    DeviceKv4Cache by_host(host), by_dev(host);
    DeviceBuf<float> dk(row), dv(row);
    DeviceBuf<int32_t> pos(1);
    cudaStream_t stream = nullptr;
    cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
    wkv::kernels::kv4_append_at(by_dev.view, dk.ptr, dv.ptr, pos.ptr, stream);
    cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
    cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    auto replay_at = [&](int32_t p) {
      cuda_ok(cudaMemcpy(pos.ptr, &p, sizeof(p), cudaMemcpyHostToDevice), "set pos");
      cuda_ok(cudaDeviceSynchronize(), "pageable copy landed");  // before non-blocking-stream work
      cuda_ok(cudaGraphLaunch(exec, stream), "graph launch");
      cuda_ok(cudaStreamSynchronize(stream), "graph sync");
    };
    for (int p : positions) {
      const auto k = uniform(rng, row, -3.0f, 3.0f), v = uniform(rng, row, -1.0f, 1.0f);
      dk.upload(k);
      dv.upload(v);
      wkv::kernels::kv4_append(by_host.view, dk.ptr, dv.ptr, 1, p);
      replay_at(p);
      cuda_ok(cudaDeviceSynchronize(), "sync");
      host.set_row(false, p, k.data());
      host.set_row(true, p, v.data());
    }
    // Out of range: nothing changes.
    for (int32_t p : {cap, cap + 5, -1, int32_t(0x7FFFFFFF)}) replay_at(p);
    const auto hk = by_host.k_pool.download(), hv = by_host.v_pool.download();
    const auto gk = by_dev.k_pool.download(), gv = by_dev.v_pool.download();
    EXPECT_TRUE(hk == gk) << "K pools differ between kv4_append and kv4_append_at";
    EXPECT_TRUE(hv == gv) << "V pools differ between kv4_append and kv4_append_at";
    EXPECT_TRUE(gk == host.k_pool) << "K pool differs from the reference image";
    EXPECT_TRUE(gv == host.v_pool) << "V pool differs from the reference image";
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST(GpuKv4Append, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  std::mt19937 rng(1);
  HostKv4Cache host(rng, 2, 64, 64, 64, 64, false);
  DeviceKv4Cache dev(host);
  DeviceBuf<float> x(size_t(2) * 64 * 2);
  EXPECT_THROW(wkv::kernels::kv4_append(dev.view, x.ptr, x.ptr, 2, 63), std::invalid_argument);  // past capacity
  auto bad = dev.view;
  bad.group = 48;
  EXPECT_THROW(wkv::kernels::kv4_append(bad, x.ptr, x.ptr, 1, 0), std::invalid_argument);
  EXPECT_NO_THROW(wkv::kernels::kv4_append(dev.view, x.ptr, x.ptr, 0, 64));  // T = 0 is a no-op
  EXPECT_THROW(wkv::kernels::kv4_append_at(dev.view, x.ptr, x.ptr, nullptr), std::invalid_argument);
  EXPECT_THROW(wkv::kernels::kv4_append_at(bad, x.ptr, x.ptr, reinterpret_cast<const int32_t*>(x.ptr)),
               std::invalid_argument);
}

}  // namespace
