// gemm/tile.cuh: the block tile of the tensor-core GEMMs (gemm/gemm.cu, c2c/project.cu).
//
// A block of kThreads = 256 threads accumulates a kBM x kBN = 128 x 128 tile of A B^T in f32
// over K in steps of kBK = 32, with two shared-memory stages (rows padded to kLd = 40 halves, 80
// bytes: 16-byte aligned, ldmatrix conflict-free). The caller supplies the stage copy, so each
// GEMM decides where its operands come from (plain row-major rows, a gathered KV cache, ...), and
// visits the accumulators for its own epilogue:
//
//   Accum acc;                                   // zeroed
//   mainloop<E>(acc, nk, [&](uint16_t* sa, uint16_t* sb, int kt) { ... copy k step kt ... });
//   for_each(acc, [&](float& x, int i, int j, int e, int r, int c) { ... });
//
// `r` and `c` are the element's row and accumulator column inside the block tile; (i, j, e) name
// the accumulator register (for epilogues that pair two registers, as SwiGLU does).
//   CUDA (wave32): 8 warps as 2 x 4, each 64 x 32: 4 x 4 mma.sync m16n8k16 tiles per 16-deep k
//                  slice, A by ldmatrix.x4, B (B^T rows) by ldmatrix.x2.
//   HIP (wave64):  4 waves as 2 x 2, each 64 x 64: 2 x 2 MFMA 32x32x8 blocks per 8-deep k slice.
// The copy of step k + 1 (cp.async on sm_80+) is issued before the math of step k.
#pragma once

#include "../common/tessera.cuh"
#include "../common/async_copy.cuh"

namespace tessera {
namespace gemm {

constexpr int kThreads = 256;
constexpr int kBM = 128;
constexpr int kBN = 128;
constexpr int kBK = 32;
constexpr int kPad = 8;
constexpr int kLd = kBK + kPad;
constexpr int kChunks = kBK / 8;  // 16-byte chunks per tile row
#if !TESSERA_TARGET_HIP
constexpr int kWarpsM = 2, kWarpsN = 4;
#else
constexpr int kWarpsM = 2, kWarpsN = 2;
#endif
constexpr int kWarpM = kBM / kWarpsM;  // 64
constexpr int kWarpN = kBN / kWarpsN;  // 32 (CUDA) or 64 (HIP)
static_assert(kWarpsM * kWarpsN * kWarpSize == kThreads, "one warp per sub-tile");

constexpr uint32_t kActNone = 0, kActGeluTanh = 1, kActGeluErf = 2, kActSilu = 3;

// Output element types: E for halves, F32 for float.
template <typename O> struct Out;
template <> struct Out<F32> {
  using T = float;
  static __device__ __forceinline__ float load(const float* p, size_t i) { return p[i]; }
  static __device__ __forceinline__ void store(float* p, size_t i, float x) { p[i] = x; }
};
template <> struct Out<BF16> {
  using T = uint16_t;
  static __device__ __forceinline__ float load(const uint16_t* p, size_t i) { return bf16_to_f32(p[i]); }
  static __device__ __forceinline__ void store(uint16_t* p, size_t i, float x) { p[i] = f32_to_bf16_rne(x); }
};
template <> struct Out<F16> {
  using T = uint16_t;
  static __device__ __forceinline__ float load(const uint16_t* p, size_t i) { return f16_to_f32(p[i]); }
  static __device__ __forceinline__ void store(uint16_t* p, size_t i, float x) { p[i] = f32_to_f16_rne(x); }
};

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// Not inlined: epilogues are unrolled over every accumulator element, and inlining erff and
// tanhf into each copy multiplies the code size (the call runs once per output element).
__device__ __noinline__ float activate(uint32_t act, float x) {
  switch (act) {
    case kActGeluTanh: {
      const float c = 0.7978845608028654f;  // sqrt(2 / pi)
      return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
    }
    case kActGeluErf:
      return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case kActSilu:
      return silu(x);
    case kActNone:
    default:
      return x;
  }
}

// Eight halves into one 16-byte shared chunk.
__device__ __forceinline__ void store_chunk(uint16_t* dst, const uint16_t (&h)[8]) {
  *reinterpret_cast<uint4*>(dst) = make_uint4(mma::pack_b16x2(h[0], h[1]), mma::pack_b16x2(h[2], h[3]),
                                              mma::pack_b16x2(h[4], h[5]), mma::pack_b16x2(h[6], h[7]));
}

// Copies k step kt of `rows` (<= tile_rows) row-major rows of width k starting at `base` (row
// stride k) into a shared tile of tile_rows x kLd, zero-filling rows past `rows` and columns past
// k. vec: 16-byte copies (k % 8 == 0 and base 16-byte aligned), else element loads.
template <int kTileRows>
__device__ __forceinline__ void load_rows(uint16_t* s, const uint16_t* base, int32_t rows, int32_t k, int kt,
                                          bool vec) {
  const int k0 = kt * kBK;
  const size_t K = static_cast<size_t>(k);
  for (int x = threadIdx.x; x < kTileRows * kChunks; x += kThreads) {
    const int r = x / kChunks, c = x % kChunks, kk = k0 + 8 * c;
    if (vec) {
      const bool ok = r < rows && kk < k;
      async::copy16(s + r * kLd + 8 * c, ok ? base + static_cast<size_t>(r) * K + kk : base, ok);
    } else {
      uint16_t h[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) h[i] = r < rows && kk + i < k ? base[static_cast<size_t>(r) * K + kk + i] : uint16_t(0);
      store_chunk(s + r * kLd + 8 * c, h);
    }
  }
}

// The accumulators of one thread.
struct Accum {
#if !TESSERA_TARGET_HIP
  static constexpr int kTm = kWarpM / 16, kTn = kWarpN / 8;  // 4 x 4 mma tiles per warp
  mma::FragC c[kTm][kTn];
#else
  static constexpr int kTm = kWarpM / 32, kTn = kWarpN / 32;  // 2 x 2 MFMA blocks per wave
  mma::MfmaFragC c[kTm][kTn];
#endif
  __device__ __forceinline__ Accum() {
#pragma unroll
    for (int i = 0; i < kTm; ++i)
#pragma unroll
      for (int j = 0; j < kTn; ++j) mma::zero(c[i][j]);
  }
};

// Accumulates nk k steps; load(sa, sb, kt) copies step kt of A (kBM rows) and B^T (kBN rows)
// into the stage (every thread calls it; it issues async copies or plain stores).
template <typename E, typename Load>
__device__ __forceinline__ void mainloop(Accum& acc, int nk, Load&& load) {
  __shared__ __align__(16) uint16_t s_a[2][kBM * kLd];
  __shared__ __align__(16) uint16_t s_b[2][kBN * kLd];
  constexpr int kTm = Accum::kTm, kTn = Accum::kTn;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;

  if (nk > 0) load(s_a[0], s_b[0], 0);
  async::commit();
  for (int kt = 0; kt < nk; ++kt) {
    const int st = kt & 1;
    if (kt + 1 < nk) load(s_a[st ^ 1], s_b[st ^ 1], kt + 1);
    async::commit();
    async::wait<1>();
    __syncthreads();
    const uint16_t* as = s_a[st] + wm * kWarpM * kLd;
    const uint16_t* bs = s_b[st] + wn * kWarpN * kLd;
#if !TESSERA_TARGET_HIP
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      mma::FragA af[kTm];
#pragma unroll
      for (int i = 0; i < kTm; ++i) mma::ldmatrix_a(af[i], as + 16 * i * kLd + 16 * ks, kLd);
#pragma unroll
      for (int j = 0; j < kTn; ++j) {
        mma::FragB bf;
        mma::ldmatrix_b_col_major(bf, bs + 8 * j * kLd + 16 * ks, kLd);
#pragma unroll
        for (int i = 0; i < kTm; ++i) mma::Mma16816<E>::run(acc.c[i][j], af[i], bf, acc.c[i][j]);
      }
    }
#else
#pragma unroll
    for (int ks = 0; ks < kBK / 8; ++ks) {
      mma::MfmaFragAB af[kTm], bf[kTn];
#pragma unroll
      for (int i = 0; i < kTm; ++i) mma::mfma_load_a_row_major(af[i], as + 32 * i * kLd + 8 * ks, kLd);
#pragma unroll
      for (int j = 0; j < kTn; ++j) mma::mfma_load_b_col_major(bf[j], bs + 32 * j * kLd + 8 * ks, kLd);
#pragma unroll
      for (int i = 0; i < kTm; ++i)
#pragma unroll
        for (int j = 0; j < kTn; ++j) mma::Mfma32x32x8<E>::run(acc.c[i][j], af[i], bf[j], acc.c[i][j]);
    }
#endif
    __syncthreads();  // the next step overwrites stage st ^ 1's partner
  }
}

// Calls f(x, i, j, e, r, c) for every accumulator register x of the thread: r the row and c the
// accumulator column inside the block tile.
template <typename F>
__device__ __forceinline__ void for_each(Accum& acc, F&& f) {
  const int lane = lane_id();
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
#if !TESSERA_TARGET_HIP
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int i = 0; i < Accum::kTm; ++i)
#pragma unroll
    for (int j = 0; j < Accum::kTn; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        f(acc.c[i][j].x[e], i, j, e, wm * kWarpM + 16 * i + g + 8 * (e >> 1), wn * kWarpN + 8 * j + 2 * t4 + (e & 1));
#else
#pragma unroll
  for (int i = 0; i < Accum::kTm; ++i)
#pragma unroll
    for (int j = 0; j < Accum::kTn; ++j)
#pragma unroll
      for (int e = 0; e < 16; ++e)
        f(acc.c[i][j].x[e], i, j, e, wm * kWarpM + 32 * i + mma::mfma_c_row(lane, e),
          wn * kWarpN + 32 * j + mma::mfma_c_col(lane));
#endif
}

}  // namespace gemm
}  // namespace tessera
