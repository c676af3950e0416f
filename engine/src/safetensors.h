// Safetensors reading (memory-mapped, fully validated) and writing.
//
// File layout: [u64 little-endian N][N bytes JSON header][data]. The header maps tensor names to
// {"dtype": "F16"|"BF16"|"F32"|..., "shape": [..], "data_offsets": [begin, end]} with offsets relative
// to the start of the data section, plus an optional "__metadata__" object of string → string.
//
// Validation on open (each failure is wkv::Error(format) naming the file and the tensor/field):
//   - file at least 8 bytes; N ≤ 100 MiB and 8 + N ≤ file size ("header length" sanity)
//   - header is valid JSON, an object; each entry has exactly dtype/shape/data_offsets of the right types
//   - dtype known (a valid safetensors dtype we do not implement, e.g. F8_E4M3, is `unsupported`);
//     shape entries non-negative integers; element count × dtype size == end − begin
//     (checked without overflow)
//   - 0 ≤ begin ≤ end ≤ data size; tensors do not overlap one another
//   - __metadata__, if present, is an object of strings
// Gaps between tensors and bytes after the last one are tolerated on read (the reference readers are
// stricter; our writer produces what they accept).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "json.h"

namespace wkv {

enum class DType { f32, f16, bf16, i8, u8, i16, i32, i64, f64, u16, u32, u64, boolean };

const char* dtype_name(DType t);       // safetensors spelling: "F32", "F16", "BF16", "I8", "U8", ...
size_t dtype_size(DType t);            // bytes per element
bool dtype_from_name(const std::string& name, DType* out);

struct TensorView {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping; valid while the owning file lives
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws wkv::Error (not_found / io / format).
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // Tensors in header order.
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  // Throws not_found naming the file and the tensor.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: `data` must hold exactly numel × dtype_size bytes.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::f32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a safetensors file: header entries in the given order, header padded with spaces to a
// multiple of 8 so the data section starts 8-aligned; the data section is contiguous (no gaps, as the
// Python/Rust readers require) with tensors placed by element size, largest first (stable), so each
// tensor is aligned to its element size. __metadata__ is written only when non-empty. Writes to
// `path + ".tmp"`, fsyncs, then renames, so a crash never leaves a half-written file under the final
// name. Throws wkv::Error(io / invalid_argument).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace wkv
