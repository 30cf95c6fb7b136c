//! Bitmask sparsification of checkpoint deltas (BitSnap): [`sparsify`] and [`densify`].
//!
//! Kernels: `cuda/ckpt/bitmask.cu`. Reference and CPU path: [`crate::reference::bitmask`].
//! Mask layout: bit `i % 32` of word `i / 32` is set where element `i` changed; bits past the last
//! element are zero. Bytes moved: sparsify reads both tensors twice at most (mask pass, compaction
//! pass reads `new` again for words with changes) and writes n/8 mask bytes plus the values;
//! densify reads base, mask and values and writes the tensor.

use crate::device::{Device, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::dtype::{DTypeKind, Float};
use crate::error::{Error, Result};
use crate::ops::{on_device, same_len};
use crate::reference::bitmask as reference;

pub(crate) const MODULE: &str = "ckpt/bitmask";
/// Threads per block; each thread owns one 32-element mask word (kBlock in the kernel).
pub(crate) const BLOCK: u32 = 256;
const ELEMS_PER_BLOCK: u64 = BLOCK as u64 * 32;

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
    let mut a = KernelArgs::new();
    a.buf(counts).push(nb as u64).buf_mut(&mut offsets);
    dev.launch(
        MODULE,
        "bitmask_scan_counts",
        &LaunchConfig::linear(1, BLOCK, 0),
        &a,
    )?;
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

    if !dev.backend().runs_kernels() {
        let (b, x) = (
            base.host_slice().expect("cpu"),
            new.host_slice().expect("cpu"),
        );
        let (mask, values) = reference::sparsify(b, x, tau);
        return Ok(Sparse {
            mask: dev.upload(&mask, "bitmask.mask")?,
            values: dev.upload(&values, "bitmask.values")?,
            len: n,
        });
    }

    let sfx = T::KIND.name();
    let mut mask = dev.alloc::<u32>(mask_words(n), "bitmask.mask")?;
    if n == 0 {
        return Ok(Sparse {
            mask,
            values: dev.alloc::<T>(0, "bitmask.values")?,
            len: 0,
        });
    }
    let mut counts = dev.alloc::<u32>(nb as usize, "bitmask.block_counts")?;
    let mut a = KernelArgs::new();
    a.buf(base)
        .buf(new)
        .push(n as u64)
        .push(tau)
        .buf_mut(&mut mask)
        .buf_mut(&mut counts);
    dev.launch(
        MODULE,
        &format!("bitmask_mask_{sfx}"),
        &LaunchConfig::linear(nb, BLOCK, 0),
        &a,
    )?;

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
        let mut a = KernelArgs::new();
        a.buf(new)
            .buf(&mask)
            .buf(&offsets)
            .push(n as u64)
            .buf_mut(&mut values);
        dev.launch(
            MODULE,
            &format!("bitmask_compact_{sfx}"),
            &LaunchConfig::linear(nb, BLOCK, 0),
            &a,
        )?;
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

    if !dev.backend().runs_kernels() {
        let (b, m, v) = (
            base.host_slice().expect("cpu"),
            mask.host_slice().expect("cpu"),
            values.host_slice().expect("cpu"),
        );
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
    let mut a = KernelArgs::new();
    a.buf(mask).push(n as u64).buf_mut(&mut counts);
    dev.launch(
        MODULE,
        "bitmask_popcount",
        &LaunchConfig::linear(nb, BLOCK, 0),
        &a,
    )?;
    let (offsets, total) = scan_counts(&dev, &counts)?;
    if total != values.len() as u64 {
        return Err(Error::invalid(
            OP,
            format!("mask marks {total} elements, values has {}", values.len()),
        ));
    }
    let mut a = KernelArgs::new();
    a.buf(base)
        .buf(mask)
        .buf(values)
        .buf(&offsets)
        .push(n as u64)
        .buf_mut(&mut out);
    dev.launch(
        MODULE,
        &format!("bitmask_densify_{}", T::KIND.name()),
        &LaunchConfig::linear(nb, BLOCK, 0),
        &a,
    )?;
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
