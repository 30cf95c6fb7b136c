//! Section parsing shared by both decoders, and the kernel path's decoder.
//!
//! The checks of a tensor's section bytes against its manifest entry (mask length, count and
//! padding; packed widths and lengths; codebooks), typed views of section bytes, and
//! [`decode_typed`], which decodes a tensor on a kernel executor. [`super::hostdec`] (the CPU
//! path), [`super::policy`] (measuring candidates) and the `decompress` driver build on this
//! module; it uses none of them (see the layering in `ckpt/mod.rs`).

use std::borrow::Cow;

use crate::device::{Device, DeviceBuffer};
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::{bitmask, codec};

use super::format::{ferr, Encoding, MaskCoding};
use super::{maskcode, valcode};

/// Cluster-quantisation widths a file may hold (the policy tries them smallest first).
pub const QUANT_BITS: [u32; 4] = [2, 3, 4, 8];

/// Copy little-endian bytes (any alignment) into a typed vector; `bytes.len()` must be a
/// multiple of the element size (callers check).
pub fn pod_vec<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    let nb = std::mem::size_of_val(v.as_slice());
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&bytes[..nb]);
    v
}

/// A typed host view of little-endian tensor bytes (borrowed when aligned, copied otherwise).
pub fn view<T: Float>(bytes: &[u8]) -> Cow<'_, [T]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(pod_vec(bytes)),
    }
}

/// Check a packed stream's sections for `count` values: one width per block, each at most
/// `max_width` (and equal to `fixed` when given), and exactly the words the widths need.
pub(crate) fn check_packed(
    wb: &[u8],
    db: &[u8],
    count: usize,
    fixed: Option<u32>,
    max_width: u32,
    ctx: &str,
) -> Result<()> {
    let blocks = count.div_ceil(codec::PACK_BLOCK);
    if wb.len() != blocks {
        return Err(ferr(
            ctx,
            format!(
                "section 'widths' has {} entries, {count} values need {blocks}",
                wb.len()
            ),
        ));
    }
    if let Some(&w) = wb
        .iter()
        .find(|&&w| w as u32 > max_width || fixed.is_some_and(|f| w as u32 != f))
    {
        return Err(ferr(
            ctx,
            format!("section 'widths' holds an invalid width {w}"),
        ));
    }
    if db.len() as u64 != 4 * valcode::packed_words(wb, count) {
        return Err(ferr(
            ctx,
            "section 'words' length disagrees with its widths",
        ));
    }
    Ok(())
}

fn parse_u32s(b: &[u8], ctx: &str, what: &str) -> Result<Vec<u32>> {
    if b.len() % 4 != 0 {
        return Err(ferr(
            ctx,
            format!("section '{what}' is not a whole number of u32 words"),
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4")))
        .collect())
}

pub(crate) fn parse_mask(
    coding: MaskCoding,
    b: &[u8],
    n: usize,
    count: u64,
    ctx: &str,
) -> Result<Vec<u32>> {
    let mask = match coding {
        MaskCoding::Bits => {
            if b.len() as u64 != 4 * bitmask::mask_words(n) as u64 {
                return Err(ferr(
                    ctx,
                    "section 'mask' has the wrong length for the tensor",
                ));
            }
            parse_u32s(b, ctx, "mask")?
        }
        MaskCoding::Rice { k } => maskcode::decode(b, k, n as u64, count, ctx)?,
    };
    let set = crate::reference::bitmask::count(&mask, n);
    if set != count {
        return Err(ferr(
            ctx,
            format!("mask marks {set} elements, manifest says {count}"),
        ));
    }
    if n % 32 != 0 && mask.last().is_some_and(|&w| w >> (n % 32) != 0) {
        return Err(ferr(ctx, "mask has bits past the last element"));
    }
    Ok(mask)
}

/// Validate and upload a [`codec::Packed`] of `count` values from its sections (see
/// [`check_packed`]).
fn parse_packed(
    dev: &Device,
    wb: &[u8],
    db: &[u8],
    count: usize,
    fixed: Option<u32>,
    max_width: u32,
    ctx: &str,
) -> Result<codec::Packed> {
    check_packed(wb, db, count, fixed, max_width, ctx)?;
    let words = parse_u32s(db, ctx, "words")?;
    Ok(codec::Packed {
        words: dev.upload(&words, "ckpt.words")?,
        widths: dev.upload(wb, "ckpt.widths")?,
        count,
    })
}

pub(crate) fn check_centroids(bits: u32, c: &[f32], ctx: &str) -> Result<()> {
    if !QUANT_BITS.contains(&bits) || c.len() != 1usize << bits || c.iter().any(|x| !x.is_finite())
    {
        return Err(ferr(
            ctx,
            format!("bad codebook: {} centroids for {bits} bits", c.len()),
        ));
    }
    Ok(())
}

/// Decode one tensor of `n` elements from its sections (checksums already verified).
/// `ctx` names the tensor in errors.
pub fn decode_typed<T: Float>(
    dev: &Device,
    enc: &Encoding,
    n: usize,
    secs: &[&[u8]],
    base: Option<&DeviceBuffer<T>>,
    ctx: &str,
) -> Result<DeviceBuffer<T>> {
    let es = std::mem::size_of::<T>();
    let need_base = || {
        base.filter(|b| b.len() == n).ok_or_else(|| {
            ferr(
                ctx,
                "encoded as a delta but no matching base tensor was given",
            )
        })
    };
    let out = match enc {
        Encoding::Raw => {
            if secs[0].len() != n * es {
                return Err(ferr(ctx, "raw section has the wrong length"));
            }
            return dev.upload(&view::<T>(secs[0]), "ckpt.raw");
        }
        Encoding::MaskRaw { mask, count, .. } => {
            let b = need_base()?;
            let m = parse_mask(*mask, secs[0], n, *count, ctx)?;
            if secs[1].len() as u64 != count * es as u64 {
                return Err(ferr(ctx, "section 'values' has the wrong length"));
            }
            let vals: Vec<T> = pod_vec(secs[1]);
            let md = dev.upload(&m, "ckpt.mask")?;
            let vd = dev.upload(&vals, "ckpt.values")?;
            bitmask::densify_parts(b, &md, &vd)?
        }
        Encoding::MaskDelta { mask, count, .. } => {
            let b = need_base()?;
            let m = parse_mask(*mask, secs[0], n, *count, ctx)?;
            let cnt = *count as usize;
            let p = parse_packed(dev, secs[1], secs[2], cnt, None, 8 * es as u32, ctx)?;
            let md = dev.upload(&m, "ckpt.mask")?;
            let gb = codec::gather(b, &md, cnt)?;
            let vals = codec::delta_decode(&gb, &p)?;
            bitmask::densify_parts(b, &md, &vals)?
        }
        Encoding::MaskDeltaEg { mask, count, .. } => {
            let b = need_base()?;
            let m = parse_mask(*mask, secs[0], n, *count, ctx)?;
            let cnt = *count as usize;
            let z = valcode::decode(secs[1], secs[2], cnt, ctx)?;
            if es == 2 && z.iter().any(|&v| v > 0xffff) {
                return Err(ferr(
                    ctx,
                    "exp-golomb values: a delta does not fit 16-bit elements",
                ));
            }
            let (words, widths) = valcode::pack(&z);
            drop(z);
            let p = codec::Packed {
                words: dev.upload(&words, "ckpt.words")?,
                widths: dev.upload(&widths, "ckpt.widths")?,
                count: cnt,
            };
            let md = dev.upload(&m, "ckpt.mask")?;
            let gb = codec::gather(b, &md, cnt)?;
            let vals = codec::delta_decode(&gb, &p)?;
            bitmask::densify_parts(b, &md, &vals)?
        }
        Encoding::MaskQuant {
            mask,
            count,
            bits,
            centroids,
            ..
        } => {
            let b = need_base()?;
            check_centroids(*bits, centroids, ctx)?;
            let m = parse_mask(*mask, secs[0], n, *count, ctx)?;
            let cnt = *count as usize;
            let p = parse_packed(dev, secs[1], secs[2], cnt, Some(*bits), 32, ctx)?;
            let md = dev.upload(&m, "ckpt.mask")?;
            let gb = codec::gather(b, &md, cnt)?;
            let vals = codec::dequantize(&p, centroids, Some(&gb))?;
            bitmask::densify_parts(b, &md, &vals)?
        }
        Encoding::QuantDelta { bits, centroids } => {
            let b = need_base()?;
            check_centroids(*bits, centroids, ctx)?;
            let p = parse_packed(dev, secs[0], secs[1], n, Some(*bits), 32, ctx)?;
            codec::dequantize(&p, centroids, Some(b))?
        }
        Encoding::QuantWeights { bits, centroids } => {
            check_centroids(*bits, centroids, ctx)?;
            let p = parse_packed(dev, secs[0], secs[1], n, Some(*bits), 32, ctx)?;
            codec::dequantize::<T>(&p, centroids, None)?
        }
    };
    if out.len() != n {
        return Err(ferr(ctx, "decoded tensor has the wrong length"));
    }
    Ok(out)
}

/// The bytes of a buffer: borrowed when it lives in host memory, downloaded otherwise.
pub fn buf_bytes<T: Float>(b: &DeviceBuffer<T>) -> Result<Cow<'_, [u8]>> {
    match b.host_slice() {
        Some(s) => Ok(Cow::Borrowed(bytemuck::cast_slice(s))),
        None => Ok(Cow::Owned(bytemuck::cast_slice(&b.download()?).to_vec())),
    }
}
