#include "ui/KvMemoryPanel.h"

#include <QChart>
#include <QChartView>
#include <QEvent>
#include <QGridLayout>
#include <QLabel>
#include <QLegend>
#include <QLineSeries>
#include <QPen>
#include <QProgressBar>
#include <QValueAxis>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

namespace {
constexpr double kMiB = 1024.0 * 1024.0;

QLabel* makeLabel(QWidget* parent, bool dim = false) {
  auto* l = new QLabel(parent);
  l->setWordWrap(true);
  l->setTextInteractionFlags(Qt::TextSelectableByMouse);
  if (dim) l->setForegroundRole(QPalette::PlaceholderText);
  return l;
}

// A "nice" axis maximum ≥ v: 1, 2, 2.5 or 5 × 10^k.
double niceCeil(double v) {
  if (v <= 0) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * p >= v) return m * p;
  return 10 * p;
}
}  // namespace

KvMemoryPanel::KvMemoryPanel(QWidget* parent) : QWidget(parent) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(10, 10, 10, 10);
  layout->setSpacing(6);

  title_ = new QLabel(tr("KV cache memory"), this);
  QFont f = title_->font();
  f.setBold(true);
  f.setPointSizeF(f.pointSizeF() * 1.1);
  title_->setFont(f);
  layout->addWidget(title_);

  ratio_ = new QLabel(this);
  QFont big = ratio_->font();
  big.setPointSizeF(big.pointSizeF() * 1.8);
  big.setBold(true);
  ratio_->setFont(big);
  ratio_->setForegroundRole(QPalette::Highlight);
  layout->addWidget(ratio_);

  kv_ = new QLineSeries(this);
  kvFp16_ = new QLineSeries(this);
  chart_ = new QChart;
  chart_->addSeries(kvFp16_);
  chart_->addSeries(kv_);
  axisX_ = new QValueAxis(chart_);
  axisY_ = new QValueAxis(chart_);
  axisX_->setTitleText(tr("context tokens"));
  axisY_->setTitleText(tr("MiB"));
  axisX_->setLabelFormat(QStringLiteral("%d"));
  axisY_->setLabelFormat(QStringLiteral("%.1f"));
  axisX_->setTickCount(5);
  axisY_->setTickCount(5);
  chart_->addAxis(axisX_, Qt::AlignBottom);
  chart_->addAxis(axisY_, Qt::AlignLeft);
  for (QLineSeries* s : {kv_, kvFp16_}) {
    s->attachAxis(axisX_);
    s->attachAxis(axisY_);
  }
  chart_->legend()->setAlignment(Qt::AlignBottom);
  chart_->setMargins(QMargins(4, 4, 4, 4));
  chart_->setBackgroundRoundness(0);
  view_ = new QChartView(chart_, this);
  view_->setRenderHint(QPainter::Antialiasing);
  view_->setMinimumHeight(220);
  view_->setFrameShape(QFrame::NoFrame);
  layout->addWidget(view_, 1);

  auto* grid = new QGridLayout;
  grid->setHorizontalSpacing(8);
  grid->setVerticalSpacing(4);
  kvLine_ = makeLabel(this);
  weightLine_ = makeLabel(this);
  contextLine_ = makeLabel(this);
  deviceLine_ = makeLabel(this);
  const QStringList names = {tr("KV cache"), tr("Weights"), tr("Context"), tr("Device")};
  QLabel* values[] = {kvLine_, weightLine_, contextLine_, deviceLine_};
  for (int i = 0; i < 4; ++i) {
    auto* name = makeLabel(this, true);
    name->setText(names.at(i));
    grid->addWidget(name, i, 0, Qt::AlignTop);
    grid->addWidget(values[i], i, 1);
  }
  grid->setColumnStretch(1, 1);
  layout->addLayout(grid);
  deviceBar_ = new QProgressBar(this);
  deviceBar_->setTextVisible(true);
  deviceBar_->setMaximumHeight(14);
  deviceBar_->hide();
  layout->addWidget(deviceBar_);

  applyPalette();
  clear();
}

void KvMemoryPanel::setModel(const EngineModelInfo& info) {
  clear();
  kvFormat_ = info.kvFormat;
  kv_->setName(tr("KV cache (%1, %2)").arg(info.mode, info.kvFormat));
  weightLine_->setText(tr("%1 (%2) · FP16 %3")
                           .arg(formatBytes(info.weightBytes), info.weightFormat, formatBytes(info.weightBytesFp16)));
  contextLine_->setText(tr("0 / %1 tokens").arg(info.maxContext));
  deviceLine_->setText(info.backend == QLatin1String("cuda") ? info.device : tr("CPU backend (%1)").arg(info.device));
}

void KvMemoryPanel::clear() {
  kv_->clear();
  kvFp16_->clear();
  kv_->setName(tr("KV cache"));
  kvFp16_->setName(tr("FP16 equivalent"));
  maxTokens_ = 0;
  maxMiB_ = 0;
  ratio_->setText(QStringLiteral("–"));
  ratio_->setToolTip(tr("KV cache of the loaded mode relative to an FP16 cache"));
  kvLine_->setText(tr("No tokens yet"));
  rescale();
}

void KvMemoryPanel::addStats(const EngineMemoryStats& s) {
  // Points are keyed by context length: when the context shrinks (a regenerated reply), the points
  // past it are dropped so the curve always shows the cache as it is now.
  auto trim = [&](QLineSeries* series) {
    int n = series->count();
    while (n > 0 && series->at(n - 1).x() >= s.nTokens) series->remove(--n);
  };
  trim(kv_);
  trim(kvFp16_);
  if (kv_->count() == 0 && s.nTokens > 0) {
    kv_->append(0, 0);
    kvFp16_->append(0, 0);
  }
  kv_->append(s.nTokens, s.kvBytesUsed / kMiB);
  kvFp16_->append(s.nTokens, s.kvBytesUsedFp16 / kMiB);
  maxTokens_ = std::max(maxTokens_, s.nTokens);
  maxMiB_ = std::max(maxMiB_, s.kvBytesUsedFp16 / kMiB);
  rescale();

  if (s.kvBytesPerTokenFp16 > 0) {
    const double ratio = static_cast<double>(s.kvBytesPerTokenFp16) / std::max<qint64>(1, s.kvBytesPerToken);
    ratio_->setText(tr("%1× smaller").arg(ratio, 0, 'f', 2));
    if (std::abs(ratio - 1.0) < 1e-6) ratio_->setText(tr("1× (FP16 cache)"));
  }
  if (!s.kvFormat.isEmpty()) kv_->setName(tr("KV cache (%1)").arg(s.kvFormat));
  kvLine_->setText(tr("%1 used · FP16 %2 · %3/token")
                       .arg(formatBytes(s.kvBytesUsed), formatBytes(s.kvBytesUsedFp16),
                            formatBytes(s.kvBytesPerToken)));
  weightLine_->setText(tr("%1 (%2) · FP16 %3")
                           .arg(formatBytes(s.weightBytes), s.weightFormat, formatBytes(s.weightBytesFp16)));
  contextLine_->setText(tr("%1 / %2 tokens").arg(s.nTokens).arg(s.nCtx));
  if (s.deviceBytesTotal > 0) {
    deviceLine_->setText(tr("GPU %1 / %2").arg(formatBytes(s.deviceBytesUsed), formatBytes(s.deviceBytesTotal)));
    deviceBar_->setRange(0, 1000);
    deviceBar_->setValue(static_cast<int>(1000.0 * s.deviceBytesUsed / s.deviceBytesTotal));
    deviceBar_->setFormat(QStringLiteral("%1%").arg(100.0 * s.deviceBytesUsed / s.deviceBytesTotal, 0, 'f', 0));
    deviceBar_->show();
  } else {
    deviceBar_->hide();
  }
}

void KvMemoryPanel::rescale() {
  axisX_->setRange(0, niceCeil(std::max(16, maxTokens_)));
  axisY_->setRange(0, niceCeil(std::max(maxMiB_, 0.01)));
}

int KvMemoryPanel::pointCount() const { return static_cast<int>(kv_->count()); }
double KvMemoryPanel::lastKvMiB() const { return kv_->count() ? kv_->at(kv_->count() - 1).y() : 0; }
double KvMemoryPanel::lastKvFp16MiB() const {
  return kvFp16_->count() ? kvFp16_->at(kvFp16_->count() - 1).y() : 0;
}
QString KvMemoryPanel::ratioText() const { return ratio_->text(); }

void KvMemoryPanel::applyPalette() {
  const QPalette pal = palette();
  const bool dark = pal.color(QPalette::Window).lightness() < 128;
  chart_->setTheme(dark ? QChart::ChartThemeDark : QChart::ChartThemeLight);
  chart_->setBackgroundBrush(pal.brush(QPalette::Base));
  chart_->setPlotAreaBackgroundVisible(false);
  chart_->legend()->setLabelColor(pal.color(QPalette::Text));
  for (QValueAxis* a : {axisX_, axisY_}) {
    a->setLabelsColor(pal.color(QPalette::Text));
    a->setTitleBrush(pal.brush(QPalette::PlaceholderText));
    a->setGridLineColor(pal.color(QPalette::Midlight));
    a->setLinePenColor(pal.color(QPalette::Mid));
  }
  // The accent is the palette's highlight; FP16 is drawn in the muted text colour, dashed.
  QPen accent(pal.color(QPalette::Highlight), 2.5);
  kv_->setPen(accent);
  QPen muted(pal.color(QPalette::PlaceholderText), 1.8, Qt::DashLine);
  kvFp16_->setPen(muted);
}

void KvMemoryPanel::changeEvent(QEvent* event) {
  QWidget::changeEvent(event);
  if (event->type() == QEvent::PaletteChange) applyPalette();
}
