#include "storage/Query.h"

#include <sqlite3.h>

#include "storage/StorageError.h"

Query::Query(sqlite3_stmt* stmt, bool* inUse) : stmt_(stmt), inUse_(inUse) {}

Query::Query(Query&& other) noexcept : stmt_(other.stmt_), inUse_(other.inUse_) {
  other.stmt_ = nullptr;
  other.inUse_ = nullptr;
}

Query::~Query() {
  if (!stmt_) return;
  if (inUse_) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    *inUse_ = false;
  } else {
    sqlite3_finalize(stmt_);
  }
}

void Query::fail(int rc, const char* what) const {
  sqlite3* db = sqlite3_db_handle(stmt_);
  const char* file = sqlite3_db_filename(db, "main");
  throw StorageError(QStringLiteral("SQLite error in '%1' while %2 \"%3\": %4")
                         .arg(QString::fromUtf8(file ? file : ""), QString::fromUtf8(what),
                              QString::fromUtf8(sqlite3_sql(stmt_)), QString::fromUtf8(sqlite3_errmsg(db))),
                     rc & 0xff);
}

Query& Query::bind(int index, qint64 value) {
  if (int rc = sqlite3_bind_int64(stmt_, index, value); rc != SQLITE_OK) fail(rc, "binding");
  return *this;
}

Query& Query::bind(int index, int value) { return bind(index, static_cast<qint64>(value)); }

Query& Query::bind(int index, double value) {
  if (int rc = sqlite3_bind_double(stmt_, index, value); rc != SQLITE_OK) fail(rc, "binding");
  return *this;
}

Query& Query::bind(int index, const QString& value) {
  const QByteArray utf8 = value.toUtf8();
  if (int rc = sqlite3_bind_text(stmt_, index, utf8.constData(), static_cast<int>(utf8.size()), SQLITE_TRANSIENT);
      rc != SQLITE_OK)
    fail(rc, "binding");
  return *this;
}

Query& Query::bindNull(int index) {
  if (int rc = sqlite3_bind_null(stmt_, index); rc != SQLITE_OK) fail(rc, "binding");
  return *this;
}

bool Query::next() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(rc, "running");
}

void Query::run() {
  while (next()) {
  }
}

qint64 Query::int64(int column) const { return sqlite3_column_int64(stmt_, column); }

int Query::integer(int column) const { return sqlite3_column_int(stmt_, column); }

double Query::real(int column) const { return sqlite3_column_double(stmt_, column); }

QString Query::text(int column) const {
  const auto* data = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
  const int bytes = sqlite3_column_bytes(stmt_, column);
  return data ? QString::fromUtf8(data, bytes) : QString();
}

bool Query::isNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
