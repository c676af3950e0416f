// A run of one-token packed W4 GEMVs in one persistent launch: wkv_kernels/w4_gemv_chain.h says why.
//
// Grid: one block per SM (blocks = min(SMs, the smallest op's tiles)), 16 consumer warps + 1 producer warp,
// as the single-launch kernel (w4_gemv_packed.cu, whose record math, x staging and partial-sum layout this
// reuses through w4_gemv_packed.cuh). Block k takes the tiles [T·k/n, T·(k+1)/n) of every op.
//
// Shared memory: one layout for all ops, sized for the largest (x digits and constants of the op with most
// groups, partial sums of the op with most tiles per block), then a ring of S slots of 32 records.
//
// Producer (warp 16, lane 0): issues the chunks of op 0, then op 1, … into the ring, chunk gc (counted over
// all ops) into slot gc % S once its previous content (chunk gc − S) has been released by all 16 consumer
// warps. It never waits for activations, so op i + 1's weights stream in while op i's tail and boundary run.
// Consumers, per op i:
//   1. i > 0: thread 0 waits until counters[i − 1] == blocks (every block has written op i − 1's y), then the
//      consumers meet (named barrier 1): op i's inputs are complete and visible (release/acquire at gpu
//      scope; the inputs are read through L2 only, ld.global.cg, since other SMs wrote them during this
//      launch).
//   2. x staging through the op's prologue (the single-launch kernel's code), partial sums zeroed.
//   3. The chunks of the op: every consumer warp waits for every chunk (also those without a record of its
//      own, so that no warp can release a slot ahead of the phase the producer waits on) and releases it.
//   4. Partial sums per tile reduced in warp order and y written (deterministic for a given block count),
//   then
//      thread 0 publishes: __threadfence, counters[i] += 1.
// End: thread 0 adds 1 to counters[kW4ChainMaxOps]; the block that brings it to `blocks` has seen every block
// finish every op (no block is still waiting on a counter) and zeroes all counters for the next launch, which
// the stream orders after this one.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "cuda_check.h"
#include "kernel_util.h"
#include "w4_gemv_packed.cuh"
#include "wkv_kernels/w4_gemv_chain.h"

namespace wkv::kernels {

namespace {

using detail::bulk_copy;
using detail::mbar_arrive;
using detail::mbar_arrive_expect_tx;
using detail::mbar_init;
using detail::mbar_init_fence;
using detail::mbar_wait;
using detail::smem_u32;
using namespace packed;

struct ChainOpArgs {
  Plan p;  // the op's shape (rows, groups, tiles, max_tiles) with the chain's common layout and block count
  const uint8_t* records;
  Prologue kind;
  const float* x;
  float* y;
  PrologueArgs pro;
};

struct ChainArgs {
  ChainOpArgs op[kW4ChainMaxOps];
  int n_ops;
  unsigned int* counters;  // [kW4ChainMaxOps] ops completed per op, [kW4ChainMaxOps] blocks finished
};

__device__ __forceinline__ unsigned int load_acquire_gpu(const unsigned int* p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// The records [t0·groups, t1·groups) of block blockIdx.x in op p.
struct BlockRange {
  int t0, t1, nrec, nchunks;
  __device__ explicit BlockRange(const Plan& p) {
    t0 = (int)((long long)p.tiles * blockIdx.x / p.blocks);
    t1 = (int)((long long)p.tiles * (blockIdx.x + 1) / p.blocks);
    nrec = (t1 - t0) * p.groups;
    nchunks = (nrec + kChunkRecords - 1) / kChunkRecords;
  }
};

// Consumers: x staging of one op through its prologue (runtime kind, the same code as the single launch's).
__device__ __forceinline__ void stage_op(const ChainOpArgs& op, uint8_t* sm, float* part) {
  XRound xr;
  switch (op.kind) {
    case Prologue::add_rmsnorm:
      stage_x_load<Prologue::add_rmsnorm, true>(op.p, op.x, op.pro, part, xr);
      stage_x_convert<Prologue::add_rmsnorm, true>(op.p, op.x, op.pro, sm, nullptr, xr);
      break;
    case Prologue::swiglu:
      stage_x_load<Prologue::swiglu, true>(op.p, op.x, op.pro, part, xr);
      stage_x_convert<Prologue::swiglu, true>(op.p, op.x, op.pro, sm, nullptr, xr);
      break;
    default:
      stage_x_load<Prologue::none, true>(op.p, op.x, op.pro, part, xr);
      stage_x_convert<Prologue::none, true>(op.p, op.x, op.pro, sm, nullptr, xr);
      break;
  }
}

// Registers: 17 warps spread over an SM's 4 register-file partitions (16K registers each) put 5 warps in one,
// so at most 102 per thread fit (ptxas takes 96 under this bound and spills 92 bytes around the three inlined
// x stagings; __maxnreg__(120) compiled but failed to launch: cudaErrorLaunchOutOfResources on the H100).
__global__ void __launch_bounds__(kThreads, 1) w4_gemv_chain_kernel(ChainArgs a) {
  extern __shared__ __align__(128) uint8_t sm[];
  __shared__ float part[kWarps];
  const Plan& lay = a.op[0].p;  // the layout fields are the same in every op
  const int S = lay.slots;
  const int tid = (int)threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int g = lane >> 2, t = lane & 3;
  uint64_t* full = reinterpret_cast<uint64_t*>(sm + lay.off_bar);
  uint64_t* empty = full + kMaxSlots;
  uint8_t* ring = ring_of(sm, lay);

  if (warp == kConsumerWarps && lane == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(smem_u32(full + s), 1);
      mbar_init(smem_u32(empty + s), kConsumerWarps);
    }
    mbar_init_fence();
  }
  __syncthreads();  // the barriers are visible to every warp; from here on the producer warp runs on its own

  if (warp == kConsumerWarps) {
    if (lane == 0) {
      int gc = 0;  // chunks issued so far, over all ops
      for (int o = 0; o < a.n_ops; ++o) {
        const Plan& p = a.op[o].p;
        const BlockRange br(p);
        const uint8_t* src = a.op[o].records + (size_t)br.t0 * p.groups * kRecordBytes;
        for (int c = 0; c < br.nchunks; ++c, ++gc) {
          const int slot = gc % S;
          if (gc >= S) mbar_wait(smem_u32(empty + slot), (uint32_t)((gc / S - 1) & 1));
          const uint32_t bytes = (uint32_t)min(kChunkRecords, br.nrec - c * kChunkRecords) * kRecordBytes;
          mbar_arrive_expect_tx(smem_u32(full + slot), bytes);
          bulk_copy(smem_u32(ring + (size_t)slot * kChunkBytes), src + (size_t)c * kChunkBytes, bytes,
                    smem_u32(full + slot));
        }
      }
      // Leaves only once the consumers have released the last S chunks: every copy it issued has landed.
      for (int c = std::max(0, gc - S); c < gc; ++c)
        mbar_wait(smem_u32(empty + c % S), (uint32_t)((c / S) & 1));
    }
    return;  // the producer warp takes no part in the consumers' barriers
  }

  constexpr int kConsumerThreads = kConsumerWarps * kWarpSize;
  float* red = reinterpret_cast<float*>(sm + lay.off_red);
  int gc = 0;  // chunks consumed so far, over all ops
  for (int o = 0; o < a.n_ops; ++o) {
    const ChainOpArgs& op = a.op[o];
    const Plan& p = op.p;
    if (o > 0) {  // op o − 1 complete in every block
      if (tid == 0) {
        const unsigned int target = (unsigned int)p.blocks;
        while (load_acquire_gpu(a.counters + (o - 1)) < target) __nanosleep(20);
        __threadfence();  // as cooperative groups' grid sync: the acquire already orders the loads after it
      }
      consumer_sync();
    }
    stage_op(op, sm, part);  // ends with a consumer barrier

    const BlockRange br(p);
    const bool real = g < 4 * p.B;  // this lane's B column: digit g % 4 of batch row g / 4, or zeros
    const uint8_t* xbase = sm + (real ? p.off_x + g * kDigitColBytes : p.off_zero) + t * 32;
    const size_t xstride = real ? (size_t)4 * p.B * kDigitColBytes : 0;
    const float4* cst = reinterpret_cast<const float4*>(sm + p.off_cst) + t;
    int tile = br.t0 + warp / p.groups, grp = warp % p.groups, cur = tile;  // records warp, warp + 16, …
    float acc0 = 0.0f, acc1 = 0.0f;
    auto flush = [&]() {  // rows g, g + 8 of tile `cur`: digits (0, 1) + (2, 3)
      const float s0 = acc0 + __shfl_xor_sync(0xFFFFFFFFu, acc0, 1);
      const float s1 = acc1 + __shfl_xor_sync(0xFFFFFFFFu, acc1, 1);
      if ((t & 1) == 0 && (t >> 1) < p.B) {
        float* r = red + (((size_t)(cur - br.t0) * kConsumerWarps + warp) * p.B + (t >> 1)) * kW4PackedRows;
        r[g] = s0;
        r[g + 8] = s1;
      }
      acc0 = acc1 = 0.0f;
    };
    for (int c = 0; c < br.nchunks; ++c, ++gc) {
      const int slot = gc % S;
      mbar_wait(smem_u32(full + slot), (uint32_t)((gc / S) & 1));
      const uint8_t* chunk = ring + (size_t)slot * kChunkBytes;
#pragma unroll
      for (int j = 0; j < kRecordsPerWarp; ++j) {
        const int rc = j * kConsumerWarps + warp;
        if (c * kChunkRecords + rc >= br.nrec) break;
        if (tile != cur) {
          flush();
          cur = tile;
        }
        record_math(chunk + (size_t)rc * kRecordBytes, xbase + grp * xstride, cst[grp * 4], lane, g, acc0,
                    acc1);
        grp += kConsumerWarps;
        while (grp >= p.groups) grp -= p.groups, ++tile;
      }
      __syncwarp();
      if (lane == 0) mbar_arrive(smem_u32(empty + slot));
    }
    if (warp < br.nrec) flush();
    consumer_sync();

    // Sum the warps' partials per row, in warp order, and write y (B = 1).
    for (int i = tid; i < (br.t1 - br.t0) * kW4PackedRows; i += kConsumerThreads) {
      const int tl = i / kW4PackedRows, r = i % kW4PackedRows;
      float sum = 0.0f;
      for (int w = 0; w < kConsumerWarps; ++w)
        sum += red[((size_t)tl * kConsumerWarps + w) * kW4PackedRows + r];
      const int row = (br.t0 + tl) * kW4PackedRows + r;
      if (row < p.rows) op.y[row] = sum;
    }
    consumer_sync();  // the partial sums are read before the next op's staging zeroes them; y is written
    if (tid == 0) {
      __threadfence();
      atomicAdd(a.counters + o, 1u);
    }
  }
  if (tid == 0) {
    __threadfence();
    const unsigned int done = atomicAdd(a.counters + kW4ChainMaxOps, 1u);
    if (done + 1 == (unsigned int)lay.blocks) {  // every block is past every wait: reset for the next launch
      for (int o = 0; o < kW4ChainMaxOps; ++o) a.counters[o] = 0u;
      a.counters[kW4ChainMaxOps] = 0u;
      __threadfence();
    }
  }
}

std::string op_name(int i) {
  return "w4_gemv_chain: op " + std::to_string(i);
}

// The chain's launch plan, or slots = 0 in ops[0].p when unsupported (shapes only).
ChainArgs make_chain(const W4ChainOp* ops, int n_ops) {
  ChainArgs a{};
  a.n_ops = n_ops;
  const DeviceLimits& dl = device_limits();
  if (n_ops < 1 || n_ops > kW4ChainMaxOps || dl.compute_major < 9) return a;
  int blocks = dl.sms, groups = 0, max_tiles = 0;
  for (int i = 0; i < n_ops; ++i) {
    if (!w4_packable(ops[i].w.rows, ops[i].w.cols, kW4PackedGroup)) return a;
    blocks = std::min(blocks, (int)w4_packed_tiles(ops[i].w.rows));
  }
  blocks = std::max(blocks, 1);
  for (int i = 0; i < n_ops; ++i) {
    a.op[i].p = plan_shape(ops[i].w.rows, ops[i].w.cols, 1, dl.sms, blocks);
    groups = std::max(groups, a.op[i].p.groups);
    max_tiles = std::max(max_tiles, a.op[i].p.max_tiles);
  }
  Plan lay;
  plan_layout(lay, groups, max_tiles, 1, dl.smem_optin, kMaxSlots, 0);
  for (int i = 0; i < n_ops; ++i) {
    Plan& p = a.op[i].p;
    p.off_x = lay.off_x, p.off_zero = lay.off_zero, p.off_cst = lay.off_cst, p.off_red = lay.off_red;
    p.off_bar = lay.off_bar, p.slots = lay.slots, p.smem = lay.smem;
  }
  return a;
}

}  // namespace

bool w4_gemv_chain_supported(const W4ChainOp* ops, int n_ops) {
  if (!ops) return false;
  return make_chain(ops, n_ops).op[0].p.slots >= 2;
}

void w4_gemv_chain(const W4ChainOp* ops, int n_ops, unsigned int* counters, cudaStream_t stream) {
  require_arg(
      ops && n_ops >= 1 && n_ops <= kW4ChainMaxOps,
      "w4_gemv_chain: needs 1 … " + std::to_string(kW4ChainMaxOps) + " ops, got " + std::to_string(n_ops));
  require_arg(counters != nullptr,
              "w4_gemv_chain: counters must be a device pointer to zeroed unsigned ints");
  ChainArgs a = make_chain(ops, n_ops);
  require_arg(
      a.op[0].p.slots >= 2,
      "w4_gemv_chain: the ops' shapes are not all packed matrices (group 128, cols % 128 == 0) that fit one "
      "chain's shared memory on this device (compute capability 9.0 needed)");
  for (int i = 0; i < n_ops; ++i) {
    const W4ChainOp& op = ops[i];
    ChainOpArgs& d = a.op[i];
    require_arg(op.w.records != nullptr, op_name(i) + ": w.records is null");
    require_arg(op.y != nullptr, op_name(i) + ": y is null");
    d.records = static_cast<const uint8_t*>(op.w.records);
    d.y = op.y;
    switch (op.input) {
      case W4ChainInput::plain:
        require_arg(op.x && aligned16(op.x),
                    op_name(i) + ": x must be a non-null, 16-byte aligned device pointer");
        require_arg(op.y != op.x, op_name(i) + ": y must not alias x");
        d.kind = Prologue::none;
        d.x = op.x;
        break;
      case W4ChainInput::swiglu:
        require_arg(op.x && op.u && aligned16(op.x) && aligned16(op.u),
                    op_name(i) + ": swiglu needs non-null, 16-byte aligned x (gate) and u");
        require_arg(op.y != op.x && op.y != op.u, op_name(i) + ": y must not alias x or u");
        d.kind = Prologue::swiglu;
        d.x = op.x;
        d.pro = detail::swiglu_prologue(op.u);
        break;
      case W4ChainInput::add_rmsnorm:
        require_arg(
            op.res && op.r && op.norm_weight && op.res_out && aligned16(op.res) && aligned16(op.r) &&
                aligned16(op.norm_weight) && aligned16(op.res_out),
            op_name(i) + ": add_rmsnorm needs non-null, 16-byte aligned res, r, norm_weight and res_out");
        require_arg(op.res_out != op.res && op.res_out != op.r && op.y != op.res && op.y != op.r &&
                        op.y != op.res_out,
                    op_name(i) + ": res_out and y must not alias res, r or each other");
        d.kind = Prologue::add_rmsnorm;
        d.x = op.res;
        d.pro = detail::add_rmsnorm_prologue(op.res, op.r, op.norm_weight, op.eps, op.res_out);
        break;
    }
  }
  a.counters = counters;
  static const bool attr_set = [] {
    allow_max_dynamic_smem(w4_gemv_chain_kernel);
    return true;
  }();
  (void)attr_set;
  // Cooperative by default: co-residency of every block (which the counters' waits need) is then the
  // runtime's guarantee, not an assumption about what else runs. WKV_W4_CHAIN_COOP=0: a plain launch (A/B).
  static const bool cooperative = [] {
    const char* e = std::getenv("WKV_W4_CHAIN_COOP");
    return !(e && *e == '0');
  }();
  const dim3 grid((unsigned)a.op[0].p.blocks), block(kThreads);
  if (cooperative)
    launch_kernel_cooperative(w4_gemv_chain_kernel, grid, block, a.op[0].p.smem, stream, a);
  else
    w4_gemv_chain_kernel<<<grid, block, a.op[0].p.smem, stream>>>(a);
  WKV_CHECK_LAUNCH();
}

}  // namespace wkv::kernels
