#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string_view>
#include <unordered_set>

#include "wkv/error.h"

namespace wkv {

namespace {

struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::f32, "F32", 4},  {DType::f16, "F16", 2},  {DType::bf16, "BF16", 2}, {DType::i8, "I8", 1},
    {DType::u8, "U8", 1},    {DType::i16, "I16", 2},  {DType::i32, "I32", 4},   {DType::i64, "I64", 8},
    {DType::f64, "F64", 8},  {DType::u16, "U16", 2},  {DType::u32, "U32", 4},   {DType::u64, "U64", 8},
    {DType::boolean, "BOOL", 1},
};

// Valid safetensors dtypes that this engine has no use for: reported as `unsupported`, not `format`.
constexpr const char* kUnsupportedDTypes[] = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string range_str(uint64_t begin, uint64_t end) {
  std::string s = "[";  // built by appending: GCC 12 warns falsely (-Wrestrict) on "[" + to_string(...)
  s += std::to_string(begin);
  s += ", ";
  s += std::to_string(end);
  return s + "]";
}

// numel × element size, or false on uint64 overflow. Any zero dimension makes the product 0 even if
// the other dimensions alone would overflow.
bool checked_nbytes(const std::vector<int64_t>& shape, size_t elem, uint64_t* out) {
  for (int64_t d : shape)
    if (d == 0) {
      *out = 0;
      return true;
    }
  uint64_t n = elem;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  *out = n;
  return true;
}

[[noreturn]] void fail_format(const std::string& msg) { throw Error(ErrorCode::format, msg); }

std::string errno_str(int e) { return std::strerror(e); }

// write(2) may write less than asked (signals, pipes, > 2 GiB requests): loop until done.
bool write_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

const char* dtype_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

size_t dtype_size(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.size;
  return 0;
}

bool dtype_from_name(const std::string& name, DType* out) {
  for (const auto& d : kDTypes) {
    if (name == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated on open: cannot overflow (n × size ≤ file size)
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) throw Error(ErrorCode::not_found, path + ": file not found");
    throw Error(ErrorCode::io, path + ": cannot open: " + errno_str(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(ErrorCode::io, path + ": cannot stat: " + errno_str(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorCode::io, path + ": not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail_format(path + ": file is " + std::to_string(size) +
                " bytes, too small for the 8-byte header length of a safetensors file");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file referenced
  if (map == MAP_FAILED) throw Error(ErrorCode::io, path + ": cannot mmap: " + errno_str(map_errno));

  // Owned from here on: any validation failure below unmaps through the destructor.
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->size_ = size;
  const auto* base = static_cast<const uint8_t*>(map);

  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(base[i]) << (8 * i);
  if (n > kMaxHeaderBytes)
    fail_format(path + ": header length " + std::to_string(n) + " exceeds the 100 MiB limit");
  if (n > size - 8)
    fail_format(path + ": header length " + std::to_string(n) + " exceeds the file size " +
                std::to_string(size) + " minus 8");
  const uint64_t data_start = 8 + n;
  const uint64_t data_size = size - data_start;

  const json::Value header =
      json::parse(std::string_view(reinterpret_cast<const char*>(base) + 8, n), path + " header");
  const json::Object& entries = header.as_object(path + " header");

  // [begin, end) of each tensor relative to the data section, in header order, for the overlap check.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, entry] : entries) {
    if (name == "__metadata__") {
      for (const auto& [k, v] : entry.as_object(path + ": __metadata__"))
        f->metadata_[k] = v.as_string(path + ": __metadata__ '" + k + "'");
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    for (const auto& [field, unused] : entry.as_object(where)) {
      (void)unused;
      if (field != "dtype" && field != "shape" && field != "data_offsets")
        fail_format(where + ": unexpected field '" + field + "'");
    }

    TensorView t;
    t.name = name;
    const std::string& dtype = entry.at("dtype", where).as_string(where + " dtype");
    if (!dtype_from_name(dtype, &t.dtype)) {
      for (const char* u : kUnsupportedDTypes)
        if (dtype == u) throw Error(ErrorCode::unsupported, where + ": dtype '" + dtype + "' is not supported");
      fail_format(where + ": unknown dtype '" + dtype + "'");
    }

    const json::Array& shape = entry.at("shape", where).as_array(where + " shape");
    for (size_t i = 0; i < shape.size(); ++i)
      t.shape.push_back(shape[i].as_int(where + " shape[" + std::to_string(i) + "]", 0));

    const json::Array& offs = entry.at("data_offsets", where).as_array(where + " data_offsets");
    if (offs.size() != 2)
      fail_format(where + ": data_offsets must be [begin, end], got " + std::to_string(offs.size()) + " entries");
    const auto begin = static_cast<uint64_t>(offs[0].as_int(where + " data_offsets[0]", 0));
    const auto end = static_cast<uint64_t>(offs[1].as_int(where + " data_offsets[1]", 0));
    if (begin > end) fail_format(where + ": data_offsets " + range_str(begin, end) + " has begin > end");

    uint64_t nbytes = 0;
    if (!checked_nbytes(t.shape, dtype_size(t.dtype), &nbytes))
      fail_format(where + ": shape " + shape_str(t.shape) + " × " + dtype + " overflows a 64-bit byte count");
    if (nbytes != end - begin)
      fail_format(where + ": shape " + shape_str(t.shape) + " × " + dtype + " = " + std::to_string(nbytes) +
                  " bytes but data_offsets span " + std::to_string(end - begin));
    if (end > data_size)
      fail_format(where + ": data_offsets " + range_str(begin, end) + " extend past the end of the data section (" +
                  std::to_string(data_size) + " bytes; is the file truncated?)");

    t.data = base + data_start + begin;
    t.nbytes = static_cast<size_t>(nbytes);
    spans.emplace_back(begin, end);
    f->index_[t.name] = f->tensors_.size();
    f->tensors_.push_back(std::move(t));
  }

  // Overlap check in offset order. Empty tensors occupy no bytes and cannot overlap anything.
  std::vector<size_t> order;
  for (size_t i = 0; i < spans.size(); ++i)
    if (spans[i].first < spans[i].second) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return spans[a] < spans[b]; });
  size_t widest = SIZE_MAX;  // the tensor reaching furthest so far
  for (size_t i : order) {
    if (widest != SIZE_MAX && spans[i].first < spans[widest].second) {
      const auto& a = f->tensors_[widest];
      const auto& b = f->tensors_[i];
      fail_format(path + ": tensor '" + b.name + "' data_offsets " + range_str(spans[i].first, spans[i].second) +
                  " overlap tensor '" + a.name + "' data_offsets " +
                  range_str(spans[widest].first, spans[widest].second));
    }
    if (widest == SIZE_MAX || spans[i].second > spans[widest].second) widest = i;
  }
  return f;
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  if (const TensorView* t = find(name)) return *t;
  throw Error(ErrorCode::not_found, path_ + ": no tensor named '" + name + "'");
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::unordered_set<std::string> names;
  for (const auto& t : tensors) {
    const std::string where = path + ": tensor '" + t.name + "'";
    if (t.name.empty()) throw Error(ErrorCode::invalid_argument, path + ": empty tensor name");
    if (t.name == "__metadata__") throw Error(ErrorCode::invalid_argument, where + ": reserved name");
    if (!names.insert(t.name).second) throw Error(ErrorCode::invalid_argument, where + ": duplicate name");
    for (int64_t d : t.shape)
      if (d < 0) throw Error(ErrorCode::invalid_argument, where + ": negative dimension in shape " + shape_str(t.shape));
    const size_t elem = dtype_size(t.dtype);
    uint64_t nbytes = 0;
    if (elem == 0) throw Error(ErrorCode::invalid_argument, where + ": invalid dtype");
    if (!checked_nbytes(t.shape, elem, &nbytes) || nbytes != t.nbytes)
      throw Error(ErrorCode::invalid_argument, where + ": shape " + shape_str(t.shape) + " × " + dtype_name(t.dtype) +
                                                   " does not match nbytes " + std::to_string(t.nbytes));
    if (t.nbytes > 0 && t.data == nullptr) throw Error(ErrorCode::invalid_argument, where + ": null data");
  }

  // Data layout: contiguous, no gaps and nothing after the last tensor, because the reference readers
  // (Python/Rust safetensors) reject anything else. Placing tensors by element size, largest first
  // (stable), keeps every tensor aligned to its element size given the 8-aligned data section.
  // The header lists tensors in the caller's order regardless.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].dtype) > dtype_size(tensors[b].dtype);
  });
  std::vector<uint64_t> begin(tensors.size());
  uint64_t offset = 0;
  for (size_t i : order) {
    begin[i] = offset;
    offset += tensors[i].nbytes;
  }
  // Offsets travel as JSON numbers (doubles): exact below 2^53 bytes, far beyond any real file.
  if (offset >= (uint64_t{1} << 53)) throw Error(ErrorCode::invalid_argument, path + ": data section too large");

  json::Object hdr;
  if (!metadata.empty()) {
    json::Object md;
    for (const auto& [k, v] : metadata) md.emplace_back(k, json::Value(v));
    hdr.emplace_back("__metadata__", json::Value(std::move(md)));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    json::Array shape;
    for (int64_t d : t.shape) shape.emplace_back(d);
    json::Object e;
    e.emplace_back("dtype", json::Value(dtype_name(t.dtype)));
    e.emplace_back("shape", json::Value(std::move(shape)));
    e.emplace_back("data_offsets", json::Value(json::Array{json::Value(begin[i]), json::Value(begin[i] + t.nbytes)}));
    hdr.emplace_back(t.name, json::Value(std::move(e)));
  }
  std::string header = json::Value(std::move(hdr)).dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // data section starts 8-aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(ErrorCode::io, tmp + ": cannot create: " + errno_str(errno));
  auto fail = [&](const char* what) {
    const int e = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::io, tmp + ": " + what + ": " + errno_str(e));
  };
  if (!write_all(fd, len, sizeof len) || !write_all(fd, header.data(), header.size())) fail("write failed");
  for (size_t i : order)
    if (!write_all(fd, tensors[i].data, tensors[i].nbytes)) fail("write failed");
  // fsync before rename: otherwise a power loss can leave the final name pointing at an empty file.
  if (::fsync(fd) != 0) fail("fsync failed");
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::io, tmp + ": close failed: " + errno_str(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw Error(ErrorCode::io, path + ": cannot rename " + tmp + " into place: " + errno_str(e));
  }
}

}  // namespace wkv
