// c2c/view.cuh: a KV cache seen as rows of (head, d), shared by c2c/project.cu (the fused
// projector) and c2c/unfused.cu (its unfused baseline). Element (row m, head, d) is at
//   (s / per_block) * block_stride + (s % per_block) * pos_stride + head * head_stride + d,
// s = slots[m]: contiguous [B, H, L, D] (per_block L), vLLM-style paged [blocks, 16, H, D] and
// token-major [T, H, D] all fit. Each cache holds bf16 or f16 (`kind`), widened exactly and
// narrowed with round to nearest even.
#pragma once

#include "../common/tessera.cuh"

namespace tessera {
namespace c2c {

constexpr uint32_t kKindBf16 = 0, kKindF16 = 1;

struct View {
  const int32_t* slots;
  int32_t per_block;
  uint64_t block_stride, pos_stride, head_stride;
  int32_t dim;
  uint32_t kind;
  __device__ __forceinline__ size_t at(uint64_t row, uint64_t head, uint64_t d) const {
    const uint64_t s = static_cast<uint64_t>(slots[row]);
    const uint64_t pb = static_cast<uint64_t>(per_block);
    return static_cast<size_t>((s / pb) * block_stride + (s % pb) * pos_stride + head * head_stride + d);
  }
};

__device__ __forceinline__ float widen(uint16_t h, uint32_t kind) {
  return kind == kKindBf16 ? bf16_to_f32(h) : f16_to_f32(h);
}
__device__ __forceinline__ uint16_t narrow(float x, uint32_t kind) {
  return kind == kKindBf16 ? f32_to_bf16_rne(x) : f32_to_f16_rne(x);
}

}  // namespace c2c
}  // namespace tessera
