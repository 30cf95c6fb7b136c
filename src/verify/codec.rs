//! Codec rows (`codec::*`), the case `tests/codec.rs` runs too.

use half::{bf16, f16};

use super::{failed, stage, up, Row};
use crate::device::Device;
use crate::dtype::Float;
use crate::reference::bitmask as reference;
use crate::testing::{bits, first_diff, pair, tol, PairKind};

/// One codec problem: a checkpoint pair; the ops run on its changed values (at tau 0).
pub struct Case<T> {
    pub base: Vec<T>,
    pub new: Vec<T>,
    /// What the pair is (the start of the sizes column).
    pub kind: String,
    /// Also encode and decode the whole tensors (blocks of unchanged values have width 0: the
    /// decoder's width-0 path); the verify rows do it for the tiny pairs.
    pub whole: bool,
}

impl<T: Float> Case<T> {
    /// A pair of `kind` (see [`pair`]); the tiny pairs also check the whole tensors.
    pub fn generate(kind: PairKind, n: usize, changes: usize, seed: u64) -> Case<T> {
        let (base, new) = pair::<T>(kind, n, changes, seed);
        Case {
            base,
            new,
            kind: kind.name().into(),
            whole: kind == PairKind::Tiny,
        }
    }

    /// The codec ops on one dtype and device, one row each, each op given the reference's inputs (so
    /// a row fails for its own op only): gather of the changed base and new values, lossless delta
    /// encode/decode, the f32 deltas, widening to f32, k-means (4 bits) of the finite deltas (and,
    /// when some deltas are NaN or infinite, a row that k-means refuses them with the exact count),
    /// index packing, and dequantisation against the base values. Every row but k-means is bit-exact
    /// against the reference; k-means reports the largest centroid error relative to the value range.
    pub fn rows(&self, dev: &Device) -> Vec<Row> {
        use crate::ops::codec::{self, Packed};
        use crate::reference::codec as cref;
        const BITS: u32 = 4;
        let (base, new, n) = (&self.base[..], &self.new[..], self.base.len());
        let (mask, _) = reference::sparsify(base, new, 0.0);
        let rb = cref::gather(base, &mask);
        let rx = cref::gather(new, &mask);
        let (rw, rwid) = cref::delta_encode(&rb, &rx);
        let rd = cref::delta_f32(&rb, &rx);
        let rf = cref::to_f32(&rx);
        let bad = rd.iter().filter(|v| !v.is_finite()).count();
        // k-means takes finite values: it clusters the deltas with the non-finite ones set to 0.
        let rk: Vec<f32> = rd
            .iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect();
        let (rc, ri, _) = cref::kmeans(&rk, 1 << BITS, 20, 1e-6);
        let (pw, pwid) = cref::pack_indices(&ri, BITS);
        let rq = cref::dequantize(&pw, &pwid, ri.len(), &rc, Some(&rb));
        let dt = T::KIND.name();
        let row = |op: &str, error: String, r: std::result::Result<(), String>| Row {
            op: op.into(),
            dtype: dt.into(),
            executor: dev.backend().to_string(),
            sizes: format!("{} n={n} changed={}", self.kind, rb.len()),
            error,
            pass: r.is_ok(),
            detail: r.err().unwrap_or_default(),
        };
        let exact = |op: &str, r: std::result::Result<(), String>| row(op, "exact".into(), r);
        let differ = |what: &str, i: usize, kernel: &str| {
            Err(format!(
                "{what} differ from the reference at {i} (kernel {kernel})"
            ))
        };
        let f32_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        let packed = |w: &[u32], wid: &[u8], count: usize| -> std::result::Result<Packed, String> {
            Ok(Packed {
                words: up(dev, w, "words")?,
                widths: up(dev, wid, "widths")?,
                count,
            })
        };
        let mut rows = Vec::new();

        let r = (|| {
            let b = up(dev, base, "base")?;
            let x = up(dev, new, "new")?;
            let m = up(dev, &mask, "mask")?;
            let (gb, gx) = stage(dev, "codec::gather", || {
                Ok((
                    codec::gather(&b, &m, rb.len())?.download()?,
                    codec::gather(&x, &m, rb.len())?.download()?,
                ))
            })?;
            match first_diff(&bits(&gb), &bits(&rb)).or(first_diff(&bits(&gx), &bits(&rx))) {
                Some(i) => Err(format!(
                    "gathered values differ from the reference at {i} (kernels bitmask_popcount, \
                     bitmask_scan_counts, bitmask_compact_*)"
                )),
                None => Ok(()),
            }
        })();
        rows.push(exact("codec.gather", r));

        let r = (|| {
            let (b, x) = (up(dev, &rb, "base_vals")?, up(dev, &rx, "new_vals")?);
            let (w, wid) = stage(dev, "codec::delta_encode", || {
                let p = codec::delta_encode(&b, &x)?;
                Ok((p.words.download()?, p.widths.download()?))
            })?;
            if let Some(j) = first_diff(&wid, &rwid) {
                differ("block widths", j, &format!("codec_widths_delta_{dt}"))
            } else if w.len() != rw.len() {
                Err(format!(
                    "{} packed words, the reference has {} (kernel codec_scan_widths)",
                    w.len(),
                    rw.len()
                ))
            } else if let Some(i) = first_diff(&w, &rw) {
                differ("packed words", i, &format!("codec_pack_delta_{dt}"))
            } else {
                Ok(())
            }
        })();
        rows.push(exact("codec.delta_encode", r));

        let r = (|| {
            let b = up(dev, &rb, "base_vals")?;
            let p = packed(&rw, &rwid, rb.len())?;
            let dec = stage(dev, "codec::delta_decode", || {
                codec::delta_decode(&b, &p)?.download()
            })?;
            match first_diff(&bits(&dec), &bits(&rx)) {
                Some(i) => differ("decoded values", i, &format!("codec_unpack_delta_{dt}")),
                None => Ok(()),
            }
        })();
        rows.push(exact("codec.delta_decode", r));

        if self.whole {
            // The whole tensors (not only the changed values): blocks of unchanged values have
            // width 0 (no words; the decoder's width-0 path).
            let (fw, fwid) = cref::delta_encode(base, new);
            let r = (|| {
                let (b, x) = (up(dev, base, "base")?, up(dev, new, "new")?);
                let (w, wid) = stage(dev, "codec::delta_encode", || {
                    let p = codec::delta_encode(&b, &x)?;
                    Ok((p.words.download()?, p.widths.download()?))
                })?;
                if let Some(j) = first_diff(&wid, &fwid) {
                    return differ("block widths", j, &format!("codec_widths_delta_{dt}"));
                } else if let Some(i) = first_diff(&w, &fw) {
                    return differ("packed words", i, &format!("codec_pack_delta_{dt}"));
                }
                let p = packed(&fw, &fwid, n)?;
                let dec = stage(dev, "codec::delta_decode", || {
                    codec::delta_decode(&b, &p)?.download()
                })?;
                match first_diff(&bits(&dec), &bits(new)) {
                    Some(i) => differ("decoded values", i, &format!("codec_unpack_delta_{dt}")),
                    None => Ok(()),
                }
            })();
            rows.push(Row {
                sizes: format!("{} n={n}, all values (width-0 blocks)", self.kind),
                ..exact("codec.delta_encode+decode", r)
            });
        }

        let r = (|| {
            let (b, x) = (up(dev, &rb, "base_vals")?, up(dev, &rx, "new_vals")?);
            let d = stage(dev, "codec::delta_f32", || {
                codec::delta_f32(&b, &x)?.download()
            })?;
            match first_diff(&f32_bits(&d), &f32_bits(&rd)) {
                Some(i) => differ("deltas", i, &format!("codec_delta_f32_{dt}")),
                None => Ok(()),
            }
        })();
        rows.push(exact("codec.delta_f32", r));

        let r = (|| {
            let x = up(dev, &rx, "values")?;
            let f = stage(dev, "codec::to_f32", || codec::to_f32(&x)?.download())?;
            match first_diff(&f32_bits(&f), &f32_bits(&rf)) {
                Some(i) => differ("widened values", i, &format!("codec_to_f32_{dt}")),
                None => Ok(()),
            }
        })();
        rows.push(exact("codec.to_f32", r));

        let r = (|| {
            let d = up(dev, &rk, "deltas")?;
            let (c, idx) = stage(dev, "codec::kmeans", || {
                let km = codec::kmeans(&d, BITS, 20, 1e-6)?;
                Ok((km.centroids, km.indices.download()?))
            })?;
            let (lo, hi, _) = cref::min_max(&rk);
            let range = (hi - lo).max(f32::MIN_POSITIVE) as f64;
            let cerr = c
                .iter()
                .zip(&rc)
                .map(|(a, b)| ((*a as f64 - *b as f64) / range).abs())
                .fold(0.0f64, f64::max);
            let mids = cref::midpoints(&rc);
            let idx_ok = idx.len() == ri.len()
                && idx.iter().zip(&ri).enumerate().all(|(i, (a, b))| {
                    a == b
                        || mids
                            .iter()
                            .any(|m| ((rk[i] - m).abs() as f64) <= 1e-6 * range)
                });
            let res = if c.len() != rc.len() || cerr > tol::F32 {
                Err(format!(
                    "centroid error {cerr:.2e} > {:.0e} of the range",
                    tol::F32
                ))
            } else if !idx_ok {
                Err("indices differ from the reference away from a midpoint".into())
            } else {
                Ok(())
            };
            Ok((cerr, res))
        })();
        rows.push(match r {
            Ok((cerr, res)) => row("codec.kmeans", format!("{cerr:.1e}"), res),
            Err(e) => row("codec.kmeans", "-".into(), Err(e)),
        });

        if bad > 0 {
            // The deltas as they are: k-means must refuse them and count every non-finite one (the
            // count is the reduction of codec_minmax).
            let r = (|| {
                let d = up(dev, &rd, "deltas")?;
                match codec::kmeans(&d, BITS, 20, 1e-6) {
                    Ok(_) => Err(format!(
                        "codec::kmeans accepted {bad} non-finite values (kernel codec_minmax)"
                    )),
                    Err(crate::error::Error::InvalidArgument { msg, .. })
                        if msg.contains("values must be finite") =>
                    {
                        if msg.contains(&format!(", {bad} are NaN or infinite")) {
                            Ok(())
                        } else {
                            Err(format!(
                                "codec::kmeans: {msg}; the reference counts {bad} (kernel codec_minmax)"
                            ))
                        }
                    }
                    Err(e) => Err(failed("codec::kmeans", &e)),
                }
            })();
            rows.push(exact("codec.kmeans non-finite", r));
        }

        let r = (|| {
            let i = up(dev, &ri, "indices")?;
            let (w, wid) = stage(dev, "codec::pack_indices", || {
                let p = codec::pack_indices(&i, BITS)?;
                Ok((p.words.download()?, p.widths.download()?))
            })?;
            if let Some(j) = first_diff(&wid, &pwid) {
                differ("block widths", j, "codec_widths_idx")
            } else if let Some(k) = first_diff(&w, &pw) {
                differ("packed words", k, "codec_pack_idx")
            } else {
                Ok(())
            }
        })();
        rows.push(exact("codec.pack_indices", r));

        let r = (|| {
            let p = packed(&pw, &pwid, ri.len())?;
            let b = up(dev, &rb, "base_vals")?;
            let q = stage(dev, "codec::dequantize", || {
                codec::dequantize(&p, &rc, Some(&b))?.download()
            })?;
            match first_diff(&bits(&q), &bits(&rq)) {
                Some(i) => differ("dequantized values", i, &format!("codec_dequantize_{dt}")),
                None => Ok(()),
            }
        })();
        rows.push(exact("codec.dequantize", r));
        rows
    }
}

/// Sizes of the dense codec rows (dense tensor lengths; about 23% of the elements change).
pub const SIZES: &[usize] = &[1, 4099, 150_001];

/// The non-dense codec cases (kind, n, changes): changed counts of a handful, 255, 256 and 257
/// (a partial, an exactly full, and a full plus a one-value pack block), many mixed-width blocks,
/// and non-finite values.
pub const EDGE_CASES: &[(PairKind, usize, usize)] = &[
    (PairKind::Tiny, 8193, 3),
    (PairKind::Ulp, 600, 255),
    (PairKind::Ulp, 509, 256),
    (PairKind::Ulp, 1031, 257),
    (PairKind::Ulp, 30_011, 7_500),
    (PairKind::Special, 1, 1),
    (PairKind::Special, 4099, 1_500),
];

/// The codec rows of one device: every dtype on the dense pairs at [`SIZES`] and on
/// [`EDGE_CASES`].
pub fn rows(dev: &Device) -> Vec<Row> {
    let cases = SIZES
        .iter()
        .enumerate()
        .map(|(k, &n)| (PairKind::Dense, n, 0, 0xc0de_c000 + k as u64))
        .chain(
            EDGE_CASES
                .iter()
                .enumerate()
                .map(|(k, &(kind, n, c))| (kind, n, c, 0xc0de_e000 + k as u64)),
        );
    let mut rows = Vec::new();
    for (kind, n, changes, seed) in cases {
        rows.extend(Case::<f32>::generate(kind, n, changes, seed).rows(dev));
        rows.extend(Case::<f16>::generate(kind, n, changes, seed).rows(dev));
        rows.extend(Case::<bf16>::generate(kind, n, changes, seed).rows(dev));
    }
    rows
}
