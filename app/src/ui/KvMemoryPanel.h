// The KV memory panel, the product's signature: a live chart of KV-cache bytes against context tokens
// for the loaded mode next to what FP16 would take, the saving ratio, weight memory (mode vs FP16) and
// GPU memory (or "CPU backend"). Fed by EngineWorker::memoryStats, which arrives every few tokens.
#pragma once

#include <QWidget>

#include "engine/EngineTypes.h"

class QChart;
class QChartView;
class QLineSeries;
class QValueAxis;
class QLabel;
class QProgressBar;

class KvMemoryPanel : public QWidget {
  Q_OBJECT

 public:
  explicit KvMemoryPanel(QWidget* parent = nullptr);

  // A new model: clears the chart and shows its formats.
  void setModel(const EngineModelInfo& info);
  void addStats(const EngineMemoryStats& stats);
  void clear();

  // For tests: points currently plotted (x = tokens, y = MiB).
  int pointCount() const;
  double lastKvMiB() const;
  double lastKvFp16MiB() const;
  QString ratioText() const;

 protected:
  void changeEvent(QEvent* event) override;

 private:
  void applyPalette();
  void rescale();

  QChart* chart_;
  QChartView* view_;
  QLineSeries* kv_;
  QLineSeries* kvFp16_;
  QValueAxis* axisX_;
  QValueAxis* axisY_;
  QLabel* title_;
  QLabel* ratio_;
  QLabel* kvLine_;
  QLabel* weightLine_;
  QLabel* contextLine_;
  QLabel* deviceLine_;
  QProgressBar* deviceBar_;
  QString kvFormat_;
  int maxTokens_ = 0;
  double maxMiB_ = 0;
};
