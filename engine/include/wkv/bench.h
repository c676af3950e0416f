// Throughput benchmark of a model on its backend (`wkv bench`), in the spirit of llama-bench:
// for each context depth, fill the context with `depth` tokens, then time a prefill of `prompt` tokens
// and a decode of `gen` tokens. Figures are medians over `repeats` runs; the bytes a decode step must
// read (weights in their storage format + the KV cache at that depth) give the achieved bandwidth.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "wkv/engine.h"

namespace wkv {

struct BenchOptions {
  int prompt = 512;               // prefill tokens (0 = skip)
  int gen = 128;                  // decode tokens (0 = skip)
  std::vector<int> depths = {0};  // context already filled before the timed part
  int repeats = 3;
  // One untimed run per depth first (the prompt's prefill and 2 decode steps): the first use of every kernel
  // (lazy module loading), cuBLAS's first calls and the decode graph's capture are not what is measured.
  bool warmup = true;
  uint64_t seed = 1;              // for the random token ids
  std::function<void(const std::string&)> log;  // progress lines
};

struct BenchRow {
  int depth = 0;
  double prefill_tokens_per_second = 0;
  double decode_tokens_per_second = 0;
  int64_t decode_bytes_per_token = 0;  // weights + KV read at this depth (storage formats)
  double decode_gb_per_second = 0;     // decode_bytes_per_token × decode tok/s
  int64_t kv_bytes = 0;                // KV cache in use at the end of the run
  int64_t kv_bytes_fp16 = 0;
};

// Runs the benchmark; throws Error(invalid_argument) if depth + prompt + gen exceeds the context.
std::vector<BenchRow> run_bench(std::shared_ptr<const Model> model, const BenchOptions& options);

// The WKV_* environment variables set in this process ("NAME=value", sorted): the engine's experiment and
// measurement switches (WKV_W4_CHAIN, WKV_KV4_ATTN, WKV_DECODE_SKIP, …), so that a figure says what produced it.
std::vector<std::string> engine_switches();

// Host memory copy bandwidth (bytes read + written per second), measured with a large memcpy.
double measure_host_copy_bandwidth();

// The copy bandwidth of the memory a decode step of `model` streams: the GPU's device-to-device copy for
// the CUDA backend, else the host's (bytes read + written per second). `source` says which was measured
// (e.g. "device NVIDIA H200", or "host" with the reason the device could not be measured).
double measure_copy_bandwidth(const Model& model, std::string* source);

}  // namespace wkv
