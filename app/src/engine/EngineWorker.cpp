#include "engine/EngineWorker.h"

#include "engine/EngineHelpers.h"

#include <QElapsedTimer>
#include <QFileInfo>

#include <wkv/engine.h>
#include <wkv/quantize.h>

#include <new>

namespace {

using engine_detail::guarded;
using engine_detail::toEngine;

QString qs(const std::string& s) { return QString::fromStdString(s); }

wkv::ChatMessage::Role roleOf(const QString& role) {
  if (role == QLatin1String("system")) return wkv::ChatMessage::Role::system;
  if (role == QLatin1String("assistant")) return wkv::ChatMessage::Role::assistant;
  return wkv::ChatMessage::Role::user;
}

}  // namespace

EngineWorker::EngineWorker(QObject* parent) : QObject(parent) { registerEngineTypes(); }

EngineWorker::~EngineWorker() = default;

EngineMemoryStats EngineWorker::snapshot() const {
  EngineMemoryStats out;
  if (!model_) return out;
  const wkv::MemoryStats m = session_ ? session_->memory_stats() : model_->weight_memory();
  out.backend = qs(m.backend);
  out.weightFormat = qs(m.weight_format);
  out.kvFormat = qs(m.kv_format);
  out.nTokens = m.n_tokens;
  out.nCtx = m.n_ctx;
  out.kvBytesUsed = m.kv_bytes_used;
  out.kvBytesUsedFp16 = m.kv_bytes_used_fp16;
  out.kvBytesPerToken = m.kv_bytes_per_token;
  out.kvBytesPerTokenFp16 = m.kv_bytes_per_token_fp16;
  out.weightBytes = m.weight_bytes;
  out.weightBytesFp16 = m.weight_bytes_fp16;
  out.deviceBytesUsed = m.device_bytes_used;
  out.deviceBytesTotal = m.device_bytes_total;
  return out;
}

void EngineWorker::loadModel(const QString& path, const QString& mode, int threads) {
  emit modelLoading(path);
  QElapsedTimer timer;
  timer.start();
  std::shared_ptr<wkv::Model> model;
  std::unique_ptr<wkv::Session> session;
  QString message;
  const bool ok = guarded(
      [&] {
        wkv::LoadOptions opts;
        opts.n_threads = threads;
        if (!mode.isEmpty()) opts.mode = wkv::quant_mode_from_name(mode.toStdString());
        model = wkv::Model::load(path.toStdString(), opts);
        session = std::make_unique<wkv::Session>(model);
      },
      message);
  if (!ok) {
    // The previous model (if any) stays loaded and usable.
    emit modelLoadFailed(path, message);
    emit error(message);
    return;
  }
  session_.reset();  // release the old cache before the old weights
  model_ = std::move(model);
  session_ = std::move(session);
  modelPath_ = path;

  const wkv::ModelInfo& i = model_->info();
  const wkv::MemoryStats w = model_->weight_memory();
  EngineModelInfo info;
  info.path = path;
  info.name = qs(i.name);
  info.format = qs(i.format);
  info.mode = QString::fromLatin1(wkv::quant_mode_name(model_->mode()));
  info.backend = QString::fromLatin1(wkv::backend_name(model_->backend()));
  info.device = model_->backend() == wkv::BackendKind::cuda
                    ? tr("CUDA GPU")
                    : tr("CPU · %n thread(s)", nullptr, model_->n_threads());
  info.chatTemplate = QString::fromLatin1(wkv::chat_template_name(model_->chat_template()));
  info.weightFormat = qs(w.weight_format);
  info.kvFormat = qs(w.kv_format);
  info.nLayers = i.n_layers;
  info.dim = i.dim;
  info.maxContext = session_->n_ctx();
  info.nParams = i.n_params;
  info.weightBytes = w.weight_bytes;
  info.weightBytesFp16 = w.weight_bytes_fp16;
  info.loadSeconds = timer.elapsed() / 1000.0;
  emit modelLoaded(info);
  emit memoryStats(snapshot());
}

void EngineWorker::unloadModel() {
  modelPath_.clear();
  session_.reset();
  model_.reset();
}

void EngineWorker::generate(const GenerationRequest& request) {
  stopRequested_.store(false);
  if (!model_ || !session_) {
    const QString message = tr("No model is loaded: open a model first (File ▸ Open Model).");
    emit generationFailed(request.requestId, message);
    emit error(message);
    return;
  }
  emit generationStarted(request.requestId);

  GenerationStats stats;
  stats.requestId = request.requestId;
  QString message;
  const bool ok = guarded(
      [&] {
        const int nCtx = session_->n_ctx();
        const int maxTokens = std::max(1, std::min(request.sampling.maxTokens, nCtx - 1));
        // Leave out the oldest turns (never the system prompt or the last turn) until the prompt
        // and the reply fit in the context.
        QList<ChatTurn> turns = request.turns;
        std::vector<wkv::TokenId> ids;
        for (;;) {
          std::vector<wkv::ChatMessage> msgs;
          if (!request.systemPrompt.trimmed().isEmpty())
            msgs.push_back({wkv::ChatMessage::Role::system, request.systemPrompt.toStdString()});
          for (const ChatTurn& t : turns) msgs.push_back({roleOf(t.role), t.content.toStdString()});
          ids = wkv::apply_chat_template(model_->chat_template(), model_->tokenizer(), msgs);
          if (static_cast<int>(ids.size()) + maxTokens <= nCtx || turns.size() <= 1) break;
          turns.removeFirst();
          ++stats.droppedTurns;
        }
        if (static_cast<int>(ids.size()) >= nCtx)
          throw wkv::Error(wkv::ErrorCode::context_full,
                           "the message is too long: its prompt has " + std::to_string(ids.size()) +
                               " tokens but the context holds " + std::to_string(nCtx));

        wkv::GenerateOptions opts;
        opts.sampling = toEngine(request.sampling);
        opts.max_tokens = std::min(maxTokens, nCtx - static_cast<int>(ids.size()));
        int produced = 0;
        const wkv::GenerateResult r = session_->generate(ids, opts, [&](const wkv::TokenEvent& ev) {
          if (!ev.text.empty()) emit tokenStreamed(request.requestId, QString::fromStdString(ev.text));
          if (++produced % memoryInterval_ == 0) emit memoryStats(snapshot());
          return !stopRequested_.load();
        });
        stats.promptTokens = static_cast<int>(ids.size());
        stats.promptReused = r.n_prompt_reused;
        stats.completionTokens = static_cast<int>(r.tokens.size());
        stats.tokensPerSecond = r.decode_tokens_per_second();
        stats.prefillTokensPerSecond = r.prefill_tokens_per_second();
        stats.stopReason = QString::fromLatin1(wkv::stop_reason_name(r.stop));
      },
      message);
  if (!ok) {
    emit generationFailed(request.requestId, message);
    emit error(message);
    return;
  }
  const EngineMemoryStats mem = snapshot();
  stats.kvBytes = mem.kvBytesUsed;
  stats.kvBytesFp16 = mem.kvBytesUsedFp16;
  stats.contextUsed = session_->n_past();
  stats.contextLimit = session_->n_ctx();
  emit memoryStats(mem);
  emit generationFinished(request.requestId, stats);
}

void EngineWorker::quantize(const QuantizeRequest& request) {
  quantizeCancelRequested_.store(false);
  QString message;
  bool cancelled = false;
  wkv::QuantizeReport report;
  const bool ok = guarded(
      [&] {
        wkv::QuantizeOptions opts;
        opts.method = wkv::quant_method_from_name(request.method.toStdString());
        opts.weight_group = request.weightGroup;
        opts.kv_group = request.kvGroup;
        opts.calib_path = request.calibPath.toStdString();
        opts.samples = request.samples;
        opts.seqlen = request.seqlen;
        opts.progress = [&](const wkv::QuantizeProgress& p) {
          emit quantizeProgress(QuantizeStatus{qs(p.stage), p.step, p.total, p.loss, p.eta_seconds});
          return !quantizeCancelRequested_.load();
        };
        report = wkv::quantize_to_file(request.modelPath.toStdString(), request.outPath.toStdString(), opts);
      },
      message, &cancelled);
  if (!ok) {
    emit quantizeFailed(message, cancelled);
    if (!cancelled) emit error(message);
    return;
  }
  QString summary;
  if (!report.calib_device.empty()) {
    summary = tr("calibrated on %1 in %2 s").arg(qs(report.calib_device)).arg(report.calib_seconds, 0, 'f', 1);
    if (report.peak_device_bytes > 0)
      summary += tr(", peak GPU memory %1 MiB").arg(double(report.peak_device_bytes) / 1048576.0, 0, 'f', 0);
  }
  emit quantizeFinished(request.outPath, summary);
}

EngineThread::EngineThread(QObject* parent) : QObject(parent), worker_(new EngineWorker) {
  thread_.setObjectName(QStringLiteral("wkv-engine"));
  worker_->moveToThread(&thread_);
  connect(&thread_, &QThread::finished, worker_, &QObject::deleteLater);
  thread_.start();
}

EngineThread::~EngineThread() {
  worker_->stop();
  worker_->cancelQuantize();
  thread_.quit();
  thread_.wait();
}
