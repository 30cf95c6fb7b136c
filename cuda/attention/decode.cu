// attention/decode.cu: flash-decoding (split-KV) for few queries over long KV, and the LSE merge.
//
// attn_decode_split_<dt>(...) -> partial O [S, total_q, H, D] and LSE [S, H, total_q] (f32)
//   One block per (query token, head chunk of one kv head, split): grid (total_q, kv_heads *
//   head_chunks, S). Split s of S covers keys [s*len/S, (s+1)*len/S) of the query's sequence
//   (len = its KV length). The block handles up to kMaxHeads query heads that share one kv head
//   (GQA), so each K/V row it reads serves all of them. Warps stride over the keys of the range;
//   in a warp the lanes cover D (D / warp width contiguous elements each), a key's dot product is
//   a warp sum, and each warp keeps an online softmax (max, sum, O accumulator) per head in f32.
//   The warps' states are combined through shared memory at the end. A range where no key is
//   visible gives O = 0 and LSE = -inf.
//   NaN and Inf (docs/architecture.md, "NaN and Inf in attention"; the reference's rules): a key
//   whose score is NaN or +inf poisons its head (the row is NaN); a score of -inf is skipped like
//   a masked key; a NaN in a visible V row makes every head of the block NaN (they share the kv
//   head); a +-Inf V entry is summed as 0 and flagged per (head, element), and the flag turns the
//   O entry into that infinity at the end, whatever the key's weight (so neither an underflowed
//   weight nor a rescaling by 0 makes 0 * Inf).
//   Visibility (exactly the reference's, src/reference/attention.rs): the key slot is valid
//   (kv_valid null = all valid) and, for mode 1 (causal) kv_pos <= q_pos, for mode 2
//   (duo-causal) also kv_depth <= q_depth; mode 0 (full) sees every valid key. A null position
//   array means implicit positions: token t of a sequence has position t + offset.
//
//   cu_seqlens are validated on the device by attn_decode_check (one block, before the split
//   kernel; attention/seqlens.cuh) into 8 status words; the split kernel reads them first and
//   writes nothing when cu_seqlens are invalid (the op reports the status), so it never indexes
//   with them out of bounds.
//
// attn_merge(...) -> O [total_q, H, D], LSE [H, total_q]: one thread per output element.
//   A NaN or +inf lse_s makes the element and the LSE NaN. m = max_s lse_s; m == -inf gives
//   O = 0, LSE = -inf; else w_s = exp(lse_s - m) (splits with lse_s == -inf are skipped, so their
//   O is never read), O = sum w_s O_s / sum w_s and LSE = m + log(sum w_s), where a non-finite
//   O_s (+-Inf, NaN) is summed apart and is the result whatever w_s (a split with a finite LSE
//   has a positive weight). No NaN arises from -inf.
//
// Bytes: decode reads each visible sequence's K and V once per (query token, head chunk) —
// for one query per sequence and one chunk per kv head that is exactly K and V once — and writes
// S * total_q * H * (D + 1) floats. The merge reads the partials once and writes O and LSE.
#include "../common/tessera.cuh"
#include "seqlens.cuh"

namespace tessera {
namespace decode {

constexpr int kBlock = 128;                 // threads per decode block: 4 warps (wave32), 2 (wave64)
constexpr int kMaxWarps = kBlock / 32;
constexpr int kMaxHeads = 8;                // query heads per block (one kv head's group, chunked)
constexpr int kMaxDim = 128;
constexpr int kMergeBlock = 256;

__device__ __forceinline__ float neg_inf() { return __int_as_float(static_cast<int>(0xff800000u)); }
__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float qnan() { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ bool is_finite(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }

// The decode block's shared state: each warp's online-softmax (max, sum, O) per head. One
// function owns it so that the D = 64 and D = 128 paths of a kernel share one allocation.
struct Reduce {
  float m[kMaxWarps][kMaxHeads];
  float l[kMaxWarps][kMaxHeads];
  float acc[kMaxWarps][kMaxHeads][kMaxDim];
};
__device__ __forceinline__ Reduce& reduce_smem() {
  __shared__ Reduce r;
  return r;
}

// Load E consecutive 16-bit elements (E * 2 bytes, aligned to that size) and widen them.
template <typename E, int N>
__device__ __forceinline__ void load_row(const uint16_t* __restrict__ p, float (&out)[N]) {
  if (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const uint2 w = *reinterpret_cast<const uint2*>(p + i);
      out[i + 0] = E::to_f32(static_cast<uint16_t>(w.x & 0xffffu));
      out[i + 1] = E::to_f32(static_cast<uint16_t>(w.x >> 16));
      out[i + 2] = E::to_f32(static_cast<uint16_t>(w.y & 0xffffu));
      out[i + 3] = E::to_f32(static_cast<uint16_t>(w.y >> 16));
    }
  } else if (N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      const uint32_t w = *reinterpret_cast<const uint32_t*>(p + i);
      out[i + 0] = E::to_f32(static_cast<uint16_t>(w & 0xffffu));
      out[i + 1] = E::to_f32(static_cast<uint16_t>(w >> 16));
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = E::to_f32(p[i]);
  }
}

// Index b of the sequence that owns query token i: the last b with cu[b] <= i (cu has batch + 1
// non-decreasing entries starting at 0, i < cu[batch]).
__device__ __forceinline__ int find_sequence(const int* __restrict__ cu, int batch, int i) {
  int lo = 0, hi = batch;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (cu[mid] <= i) lo = mid; else hi = mid;
  }
  return lo;
}

struct Problem {
  const int* cu_q;
  const int* cu_kv;
  const int* q_pos;   // null: implicit, t + q_off
  const int* kv_pos;  // null: implicit, t + kv_off
  const int* q_depth;
  const int* kv_depth;
  const uint8_t* kv_valid;  // null: all valid
  int q_off, kv_off;
  int mode;  // 0 full, 1 causal, 2 duo-causal
  const int* status;  // attn_decode_check's 8 words: nonzero codes mean invalid cu_seqlens
};

template <typename E, int D>
__device__ __forceinline__ void split_kernel(const uint16_t* __restrict__ q,
                                             const uint16_t* __restrict__ k,
                                             const uint16_t* __restrict__ v, const Problem p,
                                             int batch, int total_q, int heads, int kv_heads,
                                             int splits, float scale, float* __restrict__ o_part,
                                             float* __restrict__ lse_part) {
  constexpr int kE = D / kWarpSize;  // elements of a row per lane
  Reduce& red = reduce_smem();
  const float kNegInf = neg_inf();

  const int i = static_cast<int>(blockIdx.x);
  const int group = heads / kv_heads;
  const int chunks = (group + kMaxHeads - 1) / kMaxHeads;
  const int kh = static_cast<int>(blockIdx.y) / chunks;
  const int h0 = kh * group + (static_cast<int>(blockIdx.y) % chunks) * kMaxHeads;
  const int hn = min(kMaxHeads, kh * group + group - h0);
  const int s = static_cast<int>(blockIdx.z);
  const int lane = lane_id();
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int nwarps = static_cast<int>(blockDim.x) / kWarpSize;

  if (p.status[0] != 0 || p.status[tessera::seqlens::kStatusWords] != 0) return;  // invalid cu_seqlens
  const int b = find_sequence(p.cu_q, batch, i);
  const int k0 = p.cu_kv[b];
  const int64_t len = static_cast<int64_t>(p.cu_kv[b + 1]) - k0;
  const int j0 = k0 + static_cast<int>(s * len / splits);
  const int j1 = k0 + static_cast<int>((s + 1) * len / splits);
  const int qp = p.q_pos ? p.q_pos[i] : i - p.cu_q[b] + p.q_off;
  const int qd = p.mode == 2 ? p.q_depth[i] : 0;

  float qv[kMaxHeads][kE];
  float acc[kMaxHeads][kE];
  float m[kMaxHeads], l[kMaxHeads];
  static_assert(kMaxHeads * kE <= 64, "one bit per (head, element) in a uint64");
  uint64_t pinf = 0, ninf = 0;  // bit h * kE + e: a +-Inf V entry at element e, seen by head h
  uint32_t poison = 0;          // bit h: head h saw a NaN or +inf score
  bool vnan = false;            // a V row this query sees holds a NaN (in this lane's elements)
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) {
    m[h] = kNegInf;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < kE; ++e) {
      acc[h][e] = 0.0f;
      qv[h][e] = 0.0f;
    }
    if (h < hn) {
      load_row<E>(q + (static_cast<int64_t>(i) * heads + h0 + h) * D + lane * kE, qv[h]);
#pragma unroll
      for (int e = 0; e < kE; ++e) qv[h][e] *= scale;
    }
  }

  for (int j = j0 + warp; j < j1; j += nwarps) {
    // Visibility is uniform over the warp (one key per warp), so the shuffles below see every lane.
    bool vis = p.kv_valid == nullptr || p.kv_valid[j] != 0;
    if (vis && p.mode != 0) {
      const int kp = p.kv_pos ? p.kv_pos[j] : j - k0 + p.kv_off;
      vis = kp <= qp;
      if (p.mode == 2) vis = vis && p.kv_depth[j] <= qd;
    }
    if (!vis) continue;
    const int64_t row = (static_cast<int64_t>(j) * kv_heads + kh) * D + lane * kE;
    float kr[kE], vr[kE];
    load_row<E>(k + row, kr);
    load_row<E>(v + row, vr);
    bool vbad = false;
#pragma unroll
    for (int e = 0; e < kE; ++e) vbad = vbad || !is_finite(vr[e]);
    uint32_t vp = 0, vn = 0;  // bit e: vr[e] is +Inf / -Inf (then summed as 0)
    if (vbad) {
#pragma unroll
      for (int e = 0; e < kE; ++e) {
        if (is_finite(vr[e])) continue;
        if (vr[e] != vr[e])
          vnan = true;
        else if (vr[e] > 0.0f)
          vp |= 1u << e;
        else
          vn |= 1u << e;
        vr[e] = 0.0f;
      }
    }
#pragma unroll
    for (int h = 0; h < kMaxHeads; ++h) {
      if (h < hn) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < kE; ++e) dot = fmaf(qv[h][e], kr[e], dot);
        const float sc = warp_sum(dot);
        if (!is_finite(sc)) {  // warp-uniform
          if (sc != kNegInf) poison |= 1u << h;  // NaN or +inf: the row is NaN
          continue;                              // -inf: weight 0, as if masked
        }
        if (vbad) {
          pinf |= static_cast<uint64_t>(vp) << (h * kE);
          ninf |= static_cast<uint64_t>(vn) << (h * kE);
        }
        if (sc > m[h]) {
          const float corr = expf(m[h] - sc);  // 0 when m was -inf
          l[h] = l[h] * corr + 1.0f;
#pragma unroll
          for (int e = 0; e < kE; ++e) acc[h][e] = fmaf(acc[h][e], corr, vr[e]);
          m[h] = sc;
        } else {
          const float w = expf(sc - m[h]);
          l[h] += w;
#pragma unroll
          for (int e = 0; e < kE; ++e) acc[h][e] = fmaf(w, vr[e], acc[h][e]);
        }
      }
    }
  }

  // Each warp's state; a poisoned head's max is NaN, a flagged accumulator entry is its
  // infinity (or NaN for both signs).
#pragma unroll
  for (int h = 0; h < kMaxHeads; ++h) {
    if (h < hn) {
      if (lane == 0) {
        red.m[warp][h] = (poison >> h) & 1u ? qnan() : m[h];
        red.l[warp][h] = l[h];
      }
#pragma unroll
      for (int e = 0; e < kE; ++e) {
        const int k = h * kE + e;
        const bool pi = ((pinf >> k) & 1u) != 0, ni = ((ninf >> k) & 1u) != 0;
        red.acc[warp][h][lane * kE + e] = pi ? (ni ? qnan() : pos_inf()) : (ni ? kNegInf : acc[h][e]);
      }
    }
  }
  const bool nan_v = __syncthreads_or(vnan) != 0;  // some visible V row holds a NaN

  for (int idx = static_cast<int>(threadIdx.x); idx < hn * D; idx += static_cast<int>(blockDim.x)) {
    const int h = idx / D, d = idx % D;
    float mx = kNegInf;
    bool nan = nan_v;
    for (int w = 0; w < nwarps; ++w) {
      nan = nan || red.m[w][h] != red.m[w][h];
      mx = fmaxf(mx, red.m[w][h]);
    }
    float out = 0.0f, lse = kNegInf;
    if (nan) {
      out = lse = qnan();
    } else if (mx != kNegInf) {
      float sum = 0.0f, a = 0.0f, sp = 0.0f;  // sp: the infinite entries, summed apart
      for (int w = 0; w < nwarps; ++w) {
        if (red.m[w][h] == kNegInf) continue;
        const float f = expf(red.m[w][h] - mx);
        sum = fmaf(red.l[w][h], f, sum);
        const float x = red.acc[w][h][d];
        if (is_finite(x))
          a = fmaf(x, f, a);
        else
          sp += x;
      }
      out = is_finite(sp) ? a / sum : sp;
      lse = mx + logf(sum);
    }
    const int hg = h0 + h;
    o_part[((static_cast<int64_t>(s) * total_q + i) * heads + hg) * D + d] = out;
    if (d == 0) lse_part[(static_cast<int64_t>(s) * heads + hg) * total_q + i] = lse;
  }
}

__device__ __forceinline__ void merge_kernel(const float* __restrict__ o_part,
                                             const float* __restrict__ lse_part, int splits,
                                             int total_q, int heads, int dim,
                                             float* __restrict__ o, float* __restrict__ lse) {
  const int64_t n = static_cast<int64_t>(total_q) * heads * dim;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const int d = static_cast<int>(idx % dim);
  const int64_t row = idx / dim;  // i * heads + h
  const int h = static_cast<int>(row % heads);
  const int i = static_cast<int>(row / heads);
  const float kNegInf = neg_inf();
  const int64_t rows = static_cast<int64_t>(heads) * total_q;
  const int64_t lrow = static_cast<int64_t>(h) * total_q + i;
  float mx = kNegInf;
  bool nan = false;  // a NaN or +inf LSE
  for (int s = 0; s < splits; ++s) {
    const float ls = lse_part[s * rows + lrow];
    nan = nan || !(ls < pos_inf());
    mx = fmaxf(mx, ls);
  }
  float out = 0.0f, l = kNegInf;
  if (nan) {
    out = l = qnan();
  } else if (mx != kNegInf) {
    float sum = 0.0f, a = 0.0f, sp = 0.0f;  // sp: the non-finite O entries, summed apart
    for (int s = 0; s < splits; ++s) {
      const float ls = lse_part[s * rows + lrow];
      if (ls == kNegInf) continue;
      const float w = expf(ls - mx);
      sum += w;
      const float x = o_part[s * n + idx];
      if (is_finite(x))
        a = fmaf(w, x, a);
      else
        sp += x;
    }
    out = is_finite(sp) ? a / sum : sp;
    l = mx + logf(sum);
  }
  o[idx] = out;
  if (d == 0) lse[lrow] = l;
}

}  // namespace decode
}  // namespace tessera

using tessera::BF16;
using tessera::F16;
using tessera::decode::kBlock;
using tessera::decode::kMergeBlock;

#define TESSERA_DECODE_INSTANCE(E, sfx)                                                             \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock) attn_decode_split_##sfx(                        \
      const uint16_t* q, const uint16_t* k, const uint16_t* v, const int* cu_q, const int* cu_kv, \
      const int* q_pos, const int* kv_pos, const int* q_depth, const int* kv_depth,                 \
      const uint8_t* kv_valid, int q_off, int kv_off, int mode, int batch, int total_q, int heads,  \
      int kv_heads, int head_dim, int splits, float scale, const int* status, float* o_part,        \
      float* lse_part) {                                                                            \
    const tessera::decode::Problem p{cu_q,     cu_kv,    q_pos, kv_pos, q_depth, kv_depth,          \
                                     kv_valid, q_off,    kv_off, mode,  status};                    \
    if (head_dim == 64) {                                                                           \
      tessera::decode::split_kernel<E, 64>(q, k, v, p, batch, total_q, heads, kv_heads, splits,    \
                                           scale, o_part, lse_part);                                \
    } else {                                                                                        \
      tessera::decode::split_kernel<E, 128>(q, k, v, p, batch, total_q, heads, kv_heads, splits,   \
                                            scale, o_part, lse_part);                               \
    }                                                                                               \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(attn_decode_split_##sfx, kBlock)

TESSERA_DECODE_INSTANCE(BF16, bf16)
TESSERA_DECODE_INSTANCE(F16, f16)

// One block of kBlock threads: thread 0 checks cu_q, thread 1 cu_kv, into status[0..4] / [4..8].
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    attn_decode_check(const int* cu_q, const int* cu_kv, int batch, int total_q, int total_kv, int max_q,
                      int max_kv, int* status) {
  if (threadIdx.x == 0) tessera::seqlens::check(cu_q, batch, total_q, max_q, status);
  if (threadIdx.x == 1) tessera::seqlens::check(cu_kv, batch, total_kv, max_kv, status + tessera::seqlens::kStatusWords);
}
TESSERA_EXPORT(attn_decode_check)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kMergeBlock)
    attn_merge(const float* o_part, const float* lse_part, int splits, int total_q, int heads,
               int head_dim, float* o, float* lse) {
  tessera::decode::merge_kernel(o_part, lse_part, splits, total_q, heads, head_dim, o, lse);
}
TESSERA_EXPORT_BLOCK(attn_merge, kMergeBlock)
