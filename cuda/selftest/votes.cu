// selftest/votes.cu: __syncthreads_count/_and/_or, ballot, any, all.
#include "../common/tessera.cuh"

// Exported with TESSERA_EXPORT (any block): tests/simt_runtime.rs launches them with several block sizes.

// p = in[i] > threshold. Per block: out[3b] = count, out[3b+1] = and, out[3b+2] = or.
TESSERA_GLOBAL void selftest_sync_votes(const uint32_t* __restrict__ in, uint32_t threshold,
                                        uint32_t* __restrict__ out) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  const bool p = in[i] > threshold;
  const int c = __syncthreads_count(p);
  const int a = __syncthreads_and(p);
  const int o = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    out[3 * blockIdx.x] = static_cast<uint32_t>(c);
    out[3 * blockIdx.x + 1] = static_cast<uint32_t>(a);
    out[3 * blockIdx.x + 2] = static_cast<uint32_t>(o);
  }
}
TESSERA_EXPORT(selftest_sync_votes)

// Per warp w (global warp index): ballots[w] = ballot of p, anyall[2w] = any(p), anyall[2w+1] = all(p).
TESSERA_GLOBAL void selftest_ballot(const uint32_t* __restrict__ in, uint32_t threshold,
                                    unsigned long long* __restrict__ ballots, uint32_t* __restrict__ anyall) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  const bool p = in[i] > threshold;
  const tessera::lanemask_t m = tessera::ballot(p);
#if defined(__HIP__)
  const int any = __any(p);
  const int all = __all(p);
#else
  const int any = __any_sync(TESSERA_FULL_MASK, p);
  const int all = __all_sync(TESSERA_FULL_MASK, p);
#endif
  if (tessera::lane_id() == 0) {
    const uint32_t w = i / tessera::kWarpSize;
    ballots[w] = static_cast<unsigned long long>(m);
    anyall[2 * w] = static_cast<uint32_t>(any);
    anyall[2 * w + 1] = static_cast<uint32_t>(all);
  }
}
TESSERA_EXPORT(selftest_ballot)
