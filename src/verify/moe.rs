//! MoE rows (`moe.align`, `moe.route`, `moe.permute`, `moe.combine`, `moe.load`), the cases
//! `tests/moe.rs` runs too.

use super::{stage, up, Outcome, Row};
use crate::device::Device;
use crate::ops::moe;
use crate::reference::moe as reference;
use crate::testing::{first_diff, rel_l2, tol, Rng};

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
    let mut rows: Vec<Row> = CASES
        .iter()
        .enumerate()
        .map(|(j, &(t, k, e, b, ids))| {
            AlignCase::generate(t, k, e, b, ids, 0x3e_a119 + j as u64).row(dev)
        })
        .collect();
    rows.extend(route_rows(dev));
    rows.extend(load_rows(dev));
    rows
}

// ---- moe.route --------------------------------------------------------------------------------

/// How a route case's logits are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Uniform in ±8.
    Uniform,
    /// Small integers in -3..=3 (many exact ties, -0.0 and +0.0 both present).
    Ties,
    /// Uniform, with about a quarter of the entries −inf (never a whole row).
    SomeNegInf,
}

impl Logits {
    pub fn name(self) -> &'static str {
        match self {
            Logits::Uniform => "uniform",
            Logits::Ties => "ties",
            Logits::SomeNegInf => "some-neg-inf",
        }
    }
}

/// One `moe.route` problem.
pub struct RouteCase {
    /// `[T, r·N]` logits, row-major.
    pub logits: Vec<f32>,
    pub tokens: usize,
    pub num_experts: usize,
    pub params: moe::RouteParams,
    /// The sizes column.
    pub label: String,
}

impl RouteCase {
    /// `tokens` rows of `r·n` logits drawn as `kind`.
    pub fn generate(
        tokens: usize,
        n: usize,
        params: moe::RouteParams,
        kind: Logits,
        seed: u64,
    ) -> RouteCase {
        let mut g = Rng(seed);
        let e = params.r * n;
        let mut logits: Vec<f32> = (0..tokens * e)
            .map(|_| match kind {
                Logits::Uniform => ((g.unit() - 0.5) * 16.0) as f32,
                Logits::Ties => {
                    let v = (g.next_u64() % 7) as f32 - 3.0;
                    if v == 0.0 && g.next_u64() % 2 == 0 {
                        -0.0
                    } else {
                        v
                    }
                }
                Logits::SomeNegInf => {
                    if g.next_u64() % 4 == 0 {
                        f32::NEG_INFINITY
                    } else {
                        ((g.unit() - 0.5) * 16.0) as f32
                    }
                }
            })
            .collect();
        if kind == Logits::SomeNegInf {
            // One finite logit per row among the layer's own experts (never masked).
            let own = params.layer_in_group * n;
            for t in 0..tokens {
                let v = own + (g.next_u64() % n as u64) as usize;
                logits[t * e + v] = ((g.unit() - 0.5) * 16.0) as f32;
            }
        }
        let psr = params.psr.map_or("inference".to_string(), |p| {
            format!(
                "step={} t_s={} t_e={} pool={}",
                p.step,
                p.t_s,
                p.t_e,
                reference::psr_pool_size(n, params.r, p.step, p.t_s, p.t_e)
            )
        });
        RouteCase {
            label: format!(
                "T={tokens} N={n} r={} j={} k={}{} {psr} {}",
                params.r,
                params.layer_in_group,
                params.top_k,
                if params.renormalize { " renorm" } else { "" },
                kind.name()
            ),
            logits,
            tokens,
            num_experts: n,
            params,
        }
    }

    /// `moe::route` on `dev` against the f64 reference: ids bit-exact, weights rel-L2 <= 1e-5;
    /// and contract checks without the reference (no masked expert chosen, ids distinct and in
    /// range, each row's ids in non-increasing logit order).
    pub fn outcome(&self, dev: &Device) -> Outcome {
        let (want_ids, want_w) = reference::route_f64(&self.logits, self.tokens, &self.params);
        let r = (|| {
            let l = up(dev, &self.logits, "logits")?;
            let (ids, ws) = stage(dev, "moe::route", || {
                let o = moe::route(&l, self.tokens, &self.params)?;
                Ok((o.topk_ids.download()?, o.topk_weights.download()?))
            })?;
            let k = self.params.top_k;
            let e = self.params.r * self.num_experts;
            let mask = reference::psr_mask(self.num_experts, &self.params);
            for t in 0..self.tokens {
                let row = &ids[t * k..(t + 1) * k];
                for (j, &v) in row.iter().enumerate() {
                    let ok = usize::try_from(v).is_ok_and(|v| v < e && !mask[v]);
                    if !ok || row[..j].contains(&v) {
                        return Err(format!(
                            "token {t}: id {v} at slot {j} is invalid, masked or repeated"
                        ));
                    }
                    if j > 0 {
                        let (a, b) = (
                            self.logits[t * e + row[j - 1] as usize],
                            self.logits[t * e + v as usize],
                        );
                        if a < b {
                            return Err(format!(
                                "token {t}: slot {j} has a larger logit than slot {}",
                                j - 1
                            ));
                        }
                    }
                }
            }
            if let Some(i) = first_diff(&ids, &want_ids) {
                return Err(format!(
                    "topk_ids differs at {i} (token {}, slot {}): {} vs {} (kernel moe_route)",
                    i / k,
                    i % k,
                    ids[i],
                    want_ids[i]
                ));
            }
            Ok(rel_l2(&ws, &want_w))
        })();
        match r {
            Ok(err) if err <= tol::F32 => Outcome {
                error: format!("{err:.1e}"),
                result: Ok(()),
            },
            Ok(err) => Outcome {
                error: format!("{err:.1e}"),
                result: Err(format!(
                    "topk_weights rel-L2 {err:.2e} > {:.0e} (kernel moe_route)",
                    tol::F32
                )),
            },
            Err(e) => Outcome {
                error: "-".into(),
                result: Err(e),
            },
        }
    }

    pub fn row(&self, dev: &Device) -> Row {
        self.outcome(dev)
            .row("moe.route", "f32", dev, self.label.clone())
    }
}

/// `RouteParams` shorthand for the cases: (r, layer_in_group, top_k, renormalize, psr as
/// (step, t_s, t_e)).
pub fn route_params(
    r: usize,
    j: usize,
    k: usize,
    renormalize: bool,
    psr: Option<(u64, u64, u64)>,
) -> moe::RouteParams {
    moe::RouteParams {
        r,
        layer_in_group: j,
        layer: 4 * 3 + j,
        top_k: k,
        renormalize,
        psr: psr.map(|(step, t_s, t_e)| moe::Psr {
            step,
            t_s,
            t_e,
            seed: 0x5eed,
        }),
    }
}

/// The route verify cases: (T, N, r, layer_in_group, k, renormalize, psr, logits).
#[allow(clippy::type_complexity)]
pub const ROUTE_CASES: &[(
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
    Option<(u64, u64, u64)>,
    Logits,
)] = &[
    (
        4096,
        64,
        4,
        1,
        8,
        true,
        Some((500, 100, 1100)),
        Logits::Uniform,
    ),
    (4096, 64, 4, 3, 8, false, None, Logits::Uniform),
    (1000, 16, 4, 0, 6, true, Some((50, 100, 1100)), Logits::Ties),
    (
        777,
        8,
        3,
        2,
        4,
        false,
        Some((2000, 100, 1100)),
        Logits::SomeNegInf,
    ),
    (333, 7, 1, 0, 7, true, Some((9, 1, 5)), Logits::Ties),
    (1, 256, 4, 2, 1, false, Some((3, 0, 7)), Logits::Uniform),
    (
        129,
        128,
        8,
        5,
        32,
        true,
        Some((41, 40, 42)),
        Logits::Uniform,
    ),
];

fn route_rows(dev: &Device) -> Vec<Row> {
    ROUTE_CASES
        .iter()
        .enumerate()
        .map(|(i, &(t, n, r, j, k, renorm, psr, kind))| {
            RouteCase::generate(
                t,
                n,
                route_params(r, j, k, renorm, psr),
                kind,
                0x40_07e + i as u64,
            )
            .row(dev)
        })
        .collect()
}

// ---- moe.load ---------------------------------------------------------------------------------

/// One `moe.load` problem: ids over `r·N` virtual experts.
pub struct LoadCase {
    pub topk_ids: Vec<i32>,
    pub num_experts: usize,
    pub r: usize,
    pub label: String,
}

impl LoadCase {
    /// `n` ids over `r·num_experts` experts, drawn as `ids` says.
    pub fn generate(n: usize, num_experts: usize, r: usize, ids: Ids, seed: u64) -> LoadCase {
        let a = AlignCase::generate(n, 1, num_experts * r, 1, ids, seed);
        LoadCase {
            topk_ids: a.topk_ids,
            num_experts,
            r,
            label: format!("n={n} N={num_experts} r={r} {}", ids.name()),
        }
    }

    /// `moe::load` against the reference, bit-exact, and the sums (each total is `n`).
    pub fn outcome(&self, dev: &Device) -> Outcome {
        let r = (|| {
            let (we, wl) = reference::load(&self.topk_ids, self.num_experts, self.r);
            let ids = up(dev, &self.topk_ids, "topk_ids")?;
            let (pe, pl) = stage(dev, "moe::load", || {
                let o = moe::load(&ids, self.num_experts, self.r)?;
                Ok((o.per_expert.download()?, o.per_layer.download()?))
            })?;
            let n = self.topk_ids.len() as i64;
            let se: i64 = pe.iter().map(|&x| x as i64).sum();
            let sl: i64 = pl.iter().map(|&x| x as i64).sum();
            if se != n || sl != n {
                return Err(format!("counts sum to {se} and {sl}, want {n}"));
            }
            if let Some(i) = first_diff(&pe, &we) {
                Err(format!(
                    "per_expert differs at {i}: {} vs {} (kernel moe_load)",
                    pe[i], we[i]
                ))
            } else if let Some(i) = first_diff(&pl, &wl) {
                Err(format!(
                    "per_layer differs at {i}: {} vs {} (kernel moe_load)",
                    pl[i], wl[i]
                ))
            } else {
                Ok(())
            }
        })();
        Outcome::exact(r)
    }

    pub fn row(&self, dev: &Device) -> Row {
        self.outcome(dev)
            .row("moe.load", "i32", dev, self.label.clone())
    }
}

/// The load verify cases: (ids, N, r, kind).
pub const LOAD_CASES: &[(usize, usize, usize, Ids)] = &[
    (4096 * 8, 64, 4, Ids::Uniform),
    (4096 * 8, 64, 4, Ids::Skewed),
    (1000, 7, 3, Ids::OneExpert),
    (0, 5, 2, Ids::Uniform),
    (13, 1024, 1, Ids::Uniform),
];

fn load_rows(dev: &Device) -> Vec<Row> {
    LOAD_CASES
        .iter()
        .enumerate()
        .map(|(i, &(n, e, r, ids))| LoadCase::generate(n, e, r, ids, 0x10ad + i as u64).row(dev))
        .collect()
}
