//! Sequence-parallel attention, forward only: one sequence (batch 1) of `seq_len` tokens split
//! across the `n` ranks of an [`AllGatherPlan`]; every rank's queries attend to the whole
//! sequence's keys while the K/V blocks travel along the plan's rings.
//!
//! **Token map** ([`token_ranges`]). Non-causal: rank `r` holds the contiguous block `r` of `n`
//! blocks. Causal (zigzag load balancing): the sequence is cut into `2n` chunks and rank `i` holds
//! chunks `i` and `2n - 1 - i`, in that order, so every rank has one early and one late chunk and
//! the causal work is balanced. Block and chunk boundaries are `floor(len * j / parts)`, so any
//! `seq_len` works: sizes differ by at most one token, and may be 0 when `seq_len < n` (or `2n`).
//! A rank's Q, K and V buffers hold its tokens in this local order.
//!
//! **Pieces.** A rank's K/V block is split into `S = plan.subs()` sub-chunks, one per ring:
//! sub-chunk `c` is the `c`-th of `S` balanced slices of the block (non-causal), or the `c`-th
//! slice of each of its two chunks, concatenated (causal; two segments). Pieces may be uneven or
//! empty.
//!
//! **Steps.** Compute step 0 attends each rank's Q to its own block; compute step `t >= 1` to the
//! pieces that arrived at AllGather step `t - 1` (one receive buffer per step, pieces back to back,
//! see [`super::plan`]): one [`attention::forward`] call per rank and step over that step's
//! pieces. Non-causal uses [`MaskMode::Full`]; causal uses [`MaskMode::Causal`] with explicit
//! positions for Q and for the step's keys (computed on the host from the plan and uploaded), and
//! a step whose keys all lie after the rank's last query is skipped. Rows that see no key of a
//! step come back with LSE = -inf, and the merge ignores them.
//!
//! **Overlap.** The copies of AllGather step `t` are queued ([`Transport::exchange`]) before the
//! compute of step `t` (which reads step `t - 1`'s buffers), so a transport with its own streams
//! (`P2p` on CUDA, `Nccl`) moves step `t` while step `t` computes. The host waits for step
//! `t - 1`'s copies ([`Transport::wait`]) before computing on them. With [`super::Simulated`]
//! copies and kernels share the device's one stream, so they serialise: it checks correctness
//! and times the copy schedule, not overlap.
//!
//! **Memory.** K/V: each rank holds its own block (copied once into the transport's buffer list)
//! and at most two steps' receive buffers (the one being computed on and the one being
//! received), each about one block: step `t`'s buffers take over step `t - 2`'s memory, which
//! both its compute and its forwarding have finished with once step `t - 1`'s copies have landed
//! (same size: reused; otherwise freed and allocated). So, as in Ring Attention, no rank ever
//! holds the whole sequence's K/V. Outputs: partial results are merged by LSE as they come
//! (running [`attention::merge`] of the accumulator and the new step: two f32 copies into a
//! two-split stack and one merge per step), so each rank keeps about three `[tokens, H, D]` f32
//! outputs (plus their LSE) at a time.

use std::ops::Range;

use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::attention::{
    self, Attention, AttentionOut, DeviceCheck, HalfFloat, MaskMode, Path, Positions,
};

use super::plan::{recv_k, recv_v, AllGatherPlan, GatherLayout, Piece, Segment, LOCAL_K, LOCAL_V};
use super::{RankBuffers, Simulated, Transport};

const OP: &str = "parallel::attention::forward";

/// One sequence-parallel attention problem.
#[derive(Clone, Copy, Debug)]
pub struct SpAttention<'a> {
    /// The AllGather plan (from a TASP ring schedule, or `topology::single_ring(n)` for the Ring
    /// Attention baseline).
    pub plan: &'a AllGatherPlan,
    /// Tokens of the whole sequence.
    pub seq_len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// 64 or 128 (what [`attention::forward`] takes).
    pub head_dim: usize,
    pub scale: f32,
    /// Causal (zigzag token map) or full attention.
    pub causal: bool,
    pub path: Path,
}

/// One rank's inputs: Q `[tokens, H, D]`, K and V `[tokens, H_kv, D]`, its tokens in the order of
/// [`token_ranges`], on the transport's device for that rank.
#[derive(Clone, Copy, Debug)]
pub struct RankQkv<'a, T: HalfFloat> {
    pub q: &'a DeviceBuffer<T>,
    pub k: &'a DeviceBuffer<T>,
    pub v: &'a DeviceBuffer<T>,
}

/// What a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpStats {
    /// `attention::forward` calls over all local ranks.
    pub forward_calls: usize,
    /// Rank-steps skipped: no keys, no queries, or (causal) every key after every query.
    pub skipped: usize,
    /// `attention::merge` calls.
    pub merges: usize,
    /// Copies handed to the transport, and their elements (K and V).
    pub copies: usize,
    pub copied_elems: usize,
}

/// Per local rank (`None` for ranks the transport does not host): O `[tokens, H, D]` and LSE
/// `[H, tokens]` in the rank's local token order.
#[derive(Debug)]
pub struct SpOutput {
    pub outs: Vec<Option<AttentionOut>>,
    pub stats: SpStats,
}

/// `floor(len * j / parts)`: the `j`-th boundary of a balanced split.
fn cut(len: usize, parts: usize, j: usize) -> usize {
    (len as u128 * j as u128 / parts as u128) as usize
}

/// The global token ranges of each rank, in its local order (see the module docs): one block per
/// rank (non-causal), or chunks `i` and `2n - 1 - i` of `2n` (causal, zigzag).
pub fn token_ranges(n: usize, seq_len: usize, causal: bool) -> Vec<Vec<Range<usize>>> {
    if causal {
        let c = |j: usize| cut(seq_len, 2 * n, j)..cut(seq_len, 2 * n, j + 1);
        (0..n).map(|i| vec![c(i), c(2 * n - 1 - i)]).collect()
    } else {
        (0..n)
            .map(|r| std::iter::once(cut(seq_len, n, r)..cut(seq_len, n, r + 1)).collect())
            .collect()
    }
}

/// Host-side geometry of one problem: token map, pieces (local segments and global ranges).
struct Geometry {
    ranges: Vec<Vec<Range<usize>>>,
    local_len: Vec<usize>,
    /// `pieces[origin][sub]`: segments in the origin's block.
    pieces: Vec<Vec<Vec<Segment>>>,
    /// `global[origin][sub]`: the same segments as global token ranges.
    global: Vec<Vec<Vec<Range<usize>>>>,
}

fn geometry(n: usize, subs: usize, seq_len: usize, causal: bool) -> Geometry {
    let ranges = token_ranges(n, seq_len, causal);
    let local_len: Vec<usize> = ranges
        .iter()
        .map(|r| r.iter().map(|x| x.len()).sum())
        .collect();
    let mut pieces = vec![vec![vec![]; subs]; n];
    let mut global = vec![vec![vec![]; subs]; n];
    for (r, halves) in ranges.iter().enumerate() {
        let mut off = 0;
        for h in halves {
            let l = h.len();
            for c in 0..subs {
                let (a, b) = (cut(l, subs, c), cut(l, subs, c + 1));
                pieces[r][c].push(Segment {
                    offset: off + a,
                    len: b - a,
                });
                global[r][c].push(h.start + a..h.start + b);
            }
            off += l;
        }
    }
    Geometry {
        ranges,
        local_len,
        pieces,
        global,
    }
}

fn check_config(cfg: &SpAttention) -> Result<()> {
    let (h, hk, d) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    if h == 0 || hk == 0 || h % hk != 0 {
        return Err(Error::invalid(
            OP,
            format!("heads {h} must be a positive multiple of kv_heads {hk}"),
        ));
    }
    if d != 64 && d != 128 {
        return Err(Error::invalid(
            OP,
            format!("head_dim {d}: attention::forward takes 64 or 128"),
        ));
    }
    if !cfg.scale.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("scale must be finite, got {}", cfg.scale),
        ));
    }
    if cfg.seq_len > i32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("seq_len {} exceeds int32 positions", cfg.seq_len),
        ));
    }
    if cfg
        .seq_len
        .checked_mul(h.max(hk))
        .and_then(|x| x.checked_mul(d))
        .is_none()
    {
        return Err(Error::invalid(
            OP,
            "seq_len x heads x head_dim overflows usize",
        ));
    }
    Ok(())
}

/// The K/V gather layout of a problem (token = `kv_heads * head_dim` elements): what
/// [`forward`] moves, for timing the copy schedule alone with [`super::plan::all_gather`].
pub fn kv_layout<'p>(cfg: &SpAttention<'p>) -> Result<GatherLayout<'p>> {
    check_config(cfg)?;
    let g = geometry(cfg.plan.n(), cfg.plan.subs(), cfg.seq_len, cfg.causal);
    GatherLayout::new(cfg.plan, cfg.kv_heads * cfg.head_dim, g.local_len, g.pieces)
}

fn check_len<T: HalfFloat>(
    rank: usize,
    what: &str,
    dev: &Device,
    b: &DeviceBuffer<T>,
    want: usize,
) -> Result<()> {
    if !b.device().same(dev) {
        return Err(Error::invalid(
            OP,
            format!(
                "rank {rank} {what} is on {} but the rank runs on {}",
                b.device().backend(),
                dev.backend()
            ),
        ));
    }
    if b.len() != want {
        return Err(Error::invalid(
            OP,
            format!(
                "rank {rank} {what} has {} elements, its tokens need {want}",
                b.len()
            ),
        ));
    }
    Ok(())
}

/// Merges `new` into `acc` by LSE (two-split stack and [`attention::merge`]).
fn merge_into(
    dev: &Device,
    acc: AttentionOut,
    new: AttentionOut,
    tq: usize,
    h: usize,
    d: usize,
) -> Result<AttentionOut> {
    let (no, nl) = (tq * h * d, tq * h);
    let mut o = dev.alloc::<f32>(2 * no, "sp.merge.o")?;
    let mut l = dev.alloc::<f32>(2 * nl, "sp.merge.lse")?;
    o.copy_range_from(0, &acc.o, 0, no)?;
    o.copy_range_from(no, &new.o, 0, no)?;
    l.copy_range_from(0, &acc.lse, 0, nl)?;
    l.copy_range_from(nl, &new.lse, 0, nl)?;
    let mut out = attention::merge(&o, &l, 2, tq, h, d)?;
    out.check.absorb(acc.check);
    out.check.absorb(new.check);
    Ok(out)
}

/// Sequence-parallel attention over `transport`: `inputs[r]` holds rank r's Q/K/V for every rank
/// the transport hosts (`None` for the others). See the module docs for the token map, the
/// steps and the memory.
pub fn forward<T: HalfFloat, X: Transport<T> + ?Sized>(
    cfg: &SpAttention,
    inputs: &[Option<RankQkv<T>>],
    transport: &mut X,
) -> Result<SpOutput> {
    check_config(cfg)?;
    let plan = cfg.plan;
    let (n, subs) = (plan.n(), plan.subs());
    let (h, hk, d) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    if transport.ranks() != n {
        return Err(Error::invalid(
            OP,
            format!(
                "plan for {n} ranks, transport {} has {}",
                transport.name(),
                transport.ranks()
            ),
        ));
    }
    if inputs.len() != n {
        return Err(Error::invalid(
            OP,
            format!("{} rank inputs for {n} ranks", inputs.len()),
        ));
    }
    let mut local = vec![false; n];
    for r in transport.local_ranks() {
        if r >= n {
            return Err(Error::invalid(
                OP,
                format!("transport hosts rank {r} of {n}"),
            ));
        }
        local[r] = true;
    }
    let g = geometry(n, subs, cfg.seq_len, cfg.causal);
    let mut devs: Vec<Option<Device>> = vec![None; n];
    for r in 0..n {
        match (local[r], &inputs[r]) {
            (true, Some(x)) => {
                let dev = transport.device(r)?.clone();
                let t = g.local_len[r];
                check_len(r, "q", &dev, x.q, t * h * d)?;
                check_len(r, "k", &dev, x.k, t * hk * d)?;
                check_len(r, "v", &dev, x.v, t * hk * d)?;
                devs[r] = Some(dev);
            }
            (true, None) => {
                return Err(Error::invalid(
                    OP,
                    format!("rank {r} is hosted here but has no inputs"),
                ))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    OP,
                    format!("rank {r} has inputs but the transport does not host it"),
                ))
            }
            (false, None) => {}
        }
    }
    let layout = GatherLayout::new(plan, hk * d, g.local_len.clone(), g.pieces.clone())?;
    let mut bufs = RankBuffers {
        bufs: Vec::with_capacity(n),
    };
    for r in 0..n {
        let (Some(dev), Some(x)) = (&devs[r], &inputs[r]) else {
            bufs.bufs.push(vec![]);
            continue;
        };
        let own = |b: &DeviceBuffer<T>, what: &str| -> Result<DeviceBuffer<T>> {
            let mut c = dev.alloc::<T>(b.len(), what)?;
            c.copy_range_from(0, b, 0, b.len())?;
            Ok(c)
        };
        let (k, v) = (own(x.k, "sp.own_k")?, own(x.v, "sp.own_v")?);
        // Own blocks now; each step's receive buffers just before its copies are queued.
        let mut list = vec![k, v];
        for _ in 0..2 * (n - 1) {
            list.push(dev.alloc::<T>(0, "sp.recv")?);
        }
        bufs.bufs.push(list);
    }

    // Host positions of each rank's queries and of every step's keys.
    let positions = |rs: &[Range<usize>]| -> Vec<i32> {
        rs.iter()
            .flat_map(|r| r.start as i32..r.end as i32)
            .collect()
    };
    let step_pos = |r: usize, t: usize| -> Vec<i32> {
        if t == 0 {
            positions(&g.ranges[r])
        } else {
            let mut p = Vec::with_capacity(layout.recv_len(r, t - 1));
            for a in plan.arrivals(r, t - 1) {
                let Piece { origin, sub } = a.piece;
                p.extend(positions(&g.global[origin][sub]));
            }
            p
        }
    };

    let mut stats = SpStats::default();
    let mut acc: Vec<Option<AttentionOut>> = (0..n).map(|_| None).collect();
    /// Per rank: cu_seqlens_q, Q positions (causal), last Q position.
    type QInfo = (DeviceBuffer<i32>, Option<DeviceBuffer<i32>>, i32);
    let mut q_info: Vec<Option<QInfo>> = (0..n).map(|_| None).collect();
    for r in 0..n {
        if let (Some(dev), true) = (&devs[r], g.local_len[r] > 0) {
            let qp = positions(&g.ranges[r]);
            let max_q = qp.iter().copied().max().unwrap_or(-1);
            let cu = dev.upload(&[0, g.local_len[r] as i32], "sp.cu_q")?;
            let qp_b = if cfg.causal {
                Some(dev.upload(&qp, "sp.q_pos")?)
            } else {
                None
            };
            q_info[r] = Some((cu, qp_b, max_q));
        }
    }

    /// Makes step `s`'s receive buffers (reusing step `s - 2`'s, drained by now, when the size
    /// matches) and queues its copies.
    fn queue<T: HalfFloat, X: Transport<T> + ?Sized>(
        layout: &GatherLayout,
        s: usize,
        devs: &[Option<Device>],
        bufs: &mut RankBuffers<T>,
        stats: &mut SpStats,
        transport: &mut X,
    ) -> Result<()> {
        for (r, dev) in devs.iter().enumerate() {
            let Some(dev) = dev else { continue };
            let want = layout.recv_len(r, s) * layout.token_elems();
            for (new, old) in [
                (recv_k(s), s.checked_sub(2).map(recv_k)),
                (recv_v(s), s.checked_sub(2).map(recv_v)),
            ] {
                let list = &mut bufs.bufs[r];
                let drained = match old {
                    Some(o) => Some(std::mem::replace(
                        &mut list[o],
                        dev.alloc::<T>(0, "sp.recv")?,
                    )),
                    None => None,
                };
                list[new] = match drained {
                    Some(b) if b.len() == want => b,
                    _ => dev.alloc::<T>(want, "sp.recv")?,
                };
            }
        }
        let copies = layout.copies(s)?;
        stats.copies += copies.len();
        stats.copied_elems += copies.iter().map(|c| c.len).sum::<usize>();
        transport.exchange(bufs, &copies)
    }
    let steps = n - 1;
    // Once a step is queued, copies may be in flight into `bufs`; on any error, wait for them
    // before `bufs` is dropped and the error returned (the wait's own error is secondary).
    let mut run = || -> Result<()> {
        if steps > 0 {
            queue(&layout, 0, &devs, &mut bufs, &mut stats, transport)?;
        }
        for t in 0..n {
            if t >= 1 {
                // Step t computes on what AllGather step t - 1 delivered; step t's copies (which
                // read those buffers and write fresh ones) go out first.
                transport.wait()?;
                if t < steps {
                    queue(&layout, t, &devs, &mut bufs, &mut stats, transport)?;
                }
            }
            for r in 0..n {
                let (Some(dev), Some((cu_q, qp_b, max_q))) = (&devs[r], &q_info[r]) else {
                    if devs[r].is_some() {
                        stats.skipped += 1;
                    }
                    continue;
                };
                let tq = g.local_len[r];
                let (kb, vb, tk) = if t == 0 {
                    (LOCAL_K, LOCAL_V, g.local_len[r])
                } else {
                    (recv_k(t - 1), recv_v(t - 1), layout.recv_len(r, t - 1))
                };
                if tk == 0 {
                    stats.skipped += 1;
                    continue;
                }
                let kv_pos = if cfg.causal {
                    let p = step_pos(r, t);
                    if p.iter().copied().min().unwrap_or(i32::MAX) > *max_q {
                        stats.skipped += 1;
                        continue;
                    }
                    Some(dev.upload(&p, "sp.kv_pos")?)
                } else {
                    None
                };
                let cu_kv = dev.upload(&[0, tk as i32], "sp.cu_kv")?;
                let (q_pos, kv_pos_arg, mode) = match (qp_b, &kv_pos) {
                    (Some(qp), Some(kp)) => (
                        Positions::Explicit(qp),
                        Positions::Explicit(kp),
                        MaskMode::Causal,
                    ),
                    _ => (
                        Positions::Implicit { offset: 0 },
                        Positions::Implicit { offset: 0 },
                        MaskMode::Full,
                    ),
                };
                let x = inputs[r]
                    .as_ref()
                    .expect("checked: local ranks have inputs");
                let out = attention::forward(&Attention {
                    q: x.q,
                    k: bufs.get(OP, r, kb)?,
                    v: bufs.get(OP, r, vb)?,
                    heads: h,
                    kv_heads: hk,
                    head_dim: d,
                    cu_seqlens_q: cu_q,
                    cu_seqlens_kv: &cu_kv,
                    max_seqlen_q: tq,
                    max_seqlen_kv: tk,
                    q_pos,
                    kv_pos: kv_pos_arg,
                    q_depth: None,
                    kv_depth: None,
                    kv_valid: None,
                    scale: cfg.scale,
                    mode,
                    path: cfg.path,
                })?;
                stats.forward_calls += 1;
                acc[r] = Some(match acc[r].take() {
                    None => out,
                    Some(prev) => {
                        stats.merges += 1;
                        merge_into(dev, prev, out, tq, h, d)?
                    }
                });
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = transport.wait();
        return Err(e);
    }
    let mut outs = Vec::with_capacity(n);
    for (r, a) in acc.into_iter().enumerate() {
        outs.push(match (&devs[r], a) {
            (None, _) => None,
            (Some(_), Some(a)) => Some(a),
            // No step computed: no queries, or (never for a valid problem) nothing visible.
            (Some(dev), None) => {
                let tq = g.local_len[r];
                let o = dev.upload(&vec![0f32; tq * h * d], "sp.o")?;
                let lse = dev.upload(&vec![f32::NEG_INFINITY; tq * h], "sp.lse")?;
                Some(AttentionOut {
                    o,
                    lse,
                    check: DeviceCheck::none(),
                })
            }
        });
    }
    Ok(SpOutput { outs, stats })
}

/// Runs [`forward`] over `plan.n()` simulated ranks on the device of `q` from full-sequence
/// inputs (Q `[seq_len, H, D]`, K/V `[seq_len, H_kv, D]`, tokens in sequence order): splits them
/// by [`token_ranges`] with device copies, runs, and reassembles O `[seq_len, H, D]` and LSE
/// `[H, seq_len]` in sequence order.
pub fn forward_simulated<T: HalfFloat>(
    cfg: &SpAttention,
    q: &DeviceBuffer<T>,
    k: &DeviceBuffer<T>,
    v: &DeviceBuffer<T>,
) -> Result<(AttentionOut, SpStats)> {
    check_config(cfg)?;
    let dev = q.device().clone();
    let n = cfg.plan.n();
    let (l, h, hk, d) = (cfg.seq_len, cfg.heads, cfg.kv_heads, cfg.head_dim);
    check_len(0, "full-sequence q", &dev, q, l * h * d)?;
    check_len(0, "full-sequence k", &dev, k, l * hk * d)?;
    check_len(0, "full-sequence v", &dev, v, l * hk * d)?;
    let ranges = token_ranges(n, l, cfg.causal);
    let split = |src: &DeviceBuffer<T>, row: usize, what: &str| -> Result<Vec<DeviceBuffer<T>>> {
        ranges
            .iter()
            .map(|rs| {
                let len: usize = rs.iter().map(|r| r.len()).sum();
                let mut b = dev.alloc::<T>(len * row, what)?;
                let mut at = 0;
                for r in rs.iter().filter(|r| !r.is_empty()) {
                    b.copy_range_from(at * row, src, r.start * row, r.len() * row)?;
                    at += r.len();
                }
                Ok(b)
            })
            .collect()
    };
    let (qs, ks, vs) = (
        split(q, h * d, "sp.q")?,
        split(k, hk * d, "sp.k")?,
        split(v, hk * d, "sp.v")?,
    );
    let inputs: Vec<Option<RankQkv<T>>> = (0..n)
        .map(|r| {
            Some(RankQkv {
                q: &qs[r],
                k: &ks[r],
                v: &vs[r],
            })
        })
        .collect();
    let mut transport = Simulated::new(&dev, n)?;
    let out = forward(cfg, &inputs, &mut transport)?;
    let mut o = dev.alloc::<f32>(l * h * d, "sp.o")?;
    let mut lse = dev.alloc::<f32>(h * l, "sp.lse")?;
    let mut check = DeviceCheck::none();
    for (r, part) in out.outs.into_iter().enumerate() {
        let part = part.expect("simulated ranks are all local");
        let tq: usize = ranges[r].iter().map(|x| x.len()).sum();
        let mut at = 0;
        for g in ranges[r].iter().filter(|x| !x.is_empty()) {
            o.copy_range_from(g.start * h * d, &part.o, at * h * d, g.len() * h * d)?;
            for hh in 0..h {
                lse.copy_range_from(hh * l + g.start, &part.lse, hh * tq + at, g.len())?;
            }
            at += g.len();
        }
        check.absorb(part.check);
    }
    dev.synchronize()?;
    Ok((AttentionOut { o, lse, check }, out.stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ranges_cover_the_sequence_once() {
        for n in 1..=9 {
            for l in [0usize, 1, 5, 17, 64, 101] {
                for causal in [false, true] {
                    let mut seen = vec![0u8; l];
                    let rs = token_ranges(n, l, causal);
                    assert_eq!(rs.len(), n);
                    for r in rs.iter().flatten() {
                        for t in r.clone() {
                            seen[t] += 1;
                        }
                    }
                    assert!(seen.iter().all(|&x| x == 1), "n {n} l {l} causal {causal}");
                    let sizes: Vec<usize> =
                        rs.iter().map(|r| r.iter().map(|x| x.len()).sum()).collect();
                    let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    assert!(hi - lo <= 2, "{sizes:?}");
                }
            }
        }
        assert_eq!(
            token_ranges(2, 8, true),
            vec![vec![0..2, 6..8], vec![2..4, 4..6]]
        );
    }

    #[test]
    fn pieces_partition_each_block() {
        let g = geometry(3, 2, 23, true);
        for r in 0..3 {
            let mut toks: Vec<usize> = g.global[r]
                .iter()
                .flatten()
                .flat_map(|x| x.clone())
                .collect();
            toks.sort();
            let mut want: Vec<usize> = g.ranges[r].iter().flat_map(|x| x.clone()).collect();
            want.sort();
            assert_eq!(toks, want);
            let total: usize = g.pieces[r].iter().flatten().map(|s| s.len).sum();
            assert_eq!(total, g.local_len[r]);
        }
    }
}
