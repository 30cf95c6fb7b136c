//! `moe.layer`: one ReXMoE layer, the composition of the module's kernels and the grouped GEMM.
//!
//! ```text
//! logits = gemm::dense(x, w_router)            f32 [T, r·N]
//! (topk_ids, topk_weights) = route(logits)     PSR mask, softmax, top-k (ties: lower id)
//! aligned = align(topk_ids, r·N, BLOCK_ROWS)   flat entries grouped by virtual expert
//! rows = permute(x, aligned)                   [len, d] in expert order, offsets [r·N + 1]
//! h = gemm::grouped_swiglu(rows, w_gate, w_up) silu(rows·W_gateᵀ) ⊙ (rows·W_upᵀ), [len, F]
//! out = gemm::grouped(h, w_down)               f32 [len, d]
//! y = combine(out, positions, topk_weights)    Σ_k w_k · out[row of (t, k)], slot order
//! ```
//!
//! Nothing leaves the device: the group sizes reach the grouped GEMMs as the device offsets that
//! `permute` writes. The combine sums the k expert rows of a token in slot order with f32
//! arithmetic and no atomics, so the result is the same bits on every run.

use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::attention::HalfFloat;
use crate::ops::gemm;
use crate::ops::{on_device, DeviceCheck};

use super::{RouteParams, Routed, MAX_EXPERTS};

/// The element types of a layer: bf16 or f16 (operands of the tensor-core GEMMs, and the type
/// of the hidden `h` and of `y`).
pub trait ExpertFloat: HalfFloat + gemm::GemmOutput {}
impl<T: HalfFloat + gemm::GemmOutput> ExpertFloat for T {}

/// Rows per block of the expert alignment in [`layer`]: each expert's run of rows is padded to a
/// multiple of this (the m16 of the tensor-core tiles).
pub const BLOCK_ROWS: usize = 16;

/// One layer's weights on the device, all row-major, the group's `E = r·N` experts in
/// virtual-id order (`v = j·N + e` is expert `e` of the group's `j`-th layer).
pub struct LayerWeights<'a, T: ExpertFloat> {
    /// `[r·N, d]`.
    pub w_router: &'a DeviceBuffer<T>,
    /// `[r·N, F, d]`.
    pub w_gate: &'a DeviceBuffer<T>,
    /// `[r·N, F, d]`.
    pub w_up: &'a DeviceBuffer<T>,
    /// `[r·N, d, F]`.
    pub w_down: &'a DeviceBuffer<T>,
}

/// The sizes of a layer call, derived from the buffers by [`layer_dims`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDims {
    /// Tokens `T`.
    pub tokens: usize,
    /// Model width `d`.
    pub d: usize,
    /// Experts per layer `N`.
    pub n: usize,
    /// Virtual experts of the group `E = r·N`.
    pub e: usize,
    /// Expert hidden size `F`.
    pub f: usize,
}

/// The output of [`layer_full`]: `y` and what the router chose.
#[derive(Debug)]
pub struct LayerOut<T: ExpertFloat> {
    /// `[T, d]`.
    pub y: DeviceBuffer<T>,
    /// `[T, k]` virtual expert ids and their weights.
    pub routed: Routed,
}

const OP: &str = "moe::layer";

/// Check the buffers of a layer call against each other and the parameters; the sizes.
pub fn layer_dims<T: ExpertFloat>(
    x: &DeviceBuffer<T>,
    d: usize,
    w: &LayerWeights<T>,
    p: &RouteParams,
) -> Result<LayerDims> {
    if d == 0 {
        return Err(Error::invalid(OP, "d must be >= 1"));
    }
    if x.len() % d != 0 {
        return Err(Error::invalid(
            OP,
            format!("x has {} elements, not a multiple of d = {d}", x.len()),
        ));
    }
    let tokens = x.len() / d;
    if p.r == 0 {
        return Err(Error::invalid(OP, "r must be >= 1"));
    }
    if w.w_router.len() % d != 0 || w.w_router.is_empty() {
        return Err(Error::invalid(
            OP,
            format!(
                "w_router has {} elements, not [r·N, d] with d = {d} and r·N >= 1",
                w.w_router.len()
            ),
        ));
    }
    let e = w.w_router.len() / d;
    if e % p.r != 0 {
        return Err(Error::invalid(
            OP,
            format!("w_router has {e} rows, not a multiple of r = {}", p.r),
        ));
    }
    if e > MAX_EXPERTS {
        return Err(Error::invalid(
            OP,
            format!("r·N = {e} virtual experts, more than {MAX_EXPERTS}"),
        ));
    }
    let n = e / p.r;
    let ed = e * d;
    if w.w_gate.is_empty() || w.w_gate.len() % ed != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "w_gate has {} elements, not [r·N, F, d] = [{e}, F, {d}] with F >= 1",
                w.w_gate.len()
            ),
        ));
    }
    let f = w.w_gate.len() / ed;
    for (name, b) in [("w_up", w.w_up), ("w_down", w.w_down)] {
        if b.len() != w.w_gate.len() {
            return Err(Error::invalid(
                OP,
                format!(
                    "{name} has {} elements, w_gate {} ([r·N, F, d] = [{e}, {f}, {d}]; w_down is \
                     [r·N, d, F])",
                    b.len(),
                    w.w_gate.len()
                ),
            ));
        }
    }
    let dev = x.device();
    for (name, b) in [
        ("w_router", w.w_router),
        ("w_gate", w.w_gate),
        ("w_up", w.w_up),
        ("w_down", w.w_down),
    ] {
        on_device(OP, name, dev, b)?;
    }
    if p.layer_in_group >= p.r {
        return Err(Error::invalid(
            OP,
            format!(
                "layer_in_group = {} is not a layer of a group of r = {}",
                p.layer_in_group, p.r
            ),
        ));
    }
    if p.top_k == 0 || p.top_k > e {
        return Err(Error::invalid(
            OP,
            format!("top_k = {} must be in 1..=r·N = {e}", p.top_k),
        ));
    }
    Ok(LayerDims { tokens, d, n, e, f })
}

/// One ReXMoE layer: `y = Σ_k w_k · expert_{v_k}(x)` for `x` `[T, d]` (see the module docs and
/// docs/moe.md for the exact math). Errors name `moe::layer` (sizes, parameters) or the stage
/// that found the problem.
pub fn layer<T: ExpertFloat>(
    x: &DeviceBuffer<T>,
    d: usize,
    w: &LayerWeights<T>,
    p: &RouteParams,
) -> Result<DeviceBuffer<T>> {
    Ok(layer_full(x, d, w, p, None)?.y)
}

/// [`layer`], with an optional `residual` `[T, d]` added to `y` in the combine (`y = residual +
/// Σ_k w_k · expert_{v_k}(x)`, the residual first), also returning the routing (for load
/// statistics and tests).
pub fn layer_full<T: ExpertFloat>(
    x: &DeviceBuffer<T>,
    d: usize,
    w: &LayerWeights<T>,
    p: &RouteParams,
    residual: Option<&DeviceBuffer<T>>,
) -> Result<LayerOut<T>> {
    let (out, check) = layer_deferred(x, d, w, p, residual)?;
    check.check()?;
    Ok(out)
}

/// [`layer_full`] without reading back the device checks of its stages (route's logits check,
/// align's ids, permute's alignment, the grouped GEMMs' offsets, combine's positions): the call
/// queues its launches and returns without waiting for the device; the returned [`DeviceCheck`]
/// reads the status words when checked (`TESSERA_EAGER_CHECKS=1` checks at once).
pub fn layer_deferred<T: ExpertFloat>(
    x: &DeviceBuffer<T>,
    d: usize,
    w: &LayerWeights<T>,
    p: &RouteParams,
    residual: Option<&DeviceBuffer<T>>,
) -> Result<(LayerOut<T>, DeviceCheck)> {
    let dims = layer_dims(x, d, w, p)?;
    if let Some(res) = residual {
        on_device(OP, "residual", x.device(), res)?;
        if res.len() != x.len() {
            return Err(Error::invalid(
                OP,
                format!(
                    "residual has {} elements, x has {} ([T, d])",
                    res.len(),
                    x.len()
                ),
            ));
        }
    }
    let LayerDims { tokens, e, f, .. } = dims;
    let dev = x.device();
    let k = p.top_k;
    if tokens == 0 {
        let routed = Routed {
            topk_ids: dev.alloc(0, "moe.layer topk_ids")?,
            topk_weights: dev.alloc(0, "moe.layer topk_weights")?,
        };
        let y = dev.alloc(0, "moe.layer y")?;
        return Ok((LayerOut { y, routed }, DeviceCheck::none()));
    }
    let logits: DeviceBuffer<f32> =
        gemm::dense(x, w.w_router, tokens, e, d, &gemm::Epilogue::default())?;
    let (routed, mut check) = super::route_deferred(&logits, tokens, p)?;
    let (aligned, c0) = super::align_deferred(&routed.topk_ids, k, e, BLOCK_ROWS)?;
    check.absorb(c0);
    let (perm, c0) = super::permute_deferred(x, d, &aligned, k, e, BLOCK_ROWS)?;
    check.absorb(c0);
    let rows = aligned.sorted_token_ids.len();
    let (h, c1): (DeviceBuffer<T>, _) =
        gemm::grouped_swiglu_deferred(&perm.rows, w.w_gate, w.w_up, &perm.offsets, rows, f, d)?;
    check.absorb(c1);
    let (out, c2): (DeviceBuffer<f32>, _) = gemm::grouped_deferred(
        &h,
        w.w_down,
        &perm.offsets,
        rows,
        d,
        f,
        &gemm::Epilogue::default(),
    )?;
    check.absorb(c2);
    let (y, c3) = super::combine_residual_deferred(
        &out,
        &perm.positions,
        &routed.topk_weights,
        d,
        k,
        residual,
    )?;
    check.absorb(c3);
    Ok((LayerOut { y, routed }, check.eager_if_asked()?))
}
