//! Host stage of the masked delta encodings: the change mask with its measurements, the exact
//! sizes of `mask+raw`, `mask+delta` and `mask+delta-eg` computed from statistics (nothing is
//! built to be measured), and the builder of the one that is chosen.
//!
//! The changed values come from a [`Changed`] source: on the CPU path they are derived on the
//! fly from the memory-mapped tensors (no copy of either tensor is made); on a kernel executor
//! they are the device's `gather`/`delta_encode` output, downloaded. Both give the same bytes.
//!
//! Work is split into fixed chunks of elements and fixed groups of changed values, and every
//! floating-point sum is combined in chunk order, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::dtype::Float;
use crate::ops::codec::PACK_BLOCK;
use crate::reference::bitmask::changed;
use crate::reference::codec::{self as rc, bits_of, canonical, delta_zz, widen, Values};

use super::format::{Encoding, MaskCoding};
use super::maskcode::{ChunkGaps, RicePlan};
use super::valcode;

/// Elements per parallel chunk of a tensor (a multiple of 32: chunks own whole mask words).
pub const CHUNK: usize = 1 << 16;
const CHUNK_WORDS: usize = CHUNK / 32;
// The Rice statistics gathered by `measure` are per chunk of the Rice coder.
const _: () = assert!(CHUNK_WORDS == super::maskcode::CHUNK_WORDS);
/// Blocks of `PACK_BLOCK` changed values per parallel group.
const GROUP_BLOCKS: usize = 64;
/// Changed values per parallel group (its per-thread buffers are this many u32).
pub const GROUP: usize = GROUP_BLOCKS * PACK_BLOCK;

/// A change mask (layout of `ops::bitmask`) with an index for seeking to the `i`-th set bit.
pub struct Mask {
    pub words: Vec<u32>,
    pub n: usize,
    pub count: usize,
    /// Set bits before each chunk of `CHUNK_WORDS` words (one more entry than chunks).
    prefix: Vec<usize>,
}

impl Mask {
    /// Index `words` (which must have no bits set at or past `n`).
    pub fn new(words: Vec<u32>, n: usize) -> Mask {
        let counts: Vec<usize> = words
            .par_chunks(CHUNK_WORDS)
            .map(|ws| ws.iter().map(|w| w.count_ones() as usize).sum())
            .collect();
        let mut prefix = Vec::with_capacity(counts.len() + 1);
        let mut acc = 0usize;
        prefix.push(0);
        for c in counts {
            acc += c;
            prefix.push(acc);
        }
        Mask {
            words,
            n,
            count: acc,
            prefix,
        }
    }

    /// Call `f` with the positions of changed values `start .. start + len`, in order
    /// (`start + len <= count`).
    pub fn for_each(&self, start: usize, len: usize, mut f: impl FnMut(usize)) {
        if len == 0 {
            return;
        }
        debug_assert!(start + len <= self.count);
        let c = self.prefix.partition_point(|&p| p <= start) - 1;
        let mut rem = start - self.prefix[c];
        let mut w = c * CHUNK_WORDS;
        loop {
            let pc = self.words[w].count_ones() as usize;
            if rem < pc {
                break;
            }
            rem -= pc;
            w += 1;
        }
        let mut m = self.words[w];
        for _ in 0..rem {
            m &= m - 1;
        }
        let mut left = len;
        loop {
            while m != 0 {
                f(w * 32 + m.trailing_zeros() as usize);
                m &= m - 1;
                left -= 1;
                if left == 0 {
                    return;
                }
            }
            w += 1;
            m = self.words[w];
        }
    }
}

/// The change mask of `new` against `base` and the measurements the policy reports: sum of
/// squares and largest magnitude of `new - base` (f64) over the changed elements.
pub struct Measured<T: Float> {
    pub mask: Mask,
    pub sq: f64,
    pub max: f64,
    /// The changed elements' zigzag deltas (`delta_zz`, which fit the element's width), one
    /// vector per chunk of [`CHUNK`] elements; empty unless asked for.
    pub z: Vec<Vec<T::Bits>>,
    /// The mask's Rice statistics, gathered on the way (with `with_z`).
    pub rice: Option<RicePlan>,
}

/// Bit `j` set where `b[j] != x[j]` (at most 32 elements); a full word is compared as
/// fixed-size arrays, which the compiler turns into vector compares.
#[inline]
fn diff_word<B: Copy + PartialEq>(b: &[B], x: &[B]) -> u32 {
    let mut m = 0u32;
    if let (Ok(b), Ok(x)) = (<&[B; 32]>::try_from(b), <&[B; 32]>::try_from(x)) {
        for j in 0..32 {
            m |= ((b[j] != x[j]) as u32) << j;
        }
    } else {
        for (j, (bi, xi)) in b.iter().zip(x).enumerate() {
            m |= ((bi != xi) as u32) << j;
        }
    }
    m
}

/// One parallel pass over both tensors (tau = 0: an element changed when its bits differ),
/// also keeping the zigzag deltas when `with_z` (`count * size_of::<T>()` bytes), so that
/// later passes read those instead of both tensors again.
pub fn measure<T: Float>(base: &[T], new: &[T], with_z: bool) -> Measured<T> {
    assert_eq!(base.len(), new.len());
    let n = new.len();
    let width = 8 * std::mem::size_of::<T>() as u32;
    let (bb, xb): (&[T::Bits], &[T::Bits]) =
        (bytemuck::cast_slice(base), bytemuck::cast_slice(new));
    let mut words = vec![0u32; n.div_ceil(32)];
    type Part<B> = (f64, f64, Vec<B>, ChunkGaps);
    let parts: Vec<Part<T::Bits>> = words
        .par_chunks_mut(CHUNK_WORDS)
        .zip(bb.par_chunks(CHUNK).zip(xb.par_chunks(CHUNK)))
        .enumerate()
        .map(|(c, (ws, (b, x)))| {
            let (mut sq, mut mx) = (0f64, 0f64);
            let mut z = Vec::new();
            let mut gaps = ChunkGaps::default();
            for (wi, (w, (bw, xw))) in ws
                .iter_mut()
                .zip(b.chunks(32).zip(x.chunks(32)))
                .enumerate()
            {
                // The word first (branch-free, vectorisable), then the changed elements only.
                let m = diff_word(bw, xw);
                *w = m;
                let at = c * CHUNK + wi * 32;
                let mut left = m;
                while left != 0 {
                    let j = left.trailing_zeros() as usize;
                    left &= left - 1;
                    let (bv, xv) = (base[at + j], new[at + j]);
                    // Exact widening (bf16: a shift), not the crates' general conversion to f64.
                    let d = widen(xv) as f64 - widen(bv) as f64;
                    sq += d * d;
                    mx = mx.max(d.abs());
                    if with_z {
                        let zz = delta_zz(bits_of(bv), bits_of(xv), width);
                        z.push(rc::from_bits::<T::Bits>(zz));
                        gaps.push((at + j) as u64);
                    }
                }
            }
            (sq, mx, z, gaps)
        })
        .collect();
    let (mut sq, mut max) = (0f64, 0f64);
    let mut z = Vec::with_capacity(if with_z { parts.len() } else { 0 });
    let mut gaps = Vec::with_capacity(z.capacity());
    for (s, m, zc, g) in parts {
        sq += s;
        max = max.max(m);
        if with_z {
            z.push(zc);
            gaps.push(g);
        }
    }
    Measured {
        mask: Mask::new(words, n),
        sq,
        max,
        z,
        rice: with_z.then(|| RicePlan::from_chunks(gaps)),
    }
}

/// The mask of the elements that changed by more than `tau` (`reference::bitmask::changed`,
/// the rule of `ops::bitmask::sparsify`).
pub fn threshold<T: Float>(base: &[T], new: &[T], tau: f32) -> Mask {
    let n = new.len();
    let mut words = vec![0u32; n.div_ceil(32)];
    words
        .par_chunks_mut(CHUNK_WORDS)
        .zip(base.par_chunks(CHUNK).zip(new.par_chunks(CHUNK)))
        .for_each(|(ws, (b, x))| {
            for (w, (bw, xw)) in ws.iter_mut().zip(b.chunks(32).zip(x.chunks(32))) {
                let mut m = 0u32;
                for (j, (&bi, &xi)) in bw.iter().zip(xw).enumerate() {
                    if changed(bi, xi, tau) {
                        m |= 1 << j;
                    }
                }
                *w = m;
            }
        });
    Mask::new(words, n)
}

/// The changed values of a masked delta.
pub enum Changed<'a, T: Float> {
    /// Derived on the fly from the tensors (CPU path); the zigzag deltas per chunk when
    /// [`measure`] kept them.
    Host {
        base: &'a [T],
        new: &'a [T],
        z: Option<Vec<Vec<T::Bits>>>,
    },
    /// Downloaded from a device: the zigzag deltas (None when the device could not compute
    /// them) and the new values, in mask order.
    Dense {
        z: Option<Vec<T::Bits>>,
        values: Vec<T>,
    },
}

impl<T: Float> Changed<'_, T> {
    fn has_z(&self) -> bool {
        !matches!(self, Changed::Dense { z: None, .. })
    }

    /// Zigzag deltas of changed values `start .. start + len` into `out` (cleared first).
    fn z_into(&self, mask: &Mask, start: usize, len: usize, out: &mut Vec<u32>) {
        out.clear();
        match self {
            Changed::Host { z: Some(z), .. } => {
                // Copy across the per-chunk vectors, starting in the chunk holding `start`.
                let mut c = mask.prefix.partition_point(|&p| p <= start) - 1;
                let mut off = start - mask.prefix[c];
                while out.len() < len {
                    let take = (len - out.len()).min(z[c].len() - off);
                    out.extend(z[c][off..off + take].iter().map(|&v| bits_of(v)));
                    c += 1;
                    off = 0;
                }
            }
            Changed::Host { base, new, .. } => {
                let w = 8 * std::mem::size_of::<T>() as u32;
                out.resize(len, 0);
                let mut r = 0;
                mask.for_each(start, len, |i| {
                    out[r] = delta_zz(bits_of(base[i]), bits_of(new[i]), w);
                    r += 1;
                });
            }
            Changed::Dense { z, .. } => out.extend(
                z.as_ref().expect("zigzag deltas")[start..start + len]
                    .iter()
                    .map(|&v| bits_of(v)),
            ),
        }
    }

    /// New values of changed values `start .. start + len` into `out` (cleared first).
    fn vals_into(&self, mask: &Mask, start: usize, len: usize, out: &mut Vec<T>) {
        out.clear();
        match self {
            Changed::Host { new, .. } => mask.for_each(start, len, |i| out.push(new[i])),
            Changed::Dense { values, .. } => out.extend_from_slice(&values[start..start + len]),
        }
    }
}

/// The f32 deltas `new - base` of the changed elements (canonical NaN), the values k-means
/// clusters for `mask+q*` (what `delta_f32` of the gathered values gives on a device).
pub struct MaskedDeltas<'a, T> {
    pub mask: &'a Mask,
    pub base: &'a [T],
    pub new: &'a [T],
}

impl<T: Float> Values for MaskedDeltas<'_, T> {
    fn len(&self) -> usize {
        self.mask.count
    }
    fn chunk<'s>(&'s self, c: usize, buf: &'s mut Vec<f32>) -> &'s [f32] {
        buf.clear();
        let start = c * rc::VALUE_CHUNK;
        let len = rc::VALUE_CHUNK.min(self.mask.count - start);
        self.mask.for_each(start, len, |i| {
            buf.push(canonical(widen(self.new[i]) - widen(self.base[i])))
        });
        buf
    }
}

/// f32 deltas of every element (`quant_delta`), or the widened weights when `base` is None
/// (`quant_weights`).
pub struct AllValues<'a, T> {
    pub base: Option<&'a [T]>,
    pub new: &'a [T],
}

impl<T: Float> Values for AllValues<'_, T> {
    fn len(&self) -> usize {
        self.new.len()
    }
    fn chunk<'s>(&'s self, c: usize, buf: &'s mut Vec<f32>) -> &'s [f32] {
        buf.clear();
        let lo = c * rc::VALUE_CHUNK;
        let hi = (lo + rc::VALUE_CHUNK).min(self.new.len());
        match self.base {
            Some(b) => buf.extend(
                b[lo..hi]
                    .iter()
                    .zip(&self.new[lo..hi])
                    .map(|(&b, &x)| canonical(widen(x) - widen(b))),
            ),
            None => buf.extend(self.new[lo..hi].iter().map(|&x| widen(x))),
        }
        buf
    }
}

/// A section's bytes: borrowed from the input, or built. Words are stored little-endian.
pub enum Section<'a> {
    Borrowed(&'a [u8]),
    Bytes(Vec<u8>),
    Words(Vec<u32>),
}

impl Section<'_> {
    /// Little-endian u32 words as a section.
    pub fn words(mut w: Vec<u32>) -> Section<'static> {
        for x in &mut w {
            *x = x.to_le();
        }
        Section::Words(w)
    }
    pub fn bytes(&self) -> &[u8] {
        match self {
            Section::Borrowed(b) => b,
            Section::Bytes(b) => b,
            Section::Words(w) => bytemuck::cast_slice(w),
        }
    }
    pub fn len(&self) -> usize {
        self.bytes().len()
    }
}

/// How a mask is stored: the smaller of the plain words and the Rice-coded gaps.
pub struct MaskPlan {
    pub coding: MaskCoding,
    pub bytes: u64,
    rice: RicePlan,
}

impl MaskPlan {
    /// `rice`: the mask's Rice statistics when already gathered.
    pub fn new(mask: &Mask, rice: Option<RicePlan>) -> MaskPlan {
        let rice = rice.unwrap_or_else(|| RicePlan::new(&mask.words));
        let plain = 4 * mask.words.len() as u64;
        if rice.bytes < plain {
            MaskPlan {
                coding: MaskCoding::Rice { k: rice.k },
                bytes: rice.bytes,
                rice,
            }
        } else {
            MaskPlan {
                coding: MaskCoding::Bits,
                bytes: plain,
                rice,
            }
        }
    }

    pub fn build(&self, mask: &Mask) -> Section<'static> {
        match self.coding {
            MaskCoding::Rice { .. } => Section::Bytes(self.rice.encode(&mask.words)),
            MaskCoding::Bits => Section::words(mask.words.clone()),
        }
    }
}

/// The exact masked encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Named after the `Encoding` variants they build.
#[allow(clippy::enum_variant_names)]
pub enum Kind {
    MaskRaw,
    MaskDelta,
    MaskDeltaEg,
}

/// Per block of `PACK_BLOCK` zigzag deltas: bit width, Exp-Golomb order and bits.
#[derive(Clone, Copy)]
struct Block {
    width: u8,
    order: u8,
    eg_bits: u32,
}

/// Sizes of the exact masked encodings of one mask, and what building them needs.
pub struct Plan {
    pub mask: MaskPlan,
    pub count: usize,
    es: usize,
    /// None when the zigzag deltas are unavailable (only `mask+raw` is possible).
    blocks: Option<Vec<Block>>,
    packed_words: u64,
}

fn groups(count: usize) -> usize {
    count.div_ceil(GROUP)
}

impl Plan {
    /// Measure every exact encoding of `mask` with one parallel pass over the changed values
    /// (`rice`: the mask's Rice statistics when already gathered).
    pub fn new<T: Float>(mask: &Mask, ch: &Changed<T>, rice: Option<RicePlan>) -> Plan {
        let count = mask.count;
        let blocks = ch.has_z().then(|| {
            let parts: Vec<Vec<Block>> = (0..groups(count))
                .into_par_iter()
                .map_init(Vec::new, |z, g| {
                    let start = g * GROUP;
                    ch.z_into(mask, start, GROUP.min(count - start), z);
                    z.chunks(PACK_BLOCK)
                        .map(|blk| {
                            let (width, order, bits) = valcode::block_stats(blk);
                            Block {
                                width: width as u8,
                                order: order as u8,
                                eg_bits: bits as u32,
                            }
                        })
                        .collect()
                })
                .collect();
            parts.concat()
        });
        let packed_words = blocks.as_ref().map_or(0, |b| {
            let widths: Vec<u8> = b.iter().map(|b| b.width).collect();
            rc::packed_words(&widths, count)
        });
        Plan {
            mask: MaskPlan::new(mask, rice),
            count,
            es: std::mem::size_of::<T>(),
            blocks,
            packed_words,
        }
    }

    /// The possible encodings and their stored bytes, in the policy's order of preference on
    /// ties: `mask+raw`, `mask+delta`, `mask+delta-eg`.
    pub fn sizes(&self) -> Vec<(Kind, u64)> {
        let m = self.mask.bytes;
        let mut v = vec![(Kind::MaskRaw, m + (self.count * self.es) as u64)];
        if let Some(b) = &self.blocks {
            let nb = b.len() as u64;
            let eg: u64 = b.iter().map(|b| b.eg_bits as u64).sum();
            v.push((Kind::MaskDelta, m + nb + 4 * self.packed_words));
            v.push((Kind::MaskDeltaEg, m + nb + eg.div_ceil(8)));
        }
        v
    }

    pub fn encoding(&self, kind: Kind, tau: f32) -> Encoding {
        let (mask, count) = (self.mask.coding, self.count as u64);
        match kind {
            Kind::MaskRaw => Encoding::MaskRaw { mask, tau, count },
            Kind::MaskDelta => Encoding::MaskDelta { mask, tau, count },
            Kind::MaskDeltaEg => Encoding::MaskDeltaEg { mask, tau, count },
        }
    }

    /// Build the sections of `kind` (one of [`Plan::sizes`]) in parallel.
    pub fn build<T: Float>(
        &self,
        kind: Kind,
        mask: &Mask,
        ch: &Changed<T>,
    ) -> Vec<Section<'static>> {
        let count = self.count;
        let mut secs = vec![self.mask.build(mask)];
        match kind {
            Kind::MaskRaw => {
                let es = self.es;
                let mut out = vec![0u8; count * es];
                out.par_chunks_mut(GROUP * es)
                    .enumerate()
                    .for_each_init(Vec::new, |v, (g, o)| {
                        ch.vals_into(mask, g * GROUP, o.len() / es, v);
                        o.copy_from_slice(bytemuck::cast_slice(v));
                    });
                secs.push(Section::Bytes(out));
            }
            Kind::MaskDelta => {
                let blocks = self.blocks.as_ref().expect("planned");
                let widths: Vec<u8> = blocks.iter().map(|b| b.width).collect();
                let mut words = vec![0u32; self.packed_words as usize];
                // Split the words at group boundaries (block j starts at 8 * sum(widths[..j])).
                let mut slices = Vec::with_capacity(groups(count));
                let mut rest: &mut [u32] = &mut words;
                for g in 0..groups(count) {
                    let (b0, b1) = (g * GROUP_BLOCKS, ((g + 1) * GROUP_BLOCKS).min(blocks.len()));
                    let len = if b1 == blocks.len() {
                        rest.len()
                    } else {
                        8 * widths[b0..b1].iter().map(|&w| w as usize).sum::<usize>()
                    };
                    let (a, b) = std::mem::take(&mut rest).split_at_mut(len);
                    slices.push(a);
                    rest = b;
                }
                slices
                    .into_par_iter()
                    .enumerate()
                    .for_each_init(Vec::new, |z, (g, out)| {
                        let start = g * GROUP;
                        ch.z_into(mask, start, GROUP.min(count - start), z);
                        let mut off = 0usize;
                        for (j, blk) in z.chunks(PACK_BLOCK).enumerate() {
                            let w = widths[g * GROUP_BLOCKS + j] as u64;
                            if w > 0 {
                                for (i, &v) in blk.iter().enumerate() {
                                    let bit = i as u64 * w;
                                    let (a, s) = (off + (bit / 32) as usize, bit % 32);
                                    let wide = (v as u64) << s;
                                    out[a] |= wide as u32;
                                    if s + w > 32 {
                                        out[a + 1] |= (wide >> 32) as u32;
                                    }
                                }
                            }
                            off += 8 * w as usize;
                        }
                    });
                secs.push(Section::Bytes(widths));
                secs.push(Section::words(words));
            }
            Kind::MaskDeltaEg => {
                let blocks = self.blocks.as_ref().expect("planned");
                let group_bits: Vec<u64> = blocks
                    .chunks(GROUP_BLOCKS)
                    .map(|g| g.iter().map(|b| b.eg_bits as u64).sum())
                    .collect();
                let stream = super::bits::emit_parallel(&group_bits, |g, w| {
                    let start = g * GROUP;
                    let mut z = Vec::new();
                    ch.z_into(mask, start, GROUP.min(count - start), &mut z);
                    for (j, blk) in z.chunks(PACK_BLOCK).enumerate() {
                        valcode::put_block(w, blk, blocks[g * GROUP_BLOCKS + j].order as u32);
                    }
                });
                secs.push(Section::Bytes(blocks.iter().map(|b| b.order).collect()));
                secs.push(Section::Bytes(stream));
            }
        }
        secs
    }
}

impl Plan {
    /// Whether the `mask+delta-eg` sections `secs` (built from this plan) decode to `new`
    /// against `base`, checked with the decoder's own steps (the Rice and Exp-Golomb readers
    /// and `reference::codec::delta_value`) run in parallel from the group and chunk starts
    /// this plan knows: every piece must end exactly where the next one starts, and the
    /// streams' ends are checked as the decoder checks them, so the sequential decoder
    /// `decompress` runs produces these same elements. Changed elements are compared after
    /// decoding, unchanged ones must equal the base.
    pub fn verify_eg<T: Float>(&self, secs: &[&[u8]], mask: &Mask, base: &[T], new: &[T]) -> bool {
        let Some(blocks) = &self.blocks else {
            return false;
        };
        let n = mask.n;
        let mask_ok = match self.mask.coding {
            MaskCoding::Rice { .. } => self.mask.rice.verify(secs[0], &mask.words, n as u64),
            MaskCoding::Bits => {
                secs[0].len() == 4 * mask.words.len()
                    && secs[0]
                        .chunks_exact(4)
                        .zip(&mask.words)
                        .all(|(b, &w)| u32::from_le_bytes(b.try_into().expect("4")) == w)
            }
        };
        if !mask_ok
            || secs[1].len() != blocks.len()
            || secs[1].iter().zip(blocks).any(|(&k, b)| k != b.order)
        {
            return false;
        }
        let Ok(eg) = super::valcode::EgReader::new(secs[1], secs[2], self.count, "verify") else {
            return false;
        };
        let mut starts = Vec::with_capacity(groups(self.count) + 1);
        let mut acc = 0u64;
        for g in blocks.chunks(GROUP_BLOCKS) {
            starts.push(acc);
            acc += g.iter().map(|b| b.eg_bits as u64).sum::<u64>();
        }
        starts.push(acc);
        let changed_ok = (0..groups(self.count)).into_par_iter().all(|g| {
            let start = g * GROUP;
            let len = GROUP.min(self.count - start);
            let mut r = eg.at(start, starts[g]);
            let mut ok = true;
            mask.for_each(start, len, |i| {
                ok &= r
                    .read()
                    .ok()
                    .and_then(|z| rc::delta_value(base[i], z))
                    .is_some_and(|v| v.to_bits() == new[i].to_bits());
            });
            ok && r.position() == starts[g + 1]
                && (g + 1 < groups(self.count) || r.finish().is_ok())
        });
        let (bb, xb): (&[T::Bits], &[T::Bits]) =
            (bytemuck::cast_slice(base), bytemuck::cast_slice(new));
        let unchanged_ok = mask
            .words
            .par_chunks(CHUNK_WORDS)
            .zip(bb.par_chunks(CHUNK).zip(xb.par_chunks(CHUNK)))
            .all(|(ws, (b, x))| {
                ws.iter()
                    .zip(b.chunks(32).zip(x.chunks(32)))
                    .all(|(&m, (bw, xw))| diff_word(bw, xw) & !m == 0)
            });
        changed_ok && unchanged_ok && (self.count > 0 || secs[2].is_empty())
    }
}

/// Histogram of [`tau_for`]: per key, count, sum of d^2 and largest pattern.
type Hist = Vec<(u64, f64, u32)>;

/// The threshold that drops the smallest changes whose squared sum stays within `lim`
/// (`(share * budget * ||new - base||)^2`): the largest finite `v` among the changes'
/// `|new - base|` (in f32) such that the changes with `|d| <= v` have `sum(d^2) <= lim` (f64)
/// and some change is larger than `v` (an infinite one counts, a NaN, which compares with
/// nothing, does not); 0 when there is none.
///
/// Exact, without sorting or storing the deltas: a radix selection over the f32 bit patterns
/// of `|d|` (bits 20..31, then 10..20, then 0..10), one histogram pass per level. Every sum is
/// made per chunk and added in chunk order, so the result does not depend on the thread count.
pub fn tau_for<T: Float>(base: &[T], new: &[T], mask: &Mask, lim: f64) -> f32 {
    const FINITE: u32 = 0x7f80_0000; // patterns at or above: inf and NaN
    const LEVELS: [(u32, u32); 3] = [(20, 11), (10, 10), (0, 10)];
    let nchunks = mask.words.len().div_ceil(CHUNK_WORDS);
    let batch = rayon::current_num_threads().clamp(1, 16);
    // Histogram of the changes whose pattern has `prefix` above bit `shift + bits`, keyed by
    // bits `shift .. shift + bits`: (count, sum of d^2, largest pattern) per key; and the
    // number of infinite |d|.
    let hist = |shift: u32, bits: u32, prefix: u32| -> (Hist, u64) {
        let nb = 1usize << bits;
        let mut h = vec![(0u64, 0f64, 0u32); nb];
        let mut nonfinite = 0u64;
        let mut c0 = 0;
        while c0 < nchunks {
            let c1 = (c0 + batch).min(nchunks);
            let parts: Vec<(Hist, u64)> = (c0..c1)
                .into_par_iter()
                .map(|c| {
                    let mut p = vec![(0u64, 0f64, 0u32); nb];
                    let mut nf = 0u64;
                    let lo = c * CHUNK_WORDS;
                    let ws = &mask.words[lo..(lo + CHUNK_WORDS).min(mask.words.len())];
                    for (wi, &word) in ws.iter().enumerate() {
                        let mut m = word;
                        while m != 0 {
                            let i = (lo + wi) * 32 + m.trailing_zeros() as usize;
                            m &= m - 1;
                            let (b, x) = (base[i], new[i]);
                            let a = (widen(x) - widen(b)).abs().to_bits();
                            if a >= FINITE {
                                // Infinite |d| counts as a larger change; NaN (which
                                // compares with nothing) does not.
                                nf += (a == FINITE) as u64;
                                continue;
                            }
                            if a >> (shift + bits) != prefix {
                                continue;
                            }
                            let d = widen(x) as f64 - widen(b) as f64;
                            let e = &mut p[((a >> shift) & ((1 << bits) - 1)) as usize];
                            e.0 += 1;
                            e.1 += d * d;
                            e.2 = e.2.max(a);
                        }
                    }
                    (p, nf)
                })
                .collect();
            for (p, nf) in parts {
                nonfinite += nf;
                for (e, q) in h.iter_mut().zip(p) {
                    e.0 += q.0;
                    e.1 += q.1;
                    e.2 = e.2.max(q.2);
                }
            }
            c0 = c1;
        }
        (h, nonfinite)
    };
    let mut acc = 0f64;
    let mut tau: Option<u32> = None;
    let mut prefix = 0u32;
    // Whether some change is larger than every value of the bucket being refined.
    let mut larger_above = false;
    for (level, &(shift, bits)) in LEVELS.iter().enumerate() {
        let (h, nonfinite) = hist(shift, bits, prefix);
        if level == 0 {
            larger_above = nonfinite > 0;
        }
        let nonempty: Vec<usize> = (0..h.len()).filter(|&k| h[k].0 > 0).collect();
        if nonempty.is_empty() {
            break;
        }
        // The first bucket that does not fit (every bucket before it fits), else the last one
        // (not added: it is refined, or judged, below).
        let mut stop = None;
        for (idx, &k) in nonempty.iter().enumerate() {
            if acc + h[k].1 > lim {
                stop = Some(idx);
                break;
            }
            if idx + 1 == nonempty.len() {
                break;
            }
            acc += h[k].1;
        }
        let p = stop.unwrap_or(nonempty.len() - 1);
        // The largest value of the buckets that fit has a larger change (bucket p's).
        if p > 0 {
            tau = Some(h[nonempty[p - 1]].2);
        }
        let larger = larger_above || p + 1 < nonempty.len();
        if level == LEVELS.len() - 1 {
            // Bucket p is one exact value; it qualifies if it fits and something is larger.
            if stop.is_none() && larger {
                tau = Some(h[nonempty[p]].2);
            }
            break;
        }
        larger_above = larger;
        prefix = (prefix << bits) | nonempty[p] as u32;
    }
    tau.map_or(0.0, f32::from_bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn rnd(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// A bf16 pair: `frac` per mille of the elements changed by a few ulps, plus rare large
    /// changes; values are multiples of 2^-12 so every f64 sum below is exact.
    fn pair(n: usize, per_mille: u64, seed: u64) -> (Vec<bf16>, Vec<bf16>) {
        let mut r = rnd(seed);
        let base: Vec<bf16> = (0..n)
            .map(|_| bf16::from_f32(((r() % 4096) as f32 - 2048.0) / 4096.0))
            .collect();
        let new = base
            .iter()
            .map(|&b| {
                if r() % 1000 >= per_mille {
                    return b;
                }
                let step: i32 = if r() % 50 == 0 {
                    200
                } else {
                    1 + (r() % 4) as i32
                };
                let bits = b.to_bits() as i32 + if r() % 2 == 0 { step } else { -step };
                bf16::from_bits(bits as u16)
            })
            .collect();
        (base, new)
    }

    /// The sort-based threshold search this module replaced: the oracle.
    fn tau_sorted(base: &[bf16], new: &[bf16], lim: f64) -> f32 {
        let mut ad: Vec<(f32, f64)> = base
            .iter()
            .zip(new)
            .filter(|(b, x)| b.to_bits() != x.to_bits())
            .map(|(b, x)| {
                let d = x.to_f64() - b.to_f64();
                ((x.to_f32() - b.to_f32()).abs(), d * d)
            })
            .collect();
        ad.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut acc, mut tau) = (0.0, 0.0f32);
        for w in ad.windows(2) {
            acc += w[0].1;
            if acc > lim {
                break;
            }
            if w[1].0 > w[0].0 && w[0].0.is_finite() {
                tau = w[0].0;
            }
        }
        tau
    }

    #[test]
    fn mask_seek_visits_every_position_in_order() {
        let (b, x) = pair(300_000, 150, 3);
        let m = measure(&b, &x, false).mask;
        let want: Vec<usize> = (0..b.len()).filter(|&i| b[i] != x[i]).collect();
        assert_eq!(m.count, want.len());
        for start in [0, 1, 31, 9_000, want.len() - 1] {
            let mut got = Vec::new();
            m.for_each(start, want.len() - start, |i| got.push(i));
            assert_eq!(got, want[start..]);
        }
    }

    #[test]
    fn tau_matches_the_sort_based_search() {
        for (n, pm, seed) in [
            (50_000, 200, 1),
            (200_000, 30, 2),
            (10, 500, 3),
            (70_000, 999, 4),
        ] {
            let (b, x) = pair(n, pm, seed);
            let m = measure(&b, &x, false);
            for share in [0.0, 1e-6, 1e-3, 0.1, 0.5, 0.9, 1.0, 2.0] {
                let lim = share * m.sq;
                assert_eq!(
                    tau_for(&b, &x, &m.mask, lim),
                    tau_sorted(&b, &x, lim),
                    "n {n} share {share}"
                );
            }
        }
        // Non-finite changes are larger than every finite one and never a threshold.
        let b = vec![bf16::from_f32(1.0); 4];
        let x = vec![
            bf16::from_f32(1.0078125),
            bf16::from_f32(1.015625),
            bf16::INFINITY,
            bf16::NAN,
        ];
        let m = measure(&b, &x, false);
        assert_eq!(tau_for(&b, &x, &m.mask, 1.0), tau_sorted(&b, &x, 1.0));
        assert_eq!(tau_for(&b, &x, &m.mask, 1.0), 0.015625);
    }

    /// Planned sizes are the built sizes; host-derived and dense sources build the same bytes;
    /// everything decodes back through the CPU decoder.
    #[test]
    fn planned_sizes_are_built_sizes_and_decode_back() {
        for (n, pm, seed) in [(3 * GROUP + 777, 250, 5), (1000, 990, 6), (64, 0, 7)] {
            let (b, x) = pair(n, pm, seed);
            let mz = measure(&b, &x, true);
            let m = mz.mask;
            let host = Changed::Host {
                base: &b,
                new: &x,
                z: None,
            };
            let host_z = Changed::Host {
                base: &b,
                new: &x,
                z: Some(mz.z),
            };
            let mut z = Vec::new();
            host.z_into(&m, 0, m.count, &mut z);
            let mut v = Vec::new();
            host.vals_into(&m, 0, m.count, &mut v);
            let dense = Changed::Dense {
                z: Some(z.iter().map(|&v| v as u16).collect()),
                values: v,
            };
            let plan = Plan::new(&m, &host, None);
            let plan_d = Plan::new(&m, &dense, None);
            let plan_z = Plan::new(&m, &host_z, mz.rice);
            assert_eq!(plan.sizes(), plan_d.sizes());
            assert_eq!(plan.sizes(), plan_z.sizes());
            for (kind, size) in plan.sizes() {
                let secs = plan.build(kind, &m, &host);
                let built: u64 = secs.iter().map(|s| s.len() as u64).sum();
                assert_eq!(built, size, "{kind:?} n {n}");
                let secs_d = plan_d.build(kind, &m, &dense);
                let secs_z = plan_z.build(kind, &m, &host_z);
                for ((a, c), e) in secs.iter().zip(&secs_d).zip(&secs_z) {
                    assert_eq!(a.bytes(), c.bytes());
                    assert_eq!(a.bytes(), e.bytes());
                }
                let enc = plan.encoding(kind, 0.0);
                let refs: Vec<&[u8]> = secs.iter().map(|s| s.bytes()).collect();
                let mut out = Vec::new();
                super::super::hostdec::decode::<bf16>(&enc, n, &refs, Some(&b), "t", &mut |c| {
                    out.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
                assert!(out.iter().zip(&x).all(|(a, c)| a.to_bits() == c.to_bits()));
                if kind == Kind::MaskDeltaEg {
                    // The parallel check accepts these sections and rejects any change to
                    // them or to the tensor it is compared with.
                    assert!(plan_z.verify_eg(&refs, &m, &b, &x));
                    for sec in 0..3 {
                        if refs[sec].is_empty() {
                            continue;
                        }
                        for at in [0, refs[sec].len() / 2, refs[sec].len() - 1] {
                            let mut bad: Vec<Vec<u8>> = refs.iter().map(|r| r.to_vec()).collect();
                            bad[sec][at] ^= 0x10;
                            let br: Vec<&[u8]> = bad.iter().map(|v| v.as_slice()).collect();
                            assert!(
                                !plan_z.verify_eg(&br, &m, &b, &x),
                                "section {sec} byte {at}"
                            );
                        }
                    }
                    for i in [0, n / 3, n - 1] {
                        let mut y = x.clone();
                        y[i] = bf16::from_bits(y[i].to_bits() ^ 0x0100);
                        assert!(!plan_z.verify_eg(&refs, &m, &b, &y), "element {i}");
                    }
                }
            }
        }
    }
}
