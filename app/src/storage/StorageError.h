// The one exception type of the storage layer. Every ConversationStore / Query call that hits an
// SQLite failure (disk full, I/O error, database locked past busy_timeout, constraint violation)
// throws it; the message names the database file, the statement and SQLite's own error text.
// Models catch it and turn it into a signal, so nothing above the models sees exceptions.
#pragma once

#include <QString>

#include <stdexcept>

class StorageError : public std::runtime_error {
 public:
  explicit StorageError(const QString& message, int sqliteCode = 0)
      : std::runtime_error(message.toStdString()), message_(message), sqliteCode_(sqliteCode) {}

  const QString& message() const { return message_; }
  // The primary SQLite result code (e.g. SQLITE_FULL), or 0 when the error is not from SQLite.
  int sqliteCode() const { return sqliteCode_; }

 private:
  QString message_;
  int sqliteCode_;
};
