// hip/compat.h: what the portable CUDA kernel sources need to compile as HIP.
//
// Included by cuda/common/tessera.cuh when __HIP__ is defined (clang -x hip, hipcc). Tested with
// clang-19 and Debian 12's HIP 5.2 headers (libamdhip64-dev) and meant to work unchanged with a
// ROCm 6.x hipcc.
//
// Most of what the kernels use exists in HIP under the CUDA spelling: __syncthreads, __popc,
// __popcll, __uint_as_float, __float_as_uint, __launch_bounds__, __restrict__, __align__,
// uint4 and the other vector types, atomics, threadIdx/blockIdx/blockDim/gridDim. Warp
// collectives differ: HIP's wavefront on CDNA is 64 lanes and HIP < 6.2 has no *_sync
// intrinsics, so cuda/common/warp.cuh spells them __shfl_xor/__shfl/__ballot under __HIP__
// (64-bit lane masks). What HIP lacks is defined here, guarded so that newer headers that
// provide it win.
#pragma once

#include <hip/hip_runtime.h>
#include <cstdint>

#ifndef HIP_VERSION
#include <hip/hip_version.h>
#endif

// HIP before 6.2 has no __syncwarp. A wavefront executes in lockstep; a wave barrier keeps the
// compiler from moving memory operations across the point, which is what CUDA code relies on.
#if HIP_VERSION < 60200000 && !defined(__syncwarp)
__device__ __forceinline__ void __syncwarp(unsigned long long = ~0ull) { __builtin_amdgcn_wave_barrier(); }
#endif

// HIP before 6.2 has no __activemask: the exec mask of the wavefront is the active lanes.
#if HIP_VERSION < 60200000 && !defined(__activemask)
__device__ __forceinline__ unsigned long long __activemask() { return __ballot(1); }
#endif
