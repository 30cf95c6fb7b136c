//! The CPU path's decoder: every encoding decoded on the host straight from the section bytes
//! and the (memory-mapped) base, in chunks of [`OUT_CHUNK`] elements handed to a callback, so
//! nothing tensor-sized is allocated here. The element formulas are the reference ones
//! (`reference::codec`: `delta_unzz`, `round_to(canonical(widen(base) + c))`), which every
//! executor's kernels match bit for bit; `decompress` checks each tensor's hash either way.
//!
//! All section checks of the device path are made here too (mask count, positions and padding,
//! packed widths and lengths, Exp-Golomb orders, lengths and padding, codebooks), so a corrupt
//! section is a format error naming the tensor, never a panic.

use crate::dtype::Float;
use crate::error::Result;
use crate::reference::codec::{
    bits_of, canonical, delta_unzz, delta_value, from_bits, round_to, widen,
};

use super::format::{ferr, Encoding};
use super::sections::{check_centroids, check_packed, parse_mask};
use super::valcode::EgReader;

/// Elements per output chunk (a multiple of 32, so a chunk owns whole mask words).
pub const OUT_CHUNK: usize = 1 << 16;

/// Sequential reader of an `ops::codec::Packed` stream whose sections were checked by
/// [`check_packed`].
struct PackedReader<'a> {
    words: &'a [u8],
    widths: &'a [u8],
    block: usize,
    in_block: usize,
    word_off: usize,
}

impl<'a> PackedReader<'a> {
    fn new(widths: &'a [u8], words: &'a [u8]) -> Self {
        PackedReader {
            words,
            widths,
            block: 0,
            in_block: 0,
            word_off: 0,
        }
    }

    #[inline]
    fn word(&self, a: usize) -> u64 {
        u32::from_le_bytes(self.words[4 * a..4 * a + 4].try_into().expect("4 bytes")) as u64
    }

    #[inline]
    fn next(&mut self) -> u32 {
        let w = self.widths[self.block] as usize;
        let v = if w == 0 {
            0
        } else {
            let bit = self.in_block * w;
            let (a, s) = (self.word_off + bit / 32, bit % 32);
            let mut v = self.word(a) >> s;
            if s + w > 32 {
                v |= self.word(a + 1) << (32 - s);
            }
            (v & ((1u64 << w) - 1)) as u32
        };
        self.in_block += 1;
        if self.in_block == crate::ops::codec::PACK_BLOCK {
            self.in_block = 0;
            self.word_off += 8 * w;
            self.block += 1;
        }
        v
    }
}

/// Emit the tensor in chunks: the base, with each changed element `x` (in mask order)
/// replaced by `f(x)`.
fn masked<T: Float>(
    n: usize,
    m: &[u32],
    base: &[T],
    emit: &mut dyn FnMut(&[T]) -> Result<()>,
    mut f: impl FnMut(T) -> Result<T>,
) -> Result<()> {
    let mut buf: Vec<T> = Vec::with_capacity(OUT_CHUNK.min(n));
    for lo in (0..n).step_by(OUT_CHUNK) {
        let hi = (lo + OUT_CHUNK).min(n);
        buf.clear();
        buf.extend_from_slice(&base[lo..hi]);
        for (wi, &word) in m[lo / 32..hi.div_ceil(32)].iter().enumerate() {
            let mut left = word;
            while left != 0 {
                let i = wi * 32 + left.trailing_zeros() as usize;
                left &= left - 1;
                buf[i] = f(buf[i])?;
            }
        }
        emit(&buf)?;
    }
    Ok(())
}

/// Decode one tensor of `n` elements (section checksums already verified) and hand its
/// elements to `emit` in order, in chunks of at most [`OUT_CHUNK`]. `ctx` names the tensor in
/// errors. On error, part of the tensor may already have been emitted.
pub fn decode<T: Float>(
    enc: &Encoding,
    n: usize,
    secs: &[&[u8]],
    base: Option<&[T]>,
    ctx: &str,
    emit: &mut dyn FnMut(&[T]) -> Result<()>,
) -> Result<()> {
    let es = std::mem::size_of::<T>();
    let width = 8 * es as u32;
    let need_base = || {
        base.filter(|b| b.len() == n).ok_or_else(|| {
            ferr(
                ctx,
                "encoded as a delta but no matching base tensor was given",
            )
        })
    };
    let (mask, count) = match enc {
        Encoding::Raw => {
            if secs[0].len() != n * es {
                return Err(ferr(ctx, "raw section has the wrong length"));
            }
            let mut buf: Vec<T> = Vec::with_capacity(OUT_CHUNK.min(n));
            for ch in secs[0].chunks(OUT_CHUNK * es) {
                buf.clear();
                buf.extend(ch.chunks_exact(es).map(bytemuck::pod_read_unaligned::<T>));
                emit(&buf)?;
            }
            return Ok(());
        }
        Encoding::QuantDelta { bits, centroids } | Encoding::QuantWeights { bits, centroids } => {
            let b = match enc {
                Encoding::QuantDelta { .. } => Some(need_base()?),
                _ => None,
            };
            check_centroids(*bits, centroids, ctx)?;
            check_packed(secs[0], secs[1], n, Some(*bits), 32, ctx)?;
            let mut p = PackedReader::new(secs[0], secs[1]);
            let mut buf: Vec<T> = Vec::with_capacity(OUT_CHUNK.min(n));
            for lo in (0..n).step_by(OUT_CHUNK) {
                let hi = (lo + OUT_CHUNK).min(n);
                buf.clear();
                match b {
                    Some(b) => buf.extend(b[lo..hi].iter().map(|&x| {
                        round_to::<T>(canonical(widen(x) + centroids[p.next() as usize]))
                    })),
                    None => buf.extend(
                        (lo..hi).map(|_| round_to::<T>(canonical(centroids[p.next() as usize]))),
                    ),
                }
                emit(&buf)?;
            }
            return Ok(());
        }
        Encoding::MaskRaw { mask, count, .. }
        | Encoding::MaskDelta { mask, count, .. }
        | Encoding::MaskDeltaEg { mask, count, .. }
        | Encoding::MaskQuant { mask, count, .. } => (*mask, *count),
    };
    let cnt = usize::try_from(count).map_err(|_| ferr(ctx, "count too large"))?;
    // Section checks first, then the mask (its allocation is bounded by the base's size).
    match enc {
        Encoding::MaskRaw { .. } if secs[1].len() as u64 != count.saturating_mul(es as u64) => {
            return Err(ferr(ctx, "section 'values' has the wrong length"));
        }
        Encoding::MaskDelta { .. } => check_packed(secs[1], secs[2], cnt, None, width, ctx)?,
        Encoding::MaskQuant {
            bits, centroids, ..
        } => {
            check_centroids(*bits, centroids, ctx)?;
            check_packed(secs[1], secs[2], cnt, Some(*bits), 32, ctx)?;
        }
        _ => {}
    }
    let b = need_base()?;
    let m = parse_mask(mask, secs[0], n, count, ctx)?;
    match enc {
        Encoding::MaskRaw { .. } => {
            let mut r = 0usize;
            masked(n, &m, b, emit, |_| {
                let v = bytemuck::pod_read_unaligned(&secs[1][r * es..(r + 1) * es]);
                r += 1;
                Ok(v)
            })
        }
        Encoding::MaskDelta { .. } => {
            let mut p = PackedReader::new(secs[1], secs[2]);
            masked(n, &m, b, emit, |x| {
                Ok(from_bits(delta_unzz(bits_of(x), p.next(), width)))
            })
        }
        Encoding::MaskDeltaEg { .. } => {
            let mut e = EgReader::new(secs[1], secs[2], cnt, ctx)?;
            // A delta wider than the element is a format error.
            let wide = |z| {
                let msg = format!("a delta of {z} does not fit {width}-bit elements");
                ferr(ctx, format!("exp-golomb values: {msg}"))
            };
            masked(n, &m, b, emit, |x| {
                let z = e.read()?;
                delta_value(x, z).ok_or_else(|| wide(z))
            })?;
            e.finish()
        }
        Encoding::MaskQuant { centroids, .. } => {
            let mut p = PackedReader::new(secs[1], secs[2]);
            masked(n, &m, b, emit, |x| {
                Ok(round_to::<T>(canonical(
                    widen(x) + centroids[p.next() as usize],
                )))
            })
        }
        _ => unreachable!("handled above"),
    }
}
