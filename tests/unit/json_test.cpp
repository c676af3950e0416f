// Tests for the strict JSON reader/writer (engine/src/json.h).
#include "json.h"

#include <gtest/gtest.h>

#include <clocale>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string>

#include "test_support.h"
#include "wkv/error.h"

using wkv::Error;
using wkv::ErrorCode;
using namespace wkv::json;

namespace {

// Parses `text` expecting a format error whose message contains every piece of `parts`.
void expect_parse_error(const std::string& text, std::initializer_list<std::string> parts) {
  try {
    parse(text, "input.json");
    ADD_FAILURE() << "no error for: " << text;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::format) << text;
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind("input.json: ", 0), 0u) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace

TEST(Json, ParsesScalars) {
  EXPECT_TRUE(parse("null", "t").is_null());
  EXPECT_EQ(parse("true", "t").as_bool(), true);
  EXPECT_EQ(parse("false", "t").as_bool(), false);
  EXPECT_EQ(parse("0", "t").as_number(), 0.0);
  EXPECT_EQ(parse("-0", "t").as_number(), 0.0);
  EXPECT_TRUE(std::signbit(parse("-0", "t").as_number()));
  EXPECT_EQ(parse("42", "t").as_int(), 42);
  EXPECT_EQ(parse("-17", "t").as_int(), -17);
  EXPECT_EQ(parse("3.25", "t").as_number(), 3.25);
  EXPECT_EQ(parse("-1.5e3", "t").as_number(), -1500.0);
  EXPECT_EQ(parse("2E-2", "t").as_number(), 0.02);
  EXPECT_EQ(parse("1e+2", "t").as_number(), 100.0);
  EXPECT_EQ(parse("0.1", "t").as_number(), 0.1);
  EXPECT_EQ(parse("1e-400", "t").as_number(), 0.0);  // underflow rounds to zero, like strtod
  EXPECT_EQ(parse("9007199254740992", "t").as_int(), 9007199254740992LL);  // 2^53
  EXPECT_EQ(parse("\"hi\"", "t").as_string(), "hi");
  EXPECT_EQ(parse(" \t\r\n 7 \n", "t").as_int(), 7);  // surrounding whitespace allowed
}

TEST(Json, ParsesArraysAndObjects) {
  const Value v = parse(R"({"b": [1, 2.5, "x", null, true, [], {}], "a": {"k": false}, "": 3})", "t");
  ASSERT_TRUE(v.is_object());
  const Object& o = v.as_object();
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].first, "b");  // insertion order, not sorted
  EXPECT_EQ(o[1].first, "a");
  EXPECT_EQ(o[2].first, "");
  const Array& b = v.at("b").as_array();
  ASSERT_EQ(b.size(), 7u);
  EXPECT_EQ(b[0].as_int(), 1);
  EXPECT_EQ(b[1].as_number(), 2.5);
  EXPECT_EQ(b[2].as_string(), "x");
  EXPECT_TRUE(b[3].is_null());
  EXPECT_TRUE(b[4].as_bool());
  EXPECT_TRUE(b[5].as_array().empty());
  EXPECT_TRUE(b[6].as_object().empty());
  EXPECT_FALSE(v.at("a").at("k").as_bool());
  EXPECT_EQ(v.at("").as_int(), 3);
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_EQ(b[0].find("x"), nullptr);  // not an object
}

TEST(Json, StringEscapes) {
  EXPECT_EQ(parse(R"("a\"b\\c\/d\be\ff\ng\rh\ti")", "t").as_string(), "a\"b\\c/d\be\ff\ng\rh\ti");
  EXPECT_EQ(parse(R"("\u0041\u00e9\u20AC")", "t").as_string(), "A\xC3\xA9\xE2\x82\xAC");  // A é €
  EXPECT_EQ(parse(R"("\u0000x")", "t").as_string(), std::string("\0x", 2));
  // U+1F600 as a surrogate pair → 4-byte UTF-8 F0 9F 98 80.
  EXPECT_EQ(parse(R"("\ud83d\ude00")", "t").as_string(), "\xF0\x9F\x98\x80");
  // U+10FFFF, the largest code point: DBFF DFFF → F4 8F BF BF.
  EXPECT_EQ(parse(R"("\uDBFF\uDFFF")", "t").as_string(), "\xF4\x8F\xBF\xBF");
  // Raw UTF-8 passes through.
  EXPECT_EQ(parse("\"h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80\"", "t").as_string(),
            "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80");
}

TEST(Json, TypedAccessorErrors) {
  const Value v = parse(R"({"n": 1.5, "s": "x", "big": 1e30, "neg": -3})", "t");
  try {
    v.at("s").as_number("config.json: hidden_size");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::format);
    EXPECT_NE(std::string(e.what()).find("config.json: hidden_size"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("a number"), std::string::npos);
  }
  EXPECT_THROW(v.at("n").as_int("n"), Error);                  // fractional
  EXPECT_THROW(v.at("big").as_int("big"), Error);              // > INT64_MAX
  EXPECT_THROW(v.at("neg").as_int("neg", 0), Error);           // below lo
  EXPECT_EQ(v.at("neg").as_int("neg", -3, -3), -3);
  EXPECT_THROW(v.at("neg").as_int("neg", -10, -4), Error);     // above hi
  EXPECT_THROW(v.as_array("root"), Error);
  EXPECT_THROW(v.at("s").as_bool(), Error);
  EXPECT_THROW(v.at("s").as_object(), Error);
  try {
    v.at("nope", "config.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::format);
    EXPECT_EQ(std::string(e.what()), "config.json: missing key 'nope'");
  }
}

TEST(Json, DumpCompactAndIndented) {
  Value v;
  v.set("name", "wkv");
  v.set("n", 3);
  v.set("x", 0.5);
  v.set("list", Array{Value(1), Value(nullptr), Value(true)});
  v.set("empty", Object{});
  v.set("n", int64_t{4});  // replaces in place, keeps position
  EXPECT_EQ(v.dump(), R"({"name":"wkv","n":4,"x":0.5,"list":[1,null,true],"empty":{}})");
  EXPECT_EQ(v.dump(2),
            "{\n"
            "  \"name\": \"wkv\",\n"
            "  \"n\": 4,\n"
            "  \"x\": 0.5,\n"
            "  \"list\": [\n"
            "    1,\n"
            "    null,\n"
            "    true\n"
            "  ],\n"
            "  \"empty\": {}\n"
            "}");
}

TEST(Json, DumpNumbers) {
  EXPECT_EQ(Value(1e15).dump(), "1000000000000000");
  EXPECT_EQ(Value(-2.0).dump(), "-2");
  EXPECT_EQ(Value(int64_t{-9007199254740993LL}).dump(), "-9007199254740992");  // nearest double
  EXPECT_EQ(Value(uint64_t{22036912}).dump(), "22036912");
  EXPECT_EQ(Value(0.1).dump(), "0.10000000000000001");  // 17 significant digits
  EXPECT_EQ(Value(1e300).dump(), "1.0000000000000001e+300");
  EXPECT_EQ(Value(std::nan("")).dump(), "null");  // JSON has no NaN
}

TEST(Json, DumpEscapesStrings) {
  const std::string s = std::string("q\"b\\s/\b\f\n\r\t\x01\x1f", 13) + std::string(1, '\0') + "\xC3\xA9";
  EXPECT_EQ(Value(s).dump(), "\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\\u0000\xC3\xA9\"");
  EXPECT_EQ(parse(Value(s).dump(), "t").as_string(), s);
}

TEST(Json, RoundTrip) {
  const std::string text =
      R"({"a":[1,-2,3.5,1e-7,123456789012,-0.001],"s":"\u00e9\ud83d\ude00\n\"","o":{"x":null,"y":[[],[{}]]},)"
      R"("t":true,"f":false,"pi":3.141592653589793,"tiny":5e-324,"max":1.7976931348623157e308})";
  const Value v = parse(text, "t");
  for (int indent : {-1, 0, 2, 4}) {
    const Value w = parse(v.dump(indent), "dump");
    EXPECT_EQ(w.dump(), v.dump()) << indent;
  }
  // Numbers survive exactly.
  const Value w = parse(v.dump(), "dump");
  EXPECT_EQ(w.at("pi").as_number(), 3.141592653589793);
  EXPECT_EQ(w.at("tiny").as_number(), 5e-324);
  EXPECT_EQ(w.at("max").as_number(), std::numeric_limits<double>::max());
  EXPECT_EQ(w.at("a").as_array()[3].as_number(), 1e-7);
  EXPECT_EQ(w.at("s").as_string(), "\xC3\xA9\xF0\x9F\x98\x80\n\"");
}

TEST(Json, CopiesAreIndependent) {
  Value a = parse(R"({"k":[1]})", "t");
  Value b = a;
  b.set("k", 2);
  b.set("new", "x");
  EXPECT_EQ(a.dump(), R"({"k":[1]})");
  EXPECT_EQ(b.dump(), R"({"k":2,"new":"x"})");
  Value arr = Array{Value(1)};
  Value arr2 = arr;
  arr2.as_array_mut().emplace_back(2);
  EXPECT_EQ(arr.dump(), "[1]");
  EXPECT_EQ(arr2.dump(), "[1,2]");
  Value num = 3;
  EXPECT_THROW(num.set("k", 1), Error);
  EXPECT_THROW(num.as_object_mut(), Error);
}

TEST(Json, MalformedInputs) {
  expect_parse_error("", {"unexpected end", "at byte 0"});
  expect_parse_error("   ", {"at byte 3"});
  expect_parse_error("{", {"unterminated object"});
  expect_parse_error(R"({"a":1)", {"unterminated object", "at byte 6"});
  expect_parse_error(R"({"a")", {"expected ':'"});
  expect_parse_error(R"({"a":})", {"unexpected character '}'", "at byte 5"});
  expect_parse_error("[1,2", {"unterminated array"});
  expect_parse_error(R"("abc)", {"unterminated string", "at byte 0"});
  expect_parse_error("[1,2,]", {"trailing comma in array", "at byte 5"});
  expect_parse_error(R"({"a":1,})", {"trailing comma in object", "at byte 7"});
  expect_parse_error("[1 2]", {"expected ',' or ']'", "at byte 3"});
  expect_parse_error(R"({"a" 1})", {"expected ':'"});
  expect_parse_error(R"({1:2})", {"expected a string key"});
  expect_parse_error(R"({'a':1})", {"expected a string key"});
  expect_parse_error(R"("\x")", {"invalid escape '\\x'", "at byte 1"});
  expect_parse_error(R"("\u12G4")", {"invalid hex digit"});
  expect_parse_error(R"("\u12")", {"\\u escape"});
  expect_parse_error(R"("\ud83d")", {"unpaired high surrogate"});
  expect_parse_error(R"("\ud83dx")", {"unpaired high surrogate"});
  expect_parse_error(R"("\ud83d\u0041")", {"unpaired high surrogate"});
  expect_parse_error(R"("\ude00")", {"unpaired low surrogate"});
  expect_parse_error("\"a\tb\"", {"control character", "at byte 2"});
  expect_parse_error("\"\xC3\"", {"UTF-8"});            // truncated sequence
  expect_parse_error("\"\xC0\xAF\"", {"UTF-8"});        // overlong '/'
  expect_parse_error("\"\xED\xA0\x80\"", {"UTF-8"});    // encoded surrogate
  expect_parse_error("\"\xFF\"", {"UTF-8"});
  expect_parse_error(R"({"a":1,"a":2})", {"duplicate key 'a'", "at byte 7"});
  expect_parse_error("tru", {"invalid literal"});
  expect_parse_error("nul", {"invalid literal"});
  expect_parse_error("True", {"unexpected character 'T'"});
  expect_parse_error("NaN", {"unexpected character 'N'"});
  expect_parse_error("1 2", {"unexpected data after", "at byte 2"});
  expect_parse_error("{} x", {"unexpected data after", "at byte 3"});
  expect_parse_error(std::string("{}\0", 3), {"unexpected data after", "at byte 2"});
  expect_parse_error("[1]]", {"unexpected data after", "at byte 3"});
  expect_parse_error(std::string("\0", 1), {"0x00"});
}

TEST(Json, MalformedNumbers) {
  expect_parse_error("01", {"leading zero", "at byte 0"});
  expect_parse_error("-01", {"leading zero"});
  expect_parse_error("1.", {"after '.'"});
  expect_parse_error(".5", {"unexpected character '.'"});
  expect_parse_error("+1", {"unexpected character '+'"});
  expect_parse_error("-", {"expected a digit"});
  expect_parse_error("1e", {"exponent"});
  expect_parse_error("1e+", {"exponent"});
  expect_parse_error("0x10", {"unexpected data after"});
  expect_parse_error("Infinity", {"unexpected character 'I'"});
  expect_parse_error("1e400", {"number out of range", "at byte 0"});
  expect_parse_error("[-1e999]", {"number out of range", "at byte 1"});
}

TEST(Json, DepthLimit) {
  // 128 nested arrays are allowed, 129 are not.
  const std::string ok = std::string(128, '[') + std::string(128, ']');
  EXPECT_NO_THROW(parse(ok, "t"));
  expect_parse_error(std::string(129, '[') + std::string(129, ']'), {"nesting deeper than 128", "at byte 128"});
  std::string objs;
  for (int i = 0; i < 129; ++i) objs += "{\"a\":";
  objs += "1" + std::string(129, '}');
  expect_parse_error(objs, {"nesting deeper than 128"});
  // A hostile input far deeper than the limit fails cleanly instead of overflowing the stack.
  expect_parse_error(std::string(1000000, '['), {"nesting deeper than 128"});
}

TEST(Json, ParseFile) {
  const std::string dir = wkv::test::temp_dir();
  const std::string good = dir + "/config.json";
  wkv::test::write_file(good, "{\"hidden_size\": 256,\n \"name\": \"ref\"}\n");
  const Value v = parse_file(good);
  EXPECT_EQ(v.at("hidden_size").as_int(), 256);

  const std::string bad = dir + "/bad.json";
  wkv::test::write_file(bad, "{\"a\": [1,]}");
  try {
    parse_file(bad);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::format);
    EXPECT_EQ(std::string(e.what()).rfind(bad + ": ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("at byte 9"), std::string::npos) << e.what();
  }

  const std::string missing = dir + "/missing.json";
  try {
    parse_file(missing);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos);
  }
  try {
    parse_file(dir);  // a directory: opens, but cannot be read
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos);
  }
}

TEST(Json, ParsesSharedConfig) {
  WKV_REQUIRE_SHARED("models/ref-a/config.json");
  const Value v = parse_file(wkv::test::shared_path("models/ref-a/config.json"));
  ASSERT_TRUE(v.is_object());
  EXPECT_FALSE(v.as_object().empty());
}

TEST(Json, IndependentOfCLocale) {
  // The Qt app calls setlocale(LC_ALL, ""); numbers must still use '.' both ways.
  const std::string saved = std::setlocale(LC_NUMERIC, nullptr);
  if (!std::setlocale(LC_NUMERIC, "de_DE.UTF-8") && !std::setlocale(LC_NUMERIC, "de_DE"))
    GTEST_SKIP() << "no de_DE locale installed";
  const double parsed = parse("1.5", "t").as_number();
  const std::string dumped = Value(0.25).dump();
  std::setlocale(LC_NUMERIC, saved.c_str());
  EXPECT_EQ(parsed, 1.5);
  EXPECT_EQ(dumped, "0.25");
}
