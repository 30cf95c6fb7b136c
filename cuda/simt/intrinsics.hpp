// intrinsics.hpp: the CUDA device API on the host SIMT runtime (included by simt.hpp only).
// Barriers and warp collectives are macros so that they record their call site (__FILE__/__LINE__),
// which divergence reports name.
#pragma once

// ---- warp collective ops (run once per completed group, over all lanes' slots) -------------------
namespace tessera_simt {
namespace {

inline bool in_group(unsigned long long g, int lane) { return lane >= 0 && lane < 64 && ((g >> lane) & 1); }

// a = source lane / delta / xor mask, b = width; value = the lane's bits.
template <int Kind>  // 0 idx, 1 up, 2 down, 3 xor
void op_shfl(WarpSlot* const* s, unsigned long long g, int) {
  for (unsigned long long m = g; m; m &= m - 1) {
    const int l = __builtin_ctzll(m);
    WarpSlot& me = *s[l];
    const int width = static_cast<int>(me.b);
    const int seg = l & ~(width - 1);
    int src;
    if constexpr (Kind == 0) {
      src = seg + static_cast<int>(me.a & (width - 1));
    } else if constexpr (Kind == 1) {
      src = l - static_cast<int>(me.a);
      if (src < seg) src = l;
    } else if constexpr (Kind == 2) {
      src = l + static_cast<int>(me.a);
      if (src >= seg + width) src = l;
    } else {
      src = l ^ static_cast<int>(me.a);
      if (src >= seg + width || src < seg) src = l;
    }
    me.result = in_group(g, src) ? s[src]->value : me.value;
  }
}

void op_sync(WarpSlot* const*, unsigned long long, int) {}

void op_ballot(WarpSlot* const* s, unsigned long long g, int) {
  unsigned long long r = 0;
  for (unsigned long long m = g; m; m &= m - 1) {
    const int l = __builtin_ctzll(m);
    if (s[l]->value) r |= 1ull << l;
  }
  for (unsigned long long m = g; m; m &= m - 1) s[__builtin_ctzll(m)]->result = r;
}

void op_match_any(WarpSlot* const* s, unsigned long long g, int) {
  for (unsigned long long m = g; m; m &= m - 1) {
    const int l = __builtin_ctzll(m);
    unsigned long long r = 0;
    for (unsigned long long k = g; k; k &= k - 1) {
      const int j = __builtin_ctzll(k);
      if (s[j]->value == s[l]->value) r |= 1ull << j;
    }
    s[l]->result = r;
  }
}

// result: 1 when every lane of the group has a nonzero value
void op_all(WarpSlot* const* s, unsigned long long g, int) {
  uint64_t all = 1;
  for (unsigned long long m = g; m; m &= m - 1) all &= s[__builtin_ctzll(m)]->value != 0;
  for (unsigned long long m = g; m; m &= m - 1) s[__builtin_ctzll(m)]->result = all;
}

// result: the group mask when every lane's value is equal, else 0
void op_match_all(WarpSlot* const* s, unsigned long long g, int) {
  const uint64_t v0 = s[__builtin_ctzll(g)]->value;
  uint64_t r = g;
  for (unsigned long long m = g; m; m &= m - 1)
    if (s[__builtin_ctzll(m)]->value != v0) r = 0;
  for (unsigned long long m = g; m; m &= m - 1) s[__builtin_ctzll(m)]->result = r;
}

template <int Kind>  // 0 add, 1 min, 2 max, 3 and, 4 or, 5 xor; a = 1 when signed
void op_reduce(WarpSlot* const* s, unsigned long long g, int) {
  const int first = __builtin_ctzll(g);
  const bool sgn = s[first]->a != 0;
  uint32_t r = static_cast<uint32_t>(s[first]->value);
  for (unsigned long long m = g & (g - 1); m; m &= m - 1) {
    const uint32_t v = static_cast<uint32_t>(s[__builtin_ctzll(m)]->value);
    if constexpr (Kind == 0) r += v;
    if constexpr (Kind == 1) r = sgn ? (int32_t(v) < int32_t(r) ? v : r) : (v < r ? v : r);
    if constexpr (Kind == 2) r = sgn ? (int32_t(v) > int32_t(r) ? v : r) : (v > r ? v : r);
    if constexpr (Kind == 3) r &= v;
    if constexpr (Kind == 4) r |= v;
    if constexpr (Kind == 5) r ^= v;
  }
  for (unsigned long long m = g; m; m &= m - 1) s[__builtin_ctzll(m)]->result = r;
}

template <typename T>
inline uint64_t to_bits64(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp collectives move values of up to 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits64(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <int Kind, typename T>
inline T shfl(const char* file, int line, const char* name, unsigned long long mask, T v, int a, int width) {
  WarpSlot s{};
  s.value = to_bits64(v);
  s.a = a;
  s.b = (width <= 0 || width > kWave || (width & (width - 1))) ? kWave : width;
  warp_collective(&op_shfl<Kind>, name, mask, s, file, line);
  return from_bits64<T>(s.result);
}

template <typename T>
inline T shfl_sync(const char* f, int l, unsigned long long mask, T v, int src, int width = kWave) {
  return shfl<0>(f, l, "__shfl_sync", mask, v, src, width);
}
template <typename T>
inline T shfl_up_sync(const char* f, int l, unsigned long long mask, T v, unsigned d, int width = kWave) {
  return shfl<1>(f, l, "__shfl_up_sync", mask, v, static_cast<int>(d), width);
}
template <typename T>
inline T shfl_down_sync(const char* f, int l, unsigned long long mask, T v, unsigned d, int width = kWave) {
  return shfl<2>(f, l, "__shfl_down_sync", mask, v, static_cast<int>(d), width);
}
template <typename T>
inline T shfl_xor_sync(const char* f, int l, unsigned long long mask, T v, int x, int width = kWave) {
  return shfl<3>(f, l, "__shfl_xor_sync", mask, v, x, width);
}

inline lanemask ballot_sync(const char* f, int l, unsigned long long mask, int pred, const char* name = "__ballot_sync") {
  WarpSlot s{};
  s.value = pred != 0;
  warp_collective(&op_ballot, name, mask, s, f, l);
  return static_cast<lanemask>(s.result);
}
inline int any_sync(const char* f, int l, unsigned long long mask, int pred) {
  return ballot_sync(f, l, mask, pred, "__any_sync") != 0;
}
inline int all_sync(const char* f, int l, unsigned long long mask, int pred) {
  WarpSlot s{};
  s.value = pred != 0;
  warp_collective(&op_all, "__all_sync", mask, s, f, l);
  return static_cast<int>(s.result);
}
inline void syncwarp(const char* f, int l, unsigned long long mask = kFullMask) {
  WarpSlot s{};
  warp_collective(&op_sync, "__syncwarp", mask, s, f, l);
}
template <typename T>
inline lanemask match_any_sync(const char* f, int l, unsigned long long mask, T v) {
  WarpSlot s{};
  s.value = to_bits64(v);
  warp_collective(&op_match_any, "__match_any_sync", mask, s, f, l);
  return static_cast<lanemask>(s.result);
}
template <typename T>
inline lanemask match_all_sync(const char* f, int l, unsigned long long mask, T v, int* pred) {
  WarpSlot s{};
  s.value = to_bits64(v);
  warp_collective(&op_match_all, "__match_all_sync", mask, s, f, l);
  *pred = s.result != 0;
  return static_cast<lanemask>(s.result);
}
template <int Kind>
inline unsigned reduce_sync(const char* f, int l, const char* name, unsigned long long mask, uint32_t v, bool sgn) {
  WarpSlot s{};
  s.value = v;
  s.a = sgn;
  warp_collective(&op_reduce<Kind>, name, mask, s, f, l);
  return static_cast<unsigned>(s.result);
}

inline lanemask activemask() {
  const Worker* w = tl_w;
  const Fiber* f = tl_cur;
  const uint32_t n = w->L->nthreads;
  const uint32_t w0 = f->linear - f->linear % kWave;
  const uint32_t lanes = std::min<uint32_t>(kWave, n - w0);
  unsigned long long m = 0;
  for (uint32_t l = 0; l < lanes; ++l)
    if (w->res->fibers[w0 + l].st != St::Exited) m |= 1ull << l;
  return static_cast<lanemask>(m);
}

struct Trap : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace
}  // namespace tessera_simt

// ---- barriers and warp collectives -----------------------------------------------------------------
#define __syncthreads() ((void)::tessera_simt::block_barrier(__FILE__, __LINE__, 0, 0))
#define __syncthreads_count(p) ::tessera_simt::block_barrier(__FILE__, __LINE__, 1, (p) ? 1 : 0)
#define __syncthreads_and(p) ::tessera_simt::block_barrier(__FILE__, __LINE__, 2, (p) ? 1 : 0)
#define __syncthreads_or(p) ::tessera_simt::block_barrier(__FILE__, __LINE__, 3, (p) ? 1 : 0)
#define __syncwarp(...) ::tessera_simt::syncwarp(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_sync(...) ::tessera_simt::shfl_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::tessera_simt::shfl_up_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::tessera_simt::shfl_down_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::tessera_simt::shfl_xor_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, p) ::tessera_simt::ballot_sync(__FILE__, __LINE__, (mask), (p) ? 1 : 0)
#define __any_sync(mask, p) ::tessera_simt::any_sync(__FILE__, __LINE__, (mask), (p) ? 1 : 0)
#define __all_sync(mask, p) ::tessera_simt::all_sync(__FILE__, __LINE__, (mask), (p) ? 1 : 0)
#define __match_any_sync(mask, v) ::tessera_simt::match_any_sync(__FILE__, __LINE__, (mask), (v))
#define __match_all_sync(mask, v, pred) ::tessera_simt::match_all_sync(__FILE__, __LINE__, (mask), (v), (pred))
// HIP spellings (no mask: every lane of the wave takes part), for TESSERA_TARGET_HIP code paths.
#define __shfl(...) ::tessera_simt::shfl_sync(__FILE__, __LINE__, ::tessera_simt::kFullMask, __VA_ARGS__)
#define __shfl_up(...) ::tessera_simt::shfl_up_sync(__FILE__, __LINE__, ::tessera_simt::kFullMask, __VA_ARGS__)
#define __shfl_down(...) ::tessera_simt::shfl_down_sync(__FILE__, __LINE__, ::tessera_simt::kFullMask, __VA_ARGS__)
#define __shfl_xor(...) ::tessera_simt::shfl_xor_sync(__FILE__, __LINE__, ::tessera_simt::kFullMask, __VA_ARGS__)
#define __ballot(p) \
  static_cast<unsigned long long>(::tessera_simt::ballot_sync(__FILE__, __LINE__, ::tessera_simt::kFullMask, (p) ? 1 : 0))
#define __any(p) ::tessera_simt::any_sync(__FILE__, __LINE__, ::tessera_simt::kFullMask, (p) ? 1 : 0)
#define __all(p) ::tessera_simt::all_sync(__FILE__, __LINE__, ::tessera_simt::kFullMask, (p) ? 1 : 0)
#define __lane_id() (static_cast<unsigned>(::tessera_simt::thread_linear()) % TESSERA_SIMT_WARP_SIZE)
#define __reduce_add_sync(mask, v) \
  ::tessera_simt::reduce_sync<0>(__FILE__, __LINE__, "__reduce_add_sync", (mask), (v), std::is_signed_v<decltype(v)>)
#define __reduce_min_sync(mask, v) \
  ::tessera_simt::reduce_sync<1>(__FILE__, __LINE__, "__reduce_min_sync", (mask), (v), std::is_signed_v<decltype(v)>)
#define __reduce_max_sync(mask, v) \
  ::tessera_simt::reduce_sync<2>(__FILE__, __LINE__, "__reduce_max_sync", (mask), (v), std::is_signed_v<decltype(v)>)
#define __reduce_and_sync(mask, v) ::tessera_simt::reduce_sync<3>(__FILE__, __LINE__, "__reduce_and_sync", (mask), (v), false)
#define __reduce_or_sync(mask, v) ::tessera_simt::reduce_sync<4>(__FILE__, __LINE__, "__reduce_or_sync", (mask), (v), false)
#define __reduce_xor_sync(mask, v) ::tessera_simt::reduce_sync<5>(__FILE__, __LINE__, "__reduce_xor_sync", (mask), (v), false)

namespace {

__forceinline__ auto __activemask() { return ::tessera_simt::activemask(); }

[[noreturn]] inline void __trap() { throw ::tessera_simt::Trap("__trap() called"); }

// ---- fences ----------------------------------------------------------------------------------------
__forceinline__ void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
__forceinline__ void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
__forceinline__ void __threadfence_block() { __asm__ __volatile__("" ::: "memory"); }

// ---- atomics (relaxed, like CUDA's; real atomics because blocks run on several OS threads) -------
#define TESSERA_SIMT_ATOMIC_INT(T)                                                                     \
  __forceinline__ T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }       \
  __forceinline__ T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }       \
  __forceinline__ T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }       \
  __forceinline__ T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }         \
  __forceinline__ T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }       \
  __forceinline__ T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }     \
  __forceinline__ T atomicCAS(T* p, T cmp, T v) {                                                     \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);               \
    return cmp;                                                                                        \
  }                                                                                                    \
  __forceinline__ T atomicMin(T* p, T v) {                                                             \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                      \
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                                  \
    return old;                                                                                        \
  }                                                                                                    \
  __forceinline__ T atomicMax(T* p, T v) {                                                             \
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);                                                      \
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                                  \
    return old;                                                                                        \
  }
TESSERA_SIMT_ATOMIC_INT(int)
TESSERA_SIMT_ATOMIC_INT(unsigned)
TESSERA_SIMT_ATOMIC_INT(long long)
TESSERA_SIMT_ATOMIC_INT(unsigned long long)
TESSERA_SIMT_ATOMIC_INT(unsigned long)
#undef TESSERA_SIMT_ATOMIC_INT

__forceinline__ unsigned short atomicCAS(unsigned short* p, unsigned short cmp, unsigned short v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}

#define TESSERA_SIMT_ATOMIC_FLOAT(T)                                                                   \
  __forceinline__ T atomicAdd(T* p, T v) {                                                             \
    T old;                                                                                             \
    __atomic_load(p, &old, __ATOMIC_RELAXED);                                                          \
    T nv;                                                                                              \
    do {                                                                                               \
      nv = old + v;                                                                                    \
    } while (!__atomic_compare_exchange(p, &old, &nv, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));      \
    return old;                                                                                        \
  }                                                                                                    \
  __forceinline__ T atomicExch(T* p, T v) {                                                            \
    T old;                                                                                             \
    __atomic_exchange(p, &v, &old, __ATOMIC_RELAXED);                                                  \
    return old;                                                                                        \
  }
TESSERA_SIMT_ATOMIC_FLOAT(float)
TESSERA_SIMT_ATOMIC_FLOAT(double)
#undef TESSERA_SIMT_ATOMIC_FLOAT

__forceinline__ unsigned atomicInc(unsigned* p, unsigned lim) {
  unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED), nv;
  do {
    nv = old >= lim ? 0u : old + 1u;
  } while (!__atomic_compare_exchange_n(p, &old, nv, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
__forceinline__ unsigned atomicDec(unsigned* p, unsigned lim) {
  unsigned old = __atomic_load_n(p, __ATOMIC_RELAXED), nv;
  do {
    nv = (old == 0u || old > lim) ? lim : old - 1u;
  } while (!__atomic_compare_exchange_n(p, &old, nv, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
template <typename T, typename V>
__forceinline__ auto atomicAdd_block(T* p, V v) { return atomicAdd(p, static_cast<T>(v)); }
template <typename T, typename V>
__forceinline__ auto atomicAdd_system(T* p, V v) { return atomicAdd(p, static_cast<T>(v)); }

// ---- bit and reinterpretation intrinsics ------------------------------------------------------------
__forceinline__ int __popc(unsigned x) { return __builtin_popcount(x); }
__forceinline__ int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
__forceinline__ int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
__forceinline__ int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
__forceinline__ int __ffs(int x) { return __builtin_ffs(x); }
__forceinline__ int __ffsll(long long x) { return __builtin_ffsll(x); }
__forceinline__ unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
__forceinline__ unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) | __brev(static_cast<unsigned>(x >> 32));
}
__forceinline__ unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
}
__forceinline__ unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (s & 31)) >> 32);
}
__forceinline__ unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (s & 31));
}
__forceinline__ unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((uint64_t(a) * b) >> 32); }
__forceinline__ int __mulhi(int a, int b) { return static_cast<int>((int64_t(a) * b) >> 32); }
__forceinline__ unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
__forceinline__ float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
__forceinline__ unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
__forceinline__ float __int_as_float(int x) { return std::bit_cast<float>(x); }
__forceinline__ int __float_as_int(float x) { return std::bit_cast<int>(x); }
__forceinline__ double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
__forceinline__ long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }

// ---- math ---------------------------------------------------------------------------------------------
__forceinline__ float __fdividef(float a, float b) { return a / b; }
__forceinline__ float fdividef(float a, float b) { return a / b; }
__forceinline__ float __expf(float x) { return expf(x); }
__forceinline__ float __exp10f(float x) { return powf(10.0f, x); }
__forceinline__ float __logf(float x) { return logf(x); }
__forceinline__ float __log2f(float x) { return log2f(x); }
__forceinline__ float __log10f(float x) { return log10f(x); }
__forceinline__ float __sinf(float x) { return sinf(x); }
__forceinline__ float __cosf(float x) { return cosf(x); }
__forceinline__ float __tanf(float x) { return tanf(x); }
__forceinline__ float __powf(float a, float b) { return powf(a, b); }
__forceinline__ float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
__forceinline__ float rsqrtf(float x) { return 1.0f / sqrtf(x); }
__forceinline__ double rsqrt(double x) { return 1.0 / sqrt(x); }
__forceinline__ float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
__forceinline__ float __fsqrt_rn(float x) { return sqrtf(x); }
__forceinline__ float __frcp_rn(float x) { return 1.0f / x; }
__forceinline__ float __fadd_rn(float a, float b) { return a + b; }
__forceinline__ float __fsub_rn(float a, float b) { return a - b; }
__forceinline__ float __fmul_rn(float a, float b) { return a * b; }
__forceinline__ float __fdiv_rn(float a, float b) { return a / b; }
__forceinline__ float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
__forceinline__ double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
__forceinline__ int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
__forceinline__ int __float2int_rz(float x) { return static_cast<int>(x); }
__forceinline__ int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
__forceinline__ int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
__forceinline__ unsigned __float2uint_rn(float x) { return static_cast<unsigned>(nearbyintf(x)); }
__forceinline__ unsigned __float2uint_rz(float x) { return static_cast<unsigned>(x); }
__forceinline__ float __int2float_rn(int x) { return static_cast<float>(x); }
__forceinline__ float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
__forceinline__ float __ll2float_rn(long long x) { return static_cast<float>(x); }
__forceinline__ float __ull2float_rn(unsigned long long x) { return static_cast<float>(x); }

// CUDA's global min/max overloads.
template <typename A, typename B>
__forceinline__ constexpr std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <typename A, typename B>
__forceinline__ constexpr std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
__forceinline__ unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
__forceinline__ unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
__forceinline__ unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
__forceinline__ unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// ---- loads ---------------------------------------------------------------------------------------------
template <typename T>
__forceinline__ T __ldg(const T* p) { return *p; }
template <typename T>
__forceinline__ T __ldcs(const T* p) { return *p; }
template <typename T>
__forceinline__ T __ldcg(const T* p) { return *p; }
template <typename T>
__forceinline__ void __stcs(T* p, T v) { *p = v; }
template <typename T>
__forceinline__ void __stcg(T* p, T v) { *p = v; }

}  // namespace
