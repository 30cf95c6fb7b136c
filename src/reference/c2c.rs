//! Cache-to-Cache projector reference (f64): the oracle of `ops::c2c` and its CPU path.
//!
//! Per token, for one target layer and one of K/V:
//!
//! 1. `x = concat(src, tgt)` with `src` `[Hs·Ds]` (sharer) and `tgt` `[Ht·Dt]` (receiver);
//! 2. `h = W_in·x + b_in` (`[Hd]`);
//! 3. per FFN block `b`: `h = h + W2[b]·GELU(W1[b]·RMSNorm_b(h))`, with
//!    `RMSNorm_b(h) = norm[b] ⊙ h / √(mean(h²) + 1e-6)`, bias-free;
//! 4. `proj = W_out·h` (`[Ht·Dt]`), `scalar = W_s·h` (`[Ht]`);
//! 5. `out[h, d] = tgt[h, d] + g·sigmoid(scalar[h])·proj[h·Dt + d]`.
//!
//! The gate `g` is [`Gate::value`] of the projector's gate logit: hard (`1[logit > 0]`) or soft
//! (`sigmoid(logit / τ)`).

use rayon::prelude::*;

pub use crate::reference::gemm::Activation;

/// RMSNorm's epsilon.
pub const EPS: f64 = 1e-6;

/// The sizes of one projector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectorDims {
    /// Sharer KV heads.
    pub hs: usize,
    /// Sharer head dim.
    pub ds: usize,
    /// Receiver KV heads.
    pub ht: usize,
    /// Receiver head dim.
    pub dt: usize,
    /// Hidden size `Hd`.
    pub hidden: usize,
    /// FFN inner size `F`.
    pub ffn: usize,
    /// FFN blocks.
    pub blocks: usize,
}

impl ProjectorDims {
    /// Input width `Hs·Ds + Ht·Dt`.
    pub fn k_in(&self) -> usize {
        self.hs * self.ds + self.ht * self.dt
    }
    /// Output width `Ht·Dt`.
    pub fn k_out(&self) -> usize {
        self.ht * self.dt
    }
    /// Multiply-adds per token of the projector's GEMMs (FLOPs are twice this).
    pub fn macs_per_token(&self) -> usize {
        self.hidden * self.k_in()
            + self.blocks * 2 * self.ffn * self.hidden
            + (self.k_out() + self.ht) * self.hidden
    }
}

/// One projector's weights, f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectorHost {
    /// The sizes.
    pub dims: ProjectorDims,
    /// `[hidden, k_in]`.
    pub w_in: Vec<f32>,
    /// `[hidden]`.
    pub b_in: Vec<f32>,
    /// `[blocks, ffn, hidden]`.
    pub w1: Vec<f32>,
    /// `[blocks, hidden, ffn]`.
    pub w2: Vec<f32>,
    /// `[blocks, hidden]`: RMSNorm weights.
    pub norm: Vec<f32>,
    /// `[k_out, hidden]`.
    pub w_out: Vec<f32>,
    /// `[ht, hidden]`.
    pub w_s: Vec<f32>,
}

impl ProjectorHost {
    /// The tensors with their names and shapes, in a fixed order.
    pub fn tensors(&self) -> [(&'static str, &[f32], Vec<usize>); 7] {
        let d = self.dims;
        [
            ("w_in", &self.w_in, vec![d.hidden, d.k_in()]),
            ("b_in", &self.b_in, vec![d.hidden]),
            ("w1", &self.w1, vec![d.blocks, d.ffn, d.hidden]),
            ("w2", &self.w2, vec![d.blocks, d.hidden, d.ffn]),
            ("norm", &self.norm, vec![d.blocks, d.hidden]),
            ("w_out", &self.w_out, vec![d.k_out(), d.hidden]),
            ("w_s", &self.w_s, vec![d.ht, d.hidden]),
        ]
    }

    /// The first tensor whose length does not match its shape: (name, length, wanted).
    pub fn bad_len(&self) -> Option<(&'static str, usize, usize)> {
        self.tensors().into_iter().find_map(|(n, v, s)| {
            let want = s.iter().product::<usize>();
            (v.len() != want).then_some((n, v.len(), want))
        })
    }
}

/// How the gate logit becomes the gate.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Gate {
    /// `1[logit > 0]` (inference).
    #[default]
    Hard,
    /// `sigmoid(logit / tau)`.
    Soft {
        /// Temperature, > 0.
        tau: f32,
    },
}

impl Gate {
    /// The gate for `logit`, in f32 as the kernels take it.
    pub fn value(self, logit: f32) -> f32 {
        match self {
            Gate::Hard => {
                if logit > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Gate::Soft { tau } => (1.0 / (1.0 + (-(logit as f64) / tau as f64).exp())) as f32,
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `y[o] = Σ_k w[o, k]·x[k]` for `w` `[outs, x.len()]`.
fn matvec(w: &[f32], x: &[f64], outs: usize) -> Vec<f64> {
    let k = x.len();
    (0..outs)
        .map(|o| {
            w[o * k..(o + 1) * k]
                .iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * b)
                .sum()
        })
        .collect()
}

/// The hidden state `h` of one token after the FFN blocks.
fn hidden(w: &ProjectorHost, gelu: Activation, src: &[f64], tgt: &[f64]) -> Vec<f64> {
    let d = w.dims;
    let x: Vec<f64> = src.iter().chain(tgt).copied().collect();
    let mut h = matvec(&w.w_in, &x, d.hidden);
    for (hv, &b) in h.iter_mut().zip(&w.b_in) {
        *hv += b as f64;
    }
    for b in 0..d.blocks {
        let norm = &w.norm[b * d.hidden..(b + 1) * d.hidden];
        let ms = h.iter().map(|v| v * v).sum::<f64>() / d.hidden.max(1) as f64;
        let r = 1.0 / (ms + EPS).sqrt();
        let n: Vec<f64> = h.iter().zip(norm).map(|(v, &g)| v * r * g as f64).collect();
        let w1 = &w.w1[b * d.ffn * d.hidden..(b + 1) * d.ffn * d.hidden];
        let u: Vec<f64> = matvec(w1, &n, d.ffn)
            .into_iter()
            .map(|v| gelu.apply(v))
            .collect();
        let w2 = &w.w2[b * d.hidden * d.ffn..(b + 1) * d.hidden * d.ffn];
        for (hv, dv) in h.iter_mut().zip(matvec(w2, &u, d.hidden)) {
            *hv += dv;
        }
    }
    h
}

/// The projector over `tokens` rows: `src` `[tokens, Hs·Ds]`, `tgt` `[tokens, Ht·Dt]`; returns
/// `out` `[tokens, Ht·Dt]`. `g` is the gate value ([`Gate::value`]); with `g == 0` the result is
/// `tgt` exactly.
pub fn project(
    w: &ProjectorHost,
    g: f32,
    gelu: Activation,
    src: &[f64],
    tgt: &[f64],
    tokens: usize,
) -> Vec<f64> {
    let d = w.dims;
    let (ks, kt) = (d.hs * d.ds, d.k_out());
    let mut out = tgt[..tokens * kt].to_vec();
    if g == 0.0 || kt == 0 {
        return out;
    }
    out.par_chunks_mut(kt).enumerate().for_each(|(n, o)| {
        let t = &tgt[n * kt..(n + 1) * kt];
        let h = hidden(w, gelu, &src[n * ks..(n + 1) * ks], t);
        let proj = matvec(&w.w_out, &h, kt);
        let scalar = matvec(&w.w_s, &h, d.ht);
        for (i, ov) in o.iter_mut().enumerate() {
            *ov = t[i] + g as f64 * sigmoid(scalar[i / d.dt]) * proj[i];
        }
    });
    out
}

/// The `last_aligned` layer map: source layer `clamp(t + (S − T), 0, S − 1)` of each of `T`
/// target layers (`S >= 1`).
pub fn last_aligned(source: usize, target: usize) -> Vec<usize> {
    let off = source as i64 - target as i64;
    (0..target as i64)
        .map(|t| (t + off).clamp(0, source as i64 - 1) as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> ProjectorDims {
        ProjectorDims {
            hs: 1,
            ds: 2,
            ht: 2,
            dt: 1,
            hidden: 2,
            ffn: 1,
            blocks: 1,
        }
    }

    /// A hand-computed token: W_in picks x[0] and x[2] (+ bias), one FFN block, identity out.
    #[test]
    fn hand_computed_token() {
        let d = dims();
        let w = ProjectorHost {
            dims: d,
            // h0 = x0 + 1, h1 = x2
            w_in: vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            b_in: vec![1.0, 0.0],
            // u = gelu(n0 + n1); h += [u, 0]
            w1: vec![1.0, 1.0],
            w2: vec![1.0, 0.0],
            norm: vec![1.0, 1.0],
            w_out: vec![1.0, 0.0, 0.0, 1.0],
            w_s: vec![0.0, 0.0, 0.0, 0.0],
        };
        assert_eq!(w.bad_len(), None);
        // x = [src 2, 5 | tgt 3, -1]: h = [3, 3]; rms = 3 -> n = [1, 1] (eps aside); u = gelu(2)
        let out = project(&w, 1.0, Activation::None, &[2.0, 5.0], &[3.0, -1.0], 1);
        let r = 1.0 / (9.0 + EPS).sqrt();
        let u = 2.0 * 3.0 * r;
        // scalar = 0 -> sigmoid 0.5; proj = h = [3 + u, 3]
        let want = [3.0 + 0.5 * (3.0 + u), -1.0 + 0.5 * 3.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-12, "{out:?} vs {want:?}");
        }
        // The hard gate off leaves the target exactly.
        let off = project(
            &w,
            Gate::Hard.value(-0.5),
            Activation::GeluErf,
            &[2.0, 5.0],
            &[3.0, -1.0],
            1,
        );
        assert_eq!(off, vec![3.0, -1.0]);
    }

    #[test]
    fn gates() {
        assert_eq!(Gate::Hard.value(0.0), 0.0);
        assert_eq!(Gate::Hard.value(1e-30), 1.0);
        assert!((Gate::Soft { tau: 2.0 }.value(0.0) - 0.5).abs() < 1e-7);
        assert!((Gate::Soft { tau: 1.0 }.value(2.0) - 0.880_797).abs() < 1e-6);
    }

    #[test]
    fn last_aligned_map() {
        assert_eq!(last_aligned(4, 2), vec![2, 3]);
        assert_eq!(last_aligned(2, 4), vec![0, 0, 0, 1]);
        assert_eq!(last_aligned(3, 3), vec![0, 1, 2]);
        let m = last_aligned(24, 28);
        assert_eq!(&m[..5], &[0; 5]);
        assert_eq!(m[27], 23);
    }
}
