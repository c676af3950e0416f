// Backend choice for a Model, and the CUDA entry points' stubs (backend, calibrator) for builds without CUDA.
#include "cuda/calib_cuda.h"
#include "cuda_backend.h"

namespace wkv {

#if !defined(WKV_HAVE_CUDA)
bool cuda_can_run(const ModelInfo&, QuantMode, int, std::string* why) {
  if (why) *why = "this build has no CUDA backend (configure with a CUDA toolkit, WKV_CUDA=ON)";
  return false;
}
std::shared_ptr<BackendWeights> upload_cuda_weights(const Model&) {
  throw Error(ErrorCode::unsupported, "this build has no CUDA backend");
}
std::unique_ptr<SessionState> make_cuda_session_state(const Model&, const SessionOptions&, int) {
  throw Error(ErrorCode::unsupported, "this build has no CUDA backend");
}
bool cuda_device_memory(std::string*, int64_t*, int64_t*) { return false; }
bool cuda_copy_bandwidth(double*, std::string* why) {
  if (why) *why = "this build has no CUDA backend";
  return false;
}

namespace calib {
bool cuda_calibration_available(std::string* why) {
  if (why) *why = "this build has no CUDA support (configure with a CUDA toolkit, WKV_CUDA=ON)";
  return false;
}
CalibrationResult calibrate_wkvquant_cuda(const ModelInfo&, const CpuModelWeights&,
                                          const std::vector<std::vector<TokenId>>&, const CalibrationConfig&,
                                          const CudaCalibOptions&) {
  throw Error(ErrorCode::unsupported, "GPU calibration unavailable: this build has no CUDA support");
}
void cuda_block_forward_backward(const BlockShape&, const LayerWeights&, const BlockQuantParams*, const float*, int,
                                 const float*, std::vector<float>*, std::vector<float>*, BlockQuantParams*,
                                 BlockTape*) {
  throw Error(ErrorCode::unsupported, "GPU calibration unavailable: this build has no CUDA support");
}
}  // namespace calib
#endif

}  // namespace wkv
