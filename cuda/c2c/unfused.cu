// c2c/unfused.cu: the elementwise and gather kernels of the UNFUSED C2C projector baseline
// (src/ops/c2c/unfused.rs), the way a framework without fusion runs the projector: every
// intermediate materialised in global memory, the GEMMs by gemm::dense between these launches.
// The fused kernel and the semantics: cuda/c2c/project.cu, src/reference/c2c.rs.
//
//   c2c_gather_E     x[m, k] = round_E(concat(src row, receiver row)[k]) from both caches by slot.
//   c2c_pointwise_E  mode 0 (bias):     h32 = y + bias[col], o = round_E(h32);
//                    mode 1 (residual): h32 = h32 + y,       o = round_E(h32);
//                    mode 2 (act):      o = round_E(act(y)).
//   c2c_rmsnorm_E    o[m, k] = round_E(h32[m, k] * rstd(m) * norm[k]), rstd = 1 / sqrt(mean(h32^2) + eps);
//                    one block of 256 threads per row (grid-stride over rows), a shared tree sum.
//   c2c_scatter      cache[m, head, d] = round_C(cache + g * sigmoid(ys[m, head]) * proj[m, head * Dt + d]).
//
// Caches: c2c/view.cuh (the same views as the fused kernel). Elementwise
// kernels take any block and grid (grid-stride loops).
#include "../gemm/tile.cuh"
#include "view.cuh"

namespace tessera {
namespace c2c_unfused {

constexpr uint32_t kBias = 0, kResidual = 1, kAct = 2;
constexpr int kNormThreads = 256;

using c2c::narrow;
using c2c::View;
using c2c::widen;

__device__ __forceinline__ uint64_t first() {
  return static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ uint64_t step() { return static_cast<uint64_t>(gridDim.x) * blockDim.x; }

}  // namespace c2c_unfused
}  // namespace tessera

using namespace tessera;

#define TESSERA_C2C_UNFUSED(sfx, ekind_)                                                                       \
  TESSERA_GLOBAL void c2c_gather_##sfx(                                                                        \
      int32_t m, int32_t kin, int32_t ks, const uint16_t* src, const int32_t* src_slots, int32_t src_per_block, \
      uint64_t src_block_stride, uint64_t src_pos_stride, uint64_t src_head_stride, int32_t src_dim,          \
      uint32_t src_kind, const uint16_t* cache, const int32_t* cache_slots, int32_t cache_per_block,          \
      uint64_t cache_block_stride, uint64_t cache_pos_stride, uint64_t cache_head_stride, int32_t cache_dim,  \
      uint32_t cache_kind, uint16_t* x) {                                                                      \
    const c2c_unfused::View sv{src_slots, src_per_block, src_block_stride, src_pos_stride, src_head_stride,    \
                               src_dim, src_kind};                                                             \
    const c2c_unfused::View cv{cache_slots,       cache_per_block, cache_block_stride, cache_pos_stride,       \
                               cache_head_stride, cache_dim,       cache_kind};                                \
    const uint64_t K = static_cast<uint64_t>(kin), KS = static_cast<uint64_t>(ks);                             \
    const uint64_t total = static_cast<uint64_t>(m) * K;                                                       \
    for (uint64_t i = c2c_unfused::first(); i < total; i += c2c_unfused::step()) {                             \
      const uint64_t row = i / K, k = i % K;                                                                   \
      uint16_t h;                                                                                              \
      uint32_t kind;                                                                                           \
      if (k < KS) {                                                                                            \
        h = src[sv.at(row, k / sv.dim, k % sv.dim)];                                                           \
        kind = sv.kind;                                                                                        \
      } else {                                                                                                 \
        const uint64_t q = k - KS;                                                                             \
        h = cache[cv.at(row, q / cv.dim, q % cv.dim)];                                                         \
        kind = cv.kind;                                                                                        \
      }                                                                                                        \
      x[i] = kind == ekind_ ? h : c2c_unfused::narrow(c2c_unfused::widen(h, kind), ekind_);                   \
    }                                                                                                          \
  }                                                                                                            \
  TESSERA_EXPORT(c2c_gather_##sfx)                                                                             \
                                                                                                               \
  TESSERA_GLOBAL void c2c_pointwise_##sfx(uint32_t mode, uint64_t total, uint64_t n, const float* y,           \
                                          const float* bias, float* h32, uint16_t* o, uint32_t act) {          \
    for (uint64_t i = c2c_unfused::first(); i < total; i += c2c_unfused::step()) {                             \
      if (mode == c2c_unfused::kAct) {                                                                         \
        o[i] = c2c_unfused::narrow(gemm::activate(act, y[i]), ekind_);                                         \
      } else if (mode == c2c_unfused::kBias || mode == c2c_unfused::kResidual) {                                \
        const float h = y[i] + (mode == c2c_unfused::kBias ? bias[i % n] : h32[i]);                            \
        h32[i] = h;                                                                                            \
        o[i] = c2c_unfused::narrow(h, ekind_);                                                                 \
      }                                                                                                        \
    }                                                                                                          \
  }                                                                                                            \
  TESSERA_EXPORT(c2c_pointwise_##sfx)                                                                          \
                                                                                                               \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(c2c_unfused::kNormThreads)                                        \
      c2c_rmsnorm_##sfx(int32_t m, int32_t hidden, const float* h32, const float* norm, uint64_t norm_offset,  \
                        float eps, uint16_t* o) {                                                              \
    __shared__ float s_sum[c2c_unfused::kNormThreads];                                                         \
    const uint64_t H = static_cast<uint64_t>(hidden);                                                          \
    const float* w = norm + norm_offset;                                                                       \
    for (int32_t row = static_cast<int32_t>(blockIdx.x); row < m; row += static_cast<int32_t>(gridDim.x)) {    \
      const float* h = h32 + static_cast<uint64_t>(row) * H;                                                   \
      float ss = 0.0f;                                                                                         \
      for (uint64_t k = threadIdx.x; k < H; k += c2c_unfused::kNormThreads) ss += h[k] * h[k];                 \
      s_sum[threadIdx.x] = ss;                                                                                 \
      __syncthreads();                                                                                         \
      for (int span = c2c_unfused::kNormThreads / 2; span > 0; span >>= 1) {                                   \
        if (static_cast<int>(threadIdx.x) < span) s_sum[threadIdx.x] += s_sum[threadIdx.x + span];             \
        __syncthreads();                                                                                       \
      }                                                                                                        \
      const float rstd = 1.0f / sqrtf(s_sum[0] / static_cast<float>(hidden) + eps);                           \
      __syncthreads(); /* s_sum[0] read by every thread before the next row overwrites it */                   \
      uint16_t* out = o + static_cast<uint64_t>(row) * H;                                                      \
      for (uint64_t k = threadIdx.x; k < H; k += c2c_unfused::kNormThreads)                                    \
        out[k] = c2c_unfused::narrow(h[k] * rstd * w[k], ekind_);                                              \
    }                                                                                                          \
  }                                                                                                            \
  TESSERA_EXPORT_BLOCK(c2c_rmsnorm_##sfx, c2c_unfused::kNormThreads)

TESSERA_C2C_UNFUSED(bf16, c2c::kKindBf16)
TESSERA_C2C_UNFUSED(f16, c2c::kKindF16)

// cache[m, head, d] = round_C(cache[m, head, d] + g * sigmoid(ys[m, head]) * proj[m, head * Dt + d]) in
// place (any block, grid-stride over M * Ht * Dt).
TESSERA_GLOBAL void c2c_scatter(int32_t m, int32_t ht, int32_t dt, const float* ys, const float* proj, float gate,
                                uint16_t* cache, const int32_t* slots, int32_t per_block, uint64_t block_stride,
                                uint64_t pos_stride, uint64_t head_stride, uint32_t kind) {
  const c2c_unfused::View cv{slots, per_block, block_stride, pos_stride, head_stride, dt, kind};
  const uint64_t HT = static_cast<uint64_t>(ht), DT = static_cast<uint64_t>(dt);
  const uint64_t total = static_cast<uint64_t>(m) * HT * DT;
  for (uint64_t i = c2c_unfused::first(); i < total; i += c2c_unfused::step()) {
    const uint64_t row = i / (HT * DT), col = i % (HT * DT), head = col / DT, d = col % DT;
    const size_t at = cv.at(row, head, d);
    const float gs = gate / (1.0f + expf(-ys[row * HT + head]));
    cache[at] = c2c_unfused::narrow(c2c_unfused::widen(cache[at], kind) + gs * proj[i], kind);
  }
}
TESSERA_EXPORT(c2c_scatter)
