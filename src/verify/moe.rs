//! MoE rows (`moe.align`), the case `tests/moe.rs` runs too.

use super::{stage, up, Outcome, Row};
use crate::device::Device;
use crate::ops::moe;
use crate::reference::moe as reference;
use crate::testing::{first_diff, Rng};

/// How a case's expert ids are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids {
    /// Uniform over `[0, E)`.
    Uniform,
    /// Every id the same expert (`E - 1`).
    OneExpert,
    /// Skewed: half the ids to a few hot experts, the rest uniform over the even experts only
    /// (so the odd experts outside the hot set get no tokens).
    Skewed,
}

impl Ids {
    pub fn name(self) -> &'static str {
        match self {
            Ids::Uniform => "uniform",
            Ids::OneExpert => "one-expert",
            Ids::Skewed => "skewed",
        }
    }
}

/// One `moe.align` problem.
pub struct AlignCase {
    /// `[T, k]` expert ids, row-major.
    pub topk_ids: Vec<i32>,
    pub k: usize,
    pub num_experts: usize,
    pub block_size: usize,
    /// The sizes column.
    pub label: String,
}

impl AlignCase {
    /// `T` tokens of `k` ids each over `E` experts, drawn as `ids` says.
    pub fn generate(
        t: usize,
        k: usize,
        num_experts: usize,
        block_size: usize,
        ids: Ids,
        seed: u64,
    ) -> AlignCase {
        let mut r = Rng(seed);
        let e = num_experts as u64;
        let topk_ids = (0..t * k)
            .map(|_| {
                let x = match ids {
                    Ids::Uniform => r.next_u64() % e,
                    Ids::OneExpert => e - 1,
                    Ids::Skewed => {
                        if r.next_u64() % 2 == 0 {
                            r.next_u64() % e.min(3)
                        } else {
                            (r.next_u64() % e.div_ceil(2)) * 2
                        }
                    }
                };
                x as i32
            })
            .collect();
        AlignCase {
            topk_ids,
            k,
            num_experts,
            block_size,
            label: format!(
                "T={t} k={k} E={num_experts} block={block_size} {}",
                ids.name()
            ),
        }
    }

    /// `moe::align` on `dev` against the reference, bit-exact (all three outputs), plus checks
    /// of the contract that do not use the reference: the length, every flat index once, the
    /// expert of each entry matching its block's expert id.
    pub fn outcome(&self, dev: &Device) -> Outcome {
        let r = (|| {
            let n = self.topk_ids.len();
            let want = reference::align(&self.topk_ids, self.num_experts, self.block_size);
            let ids = up(dev, &self.topk_ids, "topk_ids")?;
            let (sorted, experts, total) = stage(dev, "moe::align", || {
                let a = moe::align(&ids, self.k, self.num_experts, self.block_size)?;
                Ok((
                    a.sorted_token_ids.download()?,
                    a.expert_ids.download()?,
                    a.num_tokens_post_padded.download()?,
                ))
            })?;
            let len = reference::sorted_len(n, self.num_experts, self.block_size).unwrap_or(0);
            // The contract, independently of the reference.
            if sorted.len() != len || experts.len() != len.div_ceil(self.block_size) {
                return Err(format!(
                    "lengths {} and {}, want {len} and {}",
                    sorted.len(),
                    experts.len(),
                    len.div_ceil(self.block_size)
                ));
            }
            let mut seen = vec![false; n];
            for (p, &s) in sorted.iter().enumerate() {
                if s as usize == n {
                    continue;
                }
                let i = usize::try_from(s)
                    .ok()
                    .filter(|&i| i < n && !seen[i])
                    .ok_or_else(|| format!("sorted_token_ids[{p}] = {s} is invalid or repeated"))?;
                seen[i] = true;
                if experts[p / self.block_size] != self.topk_ids[i] {
                    return Err(format!(
                        "sorted_token_ids[{p}] = {s} (expert {}) is in a block of expert {}",
                        self.topk_ids[i],
                        experts[p / self.block_size]
                    ));
                }
            }
            if let Some(i) = seen.iter().position(|&s| !s) {
                return Err(format!("flat index {i} is missing"));
            }
            if total != [want.num_tokens_post_padded] {
                Err(format!(
                    "num_tokens_post_padded {total:?}, want {} (kernel moe_align_place)",
                    want.num_tokens_post_padded
                ))
            } else if let Some(i) = first_diff(&sorted, &want.sorted_token_ids) {
                Err(format!(
                    "sorted_token_ids differs at {i}: {} vs {} (kernels moe_align_count, \
                     moe_align_place)",
                    sorted[i], want.sorted_token_ids[i]
                ))
            } else if let Some(i) = first_diff(&experts, &want.expert_ids) {
                Err(format!(
                    "expert_ids differs at {i}: {} vs {} (kernel moe_align_place)",
                    experts[i], want.expert_ids[i]
                ))
            } else {
                Ok(())
            }
        })();
        Outcome::exact(r)
    }

    pub fn row(&self, dev: &Device) -> Row {
        self.outcome(dev)
            .row("moe.align", "i32", dev, self.label.clone())
    }
}

/// The verify cases (T, k, E, block_size, ids): the bench size (T 4096, top-8, 256 experts,
/// block 64), skewed and one-expert inputs, E = 1, block 1, no tokens, T·k not a multiple of a
/// tile, more chunks than fit one per 1024 entries (T·k > 256·1024), and 1024 experts.
pub const CASES: &[(usize, usize, usize, usize, Ids)] = &[
    (4096, 8, 256, 64, Ids::Uniform),
    (4096, 8, 256, 64, Ids::Skewed),
    (1000, 2, 64, 16, Ids::OneExpert),
    (333, 3, 1, 7, Ids::Uniform),
    (517, 5, 37, 1, Ids::Uniform),
    (0, 4, 8, 4, Ids::Uniform),
    (1, 1, 1024, 128, Ids::Skewed),
    (40_000, 7, 1024, 32, Ids::Skewed),
];

/// The moe rows of one device.
pub fn rows(dev: &Device) -> Vec<Row> {
    CASES
        .iter()
        .enumerate()
        .map(|(j, &(t, k, e, b, ids))| {
            AlignCase::generate(t, k, e, b, ids, 0x3e_a119 + j as u64).row(dev)
        })
        .collect()
}
