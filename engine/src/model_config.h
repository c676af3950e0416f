// Reading and validating a Hugging Face config.json for LlamaForCausalLM.
//
// Accepted: architectures ["LlamaForCausalLM"] (or model_type "llama"), hidden_act "silu", no attention
// or MLP bias, RoPE "default" given either as top-level `rope_theta` (transformers < 4.5x) or under
// `rope_parameters` (transformers ≥ 5), optional `head_dim` (defaults to hidden/heads), GQA through
// num_key_value_heads. Everything else — rope scaling (linear, dynamic, yarn, llama3 …), other
// architectures, sliding windows — is refused with wkv::Error(unsupported) naming the field, never
// silently run with the wrong math.
#pragma once

#include <string>

#include "json.h"
#include "wkv/engine.h"

namespace wkv {

// Fills the architecture fields of ModelInfo (not path/format/name/n_params). `source` names the file
// in error messages.
ModelInfo parse_llama_config(const json::Value& config, const std::string& source);

// Checks the invariants every backend relies on (positive sizes, D even, H divisible by H_kv, …).
void validate_model_info(const ModelInfo& info, const std::string& source);

// Parameter count of a LLaMA with these shapes (embeddings + blocks + norm + untied head).
int64_t llama_param_count(const ModelInfo& info);

}  // namespace wkv
