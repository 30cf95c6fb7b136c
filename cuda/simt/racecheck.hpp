// racecheck.hpp: the host SIMT runtime's shared-memory race detector and static shared-memory
// poisoning, as seen by the runtimes (simt.hpp, one per warp width).
//
// How it sees accesses: the wave32 and wave64 translation units are compiled with g++
// -fsanitize=thread, which makes every load and store of kernel code call a `__tsan_readN` /
// `__tsan_writeN` hook (and every atomic a `__tsan_atomicN_*` hook) before it happens. Nothing of
// ThreadSanitizer's own runtime is linked: racecheck.cpp, compiled without instrumentation,
// defines those hooks. A hook looks at the worker thread's context (`tessera_rc_ctx`, bound with
// tessera_simt_rc_bind); an access from a fiber that falls in the block's shared memory (the
// module's thread-local block, where `__shared__` variables live, or the block's dynamic shared
// memory) is checked against a per-byte shadow:
//
//   * race: two accesses to one byte from different threads in the same barrier interval (between
//     two __syncthreads), at least one a write and not both atomic, is a race unless both threads
//     are lanes of one warp and a warp collective of the whole warp (__syncwarp, a shuffle, a
//     vote, ldmatrix, mma) completed between them. The first race of a block is recorded in the
//     context; the runtime fails the block with it (compute-sanitizer racecheck's rule).
//   * poison: a read of a static `__shared__` byte not written since the block started first sets
//     it to 0xFF, as if every static shared array were filled with 0xFF at block start (dynamic
//     shared memory is memset at block start by the runtime).
//
// Memory the instrumentation cannot see: copies by calls into libc (memcpy/memset); the build
// passes -fno-tree-loop-distribute-patterns so g++ does not turn kernel loops into such calls.
// Fragment ops that read shared memory inside the scheduler (ldmatrix) report their reads with
// tessera_simt_rc_access.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

// The first race seen in a block.
struct tessera_rc_race {
  uintptr_t addr;       // the byte's address
  uint32_t dynamic;     // 1: dynamic shared memory (offset from its start); 0: a static __shared__
  uint32_t kind;        // 0 read after write, 1 write after read, 2 write after write
  int32_t first_tid;    // linear thread id of the earlier access
  int32_t second_tid;   // linear thread id of the later access
  uint32_t first_atomic, second_atomic;
  uint64_t dyn_offset;  // for dynamic shared memory: byte offset from its start
};

// One worker thread's view, owned by the runtime's per-worker resources.
struct tessera_rc_ctx {
  // what is shared memory
  uintptr_t tls_lo, tls_len;  // the module's thread-local block (static __shared__ lives here)
  uintptr_t dyn_lo, dyn_len;  // the block's dynamic shared memory
  // who runs
  int32_t cur;                // linear thread id of the running fiber; -1 in the scheduler
  uint32_t wave;              // warp width
  uint32_t epoch;             // the barrier interval; bumped at block start and every __syncthreads
  uint32_t block_first;       // epoch at the block's start
  const uint16_t* warp_gen;   // per warp: whole-warp collectives completed in this interval
  uint32_t flags;             // TESSERA_RC_RACES | TESSERA_RC_POISON
  // result
  uint32_t raced;             // 1 once `race` holds the block's first race
  tessera_rc_race race;
  // shadow, managed by racecheck.cpp
  void* shadow;
  size_t shadow_cells;
};

#define TESSERA_RC_RACES 1u
#define TESSERA_RC_POISON 2u

// Makes `ctx` (or null) the calling OS thread's context; fills tls_lo/tls_len on first use and
// sizes the shadow for `dyn_cap` bytes of dynamic shared memory. Returns 0, or -1 when the
// thread-local block cannot be found (the checks are then off for this thread).
int tessera_simt_rc_bind(tessera_rc_ctx* ctx, const void* tls_probe, size_t dyn_cap);
// Starts a block: a new epoch (the shadow is cleared when epochs would wrap), no race recorded.
void tessera_simt_rc_block_begin(tessera_rc_ctx* ctx);
// Marks the 8-byte thread-local at `tls_var` (a runtime's own, not shared memory) as never
// checked nor poisoned, on every thread. Each runtime registers its thread-locals before its
// first launch.
void tessera_simt_rc_exclude(const void* tls_var);
// Releases the shadow of a context that is being destroyed.
void tessera_simt_rc_free(tessera_rc_ctx* ctx);
// Records an access made on behalf of thread `tid` (used by emulated warp ops that touch shared
// memory from the scheduler).
void tessera_simt_rc_access(tessera_rc_ctx* ctx, const void* addr, size_t n, int write, int32_t tid);
// Names the static shared variable holding `addr` ("(anonymous namespace)::kernel(...)::tile")
// into buf and stores the byte offset inside it; returns 0 when no symbol covers it (buf then holds
// the offset in the thread-local block).
int tessera_simt_rc_symbolize(const tessera_rc_ctx* ctx, uintptr_t addr, char* buf, size_t len,
                              uint64_t* offset);
// Process-wide default flags: TESSERA_SIMT_RACECHECK=0 in the environment turns race tracking off
// (poisoning stays on); read once.
uint32_t tessera_simt_rc_default_flags(void);

}  // extern "C"
