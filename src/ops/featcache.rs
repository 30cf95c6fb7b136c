//! SpecDiff feature cache (issue 14): the attention each key received ([`received`]), the
//! three-class token selection ([`select`]), and the per-token feature ring with its ops
//! ([`Ring`], [`gather`], [`scatter`], [`reuse`], [`age`]; module [`ring`]). Semantics and the
//! reference: [`crate::reference::featcache`]; kernels: `cuda/featcache/received.cu`,
//! `cuda/featcache/select.cu`, `cuda/featcache/ring.cu`.
//!
//! ## `received`
//!
//! `received[h, k] = Σ_q exp(scale·q·k − lse[h, q])` over the queries `q` that see key `k` under
//! `attention.forward`'s mask (the same problem descriptor, [`Attention`]), from Q, K and the row
//! LSE that `attention.forward` returns; P is never materialised and V is not read. Summed over
//! heads in head order, or kept per head. f32 accumulation, deterministic (fixed summation
//! order, no atomics).
//!
//! ## `select`
//!
//! `score = his · fut · exp(cf)` in f64 (`exp(cf)` from a table of [`EXP_TABLE_LEN`] values that
//! the host computes with [`crate::reference::featcache::exp_cf`], so that device and reference
//! agree bit for bit), ordered by (score descending, index ascending); C1 = the first
//! `N − floor(cr·N)`, C2 = the longest run at the end outside C1 whose f64 sum from the end is
//! `<= low_mass · total`, C3 = the rest. The ranks are O(N) compares per token (O(N²) in all):
//! fine for the token counts of a DiT step (thousands); a sort replaces it when larger N matter.

use crate::device::kernel::Grid;
use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::attention::{Attention, HalfFloat};
use crate::ops::{cpu_path, on_device, DeviceCheck};
use crate::reference::featcache as reference;

pub mod ring;
pub use ring::{age, gather, reuse, scatter, Ring, RING};
pub(crate) mod received;

/// The op name in errors.
pub const OP: &str = "featcache.select";
/// `featcache.received`'s name in errors.
pub const RECEIVED_OP: &str = received::OP;

/// `featcache.received`: the attention each key received, `Σ_q P[q, k]` with `P[q, k] =
/// exp(scale·q·k − lse[h, q])` over the queries that see key `k` under `a`'s mask (exactly
/// `attention.forward`'s: modes, varlen `cu_seqlens`, positions, depths, `kv_valid`, GQA), from
/// `a.q`, `a.k` and `lse` (`[H, total_q]` f32, natural log: `AttentionOut::lse`; a row with
/// `lse = −inf` saw no key and adds nothing; a NaN `lse` gives NaN to the keys its row sees).
/// `a.v` is not read. Returns `[total_kv]` (summed over the heads in head order) or, with
/// `per_head`, `[H, total_kv]`, f32.
///
/// Errors ([`Error::InvalidArgument`] naming `featcache.received`): every check of
/// `attention.forward` (head_dim not 64 or 128, heads not a multiple of kv_heads, lengths,
/// positions, depths, `kv_valid`, the `cu_seqlens` contents: read back from the device before
/// returning), and `lse` not of `H · total_q` elements.
pub fn received<T: HalfFloat>(
    a: &Attention<T>,
    lse: &DeviceBuffer<f32>,
    per_head: bool,
) -> Result<DeviceBuffer<f32>> {
    received::received(a, lse, per_head)
}
/// Entries of the `exp(cf)` table: `cf` must be below it.
pub const EXP_TABLE_LEN: usize = 256;
/// Threads per block (`kThreads`).
const THREADS: u32 = 256;
/// Blocks of the rank kernel at most.
const MAX_BLOCKS: usize = 1024;

crate::kernels! {
    module = "featcache/select";
    /// Ranks in the order and the input check (grid-stride).
    pub(crate) struct RankKernel<'a> = "featcache_rank" block = THREADS {
        his: &'a DeviceBuffer<f32>,
        fut: &'a DeviceBuffer<f32>,
        cf: &'a DeviceBuffer<u32>,
        exp_table: &'a DeviceBuffer<u64>,
        table_len: u32,
        n: u32,
        order: &'a mut DeviceBuffer<u32>,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// The classes and the C1 list from the order (one block).
    pub(crate) struct ClassesKernel<'a> = "featcache_classes" block = THREADS {
        his: &'a DeviceBuffer<f32>,
        fut: &'a DeviceBuffer<f32>,
        cf: &'a DeviceBuffer<u32>,
        exp_table: &'a DeviceBuffer<u64>,
        table_len: u32,
        n: u32,
        n1: u32,
        low_mass_bits: u64,
        order: &'a DeviceBuffer<u32>,
        cls: &'a mut DeviceBuffer<u8>,
        c1: &'a mut DeviceBuffer<u32>,
        status: &'a mut DeviceBuffer<i32>,
    }
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, msg)
}

/// The result of [`select`].
pub struct Selected {
    /// Per token: 1 recompute (C1), 2 reuse the last feature (C2), 3 weighted reuse (C3).
    pub class: DeviceBuffer<u8>,
    /// The C1 tokens in the order (score descending, index ascending).
    pub c1: DeviceBuffer<u32>,
}

/// The three classes of the tokens scored by `his`, `fut` (f32, finite, >= 0) and `cf` (the
/// cache counts, < [`EXP_TABLE_LEN`]), with cache ratio `cr` and `low_mass` (both in [0, 1]).
///
/// Errors ([`Error::InvalidArgument`] naming `featcache.select`): lengths that differ, `cr` or
/// `low_mass` outside [0, 1], a NaN, infinite or negative score input or a `cf` past the table
/// (found on the device and read back before returning), more than `u32::MAX` tokens.
pub fn select(
    his: &DeviceBuffer<f32>,
    fut: &DeviceBuffer<f32>,
    cf: &DeviceBuffer<u32>,
    cr: f64,
    low_mass: f64,
) -> Result<Selected> {
    let dev = his.device().clone();
    let n = his.len();
    if fut.len() != n || cf.len() != n {
        return Err(invalid(format!(
            "mismatched lengths: his {n}, fut {}, cf {}",
            fut.len(),
            cf.len()
        )));
    }
    for (what, v) in [("cr", cr), ("low_mass", low_mass)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(invalid(format!("{what} = {v} is outside [0, 1]")));
        }
    }
    if n > u32::MAX as usize {
        return Err(invalid(format!("{n} tokens exceed u32::MAX")));
    }
    on_device(OP, "fut", &dev, fut)?;
    on_device(OP, "cf", &dev, cf)?;
    let n1 = reference::c1_count(n, cr);
    let mut class = dev.alloc::<u8>(n, "featcache.class")?;
    let mut c1 = dev.alloc::<u32>(n1, "featcache.c1")?;
    if let Some(h) = cpu_path(OP, &dev) {
        let (hs, fs, cs) = (h.slice(his)?, h.slice(fut)?, h.slice(cf)?);
        if let Some((i, &c)) = cs
            .iter()
            .enumerate()
            .find(|(_, &c)| c as usize >= EXP_TABLE_LEN)
        {
            return Err(bad_cf(i, c));
        }
        let s = reference::score(hs, fs, cs).map_err(invalid)?;
        let sel = reference::select(&s, cr, low_mass).map_err(invalid)?;
        h.slice_mut(&mut class)?.copy_from_slice(&sel.class);
        h.slice_mut(&mut c1)?.copy_from_slice(&sel.c1);
        return Ok(Selected { class, c1 });
    }
    if n == 0 {
        return Ok(Selected { class, c1 });
    }
    // f64 values travel as their bits.
    let table: Vec<u64> = (0..EXP_TABLE_LEN as u32)
        .map(|c| reference::exp_cf(c).to_bits())
        .collect();
    let table = dev.upload(&table, "featcache.exp_table")?;
    let mut order = dev.alloc::<u32>(n, "featcache.order")?;
    let mut status = dev.upload(&[0i32, i32::MAX], "featcache.status")?;
    let blocks = n.div_ceil(THREADS as usize).min(MAX_BLOCKS) as u32;
    RankKernel {
        his,
        fut,
        cf,
        exp_table: &table,
        table_len: EXP_TABLE_LEN as u32,
        n: n as u32,
        order: &mut order,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(blocks))?;
    ClassesKernel {
        his,
        fut,
        cf,
        exp_table: &table,
        table_len: EXP_TABLE_LEN as u32,
        n: n as u32,
        n1: n1 as u32,
        low_mass_bits: low_mass.to_bits(),
        order: &order,
        cls: &mut class,
        c1: &mut c1,
        status: &mut status,
    }
    .launch(&dev, Grid::linear(1))?;
    DeviceCheck::on_device(OP, status, explain).check()?;
    Ok(Selected { class, c1 })
}

fn bad_cf(i: usize, c: u32) -> Error {
    invalid(format!(
        "cf[{i}] = {c} is past the exp table ({EXP_TABLE_LEN} entries)"
    ))
}

/// The verdict of the status words `[code, first index]`.
fn explain(op: &'static str, w: &[i32]) -> Result<()> {
    match w {
        [0, ..] => Ok(()),
        &[c @ (1 | 2), i] => Err(Error::invalid(
            op,
            format!(
                "{}[{i}] is not a finite non-negative score (NaN, infinite or negative)",
                if c == 1 { "his" } else { "fut" }
            ),
        )),
        &[3, i] => Err(Error::invalid(
            op,
            format!("cf[{i}] is past the exp table ({EXP_TABLE_LEN} entries)"),
        )),
        _ => Err(Error::invalid(op, format!("unknown device status {w:?}"))),
    }
}

/// Run on `dev` (for the verify rows and the tests): upload, select, download.
pub fn select_host(
    dev: &Device,
    his: &[f32],
    fut: &[f32],
    cf: &[u32],
    cr: f64,
    low_mass: f64,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let s = select(
        &dev.upload(his, "his")?,
        &dev.upload(fut, "fut")?,
        &dev.upload(cf, "cf")?,
        cr,
        low_mass,
    )?;
    Ok((s.class.download()?, s.c1.download()?))
}
