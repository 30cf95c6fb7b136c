// selftest/faults.cu: kernels with planted bugs that the host SIMT runtime must catch, and the
// correct variant of the first. Never launched by ops.
#include "../common/tessera.cuh"

// Exported with TESSERA_EXPORT (any block): the tests launch them with the block each case needs and
// they work with any; selftest_tile_pipeline, whose shared tile holds kTileThreads words, requires
// that block (TESSERA_EXPORT_BLOCK).

// out[i] = in[i] + in[i - 1] within the block, through dynamic shared memory (blockDim.x words).
TESSERA_GLOBAL void selftest_neighbor_sum(const uint32_t* __restrict__ in, uint32_t* __restrict__ out) {
  TESSERA_DYNAMIC_SHARED(uint32_t, s);
  const uint32_t t = threadIdx.x;
  const uint32_t i = blockIdx.x * blockDim.x + t;
  s[t] = in[i];
  __syncthreads();
  out[i] = s[t] + (t > 0 ? s[t - 1] : 0u);
}
TESSERA_EXPORT(selftest_neighbor_sum)

// Fault 1: the same without the barrier between the shared-memory write and another thread's
// read. In thread order it happens to work; a shuffled schedule exposes it.
TESSERA_GLOBAL void selftest_neighbor_sum_racy(const uint32_t* __restrict__ in, uint32_t* __restrict__ out) {
  TESSERA_DYNAMIC_SHARED(uint32_t, s);
  const uint32_t t = threadIdx.x;
  const uint32_t i = blockIdx.x * blockDim.x + t;
  s[t] = in[i];
  out[i] = s[t] + (t > 0 ? s[t - 1] : 0u);
}
TESSERA_EXPORT(selftest_neighbor_sum_racy)

// Fault 2: off-by-one bound; thread n writes one element past the end of out.
TESSERA_GLOBAL void selftest_off_by_one(const uint32_t* __restrict__ in, uint32_t n, uint32_t* __restrict__ out) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = i < n ? 2u * in[i] : 0xdeadbeefu;
}
TESSERA_EXPORT(selftest_off_by_one)

// Fault 3: __syncthreads inside a branch only threads below k take.
TESSERA_GLOBAL void selftest_divergent_barrier(uint32_t* __restrict__ out, uint32_t k) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (threadIdx.x < k) __syncthreads();
  out[i] = threadIdx.x;
}
TESSERA_EXPORT(selftest_divergent_barrier)

// ---- the fault suite (tests/fault_suite.rs) ------------------------------------------------------------
// Small kernels with a `fault` argument: 0 runs the correct kernel, any other value plants one bug.
// Each planted bug is one the SIMT runtime once missed or must keep catching; the test names the
// mechanism that catches each.
namespace tessera {
namespace selftest_faults {
constexpr uint32_t kTileThreads = 128;
}  // namespace selftest_faults
}  // namespace tessera

// A tile pipeline like attention's K/V loop: per tile every thread stores one element in shared
// memory, then reads the element of the mirrored thread (another warp) and reduces over its warp.
// out[b * blockDim + t] = sum over tiles of the warp sum of the mirrored elements.
//   fault 1: missing barrier after the store (a __syncwarp where a __syncthreads is needed);
//   fault 2: missing barrier before the next tile's store overwrites the tile.
// With either fault the in-order and shuffled schedules still give the right answer (the warp
// collectives act as block barriers there); the warp-skew schedule and the race detector catch both.
TESSERA_GLOBAL void selftest_tile_pipeline(const uint32_t* __restrict__ in, uint32_t ntiles,
                                           uint32_t* __restrict__ out, uint32_t fault) {
  __shared__ uint32_t tile[tessera::selftest_faults::kTileThreads];
  const uint32_t t = threadIdx.x, n = blockDim.x;
  uint32_t acc = 0;
  for (uint32_t k = 0; k < ntiles; ++k) {
    if (k > 0 && fault != 2) __syncthreads();
    tile[t] = in[(static_cast<size_t>(blockIdx.x) * ntiles + k) * n + t];
    if (fault == 1) {
      __syncwarp();
    } else {
      __syncthreads();
    }
    acc += tessera::warp_sum(tile[n - 1 - t]);
  }
  out[blockIdx.x * n + t] = acc;
}
TESSERA_EXPORT_BLOCK(selftest_tile_pipeline, tessera::selftest_faults::kTileThreads)

// A per-block histogram of in[i] % 16 in static shared memory.
//   fault 1: a plain `+=` instead of atomicAdd (a shared-memory race the schedules cannot show: a
//            fiber is never interrupted between the read and the write);
//   fault 2: the bins are never zeroed (static shared memory read before it is written).
TESSERA_GLOBAL void selftest_shared_histogram(const uint32_t* __restrict__ in, uint32_t per_block,
                                              uint32_t* __restrict__ hist, uint32_t fault) {
  __shared__ uint32_t bins[16];
  if (fault != 2 && threadIdx.x < 16) bins[threadIdx.x] = 0;
  __syncthreads();
  for (uint32_t i = threadIdx.x; i < per_block; i += blockDim.x) {
    const uint32_t b = in[static_cast<size_t>(blockIdx.x) * per_block + i] % 16u;
    if (fault == 1) {
      bins[b] += 1u;
    } else {
      atomicAdd(&bins[b], 1u);
    }
  }
  __syncthreads();
  if (threadIdx.x < 16) hist[blockIdx.x * 16 + threadIdx.x] = bins[threadIdx.x];
}
TESSERA_EXPORT(selftest_shared_histogram)

// out[b] = max of the block's blockDim.x inputs, by a shared-memory tree (blockDim.x a power of two).
//   fault 1: the barrier after the level with stride 4 is missing (like the codec's block max and
//            codec_minmax's tree); on some data no result changes.
TESSERA_GLOBAL void selftest_block_max(const uint32_t* __restrict__ in, uint32_t* __restrict__ out, uint32_t fault) {
  __shared__ uint32_t red[1024];
  const uint32_t t = threadIdx.x;
  red[t] = in[static_cast<size_t>(blockIdx.x) * blockDim.x + t];
  __syncthreads();
  for (uint32_t s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) red[t] = max(red[t], red[t + s]);
    if (!(fault == 1 && s == 4)) __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = red[0];
}
TESSERA_EXPORT(selftest_block_max)

// out[i] = the sum of in[] over the thread's warp (every lane gets it).
//   fault 1: the butterfly starts at a hard-coded 16, right for 32-lane warps only.
TESSERA_GLOBAL void selftest_warp_sum(const uint32_t* __restrict__ in, uint32_t* __restrict__ out, uint32_t fault) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  uint32_t v = in[i];
  for (int m = fault == 1 ? 16 : tessera::kWarpSize / 2; m > 0; m >>= 1) v += tessera::shfl_xor(v, m);
  out[i] = v;
}
TESSERA_EXPORT(selftest_warp_sum)

// out[i] = 2 * in[i] for i < n.
//   fault 1: thread 0 also writes `far` elements past the end (a whole row past, say) — far
//            beyond the red zone, into the buffer's guard pages.
TESSERA_GLOBAL void selftest_far_write(const uint32_t* __restrict__ in, uint32_t n, uint32_t far,
                                       uint32_t* __restrict__ out, uint32_t fault) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = 2u * in[i];
  if (fault == 1 && i == 0) out[static_cast<size_t>(n) + far] = 1u;
}
TESSERA_EXPORT(selftest_far_write)

#if !TESSERA_TARGET_HIP
// One 16x16 bf16 tile loaded into shared memory by all four warps (two elements per thread, row
// stride 24), then every warp reads it with ldmatrix.x4: out[(warp * 32 + lane) * 4 + j] = r[j].
//   fault 1: no __syncthreads between the store and ldmatrix (the missed barrier on attention's
//            mma.sync path): hidden by the in-order and shuffled schedules, where ldmatrix (a warp
//            collective) completes only once every thread waits.
TESSERA_GLOBAL void selftest_ldmatrix_tile(const uint16_t* __restrict__ in, uint32_t* __restrict__ out,
                                           uint32_t fault) {
  __shared__ __align__(16) uint16_t tile[16 * 24];
  const uint32_t t = threadIdx.x;
  for (uint32_t e = 2 * t; e < 2 * t + 2; ++e) tile[(e / 16) * 24 + e % 16] = in[e];
  if (fault != 1) __syncthreads();
  const int lane = tessera::lane_id();
  uint32_t r[4];
  tessera::mma::ldmatrix_x4(r, tile + (lane & 15) * 24 + 8 * (lane >> 4));
  for (int j = 0; j < 4; ++j) out[t * 4 + j] = r[j];
}
TESSERA_EXPORT(selftest_ldmatrix_tile)
#endif
