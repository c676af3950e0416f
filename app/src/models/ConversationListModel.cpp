#include "models/ConversationListModel.h"

#include <QDateTime>

#include <algorithm>

#include "storage/StorageError.h"

namespace {

// The store's order: updated_at descending, ties by id descending.
bool before(const Conversation& a, const Conversation& b) {
  return a.updatedAt != b.updatedAt ? a.updatedAt > b.updatedAt : a.id > b.id;
}

}  // namespace

ConversationListModel::ConversationListModel(ConversationStore* store, QObject* parent)
    : QAbstractListModel(parent), store_(store) {
  reload();
}

int ConversationListModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(rows_.size());
}

QVariant ConversationListModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return {};
  const Conversation& c = rows_.at(index.row());
  switch (role) {
    case Qt::DisplayRole:
      return c.title.isEmpty() ? tr("Untitled conversation") : c.title;
    case Qt::EditRole:
    case TitleRole:
      return c.title;
    case Qt::ToolTipRole:
      return QDateTime::fromMSecsSinceEpoch(c.updatedAt).toString(Qt::TextDate);
    case IdRole:
      return c.id;
    case CreatedAtRole:
      return QDateTime::fromMSecsSinceEpoch(c.createdAt);
    case UpdatedAtRole:
      return QDateTime::fromMSecsSinceEpoch(c.updatedAt);
    case ModelPathRole:
      return c.modelPath;
    case ModeRole:
      return c.mode;
    case SystemPromptRole:
      return c.systemPrompt;
    default:
      return {};
  }
}

bool ConversationListModel::setData(const QModelIndex& index, const QVariant& value, int role) {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid)) return false;
  if (role != Qt::EditRole && role != TitleRole) return false;
  return renameConversation(rows_.at(index.row()).id, value.toString());
}

Qt::ItemFlags ConversationListModel::flags(const QModelIndex& index) const {
  Qt::ItemFlags f = QAbstractListModel::flags(index);
  if (index.isValid()) f |= Qt::ItemIsEditable;
  return f;
}

QHash<int, QByteArray> ConversationListModel::roleNames() const {
  QHash<int, QByteArray> names = QAbstractListModel::roleNames();
  names.insert(IdRole, "conversationId");
  names.insert(TitleRole, "title");
  names.insert(CreatedAtRole, "createdAt");
  names.insert(UpdatedAtRole, "updatedAt");
  names.insert(ModelPathRole, "modelPath");
  names.insert(ModeRole, "mode");
  names.insert(SystemPromptRole, "systemPrompt");
  return names;
}

void ConversationListModel::reload() {
  QList<Conversation> fresh;
  try {
    fresh = store_->listConversations();
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return;
  }
  beginResetModel();
  rows_ = std::move(fresh);
  endResetModel();
}

qint64 ConversationListModel::createConversation(const QString& title, const QString& systemPrompt) {
  Conversation c;
  try {
    c = store_->createConversation(title, systemPrompt);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return 0;
  }
  const int row = static_cast<int>(std::lower_bound(rows_.cbegin(), rows_.cend(), c, before) - rows_.cbegin());
  beginInsertRows(QModelIndex(), row, row);
  rows_.insert(row, c);
  endInsertRows();
  return c.id;
}

bool ConversationListModel::renameConversation(qint64 id, const QString& title) {
  try {
    store_->renameConversation(id, title);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return false;
  }
  refreshConversation(id);
  return true;
}

bool ConversationListModel::removeConversation(qint64 id) {
  try {
    store_->deleteConversation(id);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return false;
  }
  const int row = rowOf(id);
  if (row >= 0) {
    beginRemoveRows(QModelIndex(), row, row);
    rows_.removeAt(row);
    endRemoveRows();
  }
  return true;
}

void ConversationListModel::refreshConversation(qint64 id) {
  std::optional<Conversation> fresh;
  try {
    fresh = store_->conversation(id);
  } catch (const StorageError& e) {
    Q_EMIT storageError(e.message());
    return;
  }
  const int row = rowOf(id);
  if (!fresh) {  // deleted elsewhere
    if (row >= 0) {
      beginRemoveRows(QModelIndex(), row, row);
      rows_.removeAt(row);
      endRemoveRows();
    }
    return;
  }
  if (row < 0) {  // created elsewhere
    const int at = static_cast<int>(std::lower_bound(rows_.cbegin(), rows_.cend(), *fresh, before) - rows_.cbegin());
    beginInsertRows(QModelIndex(), at, at);
    rows_.insert(at, *fresh);
    endInsertRows();
    return;
  }
  rows_[row] = *fresh;
  const QModelIndex changed = index(row);
  Q_EMIT dataChanged(changed, changed);
  placeRow(row);
}

void ConversationListModel::placeRow(int row) {
  const Conversation& c = rows_.at(row);
  // Target index among the other rows (which stay sorted).
  int target = 0;
  for (int i = 0; i < rows_.size(); ++i) {
    if (i != row && before(rows_.at(i), c)) ++target;
  }
  if (target == row) return;
  // beginMoveRows takes the destination as a position in the list *before* the move.
  const int destination = target < row ? target : target + 1;
  beginMoveRows(QModelIndex(), row, row, QModelIndex(), destination);
  rows_.move(row, target);
  endMoveRows();
}

int ConversationListModel::rowOf(qint64 id) const {
  for (int i = 0; i < rows_.size(); ++i) {
    if (rows_.at(i).id == id) return i;
  }
  return -1;
}

qint64 ConversationListModel::idAt(int row) const {
  return row >= 0 && row < rows_.size() ? rows_.at(row).id : 0;
}
