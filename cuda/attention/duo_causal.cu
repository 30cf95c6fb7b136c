// attention/duo_causal.cu: fused prefill attention for TaH (duo-causal), causal, causal with
// offsets and full attention, over varlen packed sequences with GQA. Semantics:
// src/reference/attention.rs (a key is visible when valid and, per mode, kv_pos <= q_pos and
// kv_depth <= q_depth). Rows that see no key: O = 0, LSE = -inf.
//
// Kernels (all take blockDim.x == kThreads = 128: 4 warps of 32 or 2 wavefronts of 64). Nothing
// is built on the host: the grid comes from host-known numbers (batch, max_seqlen), and each
// sequence has q_tiles = ceil(max_seqlen_q / kBlockM) Q tile slots and kv_tiles =
// ceil(max_seqlen_kv / kBlockN) K/V tile slots, the slots past its end empty.
//   attn_tile_meta      one thread per tile slot (Q and K/V slots in one launch): min/max
//                       position and depth over the tile's rows, flags (any slot invalid or past
//                       the sequence end, all invalid). Computed from the inputs, so any layout
//                       is correct; a layout sorted by (depth slot, position) makes skipping bite.
//                       Two more threads validate cu_seqlens_q and cu_seqlens_kv into the status
//                       words (attention/seqlens.cuh); sequence rows are clamped, so invalid
//                       cu_seqlens are never indexed out of bounds.
//   attn_fwd_<dt>_d<D>  grid (batch * q_tiles, H): one block per (Q tile slot of kBlockM = 64
//                       rows of one sequence, query head); a block past its sequence's end, or
//                       of a call whose status is nonzero, exits without writing. Loops over its
//                       sequence's K/V tiles of kBlockN = 32 keys:
//                         skip      all invalid, or (causal/duo) kv min pos > q max pos, or (duo)
//                                   kv min depth > q max depth;
//                         full      no invalid slot and kv max pos <= q min pos (and depth): no
//                                   per-element mask;
//                         boundary  the mask evaluated per element.
//                       Online softmax in f32 in the log2 domain (running max m, sum l, O
//                       rescaled by exp2(m_old - m_new)); LSE = (m + log2 l) * ln 2. A row whose
//                       running max is still -inf uses 0 as the shift, so exp2(-inf - 0) = 0 and
//                       no -inf - -inf appears.
//
// NaN and Inf (docs/architecture.md, "NaN and Inf in attention"; the reference's rules): masked
// scores are replaced (select), never multiplied, so a masked K row cannot reach a row. V is
// checked as it is loaded: non-finite entries are stored as 0 in shared memory (so P V on a
// boundary tile never computes 0 * Inf), a key whose V row holds a NaN is recorded in a bit mask
// and gives a NaN score to every row that sees it, and +-Inf entries are recorded per (column,
// key) bit masks; a row then flags O[d] +-Inf when a key with a finite score (score > -inf) it
// sees has one, whatever the key's weight. A NaN or +inf score makes l NaN, and a NaN l writes
// the whole row (O and LSE) as NaN; a -inf score gives exp2 = 0, so that key contributes
// nothing. All of this costs only the load-time check when the tile's V is finite.
//
// Paths (runtime argument `tc`):
//   tensor cores (CUDA, wave32): each warp owns 16 query rows. S = Q K^T with mma.sync m16n8k16
//     (Q fragments loaded once with ldmatrix_a from shared; K [n][d] is a column-major B:
//     ldmatrix_b_col_major); P stays in registers: two adjacent 16x8 C tiles form one 16x16 A
//     fragment (rounded to the input type, RNE); O += P V with V [k][d] a row-major B
//     (ldmatrix_b_row_major, .trans). Each lane holds rows g and g + 8 (g = lane >> 2), so row
//     reductions are shfl_xor over 1 and 2.
//   scalar (every target): thread t owns query row t / 2; the two threads of a row split the
//     tile's keys for S and the head dim for O, exchanging P with shfl_xor(., 1). f32 throughout.
//   tensor cores (HIP, wave64): each wavefront owns 32 query rows; S^T = K Q^T and O^T = V^T P^T
//     with MFMA 32x32x8 (rows of S sit in lanes; P stays in registers; see fwd_tc below).
//
// Shared memory (static): Q 64 x (D + 8), K and V 32 x (D + 8) halves (rows padded by 8 halves so
// they are 16-byte aligned and not a multiple of 128 bytes), per-row positions/depths, the tile's
// non-finite V masks (2 D + 2 words), per-thread O infinity flags (16 bytes). D = 128: 37.9 KiB.
//
// The tile geometry, Side, classify and visible are in attention/mask.cuh (featcache/received.cu
// evaluates the same mask with them).
//
// Layouts: Q [total_q, H, D], K/V [total_kv, H_kv, D] (query head h reads kv head h / (H / H_kv)),
// O [total_q, H, D] f32, or the input type (o_half = 1: rounded to nearest even), LSE
// [H, total_q] f32. Meta: [batch * tiles, 5] = (min pos, max pos, min depth, max depth, flags),
// slot t of sequence b at b * tiles + t, with flags bit 0 = some slot invalid or missing, bit 1 =
// all invalid. Positions: pointer + flag; without an array, position = row - sequence start +
// offset.
#include "../common/tessera.cuh"
#include "mask.cuh"

namespace tessera {
namespace attn {

constexpr int kThreads = 128;
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kBlockN <= 32, "a K/V tile's keys are the bits of one uint32 (v_inf, v_bad, key masks)");

__device__ __forceinline__ float pos_inf() { return INFINITY; }
__device__ __forceinline__ float qnan() { return __int_as_float(0x7fc00000); }

// Exponent and mantissa fields of the 16-bit input types (an all-ones exponent: Inf or NaN).
template <typename E> struct HalfBits;
template <> struct HalfBits<BF16> {
  static constexpr uint32_t kExp = 0x7f80u, kMan = 0x007fu;
};
template <> struct HalfBits<F16> {
  static constexpr uint32_t kExp = 0x7c00u, kMan = 0x03ffu;
};

// O entry k of a row: +-Inf when a key the row sees with a finite score has +-Inf in that V
// column (NaN for both signs), else x.
__device__ __forceinline__ float with_inf(float x, uint64_t pinf, uint64_t ninf, int k) {
  const bool p = ((pinf >> k) & 1u) != 0, n = ((ninf >> k) & 1u) != 0;
  return p ? (n ? qnan() : pos_inf()) : (n ? neg_inf() : x);
}

// One thread per tile slot: slots [0, batch * qs.tiles) are Q tiles, the next batch * ks.tiles
// K/V tiles; the two threads after them check cu_seqlens_q / cu_seqlens_kv into status[0..4] /
// status[4..8].
__device__ __forceinline__ void tile_meta(uint32_t batch, Side qs, Side ks, const uint8_t* kv_valid,
                                          uint32_t has_valid, int32_t* q_meta, int32_t* kv_meta, int32_t* status) {
  const uint64_t t = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint64_t nq = static_cast<uint64_t>(batch) * qs.tiles, nkv = static_cast<uint64_t>(batch) * ks.tiles;
  if (t >= nq + nkv) {
    if (t - (nq + nkv) < 2) {
      const Side& s = t == nq + nkv ? qs : ks;
      seqlens::check(s.cu, static_cast<int>(batch), s.total, s.max_len,
                     status + seqlens::kStatusWords * static_cast<int>(t - (nq + nkv)));
    }
    return;
  }
  const bool is_q = t < nq;
  const uint64_t i = is_q ? t : t - nq;
  const Side& s = is_q ? qs : ks;
  const int seq = static_cast<int>(i / s.tiles);
  const int cap = is_q ? kBlockM : kBlockN;
  const int64_t off = static_cast<int64_t>(i % s.tiles) * cap;
  int32_t s0, len;
  seq_rows(s, seq, s0, len);
  const int r0 = s0 + static_cast<int>(min(off, static_cast<int64_t>(len)));
  const int r1 = r0 + static_cast<int>(min(static_cast<int64_t>(len) - min(off, static_cast<int64_t>(len)),
                                          static_cast<int64_t>(cap)));
  int32_t pmin = 0x7fffffff, pmax = static_cast<int32_t>(0x80000000u), dmin = 0x7fffffff,
          dmax = static_cast<int32_t>(0x80000000u);
  int nvalid = 0;
  for (int r = r0; r < r1; ++r) {
    if (!is_q && has_valid && kv_valid[r] == 0) continue;
    ++nvalid;
    const int32_t p = pos_of(s, s0, r), d = depth_of(s, r);
    pmin = min(pmin, p);
    pmax = max(pmax, p);
    dmin = min(dmin, d);
    dmax = max(dmax, d);
  }
  int32_t flags = 0;
  if (nvalid < cap) flags |= kFlagAnyInvalid;
  if (nvalid == 0) flags |= kFlagAllInvalid;
  int32_t* m = (is_q ? q_meta : kv_meta) + kMeta * i;
  m[0] = pmin;
  m[1] = pmax;
  m[2] = dmin;
  m[3] = dmax;
  m[4] = flags;
}

// Copy `rows` rows of D halves (row r at src + r * stride) into shared (ld = D + kPad), zeros for
// rows >= n or rows whose `keep` flag is 0. 16-byte vectors.
template <int D>
__device__ __forceinline__ void load_rows(uint16_t* dst, const uint16_t* src, size_t stride, int rows, int n,
                                          const int32_t* keep) {
  constexpr int kVec = D / 8;  // uint4 per row
  for (int x = threadIdx.x; x < rows * kVec; x += blockDim.x) {
    const int r = x / kVec, c = x % kVec;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < n && (keep == nullptr || keep[r])) v = *reinterpret_cast<const uint4*>(src + r * stride + 8 * c);
    *reinterpret_cast<uint4*>(dst + r * (D + kPad) + 8 * c) = v;
  }
}

struct Params {
  const uint16_t* q;
  const uint16_t* k;
  const uint16_t* v;
  const int32_t* q_meta;
  const int32_t* kv_meta;
  Side qs, ks;
  const uint8_t* kv_valid;
  uint32_t has_valid;
  uint32_t heads, kv_heads, total_q;
  float scale;
  uint32_t mode;
  uint32_t tc;
  const int32_t* status;  // attn_tile_meta's cu_seqlens status: 8 words, all codes 0 when valid
  void* o;                // f32, or E when o_half
  uint32_t o_half;
  float* lse;
};

// O element i (index into [total_q, H, D]), in f32 or rounded to E.
template <typename E>
__device__ __forceinline__ void store_o(const Params& p, size_t i, float x) {
  if (p.o_half)
    static_cast<uint16_t*>(p.o)[i] = FromF32<E>::rne(x);
  else
    static_cast<float*>(p.o)[i] = x;
}

// Block-wide state shared by both paths: the Q tile and the current K/V tile in shared memory,
// with the K/V tile's metadata and its non-finite V masks. One static __shared__ object whose
// reference the paths take (an aggregate of shared-memory pointers instead is folded by clang
// (HIP) into a constant initializer it cannot lower once the paths are not inlined).
template <int D>
struct Smem {
  static constexpr int kLd = D + kPad;
  alignas(16) uint16_t q[kBlockM * kLd];
  alignas(16) uint16_t k[kBlockN * kLd];
  alignas(16) uint16_t v[kBlockN * kLd];
  int32_t q_pos[kBlockM];
  int32_t q_depth[kBlockM];
  int32_t k_pos[kBlockN];
  int32_t k_depth[kBlockN];
  int32_t k_valid[kBlockN];
  // Non-finite V of the current tile: v_inf[d] / v_inf[D + d] bit c: V[c][d] is +Inf / -Inf;
  // v_bad[0] bit c: V row c holds a NaN; v_bad[1] != 0: the tile's V holds a non-finite entry.
  uint32_t v_inf[2 * D];
  uint32_t v_bad[2];
  // Per thread, over the whole K/V loop: bit k set when the thread's O entry k is +Inf / -Inf
  // (both: NaN). In shared memory, not registers: it is touched only on tiles with non-finite V
  // and at the end, and the MFMA kernels are at the VGPR limit.
  uint64_t o_pinf[kThreads];
  uint64_t o_ninf[kThreads];
};

// V rows like load_rows, checked: a non-finite entry is stored as 0 and recorded in sm.v_inf /
// sm.v_bad (shared atomics; the caller zeroed them and synchronises after).
template <typename E, int D>
__device__ __forceinline__ void load_v_rows(Smem<D>& sm, const uint16_t* src, size_t stride, int n) {
  constexpr int kVec = D / 8;
  constexpr uint32_t kExp = HalfBits<E>::kExp, kMan = HalfBits<E>::kMan;
  for (int x = threadIdx.x; x < kBlockN * kVec; x += blockDim.x) {
    const int r = x / kVec, c = x % kVec;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r < n && sm.k_valid[r]) v = *reinterpret_cast<const uint4*>(src + r * stride + 8 * c);
    uint32_t w[4] = {v.x, v.y, v.z, v.w};
    bool bad = false;
#pragma unroll
    for (int i = 0; i < 4; ++i) bad = bad || (w[i] & kExp) == kExp || ((w[i] >> 16) & kExp) == kExp;
    if (bad) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t h = (w[i / 2] >> (16 * (i % 2))) & 0xffffu;
        if ((h & kExp) != kExp) continue;
        if ((h & kMan) != 0)
          atomicOr(&sm.v_bad[0], 1u << r);
        else
          atomicOr(&sm.v_inf[((h & 0x8000u) ? D : 0) + 8 * c + i], 1u << r);
        w[i / 2] &= ~(0xffffu << (16 * (i % 2)));
      }
      atomicOr(&sm.v_bad[1], 1u);
      v = make_uint4(w[0], w[1], w[2], w[3]);
    }
    *reinterpret_cast<uint4*>(sm.v + r * (D + kPad) + 8 * c) = v;
  }
}

// Loads K/V tile kt of the block's sequence (rows past the end or invalid: zeros; non-finite V
// entries: zeros, recorded in sm.v_inf / sm.v_bad). Every thread of the block calls it; returns
// the tile class (0 skip, 1 full, 2 boundary), uniform per block.
template <typename E, int D>
__device__ __forceinline__ int load_kv_tile(const Params& p, Smem<D>& sm, int seq, int32_t kv0, int32_t kv_len,
                                            int kvh, int kt, const int32_t* qm) {
  const int cls = classify(qm, p.kv_meta + kMeta * (static_cast<size_t>(seq) * p.ks.tiles + kt),
                           static_cast<int>(p.mode));
  if (cls == 0) return 0;
  const int k0 = kv0 + kt * kBlockN;
  const int nk = min(kv_len - kt * kBlockN, kBlockN);
  const size_t kv_stride = static_cast<size_t>(p.kv_heads) * D;
  __syncthreads();  // the previous tile's reads of sK/sV/metadata are done
  for (int r = threadIdx.x; r < kBlockN; r += blockDim.x) {
    const bool in = r < nk;
    sm.k_valid[r] = in && (!p.has_valid || p.kv_valid[k0 + r] != 0) ? 1 : 0;
    sm.k_pos[r] = in ? pos_of(p.ks, kv0, k0 + r) : 0;
    sm.k_depth[r] = in ? depth_of(p.ks, k0 + r) : 0;
  }
  for (int d = threadIdx.x; d < 2 * D; d += blockDim.x) sm.v_inf[d] = 0u;
  if (threadIdx.x < 2) sm.v_bad[threadIdx.x] = 0u;
  __syncthreads();
  const size_t kvoff = static_cast<size_t>(k0) * kv_stride + static_cast<size_t>(kvh) * D;
  load_rows<D>(sm.k, p.k + kvoff, kv_stride, kBlockN, nk, sm.k_valid);
  load_v_rows<E, D>(sm, p.v + kvoff, kv_stride, nk);
  __syncthreads();
  return cls;
}

#if !TESSERA_TARGET_HIP
// Tensor-core path (wave32): warp w owns query rows 16w..16w+15 of the tile.
template <typename E, int D>
__device__ __forceinline__ void fwd_tc(const Params& p, Smem<D>& sm, int seq, int32_t kv0, int32_t kv_len, int q0, int nq,
                                       int h, int kvh, const int32_t* qm) {
  constexpr int kLd = D + kPad;
  const int mode = static_cast<int>(p.mode);
  const float sl2 = p.scale * kLog2e;
  const int lane = lane_id();
  const int warp = threadIdx.x / kWarpSize;
  const int g = lane >> 2, t4 = lane & 3;
  mma::FragA qf[D / 16];
  mma::FragC oacc[D / 8];
  float tm[2] = {neg_inf(), neg_inf()}, tl[2] = {0.0f, 0.0f};
  sm.o_pinf[threadIdx.x] = sm.o_ninf[threadIdx.x] = 0;  // bit 4 dt + i: O entry oacc[dt].x[i]
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) mma::ldmatrix_a(qf[ks], sm.q + 16 * warp * kLd + 16 * ks, kLd);
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) mma::zero(oacc[dt]);

  const int nkt = kv_len / kBlockN + (kv_len % kBlockN != 0);
  for (int kt = 0; kt < nkt; ++kt) {
    const int cls = load_kv_tile<E, D>(p, sm, seq, kv0, kv_len, kvh, kt, qm);
    if (cls == 0) continue;
    const bool masked = cls == 2;
    const bool vbad = sm.v_bad[1] != 0;
    const uint32_t vnan = sm.v_bad[0];
    // S (16 x kBlockN per warp) = Q K^T
    mma::FragC s[kBlockN / 8];
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) mma::zero(s[nt]);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt) {
        mma::FragB kf;
        mma::ldmatrix_b_col_major(kf, sm.k + 8 * nt * kLd + 16 * ks, kLd);
        mma::Mma16816<E>::run(s[nt], qf[ks], kf, s[nt]);
      }
    }
    // scale to the log2 domain, mask, row max (row g: elements 0, 1; row g + 8: elements 2, 3)
    float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float x = s[nt].x[i] * sl2;
        if (masked || vbad) {
          const int r = 16 * warp + g + 8 * (i >> 1), c = 8 * nt + 2 * t4 + (i & 1);
          if (masked && !visible(mode, sm.q_pos[r], sm.q_depth[r], sm.k_pos[c], sm.k_depth[c], sm.k_valid[c]))
            x = neg_inf();
          else if ((vnan >> c) & 1u)
            x = qnan();  // a NaN in the V row of a key this row sees
        }
        s[nt].x[i] = x;
        mx[i >> 1] = fmaxf(mx[i >> 1], x);
      }
    }
    if (vbad) {
      // Keys with a finite score (weight > 0) for rows g and g + 8, gathered over the quad.
      uint32_t km[2] = {0u, 0u};
#pragma unroll
      for (int nt = 0; nt < kBlockN / 8; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (s[nt].x[i] > neg_inf()) km[i >> 1] |= 1u << (8 * nt + 2 * t4 + (i & 1));
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        km[j] |= shfl_xor(km[j], 1);
        km[j] |= shfl_xor(km[j], 2);
      }
      uint64_t pinf = 0, ninf = 0;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int dd = 8 * dt + 2 * t4 + (i & 1);
          if (sm.v_inf[dd] & km[i >> 1]) pinf |= 1ull << (4 * dt + i);
          if (sm.v_inf[D + dd] & km[i >> 1]) ninf |= 1ull << (4 * dt + i);
        }
      }
      sm.o_pinf[threadIdx.x] |= pinf;
      sm.o_ninf[threadIdx.x] |= ninf;
    }
    float alpha[2], shift[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      mx[j] = fmaxf(mx[j], shfl_xor(mx[j], 1));
      mx[j] = fmaxf(mx[j], shfl_xor(mx[j], 2));
      const float mn = fmaxf(tm[j], mx[j]);
      shift[j] = mn == neg_inf() ? 0.0f : mn;
      alpha[j] = exp2f(tm[j] - shift[j]);
      tm[j] = mn;
      tl[j] *= alpha[j];
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      oacc[dt].x[0] *= alpha[0];
      oacc[dt].x[1] *= alpha[0];
      oacc[dt].x[2] *= alpha[1];
      oacc[dt].x[3] *= alpha[1];
    }
    // P rounded to the input type (RNE), as A fragments (C tiles 2kc and 2kc + 1 form the 16x16
    // A tile of keys 16kc..16kc+15); l sums the f32 values, so the LSE keeps f32 accuracy.
    mma::FragA pf[kBlockN / 16];
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint16_t b[8];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float e = exp2f(s[2 * kc + half].x[i] - shift[i >> 1]);
          b[4 * half + i] = FromF32<E>::rne(e);
          tl[i >> 1] += e;
        }
      }
      pf[kc].x[0] = mma::pack_b16x2(b[0], b[1]);  // (g, 2t..)
      pf[kc].x[1] = mma::pack_b16x2(b[2], b[3]);  // (g + 8, 2t..)
      pf[kc].x[2] = mma::pack_b16x2(b[4], b[5]);  // (g, 2t + 8..)
      pf[kc].x[3] = mma::pack_b16x2(b[6], b[7]);  // (g + 8, 2t + 8..)
    }
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        mma::FragB vf;
        mma::ldmatrix_b_row_major(vf, sm.v + 16 * kc * kLd + 8 * dt, kLd);
        mma::Mma16816<E>::run(oacc[dt], pf[kc], vf, oacc[dt]);
      }
    }
  }

  const size_t q_stride = static_cast<size_t>(p.heads) * D;
  const uint64_t pinf = sm.o_pinf[threadIdx.x], ninf = sm.o_ninf[threadIdx.x];
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    tl[j] += shfl_xor(tl[j], 1);
    tl[j] += shfl_xor(tl[j], 2);
  }
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int r = 16 * warp + g + 8 * j;
    if (r >= nq) continue;
    const bool nan = tl[j] != tl[j];  // a NaN or +inf score, or a NaN value, the row sees
    const float inv = tl[j] > 0.0f ? 1.0f / tl[j] : 0.0f;
    const size_t orow = static_cast<size_t>(q0 + r) * q_stride + static_cast<size_t>(h) * D;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const int k = 4 * dt + 2 * j;
      const float2 x = nan ? make_float2(qnan(), qnan())
                           : make_float2(with_inf(oacc[dt].x[2 * j] * inv, pinf, ninf, k),
                                         with_inf(oacc[dt].x[2 * j + 1] * inv, pinf, ninf, k + 1));
      const size_t at = orow + 8 * dt + 2 * t4;
      if (p.o_half)
        *reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(p.o) + at) =
            static_cast<uint32_t>(FromF32<E>::rne(x.x)) | (static_cast<uint32_t>(FromF32<E>::rne(x.y)) << 16);
      else
        *reinterpret_cast<float2*>(static_cast<float*>(p.o) + at) = x;
    }
    if (t4 == 0)
      p.lse[static_cast<size_t>(h) * p.total_q + q0 + r] =
          nan ? qnan() : tl[j] > 0.0f ? (tm[j] + log2f(tl[j])) * kLn2 : neg_inf();
  }
}
#else
// MFMA path (wave64, v_mfma_f32_32x32x8{bf16_1k,f16}): wave w owns query rows 32w..32w+31. The
// kernel computes S^T = K Q^T (A = K rows, B = Q^T), so lane L holds query j = L % 32 and keys
// i = 8 (e / 4) + 4 (L / 32) + e % 4 in its 16 elements: a query's row reduction is over the
// lane's elements and shfl_xor 32. O^T = V^T P^T: the B operand of key chunk c (keys 8c..8c+7)
// is exactly elements 4c..4c+3 of the lane's S^T accumulator, so P stays in registers.
template <typename E, int D>
__device__ __forceinline__ void fwd_tc(const Params& p, Smem<D>& sm, int seq, int32_t kv0, int32_t kv_len, int q0, int nq,
                                       int h, int kvh, const int32_t* qm) {
  static_assert(kBlockN == 32 && kBlockM == 64 && kThreads == 128, "MFMA tiling: 2 waves x 32 rows, 32 keys");
  constexpr int kLd = D + kPad;
  const int mode = static_cast<int>(p.mode);
  const float sl2 = p.scale * kLog2e;
  const int lane = lane_id();
  const int wave = threadIdx.x / kWarpSize;
  const int jq = 32 * wave + mma::mfma_c_col(lane);  // this lane's query row in the tile
  mma::MfmaFragC oacc[D / 32];
#pragma unroll
  for (int dt = 0; dt < D / 32; ++dt) mma::zero(oacc[dt]);
  float tm = neg_inf(), tl = 0.0f;
  sm.o_pinf[threadIdx.x] = sm.o_ninf[threadIdx.x] = 0;  // bit 16 dt + e: O entry oacc[dt].x[e]
  const uint16_t* qw = sm.q + 32 * wave * kLd;

  const int nkt = kv_len / kBlockN + (kv_len % kBlockN != 0);
  for (int kt = 0; kt < nkt; ++kt) {
    const int cls = load_kv_tile<E, D>(p, sm, seq, kv0, kv_len, kvh, kt, qm);
    if (cls == 0) continue;
    const bool masked = cls == 2;
    const bool vbad = sm.v_bad[1] != 0;
    const uint32_t vnan = sm.v_bad[0];
    mma::MfmaFragC st;  // S^T: 32 keys x 32 queries
    mma::zero(st);
#pragma unroll 4
    for (int ks = 0; ks < D / 8; ++ks) {
      mma::MfmaFragAB ka, qb;
      mma::mfma_load_a_row_major(ka, sm.k + 8 * ks, kLd);  // A[i][k] = K[i][8ks + k]
      mma::mfma_load_b_col_major(qb, qw + 8 * ks, kLd);     // B[k][j] = Q[j][8ks + k]
      mma::Mfma32x32x8<E>::run(st, ka, qb, st);
    }
    float mx = neg_inf();
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      float x = st.x[e] * sl2;
      if (masked || vbad) {
        const int c = mma::mfma_c_row(lane, e);
        if (masked && !visible(mode, sm.q_pos[jq], sm.q_depth[jq], sm.k_pos[c], sm.k_depth[c], sm.k_valid[c]))
          x = neg_inf();
        else if ((vnan >> c) & 1u)
          x = qnan();  // a NaN in the V row of a key this row sees
      }
      st.x[e] = x;
      mx = fmaxf(mx, x);
    }
    if (vbad) {
      // Keys with a finite score (weight > 0) for query jq: this lane's 16 and lane ^ 32's.
      uint32_t km = 0u;
#pragma unroll
      for (int e = 0; e < 16; ++e)
        if (st.x[e] > neg_inf()) km |= 1u << mma::mfma_c_row(lane, e);
      km |= shfl_xor(km, 32);
      uint64_t pinf = 0, ninf = 0;
#pragma unroll
      for (int dt = 0; dt < D / 32; ++dt) {
#pragma unroll
        for (int e = 0; e < 16; ++e) {
          const int dd = 32 * dt + mma::mfma_c_row(lane, e);
          if (sm.v_inf[dd] & km) pinf |= 1ull << (16 * dt + e);
          if (sm.v_inf[D + dd] & km) ninf |= 1ull << (16 * dt + e);
        }
      }
      sm.o_pinf[threadIdx.x] |= pinf;
      sm.o_ninf[threadIdx.x] |= ninf;
    }
    mx = fmaxf(mx, shfl_xor(mx, 32));
    const float mn = fmaxf(tm, mx);
    const float shift = mn == neg_inf() ? 0.0f : mn;
    const float alpha = exp2f(tm - shift);
    tm = mn;
    tl *= alpha;
#pragma unroll
    for (int dt = 0; dt < D / 32; ++dt) {
#pragma unroll
      for (int e = 0; e < 16; ++e) oacc[dt].x[e] *= alpha;
    }
    mma::MfmaFragAB pb[4];  // B of key chunk c: P^T[8c + k][j], rounded (RNE); l sums f32 values
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const float x = exp2f(st.x[e] - shift);
      tl += x;
      pb[e >> 2].x[e & 3] = FromF32<E>::rne(x);
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) {
#pragma unroll
      for (int dt = 0; dt < D / 32; ++dt) {
        mma::MfmaFragAB va;  // A[i][k] = V[8c + k][32dt + i]
#pragma unroll
        for (int e = 0; e < 4; ++e)
          va.x[e] = sm.v[(8 * c + mma::mfma_ab_k(lane, e)) * kLd + 32 * dt + mma::mfma_a_row(lane)];
        mma::Mfma32x32x8<E>::run(oacc[dt], va, pb[c], oacc[dt]);
      }
    }
  }

  tl += shfl_xor(tl, 32);
  if (jq < nq) {
    const size_t q_stride = static_cast<size_t>(p.heads) * D;
    const bool nan = tl != tl;  // a NaN or +inf score, or a NaN value, the row sees
    const float inv = tl > 0.0f ? 1.0f / tl : 0.0f;
    const uint64_t pinf = sm.o_pinf[threadIdx.x], ninf = sm.o_ninf[threadIdx.x];
    const size_t orow = static_cast<size_t>(q0 + jq) * q_stride + static_cast<size_t>(h) * D;
#pragma unroll
    for (int dt = 0; dt < D / 32; ++dt) {
#pragma unroll
      for (int e = 0; e < 16; ++e)
        store_o<E>(p, orow + 32 * dt + mma::mfma_c_row(lane, e),
                   nan ? qnan() : with_inf(oacc[dt].x[e] * inv, pinf, ninf, 16 * dt + e));
    }
    if (lane < 32)
      p.lse[static_cast<size_t>(h) * p.total_q + q0 + jq] =
          nan ? qnan() : tl > 0.0f ? (tm + log2f(tl)) * kLn2 : neg_inf();
  }
}
#endif

// Scalar path (any warp width): thread t owns query row t / 2; the two threads of a row take
// half of the tile's keys each for S and half of the head dim each for O.
template <typename E, int D>
__device__ __forceinline__ void fwd_scalar(const Params& p, Smem<D>& sm, int seq, int32_t kv0, int32_t kv_len, int q0,
                                           int nq, int h, int kvh, const int32_t* qm) {
  constexpr int kLd = D + kPad;
  constexpr int kHalfN = kBlockN / 2, kHalfD = D / 2;
  const int mode = static_cast<int>(p.mode);
  const float sl2 = p.scale * kLog2e;
  const int sr = threadIdx.x >> 1, sh = threadIdx.x & 1;
  float so[kHalfD];
#pragma unroll
  for (int c = 0; c < kHalfD; ++c) so[c] = 0.0f;
  float m = neg_inf(), l = 0.0f;
  sm.o_pinf[threadIdx.x] = sm.o_ninf[threadIdx.x] = 0;  // bit c: O entry so[c]
  const int nkt = kv_len / kBlockN + (kv_len % kBlockN != 0);
  for (int kt = 0; kt < nkt; ++kt) {
    const int cls = load_kv_tile<E, D>(p, sm, seq, kv0, kv_len, kvh, kt, qm);
    if (cls == 0) continue;
    const bool masked = cls == 2;
    const bool vbad = sm.v_bad[1] != 0;
    const uint32_t vnan = sm.v_bad[0];
    float s[kHalfN];
    float mx = neg_inf();
    const uint16_t* qrow = sm.q + sr * kLd;
#pragma unroll 1
    for (int j = 0; j < kHalfN; ++j) {
      const int c = sh * kHalfN + j;
      const uint16_t* krow = sm.k + c * kLd;
      float acc = 0.0f;
      for (int d = 0; d < D; ++d) acc += E::to_f32(qrow[d]) * E::to_f32(krow[d]);
      float x = acc * sl2;
      if (masked && !visible(mode, sm.q_pos[sr], sm.q_depth[sr], sm.k_pos[c], sm.k_depth[c], sm.k_valid[c]))
        x = neg_inf();
      else if ((vnan >> c) & 1u)
        x = qnan();  // a NaN in the V row of a key this row sees
      s[j] = x;
      mx = fmaxf(mx, x);
    }
    if (vbad) {
      // Keys with a finite score (weight > 0) for row sr: this thread's half and its partner's.
      uint32_t km = 0u;
#pragma unroll
      for (int j = 0; j < kHalfN; ++j)
        if (s[j] > neg_inf()) km |= 1u << (sh * kHalfN + j);
      km |= shfl_xor(km, 1);
      uint64_t pinf = 0, ninf = 0;
#pragma unroll
      for (int c = 0; c < kHalfD; ++c) {
        const int dd = sh * kHalfD + c;
        if (sm.v_inf[dd] & km) pinf |= 1ull << c;
        if (sm.v_inf[D + dd] & km) ninf |= 1ull << c;
      }
      sm.o_pinf[threadIdx.x] |= pinf;
      sm.o_ninf[threadIdx.x] |= ninf;
    }
    mx = fmaxf(mx, shfl_xor(mx, 1));
    const float mn = fmaxf(m, mx);
    const float shift = mn == neg_inf() ? 0.0f : mn;
    const float alpha = exp2f(m - shift);
    m = mn;
    l *= alpha;
#pragma unroll
    for (int c = 0; c < kHalfD; ++c) so[c] *= alpha;
#pragma unroll
    for (int j = 0; j < kHalfN; ++j) {
      s[j] = exp2f(s[j] - shift);
      l += s[j];
    }
#pragma unroll 1
    for (int j = 0; j < kHalfN; ++j) {
      const float other = shfl_xor(s[j], 1);
      const float w0 = sh == 0 ? s[j] : other;  // key j
      const float w1 = sh == 0 ? other : s[j];  // key kHalfN + j
      const uint16_t* v0 = sm.v + j * kLd + sh * kHalfD;
      const uint16_t* v1 = sm.v + (kHalfN + j) * kLd + sh * kHalfD;
#pragma unroll
      for (int c = 0; c < kHalfD; ++c) so[c] += w0 * E::to_f32(v0[c]) + w1 * E::to_f32(v1[c]);
    }
  }
  l += shfl_xor(l, 1);
  if (sr < nq) {
    const size_t q_stride = static_cast<size_t>(p.heads) * D;
    const bool nan = l != l;  // a NaN or +inf score, or a NaN value, the row sees
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const uint64_t pinf = sm.o_pinf[threadIdx.x], ninf = sm.o_ninf[threadIdx.x];
    const size_t orow = static_cast<size_t>(q0 + sr) * q_stride + static_cast<size_t>(h) * D + sh * kHalfD;
#pragma unroll
    for (int c = 0; c < kHalfD; ++c) store_o<E>(p, orow + c, nan ? qnan() : with_inf(so[c] * inv, pinf, ninf, c));
    if (sh == 0)
      p.lse[static_cast<size_t>(h) * p.total_q + q0 + sr] = nan ? qnan() : l > 0.0f ? (m + log2f(l)) * kLn2 : neg_inf();
  }
}

// fwd, fwd_tc and fwd_scalar are force-inlined into the kernel: left to clang (HIP), the f16
// D = 128 kernel calls fwd with its arguments on the scratch stack.
template <typename E, int D>
__device__ __forceinline__ void fwd(const Params& p) {
  __shared__ __align__(16) Smem<D> sm;

  // Invalid cu_seqlens (attn_tile_meta's status): write nothing; the op reports the status.
  for (int w = 0; w < 2 * seqlens::kStatusWords; w += seqlens::kStatusWords)
    if (p.status[w] != 0) return;
  const int tile = blockIdx.x;  // Q tile slot tile % q_tiles of sequence tile / q_tiles
  const int h = blockIdx.y;
  const int kvh = h / (p.heads / p.kv_heads);
  const int seq = tile / static_cast<int>(p.qs.tiles);
  const int64_t off = static_cast<int64_t>(tile % static_cast<int>(p.qs.tiles)) * kBlockM;
  int32_t s0, len, kv0, kv_len;
  seq_rows(p.qs, seq, s0, len);
  if (off >= len) return;  // past the sequence's end (uniform over the block)
  seq_rows(p.ks, seq, kv0, kv_len);
  const int q0 = s0 + static_cast<int>(off);
  const int nq = min(len - static_cast<int>(off), kBlockM);
  const int32_t* qm = p.q_meta + kMeta * static_cast<size_t>(tile);
  const size_t q_stride = static_cast<size_t>(p.heads) * D;
  load_rows<D>(sm.q, p.q + static_cast<size_t>(q0) * q_stride + static_cast<size_t>(h) * D, q_stride, kBlockM, nq,
               nullptr);
  for (int r = threadIdx.x; r < kBlockM; r += blockDim.x) {
    sm.q_pos[r] = r < nq ? pos_of(p.qs, s0, q0 + r) : 0;
    sm.q_depth[r] = r < nq ? depth_of(p.qs, q0 + r) : 0;
  }
  __syncthreads();
  if (p.tc != 0) {
    fwd_tc<E, D>(p, sm, seq, kv0, kv_len, q0, nq, h, kvh, qm);  // mma.sync (wave32) or MFMA (wave64)
    return;
  }
  fwd_scalar<E, D>(p, sm, seq, kv0, kv_len, q0, nq, h, kvh, qm);
}

}  // namespace attn
}  // namespace tessera

using namespace tessera;

// Arguments: batch, the two sides (cu_seqlens, rows, max_seqlen, tile slots per sequence,
// positions: array + flag or offset, depths: arrays + one flag), validity, then the Q and K/V
// tile metadata and the 8 status words.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(attn::kThreads)
    attn_tile_meta(uint32_t batch, const int32_t* cu_q, const int32_t* cu_kv, int32_t total_q, int32_t total_kv,
                   int32_t max_q, int32_t max_kv, uint32_t q_tiles, uint32_t kv_tiles, const int32_t* q_pos,
                   const int32_t* kv_pos, int32_t q_offset, int32_t kv_offset, uint32_t has_q_pos,
                   uint32_t has_kv_pos, const int32_t* q_depth, const int32_t* kv_depth, uint32_t has_depth,
                   const uint8_t* kv_valid, uint32_t has_valid, int32_t* q_meta, int32_t* kv_meta,
                   int32_t* status) {
  const attn::Side qs{q_pos, q_depth, cu_q, q_offset, has_q_pos, has_depth, total_q, max_q, q_tiles};
  const attn::Side ks{kv_pos, kv_depth, cu_kv, kv_offset, has_kv_pos, has_depth, total_kv, max_kv, kv_tiles};
  attn::tile_meta(batch, qs, ks, kv_valid, has_valid, q_meta, kv_meta, status);
}
TESSERA_EXPORT_BLOCK(attn_tile_meta, attn::kThreads)

// Arguments (after q, k, v): the sides as attn_tile_meta's (without batch), the tile metadata,
// validity, heads, kv_heads, scale, mode (0 full, 1 causal, 2 duo-causal), tc (1 tensor cores),
// the status words, then O (f32, or the input type when o_half = 1) and LSE.
#define TESSERA_ATTN_FWD(E, sfx, D)                                                                             \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(attn::kThreads) attn_fwd_##sfx##_d##D(                                       \
      const uint16_t* q, const uint16_t* k, const uint16_t* v, const int32_t* cu_q, const int32_t* cu_kv,       \
      int32_t total_q, int32_t total_kv, int32_t max_q, int32_t max_kv, uint32_t q_tiles, uint32_t kv_tiles,   \
      const int32_t* q_pos, const int32_t* kv_pos, int32_t q_offset, int32_t kv_offset, uint32_t has_q_pos,     \
      uint32_t has_kv_pos, const int32_t* q_depth, const int32_t* kv_depth, uint32_t has_depth,                 \
      const int32_t* q_meta, const int32_t* kv_meta, const uint8_t* kv_valid, uint32_t has_valid,               \
      uint32_t heads, uint32_t kv_heads, float scale, uint32_t mode, uint32_t tc, const int32_t* status,        \
      void* o, uint32_t o_half, float* lse) {                                                                   \
    attn::Params p;                                                                                             \
    p.q = q;                                                                                                    \
    p.k = k;                                                                                                    \
    p.v = v;                                                                                                    \
    p.q_meta = q_meta;                                                                                          \
    p.kv_meta = kv_meta;                                                                                        \
    p.qs = attn::Side{q_pos, q_depth, cu_q, q_offset, has_q_pos, has_depth, total_q, max_q, q_tiles};           \
    p.ks = attn::Side{kv_pos, kv_depth, cu_kv, kv_offset, has_kv_pos, has_depth, total_kv, max_kv, kv_tiles};   \
    p.kv_valid = kv_valid;                                                                                      \
    p.has_valid = has_valid;                                                                                    \
    p.heads = heads;                                                                                            \
    p.kv_heads = kv_heads;                                                                                      \
    p.total_q = static_cast<uint32_t>(total_q);                                                                 \
    p.scale = scale;                                                                                            \
    p.mode = mode;                                                                                              \
    p.tc = tc;                                                                                                  \
    p.status = status;                                                                                          \
    p.o = o;                                                                                                    \
    p.o_half = o_half;                                                                                          \
    p.lse = lse;                                                                                                \
    attn::fwd<E, D>(p);                                                                                         \
  }                                                                                                             \
  TESSERA_EXPORT_BLOCK(attn_fwd_##sfx##_d##D, attn::kThreads)

TESSERA_ATTN_FWD(BF16, bf16, 64)
TESSERA_ATTN_FWD(BF16, bf16, 128)
TESSERA_ATTN_FWD(F16, f16, 64)
TESSERA_ATTN_FWD(F16, f16, 128)
