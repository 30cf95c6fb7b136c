// block.cuh: block-wide collectives built on the warp primitives of warp.cuh.
#pragma once

namespace tessera {

// Largest number of warps in a block (1024 threads of 32 lanes); also bounds wave64 blocks.
constexpr int kMaxBlockWarps = 1024 / 32;

// Exclusive prefix sum of one value per thread across the block; returns the thread's exclusive
// prefix and writes the block total to *total. Every thread of the block must call it (it has
// barriers); blockDim.x must be a multiple of the warp width. The trailing barrier lets the next
// call reuse the shared scratch.
template <typename T>
__device__ __forceinline__ T block_exclusive_scan(T v, T* total) {
  __shared__ T warp_totals[kMaxBlockWarps + 1];
  const int lane = lane_id();
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int nwarps = static_cast<int>(blockDim.x) / kWarpSize;
  const T incl = warp_inclusive_scan(v);
  if (lane == kWarpSize - 1) warp_totals[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    // nwarps <= kWarpSize for every block size up to 1024 on both warp widths.
    const T t = lane < nwarps ? warp_totals[lane] : T(0);
    const T ti = warp_inclusive_scan(t);
    if (lane < nwarps) warp_totals[lane] = ti - t;
    if (lane == nwarps - 1) warp_totals[kMaxBlockWarps] = ti;
  }
  __syncthreads();
  const T result = warp_totals[warp] + incl - v;
  *total = warp_totals[kMaxBlockWarps];
  __syncthreads();
  return result;
}

}  // namespace tessera
