// selftest/faults.cu: kernels with planted bugs that the host SIMT runtime must catch, and the
// correct variant of the first. Never launched by ops.
#include "../common/tessera.cuh"

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
