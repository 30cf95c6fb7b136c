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

use crate::device::{Device, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
use crate::ops::on_device;
use crate::reference::tah as reference;

pub(crate) const MODULE: &str = "tah/driver";
/// Threads per block of every kernel of the module (kBlock / kTopkBlock).
const BLOCK: u32 = 256;
/// Largest k of [`next_depth_input`] (kMaxK).
pub const MAX_TOP_K: usize = 256;

fn stride_grid(n: u64) -> u32 {
    n.div_ceil(BLOCK as u64).clamp(1, 1 << 16) as u32
}

fn cpu(dev: &Device) -> bool {
    !dev.backend().runs_kernels()
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
    if cpu(&dev) {
        let s = src.host_slice().expect("cpu")[src_off..][..n].to_vec();
        dst.host_slice_mut().expect("cpu")[dst_off..][..n].copy_from_slice(&s);
        return Ok(());
    }
    let kernel = match std::mem::size_of::<T>() {
        1 => "tah_copy_b8",
        2 => "tah_copy_b16",
        4 => "tah_copy_b32",
        s => {
            return Err(Error::invalid(
                OP,
                format!("element size {s} is not 1, 2 or 4"),
            ))
        }
    };
    let mut a = KernelArgs::new();
    a.buf(src)
        .push(src_off as u64)
        .buf_mut(dst)
        .push(dst_off as u64)
        .push(n as u64);
    dev.launch(
        MODULE,
        kernel,
        &LaunchConfig::linear(stride_grid(n as u64), BLOCK, 0),
        &a,
    )
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
    if cpu(&dev) {
        let idx = reference::select_hard(scores.host_slice().expect("cpu"), thr);
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
    launch_select_count(scores, thr, nb, &mut counts)?;
    let mut offsets = dev.alloc::<u64>(nb as usize + 1, "tah.offsets")?;
    launch_scan_counts(&counts, &mut offsets)?;
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
        launch_select_compact(scores, thr, nb, &offsets, &mut indices)?;
    }
    Ok(Selection { indices, count })
}

/// `tah_select_count`: per block of scores, how many exceed `thr`.
fn launch_select_count(
    scores: &DeviceBuffer<f32>,
    thr: f32,
    blocks: u32,
    counts: &mut DeviceBuffer<u32>,
) -> Result<()> {
    let mut a = KernelArgs::new();
    a.buf(scores)
        .push(scores.len() as u64)
        .push(thr)
        .buf_mut(counts);
    scores.device().launch(
        MODULE,
        "tah_select_count",
        &LaunchConfig::linear(blocks, BLOCK, 0),
        &a,
    )
}

/// `tah_scan_counts`: exclusive scan of the block counts (one block), total last.
fn launch_scan_counts(counts: &DeviceBuffer<u32>, offsets: &mut DeviceBuffer<u64>) -> Result<()> {
    let mut a = KernelArgs::new();
    a.buf(counts).push(counts.len() as u64).buf_mut(offsets);
    counts.device().launch(
        MODULE,
        "tah_scan_counts",
        &LaunchConfig::linear(1, BLOCK, 0),
        &a,
    )
}

/// `tah_select_compact`: the selected indices, in order, at the scanned offsets.
fn launch_select_compact(
    scores: &DeviceBuffer<f32>,
    thr: f32,
    blocks: u32,
    offsets: &DeviceBuffer<u64>,
    indices: &mut DeviceBuffer<u32>,
) -> Result<()> {
    let mut a = KernelArgs::new();
    a.buf(scores)
        .push(scores.len() as u64)
        .push(thr)
        .buf(offsets)
        .buf_mut(indices);
    scores.device().launch(
        MODULE,
        "tah_select_compact",
        &LaunchConfig::linear(blocks, BLOCK, 0),
        &a,
    )
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
    if cpu(&dev) {
        let out = reference::gather_rows(src.host_slice().expect("cpu"), &host, d);
        return dev.upload(&out, "tah.gathered");
    }
    let mut out = dev.alloc::<T>(m * d, "tah.gathered")?;
    if m > 0 {
        let mut a = KernelArgs::new();
        a.buf(src)
            .buf(idx)
            .push(m as u64)
            .push(d as u64)
            .buf_mut(&mut out);
        dev.launch(
            MODULE,
            "tah_gather_rows_b32",
            &LaunchConfig::linear(stride_grid((m * d) as u64), BLOCK, 0),
            &a,
        )?;
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
    if cpu(&dev) {
        let s = src.host_slice().expect("cpu").to_vec();
        reference::scatter_rows(&s, &host, d, dst.host_slice_mut().expect("cpu"));
        return Ok(());
    }
    if m > 0 {
        let mut a = KernelArgs::new();
        a.buf(src)
            .buf(idx)
            .push(m as u64)
            .push(d as u64)
            .buf_mut(dst);
        dev.launch(
            MODULE,
            "tah_scatter_rows_b32",
            &LaunchConfig::linear(stride_grid((m * d) as u64), BLOCK, 0),
            &a,
        )?;
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
    if cpu(&dev) {
        let (o, ids, w) = reference::next_depth_input(
            cum.host_slice().expect("cpu"),
            vocab,
            k,
            emb.host_slice().expect("cpu"),
            d,
        );
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
        let mut a = KernelArgs::new();
        a.buf(cum)
            .push(vocab as u64)
            .push(k as i32)
            .buf(emb)
            .push(d as i32)
            .buf_mut(&mut out)
            .buf_mut(&mut ids)
            .buf_mut(&mut weights);
        dev.launch(
            MODULE,
            &format!("tah_next_input_{}", E::KIND.name()),
            &LaunchConfig::linear(m as u32, BLOCK, 0),
            &a,
        )?;
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
    if cpu(&dev) {
        let l = logits.host_slice().expect("cpu").to_vec();
        reference::accumulate_logits(cum.host_slice_mut().expect("cpu"), &l);
        return Ok(());
    }
    if n == 0 {
        return Ok(());
    }
    let mut a = KernelArgs::new();
    a.buf_mut(cum).buf(logits).push(n as u64);
    dev.launch(
        MODULE,
        "tah_accumulate_f32",
        &LaunchConfig::linear(stride_grid(n as u64), BLOCK, 0),
        &a,
    )
}
