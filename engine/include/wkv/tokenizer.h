// SentencePiece tokenizer (tokenizer.model) with streaming detokenization.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace wkv {

using TokenId = int32_t;

class Tokenizer {
 public:
  // Loads a serialized SentencePiece ModelProto from a file / from bytes (as stored inside .wkvq).
  // Throws wkv::Error naming the source when it cannot be parsed.
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);
  static std::unique_ptr<Tokenizer> from_bytes(std::string bytes, const std::string& source_name);
  ~Tokenizer();

  // Text → ids exactly as sentencepiece's EncodeAsIds; BOS prepended when add_bos.
  std::vector<TokenId> encode(std::string_view text, bool add_bos) const;
  // Ids → text exactly as sentencepiece's DecodeIds (control tokens such as BOS/EOS vanish).
  std::string decode(const std::vector<TokenId>& ids) const;

  int vocab_size() const;
  TokenId bos_id() const;
  TokenId eos_id() const;
  TokenId unk_id() const;
  // The piece string as stored in the model (e.g. "▁the", "<0x0A>", "<s>").
  std::string piece(TokenId id) const;
  // Bytes this token contributes to the decoded text when it is NOT the first piece of a text:
  // "▁" → " ", byte-fallback pieces "<0xNN>" → that single byte, control tokens → "".
  const std::string& token_bytes(TokenId id) const;
  bool is_control(TokenId id) const;
  // The serialized model (for embedding into .wkvq files).
  const std::string& model_bytes() const;

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Incremental detokenizer for streaming: feed ids one at a time, get back only complete UTF-8.
//
// It reproduces Tokenizer::decode of the whole sequence: the concatenation of everything push()
// and flush() return equals decode(all ids pushed). Bytes of an incomplete UTF-8 sequence (e.g. the
// first two of a three-byte character arriving as byte-fallback tokens) are held back until the
// sequence completes; invalid sequences become U+FFFD, as sentencepiece does.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok);
  // Returns the newly completed text (possibly empty).
  std::string push(TokenId id);
  // Returns whatever is still held back (incomplete sequences become U+FFFD).
  std::string flush();
  void reset();

 private:
  const Tokenizer& tok_;
  std::string pending_;   // bytes not yet returned
  bool at_start_ = true;  // sentencepiece drops the leading space of the first piece
};

}  // namespace wkv
