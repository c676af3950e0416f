// GPU smoke test: a kernel built for this architecture launches and writes every element.
// Skipped (loudly) on machines without a CUDA device.
#include <gtest/gtest.h>

#include <vector>

#include "gpu_test_util.h"
#include "wkv_kernels/device.h"

namespace {

TEST(GpuDevice, KernelLaunchWritesEveryElement) {
  const auto info = wkv::kernels::query_device();
  if (!info.available) GTEST_SKIP() << "GPU test skipped: " << info.reason;
  std::printf("device: %s (sm_%d%d, %d SMs, %.1f GiB)\n", info.name.c_str(), info.compute_major, info.compute_minor,
              info.multiprocessors, info.total_bytes / 1073741824.0);
  const int n = 100003;  // odd size: the tail block must be handled
  std::vector<float> out(n, -12345.0f);  // poisoned
  wkv::kernels::smoke_fill(out.data(), n, 0.5f);
  for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], 0.5f * i) << i;
}

// The copy bandwidth `wkv bench` compares decode throughput with: a plausible figure for any CUDA GPU
// (H200: ~4.3 TB/s read + write) and stable between two measurements.
TEST(GpuDevice, CopyBandwidthIsMeasured) {
  WKV_REQUIRE_GPU();
  const double a = wkv::kernels::measure_device_copy_bandwidth(), b = wkv::kernels::measure_device_copy_bandwidth();
  std::printf("device copy bandwidth %.1f / %.1f GB/s (read + write)\n", a / 1e9, b / 1e9);
  EXPECT_GT(a, 50e9);
  EXPECT_LT(a, 50e12);
  EXPECT_NEAR(a / b, 1.0, 0.2);
}

}  // namespace
