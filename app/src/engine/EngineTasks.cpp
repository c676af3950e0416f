// EngineWorker's long tasks beside chat: document summarization (with the loaded model's session, so
// the KV memory panel follows the run) and the quantization-mode comparison (each pane loads its own
// {model, mode}; the loaded model stays as it is). Both run on the worker thread and stream through
// queued signals; stop() cancels them at the next prefill chunk or token.
#include <QFileInfo>

#include <wkv/compare.h>
#include <wkv/summarize.h>

#include <cmath>

#include "engine/EngineHelpers.h"
#include "engine/EngineWorker.h"

namespace {

QString stepKind(wkv::SummaryStep::Kind k) {
  switch (k) {
    case wkv::SummaryStep::Kind::direct: return QStringLiteral("direct");
    case wkv::SummaryStep::Kind::chunk: return QStringLiteral("part");
    case wkv::SummaryStep::Kind::combine: return QStringLiteral("combine");
  }
  return {};
}

QString phaseName(wkv::SummarizeProgress::Phase p) {
  switch (p) {
    case wkv::SummarizeProgress::Phase::prefill: return QStringLiteral("prefill");
    case wkv::SummarizeProgress::Phase::generate: return QStringLiteral("generate");
    case wkv::SummarizeProgress::Phase::step_done: return QStringLiteral("done");
  }
  return {};
}

SummaryPlanInfo planInfo(qint64 id, const wkv::SummaryPlan& p) {
  SummaryPlanInfo i;
  i.requestId = id;
  i.documentTokens = p.document_tokens;
  i.contextTokens = p.n_ctx;
  i.chunkBudget = p.chunk_budget;
  i.direct = p.direct;
  i.nChunks = p.n_chunks;
  i.nLevels = p.n_levels;
  i.nSteps = static_cast<int>(p.steps.size());
  return i;
}

ComparePaneOutcome outcomeOf(int index, const wkv::PaneResult& r) {
  ComparePaneOutcome o;
  o.pane = index;
  o.mode = QString::fromLatin1(wkv::quant_mode_name(r.pane.mode));
  o.modelPath = QString::fromStdString(r.pane.model_path);
  o.modelName = r.model_name.empty() ? QFileInfo(o.modelPath).fileName() : QString::fromStdString(r.model_name);
  o.text = QString::fromStdString(r.text);
  o.error = QString::fromStdString(r.error);
  o.complete = r.error.empty() && !r.cancelled;
  o.promptTokens = static_cast<int>(r.prompt_tokens.size());
  o.completionTokens = static_cast<int>(r.tokens.size());
  o.tokensPerSecond = r.tokens_per_second;
  o.kvBytes = r.kv_bytes;
  o.weightBytes = r.weight_bytes;
  o.divergeAt = r.diverge_at ? *r.diverge_at : -2;
  o.hasNll = r.nll.has_value();
  o.nll = r.nll.value_or(0.0);
  o.perplexity = r.ppl.value_or(0.0);
  return o;
}

}  // namespace

void EngineWorker::summarize(const SummarizeRequest& request) {
  stopRequested_.store(false);
  if (!model_ || !session_) {
    const QString message = tr("No model is loaded: open a model first (File ▸ Open Model).");
    emit summarizeFailed(request.requestId, message);
    emit error(message);
    return;
  }
  QString message;
  QString summary;
  bool cancelled = false;
  const std::string text = request.text.toStdString();
  const bool ok = engine_detail::guarded(
      [&] {
        const wkv::Tokenizer& tok = model_->tokenizer();
        const int overhead = wkv::summary_prompt_overhead(model_->chat_template(), tok);
        if (request.planOnly) {
          emit summaryPlanned(
              planInfo(request.requestId, wkv::plan_summary(text, tok, session_->n_ctx(), overhead, request.maxTokens)));
          return;
        }
        wkv::SummarizeOptions opts;
        opts.max_answer_tokens = request.maxTokens;
        wkv::SummarizeCallbacks cb;
        cb.on_plan = [&](const wkv::SummaryPlan& p) { emit summaryPlanned(planInfo(request.requestId, p)); };
        int reports = 0;
        cb.progress = [&](const wkv::SummarizeProgress& p) {
          SummarizeStatus s;
          s.requestId = request.requestId;
          s.step = p.step;
          s.nSteps = p.n_steps;
          s.kind = stepKind(p.kind);
          s.phase = phaseName(p.phase);
          s.done = p.done;
          s.total = p.total;
          emit summarizeProgress(s);
          // Prefill chunks are big steps: report memory after each; tokens every few.
          if (p.phase != wkv::SummarizeProgress::Phase::generate || ++reports % memoryInterval_ == 0)
            emit memoryStats(snapshot());
          return !stopRequested_.load();
        };
        cb.on_text = [&](int step, const std::string& t) {
          emit summarizeText(request.requestId, step, QString::fromStdString(t));
        };
        const wkv::SummarizeResult r = wkv::summarize(*session_, text, opts, cb);
        cancelled = r.cancelled;
        summary = QString::fromStdString(r.summary);
      },
      message);
  if (!ok) {
    emit summarizeFailed(request.requestId, message);
    emit error(message);
    return;
  }
  if (request.planOnly) return;
  emit memoryStats(snapshot());
  emit summarizeFinished(request.requestId, summary, cancelled);
}

void EngineWorker::compare(const CompareRequest& request) {
  stopRequested_.store(false);
  QString message;
  QList<ComparePaneOutcome> panes;
  QString note;
  quint64 seed = 0;
  bool cancelled = false;
  const bool ok = engine_detail::guarded(
      [&] {
        wkv::CompareOptions opts;
        opts.model_path = modelPath_.toStdString();
        opts.prompt = request.prompt.toStdString();
        opts.fp16_model_path = request.fp16ModelPath.toStdString();
        opts.generate.sampling = engine_detail::toEngine(request.sampling);
        opts.generate.max_tokens = request.sampling.maxTokens;
        if (model_) opts.load.n_threads = model_->n_threads();
        for (const ComparePaneSpec& p : request.panes) {
          wkv::ComparePane pane;
          pane.mode = wkv::quant_mode_from_name(p.mode.toStdString());
          pane.model_path = p.modelPath.toStdString();
          if (pane.model_path.empty() && opts.model_path.empty())
            throw wkv::Error(wkv::ErrorCode::invalid_argument,
                             "pane " + p.mode.toStdString() + " names no model and none is loaded");
          opts.panes.push_back(pane);
        }
        wkv::CompareCallbacks cb;
        cb.on_pane_start = [&](int i) { emit comparePaneStarted(request.requestId, i); };
        cb.on_token = [&](int i, const wkv::TokenEvent& ev) {
          if (!ev.text.empty()) emit compareToken(request.requestId, i, QString::fromStdString(ev.text));
          return !stopRequested_.load();
        };
        cb.on_pane_done = [&](int i, const wkv::PaneResult& r) {
          emit comparePaneFinished(request.requestId, outcomeOf(i, r));
        };
        cb.keep_going = [&] { return !stopRequested_.load(); };
        const wkv::CompareResult r = wkv::compare_modes(opts, cb);
        for (size_t i = 0; i < r.panes.size(); ++i) panes.push_back(outcomeOf(static_cast<int>(i), r.panes[i]));
        note = QString::fromStdString(r.fp16_note);
        seed = r.seed;
        cancelled = r.cancelled;
      },
      message);
  if (!ok) {
    emit compareFailed(request.requestId, message);
    emit error(message);
    return;
  }
  emit compareFinished(request.requestId, panes, note, seed, cancelled);
}
