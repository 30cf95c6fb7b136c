//! Checkpoint codec ops (BitSnap): gather of changed values, the lossless zigzag-delta value
//! codec, per-block bit packing, 1-D k-means and dequantisation.
//!
//! Kernels: `cuda/ckpt/codec.cu` (gather reuses `cuda/ckpt/bitmask.cu`). Reference and CPU path:
//! [`crate::reference::codec`]. Every op's output is bit-identical on every executor, k-means
//! included (its sums are exact fixed-point integers, see [`crate::reference::codec`]).
//!
//! # Packed layout (what a file stores)
//! `count` unsigned values in blocks of [`PACK_BLOCK`]; `widths[j]` (0..=32) is block `j`'s bit
//! width; block `j` starts at 32-bit word `8 * sum(widths[..j])`; value `k` of a block occupies
//! bits `k*w .. (k+1)*w` of the block's stream, LSB first (bit `b` of the stream is bit `b % 32`
//! of word `b / 32`); a value may straddle two words. The last block takes
//! `ceil(cnt_last * w_last / 32)` words, so `words.len() == 8 * sum(widths[..nb-1]) +
//! ceil(cnt_last * w_last / 32)` ([`crate::reference::codec::packed_words`]); unused high bits
//! of the last word are zero. Words are little-endian u32 when written as bytes.
//!
//! # Delta values
//! `zz = zigzag((ord(new) - ord(base)) mod 2^W)`, `W` = 16 for f16/bf16 and 32 for f32,
//! `ord(b) = b | signbit` for a positive pattern and `!b` for a negative one, zigzag on the
//! wrapped W-bit signed difference: `(d << 1) ^ (d >> (W-1))`. So widths are <= W, a change of
//! one ulp gives 1 or 2, -0.0 -> +0.0 is a step of one, and NaN payloads round-trip exactly.

use half::{bf16, f16};

use crate::device::kernel::{BitsOf, BitsOfMut, Grid};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
use crate::ops::bitmask as bm;
use crate::ops::{cpu_path, on_device, same_len};
use crate::reference::bitmask as bm_ref;
use crate::reference::codec as reference;

/// Threads per block of every codec kernel (`kBlock` in the kernel file).
const BLOCK: u32 = 256;

crate::kernels! {
    module = "ckpt/codec";
    /// Per pack block: the bit width of its zigzag deltas; `stats[0]` = the largest.
    pub(crate) struct WidthsDeltaKernel<'a, T: Float> = "codec_widths_delta" [(f32), (f16), (bf16)] block = BLOCK {
        base: &'a DeviceBuffer<T>,
        new: &'a DeviceBuffer<T>,
        n: u64,
        widths: &'a mut DeviceBuffer<u8>,
        stats: &'a mut DeviceBuffer<u32>,
    }
    /// Pack the zigzag deltas at each block's width and word offset.
    pub(crate) struct PackDeltaKernel<'a, T: Float> = "codec_pack_delta" [(f32), (f16), (bf16)] block = BLOCK {
        base: &'a DeviceBuffer<T>,
        new: &'a DeviceBuffer<T>,
        n: u64,
        widths: &'a DeviceBuffer<u8>,
        offsets: &'a DeviceBuffer<u64>,
        words: &'a mut DeviceBuffer<u32>,
    }
    /// Inverse of the two above: `out = base + unzigzag(delta)`.
    pub(crate) struct UnpackDeltaKernel<'a, T: Float> = "codec_unpack_delta" [(f32), (f16), (bf16)] block = BLOCK {
        base: &'a DeviceBuffer<T>,
        words: &'a DeviceBuffer<u32>,
        widths: &'a DeviceBuffer<u8>,
        offsets: &'a DeviceBuffer<u64>,
        n: u64,
        out: &'a mut DeviceBuffer<T>,
    }
    /// `out = round_T(base + centroids[idx])` (`has_base` 0: no base).
    pub(crate) struct DequantizeKernel<'a, T: Float> = "codec_dequantize" [(f32), (f16), (bf16)] block = BLOCK {
        words: &'a DeviceBuffer<u32>,
        widths: &'a DeviceBuffer<u8>,
        offsets: &'a DeviceBuffer<u64>,
        n: u64,
        centroids: &'a DeviceBuffer<f32>,
        k: u32,
        base: Option<&'a DeviceBuffer<T>>,
        has_base: u32,
        out: &'a mut DeviceBuffer<T>,
    }
    /// `out = new - base` in f32.
    pub(crate) struct DeltaF32Kernel<'a, T: Float> = "codec_delta_f32" [(f32), (f16), (bf16)] block = BLOCK {
        base: &'a DeviceBuffer<T>,
        new: &'a DeviceBuffer<T>,
        n: u64,
        out: &'a mut DeviceBuffer<f32>,
    }
    /// Widen to f32.
    pub(crate) struct ToF32Kernel<'a, T: Float> = "codec_to_f32" [(f32), (f16), (bf16)] block = BLOCK {
        x: &'a DeviceBuffer<T>,
        n: u64,
        out: &'a mut DeviceBuffer<f32>,
    }
    /// Per pack block: the bit width of its indices (or `fixed` when nonzero); `stats[0]` = the
    /// largest index width.
    pub(crate) struct WidthsIdxKernel<'a> = "codec_widths_idx" block = BLOCK {
        idx: &'a DeviceBuffer<u8>,
        n: u64,
        fixed: u32,
        widths: &'a mut DeviceBuffer<u8>,
        stats: &'a mut DeviceBuffer<u32>,
    }
    /// Pack indices at each block's width and word offset.
    pub(crate) struct PackIdxKernel<'a> = "codec_pack_idx" block = BLOCK {
        idx: &'a DeviceBuffer<u8>,
        n: u64,
        widths: &'a DeviceBuffer<u8>,
        offsets: &'a DeviceBuffer<u64>,
        words: &'a mut DeviceBuffer<u32>,
    }
    /// Widths -> word offsets (`nb + 1`) and the largest width (one block).
    pub(crate) struct ScanWidthsKernel<'a> = "codec_scan_widths" block = BLOCK {
        widths: &'a DeviceBuffer<u8>,
        nb: u64,
        count: u64,
        offsets: &'a mut DeviceBuffer<u64>,
        max_width: &'a mut DeviceBuffer<u32>,
    }
    /// Per block: min, max and the count of non-finite values.
    pub(crate) struct MinMaxKernel<'a> = "codec_minmax" block = BLOCK {
        x: &'a DeviceBuffer<f32>,
        n: u64,
        bmin: &'a mut DeviceBuffer<f32>,
        bmax: &'a mut DeviceBuffer<f32>,
        bnonfinite: &'a mut DeviceBuffer<u32>,
    }
    /// The evenly strided k-means sample: `out[i] = x[i * n / s]`.
    pub(crate) struct KmeansSampleKernel<'a> = "codec_kmeans_sample" block = BLOCK {
        x: &'a DeviceBuffer<f32>,
        n: u64,
        s: u64,
        out: &'a mut DeviceBuffer<f32>,
    }
    /// Assign each value to its centroid; with `accumulate`, per-block fixed-point sums.
    pub(crate) struct KmeansAssignKernel<'a> = "codec_kmeans_assign" block = BLOCK {
        x: &'a DeviceBuffer<f32>,
        n: u64,
        mids: &'a DeviceBuffer<f32>,
        k: u32,
        scale_exp: i32,
        accumulate: u32,
        idx: &'a mut DeviceBuffer<u8>,
        psums: &'a mut DeviceBuffer<u64>,
        pcounts: &'a mut DeviceBuffer<u32>,
    }
    /// Reduce the per-block sums and counts (one block).
    pub(crate) struct KmeansReduceKernel<'a> = "codec_kmeans_reduce" block = BLOCK {
        psums: &'a DeviceBuffer<u64>,
        pcounts: &'a DeviceBuffer<u32>,
        nblocks: u64,
        k: u32,
        sums: &'a mut DeviceBuffer<u64>,
        counts: &'a mut DeviceBuffer<u64>,
    }
}

/// Values per width block of [`Packed`].
pub const PACK_BLOCK: usize = 256;

/// Unsigned integers packed LSB-first at a bit width chosen per block of [`PACK_BLOCK`] values.
/// Block `j` has width `widths[j]` (0..=32) and starts at 32-bit word `8 * sum(widths[..j])`
/// (a full block of width w takes exactly 8w words), so every block decodes independently.
#[derive(Debug)]
pub struct Packed {
    pub words: DeviceBuffer<u32>,
    pub widths: DeviceBuffer<u8>,
    /// Number of packed values.
    pub count: usize,
}

/// 1-D k-means result: `2^bits` centroids sorted ascending and one index per value.
#[derive(Debug)]
pub struct KMeans {
    pub centroids: Vec<f32>,
    pub indices: DeviceBuffer<u8>,
    pub iterations: u32,
}

/// Number of `u32` words a packed stream of `count` values with these widths takes.
pub fn packed_words(widths: &[u8], count: usize) -> usize {
    reference::packed_words(widths, count) as usize
}

/// Number of width blocks (entries of [`Packed::widths`]) for `count` values.
pub fn pack_blocks(count: usize) -> usize {
    reference::pack_blocks(count)
}

fn grid(op: &'static str, items: usize, per_block: usize) -> Result<u32> {
    let nb = items.div_ceil(per_block);
    u32::try_from(nb)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            Error::invalid(
                op,
                format!("{items} elements exceed the largest supported grid"),
            )
        })
}

/// Validate a packed stream (device, widths length, each width <= `max_width`, words length) and,
/// on a kernel executor, compute its block word offsets on the device. Returns the offsets
/// (None on the CPU path) and the largest width.
fn packed_layout(
    op: &'static str,
    dev: &Device,
    p: &Packed,
    max_width: u32,
) -> Result<(Option<DeviceBuffer<u64>>, u32)> {
    on_device(op, "packed.words", dev, &p.words)?;
    on_device(op, "packed.widths", dev, &p.widths)?;
    let nb = pack_blocks(p.count);
    if p.widths.len() != nb {
        return Err(Error::invalid(
            op,
            format!(
                "packed.widths has {} entries, {} values need {nb}",
                p.widths.len(),
                p.count
            ),
        ));
    }
    let (offsets, total, wmax) = if let Some(h) = cpu_path(op, dev) {
        let w = h.slice(&p.widths)?;
        let wmax = w.iter().copied().max().unwrap_or(0) as u32;
        let total = if wmax <= 32 {
            reference::packed_words(w, p.count)
        } else {
            0
        };
        (None, total, wmax)
    } else {
        let mut offsets = dev.alloc::<u64>(nb + 1, "codec.offsets")?;
        let mut maxw = dev.upload(&[0u32], "codec.max_width")?;
        ScanWidthsKernel {
            widths: &p.widths,
            nb: nb as u64,
            count: p.count as u64,
            offsets: &mut offsets,
            max_width: &mut maxw,
        }
        .launch(dev, Grid::linear(1))?;
        let wmax = maxw.download()?[0];
        // The total is only meaningful when every width is valid.
        let total = if wmax <= 32 {
            offsets.download_range(nb, 1)?[0]
        } else {
            0
        };
        (Some(offsets), total, wmax)
    };
    if wmax > max_width {
        return Err(Error::invalid(
            op,
            format!("packed.widths has a width of {wmax} bits, at most {max_width} allowed here"),
        ));
    }
    if p.words.len() as u64 != total {
        return Err(Error::invalid(
            op,
            format!(
                "packed.words has {} words, the widths need {total}",
                p.words.len()
            ),
        ));
    }
    Ok((offsets, wmax))
}

/// The elements of `src` whose mask bit is set, in order (`count` = number of set bits).
///
/// `T` is any 2- or 4-byte element (the bits are copied). The mask has `ceil(src.len() / 32)`
/// words in the bitmask layout, no bits set past the last element, and exactly `count` set bits.
pub fn gather<T: DType>(
    src: &DeviceBuffer<T>,
    mask: &DeviceBuffer<u32>,
    count: usize,
) -> Result<DeviceBuffer<T>> {
    const OP: &str = "codec::gather";
    let dev = src.device().clone();
    on_device(OP, "mask", &dev, mask)?;
    let size = std::mem::size_of::<T>();
    if size != 2 && size != 4 {
        return Err(Error::invalid(
            OP,
            format!("elements must be 2 or 4 bytes, {} is {size}", T::KIND),
        ));
    }
    let n = src.len();
    bm::check_mask(OP, mask, n)?;
    let mismatch =
        |set: u64| Error::invalid(OP, format!("mask marks {set} elements, count is {count}"));
    if let Some(h) = cpu_path(OP, &dev) {
        let set = bm_ref::count(h.slice(mask)?, n);
        if set != count as u64 {
            return Err(mismatch(set));
        }
        return dev.upload(
            &reference::gather(h.slice(src)?, h.slice(mask)?),
            "codec.gathered",
        );
    }
    if n == 0 {
        if count != 0 {
            return Err(mismatch(0));
        }
        return dev.alloc::<T>(0, "codec.gathered");
    }
    let nb = bm::blocks(OP, n)?;
    let mut counts = dev.alloc::<u32>(nb as usize, "codec.block_counts")?;
    bm::PopcountKernel {
        mask,
        n: n as u64,
        block_counts: &mut counts,
    }
    .launch(&dev, Grid::linear(nb))?;
    let (offsets, total) = bm::scan_counts(&dev, &counts)?;
    if total != count as u64 {
        return Err(mismatch(total));
    }
    let mut out = dev.alloc::<T>(count, "codec.gathered")?;
    if count > 0 {
        // The compaction kernel copies bit patterns: its f32 instance serves every 4-byte type
        // and its f16 instance every 2-byte type (the size was checked above).
        fn compact<E: Float, T: DType>(
            dev: &Device,
            src: &DeviceBuffer<T>,
            mask: &DeviceBuffer<u32>,
            block_offsets: &DeviceBuffer<u64>,
            out: &mut DeviceBuffer<T>,
            nb: u32,
        ) -> Result<()> {
            let sized = || Error::invalid("codec::gather", "element size changed");
            bm::CompactBitsKernel::<E> {
                new: BitsOf::of(src).ok_or_else(sized)?,
                mask,
                block_offsets,
                n: src.len() as u64,
                values: BitsOfMut::of(out).ok_or_else(sized)?,
            }
            .launch(dev, Grid::linear(nb))
        }
        if size == 4 {
            compact::<f32, T>(&dev, src, mask, &offsets, &mut out, nb)?;
        } else {
            compact::<f16, T>(&dev, src, mask, &offsets, &mut out, nb)?;
        }
    }
    Ok(out)
}

/// Lossless encoding of `new_vals` against `base_vals` (same length): each value becomes
/// zigzag(ord(new) - ord(base)), where ord maps a float's bit pattern to an integer that is
/// monotonic in the float's value, packed at a per-block width.
pub fn delta_encode<T: Float>(
    base_vals: &DeviceBuffer<T>,
    new_vals: &DeviceBuffer<T>,
) -> Result<Packed> {
    const OP: &str = "codec::delta_encode";
    let dev = base_vals.device().clone();
    on_device(OP, "new_vals", &dev, new_vals)?;
    same_len(OP, base_vals.len(), new_vals.len())?;
    let n = base_vals.len();
    let nb = grid(OP, n, PACK_BLOCK)?;
    if let Some(h) = cpu_path(OP, &dev) {
        let (words, widths) = reference::delta_encode(h.slice(base_vals)?, h.slice(new_vals)?);
        return Ok(Packed {
            words: dev.upload(&words, "codec.words")?,
            widths: dev.upload(&widths, "codec.widths")?,
            count: n,
        });
    }
    let mut widths = dev.alloc::<u8>(nb as usize, "codec.widths")?;
    if n == 0 {
        return Ok(Packed {
            words: dev.alloc(0, "codec.words")?,
            widths,
            count: 0,
        });
    }
    let mut stats = dev.upload(&[0u32], "codec.stats")?;
    WidthsDeltaKernel {
        base: base_vals,
        new: new_vals,
        n: n as u64,
        widths: &mut widths,
        stats: &mut stats,
    }
    .launch(&dev, Grid::linear(nb))?;
    let (words, offsets) = alloc_words(OP, &dev, &widths, n)?;
    let mut words = words;
    if !words.is_empty() {
        PackDeltaKernel {
            base: base_vals,
            new: new_vals,
            n: n as u64,
            widths: &widths,
            offsets: &offsets,
            words: &mut words,
        }
        .launch(&dev, Grid::linear(nb))?;
    }
    Ok(Packed {
        words,
        widths,
        count: n,
    })
}

/// Scan freshly computed widths into offsets and allocate the words.
fn alloc_words(
    op: &'static str,
    dev: &Device,
    widths: &DeviceBuffer<u8>,
    n: usize,
) -> Result<(DeviceBuffer<u32>, DeviceBuffer<u64>)> {
    let nb = widths.len();
    let mut offsets = dev.alloc::<u64>(nb + 1, "codec.offsets")?;
    let mut maxw = dev.upload(&[0u32], "codec.max_width")?;
    ScanWidthsKernel {
        widths,
        nb: nb as u64,
        count: n as u64,
        offsets: &mut offsets,
        max_width: &mut maxw,
    }
    .launch(dev, Grid::linear(1))?;
    let total = offsets.download_range(nb, 1)?[0];
    let total = usize::try_from(total)
        .ok()
        .filter(|&t| t as u64 <= 8 * 32 * nb as u64)
        .ok_or_else(|| {
            Error::kernel(
                dev.backend().family(),
                "codec_scan_widths",
                format!("{op}: total {total} words is impossible"),
            )
        })?;
    Ok((dev.alloc::<u32>(total, "codec.words")?, offsets))
}

/// Inverse of [`delta_encode`]: bit-exact on every executor.
pub fn delta_decode<T: Float>(
    base_vals: &DeviceBuffer<T>,
    packed: &Packed,
) -> Result<DeviceBuffer<T>> {
    const OP: &str = "codec::delta_decode";
    let dev = base_vals.device().clone();
    if packed.count != base_vals.len() {
        return Err(Error::invalid(
            OP,
            format!(
                "packed holds {} values, base has {}",
                packed.count,
                base_vals.len()
            ),
        ));
    }
    let width = 8 * std::mem::size_of::<T>() as u32;
    let (offsets, _) = packed_layout(OP, &dev, packed, width)?;
    let n = packed.count;
    let nb = grid(OP, n, BLOCK as usize)?;
    let Some(offsets) = offsets else {
        let h =
            cpu_path(OP, &dev).ok_or_else(|| Error::invalid(OP, "no offsets on a kernel path"))?;
        let out = reference::delta_decode(
            h.slice(base_vals)?,
            h.slice(&packed.words)?,
            h.slice(&packed.widths)?,
        );
        return dev.upload(&out, "codec.decoded");
    };
    let mut out = dev.alloc::<T>(n, "codec.decoded")?;
    if n > 0 {
        UnpackDeltaKernel {
            base: base_vals,
            words: &packed.words,
            widths: &packed.widths,
            offsets: &offsets,
            n: n as u64,
            out: &mut out,
        }
        .launch(&dev, Grid::linear(nb))?;
    }
    Ok(out)
}

/// `new - base` in f32 for each pair (the deltas that delta quantisation clusters).
pub fn delta_f32<T: Float>(
    base_vals: &DeviceBuffer<T>,
    new_vals: &DeviceBuffer<T>,
) -> Result<DeviceBuffer<f32>> {
    const OP: &str = "codec::delta_f32";
    let dev = base_vals.device().clone();
    on_device(OP, "new_vals", &dev, new_vals)?;
    same_len(OP, base_vals.len(), new_vals.len())?;
    let n = base_vals.len();
    let nb = grid(OP, n, BLOCK as usize)?;
    if let Some(h) = cpu_path(OP, &dev) {
        return dev.upload(
            &reference::delta_f32(h.slice(base_vals)?, h.slice(new_vals)?),
            "codec.delta",
        );
    }
    let mut out = dev.alloc::<f32>(n, "codec.delta")?;
    if n > 0 {
        DeltaF32Kernel {
            base: base_vals,
            new: new_vals,
            n: n as u64,
            out: &mut out,
        }
        .launch(&dev, Grid::linear(nb))?;
    }
    Ok(out)
}

/// Widen to f32 (the values that weight quantisation clusters).
pub fn to_f32<T: Float>(values: &DeviceBuffer<T>) -> Result<DeviceBuffer<f32>> {
    const OP: &str = "codec::to_f32";
    let dev = values.device().clone();
    let n = values.len();
    let nb = grid(OP, n, BLOCK as usize)?;
    if let Some(h) = cpu_path(OP, &dev) {
        return dev.upload(&reference::to_f32(h.slice(values)?), "codec.f32");
    }
    let mut out = dev.alloc::<f32>(n, "codec.f32")?;
    if n > 0 {
        ToF32Kernel {
            x: values,
            n: n as u64,
            out: &mut out,
        }
        .launch(&dev, Grid::linear(nb))?;
    }
    Ok(out)
}

/// Largest value count k-means accepts (its per-block counts and sample indices stay exact).
const KMEANS_MAX_N: usize = 1 << 40;
/// Blocks of the grid-stride k-means kernels.
const KMEANS_GRID: usize = 512;

/// 1-D k-means with `2^bits` centroids, `bits` in {2, 3, 4, 8}; deterministic quantile
/// initialisation; stops after `max_iters` or when no centroid moves more than `tol` (relative
/// to the value range).
///
/// Details: the values must be finite. Initial centroids are the `(2c+1)/2k` quantiles of an
/// evenly strided sample of up to 65536 values. A value goes to the number of centroid midpoints
/// strictly below it (a value exactly on a midpoint goes to the lower centroid; equal centroids
/// only ever get values at the lowest index). Sums are exact (fixed point), empty clusters keep
/// their centroid, and centroids are re-sorted after each update. `iterations` counts updates;
/// the indices are those of the returned centroids. The result is identical on every executor.
pub fn kmeans(values: &DeviceBuffer<f32>, bits: u32, max_iters: u32, tol: f32) -> Result<KMeans> {
    const OP: &str = "codec::kmeans";
    if ![2, 3, 4, 8].contains(&bits) {
        return Err(Error::invalid(
            OP,
            format!("bits must be 2, 3, 4 or 8, got {bits}"),
        ));
    }
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(Error::invalid(
            OP,
            format!("tol must be finite and >= 0, got {tol}"),
        ));
    }
    let dev = values.device().clone();
    let n = values.len();
    let k = 1usize << bits;
    if n > KMEANS_MAX_N {
        return Err(Error::invalid(
            OP,
            format!("{n} values exceed the supported {KMEANS_MAX_N}"),
        ));
    }
    let nonfinite = |bad: u64| {
        Error::invalid(
            OP,
            format!("values must be finite, {bad} are NaN or infinite"),
        )
    };
    if let Some(h) = cpu_path(OP, &dev) {
        let v = h.slice(values)?;
        let (_, _, bad) = reference::min_max(v);
        if bad > 0 {
            return Err(nonfinite(bad as u64));
        }
        let (centroids, idx, iterations) = reference::kmeans(v, k, max_iters, tol);
        return Ok(KMeans {
            centroids,
            indices: dev.upload(&idx, "codec.indices")?,
            iterations,
        });
    }
    let mut indices = dev.alloc::<u8>(n, "codec.indices")?;
    if n == 0 {
        return Ok(KMeans {
            centroids: vec![0.0; k],
            indices,
            iterations: 0,
        });
    }
    let g = n.div_ceil(BLOCK as usize * 8).clamp(1, KMEANS_GRID);

    // Range and finiteness.
    let mut bmin = dev.alloc::<f32>(g, "codec.bmin")?;
    let mut bmax = dev.alloc::<f32>(g, "codec.bmax")?;
    let mut bbad = dev.alloc::<u32>(g, "codec.bnonfinite")?;
    MinMaxKernel {
        x: values,
        n: n as u64,
        bmin: &mut bmin,
        bmax: &mut bmax,
        bnonfinite: &mut bbad,
    }
    .launch(&dev, Grid::linear(g as u32))?;
    let bad: u64 = bbad.download()?.iter().map(|&b| b as u64).sum();
    if bad > 0 {
        return Err(nonfinite(bad));
    }
    let lo = bmin.download()?.into_iter().fold(f32::INFINITY, f32::min);
    let hi = bmax
        .download()?
        .into_iter()
        .fold(f32::NEG_INFINITY, f32::max);
    let e = reference::fixed_scale_exp(lo.abs().max(hi.abs()), n);
    let thr = reference::movement_threshold(tol, lo, hi);

    // Initialisation from the strided sample, sorted on the host.
    let s = reference::sample_len(n);
    let mut sample = dev.alloc::<f32>(s, "codec.sample")?;
    KmeansSampleKernel {
        x: values,
        n: n as u64,
        s: s as u64,
        out: &mut sample,
    }
    .launch(&dev, Grid::linear(grid(OP, s, BLOCK as usize)?))?;
    let mut c = reference::init_centroids(sample.download()?, k);

    let mut psums = dev.alloc::<u64>(g * k, "codec.psums")?;
    let mut pcounts = dev.alloc::<u32>(g * k, "codec.pcounts")?;
    let mut sums = dev.alloc::<u64>(k, "codec.sums")?;
    let mut counts = dev.alloc::<u64>(k, "codec.counts")?;
    type Sums = Option<(Vec<i64>, Vec<u64>)>;
    let mut assign =
        |c: &[f32], accumulate: bool, indices: &mut DeviceBuffer<u8>| -> Result<Sums> {
            let mids = dev.upload(&reference::midpoints(c), "codec.mids")?;
            KmeansAssignKernel {
                x: values,
                n: n as u64,
                mids: &mids,
                k: k as u32,
                scale_exp: e,
                accumulate: accumulate as u32,
                idx: indices,
                psums: &mut psums,
                pcounts: &mut pcounts,
            }
            .launch(&dev, Grid::linear(g as u32))?;
            if accumulate {
                KmeansReduceKernel {
                    psums: &psums,
                    pcounts: &pcounts,
                    nblocks: g as u64,
                    k: k as u32,
                    sums: &mut sums,
                    counts: &mut counts,
                }
                .launch(&dev, Grid::linear(1))?;
                let s = sums.download()?.into_iter().map(|v| v as i64).collect();
                return Ok(Some((s, counts.download()?)));
            }
            Ok(None)
        };
    let mut iterations = 0;
    while iterations < max_iters {
        let (s, m) = assign(&c, true, &mut indices)?.expect("accumulated");
        let (nc, moved) = reference::update_centroids(&c, &s, &m, e);
        c = nc;
        iterations += 1;
        if moved <= thr {
            break;
        }
    }
    assign(&c, false, &mut indices)?;
    Ok(KMeans {
        centroids: c,
        indices,
        iterations,
    })
}

/// Pack `indices` (each < 2^bits) at a fixed width `bits` (every block has width `bits`).
/// `bits` is 1..=8; an index that does not fit is an error.
pub fn pack_indices(indices: &DeviceBuffer<u8>, bits: u32) -> Result<Packed> {
    const OP: &str = "codec::pack_indices";
    if !(1..=8).contains(&bits) {
        return Err(Error::invalid(
            OP,
            format!("bits must be 1..=8, got {bits}"),
        ));
    }
    let dev = indices.device().clone();
    let n = indices.len();
    let nb = grid(OP, n, PACK_BLOCK)?;
    let too_wide = |w: u32| {
        Error::invalid(
            OP,
            format!("an index needs {w} bits, more than bits = {bits}"),
        )
    };
    if let Some(h) = cpu_path(OP, &dev) {
        let idx = h.slice(indices)?;
        let w = reference::bit_width(idx.iter().copied().max().unwrap_or(0) as u32);
        if w > bits {
            return Err(too_wide(w));
        }
        let (words, widths) = reference::pack_indices(idx, bits);
        return Ok(Packed {
            words: dev.upload(&words, "codec.words")?,
            widths: dev.upload(&widths, "codec.widths")?,
            count: n,
        });
    }
    let mut widths = dev.alloc::<u8>(nb as usize, "codec.widths")?;
    if n == 0 {
        return Ok(Packed {
            words: dev.alloc(0, "codec.words")?,
            widths,
            count: 0,
        });
    }
    let mut stats = dev.upload(&[0u32], "codec.stats")?;
    WidthsIdxKernel {
        idx: indices,
        n: n as u64,
        fixed: bits,
        widths: &mut widths,
        stats: &mut stats,
    }
    .launch(&dev, Grid::linear(nb))?;
    let w = stats.download()?[0];
    if w > bits {
        return Err(too_wide(w));
    }
    let (mut words, offsets) = alloc_words(OP, &dev, &widths, n)?;
    PackIdxKernel {
        idx: indices,
        n: n as u64,
        widths: &widths,
        offsets: &offsets,
        words: &mut words,
    }
    .launch(&dev, Grid::linear(nb))?;
    Ok(Packed {
        words,
        widths,
        count: n,
    })
}

/// Decode packed indices through `centroids`: `out[i] = round_T(base[i] + c[idx[i]])` with a
/// base, `round_T(c[idx[i]])` without (f32 add, then round-to-nearest-even to T). Bit-exact on
/// every executor.
///
/// `centroids` has 1..=256 entries and every block width `w` of `indices` has `2^w <=
/// centroids.len()`, so every index is in range.
pub fn dequantize<T: Float>(
    indices: &Packed,
    centroids: &[f32],
    base_vals: Option<&DeviceBuffer<T>>,
) -> Result<DeviceBuffer<T>> {
    const OP: &str = "codec::dequantize";
    let dev = indices.words.device().clone();
    let k = centroids.len();
    if k == 0 || k > 256 {
        return Err(Error::invalid(
            OP,
            format!("centroids must have 1..=256 entries, got {k}"),
        ));
    }
    if let Some(b) = base_vals {
        on_device(OP, "base_vals", &dev, b)?;
        if b.len() != indices.count {
            return Err(Error::invalid(
                OP,
                format!(
                    "indices hold {} values, base has {}",
                    indices.count,
                    b.len()
                ),
            ));
        }
    }
    let max_w = usize::BITS - 1 - k.leading_zeros(); // floor(log2 k)
    let (offsets, _) = packed_layout(OP, &dev, indices, max_w).map_err(|e| match e {
        Error::InvalidArgument { op, msg } if msg.contains("width of") => Error::InvalidArgument {
            op,
            msg: format!("{msg} (indices must be < the {k} centroids)"),
        },
        e => e,
    })?;
    let n = indices.count;
    let nb = grid(OP, n, BLOCK as usize)?;
    let Some(offsets) = offsets else {
        let h =
            cpu_path(OP, &dev).ok_or_else(|| Error::invalid(OP, "no offsets on a kernel path"))?;
        let base = match base_vals {
            Some(b) => Some(h.slice(b)?),
            None => None,
        };
        let out = reference::dequantize::<T>(
            h.slice(&indices.words)?,
            h.slice(&indices.widths)?,
            n,
            centroids,
            base,
        );
        return dev.upload(&out, "codec.dequantized");
    };
    let mut out = dev.alloc::<T>(n, "codec.dequantized")?;
    if n > 0 {
        let c = dev.upload(centroids, "codec.centroids")?;
        DequantizeKernel {
            words: &indices.words,
            widths: &indices.widths,
            offsets: &offsets,
            n: n as u64,
            centroids: &c,
            k: k as u32,
            base: base_vals,
            has_base: base_vals.is_some() as u32,
            out: &mut out,
        }
        .launch(&dev, Grid::linear(nb))?;
    }
    Ok(out)
}
