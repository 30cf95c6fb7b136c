// gs/bin.cu: gs.bin, the 16x16 tile binning of projected Gaussians with our own device LSD radix
// sort (semantics and the oracle: src/reference/gs/raster.rs `bin`; the op: src/ops/gs/bin.rs).
//
// Launch sequence (the op drives it; every kernel has kThreads = 256 threads per block):
//   1. gs_bin_count      one thread per Gaussian: its tile rectangle, computed exactly as the
//                        reference does (f32 inputs widened to f64, floor/ceil of (x -/+ r)/16,
//                        clamped), counts[g] = its number of tiles (0 for radius <= 0). A Gaussian
//                        with radius > 0 and a non-finite mean is counted 0 and reported in the
//                        status words [code 1, first bad index (atomicMin)].
//   2. gs_scan_blocks / gs_scan_top / gs_scan_add: a multi-block exclusive scan of u64 values
//                        (kScanChunk = 1024 values per block: each block scans its chunk and writes
//                        its total; one block scans the block totals, chunk after chunk, and writes
//                        the grand total; every block adds its prefix). counts -> offsets; the op
//                        reads back the total M (the one device-to-host copy of gs.bin) to allocate
//                        the keys.
//   3. gs_bin_emit       one thread per Gaussian writes its keys (tile << 32) | bits(depth) and
//                        ids at offsets[g], tiles row-major: the reference's emission order.
//   4. LSD radix sort of (u64 key, u32 id), 8-bit digits, one pass per digit the op asks for:
//        gs_sort_hist    block b counts the digits of its chunk of kSortChunk elements (shared
//                        atomics: a count, so order-independent) -> hist[d * nblocks + b];
//        the scan above  over hist (digit-major): the start of (digit d, block b) in the output;
//        gs_sort_scatter block b walks its chunk in tiles of kThreads elements, in order. In a
//                        tile, each warp finds the lanes with its digit by 8 ballots (one per bit)
//                        and ranks itself among the lower lanes; the highest such lane writes the
//                        warp's count of that digit; thread t then turns the counts of digit t into
//                        per-warp starts (warps in order) on top of the running per-digit cursor.
//                        So each element lands after every element before it in the input with
//                        the same digit: the scatter is stable, and LSD passes compose to a stable
//                        sort of the bits sorted (equal keys keep the emission order).
//   5. gs_bin_ranges     one thread per tile: [lower_bound(t << 32), lower_bound((t + 1) << 32))
//                        by binary search of the sorted keys (an empty tile gets [s, s), s the
//                        first index whose tile is >= t, as the reference).
//
// Limits (checked by the op): N < 2^32, tiles_x * tiles_y < 2^32, M < 2^32.
#include "../common/tessera.cuh"

namespace tessera {
namespace gs {

constexpr int kThreads = 256;
constexpr uint32_t kTile = 16;
constexpr uint32_t kScanItems = 4;
constexpr uint32_t kScanChunk = kThreads * kScanItems;  // values per scan block
constexpr uint32_t kSortTiles = 16;
constexpr uint32_t kSortChunk = kThreads * kSortTiles;  // elements per sort block
constexpr int kRadix = 256;
constexpr int kMaxWarps = kThreads / 32;

// The reference's clamp_tile: an integer-valued v clamped to [0, n] (NaN goes to 0).
__device__ __forceinline__ uint32_t clamp_tile(double v, uint32_t n) {
  if (v >= static_cast<double>(n)) return n;
  if (v > 0.0) return static_cast<uint32_t>(v);
  return 0u;
}

__device__ __forceinline__ bool finite_f32(float v) { return fabsf(v) <= 3.4028234663852886e38f; }

// The reference's tile_rect for a Gaussian with radius > 0 and a finite mean: [x0, x1) x [y0, y1).
// (x -/+ r) is exact in f64 for an f32 x and an integer r whenever it is near a multiple of 16,
// and /16 is exact: the same operations as the reference, so the same result bit for bit.
__device__ __forceinline__ void tile_rect(float mx, float my, int32_t radius, uint32_t tiles_x, uint32_t tiles_y,
                                          uint32_t* x0, uint32_t* y0, uint32_t* x1, uint32_t* y1) {
  const double r = static_cast<double>(radius);
  const double x = static_cast<double>(mx);
  const double y = static_cast<double>(my);
  const double t = static_cast<double>(kTile);
  *x0 = clamp_tile(floor((x - r) / t), tiles_x);
  *y0 = clamp_tile(floor((y - r) / t), tiles_y);
  const uint32_t ex = clamp_tile(ceil((x + r) / t), tiles_x);
  const uint32_t ey = clamp_tile(ceil((y + r) / t), tiles_y);
  *x1 = ex > *x0 ? ex : *x0;
  *y1 = ey > *y0 ? ey : *y0;
}

// Lanes of the warp below this one.
__device__ __forceinline__ lanemask_t lanes_below() {
  return (static_cast<lanemask_t>(1) << lane_id()) - 1;
}

__device__ __forceinline__ int popc_mask(lanemask_t m) {
#if TESSERA_WARP_SIZE == 64
  return __popcll(m);
#else
  return __popc(m);
#endif
}

// First index i in [0, m) with keys[i] >= v (m if none).
__device__ __forceinline__ uint32_t lower_bound(const uint64_t* keys, uint32_t m, uint64_t v) {
  uint32_t lo = 0, hi = m;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < v) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace gs
}  // namespace tessera

using namespace tessera;

// 1. Per-Gaussian tile counts; any grid (grid-stride). status: [code, first bad index], [0,
// 0x7fffffff] before the launch.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_bin_count(const float* means2d, const int32_t* radii, uint32_t n, uint32_t tiles_x, uint32_t tiles_y,
                 uint64_t* counts, int32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t g = blockIdx.x * blockDim.x + threadIdx.x; g < n; g += stride) {
    const int32_t radius = radii[g];
    uint64_t c = 0;
    if (radius > 0) {
      const float mx = means2d[2 * static_cast<uint64_t>(g)];
      const float my = means2d[2 * static_cast<uint64_t>(g) + 1];
      if (gs::finite_f32(mx) && gs::finite_f32(my)) {
        uint32_t x0, y0, x1, y1;
        gs::tile_rect(mx, my, radius, tiles_x, tiles_y, &x0, &y0, &x1, &y1);
        c = static_cast<uint64_t>(x1 - x0) * static_cast<uint64_t>(y1 - y0);
      } else {
        atomicMax(&status[0], 1);
        atomicMin(&status[1], static_cast<int32_t>(g < 0x7fffffffu ? g : 0x7fffffffu));
      }
    }
    counts[g] = c;
  }
}
TESSERA_EXPORT_BLOCK(gs_bin_count, gs::kThreads)

// 2a. Exclusive scan within chunks of kScanChunk values: out[i] = sum of in[chunk start .. i),
// block_sums[b] = the chunk's total. Grid: ceil(n / kScanChunk) blocks.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_scan_blocks(const uint64_t* input, uint32_t n, uint64_t* out, uint64_t* block_sums) {
  const uint64_t base = static_cast<uint64_t>(blockIdx.x) * gs::kScanChunk + threadIdx.x * gs::kScanItems;
  uint64_t v[gs::kScanItems];
  uint64_t sum = 0;
#pragma unroll
  for (uint32_t k = 0; k < gs::kScanItems; ++k) {
    v[k] = base + k < n ? input[base + k] : 0ull;
    sum += v[k];
  }
  uint64_t total;
  uint64_t run = block_exclusive_scan<uint64_t>(sum, &total);
#pragma unroll
  for (uint32_t k = 0; k < gs::kScanItems; ++k) {
    if (base + k < n) out[base + k] = run;
    run += v[k];
  }
  if (threadIdx.x == 0) block_sums[blockIdx.x] = total;
}
TESSERA_EXPORT_BLOCK(gs_scan_blocks, gs::kThreads)

// 2b. One block: block_sums becomes its exclusive scan; total[0] = the sum of all.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_scan_top(uint64_t* block_sums, uint32_t nblocks, uint64_t* total) {
  uint64_t carry = 0;
  for (uint32_t start = 0; start < nblocks; start += blockDim.x) {
    const uint32_t i = start + threadIdx.x;
    const uint64_t v = i < nblocks ? block_sums[i] : 0ull;
    uint64_t t;
    const uint64_t e = block_exclusive_scan<uint64_t>(v, &t);
    if (i < nblocks) block_sums[i] = carry + e;
    carry += t;
  }
  if (threadIdx.x == 0) total[0] = carry;
}
TESSERA_EXPORT_BLOCK(gs_scan_top, gs::kThreads)

// 2c. out[i] += block_sums[i / kScanChunk]. Grid: as gs_scan_blocks.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_scan_add(uint64_t* out, uint32_t n, const uint64_t* block_sums) {
  const uint64_t add = block_sums[blockIdx.x];
  const uint64_t base = static_cast<uint64_t>(blockIdx.x) * gs::kScanChunk;
  for (uint32_t k = threadIdx.x; k < gs::kScanChunk; k += blockDim.x) {
    if (base + k < n) out[base + k] += add;
  }
}
TESSERA_EXPORT_BLOCK(gs_scan_add, gs::kThreads)

// 3. Keys and ids in emission order (Gaussian-major, tiles row-major); any grid (grid-stride).
// A Gaussian reported by gs_bin_count (non-finite mean) has count 0 and emits nothing.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_bin_emit(const float* means2d, const float* depths, const int32_t* radii, uint32_t n, uint32_t tiles_x,
                uint32_t tiles_y, const uint64_t* offsets, uint64_t* keys, uint32_t* ids) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t g = blockIdx.x * blockDim.x + threadIdx.x; g < n; g += stride) {
    const int32_t radius = radii[g];
    if (radius <= 0) continue;
    const float mx = means2d[2 * static_cast<uint64_t>(g)];
    const float my = means2d[2 * static_cast<uint64_t>(g) + 1];
    if (!gs::finite_f32(mx) || !gs::finite_f32(my)) continue;
    uint32_t x0, y0, x1, y1;
    gs::tile_rect(mx, my, radius, tiles_x, tiles_y, &x0, &y0, &x1, &y1);
    const float d = depths[g];
    uint32_t dbits;
    memcpy(&dbits, &d, sizeof dbits);
    uint64_t o = offsets[g];
    for (uint32_t ty = y0; ty < y1; ++ty) {
      for (uint32_t tx = x0; tx < x1; ++tx) {
        const uint64_t tile = static_cast<uint64_t>(ty) * tiles_x + tx;
        keys[o] = (tile << 32) | dbits;
        ids[o] = g;
        ++o;
      }
    }
  }
}
TESSERA_EXPORT_BLOCK(gs_bin_emit, gs::kThreads)

// 4a. Digit histogram of block b's chunk [b * kSortChunk, +kSortChunk): hist[d * nblocks + b].
// Grid: nblocks = ceil(m / kSortChunk).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_sort_hist(const uint64_t* keys, uint32_t m, uint32_t shift, uint64_t* hist) {
  __shared__ uint32_t s_count[gs::kRadix];
  for (int d = threadIdx.x; d < gs::kRadix; d += blockDim.x) s_count[d] = 0;
  __syncthreads();
  const uint64_t base = static_cast<uint64_t>(blockIdx.x) * gs::kSortChunk;
  for (uint32_t k = threadIdx.x; k < gs::kSortChunk; k += blockDim.x) {
    if (base + k < m) atomicAdd(&s_count[(keys[base + k] >> shift) & 0xff], 1u);
  }
  __syncthreads();
  for (int d = threadIdx.x; d < gs::kRadix; d += blockDim.x)
    hist[static_cast<uint64_t>(d) * gridDim.x + blockIdx.x] = s_count[d];
}
TESSERA_EXPORT_BLOCK(gs_sort_hist, gs::kThreads)

// 4b. Stable scatter of block b's chunk by the digit at `shift`, from the scanned histogram
// (starts[d * nblocks + b] = where (digit d, block b) begins). Grid: as gs_sort_hist.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_sort_scatter(const uint64_t* keys_in, const uint32_t* ids_in, uint32_t m, uint32_t shift,
                    const uint64_t* starts, uint64_t* keys_out, uint32_t* ids_out) {
  __shared__ uint32_t s_cursor[gs::kRadix];                // next output index per digit
  __shared__ uint32_t s_count[gs::kMaxWarps][gs::kRadix];  // this tile: per warp, per digit
  __shared__ uint32_t s_start[gs::kMaxWarps][gs::kRadix];  // this tile: where warp w's digit d goes
  const int nwarps = static_cast<int>(blockDim.x) / kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = lane_id();
  // blockDim.x == kRadix: thread t owns digit t's cursor and column.
  const int t = static_cast<int>(threadIdx.x);
  s_cursor[t] = static_cast<uint32_t>(starts[static_cast<uint64_t>(t) * gridDim.x + blockIdx.x]);
  for (int w = 0; w < nwarps; ++w) s_count[w][t] = 0;
  __syncthreads();
  const uint64_t base = static_cast<uint64_t>(blockIdx.x) * gs::kSortChunk;
  for (uint32_t tile = 0; tile < gs::kSortTiles; ++tile) {
    const uint64_t i = base + static_cast<uint64_t>(tile) * blockDim.x + threadIdx.x;
    const bool valid = i < m;
    uint64_t key = 0;
    uint32_t id = 0, d = 0;
    if (valid) {
      key = keys_in[i];
      id = ids_in[i];
      d = static_cast<uint32_t>(key >> shift) & 0xffu;
    }
    // Lanes of this warp with the same digit (valid lanes only).
    lanemask_t same = tessera::ballot(valid);
#pragma unroll
    for (int bit = 0; bit < 8; ++bit) {
      const bool on = (d >> bit) & 1u;
      const lanemask_t b = tessera::ballot(on);
      same &= on ? b : ~b;
    }
    const uint32_t rank = static_cast<uint32_t>(gs::popc_mask(same & gs::lanes_below()));
    // The highest lane of each digit group writes the group's size.
    if (valid && (same >> lane) == 1) s_count[warp][d] = static_cast<uint32_t>(gs::popc_mask(same));
    __syncthreads();
    {
      uint32_t run = s_cursor[t];
      for (int w = 0; w < nwarps; ++w) {
        const uint32_t c = s_count[w][t];
        s_count[w][t] = 0;
        s_start[w][t] = run;
        run += c;
      }
      s_cursor[t] = run;
    }
    __syncthreads();
    if (valid) {
      const uint32_t o = s_start[warp][d] + rank;
      keys_out[o] = key;
      ids_out[o] = id;
    }
    __syncthreads();
  }
}
TESSERA_EXPORT_BLOCK(gs_sort_scatter, gs::kThreads)

// 5. Tile ranges from the sorted keys: ranges[2t] = start, ranges[2t + 1] = end. Any grid
// (grid-stride over the tiles).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_bin_ranges(const uint64_t* keys, uint32_t m, uint32_t n_tiles, uint32_t* ranges) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t tile = blockIdx.x * blockDim.x + threadIdx.x; tile < n_tiles; tile += stride) {
    const uint64_t t = tile;
    ranges[2 * t] = gs::lower_bound(keys, m, t << 32);
    ranges[2 * t + 1] = gs::lower_bound(keys, m, (t + 1) << 32);
  }
}
TESSERA_EXPORT_BLOCK(gs_bin_ranges, gs::kThreads)
