#include "storage/ComparisonStore.h"

#include <QDateTime>
#include <QFileInfo>
#include <QStringList>

#include "storage/Database.h"
#include "storage/Query.h"
#include "storage/StorageError.h"

namespace {

QString mib(qint64 bytes) { return QStringLiteral("%1 MiB").arg(double(bytes) / (1024.0 * 1024.0), 0, 'f', 2); }

QString stripTrailingNewlines(QString s) {
  while (s.endsWith(QLatin1Char('\n'))) s.chop(1);
  return s;
}

QString modelName(const QString& path) {
  QString p = path;
  while (p.endsWith(QLatin1Char('/'))) p.chop(1);
  const QString name = QFileInfo(p).fileName();
  return name.isEmpty() ? p : name;
}

template <typename T, typename Fn>
void bindOptional(Query& q, int index, const std::optional<T>& v, Fn&& toValue) {
  if (v) q.bind(index, toValue(*v));
  else q.bindNull(index);
}

}  // namespace

qint64 ComparisonStore::saveComparison(const Comparison& c) {
  const qint64 created = c.createdAt ? c.createdAt : QDateTime::currentMSecsSinceEpoch();
  Transaction transaction(db_);
  db_.query("INSERT INTO comparisons(created_at, prompt, settings_json) VALUES (?1, ?2, ?3)")
      .bind(1, created)
      .bind(2, c.prompt)
      .bind(3, c.settingsJson)
      .run();
  const qint64 id = db_.lastInsertRowId();
  for (const ComparisonPane& p : c.panes) {
    Query q = db_.query(
        "INSERT INTO comparison_panes(comparison_id, pane, mode, model_path, output, prompt_tokens, completion_tokens, "
        "tokens_per_second, kv_bytes, perplexity, error, complete, weight_bytes, diverge_at, nll) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
    q.bind(1, id).bind(2, p.pane).bind(3, p.mode).bind(4, p.modelPath).bind(5, p.output);
    q.bind(6, p.promptTokens).bind(7, p.completionTokens).bind(8, p.tokensPerSecond).bind(9, p.kvBytes);
    bindOptional(q, 10, p.perplexity, [](double v) { return v; });
    q.bind(11, p.error).bind(12, p.complete ? 1 : 0).bind(13, p.weightBytes);
    bindOptional(q, 14, p.divergeAt, [](int v) { return v; });
    bindOptional(q, 15, p.nll, [](double v) { return v; });
    q.run();
  }
  transaction.commit();
  return id;
}

std::optional<Comparison> ComparisonStore::comparison(qint64 id) {
  Comparison c;
  {
    Query q = db_.query("SELECT id, created_at, prompt, settings_json FROM comparisons WHERE id = ?1");
    q.bind(1, id);
    if (!q.next()) return std::nullopt;
    c.id = q.int64(0);
    c.createdAt = q.int64(1);
    c.prompt = q.text(2);
    c.settingsJson = q.text(3);
  }
  Query q = db_.query(
      "SELECT pane, mode, model_path, output, prompt_tokens, completion_tokens, tokens_per_second, kv_bytes, "
      "perplexity, error, complete, weight_bytes, diverge_at, nll FROM comparison_panes WHERE comparison_id = ?1 "
      "ORDER BY pane");
  q.bind(1, id);
  while (q.next()) {
    ComparisonPane p;
    p.pane = q.integer(0);
    p.mode = q.text(1);
    p.modelPath = q.text(2);
    p.output = q.text(3);
    p.promptTokens = q.integer(4);
    p.completionTokens = q.integer(5);
    p.tokensPerSecond = q.real(6);
    p.kvBytes = q.int64(7);
    if (!q.isNull(8)) p.perplexity = q.real(8);
    p.error = q.text(9);
    p.complete = q.integer(10) != 0;
    p.weightBytes = q.int64(11);
    if (!q.isNull(12)) p.divergeAt = q.integer(12);
    if (!q.isNull(13)) p.nll = q.real(13);
    c.panes.push_back(p);
  }
  return c;
}

QList<Comparison> ComparisonStore::listComparisons() {
  QList<qint64> ids;
  {
    Query q = db_.query("SELECT id FROM comparisons ORDER BY created_at DESC, id DESC");
    while (q.next()) ids.push_back(q.int64(0));
  }
  QList<Comparison> out;
  for (qint64 id : ids)
    if (auto c = comparison(id)) out.push_back(*c);
  return out;
}

void ComparisonStore::deleteComparison(qint64 id) {
  db_.query("DELETE FROM comparisons WHERE id = ?1").bind(1, id).run();
}

QString ComparisonStore::exportMarkdown(qint64 id) {
  const auto c = comparison(id);
  if (!c) throw StorageError(QStringLiteral("no comparison with id %1").arg(id));
  return toMarkdown(*c);
}

QString ComparisonStore::toMarkdown(const Comparison& c) {
  QStringList blocks;
  blocks << QStringLiteral("# Mode comparison");
  QString meta = QStringLiteral("- Created: ") + QDateTime::fromMSecsSinceEpoch(c.createdAt).toUTC().toString(Qt::ISODate);
  if (c.settingsJson != QLatin1String("{}") && !c.settingsJson.isEmpty())
    meta += QStringLiteral("\n- Settings: `") + c.settingsJson + QLatin1Char('`');
  blocks << meta;
  blocks << QStringLiteral("## Prompt") << stripTrailingNewlines(c.prompt);
  for (const ComparisonPane& p : c.panes) {
    blocks << QStringLiteral("## %1. %2 · %3").arg(p.pane + 1).arg(p.mode, modelName(p.modelPath));
    if (!p.error.isEmpty()) blocks << QStringLiteral("_Error: ") + p.error + QLatin1Char('_');
    else if (!stripTrailingNewlines(p.output).isEmpty()) blocks << stripTrailingNewlines(p.output);
  }
  QString table = QStringLiteral(
      "| # | Mode | Model | Tokens | Tok/s | KV cache | Weights | Diverges at | NLL (FP16) | PPL (FP16) |\n"
      "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
  const QString na = QStringLiteral("n/a");
  for (const ComparisonPane& p : c.panes) {
    QStringList cells{QString::number(p.pane + 1), p.mode, modelName(p.modelPath)};
    if (!p.error.isEmpty()) {
      cells << QStringLiteral("error") << na << na << na << na << na << na;
    } else {
      cells << QString::number(p.completionTokens) << QString::number(p.tokensPerSecond, 'f', 1) << mib(p.kvBytes)
            << mib(p.weightBytes)
            << (p.divergeAt ? (*p.divergeAt < 0 ? QStringLiteral("none") : QString::number(*p.divergeAt)) : na)
            << (p.nll ? QString::number(*p.nll, 'f', 4) : na)
            << (p.perplexity ? QString::number(*p.perplexity, 'f', 3) : na);
    }
    table += QStringLiteral("\n| ") + cells.join(QStringLiteral(" | ")) + QStringLiteral(" |");
  }
  blocks << QStringLiteral("## Results") << table;
  return blocks.join(QStringLiteral("\n\n")) + QLatin1Char('\n');
}

qint64 ComparisonStore::addDocument(const Document& d) {
  db_.query("INSERT INTO documents(conversation_id, name, path, content, token_count, created_at) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
      .bind(1, d.conversationId)
      .bind(2, d.name)
      .bind(3, d.path)
      .bind(4, d.content)
      .bind(5, d.tokenCount)
      .bind(6, d.createdAt ? d.createdAt : QDateTime::currentMSecsSinceEpoch())
      .run();
  return db_.lastInsertRowId();
}

QList<Document> ComparisonStore::documents(qint64 conversationId) {
  QList<Document> out;
  Query q = db_.query("SELECT id, conversation_id, name, path, content, token_count, created_at FROM documents "
                      "WHERE conversation_id = ?1 ORDER BY id");
  q.bind(1, conversationId);
  while (q.next())
    out.push_back({q.int64(0), q.int64(1), q.text(2), q.text(3), q.text(4), q.integer(5), q.int64(6)});
  return out;
}
