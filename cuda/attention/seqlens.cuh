// attention/seqlens.cuh: cu_seqlens on the device, so that no op copies them to the host.
//
// check() validates one cu_seqlens array (batch + 1 entries) in one thread, in the order the
// CPU path checks it (src/ops/attention.rs, seqlens_status), and writes its 4-word status
// (code, entry, a, b): code 0 valid; 1 cu[0] = a != 0; 2 cu[entry] = b < cu[entry - 1] = a
// (decreasing); 3 cu[batch] = a != the total b; 4 sequence `entry` has a tokens, more than
// max_len = b (the first fault in that order). The ops read the status back only at a
// synchronising point of the caller's choosing (AttentionOut::check); kernels that index with
// cu_seqlens read it first and write nothing when it is nonzero.
//
// bounds() gives sequence b's rows clamped to the tensor and to max_len, so that any cu_seqlens,
// valid or not, is read and indexed in bounds.
#pragma once
#include "../common/tessera.cuh"

namespace tessera {
namespace seqlens {

constexpr int kStatusWords = 4;  // per cu_seqlens array

__device__ __forceinline__ void check(const int32_t* cu, int batch, int32_t total, int32_t max_len, int32_t* out) {
  int32_t code = 0, entry = 0, a = 0, b = 0;
  if (cu[0] != 0) {
    code = 1;
    a = cu[0];
  }
  for (int i = 0; code == 0 && i < batch; ++i) {
    if (cu[i + 1] < cu[i]) {
      code = 2;
      entry = i + 1;
      a = cu[i];
      b = cu[i + 1];
    }
  }
  if (code == 0 && cu[batch] != total) {
    code = 3;
    entry = batch;
    a = cu[batch];
    b = total;
  }
  for (int i = 0; code == 0 && i < batch; ++i) {
    if (cu[i + 1] - cu[i] > max_len) {  // 0 <= cu[i] <= cu[i + 1] <= total here: no overflow
      code = 4;
      entry = i;
      a = cu[i + 1] - cu[i];
      b = max_len;
    }
  }
  out[0] = code;
  out[1] = entry;
  out[2] = a;
  out[3] = b;
}

// Sequence b's first row s0 and row count len: [s0, s0 + len) within [0, total), len <= max_len.
__device__ __forceinline__ void bounds(const int32_t* cu, int b, int32_t total, int32_t max_len, int32_t& s0,
                                       int32_t& len) {
  const int32_t x = min(max(cu[b], 0), total);
  const int32_t y = min(max(cu[b + 1], x), total);
  s0 = x;
  len = min(y - x, max_len);
}

}  // namespace seqlens
}  // namespace tessera
