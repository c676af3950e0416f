// Per-conversation settings: the system prompt and the sampling settings (temperature, top-k, top-p,
// min-p, repetition penalty, seed, maximum reply length). Saved through ChatController into the store.
#pragma once

#include <QDialog>

#include "engine/EngineTypes.h"

class QPlainTextEdit;
class QDoubleSpinBox;
class QSpinBox;
class QLineEdit;

class ConversationSettingsDialog : public QDialog {
  Q_OBJECT

 public:
  ConversationSettingsDialog(const QString& systemPrompt, const SamplingSettings& sampling,
                             QWidget* parent = nullptr);

  QString systemPrompt() const;
  SamplingSettings sampling() const;

 private:
  void show(const SamplingSettings& s);

  QPlainTextEdit* system_;
  QDoubleSpinBox* temperature_;
  QSpinBox* topK_;
  QDoubleSpinBox* topP_;
  QDoubleSpinBox* minP_;
  QDoubleSpinBox* repeat_;
  QLineEdit* seed_;
  QSpinBox* maxTokens_;
};
