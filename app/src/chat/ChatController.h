// The chat logic between the views, the store and the engine: which conversation is open, sending a
// prompt, streaming the reply into MessageListModel (which persists it while it streams), stop,
// regenerate, edit-and-resend, and the model / mode in use. It owns no widgets, so tests drive it
// directly; MainWindow only forwards user actions and shows the signals.
//
// One reply is generated at a time. Every request carries an id; tokens of an older request (one that
// was stopped or replaced) are ignored.
#pragma once

#include <QObject>
#include <QString>

#include "engine/EngineTypes.h"

class ConversationStore;
class ConversationListModel;
class MessageListModel;
class EngineWorker;

class ChatController : public QObject {
  Q_OBJECT

 public:
  ChatController(ConversationStore* store, ConversationListModel* conversations, MessageListModel* messages,
                 EngineWorker* worker, QObject* parent = nullptr);

  ConversationListModel* conversations() const { return conversations_; }
  MessageListModel* messages() const { return messages_; }
  EngineWorker* worker() const { return worker_; }

  qint64 currentConversation() const { return currentId_; }
  void openConversation(qint64 id);  // 0: none
  qint64 newConversation();

  // Loads a model on the worker; the result arrives as modelReady / modelFailed.
  void loadModel(const QString& path, const QString& mode);
  bool isModelReady() const { return modelReady_; }
  bool isModelLoading() const { return modelLoading_; }
  const EngineModelInfo& modelInfo() const { return modelInfo_; }
  QString requestedMode() const { return requestedMode_; }

  bool isGenerating() const { return activeRequest_ != 0; }
  // Whether send() would accept a prompt now, and if not, why (for the UI).
  QString cannotSendReason() const;

  // Appends the prompt (creating a conversation if none is open) and starts the reply. Returns false
  // and changes nothing when it cannot send (no model, still loading, already generating, empty text).
  bool send(const QString& text);
  // Replaces the last assistant reply with a new one.
  bool regenerate();
  // Changes the last user message to `text`, drops what followed, and generates a new reply.
  bool editLastUserMessage(const QString& text);
  // Ends the reply being generated (what arrived so far is kept).
  void stop();

  // Per-conversation settings (stored).
  SamplingSettings sampling() const;
  QString systemPrompt() const;
  void setConversationSettings(const QString& systemPrompt, const SamplingSettings& sampling);

  int lastRowOfRole(const QString& role) const;

 Q_SIGNALS:
  void currentConversationChanged(qint64 id);
  void busyChanged(bool generating);
  void modelLoadingStarted(const QString& path);
  void modelReady(const EngineModelInfo& info);
  void modelFailed(const QString& path, const QString& message);
  void replyFinished(const GenerationStats& stats);
  void replyFailed(const QString& message);
  void errorMessage(const QString& message);

 private:
  void startReply();
  void onToken(qint64 requestId, const QString& text);
  void onFinished(qint64 requestId, const GenerationStats& stats);
  void onFailed(qint64 requestId, const QString& message);
  void setActive(qint64 requestId);

  ConversationStore* store_;
  ConversationListModel* conversations_;
  MessageListModel* messages_;
  EngineWorker* worker_;
  qint64 currentId_ = 0;
  qint64 streamConversation_ = 0;
  qint64 nextRequest_ = 1;
  qint64 activeRequest_ = 0;
  bool modelReady_ = false;
  bool modelLoading_ = false;
  EngineModelInfo modelInfo_;
  QString requestedMode_;
};
