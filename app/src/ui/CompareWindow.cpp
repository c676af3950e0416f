#include "ui/CompareWindow.h"

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QVBoxLayout>

#include <wkv/quant.h>

#include "engine/EngineWorker.h"
#include "storage/ComparisonStore.h"

namespace {
qint64 g_nextCompareId = 1;
const char* const kDefaultModes[CompareWindow::kMaxPanes] = {"fp16", "w4kv4-rtn", "w4", "w4a4"};
}  // namespace

CompareWindow::CompareWindow(EngineWorker* worker, ComparisonStore& store, QWidget* parent)
    : QWidget(parent, Qt::Window), worker_(worker), store_(store) {
  setWindowTitle(tr("Compare quantization modes"));
  resize(1100, 720);
  auto* layout = new QVBoxLayout(this);
  auto* config = new QHBoxLayout;
  auto* left = new QFormLayout;
  count_ = new QSpinBox(this);
  count_->setRange(2, kMaxPanes);
  count_->setValue(2);
  left->addRow(tr("Panes"), count_);
  temperature_ = new QDoubleSpinBox(this);
  temperature_->setRange(0, 2);
  temperature_->setSingleStep(0.1);
  temperature_->setValue(0);
  temperature_->setSpecialValueText(tr("greedy"));
  left->addRow(tr("Temperature"), temperature_);
  seed_ = new QSpinBox(this);
  seed_->setRange(1, 1 << 30);
  seed_->setValue(1);
  left->addRow(tr("Seed (same for every pane)"), seed_);
  maxTokens_ = new QSpinBox(this);
  maxTokens_->setRange(1, 4096);
  maxTokens_->setValue(64);
  left->addRow(tr("Max tokens"), maxTokens_);
  fp16Model_ = new QLineEdit(this);
  fp16Model_->setPlaceholderText(tr("FP16 model for divergence / NLL (default: the fp16 pane's)"));
  left->addRow(tr("FP16 reference"), fp16Model_);
  config->addLayout(left);
  auto* paneConfig = new QVBoxLayout;
  auto* grid = new QGridLayout;
  for (int i = 0; i < kMaxPanes; ++i) {
    PaneWidgets& p = panes_[i];
    p.config = new QWidget(this);
    auto* row = new QHBoxLayout(p.config);
    row->setContentsMargins(0, 0, 0, 0);
    row->addWidget(new QLabel(tr("Pane %1").arg(i + 1), p.config));
    p.mode = new QComboBox(p.config);
    for (wkv::QuantMode m : wkv::all_quant_modes()) p.mode->addItem(QString::fromLatin1(wkv::quant_mode_name(m)));
    p.mode->setCurrentText(QString::fromLatin1(kDefaultModes[i]));
    p.model = new QLineEdit(p.config);
    p.model->setPlaceholderText(tr("model (default: the loaded one)"));
    row->addWidget(p.mode);
    row->addWidget(p.model, 1);
    paneConfig->addWidget(p.config);

    auto* box = new QGroupBox(this);
    p.box = box;
    auto* v = new QVBoxLayout(box);
    p.title = new QLabel(box);
    p.text = new QPlainTextEdit(box);
    p.text->setReadOnly(true);
    p.stats = new QLabel(box);
    p.stats->setWordWrap(true);
    p.stats->setTextInteractionFlags(Qt::TextSelectableByMouse);
    v->addWidget(p.title);
    v->addWidget(p.text, 1);
    v->addWidget(p.stats);
    grid->addWidget(box, 0, i);
  }
  config->addLayout(paneConfig, 1);
  layout->addLayout(config);
  prompt_ = new QPlainTextEdit(this);
  prompt_->setPlaceholderText(tr("Prompt"));
  prompt_->setMaximumHeight(90);
  layout->addWidget(prompt_);
  auto* buttons = new QHBoxLayout;
  run_ = new QPushButton(tr("Run"), this);
  cancel_ = new QPushButton(tr("Cancel"), this);
  export_ = new QPushButton(tr("Export Markdown…"), this);
  status_ = new QLabel(this);
  status_->setWordWrap(true);
  buttons->addWidget(run_);
  buttons->addWidget(cancel_);
  buttons->addWidget(export_);
  buttons->addWidget(status_, 1);
  layout->addLayout(buttons);
  layout->addLayout(grid, 1);
  setRunning(false);
  updatePaneVisibility();

  connect(count_, &QSpinBox::valueChanged, this, &CompareWindow::updatePaneVisibility);
  connect(run_, &QPushButton::clicked, this, &CompareWindow::run);
  connect(cancel_, &QPushButton::clicked, this, &CompareWindow::cancel);
  connect(export_, &QPushButton::clicked, this, [this] {
    const QString path =
        QFileDialog::getSaveFileName(this, tr("Export comparison"), QStringLiteral("comparison.md"), tr("Markdown (*.md)"));
    QString error;
    if (!path.isEmpty() && !exportMarkdown(path, &error)) QMessageBox::warning(this, tr("Export"), error);
  });
  connect(worker_, &EngineWorker::compareToken, this, &CompareWindow::onToken);
  connect(worker_, &EngineWorker::comparePaneStarted, this, [this](qint64 id, int pane) {
    if (id == requestId_ && pane < kMaxPanes) status_->setText(tr("Running pane %1…").arg(pane + 1));
  });
  connect(worker_, &EngineWorker::comparePaneFinished, this, &CompareWindow::onPaneFinished);
  connect(worker_, &EngineWorker::compareFinished, this, &CompareWindow::onFinished);
  connect(worker_, &EngineWorker::compareFailed, this, &CompareWindow::onFailed);
}

void CompareWindow::setPrompt(const QString& prompt) { prompt_->setPlainText(prompt); }

void CompareWindow::setPanes(const QList<ComparePaneSpec>& panes) {
  const int n = std::clamp(static_cast<int>(panes.size()), 2, kMaxPanes);
  count_->setValue(n);
  for (int i = 0; i < n && i < panes.size(); ++i) {
    panes_[i].mode->setCurrentText(panes[i].mode);
    panes_[i].model->setText(panes[i].modelPath);
  }
}

void CompareWindow::setSampling(double temperature, quint64 seed, int maxTokens) {
  temperature_->setValue(temperature);
  seed_->setValue(static_cast<int>(seed));
  maxTokens_->setValue(maxTokens);
}

void CompareWindow::setFp16ModelPath(const QString& path) { fp16Model_->setText(path); }
int CompareWindow::paneCount() const { return count_->value(); }
QString CompareWindow::paneText(int pane) const { return panes_[pane].text->toPlainText(); }
QString CompareWindow::paneStats(int pane) const { return panes_[pane].stats->text(); }
QString CompareWindow::note() const { return status_->text(); }

void CompareWindow::updatePaneVisibility() {
  for (int i = 0; i < kMaxPanes; ++i) {
    panes_[i].config->setVisible(i < count_->value());
    panes_[i].box->setVisible(i < count_->value());
  }
}

void CompareWindow::run() {
  if (running_) return;
  if (prompt_->toPlainText().trimmed().isEmpty()) {
    status_->setText(tr("Type a prompt first."));
    return;
  }
  CompareRequest r;
  r.requestId = requestId_ = g_nextCompareId++;
  r.prompt = prompt_->toPlainText();
  r.fp16ModelPath = fp16Model_->text().trimmed();
  r.sampling = temperature_->value() > 0 ? SamplingSettings{} : SamplingSettings::greedy();
  r.sampling.temperature = temperature_->value();
  r.sampling.repetitionPenalty = 1.0;
  r.sampling.seed = static_cast<quint64>(seed_->value());
  r.sampling.maxTokens = maxTokens_->value();
  for (int i = 0; i < count_->value(); ++i) {
    r.panes.push_back({panes_[i].mode->currentText(), panes_[i].model->text().trimmed()});
    panes_[i].title->setText(QStringLiteral("<b>%1</b> · %2")
                                 .arg(r.panes.back().mode,
                                      r.panes.back().modelPath.isEmpty() ? tr("loaded model")
                                                                         : QFileInfo(r.panes.back().modelPath).fileName()));
    panes_[i].text->clear();
    panes_[i].stats->clear();
  }
  request_ = r;
  setRunning(true);
  status_->setText(tr("Starting…"));
  QMetaObject::invokeMethod(worker_, "compare", Qt::QueuedConnection, Q_ARG(CompareRequest, r));
}

void CompareWindow::cancel() {
  if (running_) worker_->stop();
}

void CompareWindow::onToken(qint64 id, int pane, const QString& text) {
  if (id != requestId_ || pane >= kMaxPanes) return;
  QPlainTextEdit* e = panes_[pane].text;
  e->moveCursor(QTextCursor::End);
  e->insertPlainText(text);
}

QString CompareWindow::statsText(const ComparePaneOutcome& o) {
  if (!o.error.isEmpty()) return tr("Error: %1").arg(o.error);
  QString s = tr("%1 tokens · %2 tok/s · KV cache %3 · weights %4")
                  .arg(o.completionTokens)
                  .arg(o.tokensPerSecond, 0, 'f', 1)
                  .arg(formatBytes(o.kvBytes), formatBytes(o.weightBytes));
  if (o.divergeAt == -1) s += tr(" · same tokens as FP16");
  else if (o.divergeAt >= 0) s += tr(" · diverges from FP16 at token %1").arg(o.divergeAt);
  if (o.hasNll) s += tr(" · NLL under FP16 %1 (perplexity %2)").arg(o.nll, 0, 'f', 4).arg(o.perplexity, 0, 'f', 3);
  return s;
}

void CompareWindow::onPaneFinished(qint64 id, const ComparePaneOutcome& o) {
  if (id != requestId_ || o.pane >= kMaxPanes) return;
  panes_[o.pane].stats->setText(statsText(o));
  if (!o.text.isEmpty()) panes_[o.pane].text->setPlainText(o.text);
}

void CompareWindow::onFinished(qint64 id, const QList<ComparePaneOutcome>& panes, const QString& note, quint64 seed,
                               bool cancelled) {
  if (id != requestId_) return;
  setRunning(false);
  for (const ComparePaneOutcome& o : panes)
    if (o.pane < kMaxPanes) panes_[o.pane].stats->setText(statsText(o));
  if (cancelled) {
    status_->setText(tr("Cancelled."));
    emit finished(false);
    return;
  }
  Comparison c;
  c.prompt = request_.prompt;
  QJsonObject settings = QJsonDocument::fromJson(request_.sampling.toJson().toUtf8()).object();
  settings.insert(QStringLiteral("seed"), QString::number(seed));
  c.settingsJson = QString::fromUtf8(QJsonDocument(settings).toJson(QJsonDocument::Compact));
  for (const ComparePaneOutcome& o : panes) {
    ComparisonPane p;
    p.pane = o.pane;
    p.mode = o.mode;
    p.modelPath = o.modelPath;
    p.output = o.text;
    p.promptTokens = o.promptTokens;
    p.completionTokens = o.completionTokens;
    p.tokensPerSecond = o.tokensPerSecond;
    p.kvBytes = o.kvBytes;
    p.weightBytes = o.weightBytes;
    if (o.divergeAt >= -1) p.divergeAt = o.divergeAt;
    if (o.hasNll) {
      p.nll = o.nll;
      p.perplexity = o.perplexity;
    }
    p.error = o.error;
    p.complete = o.complete;
    c.panes.push_back(p);
  }
  try {
    lastId_ = store_.saveComparison(c);
  } catch (const std::exception& e) {
    status_->setText(tr("Could not save the comparison: %1").arg(QString::fromUtf8(e.what())));
    emit finished(false);
    return;
  }
  export_->setEnabled(true);
  status_->setText(note.isEmpty() ? tr("Done; saved.") : tr("Done; saved. %1").arg(note));
  emit comparisonSaved(lastId_);
  emit finished(true);
}

void CompareWindow::onFailed(qint64 id, const QString& message) {
  if (id != requestId_) return;
  setRunning(false);
  status_->setText(tr("Failed: %1").arg(message));
  emit finished(false);
}

bool CompareWindow::exportMarkdown(const QString& path, QString* error) {
  if (!lastId_) {
    if (error) *error = tr("Nothing to export yet: run a comparison first.");
    return false;
  }
  QFile f(path);
  if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate)) {
    if (error) *error = tr("Cannot write %1: %2").arg(path, f.errorString());
    return false;
  }
  f.write(store_.exportMarkdown(lastId_).toUtf8());
  return true;
}

void CompareWindow::setRunning(bool running) {
  running_ = running;
  run_->setEnabled(!running);
  cancel_->setEnabled(running);
  export_->setEnabled(!running && lastId_ != 0);
  count_->setEnabled(!running);
  for (auto& p : panes_) p.config->setEnabled(!running);
}
