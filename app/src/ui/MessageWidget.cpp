#include "ui/MessageWidget.h"

#include <QAbstractTextDocumentLayout>
#include <algorithm>
#include <cmath>
#include <QEvent>
#include <QFontDatabase>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenu>
#include <QRegularExpression>
#include <QTextBlock>
#include <QTextBrowser>
#include <QTimer>
#include <QToolButton>
#include <QVBoxLayout>

namespace {
QToolButton* makeButton(const QString& text, const QString& tip, QWidget* parent) {
  auto* b = new QToolButton(parent);
  b->setText(text);
  b->setToolTip(tip);
  b->setAutoRaise(true);
  b->setCursor(Qt::PointingHandCursor);
  return b;
}
}  // namespace

MessageWidget::MessageWidget(QWidget* parent) : QFrame(parent) {
  setObjectName(QStringLiteral("message"));
  setFrameShape(QFrame::NoFrame);
  setAutoFillBackground(true);

  auto* outer = new QVBoxLayout(this);
  outer->setContentsMargins(14, 8, 14, 10);
  outer->setSpacing(2);

  auto* header = new QHBoxLayout;
  header->setSpacing(6);
  who_ = new QLabel(this);
  QFont bold = who_->font();
  bold.setBold(true);
  who_->setFont(bold);
  stats_ = new QLabel(this);
  stats_->setForegroundRole(QPalette::PlaceholderText);
  QFont small = stats_->font();
  small.setPointSizeF(small.pointSizeF() * 0.88);
  stats_->setFont(small);
  copy_ = makeButton(tr("Copy"), tr("Copy the whole message"), this);
  copyCode_ = makeButton(tr("Copy code"), tr("Copy a code block"), this);
  edit_ = makeButton(tr("Edit"), tr("Edit this message and send it again"), this);
  regenerate_ = makeButton(tr("Regenerate"), tr("Generate a new reply"), this);
  header->addWidget(who_);
  header->addWidget(stats_);
  header->addStretch(1);
  header->addWidget(copyCode_);
  header->addWidget(copy_);
  header->addWidget(edit_);
  header->addWidget(regenerate_);
  outer->addLayout(header);

  body_ = new QTextBrowser(this);
  body_->setFrameShape(QFrame::NoFrame);
  body_->setOpenExternalLinks(true);
  body_->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  body_->setVerticalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  body_->setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Fixed);
  body_->viewport()->setAutoFillBackground(false);
  body_->setStyleSheet(QStringLiteral("QTextBrowser { background: transparent; }"));
  body_->document()->setDocumentMargin(2);
  outer->addWidget(body_);

  renderTimer_ = new QTimer(this);
  renderTimer_->setSingleShot(true);
  renderTimer_->setInterval(50);
  connect(renderTimer_, &QTimer::timeout, this, &MessageWidget::render);

  connect(copy_, &QToolButton::clicked, this, [this] { emit copyRequested(markdown_); });
  connect(copyCode_, &QToolButton::clicked, this, [this] {
    const QStringList blocks = codeBlocks(markdown_);
    if (blocks.size() == 1) emit copyRequested(blocks.first());
  });
  connect(edit_, &QToolButton::clicked, this, &MessageWidget::editRequested);
  connect(regenerate_, &QToolButton::clicked, this, &MessageWidget::regenerateRequested);
  setActions(false, false);
  updateCodeButton();
}

void MessageWidget::setRole(const QString& role) {
  role_ = role;
  who_->setText(role == QLatin1String("user")        ? tr("You")
                : role == QLatin1String("assistant") ? tr("Assistant")
                                                     : tr("System"));
  // User turns sit on a slightly tinted background, replies on the view's base colour.
  setBackgroundRole(role == QLatin1String("user") ? QPalette::AlternateBase : QPalette::Base);
}

void MessageWidget::setContent(const QString& markdown) {
  if (markdown == markdown_) return;
  markdown_ = markdown;
  if (streaming_) {
    if (!renderTimer_->isActive()) renderTimer_->start();
  } else {
    render();
  }
}

void MessageWidget::setStreaming(bool streaming) {
  if (streaming_ == streaming) return;
  streaming_ = streaming;
  if (!streaming) {
    renderTimer_->stop();
    render();
  } else {
    render();
  }
}

void MessageWidget::setStatsText(const QString& text) { stats_->setText(text); }

void MessageWidget::setActions(bool canEdit, bool canRegenerate) {
  edit_->setVisible(canEdit);
  regenerate_->setVisible(canRegenerate);
}

QString MessageWidget::renderedText() const { return body_->toPlainText(); }

QStringList MessageWidget::codeBlocks(const QString& markdown) {
  // ``` or ~~~ fences (3+), optional info string; an unterminated fence runs to the end (streaming).
  QStringList out;
  const QStringList lines = markdown.split(QLatin1Char('\n'));
  QString fence;
  QStringList current;
  static const QRegularExpression open(QStringLiteral("^\\s{0,3}(`{3,}|~{3,})"));
  for (const QString& line : lines) {
    if (fence.isEmpty()) {
      const auto m = open.match(line);
      if (m.hasMatch()) {
        fence = m.captured(1);
        current.clear();
      }
    } else if (line.trimmed().startsWith(fence) && line.trimmed().count(fence.at(0)) >= fence.size() &&
               line.trimmed().remove(fence.at(0)).isEmpty()) {
      out << current.join(QLatin1Char('\n'));
      fence.clear();
    } else {
      current << line;
    }
  }
  if (!fence.isEmpty() && !current.isEmpty()) out << current.join(QLatin1Char('\n'));
  return out;
}

void MessageWidget::render() {
  QString text = markdown_;
  if (streaming_) text += QStringLiteral(" ▍");  // a cursor while the reply streams
  if (role_ == QLatin1String("user")) {
    body_->setPlainText(text);  // prompts are shown as typed
  } else {
    body_->setMarkdown(text);
    styleCodeBlocks();
  }
  updateHeight();
  updateCodeButton();
}

void MessageWidget::styleCodeBlocks() {
  // The Markdown importer marks fenced/indented code blocks with a code fence / language property;
  // give them the fixed-pitch system font and a background from the palette.
  const QFont mono = QFontDatabase::systemFont(QFontDatabase::FixedFont);
  QTextCursor cursor(body_->document());
  for (QTextBlock b = body_->document()->begin(); b.isValid(); b = b.next()) {
    const QTextBlockFormat bf = b.blockFormat();
    if (!bf.hasProperty(QTextFormat::BlockCodeFence) && !bf.hasProperty(QTextFormat::BlockCodeLanguage) &&
        !bf.nonBreakableLines())
      continue;
    QTextBlockFormat nf = bf;
    nf.setBackground(palette().color(QPalette::AlternateBase).darker(role_ == QLatin1String("user") ? 108 : 104));
    nf.setLeftMargin(6);
    nf.setRightMargin(6);
    cursor.setPosition(b.position());
    cursor.setBlockFormat(nf);
    cursor.setPosition(b.position() + b.length() - 1, QTextCursor::KeepAnchor);
    QTextCharFormat cf;
    cf.setFontFamilies({mono.family()});
    cf.setFontFixedPitch(true);
    cursor.mergeCharFormat(cf);
  }
}

void MessageWidget::updateHeight() {
  QTextDocument* doc = body_->document();
  doc->setTextWidth(body_->viewport()->width() > 0 ? body_->viewport()->width() : width() - 28);
  const int h = static_cast<int>(std::ceil(doc->documentLayout()->documentSize().height())) + 4;
  body_->setFixedHeight(std::max(h, fontMetrics().height() + 6));
}

void MessageWidget::updateCodeButton() {
  const QStringList blocks = role_ == QLatin1String("user") ? QStringList() : codeBlocks(markdown_);
  copyCode_->setVisible(!blocks.isEmpty());
  if (blocks.size() > 1) {
    auto* menu = copyCode_->menu();
    if (!menu) {
      menu = new QMenu(copyCode_);
      copyCode_->setMenu(menu);
      copyCode_->setPopupMode(QToolButton::InstantPopup);
    }
    menu->clear();
    for (int i = 0; i < blocks.size(); ++i) {
      const QString first = blocks.at(i).section(QLatin1Char('\n'), 0, 0).left(40);
      menu->addAction(tr("Block %1: %2").arg(i + 1).arg(first), this,
                      [this, code = blocks.at(i)] { emit copyRequested(code); });
    }
  } else if (copyCode_->menu()) {
    copyCode_->menu()->deleteLater();
    copyCode_->setMenu(nullptr);
    copyCode_->setPopupMode(QToolButton::DelayedPopup);
  }
}

void MessageWidget::resizeEvent(QResizeEvent* event) {
  QFrame::resizeEvent(event);
  updateHeight();
}

void MessageWidget::changeEvent(QEvent* event) {
  QFrame::changeEvent(event);
  if (event->type() == QEvent::PaletteChange && !markdown_.isEmpty()) render();
}
