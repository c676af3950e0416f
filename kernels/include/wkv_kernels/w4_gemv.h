// W4 GEMV for decode: y[b][row] = Σ_c x[b][c] · w'(row, c) with FP32 activations and FP32 accumulation.
//
// Weights use the W4 storage format of engine/src/quant_formats.h (the spec), as device pointers:
//   qweight [rows][cols/8] uint32 (interleaved nibbles), scales / zeros [rows][cols/group] FP16 bits,
//   w'(row, c) = (q − z)·h.
// x: FP32 [B][cols] (row-major, batch stride cols), y: FP32 [B][rows] (batch stride rows). Device memory.
//
// Supported shapes: every valid W4 shape (rows ≥ 1, group ≥ 8, group % 8 == 0, cols % group == 0) and
// any B ≥ 1 (launched in batches of ≤ 8). Two paths:
//   fast    cols % 32 == 0, group % 32 == 0, cols ≤ 32768, qweight and x 16-byte aligned: one block of
//           16 warps per SM; each warp owns a balanced contiguous range of rows and takes them 2 at a
//           time, lane l streaming the 16-byte chunks l, l + 32, … (32 channels each) of both rows with
//           L1-bypassing loads, the next step's loads in flight while the current step computes. x is
//           staged once per block in shared memory (B rows per launch as fit: all 8 up to cols 7264 in
//           FP32, fewer beyond, split evenly). Three math variants (kernels/src/w4_gemv_variant.h):
//             A  FP32: (q − z) exact, widened to FP32, FFMA with FP32 x; an FP32 dot product of the exact
//                dequantized weights (rel L2 vs FP64 ~1e-7).
//             B  half2: x rounded to FP16 (power-of-two scale per 32 channels), HFMA2 over 8 channels per
//                FP16 lane, FP32 beyond; rel L2 vs FP64 ~5e-4, fewer instructions per byte.
//             C  tensor cores (w4_gemv_tc.cu, its own work split): mma.sync m16n8k16 with 16 weight rows
//                × 8 batch columns, x as FP16 (one power-of-two scale per batch row), FP32 accumulation;
//                rel L2 vs FP64 ~2–4e-4; all of B = 1 … 8 in one launch while 8 FP16 rows of x fit
//                (cols ≤ ~13900 on an H200), fewer beyond.
//             D, E  experimental sm_90 designs (w4_gemv_variant.h).
//             F  the packed layout (wkv_kernels/w4_gemv_packed.h), used when the weights carry a packed copy
//                (the default: the caller packs when w4_gemv_wants_packed says so; without a packed copy, on
//                devices before sm_90 or for more than 2 batch rows, A runs).
//           The environment variable WKV_W4_GEMV_VARIANT = A … F (read once per process) selects the
//           variant; unset or empty = F. Any other value makes w4_gemv throw wkv::Error.
//   generic anything else valid: one warp per row, one word (8 weights) per lane step. Correct but slower;
//           FP32 math like A.
// Invalid shapes / null pointers throw wkv::Error(invalid_argument). The launch is asynchronous on
// `stream`; CUDA errors throw std::runtime_error (cuda_check.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "wkv_kernels/l2_prefetch.h"

namespace wkv::kernels {

// The kernel launched just before a W4 GEMV in its stream, as far as programmatic dependent launch cares:
// w4_gemv, a packed W4 GEMV (F), which lets its dependents launch at its start, one block per SM whose shared
// memory keeps the next F block off that SM until it exits; kv4_attention, the streaming KV4 decode
// attention, which lets them launch once its last wave is resident; other, anything else (or unknown).
enum class W4Predecessor : uint8_t { other, w4_gemv, kv4_attention };

struct W4DeviceWeights {
  int rows = 0;
  int cols = 0;
  int group = 0;
  const uint32_t* qweight = nullptr;  // [rows][cols/8]
  const uint16_t* scales = nullptr;   // [rows][cols/group] FP16 bits
  const uint16_t* zeros = nullptr;    // [rows][cols/group] FP16 bits
  // Optional, for variant F: the same weights in the packed decode layout (wkv_kernels/w4_gemv_packed.h).
  // When set and F is the selected variant, w4_gemv and the fused decode entry points below run the packed
  // kernel; otherwise it is ignored. With qweight, scales and zeros all null the packed copy is the only one
  // ("packed-only"): every entry point then runs F (group 128, sm_90).
  const void* packed = nullptr;
  // Optional hint for variant F (a hint: results never depend on it): the data the kernel after this one
  // reads, typically the next linear's records (w4_packed_prefetch_region); each thread block requests the
  // start of its piece into L2 once its own last weights are requested, so the next launch's first chunks can
  // come from L2 instead of after a full HBM latency (WKV_W4_NEXT_PREFETCH in the engine).
  L2PrefetchRegion next_l2;
  // Optional, for variant F: the kernel before this launch in the stream, where it lets its dependents launch
  // early without crowding itself (W4Predecessor). Only WKV_W4_PACKED_PDL=F1 / F2 / A1 / A2 (an experiment)
  // read it: such launches then use programmatic dependent launch. Results never depend on it.
  W4Predecessor predecessor = W4Predecessor::other;
};

// Throws wkv::Error(invalid_argument) naming `what` unless w is a valid W4 shape with non-null arrays.
void validate_w4_device(const W4DeviceWeights& w, const char* what);

// True when w4_gemv takes the fast path for these weights and this x pointer.
bool w4_gemv_fast_path(const W4DeviceWeights& w, const float* x);

// True when variant F is selected (WKV_W4_GEMV_VARIANT=F) and this device runs it for weights of this shape:
// the caller should then keep a packed copy (w4_pack) and pass it in W4DeviceWeights::packed.
bool w4_gemv_wants_packed(int rows, int cols, int group);

// y[B][rows] = x[B][cols] · W'ᵀ.
void w4_gemv(const W4DeviceWeights& w, const float* x, int B, float* y, cudaStream_t stream = 0);

// ---- decode-step fusions (one token): the linear's input is computed in the GEMV's x staging, while its
// first weights are already streaming, instead of by a separate kernel launch.
//
// y = W'·(rmsnorm(res + r) ⊙ norm_weight) and res_out = res + r (FP32 adds, bit-exact), eps as in
// add_rmsnorm_f32; the norm's sum of squares runs in another order (≤ 1 ulp from add_rmsnorm_f32).
// res_out must alias neither res nor r (other blocks still read them while the first one writes res_out).
// input_scratch (cols floats) is used only when the fused kernel cannot run — see w4_gemv_fuses_prologue —
// and then the separate kernels run (copy, add_rmsnorm_f32, w4_gemv).
void w4_gemv_add_rmsnorm(const W4DeviceWeights& w, const float* res, const float* r, const float* norm_weight,
                         float eps, float* res_out, float* input_scratch, float* y, cudaStream_t stream = 0);
// y = W'·(silu(g) ⊙ u), bit-identical to swiglu() followed by w4_gemv(). g may be overwritten (the
// unfused fallback runs swiglu in place).
void w4_gemv_swiglu(const W4DeviceWeights& w, float* g, const float* u, float* y, cudaStream_t stream = 0);
// True when the two above run as one kernel for these weights: variant F with a packed copy, or variant A (the
// default) on a fast-path shape with, for add_rmsnorm, cols ≤ 8192 (the row is held in registers). 16-byte
// aligned vectors are also required (cudaMalloc memory is).
bool w4_gemv_fuses_prologue(const W4DeviceWeights& w, bool add_rmsnorm);

}  // namespace wkv::kernels
