#include "cli_args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace wkv::cli {

Args::Args(const std::vector<std::string>& argv, const std::set<std::string>& with_value,
           const std::set<std::string>& switches, const std::map<std::string, std::string>& aliases) {
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string a = argv[i];
    if (a.size() < 2 || a[0] != '-' || a == "--") {
      if (a == "--") {
        positional_.insert(positional_.end(), argv.begin() + i + 1, argv.end());
        break;
      }
      positional_.push_back(a);
      continue;
    }
    std::string value;
    bool has_inline = false;
    if (const size_t eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    if (auto it = aliases.find(a); it != aliases.end()) a = it->second;
    if (switches.count(a)) {
      if (has_inline) throw UsageError("option " + a + " takes no value");
      values_.emplace(a, "1");
    } else if (with_value.count(a)) {
      if (!has_inline) {
        if (i + 1 >= argv.size()) throw UsageError("option " + a + " needs a value");
        value = argv[++i];
      }
      values_.emplace(a, value);
    } else {
      throw UsageError("unknown option " + a);
    }
  }
}

std::string Args::str(const std::string& flag, const std::string& fallback) const {
  auto range = values_.equal_range(flag);
  if (range.first == range.second) return fallback;
  return std::prev(range.second)->second;  // the last one wins
}

std::vector<std::string> Args::all(const std::string& flag) const {
  std::vector<std::string> out;
  for (auto [it, end] = values_.equal_range(flag); it != end; ++it) out.push_back(it->second);
  return out;
}

double Args::number(const std::string& flag, double fallback, double lo, double hi) const {
  if (!has(flag)) return fallback;
  const std::string s = str(flag);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || errno != 0 || !std::isfinite(v))
    throw UsageError("option " + flag + " expects a number, got '" + s + "'");
  if (v < lo || v > hi)
    throw UsageError("option " + flag + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + s);
  return v;
}

int Args::integer(const std::string& flag, int fallback, int lo, int hi) const {
  if (!has(flag)) return fallback;
  const std::string s = str(flag);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || errno != 0) throw UsageError("option " + flag + " expects an integer, got '" + s + "'");
  if (v < lo || v > hi)
    throw UsageError("option " + flag + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + s);
  return static_cast<int>(v);
}

}  // namespace wkv::cli
