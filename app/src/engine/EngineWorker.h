// The engine on its own thread. EngineWorker owns the wkv::Model and wkv::Session and is used only
// from the thread it lives on: requests arrive as queued slot calls (loadModel, generate, quantize),
// results leave as queued signals. The GUI thread never waits on the engine.
//
// stop() and cancelQuantize() are the exceptions: they are thread-safe and meant to be called
// directly from the GUI thread while the worker is busy (a queued call would only run after the
// generation it wants to stop). They set atomic flags that the engine's callbacks check per token /
// per progress step.
//
// EngineThread bundles the QThread and the worker: construct it, connect to worker(), and call the
// slots through QMetaObject::invokeMethod(..., Qt::QueuedConnection) or queued signal connections.
#pragma once

#include <QObject>
#include <QThread>

#include <atomic>
#include <memory>

#include "engine/EngineTypes.h"

namespace wkv {
class Model;
class Session;
}  // namespace wkv

class EngineWorker : public QObject {
  Q_OBJECT

 public:
  explicit EngineWorker(QObject* parent = nullptr);
  ~EngineWorker() override;

  // Thread-safe: ends the running generation at the next token (stop reason "cancelled").
  void stop() { stopRequested_.store(true); }
  // Thread-safe: ends the running quantization at its next progress step (nothing is written).
  void cancelQuantize() { quantizeCancelRequested_.store(true); }
  // How often (in generated tokens) memoryStats is emitted while streaming.
  void setMemoryStatsInterval(int tokens) { memoryInterval_ = tokens < 1 ? 1 : tokens; }

 public Q_SLOTS:
  // mode: a quantization mode name ("" = the model's default); threads: 0 = all cores.
  void loadModel(const QString& path, const QString& mode, int threads);
  void unloadModel();
  void generate(const GenerationRequest& request);
  void quantize(const QuantizeRequest& request);
  // Summarizes request.text with the loaded model's session (stop() cancels); see EngineTasks.cpp.
  void summarize(const SummarizeRequest& request);
  // One prompt through every pane's {model, mode}, one after another (stop() cancels).
  void compare(const CompareRequest& request);

 Q_SIGNALS:
  void modelLoading(const QString& path);
  void modelLoaded(const EngineModelInfo& info);
  void modelLoadFailed(const QString& path, const QString& message);
  void generationStarted(qint64 requestId);
  void tokenStreamed(qint64 requestId, const QString& text);
  void generationFinished(qint64 requestId, const GenerationStats& stats);
  void generationFailed(qint64 requestId, const QString& message);
  void memoryStats(const EngineMemoryStats& stats);
  void quantizeProgress(const QuantizeStatus& status);
  // summary: what the calibration cost, e.g. "calibrated on cuda: NVIDIA H200 in 24.9 s, peak GPU memory
  // 950 MiB" (method wkvquant); empty for methods that train nothing.
  void quantizeFinished(const QString& outPath, const QString& summary);
  void quantizeFailed(const QString& message, bool cancelled);
  void summaryPlanned(const SummaryPlanInfo& plan);
  void summarizeProgress(const SummarizeStatus& status);
  void summarizeText(qint64 requestId, int step, const QString& text);
  void summarizeFinished(qint64 requestId, const QString& summary, bool cancelled);
  void summarizeFailed(qint64 requestId, const QString& message);
  void comparePaneStarted(qint64 requestId, int pane);
  void compareToken(qint64 requestId, int pane, const QString& text);
  void comparePaneFinished(qint64 requestId, const ComparePaneOutcome& outcome);
  // All panes with divergence and NLL filled in; note: why figures are missing (e.g. no FP16 model).
  void compareFinished(qint64 requestId, const QList<ComparePaneOutcome>& panes, const QString& note,
                       quint64 seed, bool cancelled);
  void compareFailed(qint64 requestId, const QString& message);
  // Every failure above is also reported here with the engine's message (for the status bar).
  void error(const QString& message);

 private:
  EngineMemoryStats snapshot() const;

  std::shared_ptr<wkv::Model> model_;
  QString modelPath_;
  std::unique_ptr<wkv::Session> session_;
  std::atomic<bool> stopRequested_{false};
  std::atomic<bool> quantizeCancelRequested_{false};
  int memoryInterval_ = 4;
};

class EngineThread : public QObject {
  Q_OBJECT

 public:
  explicit EngineThread(QObject* parent = nullptr);
  // Stops any generation / quantization, then joins the thread (the worker is deleted on it).
  ~EngineThread() override;
  EngineWorker* worker() const { return worker_; }

 private:
  QThread thread_;
  EngineWorker* worker_;
};
