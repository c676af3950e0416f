// Shared by the end-to-end CUDA backend tests: the ref-a prompt, a model loader, and the fixture that skips
// (loudly) without a GPU or without ../shared.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "test_support.h"
#include "wkv/engine.h"
#include "wkv_kernels/device.h"

namespace wkv {

inline const std::vector<TokenId> kPrompt = {1,    3207, 7825, 396, 5737, 354, 309,  260,  691, 285,
                                             1015, 260,  1405, 639, 702,  260, 1405, 8111, 13,  1574};

inline std::shared_ptr<Model> load(const std::string& path, QuantMode mode, BackendKind backend) {
  LoadOptions o;
  o.mode = mode;
  o.backend = backend;
  return Model::load(path, o);
}

class CudaBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto info = kernels::query_device();
    if (!info.available) GTEST_SKIP() << "GPU test skipped: " << info.reason;
    WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  }
};

}  // namespace wkv
