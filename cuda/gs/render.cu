// gs/render.cu: the 3DGS tile rasteriser, forward and backward (issue 15; semantics and the f64
// reference: src/reference/gs/raster.rs; the ops: src/ops/gs/render.rs).
//
// One block per 16x16 tile (256 threads, thread t is pixel (t % 16, t / 16) of the tile), one
// thread per pixel, f32 throughout. The tile's Gaussians (its range [start, end) of the sorted
// ids) go through shared memory in batches of 256, each thread loading one.
//
// Layouts. gs_render_fwd reads entry k of the range through `idx = indirect ? ids[k] : k`:
//   * baseline (indirect = 1): the per-Gaussian arrays (means2d [N,2], conics [N,3],
//     opacities [N], colors [N,3]) read by id in sorted order (scattered reads);
//   * balanced (indirect = 0): gs_render_reorder first writes the same values into per-entry
//     arrays in sorted order ([M,2], [M,3], [M], [M,3]: each tile's Gaussians contiguous), so
//     the batch loads are contiguous and coalesced (BalanceGS's reordered staging).
// Both run this one kernel, so the arithmetic is the same instruction stream: the images are
// bit-identical.
//
// Forward rules (INRIA renderCUDA / gsplat): pixel centre (i + 0.5, j + 0.5), d = mean - pixel,
// power = -0.5 (A dx^2 + C dy^2) - B dx dy (skip when > 0), alpha = min(0.99, o exp(power))
// (skip when < 1/255), stop when T (1 - alpha) < 1e-4 without blending that Gaussian.
// n_contrib = INRIA's last_contributor (1-based position in the range of the last blended).
// A block leaves the batch loop when all its pixels are done (__syncthreads_count).
//
// Backward (gs_render_bwd, both layouts like the forward): back to front from final_t and n_contrib, the INRIA recurrence
// with gsplat's cap rule (a capped alpha passes gradient to the colour only). Every lane of a
// warp walks the same batch entry at the same step, so the per-Gaussian gradients are summed
// over the warp with shuffles and added by lane 0: one atomicAdd per warp, value and Gaussian.
//
// Validation (gs_render_check, gs_render_check_bwd): the first bad index of each kind goes into
// status (atomicMin; u32 max = none); the reorder, forward and backward kernels read it and do
// nothing when anything is bad, and they clamp every index they use anyway.
#include "../common/tessera.cuh"

namespace tessera {
namespace gs {

constexpr int kTile = 16;
constexpr int kThreads = kTile * kTile;
constexpr int kCheckThreads = 256;
constexpr uint32_t kNone = 0xffffffffu;
// Status words: the first bad index of each kind.
enum : int {
  kBadColor = 0,
  kBadOpacity,
  kBadMean,
  kBadConic,
  kBadId,
  kBadRange,
  kBadFinalT,
  kBadContrib,
  kBadVImage,
  kBadVAlpha,
  kStatusWords
};
constexpr int kForwardWords = kBadRange + 1;

constexpr float kAlphaMax = 0.99f;
constexpr float kAlphaMin = 1.0f / 255.0f;
constexpr float kTMin = 1e-4f;

__device__ __forceinline__ bool finite(float x) { return x - x == 0.0f; }

__device__ __forceinline__ bool any_bad(const uint32_t* status, int words) {
  bool bad = false;
  for (int w = 0; w < words; ++w) bad |= status[w] != kNone;
  return bad;
}

// The tile's range, clamped so that a bad one (reported by the check) reads nothing.
__device__ __forceinline__ void tile_range(const uint32_t* tile_ranges, uint32_t tile, uint32_t m,
                                           uint32_t* start, uint32_t* end) {
  uint32_t s = tile_ranges[2 * tile], e = tile_ranges[2 * tile + 1];
  if (e > m) e = m;
  if (s > e) s = e;
  *start = s;
  *end = e;
}

// One evaluated (Gaussian, pixel) pair: the same decisions in the forward and the backward.
struct Hit {
  float alpha, gauss, dx, dy;
  bool clamped;
};

__device__ __forceinline__ bool eval(float mx, float my, float a, float b, float c, float o, float px,
                                     float py, Hit* h) {
  const float dx = mx - px;
  const float dy = my - py;
  const float power = -0.5f * (a * dx * dx + c * dy * dy) - b * dx * dy;
  if (power > 0.0f) return false;
  const float gauss = expf(power);
  const float raw = o * gauss;
  const float alpha = fminf(kAlphaMax, raw);
  if (!(alpha >= kAlphaMin)) return false;
  h->alpha = alpha;
  h->gauss = gauss;
  h->dx = dx;
  h->dy = dy;
  h->clamped = raw > kAlphaMax;
  return true;
}

}  // namespace gs
}  // namespace tessera

using namespace tessera;

// Input contents: colours and opacities finite (all N), ids < N, the means and conics of the
// Gaussians the bins reference finite, every tile range within [0, m]. Any 1-D grid of
// kCheckThreads (grid-stride over max(n, m, tiles)).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kCheckThreads)
    gs_render_check(const float* means2d, const float* conics, const float* opacities, const float* colors,
                    uint32_t n, const uint32_t* ids, uint32_t m, const uint32_t* tile_ranges, uint32_t tiles,
                    uint32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  uint32_t top = n > m ? n : m;
  if (tiles > top) top = tiles;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < top; i += stride) {
    if (i < n) {
      if (!gs::finite(colors[3 * i]) || !gs::finite(colors[3 * i + 1]) || !gs::finite(colors[3 * i + 2]))
        atomicMin(&status[gs::kBadColor], i);
      if (!gs::finite(opacities[i])) atomicMin(&status[gs::kBadOpacity], i);
    }
    if (i < m) {
      const uint32_t g = ids[i];
      if (g >= n) {
        atomicMin(&status[gs::kBadId], i);
      } else {
        if (!gs::finite(means2d[2 * g]) || !gs::finite(means2d[2 * g + 1])) atomicMin(&status[gs::kBadMean], g);
        if (!gs::finite(conics[3 * g]) || !gs::finite(conics[3 * g + 1]) || !gs::finite(conics[3 * g + 2]))
          atomicMin(&status[gs::kBadConic], g);
      }
    }
    if (i < tiles) {
      const uint32_t s = tile_ranges[2 * i], e = tile_ranges[2 * i + 1];
      if (s > e || e > m) atomicMin(&status[gs::kBadRange], i);
    }
  }
}
TESSERA_EXPORT_BLOCK(gs_render_check, gs::kCheckThreads)

// The backward's per-pixel inputs: final_t, v_image, v_alpha finite, n_contrib within its
// tile's range. Any 1-D grid of kCheckThreads (grid-stride over the pixels).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kCheckThreads)
    gs_render_check_bwd(const uint32_t* tile_ranges, uint32_t m, uint32_t tiles_x, uint32_t width,
                        uint32_t height, const float* final_t, const uint32_t* n_contrib, const float* v_image,
                        const float* v_alpha, uint32_t* status) {
  const uint32_t stride = gridDim.x * blockDim.x;
  const uint32_t npix = width * height;
  for (uint32_t p = blockIdx.x * blockDim.x + threadIdx.x; p < npix; p += stride) {
    const uint32_t i = p % width, j = p / width;
    uint32_t s, e;
    gs::tile_range(tile_ranges, (j / gs::kTile) * tiles_x + i / gs::kTile, m, &s, &e);
    if (!gs::finite(final_t[p])) atomicMin(&status[gs::kBadFinalT], p);
    if (n_contrib[p] > e - s) atomicMin(&status[gs::kBadContrib], p);
    if (!gs::finite(v_image[3 * p]) || !gs::finite(v_image[3 * p + 1]) || !gs::finite(v_image[3 * p + 2]))
      atomicMin(&status[gs::kBadVImage], p);
    if (!gs::finite(v_alpha[p])) atomicMin(&status[gs::kBadVAlpha], p);
  }
}
TESSERA_EXPORT_BLOCK(gs_render_check_bwd, gs::kCheckThreads)

// The balanced layout's staging: entry k of the sorted list gets Gaussian ids[k]'s values.
// Any 1-D grid of kCheckThreads (grid-stride over m).
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kCheckThreads)
    gs_render_reorder(const float* means2d, const float* conics, const float* opacities, const float* colors,
                      uint32_t n, const uint32_t* ids, uint32_t m, float* s_means2d, float* s_conics,
                      float* s_opacities, float* s_colors, const uint32_t* status) {
  if (gs::any_bad(status, gs::kForwardWords)) return;
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t k = blockIdx.x * blockDim.x + threadIdx.x; k < m; k += stride) {
    const uint32_t g = ids[k] < n ? ids[k] : 0;
    s_means2d[2 * k] = means2d[2 * g];
    s_means2d[2 * k + 1] = means2d[2 * g + 1];
    s_conics[3 * k] = conics[3 * g];
    s_conics[3 * k + 1] = conics[3 * g + 1];
    s_conics[3 * k + 2] = conics[3 * g + 2];
    s_opacities[k] = opacities[g];
    s_colors[3 * k] = colors[3 * g];
    s_colors[3 * k + 1] = colors[3 * g + 1];
    s_colors[3 * k + 2] = colors[3 * g + 2];
  }
}
TESSERA_EXPORT_BLOCK(gs_render_reorder, gs::kCheckThreads)

// The forward. Grid (tiles_x, tiles_y), block 256. With indirect = 1 the attribute arrays are
// per Gaussian (n entries, read at ids[k]); with indirect = 0 they are per sorted entry (m
// entries, read at k) and ids is not read.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_render_fwd(const float* means2d, const float* conics, const float* opacities, const float* colors,
                  uint32_t n, const uint32_t* ids, uint32_t m, uint32_t indirect, const uint32_t* tile_ranges,
                  uint32_t tiles_x, uint32_t width, uint32_t height, float bg0, float bg1, float bg2,
                  float* image, float* alpha, uint32_t* n_contrib, float* final_t, const uint32_t* status) {
  __shared__ float s_mean[gs::kThreads][2];
  __shared__ float s_conic[gs::kThreads][3];
  __shared__ float s_opac[gs::kThreads];
  __shared__ float s_col[gs::kThreads][3];
  if (gs::any_bad(status, gs::kForwardWords)) return;
  const uint32_t tid = threadIdx.x;
  const uint32_t i = blockIdx.x * gs::kTile + tid % gs::kTile;
  const uint32_t j = blockIdx.y * gs::kTile + tid / gs::kTile;
  const bool inside = i < width && j < height;
  const float px = static_cast<float>(i) + 0.5f;
  const float py = static_cast<float>(j) + 0.5f;
  uint32_t start, end;
  gs::tile_range(tile_ranges, blockIdx.y * tiles_x + blockIdx.x, m, &start, &end);

  bool done = !inside;
  float t = 1.0f;
  float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f;
  uint32_t last = 0;
  for (uint32_t b = start; b < end; b += gs::kThreads) {
    // Also the barrier between the previous batch's reads and this batch's writes.
    if (__syncthreads_count(done ? 1 : 0) == gs::kThreads) break;
    const uint32_t k = b + tid;
    if (k < end) {
      uint32_t g = k;
      if (indirect) g = ids[k] < n ? ids[k] : 0;
      s_mean[tid][0] = means2d[2 * g];
      s_mean[tid][1] = means2d[2 * g + 1];
      s_conic[tid][0] = conics[3 * g];
      s_conic[tid][1] = conics[3 * g + 1];
      s_conic[tid][2] = conics[3 * g + 2];
      s_opac[tid] = opacities[g];
      s_col[tid][0] = colors[3 * g];
      s_col[tid][1] = colors[3 * g + 1];
      s_col[tid][2] = colors[3 * g + 2];
    }
    __syncthreads();
    const uint32_t count = end - b < static_cast<uint32_t>(gs::kThreads) ? end - b : gs::kThreads;
    for (uint32_t q = 0; q < count && !done; ++q) {
      gs::Hit h;
      if (!gs::eval(s_mean[q][0], s_mean[q][1], s_conic[q][0], s_conic[q][1], s_conic[q][2], s_opac[q], px, py,
                    &h))
        continue;
      const float next_t = t * (1.0f - h.alpha);
      if (next_t < gs::kTMin) {
        done = true;
        break;
      }
      const float w = h.alpha * t;
      acc0 += s_col[q][0] * w;
      acc1 += s_col[q][1] * w;
      acc2 += s_col[q][2] * w;
      t = next_t;
      last = b - start + q + 1;
    }
  }
  if (inside) {
    const uint32_t p = j * width + i;
    image[3 * p] = acc0 + t * bg0;
    image[3 * p + 1] = acc1 + t * bg1;
    image[3 * p + 2] = acc2 + t * bg2;
    alpha[p] = 1.0f - t;
    n_contrib[p] = last;
    final_t[p] = t;
  }
}
TESSERA_EXPORT_BLOCK(gs_render_fwd, gs::kThreads)

// The backward. Grid (tiles_x, tiles_y), block 256; the attributes as in gs_render_fwd (per
// Gaussian at ids[k] with indirect = 1, per sorted entry at k with indirect = 0); ids always
// gives the Gaussian whose gradients an entry adds to. The gradient buffers must hold zeros (or
// what to add to); they get atomicAdds.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_render_bwd(const float* means2d, const float* conics, const float* opacities, const float* colors,
                  uint32_t n, const uint32_t* ids, uint32_t m, uint32_t indirect, const uint32_t* tile_ranges,
                  uint32_t tiles_x,
                  uint32_t width, uint32_t height, float bg0, float bg1, float bg2, const float* final_t,
                  const uint32_t* n_contrib, const float* v_image, const float* v_alpha, float* v_means2d,
                  float* v_conics, float* v_colors, float* v_opacities, const uint32_t* status) {
  __shared__ uint32_t s_id[gs::kThreads];
  __shared__ float s_mean[gs::kThreads][2];
  __shared__ float s_conic[gs::kThreads][3];
  __shared__ float s_opac[gs::kThreads];
  __shared__ float s_col[gs::kThreads][3];
  __shared__ uint32_t s_warp_max[gs::kThreads / 32];
  if (gs::any_bad(status, gs::kStatusWords)) return;
  const uint32_t tid = threadIdx.x;
  const int lane = lane_id();
  const int warp = static_cast<int>(tid) / kWarpSize;
  const int nwarps = gs::kThreads / kWarpSize;
  const uint32_t i = blockIdx.x * gs::kTile + tid % gs::kTile;
  const uint32_t j = blockIdx.y * gs::kTile + tid / gs::kTile;
  const bool inside = i < width && j < height;
  const float px = static_cast<float>(i) + 0.5f;
  const float py = static_cast<float>(j) + 0.5f;
  uint32_t start, end;
  gs::tile_range(tile_ranges, blockIdx.y * tiles_x + blockIdx.x, m, &start, &end);

  const uint32_t p = inside ? j * width + i : 0;
  const float t_final = inside ? final_t[p] : 1.0f;
  uint32_t last = inside ? n_contrib[p] : 0;
  if (last > end - start) last = end - start;
  const float vc0 = inside ? v_image[3 * p] : 0.0f;
  const float vc1 = inside ? v_image[3 * p + 1] : 0.0f;
  const float vc2 = inside ? v_image[3 * p + 2] : 0.0f;
  const float va = inside ? v_alpha[p] : 0.0f;
  const float bg_dot = bg0 * vc0 + bg1 * vc1 + bg2 * vc2;

  // The block's largest n_contrib: batches start there.
  uint32_t wmax = last;
#pragma unroll
  for (int d = kWarpSize / 2; d > 0; d >>= 1) {
    const uint32_t o = shfl_xor(wmax, d);
    wmax = o > wmax ? o : wmax;
  }
  if (lane == 0) s_warp_max[warp] = wmax;
  __syncthreads();
  uint32_t block_last = 0;
  for (int w = 0; w < nwarps; ++w) block_last = s_warp_max[w] > block_last ? s_warp_max[w] : block_last;

  float t = t_final;
  float buf0 = 0.0f, buf1 = 0.0f, buf2 = 0.0f;
  for (uint32_t bend = block_last; bend > 0;) {
    const uint32_t bstart = bend > static_cast<uint32_t>(gs::kThreads) ? bend - gs::kThreads : 0;
    // Positions [bstart, bend) of the range. The barrier separates the previous batch's reads.
    __syncthreads();
    const uint32_t pos_load = bstart + tid;
    if (pos_load < bend) {
      const uint32_t k = start + pos_load;
      const uint32_t id = ids[k] < n ? ids[k] : 0;
      const uint32_t g = indirect ? id : k;
      s_id[tid] = id;
      s_mean[tid][0] = means2d[2 * g];
      s_mean[tid][1] = means2d[2 * g + 1];
      s_conic[tid][0] = conics[3 * g];
      s_conic[tid][1] = conics[3 * g + 1];
      s_conic[tid][2] = conics[3 * g + 2];
      s_opac[tid] = opacities[g];
      s_col[tid][0] = colors[3 * g];
      s_col[tid][1] = colors[3 * g + 1];
      s_col[tid][2] = colors[3 * g + 2];
    }
    __syncthreads();
    for (uint32_t q = bend - bstart; q-- > 0;) {
      const uint32_t pos = bstart + q;
      gs::Hit h;
      const float ga = s_conic[q][0], gb = s_conic[q][1], gc = s_conic[q][2], o = s_opac[q];
      const bool hit = pos < last && gs::eval(s_mean[q][0], s_mean[q][1], ga, gb, gc, o, px, py, &h);
      // Warp-uniform: skip the reduction when no lane of the warp touches this Gaussian.
      if (tessera::ballot(hit) == 0) continue;
      float g_col0 = 0.0f, g_col1 = 0.0f, g_col2 = 0.0f, g_op = 0.0f;
      float g_a = 0.0f, g_b = 0.0f, g_c = 0.0f, g_mx = 0.0f, g_my = 0.0f;
      if (hit) {
        const float one_m = 1.0f - h.alpha;
        t = t / one_m;
        const float w = h.alpha * t;
        const float c0 = s_col[q][0], c1 = s_col[q][1], c2 = s_col[q][2];
        g_col0 = w * vc0;
        g_col1 = w * vc1;
        g_col2 = w * vc2;
        float dl_dalpha = (c0 * t - buf0 / one_m) * vc0 + (c1 * t - buf1 / one_m) * vc1 + (c2 * t - buf2 / one_m) * vc2;
        buf0 += c0 * w;
        buf1 += c1 * w;
        buf2 += c2 * w;
        dl_dalpha += t_final / one_m * (va - bg_dot);
        if (!h.clamped) {
          g_op = h.gauss * dl_dalpha;
          const float v_power = o * h.gauss * dl_dalpha;
          g_a = -0.5f * h.dx * h.dx * v_power;
          g_b = -h.dx * h.dy * v_power;
          g_c = -0.5f * h.dy * h.dy * v_power;
          g_mx = -(ga * h.dx + gb * h.dy) * v_power;
          g_my = -(gb * h.dx + gc * h.dy) * v_power;
        }
      }
      g_col0 = warp_sum(g_col0);
      g_col1 = warp_sum(g_col1);
      g_col2 = warp_sum(g_col2);
      g_op = warp_sum(g_op);
      g_a = warp_sum(g_a);
      g_b = warp_sum(g_b);
      g_c = warp_sum(g_c);
      g_mx = warp_sum(g_mx);
      g_my = warp_sum(g_my);
      if (lane == 0) {
        const uint32_t g = s_id[q];
        atomicAdd(&v_colors[3 * g], g_col0);
        atomicAdd(&v_colors[3 * g + 1], g_col1);
        atomicAdd(&v_colors[3 * g + 2], g_col2);
        atomicAdd(&v_opacities[g], g_op);
        atomicAdd(&v_conics[3 * g], g_a);
        atomicAdd(&v_conics[3 * g + 1], g_b);
        atomicAdd(&v_conics[3 * g + 2], g_c);
        atomicAdd(&v_means2d[2 * g], g_mx);
        atomicAdd(&v_means2d[2 * g + 1], g_my);
      }
    }
    bend = bstart;
  }
}
TESSERA_EXPORT_BLOCK(gs_render_bwd, gs::kThreads)
