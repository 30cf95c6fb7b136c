//! GEMM with fused epilogues: `D = epilogue(A·Bᵀ)`, dense ([`dense`]) and grouped over row
//! segments given by device offsets ([`grouped`], [`grouped_swiglu`]: the expert GEMMs of a MoE
//! layer).
//!
//! `A [M, K]` and `B [N, K]` are row-major in bf16 or f16 (one type `T`), accumulated in f32;
//! the output `D [M, N]` is row-major in f32, bf16 or f16 (`O`, rounded to nearest even). The
//! [`Epilogue`] runs per element, in f32, in this fixed order:
//!
//! 1. `x = acc + bias[n]` (optional bias, f32);
//! 2. `x = act(x)` ([`Activation`]) — or, with SwiGLU, `x = silu(acc_gate + bias[n]) ·
//!    (acc_up + bias[N + n])`;
//! 3. `x = x · row_scale[m]` (optional, f32 `[M]`);
//! 4. `x = x + residual[m, n]` (optional, type `O`, `[M, N]`);
//! 5. `D[m, n] = round_O(x)`.
//!
//! SwiGLU pairs two B matrices: the public ops take one B of `[2N, K]` (rows `[0, N)` the gate,
//! `[N, 2N)` the up projection); [`grouped_swiglu`] takes them as two buffers. The kernel reads
//! them through two pointers either way.
//!
//! Grouped semantics: `offsets` `[G + 1]` (int32, on the device) splits the rows; group `g` covers
//! rows `offsets[g]..offsets[g + 1]` of A and D and uses `B[g]`. Offsets must satisfy
//! `offsets[0] >= 0`, non-decreasing, `offsets[G] <= M`; empty groups are fine. Rows outside
//! every group (`[0, offsets[0])` and `[offsets[G], M)`) are written 0 (no epilogue). The sizes
//! are never copied to the host: the grid has `ceil(M / 128) + G` row-tile slots and each block
//! finds its (group, tile) from the offsets on the device; the offsets are validated there into
//! a status word ([`DeviceCheck`]: [`grouped`] reads it before returning, [`grouped_deferred`]
//! leaves it to the caller). Invalid offsets are clamped before any use, so they never cause an
//! out-of-bounds access; the output of such a call is unspecified.
//!
//! Kernels: `cuda/gemm/gemm.cu` (mma.sync + ldmatrix on CUDA, MFMA on HIP, cp.async double
//! buffering on sm_80+). Reference and CPU path: [`crate::reference::gemm`]. See docs/gemm.md.

use half::{bf16, f16};

use crate::device::kernel::Grid;
use crate::device::{Device, DeviceBuffer};
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, DeviceCheck, Host};
use crate::reference::gemm as reference;

pub use crate::ops::attention::HalfFloat;
pub use crate::reference::gemm::Activation;

/// Threads per block (`kThreads`).
const THREADS: u32 = 256;
/// Rows per block tile (`kBM`).
pub const BLOCK_M: usize = 128;
/// Accumulator columns per block tile (`kBN`); output columns per tile are half of it with
/// SwiGLU.
pub const BLOCK_N: usize = 128;
/// Status words of a grouped call.
const STATUS_WORDS: usize = 4;
/// Grid y limit.
const MAX_GRID_Y: usize = 65_535;

/// Output element types: f32, bf16, f16.
pub trait GemmOutput: Float {
    /// `x` rounded to this type (nearest even), as the kernels round.
    fn from_f32(x: f32) -> Self;
}
impl GemmOutput for f32 {
    fn from_f32(x: f32) -> f32 {
        x
    }
}
impl GemmOutput for bf16 {
    fn from_f32(x: f32) -> bf16 {
        bf16::from_f32(x)
    }
}
impl GemmOutput for f16 {
    fn from_f32(x: f32) -> f16 {
        f16::from_f32(x)
    }
}

/// The fused epilogue of a GEMM (see the module docs for the order). Build it with
/// [`Epilogue::new`] and the setters; the default is none of them.
pub struct Epilogue<'a, O: DType> {
    /// f32 `[N]` (`[2N]` with SwiGLU: gate then up); for grouped calls also `[G, N]`
    /// (`[G, 2N]`): one row per group.
    pub bias: Option<&'a DeviceBuffer<f32>>,
    /// Applied after the bias; must be [`Activation::None`] with SwiGLU.
    pub activation: Activation,
    /// f32 `[M]`: each row's result is multiplied by it.
    pub row_scale: Option<&'a DeviceBuffer<f32>>,
    /// `[M, N]` in the output type, added last.
    pub residual: Option<&'a DeviceBuffer<O>>,
    /// SwiGLU pairing: B holds `2N` rows (gate, then up); `D = silu(A·gateᵀ)·(A·upᵀ)`.
    pub swiglu: bool,
}

impl<O: DType> Clone for Epilogue<'_, O> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<O: DType> Copy for Epilogue<'_, O> {}
impl<O: DType> Default for Epilogue<'_, O> {
    fn default() -> Self {
        Epilogue {
            bias: None,
            activation: Activation::None,
            row_scale: None,
            residual: None,
            swiglu: false,
        }
    }
}
impl<O: DType> std::fmt::Debug for Epilogue<'_, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epilogue")
            .field("bias", &self.bias.map(|b| b.len()))
            .field("activation", &self.activation)
            .field("row_scale", &self.row_scale.map(|b| b.len()))
            .field("residual", &self.residual.map(|b| b.len()))
            .field("swiglu", &self.swiglu)
            .finish()
    }
}

impl<'a, O: DType> Epilogue<'a, O> {
    /// No epilogue: `D = A·Bᵀ`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add `bias` (f32) before the activation.
    pub fn bias(mut self, bias: &'a DeviceBuffer<f32>) -> Self {
        self.bias = Some(bias);
        self
    }
    /// Apply `act` after the bias.
    pub fn activation(mut self, act: Activation) -> Self {
        self.activation = act;
        self
    }
    /// Multiply row `m` by `scale[m]` after the activation.
    pub fn row_scale(mut self, scale: &'a DeviceBuffer<f32>) -> Self {
        self.row_scale = Some(scale);
        self
    }
    /// Add `residual` `[M, N]` last.
    pub fn residual(mut self, residual: &'a DeviceBuffer<O>) -> Self {
        self.residual = Some(residual);
        self
    }
    /// SwiGLU pairing of the two B halves.
    pub fn swiglu(mut self) -> Self {
        self.swiglu = true;
        self
    }
}

crate::kernels! {
    module = "gemm/gemm";
    /// Dense or grouped (offsets non-null) tensor-core GEMM with the fused epilogue.
    pub(crate) struct GemmKernel<'a, T: HalfFloat, O: GemmOutput> = "gemm"
        [(bf16, f32), (bf16, bf16), (bf16, f16), (f16, f32), (f16, bf16), (f16, f16)]
        block = THREADS {
        a: &'a DeviceBuffer<T>,
        gate: &'a DeviceBuffer<T>,
        up: &'a DeviceBuffer<T>,
        up_offset: u64,
        b_group_stride: u64,
        offsets: Option<&'a DeviceBuffer<i32>>,
        groups: u32,
        m: i32,
        n: i32,
        k: i32,
        bias: Option<&'a DeviceBuffer<f32>>,
        bias_group_stride: u64,
        row_scale: Option<&'a DeviceBuffer<f32>>,
        residual: Option<&'a DeviceBuffer<O>>,
        act: u32,
        swiglu: u32,
        vec: u32,
        d: &'a mut DeviceBuffer<O>,
        status: Option<&'a mut DeviceBuffer<i32>>,
    }
}

/// The B operand(s): one buffer (gate and up halves of each group's rows with SwiGLU), or two.
#[derive(Clone, Copy)]
enum Bs<'a, T: DType> {
    One(&'a DeviceBuffer<T>),
    Two {
        gate: &'a DeviceBuffer<T>,
        up: &'a DeviceBuffer<T>,
    },
}

/// A validated problem.
struct Problem<'a, T: DType, O: DType> {
    op: &'static str,
    dev: Device,
    a: &'a DeviceBuffer<T>,
    b: Bs<'a, T>,
    offsets: Option<&'a DeviceBuffer<i32>>,
    groups: usize,
    m: usize,
    n: usize,
    k: usize,
    epi: Epilogue<'a, O>,
    bias_per_group: bool,
}

fn invalid(op: &'static str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(op, msg)
}

/// `x · y` or an error naming `what`.
fn mul(op: &'static str, what: &str, x: usize, y: usize) -> Result<usize> {
    x.checked_mul(y)
        .ok_or_else(|| invalid(op, format!("{what} = {x}·{y} overflows")))
}

fn want_len<E: DType>(
    op: &'static str,
    what: &str,
    b: &DeviceBuffer<E>,
    want: usize,
    shape: &str,
) -> Result<()> {
    if b.len() != want {
        return Err(invalid(
            op,
            format!("{what} has {} elements, want {want} ({shape})", b.len()),
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn validate<'a, T: HalfFloat, O: GemmOutput>(
    op: &'static str,
    a: &'a DeviceBuffer<T>,
    b: Bs<'a, T>,
    offsets: Option<&'a DeviceBuffer<i32>>,
    m: usize,
    n: usize,
    k: usize,
    epi: &Epilogue<'a, O>,
) -> Result<Problem<'a, T, O>> {
    let dev = a.device().clone();
    for (what, x) in [("M", m), ("N", n), ("K", k)] {
        if x > i32::MAX as usize {
            return Err(invalid(op, format!("{what} = {x} exceeds i32::MAX")));
        }
    }
    let swiglu = epi.swiglu || matches!(b, Bs::Two { .. });
    if swiglu && epi.activation != Activation::None {
        return Err(invalid(
            op,
            format!(
                "SwiGLU is the activation: activation must be none, got {}",
                epi.activation.name()
            ),
        ));
    }
    let groups = match offsets {
        None => 1,
        Some(o) => {
            on_device(op, "offsets", &dev, o)?;
            if o.is_empty() {
                return Err(invalid(op, "offsets must have G + 1 >= 1 entries"));
            }
            if o.len() - 1 > i32::MAX as usize {
                return Err(invalid(op, "more than i32::MAX groups"));
            }
            o.len() - 1
        }
    };
    want_len(op, "a", a, mul(op, "M·K", m, k)?, "[M, K]")?;
    // Rows of B per group.
    let b_rows = if swiglu { mul(op, "2·N", 2, n)? } else { n };
    let grouped = offsets.is_some();
    match b {
        Bs::One(b) => {
            on_device(op, "b", &dev, b)?;
            let per = mul(op, "rows of B · K", b_rows, k)?;
            let (want, shape) = if grouped {
                (
                    mul(op, "G·rows·K", groups, per)?,
                    if swiglu { "[G, 2·N, K]" } else { "[G, N, K]" },
                )
            } else {
                (per, if swiglu { "[2·N, K]" } else { "[N, K]" })
            };
            want_len(op, "b", b, want, shape)?;
        }
        Bs::Two { gate, up } => {
            on_device(op, "gate", &dev, gate)?;
            on_device(op, "up", &dev, up)?;
            let want = mul(op, "G·F·K", groups, mul(op, "F·K", n, k)?)?;
            want_len(op, "gate", gate, want, "[G, F, K]")?;
            want_len(op, "up", up, want, "[G, F, K]")?;
        }
    }
    let mut bias_per_group = false;
    if let Some(bias) = epi.bias {
        on_device(op, "bias", &dev, bias)?;
        let shape = if swiglu { "[2·N]" } else { "[N]" };
        if bias.len() == b_rows {
        } else if grouped && Some(bias.len()) == groups.checked_mul(b_rows) {
            bias_per_group = true;
        } else {
            return Err(invalid(
                op,
                format!(
                    "bias has {} elements, want {b_rows} ({shape}){}",
                    bias.len(),
                    if grouped {
                        format!(" or {} (one row per group)", groups.saturating_mul(b_rows))
                    } else {
                        String::new()
                    }
                ),
            ));
        }
    }
    if let Some(s) = epi.row_scale {
        on_device(op, "row_scale", &dev, s)?;
        want_len(op, "row_scale", s, m, "[M]")?;
    }
    let mn = mul(op, "M·N", m, n)?;
    if let Some(r) = epi.residual {
        on_device(op, "residual", &dev, r)?;
        want_len(op, "residual", r, mn, "[M, N]")?;
    }
    let cols = if swiglu { BLOCK_N / 2 } else { BLOCK_N };
    if n.div_ceil(cols) > MAX_GRID_Y {
        return Err(invalid(
            op,
            format!("N = {n} needs more than {MAX_GRID_Y} column tiles of {cols}"),
        ));
    }
    let slots = m.div_ceil(BLOCK_M) + if grouped { groups } else { 0 };
    if slots > i32::MAX as usize {
        return Err(invalid(
            op,
            format!("{slots} row-tile slots exceed the grid"),
        ));
    }
    let mut epi = *epi;
    epi.swiglu = swiglu;
    Ok(Problem {
        op,
        dev,
        a,
        b,
        offsets,
        groups,
        m,
        n,
        k,
        epi,
        bias_per_group,
    })
}

/// The CPU path, or the launch; the returned check is pending for grouped device calls only.
fn run<T: HalfFloat, O: GemmOutput>(
    p: &Problem<T, O>,
    d: &mut DeviceBuffer<O>,
) -> Result<DeviceCheck> {
    want_len(p.op, "d", d, p.m * p.n, "[M, N]")?;
    on_device(p.op, "d", &p.dev, d)?;
    if let Some(h) = cpu_path(p.op, &p.dev) {
        run_host(h, p, d)?;
        return Ok(DeviceCheck::none());
    }
    let (gate, up, up_offset, b_group_stride) = match p.b {
        Bs::One(b) => {
            let rows = if p.epi.swiglu { 2 * p.n } else { p.n };
            (b, b, (p.n * p.k) as u64, (rows * p.k) as u64)
        }
        Bs::Two { gate, up } => (gate, up, 0, (p.n * p.k) as u64),
    };
    let bias_stride = if p.bias_per_group {
        (if p.epi.swiglu { 2 * p.n } else { p.n }) as u64
    } else {
        0
    };
    // 16-byte copies need K % 8 == 0 (every row, group and the up half then start 16-byte
    // aligned when the buffers do).
    let vec = p.k % 8 == 0
        && [p.a.addr(), gate.addr(), up.addr()]
            .iter()
            .all(|x| x % 16 == 0);
    let cols = if p.epi.swiglu { BLOCK_N / 2 } else { BLOCK_N };
    let ntiles = p.n.div_ceil(cols);
    let grouped = p.offsets.is_some();
    let slots = p.m.div_ceil(BLOCK_M) + if grouped { p.groups } else { 0 };
    let mut status = if grouped {
        Some(p.dev.alloc::<i32>(STATUS_WORDS, "gemm.status")?)
    } else {
        None
    };
    // A dense call with nothing to compute launches nothing; a grouped one always launches
    // (block (0, 0) validates the offsets).
    if grouped || (slots > 0 && ntiles > 0) {
        GemmKernel::<T, O> {
            a: p.a,
            gate,
            up,
            up_offset,
            b_group_stride,
            offsets: p.offsets,
            groups: p.groups as u32,
            m: p.m as i32,
            n: p.n as i32,
            k: p.k as i32,
            bias: p.epi.bias,
            bias_group_stride: bias_stride,
            row_scale: p.epi.row_scale,
            residual: p.epi.residual,
            act: p.epi.activation.code(),
            swiglu: p.epi.swiglu as u32,
            vec: vec as u32,
            d,
            status: status.as_mut(),
        }
        .launch(
            &p.dev,
            Grid::dims([slots.max(1) as u32, ntiles.max(1) as u32, 1]),
        )?;
    }
    match status {
        Some(s) => DeviceCheck::on_device(p.op, s, explain_status).eager_if_asked(),
        None => Ok(DeviceCheck::none()),
    }
}

/// The verdict of the status words: `[code, first bad index, its value, M]`.
fn explain_status(op: &'static str, w: &[i32]) -> Result<()> {
    match w {
        [0, ..] => Ok(()),
        &[1, i, v, m] => Err(bad_offset(op, i as usize, v, m as usize)),
        _ => Err(invalid(op, format!("unknown device status {w:?}"))),
    }
}

fn bad_offset(op: &'static str, i: usize, v: i32, m: usize) -> Error {
    invalid(
        op,
        format!(
            "offsets[{i}] = {v} breaks the group contract (offsets[0] >= 0, non-decreasing, \
             offsets[G] <= M = {m})"
        ),
    )
}

fn run_host<T: HalfFloat, O: GemmOutput>(
    h: Host,
    p: &Problem<T, O>,
    d: &mut DeviceBuffer<O>,
) -> Result<()> {
    let offsets = match p.offsets {
        Some(o) => {
            let o = h.slice(o)?;
            if let Some((i, v)) = reference::first_bad_offset(o, p.m) {
                return Err(bad_offset(p.op, i, v, p.m));
            }
            Some(o)
        }
        None => None,
    };
    let widen = |b: &DeviceBuffer<T>| -> Result<Vec<f32>> {
        Ok(h.slice(b)?.iter().map(|x| x.to_f32()).collect())
    };
    let a = widen(p.a)?;
    // Split a one-buffer SwiGLU B into per-group gate and up matrices.
    let (gate, up) = match p.b {
        Bs::One(b) => {
            let b = widen(b)?;
            if p.epi.swiglu {
                let per = p.n * p.k;
                let (mut g, mut u) = (Vec::new(), Vec::new());
                for grp in b.chunks(2 * per.max(1)).take(p.groups) {
                    g.extend_from_slice(&grp[..per]);
                    u.extend_from_slice(&grp[per..]);
                }
                (g, Some(u))
            } else {
                (b, None)
            }
        }
        Bs::Two { gate, up } => (widen(gate)?, Some(widen(up)?)),
    };
    let bias = p.epi.bias.map(|b| h.slice(b)).transpose()?;
    let row_scale = p.epi.row_scale.map(|b| h.slice(b)).transpose()?;
    let residual: Option<Vec<f64>> = p
        .epi
        .residual
        .map(|r| h.slice(r).map(|r| r.iter().map(|x| x.to_f64()).collect()))
        .transpose()?;
    let out = reference::gemm(&reference::Problem {
        a: &a,
        gate: &gate,
        up: up.as_deref(),
        offsets,
        m: p.m,
        n: p.n,
        k: p.k,
        bias,
        bias_per_group: p.bias_per_group,
        activation: p.epi.activation,
        row_scale,
        residual: residual.as_deref(),
    });
    for (o, &x) in h.slice_mut(d)?.iter_mut().zip(&out) {
        *o = O::from_f32(x as f32);
    }
    Ok(())
}

/// Dense `D [M, N] = epilogue(A·Bᵀ)`: `a` `[M, K]`, `b` `[N, K]` (`[2N, K]` with SwiGLU: gate
/// rows then up rows). M, N or K may be 0 (K = 0: the epilogue of 0).
///
/// Errors ([`Error::InvalidArgument`] naming `gemm::dense`): a length that does not match the
/// shapes (a, b, bias, row_scale, residual), a size above `i32::MAX` or overflowing, an
/// activation with SwiGLU, a buffer on another device.
pub fn dense<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    m: usize,
    n: usize,
    k: usize,
    epi: &Epilogue<O>,
) -> Result<DeviceBuffer<O>> {
    const OP: &str = "gemm::dense";
    let p = validate(OP, a, Bs::One(b), None, m, n, k, epi)?;
    let mut d = p.dev.alloc::<O>(m * n, "gemm.d")?;
    run(&p, &mut d)?;
    Ok(d)
}

/// [`dense`] into `d` (`[M, N]`, which must not be the residual).
pub fn dense_into<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    m: usize,
    n: usize,
    k: usize,
    epi: &Epilogue<O>,
    d: &mut DeviceBuffer<O>,
) -> Result<()> {
    const OP: &str = "gemm::dense";
    let p = validate(OP, a, Bs::One(b), None, m, n, k, epi)?;
    run(&p, d).map(|_| ())
}

/// Dense `D = A·Bᵀ` (no epilogue) through cuBLASLt instead of tessera's kernel: the second
/// dense path on CUDA, used by the bench for the comparison the issue asks for. Optional at run
/// time: `Error::Unsupported` off CUDA and `Error::DeviceUnavailable` where libcublasLt cannot be
/// loaded (see `device::cublaslt::available`); [`dense_into`] always works.
pub fn dense_cublaslt<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    m: usize,
    n: usize,
    k: usize,
    d: &mut DeviceBuffer<O>,
) -> Result<()> {
    crate::device::cublaslt::matmul(a, b, d, m, n, k)
}

const GROUPED: &str = "gemm::grouped";
const GROUPED_SWIGLU: &str = "gemm::grouped_swiglu";

/// Grouped `D [M, N]`: group `g` (G = `offsets.len() − 1`) computes rows
/// `offsets[g]..offsets[g + 1]` as `epilogue(A·B[g]ᵀ)`; `b` is `[G, N, K]` (`[G, 2N, K]` with
/// SwiGLU: each group's gate rows then up rows); the bias may be `[N]` (`[2N]`) for all groups or
/// `[G, N]` (`[G, 2N]`). Rows outside every group are 0. Waits for the device-side check of the
/// offsets ([`grouped_deferred`] does not).
///
/// Errors (naming `gemm::grouped`): those of [`dense`], an empty `offsets`, and offsets that
/// break the contract (`offsets[0] >= 0`, non-decreasing, `offsets[G] <= M`).
pub fn grouped<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    offsets: &DeviceBuffer<i32>,
    m: usize,
    n: usize,
    k: usize,
    epi: &Epilogue<O>,
) -> Result<DeviceBuffer<O>> {
    let (d, check) = grouped_deferred(a, b, offsets, m, n, k, epi)?;
    check.check()?;
    Ok(d)
}

/// [`grouped`] without the wait: the offsets are checked on the device into the returned
/// [`DeviceCheck`] (nothing pending on the CPU path, which checks at once). Until checked, the
/// output of a call with invalid offsets is unspecified (never an out-of-bounds access).
pub fn grouped_deferred<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    offsets: &DeviceBuffer<i32>,
    m: usize,
    n: usize,
    k: usize,
    epi: &Epilogue<O>,
) -> Result<(DeviceBuffer<O>, DeviceCheck)> {
    let p = validate(GROUPED, a, Bs::One(b), Some(offsets), m, n, k, epi)?;
    let mut d = p.dev.alloc::<O>(m * n, "gemm.d")?;
    let check = run(&p, &mut d)?;
    Ok((d, check))
}

/// [`grouped_deferred`] into `d` (`[M, N]`).
#[allow(clippy::too_many_arguments)]
pub fn grouped_into<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    offsets: &DeviceBuffer<i32>,
    m: usize,
    n: usize,
    k: usize,
    epi: &Epilogue<O>,
    d: &mut DeviceBuffer<O>,
) -> Result<DeviceCheck> {
    let p = validate(GROUPED, a, Bs::One(b), Some(offsets), m, n, k, epi)?;
    run(&p, d)
}

/// Grouped SwiGLU with the two projections in separate buffers (a MoE layer's expert weights):
/// `D [M, F]`, rows `offsets[g]..offsets[g + 1]` = `silu(A·gate[g]ᵀ) · (A·up[g]ᵀ)`, with `a`
/// `[M, K]`, `gate` and `up` `[G, F, K]`. Rows outside every group are 0. Waits for the
/// offsets' device check.
///
/// Errors (naming `gemm::grouped_swiglu`): as [`grouped`].
pub fn grouped_swiglu<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    gate: &DeviceBuffer<T>,
    up: &DeviceBuffer<T>,
    offsets: &DeviceBuffer<i32>,
    m: usize,
    f: usize,
    k: usize,
) -> Result<DeviceBuffer<O>> {
    let (d, check) = grouped_swiglu_deferred(a, gate, up, offsets, m, f, k)?;
    check.check()?;
    Ok(d)
}

/// [`grouped_swiglu`] without the wait (see [`grouped_deferred`]).
pub fn grouped_swiglu_deferred<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    gate: &DeviceBuffer<T>,
    up: &DeviceBuffer<T>,
    offsets: &DeviceBuffer<i32>,
    m: usize,
    f: usize,
    k: usize,
) -> Result<(DeviceBuffer<O>, DeviceCheck)> {
    let epi = Epilogue::new();
    let p = validate(
        GROUPED_SWIGLU,
        a,
        Bs::Two { gate, up },
        Some(offsets),
        m,
        f,
        k,
        &epi,
    )?;
    let mut d = p.dev.alloc::<O>(m * f, "gemm.d")?;
    let check = run(&p, &mut d)?;
    Ok((d, check))
}

/// [`grouped_swiglu_deferred`] into `d` (`[M, F]`), with an epilogue: the bias (`[2F]` or
/// `[G, 2F]`: gate then up), row scale and residual apply; the activation must be none (SwiGLU
/// is implied).
#[allow(clippy::too_many_arguments)]
pub fn grouped_swiglu_into<T: HalfFloat, O: GemmOutput>(
    a: &DeviceBuffer<T>,
    gate: &DeviceBuffer<T>,
    up: &DeviceBuffer<T>,
    offsets: &DeviceBuffer<i32>,
    m: usize,
    f: usize,
    k: usize,
    epi: &Epilogue<O>,
    d: &mut DeviceBuffer<O>,
) -> Result<DeviceCheck> {
    let p = validate(
        GROUPED_SWIGLU,
        a,
        Bs::Two { gate, up },
        Some(offsets),
        m,
        f,
        k,
        epi,
    )?;
    run(&p, d)
}

/// FLOPs of a GEMM (2·M·N·K, doubled for SwiGLU's two products), for the benches.
pub fn flops(m: usize, n: usize, k: usize, swiglu: bool) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64 * if swiglu { 2.0 } else { 1.0 }
}
