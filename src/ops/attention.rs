//! Attention ops: duo-causal (TaH), causal, causal-with-offset and full attention over varlen
//! packed sequences with GQA; flash-decoding (split-KV) and the LSE merge.
//!
//! CONTRACT STUB: these signatures are what the TaH driver (`src/drivers/tah.rs`), the decode
//! kernels and the sequence-parallel issue code against. Kernel engineers replace the bodies and
//! may add items; changing a signature must be agreed. Semantics are defined by
//! [`crate::reference::attention`] (f64, dense mask).

use crate::device::DeviceBuffer;
use crate::dtype::Float;
use crate::error::{Error, Result};
pub use crate::reference::attention::MaskMode;

/// Element types the attention kernels take (tensor-core inputs).
pub trait HalfFloat: Float {}
impl HalfFloat for half::f16 {}
impl HalfFloat for half::bf16 {}

/// Positions of the tokens of one side (queries or keys).
#[derive(Clone, Copy, Debug)]
pub enum Positions<'a> {
    /// Token `t` of a sequence has position `t + offset` (`t` counted from the sequence start).
    /// A query chunk attending causally to keys from elsewhere in a longer sequence uses offsets.
    Implicit { offset: i32 },
    /// One int32 position per token (`[total]`).
    Explicit(&'a DeviceBuffer<i32>),
}

/// Check that implicit positions fit in i32: token `t` of a sequence is at `t + offset`, so the
/// last token of the longest sequence must not overflow (the kernels compute positions in int32).
/// `cu` must already be checked (starts at 0, non-decreasing). Explicit positions need no check.
pub(crate) fn check_positions(
    op: &'static str,
    what: &str,
    p: &Positions,
    cu: &[i32],
) -> Result<()> {
    let Positions::Implicit { offset } = *p else {
        return Ok(());
    };
    let longest = cu.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    if longest > 0 && offset.checked_add(longest - 1).is_none() {
        return Err(Error::invalid(
            op,
            format!(
                "{what} offset {offset} + {} (the last token of a sequence of {longest}) \
                 overflows i32: implicit positions must fit in i32",
                longest - 1
            ),
        ));
    }
    Ok(())
}

/// Which kernel path to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Path {
    /// Tensor cores (mma.sync on CUDA sm_80+, MFMA on CDNA, emulated on SIMT) when available.
    #[default]
    Auto,
    TensorCore,
    /// The portable scalar path, kept for correctness comparison.
    Scalar,
}

/// One attention problem. Q `[total_q, H, D]`, K/V `[total_kv, H_kv, D]`, H a multiple of H_kv,
/// D in {64, 128}; `cu_seqlens_*` have `batch + 1` entries (int32, starting at 0, non-decreasing,
/// ending at the totals).
#[derive(Clone, Copy, Debug)]
pub struct Attention<'a, T: HalfFloat> {
    pub q: &'a DeviceBuffer<T>,
    pub k: &'a DeviceBuffer<T>,
    pub v: &'a DeviceBuffer<T>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub cu_seqlens_q: &'a DeviceBuffer<i32>,
    pub cu_seqlens_kv: &'a DeviceBuffer<i32>,
    pub q_pos: Positions<'a>,
    pub kv_pos: Positions<'a>,
    /// Required for `MaskMode::DuoCausal`, ignored otherwise (`[total_q]`, `[total_kv]`).
    pub q_depth: Option<&'a DeviceBuffer<i32>>,
    pub kv_depth: Option<&'a DeviceBuffer<i32>>,
    /// Nonzero where the key slot is valid (`[total_kv]`); all valid when absent.
    pub kv_valid: Option<&'a DeviceBuffer<u8>>,
    pub scale: f32,
    pub mode: MaskMode,
    pub path: Path,
}

/// O `[total_q, H, D]` and LSE `[H, total_q]`, both f32. Rows that see no key: O = 0,
/// LSE = -inf.
#[derive(Debug)]
pub struct AttentionOut {
    pub o: DeviceBuffer<f32>,
    pub lse: DeviceBuffer<f32>,
}

mod decode;
mod duo_causal;

/// Prefill / many-query attention (one fused kernel with tile skipping; see
/// `cuda/attention/duo_causal.cu`). `Path::Auto` and `Path::TensorCore` use mma.sync on CUDA
/// and MFMA 32x32x8 on HIP (both emulated on the SIMT executors); `Path::Scalar` is the
/// portable path.
pub fn forward<T: HalfFloat>(a: &Attention<T>) -> Result<AttentionOut> {
    duo_causal::forward(a)
}

/// Partial results of split-KV decoding: O `[splits, total_q, H, D]`, LSE `[splits, H, total_q]`.
#[derive(Debug)]
pub struct Partials {
    pub o: DeviceBuffer<f32>,
    pub lse: DeviceBuffer<f32>,
    pub splits: usize,
}

/// Flash-decoding: each sequence's keys are split into `splits` contiguous ranges, one block
/// per (query, head, split), writing partial (O, LSE).
pub fn decode_partials<T: HalfFloat>(a: &Attention<T>, splits: usize) -> Result<Partials> {
    decode::decode_partials(a, splits)
}

/// Flash-decoding followed by [`merge`].
pub fn decode<T: HalfFloat>(a: &Attention<T>, splits: usize) -> Result<AttentionOut> {
    let p = decode_partials(a, splits)?;
    let total_q = a.q.len() / (a.heads * a.head_dim);
    merge(&p.o, &p.lse, splits, total_q, a.heads, a.head_dim)
}

/// Combine `splits` partial results over disjoint key sets into one, stably (max-shifted
/// exponentials), tolerating LSE = -inf: O `[splits, total_q, H, D]`, LSE `[splits, H, total_q]`.
pub fn merge(
    o: &DeviceBuffer<f32>,
    lse: &DeviceBuffer<f32>,
    splits: usize,
    total_q: usize,
    heads: usize,
    head_dim: usize,
) -> Result<AttentionOut> {
    decode::merge(o, lse, splits, total_q, heads, head_dim)
}
