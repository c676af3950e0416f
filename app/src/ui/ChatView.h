// The conversation shown as a column of MessageWidgets inside a scroll area, kept in step with a
// MessageListModel (resets, inserted/removed rows, and dataChanged while a reply streams). Follows
// the bottom while new text arrives unless the user scrolled up to read.
#pragma once

#include <QList>
#include <QScrollArea>

class MessageListModel;
class MessageWidget;
class QLabel;
class QVBoxLayout;

class ChatView : public QScrollArea {
  Q_OBJECT

 public:
  explicit ChatView(MessageListModel* model, QWidget* parent = nullptr);

  int messageCount() const { return static_cast<int>(widgets_.size()); }
  MessageWidget* messageWidget(int row) const { return widgets_.value(row); }
  // Text shown when the conversation is empty (e.g. which model is ready).
  void setPlaceholder(const QString& text);
  // Whether edit / regenerate actions are offered (off while a reply is generated).
  void setActionsEnabled(bool enabled);

 Q_SIGNALS:
  void copyRequested(const QString& text);
  void editRequested(int row);
  void regenerateRequested();

 private:
  void rebuild();
  void insertRows(int first, int last);
  void removeRows(int first, int last);
  void updateRow(int row);
  void updateActions();
  void scrollToBottomSoon();
  MessageWidget* createWidget();

  MessageListModel* model_;
  QWidget* content_;
  QVBoxLayout* column_;
  QLabel* placeholder_;
  QList<MessageWidget*> widgets_;
  bool actionsEnabled_ = true;
  bool followBottom_ = true;
};
