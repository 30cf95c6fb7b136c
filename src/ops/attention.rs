//! Attention ops over varlen packed sequences with GQA: duo-causal (TaH), causal,
//! causal-with-offset and full attention ([`forward`], one fused kernel with tile skipping),
//! flash-decoding ([`decode`], [`decode_partials`]) and the LSE merge ([`merge`]). The mask rules
//! are [`MaskMode`]'s; [`crate::reference::attention`] (f64, dense mask) is the oracle the
//! kernels are tested against and the CPU path.
//!
//! A problem is an [`Attention`], most easily made with its builder. A causal call over two
//! sequences of 3 and 5 tokens (8 query heads sharing 2 key/value heads, head_dim 64), on the
//! host SIMT executor, which runs the CUDA kernels on the CPU:
//!
//! ```
//! use half::bf16;
//! use tessera::ops::attention::{self, Attention};
//! use tessera::Device;
//!
//! # fn main() -> tessera::Result<()> {
//! let dev = Device::simt(); // wave32; Device::cpu() runs the reference, Device::cuda(0) a GPU
//! let (h, hk, d, total) = (8, 2, 64, 8);
//! let q = dev.upload(&vec![bf16::from_f32(0.5); total * h * d], "q")?;
//! let k = dev.upload(&vec![bf16::from_f32(0.25); total * hk * d], "k")?;
//! let v = dev.upload(&vec![bf16::from_f32(1.0); total * hk * d], "v")?;
//! let cu = dev.upload(&[0, 3, 8], "cu_seqlens")?; // one array for queries and keys here
//!
//! let a = Attention::causal(&q, &k, &v)
//!     .heads(h, hk)
//!     .head_dim(d)
//!     .seqlens(&cu, &cu, 5, 5) // cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv
//!     .build()?;
//! let out = attention::forward(&a)?; // O [total, H, D] and LSE [H, total], f32
//! out.check()?; // cu_seqlens are validated on the device: read the verdict (waits)
//! assert!(out.o.download()?.iter().all(|&x| (x - 1.0).abs() < 1e-6));
//! # Ok(())
//! # }
//! ```
//!
//! Duo-causal (TaH) attention adds each token's depth slot; here the output is written in the
//! input type into buffers the caller owns ([`forward_into`]), on the wave64 SIMT executor (the
//! HIP sources, MFMA emulated):
//!
//! ```
//! use half::f16;
//! use tessera::ops::attention::{self, Attention};
//! use tessera::{Device, SimtConfig};
//!
//! # fn main() -> tessera::Result<()> {
//! let dev = Device::simt_with(SimtConfig { wave: 64, ..Default::default() })?;
//! let (h, d, total) = (2, 64, 4);
//! let q = dev.upload(&vec![f16::from_f32(0.1); total * h * d], "q")?;
//! let kv = dev.upload(&vec![f16::from_f32(2.0); total * h * d], "kv")?;
//! let cu = dev.upload(&[0, 4], "cu_seqlens")?;
//! let depth = dev.upload(&[0, 1, 0, 1], "depth")?; // depth slot of each token
//!
//! let a = Attention::duo_causal(&q, &kv, &kv, &depth, &depth)
//!     .heads(h, h)
//!     .head_dim(d)
//!     .seqlens(&cu, &cu, 4, 4)
//!     .build()?;
//! let mut o = dev.alloc::<f16>(total * h * d, "o")?;
//! let mut lse = dev.alloc::<f32>(h * total, "lse")?;
//! attention::forward_into(&a, &mut o, &mut lse)?.check()?;
//! assert!(o.download()?.iter().all(|&x| x == f16::from_f32(2.0)));
//! # Ok(())
//! # }
//! ```
//!
//! [`forward`], [`forward_into`], [`decode_partials`] and [`decode`] copy nothing to the host
//! and do not wait for the device (tests/attention.rs `no_host_copies`): the grid comes from
//! host-known numbers (batch from `cu_seqlens`' length, totals from buffer lengths,
//! `max_seqlen_*` from the caller, as in FlashAttention's varlen API) and the tile metadata is
//! built on the device. The contents of `cu_seqlens` are therefore validated on the device too;
//! see [`DeviceCheck`] (the CPU path validates them at once).

use crate::device::DeviceBuffer;
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
pub use crate::ops::DeviceCheck;
pub use crate::reference::attention::MaskMode;

/// Element types the attention kernels take (tensor-core inputs).
pub trait HalfFloat: Float {
    /// `x` rounded to nearest even, as the kernels round (`half`'s `from_f64` first truncates an
    /// f64 to 20 mantissa bits, which can turn a value just above a tie into a tie).
    fn from_f32(x: f32) -> Self;
}
impl HalfFloat for half::f16 {
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}
impl HalfFloat for half::bf16 {
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

/// Element types [`forward_into`] writes O in for inputs of type `T`: `f32`, or `T` itself
/// (the f32 result rounded to nearest even in the kernel's epilogue).
pub trait OutputType<T: HalfFloat>: DType {
    /// True when O is rounded to `T`.
    const ROUNDED: bool;
    /// The f32 result in this type (the CPU path's rounding, the same as the kernels').
    fn from_f32(x: f32) -> Self;
}
impl<T: HalfFloat> OutputType<T> for f32 {
    const ROUNDED: bool = false;
    fn from_f32(x: f32) -> f32 {
        x
    }
}
impl<T: HalfFloat> OutputType<T> for T {
    const ROUNDED: bool = true;
    fn from_f32(x: f32) -> T {
        <T as HalfFloat>::from_f32(x)
    }
}

/// Positions of the tokens of one side (queries or keys).
#[derive(Clone, Copy, Debug)]
pub enum Positions<'a> {
    /// Token `t` of a sequence has position `t + offset` (`t` counted from the sequence start).
    /// A query chunk attending causally to keys from elsewhere in a longer sequence uses offsets.
    Implicit { offset: i32 },
    /// One int32 position per token (`[total]`).
    Explicit(&'a DeviceBuffer<i32>),
}

/// Check that `b` lives on `dev` and has `want` elements.
pub(crate) fn check_len<U: DType>(
    op: &'static str,
    dev: &crate::device::Device,
    what: &str,
    b: &DeviceBuffer<U>,
    want: usize,
) -> Result<()> {
    crate::ops::on_device(op, what, dev, b)?;
    if b.len() != want {
        return Err(Error::invalid(
            op,
            format!("{what} has {} elements, expected {want}", b.len()),
        ));
    }
    Ok(())
}

/// The metadata checks prefill and decode share, after their shape checks: `cu_seqlens` entry
/// counts, the `max_seqlen` bounds (clamped to the totals: a larger bound cannot be reached)
/// against implicit positions, and the lengths of explicit positions, depths and validity.
/// Returns the clamped `(max_q, max_kv)`.
pub(crate) fn check_metadata<T: HalfFloat>(
    op: &'static str,
    a: &Attention<T>,
    total_q: usize,
    total_kv: usize,
) -> Result<(usize, usize)> {
    let dev = a.q.device();
    if a.cu_seqlens_q.is_empty() || a.cu_seqlens_q.len() != a.cu_seqlens_kv.len() {
        return Err(Error::invalid(
            op,
            format!(
                "cu_seqlens_q has {} entries and cu_seqlens_kv {}: both need batch + 1 >= 1",
                a.cu_seqlens_q.len(),
                a.cu_seqlens_kv.len()
            ),
        ));
    }
    let (max_q, max_kv) = (a.max_seqlen_q.min(total_q), a.max_seqlen_kv.min(total_kv));
    check_positions(op, "q_pos", "max_seqlen_q", &a.q_pos, max_q)?;
    check_positions(op, "kv_pos", "max_seqlen_kv", &a.kv_pos, max_kv)?;
    if let Positions::Explicit(b) = a.q_pos {
        check_len(op, dev, "q_pos", b, total_q)?;
    }
    if let Positions::Explicit(b) = a.kv_pos {
        check_len(op, dev, "kv_pos", b, total_kv)?;
    }
    if a.mode == MaskMode::DuoCausal {
        let (Some(qd), Some(kd)) = (a.q_depth, a.kv_depth) else {
            return Err(Error::invalid(
                op,
                "DuoCausal needs both q_depth and kv_depth",
            ));
        };
        check_len(op, dev, "q_depth", qd, total_q)?;
        check_len(op, dev, "kv_depth", kd, total_kv)?;
    }
    if let Some(b) = a.kv_valid {
        check_len(op, dev, "kv_valid", b, total_kv)?;
    }
    Ok((max_q, max_kv))
}

/// Check that implicit positions fit in i32: token `t` of a sequence is at `t + offset`, and a
/// sequence has at most `max_seqlen` tokens (longer ones are an error the kernels detect), so
/// `offset + max_seqlen - 1` must not overflow (the kernels compute positions in int32).
/// Explicit positions need no check.
pub(crate) fn check_positions(
    op: &'static str,
    what: &str,
    max_what: &str,
    p: &Positions,
    max_seqlen: usize,
) -> Result<()> {
    let Positions::Implicit { offset } = *p else {
        return Ok(());
    };
    if max_seqlen == 0 {
        return Ok(());
    }
    let last = i32::try_from(max_seqlen - 1).ok();
    if last.and_then(|l| offset.checked_add(l)).is_none() {
        return Err(Error::invalid(
            op,
            format!(
                "{what} offset {offset} + {} (the last token of a sequence of {max_what} \
                 {max_seqlen}) overflows i32: implicit positions must fit in i32",
                max_seqlen - 1
            ),
        ));
    }
    Ok(())
}

/// The longest sequence of a host copy of `cu_seqlens` (0 when there is none): the
/// `max_seqlen_*` of a problem whose lengths the caller has on the host.
pub fn max_seqlen(cu_seqlens: &[i32]) -> usize {
    cu_seqlens
        .windows(2)
        .map(|w| (w[1] as i64 - w[0] as i64).max(0) as usize)
        .max()
        .unwrap_or(0)
}

/// The status words of one `cu_seqlens` array, exactly as `cuda/attention/seqlens.cuh` computes
/// them on the device: (code, entry, a, b), code 0 when valid.
pub(crate) fn seqlens_status(cu: &[i32], total: usize, max_len: usize) -> [i32; 4] {
    let max_len = max_len.min(i32::MAX as usize) as i64;
    if cu[0] != 0 {
        return [1, 0, cu[0], 0];
    }
    if let Some(i) = cu.windows(2).position(|w| w[1] < w[0]) {
        return [2, i as i32 + 1, cu[i], cu[i + 1]];
    }
    let last = cu[cu.len() - 1];
    if last as i64 != total as i64 {
        return [3, cu.len() as i32 - 1, last, total as i32];
    }
    if let Some(i) = cu.windows(2).position(|w| (w[1] - w[0]) as i64 > max_len) {
        return [4, i as i32, cu[i + 1] - cu[i], max_len as i32];
    }
    [0; 4]
}

/// The error of one array's status words (`what`: its name, `max_what`: its max_seqlen's).
fn seqlens_fault(op: &'static str, what: &str, max_what: &str, w: &[i32]) -> Result<()> {
    let (entry, a, b) = (w[1], w[2], w[3]);
    let msg = match w[0] {
        0 => return Ok(()),
        1 => format!("{what} must start at 0, not {a}"),
        2 => format!("{what} decreases at entry {entry} ({a} -> {b})"),
        3 => format!("{what} ends at {a}, the tensor has {b} tokens"),
        4 => format!("{what}: sequence {entry} has {a} tokens, more than {max_what} {b}"),
        c => format!("{what}: unknown device status {c}"),
    };
    Err(Error::invalid(op, msg))
}

/// The verdict of the 8 status words of a (cu_seqlens_q, cu_seqlens_kv) pair.
pub(crate) fn explain_seqlens(op: &'static str, w: &[i32]) -> Result<()> {
    seqlens_fault(op, "cu_seqlens_q", "max_seqlen_q", &w[..4])?;
    seqlens_fault(op, "cu_seqlens_kv", "max_seqlen_kv", &w[4..8])
}

/// The CPU path's eager check of both arrays (host memory: no copy), with the device's messages.
pub(crate) fn check_seqlens_host(
    op: &'static str,
    cu_q: &[i32],
    cu_kv: &[i32],
    totals: (usize, usize),
    max: (usize, usize),
) -> Result<()> {
    let mut w = seqlens_status(cu_q, totals.0, max.0).to_vec();
    w.extend(seqlens_status(cu_kv, totals.1, max.1));
    explain_seqlens(op, &w)
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
/// ending at the totals), and no sequence is longer than `max_seqlen_*`. Build one with
/// [`Attention::causal`], [`Attention::duo_causal`] or [`Attention::full`] (see the module docs),
/// or as a literal.
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
    /// Upper bounds of the sequence lengths (FlashAttention's varlen `max_seqlen_q/k`): they
    /// size the grid, so the op needs no copy of `cu_seqlens`. A sequence longer than its bound
    /// is an error (reported by [`DeviceCheck`]); a larger bound than needed only costs blocks
    /// that exit at once.
    pub max_seqlen_q: usize,
    pub max_seqlen_kv: usize,
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

impl<'a> Positions<'a> {
    /// The kernels' form: the position array (`None` when implicit) and the offset (0 when
    /// explicit).
    pub(crate) fn kernel_args(self) -> (Option<&'a DeviceBuffer<i32>>, i32) {
        match self {
            Positions::Implicit { offset } => (None, offset),
            Positions::Explicit(b) => (Some(b), 0),
        }
    }
}

impl<'a, T: HalfFloat> Attention<'a, T> {
    /// The kernels' mask code: 0 full, 1 causal, 2 duo-causal.
    pub(crate) fn mode_code(&self) -> u32 {
        match self.mode {
            MaskMode::Full => 0,
            MaskMode::Causal => 1,
            MaskMode::DuoCausal => 2,
        }
    }

    /// The depth arrays the kernels read: only in duo-causal mode.
    #[allow(clippy::type_complexity)]
    pub(crate) fn kernel_depths(
        &self,
    ) -> (Option<&'a DeviceBuffer<i32>>, Option<&'a DeviceBuffer<i32>>) {
        let duo = self.mode == MaskMode::DuoCausal;
        (self.q_depth.filter(|_| duo), self.kv_depth.filter(|_| duo))
    }
}

impl<'a, T: HalfFloat> Attention<'a, T> {
    /// A builder of causal attention (`kv_pos <= q_pos`).
    pub fn causal(
        q: &'a DeviceBuffer<T>,
        k: &'a DeviceBuffer<T>,
        v: &'a DeviceBuffer<T>,
    ) -> AttentionBuilder<'a, T> {
        AttentionBuilder::new(q, k, v, MaskMode::Causal)
    }

    /// A builder of full (bidirectional) attention.
    pub fn full(
        q: &'a DeviceBuffer<T>,
        k: &'a DeviceBuffer<T>,
        v: &'a DeviceBuffer<T>,
    ) -> AttentionBuilder<'a, T> {
        AttentionBuilder::new(q, k, v, MaskMode::Full)
    }

    /// A builder of TaH duo-causal attention, with each query's and key's depth slot
    /// (`[total_q]`, `[total_kv]`).
    pub fn duo_causal(
        q: &'a DeviceBuffer<T>,
        k: &'a DeviceBuffer<T>,
        v: &'a DeviceBuffer<T>,
        q_depth: &'a DeviceBuffer<i32>,
        kv_depth: &'a DeviceBuffer<i32>,
    ) -> AttentionBuilder<'a, T> {
        let mut b = AttentionBuilder::new(q, k, v, MaskMode::DuoCausal);
        b.depths = Some((q_depth, kv_depth));
        b
    }
}

/// Builds an [`Attention`]: `heads`, `head_dim` and `seqlens` are required; positions default to
/// `t` (token index in its sequence, offset 0) on both sides, the scale to `1 / sqrt(head_dim)`,
/// every key slot is valid and the path is [`Path::Auto`]. [`AttentionBuilder::build`] checks
/// only that the required parts are there; the op validates the rest.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBuilder<'a, T: HalfFloat> {
    q: &'a DeviceBuffer<T>,
    k: &'a DeviceBuffer<T>,
    v: &'a DeviceBuffer<T>,
    mode: MaskMode,
    heads: Option<(usize, usize)>,
    head_dim: Option<usize>,
    seqlens: Option<(&'a DeviceBuffer<i32>, &'a DeviceBuffer<i32>, usize, usize)>,
    q_pos: Positions<'a>,
    kv_pos: Positions<'a>,
    depths: Option<(&'a DeviceBuffer<i32>, &'a DeviceBuffer<i32>)>,
    kv_valid: Option<&'a DeviceBuffer<u8>>,
    scale: Option<f32>,
    path: Path,
}

impl<'a, T: HalfFloat> AttentionBuilder<'a, T> {
    fn new(
        q: &'a DeviceBuffer<T>,
        k: &'a DeviceBuffer<T>,
        v: &'a DeviceBuffer<T>,
        mode: MaskMode,
    ) -> Self {
        AttentionBuilder {
            q,
            k,
            v,
            mode,
            heads: None,
            head_dim: None,
            seqlens: None,
            q_pos: Positions::Implicit { offset: 0 },
            kv_pos: Positions::Implicit { offset: 0 },
            depths: None,
            kv_valid: None,
            scale: None,
            path: Path::Auto,
        }
    }

    /// Query heads and key/value heads (GQA: `heads` a multiple of `kv_heads`).
    pub fn heads(mut self, heads: usize, kv_heads: usize) -> Self {
        self.heads = Some((heads, kv_heads));
        self
    }

    /// The head dimension (64 or 128).
    pub fn head_dim(mut self, head_dim: usize) -> Self {
        self.head_dim = Some(head_dim);
        self
    }

    /// The sequences: `cu_seqlens_q`, `cu_seqlens_kv` (`batch + 1` entries each, on the device)
    /// and upper bounds of their lengths (see [`Attention::max_seqlen_q`]).
    pub fn seqlens(
        mut self,
        cu_seqlens_q: &'a DeviceBuffer<i32>,
        cu_seqlens_kv: &'a DeviceBuffer<i32>,
        max_seqlen_q: usize,
        max_seqlen_kv: usize,
    ) -> Self {
        self.seqlens = Some((cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv));
        self
    }

    /// Implicit positions with offsets: token `t` of a sequence is at `t + offset` (a query
    /// chunk at the end of a longer key sequence: `q_offset = kv_len - q_len`).
    pub fn offsets(mut self, q_offset: i32, kv_offset: i32) -> Self {
        self.q_pos = Positions::Implicit { offset: q_offset };
        self.kv_pos = Positions::Implicit { offset: kv_offset };
        self
    }

    /// Positions of queries and keys (each implicit or explicit).
    pub fn positions(mut self, q_pos: Positions<'a>, kv_pos: Positions<'a>) -> Self {
        self.q_pos = q_pos;
        self.kv_pos = kv_pos;
        self
    }

    /// Key slot validity (`[total_kv]`, nonzero = valid).
    pub fn kv_valid(mut self, kv_valid: &'a DeviceBuffer<u8>) -> Self {
        self.kv_valid = Some(kv_valid);
        self
    }

    /// The softmax scale (default `1 / sqrt(head_dim)`).
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// The kernel path (default [`Path::Auto`]).
    pub fn path(mut self, path: Path) -> Self {
        self.path = path;
        self
    }

    /// The problem, or an `InvalidArgument` of `attention` naming the missing part.
    pub fn build(self) -> Result<Attention<'a, T>> {
        const OP: &str = "attention";
        let missing = |what: &str| Error::invalid(OP, format!("the builder needs {what}"));
        let (heads, kv_heads) = self
            .heads
            .ok_or_else(|| missing("heads(heads, kv_heads)"))?;
        let head_dim = self.head_dim.ok_or_else(|| missing("head_dim(d)"))?;
        let (cu_q, cu_kv, max_q, max_kv) = self
            .seqlens
            .ok_or_else(|| missing("seqlens(cu_q, cu_kv, max_q, max_kv)"))?;
        Ok(Attention {
            q: self.q,
            k: self.k,
            v: self.v,
            heads,
            kv_heads,
            head_dim,
            cu_seqlens_q: cu_q,
            cu_seqlens_kv: cu_kv,
            max_seqlen_q: max_q,
            max_seqlen_kv: max_kv,
            q_pos: self.q_pos,
            kv_pos: self.kv_pos,
            q_depth: self.depths.map(|d| d.0),
            kv_depth: self.depths.map(|d| d.1),
            kv_valid: self.kv_valid,
            scale: self.scale.unwrap_or_else(|| 1.0 / (head_dim as f32).sqrt()),
            mode: self.mode,
            path: self.path,
        })
    }
}

/// O `[total_q, H, D]` and LSE `[H, total_q]`, both f32. Rows that see no key: O = 0,
/// LSE = -inf. `check` holds the op's device-side checks of `cu_seqlens`: call
/// [`AttentionOut::check`] (or [`DeviceCheck::check`]) where you synchronise.
#[derive(Debug)]
pub struct AttentionOut {
    pub o: DeviceBuffer<f32>,
    pub lse: DeviceBuffer<f32>,
    pub check: DeviceCheck,
}

impl AttentionOut {
    /// Wait for the op and report the faults its kernels found in `cu_seqlens` (one
    /// device-to-host copy; none on the CPU path).
    pub fn check(&self) -> Result<()> {
        self.check.check()
    }

    /// `self` once [`AttentionOut::check`] passes.
    pub fn checked(self) -> Result<AttentionOut> {
        self.check()?;
        Ok(self)
    }
}

pub(crate) mod decode;
pub(crate) mod duo_causal;

/// Prefill / many-query attention (one fused kernel with tile skipping; see
/// `cuda/attention/duo_causal.cu`). `Path::Auto` and `Path::TensorCore` use mma.sync on CUDA
/// and MFMA 32x32x8 on HIP (both emulated on the SIMT executors); `Path::Scalar` is the
/// portable path. Makes no device-to-host copy: see [`DeviceCheck`] for `cu_seqlens`.
pub fn forward<T: HalfFloat>(a: &Attention<T>) -> Result<AttentionOut> {
    duo_causal::forward(a)
}

/// [`forward`] into buffers the caller owns: O `[total_q, H, D]` in f32 or in the input type `T`
/// (rounded to nearest even from the same f32 result), LSE `[H, total_q]` f32. Returns the call's
/// [`DeviceCheck`].
pub fn forward_into<T: HalfFloat, O: OutputType<T>>(
    a: &Attention<T>,
    o: &mut DeviceBuffer<O>,
    lse: &mut DeviceBuffer<f32>,
) -> Result<DeviceCheck> {
    duo_causal::forward_into(a, o, lse)
}

/// Partial results of split-KV decoding: O `[splits, total_q, H, D]`, LSE `[splits, H, total_q]`,
/// with the call's device-side checks of `cu_seqlens`.
#[derive(Debug)]
pub struct Partials {
    pub o: DeviceBuffer<f32>,
    pub lse: DeviceBuffer<f32>,
    pub splits: usize,
    pub check: DeviceCheck,
}

/// Flash-decoding: each sequence's keys are split into `splits` contiguous ranges, one block
/// per (query, head, split), writing partial (O, LSE). Makes no device-to-host copy: see
/// [`DeviceCheck`] for `cu_seqlens`.
pub fn decode_partials<T: HalfFloat>(a: &Attention<T>, splits: usize) -> Result<Partials> {
    decode::decode_partials(a, splits)
}

/// Flash-decoding followed by [`merge`]; the result carries the partials' check.
pub fn decode<T: HalfFloat>(a: &Attention<T>, splits: usize) -> Result<AttentionOut> {
    let p = decode_partials(a, splits)?;
    let total_q = a.q.len() / (a.heads * a.head_dim);
    let mut out = merge(&p.o, &p.lse, splits, total_q, a.heads, a.head_dim)?;
    out.check.absorb(p.check);
    Ok(out)
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
