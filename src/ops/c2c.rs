//! Cache-to-Cache (C2C) KV-cache fuser: a learned projector turns (sharer KV, receiver KV) into
//! a gated correction written in place into the receiver's cache.
//!
//! Per target layer, for K and for V separately, per token (math and reference:
//! [`crate::reference::c2c`]):
//!
//! ```text
//! x = concat(src [Hs·Ds], tgt [Ht·Dt]);  h = W_in·x + b_in                       (Hd)
//! per block: h = h + W2·GELU(W1·RMSNorm(h))                                       (bias-free)
//! proj = W_out·h;  scalar = W_s·h;  tgt[h, d] += g·sigmoid(scalar[h])·proj[h·Dt + d]
//! ```
//!
//! The kernels (`cuda/c2c/project.cu`) are five stages over the tensor-core block tile of
//! [`crate::ops::gemm`] (`cuda/gemm/tile.cuh`), each with its operand loads and epilogue fused:
//! the concat is the first GEMM's A load (gathered from both caches by slot; no concatenated
//! copy); the bias, the RMSNorm statistics (per-tile partial sums of squares), GELU after the
//! RMSNorm scale (the norm weight folded into W1's columns once, when the projector is built), and
//! the FFN residual are epilogues; the last stage's epilogue adds the gated correction into the
//! receiver cache in place. A projector whose gate is 0 launches nothing and leaves the cache
//! bit-identical.
//!
//! Caches: any [`CacheLayout`] of the form `(slot / per_block)·block_stride + (slot %
//! per_block)·pos_stride + head·head_stride + d`: contiguous `[B, H, L, D]`
//! ([`CacheLayout::contiguous`]), vLLM-style paged `[blocks, 16, H, D]` with a slot mapping
//! ([`CacheLayout::paged`], [`paged_slots`]) and token-major `[T, H, D]`. Sharer and receiver may
//! differ in layout, head count, head dim and dtype (bf16 / f16); the weights' type is the
//! tensor-core type, and a cache of the other type is converted as it is loaded.
//!
//! See docs/c2c.md.

use half::{bf16, f16};

use crate::device::kernel::{BitsOf, BitsOfMut, Grid};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::{DType, DTypeKind};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, Host};
use crate::reference::c2c as reference;

pub mod unfused;
pub use unfused::{fuse_unfused, UnfusedWorkspace};

pub use crate::ops::attention::HalfFloat;
pub use crate::reference::c2c::{Activation, Gate, ProjectorDims, ProjectorHost, EPS};

/// The op name in errors.
pub const OP: &str = "c2c.project";
/// Tokens per block of a paged cache (vLLM's default block size).
pub const PAGE: usize = 16;
/// Threads per block of the stage kernel (`kThreads`).
const THREADS: u32 = 256;
/// Rows and columns of a block tile (`kBM`, `kBN`).
const TILE: usize = 128;
/// Grid y limit (column tiles of a stage).
const MAX_GRID_Y: usize = 65_535;

/// Stage codes (`kIn` .. `kOut` in cuda/c2c/project.cu).
const STAGE_IN: u32 = 0;
const STAGE_UP: u32 = 1;
const STAGE_DOWN: u32 = 2;
const STAGE_GATE: u32 = 3;
const STAGE_OUT: u32 = 4;

crate::kernels! {
    module = "c2c/project";
    /// One projector stage (mode `kIn` .. `kOut`), grid (ceil(M / 128), ceil(N / 128)).
    pub(crate) struct StageKernel<'a, T: HalfFloat> = "c2c_stage" [(bf16), (f16)] block = THREADS {
        mode: u32,
        m: i32,
        n: i32,
        k: i32,
        a: Option<&'a DeviceBuffer<T>>,
        b: &'a DeviceBuffer<T>,
        b_offset: u64,
        src: BitsOf<'a, u16>,
        src_slots: &'a DeviceBuffer<i32>,
        src_per_block: i32,
        src_block_stride: u64,
        src_pos_stride: u64,
        src_head_stride: u64,
        src_dim: i32,
        src_kind: u32,
        cache: BitsOfMut<'a, u16>,
        cache_slots: &'a DeviceBuffer<i32>,
        cache_per_block: i32,
        cache_block_stride: u64,
        cache_pos_stride: u64,
        cache_head_stride: u64,
        cache_dim: i32,
        cache_kind: u32,
        ks: i32,
        bias: Option<&'a DeviceBuffer<f32>>,
        h32: &'a mut DeviceBuffer<f32>,
        o16: Option<&'a mut DeviceBuffer<T>>,
        part: &'a mut DeviceBuffer<f32>,
        part_tiles: i32,
        gs: &'a mut DeviceBuffer<f32>,
        gate: f32,
        act: u32,
        eps: f32,
        vec_a: u32,
        vec_b: u32,
    }
    /// `w1n = round(w1 ⊙ norm)` per block (RMSNorm's weight folded into W1's columns).
    pub(crate) struct FoldKernel<'a, T: HalfFloat> = "c2c_fold" [(bf16), (f16)] block = any {
        w1: &'a DeviceBuffer<T>,
        norm: &'a DeviceBuffer<f32>,
        blocks: u64,
        ffn: u64,
        hidden: u64,
        w1n: &'a mut DeviceBuffer<T>,
    }
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, msg)
}

/// Where the rows of a KV cache live: element `(slot, head, d)` is at
/// `(slot / per_block)·block_stride + (slot % per_block)·pos_stride + head·head_stride + d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLayout {
    /// KV heads.
    pub heads: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Slots per block (`L` contiguous, [`PAGE`] paged).
    pub per_block: usize,
    /// Elements between blocks.
    pub block_stride: usize,
    /// Elements between consecutive slots of a block.
    pub pos_stride: usize,
    /// Elements between heads.
    pub head_stride: usize,
    /// Valid slots: `0..slots`.
    pub slots: usize,
}

impl CacheLayout {
    /// Contiguous `[batch, heads, len, head_dim]`; the slot of (b, l) is `b·len + l`.
    pub fn contiguous(batch: usize, heads: usize, len: usize, head_dim: usize) -> CacheLayout {
        CacheLayout {
            heads,
            head_dim,
            per_block: len.max(1),
            block_stride: heads * len * head_dim,
            pos_stride: head_dim,
            head_stride: len * head_dim,
            slots: batch * len,
        }
    }

    /// vLLM-style paged `[num_blocks, 16, heads, head_dim]`; the slot of position `p` of a
    /// sequence is `block_table[p / 16]·16 + p % 16` ([`paged_slots`]).
    pub fn paged(num_blocks: usize, heads: usize, head_dim: usize) -> CacheLayout {
        CacheLayout {
            heads,
            head_dim,
            per_block: PAGE,
            block_stride: PAGE * heads * head_dim,
            pos_stride: heads * head_dim,
            head_stride: head_dim,
            slots: num_blocks * PAGE,
        }
    }

    /// Token-major `[tokens, heads, head_dim]`; the slot of token `t` is `t`.
    pub fn token_major(tokens: usize, heads: usize, head_dim: usize) -> CacheLayout {
        CacheLayout {
            heads,
            head_dim,
            per_block: tokens.max(1),
            block_stride: tokens * heads * head_dim,
            pos_stride: heads * head_dim,
            head_stride: head_dim,
            slots: tokens,
        }
    }

    /// The element offset of `(slot, head, d)`.
    pub fn offset(&self, slot: usize, head: usize, d: usize) -> usize {
        (slot / self.per_block) * self.block_stride
            + (slot % self.per_block) * self.pos_stride
            + head * self.head_stride
            + d
    }

    /// The smallest buffer length holding every slot (checked arithmetic; `None` on overflow).
    pub fn min_len(&self) -> Option<usize> {
        if self.slots == 0 || self.heads == 0 || self.head_dim == 0 {
            return Some(0);
        }
        let last = self.slots - 1;
        ((last / self.per_block).checked_mul(self.block_stride)?)
            .checked_add(last.min(self.per_block - 1).checked_mul(self.pos_stride)?)?
            .checked_add((self.heads - 1).checked_mul(self.head_stride)?)?
            .checked_add(self.head_dim)
    }

    fn check(&self, what: &str, len: usize) -> Result<()> {
        if self.per_block == 0 {
            return Err(invalid(format!("{what} layout has per_block = 0")));
        }
        let need = self
            .min_len()
            .ok_or_else(|| invalid(format!("{what} layout overflows")))?;
        if len < need {
            return Err(invalid(format!(
                "{what} cache has {len} elements, its layout needs {need} ({} slots of {} heads × {})",
                self.slots, self.heads, self.head_dim
            )));
        }
        let big = [self.per_block, self.head_dim, self.slots]
            .iter()
            .any(|&x| x > i32::MAX as usize);
        if big {
            return Err(invalid(format!("{what} layout exceeds i32 sizes")));
        }
        Ok(())
    }

    /// Every stride a multiple of 8 halves (16-byte copies never straddle a head).
    fn aligned8(&self) -> bool {
        [
            self.head_dim,
            self.block_stride,
            self.pos_stride,
            self.head_stride,
        ]
        .iter()
        .all(|x| x % 8 == 0)
    }
}

/// The slots of `positions` of one sequence in a paged cache: `block_table[p / 16]·16 + p % 16`.
/// Errors (naming `c2c.project`) for a position past the table or a slot above `i32::MAX`.
pub fn paged_slots(block_table: &[u32], positions: &[usize]) -> Result<Vec<i32>> {
    positions
        .iter()
        .map(|&p| {
            let b = *block_table.get(p / PAGE).ok_or_else(|| {
                invalid(format!(
                    "position {p} needs block {} but the block table has {}",
                    p / PAGE,
                    block_table.len()
                ))
            })?;
            let s = b as usize * PAGE + p % PAGE;
            i32::try_from(s).map_err(|_| invalid(format!("slot {s} exceeds i32::MAX")))
        })
        .collect()
}

/// A KV cache to read (the sharer's).
pub struct Cache<'a, T: DType> {
    /// The elements.
    pub data: &'a DeviceBuffer<T>,
    /// Where the rows are.
    pub layout: CacheLayout,
}

/// A KV cache fused in place (the receiver's).
pub struct CacheMut<'a, T: DType> {
    /// The elements.
    pub data: &'a mut DeviceBuffer<T>,
    /// Where the rows are.
    pub layout: CacheLayout,
}

/// The tokens to fuse: each one's slot in the sharer cache and in the receiver cache, validated
/// against both layouts (in range; receiver slots distinct, since each is written) and uploaded
/// once for every layer that shares the layouts.
pub struct Rows {
    src_host: Vec<i32>,
    tgt_host: Vec<i32>,
    src: DeviceBuffer<i32>,
    tgt: DeviceBuffer<i32>,
    src_slots: usize,
    tgt_slots: usize,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rows({} tokens)", self.len())
    }
}

impl Rows {
    /// Errors: lengths differ ("mismatched token counts"), a slot outside its layout's
    /// `0..slots`, a receiver slot given twice.
    pub fn new(
        dev: &Device,
        src_slots: &[i32],
        tgt_slots: &[i32],
        src_layout: &CacheLayout,
        tgt_layout: &CacheLayout,
    ) -> Result<Rows> {
        if src_slots.len() != tgt_slots.len() {
            return Err(invalid(format!(
                "mismatched token counts: {} sharer slots vs {} receiver slots",
                src_slots.len(),
                tgt_slots.len()
            )));
        }
        if src_slots.len() > i32::MAX as usize {
            return Err(invalid("more than i32::MAX tokens"));
        }
        for (what, slots, layout) in [
            ("sharer", src_slots, src_layout),
            ("receiver", tgt_slots, tgt_layout),
        ] {
            if let Some((i, &s)) = slots
                .iter()
                .enumerate()
                .find(|(_, &s)| s < 0 || s as usize >= layout.slots)
            {
                return Err(invalid(format!(
                    "{what} slot mapping out of range: slot[{i}] = {s}, the cache has {} slots",
                    layout.slots
                )));
            }
        }
        // Distinct receiver slots (sorted copy: the cost follows the tokens, not the cache).
        let mut sorted: Vec<(i32, usize)> = tgt_slots.iter().copied().zip(0..).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(invalid(format!(
                "receiver slot {} is given twice (token {}); each receiver token is written once",
                w[1].0,
                w[0].1.max(w[1].1)
            )));
        }
        Ok(Rows {
            src_host: src_slots.to_vec(),
            tgt_host: tgt_slots.to_vec(),
            src: dev.upload(src_slots, "c2c.src_slots")?,
            tgt: dev.upload(tgt_slots, "c2c.tgt_slots")?,
            src_slots: src_layout.slots,
            tgt_slots: tgt_layout.slots,
        })
    }

    /// Tokens `0..n` of token-major tensors on both sides.
    pub fn identity(dev: &Device, n: usize) -> Result<Rows> {
        let ids: Vec<i32> = (0..n as i32).collect();
        let l = CacheLayout::token_major(n, 1, 1);
        Rows::new(dev, &ids, &ids, &l, &l)
    }

    /// Tokens to fuse.
    pub fn len(&self) -> usize {
        self.src_host.len()
    }

    /// No tokens.
    pub fn is_empty(&self) -> bool {
        self.src_host.is_empty()
    }
}

/// Projector options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Hard (default) or soft gate.
    pub gate: Gate,
    /// GELU form: [`Activation::GeluErf`] (default) or [`Activation::GeluTanh`].
    pub gelu: Activation,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            gate: Gate::Hard,
            gelu: Activation::GeluErf,
        }
    }
}

impl Options {
    fn check(&self) -> Result<()> {
        if !matches!(self.gelu, Activation::GeluErf | Activation::GeluTanh) {
            return Err(invalid(format!(
                "gelu must be gelu_erf or gelu_tanh, got {}",
                self.gelu.name()
            )));
        }
        if let Gate::Soft { tau } = self.gate {
            if !(tau > 0.0 && tau.is_finite()) {
                return Err(invalid(format!(
                    "soft gate temperature must be > 0, got {tau}"
                )));
            }
        }
        Ok(())
    }
}

/// One projector's weights on the device, in the tensor-core type `T` (the biases and RMSNorm
/// weights in f32), with its gate logit on the host (so that a closed gate launches nothing).
pub struct Projector<T: HalfFloat> {
    dims: ProjectorDims,
    w_in: DeviceBuffer<T>,
    b_in: DeviceBuffer<f32>,
    w1: DeviceBuffer<T>,
    w1n: DeviceBuffer<T>,
    w2: DeviceBuffer<T>,
    norm: DeviceBuffer<f32>,
    w_out: DeviceBuffer<T>,
    w_s: DeviceBuffer<T>,
    gate_logit: f32,
    /// Unique per projector built in this process (the unfused baseline caches per-block
    /// weight copies by it).
    id: u64,
}

impl<T: HalfFloat> std::fmt::Debug for Projector<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Projector({:?}, gate_logit {})",
            self.dims, self.gate_logit
        )
    }
}

/// The next projector id.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn check_dims(d: &ProjectorDims) -> Result<()> {
    let zero = [
        ("hs", d.hs),
        ("ds", d.ds),
        ("ht", d.ht),
        ("dt", d.dt),
        ("hidden", d.hidden),
    ]
    .into_iter()
    .find(|(_, v)| *v == 0);
    if let Some((n, _)) = zero {
        return Err(invalid(format!("projector {n} must be >= 1")));
    }
    if d.blocks > 0 && d.ffn == 0 {
        return Err(invalid("projector ffn must be >= 1 with FFN blocks"));
    }
    let sizes = [
        d.hs.checked_mul(d.ds),
        d.ht.checked_mul(d.dt),
        d.hs.checked_mul(d.ds)
            .and_then(|a| d.ht.checked_mul(d.dt).and_then(|b| a.checked_add(b))),
        d.blocks
            .checked_mul(d.ffn)
            .and_then(|x| x.checked_mul(d.hidden)),
        d.hidden.checked_mul(d.k_in()),
    ];
    if sizes
        .iter()
        .any(|s| s.is_none_or(|s| s > i32::MAX as usize))
    {
        return Err(invalid(format!("projector sizes {d:?} exceed i32")));
    }
    // Column tiles of one stage: the grid's y dimension.
    let widest = d.hidden.max(d.ffn).max(d.k_out()).max(d.ht);
    if widest.div_ceil(TILE) > MAX_GRID_Y {
        return Err(invalid(format!(
            "a stage of {widest} output columns needs more than {MAX_GRID_Y} column tiles of {TILE}"
        )));
    }
    Ok(())
}

fn check_gate_logit(g: f32) -> Result<()> {
    if !g.is_finite() {
        return Err(invalid(format!("gate_logit must be finite, got {g}")));
    }
    Ok(())
}

impl<T: HalfFloat> Projector<T> {
    /// Upload host weights (rounded to `T`; `b_in` and `norm` stay f32). Errors for a tensor
    /// whose length does not match `w.dims` (naming it), zero sizes, a non-finite gate logit.
    pub fn upload(dev: &Device, w: &ProjectorHost, gate_logit: f32) -> Result<Projector<T>> {
        check_dims(&w.dims)?;
        check_gate_logit(gate_logit)?;
        if let Some((name, len, want)) = w.bad_len() {
            return Err(invalid(format!(
                "wrong weight shape: {name} has {len} elements, want {want}"
            )));
        }
        let half = |v: &[f32], l: &str| {
            dev.upload(&v.iter().map(|&x| T::from_f32(x)).collect::<Vec<_>>(), l)
        };
        Projector::from_buffers(
            w.dims,
            half(&w.w_in, "c2c.w_in")?,
            dev.upload(&w.b_in, "c2c.b_in")?,
            half(&w.w1, "c2c.w1")?,
            half(&w.w2, "c2c.w2")?,
            dev.upload(&w.norm, "c2c.norm")?,
            half(&w.w_out, "c2c.w_out")?,
            half(&w.w_s, "c2c.w_s")?,
            gate_logit,
        )
    }

    /// A projector from device buffers (shapes as [`ProjectorHost`] documents). Folds the
    /// RMSNorm weights into a copy of `w1` on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn from_buffers(
        dims: ProjectorDims,
        w_in: DeviceBuffer<T>,
        b_in: DeviceBuffer<f32>,
        w1: DeviceBuffer<T>,
        w2: DeviceBuffer<T>,
        norm: DeviceBuffer<f32>,
        w_out: DeviceBuffer<T>,
        w_s: DeviceBuffer<T>,
        gate_logit: f32,
    ) -> Result<Projector<T>> {
        check_dims(&dims)?;
        check_gate_logit(gate_logit)?;
        let d = dims;
        let dev = w_in.device().clone();
        let lens = [
            (
                "w_in",
                w_in.len(),
                d.hidden * d.k_in(),
                "[Hd, Hs·Ds + Ht·Dt]",
            ),
            ("b_in", b_in.len(), d.hidden, "[Hd]"),
            (
                "w1",
                w1.len(),
                d.blocks * d.ffn * d.hidden,
                "[blocks, F, Hd]",
            ),
            (
                "w2",
                w2.len(),
                d.blocks * d.hidden * d.ffn,
                "[blocks, Hd, F]",
            ),
            ("norm", norm.len(), d.blocks * d.hidden, "[blocks, Hd]"),
            ("w_out", w_out.len(), d.k_out() * d.hidden, "[Ht·Dt, Hd]"),
            ("w_s", w_s.len(), d.ht * d.hidden, "[Ht, Hd]"),
        ];
        if let Some((n, len, want, shape)) = lens.iter().find(|(_, l, w, _)| l != w) {
            return Err(invalid(format!(
                "wrong weight shape: {n} has {len} elements, want {want} {shape} for {d:?}"
            )));
        }
        on_device(OP, "b_in", &dev, &b_in)?;
        on_device(OP, "w1", &dev, &w1)?;
        on_device(OP, "w2", &dev, &w2)?;
        on_device(OP, "norm", &dev, &norm)?;
        on_device(OP, "w_out", &dev, &w_out)?;
        on_device(OP, "w_s", &dev, &w_s)?;
        let mut w1n = dev.alloc::<T>(w1.len(), "c2c.w1n")?;
        if let Some(h) = cpu_path(OP, &dev) {
            let (a, n) = (h.slice(&w1)?, h.slice(&norm)?);
            for (i, o) in h.slice_mut(&mut w1n)?.iter_mut().enumerate() {
                let (b, k) = (i / (d.ffn * d.hidden).max(1), i % d.hidden);
                *o = T::from_f32(a[i].to_f32() * n[b * d.hidden + k]);
            }
        } else if !w1.is_empty() {
            let blocks = w1.len().div_ceil(THREADS as usize).min(65_535) as u32;
            FoldKernel::<T> {
                w1: &w1,
                norm: &norm,
                blocks: d.blocks as u64,
                ffn: d.ffn as u64,
                hidden: d.hidden as u64,
                w1n: &mut w1n,
            }
            .launch(&dev, Grid::linear(blocks).block([THREADS, 1, 1]))?;
        }
        Ok(Projector {
            dims,
            w_in,
            b_in,
            w1,
            w1n,
            w2,
            norm,
            w_out,
            w_s,
            gate_logit,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The sizes.
    pub fn dims(&self) -> ProjectorDims {
        self.dims
    }

    /// The gate logit.
    pub fn gate_logit(&self) -> f32 {
        self.gate_logit
    }

    /// The device.
    pub fn device(&self) -> &Device {
        self.w_in.device()
    }

    /// The weights back on the host, in f32 (as stored: rounded to `T`).
    pub fn to_host(&self) -> Result<ProjectorHost> {
        let f = |b: &DeviceBuffer<T>| -> Result<Vec<f32>> {
            Ok(b.download()?.iter().map(|x| x.to_f32()).collect())
        };
        Ok(ProjectorHost {
            dims: self.dims,
            w_in: f(&self.w_in)?,
            b_in: self.b_in.download()?,
            w1: f(&self.w1)?,
            w2: f(&self.w2)?,
            norm: self.norm.download()?,
            w_out: f(&self.w_out)?,
            w_s: f(&self.w_s)?,
        })
    }
}

/// Device scratch of the projector stages, grown on demand and reused across calls (one per
/// fuse of many layers).
pub struct Workspace<T: DType> {
    h32: Option<DeviceBuffer<f32>>,
    h16: Option<DeviceBuffer<T>>,
    u: Option<DeviceBuffer<T>>,
    part: Option<DeviceBuffer<f32>>,
    gs: Option<DeviceBuffer<f32>>,
}

impl<T: DType> Default for Workspace<T> {
    fn default() -> Self {
        Workspace {
            h32: None,
            h16: None,
            u: None,
            part: None,
            gs: None,
        }
    }
}

fn grow<E: DType>(
    dev: &Device,
    b: &mut Option<DeviceBuffer<E>>,
    len: usize,
    label: &str,
) -> Result<()> {
    let len = len.max(1);
    if b.as_ref()
        .is_none_or(|x| x.len() < len || !x.device().same(dev))
    {
        *b = Some(dev.alloc::<E>(len, label)?);
    }
    Ok(())
}

impl<T: DType> Workspace<T> {
    /// An empty workspace.
    pub fn new() -> Workspace<T> {
        Workspace::default()
    }

    fn ensure(&mut self, dev: &Device, m: usize, d: &ProjectorDims) -> Result<()> {
        let tiles = d.hidden.div_ceil(TILE);
        grow(dev, &mut self.h32, m * d.hidden, "c2c.h32")?;
        grow(dev, &mut self.h16, m * d.hidden, "c2c.h16")?;
        grow(dev, &mut self.u, m * d.ffn, "c2c.u")?;
        grow(dev, &mut self.part, m * tiles, "c2c.part")?;
        grow(dev, &mut self.gs, m * d.ht, "c2c.gs")?;
        Ok(())
    }
}

fn kind_code(k: DTypeKind) -> u32 {
    if k == DTypeKind::BF16 {
        0
    } else {
        1
    }
}

/// The checks of a fuse (fused or unfused): the gate value when anything is to run, `None` for a
/// closed gate or no rows.
fn check_call<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
    p: &Projector<W>,
    src: &Cache<S>,
    cache: &CacheMut<C>,
    rows: &Rows,
    opts: &Options,
) -> Result<Option<f32>> {
    opts.check()?;
    let d = p.dims;
    let dev = p.device().clone();
    for (what, l, heads, dim) in [
        ("sharer", &src.layout, d.hs, d.ds),
        ("receiver", &cache.layout, d.ht, d.dt),
    ] {
        if l.heads != heads || l.head_dim != dim {
            return Err(invalid(format!(
                "{what} cache has {} heads × {}, the projector takes {heads} × {dim}",
                l.heads, l.head_dim
            )));
        }
    }
    src.layout.check("sharer", src.data.len())?;
    cache.layout.check("receiver", cache.data.len())?;
    if rows.src_slots != src.layout.slots || rows.tgt_slots != cache.layout.slots {
        return Err(invalid(
            "the rows were validated against other layouts (slot counts differ)",
        ));
    }
    on_device(OP, "src", &dev, src.data)?;
    on_device(OP, "cache", &dev, cache.data)?;
    on_device(OP, "rows", &dev, &rows.src)?;
    let g = opts.gate.value(p.gate_logit);
    if g == 0.0 || rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(g))
}

/// Fuse one projector into the receiver cache in place: for every token `i` of `rows`, the
/// receiver row at `rows`' receiver slot `i` gets the gated correction computed from it and the
/// sharer row at sharer slot `i`. Returns whether anything ran: a projector whose gate value
/// is 0 (`opts.gate`) launches nothing and leaves the cache bit-identical.
///
/// Errors ([`Error::InvalidArgument`] naming `c2c.project`): head counts or dims of a layout
/// that differ from the projector's, a cache shorter than its layout, rows built for other
/// layouts, buffers on different devices, bad options.
pub fn fuse<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
    p: &Projector<W>,
    src: &Cache<S>,
    cache: &mut CacheMut<C>,
    rows: &Rows,
    opts: &Options,
    ws: &mut Workspace<W>,
) -> Result<bool> {
    let Some(g) = check_call(p, src, cache, rows, opts)? else {
        return Ok(false);
    };
    let d = p.dims;
    let dev = p.device().clone();
    let m = rows.len();
    if let Some(h) = cpu_path(OP, &dev) {
        fuse_host(h, p, src, cache, rows, opts, g)?;
        return Ok(true);
    }
    ws.ensure(&dev, m, &d)?;
    let Workspace {
        h32: Some(h32),
        h16: Some(h16),
        u: Some(u),
        part: Some(part),
        gs: Some(gs),
    } = ws
    else {
        return Err(invalid("workspace not allocated"));
    };
    let same = |k: DTypeKind| k == W::KIND;
    let vec_x = same(S::KIND)
        && same(C::KIND)
        && src.layout.aligned8()
        && cache.layout.aligned8()
        && src.data.addr() % 16 == 0
        && cache.data.addr() % 16 == 0;
    let aligned = |k: usize, a: u64| k % 8 == 0 && a % 16 == 0;
    let sizes = |x: usize| x as i32;
    let (sl, cl) = (src.layout, cache.layout);
    let tiles = d.hidden.div_ceil(TILE);
    // (stage, n, k, b, b_offset, a (None: the gathered x), o16 is u (true) or h16)
    let mut stages: Vec<(u32, usize, usize, &DeviceBuffer<W>, usize)> =
        vec![(STAGE_IN, d.hidden, d.k_in(), &p.w_in, 0)];
    for b in 0..d.blocks {
        stages.push((STAGE_UP, d.ffn, d.hidden, &p.w1n, b * d.ffn * d.hidden));
        stages.push((STAGE_DOWN, d.hidden, d.ffn, &p.w2, b * d.hidden * d.ffn));
    }
    stages.push((STAGE_GATE, d.ht, d.hidden, &p.w_s, 0));
    stages.push((STAGE_OUT, d.k_out(), d.hidden, &p.w_out, 0));
    for (mode, n, k, b, b_offset) in stages {
        let (a, o16, vec_a) = match mode {
            STAGE_IN => (None, Some(&mut *h16), vec_x),
            STAGE_UP => (Some(&*h16), Some(&mut *u), aligned(k, h16.addr())),
            STAGE_DOWN => (Some(&*u), Some(&mut *h16), aligned(k, u.addr())),
            _ => (Some(&*h16), None, aligned(k, h16.addr())),
        };
        let src_bits =
            BitsOf::<u16>::of(src.data).ok_or_else(|| invalid("sharer cache is not 16-bit"))?;
        let cache_bits = BitsOfMut::<u16>::of(cache.data)
            .ok_or_else(|| invalid("receiver cache is not 16-bit"))?;
        StageKernel::<W> {
            mode,
            m: sizes(m),
            n: sizes(n),
            k: sizes(k),
            a,
            b,
            b_offset: b_offset as u64,
            src: src_bits,
            src_slots: &rows.src,
            src_per_block: sizes(sl.per_block),
            src_block_stride: sl.block_stride as u64,
            src_pos_stride: sl.pos_stride as u64,
            src_head_stride: sl.head_stride as u64,
            src_dim: sizes(sl.head_dim),
            src_kind: kind_code(S::KIND),
            cache: cache_bits,
            cache_slots: &rows.tgt,
            cache_per_block: sizes(cl.per_block),
            cache_block_stride: cl.block_stride as u64,
            cache_pos_stride: cl.pos_stride as u64,
            cache_head_stride: cl.head_stride as u64,
            cache_dim: sizes(cl.head_dim),
            cache_kind: kind_code(C::KIND),
            ks: sizes(d.hs * d.ds),
            bias: (mode == STAGE_IN).then_some(&p.b_in),
            h32: &mut *h32,
            o16,
            part: &mut *part,
            part_tiles: tiles as i32,
            gs: &mut *gs,
            gate: g,
            act: opts.gelu.code(),
            eps: EPS as f32,
            vec_a: vec_a as u32,
            vec_b: aligned(k, b.addr()) as u32,
        }
        .launch(
            &dev,
            Grid::dims([m.div_ceil(TILE) as u32, n.div_ceil(TILE) as u32, 1]),
        )?;
    }
    Ok(true)
}

/// The CPU path: the reference on the rows, written back rounded to the receiver's type.
fn fuse_host<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
    h: Host,
    p: &Projector<W>,
    src: &Cache<S>,
    cache: &mut CacheMut<C>,
    rows: &Rows,
    opts: &Options,
    g: f32,
) -> Result<()> {
    let d = p.dims;
    let widen = |b: &DeviceBuffer<W>| -> Result<Vec<f32>> {
        Ok(h.slice(b)?.iter().map(|x| x.to_f32()).collect())
    };
    let w = ProjectorHost {
        dims: d,
        w_in: widen(&p.w_in)?,
        b_in: h.slice(&p.b_in)?.to_vec(),
        w1: widen(&p.w1)?,
        w2: widen(&p.w2)?,
        norm: h.slice(&p.norm)?.to_vec(),
        w_out: widen(&p.w_out)?,
        w_s: widen(&p.w_s)?,
    };
    let (sl, cl) = (src.layout, cache.layout);
    let s = h.slice(src.data)?;
    let xs: Vec<f64> = rows
        .src_host
        .iter()
        .flat_map(|&slot| {
            (0..d.hs).flat_map(move |hd| (0..d.ds).map(move |e| sl.offset(slot as usize, hd, e)))
        })
        .map(|i| s[i].to_f64())
        .collect();
    let idx: Vec<usize> = rows
        .tgt_host
        .iter()
        .flat_map(|&slot| {
            (0..d.ht).flat_map(move |hd| (0..d.dt).map(move |e| cl.offset(slot as usize, hd, e)))
        })
        .collect();
    let c = h.slice_mut(cache.data)?;
    let ts: Vec<f64> = idx.iter().map(|&i| c[i].to_f64()).collect();
    let out = reference::project(&w, g, opts.gelu, &xs, &ts, rows.len());
    for (&i, &v) in idx.iter().zip(&out) {
        c[i] = C::from_f32(v as f32);
    }
    Ok(())
}

/// `out [tokens, Ht, Dt] = tgt + g·sigmoid(W_s·h)·(W_out·h)` for token-major `src` `[tokens,
/// Hs, Ds]` and `tgt` `[tokens, Ht, Dt]` (the `c2c.project` op): `tgt` is copied to `out` and
/// fused there (a closed gate: the copy only, no kernel).
pub fn project<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
    p: &Projector<W>,
    src: &DeviceBuffer<S>,
    tgt: &DeviceBuffer<C>,
    tokens: usize,
    opts: &Options,
) -> Result<DeviceBuffer<C>> {
    let d = p.dims;
    let dev = p.device().clone();
    for (what, b, per) in [
        ("src", src.len(), d.hs * d.ds),
        ("tgt", tgt.len(), d.k_out()),
    ] {
        if Some(b) != tokens.checked_mul(per) {
            return Err(invalid(format!(
                "mismatched token counts: {what} has {b} elements, want tokens·{per} = {tokens}·{per}"
            )));
        }
    }
    on_device(OP, "tgt", &dev, tgt)?;
    let mut out = dev.alloc::<C>(tgt.len(), "c2c.out")?;
    out.copy_from(tgt)?;
    let rows = Rows::identity(&dev, tokens)?;
    let src = Cache {
        data: src,
        layout: CacheLayout::token_major(tokens, d.hs, d.ds),
    };
    let mut cache = CacheMut {
        data: &mut out,
        layout: CacheLayout::token_major(tokens, d.ht, d.dt),
    };
    fuse(p, &src, &mut cache, &rows, opts, &mut Workspace::new())?;
    Ok(out)
}

/// Every target layer's weights stacked on the device, as `c2c.fuse` takes them (`T` target
/// layers; index 0 of the second axis is the key projector, 1 the value projector).
pub struct Stacked<'a, T: HalfFloat> {
    /// `[T, 2, Hd, Hs·Ds + Ht·Dt]`.
    pub w_in: &'a DeviceBuffer<T>,
    /// `[T, 2, Hd]`.
    pub b_in: &'a DeviceBuffer<f32>,
    /// `[T, 2, blocks, F, Hd]`.
    pub w1: &'a DeviceBuffer<T>,
    /// `[T, 2, blocks, Hd, F]`.
    pub w2: &'a DeviceBuffer<T>,
    /// `[T, 2, blocks, Hd]`.
    pub norm: &'a DeviceBuffer<f32>,
    /// `[T, 2, Ht·Dt, Hd]`.
    pub w_out: &'a DeviceBuffer<T>,
    /// `[T, 2, Ht, Hd]`.
    pub w_s: &'a DeviceBuffer<T>,
    /// `[T]`, on the host (the gates decide on the host what to launch).
    pub gate_logit: &'a [f32],
}

/// `len` elements of `b` from `start` into a new buffer (a device copy).
fn slice<E: DType>(b: &DeviceBuffer<E>, start: usize, len: usize) -> Result<DeviceBuffer<E>> {
    let mut out = b.device().alloc::<E>(len, "c2c.weight")?;
    if len > 0 {
        out.copy_range_from(0, b, start, len)?;
    }
    Ok(out)
}

/// The key and value projectors of each of `target_layers` layers from stacked weights (device
/// copies; nothing goes through the host but the gate logits). A layer whose gate value under
/// `gate` is 0 gets `None`: nothing is copied or launched for it. Errors: a tensor whose length
/// does not match (`wrong weight shape`), a gate count other than `target_layers`, and every error
/// of [`Projector::from_buffers`].
pub fn stacked_projectors<T: HalfFloat>(
    dims: ProjectorDims,
    target_layers: usize,
    w: &Stacked<T>,
    gate: Gate,
) -> Result<Vec<Option<[Projector<T>; 2]>>> {
    let (d, tl) = (dims, target_layers);
    check_dims(&d)?;
    if w.gate_logit.len() != tl {
        return Err(Error::invalid(
            FUSE_OP,
            format!(
                "gate_logit has {} entries, want one per target layer ({tl})",
                w.gate_logit.len()
            ),
        ));
    }
    let per = [
        ("w_in", w.w_in.len(), d.hidden * d.k_in()),
        ("b_in", w.b_in.len(), d.hidden),
        ("w1", w.w1.len(), d.blocks * d.ffn * d.hidden),
        ("w2", w.w2.len(), d.blocks * d.hidden * d.ffn),
        ("norm", w.norm.len(), d.blocks * d.hidden),
        ("w_out", w.w_out.len(), d.k_out() * d.hidden),
        ("w_s", w.w_s.len(), d.ht * d.hidden),
    ];
    for (n, len, one) in per {
        if Some(len) != tl.checked_mul(2).and_then(|x| x.checked_mul(one)) {
            return Err(Error::invalid(
                FUSE_OP,
                format!(
                    "wrong weight shape: {n} has {len} elements, want T·2·{one} = {tl}·2·{one}"
                ),
            ));
        }
    }
    let mut layers = Vec::with_capacity(tl);
    for (t, &g) in w.gate_logit.iter().enumerate() {
        if g.is_finite() && gate.value(g) == 0.0 {
            layers.push(None);
            continue;
        }
        let one = |j: usize| -> Result<Projector<T>> {
            let at = |k: usize| (2 * t + j) * per[k].2;
            Projector::from_buffers(
                d,
                slice(w.w_in, at(0), per[0].2)?,
                slice(w.b_in, at(1), per[1].2)?,
                slice(w.w1, at(2), per[2].2)?,
                slice(w.w2, at(3), per[3].2)?,
                slice(w.norm, at(4), per[4].2)?,
                slice(w.w_out, at(5), per[5].2)?,
                slice(w.w_s, at(6), per[6].2)?,
                g,
            )
        };
        layers.push(Some([one(0)?, one(1)?]));
    }
    Ok(layers)
}

/// One layer's key and value projectors ([`fuse`] each) on its (sharer, receiver) key and value
/// caches, both sides with the given layouts. Returns whether either ran.
#[allow(clippy::type_complexity)]
pub fn fuse_layer<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
    projectors: [&Projector<W>; 2],
    caches: [(&DeviceBuffer<S>, &mut DeviceBuffer<C>); 2],
    (src_layout, tgt_layout): (CacheLayout, CacheLayout),
    rows: &Rows,
    opts: &Options,
    ws: &mut Workspace<W>,
) -> Result<bool> {
    let mut ran = false;
    for (proj, (s, c)) in projectors.into_iter().zip(caches) {
        ran |= fuse(
            proj,
            &Cache {
                data: s,
                layout: src_layout,
            },
            &mut CacheMut {
                data: c,
                layout: tgt_layout,
            },
            rows,
            opts,
            ws,
        )?;
    }
    Ok(ran)
}

/// The op name of the all-layer fuse in errors.
pub const FUSE_OP: &str = "c2c.fuse";

/// Fuse token-major stacked caches in place, every target layer `t` with projectors: its key
/// and value projectors on sharer layer `layer_map[t]`, receiver token `p` of `tgt`
/// (`[T, tokens, Ht, Dt]`) with sharer token `alignment[p]` of `src` (`[S, src_tokens, Hs,
/// Ds]`). Returns the number of layers that ran (a closed gate or `None` launches nothing).
/// Errors: lengths that do not match, an alignment of another length or past `src_tokens`, a
/// layer map entry past `S`, and every error of [`fuse`].
#[allow(clippy::type_complexity)]
pub fn fuse_token_major<T: HalfFloat>(
    layers: &[Option<[&Projector<T>; 2]>],
    layer_map: &[usize],
    source_layers: usize,
    src: (&DeviceBuffer<T>, &DeviceBuffer<T>, usize),
    tgt: (&mut DeviceBuffer<T>, &mut DeviceBuffer<T>, usize),
    alignment: &[usize],
    opts: &Options,
) -> Result<usize> {
    let bad = |m: String| Error::invalid(FUSE_OP, m);
    let (src_k, src_v, src_tokens) = src;
    let (tgt_k, tgt_v, tokens) = tgt;
    let tl = layers.len();
    let Some(d) = layers.iter().flatten().map(|p| p[0].dims).next() else {
        return Ok(0);
    };
    if layer_map.len() != tl {
        return Err(bad(format!(
            "layer_map has {} entries, want {tl}",
            layer_map.len()
        )));
    }
    if let Some((t, &s)) = layer_map
        .iter()
        .enumerate()
        .find(|(_, &s)| s >= source_layers)
    {
        return Err(bad(format!(
            "layer_map[{t}] = {s} is not a sharer layer (S = {source_layers})"
        )));
    }
    for (what, len, want) in [
        (
            "src_k",
            src_k.len(),
            source_layers * src_tokens * d.hs * d.ds,
        ),
        (
            "src_v",
            src_v.len(),
            source_layers * src_tokens * d.hs * d.ds,
        ),
        ("tgt_k", tgt_k.len(), tl * tokens * d.k_out()),
        ("tgt_v", tgt_v.len(), tl * tokens * d.k_out()),
    ] {
        if len != want {
            return Err(bad(format!(
                "mismatched token counts: {what} has {len} elements, want {want}"
            )));
        }
    }
    if alignment.len() != tokens {
        return Err(bad(format!(
            "mismatched token counts: the alignment has {} entries, the receiver {tokens} tokens",
            alignment.len()
        )));
    }
    if let Some((i, &a)) = alignment.iter().enumerate().find(|(_, &a)| a >= src_tokens) {
        return Err(bad(format!(
            "alignment[{i}] = {a} is past the sharer's {src_tokens} tokens"
        )));
    }
    let src_layout = CacheLayout::token_major(source_layers * src_tokens, d.hs, d.ds);
    let tgt_layout = CacheLayout::token_major(tl * tokens, d.ht, d.dt);
    let dev = src_k.device().clone();
    let mut ws = Workspace::new();
    let mut fused = 0;
    let to_i32 = |x: usize| i32::try_from(x).map_err(|_| bad(format!("slot {x} exceeds i32")));
    for (t, l) in layers.iter().enumerate() {
        let Some([key, value]) = l else { continue };
        let ss = alignment
            .iter()
            .map(|&a| to_i32(layer_map[t] * src_tokens + a))
            .collect::<Result<Vec<_>>>()?;
        let ts = (0..tokens)
            .map(|q| to_i32(t * tokens + q))
            .collect::<Result<Vec<_>>>()?;
        let rows = Rows::new(&dev, &ss, &ts, &src_layout, &tgt_layout)?;
        let ran = fuse_layer(
            [key, value],
            [(src_k, &mut *tgt_k), (src_v, &mut *tgt_v)],
            (src_layout, tgt_layout),
            &rows,
            opts,
            &mut ws,
        )?;
        fused += ran as usize;
    }
    Ok(fused)
}

/// The `c2c.fuse` op on stacked token-major caches (names as in the op table): the receiver's
/// caches fused in place, every layer's projectors built from `w` ([`stacked_projectors`]),
/// sharer layer `layer_map[t]` for target layer `t`. Returns the number of layers that ran.
#[allow(clippy::too_many_arguments)]
pub fn fuse_layers<T: HalfFloat>(
    src_k: &DeviceBuffer<T>,
    src_v: &DeviceBuffer<T>,
    tgt_k: &mut DeviceBuffer<T>,
    tgt_v: &mut DeviceBuffer<T>,
    w: &Stacked<T>,
    alignment: &[usize],
    layer_map: &[usize],
    sizes: StackedSizes,
    opts: &Options,
) -> Result<usize> {
    opts.check()?;
    let layers = stacked_projectors(sizes.dims, layer_map.len(), w, opts.gate)?;
    let refs: Vec<Option<[&Projector<T>; 2]>> = layers
        .iter()
        .map(|l| l.as_ref().map(|[k, v]| [k, v]))
        .collect();
    fuse_token_major(
        &refs,
        layer_map,
        sizes.source_layers,
        (src_k, src_v, sizes.src_tokens),
        (tgt_k, tgt_v, sizes.tokens),
        alignment,
        opts,
    )
}

/// The sizes of a [`fuse_layers`] call (from the tensors' shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackedSizes {
    /// Every projector's sizes.
    pub dims: ProjectorDims,
    /// Sharer layers `S`.
    pub source_layers: usize,
    /// Sharer tokens.
    pub src_tokens: usize,
    /// Receiver tokens.
    pub tokens: usize,
}

/// The weight tensors of `c2c.project` in the op table are the Projector's fields (with `w1n`,
/// the fold, derived): a compile-time check beside the table's `field_checks`.
#[allow(dead_code)]
fn table_fields<T: HalfFloat>(p: &Projector<T>) {
    let Projector {
        dims: _,
        w_in: _,
        b_in: _,
        w1: _,
        w1n: _,
        w2: _,
        norm: _,
        w_out: _,
        w_s: _,
        gate_logit: _,
        id: _,
    } = p;
}
