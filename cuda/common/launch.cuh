// launch.cuh: how a kernel is declared so that it has a stable name on every executor.
//
//   TESSERA_GLOBAL void bitmask_sparsify_bf16(const uint16_t* a, ..., uint64_t n) { ... }
//   TESSERA_EXPORT(bitmask_sparsify_bf16)
//
// On CUDA and HIP, TESSERA_GLOBAL is `extern "C" __global__`: the PTX / code-object symbol is the
// plain name, which the Rust executors look up. On the host SIMT runtime the kernel is a static
// C++ function and TESSERA_EXPORT registers it (name, function, argument sizes) in the runtime's
// table, where a launch by name finds it and checks the argument sizes Rust passed.
//
//   TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock) bitmask_popcount(...) { ... }
//   TESSERA_EXPORT_BLOCK(bitmask_popcount, kBlock)
//
// TESSERA_EXPORT_BLOCK also records that the kernel requires blockDim == (threads, 1, 1), with
// `threads` the same constant as its TESSERA_LAUNCH_BOUNDS (which puts `.maxntid` in the PTX). On
// CUDA and HIP it expands to nothing; on SIMT a launch with another block fails (code 3, naming
// the kernel, the required and the given block), and the kernel table reports the block to Rust.
// Use it for every kernel whose launch sites always use one block size; TESSERA_EXPORT (any
// block) for kernels launched with several.
#pragma once

#if defined(TESSERA_SIMT)
#define TESSERA_GLOBAL static
#define TESSERA_EXPORT(name) TESSERA_SIMT_REGISTER(name, 0)
#define TESSERA_EXPORT_BLOCK(name, threads) TESSERA_SIMT_REGISTER(name, threads)
#define TESSERA_LAUNCH_BOUNDS(threads)
#else
#define TESSERA_GLOBAL extern "C" __global__
#define TESSERA_EXPORT(name)
#define TESSERA_EXPORT_BLOCK(name, threads)
#define TESSERA_LAUNCH_BOUNDS(threads) __launch_bounds__(threads)
#endif

// Dynamic shared memory: `TESSERA_DYNAMIC_SHARED(float, smem);` declares `smem` as a pointer to
// the block's dynamic shared memory (the bytes given at launch).
#if defined(TESSERA_SIMT)
#define TESSERA_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(tessera_simt::dynamic_shared())
#else
#define TESSERA_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) unsigned char name##_raw[]; \
  type* name = reinterpret_cast<type*>(name##_raw)
#endif
