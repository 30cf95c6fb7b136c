//! The adaptive per-tensor policy and the typed encode/decode of every encoding.
//!
//! For each tensor the policy builds the candidates its situation allows, measures each one's
//! stored size and its relative L2 error by decoding it through the same path `decompress`
//! uses, and keeps the smallest whose error is within the budget. Raw is always a candidate,
//! so nothing is ever stored larger than raw. The rules and their reasons are in docs/ckpt.md.

use std::borrow::Cow;

use crate::device::{Device, DeviceBuffer};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::{bitmask, codec};

use super::format::{ferr, Encoding, MaskCoding, TensorStats};
use super::{maskcode, valcode};

/// Cluster-quantisation widths tried, smallest first.
pub const QUANT_BITS: [u32; 4] = [2, 3, 4, 8];
const KMEANS_ITERS: u32 = 25;
const KMEANS_TOL: f32 = 1e-4;

/// The chosen encoding of one tensor with its section bytes and measurements.
pub struct Choice<'a> {
    pub encoding: Encoding,
    pub sections: Vec<Cow<'a, [u8]>>,
    /// The bytes the decoder will produce (None: identical to the input).
    pub recon: Option<Vec<u8>>,
    pub stats: TensorStats,
}

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

fn unsupported(e: &Error) -> bool {
    matches!(e, Error::Unsupported { .. })
}

/// Relative L2 error of `recon` against `new`, with the denominator `denom` (already a norm).
/// 0/0 = 0; anything over 0 = infinity. Computed in f64.
fn rel_err<T: Float>(recon: &[T], new: &[T], denom: f64) -> f64 {
    let num: f64 = recon
        .iter()
        .zip(new)
        .map(|(r, x)| {
            if r.to_bits() == x.to_bits() {
                0.0
            } else {
                let d = r.to_f64() - x.to_f64();
                d * d
            }
        })
        .sum::<f64>()
        .sqrt();
    if num == 0.0 {
        0.0
    } else if denom > 0.0 {
        num / denom
    } else {
        f64::INFINITY
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The stored form of a mask: the smaller of the plain words and the Rice-coded gaps.
fn code_mask(mask: &[u32]) -> (MaskCoding, Vec<u8>) {
    let (k, rice) = maskcode::best_k(mask);
    if rice < 4 * mask.len() as u64 {
        (MaskCoding::Rice { k }, maskcode::encode(mask, k))
    } else {
        (MaskCoding::Bits, u32_bytes(mask))
    }
}

fn packed_sections(p: &codec::Packed) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok((p.widths.download()?, u32_bytes(&p.words.download()?)))
}

struct Cand<'a> {
    encoding: Encoding,
    sections: Vec<Cow<'a, [u8]>>,
    recon: Option<Vec<u8>>,
    error: f64,
}

impl Cand<'_> {
    /// Stored bytes, counting a codebook's share of the manifest (~12 JSON bytes a centroid).
    fn size(&self) -> u64 {
        let codebook = match &self.encoding {
            Encoding::MaskQuant { centroids, .. }
            | Encoding::QuantDelta { centroids, .. }
            | Encoding::QuantWeights { centroids, .. } => 12 * centroids.len() as u64,
            _ => 0,
        };
        codebook + self.sections.iter().map(|s| s.len() as u64).sum::<u64>()
    }
}

/// Choose and build the encoding of one float tensor. `exact_only` forbids lossy encodings.
pub fn encode_tensor<'a, T: Float>(
    dev: &Device,
    name: &str,
    new_bytes: &'a [u8],
    base_bytes: Option<&[u8]>,
    budget: f64,
    exact_only: bool,
) -> Result<Choice<'a>> {
    let new_h = view::<T>(new_bytes);
    let n = new_h.len();
    let mut stats = TensorStats::default();
    let raw = Cand {
        encoding: Encoding::Raw,
        sections: vec![Cow::Borrowed(new_bytes)],
        recon: None,
        error: 0.0,
    };
    let mut cands: Vec<Cand<'a>> = Vec::new();
    // Every lossy candidate tried, kept or not: (name, size, error).
    let mut tried: Vec<(String, u64, Option<f64>)> = Vec::new();
    let lossy = !exact_only && budget > 0.0;
    let new_d = dev.upload(&new_h, "ckpt.new")?;
    let base_d = match base_bytes {
        Some(bb) => Some(dev.upload(&view::<T>(bb), "ckpt.base")?),
        None => None,
    };

    if let (Some(bb), Some(base_d)) = (base_bytes, base_d.as_ref()) {
        let base_h = view::<T>(bb);
        // Measurements: fraction changed, spread of the delta (f64).
        let (mut count, mut sq, mut mx) = (0u64, 0f64, 0f64);
        for (b, x) in base_h.iter().zip(new_h.iter()) {
            if b.to_bits() != x.to_bits() {
                count += 1;
                let d = x.to_f64() - b.to_f64();
                sq += d * d;
                mx = mx.max(d.abs());
            }
        }
        let dnorm = sq.sqrt();
        stats.frac_changed = Some(if n == 0 { 0.0 } else { count as f64 / n as f64 });
        stats.delta_rms = finite(if count == 0 {
            0.0
        } else {
            (sq / count as f64).sqrt()
        });
        stats.delta_max = finite(mx);

        let sp = bitmask::sparsify(base_d, &new_d, 0.0)?;
        let mask_h = sp.mask.download()?;
        let (mcode, mbytes) = code_mask(&mask_h);
        let cnt = sp.values.len() as u64;
        cands.push(Cand {
            encoding: Encoding::MaskRaw {
                mask: mcode,
                tau: 0.0,
                count: cnt,
            },
            sections: vec![
                Cow::Owned(mbytes.clone()),
                Cow::Owned(buf_bytes(&sp.values)?.into_owned()),
            ],
            recon: None,
            error: 0.0,
        });
        match delta_candidate(base_d, &sp, mcode, &mbytes, 0.0) {
            Ok(c) => cands.extend(c),
            Err(e) if unsupported(&e) => stats.notes.push(format!("mask+delta skipped: {e}")),
            Err(e) => return Err(e),
        }

        if lossy && count > 0 {
            // Thresholds from the sorted |delta|: drop the smallest changes whose squared sum
            // stays within a share of the budget.
            let mut ad: Vec<(f32, f64)> = base_h
                .iter()
                .zip(new_h.iter())
                .filter(|(b, x)| b.to_bits() != x.to_bits())
                .map(|(b, x)| {
                    let d = x.to_f64() - b.to_f64();
                    ((x.to_f32() - b.to_f32()).abs(), d * d)
                })
                .collect();
            ad.sort_by(|a, b| a.0.total_cmp(&b.0));
            let tau_for = |share: f64| -> f32 {
                let lim = (share * budget * dnorm).powi(2);
                let mut acc = 0.0;
                let mut tau = 0.0f32;
                for w in ad.windows(2) {
                    acc += w[0].1;
                    if acc > lim {
                        break;
                    }
                    // Only a tau strictly below the next value keeps the next one.
                    if w[1].0 > w[0].0 && w[0].0.is_finite() {
                        tau = w[0].0;
                    }
                }
                tau
            };
            let (tau_delta, tau_quant) = (tau_for(0.9), tau_for(0.5));
            drop(ad);
            if tau_delta > 0.0 {
                let spt = bitmask::sparsify(base_d, &new_d, tau_delta)?;
                let mh = spt.mask.download()?;
                let (mc, mb) = code_mask(&mh);
                match delta_candidate(base_d, &spt, mc, &mb, tau_delta) {
                    Ok(cs) => {
                        for mut c in cs {
                            finish_lossy::<T>(dev, &mut c, n, Some(base_d), &new_h, dnorm)?;
                            offer(&mut cands, &mut tried, c, budget);
                        }
                    }
                    Err(e) if unsupported(&e) => {
                        stats.notes.push(format!("mask(tau)+delta skipped: {e}"))
                    }
                    Err(e) => return Err(e),
                }
            }
            for tau in [0.0f32, tau_quant] {
                if tau > 0.0 && tau == tau_delta {
                    continue;
                }
                let spt = if tau == 0.0 {
                    None
                } else {
                    Some(bitmask::sparsify(base_d, &new_d, tau)?)
                };
                let s = spt.as_ref().unwrap_or(&sp);
                if s.values.is_empty() {
                    continue;
                }
                let mh = s.mask.download()?;
                let (mc, mb) = code_mask(&mh);
                for bits in QUANT_BITS {
                    match mask_quant_candidate(base_d, s, mc, &mb, tau, bits) {
                        Ok(mut c) => {
                            finish_lossy::<T>(dev, &mut c, n, Some(base_d), &new_h, dnorm)?;
                            let ok = c.error <= budget;
                            offer(&mut cands, &mut tried, c, budget);
                            if ok {
                                break;
                            }
                        }
                        Err(e) if unsupported(&e) => {
                            stats.notes.push(format!("mask+q{bits} skipped: {e}"));
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if stats.frac_changed.unwrap_or(0.0) > 0.5 {
                for bits in QUANT_BITS {
                    match quant_candidate(&new_d, Some(base_d), bits) {
                        Ok(mut c) => {
                            finish_lossy::<T>(dev, &mut c, n, Some(base_d), &new_h, dnorm)?;
                            let ok = c.error <= budget;
                            offer(&mut cands, &mut tried, c, budget);
                            if ok {
                                break;
                            }
                        }
                        Err(e) if unsupported(&e) => {
                            stats.notes.push(format!("delta-q{bits} skipped: {e}"));
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    } else if lossy && n > 0 {
        let wnorm = new_h
            .iter()
            .map(|x| x.to_f64() * x.to_f64())
            .sum::<f64>()
            .sqrt();
        for bits in QUANT_BITS {
            match quant_candidate(&new_d, None, bits) {
                Ok(mut c) => {
                    finish_lossy::<T>(dev, &mut c, n, None, &new_h, wnorm)?;
                    let ok = c.error <= budget;
                    offer(&mut cands, &mut tried, c, budget);
                    if ok {
                        break;
                    }
                }
                Err(e) if unsupported(&e) => {
                    stats.notes.push(format!("weights-q{bits} skipped: {e}"));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }

    stats
        .candidates
        .push(("raw".into(), new_bytes.len() as u64, Some(0.0)));
    for c in cands.iter().filter(|c| c.encoding.is_exact()) {
        stats
            .candidates
            .push((c.encoding.name(), c.size(), finite(c.error)));
    }
    stats.candidates.extend(tried);
    // Smallest acceptable candidate; exact ones are verified by decoding before being chosen.
    let mut order: Vec<Cand<'a>> = cands
        .into_iter()
        .filter(|c| c.error <= budget && c.size() < raw.size())
        .collect();
    order.sort_by_key(|c| c.size());
    for c in order {
        if c.encoding.is_exact() {
            let secs: Vec<&[u8]> = c.sections.iter().map(|s| s.as_ref()).collect();
            let ok = decode_typed::<T>(dev, &c.encoding, n, &secs, base_d.as_ref(), name)
                .and_then(|r| buf_bytes(&r).map(|b| *b == *new_bytes))
                .unwrap_or(false);
            if !ok {
                stats.notes.push(format!(
                    "{} failed its decode check; not used",
                    c.encoding.name()
                ));
                continue;
            }
        }
        stats.error = c.error;
        return Ok(Choice {
            encoding: c.encoding,
            sections: c.sections,
            recon: c.recon,
            stats,
        });
    }
    stats.error = 0.0;
    Ok(Choice {
        encoding: raw.encoding,
        sections: raw.sections,
        recon: None,
        stats,
    })
}

/// Keep a lossy candidate only while it is within budget and smaller than every kept one, so
/// at most one reconstruction is alive at once; record it either way.
fn offer<'a>(
    cands: &mut Vec<Cand<'a>>,
    tried: &mut Vec<(String, u64, Option<f64>)>,
    c: Cand<'a>,
    budget: f64,
) {
    tried.push((c.encoding.name(), c.size(), finite(c.error)));
    let best = cands.iter().map(|k| k.size()).min().unwrap_or(u64::MAX);
    if c.error <= budget && c.size() < best {
        cands.retain(|k| k.encoding.is_exact());
        cands.push(c);
    }
}

fn delta_candidate<'a, T: Float>(
    base_d: &DeviceBuffer<T>,
    sp: &bitmask::Sparse<T>,
    mcode: MaskCoding,
    mbytes: &[u8],
    tau: f32,
) -> Result<Vec<Cand<'a>>> {
    let cnt = sp.values.len();
    let gb = codec::gather(base_d, &sp.mask, cnt)?;
    let p = codec::delta_encode(&gb, &sp.values)?;
    let (w, d) = packed_sections(&p)?;
    // Second stage: the same zigzag values, Exp-Golomb coded per block.
    let words = p.words.download()?;
    if words.len() as u64 != valcode::packed_words(&w, cnt) || w.iter().any(|&x| x > 32) {
        return Err(Error::kernel(
            base_d.device().backend().family(),
            "codec::delta_encode",
            "packed output does not match its widths",
        ));
    }
    let (ks, stream) = valcode::encode(&valcode::unpack(&words, &w, cnt));
    Ok(vec![
        Cand {
            encoding: Encoding::MaskDelta {
                mask: mcode,
                tau,
                count: cnt as u64,
            },
            sections: vec![Cow::Owned(mbytes.to_vec()), Cow::Owned(w), Cow::Owned(d)],
            recon: None,
            error: 0.0,
        },
        Cand {
            encoding: Encoding::MaskDeltaEg {
                mask: mcode,
                tau,
                count: cnt as u64,
            },
            sections: vec![
                Cow::Owned(mbytes.to_vec()),
                Cow::Owned(ks),
                Cow::Owned(stream),
            ],
            recon: None,
            error: 0.0,
        },
    ])
}

fn mask_quant_candidate<'a, T: Float>(
    base_d: &DeviceBuffer<T>,
    sp: &bitmask::Sparse<T>,
    mcode: MaskCoding,
    mbytes: &[u8],
    tau: f32,
    bits: u32,
) -> Result<Cand<'a>> {
    let cnt = sp.values.len();
    let gb = codec::gather(base_d, &sp.mask, cnt)?;
    let d = codec::delta_f32(&gb, &sp.values)?;
    let km = codec::kmeans(&d, bits, KMEANS_ITERS, KMEANS_TOL)?;
    let p = codec::pack_indices(&km.indices, bits)?;
    let (w, words) = packed_sections(&p)?;
    Ok(Cand {
        encoding: Encoding::MaskQuant {
            mask: mcode,
            tau,
            count: cnt as u64,
            bits,
            centroids: km.centroids,
        },
        sections: vec![
            Cow::Owned(mbytes.to_vec()),
            Cow::Owned(w),
            Cow::Owned(words),
        ],
        recon: None,
        error: f64::INFINITY,
    })
}

fn quant_candidate<'a, T: Float>(
    new_d: &DeviceBuffer<T>,
    base_d: Option<&DeviceBuffer<T>>,
    bits: u32,
) -> Result<Cand<'a>> {
    let vals = match base_d {
        Some(b) => codec::delta_f32(b, new_d)?,
        None => codec::to_f32(new_d)?,
    };
    let km = codec::kmeans(&vals, bits, KMEANS_ITERS, KMEANS_TOL)?;
    let p = codec::pack_indices(&km.indices, bits)?;
    let (w, words) = packed_sections(&p)?;
    let encoding = match base_d {
        Some(_) => Encoding::QuantDelta {
            bits,
            centroids: km.centroids,
        },
        None => Encoding::QuantWeights {
            bits,
            centroids: km.centroids,
        },
    };
    Ok(Cand {
        encoding,
        sections: vec![Cow::Owned(w), Cow::Owned(words)],
        recon: None,
        error: f64::INFINITY,
    })
}

/// Decode a lossy candidate through the decoder and measure its error.
fn finish_lossy<T: Float>(
    dev: &Device,
    c: &mut Cand<'_>,
    n: usize,
    base_d: Option<&DeviceBuffer<T>>,
    new_h: &[T],
    denom: f64,
) -> Result<()> {
    let secs: Vec<&[u8]> = c.sections.iter().map(|s| s.as_ref()).collect();
    let r = decode_typed::<T>(dev, &c.encoding, n, &secs, base_d, "candidate")?;
    let rb = buf_bytes(&r)?;
    c.error = rel_err(&view::<T>(&rb), new_h, denom);
    c.recon = Some(rb.into_owned());
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

fn parse_mask(coding: MaskCoding, b: &[u8], n: usize, count: u64, ctx: &str) -> Result<Vec<u32>> {
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

/// Validate and upload a [`codec::Packed`] of `count` values from its sections. `fixed`: every
/// block must have this width (quantisation indices).
fn parse_packed(
    dev: &Device,
    wb: &[u8],
    db: &[u8],
    count: usize,
    fixed: Option<u32>,
    ctx: &str,
) -> Result<codec::Packed> {
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
        .find(|&&w| w > 32 || fixed.is_some_and(|f| w as u32 != f))
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
    let words = parse_u32s(db, ctx, "words")?;
    Ok(codec::Packed {
        words: dev.upload(&words, "ckpt.words")?,
        widths: dev.upload(wb, "ckpt.widths")?,
        count,
    })
}

fn check_centroids(bits: u32, c: &[f32], ctx: &str) -> Result<()> {
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
            let p = parse_packed(dev, secs[1], secs[2], cnt, None, ctx)?;
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
            let p = parse_packed(dev, secs[1], secs[2], cnt, Some(*bits), ctx)?;
            let md = dev.upload(&m, "ckpt.mask")?;
            let gb = codec::gather(b, &md, cnt)?;
            let vals = codec::dequantize(&p, centroids, Some(&gb))?;
            bitmask::densify_parts(b, &md, &vals)?
        }
        Encoding::QuantDelta { bits, centroids } => {
            let b = need_base()?;
            check_centroids(*bits, centroids, ctx)?;
            let p = parse_packed(dev, secs[0], secs[1], n, Some(*bits), ctx)?;
            codec::dequantize(&p, centroids, Some(b))?
        }
        Encoding::QuantWeights { bits, centroids } => {
            check_centroids(*bits, centroids, ctx)?;
            let p = parse_packed(dev, secs[0], secs[1], n, Some(*bits), ctx)?;
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
