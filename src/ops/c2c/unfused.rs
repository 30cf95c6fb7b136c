//! The UNFUSED C2C projector: the baseline the fused kernel is benched against, run the way a
//! framework without fusion runs it: separate launches, every intermediate materialised in
//! global memory (kernels in `cuda/c2c/unfused.cu`, the GEMMs by `gemm::dense_into`).
//!
//! Same math, checks and results contract as [`super::fuse`] (per token, K or V):
//!
//! ```text
//! (1)  x = gather(src row, receiver row)                      [M, Kin] in W (converted)
//! (2)  y = x·W_inᵀ (f32);  h = y + b_in (f32), h_w = round_W(h)
//! per FFN block b:
//! (3)  n = round_W(RMSNorm_b(h))                               one block per row
//! (4)  y = n·W1[b]ᵀ (f32);  (5) u = round_W(GELU(y))
//! (6)  y = u·W2[b]ᵀ (f32);  (7) h = h + y, h_w = round_W(h)
//! (8)  s = h_w·W_sᵀ (f32);  (9) p = h_w·W_outᵀ (f32)
//! (10) cache[slot, head, d] += g·sigmoid(s[head])·p[head·Dt + d]   (in the cache's type)
//! ```
//!
//! The RMSNorm here uses the original `w1` and `norm` (the fused kernel folds `norm` into a copy
//! of `w1`); per-block `w1`/`w2` matrices are copied once per projector into the workspace
//! (`gemm::dense` takes whole buffers). A closed gate launches nothing; the CPU path is
//! [`super::fuse`]'s (the reference).

use half::{bf16, f16};

use super::{
    check_call, fuse_host, grow, invalid, kind_code, Cache, CacheMut, HalfFloat, Options,
    Projector, Rows, EPS, OP,
};
use crate::device::kernel::{BitsOf, BitsOfMut, Grid};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::cpu_path;
use crate::ops::gemm::{self, Epilogue};

/// Threads per block of the elementwise kernels.
const THREADS: u32 = 256;
/// Threads per block of the RMSNorm kernel (`kNormThreads`).
const NORM_THREADS: u32 = 256;
/// Grid limit of the grid-stride kernels.
const MAX_BLOCKS: usize = 65_535;

/// Pointwise modes (`kBias`, `kResidual`, `kAct`).
const MODE_BIAS: u32 = 0;
const MODE_RESIDUAL: u32 = 1;
const MODE_ACT: u32 = 2;

crate::kernels! {
    module = "c2c/unfused";
    /// `x [M, Kin] = round_W(concat(src row, receiver row))`, grid-stride.
    pub(crate) struct GatherKernel<'a, T: HalfFloat> = "c2c_gather" [(bf16), (f16)] block = any {
        m: i32,
        kin: i32,
        ks: i32,
        src: BitsOf<'a, u16>,
        src_slots: &'a DeviceBuffer<i32>,
        src_per_block: i32,
        src_block_stride: u64,
        src_pos_stride: u64,
        src_head_stride: u64,
        src_dim: i32,
        src_kind: u32,
        cache: BitsOf<'a, u16>,
        cache_slots: &'a DeviceBuffer<i32>,
        cache_per_block: i32,
        cache_block_stride: u64,
        cache_pos_stride: u64,
        cache_head_stride: u64,
        cache_dim: i32,
        cache_kind: u32,
        x: &'a mut DeviceBuffer<T>,
    }
    /// Bias add, residual add (both: `h32` and its `W` copy) or activation, grid-stride.
    pub(crate) struct PointwiseKernel<'a, T: HalfFloat> = "c2c_pointwise" [(bf16), (f16)] block = any {
        mode: u32,
        total: u64,
        n: u64,
        y: &'a DeviceBuffer<f32>,
        bias: Option<&'a DeviceBuffer<f32>>,
        h32: Option<&'a mut DeviceBuffer<f32>>,
        o: &'a mut DeviceBuffer<T>,
        act: u32,
    }
    /// RMSNorm of `h32` rows times the block's norm weight, in `W`; one block per row.
    pub(crate) struct RmsNormKernel<'a, T: HalfFloat> = "c2c_rmsnorm" [(bf16), (f16)] block = NORM_THREADS {
        m: i32,
        hidden: i32,
        h32: &'a DeviceBuffer<f32>,
        norm: &'a DeviceBuffer<f32>,
        norm_offset: u64,
        eps: f32,
        o: &'a mut DeviceBuffer<T>,
    }
    /// The gated residual into the receiver cache in place, grid-stride.
    pub(crate) struct ScatterKernel<'a> = "c2c_scatter" block = any {
        m: i32,
        ht: i32,
        dt: i32,
        ys: &'a DeviceBuffer<f32>,
        proj: &'a DeviceBuffer<f32>,
        gate: f32,
        cache: BitsOfMut<'a, u16>,
        slots: &'a DeviceBuffer<i32>,
        per_block: i32,
        block_stride: u64,
        pos_stride: u64,
        head_stride: u64,
        kind: u32,
    }
}

/// Device scratch of the unfused projector: every intermediate, sized exactly for the last
/// call's token count and dims, and the per-block FFN weights of the last projector used.
pub struct UnfusedWorkspace<T: DType> {
    x: Option<DeviceBuffer<T>>,
    y_hidden: Option<DeviceBuffer<f32>>,
    h32: Option<DeviceBuffer<f32>>,
    h16: Option<DeviceBuffer<T>>,
    normed: Option<DeviceBuffer<T>>,
    y_ffn: Option<DeviceBuffer<f32>>,
    u: Option<DeviceBuffer<T>>,
    y_s: Option<DeviceBuffer<f32>>,
    y_out: Option<DeviceBuffer<f32>>,
    blocks: Vec<(DeviceBuffer<T>, DeviceBuffer<T>)>,
    blocks_of: Option<u64>,
}

impl<T: DType> Default for UnfusedWorkspace<T> {
    fn default() -> Self {
        UnfusedWorkspace {
            x: None,
            y_hidden: None,
            h32: None,
            h16: None,
            normed: None,
            y_ffn: None,
            u: None,
            y_s: None,
            y_out: None,
            blocks: Vec::new(),
            blocks_of: None,
        }
    }
}

/// `b` of exactly `len` elements on `dev` (`gemm::dense_into` takes exact outputs).
fn exact<E: DType>(
    dev: &Device,
    b: &mut Option<DeviceBuffer<E>>,
    len: usize,
    label: &str,
) -> Result<()> {
    if b.as_ref().is_some_and(|x| x.len() != len.max(1)) {
        *b = None;
    }
    grow(dev, b, len, label)
}

impl<T: HalfFloat> UnfusedWorkspace<T> {
    /// An empty workspace.
    pub fn new() -> UnfusedWorkspace<T> {
        UnfusedWorkspace::default()
    }

    fn ensure(&mut self, p: &Projector<T>, m: usize) -> Result<()> {
        let d = p.dims;
        let dev = p.device();
        exact(dev, &mut self.x, m * d.k_in(), "c2c.unfused.x")?;
        exact(
            dev,
            &mut self.y_hidden,
            m * d.hidden,
            "c2c.unfused.y_hidden",
        )?;
        exact(dev, &mut self.h32, m * d.hidden, "c2c.unfused.h32")?;
        exact(dev, &mut self.h16, m * d.hidden, "c2c.unfused.h16")?;
        exact(dev, &mut self.normed, m * d.hidden, "c2c.unfused.normed")?;
        exact(dev, &mut self.y_ffn, m * d.ffn, "c2c.unfused.y_ffn")?;
        exact(dev, &mut self.u, m * d.ffn, "c2c.unfused.u")?;
        exact(dev, &mut self.y_s, m * d.ht, "c2c.unfused.y_s")?;
        exact(dev, &mut self.y_out, m * d.k_out(), "c2c.unfused.y_out")?;
        // Per-block FFN matrices (one block: the projector's own buffers are used).
        if d.blocks > 1 && self.blocks_of != Some(p.id) {
            self.blocks.clear();
            let per = d.ffn * d.hidden;
            for b in 0..d.blocks {
                let mut w1 = dev.alloc::<T>(per, "c2c.unfused.w1")?;
                w1.copy_range_from(0, &p.w1, b * per, per)?;
                let mut w2 = dev.alloc::<T>(per, "c2c.unfused.w2")?;
                w2.copy_range_from(0, &p.w2, b * per, per)?;
                self.blocks.push((w1, w2));
            }
            self.blocks_of = Some(p.id);
        }
        Ok(())
    }
}

fn grid(total: usize) -> Grid {
    Grid::linear(total.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32)
        .block([THREADS, 1, 1])
}

/// [`super::fuse`] as the unfused baseline (see the module docs): the same checks, errors and
/// results contract (the fused rows within the half-precision tolerance of the reference, every
/// other cache element untouched, a closed gate launches nothing and returns `false`).
pub fn fuse_unfused<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
    p: &Projector<W>,
    src: &Cache<S>,
    cache: &mut CacheMut<C>,
    rows: &Rows,
    opts: &Options,
    ws: &mut UnfusedWorkspace<W>,
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
    ws.ensure(p, m)?;
    let UnfusedWorkspace {
        x: Some(x),
        y_hidden: Some(y_hidden),
        h32: Some(h32),
        h16: Some(h16),
        normed: Some(normed),
        y_ffn: Some(y_ffn),
        u: Some(u),
        y_s: Some(y_s),
        y_out: Some(y_out),
        blocks,
        ..
    } = ws
    else {
        return Err(invalid("unfused workspace not allocated"));
    };
    let (sl, cl) = (src.layout, cache.layout);
    let none = Epilogue::<f32>::new();
    // (1) the concatenated x.
    GatherKernel::<W> {
        m: m as i32,
        kin: d.k_in() as i32,
        ks: (d.hs * d.ds) as i32,
        src: BitsOf::<u16>::of(src.data).ok_or_else(|| invalid("sharer cache is not 16-bit"))?,
        src_slots: &rows.src,
        src_per_block: sl.per_block as i32,
        src_block_stride: sl.block_stride as u64,
        src_pos_stride: sl.pos_stride as u64,
        src_head_stride: sl.head_stride as u64,
        src_dim: sl.head_dim as i32,
        src_kind: kind_code(S::KIND),
        cache: BitsOf::<u16>::of(&*cache.data)
            .ok_or_else(|| invalid("receiver cache is not 16-bit"))?,
        cache_slots: &rows.tgt,
        cache_per_block: cl.per_block as i32,
        cache_block_stride: cl.block_stride as u64,
        cache_pos_stride: cl.pos_stride as u64,
        cache_head_stride: cl.head_stride as u64,
        cache_dim: cl.head_dim as i32,
        cache_kind: kind_code(C::KIND),
        x: &mut *x,
    }
    .launch(&dev, grid(m * d.k_in()))?;
    // (2) h = x·W_inᵀ + b_in.
    gemm::dense_into(x, &p.w_in, m, d.hidden, d.k_in(), &none, y_hidden)?;
    PointwiseKernel::<W> {
        mode: MODE_BIAS,
        total: (m * d.hidden) as u64,
        n: d.hidden as u64,
        y: &*y_hidden,
        bias: Some(&p.b_in),
        h32: Some(&mut *h32),
        o: &mut *h16,
        act: 0,
    }
    .launch(&dev, grid(m * d.hidden))?;
    for b in 0..d.blocks {
        let (w1, w2) = match blocks.get(b) {
            Some((w1, w2)) if d.blocks > 1 => (w1, w2),
            _ => (&p.w1, &p.w2),
        };
        // (3) RMSNorm.
        RmsNormKernel::<W> {
            m: m as i32,
            hidden: d.hidden as i32,
            h32: &*h32,
            norm: &p.norm,
            norm_offset: (b * d.hidden) as u64,
            eps: EPS as f32,
            o: &mut *normed,
        }
        .launch(
            &dev,
            Grid::linear(m.clamp(1, MAX_BLOCKS) as u32).block([NORM_THREADS, 1, 1]),
        )?;
        // (4) up, (5) GELU.
        gemm::dense_into(normed, w1, m, d.ffn, d.hidden, &none, y_ffn)?;
        PointwiseKernel::<W> {
            mode: MODE_ACT,
            total: (m * d.ffn) as u64,
            n: d.ffn as u64,
            y: &*y_ffn,
            bias: None,
            h32: None,
            o: &mut *u,
            act: opts.gelu.code(),
        }
        .launch(&dev, grid(m * d.ffn))?;
        // (6) down, (7) residual.
        gemm::dense_into(u, w2, m, d.hidden, d.ffn, &none, y_hidden)?;
        PointwiseKernel::<W> {
            mode: MODE_RESIDUAL,
            total: (m * d.hidden) as u64,
            n: d.hidden as u64,
            y: &*y_hidden,
            bias: None,
            h32: Some(&mut *h32),
            o: &mut *h16,
            act: 0,
        }
        .launch(&dev, grid(m * d.hidden))?;
    }
    // (8) gate logits, (9) projection, (10) the gated residual in place.
    gemm::dense_into(h16, &p.w_s, m, d.ht, d.hidden, &none, y_s)?;
    gemm::dense_into(h16, &p.w_out, m, d.k_out(), d.hidden, &none, y_out)?;
    ScatterKernel {
        m: m as i32,
        ht: d.ht as i32,
        dt: d.dt as i32,
        ys: y_s,
        proj: y_out,
        gate: g,
        cache: BitsOfMut::<u16>::of(cache.data)
            .ok_or_else(|| invalid("receiver cache is not 16-bit"))?,
        slots: &rows.tgt,
        per_block: cl.per_block as i32,
        block_stride: cl.block_stride as u64,
        pos_stride: cl.pos_stride as u64,
        head_stride: cl.head_stride as u64,
        kind: kind_code(C::KIND),
    }
    .launch(&dev, grid(m * d.k_out()))?;
    Ok(true)
}
