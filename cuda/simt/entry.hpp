// entry.hpp: the C ABI of one host SIMT library (one per warp width). Included once, by the
// wave's generated runtime unit (build/simt.rs), which defines TESSERA_SIMT_UNITS(X) as
// X(<ident>) for every kernel module's unit. These entry points, and each unit's
// tessera_simt_wN_unit_<ident>, are the library's only external C symbols; their names carry the
// wave: tessera_simt_w32_*, tessera_simt_w64_*.
//
//   size_t      tessera_simt_wN_kernel_count(void);
//   const char* tessera_simt_wN_kernel_name(size_t i);      // null when i is out of range
//   int64_t     tessera_simt_wN_kernel_arity(size_t i);     // -1 when i is out of range
//   int64_t     tessera_simt_wN_kernel_param_size(size_t i, size_t j);  // bytes of argument j
//                   of kernel i; -1 when either is out of range
//   uint32_t    tessera_simt_wN_kernel_block(size_t i);     // the blockDim.x the kernel requires
//                   (TESSERA_EXPORT_BLOCK; blockDim.y = z = 1); 0 for any block or i out of range
//   uint32_t    tessera_simt_wN_warp_size(void);
//   int         tessera_simt_wN_launch(const char* kernel, const uint32_t grid[3],
//                   const uint32_t block[3], uint32_t shared_bytes, void** params,
//                   const size_t* param_sizes, size_t nparams, int schedule /*0 in-order, 1 shuffled, 2 warp-skew*/,
//                   uint64_t seed, uint32_t workers /*0 = hardware threads*/, char* err, size_t err_len);
//     returns 0, or 1 unknown kernel, 2 argument count/size mismatch, 3 bad launch configuration
//     (including a block other than the one the kernel requires), 4 fault in the kernel
//     (divergent barrier or collective, exception), 5 internal error; the message
//     (NUL-terminated, truncated to err_len) is written to err. No C++ exception crosses it.
//
// The first call of any of them registers every unit's kernels (thread-safe, once); they must not
// be called while static objects are being initialised.
#pragma once

#ifndef TESSERA_SIMT_UNITS
#error "entry.hpp is included by the generated runtime unit, which defines TESSERA_SIMT_UNITS"
#endif

#define TESSERA_SIMT_DECLARE_UNIT(ident) extern "C" void TESSERA_SIMT_SYM(unit_##ident)(void);
TESSERA_SIMT_UNITS(TESSERA_SIMT_DECLARE_UNIT)
#undef TESSERA_SIMT_DECLARE_UNIT

namespace {
// The wave's registry, with every unit's kernels added on first use.
const std::vector<::tessera_simt::KernelEntry>& tessera_simt_kernels() {
  static const bool registered = [] {
#define TESSERA_SIMT_CALL_UNIT(ident) TESSERA_SIMT_SYM(unit_##ident)();
    TESSERA_SIMT_UNITS(TESSERA_SIMT_CALL_UNIT)
#undef TESSERA_SIMT_CALL_UNIT
    return true;
  }();
  (void)registered;
  return ::tessera_simt::registry();
}
}  // namespace

extern "C" {

size_t TESSERA_SIMT_SYM(kernel_count)(void) { return tessera_simt_kernels().size(); }

const char* TESSERA_SIMT_SYM(kernel_name)(size_t i) {
  const auto& r = tessera_simt_kernels();
  return i < r.size() ? r[i].name : nullptr;
}

int64_t TESSERA_SIMT_SYM(kernel_arity)(size_t i) {
  const auto& r = tessera_simt_kernels();
  return i < r.size() ? static_cast<int64_t>(r[i].sizes.size()) : -1;
}

int64_t TESSERA_SIMT_SYM(kernel_param_size)(size_t i, size_t j) {
  const auto& r = tessera_simt_kernels();
  return i < r.size() && j < r[i].sizes.size() ? static_cast<int64_t>(r[i].sizes[j]) : -1;
}

uint32_t TESSERA_SIMT_SYM(kernel_block)(size_t i) {
  const auto& r = tessera_simt_kernels();
  return i < r.size() ? r[i].block : 0;
}

uint32_t TESSERA_SIMT_SYM(warp_size)(void) { return TESSERA_SIMT_WARP_SIZE; }

int TESSERA_SIMT_SYM(launch)(const char* kernel, const uint32_t grid[3], const uint32_t block[3],
                             uint32_t shared_bytes, void** params, const size_t* param_sizes, size_t nparams,
                             int schedule, uint64_t seed, uint32_t workers, char* err, size_t err_len) {
  std::string msg;
  int rc;
  try {
    tessera_simt_kernels();
    rc = ::tessera_simt::launch(kernel, grid, block, shared_bytes, params, param_sizes, nparams, schedule, seed,
                                workers, msg);
  } catch (const std::exception& e) {
    rc = 5;
    msg = std::string("internal error: ") + e.what();
  } catch (...) {
    rc = 5;
    msg = "internal error";
  }
  if (rc != 0 && err && err_len > 0) {
    const size_t n = std::min(msg.size(), err_len - 1);
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
  }
  return rc;
}

}  // extern "C"
