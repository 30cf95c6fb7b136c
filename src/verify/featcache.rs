//! `featcache.select` checks: the three classes and the C1 list bit-exact against the f64
//! reference ([`crate::reference::featcache`]) on random scores with many ties (values drawn
//! from a few levels), all-equal scores, zeros, and cache counts up to the table's end.
//!
//! `featcache.received` checks ([`ReceivedCase`]): the attention problems of the attention rows
//! ([`crate::verify::attention::SPECS`]: full, causal, causal with offsets either way,
//! duo-causal, varlen with empty and one-token sequences, GQA, invalid key slots) and a varlen
//! problem with fewer queries than keys, against the f64 reference with the same f32 LSE, within
//! [`tol::F32`] (exact inputs: only f32 arithmetic differs); and end to end with the LSE of
//! `attention.forward` on the same device against the reference's own LSE.

use half::{bf16, f16};

use crate::device::Device;
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::attention::{self as attn, HalfFloat, MaskMode, Path};
use crate::ops::featcache::{self, EXP_TABLE_LEN};
use crate::reference::attention as ref_attention;
use crate::reference::featcache as reference;
use crate::testing::{first_diff, rel_l2, tol, Rng};

use super::attention::{decode_problem, Problem, SPECS};
use super::{stage, Outcome, Row};

/// One selection problem.
#[derive(Clone, Debug)]
pub struct Case {
    pub label: String,
    pub his: Vec<f32>,
    pub fut: Vec<f32>,
    pub cf: Vec<u32>,
    pub cr: f64,
    pub low_mass: f64,
}

impl Case {
    /// `n` tokens; `levels` distinct score values per input (few levels: many ties; 0: all equal
    /// to 1).
    pub fn generate(n: usize, levels: u32, cr: f64, low_mass: f64, seed: u64) -> Case {
        let mut r = Rng(seed);
        let v = |r: &mut Rng| {
            if levels == 0 {
                1.0
            } else {
                (r.next_u64() % levels as u64) as f32 * 0.25
            }
        };
        let his = (0..n).map(|_| v(&mut r)).collect();
        let fut = (0..n).map(|_| v(&mut r)).collect();
        let cf = (0..n)
            .map(|_| {
                if levels == 0 {
                    0
                } else {
                    (r.next_u64() % 4) as u32 * (EXP_TABLE_LEN as u32 - 1) / 3
                }
            })
            .collect();
        Case {
            label: format!("N={n} levels={levels} cr={cr} low_mass={low_mass}"),
            his,
            fut,
            cf,
            cr,
            low_mass,
        }
    }

    /// The classes and C1 on `dev` against the reference, bit for bit.
    pub fn outcome(&self, dev: &Device) -> Outcome {
        let want = reference::score(&self.his, &self.fut, &self.cf)
            .and_then(|s| reference::select(&s, self.cr, self.low_mass));
        let want = match want {
            Ok(w) => w,
            Err(e) => return Outcome::not_run(format!("reference: {e}")),
        };
        let got = stage(dev, featcache::OP, || {
            featcache::select_host(dev, &self.his, &self.fut, &self.cf, self.cr, self.low_mass)
        });
        let (class, c1) = match got {
            Ok(v) => v,
            Err(e) => return Outcome::not_run(e),
        };
        Outcome::exact(if let Some(i) = first_diff(&class, &want.class) {
            Err(format!(
                "class[{i}] = {:?}, reference {:?}",
                class.get(i),
                want.class.get(i)
            ))
        } else if let Some(i) = first_diff(&c1, &want.c1) {
            Err(format!(
                "c1[{i}] = {:?}, reference {:?}",
                c1.get(i),
                want.c1.get(i)
            ))
        } else {
            Ok(())
        })
    }
}

/// The verify cases: ties, all equal, a size past one block, the ratio's ends.
pub fn cases() -> Vec<Case> {
    vec![
        Case::generate(1000, 5, 0.7, 0.1, 0xfc1),
        Case::generate(333, 0, 0.5, 0.25, 0xfc2),
        Case::generate(97, 3, 0.0, 0.1, 0xfc3),
        Case::generate(64, 7, 1.0, 1.0, 0xfc4),
        Case::generate(0, 5, 0.5, 0.1, 0xfc5),
    ]
}

/// The rows of one device: selection, then received in both dtypes.
pub fn rows(dev: &Device) -> Vec<Row> {
    let mut rows: Vec<Row> = cases()
        .into_iter()
        .map(|c| c.outcome(dev).row("featcache.select", "f32", dev, c.label))
        .collect();
    rows.extend(received_rows::<f16>(dev));
    rows.extend(received_rows::<bf16>(dev));
    rows
}

// ---- featcache.received -----------------------------------------------------------------------

/// One `featcache.received` problem: an attention problem (Q, K, masks; V is not read) and
/// whether the sums are kept per head.
#[derive(Clone, Debug)]
pub struct ReceivedCase {
    pub label: String,
    pub problem: Problem,
    pub per_head: bool,
}

impl ReceivedCase {
    /// The problem of attention spec `name` ([`SPECS`]) with values exact in `T`.
    pub fn spec<T: Float>(name: &str, per_head: bool, seed: u64) -> ReceivedCase {
        let s = SPECS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no attention spec {name}"));
        ReceivedCase {
            label: format!(
                "{name} seqs {:?} H={}/{} D={}",
                s.seqs, s.heads, s.kv_heads, s.d
            ),
            problem: s.problem::<T>(seed),
            per_head,
        }
    }

    /// Varlen with fewer queries than keys per sequence (queries at the end of their sequence,
    /// ~5% invalid key slots; duo-causal: TaH cache layout), values exact in `T`.
    #[allow(clippy::too_many_arguments)]
    pub fn varlen<T: Float>(
        q_lens: &[usize],
        kv_lens: &[usize],
        heads: usize,
        kv_heads: usize,
        d: usize,
        mode: MaskMode,
        per_head: bool,
        seed: u64,
    ) -> ReceivedCase {
        ReceivedCase {
            label: format!("{mode:?} q {q_lens:?} kv {kv_lens:?} H={heads}/{kv_heads} D={d}"),
            problem: decode_problem::<T>(q_lens, kv_lens, heads, kv_heads, d, mode, false, seed),
            per_head,
        }
    }

    /// The label with the output form.
    pub fn sizes(&self) -> String {
        format!(
            "{}{}",
            self.label,
            if self.per_head { " per-head" } else { "" }
        )
    }

    fn ref_problem<'a>(&'a self, valid: &'a [u8]) -> ref_attention::Problem<'a> {
        let p = &self.problem;
        ref_attention::Problem {
            q: &p.q,
            k: &p.k,
            v: &p.v,
            heads: p.heads,
            kv_heads: p.kv_heads,
            head_dim: p.head_dim,
            cu_q: &p.cu_q,
            cu_kv: &p.cu_kv,
            q_pos: &p.q_pos,
            kv_pos: &p.kv_pos,
            q_depth: &p.q_depth,
            kv_depth: &p.kv_depth,
            kv_valid: valid,
            scale: p.scale,
            mode: p.mode,
        }
    }

    /// The reference LSE of the problem (f64, `[H, total_q]`).
    pub fn reference_lse(&self) -> Vec<f64> {
        self.problem.reference().1
    }

    /// The f64 reference with the row LSE `lse`, `per_head` or summed.
    pub fn reference(&self, lse: &[f64], per_head: bool) -> Vec<f64> {
        let valid = self.problem.valid();
        reference::received_attention(&self.ref_problem(&valid), lse, per_head)
    }

    /// `featcache.received` on `dev` in `T` with the given LSE, downloaded.
    pub fn run<T: HalfFloat>(&self, dev: &Device, lse: &[f32], per_head: bool) -> Result<Vec<f32>> {
        let u = self.problem.upload::<T>(dev)?;
        let lse = dev.upload(lse, "lse")?;
        featcache::received(&u.attention(Path::Auto), &lse, per_head)?.download()
    }

    /// The op fed the reference LSE rounded to f32, against the reference given the same f32
    /// values. The inputs are then the reference's exactly (Q and K exact in `T`), so only the
    /// f32 arithmetic differs: relative L2 within [`tol::F32`] (tighter than the half-precision
    /// class [`tol::HALF`], so that one wrong mask element among thousands fails; NaN, a missing
    /// or unwritten key fail).
    pub fn outcome<T: HalfFloat>(&self, dev: &Device) -> Outcome {
        let lse: Vec<f32> = self.reference_lse().iter().map(|&x| x as f32).collect();
        let want = self.reference(
            &lse.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            self.per_head,
        );
        match stage(dev, featcache::RECEIVED_OP, || {
            self.run::<T>(dev, &lse, self.per_head)
        }) {
            Ok(got) => compare(&got, &want, tol::F32),
            Err(e) => Outcome::not_run(e),
        }
    }

    /// End to end: the LSE of `attention.forward` (on `dev`, [`Path::Auto`]) fed to the op,
    /// against the reference received from the reference LSE: within [`tol::HALF`] (the LSE of
    /// `attention.forward` is within [`tol::LSE_ABS`] of the reference's, a relative error of
    /// each probability of that order).
    pub fn outcome_end_to_end<T: HalfFloat>(&self, dev: &Device) -> Outcome {
        let want = self.reference(&self.reference_lse(), self.per_head);
        let got = stage(dev, featcache::RECEIVED_OP, || {
            let u = self.problem.upload::<T>(dev)?;
            let a = u.attention(Path::Auto);
            let out = attn::forward(&a)?.checked()?;
            featcache::received(&a, &out.lse, self.per_head)?.download()
        });
        match got {
            Ok(got) => compare(&got, &want, tol::HALF),
            Err(e) => Outcome::not_run(e),
        }
    }
}

/// Relative L2 within `tol`, lengths equal.
fn compare(got: &[f32], want: &[f64], tol: f64) -> Outcome {
    let e = rel_l2(got, want);
    let result = if got.len() != want.len() {
        Err(format!(
            "{} values, the reference has {}",
            got.len(),
            want.len()
        ))
    } else if e > tol {
        Err(format!("relative L2 {e:.2e} > {tol:.0e}"))
    } else {
        Ok(())
    };
    Outcome {
        error: format!("{e:.2e}"),
        result,
    }
}

/// The received cases of the verify rows, values exact in `T`.
pub fn received_cases<T: Float>() -> Vec<ReceivedCase> {
    let mut v: Vec<ReceivedCase> = SPECS
        .iter()
        .enumerate()
        .map(|(i, s)| ReceivedCase::spec::<T>(s.name, i % 2 == 1, 0xfc_7ec0 + i as u64))
        .collect();
    v.push(ReceivedCase::varlen::<T>(
        &[5, 70, 1],
        &[40, 150, 33],
        4,
        2,
        64,
        MaskMode::Causal,
        false,
        0xfc_7ed0,
    ));
    v
}

/// `featcache.received` rows of one dtype: the cases with the reference LSE, and the causal
/// spec end to end (the LSE of `attention.forward`).
fn received_rows<T: HalfFloat>(dev: &Device) -> Vec<Row> {
    let mut rows: Vec<Row> = received_cases::<T>()
        .into_iter()
        .map(|c| {
            c.outcome::<T>(dev)
                .row("featcache.received", T::KIND.name(), dev, c.sizes())
        })
        .collect();
    let c = ReceivedCase::spec::<T>("causal", false, 0xfc_7ee0);
    rows.push(c.outcome_end_to_end::<T>(dev).row(
        "featcache.received (attention.forward LSE)",
        T::KIND.name(),
        dev,
        c.sizes(),
    ));
    rows
}
