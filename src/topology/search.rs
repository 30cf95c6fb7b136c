//! Exhaustive searches on small complete digraphs: the n = 4 and 6 fallback (largest set of
//! arc-disjoint directed Hamiltonian cycles), a uniform double cover for n = 4 and 6, and the
//! rainbow-path search that the even-n construction replaces by a closed form (kept as an
//! independent self-check: it must fail for n = 4 and 6 and succeed for larger even n).
//!
//! All searches are deterministic (fixed vertex and candidate order, no randomness).

use super::{validate, Ring, RingSchedule, ScheduleKind};
use crate::error::{Error, Result};

const OP: &str = "topology::search";

/// Largest n the cycle enumerations accept: K*_6 has 5! = 120 directed Hamiltonian cycles
/// through a fixed vertex; K*_7 already 720 and the clique search grows fast.
pub const MAX_EXHAUSTIVE_N: usize = 6;

/// Every directed Hamiltonian cycle of K*_n, each listed once, starting at rank 0, in
/// lexicographic order.
pub fn all_hamiltonian_cycles(n: usize) -> Result<Vec<Ring>> {
    if !(2..=MAX_EXHAUSTIVE_N).contains(&n) {
        return Err(Error::invalid(
            OP,
            format!("all_hamiltonian_cycles: n = {n}, expected 2..={MAX_EXHAUSTIVE_N}"),
        ));
    }
    fn rec(cur: &mut Ring, used: &mut [bool], out: &mut Vec<Ring>) {
        if cur.len() == used.len() {
            out.push(cur.clone());
            return;
        }
        for v in 1..used.len() {
            if !used[v] {
                used[v] = true;
                cur.push(v);
                rec(cur, used, out);
                cur.pop();
                used[v] = false;
            }
        }
    }
    let mut used = vec![false; n];
    used[0] = true;
    let mut out = Vec::new();
    rec(&mut vec![0], &mut used, &mut out);
    Ok(out)
}

/// Arc set of a cycle as a bit mask over the n*n (a, b) pairs (n <= 6, so 36 bits).
fn arc_mask(n: usize, ring: &[usize]) -> u64 {
    (0..n).fold(0u64, |m, i| m | 1u64 << (ring[i] * n + ring[(i + 1) % n]))
}

/// The largest set of pairwise arc-disjoint directed Hamiltonian cycles of K*_n (n <= 6), found
/// by an exhaustive branch-and-bound over all cycles (a maximum clique in the "arc-disjoint"
/// graph). Among the largest sets, the first in lexicographic order of cycle indices.
/// For n = 4 it returns 2 cycles, for n = 6 it returns 4: one short of n - 1, as Tillson's theorem
/// says (and the search proves by exhausting the alternatives).
pub fn max_arc_disjoint_cycles(n: usize) -> Result<Vec<Ring>> {
    let cycles = all_hamiltonian_cycles(n)?;
    let masks: Vec<u64> = cycles.iter().map(|c| arc_mask(n, c)).collect();
    let arcs = n * (n - 1);
    struct St<'a> {
        masks: &'a [u64],
        n: usize,
        arcs: usize,
        best: Vec<usize>,
        cur: Vec<usize>,
    }
    fn rec(st: &mut St, cand: &[usize], used: u64) {
        if st.cur.len() > st.best.len() {
            st.best = st.cur.clone();
        }
        // Bounds: no more than the candidates left, no more than the free arcs allow.
        let free = st.arcs - used.count_ones() as usize;
        if st.cur.len() + cand.len().min(free / st.n) <= st.best.len() {
            return;
        }
        for (k, &c) in cand.iter().enumerate() {
            let next: Vec<usize> = cand[k + 1..]
                .iter()
                .copied()
                .filter(|&d| st.masks[d] & st.masks[c] == 0)
                .collect();
            st.cur.push(c);
            rec(st, &next, used | st.masks[c]);
            st.cur.pop();
            if st.best.len() == st.n - 1 {
                return; // a full decomposition cannot be beaten
            }
        }
    }
    let all: Vec<usize> = (0..cycles.len()).collect();
    let mut st = St {
        masks: &masks,
        n,
        arcs,
        best: Vec::new(),
        cur: Vec::new(),
    };
    rec(&mut st, &all, 0);
    Ok(st.best.iter().map(|&i| cycles[i].clone()).collect())
}

/// n = 4 or 6: 2(n-1) directed Hamiltonian cycles (all distinct) that use every arc of K*_n
/// exactly twice. Not a [`RingSchedule`] (those are arc-disjoint): with each rank's block cut into
/// 2(n-1) sub-chunks, one per cycle, every link carries two sub-chunks of size 1/(2(n-1)) per step,
/// the same load as one sub-chunk of size 1/(n-1) on a true decomposition, so all n(n-1) links are
/// busy at every step (utilisation 1.0 instead of the fallback's (n-2)/(n-1)). See docs/tasp.md.
/// Found by an exhaustive exact-cover search (arc with the fewest fitting cycles first).
pub fn double_cover(n: usize) -> Result<Vec<Ring>> {
    if n != 4 && n != 6 {
        return Err(Error::invalid(
            OP,
            format!("double_cover: n = {n}; only n = 4 and 6 need it (every other n >= 2 has a decomposition)"),
        ));
    }
    let cycles = all_hamiltonian_cycles(n)?;
    let masks: Vec<u64> = cycles.iter().map(|c| arc_mask(n, c)).collect();
    let want = 2 * (n - 1);
    fn rec(
        n: usize,
        masks: &[u64],
        count: &mut [u8],
        chosen: &mut Vec<usize>,
        taken: &mut [bool],
        want: usize,
    ) -> bool {
        if chosen.len() == want {
            return count
                .iter()
                .enumerate()
                .all(|(a, &c)| a / n == a % n || c == 2);
        }
        // The arc still short of 2 with the fewest cycles that fit.
        let fits = |c: usize, taken: &[bool], count: &[u8]| {
            !taken[c] && (0..n * n).all(|a| masks[c] >> a & 1 == 0 || count[a] < 2)
        };
        let mut best: Option<(usize, Vec<usize>)> = None;
        for a in 0..n * n {
            if a / n == a % n || count[a] == 2 {
                continue;
            }
            let opts: Vec<usize> = (0..masks.len())
                .filter(|&c| masks[c] >> a & 1 == 1 && fits(c, taken, count))
                .collect();
            if opts.len() + (count[a] as usize) < 2 {
                return false;
            }
            if best.as_ref().is_none_or(|(_, o)| opts.len() < o.len()) {
                best = Some((a, opts));
            }
        }
        let Some((_, opts)) = best else {
            return false;
        };
        for c in opts {
            taken[c] = true;
            chosen.push(c);
            for (a, cnt) in count.iter_mut().enumerate() {
                *cnt += (masks[c] >> a & 1) as u8;
            }
            if rec(n, masks, count, chosen, taken, want) {
                return true;
            }
            for (a, cnt) in count.iter_mut().enumerate() {
                *cnt -= (masks[c] >> a & 1) as u8;
            }
            chosen.pop();
            taken[c] = false;
        }
        false
    }
    let mut count = vec![0u8; n * n];
    let mut chosen = Vec::new();
    let mut taken = vec![false; cycles.len()];
    if !rec(n, &masks, &mut count, &mut chosen, &mut taken, want) {
        return Err(Error::invalid(
            OP,
            format!("double_cover: no double cover of K*_{n} found"),
        ));
    }
    let rings: Vec<Ring> = chosen.iter().map(|&i| cycles[i].clone()).collect();
    validate_double_cover(n, &rings)?;
    Ok(rings)
}

/// Checks that `rings` are directed Hamiltonian cycles over 0..n that together use every arc of
/// K*_n exactly twice. The error names the ring or the arc.
pub fn validate_double_cover(n: usize, rings: &[Ring]) -> Result<()> {
    let op = "topology::validate_double_cover";
    if !(2..=super::MAX_RANKS).contains(&n) {
        return Err(Error::invalid(op, format!("n = {n} out of range")));
    }
    if rings.len() != 2 * (n - 1) {
        return Err(Error::invalid(
            op,
            format!("expected {} rings, found {}", 2 * (n - 1), rings.len()),
        ));
    }
    let mut count = vec![0u32; n * n];
    for (c, ring) in rings.iter().enumerate() {
        super::check_hamiltonian(op, n, c, ring)?;
        for i in 0..n {
            count[ring[i] * n + ring[(i + 1) % n]] += 1;
        }
    }
    for a in 0..n {
        for b in 0..n {
            if a != b && count[a * n + b] != 2 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "arc {a}->{b} is used {} times, expected 2",
                        count[a * n + b]
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What [`rainbow_path`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchOutcome {
    /// A rainbow Hamiltonian path: the vertices in order.
    Found(Vec<usize>),
    /// The search was exhaustive: no rainbow Hamiltonian path exists.
    NoneExists,
    /// The node budget ran out first.
    BudgetExhausted,
}

/// Largest m [`rainbow_path`] accepts (the search is a recursive DFS).
pub const MAX_RAINBOW_SEARCH: usize = 256;

/// Given a decomposition of K*_m into m - 1 rings, look for a *rainbow* Hamiltonian path: m - 1
/// arcs through all m vertices, no two on the same ring. Inserting a new vertex into each ring
/// at its path arc and closing the path through the new vertex turns such a path into a
/// decomposition of K*_{m+1}, so for m = 3 and 5 none can exist (Tillson) and the search proves it
/// by exhausting the tree. Depth-first, fewest onward options first, with a dead-end check; at
/// most `node_budget` nodes. The even-n construction uses a closed form instead; this is its
/// independent cross-check.
pub fn rainbow_path(rings: &[Ring], node_budget: u64) -> Result<SearchOutcome> {
    let m = rings.first().map_or(0, |r| r.len());
    if !(2..=MAX_RAINBOW_SEARCH).contains(&m) {
        return Err(Error::invalid(
            OP,
            format!("rainbow_path: rings over {m} vertices, expected 2..={MAX_RAINBOW_SEARCH}"),
        ));
    }
    validate(&RingSchedule {
        n: m,
        kind: ScheduleKind::Decomposition,
        rings: rings.to_vec(),
    })?;
    let mut colour = vec![0usize; m * m];
    for (c, ring) in rings.iter().enumerate() {
        for i in 0..m {
            colour[ring[i] * m + ring[(i + 1) % m]] = c;
        }
    }
    struct St {
        m: usize,
        colour: Vec<usize>,
        visited: Vec<bool>,
        used: Vec<bool>,
        path: Vec<usize>,
        nodes: u64,
        budget: u64,
    }
    impl St {
        fn options(&self, v: usize) -> usize {
            (0..self.m)
                .filter(|&w| !self.visited[w] && !self.used[self.colour[v * self.m + w]])
                .count()
        }
        /// Every unvisited vertex still has a usable arc in; at most one has none out.
        fn feasible(&self) -> bool {
            let end = self.path[self.path.len() - 1];
            let mut no_out = 0;
            for w in 0..self.m {
                if self.visited[w] {
                    continue;
                }
                let mut has_in = !self.used[self.colour[end * self.m + w]];
                let mut has_out = false;
                for u in 0..self.m {
                    if u == w || self.visited[u] {
                        continue;
                    }
                    has_in |= !self.used[self.colour[u * self.m + w]];
                    has_out |= !self.used[self.colour[w * self.m + u]];
                    if has_in && has_out {
                        break;
                    }
                }
                if !has_in {
                    return false;
                }
                if !has_out {
                    no_out += 1;
                    if no_out > 1 {
                        return false;
                    }
                }
            }
            true
        }
        /// Some(true) found, Some(false) exhausted this subtree, None budget gone.
        fn dfs(&mut self) -> Option<bool> {
            if self.path.len() == self.m {
                return Some(true);
            }
            self.nodes += 1;
            if self.nodes > self.budget {
                return None;
            }
            let v = self.path[self.path.len() - 1];
            let mut cand: Vec<(usize, usize)> = Vec::new();
            for w in 0..self.m {
                let c = self.colour[v * self.m + w];
                if self.visited[w] || self.used[c] {
                    continue;
                }
                self.visited[w] = true;
                self.used[c] = true;
                cand.push((self.options(w), w));
                self.visited[w] = false;
                self.used[c] = false;
            }
            cand.sort_unstable();
            for (_, w) in cand {
                let c = self.colour[v * self.m + w];
                self.visited[w] = true;
                self.used[c] = true;
                self.path.push(w);
                let r = if self.feasible() {
                    self.dfs()
                } else {
                    Some(false)
                };
                if r == Some(true) {
                    return r; // keep the path
                }
                self.path.pop();
                self.visited[w] = false;
                self.used[c] = false;
                r?;
            }
            Some(false)
        }
    }
    let mut st = St {
        m,
        colour,
        visited: vec![false; m],
        used: vec![false; m - 1],
        path: Vec::with_capacity(m),
        nodes: 0,
        budget: node_budget,
    };
    for start in 0..m {
        st.visited[start] = true;
        st.path.push(start);
        let r = st.dfs();
        if r == Some(true) {
            return Ok(SearchOutcome::Found(st.path.clone()));
        }
        st.path.pop();
        st.visited[start] = false;
        if r.is_none() {
            return Ok(SearchOutcome::BudgetExhausted);
        }
    }
    Ok(SearchOutcome::NoneExists)
}
