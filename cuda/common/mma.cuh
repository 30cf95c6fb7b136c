// mma.cuh: tensor-core fragments, portably (namespace tessera::mma).
//
//   CUDA (warp of 32):  mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 and
//                       ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16
//   HIP (wave64):       v_mfma_f32_32x32x8bf16_1k / v_mfma_f32_32x32x8f16 (gfx90a, gfx942)
//
// Each op has up to three implementations, chosen at compile time:
//   * the hardware instruction: inline PTX on nvcc sm_80+ (ldmatrix: sm_75+); the clang builtin
//     on HIP gfx90a/gfx94x;
//   * on the host SIMT runtime (TESSERA_SIMT), an emulation: every lane deposits its fragment
//     through the runtime's generic warp collective, the product is computed once for the whole
//     warp and each lane gets back exactly the elements the documented layout gives it. So a
//     kernel's fragment indexing (which lane holds which element) is tested on the CPU;
//   * a portable path built from warp shuffles (`*_portable`), valid on every target, used where
//     the instruction does not exist and callable directly to compare against it.
//
// Layouts (PTX ISA, "Warp-level matrix fragment mma.m16n8k16" for .f16/.bf16 and "ldmatrix"):
//   groupID g = lane >> 2, threadID_in_group t = lane & 3.
//   A (16x16, row): 4 x b32 per lane, element i (0..7) in reg i/2, low half for even i:
//       row = g + 8 * ((i >> 1) & 1),  col = 2t + (i & 1) + 8 * (i >> 2)
//       i.e. reg0 (g, 2t..2t+1), reg1 (g+8, 2t..), reg2 (g, 2t+8..), reg3 (g+8, 2t+8..).
//   B (16x8, col): 2 x b32 per lane, element i (0..3) in reg i/2:
//       k = 2t + (i & 1) + 8 * (i >> 1),  n = g
//   C/D (16x8 f32): 4 floats per lane, element i (0..3):
//       row = g + 8 * (i >> 1),  col = 2t + (i & 1)
//   ldmatrix .m8n8 .b16: for matrix j (0..x-1) lanes 8j..8j+7 supply the addresses of its rows 0..7
//       (16 contiguous bytes each, 16-byte aligned, shared memory); lane l receives in reg j the
//       elements (row l/4, cols 2(l%4), 2(l%4)+1) of matrix j, low half = lower column. With .trans
//       it receives (rows 2(l%4), 2(l%4)+1; col l/4) of the stored matrix, i.e. of its transpose.
//
// MFMA 32x32x8 (AMD Instinct MI200 / CDNA3 ISA, "matrix fused multiply add" operand layouts, as the
// AMD matrix instruction calculator prints them for v_mfma_f32_32x32x8bf16_1k and
// v_mfma_f32_32x32x8f16; the same mapping is in AMD's "AMD matrix cores" lab note):
//   A (32x8): lane = i + 32 * (k / 4), element k % 4 of the lane's 4 halves
//   B (8x32): lane = j + 32 * (k / 4), element k % 4
//   C/D (32x32 f32): lane = j + 32 * ((i / 4) % 2), element e = 4 * (i / 8) + i % 4,
//       i.e. lane L holds column j = L % 32, element e holds row 8 * (e / 4) + 4 * (L / 32) + e % 4.
//
// Arithmetic of the emulation and of the portable paths: every product of two halves is exact in
// f32 (bf16: 8-bit significands, f16: 11-bit; the product needs at most 22 bits), and the sum is
// taken in f32 in the order d = ((c + a0*b0) + a1*b1) + ... over k ascending. The hardware's internal
// order and rounding are not documented, so GPU results may differ from it in the last bits; the
// emulation and the portable path agree bit for bit. Products that overflow or underflow f32
// (possible only for bf16) are not exact.
#pragma once

namespace tessera {
namespace mma {

__device__ __forceinline__ uint32_t pack_b16x2(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}
__device__ __forceinline__ uint16_t lo_b16(uint32_t r) { return static_cast<uint16_t>(r & 0xffffu); }
__device__ __forceinline__ uint16_t hi_b16(uint32_t r) { return static_cast<uint16_t>(r >> 16); }
// Element `half` (0 low, 1 high) of a packed pair.
__device__ __forceinline__ uint16_t b16_at(uint32_t r, int half) { return static_cast<uint16_t>(r >> (16 * half)); }

#if !TESSERA_TARGET_HIP
// =====================================================================================================
// CUDA: mma.sync m16n8k16 and ldmatrix (warps of 32 lanes)
// =====================================================================================================
static_assert(kWarpSize == 32, "mma.sync fragments are defined for 32-lane warps");

struct FragA {  // 16x16 A operand, row-major: 8 halves as 4 x b32
  uint32_t x[4];
};
struct FragB {  // 16x8 B operand, "col": 4 halves as 2 x b32
  uint32_t x[2];
};
struct FragC {  // 16x8 f32 accumulator
  float x[4];
};

// Coordinates of element i of a lane's fragment (see the layout table above).
__device__ __forceinline__ int a_row(int lane, int i) { return (lane >> 2) + 8 * ((i >> 1) & 1); }
__device__ __forceinline__ int a_col(int lane, int i) { return 2 * (lane & 3) + (i & 1) + 8 * (i >> 2); }
__device__ __forceinline__ int b_k(int lane, int i) { return 2 * (lane & 3) + (i & 1) + 8 * (i >> 1); }
__device__ __forceinline__ int b_n(int lane, int) { return lane >> 2; }
__device__ __forceinline__ int c_row(int lane, int i) { return (lane >> 2) + 8 * (i >> 1); }
__device__ __forceinline__ int c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

__device__ __forceinline__ void zero(FragC& c) { c.x[0] = c.x[1] = c.x[2] = c.x[3] = 0.0f; }

// ---- direct-indexing fragment loads and stores (any memory space) -----------------------------------
// A[m][k] at a[m * lda + k]
__device__ __forceinline__ void load_a_row_major(FragA& f, const uint16_t* a, int lda) {
  const int lane = lane_id();
#pragma unroll
  for (int r = 0; r < 4; ++r)
    f.x[r] = pack_b16x2(a[a_row(lane, 2 * r) * lda + a_col(lane, 2 * r)],
                        a[a_row(lane, 2 * r + 1) * lda + a_col(lane, 2 * r + 1)]);
}
// B[k][n] at b[n * ldb + k] (B^T row-major, e.g. K rows of an attention tile)
__device__ __forceinline__ void load_b_col_major(FragB& f, const uint16_t* b, int ldb) {
  const int lane = lane_id();
#pragma unroll
  for (int r = 0; r < 2; ++r)
    f.x[r] = pack_b16x2(b[b_n(lane, 2 * r) * ldb + b_k(lane, 2 * r)],
                        b[b_n(lane, 2 * r + 1) * ldb + b_k(lane, 2 * r + 1)]);
}
// B[k][n] at b[k * ldb + n] (e.g. V rows of an attention tile)
__device__ __forceinline__ void load_b_row_major(FragB& f, const uint16_t* b, int ldb) {
  const int lane = lane_id();
#pragma unroll
  for (int r = 0; r < 2; ++r)
    f.x[r] = pack_b16x2(b[b_k(lane, 2 * r) * ldb + b_n(lane, 2 * r)],
                        b[b_k(lane, 2 * r + 1) * ldb + b_n(lane, 2 * r + 1)]);
}
// C[m][n] at c[m * ldc + n]
__device__ __forceinline__ void load_c(FragC& f, const float* c, int ldc) {
  const int lane = lane_id();
#pragma unroll
  for (int i = 0; i < 4; ++i) f.x[i] = c[c_row(lane, i) * ldc + c_col(lane, i)];
}
__device__ __forceinline__ void store_c(float* c, int ldc, const FragC& f) {
  const int lane = lane_id();
#pragma unroll
  for (int i = 0; i < 4; ++i) c[c_row(lane, i) * ldc + c_col(lane, i)] = f.x[i];
}

// ---- portable paths (warp shuffles; every target with 32-lane warps) ---------------------------------
// d = a * b + c, same arithmetic as the emulation (see the top of the file). d may alias c.
template <typename E>
__device__ __forceinline__ void mma_m16n8k16_portable(FragC& d, const FragA& a, const FragB& b, const FragC& c) {
  const int lane = lane_id();
  const int g = lane >> 2, t = lane & 3;
  float acc[4] = {c.x[0], c.x[1], c.x[2], c.x[3]};
#pragma unroll
  for (int kp = 0; kp < 8; ++kp) {  // k = 2kp, 2kp+1
    const int ra = 2 * (kp >> 2), rb = kp >> 2;
    const uint32_t a_lo = shfl_idx(a.x[ra], g * 4 + (kp & 3));       // row g
    const uint32_t a_hi = shfl_idx(a.x[ra + 1], g * 4 + (kp & 3));   // row g + 8
    const uint32_t b0 = shfl_idx(b.x[rb], (2 * t) * 4 + (kp & 3));      // col 2t
    const uint32_t b1 = shfl_idx(b.x[rb], (2 * t + 1) * 4 + (kp & 3));  // col 2t + 1
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float al = E::to_f32(b16_at(a_lo, h)), ah = E::to_f32(b16_at(a_hi, h));
      const float x0 = E::to_f32(b16_at(b0, h)), x1 = E::to_f32(b16_at(b1, h));
      acc[0] = acc[0] + al * x0;
      acc[1] = acc[1] + al * x1;
      acc[2] = acc[2] + ah * x0;
      acc[3] = acc[3] + ah * x1;
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) d.x[i] = acc[i];
}

// ldmatrix from `row` (this lane's row address; see the layout table) by shuffling addresses.
template <int X, bool Trans>
__device__ __forceinline__ void ldmatrix_portable(uint32_t* r, const void* row) {
  const int lane = lane_id();
  const unsigned long long p = reinterpret_cast<unsigned long long>(row);
#pragma unroll
  for (int j = 0; j < X; ++j) {
    if (!Trans) {
      const unsigned long long src = shfl_idx(p, j * 8 + (lane >> 2));
      r[j] = *reinterpret_cast<const uint32_t*>(reinterpret_cast<const char*>(src) + 4 * (lane & 3));
    } else {
      const unsigned long long s0 = shfl_idx(p, j * 8 + 2 * (lane & 3));
      const unsigned long long s1 = shfl_idx(p, j * 8 + 2 * (lane & 3) + 1);
      r[j] = pack_b16x2(reinterpret_cast<const uint16_t*>(s0)[lane >> 2],
                        reinterpret_cast<const uint16_t*>(s1)[lane >> 2]);
    }
  }
}

#if defined(TESSERA_SIMT)
// ---- host SIMT emulation -------------------------------------------------------------------------------
namespace simt_emu {
using ::tessera_simt::WarpSlot;

struct MmaIn {
  FragA a;
  FragB b;
  FragC c;
};

template <typename E>
void op_mma_m16n8k16(WarpSlot* const* s, unsigned long long group, int) {
  if (group != 0xffffffffull) {
    for (unsigned long long m = group; m; m &= m - 1) s[__builtin_ctzll(m)]->result = 1;
    return;
  }
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const MmaIn& in = *static_cast<const MmaIn*>(s[l]->in);
    for (int i = 0; i < 8; ++i) A[a_row(l, i)][a_col(l, i)] = E::to_f32(b16_at(in.a.x[i >> 1], i & 1));
    for (int i = 0; i < 4; ++i) B[b_k(l, i)][b_n(l, i)] = E::to_f32(b16_at(in.b.x[i >> 1], i & 1));
    for (int i = 0; i < 4; ++i) C[c_row(l, i)][c_col(l, i)] = in.c.x[i];
  }
  float D[16][8];
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      float acc = C[m][n];
      for (int k = 0; k < 16; ++k) acc = acc + A[m][k] * B[k][n];
      D[m][n] = acc;
    }
  }
  for (int l = 0; l < 32; ++l) {
    FragC& out = *static_cast<FragC*>(s[l]->out);
    for (int i = 0; i < 4; ++i) out.x[i] = D[c_row(l, i)][c_col(l, i)];
    s[l]->result = 0;
  }
}

// value = this lane's row address, a = number of matrices, b = 1 for .trans; out = uint32_t[a].
// result: 0, 1 not all 32 lanes, 2 a row address that supplies data is not 16-byte aligned.
void op_ldmatrix(WarpSlot* const* s, unsigned long long group, int) {
  const int first = __builtin_ctzll(group);
  const int x = static_cast<int>(s[first]->a);
  const bool trans = s[first]->b != 0;
  uint64_t err = group != 0xffffffffull ? 1 : 0;
  for (int l = 0; l < 8 * x && !err; ++l)
    if (s[l]->value % 16 != 0) err = 2;
  if (err) {
    for (unsigned long long m = group; m; m &= m - 1) s[__builtin_ctzll(m)]->result = err;
    return;
  }
  for (int l = 0; l < 8 * x; ++l)  // each row-address lane reads 16 bytes of shared memory
    ::tessera_simt::note_shared_read(reinterpret_cast<const void*>(s[l]->value), 16, s[l]->tid);
  for (int l = 0; l < 32; ++l) {
    uint32_t* out = static_cast<uint32_t*>(s[l]->out);
    for (int j = 0; j < x; ++j) {
      if (!trans) {
        const auto* row = reinterpret_cast<const uint16_t*>(s[j * 8 + (l >> 2)]->value);
        out[j] = pack_b16x2(row[2 * (l & 3)], row[2 * (l & 3) + 1]);
      } else {
        const auto* r0 = reinterpret_cast<const uint16_t*>(s[j * 8 + 2 * (l & 3)]->value);
        const auto* r1 = reinterpret_cast<const uint16_t*>(s[j * 8 + 2 * (l & 3) + 1]->value);
        out[j] = pack_b16x2(r0[l >> 2], r1[l >> 2]);
      }
    }
    s[l]->result = 0;
  }
}

template <typename E>
inline void mma(FragC& d, const FragA& a, const FragB& b, const FragC& c, const char* name, const char* file,
                int line) {
  MmaIn in{a, b, c};
  FragC out;
  WarpSlot s{};
  s.in = &in;
  s.out = &out;
  ::tessera_simt::warp_collective(&op_mma_m16n8k16<E>, name, ::tessera_simt::kFullMask, s, file, line);
  if (s.result != 0)
    throw ::tessera_simt::Trap(std::string(name) + " at " + ::tessera_simt::short_file(file) + ":" +
                               std::to_string(line) + " needs all 32 lanes of the warp");
  d = out;
}

template <int X, bool Trans>
inline void ldmatrix(uint32_t* r, const void* row, const char* file, int line) {
  static const char* const kName = Trans ? (X == 4 ? "ldmatrix.x4.trans" : X == 2 ? "ldmatrix.x2.trans" : "ldmatrix.x1.trans")
                                         : (X == 4 ? "ldmatrix.x4" : X == 2 ? "ldmatrix.x2" : "ldmatrix.x1");
  uint32_t out[4];
  WarpSlot s{};
  s.value = reinterpret_cast<uint64_t>(row);
  s.a = X;
  s.b = Trans ? 1 : 0;
  s.out = out;
  ::tessera_simt::warp_collective(&op_ldmatrix, kName, ::tessera_simt::kFullMask, s, file, line);
  if (s.result != 0)
    throw ::tessera_simt::Trap(std::string(kName) + " at " + ::tessera_simt::short_file(file) + ":" +
                               std::to_string(line) +
                               (s.result == 1 ? " needs all 32 lanes of the warp"
                                              : ": a row address is not 16-byte aligned"));
  for (int j = 0; j < X; ++j) r[j] = out[j];
}
}  // namespace simt_emu

// The call site is recorded through GCC's __builtin_FILE/__builtin_LINE default arguments, so a
// divergence report names the kernel's line, not this header's.
#define TESSERA_MMA_SITE , const char *file = __builtin_FILE(), int line = __builtin_LINE()
#define TESSERA_MMA_SITE_ARGS file, line
#else
#define TESSERA_MMA_SITE
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define TESSERA_MMA_PTX 1
#else
#define TESSERA_MMA_PTX 0
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 750
#define TESSERA_LDMATRIX_PTX 1
#else
#define TESSERA_LDMATRIX_PTX 0
#endif

// ---- mma.sync m16n8k16: d = a * b + c (f32 accumulate); d may alias c --------------------------------
__device__ __forceinline__ void mma_m16n8k16_bf16(FragC& d, const FragA& a, const FragB& b,
                                                  const FragC& c TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::mma<BF16>(d, a, b, c, "mma.sync.m16n8k16.bf16", TESSERA_MMA_SITE_ARGS);
#elif TESSERA_MMA_PTX
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "f"(c.x[0]), "f"(c.x[1]),
        "f"(c.x[2]), "f"(c.x[3]));
#else
  mma_m16n8k16_portable<BF16>(d, a, b, c);
#endif
}

__device__ __forceinline__ void mma_m16n8k16_f16(FragC& d, const FragA& a, const FragB& b,
                                                 const FragC& c TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::mma<F16>(d, a, b, c, "mma.sync.m16n8k16.f16", TESSERA_MMA_SITE_ARGS);
#elif TESSERA_MMA_PTX
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d.x[0]), "=f"(d.x[1]), "=f"(d.x[2]), "=f"(d.x[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]), "f"(c.x[0]), "f"(c.x[1]),
        "f"(c.x[2]), "f"(c.x[3]));
#else
  mma_m16n8k16_portable<F16>(d, a, b, c);
#endif
}

// Element-type dispatch: E is tessera::BF16 or tessera::F16.
template <typename E> struct Mma16816;
template <> struct Mma16816<BF16> {
  __device__ __forceinline__ static void run(FragC& d, const FragA& a, const FragB& b,
                                             const FragC& c TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
    mma_m16n8k16_bf16(d, a, b, c, TESSERA_MMA_SITE_ARGS);
#else
    mma_m16n8k16_bf16(d, a, b, c);
#endif
  }
};
template <> struct Mma16816<F16> {
  __device__ __forceinline__ static void run(FragC& d, const FragA& a, const FragB& b,
                                             const FragC& c TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
    mma_m16n8k16_f16(d, a, b, c, TESSERA_MMA_SITE_ARGS);
#else
    mma_m16n8k16_f16(d, a, b, c);
#endif
  }
};

// ---- ldmatrix (shared memory; all 32 lanes) ----------------------------------------------------------
#if TESSERA_LDMATRIX_PTX
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
#endif

// x4: lanes 8j..8j+7 give the rows of matrix j; r[j] is this lane's part of matrix j.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::ldmatrix<4, false>(r, row, TESSERA_MMA_SITE_ARGS);
#elif TESSERA_LDMATRIX_PTX
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
#else
  ldmatrix_portable<4, false>(r, row);
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::ldmatrix<4, true>(r, row, TESSERA_MMA_SITE_ARGS);
#elif TESSERA_LDMATRIX_PTX
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
#else
  ldmatrix_portable<4, true>(r, row);
#endif
}
// x2: lanes 0..15 give the rows (the other lanes' addresses are ignored but must be passed).
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::ldmatrix<2, false>(r, row, TESSERA_MMA_SITE_ARGS);
#elif TESSERA_LDMATRIX_PTX
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
#else
  ldmatrix_portable<2, false>(r, row);
#endif
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row TESSERA_MMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::ldmatrix<2, true>(r, row, TESSERA_MMA_SITE_ARGS);
#elif TESSERA_LDMATRIX_PTX
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
#else
  ldmatrix_portable<2, true>(r, row);
#endif
}

// ---- fragment loads through ldmatrix (tile in shared memory, 16-byte aligned rows) -----------------
// A[m][k] at a[m * lda + k], lda * 2 bytes a multiple of 16: one x4 (matrices: rows 0-7/8-15 x
// cols 0-7/8-15 in the order the A registers need them).
__device__ __forceinline__ void ldmatrix_a(FragA& f, const uint16_t* a, int lda TESSERA_MMA_SITE) {
  const int lane = lane_id();
  const uint16_t* row = a + (lane & 15) * lda + 8 * (lane >> 4);
#if defined(TESSERA_SIMT)
  ldmatrix_x4(f.x, row, TESSERA_MMA_SITE_ARGS);
#else
  ldmatrix_x4(f.x, row);
#endif
}
// B[k][n] at b[n * ldb + k] (B^T row-major): one x2, lanes 0..15 give rows n = lane % 8 at k = 8 * (lane / 8).
__device__ __forceinline__ void ldmatrix_b_col_major(FragB& f, const uint16_t* b, int ldb TESSERA_MMA_SITE) {
  const int lane = lane_id();
  const uint16_t* row = b + (lane & 7) * ldb + 8 * ((lane >> 3) & 1);
#if defined(TESSERA_SIMT)
  ldmatrix_x2(f.x, row, TESSERA_MMA_SITE_ARGS);
#else
  ldmatrix_x2(f.x, row);
#endif
}
// B[k][n] at b[k * ldb + n]: one x2.trans, lanes 0..15 give rows k = lane % 16.
__device__ __forceinline__ void ldmatrix_b_row_major(FragB& f, const uint16_t* b, int ldb TESSERA_MMA_SITE) {
  const int lane = lane_id();
  const uint16_t* row = b + (lane & 15) * ldb;
#if defined(TESSERA_SIMT)
  ldmatrix_x2_trans(f.x, row, TESSERA_MMA_SITE_ARGS);
#else
  ldmatrix_x2_trans(f.x, row);
#endif
}

#undef TESSERA_MMA_PTX
#undef TESSERA_LDMATRIX_PTX
#undef TESSERA_MMA_SITE
#undef TESSERA_MMA_SITE_ARGS

#else  // TESSERA_TARGET_HIP
// =====================================================================================================
// HIP: MFMA 32x32x8 (wave64)
// =====================================================================================================
static_assert(kWarpSize == 64, "MFMA fragments are defined for 64-lane wavefronts");

struct MfmaFragAB {  // A (32x8) or B (8x32) operand: 4 halves per lane, element k % 4
  uint16_t x[4];
};
struct MfmaFragC {  // 32x32 f32 accumulator: 16 floats per lane
  float x[16];
};

// Coordinates (see the layout table at the top).
__device__ __forceinline__ int mfma_a_row(int lane) { return lane & 31; }        // A: i
__device__ __forceinline__ int mfma_ab_k(int lane, int e) { return 4 * (lane >> 5) + e; }  // A, B: k
__device__ __forceinline__ int mfma_b_col(int lane) { return lane & 31; }        // B: j
__device__ __forceinline__ int mfma_c_row(int lane, int e) { return 8 * (e >> 2) + 4 * (lane >> 5) + (e & 3); }
__device__ __forceinline__ int mfma_c_col(int lane) { return lane & 31; }

__device__ __forceinline__ void zero(MfmaFragC& c) {
#pragma unroll
  for (int e = 0; e < 16; ++e) c.x[e] = 0.0f;
}

// A[i][k] at a[i * lda + k]
__device__ __forceinline__ void mfma_load_a_row_major(MfmaFragAB& f, const uint16_t* a, int lda) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < 4; ++e) f.x[e] = a[mfma_a_row(lane) * lda + mfma_ab_k(lane, e)];
}
// B[k][j] at b[k * ldb + j]
__device__ __forceinline__ void mfma_load_b_row_major(MfmaFragAB& f, const uint16_t* b, int ldb) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < 4; ++e) f.x[e] = b[mfma_ab_k(lane, e) * ldb + mfma_b_col(lane)];
}
// B[k][j] at b[j * ldb + k] (B^T row-major)
__device__ __forceinline__ void mfma_load_b_col_major(MfmaFragAB& f, const uint16_t* b, int ldb) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < 4; ++e) f.x[e] = b[mfma_b_col(lane) * ldb + mfma_ab_k(lane, e)];
}
__device__ __forceinline__ void mfma_load_c(MfmaFragC& f, const float* c, int ldc) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < 16; ++e) f.x[e] = c[mfma_c_row(lane, e) * ldc + mfma_c_col(lane)];
}
__device__ __forceinline__ void mfma_store_c(float* c, int ldc, const MfmaFragC& f) {
  const int lane = lane_id();
#pragma unroll
  for (int e = 0; e < 16; ++e) c[mfma_c_row(lane, e) * ldc + mfma_c_col(lane)] = f.x[e];
}

// Portable (shuffles, any 64-lane target): d = a * b + c with the emulation's arithmetic.
template <typename E>
__device__ __forceinline__ void mfma_32x32x8_portable(MfmaFragC& d, const MfmaFragAB& a, const MfmaFragAB& b,
                                                      const MfmaFragC& c) {
  const int lane = lane_id();
  const int j = lane & 31;
  const uint32_t a01 = pack_b16x2(a.x[0], a.x[1]), a23 = pack_b16x2(a.x[2], a.x[3]);
  const uint32_t b01 = pack_b16x2(b.x[0], b.x[1]), b23 = pack_b16x2(b.x[2], b.x[3]);
  float bk[8];  // B[k][j], k = 0..7, from lanes j (k < 4) and j + 32 (k >= 4)
  {
    const uint32_t lo01 = shfl_idx(b01, j), lo23 = shfl_idx(b23, j);
    const uint32_t hi01 = shfl_idx(b01, j + 32), hi23 = shfl_idx(b23, j + 32);
    const uint32_t w[4] = {lo01, lo23, hi01, hi23};
#pragma unroll
    for (int k = 0; k < 8; ++k) bk[k] = E::to_f32(b16_at(w[k >> 1], k & 1));
  }
  float out[16];
#pragma unroll
  for (int e = 0; e < 16; ++e) {
    // row i of this element: A[i][k] from lanes i (k < 4) and i + 32 (k >= 4)
    const int i = 8 * (e >> 2) + 4 * (lane >> 5) + (e & 3);
    const uint32_t w[4] = {shfl_idx(a01, i), shfl_idx(a23, i), shfl_idx(a01, i + 32), shfl_idx(a23, i + 32)};
    float acc = c.x[e];
#pragma unroll
    for (int k = 0; k < 8; ++k) acc = acc + E::to_f32(b16_at(w[k >> 1], k & 1)) * bk[k];
    out[e] = acc;
  }
#pragma unroll
  for (int e = 0; e < 16; ++e) d.x[e] = out[e];
}

#if defined(TESSERA_SIMT)
namespace simt_emu {
using ::tessera_simt::WarpSlot;

struct MfmaIn {
  MfmaFragAB a, b;
  MfmaFragC c;
};

template <typename E>
void op_mfma_32x32x8(WarpSlot* const* s, unsigned long long group, int) {
  if (group != ~0ull) {
    for (unsigned long long m = group; m; m &= m - 1) s[__builtin_ctzll(m)]->result = 1;
    return;
  }
  float A[32][8], B[8][32], C[32][32];
  for (int l = 0; l < 64; ++l) {
    const MfmaIn& in = *static_cast<const MfmaIn*>(s[l]->in);
    for (int e = 0; e < 4; ++e) {
      A[mfma_a_row(l)][mfma_ab_k(l, e)] = E::to_f32(in.a.x[e]);
      B[mfma_ab_k(l, e)][mfma_b_col(l)] = E::to_f32(in.b.x[e]);
    }
    for (int e = 0; e < 16; ++e) C[mfma_c_row(l, e)][mfma_c_col(l)] = in.c.x[e];
  }
  for (int l = 0; l < 64; ++l) {
    MfmaFragC& out = *static_cast<MfmaFragC*>(s[l]->out);
    const int j = mfma_c_col(l);
    for (int e = 0; e < 16; ++e) {
      const int i = mfma_c_row(l, e);
      float acc = C[i][j];
      for (int k = 0; k < 8; ++k) acc = acc + A[i][k] * B[k][j];
      out.x[e] = acc;
    }
    s[l]->result = 0;
  }
}

template <typename E>
inline void mfma(MfmaFragC& d, const MfmaFragAB& a, const MfmaFragAB& b, const MfmaFragC& c, const char* name,
                 const char* file, int line) {
  MfmaIn in{a, b, c};
  MfmaFragC out;
  WarpSlot s{};
  s.in = &in;
  s.out = &out;
  ::tessera_simt::warp_collective(&op_mfma_32x32x8<E>, name, ::tessera_simt::kFullMask, s, file, line);
  if (s.result != 0)
    throw ::tessera_simt::Trap(std::string(name) + " at " + ::tessera_simt::short_file(file) + ":" +
                               std::to_string(line) + " needs all 64 lanes of the wavefront");
  d = out;
}
}  // namespace simt_emu
#define TESSERA_MFMA_SITE , const char *file = __builtin_FILE(), int line = __builtin_LINE()
#else
#define TESSERA_MFMA_SITE
#endif

// The builtins exist on gfx90a (CDNA2) and gfx940/941/942 (CDNA3); compiled only in the device pass.
#if defined(__HIP_DEVICE_COMPILE__) && \
    (defined(__gfx90a__) || defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__))
#define TESSERA_MFMA_BUILTIN 1
// The builtins' operand types (GCC-style vectors, as clang's builtin table declares them).
typedef short mfma_i16x4 __attribute__((__vector_size__(4 * sizeof(short))));
typedef _Float16 mfma_f16x4 __attribute__((__vector_size__(4 * sizeof(_Float16))));
typedef float mfma_f32x16 __attribute__((__vector_size__(16 * sizeof(float))));
#else
#define TESSERA_MFMA_BUILTIN 0
#endif

// d = a * b + c for one 32x32x8 block (bf16 inputs, f32 accumulate); d may alias c.
__device__ __forceinline__ void mfma_f32_32x32x8_bf16(MfmaFragC& d, const MfmaFragAB& a, const MfmaFragAB& b,
                                                      const MfmaFragC& c TESSERA_MFMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::mfma<BF16>(d, a, b, c, "mfma_f32_32x32x8bf16_1k", file, line);
#elif TESSERA_MFMA_BUILTIN
  const mfma_f32x16 r = __builtin_amdgcn_mfma_f32_32x32x8bf16_1k(
      __builtin_bit_cast(mfma_i16x4, a), __builtin_bit_cast(mfma_i16x4, b), __builtin_bit_cast(mfma_f32x16, c), 0, 0, 0);
  d = __builtin_bit_cast(MfmaFragC, r);
#else
  mfma_32x32x8_portable<BF16>(d, a, b, c);
#endif
}

// The same with f16 inputs (v_mfma_f32_32x32x8f16, identical operand layouts).
__device__ __forceinline__ void mfma_f32_32x32x8_f16(MfmaFragC& d, const MfmaFragAB& a, const MfmaFragAB& b,
                                                     const MfmaFragC& c TESSERA_MFMA_SITE) {
#if defined(TESSERA_SIMT)
  simt_emu::mfma<F16>(d, a, b, c, "mfma_f32_32x32x8f16", file, line);
#elif TESSERA_MFMA_BUILTIN
  const mfma_f32x16 r = __builtin_amdgcn_mfma_f32_32x32x8f16(
      __builtin_bit_cast(mfma_f16x4, a), __builtin_bit_cast(mfma_f16x4, b), __builtin_bit_cast(mfma_f32x16, c), 0, 0, 0);
  d = __builtin_bit_cast(MfmaFragC, r);
#else
  mfma_32x32x8_portable<F16>(d, a, b, c);
#endif
}

// Element-type dispatch: E is tessera::BF16 or tessera::F16.
template <typename E> struct Mfma32x32x8;
template <> struct Mfma32x32x8<BF16> {
  __device__ __forceinline__ static void run(MfmaFragC& d, const MfmaFragAB& a, const MfmaFragAB& b,
                                             const MfmaFragC& c TESSERA_MFMA_SITE) {
#if defined(TESSERA_SIMT)
    mfma_f32_32x32x8_bf16(d, a, b, c, file, line);
#else
    mfma_f32_32x32x8_bf16(d, a, b, c);
#endif
  }
};
template <> struct Mfma32x32x8<F16> {
  __device__ __forceinline__ static void run(MfmaFragC& d, const MfmaFragAB& a, const MfmaFragAB& b,
                                             const MfmaFragC& c TESSERA_MFMA_SITE) {
#if defined(TESSERA_SIMT)
    mfma_f32_32x32x8_f16(d, a, b, c, file, line);
#else
    mfma_f32_32x32x8_f16(d, a, b, c);
#endif
  }
};

#undef TESSERA_MFMA_BUILTIN
#undef TESSERA_MFMA_SITE
#endif  // TESSERA_TARGET_HIP

}  // namespace mma
}  // namespace tessera
