//! Reference checkpoint codec (BitSnap): gather, the lossless zigzag-delta value codec, per-block
//! bit packing, 1-D k-means and dequantisation. The oracle for `cuda/ckpt/codec.cu` and the native
//! CPU path of [`crate::ops::codec`].
//!
//! Packed layout: values in blocks of [`PACK_BLOCK`]; block `j` has width `w_j` (0..=32, the bit
//! length of its largest value, or a fixed width) and starts at word `8 * sum(w[..j])`; value `k`
//! of a block occupies bits `k*w .. (k+1)*w` of the block's LSB-first stream of 32-bit words. The
//! last block takes `ceil(cnt * w / 32)` words (see [`packed_words`]).
//!
//! Delta value: `zigzag((ord(new) - ord(base)) mod 2^W)` with `W` the element width in bits and
//! `ord` the monotonic map of a sign-magnitude pattern to an unsigned integer (see [`ord`]).
//!
//! k-means sums are exact: each value is mapped to the integer `round_half_even(x * 2^E)` (see
//! [`to_fixed`]) with `E` chosen from the value range and count so that no sum can overflow, and
//! the integers are summed. Every executor therefore gets the same sums, the same centroids and
//! the same indices, bit for bit.

use rayon::prelude::*;

use crate::dtype::{DTypeKind, Float};

/// Values per width block.
pub const PACK_BLOCK: usize = 256;
/// Values per parallel chunk of the CPU path (a multiple of PACK_BLOCK and of 32).
const CHUNK: usize = 1 << 16;
/// Most values the k-means initialisation samples.
pub const KMEANS_SAMPLE: usize = 65536;

// ---- element bits ---------------------------------------------------------------------------

/// The bit pattern of a 2- or 4-byte element, widened to u32.
#[inline]
pub fn bits_of<T: bytemuck::Pod>(x: T) -> u32 {
    let b = bytemuck::bytes_of(&x);
    match b.len() {
        2 => u16::from_ne_bytes([b[0], b[1]]) as u32,
        4 => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        n => panic!("bits_of: {n}-byte element"),
    }
}

/// The element with bit pattern `v` (the low 16 bits for a 2-byte element).
#[inline]
pub fn from_bits<T: bytemuck::Pod>(v: u32) -> T {
    match std::mem::size_of::<T>() {
        2 => bytemuck::pod_read_unaligned(&(v as u16).to_ne_bytes()),
        4 => bytemuck::pod_read_unaligned(&v.to_ne_bytes()),
        n => panic!("from_bits: {n}-byte element"),
    }
}

/// Monotonic map of a `width`-bit sign-magnitude float pattern to an unsigned integer: a negative
/// pattern maps to its complement, a positive one gets the sign bit set. -0.0 and +0.0 are
/// neighbours; NaN patterns map outside the finite values (they still round-trip exactly).
#[inline]
pub fn ord(bits: u32, width: u32) -> u32 {
    let sign = 1u32 << (width - 1);
    let mask = if width == 32 {
        u32::MAX
    } else {
        (1 << width) - 1
    };
    // Branch-free: a negative pattern is flipped whole (`!bits & mask`), a positive one gets
    // its sign bit set (`bits | sign`); signs are random in weights, so a branch mispredicts.
    let neg = 0u32.wrapping_sub((bits >> (width - 1)) & 1);
    bits ^ ((neg & mask) | sign)
}

/// Inverse of [`ord`].
#[inline]
pub fn unord(o: u32, width: u32) -> u32 {
    let sign = 1u32 << (width - 1);
    let mask = if width == 32 {
        u32::MAX
    } else {
        (1 << width) - 1
    };
    // Branch-free, as in [`ord`]: top bit set -> clear it, else flip the whole pattern.
    let neg = ((o >> (width - 1)) & 1).wrapping_sub(1);
    o ^ ((neg & mask) | sign)
}

/// zigzag((ord(new) - ord(base)) mod 2^width): small changes in either direction give small
/// values; always < 2^width.
#[inline]
pub fn delta_zz(base: u32, new: u32, width: u32) -> u32 {
    let d = ord(new, width).wrapping_sub(ord(base, width));
    if width == 32 {
        let d = d as i32;
        ((d << 1) ^ (d >> 31)) as u32
    } else {
        let d = d as u16 as i16 as i32;
        (((d << 1) ^ (d >> 31)) as u32) & 0xffff
    }
}

/// Inverse of [`delta_zz`]: the new bit pattern from the base pattern and the zigzag value.
#[inline]
pub fn delta_unzz(base: u32, zz: u32, width: u32) -> u32 {
    let d = (zz >> 1) ^ 0u32.wrapping_sub(zz & 1);
    let mask = if width == 32 {
        u32::MAX
    } else {
        (1 << width) - 1
    };
    unord(ord(base, width).wrapping_add(d) & mask, width)
}

/// The element a zigzag delta `z` makes of the base element `x` ([`delta_unzz`] at the element's
/// width); None when `z` does not fit the element's width (a 16-bit element's delta is < 2^16).
#[inline]
pub fn delta_value<T: Float>(x: T, z: u32) -> Option<T> {
    let width = width_of::<T>();
    (width >= 32 || z >> width == 0).then(|| from_bits(delta_unzz(bits_of(x), z, width)))
}

fn width_of<T>() -> u32 {
    8 * std::mem::size_of::<T>() as u32
}

// ---- packing --------------------------------------------------------------------------------

/// Bit length of `v` (0 for 0).
#[inline]
pub fn bit_width(v: u32) -> u32 {
    32 - v.leading_zeros()
}

/// Number of width blocks for `count` values.
pub fn pack_blocks(count: usize) -> usize {
    count.div_ceil(PACK_BLOCK)
}

/// Word offset of every block (`widths.len() + 1` entries; the last is the total word count).
pub fn packed_offsets(widths: &[u8], count: usize) -> Vec<u64> {
    let mut off = Vec::with_capacity(widths.len() + 1);
    let mut acc = 0u64;
    for &w in widths {
        off.push(8 * acc);
        acc += w as u64;
    }
    if let Some(&wl) = widths.last() {
        let cnt = (count - (widths.len() - 1) * PACK_BLOCK) as u64;
        off.push(8 * (acc - wl as u64) + (cnt * wl as u64).div_ceil(32));
    } else {
        off.push(0);
    }
    off
}

/// Total number of words of a packed stream of `count` values with these widths.
pub fn packed_words(widths: &[u8], count: usize) -> u64 {
    *packed_offsets(widths, count).last().expect("non-empty")
}

/// Pack `count` values given by `value(i)` at per-block widths (`fixed`: every block at that
/// width; the caller guarantees the values fit). Returns (words, widths).
pub fn pack_with<F>(count: usize, fixed: Option<u32>, value: F) -> (Vec<u32>, Vec<u8>)
where
    F: Fn(usize) -> u32 + Sync,
{
    let nb = pack_blocks(count);
    let widths: Vec<u8> = (0..nb)
        .into_par_iter()
        .map(|j| {
            if let Some(w) = fixed {
                return w as u8;
            }
            let end = ((j + 1) * PACK_BLOCK).min(count);
            (j * PACK_BLOCK..end)
                .map(|i| bit_width(value(i)))
                .max()
                .unwrap_or(0) as u8
        })
        .collect();
    let offsets = packed_offsets(&widths, count);
    let mut words = vec![0u32; offsets[nb] as usize];
    // Split the words into per-block slices and fill them in parallel.
    let mut slices = Vec::with_capacity(nb);
    let mut rest: &mut [u32] = &mut words;
    for j in 0..nb {
        let len = (offsets[j + 1] - offsets[j]) as usize;
        let (a, b) = rest.split_at_mut(len);
        slices.push(a);
        rest = b;
    }
    slices.into_par_iter().enumerate().for_each(|(j, out)| {
        let w = widths[j] as u64;
        if w == 0 {
            return;
        }
        let end = ((j + 1) * PACK_BLOCK).min(count);
        for (k, i) in (j * PACK_BLOCK..end).enumerate() {
            let v = value(i) as u64;
            let bit = k as u64 * w;
            let (a, s) = ((bit / 32) as usize, bit % 32);
            let wide = v << s;
            out[a] |= wide as u32;
            if s + w > 32 {
                out[a + 1] |= (wide >> 32) as u32;
            }
        }
    });
    (words, widths)
}

/// Value `i` of a packed stream (`offsets` from [`packed_offsets`]).
#[inline]
pub fn unpack_one(words: &[u32], widths: &[u8], offsets: &[u64], i: usize) -> u32 {
    let j = i / PACK_BLOCK;
    let w = widths[j] as u32;
    if w == 0 {
        return 0;
    }
    let bit = (i % PACK_BLOCK) as u32 * w;
    let a = offsets[j] as usize + (bit / 32) as usize;
    let s = bit % 32;
    let mut v = words[a] >> s;
    if s + w > 32 {
        v |= words[a + 1] << (32 - s);
    }
    if w < 32 {
        v &= (1 << w) - 1;
    }
    v
}

/// Map every value of a packed stream through `f(i, value)`, in parallel.
pub fn unpack_map<T: Send, F>(words: &[u32], widths: &[u8], count: usize, f: F) -> Vec<T>
where
    F: Fn(usize, u32) -> T + Sync + Send,
{
    let offsets = packed_offsets(widths, count);
    (0..count)
        .into_par_iter()
        .with_min_len(CHUNK)
        .map(|i| f(i, unpack_one(words, widths, &offsets, i)))
        .collect()
}

// ---- ops --------------------------------------------------------------------------------------

/// The elements of `src` whose bit is set in `mask` (bit `i % 32` of word `i / 32`), in order.
pub fn gather<T: bytemuck::Pod + Send + Sync>(src: &[T], mask: &[u32]) -> Vec<T> {
    let parts: Vec<Vec<T>> = src
        .par_chunks(CHUNK)
        .zip(mask.par_chunks(CHUNK / 32))
        .map(|(s, m)| {
            s.iter()
                .enumerate()
                .filter(|(i, _)| m[i / 32] >> (i % 32) & 1 == 1)
                .map(|(_, &v)| v)
                .collect()
        })
        .collect();
    parts.concat()
}

/// Lossless delta encoding: (words, widths).
pub fn delta_encode<T: Float>(base: &[T], new: &[T]) -> (Vec<u32>, Vec<u8>) {
    assert_eq!(base.len(), new.len());
    let w = width_of::<T>();
    pack_with(base.len(), None, |i| {
        delta_zz(bits_of(base[i]), bits_of(new[i]), w)
    })
}

/// Inverse of [`delta_encode`]. The caller guarantees a consistent packed stream.
pub fn delta_decode<T: Float>(base: &[T], words: &[u32], widths: &[u8]) -> Vec<T> {
    let w = width_of::<T>();
    unpack_map(words, widths, base.len(), |i, zz| {
        from_bits::<T>(delta_unzz(bits_of(base[i]), zz, w))
    })
}

/// The NaN that replaces every NaN produced by arithmetic (GPUs and CPUs differ in the payload
/// an add returns): positive, quiet, no payload.
pub const CANONICAL_NAN: f32 = f32::from_bits(0x7fc0_0000);

/// Exact widening to f32 that keeps NaN payloads bit for bit (a signalling NaN stays
/// signalling), as the kernels' `dtype.cuh` does; `half`'s conversions quiet NaNs.
#[inline]
pub fn widen<T: Float>(x: T) -> f32 {
    let b = bits_of(x);
    match T::KIND {
        DTypeKind::BF16 => f32::from_bits(b << 16),
        DTypeKind::F16 if (b >> 10) & 0x1f == 0x1f => {
            f32::from_bits(((b & 0x8000) << 16) | 0x7f80_0000 | ((b & 0x3ff) << 13))
        }
        // Finite f16 (half's conversion is exact) and f32.
        _ => x.to_f32(),
    }
}

/// `v`, or [`CANONICAL_NAN`] when `v` is a NaN.
#[inline]
pub fn canonical(v: f32) -> f32 {
    if v.is_nan() {
        CANONICAL_NAN
    } else {
        v
    }
}

/// `new - base` in f32 (a NaN result is [`CANONICAL_NAN`]).
pub fn delta_f32<T: Float>(base: &[T], new: &[T]) -> Vec<f32> {
    base.par_iter()
        .zip(new.par_iter())
        .with_min_len(CHUNK)
        .map(|(&b, &x)| canonical(widen(x) - widen(b)))
        .collect()
}

/// Widen to f32 exactly (NaN payloads kept, see [`widen`]).
pub fn to_f32<T: Float>(x: &[T]) -> Vec<f32> {
    x.par_iter()
        .with_min_len(CHUNK)
        .map(|&v| widen(v))
        .collect()
}

/// Pack indices at a fixed width `bits` (each index < 2^bits, the caller's contract).
pub fn pack_indices(idx: &[u8], bits: u32) -> (Vec<u32>, Vec<u8>) {
    pack_with(idx.len(), Some(bits), |i| idx[i] as u32)
}

/// f32 -> T with round-to-nearest-even (the `half` crate's conversions; identity for f32).
#[inline]
pub fn round_to<T: Float>(v: f32) -> T {
    match T::KIND {
        DTypeKind::F16 => from_bits(half::f16::from_f32(v).to_bits() as u32),
        DTypeKind::BF16 => from_bits(half::bf16::from_f32(v).to_bits() as u32),
        _ => from_bits(v.to_bits()),
    }
}

/// `round_T(base[i] + c[idx[i]])` (f32 add) with a base, `round_T(c[idx[i]])` without; a NaN
/// sum becomes the canonical NaN of T.
pub fn dequantize<T: Float>(
    words: &[u32],
    widths: &[u8],
    count: usize,
    centroids: &[f32],
    base: Option<&[T]>,
) -> Vec<T> {
    unpack_map(words, widths, count, |i, k| {
        let c = centroids[k as usize];
        round_to::<T>(canonical(match base {
            Some(b) => widen(b[i]) + c,
            None => c,
        }))
    })
}

// ---- k-means ----------------------------------------------------------------------------------

/// Exponent `E` of the fixed-point scale for values with largest magnitude `amax` and `n`
/// values: `|round(x * 2^E)| < 2^(62 - bitlen(n))`, so a sum of `n` of them fits an i64.
pub fn fixed_scale_exp(amax: f32, n: usize) -> i32 {
    let b = amax.abs().to_bits();
    if b == 0 || n == 0 {
        return 0;
    }
    let be = (b >> 23) & 0xff;
    // amax < 2^ea.
    let ea = if be == 0 {
        bit_width(b & 0x7f_ffff) as i32 - 149
    } else {
        be as i32 - 126
    };
    let h = 64 - (n as u64).leading_zeros() as i32;
    62 - h - ea
}

/// `round_half_even(x * 2^e)` as a two's-complement i64, from the bit pattern (the kernel's
/// `to_fixed`).
#[inline]
pub fn to_fixed(x: f32, e: i32) -> i64 {
    let b = x.to_bits();
    let be = (b >> 23) & 0xff;
    let mut m = b & 0x7f_ffff;
    let ex = if be == 0 {
        -149
    } else {
        m |= 0x80_0000;
        be as i32 - 150
    };
    let s = ex + e;
    let q: u64 = if m == 0 {
        0
    } else if s >= 0 {
        (m as u64) << s
    } else {
        let r = -s;
        if r > 25 {
            0
        } else {
            let mut qq = m >> r;
            let rem = m & ((1 << r) - 1);
            let half = 1 << (r - 1);
            if rem > half || (rem == half && qq & 1 == 1) {
                qq += 1;
            }
            qq as u64
        }
    };
    if b >> 31 == 1 {
        (q as i64).wrapping_neg()
    } else {
        q as i64
    }
}

/// Index of the `i`-th sample value among `n` (evenly strided).
#[inline]
pub fn sample_index(i: usize, n: usize, s: usize) -> usize {
    ((i as u128 * n as u128) / s as u128) as usize
}

/// Number of sampled values for `n` values.
pub fn sample_len(n: usize) -> usize {
    n.min(KMEANS_SAMPLE)
}

/// Deterministic initial centroids: the `(2c + 1) / 2k` quantiles of the sorted sample.
pub fn init_centroids(mut sample: Vec<f32>, k: usize) -> Vec<f32> {
    if sample.is_empty() {
        return vec![0.0; k];
    }
    sample.sort_by(|a, b| a.total_cmp(b));
    let s = sample.len();
    (0..k)
        .map(|c| sample[((2 * c + 1) * s / (2 * k)).min(s - 1)])
        .collect()
}

/// Midpoints between consecutive sorted centroids (k - 1 of them), computed in f64 and rounded
/// to f32. A value goes to the number of midpoints strictly below it, so a value exactly on a
/// midpoint goes to the lower centroid, and equal centroids get values only at the lowest index.
pub fn midpoints(c: &[f32]) -> Vec<f32> {
    c.windows(2)
        .map(|w| ((w[0] as f64 + w[1] as f64) * 0.5) as f32)
        .collect()
}

/// The centroid index of `x` (number of midpoints `< x`).
#[inline]
pub fn assign(mids: &[f32], x: f32) -> u8 {
    mids.partition_point(|&m| m < x) as u8
}

/// New centroids from exact fixed-point sums and counts (empty clusters keep theirs), sorted,
/// and the largest movement of a centroid.
pub fn update_centroids(old: &[f32], sums: &[i64], counts: &[u64], e: i32) -> (Vec<f32>, f32) {
    let scale = f64::from_bits(((1023 - e) as u64) << 52); // 2^-e
    let mut new: Vec<f32> = old
        .iter()
        .zip(sums.iter().zip(counts))
        .map(|(&o, (&s, &n))| {
            if n == 0 {
                o
            } else {
                ((s as f64 / n as f64) * scale) as f32
            }
        })
        .collect();
    // Movement per centroid index before re-sorting (1-D k-means keeps the order except where an
    // empty cluster stays behind).
    let moved = old
        .iter()
        .zip(&new)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    new.sort_by(|a, b| a.total_cmp(b));
    (new, moved)
}

/// f32 values read chunk by chunk: k-means over values that are never materialised whole
/// (the checkpoint codec derives them from memory-mapped tensors on the fly). Chunk `c` holds
/// values `c * VALUE_CHUNK .. min((c + 1) * VALUE_CHUNK, len)`.
pub trait Values: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Chunk `c`'s values: a slice of `self`, or written into `buf` (cleared first).
    fn chunk<'s>(&'s self, c: usize, buf: &'s mut Vec<f32>) -> &'s [f32];
}

/// Values per chunk of a [`Values`] source (also the CPU path's parallel chunk).
pub const VALUE_CHUNK: usize = CHUNK;

impl Values for [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn chunk<'s>(&'s self, c: usize, _: &'s mut Vec<f32>) -> &'s [f32] {
        &self[c * CHUNK..((c + 1) * CHUNK).min(<[f32]>::len(self))]
    }
}

fn chunks<V: Values + ?Sized>(v: &V) -> usize {
    v.len().div_ceil(CHUNK)
}

/// Exact per-centroid fixed-point sums and counts of `values` under `mids`.
fn sums_counts<V: Values + ?Sized>(
    values: &V,
    mids: &[f32],
    k: usize,
    e: i32,
) -> (Vec<i64>, Vec<u64>) {
    (0..chunks(values))
        .into_par_iter()
        .map_init(Vec::new, |buf, c| {
            let mut s = vec![0i64; k];
            let mut n = vec![0u64; k];
            for &x in values.chunk(c, buf) {
                let c = assign(mids, x) as usize;
                s[c] = s[c].wrapping_add(to_fixed(x, e));
                n[c] += 1;
            }
            (s, n)
        })
        .reduce(
            || (vec![0i64; k], vec![0u64; k]),
            |(mut s, mut n), (s2, n2)| {
                for c in 0..k {
                    s[c] = s[c].wrapping_add(s2[c]);
                    n[c] += n2[c];
                }
                (s, n)
            },
        )
}

/// Minimum, maximum (of the finite values) and number of non-finite values.
pub fn min_max(values: &[f32]) -> (f32, f32, usize) {
    min_max_of(values)
}

/// [`min_max`] of a [`Values`] source.
pub fn min_max_of<V: Values + ?Sized>(values: &V) -> (f32, f32, usize) {
    (0..chunks(values))
        .into_par_iter()
        .map_init(Vec::new, |buf, c| {
            values.chunk(c, buf).iter().fold(
                (f32::INFINITY, f32::NEG_INFINITY, 0),
                |(lo, hi, bad), &v| {
                    if v.is_finite() {
                        (lo.min(v), hi.max(v), bad)
                    } else {
                        (lo, hi, bad + 1)
                    }
                },
            )
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY, 0),
            |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 + b.2),
        )
}

/// The stopping threshold on centroid movement.
pub fn movement_threshold(tol: f32, lo: f32, hi: f32) -> f32 {
    if hi >= lo {
        (tol as f64 * (hi as f64 - lo as f64)) as f32
    } else {
        0.0
    }
}

/// The initialisation sample: values `sample_index(i, n, s)` for `i < s`, in order.
fn sample_of<V: Values + ?Sized>(values: &V, n: usize, s: usize) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = (0..chunks(values))
        .into_par_iter()
        .map_init(Vec::new, |buf, c| {
            let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
            let ch = values.chunk(c, buf);
            // The first i with sample_index(i) >= lo is ceil(lo * s / n).
            let mut i = ((lo as u128 * s as u128).div_ceil(n as u128)) as usize;
            let mut out = Vec::new();
            while i < s {
                let at = sample_index(i, n, s);
                if at >= hi {
                    break;
                }
                out.push(ch[at - lo]);
                i += 1;
            }
            out
        })
        .collect();
    parts.concat()
}

/// The centroids and iteration count of 1-D k-means over a [`Values`] source of finite values
/// (`k` a power of two up to 256): exactly what [`kmeans`] computes for the same values.
pub fn kmeans_centroids<V: Values + ?Sized>(
    values: &V,
    k: usize,
    max_iters: u32,
    tol: f32,
) -> (Vec<f32>, u32) {
    let n = values.len();
    if n == 0 {
        return (vec![0.0; k], 0);
    }
    let (lo, hi, _) = min_max_of(values);
    let e = fixed_scale_exp(lo.abs().max(hi.abs()), n);
    let thr = movement_threshold(tol, lo, hi);
    let s = sample_len(n);
    let mut c = init_centroids(sample_of(values, n, s), k);
    let mut iters = 0;
    while iters < max_iters {
        let (sums, counts) = sums_counts(values, &midpoints(&c), k, e);
        let (nc, moved) = update_centroids(&c, &sums, &counts, e);
        c = nc;
        iters += 1;
        if moved <= thr {
            break;
        }
    }
    (c, iters)
}

/// The packed words of every value's centroid index at the fixed width `bits` (the layout of
/// [`pack_indices`] of the indices [`kmeans`] assigns), without materialising the indices.
/// `centroids.len() <= 2^bits`.
pub fn pack_assigned<V: Values + ?Sized>(values: &V, centroids: &[f32], bits: u32) -> Vec<u32> {
    let n = values.len();
    let widths = vec![bits as u8; pack_blocks(n)];
    let mut words = vec![0u32; packed_words(&widths, n) as usize];
    let mids = midpoints(centroids);
    // A chunk is whole blocks of fixed width: one contiguous run of CHUNK * bits bits.
    let per = CHUNK * bits as usize / 32;
    if per == 0 {
        return words;
    }
    words
        .par_chunks_mut(per)
        .enumerate()
        .for_each_init(Vec::new, |buf, (c, out)| {
            let w = bits as u64;
            for (i, &x) in values.chunk(c, buf).iter().enumerate() {
                let v = assign(&mids, x) as u64;
                let bit = i as u64 * w;
                let (a, s) = ((bit / 32) as usize, bit % 32);
                let wide = v << s;
                out[a] |= wide as u32;
                if s + w > 32 {
                    out[a + 1] |= (wide >> 32) as u32;
                }
            }
        });
    words
}

/// 1-D k-means of finite `values` with `k` centroids (a power of two up to 256):
/// (sorted centroids, indices, iterations). The op validates the inputs.
pub fn kmeans(values: &[f32], k: usize, max_iters: u32, tol: f32) -> (Vec<f32>, Vec<u8>, u32) {
    let (c, iters) = kmeans_centroids(values, k, max_iters, tol);
    if values.is_empty() {
        return (c, Vec::new(), iters);
    }
    let mids = midpoints(&c);
    let idx = values
        .par_iter()
        .with_min_len(CHUNK)
        .map(|&x| assign(&mids, x))
        .collect();
    (c, idx, iters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn ord_is_monotonic_and_invertible() {
        let vals = [-3.0f32, -1.0, -1e-30, -0.0, 0.0, 1e-30, 1.0, 3.0];
        let o: Vec<u32> = vals.iter().map(|v| ord(v.to_bits(), 32)).collect();
        assert!(o.windows(2).all(|w| w[0] < w[1]), "{o:?}");
        for v in vals {
            assert_eq!(unord(ord(v.to_bits(), 32), 32), v.to_bits());
        }
        for b in 0..=u16::MAX as u32 {
            assert_eq!(unord(ord(b, 16), 16), b);
        }
        let h: Vec<u32> = [-2.0f32, -0.0, 0.0, 2.0]
            .iter()
            .map(|&v| ord(bf16::from_f32(v).to_bits() as u32, 16))
            .collect();
        assert!(h.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn zigzag_of_ulp_steps() {
        let one = 1.0f32.to_bits();
        assert_eq!(delta_zz(one, one, 32), 0);
        assert_eq!(delta_zz(one, one + 1, 32), 2);
        assert_eq!(delta_zz(one, one - 1, 32), 1);
        // -0.0 -> +0.0 is one step up.
        assert_eq!(delta_zz(0x8000_0000, 0, 32), 2);
        // Extreme 16-bit and 32-bit differences wrap and still invert.
        for (b, x) in [
            (0u32, 0xffffu32),
            (0xffff, 0),
            (0x7c00, 0xfc00),
            (0x1234, 0x8765),
        ] {
            let z = delta_zz(b, x, 16);
            assert!(z <= 0xffff);
            assert_eq!(delta_unzz(b, z, 16), x);
        }
        for (b, x) in [(0u32, u32::MAX), (u32::MAX, 0), (0x7f80_0000, 0xff80_0000)] {
            assert_eq!(delta_unzz(b, delta_zz(b, x, 32), 32), x);
        }
    }

    #[test]
    fn delta_value_inverts_and_rejects_wide_deltas() {
        let (b, x) = (bf16::from_f32(1.5), bf16::from_f32(-0.25));
        let z = delta_zz(b.to_bits() as u32, x.to_bits() as u32, 16);
        assert_eq!(delta_value(b, z).map(|v| v.to_bits()), Some(x.to_bits()));
        assert_eq!(delta_value(b, 0).map(|v| v.to_bits()), Some(b.to_bits()));
        // A 16-bit element's delta is below 2^16; a 32-bit element takes any u32.
        assert!(delta_value(f16::from_f32(1.0), 0x1_0000).is_none());
        assert!(delta_value(b, u32::MAX).is_none());
        let y = f32::from_bits(delta_unzz(1.0f32.to_bits(), u32::MAX, 32));
        assert_eq!(
            delta_value(1.0f32, u32::MAX).map(f32::to_bits),
            Some(y.to_bits())
        );
    }

    #[test]
    fn pack_hand_computed() {
        // Widths 2 (values 1, 2, 3): bits 01 10 11 -> 0b111001 = 57.
        let (w, widths) = pack_with(3, None, |i| [1u32, 2, 3][i]);
        assert_eq!(widths, vec![2]);
        assert_eq!(w, vec![57]);
        // Two blocks: first all zero (width 0, no words), second one value 5 (width 3).
        let (w, widths) = pack_with(257, None, |i| if i == 256 { 5 } else { 0 });
        assert_eq!(widths, vec![0, 3]);
        assert_eq!(w, vec![5]);
        // A full block at width 32 takes 256 words; the offsets follow 8 * widths.
        let (w, widths) = pack_with(300, None, |i| if i == 0 { u32::MAX } else { i as u32 });
        assert_eq!(widths, vec![32, 9]);
        assert_eq!(w.len(), 256 + (44 * 9usize).div_ceil(32));
        let off = packed_offsets(&widths, 300);
        for i in 0..300 {
            let want = if i == 0 { u32::MAX } else { i as u32 };
            assert_eq!(unpack_one(&w, &widths, &off, i), want);
        }
    }

    #[test]
    fn delta_round_trip_with_specials() {
        let base = [1.0f32, -2.0, 0.0, f32::NAN, f32::INFINITY, 3.0, -0.0];
        let new = [
            f32::from_bits(1.0f32.to_bits() + 3),
            -2.0,
            -0.0,
            f32::from_bits(0x7fc0_1234),
            f32::NEG_INFINITY,
            -3.0,
            f32::MIN_POSITIVE,
        ];
        let (w, widths) = delta_encode(&base, &new);
        let back = delta_decode(&base, &w, &widths);
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            new.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rne_helpers_match_half() {
        // The kernel ports half's software conversions; spot-check the edge cases here too.
        for v in [
            1.0f32 + f32::EPSILON * 64.0, // a bf16 tie
            f32::from_bits(0x3f80_8000),  // bf16 tie, round to even (down)
            f32::from_bits(0x3f81_8000),  // bf16 tie, round to even (up)
            65520.0,                      // f16 overflow to inf
            5.9604645e-8,                 // f16 smallest subnormal
            2.9802322e-8,                 // half of it: tie to zero
            f32::MAX,
            f32::from_bits(0x7f80_0001), // signalling NaN
            -0.0,
        ] {
            let b: bf16 = round_to(v);
            assert_eq!(b.to_bits(), bf16::from_f32(v).to_bits());
            let h: f16 = round_to(v);
            assert_eq!(h.to_bits(), f16::from_f32(v).to_bits());
        }
    }

    #[test]
    fn fixed_point_is_exact_for_representable_values() {
        let e = fixed_scale_exp(4.0, 1000);
        assert_eq!(to_fixed(1.0, e), 1i64 << e);
        assert_eq!(to_fixed(-1.5, e), -(3i64 << (e - 1)));
        assert_eq!(to_fixed(0.0, e), 0);
        assert!(to_fixed(3.999_999_8, e) < 1i64 << (62 - 10));
        // Round half to even below the grid.
        assert_eq!(to_fixed(f32::from_bits(1), 149), 1);
        assert_eq!(to_fixed(f32::from_bits(3), 148), 2); // 1.5 -> 2
        assert_eq!(to_fixed(f32::from_bits(5), 148), 2); // 2.5 -> 2
    }

    #[test]
    fn kmeans_two_separated_clusters() {
        let mut v = vec![];
        for i in 0..100 {
            v.push(-10.0 + (i % 5) as f32 * 0.1);
            v.push(10.0 + (i % 3) as f32 * 0.5);
        }
        let (c, idx, it) = kmeans(&v, 4, 50, 0.0);
        assert!(it >= 1);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
        // Every value goes to a centroid on its own side.
        for (x, &k) in v.iter().zip(&idx) {
            assert_eq!(*x > 0.0, c[k as usize] > 0.0, "{x} -> {}", c[k as usize]);
        }
        // Constant input: all centroids equal, every index 0.
        let (c, idx, _) = kmeans(&[2.5; 10], 4, 10, 1e-4);
        assert_eq!(c, vec![2.5; 4]);
        assert!(idx.iter().all(|&i| i == 0));
    }

    /// A source that derives its values on the fly (as the checkpoint codec's do) gives the
    /// centroids, iterations and packed indices of k-means over the materialised values.
    #[test]
    fn kmeans_over_a_chunked_source_matches_the_slice() {
        struct Derived(usize);
        impl Values for Derived {
            fn len(&self) -> usize {
                self.0
            }
            fn chunk<'s>(&'s self, c: usize, buf: &'s mut Vec<f32>) -> &'s [f32] {
                buf.clear();
                let hi = ((c + 1) * VALUE_CHUNK).min(self.0);
                buf.extend((c * VALUE_CHUNK..hi).map(val));
                buf
            }
        }
        fn val(i: usize) -> f32 {
            let h = (i as u32).wrapping_mul(2_654_435_761);
            ((h >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * if i % 7 == 0 { 8.0 } else { 1.0 }
        }
        for n in [0usize, 5, 70_000, 3 * VALUE_CHUNK + 1234] {
            let v: Vec<f32> = (0..n).map(val).collect();
            for bits in [2u32, 3, 8] {
                let (c, idx, it) = kmeans(&v, 1 << bits, 25, 1e-4);
                let (c2, it2) = kmeans_centroids(&Derived(n), 1 << bits, 25, 1e-4);
                assert_eq!((c.clone(), it), (c2, it2), "n {n} bits {bits}");
                let (words, _) = pack_indices(&idx, bits);
                assert_eq!(
                    pack_assigned(&Derived(n), &c, bits),
                    words,
                    "n {n} bits {bits}"
                );
            }
        }
    }
}
