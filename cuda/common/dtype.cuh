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
