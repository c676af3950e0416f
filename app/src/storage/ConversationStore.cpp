#include "storage/ConversationStore.h"

#include <QDateTime>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QRegularExpression>
#include <QSet>
#include <QStringList>

#include <algorithm>

#include "storage/Database.h"
#include "storage/StorageError.h"

namespace {

Conversation readConversation(const Query& q) {
  Conversation c;
  c.id = q.int64(0);
  c.title = q.text(1);
  c.createdAt = q.int64(2);
  c.updatedAt = q.int64(3);
  c.systemPrompt = q.text(4);
  c.samplingJson = q.text(5);
  c.modelPath = q.text(6);
  c.mode = q.text(7);
  return c;
}

#define WKV_MESSAGE_COLUMNS                                                                            \
  "id, conversation_id, seq, role, content, created_at, updated_at, model, mode, prompt_tokens, " \
  "completion_tokens, tokens_per_second, kv_bytes, complete"

Message readMessage(const Query& q) {
  Message m;
  m.id = q.int64(0);
  m.conversationId = q.int64(1);
  m.seq = q.integer(2);
  m.role = q.text(3);
  m.content = q.text(4);
  m.createdAt = q.int64(5);
  m.updatedAt = q.int64(6);
  m.stats.model = q.text(7);
  m.stats.mode = q.text(8);
  m.stats.promptTokens = q.integer(9);
  m.stats.completionTokens = q.integer(10);
  m.stats.tokensPerSecond = q.real(11);
  m.stats.kvBytes = q.int64(12);
  m.complete = q.integer(13) != 0;
  return m;
}

QString isoUtc(qint64 ms, Qt::DateFormat format) {
  // toUTC() (spec Qt::UTC) formats the offset as "Z"; a QTimeZone would give "+00:00".
  return QDateTime::fromMSecsSinceEpoch(ms).toUTC().toString(format);
}

QString stripTrailingNewlines(QString text) {
  qsizetype end = text.size();
  while (end > 0 && (text[end - 1] == QLatin1Char('\n') || text[end - 1] == QLatin1Char('\r'))) --end;
  text.truncate(end);
  return text;
}

QString roleHeading(const QString& role) {
  if (role == QLatin1String("user")) return QStringLiteral("## User");
  if (role == QLatin1String("assistant")) return QStringLiteral("## Assistant");
  return QStringLiteral("## System");
}

}  // namespace

ConversationStore::ConversationStore(Database& db)
    : db_(db), clock_([] { return QDateTime::currentMSecsSinceEpoch(); }) {}

void ConversationStore::setClock(std::function<qint64()> nowMs) { clock_ = std::move(nowMs); }

void ConversationStore::requireOneRow(const char* what, qint64 id) {
  if (db_.changes() != 1)
    throw StorageError(QStringLiteral("No %1 with id %2 in '%3'").arg(QString::fromUtf8(what)).arg(id).arg(db_.path()));
}

// ---- conversations -------------------------------------------------------------------------------

Conversation ConversationStore::createConversation(const QString& title, const QString& systemPrompt,
                                                   const QString& samplingJson, const QString& modelPath,
                                                   const QString& mode) {
  Conversation c;
  c.title = title;
  c.createdAt = c.updatedAt = now();
  c.systemPrompt = systemPrompt;
  c.samplingJson = samplingJson.isEmpty() ? QStringLiteral("{}") : samplingJson;
  c.modelPath = modelPath;
  c.mode = mode;
  db_.query("INSERT INTO conversations(title, created_at, updated_at, system_prompt, sampling_json, model_path, "
            "mode) VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6)")
      .bind(1, c.title)
      .bind(2, c.createdAt)
      .bind(3, c.systemPrompt)
      .bind(4, c.samplingJson)
      .bind(5, c.modelPath)
      .bind(6, c.mode)
      .run();
  c.id = db_.lastInsertRowId();
  return c;
}

std::optional<Conversation> ConversationStore::conversation(qint64 id) {
  Query q = db_.query("SELECT id, title, created_at, updated_at, system_prompt, sampling_json, model_path, mode "
                      "FROM conversations WHERE id = ?1");
  q.bind(1, id);
  if (!q.next()) return std::nullopt;
  return readConversation(q);
}

Conversation ConversationStore::requireConversation(qint64 id) {
  auto c = conversation(id);
  if (!c) throw StorageError(QStringLiteral("No conversation with id %1 in '%2'").arg(id).arg(db_.path()));
  return *c;
}

QList<Conversation> ConversationStore::listConversations() {
  Query q = db_.query("SELECT id, title, created_at, updated_at, system_prompt, sampling_json, model_path, mode "
                      "FROM conversations ORDER BY updated_at DESC, id DESC");
  QList<Conversation> out;
  while (q.next()) out.append(readConversation(q));
  return out;
}

void ConversationStore::renameConversation(qint64 id, const QString& title) {
  db_.query("UPDATE conversations SET title = ?2, updated_at = ?3 WHERE id = ?1")
      .bind(1, id)
      .bind(2, title)
      .bind(3, now())
      .run();
  requireOneRow("conversation", id);
}

void ConversationStore::deleteConversation(qint64 id) {
  db_.query("DELETE FROM conversations WHERE id = ?1").bind(1, id).run();
  requireOneRow("conversation", id);
}

void ConversationStore::setSystemPrompt(qint64 id, const QString& systemPrompt) {
  db_.query("UPDATE conversations SET system_prompt = ?2, updated_at = ?3 WHERE id = ?1")
      .bind(1, id)
      .bind(2, systemPrompt)
      .bind(3, now())
      .run();
  requireOneRow("conversation", id);
}

void ConversationStore::setSamplingJson(qint64 id, const QString& samplingJson) {
  db_.query("UPDATE conversations SET sampling_json = ?2, updated_at = ?3 WHERE id = ?1")
      .bind(1, id)
      .bind(2, samplingJson.isEmpty() ? QStringLiteral("{}") : samplingJson)
      .bind(3, now())
      .run();
  requireOneRow("conversation", id);
}

void ConversationStore::setConversationModel(qint64 id, const QString& modelPath, const QString& mode) {
  db_.query("UPDATE conversations SET model_path = ?2, mode = ?3, updated_at = ?4 WHERE id = ?1")
      .bind(1, id)
      .bind(2, modelPath)
      .bind(3, mode)
      .bind(4, now())
      .run();
  requireOneRow("conversation", id);
}

void ConversationStore::touchConversation(qint64 id, qint64 when) {
  db_.query("UPDATE conversations SET updated_at = ?2 WHERE id = ?1").bind(1, id).bind(2, when).run();
}

// ---- messages ------------------------------------------------------------------------------------

QList<Message> ConversationStore::messages(qint64 conversationId) {
  Query q = db_.query("SELECT " WKV_MESSAGE_COLUMNS " FROM messages WHERE conversation_id = ?1 ORDER BY seq");
  q.bind(1, conversationId);
  QList<Message> out;
  while (q.next()) out.append(readMessage(q));
  return out;
}

std::optional<Message> ConversationStore::message(qint64 messageId) {
  Query q = db_.query("SELECT " WKV_MESSAGE_COLUMNS " FROM messages WHERE id = ?1");
  q.bind(1, messageId);
  if (!q.next()) return std::nullopt;
  return readMessage(q);
}

Message ConversationStore::appendMessage(const Message& draft) {
  Message m = draft;
  m.createdAt = m.updatedAt = now();
  Transaction transaction(db_);
  db_.query("INSERT INTO messages(conversation_id, seq, role, content, created_at, updated_at, model, mode, "
            "prompt_tokens, completion_tokens, tokens_per_second, kv_bytes, complete) VALUES (?1, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = ?1), "
            "?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")
      .bind(1, m.conversationId)
      .bind(2, m.role)
      .bind(3, m.content)
      .bind(4, m.createdAt)
      .bind(5, m.stats.model)
      .bind(6, m.stats.mode)
      .bind(7, m.stats.promptTokens)
      .bind(8, m.stats.completionTokens)
      .bind(9, m.stats.tokensPerSecond)
      .bind(10, m.stats.kvBytes)
      .bind(11, m.complete ? 1 : 0)
      .run();
  m.id = db_.lastInsertRowId();
  {
    Query q = db_.query("SELECT seq FROM messages WHERE id = ?1");
    q.bind(1, m.id);
    q.next();
    m.seq = q.integer(0);
  }
  touchConversation(m.conversationId, m.createdAt);
  transaction.commit();
  return m;
}

Message ConversationStore::appendMessage(qint64 conversationId, const QString& role, const QString& content) {
  Message draft;
  draft.conversationId = conversationId;
  draft.role = role;
  draft.content = content;
  return appendMessage(draft);
}

void ConversationStore::updateStreamingMessage(qint64 messageId, const QString& content, bool complete) {
  const qint64 when = now();
  // One transaction for both rows: with WAL and synchronous=NORMAL a commit is an append to the WAL
  // without fsync, so doing this every second is cheap; a crash loses at most the last update.
  Transaction transaction(db_);
  db_.query("UPDATE messages SET content = ?2, complete = ?3, updated_at = ?4 WHERE id = ?1")
      .bind(1, messageId)
      .bind(2, content)
      .bind(3, complete ? 1 : 0)
      .bind(4, when)
      .run();
  requireOneRow("message", messageId);
  db_.query("UPDATE conversations SET updated_at = ?2 WHERE id = (SELECT conversation_id FROM messages WHERE id = ?1)")
      .bind(1, messageId)
      .bind(2, when)
      .run();
  transaction.commit();
}

void ConversationStore::finishMessage(qint64 messageId, const QString& content, const MessageStats& stats) {
  const qint64 when = now();
  Transaction transaction(db_);
  db_.query("UPDATE messages SET content = ?2, complete = 1, updated_at = ?3, model = ?4, mode = ?5, "
            "prompt_tokens = ?6, completion_tokens = ?7, tokens_per_second = ?8, kv_bytes = ?9 WHERE id = ?1")
      .bind(1, messageId)
      .bind(2, content)
      .bind(3, when)
      .bind(4, stats.model)
      .bind(5, stats.mode)
      .bind(6, stats.promptTokens)
      .bind(7, stats.completionTokens)
      .bind(8, stats.tokensPerSecond)
      .bind(9, stats.kvBytes)
      .run();
  requireOneRow("message", messageId);
  db_.query("UPDATE conversations SET updated_at = ?2 WHERE id = (SELECT conversation_id FROM messages WHERE id = ?1)")
      .bind(1, messageId)
      .bind(2, when)
      .run();
  transaction.commit();
}

int ConversationStore::deleteMessagesAfter(qint64 conversationId, int seq) {
  Transaction transaction(db_);
  db_.query("DELETE FROM messages WHERE conversation_id = ?1 AND seq > ?2").bind(1, conversationId).bind(2, seq).run();
  const int removed = db_.changes();
  if (removed > 0) touchConversation(conversationId, now());
  transaction.commit();
  return removed;
}

// ---- settings ------------------------------------------------------------------------------------

QString ConversationStore::setting(const QString& key, const QString& defaultValue) {
  Query q = db_.query("SELECT value FROM settings WHERE key = ?1");
  q.bind(1, key);
  return q.next() ? q.text(0) : defaultValue;
}

void ConversationStore::setSetting(const QString& key, const QString& value) {
  db_.query("INSERT INTO settings(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .bind(1, key)
      .bind(2, value)
      .run();
}

void ConversationStore::removeSetting(const QString& key) {
  db_.query("DELETE FROM settings WHERE key = ?1").bind(1, key).run();
}

// ---- recent models -------------------------------------------------------------------------------

void ConversationStore::touchRecentModel(const QString& path, const QString& format) {
  Transaction transaction(db_);
  // last_used strictly increases with every touch, so the order is the touch order even when the
  // clock does not advance between two touches.
  db_.query("INSERT INTO recent_models(path, last_used, format) VALUES (?1, "
            "MAX(?2, (SELECT COALESCE(MAX(last_used), 0) + 1 FROM recent_models)), ?3) "
            "ON CONFLICT(path) DO UPDATE SET last_used = excluded.last_used, format = excluded.format")
      .bind(1, path)
      .bind(2, now())
      .bind(3, format)
      .run();
  db_.query("DELETE FROM recent_models WHERE path NOT IN "
            "(SELECT path FROM recent_models ORDER BY last_used DESC LIMIT ?1)")
      .bind(1, kMaxRecentModels)
      .run();
  transaction.commit();
}

QList<RecentModel> ConversationStore::recentModels() {
  Query q = db_.query("SELECT path, last_used, format FROM recent_models ORDER BY last_used DESC");
  QList<RecentModel> out;
  while (q.next()) out.append({q.text(0), q.int64(1), q.text(2)});
  return out;
}

void ConversationStore::removeRecentModel(const QString& path) {
  db_.query("DELETE FROM recent_models WHERE path = ?1").bind(1, path).run();
}

// ---- search --------------------------------------------------------------------------------------

QString ConversationStore::ftsQuery(const QString& text) {
  // Each word becomes an FTS5 string ("..." with " doubled), so nothing the user types is parsed as
  // query syntax (AND/OR/NOT/NEAR, column filters, parentheses, ^, +). Words the tokenizer would
  // reduce to nothing (only punctuation) are dropped. A trailing '*' keeps its prefix meaning.
  QStringList terms;
  for (QString word : text.split(QRegularExpression(QStringLiteral("\\s+")), Qt::SkipEmptyParts)) {
    bool prefix = false;
    while (word.endsWith(QLatin1Char('*'))) {
      word.chop(1);
      prefix = true;
    }
    const bool searchable = std::any_of(word.cbegin(), word.cend(), [](QChar c) { return c.isLetterOrNumber(); });
    if (!searchable) continue;
    word.replace(QLatin1Char('"'), QStringLiteral("\"\""));
    terms << QLatin1Char('"') + word + QLatin1Char('"') + (prefix ? QStringLiteral("*") : QString());
  }
  return terms.join(QLatin1Char(' '));
}

QList<SearchHit> ConversationStore::search(const QString& text, int limit) {
  QList<SearchHit> hits;
  const QString match = ftsQuery(text);
  if (match.isEmpty() || limit <= 0) return hits;
  Query q = db_.query(
      "SELECT m.conversation_id, m.id, c.title, snippet(messages_fts, 0, ?2, ?3, '…', 12) "
      "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
      "JOIN conversations c ON c.id = m.conversation_id "
      "WHERE messages_fts MATCH ?1 ORDER BY rank, m.id");
  q.bind(1, match).bind(2, QString(kMatchStart)).bind(3, QString(kMatchEnd));
  QSet<qint64> seen;
  while (hits.size() < limit && q.next()) {
    const qint64 conversationId = q.int64(0);
    if (seen.contains(conversationId)) continue;
    seen.insert(conversationId);
    hits.append({conversationId, q.int64(1), q.text(2), q.text(3)});
  }
  return hits;
}

QString ConversationStore::snippetToHtml(const QString& snippet) {
  QString html = snippet.toHtmlEscaped();
  html.replace(kMatchStart, QStringLiteral("<b>"));
  html.replace(kMatchEnd, QStringLiteral("</b>"));
  return html;
}

// ---- export --------------------------------------------------------------------------------------

QString ConversationStore::exportMarkdown(qint64 conversationId) {
  const Conversation c = requireConversation(conversationId);
  QStringList blocks;
  blocks << QStringLiteral("# ") + (c.title.isEmpty() ? QStringLiteral("Untitled conversation") : c.title);
  QStringList meta;
  meta << QStringLiteral("- Created: ") + isoUtc(c.createdAt, Qt::ISODate);
  meta << QStringLiteral("- Updated: ") + isoUtc(c.updatedAt, Qt::ISODate);
  if (!c.modelPath.isEmpty()) meta << QStringLiteral("- Model: ") + c.modelPath;
  if (!c.mode.isEmpty()) meta << QStringLiteral("- Mode: ") + c.mode;
  if (!c.samplingJson.isEmpty() && c.samplingJson != QLatin1String("{}"))
    meta << QStringLiteral("- Sampling: `") + c.samplingJson + QLatin1Char('`');
  blocks << meta.join(QLatin1Char('\n'));
  if (!c.systemPrompt.isEmpty()) blocks << QStringLiteral("## System prompt") << stripTrailingNewlines(c.systemPrompt);
  for (const Message& m : messages(conversationId)) {
    blocks << roleHeading(m.role);
    const QString content = stripTrailingNewlines(m.content);
    if (!content.isEmpty()) blocks << content;
    QStringList stats;
    if (!m.stats.model.isEmpty()) stats << m.stats.model;
    if (!m.stats.mode.isEmpty()) stats << m.stats.mode;
    if (m.stats.completionTokens > 0) stats << QStringLiteral("%1 tokens").arg(m.stats.completionTokens);
    if (m.stats.tokensPerSecond > 0) stats << QStringLiteral("%1 tok/s").arg(m.stats.tokensPerSecond, 0, 'f', 1);
    if (!stats.isEmpty()) blocks << QLatin1Char('_') + stats.join(QStringLiteral(" · ")) + QLatin1Char('_');
    if (!m.complete) blocks << QStringLiteral("_(incomplete)_");
  }
  return blocks.join(QStringLiteral("\n\n")) + QLatin1Char('\n');
}

QByteArray ConversationStore::exportJson(qint64 conversationId) {
  const Conversation c = requireConversation(conversationId);
  QJsonObject root;
  root[QStringLiteral("format")] = QStringLiteral("wkvchat.conversation");
  root[QStringLiteral("version")] = 1;
  root[QStringLiteral("id")] = c.id;
  root[QStringLiteral("title")] = c.title;
  root[QStringLiteral("created_at")] = isoUtc(c.createdAt, Qt::ISODateWithMs);
  root[QStringLiteral("updated_at")] = isoUtc(c.updatedAt, Qt::ISODateWithMs);
  root[QStringLiteral("system_prompt")] = c.systemPrompt;
  QJsonParseError parseError;
  const QJsonDocument sampling = QJsonDocument::fromJson(c.samplingJson.toUtf8(), &parseError);
  if (parseError.error == QJsonParseError::NoError && sampling.isObject())
    root[QStringLiteral("sampling")] = sampling.object();
  else
    root[QStringLiteral("sampling")] = c.samplingJson;
  root[QStringLiteral("model_path")] = c.modelPath;
  root[QStringLiteral("mode")] = c.mode;
  QJsonArray list;
  for (const Message& m : messages(conversationId)) {
    QJsonObject o;
    o[QStringLiteral("seq")] = m.seq;
    o[QStringLiteral("role")] = m.role;
    o[QStringLiteral("content")] = m.content;
    o[QStringLiteral("created_at")] = isoUtc(m.createdAt, Qt::ISODateWithMs);
    o[QStringLiteral("updated_at")] = isoUtc(m.updatedAt, Qt::ISODateWithMs);
    o[QStringLiteral("complete")] = m.complete;
    o[QStringLiteral("model")] = m.stats.model;
    o[QStringLiteral("mode")] = m.stats.mode;
    o[QStringLiteral("prompt_tokens")] = m.stats.promptTokens;
    o[QStringLiteral("completion_tokens")] = m.stats.completionTokens;
    o[QStringLiteral("tokens_per_second")] = m.stats.tokensPerSecond;
    o[QStringLiteral("kv_bytes")] = m.stats.kvBytes;
    list.append(o);
  }
  root[QStringLiteral("messages")] = list;
  return QJsonDocument(root).toJson(QJsonDocument::Indented);
}
