#include "chat/ChatController.h"

#include <QMetaObject>

#include "engine/EngineWorker.h"
#include "models/ConversationListModel.h"
#include "models/MessageListModel.h"
#include "storage/ConversationStore.h"
#include "storage/StorageError.h"

namespace {
// A title from the first prompt: its first line, at most ~48 characters, cut at a word.
QString titleFrom(const QString& text) {
  QString line = text.trimmed().section(QLatin1Char('\n'), 0, 0).simplified();
  if (line.size() > 48) {
    line.truncate(48);
    const int space = line.lastIndexOf(QLatin1Char(' '));
    if (space > 24) line.truncate(space);
    line += QStringLiteral("…");
  }
  return line;
}
}  // namespace

ChatController::ChatController(ConversationStore* store, ConversationListModel* conversations,
                               MessageListModel* messages, EngineWorker* worker, QObject* parent)
    : QObject(parent), store_(store), conversations_(conversations), messages_(messages), worker_(worker) {
  registerEngineTypes();
  connect(worker_, &EngineWorker::modelLoaded, this, [this](const EngineModelInfo& info) {
    modelLoading_ = false;
    modelReady_ = true;
    modelInfo_ = info;
    emit modelReady(info);
  });
  connect(worker_, &EngineWorker::modelLoadFailed, this, [this](const QString& path, const QString& message) {
    modelLoading_ = false;
    emit modelFailed(path, message);
  });
  connect(worker_, &EngineWorker::tokenStreamed, this, &ChatController::onToken);
  connect(worker_, &EngineWorker::generationFinished, this, &ChatController::onFinished);
  connect(worker_, &EngineWorker::generationFailed, this, &ChatController::onFailed);
  connect(messages_, &MessageListModel::storageError, this, &ChatController::errorMessage);
  connect(conversations_, &ConversationListModel::storageError, this, &ChatController::errorMessage);
}

void ChatController::openConversation(qint64 id) {
  if (id == currentId_ && messages_->conversationId() == id) return;
  currentId_ = id;
  messages_->setConversation(id);
  emit currentConversationChanged(id);
}

qint64 ChatController::newConversation() {
  const qint64 id = conversations_->createConversation(QString());
  if (id != 0) openConversation(id);
  return id;
}

void ChatController::loadModel(const QString& path, const QString& mode) {
  if (isGenerating()) stop();
  modelLoading_ = true;
  requestedMode_ = mode;
  emit modelLoadingStarted(path);
  QMetaObject::invokeMethod(worker_, "loadModel", Qt::QueuedConnection, Q_ARG(QString, path),
                            Q_ARG(QString, mode), Q_ARG(int, 0));
}

QString ChatController::cannotSendReason() const {
  if (modelLoading_) return tr("The model is still loading.");
  if (!modelReady_) return tr("No model is loaded: open one from the Model menu.");
  if (isGenerating()) return tr("A reply is being generated: stop it first.");
  return {};
}

int ChatController::lastRowOfRole(const QString& role) const {
  const auto& rows = messages_->messages();
  for (int i = static_cast<int>(rows.size()) - 1; i >= 0; --i)
    if (rows.at(i).role == role) return i;
  return -1;
}

bool ChatController::send(const QString& text) {
  if (text.trimmed().isEmpty() || !cannotSendReason().isEmpty()) return false;
  if (currentId_ == 0 && newConversation() == 0) return false;
  const bool first = messages_->rowCount() == 0;
  if (messages_->appendMessage(QStringLiteral("user"), text) == 0) return false;
  if (first) {
    const auto conv = conversations_->rowOf(currentId_);
    if (conv >= 0 && conversations_->conversations().at(conv).title.isEmpty())
      conversations_->renameConversation(currentId_, titleFrom(text));
  }
  startReply();
  return true;
}

bool ChatController::regenerate() {
  if (!cannotSendReason().isEmpty()) return false;
  const int userRow = lastRowOfRole(QStringLiteral("user"));
  if (userRow < 0) return false;
  if (!messages_->removeMessagesAfter(messages_->messageAt(userRow).seq)) return false;
  startReply();
  return true;
}

bool ChatController::editLastUserMessage(const QString& text) {
  if (text.trimmed().isEmpty() || !cannotSendReason().isEmpty()) return false;
  const int userRow = lastRowOfRole(QStringLiteral("user"));
  if (userRow < 0) return false;
  const int seq = messages_->messageAt(userRow).seq;
  if (!messages_->editMessage(userRow, text)) return false;
  if (!messages_->removeMessagesAfter(seq)) return false;
  startReply();
  return true;
}

void ChatController::stop() {
  if (isGenerating()) worker_->stop();
}

SamplingSettings ChatController::sampling() const {
  const int row = conversations_->rowOf(currentId_);
  if (row < 0) return SamplingSettings::fromJson(store_->setting(QStringLiteral("sampling/default")));
  return SamplingSettings::fromJson(conversations_->conversations().at(row).samplingJson);
}

QString ChatController::systemPrompt() const {
  const int row = conversations_->rowOf(currentId_);
  return row < 0 ? QString() : conversations_->conversations().at(row).systemPrompt;
}

void ChatController::setConversationSettings(const QString& systemPrompt, const SamplingSettings& sampling) {
  if (currentId_ == 0 && newConversation() == 0) return;
  try {
    store_->setSystemPrompt(currentId_, systemPrompt);
    store_->setSamplingJson(currentId_, sampling.toJson());
    // New conversations start from the last settings chosen.
    store_->setSetting(QStringLiteral("sampling/default"), sampling.toJson());
  } catch (const StorageError& e) {
    emit errorMessage(e.message());
  }
  conversations_->refreshConversation(currentId_);
}

void ChatController::startReply() {
  GenerationRequest req;
  req.requestId = nextRequest_++;
  req.systemPrompt = systemPrompt();
  req.sampling = sampling();
  for (const Message& m : messages_->messages()) {
    if (m.role == QLatin1String("system")) continue;  // notes; the prompt comes from the conversation
    req.turns.append(ChatTurn{m.role, m.content});
  }
  MessageStats pending;
  pending.model = modelInfo_.name;
  pending.mode = modelInfo_.mode;
  if (messages_->beginStreaming(pending) == 0) return;
  streamConversation_ = currentId_;
  try {
    store_->setConversationModel(currentId_, modelInfo_.path, modelInfo_.mode);
  } catch (const StorageError& e) {
    emit errorMessage(e.message());
  }
  setActive(req.requestId);
  QMetaObject::invokeMethod(worker_, "generate", Qt::QueuedConnection, Q_ARG(GenerationRequest, req));
}

void ChatController::setActive(qint64 requestId) {
  const bool was = isGenerating();
  activeRequest_ = requestId;
  if (was != isGenerating()) emit busyChanged(isGenerating());
}

void ChatController::onToken(qint64 requestId, const QString& text) {
  if (requestId == activeRequest_) messages_->appendStreamText(text);
}

void ChatController::onFinished(qint64 requestId, const GenerationStats& stats) {
  if (requestId != activeRequest_) return;
  MessageStats s;
  s.model = modelInfo_.name;
  s.mode = modelInfo_.mode;
  s.promptTokens = stats.promptTokens;
  s.completionTokens = stats.completionTokens;
  s.tokensPerSecond = stats.tokensPerSecond;
  s.kvBytes = stats.kvBytes;
  messages_->finishStreaming(s);
  conversations_->refreshConversation(streamConversation_);
  setActive(0);
  emit replyFinished(stats);
}

void ChatController::onFailed(qint64 requestId, const QString& message) {
  if (requestId != activeRequest_) return;
  // Keep whatever text arrived; an empty reply is removed so the conversation ends with the prompt
  // (Regenerate then retries it).
  const qint64 id = messages_->streamingMessageId();
  messages_->finishStreaming({});
  if (messages_->conversationId() == streamConversation_) {
    const int row = static_cast<int>(messages_->messages().size()) - 1;
    if (row >= 0 && messages_->messageAt(row).id == id && messages_->messageAt(row).content.isEmpty())
      messages_->removeMessagesAfter(messages_->messageAt(row).seq - 1);
  }
  conversations_->refreshConversation(streamConversation_);
  setActive(0);
  emit replyFailed(message);
}
