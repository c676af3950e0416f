#include "ui/QuantizeDialog.h"

#include <QComboBox>
#include <QDialogButtonBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QMetaObject>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QVBoxLayout>

#include "engine/EngineWorker.h"

namespace {
QWidget* withBrowse(QLineEdit* edit, const std::function<void()>& browse, QWidget* parent) {
  auto* row = new QWidget(parent);
  auto* h = new QHBoxLayout(row);
  h->setContentsMargins(0, 0, 0, 0);
  h->addWidget(edit, 1);
  auto* b = new QPushButton(QObject::tr("Browse…"), row);
  QObject::connect(b, &QPushButton::clicked, row, browse);
  h->addWidget(b);
  return row;
}

QString duration(double seconds) {
  const int s = static_cast<int>(seconds + 0.5);
  if (s < 60) return QObject::tr("%1 s").arg(s);
  if (s < 3600) return QObject::tr("%1 min %2 s").arg(s / 60).arg(s % 60);
  return QObject::tr("%1 h %2 min").arg(s / 3600).arg((s % 3600) / 60);
}
}  // namespace

QuantizeDialog::QuantizeDialog(EngineWorker* worker, QWidget* parent) : QDialog(parent), worker_(worker) {
  setWindowTitle(tr("Quantize a model"));
  auto* layout = new QVBoxLayout(this);
  auto* intro = new QLabel(tr("Quantize an FP16/BF16 Hugging Face LLaMA checkpoint to 4-bit weights and a 4-bit "
                              "KV cache (WKVQuant) and save it as one .wkvq file."),
                           this);
  intro->setWordWrap(true);
  layout->addWidget(intro);

  auto* form = new QFormLayout;
  model_ = new QLineEdit(this);
  model_->setPlaceholderText(tr("Folder with config.json, model.safetensors, tokenizer.model"));
  calib_ = new QLineEdit(this);
  calib_->setPlaceholderText(tr("Plain text, e.g. wiki.valid.raw (not needed for rtn)"));
  out_ = new QLineEdit(this);
  form->addRow(tr("Model folder"), withBrowse(model_, [this] {
                 const QString d = QFileDialog::getExistingDirectory(this, tr("FP16 model folder"), model_->text());
                 if (!d.isEmpty()) model_->setText(d);
               }, this));
  form->addRow(tr("Calibration text"), withBrowse(calib_, [this] {
                 const QString f = QFileDialog::getOpenFileName(this, tr("Calibration text"), calib_->text(),
                                                                tr("Text files (*.txt *.raw);;All files (*)"));
                 if (!f.isEmpty()) calib_->setText(f);
               }, this));
  form->addRow(tr("Output file"), withBrowse(out_, [this] {
                 const QString f = QFileDialog::getSaveFileName(this, tr("Save quantized model"), out_->text(),
                                                                tr("WKV models (*.wkvq)"));
                 if (!f.isEmpty()) {
                   out_->setText(f.endsWith(QLatin1String(".wkvq")) ? f : f + QStringLiteral(".wkvq"));
                   outEdited_ = true;
                 }
               }, this));
  method_ = new QComboBox(this);
  method_->addItem(tr("WKVQuant (learned clipping + smoothing, CRR)"), QStringLiteral("wkvquant"));
  method_->addItem(tr("Statistics (RTN weights + KV smoothing from calibration)"), QStringLiteral("stats"));
  method_->addItem(tr("Round to nearest (no calibration)"), QStringLiteral("rtn"));
  method_->setCurrentIndex(1);
  form->addRow(tr("Method"), method_);
  group_ = new QSpinBox(this);
  group_->setRange(8, 8192);
  group_->setValue(128);
  group_->setToolTip(tr("Weight group size g (input channels per scale)"));
  kvGroup_ = new QSpinBox(this);
  kvGroup_->setRange(0, 1024);
  kvGroup_->setSpecialValueText(tr("head dim"));
  samples_ = new QSpinBox(this);
  samples_->setRange(0, 4096);
  samples_->setSpecialValueText(tr("default"));
  seqlen_ = new QSpinBox(this);
  seqlen_->setRange(0, 32768);
  seqlen_->setSpecialValueText(tr("default"));
  form->addRow(tr("Weight group"), group_);
  form->addRow(tr("KV group"), kvGroup_);
  form->addRow(tr("Calibration samples"), samples_);
  form->addRow(tr("Sample length (tokens)"), seqlen_);
  layout->addLayout(form);

  stage_ = new QLabel(tr("Ready"), this);
  progress_ = new QProgressBar(this);
  progress_->setRange(0, 1);
  progress_->setValue(0);
  detail_ = new QLabel(this);
  detail_->setForegroundRole(QPalette::PlaceholderText);
  layout->addWidget(stage_);
  layout->addWidget(progress_);
  layout->addWidget(detail_);

  auto* buttons = new QDialogButtonBox(this);
  start_ = buttons->addButton(tr("Quantize"), QDialogButtonBox::AcceptRole);
  cancel_ = buttons->addButton(QDialogButtonBox::Cancel);
  layout->addWidget(buttons);
  connect(start_, &QPushButton::clicked, this, &QuantizeDialog::start);
  connect(cancel_, &QPushButton::clicked, this, &QuantizeDialog::reject);
  connect(model_, &QLineEdit::textChanged, this, &QuantizeDialog::updateOutput);
  connect(out_, &QLineEdit::textEdited, this, [this] { outEdited_ = true; });
  for (QLineEdit* e : {model_, calib_, out_}) connect(e, &QLineEdit::textChanged, this, &QuantizeDialog::validate);
  connect(method_, &QComboBox::currentIndexChanged, this, &QuantizeDialog::validate);

  connect(worker_, &EngineWorker::quantizeProgress, this, [this](const QuantizeStatus& s) {
    if (!running_) return;
    stage_->setText(s.total > 0 ? tr("%1 — %2 of %3").arg(s.stage).arg(s.step).arg(s.total) : s.stage);
    progress_->setRange(0, std::max(1, s.total));
    progress_->setValue(s.step);
    QStringList parts;
    if (s.loss > 0) parts << tr("loss %1").arg(s.loss, 0, 'g', 4);
    parts << tr("elapsed %1").arg(duration(elapsed_.elapsed() / 1000.0));
    if (s.etaSeconds > 0) parts << tr("about %1 left").arg(duration(s.etaSeconds));
    detail_->setText(parts.join(QStringLiteral(" · ")));
  });
  connect(worker_, &EngineWorker::quantizeFinished, this, [this](const QString& path, const QString& summary) {
    if (!running_) return;
    setRunning(false);
    stage_->setText(tr("Saved %1").arg(QDir::toNativeSeparators(path)));
    progress_->setRange(0, 1);
    progress_->setValue(1);
    emit quantized(path, summary);
    accept();
  });
  connect(worker_, &EngineWorker::quantizeFailed, this, [this](const QString& message, bool cancelled) {
    if (!running_) return;
    setRunning(false);
    stage_->setText(cancelled ? tr("Cancelled — nothing was written.") : tr("Failed: %1").arg(message));
    progress_->setValue(0);
  });
  validate();
  resize(620, 0);
}

QuantizeRequest QuantizeDialog::request() const {
  QuantizeRequest r;
  r.modelPath = model_->text().trimmed();
  r.calibPath = calib_->text().trimmed();
  r.outPath = out_->text().trimmed();
  r.method = method_->currentData().toString();
  r.weightGroup = group_->value();
  r.kvGroup = kvGroup_->value();
  r.samples = samples_->value();
  r.seqlen = seqlen_->value();
  return r;
}

void QuantizeDialog::updateOutput() {
  if (outEdited_) return;
  const QString m = model_->text().trimmed();
  if (m.isEmpty()) return;
  QFileInfo fi(m);
  const QString method = method_->currentData().toString();
  out_->setText(fi.absoluteDir().filePath(fi.fileName() + QStringLiteral("-") +
                                           (method == QLatin1String("wkvquant") ? QStringLiteral("w4kv4")
                                                                                : method) +
                                           QStringLiteral(".wkvq")));
}

void QuantizeDialog::validate() {
  const QuantizeRequest r = request();
  const bool needsCalib = r.method != QLatin1String("rtn");
  start_->setEnabled(!running_ && !r.modelPath.isEmpty() && !r.outPath.isEmpty() &&
                     (!needsCalib || !r.calibPath.isEmpty()));
}

void QuantizeDialog::start() {
  const QuantizeRequest r = request();
  if (!QFileInfo(r.modelPath).isDir()) {
    stage_->setText(tr("Not a folder: %1").arg(r.modelPath));
    return;
  }
  if (r.method != QLatin1String("rtn") && !QFileInfo(r.calibPath).isFile()) {
    stage_->setText(tr("Calibration text not found: %1").arg(r.calibPath));
    return;
  }
  setRunning(true);
  elapsed_.start();
  stage_->setText(tr("Starting…"));
  progress_->setRange(0, 0);  // busy until the first progress report
  QMetaObject::invokeMethod(worker_, "quantize", Qt::QueuedConnection, Q_ARG(QuantizeRequest, r));
}

void QuantizeDialog::setRunning(bool running) {
  running_ = running;
  for (QWidget* w : std::initializer_list<QWidget*>{model_, calib_, out_, method_, group_, kvGroup_, samples_, seqlen_})
    w->setEnabled(!running);
  cancel_->setText(running ? tr("Cancel quantization") : tr("Close"));
  validate();
}

void QuantizeDialog::reject() {
  if (running_) {
    worker_->cancelQuantize();  // the worker reports quantizeFailed(cancelled) at its next step
    stage_->setText(tr("Cancelling…"));
    return;
  }
  QDialog::reject();
}
