//! The AllGather schedule as data.
//!
//! A [`crate::topology::RingSchedule`] gives `S = rings.len()` Hamiltonian cycles over the `n`
//! ranks. Every rank's block (its K/V tokens) is split into `S` sub-chunks; sub-chunk `c` travels
//! along `rings[c]`. A [`Piece`] is one sub-chunk of one rank's block: `(origin, sub)`.
//!
//! **Steps.** There are `n - 1` steps. At step `s`, for each ring `c` and each position `p` of
//! `rings[c]`, rank `rings[c][p]` sends the piece `(origin = rings[c][(p - s) mod n], sub = c)` to
//! `rings[c][(p + 1) mod n]`: at step 0 every rank sends its own sub-chunk `c` one hop along ring
//! `c`, and at step `s >= 1` it forwards the piece it received on ring `c` at step `s - 1`. After
//! the `n - 1` steps every rank has received every other rank's `S` pieces exactly once. On
//! arc-disjoint rings each directed link carries exactly one transfer per step
//! ([`AllGatherPlan::link_load`] = 1).
//!
//! **Where pieces land** ([`GatherLayout`]). Each rank has, per step, one receive buffer per
//! tensor (K and V) holding that step's `S` arriving pieces back to back in ring order (slot `c`
//! = the piece that arrived on ring `c`, see [`AllGatherPlan::arrivals`]). Buffer indices in a
//! rank's [`RankBuffers`] list: 0 and 1 are the rank's own K and V blocks,
//! `2 + 2s` and `3 + 2s` the K and V receive buffers of step `s`. A step therefore reads only the
//! own blocks and the previous step's receive buffers and writes only its own receive buffers, so
//! its copies are independent (the [`Transport`] contract) and a step's
//! transfer can run while the previous step's pieces are being computed on.
//! [`GatherLayout::copies`] turns a step's transfers into [`struct@Copy`] lists for any transport.

use std::collections::HashMap;

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

use super::{Copy, RankBuffers, Transport};

const OP: &str = "parallel::plan";

/// One sub-chunk of one rank's block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Piece {
    /// The rank whose block the piece belongs to.
    pub origin: usize,
    /// Which sub-chunk of that block (= the ring it travels on).
    pub sub: usize,
}

/// One piece sent over one directed link at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub step: usize,
    pub src: usize,
    pub dst: usize,
    pub piece: Piece,
    /// The ring carrying it.
    pub ring: usize,
}

/// A piece arriving at a rank at some step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub piece: Piece,
    /// The sender.
    pub src: usize,
    pub ring: usize,
    /// Position of the piece in the rank's receive buffer of that step (pieces in slot order).
    pub slot: usize,
}

/// What [`AllGatherPlan::validate`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanStats {
    pub steps: usize,
    /// Transfers over all steps: `n (n - 1) S`.
    pub transfers: usize,
    /// Largest number of transfers on one directed link in one step (1 for arc-disjoint rings).
    pub link_load: usize,
    /// Distinct directed links used in a step (the same every step): `n S` for arc-disjoint rings,
    /// out of `n (n - 1)`.
    pub links_used: usize,
}

/// The AllGather schedule: per step, every transfer. Built from a ring schedule and validated.
#[derive(Clone, Debug)]
pub struct AllGatherPlan {
    n: usize,
    subs: usize,
    rings: Vec<Vec<usize>>,
    /// `arrivals[rank][step]`, in slot order.
    arrivals: Vec<Vec<Vec<Arrival>>>,
    /// `(rank, piece) -> (step, slot)` of every piece a rank receives.
    received: HashMap<(usize, Piece), (usize, usize)>,
    steps: Vec<Vec<Transfer>>,
}

impl AllGatherPlan {
    /// The plan of a topology schedule (its rings), validated. Every kind works: TASP
    /// decompositions, the n = 4 and 6 fallbacks, the single ring and multi-node schedules (the
    /// plan only needs each ring to be a Hamiltonian cycle; [`AllGatherPlan::link_load`] reports
    /// what sharing links costs).
    pub fn new(schedule: &crate::topology::RingSchedule) -> Result<AllGatherPlan> {
        AllGatherPlan::from_rings(schedule.n, &schedule.rings)
    }

    /// The plan of `rings` over `n` ranks: each ring must visit every rank exactly once (a
    /// Hamiltonian cycle `ring[0] -> ring[1] -> ... -> ring[n-1] -> ring[0]`). Rings need not be
    /// arc-disjoint; [`AllGatherPlan::link_load`] reports the cost when they are not. `n = 1`
    /// takes no ring (or the trivial ring `[0]`): one piece, no steps.
    pub fn from_rings(n: usize, rings: &[Vec<usize>]) -> Result<AllGatherPlan> {
        if n == 0 {
            return Err(Error::invalid(OP, "needs at least 1 rank"));
        }
        if n == 1 {
            if rings.iter().any(|r| r.as_slice() != [0]) {
                return Err(Error::invalid(OP, "1 rank takes no ring or the ring [0]"));
            }
            let plan = AllGatherPlan {
                n,
                subs: 1,
                rings: vec![vec![0]],
                arrivals: vec![vec![]],
                received: HashMap::new(),
                steps: vec![],
            };
            return Ok(plan);
        }
        if rings.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("{n} ranks need at least one ring"),
            ));
        }
        for (c, ring) in rings.iter().enumerate() {
            let mut seen = vec![false; n];
            if ring.len() != n {
                return Err(Error::invalid(
                    OP,
                    format!("ring {c} has {} ranks, the group {n}", ring.len()),
                ));
            }
            for &r in ring {
                if r >= n || std::mem::replace(&mut seen[r], true) {
                    return Err(Error::invalid(
                        OP,
                        format!("ring {c} {ring:?} is not a cycle through all {n} ranks"),
                    ));
                }
            }
        }
        let subs = rings.len();
        let mut steps = Vec::with_capacity(n - 1);
        let mut arrivals = vec![vec![Vec::with_capacity(subs); n - 1]; n];
        let mut received = HashMap::new();
        for s in 0..n - 1 {
            let mut step = Vec::with_capacity(n * subs);
            for (c, ring) in rings.iter().enumerate() {
                for p in 0..n {
                    let t = Transfer {
                        step: s,
                        src: ring[p],
                        dst: ring[(p + 1) % n],
                        piece: Piece {
                            origin: ring[(p + n - s % n) % n],
                            sub: c,
                        },
                        ring: c,
                    };
                    let slot = arrivals[t.dst][s].len();
                    arrivals[t.dst][s].push(Arrival {
                        piece: t.piece,
                        src: t.src,
                        ring: c,
                        slot,
                    });
                    received.insert((t.dst, t.piece), (s, slot));
                    step.push(t);
                }
            }
            steps.push(step);
        }
        let plan = AllGatherPlan {
            n,
            subs,
            rings: rings.to_vec(),
            arrivals,
            received,
            steps,
        };
        plan.validate()?;
        Ok(plan)
    }

    /// Number of ranks.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Sub-chunks per block (= rings).
    pub fn subs(&self) -> usize {
        self.subs
    }

    /// The rings the plan was built from.
    pub fn rings(&self) -> &[Vec<usize>] {
        &self.rings
    }

    /// Every step's transfers (`n - 1` steps).
    pub fn steps(&self) -> &[Vec<Transfer>] {
        &self.steps
    }

    /// The pieces arriving at `rank` at `step`, in slot order (empty when out of range).
    pub fn arrivals(&self, rank: usize, step: usize) -> &[Arrival] {
        self.arrivals
            .get(rank)
            .and_then(|a| a.get(step))
            .map_or(&[], |v| v.as_slice())
    }

    /// `(step, slot)` at which `rank` receives `piece`; `None` for its own pieces (and anything
    /// it never receives).
    pub fn received_at(&self, rank: usize, piece: Piece) -> Option<(usize, usize)> {
        self.received.get(&(rank, piece)).copied()
    }

    /// Largest number of transfers on one directed link in one step.
    pub fn link_load(&self) -> usize {
        self.step_links().0
    }

    /// (max transfers on one link in one step, distinct links of the busiest step).
    fn step_links(&self) -> (usize, usize) {
        let mut load = 0;
        let mut used = 0;
        for step in &self.steps {
            let mut count: HashMap<(usize, usize), usize> = HashMap::new();
            for t in step {
                *count.entry((t.src, t.dst)).or_default() += 1;
            }
            load = load.max(count.values().copied().max().unwrap_or(0));
            used = used.max(count.len());
        }
        (load, used)
    }

    /// Replays the plan: every transfer is sent by a rank that holds the piece at the start of
    /// its step, between distinct ranks of the group, on the ring of its sub-chunk; no rank
    /// receives a piece it already holds; after the last step every rank holds every
    /// `(origin, sub)` exactly once; the arrival tables agree with the transfers.
    pub fn validate(&self) -> Result<PlanStats> {
        let (n, subs) = (self.n, self.subs);
        let fail = |msg: String| Err(Error::invalid(OP, msg));
        if self.steps.len() != n - 1 {
            return fail(format!(
                "{} steps for {n} ranks, need {}",
                self.steps.len(),
                n - 1
            ));
        }
        // held[rank][origin * subs + sub]
        let mut held = vec![vec![false; n * subs]; n];
        for (r, h) in held.iter_mut().enumerate() {
            for c in 0..subs {
                h[r * subs + c] = true;
            }
        }
        let mut transfers = 0;
        for (s, step) in self.steps.iter().enumerate() {
            let before = held.clone();
            for t in step {
                transfers += 1;
                let Piece { origin, sub } = t.piece;
                if t.step != s {
                    return fail(format!("transfer {t:?} listed under step {s}"));
                }
                if t.src >= n || t.dst >= n || t.src == t.dst || origin >= n || sub >= subs {
                    return fail(format!("transfer {t:?} is outside a group of {n} x {subs}"));
                }
                if t.ring != sub {
                    return fail(format!(
                        "transfer {t:?}: sub-chunk {sub} travels on ring {sub}"
                    ));
                }
                if !before[t.src][origin * subs + sub] {
                    return fail(format!(
                        "step {s}: rank {} sends piece {:?} it does not hold yet",
                        t.src, t.piece
                    ));
                }
                if std::mem::replace(&mut held[t.dst][origin * subs + sub], true) {
                    return fail(format!(
                        "step {s}: rank {} receives piece {:?} a second time",
                        t.dst, t.piece
                    ));
                }
                if self.received_at(t.dst, t.piece).map(|x| x.0) != Some(s) {
                    return fail(format!("arrival table disagrees with {t:?}"));
                }
            }
            for r in 0..n {
                let a = self.arrivals(r, s);
                if a.iter().enumerate().any(|(i, x)| x.slot != i)
                    || a.iter()
                        .any(|x| self.received_at(r, x.piece) != Some((s, x.slot)))
                {
                    return fail(format!("arrival slots of rank {r} at step {s} disagree"));
                }
            }
        }
        for (r, h) in held.iter().enumerate() {
            if let Some(i) = h.iter().position(|&x| !x) {
                return fail(format!(
                    "rank {r} never receives piece (origin {}, sub {})",
                    i / subs,
                    i % subs
                ));
            }
        }
        let (link_load, links_used) = self.step_links();
        Ok(PlanStats {
            steps: n - 1,
            transfers,
            link_load,
            links_used,
        })
    }
}

/// One contiguous token range of a piece inside its origin's own block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// First token, counted from the start of the origin's block.
    pub offset: usize,
    /// Tokens.
    pub len: usize,
}

/// Buffer index of a rank's own K block.
pub const LOCAL_K: usize = 0;
/// Buffer index of a rank's own V block.
pub const LOCAL_V: usize = 1;
/// Buffer index of a rank's K receive buffer of `step`.
pub const fn recv_k(step: usize) -> usize {
    2 + 2 * step
}
/// Buffer index of a rank's V receive buffer of `step`.
pub const fn recv_v(step: usize) -> usize {
    3 + 2 * step
}

/// Where every piece sits: in its origin's own block (one or more [`Segment`]s) and, once
/// received, in the receivers' per-step receive buffers (pieces back to back in slot order).
/// Sizes are in tokens; a token is `token_elems` elements (`kv_heads * head_dim` for K/V).
/// Pieces may have different sizes, including 0.
#[derive(Clone, Debug)]
pub struct GatherLayout<'p> {
    plan: &'p AllGatherPlan,
    token_elems: usize,
    local_len: Vec<usize>,
    /// `pieces[origin][sub]`.
    pieces: Vec<Vec<Vec<Segment>>>,
    /// `recv_off[rank][step][slot]` in tokens, plus the total at index `subs`.
    recv_off: Vec<Vec<Vec<usize>>>,
}

impl<'p> GatherLayout<'p> {
    /// `local_len[r]`: tokens of rank r's own block; `pieces[origin][sub]`: the segments of each
    /// piece inside its origin's block (they must lie inside the block).
    pub fn new(
        plan: &'p AllGatherPlan,
        token_elems: usize,
        local_len: Vec<usize>,
        pieces: Vec<Vec<Vec<Segment>>>,
    ) -> Result<GatherLayout<'p>> {
        let (n, subs) = (plan.n, plan.subs);
        if local_len.len() != n || pieces.len() != n || pieces.iter().any(|p| p.len() != subs) {
            return Err(Error::invalid(
                OP,
                format!("layout needs {n} blocks of {subs} pieces"),
            ));
        }
        for (r, ps) in pieces.iter().enumerate() {
            for (c, segs) in ps.iter().enumerate() {
                for s in segs {
                    if s.offset.checked_add(s.len).is_none_or(|e| e > local_len[r]) {
                        return Err(Error::invalid(
                            OP,
                            format!(
                                "piece ({r}, {c}) segment {}..+{} is outside rank {r}'s {} tokens",
                                s.offset, s.len, local_len[r]
                            ),
                        ));
                    }
                }
            }
        }
        let piece_len = |p: Piece| -> usize { pieces[p.origin][p.sub].iter().map(|s| s.len).sum() };
        let mut recv_off = vec![vec![]; n];
        for (r, offs) in recv_off.iter_mut().enumerate() {
            for s in 0..n - 1 {
                let mut o = Vec::with_capacity(subs + 1);
                let mut acc = 0usize;
                for a in plan.arrivals(r, s) {
                    o.push(acc);
                    acc += piece_len(a.piece);
                }
                o.push(acc);
                offs.push(o);
            }
        }
        let total = local_len
            .iter()
            .sum::<usize>()
            .checked_mul(token_elems.max(1));
        if total.is_none() {
            return Err(Error::invalid(OP, "layout size overflows usize"));
        }
        Ok(GatherLayout {
            plan,
            token_elems,
            local_len,
            pieces,
            recv_off,
        })
    }

    pub fn plan(&self) -> &AllGatherPlan {
        self.plan
    }

    /// Elements per token.
    pub fn token_elems(&self) -> usize {
        self.token_elems
    }

    /// Tokens of rank `r`'s own block.
    pub fn local_len(&self, rank: usize) -> usize {
        self.local_len[rank]
    }

    /// The segments of a piece in its origin's block.
    pub fn segments(&self, piece: Piece) -> &[Segment] {
        &self.pieces[piece.origin][piece.sub]
    }

    /// Tokens of a piece.
    pub fn piece_len(&self, piece: Piece) -> usize {
        self.segments(piece).iter().map(|s| s.len).sum()
    }

    /// Tokens `rank` receives at `step` (the length of that receive buffer).
    pub fn recv_len(&self, rank: usize, step: usize) -> usize {
        self.recv_off[rank][step][self.plan.subs]
    }

    /// First token of slot `slot` in `rank`'s receive buffer of `step`.
    pub fn recv_offset(&self, rank: usize, step: usize, slot: usize) -> usize {
        self.recv_off[rank][step][slot]
    }

    /// Buffer lengths (elements) of `rank`'s list: own K, own V, then K and V per step.
    pub fn buffer_lens(&self, rank: usize) -> Vec<usize> {
        let own = self.local_len[rank] * self.token_elems;
        let mut v = vec![own, own];
        for s in 0..self.plan.n - 1 {
            let l = self.recv_len(rank, s) * self.token_elems;
            v.push(l);
            v.push(l);
        }
        v
    }

    /// Allocates `rank`'s receive buffers (contents undefined until their step lands) after the
    /// given own K and V blocks, forming its buffer list.
    pub fn rank_buffers<T: DType>(
        &self,
        dev: &Device,
        rank: usize,
        own_k: crate::device::DeviceBuffer<T>,
        own_v: crate::device::DeviceBuffer<T>,
    ) -> Result<Vec<crate::device::DeviceBuffer<T>>> {
        let lens = self.buffer_lens(rank);
        if own_k.len() != lens[0] || own_v.len() != lens[1] {
            return Err(Error::invalid(
                OP,
                format!(
                    "rank {rank}: own K/V blocks have {} and {} elements, the layout needs {}",
                    own_k.len(),
                    own_v.len(),
                    lens[0]
                ),
            ));
        }
        let mut bufs = vec![own_k, own_v];
        for (i, &l) in lens.iter().enumerate().skip(2) {
            let what = if i % 2 == 0 { "k" } else { "v" };
            bufs.push(dev.alloc::<T>(l, &format!("sp.recv_{what}.{}", (i - 2) / 2))?);
        }
        Ok(bufs)
    }

    /// The copies of `step` (K and V; empty pieces give none). A piece a rank sends is read from
    /// its own block (origin = sender, one copy per segment) or from the receive buffer of the
    /// step at which the sender got it (one copy), and written to the receiver's receive buffer
    /// of `step` at its slot.
    pub fn copies(&self, step: usize) -> Result<Vec<Copy>> {
        let transfers = self
            .plan
            .steps
            .get(step)
            .ok_or_else(|| Error::invalid(OP, format!("step {step} of {}", self.plan.n - 1)))?;
        let te = self.token_elems;
        let mut out = Vec::with_capacity(transfers.len() * 2);
        for t in transfers {
            let len = self.piece_len(t.piece);
            if len == 0 {
                continue;
            }
            let (_, slot) = self
                .plan
                .received_at(t.dst, t.piece)
                .ok_or_else(|| Error::invalid(OP, format!("{t:?}: receiver has no slot for it")))?;
            let dst_off = self.recv_offset(t.dst, step, slot);
            for kv in 0..2 {
                let dst_buf = if kv == 0 { recv_k(step) } else { recv_v(step) };
                if t.piece.origin == t.src {
                    let mut at = dst_off;
                    for seg in self.segments(t.piece).iter().filter(|s| s.len > 0) {
                        out.push(Copy {
                            src_rank: t.src,
                            src_buf: if kv == 0 { LOCAL_K } else { LOCAL_V },
                            src_off: seg.offset * te,
                            dst_rank: t.dst,
                            dst_buf,
                            dst_off: at * te,
                            len: seg.len * te,
                            ring: t.ring,
                        });
                        at += seg.len;
                    }
                } else {
                    let (s0, slot0) = self
                        .plan
                        .received_at(t.src, t.piece)
                        .filter(|&(s0, _)| s0 < step)
                        .ok_or_else(|| {
                            Error::invalid(OP, format!("{t:?}: sender does not hold the piece"))
                        })?;
                    out.push(Copy {
                        src_rank: t.src,
                        src_buf: if kv == 0 { recv_k(s0) } else { recv_v(s0) },
                        src_off: self.recv_offset(t.src, s0, slot0) * te,
                        dst_rank: t.dst,
                        dst_buf,
                        dst_off: dst_off * te,
                        len: len * te,
                        ring: t.ring,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Runs the whole AllGather of `layout` over `transport` (every step's copies, waiting after
/// each): `bufs` holds each local rank's list as [`GatherLayout::rank_buffers`] builds it.
pub fn all_gather<T: DType, X: Transport<T> + ?Sized>(
    layout: &GatherLayout,
    bufs: &mut RankBuffers<T>,
    transport: &mut X,
) -> Result<()> {
    if transport.ranks() != layout.plan.n {
        return Err(Error::invalid(
            OP,
            format!(
                "plan for {} ranks, transport has {}",
                layout.plan.n,
                transport.ranks()
            ),
        ));
    }
    for s in 0..layout.plan.n - 1 {
        let copies = layout.copies(s)?;
        if let Err(e) = transport.exchange(bufs, &copies) {
            // Part of the step may be queued: nothing is left in flight when this returns (the
            // wait's own error is secondary).
            let _ = transport.wait();
            return Err(e);
        }
        transport.wait()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::Simulated;

    /// The step-k cycles (0, k, 2k, ...) mod n, k = 1..n-1: arc-disjoint for prime n.
    fn step_rings(n: usize) -> Vec<Vec<usize>> {
        (1..n)
            .map(|k| (0..n).map(|i| i * k % n).collect())
            .collect()
    }

    #[test]
    fn prime_step_cycles_are_complete_and_load_one() {
        for n in [2usize, 3, 5, 7, 11, 13] {
            let plan = AllGatherPlan::from_rings(n, &step_rings(n)).unwrap();
            let st = plan.validate().unwrap();
            assert_eq!(st.steps, n - 1);
            assert_eq!(st.transfers, n * (n - 1) * (n - 1));
            assert_eq!(st.link_load, 1, "n {n}");
            assert_eq!(st.links_used, n * (n - 1));
        }
    }

    #[test]
    fn single_ring_and_overlapping_rings() {
        let ring: Vec<usize> = (0..6).collect();
        let p = AllGatherPlan::from_rings(6, std::slice::from_ref(&ring)).unwrap();
        assert_eq!(p.link_load(), 1);
        assert_eq!(p.validate().unwrap().links_used, 6);
        // the same ring twice: correct, but each link carries two pieces per step
        let p = AllGatherPlan::from_rings(6, &[ring.clone(), ring]).unwrap();
        assert_eq!(p.link_load(), 2);
    }

    #[test]
    fn rejects_bad_rings() {
        assert!(AllGatherPlan::from_rings(0, &[]).is_err());
        assert!(AllGatherPlan::from_rings(3, &[]).is_err());
        assert!(AllGatherPlan::from_rings(3, &[vec![0, 1]]).is_err());
        assert!(AllGatherPlan::from_rings(3, &[vec![0, 1, 1]]).is_err());
        assert!(AllGatherPlan::from_rings(3, &[vec![0, 1, 3]]).is_err());
        assert!(AllGatherPlan::from_rings(1, &[vec![1]]).is_err());
        let e = AllGatherPlan::from_rings(3, &[vec![0, 2, 2]]).unwrap_err();
        assert!(e.to_string().contains("parallel::plan"), "{e}");
        let one = AllGatherPlan::from_rings(1, &[]).unwrap();
        assert_eq!((one.subs(), one.steps().len()), (1, 0));
    }

    #[test]
    fn validate_catches_tampering() {
        let mut p = AllGatherPlan::from_rings(5, &step_rings(5)).unwrap();
        // swap the pieces of two transfers of step 1: senders no longer hold them
        let (a, b) = (p.steps[1][0].piece, p.steps[1][1].piece);
        p.steps[1][0].piece = b;
        p.steps[1][1].piece = a;
        assert!(p.validate().is_err());
        let mut p = AllGatherPlan::from_rings(5, &step_rings(5)).unwrap();
        p.steps[3].pop();
        assert!(p.validate().is_err());
    }

    /// Gathers a layout with uneven pieces (including empty ones and two-segment pieces) over
    /// simulated ranks and checks every receive buffer holds exactly its arrivals' tokens.
    #[test]
    fn gather_moves_every_piece_to_its_slot() {
        for dev in [Device::cpu(), Device::simt()] {
            for (n, rings) in [
                (5usize, step_rings(5)),
                (4, vec![vec![0, 1, 2, 3], vec![0, 3, 2, 1]]),
                (3, vec![vec![0, 2, 1]]),
            ] {
                let plan = AllGatherPlan::from_rings(n, &rings).unwrap();
                let subs = plan.subs();
                let te = 3;
                let local_len: Vec<usize> = (0..n).map(|r| 2 * r + 1).collect();
                // piece c: two segments, the c-th slices of each half of the block
                let pieces: Vec<Vec<Vec<Segment>>> = (0..n)
                    .map(|r| {
                        let l = local_len[r];
                        let (h0, h1) = (l / 2, l - l / 2);
                        (0..subs)
                            .map(|c| {
                                let cut = |h: usize, j: usize| h * j / subs;
                                vec![
                                    Segment {
                                        offset: cut(h0, c),
                                        len: cut(h0, c + 1) - cut(h0, c),
                                    },
                                    Segment {
                                        offset: h0 + cut(h1, c),
                                        len: cut(h1, c + 1) - cut(h1, c),
                                    },
                                ]
                            })
                            .collect()
                    })
                    .collect();
                let layout = GatherLayout::new(&plan, te, local_len.clone(), pieces).unwrap();
                // token t of rank r has value r * 1000 + t, element e = that * 4 + e
                let val = |r: usize, t: usize, e: usize| (r * 1000 + t) as u32 * 4 + e as u32;
                let mut bufs = RankBuffers {
                    bufs: (0..n)
                        .map(|r| {
                            let data: Vec<u32> = (0..local_len[r] * te)
                                .map(|i| val(r, i / te, i % te))
                                .collect();
                            let k = dev.upload(&data, "k").unwrap();
                            let v = dev.upload(&data, "v").unwrap();
                            layout.rank_buffers(&dev, r, k, v).unwrap()
                        })
                        .collect(),
                };
                let mut t = Simulated::new(&dev, n).unwrap();
                all_gather(&layout, &mut bufs, &mut t).unwrap();
                for r in 0..n {
                    for s in 0..n - 1 {
                        let mut want = vec![];
                        for a in plan.arrivals(r, s) {
                            for seg in layout.segments(a.piece) {
                                for tok in seg.offset..seg.offset + seg.len {
                                    want.extend((0..te).map(|e| val(a.piece.origin, tok, e)));
                                }
                            }
                        }
                        for b in [recv_k(s), recv_v(s)] {
                            let got = if bufs.bufs[r][b].is_empty() {
                                vec![]
                            } else {
                                bufs.bufs[r][b].download().unwrap()
                            };
                            assert_eq!(got, want, "n {n} rank {r} step {s}");
                        }
                    }
                }
            }
        }
    }
}
