// featcache/received.cu: attention received per key (SpecDiff's "his"/"fut", ToCa's attention
// score), flash-style: P is never materialised (semantics and the reference:
// src/reference/featcache.rs `received`; the op: src/ops/featcache/received.rs).
//
//   received[h, k] = sum over the queries q that see key k of exp(scale * q.k - lse[h, q])
//
// with lse the row LSE attention.forward returns ([H, total_q], natural log; a row with
// lse = -inf saw no key and contributes nothing; a NaN lse gives NaN to the keys the row sees).
// The mask is attention.forward's, evaluated by the same code (attention/mask.cuh) on the same
// tile metadata (attn_tile_meta of attention/duo_causal.cu, launched by the op first, which also
// validates cu_seqlens into the 8 status words; a call whose status is nonzero writes nothing).
//
// Kernels (blockDim.x == kThreads = 128: 4 warps of 32 or 2 wavefronts of 64; no warp-level
// operation is used, so the result does not depend on the wave width):
//   featcache_received_<dt>_d<D>  grid (batch * kv_tiles, H): one block per (K tile slot of
//       kBlockN = 32 keys of one sequence, query head h; kv head h / (H / H_kv)). K is staged
//       once, transposed to f32 ([D][33], conflict-free column reads). The block loops over its
//       sequence's Q tiles of kBlockM = 64 rows in order, skipping those attention.forward
//       skips (classify on the tile metadata: no visible pair), evaluating the mask per element
//       on boundary tiles. Thread t owns key column c = t % 32 and query rows 16 * (t / 32) ..
//       + 15 of each Q tile: s = q.k in f32 (sequential over d), p = exp2(s * scale * log2e -
//       lse * log2e), summed in f32 into one partial per thread (Q tiles and rows in order). The
//       four row groups' partials are added in a fixed order ((g0 + g1) + g2) + g3: deterministic,
//       no atomics. Writes per_head[h, k] (f32 [H, total_kv]) for every key of the tile.
//   featcache_received_sum   one thread per key: out[k] = sum over h = 0..H-1 in order of
//       per_head[h, k] (deterministic).
//
// Shared memory (static): Q 64 x (D + 8) halves, K^T D x 33 f32, per-row positions / depths /
// lse * log2e, per-key positions / depths / validity, 4 x 32 partials. D = 128: 34.6 KiB.
// Layouts: Q [total_q, H, D], K [total_kv, H_kv, D] (16-bit: bf16 or f16), lse [H, total_q] f32.
#include "../common/tessera.cuh"
#include "../attention/mask.cuh"

namespace tessera {
namespace featcache {

constexpr int kThreads = 128;
constexpr int kRowsPerThread = attn::kBlockM / (kThreads / attn::kBlockN);  // 16
constexpr int kKtLd = attn::kBlockN + 1;
static_assert(kThreads % attn::kBlockN == 0 && kRowsPerThread * (kThreads / attn::kBlockN) == attn::kBlockM,
              "thread t: column t % kBlockN, rows kRowsPerThread * (t / kBlockN) ..");

template <int D>
struct RecvSmem {
  static constexpr int kLd = D + attn::kPad;
  alignas(16) uint16_t q[attn::kBlockM * kLd];
  float kt[D * kKtLd];  // K^T: kt[d * kKtLd + c] = K[c][d]
  int32_t q_pos[attn::kBlockM];
  int32_t q_depth[attn::kBlockM];
  float q_l2[attn::kBlockM];  // lse * log2e; -inf for rows past the tile
  int32_t k_pos[attn::kBlockN];
  int32_t k_depth[attn::kBlockN];
  int32_t k_valid[attn::kBlockN];
  float part[kThreads];
};

struct RecvParams {
  const uint16_t* q;
  const uint16_t* k;
  const int32_t* q_meta;
  const int32_t* kv_meta;
  attn::Side qs, ks;
  const uint8_t* kv_valid;
  uint32_t has_valid;
  uint32_t heads, kv_heads, total_q, total_kv;
  float scale;
  uint32_t mode;
  const int32_t* status;
  const float* lse;
  float* out;
};

template <typename E, int D>
__device__ __forceinline__ void received(const RecvParams& p) {
  using namespace attn;
  constexpr int kLd = D + kPad;
  __shared__ __align__(16) RecvSmem<D> sm;

  for (int w = 0; w < 2 * seqlens::kStatusWords; w += seqlens::kStatusWords)
    if (p.status[w] != 0) return;  // invalid cu_seqlens: the op reports them
  const int tile = blockIdx.x;     // K tile slot tile % kv_tiles of sequence tile / kv_tiles
  const int h = blockIdx.y;
  const int kvh = h / (p.heads / p.kv_heads);
  const int seq = tile / static_cast<int>(p.ks.tiles);
  const int64_t off = static_cast<int64_t>(tile % static_cast<int>(p.ks.tiles)) * kBlockN;
  int32_t kv0, kv_len, s0, q_len;
  seq_rows(p.ks, seq, kv0, kv_len);
  if (off >= kv_len) return;  // past the sequence's end (uniform over the block)
  seq_rows(p.qs, seq, s0, q_len);
  const int k0 = kv0 + static_cast<int>(off);
  const int nk = min(kv_len - static_cast<int>(off), kBlockN);
  const int32_t* km = p.kv_meta + kMeta * static_cast<size_t>(tile);
  const int mode = static_cast<int>(p.mode);

  // K tile, transposed to f32 (rows past the end or invalid: 0; they are masked anyway).
  for (int r = threadIdx.x; r < kBlockN; r += blockDim.x) {
    const bool in = r < nk;
    sm.k_valid[r] = in && (!p.has_valid || p.kv_valid[k0 + r] != 0) ? 1 : 0;
    sm.k_pos[r] = in ? pos_of(p.ks, kv0, k0 + r) : 0;
    sm.k_depth[r] = in ? depth_of(p.ks, k0 + r) : 0;
  }
  const size_t kv_stride = static_cast<size_t>(p.kv_heads) * D;
  const uint16_t* kbase = p.k + static_cast<size_t>(k0) * kv_stride + static_cast<size_t>(kvh) * D;
  for (int x = threadIdx.x; x < kBlockN * D; x += blockDim.x) {
    const int r = x / D, d = x % D;
    sm.kt[d * kKtLd + r] = r < nk ? E::to_f32(kbase[r * kv_stride + d]) : 0.0f;
  }

  const int c = threadIdx.x % kBlockN;
  const int r0 = kRowsPerThread * (threadIdx.x / kBlockN);
  const float sl2 = p.scale * kLog2e;
  const size_t q_stride = static_cast<size_t>(p.heads) * D;
  float colsum = 0.0f;
  const int nqt = q_len / kBlockM + (q_len % kBlockM != 0);
  for (int qt = 0; qt < nqt; ++qt) {
    const int32_t* qm = p.q_meta + kMeta * (static_cast<size_t>(seq) * p.qs.tiles + qt);
    const int cls = classify(qm, km, mode);  // uniform over the block
    if (cls == 0) continue;
    const int q0 = s0 + qt * kBlockM;
    const int nq = min(q_len - qt * kBlockM, kBlockM);
    __syncthreads();  // the previous Q tile's reads are done (and, the first time, K is staged)
    constexpr int kVec = D / 8;  // uint4 per row
    const uint16_t* qbase = p.q + static_cast<size_t>(q0) * q_stride + static_cast<size_t>(h) * D;
    for (int x = threadIdx.x; x < kBlockM * kVec; x += blockDim.x) {
      const int r = x / kVec, v = x % kVec;
      uint4 w = make_uint4(0u, 0u, 0u, 0u);
      if (r < nq) w = *reinterpret_cast<const uint4*>(qbase + r * q_stride + 8 * v);
      *reinterpret_cast<uint4*>(sm.q + r * kLd + 8 * v) = w;
    }
    for (int r = threadIdx.x; r < kBlockM; r += blockDim.x) {
      const bool in = r < nq;
      sm.q_pos[r] = in ? pos_of(p.qs, s0, q0 + r) : 0;
      sm.q_depth[r] = in ? depth_of(p.qs, q0 + r) : 0;
      sm.q_l2[r] = in ? p.lse[static_cast<size_t>(h) * p.total_q + q0 + r] * kLog2e : neg_inf();
    }
    __syncthreads();
    float s[kRowsPerThread];
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) s[i] = 0.0f;
#pragma unroll 2
    for (int d = 0; d < D; d += 2) {
      const float k_a = sm.kt[d * kKtLd + c], k_b = sm.kt[(d + 1) * kKtLd + c];
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const uint32_t pair = *reinterpret_cast<const uint32_t*>(sm.q + (r0 + i) * kLd + d);
        s[i] += E::to_f32(static_cast<uint16_t>(pair & 0xffffu)) * k_a;
        s[i] += E::to_f32(static_cast<uint16_t>(pair >> 16)) * k_b;
      }
    }
#pragma unroll
    for (int i = 0; i < kRowsPerThread; ++i) {
      const int r = r0 + i;
      const float l2 = sm.q_l2[r];
      // Rows past the tile have l2 = -inf; a row with lse = -inf saw no key.
      bool vis = l2 != neg_inf();
      if (vis && cls == 2)
        vis = visible(mode, sm.q_pos[r], sm.q_depth[r], sm.k_pos[c], sm.k_depth[c], sm.k_valid[c]);
      if (vis) colsum += exp2f(s[i] * sl2 - l2);
    }
  }
  sm.part[threadIdx.x] = colsum;
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < nk) {
    float acc = sm.part[threadIdx.x];
    for (int g = 1; g < kThreads / kBlockN; ++g) acc += sm.part[g * kBlockN + threadIdx.x];
    p.out[static_cast<size_t>(h) * p.total_kv + k0 + threadIdx.x] = acc;
  }
}

}  // namespace featcache
}  // namespace tessera

using namespace tessera;

// Arguments: q, k, then the sides as attn_fwd's (cu_seqlens, totals, max_seqlen, tile slots,
// positions: array + flag or offset, depths: arrays + one flag), attn_tile_meta's Q and K/V
// metadata, validity, heads, kv_heads, scale, mode (0 full, 1 causal, 2 duo-causal), its 8
// status words, lse [H, total_q] and the per-head output [H, total_kv].
#define TESSERA_FEATCACHE_RECEIVED(E, sfx, D)                                                                   \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featcache::kThreads) featcache_received_##sfx##_d##D(               \
      const uint16_t* q, const uint16_t* k, const int32_t* cu_q, const int32_t* cu_kv, int32_t total_q,       \
      int32_t total_kv, int32_t max_q, int32_t max_kv, uint32_t q_tiles, uint32_t kv_tiles,                   \
      const int32_t* q_pos, const int32_t* kv_pos, int32_t q_offset, int32_t kv_offset, uint32_t has_q_pos,     \
      uint32_t has_kv_pos, const int32_t* q_depth, const int32_t* kv_depth, uint32_t has_depth,                 \
      const int32_t* q_meta, const int32_t* kv_meta, const uint8_t* kv_valid, uint32_t has_valid,               \
      uint32_t heads, uint32_t kv_heads, float scale, uint32_t mode, const int32_t* status, const float* lse,   \
      float* per_head) {                                                                                        \
    featcache::RecvParams p;                                                                                    \
    p.q = q;                                                                                                    \
    p.k = k;                                                                                                    \
    p.q_meta = q_meta;                                                                                          \
    p.kv_meta = kv_meta;                                                                                        \
    p.qs = attn::Side{q_pos, q_depth, cu_q, q_offset, has_q_pos, has_depth, total_q, max_q, q_tiles};           \
    p.ks = attn::Side{kv_pos, kv_depth, cu_kv, kv_offset, has_kv_pos, has_depth, total_kv, max_kv, kv_tiles};   \
    p.kv_valid = kv_valid;                                                                                      \
    p.has_valid = has_valid;                                                                                    \
    p.heads = heads;                                                                                            \
    p.kv_heads = kv_heads;                                                                                      \
    p.total_q = static_cast<uint32_t>(total_q);                                                                 \
    p.total_kv = static_cast<uint32_t>(total_kv);                                                               \
    p.scale = scale;                                                                                            \
    p.mode = mode;                                                                                              \
    p.status = status;                                                                                          \
    p.lse = lse;                                                                                                \
    p.out = per_head;                                                                                           \
    featcache::received<E, D>(p);                                                                               \
  }                                                                                                             \
  TESSERA_EXPORT_BLOCK(featcache_received_##sfx##_d##D, featcache::kThreads)

TESSERA_FEATCACHE_RECEIVED(BF16, bf16, 64)
TESSERA_FEATCACHE_RECEIVED(BF16, bf16, 128)
TESSERA_FEATCACHE_RECEIVED(F16, f16, 64)
TESSERA_FEATCACHE_RECEIVED(F16, f16, 128)

// The sum over heads, in head order; any grid (grid-stride over keys).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(featcache::kThreads)
    featcache_received_sum(const float* per_head, uint32_t heads, uint32_t total_kv, float* out) {
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t k = blockIdx.x * blockDim.x + threadIdx.x; k < total_kv; k += stride) {
    float acc = per_head[k];
    for (uint32_t h = 1; h < heads; ++h) acc += per_head[static_cast<size_t>(h) * total_kv + k];
    out[k] = acc;
  }
}
TESSERA_EXPORT_BLOCK(featcache_received_sum, featcache::kThreads)
