// A fresh install: no model configured, no environment override → the app starts with the embedded demo
// model (resources/models/ref-a.wkvq, the ref-a model quantized by `wkv quantize --method stats`) on the
// CPU backend, and a chat works. Needs nothing from ../shared.
#include <gtest/gtest.h>

#include <QApplication>
#include <QPlainTextEdit>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include "AppEnvironment.h"
#include "chat/ChatController.h"
#include "ui/ChatView.h"
#include "ui/MainWindow.h"
#include "ui/MessageWidget.h"

TEST(EmbeddedModel, FreshStartChatsWithTheBundledModel) {
  QTemporaryDir data;
  ASSERT_TRUE(data.isValid());
  qputenv("WKVCHAT_DATA_DIR", data.path().toUtf8());
  qunsetenv("WKVCHAT_MODEL");
  qputenv("WKVCHAT_MODELS_DIR", QByteArray(WKV_RESOURCES_DIR "/models"));
  EXPECT_TRUE(AppEnvironment::bundledModel().endsWith(QStringLiteral("ref-a.wkvq")));
  MainWindow w;
  w.show();
  if (!w.controller()->isModelReady()) {
    QSignalSpy ready(&w, &MainWindow::modelReady);
    ASSERT_TRUE(ready.wait(60000)) << "the embedded model did not load";
  }
  SamplingSettings greedy = SamplingSettings::greedy();
  greedy.maxTokens = 12;
  w.controller()->setConversationSettings(QString(), greedy);
  QTest::keyClicks(w.composer(), QStringLiteral("Once upon a time"));
  QSignalSpy finished(w.controller(), &ChatController::replyFinished);
  ASSERT_TRUE(w.submitComposer());
  ASSERT_TRUE(finished.wait(60000));
  QTest::qWait(50);
  ASSERT_EQ(w.chatView()->messageCount(), 2);
  EXPECT_FALSE(w.chatView()->messageWidget(1)->content().trimmed().isEmpty());
  qunsetenv("WKVCHAT_MODELS_DIR");
  qunsetenv("WKVCHAT_DATA_DIR");
}

int main(int argc, char** argv) {
  // Also for test discovery, which runs without the ctest environment.
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
