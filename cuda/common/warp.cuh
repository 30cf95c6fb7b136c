// warp.cuh: warp width, lane masks and warp collectives, one spelling for CUDA, HIP and SIMT.
//
// CUDA warps are 32 lanes. CDNA (gfx90a, gfx942) wavefronts are 64. The host SIMT runtime takes
// the width as a build parameter (TESSERA_WARP_SIZE = 32 for the CUDA sources, 64 for HIP).
#pragma once

#if defined(TESSERA_SIMT)
#define TESSERA_WARP_SIZE TESSERA_SIMT_WARP_SIZE
#elif defined(__HIP__)
#define TESSERA_WARP_SIZE 64
#else
#define TESSERA_WARP_SIZE 32
#endif

namespace tessera {

#if TESSERA_WARP_SIZE == 64
using lanemask_t = unsigned long long;
#define TESSERA_FULL_MASK 0xffffffffffffffffull
#else
using lanemask_t = unsigned int;
#define TESSERA_FULL_MASK 0xffffffffu
#endif

constexpr int kWarpSize = TESSERA_WARP_SIZE;

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x) % kWarpSize; }

// ---- shuffles (all lanes of the warp take part) ----------------------------------------------
#if defined(__HIP__)
template <typename T> __device__ __forceinline__ T shfl_xor(T v, int m) { return __shfl_xor(v, m, kWarpSize); }
template <typename T> __device__ __forceinline__ T shfl_up(T v, unsigned d) { return __shfl_up(v, d, kWarpSize); }
template <typename T> __device__ __forceinline__ T shfl_down(T v, unsigned d) { return __shfl_down(v, d, kWarpSize); }
template <typename T> __device__ __forceinline__ T shfl_idx(T v, int src) { return __shfl(v, src, kWarpSize); }
__device__ __forceinline__ lanemask_t ballot(bool p) { return __ballot(p); }
#else
template <typename T> __device__ __forceinline__ T shfl_xor(T v, int m) { return __shfl_xor_sync(TESSERA_FULL_MASK, v, m); }
template <typename T> __device__ __forceinline__ T shfl_up(T v, unsigned d) { return __shfl_up_sync(TESSERA_FULL_MASK, v, d); }
template <typename T> __device__ __forceinline__ T shfl_down(T v, unsigned d) { return __shfl_down_sync(TESSERA_FULL_MASK, v, d); }
template <typename T> __device__ __forceinline__ T shfl_idx(T v, int src) { return __shfl_sync(TESSERA_FULL_MASK, v, src); }
__device__ __forceinline__ lanemask_t ballot(bool p) { return __ballot_sync(TESSERA_FULL_MASK, p); }
#endif

// Sum over the warp; every lane gets the total.
template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m >>= 1) v += shfl_xor(v, m);
  return v;
}

// Inclusive prefix sum over the warp (Hillis-Steele with shfl_up).
template <typename T> __device__ __forceinline__ T warp_inclusive_scan(T v) {
  const int lane = lane_id();
#pragma unroll
  for (int d = 1; d < kWarpSize; d <<= 1) {
    T o = shfl_up(v, d);
    if (lane >= d) v += o;
  }
  return v;
}

}  // namespace tessera
