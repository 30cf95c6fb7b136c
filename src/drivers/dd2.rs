//! DD2 (Distilled Decoding 2) in miniature: a one-step generator distilled from an
//! autoregressive teacher through the teacher's closed-form conditional score (`ops::gmscore`),
//! with the generator's GEMMs on tessera's GEMM.
//!
//! # The teacher
//!
//! A Markov chain over a codebook of `V` tokens with embeddings `E [V, d]`: the first token from
//! `p0`, each next one from `T[prev]`. So the joint of a sequence of `L` tokens is known exactly:
//! `p(x) = p0[x_0] · Π_i T[x_{i−1}][x_i]`. At position `i`, given the prefix, the teacher's
//! next-token distribution `p` and the flow `x_t = α_t·x_0 + σ_t·ε` (rectified flow:
//! `α_t = 1 − t`, `σ_t = t`) make the noised conditional a Gaussian mixture over `α_t·e_v` with
//! weights `p_v`; its score is the kernel's `s(x_t)`.
//!
//! # The generator
//!
//! A two-layer MLP maps noise `z [B, L·d]` to `x_0 [B, L·d]`, every position at once:
//! `u = z·W1ᵀ + b1`, `h = silu(u)`, `x_0 = h·W2ᵀ + b2`, the two products (and the three of the
//! backward) on `ops::gemm::dense` in bf16 with f32 accumulation; master weights and Adam in
//! f32 on the host. A sample's tokens are its positions' nearest codebook entries (the VQ
//! decode).
//!
//! # Training: conditional score distillation
//!
//! Per step, a batch of `B` samples at one `t ~ U(t_min, t_max)`: the tokens of each sample
//! give every position its prefix; the teacher's conditional `p` and the generator's own
//! conditional `q̂` (its token frequencies in the batch per position and previous token, +1
//! smoothing) both give mixture scores at the same `x_t`: `s_real` and `s_fake`, two
//! `gmscore.forward` calls. The loss is the kernel's `‖s_fake − s_real‖²` and the generator's
//! gradient is the kernel's `∂/∂s_gen = 2(s_fake − s_real)` (`gmscore.backward` of the
//! teacher's mixture with `s_gen = s_fake`) applied at `x_t` (score
//! distillation's gradient of `KL(q_t ‖ p_t)`, with the fake score's own Jacobian not
//! differentiated), weighted by `α_t·σ_t²/2` and averaged over the batch:
//! `∂/∂x_0 = α_t σ_t² (s_fake − s_real) / B`. By the chain rule of KL over positions this drives
//! the generator's joint towards the teacher's.
//!
//! The report: the KL divergence `KL(q̂ ‖ p)` of the sampled joint (over all `V^L` sequences,
//! from `eval_samples` generator samples) from the teacher's before and after training, the
//! total variation, and the KL of the same number of samples drawn from the teacher itself (the
//! estimator's floor).

use serde::Serialize;

use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::gemm::{self, Epilogue};
use crate::ops::gmscore;
use crate::testing::Rng;
use half::bf16;

const OP: &str = "dd2.demo";

/// The demo's settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    /// Codebook size `V` (2..=16: the joint has `V^L` sequences).
    pub vocab: usize,
    /// Embedding width `d` (8..=64, the kernel's range).
    pub dim: usize,
    /// Sequence length `L` (1..=6).
    pub len: usize,
    /// The MLP's hidden width.
    pub hidden: usize,
    /// Samples per step.
    pub batch: usize,
    /// Training steps.
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f32,
    /// The flow time range of training.
    pub t_min: f32,
    /// See `t_min`.
    pub t_max: f32,
    /// Samples for the KL estimates.
    pub eval_samples: usize,
    /// Teacher sharpness: `p0` and `T`'s rows are `softmax(sharpness · N(0, 1))`.
    pub sharpness: f32,
    /// Seed of the teacher, the generator and the noise.
    pub seed: u64,
}

impl Default for Config {
    /// V = 4, d = 8, L = 3, hidden 64, batch 256, 600 steps, lr 3e-3, t in [0.2, 0.8], 20 000
    /// evaluation samples, sharpness 1.5.
    fn default() -> Self {
        Config {
            vocab: 4,
            dim: 8,
            len: 3,
            hidden: 64,
            batch: 256,
            steps: 600,
            lr: 3e-3,
            t_min: 0.2,
            t_max: 0.8,
            eval_samples: 20_000,
            sharpness: 1.5,
            seed: 1,
        }
    }
}

impl Config {
    /// Checks the ranges of the module docs.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(OP, m));
        if !(2..=16).contains(&self.vocab) {
            return bad(format!("vocab = {} is outside 2..=16", self.vocab));
        }
        if !(8..=64).contains(&self.dim) {
            return bad(format!("dim = {} is outside 8..=64", self.dim));
        }
        if !(1..=6).contains(&self.len) {
            return bad(format!("len = {} is outside 1..=6", self.len));
        }
        if self.vocab.pow(self.len as u32) > 1 << 20 {
            return bad(format!(
                "vocab^len = {}^{} sequences is more than 2^20",
                self.vocab, self.len
            ));
        }
        if self.hidden == 0 || self.batch == 0 || self.eval_samples == 0 {
            return bad("hidden, batch and eval_samples must be >= 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr = {} must be finite and > 0", self.lr));
        }
        if !(self.t_min > 0.0 && self.t_min <= self.t_max && self.t_max < 1.0) {
            return bad(format!(
                "t range [{}, {}] must satisfy 0 < t_min <= t_max < 1",
                self.t_min, self.t_max
            ));
        }
        if !(self.sharpness.is_finite() && self.sharpness >= 0.0) {
            return bad(format!(
                "sharpness = {} must be finite, >= 0",
                self.sharpness
            ));
        }
        Ok(())
    }
}

/// The Markov-chain teacher.
#[derive(Clone, Debug, PartialEq)]
pub struct Teacher {
    /// `[V, d]` codebook embeddings.
    pub codebook: Vec<f32>,
    /// `[V]` first-token distribution.
    pub p0: Vec<f32>,
    /// `[V, V]` transitions, row `prev`.
    pub trans: Vec<f32>,
    /// `V`.
    pub vocab: usize,
    /// `d`.
    pub dim: usize,
}

fn normal(r: &mut Rng) -> f32 {
    let u1 = r.unit().max(f64::MIN_POSITIVE);
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * r.unit()).cos()) as f32
}

fn softmax_row(r: &mut Rng, v: usize, sharp: f32) -> Vec<f32> {
    let l: Vec<f32> = (0..v).map(|_| sharp * normal(r)).collect();
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = l.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

impl Teacher {
    /// A random teacher: codebook rows `N(0, I)` rescaled to norm 2; `p0` and `T` as
    /// `Config::sharpness` says.
    pub fn random(c: &Config) -> Result<Teacher> {
        c.validate()?;
        let mut r = Rng(c.seed ^ 0x7eac_4e12);
        let mut codebook = Vec::with_capacity(c.vocab * c.dim);
        for _ in 0..c.vocab {
            let row: Vec<f32> = (0..c.dim).map(|_| normal(&mut r)).collect();
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            codebook.extend(row.iter().map(|x| 2.0 * x / n));
        }
        let p0 = softmax_row(&mut r, c.vocab, c.sharpness);
        let trans = (0..c.vocab)
            .flat_map(|_| softmax_row(&mut r, c.vocab, c.sharpness))
            .collect();
        Ok(Teacher {
            codebook,
            p0,
            trans,
            vocab: c.vocab,
            dim: c.dim,
        })
    }

    /// The teacher's next-token distribution at a position with previous token `prev`
    /// (`None` at the first position).
    pub fn next(&self, prev: Option<usize>) -> &[f32] {
        match prev {
            None => &self.p0,
            Some(t) => &self.trans[t * self.vocab..(t + 1) * self.vocab],
        }
    }

    /// The exact joint over all `V^L` sequences (index: base-`V` digits, first token most
    /// significant), in f64.
    pub fn joint(&self, len: usize) -> Vec<f64> {
        let v = self.vocab;
        let n = v.pow(len as u32);
        (0..n)
            .map(|mut idx| {
                let mut toks = vec![0; len];
                for i in (0..len).rev() {
                    toks[i] = idx % v;
                    idx /= v;
                }
                let mut p = self.p0[toks[0]] as f64;
                for i in 1..len {
                    p *= self.trans[toks[i - 1] * v + toks[i]] as f64;
                }
                p
            })
            .collect()
    }

    /// `n` sequences sampled from the chain.
    pub fn sample(&self, len: usize, n: usize, r: &mut Rng) -> Vec<usize> {
        let mut out = Vec::with_capacity(n * len);
        for _ in 0..n {
            let mut prev = None;
            for _ in 0..len {
                let p = self.next(prev);
                let u = r.unit() as f32;
                let mut acc = 0.0;
                let mut tok = p.len() - 1;
                for (k, &pk) in p.iter().enumerate() {
                    acc += pk;
                    if u < acc {
                        tok = k;
                        break;
                    }
                }
                out.push(tok);
                prev = Some(tok);
            }
        }
        out
    }
}

/// The generator MLP (f32 master weights).
#[derive(Clone, Debug, PartialEq)]
pub struct Generator {
    /// `[hidden, L·d]`.
    pub w1: Vec<f32>,
    /// `[hidden]`.
    pub b1: Vec<f32>,
    /// `[L·d, hidden]`.
    pub w2: Vec<f32>,
    /// `[L·d]`.
    pub b2: Vec<f32>,
    /// `L·d`.
    pub width: usize,
    /// Hidden width.
    pub hidden: usize,
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn silu_grad(x: f32) -> f32 {
    let s = 1.0 / (1.0 + (-x).exp());
    s * (1.0 + x * (1.0 - s))
}

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// `A [m, k] · B [n, k]ᵀ` on the device's GEMM (bf16 inputs, f32 output), optional bias.
fn matmul(
    dev: &Device,
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let ab = dev.upload(&to_bf16(a), "dd2.a")?;
    let bb = dev.upload(&to_bf16(b), "dd2.b")?;
    let biasb: Option<DeviceBuffer<f32>> = bias.map(|x| dev.upload(x, "dd2.bias")).transpose()?;
    let mut epi = Epilogue::<f32>::new();
    if let Some(bb) = &biasb {
        epi = epi.bias(bb);
    }
    gemm::dense::<bf16, f32>(&ab, &bb, m, n, k, &epi)?.download()
}

/// What the forward keeps for the backward.
struct Acts {
    u: Vec<f32>,
    h: Vec<f32>,
    x0: Vec<f32>,
}

impl Generator {
    /// Xavier-uniform weights, zero biases.
    pub fn random(c: &Config) -> Generator {
        let width = c.len * c.dim;
        let mut r = Rng(c.seed ^ 0x9e4e_7a70);
        let mut init = |fan_in: usize, fan_out: usize| -> Vec<f32> {
            let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
            (0..fan_in * fan_out)
                .map(|_| (a * (2.0 * r.unit() - 1.0)) as f32)
                .collect()
        };
        Generator {
            w1: init(width, c.hidden),
            b1: vec![0.0; c.hidden],
            w2: init(c.hidden, width),
            b2: vec![0.0; width],
            width,
            hidden: c.hidden,
        }
    }

    fn forward(&self, dev: &Device, z: &[f32], b: usize) -> Result<Acts> {
        let u = matmul(dev, z, &self.w1, b, self.hidden, self.width, Some(&self.b1))?;
        let h: Vec<f32> = u.iter().map(|&x| silu(x)).collect();
        let x0 = matmul(
            dev,
            &h,
            &self.w2,
            b,
            self.width,
            self.hidden,
            Some(&self.b2),
        )?;
        Ok(Acts { u, h, x0 })
    }

    /// `x_0` for noise `z [b, L·d]`.
    pub fn sample(&self, dev: &Device, z: &[f32], b: usize) -> Result<Vec<f32>> {
        Ok(self.forward(dev, z, b)?.x0)
    }

    /// Gradients `(w1, b1, w2, b2)` for `∂L/∂x_0 = g [b, L·d]`.
    fn backward(
        &self,
        dev: &Device,
        z: &[f32],
        a: &Acts,
        g: &[f32],
        b: usize,
    ) -> Result<[Vec<f32>; 4]> {
        let (w, hd) = (self.width, self.hidden);
        let gt = transpose(g, b, w);
        // gW2 [w, hd] = gᵀ [w, b] · hᵀ[hd, b]ᵀ
        let gw2 = matmul(dev, &gt, &transpose(&a.h, b, hd), w, hd, b, None)?;
        let gb2: Vec<f32> = (0..w)
            .map(|j| gt[j * b..(j + 1) * b].iter().sum())
            .collect();
        // gh [b, hd] = g [b, w] · W2ᵀ: B operand [hd, w] = W2ᵀ.
        let gh = matmul(dev, g, &transpose(&self.w2, w, hd), b, hd, w, None)?;
        let gu: Vec<f32> = gh
            .iter()
            .zip(&a.u)
            .map(|(g, &u)| g * silu_grad(u))
            .collect();
        let gut = transpose(&gu, b, hd);
        let gw1 = matmul(dev, &gut, &transpose(z, b, w), hd, w, b, None)?;
        let gb1: Vec<f32> = (0..hd)
            .map(|j| gut[j * b..(j + 1) * b].iter().sum())
            .collect();
        Ok([gw1, gb1, gw2, gb2])
    }
}

/// Nearest codebook entry of each position of each sample: `[n, L]`.
pub fn decode(t: &Teacher, x0: &[f32], len: usize) -> Vec<usize> {
    let d = t.dim;
    x0.chunks_exact(d)
        .map(|x| {
            (0..t.vocab)
                .map(|v| {
                    let e = &t.codebook[v * d..(v + 1) * d];
                    x.iter().zip(e).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()
                })
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(v, _)| v)
        })
        .collect::<Vec<_>>()
        .chunks_exact(len)
        .flatten()
        .copied()
        .collect()
}

/// The empirical joint of token sequences `[n, L]` over the `V^L` sequences.
pub fn empirical(tokens: &[usize], vocab: usize, len: usize) -> Vec<f64> {
    let mut c = vec![0.0; vocab.pow(len as u32)];
    let n = tokens.len() / len;
    for s in tokens.chunks_exact(len) {
        c[s.iter().fold(0, |a, &t| a * vocab + t)] += 1.0;
    }
    c.iter().map(|x| x / n.max(1) as f64).collect()
}

/// `KL(q ‖ p)` in nats (`p > 0` where `q > 0`; terms with `q = 0` are 0).
pub fn kl(q: &[f64], p: &[f64]) -> f64 {
    q.iter()
        .zip(p)
        .filter(|(q, _)| **q > 0.0)
        .map(|(q, p)| q * (q / p).ln())
        .sum()
}

/// Total variation distance.
pub fn tv(q: &[f64], p: &[f64]) -> f64 {
    0.5 * q.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// The two scores of one step, `(s_real, ∂L/∂s_gen)` for `L = ‖s_fake − s_real‖²`: two
/// `gmscore.forward` calls at the same `x [rows, d]` (teacher weights `p_real`, the generator's
/// `p_fake`), then `gmscore.backward` of the teacher's mixture with `s_gen = s_fake`.
#[allow(clippy::too_many_arguments)]
fn score_step(
    dev: &Device,
    x: &[f32],
    p_real: &[f32],
    p_fake: &[f32],
    codebook: &DeviceBuffer<f32>,
    alpha: f32,
    sigma: f32,
    d: usize,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let rows = x.len() / d;
    let xb = dev.upload(x, "dd2.x_t")?;
    let ab = dev.upload(&vec![alpha; rows], "dd2.alpha")?;
    let sb = dev.upload(&vec![sigma; rows], "dd2.sigma")?;
    let pr = dev.upload(p_real, "dd2.p_real")?;
    let real = gmscore::forward(codebook, &pr, &xb, &ab, &sb, d)?;
    let fake = gmscore::forward(
        codebook,
        &dev.upload(p_fake, "dd2.p_fake")?,
        &xb,
        &ab,
        &sb,
        d,
    )?;
    let g = gmscore::backward(
        codebook,
        &pr,
        &xb,
        &ab,
        &sb,
        d,
        &fake.score,
        &real.score,
        &real.lse,
    )?;
    Ok((
        real.score.download()?,
        fake.score.download()?,
        g.grad_s_gen.download()?,
    ))
}

/// Adam state for one parameter tensor.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    fn new(n: usize) -> Adam {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    fn step(&mut self, p: &mut [f32], g: &[f32], t: i32, lr: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for i in 0..p.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + eps);
        }
    }
}

/// One evaluation of the generator's joint.
#[derive(Clone, Debug, Serialize)]
pub struct Eval {
    /// `KL(q̂ ‖ p)`, nats.
    pub kl: f64,
    /// Total variation.
    pub tv: f64,
}

/// A progress point.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    /// Step.
    pub step: usize,
    /// Mean score-matching loss `‖s_fake − s_real‖²` per position over the steps since the
    /// last point.
    pub loss: f64,
}

/// The demo's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The settings.
    pub config: Config,
    /// The device.
    pub device: String,
    /// The generator's joint before training.
    pub before: Eval,
    /// After training.
    pub after: Eval,
    /// The same number of samples from the teacher itself: the estimator's floor.
    pub floor: Eval,
    /// Training loss over time.
    pub progress: Vec<Point>,
    /// Wall time of training, seconds (CPU figure off a GPU).
    pub seconds: f64,
}

fn noise(r: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| normal(r)).collect()
}

fn evaluate(
    dev: &Device,
    g: &Generator,
    t: &Teacher,
    c: &Config,
    joint: &[f64],
    r: &mut Rng,
) -> Result<Eval> {
    let mut toks = Vec::with_capacity(c.eval_samples * c.len);
    let mut left = c.eval_samples;
    while left > 0 {
        let b = left.min(4096);
        let z = noise(r, b * g.width);
        toks.extend(decode(t, &g.sample(dev, &z, b)?, c.len));
        left -= b;
    }
    let q = empirical(&toks, c.vocab, c.len);
    Ok(Eval {
        kl: kl(&q, joint),
        tv: tv(&q, joint),
    })
}

/// Runs the demo on `dev`: teacher, generator, training, and the before/after KL.
pub fn demo(dev: &Device, c: &Config, mut progress: impl FnMut(usize, f64)) -> Result<Report> {
    c.validate()?;
    let t = Teacher::random(c)?;
    let joint = t.joint(c.len);
    let mut g = Generator::random(c);
    let mut r = Rng(c.seed ^ 0x51a7_e5d0);
    let before = evaluate(dev, &g, &t, c, &joint, &mut r)?;
    let floor = {
        let toks = t.sample(c.len, c.eval_samples, &mut r);
        let q = empirical(&toks, c.vocab, c.len);
        Eval {
            kl: kl(&q, &joint),
            tv: tv(&q, &joint),
        }
    };
    let codebook = dev.upload(&t.codebook, "dd2.codebook")?;
    let (v, len, b) = (c.vocab, c.len, c.batch);
    let mut opt = [
        Adam::new(g.w1.len()),
        Adam::new(g.b1.len()),
        Adam::new(g.w2.len()),
        Adam::new(g.b2.len()),
    ];
    let t0 = std::time::Instant::now();
    let mut points = Vec::new();
    let (mut acc, mut acc_n) = (0.0, 0usize);
    let every = (c.steps / 20).max(1);
    for step in 1..=c.steps {
        let z = noise(&mut r, b * g.width);
        let a = g.forward(dev, &z, b)?;
        let toks = decode(&t, &a.x0, len);
        // The generator's conditional token frequencies in this batch (+1 smoothing):
        // [len][prev (V + 1 slots; slot V = no previous token)][V].
        let mut cnt = vec![1.0f32; len * (v + 1) * v];
        for s in toks.chunks_exact(len) {
            for i in 0..len {
                let prev = if i == 0 { v } else { s[i - 1] };
                cnt[(i * (v + 1) + prev) * v + s[i]] += 1.0;
            }
        }
        for row in cnt.chunks_exact_mut(v) {
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= sum);
        }
        let mut p_real = Vec::with_capacity(b * len * v);
        let mut p_fake = Vec::with_capacity(b * len * v);
        for s in toks.chunks_exact(len) {
            for i in 0..len {
                let prev = if i == 0 { None } else { Some(s[i - 1]) };
                p_real.extend_from_slice(t.next(prev));
                let slot = prev.unwrap_or(v);
                p_fake.extend_from_slice(&cnt[(i * (v + 1) + slot) * v..][..v]);
            }
        }
        let tt = c.t_min + (c.t_max - c.t_min) * r.unit() as f32;
        let (alpha, sigma) = (1.0 - tt, tt);
        let eps = noise(&mut r, a.x0.len());
        let xt: Vec<f32> =
            a.x0.iter()
                .zip(&eps)
                .map(|(x, e)| alpha * x + sigma * e)
                .collect();
        let (s_real, s_fake, grad_s_gen) =
            score_step(dev, &xt, &p_real, &p_fake, &codebook, alpha, sigma, c.dim)?;
        // ∂/∂x_0 = α σ² (s_fake − s_real) / B, from the kernel's ∂L/∂s_gen = 2(s_fake − s_real).
        let w = 0.5 * alpha * sigma * sigma / b as f32;
        let gx0: Vec<f32> = grad_s_gen.iter().map(|g| w * g).collect();
        let l: f64 = s_fake
            .iter()
            .zip(&s_real)
            .map(|(f, s)| ((f - s) as f64).powi(2))
            .sum::<f64>()
            / (b * len) as f64;
        acc += l;
        acc_n += 1;
        progress(step, l);
        if step % every == 0 || step == c.steps {
            points.push(Point {
                step,
                loss: acc / acc_n as f64,
            });
            (acc, acc_n) = (0.0, 0);
        }
        let grads = g.backward(dev, &z, &a, &gx0, b)?;
        let ti = step as i32;
        // Cosine decay to 10% of the rate over the run.
        let frac = (step - 1) as f32 / c.steps.max(2).saturating_sub(1) as f32;
        let lr = c.lr * (0.1 + 0.45 * (1.0 + (std::f32::consts::PI * frac).cos()));
        opt[0].step(&mut g.w1, &grads[0], ti, lr);
        opt[1].step(&mut g.b1, &grads[1], ti, lr);
        opt[2].step(&mut g.w2, &grads[2], ti, lr);
        opt[3].step(&mut g.b2, &grads[3], ti, lr);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let after = evaluate(dev, &g, &t, c, &joint, &mut r)?;
    Ok(Report {
        config: c.clone(),
        device: dev.describe(),
        before,
        after,
        floor,
        progress: points,
        seconds,
    })
}

/// The report as markdown.
pub fn markdown(r: &Report) -> String {
    format!(
        "| | KL(q̂ ‖ p) (nats) | total variation |\n|---|---:|---:|\n\
         | generator before training | {:.4} | {:.4} |\n\
         | generator after {} steps | {:.4} | {:.4} |\n\
         | {} teacher samples (floor) | {:.4} | {:.4} |\n\n\
         V = {}, d = {}, L = {} ({} sequences), {} evaluation samples, {} on {}, {:.1} s\n",
        r.before.kl,
        r.before.tv,
        r.config.steps,
        r.after.kl,
        r.after.tv,
        r.config.eval_samples,
        r.floor.kl,
        r.floor.tv,
        r.config.vocab,
        r.config.dim,
        r.config.len,
        r.config.vocab.pow(r.config.len as u32),
        r.config.eval_samples,
        r.config.steps,
        r.device,
        r.seconds
    )
}
