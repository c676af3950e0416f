#include "json.h"

#include <cerrno>
#include <charconv>
#include <clocale>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_set>

#include <locale.h>
#include <stdlib.h>

#include "wkv/error.h"

namespace wkv::json {

namespace {

constexpr int kMaxDepth = 128;

const char* type_name(Value::Type t) {
  switch (t) {
    case Value::Type::null: return "null";
    case Value::Type::boolean: return "a boolean";
    case Value::Type::number: return "a number";
    case Value::Type::string: return "a string";
    case Value::Type::array: return "an array";
    case Value::Type::object: return "an object";
  }
  return "?";
}

[[noreturn]] void type_error(std::string_view what, const char* expected, Value::Type got) {
  throw Error(ErrorCode::format,
              std::string(what) + ": expected " + expected + ", got " + type_name(got));
}

// Doubles in [-2^63, 2^63) convert to int64 exactly when integral.
bool fits_int64(double d) { return d >= -9223372036854775808.0 && d < 9223372036854775808.0; }

std::string number_to_string(double d) {
  char buf[64];
  if (!std::isfinite(d)) return "null";  // JSON has no NaN/Inf; JSON.stringify does the same
  if (d == std::trunc(d) && fits_int64(d)) {
    if (d == 0 && std::signbit(d)) return "-0";
    auto r = std::to_chars(buf, buf + sizeof buf, static_cast<int64_t>(d));
    return std::string(buf, r.ptr);
  }
  // to_chars is locale-independent (printf's "%.17g" would print ',' under a German locale).
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::general, 17);
  return std::string(buf, r.ptr);
}

void escape_string(const std::string& s, std::string& out) {
  static const char kHex[] = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through unchanged
        }
    }
  }
  out += '"';
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Parser {
 public:
  Parser(std::string_view text, std::string_view source) : s_(text), source_(source) {}

  Value parse_document() {
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected data after the JSON value");
    return v;
  }

 private:
  std::string_view s_;
  std::string_view source_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const { fail_at(what, pos_); }
  [[noreturn]] void fail_at(const std::string& what, size_t at) const {
    throw Error(ErrorCode::format, std::string(source_) + ": " + what + " at byte " + std::to_string(at));
  }

  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return s_[pos_]; }

  void skip_ws() {
    while (!at_end()) {
      const char c = peek();
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  void expect_literal(std::string_view lit) {
    if (s_.substr(pos_, lit.size()) != lit) fail("invalid literal (expected '" + std::string(lit) + "')");
    pos_ += lit.size();
  }

  Value parse_value(int depth) {
    if (at_end()) fail("unexpected end of input, expected a value");
    switch (peek()) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Value(parse_string());
      case 't': expect_literal("true"); return Value(true);
      case 'f': expect_literal("false"); return Value(false);
      case 'n': expect_literal("null"); return Value();
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return Value(parse_number());
        fail(std::string("unexpected character ") + describe(peek()));
    }
  }

  static std::string describe(char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F) return std::string("'") + c + "'";
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%02X", u);
    return buf;
  }

  Value parse_array(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
    ++pos_;  // '['
    Array arr;
    skip_ws();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return Value(std::move(arr));
    }
    for (;;) {
      skip_ws();
      arr.push_back(parse_value(depth));
      skip_ws();
      if (at_end()) fail("unterminated array");
      if (peek() == ',') {
        ++pos_;
        skip_ws();
        if (!at_end() && peek() == ']') fail("trailing comma in array");
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value(std::move(arr));
      }
      fail("expected ',' or ']' in array, got " + describe(peek()));
    }
  }

  Value parse_object(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
    ++pos_;  // '{'
    Object obj;
    std::unordered_set<std::string> seen;
    skip_ws();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return Value(std::move(obj));
    }
    for (;;) {
      skip_ws();
      if (at_end()) fail("unterminated object");
      if (peek() != '"') {
        if (peek() == '}' && !obj.empty()) fail("trailing comma in object");
        fail("expected a string key in object, got " + describe(peek()));
      }
      const size_t key_at = pos_;
      std::string key = parse_string();
      if (!seen.insert(key).second) fail_at("duplicate key '" + key + "'", key_at);
      skip_ws();
      if (at_end() || peek() != ':') fail("expected ':' after object key");
      ++pos_;
      skip_ws();
      Value v = parse_value(depth);
      obj.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (at_end()) fail("unterminated object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return Value(std::move(obj));
      }
      fail("expected ',' or '}' in object, got " + describe(peek()));
    }
  }

  uint32_t parse_hex4() {
    if (s_.size() - pos_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_];
      uint32_t d;
      if (c >= '0' && c <= '9') d = static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<uint32_t>(c - 'A' + 10);
      else fail("invalid hex digit in \\u escape");
      v = v * 16 + d;
      ++pos_;
    }
    return v;
  }

  // Validates one raw UTF-8 sequence starting at pos_ (RFC 3629: no overlongs, no surrogates, ≤ U+10FFFF)
  // and appends it.
  void copy_utf8(std::string& out) {
    const auto b0 = static_cast<unsigned char>(s_[pos_]);
    size_t len;
    uint32_t cp;
    if (b0 < 0xC2) fail("invalid UTF-8 byte in string");
    if (b0 < 0xE0) len = 2, cp = b0 & 0x1Fu;
    else if (b0 < 0xF0) len = 3, cp = b0 & 0x0Fu;
    else if (b0 < 0xF5) len = 4, cp = b0 & 0x07u;
    else fail("invalid UTF-8 byte in string");
    if (s_.size() - pos_ < len) fail("truncated UTF-8 sequence in string");
    for (size_t i = 1; i < len; ++i) {
      const auto b = static_cast<unsigned char>(s_[pos_ + i]);
      if ((b & 0xC0) != 0x80) fail("invalid UTF-8 sequence in string");
      cp = (cp << 6) | (b & 0x3Fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) fail("overlong UTF-8 sequence in string");
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) fail("invalid UTF-8 code point in string");
    out.append(s_.substr(pos_, len));
    pos_ += len;
  }

  std::string parse_string() {
    const size_t start = pos_;
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail_at("unterminated string", start);
      const auto c = static_cast<unsigned char>(peek());
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("unescaped control character in string");
      if (c >= 0x80) {
        copy_utf8(out);
        continue;
      }
      if (c != '\\') {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const size_t esc_at = pos_;
      ++pos_;
      if (at_end()) fail_at("unterminated string", start);
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail_at("unpaired low surrogate in \\u escape", esc_at);
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate: together one code point.
            if (s_.substr(pos_, 2) != "\\u") fail_at("unpaired high surrogate in \\u escape", esc_at);
            pos_ += 2;
            const uint32_t lo = parse_hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail_at("unpaired high surrogate in \\u escape", esc_at);
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(cp, out);
          break;
        }
        default: fail_at("invalid escape '\\" + std::string(1, e) + "' in string", esc_at);
      }
    }
  }

  // Grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  — checked here because from_chars alone
  // would accept forms like "01", "1." or ".5".
  double parse_number() {
    const size_t start = pos_;
    auto digit = [&] { return !at_end() && peek() >= '0' && peek() <= '9'; };
    if (peek() == '-') ++pos_;
    if (!digit()) fail("invalid number: expected a digit");
    if (peek() == '0') {
      ++pos_;
      if (digit()) fail_at("invalid number: leading zero", start);
    } else {
      while (digit()) ++pos_;
    }
    if (!at_end() && peek() == '.') {
      ++pos_;
      if (!digit()) fail("invalid number: expected a digit after '.'");
      while (digit()) ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!digit()) fail("invalid number: expected a digit in exponent");
      while (digit()) ++pos_;
    }
    // strtod_l with the "C" locale: a Qt app runs with setlocale(LC_ALL, ""), under which plain strtod
    // may expect ',' as the decimal point. Underflow to a subnormal or zero is accepted; overflow is not.
    static const locale_t c_locale = newlocale(LC_ALL_MASK, "C", static_cast<locale_t>(0));
    const std::string token(s_.substr(start, pos_ - start));
    char* end = nullptr;
    const double d = c_locale ? strtod_l(token.c_str(), &end, c_locale) : std::strtod(token.c_str(), &end);
    if (end != token.c_str() + token.size()) fail_at("invalid number", start);
    if (!std::isfinite(d)) fail_at("number out of range", start);
    return d;
  }
};

}  // namespace

Value::Type Value::type() const {
  switch (v_.index()) {
    case 0: return Type::null;
    case 1: return Type::boolean;
    case 2: return Type::number;
    case 3: return Type::string;
    case 4: return Type::array;
    default: return Type::object;
  }
}

bool Value::as_bool(std::string_view what) const {
  if (!is_bool()) type_error(what, "a boolean", type());
  return std::get<bool>(v_);
}

double Value::as_number(std::string_view what) const {
  if (!is_number()) type_error(what, "a number", type());
  return std::get<double>(v_);
}

int64_t Value::as_int(std::string_view what, int64_t lo, int64_t hi) const {
  const double d = as_number(what);
  const bool ok = std::isfinite(d) && d == std::trunc(d) && fits_int64(d) &&
                  static_cast<int64_t>(d) >= lo && static_cast<int64_t>(d) <= hi;
  if (!ok)
    throw Error(ErrorCode::format, std::string(what) + ": expected an integer in [" + std::to_string(lo) +
                                       ", " + std::to_string(hi) + "], got " + number_to_string(d));
  return static_cast<int64_t>(d);
}

const std::string& Value::as_string(std::string_view what) const {
  if (!is_string()) type_error(what, "a string", type());
  return std::get<std::string>(v_);
}

const Array& Value::as_array(std::string_view what) const {
  if (!is_array()) type_error(what, "an array", type());
  return *std::get<std::shared_ptr<Array>>(v_);
}

const Object& Value::as_object(std::string_view what) const {
  if (!is_object()) type_error(what, "an object", type());
  return *std::get<std::shared_ptr<Object>>(v_);
}

// Copies share arrays/objects through shared_ptr; mutation unshares first so Value keeps value semantics.
Array& Value::as_array_mut() {
  if (!is_array()) type_error("value", "an array", type());
  auto& p = std::get<std::shared_ptr<Array>>(v_);
  if (p.use_count() > 1) p = std::make_shared<Array>(*p);
  return *p;
}

Object& Value::as_object_mut() {
  if (!is_object()) type_error("value", "an object", type());
  auto& p = std::get<std::shared_ptr<Object>>(v_);
  if (p.use_count() > 1) p = std::make_shared<Object>(*p);
  return *p;
}

const Value* Value::find(std::string_view key) const {
  if (!is_object()) return nullptr;
  for (const auto& [k, v] : *std::get<std::shared_ptr<Object>>(v_))
    if (k == key) return &v;
  return nullptr;
}

const Value& Value::at(std::string_view key, std::string_view what) const {
  if (!is_object()) type_error(what, "an object", type());
  if (const Value* v = find(key)) return *v;
  throw Error(ErrorCode::format, std::string(what) + ": missing key '" + std::string(key) + "'");
}

void Value::set(std::string key, Value v) {
  if (is_null()) v_ = std::make_shared<Object>();  // building an object up from a default Value
  Object& obj = as_object_mut();
  for (auto& [k, old] : obj) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  obj.emplace_back(std::move(key), std::move(v));
}

namespace {

void dump_value(const Value& v, int indent, int level, std::string& out) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(lvl), ' ');
  };
  switch (v.type()) {
    case Value::Type::null: out += "null"; break;
    case Value::Type::boolean: out += v.as_bool() ? "true" : "false"; break;
    case Value::Type::number: out += number_to_string(v.as_number()); break;
    case Value::Type::string: escape_string(v.as_string(), out); break;
    case Value::Type::array: {
      const Array& a = v.as_array();
      out += '[';
      for (size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        dump_value(a[i], indent, level + 1, out);
      }
      if (!a.empty()) newline(level);
      out += ']';
      break;
    }
    case Value::Type::object: {
      const Object& o = v.as_object();
      out += '{';
      for (size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        newline(level + 1);
        escape_string(o[i].first, out);
        out += indent < 0 ? ":" : ": ";
        dump_value(o[i].second, indent, level + 1, out);
      }
      if (!o.empty()) newline(level);
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string Value::dump(int indent) const {
  std::string out;
  dump_value(*this, indent, 0, out);
  return out;
}

Value parse(std::string_view text, std::string_view source) { return Parser(text, source).parse_document(); }

Value parse_file(const std::string& path) {
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    const int err = errno;
    if (err == ENOENT) throw Error(ErrorCode::not_found, path + ": file not found");
    throw Error(ErrorCode::io, path + ": cannot open: " + std::strerror(err));
  }
  std::string text;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f);
  const int err = errno;
  std::fclose(f);
  if (failed) throw Error(ErrorCode::io, path + ": cannot read: " + std::strerror(err));
  return parse(text, path);
}

}  // namespace wkv::json
