//! Sequence-parallel attention rows (`parallel::attention::forward_simulated`), the case
//! `tests/sequence_parallel.rs` runs too.

use half::{bf16, f16};

use super::attention::{Out, Problem, Reference};
use super::{failed, Outcome, Row};
use crate::device::Device;
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::attention::{HalfFloat, MaskMode, Path};
use crate::parallel::attention::{self as sp, SpAttention, SpStats};
use crate::parallel::plan::AllGatherPlan;

/// One sequence-parallel problem: a single sequence (positions `0..seq_len`, every key valid),
/// causal (zigzag token map) or full.
pub struct Case {
    pub problem: Problem,
    pub causal: bool,
}

impl Case {
    /// Random values exact in `T` (uniform in ±2).
    pub fn generate<T: Float>(
        seq_len: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        causal: bool,
        seed: u64,
    ) -> Case {
        let mode = if causal {
            MaskMode::Causal
        } else {
            MaskMode::Full
        };
        Case {
            problem: Problem::single_sequence::<T>(seq_len, heads, kv_heads, head_dim, mode, seed),
            causal,
        }
    }

    pub fn seq_len(&self) -> usize {
        self.problem.total_q()
    }

    /// The op's configuration over `plan`.
    pub fn config<'a>(&self, plan: &'a AllGatherPlan) -> SpAttention<'a> {
        let p = &self.problem;
        SpAttention {
            plan,
            seq_len: self.seq_len(),
            heads: p.heads,
            kv_heads: p.kv_heads,
            head_dim: p.head_dim,
            scale: p.scale,
            causal: self.causal,
            path: Path::Auto,
        }
    }

    /// `forward_simulated` over `plan` on `dev` in `T`, downloaded.
    pub fn run<T: HalfFloat>(&self, dev: &Device, plan: &AllGatherPlan) -> Result<(Out, SpStats)> {
        let u = self.problem.upload::<T>(dev)?;
        let (out, stats) = sp::forward_simulated(&self.config(plan), &u.q, &u.k, &u.v)?;
        Ok(((out.o.download()?, out.lse.download()?), stats))
    }

    /// Run and compare with `reference` (the f64 reference on the whole sequence: O relative L2
    /// within 1e-2, LSE within 1e-3; see [`Problem::compare_forward`]).
    pub fn check<T: HalfFloat>(
        &self,
        dev: &Device,
        plan: &AllGatherPlan,
        reference: &Reference,
    ) -> Outcome {
        match self.run::<T>(dev, plan) {
            Err(e) => Outcome::not_run(failed("parallel::attention::forward_simulated", &e)),
            Ok((out, _)) => self.problem.compare_forward(&out, reference),
        }
    }

    /// The verify row over `plan` (an error building the plan fails the row).
    pub fn row<T: HalfFloat>(&self, dev: &Device, name: &str, plan: Result<AllGatherPlan>) -> Row {
        let p = &self.problem;
        let mut sizes = format!(
            "L={} H={} Hkv={} D={}",
            self.seq_len(),
            p.heads,
            p.kv_heads,
            p.head_dim
        );
        let outcome = match plan {
            Err(e) => Outcome::not_run(failed("parallel::attention::forward_simulated", &e)),
            Ok(plan) => {
                let o = self.check::<T>(dev, &plan, &p.reference());
                if o.error != "-" {
                    sizes = format!("n={} rings={} {sizes}", plan.n(), plan.subs());
                }
                o
            }
        };
        outcome.row(&format!("sp_attention {name}"), T::KIND.name(), dev, sizes)
    }
}

/// Sequence-parallel attention rows: TASP rings (n = 5, 8, and 4 through its fallback) and the
/// single-ring baseline, causal (zigzag) and full, lengths that do not divide into pieces; H = 2,
/// H_kv = 1, D = 64.
pub fn rows(dev: &Device) -> Vec<Row> {
    use crate::topology;
    let tasp =
        |n: usize| topology::hamiltonian_decomposition(n).and_then(|s| AllGatherPlan::new(&s));
    let ring = |n: usize| topology::single_ring(n).and_then(|s| AllGatherPlan::new(&s));
    let case = |bf: bool, l: usize, causal: bool, seed: u64| {
        if bf {
            Case::generate::<bf16>(l, 2, 1, 64, causal, seed)
        } else {
            Case::generate::<f16>(l, 2, 1, 64, causal, seed)
        }
    };
    vec![
        case(true, 43, true, 0x5a_0001).row::<bf16>(dev, "tasp causal", tasp(5)),
        case(false, 117, false, 0x5a_0002).row::<f16>(dev, "tasp full", tasp(8)),
        case(false, 50, true, 0x5a_0003).row::<f16>(dev, "tasp-fallback causal", tasp(4)),
        case(true, 117, true, 0x5a_0004).row::<bf16>(dev, "ring causal", ring(8)),
    ]
}
