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
            Ok((-((j + 1) as f64)).exp() * gap)
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
}
