// Stored results of the two document/quality tools: comparisons of quantization modes (tables
// comparisons + comparison_panes) and documents read into a conversation for summarization (table
// documents, linked to its conversation and deleted with it). Throws StorageError on SQLite failures.
//
// Comparison Markdown export (exact; tests/app/compare_view_test.cpp checks it byte for byte). Blocks
// are separated by one blank line and the text ends in a single "\n":
//   "# Mode comparison"
//   "- Created: <ISO 8601 UTC>", then "- Settings: `<settings json>`" when not "{}"
//   "## Prompt" and the prompt (trailing newlines removed)
//   per pane: "## <pane>. <mode> · <model name>" and its output (or "_Error: <error>_"; nothing
//      when the output is empty)
//   "## Results" and the table
//   | # | Mode | Model | Tokens | Tok/s | KV cache | Weights | Diverges at | NLL (FP16) | PPL (FP16) |
//   |---:|---|---|---:|---:|---:|---:|---:|---:|---:|
//   one row per pane: pane number (1-based), mode, model name (the model path's file name), completion
//   tokens, tok/s with one decimal, KV and weight bytes as MiB with two decimals ("0.19 MiB"), the
//   divergence index ("none" when -1, "n/a" when unknown), NLL with four decimals and perplexity with
//   three ("n/a" when not computed). A failed pane shows "error" in the Tokens column and "n/a" after.
#pragma once

#include <QList>
#include <QString>

#include <optional>

class Database;

struct ComparisonPane {
  int pane = 0;  // 0-based position
  QString mode;
  QString modelPath;
  QString output;
  int promptTokens = 0;
  int completionTokens = 0;
  double tokensPerSecond = 0;
  qint64 kvBytes = 0;
  qint64 weightBytes = 0;
  std::optional<int> divergeAt;  // -1 = never diverges; nullopt = no FP16 pane
  std::optional<double> nll;     // mean NLL under the FP16 model
  std::optional<double> perplexity;
  QString error;
  bool complete = false;
};

struct Comparison {
  qint64 id = 0;
  qint64 createdAt = 0;
  QString prompt;
  QString settingsJson = QStringLiteral("{}");
  QList<ComparisonPane> panes;  // ascending pane
};

struct Document {
  qint64 id = 0;
  qint64 conversationId = 0;
  QString name;
  QString path;
  QString content;
  int tokenCount = 0;
  qint64 createdAt = 0;
};

class ComparisonStore {
 public:
  explicit ComparisonStore(Database& db) : db_(db) {}

  // Inserts the comparison and its panes in one transaction; returns the id. `createdAt` 0 = now.
  qint64 saveComparison(const Comparison& comparison);
  std::optional<Comparison> comparison(qint64 id);
  QList<Comparison> listComparisons();  // newest first, panes included
  void deleteComparison(qint64 id);
  QString exportMarkdown(qint64 id);
  static QString toMarkdown(const Comparison& c);

  qint64 addDocument(const Document& document);  // createdAt 0 = now
  QList<Document> documents(qint64 conversationId);

 private:
  Database& db_;
};
