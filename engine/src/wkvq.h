// The .wkvq model file: one safetensors container holding a W4 model ready for inference.
//
// Tensors (names follow the Hugging Face checkpoint they came from):
//   model.embed_tokens.weight                F16 [vocab][dim]
//   model.layers.{l}.input_layernorm.weight  F16 [dim]      (and post_attention_layernorm)
//   model.layers.{l}.{self_attn.q_proj,…,mlp.down_proj}.qweight   U32 [out][in/8]   (W4 words,
//                                            interleaved nibbles: quant_formats.h)
//                                         .scales  F16 [out][in/g]   .zeros  F16 [out][in/g]
//   model.layers.{l}.self_attn.kv_smooth.{k_delta,k_scale,v_delta,v_scale}  F32 [H_kv·D]
//                                            (absent = identity smoothing)
//   model.norm.weight                        F16 [dim]
//   lm_head.weight                           F16 [vocab][dim]  (absent when tied)
//   tokenizer.model                          U8 [bytes]        (the SentencePiece model)
// __metadata__ (all strings, JSON where noted):
//   format = "wkvq", format_version = "1", config (JSON, HF config.json fields), quantization (JSON:
//   method, weight_group, kv_group, weight_format, kv_format), provenance (JSON: source path and
//   SHA-256, tool version, creation time, calibration data and settings, losses).
// Loading validates the version, every shape and size, and the smoothing values, and refuses anything
// else with a wkv::Error naming the file and the tensor/field.
#pragma once

#include <string>

#include "json.h"
#include "model_loader.h"

namespace wkv {

constexpr int kWkvqFormatVersion = 1;

struct WkvqMeta {
  std::string method;      // "rtn", "stats", "wkvquant"
  int weight_group = 128;
  int kv_group = 0;        // 0 = head_dim
  json::Value provenance;  // object
};

// Writes a model whose block linears are all W4 (throws invalid_argument otherwise).
void save_wkvq(const std::string& path, const ModelInfo& info, const CpuModelWeights& w, const Tokenizer& tok,
               const WkvqMeta& meta);

LoadedModel load_wkvq(const std::string& path, const LoadOptions& options);

// HF-style config.json fields for a ModelInfo (read back by parse_llama_config).
json::Value model_config_json(const ModelInfo& info);

}  // namespace wkv
