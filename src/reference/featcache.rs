//! SpecDiff feature-cache reference (issue 14, first step): the oracle of the coming
//! `ops::featcache` kernels. Everything here is exact or f64, and defined so that a kernel can
//! reproduce it bit for bit:
//!
//! - [`received`]: attention received per key, `Σ_q P[q, k]` with `P = exp(scale·q·k − lse[q])`
//!   (the row LSE that `attention.forward` returns), summed over heads or kept per head.
//! - [`score`]: `his · fut · exp(cf)` in f64, with `exp(cf)` taken from [`exp_cf`] (a table a
//!   kernel can be given, so that it need not reproduce the host's `exp`).
//! - [`select`]: the three classes, ordered by (score descending, index ascending):
//!   C1 = the first `n1` of the order with `n1 = N − floor(cr·N)` (f64, round to nearest; equal to
//!   `ceil((1 − cr)·N)` whenever `cr·N` is exact); C2 = the longest run at the end of the order,
//!   outside C1, whose score sum, accumulated from the end in f64, is `<= low_mass · total`, with
//!   `total` the same accumulation over all N; C3 = the rest.
//! - [`reuse_weights`]: C3's weights over the last three cached features,
//!   `w_i ∝ e^(−i)·(T_{t+i} − T_t)` for the `i = 1..=k` features that exist (PAPERS.md).
//! - The feature ring ([`Ring`]) and its ops: [`gather`] (pack the C1 rows), [`scatter`] (write
//!   the recomputed rows back and push them into the ring), [`reuse`] (C2: the newest cached
//!   feature; C3: the weighted sum with [`reuse_weights`], accumulated in f64) and [`age`] (the
//!   `cf` counters). Each validates everything before it writes, so an error leaves the outputs
//!   untouched; [`scatter_fault`], [`reuse_fault`] and [`age_fault`] are the per-entry checks the
//!   kernels' status words are explained with.

use crate::reference::attention;

/// `e^c` for a cache count `c`: the values [`score`] uses (and a kernel's table holds).
pub fn exp_cf(c: u32) -> f64 {
    (c as f64).exp()
}

/// `his · fut · exp(cf)` per token, in f64 (inputs widened exactly). Errors: lengths that differ,
/// a NaN, infinite or negative `his`/`fut` (naming which and where).
pub fn score(his: &[f32], fut: &[f32], cf: &[u32]) -> Result<Vec<f64>, String> {
    if his.len() != fut.len() || his.len() != cf.len() {
        return Err(format!(
            "mismatched lengths: his {}, fut {}, cf {}",
            his.len(),
            fut.len(),
            cf.len()
        ));
    }
    for (what, v) in [("his", his), ("fut", fut)] {
        if let Some((i, x)) = v
            .iter()
            .enumerate()
            .find(|(_, x)| !x.is_finite() || **x < 0.0)
        {
            return Err(format!(
                "{what}[{i}] = {x} is not a finite non-negative score"
            ));
        }
    }
    Ok(his
        .iter()
        .zip(fut)
        .zip(cf)
        .map(|((&h, &f), &c)| h as f64 * f as f64 * exp_cf(c))
        .collect())
}

/// Class codes of [`Selection::class`].
pub const RECOMPUTE: u8 = 1;
/// Reuse the most recent cached feature.
pub const REUSE_LAST: u8 = 2;
/// The weighted sum of the cached features ([`reuse_weights`]).
pub const REUSE_WEIGHTED: u8 = 3;

/// The result of [`select`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// Per token: [`RECOMPUTE`], [`REUSE_LAST`] or [`REUSE_WEIGHTED`].
    pub class: Vec<u8>,
    /// The C1 tokens, in the order (score descending, index ascending).
    pub c1: Vec<u32>,
    /// How many tokens are in C2.
    pub c2: usize,
}

/// `n1 = N − floor(cr·N)`: the C1 count.
pub fn c1_count(n: usize, cr: f64) -> usize {
    n - ((cr * n as f64).floor() as usize).min(n)
}

/// The three classes of `scores` (see the module docs). Errors: `cr` or `low_mass` outside
/// [0, 1] (or NaN), a NaN or negative score.
pub fn select(scores: &[f64], cr: f64, low_mass: f64) -> Result<Selection, String> {
    for (what, v) in [("cr", cr), ("low_mass", low_mass)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{what} = {v} is outside [0, 1]"));
        }
    }
    if let Some((i, s)) = scores
        .iter()
        .enumerate()
        .find(|(_, s)| s.is_nan() || **s < 0.0)
    {
        return Err(format!("score[{i}] = {s} is not a non-negative number"));
    }
    let n = scores.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    // No NaN: total_cmp is the numeric order, once -0.0 is read as +0.0 (a tie, by index).
    let key = |i: u32| {
        let s = scores[i as usize];
        if s == 0.0 {
            0.0
        } else {
            s
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let n1 = c1_count(n, cr);
    let total: f64 = order.iter().rev().map(|&i| scores[i as usize]).sum();
    let limit = low_mass * total;
    let mut run = 0usize;
    let mut acc = 0.0f64;
    for &i in order[n1..].iter().rev() {
        acc += scores[i as usize];
        if acc > limit {
            break;
        }
        run += 1;
    }
    let mut class = vec![REUSE_WEIGHTED; n];
    for &i in &order[..n1] {
        class[i as usize] = RECOMPUTE;
    }
    for &i in &order[n - run..] {
        class[i as usize] = REUSE_LAST;
    }
    Ok(Selection {
        class,
        c1: order[..n1].to_vec(),
        c2: run,
    })
}

/// C3's weights over the cached features `i = 1..=k` (k = `cached.len()`, at most 3 are used;
/// `cached[i − 1]` is the timestep `T_{t+i}` of the i-th most recent one) at the current timestep
/// `t_now`: `w_i = e^(−i)·(T_{t+i} − T_t) / Σ_j e^(−j)·(T_{t+j} − T_t)`. With one feature, or when
/// every gap is 0, all weight goes to the most recent feature. Errors: no cached feature, a gap
/// that is negative or not finite.
pub fn reuse_weights(cached: &[f64], t_now: f64) -> Result<Vec<f64>, String> {
    let k = cached.len().min(3);
    if k == 0 {
        return Err("no cached feature to reuse".into());
    }
    let raw: Vec<f64> = cached[..k]
        .iter()
        .enumerate()
        .map(|(j, &t)| {
            let gap = t - t_now;
            if !(gap.is_finite() && gap >= 0.0) {
                return Err(format!(
                    "cached timestep {t} is not at or after the current {t_now}"
                ));
            }
            Ok(reuse_decay(j + 1) * gap)
        })
        .collect::<Result<_, _>>()?;
    let sum: f64 = raw.iter().sum();
    if sum == 0.0 {
        let mut w = vec![0.0; k];
        w[0] = 1.0;
        return Ok(w);
    }
    Ok(raw.iter().map(|r| r / sum).collect())
}

/// `e^(−i)`, the decay of the i-th most recent cached feature in [`reuse_weights`] (the
/// kernels are given these three values, so they need no `exp`).
pub fn reuse_decay(i: usize) -> f64 {
    (-(i as f64)).exp()
}

/// Slots of the per-token feature ring (the last three features).
pub const RING: usize = 3;

/// The per-token feature ring (host model of `ops::featcache::Ring`): the last (up to) [`RING`]
/// features of each of `n` tokens (width `w`) and the timestep each was computed at.
///
/// Slot `head[i]` holds token `i`'s newest feature, `(head[i] + RING − k) % RING` its k-th newest
/// (k = 0 newest), for `k < len[i]`. A push writes slot `(head + 1) % RING`, makes it the head and
/// saturates `len` at [`RING`], so the oldest is overwritten.
#[derive(Clone, Debug, PartialEq)]
pub struct Ring {
    pub n: usize,
    pub w: usize,
    /// `[RING, n, w]`.
    pub feat: Vec<f32>,
    /// `[RING, n]`.
    pub stamp: Vec<f32>,
    /// `[n]`: the slot of the newest feature.
    pub head: Vec<u8>,
    /// `[n]`: how many slots are valid, `0..=RING`.
    pub len: Vec<u8>,
}

impl Ring {
    /// An empty ring (every `len` 0, `head` 0, features and stamps 0).
    pub fn new(n: usize, w: usize) -> Ring {
        Ring {
            n,
            w,
            feat: vec![0.0; RING * n * w],
            stamp: vec![0.0; RING * n],
            head: vec![0; n],
            len: vec![0; n],
        }
    }

    /// A read view (what [`reuse`] takes).
    pub fn view(&self) -> RingRef<'_> {
        RingRef {
            n: self.n,
            w: self.w,
            feat: &self.feat,
            stamp: &self.stamp,
            head: &self.head,
            len: &self.len,
        }
    }

    /// A write view (what [`scatter`] takes).
    pub fn view_mut(&mut self) -> RingMut<'_> {
        RingMut {
            n: self.n,
            w: self.w,
            feat: &mut self.feat,
            stamp: &mut self.stamp,
            head: &mut self.head,
            len: &mut self.len,
        }
    }

    /// Token `i`'s k-th newest feature (k = 0: the newest).
    pub fn feature(&self, i: usize, k: usize) -> &[f32] {
        self.view().feature(i, k)
    }

    /// The stamps of token `i`'s cached features, newest first.
    pub fn stamps(&self, i: usize) -> Vec<f32> {
        self.view().stamps(i)
    }

    /// The slot of token `i`'s k-th newest feature.
    pub fn slot(&self, i: usize, k: usize) -> usize {
        self.view().slot(i, k)
    }
}

/// A [`Ring`] borrowed from slices (the CPU path's view of the device ring).
#[derive(Clone, Copy, Debug)]
pub struct RingRef<'a> {
    pub n: usize,
    pub w: usize,
    pub feat: &'a [f32],
    pub stamp: &'a [f32],
    pub head: &'a [u8],
    pub len: &'a [u8],
}

/// A [`Ring`] borrowed mutably from slices.
#[derive(Debug)]
pub struct RingMut<'a> {
    pub n: usize,
    pub w: usize,
    pub feat: &'a mut [f32],
    pub stamp: &'a mut [f32],
    pub head: &'a mut [u8],
    pub len: &'a mut [u8],
}

impl<'a> RingRef<'a> {
    /// The slot of token `i`'s k-th newest feature (k = 0: the newest).
    pub fn slot(&self, i: usize, k: usize) -> usize {
        (self.head[i] as usize + RING - k % RING) % RING
    }

    /// Token `i`'s k-th newest feature.
    pub fn feature(&self, i: usize, k: usize) -> &'a [f32] {
        let s = self.slot(i, k);
        &self.feat[(s * self.n + i) * self.w..][..self.w]
    }

    /// The stamps of token `i`'s cached features, newest first.
    pub fn stamps(&self, i: usize) -> Vec<f32> {
        (0..self.len[i] as usize)
            .map(|k| self.stamp[self.slot(i, k) * self.n + i])
            .collect()
    }

    /// Whether the slices hold `n` tokens of width `w`.
    fn sized(&self) -> bool {
        self.feat.len() == RING * self.n * self.w
            && self.stamp.len() == RING * self.n
            && self.head.len() == self.n
            && self.len.len() == self.n
    }
}

/// Token `i`'s ring state `(head, len)` is usable: `head < RING`, `len <= RING`.
pub fn ring_state(i: usize, head: u8, len: u8) -> Result<(), String> {
    if head as usize >= RING || len as usize > RING {
        return Err(format!(
            "ring of token {i} is corrupt: head {head}, len {len} (need head < {RING}, len <= {RING})"
        ));
    }
    Ok(())
}

/// `rows[j, :] = x[c1[j], :]` (`x` `[n, width]`; repeated indices are allowed: a read). Errors:
/// width 0, `x` not a multiple of `width`, an index `>= n`.
pub fn gather(x: &[f32], width: usize, c1: &[u32]) -> Result<Vec<f32>, String> {
    if width == 0 {
        return Err("width is 0".into());
    }
    if x.len() % width != 0 {
        return Err(format!(
            "x has {} elements, not a multiple of width {width}",
            x.len()
        ));
    }
    let n = x.len() / width;
    let mut rows = Vec::with_capacity(c1.len() * width);
    for (j, &c) in c1.iter().enumerate() {
        if c as usize >= n {
            return Err(index_fault(j, c, n));
        }
        rows.extend_from_slice(&x[c as usize * width..][..width]);
    }
    Ok(rows)
}

/// The error of an index `c1[j] = c` that is not one of `n` tokens.
pub fn index_fault(j: usize, c: u32, n: usize) -> String {
    format!("c1[{j}] = {c} is not a token (n = {n})")
}

/// What is wrong with entry `j` of `c1` for [`scatter`] (`c1[..=j]` given, `head`/`len` of the
/// token `c1[j]` when it is one), or `None`: the index is `>= n`, repeats an earlier entry, or
/// the token's ring is corrupt. The first entry with a fault is the error.
pub fn scatter_fault(c1: &[u32], j: usize, n: usize, state: Option<(u8, u8)>) -> Option<String> {
    let c = c1[j];
    if c as usize >= n {
        return Some(index_fault(j, c, n));
    }
    if let Some(k) = c1[..j].iter().position(|&e| e == c) {
        return Some(format!(
            "c1[{j}] = {c} repeats c1[{k}]: the scattered tokens must be distinct"
        ));
    }
    let (h, l) = state?;
    ring_state(c as usize, h, l).err()
}

/// `x[c1[j], :] = rows[j, :]`, and `rows[j]` is pushed into token `c1[j]`'s ring as its newest
/// feature with stamp `t_now` (see [`Ring`]). Errors (nothing is written): lengths that differ,
/// a non-finite `t_now`, an index `>= n` or repeated, a corrupt ring state.
pub fn scatter(
    rows: &[f32],
    c1: &[u32],
    t_now: f32,
    x: &mut [f32],
    ring: RingMut<'_>,
) -> Result<(), String> {
    let (n, w) = (ring.n, ring.w);
    let view = RingRef {
        n,
        w,
        feat: &*ring.feat,
        stamp: &*ring.stamp,
        head: &*ring.head,
        len: &*ring.len,
    };
    if !view.sized() {
        return Err(format!(
            "the ring's buffers do not hold {n} tokens of width {w}"
        ));
    }
    if x.len() != n * w || rows.len() != c1.len() * w {
        return Err(format!(
            "mismatched lengths: rows {} (c1 {} × width {w}), x {} (n {n} × width {w})",
            rows.len(),
            c1.len(),
            x.len()
        ));
    }
    if !t_now.is_finite() {
        return Err(format!("t_now = {t_now} is not finite"));
    }
    let mut seen = vec![false; n];
    for (j, &c) in c1.iter().enumerate() {
        let c = c as usize;
        if c >= n || seen[c] {
            return Err(scatter_fault(c1, j, n, None).unwrap_or_default());
        }
        seen[c] = true;
        ring_state(c, ring.head[c], ring.len[c])?;
    }
    for (j, &c) in c1.iter().enumerate() {
        let i = c as usize;
        let row = &rows[j * w..][..w];
        x[i * w..][..w].copy_from_slice(row);
        let s = (ring.head[i] as usize + 1) % RING;
        ring.feat[(s * n + i) * w..][..w].copy_from_slice(row);
        ring.stamp[s * n + i] = t_now;
        ring.head[i] = s as u8;
        ring.len[i] = (ring.len[i] + 1).min(RING as u8);
    }
    Ok(())
}

/// What is wrong with token `i` for [`reuse`] (its class, ring state and stamps newest first,
/// `len` of them), or `None`: a class outside 1..=3; for class 2 and 3, a corrupt ring state,
/// an empty ring, or a stamp gap (stamp − `t_now`, in f64) that is negative or not finite among
/// the features it uses (class 2: the newest; class 3: all cached).
pub fn reuse_fault(
    i: usize,
    class: u8,
    head: u8,
    len: u8,
    stamps: &[f32],
    t_now: f32,
) -> Option<String> {
    if !(RECOMPUTE..=REUSE_WEIGHTED).contains(&class) {
        return Some(format!("class[{i}] = {class} is not 1, 2 or 3"));
    }
    if class == RECOMPUTE {
        return None;
    }
    if let Err(e) = ring_state(i, head, len) {
        return Some(e);
    }
    if len == 0 {
        return Some(format!(
            "class[{i}] = {class} but token {i} has no cached feature (its ring is empty)"
        ));
    }
    let used = if class == REUSE_LAST { 1 } else { stamps.len() };
    stamps[..used]
        .iter()
        .position(|&s| {
            let gap = s as f64 - t_now as f64;
            !(gap.is_finite() && gap >= 0.0)
        })
        .map(|k| {
            format!(
                "token {i}: cached stamp {} (k = {k}, newest 0) is before t_now = {t_now} or not finite (stamp gaps must be finite and >= 0)",
                stamps[k]
            )
        })
}

/// For each token `i`: class 1, `x[i]` untouched; class 2, `x[i]` = the newest cached feature (a
/// copy); class 3, `x[i] = Σ_k w_k · feature_k` over the (up to 3) cached features, newest
/// first, `w` = [`reuse_weights`] of their stamps at `t_now`, accumulated in f64 from `0.0` in
/// that order and rounded once to f32. Errors (nothing is written): lengths that differ, a
/// non-finite `t_now`, the first token with a [`reuse_fault`].
pub fn reuse(class: &[u8], ring: RingRef<'_>, t_now: f32, x: &mut [f32]) -> Result<(), String> {
    let (n, w) = (ring.n, ring.w);
    if !ring.sized() {
        return Err(format!(
            "the ring's buffers do not hold {n} tokens of width {w}"
        ));
    }
    if class.len() != n || x.len() != n * w {
        return Err(format!(
            "mismatched lengths: class {}, x {} (ring: n {n}, width {w})",
            class.len(),
            x.len()
        ));
    }
    if !t_now.is_finite() {
        return Err(format!("t_now = {t_now} is not finite"));
    }
    for (i, &c) in class.iter().enumerate() {
        let ok = (ring.head[i] as usize) < RING && ring.len[i] as usize <= RING;
        let stamps = if ok { ring.stamps(i) } else { Vec::new() };
        if let Some(e) = reuse_fault(i, c, ring.head[i], ring.len[i], &stamps, t_now) {
            return Err(e);
        }
    }
    for (i, &c) in class.iter().enumerate() {
        let out = &mut x[i * w..][..w];
        match c {
            REUSE_LAST => out.copy_from_slice(ring.feature(i, 0)),
            REUSE_WEIGHTED => {
                let stamps: Vec<f64> = ring.stamps(i).iter().map(|&s| s as f64).collect();
                let wts = reuse_weights(&stamps, t_now as f64)?;
                let feats: Vec<&[f32]> = (0..wts.len()).map(|k| ring.feature(i, k)).collect();
                for (col, o) in out.iter_mut().enumerate() {
                    let mut acc = 0.0f64;
                    for (wk, f) in wts.iter().zip(&feats) {
                        acc += wk * f[col] as f64;
                    }
                    *o = acc as f32;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What is wrong with `class[i]` for [`age`]: a value outside 1..=3.
pub fn age_fault(i: usize, class: u8) -> Option<String> {
    (!(RECOMPUTE..=REUSE_WEIGHTED).contains(&class))
        .then(|| format!("class[{i}] = {class} is not 1, 2 or 3"))
}

/// `cf[i] = 0` where `class[i] == 1`, else `min(cf[i] + 1, limit)` (saturating; a `cf` already
/// past `limit` becomes `limit`). Errors (nothing is written): lengths that differ, a class
/// outside 1..=3.
pub fn age(class: &[u8], cf: &mut [u32], limit: u32) -> Result<(), String> {
    if class.len() != cf.len() {
        return Err(format!(
            "mismatched lengths: class {}, cf {}",
            class.len(),
            cf.len()
        ));
    }
    if let Some(e) = class.iter().enumerate().find_map(|(i, &c)| age_fault(i, c)) {
        return Err(e);
    }
    for (c, f) in class.iter().zip(cf.iter_mut()) {
        *f = if *c == RECOMPUTE {
            0
        } else {
            f.saturating_add(1).min(limit)
        };
    }
    Ok(())
}

/// Attention received per key (dense, f64): `q` `[nq, heads, d]`, `k` `[nk, kv_heads, d]` (head
/// `h` reads kv head `h / (heads / kv_heads)`), `lse` `[heads, nq]` (natural log), `scale`; a
/// query with `lse = −inf` (it saw no key) contributes nothing. `mask(q, k)` says whether query
/// `q` sees key `k`. Returns `[heads, nk]` per head, or `[nk]` summed over heads.
#[allow(clippy::too_many_arguments)]
pub fn received(
    q: &[f64],
    k: &[f64],
    lse: &[f64],
    (nq, nk, heads, kv_heads, d): (usize, usize, usize, usize, usize),
    scale: f64,
    mask: impl Fn(usize, usize) -> bool,
    per_head: bool,
) -> Vec<f64> {
    let group = (heads / kv_heads.max(1)).max(1);
    let mut out = vec![0.0; heads * nk];
    for h in 0..heads {
        let kh = h / group;
        for qi in 0..nq {
            let l = lse[h * nq + qi];
            if l == f64::NEG_INFINITY {
                continue;
            }
            let qv = &q[(qi * heads + h) * d..(qi * heads + h + 1) * d];
            for ki in 0..nk {
                if !mask(qi, ki) {
                    continue;
                }
                let kv = &k[(ki * kv_heads + kh) * d..(ki * kv_heads + kh + 1) * d];
                let s: f64 = qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f64>() * scale;
                out[h * nk + ki] += (s - l).exp();
            }
        }
    }
    if per_head {
        out
    } else {
        (0..nk)
            .map(|ki| (0..heads).map(|h| out[h * nk + ki]).sum())
            .collect()
    }
}

/// The mask of an attention problem, as [`received`] takes it: query `i` sees key `j` when both
/// lie in the same sequence (`cu_q`, `cu_kv`) and [`attention::visible`] says so (the rules of
/// `attention.forward`).
pub fn attention_mask<'a>(p: &'a attention::Problem) -> impl Fn(usize, usize) -> bool + 'a {
    let seq = |cu: &[i32], n: usize| {
        let mut v = vec![usize::MAX; n];
        for (b, w) in cu.windows(2).enumerate() {
            for i in w[0].max(0)..w[1].max(0) {
                if let Some(x) = v.get_mut(i as usize) {
                    *x = b;
                }
            }
        }
        v
    };
    let (sq, sk) = (seq(p.cu_q, p.q_pos.len()), seq(p.cu_kv, p.kv_pos.len()));
    move |i, j| sq[i] != usize::MAX && sq[i] == sk[j] && attention::visible(p, i, j)
}

/// [`received`] of an attention problem (its Q, K, heads, scale and [`attention_mask`]; V is not
/// read) with the row LSE `lse` (`[heads, total_q]`).
pub fn received_attention(p: &attention::Problem, lse: &[f64], per_head: bool) -> Vec<f64> {
    let wide = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (nq, nk) = (p.q_pos.len(), p.kv_pos.len());
    received(
        &wide(p.q),
        &wide(p.k),
        lse,
        (nq, nk, p.heads, p.kv_heads, p.head_dim),
        p.scale as f64,
        attention_mask(p),
        per_head,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_the_product_and_rejects_bad_values() {
        let s = score(&[2.0, 0.5], &[3.0, 4.0], &[0, 2]).unwrap();
        assert_eq!(s[0], 6.0);
        assert_eq!(s[1], 2.0 * 2f64.exp());
        assert!(score(&[1.0], &[1.0, 2.0], &[0, 0])
            .unwrap_err()
            .contains("mismatched lengths"));
        assert!(score(&[f32::NAN], &[1.0], &[0])
            .unwrap_err()
            .contains("his[0]"));
        assert!(score(&[1.0], &[-1.0], &[0]).unwrap_err().contains("fut[0]"));
    }

    #[test]
    fn hand_computed_selection() {
        // Order: 3 (9), 0 (5), 2 (5; tie, higher index), 4 (1), 1 (0.5); total 20.5.
        let s = [5.0, 0.5, 5.0, 9.0, 1.0];
        // cr = 0.6: n1 = 5 − floor(3) = 2 -> C1 = {3, 0}. low_mass 0.1: limit 2.05; from the
        // end 0.5 (ok), +1 = 1.5 (ok), +5 = 6.5 (stop): C2 = {1, 4}; C3 = {2}.
        let sel = select(&s, 0.6, 0.1).unwrap();
        assert_eq!(sel.c1, vec![3, 0]);
        assert_eq!(sel.class, vec![1, 2, 3, 1, 2]);
        assert_eq!(sel.c2, 2);
        // cr = 0: everything recomputed; cr = 1: nothing, and C2 may take the whole order.
        assert_eq!(select(&s, 0.0, 0.1).unwrap().class, vec![1; 5]);
        let all = select(&s, 1.0, 1.0).unwrap();
        assert_eq!((all.c1.len(), all.c2), (0, 5));
        assert_eq!(all.class, vec![2; 5]);
    }

    #[test]
    fn all_equal_scores_order_by_index() {
        let s = [1.0; 10];
        let sel = select(&s, 0.7, 0.25).unwrap();
        // n1 = 10 − floor(7.000000000000001) = 3: tokens 0, 1, 2; limit 2.5: two tokens from the
        // end (9, 8).
        assert_eq!(sel.c1, vec![0, 1, 2]);
        assert_eq!(sel.class, vec![1, 1, 1, 3, 3, 3, 3, 3, 2, 2]);
        // All zero (-0.0 ties with 0.0): n1 = 3 − floor(1.5) = 2 by index, and C2 takes the rest
        // (0 <= 0).
        let z = select(&[0.0, -0.0, 0.0], 0.5, 0.0).unwrap();
        assert_eq!((z.c1.clone(), z.class), (vec![0, 1], vec![1, 1, 2]));
    }

    #[test]
    fn selection_errors() {
        assert!(select(&[1.0], 1.5, 0.1).unwrap_err().contains("cr = 1.5"));
        assert!(select(&[1.0], f64::NAN, 0.1).unwrap_err().contains("cr"));
        assert!(select(&[1.0], 0.5, -0.1).unwrap_err().contains("low_mass"));
        assert!(select(&[f64::NAN], 0.5, 0.1)
            .unwrap_err()
            .contains("score[0]"));
    }

    #[test]
    fn reuse_weights_follow_the_formula() {
        // Gaps 1, 2, 3 at t = 10: raw e^-1, 2e^-2, 3e^-3.
        let w = reuse_weights(&[11.0, 12.0, 13.0], 10.0).unwrap();
        let raw = [(-1f64).exp(), 2.0 * (-2f64).exp(), 3.0 * (-3f64).exp()];
        let sum: f64 = raw.iter().sum();
        for (a, b) in w.iter().zip(raw) {
            assert!((a - b / sum).abs() < 1e-15);
        }
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        // Fewer than three: what exists; more than three: the first three.
        assert_eq!(reuse_weights(&[11.0], 10.0).unwrap(), vec![1.0]);
        assert_eq!(
            reuse_weights(&[11.0, 12.0, 13.0, 14.0], 10.0)
                .unwrap()
                .len(),
            3
        );
        // Zero gaps: all to the most recent.
        assert_eq!(reuse_weights(&[10.0, 10.0], 10.0).unwrap(), vec![1.0, 0.0]);
        assert!(reuse_weights(&[], 1.0).is_err());
        assert!(reuse_weights(&[9.0], 10.0)
            .unwrap_err()
            .contains("not at or after"));
    }

    #[test]
    fn received_sums_probability_columns() {
        // One head, two queries, two keys, d = 1, scale 1: s = q·k.
        let q = [1.0, 2.0];
        let k = [0.0, 1.0];
        let lse: Vec<f64> = q
            .iter()
            .map(|&qv: &f64| ((qv * 0.0).exp() + (qv * 1.0).exp()).ln())
            .collect();
        let r = received(&q, &k, &lse, (2, 2, 1, 1, 1), 1.0, |_, _| true, true);
        // Each query's probabilities sum to 1, so the columns sum to 2.
        assert!((r[0] + r[1] - 2.0).abs() < 1e-12);
        let p0 = 1.0 / (1.0 + 1f64.exp()) + 1.0 / (1.0 + 2f64.exp());
        assert!((r[0] - p0).abs() < 1e-12);
        // A masked key receives nothing; a query with lse -inf contributes nothing.
        let r = received(
            &q,
            &k,
            &[0.0, f64::NEG_INFINITY],
            (2, 2, 1, 1, 1),
            1.0,
            |_, k| k == 0,
            false,
        );
        assert_eq!(r[1], 0.0);
        assert!((r[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn gather_copies_rows_and_checks_indices() {
        let x = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        assert_eq!(
            gather(&x, 2, &[2, 0, 2]).unwrap(),
            vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]
        );
        assert!(gather(&x, 2, &[]).unwrap().is_empty());
        assert_eq!(
            gather(&x, 2, &[1, 3]).unwrap_err(),
            "c1[1] = 3 is not a token (n = 3)"
        );
        assert!(gather(&x, 0, &[]).unwrap_err().contains("width is 0"));
        assert!(gather(&x, 4, &[]).unwrap_err().contains("multiple"));
    }

    #[test]
    fn scatter_pushes_into_the_ring_and_wraps() {
        // n = 2 tokens, w = 2.
        let mut ring = Ring::new(2, 2);
        let mut x = vec![0.0; 4];
        // Four pushes into token 1 at t = 4, 3, 2, 1 (token 0 once, at t = 3).
        scatter(&[1.0, 1.5], &[1], 4.0, &mut x, ring.view_mut()).unwrap();
        assert_eq!((ring.head[1], ring.len[1]), (1, 1));
        assert_eq!(x, vec![0.0, 0.0, 1.0, 1.5]);
        scatter(&[2.0, 2.5, 7.0, 7.5], &[1, 0], 3.0, &mut x, ring.view_mut()).unwrap();
        assert_eq!(x, vec![7.0, 7.5, 2.0, 2.5]);
        assert_eq!(
            (ring.head.clone(), ring.len.clone()),
            (vec![1, 2], vec![1, 2])
        );
        scatter(&[3.0, 3.5], &[1], 2.0, &mut x, ring.view_mut()).unwrap();
        assert_eq!((ring.head[1], ring.len[1]), (0, 3));
        scatter(&[4.0, 4.5], &[1], 1.0, &mut x, ring.view_mut()).unwrap();
        // Slot 1 (the oldest, t = 4) was overwritten: newest first 4, 3, 2.
        assert_eq!((ring.head[1], ring.len[1]), (1, 3));
        assert_eq!(ring.stamps(1), vec![1.0, 2.0, 3.0]);
        assert_eq!(ring.feature(1, 0), &[4.0, 4.5]);
        assert_eq!(ring.feature(1, 2), &[2.0, 2.5]);
        assert_eq!(ring.stamps(0), vec![3.0]);
        assert_eq!(ring.feature(0, 0), &[7.0, 7.5]);
        assert_eq!(x, vec![7.0, 7.5, 4.0, 4.5]);
    }

    #[test]
    fn scatter_errors_write_nothing() {
        let mut ring = Ring::new(3, 1);
        let mut x = vec![9.0; 3];
        let before = (ring.clone(), x.clone());
        let mut bad = |rows: &[f32], c1: &[u32], t: f32, ring: &mut Ring| {
            scatter(rows, c1, t, &mut x, ring.view_mut()).unwrap_err()
        };
        assert_eq!(
            bad(&[1.0, 2.0], &[0, 3], 1.0, &mut ring),
            "c1[1] = 3 is not a token (n = 3)"
        );
        assert_eq!(
            bad(&[1.0, 2.0, 3.0], &[2, 0, 2], 1.0, &mut ring),
            "c1[2] = 2 repeats c1[0]: the scattered tokens must be distinct"
        );
        assert!(bad(&[1.0], &[0], f32::NAN, &mut ring).contains("t_now = NaN"));
        assert!(bad(&[1.0], &[0, 1], 1.0, &mut ring).contains("mismatched lengths"));
        let mut corrupt = ring.clone();
        corrupt.head[1] = 3;
        assert!(bad(&[1.0, 2.0], &[0, 1], 1.0, &mut corrupt).contains("ring of token 1"));
        assert_eq!((ring, x), before);
    }

    #[test]
    fn reuse_hand_computed() {
        // n = 4 tokens, w = 1: token 0 three features (t = 13, 12, 11 newest 11), token 1 one
        // (t = 12), token 2 two with zero gaps, token 3 none.
        let mut ring = Ring::new(4, 1);
        let mut x = vec![0.0; 4];
        scatter(&[100.0], &[0], 13.0, &mut x, ring.view_mut()).unwrap();
        scatter(&[10.0, 5.0], &[0, 2], 12.0, &mut x, ring.view_mut()).unwrap();
        scatter(&[1.0, 7.0], &[0, 1], 11.0, &mut x, ring.view_mut()).unwrap();
        scatter(&[6.0], &[2], 10.0, &mut x, ring.view_mut()).unwrap();
        // At t = 10 (token 2's stamps are 10 and 12: gaps 0, 2).
        let mut out = vec![-1.0; 4];
        reuse(&[3, 3, 2, 1], ring.view(), 10.0, &mut out).unwrap();
        // Token 0: gaps 1, 2, 3: raw e^-1, 2e^-2, 3e^-3 on features 1, 10, 100.
        let raw = [(-1f64).exp(), 2.0 * (-2f64).exp(), 3.0 * (-3f64).exp()];
        let sum: f64 = raw.iter().sum();
        let want0 = (raw[0] * 1.0 + raw[1] * 10.0 + raw[2] * 100.0) / sum;
        assert!((out[0] as f64 - want0).abs() <= 1e-6 * want0);
        // Token 1: one feature -> itself, exactly. Token 2 (class 2): the newest (6), a copy.
        assert_eq!(&out[1..], &[7.0, 6.0, -1.0]);
        // Token 2 as class 3 at t = 10: gaps 0 and 2 -> weights 0 and 1: the older one (5).
        let mut out2 = vec![-1.0; 4];
        reuse(&[1, 1, 3, 1], ring.view(), 10.0, &mut out2).unwrap();
        assert_eq!(out2, vec![-1.0, -1.0, 5.0, -1.0]);
        // All gaps 0 -> the newest.
        let mut r1 = Ring::new(1, 1);
        let mut x1 = vec![0.0];
        scatter(&[2.0], &[0], 5.0, &mut x1, r1.view_mut()).unwrap();
        scatter(&[3.0], &[0], 5.0, &mut x1, r1.view_mut()).unwrap();
        let mut o1 = vec![0.0];
        reuse(&[3], r1.view(), 5.0, &mut o1).unwrap();
        assert_eq!(o1, vec![3.0]);
    }

    #[test]
    fn reuse_errors_write_nothing() {
        let mut ring = Ring::new(3, 1);
        let mut x = vec![0.0; 3];
        scatter(&[1.0, 2.0], &[0, 1], 5.0, &mut x, ring.view_mut()).unwrap();
        let mut out = vec![9.0; 3];
        let mut bad =
            |class: &[u8], t: f32, ring: &Ring| reuse(class, ring.view(), t, &mut out).unwrap_err();
        assert_eq!(bad(&[1, 4, 1], 5.0, &ring), "class[1] = 4 is not 1, 2 or 3");
        assert_eq!(bad(&[0, 1, 1], 5.0, &ring), "class[0] = 0 is not 1, 2 or 3");
        assert!(bad(&[2, 2, 2], 5.0, &ring).contains("token 2 has no cached feature"));
        assert!(bad(&[1, 3, 1], 6.0, &ring).starts_with("token 1: cached stamp 5"));
        assert!(bad(&[2, 1, 1], 6.0, &ring).starts_with("token 0: cached stamp 5"));
        assert!(bad(&[1, 1, 1], f32::INFINITY, &ring).contains("t_now = inf"));
        assert!(bad(&[1, 1], 5.0, &ring).contains("mismatched lengths"));
        let mut corrupt = ring.clone();
        corrupt.len[0] = 4;
        assert!(bad(&[2, 1, 1], 5.0, &corrupt).contains("ring of token 0 is corrupt"));
        // A corrupt ring of a class-1 token is not read.
        let mut ok = vec![0.0; 3];
        reuse(&[1, 2, 1], corrupt.view(), 5.0, &mut ok).unwrap();
        assert_eq!(ok, vec![0.0, 2.0, 0.0]);
        let mut nan = ring.clone();
        let s = nan.slot(1, 0);
        nan.stamp[s * 3 + 1] = f32::NAN;
        let e = bad(&[1, 3, 1], 5.0, &nan);
        assert!(e.contains("not finite"), "{e}");
        assert_eq!(out, vec![9.0; 3]);
    }

    #[test]
    fn age_resets_and_saturates() {
        let mut cf = vec![5, 5, 254, 255, 900];
        age(&[1, 2, 3, 3, 2], &mut cf, 255).unwrap();
        assert_eq!(cf, vec![0, 6, 255, 255, 255]);
        assert_eq!(
            age(&[1, 7, 1, 1, 1], &mut cf, 255).unwrap_err(),
            "class[1] = 7 is not 1, 2 or 3"
        );
        assert_eq!(cf, vec![0, 6, 255, 255, 255]);
        assert!(age(&[1], &mut cf, 255).unwrap_err().contains("mismatched"));
    }
}
