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

// One page, Helvetica, `text` drawn once; object offsets computed so the xref table is exact.
QByteArray minimalPdf(const char* text) {
  const QByteArray content = QByteArray("BT /F1 18 Tf 20 100 Td (") + text + ") Tj ET";
  const QList<QByteArray> objects = {
      "<< /Type /Catalog /Pages 2 0 R >>",
      "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
      "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
      "<< /Length " + QByteArray::number(content.size()) + " >>\nstream\n" + content + "\nendstream",
      "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"};
  QByteArray pdf = "%PDF-1.4\n";
  QList<int> offsets;
  for (int i = 0; i < objects.size(); ++i) {
    offsets << pdf.size();
    pdf += QByteArray::number(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
  }
  const int xref = pdf.size();
  pdf += "xref\n0 " + QByteArray::number(objects.size() + 1) + "\n0000000000 65535 f \n";
  for (int off : offsets) pdf += QByteArray::number(off).rightJustified(10, '0') + " 00000 n \n";
  pdf += "trailer\n<< /Size " + QByteArray::number(objects.size() + 1) + " /Root 1 0 R >>\nstartxref\n" +
         QByteArray::number(xref) + "\n%%EOF\n";
  return pdf;
}

TEST(SummarizeDialogFiles, PdfTextIsReadOrRefusedWithAReason) {
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
#if defined(WKV_HAVE_QTPDF)
  EXPECT_TRUE(error.contains(QStringLiteral("a.pdf"))) << error.toStdString();
  // A real one-page PDF with a text layer (built here with a correct cross-reference table).
  apptest::writeAll(dir.filePath(QStringLiteral("b.pdf")), minimalPdf("Hello from a PDF page"));
  error.clear();
  ASSERT_TRUE(d.loadFile(dir.filePath(QStringLiteral("b.pdf")), &error)) << error.toStdString();
  EXPECT_TRUE(d.documentText().contains(QStringLiteral("Hello from a PDF page"))) << d.documentText().toStdString();
#else
  EXPECT_TRUE(error.contains(QStringLiteral("qt6-pdf-dev")));
#endif
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
