#include "ui/ConversationSettingsDialog.h"

#include <QDialogButtonBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRegularExpressionValidator>
#include <QSpinBox>
#include <QVBoxLayout>

namespace {
QDoubleSpinBox* spin(double lo, double hi, double step, int decimals, const QString& tip, QWidget* parent) {
  auto* s = new QDoubleSpinBox(parent);
  s->setRange(lo, hi);
  s->setSingleStep(step);
  s->setDecimals(decimals);
  s->setToolTip(tip);
  return s;
}
}  // namespace

ConversationSettingsDialog::ConversationSettingsDialog(const QString& systemPrompt, const SamplingSettings& sampling,
                                                       QWidget* parent)
    : QDialog(parent) {
  setWindowTitle(tr("Conversation settings"));
  auto* layout = new QVBoxLayout(this);

  auto* sysLabel = new QLabel(tr("System prompt"), this);
  layout->addWidget(sysLabel);
  system_ = new QPlainTextEdit(this);
  system_->setPlaceholderText(tr("Optional instructions the model sees before the conversation"));
  system_->setPlainText(systemPrompt);
  system_->setMinimumHeight(90);
  layout->addWidget(system_);

  auto* form = new QFormLayout;
  temperature_ = spin(0, 2, 0.05, 2, tr("0 = greedy (always the most likely token)"), this);
  topK_ = new QSpinBox(this);
  topK_->setRange(0, 1000);
  topK_->setToolTip(tr("0 disables"));
  topP_ = spin(0, 1, 0.01, 2, tr("1 disables"), this);
  minP_ = spin(0, 1, 0.01, 2, tr("0 disables"), this);
  repeat_ = spin(1, 2, 0.01, 2, tr("1 disables"), this);
  seed_ = new QLineEdit(this);
  seed_->setValidator(new QRegularExpressionValidator(QRegularExpression(QStringLiteral("\\d{0,19}")), seed_));
  seed_->setPlaceholderText(tr("random"));
  maxTokens_ = new QSpinBox(this);
  maxTokens_->setRange(1, 32768);
  form->addRow(tr("Temperature"), temperature_);
  form->addRow(tr("Top-k"), topK_);
  form->addRow(tr("Top-p"), topP_);
  form->addRow(tr("Min-p"), minP_);
  form->addRow(tr("Repetition penalty"), repeat_);
  form->addRow(tr("Seed"), seed_);
  form->addRow(tr("Maximum reply tokens"), maxTokens_);
  layout->addLayout(form);

  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel | QDialogButtonBox::Reset, this);
  auto* greedy = buttons->addButton(tr("Greedy"), QDialogButtonBox::ActionRole);
  connect(greedy, &QPushButton::clicked, this, [this] { show(SamplingSettings::greedy()); });
  connect(buttons->button(QDialogButtonBox::Reset), &QPushButton::clicked, this, [this] { show(SamplingSettings{}); });
  connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
  connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
  layout->addWidget(buttons);
  show(sampling);
  resize(460, 480);
}

void ConversationSettingsDialog::show(const SamplingSettings& s) {
  temperature_->setValue(s.temperature);
  topK_->setValue(s.topK);
  topP_->setValue(s.topP);
  minP_->setValue(s.minP);
  repeat_->setValue(s.repetitionPenalty);
  seed_->setText(s.seed ? QString::number(s.seed) : QString());
  maxTokens_->setValue(s.maxTokens);
}

QString ConversationSettingsDialog::systemPrompt() const { return system_->toPlainText(); }

SamplingSettings ConversationSettingsDialog::sampling() const {
  SamplingSettings s;
  s.temperature = temperature_->value();
  s.topK = topK_->value();
  s.topP = topP_->value();
  s.minP = minP_->value();
  s.repetitionPenalty = repeat_->value();
  s.seed = seed_->text().toULongLong();
  s.maxTokens = maxTokens_->value();
  return s;
}
