// Typed access to conversations, messages, settings and recent models in a Database, plus search and
// export. Every method throws StorageError on an SQLite failure; writes that touch several rows run in
// one transaction, so a failure (or a killed process) leaves either all of a change or none of it.
//
// Times are milliseconds since the Unix epoch (UTC), taken from the store's clock (setClock, for
// tests). Message seq numbers start at 1 per conversation and increase by one per appended message.
//
// Export formats (exact; tests/app/storage_test.cpp checks them byte for byte):
//
// Markdown — blocks separated by one blank line, the file ending in a single "\n":
//   "# <title>"                     ("Untitled conversation" when the title is empty)
//   "- Created: <ISO 8601 UTC>\n- Updated: <ISO 8601 UTC>"   (e.g. 2024-03-01T09:30:00Z), then the
//      lines "- Model: <model path>", "- Mode: <mode>", "- Sampling: `<sampling json>`", each only when
//      set (sampling: when not "{}")
//   "## System prompt" and the prompt, only when one is set
//   per message: "## User" | "## Assistant" | "## System", then its content (trailing newlines removed;
//      no block when empty), then, when the message has any statistics, one line
//      "_<model> · <mode> · <completion tokens> tokens · <tokens/s with one decimal> tok/s_" listing
//      only the parts that are set (tokens > 0, tok/s > 0), then "_(incomplete)_" when the message
//      was never finished (its generation was interrupted).
//
// JSON — QJsonDocument::Indented (4 spaces, keys sorted), an object:
//   format "wkvchat.conversation", version 1, id, title, created_at, updated_at (ISO 8601 UTC with
//   milliseconds), system_prompt, sampling (the parsed sampling JSON object; the raw string if it
//   does not parse), model_path, mode, messages: [ {seq, role, content, created_at, updated_at,
//   complete (bool), model, mode, prompt_tokens, completion_tokens, tokens_per_second, kv_bytes} ].
#pragma once

#include <QByteArray>
#include <QList>
#include <QString>

#include <functional>
#include <optional>

class Database;

struct Conversation {
  qint64 id = 0;
  QString title;
  qint64 createdAt = 0;
  qint64 updatedAt = 0;
  QString systemPrompt;
  QString samplingJson = QStringLiteral("{}");
  QString modelPath;
  QString mode;
};

// What the engine reports for a generated message.
struct MessageStats {
  QString model;  // model path or name
  QString mode;   // quantization mode (fp16, w4kv4, ...)
  int promptTokens = 0;
  int completionTokens = 0;
  double tokensPerSecond = 0.0;
  qint64 kvBytes = 0;
};

struct Message {
  qint64 id = 0;
  qint64 conversationId = 0;
  int seq = 0;
  QString role;  // "system" | "user" | "assistant"
  QString content;
  qint64 createdAt = 0;
  qint64 updatedAt = 0;
  MessageStats stats;
  bool complete = true;  // false while the message is being streamed (or if that was interrupted)
};

struct SearchHit {
  qint64 conversationId = 0;
  qint64 messageId = 0;  // the best-ranked matching message of the conversation
  QString title;
  // Plain text around the match with each matched term between kMatchStart and kMatchEnd.
  QString snippet;
};

struct RecentModel {
  QString path;
  qint64 lastUsed = 0;
  QString format;
};

class ConversationStore {
 public:
  static constexpr int kMaxRecentModels = 10;
  static constexpr QChar kMatchStart = QChar(0x02);
  static constexpr QChar kMatchEnd = QChar(0x03);

  explicit ConversationStore(Database& db);

  void setClock(std::function<qint64()> nowMs);
  qint64 now() const { return clock_(); }

  // ---- conversations ----
  Conversation createConversation(const QString& title, const QString& systemPrompt = {},
                                  const QString& samplingJson = QStringLiteral("{}"),
                                  const QString& modelPath = {}, const QString& mode = {});
  std::optional<Conversation> conversation(qint64 id);
  QList<Conversation> listConversations();  // most recently updated first (ties: newest id first)
  void renameConversation(qint64 id, const QString& title);
  void deleteConversation(qint64 id);  // its messages go with it (ON DELETE CASCADE)
  void setSystemPrompt(qint64 id, const QString& systemPrompt);
  void setSamplingJson(qint64 id, const QString& samplingJson);
  void setConversationModel(qint64 id, const QString& modelPath, const QString& mode);

  // ---- messages ----
  QList<Message> messages(qint64 conversationId);  // ascending seq
  std::optional<Message> message(qint64 messageId);
  // Appends after the conversation's last message; uses draft.conversationId/role/content/stats/
  // complete and returns the stored message (id, seq, times filled in). Touches the conversation.
  Message appendMessage(const Message& draft);
  Message appendMessage(qint64 conversationId, const QString& role, const QString& content);
  // The streaming path, called about once a second while tokens arrive: one small transaction.
  void updateStreamingMessage(qint64 messageId, const QString& content, bool complete = false);
  // Final content and statistics; marks the message complete.
  void finishMessage(qint64 messageId, const QString& content, const MessageStats& stats);
  // Deletes the messages with seq > `seq` (regenerate / edit); returns how many went.
  int deleteMessagesAfter(qint64 conversationId, int seq);

  // ---- settings ----
  QString setting(const QString& key, const QString& defaultValue = {});
  void setSetting(const QString& key, const QString& value);
  void removeSetting(const QString& key);

  // ---- recent models (most recent first, at most kMaxRecentModels kept) ----
  void touchRecentModel(const QString& path, const QString& format);
  QList<RecentModel> recentModels();
  void removeRecentModel(const QString& path);

  // ---- search ----
  // Full-text search over message contents, one hit per conversation, best match first. The input
  // is plain user text: every whitespace-separated word must occur (prefix match when it ends in
  // '*'); quotes and FTS5 operators in it are taken literally, never as query syntax.
  QList<SearchHit> search(const QString& text, int limit = 50);
  // The FTS5 MATCH expression search() uses for `text` (empty when it has no searchable word).
  static QString ftsQuery(const QString& text);
  // A snippet as rich text: HTML-escaped, matches in <b>…</b>.
  static QString snippetToHtml(const QString& snippet);

  // ---- export (formats above) ----
  QString exportMarkdown(qint64 conversationId);
  QByteArray exportJson(qint64 conversationId);

 private:
  Conversation requireConversation(qint64 id);
  void touchConversation(qint64 id, qint64 when);
  void requireOneRow(const char* what, qint64 id);

  Database& db_;
  std::function<qint64()> clock_;
};
