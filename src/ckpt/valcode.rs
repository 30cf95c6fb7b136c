//! Second stage for the zigzag deltas of changed values: Exp-Golomb codes with an order `k`
//! chosen per block of [`PACK_BLOCK`] values.
//!
//! `ops::codec::delta_encode` packs each block at the bit width of its largest value, so one
//! small-magnitude weight (whose change spans many ulps) widens its whole block. Exp-Golomb
//! spends ~2 log2 bits on such an outlier and k + 1 on the common one-ulp changes. Encoding and
//! decoding of this stage run on the host; the packed form in between is exactly the one
//! `delta_encode` produces, so `delta_decode` runs on the device as before.
//!
//! Code of `z` with order `k`: let `v = z + 2^k` with `nb` bits; write `nb - 1 - k` zero bits,
//! a one bit, then the low `nb - 1` bits of `v`, into an LSB-first stream padded to a byte.

use crate::error::Result;
use crate::ops::codec::PACK_BLOCK;

use super::bits::{BitReader, SliceWriter};
use super::format::ferr;

/// Largest order tried.
pub const MAX_K: u32 = 20;

/// Words of a packed stream (see `ops::codec::Packed`): a full block of width w takes 8w words,
/// the last block `ceil(cnt * w / 32)`.
pub fn packed_words(widths: &[u8], count: usize) -> u64 {
    let mut total = 0u64;
    for (j, &w) in widths.iter().enumerate() {
        let cnt = (count - j * PACK_BLOCK).min(PACK_BLOCK) as u64;
        total += (cnt * w as u64).div_ceil(32);
    }
    total
}

/// Unpack `count` values (layout of `ops::codec::Packed`). The caller has checked
/// `words.len() == packed_words(widths, count)` and every width <= 32.
#[cfg(test)]
pub fn unpack(words: &[u32], widths: &[u8], count: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(count);
    let mut base = 0usize;
    for (j, &w) in widths.iter().enumerate() {
        let cnt = (count - j * PACK_BLOCK).min(PACK_BLOCK);
        let w = w as usize;
        for i in 0..cnt {
            if w == 0 {
                out.push(0);
                continue;
            }
            let bit = i * w;
            let (a, s) = (base + bit / 32, bit % 32);
            let mut v = (words[a] as u64) >> s;
            if s + w > 32 {
                v |= (words[a + 1] as u64) << (32 - s);
            }
            out.push((v & ((1u64 << w) - 1)) as u32);
        }
        base += (cnt * w).div_ceil(32);
    }
    out
}

/// Pack values at the per-block width of each block's largest value.
pub fn pack(z: &[u32]) -> (Vec<u32>, Vec<u8>) {
    let mut words = Vec::new();
    let mut widths = Vec::with_capacity(z.len().div_ceil(PACK_BLOCK));
    for blk in z.chunks(PACK_BLOCK) {
        let w = blk
            .iter()
            .map(|&v| 32 - v.leading_zeros())
            .max()
            .unwrap_or(0);
        widths.push(w as u8);
        let start = words.len();
        words.resize(start + (blk.len() * w as usize).div_ceil(32), 0);
        if w == 0 {
            continue;
        }
        for (i, &v) in blk.iter().enumerate() {
            let bit = i * w as usize;
            let (a, s) = (start + bit / 32, bit % 32);
            words[a] |= v << s;
            if s + w as usize > 32 {
                words[a + 1] |= v >> (32 - s);
            }
        }
    }
    (words, widths)
}

/// Bits of the code of `z` with order `k`.
#[cfg(test)]
pub fn cost(z: u32, k: u32) -> u64 {
    let v = z as u64 + (1u64 << k);
    let nb = 64 - v.leading_zeros() as u64;
    2 * (nb - 1 - k as u64) + 1 + k as u64
}

/// A block's bit width (of its largest value), its best Exp-Golomb order (the smallest on
/// ties) and the block's bits with that order, exactly as an exhaustive search over
/// `0..=MAX_K` finds them, from one pass over the block.
///
/// With `L` the bit length of `z`: for `k >= L` the code takes `k + 1` bits; for `k < L` it
/// takes `2L - 1 - k` bits, plus 2 when `z + 2^k` carries into bit `L`, which happens exactly
/// when bits `k..L` of `z` are all ones, i.e. for `s <= k < L` with `s` the bit length of
/// `z ^ (2^L - 1)`. Histograms of `L` and of `s` give every order's total.
pub fn block_stats(blk: &[u32]) -> (u32, u32, u64) {
    // Two interleaved copies of each histogram, so consecutive values do not wait on the same
    // counter.
    let mut hl = [[0u32; 33]; 2];
    let mut hs = [[0u32; 33]; 2];
    let mut add = |j: usize, z: u32| {
        let l = 32 - z.leading_zeros();
        let ones = ((1u64 << l) - 1) as u32;
        hl[j][l as usize] += 1;
        hs[j][(32 - (z ^ ones).leading_zeros()) as usize] += 1;
    };
    let mut pairs = blk.chunks_exact(2);
    for p in &mut pairs {
        add(0, p[0]);
        add(1, p[1]);
    }
    for &z in pairs.remainder() {
        add(0, z);
    }
    let hist: [u64; 33] = std::array::from_fn(|l| (hl[0][l] + hl[1][l]) as u64);
    let width = (0..33).rev().find(|&l| hist[l] > 0).unwrap_or(0) as u32;
    let total = blk.len() as u64;
    // Sums over L > k: count and sum of L; updated as k grows.
    let mut cnt_gt = total - hist[0];
    let mut sum_gt: u64 = (1..33).map(|l| l as u64 * hist[l]).sum();
    // Values that carry at order k: s <= k < L.
    let mut carries = 0i64;
    let (mut best_k, mut best) = (0u32, u64::MAX);
    for k in 0..=MAX_K as usize {
        if k > 0 {
            cnt_gt -= hist[k];
            sum_gt -= k as u64 * hist[k];
        }
        carries += (hs[0][k] + hs[1][k]) as i64 - hist[k] as i64;
        let cnt_le = total - cnt_gt;
        let bits =
            cnt_le * (k as u64 + 1) + 2 * sum_gt - (1 + k as u64) * cnt_gt + 2 * carries as u64;
        if bits < best {
            (best_k, best) = (k as u32, bits);
        }
    }
    (width, best_k, if blk.is_empty() { 0 } else { best })
}

/// Append the codes of `blk` with order `k` to `w`.
#[inline]
pub fn put_block(w: &mut SliceWriter, blk: &[u32], k: u32) {
    for &zv in blk {
        let v = zv as u64 + (1u64 << k);
        let nb = 64 - v.leading_zeros();
        let q = nb - 1 - k;
        // q zeros and a one, then the low nb-1 bits of v (at most 32).
        if q < 32 {
            w.put(1u64 << q, q + 1);
        } else {
            w.zeros(q as u64);
            w.put(1, 1);
        }
        w.put(v & ((1u64 << (nb - 1)) - 1), nb - 1);
    }
}

/// Exp-Golomb code the values: one order byte per block, and the bit stream.
#[cfg(test)]
pub fn encode(z: &[u32]) -> (Vec<u8>, Vec<u8>) {
    let plan: Vec<(u32, u32, u64)> = z.chunks(PACK_BLOCK).map(block_stats).collect();
    let ks = plan.iter().map(|p| p.1 as u8).collect();
    let bits: Vec<u64> = plan.iter().map(|p| p.2).collect();
    let stream = super::bits::emit_parallel(&bits, |j, w| {
        let blk = &z[j * PACK_BLOCK..((j + 1) * PACK_BLOCK).min(z.len())];
        put_block(w, blk, plan[j].1);
    });
    (ks, stream)
}

/// Sequential decoder of an Exp-Golomb stream: [`EgReader::read`] per value, then
/// [`EgReader::finish`]. Every inconsistency is a format error naming `ctx`.
pub struct EgReader<'a> {
    r: BitReader<'a>,
    ks: &'a [u8],
    count: usize,
    i: usize,
    ctx: &'a str,
}

impl<'a> EgReader<'a> {
    /// Check the orders and bound `count` by the stream length before anything is decoded.
    pub fn new(ks: &'a [u8], stream: &'a [u8], count: usize, ctx: &'a str) -> Result<Self> {
        let bad = |m: &str| ferr(ctx, format!("exp-golomb values: {m}"));
        if ks.len() != count.div_ceil(PACK_BLOCK) {
            return Err(bad("wrong number of block orders"));
        }
        if ks.iter().any(|&k| k as u32 > MAX_K) {
            return Err(bad("block order out of range"));
        }
        // Each value takes at least one bit: bounds `count` by the stream before allocating.
        if count as u64 > stream.len() as u64 * 8 {
            return Err(bad("stream too short"));
        }
        Ok(EgReader {
            r: BitReader::new(stream),
            ks,
            count,
            i: 0,
            ctx,
        })
    }

    /// A reader of values `start..` whose code begins at bit `pos` (the encoder's group
    /// offsets), for decoding groups in parallel; the orders were checked by [`EgReader::new`].
    pub fn at(&self, start: usize, pos: u64) -> EgReader<'a> {
        EgReader {
            r: BitReader::at(self.r.bytes(), pos),
            ks: self.ks,
            count: self.count,
            i: start,
            ctx: self.ctx,
        }
    }

    /// Bits consumed so far.
    pub fn position(&self) -> u64 {
        self.r.position()
    }

    fn bad(&self, m: &str) -> crate::error::Error {
        ferr(self.ctx, format!("exp-golomb values: {m}"))
    }

    /// The next value (the caller reads at most `count`).
    #[inline(always)]
    pub fn read(&mut self) -> Result<u32> {
        debug_assert!(self.i < self.count);
        let k = self.ks[self.i / PACK_BLOCK] as u32;
        self.i += 1;
        let p = self.r.peek();
        let q = p.trailing_zeros();
        if q + k > 32 {
            return Err(self.bad("value too large"));
        }
        // Fast path: the whole code lies in the 57 bits one peek guarantees.
        let nbits = q + k;
        let need = q + 1 + nbits;
        if need <= 57 && need as u64 <= self.r.remaining() {
            self.r.skip(need as u64);
            let low = (p >> (q + 1)) & ((1u64 << nbits) - 1);
            let z = ((1u64 << nbits) | low) - (1u64 << k);
            return u32::try_from(z).map_err(|_| self.bad("value too large"));
        }
        if q as u64 >= self.r.remaining() {
            return Err(self.bad("stream ends inside a value"));
        }
        self.r.skip(q as u64 + 1);
        if nbits as u64 > self.r.remaining() {
            return Err(self.bad("stream ends inside a value"));
        }
        let low = if nbits == 0 {
            0
        } else {
            self.r.peek() & ((1u64 << nbits) - 1)
        };
        self.r.skip(nbits as u64);
        let z = ((1u64 << nbits) | low) - (1u64 << k);
        u32::try_from(z).map_err(|_| self.bad("value too large"))
    }

    /// After all `count` values: the stream must end in the last byte, zero-padded.
    pub fn finish(&self) -> Result<()> {
        if self.r.position().div_ceil(8) != self.r.len_bytes() {
            return Err(self.bad("trailing bytes"));
        }
        if !self.r.rest_is_zero() {
            return Err(self.bad("nonzero padding"));
        }
        Ok(())
    }
}

/// Inverse of [`encode`] for `count` values; any inconsistency is a format error naming `ctx`.
pub fn decode(ks: &[u8], stream: &[u8], count: usize, ctx: &str) -> Result<Vec<u32>> {
    let mut r = EgReader::new(ks, stream, count, ctx)?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(r.read()?);
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut z: Vec<u32> = (0..1000u32).map(|i| (i * 7919) % 13).collect();
        z.extend([u32::MAX, 0, 1, 1 << 31, 65535]);
        z.extend((0..300).map(|i| i % 3));
        let (ks, s) = encode(&z);
        assert_eq!(decode(&ks, &s, z.len(), "t").unwrap(), z);
        assert!(decode(&ks, &s, z.len() - 1, "t").is_err());
        let (w, wd) = pack(&z);
        assert_eq!(w.len() as u64, packed_words(&wd, z.len()));
        assert_eq!(unpack(&w, &wd, z.len()), z);
        assert_eq!(decode(&[], &[], 0, "t").unwrap(), Vec::<u32>::new());
    }

    /// The one-pass order search finds the exhaustive search's order and size.
    #[test]
    fn block_stats_match_exhaustive_search() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut blocks: Vec<Vec<u32>> = vec![
            vec![],
            vec![0; 256],
            vec![u32::MAX; 256],
            (0..256).map(|i| (1u32 << (i % 32)) - 1).collect(),
            (0..256).map(|i| !0u32 >> (i % 32)).collect(),
            vec![(1 << 20) - 1, (1 << 21) - 1, 1 << 31, 3],
        ];
        for shift in [0u32, 4, 10, 20, 28, 31] {
            for _ in 0..40 {
                let len = 1 + (rnd() % 256) as usize;
                blocks.push(
                    (0..len)
                        .map(|_| (rnd() as u32) >> shift >> (rnd() % 8))
                        .collect(),
                );
            }
        }
        for b in &blocks {
            let want = (0..=MAX_K)
                .map(|k| (k, b.iter().map(|&v| cost(v, k)).sum::<u64>()))
                .min_by_key(|&(_, c)| c)
                .unwrap();
            let want = if b.is_empty() { (0, 0) } else { want };
            let width = b.iter().map(|&v| 32 - v.leading_zeros()).max().unwrap_or(0);
            assert_eq!(block_stats(b), (width, want.0, want.1), "{b:?}");
        }
    }
}
