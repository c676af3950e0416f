// The Quantize dialog's engine path: EngineWorker::quantize on the worker thread reports progress as queued
// signals, writes a .wkvq that the worker then loads and chats with, and Cancel leaves no file behind.
#include <gtest/gtest.h>

#include <QCoreApplication>
#include <QFileInfo>
#include <QMetaObject>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QThread>

#include "engine/EngineWorker.h"
#include "test_support.h"

namespace {

QString refA() { return QString::fromStdString(wkv::test::shared_path("models/ref-a")); }

// ref-a → dir/fileName with `method`; calibration methods read wiki.valid.raw (samples × seqlen tokens).
QuantizeRequest request(const QTemporaryDir& dir, const QString& fileName, const QString& method, int samples = 0,
                        int seqlen = 0) {
  QuantizeRequest r;
  r.modelPath = refA();
  r.outPath = dir.filePath(fileName);
  r.method = method;
  if (method != QLatin1String("rtn"))
    r.calibPath = QString::fromStdString(wkv::test::shared_path("data/wikitext-2-raw/wiki.valid.raw"));
  r.samples = samples;
  r.seqlen = seqlen;
  return r;
}

void startQuantize(EngineWorker* w, const QuantizeRequest& r) {
  QMetaObject::invokeMethod(w, "quantize", Qt::QueuedConnection, Q_ARG(QuantizeRequest, r));
}

TEST(EngineQuantize, RtnFileIsWrittenWithProgressAndThenLoads) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  QTemporaryDir dir;
  EngineThread engine;
  const QuantizeRequest r = request(dir, QStringLiteral("ref-a-rtn.wkvq"), QStringLiteral("rtn"));
  QSignalSpy progress(engine.worker(), &EngineWorker::quantizeProgress);
  QSignalSpy finished(engine.worker(), &EngineWorker::quantizeFinished);
  QSignalSpy failed(engine.worker(), &EngineWorker::quantizeFailed);
  startQuantize(engine.worker(), r);
  ASSERT_TRUE(finished.wait(120000)) << (failed.isEmpty() ? "timeout" : failed.at(0).at(0).toString().toStdString());
  EXPECT_EQ(finished.at(0).at(0).toString(), r.outPath);
  EXPECT_TRUE(finished.at(0).at(1).toString().isEmpty()) << "rtn trains nothing, so there is no calibration summary";
  EXPECT_GE(progress.count(), 2);  // loading … writing
  EXPECT_EQ(progress.last().at(0).value<QuantizeStatus>().stage, QStringLiteral("writing"));
  ASSERT_TRUE(QFileInfo::exists(r.outPath));

  QSignalSpy loaded(engine.worker(), &EngineWorker::modelLoaded);
  QMetaObject::invokeMethod(engine.worker(), "loadModel", Qt::QueuedConnection, Q_ARG(QString, r.outPath),
                            Q_ARG(QString, QString()), Q_ARG(int, 2));
  ASSERT_TRUE(loaded.wait(60000));
  const EngineModelInfo info = loaded.at(0).at(0).value<EngineModelInfo>();
  EXPECT_EQ(info.mode, QStringLiteral("w4kv4"));
}

// WKVQuant through the worker (a tiny calibration: 2 segments of 64 tokens, 1 epoch): the finished signal
// says where the calibration ran and what it cost, in the words the main window shows.
TEST(EngineQuantize, WkvquantReportsWhatTheCalibrationCost) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  QTemporaryDir dir;
  EngineThread engine;
  const QuantizeRequest r = request(dir, QStringLiteral("ref-a-wkvq.wkvq"), QStringLiteral("wkvquant"), 2, 64);
  QSignalSpy finished(engine.worker(), &EngineWorker::quantizeFinished);
  QSignalSpy failed(engine.worker(), &EngineWorker::quantizeFailed);
  startQuantize(engine.worker(), r);
  ASSERT_TRUE(finished.wait(300000)) << (failed.isEmpty() ? "timeout" : failed.at(0).at(0).toString().toStdString());
  const QString summary = finished.at(0).at(1).toString();
  EXPECT_TRUE(summary.startsWith(QStringLiteral("calibrated on "))) << summary.toStdString();
  EXPECT_TRUE(summary.contains(QStringLiteral(" s"))) << summary.toStdString();
  EXPECT_TRUE(QFileInfo::exists(r.outPath));
}

TEST(EngineQuantize, CancelWritesNothing) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  QTemporaryDir dir;
  EngineThread engine;
  const QuantizeRequest r = request(dir, QStringLiteral("cancelled.wkvq"), QStringLiteral("stats"), 64, 256);
  QSignalSpy progress(engine.worker(), &EngineWorker::quantizeProgress);
  QSignalSpy failed(engine.worker(), &EngineWorker::quantizeFailed);
  startQuantize(engine.worker(), r);
  // Cancel once calibration statistics are under way (the flag is read at every progress step).
  while (progress.isEmpty() ||
         progress.last().at(0).value<QuantizeStatus>().stage != QStringLiteral("calibration statistics"))
    ASSERT_TRUE(progress.wait(60000));
  engine.worker()->cancelQuantize();
  ASSERT_TRUE(failed.wait(60000));
  EXPECT_TRUE(failed.at(0).at(1).toBool()) << "reported as cancelled";
  EXPECT_FALSE(QFileInfo::exists(r.outPath));
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QCoreApplication app(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
