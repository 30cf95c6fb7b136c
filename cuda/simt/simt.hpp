// simt.hpp: the host SIMT runtime. Included (through cuda/common/tessera.cuh) when TESSERA_SIMT is
// defined; provides what CUDA kernel source needs to compile with g++ and run on the CPU.
//
// Model (see /work/shared/ARCHITECTURE.md §2):
//   * every thread of a block is a fiber with its own mmap'd stack; the fibers of one block run on
//     one OS thread, so `__shared__` is `static thread_local`; blocks run in parallel on workers;
//   * a fiber runs until it reaches a barrier or warp collective, records where it waits and
//     yields to the block's scheduler; when no fiber is runnable the scheduler completes warp
//     collectives whose lanes have all arrived, then releases a block barrier that every thread
//     reached at the same call site, else reports the divergence (kernel, block, thread);
//   * schedules: in-order, or a seeded permutation of the runnable fibers at every round.
//
// Build contract (build/simt.rs): one translation unit per kernel module and warp width includes
// this header, then the module's source inside an unnamed namespace (kernels and their helpers
// have internal linkage), then TESSERA_SIMT_UNIT(<module ident>), which defines the unit's one
// C symbol, tessera_simt_w<WAVE>_unit_<ident>(), adding its kernels to the wave's registry. One
// runtime unit per wave defines TESSERA_SIMT_RUNTIME_UNIT (the context switch's assembly is
// emitted there only) and includes entry.hpp, the C entry points tessera_simt_w<WAVE>_*, which
// call every unit's function once before first use.
//
// The runtime is header-only: everything here is `inline` (functions, variables) in the
// namespace tessera_simt::w<WAVE>, an inline namespace (code names it tessera_simt::), so that each
// unit emits what it uses and the linker keeps one copy per wave (one registry, one scheduler);
// the wave32 and wave64 copies have different names, so both libraries link into one binary.
// What only kernel code uses (intrinsics.hpp) stays in unnamed namespaces, per unit.
#ifndef TESSERA_SIMT_HPP
#define TESSERA_SIMT_HPP

#ifndef TESSERA_SIMT_WARP_SIZE
#error "TESSERA_SIMT_WARP_SIZE must be defined (32 or 64)"
#endif

// Every standard header kernels may use is included here, outside the unnamed namespace the kernel
// sources are included in.
#include <algorithm>
#include <atomic>
#include <bit>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <math.h>
#include <mutex>
#include <new>
#include <stdexcept>
#include <stdint.h>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "racecheck.hpp"

// ---- CUDA qualifiers ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __constant__ static
#define __managed__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define warpSize TESSERA_SIMT_WARP_SIZE

#define TESSERA_SIMT_STR2(x) #x
#define TESSERA_SIMT_STR(x) TESSERA_SIMT_STR2(x)
#define TESSERA_SIMT_CAT2(a, b) a##b
#define TESSERA_SIMT_CAT(a, b) TESSERA_SIMT_CAT2(a, b)
// The wave's namespace, tessera_simt::w32 or tessera_simt::w64.
#define TESSERA_SIMT_NS TESSERA_SIMT_CAT(w, TESSERA_SIMT_WARP_SIZE)
// The wave's C symbols: TESSERA_SIMT_SYM(launch) is tessera_simt_w32_launch or tessera_simt_w64_launch.
#define TESSERA_SIMT_SYM3(w, n) tessera_simt_w##w##_##n
#define TESSERA_SIMT_SYM2(w, n) TESSERA_SIMT_SYM3(w, n)
#define TESSERA_SIMT_SYM(n) TESSERA_SIMT_SYM2(TESSERA_SIMT_WARP_SIZE, n)

// ---- vector types ---------------------------------------------------------------------------------
// In the wave's namespace (the runtime's structs hold uint3 and dim3), used at global scope.
namespace tessera_simt {
inline namespace TESSERA_SIMT_NS {
#define TESSERA_SIMT_VEC2(name, T, al)                                                      \
  struct __attribute__((aligned(al))) name { T x, y; };                                     \
  __forceinline__ constexpr name make_##name(T x, T y) { return name{x, y}; }
#define TESSERA_SIMT_VEC3(name, T)                                                          \
  struct name { T x, y, z; };                                                               \
  __forceinline__ constexpr name make_##name(T x, T y, T z) { return name{x, y, z}; }
#define TESSERA_SIMT_VEC4(name, T, al)                                                      \
  struct __attribute__((aligned(al))) name { T x, y, z, w; };                               \
  __forceinline__ constexpr name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }

TESSERA_SIMT_VEC2(char2, signed char, 2)
TESSERA_SIMT_VEC2(uchar2, unsigned char, 2)
TESSERA_SIMT_VEC2(short2, short, 4)
TESSERA_SIMT_VEC2(ushort2, unsigned short, 4)
TESSERA_SIMT_VEC2(int2, int, 8)
TESSERA_SIMT_VEC2(uint2, unsigned, 8)
TESSERA_SIMT_VEC2(float2, float, 8)
TESSERA_SIMT_VEC2(longlong2, long long, 16)
TESSERA_SIMT_VEC2(ulonglong2, unsigned long long, 16)
TESSERA_SIMT_VEC2(double2, double, 16)
TESSERA_SIMT_VEC3(int3, int)
TESSERA_SIMT_VEC3(uint3, unsigned)
TESSERA_SIMT_VEC3(float3, float)
TESSERA_SIMT_VEC4(char4, signed char, 4)
TESSERA_SIMT_VEC4(uchar4, unsigned char, 4)
TESSERA_SIMT_VEC4(short4, short, 8)
TESSERA_SIMT_VEC4(ushort4, unsigned short, 8)
TESSERA_SIMT_VEC4(int4, int, 16)
TESSERA_SIMT_VEC4(uint4, unsigned, 16)
TESSERA_SIMT_VEC4(float4, float, 16)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
}  // namespace TESSERA_SIMT_NS
}  // namespace tessera_simt
#define TESSERA_SIMT_USE_VEC(name) \
  using ::tessera_simt::name;      \
  using ::tessera_simt::make_##name;
TESSERA_SIMT_USE_VEC(char2)
TESSERA_SIMT_USE_VEC(uchar2)
TESSERA_SIMT_USE_VEC(short2)
TESSERA_SIMT_USE_VEC(ushort2)
TESSERA_SIMT_USE_VEC(int2)
TESSERA_SIMT_USE_VEC(uint2)
TESSERA_SIMT_USE_VEC(float2)
TESSERA_SIMT_USE_VEC(longlong2)
TESSERA_SIMT_USE_VEC(ulonglong2)
TESSERA_SIMT_USE_VEC(double2)
TESSERA_SIMT_USE_VEC(int3)
TESSERA_SIMT_USE_VEC(uint3)
TESSERA_SIMT_USE_VEC(float3)
TESSERA_SIMT_USE_VEC(char4)
TESSERA_SIMT_USE_VEC(uchar4)
TESSERA_SIMT_USE_VEC(short4)
TESSERA_SIMT_USE_VEC(ushort4)
TESSERA_SIMT_USE_VEC(int4)
TESSERA_SIMT_USE_VEC(uint4)
TESSERA_SIMT_USE_VEC(float4)
#undef TESSERA_SIMT_USE_VEC
using ::tessera_simt::dim3;

// ---- context switch -------------------------------------------------------------------------------
// tessera_simt_switch(save, to): saves the callee-saved registers and the FP control words on the
// current stack, stores the stack pointer in *save and resumes the context whose stack pointer is
// `to`. It is an opaque call, so the compiler reloads memory after it returns. A new fiber's stack
// is prepared so that the switch "returns" into the trampoline, which calls fn(arg) with the
// function and argument taken from two restored callee-saved registers.
#define TESSERA_SIMT_SYM_SWITCH "tessera_simt_w" TESSERA_SIMT_STR(TESSERA_SIMT_WARP_SIZE) "_switch"
#define TESSERA_SIMT_SYM_TRAMP "tessera_simt_w" TESSERA_SIMT_STR(TESSERA_SIMT_WARP_SIZE) "_trampoline"

extern "C" void tessera_simt_switch(void** save, void* to) __asm__(TESSERA_SIMT_SYM_SWITCH);
extern "C" void tessera_simt_trampoline() __asm__(TESSERA_SIMT_SYM_TRAMP);

// Emitted by the wave's runtime unit only (two definitions would not link).
#if !defined(TESSERA_SIMT_RUNTIME_UNIT)
#if !defined(__x86_64__) && !defined(__aarch64__)
#error "the host SIMT runtime has a context switch for x86_64 and aarch64 only"
#endif
#elif defined(__x86_64__)
__asm__(
    ".text\n"
    ".globl " TESSERA_SIMT_SYM_SWITCH "\n"
    ".type " TESSERA_SIMT_SYM_SWITCH ",@function\n"
    ".p2align 4\n" TESSERA_SIMT_SYM_SWITCH ":\n"
    "  pushq %rbp\n"
    "  pushq %rbx\n"
    "  pushq %r12\n"
    "  pushq %r13\n"
    "  pushq %r14\n"
    "  pushq %r15\n"
    "  subq $16, %rsp\n"
    "  stmxcsr (%rsp)\n"
    "  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n"
    "  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n"
    "  fldcw 4(%rsp)\n"
    "  addq $16, %rsp\n"
    "  popq %r15\n"
    "  popq %r14\n"
    "  popq %r13\n"
    "  popq %r12\n"
    "  popq %rbx\n"
    "  popq %rbp\n"
    "  ret\n"
    ".size " TESSERA_SIMT_SYM_SWITCH ", .-" TESSERA_SIMT_SYM_SWITCH "\n"
    ".globl " TESSERA_SIMT_SYM_TRAMP "\n"
    ".type " TESSERA_SIMT_SYM_TRAMP ",@function\n"
    ".p2align 4\n" TESSERA_SIMT_SYM_TRAMP ":\n"
    "  movq %r12, %rdi\n"
    "  andq $-16, %rsp\n"
    "  callq *%r13\n"
    "  ud2\n"
    ".size " TESSERA_SIMT_SYM_TRAMP ", .-" TESSERA_SIMT_SYM_TRAMP "\n");
#elif defined(__aarch64__)
// Untested: saves x19-x30, d8-d15 and FPCR (176-byte frame).
__asm__(
    ".text\n"
    ".globl " TESSERA_SIMT_SYM_SWITCH "\n"
    ".type " TESSERA_SIMT_SYM_SWITCH ",%function\n"
    ".p2align 4\n" TESSERA_SIMT_SYM_SWITCH ":\n"
    "  sub sp, sp, #176\n"
    "  stp x19, x20, [sp, #0]\n"
    "  stp x21, x22, [sp, #16]\n"
    "  stp x23, x24, [sp, #32]\n"
    "  stp x25, x26, [sp, #48]\n"
    "  stp x27, x28, [sp, #64]\n"
    "  stp x29, x30, [sp, #80]\n"
    "  stp d8, d9, [sp, #96]\n"
    "  stp d10, d11, [sp, #112]\n"
    "  stp d12, d13, [sp, #128]\n"
    "  stp d14, d15, [sp, #144]\n"
    "  mrs x9, fpcr\n"
    "  str x9, [sp, #160]\n"
    "  mov x9, sp\n"
    "  str x9, [x0]\n"
    "  mov sp, x1\n"
    "  ldr x9, [sp, #160]\n"
    "  msr fpcr, x9\n"
    "  ldp x19, x20, [sp, #0]\n"
    "  ldp x21, x22, [sp, #16]\n"
    "  ldp x23, x24, [sp, #32]\n"
    "  ldp x25, x26, [sp, #48]\n"
    "  ldp x27, x28, [sp, #64]\n"
    "  ldp x29, x30, [sp, #80]\n"
    "  ldp d8, d9, [sp, #96]\n"
    "  ldp d10, d11, [sp, #112]\n"
    "  ldp d12, d13, [sp, #128]\n"
    "  ldp d14, d15, [sp, #144]\n"
    "  add sp, sp, #176\n"
    "  ret\n"
    ".size " TESSERA_SIMT_SYM_SWITCH ", .-" TESSERA_SIMT_SYM_SWITCH "\n"
    ".globl " TESSERA_SIMT_SYM_TRAMP "\n"
    ".type " TESSERA_SIMT_SYM_TRAMP ",%function\n"
    ".p2align 4\n" TESSERA_SIMT_SYM_TRAMP ":\n"
    "  mov x0, x19\n"
    "  blr x20\n"
    "  brk #0\n"
    ".size " TESSERA_SIMT_SYM_TRAMP ", .-" TESSERA_SIMT_SYM_TRAMP "\n");
#else
#error "the host SIMT runtime has a context switch for x86_64 and aarch64 only"
#endif

namespace tessera_simt {
inline namespace TESSERA_SIMT_NS {

inline constexpr int kWave = TESSERA_SIMT_WARP_SIZE;
static_assert(kWave == 32 || kWave == 64, "TESSERA_SIMT_WARP_SIZE must be 32 or 64");
using lanemask = std::conditional_t<kWave == 64, unsigned long long, unsigned>;
inline constexpr unsigned long long kFullMask = kWave == 64 ? ~0ull : 0xffffffffull;

inline constexpr unsigned kMaxThreads = 1024;
inline constexpr size_t kStackBytes = 64 * 1024;
inline constexpr size_t kGuardBytes = 4096;

// ---- kernel registry ------------------------------------------------------------------------------
using Thunk = void (*)(void (*fn)(), void** params);

struct KernelEntry {
  const char* name;
  void (*fn)();
  Thunk thunk;
  std::vector<size_t> sizes;
  uint32_t block;  // the blockDim.x every launch must use (blockDim.y = z = 1); 0: any block
};

// The wave's kernels, every unit's in module order (filled by the entry points' first call).

inline std::vector<KernelEntry>& registry() {
  static std::vector<KernelEntry> r;
  return r;
}

template <typename T>
inline T load_param(void* p) {
  static_assert(std::is_trivially_copyable_v<T>, "kernel parameters must be trivially copyable");
  T v;
  std::memcpy(static_cast<void*>(&v), p, sizeof(T));
  return v;
}

template <typename... A>
struct Invoker {
  template <size_t... I>
  static void call(void (*fn)(A...), void** params, std::index_sequence<I...>) {
    fn(load_param<std::decay_t<A>>(params[I])...);
  }
  static void run(void (*g)(), void** params) {
    call(reinterpret_cast<void (*)(A...)>(g), params, std::index_sequence_for<A...>{});
  }
};

}  // namespace TESSERA_SIMT_NS

namespace {
// This unit's kernels in TESSERA_EXPORT order, which TESSERA_SIMT_UNIT's function adds to the
// registry.
inline std::vector<KernelEntry>& unit_kernels() {
  static std::vector<KernelEntry> k;
  return k;
}

struct Registrar {
  template <typename... A>
  Registrar(const char* name, uint32_t block, void (*fn)(A...)) {
    unit_kernels().push_back(KernelEntry{name, reinterpret_cast<void (*)()>(fn), &Invoker<A...>::run,
                                         std::vector<size_t>{sizeof(std::decay_t<A>)...}, block});
  }
};
}  // namespace

inline namespace TESSERA_SIMT_NS {

// ---- fibers, workers -------------------------------------------------------------------------------
enum class St : uint8_t { Ready, Bar, Warp, Exited };

// One lane's part in a warp collective: inputs it deposits and the result it gets back. A warp
// collective op sees every participating lane's slot at once (slots[lane], null for lanes outside
// the group), which is what later fragment-level (tensor-core) emulation needs: gather all lanes'
// `in`, compute, scatter into each lane's `out`.
struct WarpSlot {
  uint64_t value;
  int64_t a, b;
  const void* in;
  void* out;
  uint64_t result;
  uint32_t tid;  // the lane's linear thread id in the block (set by warp_collective)
};
using WarpOp = void (*)(WarpSlot* const* slots, unsigned long long group, int lanes_in_warp);

struct Fiber {
  void* sp;
  uint3 tid;
  uint32_t linear;
  St st;
  // where it waits
  const char* file;
  int line;
  const char* what;
  // block barrier
  int bar_kind;
  int pred;
  int bar_result;
  // warp collective
  WarpOp op;
  unsigned long long mask;
  WarpSlot* slot;
};

struct StackSet {
  char* base = nullptr;
  size_t prepared = 0;
  static constexpr size_t kStride = kGuardBytes + kStackBytes;
  void ensure(size_t n) {
    if (!base) {
      void* p = mmap(nullptr, kMaxThreads * kStride, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::runtime_error("mmap of fiber stacks failed");
      base = static_cast<char*>(p);
    }
    for (; prepared < n; ++prepared) {
      if (mprotect(base + prepared * kStride, kGuardBytes, PROT_NONE) != 0)
        throw std::runtime_error("mprotect of a fiber stack guard page failed");
    }
  }
  // Stack tops are staggered by a cache line per fiber so that the fibers' saved contexts do not
  // all map to the same L1 set (the stride is a multiple of the page size).
  char* top(size_t i) const { return base + i * kStride + kStride - (i % 61) * 64; }
};

// Per-worker resources, pooled across launches so stacks are mapped once.
struct WorkerRes {
  StackSet stacks;
  std::vector<Fiber> fibers = std::vector<Fiber>(kMaxThreads);
  std::vector<uint32_t> ready, order;
  unsigned char* dyn = nullptr;
  size_t dyn_cap = 0;
  // race detector and static shared poisoning (racecheck.hpp)
  tessera_rc_ctx rc{};
  std::vector<uint16_t> warp_gen = std::vector<uint16_t>(kMaxThreads / 32);
  ~WorkerRes() {
    std::free(dyn);
    tessera_simt_rc_free(&rc);
  }
};

inline std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}
inline std::vector<WorkerRes*>& pool() {
  static std::vector<WorkerRes*> p;
  return p;
}
inline WorkerRes* acquire_res() {
  {
    std::lock_guard<std::mutex> g(pool_mutex());
    if (!pool().empty()) {
      WorkerRes* r = pool().back();
      pool().pop_back();
      return r;
    }
  }
  return new WorkerRes();
}
inline void release_res(WorkerRes* r) {
  std::lock_guard<std::mutex> g(pool_mutex());
  pool().push_back(r);
}

struct Launch {
  const KernelEntry* k;
  void** params;
  dim3 grid, block;
  uint32_t shared_bytes;
  int schedule;
  uint32_t rc_flags;
  uint64_t seed;
  uint64_t nblocks;
  uint32_t nthreads;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex m;
  std::string err;
  void fail(const std::string& msg) {
    std::lock_guard<std::mutex> g(m);
    if (err.empty()) err = msg;
    failed.store(true);
  }
};

struct Worker {
  Launch* L;
  WorkerRes* res;
  void* sched_sp = nullptr;
  uint3 block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  bool block_failed = false;
  std::string block_err;
  uint64_t rng = 0;
  uintptr_t fault_addr = 0;  // set by the SIGSEGV handler for fiber_fault_exit
  uint32_t mxcsr = 0x1f80;
  uint16_t fpucw = 0x037f;
};

inline thread_local Worker* tl_w = nullptr;
inline thread_local Fiber* tl_cur = nullptr;

inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// ---- messages ---------------------------------------------------------------------------------------
inline std::string short_file(const char* f) {
  if (!f) return "?";
  std::string s(f);
  for (const char* root : {"/cuda/", "/hip/"}) {
    size_t p = s.rfind(root);
    if (p != std::string::npos) return s.substr(p + 1);
  }
  return s;
}
inline std::string site(const Fiber& f) { return short_file(f.file) + ":" + std::to_string(f.line); }
inline std::string xyz(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
inline std::string hexmask(unsigned long long m) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", m);
  return b;
}
inline std::string describe_wait(const Fiber& f) {
  switch (f.st) {
    case St::Exited: return "exited";
    case St::Bar: return std::string("waits at ") + f.what + " at " + site(f);
    case St::Warp: return std::string("waits at ") + f.what + " (mask " + hexmask(f.mask) + ") at " + site(f);
    default: return "is runnable";
  }
}

inline bool same_site(const Fiber& a, const Fiber& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

[[noreturn]] inline void fiber_main(void* arg);

// ---- yielding from a fiber ----------------------------------------------------------------------------
inline void yield_fiber(Fiber* f) {
  Worker* w = tl_w;
  __asm__ __volatile__("" ::: "memory");
  tessera_simt_switch(&f->sp, w->sched_sp);
  __asm__ __volatile__("" ::: "memory");
}

// kind: 0 plain, 1 count, 2 and, 3 or
inline int block_barrier(const char* file, int line, int kind, int pred) {
  static const char* const names[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and",
                                      "__syncthreads_or"};
  Fiber* f = tl_cur;
  f->st = St::Bar;
  f->file = file;
  f->line = line;
  f->what = names[kind];
  f->bar_kind = kind;
  f->pred = pred;
  yield_fiber(f);
  return f->bar_result;
}

// The generic warp collective: deposit `slot`, wait until every lane named in `mask` waits at the
// same op with the same mask, then `op` runs once over all the group's slots.
inline void warp_collective(WarpOp op, const char* name, unsigned long long mask, WarpSlot& slot,
                            const char* file, int line) {
  Fiber* f = tl_cur;
  f->st = St::Warp;
  f->file = file;
  f->line = line;
  f->what = name;
  f->op = op;
  f->mask = mask & kFullMask;
  f->slot = &slot;
  slot.tid = f->linear;
  yield_fiber(f);
}

// ---- the block scheduler ---------------------------------------------------------------------------
inline void fail_block(Worker& w, std::string msg) {
  if (!w.block_failed) {
    w.block_failed = true;
    w.block_err = "block " + xyz(w.block_idx) + ": " + std::move(msg);
  }
}

// Completes every warp collective of the warp starting at thread w0 whose lanes (those in its mask)
// have all arrived with the same op and mask, and makes those lanes ready. A collective that every
// lane of the warp that has not exited took part in is also a warp-wide ordering point for the race
// detector. False (with w.block_err) on a malformed mask.
inline bool complete_warp(Worker& w, uint32_t w0) {
  Launch& L = *w.L;
  const uint32_t n = L.nthreads;
  Fiber* fb = w.res->fibers.data();
  auto& ready = w.res->ready;
  const uint32_t lanes = std::min<uint32_t>(kWave, n - w0);
  const unsigned long long exist = lanes >= 64 ? ~0ull : ((1ull << lanes) - 1);
  unsigned long long waiting = 0, live = 0;
  for (uint32_t l = 0; l < lanes; ++l) {
    if (fb[w0 + l].st == St::Warp) waiting |= 1ull << l;
    if (fb[w0 + l].st != St::Exited) live |= 1ull << l;
  }
  unsigned long long done = 0;
  for (unsigned long long todo = waiting; todo; todo &= todo - 1) {
    const int l = __builtin_ctzll(todo);
    if (done & (1ull << l)) continue;
    Fiber& f = fb[w0 + l];
    const unsigned long long M = f.mask & exist;
    if (!(M & (1ull << l))) {
      fail_block(w, "thread " + xyz(f.tid) + " calls " + f.what + " at " + site(f) + " with mask " +
                        hexmask(f.mask) + ", which does not include its own lane " + std::to_string(l));
      return false;
    }
    if (M & ~waiting) continue;
    bool ok = true;
    for (unsigned long long m = M; m; m &= m - 1) {
      const Fiber& g = fb[w0 + __builtin_ctzll(m)];
      if (g.op != f.op || (g.mask & exist) != M) { ok = false; break; }
    }
    if (!ok) continue;
    WarpSlot* slots[64] = {};
    for (unsigned long long m = M; m; m &= m - 1) {
      const int k = __builtin_ctzll(m);
      slots[k] = fb[w0 + k].slot;
    }
    f.op(slots, M, static_cast<int>(lanes));
    // (saturates: after 65535 whole-warp collectives in one barrier interval, later accesses of
    // the warp's lanes are no longer ordered by collectives; a false report is then possible)
    uint16_t& gen = w.res->warp_gen[w0 / kWave];
    if ((M & live) == live && gen < 0xffff) ++gen;
    for (unsigned long long m = M; m; m &= m - 1) {
      const int k = __builtin_ctzll(m);
      fb[w0 + k].st = St::Ready;
      ready.push_back(w0 + k);
    }
    done |= M;
  }
  return true;
}

// Returns 0 to continue, 1 when every thread exited, -1 on an error (in w.block_err).
inline int resolve(Worker& w) {
  Launch& L = *w.L;
  const uint32_t n = L.nthreads;
  Fiber* fb = w.res->fibers.data();
  auto& ready = w.res->ready;
  uint32_t nexit = 0, nbar = 0, nwarp = 0;
  for (uint32_t i = 0; i < n; ++i) {
    switch (fb[i].st) {
      case St::Exited: ++nexit; break;
      case St::Bar: ++nbar; break;
      case St::Warp: ++nwarp; break;
      default: break;
    }
  }
  // 1. warp collectives whose groups are complete
  if (nwarp) {
    for (uint32_t w0 = 0; w0 < n; w0 += kWave)
      if (!complete_warp(w, w0)) return -1;
    if (!ready.empty()) return 0;
  }
  if (nexit == n) return 1;
  // 2. a block barrier every thread reached at the same site
  if (nbar == n) {
    bool same = true;
    for (uint32_t i = 1; i < n && same; ++i) same = same_site(fb[i], fb[0]);
    if (same) {
      int count = 0;
      for (uint32_t i = 0; i < n; ++i) count += fb[i].pred != 0;
      int r = 0;
      switch (fb[0].bar_kind) {
        case 1: r = count; break;
        case 2: r = count == static_cast<int>(n); break;
        case 3: r = count != 0; break;
        default: break;
      }
      for (uint32_t i = 0; i < n; ++i) {
        fb[i].bar_result = r;
        fb[i].st = St::Ready;
        ready.push_back(i);
      }
      w.res->rc.epoch += 1;  // a new barrier interval: warp generations count within one
      std::fill(w.res->warp_gen.begin(), w.res->warp_gen.end(), uint16_t{0});
      return 0;
    }
  }
  // 3. no progress possible: name the divergence
  if (nbar) {
    uint32_t ref = 0;
    while (fb[ref].st != St::Bar) ++ref;
    uint32_t arrived = 0, other = n;
    for (uint32_t i = 0; i < n; ++i) {
      if (fb[i].st == St::Bar && same_site(fb[i], fb[ref])) {
        ++arrived;
      } else if (other == n) {
        other = i;
      }
    }
    const Fiber& o = fb[other];
    std::string what = o.st == St::Exited ? "exited without reaching it" : describe_wait(o);
    fail_block(w, std::string(fb[ref].what) + " at " + site(fb[ref]) + " reached by " + std::to_string(arrived) +
                      " of " + std::to_string(n) + " threads; thread " + xyz(o.tid) + " " + what +
                      " (every thread of a block must reach the same barrier)");
    return -1;
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (fb[i].st != St::Warp) continue;
    const Fiber& f = fb[i];
    const uint32_t w0 = i - i % kWave;
    const uint32_t lanes = std::min<uint32_t>(kWave, n - w0);
    const unsigned long long exist = lanes >= 64 ? ~0ull : ((1ull << lanes) - 1);
    const unsigned long long M = f.mask & exist;
    for (unsigned long long m = M; m; m &= m - 1) {
      const Fiber& g = fb[w0 + __builtin_ctzll(m)];
      if (g.st != St::Warp || g.op != f.op || (g.mask & exist) != M) {
        fail_block(w, "thread " + xyz(f.tid) + " (warp " + std::to_string(i / kWave) + ", lane " +
                          std::to_string(i % kWave) + ") waits at " + f.what + " (mask " + hexmask(f.mask) +
                          ") at " + site(f) + "; lane " + std::to_string(__builtin_ctzll(m)) + " (thread " +
                          xyz(g.tid) + ") " + describe_wait(g) +
                          " (every lane named in the mask must reach the same collective)");
        return -1;
      }
    }
  }
  fail_block(w, "threads wait at warp collectives that cannot complete");
  return -1;
}

inline void init_fiber_stack(Worker& w, Fiber& f, char* top) {
  auto* sp = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15)) - 256);
#if defined(__x86_64__)
  // [mxcsr|fpucw][r15][r14][r13=fn][r12=arg][rbx][rbp][ret=trampoline]
  sp -= 10;  // 80 bytes, keeps sp 16-aligned
  std::memset(sp, 0, 80);
  std::memcpy(reinterpret_cast<char*>(sp), &w.mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 4, &w.fpucw, 2);
  sp[2] = 0;                                                      // r15
  sp[3] = 0;                                                      // r14
  sp[4] = reinterpret_cast<uint64_t>(&fiber_main);                // r13
  sp[5] = reinterpret_cast<uint64_t>(&f);                         // r12
  sp[6] = 0;                                                      // rbx
  sp[7] = 0;                                                      // rbp
  sp[8] = reinterpret_cast<uint64_t>(&tessera_simt_trampoline);  // return address
#else
  sp -= 22;  // 176 bytes
  std::memset(sp, 0, 176);
  sp[0] = reinterpret_cast<uint64_t>(&f);                         // x19
  sp[1] = reinterpret_cast<uint64_t>(&fiber_main);                // x20
  sp[11] = reinterpret_cast<uint64_t>(&tessera_simt_trampoline);  // x30
  uint64_t fpcr;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
  sp[20] = fpcr;
#endif
  f.sp = sp;
}

inline std::string thread_name(const Worker& w, uint32_t linear) {
  const unsigned bx = w.block_dim.x, by = w.block_dim.y;
  return "thread " + xyz(uint3{linear % bx, (linear / bx) % by, linear / (bx * by)}) + " (warp " +
         std::to_string(linear / kWave) + ", lane " + std::to_string(linear % kWave) + ")";
}

// The race detector's report of the block's first race, as a sentence.
inline std::string race_message(const Worker& w) {
  const tessera_rc_ctx& rc = w.res->rc;
  const tessera_rc_race& r = rc.race;
  std::string where;
  if (r.dynamic) {
    where = "dynamic shared memory, byte " + std::to_string(r.dyn_offset);
  } else {
    char name[512];
    uint64_t off = 0;
    if (tessera_simt_rc_symbolize(&rc, r.addr, name, sizeof name, &off))
      where = std::string("__shared__ ") + name + ", byte " + std::to_string(off);
    else
      where = name;
  }
  static const char* const first_did[] = {"wrote", "read", "wrote"};
  static const char* const second_did[] = {"read", "wrote", "wrote"};
  static const char* const kinds[] = {"read after write", "write after read", "write after write"};
  auto atomic = [](uint32_t a) { return a ? " atomically" : ""; };
  return std::string("shared-memory race (") + kinds[r.kind] + ") in kernel " + w.L->k->name + " on " + where +
         ": " + thread_name(w, static_cast<uint32_t>(r.first_tid)) + " " + first_did[r.kind] +
         atomic(r.first_atomic) + " it, then " + thread_name(w, static_cast<uint32_t>(r.second_tid)) + " " +
         second_did[r.kind] + atomic(r.second_atomic) +
         " it in the same barrier interval (no __syncthreads between them, and no whole-warp collective "
         "between lanes of one warp)";
}

// Runs fiber i until it waits or exits; false when the block failed.
inline bool run_fiber(Worker& w, uint32_t i) {
  Fiber* f = &w.res->fibers[i];
  tessera_rc_ctx& rc = w.res->rc;
  tl_cur = f;
  rc.cur = static_cast<int32_t>(i);
  tessera_simt_switch(&w.sched_sp, f->sp);
  rc.cur = -1;
  tl_cur = nullptr;
  if (rc.raced && !w.block_failed) fail_block(w, race_message(w));
  return !w.block_failed;
}

// The warp-skew schedule: one warp at a time runs; its collectives complete as soon as its own
// lanes have arrived, and it keeps running for a seeded number (1..8) of collectives before another
// warp (seeded choice) gets a turn, so warps drift apart by several collectives between block
// barriers (the in-order and shuffled schedules complete collectives only when every thread of
// the block waits, which hides a missing __syncthreads between warps).
inline bool run_skewed(Worker& w) {
  auto& ready = w.res->ready;
  auto& order = w.res->order;
  while (!ready.empty()) {
    const uint32_t pick = ready[splitmix64(w.rng) % ready.size()];
    const uint32_t w0 = pick - pick % kWave;
    const uint64_t budget = 1 + splitmix64(w.rng) % 8;
    for (uint64_t step = 0; step < budget; ++step) {
      order.clear();
      size_t keep = 0;
      for (uint32_t i : ready) {
        if (i - w0 < static_cast<uint32_t>(kWave)) order.push_back(i);
        else ready[keep++] = i;
      }
      ready.resize(keep);
      if (order.empty()) break;
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[splitmix64(w.rng) % i]);
      for (uint32_t i : order)  // run_fiber touches neither `order` nor `ready`
        if (!run_fiber(w, i)) return false;
      if (!complete_warp(w, w0)) return false;
    }
  }
  return true;
}

// Runs block `b`; false (with w.block_err) on an error.
inline bool run_block(Worker& w, uint64_t b) {
  Launch& L = *w.L;
  const uint32_t n = L.nthreads;
  const uint64_t gx = L.grid.x, gy = L.grid.y;
  w.block_idx = uint3{static_cast<unsigned>(b % gx), static_cast<unsigned>((b / gx) % gy),
                      static_cast<unsigned>(b / (gx * gy))};
  w.block_failed = false;
  w.block_err.clear();
  if (L.shared_bytes) std::memset(w.res->dyn, 0xff, L.shared_bytes);
  tessera_rc_ctx& rc = w.res->rc;
  tessera_simt_rc_block_begin(&rc);
  rc.dyn_lo = reinterpret_cast<uintptr_t>(w.res->dyn);
  rc.dyn_len = L.shared_bytes;
  std::fill(w.res->warp_gen.begin(), w.res->warp_gen.end(), uint16_t{0});
  Fiber* fb = w.res->fibers.data();
  auto& ready = w.res->ready;
  ready.clear();
  const unsigned bx = L.block.x, by = L.block.y;
  for (uint32_t i = 0; i < n; ++i) {
    Fiber& f = fb[i];
    f.tid = uint3{i % bx, (i / bx) % by, i / (bx * by)};
    f.linear = i;
    f.st = St::Ready;
    f.file = nullptr;
    f.line = 0;
    f.what = "";
    init_fiber_stack(w, f, w.res->stacks.top(i));
    ready.push_back(i);
  }
  uint64_t s = L.seed;
  w.rng = splitmix64(s) ^ b;
  w.rng = splitmix64(w.rng);
  auto& order = w.res->order;
  for (;;) {
    if (L.schedule == 2) {
      if (!run_skewed(w)) return false;
    } else {
      if (L.schedule == 1) {
        for (size_t i = ready.size(); i > 1; --i) {
          const size_t j = splitmix64(w.rng) % i;
          std::swap(ready[i - 1], ready[j]);
        }
      }
      order.swap(ready);
      ready.clear();
      for (uint32_t i : order)
        if (!run_fiber(w, i)) return false;
    }
    const int r = resolve(w);
    if (r > 0) return true;
    if (r < 0) return false;
  }
}

[[noreturn]] inline void fiber_main(void* arg) {
  Fiber* f = static_cast<Fiber*>(arg);
  Worker* w = tl_w;
  try {
    w->L->k->thunk(w->L->k->fn, w->L->params);
  } catch (const std::exception& e) {
    fail_block(*w, "thread " + xyz(f->tid) + " raised: " + e.what());
  } catch (...) {
    fail_block(*w, "thread " + xyz(f->tid) + " raised an unknown C++ exception");
  }
  f->st = St::Exited;
  tessera_simt_switch(&f->sp, w->sched_sp);
  __builtin_trap();
}

// ---- memory faults in kernel code ---------------------------------------------------------------------
// A SIGSEGV raised while a fiber runs (a write into a buffer's guard page, a wild pointer, a fiber
// stack overflow) does not kill the process: the handler points the faulting context at
// fiber_fault_exit on a fresh part of the fiber's stack and returns; that function fails the block
// with the fault address (which the Rust side maps to a buffer name) and leaves the fiber. Any other
// SIGSEGV goes to the handler that was installed before ours.
inline struct sigaction g_old_segv;

[[noreturn]] inline void fiber_fault_exit() {
  Worker* w = tl_w;
  Fiber* f = tl_cur;
  char addr[32];
  std::snprintf(addr, sizeof addr, "0x%llx", static_cast<unsigned long long>(w->fault_addr));
  const char* base = w->res->stacks.base;
  const uintptr_t a = w->fault_addr, b = reinterpret_cast<uintptr_t>(base);
  const bool stack_guard = base && a >= b && a < b + kMaxThreads * StackSet::kStride &&
                           (a - b) % StackSet::kStride < kGuardBytes;
  fail_block(*w, "thread " + xyz(f->tid) + " of kernel " + w->L->k->name +
                     (stack_guard ? " overflowed its 64 KiB fiber stack" : " touched unmapped memory (segmentation fault)") +
                     " [fault address " + addr + "]");
  f->st = St::Exited;
  tessera_simt_switch(&f->sp, w->sched_sp);
  __builtin_trap();
}

inline void segv_handler(int sig, siginfo_t* info, void* uctx) {
  Worker* w = tl_w;
  Fiber* f = tl_cur;
  if (w && f && w->res) {
    w->fault_addr = reinterpret_cast<uintptr_t>(info->si_addr);
    auto* uc = static_cast<ucontext_t*>(uctx);
    const uintptr_t top = reinterpret_cast<uintptr_t>(w->res->stacks.top(f->linear));
    const uintptr_t sp = ((top - 1024) & ~uintptr_t(15)) - 8;  // as just after a call
#if defined(__x86_64__)
    uc->uc_mcontext.gregs[REG_RSP] = static_cast<greg_t>(sp);
    uc->uc_mcontext.gregs[REG_RIP] = reinterpret_cast<greg_t>(&fiber_fault_exit);
#else
    uc->uc_mcontext.sp = sp + 8;
    uc->uc_mcontext.pc = reinterpret_cast<uint64_t>(&fiber_fault_exit);
#endif
    return;
  }
  if (g_old_segv.sa_flags & SA_SIGINFO) {
    g_old_segv.sa_sigaction(sig, info, uctx);
  } else if (g_old_segv.sa_handler == SIG_DFL || g_old_segv.sa_handler == SIG_IGN) {
    sigaction(SIGSEGV, &g_old_segv, nullptr);  // the faulting instruction runs again and takes it
  } else {
    g_old_segv.sa_handler(sig);
  }
}

// Once per runtime, before its first launch: its thread-locals are not shared memory for the race
// detector and poisoning (which see every thread-local of the module), then the SIGSEGV handler.
inline void runtime_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    tessera_simt_rc_exclude(&tl_w);
    tessera_simt_rc_exclude(&tl_cur);
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = &segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
  });
}

inline void work(Launch& L) {
  WorkerRes* res = acquire_res();
  try {
    res->stacks.ensure(L.nthreads);
    if (L.shared_bytes > res->dyn_cap) {
      std::free(res->dyn);
      res->dyn = static_cast<unsigned char*>(std::aligned_alloc(256, (L.shared_bytes + 255) / 256 * 256));
      if (!res->dyn) throw std::bad_alloc();
      res->dyn_cap = (L.shared_bytes + 255) / 256 * 256;
    }
    Worker w;
    w.L = &L;
    w.res = res;
    w.grid_dim = L.grid;
    w.block_dim = L.block;
#if defined(__x86_64__)
    w.mxcsr = __builtin_ia32_stmxcsr();
    __asm__ __volatile__("fnstcw %0" : "=m"(w.fpucw));
#endif
    tl_w = &w;
    res->rc.flags = L.rc_flags;
    res->rc.wave = kWave;
    res->rc.cur = -1;
    res->rc.warp_gen = res->warp_gen.data();
    tessera_simt_rc_bind(&res->rc, &tl_w, res->dyn_cap);
    while (!L.failed.load(std::memory_order_relaxed)) {
      const uint64_t b = L.next.fetch_add(1);
      if (b >= L.nblocks) break;
      if (!run_block(w, b)) L.fail(w.block_err);
    }
    tessera_simt_rc_bind(nullptr, nullptr, 0);
    tl_w = nullptr;
  } catch (const std::exception& e) {
    tessera_simt_rc_bind(nullptr, nullptr, 0);
    tl_w = nullptr;
    L.fail(std::string("runtime error: ") + e.what());
  }
  release_res(res);
}

// Returns 0, or an error code with the message in err: 1 unknown kernel, 2 argument mismatch,
// 3 bad launch configuration, 4 fault in the kernel.
inline int launch(const char* name, const uint32_t grid[3], const uint32_t block[3], uint32_t shared_bytes,
           void** params, const size_t* sizes, size_t nparams, int schedule, uint64_t seed, uint32_t workers,
           std::string& err) {
  const KernelEntry* k = nullptr;
  for (const auto& e : registry())
    if (std::strcmp(e.name, name) == 0) k = &e;
  if (!k) {
    err = std::string("no such kernel in the wave") + TESSERA_SIMT_STR(TESSERA_SIMT_WARP_SIZE) +
          " host SIMT build (is its source under cuda/ and exported with TESSERA_EXPORT?)";
    return 1;
  }
  if (nparams != k->sizes.size()) {
    err = "kernel takes " + std::to_string(k->sizes.size()) + " arguments, launch passed " + std::to_string(nparams);
    return 2;
  }
  for (size_t i = 0; i < nparams; ++i) {
    if (sizes[i] != k->sizes[i]) {
      err = "argument " + std::to_string(i) + " (counting from 0) is " + std::to_string(sizes[i]) +
            " bytes, kernel expects " + std::to_string(k->sizes[i]);
      return 2;
    }
    if (!params[i]) {
      err = "argument " + std::to_string(i) + " pointer is null";
      return 2;
    }
  }
  const bool no_race = (schedule & 0x100) != 0;  // bit 8: race detector off for this launch
  schedule &= ~0x100;
  if (schedule < 0 || schedule > 2) {
    err = "schedule " + std::to_string(schedule) + " is not 0 (in order), 1 (shuffled) or 2 (warp skew)";
    return 3;
  }
  if (k->block != 0 && (block[0] != k->block || block[1] != 1 || block[2] != 1)) {
    err = std::string("kernel ") + k->name + " requires block (" + std::to_string(k->block) +
          ",1,1) (TESSERA_EXPORT_BLOCK in its source), launch gave (" + std::to_string(block[0]) + "," +
          std::to_string(block[1]) + "," + std::to_string(block[2]) + ")";
    return 3;
  }
  const uint64_t nthreads = uint64_t(block[0]) * block[1] * block[2];
  if (nthreads == 0 || nthreads > kMaxThreads) {
    err = "block " + std::to_string(block[0]) + "x" + std::to_string(block[1]) + "x" + std::to_string(block[2]) +
          " has " + std::to_string(nthreads) + " threads; 1..1024 allowed";
    return 3;
  }
  if (block[2] > 64) {
    err = "blockDim.z " + std::to_string(block[2]) + " exceeds 64";
    return 3;
  }
  if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 0x7fffffffu || grid[1] > 65535 || grid[2] > 65535) {
    err = "grid " + std::to_string(grid[0]) + "x" + std::to_string(grid[1]) + "x" + std::to_string(grid[2]) +
          " is out of range (x 1..2^31-1, y and z 1..65535)";
    return 3;
  }
  runtime_init();
  Launch L;
  L.k = k;
  L.params = params;
  L.grid = dim3(grid[0], grid[1], grid[2]);
  L.block = dim3(block[0], block[1], block[2]);
  L.shared_bytes = shared_bytes;
  L.schedule = schedule;
  L.rc_flags = tessera_simt_rc_default_flags() & (no_race ? ~TESSERA_RC_RACES : ~0u);
  L.seed = seed;
  L.nblocks = uint64_t(grid[0]) * grid[1] * grid[2];
  L.nthreads = static_cast<uint32_t>(nthreads);
  uint64_t nw = workers == 0 ? std::max(1u, std::thread::hardware_concurrency()) : workers;
  nw = std::min<uint64_t>(nw, L.nblocks);
  std::vector<std::thread> threads;
  try {
    for (uint64_t i = 1; i < nw; ++i) threads.emplace_back([&L] { work(L); });
  } catch (const std::exception&) {
    // fewer workers than asked: the ones started (and this thread) still run every block
  }
  work(L);
  for (auto& t : threads) t.join();
  if (L.failed.load()) {
    err = L.err;
    return 4;
  }
  return 0;
}

// ---- accessors used by the kernel-facing API ----------------------------------------------------------
__forceinline__ const uint3& thread_idx() { return tl_cur->tid; }
__forceinline__ uint32_t thread_linear() { return tl_cur->linear; }
__forceinline__ const uint3& block_idx() { return tl_w->block_idx; }
__forceinline__ const dim3& block_dim() { return tl_w->block_dim; }
__forceinline__ const dim3& grid_dim() { return tl_w->grid_dim; }

// The block's dynamic shared memory (the launch's shared_bytes, poisoned with 0xFF per block).
inline void* dynamic_shared() { return tl_w->res->dyn; }

// Tells the race detector that thread `tid` reads n bytes at p (warp ops emulated in the scheduler,
// such as ldmatrix, read shared memory outside any fiber, where the instrumentation does not see it).
inline void note_shared_read(const void* p, size_t n, uint32_t tid) {
  tessera_simt_rc_access(&tl_w->res->rc, p, n, 0, static_cast<int32_t>(tid));
}
}  // namespace TESSERA_SIMT_NS

}  // namespace tessera_simt

// TESSERA_EXPORT(name) and TESSERA_EXPORT_BLOCK(name, threads) (cuda/common/launch.cuh): block 0
// means any block.
#define TESSERA_SIMT_REGISTER(name, block)                                                        \
  static_assert((block) <= 1024, "TESSERA_EXPORT_BLOCK: a block of 1..1024 threads");       \
  static const ::tessera_simt::Registrar tessera_simt_registrar_##name(#name, static_cast<uint32_t>(block), &name);

// Ends a kernel module's unit (build/simt.rs): its one external symbol, which the entry points
// call once to register the unit's kernels.
#define TESSERA_SIMT_UNIT(ident)                                     \
  extern "C" void TESSERA_SIMT_SYM(unit_##ident)(void) {             \
    auto& r = ::tessera_simt::registry();                            \
    for (const auto& k : ::tessera_simt::unit_kernels()) r.push_back(k); \
  }

#define threadIdx (::tessera_simt::thread_idx())
#define blockIdx (::tessera_simt::block_idx())
#define blockDim (::tessera_simt::block_dim())
#define gridDim (::tessera_simt::grid_dim())

#include "intrinsics.hpp"

#endif  // TESSERA_SIMT_HPP
