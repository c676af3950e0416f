// The messages of one conversation over a ConversationStore, in seq order, plus the streaming path:
// beginStreaming() appends an empty assistant message, appendStreamText() grows it in memory and
// signals dataChanged on that one row (ContentRole), persisting to the store at most once per
// persistIntervalMs (default 1000 ms) so a crash loses at most about a second of text;
// finishStreaming() stores the final text and statistics.
//
// The stream belongs to its conversation, not to what the model shows: setConversation() may switch
// away and back while a reply is being generated; the text keeps accumulating and is shown again.
// Storage failures are reported through storageError(); the in-memory rows stay as they were.
#pragma once

#include <QAbstractListModel>
#include <QElapsedTimer>
#include <QList>

#include "storage/ConversationStore.h"

class MessageListModel : public QAbstractListModel {
  Q_OBJECT

 public:
  enum Roles {
    IdRole = Qt::UserRole + 1,  // qint64
    SeqRole,                    // int
    RoleRole,                   // QString: "system" | "user" | "assistant"
    ContentRole,                // QString (also DisplayRole)
    StreamingRole,              // bool: this message is being generated right now
    CompleteRole,               // bool: false while streaming, and for replies whose generation was cut off
    CreatedAtRole,              // QDateTime (local time)
    ModelRole,                  // QString
    ModeRole,                   // QString
    PromptTokensRole,           // int
    CompletionTokensRole,       // int
    TokensPerSecondRole,        // double
    KvBytesRole,                // qint64
  };

  explicit MessageListModel(ConversationStore* store, QObject* parent = nullptr);

  int rowCount(const QModelIndex& parent = QModelIndex()) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QHash<int, QByteArray> roleNames() const override;

  // Shows the messages of `conversationId` (0: none). Model reset.
  void setConversation(qint64 conversationId);
  qint64 conversationId() const { return conversationId_; }
  void reload();
  const Message& messageAt(int row) const { return rows_.at(row); }
  const QList<Message>& messages() const { return rows_; }

  // Appends a complete message (a user prompt, a system note); returns its id (0 on failure).
  qint64 appendMessage(const QString& role, const QString& content);
  // Replaces a message's text (editing a prompt); marks it complete.
  bool editMessage(int row, const QString& content);
  // Removes the messages with seq > `seq` from the store and the model (regenerate / edit).
  bool removeMessagesAfter(int seq);

  // ---- streaming (one reply at a time) ----
  // Appends an empty, incomplete assistant message to the shown conversation; returns its id.
  qint64 beginStreaming(const MessageStats& stats = {});
  void appendStreamText(const QString& text);
  // Persists the text received so far, if anything is unsaved (also called by the interval rule).
  void flushStreaming();
  // Stores the final text with `stats` and marks the message complete.
  void finishStreaming(const MessageStats& stats);
  bool isStreaming() const { return streamId_ != 0; }
  qint64 streamingMessageId() const { return streamId_; }
  void setPersistIntervalMs(int ms) { persistIntervalMs_ = ms; }

 Q_SIGNALS:
  void storageError(const QString& message);

 private:
  int rowOfId(qint64 id) const;
  void emitRowChanged(int row, const QList<int>& roles);

  ConversationStore* store_;
  qint64 conversationId_ = 0;
  QList<Message> rows_;

  qint64 streamId_ = 0;
  qint64 streamConversationId_ = 0;
  QString streamText_;
  bool streamDirty_ = false;
  QElapsedTimer sinceFlush_;
  int persistIntervalMs_ = 1000;
};
