// gs/project.cu: the EWA projection of 3D Gaussians (gs.project, issue 15) and its
// vector-Jacobian product, one thread per Gaussian, in f32 as gsplat computes it. Semantics and
// the f64 reference: src/reference/gs/project.rs (every step and constant is named there); the
// op: src/ops/gs/project.rs.
//
// Layouts (f32, row-major): means [N,3], quats [N,4] wxyz (normalised inside), scales [N,3]
// linear; cam [25] = viewmat (16, world to camera, row-major) then K (9, row-major; fx = K[0],
// cx = K[2], fy = K[4], cy = K[5]). Outputs: means2d [N,2], depths [N], conics [N,3] (A, B, C),
// radii [N] i32; a culled Gaussian gets radius 0 and zeros.
//
// Input checks on the device: status[0] (INT_MAX before the launch) takes the atomicMin of
// i * 16 + code over the bad Gaussians i, so the host reads the first bad Gaussian and its first
// problem. Codes: 1 means, 2 quats, 3 scales not finite; 4 zero quaternion; 5 negative scale;
// 6 the projection overflows f32; 7 v_means2d, 8 v_conics, 9 v_depths not finite (backward).
// A bad Gaussian's outputs are zeros (the call fails anyway).
#include "../common/tessera.cuh"

namespace tessera {
namespace gs {

constexpr int kThreads = 128;
constexpr float kBlur = 0.3f;          // COV2D_BLUR
constexpr float kClampMargin = 0.3f;   // FOV_CLAMP_MARGIN
constexpr float kDiscMin = 0.1f;       // LAMBDA_DISCRIMINANT_MIN
constexpr float kSigmas = 3.0f;        // RADIUS_SIGMAS

enum Code : int32_t {
  kOk = 0,
  kMeans = 1,
  kQuats = 2,
  kScales = 3,
  kZeroQuat = 4,
  kNegScale = 5,
  kOverflow = 6,
  kVMeans2d = 7,
  kVConics = 8,
  kVDepths = 9,
};

struct Cam {
  float w[3][3];
  float tv[3];
  float fx, fy, cx, cy, width, height, near_, far_;
  float lxp, lxn, lyp, lyn;
};

__device__ __forceinline__ Cam load_cam(const float* cam, uint32_t width, uint32_t height, float near_, float far_) {
  Cam c;
  for (int r = 0; r < 3; ++r) {
    for (int k = 0; k < 3; ++k) c.w[r][k] = cam[4 * r + k];
    c.tv[r] = cam[4 * r + 3];
  }
  c.fx = cam[16];
  c.cx = cam[18];
  c.fy = cam[20];
  c.cy = cam[21];
  c.width = static_cast<float>(width);
  c.height = static_cast<float>(height);
  c.near_ = near_;
  c.far_ = far_;
  const float tan_fovx = 0.5f * c.width / c.fx;
  const float tan_fovy = 0.5f * c.height / c.fy;
  c.lxp = (c.width - c.cx) / c.fx + kClampMargin * tan_fovx;
  c.lxn = c.cx / c.fx + kClampMargin * tan_fovx;
  c.lyp = (c.height - c.cy) / c.fy + kClampMargin * tan_fovy;
  c.lyn = c.cy / c.fy + kClampMargin * tan_fovy;
  return c;
}

__device__ __forceinline__ bool finite(float x) { return x - x == 0.0f; }

// The first problem of Gaussian i's inputs (0 when none).
__device__ __forceinline__ int32_t check_inputs(const float* mu, const float* q, const float* s) {
  if (!(finite(mu[0]) && finite(mu[1]) && finite(mu[2]))) return kMeans;
  if (!(finite(q[0]) && finite(q[1]) && finite(q[2]) && finite(q[3]))) return kQuats;
  if (!(finite(s[0]) && finite(s[1]) && finite(s[2]))) return kScales;
  if (q[0] == 0.0f && q[1] == 0.0f && q[2] == 0.0f && q[3] == 0.0f) return kZeroQuat;
  if (s[0] < 0.0f || s[1] < 0.0f || s[2] < 0.0f) return kNegScale;
  return kOk;
}

__device__ __forceinline__ void report(int32_t* status, uint32_t i, int32_t code) {
  atomicMin(&status[0], static_cast<int32_t>(i * 16u + static_cast<uint32_t>(code)));
}

// The forward intermediates of one Gaussian (what the backward needs).
struct Fwd {
  float qn[4];
  float qnorm;
  float r[3][3];
  float t[3];
  float wm[3][3];  // W M (kGrad only)
  float p[2][3];   // J W M (kGrad only)
  float j[2][3];
  bool clamped_x, clamped_y;
  float tx, ty;
  float conic[3];
  float mean2d[2];
  int32_t radius;
};

__device__ __forceinline__ void quat_to_rotmat(const float* q, float r[3][3]) {
  const float w = q[0], x = q[1], y = q[2], z = q[3];
  r[0][0] = 1.0f - 2.0f * (y * y + z * z);
  r[0][1] = 2.0f * (x * y - w * z);
  r[0][2] = 2.0f * (x * z + w * y);
  r[1][0] = 2.0f * (x * y + w * z);
  r[1][1] = 1.0f - 2.0f * (x * x + z * z);
  r[1][2] = 2.0f * (y * z - w * x);
  r[2][0] = 2.0f * (x * z - w * y);
  r[2][1] = 2.0f * (y * z + w * x);
  r[2][2] = 1.0f - 2.0f * (x * x + y * y);
}

// Projects one Gaussian with valid inputs (kGrad: also f.sc, for the backward). Returns kOk with f.radius > 0 (kept) or 0 (culled),
// or kOverflow.
template <bool kGrad>
__device__ __forceinline__ int32_t forward_one(const float* mu, const float* q, const float* s, const Cam& c,
                                               Fwd& f) {
  f.radius = 0;
  for (int r = 0; r < 3; ++r) f.t[r] = (c.w[r][0] * mu[0] + c.w[r][1] * mu[1] + c.w[r][2] * mu[2]) + c.tv[r];
  const float x = f.t[0], y = f.t[1], z = f.t[2];
  if (!(finite(x) && finite(y) && finite(z))) return kOverflow;
  if (z < c.near_ || z > c.far_) return kOk;

  f.qnorm = sqrtf(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  for (int k = 0; k < 4; ++k) f.qn[k] = q[k] / f.qnorm;
  quat_to_rotmat(f.qn, f.r);
  float m[3][3];
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) m[r][k] = f.r[r][k] * s[k];
  // W M (M = R S): Σc = (W M)(W M)ᵀ.
  float wm[3][3];
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) wm[r][k] = c.w[r][0] * m[0][k] + c.w[r][1] * m[1][k] + c.w[r][2] * m[2][k];
  if (kGrad)
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 3; ++k) f.wm[r][k] = wm[r][k];

  const float rx = x / z, ry = y / z;
  f.clamped_x = !(rx <= c.lxp && rx >= -c.lxn);
  f.clamped_y = !(ry <= c.lyp && ry >= -c.lyn);
  f.tx = z * fminf(fmaxf(rx, -c.lxn), c.lxp);
  f.ty = z * fminf(fmaxf(ry, -c.lyn), c.lyp);
  const float z2 = z * z;
  f.j[0][0] = c.fx / z;
  f.j[0][1] = 0.0f;
  f.j[0][2] = -c.fx * f.tx / z2;
  f.j[1][0] = 0.0f;
  f.j[1][1] = c.fy / z;
  f.j[1][2] = -c.fy * f.ty / z2;

  // cov2d = J Σc Jᵀ + blur = P Pᵀ + blur with P = J W M (2×3), so a, c are sums of squares and
  // det = a·c − b² is, by Cauchy–Binet, Σ (2×2 minors of P)² + blur·(a0 + c0) + blur²: no
  // cancellation (gsplat's f32 a·c − b² loses up to 1e-3 of the conic of needle-like splats).
  float p[2][3];
  for (int k = 0; k < 3; ++k) {
    p[0][k] = f.j[0][0] * wm[0][k] + f.j[0][2] * wm[2][k];
    p[1][k] = f.j[1][1] * wm[1][k] + f.j[1][2] * wm[2][k];
  }
  if (kGrad)
    for (int k = 0; k < 3; ++k) {
      f.p[0][k] = p[0][k];
      f.p[1][k] = p[1][k];
    }
  const float a0 = p[0][0] * p[0][0] + p[0][1] * p[0][1] + p[0][2] * p[0][2];
  const float c0 = p[1][0] * p[1][0] + p[1][1] * p[1][1] + p[1][2] * p[1][2];
  const float b = p[0][0] * p[1][0] + p[0][1] * p[1][1] + p[0][2] * p[1][2];
  const float m01 = p[0][0] * p[1][1] - p[0][1] * p[1][0];
  const float m02 = p[0][0] * p[1][2] - p[0][2] * p[1][0];
  const float m12 = p[0][1] * p[1][2] - p[0][2] * p[1][1];
  const float a = a0 + kBlur;
  const float cc = c0 + kBlur;
  const float det = (m01 * m01 + m02 * m02 + m12 * m12) + kBlur * (a0 + c0) + kBlur * kBlur;
  if (!(finite(a) && finite(b) && finite(cc) && finite(det))) return kOverflow;
  if (det <= 0.0f) return kOk;
  f.conic[0] = cc / det;
  f.conic[1] = -b / det;
  f.conic[2] = a / det;

  // m² − det = ((a − c)/2)² + b² (the same number, without the cancellation).
  const float mid = 0.5f * (a + cc);
  const float half_diff = 0.5f * (a0 - c0);
  const float lambda_max = mid + sqrtf(fmaxf(half_diff * half_diff + b * b, kDiscMin));
  const float radius = ceilf(kSigmas * sqrtf(lambda_max));
  if (radius <= 0.0f) return kOk;
  f.mean2d[0] = c.fx * x / z + c.cx;
  f.mean2d[1] = c.fy * y / z + c.cy;
  if (f.mean2d[0] + radius <= 0.0f || f.mean2d[0] - radius >= c.width || f.mean2d[1] + radius <= 0.0f ||
      f.mean2d[1] - radius >= c.height)
    return kOk;
  f.radius = radius >= 2147483648.0f ? 2147483647 : static_cast<int32_t>(radius);
  return kOk;
}

}  // namespace gs
}  // namespace tessera

using namespace tessera;

// One thread per Gaussian (grid-stride). status: [INT_MAX] before the launch.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_project(const float* means, const float* quats, const float* scales, const float* cam, uint32_t width,
               uint32_t height, float near_plane, float far_plane, uint32_t n, float* means2d, float* depths,
               float* conics, int32_t* radii, int32_t* status) {
  const gs::Cam c = gs::load_cam(cam, width, height, near_plane, far_plane);
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float* mu = means + 3 * static_cast<size_t>(i);
    const float* q = quats + 4 * static_cast<size_t>(i);
    const float* s = scales + 3 * static_cast<size_t>(i);
    gs::Fwd f;
    f.radius = 0;
    int32_t code = gs::check_inputs(mu, q, s);
    if (code == gs::kOk) code = gs::forward_one<false>(mu, q, s, c, f);
    if (code != gs::kOk) {
      gs::report(status, i, code);
      f.radius = 0;
    }
    const bool kept = f.radius > 0;
    means2d[2 * static_cast<size_t>(i)] = kept ? f.mean2d[0] : 0.0f;
    means2d[2 * static_cast<size_t>(i) + 1] = kept ? f.mean2d[1] : 0.0f;
    depths[i] = kept ? f.t[2] : 0.0f;
    for (int k = 0; k < 3; ++k) conics[3 * static_cast<size_t>(i) + k] = kept ? f.conic[k] : 0.0f;
    radii[i] = f.radius;
  }
}
TESSERA_EXPORT_BLOCK(gs_project, gs::kThreads)

// The vector-Jacobian product (reference::gs::project::project_backward), one thread per
// Gaussian (grid-stride); culled Gaussians get zeros. status as gs_project's.
TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_project_backward(const float* means, const float* quats, const float* scales, const float* cam,
                        uint32_t width, uint32_t height, float near_plane, float far_plane, uint32_t n,
                        const float* v_means2d, const float* v_conics, const float* v_depths, float* v_means,
                        float* v_quats, float* v_scales, int32_t* status) {
  const gs::Cam c = gs::load_cam(cam, width, height, near_plane, far_plane);
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const size_t i2 = 2 * static_cast<size_t>(i), i3 = 3 * static_cast<size_t>(i), i4 = 4 * static_cast<size_t>(i);
    const float* mu = means + i3;
    const float* q = quats + i4;
    const float* s = scales + i3;
    float gm[3] = {0.0f, 0.0f, 0.0f}, gq[4] = {0.0f, 0.0f, 0.0f, 0.0f}, gsc[3] = {0.0f, 0.0f, 0.0f};
    gs::Fwd f;
    f.radius = 0;
    int32_t code = gs::check_inputs(mu, q, s);
    if (code == gs::kOk) {
      if (!(gs::finite(v_means2d[i2]) && gs::finite(v_means2d[i2 + 1])))
        code = gs::kVMeans2d;
      else if (!(gs::finite(v_conics[i3]) && gs::finite(v_conics[i3 + 1]) && gs::finite(v_conics[i3 + 2])))
        code = gs::kVConics;
      else if (!gs::finite(v_depths[i]))
        code = gs::kVDepths;
    }
    if (code == gs::kOk) code = gs::forward_one<true>(mu, q, s, c, f);
    if (code != gs::kOk) {
      gs::report(status, i, code);
      f.radius = 0;
    }
    if (f.radius > 0) {
      const float x = f.t[0], y = f.t[1], z = f.t[2];
      // conic = cov2d⁻¹: v_cov = −P G P, G the symmetric split of (vA, vB, vC).
      const float p[2][2] = {{f.conic[0], f.conic[1]}, {f.conic[1], f.conic[2]}};
      const float va = v_conics[i3], vb = v_conics[i3 + 1], vc = v_conics[i3 + 2];
      const float g[2][2] = {{va, 0.5f * vb}, {0.5f * vb, vc}};
      float pg[2][2], v_cov[2][2];
      for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 2; ++k) pg[r][k] = p[r][0] * g[0][k] + p[r][1] * g[1][k];
      for (int r = 0; r < 2; ++r)
        for (int k = 0; k < 2; ++k) v_cov[r][k] = -(pg[r][0] * p[0][k] + pg[r][1] * p[1][k]);
      // cov2d = P Pᵀ + blur, P = J (W M): v_P = (v_cov + v_covᵀ) P; v_J = v_P (W M)ᵀ (the
      // reference's (v_cov + v_covᵀ) J Σc); v_(W M) = Jᵀ v_P.
      float v_p[2][3];
      for (int a = 0; a < 2; ++a)
        for (int l = 0; l < 3; ++l)
          v_p[a][l] = (v_cov[a][0] + v_cov[0][a]) * f.p[0][l] + (v_cov[a][1] + v_cov[1][a]) * f.p[1][l];
      float v_j[2][3];
      for (int a = 0; a < 2; ++a)
        for (int r = 0; r < 3; ++r)
          v_j[a][r] = v_p[a][0] * f.wm[r][0] + v_p[a][1] * f.wm[r][1] + v_p[a][2] * f.wm[r][2];
      float v_wm[3][3];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) v_wm[r][k] = f.j[0][r] * v_p[0][k] + f.j[1][r] * v_p[1][k];

      // The camera-space mean: from mean2d, depth and the entries of J.
      const float gx = v_means2d[i2], gy = v_means2d[i2 + 1];
      const float z2 = z * z, z3 = z * z * z;
      float v_t[3] = {c.fx / z * gx, c.fy / z * gy, -(c.fx * x * gx + c.fy * y * gy) / z2 + v_depths[i]};
      v_t[2] += -c.fx / z2 * v_j[0][0] - c.fy / z2 * v_j[1][1];
      if (f.clamped_x) {
        v_t[2] += c.fx * f.tx / z3 * v_j[0][2];
      } else {
        v_t[0] += -c.fx / z2 * v_j[0][2];
        v_t[2] += 2.0f * c.fx * f.tx / z3 * v_j[0][2];
      }
      if (f.clamped_y) {
        v_t[2] += c.fy * f.ty / z3 * v_j[1][2];
      } else {
        v_t[1] += -c.fy / z2 * v_j[1][2];
        v_t[2] += 2.0f * c.fy * f.ty / z3 * v_j[1][2];
      }

      // t = W μ + tvec: v_μ = Wᵀ v_t. v_M = Wᵀ v_(W M); M = R S: v_R = v_M S, v_s = diag(Rᵀ v_M).
      for (int k = 0; k < 3; ++k) gm[k] = c.w[0][k] * v_t[0] + c.w[1][k] * v_t[1] + c.w[2][k] * v_t[2];
      float v_m[3][3];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) v_m[r][k] = c.w[0][r] * v_wm[0][k] + c.w[1][r] * v_wm[1][k] + c.w[2][r] * v_wm[2][k];
      float v_r[3][3];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) v_r[r][k] = v_m[r][k] * s[k];
      for (int k = 0; k < 3; ++k) gsc[k] = f.r[0][k] * v_m[0][k] + f.r[1][k] * v_m[1][k] + f.r[2][k] * v_m[2][k];

      // R(q/|q|): through the rotation, then the normalisation.
      const float w = f.qn[0], qx = f.qn[1], qy = f.qn[2], qz = f.qn[3];
      float v_qn[4];
      v_qn[0] = 2.0f * (-qz * v_r[0][1] + qy * v_r[0][2] + qz * v_r[1][0] - qx * v_r[1][2] - qy * v_r[2][0] +
                        qx * v_r[2][1]);
      v_qn[1] = 2.0f * (-2.0f * qx * (v_r[1][1] + v_r[2][2]) + qy * (v_r[0][1] + v_r[1][0]) +
                        qz * (v_r[0][2] + v_r[2][0]) + w * (v_r[2][1] - v_r[1][2]));
      v_qn[2] = 2.0f * (-2.0f * qy * (v_r[0][0] + v_r[2][2]) + qx * (v_r[0][1] + v_r[1][0]) +
                        qz * (v_r[1][2] + v_r[2][1]) + w * (v_r[0][2] - v_r[2][0]));
      v_qn[3] = 2.0f * (-2.0f * qz * (v_r[0][0] + v_r[1][1]) + qx * (v_r[0][2] + v_r[2][0]) +
                        qy * (v_r[1][2] + v_r[2][1]) + w * (v_r[1][0] - v_r[0][1]));
      const float dot = v_qn[0] * f.qn[0] + v_qn[1] * f.qn[1] + v_qn[2] * f.qn[2] + v_qn[3] * f.qn[3];
      for (int k = 0; k < 4; ++k) gq[k] = (v_qn[k] - dot * f.qn[k]) / f.qnorm;
    }
    for (int k = 0; k < 3; ++k) v_means[i3 + k] = gm[k];
    for (int k = 0; k < 4; ++k) v_quats[i4 + k] = gq[k];
    for (int k = 0; k < 3; ++k) v_scales[i3 + k] = gsc[k];
  }
}
TESSERA_EXPORT_BLOCK(gs_project_backward, gs::kThreads)

// ---- SH colours (gs.sh_colors): gsplat's spherical_harmonics, degree 0-3, then max(sh + 0.5, 0).
// coeffs [N,K,3] row-major (K >= (degree+1)^2, checked by the op); the view direction is
// mean - campos with campos = -W^T tvec, normalised for degree >= 1. Status codes as above plus
// 10 coeffs not finite, 11 zero view direction (degree >= 1), 12 v_colors not finite.
namespace tessera {
namespace gs {

enum ShCode : int32_t { kCoeffs = 10, kZeroDir = 11, kVColors = 12 };

// The basis (first (degree+1)^2 entries) at the unit direction (x, y, z), and, with kGrad, its
// gradient with respect to (x, y, z) taken as independent.
template <bool kGrad>
__device__ __forceinline__ void sh_basis(uint32_t degree, float x, float y, float z, float b[16], float g[16][3]) {
  const float C0 = 0.28209479177387814f, C1 = 0.4886025119029199f;
  const float C2_XY = 1.0925484305920792f, C2_YZ = -1.0925484305920792f, C2_ZZ = 0.9461746957575601f,
              C2_ZZ0 = -0.31539156525252005f, C2_XXYY = 0.5462742152960396f;
  const float C3_A = -0.5900435899266435f, C3_B = 1.445305721320277f, C3_C2 = -2.285228997322329f,
              C3_C0 = 0.4570457994644658f, C3_D3 = 1.865881662950577f, C3_D1 = -1.119528997770346f;
  for (int k = 0; k < 16; ++k) {
    b[k] = 0.0f;
    if (kGrad) g[k][0] = g[k][1] = g[k][2] = 0.0f;
  }
  b[0] = C0;
  if (degree >= 1) {
    b[1] = -C1 * y;
    b[2] = C1 * z;
    b[3] = -C1 * x;
    if (kGrad) {
      g[1][1] = -C1;
      g[2][2] = C1;
      g[3][0] = -C1;
    }
  }
  if (degree >= 2) {
    b[4] = C2_XY * x * y;
    b[5] = C2_YZ * y * z;
    b[6] = C2_ZZ * z * z + C2_ZZ0;
    b[7] = C2_YZ * x * z;
    b[8] = C2_XXYY * (x * x - y * y);
    if (kGrad) {
      g[4][0] = C2_XY * y;
      g[4][1] = C2_XY * x;
      g[5][1] = C2_YZ * z;
      g[5][2] = C2_YZ * y;
      g[6][2] = 2.0f * C2_ZZ * z;
      g[7][0] = C2_YZ * z;
      g[7][2] = C2_YZ * x;
      g[8][0] = 2.0f * C2_XXYY * x;
      g[8][1] = -2.0f * C2_XXYY * y;
    }
  }
  if (degree >= 3) {
    const float f = C3_C2 * z * z + C3_C0;
    const float fz = 2.0f * C3_C2 * z;
    b[9] = C3_A * (3.0f * x * x * y - y * y * y);
    b[10] = C3_B * 2.0f * x * y * z;
    b[11] = f * y;
    b[12] = z * (C3_D3 * z * z + C3_D1);
    b[13] = f * x;
    b[14] = C3_B * z * (x * x - y * y);
    b[15] = C3_A * (x * x * x - 3.0f * x * y * y);
    if (kGrad) {
      g[9][0] = C3_A * 6.0f * x * y;
      g[9][1] = C3_A * (3.0f * x * x - 3.0f * y * y);
      g[10][0] = C3_B * 2.0f * y * z;
      g[10][1] = C3_B * 2.0f * x * z;
      g[10][2] = C3_B * 2.0f * x * y;
      g[11][1] = f;
      g[11][2] = fz * y;
      g[12][2] = 3.0f * C3_D3 * z * z + C3_D1;
      g[13][0] = f;
      g[13][2] = fz * x;
      g[14][0] = C3_B * 2.0f * x * z;
      g[14][1] = -C3_B * 2.0f * y * z;
      g[14][2] = C3_B * (x * x - y * y);
      g[15][0] = C3_A * (3.0f * x * x - 3.0f * y * y);
      g[15][1] = -C3_A * 6.0f * x * y;
    }
  }
}

// Gaussian i's unit view direction and its norm; a status code (0 ok). Degree 0: the raw
// direction, norm 1 (not read).
__device__ __forceinline__ int32_t view_dir(uint32_t degree, const float* mu, const float* cam, float u[3],
                                            float& norm) {
  if (!(finite(mu[0]) && finite(mu[1]) && finite(mu[2]))) return kMeans;
  // campos = -W^T tvec; dir = mu - campos = mu + W^T tvec.
  for (int a = 0; a < 3; ++a) u[a] = mu[a] + (cam[a] * cam[3] + cam[4 + a] * cam[7] + cam[8 + a] * cam[11]);
  norm = 1.0f;
  if (degree == 0) return kOk;
  norm = sqrtf(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]);
  if (!(norm > 0.0f) || !finite(norm)) return kZeroDir;
  for (int a = 0; a < 3; ++a) u[a] /= norm;
  return kOk;
}

}  // namespace gs
}  // namespace tessera

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_sh_colors(uint32_t degree, const float* means, const float* cam, uint32_t n, uint32_t k, const float* coeffs,
                 float* colors, int32_t* status) {
  const uint32_t used = (degree + 1) * (degree + 1);
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float u[3], norm, b[16];
    int32_t code = gs::view_dir(degree, means + 3 * static_cast<size_t>(i), cam, u, norm);
    const float* co = coeffs + static_cast<size_t>(i) * k * 3;
    if (code == gs::kOk)
      for (uint32_t j = 0; j < 3 * k; ++j)
        if (!gs::finite(co[j])) {
          code = gs::kCoeffs;
          break;
        }
    float col[3] = {0.0f, 0.0f, 0.0f};
    if (code == gs::kOk) {
      gs::sh_basis<false>(degree, u[0], u[1], u[2], b, nullptr);
#pragma unroll
      for (uint32_t kk = 0; kk < 16; ++kk)
        if (kk < used)
          for (int c = 0; c < 3; ++c) col[c] += b[kk] * co[kk * 3 + c];
    } else {
      gs::report(status, i, code);
    }
    for (int c = 0; c < 3; ++c) colors[3 * static_cast<size_t>(i) + c] = code == gs::kOk ? fmaxf(col[c] + 0.5f, 0.0f) : 0.0f;
  }
}
TESSERA_EXPORT_BLOCK(gs_sh_colors, gs::kThreads)

TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(gs::kThreads)
    gs_sh_colors_backward(uint32_t degree, const float* means, const float* cam, uint32_t n, uint32_t k,
                          const float* coeffs, const float* v_colors, float* v_coeffs, float* v_means,
                          int32_t* status) {
  const uint32_t used = (degree + 1) * (degree + 1);
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float u[3], norm, b[16], g[16][3];
    int32_t code = gs::view_dir(degree, means + 3 * static_cast<size_t>(i), cam, u, norm);
    const float* co = coeffs + static_cast<size_t>(i) * k * 3;
    float* vco = v_coeffs + static_cast<size_t>(i) * k * 3;
    const float* vc = v_colors + 3 * static_cast<size_t>(i);
    if (code == gs::kOk)
      for (uint32_t j = 0; j < 3 * k; ++j)
        if (!gs::finite(co[j])) {
          code = gs::kCoeffs;
          break;
        }
    if (code == gs::kOk && !(gs::finite(vc[0]) && gs::finite(vc[1]) && gs::finite(vc[2]))) code = gs::kVColors;
    float vm[3] = {0.0f, 0.0f, 0.0f};
    for (uint32_t j = 0; j < 3 * k; ++j) vco[j] = 0.0f;
    if (code == gs::kOk) {
      gs::sh_basis<true>(degree, u[0], u[1], u[2], b, g);
      // rgb = max(raw + 0.5, 0): the gradient passes where raw + 0.5 >= 0.
      float raw[3] = {0.0f, 0.0f, 0.0f};
#pragma unroll
      for (uint32_t kk = 0; kk < 16; ++kk)  // unrolled: b and g stay in registers
        if (kk < used)
          for (int c = 0; c < 3; ++c) raw[c] += b[kk] * co[kk * 3 + c];
      float vr[3];
      for (int c = 0; c < 3; ++c) vr[c] = raw[c] + 0.5f >= 0.0f ? vc[c] : 0.0f;
      float vu[3] = {0.0f, 0.0f, 0.0f};
#pragma unroll
      for (uint32_t kk = 0; kk < 16; ++kk) {
        if (kk >= used) continue;
        float w = 0.0f;
        for (int c = 0; c < 3; ++c) {
          vco[kk * 3 + c] = b[kk] * vr[c];
          w += co[kk * 3 + c] * vr[c];
        }
        for (int a = 0; a < 3; ++a) vu[a] += g[kk][a] * w;
      }
      if (degree >= 1) {
        const float dot = vu[0] * u[0] + vu[1] * u[1] + vu[2] * u[2];
        for (int a = 0; a < 3; ++a) vm[a] = (vu[a] - dot * u[a]) / norm;
      }
    } else {
      gs::report(status, i, code);
    }
    for (int a = 0; a < 3; ++a) v_means[3 * static_cast<size_t>(i) + a] = vm[a];
  }
}
TESSERA_EXPORT_BLOCK(gs_sh_colors_backward, gs::kThreads)
