// Value types crossing the thread boundary between the GUI and the EngineWorker (queued signals and
// slots copy them). Qt types only, so the UI never includes engine headers for payloads; every type is
// registered with Q_DECLARE_METATYPE and registerEngineTypes() (called by EngineWorker's constructor).
#pragma once

#include <QList>
#include <QMetaType>
#include <QString>

// One turn of the conversation sent to the model. role: "system" | "user" | "assistant".
struct ChatTurn {
  QString role;
  QString content;
};

// Sampling settings of a conversation; stored as JSON in the conversation row (samplingJson).
// Keys: temperature, top_k, top_p, min_p, repeat_penalty, seed, max_tokens. Missing keys keep defaults.
struct SamplingSettings {
  double temperature = 0.8;
  int topK = 40;
  double topP = 0.95;
  double minP = 0.05;
  double repetitionPenalty = 1.1;
  quint64 seed = 0;  // 0 = a fresh random seed per reply
  int maxTokens = 256;

  static SamplingSettings greedy();
  static SamplingSettings fromJson(const QString& json);  // invalid / empty JSON → defaults
  QString toJson() const;                                  // compact, keys sorted
  bool operator==(const SamplingSettings&) const = default;
};

struct GenerationRequest {
  qint64 requestId = 0;
  QString systemPrompt;
  QList<ChatTurn> turns;  // oldest first; the last one is the user's (or a partial assistant reply)
  SamplingSettings sampling;
};

// What the loaded model is, for the status bar and the memory panel.
struct EngineModelInfo {
  QString path;
  QString name;
  QString format;        // "hf-safetensors", "llama2c", "wkvq"
  QString mode;          // quantization mode name, e.g. "w4kv4"
  QString backend;       // "cpu" / "cuda"
  QString device;        // "CPU · 8 threads", "CUDA"
  QString chatTemplate;  // "plain" / "llama2"
  QString weightFormat;  // "FP16", "W4 g128"
  QString kvFormat;      // "FP16", "KV4 G64"
  int nLayers = 0;
  int dim = 0;
  int maxContext = 0;
  qint64 nParams = 0;
  qint64 weightBytes = 0;
  qint64 weightBytesFp16 = 0;
  double loadSeconds = 0;
};

// A memory snapshot, emitted every few tokens while generating (and after load / generation).
struct EngineMemoryStats {
  QString backend;
  QString weightFormat;
  QString kvFormat;
  int nTokens = 0;  // tokens in the context
  int nCtx = 0;     // context capacity
  qint64 kvBytesUsed = 0;
  qint64 kvBytesUsedFp16 = 0;
  qint64 kvBytesPerToken = 0;
  qint64 kvBytesPerTokenFp16 = 0;
  qint64 weightBytes = 0;
  qint64 weightBytesFp16 = 0;
  qint64 deviceBytesUsed = 0;  // 0/0 on the CPU backend
  qint64 deviceBytesTotal = 0;
};

struct GenerationStats {
  qint64 requestId = 0;
  int promptTokens = 0;       // tokens of the rendered prompt
  int promptReused = 0;       // of those, found already in the KV cache
  int completionTokens = 0;
  double tokensPerSecond = 0;        // decode
  double prefillTokensPerSecond = 0;
  QString stopReason;  // wkv::stop_reason_name()
  int droppedTurns = 0;  // oldest turns left out so the prompt fits the context
  qint64 kvBytes = 0;
  qint64 kvBytesFp16 = 0;
  int contextUsed = 0;
  int contextLimit = 0;
};

struct QuantizeRequest {
  QString modelPath;
  QString outPath;
  QString calibPath;
  QString method = QStringLiteral("stats");  // rtn | stats | wkvquant
  int weightGroup = 128;
  int kvGroup = 0;  // 0 = head_dim
  int samples = 0;  // 0 = method default
  int seqlen = 0;   // 0 = min(2048, context)
};

struct QuantizeStatus {
  QString stage;
  int step = 0;
  int total = 0;
  double loss = 0;
  double etaSeconds = 0;
};

// ---- long-document summarization ----
struct SummarizeRequest {
  qint64 requestId = 0;
  QString text;
  int maxTokens = 256;  // answer budget per part and for the summary
  bool planOnly = false;  // only report the plan (token count, parts), run nothing
};

// The plan: how the document fits the loaded model's context.
struct SummaryPlanInfo {
  qint64 requestId = 0;
  int documentTokens = 0;
  int contextTokens = 0;
  int chunkBudget = 0;  // text tokens per part
  bool direct = true;
  int nChunks = 0;
  int nLevels = 0;
  int nSteps = 0;
};

struct SummarizeStatus {
  qint64 requestId = 0;
  int step = 0;  // 0-based
  int nSteps = 0;
  QString kind;   // "direct" | "part" | "combine"
  QString phase;  // "prefill" | "generate" | "done"
  int done = 0;
  int total = 0;
};

// ---- mode comparison ----
struct ComparePaneSpec {
  QString mode;
  QString modelPath;  // empty: the loaded model
};

struct CompareRequest {
  qint64 requestId = 0;
  QString prompt;
  QList<ComparePaneSpec> panes;
  SamplingSettings sampling;  // the same for every pane (maxTokens included)
  QString fp16ModelPath;      // optional FP16 reference for divergence / NLL
};

struct ComparePaneOutcome {
  int pane = 0;
  QString mode;
  QString modelPath;
  QString modelName;
  QString text;
  QString error;
  bool complete = false;
  int promptTokens = 0;
  int completionTokens = 0;
  double tokensPerSecond = 0;
  qint64 kvBytes = 0;
  qint64 weightBytes = 0;
  int divergeAt = -2;  // -1 none, -2 unknown (no FP16 pane)
  bool hasNll = false;
  double nll = 0;
  double perplexity = 0;
};

// Human-readable byte counts: "512 B", "1.5 KiB", "12.3 MiB", "3.50 GiB".
QString formatBytes(qint64 bytes);

void registerEngineTypes();

Q_DECLARE_METATYPE(ChatTurn)
Q_DECLARE_METATYPE(SamplingSettings)
Q_DECLARE_METATYPE(GenerationRequest)
Q_DECLARE_METATYPE(EngineModelInfo)
Q_DECLARE_METATYPE(EngineMemoryStats)
Q_DECLARE_METATYPE(GenerationStats)
Q_DECLARE_METATYPE(QuantizeRequest)
Q_DECLARE_METATYPE(QuantizeStatus)
Q_DECLARE_METATYPE(SummarizeRequest)
Q_DECLARE_METATYPE(SummaryPlanInfo)
Q_DECLARE_METATYPE(SummarizeStatus)
Q_DECLARE_METATYPE(ComparePaneSpec)
Q_DECLARE_METATYPE(CompareRequest)
Q_DECLARE_METATYPE(ComparePaneOutcome)
