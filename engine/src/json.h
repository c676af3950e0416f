// A small, strict JSON reader and writer (RFC 8259) for config.json, safetensors headers,
// golden.json and .wkvq metadata.
//
// Strict on purpose: the inputs are files we must validate (safetensors headers come from untrusted
// downloads), so trailing garbage, unterminated strings, bad escapes, duplicate keys, nesting deeper
// than 128 and numbers that do not parse are all errors. Errors are wkv::Error(ErrorCode::format)
// whose message starts with the caller-supplied source name and gives the byte offset.
//
// Objects keep their keys in insertion order (safetensors writers and humans reading `wkv info`
// both prefer the file's own order).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace wkv::json {

class Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // insertion order, unique keys

class Value {
 public:
  enum class Type { null, boolean, number, string, array, object };

  Value() = default;  // null
  Value(std::nullptr_t) {}
  Value(bool b) : v_(b) {}
  Value(double d) : v_(d) {}
  Value(int i) : v_(static_cast<double>(i)) {}
  Value(int64_t i) : v_(static_cast<double>(i)) {}
  Value(uint64_t i) : v_(static_cast<double>(i)) {}
  Value(const char* s) : v_(std::string(s)) {}
  Value(std::string s) : v_(std::move(s)) {}
  Value(Array a) : v_(std::make_shared<Array>(std::move(a))) {}
  Value(Object o) : v_(std::make_shared<Object>(std::move(o))) {}

  Type type() const;
  bool is_null() const { return type() == Type::null; }
  bool is_bool() const { return type() == Type::boolean; }
  bool is_number() const { return type() == Type::number; }
  bool is_string() const { return type() == Type::string; }
  bool is_array() const { return type() == Type::array; }
  bool is_object() const { return type() == Type::object; }

  // Typed accessors throw wkv::Error(format) naming `what` when the type is wrong.
  bool as_bool(std::string_view what = "value") const;
  double as_number(std::string_view what = "value") const;
  // Integral number in [lo, hi]; a fractional or out-of-range number is an error.
  int64_t as_int(std::string_view what = "value", int64_t lo = INT64_MIN, int64_t hi = INT64_MAX) const;
  const std::string& as_string(std::string_view what = "value") const;
  const Array& as_array(std::string_view what = "value") const;
  const Object& as_object(std::string_view what = "value") const;
  Array& as_array_mut();
  Object& as_object_mut();

  // Object lookup: nullptr if absent (or if this is not an object).
  const Value* find(std::string_view key) const;
  // Object lookup that throws format error "`what`: missing key 'key'".
  const Value& at(std::string_view key, std::string_view what = "object") const;
  // Adds or replaces a key of an object value.
  void set(std::string key, Value v);

  // Compact serialization (no spaces) or indented with `indent` spaces. Numbers that are integral and
  // fit in int64 print without a fraction; others print with 17 significant digits (round-trips).
  std::string dump(int indent = -1) const;

 private:
  std::variant<std::monostate, bool, double, std::string, std::shared_ptr<Array>, std::shared_ptr<Object>> v_;
};

// Parses exactly one JSON value surrounded by optional whitespace. `source` names the input in errors
// (e.g. "model.safetensors header" or "/path/config.json").
Value parse(std::string_view text, std::string_view source);

// Reads and parses a file; errors name the path.
Value parse_file(const std::string& path);

}  // namespace wkv::json
