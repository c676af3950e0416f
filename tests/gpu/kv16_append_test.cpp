// GPU FP16 KV append: the pools hold exactly float_to_fp16 (half.h, round-to-nearest-even) of every appended
// K / V value at the documented head-major paged position (shuffled page table), and nothing else changes;
// kv16_append_at writes what kv16_append writes at the device position and nothing when it is out of range.
#include "wkv_kernels/kv16_append.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include "kv16_test_util.h"

namespace {

using namespace wkv::test;
namespace wk = wkv::kernels;

// Counts (and reports the first few) differing elements of the two pools.
void expect_pools_equal(const DeviceKv16Cache& dev, const HostKv16Cache& want) {
  const auto got_k = dev.k_pool.download(), got_v = dev.v_pool.download();
  ASSERT_EQ(got_k.size(), want.k_pool.size());
  size_t bad = 0;
  for (size_t i = 0; i < got_k.size(); ++i) {
    for (int which = 0; which < 2; ++which) {
      const uint16_t g = which ? got_v[i] : got_k[i], w = which ? want.v_pool[i] : want.k_pool[i];
      if (g != w && ++bad <= 10)
        ADD_FAILURE() << (which ? "V" : "K") << " pool element " << i << ": got 0x" << std::hex << g
                      << " expected 0x" << w << std::dec;
    }
  }
  EXPECT_EQ(bad, 0u);
}

struct AppendCase {
  int Hkv, D, P, T, pos0;
};

void run_append_case(const AppendCase& c, unsigned seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + " Hkv " + std::to_string(c.Hkv) + " D " +
               std::to_string(c.D) + " P " + std::to_string(c.P) + " T " + std::to_string(c.T) + " pos0 " +
               std::to_string(c.pos0));
  std::mt19937 rng(seed);
  HostKv16Cache host(rng, c.Hkv, c.D, c.pos0 + c.T + 3, c.P);  // poisoned 0xFFFF
  const size_t row = size_t(c.Hkv) * c.D;
  auto k = uniform(rng, size_t(c.T) * row, -3.0f, 3.0f);
  auto v = uniform(rng, size_t(c.T) * row, -1.0f, 1.0f);
  // Rounding edge cases: NaN (payload kept as the reference does), ±Inf, −0, overflow to Inf (65520), the
  // largest finite half, a tie that rounds to even (1 + 2^−11), subnormals, a value flushing to zero.
  const float edge[] = {std::numeric_limits<float>::quiet_NaN(),
                        INFINITY,
                        -INFINITY,
                        -0.0f,
                        65520.0f,
                        65504.0f,
                        1.0f + 0.00048828125f,
                        1.0f + 3 * 0.00048828125f,
                        3.0e-6f,
                        -6.0e-8f,
                        1.0e-9f,
                        -70000.0f};
  for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]) && i < k.size(); ++i) {
    k[i * 7 % k.size()] = edge[i];
    v[(i * 5 + 1) % v.size()] = edge[i];
  }
  DeviceKv16Cache dev(host);
  DeviceBuffer<float> dk(k), dv(v);
  wk::kv16_append(dev.view, dk.get(), dv.get(), c.T, c.pos0);
  for (int t = 0; t < c.T; ++t) {
    host.set_row(false, c.pos0 + t, k.data() + t * row);
    host.set_row(true, c.pos0 + t, v.data() + t * row);
  }
  expect_pools_equal(dev, host);
}

TEST(GpuKv16Append, BitExactAgainstReference) {
  WKV_REQUIRE_GPU();
  const unsigned seed = fresh_seed();
  std::printf("seed %u\n", seed);
  const AppendCase cases[] = {
      {1, 8, 64, 1, 0},    {2, 64, 16, 7, 5},      {4, 128, 64, 33, 61}, {3, 24, 5, 17, 9},
      {8, 64, 64, 130, 0}, {32, 128, 64, 5, 4094}, {2, 128, 1, 9, 3},    {5, 40, 7, 64, 100},
  };
  unsigned i = 0;
  for (const auto& c : cases) run_append_case(c, seed + i++);
}

TEST(GpuKv16Append, AppendAtMatchesAppendAndIgnoresOutOfRange) {
  WKV_REQUIRE_GPU();
  const unsigned seed = fresh_seed();
  std::printf("seed %u\n", seed);
  std::mt19937 rng(seed);
  const int Hkv = 4, D = 64, P = 16;
  HostKv16Cache host(rng, Hkv, D, 70, P);  // capacity 80
  const size_t row = size_t(Hkv) * D;
  DeviceBuffer<int32_t> pos_dev(1);
  for (int pos : {0, 15, 16, 37, host.capacity() - 1}) {
    SCOPED_TRACE("pos " + std::to_string(pos));
    const auto k = uniform(rng, row, -3.0f, 3.0f), v = uniform(rng, row, -1.0f, 1.0f);
    DeviceBuffer<float> dk(k), dv(v);
    // Reference run: kv16_append at pos on a fresh poisoned copy.
    DeviceKv16Cache a(host), b(host);
    wk::kv16_append(a.view, dk.get(), dv.get(), 1, pos);
    pos_dev.upload({pos});
    wk::kv16_append_at(b.view, dk.get(), dv.get(), pos_dev.get());
    EXPECT_EQ(a.k_pool.download(), b.k_pool.download());
    EXPECT_EQ(a.v_pool.download(), b.v_pool.download());
    HostKv16Cache want = host;
    want.set_row(false, pos, k.data());
    want.set_row(true, pos, v.data());
    expect_pools_equal(b, want);
  }
  // Out of range: nothing is written.
  const auto k = uniform(rng, row, -3.0f, 3.0f), v = uniform(rng, row, -1.0f, 1.0f);
  DeviceBuffer<float> dk(k), dv(v);
  for (int pos : {-1, host.capacity(), host.capacity() + 1, std::numeric_limits<int32_t>::max(),
                  std::numeric_limits<int32_t>::min()}) {
    SCOPED_TRACE("out-of-range pos " + std::to_string(pos));
    DeviceKv16Cache dev(host);
    pos_dev.upload({pos});
    wk::kv16_append_at(dev.view, dk.get(), dv.get(), pos_dev.get());
    expect_pools_equal(dev, host);
  }
}

TEST(GpuKv16Append, RejectsBadArguments) {
  WKV_REQUIRE_GPU();
  std::mt19937 rng(1);
  HostKv16Cache host(rng, 2, 64, 64, 16);  // capacity 64
  DeviceKv16Cache dev(host);
  DeviceBuffer<float> x(size_t(100) * 2 * 64);
  DeviceBuffer<int32_t> pos(std::vector<int32_t>{0});
  EXPECT_THROW(wk::kv16_append(dev.view, x.get(), x.get(), -1, 0), std::invalid_argument);
  EXPECT_THROW(wk::kv16_append(dev.view, x.get(), x.get(), 1, -1), std::invalid_argument);
  EXPECT_THROW(wk::kv16_append(dev.view, x.get(), x.get(), 2, 63), std::invalid_argument);  // beyond capacity
  EXPECT_THROW(wk::kv16_append(dev.view, nullptr, x.get(), 1, 0), std::invalid_argument);
  EXPECT_THROW(wk::kv16_append(dev.view, x.get(), nullptr, 1, 0), std::invalid_argument);
  EXPECT_NO_THROW(wk::kv16_append(dev.view, nullptr, nullptr, 0, 0));  // T = 0 is a no-op
  EXPECT_THROW(wk::kv16_append_at(dev.view, x.get(), x.get(), nullptr), std::invalid_argument);
  EXPECT_THROW(wk::kv16_append_at(dev.view, nullptr, x.get(), pos.get()), std::invalid_argument);
  auto bad = [&](auto mutate) {
    wk::Kv16LayerCache c = dev.view;
    mutate(c);
    EXPECT_THROW(wk::kv16_append(c, x.get(), x.get(), 1, 0), std::invalid_argument);
    EXPECT_THROW(wk::kv16_append_at(c, x.get(), x.get(), pos.get()), std::invalid_argument);
    EXPECT_THROW(wk::validate_kv16_cache(c, 0, "test"), std::invalid_argument);
  };
  bad([](wk::Kv16LayerCache& c) { c.k_pool = nullptr; });
  bad([](wk::Kv16LayerCache& c) { c.v_pool = nullptr; });
  bad([](wk::Kv16LayerCache& c) { c.page_table = nullptr; });
  bad([](wk::Kv16LayerCache& c) { c.n_pages = 0; });
  bad([](wk::Kv16LayerCache& c) { c.page_size = 0; });
  bad([](wk::Kv16LayerCache& c) { c.n_kv_heads = 0; });
  bad([](wk::Kv16LayerCache& c) { c.head_dim = 12; });
  bad([](wk::Kv16LayerCache& c) { c.head_dim = 0; });
  EXPECT_NO_THROW(wk::validate_kv16_cache(dev.view, 64, "test"));
  EXPECT_THROW(wk::validate_kv16_cache(dev.view, 65, "test"), std::invalid_argument);
  try {
    wk::validate_kv16_cache(dev.view, 65, "my_op");
    ADD_FAILURE() << "no throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("my_op"), std::string::npos) << e.what();
  }
  // The pools were never written by the rejected calls.
  expect_pools_equal(dev, host);
}

}  // namespace
