//! DD2's conditional score (issue 16): the f64 oracle of `ops::gmscore` and its native CPU path.
//!
//! At position `r`, with codebook `E [V, d]`, probabilities `p[r, :]` over the codewords, the
//! noised point `x = x_t[r]`, `α = alpha[r]` and `σ = sigma[r]` (the flow `x_t = α·x_0 + σ·ε`),
//! the noised conditional distribution is the Gaussian mixture `Σ_v p_v N(α e_v, σ² I)` and
//!
//! - `δ_v = α e_v − x`, `logit_v = ln p_v − ‖δ_v‖² / (2σ²)` (`p_v = 0`: `−∞`, excluded);
//! - `lse = logsumexp_v logit_v` (the mixture's log-density at `x` is `lse − (d/2)·ln(2πσ²)`),
//!   `w_v = exp(logit_v − lse)`;
//! - the score `s = (Σ_v w_v α e_v − x) / σ² = (Σ_v w_v δ_v) / σ²`.
//!
//! The loss of one call is `L = Σ_r ‖s_gen[r] − s[r]‖²` (a sum over positions; weight a
//! position by scaling its rows of both gradients, they are linear in `u`). With `u = s_gen − s`:
//!
//! - `∂L/∂s_gen = 2u`;
//! - `∂L/∂x = −2 (∂s/∂x)ᵀ u` with `∂s/∂x = (α²/σ⁴) Cov_w(e) − I/σ²` (symmetric; from
//!   `∂ ln w_v / ∂x = α (e_v − m)/σ²`, `m = Σ w_v e_v`), so
//!   `∂L/∂x = 2u/σ² − (2/σ⁴) (B − A (A·u))`, `B = Σ_v w_v δ_v (δ_v·u)`, `A = Σ_v w_v δ_v = σ² s`:
//!   `α² Cov_w(e) = Cov_w(δ)`, the covariance taken about `x/α`, where the deltas are exact.
//!
//! Everything is f64 from the f32 inputs (widened exactly). Validation is [`Mixture::check`]:
//! the shapes, then the contents position by position ([`Fault`]), in the order the kernels'
//! status words report them.

use rayon::prelude::*;

/// Codewords at most.
pub const MAX_V: usize = 16384;
/// The smallest codeword width.
pub const D_MIN: usize = 8;
/// The largest codeword width.
pub const D_MAX: usize = 64;
/// `sigma` must lie in `[SIGMA_MIN, SIGMA_MAX]`: `1/σ⁴` (the backward) and `1/(2σ²)` (the
/// logits) then stay normal f32 numbers with room to spare.
pub const SIGMA_MIN: f32 = 1e-6;
/// See [`SIGMA_MIN`].
pub const SIGMA_MAX: f32 = 1e6;
/// A row of `p` must sum to 1 within this (the kernels sum in f32).
pub const ROW_SUM_TOL: f64 = 1e-3;

/// One call's inputs: `codebook [V, d]`, `p [P, V]`, `x_t [P, d]`, `alpha [P]`, `sigma [P]`
/// (row-major f32).
#[derive(Clone, Copy, Debug)]
pub struct Mixture<'a> {
    pub codebook: &'a [f32],
    pub p: &'a [f32],
    pub x_t: &'a [f32],
    pub alpha: &'a [f32],
    pub sigma: &'a [f32],
    pub d: usize,
}

/// The first bad input entry, in check order: per position, `alpha`, `sigma`, the entries of
/// `p`'s row by column, the row's sum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    Alpha { row: usize, value: f32 },
    Sigma { row: usize, value: f32 },
    PNan { row: usize, v: usize },
    PInf { row: usize, v: usize },
    PNeg { row: usize, v: usize, value: f32 },
    RowSum { row: usize, sum: f64 },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Fault::Alpha { row, value } => write!(f, "alpha[{row}] = {value} is not finite"),
            Fault::Sigma { row, value } => write!(
                f,
                "sigma[{row}] = {value} is outside [{SIGMA_MIN:e}, {SIGMA_MAX:e}]"
            ),
            Fault::PNan { row, v } => write!(f, "p[{row}, {v}] is NaN"),
            Fault::PInf { row, v } => write!(f, "p[{row}, {v}] is infinite"),
            Fault::PNeg { row, v, value } => write!(f, "p[{row}, {v}] = {value} is negative"),
            Fault::RowSum { row, sum } => write!(
                f,
                "row {row} of p sums to {sum}, not 1 within {ROW_SUM_TOL:e}"
            ),
        }
    }
}

/// `(P, V)` from the lengths of `codebook`, `p`, `x_t`, `alpha`, `sigma` and the width `d`, or
/// what is wrong with them (in this order: `d`, the codebook, `x_t`, `p`, `alpha`, `sigma`).
pub fn shape(
    codebook: usize,
    p: usize,
    x_t: usize,
    alpha: usize,
    sigma: usize,
    d: usize,
) -> Result<(usize, usize), String> {
    if !(D_MIN..=D_MAX).contains(&d) {
        return Err(format!("d = {d} is outside {D_MIN}..={D_MAX}"));
    }
    if codebook % d != 0 {
        return Err(format!(
            "codebook has {codebook} elements, not a multiple of d = {d}"
        ));
    }
    let v = codebook / d;
    if !(1..=MAX_V).contains(&v) {
        return Err(format!("V = {v} codewords is outside 1..={MAX_V}"));
    }
    if x_t % d != 0 {
        return Err(format!("x_t has {x_t} elements, not a multiple of d = {d}"));
    }
    let n = x_t / d;
    if n >= i32::MAX as usize {
        return Err(format!("{n} positions exceed i32::MAX - 1"));
    }
    if p != n * v {
        return Err(format!("p has {p} elements, not P · V = {n} · {v}"));
    }
    for (what, len) in [("alpha", alpha), ("sigma", sigma)] {
        if len != n {
            return Err(format!("{what} has {len} elements, not P = {n}"));
        }
    }
    Ok((n, v))
}

impl<'a> Mixture<'a> {
    /// `(P, V)` from the lengths ([`shape`]), or what is wrong with them.
    pub fn shape(&self) -> Result<(usize, usize), String> {
        shape(
            self.codebook.len(),
            self.p.len(),
            self.x_t.len(),
            self.alpha.len(),
            self.sigma.len(),
            self.d,
        )
    }

    /// The first fault of position `row`'s inputs.
    pub fn row_fault(&self, row: usize, v: usize) -> Option<Fault> {
        let (a, s) = (self.alpha[row], self.sigma[row]);
        if !a.is_finite() {
            return Some(Fault::Alpha { row, value: a });
        }
        if !(SIGMA_MIN..=SIGMA_MAX).contains(&s) {
            return Some(Fault::Sigma { row, value: s });
        }
        let pr = &self.p[row * v..(row + 1) * v];
        for (c, &x) in pr.iter().enumerate() {
            if x.is_nan() {
                return Some(Fault::PNan { row, v: c });
            }
            if x.is_infinite() && x > 0.0 {
                return Some(Fault::PInf { row, v: c });
            }
            if x < 0.0 {
                return Some(Fault::PNeg {
                    row,
                    v: c,
                    value: x,
                });
            }
        }
        let sum: f64 = pr.iter().map(|&x| x as f64).sum();
        ((sum - 1.0).abs() > ROW_SUM_TOL).then_some(Fault::RowSum { row, sum })
    }

    /// [`Mixture::shape`], then the first [`Fault`] of the contents.
    pub fn check(&self) -> Result<(usize, usize), String> {
        let (n, v) = self.shape()?;
        if let Some(f) = (0..n).find_map(|r| self.row_fault(r, v)) {
            return Err(f.to_string());
        }
        Ok((n, v))
    }

    /// Position `r`'s weights `w_v` (normalised, f64) and `lse`.
    fn weights(&self, r: usize, v: usize) -> (Vec<f64>, f64) {
        let d = self.d;
        let x = &self.x_t[r * d..(r + 1) * d];
        let (a, s) = (self.alpha[r] as f64, self.sigma[r] as f64);
        let logits: Vec<f64> = (0..v)
            .map(|c| {
                let pv = self.p[r * v + c] as f64;
                if pv == 0.0 {
                    return f64::NEG_INFINITY;
                }
                let e = &self.codebook[c * d..(c + 1) * d];
                let dist: f64 = e
                    .iter()
                    .zip(x)
                    .map(|(&e, &x)| (a * e as f64 - x as f64).powi(2))
                    .sum();
                pv.ln() - dist / (2.0 * s * s)
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            return (vec![0.0; v], f64::NEG_INFINITY);
        }
        let l: f64 = logits.iter().map(|&g| (g - m).exp()).sum();
        let lse = m + l.ln();
        (logits.iter().map(|&g| (g - lse).exp()).collect(), lse)
    }

    /// `δ_v = α e_v − x` of position `r`, in f64.
    fn delta(&self, r: usize, c: usize) -> impl Iterator<Item = f64> + 'a {
        let d = self.d;
        let a = self.alpha[r] as f64;
        let e = &self.codebook[c * d..(c + 1) * d];
        let x = &self.x_t[r * d..(r + 1) * d];
        e.iter().zip(x).map(move |(&e, &x)| a * e as f64 - x as f64)
    }
}

/// The score `[P, d]` and `lse [P]` (f64), after [`Mixture::check`].
pub fn forward(m: &Mixture) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (n, v) = m.check()?;
    let d = m.d;
    let rows: Vec<(Vec<f64>, f64)> = (0..n)
        .into_par_iter()
        .map(|r| {
            let (w, lse) = m.weights(r, v);
            let mut acc = vec![0.0f64; d];
            for (c, &wc) in w.iter().enumerate() {
                if wc != 0.0 {
                    for (a, dl) in acc.iter_mut().zip(m.delta(r, c)) {
                        *a += wc * dl;
                    }
                }
            }
            let s2 = (m.sigma[r] as f64).powi(2);
            if lse == f64::NEG_INFINITY {
                acc.iter_mut().for_each(|a| *a = f64::NAN);
            }
            (acc.into_iter().map(|a| a / s2).collect(), lse)
        })
        .collect();
    let mut score = Vec::with_capacity(n * d);
    let mut lse = Vec::with_capacity(n);
    for (s, l) in rows {
        score.extend(s);
        lse.push(l);
    }
    Ok((score, lse))
}

/// The gradients of `L = Σ_r ‖s_gen[r] − score[r]‖²`: `(∂L/∂s_gen, ∂L/∂x_t)`, both `[P, d]`
/// (f64), with `score` the forward's (given, as the op's backward is given it; the weights are
/// recomputed here in f64).
pub fn backward(m: &Mixture, s_gen: &[f32], score: &[f64]) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (n, v) = m.check()?;
    let d = m.d;
    for (what, len) in [("s_gen", s_gen.len()), ("score", score.len())] {
        if len != n * d {
            return Err(format!("{what} has {len} elements, not P · d = {n} · {d}"));
        }
    }
    let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..n)
        .into_par_iter()
        .map(|r| {
            let (w, _) = m.weights(r, v);
            let u: Vec<f64> = (0..d)
                .map(|j| s_gen[r * d + j] as f64 - score[r * d + j])
                .collect();
            let s2 = (m.sigma[r] as f64).powi(2);
            let a: Vec<f64> = score[r * d..(r + 1) * d].iter().map(|&s| s * s2).collect();
            let au: f64 = a.iter().zip(&u).map(|(a, u)| a * u).sum();
            let mut b = vec![0.0f64; d];
            for (c, &wc) in w.iter().enumerate() {
                if wc != 0.0 {
                    let dl: Vec<f64> = m.delta(r, c).collect();
                    let du: f64 = dl.iter().zip(&u).map(|(x, y)| x * y).sum();
                    for (bj, x) in b.iter_mut().zip(&dl) {
                        *bj += wc * du * x;
                    }
                }
            }
            let gs = u.iter().map(|&u| 2.0 * u).collect();
            let gx = (0..d)
                .map(|j| 2.0 * u[j] / s2 - 2.0 * (b[j] - a[j] * au) / (s2 * s2))
                .collect();
            (gs, gx)
        })
        .collect();
    let mut gs = Vec::with_capacity(n * d);
    let mut gx = Vec::with_capacity(n * d);
    for (a, b) in rows {
        gs.extend(a);
        gx.extend(b);
    }
    Ok((gs, gx))
}

/// `L = Σ ‖s_gen − score‖²` (f64).
pub fn loss(s_gen: &[f32], score: &[f64]) -> f64 {
    s_gen
        .iter()
        .zip(score)
        .map(|(&g, &s)| (g as f64 - s).powi(2))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixture<'a>(
        codebook: &'a [f32],
        p: &'a [f32],
        x_t: &'a [f32],
        alpha: &'a [f32],
        sigma: &'a [f32],
        d: usize,
    ) -> Mixture<'a> {
        Mixture {
            codebook,
            p,
            x_t,
            alpha,
            sigma,
            d,
        }
    }

    /// Two codewords on the first axis, d = 8: the score in closed form.
    #[test]
    fn two_components_by_hand() {
        let mut cb = vec![0.0f32; 16];
        cb[0] = 1.0; // e_0 = (1, 0, ..)
        cb[8] = -1.0; // e_1 = (-1, 0, ..)
        let p = [0.25f32, 0.75];
        let mut x = vec![0.0f32; 8];
        x[0] = 0.5;
        x[3] = 2.0;
        let (a, s) = (0.5f64, 0.8f32 as f64);
        let m = mixture(&cb, &p, &x, &[0.5], &[0.8], 8);
        let (score, lse) = forward(&m).unwrap();
        // d0 = |x - a e0|^2 = 0 + 4; d1 = (0.5 + 0.5)^2 + 4 = 5.
        let l0 = 0.25f64.ln() - 4.0 / (2.0 * s * s);
        let l1 = 0.75f64.ln() - 5.0 / (2.0 * s * s);
        let want_lse = (l0.exp() + l1.exp()).ln();
        assert!((lse[0] - want_lse).abs() < 1e-12);
        let (w0, w1) = ((l0 - want_lse).exp(), (l1 - want_lse).exp());
        let mean0 = a * (w0 - w1);
        assert!((score[0] - (mean0 - 0.5) / (s * s)).abs() < 1e-12);
        assert!((score[3] - (-2.0) / (s * s)).abs() < 1e-12);
        assert!(score[1].abs() < 1e-15);
    }

    /// One-hot p: the score is that of one Gaussian, (α e − x)/σ², whatever σ.
    #[test]
    fn one_hot_is_one_gaussian() {
        let cb: Vec<f32> = (0..3 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
        let x: Vec<f32> = (0..8).map(|i| (i as f32 * 0.11).cos()).collect();
        for s in [1e-3f32, 1.0] {
            let sig = [s];
            let m = mixture(&cb, &[0.0, 1.0, 0.0], &x, &[0.9], &sig, 8);
            let (score, lse) = forward(&m).unwrap();
            let dist: f64 = (0..8)
                .map(|j| (0.9f32 as f64 * cb[8 + j] as f64 - x[j] as f64).powi(2))
                .sum();
            assert!((lse[0] + dist / (2.0 * (s as f64).powi(2))).abs() < 1e-9 * lse[0].abs());
            for j in 0..8 {
                let want = (0.9f32 as f64 * cb[8 + j] as f64 - x[j] as f64) / (s as f64).powi(2);
                assert!((score[j] - want).abs() <= 1e-12 * want.abs().max(1.0));
            }
        }
    }

    /// The analytic backward against central differences of the loss, in f64 (the inputs are
    /// perturbed in f64 through a copy of the forward in f64).
    #[test]
    fn backward_matches_finite_differences() {
        let (v, d, n) = (5usize, 8usize, 3usize);
        let cb: Vec<f32> = (0..v * d)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.15)
            .collect();
        let mut p = vec![0.0f32; n * v];
        for r in 0..n {
            let raw: Vec<f32> = (0..v).map(|c| 1.0 + ((r * 3 + c) % 4) as f32).collect();
            let t: f32 = raw.iter().sum();
            for c in 0..v {
                p[r * v + c] = raw[c] / t;
            }
        }
        p[v + 2] += p[v + 4]; // a zero entry in row 1
        p[v + 4] = 0.0;
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.1)
            .collect();
        let alpha = [0.7f32, 0.4, 0.95];
        let sigma = [0.6f32, 0.9, 0.35];
        let s_gen: Vec<f32> = (0..n * d)
            .map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.5)
            .collect();
        let m = mixture(&cb, &p, &x, &alpha, &sigma, d);
        let (score, _) = forward(&m).unwrap();
        let (gs, gx) = backward(&m, &s_gen, &score).unwrap();
        // An f64 copy of the forward for perturbed x (the op's inputs are f32).
        let score_at = |r: usize, xr: &[f64]| -> Vec<f64> {
            let (a, s) = (alpha[r] as f64, sigma[r] as f64);
            let logits: Vec<f64> = (0..v)
                .map(|c| {
                    let pv = p[r * v + c] as f64;
                    let dist: f64 = (0..d)
                        .map(|j| (a * cb[c * d + j] as f64 - xr[j]).powi(2))
                        .sum();
                    pv.ln() - dist / (2.0 * s * s)
                })
                .collect();
            let mx = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits.iter().map(|g| (g - mx).exp()).sum();
            (0..d)
                .map(|j| {
                    let mean: f64 = (0..v)
                        .map(|c| (logits[c] - mx).exp() / z * a * cb[c * d + j] as f64)
                        .sum();
                    (mean - xr[j]) / (s * s)
                })
                .collect()
        };
        let h = 1e-6;
        for r in 0..n {
            let x0: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let l_at = |xr: &[f64]| -> f64 {
                score_at(r, xr)
                    .iter()
                    .zip(&s_gen[r * d..(r + 1) * d])
                    .map(|(s, &g)| (g as f64 - s).powi(2))
                    .sum()
            };
            for j in 0..d {
                let (mut xp, mut xm) = (x0.clone(), x0.clone());
                xp[j] += h;
                xm[j] -= h;
                let fd = (l_at(&xp) - l_at(&xm)) / (2.0 * h);
                let an = gx[r * d + j];
                assert!(
                    (fd - an).abs() <= 1e-6 * an.abs().max(1.0),
                    "x[{r}, {j}]: finite difference {fd}, analytic {an}"
                );
                let want = 2.0 * (s_gen[r * d + j] as f64 - score[r * d + j]);
                assert!((gs[r * d + j] - want).abs() < 1e-12);
            }
        }
        // The loss itself agrees with the perturbation-free copy.
        let l_ref: f64 = (0..n)
            .map(|r| {
                let x0: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
                score_at(r, &x0)
                    .iter()
                    .zip(&s_gen[r * d..(r + 1) * d])
                    .map(|(s, &g)| (g as f64 - s).powi(2))
                    .sum::<f64>()
            })
            .sum();
        assert!((loss(&s_gen, &score) - l_ref).abs() < 1e-9 * l_ref);
    }

    #[test]
    fn faults_are_named_in_order() {
        let cb = vec![0.5f32; 2 * 8];
        let x = vec![0.0f32; 2 * 8];
        let ok = |p: &[f32], a: &[f32], s: &[f32]| mixture(&cb, p, &x, a, s, 8).check().map(|_| ());
        let p = [0.5f32, 0.5, 1.0, 0.0];
        assert_eq!(ok(&p, &[1.0, 1.0], &[1.0, 1.0]), Ok(()));
        assert_eq!(
            ok(&p, &[1.0, f32::INFINITY], &[1.0, 0.0]).unwrap_err(),
            "alpha[1] = inf is not finite"
        );
        assert_eq!(
            ok(&p, &[1.0, 1.0], &[1.0, 0.0]).unwrap_err(),
            "sigma[1] = 0 is outside [1e-6, 1e6]"
        );
        assert_eq!(
            ok(&[0.5, f32::NAN, 1.0, 0.0], &[1.0; 2], &[1.0; 2]).unwrap_err(),
            "p[0, 1] is NaN"
        );
        assert_eq!(
            ok(&[0.5, 0.5, 1.5, -0.5], &[1.0; 2], &[1.0; 2]).unwrap_err(),
            "p[1, 1] = -0.5 is negative"
        );
        assert_eq!(
            ok(&[0.5, 0.5, f32::INFINITY, 0.0], &[1.0; 2], &[1.0; 2]).unwrap_err(),
            "p[1, 0] is infinite"
        );
        assert_eq!(
            ok(&[0.5, 0.5, 0.9, 0.0], &[1.0; 2], &[1.0; 2]).unwrap_err(),
            "row 1 of p sums to 0.8999999761581421, not 1 within 1e-3"
        );
        let m = mixture(&cb, &p, &x, &[1.0; 2], &[1.0; 2], 65);
        assert_eq!(m.shape().unwrap_err(), "d = 65 is outside 8..=64");
    }
}
