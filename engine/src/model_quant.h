// Applying a quantization mode to loaded weights, and weight memory accounting.
#pragma once

#include "model_loader.h"
#include "wkv/quant.h"

namespace wkv {

// Turns `m` into the weights `mode` computes with (see wkv/quant.h):
//   floating-point checkpoint: W4 modes quantize every block linear by round-to-nearest (group
//   `weight_group`, or per-channel for w4a4) and drop the dense copy; w4a4 marks linear inputs for
//   per-token 4-bit; w4kv4 is refused (it needs calibrated parameters from a .wkvq file).
//   .wkvq: the weights are already W4; modes that need dense weights are refused, w4kv4-rtn drops the
//   KV smoothing (only for files whose weights are RTN), w4 keeps a full-precision KV cache.
// Throws wkv::Error(invalid_argument / unsupported) naming the mode and what is needed.
void apply_quant_mode(LoadedModel& m, QuantMode mode, int weight_group);

// The mode a model is in by default: fp16 for floating-point checkpoints, w4kv4 for .wkvq files.
QuantMode default_quant_mode(const ModelInfo& info);

// Weight bytes in the storage format vs FP16, whole model and per layer (MemoryStats's weight fields).
MemoryStats weight_memory_of(const ModelInfo& info, const CpuModelWeights& w, QuantMode mode);

}  // namespace wkv
