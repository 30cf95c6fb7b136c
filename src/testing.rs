//! What the tests (`tests/`), the benches (`benches/`, [`crate::bench`]) and `tessera verify`
//! ([`crate::verify`]) share: the seeded generator and the random-input generators, the one
//! relative-error measure ([`rel_l2`]), the tolerances of ARCHITECTURE §5 ([`tol`]) and the lists
//! of executors they run on ([`test_devices`], [`executors`]).
//!
//! The per-family problems (generate -> reference -> run -> compare) live in the family's
//! `verify` module (e.g. [`crate::verify::attention::Problem`]), so a family's integration test
//! and its verify rows run the same code.

use crate::device::{Device, Schedule, SimtConfig};
use crate::dtype::{DTypeKind, Float};

// ---- tolerances -------------------------------------------------------------------------------

/// Tolerances (ARCHITECTURE §5): relative L2 `||out - ref|| / ||ref||` against the f64 reference,
/// unless named otherwise. NaN never passes; masks, indices, permutations, counts and byte
/// formats are bit-exact (no tolerance).
pub mod tol {
    /// f32 arithmetic on f32 inputs (merge, TaH next-depth input, k-means centroids relative to
    /// the value range, the hardware mma against f64).
    pub const F32: f64 = 1e-5;
    /// tf32 operands.
    pub const TF32: f64 = 5e-4;
    /// f16/bf16 operands with f32 accumulation: the design's bound (prefill and
    /// sequence-parallel attention O).
    pub const HALF: f64 = 1e-2;
    /// f16/bf16 operands with f32 accumulation: the aim, which the decode rows hold to.
    pub const HALF_AIM: f64 = 4e-3;
    /// Absolute error of an attention LSE where the reference is finite (it must be exactly -inf
    /// where the reference is -inf).
    pub const LSE_ABS: f64 = 1e-3;
}

// ---- the relative error -----------------------------------------------------------------------

/// Relative L2 error `||out - reference|| / ||reference||` (f64 sums), the error of every
/// tolerance in [`tol`]:
/// - lengths that differ, or a NaN on either side, give infinity (NaN never passes);
/// - an entry that is -inf on both sides is skipped (an attention row that sees no key has LSE
///   -inf); an infinity on one side only gives infinity;
/// - equal outputs give 0 (also for an all-zero reference); a non-zero error against an all-zero
///   reference is divided by the smallest positive f64 (so it fails any tolerance).
pub fn rel_l2(out: &[f32], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        if o.is_nan() || r.is_nan() {
            return f64::INFINITY;
        }
        if r == f64::NEG_INFINITY && o == f32::NEG_INFINITY {
            continue;
        }
        if r.is_infinite() || o.is_infinite() {
            return f64::INFINITY;
        }
        num += (o as f64 - r).powi(2);
        den += r * r;
    }
    if num == 0.0 {
        0.0
    } else {
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// The first index where an attention LSE misses the reference: not exactly -inf where the
/// reference is -inf, or further than [`tol::LSE_ABS`] (or NaN) where it is finite. A length
/// mismatch gives the shorter length.
pub fn lse_mismatch(lse: &[f32], reference: &[f64]) -> Option<usize> {
    lse.iter()
        .zip(reference)
        .position(|(&x, &y)| {
            if y == f64::NEG_INFINITY {
                x != f32::NEG_INFINITY
            } else {
                (x as f64 - y).abs() > tol::LSE_ABS || x.is_nan()
            }
        })
        .or((lse.len() != reference.len()).then_some(lse.len().min(reference.len())))
}

// ---- executors --------------------------------------------------------------------------------

/// A host SIMT executor with `workers` threads (0: one per core), panicking if it cannot start.
pub fn simt(wave: u32, schedule: Schedule, workers: usize) -> Device {
    Device::simt_with(SimtConfig {
        wave,
        schedule,
        workers,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("simt wave{wave} {schedule:?}: {e}"))
}

/// The executors the test suites run on: the CPU path, host SIMT wave32 and wave64 each with the
/// in-order schedule, the two shuffled `seeds` and a warp-skew schedule, and CUDA/HIP when present.
pub fn test_devices(seeds: [u64; 2]) -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for schedule in [
            Schedule::InOrder,
            Schedule::Shuffled(seeds[0]),
            Schedule::Shuffled(seeds[1]),
            Schedule::Skewed(seeds[0] ^ seeds[1]),
        ] {
            d.extend(
                Device::simt_with(SimtConfig {
                    wave,
                    schedule,
                    workers: 2,
                    ..Default::default()
                })
                .ok(),
            );
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

/// The GPU the GPU-only tests and benches run on: CUDA device 0, else HIP device 0.
pub fn gpu() -> Option<Device> {
    Device::cuda(0).or_else(|_| Device::hip(0)).ok()
}

/// Which executors `tessera verify` runs: every one that is present (CUDA, HIP, host SIMT wave32
/// and wave64 each in order, shuffled and skewed, the CPU path), or only those of one family
/// (`"cuda"`, `"hip"`, `"simt"`, `"cpu"`).
pub fn executors(filter: Option<&str>) -> Vec<(Device, &'static str)> {
    let mut out = Vec::new();
    let want = |f: &str| filter.is_none_or(|x| x == f);
    if want("cuda") {
        if let Ok(d) = Device::cuda(0) {
            out.push((d, "cuda"));
        }
    }
    if want("hip") {
        if let Ok(d) = Device::hip(0) {
            out.push((d, "hip"));
        }
    }
    if want("simt") {
        for (wave, schedule) in [
            (32, Schedule::InOrder),
            (32, Schedule::Shuffled(0x5eed_0001)),
            (32, Schedule::Skewed(0x5eed_0003)),
            (64, Schedule::InOrder),
            (64, Schedule::Shuffled(0x5eed_0002)),
            (64, Schedule::Skewed(0x5eed_0004)),
        ] {
            if let Ok(d) = Device::simt_with(SimtConfig {
                wave,
                schedule,
                workers: 0,
                ..Default::default()
            }) {
                out.push((d, "simt"));
            }
        }
    }
    if want("cpu") {
        out.push((Device::cpu(), "cpu"));
    }
    out
}

// ---- random inputs ----------------------------------------------------------------------------

/// A deterministic generator (splitmix64) so tests and verify need no RNG crate and are
/// reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Shuffle `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    /// `n` values uniform in ±`half_range`, rounded to `T` and returned as f32 (exact in `T`, so
    /// uploading them as `T` and the f64 reference see the same numbers).
    pub fn values_in<T: Float>(&mut self, n: usize, half_range: f64) -> Vec<f32> {
        (0..n)
            .map(|_| T::from_f64((self.unit() - 0.5) * 2.0 * half_range).to_f64() as f32)
            .collect()
    }
}

/// `x` converted to `T` (exact for values made by [`Rng::values_in`] of `T`).
pub fn to_dtype<T: Float>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&y| T::from_f64(y as f64)).collect()
}

/// Bit patterns of a slice of floats (for bit-exact comparison, NaN payloads included).
pub fn bits<T: Float>(v: &[T]) -> Vec<T::Bits> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Index of the first difference of two slices (the shorter length when one is a prefix).
pub fn first_diff<A: PartialEq>(a: &[A], b: &[A]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

/// A base tensor and a new one where about `frac` of the elements changed, some by a few units in
/// the last place (as consecutive checkpoints do), plus NaN and -0.0 patterns.
pub fn checkpoint_pair<T: Float>(n: usize, frac: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut r = Rng(seed);
    let base: Vec<T> = (0..n)
        .map(|_| T::from_f64((r.unit() - 0.5) * 0.2))
        .collect();
    let new = base
        .iter()
        .map(|&b| {
            if r.unit() >= frac {
                return b;
            }
            match r.next_u64() % 16 {
                0 => T::from_f64(f64::NAN),
                1 => T::from_f64(-0.0),
                2..=9 => T::from_f64(b.to_f64() * (1.0 + (r.unit() - 0.5) * 0.02)),
                _ => T::from_f64((r.unit() - 0.5) * 0.2),
            }
        })
        .collect();
    (base, new)
}

/// The kinds of checkpoint pair the ckpt rows (bitmask, codec) use. The dense pair alone makes
/// every 256-value pack block full-width (some large change in every block, at every lane group)
/// and, for the codec, had its non-finite values stripped: a block max that reads the wrong lanes
/// or misses a barrier gives the same answer on it. The other kinds are built so that it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    /// [`checkpoint_pair`] at 23%: dense random changes, NaN and -0.0 among them.
    Dense,
    /// A handful of changes: the first and last elements, the edges of mask words (31/32), pack
    /// blocks (255/256) and bitmask blocks (8191/8192), plus `changes` random positions; each by one
    /// ulp up or down, a sign flip, or +0.0 -> -0.0. Most mask words and whole blocks are zero.
    Tiny,
    /// Exactly `changes` changed elements; each moves by one ulp (zigzag delta 1 or 2) except about
    /// one in 300, a large change. So pack blocks have mixed widths, and a block's width is set by
    /// one value at a random lane (or no large value at all).
    Ulp,
    /// Exactly `changes` changed elements among bases that are 1/8 special (NaN with payloads,
    /// signalling NaN, +-Inf, +-0.0, subnormals, the largest finite, the smallest normal) and
    /// 1/16 subnormal; a change goes to a special, one ulp up or down (Inf -> NaN or max finite),
    /// a sign flip, a subnormal, or a random finite value.
    Special,
}

impl PairKind {
    pub fn name(self) -> &'static str {
        match self {
            PairKind::Dense => "dense",
            PairKind::Tiny => "tiny",
            PairKind::Ulp => "ulp",
            PairKind::Special => "special",
        }
    }
}

/// Bit patterns of the special values of `T` (f32, f16, bf16): quiet NaN, signalling NaN, a
/// negative NaN with a payload, +Inf, -Inf, +0.0, -0.0, the smallest subnormal, the largest
/// negative subnormal, a middle subnormal, +-the largest finite, the smallest normal.
fn special_bits<T: Float>() -> [u32; 13] {
    match T::KIND {
        DTypeKind::F16 => [
            0x7e00, 0x7c01, 0xfe12, 0x7c00, 0xfc00, 0, 0x8000, 0x0001, 0x83ff, 0x0200, 0x7bff,
            0xfbff, 0x0400,
        ],
        DTypeKind::BF16 => [
            0x7fc0, 0x7f81, 0xffc1, 0x7f80, 0xff80, 0, 0x8000, 0x0001, 0x807f, 0x0040, 0x7f7f,
            0xff7f, 0x0080,
        ],
        _ => [
            0x7fc0_0000,
            0x7f80_0001,
            0xffc0_0123,
            0x7f80_0000,
            0xff80_0000,
            0,
            0x8000_0000,
            0x0000_0001,
            0x807f_ffff,
            0x0040_0000,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x0080_0000,
        ],
    }
}

/// The bit pattern of `x` widened to u32.
pub fn elem_bits<T: Float>(x: T) -> u32 {
    crate::reference::codec::bits_of(x)
}

fn elem_from_bits<T: Float>(b: u32) -> T {
    crate::reference::codec::from_bits(b)
}

/// `x` moved by one unit in the last place of its bit pattern (up or down in magnitude); a zero
/// flips its sign instead (+0.0 and -0.0 are neighbours in the codec's order).
pub fn ulp_step<T: Float>(x: T, up: bool) -> T {
    let w = 8 * std::mem::size_of::<T>() as u32;
    let sign = 1u32 << (w - 1);
    let b = elem_bits(x);
    if b & !sign == 0 {
        return elem_from_bits(b ^ sign);
    }
    elem_from_bits(if up { b + 1 } else { b - 1 })
}

/// A random subnormal of `T` (exponent field 0, non-zero mantissa, random sign).
fn subnormal<T: Float>(r: &mut Rng) -> T {
    let (w, mant) = match T::KIND {
        DTypeKind::F16 => (16, 10),
        DTypeKind::BF16 => (16, 7),
        _ => (32, 23),
    };
    let m = (r.next_u64() % ((1u64 << mant) - 1)) as u32 + 1;
    let s = (r.next_u64() & 1) as u32;
    elem_from_bits((s << (w - 1)) | m)
}

/// `m` distinct indices of `0..n`, ascending (selection sampling: exactly `min(m, n)`).
fn choose(n: usize, m: usize, r: &mut Rng) -> Vec<usize> {
    let mut out = Vec::with_capacity(m.min(n));
    for i in 0..n {
        let (need, left) = (m.min(n) - out.len(), n - i);
        if need > 0 && (r.unit() * left as f64) < need as f64 {
            out.push(i);
        }
    }
    out
}

/// A checkpoint pair of `n` elements of the given kind (see [`PairKind`]; `changes` is the number
/// of changed elements for `Ulp` and `Special`, the number of random extra ones for `Tiny`, and
/// unused for `Dense`).
pub fn pair<T: Float>(kind: PairKind, n: usize, changes: usize, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut r = Rng(seed);
    let finite = |r: &mut Rng| T::from_f64((r.unit() - 0.5) * 0.2);
    match kind {
        PairKind::Dense => checkpoint_pair(n, 0.23, seed),
        PairKind::Tiny => {
            let mut base: Vec<T> = (0..n).map(|_| finite(&mut r)).collect();
            if n > 31 {
                base[31] = T::from_f64(0.0);
            }
            let mut new = base.clone();
            let mut at: Vec<usize> = [0, 31, 32, 255, 256, 8191, 8192, n.saturating_sub(1)]
                .into_iter()
                .chain((0..changes).map(|_| (r.next_u64() % n.max(1) as u64) as usize))
                .filter(|&i| i < n)
                .collect();
            at.sort_unstable();
            at.dedup();
            for (k, &i) in at.iter().enumerate() {
                new[i] = match k % 3 {
                    0 => ulp_step(base[i], true),
                    1 => ulp_step(base[i], false),
                    _ => T::from_f64(-base[i].to_f64()),
                };
            }
            (base, new)
        }
        PairKind::Ulp => {
            let base: Vec<T> = (0..n).map(|_| finite(&mut r)).collect();
            let mut new = base.clone();
            for i in choose(n, changes, &mut r) {
                new[i] = if r.next_u64() % 300 == 0 {
                    let x = finite(&mut r);
                    if elem_bits(x) == elem_bits(base[i]) {
                        ulp_step(x, true)
                    } else {
                        x
                    }
                } else {
                    ulp_step(base[i], r.next_u64() & 1 == 0)
                };
            }
            (base, new)
        }
        PairKind::Special => {
            let sp = special_bits::<T>();
            let base: Vec<T> = (0..n)
                .map(|_| match r.next_u64() % 16 {
                    0 | 1 => elem_from_bits(sp[(r.next_u64() % sp.len() as u64) as usize]),
                    2 => subnormal(&mut r),
                    _ => finite(&mut r),
                })
                .collect();
            let mut new = base.clone();
            let w = 8 * std::mem::size_of::<T>() as u32;
            for i in choose(n, changes, &mut r) {
                let b = elem_bits(base[i]);
                let x: T = match r.next_u64() % 8 {
                    0 | 1 => {
                        let j = (r.next_u64() % sp.len() as u64) as usize;
                        let s = if sp[j] == b {
                            sp[(j + 1) % sp.len()]
                        } else {
                            sp[j]
                        };
                        elem_from_bits(s)
                    }
                    2 => ulp_step(base[i], true),
                    3 => ulp_step(base[i], false),
                    4 => elem_from_bits(b ^ (1 << (w - 1))),
                    5 => subnormal(&mut r),
                    _ => finite(&mut r),
                };
                new[i] = if elem_bits(x) == b {
                    elem_from_bits(b ^ (1 << (w - 1)))
                } else {
                    x
                };
            }
            (base, new)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::bitmask as reference;
    use crate::reference::codec as cref;
    use half::{bf16, f16};

    #[test]
    fn rel_l2_cases() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert_eq!(rel_l2(&[0.0], &[0.0]), 0.0);
        assert!((rel_l2(&[3.0, 0.0], &[4.0, 0.0]) - 0.25).abs() < 1e-12);
        // Lengths, NaN on either side, an infinity on one side only: infinity.
        assert_eq!(rel_l2(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(rel_l2(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(rel_l2(&[1.0], &[f64::NAN]), f64::INFINITY);
        assert_eq!(rel_l2(&[f32::NEG_INFINITY], &[1.0]), f64::INFINITY);
        assert_eq!(rel_l2(&[1.0], &[f64::NEG_INFINITY]), f64::INFINITY);
        assert_eq!(rel_l2(&[f32::INFINITY], &[f64::INFINITY]), f64::INFINITY);
        // -inf on both sides is skipped.
        assert_eq!(
            rel_l2(&[f32::NEG_INFINITY, 2.0], &[f64::NEG_INFINITY, 2.0]),
            0.0
        );
        // A non-zero error against an all-zero reference fails any tolerance.
        assert!(rel_l2(&[1e-30], &[0.0]) > 1.0);
    }

    #[test]
    fn lse_mismatch_cases() {
        assert_eq!(
            lse_mismatch(&[f32::NEG_INFINITY, 1.0], &[f64::NEG_INFINITY, 1.0005]),
            None
        );
        assert_eq!(
            lse_mismatch(&[0.0, 1.0], &[f64::NEG_INFINITY, 1.0]),
            Some(0)
        );
        assert_eq!(lse_mismatch(&[1.0, 1.01], &[1.0, 1.0]), Some(1));
        assert_eq!(lse_mismatch(&[f32::NAN], &[1.0]), Some(0));
        assert_eq!(lse_mismatch(&[1.0], &[1.0, 2.0]), Some(1));
    }

    /// Width of each 256-value pack block of the gathered changes, and how many values of the
    /// block reach it.
    fn widths_and_holders<T: Float>(base: &[T], new: &[T]) -> Vec<(u32, usize)> {
        let (mask, _) = reference::sparsify(base, new, 0.0);
        let (rb, rx) = (cref::gather(base, &mask), cref::gather(new, &mask));
        let w = 8 * std::mem::size_of::<T>() as u32;
        let zz: Vec<u32> = rb
            .iter()
            .zip(&rx)
            .map(|(&b, &x)| cref::bit_width(cref::delta_zz(elem_bits(b), elem_bits(x), w)))
            .collect();
        zz.chunks(256)
            .map(|c| {
                let m = *c.iter().max().unwrap();
                (m, c.iter().filter(|&&v| v == m).count())
            })
            .collect()
    }

    fn is_subnormal<T: Float>(x: T) -> bool {
        let (exp, mant) = match T::KIND {
            DTypeKind::F16 => (0x7c00, 0x03ff),
            DTypeKind::BF16 => (0x7f80, 0x007f),
            _ => (0x7f80_0000, 0x007f_ffff),
        };
        let b = elem_bits(x);
        b & exp == 0 && b & mant != 0
    }

    fn changed<T: Float>(base: &[T], new: &[T]) -> usize {
        base.iter()
            .zip(new)
            .filter(|(b, x)| b.to_bits() != x.to_bits())
            .count()
    }

    fn kinds_reach_their_paths<T: Float>() {
        // Ulp: exactly the asked number of changes, narrow blocks, and blocks whose width is set
        // by a single value.
        let (b, x) = pair::<T>(PairKind::Ulp, 30_011, 7_500, 1);
        assert_eq!(changed(&b, &x), 7_500);
        let wh = widths_and_holders(&b, &x);
        assert!(wh.iter().any(|&(w, _)| w <= 2), "{wh:?}");
        assert!(wh.iter().any(|&(w, k)| w > 4 && k == 1), "{wh:?}");
        let (b, x) = pair::<T>(PairKind::Ulp, 1031, 257, 2);
        assert_eq!(changed(&b, &x), 257);
        // Special: NaN, infinities, zeros of both signs and subnormals on both sides.
        let (b, x) = pair::<T>(PairKind::Special, 4099, 1_500, 3);
        assert_eq!(changed(&b, &x), 1_500);
        for v in [&b, &x] {
            let f: Vec<f64> = v.iter().map(|e| e.to_f64()).collect();
            assert!(f.iter().any(|e| e.is_nan()));
            assert!(f.contains(&f64::INFINITY));
            assert!(f.contains(&f64::NEG_INFINITY));
            assert!(f.iter().any(|&e| e == 0.0 && e.is_sign_negative()));
            assert!(v.iter().any(|&e| is_subnormal(e)));
        }
        // Tiny: a handful of changes, most mask words empty.
        let (b, x) = pair::<T>(PairKind::Tiny, 100_003, 5, 4);
        let c = changed(&b, &x);
        assert!((8..=13).contains(&c), "{c}");
        for at in [0, 31, 8191, 8192, 100_002] {
            assert_ne!(b[at].to_bits(), x[at].to_bits(), "{at}");
        }
    }

    #[test]
    fn pair_kinds_reach_their_paths() {
        kinds_reach_their_paths::<f32>();
        kinds_reach_their_paths::<f16>();
        kinds_reach_their_paths::<bf16>();
    }
}
