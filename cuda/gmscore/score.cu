// gmscore/score.cu: the conditional score of a Gaussian mixture over a codebook (DD2), fused and
// streamed: the [P, V] weights are never materialised (semantics, the derivation and the f64
// reference: src/reference/gmscore.rs and docs/dd2.md; the op: src/ops/gmscore.rs).
//
// Per position r (x = x_t[r], a = alpha[r], s = sigma[r], codebook E [V, d], p = p[r, :]):
//   delta_v = a e_v - x                          (one fmaf per coordinate: a single rounding)
//   logit_v = ln p_v - |delta_v|^2 / (2 s^2)     (p_v = 0: -inf, excluded)
//   lse     = logsumexp_v logit_v,   w_v = exp(logit_v - lse)
//   score   = (sum_v w_v delta_v) / s^2           (= (sum_v w_v a e_v - x) / s^2, without the
//                                                   cancellation of the two O(1) terms)
// Backward of L = sum_r |s_gen - score|^2, with u = s_gen - score (score and lse: forward's):
//   grad_s_gen = 2 u
//   grad_x_t   = 2 u / s^2 - 2 (B - A (A.u)) / s^4,  B = sum_v w_v delta_v (delta_v.u),
//                                                     A = s^2 score = sum_v w_v delta_v
// (a^2 Cov_w(e) u = B - A (A.u): the covariance taken about x / a, where the deltas are exact).
//
// Kernels (blockDim.x == kThreads = 128; a quad of kSplit = 4 consecutive threads per position,
// kRows = 32 positions per block; the quad's partial states are merged with shfl_xor 1 and 2,
// which stay inside a quad whatever the warp width, so wave32 and wave64 give the same result):
//   gmscore_check          grid-stride over rows, one block per row: validates alpha[r] (finite),
//                          sigma[r] (in [1e-6, 1e6]), p[r, :] (finite, >= 0) and the row sum
//                          (|sum - 1| <= 1e-3, f32 tree sum) into status[1] (first bad row,
//                          atomicMin).
//   gmscore_explain        one thread: for the first bad row, the code, entry and value
//                          (status [code, row, entry, value bits]); nothing when all are valid.
//   gmscore_forward_d<D>   D in {16, 32, 64}: d <= D, padded with zeros (a zero coordinate adds
//                          nothing). Streams the codebook in tiles of kTileV = 32 codewords
//                          (staged in shared memory, zero-padded, [32][D + 1]) and the tile of
//                          ln p ([32 rows][33]); thread q of a quad takes codewords q, q + 4, ..
//                          of each tile: 8 logits, one rescale of its running (max, sum, sum of
//                          w delta) per tile (online log-sum-exp), then the weighted deltas.
//   gmscore_backward_d<D>  the same stream with w = exp(logit - lse) (no running max), summing
//                          w, and w (delta.u) delta.
// Every sum is in f32, in a fixed order (deterministic, no atomics). A call whose status is set
// writes nothing (every main-kernel block returns first).
#include "../common/tessera.cuh"

namespace tessera {
namespace gmscore {

constexpr int kThreads = 128;
constexpr int kSplit = 4;                     // threads per position
constexpr int kRows = kThreads / kSplit;      // positions per block
constexpr int kTileV = 32;                    // codewords per shared-memory tile
constexpr int kPerThread = kTileV / kSplit;   // codewords per thread per tile
constexpr int kLpLd = kTileV + 1;
constexpr float kSigmaMin = 1e-6f;
constexpr float kSigmaMax = 1e6f;
constexpr float kSumTol = 1e-3f;
constexpr int32_t kNoRow = 0x7fffffff;

// Status words: [code, first bad row, entry (p's column; -1 otherwise), value bits].
enum Code : int32_t { kOk = 0, kAlpha = 1, kSigma = 2, kPNan = 3, kPInf = 4, kPNeg = 5, kRowSum = 6 };

__device__ __forceinline__ float ninf() { return -INFINITY; }
__device__ __forceinline__ bool is_nan(float v) { return v != v; }
__device__ __forceinline__ bool is_finite(float v) { return fabsf(v) <= 3.402823466e38f; }
__device__ __forceinline__ bool sigma_ok(float s) { return s >= kSigmaMin && s <= kSigmaMax; }
__device__ __forceinline__ bool p_ok(float v) { return v >= 0.0f && v <= 3.402823466e38f; }

template <int D, bool Bwd = false>
struct Smem {
  static constexpr int kLd = D + 1;
  float e[kTileV * kLd];     // codewords v0 .. v0 + 31, coordinates past d (and rows past V) 0
  float lp[kRows * kLpLd];   // ln p[r0 + i, v0 + c]; -inf past P or V
  float u[Bwd ? kRows * kLd : 1];  // backward: s_gen - score of the block's rows
};

// Stage codewords v0.. and ln p of rows r0.. for them (the caller synchronises around it).
template <int D, bool Bwd>
__device__ __forceinline__ void stage(Smem<D, Bwd>& sm, const float* codebook, const float* p, uint32_t n_pos,
                                      uint32_t n_code, uint32_t d, uint32_t v0, uint32_t r0) {
  for (int i = threadIdx.x; i < kTileV * D; i += kThreads) {
    const uint32_t c = static_cast<uint32_t>(i) / D, j = static_cast<uint32_t>(i) % D;
    const uint32_t v = v0 + c;
    sm.e[c * Smem<D, Bwd>::kLd + j] = (v < n_code && j < d) ? codebook[static_cast<size_t>(v) * d + j] : 0.0f;
  }
  for (int i = threadIdx.x; i < kRows * kTileV; i += kThreads) {
    const uint32_t r = static_cast<uint32_t>(i) / kTileV, c = static_cast<uint32_t>(i) % kTileV;
    const uint32_t row = r0 + r, v = v0 + c;
    sm.lp[r * kLpLd + c] = (row < n_pos && v < n_code) ? logf(p[static_cast<size_t>(row) * n_code + v]) : ninf();
  }
}

// The position's row data in registers: x padded with zeros to D.
template <int D>
__device__ __forceinline__ void load_row(const float* src, uint32_t row, uint32_t n_pos, uint32_t d, float (&x)[D]) {
#pragma unroll
  for (int j = 0; j < D; ++j)
    x[j] = (row < n_pos && static_cast<uint32_t>(j) < d) ? src[static_cast<size_t>(row) * d + j] : 0.0f;
}

template <int D>
__device__ __forceinline__ void forward(const float* codebook, const float* p, const float* x_t,
                                        const float* alpha, const float* sigma, uint32_t n_pos, uint32_t n_code,
                                        uint32_t d, const int32_t* status, float* score, float* lse) {
  __shared__ Smem<D> sm;
  if (status[1] != kNoRow) return;  // invalid inputs: the op reports them, nothing is written
  const uint32_t r0 = blockIdx.x * kRows;
  const int lr = threadIdx.x / kSplit, q = threadIdx.x % kSplit;
  const uint32_t row = r0 + lr;
  const bool live = row < n_pos;
  float x[D];
  load_row<D>(x_t, row, n_pos, d, x);
  const float a = live ? alpha[row] : 0.0f;
  const float s = live ? sigma[row] : 1.0f;
  const float inv2s2 = 0.5f / (s * s);
  float m = ninf(), l = 0.0f, acc[D];
#pragma unroll
  for (int j = 0; j < D; ++j) acc[j] = 0.0f;
  for (uint32_t v0 = 0; v0 < n_code; v0 += kTileV) {
    __syncthreads();  // the previous tile's reads are done
    stage(sm, codebook, p, n_pos, n_code, d, v0, r0);
    __syncthreads();
    // One codeword at a time: its distance, then the online update (a rescale only when the
    // running max grows), then its weighted delta (the codeword stays in registers).
#pragma unroll 1
    for (int i = 0; i < kPerThread; ++i) {
      const float* ep = sm.e + (q + kSplit * i) * Smem<D>::kLd;
      float e[D];
      float dist = 0.0f;
#pragma unroll
      for (int j = 0; j < D; ++j) {
        e[j] = ep[j];
        const float dl = fmaf(a, e[j], -x[j]);
        dist = fmaf(dl, dl, dist);
      }
      const float lg = sm.lp[lr * kLpLd + q + kSplit * i] - dist * inv2s2;
      if (lg == ninf()) continue;  // p = 0, or past V or P
      if (lg > m) {  // m - lg is finite or -inf, never NaN
        const float sc = expf(m - lg);
        l *= sc;
#pragma unroll
        for (int j = 0; j < D; ++j) acc[j] *= sc;
        m = lg;
      }
      const float w = expf(lg - m);
      l += w;
#pragma unroll
      for (int j = 0; j < D; ++j) acc[j] = fmaf(w, fmaf(a, e[j], -x[j]), acc[j]);
    }
  }
  // Merge the quad's states: (m, l, acc) of partners q ^ 1, then q ^ 2.
#pragma unroll
  for (int o = 1; o < kSplit; o <<= 1) {
    const float mo = shfl_xor(m, o), lo = shfl_xor(l, o);
    const float mn = fmaxf(m, mo);
    const float sa = m == ninf() ? 0.0f : expf(m - mn);
    const float sb = mo == ninf() ? 0.0f : expf(mo - mn);
    l = l * sa + lo * sb;
#pragma unroll
    for (int j = 0; j < D; ++j) {
      const float ao = shfl_xor(acc[j], o);
      acc[j] = acc[j] * sa + ao * sb;
    }
    m = mn;
  }
  if (!live || q != 0) return;
  // score = (sum w delta / sum w) / s^2; lse = m + ln(sum w) (a row with no finite logit: lse
  // -inf, score NaN; only for inputs whose every distance overflows).
  const float scale = 1.0f / (l * (s * s));
#pragma unroll
  for (int j = 0; j < D; ++j)
    if (static_cast<uint32_t>(j) < d) score[static_cast<size_t>(row) * d + j] = acc[j] * scale;
  lse[row] = m + logf(l);
}

template <int D>
__device__ __forceinline__ void backward(const float* codebook, const float* p, const float* x_t,
                                         const float* alpha, const float* sigma, const float* s_gen,
                                         const float* score, const float* lse, uint32_t n_pos, uint32_t n_code,
                                         uint32_t d, const int32_t* status, float* grad_s_gen, float* grad_x_t) {
  __shared__ Smem<D, true> sm;
  if (status[1] != kNoRow) return;
  const uint32_t r0 = blockIdx.x * kRows;
  const int lr = threadIdx.x / kSplit, q = threadIdx.x % kSplit;
  const uint32_t row = r0 + lr;
  const bool live = row < n_pos;
  float x[D], b[D];
  load_row<D>(x_t, row, n_pos, d, x);
  // u = s_gen - score of this block's rows, in shared memory (zero-padded; the tile loop's first
  // barrier publishes it). It is read through a volatile pointer in the loop, so that the
  // compiler does not hoist the row into registers (x, b and the codeword already hold 3 D).
  for (int i = threadIdx.x; i < kRows * D; i += kThreads) {
    const uint32_t r = static_cast<uint32_t>(i) / D, j = static_cast<uint32_t>(i) % D;
    const size_t k = static_cast<size_t>(r0 + r) * d + j;
    sm.u[r * Smem<D, true>::kLd + j] = (r0 + r < n_pos && j < d) ? s_gen[k] - score[k] : 0.0f;
  }
#pragma unroll
  for (int j = 0; j < D; ++j) b[j] = 0.0f;
  const float a = live ? alpha[row] : 0.0f;
  const float s = live ? sigma[row] : 1.0f;
  const float inv2s2 = 0.5f / (s * s);
  const float lrow = live ? lse[row] : ninf();
  float sw = 0.0f;
  for (uint32_t v0 = 0; v0 < n_code; v0 += kTileV) {
    __syncthreads();
    stage(sm, codebook, p, n_pos, n_code, d, v0, r0);
    __syncthreads();
    if (lrow == ninf()) continue;  // rows past P (uniform per thread)
#pragma unroll 1
    for (int i = 0; i < kPerThread; ++i) {
      const float* ep = sm.e + (q + kSplit * i) * Smem<D, true>::kLd;
      const volatile float* up = sm.u + lr * Smem<D, true>::kLd;
      float e[D];
      float dist = 0.0f, du = 0.0f;
#pragma unroll
      for (int j = 0; j < D; ++j) {
        e[j] = ep[j];
        const float dl = fmaf(a, e[j], -x[j]);
        dist = fmaf(dl, dl, dist);
        du = fmaf(dl, up[j], du);
      }
      const float w = expf((sm.lp[lr * kLpLd + q + kSplit * i] - dist * inv2s2) - lrow);
      if (w == 0.0f) continue;
      sw += w;
      const float wd = w * du;
#pragma unroll
      for (int j = 0; j < D; ++j) b[j] = fmaf(wd, fmaf(a, e[j], -x[j]), b[j]);
    }
  }
#pragma unroll
  for (int o = 1; o < kSplit; o <<= 1) {
    sw += shfl_xor(sw, o);
#pragma unroll
    for (int j = 0; j < D; ++j) b[j] += shfl_xor(b[j], o);
  }
  if (!live || q != 0) return;
  // A = s^2 score (forward's); cov = a^2 Cov_w(e) u = B / sum w - A (A.u).
  const float* u = sm.u + lr * Smem<D, true>::kLd;
  const float s2 = s * s;
  float au = 0.0f;
  for (uint32_t j = 0; j < d; ++j) au = fmaf(score[static_cast<size_t>(row) * d + j] * s2, u[j], au);
  const float inv_sw = 1.0f / sw, inv_s2 = 1.0f / s2;
#pragma unroll
  for (int j = 0; j < D; ++j) {
    if (static_cast<uint32_t>(j) >= d) continue;
    const size_t k = static_cast<size_t>(row) * d + j;
    const float cov = b[j] * inv_sw - score[k] * s2 * au;
    grad_s_gen[k] = 2.0f * u[j];
    grad_x_t[k] = 2.0f * inv_s2 * (u[j] - cov * inv_s2);
  }
}

}  // namespace gmscore
}  // namespace tessera

using namespace tessera;

// Validation: one block per row (grid-stride). status [0, 0x7fffffff, 0, 0] before the launch.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gmscore::kThreads)
    gmscore_check(const float* p, const float* alpha, const float* sigma, uint32_t n_pos, uint32_t n_code,
                  int32_t* status) {
  __shared__ float sum[gmscore::kThreads];
  __shared__ int32_t bad[gmscore::kThreads];
  for (uint32_t row = blockIdx.x; row < n_pos; row += gridDim.x) {
    const float* pr = p + static_cast<size_t>(row) * n_code;
    float acc = 0.0f;
    int32_t b = 0;
    for (uint32_t v = threadIdx.x; v < n_code; v += blockDim.x) {
      const float pv = pr[v];
      b |= gmscore::p_ok(pv) ? 0 : 1;
      acc += pv;
    }
    __syncthreads();  // the previous row's reads of sum/bad are done
    sum[threadIdx.x] = acc;
    bad[threadIdx.x] = b;
    __syncthreads();
    for (int w = gmscore::kThreads / 2; w > 0; w >>= 1) {
      if (static_cast<int>(threadIdx.x) < w) {
        sum[threadIdx.x] += sum[threadIdx.x + w];
        bad[threadIdx.x] |= bad[threadIdx.x + w];
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      const bool row_bad = bad[0] != 0 || !(fabsf(sum[0] - 1.0f) <= gmscore::kSumTol) ||
                           !gmscore::is_finite(alpha[row]) || !gmscore::sigma_ok(sigma[row]);
      if (row_bad) atomicMin(&status[1], static_cast<int32_t>(row));
    }
  }
}
TESSERA_EXPORT_BLOCK(gmscore_check, gmscore::kThreads)

// The first bad row's fault, in the order the reference checks: alpha, sigma, p's entries by
// column (NaN, infinite, negative), the row sum (the same f32 tree sum as gmscore_check).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gmscore::kThreads)
    gmscore_explain(const float* p, const float* alpha, const float* sigma, uint32_t n_code, int32_t* status) {
  __shared__ float sum[gmscore::kThreads];
  const int32_t r = status[1];
  if (r == gmscore::kNoRow) return;
  const uint32_t row = static_cast<uint32_t>(r);
  const float* pr = p + static_cast<size_t>(row) * n_code;
  float acc = 0.0f;
  for (uint32_t v = threadIdx.x; v < n_code; v += blockDim.x) acc += pr[v];
  sum[threadIdx.x] = acc;
  __syncthreads();
  for (int w = gmscore::kThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) sum[threadIdx.x] += sum[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  int32_t code = gmscore::kOk, entry = -1;
  float val = 0.0f;
  if (!gmscore::is_finite(alpha[row])) {
    code = gmscore::kAlpha;
    val = alpha[row];
  } else if (!gmscore::sigma_ok(sigma[row])) {
    code = gmscore::kSigma;
    val = sigma[row];
  } else {
    for (uint32_t v = 0; v < n_code; ++v) {
      const float pv = pr[v];
      if (!gmscore::p_ok(pv)) {
        code = gmscore::is_nan(pv) ? gmscore::kPNan : (pv > 0.0f ? gmscore::kPInf : gmscore::kPNeg);
        entry = static_cast<int32_t>(v);
        val = pv;
        break;
      }
    }
    if (code == gmscore::kOk) {
      code = gmscore::kRowSum;
      val = sum[0];
    }
  }
  status[0] = code;
  status[2] = entry;
  status[3] = __float_as_int(val);
}
TESSERA_EXPORT_BLOCK(gmscore_explain, gmscore::kThreads)

// Arguments: codebook [V, d], p [P, V], x_t [P, d], alpha [P], sigma [P], P, V, d, the status
// words, and the outputs score [P, d], lse [P]. Grid: ceil(P / kRows) blocks.
#define TESSERA_GMSCORE(D)                                                                                 \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gmscore::kThreads) gmscore_forward_d##D(                      \
      const float* codebook, const float* p, const float* x_t, const float* alpha, const float* sigma,    \
      uint32_t n_pos, uint32_t n_code, uint32_t d, const int32_t* status, float* score, float* lse) {     \
    gmscore::forward<D>(codebook, p, x_t, alpha, sigma, n_pos, n_code, d, status, score, lse);            \
  }                                                                                                        \
  TESSERA_EXPORT_BLOCK(gmscore_forward_d##D, gmscore::kThreads)                                            \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gmscore::kThreads) gmscore_backward_d##D(                     \
      const float* codebook, const float* p, const float* x_t, const float* alpha, const float* sigma,    \
      const float* s_gen, const float* score, const float* lse, uint32_t n_pos, uint32_t n_code,          \
      uint32_t d, const int32_t* status, float* grad_s_gen, float* grad_x_t) {                            \
    gmscore::backward<D>(codebook, p, x_t, alpha, sigma, s_gen, score, lse, n_pos, n_code, d, status,     \
                         grad_s_gen, grad_x_t);                                                            \
  }                                                                                                        \
  TESSERA_EXPORT_BLOCK(gmscore_backward_d##D, gmscore::kThreads)

TESSERA_GMSCORE(16)
TESSERA_GMSCORE(32)
TESSERA_GMSCORE(64)
