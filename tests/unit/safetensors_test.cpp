// Tests for the safetensors reader/writer (engine/src/safetensors.h).
#include "safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "half.h"
#include "json.h"
#include "test_support.h"
#include "wkv/error.h"

using wkv::DType;
using wkv::Error;
using wkv::ErrorCode;
using wkv::SafetensorsFile;
using wkv::TensorToWrite;

namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

uint64_t read_le64(const std::string& s) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(s[i])) << (8 * i);
  return n;
}

// Builds a safetensors file by hand: declared header length, header text, data bytes.
std::string write_raw(const std::string& name, uint64_t header_len, const std::string& header,
                      const std::string& data) {
  const std::string path = wkv::test::temp_dir() + "/" + name;
  wkv::test::write_file(path, le64(header_len) + header + data);
  return path;
}
std::string write_raw(const std::string& name, const std::string& header, const std::string& data) {
  return write_raw(name, header.size(), header, data);
}

// Opens `path` expecting wkv::Error with `code` and a message containing the file name and `parts`.
void expect_open_error(const std::string& path, ErrorCode code, std::initializer_list<std::string> parts) {
  const std::string file = std::filesystem::path(path).filename().string();
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << "no error for " << file;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), code) << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << "file name missing: " << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

template <typename T>
TensorToWrite tensor(const std::string& name, DType dt, std::vector<int64_t> shape, const std::vector<T>& v) {
  return TensorToWrite{name, dt, std::move(shape), v.data(), v.size() * sizeof(T)};
}

}  // namespace

TEST(Safetensors, DTypeTable) {
  const struct {
    DType t;
    const char* name;
    size_t size;
  } expected[] = {{DType::f32, "F32", 4},  {DType::f16, "F16", 2},  {DType::bf16, "BF16", 2}, {DType::i8, "I8", 1},
                  {DType::u8, "U8", 1},    {DType::i16, "I16", 2},  {DType::i32, "I32", 4},   {DType::i64, "I64", 8},
                  {DType::f64, "F64", 8},  {DType::u16, "U16", 2},  {DType::u32, "U32", 4},   {DType::u64, "U64", 8},
                  {DType::boolean, "BOOL", 1}};
  for (const auto& e : expected) {
    EXPECT_STREQ(wkv::dtype_name(e.t), e.name);
    EXPECT_EQ(wkv::dtype_size(e.t), e.size) << e.name;
    DType back = DType::f32;
    ASSERT_TRUE(wkv::dtype_from_name(e.name, &back)) << e.name;
    EXPECT_EQ(back, e.t);
  }
  DType d;
  EXPECT_FALSE(wkv::dtype_from_name("f32", &d));  // case-sensitive
  EXPECT_FALSE(wkv::dtype_from_name("F8_E4M3", &d));
}

TEST(Safetensors, WriteOpenRoundTrip) {
  const std::string path = wkv::test::temp_dir() + "/rt.safetensors";
  const std::vector<float> f32 = {1.f, -2.5f, 3.25f, 0.f, 1e-8f, -7.f};
  const std::vector<uint16_t> f16 = {wkv::float_to_fp16(1.f), wkv::float_to_fp16(-0.5f), 0x7C00, 0x0001, 0x3555};
  const std::vector<uint16_t> bf16 = {wkv::float_to_bf16(3.f), wkv::float_to_bf16(-1.f)};
  const std::vector<int8_t> i8 = {-128, 0, 127};
  const std::vector<int32_t> i32 = {-2147483647 - 1, 2147483647};
  const std::vector<int64_t> i64 = {-5};
  const std::vector<uint8_t> empty;
  const std::vector<double> f64 = {2.718281828459045};
  const std::vector<uint8_t> boolean = {1, 0};
  const std::vector<TensorToWrite> tensors = {
      tensor("a.f16", DType::f16, {5}, f16),            // 10 bytes: odd multiple of 2
      tensor("b.f32", DType::f32, {2, 3}, f32),
      tensor("c.i8", DType::i8, {3}, i8),
      tensor("d.empty", DType::u8, {0, 4}, empty),     // 0 elements
      tensor("e.bf16", DType::bf16, {1, 1, 2}, bf16),
      tensor("f.i32", DType::i32, {2}, i32),
      tensor("g.scalar", DType::f64, {}, f64),         // rank 0: one element
      tensor("h.i64", DType::i64, {1}, i64),
      tensor("i.bool", DType::boolean, {2}, boolean),
  };
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\xC3\xA9 \"quoted\"\n"}};
  wkv::write_safetensors(path, tensors, meta);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->file_size(), std::filesystem::file_size(path));
  EXPECT_EQ(f->metadata(), meta);
  ASSERT_EQ(f->tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& w = tensors[i];
    const auto& r = f->tensors()[i];  // header order == the order given to the writer
    EXPECT_EQ(r.name, w.name);
    EXPECT_EQ(r.dtype, w.dtype) << w.name;
    EXPECT_EQ(r.shape, w.shape) << w.name;
    EXPECT_EQ(r.nbytes, w.nbytes) << w.name;
    EXPECT_EQ(static_cast<size_t>(r.numel()) * wkv::dtype_size(r.dtype), w.nbytes) << w.name;
    if (w.nbytes) {
      EXPECT_EQ(std::memcmp(r.data, w.data, w.nbytes), 0) << w.name;
    }
    // The mapping is page-aligned, so this checks the offset within the file.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.data) % wkv::dtype_size(r.dtype), 0u) << w.name;
    EXPECT_EQ(f->find(w.name), &r);
    EXPECT_EQ(&f->get(w.name), &r);
  }
  EXPECT_EQ(f->find("nope"), nullptr);
  EXPECT_EQ(f->get("g.scalar").numel(), 1);
  EXPECT_EQ(f->get("d.empty").numel(), 0);
  float back[6];
  std::memcpy(back, f->get("b.f32").data, sizeof back);
  EXPECT_EQ(back[2], 3.25f);

  // Layout as the reference (Python/Rust) readers require it, checked on the raw bytes: header length
  // a multiple of 8 padded with spaces, __metadata__ first, offsets contiguous from 0 to the file end.
  const std::string bytes = wkv::test::read_file(path);
  const uint64_t n = read_le64(bytes);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  const size_t last = header.find_last_not_of(' ');
  EXPECT_EQ(header[last], '}');
  EXPECT_LT(header.size() - 1 - last, 8u);
  EXPECT_EQ(header.rfind("{\"__metadata__\":{\"format\":\"pt\",", 0), 0u) << header;
  const auto h = wkv::json::parse(header, "header");
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (const auto& [k, v] : h.as_object()) {
    if (k == "__metadata__") continue;
    spans.emplace_back(v.at("data_offsets").as_array()[0].as_int(), v.at("data_offsets").as_array()[1].as_int());
  }
  std::sort(spans.begin(), spans.end());
  int64_t expect_begin = 0;
  for (const auto& [b, e] : spans) {
    EXPECT_EQ(b, expect_begin);
    expect_begin = e;
  }
  EXPECT_EQ(static_cast<uint64_t>(expect_begin), bytes.size() - 8 - n);
}

TEST(Safetensors, WriterExactBytes) {
  // Hand-derived: 53-byte header padded to 56 with 3 spaces, then the 2 data bytes; no __metadata__.
  const std::string path = wkv::test::temp_dir() + "/tiny.safetensors";
  const std::vector<uint8_t> data = {7, 9};
  wkv::write_safetensors(path, {tensor("t", DType::u8, {2}, data)});
  const std::string expected = std::string("\x38\0\0\0\0\0\0\0", 8) +
                               R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})" + "   " + "\x07\x09";
  EXPECT_EQ(wkv::test::read_file(path), expected);

  // Overwriting an existing file replaces it.
  const std::vector<uint8_t> more = {1, 2, 3};
  wkv::write_safetensors(path, {tensor("u", DType::u8, {3}, more)}, {{"k", "v"}});
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].name, "u");
  EXPECT_EQ(f->metadata().at("k"), "v");
}

TEST(Safetensors, WriterRejectsBadArguments) {
  const std::string dir = wkv::test::temp_dir();
  const std::string path = dir + "/bad.safetensors";
  const std::vector<float> v = {1.f, 2.f};
  auto expect_invalid = [&](const std::vector<TensorToWrite>& ts, const std::string& part) {
    try {
      wkv::write_safetensors(path, ts);
      ADD_FAILURE() << "no error for " << part;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
    }
  };
  expect_invalid({tensor("w", DType::f32, {3}, v)}, "tensor 'w'");                           // 12 ≠ 8 bytes
  expect_invalid({tensor("w", DType::f16, {2}, v)}, "does not match nbytes 8");              // 4 ≠ 8 bytes
  expect_invalid({tensor("w", DType::f32, {2}, v), tensor("w", DType::f32, {2}, v)}, "duplicate");
  expect_invalid({tensor("w", DType::f32, {-2, -1}, v)}, "negative");
  expect_invalid({tensor("__metadata__", DType::f32, {2}, v)}, "reserved");
  expect_invalid({TensorToWrite{"w", DType::f32, {2}, nullptr, 8}}, "null data");
  EXPECT_FALSE(std::filesystem::exists(path));

  const std::string nodir = dir + "/no/such/dir/out.safetensors";
  try {
    wkv::write_safetensors(nodir, {tensor("w", DType::f32, {2}, v)});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::io);
    EXPECT_NE(std::string(e.what()).find(nodir), std::string::npos) << e.what();
  }
}

TEST(Safetensors, OpensReferenceModel) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  // Expected values read independently from the file with python3 (struct + json).
  auto f = SafetensorsFile::open(wkv::test::shared_path("models/ref-a/model.safetensors"));
  EXPECT_EQ(f->file_size(), 22036912u);
  EXPECT_EQ(f->tensors().size(), 75u);
  ASSERT_EQ(f->metadata().count("format"), 1u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->tensors()[0].name, "lm_head.weight");  // header order
  EXPECT_EQ(f->tensors()[1].name, "model.embed_tokens.weight");

  const auto& head = f->get("lm_head.weight");
  EXPECT_EQ(head.dtype, DType::f16);
  EXPECT_EQ(head.shape, (std::vector<int64_t>{8192, 256}));
  EXPECT_EQ(head.nbytes, 4194304u);

  const auto& q = f->get("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.dtype, DType::f16);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{256, 256}));
  EXPECT_EQ(q.nbytes, 131072u);
  uint16_t first = 0, last = 0;
  std::memcpy(&first, q.data, 2);
  std::memcpy(&last, q.data + q.nbytes - 2, 2);
  EXPECT_EQ(first, 0x21e5);
  EXPECT_EQ(last, 0x9fb9);

  const auto& gate = f->get("model.layers.0.mlp.gate_proj.weight");
  EXPECT_EQ(gate.shape, (std::vector<int64_t>{768, 256}));

  const auto& norm = f->get("model.norm.weight");
  EXPECT_EQ(norm.shape, (std::vector<int64_t>{256}));
  uint16_t n0[4];
  std::memcpy(n0, norm.data, sizeof n0);
  EXPECT_EQ(n0[0], 0x3fe9);
  EXPECT_EQ(n0[3], 0x3fae);
  // model.norm.weight is at data_offsets [22028288, 22028800], header 8104 bytes.
  EXPECT_EQ(norm.data, head.data + 22028288);

  try {
    f->get("model.layers.99.nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::not_found);
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("'model.layers.99.nope'"), std::string::npos);
  }
}

TEST(Safetensors, MissingFileAndDirectory) {
  const std::string dir = wkv::test::temp_dir();
  expect_open_error(dir + "/missing.safetensors", ErrorCode::not_found, {"not found"});
  expect_open_error(dir, ErrorCode::io, {"not a regular file"});
}

TEST(Safetensors, HeaderLengthErrors) {
  const std::string dir = wkv::test::temp_dir();
  const std::string path0 = dir + "/empty.safetensors";
  wkv::test::write_file(path0, "");
  expect_open_error(path0, ErrorCode::format, {"is 0 bytes", "header length"});
  const std::string path4 = dir + "/four.safetensors";
  wkv::test::write_file(path4, std::string("\x10\0\0\0", 4));
  expect_open_error(path4, ErrorCode::format, {"is 4 bytes"});
  expect_open_error(write_raw("huge.safetensors", uint64_t{1} << 63, "{}", ""), ErrorCode::format,
                    {"header length 9223372036854775808", "100 MiB"});
  expect_open_error(write_raw("max.safetensors", UINT64_MAX, "{}", ""), ErrorCode::format,
                    {"header length 18446744073709551615"});
  expect_open_error(write_raw("past.safetensors", 1000, "{}", "0123456789"), ErrorCode::format,
                    {"header length 1000", "exceeds the file size 20"});
  // Just under the limit but larger than the file.
  expect_open_error(write_raw("limit.safetensors", 100ull << 20, "{}", ""), ErrorCode::format,
                    {"exceeds the file size"});
  // Exactly 8 bytes with N = 0: an empty header is not JSON.
  expect_open_error(write_raw("zero.safetensors", "", ""), ErrorCode::format, {});
}

TEST(Safetensors, HeaderJsonErrors) {
  expect_open_error(write_raw("notjson.safetensors", "{not json}", ""), ErrorCode::format,
                    {"notjson.safetensors header", "at byte 1"});
  expect_open_error(write_raw("array.safetensors", "[1, 2]", ""), ErrorCode::format, {"expected an object"});
  expect_open_error(write_raw("garbage.safetensors", "{} {}", ""), ErrorCode::format, {"unexpected data after"});
  expect_open_error(write_raw("nul.safetensors", std::string("{}\0\0", 4), ""), ErrorCode::format,
                    {"unexpected data after"});
  expect_open_error(write_raw("dup.safetensors",
                              R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                              R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                              "ab"),
                    ErrorCode::format, {"duplicate key 'w'"});
  // Header padded with trailing spaces (as writers do) is fine; an empty object is a valid, empty file.
  auto f = SafetensorsFile::open(write_raw("spaces.safetensors", "{}      ", ""));
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
}

TEST(Safetensors, TensorEntryErrors) {
  const std::string d8(8, 'x');
  expect_open_error(write_raw("dtype.safetensors", R"({"w":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", d8),
                    ErrorCode::format, {"tensor 'w'", "unknown dtype 'F12'"});
  expect_open_error(write_raw("f8.safetensors", R"({"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", d8),
                    ErrorCode::unsupported, {"tensor 'w'", "F8_E4M3"});
  expect_open_error(write_raw("dtnum.safetensors", R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", d8),
                    ErrorCode::format, {"tensor 'w' dtype", "a string"});
  expect_open_error(write_raw("notobj.safetensors", R"({"w":[1]})", d8), ErrorCode::format,
                    {"tensor 'w'", "an object"});
  expect_open_error(write_raw("nooff.safetensors", R"({"w":{"dtype":"F32","shape":[2]}})", d8), ErrorCode::format,
                    {"tensor 'w'", "missing key 'data_offsets'"});
  expect_open_error(
      write_raw("extra.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", d8),
      ErrorCode::format, {"tensor 'w'", "unexpected field 'x'"});
  expect_open_error(write_raw("negdim.safetensors", R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})", d8),
                    ErrorCode::format, {"tensor 'w' shape[1]"});
  expect_open_error(write_raw("fracdim.safetensors", R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", d8),
                    ErrorCode::format, {"tensor 'w' shape[0]"});
  expect_open_error(write_raw("shapestr.safetensors", R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", d8),
                    ErrorCode::format, {"tensor 'w' shape", "an array"});
  expect_open_error(write_raw("off3.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", d8),
                    ErrorCode::format, {"tensor 'w'", "data_offsets must be [begin, end], got 3"});
  expect_open_error(write_raw("offneg.safetensors", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", d8),
                    ErrorCode::format, {"tensor 'w' data_offsets[0]"});
  // 2^62 × 2^62 elements overflows 64 bits; must be caught, not wrapped.
  expect_open_error(write_raw("ovf.safetensors",
                              R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],)"
                              R"("data_offsets":[0,0]}})",
                              ""),
                    ErrorCode::format, {"tensor 'w'", "overflows"});
  // 2^62 elements × 4 bytes = 2^64: overflow only in the dtype multiplication.
  expect_open_error(write_raw("ovf2.safetensors",
                              R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", ""),
                    ErrorCode::format, {"tensor 'w'", "overflows"});
}

TEST(Safetensors, SizeAndOffsetErrors) {
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  expect_open_error(write_raw("model.safetensors",
                              R"({")" + name + R"(":{"dtype":"F16","shape":[256,256],"data_offsets":[0,1000]}})",
                              std::string(1000, '\0')),
                    ErrorCode::format,
                    {"model.safetensors: tensor 'model.layers.0.self_attn.q_proj.weight': shape [256,256] × F16 = "
                     "131072 bytes but data_offsets span 1000"});
  expect_open_error(write_raw("pastend.safetensors", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                              std::string(8, 'x')),
                    ErrorCode::format, {"tensor 'w'", "data_offsets [8, 12]", "past the end", "(8 bytes"});
  expect_open_error(write_raw("beginend.safetensors", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}})",
                              std::string(8, 'x')),
                    ErrorCode::format, {"tensor 'w'", "data_offsets [4, 0]", "begin > end"});
  expect_open_error(write_raw("overlap.safetensors",
                              R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                              R"("c":{"dtype":"U8","shape":[2],"data_offsets":[6,8]},)"
                              R"("b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})",
                              std::string(8, 'x')),
                    ErrorCode::format, {"tensor 'b'", "overlap tensor 'a'", "[2, 6]", "[0, 4]"});
  // Contained entirely inside a bigger tensor (not adjacent in sorted order to its container's end).
  expect_open_error(write_raw("inside.safetensors",
                              R"({"big":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                              R"("x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
                              R"("y":{"dtype":"U8","shape":[1],"data_offsets":[5,6]}})",
                              std::string(8, 'x')),
                    ErrorCode::format, {"tensor 'x'", "overlap tensor 'big'"});
  // A valid header whose data section was cut short (download interrupted).
  expect_open_error(write_raw("truncated.safetensors",
                              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                              R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
                              std::string(10, 'x')),
                    ErrorCode::format, {"tensor 'b'", "past the end", "truncated"});
}

TEST(Safetensors, LenientLayoutsAccepted) {
  // Gaps, trailing bytes, and an empty tensor placed inside another tensor's range are all harmless.
  auto f = SafetensorsFile::open(write_raw("gaps.safetensors",
                                           R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]},)"
                                           R"("z":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},)"
                                           R"("b":{"dtype":"U8","shape":[2],"data_offsets":[5,7]}})",
                                           "0123456789"));
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->get("a").data), 2), "12");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->get("b").data), 2), "56");
  EXPECT_EQ(f->get("z").nbytes, 0u);
}

TEST(Safetensors, MetadataErrors) {
  expect_open_error(write_raw("metanum.safetensors", R"({"__metadata__":{"format":"pt","n":1}})", ""),
                    ErrorCode::format, {"__metadata__ 'n'", "a string"});
  expect_open_error(write_raw("metaarr.safetensors", R"({"__metadata__":["pt"]})", ""), ErrorCode::format,
                    {"__metadata__", "an object"});
  auto f = SafetensorsFile::open(write_raw("metaok.safetensors", R"({"__metadata__":{"a":"1","b":""}})", ""));
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"a", "1"}, {"b", ""}}));
  EXPECT_TRUE(f->tensors().empty());
}
