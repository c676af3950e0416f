// The database file: fresh schema, migrations from fixtures of every earlier schema version, refusing
// newer files, setting damaged files aside, and surviving a kill -9 in the middle of streaming writes.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <QRegularExpression>

#include <random>

#include "app_test_util.h"
#include "storage/ConversationStore.h"
#include "storage/Database.h"
#include "storage/StorageError.h"

using apptest::RawDb;

namespace {

// Verbatim copies of every shipped migration. A database written by an earlier release was created
// by exactly this SQL, so fixtures are built from these copies, not from the code under test.
// Never edit these; when a migration is added, append its copy here.
const char* const kFrozenV1 = R"sql(
CREATE TABLE conversations(
  id            INTEGER PRIMARY KEY,
  title         TEXT    NOT NULL DEFAULT '',
  created_at    INTEGER NOT NULL,
  updated_at    INTEGER NOT NULL,
  system_prompt TEXT    NOT NULL DEFAULT '',
  sampling_json TEXT    NOT NULL DEFAULT '{}',
  model_path    TEXT    NOT NULL DEFAULT '',
  mode          TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX conversations_by_updated ON conversations(updated_at DESC, id DESC);

CREATE TABLE messages(
  id                INTEGER PRIMARY KEY,
  conversation_id   INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  seq               INTEGER NOT NULL,
  role              TEXT    NOT NULL CHECK(role IN ('system','user','assistant')),
  content           TEXT    NOT NULL DEFAULT '',
  created_at        INTEGER NOT NULL,
  updated_at        INTEGER NOT NULL,
  model             TEXT    NOT NULL DEFAULT '',
  mode              TEXT    NOT NULL DEFAULT '',
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  tokens_per_second REAL    NOT NULL DEFAULT 0,
  kv_bytes          INTEGER NOT NULL DEFAULT 0,
  complete          INTEGER NOT NULL DEFAULT 1,
  UNIQUE(conversation_id, seq)
);

CREATE TABLE settings(
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE recent_models(
  path      TEXT    PRIMARY KEY,
  last_used INTEGER NOT NULL,
  format    TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;

CREATE VIRTUAL TABLE messages_fts USING fts5(
  content, content='messages', content_rowid='id', tokenize='unicode61');
CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
  INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_au AFTER UPDATE OF content ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
  INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
)sql";

const char* const kFrozenV2 = R"sql(
CREATE TABLE documents(
  id              INTEGER PRIMARY KEY,
  conversation_id INTEGER REFERENCES conversations(id) ON DELETE CASCADE,
  name            TEXT    NOT NULL,
  path            TEXT    NOT NULL DEFAULT '',
  content         TEXT    NOT NULL,
  token_count     INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER NOT NULL
);
CREATE INDEX documents_by_conversation ON documents(conversation_id);

CREATE TABLE comparisons(
  id            INTEGER PRIMARY KEY,
  created_at    INTEGER NOT NULL,
  prompt        TEXT    NOT NULL,
  settings_json TEXT    NOT NULL DEFAULT '{}'
);

CREATE TABLE comparison_panes(
  id                INTEGER PRIMARY KEY,
  comparison_id     INTEGER NOT NULL REFERENCES comparisons(id) ON DELETE CASCADE,
  pane              INTEGER NOT NULL,
  mode              TEXT    NOT NULL,
  model_path        TEXT    NOT NULL DEFAULT '',
  output            TEXT    NOT NULL DEFAULT '',
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  tokens_per_second REAL    NOT NULL DEFAULT 0,
  kv_bytes          INTEGER NOT NULL DEFAULT 0,
  perplexity        REAL,
  error             TEXT    NOT NULL DEFAULT '',
  complete          INTEGER NOT NULL DEFAULT 0,
  UNIQUE(comparison_id, pane)
);

DROP TRIGGER messages_fts_ai;
DROP TRIGGER messages_fts_ad;
DROP TRIGGER messages_fts_au;
DROP TABLE messages_fts;
CREATE VIRTUAL TABLE messages_fts USING fts5(
  content, content='messages', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER messages_fts_ai AFTER INSERT ON messages BEGIN
  INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_ad AFTER DELETE ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_au AFTER UPDATE OF content ON messages BEGIN
  INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
  INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
)sql";

struct Frozen {
  const char* sql;
  bool destructive;
};
const char* const kFrozenV3 = R"sql(
ALTER TABLE comparison_panes ADD COLUMN weight_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE comparison_panes ADD COLUMN diverge_at INTEGER;
ALTER TABLE comparison_panes ADD COLUMN nll REAL;
)sql";

const Frozen kFrozen[] = {{kFrozenV1, false}, {kFrozenV2, true}, {kFrozenV3, false}};
constexpr int kFrozenCount = static_cast<int>(std::size(kFrozen));

// A database as release `version` left it: the frozen migrations 1..version, then sample data that
// every schema version since v1 can hold (the v1 tables are never dropped).
void makeFixture(const QString& path, int version) {
  RawDb raw(path);
  for (int v = 1; v <= version; ++v) {
    raw.exec("BEGIN");
    raw.exec(kFrozen[v - 1].sql);
    raw.exec("PRAGMA user_version = " + std::to_string(v));
    raw.exec("COMMIT");
  }
  raw.exec(R"sql(
    PRAGMA foreign_keys = ON;
    INSERT INTO conversations(id, title, created_at, updated_at, system_prompt, sampling_json, model_path, mode)
      VALUES (1, 'Trip planning', 1000, 5000, 'You are a travel agent.', '{"temperature":0.5}', '/m/llama.wkvq', 'w4kv4'),
             (2, 'Recipes', 2000, 3000, '', '{}', '', '');
    INSERT INTO messages(conversation_id, seq, role, content, created_at, updated_at)
      VALUES (1, 1, 'user', 'Where should we go running in Lisbon?', 1100, 1100),
             (1, 2, 'assistant', 'Try the riverside path in Belém.', 1200, 1300),
             (2, 1, 'user', 'A quick soup, please.', 2100, 2100);
    UPDATE messages SET model = 'llama', mode = 'w4kv4', prompt_tokens = 12, completion_tokens = 9,
      tokens_per_second = 42.5, kv_bytes = 4096 WHERE seq = 2;
    INSERT INTO settings(key, value) VALUES ('theme', 'dark');
    INSERT INTO recent_models(path, last_used, format) VALUES ('/m/llama.wkvq', 4000, 'wkvq');
  )sql");
}

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.isValid());
    path_ = dir_.filePath(QStringLiteral("chat.sqlite3"));
  }
  QTemporaryDir dir_;
  QString path_;
};

TEST_F(StorageTest, ShippedMigrationsAreFrozen) {
  const auto& migrations = builtinMigrations();
  ASSERT_EQ(static_cast<int>(migrations.size()), kFrozenCount)
      << "a migration was added: append a verbatim copy of its SQL to kFrozen in this test";
  for (int i = 0; i < kFrozenCount; ++i) {
    EXPECT_EQ(migrations[i].version, i + 1);
    EXPECT_STREQ(migrations[i].sql, kFrozen[i].sql) << "shipped migration v" << i + 1 << " was edited";
    EXPECT_EQ(migrations[i].destructive, kFrozen[i].destructive);
  }
  EXPECT_EQ(latestSchemaVersion(), kFrozenCount);
}

TEST_F(StorageTest, FreshDatabaseHasLatestSchemaAndPragmas) {
  Database db;
  const Database::OpenResult r = db.open(path_);
  ASSERT_TRUE(r.ok) << r.error.toStdString();
  EXPECT_TRUE(r.error.isEmpty());
  EXPECT_TRUE(r.warning.isEmpty());
  EXPECT_EQ(r.fromVersion, 0);
  EXPECT_EQ(r.toVersion, kFrozenCount);
  EXPECT_TRUE(r.backupPath.isEmpty()) << "nothing to back up in a new file";

  auto pragma = [&](const char* sql) {
    Query q = db.query(sql);
    EXPECT_TRUE(q.next());
    return q.text(0);
  };
  EXPECT_EQ(pragma("PRAGMA journal_mode"), QStringLiteral("wal"));
  EXPECT_EQ(pragma("PRAGMA foreign_keys"), QStringLiteral("1"));
  EXPECT_EQ(pragma("PRAGMA synchronous"), QStringLiteral("1"));  // NORMAL
  EXPECT_EQ(pragma("PRAGMA busy_timeout"), QStringLiteral("5000"));
  db.close();

  RawDb raw(path_);
  EXPECT_EQ(raw.one("PRAGMA user_version"), std::to_string(kFrozenCount));
  EXPECT_EQ(raw.rows("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'messages_fts_%' "
                     "AND name NOT LIKE 'sqlite_%' ORDER BY name"),
            "comparison_panes\ncomparisons\nconversations\ndocuments\nmessages\nmessages_fts\nrecent_models\n"
            "settings");
  EXPECT_EQ(raw.rows("SELECT name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name"),
            "messages_fts_ad\nmessages_fts_ai\nmessages_fts_au");
  EXPECT_EQ(raw.one("PRAGMA integrity_check"), "ok");
  const QStringList files = apptest::filesIn(dir_.path());
  for (const QString& f : files) EXPECT_FALSE(f.contains(QStringLiteral(".bak-"))) << f.toStdString();
}

TEST_F(StorageTest, EmptyExistingFileIsInitialized) {
  apptest::writeAll(path_, QByteArray());
  Database db;
  const auto r = db.open(path_);
  ASSERT_TRUE(r.ok) << r.error.toStdString();
  EXPECT_TRUE(r.warning.isEmpty());
  EXPECT_EQ(r.fromVersion, 0);
  EXPECT_EQ(db.userVersion(), kFrozenCount);
}

TEST_F(StorageTest, DefaultPathIsInAppData) {
  EXPECT_TRUE(Database::defaultPath().endsWith(QStringLiteral("/wkvchat.sqlite3")));
}

// Every earlier version's file opens with the current code, keeps all its data, ends at the latest
// version, and was backed up first exactly when a destructive migration ran.
TEST_F(StorageTest, MigratesFixturesOfEveryEarlierVersion) {
  for (int from = 1; from < kFrozenCount; ++from) {
    SCOPED_TRACE("fixture at schema v" + std::to_string(from));
    const QString path = dir_.filePath(QStringLiteral("v%1.sqlite3").arg(from));
    makeFixture(path, from);
    bool destructive = false;
    for (int v = from + 1; v <= kFrozenCount; ++v) destructive = destructive || kFrozen[v - 1].destructive;

    Database db;
    const auto r = db.open(path);
    ASSERT_TRUE(r.ok) << r.error.toStdString();
    EXPECT_EQ(r.fromVersion, from);
    EXPECT_EQ(r.toVersion, kFrozenCount);
    EXPECT_EQ(db.userVersion(), kFrozenCount);
    EXPECT_EQ(db.integrityCheck(), QStringLiteral("ok"));

    ConversationStore store(db);
    const auto list = store.listConversations();
    ASSERT_EQ(list.size(), 2);
    EXPECT_EQ(list[0].title, QStringLiteral("Trip planning"));
    EXPECT_EQ(list[0].updatedAt, 5000);
    EXPECT_EQ(list[0].systemPrompt, QStringLiteral("You are a travel agent."));
    EXPECT_EQ(list[0].samplingJson, QStringLiteral("{\"temperature\":0.5}"));
    EXPECT_EQ(list[0].modelPath, QStringLiteral("/m/llama.wkvq"));
    EXPECT_EQ(list[1].title, QStringLiteral("Recipes"));
    const auto msgs = store.messages(1);
    ASSERT_EQ(msgs.size(), 2);
    EXPECT_EQ(msgs[1].content, QStringLiteral("Try the riverside path in Belém."));
    EXPECT_EQ(msgs[1].stats.completionTokens, 9);
    EXPECT_DOUBLE_EQ(msgs[1].stats.tokensPerSecond, 42.5);
    EXPECT_EQ(msgs[1].stats.kvBytes, 4096);
    EXPECT_EQ(store.setting(QStringLiteral("theme")), QStringLiteral("dark"));
    ASSERT_EQ(store.recentModels().size(), 1);
    EXPECT_EQ(store.recentModels()[0].format, QStringLiteral("wkvq"));

    // v2's rebuilt index: stemming ("run" finds "running"), diacritics folded ("belem" finds "Belém").
    auto hits = store.search(QStringLiteral("run"));
    ASSERT_EQ(hits.size(), 1);
    EXPECT_EQ(hits[0].conversationId, 1);
    hits = store.search(QStringLiteral("belem"));
    ASSERT_EQ(hits.size(), 1);
    EXPECT_EQ(hits[0].messageId, msgs[1].id);
    db.exec("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')");
    // v2's new tables work, with their foreign keys.
    db.exec("INSERT INTO documents(conversation_id, name, content, created_at) VALUES (1, 'a.txt', 'text', 1)");
    db.exec("INSERT INTO comparisons(id, created_at, prompt) VALUES (7, 1, 'Hi')");
    db.exec("INSERT INTO comparison_panes(comparison_id, pane, mode) VALUES (7, 0, 'fp16'), (7, 1, 'w4kv4')");
    EXPECT_THROW(db.exec("INSERT INTO comparison_panes(comparison_id, pane, mode) VALUES (99, 0, 'fp16')"),
                 StorageError);

    if (destructive) {
      ASSERT_FALSE(r.backupPath.isEmpty());
      const QRegularExpression name(QRegularExpression::anchoredPattern(
          QRegularExpression::escape(path) + QStringLiteral("\\.bak-v%1-\\d{8}-\\d{6}").arg(from)));
      EXPECT_TRUE(name.match(r.backupPath).hasMatch()) << r.backupPath.toStdString();
      RawDb backup(r.backupPath);
      EXPECT_EQ(backup.one("PRAGMA user_version"), std::to_string(from));
      EXPECT_EQ(backup.one("PRAGMA integrity_check"), "ok");
      EXPECT_EQ(backup.one("SELECT group_concat(content, '/') FROM (SELECT content FROM messages ORDER BY id)"),
                "Where should we go running in Lisbon?/Try the riverside path in Belém./A quick soup, please.");
    } else {
      EXPECT_TRUE(r.backupPath.isEmpty());
    }
  }
}

TEST_F(StorageTest, AlreadyLatestOpensWithoutMigrationOrBackup) {
  { Database db; ASSERT_TRUE(db.open(path_).ok); }
  Database db;
  const auto r = db.open(path_);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.fromVersion, kFrozenCount);
  EXPECT_TRUE(r.backupPath.isEmpty());
}

TEST_F(StorageTest, NewerSchemaIsRefusedAndLeftUntouched) {
  const int newer = kFrozenCount + 5;
  {
    RawDb raw(path_);
    raw.exec("CREATE TABLE future(x); INSERT INTO future VALUES (42); PRAGMA user_version = " +
             std::to_string(newer));
  }
  const QByteArray before = apptest::readAll(path_);
  Database db;
  const auto r = db.open(path_);
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(db.isOpen());
  EXPECT_EQ(r.fromVersion, newer);
  EXPECT_TRUE(r.error.contains(path_)) << r.error.toStdString();
  EXPECT_TRUE(r.error.contains(QStringLiteral("schema version %1").arg(newer))) << r.error.toStdString();
  EXPECT_TRUE(r.error.contains(QStringLiteral("up to %1").arg(kFrozenCount))) << r.error.toStdString();
  EXPECT_TRUE(r.error.contains(QStringLiteral("newer"))) << r.error.toStdString();
  EXPECT_EQ(apptest::readAll(path_), before);
  EXPECT_EQ(apptest::filesIn(dir_.path()), QStringList{QStringLiteral("chat.sqlite3")});
}

TEST_F(StorageTest, RandomBytesAreSetAsideAndReported) {
  std::mt19937 rng(1234);
  QByteArray garbage(64 * 1024, '\0');
  for (char& c : garbage) c = static_cast<char>(rng() & 0xff);
  apptest::writeAll(path_, garbage);

  Database db;
  const auto r = db.open(path_);
  ASSERT_TRUE(r.ok) << r.error.toStdString();
  EXPECT_FALSE(r.warning.isEmpty());
  EXPECT_TRUE(r.warning.contains(path_)) << r.warning.toStdString();
  EXPECT_TRUE(r.warning.contains(r.corruptMovedTo)) << r.warning.toStdString();
  const QRegularExpression name(QRegularExpression::anchoredPattern(
      QRegularExpression::escape(path_) + QStringLiteral("\\.corrupt-\\d{8}-\\d{6}")));
  EXPECT_TRUE(name.match(r.corruptMovedTo).hasMatch()) << r.corruptMovedTo.toStdString();
  EXPECT_EQ(apptest::readAll(r.corruptMovedTo), garbage) << "the damaged file must be kept as it was";
  EXPECT_EQ(db.userVersion(), kFrozenCount);
  ConversationStore store(db);
  EXPECT_TRUE(store.listConversations().isEmpty());
}

TEST_F(StorageTest, DamagedPagesFailIntegrityCheckAndAreSetAside) {
  {
    Database db;
    ASSERT_TRUE(db.open(path_).ok);
    ConversationStore store(db);
    for (int c = 0; c < 20; ++c) {
      const auto conv = store.createConversation(QStringLiteral("c%1").arg(c));
      for (int m = 0; m < 10; ++m)
        store.appendMessage(conv.id, QStringLiteral("user"), QStringLiteral("message %1 ").arg(m).repeated(40));
    }
  }  // closing the last connection checkpoints the WAL into the file
  QByteArray bytes = apptest::readAll(path_);
  ASSERT_GT(bytes.size(), 40 * 4096);
  // Keep page 1 (header and schema root) intact; scribble over a run of pages in the middle.
  std::mt19937 rng(99);
  for (qsizetype i = 8 * 4096; i < 24 * 4096; ++i) bytes[i] = static_cast<char>(rng() & 0xff);
  apptest::writeAll(path_, bytes);

  Database db;
  const auto r = db.open(path_);
  ASSERT_TRUE(r.ok) << r.error.toStdString();
  EXPECT_FALSE(r.corruptMovedTo.isEmpty());
  EXPECT_TRUE(r.warning.contains(QStringLiteral("damaged"))) << r.warning.toStdString();
  EXPECT_EQ(apptest::readAll(r.corruptMovedTo), bytes);
  EXPECT_EQ(db.integrityCheck(), QStringLiteral("ok"));
}

TEST_F(StorageTest, FailedMigrationRollsBackToThePreviousVersion) {
  std::vector<Migration> migrations = builtinMigrations();
  migrations.push_back({static_cast<int>(migrations.size()) + 1,
                        "CREATE TABLE half_done(x); INSERT INTO no_such_table VALUES (1);", false});
  Database db(migrations);
  const auto r = db.open(path_);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.error.contains(path_)) << r.error.toStdString();
  EXPECT_TRUE(r.error.contains(QStringLiteral("from schema version %1 to %2").arg(kFrozenCount).arg(kFrozenCount + 1)))
      << r.error.toStdString();
  EXPECT_TRUE(r.error.contains(QStringLiteral("no_such_table"))) << r.error.toStdString();
  RawDb raw(path_);
  EXPECT_EQ(raw.one("PRAGMA user_version"), std::to_string(kFrozenCount));
  EXPECT_EQ(raw.one("SELECT count(*) FROM sqlite_schema WHERE name = 'half_done'"), "0");
}

TEST_F(StorageTest, DestructiveMigrationOfDataBacksUpFirst) {
  { Database db; ASSERT_TRUE(db.open(path_).ok); ConversationStore(db).createConversation(QStringLiteral("keep")); }
  std::vector<Migration> migrations = builtinMigrations();
  migrations.push_back({static_cast<int>(migrations.size()) + 1, "DELETE FROM conversations;", true});
  Database db(migrations);
  const auto r = db.open(path_);
  ASSERT_TRUE(r.ok) << r.error.toStdString();
  ASSERT_FALSE(r.backupPath.isEmpty());
  EXPECT_TRUE(r.backupPath.startsWith(path_ + QStringLiteral(".bak-v%1-").arg(kFrozenCount)));
  RawDb backup(r.backupPath);
  EXPECT_EQ(backup.one("SELECT title FROM conversations"), "keep");
  EXPECT_EQ(ConversationStore(db).listConversations().size(), 0);
}

TEST_F(StorageTest, MigrationsMustBeContiguous) {
  EXPECT_THROW(Database(std::vector<Migration>{{2, "SELECT 1;", false}}), std::logic_error);
  EXPECT_THROW(Database(std::vector<Migration>{}), std::logic_error);
}

TEST_F(StorageTest, UnopenableLocationIsAnErrorNotCorruption) {
  apptest::writeAll(dir_.filePath(QStringLiteral("plainfile")), "x");
  Database db;
  const QString bad = dir_.filePath(QStringLiteral("plainfile/chat.sqlite3"));
  const auto r = db.open(bad);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.error.contains(bad) || r.error.contains(dir_.filePath(QStringLiteral("plainfile"))))
      << r.error.toStdString();
  EXPECT_TRUE(r.corruptMovedTo.isEmpty());
}

// ---- kill -9 while streaming ------------------------------------------------------------------------

QString streamedText(int lastIndex) {
  QString s;
  for (int i = 0; i <= lastIndex; ++i) s += QStringLiteral("tok%1 %2\n").arg(i).arg(QString(40, QLatin1Char('x')));
  return s;
}

// Child: streams growing text into `messageId` as the app does, reporting each committed update's
// index through `fd`, until killed.
[[noreturn]] void streamUntilKilled(const QString& path, qint64 messageId, int fd) {
  try {
    Database db;
    if (!db.open(path).ok) _exit(3);
    ConversationStore store(db);
    QString text;
    for (int i = 0;; ++i) {
      text += QStringLiteral("tok%1 %2\n").arg(i).arg(QString(40, QLatin1Char('x')));
      store.updateStreamingMessage(messageId, text);
      if (write(fd, &i, sizeof i) != sizeof i) _exit(4);
    }
  } catch (...) {
    _exit(5);
  }
}

TEST_F(StorageTest, KillDuringStreamingKeepsLastCommittedUpdate) {
  qint64 conversationId = 0;
  {
    Database db;
    ASSERT_TRUE(db.open(path_).ok);
    ConversationStore store(db);
    conversationId = store.createConversation(QStringLiteral("crash")).id;
  }
  std::mt19937 rng(7);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    qint64 messageId = 0;
    {
      Database db;
      ASSERT_TRUE(db.open(path_).ok);
      ConversationStore store(db);
      store.appendMessage(conversationId, QStringLiteral("user"), QStringLiteral("go"));
      Message draft;
      draft.conversationId = conversationId;
      draft.role = QStringLiteral("assistant");
      draft.complete = false;
      messageId = store.appendMessage(draft).id;
    }  // no connection is open across fork()

    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      streamUntilKilled(path_, messageId, fds[1]);
    }
    close(fds[1]);
    const int killAfter = 100 + round * 150;
    int last = -1, index = 0;
    while (last < killAfter && read(fds[0], &index, sizeof index) == sizeof index) last = index;
    ASSERT_EQ(last, killAfter) << "writer stopped early";
    usleep(static_cast<useconds_t>(rng() % 3000));  // land at a varying point of an update
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "writer exited with " << status;
    while (read(fds[0], &index, sizeof index) == sizeof index) last = index;  // reports still in the pipe
    close(fds[0]);

    Database db;
    const auto r = db.open(path_);
    ASSERT_TRUE(r.ok) << r.error.toStdString();
    EXPECT_TRUE(r.warning.isEmpty()) << r.warning.toStdString();
    EXPECT_EQ(db.integrityCheck(), QStringLiteral("ok"));
    db.exec("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')");
    ConversationStore store(db);
    const auto m = store.message(messageId);
    ASSERT_TRUE(m.has_value());
    EXPECT_FALSE(m->complete);
    // The last reported update was committed; the one after it may have committed before the kill.
    const bool isLast = m->content == streamedText(last);
    const bool isNext = m->content == streamedText(last + 1);
    EXPECT_TRUE(isLast || isNext) << "content has " << m->content.count(QLatin1Char('\n'))
                                  << " lines; last reported update " << last;
  }
}

}  // namespace
