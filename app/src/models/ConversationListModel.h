// The conversation list (sidebar) over a ConversationStore: one row per conversation, most recently
// updated first, kept in that order as conversations change (rows move, they are not reset).
// Storage failures are reported through storageError(); the model then stays as it was.
#pragma once

#include <QAbstractListModel>
#include <QList>

#include "storage/ConversationStore.h"

class ConversationListModel : public QAbstractListModel {
  Q_OBJECT

 public:
  enum Roles {
    IdRole = Qt::UserRole + 1,  // qint64
    TitleRole,                  // QString, as stored (DisplayRole shows "Untitled conversation" for "")
    CreatedAtRole,              // QDateTime (local time)
    UpdatedAtRole,              // QDateTime (local time)
    ModelPathRole,              // QString
    ModeRole,                   // QString
    SystemPromptRole,           // QString
  };

  explicit ConversationListModel(ConversationStore* store, QObject* parent = nullptr);

  int rowCount(const QModelIndex& parent = QModelIndex()) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  bool setData(const QModelIndex& index, const QVariant& value, int role = Qt::EditRole) override;
  Qt::ItemFlags flags(const QModelIndex& index) const override;
  QHash<int, QByteArray> roleNames() const override;

  // Re-reads everything from the store (model reset).
  void reload();

  // Each returns false (after emitting storageError) when the store refused the change.
  // createConversation returns the new id (0 on failure); the row is inserted at the top.
  qint64 createConversation(const QString& title, const QString& systemPrompt = {});
  bool renameConversation(qint64 id, const QString& title);
  bool removeConversation(qint64 id);
  // Re-reads one conversation after it changed elsewhere (a message was added, settings changed)
  // and moves its row to where its new updated_at belongs.
  void refreshConversation(qint64 id);

  int rowOf(qint64 id) const;  // -1 when absent
  qint64 idAt(int row) const;  // 0 when out of range
  const QList<Conversation>& conversations() const { return rows_; }

 Q_SIGNALS:
  void storageError(const QString& message);

 private:
  void placeRow(int row);  // moves `row` to its sorted position

  ConversationStore* store_;
  QList<Conversation> rows_;
};
