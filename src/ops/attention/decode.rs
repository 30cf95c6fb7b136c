//! Flash-decoding (split-KV) and the LSE merge: validation, the CPU paths (the f64 reference)
//! and the launches of `cuda/attention/decode.cu` (`attn_decode_split_<dt>`, `attn_merge`).

use super::{
    check_metadata, check_seqlens_host, explain_seqlens, Attention, AttentionOut, DeviceCheck,
    HalfFloat, MaskMode, Partials, Positions,
};
use half::{bf16, f16};

use crate::device::kernel::Grid;
use crate::device::DeviceBuffer;
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, Host};

/// Flash-decoding: each sequence's keys are split into `splits` contiguous ranges, one block
/// per (query, head, split), writing partial (O, LSE).
pub(super) fn decode_partials<T: HalfFloat>(a: &Attention<T>, splits: usize) -> Result<Partials> {
    let g = decode_validate(a, splits)?;
    let dev = a.q.device().clone();
    let (h_n, d) = (a.heads, a.head_dim);
    let o_len = splits * g.total_q * h_n * d;
    let lse_len = splits * h_n * g.total_q;

    if let Some(h) = cpu_path(OP_DECODE, &dev) {
        let (o, lse) = decode_partials_host(h, a, &g, splits)?;
        return Ok(Partials {
            o: dev.upload(&o, "attention.decode.o_part")?,
            lse: dev.upload(&lse, "attention.decode.lse_part")?,
            splits,
            check: DeviceCheck::none(),
        });
    }

    let mut o = dev.alloc::<f32>(o_len, "attention.decode.o_part")?;
    let mut lse = dev.alloc::<f32>(lse_len, "attention.decode.lse_part")?;
    let mut status = dev.alloc::<i32>(STATUS_WORDS, "attention.decode.status")?;
    launch_check(a, &g, &mut status)?;
    if g.total_q > 0 {
        launch_split(a, &g, splits, &status, &mut o, &mut lse)?;
    }
    let check = DeviceCheck::on_device(OP_DECODE, status, explain_seqlens).eager_if_asked()?;
    Ok(Partials {
        o,
        lse,
        splits,
        check,
    })
}

crate::kernels! {
    module = "attention/decode";
    /// Threads 0 and 1 validate the query and key `cu_seqlens` into the status words (launched
    /// as one block of `DECODE_BLOCK`; the source takes any block).
    pub(crate) struct CheckKernel<'a> = "attn_decode_check" block = any {
        cu_q: &'a DeviceBuffer<i32>,
        cu_kv: &'a DeviceBuffer<i32>,
        batch: i32,
        total_q: i32,
        total_kv: i32,
        max_q: i32,
        max_kv: i32,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// One block per (query, kv head x head chunk, split): partial O and LSE.
    pub(crate) struct SplitKernel<'a, T: HalfFloat> = "attn_decode_split" [(f16), (bf16)] block = DECODE_BLOCK {
        q: &'a DeviceBuffer<T>,
        k: &'a DeviceBuffer<T>,
        v: &'a DeviceBuffer<T>,
        cu_q: &'a DeviceBuffer<i32>,
        cu_kv: &'a DeviceBuffer<i32>,
        q_pos: Option<&'a DeviceBuffer<i32>>,
        kv_pos: Option<&'a DeviceBuffer<i32>>,
        q_depth: Option<&'a DeviceBuffer<i32>>,
        kv_depth: Option<&'a DeviceBuffer<i32>>,
        kv_valid: Option<&'a DeviceBuffer<u8>>,
        q_off: i32,
        kv_off: i32,
        mode: i32,
        batch: i32,
        total_q: i32,
        heads: i32,
        kv_heads: i32,
        head_dim: i32,
        splits: i32,
        scale: f32,
        status: &'a DeviceBuffer<i32>,
        o_part: &'a mut DeviceBuffer<f32>,
        lse_part: &'a mut DeviceBuffer<f32>,
    }
    /// One thread per output element: the stable merge of the partials.
    pub(crate) struct MergeKernel<'a> = "attn_merge" block = MERGE_BLOCK {
        o_part: &'a DeviceBuffer<f32>,
        lse_part: &'a DeviceBuffer<f32>,
        splits: i32,
        total_q: i32,
        heads: i32,
        head_dim: i32,
        o: &'a mut DeviceBuffer<f32>,
        lse: &'a mut DeviceBuffer<f32>,
    }
}

/// `attn_decode_check`: one block validates both `cu_seqlens` into the status words.
fn launch_check<T: HalfFloat>(
    a: &Attention<T>,
    g: &DecodeGeom,
    status: &mut DeviceBuffer<i32>,
) -> Result<()> {
    CheckKernel {
        cu_q: a.cu_seqlens_q,
        cu_kv: a.cu_seqlens_kv,
        batch: g.batch as i32,
        total_q: g.total_q as i32,
        total_kv: g.total_kv as i32,
        max_q: g.max_q as i32,
        max_kv: g.max_kv as i32,
        status,
    }
    .launch(a.q.device(), Grid::linear(1).block([DECODE_BLOCK, 1, 1]))
}

/// `attn_decode_split_<dt>`: grid (total_q, kv_heads x head chunks, splits).
fn launch_split<T: HalfFloat>(
    a: &Attention<T>,
    g: &DecodeGeom,
    splits: usize,
    status: &DeviceBuffer<i32>,
    o: &mut DeviceBuffer<f32>,
    lse: &mut DeviceBuffer<f32>,
) -> Result<()> {
    let chunks = (a.heads / a.kv_heads).div_ceil(DECODE_MAX_HEADS);
    let (q_pos, q_off) = a.q_pos.kernel_args();
    let (kv_pos, kv_off) = a.kv_pos.kernel_args();
    let (q_depth, kv_depth) = a.kernel_depths();
    SplitKernel {
        q: a.q,
        k: a.k,
        v: a.v,
        cu_q: a.cu_seqlens_q,
        cu_kv: a.cu_seqlens_kv,
        q_pos,
        kv_pos,
        q_depth,
        kv_depth,
        kv_valid: a.kv_valid,
        q_off,
        kv_off,
        mode: a.mode_code() as i32,
        batch: g.batch as i32,
        total_q: g.total_q as i32,
        heads: a.heads as i32,
        kv_heads: a.kv_heads as i32,
        head_dim: a.head_dim as i32,
        splits: splits as i32,
        scale: a.scale,
        status,
        o_part: o,
        lse_part: lse,
    }
    .launch(
        a.q.device(),
        Grid::dims([
            g.total_q as u32,
            (a.kv_heads * chunks) as u32,
            splits as u32,
        ]),
    )
}

pub(super) fn merge(
    o: &DeviceBuffer<f32>,
    lse: &DeviceBuffer<f32>,
    splits: usize,
    total_q: usize,
    heads: usize,
    head_dim: usize,
) -> Result<AttentionOut> {
    const OP: &str = "attention::merge";
    let dev = o.device().clone();
    on_device(OP, "lse", &dev, lse)?;
    if splits == 0 {
        return Err(Error::invalid(OP, "splits must be >= 1"));
    }
    let rows = total_q
        .checked_mul(heads)
        .filter(|&r| r <= i32::MAX as usize && total_q <= i32::MAX as usize)
        .ok_or_else(|| Error::invalid(OP, format!("{total_q} x {heads} rows are too many")))?;
    let o_len = rows
        .checked_mul(head_dim)
        .and_then(|n| n.checked_mul(splits));
    if o_len != Some(o.len()) {
        return Err(Error::invalid(
            OP,
            format!(
                "o has {} elements, splits {splits} x total_q {total_q} x heads {heads} x \
                 head_dim {head_dim} need {}",
                o.len(),
                o_len.map_or("more than usize".into(), |n| n.to_string())
            ),
        ));
    }
    if Some(lse.len()) != rows.checked_mul(splits) {
        return Err(Error::invalid(
            OP,
            format!(
                "lse has {} elements, splits {splits} x heads {heads} x total_q {total_q} need {}",
                lse.len(),
                rows as u128 * splits as u128
            ),
        ));
    }
    if i32::try_from(splits).is_err() || i32::try_from(head_dim).is_err() {
        return Err(Error::invalid(OP, "splits or head_dim exceed i32"));
    }
    let n = rows * head_dim;

    if let Some(h) = cpu_path(OP, &dev) {
        let (ho, hl) = (h.slice(o)?, h.slice(lse)?);
        let (mo, ml) = merge_host(ho, hl, splits, total_q, heads, head_dim);
        return Ok(AttentionOut {
            o: dev.upload(&mo, "attention.merge.o")?,
            lse: dev.upload(&ml, "attention.merge.lse")?,
            check: DeviceCheck::none(),
        });
    }

    let mut out_o = dev.alloc::<f32>(n, "attention.merge.o")?;
    let mut out_lse = dev.alloc::<f32>(rows, "attention.merge.lse")?;
    if n == 0 {
        if rows > 0 {
            // head_dim 0: only the LSE rows exist; merge them on the host.
            let hl = lse.download()?;
            let (_, ml) = merge_host(&[], &hl, splits, total_q, heads, 0);
            out_lse.upload(&ml)?;
        }
        return Ok(AttentionOut {
            o: out_o,
            lse: out_lse,
            check: DeviceCheck::none(),
        });
    }
    let blocks = u32::try_from((n as u64).div_ceil(MERGE_BLOCK as u64))
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| Error::invalid(OP, format!("{n} elements exceed the largest grid")))?;
    launch_merge(
        o,
        lse,
        [splits, total_q, heads, head_dim],
        blocks,
        &mut out_o,
        &mut out_lse,
    )?;
    Ok(AttentionOut {
        o: out_o,
        lse: out_lse,
        check: DeviceCheck::none(),
    })
}

/// `attn_merge`: one thread per output element. `dims`: splits, total_q, heads, head_dim.
fn launch_merge(
    o: &DeviceBuffer<f32>,
    lse: &DeviceBuffer<f32>,
    dims: [usize; 4],
    blocks: u32,
    out_o: &mut DeviceBuffer<f32>,
    out_lse: &mut DeviceBuffer<f32>,
) -> Result<()> {
    let [splits, total_q, heads, head_dim] = dims.map(|x| x as i32);
    MergeKernel {
        o_part: o,
        lse_part: lse,
        splits,
        total_q,
        heads,
        head_dim,
        o: out_o,
        lse: out_lse,
    }
    .launch(o.device(), Grid::linear(blocks))
}

// ---- decode / merge internals -----------------------------------------------------------------

/// Threads per decode block (kBlock in cuda/attention/decode.cu).
const DECODE_BLOCK: u32 = 128;
/// Query heads of one kv group per decode block (kMaxHeads).
const DECODE_MAX_HEADS: usize = 8;
/// Threads per merge block (kMergeBlock).
const MERGE_BLOCK: u32 = 256;
/// Largest `splits` (grid.z).
const DECODE_MAX_SPLITS: usize = 65_535;
/// Status words of one call (4 per cu_seqlens array, cuda/attention/seqlens.cuh).
const STATUS_WORDS: usize = 8;
const OP_DECODE: &str = "attention::decode";

/// What decode validation establishes.
struct DecodeGeom {
    batch: usize,
    total_q: usize,
    total_kv: usize,
    /// The caller's bounds, clamped to the totals.
    max_q: usize,
    max_kv: usize,
}

/// Validate a decode problem (shapes, metadata lengths, cu_seqlens contents, devices, splits).
fn decode_validate<T: HalfFloat>(a: &Attention<T>, splits: usize) -> Result<DecodeGeom> {
    const OP: &str = "attention::decode";
    let dev = a.q.device();
    on_device(OP, "k", dev, a.k)?;
    on_device(OP, "v", dev, a.v)?;
    on_device(OP, "cu_seqlens_q", dev, a.cu_seqlens_q)?;
    on_device(OP, "cu_seqlens_kv", dev, a.cu_seqlens_kv)?;
    let d = a.head_dim;
    if d != 64 && d != 128 {
        return Err(Error::invalid(
            OP,
            format!("head_dim {d}, supported: 64, 128"),
        ));
    }
    if a.heads == 0 || a.kv_heads == 0 || a.heads % a.kv_heads != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "heads {} must be a positive multiple of kv_heads {}",
                a.heads, a.kv_heads
            ),
        ));
    }
    if a.heads > 65_535 {
        return Err(Error::invalid(
            OP,
            format!("heads {} exceed the kernel's limit 65535", a.heads),
        ));
    }
    if splits == 0 || splits > DECODE_MAX_SPLITS {
        return Err(Error::invalid(
            OP,
            format!("splits {splits}, supported: 1..={DECODE_MAX_SPLITS}"),
        ));
    }
    if !a.scale.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("scale {} is not finite", a.scale),
        ));
    }
    if a.q.len() % (a.heads * d) != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "q has {} elements, not a multiple of heads {} x head_dim {d}",
                a.q.len(),
                a.heads
            ),
        ));
    }
    if a.k.len() != a.v.len() || a.k.len() % (a.kv_heads * d) != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "k has {} and v {} elements; both must be total_kv x kv_heads {} x head_dim {d}",
                a.k.len(),
                a.v.len(),
                a.kv_heads
            ),
        ));
    }
    let total_q = a.q.len() / (a.heads * d);
    let total_kv = a.k.len() / (a.kv_heads * d);
    let lim = i32::MAX as usize;
    if total_q > lim || total_kv > lim || a.heads > 65_535 {
        return Err(Error::invalid(
            OP,
            format!(
                "total_q {total_q}, total_kv {total_kv} or heads {} exceed the kernel's limits",
                a.heads
            ),
        ));
    }
    let (max_q, max_kv) = check_metadata(OP, a, total_q, total_kv)?;
    splits
        .checked_mul(total_q)
        .and_then(|n| n.checked_mul(a.heads * d))
        .ok_or_else(|| Error::invalid(OP, "partial outputs overflow usize"))?;
    Ok(DecodeGeom {
        batch: a.cu_seqlens_q.len() - 1,
        total_q,
        total_kv,
        max_q,
        max_kv,
    })
}

/// Resolve positions to one per token (implicit: index in the sequence + offset, which
/// [`check_positions`] has checked to fit in i32).
fn decode_positions(p: &Positions, cu: &[i32], total: usize) -> Result<Vec<i32>> {
    match p {
        Positions::Explicit(b) => b.download(),
        Positions::Implicit { offset } => {
            let mut out = vec![0i32; total];
            for w in cu.windows(2) {
                for (t, x) in out[w[0] as usize..w[1] as usize].iter_mut().enumerate() {
                    *x = t as i32 + *offset;
                }
            }
            Ok(out)
        }
    }
}

/// CPU path of [`decode_partials`]: the f64 reference on each split's key subset (keys outside
/// the split are masked through `kv_valid`), stored as f32.
fn decode_partials_host<T: HalfFloat>(
    h: Host,
    a: &Attention<T>,
    g: &DecodeGeom,
    splits: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    use crate::reference::attention as r;
    let f = |b: &DeviceBuffer<T>| -> Result<Vec<f32>> {
        Ok(b.download()?.iter().map(|x| x.to_f32()).collect())
    };
    let cu_q = h.slice(a.cu_seqlens_q)?;
    let cu_kv = h.slice(a.cu_seqlens_kv)?;
    check_seqlens_host(
        OP_DECODE,
        cu_q,
        cu_kv,
        (g.total_q, g.total_kv),
        (g.max_q, g.max_kv),
    )?;
    let (q, k, v) = (f(a.q)?, f(a.k)?, f(a.v)?);
    let q_pos = decode_positions(&a.q_pos, cu_q, g.total_q)?;
    let kv_pos = decode_positions(&a.kv_pos, cu_kv, g.total_kv)?;
    let duo = a.mode == MaskMode::DuoCausal;
    let depth = |b: Option<&DeviceBuffer<i32>>, n: usize| -> Result<Vec<i32>> {
        match b {
            Some(b) if duo => b.download(),
            _ => Ok(vec![0; n]),
        }
    };
    let q_depth = depth(a.q_depth, g.total_q)?;
    let kv_depth = depth(a.kv_depth, g.total_kv)?;
    let valid = match a.kv_valid {
        Some(b) => b.download()?,
        None => vec![1u8; g.total_kv],
    };
    let (h_n, d) = (a.heads, a.head_dim);
    let mut o = Vec::with_capacity(splits * g.total_q * h_n * d);
    let mut lse = Vec::with_capacity(splits * h_n * g.total_q);
    let mut split_valid = vec![0u8; g.total_kv];
    for s in 0..splits {
        split_valid.fill(0);
        for w in cu_kv.windows(2) {
            let (k0, len) = (w[0] as usize, (w[1] - w[0]) as usize);
            let (j0, j1) = (k0 + s * len / splits, k0 + (s + 1) * len / splits);
            split_valid[j0..j1].copy_from_slice(&valid[j0..j1]);
        }
        let p = r::Problem {
            q: &q,
            k: &k,
            v: &v,
            heads: h_n,
            kv_heads: a.kv_heads,
            head_dim: d,
            cu_q,
            cu_kv,
            q_pos: &q_pos,
            kv_pos: &kv_pos,
            q_depth: &q_depth,
            kv_depth: &kv_depth,
            kv_valid: &split_valid,
            scale: a.scale,
            mode: a.mode,
        };
        let (so, sl) = r::attention(&p);
        o.extend(so.iter().map(|&x| x as f32));
        lse.extend(sl.iter().map(|&x| x as f32));
    }
    Ok((o, lse))
}

/// CPU path of [`merge`]: the f64 reference in the op's layouts, rounded to f32.
fn merge_host(
    o: &[f32],
    lse: &[f32],
    splits: usize,
    total_q: usize,
    heads: usize,
    head_dim: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (mo, ml) =
        crate::reference::attention::merge_packed(o, lse, splits, total_q, heads, head_dim);
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (f(mo), f(ml))
}
