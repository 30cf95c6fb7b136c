//! 3D Gaussian Splatting reference (issue 15, first step): the f64 oracle of the coming `ops::gs`
//! kernels, with gsplat's conventions (quaternions wxyz, linear scales, opacities after sigmoid,
//! `viewmat` world to camera, row-major) and the INRIA rasteriser's per-pixel rules.
//!
//! - [`project`]: EWA projection (gsplat's clamped Jacobian, `+0.3` blur, conic, 3σ radius of
//!   `λ_max`, near/far and off-screen culling) and its vector-Jacobian product; spherical
//!   harmonics of degree 0–3 and theirs.
//! - [`raster`]: tile binning (16×16 tiles, keys `(tile << 32) | depth bits`, a stable sort: the
//!   order the device sort must reproduce), the forward (front to back, α cap 0.99, skip below
//!   1/255, stop before T falls below 1e-4) and the backward (back to front from the final T and
//!   the contributor count).
//! - [`merge`]: BalanceGS's similarity merging: covariance and its decomposition, the
//!   opacity-weighted moment match of PAPERS.md, a similarity measure, a spatial hash grid and a
//!   deterministic greedy pairing.

pub mod merge;
pub mod project;
pub mod raster;

/// Tile side in pixels (gsplat / INRIA).
pub const TILE: u32 = 16;
/// Added to the 2-D covariance's diagonal (low-pass filter).
pub const COV2D_BLUR: f64 = 0.3;
/// A Gaussian's α at a pixel is capped here (INRIA rule).
pub const ALPHA_MAX: f64 = 0.99;
/// A Gaussian with α below this at a pixel is skipped.
pub const ALPHA_MIN: f64 = 1.0 / 255.0;
/// A Gaussian that would take the transmittance below this is not blended, and the pixel stops.
pub const T_MIN: f64 = 1e-4;

/// A pinhole camera, gsplat's conventions: `viewmat` world→camera, row-major 4×4 (camera looks
/// along +z, x right, y down); `k` = [fx, 0, cx, 0, fy, cy, 0, 0, 1] row-major 3×3.
#[derive(Clone, Debug, PartialEq)]
pub struct Camera {
    /// World to camera, row-major 4×4.
    pub viewmat: [f64; 16],
    /// Intrinsics, row-major 3×3.
    pub k: [f64; 9],
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Near plane (gsplat's default 0.01): nearer Gaussians are culled.
    pub near: f64,
    /// Far plane: farther Gaussians are culled.
    pub far: f64,
}

/// The per-Gaussian output of the projection (index = Gaussian id). A culled Gaussian has
/// `radius == 0` (its other fields are 0).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Projected {
    /// Projected means in pixels, `(fx·x/z + cx, fy·y/z + cy)`.
    pub means2d: Vec<[f64; 2]>,
    /// View-space depth z.
    pub depths: Vec<f64>,
    /// (A, B, C): the inverse 2-D covariance [[A, B], [B, C]].
    pub conics: Vec<[f64; 3]>,
    /// The radius in pixels, `ceil(3·√λ_max)`; 0 when culled.
    pub radii: Vec<i32>,
}
