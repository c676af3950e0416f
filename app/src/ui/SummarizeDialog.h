// "Summarize document…": open a .txt/.md file or paste text, see its token count against the loaded
// model's context and the plan (one pass, or N parts plus combine steps), run it on the engine thread
// with a progress bar per part and cancel. The result becomes a new conversation: the document is its
// first (user) message and is kept in the documents table, the summary is the assistant's reply, so
// follow-up questions continue from there. PDF files need the Qt PDF module, which this build does
// not use: the dialog says so instead of reading them.
#pragma once

#include <QDialog>
#include <QTimer>

#include "engine/EngineTypes.h"

class EngineWorker;
class ConversationStore;
class ComparisonStore;
class QLabel;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;

class SummarizeDialog : public QDialog {
  Q_OBJECT

 public:
  SummarizeDialog(EngineWorker* worker, ConversationStore& conversations, ComparisonStore& documents,
                  QWidget* parent = nullptr);

  // Reads a .txt/.md file, or a PDF's text layer when built with Qt PDF, into the dialog; false (and
  // `error`, naming the file) for unreadable files.
  bool loadFile(const QString& path, QString* error = nullptr);
  QString documentText() const;
  void setDocument(const QString& name, const QString& text);
  void setMaxTokens(int tokens);
  void start();
  void cancel();
  bool running() const { return running_; }
  const SummaryPlanInfo& plan() const { return plan_; }
  QString planText() const;
  QString progressText() const;
  QString summaryPreview() const;

 Q_SIGNALS:
  void conversationCreated(qint64 conversationId);
  void finished(bool ok);  // after success, cancel or failure

 private:
  void requestPlan();
  void onPlanned(const SummaryPlanInfo& plan);
  void onProgress(const SummarizeStatus& s);
  void onText(qint64 id, int step, const QString& text);
  void onFinished(qint64 id, const QString& summary, bool cancelled);
  void onFailed(qint64 id, const QString& message);
  void setRunning(bool running);

  EngineWorker* worker_;
  ConversationStore& conversations_;
  ComparisonStore& documents_;
  QString name_ = tr("Pasted text");
  QString path_;
  qint64 requestId_ = 0;
  qint64 runId_ = 0;
  bool running_ = false;
  int currentStep_ = -1;
  SummaryPlanInfo plan_;
  QTimer planTimer_;

  QPlainTextEdit* text_;
  QLabel* source_;
  QSpinBox* maxTokens_;
  QLabel* planLabel_;
  QLabel* partLabel_;
  QProgressBar* overall_;
  QProgressBar* part_;
  QPlainTextEdit* preview_;
  QPushButton* open_;
  QPushButton* start_;
  QPushButton* cancel_;
};
