//! TaH driver rows (`drivers::tah`): hard-token selection, row gather and scatter, the next-depth
//! input and logits accumulation; the cases `tests/tah.rs` runs too.

use half::{bf16, f16};

use super::{stage, up, Outcome, Row};
use crate::device::Device;
use crate::drivers::tah;
use crate::dtype::Float;
use crate::reference::tah as tref;
use crate::testing::{first_diff, rel_l2, tol, Rng};

/// Selection at `threshold` (a probability) on `scores`, then gather and scatter of rows of
/// width `d` (of random hidden states made from `seed`) at the reference's indices.
pub struct SelectCase {
    pub scores: Vec<f32>,
    pub threshold: f64,
    pub d: usize,
    pub seed: u64,
}

impl SelectCase {
    /// Selection, gather and scatter on `dev`, bit-exact, one row each. Gather and scatter get
    /// the reference's indices, so each row checks its own op.
    pub fn rows(&self, dev: &Device) -> [Row; 3] {
        let (scores, threshold, d) = (&self.scores[..], self.threshold, self.d);
        let mut r = Rng(self.seed);
        let n = scores.len();
        let want = tref::select_hard(scores, tref::logit_threshold(threshold));
        let hidden: Vec<f32> = (0..n * d).map(|_| r.unit() as f32).collect();
        let gathered = tref::gather_rows(&hidden, &want, d);
        let upd: Vec<f32> = gathered.iter().map(|x| x * 2.0 - 1.0).collect();
        let mut scattered = hidden.clone();
        tref::scatter_rows(&upd, &want, d, &mut scattered);
        let sizes = format!("n={n} thr={threshold} active={} d={d}", want.len());
        let sel = (|| {
            let s = up(dev, scores, "scores")?;
            let (count, idx) = stage(dev, "tah::select_hard", || {
                let s = tah::select_hard(&s, threshold)?;
                Ok((s.count, s.indices.download()?))
            })?;
            if count != want.len() {
                Err(format!(
                    "count {count}, the reference has {} (kernels tah_select_count, \
                     tah_scan_counts)",
                    want.len()
                ))
            } else if let Some(i) = first_diff(&idx, &want) {
                Err(format!(
                    "indices differ from the reference at {i} (kernel tah_select_compact)"
                ))
            } else {
                Ok(())
            }
        })();
        let gat = (|| {
            let h = up(dev, &hidden, "hidden")?;
            let i = up(dev, &want, "indices")?;
            let g = stage(dev, "tah::gather_rows", || {
                tah::gather_rows(&h, &i, d)?.download()
            })?;
            match first_diff(&g, &gathered) {
                Some(e) => Err(format!("rows differ from the reference at element {e}")),
                None => Ok(()),
            }
        })();
        let sca = (|| {
            let mut dst = up(dev, &hidden, "dst")?;
            let (u, i) = (up(dev, &upd, "upd")?, up(dev, &want, "indices")?);
            let sc = stage(dev, "tah::scatter_rows", || {
                tah::scatter_rows(&u, &i, d, &mut dst)?;
                dst.download()
            })?;
            match first_diff(&sc, &scattered) {
                Some(e) => Err(format!("rows differ from the reference at element {e}")),
                None => Ok(()),
            }
        })();
        [
            Outcome::exact(sel).row("tah.select_hard", "f32", dev, sizes.clone()),
            Outcome::exact(gat).row("tah.gather_rows", "f32", dev, sizes.clone()),
            Outcome::exact(sca).row("tah.scatter_rows", "f32", dev, sizes),
        ]
    }
}

/// One next-depth-input problem: cumulative logits `[m, vocab]`, top-`k`, an embedding table
/// `[vocab, d]` of `E`.
pub struct NextInputCase<E> {
    pub cum: Vec<f32>,
    pub vocab: usize,
    pub k: usize,
    pub emb: Vec<E>,
    pub d: usize,
    /// Relative L2 tolerance of the output (the weights are held to [`tol::F32`]).
    pub tol: f64,
    /// The sizes column.
    pub label: String,
}

impl<E: Float> NextInputCase<E> {
    /// The verify rows' problem: `m` rows of distinct logits (a shuffled ramp) or of 23 tied
    /// levels with +0.0 and -0.0 both present, a random embedding table.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        m: usize,
        vocab: usize,
        k: usize,
        d: usize,
        ties: bool,
        tol: f64,
        seed: u64,
    ) -> NextInputCase<E> {
        let mut r = Rng(seed);
        let mut cum = Vec::with_capacity(m * vocab);
        for _ in 0..m {
            let mut row: Vec<f32> = (0..vocab)
                .map(|i| {
                    if ties {
                        // 23 levels, each ~vocab/23 times; +0.0 and -0.0 both present.
                        let v = ((i * 7919) % 23) as f32 * 0.25 - 2.75;
                        if v == 0.0 && i % 2 == 1 {
                            -0.0
                        } else {
                            v
                        }
                    } else {
                        (i as f32 - vocab as f32 / 2.0) * (8.0 / vocab as f32)
                    }
                })
                .collect();
            r.shuffle(&mut row);
            cum.extend(row);
        }
        let emb: Vec<E> = (0..vocab * d)
            .map(|_| E::from_f64(r.unit() - 0.5))
            .collect();
        NextInputCase {
            cum,
            vocab,
            k,
            emb,
            d,
            tol,
            label: format!(
                "m={m} V={vocab} k={k} d={d}{}",
                if ties { " tied logits" } else { "" }
            ),
        }
    }

    /// Run on `dev` against the f64 reference: top-k ids exact, weights within [`tol::F32`],
    /// the output within `tol` (its relative L2 is the error).
    pub fn outcome(&self, dev: &Device) -> Outcome {
        let (vocab, k, d) = (self.vocab, self.k, self.d);
        let (ro, rids, rw) = tref::next_depth_input(&self.cum, vocab, k, &self.emb, d);
        // (output, ids, weights)
        type Out = (Vec<f32>, Vec<u32>, Vec<f32>);
        let run = || -> std::result::Result<Out, String> {
            let (c, e) = (up(dev, &self.cum, "cum")?, up(dev, &self.emb, "emb")?);
            stage(dev, "tah::next_depth_input", || {
                let out = tah::next_depth_input(&c, vocab, k, &e, d)?;
                Ok((
                    out.out.download()?,
                    out.ids.download()?,
                    out.weights.download()?,
                ))
            })
        };
        match run() {
            Err(e) => Outcome::not_run(e),
            Ok((o, ids, w)) => {
                let err = rel_l2(&o, &ro);
                let werr = rel_l2(&w, &rw);
                let result = if let Some(i) = first_diff(&ids, &rids) {
                    Err(format!(
                        "top-k ids differ from the reference at {i} (row {}, rank {})",
                        i / k.max(1),
                        i % k.max(1)
                    ))
                } else if werr > tol::F32 {
                    Err(format!("weights relative L2 {werr:.2e} > {:.0e}", tol::F32))
                } else if err > self.tol {
                    Err(format!("relative L2 {err:.2e} > {:.0e}", self.tol))
                } else {
                    Ok(())
                };
                Outcome {
                    error: format!("{err:.2e}"),
                    result,
                }
            }
        }
    }

    pub fn row(&self, dev: &Device) -> Row {
        self.outcome(dev).row(
            "tah.next_depth_input",
            E::KIND.name(),
            dev,
            self.label.clone(),
        )
    }
}

/// Logits accumulation `cum += logits` (f32), bit-exact except NaN payloads: NaN payloads are not
/// defined across executors (x86 keeps an operand's, GPUs return a canonical NaN), so a NaN sum
/// must be NaN and every other sum bit-exact.
pub fn accumulate_outcome(dev: &Device, cum: &[f32], logits: &[f32]) -> Outcome {
    let mut want = cum.to_vec();
    tref::accumulate_logits(&mut want, logits);
    let res = (|| {
        let mut c = up(dev, cum, "cum")?;
        let l = up(dev, logits, "logits")?;
        let got = stage(dev, "tah::accumulate_logits", || {
            tah::accumulate_logits(&mut c, &l)?;
            c.download()
        })?;
        let same = |x: &f32, y: &f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        match got.iter().zip(&want).position(|(x, y)| !same(x, y)) {
            Some(i) => Err(format!(
                "sum {i} is {} (bits {:#x}), the reference {}",
                got[i],
                got[i].to_bits(),
                want[i]
            )),
            None if got.len() != want.len() => Err("length differs".into()),
            None => Ok(()),
        }
    })();
    Outcome::exact(res)
}

/// The TaH driver rows of one device: hard-token selection (exact indices and count; NaN, +-Inf,
/// +-0.0, subnormals and scores exactly at the threshold among the scores), row gather and
/// scatter (exact), the next-depth input (top-k ids exact, on distinct and on tied logits with
/// +-0.0; output relative L2 vs the f64 reference, f32 and half embedding tables, vocab up to
/// 152k) and logits accumulation (exact in f32, with +-Inf, +-0.0, subnormals and NaN among the
/// inputs).
pub fn rows(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut r = Rng(0x7a4_0001);

    // Selection, gather, scatter: 391 blocks (the one-block scan carries over two tiles), every
    // 97th score special; and 257 scores (one full block and one of a single score) at threshold
    // 0.5, i.e. score > 0: +-0.0 are not selected, the smallest subnormal is.
    let thr = tref::logit_threshold(0.9);
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        thr,
        f32::from_bits(thr.to_bits() + 1),
        -0.0,
        0.0,
        f32::from_bits(1),
    ];
    let scores: Vec<f32> = (0..100_003)
        .map(|i| {
            let s = ((r.unit() - 0.5) * 12.0) as f32;
            if i % 97 == 5 {
                special[(r.next_u64() % special.len() as u64) as usize]
            } else {
                s
            }
        })
        .collect();
    rows.extend(
        SelectCase {
            scores,
            threshold: 0.9,
            d: 8,
            seed: 0x7a4_0011,
        }
        .rows(dev),
    );
    let small = [
        0.0,
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let scores: Vec<f32> = (0..257)
        .map(|i| {
            if i % 5 == 0 {
                small[(r.next_u64() % small.len() as u64) as usize]
            } else {
                (r.unit() - 0.5) as f32
            }
        })
        .collect();
    rows.extend(
        SelectCase {
            scores,
            threshold: 0.5,
            d: 3,
            seed: 0x7a4_0012,
        }
        .rows(dev),
    );

    // Next-depth input.
    rows.push(
        NextInputCase::<f32>::generate(4, 32_000, 100, 64, false, tol::F32, 0x7a4_0002).row(dev),
    );
    rows.push(
        NextInputCase::<bf16>::generate(4, 32_000, 100, 64, false, tol::F32, 0x7a4_0003).row(dev),
    );
    rows.push(
        NextInputCase::<f16>::generate(4, 32_000, 256, 64, false, tol::F32, 0x7a4_0004).row(dev),
    );
    rows.push(
        NextInputCase::<bf16>::generate(1, 151_936, 100, 128, false, tol::F32, 0x7a4_0005).row(dev),
    );
    // Ties at the k-th value (lowest ids win), a vocab that is not a multiple of the block,
    // d > the block (each thread sums several columns).
    rows.push(
        NextInputCase::<f32>::generate(3, 1_000, 37, 300, true, tol::F32, 0x7a4_0006).row(dev),
    );
    // k = vocab < the block: everything selected, ranked with ties and -0.0 < +0.0.
    rows.push(
        NextInputCase::<bf16>::generate(2, 200, 200, 16, true, tol::F32, 0x7a4_0007).row(dev),
    );

    // Logits accumulation; every 101st input special.
    let n = (1 << 20) + 17;
    let specials = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        f32::from_bits(3),
        f32::from_bits(0x8000_0005),
        f32::MAX,
        f32::NAN,
    ];
    let draw = |r: &mut Rng, i: usize| {
        if i % 101 == 7 {
            specials[(r.next_u64() % specials.len() as u64) as usize]
        } else {
            ((r.unit() - 0.5) * 20.0) as f32
        }
    };
    let a: Vec<f32> = (0..n).map(|i| draw(&mut r, i)).collect();
    let b: Vec<f32> = (0..n).map(|i| draw(&mut r, i)).collect();
    rows.push(accumulate_outcome(dev, &a, &b).row(
        "tah.accumulate_logits",
        "f32",
        dev,
        format!("n={n} specials"),
    ));
    rows
}
