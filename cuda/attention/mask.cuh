// attention/mask.cuh: the attention mask as attention/duo_causal.cu evaluates it, shared with
// the kernels that must see exactly the same keys (featcache/received.cu): tile geometry, the
// Side of a problem (cu_seqlens, positions, depths), the tile metadata's layout and the tile /
// element visibility tests. Semantics: src/reference/attention.rs (a key is visible when valid
// and, per mode, kv_pos <= q_pos and kv_depth <= q_depth, within its sequence).
//
// Meta (built by attn_tile_meta): [batch * tiles, kMeta] = (min pos, max pos, min depth, max depth,
// flags) over a tile's rows (valid keys only on the K/V side), flags bit 0 = some slot invalid or
// missing, bit 1 = all invalid.
#pragma once
#include "../common/tessera.cuh"
#include "seqlens.cuh"

namespace tessera {
namespace attn {

constexpr int kBlockM = 64;  // query rows per block
constexpr int kBlockN = 32;  // keys per K/V tile
constexpr int kPad = 8;
constexpr int kMeta = 5;
constexpr int kFlagAnyInvalid = 1;
constexpr int kFlagAllInvalid = 2;
constexpr int kModeFull = 0, kModeDuo = 2;  // mode 1: causal
constexpr float kLog2e = 1.4426950408889634f;

struct Side {
  const int32_t* pos;     // explicit positions, or unused when has_pos == 0
  const int32_t* depth;   // unused when has_depth == 0 (depth 0)
  const int32_t* cu;      // cu_seqlens
  int32_t offset;         // implicit positions: row - (sequence start) + offset
  uint32_t has_pos;
  uint32_t has_depth;
  int32_t total;          // rows of the tensor
  int32_t max_len;        // max_seqlen: no sequence is read past it
  uint32_t tiles;         // tile slots per sequence
};

// Sequence seq's rows of side s, clamped (attention/seqlens.cuh).
__device__ __forceinline__ void seq_rows(const Side& s, int seq, int32_t& s0, int32_t& len) {
  seqlens::bounds(s.cu, seq, s.total, s.max_len, s0, len);
}

// Position of row `row` of a sequence starting at row s0.
__device__ __forceinline__ int32_t pos_of(const Side& s, int32_t s0, int row) {
  return s.has_pos ? s.pos[row] : row - s0 + s.offset;
}
__device__ __forceinline__ int32_t depth_of(const Side& s, int row) { return s.has_depth ? s.depth[row] : 0; }

__device__ __forceinline__ float neg_inf() { return -INFINITY; }

// 0 skip, 1 fully visible, 2 boundary.
__device__ __forceinline__ int classify(const int32_t* qm, const int32_t* km, int mode) {
  if (km[4] & kFlagAllInvalid) return 0;
  if (mode != kModeFull && km[0] > qm[1]) return 0;
  if (mode == kModeDuo && km[2] > qm[3]) return 0;
  bool full = (km[4] & kFlagAnyInvalid) == 0;
  if (mode != kModeFull && km[1] > qm[0]) full = false;
  if (mode == kModeDuo && km[3] > qm[2]) full = false;
  return full ? 1 : 2;
}

__device__ __forceinline__ bool visible(int mode, int32_t qp, int32_t qd, int32_t kp, int32_t kd, int32_t kvalid) {
  if (!kvalid) return false;
  if (mode == kModeFull) return true;
  if (kp > qp) return false;
  return mode != kModeDuo || kd <= qd;
}

}  // namespace attn
}  // namespace tessera
