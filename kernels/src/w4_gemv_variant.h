// Internal: the four math variants of the W4 GEMV fast path, for tests and the benchmark (not part of the
// public launch API in wkv_kernels/w4_gemv.h, which picks one through WKV_W4_GEMV_VARIANT).
//
//   fp32  ("A")  (q − z) exact in FP16 → widened to FP32 → FFMA with FP32 x; per 32-channel chunk the
//                partial sum is scaled by h. An FP32 dot product of the exactly dequantized weights:
//                |y − ref| ≤ (cols/32 + 64)·2^-24·Σ|w'x|, rel L2 typically ~1e-7 (budget 1e-5).
//   half2 ("B")  x converted once per block to FP16 with a power-of-two scale per 32-channel chunk
//                (chunk max |x| scaled into [2, 4)), HFMA2 of (q − z)·x̂ over 8 channels per FP16 lane,
//                then FP32 (× h × 2^-e of the chunk). Rounding: x̂ (2^-11 relative) and ≤ 8 FP16 FMA
//                roundings per partial sum: |y − ref| ≲ 10·2^-11·Σ|w'x|, rel L2 typically ~3e-4
//                (budget 2e-3). Fewer instructions per weight byte than fp32 (see w4_gemv.cu).
//   tc    ("C")  tensor cores (w4_gemv_tc.cu): mma.sync m16n8k16, 16 weight rows × 8 batch columns, FP32
//                accumulators over the whole row. x rounded to FP16 once per block after one power-of-two
//                scale per batch row (row max |x| into [2^14, 2^15), undone exactly at the end); weights
//                exact (q − z) in FP16, scaled by h in FP32 after the mma when group % 128 == 0, else
//                rounded once to FP16 as (q − z)·h (then |w'| < 65504 is required). Per element:
//                |y − ref| ≤ (2^-10 + (cols/16 + 64)·2^-22)·Σ|w'x| + 2^-36·max|x[b]|·Σ|w'|
//                (x and w rounding 2^-11 each; tensor-core accumulation, which may truncate, ≤ 2^-22 of
//                Σ|w'x| per mma or add; FP16 subnormals of x̂: ≤ 2^-39·max|x[b]| absolute per x),
//                rel L2 typically ~2–4e-4 (budget 2e-3). ~3 instructions per weight byte, B = 1 … 8
//                in one launch at the same instruction cost.
//   bulk  ("D")  (w4_gemv_bulk.cu, sm_90) weights streamed by cp.async.bulk into a shared-memory ring,
//                math as C but x as two FP16 columns hi = fp16(x̂), lo = fp16(x̂ − hi) (22 significant
//                bits), up to 4 batch rows per launch. group % 128 == 0 (exact weights):
//                |y − ref| ≤ (2^-20 + (cols/16 + 64)·2^-22)·Σ|w'x| + 2^-36·max|x[b]|·Σ|w'|;
//                otherwise the weights are rounded once as in C: C's bound. Devices before sm_90 run A.
//   lean  ("E")  (w4_gemv_lean.cu) C's tensor-core math with D's hi + lo x, weights through registers in a
//                loop cut to the fewest instructions per byte; cols % 128 == 0 and group = 128·2^k only
//                (other shapes run A). D's bound for exact weights.
//   packed ("F") (w4_gemv_packed.cu, sm_90) the packed decode layout, 8-bit integer tensor cores against x as
//                four 8-bit digits per group; needs the weights' packed copy (W4DeviceWeights::packed),
//                else A runs. Bound in wkv_kernels/w4_gemv_packed.h.
#pragma once

#include <cuda_runtime.h>

#include "wkv_kernels/w4_gemv.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace wkv::kernels::detail {

enum class W4GemvVariant { fp32, half2, tc, bulk, lean, packed };

// "A" / "B" / "C" / "D" / "E" / "F".
const char* w4_gemv_variant_name(W4GemvVariant v);

// The variant w4_gemv uses: WKV_W4_GEMV_VARIANT = A (fp32), B (half2), C (tc), D (bulk), E (lean) or F (packed), read once per
// process; unset or empty means the default (F, which runs A where it cannot run). Any other value throws
// wkv::Error(invalid_argument).
W4GemvVariant w4_gemv_default_variant();

// w4_gemv with an explicit fast-path variant (the generic path, when taken, is the same for all).
void w4_gemv_with_variant(const W4DeviceWeights& w, const float* x, int B, float* y, W4GemvVariant v,
                          cudaStream_t stream = 0);

// Variant F once (B = 1) with per-block phase timestamps (%globaltimer, ns) written to trace
// [blocks][8]: start, barriers ready, first x values in (warp 0), x staged, first record in, loop done, warps
// reduced, end. Returns the block count. For the benchmark's breakdown; trace needs #SMs × 8 entries.
int w4_gemv_packed_trace(const W4PackedView& w, const float* x, float* y, unsigned long long* trace,
                         cudaStream_t stream = 0);

}  // namespace wkv::kernels::detail
