// dtype.cuh: f32 / f16 / bf16 element access, portable across nvcc, clang-HIP and host g++.
//
// Half-precision values are carried as their raw 16-bit patterns (uint16_t) and converted with
// integer arithmetic. That keeps the kernels free of cuda_fp16.h / hip_bf16.h, whose types differ
// between toolkits, and makes bit-pattern comparisons (what "changed" means in the checkpoint
// kernels) explicit. The conversions are exact: every f16 and bf16 value is an f32 value.
#pragma once

namespace tessera {

__device__ __forceinline__ float bf16_to_f32(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

// IEEE binary16 -> binary32, including subnormals, infinities and NaN payloads.
__device__ __forceinline__ float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {
    // Subnormal: normalise the mantissa.
    exp = 113u;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  return __uint_as_float(bits);
}

// Element traits: Bits is the storage type; to_f32 widens exactly.
struct F32 {
  using Bits = uint32_t;
  static __device__ __forceinline__ float to_f32(uint32_t b) { return __uint_as_float(b); }
};
struct F16 {
  using Bits = uint16_t;
  static __device__ __forceinline__ float to_f32(uint16_t b) { return f16_to_f32(b); }
};
struct BF16 {
  using Bits = uint16_t;
  static __device__ __forceinline__ float to_f32(uint16_t b) { return bf16_to_f32(b); }
};

}  // namespace tessera

namespace tessera {

// f32 -> bf16 with round-to-nearest-even, in integer code (bit-identical to the `half` crate's
// bf16::from_f32): NaN stays NaN (top mantissa bits kept, quiet bit set), overflow rounds to inf.
__device__ __forceinline__ uint16_t f32_to_bf16_rne(float f) {
  const uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  const uint32_t round_bit = 0x00008000u;
  if ((x & round_bit) != 0 && (x & (3u * round_bit - 1u)) != 0) return static_cast<uint16_t>((x >> 16) + 1u);
  return static_cast<uint16_t>(x >> 16);
}

// f32 -> IEEE binary16 with round-to-nearest-even, including subnormals, overflow to inf and NaN
// payloads (bit-identical to the `half` crate's f16::from_f32).
__device__ __forceinline__ uint16_t f32_to_f16_rne(float f) {
  const uint32_t x = __float_as_uint(f);
  const uint32_t sign = x & 0x80000000u;
  const uint32_t exp = x & 0x7f800000u;
  uint32_t man = x & 0x007fffffu;
  if (exp == 0x7f800000u) {
    const uint32_t nan_bit = man == 0 ? 0u : 0x0200u;
    return static_cast<uint16_t>((sign >> 16) | 0x7c00u | nan_bit | (man >> 13));
  }
  const uint32_t half_sign = sign >> 16;
  const int half_exp = static_cast<int>(exp >> 23) - 127 + 15;
  if (half_exp >= 0x1f) return static_cast<uint16_t>(half_sign | 0x7c00u);
  if (half_exp <= 0) {
    if (14 - half_exp > 24) return static_cast<uint16_t>(half_sign);
    man |= 0x00800000u;
    uint32_t half_man = man >> (14 - half_exp);
    const uint32_t round_bit = 1u << (13 - half_exp);
    if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) ++half_man;
    return static_cast<uint16_t>(half_sign | half_man);
  }
  const uint32_t h = half_sign | (static_cast<uint32_t>(half_exp) << 10) | (man >> 13);
  const uint32_t round_bit = 0x00001000u;
  if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) return static_cast<uint16_t>(h + 1u);
  return static_cast<uint16_t>(h);
}

// Narrowing with round-to-nearest-even, per element type (the inverse direction of E::to_f32).
template <typename E> struct FromF32;
template <> struct FromF32<F32> {
  static __device__ __forceinline__ uint32_t rne(float v) { return __float_as_uint(v); }
};
template <> struct FromF32<F16> {
  static __device__ __forceinline__ uint16_t rne(float v) { return f32_to_f16_rne(v); }
};
template <> struct FromF32<BF16> {
  static __device__ __forceinline__ uint16_t rne(float v) { return f32_to_bf16_rne(v); }
};

}  // namespace tessera
