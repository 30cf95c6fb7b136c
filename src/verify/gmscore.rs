//! `gmscore.forward` and `gmscore.backward` checks (DD2, issue 16): fresh random mixtures
//! against the f64 reference ([`crate::reference::gmscore`]), within [`tol::F32`] (f32 inputs,
//! f32 arithmetic): the score and lse of the forward, and the two gradients of the backward
//! given the forward's f32 score (the reference's backward is given the same saved score, so
//! each op is checked on its own).
//!
//! The inputs are what DD2 feeds the op: a codebook with entries uniform in ±1 (codewords about
//! `sqrt(2d/3)` apart), per-position probabilities (dense, with zeros, one-hot, or peaked: 0.999
//! on one codeword), `x_t = α·e_k + σ·ε` with `k` drawn from `p` and `ε` uniform in ±1, `α` in
//! [0.2, 1], `σ` per position in [0.3, 1.5] or tiny (1e-3: the logits of every codeword but the
//! nearest are of order −1e5 and the online max keeps the sum finite), and `s_gen` uniform in
//! `±2/σ` per position.

use crate::device::Device;
use crate::ops::gmscore as op;
use crate::reference::gmscore::{self as reference, Mixture};
use crate::testing::{rel_l2, tol, Rng};

use super::{stage, Outcome, Row};

/// How the rows of `p` are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PKind {
    /// Every entry positive.
    Dense,
    /// About half the entries zero (at least one positive).
    Sparse,
    /// One entry 1, the rest 0.
    OneHot,
    /// One entry 0.999, the rest share 0.001.
    Peaked,
}

/// One problem.
#[derive(Clone, Debug)]
pub struct Case {
    pub label: String,
    pub codebook: Vec<f32>,
    pub p: Vec<f32>,
    pub x_t: Vec<f32>,
    pub alpha: Vec<f32>,
    pub sigma: Vec<f32>,
    pub d: usize,
    pub s_gen: Vec<f32>,
}

impl Case {
    /// `n` positions over `v` codewords of width `d`; `tiny_sigma`: every σ = 1e-3.
    pub fn generate(
        n: usize,
        v: usize,
        d: usize,
        kind: PKind,
        tiny_sigma: bool,
        seed: u64,
    ) -> Case {
        let mut r = Rng(seed);
        let sym = |r: &mut Rng| (r.unit() * 2.0 - 1.0) as f32;
        let codebook: Vec<f32> = (0..v * d).map(|_| sym(&mut r)).collect();
        let mut p = vec![0.0f32; n * v];
        let mut x_t = vec![0.0f32; n * d];
        let mut alpha = vec![0.0f32; n];
        let mut sigma = vec![0.0f32; n];
        let mut s_gen = vec![0.0f32; n * d];
        for row in 0..n {
            let pr = &mut p[row * v..(row + 1) * v];
            let hot = (r.next_u64() % v as u64) as usize;
            match kind {
                PKind::Dense | PKind::Sparse => {
                    let mut raw: Vec<f64> = (0..v)
                        .map(|c| {
                            let keep = kind == PKind::Dense || c == hot || r.next_u64() % 2 == 0;
                            if keep {
                                0.05 + r.unit()
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let t: f64 = raw.iter().sum();
                    raw.iter_mut().for_each(|x| *x /= t);
                    for (o, x) in pr.iter_mut().zip(raw) {
                        *o = x as f32;
                    }
                }
                PKind::OneHot => pr[hot] = 1.0,
                PKind::Peaked => {
                    let rest = if v > 1 { 0.001 / (v - 1) as f64 } else { 0.0 };
                    for (c, o) in pr.iter_mut().enumerate() {
                        *o = if c == hot { 0.999 } else { rest as f32 };
                    }
                    if v == 1 {
                        pr[0] = 1.0;
                    }
                }
            }
            // The component x_t is drawn from: p's inverse CDF (the hot one for one-hot).
            let k = {
                let (t, mut acc) = (r.unit(), 0.0f64);
                let mut k = hot;
                for (c, &x) in pr.iter().enumerate() {
                    acc += x as f64;
                    if x > 0.0 && acc > t {
                        k = c;
                        break;
                    }
                }
                k
            };
            let a = 0.2 + 0.8 * r.unit() as f32;
            let s = if tiny_sigma {
                1e-3
            } else {
                0.3 + 1.2 * r.unit() as f32
            };
            alpha[row] = a;
            sigma[row] = s;
            for j in 0..d {
                x_t[row * d + j] = a * codebook[k * d + j] + s * sym(&mut r);
                s_gen[row * d + j] = 2.0 / s * sym(&mut r);
            }
        }
        Case {
            label: format!(
                "P={n} V={v} d={d} p={kind:?} sigma={}",
                if tiny_sigma { "1e-3" } else { "[0.3, 1.5]" }
            ),
            codebook,
            p,
            x_t,
            alpha,
            sigma,
            d,
            s_gen,
        }
    }

    pub fn mixture(&self) -> Mixture<'_> {
        Mixture {
            codebook: &self.codebook,
            p: &self.p,
            x_t: &self.x_t,
            alpha: &self.alpha,
            sigma: &self.sigma,
            d: self.d,
        }
    }

    /// `[forward, backward]` on `dev` against the reference.
    pub fn outcomes(&self, dev: &Device) -> [Outcome; 2] {
        let m = self.mixture();
        let (ref_score, ref_lse) = match reference::forward(&m) {
            Ok(v) => v,
            Err(e) => {
                let o = Outcome::not_run(format!("reference: {e}"));
                return [o.clone(), o];
            }
        };
        let got = stage(dev, op::FORWARD_OP, || {
            op::forward_backward_host(dev, &m, &self.s_gen)
        });
        let op::HostRun {
            score,
            lse,
            grad_s_gen: gs,
            grad_x_t: gx,
        } = match got {
            Ok(v) => v,
            Err(e) => {
                return [
                    Outcome::not_run(e),
                    Outcome::not_run("not run: the forward failed".into()),
                ]
            }
        };
        let fwd = compare(&[("score", &score, &ref_score), ("lse", &lse, &ref_lse)]);
        let saved: Vec<f64> = score.iter().map(|&s| s as f64).collect();
        let bwd = match reference::backward(&m, &self.s_gen, &saved) {
            Ok((ref_gs, ref_gx)) => {
                compare(&[("grad_s_gen", &gs, &ref_gs), ("grad_x_t", &gx, &ref_gx)])
            }
            Err(e) => Outcome::not_run(format!("reference: {e}")),
        };
        [fwd, bwd]
    }
}

/// The largest relative L2 error of the named outputs, passing within [`tol::F32`].
fn compare(outs: &[(&str, &[f32], &[f64])]) -> Outcome {
    let mut worst = (0.0f64, "");
    for &(name, got, want) in outs {
        let e = rel_l2(got, want);
        if e.is_nan() || e > worst.0 || worst.1.is_empty() {
            worst = (e, name);
        }
    }
    let errs: Vec<String> = outs
        .iter()
        .map(|&(name, got, want)| format!("{name} {:.1e}", rel_l2(got, want)))
        .collect();
    Outcome {
        error: format!("{:.1e}", worst.0),
        result: if worst.0 <= tol::F32 {
            Ok(())
        } else {
            Err(format!(
                "{} exceeds {:.0e} ({})",
                worst.1,
                tol::F32,
                errs.join(", ")
            ))
        },
    }
}

/// The verify cases: every kind of p, both σ regimes, V = 1 and V = 16384, d = 8 .. 64 across
/// the three kernel widths, sizes past one block, P = 0.
pub fn cases() -> Vec<Case> {
    vec![
        Case::generate(37, 100, 8, PKind::Dense, false, 0x6d1),
        Case::generate(70, 257, 24, PKind::Sparse, false, 0x6d2),
        Case::generate(33, 64, 64, PKind::OneHot, false, 0x6d3),
        Case::generate(20, 50, 16, PKind::Peaked, true, 0x6d4),
        Case::generate(41, 97, 40, PKind::Dense, true, 0x6d5),
        Case::generate(5, 1, 13, PKind::OneHot, false, 0x6d6),
        Case::generate(3, 16384, 8, PKind::Dense, false, 0x6d7),
        Case::generate(0, 7, 8, PKind::Dense, false, 0x6d8),
    ]
}

/// The rows of one device: forward and backward per case.
pub fn rows(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for c in cases() {
        let [f, b] = c.outcomes(dev);
        rows.push(f.row(op::FORWARD_OP, "f32", dev, c.label.clone()));
        rows.push(b.row(op::BACKWARD_OP, "f32", dev, c.label));
    }
    rows
}
