//! Reference for the ReXMoE layer (`moe.layer`): router GEMM, routing (with PSR), SwiGLU experts
//! and the weighted combine, in f64 from the (half-rounded) inputs.
//!
//! The routing decision is taken on f32 logits, as the device path takes it: the f64 logits are
//! rounded to f32 and handed to [`super::route`]. A device's f32 GEMM can differ from that
//! rounding in the last bit, which changes the routing only for logits tied to about 1e-7; the
//! tests use random weights, where such near-ties do not occur.

use crate::dtype::Float;
use crate::ops::moe::RouteParams;

/// Host copies of one layer's weights, all row-major: `w_router` `[r·N, d]`, `w_gate` and
/// `w_up` `[r·N, F, d]`, `w_down` `[r·N, d, F]` (the group's experts in virtual-id order).
pub struct LayerWeights<'a, T> {
    pub w_router: &'a [T],
    pub w_gate: &'a [T],
    pub w_up: &'a [T],
    pub w_down: &'a [T],
}

/// What the reference layer computed.
#[derive(Clone, Debug)]
pub struct LayerOut {
    /// `[T, d]`, f64.
    pub y: Vec<f64>,
    /// `[T, r·N]`: the router logits, rounded to f32.
    pub logits: Vec<f32>,
    /// `[T, k]`.
    pub topk_ids: Vec<i32>,
    /// `[T, k]`.
    pub topk_weights: Vec<f32>,
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// `y = W_down · (silu(W_gate·x) ⊙ (W_up·x))` of virtual expert `v` for one token row `x`.
pub fn expert<T: Float>(x: &[f64], v: usize, d: usize, f: usize, w: &LayerWeights<T>) -> Vec<f64> {
    let gate = &w.w_gate[v * f * d..(v + 1) * f * d];
    let up = &w.w_up[v * f * d..(v + 1) * f * d];
    let down = &w.w_down[v * d * f..(v + 1) * d * f];
    let h: Vec<f64> = (0..f)
        .map(|j| {
            let g: f64 = (0..d).map(|i| x[i] * gate[j * d + i].to_f64()).sum();
            let u: f64 = (0..d).map(|i| x[i] * up[j * d + i].to_f64()).sum();
            silu(g) * u
        })
        .collect();
    (0..d)
        .map(|o| (0..f).map(|j| h[j] * down[o * f + j].to_f64()).sum())
        .collect()
}

/// The layer on `x` `[T, d]` with `E = r·N` virtual experts and hidden size `F`. The caller has
/// validated the sizes and parameters (the op does).
pub fn layer<T: Float>(
    x: &[T],
    d: usize,
    f: usize,
    w: &LayerWeights<T>,
    p: &RouteParams,
) -> LayerOut {
    let tokens = x.len().checked_div(d).unwrap_or(0);
    let e = w.w_router.len().checked_div(d).unwrap_or(0);
    let mut logits = vec![0f32; tokens * e];
    for t in 0..tokens {
        let row = &x[t * d..(t + 1) * d];
        for v in 0..e {
            let wr = &w.w_router[v * d..(v + 1) * d];
            let s: f64 = row
                .iter()
                .zip(wr)
                .map(|(a, b)| a.to_f64() * b.to_f64())
                .sum();
            logits[t * e + v] = s as f32;
        }
    }
    let (topk_ids, topk_weights) = super::route(&logits, tokens, p);
    let k = p.top_k;
    let mut y = vec![0f64; tokens * d];
    for t in 0..tokens {
        let row: Vec<f64> = x[t * d..(t + 1) * d].iter().map(|a| a.to_f64()).collect();
        for slot in 0..k {
            let v = topk_ids[t * k + slot] as usize;
            let wk = topk_weights[t * k + slot] as f64;
            let out = expert(&row, v, d, f, w);
            for (yo, o) in y[t * d..(t + 1) * d].iter_mut().zip(out) {
                *yo += wk * o;
            }
        }
    }
    LayerOut {
        y,
        logits,
        topk_ids,
        topk_weights,
    }
}
