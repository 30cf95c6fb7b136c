//! Bitmask sparsification of checkpoint deltas (BitSnap): [`sparsify`] and [`densify`].
//!
//! Kernels: `cuda/ckpt/bitmask.cu`. Reference and CPU path: [`crate::reference::bitmask`].
//! Mask layout: bit `i % 32` of word `i / 32` is set where element `i` changed; bits past the last
//! element are zero. Bytes moved: sparsify reads both tensors twice at most (mask pass, compaction
//! pass reads `new` again for words with changes) and writes n/8 mask bytes plus the values;
//! densify reads base, mask and values and writes the tensor.

use half::{bf16, f16};

use crate::device::kernel::{BitsOf, BitsOfMut, Grid};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::{DTypeKind, Float};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, same_len};
use crate::reference::bitmask as reference;

/// Threads per block; each thread owns one 32-element mask word (`kBlock` in the kernel, which
/// every kernel of the file requires).
pub(crate) const BLOCK: u32 = 256;
const ELEMS_PER_BLOCK: u64 = BLOCK as u64 * 32;

crate::kernels! {
    module = "ckpt/bitmask";
    /// The change mask of `n` elements and each block's count of changed elements.
    pub(crate) struct MaskKernel<'a, T: Float> = "bitmask_mask" [(f32), (f16), (bf16)] block = BLOCK {
        base: &'a DeviceBuffer<T>,
        new: &'a DeviceBuffer<T>,
        n: u64,
        tau: f32,
        mask: &'a mut DeviceBuffer<u32>,
        block_counts: &'a mut DeviceBuffer<u32>,
    }
    /// The changed values, packed at each block's offset.
    pub(crate) struct CompactKernel<'a, T: Float> = "bitmask_compact" [(f32), (f16), (bf16)] block = BLOCK {
        new: &'a DeviceBuffer<T>,
        mask: &'a DeviceBuffer<u32>,
        block_offsets: &'a DeviceBuffer<u64>,
        n: u64,
        values: &'a mut DeviceBuffer<T>,
    }
    /// [`CompactKernel`] on raw element bits: the f32 instance serves every 4-byte type and the
    /// f16 instance every 2-byte type (the codec's gather).
    pub(crate) struct CompactBitsKernel<'a, E: Float> = "bitmask_compact" [(f32), (f16)] block = BLOCK {
        new: BitsOf<'a, E>,
        mask: &'a DeviceBuffer<u32>,
        block_offsets: &'a DeviceBuffer<u64>,
        n: u64,
        values: BitsOfMut<'a, E>,
    }
    /// The dense tensor from base, mask and packed values.
    pub(crate) struct DensifyKernel<'a, T: Float> = "bitmask_densify" [(f32), (f16), (bf16)] block = BLOCK {
        base: &'a DeviceBuffer<T>,
        mask: &'a DeviceBuffer<u32>,
        values: &'a DeviceBuffer<T>,
        block_offsets: &'a DeviceBuffer<u64>,
        n: u64,
        out: &'a mut DeviceBuffer<T>,
    }
    /// Each block's count of set bits of an existing mask.
    pub(crate) struct PopcountKernel<'a> = "bitmask_popcount" block = BLOCK {
        mask: &'a DeviceBuffer<u32>,
        n: u64,
        block_counts: &'a mut DeviceBuffer<u32>,
    }
    /// Exclusive scan of per-block counts into `nblocks + 1` offsets (one block).
    pub(crate) struct ScanCountsKernel<'a> = "bitmask_scan_counts" block = BLOCK {
        counts: &'a DeviceBuffer<u32>,
        nblocks: u64,
        offsets: &'a mut DeviceBuffer<u64>,
    }
}

/// A sparsified delta: the change mask and the packed new values of the changed elements.
#[derive(Debug)]
pub struct Sparse<T: Float> {
    /// `ceil(len / 32)` words; bit `i % 32` of word `i / 32` marks element `i` as changed.
    pub mask: DeviceBuffer<u32>,
    /// New values of the changed elements, in element order.
    pub values: DeviceBuffer<T>,
    /// Number of elements of the dense tensor.
    pub len: usize,
}

/// Number of mask words for `n` elements.
pub fn mask_words(n: usize) -> usize {
    reference::mask_words(n)
}

pub(crate) fn blocks(op: &'static str, n: usize) -> Result<u32> {
    let nb = (n as u64).div_ceil(ELEMS_PER_BLOCK);
    u32::try_from(nb)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            Error::invalid(
                op,
                format!("{n} elements exceed the largest supported grid"),
            )
        })
}

/// Per-block counts -> 64-bit exclusive offsets (nblocks + 1 entries) on the device. Returns the
/// offsets buffer and the total.
pub(crate) fn scan_counts(
    dev: &Device,
    counts: &DeviceBuffer<u32>,
) -> Result<(DeviceBuffer<u64>, u64)> {
    let nb = counts.len();
    let mut offsets = dev.alloc::<u64>(nb + 1, "bitmask.offsets")?;
    ScanCountsKernel {
        counts,
        nblocks: nb as u64,
        offsets: &mut offsets,
    }
    .launch(dev, Grid::linear(1))?;
    let total = offsets.download_range(nb, 1)?[0];
    Ok((offsets, total))
}

/// Compare `new` with `base` and return the change mask and the packed changed values.
///
/// With `tau == 0`, an element changed when its bit pattern differs (so NaN payloads and -0.0
/// round-trip exactly). With `tau > 0`, a change with `|new - base| <= tau` (in f32) is dropped:
/// its bit stays clear and [`densify`] restores the base value. `tau` must be finite and >= 0.
pub fn sparsify<T: Float>(
    base: &DeviceBuffer<T>,
    new: &DeviceBuffer<T>,
    tau: f32,
) -> Result<Sparse<T>> {
    const OP: &str = "bitmask::sparsify";
    let dev = base.device().clone();
    on_device(OP, "new", &dev, new)?;
    same_len(OP, base.len(), new.len())?;
    if !(tau.is_finite() && tau >= 0.0) {
        return Err(Error::invalid(
            OP,
            format!("tau must be finite and >= 0, got {tau}"),
        ));
    }
    let n = base.len();
    let nb = blocks(OP, n)?;

    if let Some(h) = cpu_path(OP, &dev) {
        let (b, x) = (h.slice(base)?, h.slice(new)?);
        let (mask, values) = reference::sparsify(b, x, tau);
        return Ok(Sparse {
            mask: dev.upload(&mask, "bitmask.mask")?,
            values: dev.upload(&values, "bitmask.values")?,
            len: n,
        });
    }

    let mut mask = dev.alloc::<u32>(mask_words(n), "bitmask.mask")?;
    if n == 0 {
        return Ok(Sparse {
            mask,
            values: dev.alloc::<T>(0, "bitmask.values")?,
            len: 0,
        });
    }
    let mut counts = dev.alloc::<u32>(nb as usize, "bitmask.block_counts")?;
    MaskKernel {
        base,
        new,
        n: n as u64,
        tau,
        mask: &mut mask,
        block_counts: &mut counts,
    }
    .launch(&dev, Grid::linear(nb))?;

    let (offsets, total) = scan_counts(&dev, &counts)?;
    let total = usize::try_from(total)
        .ok()
        .filter(|&t| t <= n)
        .ok_or_else(|| {
            Error::kernel(
                dev.backend().family(),
                "bitmask_scan_counts",
                format!("total {total} > n {n}"),
            )
        })?;
    let mut values = dev.alloc::<T>(total, "bitmask.values")?;
    if total > 0 {
        CompactKernel {
            new,
            mask: &mask,
            block_offsets: &offsets,
            n: n as u64,
            values: &mut values,
        }
        .launch(&dev, Grid::linear(nb))?;
    }
    Ok(Sparse {
        mask,
        values,
        len: n,
    })
}

/// Rebuild the dense tensor from `base` and a [`Sparse`] delta.
pub fn densify<T: Float>(base: &DeviceBuffer<T>, sparse: &Sparse<T>) -> Result<DeviceBuffer<T>> {
    if sparse.len != base.len() {
        return Err(Error::invalid(
            "bitmask::densify",
            format!(
                "the delta is for {} elements, base has {}",
                sparse.len,
                base.len()
            ),
        ));
    }
    densify_parts(base, &sparse.mask, &sparse.values)
}

/// Check that `mask` is a valid change mask for `n` elements: `ceil(n / 32)` words and no bit set
/// past element `n` (reads the last word).
pub(crate) fn check_mask(op: &'static str, mask: &DeviceBuffer<u32>, n: usize) -> Result<()> {
    let words = mask_words(n);
    if mask.len() != words {
        return Err(Error::invalid(
            op,
            format!("mask has {} words, {n} elements need {words}", mask.len()),
        ));
    }
    if n % 32 != 0 {
        let last = mask.download_range(words - 1, 1)?[0];
        if last >> (n % 32) != 0 {
            return Err(Error::invalid(
                op,
                format!("mask has bits set past element {n}"),
            ));
        }
    }
    Ok(())
}

/// Rebuild the dense tensor from `base`, a mask of `ceil(base.len() / 32)` words and the packed
/// values. Errors when the mask has the wrong length, has bits set past the last element, or
/// marks a different number of elements than `values` holds.
pub fn densify_parts<T: Float>(
    base: &DeviceBuffer<T>,
    mask: &DeviceBuffer<u32>,
    values: &DeviceBuffer<T>,
) -> Result<DeviceBuffer<T>> {
    const OP: &str = "bitmask::densify";
    let dev = base.device().clone();
    on_device(OP, "mask", &dev, mask)?;
    on_device(OP, "values", &dev, values)?;
    let n = base.len();
    check_mask(OP, mask, n)?;
    let nb = blocks(OP, n)?;

    if let Some(h) = cpu_path(OP, &dev) {
        let (b, m, v) = (h.slice(base)?, h.slice(mask)?, h.slice(values)?);
        let set = reference::count(m, n);
        if set != v.len() as u64 {
            return Err(Error::invalid(
                OP,
                format!("mask marks {set} elements, values has {}", v.len()),
            ));
        }
        return dev.upload(&reference::densify(b, m, v), "bitmask.out");
    }

    let mut out = dev.alloc::<T>(n, "bitmask.out")?;
    if n == 0 {
        if !values.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("mask marks 0 elements, values has {}", values.len()),
            ));
        }
        return Ok(out);
    }
    let mut counts = dev.alloc::<u32>(nb as usize, "bitmask.block_counts")?;
    PopcountKernel {
        mask,
        n: n as u64,
        block_counts: &mut counts,
    }
    .launch(&dev, Grid::linear(nb))?;
    let (offsets, total) = scan_counts(&dev, &counts)?;
    if total != values.len() as u64 {
        return Err(Error::invalid(
            OP,
            format!("mask marks {total} elements, values has {}", values.len()),
        ));
    }
    DensifyKernel {
        base,
        mask,
        values,
        block_offsets: &offsets,
        n: n as u64,
        out: &mut out,
    }
    .launch(&dev, Grid::linear(nb))?;
    Ok(out)
}

/// A buffer of one of the float dtypes the checkpoint ops accept, chosen at run time (e.g. from
/// a safetensors header).
#[derive(Debug)]
pub enum AnyBuffer {
    F32(DeviceBuffer<f32>),
    F16(DeviceBuffer<half::f16>),
    BF16(DeviceBuffer<half::bf16>),
}

/// A [`Sparse`] delta of a run-time dtype.
#[derive(Debug)]
pub enum AnySparse {
    F32(Sparse<f32>),
    F16(Sparse<half::f16>),
    BF16(Sparse<half::bf16>),
}

impl AnyBuffer {
    pub fn dtype(&self) -> DTypeKind {
        match self {
            AnyBuffer::F32(_) => DTypeKind::F32,
            AnyBuffer::F16(_) => DTypeKind::F16,
            AnyBuffer::BF16(_) => DTypeKind::BF16,
        }
    }
}

/// [`sparsify`] for buffers whose dtype is known only at run time; the dtypes must match.
pub fn sparsify_any(base: &AnyBuffer, new: &AnyBuffer, tau: f32) -> Result<AnySparse> {
    match (base, new) {
        (AnyBuffer::F32(b), AnyBuffer::F32(x)) => sparsify(b, x, tau).map(AnySparse::F32),
        (AnyBuffer::F16(b), AnyBuffer::F16(x)) => sparsify(b, x, tau).map(AnySparse::F16),
        (AnyBuffer::BF16(b), AnyBuffer::BF16(x)) => sparsify(b, x, tau).map(AnySparse::BF16),
        _ => Err(Error::invalid(
            "bitmask::sparsify",
            format!("base is {} but new is {}", base.dtype(), new.dtype()),
        )),
    }
}

/// [`densify`] for a run-time dtype; the delta's dtype must match the base's.
pub fn densify_any(base: &AnyBuffer, sparse: &AnySparse) -> Result<AnyBuffer> {
    match (base, sparse) {
        (AnyBuffer::F32(b), AnySparse::F32(s)) => densify(b, s).map(AnyBuffer::F32),
        (AnyBuffer::F16(b), AnySparse::F16(s)) => densify(b, s).map(AnyBuffer::F16),
        (AnyBuffer::BF16(b), AnySparse::BF16(s)) => densify(b, s).map(AnyBuffer::BF16),
        (b, s) => {
            let sd = match s {
                AnySparse::F32(_) => DTypeKind::F32,
                AnySparse::F16(_) => DTypeKind::F16,
                AnySparse::BF16(_) => DTypeKind::BF16,
            };
            Err(Error::invalid(
                "bitmask::densify",
                format!("base is {} but the delta is {sd}", b.dtype()),
            ))
        }
    }
}
