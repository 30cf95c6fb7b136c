//! Reference for the MoE kernels: `moe.align` (vLLM's `moe_align_block_size` contract with a
//! deterministic order). Exact integer code; it is also the native CPU path of
//! [`crate::ops::moe::align`].

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
