#include "storage/Schema.h"

// Conventions: times are INTEGER milliseconds since the Unix epoch (UTC); JSON is stored as TEXT;
// empty strings rather than NULL for "not set" text.
//
// messages_fts is an FTS5 external-content index over messages.content (rowid = messages.id): the
// triggers keep it exactly in sync, including for rows removed by ON DELETE CASCADE (cascades fire
// triggers). Streaming updates rewrite one row's index entries per update, which is cheap.
namespace {

const char* const kSchemaV1 = R"sql(
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

// v2: long-document summarization and the quantization-mode comparison view get their tables, and
// search learns stemming (porter: "run" finds "running", "models" finds "model") and ignores
// diacritics everywhere. The search index is dropped and rebuilt from messages, hence destructive.
const char* const kSchemaV2 = R"sql(
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

// v3: the comparison view stores what it shows per pane: weight memory, the first token where the
// pane diverges from the FP16 pane (NULL: no FP16 pane; -1: never) and the mean NLL under FP16 (NULL:
// not computed). Columns are only added, so nothing is rewritten.
const char* const kSchemaV3 = R"sql(
ALTER TABLE comparison_panes ADD COLUMN weight_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE comparison_panes ADD COLUMN diverge_at INTEGER;
ALTER TABLE comparison_panes ADD COLUMN nll REAL;
)sql";

}  // namespace

const std::vector<Migration>& builtinMigrations() {
  static const std::vector<Migration> migrations = {
      {1, kSchemaV1, false},
      {2, kSchemaV2, true},
      {3, kSchemaV3, false},
  };
  return migrations;
}

int latestSchemaVersion() { return builtinMigrations().back().version; }
