//! The 3DGS training loop of `tessera gs train`: tessera's rasteriser ops forward and backward,
//! the L1 + D-SSIM loss ([`super::loss`]), Adam, and density control ([`super::density`]).
//!
//! # One step
//!
//! For one training view (cycled in a seeded shuffled order, reshuffled each epoch):
//! activations on the host (`scales = exp(log_scales)`, `opacities = sigmoid(logits)`), then on
//! the device `ops::gs::pipeline::rasterize_saved` (`gs.project` → `gs.sh_colors` → `gs.bin` →
//! `gs.render`); the loss and its image gradient on the host; then `pipeline::backward` of
//! that render (`gs.render_backward` → `gs.project_backward` and `gs.sh_colors_backward`, its
//! mean gradient added), the activations' chain rule on the host, and one Adam step per
//! parameter group.
//!
//! # Optimiser (INRIA's groups and learning rates)
//!
//! Adam (β₁ 0.9, β₂ 0.999, ε 1e-15): means `1.6e-4 · extent`, decayed exponentially to
//! `1.6e-6 · extent` over the run; SH DC `2.5e-3`, higher SH `2.5e-3 / 20`; opacity logits
//! `0.05`; log-scales `5e-3`; quaternions `1e-3`. `TrainConfig::lr_scale` multiplies all of
//! them (default 4: our runs are ~10³ steps where INRIA's are 3·10⁴).
//!
//! # Density control
//!
//! Every `densify_every` steps from `densify_from` to `densify_until`, the accumulated
//! screen-space gradients clone or split Gaussians and low-opacity ones are pruned
//! ([`super::density::densify`]); Adam's moments are carried for kept Gaussians and start at
//! zero for new ones. With `balanced`, each densification is followed by BalanceGS's similarity
//! merging ([`super::density::merge_splats`]) and the renders use [`Layout::Balanced`].
//!
//! On the CPU device both layouts run the same f64 reference, so `balanced` changes only the
//! Gaussians (merging); the layouts' kernel timings need a GPU.

use std::time::Instant;

use serde::Serialize;

use super::cameras::View;
use super::density::{self, Balance, DensifyParams, GradStats, Origin};
use super::loss;
use super::ply::Splats;
use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::gs::pipeline::{self, Colors, Saved};
use crate::ops::gs::project::Camera;
use crate::ops::gs::render::Layout;
use crate::reference::gs::merge::SimilarityParams;
use crate::reference::gs::TILE;
use crate::testing::Rng;

const OP: &str = "gs.train";

/// The device-side products of one forward, kept for the backward.
pub struct Forward {
    means: DeviceBuffer<f32>,
    quats: DeviceBuffer<f32>,
    scales: DeviceBuffer<f32>,
    opacities: DeviceBuffer<f32>,
    coeffs: DeviceBuffer<f32>,
    degree: u32,
    saved: Saved,
    background: [f32; 3],
    layout: Layout,
}

impl Forward {
    /// The rendered image `[H, W, 3]`.
    pub fn image(&self) -> Result<Vec<f32>> {
        self.saved.rendered().image.download()
    }

    /// The contributor balance of this render (per pixel and per tile).
    pub fn balance(&self, cam: &Camera) -> Result<Balance> {
        density::balance(
            &self.saved.rendered().n_contrib.download()?,
            &self.saved.bins().tile_ranges.download()?,
            cam.width,
            cam.height,
            TILE,
        )
    }

    fn colors(&self) -> Colors<'_> {
        Colors::Sh {
            coeffs: &self.coeffs,
            sh_degree: self.degree,
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn flat<const D: usize>(x: &[[f32; D]]) -> &[f32] {
    x.as_flattened()
}

/// Renders `s` from `cam` on `dev` ([`pipeline::rasterize_saved`] on the activated
/// parameters).
pub fn forward(
    dev: &Device,
    s: &Splats,
    cam: &Camera,
    background: [f32; 3],
    layout: Layout,
) -> Result<Forward> {
    let scales: Vec<f32> = flat(&s.log_scales).iter().map(|v| v.exp()).collect();
    let opac: Vec<f32> = s.opacity_logits.iter().map(|&l| sigmoid(l)).collect();
    let means = dev.upload(flat(&s.means), "gs.means")?;
    let quats = dev.upload(flat(&s.quats), "gs.quats")?;
    let scales = dev.upload(&scales, "gs.scales")?;
    let opacities = dev.upload(&opac, "gs.opacities")?;
    let coeffs = dev.upload(&s.sh, "gs.sh")?;
    let colors = Colors::Sh {
        coeffs: &coeffs,
        sh_degree: s.degree,
    };
    let saved = pipeline::rasterize_saved(
        &means, &quats, &scales, &opacities, colors, cam, background, layout,
    )?;
    Ok(Forward {
        means,
        quats,
        scales,
        opacities,
        coeffs,
        degree: s.degree,
        saved,
        background,
        layout,
    })
}

/// Gradients with respect to the raw parameters of [`Splats`], flat in its layouts, plus the
/// screen-space mean gradients and radii the density statistics need.
pub struct Grads {
    /// `[N,3]`.
    pub means: Vec<f32>,
    /// `[N,4]`, w.r.t. the unnormalised quaternions.
    pub quats: Vec<f32>,
    /// `[N,3]`, w.r.t. the log-scales.
    pub log_scales: Vec<f32>,
    /// `[N]`, w.r.t. the opacity logits.
    pub opacity_logits: Vec<f32>,
    /// `[N,K,3]`.
    pub sh: Vec<f32>,
    /// `[N,2]` `∂L/∂mean2d` in pixels.
    pub means2d: Vec<f32>,
    /// `[N]` the forward's radii.
    pub radii: Vec<i32>,
}

/// The backward of [`forward`] for `v_image = ∂L/∂image` ([`pipeline::backward`], then the
/// activations' chain rule).
pub fn backward(f: &Forward, cam: &Camera, v_image: &[f32]) -> Result<Grads> {
    let dev = f.means.device().clone();
    let v_img = dev.upload(v_image, "gs.v_image")?;
    let (g, v_means2d) = pipeline::backward(
        &f.saved,
        &f.means,
        &f.quats,
        &f.scales,
        &f.opacities,
        f.colors(),
        cam,
        f.background,
        f.layout,
        &v_img,
        None,
    )?;
    let v_sh = g
        .v_coeffs
        .ok_or_else(|| Error::invalid(OP, "internal: no SH gradient"))?;
    let scales = f.scales.download()?;
    let log_scales = g
        .v_scales
        .download()?
        .iter()
        .zip(&scales)
        .map(|(g, s)| g * s)
        .collect();
    let opac = f.opacities.download()?;
    let opacity_logits = g
        .v_opacities
        .download()?
        .iter()
        .zip(&opac)
        .map(|(g, o)| g * o * (1.0 - o))
        .collect();
    Ok(Grads {
        means: g.v_means.download()?,
        quats: g.v_quats.download()?,
        log_scales,
        opacity_logits,
        sh: v_sh.download()?,
        means2d: v_means2d.download()?,
        radii: f.saved.projected().radii.download()?,
    })
}

/// Adam's moments for one parameter group.
#[derive(Clone, Debug, Default)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    fn new(len: usize) -> Moments {
        Moments {
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// One Adam step at (1-based) step `t`; `lr(i)` is element `i`'s learning rate.
    fn step(&mut self, p: &mut [f32], g: &[f32], t: i32, lr: impl Fn(usize) -> f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-15;
        let (c1, c2) = (1.0 - B1.powi(t), 1.0 - B2.powi(t));
        for i in 0..p.len() {
            self.m[i] = B1 * self.m[i] + (1.0 - B1) * g[i];
            self.v[i] = B2 * self.v[i] + (1.0 - B2) * g[i] * g[i];
            let mh = self.m[i] / c1;
            let vh = self.v[i] / c2;
            p[i] -= lr(i) * mh / (vh.sqrt() + EPS);
        }
    }

    /// Moments for a new set of Gaussians: `from[j] = Some(i)` carries Gaussian `i`'s moments
    /// (`per` values each) to `j`; `None` starts at zero.
    fn remap(&self, from: &[Option<u32>], per: usize) -> Moments {
        let mut out = Moments::new(from.len() * per);
        for (j, f) in from.iter().enumerate() {
            if let Some(i) = f {
                let i = *i as usize;
                out.m[j * per..(j + 1) * per].copy_from_slice(&self.m[i * per..(i + 1) * per]);
                out.v[j * per..(j + 1) * per].copy_from_slice(&self.v[i * per..(i + 1) * per]);
            }
        }
        out
    }
}

/// The optimiser: one [`Moments`] per parameter group of [`Splats`].
struct Adam {
    means: Moments,
    quats: Moments,
    log_scales: Moments,
    logits: Moments,
    sh: Moments,
}

impl Adam {
    fn new(s: &Splats) -> Adam {
        let n = s.len();
        Adam {
            means: Moments::new(3 * n),
            quats: Moments::new(4 * n),
            log_scales: Moments::new(3 * n),
            logits: Moments::new(n),
            sh: Moments::new(s.sh.len()),
        }
    }

    fn remap(&self, from: &[Option<u32>], k: usize) -> Adam {
        Adam {
            means: self.means.remap(from, 3),
            quats: self.quats.remap(from, 4),
            log_scales: self.log_scales.remap(from, 3),
            logits: self.logits.remap(from, 1),
            sh: self.sh.remap(from, 3 * k),
        }
    }
}

/// Training settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Optimisation steps (one view each).
    pub steps: usize,
    /// BalanceGS mode: the reordered layout and similarity merging after each densification.
    pub balanced: bool,
    /// Multiplies every learning rate.
    pub lr_scale: f32,
    /// The weight of D-SSIM in the loss.
    pub lambda_dssim: f64,
    /// First densification step.
    pub densify_from: usize,
    /// Densify every this many steps.
    pub densify_every: usize,
    /// Last densification step.
    pub densify_until: usize,
    /// Clone/split/prune settings.
    pub densify: DensifyParams,
    /// Similarity merging settings (with `balanced`).
    pub similarity: SimilarityParams,
    /// Hash-grid cell of the merge's neighbour search, as a fraction of the scene extent.
    pub merge_cell: f64,
    /// Background colour of the renders.
    pub background: [f32; 3],
    /// Seed of the view order and of the splits' samples.
    pub seed: u64,
}

impl TrainConfig {
    /// The defaults for a run of `steps` steps: densification every 100 steps from step 100 to
    /// half the run (INRIA: 500 to 15,000 of 30,000), λ = 0.2, black background, baseline.
    pub fn for_steps(steps: usize) -> TrainConfig {
        TrainConfig {
            steps,
            densify_until: steps / 2,
            ..TrainConfig::default()
        }
    }
}

impl Default for TrainConfig {
    /// [`TrainConfig::for_steps`]`(1000)`.
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            balanced: false,
            lr_scale: 4.0,
            lambda_dssim: loss::LAMBDA_DSSIM,
            densify_from: 100,
            densify_every: 100,
            densify_until: 500,
            densify: DensifyParams::default(),
            similarity: SimilarityParams::default(),
            merge_cell: 0.02,
            background: [0.0; 3],
            seed: 1,
        }
    }
}

/// One densification event.
#[derive(Clone, Debug, Serialize)]
pub struct DensifyEvent {
    /// The step after which it ran.
    pub step: usize,
    /// Gaussians before.
    pub before: usize,
    /// After clone/split/prune.
    pub after_densify: usize,
    /// After merging (equal to `after_densify` without `balanced`).
    pub after_merge: usize,
}

/// One progress report (every `report_every` steps and the last).
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    /// 1-based step.
    pub step: usize,
    /// Mean loss over the steps since the previous report.
    pub loss: f64,
    /// Mean training-view PSNR over the same steps.
    pub psnr: f64,
    /// Gaussians now.
    pub gaussians: usize,
}

/// What a training run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// `"balanced"` or `"baseline"`.
    pub mode: String,
    /// The device the ops ran on.
    pub device: String,
    /// Steps run.
    pub steps: usize,
    /// Gaussians at the start and the end.
    pub gaussians_start: usize,
    /// Gaussians at the end.
    pub gaussians_end: usize,
    /// Mean PSNR (dB) over the held-out views, before training.
    pub heldout_psnr_start: f64,
    /// Mean PSNR (dB) over the held-out views, after training.
    pub heldout_psnr: f64,
    /// Mean SSIM over the held-out views, after training.
    pub heldout_ssim: f64,
    /// Mean wall time per step in milliseconds (forward, loss, backward, Adam; densification
    /// excluded).
    pub ms_per_step: f64,
    /// Total wall time in seconds, evaluation included.
    pub seconds: f64,
    /// Contributor balance of the first held-out view, before training.
    pub balance_start: Balance,
    /// The same after training.
    pub balance_end: Balance,
    /// Every densification.
    pub densify: Vec<DensifyEvent>,
    /// The progress reports.
    pub progress: Vec<Progress>,
}

fn validate(views: &[View], train: &[usize], test: &[usize], c: &TrainConfig) -> Result<()> {
    if train.is_empty() || test.is_empty() {
        return Err(Error::invalid(
            OP,
            format!(
                "{} training and {} held-out views: at least one of each is needed",
                train.len(),
                test.len()
            ),
        ));
    }
    for &i in train.iter().chain(test) {
        let v = views
            .get(i)
            .ok_or_else(|| Error::invalid(OP, format!("view index {i} is out of range")))?;
        let (w, h) = (v.camera.width as usize, v.camera.height as usize);
        if v.image.len() != 3 * w * h {
            return Err(Error::invalid(
                OP,
                format!(
                    "view {}: image has {} values, the camera needs {w}x{h}x3",
                    v.name,
                    v.image.len()
                ),
            ));
        }
        if let Some(j) = v.image.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(
                OP,
                format!("view {}: image value {j} is not finite", v.name),
            ));
        }
    }
    if c.steps == 0 || c.densify_every == 0 {
        return Err(Error::invalid(OP, "steps and densify_every must be >= 1"));
    }
    if !(c.lr_scale.is_finite() && c.lr_scale > 0.0) {
        return Err(Error::invalid(OP, "lr_scale must be finite and > 0"));
    }
    if !(0.0..=1.0).contains(&c.lambda_dssim) {
        return Err(Error::invalid(OP, "lambda_dssim must be in [0, 1]"));
    }
    if c.background.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(OP, "the background is not finite"));
    }
    Ok(())
}

/// Mean PSNR and SSIM of `s` over `views[idx]`.
pub fn evaluate(
    dev: &Device,
    s: &Splats,
    views: &[View],
    idx: &[usize],
    background: [f32; 3],
    layout: Layout,
) -> Result<(f64, f64)> {
    let (mut p, mut q) = (0.0, 0.0);
    for &i in idx {
        let v = &views[i];
        let img = forward(dev, s, &v.camera, background, layout)?.image()?;
        let (w, h) = (v.camera.width, v.camera.height);
        p += loss::psnr(&img, &v.image, w, h)?;
        q += loss::ssim(&img, &v.image, w, h)?;
    }
    Ok((p / idx.len() as f64, q / idx.len() as f64))
}

/// Trains `init` on `views[train]`, evaluating on `views[test]`; returns the report and the
/// trained Gaussians. `progress` is called after each step with (step, loss, PSNR of that
/// step's view, Gaussians).
pub fn train(
    dev: &Device,
    init: &Splats,
    views: &[View],
    train: &[usize],
    test: &[usize],
    c: &TrainConfig,
    mut progress: impl FnMut(usize, f64, f64, usize),
) -> Result<(TrainReport, Splats)> {
    validate(views, train, test, c)?;
    let t0 = Instant::now();
    let layout = if c.balanced {
        Layout::Balanced
    } else {
        Layout::Baseline
    };
    let cams: Vec<Camera> = views.iter().map(|v| v.camera.clone()).collect();
    let extent = super::scene::extent(&cams);
    let mut s = init.clone();
    let (heldout_psnr_start, _) = evaluate(dev, &s, views, test, c.background, layout)?;
    let first = &views[test[0]];
    let balance_start =
        forward(dev, &s, &first.camera, c.background, layout)?.balance(&first.camera)?;
    let mut adam = Adam::new(&s);
    let mut stats = GradStats::new(s.len());
    let mut rng = Rng(c.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut step_secs = 0.0;
    let mut events = Vec::new();
    let mut reports = Vec::new();
    let (mut acc_loss, mut acc_psnr, mut acc_n) = (0.0, 0.0, 0usize);
    let report_every = (c.steps / 20).max(1);
    for step in 1..=c.steps {
        if order.is_empty() {
            order = train.to_vec();
            rng.shuffle(&mut order);
        }
        let vi = order.pop().unwrap_or(train[0]);
        let v = &views[vi];
        let (w, h) = (v.camera.width, v.camera.height);
        let ts = Instant::now();
        let f = forward(dev, &s, &v.camera, c.background, layout)?;
        let img = f.image()?;
        let l = loss::loss(&img, &v.image, w, h, c.lambda_dssim)?;
        let g = backward(&f, &v.camera, &l.grad)?;
        let frac = (step - 1) as f32 / (c.steps.max(2) - 1) as f32;
        let lr_means = c.lr_scale * extent * 1.6e-4 * (1e-2f32).powf(frac);
        let k = s.sh_coeffs();
        let t = step as i32;
        adam.means
            .step(s.means.as_flattened_mut(), &g.means, t, |_| lr_means);
        adam.quats
            .step(s.quats.as_flattened_mut(), &g.quats, t, |_| {
                c.lr_scale * 1e-3
            });
        adam.log_scales
            .step(s.log_scales.as_flattened_mut(), &g.log_scales, t, |_| {
                c.lr_scale * 5e-3
            });
        adam.logits
            .step(&mut s.opacity_logits, &g.opacity_logits, t, |_| {
                c.lr_scale * 0.05
            });
        adam.sh.step(&mut s.sh, &g.sh, t, |i| {
            if (i / 3) % k == 0 {
                c.lr_scale * 2.5e-3
            } else {
                c.lr_scale * 2.5e-3 / 20.0
            }
        });
        step_secs += ts.elapsed().as_secs_f64();
        stats.accumulate(&g.means2d, &g.radii, w, h)?;
        let psnr = loss::psnr(&img, &v.image, w, h)?;
        acc_loss += l.value;
        acc_psnr += psnr;
        acc_n += 1;
        progress(step, l.value, psnr, s.len());
        if step % report_every == 0 || step == c.steps {
            reports.push(Progress {
                step,
                loss: acc_loss / acc_n as f64,
                psnr: acc_psnr / acc_n as f64,
                gaussians: s.len(),
            });
            (acc_loss, acc_psnr, acc_n) = (0.0, 0.0, 0);
        }
        if step >= c.densify_from
            && step <= c.densify_until
            && step % c.densify_every == 0
            && step < c.steps
        {
            let before = s.len();
            let (d, origin) =
                density::densify(&s, &stats, extent as f64, &c.densify, c.seed ^ step as u64)?;
            let mut from: Vec<Option<u32>> = origin
                .iter()
                .map(|o| match o {
                    Origin::Kept(i) => Some(*i),
                    Origin::Clone(_) | Origin::Split(_) => None,
                })
                .collect();
            s = d;
            let after_densify = s.len();
            if c.balanced && !s.is_empty() {
                let (m, clusters) =
                    density::merge_splats(&s, &c.similarity, c.merge_cell * extent as f64)?;
                from = clusters
                    .iter()
                    .map(|cl| match cl.as_slice() {
                        [i] => from[*i as usize],
                        _ => None,
                    })
                    .collect();
                s = m;
            }
            if s.is_empty() {
                return Err(Error::invalid(
                    OP,
                    format!("every Gaussian was pruned at step {step}"),
                ));
            }
            adam = adam.remap(&from, k);
            stats = GradStats::new(s.len());
            events.push(DensifyEvent {
                step,
                before,
                after_densify,
                after_merge: s.len(),
            });
        }
    }
    let (heldout_psnr, heldout_ssim) = evaluate(dev, &s, views, test, c.background, layout)?;
    let balance_end =
        forward(dev, &s, &first.camera, c.background, layout)?.balance(&first.camera)?;
    let report = TrainReport {
        mode: if c.balanced { "balanced" } else { "baseline" }.into(),
        device: dev.describe(),
        steps: c.steps,
        gaussians_start: init.len(),
        gaussians_end: s.len(),
        heldout_psnr_start,
        heldout_psnr,
        heldout_ssim,
        ms_per_step: 1e3 * step_secs / c.steps as f64,
        seconds: t0.elapsed().as_secs_f64(),
        balance_start,
        balance_end,
        densify: events,
        progress: reports,
    };
    Ok((report, s))
}

/// The synthetic scene ([`super::scene`]) rendered on `dev`: (ground truth, views).
pub fn synthetic(
    dev: &Device,
    c: &super::scene::SceneConfig,
    background: [f32; 3],
) -> Result<(Splats, Vec<View>)> {
    let gt = super::scene::ground_truth(c)?;
    let cams = super::scene::cameras(c)?;
    let views = super::scene::views(&gt, &cams, |s, cam| {
        forward(dev, s, cam, background, Layout::Baseline)?.image()
    })?;
    Ok((gt, views))
}

/// A random initial model for a scene that brings no points: `n` grey Gaussians uniform in the
/// ball of radius `extent / 2` around the mean camera centre, scales from their 3 nearest
/// neighbours (as [`super::scene::initial_model`]).
pub fn random_init(views: &[View], n: usize, seed: u64) -> Result<Splats> {
    if n == 0 || views.is_empty() {
        return Err(Error::invalid(
            OP,
            "a random initialisation needs at least one point and one view",
        ));
    }
    let cams: Vec<Camera> = views.iter().map(|v| v.camera.clone()).collect();
    let extent = super::scene::extent(&cams);
    let centres: Vec<[f32; 3]> = cams.iter().map(super::scene::centre).collect();
    let k = centres.len() as f32;
    let mid = [0, 1, 2].map(|a| centres.iter().map(|c| c[a]).sum::<f32>() / k);
    let mut r = Rng(seed);
    let mut means = Vec::with_capacity(n);
    while means.len() < n {
        let d = [0; 3].map(|_| 2.0 * r.unit() as f32 - 1.0);
        if d.iter().map(|v| v * v).sum::<f32>() <= 1.0 {
            means.push([0, 1, 2].map(|a| mid[a] + 0.5 * extent * d[a]));
        }
    }
    super::scene::init_from_points(means)
}

/// The markdown table of one or more training reports.
pub fn markdown(reports: &[TrainReport]) -> String {
    let mut s = String::from(
        "| mode | device | steps | Gaussians start → end | held-out PSNR start → end (dB) | \
         held-out SSIM | ms/step | pixel max/mean start → end | tile max/mean start → end |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        s += &format!(
            "| {} | {} | {} | {} → {} | {:.2} → {:.2} | {:.4} | {:.1} | {:.2} → {:.2} | {:.2} → {:.2} |\n",
            r.mode,
            r.device,
            r.steps,
            r.gaussians_start,
            r.gaussians_end,
            r.heldout_psnr_start,
            r.heldout_psnr,
            r.heldout_ssim,
            r.ms_per_step,
            r.balance_start.pixel_ratio,
            r.balance_end.pixel_ratio,
            r.balance_start.tile_ratio,
            r.balance_end.tile_ratio,
        );
    }
    s
}
