//! Ring schedules for TASP (topology-aware sequence parallelism, arXiv 2509.26541).
//!
//! On `n` fully connected ranks, Ring AllGather keeps 2 of each rank's `n - 1` links busy. TASP
//! instead splits each rank's K/V block into sub-chunks and sends sub-chunk `c` around the
//! directed Hamiltonian cycle `rings[c]`; when the rings are `n - 1` arc-disjoint cycles that use
//! every ordered pair once (a *Hamiltonian decomposition* of the complete digraph `K*_n`), every
//! directed link carries data at every step.
//!
//! * [`hamiltonian_decomposition`]: `n - 1` rings for every `n >= 2` except 4 and 6 (which have
//!   none, by Tillson's theorem; there the largest arc-disjoint set is returned as
//!   [`ScheduleKind::Fallback`]).
//! * [`single_ring`]: the Ring Attention baseline.
//! * [`multi_node`]: `u` nodes of `m` ranks, `m` composite rings chaining one Hamiltonian path of
//!   each node (the paper's multi-node scheme).
//! * [`validate`]: the independent check every constructor runs before returning.
//!
//! Constructions, proofs in brief and measured times: docs/tasp.md, section Topology.

mod construct;
pub mod search;

use crate::error::{Error, Result};

/// The largest rank count the constructors and [`validate`] accept. A schedule over n ranks holds
/// about n^2 entries (n = 4096: 4095 rings of 4096 ranks, 134 MB of `usize`).
pub const MAX_RANKS: usize = 4096;

/// A directed Hamiltonian cycle over ranks 0..n, as the cyclic order of ranks: `ring[0] -> ring[1] -> ... -> ring[n-1] -> ring[0]`.
pub type Ring = Vec<usize>;

/// Which construction a [`RingSchedule`] is, and so which properties [`validate`] checks.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ScheduleKind {
    /// n-1 arc-disjoint directed Hamiltonian cycles covering every ordered pair exactly once.
    Decomposition,
    /// A single ring 0 -> 1 -> ... -> n-1 -> 0 (Ring Attention's baseline).
    SingleRing,
    /// n = 4, 6: no decomposition exists (Tillson); the largest set of arc-disjoint Hamiltonian
    /// cycles (2 for n = 4, 4 for n = 6, found and proved maximal by exhaustive search). Every
    /// rank's data still reaches every other rank; `link_utilisation` is (n-2)/(n-1).
    /// [`search::double_cover`] is a full-utilisation alternative outside this type.
    Fallback,
    /// u nodes of m GPUs: m composite rings, each the chain of Hamiltonian path p on node 0, 1, ..., u-1 (paper's scheme).
    /// Global rank = node * m + local rank.
    MultiNode { nodes: usize, per_node: usize },
}

/// A TASP ring schedule. Built only by the constructors of this module (which validate it) or by
/// hand (then check it with [`validate`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RingSchedule {
    pub n: usize,
    pub kind: ScheduleKind,
    /// Arc-disjoint directed Hamiltonian cycles over all n ranks. Each rank's KV block is split into rings.len() sub-chunks, sub-chunk c travels along `rings[c]`.
    pub rings: Vec<Ring>,
}

impl RingSchedule {
    /// rank -> peer -> Some(index of the ring that carries the arc rank->peer), None when no ring uses that arc.
    /// (On a schedule that fails [`validate`] and uses an arc twice, the later ring wins.)
    pub fn routing_table(&self) -> Vec<Vec<Option<usize>>> {
        let n = self.n;
        let mut t = vec![vec![None; n]; n];
        for (c, ring) in self.rings.iter().enumerate() {
            for (a, b) in arcs(ring) {
                if a < n && b < n {
                    t[a][b] = Some(c);
                }
            }
        }
        t
    }

    /// Fraction of the n(n-1) directed links that carry data at every step (1.0 for a decomposition, 1/(n-1) for a single ring when n>2).
    /// Counted as distinct arcs used by the rings over n(n-1); for [`ScheduleKind::MultiNode`] the
    /// denominator still counts every ordered pair, inter-node ones included (see
    /// [`RingSchedule::intra_node_link_utilisation`]).
    pub fn link_utilisation(&self) -> f64 {
        let n = self.n;
        if n < 2 {
            return 0.0;
        }
        let mut used = vec![false; n * n];
        let mut count = 0usize;
        for ring in &self.rings {
            for (a, b) in arcs(ring) {
                if a < n && b < n && a != b && !used[a * n + b] {
                    used[a * n + b] = true;
                    count += 1;
                }
            }
        }
        count as f64 / (n * (n - 1)) as f64
    }

    /// Multi-node schedules: the arcs (sender, receiver) whose ends are on different nodes, sorted.
    /// Each carries one sub-chunk per step. Empty for every other kind.
    pub fn inter_node_links(&self) -> Vec<(usize, usize)> {
        let ScheduleKind::MultiNode { per_node, .. } = self.kind else {
            return Vec::new();
        };
        if per_node == 0 {
            return Vec::new();
        }
        let mut out: Vec<(usize, usize)> = self
            .rings
            .iter()
            .flat_map(|r| arcs(r))
            .filter(|&(a, b)| a / per_node != b / per_node)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Multi-node schedules with at least 2 ranks per node: the fraction of the intra-node links
    /// (u * m(m-1)) that carry data at every step (1.0 for the schedules [`multi_node`] builds).
    /// None for other kinds and for one rank per node.
    pub fn intra_node_link_utilisation(&self) -> Option<f64> {
        let ScheduleKind::MultiNode { nodes, per_node } = self.kind else {
            return None;
        };
        if per_node < 2 || nodes == 0 {
            return None;
        }
        let n = self.n;
        let mut used = vec![false; n * n];
        let mut count = 0usize;
        for ring in &self.rings {
            for (a, b) in arcs(ring) {
                if a < n && b < n && a / per_node == b / per_node && !used[a * n + b] {
                    used[a * n + b] = true;
                    count += 1;
                }
            }
        }
        Some(count as f64 / (nodes * per_node * (per_node - 1)) as f64)
    }
}

/// The directed arcs of a cyclic order, ring[i] -> ring[i+1], wrapping.
fn arcs(ring: &[usize]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let len = ring.len();
    (0..len).map(move |i| (ring[i], ring[(i + 1) % len]))
}

fn check_n(op: &'static str, n: usize) -> Result<()> {
    if n < 2 {
        return Err(Error::invalid(
            op,
            format!("n = {n}: a ring schedule needs at least 2 ranks"),
        ));
    }
    if n > MAX_RANKS {
        return Err(Error::invalid(
            op,
            format!("n = {n} exceeds the limit of {MAX_RANKS} ranks"),
        ));
    }
    Ok(())
}

/// A Hamiltonian decomposition of K*_n (n - 1 arc-disjoint rings using every ordered pair once)
/// for n >= 2 except 4 and 6, where no decomposition exists and the largest arc-disjoint set is
/// returned as [`ScheduleKind::Fallback`] (2 rings for n = 4, 4 for n = 6). Constructions:
/// n = 2: the 2-cycle; n prime: step-k cycles; n odd: 1-rotational (zigzag); n even >= 8: the
/// odd decomposition of K*_{n-1} plus a closed-form rainbow path. Rings of a decomposition or
/// fallback are listed starting at rank 0. Deterministic; validated before it is returned.
pub fn hamiltonian_decomposition(n: usize) -> Result<RingSchedule> {
    const OP: &str = "topology::hamiltonian_decomposition";
    check_n(OP, n)?;
    let (kind, rings) = if n == 2 {
        (ScheduleKind::Decomposition, vec![vec![0, 1]])
    } else if n == 4 || n == 6 {
        (ScheduleKind::Fallback, search::max_arc_disjoint_cycles(n)?)
    } else if construct::is_prime(n) {
        (ScheduleKind::Decomposition, construct::step_cycles(n))
    } else if n % 2 == 1 {
        (ScheduleKind::Decomposition, construct::rotational(n))
    } else {
        let rings = construct::even(n).map_err(|m| Error::invalid(OP, m))?;
        (ScheduleKind::Decomposition, rings)
    };
    let s = RingSchedule {
        n,
        kind,
        rings: rings.into_iter().map(construct::start_at_zero).collect(),
    };
    validate(&s)?;
    Ok(s)
}

/// The single ring 0 -> 1 -> ... -> n-1 -> 0 (Ring Attention's baseline), n >= 2.
pub fn single_ring(n: usize) -> Result<RingSchedule> {
    check_n("topology::single_ring", n)?;
    let s = RingSchedule {
        n,
        kind: ScheduleKind::SingleRing,
        rings: vec![(0..n).collect()],
    };
    validate(&s)?;
    Ok(s)
}

/// The odd-m 1-rotational decomposition of K*_m (m >= 3 odd): vertices Z_{m-1} plus a fixed
/// vertex, rank m - 1; ring i is [m-1, z_0 + i, ..., z_{m-2} + i] for the zigzag
/// z = 0, 1, -1, 2, -2, ... (mod m - 1). Used for odd composite n and as the base of the even
/// construction; exposed for the rainbow-path self-check ([`search::rainbow_path`]).
pub fn rotational_decomposition(m: usize) -> Result<Vec<Ring>> {
    const OP: &str = "topology::rotational_decomposition";
    check_n(OP, m)?;
    if m % 2 == 0 || m < 3 {
        return Err(Error::invalid(
            OP,
            format!("m = {m}: the 1-rotational construction needs an odd m >= 3"),
        ));
    }
    let rings = construct::rotational(m);
    validate(&RingSchedule {
        n: m,
        kind: ScheduleKind::Decomposition,
        rings: rings.clone(),
    })?;
    Ok(rings)
}

/// m Hamiltonian paths of K*_m (as vertex sequences over 0..m) that use every arc once, path p
/// starting at rank p; every rank ends exactly one path. Even m: the zigzag rows
/// p, p+1, p-1, p+2, p-2, ... (mod m). Odd m >= 7: the decomposition of K*_{m+1} with rank m
/// deleted. m = 1: the single path `[0]`. m = 3 and 5 have no such paths (they would close up into
/// a decomposition of K*_4 or K*_6): an error.
pub fn hamiltonian_paths(m: usize) -> Result<Vec<Ring>> {
    const OP: &str = "topology::hamiltonian_paths";
    if m == 0 || m > MAX_RANKS - 1 {
        return Err(Error::invalid(
            OP,
            format!("m = {m} ranks per node, expected 1..={}", MAX_RANKS - 1),
        ));
    }
    let paths = if m == 1 {
        vec![vec![0]]
    } else if m % 2 == 0 {
        construct::zigzag_paths(m)
    } else if m == 3 || m == 5 {
        return Err(Error::invalid(
            OP,
            format!(
                "m = {m}: K*_{m} has no decomposition into Hamiltonian paths (closing the paths \
                 through one extra rank would decompose K*_{} into Hamiltonian cycles, which \
                 Tillson's theorem rules out); use 1, 2, 4, 6 or >= 7 ranks per node",
                m + 1
            ),
        ));
    } else {
        construct::odd_paths(m).map_err(|e| Error::invalid(OP, e))?
    };
    check_path_decomposition(OP, m, &paths)?;
    Ok(paths)
}

/// Paths over 0..m, each visiting every vertex once, together using every arc of K*_m once, path
/// p starting at p.
fn check_path_decomposition(op: &'static str, m: usize, paths: &[Ring]) -> Result<()> {
    if paths.len() != m {
        return Err(Error::invalid(
            op,
            format!("{} paths, expected {m}", paths.len()),
        ));
    }
    let mut used = vec![false; m * m];
    for (p, path) in paths.iter().enumerate() {
        check_hamiltonian(op, m, p, path)?;
        if path[0] != p {
            return Err(Error::invalid(
                op,
                format!("path {p} starts at {}, expected {p}", path[0]),
            ));
        }
        for w in path.windows(2) {
            if std::mem::replace(&mut used[w[0] * m + w[1]], true) {
                return Err(Error::invalid(
                    op,
                    format!("arc {}->{} is on two paths", w[0], w[1]),
                ));
            }
        }
    }
    Ok(())
}

/// u = `nodes` nodes of m = `per_node` ranks (global rank = node * m + local). Inside each node,
/// the m Hamiltonian paths of [`hamiltonian_paths`]; composite ring p runs path p on node 0, then
/// path p on node 1, ..., node u-1, and from the end of node u-1's path back to the start of node
/// 0's. Every intra-node link carries data at every step; each ring adds u inter-node arcs
/// (node k -> node k+1 mod u), u * m in all ([`RingSchedule::inter_node_links`]).
/// Needs u >= 2 (with u = 1 the wrap arc would repeat an intra-node arc: use
/// [`hamiltonian_decomposition`]) and m not 3 or 5 (no path decomposition exists).
pub fn multi_node(nodes: usize, per_node: usize) -> Result<RingSchedule> {
    const OP: &str = "topology::multi_node";
    if nodes < 2 {
        return Err(Error::invalid(
            OP,
            format!(
                "nodes = {nodes}: composite rings need at least 2 nodes (for one node use \
                 hamiltonian_decomposition({per_node}))"
            ),
        ));
    }
    if per_node == 0 {
        return Err(Error::invalid(
            OP,
            "per_node = 0: a node needs at least 1 rank",
        ));
    }
    let n = nodes
        .checked_mul(per_node)
        .filter(|&n| n <= MAX_RANKS)
        .ok_or_else(|| {
            Error::invalid(
                OP,
                format!("{nodes} nodes x {per_node} ranks exceeds the limit of {MAX_RANKS} ranks"),
            )
        })?;
    let paths = hamiltonian_paths(per_node)?;
    let rings = paths
        .iter()
        .map(|path| {
            (0..nodes)
                .flat_map(|k| path.iter().map(move |&l| k * per_node + l))
                .collect()
        })
        .collect();
    let s = RingSchedule {
        n,
        kind: ScheduleKind::MultiNode { nodes, per_node },
        rings,
    };
    validate(&s)?;
    Ok(s)
}

/// `ring` visits every rank of 0..n exactly once.
pub(crate) fn check_hamiltonian(
    op: &'static str,
    n: usize,
    c: usize,
    ring: &[usize],
) -> Result<()> {
    if ring.len() != n {
        return Err(Error::invalid(
            op,
            format!("ring {c} has {} ranks, expected {n}", ring.len()),
        ));
    }
    let mut pos = vec![usize::MAX; n];
    for (p, &r) in ring.iter().enumerate() {
        if r >= n {
            return Err(Error::invalid(
                op,
                format!("ring {c} position {p}: rank {r} is not in 0..{n}"),
            ));
        }
        if pos[r] != usize::MAX {
            return Err(Error::invalid(
                op,
                format!(
                    "ring {c} visits rank {r} twice (positions {} and {p}), so it is not Hamiltonian",
                    pos[r]
                ),
            ));
        }
        pos[r] = p;
    }
    Ok(())
}

/// Checks: every ring visits every rank exactly once; rings are arc-disjoint; for Decomposition also that together they cover every ordered pair exactly once. Returns a descriptive error naming the ring/arc on failure.
///
/// Per kind, also: SingleRing: one ring, 0 -> 1 -> ... -> n-1 -> 0 (any rotation). Fallback:
/// n is 4 or 6 and there are n - 2 rings (the proven maximum). MultiNode: n = nodes * per_node,
/// nodes >= 2, per_node rings, every intra-node ordered pair used exactly once, and each ring
/// crosses between nodes exactly `nodes` times, always from node k to node k+1 (mod nodes).
pub fn validate(s: &RingSchedule) -> Result<()> {
    const OP: &str = "topology::validate";
    let n = s.n;
    check_n(OP, n)?;
    if s.rings.is_empty() {
        return Err(Error::invalid(OP, "the schedule has no rings"));
    }
    if s.rings.len() > n - 1 {
        return Err(Error::invalid(
            OP,
            format!(
                "{} rings: at most n - 1 = {} arc-disjoint Hamiltonian cycles fit in n = {n} ranks",
                s.rings.len(),
                n - 1
            ),
        ));
    }
    for (c, ring) in s.rings.iter().enumerate() {
        check_hamiltonian(OP, n, c, ring)?;
    }
    // Owner ring of every arc (rings.len() <= n - 1 <= 4095 < u16::MAX).
    const FREE: u16 = u16::MAX;
    let mut owner = vec![FREE; n * n];
    for (c, ring) in s.rings.iter().enumerate() {
        for (a, b) in arcs(ring) {
            let o = &mut owner[a * n + b];
            if *o != FREE {
                return Err(Error::invalid(
                    OP,
                    format!("arc {a}->{b} is used by ring {} and ring {c}", *o),
                ));
            }
            *o = c as u16;
        }
    }
    let missing = |filter: &dyn Fn(usize, usize) -> bool| -> Option<(usize, usize)> {
        (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .find(|&(a, b)| a != b && filter(a, b) && owner[a * n + b] == FREE)
    };
    match s.kind {
        ScheduleKind::Decomposition => {
            if s.rings.len() != n - 1 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "a decomposition of {n} ranks has n - 1 = {} rings, found {}",
                        n - 1,
                        s.rings.len()
                    ),
                ));
            }
            if let Some((a, b)) = missing(&|_, _| true) {
                return Err(Error::invalid(
                    OP,
                    format!("arc {a}->{b} is not covered by any ring"),
                ));
            }
        }
        ScheduleKind::SingleRing => {
            if s.rings.len() != 1 {
                return Err(Error::invalid(
                    OP,
                    format!("a single-ring schedule has 1 ring, found {}", s.rings.len()),
                ));
            }
            if let Some((a, b)) = arcs(&s.rings[0]).find(|&(a, b)| b != (a + 1) % n) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "ring 0 is not 0 -> 1 -> ... -> {} -> 0: rank {a} is followed by {b}",
                        n - 1
                    ),
                ));
            }
        }
        ScheduleKind::Fallback => {
            if n != 4 && n != 6 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "a fallback schedule is only for n = 4 or 6 (n = {n} has a decomposition)"
                    ),
                ));
            }
            if s.rings.len() != n - 2 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "the n = {n} fallback has n - 2 = {} rings (the largest arc-disjoint set), found {}",
                        n - 2,
                        s.rings.len()
                    ),
                ));
            }
        }
        ScheduleKind::MultiNode { nodes, per_node } => {
            if nodes < 2 || per_node == 0 || nodes.checked_mul(per_node) != Some(n) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "multi-node: {nodes} nodes x {per_node} ranks does not describe n = {n} \
                         ranks on at least 2 nodes"
                    ),
                ));
            }
            if s.rings.len() != per_node {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "multi-node: {per_node} ranks per node need {per_node} composite rings, found {}",
                        s.rings.len()
                    ),
                ));
            }
            if let Some((a, b)) = missing(&|a, b| a / per_node == b / per_node) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "multi-node: intra-node arc {a}->{b} (node {}) is not used by any ring",
                        a / per_node
                    ),
                ));
            }
            for (c, ring) in s.rings.iter().enumerate() {
                let mut crossings = 0;
                for (a, b) in arcs(ring) {
                    let (ka, kb) = (a / per_node, b / per_node);
                    if ka != kb {
                        if kb != (ka + 1) % nodes {
                            return Err(Error::invalid(
                                OP,
                                format!(
                                    "multi-node: ring {c} goes from node {ka} to node {kb} \
                                     (arc {a}->{b}); composite rings go from node k to node k+1"
                                ),
                            ));
                        }
                        crossings += 1;
                    }
                }
                if crossings != nodes {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "multi-node: ring {c} crosses between nodes {crossings} times, expected {nodes}"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
