// One message of the chat view: a header (who, statistics, actions) and the text rendered as Markdown
// in a read-only QTextBrowser whose height follows its content. Code blocks are drawn monospace on a
// tinted background taken from the palette, and each can be copied ("Copy code").
#pragma once

#include <QFrame>
#include <QStringList>

class QLabel;
class QTextBrowser;
class QToolButton;
class QTimer;

class MessageWidget : public QFrame {
  Q_OBJECT

 public:
  explicit MessageWidget(QWidget* parent = nullptr);

  void setRole(const QString& role);
  // Re-renders at most every ~50 ms while streaming (full Markdown re-layout per token would be
  // quadratic in the reply length).
  void setContent(const QString& markdown);
  void setStreaming(bool streaming);
  void setStatsText(const QString& text);
  // Which actions the message offers (only the last user / assistant message can be edited /
  // regenerated).
  void setActions(bool canEdit, bool canRegenerate);

  QString content() const { return markdown_; }
  QString renderedText() const;
  // Fenced code blocks of the Markdown source, in order (their text without the fences).
  static QStringList codeBlocks(const QString& markdown);

 Q_SIGNALS:
  void copyRequested(const QString& text);
  void editRequested();
  void regenerateRequested();

 protected:
  void resizeEvent(QResizeEvent* event) override;
  void changeEvent(QEvent* event) override;

 private:
  void render();
  void styleCodeBlocks();
  void updateHeight();
  void updateCodeButton();

  QString role_;
  QString markdown_;
  bool streaming_ = false;
  QLabel* who_;
  QLabel* stats_;
  QToolButton* copy_;
  QToolButton* copyCode_;
  QToolButton* edit_;
  QToolButton* regenerate_;
  QTextBrowser* body_;
  QTimer* renderTimer_;
};
