// "Compare modes…": one prompt through 2–4 panes, each a quantization mode (and optionally its own
// model: e.g. w4kv4 from a .wkvq next to fp16 from the HF folder), with the same seed and sampling, run
// one after another on the engine thread. Each pane streams its answer and shows tokens/s, KV-cache
// and weight memory, the first token where it diverges from the FP16 pane and the NLL / perplexity of
// its answer under the FP16 model. Finished comparisons are saved (ComparisonStore) and can be
// exported as Markdown.
#pragma once

#include <QList>
#include <QWidget>

#include "engine/EngineTypes.h"

class ComparisonStore;
class EngineWorker;
class QComboBox;
class QDoubleSpinBox;
class QGridLayout;
class QLabel;
class QLineEdit;
class QPlainTextEdit;
class QPushButton;
class QSpinBox;

class CompareWindow : public QWidget {
  Q_OBJECT

 public:
  static constexpr int kMaxPanes = 4;
  CompareWindow(EngineWorker* worker, ComparisonStore& store, QWidget* parent = nullptr);

  void setPrompt(const QString& prompt);
  void setPanes(const QList<ComparePaneSpec>& panes);  // 2–4
  void setSampling(double temperature, quint64 seed, int maxTokens);
  void setFp16ModelPath(const QString& path);
  void run();
  void cancel();
  bool running() const { return running_; }
  int paneCount() const;
  QString paneText(int pane) const;
  QString paneStats(int pane) const;
  QString note() const;
  qint64 lastComparisonId() const { return lastId_; }
  bool exportMarkdown(const QString& path, QString* error = nullptr);

 Q_SIGNALS:
  void comparisonSaved(qint64 id);
  void finished(bool ok);

 private:
  struct PaneWidgets {
    QWidget* config = nullptr;
    QComboBox* mode = nullptr;
    QLineEdit* model = nullptr;
    QWidget* box = nullptr;
    QLabel* title = nullptr;
    QPlainTextEdit* text = nullptr;
    QLabel* stats = nullptr;
  };
  void updatePaneVisibility();
  void onToken(qint64 id, int pane, const QString& text);
  void onPaneFinished(qint64 id, const ComparePaneOutcome& o);
  void onFinished(qint64 id, const QList<ComparePaneOutcome>& panes, const QString& note, quint64 seed,
                  bool cancelled);
  void onFailed(qint64 id, const QString& message);
  void setRunning(bool running);
  static QString statsText(const ComparePaneOutcome& o);

  EngineWorker* worker_;
  ComparisonStore& store_;
  PaneWidgets panes_[kMaxPanes];
  QSpinBox* count_;
  QPlainTextEdit* prompt_;
  QDoubleSpinBox* temperature_;
  QSpinBox* seed_;
  QSpinBox* maxTokens_;
  QLineEdit* fp16Model_;
  QPushButton* run_;
  QPushButton* cancel_;
  QPushButton* export_;
  QLabel* status_;
  qint64 requestId_ = 0;
  qint64 lastId_ = 0;
  bool running_ = false;
  CompareRequest request_;
};
