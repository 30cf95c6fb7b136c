// ckpt/codec.cu: BitSnap value codec kernels (lossless zigzag deltas, per-block bit packing,
// 1-D k-means, dequantisation). The gather of changed values reuses ckpt/bitmask.cu.
//
// Packed layout (src/ops/codec.rs, `Packed`): values in blocks of kPack = 256; block j has width
// w_j in 0..=32 (the bit length of its largest value) and starts at 32-bit word
// offsets[j] = 8 * sum(w[..j]). Value k of a block occupies bits [k*w, (k+1)*w) of the block's
// LSB-first bit stream. The last block takes ceil(cnt * w / 32) words, so the total is
// offsets[nb - 1] + ceil(cnt_last * w_last / 32).
//
// Delta value: zz = zigzag((ord(new) - ord(base)) mod 2^W) with W the element width (16 or 32)
// and ord(b) = b with the sign bit set for a positive pattern, ~b for a negative one (monotonic in
// the float value; -0.0 and +0.0 are neighbours). zz < 2^W, so widths stay <= W.
//
// Kernels (all blocks are kBlock = 256 threads, 1-D grids):
//   codec_widths_delta_<dt>, codec_widths_idx   one block per pack block: block max -> widths[j]
//   codec_scan_widths                           one block: widths -> 64-bit word offsets, total
//   codec_pack_delta_<dt>, codec_pack_idx       one thread per OUTPUT word (gathers its bits)
//   codec_unpack_delta_<dt>                     one thread per value (reads <= 2 words)
//   codec_dequantize_<dt>                       one thread per value
//   codec_delta_f32_<dt>, codec_to_f32_<dt>     elementwise
//   codec_minmax, codec_kmeans_sample, codec_kmeans_assign, codec_kmeans_reduce   k-means
#include "../common/tessera.cuh"

namespace tessera {
namespace codec {

constexpr int kBlock = 256;
constexpr int kPack = 256;
constexpr int kScanPerThread = 16;
constexpr int kMaxK = 256;

// Max over the block (unsigned); every thread must call it and gets the result.
__device__ __forceinline__ uint32_t block_max(uint32_t v) {
  __shared__ uint32_t warp_max[kMaxBlockWarps];
  const int lane = lane_id();
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int nwarps = static_cast<int>(blockDim.x) / kWarpSize;
#pragma unroll
  for (int m = kWarpSize / 2; m > 0; m >>= 1) {
    const uint32_t o = shfl_xor(v, m);
    v = o > v ? o : v;
  }
  if (lane == 0) warp_max[warp] = v;
  __syncthreads();
  uint32_t r = 0;
  for (int w = 0; w < nwarps; ++w) r = warp_max[w] > r ? warp_max[w] : r;
  __syncthreads();
  return r;
}

__device__ __forceinline__ uint32_t bit_width(uint32_t v) {
  return v == 0 ? 0u : 32u - static_cast<uint32_t>(__clz(static_cast<int>(v)));
}

// ---- ord / zigzag ---------------------------------------------------------------------------
template <typename Bits> struct Ord;
template <> struct Ord<uint32_t> {
  static __device__ __forceinline__ uint32_t ord(uint32_t b) {
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  }
  static __device__ __forceinline__ uint32_t unord(uint32_t o) {
    return (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
  }
  static __device__ __forceinline__ uint32_t zz(uint32_t b, uint32_t x) {
    const int32_t d = static_cast<int32_t>(ord(x) - ord(b));
    return (static_cast<uint32_t>(d) << 1) ^ static_cast<uint32_t>(d >> 31);
  }
  static __device__ __forceinline__ uint32_t unzz(uint32_t b, uint32_t z) {
    const uint32_t d = (z >> 1) ^ (0u - (z & 1u));
    return unord(ord(b) + d);
  }
};
template <> struct Ord<uint16_t> {
  static __device__ __forceinline__ uint32_t ord(uint16_t b) {
    const uint32_t v = b;
    return (v & 0x8000u) ? (~v & 0xffffu) : (v | 0x8000u);
  }
  static __device__ __forceinline__ uint16_t unord(uint32_t o) {
    return static_cast<uint16_t>((o & 0x8000u) ? (o & 0x7fffu) : (~o & 0xffffu));
  }
  static __device__ __forceinline__ uint32_t zz(uint16_t b, uint16_t x) {
    const int32_t d = static_cast<int16_t>(static_cast<uint16_t>(ord(x) - ord(b)));
    return ((static_cast<uint32_t>(d) << 1) ^ static_cast<uint32_t>(d >> 31)) & 0xffffu;
  }
  static __device__ __forceinline__ uint16_t unzz(uint16_t b, uint32_t z) {
    const uint32_t d = (z >> 1) ^ (0u - (z & 1u));
    return unord((ord(b) + d) & 0xffffu);
  }
};

// Value sources for the packer.
template <typename E>
struct DeltaSrc {
  const typename E::Bits* base;
  const typename E::Bits* neu;
  __device__ __forceinline__ uint32_t operator()(uint64_t i) const {
    return Ord<typename E::Bits>::zz(base[i], neu[i]);
  }
};
struct IdxSrc {
  const uint8_t* idx;
  __device__ __forceinline__ uint32_t operator()(uint64_t i) const { return idx[i]; }
};

__device__ __forceinline__ uint32_t block_count(uint64_t j, uint64_t n) {
  const uint64_t rest = n - j * kPack;
  return rest >= kPack ? kPack : static_cast<uint32_t>(rest);
}

// Pass 1: one block per pack block (blockDim == kPack). widths[j] = fixed if fixed != 0, else the
// bit width of the block's largest value; stats[0] = max over the grid of the actual widths.
template <typename Src>
__device__ __forceinline__ void widths_kernel(Src src, uint64_t n, uint32_t fixed, uint8_t* widths,
                                              uint32_t* stats) {
  const uint64_t j = blockIdx.x;
  const uint64_t i = j * kPack + threadIdx.x;
  const uint32_t v = i < n ? src(i) : 0u;
  const uint32_t w = block_max(bit_width(v));
  if (threadIdx.x == 0) {
    widths[j] = static_cast<uint8_t>(fixed != 0 ? fixed : w);
    atomicMax(stats, w);
  }
}

// Pass 2: one thread per output word t of pack block j = blockIdx.x.
template <typename Src>
__device__ __forceinline__ void pack_kernel(Src src, uint64_t n, const uint8_t* widths,
                                            const uint64_t* offsets, uint32_t* words) {
  const uint64_t j = blockIdx.x;
  const uint32_t t = threadIdx.x;
  const uint32_t w = widths[j];
  const uint32_t cnt = block_count(j, n);
  const uint32_t nwords = (cnt * w + 31u) / 32u;
  if (t >= nwords) return;
  const uint32_t bit0 = 32u * t;
  const uint32_t k0 = bit0 / w;
  uint32_t k1 = (bit0 + 31u) / w;
  if (k1 > cnt - 1) k1 = cnt - 1;
  uint32_t word = 0;
  for (uint32_t k = k0; k <= k1; ++k) {
    const uint32_t v = src(j * kPack + k);
    const int pos = static_cast<int>(k * w) - static_cast<int>(bit0);
    if (pos >= 0) {
      word |= v << pos;
    } else {
      word |= v >> (-pos);
    }
  }
  words[offsets[j] + t] = word;
}

// The NaN every arithmetic NaN result is replaced by (positive, quiet, no payload).
__device__ __forceinline__ float canonical_nan() { return __uint_as_float(0x7fc00000u); }
__device__ __forceinline__ bool is_nan(float v) { return (__float_as_uint(v) & 0x7fffffffu) > 0x7f800000u; }

// Value i of a packed stream.
__device__ __forceinline__ uint32_t unpack_one(const uint32_t* words, const uint8_t* widths,
                                               const uint64_t* offsets, uint64_t i) {
  const uint64_t j = i / kPack;
  const uint32_t k = static_cast<uint32_t>(i % kPack);
  const uint32_t w = widths[j];
  if (w == 0) return 0u;
  const uint32_t bit = k * w;
  const uint64_t a = offsets[j] + bit / 32u;
  const uint32_t s = bit % 32u;
  uint32_t v = words[a] >> s;
  if (s + w > 32u) v |= words[a + 1] << (32u - s);
  if (w < 32u) v &= (1u << w) - 1u;
  return v;
}

template <typename E>
__device__ __forceinline__ void unpack_delta_kernel(const typename E::Bits* base, const uint32_t* words,
                                                    const uint8_t* widths, const uint64_t* offsets,
                                                    uint64_t n, typename E::Bits* out) {
  const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = Ord<typename E::Bits>::unzz(base[i], unpack_one(words, widths, offsets, i));
}

template <typename E>
__device__ __forceinline__ void dequantize_kernel(const uint32_t* words, const uint8_t* widths,
                                                  const uint64_t* offsets, uint64_t n,
                                                  const float* centroids, uint32_t k,
                                                  const typename E::Bits* base, uint32_t has_base,
                                                  typename E::Bits* out) {
  __shared__ float sc[kMaxK];
  for (uint32_t c = threadIdx.x; c < k; c += blockDim.x) sc[c] = centroids[c];
  __syncthreads();
  const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = sc[unpack_one(words, widths, offsets, i)];
  if (has_base) v = E::to_f32(base[i]) + v;
  // NaN payloads after arithmetic differ between GPUs and CPUs: every NaN result is canonical.
  out[i] = FromF32<E>::rne(is_nan(v) ? canonical_nan() : v);
}

// Exact fixed-point image of x: round-half-even(x * 2^scale_exp) as a two's-complement 64-bit
// integer, from the bit pattern (identical on every executor and in src/reference/codec.rs).
// The host chooses scale_exp so that |result| < 2^(62 - bitlen(n)) for every value.
__device__ __forceinline__ unsigned long long to_fixed(float x, int scale_exp) {
  const uint32_t b = __float_as_uint(x);
  const uint32_t be = (b >> 23) & 0xffu;
  uint32_t m = b & 0x7fffffu;
  int e;
  if (be == 0) {
    e = -149;
  } else {
    m |= 0x800000u;
    e = static_cast<int>(be) - 150;
  }
  const int s = e + scale_exp;
  unsigned long long q;
  if (m == 0) {
    q = 0;
  } else if (s >= 0) {
    q = static_cast<unsigned long long>(m) << s;
  } else {
    const int r = -s;
    if (r > 25) {
      q = 0;
    } else {
      uint32_t qq = m >> r;
      const uint32_t rem = m & ((1u << r) - 1u);
      const uint32_t half = 1u << (r - 1);
      if (rem > half || (rem == half && (qq & 1u))) ++qq;
      q = qq;
    }
  }
  return (b >> 31) ? (0ull - q) : q;
}

}  // namespace codec
}  // namespace tessera

using namespace tessera;
// No `using namespace tessera::codec`: every .cu shares one SIMT translation unit, and
// bitmask.cu opens its own namespace (both define kBlock).

#define TESSERA_CODEC_INSTANCES(E, sfx)                                                            \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock) codec_widths_delta_##sfx(                      \
      const E::Bits* base, const E::Bits* neu, uint64_t n, uint8_t* widths, uint32_t* stats) {     \
    codec::widths_kernel(codec::DeltaSrc<E>{base, neu}, n, 0u, widths, stats);                                   \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(codec_widths_delta_##sfx, codec::kBlock)                                                         \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock) codec_pack_delta_##sfx(                        \
      const E::Bits* base, const E::Bits* neu, uint64_t n, const uint8_t* widths,                  \
      const uint64_t* offsets, uint32_t* words) {                                                   \
    codec::pack_kernel(codec::DeltaSrc<E>{base, neu}, n, widths, offsets, words);                                \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(codec_pack_delta_##sfx, codec::kBlock)                                                           \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock) codec_unpack_delta_##sfx(                      \
      const E::Bits* base, const uint32_t* words, const uint8_t* widths, const uint64_t* offsets,  \
      uint64_t n, E::Bits* out) {                                                                   \
    codec::unpack_delta_kernel<E>(base, words, widths, offsets, n, out);                                  \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(codec_unpack_delta_##sfx, codec::kBlock)                                                         \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock) codec_dequantize_##sfx(                        \
      const uint32_t* words, const uint8_t* widths, const uint64_t* offsets, uint64_t n,           \
      const float* centroids, uint32_t k, const E::Bits* base, uint32_t has_base, E::Bits* out) {  \
    codec::dequantize_kernel<E>(words, widths, offsets, n, centroids, k, base, has_base, out);            \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(codec_dequantize_##sfx, codec::kBlock)                                                           \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock) codec_delta_f32_##sfx(                         \
      const E::Bits* base, const E::Bits* neu, uint64_t n, float* out) {                           \
    const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;              \
    if (i < n) {                                                                                   \
      const float d = E::to_f32(neu[i]) - E::to_f32(base[i]);                                      \
      out[i] = codec::is_nan(d) ? codec::canonical_nan() : d;                                            \
    }                                                                                              \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(codec_delta_f32_##sfx, codec::kBlock)                                                            \
  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock) codec_to_f32_##sfx(                            \
      const E::Bits* x, uint64_t n, float* out) {                                                  \
    const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;              \
    if (i < n) out[i] = E::to_f32(x[i]);                                                           \
  }                                                                                                 \
  TESSERA_EXPORT_BLOCK(codec_to_f32_##sfx, codec::kBlock)

TESSERA_CODEC_INSTANCES(F32, f32)
TESSERA_CODEC_INSTANCES(F16, f16)
TESSERA_CODEC_INSTANCES(BF16, bf16)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock)
    codec_widths_idx(const uint8_t* idx, uint64_t n, uint32_t fixed, uint8_t* widths, uint32_t* stats) {
  codec::widths_kernel(codec::IdxSrc{idx}, n, fixed, widths, stats);
}
TESSERA_EXPORT_BLOCK(codec_widths_idx, codec::kBlock)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock)
    codec_pack_idx(const uint8_t* idx, uint64_t n, const uint8_t* widths, const uint64_t* offsets,
                   uint32_t* words) {
  codec::pack_kernel(codec::IdxSrc{idx}, n, widths, offsets, words);
}
TESSERA_EXPORT_BLOCK(codec_pack_idx, codec::kBlock)

// widths (nb entries, for `count` values) -> offsets[j] = 8 * sum(widths[..j]) words, and
// offsets[nb] = the total number of words; max_width[0] = the largest width. One block.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock)
    codec_scan_widths(const uint8_t* widths, uint64_t nb, uint64_t count, uint64_t* offsets,
                      uint32_t* max_width) {
  uint64_t carry = 0;
  uint32_t wmax = 0;
  const uint64_t tile = static_cast<uint64_t>(blockDim.x) * codec::kScanPerThread;
  for (uint64_t start = 0; start < nb; start += tile) {
    const uint64_t first = start + static_cast<uint64_t>(threadIdx.x) * codec::kScanPerThread;
    uint32_t sum = 0;
    for (int q = 0; q < codec::kScanPerThread; ++q) {
      const uint64_t i = first + q;
      const uint32_t w = i < nb ? widths[i] : 0u;
      sum += w;
      wmax = w > wmax ? w : wmax;
    }
    uint32_t total;
    uint32_t run = block_exclusive_scan<uint32_t>(sum, &total);
    for (int q = 0; q < codec::kScanPerThread; ++q) {
      const uint64_t i = first + q;
      if (i < nb) {
        offsets[i] = 8ull * (carry + run);
        run += widths[i];
      }
    }
    carry += total;
  }
  const uint32_t m = codec::block_max(wmax);
  if (threadIdx.x == 0) {
    max_width[0] = m;
    if (nb > 0) {
      const uint64_t wl = widths[nb - 1];
      const uint64_t cnt = count - (nb - 1) * codec::kPack;
      offsets[nb] = 8ull * (carry - wl) + (cnt * wl + 31u) / 32u;
    } else {
      offsets[0] = 0;
    }
  }
}
TESSERA_EXPORT_BLOCK(codec_scan_widths, codec::kBlock)

// Per-block min, max (over finite values) and count of non-finite values; grid-stride.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock)
    codec_minmax(const float* x, uint64_t n, float* bmin, float* bmax, uint32_t* bnonfinite) {
  __shared__ float smin[codec::kBlock];
  __shared__ float smax[codec::kBlock];
  __shared__ uint32_t sbad[codec::kBlock];
  float lo = __uint_as_float(0x7f800000u);
  float hi = __uint_as_float(0xff800000u);
  uint32_t bad = 0;
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = x[i];
    if ((__float_as_uint(v) & 0x7f800000u) == 0x7f800000u) {
      ++bad;
    } else {
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
  }
  smin[threadIdx.x] = lo;
  smax[threadIdx.x] = hi;
  sbad[threadIdx.x] = bad;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float a = smin[threadIdx.x + s];
      const float b = smax[threadIdx.x + s];
      smin[threadIdx.x] = a < smin[threadIdx.x] ? a : smin[threadIdx.x];
      smax[threadIdx.x] = b > smax[threadIdx.x] ? b : smax[threadIdx.x];
      sbad[threadIdx.x] += sbad[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    bmin[blockIdx.x] = smin[0];
    bmax[blockIdx.x] = smax[0];
    bnonfinite[blockIdx.x] = sbad[0];
  }
}
TESSERA_EXPORT_BLOCK(codec_minmax, codec::kBlock)

// out[i] = x[(i * n) / s] for i < s: the evenly strided sample k-means initialises from.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock)
    codec_kmeans_sample(const float* x, uint64_t n, uint64_t s, float* out) {
  const uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < s) out[i] = x[(i * n) / s];
}
TESSERA_EXPORT_BLOCK(codec_kmeans_sample, codec::kBlock)

// Assignment: idx[i] = number of midpoints strictly below x[i] (ties go to the lower centroid),
// by a branchless binary search over the k - 1 sorted midpoints (k a power of two). With
// accumulate != 0, also per-block fixed-point sums and counts per centroid (exact integers, so
// the result does not depend on the order of the atomics): psums/pcounts[block * k + c].
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock)
    codec_kmeans_assign(const float* x, uint64_t n, const float* mids, uint32_t k, int32_t scale_exp,
                        uint32_t accumulate, uint8_t* idx, unsigned long long* psums,
                        uint32_t* pcounts) {
  __shared__ float smids[codec::kMaxK];
  __shared__ unsigned long long ssum[codec::kMaxK];
  __shared__ uint32_t scnt[codec::kMaxK];
  for (uint32_t c = threadIdx.x; c < k; c += blockDim.x) {
    smids[c] = c + 1 < k ? mids[c] : 0.0f;
    ssum[c] = 0;
    scnt[c] = 0;
  }
  __syncthreads();
  const uint64_t stride = static_cast<uint64_t>(gridDim.x) * blockDim.x;
  for (uint64_t i = static_cast<uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = x[i];
    uint32_t pos = 0;
    for (uint32_t step = k / 2; step >= 1; step >>= 1) {
      if (smids[pos + step - 1] < v) pos += step;
    }
    idx[i] = static_cast<uint8_t>(pos);
    if (accumulate) {
      atomicAdd(&ssum[pos], codec::to_fixed(v, scale_exp));
      atomicAdd(&scnt[pos], 1u);
    }
  }
  __syncthreads();
  if (accumulate) {
    for (uint32_t c = threadIdx.x; c < k; c += blockDim.x) {
      psums[static_cast<uint64_t>(blockIdx.x) * k + c] = ssum[c];
      pcounts[static_cast<uint64_t>(blockIdx.x) * k + c] = scnt[c];
    }
  }
}
TESSERA_EXPORT_BLOCK(codec_kmeans_assign, codec::kBlock)

// sums[c] = sum over blocks of psums[b * k + c] (wrapping 64-bit: exact two's-complement), and
// counts likewise. One block; thread c owns centroid c.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(codec::kBlock)
    codec_kmeans_reduce(const unsigned long long* psums, const uint32_t* pcounts, uint64_t nblocks,
                        uint32_t k, unsigned long long* sums, unsigned long long* counts) {
  for (uint32_t c = threadIdx.x; c < k; c += blockDim.x) {
    unsigned long long s = 0, m = 0;
    for (uint64_t b = 0; b < nblocks; ++b) {
      s += psums[b * k + c];
      m += pcounts[b * k + c];
    }
    sums[c] = s;
    counts[c] = m;
  }
}
TESSERA_EXPORT_BLOCK(codec_kmeans_reduce, codec::kBlock)
