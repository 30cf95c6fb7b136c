//! Reference bitmask sparsification (BitSnap's delta stage).
//!
//! Mask layout: bit `i % 32` of word `i / 32` is set where element `i` changed (LSB first); bits
//! past the last element are zero. Values: the new values of the changed elements, in order.

use rayon::prelude::*;

use crate::dtype::Float;

/// Elements per parallel chunk (a multiple of 32 so chunks own whole mask words).
const CHUNK: usize = 1 << 16;

/// Whether `x` counts as changed from `b` for threshold `tau` (see [`sparsify`]).
#[inline]
pub fn changed<T: Float>(b: T, x: T, tau: f32) -> bool {
    if b.to_bits() == x.to_bits() {
        return false;
    }
    // The difference is taken in f32, as the kernels do, so the decision is bit-identical.
    // A NaN difference compares false, so a change to or from NaN is always kept.
    !(tau > 0.0 && (x.to_f32() - b.to_f32()).abs() <= tau)
}

/// Number of mask words for `n` elements.
pub fn mask_words(n: usize) -> usize {
    n.div_ceil(32)
}

/// Mask and packed changed values of `new` against `base`. `base.len() == new.len()` is the
/// caller's contract (the op validates it).
pub fn sparsify<T: Float>(base: &[T], new: &[T], tau: f32) -> (Vec<u32>, Vec<T>) {
    assert_eq!(base.len(), new.len());
    let parts: Vec<(Vec<u32>, Vec<T>)> = base
        .par_chunks(CHUNK)
        .zip(new.par_chunks(CHUNK))
        .map(|(b, x)| {
            let mut mask = vec![0u32; mask_words(b.len())];
            let mut vals = Vec::new();
            for (i, (&bi, &xi)) in b.iter().zip(x).enumerate() {
                if changed(bi, xi, tau) {
                    mask[i / 32] |= 1 << (i % 32);
                    vals.push(xi);
                }
            }
            (mask, vals)
        })
        .collect();
    let mut mask = Vec::with_capacity(mask_words(base.len()));
    let mut values = Vec::with_capacity(parts.iter().map(|p| p.1.len()).sum());
    for (m, v) in parts {
        mask.extend_from_slice(&m);
        values.extend_from_slice(&v);
    }
    (mask, values)
}

/// Number of set bits among the first `n` bits of `mask`.
pub fn count(mask: &[u32], n: usize) -> u64 {
    mask.par_iter()
        .enumerate()
        .map(|(w, &m)| {
            let valid = n.saturating_sub(w * 32).min(32);
            let m = if valid == 32 {
                m
            } else {
                m & ((1u32 << valid) - 1)
            };
            m.count_ones() as u64
        })
        .sum()
}

/// Rebuild the tensor from `base`, `mask` and `values`. The caller guarantees
/// `mask.len() == mask_words(base.len())` and `values.len() == count(mask, base.len())`.
pub fn densify<T: Float>(base: &[T], mask: &[u32], values: &[T]) -> Vec<T> {
    let words_per_chunk = CHUNK / 32;
    // Offsets of each chunk's first value.
    let counts: Vec<usize> = mask
        .par_chunks(words_per_chunk)
        .map(|ws| ws.iter().map(|w| w.count_ones() as usize).sum())
        .collect();
    let mut offsets = Vec::with_capacity(counts.len());
    let mut acc = 0usize;
    for c in &counts {
        offsets.push(acc);
        acc += c;
    }
    let mut out = base.to_vec();
    out.par_chunks_mut(CHUNK)
        .zip(mask.par_chunks(words_per_chunk))
        .zip(offsets)
        .for_each(|((o, ws), mut src)| {
            for (i, slot) in o.iter_mut().enumerate() {
                if ws[i / 32] >> (i % 32) & 1 == 1 {
                    *slot = values[src];
                    src += 1;
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn hand_computed_case() {
        let base = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        let new = [1.0f32, 2.5, 3.0, -4.0, 5.0];
        let (mask, vals) = sparsify(&base, &new, 0.0);
        assert_eq!(mask, vec![0b01010]);
        assert_eq!(vals, vec![2.5, -4.0]);
        assert_eq!(densify(&base, &mask, &vals), new.to_vec());
        assert_eq!(count(&mask, 5), 2);
    }

    #[test]
    fn nan_and_negative_zero_are_changes_at_tau_zero() {
        let base = [0.0f32, f32::NAN, 1.0];
        let new = [-0.0f32, f32::from_bits(0x7fc0_0001), 1.0];
        let (mask, vals) = sparsify(&base, &new, 0.0);
        assert_eq!(mask, vec![0b011]);
        let back = densify(&base, &mask, &vals);
        let bits: Vec<u32> = back.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, new.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn tau_drops_small_changes_but_keeps_nan() {
        let base = [
            bf16::from_f32(1.0),
            bf16::from_f32(1.0),
            bf16::from_f32(1.0),
        ];
        let new = [bf16::from_f32(1.0078125), bf16::from_f32(2.0), bf16::NAN];
        let (mask, vals) = sparsify(&base, &new, 0.01);
        assert_eq!(mask, vec![0b110]);
        assert_eq!(vals.len(), 2);
        let back = densify(&base, &mask, &vals);
        assert_eq!(back[0], base[0]);
        assert_eq!(back[1], new[1]);
        assert!(back[2].is_nan());
    }

    #[test]
    fn chunk_boundaries() {
        let n = CHUNK * 2 + 77;
        let base: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let new: Vec<f32> = (0..n)
            .map(|i| {
                if i % 7 == 0 {
                    -(i as f32) - 1.0
                } else {
                    i as f32
                }
            })
            .collect();
        let (mask, vals) = sparsify(&base, &new, 0.0);
        assert_eq!(mask.len(), mask_words(n));
        assert_eq!(vals.len(), n.div_ceil(7));
        assert_eq!(densify(&base, &mask, &vals), new);
    }
}
