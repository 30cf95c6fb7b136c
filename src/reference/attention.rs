//! Reference attention with the dense mask formulation, in f64: the oracle for the duo-causal
//! (TaH), causal, causal-with-offset and full attention kernels, for flash-decoding and for the
//! LSE merge.
//!
//! Layouts: Q `[total_q, H, D]`, K and V `[total_kv, H_kv, D]` (row-major, tokens of all sequences
//! packed; sequence `b` owns rows `cu_q[b]..cu_q[b+1]` and `cu_kv[b]..cu_kv[b+1]`). Query head `h`
//! reads KV head `h / (H / H_kv)` (GQA). Outputs: O `[total_q, H, D]` and LSE `[H, total_q]`.
//!
//! Visibility of key `j` to query `i` of the same sequence (the key slot must be valid):
//! * `Full`: always;
//! * `Causal`: `kv_pos[j] <= q_pos[i]`;
//! * `DuoCausal`: `kv_pos[j] <= q_pos[i]` and `kv_depth[j] <= q_depth[i]`.
//!
//! A row that sees no key has O = 0 and LSE = -inf.
//!
//! NaN and Inf (docs/architecture.md, "NaN and Inf in attention"): scores are `scale * q . k` in
//! IEEE arithmetic. A row is NaN (O and LSE) when it sees a key whose score is NaN or +inf or
//! whose V row holds a NaN. A key whose score is -inf has weight exactly 0 and contributes
//! nothing, as if masked (a row whose every visible score is -inf has O = 0, LSE = -inf). Every
//! key with a finite score has a positive weight, so a +-Inf at entry `d` of its V row makes
//! `O[d]` that infinity (both signs: NaN) whatever the weight's size; the rest of the row and the
//! LSE are as if that entry were 0. Masked keys and values are never read.

/// Which keys a query sees. Query `i` and key `j` must belong to the same sequence (the
/// `cu_seqlens` ranges) and the key slot must be valid (`kv_valid[j] != 0`, or no `kv_valid`);
/// then, with `q_pos` / `kv_pos` the tokens' positions (explicit, or `t + offset` for token `t` of
/// a sequence) and `q_depth` / `kv_depth` their TaH depth slots, each variant states its rule.
/// A query that sees no key gets O = 0 and LSE = -inf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskMode {
    /// Every valid key of the sequence (bidirectional attention).
    Full,
    /// Keys at or before the query's position: `kv_pos[j] <= q_pos[i]` (causal; with offsets,
    /// a query chunk attending to the keys of a longer sequence).
    Causal,
    /// TaH duo-causal: causal in position and in depth, `kv_pos[j] <= q_pos[i]` and
    /// `kv_depth[j] <= q_depth[i]` (a token at depth d sees earlier tokens at depths <= d, and
    /// itself at its own and shallower depths). Needs `q_depth` and `kv_depth`.
    DuoCausal,
}

/// Host-side problem description for the reference (all arrays already resolved: positions are
/// explicit, validity is explicit).
#[derive(Clone, Debug)]
pub struct Problem<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `batch + 1` cumulative offsets into the query tokens.
    pub cu_q: &'a [i32],
    /// `batch + 1` cumulative offsets into the key/value tokens.
    pub cu_kv: &'a [i32],
    pub q_pos: &'a [i32],
    pub kv_pos: &'a [i32],
    /// Depths; ignored unless `mode == DuoCausal`.
    pub q_depth: &'a [i32],
    pub kv_depth: &'a [i32],
    /// Nonzero where the key slot holds a real token.
    pub kv_valid: &'a [u8],
    pub scale: f32,
    pub mode: MaskMode,
}

/// Whether key `j` is visible to query `i` (both global token indices of the same sequence).
pub fn visible(p: &Problem, i: usize, j: usize) -> bool {
    if p.kv_valid[j] == 0 {
        return false;
    }
    match p.mode {
        MaskMode::Full => true,
        MaskMode::Causal => p.kv_pos[j] <= p.q_pos[i],
        MaskMode::DuoCausal => p.kv_pos[j] <= p.q_pos[i] && p.kv_depth[j] <= p.q_depth[i],
    }
}

/// Dense-mask attention in f64. Returns (O `[total_q, H, D]`, LSE `[H, total_q]`) as f64.
pub fn attention(p: &Problem) -> (Vec<f64>, Vec<f64>) {
    let (h_n, d) = (p.heads, p.head_dim);
    let group = h_n / p.kv_heads;
    let total_q = p.q.len() / (h_n * d);
    let mut o = vec![0f64; total_q * h_n * d];
    let mut lse = vec![f64::NEG_INFINITY; h_n * total_q];
    for b in 0..p.cu_q.len().saturating_sub(1) {
        let (q0, q1) = (p.cu_q[b] as usize, p.cu_q[b + 1] as usize);
        let (k0, k1) = (p.cu_kv[b] as usize, p.cu_kv[b + 1] as usize);
        for i in q0..q1 {
            for h in 0..h_n {
                let kh = h / group;
                let qrow = &p.q[(i * h_n + h) * d..][..d];
                let vrow = |j: usize| &p.v[(j * p.kv_heads + kh) * d..][..d];
                let out = &mut o[(i * h_n + h) * d..][..d];
                // Scores of the visible keys with a finite score; NaN when the row is NaN.
                let mut scores = Vec::new();
                let mut nan = false;
                for j in k0..k1 {
                    if !visible(p, i, j) {
                        continue;
                    }
                    let krow = &p.k[(j * p.kv_heads + kh) * d..][..d];
                    let dot: f64 = qrow
                        .iter()
                        .zip(krow)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    let s = dot * p.scale as f64;
                    if s.is_nan() || s == f64::INFINITY || vrow(j).iter().any(|x| x.is_nan()) {
                        nan = true;
                        break;
                    }
                    if s > f64::NEG_INFINITY {
                        scores.push((j, s));
                    }
                }
                if nan {
                    out.fill(f64::NAN);
                    lse[h * total_q + i] = f64::NAN;
                    continue;
                }
                if scores.is_empty() {
                    continue;
                }
                let m = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
                lse[h * total_q + i] = m + sum.ln();
                // Infinite V entries, summed apart (their weight is positive, however small).
                let mut special = vec![0f64; d];
                for &(j, s) in &scores {
                    let w = (s - m).exp() / sum;
                    for ((x, sp), &vv) in out.iter_mut().zip(&mut special).zip(vrow(j)) {
                        if vv.is_finite() {
                            *x += w * vv as f64;
                        } else {
                            *sp += vv as f64;
                        }
                    }
                }
                for (x, sp) in out.iter_mut().zip(special) {
                    if sp != 0.0 {
                        *x = sp;
                    }
                }
            }
        }
    }
    (o, lse)
}

/// Merge partial results over `s` splits: `o[s]` is `[rows, D]`, `lse[s]` is `[rows]`
/// (each split attended to a disjoint subset of the keys). Returns the combined (O, LSE) in f64.
/// Splits with LSE = -inf contribute nothing (their O is not read); a row with every LSE = -inf
/// gets O = 0, LSE = -inf. A NaN or +inf LSE makes the row NaN (O and LSE). Every other split has
/// a positive weight, so an infinite entry of its O stays infinite (opposite signs, or a NaN
/// entry: NaN) whatever the weight's size.
pub fn merge(
    o: &[Vec<f32>],
    lse: &[Vec<f32>],
    rows: usize,
    head_dim: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; rows * head_dim];
    let mut out_lse = vec![f64::NEG_INFINITY; rows];
    for r in 0..rows {
        let row = &mut out[r * head_dim..][..head_dim];
        if lse.iter().any(|l| l[r].is_nan() || l[r] == f32::INFINITY) {
            row.fill(f64::NAN);
            out_lse[r] = f64::NAN;
            continue;
        }
        let m = lse
            .iter()
            .map(|l| l[r] as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = lse.iter().map(|l| (l[r] as f64 - m).exp()).sum();
        out_lse[r] = m + sum.ln();
        let mut special = vec![0f64; head_dim];
        for (os, ls) in o.iter().zip(lse) {
            if ls[r] == f32::NEG_INFINITY {
                continue;
            }
            let w = (ls[r] as f64 - m).exp() / sum;
            for ((x, sp), &v) in row
                .iter_mut()
                .zip(&mut special)
                .zip(&os[r * head_dim..][..head_dim])
            {
                if v.is_finite() {
                    *x += w * v as f64;
                } else {
                    *sp += v as f64;
                }
            }
        }
        for (x, sp) in row.iter_mut().zip(special) {
            if sp != 0.0 {
                *x = sp;
            }
        }
    }
    (out, out_lse)
}

/// [`merge`] in the op's layouts: O `[splits, total_q, H, D]`, LSE `[splits, H, total_q]` in;
/// O `[total_q, H, D]`, LSE `[H, total_q]` out.
pub fn merge_packed(
    o: &[f32],
    lse: &[f32],
    splits: usize,
    total_q: usize,
    heads: usize,
    head_dim: usize,
) -> (Vec<f64>, Vec<f64>) {
    let rows = total_q * heads;
    let os: Vec<Vec<f32>> = (0..splits)
        .map(|s| o[s * rows * head_dim..(s + 1) * rows * head_dim].to_vec())
        .collect();
    let ls: Vec<Vec<f32>> = (0..splits)
        .map(|s| {
            (0..rows)
                .map(|r| lse[s * rows + (r % heads) * total_q + r / heads])
                .collect()
        })
        .collect();
    let (mo, ml) = merge(&os, &ls, rows, head_dim);
    let mut out_lse = vec![f64::NEG_INFINITY; rows];
    for (r, &x) in ml.iter().enumerate() {
        out_lse[(r % heads) * total_q + r / heads] = x;
    }
    (mo, out_lse)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One query (q = 1) at position 1, two keys at positions 0 and 1, D = 1, scale 1, causal.
    fn two_keys<'a>(k: &'a [f32], v: &'a [f32]) -> Problem<'a> {
        Problem {
            q: &[1.0],
            k,
            v,
            heads: 1,
            kv_heads: 1,
            head_dim: 1,
            cu_q: &[0, 1],
            cu_kv: &[0, 2],
            q_pos: &[1],
            kv_pos: &[0, 1],
            q_depth: &[0],
            kv_depth: &[0, 0],
            kv_valid: &[1, 1],
            scale: 1.0,
            mode: MaskMode::Causal,
        }
    }

    #[test]
    fn two_keys_by_hand() {
        // Scores 1 and 2.
        let p = two_keys(&[1.0, 2.0], &[10.0, 20.0]);
        let (o, lse) = attention(&p);
        let (e1, e2) = (1f64.exp(), 2f64.exp());
        assert!((lse[0] - (e1 + e2).ln()).abs() < 1e-12);
        assert!((o[0] - (10.0 * e1 + 20.0 * e2) / (e1 + e2)).abs() < 1e-9);
        // Duo-causal: the second key at depth 1 is hidden from a depth-0 query.
        let p2 = Problem {
            kv_depth: &[0, 1],
            mode: MaskMode::DuoCausal,
            ..p.clone()
        };
        let (o2, lse2) = attention(&p2);
        assert!((o2[0] - 10.0).abs() < 1e-12 && (lse2[0] - 1.0).abs() < 1e-12);
        // A query that sees nothing: O = 0, LSE = -inf.
        let p3 = Problem {
            kv_valid: &[0, 0],
            ..p
        };
        let (o3, lse3) = attention(&p3);
        assert_eq!(o3[0], 0.0);
        assert_eq!(lse3[0], f64::NEG_INFINITY);
    }

    #[test]
    fn nan_and_inf_by_hand() {
        // The two-key case of `two_keys_by_hand`, poisoned.
        let run = |k: [f32; 2], v: [f32; 2]| {
            let (o, l) = attention(&two_keys(&k, &v));
            (o[0], l[0])
        };
        let nan = |(o, l): (f64, f64)| o.is_nan() && l.is_nan();
        assert!(nan(run([f32::NAN, 2.0], [10.0, 20.0])));
        assert!(nan(run([1.0, f32::INFINITY], [10.0, 20.0]))); // score +inf
        assert!(nan(run([1.0, 2.0], [10.0, f32::NAN])));
        // Score -inf: weight 0, as if masked; every score -inf: as if no key.
        assert_eq!(
            run([1.0, f32::NEG_INFINITY], [10.0, f32::INFINITY]),
            (10.0, 1.0)
        );
        assert_eq!(
            run([f32::NEG_INFINITY; 2], [10.0, 20.0]),
            (0.0, f64::NEG_INFINITY)
        );
        // An infinite value of a visible key with a finite score, however small its weight.
        let (o, l) = run([-800.0, 2.0], [f32::INFINITY, 20.0]);
        assert_eq!((o, l), (f64::INFINITY, 2.0));
        assert!(run([1.0, 2.0], [f32::INFINITY, f32::NEG_INFINITY])
            .0
            .is_nan());
        // Merge: a NaN or +inf LSE poisons the row; a -inf split is not read.
        let m = |o: [f32; 2], l: [f32; 2]| {
            merge(&[vec![o[0]], vec![o[1]]], &[vec![l[0]], vec![l[1]]], 1, 1)
        };
        let (o, l) = m([1.0, 2.0], [f32::NAN, 0.0]);
        assert!(o[0].is_nan() && l[0].is_nan());
        let (o, l) = m([1.0, 2.0], [f32::INFINITY, 0.0]);
        assert!(o[0].is_nan() && l[0].is_nan());
        let (o, l) = m([f32::NAN, 2.0], [f32::NEG_INFINITY, 0.0]);
        assert_eq!((o[0], l[0]), (2.0, 0.0));
        let (o, _) = m([f32::INFINITY, 2.0], [-1000.0, 0.0]);
        assert_eq!(o[0], f64::INFINITY);
    }

    #[test]
    fn merge_of_split_equals_whole() {
        // Split the two keys of the hand case into two partials and merge them.
        let (e1, e2) = (1f64.exp(), 2f64.exp());
        let o = vec![vec![10.0f32], vec![20.0f32]];
        let lse = vec![vec![1.0f32], vec![2.0f32]];
        let (m, l) = merge(&o, &lse, 1, 1);
        assert!((l[0] - (e1 + e2).ln()).abs() < 1e-6);
        assert!((m[0] - (10.0 * e1 + 20.0 * e2) / (e1 + e2)).abs() < 1e-4);
        let (m, l) = merge(
            &[vec![1.0f32], vec![5.0]],
            &[vec![f32::NEG_INFINITY], vec![0.5]],
            1,
            1,
        );
        assert!((m[0] - 5.0).abs() < 1e-12 && (l[0] - 0.5).abs() < 1e-7);
        let (m, l) = merge(&[vec![1.0f32]], &[vec![f32::NEG_INFINITY]], 1, 1);
        assert_eq!((m[0], l[0]), (0.0, f64::NEG_INFINITY));
    }
}
