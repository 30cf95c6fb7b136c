//! `gs.project`: the EWA projection of N 3D Gaussians through a pinhole camera, and its
//! vector-Jacobian product (`gs.project_backward`); one thread per Gaussian, f32 arithmetic as
//! gsplat's. Every step and constant: [`crate::reference::gs::project`] (the f64 oracle, which
//! the CPU path runs); kernels: `cuda/gs/project.cu`.
//!
//! Layouts (f32, row-major): `means [N,3]`, `quats [N,4]` (wxyz, normalised inside), `scales
//! [N,3]` (linear). Outputs ([`Projected`]): `means2d [N,2]`, `depths [N]`, `conics [N,3]`
//! (A, B, C), `radii [N]` i32; a culled Gaussian (behind `near`, past `far`, `det ≤ 0`, or its
//! box `[mean2d ± r]` off the image) has radius 0 and zeros. A camera behind every Gaussian is
//! not an error: all radii are 0.
//!
//! The input contents (non-finite values, a zero quaternion, a negative scale, a projection
//! that overflows f32) are checked on the device: the kernel records the first bad Gaussian in a
//! status word that the op reads back before returning (one small device-to-host copy, which
//! waits for the kernel), and the op fails naming that Gaussian and its problem.
//!
//! The same module holds the SH colours ([`sh_colors`], [`sh_colors_backward`]).

use crate::device::kernel::Grid;
use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, DeviceCheck};
use crate::reference::gs as reference;

/// The op name in `project`'s errors.
pub const OP: &str = "gs.project";
/// The op name in `project_backward`'s errors.
pub const BACKWARD_OP: &str = "gs.project_backward";
/// Threads per block (`kThreads` in `cuda/gs/project.cu`).
const THREADS: u32 = 128;
/// Blocks at most (the kernels loop grid-stride).
const MAX_BLOCKS: usize = 8192;
/// Most Gaussians per call: the status word holds `i·16 + code` in an i32.
pub const MAX_GAUSSIANS: usize = (i32::MAX as usize - 15) / 16;

crate::kernels! {
    module = "gs/project";
    /// The projection (grid-stride over Gaussians).
    pub(crate) struct ProjectKernel<'a> = "gs_project" block = THREADS {
        means: &'a DeviceBuffer<f32>,
        quats: &'a DeviceBuffer<f32>,
        scales: &'a DeviceBuffer<f32>,
        cam: &'a DeviceBuffer<f32>,
        width: u32,
        height: u32,
        near_plane: f32,
        far_plane: f32,
        n: u32,
        means2d: &'a mut DeviceBuffer<f32>,
        depths: &'a mut DeviceBuffer<f32>,
        conics: &'a mut DeviceBuffer<f32>,
        radii: &'a mut DeviceBuffer<i32>,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// Its vector-Jacobian product (grid-stride over Gaussians).
    pub(crate) struct ProjectBackwardKernel<'a> = "gs_project_backward" block = THREADS {
        means: &'a DeviceBuffer<f32>,
        quats: &'a DeviceBuffer<f32>,
        scales: &'a DeviceBuffer<f32>,
        cam: &'a DeviceBuffer<f32>,
        width: u32,
        height: u32,
        near_plane: f32,
        far_plane: f32,
        n: u32,
        v_means2d: &'a DeviceBuffer<f32>,
        v_conics: &'a DeviceBuffer<f32>,
        v_depths: &'a DeviceBuffer<f32>,
        v_means: &'a mut DeviceBuffer<f32>,
        v_quats: &'a mut DeviceBuffer<f32>,
        v_scales: &'a mut DeviceBuffer<f32>,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// SH colours (grid-stride over Gaussians).
    pub(crate) struct ShColorsKernel<'a> = "gs_sh_colors" block = THREADS {
        degree: u32,
        means: &'a DeviceBuffer<f32>,
        cam: &'a DeviceBuffer<f32>,
        n: u32,
        k: u32,
        coeffs: &'a DeviceBuffer<f32>,
        colors: &'a mut DeviceBuffer<f32>,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// Their vector-Jacobian product (grid-stride over Gaussians).
    pub(crate) struct ShColorsBackwardKernel<'a> = "gs_sh_colors_backward" block = THREADS {
        degree: u32,
        means: &'a DeviceBuffer<f32>,
        cam: &'a DeviceBuffer<f32>,
        n: u32,
        k: u32,
        coeffs: &'a DeviceBuffer<f32>,
        v_colors: &'a DeviceBuffer<f32>,
        v_coeffs: &'a mut DeviceBuffer<f32>,
        v_means: &'a mut DeviceBuffer<f32>,
        status: &'a mut DeviceBuffer<i32>,
    }
}

/// A pinhole camera in f32, gsplat's conventions: `viewmat` world→camera, row-major 4×4 (the
/// camera looks along +z, x right, y down; the bottom row is not read); `k` row-major 3×3, of
/// which only `fx = k[0]`, `cx = k[2]`, `fy = k[4]`, `cy = k[5]` are read. Valid: `viewmat`
/// and `k` finite, `fx, fy > 0`, `width, height ≥ 1`, `near` finite and > 0, `far > near`
/// (`+inf` allowed, as in the reference).
#[derive(Clone, Debug, PartialEq)]
pub struct Camera {
    /// World to camera, row-major 4×4.
    pub viewmat: [f32; 16],
    /// Intrinsics, row-major 3×3.
    pub k: [f32; 9],
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Near plane (gsplat's default 0.01): nearer Gaussians are culled.
    pub near: f32,
    /// Far plane: farther Gaussians are culled.
    pub far: f32,
}

impl Camera {
    /// The same camera in f64 (exact), for [`crate::reference::gs`].
    pub fn to_reference(&self) -> reference::Camera {
        reference::Camera {
            viewmat: self.viewmat.map(f64::from),
            k: self.k.map(f64::from),
            width: self.width,
            height: self.height,
            near: f64::from(self.near),
            far: f64::from(self.far),
        }
    }

    /// `Err` naming `op` and the problem when the camera is invalid (see [`Camera`]).
    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid(op, msg));
        if let Some(i) = self.viewmat.iter().position(|v| !v.is_finite()) {
            return bad(format!("cam.viewmat[{i}] is not finite"));
        }
        if let Some(i) = self.k.iter().position(|v| !v.is_finite()) {
            return bad(format!("cam.k[{i}] is not finite"));
        }
        let (fx, fy) = (self.k[0], self.k[4]);
        if !(fx > 0.0 && fy > 0.0) {
            return bad(format!(
                "cam.k: the focal lengths must be > 0 (fx = {fx}, fy = {fy})"
            ));
        }
        if self.width == 0 || self.height == 0 {
            return bad(format!(
                "cam: the image is empty ({}x{})",
                self.width, self.height
            ));
        }
        if !(self.near.is_finite() && self.near > 0.0) {
            return bad(format!(
                "cam.near must be finite and > 0 (got {})",
                self.near
            ));
        }
        if self.far.is_nan() || self.far <= self.near {
            return bad(format!(
                "cam.far must be > cam.near (got near = {}, far = {})",
                self.near, self.far
            ));
        }
        Ok(())
    }

    /// viewmat then k: the kernels' `cam` buffer.
    fn packed(&self) -> Vec<f32> {
        self.viewmat.iter().chain(&self.k).copied().collect()
    }
}

/// The output of [`project`] (index = Gaussian id).
pub struct Projected {
    /// `[N,2]` projected means in pixels, `(fx·x/z + cx, fy·y/z + cy)`.
    pub means2d: DeviceBuffer<f32>,
    /// `[N]` view-space depth z.
    pub depths: DeviceBuffer<f32>,
    /// `[N,3]` (A, B, C): the inverse 2-D covariance `[[A, B], [B, C]]`.
    pub conics: DeviceBuffer<f32>,
    /// `[N]` the radius in pixels, `ceil(3·√λ_max)`; 0 when culled.
    pub radii: DeviceBuffer<i32>,
}

// Status codes of the kernels (cuda/gs/project.cu).
const MEANS: i32 = 1;
const QUATS: i32 = 2;
const SCALES: i32 = 3;
const ZERO_QUAT: i32 = 4;
const NEG_SCALE: i32 = 5;
const OVERFLOW: i32 = 6;
const V_MEANS2D: i32 = 7;
const V_CONICS: i32 = 8;
const V_DEPTHS: i32 = 9;

fn describe(i: usize, code: i32) -> String {
    let what = match code {
        MEANS => format!("means[{i}] is not finite"),
        QUATS => format!("quats[{i}] is not finite"),
        SCALES => format!("scales[{i}] is not finite"),
        ZERO_QUAT => format!("quats[{i}] is the zero quaternion"),
        NEG_SCALE => format!("scales[{i}] has a negative entry"),
        OVERFLOW => format!(
            "the projection overflows f32 (means[{i}] or scales[{i}] too large for this camera?)"
        ),
        V_MEANS2D => format!("v_means2d[{i}] is not finite"),
        V_CONICS => format!("v_conics[{i}] is not finite"),
        V_DEPTHS => format!("v_depths[{i}] is not finite"),
        c => format!("unknown device status {c}"),
    };
    format!("Gaussian {i} (the first bad one): {what}")
}

/// The verdict of the status word `[i·16 + code]` (`i32::MAX`: no problem), the code named by
/// `describe`.
fn verdict(op: &'static str, w: &[i32], describe: fn(usize, i32) -> String) -> Result<()> {
    match w {
        [i32::MAX] => Ok(()),
        &[v] if v >= 0 => Err(Error::invalid(op, describe((v / 16) as usize, v % 16))),
        _ => Err(Error::invalid(op, format!("unknown device status {w:?}"))),
    }
}

/// [`verdict`] of the projection kernels.
fn explain(op: &'static str, w: &[i32]) -> Result<()> {
    verdict(op, w, describe)
}

/// The host version of the kernels' input check (the CPU path): the first bad Gaussian's code.
fn host_check(
    m: &[f32],
    q: &[f32],
    s: &[f32],
    v: Option<(&[f32], &[f32], &[f32])>,
) -> Option<(usize, i32)> {
    let fin = |x: &[f32]| x.iter().all(|v| v.is_finite());
    (0..m.len() / 3).find_map(|i| {
        let (mu, qi, si) = (
            &m[3 * i..3 * i + 3],
            &q[4 * i..4 * i + 4],
            &s[3 * i..3 * i + 3],
        );
        let code = if !fin(mu) {
            MEANS
        } else if !fin(qi) {
            QUATS
        } else if !fin(si) {
            SCALES
        } else if qi.iter().all(|&v| v == 0.0) {
            ZERO_QUAT
        } else if si.iter().any(|&v| v < 0.0) {
            NEG_SCALE
        } else {
            match v {
                Some((vm, _, _)) if !fin(&vm[2 * i..2 * i + 2]) => V_MEANS2D,
                Some((_, vc, _)) if !fin(&vc[3 * i..3 * i + 3]) => V_CONICS,
                Some((_, _, vd)) if !vd[i].is_finite() => V_DEPTHS,
                _ => 0,
            }
        };
        (code != 0).then_some((i, code))
    })
}

fn rows<const D: usize>(x: &[f32]) -> Vec<[f64; D]> {
    x.chunks_exact(D)
        .map(|c| std::array::from_fn(|k| f64::from(c[k])))
        .collect()
}

fn put<const D: usize>(dst: &mut [f32], src: &[[f64; D]]) {
    for (d, s) in dst.chunks_exact_mut(D).zip(src) {
        for k in 0..D {
            d[k] = s[k] as f32;
        }
    }
}

/// Checks the lengths and devices of the Gaussians and the camera; returns N.
fn common_checks(
    op: &'static str,
    means: &DeviceBuffer<f32>,
    quats: &DeviceBuffer<f32>,
    scales: &DeviceBuffer<f32>,
    cam: &Camera,
) -> Result<usize> {
    let dev = means.device();
    if means.len() % 3 != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "means has {} elements, not a multiple of 3 ([N,3])",
                means.len()
            ),
        ));
    }
    let n = means.len() / 3;
    for (what, b, per) in [("quats", quats, 4), ("scales", scales, 3)] {
        if b.len() != per * n {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} has {} elements, expected {} ([{n},{per}]: means has {n} Gaussians)",
                    b.len(),
                    per * n
                ),
            ));
        }
        on_device(op, what, dev, b)?;
    }
    if n > MAX_GAUSSIANS {
        return Err(Error::invalid(
            op,
            format!("{n} Gaussians exceed the limit of {MAX_GAUSSIANS} per call"),
        ));
    }
    cam.validate(op)?;
    Ok(n)
}

fn blocks(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32
}

/// `gs.project`: projects N Gaussians (`means [N,3]`, `quats [N,4]` wxyz, `scales [N,3]`
/// linear, f32) through `cam` with the reference's math in f32 (gsplat's clamped Jacobian, the
/// 0.3 blur, `det ≤ 0` culling, the conic, `radius = ceil(3·√λ_max)` with
/// `λ_max = m + √max(0.1, m² − det)`, near/far and off-screen culling).
///
/// Errors ([`Error::InvalidArgument`] naming `gs.project`): lengths (means not `[N,3]`, quats
/// not `[N,4]`, scales not `[N,3]`), buffers on another device, an invalid [`Camera`], and,
/// found on the device and read back before returning, the first Gaussian with a non-finite
/// mean, quaternion or scale, a zero quaternion, a negative scale, or a projection that
/// overflows f32.
pub fn project(
    means: &DeviceBuffer<f32>,
    quats: &DeviceBuffer<f32>,
    scales: &DeviceBuffer<f32>,
    cam: &Camera,
) -> Result<Projected> {
    let n = common_checks(OP, means, quats, scales, cam)?;
    let dev = means.device().clone();
    let mut out = Projected {
        means2d: dev.alloc::<f32>(2 * n, "gs.means2d")?,
        depths: dev.alloc::<f32>(n, "gs.depths")?,
        conics: dev.alloc::<f32>(3 * n, "gs.conics")?,
        radii: dev.alloc::<i32>(n, "gs.radii")?,
    };
    if let Some(h) = cpu_path(OP, &dev) {
        let (m, q, s) = (h.slice(means)?, h.slice(quats)?, h.slice(scales)?);
        if let Some((i, code)) = host_check(m, q, s, None) {
            return Err(Error::invalid(OP, describe(i, code)));
        }
        let p = reference::project::project(&rows(m), &rows(q), &rows(s), &cam.to_reference())
            .map_err(|e| Error::invalid(OP, e))?;
        put(h.slice_mut(&mut out.means2d)?, &p.means2d);
        put(h.slice_mut(&mut out.conics)?, &p.conics);
        for (d, &v) in h.slice_mut(&mut out.depths)?.iter_mut().zip(&p.depths) {
            *d = v as f32;
        }
        h.slice_mut(&mut out.radii)?.copy_from_slice(&p.radii);
        return Ok(out);
    }
    if n == 0 {
        return Ok(out);
    }
    let camb = dev.upload(&cam.packed(), "gs.cam")?;
    let mut status = dev.upload(&[i32::MAX], "gs.status")?;
    ProjectKernel {
        means,
        quats,
        scales,
        cam: &camb,
        width: cam.width,
        height: cam.height,
        near_plane: cam.near,
        far_plane: cam.far,
        n: n as u32,
        means2d: &mut out.means2d,
        depths: &mut out.depths,
        conics: &mut out.conics,
        radii: &mut out.radii,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(blocks(n)))?;
    DeviceCheck::on_device(OP, status, explain).check()?;
    Ok(out)
}

/// `(v_means [N,3], v_quats [N,4], v_scales [N,3])`, f32.
pub type ProjectGrads = (DeviceBuffer<f32>, DeviceBuffer<f32>, DeviceBuffer<f32>);

/// `gs.project_backward`: the vector-Jacobian product of [`project`] (the reference's
/// `project_backward` in f32): given `v_means2d [N,2]`, `v_conics [N,3]` (∂L/∂(A, B, C) as
/// stored) and `v_depths [N]`, returns the gradients of `means`, `quats` (w.r.t. the
/// unnormalised input) and `scales`; culled Gaussians get zeros. One thread per Gaussian, no
/// atomics.
///
/// Errors ([`Error::InvalidArgument`] naming `gs.project_backward`): those of [`project`], the
/// lengths of the `v_*` inputs, and (found on the device) a non-finite `v_*` entry, naming the
/// first bad Gaussian.
#[allow(clippy::too_many_arguments)]
pub fn project_backward(
    means: &DeviceBuffer<f32>,
    quats: &DeviceBuffer<f32>,
    scales: &DeviceBuffer<f32>,
    cam: &Camera,
    v_means2d: &DeviceBuffer<f32>,
    v_conics: &DeviceBuffer<f32>,
    v_depths: &DeviceBuffer<f32>,
) -> Result<ProjectGrads> {
    let op = BACKWARD_OP;
    let n = common_checks(op, means, quats, scales, cam)?;
    let dev = means.device().clone();
    for (what, b, per) in [
        ("v_means2d", v_means2d, 2),
        ("v_conics", v_conics, 3),
        ("v_depths", v_depths, 1),
    ] {
        if b.len() != per * n {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} has {} elements, expected {} (means has {n} Gaussians)",
                    b.len(),
                    per * n
                ),
            ));
        }
        on_device(op, what, &dev, b)?;
    }
    let mut vm = dev.alloc::<f32>(3 * n, "gs.v_means")?;
    let mut vq = dev.alloc::<f32>(4 * n, "gs.v_quats")?;
    let mut vs = dev.alloc::<f32>(3 * n, "gs.v_scales")?;
    if let Some(h) = cpu_path(op, &dev) {
        let (m, q, s) = (h.slice(means)?, h.slice(quats)?, h.slice(scales)?);
        let (gm, gc, gd) = (h.slice(v_means2d)?, h.slice(v_conics)?, h.slice(v_depths)?);
        if let Some((i, code)) = host_check(m, q, s, Some((gm, gc, gd))) {
            return Err(Error::invalid(op, describe(i, code)));
        }
        let gd: Vec<f64> = gd.iter().map(|&v| f64::from(v)).collect();
        let (a, b, c) = reference::project::project_backward(
            &rows(m),
            &rows(q),
            &rows(s),
            &cam.to_reference(),
            &rows(gm),
            &rows(gc),
            &gd,
        )
        .map_err(|e| Error::invalid(op, e))?;
        put(h.slice_mut(&mut vm)?, &a);
        put(h.slice_mut(&mut vq)?, &b);
        put(h.slice_mut(&mut vs)?, &c);
        return Ok((vm, vq, vs));
    }
    if n == 0 {
        return Ok((vm, vq, vs));
    }
    let camb = dev.upload(&cam.packed(), "gs.cam")?;
    let mut status = dev.upload(&[i32::MAX], "gs.status")?;
    ProjectBackwardKernel {
        means,
        quats,
        scales,
        cam: &camb,
        width: cam.width,
        height: cam.height,
        near_plane: cam.near,
        far_plane: cam.far,
        n: n as u32,
        v_means2d,
        v_conics,
        v_depths,
        v_means: &mut vm,
        v_quats: &mut vq,
        v_scales: &mut vs,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(blocks(n)))?;
    DeviceCheck::on_device(op, status, explain).check()?;
    Ok((vm, vq, vs))
}

/// The op name in `sh_colors`'s errors.
pub const SH_OP: &str = "gs.sh_colors";
/// The op name in `sh_colors_backward`'s errors.
pub const SH_BACKWARD_OP: &str = "gs.sh_colors_backward";

const COEFFS: i32 = 10;
const ZERO_DIR: i32 = 11;
const V_COLORS: i32 = 12;

fn describe_sh(i: usize, code: i32) -> String {
    let what = match code {
        MEANS => format!("means[{i}] is not finite"),
        COEFFS => format!("coeffs[{i}] has a non-finite value"),
        ZERO_DIR => format!(
            "means[{i}] is at the camera centre (zero or overflowing view direction; degree ≥ 1 needs one)"
        ),
        V_COLORS => format!("v_colors[{i}] is not finite"),
        c => format!("unknown device status {c}"),
    };
    format!("Gaussian {i} (the first bad one): {what}")
}

/// [`verdict`] of the SH kernels.
fn explain_sh(op: &'static str, w: &[i32]) -> Result<()> {
    verdict(op, w, describe_sh)
}

fn sh_checks(
    op: &'static str,
    degree: u32,
    means: &DeviceBuffer<f32>,
    cam: &Camera,
    coeffs: &DeviceBuffer<f32>,
    k: usize,
) -> Result<usize> {
    let dev = means.device();
    if degree > reference::project::SH_MAX_DEGREE {
        return Err(Error::invalid(
            op,
            format!("degree {degree} is not supported (0..=3)"),
        ));
    }
    let need = reference::project::sh_num_coeffs(degree);
    if k < need {
        return Err(Error::invalid(
            op,
            format!("k = {k} coefficients per Gaussian is fewer than the {need} that degree {degree} needs"),
        ));
    }
    if means.len() % 3 != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "means has {} elements, not a multiple of 3 ([N,3])",
                means.len()
            ),
        ));
    }
    let n = means.len() / 3;
    if n.checked_mul(3 * k) != Some(coeffs.len()) {
        return Err(Error::invalid(
            op,
            format!(
                "coeffs has {} elements, expected N·K·3 = {n}·{k}·3",
                coeffs.len()
            ),
        ));
    }
    if n > MAX_GAUSSIANS || k > u32::MAX as usize / 3 {
        return Err(Error::invalid(
            op,
            format!("{n} Gaussians of {k} coefficients exceed the limits"),
        ));
    }
    on_device(op, "coeffs", dev, coeffs)?;
    cam.validate(op)?;
    Ok(n)
}

/// The host version of the SH input check (the CPU path), in f32 as the kernel.
fn host_check_sh(
    degree: u32,
    m: &[f32],
    cam: &Camera,
    co: &[f32],
    k: usize,
    vc: Option<&[f32]>,
) -> Option<(usize, i32)> {
    let v = cam.viewmat;
    (0..m.len() / 3).find_map(|i| {
        let mu = &m[3 * i..3 * i + 3];
        let code = if !mu.iter().all(|x| x.is_finite()) {
            MEANS
        } else if degree >= 1 && {
            let d: [f32; 3] =
                std::array::from_fn(|a| mu[a] + (v[a] * v[3] + v[4 + a] * v[7] + v[8 + a] * v[11]));
            let norm = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            !(norm > 0.0 && norm.is_finite())
        } {
            ZERO_DIR
        } else if !co[3 * k * i..3 * k * (i + 1)].iter().all(|x| x.is_finite()) {
            COEFFS
        } else if vc.is_some_and(|vc| !vc[3 * i..3 * i + 3].iter().all(|x| x.is_finite())) {
            V_COLORS
        } else {
            0
        };
        (code != 0).then_some((i, code))
    })
}

/// `gs.sh_colors`: gsplat's SH colours of degree 0–3 (basis, constants and signs of
/// [`crate::reference::gs::project`]) at the view direction `mean − campos` (`campos = −Wᵀ·tvec`,
/// normalised for degree ≥ 1), then `rgb = max(sh + 0.5, 0)`. `coeffs` is `[N,K,3]` f32 with
/// `K ≥ (degree+1)²` (extra coefficients ignored); returns `colors [N,3]`. gsplat evaluates SH
/// only for visible Gaussians; this op evaluates all (the caller masks by radius).
///
/// Errors ([`Error::InvalidArgument`] naming `gs.sh_colors`): a degree above 3, `k` too small,
/// lengths, the camera, and (found on the device) a non-finite mean or coefficient or a mean at
/// the camera centre for degree ≥ 1, naming the first bad Gaussian.
pub fn sh_colors(
    degree: u32,
    means: &DeviceBuffer<f32>,
    cam: &Camera,
    coeffs: &DeviceBuffer<f32>,
    k: usize,
) -> Result<DeviceBuffer<f32>> {
    let n = sh_checks(SH_OP, degree, means, cam, coeffs, k)?;
    let dev = means.device().clone();
    let mut colors = dev.alloc::<f32>(3 * n, "gs.colors")?;
    if let Some(h) = cpu_path(SH_OP, &dev) {
        let (m, co) = (h.slice(means)?, h.slice(coeffs)?);
        if let Some((i, code)) = host_check_sh(degree, m, cam, co, k, None) {
            return Err(Error::invalid(SH_OP, describe_sh(i, code)));
        }
        let bad = |e| Error::invalid(SH_OP, e);
        let dirs = reference::project::view_dirs(&rows(m), &cam.to_reference()).map_err(bad)?;
        let co64: Vec<f64> = co.iter().map(|&v| f64::from(v)).collect();
        let raw = reference::project::sh_colors(degree, &dirs, &co64, k).map_err(bad)?;
        put(
            h.slice_mut(&mut colors)?,
            &reference::project::sh_to_rgb(&raw),
        );
        return Ok(colors);
    }
    if n == 0 {
        return Ok(colors);
    }
    let camb = dev.upload(&cam.packed(), "gs.cam")?;
    let mut status = dev.upload(&[i32::MAX], "gs.status")?;
    ShColorsKernel {
        degree,
        means,
        cam: &camb,
        n: n as u32,
        k: k as u32,
        coeffs,
        colors: &mut colors,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(blocks(n)))?;
    DeviceCheck::on_device(SH_OP, status, explain_sh).check()?;
    Ok(colors)
}

/// `gs.sh_colors_backward`: the vector-Jacobian product of [`sh_colors`] (the `max(· + 0.5, 0)`
/// passes the gradient where `sh + 0.5 ≥ 0`): given `v_colors [N,3]`, returns `(v_coeffs
/// [N,K,3], v_means [N,3])` (`v_means` through the normalised view direction; 0 for degree 0;
/// coefficients past `(degree+1)²` get 0).
///
/// Errors ([`Error::InvalidArgument`] naming `gs.sh_colors_backward`): those of [`sh_colors`],
/// `v_colors` not of `3N` elements, and (on the device) a non-finite `v_colors` entry.
pub fn sh_colors_backward(
    degree: u32,
    means: &DeviceBuffer<f32>,
    cam: &Camera,
    coeffs: &DeviceBuffer<f32>,
    k: usize,
    v_colors: &DeviceBuffer<f32>,
) -> Result<(DeviceBuffer<f32>, DeviceBuffer<f32>)> {
    let op = SH_BACKWARD_OP;
    let n = sh_checks(op, degree, means, cam, coeffs, k)?;
    let dev = means.device().clone();
    if v_colors.len() != 3 * n {
        return Err(Error::invalid(
            op,
            format!(
                "v_colors has {} elements, expected {} ([{n},3])",
                v_colors.len(),
                3 * n
            ),
        ));
    }
    on_device(op, "v_colors", &dev, v_colors)?;
    let mut v_coeffs = dev.alloc::<f32>(coeffs.len(), "gs.v_coeffs")?;
    let mut v_means = dev.alloc::<f32>(3 * n, "gs.v_means")?;
    if let Some(h) = cpu_path(op, &dev) {
        let (m, co, vc) = (h.slice(means)?, h.slice(coeffs)?, h.slice(v_colors)?);
        if let Some((i, code)) = host_check_sh(degree, m, cam, co, k, Some(vc)) {
            return Err(Error::invalid(op, describe_sh(i, code)));
        }
        let bad = |e| Error::invalid(op, e);
        let dirs = reference::project::view_dirs(&rows(m), &cam.to_reference()).map_err(bad)?;
        let co64: Vec<f64> = co.iter().map(|&v| f64::from(v)).collect();
        let raw = reference::project::sh_colors(degree, &dirs, &co64, k).map_err(bad)?;
        let v_raw = reference::project::sh_to_rgb_backward(&raw, &rows(vc)).map_err(bad)?;
        let (gc, gd) =
            reference::project::sh_colors_backward(degree, &dirs, &co64, k, &v_raw).map_err(bad)?;
        for (d, &s) in h.slice_mut(&mut v_coeffs)?.iter_mut().zip(&gc) {
            *d = s as f32;
        }
        put(h.slice_mut(&mut v_means)?, &gd);
        return Ok((v_coeffs, v_means));
    }
    if n == 0 {
        return Ok((v_coeffs, v_means));
    }
    let camb = dev.upload(&cam.packed(), "gs.cam")?;
    let mut status = dev.upload(&[i32::MAX], "gs.status")?;
    ShColorsBackwardKernel {
        degree,
        means,
        cam: &camb,
        n: n as u32,
        k: k as u32,
        coeffs,
        v_colors,
        v_coeffs: &mut v_coeffs,
        v_means: &mut v_means,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(blocks(n)))?;
    DeviceCheck::on_device(op, status, explain_sh).check()?;
    Ok((v_coeffs, v_means))
}
