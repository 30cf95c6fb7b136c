// c2c/project.cu: the Cache-to-Cache projector as five GEMM stages over gemm/tile.cuh, fused
// with its gathers and elementwise steps, writing the gated residual in place into the
// receiver's KV cache. Semantics and the reference: src/reference/c2c.rs; the op: src/ops/c2c.rs.
//
// Per token (row) m, with E the weights' type (bf16 or f16) and f32 accumulation:
//   kIn   h = W_in x + b_in, x = concat(src row, receiver row): the A operand is gathered from
//         the two caches in the k loop (no concatenated copy); writes h (f32), h_e = round_E(h)
//         and the tile's partial sums of squares of h (part[tn, m]).
//   kUp   u = GELU(rstd(m) * (W1' h_e)), W1' = W1 with RMSNorm's weight folded into its columns
//         (c2c_fold); rstd(m) = 1 / sqrt(sum_tiles part[., m] / Hd + eps), summed in tile order
//         (deterministic); writes u in E.
//   kDown h = h + W2 u: the residual read from and written to h (f32), h_e and part as kIn.
//   kGate gs[m, head] = g * sigmoid(W_s h_e).
//   kOut  cache[m, head, d] = round_C(cache[m, head, d] + gs[m, head] * (W_out h_e)[head * Dt + d])
//         in place, C the receiver cache's type.
//
// Caches: element (row m, head, d) of a view is at
//   (s / per_block) * block_stride + (s % per_block) * pos_stride + head * head_stride + d,
// s = slots[m]: contiguous [B, H, L, D] (per_block L, slot b L + l), vLLM-style paged
// [blocks, 16, H, D] (per_block 16, the slot mapping) and token-major [T, H, D] all fit. The
// sharer (src) and receiver (cache) each hold bf16 or f16 (`kind`); an element of the other type
// than E is converted (round to nearest even) as it is loaded. vec_a: 16-byte copies of A (plain
// stages: K % 8 == 0 and A aligned; kIn: also both caches in E, head dims and strides multiples
// of 8 and both bases aligned, so a chunk never straddles a head); vec_b likewise for B.
#include "../gemm/tile.cuh"
#include "view.cuh"

namespace tessera {
namespace c2c {

constexpr uint32_t kIn = 0, kUp = 1, kDown = 2, kGate = 3, kOut = 4;
struct Params {
  uint32_t mode;
  int32_t m, n, k;
  const uint16_t* a;  // plain stages: [M, K] in E
  const uint16_t* b;  // [N, K] in E (the block's matrix)
  const uint16_t* src;
  View sv;
  uint16_t* cache;
  View cv;
  int32_t ks;  // Hs Ds: the src columns of x
  const float* bias;
  float* h32;
  uint16_t* o16;
  float* part;  // [ceil(Hd / kBN), M]
  int32_t part_tiles;
  float* gs;  // [M, Ht]
  float gate;
  uint32_t act;
  float eps;
  uint32_t vec_a, vec_b;
  uint32_t ekind;
};

// Element k of row m of x = concat(src, receiver), as E.
__device__ __forceinline__ uint16_t x_elem(const Params& p, int32_t m, int32_t k) {
  uint16_t h;
  uint32_t kind;
  if (k < p.ks) {
    h = p.src[p.sv.at(m, k / p.sv.dim, k % p.sv.dim)];
    kind = p.sv.kind;
  } else {
    const int32_t q = k - p.ks;
    h = p.cache[p.cv.at(m, q / p.cv.dim, q % p.cv.dim)];
    kind = p.cv.kind;
  }
  return kind == p.ekind ? h : narrow(widen(h, kind), p.ekind);
}

// Copies k step kt of the gathered A rows [row0, row0 + rows) into the shared tile.
__device__ __forceinline__ void load_x(const Params& p, uint16_t* sa, int32_t row0, int32_t rows, int kt) {
  using namespace gemm;
  const int k0 = kt * kBK;
  for (int x = threadIdx.x; x < kBM * kChunks; x += kThreads) {
    const int r = x / kChunks, c = x % kChunks, kk = k0 + 8 * c;
    if (p.vec_a) {
      const bool ok = r < rows && kk < p.k;
      const uint16_t* from = p.src;
      if (ok) {
        const int32_t m = row0 + r;
        if (kk < p.ks) {
          from = p.src + p.sv.at(m, kk / p.sv.dim, kk % p.sv.dim);
        } else {
          const int32_t q = kk - p.ks;
          from = p.cache + p.cv.at(m, q / p.cv.dim, q % p.cv.dim);
        }
      }
      async::copy16(sa + r * kLd + 8 * c, from, ok);
    } else {
      uint16_t h[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) h[i] = r < rows && kk + i < p.k ? x_elem(p, row0 + r, kk + i) : uint16_t(0);
      store_chunk(sa + r * kLd + 8 * c, h);
    }
  }
}

template <typename E>
__device__ __forceinline__ void run(const Params& p) {
  using namespace gemm;
  const int tn = static_cast<int>(blockIdx.y);
  const int32_t row0 = static_cast<int32_t>(blockIdx.x) * kBM;
  const int32_t rows = min(p.m - row0, kBM);
  const int32_t col0 = tn * kBN;
  if (rows <= 0 || col0 >= p.n) return;  // uniform over the block
  const int32_t cols = min(p.n - col0, kBN);

  __shared__ float s_rstd[kBM];
  if (p.mode == kUp) {
    for (int r = threadIdx.x; r < rows; r += kThreads) {
      float ss = 0.0f;
      for (int t = 0; t < p.part_tiles; ++t) ss += p.part[static_cast<size_t>(t) * p.m + row0 + r];
      s_rstd[r] = 1.0f / sqrtf(ss / static_cast<float>(p.k) + p.eps);
    }
    __syncthreads();
  }

  const size_t K = static_cast<size_t>(p.k);
  Accum acc;
  mainloop<E>(acc, (p.k + kBK - 1) / kBK, [&](uint16_t* sa, uint16_t* sb, int kt) {
    if (p.mode == kIn)
      load_x(p, sa, row0, rows, kt);
    else
      load_rows<kBM>(sa, p.a + static_cast<size_t>(row0) * K, rows, p.k, kt, p.vec_a != 0);
    load_rows<kBN>(sb, p.b + static_cast<size_t>(col0) * K, cols, p.k, kt, p.vec_b != 0);
  });

  const size_t N = static_cast<size_t>(p.n);
  // One accumulator walk per mode, each with a small body, so that the walk unrolls (the
  // accumulators stay in registers; a mode switch inside the walk kept clang's HIP build from
  // unrolling it and moved them to scratch).
  const auto at = [&](int r, int c) {
    return static_cast<size_t>(row0 + r) * N + static_cast<size_t>(col0 + c);
  };
  switch (p.mode) {
    case kIn:
    case kDown: {
      const float* add = p.mode == kIn ? p.bias : p.h32;
      const bool per_col = p.mode == kIn;
      for_each(acc, [&](float& x, int, int, int, int r, int c) {
        if (r >= rows || c >= cols) return;
        const size_t i = at(r, c);
        const float h = x + add[per_col ? static_cast<size_t>(col0 + c) : i];
        p.h32[i] = h;
        p.o16[i] = narrow(h, p.ekind);
      });
      break;
    }
    case kUp:
      for_each(acc, [&](float& x, int, int, int, int r, int c) {
        if (r >= rows || c >= cols) return;
        p.o16[at(r, c)] = narrow(activate(p.act, x * s_rstd[r]), p.ekind);
      });
      break;
    case kGate:
      for_each(acc, [&](float& x, int, int, int, int r, int c) {
        if (r >= rows || c >= cols) return;
        p.gs[at(r, c)] = p.gate / (1.0f + expf(-x));
      });
      break;
    case kOut: {
      const size_t heads = N / static_cast<size_t>(p.cv.dim);
      for_each(acc, [&](float& x, int, int, int, int r, int c) {
        if (r >= rows || c >= cols) return;
        const int32_t row = row0 + r, col = col0 + c;
        const int head = col / p.cv.dim, d = col % p.cv.dim;
        const size_t i = p.cv.at(row, head, d);
        const float y = widen(p.cache[i], p.cv.kind) + p.gs[static_cast<size_t>(row) * heads + head] * x;
        p.cache[i] = narrow(y, p.cv.kind);
      });
      break;
    }
    default:
      break;
  }

  if (p.mode == kIn || p.mode == kDown) {
    // The tile's partial sums of squares of h, per row, in column order (h is visible to the
    // whole block after the barrier).
    __syncthreads();
    for (int r = threadIdx.x; r < rows; r += kThreads) {
      const float* hr = p.h32 + static_cast<size_t>(row0 + r) * N + col0;
      float ss = 0.0f;
      for (int c = 0; c < cols; ++c) ss += hr[c] * hr[c];
      p.part[static_cast<size_t>(tn) * p.m + row0 + r] = ss;
    }
  }
}

}  // namespace c2c
}  // namespace tessera

using namespace tessera;

// One projector stage (see the top of the file); grid (ceil(M / 128), ceil(N / 128)).
#define TESSERA_C2C_STAGE(E, sfx, ekind_)                                                                         \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gemm::kThreads) c2c_stage_##sfx(                                      \
      uint32_t mode, int32_t m, int32_t n, int32_t k, const uint16_t* a, const uint16_t* b, uint64_t b_offset,      \
      const uint16_t* src,                                                                                      \
      const int32_t* src_slots, int32_t src_per_block, uint64_t src_block_stride, uint64_t src_pos_stride,       \
      uint64_t src_head_stride, int32_t src_dim, uint32_t src_kind, uint16_t* cache, const int32_t* cache_slots, \
      int32_t cache_per_block, uint64_t cache_block_stride, uint64_t cache_pos_stride,                           \
      uint64_t cache_head_stride, int32_t cache_dim, uint32_t cache_kind, int32_t ks, const float* bias,        \
      float* h32, uint16_t* o16, float* part, int32_t part_tiles, float* gs, float gate, uint32_t act, float eps, \
      uint32_t vec_a, uint32_t vec_b) {                                                                          \
    c2c::Params p;                                                                                                \
    p.mode = mode;                                                                                                \
    p.m = m;                                                                                                      \
    p.n = n;                                                                                                      \
    p.k = k;                                                                                                      \
    p.a = a;                                                                                                      \
    p.b = b + b_offset;                                                                                                  \
    p.src = src;                                                                                                  \
    p.sv = c2c::View{src_slots, src_per_block, src_block_stride, src_pos_stride, src_head_stride, src_dim,       \
                     src_kind};                                                                                   \
    p.cache = cache;                                                                                              \
    p.cv = c2c::View{cache_slots,        cache_per_block, cache_block_stride, cache_pos_stride,                   \
                     cache_head_stride, cache_dim,       cache_kind};                                             \
    p.ks = ks;                                                                                                    \
    p.bias = bias;                                                                                                \
    p.h32 = h32;                                                                                                  \
    p.o16 = o16;                                                                                                  \
    p.part = part;                                                                                                \
    p.part_tiles = part_tiles;                                                                                    \
    p.gs = gs;                                                                                                    \
    p.gate = gate;                                                                                                \
    p.act = act;                                                                                                  \
    p.eps = eps;                                                                                                  \
    p.vec_a = vec_a;                                                                                              \
    p.vec_b = vec_b;                                                                                              \
    p.ekind = ekind_;                                                                                             \
    c2c::run<E>(p);                                                                                               \
  }                                                                                                               \
  TESSERA_EXPORT_BLOCK(c2c_stage_##sfx, gemm::kThreads)

TESSERA_C2C_STAGE(BF16, bf16, c2c::kKindBf16)
TESSERA_C2C_STAGE(F16, f16, c2c::kKindF16)

// w1n[b, f, k] = round_E(w1[b, f, k] * norm[b, k]): RMSNorm's weight folded into the columns of
// the FFN's first matrix (any grid, grid-stride).
#define TESSERA_C2C_FOLD(sfx, ekind_)                                                                         \
  TESSERA_GLOBAL void c2c_fold_##sfx(const uint16_t* w1, const float* norm, uint64_t blocks, uint64_t ffn,    \
                                     uint64_t hidden, uint16_t* w1n) {                                        \
    const uint64_t total = blocks * ffn * hidden;                                                             \
    const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;                                    \
    for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) { \
      const uint64_t k = i % hidden, b = i / (ffn * hidden);                                                  \
      w1n[i] = c2c::narrow(c2c::widen(w1[i], ekind_) * norm[b * hidden + k], ekind_);                         \
    }                                                                                                         \
  }                                                                                                           \
  TESSERA_EXPORT(c2c_fold_##sfx)

TESSERA_C2C_FOLD(bf16, c2c::kKindBf16)
TESSERA_C2C_FOLD(f16, c2c::kKindF16)
