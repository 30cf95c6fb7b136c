// moe/align.cu: moe.align, the block alignment of top-k expert ids (vLLM's moe_align_block_size
// contract, made deterministic).
//
// Input topk_ids [T, k] (int32, n = T*k flat entries), E experts, block size B. Outputs:
//   sorted_token_ids  len = n + E*(B-1): the flat indices t*k+slot grouped by expert (increasing
//                     expert id), within an expert in increasing flat index; each expert's run
//                     padded to a multiple of B with the sentinel n; the tail after the last run
//                     also holds the sentinel.
//   expert_ids        ceil(len / B): the expert of each block of B entries; -1 for the blocks
//                     at or past num_tokens_post_padded.
//   total             [1]: num_tokens_post_padded (sum of the padded runs).
//   status            [2]: the number of ids outside [0, E) (0 when the input is valid), and E.
//                     Such ids are never used as an index; the op turns a non-zero count into an
//                     error (ops::DeviceCheck).
//
// Two launches; nothing is placed by atomic order, so the result is the same on every run:
//   1. moe_align_count  one block per chunk of `chunk` flat entries: a shared histogram
//                       (integer atomics, order-independent) -> counts[c, 0..E), and the chunk's
//                       number of out-of-range ids -> counts[c, E].
//   2. moe_align_place  one block per chunk again. Every block scans the counts itself (E*nchunks
//                       reads; the op picks chunk so that nchunks <= 256): per expert the total,
//                       its padded run start (block exclusive scan), and the count of the expert
//                       in the chunks before this block's. The grid together writes expert_ids
//                       and the padding sentinels (grid-stride, a binary search of the run
//                       starts); block 0 writes total and status. Then the block places its
//                       chunk in tiles of kBlock consecutive entries: lanes with equal experts
//                       find each other with ballots over the expert id's bits, rank by lane,
//                       and the warps of a tile take turns (one barrier each) reading and
//                       advancing a shared per-expert cursor, so the order within an expert is
//                       the flat index order.
//
// Limits: E <= kMaxExperts (1024); n + E*(B-1) < 2^31 (checked by the op). blockDim.x == kBlock.
#include "../common/tessera.cuh"

namespace tessera {
namespace moe {

constexpr int kBlock = 256;
constexpr int kMaxExperts = 1024;

__device__ __forceinline__ bool valid_expert(int32_t e, uint32_t num_experts) {
  return static_cast<uint32_t>(e) < num_experts;
}

// Largest expert e in [0, E) with start[e] <= p (start[0] == 0 <= p).
__device__ __forceinline__ uint32_t expert_of(const uint32_t* start, uint32_t num_experts, uint32_t p) {
  uint32_t lo = 0, hi = num_experts - 1;
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (start[mid] <= p) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__device__ __forceinline__ int popc_mask(lanemask_t m) {
#if TESSERA_WARP_SIZE == 64
  return __popcll(m);
#else
  return __popc(m);
#endif
}

// Index of the highest set bit of a non-zero mask.
__device__ __forceinline__ int highest_lane(lanemask_t m) {
#if TESSERA_WARP_SIZE == 64
  return 63 - __clzll(static_cast<long long>(m));
#else
  return 31 - __clz(static_cast<int>(m));
#endif
}

}  // namespace moe
}  // namespace tessera

using namespace tessera;
using namespace tessera::moe;

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    moe_align_count(const int32_t* __restrict__ topk_ids, uint32_t n, uint32_t num_experts, uint32_t chunk,
                    uint32_t* __restrict__ counts) {
  __shared__ uint32_t hist[kMaxExperts + 1];
  for (uint32_t e = threadIdx.x; e <= num_experts; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  const uint64_t first = static_cast<uint64_t>(blockIdx.x) * chunk;
  const uint64_t end = first + chunk < n ? first + chunk : n;
  for (uint64_t i = first + threadIdx.x; i < end; i += blockDim.x) {
    const int32_t e = topk_ids[i];
    atomicAdd(&hist[valid_expert(e, num_experts) ? static_cast<uint32_t>(e) : num_experts], 1u);
  }
  __syncthreads();
  uint32_t* row = counts + static_cast<uint64_t>(blockIdx.x) * (num_experts + 1);
  for (uint32_t e = threadIdx.x; e <= num_experts; e += blockDim.x) row[e] = hist[e];
}
TESSERA_EXPORT_BLOCK(moe_align_count, kBlock)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    moe_align_place(const int32_t* __restrict__ topk_ids, const uint32_t* __restrict__ counts, uint32_t n,
                    uint32_t num_experts, uint32_t block_size, uint32_t chunk, uint32_t nchunks, uint32_t len,
                    uint32_t nblocks, int32_t* __restrict__ sorted_token_ids, int32_t* __restrict__ expert_ids,
                    int32_t* __restrict__ total, int32_t* __restrict__ status) {
  __shared__ uint32_t s_start[kMaxExperts];
  __shared__ uint32_t s_cnt[kMaxExperts];
  __shared__ uint32_t s_cursor[kMaxExperts];
  const uint32_t tid = threadIdx.x;
  const uint32_t stride_row = num_experts + 1;
  // a. Per expert: total count, padded run start, and this chunk's start within the run.
  uint32_t carry = 0;
  for (uint32_t base = 0; base < num_experts; base += blockDim.x) {
    const uint32_t e = base + tid;
    uint32_t cnt = 0, before = 0;
    if (e < num_experts) {
      for (uint32_t c = 0; c < nchunks; ++c) {
        if (c == blockIdx.x) before = cnt;
        cnt += counts[static_cast<uint64_t>(c) * stride_row + e];
      }
    }
    const uint32_t padded = (cnt + block_size - 1) / block_size * block_size;
    uint32_t tile_total;
    const uint32_t ex = block_exclusive_scan<uint32_t>(padded, &tile_total);
    if (e < num_experts) {
      s_start[e] = carry + ex;
      s_cnt[e] = cnt;
      s_cursor[e] = carry + ex + before;
    }
    carry += tile_total;
  }
  const uint32_t post_padded = carry;
  if (blockIdx.x == 0) {
    // Out-of-range ids over all chunks (a block sum).
    uint32_t bad = 0;
    for (uint32_t c = tid; c < nchunks; c += blockDim.x) bad += counts[static_cast<uint64_t>(c) * stride_row + num_experts];
    uint32_t bad_total;
    block_exclusive_scan<uint32_t>(bad, &bad_total);
    if (tid == 0) {
      total[0] = static_cast<int32_t>(post_padded);
      status[0] = static_cast<int32_t>(bad_total);
      status[1] = static_cast<int32_t>(num_experts);
    }
  }
  __syncthreads();
  // b. expert_ids and the padding sentinels, over the whole grid.
  const uint32_t g = blockIdx.x * blockDim.x + tid;
  const uint32_t gstride = gridDim.x * blockDim.x;
  for (uint32_t b = g; b < nblocks; b += gstride) {
    const uint64_t p = static_cast<uint64_t>(b) * block_size;
    expert_ids[b] = p < post_padded ? static_cast<int32_t>(expert_of(s_start, num_experts, static_cast<uint32_t>(p))) : -1;
  }
  for (uint32_t p = g; p < len; p += gstride) {
    bool pad = p >= post_padded;
    if (!pad) {
      const uint32_t e = expert_of(s_start, num_experts, p);
      pad = p - s_start[e] >= s_cnt[e];
    }
    if (pad) sorted_token_ids[p] = static_cast<int32_t>(n);
  }
  // c. Stable placement of this block's chunk, a tile of kBlock entries at a time.
  if (blockIdx.x >= nchunks) return;  // n == 0: a grid of one block and no chunk
  const int lane = lane_id();
  const int warp = static_cast<int>(tid) / kWarpSize;
  const int nwarps = static_cast<int>(blockDim.x) / kWarpSize;
  const lanemask_t lt = (static_cast<lanemask_t>(1) << lane) - 1;
  int nbits = 0;
  while (nbits < 31 && (1u << nbits) < num_experts) ++nbits;
  const uint64_t first = static_cast<uint64_t>(blockIdx.x) * chunk;
  for (uint32_t off = 0; off < chunk; off += blockDim.x) {
    const uint64_t i = first + off + tid;
    const int32_t e = i < n ? topk_ids[i] : -1;
    const bool valid = i < n && valid_expert(e, num_experts);
    lanemask_t peers = tessera::ballot(valid);
    for (int bit = 0; bit < nbits; ++bit) {
      const bool set = valid && ((static_cast<uint32_t>(e) >> bit) & 1u);
      const lanemask_t m = tessera::ballot(set);
      peers &= set ? m : ~m;
    }
    const int leader = valid ? highest_lane(peers) : lane;
    const uint32_t rank = static_cast<uint32_t>(popc_mask(peers & lt));
    for (int w = 0; w < nwarps; ++w) {
      if (warp == w) {
        // The leader (highest lane of its group) reads and advances the cursor; the group's
        // other lanes get the base by shuffle, so no lane reads what another lane writes.
        const uint32_t base = (valid && lane == leader) ? s_cursor[e] : 0u;
        const uint32_t group_base = shfl_idx(base, leader);
        if (valid) sorted_token_ids[group_base + rank] = static_cast<int32_t>(i);
        if (valid && lane == leader) s_cursor[e] = base + rank + 1;
      }
      __syncthreads();
    }
  }
}
TESSERA_EXPORT_BLOCK(moe_align_place, kBlock)
