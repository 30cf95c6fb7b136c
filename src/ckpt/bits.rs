//! LSB-first bit streams shared by the Rice mask coder ([`super::maskcode`]) and the
//! Exp-Golomb value coder ([`super::valcode`]): bit `b` of a stream is bit `b % 8` of byte
//! `b / 8`; a stream is zero-padded to a whole byte.
//!
//! Encoding is split into parts whose bit lengths are known in advance (from the coders'
//! size statistics), so the parts are written in parallel straight into one output buffer
//! ([`emit_parallel`]); the output is the same bytes a sequential writer would produce, for any
//! number of threads.

use rayon::prelude::*;

/// Writes one part of a stream into the bytes it owns. A part that starts inside a byte does
/// not own that byte (the previous part does): its bits there go to `head` and are OR-ed in
/// after all parts are written.
pub struct SliceWriter<'a> {
    out: &'a mut [u8],
    at: usize,
    acc: u64,
    n: u32,
    /// The first byte is shared with the previous part (the part starts mid-byte).
    shared_first: bool,
    head: u8,
    written: u64,
}

impl<'a> SliceWriter<'a> {
    fn new(out: &'a mut [u8], start_bit: u64) -> Self {
        let off = (start_bit % 8) as u32;
        SliceWriter {
            out,
            at: 0,
            acc: 0,
            n: off,
            shared_first: off != 0,
            head: 0,
            written: 0,
        }
    }

    /// Write the low 32 bits of the accumulator.
    #[inline]
    fn flush32(&mut self) {
        let b = (self.acc as u32).to_le_bytes();
        if self.shared_first {
            self.head = b[0];
            self.out[self.at..self.at + 3].copy_from_slice(&b[1..]);
            self.at += 3;
            self.shared_first = false;
        } else {
            self.out[self.at..self.at + 4].copy_from_slice(&b);
            self.at += 4;
        }
        self.acc >>= 32;
        self.n -= 32;
    }

    /// Append the low `bits` bits of `v` (`bits <= 32`; higher bits of `v` must be zero).
    #[inline]
    pub fn put(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 32 && v >> bits == 0);
        // n < 32 here, so n + bits < 64.
        self.acc |= v << self.n;
        self.n += bits;
        self.written += bits as u64;
        if self.n >= 32 {
            self.flush32();
        }
    }

    /// Append `count` zero bits.
    #[inline]
    pub fn zeros(&mut self, mut count: u64) {
        while count > 0 {
            let c = count.min(32) as u32;
            self.put(0, c);
            count -= c as u64;
        }
    }

    fn finish(mut self) -> (u8, u64) {
        while self.n > 0 {
            let b = self.acc as u8;
            if self.shared_first {
                self.head = b;
                self.shared_first = false;
            } else {
                self.out[self.at] = b;
                self.at += 1;
            }
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        assert_eq!(self.at, self.out.len(), "bit stream part ended early");
        (self.head, self.written)
    }
}

/// Write a stream made of `part_bits.len()` parts, part `i` of exactly `part_bits[i]` bits,
/// each written by `f(i, writer)` in parallel. Returns the `ceil(total / 8)` bytes.
///
/// Panics if a part writes a different number of bits than announced (a bug in the caller's
/// size computation, never a property of the data).
pub fn emit_parallel<F>(part_bits: &[u64], f: F) -> Vec<u8>
where
    F: Fn(usize, &mut SliceWriter) + Sync,
{
    let mut starts = Vec::with_capacity(part_bits.len() + 1);
    let mut acc = 0u64;
    for &b in part_bits {
        starts.push(acc);
        acc += b;
    }
    starts.push(acc);
    let total = acc.div_ceil(8) as usize;
    let mut out = vec![0u8; total];
    // Part i owns bytes [own(s_i), ceil(e_i / 8)): its last partial byte but not a first
    // partial byte. The ranges are disjoint and increasing.
    let own = |s: u64| s.div_ceil(8) as usize;
    let mut slices = Vec::with_capacity(part_bits.len());
    let mut rest: &mut [u8] = &mut out;
    let mut consumed = 0usize;
    for i in 0..part_bits.len() {
        let (lo, hi) = (own(starts[i]), own(starts[i + 1]).max(own(starts[i])));
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(lo - consumed);
        let (mine, tail) = tail.split_at_mut(hi - lo);
        slices.push(mine);
        rest = tail;
        consumed = hi;
    }
    let heads: Vec<(u8, u64)> = slices
        .into_par_iter()
        .enumerate()
        .map(|(i, s)| {
            let mut w = SliceWriter::new(s, starts[i]);
            f(i, &mut w);
            w.finish()
        })
        .collect();
    for (i, &(h, written)) in heads.iter().enumerate() {
        assert_eq!(
            written, part_bits[i],
            "bit stream part {i} has the wrong length"
        );
        if starts[i] % 8 != 0 && part_bits[i] > 0 {
            out[(starts[i] / 8) as usize] |= h;
        }
    }
    out
}

/// Reads an LSB-first bit stream. Reads past the end see zero bits; callers check
/// [`BitReader::remaining`] before consuming.
pub struct BitReader<'a> {
    b: &'a [u8],
    pos: u64,
    total: u64,
}

impl<'a> BitReader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        BitReader {
            b,
            pos: 0,
            total: b.len() as u64 * 8,
        }
    }

    /// A reader positioned at bit `pos` (at most the stream's length).
    pub fn at(b: &'a [u8], pos: u64) -> Self {
        let total = b.len() as u64 * 8;
        BitReader {
            b,
            pos: pos.min(total),
            total,
        }
    }

    /// Bits left.
    #[inline]
    pub fn remaining(&self) -> u64 {
        self.total - self.pos
    }

    /// The stream.
    pub fn bytes(&self) -> &'a [u8] {
        self.b
    }

    /// Bytes of the stream.
    #[inline]
    pub fn len_bytes(&self) -> u64 {
        self.b.len() as u64
    }

    /// Bits consumed so far.
    #[inline]
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next 64 bits (at least 57 of them from the stream when that many remain; zeros past
    /// the end).
    #[inline(always)]
    pub fn peek(&self) -> u64 {
        let i = (self.pos / 8) as usize;
        let s = (self.pos % 8) as u32;
        let w = match self.b.get(i..i + 8) {
            Some(c) => u64::from_le_bytes(c.try_into().expect("8 bytes")),
            None => {
                let mut t = [0u8; 8];
                let tail = self.b.get(i..).unwrap_or(&[]);
                t[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(t)
            }
        };
        w >> s
    }

    /// Skip `n` bits (`n <= remaining()`, the caller's check).
    #[inline]
    pub fn skip(&mut self, n: u64) {
        debug_assert!(n <= self.remaining());
        self.pos += n;
    }

    /// Whether every bit from here to the end of the stream is zero.
    pub fn rest_is_zero(&self) -> bool {
        let mut p = self.pos;
        while p < self.total {
            let take = (self.total - p).min(56);
            let r = BitReader {
                b: self.b,
                pos: p,
                total: self.total,
            };
            if r.peek() & ((1u64 << take) - 1) != 0 {
                return false;
            }
            p += take;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel writer gives the bytes of a sequential one for parts of any length,
    /// including empty parts and parts inside one byte.
    #[test]
    fn parallel_parts_match_sequential() {
        let parts: Vec<Vec<(u64, u32)>> = vec![
            vec![(1, 1), (0b101, 3)],
            vec![],
            vec![(0x3ff, 10)],
            vec![(1, 2)],
            vec![(0, 5), (0xdead_beef, 32), (7, 3)],
            vec![(1, 1)],
        ];
        let bits: Vec<u64> = parts
            .iter()
            .map(|p| p.iter().map(|&(_, b)| b as u64).sum())
            .collect();
        let par = emit_parallel(&bits, |i, w| {
            for &(v, b) in &parts[i] {
                w.put(v, b);
            }
        });
        let mut seq = vec![0u8; bits.iter().sum::<u64>().div_ceil(8) as usize];
        let mut pos = 0usize;
        for p in &parts {
            for &(v, b) in p {
                for j in 0..b as usize {
                    if v >> j & 1 == 1 {
                        seq[(pos + j) / 8] |= 1 << ((pos + j) % 8);
                    }
                }
                pos += b as usize;
            }
        }
        assert_eq!(par, seq);
        let r = BitReader::new(&par);
        assert_eq!(r.peek() & 1, 1);
        assert_eq!((r.peek() >> 1) & 0b111, 0b101);
    }
}
