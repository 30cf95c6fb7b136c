//! TaH (Think-at-Hard) ops: the launches of `cuda/tah/driver.cu` with their validation and CPU
//! paths (the reference, [`crate::reference::tah`]). The iteration driver
//! ([`crate::drivers::tah`]: the KV cache and `attend`) calls these.
//!
//! * [`select_hard`]: the decider's scores -> the indices of the hard tokens, in order, with an
//!   exact count; [`gather_rows`] / [`scatter_rows`] move hidden states or positions of the active
//!   tokens; [`copy_range`] copies a range between buffers of one device.
//! * [`next_depth_input`]: the soft-embedding input of the next depth (top-k of the cumulative
//!   logits, softmax, weighted sum of embedding rows).
//! * [`accumulate_logits`]: `cum += logits` across depths.

use half::{bf16, f16};

use crate::device::kernel::{BitsOf, BitsOfMut, Grid, KernelSuffix, Width, B16, B32, B8};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device};
use crate::reference::tah as reference;

/// Threads per block of every kernel of the module (kBlock / kTopkBlock).
const BLOCK: u32 = 256;

crate::kernels! {
    module = "tah/driver";
    /// Per block: the number of scores above the threshold.
    pub(crate) struct SelectCountKernel<'a> = "tah_select_count" block = BLOCK {
        scores: &'a DeviceBuffer<f32>,
        n: u64,
        thr: f32,
        block_counts: &'a mut DeviceBuffer<u32>,
    }
    /// Exclusive scan of the per-block counts into `nblocks + 1` offsets (one block).
    pub(crate) struct ScanCountsKernel<'a> = "tah_scan_counts" block = BLOCK {
        counts: &'a DeviceBuffer<u32>,
        nblocks: u64,
        offsets: &'a mut DeviceBuffer<u64>,
    }
    /// The indices of the selected scores, in order.
    pub(crate) struct SelectCompactKernel<'a> = "tah_select_compact" block = BLOCK {
        scores: &'a DeviceBuffer<f32>,
        n: u64,
        thr: f32,
        block_offsets: &'a DeviceBuffer<u64>,
        indices: &'a mut DeviceBuffer<u32>,
    }
    /// `out[r, :] = src[idx[r], :]` for 32-bit elements.
    pub(crate) struct GatherRowsKernel<'a> = "tah_gather_rows_b32" block = BLOCK {
        src: BitsOf<'a, u32>,
        idx: &'a DeviceBuffer<u32>,
        m: u64,
        d: u64,
        out: BitsOfMut<'a, u32>,
    }
    /// `dst[idx[r], :] = src[r, :]` for 32-bit elements.
    pub(crate) struct ScatterRowsKernel<'a> = "tah_scatter_rows_b32" block = BLOCK {
        src: BitsOf<'a, u32>,
        idx: &'a DeviceBuffer<u32>,
        m: u64,
        d: u64,
        dst: BitsOfMut<'a, u32>,
    }
    /// `dst[dst_off..][..n] = src[src_off..][..n]`, one instance per element width.
    pub(crate) struct CopyKernel<'a, W: Width> = "tah_copy" [(B8), (B16), (B32)] block = BLOCK {
        src: BitsOf<'a, W::Elem>,
        src_off: u64,
        dst: BitsOfMut<'a, W::Elem>,
        dst_off: u64,
        n: u64,
    }
    /// Top-k, softmax and the weighted embedding sum; one block per row.
    pub(crate) struct NextInputKernel<'a, E: Float> = "tah_next_input" [(f32), (f16), (bf16)] block = BLOCK {
        cum: &'a DeviceBuffer<f32>,
        vocab: u64,
        k: i32,
        emb: &'a DeviceBuffer<E>,
        d: i32,
        out: &'a mut DeviceBuffer<f32>,
        out_ids: &'a mut DeviceBuffer<u32>,
        out_w: &'a mut DeviceBuffer<f32>,
    }
    /// `cum += logits`.
    pub(crate) struct AccumulateKernel<'a> = "tah_accumulate_f32" block = BLOCK {
        cum: &'a mut DeviceBuffer<f32>,
        logits: &'a DeviceBuffer<f32>,
        n: u64,
    }
}

/// A 4-byte element type's buffer as raw 32-bit words (the row kernels move bits).
fn words<'a, T: DType>(op: &'static str, b: &'a DeviceBuffer<T>) -> Result<BitsOf<'a, u32>> {
    BitsOf::of(b).ok_or_else(|| Error::invalid(op, format!("{} is not a 4-byte type", T::KIND)))
}

fn words_mut<'a, T: DType>(
    op: &'static str,
    b: &'a mut DeviceBuffer<T>,
) -> Result<BitsOfMut<'a, u32>> {
    BitsOfMut::of(b).ok_or_else(|| Error::invalid(op, format!("{} is not a 4-byte type", T::KIND)))
}
/// Largest k of [`next_depth_input`] (kMaxK).
pub const MAX_TOP_K: usize = 256;

fn stride_grid(n: u64) -> u32 {
    n.div_ceil(BLOCK as u64).clamp(1, 1 << 16) as u32
}

/// Copy `n` elements of `src` starting at `src_off` into `dst` at `dst_off` (same device).
pub fn copy_range<T: DType>(
    src: &DeviceBuffer<T>,
    src_off: usize,
    dst: &mut DeviceBuffer<T>,
    dst_off: usize,
    n: usize,
) -> Result<()> {
    const OP: &str = "tah::copy_range";
    let dev = dst.device().clone();
    on_device(OP, "src", &dev, src)?;
    if src_off.checked_add(n).is_none_or(|e| e > src.len())
        || dst_off.checked_add(n).is_none_or(|e| e > dst.len())
    {
        return Err(Error::invalid(
            OP,
            format!(
                "range of {n} elements at {src_off} (src has {}) -> {dst_off} (dst has {})",
                src.len(),
                dst.len()
            ),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    if let Some(h) = cpu_path(OP, &dev) {
        let s = h.slice(src)?[src_off..][..n].to_vec();
        h.slice_mut(dst)?[dst_off..][..n].copy_from_slice(&s);
        return Ok(());
    }
    fn copy<W: Width + KernelSuffix, T: DType>(
        dev: &Device,
        src: &DeviceBuffer<T>,
        src_off: usize,
        dst: &mut DeviceBuffer<T>,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        let sized = || Error::invalid(OP, "element size changed");
        CopyKernel::<W> {
            src: BitsOf::of(src).ok_or_else(sized)?,
            src_off: src_off as u64,
            dst: BitsOfMut::of(dst).ok_or_else(sized)?,
            dst_off: dst_off as u64,
            n: n as u64,
        }
        .launch(dev, Grid::linear(stride_grid(n as u64)))
    }
    match std::mem::size_of::<T>() {
        1 => copy::<B8, T>(&dev, src, src_off, dst, dst_off, n),
        2 => copy::<B16, T>(&dev, src, src_off, dst, dst_off, n),
        4 => copy::<B32, T>(&dev, src, src_off, dst, dst_off, n),
        s => Err(Error::invalid(
            OP,
            format!("element size {s} is not 1, 2 or 4"),
        )),
    }
}

/// The hard tokens of a step: their indices (ascending, `u32`) and their number.
#[derive(Debug)]
pub struct Selection {
    pub indices: DeviceBuffer<u32>,
    pub count: usize,
}

/// Select the tokens with `sigmoid(score) > threshold` (the paper uses 0.9), compared as
/// `score > logit(threshold)` with the logit computed in f64 and rounded to f32
/// ([`reference::logit_threshold`]); NaN scores are never selected. `threshold` in (0, 1).
pub fn select_hard(scores: &DeviceBuffer<f32>, threshold: f64) -> Result<Selection> {
    const OP: &str = "tah::select_hard";
    let dev = scores.device().clone();
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(Error::invalid(
            OP,
            format!("threshold must be in (0, 1), got {threshold}"),
        ));
    }
    let n = scores.len();
    if n as u64 > u32::MAX as u64 {
        return Err(Error::invalid(
            OP,
            format!("{n} scores exceed the u32 index range"),
        ));
    }
    let thr = reference::logit_threshold(threshold);
    if let Some(h) = cpu_path(OP, &dev) {
        let idx = reference::select_hard(h.slice(scores)?, thr);
        return Ok(Selection {
            count: idx.len(),
            indices: dev.upload(&idx, "tah.indices")?,
        });
    }
    if n == 0 {
        return Ok(Selection {
            indices: dev.alloc(0, "tah.indices")?,
            count: 0,
        });
    }
    let nb = (n as u64).div_ceil(BLOCK as u64) as u32;
    let mut counts = dev.alloc::<u32>(nb as usize, "tah.block_counts")?;
    SelectCountKernel {
        scores,
        n: n as u64,
        thr,
        block_counts: &mut counts,
    }
    .launch(&dev, Grid::linear(nb))?;
    let mut offsets = dev.alloc::<u64>(nb as usize + 1, "tah.offsets")?;
    ScanCountsKernel {
        counts: &counts,
        nblocks: nb as u64,
        offsets: &mut offsets,
    }
    .launch(&dev, Grid::linear(1))?;
    let total = offsets.download_range(nb as usize, 1)?[0];
    let count = usize::try_from(total)
        .ok()
        .filter(|&t| t <= n)
        .ok_or_else(|| {
            Error::kernel(
                dev.backend().family(),
                "tah_scan_counts",
                format!("total {total} > n {n}"),
            )
        })?;
    let mut indices = dev.alloc::<u32>(count, "tah.indices")?;
    if count > 0 {
        SelectCompactKernel {
            scores,
            n: n as u64,
            thr,
            block_offsets: &offsets,
            indices: &mut indices,
        }
        .launch(&dev, Grid::linear(nb))?;
    }
    Ok(Selection { indices, count })
}

/// Check a row-index list against `rows` (and distinctness for scatters); returns the indices.
fn check_indices(
    op: &'static str,
    idx: &DeviceBuffer<u32>,
    rows: usize,
    distinct: bool,
) -> Result<Vec<u32>> {
    let host = idx.download()?;
    if let Some((r, &i)) = host.iter().enumerate().find(|(_, &i)| i as usize >= rows) {
        return Err(Error::invalid(
            op,
            format!("index {i} at {r} is out of range for {rows} rows"),
        ));
    }
    if distinct {
        let mut seen = vec![false; rows];
        for &i in &host {
            if std::mem::replace(&mut seen[i as usize], true) {
                return Err(Error::invalid(op, format!("index {i} appears twice")));
            }
        }
    }
    Ok(host)
}

fn row_shape<T: DType>(
    op: &'static str,
    what: &str,
    buf: &DeviceBuffer<T>,
    d: usize,
) -> Result<usize> {
    if std::mem::size_of::<T>() != 4 {
        return Err(Error::invalid(
            op,
            format!(
                "{what} is {}, rows of 32-bit elements (f32, i32, u32) are supported",
                T::KIND
            ),
        ));
    }
    if d == 0 || buf.len() % d != 0 {
        return Err(Error::invalid(
            op,
            format!("{what} has {} elements, not rows of width {d}", buf.len()),
        ));
    }
    Ok(buf.len() / d)
}

/// `out[r, :] = src[idx[r], :]`: rows of width `d` (hidden states `[n, d]` f32, or positions
/// with `d = 1`) of the active tokens. Indices must be `< rows`.
pub fn gather_rows<T: DType>(
    src: &DeviceBuffer<T>,
    idx: &DeviceBuffer<u32>,
    d: usize,
) -> Result<DeviceBuffer<T>> {
    const OP: &str = "tah::gather_rows";
    let dev = src.device().clone();
    on_device(OP, "idx", &dev, idx)?;
    let rows = row_shape(OP, "src", src, d)?;
    let host = check_indices(OP, idx, rows, false)?;
    let m = host.len();
    if let Some(h) = cpu_path(OP, &dev) {
        let out = reference::gather_rows(h.slice(src)?, &host, d);
        return dev.upload(&out, "tah.gathered");
    }
    let mut out = dev.alloc::<T>(m * d, "tah.gathered")?;
    if m > 0 {
        GatherRowsKernel {
            src: words(OP, src)?,
            idx,
            m: m as u64,
            d: d as u64,
            out: words_mut(OP, &mut out)?,
        }
        .launch(&dev, Grid::linear(stride_grid((m * d) as u64)))?;
    }
    Ok(out)
}

/// `dst[idx[r], :] = src[r, :]`: write the active tokens' rows back. Indices must be distinct and
/// `< dst rows`; `src` has one row per index.
pub fn scatter_rows<T: DType>(
    src: &DeviceBuffer<T>,
    idx: &DeviceBuffer<u32>,
    d: usize,
    dst: &mut DeviceBuffer<T>,
) -> Result<()> {
    const OP: &str = "tah::scatter_rows";
    let dev = dst.device().clone();
    on_device(OP, "idx", &dev, idx)?;
    on_device(OP, "src", &dev, src)?;
    let rows = row_shape(OP, "dst", dst, d)?;
    let m = row_shape(OP, "src", src, d)?;
    let host = check_indices(OP, idx, rows, true)?;
    if host.len() != m {
        return Err(Error::invalid(
            OP,
            format!("src has {m} rows but there are {} indices", host.len()),
        ));
    }
    if let Some(h) = cpu_path(OP, &dev) {
        let s = h.slice(src)?.to_vec();
        reference::scatter_rows(&s, &host, d, h.slice_mut(dst)?);
        return Ok(());
    }
    if m > 0 {
        ScatterRowsKernel {
            src: words(OP, src)?,
            idx,
            m: m as u64,
            d: d as u64,
            dst: words_mut(OP, dst)?,
        }
        .launch(&dev, Grid::linear(stride_grid((m * d) as u64)))?;
    }
    Ok(())
}

/// The next depth's input for `m` active tokens.
#[derive(Debug)]
pub struct NextInput {
    /// `[m, d]` f32: the soft embeddings.
    pub out: DeviceBuffer<f32>,
    /// `[m, k]`: the top-k token ids per row, by value descending, ties by lower id.
    pub ids: DeviceBuffer<u32>,
    /// `[m, k]`: the softmax weights of those ids.
    pub weights: DeviceBuffer<f32>,
}

/// For each row of the cumulative logits `cum` `[m, vocab]` (f32): the top-`k` token ids (value
/// descending; ties broken by the lower token id; f32 order with -0.0 < +0.0), the softmax over
/// their values (f32, max-shifted), and the weighted sum of those rows of `emb` `[vocab, d]`.
/// `1 <= k <= min(256, vocab)`. Logits must be finite (a NaN or +inf among the top-k gives NaN).
pub fn next_depth_input<E: Float>(
    cum: &DeviceBuffer<f32>,
    vocab: usize,
    k: usize,
    emb: &DeviceBuffer<E>,
    d: usize,
) -> Result<NextInput> {
    const OP: &str = "tah::next_depth_input";
    let dev = cum.device().clone();
    on_device(OP, "emb", &dev, emb)?;
    if vocab == 0 || vocab as u64 > u32::MAX as u64 {
        return Err(Error::invalid(
            OP,
            format!("vocab {vocab} must be in 1..=2^32-1"),
        ));
    }
    if k == 0 || k > MAX_TOP_K || k > vocab {
        return Err(Error::invalid(
            OP,
            format!("k = {k} must be in 1..={}", MAX_TOP_K.min(vocab)),
        ));
    }
    if cum.len() % vocab != 0 {
        return Err(Error::invalid(
            OP,
            format!("cum has {} elements, not rows of vocab {vocab}", cum.len()),
        ));
    }
    if d == 0 || d > i32::MAX as usize || vocab.checked_mul(d) != Some(emb.len()) {
        return Err(Error::invalid(
            OP,
            format!(
                "emb has {} elements, expected [vocab {vocab}, d {d}]",
                emb.len()
            ),
        ));
    }
    let m = cum.len() / vocab;
    if m > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("{m} rows exceed the grid")));
    }
    if let Some(h) = cpu_path(OP, &dev) {
        let (o, ids, w) = reference::next_depth_input(h.slice(cum)?, vocab, k, h.slice(emb)?, d);
        let o: Vec<f32> = o.iter().map(|&x| x as f32).collect();
        let w: Vec<f32> = w.iter().map(|&x| x as f32).collect();
        return Ok(NextInput {
            out: dev.upload(&o, "tah.next_input")?,
            ids: dev.upload(&ids, "tah.topk_ids")?,
            weights: dev.upload(&w, "tah.topk_weights")?,
        });
    }
    let mut out = dev.alloc::<f32>(m * d, "tah.next_input")?;
    let mut ids = dev.alloc::<u32>(m * k, "tah.topk_ids")?;
    let mut weights = dev.alloc::<f32>(m * k, "tah.topk_weights")?;
    if m > 0 {
        NextInputKernel {
            cum,
            vocab: vocab as u64,
            k: k as i32,
            emb,
            d: d as i32,
            out: &mut out,
            out_ids: &mut ids,
            out_w: &mut weights,
        }
        .launch(&dev, Grid::linear(m as u32))?;
    }
    Ok(NextInput { out, ids, weights })
}

/// `cum[i] += logits[i]` in f32 (the logits of every depth a token went through are summed).
pub fn accumulate_logits(cum: &mut DeviceBuffer<f32>, logits: &DeviceBuffer<f32>) -> Result<()> {
    const OP: &str = "tah::accumulate_logits";
    let dev = cum.device().clone();
    on_device(OP, "logits", &dev, logits)?;
    if cum.len() != logits.len() {
        return Err(Error::invalid(
            OP,
            format!(
                "cum has {} elements, logits has {}",
                cum.len(),
                logits.len()
            ),
        ));
    }
    let n = cum.len();
    if let Some(h) = cpu_path(OP, &dev) {
        let l = h.slice(logits)?.to_vec();
        reference::accumulate_logits(h.slice_mut(cum)?, &l);
        return Ok(());
    }
    if n == 0 {
        return Ok(());
    }
    AccumulateKernel {
        cum,
        logits,
        n: n as u64,
    }
    .launch(&dev, Grid::linear(stride_grid(n as u64)))
}
