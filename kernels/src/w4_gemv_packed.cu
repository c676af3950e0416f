// W4 GEMV "F": packed records streamed by the copy engine, 8-bit integer tensor cores (sm_90).
//
// Why. Nsight Compute on the H200 (docs/kernel-notes.md) found every earlier variant limited by the work per
// weight byte — A 11, C 8.7, D 14, E 8.5 thread-instructions per byte where an SM can issue ~7.8 at 4.3 TB/s
// — and by the bytes a warp keeps in flight through registers. Here:
//   * Memory: one producer thread per block hands the copy engine (cp.async.bulk) 34 KB chunks of the block's
//     contiguous record range into a ring of up to 12 shared-memory slots, so ~100–200 KB per SM are in
//     flight whatever the math does, for a few instructions per chunk.
//   * Math: the packed layout (w4_packed_format.h) puts each lane's mma.m16n8k32 A fragments (8-bit codes
//     q ∈ [0, 15]) in one 16-byte shared load per 32 weights; AND / SHIFT+AND extract them, with no
//     conversions. x goes in as B: per 128-channel group x = 2^E·V, V an integer of ≤ 30 bits split into four
//     signed 8-bit digits, one mma column each (columns 4b … 4b + 3 for batch row b, so 2 batch rows per
//     mma). The int32 accumulators start at −z·Σ digit, so the tensor core leaves Σ (q − z)·digit exactly;
//     the epilogue weighs the digits by 2^(E + 8d) in FP32 and scales by h. Per 1088-byte record and lane: 6
//     shared loads, ~18 integer ops, 4 mma, ~10 FP32 ops: about 1.8 instructions per weight byte (E: 8.5
//     measured).
//
// Work split. Records (16 rows × 128 channels) are tile-major, so block k of n = min(#SMs, tiles) takes the
// contiguous tiles [T·k/n, T·(k+1)/n): whole tiles, so no row is shared between blocks (the imbalance is at
// most one tile: 3–6% on the 7B shapes, against a cross-block reduction that measured ~3 µs per launch).
// Consumer warp w (16 of them) takes records w and w + 16 of every 32-record chunk of the block's range (so
// its records are w, w + 16, w + 32, … in order) and keeps one partial sum per row of its current tile; when
// the tile changes it stores the partial to shared memory [tile][warp]. At the end the block sums the warps
// in order and writes y. Deterministic.
//
// Order in a block: the 16 consumer warps issue the loads of their groups of x while the producer initializes
// the ring's barriers; then the producer fills the ring while the consumers convert x and meet at a named
// barrier of their own (staging behind a full ring measured 4–10 µs: x's loads queued behind the copies; with
// the producer warp among the stagers the block barrier also waited for its copy issue), then the loop. The
// add_rmsnorm and swiglu prologues only issue their raw loads before the block barrier and do their
// arithmetic (sum of squares included) during the conversion, so the ring fill does not wait for them
// (kDefer, XRound in w4_gemv_packed.cuh; WKV_W4_PACKED_DEFER=0 for the former order).
//
// Lane (g, t) = (lane / 4, lane % 4): A rows g and g + 8; B column g = digit g % 4 of batch row g / 4 (lanes
// of columns beyond 4·B read a zero block); D: rows g, g + 8 × columns 2t, 2t + 1, i.e. batch row t / 2 and
// digits (0, 1) for even t, (2, 3) for odd t. The epilogue constants are per (group, t): even t (2^E,
// 2^(E+8), Σ digit 0, Σ digit 1), odd t (2^(E+16), 2^(E+24), Σ digit 2, Σ digit 3); the two lanes' partials
// are added when a tile is flushed.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "bulk_copy.cuh"
#include "cuda_check.h"
#include "gemv_prologue.h"
#include "kernel_util.h"
#include "l2_prefetch.cuh"
#include "w4_gemv_packed.cuh"
#include "w4_gemv_variant.h"
#include "w4_packed_format.h"
#include "wkv_kernels/w4_gemv_packed.h"

namespace wkv::kernels {

namespace {

using detail::bulk_copy;
using detail::bulk_prefetch_l2;
using detail::l2_prefetch_piece;
using detail::mbar_arrive;
using detail::mbar_arrive_expect_tx;
using detail::mbar_init;
using detail::mbar_init_fence;
using detail::mbar_wait;
using detail::Prologue;
using detail::PrologueArgs;
using detail::smem_u32;
using namespace packed;

struct Args {
  Plan p;
  const uint8_t* records;
  int prefetch;        // 1: hint L2 with the block's records beyond the first ring fill
  int early_ring;      // 1: the ring fill is issued before the grid-dependency wait (launched with PDL)
  unsigned long long* trace;  // profiling (w4_gemv_packed_trace): [blocks][kTracePoints] %globaltimer, or null
  L2PrefetchRegion next;      // W4PackedView::next_l2: block b requests piece b after its own last chunk
};

// kMinBlocks 2 (WKV_W4_PACKED_PAIR): registers bounded so that two blocks fit on one SM (≤ 60 per thread at
// 544 threads), for a following launch's block to start beside this one (launch() says why).
template <Prologue kPro, int kMinBlocks, bool kDefer = false>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    w4_gemv_packed_kernel(Args a, const float* __restrict__ x, float* __restrict__ y, PrologueArgs pro) {
  extern __shared__ __align__(128) uint8_t sm[];
  __shared__ float part[kWarps];
  const Plan& p = a.p;
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int t0 = (int)((long long)p.tiles * blockIdx.x / p.blocks);
  const int t1 = (int)((long long)p.tiles * (blockIdx.x + 1) / p.blocks);
  const int rb = t0 * p.groups, nrec = (t1 - t0) * p.groups;
  const int nchunks = (nrec + kChunkRecords - 1) / kChunkRecords;
  uint64_t* full = reinterpret_cast<uint64_t*>(sm + p.off_bar);
  uint64_t* empty = full + kMaxSlots;
  uint8_t* ring = ring_of(sm, p);
  const uint8_t* src = a.records + (size_t)rb * kRecordBytes;

  if (tid == 0) trace_point(a.trace, 0);
  const bool producer_warp = warp == kConsumerWarps, producer = producer_warp && lane == 0;
  // Programmatic dependent launch: the next kernel of the stream may launch now. Its blocks cannot share an SM
  // with this one (shared memory), so each takes an SM as this kernel's block there exits, without the launch
  // gap between kernels (~3.8 µs per F launch in a graph, session 6).
  grid_dependents_launch();
  auto init_barriers = [&]() {
    for (int s = 0; s < p.slots; ++s) {
      mbar_init(smem_u32(full + s), 1);
      mbar_init(smem_u32(empty + s), kConsumerWarps);
    }
    mbar_init_fence();
  };
  auto issue = [&](int c) {
    const int slot = c % p.slots;
    const uint32_t bytes = (uint32_t)min(kChunkRecords, nrec - c * kChunkRecords) * kRecordBytes;
    mbar_arrive_expect_tx(smem_u32(full + slot), bytes);
    bulk_copy(smem_u32(ring + (size_t)slot * kChunkBytes), src + (size_t)c * kChunkBytes, bytes, smem_u32(full + slot));
  };
  auto fill_ring = [&]() {
    for (int c = 0; c < min(p.slots, nchunks); ++c) issue(c);
    if (a.prefetch)
      for (size_t o = (size_t)p.slots * kChunkBytes; o < (size_t)nrec * kRecordBytes; o += 65536)
        bulk_prefetch_l2(src + o, (uint32_t)min((size_t)65536, (size_t)nrec * kRecordBytes - o));
  };
  XRound xr;
  if (a.early_ring) {
    // Launched early (PDL): the weights are constant, so the ring fills while the previous kernel finishes;
    // x and the residual stream are read only after the grid-dependency wait, and y is written after it.
    if (producer) {
      init_barriers();
      fill_ring();
    }
    __syncthreads();  // the barriers are visible to every warp
    if (tid == 0) trace_point(a.trace, 1);
    grid_dependency_wait();
    if (!producer_warp) stage_x_load<kPro, false, kDefer>(p, x, pro, part, xr);
  } else {
    grid_dependency_wait();  // a no-op unless launched with PDL
    // 1. Consumers issue x's loads (nothing else is in flight yet, so they are not queued behind weights)
    //    while the producer sets up the ring's barriers.
    if (!producer_warp) stage_x_load<kPro, false, kDefer>(p, x, pro, part, xr);
    if (producer) init_barriers();
    __syncthreads();  // the barriers are visible to every warp
    if (tid == 0) trace_point(a.trace, 1);
    // 2. The producer fills the ring while the consumers convert x (they meet at a consumer-only barrier).
    if (producer) fill_ring();
  }
  if (!producer_warp) stage_x_convert<kPro, false, kDefer>(p, x, pro, sm, a.trace, xr, part);
  if (tid == 0) trace_point(a.trace, 3);

  float* red = reinterpret_cast<float*>(sm + p.off_red);
  if (warp == kConsumerWarps) {
    if (producer) {
      int slot = 0;
      uint32_t parity = 0;
      for (int c = p.slots; c < nchunks; ++c) {  // refill slot c % S once its 16 consumers released it
        mbar_wait(smem_u32(empty + slot), parity);
        issue(c);
        if (++slot == p.slots) slot = 0, parity ^= 1u;
      }
      // Every weight of this block is requested: the next kernel's share now queues behind them (a hint).
      l2_prefetch_piece(a.next, (int)blockIdx.x);
    }
  } else if (warp < nrec) {
    // This lane's B column: digit g % 4 of batch row g / 4, or zeros.
    const bool real = g < 4 * p.B;
    const uint8_t* xbase = sm + (real ? p.off_x + g * kDigitColBytes : p.off_zero) + t * 32;
    const size_t xstride = real ? (size_t)4 * p.B * kDigitColBytes : 0;
    const float4* cst = reinterpret_cast<const float4*>(sm + p.off_cst) + t;
    int tile = t0 + warp / p.groups, grp = warp % p.groups, cur = tile;  // the warp's records: warp, warp + 16, …
    float acc0 = 0.0f, acc1 = 0.0f;
    auto flush = [&]() {  // rows g, g + 8 of tile `cur`, batch row t / 2: digits (0, 1) + (2, 3)
      const float s0 = acc0 + __shfl_xor_sync(0xFFFFFFFFu, acc0, 1);
      const float s1 = acc1 + __shfl_xor_sync(0xFFFFFFFFu, acc1, 1);
      if ((t & 1) == 0 && (t >> 1) < p.B) {
        float* r = red + (((size_t)(cur - t0) * kConsumerWarps + warp) * p.B + (t >> 1)) * kW4PackedRows;
        r[g] = s0;
        r[g + 8] = s1;
      }
      acc0 = acc1 = 0.0f;
    };
    int slot = 0;
    uint32_t parity = 0;
    for (int c = 0; c < nchunks; ++c) {
      if (c * kChunkRecords + warp < nrec) mbar_wait(smem_u32(full + slot), parity);
      if (c == 0 && tid == 0) trace_point(a.trace, 4);
#pragma unroll
      for (int j = 0; j < kRecordsPerWarp; ++j) {  // records warp, warp + 16, … of the chunk
        const int rc = j * kConsumerWarps + warp;
        if (c * kChunkRecords + rc >= nrec) break;
        if (tile != cur) {
          flush();
          cur = tile;
        }
        record_math(ring + (size_t)slot * kChunkBytes + (size_t)rc * kRecordBytes, xbase + grp * xstride,
                    cst[grp * 4], lane, g, acc0, acc1);
        grp += kConsumerWarps;
        while (grp >= p.groups) grp -= p.groups, ++tile;
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(smem_u32(empty + slot));
      if (++slot == p.slots) slot = 0, parity ^= 1u;
    }
    flush();
    if (tid == 0) trace_point(a.trace, 5);
  }
  __syncthreads();
  if (tid == 0) trace_point(a.trace, 6);

  // Sum the warps' partials per row, in warp order, and write y.
  for (int i = tid; i < (t1 - t0) * p.B * kW4PackedRows; i += kThreads) {
    const int tl = i / (p.B * kW4PackedRows), b = (i / kW4PackedRows) % p.B, r = i % kW4PackedRows;
    float sum = 0.0f;
    for (int w = 0; w < kConsumerWarps; ++w) sum += red[(((size_t)tl * kConsumerWarps + w) * p.B + b) * kW4PackedRows + r];
    const int row = (t0 + tl) * kW4PackedRows + r;
    if (row < p.rows) y[(size_t)b * p.rows + row] = sum;
  }
  if (tid == 0) trace_point(a.trace, 7);
}

// ---- packing --------------------------------------------------------------------------------------

// One block per record: threads 0 … 255 write the code words, 256 … 271 the FP16 parameter words.
__global__ void w4_pack_kernel(W4DeviceWeights w, uint32_t* __restrict__ out) {
  const int groups = w.cols / kW4PackedGroup;
  const size_t rec = blockIdx.x;
  const int tile = (int)(rec / groups), gi = (int)(rec % groups);
  const int i = (int)threadIdx.x;
  const int words_per_row = w.cols / kW4ChannelsPerWord;
  uint32_t v = 0;
  if (i < 256) {
    const int j = (i / 128) * 4 + i % 4, L = (i % 128) / 4, s = j / 2, r = j % 2, g = L / 4, t = L % 4;
    const int row = tile * kW4PackedRows + g + 8 * r;
    if (row < w.rows) {
      for (int b = 0; b < 4; ++b) {
        const int c_lo = gi * kW4PackedGroup + 32 * s + 4 * t + b, c_hi = c_lo + 16;
        const uint32_t lo = (uint32_t)w4_unpack(w.qweight[(size_t)row * words_per_row + c_lo / 8], c_lo % 8);
        const uint32_t hi = (uint32_t)w4_unpack(w.qweight[(size_t)row * words_per_row + c_hi / 8], c_hi % 8);
        v |= (lo | hi << 4) << (8 * b);
      }
    }
  } else {  // hz[2g] = FP16 h of rows g, g + 8; hz[2g + 1] = int16 z of rows g, g + 8
    const int k = i - 256, g = k / 2;
    for (int half = 0; half < 2; ++half) {
      const int row = tile * kW4PackedRows + g + 8 * half;
      if (row >= w.rows) continue;
      const size_t o = (size_t)row * groups + gi;
      const uint32_t bits = k % 2 == 0 ? w.scales[o] : w4_packed_zero_bits(w.zeros[o]);
      v |= bits << (16 * half);
    }
  }
  out[rec * (kRecordBytes / 4) + i] = v;
}

// Dense FP16 from packed records: thread i writes channels 8k … 8k + 7 of one row (16 bytes), read from the two
// code words that hold them (each 4 consecutive channels are one word's low or high nibbles).
__global__ void w4_dequant_packed_kernel(int rows, int groups, const W4PackedRecord* __restrict__ rec,
                                         uint4* __restrict__ out) {
  const int per_row = groups * kW4PackedGroup / 8;
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)rows * per_row) return;
  const int row = (int)(i / per_row), k = (int)(i % per_row), gi = k / (kW4PackedGroup / 8);
  const int rt = row % kW4PackedRows, c0 = (k * 8) % kW4PackedGroup;
  const W4PackedRecord& r = rec[(size_t)(row / kW4PackedRows) * groups + gi];
  const int shift = rt < 8 ? 0 : 16;
  const float h = __half2float(__ushort_as_half((unsigned short)(r.hz[2 * (rt % 8)] >> shift)));
  const float z = (float)(int16_t)(uint16_t)(r.hz[2 * (rt % 8) + 1] >> shift);
  uint32_t packed[4];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int c = c0 + 4 * half;
    const uint32_t word = r.q[w4_packed_word_index(rt, c)];
    const int base = w4_packed_nibble_shift(c);  // c % 4 == 0: channel c + b at base + 8b
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float lo = ((float)((word >> (base + 16 * j)) & 0xFu) - z) * h;
      const float hi = ((float)((word >> (base + 16 * j + 8)) & 0xFu) - z) * h;
      packed[2 * half + j] = (uint32_t)__half_as_ushort(__float2half_rn(lo)) |
                             ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
    }
  }
  out[i] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

// Experiment switches, read once per process: WKV_W4_PACKED_PREFETCH=1 (L2 prefetch hints for the records beyond
// the first ring fill).
bool env_flag(const char* name) {
  const char* e = std::getenv(name);
  return e && *e == '1';
}

// Programmatic dependent launch, WKV_W4_PACKED_PDL: 0 off (default); 1 launched early, everything after the
// wait; 2 launched early with the ring fill issued before the wait. H200, session 6: in the kernel bench's
// graph of F launches the linears take 1,599.9 µs per token with 0, 1,479.5 with 1 and 1,500.0 with 2, but
// the whole 7B decode step is slower with either (wkv bench w4kv4, two interleaved rounds, depth 0: 325.9 /
// 328.2 t/s with 0, 315.2 / 314.3 with 1, 314.4 / 316.4 with 2; 32K: 185.3 / 185.6, 181.3 / 181.2, 181.6 /
// 181.5).
// F1 / F2, A1 / A2 (an experiment): the same two forms, but only for launches that follow another F launch
// (F) or either an F launch or the streaming KV4 attention (A), W4PackedView::predecessor: those let their
// dependents launch only when no block of theirs still waits for an SM, so the early blocks take each SM as a
// block of the previous kernel there exits and never crowd it (session 6 launched every F with PDL, also
// after kernels that never let their dependents launch early). They lose as well (H100, session 11, decode
// t/s against the same call's default: F2 −2.7%, A2 −3.3%, A1 −2.4% at depth 0; −1.5%, −2.0%, −0.2% at 32K).
enum class PdlMode { off = 0, wait_first = 1, early_ring = 2 };
struct PdlSetting {
  PdlMode mode = PdlMode::off;
  bool after_f = false, after_attention = false;  // F1 / F2: after_f; A1 / A2: both; 1 / 2: neither (all)
};
constexpr PdlSetting kDefaultPdl{};

PdlSetting pdl_setting() {
  static const PdlSetting s = [] {
    const char* e = std::getenv("WKV_W4_PACKED_PDL");
    if (!e || !*e) return kDefaultPdl;
    PdlSetting r;
    r.after_f = *e == 'F' || *e == 'A';
    r.after_attention = *e == 'A';
    const char c = r.after_f ? e[1] : *e;
    r.mode = c == '1' ? PdlMode::wait_first : c == '2' ? PdlMode::early_ring : PdlMode::off;
    return r;
  }();
  return s;
}

// The form this launch uses: off unless the setting covers it.
PdlMode pdl_mode(W4Predecessor pred) {
  const PdlSetting& s = pdl_setting();
  if (!s.after_f) return s.mode;
  const bool covered =
      pred == W4Predecessor::w4_gemv || (s.after_attention && pred == W4Predecessor::kv4_attention);
  return covered ? s.mode : PdlMode::off;
}

// Paired blocks, WKV_W4_PACKED_PAIR=1 (an experiment, off by default): every launch plans a ring of 2 slots
// (the smallest that streams: session 5's sweep found at most 2 chunks in flight as fast as 12) and bounds its
// registers for two blocks per SM, so that with programmatic dependent launch (WKV_W4_PACKED_PDL=2) the next
// linear's block can start beside this one and stream its weights while this one finishes; with the
// whole-SM ring it can only start once this block has left. The grid is the same (one block per SM and
// launch). 7B shapes, dynamic shared memory with 2 slots (make_plan): q|k|v 96,640 bytes, o 92,544, gate|up
// 101,760, down 127,104 (its staged x and constants of 11,008 columns take 55 K), so every consecutive pair
// fits one SM's 233,472 bytes with 1,024 reserved per block (gate|up → down: 231,040). The kernels ask for
// the largest shared-memory carveout: an SM configured for a smaller one would have to drain before a second
// block fits.
bool pair_mode() {
  static const bool on = env_flag("WKV_W4_PACKED_PAIR");
  return on;
}

template <Prologue kPro, int kMinBlocks, bool kDefer = false>
void launch_kernel(const Args& a, const float* x, float* y, const PrologueArgs& pro, bool pdl,
                   cudaStream_t stream) {
  static const bool attr_set = [] {
    allow_max_dynamic_smem(w4_gemv_packed_kernel<kPro, kMinBlocks, kDefer>);
    if (kMinBlocks > 1)
      CUDA_CHECK(cudaFuncSetAttribute(w4_gemv_packed_kernel<kPro, kMinBlocks, kDefer>,
                                      cudaFuncAttributePreferredSharedMemoryCarveout,
                                      cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)attr_set;
  launch_kernel_pdl(pdl, w4_gemv_packed_kernel<kPro, kMinBlocks, kDefer>, dim3((unsigned)a.p.blocks),
                    dim3(kThreads), a.p.smem, stream, a, x, y, pro);
  WKV_CHECK_LAUNCH();
}

// WKV_W4_PACKED_DEFER=0 / 1 (unset: on; 13% more decode tokens/s at depth 0 and 7% at 32K on the H100,
// docs/performance.md session 10): the add_rmsnorm and swiglu prologues' arithmetic runs after the block
// barrier, so the ring fill no longer waits for their L2 round trips (XRound in w4_gemv_packed.cuh; same
// bits). Launches whose first staging round does not cover every item (defer_fits) keep the plain staging.
bool defer_mode() {
  static const bool on = [] {
    const char* e = std::getenv("WKV_W4_PACKED_DEFER");
    return !(e && *e) || *e == '1';
  }();
  return on;
}

template <Prologue kPro>
// Launches one kernel (B ≤ kMaxBatch); returns its block count. One launch plan per call: the checks below are
// w4_gemv_packed_supported's, on the plan this launch uses.
int launch(const W4PackedView& w, const float* x, int B, float* y, const PrologueArgs& pro, cudaStream_t stream,
           unsigned long long* trace = nullptr) {
  const DeviceLimits& dl = device_limits();
  Args a{};
  const bool paired = pair_mode();
  a.p = make_plan(w.rows, w.cols, B, dl.sms, dl.smem_optin, paired ? 2 : kMaxSlots);
  require_arg(w4_packable(w.rows, w.cols, kW4PackedGroup) && dl.compute_major >= 9 && a.p.slots >= 2 && w.records,
              "w4_gemv_packed: " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " batch " +
                  std::to_string(B) + " is not a supported packed matrix on this device, or records is null");
  a.records = static_cast<const uint8_t*>(w.records);
  static const int prefetch = env_flag("WKV_W4_PACKED_PREFETCH") ? 1 : 0;
  a.prefetch = prefetch;
  a.trace = trace;
  const PdlMode pdl = pdl_mode(w.predecessor);
  a.early_ring = pdl == PdlMode::early_ring ? 1 : 0;
  validate_l2_prefetch_region(w.next_l2, "w4_gemv_packed: next_l2: ");
  a.next = w.next_l2;
  if (paired)
    launch_kernel<kPro, 2>(a, x, y, pro, pdl != PdlMode::off, stream);
  else if (kPro != Prologue::none && defer_mode() && defer_fits(a.p.B, a.p.groups))
    launch_kernel<kPro, 1, kPro != Prologue::none>(a, x, y, pro, pdl != PdlMode::off, stream);
  else
    launch_kernel<kPro, 1>(a, x, y, pro, pdl != PdlMode::off, stream);
  return a.p.blocks;
}

}  // namespace

size_t w4_packed_device_bytes(int rows, int cols) { return w4_packed_bytes(rows, cols); }

L2PrefetchRegion w4_packed_prefetch_region(const W4PackedView& w, float fraction) {
  require_arg(w.records && w.rows >= 1 && w.cols >= kW4PackedGroup && w.cols % kW4PackedGroup == 0,
              "w4_packed_prefetch_region: " + std::to_string(w.rows) + "x" + std::to_string(w.cols) +
                  " is not a packed matrix with records");
  const DeviceLimits& dl = device_limits();
  const Plan p = make_plan(w.rows, w.cols, 1, dl.sms, dl.smem_optin);  // the blocks a B = 1 launch uses
  L2PrefetchRegion r;
  r.base = w.records;
  r.units = p.tiles;
  r.parts = p.blocks;
  r.unit_bytes = p.groups * kRecordBytes;
  r.fraction = fraction;
  return r;
}

W4PackedView w4_packed_rows(const W4PackedView& w, int row0, int rows) {
  require_arg(row0 >= 0 && row0 % kW4PackedRows == 0 && rows >= 1 && row0 + rows <= w.rows && w.records,
              "w4_packed_rows: rows [" + std::to_string(row0) + ", " + std::to_string(row0 + rows) +
                  ") must start on a 16-row tile inside the " + std::to_string(w.rows) + " rows");
  W4PackedView v = w;
  v.rows = rows;
  v.records = static_cast<const uint8_t*>(w.records) +
              (size_t)(row0 / kW4PackedRows) * (w.cols / kW4PackedGroup) * sizeof(W4PackedRecord);
  return v;
}

void w4_dequant_f16_packed(const W4PackedView& w, uint16_t* out, cudaStream_t stream) {
  require_arg(w.records && w.rows >= 1 && w.cols >= kW4PackedGroup && w.cols % kW4PackedGroup == 0 && out &&
                  aligned16(out),
              "w4_dequant_f16_packed: needs packed records of a rows x (multiple of 128) matrix and a 16-byte "
              "aligned output");
  const size_t n = (size_t)w.rows * (w.cols / 8);
  const size_t blocks = (n + 255) / 256;
  require_arg(blocks <= 0x7FFFFFFFu, "w4_dequant_f16_packed: matrix too large for one launch");
  w4_dequant_packed_kernel<<<(unsigned)blocks, 256, 0, stream>>>(
      w.rows, w.cols / kW4PackedGroup, static_cast<const W4PackedRecord*>(w.records), reinterpret_cast<uint4*>(out));
  WKV_CHECK_LAUNCH();
}

bool w4_gemv_packed_supported(int rows, int cols, int group) {
  if (!w4_packable(rows, cols, group) || device_limits().compute_major < 9) return false;
  return make_plan(rows, cols, 1, device_limits().sms, device_limits().smem_optin).slots >= 2;
}

void w4_pack(const W4DeviceWeights& w, void* records, cudaStream_t stream) {
  validate_w4_device(w, "w4_pack");
  require_arg(w4_packable(w.rows, w.cols, w.group) && records,
              "w4_pack: W4 " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " group " +
                  std::to_string(w.group) + " has no packed layout (needs group 128, cols % 128 == 0) or records is null");
  const size_t n = w4_packed_records(w.rows, w.cols);
  require_arg(n <= 0x7FFFFFFFu, "w4_pack: too many records");
  w4_pack_kernel<<<(unsigned)n, 272, 0, stream>>>(w, static_cast<uint32_t*>(records));
  WKV_CHECK_LAUNCH();
}

void w4_gemv_packed(const W4PackedView& w, const float* x, int B, float* y, cudaStream_t stream) {
  require_arg(B >= 1 && x && y && aligned16(x), "w4_gemv_packed: batch must be >= 1, x (16-byte aligned) and y non-null");
  const int launches = (B + kMaxBatch - 1) / kMaxBatch, per = (B + launches - 1) / launches;
  for (int b0 = 0; b0 < B; b0 += per)
    launch<Prologue::none>(w, x + (size_t)b0 * w.cols, std::min(per, B - b0), y + (size_t)b0 * w.rows, {}, stream);
}

namespace detail {

int w4_gemv_packed_trace(const W4PackedView& w, const float* x, float* y, unsigned long long* trace,
                         cudaStream_t stream) {
  return launch<Prologue::none>(w, x, 1, y, {}, stream, trace);
}

}  // namespace detail

void w4_gemv_packed_add_rmsnorm(const W4PackedView& w, const float* res, const float* r, const float* norm_weight,
                                float eps, float* res_out, float* y, cudaStream_t stream) {
  require_arg(res && r && norm_weight && res_out && y && aligned16(res) && aligned16(r) && aligned16(norm_weight) &&
                  aligned16(res_out),
              "w4_gemv_packed_add_rmsnorm: every pointer must be a non-null, 16-byte aligned device pointer");
  require_arg(res_out != res && res_out != r, "w4_gemv_packed_add_rmsnorm: res_out must not alias res or r");
  launch<Prologue::add_rmsnorm>(w, res, 1, y, detail::add_rmsnorm_prologue(res, r, norm_weight, eps, res_out), stream);
}

void w4_gemv_packed_swiglu(const W4PackedView& w, const float* g, const float* u, float* y, cudaStream_t stream) {
  require_arg(g && u && y && aligned16(g) && aligned16(u),
              "w4_gemv_packed_swiglu: every pointer must be a non-null, 16-byte aligned device pointer");
  launch<Prologue::swiglu>(w, g, 1, y, detail::swiglu_prologue(u), stream);
}

}  // namespace wkv::kernels
