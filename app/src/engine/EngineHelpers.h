// Helpers shared by the EngineWorker's slots (EngineWorker.cpp, EngineTasks.cpp): settings → engine
// sampling parameters, and the guard that turns engine failures into messages.
#pragma once

#include <QObject>
#include <QString>

#include <wkv/engine.h>

#include <new>

#include "engine/EngineTypes.h"

namespace engine_detail {

inline wkv::SamplingParams toEngine(const SamplingSettings& s) {
  wkv::SamplingParams p;
  p.temperature = static_cast<float>(s.temperature);
  p.top_k = s.topK;
  p.top_p = static_cast<float>(s.topP);
  p.min_p = static_cast<float>(s.minP);
  p.repetition_penalty = static_cast<float>(s.repetitionPenalty);
  p.seed = s.seed;
  return p;
}

// Runs `fn`, turning engine and allocation failures into a message (never lets them escape a slot,
// which would terminate the thread).
template <typename Fn>
bool guarded(Fn&& fn, QString& message, bool* cancelled = nullptr) {
  try {
    fn();
    return true;
  } catch (const wkv::Error& e) {
    message = QString::fromUtf8(e.what());
    if (cancelled) *cancelled = e.code() == wkv::ErrorCode::cancelled;
  } catch (const std::bad_alloc&) {
    message = QObject::tr("Out of memory: the model or its context does not fit in the available memory.");
  } catch (const std::exception& e) {
    message = QString::fromUtf8(e.what());
  }
  return false;
}

}  // namespace engine_detail
