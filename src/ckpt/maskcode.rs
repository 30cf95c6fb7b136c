//! Second stage for the change mask: the positions of the set bits, as gaps
//! (`pos[i] - pos[i-1] - 1`, the first gap is `pos[0]`), Golomb-Rice coded.
//!
//! Each gap `g` is written as `q = g >> k` zero bits, a one bit, then the `k` low bits of `g`,
//! into an LSB-first bit stream padded with zero bits to a whole byte. For independent changes
//! with probability p this costs close to the entropy `H(p) / p` bits per changed element,
//! against `1 / p` for the plain bitmask: 0.83 vs 1 bit per element at p = 0.23, 0.15 vs 1 at
//! p = 0.02. The policy stores whichever of the two is smaller.

use crate::error::Result;

use super::format::ferr;

/// Bytes of the Rice stream for the mask's set bits with parameter `k`, for every `k` in 0..32.
fn sizes(mask: &[u32]) -> [u64; 32] {
    let mut bits = [0u64; 32];
    let mut prev: i64 = -1;
    for (w, &word) in mask.iter().enumerate() {
        let mut m = word;
        while m != 0 {
            let pos = (w * 32 + m.trailing_zeros() as usize) as i64;
            m &= m - 1;
            let g = (pos - prev - 1) as u64;
            prev = pos;
            for (k, b) in bits.iter_mut().enumerate() {
                *b += (g >> k) + 1 + k as u64;
            }
        }
    }
    bits.map(|b| b.div_ceil(8))
}

/// The best Rice parameter and its stream size in bytes.
pub fn best_k(mask: &[u32]) -> (u32, u64) {
    let s = sizes(mask);
    let (k, b) = s
        .iter()
        .enumerate()
        .min_by_key(|&(_, b)| *b)
        .expect("32 candidates");
    (k as u32, *b)
}

struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, v: u64, bits: u32) {
        // bits <= 32 here, so acc never overflows (n < 8 after flush).
        self.acc |= v << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }
}

/// Rice-code the set bits of `mask` with parameter `k` (< 32).
pub fn encode(mask: &[u32], k: u32) -> Vec<u8> {
    let mut w = BitWriter {
        out: Vec::new(),
        acc: 0,
        n: 0,
    };
    let mut prev: i64 = -1;
    for (wi, &word) in mask.iter().enumerate() {
        let mut m = word;
        while m != 0 {
            let pos = (wi * 32 + m.trailing_zeros() as usize) as i64;
            m &= m - 1;
            let g = (pos - prev - 1) as u64;
            prev = pos;
            let mut q = g >> k;
            while q >= 32 {
                w.put(0, 32);
                q -= 32;
            }
            w.put(1 << q, q as u32 + 1);
            if k > 0 {
                w.put(g & ((1u64 << k) - 1), k);
            }
        }
    }
    if w.n > 0 {
        w.out.push(w.acc as u8);
    }
    w.out
}

/// Decode a Rice stream into a mask of `ceil(n / 32)` words with exactly `count` set bits below
/// `n`. Any inconsistency (a position past `n`, too few or too many positions, nonzero padding,
/// trailing bytes) is a format error naming `ctx`.
pub fn decode(bytes: &[u8], k: u32, n: u64, count: u64, ctx: &str) -> Result<Vec<u32>> {
    let bad = |msg: &str| ferr(ctx, format!("rice-coded mask: {msg}"));
    if k >= 32 {
        return Err(bad("parameter k >= 32"));
    }
    if count > n {
        return Err(bad("more changed elements than elements"));
    }
    // Every position costs at least k + 1 bits: bounds count by the stream length.
    if count.saturating_mul(k as u64 + 1) > (bytes.len() as u64).saturating_mul(8) {
        return Err(bad("stream too short for the number of changed elements"));
    }
    let words = usize::try_from(n.div_ceil(32)).map_err(|_| bad("too many elements"))?;
    let mut mask = vec![0u32; words];
    let total_bits = bytes.len() as u64 * 8;
    let mut bitpos = 0u64;
    let bit = |at: u64| -> u64 { ((bytes[(at / 8) as usize] >> (at % 8)) & 1) as u64 };
    let mut prev: i64 = -1;
    for _ in 0..count {
        let mut q = 0u64;
        loop {
            if bitpos >= total_bits {
                return Err(bad("stream ends inside a gap"));
            }
            if bit(bitpos) == 1 {
                bitpos += 1;
                break;
            }
            bitpos += 1;
            q += 1;
            if q > n {
                return Err(bad("gap longer than the tensor"));
            }
        }
        if bitpos + k as u64 > total_bits {
            return Err(bad("stream ends inside a gap"));
        }
        let mut r = 0u64;
        for i in 0..k as u64 {
            r |= bit(bitpos + i) << i;
        }
        bitpos += k as u64;
        let g = (q << k) | r;
        let pos = (prev as u64)
            .wrapping_add(1)
            .checked_add(g)
            .filter(|&p| p < n)
            .ok_or_else(|| bad("position past the last element"))?;
        mask[(pos / 32) as usize] |= 1 << (pos % 32);
        prev = pos as i64;
    }
    if bitpos.div_ceil(8) != bytes.len() as u64 {
        return Err(bad("trailing bytes after the last position"));
    }
    while bitpos < total_bits {
        if bit(bitpos) != 0 {
            return Err(bad("nonzero padding"));
        }
        bitpos += 1;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for &(n, every) in &[
            (0u64, 1u64),
            (1, 1),
            (100, 3),
            (1000, 1),
            (5000, 97),
            (70, 70),
        ] {
            let mut mask = vec![0u32; n.div_ceil(32) as usize];
            let mut count = 0;
            for i in (0..n).step_by(every as usize) {
                mask[(i / 32) as usize] |= 1 << (i % 32);
                count += 1;
            }
            for k in [0u32, 1, 3, 7, 31] {
                let e = encode(&mask, k);
                assert_eq!(decode(&e, k, n, count, "t").unwrap(), mask, "n {n} k {k}");
                if count > 0 {
                    assert!(decode(&e, k, n, count - 1, "t").is_err());
                }
                assert!(decode(&e, k, n, count + 1, "t").is_err());
            }
            let (k, b) = best_k(&mask);
            assert_eq!(encode(&mask, k).len() as u64, b);
        }
    }
}
