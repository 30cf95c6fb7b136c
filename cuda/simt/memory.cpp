// memory.cpp: host SIMT buffer memory. Every buffer is its own mapping:
//
//   [front guard, 64 KiB, no access][red zone | payload | red zone and the rest of the last page]
//   [back guard, 1 MiB, no access]
//
// The red zones (filled and checked by src/device/simt.rs) catch writes just outside a buffer; the
// guard pages make a write far past either end fault at once instead of corrupting other memory,
// and the runtime turns that fault into a launch error (simt.hpp, the SIGSEGV handler), which the
// Rust side names by buffer. Compiled without instrumentation.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace {
constexpr size_t kFrontGuard = 64 * 1024;
constexpr size_t kBackGuard = 1024 * 1024;
size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}
}  // namespace

extern "C" {

// Maps a buffer of `len` payload bytes with `red` red-zone bytes before it (red must be a multiple
// of 256 and at most a page). Returns the payload (256-byte aligned) or null; *map and *map_len
// describe the whole mapping (for tessera_simt_mem_free), *tail the bytes from the payload's end to
// the back guard (at least `red`).
void* tessera_simt_mem_alloc(size_t len, size_t red, void** map, size_t* map_len, size_t* tail) {
  const size_t page = page_size();
  if (red > page || len > (SIZE_MAX / 2)) return nullptr;
  const size_t data = (red + len + red + page - 1) / page * page;
  const size_t total = kFrontGuard + data + kBackGuard;
  void* p = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  char* base = static_cast<char*>(p);
  if (mprotect(base + kFrontGuard, data, PROT_READ | PROT_WRITE) != 0) {
    munmap(p, total);
    return nullptr;
  }
  *map = p;
  *map_len = total;
  *tail = data - red - len;
  return base + kFrontGuard + red;
}

void tessera_simt_mem_free(void* map, size_t map_len) {
  if (map) munmap(map, map_len);
}

// The guard sizes, so the Rust side can name a fault address.
size_t tessera_simt_mem_front_guard(void) { return kFrontGuard; }
size_t tessera_simt_mem_back_guard(void) { return kBackGuard; }

}  // extern "C"
