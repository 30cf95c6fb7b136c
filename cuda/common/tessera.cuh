// tessera.cuh: the one include of every tessera kernel source.
//
// The same kernel source builds three ways:
//   * nvcc -> PTX (sm_80, sm_90a)                       __CUDACC__ defined, TESSERA_SIMT not
//   * clang/hipcc -> AMDGPU code objects (gfx942/90a)   __HIP__ defined
//   * g++ with the host SIMT runtime (cuda/simt)        TESSERA_SIMT defined, and
//                                                       TESSERA_SIMT_HIP for the wave64 HIP build
// Kernels test TESSERA_TARGET_HIP to take a HIP-specific path; it is set for real HIP builds and
// for the SIMT build of the HIP entry files, so that path is what the wave64 SIMT tests run.
#pragma once

#if defined(TESSERA_SIMT)
#include "../simt/simt.hpp"
#elif defined(__HIP__)
#include "../../hip/compat.h"
#else
#include <cstdint>
#endif

#if defined(__HIP__) || defined(TESSERA_SIMT_HIP)
#define TESSERA_TARGET_HIP 1
#else
#define TESSERA_TARGET_HIP 0
#endif

#include "launch.cuh"
#include "dtype.cuh"
#include "warp.cuh"
#include "block.cuh"
#include "mma.cuh"
