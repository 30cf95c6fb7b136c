// tah/driver.cu: device kernels of the TaH (Think-at-Hard) iteration driver (drivers::tah).
//
// Hard-token selection (exact counts, three passes like ckpt/bitmask.cu):
//   1. tah_select_count     one thread per token: active = score > logit_thr; block popcount.
//   2. tah_scan_counts      one block: exclusive scan of the per-block counts into 64-bit
//                           offsets (offsets[nblocks] = total).
//   3. tah_select_compact   block-level exclusive scan of the flags gives each active token its
//                           output slot; writes the token's index (u32), in token order.
//   The threshold is applied to the raw score: sigmoid(s) > thr  <=>  s > logit(thr) =
//   log(thr / (1 - thr)), computed once on the host in f64 and rounded to f32, so every executor
//   compares the same two f32 values (NaN scores are never active).
// Rows: tah_gather_rows_b32 / tah_scatter_rows_b32 copy rows of d 32-bit words (f32 hidden
//   states, or i32 positions with d = 1) by index; tah_copy_b{8,16,32} copy a sub-range of a
//   buffer (KV cache growth, appends and views).
// Next-depth input (tah_next_input_<dt>): one block of kTopkBlock threads per active row of the
//   cumulative logits [m, V]:
//   a. radix select (4 passes of 8 bits, shared histograms) of the k-th largest order key, where
//      the key of an f32 is its bit pattern mapped so that unsigned order equals float order
//      (negative: ~bits, non-negative: bits | 0x80000000; -0.0 < +0.0; NaN with the sign bit
//      clear sorts above +inf, with it set below -inf);
//   b. one ordered pass over the row in chunks of blockDim: a block scan of (key > T, key == T)
//      flags collects every key > T and the lowest-index keys == T, so ties are broken by the
//      lower token id, and exactly k tokens are selected;
//   c. a rank sort of the k selected (key descending, id ascending) in shared memory;
//   d. softmax over the k values in f32 (max-shifted, summed serially in rank order), and
//      out[row, c] = sum_j w_j * emb[id_j, c] in f32, j in rank order.
//   Writes the selected ids (rank order) and weights too.
// Logits accumulation (tah_accumulate_f32): cum[i] += logits[i] in f32 (the TaH code sums the
//   logits of the depths a token went through).
#include "../common/tessera.cuh"

namespace tessera {
namespace tah {

constexpr int kBlock = 256;
constexpr int kTopkBlock = 256;
constexpr int kMaxK = 256;

__device__ __forceinline__ bool active(const float* scores, uint64_t i, uint64_t n, float thr) {
  return i < n && scores[i] > thr;
}

// Unsigned order key of an f32: a < b (as floats, non-NaN) iff key(a) < key(b).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float key_to_f32(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

template <typename E>
__device__ __forceinline__ void next_input_kernel(const float* __restrict__ cum, uint64_t vocab, int k,
                                                  const typename E::Bits* __restrict__ emb, int d,
                                                  float* __restrict__ out, uint32_t* __restrict__ out_ids,
                                                  float* __restrict__ out_w) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t s_prefix, s_need;
  __shared__ uint32_t sel_key[kMaxK], sel_id[kMaxK];
  __shared__ uint32_t srt_key[kMaxK], srt_id[kMaxK];
  __shared__ float w[kMaxK];
  __shared__ float s_sum;
  const uint64_t row = blockIdx.x;
  const float* x = cum + row * vocab;
  const int tid = static_cast<int>(threadIdx.x);
  if (tid == 0) {
    s_prefix = 0;
    s_need = static_cast<uint32_t>(k);
  }
  // a. Radix select of the k-th largest key, 8 bits per pass from the top.
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    const uint32_t hi_mask = pass == 0 ? 0u : (0xffffffffu << (shift + 8));
    for (int b = tid; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const uint32_t prefix = s_prefix;
    for (uint64_t i = tid; i < vocab; i += blockDim.x) {
      const uint32_t key = order_key(x[i]);
      if ((key & hi_mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      uint32_t need = s_need;
      int b = 255;
      for (; b > 0; --b) {
        if (hist[b] >= need) break;
        need -= hist[b];
      }
      s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
      s_need = need;
    }
    __syncthreads();
  }
  const uint32_t thr = s_prefix;
  // b. Collect every key > thr and the lowest-index keys == thr, in index order.
  uint32_t base_gt = 0, base_eq = 0;
  uint32_t n_gt = 0;
  {
    // Fewer than k keys are > thr (radix select), and at least k are >= thr.
    uint64_t total = 0;
    for (uint64_t start = 0; start < vocab; start += blockDim.x) {
      const uint64_t i = start + tid;
      const uint32_t key = i < vocab ? order_key(x[i]) : 0u;
      const uint64_t f = (i < vocab && key > thr) ? (1ull << 32) : 0ull;
      const uint64_t f2 = f | ((i < vocab && key == thr) ? 1ull : 0ull);
      const uint64_t ex = block_exclusive_scan<uint64_t>(f2, &total);
      const uint32_t r_gt = base_gt + static_cast<uint32_t>(ex >> 32);
      const uint32_t r_eq = base_eq + static_cast<uint32_t>(ex & 0xffffffffu);
      if (f) {
        sel_key[r_gt] = key;
        sel_id[r_gt] = static_cast<uint32_t>(i);
      }
      // The first k equal keys, in index order, are staged in srt_* (scratch until step c) and
      // placed after the n_gt greater keys once the pass has counted them.
      if ((f2 & 1ull) && r_eq < static_cast<uint32_t>(k)) {
        srt_key[r_eq] = key;
        srt_id[r_eq] = static_cast<uint32_t>(i);
      }
      base_gt += static_cast<uint32_t>(total >> 32);
      base_eq += static_cast<uint32_t>(total & 0xffffffffu);
    }
    n_gt = base_gt;
  }
  __syncthreads();
  for (int j = tid; j < k; j += blockDim.x) {
    if (j >= static_cast<int>(n_gt)) {
      sel_key[j] = srt_key[j - n_gt];
      sel_id[j] = srt_id[j - n_gt];
    }
  }
  __syncthreads();
  // c. Rank sort: key descending, id ascending.
  for (int j = tid; j < k; j += blockDim.x) {
    const uint32_t kj = sel_key[j], ij = sel_id[j];
    int rank = 0;
    for (int t = 0; t < k; ++t) {
      const uint32_t kt = sel_key[t], it = sel_id[t];
      rank += (kt > kj || (kt == kj && it < ij)) ? 1 : 0;
    }
    srt_key[rank] = kj;
    srt_id[rank] = ij;
  }
  __syncthreads();
  // d. Softmax over the k values and the weighted sum of embedding rows.
  const float mx = key_to_f32(srt_key[0]);
  for (int j = tid; j < k; j += blockDim.x) w[j] = __expf(key_to_f32(srt_key[j]) - mx);
  __syncthreads();
  if (tid == 0) {
    float s = 0.0f;
    for (int j = 0; j < k; ++j) s += w[j];
    s_sum = s;
  }
  __syncthreads();
  const float inv = 1.0f / s_sum;
  for (int j = tid; j < k; j += blockDim.x) {
    out_ids[row * k + j] = srt_id[j];
    out_w[row * k + j] = w[j] * inv;
  }
  for (int c = tid; c < d; c += blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) acc += (w[j] * inv) * E::to_f32(emb[static_cast<uint64_t>(srt_id[j]) * d + c]);
    out[row * d + c] = acc;
  }
}

}  // namespace tah
}  // namespace tessera

using namespace tessera;

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kBlock)
    tah_select_count(const float* scores, uint64_t n, float thr, uint32_t* block_counts) {
  const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t total;
  block_exclusive_scan<uint32_t>(tah::active(scores, i, n, thr) ? 1u : 0u, &total);
  if (threadIdx.x == 0) block_counts[blockIdx.x] = total;
}
TESSERA_EXPORT_BLOCK(tah_select_count, tah::kBlock)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kBlock)
    tah_scan_counts(const uint32_t* counts, uint64_t nblocks, uint64_t* offsets) {
  uint64_t carry = 0;
  for (uint64_t start = 0; start < nblocks; start += blockDim.x) {
    const uint64_t i = start + threadIdx.x;
    const uint64_t v = i < nblocks ? static_cast<uint64_t>(counts[i]) : 0ull;
    uint64_t total;
    const uint64_t ex = block_exclusive_scan<uint64_t>(v, &total);
    if (i < nblocks) offsets[i] = carry + ex;
    carry += total;
  }
  if (threadIdx.x == 0) offsets[nblocks] = carry;
}
TESSERA_EXPORT_BLOCK(tah_scan_counts, tah::kBlock)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kBlock)
    tah_select_compact(const float* scores, uint64_t n, float thr, const uint64_t* block_offsets,
                       uint32_t* indices) {
  const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool a = tah::active(scores, i, n, thr);
  uint32_t total;
  const uint32_t rank = block_exclusive_scan<uint32_t>(a ? 1u : 0u, &total);
  if (a) indices[block_offsets[blockIdx.x] + rank] = static_cast<uint32_t>(i);
}
TESSERA_EXPORT_BLOCK(tah_select_compact, tah::kBlock)

// out[r, :] = src[idx[r], :] for r < m (rows of d 32-bit words).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kBlock)
    tah_gather_rows_b32(const uint32_t* src, const uint32_t* idx, uint64_t m, uint64_t d, uint32_t* out) {
  const uint64_t total = m * d;
  for (uint64_t e = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t r = e / d, c = e % d;
    out[e] = src[static_cast<uint64_t>(idx[r]) * d + c];
  }
}
TESSERA_EXPORT_BLOCK(tah_gather_rows_b32, tah::kBlock)

// dst[idx[r], :] = src[r, :] for r < m (indices distinct).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kBlock)
    tah_scatter_rows_b32(const uint32_t* src, const uint32_t* idx, uint64_t m, uint64_t d, uint32_t* dst) {
  const uint64_t total = m * d;
  for (uint64_t e = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const uint64_t r = e / d, c = e % d;
    dst[static_cast<uint64_t>(idx[r]) * d + c] = src[e];
  }
}
TESSERA_EXPORT_BLOCK(tah_scatter_rows_b32, tah::kBlock)

#define TESSERA_TAH_COPY(T, sfx)                                                                    \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kBlock)                                            \
      tah_copy_##sfx(const T* src, uint64_t src_off, T* dst, uint64_t dst_off, uint64_t n) {        \
    for (uint64_t e = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;          \
         e += static_cast<uint64_t>(gridDim.x) * blockDim.x) {                                      \
      dst[dst_off + e] = src[src_off + e];                                                          \
    }                                                                                               \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(tah_copy_##sfx, tah::kBlock)

TESSERA_TAH_COPY(uint8_t, b8)
TESSERA_TAH_COPY(uint16_t, b16)
TESSERA_TAH_COPY(uint32_t, b32)

#define TESSERA_TAH_NEXT_INPUT(E, sfx)                                                              \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kTopkBlock) tah_next_input_##sfx(                  \
      const float* cum, uint64_t vocab, int k, const E::Bits* emb, int d, float* out,               \
      uint32_t* out_ids, float* out_w) {                                                            \
    tah::next_input_kernel<E>(cum, vocab, k, emb, d, out, out_ids, out_w);                          \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(tah_next_input_##sfx, tah::kTopkBlock)

TESSERA_TAH_NEXT_INPUT(F32, f32)
TESSERA_TAH_NEXT_INPUT(F16, f16)
TESSERA_TAH_NEXT_INPUT(BF16, bf16)

// cum[i] += logits[i] (f32).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(tah::kBlock)
    tah_accumulate_f32(float* cum, const float* logits, uint64_t n) {
  for (uint64_t e = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    cum[e] = cum[e] + logits[e];
  }
}
TESSERA_EXPORT_BLOCK(tah_accumulate_f32, tah::kBlock)
