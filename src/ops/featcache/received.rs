//! `featcache.received`: validation, the CPU path (the f64 reference) and the launches of
//! `cuda/featcache/received.cu` (after attention's `attn_tile_meta`, which builds the tile
//! metadata and validates `cu_seqlens`, so that the mask and the tile skipping are exactly
//! `attention.forward`'s).
//!
//! Work: `2 * D` FLOPs and one exp2 per visible (query, key, head) triple; bytes: K once, Q and
//! the LSE once per K tile whose Q tiles are not skipped, the output once (per head, then the
//! head sum).

use std::marker::PhantomData;

use half::{bf16, f16};

use crate::device::kernel::{Grid, KernelSuffix};
use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::attention::duo_causal::{
    self, launch_tile_meta, resolve, sides, Geom, D128, D64, META, STATUS_WORDS,
};
use crate::ops::attention::{
    check_len, check_seqlens_host, explain_seqlens, Attention, HalfFloat, MaskMode,
};
use crate::ops::{cpu_path, DeviceCheck, Host};
use crate::reference::attention as ref_attention;
use crate::reference::featcache as reference;

/// The op name in errors.
pub const OP: &str = "featcache.received";
/// Threads per block (`kThreads`).
const THREADS: u32 = 128;
/// Blocks of the head sum at most.
const MAX_SUM_BLOCKS: usize = 1024;

crate::kernels! {
    module = "featcache/received";
    /// Per-head received: one block per (K tile slot, query head).
    pub(crate) struct ReceivedKernel<'a, T: HalfFloat, D: KernelSuffix> = "featcache_received"
        [(f16, D64), (f16, D128), (bf16, D64), (bf16, D128)] block = THREADS {
        head_dim: PhantomData<D>,
        q: &'a DeviceBuffer<T>,
        k: &'a DeviceBuffer<T>,
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
        status: &'a DeviceBuffer<i32>,
        lse: &'a DeviceBuffer<f32>,
        per_head: &'a mut DeviceBuffer<f32>,
    }
    /// The sum over heads, in head order (grid-stride over keys).
    pub(crate) struct SumKernel<'a> = "featcache_received_sum" block = THREADS {
        per_head: &'a DeviceBuffer<f32>,
        heads: u32,
        total_kv: u32,
        out: &'a mut DeviceBuffer<f32>,
    }
}

/// See [`crate::ops::featcache::received`].
pub(crate) fn received<T: HalfFloat>(
    a: &Attention<T>,
    lse: &DeviceBuffer<f32>,
    per_head: bool,
) -> Result<DeviceBuffer<f32>> {
    let g = duo_causal::validate(OP, a)?;
    let dev = a.q.device().clone();
    check_len(OP, &dev, "lse", lse, a.heads * g.total_q)?;
    if g.total_kv > u32::MAX as usize / a.heads.max(1) {
        return Err(Error::invalid(OP, "heads * total_kv exceeds u32::MAX"));
    }
    let out_len = if per_head { a.heads } else { 1 } * g.total_kv;
    let mut out = dev.alloc::<f32>(out_len, "featcache.received")?;
    if let Some(h) = cpu_path(OP, &dev) {
        received_host(h, a, &g, lse, per_head, &mut out)?;
        return Ok(out);
    }
    let (nq, nk) = (g.batch * g.q_tiles, g.batch * g.kv_tiles);
    let mut q_meta = dev.alloc::<i32>((nq * META).max(1), "featcache.received.q_meta")?;
    let mut kv_meta = dev.alloc::<i32>((nk * META).max(1), "featcache.received.kv_meta")?;
    let mut status = dev.alloc::<i32>(STATUS_WORDS, "featcache.received.status")?;
    launch_tile_meta(a, &g, &mut q_meta, &mut kv_meta, &mut status)?;
    if nk > 0 && g.total_kv > 0 {
        let run = |dst: &mut DeviceBuffer<f32>| match a.head_dim {
            64 => launch::<T, D64>(a, &g, &q_meta, &kv_meta, &status, lse, dst),
            _ => launch::<T, D128>(a, &g, &q_meta, &kv_meta, &status, lse, dst),
        };
        if per_head || a.heads == 1 {
            run(&mut out)?;
        } else {
            let mut tmp = dev.alloc::<f32>(a.heads * g.total_kv, "featcache.received.per_head")?;
            run(&mut tmp)?;
            let blocks = g.total_kv.div_ceil(THREADS as usize).min(MAX_SUM_BLOCKS) as u32;
            SumKernel {
                per_head: &tmp,
                heads: a.heads as u32,
                total_kv: g.total_kv as u32,
                out: &mut out,
            }
            .launch(&dev, Grid::linear(blocks))?;
        }
    }
    // The API returns the values, so the cu_seqlens verdict is read here (one small copy).
    DeviceCheck::on_device(OP, status, explain_seqlens).check()?;
    Ok(out)
}

/// `featcache_received_<dt>_d<D>`: grid (batch x K tile slots, heads).
#[allow(clippy::too_many_arguments)]
fn launch<T: HalfFloat, D: KernelSuffix>(
    a: &Attention<T>,
    g: &Geom,
    q_meta: &DeviceBuffer<i32>,
    kv_meta: &DeviceBuffer<i32>,
    status: &DeviceBuffer<i32>,
    lse: &DeviceBuffer<f32>,
    per_head: &mut DeviceBuffer<f32>,
) -> Result<()> {
    let s = sides(a, g);
    ReceivedKernel::<T, D> {
        head_dim: PhantomData,
        q: a.q,
        k: a.k,
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
        q_meta,
        kv_meta,
        kv_valid: a.kv_valid,
        has_valid: a.kv_valid.is_some() as u32,
        heads: a.heads as u32,
        kv_heads: a.kv_heads as u32,
        scale: a.scale,
        mode: a.mode_code(),
        status,
        lse,
        per_head,
    }
    .launch(
        a.q.device(),
        Grid::dims([(g.batch * g.kv_tiles) as u32, a.heads as u32, 1]),
    )
}

/// The CPU path: `cu_seqlens` checked at once (host memory), then the f64 reference with
/// attention's mask.
fn received_host<T: HalfFloat>(
    h: Host,
    a: &Attention<T>,
    g: &Geom,
    lse: &DeviceBuffer<f32>,
    per_head: bool,
    out: &mut DeviceBuffer<f32>,
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
    let f = |b: &DeviceBuffer<T>| -> Result<Vec<f32>> {
        Ok(h.slice(b)?.iter().map(|x| x.to_f32()).collect())
    };
    let (q, k) = (f(a.q)?, f(a.k)?);
    let q_pos = resolve(&a.q_pos, cu_q, total_q)?;
    let kv_pos = resolve(&a.kv_pos, cu_kv, total_kv)?;
    let (q_depth, kv_depth) = match (a.q_depth, a.kv_depth) {
        (Some(qd), Some(kd)) if a.mode == MaskMode::DuoCausal => {
            (h.slice(qd)?.to_vec(), h.slice(kd)?.to_vec())
        }
        _ => (vec![0; total_q], vec![0; total_kv]),
    };
    let kv_valid = match a.kv_valid {
        Some(b) => h.slice(b)?.to_vec(),
        None => vec![1u8; total_kv],
    };
    let p = ref_attention::Problem {
        q: &q,
        k: &k,
        v: &[],
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
    let lse: Vec<f64> = h.slice(lse)?.iter().map(|&x| x as f64).collect();
    let r = reference::received_attention(&p, &lse, per_head);
    for (d, &x) in h.slice_mut(out)?.iter_mut().zip(&r) {
        *d = x as f32;
    }
    Ok(())
}
