// The interface between a Session and a backend (CPU reference, CUDA).
//
// A SessionState owns one context's KV cache and scratch memory on its backend. forward() runs
// tokens at positions pos0 … pos0+T−1, appends their keys/values to the cache, and writes logits:
// for every token ([T][vocab]) when all_logits, else only for the last one ([vocab]).
// Positions ≥ pos0 already in the cache are simply overwritten, which is how a Session truncates.
#pragma once

#include <memory>

#include "wkv/engine.h"

namespace wkv {

struct SessionState {
  virtual ~SessionState() = default;
  virtual void forward(const TokenId* tokens, int T, int pos0, float* logits, bool all_logits) = 0;
};

std::unique_ptr<SessionState> make_cpu_session_state(const Model& model, int n_ctx);

}  // namespace wkv
