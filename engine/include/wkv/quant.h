// Quantization modes and memory accounting (public API).
//
// Modes (DESIGN.md, "Modes"):
//   fp16         dense weights, full-precision KV cache (the reference)
//   w4           4-bit weights (groups of g input channels), full-precision KV
//   kv4          dense weights, 4-bit KV cache (identity smoothing), POQ
//   w4kv4        WKVQuant: 4-bit weights with learned clipping + 4-bit KV with learned/statistical
//                smoothing + POQ — needs a calibrated .wkvq file
//   w4kv4-rtn    round-to-nearest 4-bit weights + 4-bit KV with identity smoothing, POQ
//   w4kv4-nopoq  like w4kv4 (or w4kv4-rtn for an FP16 model) but the current token's K/V are
//                quantized before attention uses them (the POQ ablation)
//   w4a4         per-channel RTN weights, per-token 4-bit on every linear's input, KV4 without POQ
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace wkv {

enum class QuantMode { fp16, w4, kv4, w4kv4, w4kv4_rtn, w4kv4_nopoq, w4a4 };

const char* quant_mode_name(QuantMode m);  // "fp16", "w4", "kv4", "w4kv4", "w4kv4-rtn", "w4kv4-nopoq", "w4a4"
// Throws wkv::Error(invalid_argument) listing the valid names.
QuantMode quant_mode_from_name(const std::string& name);
const std::vector<QuantMode>& all_quant_modes();

// What a mode does, spelled out.
struct QuantSpec {
  bool weights4 = false;     // linear weights in W4
  bool per_channel = false;  // W4 group = in (w4a4) instead of `weight_group`
  bool learned = false;      // use the model file's learned LWC / smoothing parameters
  bool kv4 = false;          // KV cache in KV4
  bool poq = false;          // past-only quantization (only meaningful with kv4)
  bool act4 = false;         // per-token 4-bit fake quantization of every linear's input
};
QuantSpec quant_spec(QuantMode m);

struct LayerMemory {
  int64_t weight_bytes = 0;       // this layer's linears in the mode's storage format
  int64_t weight_bytes_fp16 = 0;  // the same at FP16
  int64_t kv_bytes_used = 0;      // KV cache for the tokens in the context (scales included)
  int64_t kv_bytes_used_fp16 = 0;
};

// Memory in the mode's storage formats (what a deployment of this mode holds: FP16 for dense
// tensors, packed nibbles + FP16 scales for 4-bit ones), next to the FP16 equivalent, and what this
// backend actually has resident (the CPU reference computes in FP32, so it holds more).
struct MemoryStats {
  std::string backend;             // "cpu" / "cuda"
  std::string weight_format;       // e.g. "FP16", "W4 g128", "W4 per-channel"
  std::string kv_format;           // e.g. "FP16", "KV4 G128"
  int64_t weight_bytes = 0;        // whole model (embeddings, norms, head included)
  int64_t weight_bytes_fp16 = 0;
  int64_t kv_bytes_per_token = 0;  // all layers, K and V
  int64_t kv_bytes_per_token_fp16 = 0;
  int n_tokens = 0;                // tokens in the context
  int n_ctx = 0;                   // context capacity
  int64_t kv_bytes_used = 0;       // n_tokens × per token
  int64_t kv_bytes_used_fp16 = 0;
  int64_t kv_bytes_allocated = 0;  // n_ctx × per token
  int64_t kv_bytes_allocated_fp16 = 0;
  int64_t backend_weight_bytes = 0;  // resident in this backend
  int64_t backend_kv_bytes = 0;
  int64_t device_bytes_used = 0;     // cudaMemGetInfo (CUDA backend only; 0 on the CPU)
  int64_t device_bytes_total = 0;
  std::vector<LayerMemory> layers;
};

}  // namespace wkv
