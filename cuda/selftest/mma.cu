// selftest/mma.cu: tensor-core fragments (cuda/common/mma.cuh) on one tile per warp. Not used by
// ops; run by tests/mma.rs against an f64 matrix product.
//
//   CUDA / wave32:  selftest_mma_m16n8k16  D (16x8) = A (16xK) * B (Kx8) + C, K = 16 * ksteps
//   HIP  / wave64:  selftest_mfma_32x32x8  D (32x32) = A (32xK) * B (Kx32) + C, K = 8 * ksteps
//
// Tile w (w = blockIdx.x * warps per block + warp) reads a + w*M*K (A row-major, M x K),
// b + w*K*N (B row-major K x N, or with b_col_major B^T row-major N x K), c and d + w*M*N
// (row-major f32). dtype: 0 bf16, 1 f16. Warps whose tile is >= ntiles return at once.
#include "../common/tessera.cuh"

// Exported with TESSERA_EXPORT (any block): tests/mma.rs launches them with one to several warps per
// block, and tests/fault_suite.rs with a partial warp (which the fragment ops must refuse).

namespace tessera {
namespace selftest_mma {

#if !TESSERA_TARGET_HIP
constexpr int kMaxWarps = 4;
constexpr int kMaxKSteps = 4;
constexpr int kMaxK = 16 * kMaxKSteps;
constexpr int kPad = 8;  // padded shared rows: strides 16-byte multiples but not the tile width

// mode: 0 fragments loaded by direct indexing from global memory, 1 through ldmatrix from shared
// memory, 2 direct loads and the shuffle-based portable mma, 3 direct loads with A's rows g and
// g + 8 swapped (a planted fragment-indexing bug the test must catch).
template <typename E>
__device__ void mma_tile(const uint16_t* a, const uint16_t* b, const float* c, float* d, int ksteps,
                         bool b_col_major, uint32_t mode, uint16_t* sa, uint16_t* sb) {
  const int K = 16 * ksteps;
  const int lane = lane_id();
  const int lda_s = K + kPad;
  const int ldb_s = b_col_major ? K + kPad : 8 + kPad;
  if (mode == 1) {
    for (int x = lane; x < 16 * K; x += 32) sa[(x / K) * lda_s + x % K] = a[x];
    if (b_col_major) {
      for (int x = lane; x < 8 * K; x += 32) sb[(x / K) * ldb_s + x % K] = b[x];
    } else {
      for (int x = lane; x < 8 * K; x += 32) sb[(x / 8) * ldb_s + x % 8] = b[x];
    }
    __syncwarp();
  }
  mma::FragC acc;
  mma::load_c(acc, c, 8);
  for (int s = 0; s < ksteps; ++s) {
    mma::FragA fa;
    mma::FragB fb;
    if (mode == 1) {
      mma::ldmatrix_a(fa, sa + 16 * s, lda_s);
      if (b_col_major) {
        mma::ldmatrix_b_col_major(fb, sb + 16 * s, ldb_s);
      } else {
        mma::ldmatrix_b_row_major(fb, sb + 16 * s * ldb_s, ldb_s);
      }
    } else {
      if (mode == 3) {
        for (int r = 0; r < 4; ++r) {
          const int i0 = 2 * r, i1 = 2 * r + 1;
          fa.x[r] = mma::pack_b16x2(a[(mma::a_row(lane, i0) ^ 8) * K + 16 * s + mma::a_col(lane, i0)],
                                    a[(mma::a_row(lane, i1) ^ 8) * K + 16 * s + mma::a_col(lane, i1)]);
        }
      } else {
        mma::load_a_row_major(fa, a + 16 * s, K);
      }
      if (b_col_major) {
        mma::load_b_col_major(fb, b + 16 * s, K);
      } else {
        mma::load_b_row_major(fb, b + 16 * s * 8, 8);
      }
    }
    if (mode == 2) {
      mma::mma_m16n8k16_portable<E>(acc, fa, fb, acc);
    } else {
      mma::Mma16816<E>::run(acc, fa, fb, acc);
    }
  }
  mma::store_c(d, 8, acc);
}
#endif

}  // namespace selftest_mma
}  // namespace tessera

#if !TESSERA_TARGET_HIP
// blockDim.x: a multiple of 32, at most 128; ksteps 1..4.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(128) selftest_mma_m16n8k16(const uint16_t* __restrict__ a, const uint16_t* __restrict__ b,
                                          const float* __restrict__ c, float* __restrict__ d, uint32_t ntiles,
                                          uint32_t ksteps, uint32_t dtype, uint32_t b_col_major, uint32_t mode) {
  namespace st = tessera::selftest_mma;
  __shared__ __align__(16) uint16_t sa[st::kMaxWarps][16 * (st::kMaxK + st::kPad)];
  __shared__ __align__(16) uint16_t sb[st::kMaxWarps][16 * (st::kMaxK + st::kPad)];
  const uint32_t warp = threadIdx.x / 32;
  const uint32_t tile = blockIdx.x * (blockDim.x / 32) + warp;
  if (tile >= ntiles || warp >= st::kMaxWarps || ksteps < 1 || ksteps > st::kMaxKSteps) return;
  const uint32_t K = 16 * ksteps;
  const uint16_t* ta = a + static_cast<size_t>(tile) * 16 * K;
  const uint16_t* tb = b + static_cast<size_t>(tile) * K * 8;
  const float* tc = c + static_cast<size_t>(tile) * 16 * 8;
  float* td = d + static_cast<size_t>(tile) * 16 * 8;
  if (dtype == 0) {
    st::mma_tile<tessera::BF16>(ta, tb, tc, td, static_cast<int>(ksteps), b_col_major != 0, mode, sa[warp], sb[warp]);
  } else {
    st::mma_tile<tessera::F16>(ta, tb, tc, td, static_cast<int>(ksteps), b_col_major != 0, mode, sa[warp], sb[warp]);
  }
}
TESSERA_EXPORT(selftest_mma_m16n8k16)
#endif

#if TESSERA_TARGET_HIP
namespace tessera {
namespace selftest_mma {

// mode: 0 MFMA (builtin, or its SIMT emulation), 1 the shuffle-based portable path, 2 A's rows
// i and i ^ 1 swapped (a planted fragment-indexing bug).
template <typename E>
__device__ void mfma_tile(const uint16_t* a, const uint16_t* b, const float* c, float* d, int ksteps,
                          bool b_col_major, uint32_t mode) {
  const int K = 8 * ksteps;
  const int lane = lane_id();
  mma::MfmaFragC acc;
  mma::mfma_load_c(acc, c, 32);
  for (int s = 0; s < ksteps; ++s) {
    mma::MfmaFragAB fa, fb;
    if (mode == 2) {
      for (int e = 0; e < 4; ++e) fa.x[e] = a[(mma::mfma_a_row(lane) ^ 1) * K + 8 * s + mma::mfma_ab_k(lane, e)];
    } else {
      mma::mfma_load_a_row_major(fa, a + 8 * s, K);
    }
    if (b_col_major) {
      mma::mfma_load_b_col_major(fb, b + 8 * s, K);
    } else {
      mma::mfma_load_b_row_major(fb, b + 8 * s * 32, 32);
    }
    if (mode == 1) {
      mma::mfma_32x32x8_portable<E>(acc, fa, fb, acc);
    } else {
      mma::Mfma32x32x8<E>::run(acc, fa, fb, acc);
    }
  }
  mma::mfma_store_c(d, 32, acc);
}

}  // namespace selftest_mma
}  // namespace tessera

// blockDim.x: a multiple of 64, at most 256; ksteps >= 1.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(256) selftest_mfma_32x32x8(const uint16_t* __restrict__ a, const uint16_t* __restrict__ b,
                                          const float* __restrict__ c, float* __restrict__ d, uint32_t ntiles,
                                          uint32_t ksteps, uint32_t dtype, uint32_t b_col_major, uint32_t mode) {
  namespace st = tessera::selftest_mma;
  const uint32_t warp = threadIdx.x / 64;
  const uint32_t tile = blockIdx.x * (blockDim.x / 64) + warp;
  if (tile >= ntiles || ksteps < 1) return;
  const uint32_t K = 8 * ksteps;
  const uint16_t* ta = a + static_cast<size_t>(tile) * 32 * K;
  const uint16_t* tb = b + static_cast<size_t>(tile) * K * 32;
  const float* tc = c + static_cast<size_t>(tile) * 32 * 32;
  float* td = d + static_cast<size_t>(tile) * 32 * 32;
  if (dtype == 0) {
    st::mfma_tile<tessera::BF16>(ta, tb, tc, td, static_cast<int>(ksteps), b_col_major != 0, mode);
  } else {
    st::mfma_tile<tessera::F16>(ta, tb, tc, td, static_cast<int>(ksteps), b_col_major != 0, mode);
  }
}
TESSERA_EXPORT(selftest_mfma_32x32x8)
#endif
