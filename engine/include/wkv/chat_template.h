// Chat templates: turn a conversation into the token ids the model expects.
//
//   llama2: "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]"
//           (BOS/EOS as token ids, never as text, so a user typing "</s>" cannot inject one)
//   plain:  BOS, then the text of every message (system first, then the turns) joined by "\n\n",
//           tokenized as one text — for base models such as ref-a that were never taught a chat
//           format. Nothing follows the last message, so the model continues its text; a lone user
//           message is exactly encode(text, add_bos = true).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "wkv/tokenizer.h"

namespace wkv {

enum class ChatTemplateKind { plain, llama2 };

struct ChatMessage {
  enum class Role { system, user, assistant };
  Role role = Role::user;
  std::string content;
};

const char* chat_template_name(ChatTemplateKind k);
// "plain" / "llama2" (also "llama-2"); throws wkv::Error(invalid_argument) listing the valid names.
ChatTemplateKind chat_template_from_name(const std::string& name);

// Renders the conversation for generation of the next assistant reply. The last message must be
// from the user (or the list may end with a partial assistant message to continue).
std::vector<TokenId> apply_chat_template(ChatTemplateKind kind, const Tokenizer& tok,
                                         const std::vector<ChatMessage>& messages);

// Picks a template from the model's name: a last path component containing "chat" or "instruct"
// (case-insensitive) gets llama2; anything else plain. `model_name` is the directory or file name
// (e.g. "Llama-2-7b-chat-hf" → llama2, "ref-a" → plain).
ChatTemplateKind default_chat_template(const std::string& model_name);

}  // namespace wkv
