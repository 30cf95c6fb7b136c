//! DD2's conditional score as a fused kernel (issue 16): the score of the Gaussian mixture that
//! an AR teacher's per-position token probabilities give under the flow `x_t = α·x_0 + σ·ε`, its
//! log-normaliser, and the backward of the score-matching loss. Semantics, the derivation and
//! the f64 oracle: [`crate::reference::gmscore`]; kernels: `cuda/gmscore/score.cu`; docs:
//! `docs/dd2.md`.
//!
//! Per position `r` (a row of `x_t`, `p`, `alpha`, `sigma`):
//! `logit_v = ln p_v − ‖x − α e_v‖²/(2σ²)`, `lse = logsumexp_v logit_v`,
//! `w_v = exp(logit_v − lse)`, `score = (Σ_v w_v α e_v − x)/σ²`. [`backward`] gives the gradients
//! of `L = Σ_r ‖s_gen[r] − score[r]‖²` (a sum over positions) with respect to `s_gen` and `x_t`.
//!
//! The kernels stream the codebook in tiles of 32 codewords through shared memory with an online
//! log-sum-exp (the forward) or the saved `lse` (the backward), and never materialise the
//! `[P, V]` weights: work `≈ 4·d` FLOPs, one `exp` and one `ln` per (position, codeword) in each
//! pass; bytes: `p` once per pass (plus once for the input check), the codebook once per block of
//! 32 positions. f32 accumulation in a fixed order: deterministic.
//!
//! Limits: `d` in 8..=64 (kernel instances for `d <= 16`, `<= 32`, `<= 64`, zero-padded), `V` in
//! 1..=16384, `sigma` in `[1e-6, 1e6]`, `alpha` finite, each row of `p` finite, `>= 0` and
//! summing to 1 within `1e-3` (checked on the device, read back before the op returns).

use crate::device::kernel::{Grid, KernelSuffix};
use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, DeviceCheck};
use crate::reference::gmscore::{self as reference, Fault, Mixture};

/// `gmscore.forward`'s name in errors.
pub const FORWARD_OP: &str = "gmscore.forward";
/// `gmscore.backward`'s name in errors.
pub const BACKWARD_OP: &str = "gmscore.backward";
/// Threads per block (`kThreads`).
const THREADS: u32 = 128;
/// Positions per block (`kRows`).
const ROWS: usize = 32;
/// Blocks of the input check at most (grid-stride over positions).
const MAX_CHECK_BLOCKS: usize = 4096;

/// The codeword width as a kernel variant: `gmscore_forward_d16` serves `d <= 16`, and so on.
pub(crate) struct W16;
/// See [`W16`].
pub(crate) struct W32;
/// See [`W16`].
pub(crate) struct W64;
impl KernelSuffix for W16 {
    const SUFFIX: &'static str = "d16";
}
impl KernelSuffix for W32 {
    const SUFFIX: &'static str = "d32";
}
impl KernelSuffix for W64 {
    const SUFFIX: &'static str = "d64";
}

crate::kernels! {
    module = "gmscore/score";
    /// Validates alpha, sigma and the rows of p into the status words (one block per position).
    pub(crate) struct CheckKernel<'a> = "gmscore_check" block = THREADS {
        p: &'a DeviceBuffer<f32>,
        alpha: &'a DeviceBuffer<f32>,
        sigma: &'a DeviceBuffer<f32>,
        n_pos: u32,
        n_code: u32,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// The first bad position's fault (one block).
    pub(crate) struct ExplainKernel<'a> = "gmscore_explain" block = THREADS {
        p: &'a DeviceBuffer<f32>,
        alpha: &'a DeviceBuffer<f32>,
        sigma: &'a DeviceBuffer<f32>,
        n_code: u32,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// Score and lse: one block per 32 positions.
    pub(crate) struct ForwardKernel<'a, W: KernelSuffix> = "gmscore_forward"
        [(W16), (W32), (W64)] block = THREADS {
        width: std::marker::PhantomData<W>,
        codebook: &'a DeviceBuffer<f32>,
        p: &'a DeviceBuffer<f32>,
        x_t: &'a DeviceBuffer<f32>,
        alpha: &'a DeviceBuffer<f32>,
        sigma: &'a DeviceBuffer<f32>,
        n_pos: u32,
        n_code: u32,
        d: u32,
        status: &'a DeviceBuffer<i32>,
        score: &'a mut DeviceBuffer<f32>,
        lse: &'a mut DeviceBuffer<f32>,
    }
    /// The loss's gradients: one block per 32 positions.
    pub(crate) struct BackwardKernel<'a, W: KernelSuffix> = "gmscore_backward"
        [(W16), (W32), (W64)] block = THREADS {
        width: std::marker::PhantomData<W>,
        codebook: &'a DeviceBuffer<f32>,
        p: &'a DeviceBuffer<f32>,
        x_t: &'a DeviceBuffer<f32>,
        alpha: &'a DeviceBuffer<f32>,
        sigma: &'a DeviceBuffer<f32>,
        s_gen: &'a DeviceBuffer<f32>,
        score: &'a DeviceBuffer<f32>,
        lse: &'a DeviceBuffer<f32>,
        n_pos: u32,
        n_code: u32,
        d: u32,
        status: &'a DeviceBuffer<i32>,
        grad_s_gen: &'a mut DeviceBuffer<f32>,
        grad_x_t: &'a mut DeviceBuffer<f32>,
    }
}

/// [`forward`]'s result.
pub struct Score {
    /// `[P, d]`: `(Σ_v w_v α e_v − x_t)/σ²` per position.
    pub score: DeviceBuffer<f32>,
    /// `[P]`: `logsumexp_v (ln p_v − ‖x_t − α e_v‖²/(2σ²))` (natural log; the mixture's
    /// log-density is `lse − (d/2)·ln(2πσ²)`).
    pub lse: DeviceBuffer<f32>,
}

/// [`backward`]'s result: the gradients of `L = Σ_positions ‖s_gen − score‖²`.
pub struct ScoreGrad {
    /// `[P, d]`: `∂L/∂s_gen = 2 (s_gen − score)`.
    pub grad_s_gen: DeviceBuffer<f32>,
    /// `[P, d]`: `∂L/∂x_t = 2u/σ² − (2α²/σ⁴) Cov_w(e) u`, `u = s_gen − score`.
    pub grad_x_t: DeviceBuffer<f32>,
}

/// The shapes, as the reference checks them (lengths only), and every buffer on one device.
fn validate(
    op: &'static str,
    codebook: &DeviceBuffer<f32>,
    p: &DeviceBuffer<f32>,
    x_t: &DeviceBuffer<f32>,
    alpha: &DeviceBuffer<f32>,
    sigma: &DeviceBuffer<f32>,
    d: usize,
) -> Result<(Device, usize, usize)> {
    let dev = codebook.device().clone();
    let (n, v) = reference::shape(
        codebook.len(),
        p.len(),
        x_t.len(),
        alpha.len(),
        sigma.len(),
        d,
    )
    .map_err(|m| Error::invalid(op, m))?;
    on_device(op, "p", &dev, p)?;
    on_device(op, "x_t", &dev, x_t)?;
    on_device(op, "alpha", &dev, alpha)?;
    on_device(op, "sigma", &dev, sigma)?;
    Ok((dev, n, v))
}

/// `gmscore.forward`: the score `[P, d]` and `lse [P]` of the mixture at each position (see the
/// [module documentation](self)). `codebook [V, d]`, `p [P, V]`, `x_t [P, d]`, `alpha [P]`,
/// `sigma [P]`, all f32 on one device.
///
/// Errors ([`Error::InvalidArgument`] naming `gmscore.forward`): `d` outside 8..=64 ("d = 65
/// is outside 8..=64"), V outside 1..=16384, lengths that do not agree, buffers on another
/// device; and, found on the device and read back before returning, the first bad position's
/// fault: `alpha` not finite, `sigma` outside `[1e-6, 1e6]`, a NaN, infinite or negative entry
/// of `p` ("p[3, 17] is NaN"), or a row of `p` not summing to 1 within `1e-3`.
pub fn forward(
    codebook: &DeviceBuffer<f32>,
    p: &DeviceBuffer<f32>,
    x_t: &DeviceBuffer<f32>,
    alpha: &DeviceBuffer<f32>,
    sigma: &DeviceBuffer<f32>,
    d: usize,
) -> Result<Score> {
    let op = FORWARD_OP;
    let (dev, n, v) = validate(op, codebook, p, x_t, alpha, sigma, d)?;
    let mut score = dev.alloc::<f32>(n * d, "gmscore.score")?;
    let mut lse = dev.alloc::<f32>(n, "gmscore.lse")?;
    if let Some(h) = cpu_path(op, &dev) {
        let m = Mixture {
            codebook: h.slice(codebook)?,
            p: h.slice(p)?,
            x_t: h.slice(x_t)?,
            alpha: h.slice(alpha)?,
            sigma: h.slice(sigma)?,
            d,
        };
        let (s, l) = reference::forward(&m).map_err(|e| Error::invalid(op, e))?;
        narrow(h.slice_mut(&mut score)?, &s);
        narrow(h.slice_mut(&mut lse)?, &l);
        return Ok(Score { score, lse });
    }
    if n == 0 {
        return Ok(Score { score, lse });
    }
    let status = check_inputs(&dev, p, alpha, sigma, n, v)?;
    let grid = Grid::linear(n.div_ceil(ROWS) as u32);
    macro_rules! fwd {
        ($w:ty) => {
            ForwardKernel::<$w> {
                width: std::marker::PhantomData,
                codebook,
                p,
                x_t,
                alpha,
                sigma,
                n_pos: n as u32,
                n_code: v as u32,
                d: d as u32,
                status: &status,
                score: &mut score,
                lse: &mut lse,
            }
            .launch(&dev, grid)
        };
    }
    match d {
        ..=16 => fwd!(W16)?,
        17..=32 => fwd!(W32)?,
        _ => fwd!(W64)?,
    }
    DeviceCheck::on_device(op, status, explain).check()?;
    Ok(Score { score, lse })
}

/// `gmscore.backward`: the gradients of `L = Σ_positions ‖s_gen − score‖²` with respect to
/// `s_gen` and `x_t` (see the [module documentation](self)), from the forward's inputs, the
/// generator's scores `s_gen [P, d]`, and the forward's `score [P, d]` and `lse [P]` (the saved
/// activations; the weights are recomputed from `lse` in a second stream over the codebook).
/// To weight positions, scale their rows of both gradients (they are linear in `s_gen −
/// score`); for a mean over positions divide by P.
///
/// Errors ([`Error::InvalidArgument`] naming `gmscore.backward`): those of [`forward`], and
/// `s_gen`, `score` or `lse` of the wrong length or on another device. `score` and `lse` must be
/// [`forward`]'s for the same inputs (not checked; other values give the gradient at another
/// point). On the CPU path the reference recomputes the weights in f64 and does not read `lse`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    codebook: &DeviceBuffer<f32>,
    p: &DeviceBuffer<f32>,
    x_t: &DeviceBuffer<f32>,
    alpha: &DeviceBuffer<f32>,
    sigma: &DeviceBuffer<f32>,
    d: usize,
    s_gen: &DeviceBuffer<f32>,
    score: &DeviceBuffer<f32>,
    lse: &DeviceBuffer<f32>,
) -> Result<ScoreGrad> {
    let op = BACKWARD_OP;
    let (dev, n, v) = validate(op, codebook, p, x_t, alpha, sigma, d)?;
    for (what, b, len) in [
        ("s_gen", s_gen, n * d),
        ("score", score, n * d),
        ("lse", lse, n),
    ] {
        if b.len() != len {
            return Err(Error::invalid(
                op,
                format!("{what} has {} elements, not {len}", b.len()),
            ));
        }
        on_device(op, what, &dev, b)?;
    }
    let mut grad_s_gen = dev.alloc::<f32>(n * d, "gmscore.grad_s_gen")?;
    let mut grad_x_t = dev.alloc::<f32>(n * d, "gmscore.grad_x_t")?;
    if let Some(h) = cpu_path(op, &dev) {
        let m = Mixture {
            codebook: h.slice(codebook)?,
            p: h.slice(p)?,
            x_t: h.slice(x_t)?,
            alpha: h.slice(alpha)?,
            sigma: h.slice(sigma)?,
            d,
        };
        let sc: Vec<f64> = h.slice(score)?.iter().map(|&s| s as f64).collect();
        let (gs, gx) =
            reference::backward(&m, h.slice(s_gen)?, &sc).map_err(|e| Error::invalid(op, e))?;
        narrow(h.slice_mut(&mut grad_s_gen)?, &gs);
        narrow(h.slice_mut(&mut grad_x_t)?, &gx);
        return Ok(ScoreGrad {
            grad_s_gen,
            grad_x_t,
        });
    }
    if n == 0 {
        return Ok(ScoreGrad {
            grad_s_gen,
            grad_x_t,
        });
    }
    let status = check_inputs(&dev, p, alpha, sigma, n, v)?;
    let grid = Grid::linear(n.div_ceil(ROWS) as u32);
    macro_rules! bwd {
        ($w:ty) => {
            BackwardKernel::<$w> {
                width: std::marker::PhantomData,
                codebook,
                p,
                x_t,
                alpha,
                sigma,
                s_gen,
                score,
                lse,
                n_pos: n as u32,
                n_code: v as u32,
                d: d as u32,
                status: &status,
                grad_s_gen: &mut grad_s_gen,
                grad_x_t: &mut grad_x_t,
            }
            .launch(&dev, grid)
        };
    }
    match d {
        ..=16 => bwd!(W16)?,
        17..=32 => bwd!(W32)?,
        _ => bwd!(W64)?,
    }
    DeviceCheck::on_device(op, status, explain).check()?;
    Ok(ScoreGrad {
        grad_s_gen,
        grad_x_t,
    })
}

fn narrow(dst: &mut [f32], src: &[f64]) {
    for (o, &s) in dst.iter_mut().zip(src) {
        *o = s as f32;
    }
}

/// Launch the input check and its explanation; the status words the main kernels read.
fn check_inputs(
    dev: &Device,
    p: &DeviceBuffer<f32>,
    alpha: &DeviceBuffer<f32>,
    sigma: &DeviceBuffer<f32>,
    n: usize,
    v: usize,
) -> Result<DeviceBuffer<i32>> {
    let mut status = dev.upload(&[0i32, i32::MAX, 0, 0], "gmscore.status")?;
    CheckKernel {
        p,
        alpha,
        sigma,
        n_pos: n as u32,
        n_code: v as u32,
        status: &mut status,
    }
    .launch(dev, Grid::linear(n.min(MAX_CHECK_BLOCKS) as u32))?;
    ExplainKernel {
        p,
        alpha,
        sigma,
        n_code: v as u32,
        status: &mut status,
    }
    .launch(dev, Grid::linear(1))?;
    Ok(status)
}

/// The verdict of the status words `[code, row, entry, value bits]` (the reference's [`Fault`]).
fn explain(op: &'static str, w: &[i32]) -> Result<()> {
    let &[code, row, entry, bits] = w else {
        return Err(Error::invalid(op, format!("unknown device status {w:?}")));
    };
    if row == i32::MAX {
        return Ok(());
    }
    let (row, v) = (row as usize, entry.max(0) as usize);
    let value = f32::from_bits(bits as u32);
    let fault = match code {
        1 => Fault::Alpha { row, value },
        2 => Fault::Sigma { row, value },
        3 => Fault::PNan { row, v },
        4 => Fault::PInf { row, v },
        5 => Fault::PNeg { row, v, value },
        6 => Fault::RowSum {
            row,
            sum: value as f64,
        },
        _ => return Err(Error::invalid(op, format!("unknown device status {w:?}"))),
    };
    Err(Error::invalid(op, fault.to_string()))
}

/// Run [`forward`] on `dev` (for the verify rows and the tests): upload, run, download
/// `(score, lse)`.
pub fn forward_host(dev: &Device, m: &Mixture) -> Result<(Vec<f32>, Vec<f32>)> {
    let s = forward(
        &dev.upload(m.codebook, "codebook")?,
        &dev.upload(m.p, "p")?,
        &dev.upload(m.x_t, "x_t")?,
        &dev.upload(m.alpha, "alpha")?,
        &dev.upload(m.sigma, "sigma")?,
        m.d,
    )?;
    Ok((s.score.download()?, s.lse.download()?))
}

/// The four outputs of [`forward_backward_host`], downloaded.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRun {
    pub score: Vec<f32>,
    pub lse: Vec<f32>,
    pub grad_s_gen: Vec<f32>,
    pub grad_x_t: Vec<f32>,
}

/// Run [`forward`] then [`backward`] on `dev` (the backward given the forward's outputs).
pub fn forward_backward_host(dev: &Device, m: &Mixture, s_gen: &[f32]) -> Result<HostRun> {
    let codebook = dev.upload(m.codebook, "codebook")?;
    let p = dev.upload(m.p, "p")?;
    let x_t = dev.upload(m.x_t, "x_t")?;
    let alpha = dev.upload(m.alpha, "alpha")?;
    let sigma = dev.upload(m.sigma, "sigma")?;
    let s = forward(&codebook, &p, &x_t, &alpha, &sigma, m.d)?;
    let g = backward(
        &codebook,
        &p,
        &x_t,
        &alpha,
        &sigma,
        m.d,
        &dev.upload(s_gen, "s_gen")?,
        &s.score,
        &s.lse,
    )?;
    Ok(HostRun {
        score: s.score.download()?,
        lse: s.lse.download()?,
        grad_s_gen: g.grad_s_gen.download()?,
        grad_x_t: g.grad_x_t.download()?,
    })
}
