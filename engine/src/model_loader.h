// Loaders: files on disk → ModelInfo + CpuModelWeights + Tokenizer.
//
//   HF directory:  config.json, model.safetensors or model.safetensors.index.json (+ shards),
//                  tokenizer.model
//   llama2.c:      <name>.bin (legacy v0: 7 × int32 header then FP32 weights; v1: "ak42" magic, 256-byte
//                  header), tokenizer .model beside it
// Every mismatch (missing tensor, wrong shape, unsupported dtype, truncated file) is a wkv::Error that
// names the file and the tensor or field.
#pragma once

#include <memory>
#include <string>

#include "cpu_weights.h"
#include "safetensors.h"
#include "wkv/engine.h"

namespace wkv {

struct LoadedModel {
  ModelInfo info;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<CpuModelWeights> weights;
};

LoadedModel load_hf_model(const std::string& dir, const LoadOptions& options);
LoadedModel load_llama2c_model(const std::string& path, const LoadOptions& options);

// A tensor of `file` converted to FP32, after checking its shape (error names file, tensor, both shapes).
std::vector<float> tensor_to_f32(const TensorView& t, const std::string& file, const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);

// Interleaved-RoPE rows (pairs (2j, 2j+1) per head) → half-split rows (pairs (j, j + D/2)), as the
// Hugging Face conversion script does: new row p·D/2 + j of each head = old row 2j + p.
void permute_rope_rows_to_half_split(Linear& w, int n_heads, int head_dim);

}  // namespace wkv
