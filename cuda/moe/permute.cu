// moe/permute.cu: moe.permute (token rows into the aligned expert order) and moe.combine (the
// weighted sum back to token order).
//
// Permute, two launches over the output of moe.align (sorted_token_ids [len], expert_ids
// [nblocks], num_tokens_post_padded [1]) for n = T*k flat entries, E experts, block size B:
//   1. moe_permute_index   grid-stride over len: positions[s] = p for every entry s =
//                          sorted_token_ids[p] in [0, n) (the inverse permutation; nothing else is
//                          written there, so a bijection writes each word once); the entries that
//                          are neither such an index (before num_tokens_post_padded) nor the
//                          sentinel n are counted. Grid-stride over the blocks: expert_ids must be
//                          in [0, E) and non-decreasing before num_tokens_post_padded / B and -1
//                          after, num_tokens_post_padded a multiple of B in [0, len]; faults
//                          counted. offsets[e] = B * (the first block whose expert is >= e; the
//                          number of used blocks when none) for e <= E, a binary search (safe on
//                          any input), so offsets[E] = num_tokens_post_padded.
//   2. moe_permute_rows_w  one block per output row (grid-stride): rows[p, :] = x[s / k, :] for a
//                          valid entry s, zero for the sentinel (padding and tail) and for bad
//                          entries, copied in words of w bits (w the widest of 64/32/16/8 bits
//                          dividing the row's bytes). Then grid-stride over the flat entries i:
//                          positions[i] must be in [0, len) with sorted_token_ids[positions[i]]
//                          == i, else counted as missing.
//   Status: [0] = n, [1] = E, [2] = G1 (launch 1's grid), then per block of launch 1 the triple
//   (bad entries, valid entries, expert_ids faults), then per block of launch 2 the missing
//   entries. The op's check sums them: the input is an alignment iff there are no bad entries, no
//   faults, no missing entries and exactly n valid entries (then positions is a bijection).
//
// Combine (moe_combine_<in>_<out>): one block per token (grid-stride), threads over the d
//   columns: y[t, c] = sum over slot = 0..k-1, in slot order, of w[t, slot] * expert_out[
//   positions[t*k + slot], c] in f32, plus (first, when given) residual[t, c], rounded to the
//   output type (round to nearest even). No
//   atomics: every output element is written by one thread, so the result is the same on every
//   run. A position outside [0, rows) contributes nothing and is counted: status[b] per block.
#include "../common/tessera.cuh"

namespace tessera {
namespace moeperm {

constexpr int kBlock = 256;

// A block-wide sum of one count per thread (every thread calls it).
__device__ __forceinline__ uint32_t block_count(uint32_t v) {
  uint32_t total;
  block_exclusive_scan<uint32_t>(v, &total);
  return total;
}

// The first block b in [0, nvb) with expert_ids[b] >= e (nvb when none).
__device__ __forceinline__ uint32_t first_block_of(const int32_t* expert_ids, uint32_t nvb, int32_t e) {
  uint32_t lo = 0, hi = nvb;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (expert_ids[mid] < e) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename W>
__device__ __forceinline__ void permute_rows(const W* __restrict__ x, const int32_t* __restrict__ sorted,
                                             const int32_t* __restrict__ positions, uint32_t len, uint32_t n,
                                             uint32_t k, uint64_t words, W* __restrict__ rows,
                                             int32_t* __restrict__ status, uint32_t status_off) {
  for (uint32_t p = blockIdx.x; p < len; p += gridDim.x) {
    const int32_t s = sorted[p];
    const bool ok = s >= 0 && static_cast<uint32_t>(s) < n;
    const W* src = ok ? x + static_cast<uint64_t>(static_cast<uint32_t>(s) / k) * words : nullptr;
    W* dst = rows + static_cast<uint64_t>(p) * words;
    for (uint64_t c = threadIdx.x; c < words; c += blockDim.x) dst[c] = ok ? src[c] : W(0);
  }
  uint32_t missing = 0;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<uint64_t>(gridDim.x) * blockDim.x) {
    const int32_t pos = positions[i];
    const bool ok = pos >= 0 && static_cast<uint32_t>(pos) < len && sorted[pos] == static_cast<int32_t>(i);
    if (!ok) ++missing;
  }
  missing = block_count(missing);
  if (threadIdx.x == 0) status[status_off + blockIdx.x] = static_cast<int32_t>(missing);
}

template <typename EI, typename EO>
__device__ __forceinline__ void combine(const typename EI::Bits* __restrict__ expert_out, uint64_t rows,
                                        const int32_t* __restrict__ positions, const float* __restrict__ weights,
                                        uint32_t tokens, uint32_t k, uint32_t d,
                                        const typename EO::Bits* __restrict__ residual,
                                        typename EO::Bits* __restrict__ y, int32_t* __restrict__ status) {
  uint32_t bad = 0;
  for (uint32_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int32_t* pos = positions + static_cast<uint64_t>(t) * k;
    const float* w = weights + static_cast<uint64_t>(t) * k;
    if (threadIdx.x == 0) {
      for (uint32_t s = 0; s < k; ++s) {
        if (!(pos[s] >= 0 && static_cast<uint64_t>(pos[s]) < rows)) ++bad;
      }
    }
    for (uint32_t c = threadIdx.x; c < d; c += blockDim.x) {
      const uint64_t at = static_cast<uint64_t>(t) * d + c;
      float acc = residual != nullptr ? EO::to_f32(residual[at]) : 0.0f;
      for (uint32_t s = 0; s < k; ++s) {
        const int32_t p = pos[s];
        if (p >= 0 && static_cast<uint64_t>(p) < rows) {
          acc += w[s] * EI::to_f32(expert_out[static_cast<uint64_t>(p) * d + c]);
        }
      }
      y[at] = FromF32<EO>::rne(acc);
    }
  }
  bad = block_count(bad);
  if (threadIdx.x == 0) status[blockIdx.x] = static_cast<int32_t>(bad);
}

}  // namespace moeperm
}  // namespace tessera

using namespace tessera;
using namespace tessera::moeperm;

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    moe_permute_index(const int32_t* __restrict__ sorted, uint32_t len, uint32_t n,
                      const int32_t* __restrict__ expert_ids, uint32_t nblocks, const int32_t* __restrict__ ntpp,
                      uint32_t num_experts, uint32_t block_size, int32_t* __restrict__ positions,
                      int32_t* __restrict__ offsets, int32_t* __restrict__ status) {
  const uint32_t g = blockIdx.x * blockDim.x + threadIdx.x;
  const uint32_t gstride = gridDim.x * blockDim.x;
  const int32_t total = ntpp[0];
  const bool total_ok = total >= 0 && static_cast<uint32_t>(total) <= len &&
                        static_cast<uint32_t>(total) % block_size == 0;
  // Used blocks, clamped so that a bad total never indexes out of range.
  uint32_t nvb = total > 0 ? static_cast<uint32_t>(total) / block_size : 0;
  if (nvb > nblocks) nvb = nblocks;
  const uint32_t used = nvb * block_size;
  uint32_t bad = 0, valid = 0, faults = 0;
  for (uint32_t p = g; p < len; p += gstride) {
    const int32_t s = sorted[p];
    if (s >= 0 && static_cast<uint32_t>(s) < n && p < used) {
      positions[s] = static_cast<int32_t>(p);
      ++valid;
    } else if (s != static_cast<int32_t>(n)) {
      ++bad;
    }
  }
  for (uint32_t b = g; b < nblocks; b += gstride) {
    const int32_t e = expert_ids[b];
    if (b < nvb) {
      if (e < 0 || static_cast<uint32_t>(e) >= num_experts || (b > 0 && expert_ids[b - 1] > e)) ++faults;
    } else if (e != -1) {
      ++faults;
    }
  }
  if (g == 0 && !total_ok) ++faults;
  for (uint32_t e = g; e <= num_experts; e += gstride) {
    offsets[e] = static_cast<int32_t>(first_block_of(expert_ids, nvb, static_cast<int32_t>(e)) * block_size);
  }
  bad = block_count(bad);
  valid = block_count(valid);
  faults = block_count(faults);
  if (threadIdx.x == 0) {
    if (blockIdx.x == 0) {
      status[0] = static_cast<int32_t>(n);
      status[1] = static_cast<int32_t>(num_experts);
      status[2] = static_cast<int32_t>(gridDim.x);
    }
    status[3 + 3 * blockIdx.x + 0] = static_cast<int32_t>(bad);
    status[3 + 3 * blockIdx.x + 1] = static_cast<int32_t>(valid);
    status[3 + 3 * blockIdx.x + 2] = static_cast<int32_t>(faults);
  }
}
TESSERA_EXPORT_BLOCK(moe_permute_index, kBlock)

#define TESSERA_MOE_PERMUTE_ROWS(W, sfx)                                                            \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(moeperm::kBlock) moe_permute_rows_##sfx(                \
      const W* x, const int32_t* sorted, const int32_t* positions, uint32_t len, uint32_t n,        \
      uint32_t k, uint64_t words, W* rows, int32_t* status, uint32_t status_off) {                  \
    moeperm::permute_rows<W>(x, sorted, positions, len, n, k, words, rows, status, status_off);     \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(moe_permute_rows_##sfx, moeperm::kBlock)

TESSERA_MOE_PERMUTE_ROWS(uint8_t, b8)
TESSERA_MOE_PERMUTE_ROWS(uint16_t, b16)
TESSERA_MOE_PERMUTE_ROWS(uint32_t, b32)
TESSERA_MOE_PERMUTE_ROWS(uint64_t, b64)

#define TESSERA_MOE_COMBINE(EI, EO, ei, eo)                                                         \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(moeperm::kBlock) moe_combine_##ei##_##eo(               \
      const EI::Bits* expert_out, uint64_t rows, const int32_t* positions, const float* weights,    \
      uint32_t tokens, uint32_t k, uint32_t d, const EO::Bits* residual, EO::Bits* y,               \
      int32_t* status) {                                                                            \
    moeperm::combine<EI, EO>(expert_out, rows, positions, weights, tokens, k, d, residual, y,       \
                             status);                                                               \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(moe_combine_##ei##_##eo, moeperm::kBlock)

TESSERA_MOE_COMBINE(F32, F32, f32, f32)
TESSERA_MOE_COMBINE(F32, BF16, f32, bf16)
TESSERA_MOE_COMBINE(F32, F16, f32, f16)
TESSERA_MOE_COMBINE(BF16, F32, bf16, f32)
TESSERA_MOE_COMBINE(BF16, BF16, bf16, bf16)
TESSERA_MOE_COMBINE(BF16, F16, bf16, f16)
TESSERA_MOE_COMBINE(F16, F32, f16, f32)
TESSERA_MOE_COMBINE(F16, BF16, f16, bf16)
TESSERA_MOE_COMBINE(F16, F16, f16, f16)
