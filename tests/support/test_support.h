// Helpers shared by the tests: locating ../shared, temp dirs, .npy loading, comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace wkv::test {

// Absolute path of `rel` under the shared data folder (../shared beside the checkout).
std::string shared_path(const std::string& rel);
bool shared_exists(const std::string& rel);

// A fresh, empty directory unique to the calling test.
std::string temp_dir();

// Reads a little-endian float32 C-order .npy file; `shape` receives its dimensions.
std::vector<float> load_npy_f32(const std::string& path, std::vector<int64_t>* shape);

// Reads a whole file / writes bytes to a file.
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

// ‖a − b‖₂ / ‖b‖₂ and max |a − b|.
double rel_l2(const float* a, const float* b, size_t n);
double max_abs_diff(const float* a, const float* b, size_t n);

}  // namespace wkv::test

// Skips the current test (loudly) when a shared file is missing.
#define WKV_REQUIRE_SHARED(rel)                                                          \
  do {                                                                                   \
    if (!::wkv::test::shared_exists(rel))                                                \
      GTEST_SKIP() << "shared data missing: " << ::wkv::test::shared_path(rel)           \
                   << " (tests read ../shared beside the checkout; see README)";         \
  } while (0)
