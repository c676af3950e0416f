// Synthetic checkpoints with real shapes and random weights, for timing (`wkv synth`). They produce
// meaningless text; their speed is the speed of a real model of the same shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace wkv {

struct SynthShape {
  std::string name;
  int dim, n_layers, n_heads, n_kv_heads, ffn, vocab, max_context;
};

// Known shapes: llama2-7b, llama2-13b, llama3-8b (GQA), tiny (a few MB, for tests).
const std::vector<SynthShape>& synth_shapes();
const SynthShape& synth_shape(const std::string& name);  // throws invalid_argument listing the names

struct SynthOptions {
  std::string tokenizer_path;  // a SentencePiece model whose vocabulary size ≤ shape.vocab
  uint64_t seed = 1;
  bool wkvq = false;           // write a W4 .wkvq file (random codes) instead of an FP16 HF directory
  int weight_group = 128;
};

// Writes `out`: an HF directory (config.json, model-0000N.safetensors shards + index, tokenizer.model),
// or with wkvq a single .wkvq file. Weights ~ N(0, 0.02) (FP16); norms 1.
void write_synthetic_model(const SynthShape& shape, const std::string& out, const SynthOptions& options);

}  // namespace wkv
