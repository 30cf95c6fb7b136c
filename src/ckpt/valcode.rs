//! Second stage for the zigzag deltas of changed values: Exp-Golomb codes with an order `k`
//! chosen per block of [`codec::PACK_BLOCK`] values.
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

use super::format::ferr;

/// Largest order tried.
const MAX_K: u32 = 20;

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

fn cost(z: u32, k: u32) -> u64 {
    let v = z as u64 + (1u64 << k);
    let nb = 64 - v.leading_zeros() as u64;
    2 * (nb - 1 - k as u64) + 1 + k as u64
}

/// Exp-Golomb code the values: one order byte per block, and the bit stream.
pub fn encode(z: &[u32]) -> (Vec<u8>, Vec<u8>) {
    let mut ks = Vec::with_capacity(z.len().div_ceil(PACK_BLOCK));
    let (mut out, mut acc, mut n) = (Vec::new(), 0u128, 0u32);
    for blk in z.chunks(PACK_BLOCK) {
        let k = (0..=MAX_K)
            .min_by_key(|&k| blk.iter().map(|&v| cost(v, k)).sum::<u64>())
            .unwrap_or(0);
        ks.push(k as u8);
        for &zv in blk {
            let v = zv as u64 + (1u64 << k);
            let nb = 64 - v.leading_zeros();
            let q = nb - 1 - k;
            // q zeros and a one, then the low nb-1 bits of v: at most 33 + 33 bits.
            acc |= 1u128 << (n + q);
            n += q + 1;
            acc |= ((v & ((1u64 << (nb - 1)) - 1)) as u128) << n;
            n += nb - 1;
            while n >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                n -= 8;
            }
        }
    }
    if n > 0 {
        out.push(acc as u8);
    }
    (ks, out)
}

/// Inverse of [`encode`] for `count` values; any inconsistency is a format error naming `ctx`.
pub fn decode(ks: &[u8], stream: &[u8], count: usize, ctx: &str) -> Result<Vec<u32>> {
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
    let total = stream.len() as u64 * 8;
    let bit = |at: u64| (stream[(at / 8) as usize] >> (at % 8)) & 1;
    let mut pos = 0u64;
    let mut out = Vec::with_capacity(count);
    for (j, &k) in ks.iter().enumerate() {
        let k = k as u32;
        let cnt = (count - j * PACK_BLOCK).min(PACK_BLOCK);
        for _ in 0..cnt {
            let mut q = 0u32;
            loop {
                if pos >= total {
                    return Err(bad("stream ends inside a value"));
                }
                let b = bit(pos);
                pos += 1;
                if b == 1 {
                    break;
                }
                q += 1;
                if q + k > 32 {
                    return Err(bad("value too large"));
                }
            }
            let nbits = (q + k) as u64;
            if pos + nbits > total {
                return Err(bad("stream ends inside a value"));
            }
            let mut low = 0u64;
            for i in 0..nbits {
                low |= (bit(pos + i) as u64) << i;
            }
            pos += nbits;
            let v = (1u64 << nbits) | low;
            let z = v - (1u64 << k);
            out.push(u32::try_from(z).map_err(|_| bad("value too large"))?);
        }
    }
    if pos.div_ceil(8) != stream.len() as u64 {
        return Err(bad("trailing bytes"));
    }
    while pos < total {
        if bit(pos) != 0 {
            return Err(bad("nonzero padding"));
        }
        pos += 1;
    }
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
}
