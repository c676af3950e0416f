#include "ui/SummarizeDialog.h"

#if defined(WKV_HAVE_QTPDF)
#include <QPdfDocument>
#include <QPdfSelection>
#endif

#include <QDialogButtonBox>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QVBoxLayout>

#include "engine/EngineWorker.h"
#include "storage/ComparisonStore.h"
#include "storage/ConversationStore.h"

namespace {

#if defined(WKV_HAVE_QTPDF)
QString pdfErrorText(QPdfDocument::Error e) {
  switch (e) {
    case QPdfDocument::Error::FileNotFound: return QStringLiteral("file not found");
    case QPdfDocument::Error::InvalidFileFormat: return QStringLiteral("not a valid PDF file");
    case QPdfDocument::Error::IncorrectPassword: return QStringLiteral("the PDF is password-protected");
    case QPdfDocument::Error::UnsupportedSecurityScheme: return QStringLiteral("unsupported PDF encryption");
    case QPdfDocument::Error::DataNotYetAvailable: return QStringLiteral("the file is incomplete");
    default: return QStringLiteral("unknown PDF error");
  }
}
#endif
qint64 g_nextSummarizeId = 1;  // request ids unique within the process (GUI thread only)
}

SummarizeDialog::SummarizeDialog(EngineWorker* worker, ConversationStore& conversations, ComparisonStore& documents,
                                 QWidget* parent)
    : QDialog(parent), worker_(worker), conversations_(conversations), documents_(documents) {
  setWindowTitle(tr("Summarize document"));
  resize(720, 640);
  auto* layout = new QVBoxLayout(this);
  auto* top = new QHBoxLayout;
  open_ = new QPushButton(tr("Open file…"), this);
  source_ = new QLabel(tr("Paste text below or open a .txt / .md file."), this);
  top->addWidget(open_);
  top->addWidget(source_, 1);
  layout->addLayout(top);
  text_ = new QPlainTextEdit(this);
  text_->setPlaceholderText(tr("Document text"));
  layout->addWidget(text_, 3);
  auto* form = new QFormLayout;
  maxTokens_ = new QSpinBox(this);
  maxTokens_->setRange(16, 2048);
  maxTokens_->setValue(256);
  form->addRow(tr("Summary length (tokens per part)"), maxTokens_);
  planLabel_ = new QLabel(this);
  planLabel_->setWordWrap(true);
  form->addRow(tr("Plan"), planLabel_);
  layout->addLayout(form);
  overall_ = new QProgressBar(this);
  overall_->setFormat(tr("Step %v of %m"));
  part_ = new QProgressBar(this);
  partLabel_ = new QLabel(this);
  layout->addWidget(overall_);
  layout->addWidget(partLabel_);
  layout->addWidget(part_);
  preview_ = new QPlainTextEdit(this);
  preview_->setReadOnly(true);
  preview_->setPlaceholderText(tr("The summary appears here while it is written."));
  layout->addWidget(preview_, 1);
  auto* buttons = new QDialogButtonBox(this);
  start_ = buttons->addButton(tr("Summarize"), QDialogButtonBox::AcceptRole);
  cancel_ = buttons->addButton(tr("Cancel run"), QDialogButtonBox::ActionRole);
  buttons->addButton(QDialogButtonBox::Close);
  layout->addWidget(buttons);
  setRunning(false);

  planTimer_.setSingleShot(true);
  planTimer_.setInterval(300);
  connect(&planTimer_, &QTimer::timeout, this, &SummarizeDialog::requestPlan);
  connect(text_, &QPlainTextEdit::textChanged, this, [this] { planTimer_.start(); });
  connect(maxTokens_, &QSpinBox::valueChanged, this, [this] { planTimer_.start(); });
  connect(open_, &QPushButton::clicked, this, [this] {
    const QString path = QFileDialog::getOpenFileName(this, tr("Open document"), {},
                                                      tr("Text (*.txt *.md *.markdown);;PDF (*.pdf);;All files (*)"));
    QString error;
    if (!path.isEmpty() && !loadFile(path, &error)) QMessageBox::warning(this, tr("Open document"), error);
  });
  connect(start_, &QPushButton::clicked, this, &SummarizeDialog::start);
  connect(cancel_, &QPushButton::clicked, this, &SummarizeDialog::cancel);
  connect(buttons, &QDialogButtonBox::rejected, this, [this] {
    cancel();
    reject();
  });

  connect(worker_, &EngineWorker::summaryPlanned, this, &SummarizeDialog::onPlanned);
  connect(worker_, &EngineWorker::summarizeProgress, this, &SummarizeDialog::onProgress);
  connect(worker_, &EngineWorker::summarizeText, this, &SummarizeDialog::onText);
  connect(worker_, &EngineWorker::summarizeFinished, this, &SummarizeDialog::onFinished);
  connect(worker_, &EngineWorker::summarizeFailed, this, &SummarizeDialog::onFailed);
}

bool SummarizeDialog::loadFile(const QString& path, QString* error) {
  const QFileInfo info(path);
  if (info.suffix().compare(QLatin1String("pdf"), Qt::CaseInsensitive) == 0) {
#if defined(WKV_HAVE_QTPDF)
    // The text layer of every page, pages separated by blank lines (paragraph boundaries for the planner).
    QPdfDocument pdf;
    const QPdfDocument::Error e = pdf.load(path);
    if (e != QPdfDocument::Error::None) {
      if (error) *error = tr("Cannot read the PDF %1: %2").arg(path, pdfErrorText(e));
      return false;
    }
    QStringList pages;
    for (int i = 0; i < pdf.pageCount(); ++i) pages << pdf.getAllText(i).text().trimmed();
    const QString text = pages.join(QStringLiteral("\n\n")).trimmed();
    if (text.isEmpty()) {
      if (error)
        *error = tr("%1 has no text layer (a scanned PDF?): nothing to summarize. Run it through OCR first.")
                     .arg(info.fileName());
      return false;
    }
    path_ = info.absoluteFilePath();
    setDocument(info.fileName(), text);
    return true;
#else
    if (error)
      *error = tr("PDF files cannot be read by this build: it does not include the Qt PDF module (Debian package "
                  "qt6-pdf-dev). Copy the text out of the PDF and paste it here instead.");
    return false;
#endif
  }
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly)) {
    if (error) *error = tr("Cannot read %1: %2").arg(path, f.errorString());
    return false;
  }
  path_ = info.absoluteFilePath();
  setDocument(info.fileName(), QString::fromUtf8(f.readAll()));
  return true;
}

QString SummarizeDialog::documentText() const { return text_->toPlainText(); }

void SummarizeDialog::setDocument(const QString& name, const QString& text) {
  name_ = name;
  source_->setText(name);
  text_->setPlainText(text);
  requestPlan();
}

void SummarizeDialog::setMaxTokens(int tokens) { maxTokens_->setValue(tokens); }

void SummarizeDialog::requestPlan() {
  planTimer_.stop();
  if (running_) return;
  if (text_->toPlainText().trimmed().isEmpty()) {
    planLabel_->setText(tr("No text yet."));
    start_->setEnabled(false);
    return;
  }
  SummarizeRequest r;
  r.requestId = requestId_ = g_nextSummarizeId++;
  r.text = text_->toPlainText();
  r.maxTokens = maxTokens_->value();
  r.planOnly = true;
  QMetaObject::invokeMethod(worker_, "summarize", Qt::QueuedConnection, Q_ARG(SummarizeRequest, r));
}

QString SummarizeDialog::planText() const { return planLabel_->text(); }
QString SummarizeDialog::progressText() const { return partLabel_->text(); }
QString SummarizeDialog::summaryPreview() const { return preview_->toPlainText(); }

void SummarizeDialog::onPlanned(const SummaryPlanInfo& p) {
  if (p.requestId != requestId_ && p.requestId != runId_) return;
  plan_ = p;
  if (p.direct)
    planLabel_->setText(tr("%1 tokens; the context holds %2: read in one pass.").arg(p.documentTokens).arg(p.contextTokens));
  else
    planLabel_->setText(tr("%1 tokens; the context holds %2: %3 parts of up to %4 tokens, then %5 combine level(s) "
                           "(%6 steps).")
                            .arg(p.documentTokens)
                            .arg(p.contextTokens)
                            .arg(p.nChunks)
                            .arg(p.chunkBudget)
                            .arg(p.nLevels)
                            .arg(p.nSteps));
  overall_->setRange(0, p.nSteps);
  if (!running_) start_->setEnabled(true);
}

void SummarizeDialog::start() {
  if (running_ || text_->toPlainText().trimmed().isEmpty()) return;
  SummarizeRequest r;
  r.requestId = runId_ = g_nextSummarizeId++;
  r.text = text_->toPlainText();
  r.maxTokens = maxTokens_->value();
  preview_->clear();
  currentStep_ = -1;
  overall_->setValue(0);
  setRunning(true);
  QMetaObject::invokeMethod(worker_, "summarize", Qt::QueuedConnection, Q_ARG(SummarizeRequest, r));
}

void SummarizeDialog::cancel() {
  if (running_) worker_->stop();
}

void SummarizeDialog::onProgress(const SummarizeStatus& s) {
  if (s.requestId != runId_ || !running_) return;
  overall_->setRange(0, s.nSteps);
  overall_->setValue(s.phase == QLatin1String("done") ? s.step + 1 : s.step);
  const QString what = s.kind == QLatin1String("combine") ? tr("combining partial summaries")
                       : s.kind == QLatin1String("direct") ? tr("whole document")
                                                           : tr("part of the document");
  const QString phase = s.phase == QLatin1String("prefill") ? tr("reading %1 / %2 tokens").arg(s.done).arg(s.total)
                        : s.phase == QLatin1String("generate") ? tr("writing %1 / %2 tokens").arg(s.done).arg(s.total)
                                                               : tr("done");
  partLabel_->setText(tr("Step %1 of %2 (%3): %4").arg(s.step + 1).arg(s.nSteps).arg(what, phase));
  part_->setRange(0, std::max(1, s.total));
  part_->setValue(std::min(s.done, std::max(1, s.total)));
}

void SummarizeDialog::onText(qint64 id, int step, const QString& text) {
  if (id != runId_) return;
  if (step != currentStep_) {
    currentStep_ = step;
    preview_->clear();
  }
  preview_->moveCursor(QTextCursor::End);
  preview_->insertPlainText(text);
}

void SummarizeDialog::onFinished(qint64 id, const QString& summary, bool cancelled) {
  if (id != runId_) return;
  setRunning(false);
  if (cancelled) {
    partLabel_->setText(tr("Cancelled."));
    emit finished(false);
    return;
  }
  const QString text = text_->toPlainText();
  try {
    const Conversation c = conversations_.createConversation(tr("Summary: %1").arg(name_));
    conversations_.appendMessage(c.id, QStringLiteral("user"), text);
    Document d;
    d.conversationId = c.id;
    d.name = name_;
    d.path = path_;
    d.content = text;
    d.tokenCount = plan_.documentTokens;
    documents_.addDocument(d);
    conversations_.appendMessage(c.id, QStringLiteral("assistant"), summary);
    partLabel_->setText(tr("Done: the summary is in a new conversation."));
    emit conversationCreated(c.id);
    emit finished(true);
  } catch (const std::exception& e) {
    onFailed(id, QString::fromUtf8(e.what()));
  }
}

void SummarizeDialog::onFailed(qint64 id, const QString& message) {
  if (id == requestId_ && !running_) {
    planLabel_->setText(message);
    start_->setEnabled(false);
    return;
  }
  if (id != runId_) return;
  setRunning(false);
  partLabel_->setText(tr("Failed: %1").arg(message));
  emit finished(false);
}

void SummarizeDialog::setRunning(bool running) {
  running_ = running;
  start_->setEnabled(!running && !text_->toPlainText().trimmed().isEmpty());
  cancel_->setEnabled(running);
  open_->setEnabled(!running);
  text_->setReadOnly(running);
  maxTokens_->setEnabled(!running);
}
