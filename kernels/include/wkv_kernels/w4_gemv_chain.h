// A run of one-token W4 GEMVs in one persistent launch (variant F's math, wkv_kernels/w4_gemv_packed.h).
//
// Why. A decode token runs 4 linears per layer, each a launch of the packed GEMV F whose blocks stream their
// weights through a ring of shared-memory slots. Every launch boundary costs: the launch itself, the blocks'
// start-up (barriers, x staging), the ring fill before the first record lands (~5 µs, an SM's share of HBM
// bandwidth fills ~170 KB), and the tail while the slowest block finishes. In session 6's kernel bench that
// is ~6 µs per launch over 129 launches, the difference between 1.6 ms of linears per token and the 0.86 ms
// the weight bytes need. Programmatic dependent launch could overlap only part of it and slowed the decode
// step (docs/kernel-notes.md). Here one block per SM runs the whole run of linears: its producer thread
// streams the weights of every linear back to back (weights do not depend on activations, so the ring keeps
// filling across the boundaries), and only the consumer warps wait, at each boundary, until every block has
// written the previous linear's output (a counter in global memory per linear).
//
// Semantics: op i reads its inputs after ops 0 … i − 1 have completed (in every block) and writes y; the
// outputs are those of the single-launch entry points (w4_gemv_packed, _add_rmsnorm, _swiglu) up to the order
// of the per-row sums (the chain's block ranges may differ from a single launch's), so within F's error
// budget. An op's inputs may be earlier ops' outputs, and a later op may overwrite a buffer an earlier op
// read (every read of op i happens before op i signals completion: the decode step reuses h, g and the
// residual buffers so); an op's y must not alias its own inputs.
//
// Requirements: every op's weights are packed (group 128) with cols ≤ the staged-x limit, compute capability
// ≥ 9.0, B = 1, 1 … kW4ChainMaxOps ops (w4_gemv_chain_supported), vectors 16-byte aligned, and `counters`:
// kW4ChainCounters zeroed unsigned ints of device memory that this launch leaves zeroed again, used by one
// launch at a time (the engine keeps one set per session). Every block must be resident at once (one per SM,
// grid ≤ the SM count): the launch is cooperative, so the runtime guarantees it (and refuses a grid that
// cannot fit) instead of the caller; WKV_W4_CHAIN_COOP=0 makes it a plain launch, for A/B timing only — a
// plain launch must not run concurrently with a kernel that holds SMs until something else happens, such as
// another chain on another stream, where each could hold part of the SMs and wait for the rest.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "wkv_kernels/w4_gemv_packed.h"

namespace wkv::kernels {

constexpr int kW4ChainMaxOps = 4;
constexpr int kW4ChainCounters = kW4ChainMaxOps + 1;

enum class W4ChainInput {
  plain,        // x
  add_rmsnorm,  // rmsnorm(res + r) ⊙ norm_weight, res_out = res + r (written once)
  swiglu,       // silu(x) ⊙ u
};

struct W4ChainOp {
  W4PackedView w;
  W4ChainInput input = W4ChainInput::plain;
  const float* x = nullptr;                                          // plain: the input; swiglu: the gate
  const float* u = nullptr;                                          // swiglu: up
  const float *res = nullptr, *r = nullptr, *norm_weight = nullptr;  // add_rmsnorm
  float eps = 0.0f;
  float* res_out = nullptr;
  float* y = nullptr;  // [w.rows]
};

// True when this device runs these ops as one chain launch (shapes, count; pointers are checked at launch).
bool w4_gemv_chain_supported(const W4ChainOp* ops, int n_ops);

// Runs ops[0 … n_ops) in order, in one launch on `stream`. Throws wkv::Error (invalid_argument, naming the op
// and field) for unsupported shapes, null or misaligned pointers, or aliasing outputs.
void w4_gemv_chain(const W4ChainOp* ops, int n_ops, unsigned int* counters, cudaStream_t stream = 0);

}  // namespace wkv::kernels
