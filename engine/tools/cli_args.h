// Minimal argument parsing for the `wkv` tool: positionals plus --flag VALUE / --flag=VALUE / switches.
#pragma once

#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace wkv::cli {

// Thrown for usage errors (exit code 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Args {
 public:
  // `with_value`: flags that take a value; `switches`: flags that do not. Aliases map short → long.
  Args(const std::vector<std::string>& argv, const std::set<std::string>& with_value,
       const std::set<std::string>& switches, const std::map<std::string, std::string>& aliases = {});

  const std::vector<std::string>& positional() const { return positional_; }
  bool has(const std::string& flag) const { return values_.count(flag) > 0; }
  std::string str(const std::string& flag, const std::string& fallback = "") const;
  int integer(const std::string& flag, int fallback, int lo, int hi) const;
  double number(const std::string& flag, double fallback, double lo, double hi) const;
  // All values of a repeatable flag, in order.
  std::vector<std::string> all(const std::string& flag) const;

 private:
  std::vector<std::string> positional_;
  std::multimap<std::string, std::string> values_;
};

}  // namespace wkv::cli
