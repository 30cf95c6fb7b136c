//! Bitmask rows (`bitmask::sparsify`, `bitmask::densify`), the case `tests/bitmask.rs` runs too.

use half::{bf16, f16};

use super::{stage, up, Outcome, Row};
use crate::device::Device;
use crate::dtype::Float;
use crate::ops::bitmask;
use crate::reference::bitmask as reference;
use crate::testing::{bits, first_diff, pair, ulp_step, PairKind};

/// The threshold of the bitmask rows on the non-dense pairs: 2^-10, exact in every dtype, so the
/// tiny pair's changes of exactly tau (dropped) and one ulp more (kept) are exact in f32.
pub const TAU_EDGE: f32 = 1.0 / 1024.0;

/// One sparsify/densify problem: a checkpoint pair and a threshold.
pub struct Case<T> {
    pub base: Vec<T>,
    pub new: Vec<T>,
    pub tau: f32,
    /// The sizes column (what the pair is).
    pub label: String,
}

impl<T: Float> Case<T> {
    /// A pair of `kind` (see [`pair`]) at threshold `tau`; the tiny pair also gets changes of
    /// exactly [`TAU_EDGE`] (dropped at that threshold) and one ulp more (kept).
    pub fn generate(kind: PairKind, n: usize, changes: usize, tau: f32, seed: u64) -> Case<T> {
        let (mut base, mut new) = pair::<T>(kind, n, changes, seed);
        if kind == PairKind::Tiny {
            for (k, i) in [63usize, 95, 8223]
                .into_iter()
                .filter(|&i| i < n)
                .enumerate()
            {
                base[i] = T::from_f64(0.25);
                let x = T::from_f64(0.25 - TAU_EDGE as f64);
                new[i] = if k == 1 { ulp_step(x, false) } else { x };
            }
        }
        let changed = reference::sparsify(&base, &new, tau).1.len();
        Case {
            label: format!("{} n={n} tau={tau} changed={changed}", kind.name()),
            base,
            new,
            tau,
        }
    }

    /// Sparsify and densify on `dev` against the reference, bit-exact, one row each. Densify gets
    /// the reference mask and values, so each row checks its own op; every reference mask bit is
    /// checked against the elementwise rule, and at tau 0 the round trip must be lossless.
    pub fn rows(&self, dev: &Device) -> [Row; 2] {
        let (base, new, tau) = (&self.base[..], &self.new[..], self.tau);
        let n = base.len();
        let (ref_mask, ref_vals) = reference::sparsify(base, new, tau);
        let ref_dense = reference::densify(base, &ref_mask, &ref_vals);
        let dt = T::KIND.name();
        // Independent of the reference: every mask bit agrees with the elementwise rule.
        let rule_ok = (0..n).all(|i| {
            (ref_mask[i / 32] >> (i % 32) & 1 == 1) == reference::changed(base[i], new[i], tau)
        });
        let sp = (|| {
            let b = up(dev, base, "base")?;
            let x = up(dev, new, "new")?;
            let (mask, vals) = stage(dev, "bitmask::sparsify", || {
                let s = bitmask::sparsify(&b, &x, tau)?;
                Ok((s.mask.download()?, s.values.download()?))
            })?;
            if !rule_ok {
                Err("reference mask disagrees with the elementwise rule".to_string())
            } else if let Some(i) = first_diff(&mask, &ref_mask) {
                Err(format!(
                    "mask differs from the reference at word {i} (kernel bitmask_mask_{dt})"
                ))
            } else if let Some(i) = first_diff(&bits(&vals), &bits(&ref_vals)) {
                Err(format!(
                    "values differ from the reference at {i} ({} vs {} values; kernels \
                     bitmask_scan_counts, bitmask_compact_{dt})",
                    vals.len(),
                    ref_vals.len()
                ))
            } else {
                Ok(())
            }
        })();
        let dn = (|| {
            let b = up(dev, base, "base")?;
            let m = up(dev, &ref_mask, "mask")?;
            let v = up(dev, &ref_vals, "values")?;
            let dense = stage(dev, "bitmask::densify", || {
                bitmask::densify_parts(&b, &m, &v)?.download()
            })?;
            if let Some(i) = first_diff(&bits(&dense), &bits(&ref_dense)) {
                Err(format!(
                    "densified tensor differs from the reference at {i} (kernel \
                     bitmask_densify_{dt})"
                ))
            } else if tau == 0.0 && bits(&dense) != bits(new) {
                Err("lossless round trip is not exact".to_string())
            } else {
                Ok(())
            }
        })();
        [
            Outcome::exact(sp).row("bitmask.sparsify", dt, dev, self.label.clone()),
            Outcome::exact(dn).row("bitmask.densify", dt, dev, self.label.clone()),
        ]
    }
}

/// Sizes of the dense bitmask rows: empty, one element, a partial word, a bitmask block (8192
/// elements) - 1, exactly, + 1, a prime spanning blocks, and 2^20 + 17.
pub const SIZES: &[usize] = &[0, 1, 33, 8191, 8192, 8193, 100_003, (1 << 20) + 17];

/// The non-dense bitmask cases (kind, n, changes), each at tau 0 and [`TAU_EDGE`].
pub const EDGE_CASES: &[(PairKind, usize, usize)] = &[
    (PairKind::Tiny, 1, 0),
    (PairKind::Tiny, 33, 2),
    (PairKind::Tiny, 8193, 3),
    (PairKind::Tiny, 100_003, 5),
    (PairKind::Ulp, 257, 64),
    (PairKind::Ulp, 100_003, 25_000),
    (PairKind::Special, 1, 1),
    (PairKind::Special, 33, 11),
    (PairKind::Special, 8193, 2_000),
    (PairKind::Special, 100_003, 30_000),
];

/// A tiny pair of more than 256 bitmask blocks, so that the one-block scan of the block counts
/// (`bitmask_scan_counts`) carries over several tiles; f16 only, tau 0 (the scan is the same
/// kernel for every dtype, and the other cases cover the rest).
pub const SCAN_CASE: (PairKind, usize, usize) = (PairKind::Tiny, (1 << 21) + 8193, 5);

/// Every (kind, n, changes, tau, seed) of the verify rows: the dense pair at [`SIZES`] (tau 0 and
/// 1e-3) and [`EDGE_CASES`] (tau 0 and [`TAU_EDGE`]); each runs in every dtype.
pub fn cases() -> Vec<(PairKind, usize, usize, f32, u64)> {
    let mut cases = Vec::new();
    for (k, &n) in SIZES.iter().enumerate() {
        for tau in [0.0f32, 1e-3] {
            cases.push((PairKind::Dense, n, 0, tau, 0x7e55_e7a0 + k as u64));
        }
    }
    for (k, &(kind, n, changes)) in EDGE_CASES.iter().enumerate() {
        for tau in [0.0f32, TAU_EDGE] {
            cases.push((kind, n, changes, tau, 0xb175_0000 + k as u64));
        }
    }
    cases
}

/// The bitmask rows of one device: every dtype on [`cases`], and [`SCAN_CASE`].
pub fn rows(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for (kind, n, changes, tau, seed) in cases() {
        rows.extend(Case::<f32>::generate(kind, n, changes, tau, seed).rows(dev));
        rows.extend(Case::<f16>::generate(kind, n, changes, tau, seed).rows(dev));
        rows.extend(Case::<bf16>::generate(kind, n, changes, tau, seed).rows(dev));
    }
    let (kind, n, changes) = SCAN_CASE;
    rows.extend(Case::<f16>::generate(kind, n, changes, 0.0, 0xb175_1000).rows(dev));
    rows
}
