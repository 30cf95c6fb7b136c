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
    check_positions, check_seqlens_host, explain_seqlens, Attention, AttentionOut, DeviceCheck,
    HalfFloat, MaskMode, OutputType, Path, Positions,
};
use crate::device::{Device, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::error::{Error, Result};
use crate::ops::on_device;
use crate::reference::attention as reference;

const OP: &str = "attention";
const MODULE: &str = "attention/duo_causal";
/// Threads per block of both kernels (kThreads).
const THREADS: u32 = 128;
/// Query rows per Q tile (kBlockM).
pub(crate) const BLOCK_M: usize = 64;
/// Keys per K/V tile (kBlockN).
pub(crate) const BLOCK_N: usize = 32;
/// Grid y (heads) limit.
const MAX_HEADS: usize = 65_535;
/// Status words of one call (4 per cu_seqlens array, cuda/attention/seqlens.cuh).
const STATUS_WORDS: usize = 8;
/// Ints per tile of the metadata (kMeta).
const META: usize = 5;

fn check_len<U: crate::dtype::DType>(
    dev: &Device,
    what: &str,
    b: &DeviceBuffer<U>,
    want: usize,
) -> Result<()> {
    on_device(OP, what, dev, b)?;
    if b.len() != want {
        return Err(Error::invalid(
            OP,
            format!("{what} has {} elements, expected {want}", b.len()),
        ));
    }
    Ok(())
}

/// Resolved positions of one side (host), for the CPU path (implicit positions were checked to
/// fit in i32 by [`check_positions`]).
fn resolve(p: &Positions, cu: &[i32], total: usize) -> Result<Vec<i32>> {
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
struct Geom {
    batch: usize,
    total_q: usize,
    total_kv: usize,
    /// Tile slots per sequence.
    q_tiles: usize,
    kv_tiles: usize,
}

/// Everything but the contents of `cu_seqlens` (checked on the device, or eagerly on the CPU
/// path).
fn validate<T: HalfFloat>(a: &Attention<T>) -> Result<Geom> {
    let dev = a.q.device();
    let (h_n, hk, d) = (a.heads, a.kv_heads, a.head_dim);
    if d != 64 && d != 128 {
        return Err(Error::invalid(
            OP,
            format!("head_dim {d}, supported: 64, 128"),
        ));
    }
    if h_n == 0 || hk == 0 || h_n % hk != 0 {
        return Err(Error::invalid(
            OP,
            format!("heads {h_n} must be a positive multiple of kv_heads {hk}"),
        ));
    }
    if h_n > MAX_HEADS {
        return Err(Error::invalid(OP, format!("heads {h_n} > {MAX_HEADS}")));
    }
    if !a.scale.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("scale must be finite, got {}", a.scale),
        ));
    }
    on_device(OP, "k", dev, a.k)?;
    on_device(OP, "v", dev, a.v)?;
    on_device(OP, "cu_seqlens_q", dev, a.cu_seqlens_q)?;
    on_device(OP, "cu_seqlens_kv", dev, a.cu_seqlens_kv)?;
    if a.q.len() % (h_n * d) != 0 {
        return Err(Error::invalid(
            OP,
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
            OP,
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
            OP,
            format!("v has {} elements, k has {}", a.v.len(), a.k.len()),
        ));
    }
    if total_q > i32::MAX as usize || total_kv > i32::MAX as usize {
        return Err(Error::invalid(OP, "more than 2^31 - 1 tokens"));
    }
    if a.cu_seqlens_q.is_empty() || a.cu_seqlens_q.len() != a.cu_seqlens_kv.len() {
        return Err(Error::invalid(
            OP,
            format!(
                "cu_seqlens_q has {} entries and cu_seqlens_kv {}: both need batch + 1 >= 1",
                a.cu_seqlens_q.len(),
                a.cu_seqlens_kv.len()
            ),
        ));
    }
    // A bound above the total cannot be reached: clamp it, so the grid stays small.
    let (max_q, max_kv) = (a.max_seqlen_q.min(total_q), a.max_seqlen_kv.min(total_kv));
    check_positions(OP, "q_pos", "max_seqlen_q", &a.q_pos, max_q)?;
    check_positions(OP, "kv_pos", "max_seqlen_kv", &a.kv_pos, max_kv)?;
    if let Positions::Explicit(b) = a.q_pos {
        check_len(dev, "q_pos", b, total_q)?;
    }
    if let Positions::Explicit(b) = a.kv_pos {
        check_len(dev, "kv_pos", b, total_kv)?;
    }
    if a.mode == MaskMode::DuoCausal {
        let (Some(qd), Some(kd)) = (a.q_depth, a.kv_depth) else {
            return Err(Error::invalid(
                OP,
                "DuoCausal needs both q_depth and kv_depth",
            ));
        };
        check_len(dev, "q_depth", qd, total_q)?;
        check_len(dev, "kv_depth", kd, total_kv)?;
    }
    if let Some(vb) = a.kv_valid {
        check_len(dev, "kv_valid", vb, total_kv)?;
    }
    let batch = a.cu_seqlens_q.len() - 1;
    let (q_tiles, kv_tiles) = (max_q.div_ceil(BLOCK_M), max_kv.div_ceil(BLOCK_N));
    let slots = |t: usize| batch.checked_mul(t).filter(|&n| n <= i32::MAX as usize);
    if slots(q_tiles).is_none() || slots(kv_tiles).is_none() || slots(q_tiles + kv_tiles).is_none()
    {
        return Err(Error::invalid(
            OP,
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
    let g = validate(a)?;
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
    let g = validate(a)?;
    let dev = a.q.device();
    check_len(dev, "o", o, g.total_q * a.heads * a.head_dim)?;
    check_len(dev, "lse", lse, a.heads * g.total_q)?;
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
    if !dev.backend().runs_kernels() {
        forward_host(a, g, o, lse)?;
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

/// Null for absent optional inputs (the kernels read them only under their flag).
fn ptr<U: crate::dtype::DType>(b: Option<&DeviceBuffer<U>>) -> u64 {
    b.map_or(0, |b| b.addr())
}

/// The arguments the two kernels share after `cu_seqlens`: totals, bounds, tile slots,
/// positions (array + flag, offset) and depths.
fn push_sides<T: HalfFloat>(args: &mut KernelArgs, a: &Attention<T>, g: &Geom) {
    let pos = |p: &Positions<'_>| -> (u64, i32, u32) {
        match p {
            Positions::Implicit { offset } => (0, *offset, 0),
            Positions::Explicit(b) => (b.addr(), 0, 1),
        }
    };
    let (qp, q_off, has_qp) = pos(&a.q_pos);
    let (kp, kv_off, has_kp) = pos(&a.kv_pos);
    let duo = a.mode == MaskMode::DuoCausal;
    let depth = |b| if duo { ptr(b) } else { 0 };
    args.buf(a.cu_seqlens_q)
        .buf(a.cu_seqlens_kv)
        .push(g.total_q as i32)
        .push(g.total_kv as i32)
        .push(a.max_seqlen_q.min(g.total_q) as i32)
        .push(a.max_seqlen_kv.min(g.total_kv) as i32)
        .push(g.q_tiles as u32)
        .push(g.kv_tiles as u32)
        .push(qp)
        .push(kp)
        .push(q_off)
        .push(kv_off)
        .push(has_qp)
        .push(has_kp)
        .push(depth(a.q_depth))
        .push(depth(a.kv_depth))
        .push(duo as u32);
}

/// `attn_tile_meta`: one thread per tile slot, and two that validate `cu_seqlens`.
fn launch_tile_meta<T: HalfFloat>(
    a: &Attention<T>,
    g: &Geom,
    q_meta: &mut DeviceBuffer<i32>,
    kv_meta: &mut DeviceBuffer<i32>,
    status: &mut DeviceBuffer<i32>,
) -> Result<()> {
    let threads = g.batch * (g.q_tiles + g.kv_tiles) + 2;
    let mut args = KernelArgs::new();
    args.push(g.batch as u32);
    push_sides(&mut args, a, g);
    args.push(ptr(a.kv_valid))
        .push(a.kv_valid.is_some() as u32)
        .buf_mut(q_meta)
        .buf_mut(kv_meta)
        .buf_mut(status);
    let blocks = threads.div_ceil(THREADS as usize) as u32;
    a.q.device().launch(
        MODULE,
        "attn_tile_meta",
        &LaunchConfig::linear(blocks, THREADS, 0),
        &args,
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
    let mode: u32 = match a.mode {
        MaskMode::Full => 0,
        MaskMode::Causal => 1,
        MaskMode::DuoCausal => 2,
    };
    let tc = match a.path {
        Path::Auto | Path::TensorCore => 1u32,
        Path::Scalar => 0,
    };
    let mut args = KernelArgs::new();
    args.buf(a.q).buf(a.k).buf(a.v);
    push_sides(&mut args, a, g);
    args.buf(q_meta)
        .buf(kv_meta)
        .push(ptr(a.kv_valid))
        .push(a.kv_valid.is_some() as u32)
        .push(a.heads as u32)
        .push(a.kv_heads as u32)
        .push(a.scale)
        .push(mode)
        .push(tc)
        .buf(status)
        .buf_mut(o)
        .push(O::ROUNDED as u32)
        .buf_mut(lse);
    let name = format!("attn_fwd_{}_d{}", T::KIND.name(), a.head_dim);
    a.q.device().launch(
        MODULE,
        &name,
        &LaunchConfig {
            grid: [(g.batch * g.q_tiles) as u32, a.heads as u32, 1],
            block: [THREADS, 1, 1],
            shared_bytes: 0,
        },
        &args,
    )
}

/// The CPU path: `cu_seqlens` checked at once (host memory), then the f64 reference.
fn forward_host<T: HalfFloat, O: OutputType<T>>(
    a: &Attention<T>,
    g: &Geom,
    o_out: &mut DeviceBuffer<O>,
    lse_out: &mut DeviceBuffer<f32>,
) -> Result<()> {
    let (total_q, total_kv) = (g.total_q, g.total_kv);
    let cu_q = a.cu_seqlens_q.host_slice().expect("cpu");
    let cu_kv = a.cu_seqlens_kv.host_slice().expect("cpu");
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
    for (d, &x) in o_out.host_slice_mut().expect("cpu").iter_mut().zip(&o) {
        *d = O::from_f32(x as f32);
    }
    for (d, &x) in lse_out.host_slice_mut().expect("cpu").iter_mut().zip(&lse) {
        *d = x as f32;
    }
    Ok(())
}
