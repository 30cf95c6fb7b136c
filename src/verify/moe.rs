//! MoE rows (`moe.align`, `moe.route`, `moe.permute`, `moe.combine`, `moe.load`), the cases
//! `tests/moe.rs` runs too.

use super::{stage, up, Outcome, Row};
use crate::device::Device;
use crate::dtype::Float;
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
    rows.extend(permute_rows(dev));
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

// ---- moe.permute / moe.combine ----------------------------------------------------------------

/// One `moe.permute` + `moe.combine` problem: router ids `[T, k]`, token rows `[T, d]`, expert
/// outputs `[len, d]` and weights `[T, k]`, with values exact in every float type.
pub struct PermuteCase {
    pub align: AlignCase,
    pub d: usize,
    /// `[T, d]` token rows.
    pub x: Vec<f32>,
    /// `[len, d]` expert outputs (len = the aligned length).
    pub expert_out: Vec<f32>,
    /// `[T, k]` weights.
    pub weights: Vec<f32>,
    pub label: String,
}

impl PermuteCase {
    /// `t` tokens of width `d`, `k` ids each over `e` experts, block `b`.
    pub fn generate(
        t: usize,
        d: usize,
        k: usize,
        e: usize,
        b: usize,
        ids: Ids,
        seed: u64,
    ) -> PermuteCase {
        let align = AlignCase::generate(t, k, e, b, ids, seed);
        let mut g = Rng(seed ^ 0x9e37);
        let len = reference::sorted_len(t * k, e, b).unwrap_or(0);
        let x = g.values_in::<half::bf16>(t * d, 4.0);
        let expert_out = g.values_in::<half::bf16>(len * d, 2.0);
        let weights = (0..t * k).map(|_| g.unit() as f32).collect();
        PermuteCase {
            label: format!("{} d={d}", align.label),
            align,
            d,
            x,
            expert_out,
            weights,
        }
    }

    fn host_permuted<T: bytemuck::Pod>(&self, x: &[T]) -> Result<reference::Permuted<T>, String> {
        let a = &self.align;
        let want = reference::align(&a.topk_ids, a.num_experts, a.block_size);
        reference::permute(
            x,
            self.d,
            &want.sorted_token_ids,
            &want.expert_ids,
            want.num_tokens_post_padded,
            a.k,
            a.num_experts,
            a.block_size,
        )
    }

    /// `moe::align` then `moe::permute` of `x` as `T` on `dev`, bit-exact against the reference
    /// (rows, offsets, positions), plus the contract: `rows[positions[i]]` is token `i / k`'s row.
    pub fn permute_outcome<T: Float>(&self, dev: &Device) -> Outcome {
        let r = (|| {
            let a = &self.align;
            let xt: Vec<T> = crate::testing::to_dtype(&self.x);
            let want = self.host_permuted(&xt)?;
            let ids = up(dev, &a.topk_ids, "topk_ids")?;
            let xb = up(dev, &xt, "x")?;
            let (rows, offsets, positions) = stage(dev, "moe::permute", || {
                let al = moe::align(&ids, a.k, a.num_experts, a.block_size)?;
                let p = moe::permute(&xb, self.d, &al, a.k, a.num_experts, a.block_size)?;
                Ok((
                    p.rows.download()?,
                    p.offsets.download()?,
                    p.positions.download()?,
                ))
            })?;
            let d = self.d;
            for (i, &p) in positions.iter().enumerate() {
                let t = i / a.k;
                let ok = usize::try_from(p).is_ok_and(|p| {
                    (p + 1) * d <= rows.len()
                        && crate::testing::bits(&rows[p * d..(p + 1) * d])
                            == crate::testing::bits(&xt[t * d..(t + 1) * d])
                });
                if !ok {
                    return Err(format!(
                        "positions[{i}] = {p} does not hold token {t}'s row"
                    ));
                }
            }
            if let Some(i) = first_diff(
                &crate::testing::bits(&rows),
                &crate::testing::bits(&want.rows),
            ) {
                Err(format!(
                    "rows differ at element {i} (row {}) (kernel moe_permute_rows)",
                    i / d.max(1)
                ))
            } else if let Some(i) = first_diff(&offsets, &want.offsets) {
                Err(format!(
                    "offsets differ at {i}: {} vs {} (kernel moe_permute_index)",
                    offsets[i], want.offsets[i]
                ))
            } else if let Some(i) = first_diff(&positions, &want.positions) {
                Err(format!(
                    "positions differ at {i}: {} vs {} (kernel moe_permute_index)",
                    positions[i], want.positions[i]
                ))
            } else {
                Ok(())
            }
        })();
        Outcome::exact(r)
    }

    /// `moe::combine::<I, O>` of the expert outputs at the reference positions on `dev`, against
    /// the f64 reference: rel-L2 within 1e-5 for f32 output, 4e-3 for f16/bf16 output.
    pub fn combine_outcome<I: Float, O: Float>(&self, dev: &Device) -> Outcome {
        let a = &self.align;
        let r = (|| {
            let p = self.host_permuted(&self.x)?;
            let eo: Vec<I> = crate::testing::to_dtype(&self.expert_out);
            let want = reference::combine(&eo, &p.positions, &self.weights, self.d, a.k);
            let eb = up(dev, &eo, "expert_out")?;
            let pb = up(dev, &p.positions, "positions")?;
            let wb = up(dev, &self.weights, "weights")?;
            let y = stage(dev, "moe::combine", || {
                moe::combine::<I, O>(&eb, &pb, &wb, self.d, a.k)?.download()
            })?;
            let y32: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
            Ok(rel_l2(&y32, &want))
        })();
        let tol = if O::KIND == crate::dtype::DTypeKind::F32 {
            tol::F32
        } else {
            tol::HALF_AIM
        };
        match r {
            Ok(e) if e <= tol => Outcome {
                error: format!("{e:.1e}"),
                result: Ok(()),
            },
            Ok(e) => Outcome {
                error: format!("{e:.1e}"),
                result: Err(format!("y rel-L2 {e:.2e} > {tol:.0e} (kernel moe_combine)")),
            },
            Err(e) => Outcome {
                error: "-".into(),
                result: Err(e),
            },
        }
    }
}

/// The permute / combine verify cases: (T, d, k, E, block, ids). The first is the bench size.
pub const PERMUTE_CASES: &[(usize, usize, usize, usize, usize, Ids)] = &[
    (4096, 64, 8, 256, 64, Ids::Uniform),
    (1000, 33, 2, 64, 16, Ids::Skewed),
    (333, 7, 3, 1, 7, Ids::OneExpert),
    (0, 16, 4, 8, 4, Ids::Uniform),
    (5, 1, 1, 1024, 1, Ids::Uniform),
];

fn permute_rows(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, &(t, d, k, e, b, ids)) in PERMUTE_CASES.iter().enumerate() {
        let c = PermuteCase::generate(t, d, k, e, b, ids, 0x9e_4e + i as u64);
        rows.push(c.permute_outcome::<half::bf16>(dev).row(
            "moe.permute",
            "bf16",
            dev,
            c.label.clone(),
        ));
        rows.push(
            c.permute_outcome::<f32>(dev)
                .row("moe.permute", "f32", dev, c.label.clone()),
        );
        rows.push(c.combine_outcome::<half::bf16, half::bf16>(dev).row(
            "moe.combine",
            "bf16",
            dev,
            c.label.clone(),
        ));
        rows.push(c.combine_outcome::<f32, f32>(dev).row(
            "moe.combine",
            "f32",
            dev,
            c.label.clone(),
        ));
        rows.push(c.combine_outcome::<half::f16, f32>(dev).row(
            "moe.combine",
            "f16->f32",
            dev,
            c.label.clone(),
        ));
    }
    rows
}
