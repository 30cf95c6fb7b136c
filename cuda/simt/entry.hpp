// entry.hpp: the C ABI of one host SIMT library (one per warp width). Included once, at the end of
// the generated translation unit (build/simt.rs), after every kernel source. These are the only
// external symbols of the library; their names carry the wave: tessera_simt_w32_*, tessera_simt_w64_*.
//
//   size_t      tessera_simt_wN_kernel_count(void);
//   const char* tessera_simt_wN_kernel_name(size_t i);      // null when i is out of range
//   int64_t     tessera_simt_wN_kernel_arity(size_t i);     // -1 when i is out of range
//   uint32_t    tessera_simt_wN_warp_size(void);
//   int         tessera_simt_wN_launch(const char* kernel, const uint32_t grid[3],
//                   const uint32_t block[3], uint32_t shared_bytes, void** params,
//                   const size_t* param_sizes, size_t nparams, int schedule /*0 in-order, 1 shuffled, 2 warp-skew*/,
//                   uint64_t seed, uint32_t workers /*0 = hardware threads*/, char* err, size_t err_len);
//     returns 0, or 1 unknown kernel, 2 argument count/size mismatch, 3 bad launch configuration,
//     4 fault in the kernel (divergent barrier or collective, exception), 5 internal error; the
//     message (NUL-terminated, truncated to err_len) is written to err. No C++ exception crosses it.
#pragma once

#define TESSERA_SIMT_SYM3(w, n) tessera_simt_w##w##_##n
#define TESSERA_SIMT_SYM2(w, n) TESSERA_SIMT_SYM3(w, n)
#define TESSERA_SIMT_SYM(n) TESSERA_SIMT_SYM2(TESSERA_SIMT_WARP_SIZE, n)

extern "C" {

size_t TESSERA_SIMT_SYM(kernel_count)(void) { return ::tessera_simt::registry().size(); }

const char* TESSERA_SIMT_SYM(kernel_name)(size_t i) {
  const auto& r = ::tessera_simt::registry();
  return i < r.size() ? r[i].name : nullptr;
}

int64_t TESSERA_SIMT_SYM(kernel_arity)(size_t i) {
  const auto& r = ::tessera_simt::registry();
  return i < r.size() ? static_cast<int64_t>(r[i].sizes.size()) : -1;
}

uint32_t TESSERA_SIMT_SYM(warp_size)(void) { return TESSERA_SIMT_WARP_SIZE; }

int TESSERA_SIMT_SYM(launch)(const char* kernel, const uint32_t grid[3], const uint32_t block[3],
                             uint32_t shared_bytes, void** params, const size_t* param_sizes, size_t nparams,
                             int schedule, uint64_t seed, uint32_t workers, char* err, size_t err_len) {
  std::string msg;
  int rc;
  try {
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
