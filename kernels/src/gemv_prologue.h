// The decode-step inputs that W4 GEMVs compute in their x staging instead of a separate kernel (variants A and
// F): what each prologue reads, shared by both kernels' launch code (internal).
#pragma once

namespace wkv::kernels::detail {

enum class Prologue { none, add_rmsnorm, swiglu };

struct PrologueArgs {
  const float* res = nullptr;     // add_rmsnorm: x = rmsnorm(res + r) ⊙ weight, residual stream res
  const float* r = nullptr;       //   the linear output added to it
  const float* weight = nullptr;  //   the norm's weight
  float eps = 0.0f;
  float* res_out = nullptr;  //   res + r, written by block 0 (never aliases res or r)
  const float* u = nullptr;  // swiglu: x = silu(gate) ⊙ u, gate is the kernel's x argument
};

inline PrologueArgs add_rmsnorm_prologue(const float* res, const float* r, const float* weight, float eps,
                                         float* res_out) {
  PrologueArgs p;
  p.res = res;
  p.r = r;
  p.weight = weight;
  p.eps = eps;
  p.res_out = res_out;
  return p;
}

inline PrologueArgs swiglu_prologue(const float* u) {
  PrologueArgs p;
  p.u = u;
  return p;
}

}  // namespace wkv::kernels::detail
