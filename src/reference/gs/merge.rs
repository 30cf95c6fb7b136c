//! Similarity merging of 3D Gaussians (BalanceGS's density control in dense regions), in f64.
//!
//! # The merge rule
//!
//! BalanceGS does not publish its merge formula; this is the standard opacity-weighted moment
//! match (PAPERS.md). For Gaussians `i` with opacity `α_i`, mean `μ_i`, covariance `Σ_i` and
//! colour `c_i`, with weights `w_i = α_i` and `W = Σ w_i`:
//!
//! - `μ = Σ w_i μ_i / W`
//! - `Σ = Σ w_i [Σ_i + (μ_i − μ)(μ_i − μ)ᵀ] / W`
//! - `α = 1 − Π (1 − α_i)` (computed as `−expm1(Σ ln1p(−α_i))`)
//! - `c = Σ w_i c_i / W`
//!
//! The merged covariance is re-decomposed (`decompose`, a Jacobi eigen-decomposition) into a
//! rotation and per-axis scales, so the merged Gaussian is again a `(quat, scale)` pair with
//! `covariance(merged) = Σ` up to rounding. Its scales come out in descending order and its
//! quaternion is unit with `w ≥ 0`.
//!
//! # The similarity
//!
//! For Gaussians `a`, `b` and `SimilarityParams { pos_scale, scale_tol, color_tol, threshold }`:
//!
//! ```text
//! s̄    = (mean(a.scale) + mean(b.scale)) / 2            (the pair's mean linear scale)
//! d_μ  = |μ_a − μ_b| / (pos_scale · s̄)
//! d_s  = |sort↓(ln a.scale) − sort↓(ln b.scale)| / scale_tol   (Euclidean over the 3 axes)
//! d_c  = |c_a − c_b| / color_tol
//! similarity = exp(−(d_μ² + d_s² + d_c²))  ∈ [0, 1]
//! ```
//!
//! The scales are compared after sorting each triple (largest first), so the order in which a
//! Gaussian lists its axes does not matter; orientation is not compared. A scale of 0 is clamped
//! to the smallest positive `f64` before the log. A pair is merged when `similarity > threshold`
//! (strictly).
//!
//! # Greedy pairing
//!
//! `merge_similar` finds candidates with a spatial hash grid of cell size `h`: the neighbours of
//! `i` are the Gaussians whose means lie within distance `h` (inclusive) of `μ_i`. It visits the
//! Gaussians in index order; an unvisited Gaussian pairs with its most similar unvisited
//! neighbour whose similarity is above the threshold (ties to the lower index), and both are
//! marked; otherwise it stays alone. So the outputs are pairs and singletons, in order of their
//! lowest member index, and a pair whose means are further apart than `h` is never merged.
//! Run it again on its output to merge further.

use std::collections::HashMap;

/// One 3D Gaussian with activated parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    /// Centre.
    pub mean: [f64; 3],
    /// Rotation `[w, x, y, z]`; need not be unit (it is normalised where used).
    pub quat: [f64; 4],
    /// Linear per-axis standard deviations (non-negative).
    pub scale: [f64; 3],
    /// Opacity in `(0, 1]` (after the sigmoid).
    pub opacity: f64,
    /// Colour (RGB, or the degree-0 SH coefficient: any linear colour space).
    pub color: [f64; 3],
}

type Mat3 = [[f64; 3]; 3];

/// The unit quaternion along `q` (scaled by its largest entry first, so huge or tiny entries do
/// not overflow), or `None` for a zero or non-finite one.
fn normalized(q: &[f64; 4]) -> Option<[f64; 4]> {
    let m = q.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if !(m > 0.0 && m.is_finite()) {
        return None;
    }
    let s = q.map(|v| v / m);
    let n = (s[0] * s[0] + s[1] * s[1] + s[2] * s[2] + s[3] * s[3]).sqrt();
    Some(s.map(|v| v / n))
}

/// The rotation matrix of a `[w, x, y, z]` quaternion, normalised first (a zero or non-finite
/// quaternion gives the identity).
fn rotation(q: &[f64; 4]) -> Mat3 {
    let [w, x, y, z] = normalized(q).unwrap_or([1.0, 0.0, 0.0, 0.0]);
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

/// The covariance `R S Sᵀ Rᵀ` of a Gaussian, with `R` the rotation of its normalised quaternion
/// (the identity for a zero quaternion) and `S = diag(scale)`.
pub fn covariance(g: &Gaussian) -> [[f64; 3]; 3] {
    let r = rotation(&g.quat);
    let s2 = [
        g.scale[0] * g.scale[0],
        g.scale[1] * g.scale[1],
        g.scale[2] * g.scale[2],
    ];
    let mut c = [[0.0; 3]; 3];
    for (i, row) in c.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| r[i][k] * s2[k] * r[j][k]).sum();
        }
    }
    c
}

fn det3(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// The unit quaternion `[w, x, y, z]` (with `w ≥ 0`) of a proper rotation matrix.
fn quat_of(r: &Mat3) -> [f64; 4] {
    let tr = r[0][0] + r[1][1] + r[2][2];
    let q = if tr > 0.0 {
        let s = (tr + 1.0).sqrt() * 2.0;
        [
            s / 4.0,
            (r[2][1] - r[1][2]) / s,
            (r[0][2] - r[2][0]) / s,
            (r[1][0] - r[0][1]) / s,
        ]
    } else if r[0][0] >= r[1][1] && r[0][0] >= r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).max(0.0).sqrt() * 2.0;
        [
            (r[2][1] - r[1][2]) / s,
            s / 4.0,
            (r[0][1] + r[1][0]) / s,
            (r[0][2] + r[2][0]) / s,
        ]
    } else if r[1][1] >= r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).max(0.0).sqrt() * 2.0;
        [
            (r[0][2] - r[2][0]) / s,
            (r[0][1] + r[1][0]) / s,
            s / 4.0,
            (r[1][2] + r[2][1]) / s,
        ]
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).max(0.0).sqrt() * 2.0;
        [
            (r[1][0] - r[0][1]) / s,
            (r[0][2] + r[2][0]) / s,
            (r[1][2] + r[2][1]) / s,
            s / 4.0,
        ]
    };
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    let sign = if q[0] < 0.0 { -1.0 } else { 1.0 };
    [
        sign * q[0] / n,
        sign * q[1] / n,
        sign * q[2] / n,
        sign * q[3] / n,
    ]
}

/// Decomposes a symmetric positive semi-definite covariance into `(quat, scales)` with
/// `covariance(quat, scales) = cov`, by cyclic Jacobi eigen-decomposition.
///
/// The scales are the square roots of the eigenvalues, in descending order; the quaternion is
/// the rotation whose columns are the matching eigenvectors, made proper (det +1) by flipping the
/// last one if needed, returned unit with `w ≥ 0`. Eigenvalues slightly below zero from rounding
/// (down to `−1e-9 · max|cov|`) are clamped to zero. Errors for a non-finite entry, an asymmetric
/// matrix (an off-diagonal pair differing by more than `1e-9 · max|cov|`) or a clearly negative
/// eigenvalue.
pub fn decompose(cov: &[[f64; 3]; 3]) -> Result<([f64; 4], [f64; 3]), String> {
    if cov.iter().flatten().any(|v| !v.is_finite()) {
        return Err(format!("gs.decompose: non-finite covariance {cov:?}"));
    }
    let scale = cov.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    if scale == 0.0 {
        return Ok(([1.0, 0.0, 0.0, 0.0], [0.0; 3]));
    }
    let tol = 1e-9 * scale;
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        if (cov[i][j] - cov[j][i]).abs() > tol {
            return Err(format!(
                "gs.decompose: covariance is not symmetric: [{i}][{j}] = {} but [{j}][{i}] = {}",
                cov[i][j], cov[j][i]
            ));
        }
    }
    // Work on the symmetrised matrix divided by its largest entry (no overflow in the squares).
    let mut a = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            a[i][j] = 0.5 * (cov[i][j] + cov[j][i]) / scale;
        }
    }
    let mut v: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let mut converged = false;
    for _sweep in 0..64 {
        let off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
        if off <= 1e-34 {
            converged = true;
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            let apq = a[p][q];
            if apq == 0.0 {
                continue;
            }
            // Rotation J (J[p][p] = J[q][q] = c, J[p][q] = s, J[q][p] = −s) with Jᵀ A J zeroing
            // entry (p, q); t = tan of the angle, the smaller root.
            let theta = (a[q][q] - a[p][p]) / (2.0 * apq);
            let t = if theta.abs() > 1e150 {
                0.5 / theta
            } else {
                theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
            };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            let mut j: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
            j[p][p] = c;
            j[q][q] = c;
            j[p][q] = s;
            j[q][p] = -s;
            a = mul(&transpose(&j), &mul(&a, &j));
            a[p][q] = 0.0;
            a[q][p] = 0.0;
            v = mul(&v, &j);
        }
    }
    if !converged {
        let off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
        if off > 1e-24 {
            return Err(format!(
                "gs.decompose: Jacobi did not converge (off-diagonal {off:e}) for {cov:?}"
            ));
        }
    }
    let mut order = [0usize, 1, 2];
    order.sort_by(|&x, &y| a[y][y].total_cmp(&a[x][x]));
    let mut scales = [0.0; 3];
    let mut r: Mat3 = [[0.0; 3]; 3];
    for (col, &k) in order.iter().enumerate() {
        let lambda = a[k][k] * scale;
        if lambda < -tol {
            return Err(format!(
                "gs.decompose: covariance is not positive semi-definite (eigenvalue {lambda:e})"
            ));
        }
        scales[col] = lambda.max(0.0).sqrt();
        for (row, rrow) in r.iter_mut().enumerate() {
            rrow[col] = v[row][k];
        }
    }
    if det3(&r) < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
    }
    Ok((quat_of(&r), scales))
}

fn mul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0.0; 3]; 3];
    for (i, row) in c.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

fn transpose(a: &Mat3) -> Mat3 {
    let mut t = [[0.0; 3]; 3];
    for (i, row) in a.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            t[j][i] = *v;
        }
    }
    t
}

/// Checks that a Gaussian can be merged: finite everything, non-zero quaternion, non-negative
/// scales, opacity in `(0, 1]`.
fn validate(g: &Gaussian, i: usize) -> Result<(), String> {
    let finite = g
        .mean
        .iter()
        .chain(&g.quat)
        .chain(&g.scale)
        .chain(&g.color)
        .chain(std::iter::once(&g.opacity))
        .all(|v| v.is_finite());
    if !finite {
        return Err(format!("gaussian {i} has a non-finite parameter: {g:?}"));
    }
    if g.quat.iter().all(|&q| q == 0.0) {
        return Err(format!("gaussian {i} has a zero quaternion"));
    }
    if g.scale.iter().any(|&s| s < 0.0) {
        return Err(format!("gaussian {i} has a negative scale {:?}", g.scale));
    }
    if !(g.opacity > 0.0 && g.opacity <= 1.0) {
        return Err(format!(
            "gaussian {i} has opacity {} outside (0, 1]",
            g.opacity
        ));
    }
    Ok(())
}

/// Merges Gaussians into one by the opacity-weighted moment match of the module docs.
///
/// One Gaussian is returned unchanged except that its quaternion is normalised. Errors for an
/// empty slice or an invalid Gaussian (non-finite value, zero quaternion, negative scale,
/// opacity outside `(0, 1]`).
pub fn merge(gs: &[Gaussian]) -> Result<Gaussian, String> {
    if gs.is_empty() {
        return Err("gs.merge: no Gaussians to merge".to_string());
    }
    for (i, g) in gs.iter().enumerate() {
        validate(g, i).map_err(|e| format!("gs.merge: {e}"))?;
    }
    if let [g] = gs {
        // validate() rejected zero and non-finite quaternions, so this is always Some.
        let quat = normalized(&g.quat).unwrap_or([1.0, 0.0, 0.0, 0.0]);
        return Ok(Gaussian { quat, ..*g });
    }
    let wsum: f64 = gs.iter().map(|g| g.opacity).sum();
    let mut mean = [0.0; 3];
    let mut color = [0.0; 3];
    for g in gs {
        for k in 0..3 {
            mean[k] += g.opacity * g.mean[k];
            color[k] += g.opacity * g.color[k];
        }
    }
    for k in 0..3 {
        mean[k] /= wsum;
        color[k] /= wsum;
    }
    let mut cov = [[0.0; 3]; 3];
    for g in gs {
        let ci = covariance(g);
        let d = [
            g.mean[0] - mean[0],
            g.mean[1] - mean[1],
            g.mean[2] - mean[2],
        ];
        for i in 0..3 {
            for j in 0..3 {
                cov[i][j] += g.opacity * (ci[i][j] + d[i] * d[j]);
            }
        }
    }
    for row in cov.iter_mut() {
        for v in row.iter_mut() {
            *v /= wsum;
        }
    }
    let log_transmit: f64 = gs.iter().map(|g| (-g.opacity).ln_1p()).sum();
    let opacity = -log_transmit.exp_m1();
    let (quat, scale) = decompose(&cov).map_err(|e| format!("gs.merge: {e}"))?;
    Ok(Gaussian {
        mean,
        quat,
        scale,
        opacity,
        color,
    })
}

/// Parameters of `similarity` and `merge_similar` (see the module docs for the formula).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimilarityParams {
    /// Position distance unit, in multiples of the pair's mean linear scale (> 0).
    pub pos_scale: f64,
    /// Log-scale distance unit (> 0): `ln 2 ≈ 0.69` makes a factor-2 difference on one axis
    /// cost `e⁻¹`.
    pub scale_tol: f64,
    /// Colour distance unit (> 0).
    pub color_tol: f64,
    /// Merge when similarity is strictly above this, in `[0, 1)`.
    pub threshold: f64,
}

impl Default for SimilarityParams {
    /// `pos_scale 1, scale_tol ln 2, color_tol 0.1, threshold 0.5`.
    fn default() -> Self {
        SimilarityParams {
            pos_scale: 1.0,
            scale_tol: std::f64::consts::LN_2,
            color_tol: 0.1,
            threshold: 0.5,
        }
    }
}

impl SimilarityParams {
    fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("pos_scale", self.pos_scale),
            ("scale_tol", self.scale_tol),
            ("color_tol", self.color_tol),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(format!("{name} must be finite and > 0, got {v}"));
            }
        }
        if !(self.threshold >= 0.0 && self.threshold < 1.0) {
            return Err(format!(
                "threshold must be in [0, 1), got {}",
                self.threshold
            ));
        }
        Ok(())
    }
}

fn sorted_log_scales(s: &[f64; 3]) -> [f64; 3] {
    let mut l = s.map(|x| x.max(f64::MIN_POSITIVE).ln());
    l.sort_by(|a, b| b.total_cmp(a));
    l
}

/// The similarity of two Gaussians in `[0, 1]` (1 = identical position, sorted scales and
/// colour), as defined in the module docs. Assumes valid Gaussians and parameters
/// (`merge_similar` checks them); a NaN result is reported as 0.
pub fn similarity(a: &Gaussian, b: &Gaussian, p: &SimilarityParams) -> f64 {
    let mean_scale = (a.scale.iter().sum::<f64>() + b.scale.iter().sum::<f64>()) / 6.0;
    let dmu2: f64 = (0..3).map(|k| (a.mean[k] - b.mean[k]).powi(2)).sum();
    let unit = p.pos_scale * mean_scale;
    let pos = if dmu2 == 0.0 {
        0.0
    } else {
        dmu2 / (unit * unit)
    };
    let la = sorted_log_scales(&a.scale);
    let lb = sorted_log_scales(&b.scale);
    let ds2: f64 = (0..3).map(|k| (la[k] - lb[k]).powi(2)).sum();
    let dc2: f64 = (0..3).map(|k| (a.color[k] - b.color[k]).powi(2)).sum();
    let s = (-(pos + ds2 / (p.scale_tol * p.scale_tol) + dc2 / (p.color_tol * p.color_tol))).exp();
    if s.is_nan() {
        0.0
    } else {
        s
    }
}

/// A spatial hash grid over points with cubic cells of side `h`, answering "which points lie
/// within distance `h`" by scanning the 27 cells around a point.
#[derive(Debug, Clone)]
pub struct HashGrid {
    h: f64,
    points: Vec<[f64; 3]>,
    cells: HashMap<[i64; 3], Vec<u32>>,
}

impl HashGrid {
    fn cell_of(&self, p: &[f64; 3]) -> [i64; 3] {
        // `as` saturates; saturation only ever shrinks the difference between two cells, so two
        // points within `h` still land in adjacent (or equal) cells.
        p.map(|x| (x / self.h).floor() as i64)
    }

    /// Builds the grid. Errors for `h` not finite and positive, a non-finite point, or more than
    /// `u32::MAX` points.
    pub fn build(means: &[[f64; 3]], h: f64) -> Result<HashGrid, String> {
        if !(h > 0.0 && h.is_finite()) {
            return Err(format!(
                "gs.hash_grid: cell size must be finite and > 0, got {h}"
            ));
        }
        if u32::try_from(means.len()).is_err() {
            return Err(format!(
                "gs.hash_grid: {} points exceed the u32 index range",
                means.len()
            ));
        }
        if let Some(i) = means.iter().position(|m| m.iter().any(|v| !v.is_finite())) {
            return Err(format!(
                "gs.hash_grid: point {i} is not finite: {:?}",
                means[i]
            ));
        }
        let mut grid = HashGrid {
            h,
            points: means.to_vec(),
            cells: HashMap::new(),
        };
        for (i, m) in means.iter().enumerate() {
            let c = grid.cell_of(m);
            grid.cells.entry(c).or_default().push(i as u32);
        }
        Ok(grid)
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the grid holds no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The cell size `h`.
    pub fn cell_size(&self) -> f64 {
        self.h
    }

    /// The indices `j ≠ i` with `|p_j − p_i| ≤ h`, ascending. Empty for an out-of-range `i`.
    pub fn neighbours(&self, i: usize) -> Vec<u32> {
        let Some(p) = self.points.get(i) else {
            return Vec::new();
        };
        let mut out = self.within(p);
        out.retain(|&j| j as usize != i);
        out
    }

    /// The indices of all points within distance `h` of `p` (inclusive), ascending.
    pub fn within(&self, p: &[f64; 3]) -> Vec<u32> {
        let c = self.cell_of(p);
        let h2 = self.h * self.h;
        let mut out = Vec::new();
        let mut seen: Vec<[i64; 3]> = Vec::with_capacity(27);
        for dx in -1i64..=1 {
            for dy in -1i64..=1 {
                for dz in -1i64..=1 {
                    let key = [
                        c[0].saturating_add(dx),
                        c[1].saturating_add(dy),
                        c[2].saturating_add(dz),
                    ];
                    // Saturation can map two offsets to the same cell; visit each once.
                    if seen.contains(&key) {
                        continue;
                    }
                    seen.push(key);
                    let Some(list) = self.cells.get(&key) else {
                        continue;
                    };
                    for &j in list {
                        let q = &self.points[j as usize];
                        let d2: f64 = (0..3).map(|k| (q[k] - p[k]).powi(2)).sum();
                        if d2 <= h2 {
                            out.push(j);
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// Merges similar neighbouring Gaussians in pairs, by the deterministic greedy rule of the module
/// docs, with neighbours found in a hash grid of cell size `cell`.
///
/// Returns the output Gaussians and, for each, the ascending input indices merged into it
/// (singletons are copied unchanged). Every input appears in exactly one cluster; clusters are in
/// order of their lowest index. Errors for an invalid Gaussian (as `merge`), invalid parameters
/// or cell size.
#[allow(clippy::type_complexity)]
pub fn merge_similar(
    gs: &[Gaussian],
    p: &SimilarityParams,
    cell: f64,
) -> Result<(Vec<Gaussian>, Vec<Vec<u32>>), String> {
    p.validate().map_err(|e| format!("gs.merge_similar: {e}"))?;
    for (i, g) in gs.iter().enumerate() {
        validate(g, i).map_err(|e| format!("gs.merge_similar: {e}"))?;
    }
    let means: Vec<[f64; 3]> = gs.iter().map(|g| g.mean).collect();
    let grid = HashGrid::build(&means, cell).map_err(|e| format!("gs.merge_similar: {e}"))?;
    let mut done = vec![false; gs.len()];
    let mut out = Vec::new();
    let mut clusters = Vec::new();
    for i in 0..gs.len() {
        if done[i] {
            continue;
        }
        done[i] = true;
        let mut best: Option<(u32, f64)> = None;
        for j in grid.neighbours(i) {
            if done[j as usize] {
                continue;
            }
            let s = similarity(&gs[i], &gs[j as usize], p);
            // Ascending j and a strict comparison: ties go to the lower index.
            if s > p.threshold && best.is_none_or(|(_, bs)| s > bs) {
                best = Some((j, s));
            }
        }
        match best {
            Some((j, _)) => {
                done[j as usize] = true;
                out.push(merge(&[gs[i], gs[j as usize]])?);
                clusters.push(vec![i as u32, j]);
            }
            None => {
                out.push(gs[i]);
                clusters.push(vec![i as u32]);
            }
        }
    }
    Ok((out, clusters))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(mean: [f64; 3], opacity: f64) -> Gaussian {
        Gaussian {
            mean,
            quat: [1.0, 0.0, 0.0, 0.0],
            scale: [1.0; 3],
            opacity,
            color: [0.0; 3],
        }
    }

    fn max_abs_diff(a: &Mat3, b: &Mat3) -> f64 {
        (0..9)
            .map(|k| (a[k / 3][k % 3] - b[k / 3][k % 3]).abs())
            .fold(0.0, f64::max)
    }

    fn max_abs(a: &Mat3) -> f64 {
        a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()))
    }

    /// Hand-computed: unit Gaussians at x = −1 and x = +1, α = 0.5 each.
    /// w = 0.5, 0.5, W = 1; μ = (0.5·(−1) + 0.5·1)/1 = 0 (the midpoint);
    /// Σ_xx = [0.5·(1 + (−1)²) + 0.5·(1 + 1²)]/1 = 2, Σ_yy = Σ_zz = [0.5·1 + 0.5·1]/1 = 1, no
    /// off-diagonal terms (the offsets are along x only); α = 1 − 0.5·0.5 = 0.75.
    #[test]
    fn hand_computed_pair() {
        let mut a = unit([-1.0, 0.0, 0.0], 0.5);
        let mut b = unit([1.0, 0.0, 0.0], 0.5);
        a.color = [1.0, 0.0, 0.0];
        b.color = [0.0, 0.0, 1.0];
        let m = merge(&[a, b]).unwrap();
        assert_eq!(m.mean, [0.0, 0.0, 0.0]);
        assert!((m.opacity - 0.75).abs() < 1e-15);
        assert_eq!(m.color, [0.5, 0.0, 0.5]);
        let want = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(max_abs_diff(&covariance(&m), &want) < 1e-14);
        // Scales descending: √2, 1, 1; the matrix is already diagonal, so no rotation.
        assert!((m.scale[0] - 2f64.sqrt()).abs() < 1e-15);
        assert!((m.scale[1] - 1.0).abs() < 1e-15 && (m.scale[2] - 1.0).abs() < 1e-15);
        assert_eq!(m.quat, [1.0, 0.0, 0.0, 0.0]);
    }

    /// Unequal weights: α = 0.8 at x = 0 and α = 0.2 at x = 5, scales 1.
    /// W = 1; μ_x = 0.2·5 = 1; Σ_xx = 0.8·(1 + 1) + 0.2·(1 + 16) = 1.6 + 3.4 = 5;
    /// α = 1 − 0.2·0.8 = 0.84.
    #[test]
    fn hand_computed_weighted() {
        let m = merge(&[unit([0.0; 3], 0.8), unit([5.0, 0.0, 0.0], 0.2)]).unwrap();
        assert!((m.mean[0] - 1.0).abs() < 1e-15);
        assert!((m.opacity - 0.84).abs() < 1e-15);
        let c = covariance(&m);
        assert!((c[0][0] - 5.0).abs() < 1e-13 && (c[1][1] - 1.0).abs() < 1e-13);
    }

    #[test]
    fn covariance_of_rotated_gaussian() {
        // 90° about z: q = (cos 45°, 0, 0, sin 45°) maps x to y, so scale (2, 1, 1) gives
        // Σ = diag(1, 4, 1).
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let g = Gaussian {
            mean: [0.0; 3],
            quat: [3.0 * h, 0.0, 0.0, 3.0 * h], // not unit: normalised inside
            scale: [2.0, 1.0, 1.0],
            opacity: 0.5,
            color: [0.0; 3],
        };
        let want = [[1.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(max_abs_diff(&covariance(&g), &want) < 1e-14);
        let (q, s) = decompose(&want).unwrap();
        assert_eq!(s, [2.0, 1.0, 1.0]);
        // Largest axis must be ±y.
        let r = rotation(&q);
        assert!((r[1][0].abs() - 1.0).abs() < 1e-14, "{r:?}");
        assert!(det3(&r) > 0.0);
    }

    #[test]
    fn errors() {
        assert!(merge(&[]).unwrap_err().contains("no Gaussians"));
        let mut g = unit([0.0; 3], 0.5);
        g.opacity = 0.0;
        assert!(merge(&[g]).unwrap_err().contains("opacity"));
        g.opacity = 0.5;
        g.mean[1] = f64::NAN;
        assert!(merge(&[g, g])
            .unwrap_err()
            .contains("gaussian 0 has a non-finite"));
        let mut g = unit([0.0; 3], 0.5);
        g.quat = [0.0; 4];
        assert!(merge(&[unit([0.0; 3], 0.5), g])
            .unwrap_err()
            .contains("gaussian 1 has a zero quaternion"));
        let mut g = unit([0.0; 3], 0.5);
        g.scale[2] = -1.0;
        assert!(merge(&[g]).unwrap_err().contains("negative scale"));
        assert!(
            decompose(&[[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
                .unwrap_err()
                .contains("not symmetric")
        );
        assert!(
            decompose(&[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
                .unwrap_err()
                .contains("not positive semi-definite")
        );
        assert!(decompose(&[[f64::INFINITY, 0.0, 0.0], [0.0; 3], [0.0; 3]])
            .unwrap_err()
            .contains("non-finite"));
        let p = SimilarityParams {
            threshold: 1.0,
            ..Default::default()
        };
        assert!(merge_similar(&[], &p, 1.0)
            .unwrap_err()
            .contains("threshold"));
        let p = SimilarityParams::default();
        assert!(merge_similar(&[], &p, 0.0)
            .unwrap_err()
            .contains("cell size"));
        assert!(HashGrid::build(&[[0.0, f64::NAN, 0.0]], 1.0)
            .unwrap_err()
            .contains("point 0"));
        assert_eq!(merge_similar(&[], &p, 1.0).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn extreme_quaternions_normalise() {
        let mut g = unit([0.0; 3], 0.5);
        g.quat = [1e300, 0.0, 0.0, 1e300];
        g.scale = [2.0, 1.0, 1.0];
        let m = merge(&[g]).unwrap();
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((m.quat[0] - h).abs() < 1e-15 && (m.quat[3] - h).abs() < 1e-15);
        let c = covariance(&g);
        assert!((c[1][1] - 4.0).abs() < 1e-14 && (c[0][0] - 1.0).abs() < 1e-14);
        g.quat = [0.0, 1e-310, 0.0, 0.0];
        let c = covariance(&g);
        assert!((c[0][0] - 4.0).abs() < 1e-14, "{c:?}");
    }

    #[test]
    fn similarity_values() {
        let p = SimilarityParams {
            pos_scale: 2.0,
            scale_tol: 0.5,
            color_tol: 0.25,
            threshold: 0.1,
        };
        let a = unit([0.0; 3], 0.5);
        assert_eq!(similarity(&a, &a, &p), 1.0);
        // Δμ = 1 along x, mean scale 1, unit 2: d_μ² = 0.25.
        let b = unit([1.0, 0.0, 0.0], 0.5);
        assert!((similarity(&a, &b, &p) - (-0.25f64).exp()).abs() < 1e-15);
        // Scale (1, 1, e^0.5) vs (1, 1, 1): sorted logs (0.5, 0, 0) vs (0, 0, 0), d_s² = 1;
        // axis order does not matter.
        let mut c = a;
        c.scale = [1.0, 1.0, 0.5f64.exp()];
        let mut c2 = a;
        c2.scale = [0.5f64.exp(), 1.0, 1.0];
        assert!((similarity(&a, &c, &p) - (-1.0f64).exp()).abs() < 1e-15);
        assert_eq!(similarity(&a, &c, &p), similarity(&a, &c2, &p));
        // Colour difference 0.5 on one channel: d_c² = 4.
        let mut d = a;
        d.color = [0.0, 0.5, 0.0];
        assert!((similarity(&a, &d, &p) - (-4.0f64).exp()).abs() < 1e-15);
    }

    #[test]
    fn greedy_pairs_most_similar() {
        // 0 is closest to 2 (more similar than 1), so (0, 2) pair; 1 is then alone even though it
        // is similar to 0; 3 is far from everything.
        let p = SimilarityParams {
            pos_scale: 1.0,
            scale_tol: 1.0,
            color_tol: 1.0,
            threshold: 0.3,
        };
        let gs = [
            unit([0.0, 0.0, 0.0], 0.5),
            unit([0.8, 0.0, 0.0], 0.5),
            unit([0.0, 0.5, 0.0], 0.5),
            unit([10.0, 0.0, 0.0], 0.5),
        ];
        let (out, cl) = merge_similar(&gs, &p, 1.0).unwrap();
        assert_eq!(cl, vec![vec![0, 2], vec![1], vec![3]]);
        assert_eq!(out[1], gs[1]);
        assert_eq!(out[2], gs[3]);
        assert_eq!(out[0].mean, [0.0, 0.25, 0.0]);
        // Ties go to the lower index: 1 and 2 equally far from 0.
        let gs = [
            unit([0.0, 0.0, 0.0], 0.5),
            unit([0.5, 0.0, 0.0], 0.5),
            unit([-0.5, 0.0, 0.0], 0.5),
        ];
        let (_, cl) = merge_similar(&gs, &p, 1.0).unwrap();
        assert_eq!(cl, vec![vec![0, 1], vec![2]]);
    }

    // ---- property tests ----

    fn arb_quat() -> impl Strategy<Value = [f64; 4]> {
        prop::array::uniform4(-1.0f64..1.0)
            .prop_filter("non-zero", |q| q.iter().map(|v| v * v).sum::<f64>() > 1e-3)
    }

    fn arb_gaussian() -> impl Strategy<Value = Gaussian> {
        arb_gaussian_in(5.0, 0.0, 1.0)
    }

    /// Means in `[−extent, extent)³`, colours in `[c0, c1)`.
    fn arb_gaussian_in(extent: f64, c0: f64, c1: f64) -> impl Strategy<Value = Gaussian> {
        (
            prop::array::uniform3(-extent..extent),
            arb_quat(),
            prop::array::uniform3(0.01f64..2.0),
            0.01f64..0.99,
            prop::array::uniform3(c0..c1),
        )
            .prop_map(|(mean, quat, scale, opacity, color)| Gaussian {
                mean,
                quat,
                scale,
                opacity,
                color,
            })
    }

    /// Moment-matched covariance computed independently, from the formula.
    fn moment_cov(gs: &[Gaussian]) -> (Mat3, [f64; 3]) {
        let w: f64 = gs.iter().map(|g| g.opacity).sum();
        let mut mu = [0.0; 3];
        for g in gs {
            for (m, x) in mu.iter_mut().zip(&g.mean) {
                *m += g.opacity * x / w;
            }
        }
        let mut c = [[0.0; 3]; 3];
        for g in gs {
            let ci = covariance(g);
            for i in 0..3 {
                for j in 0..3 {
                    c[i][j] +=
                        g.opacity * (ci[i][j] + (g.mean[i] - mu[i]) * (g.mean[j] - mu[j])) / w;
                }
            }
        }
        (c, mu)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn merge_conserves(gs in prop::collection::vec(arb_gaussian(), 2..6)) {
            let m = merge(&gs).unwrap();
            // Opacity mass: 1 − α = Π(1 − α_i).
            let prod: f64 = gs.iter().map(|g| 1.0 - g.opacity).product();
            prop_assert!(((1.0 - m.opacity) - prod).abs() < 1e-14);
            // Σ w μ preserved: W·μ = Σ w_i μ_i; likewise the colour.
            let w: f64 = gs.iter().map(|g| g.opacity).sum();
            for k in 0..3 {
                let wm: f64 = gs.iter().map(|g| g.opacity * g.mean[k]).sum();
                let wc: f64 = gs.iter().map(|g| g.opacity * g.color[k]).sum();
                prop_assert!((w * m.mean[k] - wm).abs() < 1e-12);
                prop_assert!((w * m.color[k] - wc).abs() < 1e-12);
            }
            // The merged covariance is the moment-matched one.
            let (c, _) = moment_cov(&gs);
            let got = covariance(&m);
            prop_assert!(max_abs_diff(&got, &c) <= 1e-10 * max_abs(&c), "{got:?} vs {c:?}");
            // Unit quaternion with w >= 0, scales descending.
            let n: f64 = m.quat.iter().map(|q| q * q).sum();
            prop_assert!((n - 1.0).abs() < 1e-12 && m.quat[0] >= 0.0);
            prop_assert!(m.scale[0] >= m.scale[1] && m.scale[1] >= m.scale[2]);
        }

        #[test]
        fn merge_one_is_identity(g in arb_gaussian()) {
            let m = merge(&[g]).unwrap();
            let n = g.quat.iter().map(|q| q * q).sum::<f64>().sqrt();
            prop_assert_eq!(m.mean, g.mean);
            prop_assert_eq!(m.scale, g.scale);
            prop_assert_eq!(m.opacity, g.opacity);
            prop_assert_eq!(m.color, g.color);
            // Up to sign (here exactly the same sign: no decomposition is involved).
            let dot: f64 = (0..4).map(|k| m.quat[k] * g.quat[k] / n).sum();
            prop_assert!((dot.abs() - 1.0).abs() < 1e-12);
        }

        #[test]
        fn merge_identical_copies(g in arb_gaussian(), copies in 2usize..5) {
            // Copies of one Gaussian keep its mean, colour and covariance; α = 1 − (1−α)^n.
            let gs = vec![g; copies];
            let m = merge(&gs).unwrap();
            let c = covariance(&g);
            prop_assert!(max_abs_diff(&covariance(&m), &c) <= 1e-10 * max_abs(&c));
            prop_assert!((m.opacity - (1.0 - (1.0 - g.opacity).powi(copies as i32))).abs() < 1e-14);
            for k in 0..3 {
                prop_assert!((m.mean[k] - g.mean[k]).abs() < 1e-12);
            }
        }

        #[test]
        fn decompose_round_trips(q in arb_quat(),
                                 s in prop::array::uniform3(1e-3f64..10.0),
                                 noise in prop::array::uniform3(-1.0f64..1.0)) {
            // A random SPD matrix R diag(s²) Rᵀ ...
            let g = Gaussian { mean: [0.0; 3], quat: q, scale: s, opacity: 0.5, color: [0.0; 3] };
            let c = covariance(&g);
            let (q2, s2) = decompose(&c).unwrap();
            let back = covariance(&Gaussian { quat: q2, scale: s2, ..g });
            prop_assert!(max_abs_diff(&back, &c) <= 1e-12 * max_abs(&c), "{back:?} vs {c:?}");
            let mut want = s;
            want.sort_by(|a, b| b.total_cmp(a));
            for k in 0..3 {
                prop_assert!((s2[k] - want[k]).abs() <= 1e-9 * want[0]);
            }
            prop_assert!(det3(&rotation(&q2)) > 0.0);
            // ... and a general A Aᵀ + εI.
            let a = [[noise[0], 0.3, noise[1]], [noise[2], 1.0, -0.2], [0.5, noise[0] * noise[1], 0.7]];
            let mut m = mul(&a, &transpose(&a));
            for (i, row) in m.iter_mut().enumerate() { row[i] += 1e-3; }
            let (q3, s3) = decompose(&m).unwrap();
            let back = covariance(&Gaussian { quat: q3, scale: s3, ..g });
            prop_assert!(max_abs_diff(&back, &m) <= 1e-12 * max_abs(&m));
        }

        #[test]
        fn grid_matches_brute_force(pts in prop::collection::vec(prop::array::uniform3(-3.0f64..3.0), 0..80),
                                    h in 0.1f64..2.0) {
            let grid = HashGrid::build(&pts, h).unwrap();
            for i in 0..pts.len() {
                let brute: Vec<u32> = (0..pts.len())
                    .filter(|&j| j != i && (0..3).map(|k| (pts[i][k] - pts[j][k]).powi(2)).sum::<f64>() <= h * h)
                    .map(|j| j as u32)
                    .collect();
                prop_assert_eq!(grid.neighbours(i), brute);
            }
        }

        #[test]
        fn merge_similar_partitions(gs in prop::collection::vec(arb_gaussian_in(2.0, 0.3, 0.7), 0..60),
                                    threshold in 0.0f64..0.9,
                                    cell in 0.2f64..4.0) {
            let p = SimilarityParams { pos_scale: 2.0, scale_tol: 1.0, color_tol: 0.5, threshold };
            let (out, cl) = merge_similar(&gs, &p, cell).unwrap();
            prop_assert_eq!(out.len(), cl.len());
            // Every input exactly once.
            let mut seen = vec![0u32; gs.len()];
            for c in &cl {
                prop_assert!(!c.is_empty() && c.len() <= 2);
                prop_assert!(c.windows(2).all(|w| w[0] < w[1]));
                for &i in c { seen[i as usize] += 1; }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            // Clusters in order of lowest member.
            prop_assert!(cl.windows(2).all(|w| w[0][0] < w[1][0]));
            // Merged pairs are above threshold and within the cell distance; outputs match.
            for (o, c) in out.iter().zip(&cl) {
                if let [i, j] = c[..] {
                    let (a, b) = (&gs[i as usize], &gs[j as usize]);
                    prop_assert!(similarity(a, b, &p) > threshold);
                    let d2: f64 = (0..3).map(|k| (a.mean[k] - b.mean[k]).powi(2)).sum();
                    prop_assert!(d2 <= cell * cell);
                    prop_assert_eq!(*o, merge(&[*a, *b]).unwrap());
                } else {
                    prop_assert_eq!(*o, gs[c[0] as usize]);
                }
            }
            // Same result as a brute-force greedy over all pairs.
            let mut done = vec![false; gs.len()];
            let mut want: Vec<Vec<u32>> = Vec::new();
            for i in 0..gs.len() {
                if done[i] { continue; }
                done[i] = true;
                let mut best: Option<(usize, f64)> = None;
                for j in 0..gs.len() {
                    if done[j] { continue; }
                    let d2: f64 = (0..3).map(|k| (gs[i].mean[k] - gs[j].mean[k]).powi(2)).sum();
                    let s = similarity(&gs[i], &gs[j], &p);
                    if d2 <= cell * cell && s > threshold && best.is_none_or(|(_, b)| s > b) {
                        best = Some((j, s));
                    }
                }
                match best {
                    Some((j, _)) => { done[j] = true; want.push(vec![i as u32, j as u32]); }
                    None => want.push(vec![i as u32]),
                }
            }
            prop_assert_eq!(cl, want);
        }
    }
}
