// The summarize dialog (offscreen) with ref-a: plan shown against the context, a run in parts with
// progress, the result stored as a new conversation with its document; cancel; PDFs refused.
#include <gtest/gtest.h>

#include <QApplication>
#include <QSignalSpy>
#include <QTest>
#include <QTemporaryDir>

#include "app_test_util.h"
#include "engine/EngineWorker.h"
#include "storage/ComparisonStore.h"
#include "storage/ConversationStore.h"
#include "storage/Database.h"
#include "test_support.h"
#include "ui/SummarizeDialog.h"

namespace {

QString refA() { return QString::fromStdString(wkv::test::shared_path("models/ref-a")); }

class SummarizeDialogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!wkv::test::shared_exists("models/ref-a/model.safetensors") ||
        !wkv::test::shared_exists("data/tinystories/TinyStories-validation-head.txt"))
      GTEST_SKIP() << "shared ref-a / tinystories missing";
    ASSERT_TRUE(db_.open(dir_.filePath(QStringLiteral("s.sqlite3"))).ok);
    QSignalSpy loaded(engine_.worker(), &EngineWorker::modelLoaded);
    QMetaObject::invokeMethod(engine_.worker(), "loadModel", Qt::QueuedConnection, Q_ARG(QString, refA()),
                              Q_ARG(QString, QString()), Q_ARG(int, 2));
    ASSERT_TRUE(loaded.wait(60000));
    // ~12 000 characters of stories: more than ref-a's 2048-token context.
    text_ = QString::fromUtf8(apptest::readAll(
                                  QString::fromStdString(wkv::test::shared_path("data/tinystories/TinyStories-validation-head.txt"))))
                .left(12000);
  }
  QTemporaryDir dir_;
  Database db_;
  EngineThread engine_;
  QString text_;
};

TEST_F(SummarizeDialogTest, PlansRunsInPartsAndCreatesAConversation) {
  ConversationStore conversations(db_);
  ComparisonStore documents(db_);
  SummarizeDialog d(engine_.worker(), conversations, documents);
  d.show();
  QSignalSpy planned(engine_.worker(), &EngineWorker::summaryPlanned);
  d.setMaxTokens(24);
  d.setDocument(QStringLiteral("stories.txt"), text_);
  ASSERT_TRUE(planned.wait(30000));
  for (int i = 0; i < 300 && d.plan().nSteps == 0; ++i) QTest::qWait(100);
  ASSERT_GT(d.plan().nSteps, 0);
  EXPECT_FALSE(d.plan().direct);
  EXPECT_EQ(d.plan().contextTokens, 2048);
  EXPECT_GT(d.plan().documentTokens, 2048);
  EXPECT_TRUE(d.planText().contains(QStringLiteral("parts"))) << d.planText().toStdString();

  QSignalSpy progress(engine_.worker(), &EngineWorker::summarizeProgress);
  QSignalSpy memory(engine_.worker(), &EngineWorker::memoryStats);
  QSignalSpy created(&d, &SummarizeDialog::conversationCreated);
  QSignalSpy finished(&d, &SummarizeDialog::finished);
  d.start();
  ASSERT_TRUE(finished.wait(300000));
  ASSERT_TRUE(finished.at(0).at(0).toBool()) << d.progressText().toStdString();
  ASSERT_EQ(created.size(), 1);
  EXPECT_GT(progress.size(), d.plan().nSteps);
  EXPECT_GT(memory.size(), d.plan().nSteps);  // the KV memory panel is fed during the run
  int lastStep = 0;
  for (const auto& args : progress) {
    const auto s = args.at(0).value<SummarizeStatus>();
    EXPECT_GE(s.step, lastStep);
    lastStep = s.step;
  }
  EXPECT_EQ(lastStep, d.plan().nSteps - 1);

  const qint64 id = created.at(0).at(0).toLongLong();
  const QList<Message> msgs = conversations.messages(id);
  ASSERT_EQ(msgs.size(), 2);
  EXPECT_EQ(msgs[0].role, QStringLiteral("user"));
  EXPECT_EQ(msgs[0].content, text_);
  EXPECT_EQ(msgs[1].role, QStringLiteral("assistant"));
  EXPECT_FALSE(msgs[1].content.isEmpty());
  const QList<Document> docs = documents.documents(id);
  ASSERT_EQ(docs.size(), 1);
  EXPECT_EQ(docs[0].name, QStringLiteral("stories.txt"));
  EXPECT_EQ(docs[0].content, text_);
  EXPECT_EQ(docs[0].tokenCount, d.plan().documentTokens);
  // The document goes with its conversation.
  conversations.deleteConversation(id);
  EXPECT_TRUE(documents.documents(id).isEmpty());
}

TEST_F(SummarizeDialogTest, CancelCreatesNothing) {
  ConversationStore conversations(db_);
  ComparisonStore documents(db_);
  SummarizeDialog d(engine_.worker(), conversations, documents);
  d.setMaxTokens(24);
  d.setDocument(QStringLiteral("stories.txt"), text_);
  QSignalSpy progress(engine_.worker(), &EngineWorker::summarizeProgress);
  QSignalSpy finished(&d, &SummarizeDialog::finished);
  d.start();
  ASSERT_TRUE(progress.wait(60000));
  d.cancel();
  ASSERT_TRUE(finished.wait(60000));
  EXPECT_FALSE(finished.at(0).at(0).toBool());
  EXPECT_FALSE(d.running());
  EXPECT_TRUE(conversations.listConversations().isEmpty());
}

TEST(SummarizeDialogFiles, PdfIsRefusedWithAReason) {
  QTemporaryDir dir;
  Database db;
  ASSERT_TRUE(db.open(dir.filePath(QStringLiteral("p.sqlite3"))).ok);
  ConversationStore conversations(db);
  ComparisonStore documents(db);
  EngineThread engine;
  SummarizeDialog d(engine.worker(), conversations, documents);
  apptest::writeAll(dir.filePath(QStringLiteral("a.pdf")), "%PDF-1.4");
  QString error;
  EXPECT_FALSE(d.loadFile(dir.filePath(QStringLiteral("a.pdf")), &error));
  EXPECT_TRUE(error.contains(QStringLiteral("qt6-pdf-dev")));
  apptest::writeAll(dir.filePath(QStringLiteral("a.md")), "# Title\n\nSome text.");
  EXPECT_TRUE(d.loadFile(dir.filePath(QStringLiteral("a.md")), &error));
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
