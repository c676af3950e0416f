#include "storage/Database.h"

#include <sqlite3.h>

#include <QDateTime>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QStandardPaths>
#include <QStringList>

#include <stdexcept>

#include "storage/StorageError.h"

namespace {

constexpr int kBusyTimeoutMs = 5000;

QString timestamp() { return QDateTime::currentDateTime().toString(QStringLiteral("yyyyMMdd-HHmmss")); }

// `base`, or `base`-2, -3 ... when a file of that name exists (two events within one second).
QString uniquePath(const QString& base) {
  QString candidate = base;
  for (int i = 2; QFileInfo::exists(candidate); ++i) candidate = base + QLatin1Char('-') + QString::number(i);
  return candidate;
}

bool isCorruptionCode(int code) {
  const int primary = code & 0xff;
  return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT;
}

}  // namespace

struct Database::CachedStatement {
  sqlite3_stmt* stmt = nullptr;
  bool inUse = false;
};

Database::Database() : Database(builtinMigrations()) {}

Database::Database(std::vector<Migration> migrations) : migrations_(std::move(migrations)) {
  if (migrations_.empty()) throw std::logic_error("Database: no migrations");
  for (size_t i = 0; i < migrations_.size(); ++i) {
    if (migrations_[i].version != static_cast<int>(i) + 1 || !migrations_[i].sql)
      throw std::logic_error("Database: migrations must be numbered 1, 2, ... in order, each with SQL");
  }
}

Database::~Database() { close(); }

QString Database::defaultPath() {
  return QStandardPaths::writableLocation(QStandardPaths::AppDataLocation) + QStringLiteral("/wkvchat.sqlite3");
}

void Database::finalizeCache() {
  for (auto& [sql, entry] : cache_) sqlite3_finalize(entry->stmt);
  cache_.clear();
}

void Database::close() {
  finalizeCache();
  if (db_) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
  }
}

QString Database::sqliteMessage() const {
  return db_ ? QString::fromUtf8(sqlite3_errmsg(db_)) : QStringLiteral("database not open");
}

Query Database::query(const char* sql) {
  if (!db_) throw StorageError(QStringLiteral("No database is open (statement \"%1\")").arg(QString::fromUtf8(sql)));
  auto prepare = [&]() {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      throw StorageError(QStringLiteral("SQLite error in '%1' while preparing \"%2\": %3")
                             .arg(path_, QString::fromUtf8(sql), sqliteMessage()),
                         rc & 0xff);
    }
    return stmt;
  };
  auto it = cache_.find(sql);
  if (it == cache_.end()) {
    auto entry = std::make_unique<CachedStatement>();
    entry->stmt = prepare();
    it = cache_.emplace(sql, std::move(entry)).first;
  } else if (it->second->inUse) {
    return Query(prepare(), nullptr);  // the cached one is being read further up the stack
  }
  it->second->inUse = true;
  return Query(it->second->stmt, &it->second->inUse);
}

void Database::exec(const char* sql) {
  if (!db_) throw StorageError(QStringLiteral("No database is open (statement \"%1\")").arg(QString::fromUtf8(sql)));
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &message);
  if (rc != SQLITE_OK) {
    const QString text = QString::fromUtf8(message ? message : sqlite3_errstr(rc));
    sqlite3_free(message);
    QString shown = QString::fromUtf8(sql).simplified();
    if (shown.size() > 120) shown = shown.left(117) + QStringLiteral("...");
    throw StorageError(QStringLiteral("SQLite error in '%1' while running \"%2\": %3").arg(path_, shown, text),
                       rc & 0xff);
  }
}

int Database::changes() const { return db_ ? sqlite3_changes(db_) : 0; }

qint64 Database::lastInsertRowId() const { return db_ ? sqlite3_last_insert_rowid(db_) : 0; }

int Database::userVersion() {
  Query q = query("PRAGMA user_version");
  return q.next() ? q.integer(0) : 0;
}

QString Database::integrityCheck() {
  Query q = query("PRAGMA integrity_check");
  QStringList lines;
  while (q.next()) lines << q.text(0);
  return lines.join(QLatin1Char('\n'));
}

Database::Probe Database::openAndProbe(const QString& path, OpenResult& result, QString& detail) {
  path_ = path;
  const int rc = sqlite3_open_v2(QFile::encodeName(path).constData(), &db_,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    detail = sqliteMessage();
    close();
    result.error = QStringLiteral("Could not open the database file '%1': %2").arg(path, detail);
    return Probe::Failed;
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  // Until the file is known to be sound, closing must not checkpoint a WAL into it.
  sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  try {
    // The first read of the file: a file that is not a database fails here with SQLITE_NOTADB.
    result.fromVersion = userVersion();
    if (result.fromVersion > latestVersion()) {
      // Checked before anything writes (switching to WAL would rewrite the header).
      result.error = QStringLiteral(
                         "The database file '%1' has schema version %2, but this version of WKV Chat only "
                         "knows schema versions up to %3: it was written by a newer WKV Chat. The file was "
                         "not changed; update WKV Chat or use another database file.")
                         .arg(path)
                         .arg(result.fromVersion)
                         .arg(latestVersion());
      close();
      return Probe::Failed;
    }
    const QString integrity = integrityCheck();
    if (integrity != QLatin1String("ok")) {
      detail = QStringLiteral("integrity check failed: ") + integrity.section(QLatin1Char('\n'), 0, 4);
      close();
      return Probe::Corrupt;
    }
    exec("PRAGMA journal_mode = WAL");
    exec("PRAGMA synchronous = NORMAL");
    exec("PRAGMA foreign_keys = ON");
    exec(QStringLiteral("PRAGMA busy_timeout = %1").arg(kBusyTimeoutMs).toUtf8().constData());
    sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, nullptr);
  } catch (const StorageError& e) {
    detail = e.message();
    close();
    if (isCorruptionCode(e.sqliteCode())) return Probe::Corrupt;
    result.error = QStringLiteral("Could not open the database file '%1': %2").arg(path, detail);
    return Probe::Failed;
  }
  return Probe::Ok;
}

QString Database::moveAside(const QString& path, QString& error) {
  const QString target = uniquePath(path + QStringLiteral(".corrupt-") + timestamp());
  if (!QFile::rename(path, target)) {
    error = QStringLiteral("could not rename it to '%1'").arg(target);
    return {};
  }
  // The WAL may hold the newest pages of the damaged file: keep it next to it under the name SQLite
  // looks for, so the set-aside copy can still be opened for recovery.
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    const QString side = path + QLatin1String(suffix);
    if (QFileInfo::exists(side)) QFile::rename(side, target + QLatin1String(suffix));
  }
  return target;
}

bool Database::backupTo(const QString& destination, QString& error) {
  sqlite3* dst = nullptr;
  int rc = sqlite3_open_v2(QFile::encodeName(destination).constData(), &dst,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_backup* backup = sqlite3_backup_init(dst, "main", db_, "main");
    if (backup) {
      rc = sqlite3_backup_step(backup, -1);
      sqlite3_backup_finish(backup);
      if (rc == SQLITE_DONE) rc = sqlite3_errcode(dst);
    } else {
      rc = sqlite3_errcode(dst);
    }
  }
  if (rc != SQLITE_OK) error = QString::fromUtf8(dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
  sqlite3_close_v2(dst);
  if (rc != SQLITE_OK) QFile::remove(destination);
  return rc == SQLITE_OK;
}

bool Database::migrate(OpenResult& result) {
  int current = result.fromVersion;
  for (const Migration& m : migrations_) {
    if (m.version <= current) continue;
    if (m.destructive && result.fromVersion > 0 && result.backupPath.isEmpty()) {
      const QString destination =
          uniquePath(QStringLiteral("%1.bak-v%2-%3").arg(path_).arg(result.fromVersion).arg(timestamp()));
      QString why;
      if (!backupTo(destination, why)) {
        result.error = QStringLiteral(
                           "Could not back up the database file '%1' to '%2' before upgrading it from schema "
                           "version %3 to %4: %5. The file was not changed.")
                           .arg(path_, destination)
                           .arg(current)
                           .arg(m.version)
                           .arg(why);
        return false;
      }
      result.backupPath = destination;
    }
    try {
      Transaction transaction(*this);
      exec(m.sql);
      // Foreign keys are not enforced on rows a migration copies with table rebuilds: verify.
      {
        Query check = query("PRAGMA foreign_key_check");
        if (check.next())
          throw StorageError(QStringLiteral("rows of table '%1' violate a foreign key").arg(check.text(0)));
      }
      exec(QStringLiteral("PRAGMA user_version = %1").arg(m.version).toUtf8().constData());
      transaction.commit();
    } catch (const StorageError& e) {
      result.error = QStringLiteral(
                         "Could not upgrade the database file '%1' from schema version %2 to %3: %4. "
                         "The file was left at schema version %2.")
                         .arg(path_)
                         .arg(current)
                         .arg(m.version)
                         .arg(e.message());
      return false;
    }
    current = m.version;
  }
  result.toVersion = current;
  return true;
}

Database::OpenResult Database::open(const QString& path) {
  close();
  OpenResult result;
  const QString dir = QFileInfo(path).absolutePath();
  if (!QDir().mkpath(dir)) {
    result.error = QStringLiteral("Could not create the folder '%1' for the database file '%2'").arg(dir, path);
    return result;
  }
  QString detail;
  Probe probe = openAndProbe(path, result, detail);
  if (probe == Probe::Corrupt) {
    QString why;
    const QString movedTo = moveAside(path, why);
    if (movedTo.isEmpty()) {
      result.error = QStringLiteral("The database file '%1' is damaged (%2) and %3; it was left in place.")
                         .arg(path, detail, why);
      return result;
    }
    result.corruptMovedTo = movedTo;
    result.warning = QStringLiteral(
                         "The database file '%1' was damaged (%2). It was moved to '%3' and a new, empty "
                         "database was created; your earlier conversations are in the moved file.")
                         .arg(path, detail, movedTo);
    result.fromVersion = 0;
    probe = openAndProbe(path, result, detail);
    if (probe == Probe::Corrupt)
      result.error = QStringLiteral("A new database file '%1' could not be created: %2").arg(path, detail);
  }
  if (probe != Probe::Ok) {
    close();
    return result;
  }
  if (!migrate(result)) {
    close();
    return result;
  }
  result.ok = true;
  return result;
}

Transaction::Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }

Transaction::~Transaction() {
  if (!done_ && db_.handle()) sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}
