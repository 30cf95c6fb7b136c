//! f64 reference of the 3DGS tile binning, the forward rasteriser and its backward (the oracle of
//! `gs.bin`, `gs.render` and `gs.render_backward`). One pixel at a time, no parallelism: the
//! point is to be obviously right, and to fix the exact order and rules the kernels reproduce.
//!
//! # Conventions (gsplat / INRIA)
//!
//! * **Pixels.** Images are row-major, pixel `(i, j)` (`i` = column, `j` = row) is at index
//!   `j·W + i` and is sampled at `(i + 0.5, j + 0.5)`, as gsplat does (`px = out_x + 0.5f` in
//!   `RasterizeToPixels3DGSSerialBatchFwd.cu`). INRIA samples at `(i, j)` but its means are
//!   `ndc2Pix(v) = ((v + 1)·S − 1)/2`, half a pixel less, so the two agree.
//! * **Tiles.** 16×16 (`TILE`), `tiles_x = ceil(W/16)`, `tiles_y = ceil(H/16)`, tile id
//!   `ty·tiles_x + tx`. Tile `tx` covers the continuous x range `[16·tx, 16·tx + 16)`.
//! * **Tile range of a Gaussian** (`tile_rect`): with `r` its integer radius (> 0) and `(x, y)`
//!   its mean, `tx ∈ [clamp(floor((x − r)/16)), clamp(ceil((x + r)/16)))`, the same for `y`,
//!   each bound clamped to `[0, tiles_x]` (resp. `tiles_y`). This is gsplat's rule
//!   (`IntersectTile.cu`: `floor(tile_x − tile_radius_x)`, `ceil(tile_x + tile_radius_x)`): a
//!   tile is touched iff the open rectangle `(x − r, x + r) × (y − r, y + r)` meets it.
//!   INRIA's `getRect` (`auxiliary.h`) uses `trunc((x + r + 15)/16)` for the upper bound,
//!   which drops the last tile when `x + r` is a non-integer just past a tile edge
//!   (e.g. `x + r = 32.25`: gsplat and we take tile 2, INRIA does not); after clamping at 0 its
//!   lower bound is the same as ours. In f64, `x ± r` for an f32-widened `x` and an integer `r`
//!   is exact and `/16` is exact, so the rule here is the exact real-number one; a kernel that
//!   computes `x/16 + r/16` in f32 can round across an integer near a binade edge (e.g.
//!   `x = 63 + 2⁻¹⁸`, `r = 1`) and must use exact arithmetic to be bit-exact.
//! * **Keys.** `(tile_id << 32) | bits(depth as f32)`, the f32 bit pattern zero-extended (for
//!   the positive depths that survive the near-plane cull it orders like the depth; gsplat
//!   sign-extends through `int32`, which only differs for negative depths). Keys are emitted
//!   Gaussian-major (id ascending, Gaussians with `radius <= 0` emit nothing), tiles row-major
//!   within a Gaussian, then **stably** sorted by key, so equal keys (same tile, same f32 depth)
//!   keep id order. This is the order the device radix sort must reproduce bit for bit.
//! * **Tile ranges.** `tile_ranges[t] = [start, end)` into `keys`/`ids`; an empty tile gets
//!   `start = end =` the first index whose tile is `>= t` (gsplat's `isect_offsets`; INRIA
//!   leaves empty ranges at `[0, 0)`, equally empty).
//! * **Forward** (INRIA `forward.cu::renderCUDA`, gsplat `eval_gaussian_weight`): front to back
//!   over the pixel's tile range, `d = mean2d − pixel`,
//!   `power = −0.5·(A·dx² + C·dy²) − B·dx·dy` (skip when `power > 0`),
//!   `α = min(ALPHA_MAX, o·exp(power))` (skip when `α < ALPHA_MIN`), `next_T = T·(1 − α)`; if
//!   `next_T < T_MIN` the pixel stops and that Gaussian is **not** blended (INRIA's strict `<`;
//!   gsplat stops at `<=`); otherwise `C += c·α·T`, `T = next_T`. `image = C + T_final·bg`,
//!   `alpha = 1 − T_final`.
//! * **`n_contrib`** is INRIA's `last_contributor`: the 1-based position, within the tile's
//!   range, of the last Gaussian that was blended (skipped entries count as positions;
//!   0 when none was blended). gsplat's `last_ids` is the same Gaussian as a 0-based global
//!   index into the sorted list (`range_start + n_contrib − 1`).
//! * **Backward** (INRIA `backward.cu::renderCUDA`, gsplat `rasterize_to_pixels_3dgs_blend_bwd`):
//!   back to front over positions `n_contrib − 1 … 0`, re-evaluating the same skips, recovering
//!   `T_i = T_{i+1}/(1 − α_i)` from the saved final `T`. With `buf` the colour of everything
//!   behind and `bg·v` the dot product of the background with `v_image`:
//!   `∂L/∂α_i = Σ_k (c_ik·T_i − buf_k/(1 − α_i))·v_image_k + T_final/(1 − α_i)·(v_alpha − bg·v)`.
//!   Through `α = o·G` (`G = exp(power)`): `v_o += G·∂L/∂α`, and with `v_power = o·G·∂L/∂α`:
//!   `v_conic += v_power·(−dx²/2, −dx·dy, −dy²/2)`,
//!   `v_mean2d += v_power·(−(A·dx + B·dy), −(B·dx + C·dy))` (the sign is that of `d`, since
//!   `d = mean − pixel`). Where the cap is active (`o·G > ALPHA_MAX`, gsplat's test), `α` is the
//!   constant 0.99 and the mean, conic and opacity get nothing (gsplat does this; INRIA does
//!   not); colours still get `α·T·v_image`.
//! * **Gradient conventions.** `v_conics[g] = (∂L/∂A, ∂L/∂B, ∂L/∂C)` with `B` the single
//!   off-diagonal value as it appears in `power` (gsplat's convention; INRIA's `dL_dconic.y` is
//!   half of it, per symmetric entry). `v_means2d` is in pixels (INRIA multiplies by `W/2`,
//!   `H/2` for NDC; gsplat does not). Gradients are exact derivatives of `render` with the
//!   binning held fixed.

use super::{Projected, ALPHA_MAX, ALPHA_MIN, TILE, T_MIN};

/// The sorted tile/Gaussian intersections of one image (the output of [`bin`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bins {
    /// Sorted keys `(tile_id << 32) | bits(depth as f32)`.
    pub keys: Vec<u64>,
    /// The Gaussian id of each key (same order as `keys`).
    pub ids: Vec<u32>,
    /// Per tile (`ty·tiles_x + tx`), `[start, end)` into `keys`/`ids`.
    pub tile_ranges: Vec<[u32; 2]>,
    /// Tiles per row, `ceil(width / 16)`.
    pub tiles_x: u32,
    /// Tile rows, `ceil(height / 16)`.
    pub tiles_y: u32,
}

/// The forward rasteriser's outputs, all row-major `[H·W]` (index `j·W + i`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Raster {
    /// `Σ c·α·T + T_final·background`, per pixel.
    pub image: Vec<[f64; 3]>,
    /// `1 − T_final`.
    pub alpha: Vec<f64>,
    /// INRIA's `last_contributor`: the 1-based position, in the pixel's tile range, of the last
    /// blended Gaussian (0 if none).
    pub n_contrib: Vec<u32>,
    /// The transmittance after the last blended Gaussian.
    pub final_t: Vec<f64>,
}

/// Gradients of a scalar loss with respect to the rasteriser's per-Gaussian inputs (index =
/// Gaussian id; Gaussians that touch no pixel get zeros).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RasterGrads {
    /// `∂L/∂mean2d`, in pixels.
    pub v_means2d: Vec<[f64; 2]>,
    /// `(∂L/∂A, ∂L/∂B, ∂L/∂C)` of the conic `(A, B, C)` (`B` counted once, as in `power`).
    pub v_conics: Vec<[f64; 3]>,
    /// `∂L/∂colour`.
    pub v_colors: Vec<[f64; 3]>,
    /// `∂L/∂opacity`.
    pub v_opacities: Vec<f64>,
}

/// The tile grid of a `width × height` image: `(ceil(width/16), ceil(height/16))`.
pub fn tile_grid(width: u32, height: u32) -> (u32, u32) {
    (width.div_ceil(TILE), height.div_ceil(TILE))
}

/// Clamps an integer-valued tile bound to `[0, n]` (NaN goes to 0).
fn clamp_tile(v: f64, n: u32) -> u32 {
    if v >= f64::from(n) {
        n
    } else if v > 0.0 {
        // `v` is an integer in (0, n): exact.
        v as u32
    } else {
        0
    }
}

/// The tiles a Gaussian with mean `mean` and radius `radius` touches, as
/// `([tx_min, ty_min], [tx_max, ty_max])`, min inclusive and max exclusive (gsplat's rule, see
/// the module docs). Empty (`min == max` on some axis) when `radius <= 0`, when the mean is not
/// finite, or when the rectangle misses the image.
pub fn tile_rect(mean: [f64; 2], radius: i32, tiles_x: u32, tiles_y: u32) -> ([u32; 2], [u32; 2]) {
    if radius <= 0 || !mean[0].is_finite() || !mean[1].is_finite() {
        return ([0, 0], [0, 0]);
    }
    let r = f64::from(radius);
    let t = f64::from(TILE);
    let x0 = clamp_tile(((mean[0] - r) / t).floor(), tiles_x);
    let y0 = clamp_tile(((mean[1] - r) / t).floor(), tiles_y);
    let x1 = clamp_tile(((mean[0] + r) / t).ceil(), tiles_x);
    let y1 = clamp_tile(((mean[1] + r) / t).ceil(), tiles_y);
    ([x0, y0], [x1.max(x0), y1.max(y0)])
}

/// Bins the projected Gaussians into the 16×16 tiles of a `width × height` image: emits one key
/// per touched tile (Gaussian-major, id ascending, tiles row-major; `radius <= 0` emits
/// nothing), stably sorts by key and computes the per-tile ranges (see the module docs for the
/// exact rules). Gaussian ids run over `p.radii`; an id whose mean or depth is missing is
/// treated as culled (`render` rejects such a `Projected`). A zero-size image gives no tiles.
/// Counts are assumed to fit `u32`.
pub fn bin(p: &Projected, width: u32, height: u32) -> Bins {
    let (tiles_x, tiles_y) = tile_grid(width, height);
    let mut emitted: Vec<(u64, u32)> = Vec::new();
    for (g, &radius) in p.radii.iter().enumerate() {
        let (Some(&mean), Some(&depth)) = (p.means2d.get(g), p.depths.get(g)) else {
            continue;
        };
        let ([x0, y0], [x1, y1]) = tile_rect(mean, radius, tiles_x, tiles_y);
        let depth_bits = u64::from((depth as f32).to_bits());
        for ty in y0..y1 {
            for tx in x0..x1 {
                let tile = u64::from(ty) * u64::from(tiles_x) + u64::from(tx);
                emitted.push(((tile << 32) | depth_bits, g as u32));
            }
        }
    }
    // `sort_by_key` is stable: equal keys keep their emission (id) order.
    emitted.sort_by_key(|&(key, _)| key);
    let keys: Vec<u64> = emitted.iter().map(|&(k, _)| k).collect();
    let ids: Vec<u32> = emitted.iter().map(|&(_, g)| g).collect();

    let n_tiles = tiles_x as usize * tiles_y as usize;
    let mut tile_ranges = Vec::with_capacity(n_tiles);
    let mut pos = 0usize;
    for t in 0..n_tiles as u64 {
        let start = pos;
        while pos < keys.len() && keys[pos] >> 32 == t {
            pos += 1;
        }
        tile_ranges.push([start as u32, pos as u32]);
    }
    Bins {
        keys,
        ids,
        tile_ranges,
        tiles_x,
        tiles_y,
    }
}

/// One evaluated (Gaussian, pixel) pair that passed both skips.
struct Hit {
    /// `min(ALPHA_MAX, o·G)`.
    alpha: f64,
    /// `G = exp(power)`.
    gauss: f64,
    /// `o·G > ALPHA_MAX`: the cap is active.
    clamped: bool,
    dx: f64,
    dy: f64,
}

/// Evaluates Gaussian `g` at the pixel centre `(px, py)`; `None` when it is skipped
/// (`power > 0` or `α < ALPHA_MIN`). Shared by the forward and the backward so that both take
/// the same decisions.
fn eval(p: &Projected, opacities: &[f64], g: usize, px: f64, py: f64) -> Option<Hit> {
    let [mx, my] = p.means2d[g];
    let [a, b, c] = p.conics[g];
    let dx = mx - px;
    let dy = my - py;
    let power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy;
    if power > 0.0 {
        return None;
    }
    let gauss = power.exp();
    let raw = opacities[g] * gauss;
    let alpha = raw.min(ALPHA_MAX);
    if alpha < ALPHA_MIN {
        return None;
    }
    Some(Hit {
        alpha,
        gauss,
        clamped: raw > ALPHA_MAX,
        dx,
        dy,
    })
}

fn finite3(v: [f64; 3]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// Checks the inputs shared by `render` and `render_backward`; returns `H·W`.
fn check_inputs(
    p: &Projected,
    colors: &[[f64; 3]],
    opacities: &[f64],
    bins: &Bins,
    width: u32,
    height: u32,
    background: [f64; 3],
) -> Result<usize, String> {
    if width == 0 || height == 0 {
        return Err(format!("image size {width}x{height} is empty"));
    }
    let n_pix = (width as usize)
        .checked_mul(height as usize)
        .ok_or_else(|| format!("image size {width}x{height} overflows"))?;
    let n = p.radii.len();
    for (name, len) in [
        ("means2d", p.means2d.len()),
        ("depths", p.depths.len()),
        ("conics", p.conics.len()),
        ("colors", colors.len()),
        ("opacities", opacities.len()),
    ] {
        if len != n {
            return Err(format!("{name} has {len} entries, radii has {n}"));
        }
    }
    if !finite3(background) {
        return Err("background is not finite".to_string());
    }
    for g in 0..n {
        if !finite3(colors[g]) {
            return Err(format!("colors[{g}] is not finite"));
        }
        if !opacities[g].is_finite() {
            return Err(format!("opacities[{g}] is not finite"));
        }
        if p.radii[g] > 0 {
            if !(p.means2d[g][0].is_finite() && p.means2d[g][1].is_finite()) {
                return Err(format!("means2d[{g}] is not finite"));
            }
            if !finite3(p.conics[g]) {
                return Err(format!("conics[{g}] is not finite"));
            }
        }
    }
    let (tx, ty) = tile_grid(width, height);
    if bins.tiles_x != tx || bins.tiles_y != ty {
        return Err(format!(
            "bins are for a {}x{} tile grid, the image needs {tx}x{ty}",
            bins.tiles_x, bins.tiles_y
        ));
    }
    let n_tiles = tx as usize * ty as usize;
    if bins.tile_ranges.len() != n_tiles {
        return Err(format!(
            "bins.tile_ranges has {} entries, expected {n_tiles}",
            bins.tile_ranges.len()
        ));
    }
    if bins.keys.len() != bins.ids.len() {
        return Err(format!(
            "bins.keys has {} entries, bins.ids has {}",
            bins.keys.len(),
            bins.ids.len()
        ));
    }
    for (t, &[s, e]) in bins.tile_ranges.iter().enumerate() {
        if s > e || e as usize > bins.ids.len() {
            return Err(format!(
                "bins.tile_ranges[{t}] = [{s}, {e}) is not within {} ids",
                bins.ids.len()
            ));
        }
    }
    if let Some((k, &g)) = bins.ids.iter().enumerate().find(|(_, &g)| g as usize >= n) {
        return Err(format!("bins.ids[{k}] = {g} is not below {n} Gaussians"));
    }
    Ok(n_pix)
}

/// The `[start, end)` range of pixel `(i, j)`'s tile.
fn pixel_range(bins: &Bins, i: u32, j: u32) -> (usize, usize) {
    let t = (j / TILE) as usize * bins.tiles_x as usize + (i / TILE) as usize;
    let [s, e] = bins.tile_ranges[t];
    (s as usize, e as usize)
}

/// Renders a `width × height` image front to back, one pixel at a time (rules in the module
/// docs). `colors` and `opacities` are per Gaussian (index = id, like `p`); `bins` must come
/// from [`bin`] for the same `p` and image size (its order is what is blended).
///
/// Errors: a zero-size image, lengths that differ from `p.radii`, non-finite colours,
/// opacities, background, or means/conics of a Gaussian with `radius > 0`, and bins that do not
/// fit the image or the Gaussians.
pub fn render(
    p: &Projected,
    colors: &[[f64; 3]],
    opacities: &[f64],
    bins: &Bins,
    width: u32,
    height: u32,
    background: [f64; 3],
) -> Result<Raster, String> {
    let n_pix = check_inputs(p, colors, opacities, bins, width, height, background)?;
    let mut out = Raster {
        image: Vec::with_capacity(n_pix),
        alpha: Vec::with_capacity(n_pix),
        n_contrib: Vec::with_capacity(n_pix),
        final_t: Vec::with_capacity(n_pix),
    };
    for j in 0..height {
        let py = f64::from(j) + 0.5;
        for i in 0..width {
            let px = f64::from(i) + 0.5;
            let (start, end) = pixel_range(bins, i, j);
            let mut t = 1.0f64;
            let mut acc = [0.0f64; 3];
            let mut last = 0u32;
            for (pos, &g) in bins.ids[start..end].iter().enumerate() {
                let g = g as usize;
                let Some(hit) = eval(p, opacities, g, px, py) else {
                    continue;
                };
                let next_t = t * (1.0 - hit.alpha);
                if next_t < T_MIN {
                    break;
                }
                let w = hit.alpha * t;
                for (a, c) in acc.iter_mut().zip(colors[g]) {
                    *a += c * w;
                }
                t = next_t;
                last = pos as u32 + 1;
            }
            let mut px_out = [0.0f64; 3];
            for k in 0..3 {
                px_out[k] = acc[k] + t * background[k];
            }
            out.image.push(px_out);
            out.alpha.push(1.0 - t);
            out.n_contrib.push(last);
            out.final_t.push(t);
        }
    }
    Ok(out)
}

/// The backward of [`render`]: given `v_image = ∂L/∂image` and `v_alpha = ∂L/∂alpha` (both
/// `[H·W]`) and the forward's saved `final_t` and `n_contrib`, walks each pixel back to front
/// (INRIA's recurrence) and accumulates the exact gradients of the per-Gaussian inputs (rules
/// and conventions in the module docs), with the binning held fixed.
///
/// Errors: those of [`render`], `fwd`/`v_image`/`v_alpha` not of length `H·W`, non-finite
/// `v_image`/`v_alpha`/`final_t`, and a `n_contrib` larger than its tile's range.
#[allow(clippy::too_many_arguments)]
pub fn render_backward(
    p: &Projected,
    colors: &[[f64; 3]],
    opacities: &[f64],
    bins: &Bins,
    width: u32,
    height: u32,
    background: [f64; 3],
    fwd: &Raster,
    v_image: &[[f64; 3]],
    v_alpha: &[f64],
) -> Result<RasterGrads, String> {
    let n_pix = check_inputs(p, colors, opacities, bins, width, height, background)?;
    for (name, len) in [
        ("fwd.final_t", fwd.final_t.len()),
        ("fwd.n_contrib", fwd.n_contrib.len()),
        ("v_image", v_image.len()),
        ("v_alpha", v_alpha.len()),
    ] {
        if len != n_pix {
            return Err(format!(
                "{name} has {len} entries, the image has {n_pix} pixels"
            ));
        }
    }
    let n = p.radii.len();
    let mut grads = RasterGrads {
        v_means2d: vec![[0.0; 2]; n],
        v_conics: vec![[0.0; 3]; n],
        v_colors: vec![[0.0; 3]; n],
        v_opacities: vec![0.0; n],
    };
    for j in 0..height {
        let py = f64::from(j) + 0.5;
        for i in 0..width {
            let px = f64::from(i) + 0.5;
            let pix = j as usize * width as usize + i as usize;
            let (start, end) = pixel_range(bins, i, j);
            let t_final = fwd.final_t[pix];
            let last = fwd.n_contrib[pix] as usize;
            let v_c = v_image[pix];
            let v_a = v_alpha[pix];
            if !t_final.is_finite() {
                return Err(format!("fwd.final_t[{pix}] is not finite"));
            }
            if !finite3(v_c) {
                return Err(format!("v_image[{pix}] is not finite"));
            }
            if !v_a.is_finite() {
                return Err(format!("v_alpha[{pix}] is not finite"));
            }
            if last > end - start {
                return Err(format!(
                    "fwd.n_contrib[{pix}] = {last} exceeds its tile's {} Gaussians",
                    end - start
                ));
            }
            let bg_dot: f64 = (0..3).map(|k| background[k] * v_c[k]).sum();
            let mut t = t_final;
            let mut buf = [0.0f64; 3];
            for pos in (0..last).rev() {
                let g = bins.ids[start + pos] as usize;
                let Some(hit) = eval(p, opacities, g, px, py) else {
                    continue;
                };
                let one_m = 1.0 - hit.alpha;
                t /= one_m;
                let w = hit.alpha * t;
                let c = colors[g];
                let mut dl_dalpha = 0.0;
                for k in 0..3 {
                    grads.v_colors[g][k] += w * v_c[k];
                    dl_dalpha += (c[k] * t - buf[k] / one_m) * v_c[k];
                    buf[k] += c[k] * w;
                }
                dl_dalpha += t_final / one_m * (v_a - bg_dot);
                if !hit.clamped {
                    let [a, b, cc] = p.conics[g];
                    let (dx, dy) = (hit.dx, hit.dy);
                    grads.v_opacities[g] += hit.gauss * dl_dalpha;
                    let v_power = opacities[g] * hit.gauss * dl_dalpha;
                    let vc = &mut grads.v_conics[g];
                    vc[0] += -0.5 * dx * dx * v_power;
                    vc[1] += -dx * dy * v_power;
                    vc[2] += -0.5 * dy * dy * v_power;
                    let vm = &mut grads.v_means2d[g];
                    vm[0] += -(a * dx + b * dy) * v_power;
                    vm[1] += -(b * dx + cc * dy) * v_power;
                }
            }
        }
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(d: f32) -> u64 {
        u64::from(d.to_bits())
    }

    fn scene(gs: &[([f64; 2], f64, [f64; 3], i32)]) -> Projected {
        Projected {
            means2d: gs.iter().map(|g| g.0).collect(),
            depths: gs.iter().map(|g| g.1).collect(),
            conics: gs.iter().map(|g| g.2).collect(),
            radii: gs.iter().map(|g| g.3).collect(),
        }
    }

    #[test]
    fn tile_rect_rules() {
        // 64x48 image: 4x3 tiles.
        assert_eq!(tile_grid(64, 48), (4, 3));
        assert_eq!(tile_grid(65, 33), (5, 3));
        // [15, 25] x [15, 25]: tiles 0..2 on both axes.
        assert_eq!(tile_rect([20.0, 20.0], 5, 4, 3), ([0, 0], [2, 2]));
        // x − r = 16 exactly: tile 0 is not touched (open rectangle), x + r = 26: tile 1.
        assert_eq!(tile_rect([21.0, 10.0], 5, 4, 3), ([1, 0], [2, 1]));
        // x + r = 32 exactly: tile 2 is not touched.
        assert_eq!(tile_rect([27.0, 10.0], 5, 4, 3), ([1, 0], [2, 1]));
        // x + r = 32.25: tile 2 is touched (gsplat's ceil; INRIA's getRect would stop at 2).
        assert_eq!(tile_rect([27.25, 10.0], 5, 4, 3), ([1, 0], [3, 1]));
        // Clamped at the left/top and at the right/bottom.
        assert_eq!(tile_rect([-3.0, 5.0], 5, 4, 3), ([0, 0], [1, 1]));
        assert_eq!(tile_rect([63.0, 47.0], 10, 4, 3), ([3, 2], [4, 3]));
        // Entirely outside: empty.
        let (lo, hi) = tile_rect([-30.0, 5.0], 5, 4, 3);
        assert_eq!(lo[0], hi[0]);
        let (lo, hi) = tile_rect([100.0, 5.0], 5, 4, 3);
        assert_eq!(lo[0], hi[0]);
        // Radius 0 / non-finite mean: empty.
        assert_eq!(tile_rect([20.0, 20.0], 0, 4, 3), ([0, 0], [0, 0]));
        assert_eq!(tile_rect([f64::NAN, 20.0], 3, 4, 3), ([0, 0], [0, 0]));
    }

    #[test]
    fn bin_by_hand() {
        let conic = [1.0, 0.0, 1.0];
        let p = scene(&[
            ([20.0, 20.0], 2.0, conic, 5), // G0: tiles 0, 1, 4, 5
            ([40.0, 40.0], 1.0, conic, 3), // G1: tile 10
            ([30.0, 30.0], 0.5, conic, 0), // G2: radius 0, nothing
            ([20.0, 20.0], 2.0, conic, 5), // G3: same tiles and depth as G0
            ([10.0, 10.0], 0.5, conic, 1), // G4: tile 0, in front
        ]);
        let b = bin(&p, 64, 48);
        assert_eq!((b.tiles_x, b.tiles_y), (4, 3));
        let k = |tile: u64, d: f32| (tile << 32) | bits(d);
        assert_eq!(
            b.keys,
            vec![
                k(0, 0.5),
                k(0, 2.0),
                k(0, 2.0),
                k(1, 2.0),
                k(1, 2.0),
                k(4, 2.0),
                k(4, 2.0),
                k(5, 2.0),
                k(5, 2.0),
                k(10, 1.0),
            ]
        );
        // Equal keys keep id order (G0 before G3), G2 emits nothing.
        assert_eq!(b.ids, vec![4, 0, 3, 0, 3, 0, 3, 0, 3, 1]);
        assert_eq!(
            b.tile_ranges,
            vec![
                [0, 3],
                [3, 5],
                [5, 5],
                [5, 5],
                [5, 7],
                [7, 9],
                [9, 9],
                [9, 9],
                [9, 9],
                [9, 9],
                [9, 10],
                [10, 10],
            ]
        );
        // Keys are sorted, depth within a tile ascending.
        assert!(b.keys.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn bin_matches_per_tile_sort_by_depth_then_id() {
        // Many equal keys: 300 Gaussians over a 48×48 image (3×3 tiles) with only 3 distinct
        // depths. Independent check: per tile, the ids touching it sorted by (f32 depth, id).
        let mut rng = Rng(7);
        let mut gs = Vec::new();
        for g in 0..300 {
            let m = [rng.range(-5.0, 53.0), rng.range(-5.0, 53.0)];
            let depth = [1.5, 2.5, 3.5][g % 3];
            let r = if g % 17 == 0 {
                0
            } else {
                1 + (rng.next() * 12.0) as i32
            };
            gs.push((m, depth, [1.0, 0.0, 1.0], r));
        }
        let p = scene(&gs);
        let b = bin(&p, 48, 48);
        let mut total = 0;
        for t in 0..9u32 {
            let (tx, ty) = (t % 3, t / 3);
            let mut want: Vec<(u32, u32)> = Vec::new();
            for (g, &(m, d, _, r)) in gs.iter().enumerate() {
                let (lo, hi) = tile_rect(m, r, 3, 3);
                if (lo[0]..hi[0]).contains(&tx) && (lo[1]..hi[1]).contains(&ty) {
                    want.push(((d as f32).to_bits(), g as u32));
                }
            }
            want.sort();
            let [s, e] = b.tile_ranges[t as usize];
            let got: Vec<(u32, u32)> = (s as usize..e as usize)
                .map(|k| {
                    assert_eq!(b.keys[k] >> 32, u64::from(t));
                    (b.keys[k] as u32, b.ids[k])
                })
                .collect();
            assert_eq!(got, want, "tile {t}");
            total += want.len();
        }
        assert_eq!(total, b.keys.len());
        assert!(total > 300);
    }

    #[test]
    fn bin_empty_and_degenerate() {
        let p = scene(&[([20.0, 20.0], 2.0, [1.0, 0.0, 1.0], 0)]);
        let b = bin(&p, 32, 32);
        assert!(b.keys.is_empty() && b.ids.is_empty());
        assert_eq!(b.tile_ranges, vec![[0, 0]; 4]);
        let b = bin(&p, 0, 32);
        assert_eq!((b.tiles_x, b.tile_ranges.len()), (0, 0));
        // A short `means2d` is treated as culled, not a panic.
        let mut q = scene(&[([20.0, 20.0], 2.0, [1.0, 0.0, 1.0], 4)]);
        q.means2d.clear();
        assert!(bin(&q, 32, 32).keys.is_empty());
    }

    const BG: [f64; 3] = [0.1, 0.1, 0.1];

    #[test]
    fn one_gaussian_by_hand() {
        // Mean (5.5, 7.5) is the centre of pixel (5, 7). Conic (2, 0.5, 1), radius 4: tile 0.
        let p = scene(&[([5.5, 7.5], 2.0, [2.0, 0.5, 1.0], 4)]);
        let colors = [[0.2, 0.4, 0.6]];
        let opac = [0.5];
        let b = bin(&p, 32, 32);
        let r = render(&p, &colors, &opac, &b, 32, 32, BG).unwrap();
        let at = |i: usize, j: usize| j * 32 + i;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-15;

        // Pixel (5, 7): d = 0, α = 0.5, T = 0.5.
        let q = at(5, 7);
        assert_eq!(r.n_contrib[q], 1);
        assert!(close(r.final_t[q], 0.5) && close(r.alpha[q], 0.5));
        for (k, want) in [0.15, 0.25, 0.35].into_iter().enumerate() {
            assert!(close(r.image[q][k], want), "{k}: {}", r.image[q][k]);
        }
        // Pixel (6, 7): d = (−1, 0), power = −0.5·2 = −1.
        let a = 0.5 * (-1.0f64).exp();
        let q = at(6, 7);
        assert!(close(r.alpha[q], a) && close(r.final_t[q], 1.0 - a));
        assert!(close(r.image[q][2], 0.6 * a + (1.0 - a) * 0.1));
        // Pixel (6, 8): d = (−1, −1), power = −0.5·(2 + 1) − 0.5 = −2.
        let a = 0.5 * (-2.0f64).exp();
        assert!(close(r.alpha[at(6, 8)], a));
        // Pixel (4, 8): d = (1, −1), power = −1.5 + 0.5 = −1 (the sign of B).
        let a = 0.5 * (-1.0f64).exp();
        assert!(close(r.alpha[at(4, 8)], a));
        // Pixel (12, 7): in the tile, but α = 0.5·e^(−42.25) < 1/255: skipped.
        let q = at(12, 7);
        assert_eq!((r.n_contrib[q], r.alpha[q], r.final_t[q]), (0, 0.0, 1.0));
        assert_eq!(r.image[q], BG);
        // Pixel (20, 20): another tile, empty range: background.
        let q = at(20, 20);
        assert_eq!((r.n_contrib[q], r.alpha[q]), (0, 0.0));
        assert_eq!(r.image[q], BG);
        // Background is added with weight T_final exactly.
        let r0 = render(&p, &colors, &opac, &b, 32, 32, [0.0; 3]).unwrap();
        for q in 0..32 * 32 {
            for k in 0..3 {
                let d = r.image[q][k] - r0.image[q][k];
                assert!((d - 0.1 * r.final_t[q]).abs() < 1e-15);
            }
        }
    }

    #[test]
    fn alpha_is_capped() {
        let p = scene(&[([5.5, 7.5], 2.0, [2.0, 0.0, 2.0], 4)]);
        let b = bin(&p, 16, 16);
        let r = render(&p, &[[1.0; 3]], &[1.0], &b, 16, 16, [0.0; 3]).unwrap();
        let q = 7 * 16 + 5;
        assert!((r.alpha[q] - 0.99).abs() < 1e-15);
    }

    #[test]
    fn transmittance_stop_rule() {
        // All at the centre of pixel (3, 3), front to back by depth: G0, G1 (α = 0.001 < 1/255,
        // skipped), G2, G3 (α = 0.95 each: T = 0.05, 0.0025, 1.25e-4), then G4 would take T to
        // 6.25e-6 < 1e-4: the pixel stops and G4 is NOT blended; G5 is never reached.
        let conic = [0.5, 0.0, 0.5];
        let m = [3.5, 3.5];
        let p = scene(&[
            (m, 1.0, conic, 6),
            (m, 2.0, conic, 6),
            (m, 3.0, conic, 6),
            (m, 4.0, conic, 6),
            (m, 5.0, conic, 6),
            (m, 6.0, conic, 6),
        ]);
        let colors = [
            [1.0, 0.0, 0.0],
            [5.0, 5.0, 5.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [7.0, 7.0, 7.0],
            [9.0, 9.0, 9.0],
        ];
        let opac = [0.95, 0.001, 0.95, 0.95, 0.95, 0.95];
        let b = bin(&p, 16, 16);
        assert_eq!(b.ids, vec![0, 1, 2, 3, 4, 5]);
        let r = render(&p, &colors, &opac, &b, 16, 16, [0.5; 3]).unwrap();
        let q = 3 * 16 + 3;
        // The last blended is G3, at 1-based position 4 (the skipped G1 counts as a position).
        assert_eq!(r.n_contrib[q], 4);
        let t = [1.0, 0.05, 0.0025, 0.05f64.powi(3)];
        assert!((r.final_t[q] - t[3]).abs() < 1e-17);
        assert!((r.alpha[q] - (1.0 - t[3])).abs() < 1e-15);
        let want = [
            0.95 * t[0] + 0.5 * t[3],
            0.95 * t[1] + 0.5 * t[3],
            0.95 * t[2] + 0.5 * t[3],
        ];
        for (k, w) in want.iter().enumerate() {
            assert!((r.image[q][k] - w).abs() < 1e-15, "{k}");
        }
        // Removing G4 lets G5 take its place and stop the pixel just the same.
        let opac2 = [0.95, 0.001, 0.95, 0.95, 0.0, 0.95];
        let r2 = render(&p, &colors, &opac2, &b, 16, 16, [0.5; 3]).unwrap();
        assert_eq!(r2.n_contrib[q], 4);
        assert_eq!(r2.image[q], r.image[q]);
        // G3 at α = 0.5 → T = 0.00125; G4 at 0.9 → T = 1.25e-4 >= 1e-4: blended (position 5);
        // G5 at 0.95 would give 6.25e-6: stops.
        let opac3 = [0.95, 0.001, 0.95, 0.5, 0.9, 0.95];
        let r3 = render(&p, &colors, &opac3, &b, 16, 16, [0.5; 3]).unwrap();
        assert_eq!(r3.n_contrib[q], 5);
        assert!((r3.final_t[q] - 0.05 * 0.05 * 0.5 * 0.1).abs() < 1e-17);
    }

    #[test]
    fn errors() {
        let p = scene(&[([5.5, 7.5], 2.0, [2.0, 0.5, 1.0], 4)]);
        let b = bin(&p, 32, 32);
        let c = [[0.2; 3]];
        let o = [0.5];
        let e = render(&p, &c, &o, &b, 0, 32, BG).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = render(&p, &[], &o, &b, 32, 32, BG).unwrap_err();
        assert!(e.contains("colors"), "{e}");
        let e = render(&p, &c, &[0.5, 0.5], &b, 32, 32, BG).unwrap_err();
        assert!(e.contains("opacities"), "{e}");
        let e = render(&p, &[[f64::NAN, 0.0, 0.0]], &o, &b, 32, 32, BG).unwrap_err();
        assert!(e.contains("colors[0]"), "{e}");
        let e = render(&p, &c, &[f64::INFINITY], &b, 32, 32, BG).unwrap_err();
        assert!(e.contains("opacities[0]"), "{e}");
        let e = render(&p, &c, &o, &b, 32, 32, [f64::NAN; 3]).unwrap_err();
        assert!(e.contains("background"), "{e}");
        let mut q = p.clone();
        q.means2d[0][1] = f64::NAN;
        let e = render(&q, &c, &o, &b, 32, 32, BG).unwrap_err();
        assert!(e.contains("means2d[0]"), "{e}");
        let e = render(&p, &c, &o, &b, 48, 32, BG).unwrap_err();
        assert!(e.contains("tile grid"), "{e}");
        let mut bb = b.clone();
        bb.ids[0] = 7;
        let e = render(&p, &c, &o, &bb, 32, 32, BG).unwrap_err();
        assert!(e.contains("bins.ids[0]"), "{e}");
        let mut bb = b.clone();
        bb.tile_ranges[1] = [0, 9];
        let e = render(&p, &c, &o, &bb, 32, 32, BG).unwrap_err();
        assert!(e.contains("tile_ranges[1]"), "{e}");

        let r = render(&p, &c, &o, &b, 32, 32, BG).unwrap();
        let vi = vec![[1.0; 3]; 1024];
        let va = vec![1.0; 1024];
        let e = render_backward(&p, &c, &o, &b, 32, 32, BG, &r, &vi[1..], &va).unwrap_err();
        assert!(e.contains("v_image"), "{e}");
        let mut va2 = va.clone();
        va2[3] = f64::NAN;
        let e = render_backward(&p, &c, &o, &b, 32, 32, BG, &r, &vi, &va2).unwrap_err();
        assert!(e.contains("v_alpha[3]"), "{e}");
        let mut r2 = r.clone();
        r2.n_contrib[0] = 2;
        let e = render_backward(&p, &c, &o, &b, 32, 32, BG, &r2, &vi, &va).unwrap_err();
        assert!(e.contains("n_contrib[0]"), "{e}");
        assert!(render_backward(&p, &c, &o, &b, 32, 32, BG, &r, &vi, &va).is_ok());
    }

    // ---- finite differences -------------------------------------------------------------

    /// splitmix64, for reproducible scenes without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.next()
        }
    }

    struct Scene {
        p: Projected,
        colors: Vec<[f64; 3]>,
        opac: Vec<f64>,
        bg: [f64; 3],
    }

    /// `n` Gaussians on a 32×32 image with positive-definite conics (so `power <= 0`), means in
    /// `[m_lo, m_hi]²`, axis scales in `[s_lo, s_hi]`, radius `ceil(3·√λ_max)` of the
    /// covariance, distinct depths, opacities in `[o_lo, o_hi]`.
    fn random_scene(seed: u64, n: usize, m: [f64; 2], sc: [f64; 2], o: [f64; 2]) -> Scene {
        let mut rng = Rng(seed);
        let mut p = Projected::default();
        let mut colors = Vec::new();
        let mut opac = Vec::new();
        for _ in 0..n {
            let mean = [rng.range(m[0], m[1]), rng.range(m[0], m[1])];
            let (s1, s2) = (rng.range(sc[0], sc[1]), rng.range(sc[0], sc[1]));
            let th = rng.range(0.0, std::f64::consts::PI);
            let (c, s) = (th.cos(), th.sin());
            // cov = R diag(s1², s2²) Rᵀ = [[a, b], [b, d]]; conic = cov⁻¹.
            let (v1, v2) = (s1 * s1, s2 * s2);
            let (a, b, d) = (
                c * c * v1 + s * s * v2,
                c * s * (v1 - v2),
                s * s * v1 + c * c * v2,
            );
            let det = a * d - b * b;
            p.means2d.push(mean);
            p.depths.push(rng.range(1.0, 10.0));
            p.conics.push([d / det, -b / det, a / det]);
            p.radii.push((3.0 * s1.max(s2)).ceil() as i32);
            colors.push([rng.next(), rng.next(), rng.next()]);
            opac.push(rng.range(o[0], o[1]));
        }
        Scene {
            p,
            colors,
            opac,
            bg: [rng.next(), rng.next(), rng.next()],
        }
    }

    /// What the forward did at each visited (pixel, entry) pair.
    #[derive(Default)]
    struct Walk {
        /// Per visited pair: 0 skipped (`α < ALPHA_MIN`), 1 blended, 2 blended capped, 3 stop;
        /// 9 ends a pixel.
        codes: Vec<u8>,
        clamped: usize,
        stopped: usize,
        blended: usize,
    }

    /// Replays the forward's decisions (independently of `render`), so that a finite
    /// difference can be rejected when a threshold flips within `±h`.
    fn walk(s: &Scene, b: &Bins, w: u32, h: u32) -> Walk {
        let mut out = Walk::default();
        for j in 0..h {
            for i in 0..w {
                let (px, py) = (f64::from(i) + 0.5, f64::from(j) + 0.5);
                let (st, en) = pixel_range(b, i, j);
                let mut t = 1.0f64;
                for &g in &b.ids[st..en] {
                    let g = g as usize;
                    let [mx, my] = s.p.means2d[g];
                    let [a, bb, c] = s.p.conics[g];
                    let (dx, dy) = (mx - px, my - py);
                    let power = -0.5 * (a * dx * dx + c * dy * dy) - bb * dx * dy;
                    assert!(power <= 0.0, "conics are positive definite");
                    let raw = s.opac[g] * power.exp();
                    let alpha = raw.min(ALPHA_MAX);
                    if alpha < ALPHA_MIN {
                        out.codes.push(0);
                        continue;
                    }
                    let next_t = t * (1.0 - alpha);
                    if next_t < T_MIN {
                        out.codes.push(3);
                        out.stopped += 1;
                        break;
                    }
                    let capped = raw > ALPHA_MAX;
                    out.codes.push(if capped { 2 } else { 1 });
                    out.clamped += usize::from(capped);
                    out.blended += 1;
                    t = next_t;
                }
                out.codes.push(9);
            }
        }
        out
    }

    /// `L = Σ v_image·image + Σ v_alpha·alpha`.
    fn loss(s: &Scene, b: &Bins, vi: &[[f64; 3]], va: &[f64]) -> f64 {
        let r = render(&s.p, &s.colors, &s.opac, b, 32, 32, s.bg).unwrap();
        let mut l = 0.0;
        for q in 0..r.alpha.len() {
            for (v, x) in vi[q].iter().zip(r.image[q]) {
                l += v * x;
            }
            l += va[q] * r.alpha[q];
        }
        l
    }

    /// Checks every analytic gradient of `s` against central differences (bins fixed), leaving
    /// out the parameters whose `±h` perturbation flips a threshold decision somewhere.
    fn fd_check(s: &Scene, seed: u64) {
        let (w, h) = (32u32, 32u32);
        let b = bin(&s.p, w, h);
        let base = walk(s, &b, w, h).codes;
        let mut rng = Rng(seed ^ 0xABCD);
        let n_pix = (w * h) as usize;
        let vi: Vec<[f64; 3]> = (0..n_pix)
            .map(|_| {
                [
                    rng.range(-1.0, 1.0),
                    rng.range(-1.0, 1.0),
                    rng.range(-1.0, 1.0),
                ]
            })
            .collect();
        let va: Vec<f64> = (0..n_pix).map(|_| rng.range(-1.0, 1.0)).collect();
        let fwd = render(&s.p, &s.colors, &s.opac, &b, w, h, s.bg).unwrap();
        let g = render_backward(&s.p, &s.colors, &s.opac, &b, w, h, s.bg, &fwd, &vi, &va).unwrap();

        let hstep = 1e-6;
        let n = s.p.radii.len();
        let (mut checked, mut flipped, mut nonzero) = (0, 0, 0);
        for gi in 0..n {
            // (kind, components): means2d, conics, colors, opacity.
            for (kind, comps) in [(0usize, 2usize), (1, 3), (2, 3), (3, 1)] {
                for comp in 0..comps {
                    let set = |sc: &mut Scene, delta: f64| match kind {
                        0 => sc.p.means2d[gi][comp] += delta,
                        1 => sc.p.conics[gi][comp] += delta,
                        2 => sc.colors[gi][comp] += delta,
                        _ => sc.opac[gi] += delta,
                    };
                    let mut sp = Scene {
                        p: s.p.clone(),
                        colors: s.colors.clone(),
                        opac: s.opac.clone(),
                        bg: s.bg,
                    };
                    set(&mut sp, hstep);
                    let same_p = walk(&sp, &b, w, h).codes == base;
                    let lp = loss(&sp, &b, &vi, &va);
                    set(&mut sp, -2.0 * hstep);
                    let same_m = walk(&sp, &b, w, h).codes == base;
                    let lm = loss(&sp, &b, &vi, &va);
                    if !(same_p && same_m) {
                        flipped += 1;
                        continue;
                    }
                    let fd = (lp - lm) / (2.0 * hstep);
                    let an = match kind {
                        0 => g.v_means2d[gi][comp],
                        1 => g.v_conics[gi][comp],
                        2 => g.v_colors[gi][comp],
                        _ => g.v_opacities[gi],
                    };
                    let tol = 1e-5 * an.abs().max(fd.abs()) + 1e-6;
                    assert!(
                        (fd - an).abs() <= tol,
                        "seed {seed} g{gi} kind {kind} comp {comp}: fd {fd} analytic {an}"
                    );
                    checked += 1;
                    nonzero += usize::from(an.abs() > 1e-3);
                }
            }
        }
        assert!(flipped * 10 <= n * 9, "seed {seed}: {flipped} flips");
        assert!(
            nonzero * 10 >= checked * 7,
            "seed {seed}: {nonzero}/{checked} non-trivial"
        );
    }

    /// Runs the check on the first 3 seeds whose scene satisfies `need`.
    fn fd_scenes(n: usize, m: [f64; 2], sc: [f64; 2], o: [f64; 2], need: impl Fn(&Walk) -> bool) {
        let mut done = 0;
        for seed in 1..100u64 {
            let s = random_scene(seed, n, m, sc, o);
            let b = bin(&s.p, 32, 32);
            if !need(&walk(&s, &b, 32, 32)) {
                continue;
            }
            fd_check(&s, seed);
            done += 1;
            if done == 3 {
                return;
            }
        }
        panic!("only {done} usable scenes");
    }

    #[test]
    fn finite_differences_translucent() {
        fd_scenes(5, [6.0, 26.0], [1.5, 5.0], [0.2, 0.9], |m| {
            m.blended > 500 && m.clamped == 0 && m.stopped == 0
        });
    }

    #[test]
    fn finite_differences_opaque_with_cap_and_stop() {
        // Near-opaque and stacked: some pairs hit the 0.99 cap (zero gradient through it) and
        // some pixels stop at T_MIN (the stopping Gaussian gets nothing).
        fd_scenes(8, [12.0, 20.0], [2.5, 6.0], [0.995, 1.0], |m| {
            m.clamped > 0 && m.stopped > 20
        });
    }

    #[test]
    fn backward_of_capped_pair_is_colour_only() {
        // One capped pixel: α = 0.99 regardless of the mean, conic and opacity.
        let p = scene(&[([0.5, 0.5], 1.0, [0.01, 0.0, 0.01], 1)]);
        let b = bin(&p, 1, 1);
        let c = [[0.3, 0.6, 0.9]];
        let r = render(&p, &c, &[1.0], &b, 1, 1, [0.2; 3]).unwrap();
        let g =
            render_backward(&p, &c, &[1.0], &b, 1, 1, [0.2; 3], &r, &[[1.0; 3]], &[1.0]).unwrap();
        assert_eq!(g.v_means2d[0], [0.0; 2]);
        assert_eq!(g.v_conics[0], [0.0; 3]);
        assert_eq!(g.v_opacities[0], 0.0);
        for k in 0..3 {
            assert!((g.v_colors[0][k] - 0.99).abs() < 1e-15);
        }
    }
}
