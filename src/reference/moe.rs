//! Reference for the MoE kernels: `moe.align` (vLLM's `moe_align_block_size` contract with a
//! deterministic order), `moe.route` (router top-k with PSR masking), `moe.permute`,
//! `moe.combine` and `moe.load`. Exact integer code, and f64 arithmetic where there is
//! arithmetic; it is also the native CPU path of the ops in [`crate::ops::moe`].

use crate::ops::moe::RouteParams;

/// The block alignment of `topk_ids`, on the host (see [`crate::ops::moe::Aligned`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aligned {
    /// `n + E·(block_size − 1)` entries (`n = T·k`): flat indices grouped by expert, in
    /// increasing expert and flat index order, each run padded to a multiple of `block_size` with
    /// the sentinel `n`; the tail after the last run holds the sentinel too.
    pub sorted_token_ids: Vec<i32>,
    /// `ceil(len / block_size)` entries: the expert of each block, `-1` for the blocks at or past
    /// `num_tokens_post_padded`.
    pub expert_ids: Vec<i32>,
    /// The sum of the padded runs.
    pub num_tokens_post_padded: i32,
}

/// Length of `sorted_token_ids` for `n` flat entries, `E` experts and block size `block_size`
/// (`None` on overflow or `block_size == 0`).
pub fn sorted_len(n: usize, num_experts: usize, block_size: usize) -> Option<usize> {
    num_experts
        .checked_mul(block_size.checked_sub(1)?)?
        .checked_add(n)
}

/// The first flat index whose expert id is outside `[0, num_experts)`, with the id.
pub fn first_bad(topk_ids: &[i32], num_experts: usize) -> Option<(usize, i32)> {
    topk_ids
        .iter()
        .enumerate()
        .find(|(_, &e)| e < 0 || e as usize >= num_experts)
        .map(|(i, &e)| (i, e))
}

/// Align `topk_ids` (`n` flat entries) to blocks of `block_size` for `num_experts` experts.
/// The caller has validated the ids (every id in `[0, num_experts)`), `num_experts >= 1`,
/// `block_size >= 1` and that the length fits in `i32`.
pub fn align(topk_ids: &[i32], num_experts: usize, block_size: usize) -> Aligned {
    let n = topk_ids.len();
    let len = sorted_len(n, num_experts, block_size).expect("validated sizes");
    let mut counts = vec![0usize; num_experts];
    for &e in topk_ids {
        counts[e as usize] += 1;
    }
    let mut start = Vec::with_capacity(num_experts);
    let mut total = 0usize;
    for &c in &counts {
        start.push(total);
        total += c.div_ceil(block_size) * block_size;
    }
    let mut sorted = vec![n as i32; len];
    let mut cursor = start.clone();
    for (i, &e) in topk_ids.iter().enumerate() {
        sorted[cursor[e as usize]] = i as i32;
        cursor[e as usize] += 1;
    }
    let nblocks = len.div_ceil(block_size);
    let mut expert_ids = vec![-1i32; nblocks];
    for (e, (&s, &c)) in start.iter().zip(&counts).enumerate() {
        let blocks = c.div_ceil(block_size);
        for b in 0..blocks {
            expert_ids[s / block_size + b] = e as i32;
        }
    }
    Aligned {
        sorted_token_ids: sorted,
        expert_ids,
        num_tokens_post_padded: total as i32,
    }
}

// ---- moe.route ----------------------------------------------------------------------------

/// splitmix64's finaliser (the mixing function of the PSR generator).
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The PSR generator's key of (seed, step, layer):
/// `splitmix64(splitmix64(splitmix64(seed + golden) ^ step) ^ layer)` (wrapping arithmetic).
pub fn psr_key(seed: u64, step: u64, layer: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed.wrapping_add(GOLDEN)) ^ step) ^ layer)
}

/// The keyed pseudo-random permutation of `[0, m)` (`m >= 1`, `x < m`): a 4-round Feistel
/// network over `2h` bits (`h >= 1` the least with `2^(2h) >= m`), halves
/// `(L, R) = (x >> h, x & (2^h − 1))`, round `i` mapping `(L, R)` to
/// `(R, L ^ (splitmix64(rk_i ^ R) & (2^h − 1)))` with `rk_i = splitmix64(key + (i + 1)·golden)`,
/// applied repeatedly (cycle walking) until the value is below `m`.
pub fn psr_perm(key: u64, m: u32, x: u32) -> u32 {
    let mut h = 1u32;
    while (1u64 << (2 * h)) < m as u64 {
        h += 1;
    }
    let mask = (1u64 << h) - 1;
    let mut v = x as u64;
    loop {
        let (mut l, mut r) = (v >> h, v & mask);
        for i in 0..4u64 {
            let rk = splitmix64(key.wrapping_add((i + 1).wrapping_mul(GOLDEN)));
            let nl = r;
            r = l ^ (splitmix64(rk ^ r) & mask);
            l = nl;
        }
        v = (l << h) | r;
        if v < m as u64 {
            return v as u32;
        }
    }
}

/// PSR's pool size `N_t = N + floor((r·N − N) · clamp((t − t_s) / (t_e − t_s), 0, 1))` at step
/// `t`, in exact integer arithmetic (u128). When `t_e <= t_s` the clamped fraction is 1 for
/// `t >= t_e` and 0 otherwise.
pub fn psr_pool_size(n: usize, r: usize, step: u64, t_s: u64, t_e: u64) -> usize {
    let extra = n * r.saturating_sub(1);
    let add = if t_e <= t_s {
        if step >= t_e {
            extra
        } else {
            0
        }
    } else if step <= t_s {
        0
    } else if step >= t_e {
        extra
    } else {
        (extra as u128 * (step - t_s) as u128 / (t_e - t_s) as u128) as usize
    };
    n + add
}

/// The PSR mask of a call (`r·N` entries, true = masked): none at inference (`p.psr` is None).
/// Else the layer's own experts `layer_in_group·N .. +N` are never masked, and the other
/// expert `v` (index `o = v` below the own range, `v − N` above it, in `[0, m)`,
/// `m = (r − 1)·N`) is masked iff `psr_perm(psr_key(seed, step, layer), m, o) < r·N − N_t`: the
/// first `r·N − N_t` of the other experts in the order of a keyed pseudo-random permutation.
pub fn psr_mask(n: usize, p: &RouteParams) -> Vec<bool> {
    let e = p.r * n;
    let mut mask = vec![false; e];
    let Some(psr) = &p.psr else { return mask };
    let masked = e - psr_pool_size(n, p.r, psr.step, psr.t_s, psr.t_e);
    if masked == 0 {
        return mask;
    }
    let m = (e - n) as u32;
    let own = p.layer_in_group * n;
    let key = psr_key(psr.seed, psr.step, p.layer as u64);
    for (v, mk) in mask.iter_mut().enumerate() {
        if v < own || v >= own + n {
            let o = if v < own { v } else { v - n } as u32;
            *mk = (psr_perm(key, m, o) as usize) < masked;
        }
    }
    mask
}

/// The first token whose unmasked logits contain a NaN or +inf, or are all −inf (the route
/// errors), with true for NaN / +inf.
pub fn route_first_bad(logits: &[f32], tokens: usize, mask: &[bool]) -> Option<(usize, bool)> {
    let e = mask.len();
    (0..tokens).find_map(|t| {
        let row = &logits[t * e..(t + 1) * e];
        let un = || row.iter().zip(mask).filter(|(_, &m)| !m).map(|(&x, _)| x);
        if un().any(|x| x.is_nan() || x == f32::INFINITY) {
            Some((t, true))
        } else if un().all(|x| x == f32::NEG_INFINITY) {
            Some((t, false))
        } else {
            None
        }
    })
}

/// Router top-k of `tokens` rows of `r·N` logits (`N = logits.len() / (tokens·r)`): the
/// unmasked experts ([`psr_mask`]) ranked by logit, larger first (−0 equals +0), ties to the
/// lower id; the first `top_k` taken. Weights: the softmax probability over the unmasked
/// experts in f64, `exp(x − max) / Σ exp(x − max)`, or with `renormalize`
/// `exp(x_j − max) / Σ_selected exp(x − max)`, rounded to f32. A bad row ([`route_first_bad`])
/// gets ids −1 and weights 0 (the op returns an error instead). The caller has validated the
/// sizes (`top_k` at most the pool size).
pub fn route(logits: &[f32], tokens: usize, p: &RouteParams) -> (Vec<i32>, Vec<f32>) {
    let (ids, ws) = route_f64(logits, tokens, p);
    (ids, ws.iter().map(|&w| w as f32).collect())
}

/// [`route`] with the weights in f64 (the oracle of the tests).
pub fn route_f64(logits: &[f32], tokens: usize, p: &RouteParams) -> (Vec<i32>, Vec<f64>) {
    let k = p.top_k;
    let mut ids = vec![-1i32; tokens * k];
    let mut ws = vec![0f64; tokens * k];
    if tokens == 0 {
        return (ids, ws);
    }
    let n = logits.len() / (tokens * p.r);
    let e = p.r * n;
    let mask = psr_mask(n, p);
    for t in 0..tokens {
        let row = &logits[t * e..(t + 1) * e];
        let mut un: Vec<usize> = (0..e).filter(|&v| !mask[v]).collect();
        if un
            .iter()
            .any(|&v| row[v].is_nan() || row[v] == f32::INFINITY)
            || un.iter().all(|&v| row[v] == f32::NEG_INFINITY)
        {
            continue;
        }
        let mx = un
            .iter()
            .map(|&v| row[v] as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = un.iter().map(|&v| (row[v] as f64 - mx).exp()).sum();
        un.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
        let sel = &un[..k];
        let denom = if p.renormalize {
            sel.iter().map(|&v| (row[v] as f64 - mx).exp()).sum()
        } else {
            sum
        };
        for (j, &v) in sel.iter().enumerate() {
            ids[t * k + j] = v as i32;
            ws[t * k + j] = (row[v] as f64 - mx).exp() / denom;
        }
    }
    (ids, ws)
}

// ---- moe.permute / moe.combine -----------------------------------------------------------

/// The result of [`permute`] on the host (see [`crate::ops::moe::Permuted`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Permuted<T> {
    pub rows: Vec<T>,
    pub offsets: Vec<i32>,
    pub positions: Vec<i32>,
}

/// Gather the rows of `x` (`[T, d]`) into the order of an alignment (`sorted_token_ids`,
/// `expert_ids`, `num_tokens_post_padded` of `T·top_k` entries, `num_experts`, `block_size`),
/// validating that it is one (the same rules as the kernels; the message says what is wrong).
/// The caller has validated the lengths.
#[allow(clippy::too_many_arguments)]
pub fn permute<T: bytemuck::Pod>(
    x: &[T],
    d: usize,
    sorted_token_ids: &[i32],
    expert_ids: &[i32],
    num_tokens_post_padded: i32,
    top_k: usize,
    num_experts: usize,
    block_size: usize,
) -> Result<Permuted<T>, String> {
    let n = x.len() / d * top_k;
    let len = sorted_token_ids.len();
    let total = num_tokens_post_padded;
    if total < 0 || total as usize > len || total as usize % block_size != 0 {
        return Err(format!(
            "num_tokens_post_padded = {total} is not a multiple of the block size {block_size} in              [0, {len}]"
        ));
    }
    let nvb = total as usize / block_size;
    for (b, &e) in expert_ids.iter().enumerate() {
        let ok = if b < nvb {
            e >= 0 && (e as usize) < num_experts && (b == 0 || expert_ids[b - 1] <= e)
        } else {
            e == -1
        };
        if !ok {
            return Err(format!(
                "expert_ids[{b}] = {e} is not an alignment's (out of range, decreasing, or not -1                  past the {nvb} used blocks)"
            ));
        }
    }
    let mut rows = vec![T::zeroed(); len * d];
    let mut positions = vec![-1i32; n];
    for (p, &s) in sorted_token_ids.iter().enumerate() {
        if s >= 0 && (s as usize) < n && p < nvb * block_size {
            let s = s as usize;
            if positions[s] >= 0 {
                return Err(format!("flat index {s} appears twice in sorted_token_ids"));
            }
            positions[s] = p as i32;
            let t = s / top_k;
            rows[p * d..(p + 1) * d].copy_from_slice(&x[t * d..(t + 1) * d]);
        } else if s != n as i32 {
            return Err(format!(
                "sorted_token_ids[{p}] = {s} is neither a flat index in [0, {n}) before                  num_tokens_post_padded nor the sentinel {n}"
            ));
        }
    }
    if let Some(i) = positions.iter().position(|&p| p < 0) {
        return Err(format!("flat index {i} is missing from sorted_token_ids"));
    }
    let offsets = (0..=num_experts)
        .map(|e| {
            let b = expert_ids[..nvb]
                .iter()
                .take_while(|&&x| (x as usize) < e)
                .count();
            (b * block_size) as i32
        })
        .collect();
    Ok(Permuted {
        rows,
        offsets,
        positions,
    })
}

/// `y[t, :] = Σ_slot w[t, slot] · expert_out[positions[t·k + slot], :]` in f64 (slot order). The
/// caller has validated the positions.
pub fn combine<I: crate::dtype::Float>(
    expert_out: &[I],
    positions: &[i32],
    topk_weights: &[f32],
    d: usize,
    top_k: usize,
) -> Vec<f64> {
    let tokens = positions.len() / top_k;
    let mut y = vec![0f64; tokens * d];
    for t in 0..tokens {
        for s in 0..top_k {
            let p = positions[t * top_k + s] as usize;
            let w = topk_weights[t * top_k + s] as f64;
            for c in 0..d {
                y[t * d + c] += w * expert_out[p * d + c].to_f64();
            }
        }
    }
    y
}

// ---- moe.load -----------------------------------------------------------------------------

/// Tokens per virtual expert (`r·N` counts) and per physical layer of the group (`r` counts:
/// the sum over virtual ids `j·N .. j·N + N`). The caller has validated the ids.
pub fn load(topk_ids: &[i32], num_experts: usize, r: usize) -> (Vec<i32>, Vec<i32>) {
    let mut per_expert = vec![0i32; num_experts * r];
    for &v in topk_ids {
        per_expert[v as usize] += 1;
    }
    let per_layer = per_expert
        .chunks(num_experts)
        .map(|c| c.iter().sum())
        .collect();
    (per_expert, per_layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_example() {
        // T = 3, k = 2: experts of flat entries 0..6.
        let ids = [2, 0, 0, 2, 1, 0];
        let a = align(&ids, 4, 2);
        // Expert 0: 1, 2, 5 (+ pad), expert 1: 4 (+ pad), expert 2: 0, 3, expert 3: none.
        // Length 6 + 4·(2 − 1) = 10: runs of 4, 2 and 2 entries, then a tail of 2 sentinels.
        assert_eq!(a.sorted_token_ids, vec![1, 2, 5, 6, 4, 6, 0, 3, 6, 6]);
        assert_eq!(a.num_tokens_post_padded, 8);
        assert_eq!(a.expert_ids, vec![0, 0, 1, 2, -1]);
        // Block size 1: no padding; E = 1: one run.
        let a = align(&ids, 4, 1);
        assert_eq!(a.sorted_token_ids, vec![1, 2, 5, 4, 0, 3]);
        assert_eq!(a.expert_ids, vec![0, 0, 0, 1, 2, 2]);
        let a = align(&[0, 0, 0], 1, 4);
        assert_eq!(a.sorted_token_ids, vec![0, 1, 2, 3, 3, 3]);
        assert_eq!(a.expert_ids, vec![0, -1]);
        assert_eq!(first_bad(&ids, 3), None);
        assert_eq!(first_bad(&[0, -1], 3), Some((1, -1)));
        assert_eq!(first_bad(&[0, 3], 3), Some((1, 3)));
    }
}

pub mod layer;
