// The comparison window (offscreen): two modes of ref-a run on the engine thread, panes filled, the
// result stored in SQLite, and the Markdown export in its exact format.
#include <gtest/gtest.h>

#include <QApplication>
#include <QSignalSpy>
#include <QTemporaryDir>

#include "app_test_util.h"
#include "engine/EngineWorker.h"
#include "storage/ComparisonStore.h"
#include "storage/Database.h"
#include "test_support.h"
#include "ui/CompareWindow.h"

namespace {

QString refA() { return QString::fromStdString(wkv::test::shared_path("models/ref-a")); }

TEST(ComparisonMarkdown, ExactFormat) {
  Comparison c;
  c.createdAt = 1709285400000;  // 2024-03-01T09:30:00Z
  c.prompt = QStringLiteral("Once upon a time\n");
  c.settingsJson = QStringLiteral("{\"seed\":\"7\"}");
  ComparisonPane a;
  a.pane = 0;
  a.mode = QStringLiteral("fp16");
  a.modelPath = QStringLiteral("/models/ref-a/");
  a.output = QStringLiteral(" there was a cat.\n");
  a.completionTokens = 5;
  a.tokensPerSecond = 123.456;
  a.kvBytes = 3 * 1024 * 1024 / 2;  // 1.50 MiB
  a.weightBytes = 22030336;         // 21.01 MiB
  a.divergeAt = -1;
  a.nll = 1.23456;
  a.perplexity = 3.43689;
  ComparisonPane b = a;
  b.pane = 1;
  b.mode = QStringLiteral("w4kv4");
  b.modelPath = QStringLiteral("/models/ref-a.wkvq");
  b.output = QString();
  b.divergeAt = 3;
  b.nll.reset();
  b.perplexity.reset();
  ComparisonPane e;
  e.pane = 2;
  e.mode = QStringLiteral("kv4");
  e.modelPath = QStringLiteral("/models/ref-a.wkvq");
  e.error = QStringLiteral("needs the FP16 model");
  c.panes = {a, b, e};
  const QString expected = QStringLiteral(
      "# Mode comparison\n\n"
      "- Created: 2024-03-01T09:30:00Z\n- Settings: `{\"seed\":\"7\"}`\n\n"
      "## Prompt\n\nOnce upon a time\n\n"
      "## 1. fp16 · ref-a\n\n there was a cat.\n\n"
      "## 2. w4kv4 · ref-a.wkvq\n\n"
      "## 3. kv4 · ref-a.wkvq\n\n_Error: needs the FP16 model_\n\n"
      "## Results\n\n"
      "| # | Mode | Model | Tokens | Tok/s | KV cache | Weights | Diverges at | NLL (FP16) | PPL (FP16) |\n"
      "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
      "| 1 | fp16 | ref-a | 5 | 123.5 | 1.50 MiB | 21.01 MiB | none | 1.2346 | 3.437 |\n"
      "| 2 | w4kv4 | ref-a.wkvq | 5 | 123.5 | 1.50 MiB | 21.01 MiB | 3 | n/a | n/a |\n"
      "| 3 | kv4 | ref-a.wkvq | error | n/a | n/a | n/a | n/a | n/a | n/a |\n");
  EXPECT_EQ(ComparisonStore::toMarkdown(c).toStdString(), expected.toStdString());
}

TEST(CompareWindow, TwoModesOnRefARunStoreAndExport) {
  WKV_REQUIRE_SHARED("models/ref-a/model.safetensors");
  QTemporaryDir dir;
  Database db;
  ASSERT_TRUE(db.open(dir.filePath(QStringLiteral("c.sqlite3"))).ok);
  ComparisonStore store(db);
  EngineThread engine;
  QSignalSpy loaded(engine.worker(), &EngineWorker::modelLoaded);
  QMetaObject::invokeMethod(engine.worker(), "loadModel", Qt::QueuedConnection, Q_ARG(QString, refA()),
                            Q_ARG(QString, QString()), Q_ARG(int, 2));
  ASSERT_TRUE(loaded.wait(60000));

  CompareWindow w(engine.worker(), store);
  w.show();
  w.setPrompt(QStringLiteral("Once upon a time, there was a little dog named"));
  w.setPanes({{QStringLiteral("fp16"), QString()}, {QStringLiteral("w4kv4-rtn"), QString()}});
  w.setSampling(0.0, 7, 16);
  QSignalSpy tokens(engine.worker(), &EngineWorker::compareToken);
  QSignalSpy saved(&w, &CompareWindow::comparisonSaved);
  QSignalSpy finished(&w, &CompareWindow::finished);
  w.run();
  EXPECT_TRUE(w.running());
  ASSERT_TRUE(finished.wait(120000));
  ASSERT_TRUE(finished.at(0).at(0).toBool()) << w.note().toStdString();
  ASSERT_EQ(saved.size(), 1);
  EXPECT_GT(tokens.size(), 2);
  EXPECT_EQ(w.paneCount(), 2);
  EXPECT_FALSE(w.paneText(0).isEmpty());
  EXPECT_FALSE(w.paneText(1).isEmpty());
  EXPECT_TRUE(w.paneStats(0).contains(QStringLiteral("same tokens as FP16"))) << w.paneStats(0).toStdString();
  EXPECT_TRUE(w.paneStats(1).contains(QStringLiteral("NLL under FP16"))) << w.paneStats(1).toStdString();

  // Stored in SQLite: read back through a separate connection.
  const qint64 id = saved.at(0).at(0).toLongLong();
  apptest::RawDb raw(dir.filePath(QStringLiteral("c.sqlite3")));
  EXPECT_EQ(raw.one("SELECT COUNT(*) FROM comparison_panes WHERE comparison_id = " + std::to_string(id)), "2");
  EXPECT_EQ(raw.one("SELECT mode, completion_tokens, diverge_at FROM comparison_panes WHERE pane = 0"), "fp16|16|-1");
  EXPECT_EQ(raw.one("SELECT output FROM comparison_panes WHERE pane = 1"), w.paneText(1).toStdString());
  EXPECT_EQ(raw.one("SELECT nll IS NOT NULL AND perplexity IS NOT NULL AND kv_bytes > 0 AND weight_bytes > 0 "
                    "FROM comparison_panes WHERE pane = 1"),
            "1");
  const auto c = store.comparison(id);
  ASSERT_TRUE(c.has_value());
  ASSERT_EQ(c->panes.size(), 2);
  EXPECT_LT(c->panes[1].kvBytes, c->panes[0].kvBytes);  // KV4 against FP16 for the same length of context

  const QString md = dir.filePath(QStringLiteral("cmp.md"));
  ASSERT_TRUE(w.exportMarkdown(md));
  EXPECT_EQ(QString::fromUtf8(apptest::readAll(md)).toStdString(), ComparisonStore::toMarkdown(*c).toStdString());
  EXPECT_TRUE(QString::fromUtf8(apptest::readAll(md)).contains(QStringLiteral("| 1 | fp16 | ref-a | 16 | ")));
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
