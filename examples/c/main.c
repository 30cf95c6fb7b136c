/*
 * tessera from C: bitmask.sparsify + bitmask.densify and attention.forward on host memory
 * (DLPack kDLCPU tensors), checked against values computed here. Exit status 0 when every check
 * passes. Build and run (after `cargo build --release`):
 *
 *   cc -std=c11 -Wall -Wextra -Iinclude examples/c/main.c -Ltarget/release -ltessera \
 *      -Wl,-rpath,$PWD/target/release -lm -o target/example_c && target/example_c [cpu|simt|simt64]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera.h"

static int failures = 0;

#define CHECK(cond, ...)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                 \
      fprintf(stderr, __VA_ARGS__);                                                        \
      fprintf(stderr, "\n");                                                               \
      failures++;                                                                          \
    }                                                                                      \
  } while (0)

#define CALL(expr)                                                                         \
  do {                                                                                     \
    enum TesseraStatus s_ = (expr);                                                        \
    if (s_ != TESSERA_STATUS_OK) {                                                         \
      fprintf(stderr, "FAIL %s: status %d: %s\n", #expr, (int)s_, tessera_last_error());   \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

static DLTensor host_tensor(void *data, int ndim, int64_t *shape, uint8_t code, uint8_t bits) {
  DLTensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.device.device_type = kDLCPU;
  t.device.device_id = 0;
  t.ndim = ndim;
  t.dtype.code = code;
  t.dtype.bits = bits;
  t.dtype.lanes = 1;
  t.shape = shape;
  t.strides = NULL;
  t.byte_offset = 0;
  return t;
}

/* A small deterministic generator (xorshift), uniform in [-1, 1). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float uniform(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* float -> bf16, round to nearest even (finite inputs). */
static uint16_t to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  u += 0x7FFF + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}
static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

static int bitmask_roundtrip(void) {
  enum { N = 1000 };
  static float base[N], neu[N], out[N], values[N];
  static uint32_t mask[(N + 31) / 32];
  int changed = 0;
  for (int i = 0; i < N; i++) {
    base[i] = uniform();
    neu[i] = (i % 7 == 0) ? base[i] + 0.5f : base[i];
    changed += (i % 7 == 0);
  }
  int64_t n_shape[1] = {N}, m_shape[1] = {(N + 31) / 32}, cap_shape[1] = {N};
  DLTensor tb = host_tensor(base, 1, n_shape, kDLFloat, 32);
  DLTensor tn = host_tensor(neu, 1, n_shape, kDLFloat, 32);
  DLTensor tm = host_tensor(mask, 1, m_shape, kDLUInt, 32);
  DLTensor tv = host_tensor(values, 1, cap_shape, kDLFloat, 32);
  int64_t written = -1;
  CALL(tessera_bitmask_sparsify(&tb, &tn, 0.0f, &tm, &tv, &written, NULL));
  CHECK(written == changed, "sparsify wrote %lld values, %d changed", (long long)written, changed);
  for (int i = 0; i < N; i++) {
    int bit = (mask[i / 32] >> (i % 32)) & 1;
    CHECK(bit == (i % 7 == 0), "mask bit %d is %d", i, bit);
  }
  for (int j = 0; j < changed; j++) {
    CHECK(values[j] == neu[7 * j], "values[%d] = %g, want %g", j, values[j], neu[7 * j]);
  }
  /* densify takes exactly the written values. */
  int64_t v_shape[1] = {written};
  DLTensor tvals = host_tensor(values, 1, v_shape, kDLFloat, 32);
  DLTensor to = host_tensor(out, 1, n_shape, kDLFloat, 32);
  CALL(tessera_bitmask_densify(&tb, &tm, &tvals, &to, NULL));
  CHECK(memcmp(out, neu, sizeof out) == 0, "densify(sparsify(new)) != new");
  printf("bitmask.sparsify + densify: %d elements, %lld changed, round trip exact\n", N,
         (long long)written);
  return 0;
}

/* Causal attention, two sequences, GQA (4 query heads over 2 key/value heads), D = 64. */
static int attention(void) {
  enum { H = 4, HKV = 2, D = 64, TOTAL = 48 };
  const int32_t cu[3] = {0, 20, 48};
  static uint16_t q[TOTAL * H * D], k[TOTAL * HKV * D], v[TOTAL * HKV * D];
  static float o[TOTAL * H * D], lse[H * TOTAL];
  for (int i = 0; i < TOTAL * H * D; i++) q[i] = to_bf16(uniform());
  for (int i = 0; i < TOTAL * HKV * D; i++) k[i] = to_bf16(uniform());
  for (int i = 0; i < TOTAL * HKV * D; i++) v[i] = to_bf16(uniform());
  int64_t q_shape[3] = {TOTAL, H, D}, kv_shape[3] = {TOTAL, HKV, D}, cu_shape[1] = {3};
  int64_t o_shape[3] = {TOTAL, H, D}, lse_shape[2] = {H, TOTAL};
  DLTensor tq = host_tensor(q, 3, q_shape, kDLBfloat, 16);
  DLTensor tk = host_tensor(k, 3, kv_shape, kDLBfloat, 16);
  DLTensor tv = host_tensor(v, 3, kv_shape, kDLBfloat, 16);
  DLTensor tcu = host_tensor((void *)cu, 1, cu_shape, kDLInt, 32);
  DLTensor to = host_tensor(o, 3, o_shape, kDLFloat, 32);
  DLTensor tl = host_tensor(lse, 2, lse_shape, kDLFloat, 32);
  const float scale = 1.0f / sqrtf((float)D);
  CALL(tessera_attention_forward(&tq, &tk, &tv, &tcu, &tcu, NULL, NULL, NULL, NULL, NULL, H, HKV,
                                 D, 28, 28, scale, "causal", NULL, &to, &tl, NULL));
  /* Reference in double: softmax over keys j <= i of the same sequence. */
  double err2 = 0, ref2 = 0, lse_err = 0;
  for (int s = 0; s < 2; s++) {
    for (int i = cu[s]; i < cu[s + 1]; i++) {
      for (int h = 0; h < H; h++) {
        int g = h / (H / HKV);
        double m = -INFINITY, w[TOTAL];
        for (int j = cu[s]; j <= i; j++) {
          double dot = 0;
          for (int d = 0; d < D; d++)
            dot += (double)from_bf16(q[(i * H + h) * D + d]) * from_bf16(k[(j * HKV + g) * D + d]);
          w[j] = dot * scale;
          if (w[j] > m) m = w[j];
        }
        double sum = 0;
        for (int j = cu[s]; j <= i; j++) sum += exp(w[j] - m);
        double l = m + log(sum);
        lse_err = fmax(lse_err, fabs(l - lse[h * TOTAL + i]));
        for (int d = 0; d < D; d++) {
          double acc = 0;
          for (int j = cu[s]; j <= i; j++)
            acc += exp(w[j] - l) * from_bf16(v[(j * HKV + g) * D + d]);
          double got = o[(i * H + h) * D + d];
          err2 += (got - acc) * (got - acc);
          ref2 += acc * acc;
        }
      }
    }
  }
  double rel = sqrt(err2 / ref2);
  /* ARCHITECTURE §5: half inputs, f32 accumulation: relative L2 <= 1e-2; LSE abs <= 1e-3. */
  CHECK(rel <= 1e-2, "attention O relative L2 error %g > 1e-2", rel);
  CHECK(lse_err <= 1e-3, "attention LSE max abs error %g > 1e-3", lse_err);
  printf("attention.forward (causal, bf16, GQA 4/2, D 64): O rel L2 %.2e, LSE max abs %.2e\n", rel,
         lse_err);
  return 0;
}

static int bad_inputs(void) {
  enum { N = 64 };
  static float base[N], neu[N], values[N];
  static uint32_t mask[2];
  int64_t n_shape[1] = {N}, wrong[1] = {3}, m_shape[1] = {2};
  DLTensor tb = host_tensor(base, 1, n_shape, kDLFloat, 32);
  DLTensor tn = host_tensor(neu, 1, n_shape, kDLFloat, 32);
  DLTensor tm = host_tensor(mask, 1, m_shape, kDLUInt, 32);
  DLTensor tv = host_tensor(values, 1, n_shape, kDLFloat, 32);
  /* A null input. */
  enum TesseraStatus s = tessera_bitmask_sparsify(&tb, NULL, 0.0f, &tm, &tv, NULL, NULL);
  CHECK(s == TESSERA_STATUS_INVALID_ARGUMENT && strstr(tessera_last_error(), "new"),
        "null input: status %d, %s", (int)s, tessera_last_error());
  /* A wrong mask shape. */
  DLTensor tm_bad = host_tensor(mask, 1, wrong, kDLUInt, 32);
  s = tessera_bitmask_sparsify(&tb, &tn, 0.0f, &tm_bad, &tv, NULL, NULL);
  CHECK(s == TESSERA_STATUS_INVALID_ARGUMENT && strstr(tessera_last_error(), "mask"),
        "wrong shape: status %d, %s", (int)s, tessera_last_error());
  /* A dtype tessera does not take (f64). */
  DLTensor tb64 = host_tensor(base, 1, n_shape, kDLFloat, 64);
  s = tessera_bitmask_sparsify(&tb64, &tn, 0.0f, &tm, &tv, NULL, NULL);
  CHECK(s == TESSERA_STATUS_INVALID_ARGUMENT && strstr(tessera_last_error(), "dtype"),
        "f64: status %d, %s", (int)s, tessera_last_error());
  /* Non-contiguous strides. */
  int64_t strides[1] = {2}, half_shape[1] = {N / 2};
  DLTensor strided = host_tensor(base, 1, half_shape, kDLFloat, 32);
  strided.strides = strides;
  s = tessera_bitmask_sparsify(&strided, &strided, 0.0f, &tm, &tv, NULL, NULL);
  CHECK(s == TESSERA_STATUS_INVALID_ARGUMENT && strstr(tessera_last_error(), "contiguous"),
        "strides: status %d, %s", (int)s, tessera_last_error());
  /* An unknown enum word. */
  s = tessera_set_host_executor("tpu");
  CHECK(s == TESSERA_STATUS_INVALID_ARGUMENT, "unknown executor accepted");
  printf("bad inputs: clear errors (last: %s)\n", tessera_last_error());
  return 0;
}

int main(int argc, char **argv) {
  printf("tessera %s\n", tessera_version());
  const char *executor = argc > 1 ? argv[1] : "cpu";
  CALL(tessera_set_host_executor(executor));
  printf("host executor: %s\n", executor);
  if (bitmask_roundtrip() || attention() || bad_inputs()) return 1;
  CALL(tessera_set_host_executor(executor));
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}
