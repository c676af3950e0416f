// ConversationStore: conversations, messages and streaming, cascade deletes, settings, recent models,
// full-text search (including hostile query text) and the exact export formats.
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>

#include "app_test_util.h"
#include "storage/ConversationStore.h"
#include "storage/Database.h"
#include "storage/StorageError.h"

namespace {

// 2024-03-01T09:30:00Z
constexpr qint64 kT0 = 1709285400000;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.isValid());
    const auto r = db_.open(dir_.filePath(QStringLiteral("chat.sqlite3")));
    ASSERT_TRUE(r.ok) << r.error.toStdString();
    store_.setClock([this] { return now_; });
  }
  int count(const char* sql) {
    Query q = db_.query(sql);
    EXPECT_TRUE(q.next());
    return q.integer(0);
  }
  QTemporaryDir dir_;
  Database db_;
  ConversationStore store_{db_};
  qint64 now_ = kT0;
};

TEST_F(StoreTest, ConversationsAreListedMostRecentlyUpdatedFirst) {
  const auto a = store_.createConversation(QStringLiteral("A"));
  now_ += 10;
  const auto b = store_.createConversation(QStringLiteral("B"), QStringLiteral("sys"), QStringLiteral("{\"top_k\":5}"),
                                           QStringLiteral("/m.wkvq"), QStringLiteral("w4"));
  now_ += 10;
  const auto c = store_.createConversation(QStringLiteral("C"));
  EXPECT_EQ(a.createdAt, kT0);
  EXPECT_EQ(b.updatedAt, kT0 + 10);

  auto ids = [&] {
    QList<qint64> out;
    for (const auto& conv : store_.listConversations()) out << conv.id;
    return out;
  };
  EXPECT_EQ(ids(), (QList<qint64>{c.id, b.id, a.id}));
  now_ += 10;
  store_.appendMessage(a.id, QStringLiteral("user"), QStringLiteral("hi"));  // touches A
  EXPECT_EQ(ids(), (QList<qint64>{a.id, c.id, b.id}));
  now_ += 10;
  store_.renameConversation(b.id, QStringLiteral("B2"));
  EXPECT_EQ(ids(), (QList<qint64>{b.id, a.id, c.id}));

  const auto loaded = store_.conversation(b.id);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->title, QStringLiteral("B2"));
  EXPECT_EQ(loaded->systemPrompt, QStringLiteral("sys"));
  EXPECT_EQ(loaded->samplingJson, QStringLiteral("{\"top_k\":5}"));
  EXPECT_EQ(loaded->modelPath, QStringLiteral("/m.wkvq"));
  EXPECT_EQ(loaded->mode, QStringLiteral("w4"));
  EXPECT_EQ(loaded->updatedAt, kT0 + 40);

  store_.setSystemPrompt(c.id, QStringLiteral("Be terse."));
  store_.setSamplingJson(c.id, QStringLiteral("{\"temperature\":0}"));
  store_.setConversationModel(c.id, QStringLiteral("/x.wkvq"), QStringLiteral("fp16"));
  const auto c2 = store_.conversation(c.id);
  EXPECT_EQ(c2->systemPrompt, QStringLiteral("Be terse."));
  EXPECT_EQ(c2->samplingJson, QStringLiteral("{\"temperature\":0}"));
  EXPECT_EQ(c2->modelPath, QStringLiteral("/x.wkvq"));
  EXPECT_EQ(c2->mode, QStringLiteral("fp16"));

  EXPECT_FALSE(store_.conversation(9999).has_value());
  EXPECT_THROW(store_.renameConversation(9999, QStringLiteral("x")), StorageError);
  EXPECT_THROW(store_.deleteConversation(9999), StorageError);
}

TEST_F(StoreTest, MessagesGetIncreasingSeqAndStreamingUpdatesPersist) {
  const auto conv = store_.createConversation(QStringLiteral("chat"));
  const auto u = store_.appendMessage(conv.id, QStringLiteral("user"), QStringLiteral("Tell me a joke"));
  EXPECT_EQ(u.seq, 1);
  EXPECT_TRUE(u.complete);
  Message draft;
  draft.conversationId = conv.id;
  draft.role = QStringLiteral("assistant");
  draft.complete = false;
  const auto a = store_.appendMessage(draft);
  EXPECT_EQ(a.seq, 2);

  now_ += 1000;
  store_.updateStreamingMessage(a.id, QStringLiteral("Why did"));
  auto m = store_.message(a.id);
  EXPECT_EQ(m->content, QStringLiteral("Why did"));
  EXPECT_FALSE(m->complete);
  EXPECT_EQ(m->updatedAt, kT0 + 1000);
  EXPECT_EQ(store_.conversation(conv.id)->updatedAt, kT0 + 1000);

  now_ += 1000;
  MessageStats stats{QStringLiteral("llama"), QStringLiteral("w4kv4"), 10, 20, 55.5, 8192};
  store_.finishMessage(a.id, QStringLiteral("Why did the chicken..."), stats);
  m = store_.message(a.id);
  EXPECT_EQ(m->content, QStringLiteral("Why did the chicken..."));
  EXPECT_TRUE(m->complete);
  EXPECT_EQ(m->stats.model, QStringLiteral("llama"));
  EXPECT_EQ(m->stats.mode, QStringLiteral("w4kv4"));
  EXPECT_EQ(m->stats.promptTokens, 10);
  EXPECT_EQ(m->stats.completionTokens, 20);
  EXPECT_DOUBLE_EQ(m->stats.tokensPerSecond, 55.5);
  EXPECT_EQ(m->stats.kvBytes, 8192);
  EXPECT_EQ(m->createdAt, kT0);
  EXPECT_EQ(m->updatedAt, kT0 + 2000);

  store_.appendMessage(conv.id, QStringLiteral("user"), QStringLiteral("Another"));
  store_.appendMessage(conv.id, QStringLiteral("assistant"), QStringLiteral("Sure"));
  EXPECT_EQ(store_.deleteMessagesAfter(conv.id, 2), 2);
  auto list = store_.messages(conv.id);
  ASSERT_EQ(list.size(), 2);
  EXPECT_EQ(list[1].id, a.id);
  // After a deletion, numbering continues from the last remaining message.
  EXPECT_EQ(store_.appendMessage(conv.id, QStringLiteral("user"), QStringLiteral("Again")).seq, 3);
  EXPECT_EQ(store_.deleteMessagesAfter(conv.id, 99), 0);

  EXPECT_THROW(store_.updateStreamingMessage(9999, QStringLiteral("x")), StorageError);
  EXPECT_THROW(store_.finishMessage(9999, QStringLiteral("x"), {}), StorageError);
}

TEST_F(StoreTest, InvalidRoleAndUnknownConversationAreRejected) {
  const auto conv = store_.createConversation(QStringLiteral("c"));
  EXPECT_THROW(store_.appendMessage(conv.id, QStringLiteral("robot"), QStringLiteral("x")), StorageError);
  try {
    store_.appendMessage(4242, QStringLiteral("user"), QStringLiteral("x"));
    FAIL() << "a message for a missing conversation was stored";
  } catch (const StorageError& e) {
    EXPECT_TRUE(e.message().contains(QStringLiteral("FOREIGN KEY"))) << e.message().toStdString();
  }
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 0);
  // The failed append rolled back: the conversation is untouched.
  EXPECT_EQ(store_.conversation(conv.id)->updatedAt, kT0);
}

TEST_F(StoreTest, DeletingAConversationCascadesToMessagesAndSearch) {
  const auto keep = store_.createConversation(QStringLiteral("keep"));
  const auto drop = store_.createConversation(QStringLiteral("drop"));
  store_.appendMessage(keep.id, QStringLiteral("user"), QStringLiteral("pelican facts"));
  store_.appendMessage(drop.id, QStringLiteral("user"), QStringLiteral("pelican jokes"));
  store_.appendMessage(drop.id, QStringLiteral("assistant"), QStringLiteral("no jokes here"));
  db_.exec("INSERT INTO documents(conversation_id, name, content, created_at) VALUES (2, 'd', 'x', 0)");
  ASSERT_EQ(store_.search(QStringLiteral("pelican")).size(), 2);

  store_.deleteConversation(drop.id);
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM messages WHERE conversation_id = 2"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM documents"), 0);
  const auto hits = store_.search(QStringLiteral("pelican"));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].conversationId, keep.id);
  EXPECT_TRUE(store_.search(QStringLiteral("jokes")).isEmpty());
  db_.exec("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')");
}

TEST_F(StoreTest, SettingsAndRecentModels) {
  EXPECT_EQ(store_.setting(QStringLiteral("theme"), QStringLiteral("light")), QStringLiteral("light"));
  store_.setSetting(QStringLiteral("theme"), QStringLiteral("dark"));
  store_.setSetting(QStringLiteral("theme"), QStringLiteral("solarized"));
  EXPECT_EQ(store_.setting(QStringLiteral("theme")), QStringLiteral("solarized"));
  store_.removeSetting(QStringLiteral("theme"));
  EXPECT_EQ(store_.setting(QStringLiteral("theme")), QString());

  // 12 models touched with a clock that does not move: order is still the touch order, 10 kept.
  for (int i = 0; i < 12; ++i) store_.touchRecentModel(QStringLiteral("/m/%1").arg(i), QStringLiteral("hf"));
  auto recent = store_.recentModels();
  ASSERT_EQ(recent.size(), ConversationStore::kMaxRecentModels);
  EXPECT_EQ(recent.front().path, QStringLiteral("/m/11"));
  EXPECT_EQ(recent.back().path, QStringLiteral("/m/2"));
  store_.touchRecentModel(QStringLiteral("/m/5"), QStringLiteral("wkvq"));
  recent = store_.recentModels();
  ASSERT_EQ(recent.size(), 10);
  EXPECT_EQ(recent.front().path, QStringLiteral("/m/5"));
  EXPECT_EQ(recent.front().format, QStringLiteral("wkvq"));
  EXPECT_EQ(recent[1].path, QStringLiteral("/m/11"));
  EXPECT_EQ(recent.back().path, QStringLiteral("/m/2"));
  store_.removeRecentModel(QStringLiteral("/m/5"));
  EXPECT_EQ(store_.recentModels().size(), 9);
}

TEST_F(StoreTest, FtsQueryQuotesEveryWord) {
  // Expected strings derived by hand from the FTS5 string syntax: "..." with " doubled.
  EXPECT_EQ(ConversationStore::ftsQuery(QStringLiteral("hello world")), QStringLiteral("\"hello\" \"world\""));
  EXPECT_EQ(ConversationStore::ftsQuery(QStringLiteral("  say \"hi\"  ")), QStringLiteral("\"say\" \"\"\"hi\"\"\""));
  EXPECT_EQ(ConversationStore::ftsQuery(QStringLiteral("strea*")), QStringLiteral("\"strea\"*"));
  EXPECT_EQ(ConversationStore::ftsQuery(QStringLiteral("a OR b")), QStringLiteral("\"a\" \"OR\" \"b\""));
  EXPECT_EQ(ConversationStore::ftsQuery(QStringLiteral("content:x")), QStringLiteral("\"content:x\""));
  EXPECT_EQ(ConversationStore::ftsQuery(QStringLiteral("\" ( ) * ^ - + ...")), QString());
  EXPECT_EQ(ConversationStore::ftsQuery(QString()), QString());
}

TEST_F(StoreTest, SearchFindsWordsAndSurvivesHostileInput) {
  const auto c1 = store_.createConversation(QStringLiteral("Quant"));
  const auto c2 = store_.createConversation(QStringLiteral("Quotes"));
  const auto c3 = store_.createConversation(QStringLiteral("Ops"));
  store_.appendMessage(c1.id, QStringLiteral("user"), QStringLiteral("How does the quick brown fox quantize?"));
  const auto best =
      store_.appendMessage(c1.id, QStringLiteral("assistant"), QStringLiteral("Quantize quantize quantize weights"));
  store_.appendMessage(c2.id, QStringLiteral("user"), QStringLiteral("He said \"hello\" to the C++ fans (really)"));
  store_.appendMessage(c3.id, QStringLiteral("user"), QStringLiteral("NOT this AND that OR NEAR: col:umn"));

  // Single word, several hits in one conversation: one hit, its best-ranked message.
  auto hits = store_.search(QStringLiteral("quantize"));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].conversationId, c1.id);
  EXPECT_EQ(hits[0].messageId, best.id);
  EXPECT_EQ(hits[0].title, QStringLiteral("Quant"));
  // All words must occur (in any order); case-insensitive; stemming (foxes → fox).
  hits = store_.search(QStringLiteral("FOXES brown"));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].snippet, QStringLiteral("How does the quick \x02" "brown\x03 \x02" "fox\x03 quantize?"));
  EXPECT_EQ(ConversationStore::snippetToHtml(QStringLiteral("a<b \x02" "c\x03")), QStringLiteral("a&lt;b <b>c</b>"));
  EXPECT_TRUE(store_.search(QStringLiteral("brown pelican")).isEmpty());
  // Prefix.
  hits = store_.search(QStringLiteral("quan*"));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].conversationId, c1.id);
  // Quotes and punctuation are literal.
  hits = store_.search(QStringLiteral("\"hello\""));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].conversationId, c2.id);
  hits = store_.search(QStringLiteral("(really)"));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].conversationId, c2.id);
  // Operators are words: "NOT this" finds the message containing both words, not a negation.
  hits = store_.search(QStringLiteral("NOT this"));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].conversationId, c3.id);
  hits = store_.search(QStringLiteral("col:umn"));
  ASSERT_EQ(hits.size(), 1);
  EXPECT_EQ(hits[0].conversationId, c3.id);
  // Nothing here may throw (FTS5 syntax errors) or match everything.
  for (const char* hostile : {"\"", "\"\"\"", "(", ")", "*", "AND", "a AND", "NEAR(", "^", "-", "+", ":",
                              "'; DROP TABLE messages; --", "content:", "\\", "%", "_", "\u00e9\u0301"}) {
    EXPECT_NO_THROW({
      const auto h = store_.search(QString::fromUtf8(hostile));
      EXPECT_LE(h.size(), 1) << hostile;
    }) << hostile;
  }
  EXPECT_EQ(count("SELECT count(*) FROM messages"), 4);  // the DROP TABLE text did nothing
  EXPECT_EQ(store_.search(QStringLiteral("quantize"), 0).size(), 0);
}

TEST_F(StoreTest, SearchRanksConversationsAndLimits) {
  for (int i = 0; i < 5; ++i) {
    const auto c = store_.createConversation(QStringLiteral("c%1").arg(i));
    store_.appendMessage(c.id, QStringLiteral("user"), QStringLiteral("llama ") + QStringLiteral("filler ").repeated(i * 10));
  }
  const auto hits = store_.search(QStringLiteral("llama"), 3);
  ASSERT_EQ(hits.size(), 3);
  // bm25: the shorter the message, the better the single match ranks.
  EXPECT_EQ(hits[0].title, QStringLiteral("c0"));
  EXPECT_EQ(hits[1].title, QStringLiteral("c1"));
  EXPECT_EQ(hits[2].title, QStringLiteral("c2"));
}

// A conversation with every export feature: metadata, system prompt, a finished reply with
// statistics, a trailing newline in content, and an interrupted reply.
qint64 buildExportFixture(ConversationStore& store, qint64& now) {
  const auto c = store.createConversation(QStringLiteral("Rust vs C++"), QStringLiteral("Be brief."),
                                          QStringLiteral("{\"temperature\":0.7,\"top_k\":40}"),
                                          QStringLiteral("/models/llama-2-7b.wkvq"), QStringLiteral("w4kv4"));
  now += 1000;
  store.appendMessage(c.id, QStringLiteral("user"), QStringLiteral("Hello there"));
  now += 1000;
  Message draft;
  draft.conversationId = c.id;
  draft.role = QStringLiteral("assistant");
  draft.complete = false;
  const auto a = store.appendMessage(draft);
  now += 1000;
  store.finishMessage(a.id, QStringLiteral("General Kenobi!\n"),
                      {QStringLiteral("llama-2-7b"), QStringLiteral("w4kv4"), 12, 34, 56.78, 139264});
  now += 1000;
  store.appendMessage(c.id, QStringLiteral("user"), QStringLiteral("Thanks"));
  now += 1000;
  const auto b = store.appendMessage(draft);
  now += 1000;
  store.updateStreamingMessage(b.id, QStringLiteral("Partial ans"));
  return c.id;
}

TEST_F(StoreTest, ExportMarkdownExactFormat) {
  const qint64 id = buildExportFixture(store_, now_);
  const QString expected = QStringLiteral(
      "# Rust vs C++\n"
      "\n"
      "- Created: 2024-03-01T09:30:00Z\n"
      "- Updated: 2024-03-01T09:30:06Z\n"
      "- Model: /models/llama-2-7b.wkvq\n"
      "- Mode: w4kv4\n"
      "- Sampling: `{\"temperature\":0.7,\"top_k\":40}`\n"
      "\n"
      "## System prompt\n"
      "\n"
      "Be brief.\n"
      "\n"
      "## User\n"
      "\n"
      "Hello there\n"
      "\n"
      "## Assistant\n"
      "\n"
      "General Kenobi!\n"
      "\n"
      "_llama-2-7b \u00b7 w4kv4 \u00b7 34 tokens \u00b7 56.8 tok/s_\n"
      "\n"
      "## User\n"
      "\n"
      "Thanks\n"
      "\n"
      "## Assistant\n"
      "\n"
      "Partial ans\n"
      "\n"
      "_(incomplete)_\n");
  EXPECT_EQ(store_.exportMarkdown(id), expected);

  const auto bare = store_.createConversation(QString());
  EXPECT_EQ(store_.exportMarkdown(bare.id), QStringLiteral("# Untitled conversation\n\n- Created: "
                                                           "2024-03-01T09:30:06Z\n- Updated: 2024-03-01T09:30:06Z\n"));
  EXPECT_THROW(store_.exportMarkdown(9999), StorageError);
}

TEST_F(StoreTest, ExportJsonExactFormat) {
  const qint64 id = buildExportFixture(store_, now_);
  const QByteArray expected = QByteArrayLiteral(
      "{\n"
      "    \"created_at\": \"2024-03-01T09:30:00.000Z\",\n"
      "    \"format\": \"wkvchat.conversation\",\n"
      "    \"id\": 1,\n"
      "    \"messages\": [\n"
      "        {\n"
      "            \"complete\": true,\n"
      "            \"completion_tokens\": 0,\n"
      "            \"content\": \"Hello there\",\n"
      "            \"created_at\": \"2024-03-01T09:30:01.000Z\",\n"
      "            \"kv_bytes\": 0,\n"
      "            \"mode\": \"\",\n"
      "            \"model\": \"\",\n"
      "            \"prompt_tokens\": 0,\n"
      "            \"role\": \"user\",\n"
      "            \"seq\": 1,\n"
      "            \"tokens_per_second\": 0,\n"
      "            \"updated_at\": \"2024-03-01T09:30:01.000Z\"\n"
      "        },\n"
      "        {\n"
      "            \"complete\": true,\n"
      "            \"completion_tokens\": 34,\n"
      "            \"content\": \"General Kenobi!\\n\",\n"
      "            \"created_at\": \"2024-03-01T09:30:02.000Z\",\n"
      "            \"kv_bytes\": 139264,\n"
      "            \"mode\": \"w4kv4\",\n"
      "            \"model\": \"llama-2-7b\",\n"
      "            \"prompt_tokens\": 12,\n"
      "            \"role\": \"assistant\",\n"
      "            \"seq\": 2,\n"
      "            \"tokens_per_second\": 56.78,\n"
      "            \"updated_at\": \"2024-03-01T09:30:03.000Z\"\n"
      "        },\n"
      "        {\n"
      "            \"complete\": true,\n"
      "            \"completion_tokens\": 0,\n"
      "            \"content\": \"Thanks\",\n"
      "            \"created_at\": \"2024-03-01T09:30:04.000Z\",\n"
      "            \"kv_bytes\": 0,\n"
      "            \"mode\": \"\",\n"
      "            \"model\": \"\",\n"
      "            \"prompt_tokens\": 0,\n"
      "            \"role\": \"user\",\n"
      "            \"seq\": 3,\n"
      "            \"tokens_per_second\": 0,\n"
      "            \"updated_at\": \"2024-03-01T09:30:04.000Z\"\n"
      "        },\n"
      "        {\n"
      "            \"complete\": false,\n"
      "            \"completion_tokens\": 0,\n"
      "            \"content\": \"Partial ans\",\n"
      "            \"created_at\": \"2024-03-01T09:30:05.000Z\",\n"
      "            \"kv_bytes\": 0,\n"
      "            \"mode\": \"\",\n"
      "            \"model\": \"\",\n"
      "            \"prompt_tokens\": 0,\n"
      "            \"role\": \"assistant\",\n"
      "            \"seq\": 4,\n"
      "            \"tokens_per_second\": 0,\n"
      "            \"updated_at\": \"2024-03-01T09:30:06.000Z\"\n"
      "        }\n"
      "    ],\n"
      "    \"mode\": \"w4kv4\",\n"
      "    \"model_path\": \"/models/llama-2-7b.wkvq\",\n"
      "    \"sampling\": {\n"
      "        \"temperature\": 0.7,\n"
      "        \"top_k\": 40\n"
      "    },\n"
      "    \"system_prompt\": \"Be brief.\",\n"
      "    \"title\": \"Rust vs C++\",\n"
      "    \"updated_at\": \"2024-03-01T09:30:06.000Z\",\n"
      "    \"version\": 1\n"
      "}\n");
  const QByteArray json = store_.exportJson(id);
  EXPECT_EQ(json.toStdString(), expected.toStdString());
  // And it reads back as what was stored.
  const QJsonObject o = QJsonDocument::fromJson(json).object();
  EXPECT_EQ(o.value(QStringLiteral("messages")).toArray().size(), 4);

  // Sampling text that is not a JSON object is exported as the raw string.
  const auto odd = store_.createConversation(QStringLiteral("odd"), {}, QStringLiteral("not json"));
  EXPECT_EQ(QJsonDocument::fromJson(store_.exportJson(odd.id)).object().value(QStringLiteral("sampling")).toString(),
            QStringLiteral("not json"));
}

}  // namespace
