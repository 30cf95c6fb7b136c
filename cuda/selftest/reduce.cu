// selftest/reduce.cu: block reductions that exercise the host SIMT runtime (static and dynamic
// shared memory, __syncthreads, warp shuffles). Not used by ops; run by tests/simt_runtime.rs.
#include "../common/tessera.cuh"

// Exported with TESSERA_EXPORT (any block): tests/simt_runtime.rs launches them with 64 to 1024 threads.

// Tree reduction in static shared memory. blockDim.x is a power of two <= 1024; one sum per block.
TESSERA_GLOBAL void selftest_block_sum(const uint32_t* __restrict__ in, uint32_t n,
                                       uint32_t* __restrict__ out) {
  __shared__ uint32_t s[1024];
  const uint32_t t = threadIdx.x;
  const uint32_t i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? in[i] : 0u;
  __syncthreads();
  for (uint32_t h = blockDim.x / 2; h > 0; h >>= 1) {
    if (t < h) s[t] += s[t + h];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}
TESSERA_EXPORT(selftest_block_sum)

// Warp sums (shfl_xor), then one partial per warp in dynamic shared memory (blockDim.x / warp
// size words), summed by warp 0. blockDim.x is a multiple of the warp size.
TESSERA_GLOBAL void selftest_block_sum_warp(const uint32_t* __restrict__ in, uint32_t n,
                                            uint32_t* __restrict__ out) {
  TESSERA_DYNAMIC_SHARED(uint32_t, partial);
  const uint32_t t = threadIdx.x;
  const uint32_t i = blockIdx.x * blockDim.x + t;
  const int lane = tessera::lane_id();
  const int warp = static_cast<int>(t) / tessera::kWarpSize;
  const int nwarps = static_cast<int>(blockDim.x) / tessera::kWarpSize;
  const uint32_t v = tessera::warp_sum(i < n ? in[i] : 0u);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const uint32_t w = tessera::warp_sum(lane < nwarps ? partial[lane] : 0u);
    if (lane == 0) out[blockIdx.x] = w;
  }
}
TESSERA_EXPORT(selftest_block_sum_warp)

// 20 barriers (10 rounds of write, barrier, read neighbour, barrier); used to time the runtime.
TESSERA_GLOBAL void selftest_barrier_loop(uint32_t* __restrict__ out, uint32_t rounds) {
  __shared__ uint32_t s[1024];
  const uint32_t t = threadIdx.x;
  uint32_t acc = t;
  for (uint32_t r = 0; r < rounds; ++r) {
    s[t] = acc;
    __syncthreads();
    acc += s[(t + 1) % blockDim.x];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + t] = acc;
}
TESSERA_EXPORT(selftest_barrier_loop)
