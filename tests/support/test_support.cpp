#include "test_support.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace wkv::test {

std::string shared_path(const std::string& rel) {
  return (fs::path(WKV_SHARED_DIR) / rel).lexically_normal().string();
}

bool shared_exists(const std::string& rel) { return fs::exists(shared_path(rel)); }

std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "test";
  for (char& c : name)
    if (c == '/') c = '_';
  fs::path dir = fs::path(WKV_TEST_TMP_DIR) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<float> load_npy_f32(const std::string& path, std::vector<int64_t>* shape) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error(path + ": not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    header_start = 10;
  } else {
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    header_start = 12;
  }
  const std::string header = bytes.substr(header_start, header_len);
  if (header.find("'<f4'") == std::string::npos) throw std::runtime_error(path + ": expected dtype <f4");
  if (header.find("'fortran_order': False") == std::string::npos) throw std::runtime_error(path + ": expected C order");
  const size_t lp = header.find('('), rp = header.find(')');
  shape->clear();
  std::stringstream dims(header.substr(lp + 1, rp - lp - 1));
  std::string item;
  size_t count = 1;
  while (std::getline(dims, item, ',')) {
    if (item.find_first_not_of(' ') == std::string::npos) continue;
    shape->push_back(std::stoll(item));
    count *= static_cast<size_t>(shape->back());
  }
  const size_t data_start = header_start + header_len;
  if (bytes.size() != data_start + count * 4) throw std::runtime_error(path + ": size does not match shape");
  std::vector<float> out(count);
  std::memcpy(out.data(), bytes.data() + data_start, count * 4);
  return out;
}

double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(d <= m)) m = d;  // NaN propagates as "worse"
  }
  return m;
}

}  // namespace wkv::test
