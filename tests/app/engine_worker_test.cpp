// EngineWorker on its own thread: loading ref-a, greedy generation streamed as queued signals onto
// the test's (main) thread and compared with the reference greedy text in golden.json, stopping in the
// middle of a generation, and engine errors reported as signals (the worker keeps running).
#include <gtest/gtest.h>

#include <QCoreApplication>
#include <QFile>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QMetaObject>
#include <QSignalSpy>
#include <QTest>
#include <QThread>

#include <wkv/engine.h>

#include "engine/EngineWorker.h"
#include "test_support.h"

namespace {

QString refA() { return QString::fromStdString(wkv::test::shared_path("models/ref-a")); }

QJsonObject golden(const char* key) {
  QFile f(QString::fromStdString(wkv::test::shared_path("models/ref-a/golden.json")));
  if (!f.open(QIODevice::ReadOnly)) return {};
  return QJsonDocument::fromJson(f.readAll()).object().value(QLatin1String(key)).toObject();
}

bool waitFor(QSignalSpy& spy, int ms = 60000) { return spy.count() > 0 || spy.wait(ms); }

class EngineWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WKV_REQUIRE_SHARED("models/ref-a/golden.json");
    engine_ = std::make_unique<EngineThread>();
    QSignalSpy loaded(engine_->worker(), &EngineWorker::modelLoaded);
    QSignalSpy failed(engine_->worker(), &EngineWorker::modelLoadFailed);
    QMetaObject::invokeMethod(engine_->worker(), "loadModel", Qt::QueuedConnection, Q_ARG(QString, refA()),
                              Q_ARG(QString, QString()), Q_ARG(int, 2));
    ASSERT_TRUE(loaded.wait(60000)) << (failed.isEmpty() ? "timeout" : failed.at(0).at(1).toString().toStdString());
    info_ = loaded.at(0).at(0).value<EngineModelInfo>();
  }
  GenerationRequest request(const QString& prompt, int maxTokens, qint64 id) {
    GenerationRequest r;
    r.requestId = id;
    r.turns = {ChatTurn{QStringLiteral("user"), prompt}};
    r.sampling = SamplingSettings::greedy();
    r.sampling.maxTokens = maxTokens;
    return r;
  }
  std::unique_ptr<EngineThread> engine_;
  EngineModelInfo info_;
};

TEST_F(EngineWorkerTest, ReportsTheLoadedModel) {
  EXPECT_EQ(info_.name, QStringLiteral("ref-a"));
  EXPECT_EQ(info_.format, QStringLiteral("hf-safetensors"));
  EXPECT_EQ(info_.chatTemplate, QStringLiteral("plain"));
  EXPECT_GT(info_.nLayers, 0);
  EXPECT_GT(info_.maxContext, 0);
  EXPECT_GT(info_.weightBytesFp16, 0);
}

TEST_F(EngineWorkerTest, GreedyTokensStreamToTheMainThreadAndMatchGolden) {
  const QJsonObject g = golden("short");
  const QString expected = g.value(QLatin1String("greedy_text")).toString();
  ASSERT_FALSE(expected.isEmpty());
  QString streamed;
  int calls = 0;
  bool offThread = false;
  QObject receiver;  // lives on this (main) thread: the connection is queued across threads
  QObject::connect(engine_->worker(), &EngineWorker::tokenStreamed, &receiver, [&](qint64 id, const QString& t) {
    EXPECT_EQ(id, 7);
    if (QThread::currentThread() != QCoreApplication::instance()->thread()) offThread = true;
    streamed += t;
    ++calls;
  });
  QSignalSpy memory(engine_->worker(), &EngineWorker::memoryStats);
  QSignalSpy finished(engine_->worker(), &EngineWorker::generationFinished);
  QMetaObject::invokeMethod(engine_->worker(), "generate", Qt::QueuedConnection,
                            Q_ARG(GenerationRequest, request(g.value(QLatin1String("text")).toString(), 12, 7)));
  ASSERT_TRUE(waitFor(finished));
  QCoreApplication::processEvents();  // tokens queued before the finish signal are delivered in order
  EXPECT_FALSE(offThread);
  EXPECT_GE(calls, 6);
  ASSERT_FALSE(streamed.isEmpty());
  EXPECT_TRUE(expected.startsWith(streamed)) << streamed.toStdString() << " vs " << expected.toStdString();
  EXPECT_GE(streamed.size(), 20);
  const auto stats = finished.at(0).at(1).value<GenerationStats>();
  EXPECT_EQ(stats.requestId, 7);
  EXPECT_EQ(stats.completionTokens, 12);
  EXPECT_EQ(stats.promptTokens, g.value(QLatin1String("ids")).toArray().size());
  EXPECT_EQ(stats.stopReason, QString::fromLatin1(wkv::stop_reason_name(wkv::StopReason::max_tokens)));
  // The last sampled token may not have been run through the model yet.
  EXPECT_GE(stats.contextUsed, stats.promptTokens + 11);
  EXPECT_LE(stats.contextUsed, stats.promptTokens + 12);
  // Memory snapshots while streaming (every 4 tokens) and one at the end, context growing.
  ASSERT_GE(memory.count(), 3);
  const auto last = memory.last().at(0).value<EngineMemoryStats>();
  EXPECT_EQ(last.nTokens, stats.contextUsed);
  EXPECT_GT(last.kvBytesUsedFp16, 0);
}

TEST_F(EngineWorkerTest, StopEndsAGenerationInTheMiddle) {
  QSignalSpy finished(engine_->worker(), &EngineWorker::generationFinished);
  int tokens = 0;
  QObject receiver;
  EngineWorker* worker = engine_->worker();
  QObject::connect(worker, &EngineWorker::tokenStreamed, &receiver, [&](qint64, const QString&) {
    if (++tokens == 3) worker->stop();  // called from the main thread while the worker generates
  });
  GenerationRequest r = request(QStringLiteral("Once upon a time"), 400, 9);
  r.sampling = SamplingSettings{};  // sampled, so it does not end early at an EOS by chance
  r.sampling.seed = 3;
  QMetaObject::invokeMethod(worker, "generate", Qt::QueuedConnection, Q_ARG(GenerationRequest, r));
  ASSERT_TRUE(waitFor(finished));
  const auto stats = finished.at(0).at(1).value<GenerationStats>();
  EXPECT_EQ(stats.stopReason, QString::fromLatin1(wkv::stop_reason_name(wkv::StopReason::cancelled)));
  EXPECT_LT(stats.completionTokens, 400);
}

TEST_F(EngineWorkerTest, ErrorsAreSignalsAndTheWorkerKeepsWorking) {
  QSignalSpy failed(engine_->worker(), &EngineWorker::modelLoadFailed);
  QSignalSpy errors(engine_->worker(), &EngineWorker::error);
  QMetaObject::invokeMethod(engine_->worker(), "loadModel", Qt::QueuedConnection,
                            Q_ARG(QString, QStringLiteral("/nonexistent/model-dir")), Q_ARG(QString, QString()),
                            Q_ARG(int, 1));
  ASSERT_TRUE(waitFor(failed));
  EXPECT_TRUE(failed.at(0).at(1).toString().contains(QStringLiteral("/nonexistent/model-dir")));
  ASSERT_TRUE(waitFor(errors));
  EXPECT_EQ(errors.count(), 1);
  // The previously loaded model is still there.
  QSignalSpy finished(engine_->worker(), &EngineWorker::generationFinished);
  QMetaObject::invokeMethod(engine_->worker(), "generate", Qt::QueuedConnection,
                            Q_ARG(GenerationRequest, request(QStringLiteral("Hello"), 3, 11)));
  ASSERT_TRUE(waitFor(finished));
  EXPECT_EQ(finished.at(0).at(1).value<GenerationStats>().completionTokens, 3);
}

TEST(EngineWorkerNoModel, GenerateWithoutAModelFails) {
  EngineThread engine;
  QSignalSpy failed(engine.worker(), &EngineWorker::generationFailed);
  GenerationRequest r;
  r.requestId = 5;
  r.turns = {ChatTurn{QStringLiteral("user"), QStringLiteral("hi")}};
  QMetaObject::invokeMethod(engine.worker(), "generate", Qt::QueuedConnection, Q_ARG(GenerationRequest, r));
  ASSERT_TRUE(waitFor(failed, 10000));
  EXPECT_EQ(failed.at(0).at(0).toLongLong(), 5);
}

TEST(SamplingSettingsJson, RoundTripsAndKeepsDefaultsForMissingKeys) {
  SamplingSettings s;
  s.temperature = 0.3;
  s.topK = 7;
  s.seed = 18446744073709551557ull;  // needs all 64 bits
  s.maxTokens = 99;
  EXPECT_EQ(SamplingSettings::fromJson(s.toJson()), s);
  const SamplingSettings partial = SamplingSettings::fromJson(QStringLiteral("{\"top_k\": 3}"));
  EXPECT_EQ(partial.topK, 3);
  EXPECT_EQ(partial.temperature, SamplingSettings{}.temperature);
  EXPECT_EQ(SamplingSettings::fromJson(QStringLiteral("not json")), SamplingSettings{});
}

}  // namespace

int main(int argc, char** argv) {
  // Also for test discovery, which runs without the ctest environment.
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QCoreApplication app(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
