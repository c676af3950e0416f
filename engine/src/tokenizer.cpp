// Tokenizer: a thin wrapper over sentencepiece::SentencePieceProcessor, plus a streaming detokenizer
// that reproduces SentencePieceProcessor::Decode piece by piece.
//
// How sentencepiece (0.1.97, the version we link) turns ids into text, which StreamDecoder mirrors:
//   - control pieces (<s>, </s>) produce nothing; <unk> produces trainer_spec.unk_surface
//     (" \u2047 " by default);
//   - a normal piece produces its text with every U+2581 "▁" replaced by ' ', except that the first
//     piece that starts the text (nothing emitted yet, and the previous non-byte piece did not itself
//     consume a leading "▁") loses one leading "▁" when the normalizer adds a dummy prefix or removes
//     extra whitespace. With remove_extra_whitespaces, consuming that "▁" does not end the start state,
//     so a run of "▁" pieces at the start all vanish;
//   - consecutive byte-fallback pieces "<0xNN>" form a run; the run's bytes are decoded as UTF-8 one
//     character at a time and every byte that does not start a valid character becomes U+FFFD. Any
//     non-byte piece (even a control one) ends the run, so a character split by a control piece is
//     two or more U+FFFD.

#include "wkv/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "wkv/error.h"

namespace wkv {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER

std::string replace_space_symbol(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  size_t pos = 0;
  while (pos < piece.size()) {
    if (piece.compare(pos, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
      out += ' ';
      pos += kSpaceSymbol.size();
    } else {
      out += piece[pos++];
    }
  }
  return out;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xNN>" → NN, anything else → -1.
int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  const int hi = hex_digit(piece[3]), lo = hex_digit(piece[4]);
  if (hi < 0 || lo < 0) return -1;
  return hi * 16 + lo;
}

bool is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the UTF-8 character `s` starts with, judged exactly like sentencepiece's
// string_util::DecodeUTF8 (shortest form only, no surrogates, at most U+10FFFF): 1..4 when valid,
// 0 when the first byte can never start a valid character given the bytes present, and -1 when
// more bytes are needed to decide (only when `s` is shorter than the lead byte announces).
int utf8_char_len(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  int need;
  if (b0 < 0x80) return 1;
  if ((b0 & 0xE0) == 0xC0) need = 2;
  else if ((b0 & 0xF0) == 0xE0) need = 3;
  else if ((b0 & 0xF8) == 0xF0) need = 4;
  else return 0;
  if (static_cast<int>(s.size()) < need) return -1;
  uint32_t cp = b0 & (0x7F >> need);
  for (int i = 1; i < need; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (!is_trail(b)) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[need]) return 0;
  if ((cp >= 0xD800 && cp < 0xE000) || cp > 0x10FFFF) return 0;
  return need;
}

}  // namespace

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::string bytes;
  std::string source;
  std::vector<std::string> token_bytes;  // per id, see Tokenizer::token_bytes
  std::vector<uint8_t> control;          // per id

  void check_id(TokenId id, const char* what) const {
    if (id < 0 || id >= static_cast<TokenId>(token_bytes.size()))
      throw Error(ErrorCode::invalid_argument,
                  std::string(what) + ": token id " + std::to_string(id) + " is outside the vocabulary of " +
                      source + " (0.." + std::to_string(static_cast<int>(token_bytes.size()) - 1) + ")");
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error(ErrorCode::not_found, "tokenizer model not found: " + path);
  if (std::filesystem::is_directory(path, ec))
    throw Error(ErrorCode::invalid_argument,
                "tokenizer model path is a directory, expected a sentencepiece .model file: " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, "cannot open tokenizer model " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(ErrorCode::io, "cannot read tokenizer model " + path);
  return from_bytes(std::move(ss).str(), path);
}

std::unique_ptr<Tokenizer> Tokenizer::from_bytes(std::string bytes, const std::string& source_name) {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  Impl& im = *tok->impl_;
  im.source = source_name;
  if (bytes.empty())
    throw Error(ErrorCode::format, "tokenizer model " + source_name + " is empty (expected a sentencepiece ModelProto)");
  const auto status = im.sp.LoadFromSerializedProto(bytes);
  if (!status.ok())
    throw Error(ErrorCode::format, "tokenizer model " + source_name +
                                       " is not a valid sentencepiece ModelProto: " + status.ToString());
  const int n = im.sp.GetPieceSize();
  if (n <= 0) throw Error(ErrorCode::format, "tokenizer model " + source_name + " has no pieces");
  im.bytes = std::move(bytes);

  im.token_bytes.resize(n);
  im.control.resize(n);
  for (int id = 0; id < n; ++id) {
    const std::string& piece = im.sp.IdToPiece(id);
    if (im.sp.IsControl(id)) {
      im.control[id] = 1;
    } else if (im.sp.IsUnknown(id)) {
      // The surface comes from trainer_spec.unk_surface; let sentencepiece itself produce it.
      im.token_bytes[id] = im.sp.DecodeIds({id});
    } else if (im.sp.IsByte(id)) {
      const int b = parse_byte_piece(piece);
      if (b < 0)
        throw Error(ErrorCode::format, "tokenizer model " + source_name + ": byte piece " + std::to_string(id) +
                                           " is \"" + piece + "\", expected <0xNN>");
      im.token_bytes[id] = std::string(1, static_cast<char>(b));
    } else {
      im.token_bytes[id] = replace_space_symbol(piece);
    }
  }
  return tok;
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  if (!status.ok())
    throw Error(ErrorCode::internal, "sentencepiece could not encode text with " + impl_->source + ": " +
                                         status.ToString());
  if (!add_bos) return ids;
  const TokenId bos = bos_id();
  if (bos < 0)
    throw Error(ErrorCode::invalid_argument, "tokenizer " + impl_->source + " has no BOS token to prepend");
  std::vector<TokenId> out;
  out.reserve(ids.size() + 1);
  out.push_back(bos);
  out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

std::string Tokenizer::decode(const std::vector<TokenId>& ids) const {
  for (TokenId id : ids) impl_->check_id(id, "decode");
  std::string text;
  const auto status = impl_->sp.Decode(ids, &text);
  if (!status.ok())
    throw Error(ErrorCode::internal, "sentencepiece could not decode ids with " + impl_->source + ": " +
                                         status.ToString());
  return text;
}

int Tokenizer::vocab_size() const { return static_cast<int>(impl_->token_bytes.size()); }
TokenId Tokenizer::bos_id() const { return impl_->sp.bos_id(); }
TokenId Tokenizer::eos_id() const { return impl_->sp.eos_id(); }
TokenId Tokenizer::unk_id() const { return impl_->sp.unk_id(); }

std::string Tokenizer::piece(TokenId id) const {
  impl_->check_id(id, "piece");
  return impl_->sp.IdToPiece(id);
}

const std::string& Tokenizer::token_bytes(TokenId id) const {
  impl_->check_id(id, "token_bytes");
  return impl_->token_bytes[id];
}

bool Tokenizer::is_control(TokenId id) const {
  impl_->check_id(id, "is_control");
  return impl_->control[id] != 0;
}

const std::string& Tokenizer::model_bytes() const { return impl_->bytes; }

// ---- StreamDecoder ----------------------------------------------------------------------------
//
// State: `pending_` holds the tail of the current byte-fallback run that does not yet form a whole
// character; `at_start_` is sentencepiece's "is_bos_ws" (the next non-byte piece may lose its
// leading "▁"). Only the public Tokenizer API is used; the two start-of-text subtleties (whether the
// model strips the dummy prefix at all, and whether it keeps stripping after a lone "▁") are asked
// of decode() itself, so the behaviour follows the linked sentencepiece exactly.

namespace {

// The byte a byte-fallback token stands for, or -1. A byte piece is "<0xNN>" whose token_bytes is
// that single byte; a user-defined piece spelled "<0x41>" keeps its six characters as token_bytes.
int byte_token_value(const Tokenizer& tok, TokenId id) {
  if (tok.token_bytes(id).size() != 1) return -1;
  return parse_byte_piece(tok.piece(id));
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tok) : tok_(tok) {}

namespace {

// Moves every decidable character from the front of `pending` to the result. With `final`, the run
// has ended and undecidable bytes become U+FFFD one byte at a time, as sentencepiece does.
std::string drain(std::string& pending, bool final) {
  std::string out;
  size_t pos = 0;
  while (pos < pending.size()) {
    const int len = utf8_char_len(std::string_view(pending).substr(pos));
    if (len > 0) {
      out.append(pending, pos, len);
      pos += len;
    } else if (len == 0 || final) {
      out += kReplacement;
      pos += 1;
    } else {
      break;  // an incomplete character that later bytes may complete
    }
  }
  pending.erase(0, pos);
  return out;
}

}  // namespace

std::string StreamDecoder::push(TokenId id) {
  const std::string& surface = tok_.token_bytes(id);  // validates id
  const int byte = byte_token_value(tok_, id);
  if (byte >= 0) {
    // A byte run always yields at least one character, so the text is no longer empty.
    at_start_ = false;
    pending_ += static_cast<char>(byte);
    return drain(pending_, false);
  }
  std::string out = drain(pending_, true);
  if (!at_start_) return out + surface;
  // Nothing has been emitted yet: decode() of this single piece applies the dummy-prefix rule.
  // The start state survives only pieces that produce nothing and did not consume a "▁" that
  // counts (control pieces; a lone "▁" under remove_extra_whitespaces) — i.e. exactly when the
  // piece twice in a row still decodes to nothing.
  std::string text = tok_.decode({id});
  at_start_ = text.empty() && tok_.decode({id, id}).empty();
  return out + text;
}

std::string StreamDecoder::flush() { return drain(pending_, true); }

void StreamDecoder::reset() {
  pending_.clear();
  at_start_ = true;
}

}  // namespace wkv
