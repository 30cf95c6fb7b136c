//! Prefill / many-query attention: validation, the CPU path (the f64 reference) and the launches
//! of `cuda/attention/duo_causal.cu` (`attn_tile_meta`, then `attn_fwd_<dt>_d<D>`).
//!
//! Geometry: the op downloads `cu_seqlens` (batch + 1 ints) and cuts every sequence into Q tiles
//! of [`BLOCK_M`] rows and K/V tiles of [`BLOCK_N`] keys; the tile tables `(sequence, first row,
//! end row)` go to the device, the metadata kernel computes each tile's position/depth ranges and
//! validity flags from the actual inputs, and the forward kernel runs one block per (Q tile, head).
//!
//! Work: `4 * D` FLOPs per visible (query, key, head) triple (S and P·V); bytes: Q, O once, K/V
//! once per Q tile that does not skip them.

use super::{check_positions, Attention, AttentionOut, HalfFloat, MaskMode, Path, Positions};
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

fn check_cu(what: &str, cu: &[i32], total: usize) -> Result<()> {
    if cu.first() != Some(&0) {
        return Err(Error::invalid(OP, format!("{what} must start at 0")));
    }
    if let Some(i) = cu.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::invalid(
            OP,
            format!(
                "{what} decreases at entry {} ({} -> {})",
                i + 1,
                cu[i],
                cu[i + 1]
            ),
        ));
    }
    let last = *cu.last().expect("non-empty");
    if last as i64 != total as i64 {
        return Err(Error::invalid(
            OP,
            format!("{what} ends at {last}, the tensor has {total} tokens"),
        ));
    }
    Ok(())
}

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

/// Tile table `[n, 3]` = (sequence, first row, end row) and the first tile of each sequence.
fn tiles(cu: &[i32], size: usize) -> (Vec<i32>, Vec<i32>) {
    let mut table = Vec::new();
    let mut first = Vec::with_capacity(cu.len());
    for (b, w) in cu.windows(2).enumerate() {
        first.push((table.len() / 3) as i32);
        let mut r = w[0] as usize;
        while r < w[1] as usize {
            let e = (r + size).min(w[1] as usize);
            table.extend_from_slice(&[b as i32, r as i32, e as i32]);
            r = e;
        }
    }
    first.push((table.len() / 3) as i32);
    (table, first)
}

pub(super) fn forward<T: HalfFloat>(a: &Attention<T>) -> Result<AttentionOut> {
    let dev = a.q.device().clone();
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
    on_device(OP, "k", &dev, a.k)?;
    on_device(OP, "v", &dev, a.v)?;
    on_device(OP, "cu_seqlens_q", &dev, a.cu_seqlens_q)?;
    on_device(OP, "cu_seqlens_kv", &dev, a.cu_seqlens_kv)?;
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
    let cu_q = a.cu_seqlens_q.download()?;
    let cu_kv = a.cu_seqlens_kv.download()?;
    check_cu("cu_seqlens_q", &cu_q, total_q)?;
    check_cu("cu_seqlens_kv", &cu_kv, total_kv)?;
    check_positions(OP, "q_pos", &a.q_pos, &cu_q)?;
    check_positions(OP, "kv_pos", &a.kv_pos, &cu_kv)?;
    if let Positions::Explicit(b) = a.q_pos {
        check_len(&dev, "q_pos", b, total_q)?;
    }
    if let Positions::Explicit(b) = a.kv_pos {
        check_len(&dev, "kv_pos", b, total_kv)?;
    }
    let duo = a.mode == MaskMode::DuoCausal;
    let depths = match (a.q_depth, a.kv_depth) {
        (Some(qd), Some(kd)) if duo => {
            check_len(&dev, "q_depth", qd, total_q)?;
            check_len(&dev, "kv_depth", kd, total_kv)?;
            Some((qd, kd))
        }
        _ if duo => {
            return Err(Error::invalid(
                OP,
                "DuoCausal needs both q_depth and kv_depth",
            ))
        }
        _ => None,
    };
    if let Some(vb) = a.kv_valid {
        check_len(&dev, "kv_valid", vb, total_kv)?;
    }

    if !dev.backend().runs_kernels() {
        return forward_host(a, &dev, &cu_q, &cu_kv, total_q, total_kv, depths);
    }

    let mut o = dev.alloc::<f32>(total_q * h_n * d, "attention.o")?;
    let mut lse = dev.alloc::<f32>(h_n * total_q, "attention.lse")?;
    if total_q == 0 {
        return Ok(AttentionOut { o, lse });
    }
    let (qt, _) = tiles(&cu_q, BLOCK_M);
    let (kt, kt_first) = tiles(&cu_kv, BLOCK_N);
    let (nq, nk) = (qt.len() / 3, kt.len() / 3);
    // Buffers must not be empty for the kernels' pointer arguments: pad the tables by one row.
    let pad = |mut v: Vec<i32>| {
        if v.is_empty() {
            v.push(0);
        }
        v
    };
    let qt_b = dev.upload(&qt, "attention.q_tiles")?;
    let kt_b = dev.upload(&pad(kt), "attention.kv_tiles")?;
    let ktf_b = dev.upload(&kt_first, "attention.kv_tile_first")?;
    let mut qm = dev.alloc::<i32>(nq * 5, "attention.q_meta")?;
    let mut km = dev.alloc::<i32>(nk.max(1) * 5, "attention.kv_meta")?;
    let dummy_i = dev.upload(&[0i32], "attention.none")?;
    let dummy_u = dev.upload(&[1u8], "attention.none")?;
    let pos = |p: &Positions<'_>| -> (i32, u32) {
        match p {
            Positions::Implicit { offset } => (*offset, 0),
            Positions::Explicit(_) => (0, 1),
        }
    };
    let (q_off, has_qp) = pos(&a.q_pos);
    let (kv_off, has_kp) = pos(&a.kv_pos);
    let qp_b: &DeviceBuffer<i32> = match a.q_pos {
        Positions::Explicit(b) => b,
        Positions::Implicit { .. } => &dummy_i,
    };
    let kp_b: &DeviceBuffer<i32> = match a.kv_pos {
        Positions::Explicit(b) => b,
        Positions::Implicit { .. } => &dummy_i,
    };
    let (qd_b, kd_b) = depths.unwrap_or((&dummy_i, &dummy_i));
    let valid_b = a.kv_valid.unwrap_or(&dummy_u);
    let mode: u32 = match a.mode {
        MaskMode::Full => 0,
        MaskMode::Causal => 1,
        MaskMode::DuoCausal => 2,
    };

    let push_positions = |args: &mut KernelArgs| {
        args.buf(a.cu_seqlens_q)
            .buf(a.cu_seqlens_kv)
            .buf(qp_b)
            .buf(kp_b)
            .push(q_off)
            .push(kv_off)
            .push(has_qp)
            .push(has_kp)
            .buf(qd_b)
            .buf(kd_b)
            .push(depths.is_some() as u32)
            .buf(valid_b)
            .push(a.kv_valid.is_some() as u32);
    };

    let mut args = KernelArgs::new();
    args.buf(&qt_b).push(nq as u32).buf(&kt_b).push(nk as u32);
    push_positions(&mut args);
    args.buf_mut(&mut qm).buf_mut(&mut km);
    let blocks = (nq + nk).div_ceil(THREADS as usize) as u32;
    dev.launch(
        MODULE,
        "attn_tile_meta",
        &LaunchConfig::linear(blocks, THREADS, 0),
        &args,
    )?;

    let tc = match a.path {
        Path::Auto | Path::TensorCore => 1u32,
        Path::Scalar => 0,
    };
    let mut args = KernelArgs::new();
    args.buf(a.q)
        .buf(a.k)
        .buf(a.v)
        .buf(&qt_b)
        .buf(&kt_b)
        .buf(&ktf_b)
        .buf(&qm)
        .buf(&km);
    push_positions(&mut args);
    args.push(h_n as u32)
        .push(hk as u32)
        .push(total_q as u32)
        .push(a.scale)
        .push(mode)
        .push(tc)
        .buf_mut(&mut o)
        .buf_mut(&mut lse);
    let name = format!("attn_fwd_{}_d{d}", T::KIND.name());
    dev.launch(
        MODULE,
        &name,
        &LaunchConfig {
            grid: [nq as u32, h_n as u32, 1],
            block: [THREADS, 1, 1],
            shared_bytes: 0,
        },
        &args,
    )?;
    Ok(AttentionOut { o, lse })
}

fn forward_host<T: HalfFloat>(
    a: &Attention<T>,
    dev: &Device,
    cu_q: &[i32],
    cu_kv: &[i32],
    total_q: usize,
    total_kv: usize,
    depths: Option<(&DeviceBuffer<i32>, &DeviceBuffer<i32>)>,
) -> Result<AttentionOut> {
    let f = |b: &DeviceBuffer<T>| -> Result<Vec<f32>> {
        Ok(b.download()?.iter().map(|x| x.to_f32()).collect())
    };
    let (q, k, v) = (f(a.q)?, f(a.k)?, f(a.v)?);
    let q_pos = resolve(&a.q_pos, cu_q, total_q)?;
    let kv_pos = resolve(&a.kv_pos, cu_kv, total_kv)?;
    let (q_depth, kv_depth) = match depths {
        Some((qd, kd)) => (qd.download()?, kd.download()?),
        None => (vec![0; total_q], vec![0; total_kv]),
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
    let o: Vec<f32> = o.iter().map(|&x| x as f32).collect();
    let lse: Vec<f32> = lse.iter().map(|&x| x as f32).collect();
    Ok(AttentionOut {
        o: dev.upload(&o, "attention.o")?,
        lse: dev.upload(&lse, "attention.lse")?,
    })
}
