// Quantize a model: pick an FP16/BF16 checkpoint folder, a calibration text and the settings (method
// rtn | stats | wkvquant, weight group, KV group, samples, sequence length), then watch the progress
// (stage, step/total, loss, ETA) and cancel if needed. The work runs on the EngineWorker thread via
// wkv::quantize_to_file; on success quantized(path) is emitted so the window opens the new .wkvq.
#pragma once

#include <QDialog>
#include <QElapsedTimer>

#include "engine/EngineTypes.h"

class EngineWorker;
class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;

class QuantizeDialog : public QDialog {
  Q_OBJECT

 public:
  explicit QuantizeDialog(EngineWorker* worker, QWidget* parent = nullptr);

  QuantizeRequest request() const;
  bool isRunning() const { return running_; }

 Q_SIGNALS:
  // summary: EngineWorker::quantizeFinished's (what the calibration cost; may be empty).
  void quantized(const QString& outPath, const QString& summary);

 protected:
  void reject() override;

 private:
  void start();
  void setRunning(bool running);
  void updateOutput();
  void validate();

  EngineWorker* worker_;
  QLineEdit* model_;
  QLineEdit* calib_;
  QLineEdit* out_;
  QComboBox* method_;
  QSpinBox* group_;
  QSpinBox* kvGroup_;
  QSpinBox* samples_;
  QSpinBox* seqlen_;
  QProgressBar* progress_;
  QLabel* stage_;
  QLabel* detail_;
  QPushButton* start_;
  QPushButton* cancel_;
  bool running_ = false;
  bool outEdited_ = false;
  QElapsedTimer elapsed_;
};
