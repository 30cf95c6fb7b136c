// async_copy.cuh: 16-byte global -> shared copies that overlap with compute where the hardware
// can (namespace tessera::async).
//
//   copy16(dst, src, pred)  dst (shared, 16-byte aligned) gets the 16 bytes at src (global,
//                           16-byte aligned) when pred, else 16 zero bytes (src is not read then,
//                           but must still be a valid pointer: pass the buffer's base).
//   commit()                closes the group of copies issued since the last commit.
//   wait<N>()               waits until at most N committed groups are still in flight.
//
// CUDA sm_80+: cp.async.cg.shared.global with a source size of 16 or 0 (0 zero-fills), and
// cp.async.commit_group / cp.async.wait_group N. The copies are asynchronous: a thread sees the
// data of its own copies after wait, and the other threads' only after wait and a __syncthreads.
// Every other target (HIP, the host SIMT runtime, CUDA below sm_80): a plain synchronous 16-byte
// load and store, and commit / wait do nothing. A kernel written for the asynchronous case
// (wait<N>() then __syncthreads() before reading the tile) is correct on both, and on SIMT the
// race detector sees the stores as ordinary shared-memory writes.
#pragma once

namespace tessera {
namespace async {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 && !defined(TESSERA_SIMT)
#define TESSERA_CP_ASYNC 1
#else
#define TESSERA_CP_ASYNC 0
#endif

__device__ __forceinline__ void copy16(void* dst, const void* src, bool pred) {
#if TESSERA_CP_ASYNC
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
#else
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (pred) v = *static_cast<const uint4*>(src);
  *static_cast<uint4*>(dst) = v;
#endif
}

__device__ __forceinline__ void commit() {
#if TESSERA_CP_ASYNC
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void wait() {
#if TESSERA_CP_ASYNC
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

#undef TESSERA_CP_ASYNC

}  // namespace async
}  // namespace tessera
