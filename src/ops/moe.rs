//! Mixture-of-experts ops. Today: [`align`] (`moe.align`), the block alignment of the router's
//! top-k expert ids that a grouped expert GEMM consumes (vLLM's `moe_align_block_size`
//! contract, with a deterministic order). The rest of issue 12 (router, permute, combine, the
//! layer) is not built yet; see docs/moe.md.
//!
//! Kernels: `cuda/moe/align.cu`. Reference and CPU path: [`crate::reference::moe`].

use crate::device::kernel::Grid;
use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::{cpu_path, DeviceCheck};
use crate::reference::moe as reference;

/// Threads per block of every kernel of the module (`kBlock`).
const BLOCK: u32 = 256;

/// Largest number of experts [`align`] takes (`kMaxExperts`: shared-memory tables of one entry
/// per expert).
pub const MAX_EXPERTS: usize = 1024;

/// Most chunks (blocks) of a launch: every block of the placement launch scans the
/// `[chunks, E]` counts, so their number is bounded and large inputs get larger chunks.
const MAX_CHUNKS: usize = 256;

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
