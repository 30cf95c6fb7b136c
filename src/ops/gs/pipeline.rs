//! The whole rasteriser in one call, as gsplat's `rasterization()`: `gs.render` (project →
//! SH colours → bin → render) and `gs.render_backward` (the forward again, then render
//! backward → SH backward → project backward); [`rasterize_saved`] and [`backward`] split the
//! two for a caller that differentiates the render it made (the training driver). These are the op table's `gs.render` and
//! `gs.render_backward`; the stages are the typed ops of [`super::project`], [`super::bin`]
//! and [`super::render`], and every error comes from the stage that found it (named by that
//! stage's op, e.g. `gs.project: Gaussian 3 (the first bad one): ...`), or from here (named
//! `gs.render` / `gs.render_backward`) for the inputs only this layer sees.
//!
//! Inputs (f32, row-major, on one device): `means [N,3]`, `quats [N,4]` (wxyz, normalised
//! inside), `scales [N,3]` (linear), `opacities [N]` (after the sigmoid), and the colours
//! ([`Colors`]): RGB `[N,3]`, or SH coefficients `[N,K,3]` evaluated at degree `sh_degree ≤ 3`
//! (`K ≥ (sh_degree+1)²`) along the view direction, `rgb = max(sh + 0.5, 0)` as gsplat. The
//! camera is a [`Camera`] (`viewmat` world→camera, `K`, width, height, near, far).
//!
//! gsplat evaluates SH for the visible Gaussians only; [`super::project::sh_colors`] evaluates
//! them all, so with `sh_degree ≥ 1` a Gaussian exactly at the camera centre (culled anyway)
//! is an error rather than skipped.

use super::bin;
use super::project::{self, Camera, Projected};
use super::render::{self, Layout, RenderInputs, Rendered};
use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::{on_device, tah};

/// The op name of [`rasterize`]'s own errors (the table's `gs.render`).
pub const OP: &str = render::OP;
/// The op name of [`rasterize_backward`]'s own errors (the table's `gs.render_backward`).
pub const BACKWARD_OP: &str = render::BACKWARD_OP;

/// The Gaussians' colours.
#[derive(Clone, Copy, Debug)]
pub enum Colors<'a> {
    /// `[N,3]` RGB, used as given.
    Rgb(&'a DeviceBuffer<f32>),
    /// `[N,K,3]` SH coefficients (gsplat's basis, degree `sh_degree` in 0..=3, `K ≥
    /// (sh_degree+1)²`; coefficients past `(sh_degree+1)²` are ignored).
    Sh {
        /// `[N,K,3]`.
        coeffs: &'a DeviceBuffer<f32>,
        /// The degree evaluated, 0..=3.
        sh_degree: u32,
    },
}

/// The gradients of [`rasterize_backward`] (index = Gaussian id; Gaussians that touch no
/// pixel get zeros).
#[derive(Debug)]
pub struct RasterGrads {
    /// `[N,3]` `∂L/∂means` (through the projection, plus the SH view direction for degree ≥ 1).
    pub v_means: DeviceBuffer<f32>,
    /// `[N,4]` `∂L/∂quats`, with respect to the unnormalised input.
    pub v_quats: DeviceBuffer<f32>,
    /// `[N,3]` `∂L/∂scales`.
    pub v_scales: DeviceBuffer<f32>,
    /// `[N]` `∂L/∂opacities`.
    pub v_opacities: DeviceBuffer<f32>,
    /// `[N,3]` `∂L/∂` the RGB colours rendered (the input for [`Colors::Rgb`], the evaluated SH
    /// colours for [`Colors::Sh`]).
    pub v_colors: DeviceBuffer<f32>,
    /// `[N,K,3]` `∂L/∂coeffs` for [`Colors::Sh`]; `None` for [`Colors::Rgb`].
    pub v_coeffs: Option<DeviceBuffer<f32>>,
}

/// Everything a forward made, kept for [`backward`] (the driver's training step renders once
/// and differentiates that render).
pub struct Saved {
    projected: Projected,
    /// The SH colours ([`Colors::Sh`]), `None` for RGB.
    sh_rgb: Option<DeviceBuffer<f32>>,
    bins: bin::Bins,
    rendered: Rendered,
    /// Gaussians, and SH coefficients per Gaussian (0 for RGB).
    n: usize,
    k: usize,
}

impl Saved {
    /// The render: image, alpha, contributor counts, final T.
    pub fn rendered(&self) -> &Rendered {
        &self.rendered
    }

    /// The projection (means2d, depths, conics, radii).
    pub fn projected(&self) -> &Projected {
        &self.projected
    }

    /// The tile bins.
    pub fn bins(&self) -> &bin::Bins {
        &self.bins
    }
}

/// The rasteriser's inputs from the projection, the bins and the colours rendered.
fn render_inputs<'a>(
    projected: &'a Projected,
    bins: &'a bin::Bins,
    opacities: &'a DeviceBuffer<f32>,
    colors: &'a DeviceBuffer<f32>,
    cam: &Camera,
    background: [f32; 3],
) -> RenderInputs<'a> {
    RenderInputs {
        means2d: &projected.means2d,
        conics: &projected.conics,
        opacities,
        colors,
        ids: &bins.ids,
        tile_ranges: &bins.tile_ranges,
        tiles_x: bins.tiles_x,
        tiles_y: bins.tiles_y,
        width: cam.width,
        height: cam.height,
        background,
    }
}

/// The RGB colours rendered: the input's, or the evaluated SH colours.
fn rgb<'a>(
    colors: &Colors<'a>,
    sh_rgb: &'a Option<DeviceBuffer<f32>>,
) -> Result<&'a DeviceBuffer<f32>> {
    match (colors, sh_rgb) {
        (Colors::Rgb(c), _) => Ok(c),
        (Colors::Sh { .. }, Some(c)) => Ok(c),
        (Colors::Sh { .. }, None) => Err(Error::invalid(
            OP,
            "internal: the SH colours were not evaluated",
        )),
    }
}

/// N, after checking what no stage checks: `opacities` of N values, the colours of N
/// Gaussians, the coefficients' K (returned for SH), devices.
fn check(
    op: &'static str,
    means: &DeviceBuffer<f32>,
    opacities: &DeviceBuffer<f32>,
    colors: &Colors<'_>,
) -> Result<(usize, usize)> {
    let bad = |msg: String| Err(Error::invalid(op, msg));
    if means.len() % 3 != 0 {
        return bad(format!(
            "means has {} elements, not a multiple of 3 ([N,3])",
            means.len()
        ));
    }
    let n = means.len() / 3;
    let dev = means.device();
    on_device(op, "opacities", dev, opacities)?;
    if opacities.len() != n {
        return bad(format!(
            "opacities has {} elements, expected {n} (means has {n} Gaussians)",
            opacities.len()
        ));
    }
    match *colors {
        Colors::Rgb(c) => {
            on_device(op, "colors", dev, c)?;
            if c.len() != 3 * n {
                return bad(format!(
                    "colors has {} elements, expected {} ([{n},3])",
                    c.len(),
                    3 * n
                ));
            }
            Ok((n, 0))
        }
        Colors::Sh { coeffs, sh_degree } => {
            on_device(op, "coeffs", dev, coeffs)?;
            if sh_degree > 3 {
                return bad(format!("sh_degree {sh_degree} is not supported (0..=3)"));
            }
            let need = (sh_degree as usize + 1).pow(2);
            let k = if n == 0 {
                need
            } else if coeffs.len() % (3 * n) == 0 {
                coeffs.len() / (3 * n)
            } else {
                return bad(format!(
                    "coeffs has {} elements, not N·K·3 for N = {n}",
                    coeffs.len()
                ));
            };
            if n == 0 && !coeffs.is_empty() {
                return bad(format!(
                    "coeffs has {} elements for 0 Gaussians",
                    coeffs.len()
                ));
            }
            if k < need {
                return bad(format!(
                    "coeffs has K = {k} coefficients per Gaussian, fewer than the {need} of \
                     sh_degree {sh_degree}"
                ));
            }
            Ok((n, k))
        }
    }
}

/// `gs.render`'s forward, keeping what [`backward`] needs: [`rasterize`] without dropping the
/// intermediate buffers. Errors: those of [`rasterize`].
#[allow(clippy::too_many_arguments)]
pub fn rasterize_saved(
    means: &DeviceBuffer<f32>,
    quats: &DeviceBuffer<f32>,
    scales: &DeviceBuffer<f32>,
    opacities: &DeviceBuffer<f32>,
    colors: Colors<'_>,
    cam: &Camera,
    background: [f32; 3],
    layout: Layout,
) -> Result<Saved> {
    let (n, k) = check(OP, means, opacities, &colors)?;
    check_background(OP, background)?;
    let projected = project::project(means, quats, scales, cam)?;
    let sh_rgb = match colors {
        Colors::Rgb(_) => None,
        Colors::Sh { coeffs, sh_degree } => {
            Some(project::sh_colors(sh_degree, means, cam, coeffs, k)?)
        }
    };
    let bins = bin::bin(
        &projected.means2d,
        &projected.depths,
        &projected.radii,
        cam.width,
        cam.height,
    )?;
    let x = render_inputs(
        &projected,
        &bins,
        opacities,
        rgb(&colors, &sh_rgb)?,
        cam,
        background,
    );
    let rendered = render::render(&x, layout)?;
    Ok(Saved {
        projected,
        sh_rgb,
        bins,
        rendered,
        n,
        k,
    })
}

fn check_background(op: &'static str, background: [f32; 3]) -> Result<()> {
    if background.iter().all(|b| b.is_finite()) {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("background {background:?} is not finite"),
        ))
    }
}

/// `gs.render`: renders N Gaussians through `cam` (gsplat's `rasterization()` for one camera):
/// [`project::project`], the SH colours for [`Colors::Sh`] ([`project::sh_colors`]),
/// [`bin::bin`], then [`render::render`] in `layout` (both layouts give identical outputs).
/// Returns the image `[H,W,3]`, alpha `[H,W]`, the contributor counts and the final T.
///
/// Errors ([`Error::InvalidArgument`]): those of each stage, named by the stage's op; and,
/// named `gs.render`, `means` not `[N,3]`, `opacities` not `[N]`, `colors` not `[N,3]`,
/// `coeffs` not `[N,K,3]` with `K ≥ (sh_degree+1)²`, a `sh_degree` above 3, a non-finite
/// background, buffers on another device. A camera behind every Gaussian renders the
/// background (no error).
#[allow(clippy::too_many_arguments)]
pub fn rasterize(
    means: &DeviceBuffer<f32>,
    quats: &DeviceBuffer<f32>,
    scales: &DeviceBuffer<f32>,
    opacities: &DeviceBuffer<f32>,
    colors: Colors<'_>,
    cam: &Camera,
    background: [f32; 3],
    layout: Layout,
) -> Result<Rendered> {
    rasterize_saved(
        means, quats, scales, opacities, colors, cam, background, layout,
    )
    .map(|s| s.rendered)
}

/// `gs.render_backward`: the gradients of a scalar loss `L` with respect to the inputs of
/// [`rasterize`], given `v_image = ∂L/∂image` (`[H,W,3]`) and `v_alpha = ∂L/∂alpha` (`[H,W]`;
/// `None`: zeros). Runs the forward again (project, SH, bin, render), then
/// [`render::render_backward`] (per-Gaussian sums by atomics: the last bits vary from run to
/// run on a GPU), [`project::project_backward`] (the depths get no gradient) and, for
/// [`Colors::Sh`], [`project::sh_colors_backward`], whose `v_means` is added to the
/// projection's.
///
/// Errors: those of [`rasterize`] and of each backward stage (named by its op); named
/// `gs.render_backward`, `v_image` not of `3·H·W` or `v_alpha` not of `H·W` values.
#[allow(clippy::too_many_arguments)]
pub fn rasterize_backward(
    means: &DeviceBuffer<f32>,
    quats: &DeviceBuffer<f32>,
    scales: &DeviceBuffer<f32>,
    opacities: &DeviceBuffer<f32>,
    colors: Colors<'_>,
    cam: &Camera,
    background: [f32; 3],
    layout: Layout,
    v_image: &DeviceBuffer<f32>,
    v_alpha: Option<&DeviceBuffer<f32>>,
) -> Result<RasterGrads> {
    let op = BACKWARD_OP;
    check(op, means, opacities, &colors)?;
    check_background(op, background)?;
    cam.validate(op)?;
    let dev = means.device().clone();
    let n_pix = cam.width as usize * cam.height as usize;
    on_device(op, "v_image", &dev, v_image)?;
    if v_image.len() != 3 * n_pix {
        return Err(Error::invalid(
            op,
            format!(
                "v_image has {} values, expected {} ([{}, {}, 3])",
                v_image.len(),
                3 * n_pix,
                cam.height,
                cam.width
            ),
        ));
    }
    if let Some(a) = v_alpha {
        on_device(op, "v_alpha", &dev, a)?;
        if a.len() != n_pix {
            return Err(Error::invalid(
                op,
                format!(
                    "v_alpha has {} values, expected {n_pix} ([{}, {}])",
                    a.len(),
                    cam.height,
                    cam.width
                ),
            ));
        }
    }
    let saved = rasterize_saved(
        means, quats, scales, opacities, colors, cam, background, layout,
    )?;
    backward(
        &saved, means, quats, scales, opacities, colors, cam, background, layout, v_image, v_alpha,
    )
    .map(|(g, _)| g)
}

/// The backward of a [`rasterize_saved`] forward, which must have had the same inputs:
/// [`render::render_backward`] (per-Gaussian sums by atomics: the last bits vary from run to
/// run on a GPU), [`project::project_backward`] (the depths get no gradient) and, for
/// [`Colors::Sh`], [`project::sh_colors_backward`], whose `v_means` is added to the
/// projection's. Returns the gradients and `∂L/∂means2d` `[N,2]` in pixels (the statistic
/// densification uses). `v_alpha`: `None` is zeros.
///
/// Errors: those of each backward stage (named by its op).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    saved: &Saved,
    means: &DeviceBuffer<f32>,
    quats: &DeviceBuffer<f32>,
    scales: &DeviceBuffer<f32>,
    opacities: &DeviceBuffer<f32>,
    colors: Colors<'_>,
    cam: &Camera,
    background: [f32; 3],
    layout: Layout,
    v_image: &DeviceBuffer<f32>,
    v_alpha: Option<&DeviceBuffer<f32>>,
) -> Result<(RasterGrads, DeviceBuffer<f32>)> {
    let dev = means.device().clone();
    let (n, k) = (saved.n, saved.k);
    let n_pix = cam.width as usize * cam.height as usize;
    let x = render_inputs(
        &saved.projected,
        &saved.bins,
        opacities,
        rgb(&colors, &saved.sh_rgb)?,
        cam,
        background,
    );
    let zeros_alpha;
    let v_alpha = match v_alpha {
        Some(a) => a,
        None => {
            zeros_alpha = dev.upload(&vec![0f32; n_pix], "gs.v_alpha")?;
            &zeros_alpha
        }
    };
    let g = render::render_backward(&x, &saved.rendered, v_image, v_alpha, layout)?;
    let v_depths = dev.upload(&vec![0f32; n], "gs.v_depths")?;
    let (mut v_means, v_quats, v_scales) = project::project_backward(
        means,
        quats,
        scales,
        cam,
        &g.v_means2d,
        &g.v_conics,
        &v_depths,
    )?;
    let v_coeffs = match colors {
        Colors::Rgb(_) => None,
        Colors::Sh { coeffs, sh_degree } => {
            let (v_coeffs, v_means_sh) =
                project::sh_colors_backward(sh_degree, means, cam, coeffs, k, &g.v_colors)?;
            tah::accumulate_logits(&mut v_means, &v_means_sh)?;
            Some(v_coeffs)
        }
    };
    Ok((
        RasterGrads {
            v_means,
            v_quats,
            v_scales,
            v_opacities: g.v_opacities,
            v_colors: g.v_colors,
            v_coeffs,
        },
        g.v_means2d,
    ))
}
