//! The synthetic training scene of `tessera gs train`: a known set of Gaussians (one dense
//! cluster plus a sparse background), photographed by `C` cameras on rings around it.
//!
//! - **Ground truth.** `dense` small Gaussians inside a ball of radius 0.6 at the origin
//!   (scales 0.02–0.08), and `sparse` larger ones (scales 0.1–0.3) on a shell of radii 1.6–2.4;
//!   random rotations, opacities 0.5–0.95, colours uniform in `[0.05, 0.95]³` (SH degree 0).
//! - **Cameras.** `views` cameras at distance 5 from the origin, looking at it with world `+z`
//!   up, at azimuths `2πi/views` and elevations alternating +20° / −10°, `width × height`
//!   pixels, `fx = fy = 1.1·width` (a 49° horizontal field of view), `near` 0.01, `far` 100.
//! - **Held-out views.** Every 8th camera from the first (INRIA's `llffhold = 8`), as
//!   [`split`] says.
//! - **Initial model.** The "SfM points" the training starts from: a random half of the true
//!   centres, each jittered by `N(0, 0.05²)` per axis, grey (colour 0.5), opacity 0.1, identity
//!   rotation, isotropic scale the mean distance to the 3 nearest other initial points (INRIA's
//!   initialisation), floored at 1e-3.
//!
//! Everything is deterministic given the seed.

use super::cameras::{look_at, View};
use super::ply::Splats;
use crate::error::{Error, Result};
use crate::ops::gs::project::Camera;
use crate::testing::Rng;

const OP: &str = "gs.scene";

/// `C0`, the degree-0 SH constant: `rgb = C0 · f_dc + 0.5`.
pub const SH_C0: f32 = 0.282_094_8;

/// The synthetic scene's size and seed.
#[derive(Clone, Debug, PartialEq)]
pub struct SceneConfig {
    /// Gaussians in the dense central cluster.
    pub dense: usize,
    /// Gaussians in the sparse background shell.
    pub sparse: usize,
    /// Number of cameras (every 8th from the first is held out).
    pub views: usize,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for SceneConfig {
    /// 400 dense + 100 sparse Gaussians, 24 views of 64×64.
    fn default() -> Self {
        SceneConfig {
            dense: 400,
            sparse: 100,
            views: 24,
            width: 64,
            height: 64,
            seed: 7,
        }
    }
}

impl SceneConfig {
    fn validate(&self) -> Result<()> {
        if self.dense + self.sparse == 0 {
            return Err(Error::invalid(OP, "the scene needs at least one Gaussian"));
        }
        if self.views < 2 {
            return Err(Error::invalid(
                OP,
                format!("{} views: at least 2 are needed (one held out)", self.views),
            ));
        }
        if self.width == 0 || self.height == 0 || self.width > 4096 || self.height > 4096 {
            return Err(Error::invalid(
                OP,
                format!(
                    "image size {}x{} is outside 1..=4096",
                    self.width, self.height
                ),
            ));
        }
        Ok(())
    }
}

/// Degree-0 SH coefficient of an RGB colour.
pub fn rgb_to_dc(c: f32) -> f32 {
    (c - 0.5) / SH_C0
}

/// The logit of an opacity in `(0, 1)`.
pub fn logit(o: f32) -> f32 {
    (o / (1.0 - o)).ln()
}

fn random_quat(u: &mut impl FnMut() -> f32) -> [f32; 4] {
    loop {
        let q = [
            2.0 * u() - 1.0,
            2.0 * u() - 1.0,
            2.0 * u() - 1.0,
            2.0 * u() - 1.0,
        ];
        let n = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        if (0.1..=1.0).contains(&n) {
            return q.map(|v| v / n);
        }
    }
}

/// The ground-truth Gaussians (SH degree 0).
pub fn ground_truth(c: &SceneConfig) -> Result<Splats> {
    c.validate()?;
    let mut r = Rng(c.seed);
    let mut u = || r.unit() as f32;
    let n = c.dense + c.sparse;
    let mut s = Splats {
        means: Vec::with_capacity(n),
        quats: Vec::with_capacity(n),
        log_scales: Vec::with_capacity(n),
        opacity_logits: Vec::with_capacity(n),
        sh: Vec::with_capacity(3 * n),
        degree: 0,
    };
    for i in 0..n {
        let dense = i < c.dense;
        // A uniform direction, then a radius: inside the ball (dense) or on the shell.
        let dir = loop {
            let d = [2.0 * u() - 1.0, 2.0 * u() - 1.0, 2.0 * u() - 1.0];
            let l = d.iter().map(|v| v * v).sum::<f32>().sqrt();
            if (0.05..=1.0).contains(&l) {
                break d.map(|v| v / l);
            }
        };
        let radius = if dense {
            0.6 * u().cbrt()
        } else {
            1.6 + 0.8 * u()
        };
        s.means.push(dir.map(|v| v * radius));
        s.quats.push(random_quat(&mut u));
        let (lo, hi) = if dense { (0.02, 0.08) } else { (0.1, 0.3) };
        let base = lo + (hi - lo) * u();
        s.log_scales.push([
            (base * (0.6 + 0.8 * u())).ln(),
            (base * (0.6 + 0.8 * u())).ln(),
            (base * (0.6 + 0.8 * u())).ln(),
        ]);
        s.opacity_logits.push(logit(0.5 + 0.45 * u()));
        for _ in 0..3 {
            s.sh.push(rgb_to_dc(0.05 + 0.9 * u()));
        }
    }
    Ok(s)
}

/// The scene's cameras, in order (see the module docs).
pub fn cameras(c: &SceneConfig) -> Result<Vec<Camera>> {
    c.validate()?;
    (0..c.views)
        .map(|i| {
            let az = std::f32::consts::TAU * i as f32 / c.views as f32;
            let el = if i % 2 == 0 { 20f32 } else { -10f32 }.to_radians();
            let eye = [
                5.0 * el.cos() * az.cos(),
                5.0 * el.cos() * az.sin(),
                5.0 * el.sin(),
            ];
            look_at(
                eye,
                [0.0; 3],
                [0.0, 0.0, 1.0],
                c.width,
                c.height,
                1.1 * c.width as f32,
                0.01,
                100.0,
            )
        })
        .collect()
}

/// Splits view indices `0..n` into (training, held out): every 8th from the first is held out.
pub fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    (0..n).partition(|i| i % 8 != 0)
}

/// A standard normal draw (Box–Muller).
fn normal(r: &mut Rng) -> f64 {
    let u1 = r.unit().max(f64::MIN_POSITIVE);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * r.unit()).cos()
}

/// The initial model (see the module docs): from a random half of the true centres, jittered.
pub fn initial_model(gt: &Splats, seed: u64) -> Result<Splats> {
    if gt.is_empty() {
        return Err(Error::invalid(OP, "no points to initialise from"));
    }
    let mut r = Rng(seed ^ 0x5f3d_1a2b);
    let mut pts: Vec<[f32; 3]> = Vec::new();
    for m in &gt.means {
        if r.unit() < 0.5 {
            pts.push(m.map(|v| v + 0.05 * normal(&mut r) as f32));
        }
    }
    if pts.is_empty() {
        pts.push(gt.means[0]);
    }
    init_from_points(pts)
}

/// A model on the given points: grey (colour 0.5), opacity 0.1, identity rotation, isotropic
/// scale the mean distance to the 3 nearest other points (floored at 1e-3; 0.1 for a lone
/// point). Brute-force neighbours: quadratic in the number of points.
pub fn init_from_points(pts: Vec<[f32; 3]>) -> Result<Splats> {
    if pts.is_empty() {
        return Err(Error::invalid(OP, "no points to initialise from"));
    }
    let n = pts.len();
    let mut log_scales = Vec::with_capacity(n);
    for (i, p) in pts.iter().enumerate() {
        let mut d: Vec<f32> = pts
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, q)| (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f32>().sqrt())
            .collect();
        d.sort_by(f32::total_cmp);
        let k = d.len().min(3);
        let s = if k == 0 {
            0.1
        } else {
            d[..k].iter().sum::<f32>() / k as f32
        };
        log_scales.push([s.max(1e-3).ln(); 3]);
    }
    Ok(Splats {
        quats: vec![[1.0, 0.0, 0.0, 0.0]; n],
        log_scales,
        opacity_logits: vec![logit(0.1); n],
        sh: vec![rgb_to_dc(0.5); 3 * n],
        means: pts,
        degree: 0,
    })
}

/// The INRIA scene extent: 1.1 × the largest distance of a camera centre from their mean.
pub fn extent(cams: &[Camera]) -> f32 {
    let centres: Vec<[f32; 3]> = cams.iter().map(centre).collect();
    if centres.is_empty() {
        return 1.0;
    }
    let n = centres.len() as f32;
    let mean = [0, 1, 2].map(|a| centres.iter().map(|c| c[a]).sum::<f32>() / n);
    let r = centres
        .iter()
        .map(|c| (0..3).map(|a| (c[a] - mean[a]).powi(2)).sum::<f32>().sqrt())
        .fold(0.0f32, f32::max);
    if r > 0.0 {
        1.1 * r
    } else {
        1.0
    }
}

/// A camera's centre in world coordinates, `−Rᵀ t`.
pub fn centre(c: &Camera) -> [f32; 3] {
    let v = &c.viewmat;
    [0, 1, 2].map(|a| -(v[a] * v[3] + v[4 + a] * v[7] + v[8 + a] * v[11]))
}

/// Renders the ground truth from every camera (`render`: the training pipeline's forward).
pub fn views(
    gt: &Splats,
    cams: &[Camera],
    mut render: impl FnMut(&Splats, &Camera) -> Result<Vec<f32>>,
) -> Result<Vec<View>> {
    cams.iter()
        .enumerate()
        .map(|(i, cam)| {
            Ok(View {
                name: format!("view_{i:03}"),
                camera: cam.clone(),
                image: render(gt, cam)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scene_is_deterministic_and_in_range() {
        let c = SceneConfig::default();
        let a = ground_truth(&c).unwrap();
        assert_eq!(a, ground_truth(&c).unwrap());
        assert_eq!(a.len(), 500);
        for (i, m) in a.means.iter().enumerate() {
            let r = m.iter().map(|v| v * v).sum::<f32>().sqrt();
            if i < c.dense {
                assert!(r <= 0.6 + 1e-5, "dense {i} at radius {r}");
            } else {
                assert!((1.6 - 1e-5..=2.4 + 1e-5).contains(&r), "sparse {i} at {r}");
            }
        }
        let cams = cameras(&c).unwrap();
        assert_eq!(cams.len(), 24);
        for cam in &cams {
            let ctr = centre(cam);
            let d = ctr.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((d - 5.0).abs() < 1e-4, "camera at distance {d}");
        }
        // The centres' mean is (0, 0, z̄) with z̄ the mean of 5·sin(20°) and 5·sin(−10°); the
        // farthest centres are the low ring's.
        let (hi, lo) = (20f32.to_radians(), (-10f32).to_radians());
        let zbar = 2.5 * (hi.sin() + lo.sin());
        let far = ((5.0 * lo.cos()).powi(2) + (5.0 * lo.sin() - zbar).powi(2)).sqrt();
        assert!(
            (extent(&cams) - 1.1 * far).abs() < 1e-4,
            "{}",
            extent(&cams)
        );
    }

    #[test]
    fn split_holds_out_every_eighth() {
        let (train, test) = split(17);
        assert_eq!(test, vec![0, 8, 16]);
        assert_eq!(train.len(), 14);
        assert!(!train.contains(&8));
    }

    #[test]
    fn initial_model_scales_from_neighbours() {
        let gt = Splats {
            means: vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]],
            quats: vec![[1.0, 0.0, 0.0, 0.0]; 4],
            log_scales: vec![[0.0; 3]; 4],
            opacity_logits: vec![0.0; 4],
            sh: vec![0.0; 12],
            degree: 0,
        };
        let m = initial_model(&gt, 3).unwrap();
        assert!(!m.is_empty() && m.len() <= 4);
        assert_eq!(m.sh.len(), 3 * m.len());
        assert!(m
            .opacity_logits
            .iter()
            .all(|&l| (l - logit(0.1)).abs() < 1e-6));
        assert!(initial_model(
            &Splats {
                means: vec![],
                ..gt
            },
            1
        )
        .is_err());
    }

    #[test]
    fn bad_configs() {
        let c = SceneConfig {
            views: 1,
            ..SceneConfig::default()
        };
        assert!(ground_truth(&c).unwrap_err().to_string().contains("views"));
        let c = SceneConfig {
            width: 0,
            ..SceneConfig::default()
        };
        assert!(cameras(&c).is_err());
    }
}
