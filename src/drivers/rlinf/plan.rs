//! The cost model of a placement and the planner: collocated, disaggregated and hybrid
//! placements enumerated from the s-t cuts of the workflow graph (docs/rlinf.md).

use serde::Serialize;

use super::profile::Profile;
use crate::error::{Error, Result};

/// The most GPU splits ([`plan`]) or assignments ([`brute_force`]) one call evaluates.
pub const MAX_EVALUATIONS: usize = 5_000_000;

/// The most stage × micro-batch steps (summed over evaluations) one [`plan`] call takes.
pub const MAX_WORK: f64 = 2e9;

/// The most distinct groupings [`plan`] enumerates.
pub const MAX_GROUPINGS: usize = 100_000;

/// A set of stages that time-share the same GPUs, and how many GPUs they get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Stage indices, in the profile's topological order (the order of their turns).
    pub stages: Vec<usize>,
    pub gpus: usize,
}

/// Disjoint GPU groups covering every stage once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub groups: Vec<Group>,
}

/// How a placement shares GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One group: every stage on every GPU, time-shared.
    Collocated,
    /// One group per stage (a workflow of two or more stages).
    Disaggregated,
    /// Anything between: groups of several stages, pipelined with each other.
    Hybrid,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Collocated => "collocated",
            Kind::Disaggregated => "disaggregated",
            Kind::Hybrid => "hybrid",
        }
    }
}

impl Placement {
    /// The kind, from the group sizes.
    pub fn kind(&self) -> Kind {
        if self.groups.len() == 1 {
            Kind::Collocated
        } else if self.groups.iter().all(|g| g.stages.len() == 1) {
            Kind::Disaggregated
        } else {
            Kind::Hybrid
        }
    }

    /// GPUs used.
    pub fn gpus(&self) -> usize {
        self.groups.iter().map(|g| g.gpus).sum()
    }

    /// `[rollout, inference] 4 | [training] 4`.
    pub fn describe(&self, p: &Profile) -> String {
        self.groups
            .iter()
            .map(|g| {
                let names: Vec<&str> = g
                    .stages
                    .iter()
                    .map(|&s| p.stages()[s].name.as_str())
                    .collect();
                format!("[{}] {}", names.join(", "), g.gpus)
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// The predicted schedule of a placement: when each stage runs each micro-batch.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    /// The time of the last micro-batch leaving the last stage, seconds.
    pub makespan_s: f64,
    /// Per stage: seconds per micro-batch on its group's GPUs.
    pub stage_s: Vec<f64>,
    /// Per stage: the switch paid before its turn (0 in a group of one stage).
    pub switch_s: Vec<f64>,
    /// Per stage and micro-batch: `(start, finish)` seconds.
    pub spans: Vec<Vec<(f64, f64)>>,
    /// `Σ micro_batches · stage_s / makespan`: the mean number of stages computing at once.
    pub overlap: f64,
}

fn infeasible(msg: String) -> Error {
    Error::invalid("rlinf.plan", msg)
}

/// Checks that a placement covers each stage once with ≥ 1 GPU per group, each group's stages in
/// topological order. Returns each stage's group.
fn group_of(p: &Profile, pl: &Placement) -> Result<Vec<usize>> {
    let n = p.stages().len();
    let mut group = vec![usize::MAX; n];
    let mut rank = vec![0; n];
    for (i, &s) in p.topo_order().iter().enumerate() {
        rank[s] = i;
    }
    for (gi, g) in pl.groups.iter().enumerate() {
        if g.stages.is_empty() {
            return Err(Error::invalid(
                "rlinf.plan",
                format!("group {gi} has no stages"),
            ));
        }
        if g.gpus == 0 {
            return Err(Error::invalid(
                "rlinf.plan",
                format!("group {gi} has 0 GPUs"),
            ));
        }
        for (j, &s) in g.stages.iter().enumerate() {
            if s >= n || group[s] != usize::MAX {
                return Err(Error::invalid(
                    "rlinf.plan",
                    format!("stage index {s} is out of range or in two groups"),
                ));
            }
            if j > 0 && rank[g.stages[j - 1]] > rank[s] {
                return Err(Error::invalid(
                    "rlinf.plan",
                    format!("group {gi}: stages not in topological order"),
                ));
            }
            group[s] = gi;
        }
    }
    if let Some(s) = group.iter().position(|&g| g == usize::MAX) {
        return Err(Error::invalid(
            "rlinf.plan",
            format!("stage {:?} is in no group", p.stages()[s].name),
        ));
    }
    Ok(group)
}

/// Memory and GPU-count feasibility of one group: each stage must fit alone (time-sharing stages
/// offload when it is not their turn) and run on that many GPUs.
fn group_fits(p: &Profile, stages: &[usize], g: usize) -> std::result::Result<(), String> {
    for &s in stages {
        let st = &p.stages()[s];
        if st.time.seconds(g).is_none() {
            return Err(format!(
                "{} runs on at least {} GPUs, given {g}",
                st.name,
                st.time.min_gpus()
            ));
        }
        let m = st.memory_per_gpu_gb(g);
        if m > p.gpu_memory_gb() * (1.0 + 1e-12) {
            return Err(format!(
                "{} needs {m:.3} GB per GPU on {g} GPUs > {} GB",
                st.name,
                p.gpu_memory_gb()
            ));
        }
    }
    Ok(())
}

/// The cost model. Stage `s` in group `G` (on `g_G` GPUs) takes `t_s = t_s(g_G)` per micro-batch.
/// The stages of a group take turns in topological order (the device lock): a stage's turn
/// starts when the previous stage of its group has finished all `B` micro-batches, plus its
/// switch cost when the group has two or more stages; then it runs its micro-batches in order,
/// each as soon as its turn has begun, its previous micro-batch is done and every upstream stage
/// has produced that micro-batch (channels never block: they hold `B` micro-batches):
///
/// ```text
/// start(s, i)  = max(finish(s, i−1), max_{p→s} finish(p, i)),  finish(s, 0 − 1) := turn(s)
/// turn(s)      = finish(prev_G(s), B) + switch_s   (0 + switch_s for the first; no switch alone)
/// finish(s, i) = start(s, i) + t_s
/// makespan     = max_s finish(s, B)
/// ```
///
/// Errors when the placement is malformed or does not fit ([`Error::InvalidArgument`], op
/// `"rlinf.plan"`).
pub fn schedule(p: &Profile, pl: &Placement) -> Result<Schedule> {
    schedule_with(p, pl, None)
}

/// [`schedule`] with each stage's seconds per micro-batch given instead of profiled (the
/// pipeline's GEMM work, whose time is calibrated on the device); the fit checks still apply.
pub fn schedule_with(p: &Profile, pl: &Placement, stage_times: Option<&[f64]>) -> Result<Schedule> {
    if stage_times.is_some_and(|t| {
        t.len() != p.stages().len() || t.iter().any(|x| !x.is_finite() || *x < 0.0)
    }) {
        return Err(Error::invalid(
            "rlinf.plan",
            "stage times: one finite time >= 0 per stage",
        ));
    }
    let group = group_of(p, pl)?;
    for g in &pl.groups {
        group_fits(p, &g.stages, g.gpus).map_err(infeasible)?;
    }
    let n = p.stages().len();
    let b = p.micro_batches();
    let mut stage_s = vec![0.0; n];
    let mut switch_s = vec![0.0; n];
    for g in &pl.groups {
        for &s in &g.stages {
            let st = &p.stages()[s];
            stage_s[s] = match stage_times {
                Some(t) => t[s],
                None => st.time.seconds(g.gpus).unwrap_or(f64::INFINITY),
            };
            if g.stages.len() > 1 {
                switch_s[s] = st.switch_s;
            }
        }
    }
    let mut spans = vec![Vec::new(); n];
    let mut last_in_group: Vec<Option<usize>> = vec![None; pl.groups.len()];
    for &s in p.topo_order() {
        let gi = group[s];
        let turn = last_in_group[gi]
            .map_or(0.0, |q| spans[q].last().map_or(0.0, |x: &(f64, f64)| x.1))
            + switch_s[s];
        let mut prev = turn;
        let row: Vec<(f64, f64)> = (0..b)
            .map(|i| {
                let ready = p
                    .preds(s)
                    .iter()
                    .map(|&q| spans[q][i].1)
                    .fold(prev, f64::max);
                prev = ready + stage_s[s];
                (ready, prev)
            })
            .collect();
        spans[s] = row;
        last_in_group[gi] = Some(s);
    }
    let makespan_s = spans
        .iter()
        .map(|r| r.last().map_or(0.0, |x| x.1))
        .fold(0.0, f64::max);
    let busy: f64 = stage_s.iter().map(|t| t * b as f64).sum();
    Ok(Schedule {
        makespan_s,
        stage_s,
        switch_s,
        spans,
        overlap: busy / makespan_s,
    })
}

/// The makespan of [`schedule`], or why the placement does not fit.
fn makespan(p: &Profile, pl: &Placement) -> std::result::Result<f64, String> {
    for g in &pl.groups {
        group_fits(p, &g.stages, g.gpus)?;
    }
    schedule(p, pl)
        .map(|s| s.makespan_s)
        .map_err(|e| e.to_string())
}

/// Collocated closed form: every stage on `n` GPUs in turn,
/// `Σ_s (B · t_s(n)) + Σ_s switch_s` (switches only with two or more stages). `None` if a stage
/// cannot run on `n` GPUs.
pub fn collocated_closed_form(p: &Profile, n: usize) -> Option<f64> {
    let many = p.stages().len() > 1;
    let mut total = 0.0;
    for s in p.stages() {
        total += p.micro_batches() as f64 * s.time.seconds(n)?;
        if many {
            total += s.switch_s;
        }
    }
    Some(total)
}

/// Disaggregated closed form for stage times `t` (one group per stage): the longest source-to-sink
/// path `P` of `Σ_{v∈P} t_v + (B − 1) · max_{v∈P} t_v`. On a chain this is warm-up (the pipeline
/// fill, `Σ t`) plus the bottleneck stage times the remaining `B − 1` micro-batches.
pub fn disaggregated_closed_form(p: &Profile, t: &[f64]) -> f64 {
    let b = p.micro_batches() as f64 - 1.0;
    let n = t.len();
    // Every path's value is counted at its own maximum m: among stages with t <= m, `all[s]`
    // is the longest path sum ending at s, `hit[s]` the longest ending at s through a stage
    // with t == m.
    let mut best: f64 = 0.0;
    for &m in t {
        let mut all = vec![f64::NEG_INFINITY; n];
        let mut hit = vec![f64::NEG_INFINITY; n];
        for &s in p.topo_order() {
            if t[s] > m {
                continue;
            }
            let preds = p.preds(s);
            all[s] = t[s] + preds.iter().map(|&q| all[q]).fold(0.0, f64::max);
            hit[s] = if t[s] == m {
                all[s]
            } else {
                t[s] + preds
                    .iter()
                    .map(|&q| hit[q])
                    .fold(f64::NEG_INFINITY, f64::max)
            };
            if hit[s].is_finite() {
                best = best.max(hit[s] + b * m);
            }
        }
    }
    best
}

/// One grouping the planner considered, with its best GPU split.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub kind: Kind,
    /// The best feasible split (or, when none fits, the even-most split tried first).
    pub placement: Placement,
    /// Stage names per group, for reports.
    pub groups: Vec<Vec<String>>,
    /// Predicted makespan of the best feasible split, seconds.
    pub makespan_s: Option<f64>,
    pub feasible: bool,
    /// GPU splits evaluated (every split of all the GPUs into one positive count per group).
    pub splits: usize,
    pub feasible_splits: usize,
    /// Why no split fits (the first failure met), when none does.
    pub reason: Option<String>,
}

/// The planner's answer: every grouping considered and the fastest feasible one.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub gpus: usize,
    pub gpu_memory_gb: f64,
    pub micro_batches: usize,
    pub stages: Vec<String>,
    /// Feasible candidates by makespan, then the infeasible ones.
    pub candidates: Vec<Candidate>,
    /// Index into `candidates` of the fastest feasible one.
    pub best: Option<usize>,
    /// The collocated makespan over the best one's (≥ 1), when both fit.
    pub speedup_vs_collocated: Option<f64>,
}

impl Plan {
    /// The fastest feasible candidate of a kind.
    pub fn best_of(&self, kind: Kind) -> Option<&Candidate> {
        self.candidates
            .iter()
            .find(|c| c.feasible && c.kind == kind)
    }

    /// The fastest feasible candidate.
    pub fn best(&self) -> Option<&Candidate> {
        self.best.map(|i| &self.candidates[i])
    }
}

/// Every down-set (a set of stages closed under predecessors) as a bit mask, ascending.
fn down_sets(p: &Profile) -> Vec<u32> {
    let n = p.stages().len();
    (0u32..(1u32 << n))
        .filter(|&m| {
            p.channels()
                .iter()
                .all(|&(u, v)| m & (1 << v) == 0 || m & (1 << u) != 0)
        })
        .collect()
}

/// The groupings the planner considers: every chain of s-t cuts `∅ = D0 ⊂ D1 ⊂ … ⊂ Dk = all`
/// (each `Di` a down-set: no channel from outside into it), giving groups `Di \ D(i−1)`;
/// distinct partitions only (as sorted lists of masks).
fn cut_groupings(p: &Profile) -> Result<Vec<Vec<u32>>> {
    let n = p.stages().len();
    let all = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
    let ds = down_sets(p);
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<(u32, Vec<u32>)> = vec![(0, vec![])];
    let mut steps = 0usize;
    while let Some((d, groups)) = stack.pop() {
        if d == all {
            let mut g = groups;
            g.sort_unstable();
            seen.insert(g);
            if seen.len() > MAX_GROUPINGS {
                return Err(Error::invalid(
                    "rlinf.plan",
                    format!("more than {MAX_GROUPINGS} groupings: the workflow is too wide for the exhaustive planner"),
                ));
            }
            continue;
        }
        for &e in &ds {
            if e & d == d && e != d {
                steps += 1;
                if steps > MAX_EVALUATIONS {
                    return Err(Error::invalid(
                        "rlinf.plan",
                        format!("more than {MAX_EVALUATIONS} cut chains: the workflow is too wide for the exhaustive planner"),
                    ));
                }
                let mut g = groups.clone();
                g.push(e & !d);
                stack.push((e, g));
            }
        }
    }
    Ok(seen.into_iter().collect())
}

/// Calls `f` with every split of `n` into `k` positive parts (compositions), in lexicographic
/// order; stops early when `f` returns false.
fn compositions(n: usize, k: usize, f: &mut impl FnMut(&[usize]) -> bool) {
    fn rec(
        rest: usize,
        k: usize,
        cur: &mut Vec<usize>,
        f: &mut impl FnMut(&[usize]) -> bool,
    ) -> bool {
        if k == 1 {
            cur.push(rest);
            let go = f(cur);
            cur.pop();
            return go;
        }
        for x in 1..=rest - (k - 1) {
            cur.push(x);
            let go = rec(rest - x, k - 1, cur, f);
            cur.pop();
            if !go {
                return false;
            }
        }
        true
    }
    if k == 0 || n < k {
        return;
    }
    rec(n, k, &mut Vec::with_capacity(k), f);
}

fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

fn masks_to_groups(p: &Profile, masks: &[u32], gpus: &[usize]) -> Placement {
    let mut groups: Vec<Group> = masks
        .iter()
        .zip(gpus)
        .map(|(&m, &g)| Group {
            stages: p
                .topo_order()
                .iter()
                .copied()
                .filter(|&s| m & (1 << s) != 0)
                .collect(),
            gpus: g,
        })
        .collect();
    groups.sort_by_key(|g| {
        p.topo_order()
            .iter()
            .position(|&s| s == g.stages[0])
            .unwrap_or(usize::MAX)
    });
    Placement { groups }
}

/// Plans `gpus` GPUs: enumerates every grouping from chains of s-t cuts (collocated: one group;
/// disaggregated: one group per stage; hybrid: the rest), and for each every split of all the
/// GPUs into one positive count per group (using every GPU is never worse: times and memory per
/// GPU do not grow with GPUs), evaluates [`schedule`], and keeps each grouping's fastest
/// feasible split. The best candidate is the fastest feasible one.
pub fn plan(p: &Profile, gpus: usize) -> Result<Plan> {
    if gpus == 0 {
        return Err(Error::invalid("rlinf.plan", "0 GPUs"));
    }
    let groupings = cut_groupings(p)?;
    let total: f64 = groupings
        .iter()
        .filter(|g| g.len() <= gpus)
        .map(|g| binomial(gpus - 1, g.len() - 1))
        .sum();
    // Each evaluation is O((S + E)·B): bound the work, not only the count.
    let unit = ((p.stages().len() + p.channels().len()) * p.micro_batches()) as f64;
    if total > MAX_EVALUATIONS as f64 || total * unit > MAX_WORK {
        return Err(Error::invalid(
            "rlinf.plan",
            format!("{total:.0} GPU splits of O({unit:.0}) each to evaluate (at most {MAX_EVALUATIONS} splits and {MAX_WORK:.0e} steps): use fewer GPUs, stages or micro-batches"),
        ));
    }
    let mut cands = Vec::with_capacity(groupings.len());
    for masks in &groupings {
        let k = masks.len();
        let mut best: Option<(f64, Vec<usize>)> = None;
        let mut splits = 0;
        let mut ok = 0;
        let mut reason = None;
        if k > gpus {
            reason = Some(format!("{k} groups need at least {k} GPUs, have {gpus}"));
        }
        compositions(gpus, k, &mut |split| {
            splits += 1;
            let pl = masks_to_groups(p, masks, split);
            match makespan(p, &pl) {
                Ok(c) => {
                    ok += 1;
                    if best.as_ref().is_none_or(|(b, _)| c < *b) {
                        best = Some((c, split.to_vec()));
                    }
                }
                Err(e) => {
                    if reason.is_none() {
                        reason = Some(format!("with GPUs {}: {e}", pl.describe(p)));
                    }
                }
            }
            true
        });
        let split = match &best {
            Some((_, s)) => s.clone(),
            None => {
                // Show the most even split.
                let mut s = vec![gpus / k.max(1); k];
                for x in s.iter_mut().take(gpus % k.max(1)) {
                    *x += 1;
                }
                s
            }
        };
        let placement = masks_to_groups(p, masks, &split);
        let groups = placement
            .groups
            .iter()
            .map(|g| {
                g.stages
                    .iter()
                    .map(|&s| p.stages()[s].name.clone())
                    .collect()
            })
            .collect();
        cands.push(Candidate {
            kind: placement.kind(),
            groups,
            placement,
            makespan_s: best.as_ref().map(|b| b.0),
            feasible: best.is_some(),
            splits,
            feasible_splits: ok,
            reason: if best.is_some() { None } else { reason },
        });
    }
    cands.sort_by(|a, b| match (a.makespan_s, b.makespan_s) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let best = cands.first().filter(|c| c.feasible).map(|_| 0);
    let speedup = match (best, cands.iter().find(|c| c.kind == Kind::Collocated)) {
        (Some(b), Some(c)) => c.makespan_s.zip(cands[b].makespan_s).map(|(c, b)| c / b),
        _ => None,
    };
    Ok(Plan {
        gpus,
        gpu_memory_gb: p.gpu_memory_gb(),
        micro_batches: p.micro_batches(),
        stages: p.stages().iter().map(|s| s.name.clone()).collect(),
        candidates: cands,
        best,
        speedup_vs_collocated: speedup,
    })
}

/// The brute-force check of [`plan`]: every partition of the stages into groups (restricted
/// growth strings), and for each every GPU count per group from 1 up with a total ≤ `gpus`
/// (not only splits of all of them), evaluated with [`schedule`]. With `cut_only`, only the
/// partitions whose groups form a DAG under the channels (tested by contracting the groups and
/// sorting topologically: a different test from [`plan`]'s chains of down-sets) are kept.
/// Returns the fastest feasible placement and its makespan, and the partitions kept.
pub fn brute_force(
    p: &Profile,
    gpus: usize,
    cut_only: bool,
) -> Result<(Option<(Placement, f64)>, usize)> {
    let n = p.stages().len();
    let mut label = vec![0usize; n];
    let mut best: Option<(Placement, f64)> = None;
    let mut kept = 0usize;
    let mut evals = 0usize;
    loop {
        let k = label.iter().max().map_or(0, |&m| m + 1);
        if !cut_only || quotient_is_dag(p, &label, k) {
            kept += 1;
            let mut masks = vec![0u32; k];
            for (s, &l) in label.iter().enumerate() {
                masks[l] |= 1 << s;
            }
            // Every vector of k counts in 1..=gpus with a sum <= gpus.
            let mut g = vec![1usize; k];
            if k <= gpus {
                loop {
                    evals += 1;
                    if evals > MAX_EVALUATIONS {
                        return Err(Error::invalid(
                            "rlinf.plan",
                            "brute force: too many assignments",
                        ));
                    }
                    let pl = masks_to_groups(p, &masks, &g);
                    if let Ok(c) = makespan(p, &pl) {
                        if best.as_ref().is_none_or(|(_, b)| c < *b) {
                            best = Some((pl, c));
                        }
                    }
                    // Next vector (odometer), skipping sums over gpus.
                    let mut i = 0;
                    loop {
                        if i == k {
                            break;
                        }
                        g[i] += 1;
                        if g.iter().sum::<usize>() <= gpus {
                            break;
                        }
                        g[i] = 1;
                        i += 1;
                    }
                    if i == k {
                        break;
                    }
                }
            }
        }
        // Next restricted growth string: label[0] = 0, label[i] <= 1 + max(label[..i]).
        let mut i = n;
        loop {
            if i <= 1 {
                return Ok((best, kept));
            }
            i -= 1;
            let m = label[..i].iter().max().copied().unwrap_or(0);
            if label[i] <= m {
                label[i] += 1;
                for x in label.iter_mut().skip(i + 1) {
                    *x = 0;
                }
                break;
            }
        }
    }
}

fn quotient_is_dag(p: &Profile, label: &[usize], k: usize) -> bool {
    let mut edges = std::collections::BTreeSet::new();
    for &(u, v) in p.channels() {
        if label[u] != label[v] {
            edges.insert((label[u], label[v]));
        }
    }
    let mut indeg = vec![0; k];
    for &(_, b) in &edges {
        indeg[b] += 1;
    }
    let mut ready: Vec<usize> = (0..k).filter(|&x| indeg[x] == 0).collect();
    let mut done = 0;
    while let Some(x) = ready.pop() {
        done += 1;
        for &(a, b) in &edges {
            if a == x {
                indeg[b] -= 1;
                if indeg[b] == 0 {
                    ready.push(b);
                }
            }
        }
    }
    done == k
}

/// A markdown table of the candidates.
pub fn markdown(p: &Profile, plan: &Plan) -> String {
    let mut s = format!(
        "RLinf placement plan: {} GPUs of {} GB, {} micro-batches, stages {}\n\n",
        plan.gpus,
        plan.gpu_memory_gb,
        plan.micro_batches,
        plan.stages.join(" -> ")
    );
    s += "| # | kind | groups [stages] GPUs | predicted makespan (s) | feasible splits |\n";
    s += "|---|---|---|---|---|\n";
    for (i, c) in plan.candidates.iter().enumerate() {
        let cost = match (c.makespan_s, &c.reason) {
            (Some(m), _) => format!("{m:.3}"),
            (None, Some(r)) => format!("does not fit: {r}"),
            (None, None) => "does not fit".into(),
        };
        let mark = if Some(i) == plan.best { " (best)" } else { "" };
        s += &format!(
            "| {} | {}{} | {} | {} | {}/{} |\n",
            i + 1,
            c.kind.name(),
            mark,
            c.placement.describe(p),
            cost,
            c.feasible_splits,
            c.splits
        );
    }
    match (plan.best(), plan.speedup_vs_collocated) {
        (Some(b), Some(x)) => {
            s += &format!(
                "\nbest: {} {} ({:.3} s), {x:.2}x the collocated placement\n",
                b.kind.name(),
                b.placement.describe(p),
                b.makespan_s.unwrap_or(f64::NAN)
            )
        }
        (Some(b), None) => {
            s += &format!(
                "\nbest: {} {} ({:.3} s); collocated does not fit\n",
                b.kind.name(),
                b.placement.describe(p),
                b.makespan_s.unwrap_or(f64::NAN)
            )
        }
        _ => s += "\nno placement fits\n",
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::rlinf::profile::{Stage, TimeModel};

    fn chain(n: usize) -> Profile {
        let stages = (0..n)
            .map(|i| Stage {
                name: format!("s{i}"),
                time: TimeModel::Amdahl {
                    serial_s: 1.0,
                    parallel_s: 0.0,
                },
                memory_gb: 0.0,
                sharded_memory_gb: 0.0,
                switch_s: 0.0,
            })
            .collect();
        let ch: Vec<(String, String)> = (1..n)
            .map(|i| (format!("s{}", i - 1), format!("s{i}")))
            .collect();
        Profile::new(stages, &ch, 1.0, 2, None).unwrap()
    }

    #[test]
    fn compositions_count_binomials() {
        for n in 1..8 {
            for k in 1..=n {
                let mut c = 0;
                compositions(n, k, &mut |s| {
                    assert_eq!(s.iter().sum::<usize>(), n);
                    assert!(s.iter().all(|&x| x >= 1));
                    c += 1;
                    true
                });
                assert_eq!(c as f64, binomial(n - 1, k - 1));
            }
        }
        let mut c = 0;
        compositions(2, 3, &mut |_| {
            c += 1;
            true
        });
        assert_eq!(c, 0);
    }

    #[test]
    fn a_chain_has_prefix_down_sets_and_contiguous_groupings() {
        let p = chain(4);
        assert_eq!(down_sets(&p), vec![0b0, 0b1, 0b11, 0b111, 0b1111]);
        // Contiguous segmentations of 4 stages: 2^3.
        assert_eq!(cut_groupings(&p).unwrap().len(), 8);
    }
}
