// selftest/histogram.cu: atomics on shared and global memory (grid-stride loop).
#include "../common/tessera.cuh"

// Exported with TESSERA_EXPORT (any block): a grid-stride kernel that works with any block.

// hist[b] += number of i with in[i] % nbins == b (nbins <= 256); *count += n; *fsum += sum of
// (in[i] % 16) as floats (exact); *maxv = max(in[]).
TESSERA_GLOBAL void selftest_histogram(const uint32_t* __restrict__ in, uint32_t n, uint32_t nbins,
                                       uint32_t* __restrict__ hist, unsigned long long* __restrict__ count,
                                       float* __restrict__ fsum, uint32_t* __restrict__ maxv) {
  __shared__ uint32_t local[256];
  for (uint32_t b = threadIdx.x; b < nbins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  const uint32_t stride = gridDim.x * blockDim.x;
  unsigned long long mine = 0;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    atomicAdd(&local[in[i] % nbins], 1u);
    atomicAdd(fsum, static_cast<float>(in[i] % 16u));
    atomicMax(maxv, in[i]);
    ++mine;
  }
  __syncthreads();
  for (uint32_t b = threadIdx.x; b < nbins; b += blockDim.x) {
    if (local[b]) atomicAdd(&hist[b], local[b]);
  }
  if (mine) atomicAdd(count, mine);
}
TESSERA_EXPORT(selftest_histogram)
