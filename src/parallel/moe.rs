//! Expert parallelism for the ReXMoE layer ([`crate::ops::moe::layer`]): the group's `E = r·N`
//! virtual experts are sharded across the ranks in contiguous ranges ([`shard`]), every rank
//! holds its own tokens and a replica of the router, and the token rows travel to the ranks that
//! own their experts and back through a [`Transport`] (`Simulated`, `P2p`, `Nccl`).
//!
//! Per layer call:
//! 1. each rank routes its tokens (router GEMM, `moe::route`), aligns the top-k entries by
//!    expert with block size 1 (`moe::align`, no padding) and gathers the rows into that order
//!    (`moe::permute`): rank ρ's rows for expert e are the contiguous range
//!    `offsets_ρ[e] .. offsets_ρ[e + 1]`;
//! 2. the ranks exchange their `offsets` (`E + 1` int32 each: an all-gather of fixed size), and
//!    each reads the table back to the host: the row counts of every (source rank, expert), which
//!    every rank then turns into the same global copy plan. This is the one host round trip of
//!    the layer, as in NCCL-based expert parallelism, where the receive sizes must be known before
//!    the all-to-all;
//! 3. dispatch (all-to-all): the rows of (source ρ, expert e) go to the owner of e, which stores
//!    them expert-major, source-minor, so that its experts' rows are contiguous;
//! 4. each owner runs the grouped SwiGLU GEMM and the grouped down GEMM over its shard (offsets
//!    from the plan, uploaded);
//! 5. combine's all-to-all: the f32 expert outputs go back to the rows they came from on the
//!    source rank, and the source combines its tokens' k rows in slot order (`moe::combine`).
//!
//! A token row's expert output does not depend on the other rows of its GEMM (each output element
//! accumulates over K in the same order in any tile), and the combine order is the slot order,
//! so the result equals the single-rank layer's: the tests check it bit for bit on simulated
//! ranks.

use std::ops::Range;

use super::{Copy, RankBuffers, Transport};
use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::gemm;
use crate::ops::moe::{self, ExpertFloat, RouteParams};
use crate::ops::on_device;

const OP: &str = "parallel::moe::layer";

/// The virtual experts rank `rank` of `ranks` owns: `E·rank/ranks .. E·(rank+1)/ranks`.
pub fn shard(e: usize, ranks: usize, rank: usize) -> Range<usize> {
    (e * rank / ranks)..(e * (rank + 1) / ranks)
}

/// The rank that owns virtual expert `v` under [`shard`].
pub fn owner(e: usize, ranks: usize, v: usize) -> usize {
    (0..ranks)
        .find(|&q| shard(e, ranks, q).contains(&v))
        .expect("v < e")
}

/// What one local rank brings to a layer call.
pub struct RankInput<'a, T: ExpertFloat> {
    /// This rank's tokens, `[T_ρ, d]` (`T_ρ` may differ between ranks, and be 0).
    pub x: &'a DeviceBuffer<T>,
    /// The router, the same on every rank: `[r·N, d]`.
    pub w_router: &'a DeviceBuffer<T>,
    /// This rank's experts, `shard(E, ranks, rank)` of the group's virtual ids, in order:
    /// `[E_ρ, F, d]`.
    pub w_gate: &'a DeviceBuffer<T>,
    /// `[E_ρ, F, d]`.
    pub w_up: &'a DeviceBuffer<T>,
    /// `[E_ρ, d, F]`.
    pub w_down: &'a DeviceBuffer<T>,
}

/// The sizes of the layer, the same on every rank.
#[derive(Clone, Copy, Debug)]
pub struct EpDims {
    /// Model width.
    pub d: usize,
    /// Expert hidden size.
    pub f: usize,
}

/// What a call moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpStats {
    /// Per rank: token rows it sent to other ranks in the dispatch (the same number come back).
    pub rows_sent: Vec<usize>,
    /// Per rank: rows its experts computed (its own and received).
    pub rows_computed: Vec<usize>,
    /// Copies of the dispatch (between distinct ranks; the combine has as many).
    pub copies: usize,
}

/// One ReXMoE layer with experts sharded over the transport's ranks. `inputs[ρ]` is `Some` for
/// every local rank of the transport (`None` for ranks another process hosts). Returns `y`
/// `[T_ρ, d]` for the local ranks (`None` elsewhere) and the traffic.
pub fn layer<T, X>(
    xp: &mut X,
    inputs: &[Option<RankInput<T>>],
    dims: EpDims,
    p: &RouteParams,
) -> Result<(Vec<Option<DeviceBuffer<T>>>, EpStats)>
where
    T: ExpertFloat,
    X: Transport<T> + Transport<f32> + Transport<i32> + ?Sized,
{
    let ranks = <X as Transport<T>>::ranks(xp);
    let local = <X as Transport<T>>::local_ranks(xp);
    let EpDims { d, f } = dims;
    if inputs.len() != ranks {
        return Err(Error::invalid(
            OP,
            format!("{} inputs for {ranks} ranks", inputs.len()),
        ));
    }
    if d == 0 || f == 0 {
        return Err(Error::invalid(OP, "d and f must be >= 1"));
    }
    for (q, inp) in inputs.iter().enumerate() {
        if local.contains(&q) != inp.is_some() {
            return Err(Error::invalid(
                OP,
                format!(
                    "rank {q} is {}local to the transport but its input is {}",
                    if local.contains(&q) { "" } else { "not " },
                    if inp.is_some() { "given" } else { "missing" }
                ),
            ));
        }
    }
    let first = *local
        .first()
        .ok_or_else(|| Error::invalid(OP, "the transport hosts no rank here"))?;
    let e = {
        let w = inputs[first].as_ref().expect("checked").w_router;
        if w.is_empty() || w.len() % d != 0 {
            return Err(Error::invalid(
                OP,
                format!(
                    "w_router has {} elements, not [r·N, d] with d = {d}",
                    w.len()
                ),
            ));
        }
        w.len() / d
    };
    let k = p.top_k;
    if p.r == 0 || e % p.r != 0 || p.layer_in_group >= p.r || k == 0 || k > e {
        return Err(Error::invalid(
            OP,
            format!(
                "r = {}, layer_in_group = {}, top_k = {k} do not fit r·N = {e} experts",
                p.r, p.layer_in_group
            ),
        ));
    }
    let w1 = e + 1;

    // 1. Route and gather by expert on every local rank.
    struct Local {
        positions: DeviceBuffer<i32>,
        weights: DeviceBuffer<f32>,
        tokens: usize,
    }
    let mut locals: Vec<Option<Local>> = (0..ranks).map(|_| None).collect();
    let mut gathered: Vec<Vec<DeviceBuffer<T>>> = (0..ranks).map(|_| Vec::new()).collect();
    let mut offs: Vec<Vec<DeviceBuffer<i32>>> = (0..ranks).map(|_| Vec::new()).collect();
    for &q in &local {
        let inp = inputs[q].as_ref().expect("checked");
        let dev = <X as Transport<T>>::device(xp, q)?.clone();
        let sh = shard(e, ranks, q);
        let es = sh.len();
        for (name, b, want) in [
            ("x", inp.x, None),
            ("w_router", inp.w_router, Some(e * d)),
            ("w_gate", inp.w_gate, Some(es * f * d)),
            ("w_up", inp.w_up, Some(es * f * d)),
            ("w_down", inp.w_down, Some(es * d * f)),
        ] {
            on_device(OP, name, &dev, b)?;
            if let Some(want) = want {
                if b.len() != want {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "rank {q}: {name} has {} elements, expected {want} (experts \
                             {sh:?} of {e}, d = {d}, F = {f})",
                            b.len()
                        ),
                    ));
                }
            }
        }
        if inp.x.len() % d != 0 {
            return Err(Error::invalid(
                OP,
                format!("rank {q}: x has {} elements, not [T, d = {d}]", inp.x.len()),
            ));
        }
        let tokens = inp.x.len() / d;
        let (perm_rows, perm_offsets, positions, weights) = if tokens == 0 {
            let mut o = dev.alloc::<i32>(w1, "ep offsets")?;
            o.upload(&vec![0; w1])?;
            (
                dev.alloc::<T>(0, "ep rows")?,
                o,
                dev.alloc::<i32>(0, "ep positions")?,
                dev.alloc::<f32>(0, "ep weights")?,
            )
        } else {
            let logits: DeviceBuffer<f32> = gemm::dense(
                inp.x,
                inp.w_router,
                tokens,
                e,
                d,
                &gemm::Epilogue::default(),
            )?;
            let routed = moe::route(&logits, tokens, p)?;
            let aligned = moe::align(&routed.topk_ids, k, e, 1)?;
            let perm = moe::permute(inp.x, d, &aligned, k, e, 1)?;
            (perm.rows, perm.offsets, perm.positions, routed.topk_weights)
        };
        let all = dev.alloc::<i32>(ranks * w1, "ep offsets table")?;
        offs[q] = vec![perm_offsets, all];
        gathered[q] = vec![perm_rows];
        locals[q] = Some(Local {
            positions,
            weights,
            tokens,
        });
    }

    // 2. All-gather the offsets; every rank learns every (source, expert) row count.
    let mut ob = RankBuffers { bufs: offs };
    for &q in &local {
        let (a, b) = ob.bufs[q].split_at_mut(1);
        b[0].copy_range_from(q * w1, &a[0], 0, w1)?;
    }
    let copies: Vec<Copy> = (0..ranks)
        .flat_map(|s| {
            (0..ranks).filter(move |&t| t != s).map(move |t| Copy {
                src_rank: s,
                src_buf: 0,
                src_off: 0,
                dst_rank: t,
                dst_buf: 1,
                dst_off: s * w1,
                len: w1,
                ring: 0,
            })
        })
        .collect();
    <X as Transport<i32>>::exchange(xp, &mut ob, &copies)?;
    <X as Transport<i32>>::wait(xp)?;
    let table = ob.bufs[first][1].download()?;
    let off = |s: usize, v: usize| table[s * w1 + v] as usize;
    for s in 0..ranks {
        let row = &table[s * w1..(s + 1) * w1];
        if row[0] != 0 || row.windows(2).any(|w| w[1] < w[0]) {
            return Err(Error::invalid(
                OP,
                format!("rank {s} sent inconsistent expert offsets"),
            ));
        }
    }

    // 3. The plan: owner q stores its experts' rows expert-major, source-minor.
    // recv_at[s][v]: where (s, v)'s rows start in their owner's buffer.
    let mut recv_at = vec![vec![0usize; e]; ranks];
    let mut recv_len = vec![0usize; ranks];
    let mut group_off: Vec<Vec<i32>> = vec![Vec::new(); ranks];
    for q in 0..ranks {
        let mut at = 0usize;
        group_off[q].push(0);
        for v in shard(e, ranks, q) {
            for (s, ra) in recv_at.iter_mut().enumerate() {
                ra[v] = at;
                at += off(s, v + 1) - off(s, v);
            }
            group_off[q].push(at as i32);
        }
        recv_len[q] = at;
    }
    let mut stats = EpStats {
        rows_sent: vec![0; ranks],
        rows_computed: recv_len.clone(),
        copies: 0,
    };
    // (source, offset in source rows, owner, offset in owner rows, rows)
    let mut moves = Vec::new();
    for (s, ra) in recv_at.iter().enumerate() {
        for (v, &at) in ra.iter().enumerate() {
            let n = off(s, v + 1) - off(s, v);
            if n > 0 {
                let q = owner(e, ranks, v);
                moves.push((s, off(s, v), q, at, n));
                if q != s {
                    stats.rows_sent[s] += n;
                    stats.copies += 1;
                }
            }
        }
    }

    // 4. Dispatch.
    for &q in &local {
        let dev = <X as Transport<T>>::device(xp, q)?;
        let recv = dev.alloc::<T>(recv_len[q] * d, "ep received rows")?;
        gathered[q].push(recv);
    }
    let mut rb = RankBuffers { bufs: gathered };
    all_to_all(xp, &mut rb, &local, &moves, d)?;

    // 5. The experts of each local rank.
    let mut outs: Vec<Vec<DeviceBuffer<f32>>> = (0..ranks).map(|_| Vec::new()).collect();
    for &q in &local {
        let inp = inputs[q].as_ref().expect("checked");
        let dev = <X as Transport<T>>::device(xp, q)?;
        let rows = recv_len[q];
        let out = if rows == 0 {
            dev.alloc::<f32>(0, "ep expert out")?
        } else {
            let go = dev.upload(&group_off[q], "ep group offsets")?;
            let h: DeviceBuffer<T> =
                gemm::grouped_swiglu(&rb.bufs[q][1], inp.w_gate, inp.w_up, &go, rows, f, d)?;
            gemm::grouped(&h, inp.w_down, &go, rows, d, f, &gemm::Epilogue::default())?
        };
        let tokens = locals[q].as_ref().expect("local").tokens;
        let ret = dev.alloc::<f32>(tokens * k * d, "ep returned rows")?;
        outs[q] = vec![out, ret];
    }

    // 6. Back to the sources, then combine in slot order.
    let mut ob = RankBuffers { bufs: outs };
    let back: Vec<_> = moves
        .iter()
        .map(|&(s, so, q, qo, n)| (q, qo, s, so, n))
        .collect();
    all_to_all(xp, &mut ob, &local, &back, d)?;

    let mut ys: Vec<Option<DeviceBuffer<T>>> = (0..ranks).map(|_| None).collect();
    for &q in &local {
        let l = locals[q].as_ref().expect("local");
        let dev = <X as Transport<T>>::device(xp, q)?;
        ys[q] = Some(if l.tokens == 0 {
            dev.alloc::<T>(0, "ep y")?
        } else {
            moe::combine(&ob.bufs[q][1], &l.positions, &l.weights, d, k)?
        });
    }
    Ok((ys, stats))
}

/// Move rows from buffer 0 to buffer 1 of the ranks: each `(source, source row, destination,
/// destination row, rows)` of `moves` (rows of `d` elements). A move within one local rank is a
/// device copy; the others go through the transport as one step, then wait.
fn all_to_all<E: crate::dtype::DType, X: Transport<E> + ?Sized>(
    xp: &mut X,
    bufs: &mut RankBuffers<E>,
    local: &[usize],
    moves: &[(usize, usize, usize, usize, usize)],
    d: usize,
) -> Result<()> {
    for &(s, so, _, qo, n) in moves.iter().filter(|m| m.0 == m.2) {
        if local.contains(&s) {
            let (a, b) = bufs.bufs[s].split_at_mut(1);
            b[0].copy_range_from(qo * d, &a[0], so * d, n * d)?;
        }
    }
    let copies: Vec<Copy> = moves
        .iter()
        .filter(|m| m.0 != m.2)
        .map(|&(s, so, q, qo, n)| Copy {
            src_rank: s,
            src_buf: 0,
            src_off: so * d,
            dst_rank: q,
            dst_buf: 1,
            dst_off: qo * d,
            len: n * d,
            ring: 0,
        })
        .collect();
    xp.exchange(bufs, &copies)?;
    xp.wait()
}
