// Chat templates. llama2 follows Meta's reference implementation (llama/generation.py,
// Llama.chat_completion) token for token:
//
//   if messages[0] is system: messages[1].content = B_SYS + system + E_SYS + messages[1].content
//   for each (user, assistant) pair:  [BOS] + encode(f"{B_INST} {user.strip()} {E_INST} {assistant.strip()} ") + [EOS]
//   final user turn:                  [BOS] + encode(f"{B_INST} {user.strip()} {E_INST}")
//
// with B_INST="[INST]", E_INST="[/INST]", B_SYS="<<SYS>>\n", E_SYS="\n<</SYS>>\n\n". Note that the
// strip() applies to the merged system+user content, so the system text itself is not stripped.
// BOS/EOS are ids; message text is always tokenized as text, and sentencepiece never maps text to
// control pieces, so a user typing "</s>" or "<s>" gets ordinary pieces, not EOS/BOS.

#include "wkv/chat_template.h"

#include <algorithm>
#include <cctype>

#include "wkv/error.h"

namespace wkv {

namespace {

using Role = ChatMessage::Role;

const char* role_name(Role r) {
  switch (r) {
    case Role::system: return "system";
    case Role::user: return "user";
    case Role::assistant: return "assistant";
  }
  return "?";
}

// Byte length of the Unicode whitespace character (as Python's str.isspace) at `s[pos]`, or 0.
size_t whitespace_len(const std::string& s, size_t pos) {
  const auto c = static_cast<unsigned char>(s[pos]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
  auto at = [&](size_t i) { return pos + i < s.size() ? static_cast<unsigned char>(s[pos + i]) : 0; };
  if (c == 0xC2 && (at(1) == 0x85 || at(1) == 0xA0)) return 2;             // U+0085, U+00A0
  if (c == 0xE1 && at(1) == 0x9A && at(2) == 0x80) return 3;               // U+1680
  if (c == 0xE2 && at(1) == 0x80) {
    const unsigned char c2 = at(2);
    if ((c2 >= 0x80 && c2 <= 0x8A) || c2 == 0xA8 || c2 == 0xA9 || c2 == 0xAF) return 3;  // U+2000..200A, 2028/9, 202F
  }
  if (c == 0xE2 && at(1) == 0x81 && at(2) == 0x9F) return 3;               // U+205F
  if (c == 0xE3 && at(1) == 0x80 && at(2) == 0x80) return 3;               // U+3000
  return 0;
}

// Python's str.strip() with no arguments.
std::string strip(const std::string& s) {
  size_t begin = 0;
  while (begin < s.size()) {
    const size_t n = whitespace_len(s, begin);
    if (n == 0) break;
    begin += n;
  }
  // Scan forward to find the end of the last non-whitespace character (UTF-8 is not
  // self-synchronizing for our multi-byte whitespace test when scanning backwards).
  size_t end = begin;
  size_t pos = begin;
  while (pos < s.size()) {
    const size_t n = whitespace_len(s, pos);
    if (n > 0) {
      pos += n;
    } else {
      pos += 1;
      end = pos;
    }
  }
  return s.substr(begin, end - begin);
}

void append(std::vector<TokenId>& out, const std::vector<TokenId>& ids) {
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string message_error(size_t i, const ChatMessage& m, const std::string& what) {
  return "chat message " + std::to_string(i) + " (" + role_name(m.role) + "): " + what;
}

std::vector<TokenId> apply_llama2(const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  static const std::string kBInst = "[INST]", kEInst = "[/INST]";
  static const std::string kBSys = "<<SYS>>\n", kESys = "\n<</SYS>>\n\n";
  const TokenId bos = tok.bos_id(), eos = tok.eos_id();
  if (bos < 0 || eos < 0)
    throw Error(ErrorCode::invalid_argument, "the llama2 chat template needs a tokenizer with BOS and EOS tokens");

  size_t first = 0;
  std::string system_prefix;
  if (messages[0].role == Role::system) {
    if (messages.size() < 2)
      throw Error(ErrorCode::invalid_argument,
                  "llama2 chat template: a system message must be followed by a user message");
    system_prefix = kBSys + messages[0].content + kESys;
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const Role expected = (i - first) % 2 == 0 ? Role::user : Role::assistant;
    if (messages[i].role != expected)
      throw Error(ErrorCode::invalid_argument,
                  message_error(i, messages[i], std::string("expected a ") + role_name(expected) +
                                                    " message (llama2 needs an optional system message, then "
                                                    "alternating user/assistant turns)"));
  }

  std::vector<TokenId> out;
  for (size_t i = first; i < messages.size(); i += 2) {
    std::string user = messages[i].content;
    if (i == first) user = system_prefix + user;
    std::string text = kBInst + " " + strip(user) + " " + kEInst;
    out.push_back(bos);
    if (i + 1 < messages.size()) {
      const bool partial = i + 2 >= messages.size();  // a trailing assistant message to continue
      const std::string answer = strip(messages[i + 1].content);
      if (partial) {
        // No trailing space and no EOS: the model continues the answer where it stops.
        append(out, tok.encode(text + " " + answer, false));
      } else {
        append(out, tok.encode(text + " " + answer + " ", false));
        out.push_back(eos);
      }
    } else {
      append(out, tok.encode(text, false));
    }
  }
  return out;
}

std::vector<TokenId> apply_plain(const Tokenizer& tok, const std::vector<ChatMessage>& messages) {
  std::string text;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i > 0) text += "\n\n";
    text += messages[i].content;
  }
  return tok.encode(text, true);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const char* chat_template_name(ChatTemplateKind k) {
  switch (k) {
    case ChatTemplateKind::plain: return "plain";
    case ChatTemplateKind::llama2: return "llama2";
  }
  return "?";
}

ChatTemplateKind chat_template_from_name(const std::string& name) {
  const std::string n = lower(name);
  if (n == "plain") return ChatTemplateKind::plain;
  if (n == "llama2" || n == "llama-2") return ChatTemplateKind::llama2;
  throw Error(ErrorCode::invalid_argument,
              "unknown chat template \"" + name + "\"; valid names: plain, llama2 (or llama-2)");
}

std::vector<TokenId> apply_chat_template(ChatTemplateKind kind, const Tokenizer& tok,
                                         const std::vector<ChatMessage>& messages) {
  if (messages.empty()) throw Error(ErrorCode::invalid_argument, "chat template: the conversation is empty");
  switch (kind) {
    case ChatTemplateKind::plain: return apply_plain(tok, messages);
    case ChatTemplateKind::llama2: return apply_llama2(tok, messages);
  }
  throw Error(ErrorCode::invalid_argument, "chat template: unknown template kind");
}

ChatTemplateKind default_chat_template(const std::string& model_name) {
  // Judge the last path component only, so a parent folder such as "~/chat-models/" does not
  // turn a base model into a chat model.
  std::string name = model_name;
  while (name.size() > 1 && (name.back() == '/' || name.back() == '\\')) name.pop_back();
  const size_t slash = name.find_last_of("/\\");
  if (slash != std::string::npos) name = name.substr(slash + 1);
  name = lower(name);
  if (name.find("chat") != std::string::npos || name.find("instruct") != std::string::npos)
    return ChatTemplateKind::llama2;
  return ChatTemplateKind::plain;
}

}  // namespace wkv
