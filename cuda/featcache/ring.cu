// featcache/ring.cu: SpecDiff's per-token feature ring (semantics and the reference:
// src/reference/featcache.rs; the ops: src/ops/featcache/ring.rs).
//
// Layouts: x [n, width] f32; the ring: feat [RING, n, width] f32, stamp [RING, n] f32, head [n]
// u8 (slot of the newest), len [n] u8 (0..=RING valid). Token i's k-th newest feature (k = 0
// newest) is in slot (head[i] + RING - k) % RING; a push writes slot (head[i] + 1) % RING.
//
// Every op validates first and writes second: a check kernel records the first bad entry in
// status[0] (atomicMin; 0xffffffff: none), and the kernel that writes returns at once when it is
// set, so invalid inputs write nothing (the host then reads the few entries it needs and names
// the fault; see the ops). Indices are checked before they are followed: never an access out of
// bounds, whatever the contents.
//
//   featcache_ring_gather        rows[j, :] = x[c1[j], :]      (one block per row, grid-stride;
//                                                                bad indices: skipped, recorded)
//   featcache_ring_scatter_init  mark[c1[j]] = 0xffffffff       (valid indices only)
//   featcache_ring_scatter_mark  mark[c1[j]] = min j; range and ring-state checks
//   featcache_ring_scatter_check a repeat: mark[c1[j]] != j
//   featcache_ring_scatter       x[c1[j]] = rows[j]; push rows[j] into token c1[j]'s ring
//   featcache_ring_reuse_check   class values, ring state, empty ring, stamp gaps
//   featcache_ring_reuse         class 2: the newest feature; class 3: the weighted sum
//   featcache_ring_class_check   class values (age)
//   featcache_ring_age           cf = 0 (class 1) or min(cf + 1, limit)
//
// The weighted reuse is bit-exact against the reference: the weights
//   raw_k = e^-(k+1) * (f64(stamp_k) - f64(t_now)),  sum = ((0 + raw_0) + raw_1) + raw_2,
//   w_k = raw_k / sum (w = [1, 0, 0] when sum == 0)
// and the sum acc = ((0 + w_0 f_0) + w_1 f_1) + w_2 f_2 are f64 with every operation rounded on
// its own (no FMA contraction), the decays e^-1, e^-2, e^-3 come from the host as bits (no
// device exp), and the result is rounded once to f32.
#include "../common/tessera.cuh"

namespace tessera {
namespace featring {

constexpr int kThreads = 256;
constexpr uint32_t kRing = 3;
constexpr uint32_t kNone = 0xffffffffu;

__device__ __forceinline__ double as_f64(uint64_t bits) {
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

// f64 product and sum, each rounded on its own: never fused into an FMA.
__device__ __forceinline__ double dmul(double a, double b) {
#if defined(TESSERA_SIMT)
  double p = a * b;
  __asm__("" : "+m"(p));  // opaque to the optimiser: nothing to contract
  return p;
#elif defined(__HIP__)
  return __dmul_rn(a, b);
#else
  return __dmul_rn(a, b);
#endif
}

__device__ __forceinline__ double dadd(double a, double b) {
#if defined(TESSERA_SIMT)
  return a + b;
#else
  return __dadd_rn(a, b);
#endif
}

// The slot of token i's k-th newest feature.
__device__ __forceinline__ uint32_t slot(uint32_t head, uint32_t k) { return (head + kRing - k) % kRing; }

__device__ __forceinline__ bool bad_state(uint8_t head, uint8_t len) { return head >= kRing || len > kRing; }

// f64(stamp) - f64(t_now) is finite and >= 0.
__device__ __forceinline__ bool good_gap(float stamp, float t_now) {
  const double gap = static_cast<double>(stamp) - static_cast<double>(t_now);
  return gap >= 0.0 && gap < static_cast<double>(INFINITY);
}

}  // namespace featring
}  // namespace tessera

using namespace tessera;

// rows[j, :] = x[c1[j], :]; any grid of kThreads-thread blocks (block-strided over rows).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_gather(const float* x, uint32_t width, uint32_t n, const uint32_t* c1, uint32_t m, float* rows,
                          uint32_t* status) {
  for (uint32_t j = blockIdx.x; j < m; j += gridDim.x) {
    const uint32_t c = c1[j];
    if (c >= n) {
      if (threadIdx.x == 0) atomicMin(&status[0], j);
      continue;
    }
    const float* src = x + static_cast<size_t>(c) * width;
    float* dst = rows + static_cast<size_t>(j) * width;
    for (uint32_t col = threadIdx.x; col < width; col += blockDim.x) dst[col] = src[col];
  }
}
TESSERA_EXPORT_BLOCK(featcache_ring_gather, featring::kThreads)

// mark[c1[j]] = none for the valid indices (the marks of the other tokens are never read).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_scatter_init(const uint32_t* c1, uint32_t m, uint32_t n, uint32_t* mark) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < m; j += stride)
    if (c1[j] < n) mark[c1[j]] = featring::kNone;
}
TESSERA_EXPORT_BLOCK(featcache_ring_scatter_init, featring::kThreads)

// mark[c] = the first j with c1[j] == c; an index >= n or a corrupt ring state is recorded.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_scatter_mark(const uint32_t* c1, uint32_t m, uint32_t n, const uint8_t* head, const uint8_t* len,
                                uint32_t* mark, uint32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < m; j += stride) {
    const uint32_t c = c1[j];
    if (c >= n) {
      atomicMin(&status[0], j);
      continue;
    }
    atomicMin(&mark[c], j);
    if (featring::bad_state(head[c], len[c])) atomicMin(&status[0], j);
  }
}
TESSERA_EXPORT_BLOCK(featcache_ring_scatter_mark, featring::kThreads)

// c1[j] repeats an earlier entry when the first j of its token is not j.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_scatter_check(const uint32_t* c1, uint32_t m, uint32_t n, const uint32_t* mark, uint32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t j = blockIdx.x * blockDim.x + threadIdx.x; j < m; j += stride) {
    const uint32_t c = c1[j];
    if (c < n && mark[c] != j) atomicMin(&status[0], j);
  }
}
TESSERA_EXPORT_BLOCK(featcache_ring_scatter_check, featring::kThreads)

// x[c1[j], :] = rows[j, :], and rows[j] becomes token c1[j]'s newest feature with stamp t_now.
// Only when the checks found nothing (then the indices are distinct tokens with usable rings, so
// every block writes tokens of its own). Block-strided over rows.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_scatter(const float* rows, const uint32_t* c1, uint32_t m, uint32_t n, uint32_t width,
                           float t_now, float* x, float* feat, float* stamp, uint8_t* head, uint8_t* len,
                           const uint32_t* status) {
  if (status[0] != featring::kNone) return;  // uniform over the grid
  for (uint32_t j = blockIdx.x; j < m; j += gridDim.x) {
    const uint32_t i = c1[j];
    const uint32_t h = head[i];
    const uint32_t s = (h + 1) % featring::kRing;
    __syncthreads();  // every thread has read head[i] before thread 0 moves it
    const float* src = rows + static_cast<size_t>(j) * width;
    float* xo = x + static_cast<size_t>(i) * width;
    float* fo = feat + (static_cast<size_t>(s) * n + i) * width;
    for (uint32_t col = threadIdx.x; col < width; col += blockDim.x) {
      const float v = src[col];
      xo[col] = v;
      fo[col] = v;
    }
    if (threadIdx.x == 0) {
      stamp[static_cast<size_t>(s) * n + i] = t_now;
      head[i] = static_cast<uint8_t>(s);
      len[i] = static_cast<uint8_t>(len[i] < featring::kRing ? len[i] + 1 : featring::kRing);
    }
  }
}
TESSERA_EXPORT_BLOCK(featcache_ring_scatter, featring::kThreads)

namespace tessera {
namespace featring {

// Token i is bad for reuse: a class outside 1..=3; for classes 2 and 3 a corrupt ring state, an
// empty ring, or a bad gap among the stamps it uses (class 2: the newest; 3: all cached).
__device__ __forceinline__ bool reuse_bad(const uint8_t* cls, uint32_t n, const uint8_t* head, const uint8_t* len,
                                          const float* stamp, float t_now, uint32_t i) {
  const uint8_t c = cls[i];
  if (c < 1 || c > 3) return true;
  if (c == 1) return false;
  if (bad_state(head[i], len[i]) || len[i] == 0) return true;
  const uint32_t used = c == 2 ? 1u : len[i];
  for (uint32_t k = 0; k < used; ++k)
    if (!good_gap(stamp[static_cast<size_t>(slot(head[i], k)) * n + i], t_now)) return true;
  return false;
}

}  // namespace featring
}  // namespace tessera

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_reuse_check(const uint8_t* cls, uint32_t n, const uint8_t* head, const uint8_t* len,
                               const float* stamp, float t_now, uint32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    if (featring::reuse_bad(cls, n, head, len, stamp, t_now, i)) atomicMin(&status[0], i);
}
TESSERA_EXPORT_BLOCK(featcache_ring_reuse_check, featring::kThreads)

// Class 2: x[i] = the newest feature; class 3: the weighted sum (see the top); class 1: untouched.
// Only when the check found nothing. Block-strided over tokens.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_reuse(const uint8_t* cls, uint32_t n, uint32_t width, const float* feat, const float* stamp,
                         const uint8_t* head, const uint8_t* len, float t_now, uint64_t decay1_bits,
                         uint64_t decay2_bits, uint64_t decay3_bits, float* x, const uint32_t* status) {
  if (status[0] != featring::kNone) return;  // uniform over the grid
  const double decay[3] = {featring::as_f64(decay1_bits), featring::as_f64(decay2_bits),
                           featring::as_f64(decay3_bits)};
  for (uint32_t i = blockIdx.x; i < n; i += gridDim.x) {
    const uint8_t c = cls[i];
    if (c == 1) continue;
    const uint32_t h = head[i];
    float* xo = x + static_cast<size_t>(i) * width;
    const float* f0 = feat + (static_cast<size_t>(h) * n + i) * width;
    if (c == 2) {
      for (uint32_t col = threadIdx.x; col < width; col += blockDim.x) xo[col] = f0[col];
      continue;
    }
    const uint32_t l = len[i];
    // Fixed trip counts (unrolled, guarded by k < l): the arrays stay in registers.
    double w[3] = {0.0, 0.0, 0.0};
    const float* f[3] = {f0, f0, f0};
    double sum = 0.0;
#pragma unroll
    for (uint32_t k = 0; k < 3; ++k) {
      if (k < l) {
        const uint32_t s = featring::slot(h, k);
        f[k] = feat + (static_cast<size_t>(s) * n + i) * width;
        const double gap = static_cast<double>(stamp[static_cast<size_t>(s) * n + i]) - static_cast<double>(t_now);
        w[k] = featring::dmul(decay[k], gap);
        sum = featring::dadd(sum, w[k]);
      }
    }
    if (sum == 0.0) {
      w[0] = 1.0;
      w[1] = w[2] = 0.0;
    } else {
#pragma unroll
      for (uint32_t k = 0; k < 3; ++k) w[k] = w[k] / sum;
    }
    for (uint32_t col = threadIdx.x; col < width; col += blockDim.x) {
      double acc = 0.0;
#pragma unroll
      for (uint32_t k = 0; k < 3; ++k)
        if (k < l) acc = featring::dadd(acc, featring::dmul(w[k], static_cast<double>(f[k][col])));
      xo[col] = static_cast<float>(acc);
    }
  }
}
TESSERA_EXPORT_BLOCK(featcache_ring_reuse, featring::kThreads)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_class_check(const uint8_t* cls, uint32_t n, uint32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    if (cls[i] < 1 || cls[i] > 3) atomicMin(&status[0], i);
}
TESSERA_EXPORT_BLOCK(featcache_ring_class_check, featring::kThreads)

// cf[i] = 0 for class 1, else min(cf[i] + 1, limit); only when the check found nothing.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featring::kThreads)
    featcache_ring_age(const uint8_t* cls, uint32_t n, uint32_t limit, uint32_t* cf, const uint32_t* status) {
  if (status[0] != featring::kNone) return;
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const uint32_t v = cf[i];
    cf[i] = cls[i] == 1 ? 0u : (v >= limit ? limit : v + 1);
  }
}
TESSERA_EXPORT_BLOCK(featcache_ring_age, featring::kThreads)
