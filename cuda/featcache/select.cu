// featcache/select.cu: SpecDiff's three-class token selection, exact and deterministic
// (semantics and the reference: src/reference/featcache.rs; the op: src/ops/featcache.rs).
//
//   score[i] = (f64(his[i]) * f64(fut[i])) * exp_table[cf[i]]      (f64, this order)
//
// The order is (score descending, index ascending). featcache_rank gives every token its rank in
// that order by counting the tokens before it (O(N) compares per token, a grid-stride loop over
// tokens; -0.0 compares as +0.0) and writes order[rank] = i; it also validates the inputs into
// the status words [code (0 ok, 1 his, 2 fut: NaN, infinite or negative; 3 cf > table), first
// bad index (atomicMin over the grid)]. featcache_classes (one block) then sums the scores
// from the end of the order in f64 (thread 0, sequentially, as the reference does), finds the
// C2 run (the longest suffix outside C1 whose sum stays <= low_mass * total) and writes
// class[i] (1 recompute, 2 reuse the last feature, 3 the weighted reuse) and c1[rank] = i for
// the n1 tokens of C1 (n1 = N - floor(cr * N), computed by the op).
#include "../common/tessera.cuh"

namespace tessera {
namespace featcache {

constexpr int kThreads = 256;

// f64 values travel as their bits (the table and low_mass).
__device__ __forceinline__ double as_f64(uint64_t bits) {
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
}

__device__ __forceinline__ double score(const float* his, const float* fut, const uint32_t* cf,
                                        const uint64_t* exp_table, uint32_t table_len, uint32_t i) {
  const uint32_t c = cf[i] < table_len ? cf[i] : table_len - 1;  // invalid cf: reported, clamped
  const double s = (static_cast<double>(his[i]) * static_cast<double>(fut[i])) * as_f64(exp_table[c]);
  return s == 0.0 ? 0.0 : s;  // -0.0 ties with +0.0
}

__device__ __forceinline__ bool bad(float x) { return !(x >= 0.0f) || x == INFINITY; }

}  // namespace featcache
}  // namespace tessera

using namespace tessera;

// Ranks and validation; any grid of kThreads-thread blocks. status: [code, first bad index],
// [0, 0x7fffffff] before the launch; this kernel takes the first bad index (atomicMin) and
// featcache_classes sets the code from that token.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featcache::kThreads)
    featcache_rank(const float* his, const float* fut, const uint32_t* cf, const uint64_t* exp_table,
                   uint32_t table_len, uint32_t n, uint32_t* order, int32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (featcache::bad(his[i]) || featcache::bad(fut[i]) || cf[i] >= table_len)
      atomicMin(&status[1], static_cast<int32_t>(i));
    const double si = featcache::score(his, fut, cf, exp_table, table_len, i);
    uint32_t rank = 0;
    for (uint32_t j = 0; j < n; ++j) {
      const double sj = featcache::score(his, fut, cf, exp_table, table_len, j);
      rank += (sj > si || (sj == si && j < i)) ? 1u : 0u;
    }
    // Invalid inputs (NaN) could give two tokens one rank: clamp, the call fails anyway.
    order[rank < n ? rank : n - 1] = i;
  }
}
TESSERA_EXPORT_BLOCK(featcache_rank, featcache::kThreads)

// The classes from the order (one block of kThreads).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featcache::kThreads)
    featcache_classes(const float* his, const float* fut, const uint32_t* cf, const uint64_t* exp_table,
                      uint32_t table_len, uint32_t n, uint32_t n1, uint64_t low_mass_bits, const uint32_t* order,
                      uint8_t* cls, uint32_t* c1, int32_t* status) {
  __shared__ uint32_t s_run;
  // Invalid inputs: the code of the first bad token, and nothing else (NaN scores can leave order
  // slots unwritten, so it is never followed). Uniform over the block.
  const int32_t b = status[1];
  if (b != 0x7fffffff) {
    if (threadIdx.x == 0) {
      const uint32_t i = static_cast<uint32_t>(b);
      status[0] = featcache::bad(his[i]) ? 1 : (featcache::bad(fut[i]) ? 2 : 3);
    }
    return;
  }
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (uint32_t r = n; r-- > 0;) total += featcache::score(his, fut, cf, exp_table, table_len, order[r]);
    const double limit = featcache::as_f64(low_mass_bits) * total;
    double acc = 0.0;
    uint32_t run = 0;
    for (uint32_t r = n; r-- > n1;) {
      acc += featcache::score(his, fut, cf, exp_table, table_len, order[r]);
      if (acc > limit) break;
      ++run;
    }
    s_run = run;
  }
  __syncthreads();
  const uint32_t run = s_run;
  for (uint32_t r = threadIdx.x; r < n; r += blockDim.x) {
    const uint32_t i = order[r];
    cls[i] = r < n1 ? 1 : (r >= n - run ? 2 : 3);
    if (r < n1) c1[r] = i;
  }
}
TESSERA_EXPORT_BLOCK(featcache_classes, featcache::kThreads)
