//! f64 reference for the 3DGS projection (EWA splatting) and spherical-harmonics colours, with
//! their analytic vector-Jacobian products. This is the oracle the device kernels of `gs.project`
//! and the SH stage are checked against; it follows gsplat's conventions (the fused EWA
//! projection `ProjectionEWA3DGSFused.cu` with `persp_proj` / `persp_proj_vjp`,
//! `quat_to_rotmat(_vjp)`, `quat_scale_to_covar_vjp`, `inverse_vjp` from `Utils.cuh`, and the SH
//! evaluation of `SphericalHarmonicsCUDA.cu`), written anew in f64.
//!
//! # Inputs
//! - `means[i]`: the Gaussian centre μ in world space.
//! - `quats[i]` = (w, x, y, z): a rotation quaternion, **w first**, not necessarily of unit length;
//!   it is normalised inside (`q / |q|`), and its gradient is taken with respect to the
//!   unnormalised input. A zero quaternion is an error.
//! - `scales[i]`: the three standard deviations along the rotated axes, **linear** (not log).
//!   A negative scale is an error; zero is allowed (a flat Gaussian; the 2-D blur keeps it
//!   invertible).
//! - the camera (`super::Camera`): `viewmat` is world→camera, row-major 4×4; `W` is its upper
//!   left 3×3 and `tvec` its last column (rows 0–2); the bottom row is not read. Of `k` only
//!   `fx = k[0]`, `cx = k[2]`, `fy = k[4]`, `cy = k[5]` are read (no skew, as gsplat). The camera
//!   looks along +z, x right, y down. `near` must be finite and > 0, `far > near` (may be
//!   `+inf`), `fx, fy > 0`, and `width, height ≥ 1`.
//!
//! # Projection (per Gaussian)
//! 1. `R = R(q/|q|)` (the usual unit-quaternion rotation matrix), `M = R·diag(s)`,
//!    `Σ = M Mᵀ = R S Sᵀ Rᵀ`.
//! 2. `t = W μ + tvec` = (x, y, z) in camera space; **culled** when `z < near` or `z > far`
//!    (a Gaussian exactly at `near` or `far` is kept, as in gsplat).
//! 3. `Σc = W Σ Wᵀ`.
//! 4. The Jacobian of the perspective map, with gsplat's frustum clamp ([`FOV_CLAMP_MARGIN`]):
//!    `tan_fovx = 0.5·width/fx`, `lim_x+ = (width − cx)/fx + 0.3·tan_fovx`,
//!    `lim_x− = cx/fx + 0.3·tan_fovx` (same for y with height, fy, cy);
//!    `tx = z·clamp(x/z, −lim_x−, lim_x+)`, `ty = z·clamp(y/z, −lim_y−, lim_y+)`;
//!    `J = [[fx/z, 0, −fx·tx/z²], [0, fy/z, −fy·ty/z²]]`.
//!    The clamp only enters `J` (so the covariance of a Gaussian far outside the view is that
//!    of one at the edge of the widened frustum); the projected mean is not clamped.
//! 5. `cov2d = J Σc Jᵀ + COV2D_BLUR·I` (`super::COV2D_BLUR` = 0.3, gsplat's `eps2d`) =
//!    `[[a, b], [b, c]]`; `det = a·c − b²`; **culled** when `det ≤ 0`.
//! 6. `conic = (c/det, −b/det, a/det)` — the (A, B, C) of the inverse.
//! 7. `m = (a + c)/2`, `λ_max = m + √max(0.1, m² − det)` ([`LAMBDA_DISCRIMINANT_MIN`]),
//!    `radius = ceil(3·√λ_max)` ([`RADIUS_SIGMAS`]); culled when `radius ≤ 0` (gsplat's
//!    `radius_clip` = 0, never reached with the blur).
//! 8. `mean2d = (fx·x/z + cx, fy·y/z + cy)`, `depth = z`.
//! 9. **culled** when the box `[mean2d ± radius]` lies entirely outside the image, exactly
//!    gsplat's test: `mean2d.x + r ≤ 0 || mean2d.x − r ≥ width || mean2d.y + r ≤ 0 ||
//!    mean2d.y − r ≥ height`.
//!
//! A culled Gaussian gets `radius = 0` and zero mean2d, depth and conic. The radius is an `i32`;
//! a radius that does not fit saturates at `i32::MAX`.
//!
//! Not modelled (gsplat options that `rasterization()` leaves off by default): the
//! "antialiased" compensation factor, opacity-aware / per-axis tight boxes of recent gsplat
//! versions (this reference keeps the single 3σ-of-λ_max radius of the issue and of gsplat
//! ≤ 1.4 / INRIA), precomputed covariances, and camera models other than pinhole.
//!
//! Note on the floor in step 7: the issue and the INRIA rasteriser use 0.1; gsplat's fused kernel
//! (≤ 1.4) used 0.01 and its packed kernel 0.1. It only matters for nearly isotropic splats.
//!
//! # Backward
//! `project_backward` is the VJP of `L = Σ v_means2d·mean2d + v_conics·conic + v_depths·depth`
//! through every step above, for the non-culled Gaussians (culled ones get 0; the radius and
//! the culling decisions are piecewise constant and carry no gradient). As in gsplat the conic
//! gradient is taken for the three stored numbers (A, B, C), i.e. the gradient w.r.t. the
//! symmetric inverse matrix is `[[vA, vB/2], [vB/2, vC]]`, and then
//! `v_cov2d = −P·G·P` with `P` the inverse. Through the clamp, gsplat's rule is followed, which is
//! the exact derivative of the clamped function: where `x/z` is inside `[−lim_x−, lim_x+]`,
//! `J₀₂ = −fx·x/z²` depends on x and z; where it is clamped to a limit `L`, `J₀₂ = −fx·L/z`
//! depends on z only (same for y). At exactly the limit the inside branch is used.
//!
//! # Spherical harmonics
//! `sh_colors` evaluates gsplat's `spherical_harmonics` (degree 0–3): the direction is normalised
//! inside (for degree ≥ 1; a zero direction is then an error), and, with (x, y, z) the unit
//! direction, the real SH basis in gsplat's order and sign convention is
//! - `Y0 = 0.28209479177387814`;
//! - `Y1 = −C1·y`, `Y2 = C1·z`, `Y3 = −C1·x`, `C1 = 0.4886025119029199`;
//! - `Y4 = 1.0925484305920792·xy`, `Y5 = −1.0925484305920792·yz`,
//!   `Y6 = 0.9461746957575601·z² − 0.31539156525252005`, `Y7 = −1.0925484305920792·xz`,
//!   `Y8 = 0.5462742152960396·(x² − y²)`;
//! - `Y9 = −0.5900435899266435·(3x²y − y³)`, `Y10 = 2.890611442640554·xyz`,
//!   `Y11 = y·(0.4570457994644658 − 2.285228997322329·z²)`,
//!   `Y12 = z·(1.865881662950577·z² − 1.119528997770346)`,
//!   `Y13 = x·(0.4570457994644658 − 2.285228997322329·z²)`,
//!   `Y14 = 1.445305721320277·z·(x² − y²)`, `Y15 = −0.5900435899266435·(x³ − 3xy²)`;
//!
//! and `colour[c] = Σ_k Y_k·coeffs[n][k][c]` over the first `(degree+1)²` coefficients
//! (`coeffs` is `[N, K, 3]` row-major, `K ≥ (degree+1)²`; extra coefficients are ignored and get
//! zero gradient). gsplat's `rasterization()` then applies `max(colour + 0.5, 0)`
//! (`sh_to_rgb`, the INRIA convention). The view direction gsplat uses is `μ − campos` with
//! `campos = −Wᵀ·tvec` (`view_dirs`); gsplat evaluates SH only for Gaussians with radius > 0,
//! which the caller applies.
//!
//! Errors are `String`s that name the argument, the index and the problem
//! (e.g. `"means[3] is not finite"`); the caller wraps them into the crate's error type.

use super::{Camera, Projected, COV2D_BLUR};

/// The frustum clamp margin of the EWA Jacobian: `x/z` is clamped to the image's extent in
/// normalised coordinates widened by `0.3·tan_fovx` on each side (gsplat's `persp_proj`).
pub const FOV_CLAMP_MARGIN: f64 = 0.3;

/// The floor on the discriminant in `λ_max = m + √max(0.1, m² − det)` (issue / INRIA value).
pub const LAMBDA_DISCRIMINANT_MIN: f64 = 0.1;

/// The projected radius covers this many standard deviations along the major axis.
pub const RADIUS_SIGMAS: f64 = 3.0;

/// The highest spherical-harmonics degree supported.
pub const SH_MAX_DEGREE: u32 = 3;

// Spherical harmonics constants (gsplat's values, to f64 precision).
const SH_C0: f64 = 0.282_094_791_773_878_14;
const SH_C1: f64 = 0.488_602_511_902_919_9;
const SH_C2_XY: f64 = 1.092_548_430_592_079_2; // 2 · 0.5462742152960396
const SH_C2_YZ: f64 = -1.092_548_430_592_079_2;
const SH_C2_ZZ: f64 = 0.946_174_695_757_560_1;
const SH_C2_ZZ0: f64 = -0.315_391_565_252_520_05;
const SH_C2_XXYY: f64 = 0.546_274_215_296_039_6;
const SH_C3_A: f64 = -0.590_043_589_926_643_5;
const SH_C3_B: f64 = 1.445_305_721_320_277;
const SH_C3_C2: f64 = -2.285_228_997_322_329;
const SH_C3_C0: f64 = 0.457_045_799_464_465_8;
const SH_C3_D3: f64 = 1.865_881_662_950_577;
const SH_C3_D1: f64 = -1.119_528_997_770_346;

type V3 = [f64; 3];
/// Row-major 3×3: `m[row][col]`.
type M3 = [[f64; 3]; 3];

fn mm(a: &M3, b: &M3) -> M3 {
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}

fn tr(a: &M3) -> M3 {
    let mut r = [[0.0; 3]; 3];
    for (i, row) in r.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = a[j][i];
        }
    }
    r
}

fn mv(a: &M3, v: &V3) -> V3 {
    [
        a[0][0] * v[0] + a[0][1] * v[1] + a[0][2] * v[2],
        a[1][0] * v[0] + a[1][1] * v[1] + a[1][2] * v[2],
        a[2][0] * v[0] + a[2][1] * v[1] + a[2][2] * v[2],
    ]
}

/// The rotation matrix of a unit quaternion (w, x, y, z), row-major.
fn quat_to_rotmat(q: &[f64; 4]) -> M3 {
    let [w, x, y, z] = *q;
    [
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ],
    ]
}

/// `∂L/∂q` for a unit quaternion `q`, given `g = ∂L/∂R` (row-major), by differentiating
/// `quat_to_rotmat` entry by entry.
fn rotmat_vjp_unit(q: &[f64; 4], g: &M3) -> [f64; 4] {
    let [w, x, y, z] = *q;
    let vw =
        2.0 * (-z * g[0][1] + y * g[0][2] + z * g[1][0] - x * g[1][2] - y * g[2][0] + x * g[2][1]);
    let vx = 2.0
        * (-2.0 * x * (g[1][1] + g[2][2])
            + y * (g[0][1] + g[1][0])
            + z * (g[0][2] + g[2][0])
            + w * (g[2][1] - g[1][2]));
    let vy = 2.0
        * (-2.0 * y * (g[0][0] + g[2][2])
            + x * (g[0][1] + g[1][0])
            + z * (g[1][2] + g[2][1])
            + w * (g[0][2] - g[2][0]));
    let vz = 2.0
        * (-2.0 * z * (g[0][0] + g[1][1])
            + x * (g[0][2] + g[2][0])
            + y * (g[1][2] + g[2][1])
            + w * (g[1][0] - g[0][1]));
    [vw, vx, vy, vz]
}

/// The camera quantities the projection reads, validated.
struct Cam {
    w: M3,
    tvec: V3,
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
    width: f64,
    height: f64,
    near: f64,
    far: f64,
    lim_x_pos: f64,
    lim_x_neg: f64,
    lim_y_pos: f64,
    lim_y_neg: f64,
}

fn check_camera(cam: &Camera) -> Result<Cam, String> {
    if cam.viewmat.iter().any(|v| !v.is_finite()) {
        return Err("cam.viewmat is not finite".into());
    }
    if cam.k.iter().any(|v| !v.is_finite()) {
        return Err("cam.k is not finite".into());
    }
    let (fx, cx, fy, cy) = (cam.k[0], cam.k[2], cam.k[4], cam.k[5]);
    if fx <= 0.0 || fy <= 0.0 {
        return Err(format!(
            "cam.k: the focal lengths must be > 0 (fx = {fx}, fy = {fy})"
        ));
    }
    if cam.width == 0 || cam.height == 0 {
        return Err(format!(
            "cam: the image is empty ({}x{})",
            cam.width, cam.height
        ));
    }
    if !(cam.near.is_finite() && cam.near > 0.0) {
        return Err(format!(
            "cam.near must be finite and > 0 (got {})",
            cam.near
        ));
    }
    if cam.far.is_nan() || cam.far <= cam.near {
        return Err(format!(
            "cam.far must be > cam.near (got near = {}, far = {})",
            cam.near, cam.far
        ));
    }
    let v = &cam.viewmat;
    let w = [[v[0], v[1], v[2]], [v[4], v[5], v[6]], [v[8], v[9], v[10]]];
    let tvec = [v[3], v[7], v[11]];
    let width = f64::from(cam.width);
    let height = f64::from(cam.height);
    let tan_fovx = 0.5 * width / fx;
    let tan_fovy = 0.5 * height / fy;
    Ok(Cam {
        w,
        tvec,
        fx,
        fy,
        cx,
        cy,
        width,
        height,
        near: cam.near,
        far: cam.far,
        lim_x_pos: (width - cx) / fx + FOV_CLAMP_MARGIN * tan_fovx,
        lim_x_neg: cx / fx + FOV_CLAMP_MARGIN * tan_fovx,
        lim_y_pos: (height - cy) / fy + FOV_CLAMP_MARGIN * tan_fovy,
        lim_y_neg: cy / fy + FOV_CLAMP_MARGIN * tan_fovy,
    })
}

fn check_len(name: &str, len: usize, n: usize) -> Result<(), String> {
    if len != n {
        return Err(format!(
            "{name} has {len} entries, expected {n} (one per Gaussian)"
        ));
    }
    Ok(())
}

fn check_finite<const D: usize>(name: &str, xs: &[[f64; D]]) -> Result<(), String> {
    match xs.iter().position(|x| x.iter().any(|v| !v.is_finite())) {
        Some(i) => Err(format!("{name}[{i}] is not finite")),
        None => Ok(()),
    }
}

fn check_gaussians(
    means: &[[f64; 3]],
    quats: &[[f64; 4]],
    scales: &[[f64; 3]],
) -> Result<(), String> {
    let n = means.len();
    check_len("quats", quats.len(), n)?;
    check_len("scales", scales.len(), n)?;
    check_finite("means", means)?;
    check_finite("quats", quats)?;
    check_finite("scales", scales)?;
    for (i, q) in quats.iter().enumerate() {
        if q.iter().all(|&v| v == 0.0) {
            return Err(format!("quats[{i}] is the zero quaternion"));
        }
    }
    for (i, s) in scales.iter().enumerate() {
        if s.iter().any(|&v| v < 0.0) {
            return Err(format!("scales[{i}] has a negative entry ({s:?})"));
        }
    }
    Ok(())
}

/// The forward intermediates of one non-culled Gaussian (what the backward needs).
struct Fwd {
    qn: [f64; 4],
    qnorm: f64,
    r: M3,
    t: V3,
    sigma_c: M3,
    j: [V3; 2],
    clamped_x: bool,
    clamped_y: bool,
    tx: f64,
    ty: f64,
    conic: [f64; 3],
    mean2d: [f64; 2],
    radius: i32,
}

/// Projects one Gaussian; `Ok(None)` when it is culled.
fn forward_one(i: usize, mu: &V3, q: &[f64; 4], s: &V3, cam: &Cam) -> Result<Option<Fwd>, String> {
    let t0 = mv(&cam.w, mu);
    let t = [
        t0[0] + cam.tvec[0],
        t0[1] + cam.tvec[1],
        t0[2] + cam.tvec[2],
    ];
    let [x, y, z] = t;
    if !t.iter().all(|v| v.is_finite()) {
        return Err(format!(
            "means[{i}]: the camera-space position overflows f64"
        ));
    }
    if z < cam.near || z > cam.far {
        return Ok(None);
    }

    // Σ = R S Sᵀ Rᵀ with the normalised quaternion.
    let qnorm = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    let qn = [q[0] / qnorm, q[1] / qnorm, q[2] / qnorm, q[3] / qnorm];
    let r = quat_to_rotmat(&qn);
    let mut m = r;
    for row in m.iter_mut() {
        for (c, v) in row.iter_mut().enumerate() {
            *v *= s[c];
        }
    }
    let sigma = mm(&m, &tr(&m));
    let sigma_c = mm(&mm(&cam.w, &sigma), &tr(&cam.w));

    // The EWA Jacobian with the frustum clamp.
    let (rx, ry) = (x / z, y / z);
    let clamped_x = !(rx <= cam.lim_x_pos && rx >= -cam.lim_x_neg);
    let clamped_y = !(ry <= cam.lim_y_pos && ry >= -cam.lim_y_neg);
    let tx = z * rx.max(-cam.lim_x_neg).min(cam.lim_x_pos);
    let ty = z * ry.max(-cam.lim_y_neg).min(cam.lim_y_pos);
    let z2 = z * z;
    let j = [
        [cam.fx / z, 0.0, -cam.fx * tx / z2],
        [0.0, cam.fy / z, -cam.fy * ty / z2],
    ];

    // cov2d = J Σc Jᵀ + blur.
    let mut cov = [[0.0; 2]; 2];
    for (a, row) in cov.iter_mut().enumerate() {
        for (b, v) in row.iter_mut().enumerate() {
            let mut acc = 0.0;
            for k in 0..3 {
                for l in 0..3 {
                    acc += j[a][k] * sigma_c[k][l] * j[b][l];
                }
            }
            *v = acc;
        }
    }
    let a = cov[0][0] + COV2D_BLUR;
    let b = 0.5 * (cov[0][1] + cov[1][0]);
    let c = cov[1][1] + COV2D_BLUR;
    let det = a * c - b * b;
    if !(a.is_finite() && b.is_finite() && c.is_finite() && det.is_finite()) {
        return Err(format!(
            "Gaussian {i}: the projected covariance overflows f64 (scales[{i}] too large?)"
        ));
    }
    if det <= 0.0 {
        return Ok(None);
    }
    let conic = [c / det, -b / det, a / det];

    let mid = 0.5 * (a + c);
    let lambda_max = mid + (mid * mid - det).max(LAMBDA_DISCRIMINANT_MIN).sqrt();
    let radius = (RADIUS_SIGMAS * lambda_max.sqrt()).ceil();
    if radius <= 0.0 {
        return Ok(None);
    }
    let mean2d = [cam.fx * x / z + cam.cx, cam.fy * y / z + cam.cy];
    if mean2d[0] + radius <= 0.0
        || mean2d[0] - radius >= cam.width
        || mean2d[1] + radius <= 0.0
        || mean2d[1] - radius >= cam.height
    {
        return Ok(None);
    }
    // `as` saturates: a radius beyond i32 becomes i32::MAX.
    let radius = radius as i32;
    Ok(Some(Fwd {
        qn,
        qnorm,
        r,
        t,
        sigma_c,
        j,
        clamped_x,
        clamped_y,
        tx,
        ty,
        conic,
        mean2d,
        radius,
    }))
}

/// Projects N Gaussians through a pinhole camera (EWA splatting, gsplat's conventions; see the
/// module docs for every step and constant). Index i of the output is Gaussian i; a culled
/// Gaussian has `radii[i] == 0` and zero mean2d, depth and conic.
///
/// Errors: mismatched lengths, a non-finite input (naming the index), a zero quaternion, a
/// negative scale, an invalid camera, or a projection that overflows f64.
pub fn project(
    means: &[[f64; 3]],
    quats: &[[f64; 4]],
    scales: &[[f64; 3]],
    cam: &Camera,
) -> Result<Projected, String> {
    check_gaussians(means, quats, scales)?;
    let cp = check_camera(cam)?;
    let n = means.len();
    let mut out = Projected {
        means2d: vec![[0.0; 2]; n],
        depths: vec![0.0; n],
        conics: vec![[0.0; 3]; n],
        radii: vec![0; n],
    };
    for i in 0..n {
        if let Some(f) = forward_one(i, &means[i], &quats[i], &scales[i], &cp)? {
            out.means2d[i] = f.mean2d;
            out.depths[i] = f.t[2];
            out.conics[i] = f.conic;
            out.radii[i] = f.radius;
        }
    }
    Ok(out)
}

/// Gradients returned by [`project_backward`]: `(v_means, v_quats, v_scales)`; `v_quats` is with
/// respect to the unnormalised input quaternion.
pub type ProjectGrads = (Vec<[f64; 3]>, Vec<[f64; 4]>, Vec<[f64; 3]>);

/// The vector-Jacobian product of [`project`]: given the gradients of a loss with respect to
/// `means2d`, `conics` (A, B, C as stored) and `depths`, returns the gradients with respect to
/// `means`, `quats` (the unnormalised input) and `scales`. Culled Gaussians get zeros. Follows
/// gsplat's `persp_proj_vjp` through the frustum clamp (see the module docs).
///
/// Errors: as [`project`], plus mismatched lengths or non-finite entries of the `v_*` inputs.
#[allow(clippy::too_many_arguments)]
pub fn project_backward(
    means: &[[f64; 3]],
    quats: &[[f64; 4]],
    scales: &[[f64; 3]],
    cam: &Camera,
    v_means2d: &[[f64; 2]],
    v_conics: &[[f64; 3]],
    v_depths: &[f64],
) -> Result<ProjectGrads, String> {
    check_gaussians(means, quats, scales)?;
    let cp = check_camera(cam)?;
    let n = means.len();
    check_len("v_means2d", v_means2d.len(), n)?;
    check_len("v_conics", v_conics.len(), n)?;
    check_len("v_depths", v_depths.len(), n)?;
    check_finite("v_means2d", v_means2d)?;
    check_finite("v_conics", v_conics)?;
    if let Some(i) = v_depths.iter().position(|v| !v.is_finite()) {
        return Err(format!("v_depths[{i}] is not finite"));
    }

    let mut v_means = vec![[0.0; 3]; n];
    let mut v_quats = vec![[0.0; 4]; n];
    let mut v_scales = vec![[0.0; 3]; n];
    for i in 0..n {
        let Some(f) = forward_one(i, &means[i], &quats[i], &scales[i], &cp)? else {
            continue;
        };
        let s = &scales[i];
        let [x, y, z] = f.t;
        let (fx, fy) = (cp.fx, cp.fy);

        // conic = cov2d⁻¹: v_cov2d = −P G P with G the symmetric split of (vA, vB, vC).
        let [pa, pb, pc] = f.conic;
        let p = [[pa, pb], [pb, pc]];
        let [va, vb, vc] = v_conics[i];
        let g = [[va, 0.5 * vb], [0.5 * vb, vc]];
        let mut pg = [[0.0; 2]; 2];
        for r in 0..2 {
            for c in 0..2 {
                pg[r][c] = p[r][0] * g[0][c] + p[r][1] * g[1][c];
            }
        }
        let mut v_cov = [[0.0; 2]; 2];
        for r in 0..2 {
            for c in 0..2 {
                v_cov[r][c] = -(pg[r][0] * p[0][c] + pg[r][1] * p[1][c]);
            }
        }
        // The blur is additive: v_cov passes unchanged to J Σc Jᵀ.

        // cov2d = J Σc Jᵀ: v_Σc = Jᵀ v_cov J; v_J = (v_cov + v_covᵀ) J Σc.
        let j = &f.j;
        let mut v_sigma_c = [[0.0; 3]; 3];
        for (k, row) in v_sigma_c.iter_mut().enumerate() {
            for (l, v) in row.iter_mut().enumerate() {
                let mut acc = 0.0;
                for a in 0..2 {
                    for b in 0..2 {
                        acc += j[a][k] * v_cov[a][b] * j[b][l];
                    }
                }
                *v = acc;
            }
        }
        let mut jsc = [[0.0; 3]; 2];
        for (a, row) in jsc.iter_mut().enumerate() {
            for (l, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| j[a][k] * f.sigma_c[k][l]).sum();
            }
        }
        let mut v_j = [[0.0; 3]; 2];
        for a in 0..2 {
            for l in 0..3 {
                v_j[a][l] = (0..2)
                    .map(|b| (v_cov[a][b] + v_cov[b][a]) * jsc[b][l])
                    .sum();
            }
        }

        // Camera-space mean: from mean2d, depth and the entries of J.
        let [gx, gy] = v_means2d[i];
        let (z2, z3) = (z * z, z * z * z);
        let mut v_t = [
            fx / z * gx,
            fy / z * gy,
            -(fx * x * gx + fy * y * gy) / z2 + v_depths[i],
        ];
        // J00 = fx/z, J11 = fy/z.
        v_t[2] += -fx / z2 * v_j[0][0] - fy / z2 * v_j[1][1];
        // J02 = −fx·tx/z²: tx = x inside the clamp, tx = z·L (L constant) outside.
        if f.clamped_x {
            v_t[2] += fx * f.tx / z3 * v_j[0][2];
        } else {
            v_t[0] += -fx / z2 * v_j[0][2];
            v_t[2] += 2.0 * fx * f.tx / z3 * v_j[0][2];
        }
        if f.clamped_y {
            v_t[2] += fy * f.ty / z3 * v_j[1][2];
        } else {
            v_t[1] += -fy / z2 * v_j[1][2];
            v_t[2] += 2.0 * fy * f.ty / z3 * v_j[1][2];
        }

        // t = W μ + tvec; Σc = W Σ Wᵀ.
        let wt = tr(&cp.w);
        v_means[i] = mv(&wt, &v_t);
        let v_sigma = mm(&mm(&wt, &v_sigma_c), &cp.w);

        // Σ = M Mᵀ, M = R S: v_M = (v_Σ + v_Σᵀ) M.
        let mut m = f.r;
        for row in m.iter_mut() {
            for (c, v) in row.iter_mut().enumerate() {
                *v *= s[c];
            }
        }
        let mut v_sym = v_sigma;
        for r in 0..3 {
            for c in 0..3 {
                v_sym[r][c] = v_sigma[r][c] + v_sigma[c][r];
            }
        }
        let v_m = mm(&v_sym, &m);
        let mut v_r = v_m;
        for row in v_r.iter_mut() {
            for (c, v) in row.iter_mut().enumerate() {
                *v *= s[c];
            }
        }
        for c in 0..3 {
            v_scales[i][c] = (0..3).map(|r| f.r[r][c] * v_m[r][c]).sum();
        }

        // R(q/|q|): through the rotation, then the normalisation.
        let v_qn = rotmat_vjp_unit(&f.qn, &v_r);
        let dot: f64 = (0..4).map(|k| v_qn[k] * f.qn[k]).sum();
        for k in 0..4 {
            v_quats[i][k] = (v_qn[k] - dot * f.qn[k]) / f.qnorm;
        }
    }
    Ok((v_means, v_quats, v_scales))
}

/// gsplat's view directions for SH: `μ − campos` with `campos = −Wᵀ·tvec` the camera centre
/// in world space. Their gradient with respect to `means` is the identity.
///
/// Errors: a non-finite mean (naming the index) or an invalid camera.
pub fn view_dirs(means: &[[f64; 3]], cam: &Camera) -> Result<Vec<[f64; 3]>, String> {
    check_finite("means", means)?;
    let cp = check_camera(cam)?;
    let c = mv(&tr(&cp.w), &cp.tvec);
    Ok(means
        .iter()
        .map(|m| [m[0] + c[0], m[1] + c[1], m[2] + c[2]])
        .collect())
}

/// The number of SH coefficients of a degree: `(degree + 1)²`.
pub fn sh_num_coeffs(degree: u32) -> usize {
    let d = degree as usize + 1;
    d * d
}

/// The SH basis (first `(degree+1)²` entries valid) at the unit direction `n`, and its gradient
/// with respect to `n` (treating x, y, z as independent).
fn sh_basis(degree: u32, n: &V3) -> ([f64; 16], [V3; 16]) {
    let [x, y, z] = *n;
    let mut b = [0.0; 16];
    let mut g = [[0.0; 3]; 16];
    b[0] = SH_C0;
    if degree >= 1 {
        b[1] = -SH_C1 * y;
        g[1] = [0.0, -SH_C1, 0.0];
        b[2] = SH_C1 * z;
        g[2] = [0.0, 0.0, SH_C1];
        b[3] = -SH_C1 * x;
        g[3] = [-SH_C1, 0.0, 0.0];
    }
    if degree >= 2 {
        b[4] = SH_C2_XY * x * y;
        g[4] = [SH_C2_XY * y, SH_C2_XY * x, 0.0];
        b[5] = SH_C2_YZ * y * z;
        g[5] = [0.0, SH_C2_YZ * z, SH_C2_YZ * y];
        b[6] = SH_C2_ZZ * z * z + SH_C2_ZZ0;
        g[6] = [0.0, 0.0, 2.0 * SH_C2_ZZ * z];
        b[7] = SH_C2_YZ * x * z;
        g[7] = [SH_C2_YZ * z, 0.0, SH_C2_YZ * x];
        b[8] = SH_C2_XXYY * (x * x - y * y);
        g[8] = [2.0 * SH_C2_XXYY * x, -2.0 * SH_C2_XXYY * y, 0.0];
    }
    if degree >= 3 {
        let f = SH_C3_C2 * z * z + SH_C3_C0;
        let fz = 2.0 * SH_C3_C2 * z;
        b[9] = SH_C3_A * (3.0 * x * x * y - y * y * y);
        g[9] = [
            SH_C3_A * 6.0 * x * y,
            SH_C3_A * (3.0 * x * x - 3.0 * y * y),
            0.0,
        ];
        b[10] = SH_C3_B * 2.0 * x * y * z;
        g[10] = [
            SH_C3_B * 2.0 * y * z,
            SH_C3_B * 2.0 * x * z,
            SH_C3_B * 2.0 * x * y,
        ];
        b[11] = f * y;
        g[11] = [0.0, f, fz * y];
        b[12] = z * (SH_C3_D3 * z * z + SH_C3_D1);
        g[12] = [0.0, 0.0, 3.0 * SH_C3_D3 * z * z + SH_C3_D1];
        b[13] = f * x;
        g[13] = [f, 0.0, fz * x];
        b[14] = SH_C3_B * z * (x * x - y * y);
        g[14] = [
            SH_C3_B * 2.0 * x * z,
            -SH_C3_B * 2.0 * y * z,
            SH_C3_B * (x * x - y * y),
        ];
        b[15] = SH_C3_A * (x * x * x - 3.0 * x * y * y);
        g[15] = [
            SH_C3_A * (3.0 * x * x - 3.0 * y * y),
            -SH_C3_A * 6.0 * x * y,
            0.0,
        ];
    }
    (b, g)
}

/// Validates the SH arguments; returns the unit directions (the raw direction for degree 0)
/// and their norms.
fn check_sh(
    degree: u32,
    dirs: &[[f64; 3]],
    coeffs: &[f64],
    k: usize,
) -> Result<Vec<(V3, f64)>, String> {
    if degree > SH_MAX_DEGREE {
        return Err(format!(
            "degree {degree} is not supported (0..={SH_MAX_DEGREE})"
        ));
    }
    let need = sh_num_coeffs(degree);
    if k < need {
        return Err(format!(
            "k = {k} coefficients per Gaussian is fewer than the {need} that degree {degree} needs"
        ));
    }
    let n = dirs.len();
    let expect = n
        .checked_mul(k)
        .and_then(|v| v.checked_mul(3))
        .ok_or_else(|| format!("coeffs: N·K·3 overflows ({n}·{k}·3)"))?;
    if coeffs.len() != expect {
        return Err(format!(
            "coeffs has {} values, expected N·K·3 = {n}·{k}·3 = {expect}",
            coeffs.len()
        ));
    }
    check_finite("dirs", dirs)?;
    if let Some(p) = coeffs.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "coeffs[{}][{}][{}] is not finite",
            p / (3 * k),
            (p / 3) % k,
            p % 3
        ));
    }
    let mut out = Vec::with_capacity(n);
    for (i, d) in dirs.iter().enumerate() {
        if degree == 0 {
            out.push((*d, 1.0));
            continue;
        }
        let norm = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return Err(format!(
                "dirs[{i}] has zero (or overflowing) length; degree {degree} needs a direction"
            ));
        }
        out.push(([d[0] / norm, d[1] / norm, d[2] / norm], norm));
    }
    Ok(out)
}

/// gsplat's `spherical_harmonics`: the raw SH colour `Σ_k Y_k(dir/|dir|)·coeffs[n][k][c]` of
/// each Gaussian, degree 0–3 (basis, constants and signs in the module docs). `coeffs` is
/// `[N, k, 3]` row-major with `k ≥ (degree+1)²`; only the first `(degree+1)²` are used. The
/// `+0.5` offset and the clamp are not applied here (see [`sh_to_rgb`]).
///
/// Errors: a degree above 3, `k` too small, a `coeffs` length other than `N·k·3`, a
/// non-finite value, or a zero direction when `degree ≥ 1`.
pub fn sh_colors(
    degree: u32,
    dirs: &[[f64; 3]],
    coeffs: &[f64],
    k: usize,
) -> Result<Vec<[f64; 3]>, String> {
    let units = check_sh(degree, dirs, coeffs, k)?;
    let used = sh_num_coeffs(degree);
    Ok(units
        .iter()
        .enumerate()
        .map(|(i, (u, _))| {
            let (b, _) = sh_basis(degree, u);
            let base = i * k * 3;
            let mut col = [0.0; 3];
            for (kk, bk) in b.iter().enumerate().take(used) {
                for (c, v) in col.iter_mut().enumerate() {
                    *v += bk * coeffs[base + kk * 3 + c];
                }
            }
            col
        })
        .collect())
}

/// Gradients returned by [`sh_colors_backward`]: `v_coeffs` (`[N, k, 3]` row-major, like
/// `coeffs`) and `v_dirs` (with respect to the unnormalised directions).
pub type ShGrads = (Vec<f64>, Vec<[f64; 3]>);

/// The vector-Jacobian product of [`sh_colors`]: given `v_colors` (the gradient of the raw SH
/// colours), returns `(v_coeffs, v_dirs)`. Coefficients beyond `(degree+1)²` get 0; for degree
/// 0 `v_dirs` is 0. `v_dirs` goes through the normalisation (`(g − (g·n)n)/|dir|`).
///
/// Errors: as [`sh_colors`], plus a `v_colors` of the wrong length or with non-finite values.
pub fn sh_colors_backward(
    degree: u32,
    dirs: &[[f64; 3]],
    coeffs: &[f64],
    k: usize,
    v_colors: &[[f64; 3]],
) -> Result<ShGrads, String> {
    let units = check_sh(degree, dirs, coeffs, k)?;
    check_len("v_colors", v_colors.len(), dirs.len())?;
    check_finite("v_colors", v_colors)?;
    let used = sh_num_coeffs(degree);
    let mut v_coeffs = vec![0.0; coeffs.len()];
    let mut v_dirs = vec![[0.0; 3]; dirs.len()];
    for (i, (u, norm)) in units.iter().enumerate() {
        let (b, g) = sh_basis(degree, u);
        let base = i * k * 3;
        let vc = v_colors[i];
        let mut v_u = [0.0; 3];
        for kk in 0..used {
            let mut w = 0.0; // Σ_c coeffs[k][c]·v_c
            for c in 0..3 {
                v_coeffs[base + kk * 3 + c] = b[kk] * vc[c];
                w += coeffs[base + kk * 3 + c] * vc[c];
            }
            for a in 0..3 {
                v_u[a] += g[kk][a] * w;
            }
        }
        if degree >= 1 {
            let dot = v_u[0] * u[0] + v_u[1] * u[1] + v_u[2] * u[2];
            for a in 0..3 {
                v_dirs[i][a] = (v_u[a] - dot * u[a]) / norm;
            }
        }
    }
    Ok((v_coeffs, v_dirs))
}

/// The colour activation gsplat's `rasterization()` applies to SH colours (`shift_relu`, the
/// INRIA convention): `rgb = max(raw + 0.5, 0)` per channel.
pub fn sh_to_rgb(raw: &[[f64; 3]]) -> Vec<[f64; 3]> {
    raw.iter()
        .map(|r| {
            [
                (r[0] + 0.5).max(0.0),
                (r[1] + 0.5).max(0.0),
                (r[2] + 0.5).max(0.0),
            ]
        })
        .collect()
}

/// The VJP of [`sh_to_rgb`]: `v_raw = v_rgb` where `raw + 0.5 ≥ 0`, else 0 (torch's
/// `clamp_min` passes the gradient at the boundary).
///
/// Errors: mismatched lengths.
pub fn sh_to_rgb_backward(raw: &[[f64; 3]], v_rgb: &[[f64; 3]]) -> Result<Vec<[f64; 3]>, String> {
    check_len("v_rgb", v_rgb.len(), raw.len())?;
    Ok(raw
        .iter()
        .zip(v_rgb)
        .map(|(r, v)| {
            let mut o = [0.0; 3];
            for c in 0..3 {
                o[c] = if r[c] + 0.5 >= 0.0 { v[c] } else { 0.0 };
            }
            o
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: [f64; 16] = [
        1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
    ];

    fn cam(fx: f64, fy: f64, w: u32, h: u32) -> Camera {
        Camera {
            viewmat: IDENTITY,
            k: [
                fx,
                0.0,
                w as f64 / 2.0,
                0.0,
                fy,
                h as f64 / 2.0,
                0.0,
                0.0,
                1.0,
            ],
            width: w,
            height: h,
            near: 0.01,
            far: 100.0,
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    /// A small deterministic generator (xorshift64*), uniform in [lo, hi).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (v >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.next()
        }
    }

    #[test]
    fn on_axis_isotropic_hand_computed() {
        // fx = fy = 100, s = 0.1, z = 2: fx·s/z = 5, a = c = 25.3, b = 0.
        let c = cam(100.0, 100.0, 64, 48);
        let p = project(&[[0.0, 0.0, 2.0]], &[[1.0, 0.0, 0.0, 0.0]], &[[0.1; 3]], &c).unwrap();
        assert_eq!(p.means2d[0], [32.0, 24.0]);
        assert_eq!(p.depths[0], 2.0);
        let a: f64 = 25.0 + 0.3;
        assert!(close(p.conics[0][0], 1.0 / a, 1e-14));
        assert_eq!(p.conics[0][1], 0.0);
        assert!(close(p.conics[0][2], 1.0 / a, 1e-14));
        // m = 25.3, m² − det = 0 → floor 0.1; λ = 25.3 + √0.1 = 25.6162…; 3√λ = 15.18… → 16.
        assert_eq!(p.radii[0], 16);
    }

    #[test]
    fn on_axis_anisotropic_focal_hand_computed() {
        // fx = 100, fy = 50, s = 0.1, z = 2: a = 25.3, c = 6.55; m = 15.925,
        // m² − det = ((a − c)/2)² = 87.890625 → λ = 15.925 + 9.375 = 25.3; 3√25.3 = 15.09 → 16.
        let c = cam(100.0, 50.0, 64, 48);
        let p = project(&[[0.0, 0.0, 2.0]], &[[1.0, 0.0, 0.0, 0.0]], &[[0.1; 3]], &c).unwrap();
        assert!(close(p.conics[0][0], 1.0 / 25.3, 1e-14));
        assert!(close(p.conics[0][2], 1.0 / 6.55, 1e-14));
        assert_eq!(p.radii[0], 16);
        // A bigger splat: s = 0.4 → a = 400.3, c = 100.3, λ = 400.3 → 3·20.0075 = 60.02 → 61.
        let p = project(&[[0.0, 0.0, 2.0]], &[[1.0, 0.0, 0.0, 0.0]], &[[0.4; 3]], &c).unwrap();
        assert_eq!(p.radii[0], 61);
    }

    #[test]
    fn off_axis_isotropic_hand_computed() {
        // Σc = s² I, so cov2d = s² J Jᵀ + 0.3 I with J = [[fx/z, 0, −fx x/z²], [0, fy/z, −fy y/z²]].
        let (fx, fy, s) = (80.0, 60.0, 0.2);
        let (x, y, z): (f64, f64, f64) = (0.5, -0.25, 2.0);
        let c = cam(fx, fy, 64, 48);
        let p = project(&[[x, y, z]], &[[1.0, 0.0, 0.0, 0.0]], &[[s; 3]], &c).unwrap();
        let a = s * s * (fx * fx / (z * z) + fx * fx * x * x / z.powi(4)) + 0.3;
        let b = s * s * fx * fy * x * y / z.powi(4);
        let cc = s * s * (fy * fy / (z * z) + fy * fy * y * y / z.powi(4)) + 0.3;
        let det = a * cc - b * b;
        assert!(close(p.conics[0][0], cc / det, 1e-13));
        assert!(close(p.conics[0][1], -b / det, 1e-13));
        assert!(close(p.conics[0][2], a / det, 1e-13));
        assert!(close(p.means2d[0][0], fx * x / z + 32.0, 1e-14));
        assert!(close(p.means2d[0][1], fy * y / z + 24.0, 1e-14));
        let m = 0.5 * (a + cc);
        let lam = m + (m * m - det).max(0.1).sqrt();
        assert_eq!(p.radii[0], (3.0 * lam.sqrt()).ceil() as i32);
    }

    #[test]
    fn frustum_clamp_enters_the_jacobian() {
        // 64 wide, fx = 100, cx = 32: lim_x+ = 32/100 + 0.3·0.32 = 0.416. x/z = 1.0 is clamped,
        // so J02 = −fx·0.416/z; the mean itself is not clamped.
        let c = cam(100.0, 100.0, 64, 48);
        let (s, z): (f64, f64) = (1.0, 2.0);
        let p = project(&[[2.0, 0.0, z]], &[[1.0, 0.0, 0.0, 0.0]], &[[s; 3]], &c).unwrap();
        assert!(p.radii[0] > 0, "the big splat still overlaps the image");
        assert!(close(p.means2d[0][0], 100.0 * 1.0 + 32.0, 1e-14));
        let lim = 0.32 + 0.3 * 0.32;
        let j00 = 100.0 / z;
        let j02 = -100.0 * lim / z;
        let j11 = 100.0 / z;
        let a = s * s * (j00 * j00 + j02 * j02) + 0.3;
        let cc = s * s * j11 * j11 + 0.3;
        let det = a * cc;
        assert!(close(p.conics[0][0], cc / det, 1e-13));
        assert_eq!(p.conics[0][1], 0.0);
        assert!(close(p.conics[0][2], a / det, 1e-13));
    }

    #[test]
    fn culling() {
        let c = cam(100.0, 100.0, 64, 48);
        let q = [1.0, 0.0, 0.0, 0.0];
        let means = [
            [0.0, 0.0, 0.005], // in front of the camera but before near = 0.01
            [0.0, 0.0, -1.0],  // behind
            [0.0, 0.0, 150.0], // beyond far = 100
            [0.0, 0.0, 0.01],  // exactly at near: kept
            [0.0, 0.0, 100.0], // exactly at far: kept
            [1.0, 0.0, 2.0],   // mean2d.x = 82, radius 16 → 66 ≥ 64: off-screen right
            [0.95, 0.0, 2.0],  // mean2d.x = 79.5 − 16 = 63.5 < 64: kept
            [0.0, -0.8, 2.0],  // mean2d.y = −16, radius 16 → 0 ≤ 0: off-screen top
            [0.0, -0.78, 2.0], // mean2d.y = −15 + 16 > 0: kept
        ];
        let scales = [[0.1; 3]; 9];
        let p = project(&means, &[q; 9], &scales, &c).unwrap();
        // Rows 5–8 have |x/z| or |y/z| beyond the clamp (0.416 / 0.312), so their radii are 17
        // (x) and 16 (y): mean2d.x − 17 = 65 ≥ 64 (culled), 62.5 (kept); mean2d.y + 16 = 0
        // (culled), 1 (kept).
        let visible: Vec<bool> = p.radii.iter().map(|&r| r > 0).collect();
        assert_eq!(
            visible,
            [false, false, false, true, true, false, true, false, true]
        );
        assert_eq!((p.radii[6], p.radii[8]), (17, 16));
        for i in [0, 1, 2, 5, 7] {
            assert_eq!(p.means2d[i], [0.0; 2]);
            assert_eq!(p.conics[i], [0.0; 3]);
            assert_eq!(p.depths[i], 0.0);
        }
        // A camera behind every Gaussian: everything culled, no error.
        let p = project(&[[0.0, 0.0, -3.0]; 4], &[q; 4], &[[0.1; 3]; 4], &c).unwrap();
        assert_eq!(p.radii, vec![0; 4]);
    }

    #[test]
    fn rotation_swaps_scale_axes_and_quaternion_is_normalised() {
        // 90° about z: q = (cos 45°, 0, 0, sin 45°), scaled by 3 (unnormalised).
        // Σ = R diag(a², b², c²) Rᵀ = diag(b², a², c²).
        let c = cam(100.0, 100.0, 64, 48);
        let h = std::f64::consts::FRAC_1_SQRT_2 * 3.0;
        let (sa, sb) = (0.3, 0.1);
        let p = project(
            &[[0.0, 0.0, 2.0]],
            &[[h, 0.0, 0.0, h]],
            &[[sa, sb, 0.2]],
            &c,
        )
        .unwrap();
        let a = (100.0 * sb / 2.0f64).powi(2) + 0.3; // x picks up the y scale
        let cc = (100.0 * sa / 2.0f64).powi(2) + 0.3;
        assert!(close(p.conics[0][0], 1.0 / a, 1e-13));
        assert!(p.conics[0][1].abs() < 1e-15);
        assert!(close(p.conics[0][2], 1.0 / cc, 1e-13));
    }

    #[test]
    fn viewmat_translation_and_rotation() {
        // A camera turned 180° about y: W = diag(−1, 1, −1), tvec = (0.5, 0, 0).
        let mut c = cam(100.0, 100.0, 64, 48);
        c.viewmat = [
            -1.0, 0.0, 0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        ];
        let p = project(
            &[[0.5, 0.0, -3.0]],
            &[[1.0, 0.0, 0.0, 0.0]],
            &[[0.1; 3]],
            &c,
        )
        .unwrap();
        // camera space: x = −0.5 + 0.5 = 0, y = 0, z = 3.
        assert_eq!(p.depths[0], 3.0);
        assert!(close(p.means2d[0][0], 32.0, 1e-14));
        let dirs = view_dirs(&[[0.5, 0.0, -3.0]], &c).unwrap();
        // campos = −Wᵀ tvec = (0.5, 0, 0): direction (0, 0, −3).
        assert_eq!(dirs[0], [0.0, 0.0, -3.0]);
    }

    #[test]
    fn errors_name_argument_and_index() {
        let c = cam(100.0, 100.0, 64, 48);
        let q = [1.0, 0.0, 0.0, 0.0];
        let m = [[0.0, 0.0, 2.0]; 3];
        let s = [[0.1; 3]; 3];
        let e = project(&m, &[q; 2], &s, &c).unwrap_err();
        assert!(
            e.contains("quats") && e.contains('2') && e.contains('3'),
            "{e}"
        );
        let mut bad = m;
        bad[1][2] = f64::NAN;
        assert_eq!(
            project(&bad, &[q; 3], &s, &c).unwrap_err(),
            "means[1] is not finite"
        );
        let mut bq = [q; 3];
        bq[2] = [0.0; 4];
        assert!(project(&m, &bq, &s, &c).unwrap_err().contains("quats[2]"));
        bq[2] = [f64::INFINITY, 0.0, 0.0, 0.0];
        assert_eq!(
            project(&m, &bq, &s, &c).unwrap_err(),
            "quats[2] is not finite"
        );
        let mut bs = s;
        bs[0][1] = -0.1;
        assert!(project(&m, &[q; 3], &bs, &c)
            .unwrap_err()
            .contains("scales[0]"));
        let mut bc = c.clone();
        bc.width = 0;
        assert!(project(&m, &[q; 3], &s, &bc).unwrap_err().contains("empty"));
        let mut bc = c.clone();
        bc.near = 0.0;
        assert!(project(&m, &[q; 3], &s, &bc).unwrap_err().contains("near"));
        let mut bc = c.clone();
        bc.k[0] = f64::NAN;
        assert!(project(&m, &[q; 3], &s, &bc).unwrap_err().contains("cam.k"));
        let e = project_backward(
            &m,
            &[q; 3],
            &s,
            &c,
            &[[0.0; 2]; 3],
            &[[0.0; 3]; 2],
            &[0.0; 3],
        )
        .unwrap_err();
        assert!(e.contains("v_conics"), "{e}");
        let e = project_backward(
            &m,
            &[q; 3],
            &s,
            &c,
            &[[0.0; 2]; 3],
            &[[0.0; 3]; 3],
            &[0.0, f64::NAN, 0.0],
        )
        .unwrap_err();
        assert_eq!(e, "v_depths[1] is not finite");
        // Finite inputs whose covariance overflows f64: an error, not a NaN.
        let e = project(&m, &[q; 3], &[[1e200; 3]; 3], &c).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        // Empty input is fine.
        let p = project(&[], &[], &[], &c).unwrap();
        assert!(p.radii.is_empty());
    }

    /// A random camera: rotation from a random quaternion, a translation that puts the cloud
    /// in front, and an off-centre principal point.
    fn random_camera(rng: &mut Rng) -> Camera {
        let mut q = [0.0; 4];
        for v in q.iter_mut() {
            *v = rng.range(-1.0, 1.0);
        }
        let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
        let q = [q[0] / n, q[1] / n, q[2] / n, q[3] / n];
        let r = quat_to_rotmat(&q);
        let t = [rng.range(-0.2, 0.2), rng.range(-0.2, 0.2), 4.0];
        let mut v = IDENTITY;
        for i in 0..3 {
            for j in 0..3 {
                v[4 * i + j] = r[i][j];
            }
            v[4 * i + 3] = t[i];
        }
        Camera {
            viewmat: v,
            k: [90.0, 0.0, 30.0, 0.0, 110.0, 26.0, 0.0, 0.0, 1.0],
            width: 64,
            height: 48,
            near: 0.01,
            far: 100.0,
        }
    }

    /// World-space point whose camera-space position is `pc`.
    fn world_of(cam: &Camera, pc: V3) -> V3 {
        let v = &cam.viewmat;
        let w = [[v[0], v[1], v[2]], [v[4], v[5], v[6]], [v[8], v[9], v[10]]];
        let d = [pc[0] - v[3], pc[1] - v[7], pc[2] - v[11]];
        mv(&tr(&w), &d)
    }

    fn loss(
        means: &[[f64; 3]],
        quats: &[[f64; 4]],
        scales: &[[f64; 3]],
        cam: &Camera,
        vm: &[[f64; 2]],
        vc: &[[f64; 3]],
        vd: &[f64],
    ) -> f64 {
        let p = project(means, quats, scales, cam).unwrap();
        let mut l = 0.0;
        for i in 0..means.len() {
            l += vm[i][0] * p.means2d[i][0] + vm[i][1] * p.means2d[i][1];
            l += vc[i][0] * p.conics[i][0] + vc[i][1] * p.conics[i][1] + vc[i][2] * p.conics[i][2];
            l += vd[i] * p.depths[i];
        }
        l
    }

    #[test]
    fn project_backward_matches_finite_differences() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let cam = random_camera(&mut rng);
        // Camera-space positions: inside the view, clamped in x (both sides), clamped in y, and
        // one culled (behind the camera).
        let targets: [V3; 7] = [
            [0.1, -0.05, 1.5],
            [-0.3, 0.2, 2.5],
            [0.4, 0.3, 3.0],
            [1.6, 0.1, 2.0], // x/z = 0.8 > lim_x+ = 34/90 + 0.3·0.356 ≈ 0.48: clamped
            [-1.5, -1.2, 2.0], // clamped in x and y
            [0.2, 1.4, 2.2], // y/z ≈ 0.64 > lim_y+ ≈ 0.26: clamped
            [0.0, 0.0, -1.0], // culled
        ];
        let n = targets.len();
        let means: Vec<V3> = targets.iter().map(|&t| world_of(&cam, t)).collect();
        let mut quats = Vec::new();
        let mut scales = Vec::new();
        for i in 0..n {
            quats.push([
                rng.range(0.5, 1.5),
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
                rng.range(-1.0, 1.0),
            ]);
            // Clamped ones are large so that they still overlap the image.
            let big = if (3..6).contains(&i) { 8.0 } else { 1.0 };
            scales.push([
                big * rng.range(0.05, 0.3),
                big * rng.range(0.05, 0.3),
                big * rng.range(0.05, 0.3),
            ]);
        }
        let vm: Vec<[f64; 2]> = (0..n)
            .map(|_| [rng.range(-1.0, 1.0), rng.range(-1.0, 1.0)])
            .collect();
        let vc: Vec<[f64; 3]> = (0..n)
            .map(|_| {
                [
                    rng.range(-50.0, 50.0),
                    rng.range(-50.0, 50.0),
                    rng.range(-50.0, 50.0),
                ]
            })
            .collect();
        let vd: Vec<f64> = (0..n).map(|_| rng.range(-1.0, 1.0)).collect();

        let p = project(&means, &quats, &scales, &cam).unwrap();
        for i in 0..6 {
            assert!(
                p.radii[i] > 0,
                "Gaussian {i} should be visible: {:?}",
                p.radii
            );
        }
        assert_eq!(p.radii[6], 0);
        // The clamp is really active where intended.
        let cp = check_camera(&cam).unwrap();
        for (i, want) in [
            (3, (true, false)),
            (4, (true, true)),
            (5, (false, true)),
            (0, (false, false)),
        ] {
            let f = forward_one(i, &means[i], &quats[i], &scales[i], &cp)
                .unwrap()
                .unwrap();
            assert_eq!((f.clamped_x, f.clamped_y), want, "Gaussian {i}");
        }

        // All three output gradients together, then the conics alone: the J-entry terms (the
        // clamp) only reach the loss through the conic, which the mean2d term would swamp.
        fd_check(&cam, &means, &quats, &scales, &vm, &vc, &vd);
        let zero_m = vec![[0.0; 2]; n];
        let zero_d = vec![0.0; n];
        fd_check(&cam, &means, &quats, &scales, &zero_m, &vc, &zero_d);
    }

    /// Compares `project_backward` with central differences (h = 1e-6) of the scalar loss, for
    /// every input component. The error of a component is measured relative to the largest
    /// analytic gradient of the same group (means / quats / scales) of the same Gaussian.
    fn fd_check(
        cam: &Camera,
        means: &[V3],
        quats: &[[f64; 4]],
        scales: &[V3],
        vm: &[[f64; 2]],
        vc: &[[f64; 3]],
        vd: &[f64],
    ) {
        let n = means.len();
        let (gm, gq, gs) = project_backward(means, quats, scales, cam, vm, vc, vd).unwrap();
        let p = project(means, quats, scales, cam).unwrap();
        for i in 0..n {
            if p.radii[i] == 0 {
                assert_eq!((gm[i], gq[i], gs[i]), ([0.0; 3], [0.0; 4], [0.0; 3]));
            }
        }
        let h = 1e-6;
        let l = |m: &[V3], q: &[[f64; 4]], s: &[V3]| loss(m, q, s, cam, vm, vc, vd);
        let mut worst: f64 = 0.0;
        let mut check = |what: &str, i: usize, d: usize, an: f64, fd: f64, group: &[f64]| {
            let scale = group.iter().fold(1e-6f64, |a, &b| a.max(b.abs()));
            let err = (an - fd).abs() / scale;
            worst = worst.max(err);
            assert!(
                err < 1e-5,
                "{what}[{i}][{d}]: analytic {an} vs fd {fd} (rel {err:e})"
            );
        };
        for i in 0..n {
            for d in 0..3 {
                let (mut mp, mut mn) = (means.to_vec(), means.to_vec());
                mp[i][d] += h;
                mn[i][d] -= h;
                let fd = (l(&mp, quats, scales) - l(&mn, quats, scales)) / (2.0 * h);
                check("means", i, d, gm[i][d], fd, &gm[i]);
                let (mut sp, mut sn) = (scales.to_vec(), scales.to_vec());
                sp[i][d] += h;
                sn[i][d] -= h;
                let fd = (l(means, quats, &sp) - l(means, quats, &sn)) / (2.0 * h);
                check("scales", i, d, gs[i][d], fd, &gs[i]);
            }
            for d in 0..4 {
                let (mut qp, mut qn) = (quats.to_vec(), quats.to_vec());
                qp[i][d] += h;
                qn[i][d] -= h;
                let fd = (l(means, &qp, scales) - l(means, &qn, scales)) / (2.0 * h);
                check("quats", i, d, gq[i][d], fd, &gq[i]);
            }
        }
        eprintln!("project_backward vs central differences: worst relative error {worst:e}");
        assert!(worst > 0.0);
    }

    #[test]
    fn quaternion_gradient_is_tangent() {
        // L depends on q only through q/|q|, so v_q·q = 0.
        let c = cam(100.0, 100.0, 64, 48);
        let q = [[0.7, 0.2, -0.4, 0.9]];
        let (_, gq, _) = project_backward(
            &[[0.1, 0.2, 2.0]],
            &q,
            &[[0.1, 0.2, 0.3]],
            &c,
            &[[0.3, -0.2]],
            &[[5.0, -3.0, 2.0]],
            &[0.5],
        )
        .unwrap();
        let dot: f64 = (0..4).map(|k| gq[0][k] * q[0][k]).sum();
        assert!(dot.abs() < 1e-12 * gq[0].iter().map(|v| v.abs()).sum::<f64>());
        assert!(gq[0].iter().any(|v| v.abs() > 1e-6));
    }

    #[test]
    fn sh_degree0_and_rgb() {
        let coeffs = [0.4, -0.2, -3.0];
        let raw = sh_colors(0, &[[0.0; 3]], &coeffs, 1).unwrap();
        let rgb = sh_to_rgb(&raw);
        let c0 = 0.282_094_791_773_878_14;
        assert!(close(rgb[0][0], c0 * 0.4 + 0.5, 1e-15));
        assert!(close(rgb[0][1], c0 * -0.2 + 0.5, 1e-15));
        assert_eq!(rgb[0][2], 0.0); // c0·(−3) + 0.5 < 0 → clamped
        let v = sh_to_rgb_backward(&raw, &[[1.0, 2.0, 3.0]]).unwrap();
        assert_eq!(v[0], [1.0, 2.0, 0.0]);
    }

    #[test]
    fn sh_degree1_signs_and_normalisation() {
        // K = 4 (degree 1): coeffs[k] = e_k in channel 0. Direction (0, 2, 0) → unit +y:
        // Y1 = −C1·y = −C1, Y2 = Y3 = 0.
        let c1 = 0.488_602_511_902_919_9;
        for (k, dir, want) in [
            (1usize, [0.0, 2.0, 0.0], -c1),
            (2, [0.0, 0.0, 5.0], c1),
            (3, [3.0, 0.0, 0.0], -c1),
            (3, [-3.0, 0.0, 0.0], c1),
        ] {
            let mut coeffs = vec![0.0; 12];
            coeffs[k * 3] = 1.0;
            let raw = sh_colors(1, &[dir], &coeffs, 4).unwrap();
            assert!(close(raw[0][0], want, 1e-15), "k {k}: {}", raw[0][0]);
            assert_eq!(raw[0][1], 0.0);
        }
        // Degree 2, z axis: Y6 = 0.9461746957575601 − 0.31539156525252005 = 0.6307831305…
        let mut coeffs = vec![0.0; 27];
        coeffs[6 * 3 + 2] = 1.0;
        let raw = sh_colors(2, &[[0.0, 0.0, 1.0]], &coeffs, 9).unwrap();
        assert!(close(raw[0][2], 0.630_783_130_505_040_1, 1e-15));
        // Degree 3, x axis: Y15 = −0.5900435899266435·x³ = −0.59004…
        let mut coeffs = vec![0.0; 48];
        coeffs[15 * 3 + 1] = 1.0;
        let raw = sh_colors(3, &[[1.0, 0.0, 0.0]], &coeffs, 16).unwrap();
        assert!(close(raw[0][1], -0.590_043_589_926_643_5, 1e-15));
    }

    #[test]
    fn sh_basis_is_orthonormal() {
        // ∫ Y_i Y_j dΩ = δ_ij, exactly by 4-point Gauss–Legendre in z × 16 uniform φ
        // (the products are polynomials of degree ≤ 6 in z and trig order ≤ 6 in φ).
        let gl = [
            (-0.861_136_311_594_052_6, 0.347_854_845_137_453_8),
            (-0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
            (0.339_981_043_584_856_3, 0.652_145_154_862_546_1),
            (0.861_136_311_594_052_6, 0.347_854_845_137_453_8),
        ];
        let nphi = 16;
        let mut gram = [[0.0; 16]; 16];
        for &(z, wz) in &gl {
            let rho = (1.0f64 - z * z).sqrt();
            for p in 0..nphi {
                let phi = 2.0 * std::f64::consts::PI * (p as f64 + 0.3) / nphi as f64;
                let (b, _) = sh_basis(3, &[rho * phi.cos(), rho * phi.sin(), z]);
                let w = wz * 2.0 * std::f64::consts::PI / nphi as f64;
                for i in 0..16 {
                    for j in 0..16 {
                        gram[i][j] += w * b[i] * b[j];
                    }
                }
            }
        }
        for (i, row) in gram.iter().enumerate() {
            for (j, &g) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((g - want).abs() < 1e-12, "({i},{j}) = {g}");
            }
        }
    }

    #[test]
    fn sh_errors() {
        let e = sh_colors(4, &[[1.0, 0.0, 0.0]], &[0.0; 75], 25).unwrap_err();
        assert!(e.contains("degree"), "{e}");
        let e = sh_colors(2, &[[1.0, 0.0, 0.0]], &[0.0; 12], 4).unwrap_err();
        assert!(e.contains("k = 4"), "{e}");
        let e = sh_colors(1, &[[1.0, 0.0, 0.0]], &[0.0; 11], 4).unwrap_err();
        assert!(e.contains("coeffs"), "{e}");
        let e = sh_colors(1, &[[0.0; 3]], &[0.0; 12], 4).unwrap_err();
        assert!(e.contains("dirs[0]"), "{e}");
        let mut c = [0.0; 24];
        c[12 + 3 * 2 + 1] = f64::NAN;
        let e = sh_colors(1, &[[1.0, 0.0, 0.0]; 2], &c, 4).unwrap_err();
        assert_eq!(e, "coeffs[1][2][1] is not finite");
        // K larger than needed is accepted, and the extra coefficients are ignored.
        let mut c = vec![0.0; 16 * 3];
        c[0] = 1.0;
        c[10 * 3] = 100.0;
        let raw = sh_colors(1, &[[0.0, 0.0, 1.0]], &c, 16).unwrap();
        assert!(close(raw[0][0], 0.282_094_791_773_878_14, 1e-15));
    }

    #[test]
    fn sh_backward_matches_finite_differences() {
        let mut rng = Rng(0x1234_5678_9ABC_DEF1);
        for degree in 0..=3u32 {
            let n = 5;
            let k = sh_num_coeffs(degree) + 1; // one spare coefficient: gradient 0
            let dirs: Vec<V3> = (0..n)
                .map(|_| {
                    [
                        rng.range(-2.0, 2.0),
                        rng.range(-2.0, 2.0),
                        rng.range(-2.0, 2.0),
                    ]
                })
                .collect();
            let coeffs: Vec<f64> = (0..n * k * 3).map(|_| rng.range(-1.0, 1.0)).collect();
            let vcol: Vec<[f64; 3]> = (0..n)
                .map(|_| {
                    [
                        rng.range(-1.0, 1.0),
                        rng.range(-1.0, 1.0),
                        rng.range(-1.0, 1.0),
                    ]
                })
                .collect();
            let l = |d: &[V3], c: &[f64]| -> f64 {
                let col = sh_colors(degree, d, c, k).unwrap();
                col.iter()
                    .zip(&vcol)
                    .map(|(a, b)| a[0] * b[0] + a[1] * b[1] + a[2] * b[2])
                    .sum()
            };
            let (gc, gd) = sh_colors_backward(degree, &dirs, &coeffs, k, &vcol).unwrap();
            let h = 1e-6;
            for j in 0..coeffs.len() {
                let (mut cp, mut cn) = (coeffs.clone(), coeffs.clone());
                cp[j] += h;
                cn[j] -= h;
                let fd = (l(&dirs, &cp) - l(&dirs, &cn)) / (2.0 * h);
                assert!(
                    (gc[j] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "degree {degree} coeff {j}: {} vs {fd}",
                    gc[j]
                );
                if (j / 3) % k == k - 1 {
                    assert_eq!(gc[j], 0.0);
                }
            }
            for i in 0..n {
                let scale = gd[i].iter().fold(1e-3f64, |a, &b| a.max(b.abs()));
                for d in 0..3 {
                    let (mut dp, mut dn) = (dirs.clone(), dirs.clone());
                    dp[i][d] += h;
                    dn[i][d] -= h;
                    let fd = (l(&dp, &coeffs) - l(&dn, &coeffs)) / (2.0 * h);
                    assert!(
                        (gd[i][d] - fd).abs() < 1e-5 * scale,
                        "degree {degree} dir {i}.{d}: {} vs {fd}",
                        gd[i][d]
                    );
                }
            }
            if degree == 0 {
                assert!(gd.iter().all(|g| *g == [0.0; 3]));
            }
        }
    }
}
