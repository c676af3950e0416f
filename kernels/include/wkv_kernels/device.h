// CUDA device discovery and error checking for the kernels library.
//
// This header is plain C++ (no CUDA types), so the engine can include it from its .cpp files.
#pragma once

#include <cstddef>
#include <string>

namespace wkv::kernels {

struct DeviceInfo {
  bool available = false;       // a usable CUDA device exists
  std::string reason;           // why not, when !available (driver missing, no device, …)
  int device = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  int multiprocessors = 0;
  size_t total_bytes = 0;       // cudaMemGetInfo
  size_t free_bytes = 0;
  int runtime_version = 0;      // e.g. 13000
  int driver_version = 0;
};

// Queries device 0 (never throws: a machine without a GPU gives available = false and a reason).
DeviceInfo query_device();

// Fills `out[0..n)` with i·scale on the device and copies it back: a minimal launch used by the
// GPU smoke test to prove that kernels built for this architecture run. Throws std::runtime_error
// with file:line and the CUDA error string on failure.
void smoke_fill(float* out, int n, float scale);

// Device-to-device copy bandwidth in bytes moved (read + written) per second: the median of 5 timed
// cudaMemcpy copies of `bytes` (CUDA events) after one warm-up copy, far beyond the L2. This is the
// "measured copy bandwidth" that decode throughput is compared with. Throws std::runtime_error on CUDA
// errors (including too little free memory for two buffers of `bytes`).
double measure_device_copy_bandwidth(size_t bytes = size_t(512) << 20);

}  // namespace wkv::kernels
