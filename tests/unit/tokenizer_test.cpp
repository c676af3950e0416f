// Tokenizer and StreamDecoder against public reference vectors (llama.cpp's LLaMA SPM vectors,
// ref-a's golden.json, the stories260K MANIFEST) and against sentencepiece's own DecodeIds.
#include "wkv/tokenizer.h"

#include <gtest/gtest.h>

#include <random>
#include <sstream>

#include "test_support.h"
#include "wkv/error.h"

namespace {

using wkv::StreamDecoder;
using wkv::Tokenizer;
using wkv::TokenId;
using wkv::test::read_file;
using wkv::test::shared_path;

constexpr const char* kLlamaModel = "data/llama2c/llama2-tokenizer/tokenizer.model";
constexpr const char* kRefAModel = "models/ref-a/tokenizer.model";
constexpr const char* kTok512Model = "data/llama2c/stories260K/tok512.model";

std::unique_ptr<Tokenizer> load(const char* rel) { return Tokenizer::from_file(shared_path(rel)); }

std::vector<std::string> split(const std::string& s, const std::string& sep) {
  std::vector<std::string> parts;
  size_t pos = 0;
  for (;;) {
    const size_t next = s.find(sep, pos);
    if (next == std::string::npos) {
      parts.push_back(s.substr(pos));
      return parts;
    }
    parts.push_back(s.substr(pos, next - pos));
    pos = next + sep.size();
  }
}

std::vector<TokenId> parse_ids(const std::string& line) {
  std::istringstream in(line);
  std::vector<TokenId> ids;
  TokenId id;
  while (in >> id) ids.push_back(id);
  return ids;
}

// Strict UTF-8 check (shortest form, no surrogates, ≤ U+10FFFF).
bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int n;
    uint32_t cp;
    if (b0 < 0x80) { n = 1; cp = b0; }
    else if ((b0 & 0xE0) == 0xC0) { n = 2; cp = b0 & 0x1F; }
    else if ((b0 & 0xF0) == 0xE0) { n = 3; cp = b0 & 0x0F; }
    else if ((b0 & 0xF8) == 0xF0) { n = 4; cp = b0 & 0x07; }
    else return false;
    if (i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || (cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF) return false;
    i += n;
  }
  return true;
}

// Streams `ids` one at a time; checks each chunk is valid UTF-8 and returns the concatenation.
std::string stream(const Tokenizer& tok, const std::vector<TokenId>& ids) {
  StreamDecoder dec(tok);
  std::string all;
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string chunk = dec.push(ids[i]);
    EXPECT_TRUE(valid_utf8(chunk)) << "chunk after id #" << i << " (" << ids[i] << ") is not valid UTF-8";
    all += chunk;
  }
  const std::string tail = dec.flush();
  EXPECT_TRUE(valid_utf8(tail));
  return all + tail;
}

// Texts that exercise ASCII, leading/inner/trailing whitespace, newlines and byte fallback
// (CJK and emoji are mostly absent from the vocabularies and go through <0xNN> pieces).
const std::vector<std::string>& sample_texts() {
  static const std::vector<std::string> texts = {
      "Hello world",
      " Hello world",
      "   leading and trailing spaces   ",
      "tabs\tand\nnewlines\n\nand\r\ncarriage returns",
      "\n starts with a newline",
      "The capital of France is Paris.",
      "Führer, naïve café, Ελληνικά, русский текст",
      "日本語のテキストと中文文本，还有한국어",
      "emoji: 🦙🚀 😀‍🌫️ family 👨‍👩‍👧 flags 🇫🇷",
      "mixed 4 ½ months — “quotes” … and math ∑∫√",
      "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP 𐍈",
      "a",
      " ",
      "  ",
      "\n",
      "x \u2581 y",  // a literal U+2581 in the text
  };
  return texts;
}

TEST(Tokenizer, LoadErrors) {
  try {
    Tokenizer::from_file("/nonexistent/dir/tokenizer.model");
    FAIL() << "expected wkv::Error";
  } catch (const wkv::Error& e) {
    EXPECT_EQ(e.code(), wkv::ErrorCode::not_found);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/tokenizer.model"), std::string::npos) << e.what();
  }
  try {
    Tokenizer::from_bytes("definitely not a protobuf \xff\xff\xff", "inline-bytes");
    FAIL() << "expected wkv::Error";
  } catch (const wkv::Error& e) {
    EXPECT_EQ(e.code(), wkv::ErrorCode::format);
    EXPECT_NE(std::string(e.what()).find("inline-bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::from_bytes("", "empty"), wkv::Error);
}

TEST(Tokenizer, LlamaSpmVectorsFromLlamaCpp) {
  WKV_REQUIRE_SHARED(kLlamaModel);
  WKV_REQUIRE_SHARED("data/gguf/ggml-vocab-llama-spm.gguf.inp");
  auto tok = load(kLlamaModel);
  EXPECT_EQ(tok->vocab_size(), 32000);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->unk_id(), 0);

  // Every input is followed by "\n__ggml_vocab_test__\n" (the file ends with one), so the piece
  // after the last separator is empty and is not a test. Inputs keep their own newlines
  // ("\n\n" etc. are real cases). The .out file has one line per input, ids without BOS.
  auto inputs = split(read_file(shared_path("data/gguf/ggml-vocab-llama-spm.gguf.inp")), "\n__ggml_vocab_test__\n");
  ASSERT_FALSE(inputs.empty());
  ASSERT_EQ(inputs.back(), "");
  inputs.pop_back();
  auto lines = split(read_file(shared_path("data/gguf/ggml-vocab-llama-spm.gguf.out")), "\n");
  ASSERT_EQ(lines.back(), "");
  lines.pop_back();
  ASSERT_EQ(inputs.size(), lines.size());
  ASSERT_EQ(inputs.size(), 46u);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto expected = parse_ids(lines[i]);
    EXPECT_EQ(tok->encode(inputs[i], false), expected) << "case " << i << ": \"" << inputs[i] << "\"";
    auto with_bos = expected;
    with_bos.insert(with_bos.begin(), 1);
    EXPECT_EQ(tok->encode(inputs[i], true), with_bos) << "case " << i;
  }
}

// Pulls the "ids" array of golden.json's "short" entry with a small scan (the engine's JSON parser
// is not a dependency of this test).
std::vector<TokenId> golden_short_ids(const std::string& json) {
  const size_t s = json.find("\"short\"");
  if (s == std::string::npos) return {};
  const size_t ids = json.find("\"ids\"", s);
  const size_t open = json.find('[', ids);
  const size_t close = json.find(']', open);
  if (ids == std::string::npos || open == std::string::npos || close == std::string::npos) return {};
  std::string body = json.substr(open + 1, close - open - 1);
  for (char& c : body)
    if (c == ',') c = ' ';
  return parse_ids(body);
}

TEST(Tokenizer, RefAGolden) {
  WKV_REQUIRE_SHARED(kRefAModel);
  WKV_REQUIRE_SHARED("models/ref-a/golden.json");
  auto tok = load(kRefAModel);
  EXPECT_EQ(tok->vocab_size(), 8192);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  const std::string json = read_file(shared_path("models/ref-a/golden.json"));
  ASSERT_NE(json.find("\"The capital of France is\""), std::string::npos);
  const auto expected = golden_short_ids(json);
  ASSERT_EQ(expected.size(), 6u) << "could not find short.ids in golden.json";
  EXPECT_EQ(tok->encode("The capital of France is", true), expected);
  EXPECT_EQ(tok->decode(expected), "The capital of France is");
}

TEST(Tokenizer, Stories260KManifestIds) {
  WKV_REQUIRE_SHARED(kTok512Model);
  auto tok = load(kTok512Model);
  EXPECT_EQ(tok->vocab_size(), 512);
  // From data/MANIFEST.md section 3 (the first 15 greedy ids).
  const std::vector<TokenId> expected = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426};
  const std::string text = "Once upon a time, there was a little girl named Lily.";
  EXPECT_EQ(tok->encode(text, false), expected);
  EXPECT_EQ(tok->decode(expected), text);
}

TEST(Tokenizer, PiecesAndTokenBytes) {
  WKV_REQUIRE_SHARED(kLlamaModel);
  auto tok = load(kLlamaModel);
  EXPECT_EQ(tok->piece(1), "<s>");
  EXPECT_EQ(tok->piece(2), "</s>");
  EXPECT_EQ(tok->piece(13), "<0x0A>");
  EXPECT_EQ(tok->piece(15043), "\xE2\x96\x81Hello");
  EXPECT_TRUE(tok->is_control(1));
  EXPECT_TRUE(tok->is_control(2));
  EXPECT_FALSE(tok->is_control(0));
  EXPECT_FALSE(tok->is_control(15043));
  EXPECT_EQ(tok->token_bytes(1), "");
  EXPECT_EQ(tok->token_bytes(2), "");
  EXPECT_EQ(tok->token_bytes(13), "\n");
  EXPECT_EQ(tok->token_bytes(3), std::string(1, '\0'));
  EXPECT_EQ(tok->token_bytes(258), "\xFF");
  EXPECT_EQ(tok->token_bytes(15043), " Hello");
  EXPECT_EQ(tok->token_bytes(29871), " ");
  // sentencepiece renders <unk> as its unk_surface, " ⁇ " (U+2047) for this model.
  EXPECT_EQ(tok->token_bytes(0), " \xE2\x81\x87 ");
  EXPECT_EQ(tok->decode({0}), " \xE2\x81\x87 ");
  EXPECT_THROW(tok->piece(32000), wkv::Error);
  EXPECT_THROW(tok->token_bytes(-1), wkv::Error);
  EXPECT_THROW(tok->decode({5, 40000}), wkv::Error);

  // token_bytes is the text a piece adds in the middle of a text: after "a" (29874) nothing is
  // stripped, so decode([a, x]) == "a" + token_bytes(x) for every non-byte x.
  for (TokenId id = 0; id < tok->vocab_size(); id += 7) {
    if (id >= 3 && id <= 258) continue;  // byte pieces combine into characters instead
    ASSERT_EQ(tok->decode({29874, id}), "a" + tok->token_bytes(id)) << "id " << id;
  }

  // model_bytes round-trips through from_bytes.
  const std::string bytes = tok->model_bytes();
  EXPECT_EQ(bytes, read_file(shared_path(kLlamaModel)));
  auto again = Tokenizer::from_bytes(bytes, "copy");
  EXPECT_EQ(again->encode("Hello world", true), tok->encode("Hello world", true));
}

TEST(Tokenizer, DecodeFollowsSentencepieceLeadingSpaceRules) {
  WKV_REQUIRE_SHARED(kLlamaModel);
  WKV_REQUIRE_SHARED(kTok512Model);
  auto llama = load(kLlamaModel);
  // LLaMA: add_dummy_prefix on, remove_extra_whitespaces off. The first piece loses one "▁";
  // BOS/EOS vanish; a lone "▁" (29871) first consumes the dummy prefix, so " Hello" survives.
  EXPECT_EQ(llama->decode({1, 15043}), "Hello");
  EXPECT_EQ(llama->decode({15043, 15043}), "Hello Hello");
  EXPECT_EQ(llama->decode({29871, 15043}), " Hello");
  EXPECT_EQ(llama->decode({2, 15043, 2}), "Hello");
  // Byte pieces: the run is decoded as UTF-8; an incomplete character is U+FFFD per byte.
  EXPECT_EQ(llama->decode({231, 187, 176}), "\xE4\xB8\xAD");  // <0xE4><0xB8><0xAD> = 中
  EXPECT_EQ(llama->decode({231, 187}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(llama->decode({231, 1, 187, 176}), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");

  // tok512 keeps the proto default remove_extra_whitespaces = true: every leading space vanishes.
  auto t512 = load(kTok512Model);
  EXPECT_EQ(t512->piece(410), "\xE2\x96\x81");
  EXPECT_EQ(t512->decode({410, 410, 265}), "the");
  EXPECT_EQ(t512->encode(" Hello", false), t512->encode("Hello", false));
}

TEST(Tokenizer, RoundTrips) {
  for (const char* rel : {kLlamaModel, kRefAModel, kTok512Model}) {
    WKV_REQUIRE_SHARED(rel);
    auto tok = load(rel);
    // tok512 normalizes whitespace (remove_extra_whitespaces) and so is not lossless for it.
    const bool lossless_ws = std::string(rel) != kTok512Model;
    for (const auto& text : sample_texts()) {
      // A literal "▁" in the input is indistinguishable from an encoded space: it decodes as ' '.
      if (text.find("\u2581") != std::string::npos) {
        EXPECT_EQ(tok->decode(tok->encode(text, true)), "x   y") << rel;
        continue;
      }
      if (!lossless_ws && (text.find("  ") != std::string::npos || text.front() == ' ' || text.back() == ' ' ||
                           text.front() == '\n'))
        continue;
      const auto ids = tok->encode(text, true);
      EXPECT_EQ(tok->decode(ids), text) << rel << ": \"" << text << "\"";
    }
  }
}

TEST(Tokenizer, ByteFallbackIsUsedForEmojiAndCjk) {
  WKV_REQUIRE_SHARED(kLlamaModel);
  auto tok = load(kLlamaModel);
  // 🦙 U+1F999 = F0 9F A6 99 has no piece in the LLaMA vocabulary: four byte pieces (id = byte + 3).
  const auto ids = tok->encode("🦙", false);
  EXPECT_EQ(ids, (std::vector<TokenId>{29871, 0xF0 + 3, 0x9F + 3, 0xA6 + 3, 0x99 + 3}));
}

TEST(StreamDecoder, MatchesDecodeAndEmitsOnlyWholeCharacters) {
  for (const char* rel : {kLlamaModel, kRefAModel, kTok512Model}) {
    WKV_REQUIRE_SHARED(rel);
    auto tok = load(rel);
    for (const auto& text : sample_texts()) {
      for (bool bos : {false, true}) {
        const auto ids = tok->encode(text, bos);
        EXPECT_EQ(stream(*tok, ids), tok->decode(ids)) << rel << ": \"" << text << "\" bos=" << bos;
      }
    }
    // Several texts glued with BOS/EOS between them, as a chat transcript looks.
    std::vector<TokenId> chat = {tok->bos_id()};
    for (const auto& text : sample_texts()) {
      for (TokenId id : tok->encode(text, false)) chat.push_back(id);
      chat.push_back(tok->eos_id());
      chat.push_back(tok->bos_id());
    }
    EXPECT_EQ(stream(*tok, chat), tok->decode(chat)) << rel;
  }
}

TEST(StreamDecoder, HoldsBackIncompleteCharacters) {
  WKV_REQUIRE_SHARED(kLlamaModel);
  auto tok = load(kLlamaModel);
  StreamDecoder dec(*tok);
  // "中" = E4 B8 AD as three byte pieces: nothing until the third arrives.
  EXPECT_EQ(dec.push(1), "");
  EXPECT_EQ(dec.push(0xE4 + 3), "");
  EXPECT_EQ(dec.push(0xB8 + 3), "");
  EXPECT_EQ(dec.push(0xAD + 3), "\xE4\xB8\xAD");
  EXPECT_EQ(dec.push(15043), " Hello");  // not the first piece any more: the space stays
  // An unfinished character is released as U+FFFD per byte by flush (as DecodeIds does).
  EXPECT_EQ(dec.push(0xF0 + 3), "");
  EXPECT_EQ(dec.push(0x9F + 3), "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(dec.flush(), "");
  // Bytes that can never start a character are released at once, not at the end of the run.
  EXPECT_EQ(dec.push(0x80 + 3), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.push(0xE4 + 3), "");
  EXPECT_EQ(dec.push(0x41 + 3), "");  // E4 'A': E4 cannot complete, but sentencepiece needs 3 bytes to judge
  EXPECT_EQ(dec.push(0x42 + 3), "\xEF\xBF\xBD" "AB");
  dec.reset();
  EXPECT_EQ(dec.push(15043), "Hello");  // after reset it is the start of a text again
}

// Random id sequences, biased towards byte pieces, "▁" and control tokens, where the leading
// space, byte-run and U+FFFD rules interact; DecodeIds (through decode) is the reference.
TEST(StreamDecoder, RandomSequencesMatchDecode) {
  for (const char* rel : {kLlamaModel, kRefAModel, kTok512Model}) {
    WKV_REQUIRE_SHARED(rel);
    auto tok = load(rel);
    std::vector<TokenId> space_ids;
    for (TokenId id = 0; id < tok->vocab_size(); ++id)
      if (tok->piece(id) == "\xE2\x96\x81") space_ids.push_back(id);
    std::mt19937 rng(1234);
    for (int trial = 0; trial < 3000; ++trial) {
      std::vector<TokenId> ids(rng() % 12);
      for (auto& id : ids) {
        const unsigned r = rng() % 10;
        if (r < 4) id = 3 + static_cast<TokenId>(rng() % 256);  // byte pieces 3..258 in all three models
        else if (r < 6) id = static_cast<TokenId>(rng() % 3);   // unk, bos, eos
        else if (r < 7 && !space_ids.empty()) id = space_ids[0];
        else id = static_cast<TokenId>(rng() % tok->vocab_size());
      }
      ASSERT_EQ(stream(*tok, ids), tok->decode(ids)) << rel << " trial " << trial;
    }
  }
}

TEST(StreamDecoder, Stories260KGreedyOutput) {
  WKV_REQUIRE_SHARED(kTok512Model);
  WKV_REQUIRE_SHARED("data/llama2c/stories260K/greedy256.ids.txt");
  auto tok = load(kTok512Model);
  const auto ids = parse_ids(read_file(shared_path("data/llama2c/stories260K/greedy256.ids.txt")));
  ASSERT_EQ(ids.size(), 256u);
  const std::string expected = read_file(shared_path("data/llama2c/stories260K/greedy256.txt"));
  // The ids were generated after a BOS that the file does not contain. llama2.c (run.c) decodes
  // with tok512.bin: it drops the leading space of the piece that follows BOS, prints the rest
  // verbatim, then prints a final "\n". sentencepiece strips the first piece's "▁" whether or not
  // BOS is present, so decode(ids) and decode([BOS] + ids) agree and equal the file minus that
  // trailing newline. Both outputs are identical otherwise (no unprintable bytes occur, which
  // run.c's safe_printf would have dropped).
  std::vector<TokenId> with_bos = ids;
  with_bos.insert(with_bos.begin(), tok->bos_id());
  const std::string streamed = stream(*tok, with_bos);
  EXPECT_EQ(streamed, tok->decode(with_bos));
  EXPECT_EQ(streamed, tok->decode(ids));
  EXPECT_EQ(streamed + "\n", expected);
}

}  // namespace
