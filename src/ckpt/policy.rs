//! The adaptive per-tensor policy and the typed encode of every encoding.
//!
//! For each tensor the policy builds the candidates its situation allows, measures each one's
//! stored size and its relative L2 error by decoding it through the same path `decompress`
//! uses, and keeps the smallest whose error is within the budget. Raw is always a candidate,
//! so nothing is ever stored larger than raw. The rules and their reasons are in docs/ckpt.md.

use xxhash_rust::xxh3::Xxh3;

use crate::device::{Device, DeviceBuffer};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::{bitmask, codec};
use crate::reference::codec as rc;

use super::delta::{self, Changed, Kind, Mask, MaskPlan, Plan, Section};
use super::format::{Encoding, TensorStats};
use super::sections::{buf_bytes, decode_typed, view, QUANT_BITS};
use super::{hostdec, valcode};

const KMEANS_ITERS: u32 = 25;
const KMEANS_TOL: f32 = 1e-4;

/// The chosen encoding of one tensor with its section bytes and measurements.
pub struct Choice<'a> {
    pub encoding: Encoding,
    pub sections: Vec<Section<'a>>,
    /// xxh3-64 of the bytes the decoder will produce (None: identical to the input).
    pub recon_xxh3: Option<u64>,
    pub stats: TensorStats,
}

fn unsupported(e: &Error) -> bool {
    matches!(e, Error::Unsupported { .. })
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// Relative L2 error from the squared error sum and the denominator norm: 0/0 = 0, anything
/// over 0 = infinity.
fn rel(sq: f64, denom: f64) -> f64 {
    let num = sq.sqrt();
    if num == 0.0 {
        0.0
    } else if denom > 0.0 {
        num / denom
    } else {
        f64::INFINITY
    }
}

/// Squared error of `recon` against `new`, element by element in order (f64); elements with
/// identical bits contribute 0.
fn sq_err<T: Float>(recon: &[T], new: &[T], acc: &mut f64) {
    for (r, x) in recon.iter().zip(new) {
        if r.to_bits() != x.to_bits() {
            let d = rc::widen(*r) as f64 - rc::widen(*x) as f64;
            *acc += d * d;
        }
    }
}

/// A masked delta: its mask, where its changed values come from, and on a kernel executor
/// the device's sparse form (for the quantisers).
struct Masked<'a, T: Float> {
    tau: f32,
    mask: Mask,
    changed: Changed<'a, T>,
    sparse: Option<bitmask::Sparse<T>>,
}

/// A quantiser's output: codebook, packed widths and packed words.
type Quantised = (Vec<f32>, Vec<u8>, Vec<u32>);

/// Where candidates are computed: on the CPU path straight from the tensors (borrowed from
/// the memory map, nothing uploaded); on a kernel executor from device copies.
struct Engine<'a, T: Float> {
    dev: &'a Device,
    name: &'a str,
    new: &'a [T],
    new_bytes: &'a [u8],
    base: Option<&'a [T]>,
    new_d: Option<DeviceBuffer<T>>,
    base_d: Option<DeviceBuffer<T>>,
    /// The CPU path (nothing uploaded).
    host: bool,
    /// Lossy candidates will be built.
    lossy: bool,
}

impl<'a, T: Float> Engine<'a, T> {
    fn host(&self) -> bool {
        self.host
    }

    /// The masked delta at `tau`; `host` is the host's mask (and zigzag deltas) when already
    /// computed.
    fn masked(
        &self,
        tau: f32,
        host: Option<(Mask, Vec<Vec<T::Bits>>)>,
        stats: &mut TensorStats,
    ) -> Result<Masked<'a, T>> {
        let base = self.base.expect("a base");
        let (host_mask, z) = match host {
            Some((m, z)) => (Some(m), Some(z).filter(|z| !z.is_empty())),
            None => (None, None),
        };
        let (Some(new_d), Some(base_d)) = (&self.new_d, &self.base_d) else {
            let mask = host_mask.unwrap_or_else(|| delta::threshold(base, self.new, tau));
            return Ok(Masked {
                tau,
                mask,
                changed: Changed::Host {
                    base,
                    new: self.new,
                    z,
                },
                sparse: None,
            });
        };
        let sp = bitmask::sparsify(base_d, new_d, tau)?;
        let words = sp.mask.download()?;
        if let Some(h) = &host_mask {
            if h.words != words {
                return Err(Error::kernel(
                    self.dev.backend().family(),
                    "bitmask::sparsify",
                    "the device's change mask differs from the host's",
                ));
            }
        }
        let mask = host_mask.unwrap_or_else(|| Mask::new(words, self.new.len()));
        let cnt = sp.values.len();
        let width = 8 * std::mem::size_of::<T>() as u8;
        let z = match (|| -> Result<Vec<T::Bits>> {
            let gb = codec::gather(base_d, &sp.mask, cnt)?;
            let p = codec::delta_encode(&gb, &sp.values)?;
            let (w, words) = (p.widths.download()?, p.words.download()?);
            if words.len() as u64 != valcode::packed_words(&w, cnt) || w.iter().any(|&x| x > width)
            {
                return Err(Error::kernel(
                    self.dev.backend().family(),
                    "codec::delta_encode",
                    "packed output does not match its widths",
                ));
            }
            // Kept at the element's width (the widths were checked to fit it).
            Ok(rc::unpack_map(&words, &w, cnt, |_, v| {
                rc::from_bits::<T::Bits>(v)
            }))
        })() {
            Ok(z) => Some(z),
            Err(e) if unsupported(&e) => {
                stats.notes.push(format!("mask+delta skipped: {e}"));
                None
            }
            Err(e) => return Err(e),
        };
        let values = sp.values.download()?;
        Ok(Masked {
            tau,
            mask,
            changed: Changed::Dense { z, values },
            // Only the quantisers use the device's sparse form.
            sparse: self.lossy.then_some(sp),
        })
    }

    /// k-means of `bits` over the masked deltas (`m` given) or over every element's delta (or
    /// weight, without a base): the codebook and packed index words. None (with a note) when
    /// the values are not all finite or the op is unavailable.
    fn quantise(
        &self,
        m: Option<&Masked<'a, T>>,
        bits: u32,
        stats: &mut TensorStats,
        label: &str,
    ) -> Result<Option<Quantised>> {
        let k = 1usize << bits;
        if self.host() {
            let (c, words, count) = match m {
                Some(m) => {
                    let src = delta::MaskedDeltas {
                        mask: &m.mask,
                        base: self.base.expect("a base"),
                        new: self.new,
                    };
                    if rc::min_max_of(&src).2 > 0 {
                        stats
                            .notes
                            .push(format!("{label} skipped: non-finite deltas"));
                        return Ok(None);
                    }
                    let (c, _) = rc::kmeans_centroids(&src, k, KMEANS_ITERS, KMEANS_TOL);
                    let w = rc::pack_assigned(&src, &c, bits);
                    (c, w, m.mask.count)
                }
                None => {
                    let src = delta::AllValues {
                        base: self.base,
                        new: self.new,
                    };
                    if rc::min_max_of(&src).2 > 0 {
                        stats
                            .notes
                            .push(format!("{label} skipped: non-finite values"));
                        return Ok(None);
                    }
                    let (c, _) = rc::kmeans_centroids(&src, k, KMEANS_ITERS, KMEANS_TOL);
                    let w = rc::pack_assigned(&src, &c, bits);
                    (c, w, self.new.len())
                }
            };
            return Ok(Some((c, vec![bits as u8; rc::pack_blocks(count)], words)));
        }
        let run = || -> Result<codec::KMeans> {
            let vals = match m {
                Some(m) => {
                    let sp = m.sparse.as_ref().expect("device sparse form");
                    let bd = self.base_d.as_ref().expect("a base");
                    let gb = codec::gather(bd, &sp.mask, sp.values.len())?;
                    codec::delta_f32(&gb, &sp.values)?
                }
                None => match &self.base_d {
                    Some(bd) => codec::delta_f32(bd, self.new_d.as_ref().expect("device"))?,
                    None => codec::to_f32(self.new_d.as_ref().expect("device"))?,
                },
            };
            codec::kmeans(&vals, bits, KMEANS_ITERS, KMEANS_TOL)
        };
        let km = match run() {
            Ok(km) => km,
            Err(e) if unsupported(&e) => {
                stats.notes.push(format!("{label} skipped: {e}"));
                return Ok(None);
            }
            Err(Error::InvalidArgument { msg, .. }) if msg.contains("must be finite") => {
                stats
                    .notes
                    .push(format!("{label} skipped: non-finite values"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let p = codec::pack_indices(&km.indices, bits)?;
        Ok(Some((
            km.centroids,
            p.widths.download()?,
            p.words.download()?,
        )))
    }

    /// Decode a candidate through the decoder `decompress` uses on this executor, handing the
    /// produced elements to `emit` in order.
    fn decode(
        &self,
        enc: &Encoding,
        secs: &[Section],
        emit: &mut dyn FnMut(&[T], usize) -> Result<()>,
    ) -> Result<()> {
        let secs: Vec<&[u8]> = secs.iter().map(|s| s.bytes()).collect();
        let n = self.new.len();
        if self.host() {
            let mut at = 0;
            return hostdec::decode(enc, n, &secs, self.base, self.name, &mut |c: &[T]| {
                emit(c, at)?;
                at += c.len();
                Ok(())
            });
        }
        let r = decode_typed::<T>(self.dev, enc, n, &secs, self.base_d.as_ref(), self.name)?;
        let b = buf_bytes(&r)?;
        emit(&view::<T>(&b), 0)
    }

    /// Relative L2 error (against `denom`) and xxh3-64 of a candidate's decoded bytes.
    fn measure(&self, enc: &Encoding, secs: &[Section], denom: f64) -> Result<(f64, u64)> {
        let (mut sq, mut h) = (0f64, Xxh3::new());
        self.decode(enc, secs, &mut |c, at| {
            sq_err(c, &self.new[at..at + c.len()], &mut sq);
            h.update(bytemuck::cast_slice(c));
            Ok(())
        })?;
        Ok((rel(sq, denom), h.digest()))
    }

    /// Whether an exact candidate decodes to the input, bit for bit.
    fn verify(&self, enc: &Encoding, secs: &[Section]) -> bool {
        let es = std::mem::size_of::<T>();
        let mut same = true;
        let r = self.decode(enc, secs, &mut |c, at| {
            same &=
                *bytemuck::cast_slice::<T, u8>(c) == self.new_bytes[at * es..(at + c.len()) * es];
            Ok(())
        });
        r.is_ok() && same
    }
}

/// A lossy candidate, built and measured.
struct Lossy<'a> {
    encoding: Encoding,
    sections: Vec<Section<'a>>,
    error: f64,
    xxh3: u64,
}

impl Lossy<'_> {
    /// Stored bytes, counting a codebook's share of the manifest (~12 JSON bytes a centroid).
    fn size(&self) -> u64 {
        codebook_bytes(&self.encoding) + self.sections.iter().map(|s| s.len() as u64).sum::<u64>()
    }
}

fn codebook_bytes(e: &Encoding) -> u64 {
    match e {
        Encoding::MaskQuant { centroids, .. }
        | Encoding::QuantDelta { centroids, .. }
        | Encoding::QuantWeights { centroids, .. } => 12 * centroids.len() as u64,
        _ => 0,
    }
}

/// Keep a lossy candidate only while it is within budget and smaller than every exact one
/// and the best lossy one so far (so at most two candidates' sections are alive at once);
/// record it either way.
fn offer<'a>(
    best: &mut Option<Lossy<'a>>,
    tried: &mut Vec<(String, u64, Option<f64>)>,
    exact_min: u64,
    c: Lossy<'a>,
    budget: f64,
) -> bool {
    let size = c.size();
    tried.push((c.encoding.name(), size, finite(c.error)));
    let ok = c.error <= budget;
    let bound = best.as_ref().map_or(exact_min, |b| b.size().min(exact_min));
    if ok && size < bound {
        *best = Some(c);
    }
    ok
}

/// Where a quantisation sweep offers its candidates: the best lossy one so far, the tried
/// list, the smallest exact size and the error budget (see [`offer`]).
type Offers<'o, 'a> = (
    &'o mut Option<Lossy<'a>>,
    &'o mut Vec<(String, u64, Option<f64>)>,
    u64,
    f64,
);

/// Quantise the whole tensor (its delta or its weights, as `make` names the encoding) at each
/// width in [`QUANT_BITS`], offering every candidate, until one is within budget or the
/// quantiser gives up.
fn quant_sweep<'a, T: Float>(
    eng: &Engine<'_, T>,
    stats: &mut TensorStats,
    make: impl Fn(u32, Vec<f32>) -> Encoding,
    norm: f64,
    (best, tried, exact_min, budget): Offers<'_, 'a>,
) -> Result<()> {
    for bits in QUANT_BITS {
        let label = make(bits, Vec::new()).name();
        let Some((centroids, widths, words)) = eng.quantise(None, bits, stats, &label)? else {
            break;
        };
        let enc = make(bits, centroids);
        let secs = vec![Section::Bytes(widths), Section::words(words)];
        let (error, xxh3) = eng.measure(&enc, &secs, norm)?;
        let c = Lossy {
            encoding: enc,
            sections: secs,
            error,
            xxh3,
        };
        if offer(best, tried, exact_min, c, budget) {
            break;
        }
    }
    Ok(())
}

/// Choose and build the encoding of one float tensor. `exact_only` forbids lossy encodings.
/// `produced` receives the bytes the decoder will produce for the chosen encoding, in order
/// (the input itself when it is exact).
pub fn encode_tensor<'a, T: Float>(
    dev: &Device,
    name: &str,
    new_bytes: &'a [u8],
    base_bytes: Option<&'a [u8]>,
    budget: f64,
    exact_only: bool,
    produced: &mut dyn FnMut(&[u8]),
) -> Result<Choice<'a>> {
    let new_h = view::<T>(new_bytes);
    let base_h = base_bytes.map(view::<T>);
    let n = new_h.len();
    let raw_size = new_bytes.len() as u64;
    let mut stats = TensorStats::default();
    stats.candidates.push(("raw".into(), raw_size, Some(0.0)));
    let lossy = !exact_only && budget > 0.0;
    let raw = |stats: TensorStats, produced: &mut dyn FnMut(&[u8])| {
        produced(new_bytes);
        Choice {
            encoding: Encoding::Raw,
            sections: vec![Section::Borrowed(new_bytes)],
            recon_xxh3: None,
            stats,
        }
    };
    if base_h.is_none() && !(lossy && n > 0) {
        return Ok(raw(stats, produced));
    }
    let (new_d, base_d) = if dev.backend().runs_kernels() {
        (
            Some(dev.upload(&new_h, "ckpt.new")?),
            match &base_h {
                Some(b) => Some(dev.upload(b, "ckpt.base")?),
                None => None,
            },
        )
    } else {
        (None, None)
    };
    let mut eng = Engine {
        dev,
        name,
        new: &new_h,
        new_bytes,
        base: base_h.as_deref(),
        host: new_d.is_none(),
        new_d,
        base_d,
        lossy,
    };
    let mut tried: Vec<(String, u64, Option<f64>)> = Vec::new();
    let mut best: Option<Lossy> = None;
    let mut exact: Option<(Masked<T>, Plan)> = None;

    if let Some(base) = eng.base {
        // Measurements: fraction changed, spread of the delta (f64), and the mask.
        // On the CPU path the zigzag deltas are kept from this pass (at most the tensor's
        // size), so the later passes do not read both tensors again.
        let m = delta::measure(base, &new_h, eng.host());
        let count = m.mask.count;
        let dnorm = m.sq.sqrt();
        stats.frac_changed = Some(if n == 0 { 0.0 } else { count as f64 / n as f64 });
        stats.delta_rms = finite(if count == 0 {
            0.0
        } else {
            (m.sq / count as f64).sqrt()
        });
        stats.delta_max = finite(m.max);
        let mut m0 = eng.masked(0.0, Some((m.mask, m.z)), &mut stats)?;
        if !lossy {
            // Lossless: the device copy of the new tensor has served (verification decodes
            // against the base and compares with the input bytes).
            eng.new_d = None;
        }
        let plan = Plan::new(&m0.mask, &m0.changed, m.rice);
        if lossy && count > 0 {
            // The lossy candidates need the memory more than the exact build needs speed:
            // drop the kept zigzag deltas (an exact winner derives them from the tensors).
            if let Changed::Host { z, .. } = &mut m0.changed {
                *z = None;
            }
        }
        for (kind, size) in plan.sizes() {
            stats
                .candidates
                .push((plan.encoding(kind, 0.0).name(), size, Some(0.0)));
        }
        let exact_min = plan.sizes().iter().map(|s| s.1).min().unwrap_or(u64::MAX);

        if lossy && count > 0 {
            let tau_delta = delta::tau_for(base, &new_h, &m0.mask, (0.9 * budget * dnorm).powi(2));
            let tau_quant = delta::tau_for(base, &new_h, &m0.mask, (0.5 * budget * dnorm).powi(2));
            if tau_delta > 0.0 {
                // Thresholded lossless delta: both value codings decode to the same tensor
                // (exact values on the thresholded mask); the smaller is built and measured.
                let mt = eng.masked(tau_delta, None, &mut stats)?;
                let pt = Plan::new(&mt.mask, &mt.changed, None);
                let opts: Vec<(Kind, u64)> = pt
                    .sizes()
                    .into_iter()
                    .filter(|s| s.0 != Kind::MaskRaw)
                    .collect();
                if let Some(&(kind, _)) = opts.iter().min_by_key(|s| s.1) {
                    let enc = pt.encoding(kind, tau_delta);
                    let secs = pt.build(kind, &mt.mask, &mt.changed);
                    let (error, xxh3) = eng.measure(&enc, &secs, dnorm)?;
                    for &(other, size) in opts.iter().filter(|s| s.0 != kind) {
                        tried.push((pt.encoding(other, tau_delta).name(), size, finite(error)));
                    }
                    let c = Lossy {
                        encoding: enc,
                        sections: secs,
                        error,
                        xxh3,
                    };
                    offer(&mut best, &mut tried, exact_min, c, budget);
                } else {
                    stats
                        .notes
                        .push("mask(tau)+delta skipped: no zigzag deltas".into());
                }
            }
            for tau in [0.0f32, tau_quant] {
                if tau > 0.0 && tau == tau_delta {
                    continue;
                }
                let mt;
                let mq = if tau == 0.0 {
                    &m0
                } else {
                    mt = eng.masked(tau, None, &mut stats)?;
                    &mt
                };
                if mq.mask.count == 0 {
                    continue;
                }
                let mplan = MaskPlan::new(&mq.mask, None);
                for bits in QUANT_BITS {
                    let label = if tau == 0.0 {
                        format!("mask+q{bits}")
                    } else {
                        format!("mask(tau)+q{bits}")
                    };
                    let Some((centroids, widths, words)) =
                        eng.quantise(Some(mq), bits, &mut stats, &label)?
                    else {
                        break;
                    };
                    let enc = Encoding::MaskQuant {
                        mask: mplan.coding,
                        tau: mq.tau,
                        count: mq.mask.count as u64,
                        bits,
                        centroids,
                    };
                    let secs = vec![
                        mplan.build(&mq.mask),
                        Section::Bytes(widths),
                        Section::words(words),
                    ];
                    let (error, xxh3) = eng.measure(&enc, &secs, dnorm)?;
                    let c = Lossy {
                        encoding: enc,
                        sections: secs,
                        error,
                        xxh3,
                    };
                    if offer(&mut best, &mut tried, exact_min, c, budget) {
                        break;
                    }
                }
            }
            if stats.frac_changed.unwrap_or(0.0) > 0.5 {
                let mk = |bits, centroids| Encoding::QuantDelta { bits, centroids };
                let sweep = (&mut best, &mut tried, exact_min, budget);
                quant_sweep(&eng, &mut stats, mk, dnorm, sweep)?;
            }
        }
        exact = Some((m0, plan));
    } else {
        // No base, with a budget: the weights themselves quantised.
        let wnorm = new_h
            .iter()
            .map(|&x| rc::widen(x) as f64 * rc::widen(x) as f64)
            .sum::<f64>()
            .sqrt();
        let mk = |bits, centroids| Encoding::QuantWeights { bits, centroids };
        let sweep = (&mut best, &mut tried, u64::MAX, budget);
        quant_sweep(&eng, &mut stats, mk, wnorm, sweep)?;
    }
    stats.candidates.extend(tried);

    // Smallest candidate below raw; exact ones are built only now, and verified by decoding
    // before being chosen. Ties go to the exact encodings, in plan order.
    let mut order: Vec<(u64, Option<Kind>)> = exact
        .as_ref()
        .map(|(_, p)| p.sizes().into_iter().map(|(k, s)| (s, Some(k))).collect())
        .unwrap_or_default();
    if let Some(b) = &best {
        order.push((b.size(), None));
    }
    order.retain(|o| o.0 < raw_size);
    order.sort_by_key(|o| o.0);
    for (_, kind) in order {
        match kind {
            Some(kind) => {
                let (m0, plan) = exact.as_ref().expect("planned");
                let enc = plan.encoding(kind, 0.0);
                let secs = plan.build(kind, &m0.mask, &m0.changed);
                let verified = match (eng.host(), kind, &m0.changed) {
                    // CPU path: the parallel check with the decoder's steps (see verify_eg).
                    (true, Kind::MaskDeltaEg, Changed::Host { base, new, .. }) => {
                        let refs: Vec<&[u8]> = secs.iter().map(|s| s.bytes()).collect();
                        plan.verify_eg(&refs, &m0.mask, base, new)
                    }
                    _ => eng.verify(&enc, &secs),
                };
                if !verified {
                    stats
                        .notes
                        .push(format!("{} failed its decode check; not used", enc.name()));
                    continue;
                }
                stats.error = 0.0;
                produced(new_bytes);
                return Ok(Choice {
                    encoding: enc,
                    sections: secs,
                    recon_xxh3: None,
                    stats,
                });
            }
            None => {
                let b = best.take().expect("a lossy candidate");
                // The file hash needs the produced bytes: decode once more, streaming.
                let mut h = Xxh3::new();
                eng.decode(&b.encoding, &b.sections, &mut |c, _| {
                    let bytes = bytemuck::cast_slice(c);
                    h.update(bytes);
                    produced(bytes);
                    Ok(())
                })?;
                if h.digest() != b.xxh3 {
                    return Err(Error::kernel(
                        dev.backend().family(),
                        "ckpt decode",
                        format!("tensor '{name}': a second decode gave different bytes"),
                    ));
                }
                stats.error = b.error;
                return Ok(Choice {
                    encoding: b.encoding,
                    sections: b.sections,
                    recon_xxh3: Some(b.xxh3),
                    stats,
                });
            }
        }
    }
    stats.error = 0.0;
    Ok(raw(stats, produced))
}
