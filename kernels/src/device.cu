#include <algorithm>
#include <vector>

#include "cuda_check.h"
#include "wkv_kernels/device.h"

namespace wkv::kernels {

DeviceInfo query_device() {
  DeviceInfo info;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    info.reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error state
    return info;
  }
  if (count == 0) {
    info.reason = "no CUDA device found";
    return info;
  }
  cudaDeviceProp prop{};
  if ((e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
    info.reason = std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e);
    return info;
  }
  info.available = true;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  if (cudaMemGetInfo(&info.free_bytes, &info.total_bytes) != cudaSuccess) cudaGetLastError();
  return info;
}

namespace {
__global__ void fill_kernel(float* out, int n, float scale) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<float>(i) * scale;
}
}  // namespace

void smoke_fill(float* out, int n, float scale) {
  float* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, sizeof(float) * n));
  fill_kernel<<<(n + 255) / 256, 256>>>(d, n, scale);
  WKV_CHECK_LAUNCH();
  const cudaError_t copy = cudaMemcpy(out, d, sizeof(float) * n, cudaMemcpyDeviceToHost);
  cudaFree(d);
  CUDA_CHECK(copy);
}

double measure_device_copy_bandwidth(size_t bytes) {
  void *a = nullptr, *b = nullptr;
  cudaEvent_t t0 = nullptr, t1 = nullptr;
  auto release = [&] {
    if (t0) cudaEventDestroy(t0);
    if (t1) cudaEventDestroy(t1);
    cudaFree(a);
    cudaFree(b);
  };
  try {
    CUDA_CHECK(cudaMalloc(&a, bytes));
    CUDA_CHECK(cudaMalloc(&b, bytes));
    CUDA_CHECK(cudaMemset(a, 1, bytes));
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    CUDA_CHECK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));  // warm-up
    std::vector<double> rates;
    for (int i = 0; i < 5; ++i) {
      CUDA_CHECK(cudaEventRecord(t0));
      CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice));
      CUDA_CHECK(cudaEventRecord(t1));
      CUDA_CHECK(cudaEventSynchronize(t1));
      float ms = 0.0f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
      rates.push_back(2.0 * double(bytes) / (double(ms) * 1e-3));
    }
    release();
    std::sort(rates.begin(), rates.end());
    return rates[rates.size() / 2];
  } catch (...) {
    release();
    throw;
  }
}

}  // namespace wkv::kernels
