//! Mixture-of-experts ops (issue 12, ReXMoE): [`route`] (`moe.route`, the router top-k with PSR
//! masking), [`align`] (`moe.align`, the block alignment of the router's top-k expert ids that a
//! grouped expert GEMM consumes: vLLM's `moe_align_block_size` contract, with a deterministic
//! order), [`permute`] / [`combine`] (`moe.permute`, `moe.combine`: token rows into the aligned
//! expert order and back) and [`load`] (`moe.load`, tokens per virtual expert and per physical
//! layer), and [`layer`] (`moe.layer`, one ReXMoE layer on those and the grouped GEMM of
//! [`crate::ops::gemm`]). See docs/moe.md.
//!
//! Kernels: `cuda/moe/align.cu`, `cuda/moe/route.cu`, `cuda/moe/permute.cu`. Reference and CPU
//! path: [`crate::reference::moe`].

use std::marker::PhantomData;

use half::{bf16, f16};

use crate::device::kernel::{Grid, KernelArg, KernelSuffix, Width, B16, B32, B8};
use crate::device::{Backend, DeviceBuffer, KernelArgs};
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, DeviceCheck};
use crate::reference::moe as reference;

mod layer;
pub use layer::{
    layer, layer_deferred, layer_dims, layer_full, ExpertFloat, LayerDims, LayerOut, LayerWeights,
    BLOCK_ROWS,
};

/// Threads per block of every kernel of the module (`kBlock`).
const BLOCK: u32 = 256;

/// Largest number of experts [`align`] takes (`kMaxExperts`: shared-memory tables of one entry
/// per expert).
pub const MAX_EXPERTS: usize = 1024;

/// Most chunks (blocks) of a launch: every block of the placement launch scans the
/// `[chunks, E]` counts, so their number is bounded and large inputs get larger chunks.
const MAX_CHUNKS: usize = 256;

/// Every kernel this family declares (checked by `tests/declarations.rs`).
pub fn declarations() -> Vec<crate::device::kernel::KernelDecl> {
    let mut all = align_kernels::declarations();
    all.extend(route_kernels::declarations());
    all.extend(permute_kernels::declarations());
    all
}

use align_kernels::{CountKernel, PlaceKernel};
use permute_kernels::{CombineKernel, PermuteIndexKernel, PermuteRowsKernel};
use route_kernels::{LoadKernel, RouteKernel};

mod align_kernels {
    use super::*;
    crate::kernels! {
        module = "moe/align";
        /// Per chunk of `chunk` flat entries: the count of each expert and of out-of-range ids.
        pub(crate) struct CountKernel<'a> = "moe_align_count" block = BLOCK {
            topk_ids: &'a DeviceBuffer<i32>,
            n: u32,
            num_experts: u32,
            chunk: u32,
            counts: &'a mut DeviceBuffer<u32>,
        }
        /// Run starts, `expert_ids`, padding, the total and the status; each block places its
        /// chunk's entries in flat index order.
        pub(crate) struct PlaceKernel<'a> = "moe_align_place" block = BLOCK {
            topk_ids: &'a DeviceBuffer<i32>,
            counts: &'a DeviceBuffer<u32>,
            n: u32,
            num_experts: u32,
            block_size: u32,
            chunk: u32,
            nchunks: u32,
            len: u32,
            nblocks: u32,
            sorted_token_ids: &'a mut DeviceBuffer<i32>,
            expert_ids: &'a mut DeviceBuffer<i32>,
            total: &'a mut DeviceBuffer<i32>,
            status: &'a mut DeviceBuffer<i32>,
        }
    }
}

mod permute_kernels {
    use super::*;
    crate::kernels! {
        module = "moe/permute";
        /// The inverse permutation `positions`, the group `offsets` and the structure checks.
        pub(crate) struct PermuteIndexKernel<'a> = "moe_permute_index" block = BLOCK {
            sorted: &'a DeviceBuffer<i32>,
            len: u32,
            n: u32,
            expert_ids: &'a DeviceBuffer<i32>,
            nblocks: u32,
            ntpp: &'a DeviceBuffer<i32>,
            num_experts: u32,
            block_size: u32,
            positions: &'a mut DeviceBuffer<i32>,
            offsets: &'a mut DeviceBuffer<i32>,
            status: &'a mut DeviceBuffer<i32>,
        }
        /// One block per output row: the gathered row (zero for sentinels); the positions check.
        pub(crate) struct PermuteRowsKernel<'a, W: Width> = "moe_permute_rows" [(B8), (B16), (B32), (B64)] block = BLOCK {
            x: Words<'a, W>,
            sorted: &'a DeviceBuffer<i32>,
            positions: &'a DeviceBuffer<i32>,
            len: u32,
            n: u32,
            k: u32,
            words: u64,
            rows: WordsMut<'a, W>,
            status: &'a mut DeviceBuffer<i32>,
            status_off: u32,
        }
        /// One block per token: the weighted sum of its k expert rows in slot order, in f32.
        pub(crate) struct CombineKernel<'a, I: Float, O: Float> = "moe_combine" [
            (f32, f32), (f32, bf16), (f32, f16),
            (bf16, f32), (bf16, bf16), (bf16, f16),
            (f16, f32), (f16, bf16), (f16, f16),
        ] block = BLOCK {
            expert_out: &'a DeviceBuffer<I>,
            rows: u64,
            positions: &'a DeviceBuffer<i32>,
            weights: &'a DeviceBuffer<f32>,
            tokens: u32,
            k: u32,
            d: u32,
            residual: Option<&'a DeviceBuffer<O>>,
            y: &'a mut DeviceBuffer<O>,
            status: &'a mut DeviceBuffer<i32>,
        }
    }
}

mod route_kernels {
    use super::*;
    crate::kernels! {
        module = "moe/route";
        /// The PSR mask (per block) and one warp per token: softmax statistics, top-k, weights.
        pub(crate) struct RouteKernel<'a> = "moe_route" block = BLOCK {
            logits: &'a DeviceBuffer<f32>,
            tokens: u32,
            num_virtual: u32,
            num_experts: u32,
            own_start: u32,
            top_k: u32,
            renormalize: u32,
            masked: u32,
            seed: u64,
            step: u64,
            layer: u64,
            topk_ids: &'a mut DeviceBuffer<i32>,
            topk_weights: &'a mut DeviceBuffer<f32>,
            status: &'a mut DeviceBuffer<i32>,
        }
        /// Tokens per virtual expert and per physical layer (one block).
        pub(crate) struct LoadKernel<'a> = "moe_load" block = BLOCK {
            topk_ids: &'a DeviceBuffer<i32>,
            n: u32,
            num_virtual: u32,
            num_experts: u32,
            r: u32,
            per_expert: &'a mut DeviceBuffer<i32>,
            per_layer: &'a mut DeviceBuffer<i32>,
            status: &'a mut DeviceBuffer<i32>,
        }
    }
}

/// The result of [`align`], on the op's device.
#[derive(Debug)]
pub struct Aligned {
    /// `T·k + E·(block_size − 1)` entries: the flat indices `t·k + slot` grouped by expert in
    /// increasing expert order, within an expert in increasing flat index; each expert's run is
    /// padded up to a multiple of `block_size` with the sentinel `T·k`, and the unused tail after
    /// the last run holds the sentinel too.
    pub sorted_token_ids: DeviceBuffer<i32>,
    /// `ceil(len(sorted_token_ids) / block_size)` entries: the expert whose run block `b`
    /// (entries `b·block_size ..`) belongs to; `-1` for every block at or past
    /// `num_tokens_post_padded`.
    pub expert_ids: DeviceBuffer<i32>,
    /// One entry: the total length of the padded runs.
    pub num_tokens_post_padded: DeviceBuffer<i32>,
}

/// Align the router's top-k expert ids to blocks of `block_size` rows per expert.
///
/// `topk_ids` is `[T, k]` (row-major, `T·k` entries, `T` may be 0), every id in
/// `[0, num_experts)`. Errors ([`Error::InvalidArgument`] naming `moe::align`): `k == 0`, a
/// length that is not a multiple of `k`, `num_experts == 0` or `> MAX_EXPERTS`,
/// `block_size == 0`, an output longer than `i32::MAX`, and an expert id outside
/// `[0, num_experts)`. The ids are checked on the device by the kernels (which never index with
/// an out-of-range id): the op reads back one status word, so it waits for its two launches;
/// [`align_deferred`] leaves that read to the caller.
pub fn align(
    topk_ids: &DeviceBuffer<i32>,
    k: usize,
    num_experts: usize,
    block_size: usize,
) -> Result<Aligned> {
    let (a, check) = align_deferred(topk_ids, k, num_experts, block_size)?;
    check.check()?;
    Ok(a)
}

/// [`align`] without the wait: the sizes and parameters are validated at once, the expert ids by
/// the kernels into a status word that the returned [`DeviceCheck`] reads when checked (nothing
/// is pending on the CPU path, which validates at once). Until checked, the outputs of a call
/// with out-of-range ids are unspecified (never an out-of-bounds access). With
/// `TESSERA_EAGER_CHECKS=1` it checks before returning, like [`align`].
pub fn align_deferred(
    topk_ids: &DeviceBuffer<i32>,
    k: usize,
    num_experts: usize,
    block_size: usize,
) -> Result<(Aligned, DeviceCheck)> {
    const OP: &str = "moe::align";
    let dev = topk_ids.device().clone();
    let n = topk_ids.len();
    if k == 0 {
        return Err(Error::invalid(OP, "k must be >= 1"));
    }
    if n % k != 0 {
        return Err(Error::invalid(
            OP,
            format!("topk_ids has {n} entries, not a multiple of k = {k}"),
        ));
    }
    if num_experts == 0 || num_experts > MAX_EXPERTS {
        return Err(Error::invalid(
            OP,
            format!("num_experts must be in 1..={MAX_EXPERTS}, got {num_experts}"),
        ));
    }
    if block_size == 0 {
        return Err(Error::invalid(OP, "block_size must be >= 1"));
    }
    let len = reference::sorted_len(n, num_experts, block_size)
        .filter(|&l| l <= i32::MAX as usize)
        .ok_or_else(|| {
            Error::invalid(
                OP,
                format!(
                    "T·k + E·(block_size − 1) = {n} + {num_experts}·({block_size} − 1) exceeds \
                     i32::MAX"
                ),
            )
        })?;
    let nblocks = len.div_ceil(block_size);

    if let Some(h) = cpu_path(OP, &dev) {
        let ids = h.slice(topk_ids)?;
        if let Some((i, e)) = reference::first_bad(ids, num_experts) {
            return Err(bad_id(OP, Some((i, e)), 1, num_experts));
        }
        let a = reference::align(ids, num_experts, block_size);
        let out = Aligned {
            sorted_token_ids: dev.upload(&a.sorted_token_ids, "moe.sorted_token_ids")?,
            expert_ids: dev.upload(&a.expert_ids, "moe.expert_ids")?,
            num_tokens_post_padded: dev
                .upload(&[a.num_tokens_post_padded], "moe.num_tokens_post_padded")?,
        };
        return Ok((out, DeviceCheck::none()));
    }

    // Chunks of a multiple of BLOCK entries, at least 4 tiles, at most MAX_CHUNKS of them.
    let tile = BLOCK as usize;
    let chunk = n.div_ceil(MAX_CHUNKS).div_ceil(tile).max(4) * tile;
    let nchunks = n.div_ceil(chunk);
    let mut counts = dev.alloc::<u32>(nchunks.max(1) * (num_experts + 1), "moe.counts")?;
    let mut sorted_token_ids = dev.alloc::<i32>(len, "moe.sorted_token_ids")?;
    let mut expert_ids = dev.alloc::<i32>(nblocks, "moe.expert_ids")?;
    let mut total = dev.alloc::<i32>(1, "moe.num_tokens_post_padded")?;
    // The status words: the number of out-of-range ids, and num_experts (for the message).
    let mut status = dev.alloc::<i32>(2, "moe.status")?;
    if nchunks > 0 {
        CountKernel {
            topk_ids,
            n: n as u32,
            num_experts: num_experts as u32,
            chunk: chunk as u32,
            counts: &mut counts,
        }
        .launch(&dev, Grid::linear(nchunks as u32))?;
    }
    PlaceKernel {
        topk_ids,
        counts: &counts,
        n: n as u32,
        num_experts: num_experts as u32,
        block_size: block_size as u32,
        chunk: chunk as u32,
        nchunks: nchunks as u32,
        len: len as u32,
        nblocks: nblocks as u32,
        sorted_token_ids: &mut sorted_token_ids,
        expert_ids: &mut expert_ids,
        total: &mut total,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(nchunks.max(1) as u32))?;
    let out = Aligned {
        sorted_token_ids,
        expert_ids,
        num_tokens_post_padded: total,
    };
    let check = DeviceCheck::on_device(OP, status, explain_status).eager_if_asked()?;
    Ok((out, check))
}

/// The error of out-of-range expert ids: the first one when known (CPU path), else their number.
fn bad_id(op: &'static str, first: Option<(usize, i32)>, count: usize, e: usize) -> Error {
    match first {
        Some((i, id)) => Error::invalid(
            op,
            format!("topk_ids[{i}] = {id} is not an expert id in [0, {e}) (num_experts = {e})"),
        ),
        None => Error::invalid(
            op,
            format!(
                "{count} entries of topk_ids are not expert ids in [0, {e}) (num_experts = {e})"
            ),
        ),
    }
}

/// The verdict of the status words `moe_align_place` writes: `[bad ids, num_experts]`.
fn explain_status(op: &'static str, w: &[i32]) -> Result<()> {
    match w {
        [0, _] => Ok(()),
        &[bad, e] => Err(bad_id(op, None, bad as u32 as usize, e as u32 as usize)),
        _ => Err(Error::invalid(op, format!("unknown device status {w:?}"))),
    }
}

// ---- moe.route ------------------------------------------------------------------------------

/// PSR (progressive scaling routing) at a training step: the pool of experts a layer may route
/// to grows from its own `N` at step `t_s` to all `r·N` at step `t_e`
/// ([`reference::psr_pool_size`]); the masked experts are drawn by a generator keyed by
/// (`seed`, `step`, the layer), see [`reference::psr_mask`] and docs/moe.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Psr {
    pub step: u64,
    pub t_s: u64,
    pub t_e: u64,
    pub seed: u64,
}

/// Parameters of [`route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteParams {
    /// Layers per group (`r = 1`: a conventional MoE).
    pub r: usize,
    /// This layer's index `j` in its group: its own experts are the virtual ids `j·N .. j·N + N`.
    pub layer_in_group: usize,
    /// The global layer index; keys the PSR generator.
    pub layer: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Divide the `top_k` weights by their sum.
    pub renormalize: bool,
    /// The training step and schedule; `None` at inference (no mask).
    pub psr: Option<Psr>,
}

/// The result of [`route`], on the op's device.
#[derive(Debug)]
pub struct Routed {
    /// `[T, k]` virtual expert ids, per token in rank order (largest logit first, ties to the
    /// lower id).
    pub topk_ids: DeviceBuffer<i32>,
    /// `[T, k]` softmax probabilities of those experts (f32), renormalised to sum 1 when asked.
    pub topk_weights: DeviceBuffer<f32>,
}

/// Largest grid of the route kernel (it loops over the tokens beyond); each block writes three
/// status words.
const MAX_ROUTE_BLOCKS: usize = 1024;

/// Router top-k with PSR masking: `logits` is `[T, r·N]` f32 (`x · W_routerᵀ`), `N =
/// logits.len() / (tokens·r)`.
///
/// At a training step (`p.psr` given) `r·N − N_t` of the experts outside the layer's own `N`
/// are masked ([`reference::psr_mask`], computed on the device); at inference none. The unmasked
/// experts are ranked by logit (the softmax order), larger first, `-0 == +0`, equal logits to
/// the lower id, and the first `top_k` taken; their weights are the softmax probabilities over
/// the unmasked experts in f32 (max-subtracted), divided by their sum when `renormalize`.
///
/// Errors ([`Error::InvalidArgument`] naming `moe::route`): `r == 0`, `layer_in_group >= r`,
/// `top_k == 0`, `N == 0`, a logits length not `tokens·r·N`, `r·N > MAX_EXPERTS`, `top_k`
/// above the pool size (`N_t` at a step, else `r·N`), more than `u32::MAX` tokens, and (checked on
/// the device) a token whose unmasked logits contain NaN or +inf, or are all −inf. With
/// `tokens == 0` the outputs are empty (only `r`, `layer_in_group` and `top_k` are checked: `N`
/// is unknown). [`route`] reads the device status back (a wait); [`route_deferred`] does not.
pub fn route(logits: &DeviceBuffer<f32>, tokens: usize, p: &RouteParams) -> Result<Routed> {
    let (out, check) = route_deferred(logits, tokens, p)?;
    check.check()?;
    Ok(out)
}

/// [`route`] without the wait: the logit checks are left in the returned [`DeviceCheck`] (see
/// [`align_deferred`]); until checked the rows of bad tokens hold ids −1 and weights 0.
pub fn route_deferred(
    logits: &DeviceBuffer<f32>,
    tokens: usize,
    p: &RouteParams,
) -> Result<(Routed, DeviceCheck)> {
    const OP: &str = "moe::route";
    let dev = logits.device().clone();
    if p.r == 0 {
        return Err(Error::invalid(OP, "r must be >= 1"));
    }
    if p.layer_in_group >= p.r {
        return Err(Error::invalid(
            OP,
            format!(
                "layer_in_group = {} must be below r = {}",
                p.layer_in_group, p.r
            ),
        ));
    }
    if p.top_k == 0 {
        return Err(Error::invalid(OP, "top_k must be >= 1"));
    }
    if tokens > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("{tokens} tokens exceed u32::MAX"),
        ));
    }
    let k = p.top_k;
    if tokens == 0 {
        if !logits.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("tokens = 0 but logits has {} entries", logits.len()),
            ));
        }
        let out = Routed {
            topk_ids: dev.alloc::<i32>(0, "moe.topk_ids")?,
            topk_weights: dev.alloc::<f32>(0, "moe.topk_weights")?,
        };
        return Ok((out, DeviceCheck::none()));
    }
    let per = tokens * p.r;
    let n = logits.len() / per;
    if n == 0 || n * per != logits.len() {
        return Err(Error::invalid(
            OP,
            format!(
                "logits has {} entries, not tokens·r·N = {tokens}·{}·N for an N >= 1",
                logits.len(),
                p.r
            ),
        ));
    }
    let e = p.r * n;
    if e > MAX_EXPERTS {
        return Err(Error::invalid(
            OP,
            format!(
                "r·N = {}·{n} = {e} virtual experts exceed MAX_EXPERTS = {MAX_EXPERTS}",
                p.r
            ),
        ));
    }
    let pool = match &p.psr {
        Some(s) => reference::psr_pool_size(n, p.r, s.step, s.t_s, s.t_e),
        None => e,
    };
    if k > pool {
        return Err(Error::invalid(
            OP,
            format!(
                "top_k = {k} exceeds the pool of {pool} routable experts (r·N = {e}{})",
                if p.psr.is_some() {
                    ", PSR at this step"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some(h) = cpu_path(OP, &dev) {
        let l = h.slice(logits)?;
        let mask = reference::psr_mask(n, p);
        if let Some((t, nan)) = reference::route_first_bad(l, tokens, &mask) {
            return Err(bad_logits(OP, Some(t), usize::from(nan), usize::from(!nan)));
        }
        let (ids, ws) = reference::route(l, tokens, p);
        let out = Routed {
            topk_ids: dev.upload(&ids, "moe.topk_ids")?,
            topk_weights: dev.upload(&ws, "moe.topk_weights")?,
        };
        return Ok((out, DeviceCheck::none()));
    }
    let mut topk_ids = dev.alloc::<i32>(tokens * k, "moe.topk_ids")?;
    let mut topk_weights = dev.alloc::<f32>(tokens * k, "moe.topk_weights")?;
    // Tokens per block: one per warp (256 / the warp width: 8 on CUDA and SIMT wave32, 4 on
    // HIP and SIMT wave64).
    let wave = match dev.backend() {
        Backend::Hip(_) => 64,
        Backend::Simt(c) => c.wave as usize,
        _ => 32,
    };
    let blocks = tokens.div_ceil(BLOCK as usize / wave).min(MAX_ROUTE_BLOCKS);
    let mut status = dev.alloc::<i32>(3 * blocks, "moe.route_status")?;
    let (masked, seed, step) = match &p.psr {
        Some(s) => (e - pool, s.seed, s.step),
        None => (0, 0, 0),
    };
    RouteKernel {
        logits,
        tokens: tokens as u32,
        num_virtual: e as u32,
        num_experts: n as u32,
        own_start: (p.layer_in_group * n) as u32,
        top_k: k as u32,
        renormalize: u32::from(p.renormalize),
        masked: masked as u32,
        seed,
        step,
        layer: p.layer as u64,
        topk_ids: &mut topk_ids,
        topk_weights: &mut topk_weights,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(blocks as u32))?;
    let out = Routed {
        topk_ids,
        topk_weights,
    };
    let check = DeviceCheck::on_device(OP, status, explain_route).eager_if_asked()?;
    Ok((out, check))
}

/// The error of bad logit rows: the first token, and how many of each kind.
fn bad_logits(op: &'static str, first: Option<usize>, nan: usize, neg: usize) -> Error {
    let first = first.map_or(String::new(), |t| format!(" (first: token {t})"));
    Error::invalid(
        op,
        format!(
            "{nan} token(s) have a NaN or +inf logit among the unmasked experts and {neg} have \
             all unmasked logits -inf{first}: the softmax is undefined"
        ),
    )
}

/// The verdict of the route status words: per block `[NaN/+inf tokens, all −inf tokens, first]`.
fn explain_route(op: &'static str, w: &[i32]) -> Result<()> {
    let (mut nan, mut neg, mut first) = (0usize, 0usize, None::<usize>);
    for b in w.chunks(3) {
        let &[x, y, f] = b else {
            return Err(Error::invalid(op, format!("unknown device status {w:?}")));
        };
        nan += x as u32 as usize;
        neg += y as u32 as usize;
        if f >= 0 {
            first = Some(first.map_or(f as usize, |p: usize| p.min(f as usize)));
        }
    }
    if nan + neg == 0 {
        Ok(())
    } else {
        Err(bad_logits(op, first, nan, neg))
    }
}

// ---- moe.load -------------------------------------------------------------------------------

/// The result of [`load`], on the op's device.
#[derive(Debug)]
pub struct Load {
    /// `[r·N]`: the number of `topk_ids` entries equal to each virtual expert.
    pub per_expert: DeviceBuffer<i32>,
    /// `[r]`: the number routed to the experts of the group's `j`-th physical layer
    /// (virtual ids `j·N .. j·N + N`).
    pub per_layer: DeviceBuffer<i32>,
}

/// Load statistics of the router's `topk_ids` (any shape, every entry a virtual expert id in
/// `[0, r·N)`): integer counts, bit-exact. Errors ([`Error::InvalidArgument`] naming
/// `moe::load`): `num_experts == 0`, `r == 0`, `r·N > MAX_EXPERTS`, more than `i32::MAX` entries,
/// and (on the device) an id outside `[0, r·N)`. One launch of one block; the op reads the
/// status word back ([`load_deferred`] does not).
pub fn load(topk_ids: &DeviceBuffer<i32>, num_experts: usize, r: usize) -> Result<Load> {
    let (out, check) = load_deferred(topk_ids, num_experts, r)?;
    check.check()?;
    Ok(out)
}

/// [`load`] with the id check left in the returned [`DeviceCheck`].
pub fn load_deferred(
    topk_ids: &DeviceBuffer<i32>,
    num_experts: usize,
    r: usize,
) -> Result<(Load, DeviceCheck)> {
    const OP: &str = "moe::load";
    let dev = topk_ids.device().clone();
    let n = topk_ids.len();
    if num_experts == 0 || r == 0 {
        return Err(Error::invalid(
            OP,
            format!("num_experts (N = {num_experts}) and r ({r}) must be >= 1"),
        ));
    }
    let e = num_experts.saturating_mul(r);
    if e > MAX_EXPERTS {
        return Err(Error::invalid(
            OP,
            format!("r·N = {r}·{num_experts} virtual experts exceed MAX_EXPERTS = {MAX_EXPERTS}"),
        ));
    }
    if n > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("{n} ids exceed i32::MAX")));
    }
    if let Some(h) = cpu_path(OP, &dev) {
        let ids = h.slice(topk_ids)?;
        if let Some((i, id)) = reference::first_bad(ids, e) {
            return Err(bad_id(OP, Some((i, id)), 1, e));
        }
        let (pe, pl) = reference::load(ids, num_experts, r);
        let out = Load {
            per_expert: dev.upload(&pe, "moe.per_expert")?,
            per_layer: dev.upload(&pl, "moe.per_layer")?,
        };
        return Ok((out, DeviceCheck::none()));
    }
    let mut per_expert = dev.alloc::<i32>(e, "moe.per_expert")?;
    let mut per_layer = dev.alloc::<i32>(r, "moe.per_layer")?;
    let mut status = dev.alloc::<i32>(2, "moe.load_status")?;
    LoadKernel {
        topk_ids,
        n: n as u32,
        num_virtual: e as u32,
        num_experts: num_experts as u32,
        r: r as u32,
        per_expert: &mut per_expert,
        per_layer: &mut per_layer,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(1))?;
    let out = Load {
        per_expert,
        per_layer,
    };
    let check = DeviceCheck::on_device(OP, status, explain_status).eager_if_asked()?;
    Ok((out, check))
}

// ---- moe.permute / moe.combine ----------------------------------------------------------------

/// 64-bit words, the widest copy unit of the permute kernel (suffix `b64`).
pub struct B64;

impl Width for B64 {
    type Elem = u64;
}
impl KernelSuffix for B64 {
    const SUFFIX: &'static str = "b64";
}

/// A buffer of any element type seen as words of `W` (the caller checked that its byte length
/// and every row are multiples of the word).
pub(crate) struct Words<'a, W: Width> {
    addr: u64,
    _view: PhantomData<&'a W::Elem>,
}

/// [`Words`] for a buffer the kernel writes.
pub(crate) struct WordsMut<'a, W: Width> {
    addr: u64,
    _view: PhantomData<&'a mut W::Elem>,
}

impl<'a, W: Width> Words<'a, W> {
    fn of<T: DType>(b: &'a DeviceBuffer<T>) -> Self {
        Words {
            addr: b.addr(),
            _view: PhantomData,
        }
    }
}

impl<'a, W: Width> WordsMut<'a, W> {
    fn of<T: DType>(b: &'a mut DeviceBuffer<T>) -> Self {
        WordsMut {
            addr: b.addr(),
            _view: PhantomData,
        }
    }
}

impl<W: Width> KernelArg for Words<'_, W> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.addr);
    }
}

impl<W: Width> KernelArg for WordsMut<'_, W> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.addr);
    }
}

/// The result of [`permute`], on the op's device.
#[derive(Debug)]
pub struct Permuted<T: DType> {
    /// `[len, d]` with `len = aligned.sorted_token_ids.len()`: row `p` is token
    /// `sorted_token_ids[p] / top_k`'s row of `x`; the rows of padding, sentinel and tail entries
    /// are zero.
    pub rows: DeviceBuffer<T>,
    /// `[E + 1]`: the padded run start of each expert in `rows` (a multiple of the block size);
    /// `offsets[E] = num_tokens_post_padded`. Group `e` of a grouped GEMM is rows
    /// `offsets[e] .. offsets[e + 1]`.
    pub offsets: DeviceBuffer<i32>,
    /// `[T·k]`: the row of `rows` that holds flat entry `t·k + slot`.
    pub positions: DeviceBuffer<i32>,
}

/// Largest grid of the permute and combine kernels (they loop beyond it).
const MAX_GRID: usize = 4096;

/// Gather the token rows of `x` (`[T, d]`, any element type) into the aligned expert order of
/// `aligned` (the [`align`] of the `[T, top_k]` router ids for `num_experts` experts and
/// `block_size`): a copy, bit-exact. Also the group offsets and the inverse permutation.
///
/// Errors ([`Error::InvalidArgument`] naming `moe::permute`): `d == 0`, an `x` length not a
/// multiple of `d`, `top_k == 0`, `num_experts` outside `1..=MAX_EXPERTS`, `block_size == 0`,
/// lengths of the three `aligned` buffers that are not those of `align` for `T·top_k` entries,
/// buffers on another device, and (checked on the device) contents that are not an alignment:
/// an entry that is neither a flat index in `[0, T·k)` before `num_tokens_post_padded` nor the
/// sentinel `T·k`, a flat index missing or repeated, `expert_ids` out of range, decreasing, or
/// not `-1` past the used blocks, and a `num_tokens_post_padded` that is not a multiple of the
/// block size in `[0, len]`. The kernels never read or write out of bounds on such input.
/// [`permute`] reads the status back (a wait); [`permute_deferred`] does not.
pub fn permute<T: DType>(
    x: &DeviceBuffer<T>,
    d: usize,
    aligned: &Aligned,
    top_k: usize,
    num_experts: usize,
    block_size: usize,
) -> Result<Permuted<T>> {
    let (out, check) = permute_deferred(x, d, aligned, top_k, num_experts, block_size)?;
    check.check()?;
    Ok(out)
}

/// [`permute`] with the content checks left in the returned [`DeviceCheck`].
pub fn permute_deferred<T: DType>(
    x: &DeviceBuffer<T>,
    d: usize,
    aligned: &Aligned,
    top_k: usize,
    num_experts: usize,
    block_size: usize,
) -> Result<(Permuted<T>, DeviceCheck)> {
    const OP: &str = "moe::permute";
    let dev = x.device().clone();
    if d == 0 || x.len() % d != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "x has {} elements, not a multiple of d = {d} (d >= 1)",
                x.len()
            ),
        ));
    }
    if top_k == 0 {
        return Err(Error::invalid(OP, "top_k must be >= 1"));
    }
    if num_experts == 0 || num_experts > MAX_EXPERTS {
        return Err(Error::invalid(
            OP,
            format!("num_experts must be in 1..={MAX_EXPERTS}, got {num_experts}"),
        ));
    }
    if block_size == 0 {
        return Err(Error::invalid(OP, "block_size must be >= 1"));
    }
    let tokens = x.len() / d;
    let n = tokens
        .checked_mul(top_k)
        .filter(|&n| n <= i32::MAX as usize)
        .ok_or_else(|| Error::invalid(OP, format!("T·k = {tokens}·{top_k} exceeds i32::MAX")))?;
    let len = reference::sorted_len(n, num_experts, block_size)
        .filter(|&l| l <= i32::MAX as usize)
        .ok_or_else(|| Error::invalid(OP, "T·k + E·(block_size − 1) exceeds i32::MAX"))?;
    let nblocks = len.div_ceil(block_size);
    for (what, b, want) in [
        ("sorted_token_ids", &aligned.sorted_token_ids, len),
        ("expert_ids", &aligned.expert_ids, nblocks),
        ("num_tokens_post_padded", &aligned.num_tokens_post_padded, 1),
    ] {
        if b.len() != want {
            return Err(Error::invalid(
                OP,
                format!(
                    "aligned.{what} has {} entries; align of T·k = {tokens}·{top_k} ids for \
                     {num_experts} experts and block {block_size} gives {want}",
                    b.len()
                ),
            ));
        }
        on_device(OP, what, &dev, b)?;
    }
    let row_bytes = d * std::mem::size_of::<T>();
    len.checked_mul(row_bytes)
        .ok_or_else(|| Error::invalid(OP, "the permuted rows exceed the address space"))?;

    if let Some(h) = cpu_path(OP, &dev) {
        let p = reference::permute(
            h.slice(x)?,
            d,
            h.slice(&aligned.sorted_token_ids)?,
            h.slice(&aligned.expert_ids)?,
            h.slice(&aligned.num_tokens_post_padded)?[0],
            top_k,
            num_experts,
            block_size,
        )
        .map_err(|m| Error::invalid(OP, m))?;
        let out = Permuted {
            rows: dev.upload(&p.rows, "moe.permuted_rows")?,
            offsets: dev.upload(&p.offsets, "moe.offsets")?,
            positions: dev.upload(&p.positions, "moe.positions")?,
        };
        return Ok((out, DeviceCheck::none()));
    }

    let mut rows = dev.alloc::<T>(len * d, "moe.permuted_rows")?;
    let mut offsets = dev.alloc::<i32>(num_experts + 1, "moe.offsets")?;
    let mut positions = dev.alloc::<i32>(n, "moe.positions")?;
    let tile = BLOCK as usize;
    let g1 = len
        .max(nblocks)
        .max(num_experts + 1)
        .div_ceil(tile)
        .clamp(1, MAX_GRID);
    let g2 = len.max(n.div_ceil(tile)).clamp(1, MAX_GRID);
    let mut status = dev.alloc::<i32>(3 + 3 * g1 + g2, "moe.permute_status")?;
    PermuteIndexKernel {
        sorted: &aligned.sorted_token_ids,
        len: len as u32,
        n: n as u32,
        expert_ids: &aligned.expert_ids,
        nblocks: nblocks as u32,
        ntpp: &aligned.num_tokens_post_padded,
        num_experts: num_experts as u32,
        block_size: block_size as u32,
        positions: &mut positions,
        offsets: &mut offsets,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(g1 as u32))?;
    let grid = Grid::linear(g2 as u32);
    macro_rules! rows_kernel {
        ($w:ty, $bytes:expr) => {
            PermuteRowsKernel::<$w> {
                x: Words::of(x),
                sorted: &aligned.sorted_token_ids,
                positions: &positions,
                len: len as u32,
                n: n as u32,
                k: top_k as u32,
                words: (row_bytes / $bytes) as u64,
                rows: WordsMut::of(&mut rows),
                status: &mut status,
                status_off: (3 + 3 * g1) as u32,
            }
            .launch(&dev, grid)?
        };
    }
    // The widest word dividing the row (buffers are allocated at least 8-byte aligned).
    if row_bytes % 8 == 0 {
        rows_kernel!(B64, 8);
    } else if row_bytes % 4 == 0 {
        rows_kernel!(B32, 4);
    } else if row_bytes % 2 == 0 {
        rows_kernel!(B16, 2);
    } else {
        rows_kernel!(B8, 1);
    }
    let out = Permuted {
        rows,
        offsets,
        positions,
    };
    let check = DeviceCheck::on_device(OP, status, explain_permute).eager_if_asked()?;
    Ok((out, check))
}

/// The verdict of the permute status words (layout in `cuda/moe/permute.cu`).
fn explain_permute(op: &'static str, w: &[i32]) -> Result<()> {
    let bad_status = || Error::invalid(op, format!("unknown device status of {} words", w.len()));
    let [n, e, g1, rest @ ..] = w else {
        return Err(bad_status());
    };
    let g1 = *g1 as u32 as usize;
    if rest.len() < 3 * g1 {
        return Err(bad_status());
    }
    let (idx, rows) = rest.split_at(3 * g1);
    let sum = |it: &mut dyn Iterator<Item = &i32>| it.map(|&x| x as u32 as u64).sum::<u64>();
    let bad = sum(&mut idx.iter().step_by(3));
    let valid = sum(&mut idx.iter().skip(1).step_by(3));
    let faults = sum(&mut idx.iter().skip(2).step_by(3));
    let missing = sum(&mut rows.iter());
    let n = *n as u32 as u64;
    if bad > 0 {
        return Err(Error::invalid(
            op,
            format!(
                "{bad} entries of sorted_token_ids are neither a flat index in [0, {n}) before \
                 num_tokens_post_padded nor the sentinel {n}"
            ),
        ));
    }
    if faults > 0 {
        return Err(Error::invalid(
            op,
            format!(
                "expert_ids / num_tokens_post_padded are not an alignment for {e} experts ({faults} \
                 faults: an id out of range, decreasing, not -1 past the used blocks, or a total \
                 that is not a multiple of the block size within the length)"
            ),
        ));
    }
    if valid != n || missing > 0 {
        return Err(Error::invalid(
            op,
            format!(
                "sorted_token_ids does not hold every flat index in [0, {n}) exactly once ({valid} \
                 index entries, {missing} indices missing)"
            ),
        ));
    }
    Ok(())
}

/// Combine the expert outputs back to token order: `y[t, :] = Σ_{slot = 0..k−1, in order}
/// w[t, slot] · expert_out[positions[t·k + slot], :]`, accumulated in f32 and rounded to `O`
/// (round to nearest even). `expert_out` is `[rows, d]` (any number of rows, e.g. the permuted
/// `len`), `positions` and `topk_weights` are `[T, k]` ([`Permuted::positions`] and
/// [`Routed::topk_weights`]). No float atomics: the same bits on every run.
///
/// Errors ([`Error::InvalidArgument`] naming `moe::combine`): `d == 0`, `top_k == 0`, an
/// `expert_out` length not a multiple of `d`, a `positions` length not a multiple of `top_k`,
/// `topk_weights` not the length of `positions`, more than `u32::MAX` tokens, `d > u32::MAX`,
/// buffers on another device, and (on the device) a position outside `[0, rows)` (which then
/// contributes nothing). [`combine`] reads the status back; [`combine_deferred`] does not.
pub fn combine<I: Float, O: Float>(
    expert_out: &DeviceBuffer<I>,
    positions: &DeviceBuffer<i32>,
    topk_weights: &DeviceBuffer<f32>,
    d: usize,
    top_k: usize,
) -> Result<DeviceBuffer<O>> {
    let (y, check) = combine_deferred(expert_out, positions, topk_weights, d, top_k)?;
    check.check()?;
    Ok(y)
}

/// [`combine`] with the position check left in the returned [`DeviceCheck`].
pub fn combine_deferred<I: Float, O: Float>(
    expert_out: &DeviceBuffer<I>,
    positions: &DeviceBuffer<i32>,
    topk_weights: &DeviceBuffer<f32>,
    d: usize,
    top_k: usize,
) -> Result<(DeviceBuffer<O>, DeviceCheck)> {
    combine_residual_deferred(expert_out, positions, topk_weights, d, top_k, None)
}

/// [`combine`] plus an optional `residual` `[T, d]` in the output type, added first:
/// `y[t, :] = residual[t, :] + Σ_slot w[t, slot] · expert_out[positions[t·k + slot], :]` (f32,
/// rounded once). The residual add of a transformer block, fused.
pub fn combine_residual<I: Float, O: Float>(
    expert_out: &DeviceBuffer<I>,
    positions: &DeviceBuffer<i32>,
    topk_weights: &DeviceBuffer<f32>,
    d: usize,
    top_k: usize,
    residual: Option<&DeviceBuffer<O>>,
) -> Result<DeviceBuffer<O>> {
    let (y, check) =
        combine_residual_deferred(expert_out, positions, topk_weights, d, top_k, residual)?;
    check.check()?;
    Ok(y)
}

/// [`combine_residual`] with the position check left in the returned [`DeviceCheck`].
pub fn combine_residual_deferred<I: Float, O: Float>(
    expert_out: &DeviceBuffer<I>,
    positions: &DeviceBuffer<i32>,
    topk_weights: &DeviceBuffer<f32>,
    d: usize,
    top_k: usize,
    residual: Option<&DeviceBuffer<O>>,
) -> Result<(DeviceBuffer<O>, DeviceCheck)> {
    const OP: &str = "moe::combine";
    let dev = expert_out.device().clone();
    if d == 0 || top_k == 0 {
        return Err(Error::invalid(
            OP,
            format!("d ({d}) and top_k ({top_k}) must be >= 1"),
        ));
    }
    if d > u32::MAX as usize {
        return Err(Error::invalid(OP, format!("d = {d} exceeds u32::MAX")));
    }
    if expert_out.len() % d != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "expert_out has {} elements, not a multiple of d = {d}",
                expert_out.len()
            ),
        ));
    }
    if positions.len() % top_k != 0 || topk_weights.len() != positions.len() {
        return Err(Error::invalid(
            OP,
            format!(
                "positions ({}) and topk_weights ({}) must both have T·top_k entries (top_k = \
                 {top_k})",
                positions.len(),
                topk_weights.len()
            ),
        ));
    }
    on_device(OP, "positions", &dev, positions)?;
    on_device(OP, "topk_weights", &dev, topk_weights)?;
    let tokens = positions.len() / top_k;
    if tokens > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("{tokens} tokens exceed u32::MAX"),
        ));
    }
    if let Some(res) = residual {
        on_device(OP, "residual", &dev, res)?;
        if res.len() != tokens * d {
            return Err(Error::invalid(
                OP,
                format!(
                    "residual has {} elements, not [T, d] = [{tokens}, {d}]",
                    res.len()
                ),
            ));
        }
    }
    let rows = expert_out.len() / d;
    if let Some(h) = cpu_path(OP, &dev) {
        let pos = h.slice(positions)?;
        if let Some(i) = pos.iter().position(|&p| p < 0 || p as usize >= rows) {
            return Err(Error::invalid(
                OP,
                format!(
                    "positions[{i}] = {} is not a row of expert_out in [0, {rows})",
                    pos[i]
                ),
            ));
        }
        let mut y = reference::combine(h.slice(expert_out)?, pos, h.slice(topk_weights)?, d, top_k);
        if let Some(res) = residual {
            for (y, r) in y.iter_mut().zip(h.slice(res)?) {
                *y += r.to_f64();
            }
        }
        let y: Vec<O> = y.iter().map(|&v| O::from_f64(v)).collect();
        return Ok((dev.upload(&y, "moe.combined")?, DeviceCheck::none()));
    }
    let mut y = dev.alloc::<O>(tokens * d, "moe.combined")?;
    let grid = tokens.clamp(1, MAX_GRID);
    let mut status = dev.alloc::<i32>(grid, "moe.combine_status")?;
    CombineKernel::<I, O> {
        expert_out,
        rows: rows as u64,
        positions,
        weights: topk_weights,
        tokens: tokens as u32,
        k: top_k as u32,
        d: d as u32,
        residual,
        y: &mut y,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(grid as u32))?;
    let check = DeviceCheck::on_device(OP, status, explain_combine).eager_if_asked()?;
    Ok((y, check))
}

/// The verdict of the combine status words: per block, the positions outside the rows.
fn explain_combine(op: &'static str, w: &[i32]) -> Result<()> {
    let bad: u64 = w.iter().map(|&x| x as u32 as u64).sum();
    if bad == 0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("{bad} entries of positions are not rows of expert_out"),
        ))
    }
}
