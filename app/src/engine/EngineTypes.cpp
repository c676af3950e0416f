#include "engine/EngineTypes.h"

#include <QJsonDocument>
#include <QJsonObject>

SamplingSettings SamplingSettings::greedy() {
  SamplingSettings s;
  s.temperature = 0.0;
  s.repetitionPenalty = 1.0;
  return s;
}

SamplingSettings SamplingSettings::fromJson(const QString& json) {
  SamplingSettings s;
  const QJsonDocument doc = QJsonDocument::fromJson(json.toUtf8());
  if (!doc.isObject()) return s;
  const QJsonObject o = doc.object();
  s.temperature = o.value(QStringLiteral("temperature")).toDouble(s.temperature);
  s.topK = o.value(QStringLiteral("top_k")).toInt(s.topK);
  s.topP = o.value(QStringLiteral("top_p")).toDouble(s.topP);
  s.minP = o.value(QStringLiteral("min_p")).toDouble(s.minP);
  s.repetitionPenalty = o.value(QStringLiteral("repeat_penalty")).toDouble(s.repetitionPenalty);
  // JSON numbers are doubles: seeds are stored as decimal strings so all 64 bits survive.
  const QJsonValue seed = o.value(QStringLiteral("seed"));
  if (seed.isString()) s.seed = seed.toString().toULongLong();
  else if (seed.isDouble()) s.seed = static_cast<quint64>(seed.toDouble());
  s.maxTokens = o.value(QStringLiteral("max_tokens")).toInt(s.maxTokens);
  if (s.maxTokens < 1) s.maxTokens = 1;
  return s;
}

QString SamplingSettings::toJson() const {
  QJsonObject o;
  o.insert(QStringLiteral("temperature"), temperature);
  o.insert(QStringLiteral("top_k"), topK);
  o.insert(QStringLiteral("top_p"), topP);
  o.insert(QStringLiteral("min_p"), minP);
  o.insert(QStringLiteral("repeat_penalty"), repetitionPenalty);
  o.insert(QStringLiteral("seed"), QString::number(seed));
  o.insert(QStringLiteral("max_tokens"), maxTokens);
  return QString::fromUtf8(QJsonDocument(o).toJson(QJsonDocument::Compact));
}

QString formatBytes(qint64 bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes < 1024) return QStringLiteral("%1 B").arg(bytes);
  if (b < 1024.0 * 1024) return QStringLiteral("%1 KiB").arg(b / 1024, 0, 'f', 1);
  if (b < 1024.0 * 1024 * 1024) return QStringLiteral("%1 MiB").arg(b / (1024.0 * 1024), 0, 'f', 1);
  return QStringLiteral("%1 GiB").arg(b / (1024.0 * 1024 * 1024), 0, 'f', 2);
}

void registerEngineTypes() {
  static const bool once = [] {
    qRegisterMetaType<ChatTurn>();
    qRegisterMetaType<SamplingSettings>();
    qRegisterMetaType<GenerationRequest>();
    qRegisterMetaType<EngineModelInfo>();
    qRegisterMetaType<EngineMemoryStats>();
    qRegisterMetaType<GenerationStats>();
    qRegisterMetaType<QuantizeRequest>();
    qRegisterMetaType<QuantizeStatus>();
    qRegisterMetaType<SummarizeRequest>();
    qRegisterMetaType<SummaryPlanInfo>();
    qRegisterMetaType<SummarizeStatus>();
    qRegisterMetaType<ComparePaneSpec>();
    qRegisterMetaType<CompareRequest>();
    qRegisterMetaType<ComparePaneOutcome>();
    qRegisterMetaType<QList<ComparePaneOutcome>>();
    return true;
  }();
  (void)once;
}
