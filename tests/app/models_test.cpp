// ConversationListModel and MessageListModel under QAbstractItemModelTester (Fatal: any violation of
// the model contract aborts the test) through inserts, removes, moves, updates and streaming.
#include <QAbstractItemModelTester>
#include <QDateTime>
#include <QSignalSpy>

#include "app_test_util.h"
#include "models/ConversationListModel.h"
#include "models/MessageListModel.h"
#include "storage/ConversationStore.h"
#include "storage/Database.h"

namespace {

class ModelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.isValid());
    const auto r = db_.open(dir_.filePath(QStringLiteral("chat.sqlite3")));
    ASSERT_TRUE(r.ok) << r.error.toStdString();
    store_.setClock([this] { return now_ += 10; });  // every store write is 10 ms after the last
  }
  QTemporaryDir dir_;
  Database db_;
  ConversationStore store_{db_};
  qint64 now_ = 1'700'000'000'000;
};

QList<qint64> ids(const ConversationListModel& model) {
  QList<qint64> out;
  for (int r = 0; r < model.rowCount(); ++r) out << model.index(r).data(ConversationListModel::IdRole).toLongLong();
  return out;
}

TEST_F(ModelsTest, ConversationListModelKeepsOrderThroughChanges) {
  const qint64 existing = store_.createConversation(QStringLiteral("existing")).id;
  ConversationListModel model(&store_);
  QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::Fatal);
  ASSERT_EQ(model.rowCount(), 1);

  QSignalSpy inserted(&model, &QAbstractItemModel::rowsInserted);
  QSignalSpy moved(&model, &QAbstractItemModel::rowsMoved);
  QSignalSpy removed(&model, &QAbstractItemModel::rowsRemoved);
  QSignalSpy reset(&model, &QAbstractItemModel::modelReset);

  const qint64 a = model.createConversation(QStringLiteral("A"));
  const qint64 b = model.createConversation(QStringLiteral("B"), QStringLiteral("sys"));
  const qint64 c = model.createConversation(QString());
  EXPECT_EQ(inserted.count(), 3);
  EXPECT_EQ(inserted.at(0).at(1).toInt(), 0);  // newest at the top
  EXPECT_EQ(ids(model), (QList<qint64>{c, b, a, existing}));

  const QModelIndex top = model.index(0);
  EXPECT_EQ(top.data(Qt::DisplayRole).toString(), QStringLiteral("Untitled conversation"));
  EXPECT_EQ(top.data(ConversationListModel::TitleRole).toString(), QString());
  EXPECT_EQ(model.index(1).data(ConversationListModel::SystemPromptRole).toString(), QStringLiteral("sys"));
  const auto storedB = store_.conversation(b);
  EXPECT_EQ(model.index(1).data(ConversationListModel::UpdatedAtRole).toDateTime(),
            QDateTime::fromMSecsSinceEpoch(storedB->updatedAt));
  EXPECT_EQ(model.roleNames().value(ConversationListModel::UpdatedAtRole), QByteArray("updatedAt"));

  // Renaming the oldest moves it to the top (its updated_at is now the newest).
  QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
  ASSERT_TRUE(model.renameConversation(existing, QStringLiteral("renamed")));
  EXPECT_EQ(ids(model), (QList<qint64>{existing, c, b, a}));
  EXPECT_EQ(moved.count(), 1);
  EXPECT_EQ(changed.count(), 1);
  EXPECT_EQ(model.index(0).data().toString(), QStringLiteral("renamed"));

  // setData renames too; the top row stays in place (no move when nothing changes position).
  ASSERT_TRUE(model.setData(model.index(0), QStringLiteral("via setData")));
  EXPECT_EQ(moved.count(), 1);
  EXPECT_EQ(store_.conversation(existing)->title, QStringLiteral("via setData"));

  // A message added elsewhere: refreshConversation moves the row up.
  store_.appendMessage(a, QStringLiteral("user"), QStringLiteral("hello"));
  model.refreshConversation(a);
  EXPECT_EQ(ids(model), (QList<qint64>{a, existing, c, b}));
  EXPECT_EQ(moved.count(), 2);

  // A conversation in the middle moves to the middle-top; one created / deleted elsewhere appears / goes.
  store_.renameConversation(c, QStringLiteral("C"));
  model.refreshConversation(c);
  EXPECT_EQ(ids(model), (QList<qint64>{c, a, existing, b}));
  const qint64 d = store_.createConversation(QStringLiteral("D")).id;
  model.refreshConversation(d);
  EXPECT_EQ(ids(model), (QList<qint64>{d, c, a, existing, b}));
  store_.deleteConversation(existing);
  model.refreshConversation(existing);
  EXPECT_EQ(ids(model), (QList<qint64>{d, c, a, b}));

  ASSERT_TRUE(model.removeConversation(a));
  EXPECT_EQ(ids(model), (QList<qint64>{d, c, b}));
  EXPECT_EQ(removed.count(), 2);
  EXPECT_EQ(model.rowOf(b), 2);
  EXPECT_EQ(model.rowOf(a), -1);
  EXPECT_EQ(model.idAt(7), 0);

  QSignalSpy errors(&model, &ConversationListModel::storageError);
  EXPECT_FALSE(model.removeConversation(a));
  EXPECT_EQ(errors.count(), 1);
  EXPECT_EQ(ids(model), (QList<qint64>{d, c, b}));

  model.reload();
  EXPECT_EQ(reset.count(), 1);
  EXPECT_EQ(ids(model), (QList<qint64>{d, c, b}));
}

TEST_F(ModelsTest, MessageListModelAppendsStreamsAndTruncates) {
  const qint64 conv = store_.createConversation(QStringLiteral("chat")).id;
  store_.appendMessage(conv, QStringLiteral("system"), QStringLiteral("You are helpful."));
  MessageListModel model(&store_);
  QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::Fatal);
  EXPECT_EQ(model.rowCount(), 0);
  model.setConversation(conv);
  ASSERT_EQ(model.rowCount(), 1);
  EXPECT_EQ(model.index(0).data(MessageListModel::RoleRole).toString(), QStringLiteral("system"));

  QSignalSpy inserted(&model, &QAbstractItemModel::rowsInserted);
  const qint64 userId = model.appendMessage(QStringLiteral("user"), QStringLiteral("Count to three"));
  ASSERT_NE(userId, 0);
  EXPECT_EQ(inserted.count(), 1);
  EXPECT_EQ(model.index(1).data(MessageListModel::SeqRole).toInt(), 2);

  model.setPersistIntervalMs(60 * 60 * 1000);  // only explicit flushes persist in this part
  const qint64 replyId = model.beginStreaming({QStringLiteral("llama"), QStringLiteral("w4kv4")});
  ASSERT_NE(replyId, 0);
  EXPECT_EQ(inserted.count(), 2);
  const int row = 2;
  EXPECT_TRUE(model.index(row).data(MessageListModel::StreamingRole).toBool());
  EXPECT_FALSE(model.index(row).data(MessageListModel::CompleteRole).toBool());
  EXPECT_FALSE(model.index(1).data(MessageListModel::StreamingRole).toBool());

  QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
  const QStringList chunks = {QStringLiteral("One"), QStringLiteral(", two"), QStringLiteral(", three.")};
  for (const QString& chunk : chunks) model.appendStreamText(chunk);
  ASSERT_EQ(changed.count(), 3);
  for (const auto& args : changed) {  // one row, content only, each time
    EXPECT_EQ(args.at(0).toModelIndex(), model.index(row));
    EXPECT_EQ(args.at(1).toModelIndex(), model.index(row));
    EXPECT_TRUE(args.at(2).value<QList<int>>().contains(MessageListModel::ContentRole));
  }
  EXPECT_EQ(inserted.count(), 2);
  EXPECT_EQ(model.index(row).data(MessageListModel::ContentRole).toString(), QStringLiteral("One, two, three."));
  EXPECT_EQ(store_.message(replyId)->content, QString()) << "not persisted before the interval";
  model.flushStreaming();
  EXPECT_EQ(store_.message(replyId)->content, QStringLiteral("One, two, three."));
  EXPECT_FALSE(store_.message(replyId)->complete);

  // Interval 0: every chunk is persisted as it arrives.
  model.setPersistIntervalMs(0);
  model.appendStreamText(QStringLiteral(" Done"));
  EXPECT_EQ(store_.message(replyId)->content, QStringLiteral("One, two, three. Done"));

  // Switching away and back while streaming keeps the text; chunks arriving meanwhile are kept too.
  const qint64 other = store_.createConversation(QStringLiteral("other")).id;
  store_.appendMessage(other, QStringLiteral("user"), QStringLiteral("elsewhere"));
  model.setConversation(other);
  EXPECT_EQ(model.rowCount(), 1);
  model.setPersistIntervalMs(60 * 60 * 1000);
  model.appendStreamText(QStringLiteral("!"));
  EXPECT_EQ(model.index(0).data().toString(), QStringLiteral("elsewhere"));
  model.setConversation(conv);
  ASSERT_EQ(model.rowCount(), 3);
  EXPECT_EQ(model.index(row).data().toString(), QStringLiteral("One, two, three. Done!"));

  changed.clear();
  model.finishStreaming({QStringLiteral("llama"), QStringLiteral("w4kv4"), 7, 5, 12.5, 2048});
  EXPECT_FALSE(model.isStreaming());
  ASSERT_EQ(changed.count(), 1);
  EXPECT_EQ(changed.at(0).at(0).toModelIndex(), model.index(row));
  EXPECT_FALSE(model.index(row).data(MessageListModel::StreamingRole).toBool());
  EXPECT_TRUE(model.index(row).data(MessageListModel::CompleteRole).toBool());
  EXPECT_DOUBLE_EQ(model.index(row).data(MessageListModel::TokensPerSecondRole).toDouble(), 12.5);
  EXPECT_EQ(model.index(row).data(MessageListModel::KvBytesRole).toLongLong(), 2048);
  const auto stored = store_.message(replyId);
  EXPECT_EQ(stored->content, QStringLiteral("One, two, three. Done!"));
  EXPECT_TRUE(stored->complete);
  EXPECT_EQ(stored->stats.completionTokens, 5);

  // Edit the prompt and drop everything after it (what "edit & resend" does).
  ASSERT_TRUE(model.editMessage(1, QStringLiteral("Count to two")));
  EXPECT_EQ(store_.message(userId)->content, QStringLiteral("Count to two"));
  QSignalSpy removed(&model, &QAbstractItemModel::rowsRemoved);
  ASSERT_TRUE(model.removeMessagesAfter(2));
  EXPECT_EQ(removed.count(), 1);
  EXPECT_EQ(model.rowCount(), 2);
  EXPECT_EQ(store_.messages(conv).size(), 2);
  ASSERT_TRUE(model.removeMessagesAfter(2));  // nothing to remove: no signal
  EXPECT_EQ(removed.count(), 1);

  // A second reply, removed while streaming (regenerate): the stream is dropped cleanly.
  model.beginStreaming();
  model.appendStreamText(QStringLiteral("abandoned"));
  ASSERT_TRUE(model.removeMessagesAfter(2));
  EXPECT_FALSE(model.isStreaming());
  EXPECT_EQ(model.rowCount(), 2);
  model.appendStreamText(QStringLiteral("ignored"));
  EXPECT_EQ(model.rowCount(), 2);

  model.setConversation(0);
  EXPECT_EQ(model.rowCount(), 0);
  EXPECT_EQ(model.appendMessage(QStringLiteral("user"), QStringLiteral("x")), 0);
}

TEST_F(ModelsTest, MessageListModelReportsStorageErrors) {
  const qint64 conv = store_.createConversation(QStringLiteral("chat")).id;
  MessageListModel model(&store_);
  QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::Fatal);
  model.setConversation(conv);
  QSignalSpy errors(&model, &MessageListModel::storageError);
  EXPECT_EQ(model.appendMessage(QStringLiteral("narrator"), QStringLiteral("x")), 0);  // CHECK(role)
  EXPECT_EQ(errors.count(), 1);
  EXPECT_EQ(model.rowCount(), 0);
  store_.deleteConversation(conv);
  EXPECT_EQ(model.beginStreaming(), 0);  // FOREIGN KEY
  EXPECT_EQ(errors.count(), 2);
  EXPECT_FALSE(model.isStreaming());
  EXPECT_EQ(model.rowCount(), 0);
}

}  // namespace
