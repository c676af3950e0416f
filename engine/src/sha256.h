// SHA-256 (FIPS 180-4), for the provenance of .wkvq files (the source checkpoint's hash).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace wkv {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::string hex_digest();  // finalizes; 64 lowercase hex digits

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// Hash of a whole file (throws wkv::Error naming the path if it cannot be read).
std::string sha256_file(const std::string& path);

}  // namespace wkv
