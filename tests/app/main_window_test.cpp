// MainWindow end to end (offscreen): with WKVCHAT_MODEL = ref-a and a temporary WKVCHAT_DATA_DIR, type
// a message, send it, watch the streamed reply appear in the chat view and the memory panel, stop a
// long reply, then destroy the window and open a new one on the same data folder: the conversation
// and its messages are still there. Also: sending without a model keeps the typed text.
#include <gtest/gtest.h>

#include <QApplication>
#include <QListView>
#include <QPlainTextEdit>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include "chat/ChatController.h"
#include "engine/EngineWorker.h"
#include "models/ConversationListModel.h"
#include "models/MessageListModel.h"
#include "test_support.h"
#include "ui/ChatView.h"
#include "ui/KvMemoryPanel.h"
#include "ui/MainWindow.h"
#include "ui/MessageWidget.h"

namespace {

class MainWindowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(data_.isValid());
    qputenv("WKVCHAT_DATA_DIR", data_.path().toUtf8());
  }
  void TearDown() override {
    qunsetenv("WKVCHAT_DATA_DIR");
    qunsetenv("WKVCHAT_MODEL");
  }
  static bool waitModel(MainWindow& w) {
    if (w.controller()->isModelReady()) return true;
    QSignalSpy ready(&w, &MainWindow::modelReady);
    return ready.wait(60000);
  }
  QTemporaryDir data_;
};

TEST_F(MainWindowTest, ChatStreamsStopsAndPersistsAcrossWindows) {
  WKV_REQUIRE_SHARED("models/ref-a/config.json");
  qputenv("WKVCHAT_MODEL", QByteArray::fromStdString(wkv::test::shared_path("models/ref-a")));
  QString firstReply;
  {
    MainWindow w;
    w.show();
    ASSERT_TRUE(waitModel(w));
    // Greedy and short, so the test does not depend on a random seed.
    SamplingSettings greedy = SamplingSettings::greedy();
    greedy.maxTokens = 24;
    w.controller()->setConversationSettings(QString(), greedy);

    QTest::keyClicks(w.composer(), QStringLiteral("The capital of France is"));
    QSignalSpy finished(w.controller(), &ChatController::replyFinished);
    QTest::keyClick(w.composer(), Qt::Key_Return, Qt::ControlModifier);  // Ctrl+Enter sends
    EXPECT_TRUE(w.composer()->toPlainText().isEmpty());
    EXPECT_TRUE(w.controller()->isGenerating());
    ASSERT_TRUE(finished.wait(60000));
    QTest::qWait(100);  // the final render

    ChatView* view = w.chatView();
    ASSERT_EQ(view->messageCount(), 2);
    EXPECT_EQ(view->messageWidget(0)->renderedText(), QStringLiteral("The capital of France is"));
    firstReply = view->messageWidget(1)->content();
    EXPECT_FALSE(firstReply.trimmed().isEmpty());
    EXPECT_TRUE(view->messageWidget(1)->renderedText().contains(firstReply.trimmed().left(8)));
    // The memory panel followed the generation.
    EXPECT_GE(w.memoryPanel()->pointCount(), 3);
    EXPECT_GT(w.memoryPanel()->lastKvFp16MiB(), 0.0);

    // A long, sampled reply, stopped with Esc while it streams.
    SamplingSettings longer;
    longer.maxTokens = 2000;
    longer.seed = 5;
    w.controller()->setConversationSettings(QString(), longer);
    QTest::keyClicks(w.composer(), QStringLiteral("Tell me a long story."));
    ASSERT_TRUE(w.submitComposer());
    QSignalSpy tokens(w.controller()->worker(), &EngineWorker::tokenStreamed);
    ASSERT_TRUE(tokens.wait(30000));
    QTest::keyClick(&w, Qt::Key_Escape);
    ASSERT_TRUE(finished.wait(30000));
    const auto stats = finished.last().at(0).value<GenerationStats>();
    EXPECT_EQ(stats.stopReason, QStringLiteral("cancelled"));
    EXPECT_LT(stats.completionTokens, 2000);
    EXPECT_FALSE(w.controller()->isGenerating());
    ASSERT_EQ(w.chatView()->messageCount(), 4);
    EXPECT_EQ(w.controller()->messages()->messageAt(3).role, QStringLiteral("assistant"));
  }
  {
    MainWindow w;  // same data folder
    ASSERT_EQ(w.controller()->conversations()->rowCount(), 1);
    EXPECT_EQ(w.controller()->conversations()->conversations().at(0).title, QStringLiteral("The capital of France is"));
    const MessageListModel* m = w.controller()->messages();
    ASSERT_EQ(m->rowCount(), 4);
    EXPECT_EQ(m->messageAt(0).content, QStringLiteral("The capital of France is"));
    EXPECT_EQ(m->messageAt(1).content, firstReply);
    EXPECT_TRUE(m->messageAt(1).complete);
    EXPECT_EQ(m->messageAt(1).stats.completionTokens, 24);
    EXPECT_EQ(m->messageAt(2).content, QStringLiteral("Tell me a long story."));
    EXPECT_EQ(w.chatView()->messageCount(), 4);
    ASSERT_TRUE(waitModel(w));  // let the load finish before the window goes
  }
}

TEST_F(MainWindowTest, SendingWithoutAModelKeepsTheTextAndShowsWhy) {
  qputenv("WKVCHAT_MODEL", QByteArray("/nonexistent/model"));
  MainWindow w;
  QSignalSpy failed(w.controller(), &ChatController::modelFailed);
  ASSERT_TRUE(failed.wait(30000));
  EXPECT_TRUE(w.bannerText().contains(QStringLiteral("/nonexistent/model")) ||
              w.bannerText().contains(QStringLiteral("model"))) << w.bannerText().toStdString();
  w.composer()->setPlainText(QStringLiteral("keep me"));
  EXPECT_FALSE(w.submitComposer());
  EXPECT_EQ(w.composer()->toPlainText(), QStringLiteral("keep me"));
  EXPECT_FALSE(w.bannerText().isEmpty());
  EXPECT_EQ(w.controller()->conversations()->rowCount(), 0);
}

TEST(MessageWidgetCode, FindsFencedCodeBlocks) {
  const QString md = QStringLiteral("Intro\n\n```cpp\nint x = 1;\nint y;\n```\n\ntext\n~~~\nls -l\n~~~\n\n```\nopen");
  EXPECT_EQ(MessageWidget::codeBlocks(md),
            (QStringList{QStringLiteral("int x = 1;\nint y;"), QStringLiteral("ls -l"), QStringLiteral("open")}));
  EXPECT_TRUE(MessageWidget::codeBlocks(QStringLiteral("no code here")).isEmpty());
}

}  // namespace

int main(int argc, char** argv) {
  // Also for test discovery, which runs without the ctest environment.
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
