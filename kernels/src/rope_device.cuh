// RoPE's per-pair arithmetic on the device (half-split convention: pair i < D/2 is (x_i, x_{i+D/2})), shared
// by every kernel that rotates — rope / rope_at (elementwise.cu), the decode step's fused rotation + KV
// append (kv4_append.cu, kv16_append.cu) and the KV4 decode attention's fused RoPE (kv4_decode_split.cuh) —
// so they all compute the same bits for the same input.
//
// Matching cpu::rope: inv_freq = 1 / theta^(2i/D) with the exponent the same float quotient as the reference
// and the power taken in double and rounded once to float (the correctly rounded powf value the host
// computes), so the angle pos·inv_freq is bit-identical to the reference's; large angles make that
// essential (1 ulp of inv_freq at pos 4096 would already move the angle by ~1e-3 rad). Products and sums are
// written with __fmul_rn / __fadd_rn / __fsub_rn so nvcc cannot contract them into FMAs; the only difference
// left against the host is sincosf (≤ 2 ulp).
#pragma once

#include <cuda_runtime.h>

namespace wkv::kernels::ropedev {

// cos and sin of pair i's angle at absolute position pos.
__device__ __forceinline__ void rope_cos_sin(int i, int head_dim, int pos, float theta, float& c, float& s) {
  const float expo = __fdiv_rn((float)(2 * i), (float)head_dim);
  const float p = (float)pow((double)theta, (double)expo);
  const float inv_freq = __fdiv_rn(1.0f, p);
  const float angle = __fmul_rn((float)pos, inv_freq);
  sincosf(angle, &s, &c);
}

// (a, b) = (x_i, x_{i+D/2}) ← (a·c − b·s, b·c + a·s), every product rounded on its own.
__device__ __forceinline__ void rope_rotate(float& a, float& b, float c, float s) {
  const float ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  const float rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  a = ra;
  b = rb;
}

// Pair i of the head x (x_i, x_{i+D/2}) rotated by the angle whose cos and sin are c, s, returned in a, b;
// x is not written.
__device__ __forceinline__ void rope_pair_cs(const float* x, int i, int head_dim, float c, float s, float& a,
                                             float& b) {
  a = x[i];
  b = x[i + head_dim / 2];
  rope_rotate(a, b, c, s);
}

// Pair i of the head x rotated for position pos, returned in a, b; x is not written.
__device__ __forceinline__ void rope_pair(const float* x, int i, int head_dim, int pos, float theta, float& a,
                                          float& b) {
  float c, s;
  rope_cos_sin(i, head_dim, pos, theta, c, s);
  rope_pair_cs(x, i, head_dim, c, s, a, b);
}

// Pair i of the head x rotated for position pos by the table cs = [cos of pairs 0 … D/2 − 1][sin of the same]
// that rope_table_at wrote for pos, or with the angle computed here when cs is null: the same bits either way
// (the table holds rope_cos_sin's values), but the table's angles are computed once per token instead of once
// per pair, head and layer (a double pow each).
__device__ __forceinline__ void rope_pair_at(const float* x, int i, int head_dim, int pos, float theta,
                                             const float* cs, float& a, float& b) {
  if (cs)
    rope_pair_cs(x, i, head_dim, cs[i], cs[head_dim / 2 + i], a, b);
  else
    rope_pair(x, i, head_dim, pos, theta, a, b);
}

// Pair i of the head x rotated in place for position pos (cs as rope_pair_at); the rotated values are also
// returned in a, b (the decode step's fused append quantizes or stores them next).
__device__ __forceinline__ void rope_pair_in_place(float* x, int i, int head_dim, int pos, float theta,
                                                   const float* cs, float& a, float& b) {
  rope_pair_at(x, i, head_dim, pos, theta, cs, a, b);
  x[i] = a;
  x[i + head_dim / 2] = b;
}

// Element d of the head x rotated by the angles of the table cs = [cos of pairs 0 … D/2 − 1][sin of the same]
// (rope_table_at's output for a position): the value rope_pair_in_place would leave at x[d] for that position
// (the decode attention's fused RoPE rotates q and k_cur where it reads them, without writing them back).
__device__ __forceinline__ float rope_element_cs(const float* x, int d, int head_dim, const float* cs) {
  const int half = head_dim / 2, i = d < half ? d : d - half;
  float a, b;
  rope_pair_cs(x, i, head_dim, cs[i], cs[half + i], a, b);
  return d < half ? a : b;
}

}  // namespace wkv::kernels::ropedev
