// Model::load: dispatch on the path's kind, then pick the backend.
#include <filesystem>
#include <thread>

#include "backend.h"
#include "cpu_weights.h"
#include "cuda_backend.h"
#include "model_loader.h"
#include "model_quant.h"
#include "quant_formats.h"
#include "wkvq.h"

namespace fs = std::filesystem;

namespace wkv {

const char* backend_name(BackendKind b) {
  switch (b) {
    case BackendKind::automatic: return "auto";
    case BackendKind::cpu: return "cpu";
    case BackendKind::cuda: return "cuda";
  }
  return "?";
}

Model::Model(ModelInfo info, std::unique_ptr<Tokenizer> tok, std::unique_ptr<CpuModelWeights> w,
             const LoadOptions& options)
    : info_(std::move(info)), tokenizer_(std::move(tok)), weights_(std::move(w)) {
  chat_template_ = options.chat_template ? *options.chat_template : default_chat_template(info_.name);
  n_threads_ = options.n_threads > 0 ? options.n_threads
                                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  mode_ = options.mode ? *options.mode : default_quant_mode(info_);
  kv_group_ = options.kv_group > 0 ? options.kv_group : (info_.kv_group > 0 ? info_.kv_group : info_.head_dim);
  if (quant_spec(mode_).kv4) validate_kv4_shape(info_.head_dim, kv_group_, "KV cache (--kv-group)");
  std::string why;
  const bool gpu_ok = options.backend != BackendKind::cpu && cuda_can_run(info_, mode_, kv_group_, &why);
  if (options.backend == BackendKind::cuda && !gpu_ok)
    throw Error(ErrorCode::unsupported, "the CUDA backend was requested but cannot run this model: " + why);
  backend_ = gpu_ok ? BackendKind::cuda : BackendKind::cpu;
  if (gpu_ok) {
    backend_weights_ = upload_cuda_weights(*this);
    int64_t used = 0, total = 0;
    cuda_device_memory(&device_name_, &used, &total);
  } else if (options.backend == BackendKind::automatic) {
    backend_notice_ = why;
  }
}

Model::~Model() = default;

std::shared_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(ErrorCode::not_found, path + ": no such file or directory");
  LoadedModel m;
  if (fs::is_directory(path, ec)) {
    m = load_hf_model(path, options);
  } else if (fs::path(path).extension() == ".wkvq") {
    m = load_wkvq(path, options);
  } else if (fs::path(path).extension() == ".safetensors" || fs::path(path).filename() == "config.json") {
    m = load_hf_model(fs::path(path).parent_path().string(), options);
  } else {
    m = load_llama2c_model(path, options);
  }
  const QuantMode mode = options.mode ? *options.mode : default_quant_mode(m.info);
  apply_quant_mode(m, mode, options.weight_group);
  LoadOptions resolved = options;
  resolved.mode = mode;
  return std::make_shared<Model>(std::move(m.info), std::move(m.tokenizer), std::move(m.weights), resolved);
}

MemoryStats Model::weight_memory() const {
  MemoryStats s = weight_memory_of(info_, *weights_, mode_);
  const int64_t device = backend_weights_ ? backend_weights_->resident_bytes() : -1;
  if (device >= 0) s.backend_weight_bytes = device;
  return s;
}

}  // namespace wkv
