// Out of GPU memory, end to end on ref-a. Its own program, run alone (RUN_SERIAL in tests/CMakeLists.txt):
// the test fills the whole GPU, which would break any test running beside it.
#include <cuda_runtime.h>

#include "backend_test_util.h"

namespace wkv {
namespace {

// Device memory taken by the test until destruction: 1 GiB blocks, then halving down to 1 MiB, until
// cudaMalloc refuses (what another process filling the GPU looks like to the engine).
class DeviceMemoryHog {
 public:
  DeviceMemoryHog() {
    for (size_t chunk = size_t(1) << 30; chunk >= (size_t(1) << 20);) {
      void* p = nullptr;
      if (cudaMalloc(&p, chunk) == cudaSuccess) {
        blocks_.push_back(p);
      } else {
        cudaGetLastError();
        chunk /= 2;
      }
    }
  }
  ~DeviceMemoryHog() {
    for (void* p : blocks_) cudaFree(p);
  }
  DeviceMemoryHog(const DeviceMemoryHog&) = delete;
  DeviceMemoryHog& operator=(const DeviceMemoryHog&) = delete;

 private:
  std::vector<void*> blocks_;
};

// Out of GPU memory: a clear error naming the cause, and nothing else broken — the model, an existing
// session and new sessions afterwards work and compute the same logits.
TEST_F(CudaBackend, OutOfMemoryIsAClearErrorAndNothingElseBreaks) {
  auto model = load(test::shared_path("models/ref-a"), QuantMode::w4kv4_rtn, BackendKind::cuda);
  Session before(model);
  before.eval(kPrompt);
  const std::vector<float> expected(before.last_logits().begin(), before.last_logits().end());
  {
    DeviceMemoryHog hog;
    try {
      Session s(model);
      s.eval(kPrompt);
      ADD_FAILURE() << "a session fit into a full GPU";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::out_of_memory) << e.what();
      EXPECT_NE(std::string(e.what()).find("GPU out of memory"), std::string::npos) << e.what();
    }
  }
  Session after(model);
  after.eval(kPrompt);
  EXPECT_EQ(std::vector<float>(after.last_logits().begin(), after.last_logits().end()), expected);
  const TokenId next = 13;
  before.eval(std::span(&next, 1));
  after.eval(std::span(&next, 1));
  EXPECT_EQ(std::vector<float>(after.last_logits().begin(), after.last_logits().end()),
            std::vector<float>(before.last_logits().begin(), before.last_logits().end()));
}

}  // namespace
}  // namespace wkv
