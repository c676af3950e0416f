#include "ui/MainWindow.h"

#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QCloseEvent>
#include <QComboBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QInputDialog>
#include <QLabel>
#include <QLineEdit>
#include <QListView>
#include <QListWidget>
#include <QMenu>
#include <QMenuBar>
#include <QMessageBox>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSaveFile>
#include <QShortcut>
#include <QSplitter>
#include <QStackedWidget>
#include <QStatusBar>
#include <QRegularExpression>
#include <QTimer>
#include <QToolBar>
#include <QToolButton>
#include <QVBoxLayout>

#include <wkv/quant.h>

#include "AppEnvironment.h"
#include "chat/ChatController.h"
#include "engine/EngineWorker.h"
#include "models/ConversationListModel.h"
#include "storage/ComparisonStore.h"
#include "ui/CompareWindow.h"
#include "ui/SummarizeDialog.h"
#include "models/MessageListModel.h"
#include "storage/ConversationStore.h"
#include "storage/Database.h"
#include "storage/StorageError.h"
#include "ui/ChatView.h"
#include "ui/ConversationSettingsDialog.h"
#include "ui/KvMemoryPanel.h"
#include "ui/QuantizeDialog.h"

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  registerEngineTypes();
  setWindowTitle(tr("WKV Chat"));
  openDatabase();
  engine_ = std::make_unique<EngineThread>();
  conversations_ = new ConversationListModel(store_.get(), this);
  messages_ = new MessageListModel(store_.get(), this);
  controller_ = new ChatController(store_.get(), conversations_, messages_, engine_->worker(), this);
  buildUi();
  buildMenus();
  buildStatusBar();

  connect(controller_, &ChatController::modelLoadingStarted, this, [this](const QString& path) {
    loadingPath_ = path;
    modelButton_->setText(tr("Loading %1…").arg(QFileInfo(path).fileName()));
    statusBar()->showMessage(tr("Loading %1…").arg(QDir::toNativeSeparators(path)));
    updatePlaceholder();
  });
  connect(controller_, &ChatController::modelReady, this, &MainWindow::onModelReady);
  connect(controller_, &ChatController::modelFailed, this, [this](const QString& path, const QString& message) {
    showError(tr("Could not load %1: %2").arg(QFileInfo(path).fileName(), message));
    modelButton_->setText(controller_->isModelReady() ? controller_->modelInfo().name : tr("Open a model…"));
    if (controller_->isModelReady()) modeCombo_->setCurrentText(controller_->modelInfo().mode);
    updatePlaceholder();
  });
  connect(controller_, &ChatController::busyChanged, this, &MainWindow::onBusyChanged);
  connect(controller_, &ChatController::currentConversationChanged, this, &MainWindow::onConversationChanged);
  connect(controller_, &ChatController::errorMessage, this, &MainWindow::showError);
  connect(controller_, &ChatController::replyFailed, this, &MainWindow::showError);
  connect(controller_, &ChatController::replyFinished, this, [this](const GenerationStats& s) {
    speedLabel_->setText(tr("%1 tok/s").arg(s.tokensPerSecond, 0, 'f', 1));
    contextLabel_->setText(tr("context %1 / %2").arg(s.contextUsed).arg(s.contextLimit));
    QString msg = tr("%n token(s) · %1 tok/s · prompt %2 (reused %3) · stop: %4", nullptr, s.completionTokens)
                      .arg(s.tokensPerSecond, 0, 'f', 1)
                      .arg(s.promptTokens)
                      .arg(s.promptReused)
                      .arg(s.stopReason);
    if (s.droppedTurns > 0) msg += tr(" · %n oldest turn(s) left out to fit the context", nullptr, s.droppedTurns);
    statusBar()->showMessage(msg, 15000);
  });
  connect(engine_->worker(), &EngineWorker::memoryStats, this, [this](const EngineMemoryStats& s) {
    memory_->addStats(s);
    contextLabel_->setText(tr("context %1 / %2").arg(s.nTokens).arg(s.nCtx));
  });
  connect(engine_->worker(), &EngineWorker::error, this,
          [this](const QString& message) { statusBar()->showMessage(message, 20000); });

  conversations_->reload();
  if (conversations_->rowCount() > 0) controller_->openConversation(conversations_->idAt(0));
  else onConversationChanged(0);

  const AppEnvironment::StartupModel start = AppEnvironment::startupModel(*store_);
  if (!start.path.isEmpty()) {
    saveModelChoice_ = false;
    controller_->loadModel(start.path, start.mode);
  }
  updatePlaceholder();
  resize(1280, 800);
  composer_->setFocus();
}

MainWindow::~MainWindow() {
  // Join the engine first: no queued result may reach the models after this point. A reply still
  // streaming keeps the text received so far (flushed below) and stays marked incomplete.
  engine_.reset();
  if (messages_) messages_->flushStreaming();
}

void MainWindow::openDatabase() {
  db_ = std::make_unique<Database>();
  const QString path = AppEnvironment::databasePath();
  QDir().mkpath(QFileInfo(path).absolutePath());
  const Database::OpenResult r = db_->open(path);
  QString problem;
  if (!r.ok) {
    // Keep running on a private in-memory database so nothing typed now is lost to a crash; say so.
    problem = tr("%1 Conversations will not be saved in this session.").arg(r.error);
    db_->open(QStringLiteral(":memory:"));
  } else if (!r.warning.isEmpty()) {
    problem = r.warning;
  }
  store_ = std::make_unique<ConversationStore>(*db_);
  if (!problem.isEmpty()) QTimer::singleShot(0, this, [this, problem] { showError(problem); });
}

void MainWindow::buildUi() {
  splitter_ = new QSplitter(Qt::Horizontal, this);
  splitter_->addWidget(buildSidebar());
  splitter_->addWidget(buildChatArea());
  memory_ = new KvMemoryPanel(this);
  splitter_->addWidget(memory_);
  splitter_->setStretchFactor(0, 0);
  splitter_->setStretchFactor(1, 1);
  splitter_->setStretchFactor(2, 0);
  splitter_->setSizes({250, 690, 340});
  splitter_->setChildrenCollapsible(false);
  setCentralWidget(splitter_);

  auto* tb = addToolBar(tr("Model"));
  tb->setObjectName(QStringLiteral("modelToolbar"));
  tb->setMovable(false);
  auto* modelLabel = new QLabel(tr("Model "), tb);
  modelLabel->setForegroundRole(QPalette::PlaceholderText);
  tb->addWidget(modelLabel);
  modelButton_ = new QToolButton(tb);
  modelButton_->setText(tr("Open a model…"));
  modelButton_->setPopupMode(QToolButton::InstantPopup);
  modelButton_->setToolButtonStyle(Qt::ToolButtonTextOnly);
  QFont bold = modelButton_->font();
  bold.setBold(true);
  modelButton_->setFont(bold);
  auto* modelMenu = new QMenu(modelButton_);
  modelMenu->addAction(tr("Open model folder (Hugging Face)…"), this, &MainWindow::chooseModelFolder);
  modelMenu->addAction(tr("Open model file (.wkvq, llama2.c .bin)…"), this, &MainWindow::chooseModelFile);
  recentMenu_ = modelMenu->addMenu(tr("Recent models"));
  connect(modelMenu, &QMenu::aboutToShow, this, &MainWindow::rebuildRecentMenu);
  modelButton_->setMenu(modelMenu);
  tb->addWidget(modelButton_);
  tb->addSeparator();
  auto* modeLabel = new QLabel(tr(" Mode "), tb);
  modeLabel->setForegroundRole(QPalette::PlaceholderText);
  tb->addWidget(modeLabel);
  modeCombo_ = new QComboBox(tb);
  for (wkv::QuantMode m : wkv::all_quant_modes())
    modeCombo_->addItem(QString::fromLatin1(wkv::quant_mode_name(m)));
  modeCombo_->setToolTip(tr("Quantization mode: the model is reloaded in the chosen mode"));
  connect(modeCombo_, &QComboBox::activated, this, [this](int) {
    if (controller_->isModelReady() && modeCombo_->currentText() != controller_->modelInfo().mode) {
      saveModelChoice_ = true;
      controller_->loadModel(controller_->modelInfo().path, modeCombo_->currentText());
    }
  });
  tb->addWidget(modeCombo_);
  auto* spacer = new QWidget(tb);
  spacer->setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Preferred);
  tb->addWidget(spacer);
  tb->addAction(tr("Settings"), this, &MainWindow::editSettings)->setToolTip(tr("System prompt and sampling"));
  tb->addAction(tr("Quantize…"), this, &MainWindow::quantizeModel);
  auto* memToggle = tb->addAction(tr("Memory"));
  memToggle->setCheckable(true);
  memToggle->setChecked(true);
  memToggle->setToolTip(tr("Show the KV memory panel"));
  connect(memToggle, &QAction::toggled, memory_, &QWidget::setVisible);
}

QWidget* MainWindow::buildSidebar() {
  auto* side = new QWidget(this);
  auto* v = new QVBoxLayout(side);
  v->setContentsMargins(8, 8, 4, 8);
  v->setSpacing(6);
  auto* newChat = new QPushButton(tr("New chat"), side);
  newChat->setToolTip(tr("Start a new conversation (Ctrl+N)"));
  connect(newChat, &QPushButton::clicked, this, [this] { controller_->newConversation(); composer_->setFocus(); });
  v->addWidget(newChat);
  search_ = new QLineEdit(side);
  search_->setPlaceholderText(tr("Search messages (Ctrl+F)"));
  search_->setClearButtonEnabled(true);
  connect(search_, &QLineEdit::textChanged, this, &MainWindow::runSearch);
  v->addWidget(search_);

  sidebarStack_ = new QStackedWidget(side);
  list_ = new QListView(side);
  list_->setModel(conversations_);
  list_->setEditTriggers(QAbstractItemView::EditKeyPressed);
  list_->setContextMenuPolicy(Qt::CustomContextMenu);
  list_->setUniformItemSizes(true);
  list_->setSpacing(1);
  connect(list_->selectionModel(), &QItemSelectionModel::currentChanged, this, [this](const QModelIndex& idx) {
    if (idx.isValid()) controller_->openConversation(idx.data(ConversationListModel::IdRole).toLongLong());
  });
  connect(list_, &QWidget::customContextMenuRequested, this, [this](const QPoint& pos) {
    if (!list_->indexAt(pos).isValid()) return;
    QMenu menu(this);
    menu.addAction(tr("Rename…"), this, &MainWindow::renameCurrent);
    menu.addAction(tr("Export as Markdown…"), this, [this] { exportCurrent(false); });
    menu.addAction(tr("Export as JSON…"), this, [this] { exportCurrent(true); });
    menu.addSeparator();
    menu.addAction(tr("Delete…"), this, &MainWindow::deleteCurrent);
    menu.exec(list_->viewport()->mapToGlobal(pos));
  });
  results_ = new QListWidget(side);
  results_->setWordWrap(true);
  connect(results_, &QListWidget::itemActivated, this, [this](QListWidgetItem* item) {
    controller_->openConversation(item->data(Qt::UserRole).toLongLong());
  });
  connect(results_, &QListWidget::itemClicked, this, [this](QListWidgetItem* item) {
    controller_->openConversation(item->data(Qt::UserRole).toLongLong());
  });
  sidebarStack_->addWidget(list_);
  sidebarStack_->addWidget(results_);
  v->addWidget(sidebarStack_, 1);
  return side;
}

QWidget* MainWindow::buildChatArea() {
  auto* area = new QWidget(this);
  auto* v = new QVBoxLayout(area);
  v->setContentsMargins(4, 8, 4, 8);
  v->setSpacing(6);

  banner_ = new QFrame(area);
  banner_->setFrameShape(QFrame::StyledPanel);
  banner_->setAutoFillBackground(true);
  banner_->setBackgroundRole(QPalette::ToolTipBase);
  banner_->setForegroundRole(QPalette::ToolTipText);
  auto* bh = new QHBoxLayout(banner_);
  bh->setContentsMargins(10, 6, 6, 6);
  bannerLabel_ = new QLabel(banner_);
  bannerLabel_->setWordWrap(true);
  bannerLabel_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  bannerLabel_->setForegroundRole(QPalette::ToolTipText);
  auto* close = new QToolButton(banner_);
  close->setText(QStringLiteral("✕"));
  close->setAutoRaise(true);
  close->setToolTip(tr("Dismiss"));
  connect(close, &QToolButton::clicked, this, &MainWindow::hideBanner);
  bh->addWidget(bannerLabel_, 1);
  bh->addWidget(close, 0, Qt::AlignTop);
  banner_->hide();
  v->addWidget(banner_);

  chat_ = new ChatView(messages_, area);
  connect(chat_, &ChatView::copyRequested, this, [this](const QString& text) {
    QApplication::clipboard()->setText(text);
    statusBar()->showMessage(tr("Copied to the clipboard"), 3000);
  });
  connect(chat_, &ChatView::editRequested, this, &MainWindow::beginEdit);
  connect(chat_, &ChatView::regenerateRequested, this, [this] {
    if (!controller_->regenerate()) showError(controller_->cannotSendReason());
  });
  v->addWidget(chat_, 1);

  editHint_ = new QLabel(area);
  editHint_->setForegroundRole(QPalette::PlaceholderText);
  editHint_->setText(tr("Editing your last message — Ctrl+Enter sends it again, Esc cancels."));
  editHint_->hide();
  v->addWidget(editHint_);

  auto* composerRow = new QHBoxLayout;
  composerRow->setSpacing(6);
  composer_ = new QPlainTextEdit(area);
  composer_->setPlaceholderText(tr("Message the model… (Ctrl+Enter to send)"));
  composer_->setTabChangesFocus(true);
  composer_->setMaximumHeight(110);
  composer_->setMinimumHeight(64);
  composerRow->addWidget(composer_, 1);
  auto* buttons = new QVBoxLayout;
  send_ = new QPushButton(tr("Send"), area);
  send_->setDefault(true);
  send_->setToolTip(tr("Send (Ctrl+Enter)"));
  stop_ = new QPushButton(tr("Stop"), area);
  stop_->setToolTip(tr("Stop generating (Esc)"));
  stop_->setEnabled(false);
  connect(send_, &QPushButton::clicked, this, &MainWindow::submitComposer);
  connect(stop_, &QPushButton::clicked, controller_, &ChatController::stop);
  buttons->addWidget(send_);
  buttons->addWidget(stop_);
  buttons->addStretch(1);
  composerRow->addLayout(buttons);
  v->addLayout(composerRow);
  return area;
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  QAction* newChat = file->addAction(tr("&New chat"), this, [this] { controller_->newConversation(); });
  newChat->setShortcut(QKeySequence::New);
  file->addAction(tr("Open model &folder…"), this, &MainWindow::chooseModelFolder);
  file->addAction(tr("Open model &file…"), this, &MainWindow::chooseModelFile)->setShortcut(QKeySequence::Open);
  file->addAction(tr("&Quantize a model…"), this, &MainWindow::quantizeModel);
  file->addSeparator();
  file->addAction(tr("&Summarize document…"), this, &MainWindow::summarizeDocument);
  file->addAction(tr("&Compare modes…"), this, &MainWindow::compareModes);
  file->addSeparator();
  file->addAction(tr("Export as &Markdown…"), this, [this] { exportCurrent(false); });
  file->addAction(tr("Export as &JSON…"), this, [this] { exportCurrent(true); });
  file->addSeparator();
  file->addAction(tr("&Quit"), this, &QWidget::close)->setShortcut(QKeySequence::Quit);

  QMenu* chat = menuBar()->addMenu(tr("&Conversation"));
  chat->addAction(tr("&Rename…"), this, &MainWindow::renameCurrent)->setShortcut(Qt::Key_F2);
  chat->addAction(tr("&Delete…"), this, &MainWindow::deleteCurrent);
  chat->addAction(tr("&Settings (system prompt, sampling)…"), this, &MainWindow::editSettings);
  chat->addSeparator();
  chat->addAction(tr("Re&generate reply"), this, [this] {
    if (!controller_->regenerate()) showError(controller_->cannotSendReason());
  })->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_R));
  chat->addAction(tr("&Edit last message"), this, [this] {
    beginEdit(controller_->lastRowOfRole(QStringLiteral("user")));
  })->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));

  // Window-wide shortcuts.
  auto* sendKey = new QShortcut(QKeySequence(Qt::CTRL | Qt::Key_Return), this);
  auto* sendKey2 = new QShortcut(QKeySequence(Qt::CTRL | Qt::Key_Enter), this);
  connect(sendKey, &QShortcut::activated, this, &MainWindow::submitComposer);
  connect(sendKey2, &QShortcut::activated, this, &MainWindow::submitComposer);
  auto* esc = new QShortcut(QKeySequence(Qt::Key_Escape), this);
  connect(esc, &QShortcut::activated, this, [this] {
    if (controller_->isGenerating()) controller_->stop();
    else if (editingRow_ >= 0) cancelEdit();
    else if (search_->hasFocus()) search_->clear();
  });
  auto* find = new QShortcut(QKeySequence::Find, this);
  connect(find, &QShortcut::activated, this, [this] {
    search_->setFocus();
    search_->selectAll();
  });
}

void MainWindow::buildStatusBar() {
  backendLabel_ = new QLabel(tr("no model"), this);
  speedLabel_ = new QLabel(this);
  contextLabel_ = new QLabel(this);
  for (QLabel* l : {speedLabel_, contextLabel_, backendLabel_}) {
    l->setContentsMargins(8, 0, 8, 0);
    statusBar()->addPermanentWidget(l);
  }
}

QString MainWindow::bannerText() const { return banner_->isHidden() ? QString() : bannerLabel_->text(); }

void MainWindow::showError(const QString& message) {
  if (message.isEmpty()) return;
  bannerLabel_->setText(message);
  banner_->show();
  statusBar()->showMessage(message, 20000);
}

void MainWindow::showInfo(const QString& message) { statusBar()->showMessage(message, 8000); }

void MainWindow::hideBanner() { banner_->hide(); }

bool MainWindow::submitComposer() {
  const QString text = composer_->toPlainText();
  if (text.trimmed().isEmpty()) return false;
  const QString reason = controller_->cannotSendReason();
  if (!reason.isEmpty()) {
    showError(reason);  // the text stays in the composer
    return false;
  }
  const bool ok = editingRow_ >= 0 ? controller_->editLastUserMessage(text) : controller_->send(text);
  if (!ok) {
    showError(tr("The message could not be sent; it is still in the input box."));
    return false;
  }
  composer_->clear();
  cancelEdit();
  hideBanner();
  return true;
}

// The Quantize dialog; the new .wkvq is opened when it is written, and what its calibration cost is shown
// once the model has loaded (the load's own message would hide it otherwise).
void MainWindow::quantizeModel() {
  auto* d = new QuantizeDialog(engine_->worker(), this);
  d->setAttribute(Qt::WA_DeleteOnClose);
  connect(d, &QuantizeDialog::quantized, this, [this](const QString& path, const QString& summary) {
    pendingInfo_ = summary.isEmpty() ? QString() : tr("%1: %2").arg(QFileInfo(path).fileName(), summary);
    openModel(path);
  });
  d->open();
}

void MainWindow::openModel(const QString& path, const QString& mode) {
  saveModelChoice_ = true;
  controller_->loadModel(path, mode);
}

void MainWindow::onModelReady(const EngineModelInfo& info) {
  modelButton_->setText(info.name);
  modelButton_->setToolTip(tr("%1\n%2 · %3 layers · %4 parameters · loaded in %5 s")
                               .arg(QDir::toNativeSeparators(info.path), info.format)
                               .arg(info.nLayers)
                               .arg(QLocale().toString(info.nParams))
                               .arg(info.loadSeconds, 0, 'f', 2));
  modeCombo_->setCurrentText(info.mode);
  backendLabel_->setText(info.device);
  contextLabel_->setText(tr("context 0 / %1").arg(info.maxContext));
  memory_->setModel(info);
  try {
    store_->touchRecentModel(info.path, info.format);
    if (saveModelChoice_) {
      store_->setSetting(QStringLiteral("model/path"), info.path);
      store_->setSetting(QStringLiteral("model/mode"), info.mode);
    }
  } catch (const StorageError& e) {
    showError(e.message());
  }
  QString loaded = tr("Loaded %1 (%2) in %3 s").arg(info.name, info.mode).arg(info.loadSeconds, 0, 'f', 2);
  if (!pendingInfo_.isEmpty()) loaded += QStringLiteral(" · ") + pendingInfo_;
  pendingInfo_.clear();
  showInfo(loaded);
  updatePlaceholder();
  emit modelReady();
}

void MainWindow::onBusyChanged(bool generating) {
  stop_->setEnabled(generating);
  send_->setEnabled(!generating);
  modeCombo_->setEnabled(!generating);
  chat_->setActionsEnabled(!generating);
  if (generating) speedLabel_->setText(tr("generating…"));
}

void MainWindow::onConversationChanged(qint64 id) {
  cancelEdit();
  const int row = conversations_->rowOf(id);
  if (row >= 0 && list_->currentIndex().row() != row)
    list_->setCurrentIndex(conversations_->index(row));
  updateTitle();
}

void MainWindow::updateTitle() {
  const int row = conversations_->rowOf(controller_->currentConversation());
  const QString title = row >= 0 ? conversations_->index(row).data().toString() : QString();
  setWindowTitle(title.isEmpty() ? tr("WKV Chat") : tr("%1 — WKV Chat").arg(title));
}

void MainWindow::updatePlaceholder() {
  QString text;
  if (controller_->isModelLoading())
    text = tr("<p style='font-size:large'>Loading the model…</p>");
  else if (!controller_->isModelReady())
    text = tr("<p style='font-size:large'>No model loaded</p><p>Open a Hugging Face model folder, a .wkvq file or "
              "a llama2.c checkpoint from the <b>Model</b> button above.</p>");
  else
    text = tr("<p style='font-size:large'><b>%1</b> is ready</p><p>%2 · %3 weights · %4 KV cache</p>"
              "<p>Type a message below and press Ctrl+Enter.</p>")
               .arg(controller_->modelInfo().name.toHtmlEscaped(), controller_->modelInfo().mode,
                    controller_->modelInfo().weightFormat, controller_->modelInfo().kvFormat);
  chat_->setPlaceholder(text);
}

void MainWindow::runSearch(const QString& text) {
  if (text.trimmed().isEmpty()) {
    sidebarStack_->setCurrentWidget(list_);
    return;
  }
  results_->clear();
  QList<SearchHit> hits;
  try {
    hits = store_->search(text);
  } catch (const StorageError& e) {
    showError(e.message());
  }
  for (const SearchHit& h : hits) {
    QString snippet = h.snippet;
    snippet.remove(ConversationStore::kMatchStart).remove(ConversationStore::kMatchEnd);
    auto* item = new QListWidgetItem(
        (h.title.isEmpty() ? tr("Untitled conversation") : h.title) + QLatin1Char('\n') + snippet.simplified());
    item->setData(Qt::UserRole, h.conversationId);
    item->setToolTip(snippet);
    results_->addItem(item);
  }
  if (hits.isEmpty()) {
    auto* none = new QListWidgetItem(tr("No messages match “%1”").arg(text.trimmed()));
    none->setFlags(Qt::NoItemFlags);
    results_->addItem(none);
  }
  sidebarStack_->setCurrentWidget(results_);
}

void MainWindow::renameCurrent() {
  const qint64 id = controller_->currentConversation();
  const int row = conversations_->rowOf(id);
  if (row < 0) return;
  bool ok = false;
  const QString title = QInputDialog::getText(this, tr("Rename conversation"), tr("Title:"), QLineEdit::Normal,
                                              conversations_->conversations().at(row).title, &ok);
  if (ok) conversations_->renameConversation(id, title.trimmed());
  updateTitle();
}

void MainWindow::deleteCurrent() {
  const qint64 id = controller_->currentConversation();
  const int row = conversations_->rowOf(id);
  if (row < 0) return;
  if (controller_->isGenerating()) {
    showError(tr("Stop the reply being generated before deleting its conversation."));
    return;
  }
  const QString title = conversations_->index(row).data().toString();
  if (QMessageBox::question(this, tr("Delete conversation"),
                            tr("Delete “%1” and all its messages? This cannot be undone.").arg(title),
                            QMessageBox::Yes | QMessageBox::Cancel, QMessageBox::Cancel) != QMessageBox::Yes)
    return;
  if (!conversations_->removeConversation(id)) return;
  controller_->openConversation(conversations_->rowCount() > 0 ? conversations_->idAt(std::min(row, conversations_->rowCount() - 1)) : 0);
}

void MainWindow::beginEdit(int row) {
  if (row < 0 || row >= messages_->rowCount() || controller_->isGenerating()) return;
  editingRow_ = row;
  composer_->setPlainText(messages_->messageAt(row).content);
  composer_->setFocus();
  composer_->moveCursor(QTextCursor::End);
  editHint_->show();
  send_->setText(tr("Resend"));
}

void MainWindow::cancelEdit() {
  if (editingRow_ < 0) return;
  editingRow_ = -1;
  editHint_->hide();
  send_->setText(tr("Send"));
}

void MainWindow::editSettings() {
  ConversationSettingsDialog d(controller_->systemPrompt(), controller_->sampling(), this);
  if (d.exec() == QDialog::Accepted) controller_->setConversationSettings(d.systemPrompt(), d.sampling());
}

void MainWindow::exportCurrent(bool json) {
  const qint64 id = controller_->currentConversation();
  if (id == 0) return;
  const QString title = conversations_->index(conversations_->rowOf(id)).data().toString();
  QString name = title;
  name.replace(QRegularExpression(QStringLiteral("[^\\w\\- ]+")), QStringLiteral("_"));
  const QString path = QFileDialog::getSaveFileName(
      this, tr("Export conversation"), QDir::home().filePath(name + (json ? ".json" : ".md")),
      json ? tr("JSON (*.json)") : tr("Markdown (*.md)"));
  if (path.isEmpty()) return;
  try {
    const QByteArray bytes = json ? store_->exportJson(id) : store_->exportMarkdown(id).toUtf8();
    QSaveFile f(path);
    if (!f.open(QIODevice::WriteOnly) || f.write(bytes) != bytes.size() || !f.commit())
      showError(tr("Could not write %1: %2").arg(path, f.errorString()));
    else
      showInfo(tr("Exported to %1").arg(QDir::toNativeSeparators(path)));
  } catch (const StorageError& e) {
    showError(e.message());
  }
}

void MainWindow::chooseModelFolder() {
  const QString dir = QFileDialog::getExistingDirectory(this, tr("Open a Hugging Face model folder"));
  if (!dir.isEmpty()) openModel(dir);
}

void MainWindow::chooseModelFile() {
  const QString file = QFileDialog::getOpenFileName(this, tr("Open a model file"), QString(),
                                                    tr("Models (*.wkvq *.bin *.safetensors);;All files (*)"));
  if (!file.isEmpty()) openModel(file);
}

void MainWindow::rebuildRecentMenu() {
  recentMenu_->clear();
  QList<RecentModel> recent;
  try {
    recent = store_->recentModels();
  } catch (const StorageError& e) {
    showError(e.message());
  }
  for (const RecentModel& m : recent) {
    QAction* a = recentMenu_->addAction(QFileInfo(m.path).fileName() + QStringLiteral("  —  ") +
                                        QDir::toNativeSeparators(m.path));
    connect(a, &QAction::triggered, this, [this, p = m.path] { openModel(p); });
  }
  const QString bundled = AppEnvironment::bundledModel();
  if (!bundled.isEmpty()) {
    recentMenu_->addSeparator();
    recentMenu_->addAction(tr("Bundled demo model (%1)").arg(QFileInfo(bundled).fileName()), this,
                           [this, bundled] { openModel(bundled); });
  }
  if (recentMenu_->isEmpty()) recentMenu_->addAction(tr("(none yet)"))->setEnabled(false);
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (controller_->isGenerating()) controller_->stop();
  QMainWindow::closeEvent(event);
}

void MainWindow::summarizeDocument() {
  if (!comparisons_) comparisons_ = std::make_unique<ComparisonStore>(*db_);
  auto* d = new SummarizeDialog(engine_->worker(), *store_, *comparisons_, this);
  d->setAttribute(Qt::WA_DeleteOnClose);
  connect(d, &SummarizeDialog::conversationCreated, this, [this, d](qint64 id) {
    conversations_->reload();
    controller_->openConversation(id);
    const int row = conversations_->rowOf(id);
    if (row >= 0) list_->setCurrentIndex(conversations_->index(row));
    d->accept();
  });
  d->open();
}

void MainWindow::compareModes() {
  if (!comparisons_) comparisons_ = std::make_unique<ComparisonStore>(*db_);
  auto* w = new CompareWindow(engine_->worker(), *comparisons_, this);
  w->setAttribute(Qt::WA_DeleteOnClose);
  w->show();
}
