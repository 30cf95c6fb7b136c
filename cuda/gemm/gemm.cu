// gemm/gemm.cu: D = epilogue(A B^T), dense and grouped, on tensor cores.
//
// A [M, K] and B [N_b, K] row-major in bf16 or f16 (one type E), accumulated in f32; D [M, N]
// row-major in f32, bf16 or f16 (type O, rounded to nearest even), the residual in O too.
// Semantics and the reference: src/reference/gemm.rs. The epilogue, per element, in f32:
//
//   x = acc + bias[n]                   (bias optional)
//   x = act(x)                          None, GELU tanh, GELU erf, SiLU
//   -- or, with swiglu: x = silu(acc_gate + bias[n]) * (acc_up + bias[N + n])
//   x = x * row_scale[m]                (optional)
//   x = x + residual[m, n]              (optional, type O)
//   D[m, n] = round_O(x)
//
// SwiGLU: the gate and the up matrices are two pointers (`gate`, and `up` + `up_offset`
// elements), each [N, K] per group; the public op with one B [2N, K] passes B and B + N K.
//
// Grouped: `offsets` [G + 1] on the device (null: dense, one group of all M rows); group g covers
// rows offsets[g]..offsets[g+1] of A and D and uses B + g * b_group_stride (gate and up alike) and
// bias + g * bias_group_stride. The grid is (m_slots, n_tiles), m_slots = ceil(M / kBM) + G for
// grouped calls (the tiles of all groups never exceed it: sum ceil(len_g / kBM) <= floor(M / kBM)
// + G); each block finds its (group, row tile) by a block scan of the per-group tile counts,
// chunk by chunk of blockDim groups (leaving as soon as its slot is reached); slots past the last
// tile do nothing. Offsets are clamped before any use (start = clamp(off[g], 0, M), end =
// clamp(off[g+1], start, M)), so invalid offsets are never an out-of-bounds access; block (0, 0)
// validates them into the status words: [code (0 ok, 1 invalid), first bad index, its value, M].
// Rows outside every group ([0, off[0]) and [off[G], M)) are written 0 by all blocks
// together (a grid-stride loop), without the epilogue.
//
// Tiling: gemm/tile.cuh (128 x 128 x 32 block tiles, two shared stages, mma.sync on CUDA,
// MFMA on HIP); with swiglu a tile has 64 output columns, gate and up interleaved per warp slice
// (see b_row).
// Loads: `vec` = 1 (K % 8 == 0 and A, B 16-byte aligned, checked by the op): 16-byte copies, a
// chunk past K or a row past the tile's end zero-filled; else element loads with the same zero
// fill (any K, any alignment).
#include "tile.cuh"

namespace tessera {
namespace gemm {

template <typename O>
struct Params {
  const uint16_t* a;
  const uint16_t* gate;  // B, or the gate matrices
  const uint16_t* up;    // the up matrices (swiglu), else unused
  uint64_t b_group_stride;
  const int32_t* offsets;  // null: dense
  uint32_t groups;
  int32_t m, n, k;  // n: output columns
  const float* bias;
  uint64_t bias_group_stride;
  const float* row_scale;
  const typename Out<O>::T* residual;
  uint32_t act, swiglu, vec;
  typename Out<O>::T* out;
  int32_t* status;
};

// Rows [s, e) of group g, clamped into [0, M) and non-decreasing within the group.
__device__ __forceinline__ void group_rows(const int32_t* off, uint32_t g, int32_t m, int32_t& s, int32_t& e) {
  const int32_t a = off[g], b = off[g + 1];
  s = a < 0 ? 0 : (a > m ? m : a);
  e = b < s ? s : (b > m ? m : b);
}

// Block (0, 0) of a grouped call: the status words (see the top of the file).
template <typename O>
__device__ __forceinline__ void validate(const Params<O>& p) {
  __shared__ int32_t s_first;
  if (threadIdx.x == 0) s_first = 0x7fffffff;
  __syncthreads();
  for (uint32_t g = threadIdx.x; g <= p.groups; g += blockDim.x) {
    const int32_t v = p.offsets[g];
    const bool bad = (g == 0 && v < 0) || (g > 0 && v < p.offsets[g - 1]) || (g == p.groups && v > p.m);
    if (bad) atomicMin(&s_first, static_cast<int32_t>(g));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const int32_t f = s_first;
    p.status[0] = f == 0x7fffffff ? 0 : 1;
    p.status[1] = f == 0x7fffffff ? 0 : f;
    p.status[2] = f == 0x7fffffff ? 0 : p.offsets[f];
    p.status[3] = p.m;
  }
}

// The (group, first row, rows) of row-tile slot `slot` of a grouped call; rows = 0: no tile.
// Every thread of the block calls it (block scans).
template <typename O>
__device__ __forceinline__ void find_tile(const Params<O>& p, uint64_t slot, uint32_t& group, int32_t& row0,
                                          int32_t& rows) {
  __shared__ int32_t s_tile[3];
  if (threadIdx.x == 0) s_tile[0] = s_tile[1] = s_tile[2] = 0;
  __syncthreads();
  unsigned long long carry = 0;
  for (uint32_t base = 0; base < p.groups; base += blockDim.x) {
    const uint32_t g = base + threadIdx.x;
    int32_t s = 0, e = 0;
    if (g < p.groups) group_rows(p.offsets, g, p.m, s, e);
    const unsigned long long cnt = static_cast<unsigned long long>((e - s + kBM - 1) / kBM);
    unsigned long long total;
    const unsigned long long ex = block_exclusive_scan<unsigned long long>(cnt, &total);
    const unsigned long long first = carry + ex;
    if (g < p.groups && slot >= first && slot < first + cnt) {
      const int32_t r0 = s + static_cast<int32_t>(slot - first) * kBM;
      s_tile[0] = static_cast<int32_t>(g);
      s_tile[1] = r0;
      s_tile[2] = min(e - r0, kBM);
    }
    carry += total;
    if (carry > slot) break;  // uniform: carry and slot are the same in every thread
  }
  __syncthreads();
  group = static_cast<uint32_t>(s_tile[0]);
  row0 = s_tile[1];
  rows = s_tile[2];
}

// Global B row of shared tile row r (0..kBN) of output column tile tn: the matrix (gate or up,
// already offset to the group) and the output column; col >= n: a zero row.
template <typename O>
__device__ __forceinline__ const uint16_t* b_row(const Params<O>& p, const uint16_t* gate, const uint16_t* up, int tn,
                                                 int r, int& col) {
  if (!p.swiglu) {
    col = tn * kBN + r;
    return gate;
  }
  // Warp slice s (kWarpN rows) holds kWarpN / 2 gate rows then the same columns' up rows, so a
  // thread's gate and up accumulators of one output element sit in the same registers' pairs.
  constexpr int kHalf = kWarpN / 2;
  const int s = r / kWarpN, q = r % kWarpN;
  col = tn * (kBN / 2) + s * kHalf + q % kHalf;
  return q < kHalf ? gate : up;
}

// Copies k step kt (columns kt*kBK ..) of the A rows [row0, row0 + rows) and the B tile into
// shared memory stage (sa, sb), zero-filling what is outside.
template <typename O>
__device__ __forceinline__ void load_stage(const Params<O>& p, uint16_t* sa, uint16_t* sb, int32_t row0, int32_t rows,
                                           const uint16_t* gate, const uint16_t* up, int tn, int kt) {
  const int k0 = kt * kBK;
  const size_t K = static_cast<size_t>(p.k);
  if (p.vec) {
    for (int x = threadIdx.x; x < kBM * kChunks; x += kThreads) {
      const int r = x / kChunks, c = x % kChunks, kk = k0 + 8 * c;
      const bool ok = r < rows && kk < p.k;
      const uint16_t* src = ok ? p.a + static_cast<size_t>(row0 + r) * K + kk : p.a;
      async::copy16(sa + r * kLd + 8 * c, src, ok);
    }
    for (int x = threadIdx.x; x < kBN * kChunks; x += kThreads) {
      const int r = x / kChunks, c = x % kChunks, kk = k0 + 8 * c;
      int col;
      const uint16_t* mat = b_row(p, gate, up, tn, r, col);
      const bool ok = col < p.n && kk < p.k;
      const uint16_t* src = ok ? mat + static_cast<size_t>(col) * K + kk : p.gate;
      async::copy16(sb + r * kLd + 8 * c, src, ok);
    }
  } else {
    for (int x = threadIdx.x; x < kBM * kChunks; x += kThreads) {
      const int r = x / kChunks, c = x % kChunks, kk = k0 + 8 * c;
      uint16_t h[8];
#pragma unroll
      for (int i = 0; i < 8; ++i)
        h[i] = r < rows && kk + i < p.k ? p.a[static_cast<size_t>(row0 + r) * K + kk + i] : uint16_t(0);
      *reinterpret_cast<uint4*>(sa + r * kLd + 8 * c) =
          make_uint4(mma::pack_b16x2(h[0], h[1]), mma::pack_b16x2(h[2], h[3]), mma::pack_b16x2(h[4], h[5]),
                     mma::pack_b16x2(h[6], h[7]));
    }
    for (int x = threadIdx.x; x < kBN * kChunks; x += kThreads) {
      const int r = x / kChunks, c = x % kChunks, kk = k0 + 8 * c;
      int col;
      const uint16_t* mat = b_row(p, gate, up, tn, r, col);
      uint16_t h[8];
#pragma unroll
      for (int i = 0; i < 8; ++i)
        h[i] = col < p.n && kk + i < p.k ? mat[static_cast<size_t>(col) * K + kk + i] : uint16_t(0);
      *reinterpret_cast<uint4*>(sb + r * kLd + 8 * c) =
          make_uint4(mma::pack_b16x2(h[0], h[1]), mma::pack_b16x2(h[2], h[3]), mma::pack_b16x2(h[4], h[5]),
                     mma::pack_b16x2(h[6], h[7]));
    }
  }
}

// The epilogue of one element: row and col are global (row < M, col < n).
template <typename O>
__device__ __forceinline__ void emit(const Params<O>& p, const float* bias, int32_t row, int col, float acc,
                                     float acc_up) {
  float x;
  if (p.swiglu) {
    float gt = acc, u = acc_up;
    if (bias != nullptr) {
      gt += bias[col];
      u += bias[p.n + col];
    }
    x = activate(kActSilu, gt) * u;
  } else {
    x = acc;
    if (bias != nullptr) x += bias[col];
    x = activate(p.act, x);
  }
  if (p.row_scale != nullptr) x *= p.row_scale[row];
  const size_t at = static_cast<size_t>(row) * static_cast<size_t>(p.n) + static_cast<size_t>(col);
  if (p.residual != nullptr) x += Out<O>::load(p.residual, at);
  Out<O>::store(p.out, at, x);
}

template <typename E, typename O>
__device__ __forceinline__ void run(const Params<O>& p) {
  const int tn = static_cast<int>(blockIdx.y);
  const bool grouped = p.offsets != nullptr;
  if (grouped) {
    if (blockIdx.x == 0 && blockIdx.y == 0) validate(p);
    // Rows outside every group: 0, by the whole grid.
    int32_t lead = 0, tail = 0;
    group_rows(p.offsets, 0, p.m, lead, tail);  // lead = clamp(off[0])
    {
      const int32_t last = p.offsets[p.groups];
      tail = last < lead ? lead : (last > p.m ? p.m : last);
    }
    const uint64_t n = static_cast<uint64_t>(p.n);
    const uint64_t uncovered = (static_cast<uint64_t>(lead) + static_cast<uint64_t>(p.m - tail)) * n;
    const uint64_t nthreads = static_cast<uint64_t>(gridDim.x) * gridDim.y * kThreads;
    for (uint64_t i = (static_cast<uint64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * kThreads + threadIdx.x;
         i < uncovered; i += nthreads) {
      const uint64_t r = i / n, c = i % n;
      const uint64_t row = r < static_cast<uint64_t>(lead) ? r : static_cast<uint64_t>(tail) + (r - lead);
      Out<O>::store(p.out, row * n + c, 0.0f);
    }
  }
  uint32_t group = 0;
  int32_t row0 = 0, rows = 0;
  if (grouped) {
    find_tile(p, blockIdx.x, group, row0, rows);
  } else {
    row0 = static_cast<int32_t>(blockIdx.x) * kBM;
    rows = min(p.m - row0, kBM);
  }
  const int ncols = p.swiglu ? kBN / 2 : kBN;
  if (rows <= 0 || tn * ncols >= p.n) return;  // uniform over the block
  const uint16_t* gate = p.gate + static_cast<size_t>(group) * p.b_group_stride;
  const uint16_t* up = p.up + static_cast<size_t>(group) * p.b_group_stride;
  const float* bias = p.bias != nullptr ? p.bias + static_cast<size_t>(group) * p.bias_group_stride : nullptr;

  Accum acc;
  mainloop<E>(acc, (p.k + kBK - 1) / kBK,
              [&](uint16_t* sa, uint16_t* sb, int kt) { load_stage(p, sa, sb, row0, rows, gate, up, tn, kt); });

  // Epilogue straight from the accumulators; with swiglu the up halves (j >= kTn / 2) are
  // consumed with their gate.
  constexpr int kTn = Accum::kTn;
  for_each(acc, [&](float& x, int i, int j, int e, int r, int c) {
    if (p.swiglu && j >= kTn / 2) return;
    const int wn = c / kWarpN, q = c % kWarpN;
    const int col = p.swiglu ? tn * (kBN / 2) + wn * (kWarpN / 2) + q : tn * kBN + c;
    if (r >= rows || col >= p.n) return;
    emit(p, bias, row0 + r, col, x, p.swiglu ? acc.c[i][(j + kTn / 2) % kTn].x[e] : 0.0f);
  });
}

}  // namespace gemm
}  // namespace tessera

using namespace tessera;

// Arguments: A, the gate (or only) B and the up B (used with swiglu at up + up_offset), the B
// stride between groups, offsets (null: dense) and G, M, N (output columns), K, bias (null:
// none) and its stride between groups, row_scale, residual (null: none), act, swiglu, vec, D,
// status (4 words; grouped calls only).
#define TESSERA_GEMM(E, sfx, O, osfx)                                                                              \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gemm::kThreads) gemm_##sfx##_##osfx(                                    \
      const uint16_t* a, const uint16_t* gate, const uint16_t* up, uint64_t up_offset, uint64_t b_group_stride,   \
      const int32_t* offsets, uint32_t groups, int32_t m, int32_t n, int32_t k, const float* bias,                 \
      uint64_t bias_group_stride, const float* row_scale, const gemm::Out<O>::T* residual, uint32_t act,          \
      uint32_t swiglu, uint32_t vec, gemm::Out<O>::T* d, int32_t* status) {                                       \
    gemm::Params<O> p;                                                                                            \
    p.a = a;                                                                                                      \
    p.gate = gate;                                                                                                \
    p.up = up + up_offset;                                                                                        \
    p.b_group_stride = b_group_stride;                                                                            \
    p.offsets = offsets;                                                                                          \
    p.groups = groups;                                                                                            \
    p.m = m;                                                                                                      \
    p.n = n;                                                                                                      \
    p.k = k;                                                                                                      \
    p.bias = bias;                                                                                                \
    p.bias_group_stride = bias_group_stride;                                                                      \
    p.row_scale = row_scale;                                                                                      \
    p.residual = residual;                                                                                        \
    p.act = act;                                                                                                  \
    p.swiglu = swiglu;                                                                                            \
    p.vec = vec;                                                                                                  \
    p.out = d;                                                                                                    \
    p.status = status;                                                                                            \
    gemm::run<E, O>(p);                                                                                           \
  }                                                                                                               \
  TESSERA_EXPORT_BLOCK(gemm_##sfx##_##osfx, gemm::kThreads)

TESSERA_GEMM(BF16, bf16, F32, f32)
TESSERA_GEMM(BF16, bf16, BF16, bf16)
TESSERA_GEMM(BF16, bf16, F16, f16)
TESSERA_GEMM(F16, f16, F32, f32)
TESSERA_GEMM(F16, f16, BF16, bf16)
TESSERA_GEMM(F16, f16, F16, f16)
