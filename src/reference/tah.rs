//! Reference for the TaH (Think-at-Hard) driver kernels: hard-token selection, row gather and
//! scatter, the next-depth soft-embedding input, and logits accumulation. Also the native CPU path
//! of `drivers::tah`.

use crate::dtype::Float;

/// The score threshold equivalent to `sigmoid(score) > thr`: `score > logit(thr)`, computed in
/// f64 and rounded to f32 (every executor compares the same two f32 values). `thr` in (0, 1).
pub fn logit_threshold(thr: f64) -> f32 {
    (thr / (1.0 - thr)).ln() as f32
}

/// Indices (ascending) of the tokens with `score > logit_thr` (NaN is never active).
pub fn select_hard(scores: &[f32], logit_thr: f32) -> Vec<u32> {
    scores
        .iter()
        .enumerate()
        .filter(|(_, &s)| s > logit_thr)
        .map(|(i, _)| i as u32)
        .collect()
}

/// `out[r] = src[idx[r]]` for rows of `d` elements.
pub fn gather_rows<T: Copy>(src: &[T], idx: &[u32], d: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(idx.len() * d);
    for &i in idx {
        out.extend_from_slice(&src[i as usize * d..][..d]);
    }
    out
}

/// `dst[idx[r]] = src[r]` for rows of `d` elements.
pub fn scatter_rows<T: Copy>(src: &[T], idx: &[u32], d: usize, dst: &mut [T]) {
    for (r, &i) in idx.iter().enumerate() {
        dst[i as usize * d..][..d].copy_from_slice(&src[r * d..][..d]);
    }
}

/// Unsigned order key of an f32 (unsigned order = float order; -0.0 < +0.0).
pub fn order_key(f: f32) -> u32 {
    let b = f.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The top-k token ids of one row, by value descending, ties by lower id.
pub fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let cmp = |a: &u32, b: &u32| {
        order_key(row[*b as usize])
            .cmp(&order_key(row[*a as usize]))
            .then(a.cmp(b))
    };
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    if k == 0 {
        return Vec::new();
    }
    if k < ids.len() {
        ids.select_nth_unstable_by(k - 1, cmp);
        ids.truncate(k);
    }
    ids.sort_by(cmp);
    ids
}

/// Next-depth input of `m` rows: for each row of the cumulative logits `[m, V]`, the top-k ids,
/// the softmax weights over their values, and the weighted sum of the embedding rows `[V, d]`.
/// Returns (out `[m, d]` f64, ids `[m, k]`, weights `[m, k]` f64).
pub fn next_depth_input<T: Float>(
    cum: &[f32],
    vocab: usize,
    k: usize,
    emb: &[T],
    d: usize,
) -> (Vec<f64>, Vec<u32>, Vec<f64>) {
    let m = cum.len().checked_div(vocab).unwrap_or(0);
    let mut out = vec![0f64; m * d];
    let mut ids = Vec::with_capacity(m * k);
    let mut ws = Vec::with_capacity(m * k);
    for r in 0..m {
        let row = &cum[r * vocab..][..vocab];
        let top = top_k(row, k);
        let mx = row[top[0] as usize] as f64;
        let e: Vec<f64> = top
            .iter()
            .map(|&i| (row[i as usize] as f64 - mx).exp())
            .collect();
        let s: f64 = e.iter().sum();
        for (&i, &ej) in top.iter().zip(&e) {
            let w = ej / s;
            ws.push(w);
            let er = &emb[i as usize * d..][..d];
            for (o, x) in out[r * d..][..d].iter_mut().zip(er) {
                *o += w * x.to_f64();
            }
        }
        ids.extend_from_slice(&top);
    }
    (out, ids, ws)
}

/// `cum[i] += logits[i]` in f32.
pub fn accumulate_logits(cum: &mut [f32], logits: &[f32]) {
    for (c, &l) in cum.iter_mut().zip(logits) {
        *c += l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        let thr = logit_threshold(0.9);
        assert!((thr as f64 - 9f64.ln()).abs() < 1e-6);
        assert_eq!(
            select_hard(&[0.0, 3.0, f32::NAN, 2.0, 2.3], thr),
            vec![1, 4]
        );
        assert_eq!(top_k(&[1.0, 3.0, 3.0, -0.0, 0.0], 4), vec![1, 2, 0, 4]);
        let (o, ids, w) =
            next_depth_input(&[0.0f32, 2f32.ln(), -50.0], 3, 2, &[1.0f32, 4.0, 9.0], 1);
        assert_eq!(ids, vec![1, 0]);
        assert!((w[0] - 2.0 / 3.0).abs() < 1e-7 && (o[0] - 3.0).abs() < 1e-6);
        let mut g = vec![0; 6];
        scatter_rows(&[7, 8, 9, 10], &[2, 0], 2, &mut g);
        assert_eq!(g, vec![9, 10, 0, 0, 7, 8]);
        assert_eq!(gather_rows(&g, &[2, 0], 2), vec![7, 8, 9, 10]);
    }
}
