// The app's SQLite database file: opening (WAL, foreign keys, synchronous=NORMAL, busy timeout),
// ordered schema migrations, backups before destructive migrations, and recovery from damaged files.
//
// open() never throws and never loses data silently:
//  - a file whose schema version is newer than this build knows is refused, untouched;
//  - before a migration marked destructive runs on a database that has data, the file is copied with
//    SQLite's online backup API to "<file>.bak-v<old version>-<yyyyMMdd-HHmmss>";
//  - a damaged file (not a database, or PRAGMA integrity_check reports problems) is renamed to
//    "<file>.corrupt-<yyyyMMdd-HHmmss>" (its -wal/-shm files alongside, same suffix + "-wal"/"-shm"),
//    a fresh database is created, and OpenResult::warning says so, so the UI can tell the user;
//  - a busy/locked or unreadable file is an error, never treated as damage.
// After a successful open, statements go through query()/exec() and throw StorageError on failure.
// One Database is used from one thread (the GUI thread).
#pragma once

#include <QString>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "storage/Query.h"
#include "storage/Schema.h"

struct sqlite3;

class Database {
 public:
  struct OpenResult {
    bool ok = false;         // open, at the latest schema version, ready for use
    QString error;           // !ok: what went wrong, naming the file (and versions, when relevant)
    QString warning;         // ok, but the user must be told (a damaged file was set aside)
    QString corruptMovedTo;  // where the damaged file went, if one was set aside
    QString backupPath;      // the backup taken before a destructive migration, if any
    int fromVersion = 0;     // user_version found in the file (0 for a new file)
    int toVersion = 0;       // user_version after open (the latest, when ok)
  };

  Database();  // the built-in migrations
  // Custom migrations (tests): ascending, contiguous from 1; throws std::logic_error otherwise.
  explicit Database(std::vector<Migration> migrations);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // QStandardPaths::AppDataLocation + "/wkvchat.sqlite3".
  static QString defaultPath();

  // Opens (creating if needed) and migrates `path`; closes any database opened before.
  OpenResult open(const QString& path);
  void close();
  bool isOpen() const { return db_ != nullptr; }
  const QString& path() const { return path_; }
  int latestVersion() const { return migrations_.back().version; }
  sqlite3* handle() const { return db_; }

  // A statement from the cache (prepared on first use). Throws StorageError.
  Query query(const char* sql);
  // Runs one or more statements without results. Throws StorageError.
  void exec(const char* sql);
  // "ok", or the problems PRAGMA integrity_check reports (one per line).
  QString integrityCheck();
  // PRAGMA user_version.
  int userVersion();
  // Rows changed by the last INSERT/UPDATE/DELETE, and the rowid of the last INSERT.
  int changes() const;
  qint64 lastInsertRowId() const;

 private:
  enum class Probe { Ok, Corrupt, Failed };
  Probe openAndProbe(const QString& path, OpenResult& result, QString& detail);
  bool migrate(OpenResult& result);
  bool backupTo(const QString& destination, QString& error);
  QString moveAside(const QString& path, QString& error);
  void finalizeCache();
  QString sqliteMessage() const;

  struct CachedStatement;
  std::vector<Migration> migrations_;
  sqlite3* db_ = nullptr;
  QString path_;
  std::unordered_map<std::string, std::unique_ptr<CachedStatement>> cache_;
};

// BEGIN IMMEDIATE ... COMMIT, rolled back on destruction unless committed (so an exception between
// the two leaves the database unchanged). Not nestable.
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};
