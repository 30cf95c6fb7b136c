//! Prefill / many-query attention: validation, the CPU path (the f64 reference) and the launches
//! of `cuda/attention/duo_causal.cu` (`attn_tile_meta`, then `attn_fwd_<dt>_d<D>`).
//!
//! Geometry, from host-known numbers only (no copy of `cu_seqlens`): every sequence has
//! `ceil(max_seqlen_q / BLOCK_M)` Q tile slots and `ceil(max_seqlen_kv / BLOCK_N)` K/V tile slots
//! (batch = `cu_seqlens` entries - 1). The metadata kernel computes each slot's rows, position and
//! depth ranges and validity flags from `cu_seqlens` and the actual inputs, and validates
//! `cu_seqlens` into 8 status words (the op's [`DeviceCheck`]); the forward kernel runs one block
//! per (Q tile slot, head), the slots past a sequence's end exiting at once.
//!
//! Work: `4 * D` FLOPs per visible (query, key, head) triple (S and P·V); bytes: Q, O once, K/V
//! once per Q tile that does not skip them.

use super::{
    check_len, check_metadata, check_seqlens_host, explain_seqlens, Attention, AttentionOut,
    DeviceCheck, HalfFloat, MaskMode, OutputType, Path, Positions,
};
use std::marker::PhantomData;

use half::{bf16, f16};

use crate::device::kernel::{AnyBufMut, Grid, KernelSuffix};
use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, Host};
use crate::reference::attention as reference;

const OP: &str = "attention";
/// Threads per block of both kernels (kThreads).
const THREADS: u32 = 128;
/// Query rows per Q tile (kBlockM).
pub(crate) const BLOCK_M: usize = 64;
/// Keys per K/V tile (kBlockN).
pub(crate) const BLOCK_N: usize = 32;
/// Grid y (heads) limit.
const MAX_HEADS: usize = 65_535;
/// Status words of one call (4 per cu_seqlens array, cuda/attention/seqlens.cuh).
pub(crate) const STATUS_WORDS: usize = 8;
/// Ints per tile of the metadata (kMeta).
pub(crate) const META: usize = 5;

/// Resolved positions of one side (host), for the CPU path (implicit positions were checked to
/// fit in i32 by [`check_positions`]).
pub(crate) fn resolve(p: &Positions, cu: &[i32], total: usize) -> Result<Vec<i32>> {
    match p {
        Positions::Explicit(b) => b.download(),
        Positions::Implicit { offset } => {
            let mut out = vec![0i32; total];
            for w in cu.windows(2) {
                for (t, i) in (w[0]..w[1]).enumerate() {
                    out[i as usize] = t as i32 + offset;
                }
            }
            Ok(out)
        }
    }
}

/// What validation establishes (all from host-known numbers).
pub(crate) struct Geom {
    pub(crate) batch: usize,
    pub(crate) total_q: usize,
    pub(crate) total_kv: usize,
    /// Tile slots per sequence.
    pub(crate) q_tiles: usize,
    pub(crate) kv_tiles: usize,
}

/// Everything but the contents of `cu_seqlens` (checked on the device, or eagerly on the CPU
/// path); errors name `op` (`attention`, or an op that takes the same problem).
pub(crate) fn validate<T: HalfFloat>(op: &'static str, a: &Attention<T>) -> Result<Geom> {
    let dev = a.q.device();
    let (h_n, hk, d) = (a.heads, a.kv_heads, a.head_dim);
    if d != 64 && d != 128 {
        return Err(Error::invalid(
            op,
            format!("head_dim {d}, supported: 64, 128"),
        ));
    }
    if h_n == 0 || hk == 0 || h_n % hk != 0 {
        return Err(Error::invalid(
            op,
            format!("heads {h_n} must be a positive multiple of kv_heads {hk}"),
        ));
    }
    if h_n > MAX_HEADS {
        return Err(Error::invalid(op, format!("heads {h_n} > {MAX_HEADS}")));
    }
    if !a.scale.is_finite() {
        return Err(Error::invalid(
            op,
            format!("scale must be finite, got {}", a.scale),
        ));
    }
    on_device(op, "k", dev, a.k)?;
    on_device(op, "v", dev, a.v)?;
    on_device(op, "cu_seqlens_q", dev, a.cu_seqlens_q)?;
    on_device(op, "cu_seqlens_kv", dev, a.cu_seqlens_kv)?;
    if a.q.len() % (h_n * d) != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "q has {} elements, not a multiple of heads * head_dim = {}",
                a.q.len(),
                h_n * d
            ),
        ));
    }
    let total_q = a.q.len() / (h_n * d);
    if a.k.len() % (hk * d) != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "k has {} elements, not a multiple of kv_heads * head_dim = {}",
                a.k.len(),
                hk * d
            ),
        ));
    }
    let total_kv = a.k.len() / (hk * d);
    if a.v.len() != a.k.len() {
        return Err(Error::invalid(
            op,
            format!("v has {} elements, k has {}", a.v.len(), a.k.len()),
        ));
    }
    if total_q > i32::MAX as usize || total_kv > i32::MAX as usize {
        return Err(Error::invalid(op, "more than 2^31 - 1 tokens"));
    }
    let (max_q, max_kv) = check_metadata(op, a, total_q, total_kv)?;
    let batch = a.cu_seqlens_q.len() - 1;
    let (q_tiles, kv_tiles) = (max_q.div_ceil(BLOCK_M), max_kv.div_ceil(BLOCK_N));
    let slots = |t: usize| batch.checked_mul(t).filter(|&n| n <= i32::MAX as usize);
    if slots(q_tiles).is_none() || slots(kv_tiles).is_none() || slots(q_tiles + kv_tiles).is_none()
    {
        return Err(Error::invalid(
            op,
            format!(
                "batch {batch} x ({q_tiles} Q + {kv_tiles} K/V tiles of the longest sequences) \
                 exceeds the grid"
            ),
        ));
    }
    Ok(Geom {
        batch,
        total_q,
        total_kv,
        q_tiles,
        kv_tiles,
    })
}

pub(super) fn forward<T: HalfFloat>(a: &Attention<T>) -> Result<AttentionOut> {
    let g = validate(OP, a)?;
    let dev = a.q.device();
    let mut o = dev.alloc::<f32>(g.total_q * a.heads * a.head_dim, "attention.o")?;
    let mut lse = dev.alloc::<f32>(a.heads * g.total_q, "attention.lse")?;
    let check = run(a, &g, &mut o, &mut lse)?;
    Ok(AttentionOut { o, lse, check })
}

pub(super) fn forward_into<T: HalfFloat, O: OutputType<T>>(
    a: &Attention<T>,
    o: &mut DeviceBuffer<O>,
    lse: &mut DeviceBuffer<f32>,
) -> Result<DeviceCheck> {
    let g = validate(OP, a)?;
    let dev = a.q.device();
    check_len(OP, dev, "o", o, g.total_q * a.heads * a.head_dim)?;
    check_len(OP, dev, "lse", lse, a.heads * g.total_q)?;
    run(a, &g, o, lse)
}

/// The CPU path, or the two launches.
fn run<T: HalfFloat, O: OutputType<T>>(
    a: &Attention<T>,
    g: &Geom,
    o: &mut DeviceBuffer<O>,
    lse: &mut DeviceBuffer<f32>,
) -> Result<DeviceCheck> {
    let dev = a.q.device().clone();
    if let Some(h) = cpu_path(OP, &dev) {
        forward_host(h, a, g, o, lse)?;
        return Ok(DeviceCheck::none());
    }
    let (nq, nk) = (g.batch * g.q_tiles, g.batch * g.kv_tiles);
    let mut q_meta = dev.alloc::<i32>((nq * META).max(1), "attention.q_meta")?;
    let mut kv_meta = dev.alloc::<i32>((nk * META).max(1), "attention.kv_meta")?;
    let mut status = dev.alloc::<i32>(STATUS_WORDS, "attention.status")?;
    launch_tile_meta(a, g, &mut q_meta, &mut kv_meta, &mut status)?;
    if nq > 0 && g.total_q > 0 {
        launch_fwd(a, g, &q_meta, &kv_meta, &status, o, lse)?;
    }
    DeviceCheck::on_device(OP, status, explain_seqlens).eager_if_asked()
}

/// The head dimension as a kernel variant: `attn_fwd_<dt>_d64` / `_d128`.
pub(crate) struct D64;
/// See [`D64`].
pub(crate) struct D128;
impl KernelSuffix for D64 {
    const SUFFIX: &'static str = "d64";
}
impl KernelSuffix for D128 {
    const SUFFIX: &'static str = "d128";
}

crate::kernels! {
    module = "attention/duo_causal";
    /// One thread per tile slot builds its metadata; two more validate `cu_seqlens` into the
    /// status words.
    pub(crate) struct TileMetaKernel<'a> = "attn_tile_meta" block = THREADS {
        batch: u32,
        cu_q: &'a DeviceBuffer<i32>,
        cu_kv: &'a DeviceBuffer<i32>,
        total_q: i32,
        total_kv: i32,
        max_q: i32,
        max_kv: i32,
        q_tiles: u32,
        kv_tiles: u32,
        q_pos: Option<&'a DeviceBuffer<i32>>,
        kv_pos: Option<&'a DeviceBuffer<i32>>,
        q_offset: i32,
        kv_offset: i32,
        has_q_pos: u32,
        has_kv_pos: u32,
        q_depth: Option<&'a DeviceBuffer<i32>>,
        kv_depth: Option<&'a DeviceBuffer<i32>>,
        has_depth: u32,
        kv_valid: Option<&'a DeviceBuffer<u8>>,
        has_valid: u32,
        q_meta: &'a mut DeviceBuffer<i32>,
        kv_meta: &'a mut DeviceBuffer<i32>,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// The fused forward: one block per (Q tile slot, head).
    pub(crate) struct FwdKernel<'a, T: HalfFloat, D: KernelSuffix> = "attn_fwd"
        [(f16, D64), (f16, D128), (bf16, D64), (bf16, D128)] block = THREADS {
        head_dim: PhantomData<D>,
        q: &'a DeviceBuffer<T>,
        k: &'a DeviceBuffer<T>,
        v: &'a DeviceBuffer<T>,
        cu_q: &'a DeviceBuffer<i32>,
        cu_kv: &'a DeviceBuffer<i32>,
        total_q: i32,
        total_kv: i32,
        max_q: i32,
        max_kv: i32,
        q_tiles: u32,
        kv_tiles: u32,
        q_pos: Option<&'a DeviceBuffer<i32>>,
        kv_pos: Option<&'a DeviceBuffer<i32>>,
        q_offset: i32,
        kv_offset: i32,
        has_q_pos: u32,
        has_kv_pos: u32,
        q_depth: Option<&'a DeviceBuffer<i32>>,
        kv_depth: Option<&'a DeviceBuffer<i32>>,
        has_depth: u32,
        q_meta: &'a DeviceBuffer<i32>,
        kv_meta: &'a DeviceBuffer<i32>,
        kv_valid: Option<&'a DeviceBuffer<u8>>,
        has_valid: u32,
        heads: u32,
        kv_heads: u32,
        scale: f32,
        mode: u32,
        tc: u32,
        status: &'a DeviceBuffer<i32>,
        o: AnyBufMut<'a>,
        o_half: u32,
        lse: &'a mut DeviceBuffer<f32>,
    }
}

/// What both kernels take after `cu_seqlens`: totals, bounds, tile slots, positions (array +
/// flag, offset) and depths.
pub(crate) struct Sides<'a> {
    pub(crate) total_q: i32,
    pub(crate) total_kv: i32,
    pub(crate) max_q: i32,
    pub(crate) max_kv: i32,
    pub(crate) q_tiles: u32,
    pub(crate) kv_tiles: u32,
    pub(crate) q_pos: Option<&'a DeviceBuffer<i32>>,
    pub(crate) kv_pos: Option<&'a DeviceBuffer<i32>>,
    pub(crate) q_offset: i32,
    pub(crate) kv_offset: i32,
    pub(crate) q_depth: Option<&'a DeviceBuffer<i32>>,
    pub(crate) kv_depth: Option<&'a DeviceBuffer<i32>>,
    pub(crate) has_depth: u32,
}

pub(crate) fn sides<'a, T: HalfFloat>(a: &Attention<'a, T>, g: &Geom) -> Sides<'a> {
    let (q_pos, q_offset) = a.q_pos.kernel_args();
    let (kv_pos, kv_offset) = a.kv_pos.kernel_args();
    let (q_depth, kv_depth) = a.kernel_depths();
    Sides {
        total_q: g.total_q as i32,
        total_kv: g.total_kv as i32,
        max_q: a.max_seqlen_q.min(g.total_q) as i32,
        max_kv: a.max_seqlen_kv.min(g.total_kv) as i32,
        q_tiles: g.q_tiles as u32,
        kv_tiles: g.kv_tiles as u32,
        q_pos,
        kv_pos,
        q_offset,
        kv_offset,
        q_depth,
        kv_depth,
        has_depth: (a.mode == MaskMode::DuoCausal) as u32,
    }
}

/// `attn_tile_meta`: one thread per tile slot, and two that validate `cu_seqlens`.
pub(crate) fn launch_tile_meta<T: HalfFloat>(
    a: &Attention<T>,
    g: &Geom,
    q_meta: &mut DeviceBuffer<i32>,
    kv_meta: &mut DeviceBuffer<i32>,
    status: &mut DeviceBuffer<i32>,
) -> Result<()> {
    let threads = g.batch * (g.q_tiles + g.kv_tiles) + 2;
    let s = sides(a, g);
    TileMetaKernel {
        batch: g.batch as u32,
        cu_q: a.cu_seqlens_q,
        cu_kv: a.cu_seqlens_kv,
        total_q: s.total_q,
        total_kv: s.total_kv,
        max_q: s.max_q,
        max_kv: s.max_kv,
        q_tiles: s.q_tiles,
        kv_tiles: s.kv_tiles,
        q_pos: s.q_pos,
        kv_pos: s.kv_pos,
        q_offset: s.q_offset,
        kv_offset: s.kv_offset,
        has_q_pos: s.q_pos.is_some() as u32,
        has_kv_pos: s.kv_pos.is_some() as u32,
        q_depth: s.q_depth,
        kv_depth: s.kv_depth,
        has_depth: s.has_depth,
        kv_valid: a.kv_valid,
        has_valid: a.kv_valid.is_some() as u32,
        q_meta,
        kv_meta,
        status,
    }
    .launch(
        a.q.device(),
        Grid::linear(threads.div_ceil(THREADS as usize) as u32),
    )
}

/// `attn_fwd_<dt>_d<D>`: grid (batch x Q tile slots, heads).
fn launch_fwd<T: HalfFloat, O: OutputType<T>>(
    a: &Attention<T>,
    g: &Geom,
    q_meta: &DeviceBuffer<i32>,
    kv_meta: &DeviceBuffer<i32>,
    status: &DeviceBuffer<i32>,
    o: &mut DeviceBuffer<O>,
    lse: &mut DeviceBuffer<f32>,
) -> Result<()> {
    /// The forward kernel's buffers besides the problem's.
    struct Bufs<'b> {
        q_meta: &'b DeviceBuffer<i32>,
        kv_meta: &'b DeviceBuffer<i32>,
        status: &'b DeviceBuffer<i32>,
        o: AnyBufMut<'b>,
        o_half: bool,
        lse: &'b mut DeviceBuffer<f32>,
    }
    fn launch<T: HalfFloat, D: KernelSuffix>(a: &Attention<T>, g: &Geom, b: Bufs) -> Result<()> {
        let s = sides(a, g);
        FwdKernel::<T, D> {
            head_dim: PhantomData,
            q: a.q,
            k: a.k,
            v: a.v,
            cu_q: a.cu_seqlens_q,
            cu_kv: a.cu_seqlens_kv,
            total_q: s.total_q,
            total_kv: s.total_kv,
            max_q: s.max_q,
            max_kv: s.max_kv,
            q_tiles: s.q_tiles,
            kv_tiles: s.kv_tiles,
            q_pos: s.q_pos,
            kv_pos: s.kv_pos,
            q_offset: s.q_offset,
            kv_offset: s.kv_offset,
            has_q_pos: s.q_pos.is_some() as u32,
            has_kv_pos: s.kv_pos.is_some() as u32,
            q_depth: s.q_depth,
            kv_depth: s.kv_depth,
            has_depth: s.has_depth,
            q_meta: b.q_meta,
            kv_meta: b.kv_meta,
            kv_valid: a.kv_valid,
            has_valid: a.kv_valid.is_some() as u32,
            heads: a.heads as u32,
            kv_heads: a.kv_heads as u32,
            scale: a.scale,
            mode: a.mode_code(),
            tc: match a.path {
                Path::Auto | Path::TensorCore => 1,
                Path::Scalar => 0,
            },
            status: b.status,
            o: b.o,
            o_half: b.o_half as u32,
            lse: b.lse,
        }
        .launch(
            a.q.device(),
            Grid::dims([(g.batch * g.q_tiles) as u32, a.heads as u32, 1]),
        )
    }
    let b = Bufs {
        q_meta,
        kv_meta,
        status,
        o: AnyBufMut::of(o),
        o_half: O::ROUNDED,
        lse,
    };
    match a.head_dim {
        64 => launch::<T, D64>(a, g, b),
        128 => launch::<T, D128>(a, g, b),
        d => Err(Error::invalid(
            OP,
            format!("head_dim {d}, supported: 64, 128"),
        )),
    }
}

/// The CPU path: `cu_seqlens` checked at once (host memory), then the f64 reference.
fn forward_host<T: HalfFloat, O: OutputType<T>>(
    h: Host,
    a: &Attention<T>,
    g: &Geom,
    o_out: &mut DeviceBuffer<O>,
    lse_out: &mut DeviceBuffer<f32>,
) -> Result<()> {
    let (total_q, total_kv) = (g.total_q, g.total_kv);
    let cu_q = h.slice(a.cu_seqlens_q)?;
    let cu_kv = h.slice(a.cu_seqlens_kv)?;
    check_seqlens_host(
        OP,
        cu_q,
        cu_kv,
        (total_q, total_kv),
        (a.max_seqlen_q, a.max_seqlen_kv),
    )?;
    let f = |b: &DeviceBuffer<T>| -> Vec<f32> {
        b.host_slice()
            .expect("cpu")
            .iter()
            .map(|x| x.to_f32())
            .collect()
    };
    let (q, k, v) = (f(a.q), f(a.k), f(a.v));
    let q_pos = resolve(&a.q_pos, cu_q, total_q)?;
    let kv_pos = resolve(&a.kv_pos, cu_kv, total_kv)?;
    let (q_depth, kv_depth) = match (a.q_depth, a.kv_depth) {
        (Some(qd), Some(kd)) if a.mode == MaskMode::DuoCausal => (qd.download()?, kd.download()?),
        _ => (vec![0; total_q], vec![0; total_kv]),
    };
    let kv_valid = match a.kv_valid {
        Some(b) => b.download()?,
        None => vec![1u8; total_kv],
    };
    let p = reference::Problem {
        q: &q,
        k: &k,
        v: &v,
        heads: a.heads,
        kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        cu_q,
        cu_kv,
        q_pos: &q_pos,
        kv_pos: &kv_pos,
        q_depth: &q_depth,
        kv_depth: &kv_depth,
        kv_valid: &kv_valid,
        scale: a.scale,
        mode: a.mode,
    };
    let (o, lse) = reference::attention(&p);
    for (d, &x) in h.slice_mut(o_out)?.iter_mut().zip(&o) {
        *d = O::from_f32(x as f32);
    }
    for (d, &x) in h.slice_mut(lse_out)?.iter_mut().zip(&lse) {
        *d = x as f32;
    }
    Ok(())
}
