// The main window: conversation sidebar (list, search, new/rename/delete), the chat view with the
// composer (send, stop, regenerate, edit-and-resend), the KV memory panel, the model and quantization
// mode pickers, and the status bar (backend/device, tokens/s, context used). Owns the database, the
// store, the list models, the engine thread and the ChatController.
//
// Errors (engine messages, storage failures, a damaged database set aside at startup) are shown in the
// status bar and in a dismissible banner above the chat; nothing typed is lost when sending fails.
#pragma once

#include <QMainWindow>

#include <memory>

#include "engine/EngineTypes.h"

class ChatController;
class ChatView;
class ConversationListModel;
class ComparisonStore;
class ConversationStore;
class Database;
class EngineThread;
class KvMemoryPanel;
class MessageListModel;
class QComboBox;
class QLabel;
class QLineEdit;
class QListView;
class QListWidget;
class QMenu;
class QPlainTextEdit;
class QPushButton;
class QSplitter;
class QStackedWidget;
class QToolButton;
class QFrame;

class MainWindow : public QMainWindow {
  Q_OBJECT

 public:
  // Opens the database at AppEnvironment::databasePath() and loads AppEnvironment::startupModel().
  explicit MainWindow(QWidget* parent = nullptr);
  ~MainWindow() override;

  ChatController* controller() const { return controller_; }
  ChatView* chatView() const { return chat_; }
  KvMemoryPanel* memoryPanel() const { return memory_; }
  QPlainTextEdit* composer() const { return composer_; }
  QListView* conversationList() const { return list_; }
  QString bannerText() const;

  // Sends what is in the composer (as Ctrl+Enter does). The text stays there if it cannot be sent.
  bool submitComposer();
  void openModel(const QString& path, const QString& mode = {});
  void showError(const QString& message);

 Q_SIGNALS:
  void modelReady();

 protected:
  void closeEvent(QCloseEvent* event) override;

 private:
  void openDatabase();
  void summarizeDocument();
  void compareModes();
  void buildUi();
  QWidget* buildSidebar();
  QWidget* buildChatArea();
  void buildMenus();
  void buildStatusBar();

  void onModelReady(const EngineModelInfo& info);
  void onBusyChanged(bool generating);
  void onConversationChanged(qint64 id);
  void updatePlaceholder();
  void updateTitle();
  void runSearch(const QString& text);
  void renameCurrent();
  void deleteCurrent();
  void beginEdit(int row);
  void cancelEdit();
  void editSettings();
  void exportCurrent(bool json);
  void chooseModelFolder();
  void chooseModelFile();
  void quantizeModel();
  void rebuildRecentMenu();
  void showInfo(const QString& message);
  void hideBanner();

  std::unique_ptr<Database> db_;
  std::unique_ptr<ConversationStore> store_;
  std::unique_ptr<ComparisonStore> comparisons_;
  std::unique_ptr<EngineThread> engine_;
  ConversationListModel* conversations_ = nullptr;
  MessageListModel* messages_ = nullptr;
  ChatController* controller_ = nullptr;

  QSplitter* splitter_ = nullptr;
  QLineEdit* search_ = nullptr;
  QStackedWidget* sidebarStack_ = nullptr;
  QListView* list_ = nullptr;
  QListWidget* results_ = nullptr;
  QFrame* banner_ = nullptr;
  QLabel* bannerLabel_ = nullptr;
  ChatView* chat_ = nullptr;
  QLabel* editHint_ = nullptr;
  QPlainTextEdit* composer_ = nullptr;
  QPushButton* send_ = nullptr;
  QPushButton* stop_ = nullptr;
  KvMemoryPanel* memory_ = nullptr;
  QToolButton* modelButton_ = nullptr;
  QComboBox* modeCombo_ = nullptr;
  QMenu* recentMenu_ = nullptr;
  QLabel* backendLabel_ = nullptr;
  QLabel* speedLabel_ = nullptr;
  QLabel* contextLabel_ = nullptr;

  int editingRow_ = -1;
  bool saveModelChoice_ = false;
  QString loadingPath_;
  QString pendingInfo_;  // shown with the next "Loaded …" message (a quantization's calibration cost)
};
