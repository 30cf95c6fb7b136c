// selftest/scan.cu: warp inclusive scans with tessera::warp_inclusive_scan (shfl_up), 4- and
// 8-byte values; run on wave32 and (through hip/selftest/scan.hip) wave64.
#include "../common/tessera.cuh"

// Exported with TESSERA_EXPORT (any block): tests/simt_runtime.rs launches them with several block sizes.

// out[i] = inclusive prefix sum of in[] within i's warp (warps of the block's 1-D thread index).
TESSERA_GLOBAL void selftest_warp_scan(const uint32_t* __restrict__ in, uint32_t n,
                                       uint32_t* __restrict__ out) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t v = tessera::warp_inclusive_scan(i < n ? in[i] : 0u);
  if (i < n) out[i] = v;
}
TESSERA_EXPORT(selftest_warp_scan)

TESSERA_GLOBAL void selftest_warp_scan_u64(const uint64_t* __restrict__ in, uint32_t n,
                                           uint64_t* __restrict__ out) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  const uint64_t v = tessera::warp_inclusive_scan<uint64_t>(i < n ? in[i] : 0ull);
  if (i < n) out[i] = v;
}
TESSERA_EXPORT(selftest_warp_scan_u64)

// out[i] = in[] of lane (lane + 1) % warp, via shfl_idx (the source-lane form).
TESSERA_GLOBAL void selftest_warp_rotate(const float* __restrict__ in, float* __restrict__ out) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = tessera::lane_id();
  out[i] = tessera::shfl_idx(in[i], (lane + 1) % tessera::kWarpSize);
}
TESSERA_EXPORT(selftest_warp_rotate)
