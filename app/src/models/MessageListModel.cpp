#include "models/MessageListModel.h"

#include <QDateTime>

#include "storage/StorageError.h"

MessageListModel::MessageListModel(ConversationStore* store, QObject* parent)
    : QAbstractListModel(parent), store_(store) {}

int MessageListModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(rows_.size());
}

QVariant MessageListModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
  const Message& m = rows_.at(index.row());
  switch (role) {
    case Qt::DisplayRole:
    case ContentRole:
      return m.content;
    case IdRole:
      return m.id;
    case SeqRole:
      return m.seq;
    case RoleRole:
      return m.role;
    case StreamingRole:
      return m.id == streamId_;
    case CompleteRole:
      return m.complete;
    case CreatedAtRole:
      return QDateTime::fromMSecsSinceEpoch(m.createdAt);
    case ModelRole:
      return m.stats.model;
    case ModeRole:
      return m.stats.mode;
    case PromptTokensRole:
      return m.stats.promptTokens;
    case CompletionTokensRole:
      return m.stats.completionTokens;
    case TokensPerSecondRole:
      return m.stats.tokensPerSecond;
    case KvBytesRole:
      return m.stats.kvBytes;
    default:
      return {};
  }
}

QHash<int, QByteArray> MessageListModel::roleNames() const {
  QHash<int, QByteArray> names = QAbstractListModel::roleNames();
  names.insert(IdRole, "messageId");
  names.insert(SeqRole, "seq");
  names.insert(RoleRole, "role");
  names.insert(ContentRole, "content");
  names.insert(StreamingRole, "streaming");
  names.insert(CompleteRole, "complete");
  names.insert(CreatedAtRole, "createdAt");
  names.insert(ModelRole, "model");
  names.insert(ModeRole, "mode");
  names.insert(PromptTokensRole, "promptTokens");
  names.insert(CompletionTokensRole, "completionTokens");
  names.insert(TokensPerSecondRole, "tokensPerSecond");
  names.insert(KvBytesRole, "kvBytes");
  return names;
}

int MessageListModel::rowOfId(qint64 id) const {
  for (int i = static_cast<int>(rows_.size()) - 1; i >= 0; --i) {  // the streamed row is usually last
    if (rows_.at(i).id == id) return i;
  }
  return -1;
}

void MessageListModel::emitRowChanged(int row, const QList<int>& roles) {
  const QModelIndex changed = index(row);
  Q_EMIT dataChanged(changed, changed, roles);
}

void MessageListModel::setConversation(qint64 conversationId) {
  if (isStreaming()) flushStreaming();  // what is on screen is about to be re-read from the store
  QList<Message> fresh;
  if (conversationId != 0) {
    try {
      fresh = store_->messages(conversationId);
    } catch (const StorageError& e) {
      Q_EMIT storageError(e.message());
      fresh.clear();
    }
  }
  if (conversationId == streamConversationId_ && isStreaming()) {
    for (Message& m : fresh) {
      if (m.id == streamId_) m.content = streamText_;
    }
  }
  beginResetModel();
  conversationId_ = conversationId;
  rows_ = std::move(fresh);
  endResetModel();
}

void MessageListModel::reload() { setConversation(conversationId_); }

qint64 MessageListModel::appendMessage(const QString& role, const QString& content) {
  if (conversationId_ == 0) return 0;
  Message m;
  try {
    m = store_->appendMessage(conversationId_, role, content);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return 0;
  }
  const int row = static_cast<int>(rows_.size());
  beginInsertRows(QModelIndex(), row, row);
  rows_.append(m);
  endInsertRows();
  return m.id;
}

bool MessageListModel::editMessage(int row, const QString& content) {
  if (row < 0 || row >= rows_.size()) return false;
  Message& m = rows_[row];
  try {
    store_->updateStreamingMessage(m.id, content, true);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return false;
  }
  m.content = content;
  m.complete = true;
  emitRowChanged(row, {Qt::DisplayRole, ContentRole, CompleteRole});
  return true;
}

bool MessageListModel::removeMessagesAfter(int seq) {
  if (conversationId_ == 0) return false;
  try {
    store_->deleteMessagesAfter(conversationId_, seq);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return false;
  }
  int first = static_cast<int>(rows_.size());
  while (first > 0 && rows_.at(first - 1).seq > seq) --first;
  if (isStreaming() && streamConversationId_ == conversationId_ && rowOfId(streamId_) >= first) {
    streamId_ = 0;  // the reply being generated was deleted with them
    streamText_.clear();
    streamDirty_ = false;
  }
  if (first < rows_.size()) {
    beginRemoveRows(QModelIndex(), first, static_cast<int>(rows_.size()) - 1);
    rows_.erase(rows_.begin() + first, rows_.end());
    endRemoveRows();
  }
  return true;
}

qint64 MessageListModel::beginStreaming(const MessageStats& stats) {
  if (conversationId_ == 0) return 0;
  if (isStreaming()) finishStreaming({});
  Message draft;
  draft.conversationId = conversationId_;
  draft.role = QStringLiteral("assistant");
  draft.stats = stats;
  draft.complete = false;
  Message m;
  try {
    m = store_->appendMessage(draft);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return 0;
  }
  streamId_ = m.id;
  streamConversationId_ = conversationId_;
  streamText_.clear();
  streamDirty_ = false;
  sinceFlush_.start();
  const int row = static_cast<int>(rows_.size());
  beginInsertRows(QModelIndex(), row, row);
  rows_.append(m);
  endInsertRows();
  return m.id;
}

void MessageListModel::appendStreamText(const QString& text) {
  if (!isStreaming() || text.isEmpty()) return;
  streamText_ += text;
  streamDirty_ = true;
  if (conversationId_ == streamConversationId_) {
    const int row = rowOfId(streamId_);
    if (row >= 0) {
      rows_[row].content += text;
      emitRowChanged(row, {Qt::DisplayRole, ContentRole});
    }
  }
  if (sinceFlush_.elapsed() >= persistIntervalMs_) flushStreaming();
}

void MessageListModel::flushStreaming() {
  if (!isStreaming() || !streamDirty_) return;
  try {
    store_->updateStreamingMessage(streamId_, streamText_, false);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return;  // stays dirty: the next flush retries
  }
  streamDirty_ = false;
  sinceFlush_.restart();
}

void MessageListModel::finishStreaming(const MessageStats& stats) {
  if (!isStreaming()) return;
  const qint64 id = streamId_;
  try {
    store_->finishMessage(id, streamText_, stats);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return;  // still streaming: the caller may retry finishStreaming
  }
  streamId_ = 0;
  streamText_.clear();
  streamDirty_ = false;
  if (conversationId_ == streamConversationId_) {
    const int row = rowOfId(id);
    if (row >= 0) {
      Message& m = rows_[row];
      m.stats = stats;
      m.complete = true;
      emitRowChanged(row, {});  // content unchanged, but streaming, complete and every statistic changed
    }
  }
  streamConversationId_ = 0;
}
