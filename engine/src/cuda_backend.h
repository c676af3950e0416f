// The CUDA backend behind the same SessionState interface as the CPU reference (backend.h).
//
// What runs on the GPU: every mode for head_dim 64 or 128 — the 4-bit KV modes (kv4, w4kv4, w4kv4-rtn,
// w4kv4-nopoq, w4a4 with its activations fake-quantized on the device) over a paged KV4 cache, fp16 and w4
// over a paged FP16 cache. Other head dims run on the CPU and Model::backend_notice() says why. Builds
// without CUDA compile the stubs in backend_select.cpp.
#pragma once

#include <memory>
#include <string>

#include "backend.h"

namespace wkv {

// Whether this build and machine can run `model` on the GPU; `why` says why not.
bool cuda_can_run(const ModelInfo& info, QuantMode mode, int kv_group, std::string* why);

// Uploads the model's weights (W4 codes, FP16 dense weights/embeddings/head, FP32 norms and
// smoothing) once; shared by all sessions of the model.
std::shared_ptr<BackendWeights> upload_cuda_weights(const Model& model);

std::unique_ptr<SessionState> make_cuda_session_state(const Model& model, const SessionOptions& options, int n_ctx);

// Device name and memory (cudaMemGetInfo), for stats; false without a device.
bool cuda_device_memory(std::string* name, int64_t* used, int64_t* total);

// The device's measured copy bandwidth (bytes read + written per second, a 512 MiB cudaMemcpy); false
// without a device or when the measurement fails (`why` says what happened).
bool cuda_copy_bandwidth(double* bytes_per_second, std::string* why);

}  // namespace wkv
