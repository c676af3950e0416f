// A prepared SQLite statement borrowed from Database's statement cache (or owned, when the cached
// one is already in use). Binding indices are 1-based, column indices 0-based, as in SQLite.
// On destruction the statement is reset and its bindings cleared, so a half-read SELECT never keeps
// a read transaction open (which would pin the WAL and block checkpoints).
#pragma once

#include <QByteArray>
#include <QString>

struct sqlite3_stmt;

class Query {
 public:
  // `inUse` is the cache slot's busy flag (cleared on destruction); null for an owned statement.
  Query(sqlite3_stmt* stmt, bool* inUse);
  Query(Query&& other) noexcept;
  Query& operator=(Query&&) = delete;
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query();

  Query& bind(int index, qint64 value);
  Query& bind(int index, int value);
  Query& bind(int index, double value);
  Query& bind(int index, const QString& value);
  Query& bindNull(int index);

  // Steps once: true when a row is available, false when the statement is done. Throws StorageError.
  bool next();
  // Steps to completion (for INSERT/UPDATE/DELETE). Throws StorageError.
  void run();

  qint64 int64(int column) const;
  int integer(int column) const;
  double real(int column) const;
  QString text(int column) const;
  bool isNull(int column) const;

 private:
  [[noreturn]] void fail(int rc, const char* what) const;

  sqlite3_stmt* stmt_;
  bool* inUse_;
};
