// Backend choice for a Model, and the CUDA entry points' stubs for builds without CUDA.
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
#endif

}  // namespace wkv
