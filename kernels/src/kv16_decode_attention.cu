// Batch-1 decode attention over a paged FP16 KV cache: split-K ("flash-decoding").
//
// Split plan (computed on the device from the effective key count n, identically in every block):
//   splits = min(max_splits, ⌈n / kMinChunk⌉), chunk = ⌈n / splits⌉, splits = ⌈n / chunk⌉ (all non-empty).
// max_splits is the launch's grid.y: min(one wave of split blocks / (H_kv·Z), ⌈n_launch / kMinChunk⌉), with
// n_launch = n_cache (host path) or n_cache_max (device path). Since n ≤ n_launch, both paths get the same
// plan for the same n, hence bit-identical outputs; blocks of a device-path launch whose split is empty do no
// work (they only arrive at their group's counter, below) and the combine reads only the plan's splits.
//
// One kernel (split + fused combine): grid (Z, max_splits, H_kv), 128 threads. Block (z, s, kvh) reads keys
// [s·chunk, min(n, (s+1)·chunk)) of KV head kvh once and serves NH = gq/Z query heads of it (gq = H/H_kv).
//   A key's D FP16 values are contiguous (head-major pages), D/8 16-byte chunks: lane p = tid % (D/8) of
//   key group g = tid / (D/8) loads chunk p (channels 8p … 8p+7) of keys g, g + KPI, … (KPI = 128/(D/8)), so
//   a warp's load instruction reads whole 256-byte (D = 128) key rows. A tile is U = 8 such rounds
//   (TK = 8·KPI keys: 64 at D = 128, 128 at D = 64); each thread issues its 8 K and 8 V loads of a tile
//   before computing (256 B per thread, 32 KB per block in flight). Scores: per-chunk partial dots with q/√D
//   (registers), summed over the D/8 lanes of a key by xor shuffles (every lane ends with the same bits).
//   Softmax is online per thread over the thread's own keys (the same keys it loads V for), so a tile needs
//   no block-wide reduction; the threads' (m, l, acc) are merged once at the end of the split through shared
//   memory. Page-table lookups for tile t+1 are issued during tile t into a double-buffered shared array of
//   row indices.
// Combine (split_combine.cuh: workspace layout, memory ordering): block (z, s, kvh) arrives at counter
// (kvh·gq + z·NH)/NH once its partials are stored; the last of the group's max_splits blocks merges the
// splits of its NH heads with the arithmetic of the former combine kernel (D threads per head):
//   out = Σ_s w_s acc_s / Σ_s w_s l_s, w_s = e^{m_s − M}, M = max_s m_s (zeros when n = 0).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "split_combine.cuh"
#include "wkv_kernels/kv16_decode_attention.h"

namespace wkv::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kMinChunk = 64;      // keys per split at least (except the plan's last split)
constexpr int kRounds = 8;         // U: 16-byte loads of K (and of V) per thread per tile
constexpr int kCombineTile = 128;  // splits whose weights the combine stages per step
constexpr int kCombinePass = 4;    // heads a combine thread merges at a time: all (NH ≤ 4), no spills (ptxas -v)

// Effective key count: the device value (clamped to [0, n_max]) on the graph path, else the host value.
__device__ __forceinline__ int effective_n(int n_cache, const int32_t* n_dev, int n_max) {
  const int n = n_dev ? *n_dev : n_cache;
  return max(0, min(n, n_max));
}

// The split plan (see the file comment). splits = 0 iff n = 0.
__device__ __forceinline__ void split_plan(int n, int max_splits, int& splits, int& chunk) {
  splits = min(max_splits, (n + kMinChunk - 1) / kMinChunk);
  if (splits < 1) {
    splits = 0;
    chunk = 1;
    return;
  }
  chunk = (n + splits - 1) / splits;
  splits = (n + chunk - 1) / chunk;
}

// 8 FP16 values (one 16-byte chunk) as FP32 (exact).
__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __half22float2(half2_from_bits(w[i]));
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

// The end of every split block (after its partial stores; at once for an empty split): arrive at the group's
// counter; the last of the group's gridDim.y blocks merges the plan's `splits` splits of heads h0 … h0 + NH − 1
// (the workspace stride is max_splits) into out. scratch: the kernel's red array.
template <int D, int NH>
__device__ __forceinline__ void finish_group(int splits, int max_splits, int h0, const float* ws_ml,
                                             const float* ws_acc, unsigned int* counters, float* scratch,
                                             float* out) {
  if (!arrive_last(counters + h0 / NH, gridDim.y)) return;
  combine_group<D, NH, kThreads, kCombineTile, kCombinePass>(
      ws_ml, ws_acc, h0, max_splits, splits, false, [](int, int) { return 0.0f; }, 0.0f, scratch,
      [&](int hh, int d, float acc, float l, float, float) {
        out[size_t(h0 + hh) * D + d] = splits == 0 ? 0.0f : acc / l;
      });
}

template <int D, int NH>
__global__ void __launch_bounds__(kThreads)
    kv16_split_kernel(Kv16LayerCache c, const float* __restrict__ q, int H, int n_cache,
                      const int32_t* __restrict__ n_dev, int n_max, int max_splits, float* __restrict__ ws_ml,
                      float* __restrict__ ws_acc, unsigned int* __restrict__ counters, float* __restrict__ out) {
  constexpr int LPK = D / 8;           // lanes per key
  constexpr int KPI = kThreads / LPK;  // keys per load round = key groups
  constexpr int TK = KPI * kRounds;    // keys per tile
  static_assert(TK <= kThreads, "one thread per key computes the tile's row indices");
  static_assert(32 % LPK == 0, "a key's lanes lie in one warp");
  // Row index (phys_page·H_kv + kvh)·P + j % P of each key of a tile, in units of D values. 32 bits: a pool
  // of 2^32 rows would be ≥ 512 GB.
  __shared__ uint32_t rows_s[2][TK];
  __shared__ float red[KPI][D];
  __shared__ float m_s[KPI], l_s[KPI];
  static_assert(NH * (kCombineTile + D / 32) <= KPI * D, "the combine's scratch fits in red");

  const int n = effective_n(n_cache, n_dev, n_max);
  int splits, chunk;
  split_plan(n, max_splits, splits, chunk);
  const int split = blockIdx.y;
  const int kvh = blockIdx.z, Hkv = c.n_kv_heads, P = c.page_size;
  const int h0 = kvh * (H / Hkv) + blockIdx.x * NH;
  if (split >= splits) {  // block-uniform: empty split of a device-path launch: no partials, but it arrives
    finish_group<D, NH>(splits, max_splits, h0, ws_ml, ws_acc, counters, &red[0][0], out);
    return;
  }
  const int j0 = split * chunk;
  const int n_keys = min(n, j0 + chunk) - j0;  // ≥ 1
  const int tid = threadIdx.x, part = tid % LPK, grp = tid / LPK;

  auto row_of = [&](int j) -> uint32_t {
    const int page = __ldg(c.page_table + j / P);
    return uint32_t((size_t(page) * Hkv + kvh) * P + j % P);
  };

  float qr[NH][8];
  const float inv_sqrt_d = 1.0f / sqrtf(float(D));
#pragma unroll
  for (int hh = 0; hh < NH; ++hh)
#pragma unroll
    for (int k = 0; k < 8; ++k) qr[hh][k] = q[size_t(h0 + hh) * D + 8 * part + k] * inv_sqrt_d;

  if (tid < TK && tid < n_keys) rows_s[0][tid] = row_of(j0 + tid);
  __syncthreads();

  float m[NH], l[NH], acc[NH][8];
#pragma unroll
  for (int hh = 0; hh < NH; ++hh) {
    m[hh] = -INFINITY;
    l[hh] = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[hh][k] = 0.0f;
  }

  const int n_tiles = (n_keys + TK - 1) / TK;
  for (int t = 0; t < n_tiles; ++t) {  // block-uniform trip count (shuffles and __syncthreads below)
    const int base = t * TK;
    const uint32_t* rows = rows_s[t & 1];
    uint4 kr[kRounds], vr[kRounds];
#pragma unroll
    for (int u = 0; u < kRounds; ++u) {
      const int kk = grp + KPI * u;
      if (base + kk < n_keys) {
        const size_t off = size_t(rows[kk]) * D + 8 * part;
        kr[u] = load_stream_u4(c.k_pool + off);
        vr[u] = load_stream_u4(c.v_pool + off);
      } else {
        kr[u] = make_uint4(0u, 0u, 0u, 0u);
        vr[u] = make_uint4(0u, 0u, 0u, 0u);
      }
    }
    // The next tile's page-table reads overlap this tile's loads; stored after the compute.
    const bool has_next = tid < TK && base + TK + tid < n_keys;
    const uint32_t next_row = has_next ? row_of(j0 + base + TK + tid) : 0u;

    float s[kRounds][NH];
#pragma unroll
    for (int u = 0; u < kRounds; ++u) {
      float kf[8];
      unpack8(kr[u], kf);
#pragma unroll
      for (int hh = 0; hh < NH; ++hh) {
        float d = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; ++k) d = fmaf(qr[hh][k], kf[k], d);
        s[u][hh] = d;
      }
    }
#pragma unroll
    for (int off = LPK / 2; off > 0; off >>= 1)
#pragma unroll
      for (int u = 0; u < kRounds; ++u)
#pragma unroll
        for (int hh = 0; hh < NH; ++hh) s[u][hh] += __shfl_xor_sync(0xFFFFFFFFu, s[u][hh], off);

          // Online softmax over this thread's keys; scores become weights p in place. mu = 0 while no key was
          // valid (m = −∞) so that exp(−∞ − mu) = 0 instead of NaN.
#pragma unroll
    for (int hh = 0; hh < NH; ++hh) {
      float mt = m[hh];
#pragma unroll
      for (int u = 0; u < kRounds; ++u) {
        if (base + grp + KPI * u >= n_keys) s[u][hh] = -INFINITY;
        mt = fmaxf(mt, s[u][hh]);
      }
      const float mu = mt == -INFINITY ? 0.0f : mt;
      const float corr = expf(m[hh] - mu);
      float lt = l[hh] * corr;
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[hh][k] *= corr;
#pragma unroll
      for (int u = 0; u < kRounds; ++u) {
        s[u][hh] = expf(s[u][hh] - mu);
        lt += s[u][hh];
      }
      l[hh] = lt;
      m[hh] = mt;
    }
#pragma unroll
    for (int u = 0; u < kRounds; ++u) {
      float vf[8];
      unpack8(vr[u], vf);  // zeros for invalid keys, whose weight is 0
#pragma unroll
      for (int hh = 0; hh < NH; ++hh)
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[hh][k] = fmaf(s[u][hh], vf[k], acc[hh][k]);
    }
    if (has_next) rows_s[(t + 1) & 1][tid] = next_row;
    __syncthreads();  // rows of tile t+1 visible; rows_s[t & 1] free for tile t+2
  }

  // Merge the KPI key groups (the LPK lanes of a group share m and l, each holds 8 channels of acc).
#pragma unroll
  for (int hh = 0; hh < NH; ++hh) {
    if (part == 0) m_s[grp] = m[hh];
    __syncthreads();
    float M = m_s[0];  // group 0 holds key j0 of tile 0, so M is finite
#pragma unroll
    for (int g = 1; g < KPI; ++g) M = fmaxf(M, m_s[g]);
    const float f = m[hh] == -INFINITY ? 0.0f : expf(m[hh] - M);
#pragma unroll
    for (int k = 0; k < 8; ++k) red[grp][8 * part + k] = acc[hh][k] * f;
    if (part == 0) l_s[grp] = l[hh] * f;
    __syncthreads();
    const size_t slot = size_t(h0 + hh) * max_splits + split;
    for (int d = tid; d < D; d += kThreads) {
      float a = 0.0f;
#pragma unroll
      for (int g = 0; g < KPI; ++g) a += red[g][d];
      ws_acc[slot * D + d] = a;
    }
    if (tid == 0) {
      float L = 0.0f;
#pragma unroll
      for (int g = 0; g < KPI; ++g) L += l_s[g];
      ws_ml[slot * 2 + 0] = M;
      ws_ml[slot * 2 + 1] = L;
    }
    __syncthreads();  // m_s, red, l_s are reused by the next head
  }
  finish_group<D, NH>(splits, max_splits, h0, ws_ml, ws_acc, counters, &red[0][0], out);
}

// Query heads per split block: the largest of 4, 2, 1 dividing gq (8 would need ~64 more registers).
int heads_per_block(int gq) {
  return gq % 4 == 0 ? 4 : gq % 2 == 0 ? 2 : 1;
}

template <int D, int NH>
void launch(const Kv16LayerCache& c, const Kv16DecodeArgs& a, int n_launch, void* workspace,
            size_t workspace_bytes, cudaStream_t stream) {
  auto kernel = kv16_split_kernel<D, NH>;
  const int Z = a.n_heads / c.n_kv_heads / NH;
  const int sms = device_limits().sms;
  static const int occ = [&] {  // per instantiation, once
    int o = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, kernel, kThreads, 0));
    return o;
  }();
  // One wave of equal-work split blocks (depends only on shapes and the device, not on n, so the host and
  // device paths plan alike), capped so every split has ≥ kMinChunk keys at n_launch.
  const int64_t wave = int64_t(std::max(occ, 1)) * std::max(sms, 1);
  const int64_t per_head = std::max<int64_t>(1, wave / (int64_t(c.n_kv_heads) * Z));
  const int max_splits = int(std::min<int64_t>(per_head, (int64_t(n_launch) + kMinChunk - 1) / kMinChunk));
  const size_t counter_bytes = split_counter_bytes(a.n_heads);
  const size_t need = counter_bytes + sizeof(float) * size_t(a.n_heads) * size_t(max_splits) * size_t(D + 2);
  if (!workspace || workspace_bytes < need)
    throw std::invalid_argument("kv16_decode_attention: workspace of " + std::to_string(workspace_bytes) +
                                " bytes is smaller than the " + std::to_string(need) +
                                " needed (see kv16_decode_workspace_bytes)");
  unsigned int* counters = static_cast<unsigned int*>(workspace);
  float* ws_ml = reinterpret_cast<float*>(static_cast<char*>(workspace) + counter_bytes);
  float* ws_acc = ws_ml + size_t(a.n_heads) * max_splits * 2;
  const int n_max = a.n_cache_dev ? a.n_cache_max : a.n_cache;
  // One launch: the split kernel, whose last block per group combines.
  kernel<<<dim3(Z, max_splits, c.n_kv_heads), kThreads, 0, stream>>>(
      c, a.q, a.n_heads, a.n_cache, a.n_cache_dev, n_max, max_splits, ws_ml, ws_acc, counters, a.out);
  WKV_CHECK_LAUNCH();
}

template <int D>
void dispatch(const Kv16LayerCache& c, const Kv16DecodeArgs& a, int n_launch, void* ws, size_t ws_bytes,
              cudaStream_t stream) {
  switch (heads_per_block(a.n_heads / c.n_kv_heads)) {
    case 4: launch<D, 4>(c, a, n_launch, ws, ws_bytes, stream); break;
    case 2: launch<D, 2>(c, a, n_launch, ws, ws_bytes, stream); break;
    default: launch<D, 1>(c, a, n_launch, ws, ws_bytes, stream); break;
  }
}

}  // namespace

size_t kv16_decode_counter_bytes(int n_heads) { return split_counter_bytes(n_heads); }

size_t kv16_decode_workspace_bytes(int n_heads, int head_dim, int n_cache_max) {
  const size_t splits = (size_t(std::max(n_cache_max, 0)) + kMinChunk - 1) / kMinChunk;
  return split_counter_bytes(n_heads) +
         sizeof(float) * size_t(std::max(n_heads, 0)) * splits * (size_t(std::max(head_dim, 0)) + 2);
}

void kv16_decode_attention(const Kv16LayerCache& c, const Kv16DecodeArgs& a, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("kv16_decode_attention: " + m); };
  const bool on_device = a.n_cache_dev != nullptr;
  const int n_launch = on_device ? a.n_cache_max : a.n_cache;
  if (on_device && a.n_cache_max < 1)
    fail("n_cache_max " + std::to_string(a.n_cache_max) + " must be ≥ 1 when n_cache_dev is set");
  if (!on_device && a.n_cache < 1) fail("n_cache " + std::to_string(a.n_cache) + " must be ≥ 1");
  validate_kv16_cache(c, n_launch, "kv16_decode_attention");
  const int D = c.head_dim;
  if (!kv16_decode_supports_head_dim(D))
    fail("head_dim " + std::to_string(D) + " is not supported (64 or 128)");
  if (a.n_heads < 1 || a.n_heads % c.n_kv_heads != 0)
    fail("n_heads " + std::to_string(a.n_heads) + " must be a positive multiple of n_kv_heads " +
         std::to_string(c.n_kv_heads));
  if (!a.q || !a.out) fail("q and out must be non-null device pointers");
  if (!aligned16(c.k_pool) || !aligned16(c.v_pool))
    fail("k_pool and v_pool must be 16-byte aligned (16-byte loads)");
  if (reinterpret_cast<uintptr_t>(workspace) % alignof(float) != 0) fail("workspace must be 4-byte aligned");
  if (D == 64)
    dispatch<64>(c, a, n_launch, workspace, workspace_bytes, stream);
  else
    dispatch<128>(c, a, n_launch, workspace, workspace_bytes, stream);
}

}  // namespace wkv::kernels
