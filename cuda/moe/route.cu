// moe/route.cu: the ReXMoE router top-k with PSR masking (moe.route) and the load statistics
// (moe.load).
//
// moe_route: one launch. Input logits [T, E] f32 (E = r*N virtual experts, row-major).
//   a. Each block first builds the PSR mask of the call in shared memory (the same for every
//      token, computed by every block from the kernel arguments; no host round trip): with
//      masked = r*N - N_t (computed by the op; 0 at inference), own = [own_start, own_start + N)
//      the layer's own experts (never masked) and m = E - N the others, the other expert v has
//      the index o = v (v < own_start) or v - N (v >= own_start + N) in [0, m), and is masked
//      iff psr_perm(o) < masked, psr_perm a keyed pseudo-random permutation of [0, m) (a 4-round
//      Feistel network over 2h bits, 2^(2h) >= m, with cycle walking; round keys from
//      splitmix64 of (seed, step, layer)). The exact rule is `psr_key` / `psr_perm` below and
//      `reference::moe::psr_mask`, bit for bit.
//   b. One warp per token (grid-stride over tokens): over the unmasked experts, the number of
//      NaN / +inf logits, the max, and sum = sum of expf(x - max) (per-lane in index order, then
//      a butterfly: every lane gets the same bits). Then k rounds of an arg-max over the
//      unmasked experts of the composite key (order_key(x) << 32 | ~v): the logit order with -0
//      == +0, ties to the lower id; round j takes the largest key below round j-1's. Lane 0
//      writes topk_ids[t, j] = v and topk_weights[t, j] = expf(x - max) / sum, and with
//      renormalize divides the k weights by their sum (f32, in slot order).
//   A token whose unmasked logits contain NaN or +inf, or are all -inf, is an error: its row is
//   written as ids -1, weights 0, and the block's status words count it:
//   status[3*b + 0] = bad tokens (NaN / +inf), [3*b + 1] = all -inf tokens, [3*b + 2] = the
//   first such token (or -1). The op turns them into an error (ops::DeviceCheck).
//
// moe_load: one block. per_expert[v] = the number of topk_ids equal to v (a shared histogram,
//   integer atomics: order-independent), per_layer[j] = sum of per_expert[j*N .. (j+1)*N);
//   status[0] = ids outside [0, E) (never used as an index), status[1] = E.
//
// Limits: E <= kMaxExperts (1024), checked by the op; blockDim.x == kBlock.
#include "../common/tessera.cuh"

namespace tessera {
namespace moeroute {

constexpr int kBlock = 256;
constexpr int kMaxExperts = 1024;

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

// The key of (seed, step, layer).
__device__ __forceinline__ uint64_t psr_key(uint64_t seed, uint64_t step, uint64_t layer) {
  return splitmix64(splitmix64(splitmix64(seed + kGolden) ^ step) ^ layer);
}

// Half width h of the Feistel network for a domain of m >= 1 values: the least h >= 1 with
// 2^(2h) >= m.
__device__ __forceinline__ uint32_t psr_half_bits(uint32_t m) {
  uint32_t h = 1;
  while ((1ull << (2 * h)) < m) ++h;
  return h;
}

// The keyed permutation of [0, m): 4 Feistel rounds over (L, R) = (x >> h, x & mask), round i
// (L, R) -> (R, L ^ (splitmix64(rk_i ^ R) & mask)) with rk_i = splitmix64(key + (i+1)*golden),
// repeated (cycle walking) until the value is below m.
__device__ __forceinline__ uint32_t psr_perm(uint64_t key, uint32_t m, uint32_t h, uint32_t x) {
  const uint64_t mask = (1ull << h) - 1;
  uint64_t v = x;
  do {
    uint64_t l = v >> h, r = v & mask;
    for (uint32_t i = 0; i < 4; ++i) {
      const uint64_t rk = splitmix64(key + (i + 1) * kGolden);
      const uint64_t nl = r;
      r = l ^ (splitmix64(rk ^ r) & mask);
      l = nl;
    }
    v = (l << h) | r;
  } while (v >= m);
  return static_cast<uint32_t>(v);
}

// Unsigned order key of an f32: a < b (non-NaN) iff key(a) < key(b); -0 is mapped to +0 first.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = f == 0.0f ? 0u : __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m >>= 1) {
    const uint32_t lo = shfl_xor(static_cast<uint32_t>(v), m);
    const uint32_t hi = shfl_xor(static_cast<uint32_t>(v >> 32), m);
    const uint64_t o = (static_cast<uint64_t>(hi) << 32) | lo;
    v = o > v ? o : v;
  }
  return v;
}

__device__ __forceinline__ float warp_max_f32(float v) {
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m >>= 1) {
    const float o = shfl_xor(v, m);
    v = o > v ? o : v;
  }
  return v;
}

}  // namespace moeroute
}  // namespace tessera

using namespace tessera;
using namespace tessera::moeroute;

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    moe_route(const float* __restrict__ logits, uint32_t tokens, uint32_t num_virtual, uint32_t num_experts,
              uint32_t own_start, uint32_t top_k, uint32_t renormalize, uint32_t masked, uint64_t seed,
              uint64_t step, uint64_t layer, int32_t* __restrict__ topk_ids, float* __restrict__ topk_weights,
              int32_t* __restrict__ status) {
  __shared__ uint8_t s_masked[kMaxExperts];
  __shared__ uint32_t s_bad[kMaxBlockWarps], s_neg[kMaxBlockWarps];
  __shared__ int32_t s_first[kMaxBlockWarps];
  const uint32_t tid = threadIdx.x;
  const uint32_t e_total = num_virtual;
  // a. The PSR mask.
  {
    const uint32_t m = e_total - num_experts;
    const uint64_t key = psr_key(seed, step, layer);
    const uint32_t h = psr_half_bits(m > 0 ? m : 1);
    for (uint32_t v = tid; v < e_total; v += blockDim.x) {
      bool mk = false;
      if (masked > 0 && (v < own_start || v >= own_start + num_experts)) {
        const uint32_t o = v < own_start ? v : v - num_experts;
        mk = psr_perm(key, m, h, o) < masked;
      }
      s_masked[v] = mk ? 1 : 0;
    }
  }
  __syncthreads();
  // b. One warp per token.
  const int lane = lane_id();
  const uint32_t warp = tid / kWarpSize;
  const uint32_t nwarps = blockDim.x / kWarpSize;
  uint32_t bad_tokens = 0, neg_tokens = 0;
  int32_t first = -1;
  for (uint32_t t = blockIdx.x * nwarps + warp; t < tokens; t += gridDim.x * nwarps) {
    const float* row = logits + static_cast<uint64_t>(t) * e_total;
    int32_t* ids = topk_ids + static_cast<uint64_t>(t) * top_k;
    float* w = topk_weights + static_cast<uint64_t>(t) * top_k;
    uint32_t bad = 0;
    float mx = -INFINITY;
    for (uint32_t v = lane; v < e_total; v += kWarpSize) {
      if (s_masked[v]) continue;
      const float x = row[v];
      if (x != x || x == INFINITY) {
        ++bad;
      } else if (x > mx) {
        mx = x;
      }
    }
    bad = warp_sum(bad);
    mx = warp_max_f32(mx);
    if (bad > 0 || mx == -INFINITY) {
      if (lane == 0) {
        if (bad > 0) {
          ++bad_tokens;
        } else {
          ++neg_tokens;
        }
        if (first < 0) first = static_cast<int32_t>(t);
        for (uint32_t j = 0; j < top_k; ++j) {
          ids[j] = -1;
          w[j] = 0.0f;
        }
      }
      continue;
    }
    float sum = 0.0f;
    for (uint32_t v = lane; v < e_total; v += kWarpSize) {
      if (!s_masked[v]) sum += expf(row[v] - mx);
    }
    sum = warp_sum(sum);
    // Top-k by the composite key, largest first.
    uint64_t prev = ~0ull;
    float sel_sum = 0.0f;
    for (uint32_t j = 0; j < top_k; ++j) {
      uint64_t best = 0;
      for (uint32_t v = lane; v < e_total; v += kWarpSize) {
        if (s_masked[v]) continue;
        const uint64_t ck = (static_cast<uint64_t>(order_key(row[v])) << 32) | (0xffffffffu - v);
        if (ck < prev && ck > best) best = ck;
      }
      best = warp_max_u64(best);
      prev = best;
      if (lane == 0) {
        const uint32_t v = 0xffffffffu - static_cast<uint32_t>(best);
        const float p = expf(row[v] - mx) / sum;
        ids[j] = static_cast<int32_t>(v);
        w[j] = p;
        sel_sum += p;
      }
    }
    if (renormalize && lane == 0) {
      for (uint32_t j = 0; j < top_k; ++j) w[j] = w[j] / sel_sum;
    }
  }
  // The block's status words.
  if (lane == 0) {
    s_bad[warp] = bad_tokens;
    s_neg[warp] = neg_tokens;
    s_first[warp] = first;
  }
  __syncthreads();
  if (tid == 0) {
    uint32_t b = 0, n = 0;
    int32_t f = -1;
    for (uint32_t i = 0; i < nwarps; ++i) {
      b += s_bad[i];
      n += s_neg[i];
      if (s_first[i] >= 0 && (f < 0 || s_first[i] < f)) f = s_first[i];
    }
    status[3 * blockIdx.x + 0] = static_cast<int32_t>(b);
    status[3 * blockIdx.x + 1] = static_cast<int32_t>(n);
    status[3 * blockIdx.x + 2] = f;
  }
}
TESSERA_EXPORT_BLOCK(moe_route, kBlock)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    moe_load(const int32_t* __restrict__ topk_ids, uint32_t n, uint32_t num_virtual, uint32_t num_experts,
             uint32_t r, int32_t* __restrict__ per_expert, int32_t* __restrict__ per_layer,
             int32_t* __restrict__ status) {
  __shared__ uint32_t hist[kMaxExperts + 1];
  const uint32_t tid = threadIdx.x;
  for (uint32_t e = tid; e <= num_virtual; e += blockDim.x) hist[e] = 0;
  __syncthreads();
  for (uint32_t i = tid; i < n; i += blockDim.x) {
    const int32_t e = topk_ids[i];
    const bool ok = static_cast<uint32_t>(e) < num_virtual;
    atomicAdd(&hist[ok ? static_cast<uint32_t>(e) : num_virtual], 1u);
  }
  __syncthreads();
  for (uint32_t e = tid; e < num_virtual; e += blockDim.x) per_expert[e] = static_cast<int32_t>(hist[e]);
  for (uint32_t j = tid; j < r; j += blockDim.x) {
    uint32_t s = 0;
    for (uint32_t e = 0; e < num_experts; ++e) s += hist[j * num_experts + e];
    per_layer[j] = static_cast<int32_t>(s);
  }
  if (tid == 0) {
    status[0] = static_cast<int32_t>(hist[num_virtual]);
    status[1] = static_cast<int32_t>(num_virtual);
  }
}
TESSERA_EXPORT_BLOCK(moe_load, kBlock)
