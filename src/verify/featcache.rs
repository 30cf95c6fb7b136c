//! `featcache.select` checks: the three classes and the C1 list bit-exact against the f64
//! reference ([`crate::reference::featcache`]) on random scores with many ties (values drawn
//! from a few levels), all-equal scores, zeros, and cache counts up to the table's end.
//!
//! The feature-ring ops (`featcache.gather`, `.scatter`, `.reuse`, `.age`): [`RingCase`] runs a
//! multi-step sampling sequence (per step: gather the recomputed tokens, scatter new rows at a
//! decreasing timestep, so the rings fill and wrap; reuse the others; age the counters) on a
//! device and on the host model in lockstep, and compares every output bit for bit (the ops are
//! exact by construction, see `ops::featcache::ring`).
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
use crate::ops::featcache::{self, Ring, EXP_TABLE_LEN};
use crate::reference::attention as ref_attention;
use crate::reference::featcache as reference;
use crate::testing::{first_diff, rel_l2, tol, Rng};

use super::attention::{decode_problem, Problem, SPECS};
use super::{stage, up, Outcome, Row};

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
    for c in ring_cases() {
        for (op, o) in RING_OPS.iter().zip(c.outcomes(dev)) {
            rows.push(o.row(op, "f32", dev, c.label.clone()));
        }
    }
    rows.extend(received_rows::<f16>(dev));
    rows.extend(received_rows::<bf16>(dev));
    rows.push(driver_outcome(dev, 0x5d1f).row(
        "drivers::specdiff (cr 0 = no cache; cr 0.5 shares)",
        "bf16 GEMM/attention, f32 cache",
        dev,
        "DiT 64 tokens, d 128, 1 block, 4 steps".into(),
    ));
    rows
}

/// The ring ops, in the order of [`RingCase::outcomes`].
pub const RING_OPS: [&str; 4] = [
    "featcache.gather",
    "featcache.scatter",
    "featcache.reuse",
    "featcache.age",
];

/// One step of a sampling sequence.
#[derive(Clone, Debug)]
pub struct Step {
    /// The timestep (decreasing over the steps; equal steps give zero gaps).
    pub t_now: f32,
    /// The recomputed tokens (distinct, in random order).
    pub c1: Vec<u32>,
    /// Their new rows `[c1.len(), w]`.
    pub rows: Vec<f32>,
    /// The classes after the scatter: 1 for `c1`; 2 or 3 for cached tokens; 1 for tokens never
    /// cached.
    pub class: Vec<u8>,
}

/// A multi-step sequence of the ring ops on `n` tokens of width `w`.
#[derive(Clone, Debug)]
pub struct RingCase {
    pub label: String,
    pub n: usize,
    pub w: usize,
    /// The starting features `[n, w]`.
    pub x: Vec<f32>,
    /// The starting counters (some near and past the table's end).
    pub cf: Vec<u32>,
    pub steps: Vec<Step>,
}

impl RingCase {
    /// `steps` steps, each recomputing about `frac` of the tokens (at least one when n > 0);
    /// every fourth step repeats the previous timestep (zero gaps).
    pub fn generate(n: usize, w: usize, steps: usize, frac: f64, seed: u64) -> RingCase {
        let mut r = Rng(seed);
        let val = |r: &mut Rng| ((r.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0;
        let x = (0..n * w).map(|_| val(&mut r)).collect();
        let cf = (0..n)
            .map(|_| match r.next_u64() % 4 {
                0 => EXP_TABLE_LEN as u32 - 2,
                1 => EXP_TABLE_LEN as u32 + 7,
                _ => (r.next_u64() % 6) as u32,
            })
            .collect();
        let mut cached = vec![false; n];
        let mut t = 1.0f32;
        let mut out = Vec::new();
        for s in 0..steps {
            if s % 4 != 3 {
                t -= 1.0 / (steps as f32 + 1.0) * (1 + r.next_u64() % 2) as f32;
            }
            // A random subset of about frac·n tokens, shuffled.
            let mut perm: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                perm.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
            }
            let m = if n == 0 {
                0
            } else {
                ((frac * n as f64).round() as usize).clamp(1, n)
            };
            let c1 = perm[..m].to_vec();
            for &c in &c1 {
                cached[c as usize] = true;
            }
            let rows = (0..m * w).map(|_| val(&mut r)).collect();
            let mut class: Vec<u8> = cached
                .iter()
                .map(|&c| if c { 2 + (r.next_u64() % 2) as u8 } else { 1 })
                .collect();
            for &c in &c1 {
                class[c as usize] = 1;
            }
            out.push(Step {
                t_now: t,
                c1,
                rows,
                class,
            });
        }
        RingCase {
            label: format!("n={n} w={w} steps={steps} frac={frac}"),
            n,
            w,
            x,
            cf,
            steps: out,
        }
    }

    /// The four ops' outcomes on `dev` ([`RING_OPS`] order), each bit-exact against the host
    /// model over the whole sequence (gather's rows; scatter's x and ring; reuse's x; age's cf).
    pub fn outcomes(&self, dev: &Device) -> [Outcome; 4] {
        let mut res: [std::result::Result<(), String>; 4] = [Ok(()), Ok(()), Ok(()), Ok(())];
        let mut ran = [true; 4];
        let r = self.run(dev, &mut res);
        if let Err((k, e)) = r {
            res[k] = Err(e);
            ran[k] = false;
            for (rk, rn) in res.iter_mut().zip(ran.iter_mut()).skip(k + 1) {
                if rk.is_ok() {
                    *rk = Err("not run: an earlier op of the sequence failed".into());
                    *rn = false;
                }
            }
        }
        let mut out = res.map(Outcome::exact);
        for (o, r) in out.iter_mut().zip(ran) {
            if !r {
                o.error = "-".into();
            }
        }
        out
    }

    /// The sequence; a mismatch goes into `res` (the first per op), an op's failure ends it.
    fn run(
        &self,
        dev: &Device,
        res: &mut [std::result::Result<(), String>; 4],
    ) -> std::result::Result<(), (usize, String)> {
        let (n, w) = (self.n, self.w);
        let mut want_x = self.x.clone();
        let mut want_cf = self.cf.clone();
        let mut want_ring = reference::Ring::new(n, w);
        let setup = |e: String| (0, e);
        let mut x = up(dev, &self.x, "x").map_err(setup)?;
        let mut cf = up(dev, &self.cf, "cf").map_err(setup)?;
        let mut ring = stage(dev, "featcache.ring", || Ring::new(dev, n, w)).map_err(setup)?;
        let note = |slot: &mut std::result::Result<(), String>, e: Option<String>| {
            if let (Ok(()), Some(e)) = (&*slot, e) {
                *slot = Err(e);
            }
        };
        for (s, st) in self.steps.iter().enumerate() {
            let c1 = up(dev, &st.c1, "c1").map_err(setup)?;
            let rows = up(dev, &st.rows, "rows").map_err(setup)?;
            let class = up(dev, &st.class, "class").map_err(setup)?;
            // gather
            let want = reference::gather(&want_x, w.max(1), &st.c1).map_err(|e| (0, e))?;
            let got = stage(dev, RING_OPS[0], || {
                featcache::gather(&x, w, &c1)?.download()
            })
            .map_err(|e| (0, e))?;
            note(&mut res[0], diff(s, "rows", &got, &want));
            // scatter
            reference::scatter(
                &st.rows,
                &st.c1,
                st.t_now,
                &mut want_x,
                want_ring.view_mut(),
            )
            .map_err(|e| (1, format!("reference: {e}")))?;
            let got = stage(dev, RING_OPS[1], || {
                featcache::scatter(&rows, &c1, st.t_now, &mut x, &mut ring)?;
                Ok((x.download()?, ring.to_host()?))
            })
            .map_err(|e| (1, e))?;
            note(&mut res[1], diff(s, "x", &got.0, &want_x));
            note(&mut res[1], ring_diff(s, &got.1, &want_ring));
            // reuse
            reference::reuse(&st.class, want_ring.view(), st.t_now, &mut want_x)
                .map_err(|e| (2, format!("reference: {e}")))?;
            let got = stage(dev, RING_OPS[2], || {
                featcache::reuse(&class, &ring, st.t_now, &mut x)?;
                x.download()
            })
            .map_err(|e| (2, e))?;
            note(&mut res[2], diff(s, "x", &got, &want_x));
            // age
            reference::age(&st.class, &mut want_cf, EXP_TABLE_LEN as u32 - 1)
                .map_err(|e| (3, format!("reference: {e}")))?;
            let got = stage(dev, RING_OPS[3], || {
                featcache::age(&class, &mut cf)?;
                cf.download()
            })
            .map_err(|e| (3, e))?;
            note(&mut res[3], diff(s, "cf", &got, &want_cf));
            // Keep the device state equal to the host model's, so one mismatch is reported once.
            if res.iter().any(|r| r.is_err()) {
                x = up(dev, &want_x, "x").map_err(setup)?;
                cf = up(dev, &want_cf, "cf").map_err(setup)?;
                ring = Ring::from_host(dev, &want_ring).map_err(|e| (1, e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// The first difference of `got` and `want`, bit for bit (f32 by bits).
fn diff<T: std::fmt::Debug + Copy + Bits>(
    step: usize,
    what: &str,
    got: &[T],
    want: &[T],
) -> Option<String> {
    let g: Vec<u64> = got.iter().map(|v| v.bits()).collect();
    let w: Vec<u64> = want.iter().map(|v| v.bits()).collect();
    first_diff(&g, &w).map(|i| {
        format!(
            "step {step}: {what}[{i}] = {:?}, reference {:?}",
            got.get(i),
            want.get(i)
        )
    })
}

fn ring_diff(step: usize, got: &reference::Ring, want: &reference::Ring) -> Option<String> {
    diff(step, "ring.feat", &got.feat, &want.feat)
        .or_else(|| diff(step, "ring.stamp", &got.stamp, &want.stamp))
        .or_else(|| diff(step, "ring.head", &got.head, &want.head))
        .or_else(|| diff(step, "ring.len", &got.len, &want.len))
}

/// Bits of a compared value (f32 compared by bits: NaN equals itself, -0.0 differs from 0.0).
trait Bits {
    fn bits(self) -> u64;
}
impl Bits for f32 {
    fn bits(self) -> u64 {
        self.to_bits() as u64
    }
}
impl Bits for u32 {
    fn bits(self) -> u64 {
        self as u64
    }
}
impl Bits for u8 {
    fn bits(self) -> u64 {
        self as u64
    }
}

/// The ring verify cases: sizes past one block of tokens, a DiT-like width, one token, width 1,
/// no tokens; enough steps that the rings wrap.
pub fn ring_cases() -> Vec<RingCase> {
    vec![
        RingCase::generate(300, 33, 6, 0.3, 0xf0),
        RingCase::generate(40, 1152, 5, 0.5, 0xf1),
        RingCase::generate(1, 1, 5, 1.0, 0xf2),
        RingCase::generate(1000, 1, 7, 0.2, 0xf3),
        RingCase::generate(0, 8, 2, 0.5, 0xf4),
    ]
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

/// The DiT driver on one device (`drivers::specdiff`, the tiny model, 4 steps): SpecDiff with
/// `cr = 0` reproduces no cache bit for bit, and SpecDiff at `cr = 0.5` recomputes
/// `N − floor(0.5·N)` tokens per step after the warm-up, with the final latent within 5e-2 of no
/// cache.
pub fn driver_outcome(dev: &Device, seed: u64) -> Outcome {
    use crate::drivers::specdiff::{noise, rel_l2, sample, Config, Mode, Model, WARMUP};
    let cfg = Config {
        steps: 4,
        ..Config::tiny()
    };
    let r = (|| -> std::result::Result<(), String> {
        let e = |e: crate::error::Error| super::failed("drivers::specdiff", &e);
        let m = Model::random(dev, cfg, seed).map_err(e)?;
        let z = noise(&cfg, seed ^ 0x5eed);
        let base = sample(&m, &z, Mode::NoCache, WARMUP).map_err(e)?;
        let same = sample(
            &m,
            &z,
            Mode::SpecDiff {
                cr: 0.0,
                low_mass: 0.1,
            },
            WARMUP,
        )
        .map_err(e)?;
        if let Some(i) = first_diff(&same.latent, &base.latent) {
            return Err(format!(
                "cr = 0: latent[{i}] = {}, no cache {}",
                same.latent[i], base.latent[i]
            ));
        }
        let half = sample(
            &m,
            &z,
            Mode::SpecDiff {
                cr: 0.5,
                low_mass: 0.1,
            },
            WARMUP,
        )
        .map_err(e)?;
        let want = [1.0, 1.0, 0.5, 0.5];
        if half.recomputed != want {
            return Err(format!(
                "cr = 0.5: recomputed {:?}, expected {want:?}",
                half.recomputed
            ));
        }
        let err = rel_l2(&half.latent, &base.latent);
        if err.is_nan() || err >= 5e-2 {
            return Err(format!(
                "cr = 0.5: rel L2 {err:.3e} vs no cache (limit 5e-2)"
            ));
        }
        Ok(())
    })();
    Outcome::exact(r)
}
