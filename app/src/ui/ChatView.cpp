#include "ui/ChatView.h"

#include <QDateTime>
#include <QLabel>
#include <QLocale>
#include <QScrollBar>
#include <QTimer>
#include <QVBoxLayout>

#include "models/MessageListModel.h"
#include "ui/MessageWidget.h"

ChatView::ChatView(MessageListModel* model, QWidget* parent) : QScrollArea(parent), model_(model) {
  setWidgetResizable(true);
  setFrameShape(QFrame::NoFrame);
  setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  setBackgroundRole(QPalette::Base);

  content_ = new QWidget(this);
  content_->setBackgroundRole(QPalette::Base);
  content_->setAutoFillBackground(true);
  column_ = new QVBoxLayout(content_);
  column_->setContentsMargins(16, 12, 16, 12);
  column_->setSpacing(8);
  placeholder_ = new QLabel(content_);
  placeholder_->setAlignment(Qt::AlignCenter);
  placeholder_->setWordWrap(true);
  placeholder_->setForegroundRole(QPalette::PlaceholderText);
  placeholder_->setTextFormat(Qt::RichText);
  column_->addWidget(placeholder_, 1);
  column_->addStretch(0);
  setWidget(content_);

  connect(model_, &QAbstractItemModel::modelReset, this, &ChatView::rebuild);
  connect(model_, &QAbstractItemModel::rowsInserted, this,
          [this](const QModelIndex&, int first, int last) { insertRows(first, last); });
  connect(model_, &QAbstractItemModel::rowsRemoved, this,
          [this](const QModelIndex&, int first, int last) { removeRows(first, last); });
  connect(model_, &QAbstractItemModel::dataChanged, this, [this](const QModelIndex& tl, const QModelIndex& br) {
    for (int r = tl.row(); r <= br.row(); ++r) updateRow(r);
    scrollToBottomSoon();
  });
  // Keep following new text only while the view is at (or near) the bottom.
  connect(verticalScrollBar(), &QScrollBar::valueChanged, this, [this](int v) {
    followBottom_ = v >= verticalScrollBar()->maximum() - 24;
  });
  connect(verticalScrollBar(), &QScrollBar::rangeChanged, this, [this](int, int max) {
    if (followBottom_) verticalScrollBar()->setValue(max);
  });
  rebuild();
}

void ChatView::setPlaceholder(const QString& text) { placeholder_->setText(text); }

void ChatView::setActionsEnabled(bool enabled) {
  actionsEnabled_ = enabled;
  updateActions();
}

MessageWidget* ChatView::createWidget() {
  auto* w = new MessageWidget(content_);
  connect(w, &MessageWidget::copyRequested, this, &ChatView::copyRequested);
  connect(w, &MessageWidget::editRequested, this, [this, w] { emit editRequested(widgets_.indexOf(w)); });
  connect(w, &MessageWidget::regenerateRequested, this, &ChatView::regenerateRequested);
  return w;
}

void ChatView::rebuild() {
  qDeleteAll(widgets_);
  widgets_.clear();
  followBottom_ = true;
  if (model_->rowCount() > 0) insertRows(0, model_->rowCount() - 1);
  placeholder_->setVisible(widgets_.isEmpty());
  updateActions();
}

void ChatView::insertRows(int first, int last) {
  for (int r = first; r <= last; ++r) {
    MessageWidget* w = createWidget();
    widgets_.insert(r, w);
    column_->insertWidget(r, w);  // the placeholder and stretch stay after the messages
    updateRow(r);
  }
  placeholder_->setVisible(widgets_.isEmpty());
  updateActions();
  followBottom_ = true;
  scrollToBottomSoon();
}

void ChatView::removeRows(int first, int last) {
  for (int r = last; r >= first && r < widgets_.size(); --r) delete widgets_.takeAt(r);
  placeholder_->setVisible(widgets_.isEmpty());
  updateActions();
}

void ChatView::updateRow(int row) {
  MessageWidget* w = widgets_.value(row);
  if (!w) return;
  const QModelIndex idx = model_->index(row);
  w->setRole(idx.data(MessageListModel::RoleRole).toString());
  const bool streaming = idx.data(MessageListModel::StreamingRole).toBool();
  w->setStreaming(streaming);
  w->setContent(idx.data(MessageListModel::ContentRole).toString());

  QStringList parts;
  const QString mode = idx.data(MessageListModel::ModeRole).toString();
  const int tokens = idx.data(MessageListModel::CompletionTokensRole).toInt();
  const double tps = idx.data(MessageListModel::TokensPerSecondRole).toDouble();
  if (idx.data(MessageListModel::RoleRole).toString() == QLatin1String("assistant")) {
    if (!mode.isEmpty()) parts << mode;
    if (tokens > 0) parts << tr("%n token(s)", nullptr, tokens);
    if (tps > 0) parts << tr("%1 tok/s").arg(tps, 0, 'f', 1);
    if (streaming) parts << tr("generating…");
    else if (!idx.data(MessageListModel::CompleteRole).toBool()) parts << tr("incomplete");
  }
  const QDateTime when = idx.data(MessageListModel::CreatedAtRole).toDateTime();
  if (when.isValid()) parts.prepend(QLocale().toString(when.time(), QLocale::ShortFormat));
  w->setStatsText(parts.join(QStringLiteral(" · ")));
}

void ChatView::updateActions() {
  int lastUser = -1, lastAssistant = -1;
  for (int r = 0; r < widgets_.size(); ++r) {
    const QString role = model_->index(r).data(MessageListModel::RoleRole).toString();
    if (role == QLatin1String("user")) lastUser = r;
    if (role == QLatin1String("assistant")) lastAssistant = r;
  }
  for (int r = 0; r < widgets_.size(); ++r) {
    const bool last = r == widgets_.size() - 1;
    widgets_[r]->setActions(actionsEnabled_ && r == lastUser,
                            actionsEnabled_ && r == lastAssistant && last);
  }
}

void ChatView::scrollToBottomSoon() {
  if (!followBottom_) return;
  QTimer::singleShot(0, this, [this] { verticalScrollBar()->setValue(verticalScrollBar()->maximum()); });
}
