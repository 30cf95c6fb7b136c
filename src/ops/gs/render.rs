//! `gs.render` and `gs.render_backward` (issue 15): the 3DGS tile rasteriser, forward in two
//! layouts ([`Layout::Baseline`], [`Layout::Balanced`]) and backward, in f32 on the device.
//! Rules and conventions: [`crate::reference::gs::raster`] (the oracle) and `docs/gs.md`;
//! kernels: `cuda/gs/render.cu`.
//!
//! The inputs are the projected Gaussians (`means2d [N,2]`, `conics [N,3]` as `(A, B, C)`,
//! `opacities [N]`, `colors [N,3]`) and the bins of `gs.bin` (`ids [M]` in sorted order,
//! `tile_ranges [tiles_y·tiles_x, 2]`), all on one device ([`RenderInputs`]). On the CPU path
//! the op is the reference run in f64 on the f32 inputs, rounded to f32.
//!
//! Input contents (non-finite values, ids past N, bad ranges, and for the backward non-finite
//! gradients or final T and a `n_contrib` past its tile's range) are checked on the device by a
//! check kernel before the work kernels, which then do nothing; the op reads the status words
//! back (one small device-to-host copy, which waits) and names the first problem.

use crate::device::kernel::Grid;
use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, Host};
use crate::reference::gs::raster as reference;
use crate::reference::gs::{Projected, TILE};

/// The forward's name in errors.
pub const OP: &str = "gs.render";
/// The backward's name in errors.
pub const BACKWARD_OP: &str = "gs.render_backward";

/// Threads per render block: one 16×16 tile (`kThreads`).
const THREADS: u32 = TILE * TILE;
/// Threads per check/reorder block (`kCheckThreads`).
const CHECK_THREADS: u32 = 256;
/// Blocks of the grid-stride kernels at most.
const MAX_BLOCKS: usize = 1024;
/// Status words (`kStatusWords`): the first bad index of each kind, `u32::MAX` for none.
const STATUS_WORDS: usize = 10;
const NONE: u32 = u32::MAX;

crate::kernels! {
    module = "gs/render";
    /// Input contents: colours, opacities, referenced means/conics finite; ids < N; ranges.
    pub(crate) struct CheckKernel<'a> = "gs_render_check" block = CHECK_THREADS {
        means2d: &'a DeviceBuffer<f32>,
        conics: &'a DeviceBuffer<f32>,
        opacities: &'a DeviceBuffer<f32>,
        colors: &'a DeviceBuffer<f32>,
        n: u32,
        ids: &'a DeviceBuffer<u32>,
        m: u32,
        tile_ranges: &'a DeviceBuffer<u32>,
        tiles: u32,
        status: &'a mut DeviceBuffer<u32>,
    }
    /// The backward's per-pixel inputs.
    pub(crate) struct CheckBwdKernel<'a> = "gs_render_check_bwd" block = CHECK_THREADS {
        tile_ranges: &'a DeviceBuffer<u32>,
        m: u32,
        tiles_x: u32,
        width: u32,
        height: u32,
        final_t: &'a DeviceBuffer<f32>,
        n_contrib: &'a DeviceBuffer<u32>,
        v_image: &'a DeviceBuffer<f32>,
        v_alpha: &'a DeviceBuffer<f32>,
        status: &'a mut DeviceBuffer<u32>,
    }
    /// The balanced layout's staging: per sorted entry, the Gaussian's values.
    pub(crate) struct ReorderKernel<'a> = "gs_render_reorder" block = CHECK_THREADS {
        means2d: &'a DeviceBuffer<f32>,
        conics: &'a DeviceBuffer<f32>,
        opacities: &'a DeviceBuffer<f32>,
        colors: &'a DeviceBuffer<f32>,
        n: u32,
        ids: &'a DeviceBuffer<u32>,
        m: u32,
        s_means2d: &'a mut DeviceBuffer<f32>,
        s_conics: &'a mut DeviceBuffer<f32>,
        s_opacities: &'a mut DeviceBuffer<f32>,
        s_colors: &'a mut DeviceBuffer<f32>,
        status: &'a DeviceBuffer<u32>,
    }
    /// The forward, a block per tile (both layouts: `indirect` 1 baseline, 0 balanced).
    pub(crate) struct ForwardKernel<'a> = "gs_render_fwd" block = THREADS {
        means2d: &'a DeviceBuffer<f32>,
        conics: &'a DeviceBuffer<f32>,
        opacities: &'a DeviceBuffer<f32>,
        colors: &'a DeviceBuffer<f32>,
        n: u32,
        ids: &'a DeviceBuffer<u32>,
        m: u32,
        indirect: u32,
        tile_ranges: &'a DeviceBuffer<u32>,
        tiles_x: u32,
        width: u32,
        height: u32,
        bg0: f32,
        bg1: f32,
        bg2: f32,
        image: &'a mut DeviceBuffer<f32>,
        alpha: &'a mut DeviceBuffer<f32>,
        n_contrib: &'a mut DeviceBuffer<u32>,
        final_t: &'a mut DeviceBuffer<f32>,
        status: &'a DeviceBuffer<u32>,
    }
    /// The backward, a block per tile, warp-reduced atomics.
    pub(crate) struct BackwardKernel<'a> = "gs_render_bwd" block = THREADS {
        means2d: &'a DeviceBuffer<f32>,
        conics: &'a DeviceBuffer<f32>,
        opacities: &'a DeviceBuffer<f32>,
        colors: &'a DeviceBuffer<f32>,
        n: u32,
        ids: &'a DeviceBuffer<u32>,
        m: u32,
        indirect: u32,
        tile_ranges: &'a DeviceBuffer<u32>,
        tiles_x: u32,
        width: u32,
        height: u32,
        bg0: f32,
        bg1: f32,
        bg2: f32,
        final_t: &'a DeviceBuffer<f32>,
        n_contrib: &'a DeviceBuffer<u32>,
        v_image: &'a DeviceBuffer<f32>,
        v_alpha: &'a DeviceBuffer<f32>,
        v_means2d: &'a mut DeviceBuffer<f32>,
        v_conics: &'a mut DeviceBuffer<f32>,
        v_colors: &'a mut DeviceBuffer<f32>,
        v_opacities: &'a mut DeviceBuffer<f32>,
        status: &'a DeviceBuffer<u32>,
    }
}

/// Where the forward reads each Gaussian's attributes from. Both give bit-identical outputs
/// (one kernel, the same arithmetic; only the loads differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// The per-Gaussian arrays, read by id in sorted order (scattered reads).
    Baseline,
    /// BalanceGS: a reorder kernel first copies mean2d, conic, opacity and colour into
    /// per-entry arrays in sorted order (each tile's Gaussians contiguous); the render kernel
    /// batch-loads those contiguously into shared memory.
    Balanced,
}

/// The rasteriser's inputs, all f32 / u32 buffers on one device (row-major).
#[derive(Clone, Copy, Debug)]
pub struct RenderInputs<'a> {
    /// `[N, 2]` projected means in pixels.
    pub means2d: &'a DeviceBuffer<f32>,
    /// `[N, 3]` conics `(A, B, C)`, the inverse 2-D covariance `[[A, B], [B, C]]`.
    pub conics: &'a DeviceBuffer<f32>,
    /// `[N]` opacities (after the sigmoid).
    pub opacities: &'a DeviceBuffer<f32>,
    /// `[N, 3]` colours.
    pub colors: &'a DeviceBuffer<f32>,
    /// `[M]` Gaussian ids in the bins' sorted order (`gs.bin`'s `ids`).
    pub ids: &'a DeviceBuffer<u32>,
    /// `[tiles_y·tiles_x, 2]`: per tile `[start, end)` into `ids`.
    pub tile_ranges: &'a DeviceBuffer<u32>,
    /// `ceil(width / 16)`.
    pub tiles_x: u32,
    /// `ceil(height / 16)`.
    pub tiles_y: u32,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The background colour.
    pub background: [f32; 3],
}

/// The forward's outputs, row-major (pixel `(i, j)` at `j·W + i`).
#[derive(Debug)]
pub struct Rendered {
    /// `[H, W, 3]`: `Σ c·α·T + T_final·background`.
    pub image: DeviceBuffer<f32>,
    /// `[H, W]`: `1 − T_final`.
    pub alpha: DeviceBuffer<f32>,
    /// `[H, W]`: INRIA's `last_contributor` (1-based position in the tile's range of the last
    /// blended Gaussian, 0 for none).
    pub n_contrib: DeviceBuffer<u32>,
    /// `[H, W]`: the transmittance after the last blended Gaussian.
    pub final_t: DeviceBuffer<f32>,
}

/// The backward's outputs (index = Gaussian id; untouched Gaussians get zeros).
#[derive(Debug)]
pub struct RenderGrads {
    /// `[N, 2]` `∂L/∂mean2d`, in pixels.
    pub v_means2d: DeviceBuffer<f32>,
    /// `[N, 3]` `(∂L/∂A, ∂L/∂B, ∂L/∂C)`, `B` as it appears in `power` (counted once).
    pub v_conics: DeviceBuffer<f32>,
    /// `[N, 3]` `∂L/∂colour`.
    pub v_colors: DeviceBuffer<f32>,
    /// `[N]` `∂L/∂opacity`.
    pub v_opacities: DeviceBuffer<f32>,
}

/// Sizes after the host-side checks.
struct Sizes {
    n: usize,
    m: usize,
    tiles: usize,
    n_pix: usize,
}

fn check_inputs(op: &'static str, x: &RenderInputs<'_>) -> Result<Sizes> {
    let bad = |msg: String| Error::invalid(op, msg);
    let (w, h) = (x.width, x.height);
    if w == 0 || h == 0 {
        return Err(bad(format!("image size {w}x{h} is empty")));
    }
    let n_pix = w as usize * h as usize;
    if n_pix > u32::MAX as usize / 3 {
        return Err(bad(format!("image size {w}x{h} is too large")));
    }
    let dev = x.means2d.device().clone();
    for (what, buf) in [
        ("conics", x.conics),
        ("opacities", x.opacities),
        ("colors", x.colors),
    ] {
        on_device(op, what, &dev, buf)?;
    }
    on_device(op, "ids", &dev, x.ids)?;
    on_device(op, "tile_ranges", &dev, x.tile_ranges)?;
    let n = x.opacities.len();
    if n > (u32::MAX / 3) as usize {
        return Err(bad(format!("{n} Gaussians exceed u32 indexing")));
    }
    for (what, len, per) in [
        ("means2d", x.means2d.len(), 2),
        ("conics", x.conics.len(), 3),
        ("colors", x.colors.len(), 3),
    ] {
        if len != per * n {
            return Err(bad(format!(
                "{what} has {len} values, expected {per} per Gaussian for {n} Gaussians (opacities)"
            )));
        }
    }
    for (what, v) in ["background"].iter().zip([x.background]) {
        if !v.iter().all(|c| c.is_finite()) {
            return Err(bad(format!("{what} is not finite")));
        }
    }
    let (tx, ty) = reference::tile_grid(w, h);
    if x.tiles_x != tx || x.tiles_y != ty {
        return Err(bad(format!(
            "bins are for a {}x{} tile grid, the image needs {tx}x{ty}",
            x.tiles_x, x.tiles_y
        )));
    }
    let tiles = tx as usize * ty as usize;
    if x.tile_ranges.len() != 2 * tiles {
        return Err(bad(format!(
            "tile_ranges has {} values, expected 2 per tile for {tiles} tiles",
            x.tile_ranges.len()
        )));
    }
    let m = x.ids.len();
    if m > u32::MAX as usize - THREADS as usize {
        return Err(bad(format!("{m} ids exceed u32 indexing")));
    }
    Ok(Sizes { n, m, tiles, n_pix })
}

/// The reference's inputs: the projected Gaussians, colours, opacities and bins.
type RefInputs = (Projected, Vec<[f64; 3]>, Vec<f64>, reference::Bins);

/// The reference's inputs from host memory (CPU path): f64 copies; Gaussians referenced by the
/// bins get radius 1 (so their means and conics are checked, as the device check does).
fn to_reference(h: Host, x: &RenderInputs<'_>) -> Result<RefInputs> {
    let (mean, con) = (h.slice(x.means2d)?, h.slice(x.conics)?);
    let (op, col) = (h.slice(x.opacities)?, h.slice(x.colors)?);
    let (ids, ranges) = (h.slice(x.ids)?, h.slice(x.tile_ranges)?);
    let n = op.len();
    let mut radii = vec![0i32; n];
    for &g in ids {
        if let Some(r) = radii.get_mut(g as usize) {
            *r = 1;
        }
    }
    let p = Projected {
        means2d: mean
            .chunks_exact(2)
            .map(|c| [f64::from(c[0]), f64::from(c[1])])
            .collect(),
        depths: vec![0.0; n],
        conics: con.chunks_exact(3).map(f64x3).collect(),
        radii,
    };
    let colors = col.chunks_exact(3).map(f64x3).collect();
    let opac = op.iter().map(|&v| f64::from(v)).collect();
    let bins = reference::Bins {
        keys: vec![0; ids.len()],
        ids: ids.to_vec(),
        tile_ranges: ranges.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        tiles_x: x.tiles_x,
        tiles_y: x.tiles_y,
    };
    Ok((p, colors, opac, bins))
}

fn f64x3(c: &[f32]) -> [f64; 3] {
    [f64::from(c[0]), f64::from(c[1]), f64::from(c[2])]
}

fn bg64(x: &RenderInputs<'_>) -> [f64; 3] {
    x.background.map(f64::from)
}

fn linear_blocks(work: usize) -> u32 {
    work.div_ceil(CHECK_THREADS as usize).clamp(1, MAX_BLOCKS) as u32
}

/// Runs the input check on the device and returns the status buffer (not yet read back).
fn device_check(dev: &Device, x: &RenderInputs<'_>, s: &Sizes) -> Result<DeviceBuffer<u32>> {
    let mut status = dev.upload(&[NONE; STATUS_WORDS], "gs.render.status")?;
    CheckKernel {
        means2d: x.means2d,
        conics: x.conics,
        opacities: x.opacities,
        colors: x.colors,
        n: s.n as u32,
        ids: x.ids,
        m: s.m as u32,
        tile_ranges: x.tile_ranges,
        tiles: s.tiles as u32,
        status: &mut status,
    }
    .launch(dev, Grid::linear(linear_blocks(s.n.max(s.m).max(s.tiles))))?;
    Ok(status)
}

/// Reads the status words back and names the first problem (the reference's order: the
/// per-Gaussian values, then the ranges and ids, then the backward's per-pixel inputs).
fn explain(op: &'static str, status: &DeviceBuffer<u32>, s: &Sizes) -> Result<()> {
    let w = status.download()?;
    let bad = |msg: String| Err(Error::invalid(op, msg));
    // The smallest Gaussian with a bad value, and which value (colour, opacity, mean, conic).
    if let Some((k, g)) = (0..4)
        .filter(|&k| w[k] != NONE)
        .map(|k| (k, w[k]))
        .min_by_key(|&(k, g)| (g, k))
    {
        let what = ["colors", "opacities", "means2d", "conics"][k];
        return bad(format!("{what}[{g}] is not finite"));
    }
    if w[5] != NONE {
        return bad(format!(
            "tile_ranges[{}] is not a range [start, end) within {} ids",
            w[5], s.m
        ));
    }
    if w[4] != NONE {
        return bad(format!("ids[{}] is not below {} Gaussians", w[4], s.n));
    }
    for (k, what) in [
        (6, "fwd.final_t"),
        (7, "fwd.n_contrib"),
        (8, "v_image"),
        (9, "v_alpha"),
    ] {
        if w[k] != NONE {
            return if k == 7 {
                bad(format!("{what}[{}] exceeds its tile's Gaussians", w[k]))
            } else {
                bad(format!("{what}[{}] is not finite", w[k]))
            };
        }
    }
    Ok(())
}

/// The balanced layout's per-entry arrays (sorted order), or nothing for the baseline.
struct Staged(Option<[DeviceBuffer<f32>; 4]>);

type Arrays<'a> = (
    &'a DeviceBuffer<f32>,
    &'a DeviceBuffer<f32>,
    &'a DeviceBuffer<f32>,
    &'a DeviceBuffer<f32>,
    u32,
);

impl Staged {
    /// The arrays the render kernels read and their `indirect` flag.
    fn arrays<'a>(&'a self, x: &RenderInputs<'a>) -> Arrays<'a> {
        match &self.0 {
            None => (x.means2d, x.conics, x.opacities, x.colors, 1),
            Some([m, c, o, col]) => (m, c, o, col, 0),
        }
    }
}

/// Runs the reorder kernel for [`Layout::Balanced`].
fn stage(
    dev: &Device,
    x: &RenderInputs<'_>,
    s: &Sizes,
    layout: Layout,
    status: &DeviceBuffer<u32>,
) -> Result<Staged> {
    if layout == Layout::Baseline {
        return Ok(Staged(None));
    }
    let mut sm = dev.alloc::<f32>(2 * s.m, "gs.render.sorted_means2d")?;
    let mut sc = dev.alloc::<f32>(3 * s.m, "gs.render.sorted_conics")?;
    let mut so = dev.alloc::<f32>(s.m, "gs.render.sorted_opacities")?;
    let mut scol = dev.alloc::<f32>(3 * s.m, "gs.render.sorted_colors")?;
    if s.m > 0 {
        ReorderKernel {
            means2d: x.means2d,
            conics: x.conics,
            opacities: x.opacities,
            colors: x.colors,
            n: s.n as u32,
            ids: x.ids,
            m: s.m as u32,
            s_means2d: &mut sm,
            s_conics: &mut sc,
            s_opacities: &mut so,
            s_colors: &mut scol,
            status,
        }
        .launch(dev, Grid::linear(linear_blocks(s.m)))?;
    }
    Ok(Staged(Some([sm, sc, so, scol])))
}

/// `gs.render`: renders the `width × height` image of the binned Gaussians front to back, one
/// thread per pixel, a block per 16×16 tile, in f32 (rules: [`reference::render`]), reading
/// the Gaussians in `layout`. Returns the image, alpha, contributor count and final T.
///
/// Errors ([`Error::InvalidArgument`] naming `gs.render`): a zero-size image, a tile grid that
/// is not `ceil(W/16) × ceil(H/16)`, lengths (`means2d` 2N, `conics` 3N, `colors` 3N,
/// `tile_ranges` 2 per tile), buffers on different devices, a non-finite background; and, from
/// the device check, non-finite colours or opacities, non-finite means or conics of a Gaussian
/// the bins reference, ids not below N, ranges not within the ids.
pub fn render(x: &RenderInputs<'_>, layout: Layout) -> Result<Rendered> {
    let s = check_inputs(OP, x)?;
    let dev = x.means2d.device().clone();
    let mut out = Rendered {
        image: dev.alloc::<f32>(3 * s.n_pix, "gs.render.image")?,
        alpha: dev.alloc::<f32>(s.n_pix, "gs.render.alpha")?,
        n_contrib: dev.alloc::<u32>(s.n_pix, "gs.render.n_contrib")?,
        final_t: dev.alloc::<f32>(s.n_pix, "gs.render.final_t")?,
    };
    if let Some(h) = cpu_path(OP, &dev) {
        let (p, colors, opac, bins) = to_reference(h, x)?;
        let r = reference::render(&p, &colors, &opac, &bins, x.width, x.height, bg64(x))
            .map_err(|e| Error::invalid(OP, e))?;
        let image: Vec<f32> = r.image.iter().flatten().map(|&v| v as f32).collect();
        h.slice_mut(&mut out.image)?.copy_from_slice(&image);
        for (o, &v) in h.slice_mut(&mut out.alpha)?.iter_mut().zip(&r.alpha) {
            *o = v as f32;
        }
        h.slice_mut(&mut out.n_contrib)?
            .copy_from_slice(&r.n_contrib);
        for (o, &v) in h.slice_mut(&mut out.final_t)?.iter_mut().zip(&r.final_t) {
            *o = v as f32;
        }
        return Ok(out);
    }
    let status = device_check(&dev, x, &s)?;
    let staged = stage(&dev, x, &s, layout, &status)?;
    let (means2d, conics, opacities, colors, indirect) = staged.arrays(x);
    let [bg0, bg1, bg2] = x.background;
    ForwardKernel {
        means2d,
        conics,
        opacities,
        colors,
        n: s.n as u32,
        ids: x.ids,
        m: s.m as u32,
        indirect,
        tile_ranges: x.tile_ranges,
        tiles_x: x.tiles_x,
        width: x.width,
        height: x.height,
        bg0,
        bg1,
        bg2,
        image: &mut out.image,
        alpha: &mut out.alpha,
        n_contrib: &mut out.n_contrib,
        final_t: &mut out.final_t,
        status: &status,
    }
    .launch(&dev, Grid::dims([x.tiles_x, x.tiles_y, 1]))?;
    explain(OP, &status, &s)?;
    Ok(out)
}

/// `gs.render_backward`: the gradients of a scalar loss with respect to the means, conics,
/// colours and opacities, given `v_image = ∂L/∂image` (`[H, W, 3]`), `v_alpha = ∂L/∂alpha`
/// (`[H, W]`) and the forward's `final_t` and `n_contrib` (`fwd`; its image and alpha are not
/// read), reading the Gaussians in `layout` (as [`render`]). Back to front per pixel (INRIA's
/// recurrence; a capped α passes gradient to the colour only, as
/// [`reference::render_backward`]); per-Gaussian sums by warp-reduced atomics,
/// so the order of the f32 additions, and the last bits, vary from run to run.
///
/// Errors ([`Error::InvalidArgument`] naming `gs.render_backward`): those of [`render`], the
/// per-pixel buffers not of `H·W` (`·3` for `v_image`) values, and from the device check
/// non-finite `final_t`, `v_image`, `v_alpha`, a `n_contrib` past its tile's range.
pub fn render_backward(
    x: &RenderInputs<'_>,
    fwd: &Rendered,
    v_image: &DeviceBuffer<f32>,
    v_alpha: &DeviceBuffer<f32>,
    layout: Layout,
) -> Result<RenderGrads> {
    let op = BACKWARD_OP;
    let s = check_inputs(op, x)?;
    let dev = x.means2d.device().clone();
    on_device(op, "fwd.final_t", &dev, &fwd.final_t)?;
    on_device(op, "fwd.n_contrib", &dev, &fwd.n_contrib)?;
    on_device(op, "v_image", &dev, v_image)?;
    on_device(op, "v_alpha", &dev, v_alpha)?;
    for (what, len, per) in [
        ("fwd.final_t", fwd.final_t.len(), 1),
        ("fwd.n_contrib", fwd.n_contrib.len(), 1),
        ("v_image", v_image.len(), 3),
        ("v_alpha", v_alpha.len(), 1),
    ] {
        if len != per * s.n_pix {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} has {len} values, expected {} for {} pixels",
                    per * s.n_pix,
                    s.n_pix
                ),
            ));
        }
    }
    let zeros = |k: usize, label: &str| dev.upload(&vec![0f32; k * s.n], label);
    let mut g = RenderGrads {
        v_means2d: zeros(2, "gs.render.v_means2d")?,
        v_conics: zeros(3, "gs.render.v_conics")?,
        v_colors: zeros(3, "gs.render.v_colors")?,
        v_opacities: zeros(1, "gs.render.v_opacities")?,
    };
    if let Some(h) = cpu_path(op, &dev) {
        let (p, colors, opac, bins) = to_reference(h, x)?;
        let fwd64 = reference::Raster {
            image: Vec::new(),
            alpha: Vec::new(),
            n_contrib: h.slice(&fwd.n_contrib)?.to_vec(),
            final_t: h
                .slice(&fwd.final_t)?
                .iter()
                .map(|&v| f64::from(v))
                .collect(),
        };
        let vi: Vec<[f64; 3]> = h.slice(v_image)?.chunks_exact(3).map(f64x3).collect();
        let va: Vec<f64> = h.slice(v_alpha)?.iter().map(|&v| f64::from(v)).collect();
        let r = reference::render_backward(
            &p,
            &colors,
            &opac,
            &bins,
            x.width,
            x.height,
            bg64(x),
            &fwd64,
            &vi,
            &va,
        )
        .map_err(|e| Error::invalid(op, e))?;
        let put = |dst: &mut DeviceBuffer<f32>, src: Vec<f64>| -> Result<()> {
            for (o, v) in h.slice_mut(dst)?.iter_mut().zip(src) {
                *o = v as f32;
            }
            Ok(())
        };
        put(&mut g.v_means2d, r.v_means2d.concat())?;
        put(&mut g.v_conics, r.v_conics.concat())?;
        put(&mut g.v_colors, r.v_colors.concat())?;
        put(&mut g.v_opacities, r.v_opacities)?;
        return Ok(g);
    }
    let mut status = device_check(&dev, x, &s)?;
    CheckBwdKernel {
        tile_ranges: x.tile_ranges,
        m: s.m as u32,
        tiles_x: x.tiles_x,
        width: x.width,
        height: x.height,
        final_t: &fwd.final_t,
        n_contrib: &fwd.n_contrib,
        v_image,
        v_alpha,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(linear_blocks(s.n_pix)))?;
    let staged = stage(&dev, x, &s, layout, &status)?;
    let (means2d, conics, opacities, colors, indirect) = staged.arrays(x);
    let [bg0, bg1, bg2] = x.background;
    BackwardKernel {
        means2d,
        conics,
        opacities,
        colors,
        n: s.n as u32,
        ids: x.ids,
        m: s.m as u32,
        indirect,
        tile_ranges: x.tile_ranges,
        tiles_x: x.tiles_x,
        width: x.width,
        height: x.height,
        bg0,
        bg1,
        bg2,
        final_t: &fwd.final_t,
        n_contrib: &fwd.n_contrib,
        v_image,
        v_alpha,
        v_means2d: &mut g.v_means2d,
        v_conics: &mut g.v_conics,
        v_colors: &mut g.v_colors,
        v_opacities: &mut g.v_opacities,
        status: &status,
    }
    .launch(&dev, Grid::dims([x.tiles_x, x.tiles_y, 1]))?;
    explain(op, &status, &s)?;
    Ok(g)
}
