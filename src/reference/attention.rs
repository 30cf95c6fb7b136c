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

/// Which keys a query sees (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskMode {
    Full,
    Causal,
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
                let mut scores = Vec::new();
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
                    scores.push((j, dot * p.scale as f64));
                }
                if scores.is_empty() {
                    continue;
                }
                let m = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s.1 - m).exp()).sum();
                lse[h * total_q + i] = m + sum.ln();
                let out = &mut o[(i * h_n + h) * d..][..d];
                for &(j, s) in &scores {
                    let w = (s - m).exp() / sum;
                    let vrow = &p.v[(j * p.kv_heads + kh) * d..][..d];
                    for (x, &vv) in out.iter_mut().zip(vrow) {
                        *x += w * vv as f64;
                    }
                }
            }
        }
    }
    (o, lse)
}

/// Merge partial results over `s` splits: `o[s]` is `[rows, D]`, `lse[s]` is `[rows]`
/// (each split attended to a disjoint subset of the keys). Returns the combined (O, LSE) in f64.
/// Splits with LSE = -inf contribute nothing; a row with every LSE = -inf gets O = 0, LSE = -inf.
pub fn merge(
    o: &[Vec<f32>],
    lse: &[Vec<f32>],
    rows: usize,
    head_dim: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0f64; rows * head_dim];
    let mut out_lse = vec![f64::NEG_INFINITY; rows];
    for r in 0..rows {
        let m = lse
            .iter()
            .map(|l| l[r] as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = lse.iter().map(|l| (l[r] as f64 - m).exp()).sum();
        out_lse[r] = m + sum.ln();
        for (os, ls) in o.iter().zip(lse) {
            let w = (ls[r] as f64 - out_lse[r]).exp();
            if w == 0.0 {
                continue;
            }
            for c in 0..head_dim {
                out[r * head_dim + c] += w * os[r * head_dim + c] as f64;
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

    #[test]
    fn two_keys_by_hand() {
        // One query, two keys, D = 1, scale 1: scores 1 and 2.
        let q = [1.0f32];
        let k = [1.0f32, 2.0];
        let v = [10.0f32, 20.0];
        let p = Problem {
            q: &q,
            k: &k,
            v: &v,
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
        };
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
