// ckpt/bitmask.cu: bitmask sparsification of checkpoint deltas (BitSnap's first stage).
//
// sparsify(base, new, tau) -> (mask, values):
//   mask   one bit per element, LSB-first in 32-bit words: bit (i % 32) of word (i / 32) is set
//          where element i changed;
//   values the new values of the changed elements, packed in element order.
// "Changed" with tau == 0 means the bit patterns differ (exact for NaN payloads and -0.0). With
// tau > 0 a change with |new - base| <= tau (computed in f32) is dropped: the bit stays clear.
//
// The work is split into passes so that every output position is known before it is written:
//   1. bitmask_mask_<dt>      compare the block's elements with coalesced 16-byte loads, stage
//                             the mask bits in shared memory; one thread per mask word writes
//                             it, and a per-block popcount.
//   2. bitmask_scan_counts    one block: exclusive scan of the per-block counts into 64-bit
//                             offsets (offsets[nblocks] = total), so lengths >= 2^32 work.
//   3. bitmask_compact_<dt>   one thread per word: block-level exclusive scan of the word
//                             popcounts gives each thread its 64-bit output offset.
// densify(base, mask, values) uses bitmask_popcount (pass 1 over an existing mask), the same scan,
// then bitmask_densify_<dt>.
//
// All kernels take blockDim.x == kBlock (a multiple of both warp widths) and 1-D grids.
#include "../common/tessera.cuh"

namespace tessera {
namespace bitmask {

constexpr int kBlock = 256;
constexpr int kWordBits = 32;

// Number of elements of word w that exist (0..32).
__device__ __forceinline__ uint32_t word_len(uint64_t w, uint64_t n) {
  const uint64_t first = w * kWordBits;
  if (first >= n) return 0;
  const uint64_t rest = n - first;
  return rest >= kWordBits ? kWordBits : static_cast<uint32_t>(rest);
}

// Load the 32 elements of a full word with 16-byte loads (the word starts 64- or 128-byte
// aligned because buffers are 256-byte aligned and a word is 32 elements).
template <typename Bits>
__device__ __forceinline__ void load_word(const Bits* __restrict__ p, Bits (&out)[kWordBits]) {
  constexpr int kPerVec = 16 / sizeof(Bits);
  const uint4* v = reinterpret_cast<const uint4*>(p);
#pragma unroll
  for (int i = 0; i < kWordBits / kPerVec; ++i) {
    const uint4 q = v[i];
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < kPerVec; ++j) {
      if (sizeof(Bits) == 4) {
        out[i * kPerVec + j] = static_cast<Bits>(words[j]);
      } else {
        out[i * kPerVec + j] = static_cast<Bits>(words[j / 2] >> (16 * (j % 2)));
      }
    }
  }
}

template <typename Bits>
__device__ __forceinline__ void store_word(Bits* __restrict__ p, const Bits (&in)[kWordBits]) {
  constexpr int kPerVec = 16 / sizeof(Bits);
  uint4* v = reinterpret_cast<uint4*>(p);
#pragma unroll
  for (int i = 0; i < kWordBits / kPerVec; ++i) {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (sizeof(Bits) == 4) {
        words[k] = static_cast<uint32_t>(in[i * kPerVec + k]);
      } else {
        words[k] = static_cast<uint32_t>(in[i * kPerVec + 2 * k]) |
                   (static_cast<uint32_t>(in[i * kPerVec + 2 * k + 1]) << 16);
      }
    }
    v[i] = make_uint4(words[0], words[1], words[2], words[3]);
  }
}

template <typename E>
__device__ __forceinline__ bool changed(typename E::Bits b, typename E::Bits x, float tau) {
  if (b == x) return false;
  if (tau > 0.0f) {
    const float d = fabsf(E::to_f32(x) - E::to_f32(b));
    if (d <= tau) return false;  // NaN compares false: a NaN change is always kept
  }
  return true;
}

// Pass 1. The block's 8192 elements are read as 16-byte vectors by consecutive threads (vector v
// by thread v % 256), so each warp-wide load touches one contiguous span; every vector yields
// 4 (f32) or 8 (f16/bf16) mask bits, staged as bytes of the block's mask tile in shared memory
// (little-endian byte order, as on every target). Each thread then owns one mask word.
template <typename E>
__device__ __forceinline__ void mask_kernel(const typename E::Bits* __restrict__ base,
                                            const typename E::Bits* __restrict__ neu, uint64_t n,
                                            float tau, uint32_t* __restrict__ mask,
                                            uint32_t* __restrict__ block_counts) {
  using Bits = typename E::Bits;
  constexpr int kVecElems = 16 / sizeof(Bits);  // 8 or 4 elements per 16-byte vector
  constexpr int kVecsPerByte = 8 / kVecElems;    // 1 or 2 vectors make one mask byte
  constexpr int kTileBytes = kBlock * kWordBits / 8;
  __shared__ uint32_t tile[kBlock];
  uint8_t* tile_bytes = reinterpret_cast<uint8_t*>(tile);
  const uint64_t block_first = static_cast<uint64_t>(blockIdx.x) * kBlock * kWordBits;
  for (int byte = threadIdx.x; byte < kTileBytes; byte += blockDim.x) {
    uint32_t bits = 0;
#pragma unroll
    for (int k = 0; k < kVecsPerByte; ++k) {
      const uint64_t first = block_first + (static_cast<uint64_t>(byte) * kVecsPerByte + k) * kVecElems;
      if (first + kVecElems <= n) {
        const uint4 vb = *reinterpret_cast<const uint4*>(base + first);
        const uint4 vx = *reinterpret_cast<const uint4*>(neu + first);
        const uint32_t wb[4] = {vb.x, vb.y, vb.z, vb.w};
        const uint32_t wx[4] = {vx.x, vx.y, vx.z, vx.w};
#pragma unroll
        for (int j = 0; j < kVecElems; ++j) {
          const int sh = sizeof(Bits) == 4 ? 0 : 16 * (j % 2);
          const int q = sizeof(Bits) == 4 ? j : j / 2;
          const Bits b = static_cast<Bits>(wb[q] >> sh);
          const Bits x = static_cast<Bits>(wx[q] >> sh);
          bits |= static_cast<uint32_t>(changed<E>(b, x, tau)) << (k * kVecElems + j);
        }
      } else {
        for (int j = 0; j < kVecElems; ++j) {
          if (first + j < n) {
            bits |= static_cast<uint32_t>(changed<E>(base[first + j], neu[first + j], tau)) << (k * kVecElems + j);
          }
        }
      }
    }
    tile_bytes[byte] = static_cast<uint8_t>(bits);
  }
  __syncthreads();
  const uint64_t w = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint32_t bits = tile[threadIdx.x];
  if (word_len(w, n) > 0) mask[w] = bits;
  uint32_t block_total;
  block_exclusive_scan<uint32_t>(static_cast<uint32_t>(__popc(bits)), &block_total);
  if (threadIdx.x == 0) block_counts[blockIdx.x] = block_total;
}

template <typename E>
__device__ __forceinline__ void compact_kernel(const typename E::Bits* __restrict__ neu,
                                               const uint32_t* __restrict__ mask,
                                               const uint64_t* __restrict__ block_offsets, uint64_t n,
                                               typename E::Bits* __restrict__ values) {
  using Bits = typename E::Bits;
  const uint64_t w = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint32_t len = word_len(w, n);
  const uint32_t bits = len > 0 ? mask[w] : 0u;
  uint32_t block_total;
  const uint32_t rank = block_exclusive_scan<uint32_t>(static_cast<uint32_t>(__popc(bits)), &block_total);
  if (bits == 0) return;
  uint64_t out = block_offsets[blockIdx.x] + rank;
  if (len == kWordBits) {
    Bits x[kWordBits];
    load_word(neu + w * kWordBits, x);
#pragma unroll
    for (int j = 0; j < kWordBits; ++j) {
      if (bits & (1u << j)) values[out++] = x[j];
    }
  } else {
    for (uint32_t j = 0; j < len; ++j) {
      if (bits & (1u << j)) values[out++] = neu[w * kWordBits + j];
    }
  }
}

template <typename E>
__device__ __forceinline__ void densify_kernel(const typename E::Bits* __restrict__ base,
                                               const uint32_t* __restrict__ mask,
                                               const typename E::Bits* __restrict__ values,
                                               const uint64_t* __restrict__ block_offsets, uint64_t n,
                                               typename E::Bits* __restrict__ out) {
  using Bits = typename E::Bits;
  const uint64_t w = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint32_t len = word_len(w, n);
  const uint32_t bits = len > 0 ? mask[w] : 0u;
  uint32_t block_total;
  const uint32_t rank = block_exclusive_scan<uint32_t>(static_cast<uint32_t>(__popc(bits)), &block_total);
  if (len == 0) return;
  uint64_t src = block_offsets[blockIdx.x] + rank;
  if (len == kWordBits) {
    Bits x[kWordBits];
    load_word(base + w * kWordBits, x);
#pragma unroll
    for (int j = 0; j < kWordBits; ++j) {
      if (bits & (1u << j)) x[j] = values[src++];
    }
    store_word(out + w * kWordBits, x);
  } else {
    for (uint32_t j = 0; j < len; ++j) {
      out[w * kWordBits + j] = (bits & (1u << j)) ? values[src++] : base[w * kWordBits + j];
    }
  }
}

}  // namespace bitmask
}  // namespace tessera

using namespace tessera;
using namespace tessera::bitmask;

#define TESSERA_BITMASK_INSTANCES(E, sfx)                                                          \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock) bitmask_mask_##sfx(                            \
      const E::Bits* base, const E::Bits* neu, uint64_t n, float tau, uint32_t* mask,              \
      uint32_t* block_counts) {                                                                     \
    mask_kernel<E>(base, neu, n, tau, mask, block_counts);                                         \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(bitmask_mask_##sfx, kBlock)                                                               \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock) bitmask_compact_##sfx(                         \
      const E::Bits* neu, const uint32_t* mask, const uint64_t* block_offsets, uint64_t n,         \
      E::Bits* values) {                                                                            \
    compact_kernel<E>(neu, mask, block_offsets, n, values);                                        \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(bitmask_compact_##sfx, kBlock)                                                            \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock) bitmask_densify_##sfx(                         \
      const E::Bits* base, const uint32_t* mask, const E::Bits* values,                            \
      const uint64_t* block_offsets, uint64_t n, E::Bits* out) {                                   \
    densify_kernel<E>(base, mask, values, block_offsets, n, out);                                  \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(bitmask_densify_##sfx, kBlock)

TESSERA_BITMASK_INSTANCES(F32, f32)
TESSERA_BITMASK_INSTANCES(F16, f16)
TESSERA_BITMASK_INSTANCES(BF16, bf16)

// Per-block popcount of an existing mask of n elements (bits past n in the last word are
// ignored here; the op rejects such masks before launching).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    bitmask_popcount(const uint32_t* mask, uint64_t n, uint32_t* block_counts) {
  const uint64_t w = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const uint32_t len = word_len(w, n);
  uint32_t bits = len > 0 ? mask[w] : 0u;
  if (len > 0 && len < kWordBits) bits &= (1u << len) - 1u;
  uint32_t block_total;
  block_exclusive_scan<uint32_t>(static_cast<uint32_t>(__popc(bits)), &block_total);
  if (threadIdx.x == 0) block_counts[blockIdx.x] = block_total;
}
TESSERA_EXPORT_BLOCK(bitmask_popcount, kBlock)

// Exclusive scan of nblocks 32-bit counts into nblocks + 1 64-bit offsets; offsets[nblocks] is
// the total. Launched as a single block of kBlock threads.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(kBlock)
    bitmask_scan_counts(const uint32_t* counts, uint64_t nblocks, uint64_t* offsets) {
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
TESSERA_EXPORT_BLOCK(bitmask_scan_counts, kBlock)
