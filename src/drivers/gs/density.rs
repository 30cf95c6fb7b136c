//! Density control for 3DGS training (issue 15, "Balanced density control"), on the host, on the
//! raw parameters of `super::ply::Splats`.
//!
//! - `GradStats` accumulates, per Gaussian, the view-space (screen) positional gradient norm the
//!   backward produces, and the largest screen radius.
//! - `densify` is 3DGS's clone / split / prune step (sampling in sparse, under-reconstructed
//!   regions).
//! - `merge_splats` is BalanceGS's similarity merging in dense regions, through the f64
//!   reference `crate::reference::gs::merge::merge_similar`.
//! - `balance` reports the per-pixel and per-tile workload histograms and their max/mean ratio.
//!
//! # Gradient statistics
//!
//! For each view, every Gaussian with `radius > 0` adds `|(gx·W/2, gy·H/2)|` to its sum and 1 to
//! its count, where `(gx, gy)` is `∂L/∂means2d` in pixel units: the pixel gradient converted to
//! NDC units, as gsplat's `DefaultStrategy` does (INRIA's rasteriser returns this NDC gradient
//! directly). The densification criterion is the mean `sum / count`. One call is one view; a loss
//! averaged over a batch of `C` views would need its gradients scaled by `C` first, as gsplat
//! does.
//!
//! # Densification (`densify`)
//!
//! With `g_i` the mean NDC gradient norm, `s_i = max_k exp(log_scales[i][k])` and `E` the scene
//! extent:
//!
//! - **prune** `i` when `sigmoid(logit_i) < min_opacity`, or when `max_screen_radius` is
//!   `Some(r)` and `max_radius_i > r`. A pruned Gaussian produces no output at all (no clone, no
//!   split): every copy would inherit its opacity and radius, so INRIA's prune after densifying
//!   would remove them all anyway.
//! - otherwise, when `count_i > 0` and `g_i ≥ grad_threshold` (INRIA's `>=`):
//!   - **clone** when `s_i ≤ percent_dense·E`: keep `i` and append an exact copy;
//!   - **split** when `s_i > percent_dense·E`: replace `i` by two samples with means drawn from
//!     `N(μ_i, Σ_i)`, `Σ_i = R diag(s²) Rᵀ` (`R` from the normalised quaternion, `s` the linear
//!     scales before division): `μ_i + R (s ⊙ z)`, `z ~ N(0, I)`; log-scales
//!     `log_scales − ln(split_factor)`; the same quaternion, opacity logit and SH (INRIA's rule:
//!     the split does not revise the opacity).
//! - a Gaussian never seen (`count = 0`) is never densified.
//!
//! **Output order:** first the kept Gaussians (neither pruned nor split) in input order, then
//! the clones in input order, then the split samples: for each split Gaussian in input order its
//! two samples, consecutively. `Origin` gives the source of each output.
//!
//! **Randomness:** each split Gaussian `i` draws its six normals from its own splitmix64 stream,
//! seeded by a hash of `(seed, i)`, by Box–Muller. So the samples depend only on `seed`, `i` and
//! that Gaussian's parameters, not on what the other Gaussians do.
//!
//! # Merging (`merge_splats`)
//!
//! Each Gaussian becomes a `merge::Gaussian`: the mean and quaternion as given; `scale =
//! exp(log_scale)`; `opacity = max(sigmoid(logit), OPACITY_EPS)` (the reference needs `α > 0`);
//! `color = 0.5 + C0·f_dc` with `C0 = 0.28209479177387814`: the view-independent RGB of the DC
//! term (INRIA's `SH2RGB`), so `SimilarityParams::color_tol` is in RGB units. Pairs are merged by
//! the reference's greedy rule and opacity-weighted moment match (`α = 1 − Π(1 − α_i)`). A
//! singleton is copied bit for bit. A merged pair is converted back:
//!
//! - the mean and the reference's (unit, `w ≥ 0`) quaternion, rounded to `f32`;
//! - `log_scales = ln(max(s, s_floor))` with `s_floor` the smallest linear scale among the
//!   pair's inputs (itself at least `f64::MIN_POSITIVE`). The exact moment-matched covariance
//!   satisfies `Σ ⪰ Σ w_i Σ_i / W`, so its scales are never below that floor: the floor only
//!   undoes rounding in the eigen-decomposition and keeps a zero scale's log finite;
//! - `logit(clamp(α, OPACITY_EPS, 1 − OPACITY_EPS))`;
//! - **SH:** every coefficient (all degrees, all channels) is the opacity-weighted mean
//!   `Σ α_i sh_i / Σ α_i` with the `α_i` given to the reference; so the DC term is the merged
//!   colour, `(color − 0.5)/C0`, up to rounding.
//!
//! # Workload balance (`balance`)
//!
//! The per-pixel workload is the renderer's contributor count `n_contrib`, the per-tile workload
//! the tile's Gaussian count `end − start` from binning. `Histogram` bins are powers of two:
//! bin 0 holds 0, bin `b ≥ 1` holds `[2^(b−1), 2^b)`; the histogram has just enough bins for the
//! largest value. Means are over all pixels / all tiles, and ratio = max/mean (0 when the mean
//! is 0).
//!
//! # Errors
//!
//! `Error::InvalidArgument` with op `gs.densify` (`GradStats::accumulate`, `densify`), `gs.merge`
//! or `gs.balance`: inconsistent `Splats` lengths or a degree above 3, a non-finite parameter, a
//! zero quaternion, mismatched statistic / gradient / radius / contributor / tile-range lengths,
//! an empty image, a bad parameter, a tile range with `start > end`, and what the reference
//! merge rejects.

use super::ply::Splats;
use crate::error::{Error, Result};
use crate::reference::gs::merge::{self, SimilarityParams};

const OP_DENSIFY: &str = "gs.densify";
const OP_MERGE: &str = "gs.merge";
const OP_BALANCE: &str = "gs.balance";

/// The band-0 SH constant `1/(2√π)`: RGB = 0.5 + C0·f_dc.
const SH_C0: f64 = 0.282_094_791_773_878_14;

/// Opacities are kept in `[OPACITY_EPS, 1 − OPACITY_EPS]` when merging (see the module docs).
pub const OPACITY_EPS: f64 = 1e-6;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The unit quaternion along `q`, or `None` for a zero one (scaled by its largest entry first).
fn normalized(q: &[f32; 4]) -> Option<[f64; 4]> {
    let q = q.map(f64::from);
    let m = q.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if m == 0.0 {
        return None;
    }
    let s = q.map(|v| v / m);
    let n = s.iter().map(|v| v * v).sum::<f64>().sqrt();
    Some(s.map(|v| v / n))
}

/// Rotation matrix (row-major) of a unit `[w, x, y, z]` quaternion.
fn rotation([w, x, y, z]: [f64; 4]) -> [[f64; 3]; 3] {
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

/// Checks that a `Splats` is consistent (lengths, degree), finite, has no zero quaternion and
/// fits `u32` indices.
fn check_splats(op: &'static str, s: &Splats) -> Result<()> {
    let n = s.means.len();
    if s.degree > 3 {
        return Err(Error::invalid(
            op,
            format!("SH degree {} is above 3", s.degree),
        ));
    }
    if u32::try_from(n).is_err() {
        return Err(Error::invalid(
            op,
            format!("{n} Gaussians exceed the u32 index range"),
        ));
    }
    let k = s.sh_coeffs();
    for (name, len, want) in [
        ("quats", s.quats.len(), Some(n)),
        ("log_scales", s.log_scales.len(), Some(n)),
        ("opacity_logits", s.opacity_logits.len(), Some(n)),
        ("sh", s.sh.len(), n.checked_mul(k * 3)),
    ] {
        if Some(len) != want {
            return Err(Error::invalid(
                op,
                format!(
                    "{name} has {len} entries, expected {} for {n} Gaussians (SH degree {})",
                    want.map_or_else(|| "too many".to_string(), |w| w.to_string()),
                    s.degree
                ),
            ));
        }
    }
    for i in 0..n {
        let sh = &s.sh[i * k * 3..(i + 1) * k * 3];
        let fields: [(&str, &[f32]); 5] = [
            ("means", &s.means[i]),
            ("quats", &s.quats[i]),
            ("log_scales", &s.log_scales[i]),
            ("opacity_logits", std::slice::from_ref(&s.opacity_logits[i])),
            ("sh", sh),
        ];
        for (name, v) in fields {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid(
                    op,
                    format!("Gaussian {i}: {name} is not finite: {v:?}"),
                ));
            }
        }
        if s.quats[i].iter().all(|&q| q == 0.0) {
            return Err(Error::invalid(
                op,
                format!("Gaussian {i} has a zero quaternion"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gradient statistics
// ---------------------------------------------------------------------------------------------

/// Per-Gaussian densification statistics, accumulated over the views of a densification interval
/// (create a fresh one, `GradStats::new(n)`, after each `densify`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GradStats {
    /// Sum over views where the Gaussian was visible of its NDC screen-gradient norm.
    pub sum: Vec<f64>,
    /// Number of views where the Gaussian was visible (radius > 0).
    pub count: Vec<u32>,
    /// Largest screen radius (pixels) over those views; 0 when never visible.
    pub max_radius: Vec<i32>,
}

impl GradStats {
    /// Zeroed statistics for `n` Gaussians.
    pub fn new(n: usize) -> Self {
        GradStats {
            sum: vec![0.0; n],
            count: vec![0; n],
            max_radius: vec![0; n],
        }
    }

    /// Number of Gaussians (the length of `sum`).
    pub fn len(&self) -> usize {
        self.sum.len()
    }

    /// True when there are no Gaussians.
    pub fn is_empty(&self) -> bool {
        self.sum.is_empty()
    }

    fn check_lengths(&self, op: &'static str) -> Result<()> {
        let n = self.sum.len();
        if self.count.len() != n || self.max_radius.len() != n {
            return Err(Error::invalid(
                op,
                format!(
                    "GradStats lengths differ: sum {}, count {}, max_radius {}",
                    n,
                    self.count.len(),
                    self.max_radius.len()
                ),
            ));
        }
        Ok(())
    }

    /// Adds one view: `v_means2d` `[N, 2]` is `∂L/∂means2d` in pixels, `radii` `[N]` the
    /// projected radii (`> 0` = visible) of a `width × height` render. Each visible Gaussian adds
    /// `|(gx·width/2, gy·height/2)|` to `sum`, 1 to `count`, and raises `max_radius`.
    ///
    /// Errors (op `gs.densify`, nothing changed): mismatched lengths, a zero width or height, a
    /// non-finite gradient.
    pub fn accumulate(
        &mut self,
        v_means2d: &[f32],
        radii: &[i32],
        width: u32,
        height: u32,
    ) -> Result<()> {
        self.check_lengths(OP_DENSIFY)?;
        let n = self.len();
        if Some(v_means2d.len()) != n.checked_mul(2) {
            return Err(Error::invalid(
                OP_DENSIFY,
                format!(
                    "v_means2d has {} entries, expected 2·{n} = [N, 2]",
                    v_means2d.len()
                ),
            ));
        }
        if radii.len() != n {
            return Err(Error::invalid(
                OP_DENSIFY,
                format!("radii has {} entries, expected {n}", radii.len()),
            ));
        }
        if width == 0 || height == 0 {
            return Err(Error::invalid(
                OP_DENSIFY,
                format!("the image is empty ({width}x{height})"),
            ));
        }
        if let Some(j) = v_means2d.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                OP_DENSIFY,
                format!(
                    "v_means2d[{}][{}] = {} is not finite",
                    j / 2,
                    j % 2,
                    v_means2d[j]
                ),
            ));
        }
        let (hw, hh) = (0.5 * f64::from(width), 0.5 * f64::from(height));
        for (i, &r) in radii.iter().enumerate() {
            if r <= 0 {
                continue;
            }
            let gx = f64::from(v_means2d[2 * i]) * hw;
            let gy = f64::from(v_means2d[2 * i + 1]) * hh;
            self.sum[i] += gx.hypot(gy);
            self.count[i] = self.count[i].saturating_add(1);
            self.max_radius[i] = self.max_radius[i].max(r);
        }
        Ok(())
    }

    /// The mean NDC gradient norm per Gaussian, `sum / count` (0 where `count` is 0).
    pub fn mean(&self) -> Vec<f64> {
        self.sum
            .iter()
            .enumerate()
            .map(|(i, &s)| match self.count.get(i) {
                Some(&c) if c > 0 => s / f64::from(c),
                _ => 0.0,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Densification
// ---------------------------------------------------------------------------------------------

/// Parameters of `densify`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DensifyParams {
    /// Densify when the mean NDC gradient norm is `≥` this (≥ 0).
    pub grad_threshold: f64,
    /// Clone when the largest linear scale is `≤ percent_dense · scene_extent`, else split
    /// (≥ 0).
    pub percent_dense: f64,
    /// A split sample's scales are the source's divided by this (> 1).
    pub split_factor: f64,
    /// Prune when the opacity (after the sigmoid) is below this, in `[0, 1]`.
    pub min_opacity: f64,
    /// When `Some(r)` (r ≥ 0), also prune Gaussians whose `max_radius` exceeds `r` pixels.
    pub max_screen_radius: Option<i32>,
}

impl Default for DensifyParams {
    /// The INRIA / gsplat defaults: `grad_threshold 0.0002` (INRIA `densify_grad_threshold`,
    /// gsplat `grow_grad2d`), `percent_dense 0.01` (INRIA `percent_dense`, gsplat
    /// `grow_scale3d`), `split_factor 1.6` (INRIA divides by `0.8·N` with `N = 2`; gsplat's
    /// split also uses 1.6), `min_opacity 0.005` (INRIA `densify_and_prune(…, 0.005, …)`, gsplat
    /// `prune_opa`), `max_screen_radius None` (gsplat's default, `refine_scale2d_stop_iter = 0`;
    /// INRIA uses `Some(20)` after the first opacity reset).
    fn default() -> Self {
        DensifyParams {
            grad_threshold: 0.0002,
            percent_dense: 0.01,
            split_factor: 1.6,
            min_opacity: 0.005,
            max_screen_radius: None,
        }
    }
}

impl DensifyParams {
    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::invalid(OP_DENSIFY, msg));
        if !(self.grad_threshold >= 0.0 && self.grad_threshold.is_finite()) {
            return bad(format!(
                "grad_threshold must be finite and ≥ 0, got {}",
                self.grad_threshold
            ));
        }
        if !(self.percent_dense >= 0.0 && self.percent_dense.is_finite()) {
            return bad(format!(
                "percent_dense must be finite and ≥ 0, got {}",
                self.percent_dense
            ));
        }
        if !(self.split_factor > 1.0 && self.split_factor.is_finite()) {
            return bad(format!(
                "split_factor must be finite and > 1, got {}",
                self.split_factor
            ));
        }
        if !(0.0..=1.0).contains(&self.min_opacity) {
            return bad(format!(
                "min_opacity must be in [0, 1], got {}",
                self.min_opacity
            ));
        }
        if let Some(r) = self.max_screen_radius {
            if r < 0 {
                return bad(format!("max_screen_radius must be ≥ 0, got {r}"));
            }
        }
        Ok(())
    }
}

/// Where an output Gaussian of `densify` came from (an input index), so that the optimiser can
/// carry (`Kept`) or reset (`Clone`, `Split`) its Adam moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The input Gaussian, unchanged.
    Kept(u32),
    /// An exact copy of the input Gaussian, appended.
    Clone(u32),
    /// One of the two samples replacing a split input Gaussian.
    Split(u32),
}

impl Origin {
    /// The input index.
    pub fn source(self) -> u32 {
        match self {
            Origin::Kept(i) | Origin::Clone(i) | Origin::Split(i) => i,
        }
    }
}

/// splitmix64's output function.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A splitmix64 generator with Box–Muller normals.
struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream of Gaussian `i` under `seed`.
    fn for_gaussian(seed: u64, i: usize) -> Self {
        SplitMix64(mix64(seed) ^ mix64(i as u64 ^ 0xD1B5_4A32_D192_ED03))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Two independent standard normals.
    fn normal_pair(&mut self) -> (f64, f64) {
        const UNIT: f64 = 1.0 / (1u64 << 53) as f64;
        let u1 = ((self.next_u64() >> 11) + 1) as f64 * UNIT; // (0, 1]
        let u2 = (self.next_u64() >> 11) as f64 * UNIT; // [0, 1)
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        (r * t.cos(), r * t.sin())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Prune,
    Keep,
    Clone,
    Split,
}

/// Copies Gaussian `i` of `s` to the end of `out`.
fn push_copy(out: &mut Splats, s: &Splats, i: usize) {
    let k3 = s.sh_coeffs() * 3;
    out.means.push(s.means[i]);
    out.quats.push(s.quats[i]);
    out.log_scales.push(s.log_scales[i]);
    out.opacity_logits.push(s.opacity_logits[i]);
    out.sh.extend_from_slice(&s.sh[i * k3..(i + 1) * k3]);
}

fn empty_like(s: &Splats, cap: usize) -> Splats {
    Splats {
        means: Vec::with_capacity(cap),
        quats: Vec::with_capacity(cap),
        log_scales: Vec::with_capacity(cap),
        opacity_logits: Vec::with_capacity(cap),
        sh: Vec::with_capacity(cap * s.sh_coeffs() * 3),
        degree: s.degree,
    }
}

/// 3DGS densification: clone, split and prune, by the rules and output order of the module
/// docs. Returns the new Gaussians and, for each, its `Origin`.
///
/// `scene_extent` is the scene radius (INRIA's `cameras_extent`); `seed` drives the split
/// samples. Errors (op `gs.densify`): an invalid `Splats` (lengths, degree, non-finite value,
/// zero quaternion), `stats` of another length, a non-finite statistic, a bad parameter or
/// extent, or a split sample that overflows `f32`.
pub fn densify(
    s: &Splats,
    stats: &GradStats,
    scene_extent: f64,
    p: &DensifyParams,
    seed: u64,
) -> Result<(Splats, Vec<Origin>)> {
    check_splats(OP_DENSIFY, s)?;
    p.validate()?;
    if !(scene_extent > 0.0 && scene_extent.is_finite()) {
        return Err(Error::invalid(
            OP_DENSIFY,
            format!("scene_extent must be finite and > 0, got {scene_extent}"),
        ));
    }
    stats.check_lengths(OP_DENSIFY)?;
    let n = s.len();
    if stats.len() != n {
        return Err(Error::invalid(
            OP_DENSIFY,
            format!("GradStats has {} entries for {n} Gaussians", stats.len()),
        ));
    }
    let grads = stats.mean();
    if let Some(i) = grads.iter().position(|g| !g.is_finite()) {
        return Err(Error::invalid(
            OP_DENSIFY,
            format!("the mean gradient of Gaussian {i} is not finite"),
        ));
    }
    let max_scale_limit = p.percent_dense * scene_extent;
    let actions: Vec<Action> = (0..n)
        .map(|i| {
            let opacity = sigmoid(f64::from(s.opacity_logits[i]));
            let too_big = p.max_screen_radius.is_some_and(|r| stats.max_radius[i] > r);
            if opacity < p.min_opacity || too_big {
                Action::Prune
            } else if stats.count[i] > 0 && grads[i] >= p.grad_threshold {
                let max_log = s.log_scales[i].iter().fold(f32::MIN, |m, &v| m.max(v));
                if f64::from(max_log).exp() <= max_scale_limit {
                    Action::Clone
                } else {
                    Action::Split
                }
            } else {
                Action::Keep
            }
        })
        .collect();
    let count = |a: Action| actions.iter().filter(|&&x| x == a).count();
    let cap = count(Action::Keep) + 2 * count(Action::Clone) + 2 * count(Action::Split);
    let mut out = empty_like(s, cap);
    let mut origin = Vec::with_capacity(cap);
    for (i, &a) in actions.iter().enumerate() {
        if a == Action::Keep || a == Action::Clone {
            push_copy(&mut out, s, i);
            origin.push(Origin::Kept(i as u32));
        }
    }
    for (i, &a) in actions.iter().enumerate() {
        if a == Action::Clone {
            push_copy(&mut out, s, i);
            origin.push(Origin::Clone(i as u32));
        }
    }
    let ln_factor = p.split_factor.ln();
    for (i, &a) in actions.iter().enumerate() {
        if a != Action::Split {
            continue;
        }
        // check_splats rejected zero quaternions.
        let r = rotation(normalized(&s.quats[i]).unwrap_or([1.0, 0.0, 0.0, 0.0]));
        let scale = s.log_scales[i].map(|l| f64::from(l).exp());
        let log_scales = s.log_scales[i].map(|l| (f64::from(l) - ln_factor) as f32);
        let mu = s.means[i].map(f64::from);
        let mut rng = SplitMix64::for_gaussian(seed, i);
        let (z0, z1) = rng.normal_pair();
        let (z2, z3) = rng.normal_pair();
        let (z4, z5) = rng.normal_pair();
        for z in [[z0, z1, z2], [z3, z4, z5]] {
            let v = [scale[0] * z[0], scale[1] * z[1], scale[2] * z[2]];
            let mut m = [0.0f32; 3];
            for (row, mk) in m.iter_mut().enumerate() {
                let x = mu[row] + r[row][0] * v[0] + r[row][1] * v[1] + r[row][2] * v[2];
                *mk = x as f32;
            }
            if m.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid(
                    OP_DENSIFY,
                    format!(
                        "a split sample of Gaussian {i} is not finite in f32 ({m:?}): \
                         scales {scale:?} are too large"
                    ),
                ));
            }
            push_copy(&mut out, s, i);
            if let Some(last) = out.means.last_mut() {
                *last = m;
            }
            if let Some(last) = out.log_scales.last_mut() {
                *last = log_scales;
            }
            origin.push(Origin::Split(i as u32));
        }
    }
    Ok((out, origin))
}

// ---------------------------------------------------------------------------------------------
// Similarity merging
// ---------------------------------------------------------------------------------------------

/// BalanceGS similarity merging of `s` through `crate::reference::gs::merge::merge_similar`
/// (neighbours within `cell` in a hash grid, greedy pairs above `params.threshold`), with the
/// conversions of the module docs.
///
/// Returns the merged Gaussians (same SH degree) and, for each, the ascending input indices merged
/// into it, in order of their lowest index, as the reference does. Singletons are copied
/// unchanged. Errors (op `gs.merge`): an invalid `Splats`, and whatever the reference rejects
/// (bad parameters or cell size, a linear scale overflowing `f64`).
pub fn merge_splats(
    s: &Splats,
    params: &SimilarityParams,
    cell: f64,
) -> Result<(Splats, Vec<Vec<u32>>)> {
    check_splats(OP_MERGE, s)?;
    let k3 = s.sh_coeffs() * 3;
    let gs: Vec<merge::Gaussian> = (0..s.len())
        .map(|i| merge::Gaussian {
            mean: s.means[i].map(f64::from),
            quat: s.quats[i].map(f64::from),
            scale: s.log_scales[i].map(|l| f64::from(l).exp()),
            opacity: sigmoid(f64::from(s.opacity_logits[i])).max(OPACITY_EPS),
            color: [0, 1, 2].map(|c| 0.5 + SH_C0 * f64::from(s.sh[i * k3 + c])),
        })
        .collect();
    let (merged, clusters) =
        merge::merge_similar(&gs, params, cell).map_err(|e| Error::invalid(OP_MERGE, e))?;
    let mut out = empty_like(s, clusters.len());
    for (m, cl) in merged.iter().zip(&clusters) {
        if let [i] = cl[..] {
            push_copy(&mut out, s, i as usize);
            continue;
        }
        let floor = cl
            .iter()
            .flat_map(|&i| gs[i as usize].scale)
            .fold(f64::INFINITY, f64::min)
            .max(f64::MIN_POSITIVE);
        let alpha = m.opacity.clamp(OPACITY_EPS, 1.0 - OPACITY_EPS);
        let wsum: f64 = cl.iter().map(|&i| gs[i as usize].opacity).sum();
        out.means.push(m.mean.map(|v| v as f32));
        out.quats.push(m.quat.map(|v| v as f32));
        out.log_scales
            .push(m.scale.map(|v| v.max(floor).ln() as f32));
        out.opacity_logits.push((alpha / (1.0 - alpha)).ln() as f32);
        for j in 0..k3 {
            let acc: f64 = cl
                .iter()
                .map(|&i| gs[i as usize].opacity * f64::from(s.sh[i as usize * k3 + j]))
                .sum();
            out.sh.push((acc / wsum) as f32);
        }
    }
    Ok((out, clusters))
}

// ---------------------------------------------------------------------------------------------
// Workload balance
// ---------------------------------------------------------------------------------------------

/// A power-of-two histogram: bin 0 holds the value 0, bin `b ≥ 1` holds `[2^(b−1), 2^b)`.
/// `edges` has one more entry than `counts` (`0, 1, 2, 4, 8, …`): bin `b` is
/// `[edges[b], edges[b+1])`. An empty histogram has `edges = [0]` and no counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Histogram {
    /// Bin edges, `counts.len() + 1` of them.
    pub edges: Vec<u64>,
    /// Number of values in each bin.
    pub counts: Vec<u64>,
}

impl Default for Histogram {
    /// The empty histogram: `edges = [0]`, no counts.
    fn default() -> Self {
        Histogram {
            edges: vec![0],
            counts: Vec::new(),
        }
    }
}

impl Histogram {
    /// The bin of a value: 0 for 0, else `⌊log₂ v⌋ + 1`.
    pub fn bin_of(v: u32) -> usize {
        (u32::BITS - v.leading_zeros()) as usize
    }

    /// The lower edge of bin `b`: 0, 1, 2, 4, …, `2^(b−1)`; saturates at `u64::MAX` for
    /// `b > 64`.
    pub fn edge(b: usize) -> u64 {
        match b {
            0 => 0,
            _ => u32::try_from(b - 1)
                .ok()
                .and_then(|sh| 1u64.checked_shl(sh))
                .unwrap_or(u64::MAX),
        }
    }

    /// The histogram of `values`, with bins up to the largest value's.
    pub fn from_values(values: impl IntoIterator<Item = u32>) -> Histogram {
        let mut counts: Vec<u64> = Vec::new();
        for v in values {
            let b = Self::bin_of(v);
            if b >= counts.len() {
                counts.resize(b + 1, 0);
            }
            counts[b] += 1;
        }
        Self::with_counts(counts)
    }

    fn with_counts(counts: Vec<u64>) -> Histogram {
        Histogram {
            edges: (0..=counts.len()).map(Self::edge).collect(),
            counts,
        }
    }

    /// The number of values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts bin by bin (extending to the longer one).
    pub fn add(&mut self, other: &Histogram) {
        let mut counts = std::mem::take(&mut self.counts);
        if other.counts.len() > counts.len() {
            counts.resize(other.counts.len(), 0);
        }
        for (c, o) in counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        *self = Self::with_counts(counts);
    }
}

/// The per-pixel and per-tile workload of a render (see the module docs).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Balance {
    /// Histogram of contributors per pixel.
    pub per_pixel: Histogram,
    /// Histogram of Gaussians per tile.
    pub per_tile: Histogram,
    /// Largest per-pixel contributor count.
    pub pixel_max: u32,
    /// Mean contributors per pixel.
    pub pixel_mean: f64,
    /// `pixel_max / pixel_mean` (0 when the mean is 0).
    pub pixel_ratio: f64,
    /// Largest per-tile Gaussian count.
    pub tile_max: u32,
    /// Mean Gaussians per tile.
    pub tile_mean: f64,
    /// `tile_max / tile_mean` (0 when the mean is 0).
    pub tile_ratio: f64,
}

fn ratio(max: u32, mean: f64) -> f64 {
    if mean > 0.0 {
        f64::from(max) / mean
    } else {
        0.0
    }
}

/// Max and mean of the values.
fn max_mean(values: impl Iterator<Item = u32>) -> (u32, f64) {
    let (mut max, mut sum, mut n) = (0u32, 0u64, 0u64);
    for v in values {
        max = max.max(v);
        sum += u64::from(v);
        n += 1;
    }
    let mean = if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    (max, mean)
}

impl Balance {
    /// Combines several views' balances: histograms summed, maxima of the maxima, means
    /// weighted by each view's pixel / tile count, ratios recomputed. No views give the
    /// all-zero `Balance` with empty histograms.
    pub fn combine(views: &[Balance]) -> Balance {
        let mut out = Balance::default();
        let (mut psum, mut tsum) = (0.0, 0.0);
        for v in views {
            out.per_pixel.add(&v.per_pixel);
            out.per_tile.add(&v.per_tile);
            out.pixel_max = out.pixel_max.max(v.pixel_max);
            out.tile_max = out.tile_max.max(v.tile_max);
            psum += v.pixel_mean * v.per_pixel.total() as f64;
            tsum += v.tile_mean * v.per_tile.total() as f64;
        }
        let (np, nt) = (out.per_pixel.total(), out.per_tile.total());
        out.pixel_mean = if np == 0 { 0.0 } else { psum / np as f64 };
        out.tile_mean = if nt == 0 { 0.0 } else { tsum / nt as f64 };
        out.pixel_ratio = ratio(out.pixel_max, out.pixel_mean);
        out.tile_ratio = ratio(out.tile_max, out.tile_mean);
        out
    }
}

/// The workload balance of one render: `n_contrib` `[H·W]` contributors per pixel (the
/// renderer's output), `tile_ranges` `[tiles·2]` the `start, end` of each tile's range from
/// binning, with `tiles = ⌈W/tile⌉·⌈H/tile⌉`.
///
/// Errors (op `gs.balance`): a zero width, height or tile size, `n_contrib` not `W·H` long,
/// `tile_ranges` not `2·tiles` long, a range with `start > end`.
pub fn balance(
    n_contrib: &[u32],
    tile_ranges: &[u32],
    width: u32,
    height: u32,
    tile: u32,
) -> Result<Balance> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(
            OP_BALANCE,
            format!("the image is empty ({width}x{height})"),
        ));
    }
    if tile == 0 {
        return Err(Error::invalid(OP_BALANCE, "the tile size is 0"));
    }
    let pixels = u64::from(width) * u64::from(height);
    if n_contrib.len() as u64 != pixels {
        return Err(Error::invalid(
            OP_BALANCE,
            format!(
                "n_contrib has {} entries, expected {width}·{height} = {pixels}",
                n_contrib.len()
            ),
        ));
    }
    let (tx, ty) = (width.div_ceil(tile), height.div_ceil(tile));
    let tiles = u64::from(tx) * u64::from(ty);
    if tile_ranges.len() as u64 != 2 * tiles {
        return Err(Error::invalid(
            OP_BALANCE,
            format!(
                "tile_ranges has {} entries, expected 2·{tx}·{ty} = {} (start, end per tile)",
                tile_ranges.len(),
                2 * tiles
            ),
        ));
    }
    let mut per_tile = Vec::with_capacity(tile_ranges.len() / 2);
    for (t, r) in tile_ranges.chunks_exact(2).enumerate() {
        let Some(c) = r[1].checked_sub(r[0]) else {
            return Err(Error::invalid(
                OP_BALANCE,
                format!("tile {t} has start {} > end {}", r[0], r[1]),
            ));
        };
        per_tile.push(c);
    }
    let (pixel_max, pixel_mean) = max_mean(n_contrib.iter().copied());
    let (tile_max, tile_mean) = max_mean(per_tile.iter().copied());
    Ok(Balance {
        per_pixel: Histogram::from_values(n_contrib.iter().copied()),
        per_tile: Histogram::from_values(per_tile),
        pixel_max,
        pixel_mean,
        pixel_ratio: ratio(pixel_max, pixel_mean),
        tile_max,
        tile_mean,
        tile_ratio: ratio(tile_max, tile_mean),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn logit(a: f64) -> f32 {
        (a / (1.0 - a)).ln() as f32
    }

    /// Degree-0 splats from (mean, scale (linear, isotropic), opacity).
    fn splats(gs: &[([f32; 3], f64, f64)]) -> Splats {
        Splats {
            means: gs.iter().map(|g| g.0).collect(),
            quats: vec![[1.0, 0.0, 0.0, 0.0]; gs.len()],
            log_scales: gs.iter().map(|g| [g.1.ln() as f32; 3]).collect(),
            opacity_logits: gs.iter().map(|g| logit(g.2)).collect(),
            sh: (0..gs.len() * 3).map(|j| j as f32 * 0.1).collect(),
            degree: 0,
        }
    }

    fn msg(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn grad_stats_hand_computed() {
        let mut st = GradStats::new(3);
        // View 1, 200x100: Gaussian 0 gradient (3e-6, 8e-6) px → NDC (3e-6·100, 8e-6·50) =
        // (3e-4, 4e-4), norm 5e-4. Gaussian 1 visible with zero gradient. Gaussian 2 invisible.
        st.accumulate(&[3e-6, 8e-6, 0.0, 0.0, 1.0, 1.0], &[4, 7, 0], 200, 100)
            .unwrap();
        // View 2: Gaussian 0 visible, zero gradient, radius 2; Gaussian 1 invisible.
        st.accumulate(&[0.0; 6], &[2, 0, -1], 200, 100).unwrap();
        assert_eq!(st.count, vec![2, 1, 0]);
        assert_eq!(st.max_radius, vec![4, 7, 0]);
        let m = st.mean();
        assert!((m[0] - 2.5e-4).abs() < 1e-10, "{m:?}");
        assert_eq!(&m[1..], &[0.0, 0.0]);
        assert_eq!(st.len(), 3);
        // Errors leave the statistics unchanged.
        let before = st.clone();
        let e = st.accumulate(&[0.0; 4], &[1, 1, 1], 200, 100).unwrap_err();
        assert!(msg(e).contains("gs.densify: v_means2d has 4 entries"));
        let e = st.accumulate(&[0.0; 6], &[1, 1], 200, 100).unwrap_err();
        assert!(msg(e).contains("radii has 2 entries"));
        let e = st
            .accumulate(&[0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0], &[1, 1, 1], 200, 100)
            .unwrap_err();
        assert!(msg(e).contains("v_means2d[1][1] = NaN is not finite"));
        let e = st.accumulate(&[0.0; 6], &[1, 1, 1], 0, 100).unwrap_err();
        assert!(msg(e).contains("empty"));
        assert_eq!(st, before);
    }

    /// Extent 10, percent_dense 0.01: the clone/split limit is 0.1.
    /// 0: scale 0.05, gradient 1e-3 → clone. 1: scale 0.5, gradient 1e-3 → split.
    /// 2: scale 0.5, gradient 1e-4 < 2e-4 → kept. 3: never seen → kept.
    #[test]
    fn clone_split_keep_and_origins() {
        let s = splats(&[
            ([0.0, 0.0, 0.0], 0.05, 0.5),
            ([1.0, 2.0, 3.0], 0.5, 0.5),
            ([4.0, 0.0, 0.0], 0.5, 0.5),
            ([5.0, 0.0, 0.0], 0.5, 0.5),
        ]);
        let st = GradStats {
            sum: vec![2e-3, 1e-3, 1e-4, 0.0],
            count: vec![2, 1, 1, 0],
            max_radius: vec![3, 3, 3, 0],
        };
        let p = DensifyParams::default();
        let (out, org) = densify(&s, &st, 10.0, &p, 7).unwrap();
        use Origin::*;
        assert_eq!(
            org,
            vec![Kept(0), Kept(2), Kept(3), Clone(0), Split(1), Split(1)]
        );
        assert_eq!(out.len(), 6);
        assert_eq!(out.sh.len(), 18);
        // Kept and cloned rows are exact copies.
        for (o, src) in [(0, 0), (1, 2), (2, 3), (3, 0)] {
            assert_eq!(out.means[o], s.means[src]);
            assert_eq!(out.log_scales[o], s.log_scales[src]);
            assert_eq!(out.sh[o * 3..o * 3 + 3], s.sh[src * 3..src * 3 + 3]);
        }
        // Split rows: scale / 1.6, same quat, opacity, SH; means moved, different.
        for o in [4, 5] {
            let want = (0.5f64 / 1.6).ln();
            assert!(out.log_scales[o]
                .iter()
                .all(|&l| (f64::from(l) - want).abs() < 1e-6));
            assert_eq!(out.quats[o], s.quats[1]);
            assert_eq!(out.opacity_logits[o], s.opacity_logits[1]);
            assert_eq!(out.sh[o * 3..o * 3 + 3], s.sh[3..6]);
            assert_ne!(out.means[o], s.means[1]);
        }
        assert_ne!(out.means[4], out.means[5]);
        // Deterministic for a seed, different for another.
        let (again, _) = densify(&s, &st, 10.0, &p, 7).unwrap();
        assert_eq!(again, out);
        let (other, _) = densify(&s, &st, 10.0, &p, 8).unwrap();
        assert_ne!(other.means[4], out.means[4]);
        // A bigger extent (100: limit 1) turns the split into a clone.
        let (_, org) = densify(&s, &st, 100.0, &p, 7).unwrap();
        assert_eq!(
            org,
            vec![Kept(0), Kept(1), Kept(2), Kept(3), Clone(0), Clone(1)]
        );
        assert_eq!(org.iter().map(|o| o.source()).max(), Some(3));
    }

    #[test]
    fn prune_rules() {
        // sigmoid(−6) ≈ 0.00247 < 0.005 → pruned; sigmoid(−5) ≈ 0.00669 → kept.
        let mut s = splats(&[
            ([0.0; 3], 0.05, 0.5),
            ([1.0, 0.0, 0.0], 0.05, 0.5),
            ([2.0, 0.0, 0.0], 0.05, 0.5),
            ([3.0, 0.0, 0.0], 0.5, 0.5),
        ]);
        s.opacity_logits[0] = -6.0;
        s.opacity_logits[1] = -5.0;
        // 0 would be cloned and 3 split, but pruned Gaussians produce nothing.
        let st = GradStats {
            sum: vec![1.0, 0.0, 0.0, 1.0],
            count: vec![1, 1, 1, 1],
            max_radius: vec![5, 20, 21, 21],
        };
        let p = DensifyParams::default();
        let (out, org) = densify(&s, &st, 10.0, &p, 0).unwrap();
        use Origin::*;
        assert_eq!(org, vec![Kept(1), Kept(2), Split(3), Split(3)]);
        assert_eq!(out.opacity_logits[0], -5.0);
        // Screen radius > 20 prunes 2 and 3 (20 itself is kept).
        let p = DensifyParams {
            max_screen_radius: Some(20),
            ..p
        };
        let (out, org) = densify(&s, &st, 10.0, &p, 0).unwrap();
        assert_eq!(org, vec![Kept(1)]);
        assert_eq!(out.means, vec![[1.0, 0.0, 0.0]]);
    }

    /// 45° about z (q = (cos 22.5°, 0, 0, sin 22.5°), here scaled by 2: not unit), scales
    /// (2, 1, 0.5): Σ = R diag(4, 1, 0.25) Rᵀ has Σxx = Σyy = (4 + 1)/2 = 2.5,
    /// Σxy = (4 − 1)/2 = 1.5, Σzz = 0.25, Σxz = Σyz = 0.
    ///
    /// 20000 seeds give 40000 samples. The empirical mean's standard error is √(Σkk/n) ≤ 0.008
    /// and a covariance entry's √((ΣiiΣjj + Σij²)/n) ≤ 0.018; the checks allow 5 of those
    /// (0.04 and 0.09), so with the fixed seeds the test is deterministic and a correct sampler
    /// passes with a wide margin, while a wrong rotation or scale (an error ≥ 0.5) fails.
    #[test]
    fn split_samples_follow_the_gaussian() {
        let h = std::f64::consts::FRAC_PI_8;
        let mu = [1.0, -2.0, 3.0];
        let s = Splats {
            means: vec![[1.0, -2.0, 3.0]],
            quats: vec![[2.0 * h.cos() as f32, 0.0, 0.0, 2.0 * h.sin() as f32]],
            log_scales: vec![[2f32.ln(), 0.0, 0.5f32.ln()]],
            opacity_logits: vec![0.0],
            sh: vec![0.0; 3],
            degree: 0,
        };
        let st = GradStats {
            sum: vec![1.0],
            count: vec![1],
            max_radius: vec![1],
        };
        let p = DensifyParams::default();
        let mut xs: Vec<[f64; 3]> = Vec::new();
        for seed in 0..20_000u64 {
            let (out, _) = densify(&s, &st, 1.0, &p, seed).unwrap();
            xs.extend(out.means.iter().map(|m| m.map(f64::from)));
        }
        let n = xs.len() as f64;
        let mut m = [0.0; 3];
        for x in &xs {
            for k in 0..3 {
                m[k] += x[k] / n;
            }
        }
        let mut c = [[0.0; 3]; 3];
        for x in &xs {
            for i in 0..3 {
                for j in 0..3 {
                    c[i][j] += (x[i] - m[i]) * (x[j] - m[j]) / n;
                }
            }
        }
        for k in 0..3 {
            assert!((m[k] - mu[k]).abs() < 0.04, "mean {m:?}");
        }
        let want = [[2.5, 1.5, 0.0], [1.5, 2.5, 0.0], [0.0, 0.0, 0.25]];
        for i in 0..3 {
            for j in 0..3 {
                assert!((c[i][j] - want[i][j]).abs() < 0.09, "cov {c:?}");
            }
        }
        // The per-Gaussian streams: many copies in one call also have the right spread.
        let many = Splats {
            means: vec![s.means[0]; 5000],
            quats: vec![s.quats[0]; 5000],
            log_scales: vec![s.log_scales[0]; 5000],
            opacity_logits: vec![0.0; 5000],
            sh: vec![0.0; 15000],
            degree: 0,
        };
        let st = GradStats {
            sum: vec![1.0; 5000],
            count: vec![1; 5000],
            max_radius: vec![1; 5000],
        };
        let (out, _) = densify(&many, &st, 1.0, &p, 42).unwrap();
        let n = out.len() as f64;
        let vz: f64 = out
            .means
            .iter()
            .map(|m| (f64::from(m[2]) - 3.0).powi(2) / n)
            .sum();
        // Var z = 0.25, standard error 0.25·√(2/10000) ≈ 0.0035.
        assert!((vz - 0.25).abs() < 0.02, "{vz}");
    }

    #[test]
    fn densify_errors() {
        let s = splats(&[([0.0; 3], 0.05, 0.5)]);
        let st = GradStats::new(1);
        let p = DensifyParams::default();
        let err = |s: &Splats, st: &GradStats, e: f64, p: &DensifyParams| {
            msg(densify(s, st, e, p, 0).unwrap_err())
        };
        assert!(err(&s, &GradStats::new(2), 1.0, &p)
            .contains("gs.densify: GradStats has 2 entries for 1 Gaussians"));
        let mut bad = st.clone();
        bad.count.push(0);
        assert!(err(&s, &bad, 1.0, &p).contains("GradStats lengths differ"));
        let mut bad = st.clone();
        bad.sum[0] = f64::INFINITY;
        bad.count[0] = 1;
        assert!(err(&s, &bad, 1.0, &p).contains("mean gradient of Gaussian 0"));
        for e in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(err(&s, &st, e, &p).contains("scene_extent"));
        }
        for (q, what) in [
            (
                DensifyParams {
                    grad_threshold: -1.0,
                    ..p
                },
                "grad_threshold",
            ),
            (
                DensifyParams {
                    split_factor: 1.0,
                    ..p
                },
                "split_factor",
            ),
            (
                DensifyParams {
                    percent_dense: f64::NAN,
                    ..p
                },
                "percent_dense",
            ),
            (
                DensifyParams {
                    min_opacity: 1.5,
                    ..p
                },
                "min_opacity",
            ),
            (
                DensifyParams {
                    max_screen_radius: Some(-1),
                    ..p
                },
                "max_screen_radius",
            ),
        ] {
            assert!(err(&s, &st, 1.0, &q).contains(what), "{what}");
        }
        let mut b = s.clone();
        b.means[0][1] = f32::NAN;
        assert!(err(&b, &st, 1.0, &p).contains("Gaussian 0: means is not finite"));
        let mut b = s.clone();
        b.quats[0] = [0.0; 4];
        assert!(err(&b, &st, 1.0, &p).contains("zero quaternion"));
        let mut b = s.clone();
        b.sh.push(0.0);
        assert!(err(&b, &st, 1.0, &p).contains("sh has 4 entries, expected 3"));
        let mut b = s.clone();
        b.opacity_logits.clear();
        assert!(err(&b, &st, 1.0, &p).contains("opacity_logits has 0 entries"));
        let mut b = s.clone();
        b.degree = 4;
        assert!(err(&b, &st, 1.0, &p).contains("degree 4"));
        // A split sample overflowing f32.
        let mut b = s.clone();
        b.log_scales[0] = [100.0; 3];
        let st1 = GradStats {
            sum: vec![1.0],
            count: vec![1],
            max_radius: vec![1],
        };
        assert!(err(&b, &st1, 1.0, &p).contains("split sample of Gaussian 0"));
        // Empty input is fine.
        let e = splats(&[]);
        let (out, org) = densify(&e, &GradStats::new(0), 1.0, &p, 0).unwrap();
        assert!(out.is_empty() && org.is_empty());
    }

    fn cov_of(s: &Splats, i: usize) -> [[f64; 3]; 3] {
        merge::covariance(&merge::Gaussian {
            mean: [0.0; 3],
            quat: s.quats[i].map(f64::from),
            scale: s.log_scales[i].map(|l| f64::from(l).exp()),
            opacity: 0.5,
            color: [0.0; 3],
        })
    }

    #[test]
    fn merge_two_identical() {
        // A rotated anisotropic Gaussian, α = 0.3, twice: one output, α = 1 − 0.7² = 0.51,
        // the same mean, covariance and SH.
        let mut s = splats(&[([1.0, 2.0, 3.0], 1.0, 0.3), ([1.0, 2.0, 3.0], 1.0, 0.3)]);
        for i in 0..2 {
            s.quats[i] = [0.9, 0.1, -0.3, 0.2];
            s.log_scales[i] = [0.1, -0.4, -1.0];
            s.sh[i * 3..i * 3 + 3].copy_from_slice(&[0.2, -0.1, 0.4]);
        }
        let (out, cl) = merge_splats(&s, &SimilarityParams::default(), 1.0).unwrap();
        assert_eq!(cl, vec![vec![0, 1]]);
        assert_eq!(out.len(), 1);
        let a = sigmoid(f64::from(out.opacity_logits[0]));
        assert!((a - 0.51).abs() < 1e-7, "{a}");
        assert_eq!(out.means[0], [1.0, 2.0, 3.0]);
        for (x, y) in out.sh.iter().zip([0.2, -0.1, 0.4]) {
            assert!((x - y).abs() < 1e-7);
        }
        let (c0, c1) = (cov_of(&s, 0), cov_of(&out, 0));
        for i in 0..3 {
            for j in 0..3 {
                assert!((c0[i][j] - c1[i][j]).abs() < 1e-6, "{c0:?} {c1:?}");
            }
        }
        // Scales come out descending (sorted), unit quaternion with w ≥ 0.
        let l = out.log_scales[0];
        assert!(
            (l[0] - 0.1).abs() < 1e-6 && (l[1] + 0.4).abs() < 1e-6 && (l[2] + 1.0).abs() < 1e-6
        );
        assert!(out.quats[0][0] >= 0.0);
    }

    /// Degree 1 (K = 4): α = 0.75 and 0.25 (logits ±ln 3), so weights 3/4 and 1/4. A's SH are
    /// all 1.0, B's all 0.2 except a DC of 1.0 on each channel (so the colours match);
    /// merged: 0.75·1 + 0.25·0.2 = 0.8 on the higher orders, 1.0 on the DC. Means 0 and 0.4
    /// along x (scale 1): merged x = 0.25·0.4 = 0.1. α = 1 − 0.25·0.75 = 0.8125.
    #[test]
    fn merge_averages_sh() {
        let mut sh = vec![1.0f32; 12];
        sh.extend_from_slice(&[1.0, 1.0, 1.0]);
        sh.extend_from_slice(&[0.2f32; 9]);
        let s = Splats {
            means: vec![[0.0; 3], [0.4, 0.0, 0.0], [9.0, 0.0, 0.0]],
            quats: vec![[1.0, 0.0, 0.0, 0.0]; 3],
            log_scales: vec![[0.0; 3]; 3],
            opacity_logits: vec![3f32.ln(), -(3f32.ln()), 0.0],
            sh: [sh, vec![0.5f32; 12]].concat(),
            degree: 1,
        };
        let (out, cl) = merge_splats(&s, &SimilarityParams::default(), 1.0).unwrap();
        assert_eq!(cl, vec![vec![0, 1], vec![2]]);
        assert_eq!(out.degree, 1);
        for (j, &v) in out.sh[..12].iter().enumerate() {
            let want = if j < 3 { 1.0 } else { 0.8 };
            assert!((v - want).abs() < 1e-6, "coefficient {j}: {v}");
        }
        assert!((out.means[0][0] - 0.1).abs() < 1e-7);
        let a = sigmoid(f64::from(out.opacity_logits[0]));
        assert!((a - 0.8125).abs() < 1e-6);
        // The singleton is copied bit for bit.
        assert_eq!(out.means[1], s.means[2]);
        assert_eq!(out.sh[12..], s.sh[24..]);
        assert_eq!(out.opacity_logits[1], 0.0);
        // A colour difference of 0.5 in RGB (DC difference 0.5/C0) blocks the merge.
        let mut t = s.clone();
        t.sh[12] += (0.5 / SH_C0) as f32;
        let (_, cl) = merge_splats(&t, &SimilarityParams::default(), 1.0).unwrap();
        assert_eq!(cl, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn merge_errors() {
        let s = splats(&[([0.0; 3], 1.0, 0.5)]);
        let p = SimilarityParams::default();
        let e = msg(merge_splats(&s, &p, 0.0).unwrap_err());
        assert!(
            e.starts_with("gs.merge: ") && e.contains("cell size"),
            "{e}"
        );
        let q = SimilarityParams {
            threshold: 1.0,
            ..p
        };
        assert!(msg(merge_splats(&s, &q, 1.0).unwrap_err()).contains("threshold"));
        let mut b = s.clone();
        b.quats[0] = [0.0; 4];
        assert!(msg(merge_splats(&b, &p, 1.0).unwrap_err())
            .contains("gs.merge: Gaussian 0 has a zero quaternion"));
        let mut b = s.clone();
        b.sh[2] = f32::INFINITY;
        assert!(msg(merge_splats(&b, &p, 1.0).unwrap_err()).contains("sh is not finite"));
        let mut b = s.clone();
        b.log_scales[0] = [1000.0; 3];
        assert!(msg(merge_splats(&b, &p, 1.0).unwrap_err()).contains("non-finite"));
        let (out, cl) = merge_splats(&splats(&[]), &p, 1.0).unwrap();
        assert!(out.is_empty() && cl.is_empty());
    }

    /// Hand-made 32×16 render, 16-pixel tiles → 2×1 tiles. Left tile: rows 0–7 have 0
    /// contributors, rows 8–15 have 3; right tile: 1 everywhere except one pixel with 9.
    /// Pixels: 128 × 0, 128 × 3, 255 × 1, 1 × 9 → bins [0,1) 128, [1,2) 255, [2,4) 128,
    /// [4,8) 0, [8,16) 1. Sum 384 + 255 + 9 = 648, mean 648/512 = 1.265625, ratio 9/1.265625.
    /// Tiles: ranges [0, 5) and [5, 12) → 5 and 7, both in [4, 8); mean 6, ratio 7/6.
    #[test]
    fn balance_hand_computed() {
        let mut nc = vec![0u32; 32 * 16];
        for y in 0..16 {
            for x in 0..32 {
                nc[y * 32 + x] = if x >= 16 {
                    1
                } else if y >= 8 {
                    3
                } else {
                    0
                };
            }
        }
        nc[5 * 32 + 20] = 9;
        let b = balance(&nc, &[0, 5, 5, 12], 32, 16, 16).unwrap();
        assert_eq!(b.per_pixel.edges, vec![0, 1, 2, 4, 8, 16]);
        assert_eq!(b.per_pixel.counts, vec![128, 255, 128, 0, 1]);
        assert_eq!(b.pixel_max, 9);
        assert_eq!(b.pixel_mean, 1.265625);
        assert!((b.pixel_ratio - 9.0 / 1.265625).abs() < 1e-15);
        assert_eq!(b.per_tile.edges, vec![0, 1, 2, 4, 8]);
        assert_eq!(b.per_tile.counts, vec![0, 0, 0, 2]);
        assert_eq!((b.tile_max, b.tile_mean), (7, 6.0));
        assert!((b.tile_ratio - 7.0 / 6.0).abs() < 1e-15);
        // Combined with an empty render of the same size: counts add, means halve.
        let z = balance(&[0; 512], &[0, 0, 0, 0], 32, 16, 16).unwrap();
        assert_eq!((z.pixel_ratio, z.tile_ratio), (0.0, 0.0));
        assert_eq!(z.per_pixel.counts, vec![512]);
        assert_eq!(z.per_pixel.edges, vec![0, 1]);
        let c = Balance::combine(&[b.clone(), z]);
        assert_eq!(c.per_pixel.counts, vec![640, 255, 128, 0, 1]);
        assert_eq!(c.per_tile.counts, vec![2, 0, 0, 2]);
        assert_eq!(c.pixel_mean, 1.265625 / 2.0);
        assert_eq!((c.tile_max, c.tile_mean), (7, 3.0));
        assert!((c.tile_ratio - 7.0 / 3.0).abs() < 1e-15);
        assert_eq!(Balance::combine(std::slice::from_ref(&b)), b);
        assert_eq!(Balance::combine(&[]), Balance::default());
        // Partial tiles: 17×1 with tile 16 is 2×1 tiles.
        let p = balance(&[1; 17], &[0, 1, 1, 3], 17, 1, 16).unwrap();
        assert_eq!(p.per_tile.counts, vec![0, 1, 1]);
        assert_eq!(Histogram::bin_of(u32::MAX), 32);
        assert_eq!(
            (Histogram::edge(64), Histogram::edge(65)),
            (1 << 63, u64::MAX)
        );
        assert_eq!(Histogram::from_values([u32::MAX]).edges[33], 1 << 32);
    }

    #[test]
    fn balance_errors() {
        let e = |r: Result<Balance>| msg(r.unwrap_err());
        assert!(e(balance(&[], &[], 0, 16, 16)).contains("gs.balance: the image is empty"));
        assert!(e(balance(&[0; 512], &[0; 4], 32, 16, 0)).contains("tile size"));
        assert!(e(balance(&[0; 511], &[0; 4], 32, 16, 16))
            .contains("n_contrib has 511 entries, expected 32·16 = 512"));
        assert!(e(balance(&[0; 512], &[0; 2], 32, 16, 16))
            .contains("tile_ranges has 2 entries, expected 2·2·1 = 4"));
        assert!(
            e(balance(&[0; 512], &[0, 3, 3, 2], 32, 16, 16)).contains("tile 1 has start 3 > end 2")
        );
    }

    /// Up to 24 degree-1 splats in the unit cube, opacity logits in [−6, 6], small SH.
    fn arb_splats() -> impl Strategy<Value = Splats> {
        let one = (
            prop::array::uniform3(-1.0f32..1.0),
            prop::array::uniform4(0.2f32..1.0),
            prop::array::uniform3(-0.5f32..0.5),
            -6.0f32..6.0,
            prop::array::uniform12(-0.1f32..0.1),
        );
        prop::collection::vec(one, 0..24).prop_map(|gs| Splats {
            means: gs.iter().map(|g| g.0).collect(),
            quats: gs.iter().map(|g| g.1).collect(),
            log_scales: gs.iter().map(|g| g.2).collect(),
            opacity_logits: gs.iter().map(|g| g.3).collect(),
            sh: gs.iter().flat_map(|g| g.4).collect(),
            degree: 1,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Merging conserves the opacity mass, Π(1 − α) over inputs = Π over outputs (up to the
        /// f32 logit rounding: relative error ≤ α·|Δlogit| ≈ 6·6e-8 per Gaussian), and every
        /// merged Gaussian sits at the opacity-weighted mean of its pair, its SH the weighted
        /// mean of theirs.
        #[test]
        fn merge_conserves_opacity_mass(s in arb_splats(), cell in 0.5f64..3.0) {
            let p = SimilarityParams { pos_scale: 2.0, scale_tol: 1.0, color_tol: 0.5, threshold: 0.2 };
            let (out, cl) = merge_splats(&s, &p, cell).unwrap();
            prop_assert_eq!(out.len(), cl.len());
            prop_assert_eq!(out.sh.len(), out.len() * 12);
            let alpha = |t: &Splats, i: usize| sigmoid(f64::from(t.opacity_logits[i]));
            let lin: f64 = (0..s.len()).map(|i| (1.0 - alpha(&s, i)).ln()).sum();
            let lout: f64 = (0..out.len()).map(|i| (1.0 - alpha(&out, i)).ln()).sum();
            prop_assert!((lin - lout).abs() < 1e-6 * (s.len() as f64 + 1.0), "{} vs {}", lin, lout);
            let mut seen = vec![0; s.len()];
            for (o, c) in cl.iter().enumerate() {
                for &i in c { seen[i as usize] += 1; }
                let w: f64 = c.iter().map(|&i| alpha(&s, i as usize)).sum();
                for k in 0..3 {
                    let wm: f64 = c.iter().map(|&i| alpha(&s, i as usize) * f64::from(s.means[i as usize][k])).sum();
                    prop_assert!((f64::from(out.means[o][k]) - wm / w).abs() < 1e-6);
                }
                for j in 0..12 {
                    let ws: f64 = c.iter().map(|&i| alpha(&s, i as usize) * f64::from(s.sh[i as usize * 12 + j])).sum();
                    prop_assert!((f64::from(out.sh[o * 12 + j]) - ws / w).abs() < 1e-7);
                }
                prop_assert!(out.log_scales[o].iter().all(|l| l.is_finite()));
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
