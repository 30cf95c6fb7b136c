// racecheck.cpp: the shared-memory race detector and static shared-memory poisoning of the host SIMT
// runtime (see racecheck.hpp for the model). Compiled WITHOUT -fsanitize=thread: it defines the
// __tsan_* hooks that g++ calls from the instrumented runtimes, so none of ThreadSanitizer's own
// runtime is used (and tessera cannot be linked into a program that also links libtsan).
#include "racecheck.hpp"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

thread_local tessera_rc_ctx* g_ctx = nullptr;

// Offsets (plus one; 0 = empty) in the thread-local block of the runtimes' own thread-locals, which
// are not shared memory. Offsets are the same on every thread; each runtime registers its own.
constexpr int kMaxSkip = 16;
size_t g_skip[kMaxSkip];
std::atomic<int> g_nskip{0};
std::mutex g_skip_mutex;

// Per byte of shared memory (20 bytes). Epochs are the context's barrier intervals; gens are the
// accessing warp's count of whole-warp collectives in the interval when the access happened.
struct Cell {
  uint32_t w_epoch;       // last write
  uint32_t r_epoch;       // reads of that interval
  uint16_t w_gen, r_gen;  // r_gen: the latest gen of the interval's reads
  uint16_t w_tid, r_tid, r_tid2;
  uint8_t w_atomic, r_flags;
};
constexpr uint8_t kMulti = 1;      // another lane of r_tid's warp (r_tid2) read at r_gen
constexpr uint8_t kMultiWarp = 2;  // readers of several warps (r_tid2 is in another warp than r_tid)
constexpr uint8_t kPlainRead = 4;  // some read of the interval was not atomic

void report(tessera_rc_ctx* c, uintptr_t a, bool dyn, uint32_t kind, int first, int second, bool fa, bool sa) {
  if (c->raced) return;
  c->raced = 1;
  c->race.addr = a;
  c->race.dynamic = dyn ? 1 : 0;
  c->race.kind = kind;
  c->race.first_tid = first;
  c->race.second_tid = second;
  c->race.first_atomic = fa;
  c->race.second_atomic = sa;
  c->race.dyn_offset = dyn ? a - c->dyn_lo : 0;
}

// What every byte of one access shares.
struct Access {
  tessera_rc_ctx* c;
  uint32_t E, block_first, shift, W;  // shift: log2 of the warp width
  uint16_t g;
  int tid;
  bool write, atomic, races, poison;
};

inline void byte_access(const Access& A, Cell& x, uintptr_t a, bool dyn) {
  const int tid = A.tid;
  const uint32_t E = A.E, W = A.W, g = A.g, shift = A.shift;
  const bool write = A.write, atomic = A.atomic;
  // Poison on a read of a byte not written in this block (again on every such read: until a write,
  // the byte holds the poison anyway). An atomic read-modify-write reads too; poisoning before an
  // atomic store is harmless.
  if (A.poison && (!write || atomic) && !dyn && x.w_epoch < A.block_first)
    *reinterpret_cast<volatile uint8_t*>(a) = 0xFF;
  if (A.races) {
    if (x.w_epoch == E && x.w_tid != tid && !(x.w_atomic && atomic)) {
      const bool ordered = (uint32_t(x.w_tid) >> shift) == W && x.w_gen < g;
      if (!ordered) report(A.c, a, dyn, write ? 2 : 0, x.w_tid, tid, x.w_atomic, atomic);
    }
    if (write && x.r_epoch == E && !(atomic && !(x.r_flags & kPlainRead))) {
      int other = -1;
      if (x.r_flags & kMultiWarp) {
        other = (uint32_t(x.r_tid) >> shift) != W ? x.r_tid : x.r_tid2;
      } else if ((uint32_t(x.r_tid) >> shift) != W) {
        other = x.r_tid;
      } else if (x.r_gen >= g) {
        if (x.r_tid != tid) other = x.r_tid;
        else if (x.r_flags & kMulti) other = x.r_tid2;
      }
      if (other >= 0 && other != tid) report(A.c, a, dyn, 1, other, tid, false, atomic);
    }
  }
  if (write) {
    x.w_epoch = E;
    x.w_gen = static_cast<uint16_t>(g);
    x.w_tid = static_cast<uint16_t>(tid);
    x.w_atomic = atomic ? 1 : 0;
  } else if (x.r_epoch != E) {
    x.r_epoch = E;
    x.r_gen = static_cast<uint16_t>(g);
    x.r_tid = static_cast<uint16_t>(tid);
    x.r_flags = atomic ? 0 : kPlainRead;
  } else {
    if (!atomic) x.r_flags |= kPlainRead;
    if (x.r_flags & kMultiWarp) {
    } else if ((uint32_t(x.r_tid) >> shift) != W) {
      x.r_flags |= kMultiWarp;
      x.r_tid2 = x.r_tid;
      x.r_tid = static_cast<uint16_t>(tid);
    } else if (g > x.r_gen) {
      x.r_gen = static_cast<uint16_t>(g);
      x.r_tid = static_cast<uint16_t>(tid);
      x.r_flags &= static_cast<uint8_t>(~kMulti);
    } else if (tid != x.r_tid) {
      x.r_flags |= kMulti;
      x.r_tid2 = x.r_tid;
      x.r_tid = static_cast<uint16_t>(tid);
    }
  }
}

// The bytes of [a, a + n) inside [lo, lo + len), whose shadow starts at cell `first`.
inline void range_access(const Access& A, Cell* cells, uintptr_t a, size_t n, uintptr_t lo, size_t len,
                         size_t first, bool dyn) {
  const uintptr_t b = a > lo ? a : lo;
  const uintptr_t e = a + n < lo + len ? a + n : lo + len;
  if (b >= e) return;
  const size_t i0 = b - lo;
  if (!dyn) {
    // The runtimes' own thread-locals are not shared memory.
    const int ns = g_nskip.load(std::memory_order_acquire);
    for (int k = 0; k < ns; ++k) {
      const size_t o = g_skip[k];
      if (i0 < o + 8 && o < i0 + (e - b)) return;
    }
  }
  if (first + i0 + (e - b) > A.c->shadow_cells) return;
  Cell* x = cells + first + i0;
  for (uintptr_t p = b; p < e; ++p, ++x) byte_access(A, *x, p, dyn);
}

void slow_access(tessera_rc_ctx* c, uintptr_t a, size_t n, bool write, bool atomic, int tid) {
  Cell* cells = static_cast<Cell*>(c->shadow);
  if (!cells || !c->flags) return;
  Access A;
  A.c = c;
  A.E = c->epoch;
  A.block_first = c->block_first;
  A.shift = c->wave == 64 ? 6 : 5;
  A.W = static_cast<uint32_t>(tid) >> A.shift;
  A.g = c->warp_gen[A.W];
  A.tid = tid;
  A.write = write;
  A.atomic = atomic;
  A.races = (c->flags & TESSERA_RC_RACES) != 0;
  A.poison = (c->flags & TESSERA_RC_POISON) != 0;
  range_access(A, cells, a, n, c->tls_lo, c->tls_len, 0, false);
  range_access(A, cells, a, n, c->dyn_lo, c->dyn_len, c->tls_len, true);
}

inline void access(const volatile void* addr, size_t n, bool write, bool atomic) {
  tessera_rc_ctx* c = g_ctx;
  if (!c || c->cur < 0) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t e = a + n;  // one past the last byte
  const bool in_tls = a < c->tls_lo + c->tls_len && e > c->tls_lo;
  const bool in_dyn = a < c->dyn_lo + c->dyn_len && e > c->dyn_lo;
  if (!in_tls && !in_dyn) return;
  slow_access(c, a, n, write, atomic, c->cur);
}

struct TlsFind {
  uintptr_t probe;
  uintptr_t lo, len;
  std::string path;
};

int find_tls(struct dl_phdr_info* info, size_t, void* data) {
  auto* f = static_cast<TlsFind*>(data);
  if (!info->dlpi_tls_data) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_TLS) continue;
    const uintptr_t lo = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
    if (f->probe - lo < ph.p_memsz) {
      f->lo = lo;
      f->len = ph.p_memsz;
      f->path = info->dlpi_name ? info->dlpi_name : "";
      return 1;
    }
  }
  return 0;
}

void ensure_shadow(tessera_rc_ctx* c, size_t cells) {
  if (c->shadow && c->shadow_cells >= cells) return;
  if (c->shadow) munmap(c->shadow, c->shadow_cells * sizeof(Cell));
  c->shadow = nullptr;
  c->shadow_cells = 0;
  void* p = mmap(nullptr, cells * sizeof(Cell), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return;
  c->shadow = p;
  c->shadow_cells = cells;
}

}  // namespace

extern "C" {

int tessera_simt_rc_bind(tessera_rc_ctx* ctx, const void* tls_probe, size_t dyn_cap) {
  if (!ctx) {
    g_ctx = nullptr;
    return 0;
  }
  // The calling thread's thread-local block holding the probe: found once per OS thread (it never
  // moves), not at every launch.
  static thread_local uintptr_t t_lo = 0, t_len = 0;
  const uintptr_t probe = reinterpret_cast<uintptr_t>(tls_probe);
  if (probe - t_lo >= t_len) {
    TlsFind f{probe, 0, 0, {}};
    dl_iterate_phdr(&find_tls, &f);
    t_lo = f.lo;
    t_len = f.len;
  }
  if (!t_len) {
    g_ctx = nullptr;
    return -1;
  }
  ctx->tls_lo = t_lo;
  ctx->tls_len = t_len;
  ensure_shadow(ctx, t_len + dyn_cap);
  if (!ctx->shadow) {
    g_ctx = nullptr;
    return -1;
  }
  g_ctx = ctx;
  return 0;
}

void tessera_simt_rc_block_begin(tessera_rc_ctx* ctx) {
  if (ctx->epoch >= 0x80000000u) {
    // Epochs are about to wrap: forget every cell (all of them are older than the next block).
    if (ctx->shadow) madvise(ctx->shadow, ctx->shadow_cells * sizeof(Cell), MADV_DONTNEED);
    ctx->epoch = 0;
  }
  ctx->epoch += 1;
  ctx->block_first = ctx->epoch;
  ctx->raced = 0;
}

void tessera_simt_rc_exclude(const void* tls_var) {
  TlsFind f{reinterpret_cast<uintptr_t>(tls_var), 0, 0, {}};
  dl_iterate_phdr(&find_tls, &f);
  if (!f.len) return;
  const size_t off = reinterpret_cast<uintptr_t>(tls_var) - f.lo;
  std::lock_guard<std::mutex> lock(g_skip_mutex);
  const int n = g_nskip.load();
  for (int k = 0; k < n; ++k)
    if (g_skip[k] == off) return;
  if (n == kMaxSkip) return;
  g_skip[n] = off;  // written before the count that publishes it
  g_nskip.store(n + 1, std::memory_order_release);
}

void tessera_simt_rc_free(tessera_rc_ctx* ctx) {
  if (ctx && ctx->shadow) munmap(ctx->shadow, ctx->shadow_cells * sizeof(Cell));
  if (ctx) {
    ctx->shadow = nullptr;
    ctx->shadow_cells = 0;
  }
}

void tessera_simt_rc_access(tessera_rc_ctx* ctx, const void* addr, size_t n, int write, int32_t tid) {
  if (!ctx || g_ctx != ctx || tid < 0) return;
  slow_access(ctx, reinterpret_cast<uintptr_t>(addr), n, write != 0, false, tid);
}

uint32_t tessera_simt_rc_default_flags(void) {
  static const uint32_t flags = [] {
    const char* e = std::getenv("TESSERA_SIMT_RACECHECK");
    const bool off = e && (std::strcmp(e, "0") == 0 || std::strcmp(e, "off") == 0);
    return TESSERA_RC_POISON | (off ? 0u : TESSERA_RC_RACES);
  }();
  return flags;
}

int tessera_simt_rc_symbolize(const tessera_rc_ctx* ctx, uintptr_t addr, char* buf, size_t len, uint64_t* offset) {
  const uint64_t tls_off = addr - ctx->tls_lo;
  *offset = tls_off;
  if (len) std::snprintf(buf, len, "static __shared__ byte %llu of the thread-local block",
                         static_cast<unsigned long long>(tls_off));
  TlsFind f{addr, 0, 0, {}};
  dl_iterate_phdr(&find_tls, &f);
  const std::string path = f.path.empty() ? std::string("/proc/self/exe") : f.path;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    close(fd);
    return 0;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return 0;
  const auto* base = static_cast<const unsigned char*>(m);
  int found = 0;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
      eh->e_shoff + uint64_t(eh->e_shnum) * sizeof(Elf64_Shdr) <= size) {
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
    for (int pass = 0; pass < 2 && !found; ++pass) {
      const uint32_t want = pass == 0 ? SHT_SYMTAB : SHT_DYNSYM;
      for (unsigned i = 0; i < eh->e_shnum && !found; ++i) {
        if (sh[i].sh_type != want || sh[i].sh_link >= eh->e_shnum) continue;
        const Elf64_Shdr& strs = sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > size || strs.sh_offset + strs.sh_size > size) continue;
        const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
        const size_t nsym = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < nsym; ++k) {
          const Elf64_Sym& s = syms[k];
          if (ELF64_ST_TYPE(s.st_info) != STT_TLS) continue;
          if (tls_off < s.st_value || tls_off >= s.st_value + (s.st_size ? s.st_size : 1)) continue;
          if (s.st_name >= strs.sh_size) continue;
          const char* raw = reinterpret_cast<const char*>(base + strs.sh_offset + s.st_name);
          int status = 0;
          char* dem = abi::__cxa_demangle(raw, nullptr, nullptr, &status);
          if (len) std::snprintf(buf, len, "%s", status == 0 && dem ? dem : raw);
          std::free(dem);
          *offset = tls_off - s.st_value;
          found = 1;
          break;
        }
      }
    }
  }
  munmap(m, size);
  return found;
}

// ---- the hooks g++ -fsanitize=thread calls -----------------------------------------------------------
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}

#define TESSERA_RC_RW(n)                                                     \
  void __tsan_read##n(void* a) { access(a, n, false, false); }               \
  void __tsan_write##n(void* a) { access(a, n, true, false); }               \
  void __tsan_unaligned_read##n(void* a) { access(a, n, false, false); }     \
  void __tsan_unaligned_write##n(void* a) { access(a, n, true, false); }     \
  void __tsan_volatile_read##n(void* a) { access(a, n, false, false); }      \
  void __tsan_volatile_write##n(void* a) { access(a, n, true, false); }
TESSERA_RC_RW(1)
TESSERA_RC_RW(2)
TESSERA_RC_RW(4)
TESSERA_RC_RW(8)
TESSERA_RC_RW(16)
#undef TESSERA_RC_RW

void __tsan_read_range(void* a, unsigned long n) {
  if (n) access(a, n, false, false);
}
void __tsan_write_range(void* a, unsigned long n) {
  if (n) access(a, n, true, false);
}
void __tsan_vptr_update(void** p, void*) { access(p, sizeof(void*), true, false); }
void __tsan_vptr_read(void** p) { access(p, sizeof(void*), false, false); }

// Atomics: recorded as atomic accesses (read-modify-writes and compare-exchanges as writes), then
// performed sequentially consistent, which is at least as strong as any order asked for.
#define TESSERA_RC_ATOMIC(n, T)                                                                          \
  T __tsan_atomic##n##_load(const volatile T* a, int) {                                                  \
    access(a, sizeof(T), false, true);                                                                   \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                         \
  }                                                                                                      \
  void __tsan_atomic##n##_store(volatile T* a, T v, int) {                                               \
    access(a, sizeof(T), true, true);                                                                    \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                            \
  }                                                                                                      \
  T __tsan_atomic##n##_exchange(volatile T* a, T v, int) {                                               \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                                  \
  }                                                                                                      \
  T __tsan_atomic##n##_fetch_add(volatile T* a, T v, int) {                                              \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);                                                   \
  }                                                                                                      \
  T __tsan_atomic##n##_fetch_sub(volatile T* a, T v, int) {                                              \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST);                                                   \
  }                                                                                                      \
  T __tsan_atomic##n##_fetch_and(volatile T* a, T v, int) {                                              \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST);                                                   \
  }                                                                                                      \
  T __tsan_atomic##n##_fetch_or(volatile T* a, T v, int) {                                               \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST);                                                    \
  }                                                                                                      \
  T __tsan_atomic##n##_fetch_xor(volatile T* a, T v, int) {                                              \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST);                                                   \
  }                                                                                                      \
  T __tsan_atomic##n##_fetch_nand(volatile T* a, T v, int) {                                             \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_fetch_nand(a, v, __ATOMIC_SEQ_CST);                                                  \
  }                                                                                                      \
  int __tsan_atomic##n##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {                   \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);              \
  }                                                                                                      \
  int __tsan_atomic##n##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {                     \
    access(a, sizeof(T), true, true);                                                                    \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);              \
  }                                                                                                      \
  T __tsan_atomic##n##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                         \
    access(a, sizeof(T), true, true);                                                                    \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                    \
    return c;                                                                                            \
  }
TESSERA_RC_ATOMIC(8, char)
TESSERA_RC_ATOMIC(16, short)
TESSERA_RC_ATOMIC(32, int)
TESSERA_RC_ATOMIC(64, long)
#undef TESSERA_RC_ATOMIC

void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

}  // extern "C"
