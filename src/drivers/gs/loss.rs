//! The 3DGS training loss: L1, the SSIM of the INRIA code, their blend
//! `(1 − λ)·L1 + λ·(1 − SSIM)` with its exact gradient, and PSNR.
//!
//! # Images
//!
//! Every image is `[H, W, 3]` f32, row-major: the value of channel `c` at pixel `(i, j)`
//! (column `i`, row `j`) is at `(j·W + i)·3 + c`. Values are nominally in `[0, 1]`, but nothing
//! is clamped: every function works on the values as given. The sums are taken in f64.
//!
//! # SSIM
//!
//! As INRIA's `ssim()` (`utils/loss_utils.py`): per channel, a Gaussian window of 11×11 taps
//! with σ = 1.5 (the 1-D kernel `g[k] ∝ exp(−(k − 5)²/(2σ²))`, `k = 0..11`, normalised to sum
//! 1; the 2-D window is `g ⊗ g`), applied as a zero-padded "same" correlation (torch
//! `conv2d(padding = 5)`). With `G*f` that filter,
//!
//! ```text
//! μx = G*x   μy = G*y   σx² = G*(x²) − μx²   σy² = G*(y²) − μy²   σxy = G*(xy) − μx·μy
//! S  = (2·μx·μy + C1)(2·σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))
//! C1 = 0.01²,  C2 = 0.03²
//! ```
//!
//! and the SSIM is the mean of `S` over all pixels and channels. Zero padding matters near the
//! border: there the window's mass inside the image is below 1, so even a constant image has
//! `μ` below its value and a nonzero "variance" `σ² = m(1 − m)·a²` (window mass `m`).
//!
//! # Gradient
//!
//! `S` at each pixel depends on `x` only through the three filtered maps `μx`, `E[x²] = G*(x²)`
//! and `E[xy] = G*(xy)`. With `A, B, C, D` the four factors of `S` above,
//!
//! ```text
//! ∂S/∂μx    = 2μy(B − A)/(C·D) − 2μx·S·(1/C − 1/D)
//! ∂S/∂E[x²] = −S/D
//! ∂S/∂E[xy] = 2A/(C·D)
//! ```
//!
//! and, since the adjoint of a zero-padded correlation is the zero-padded correlation with the
//! flipped kernel (here the same kernel, which is symmetric),
//!
//! ```text
//! d SSIM / d x = (1/(3HW)) · (G*(∂S/∂μx) + 2x·G*(∂S/∂E[x²]) + y·G*(∂S/∂E[xy]))
//! ```
//!
//! The L1 term contributes `sign(x − y)/(3HW)` with `sign(0) = 0`. Each filter is separable
//! (a row pass then a column pass), so a loss with its gradient costs 8 filtered maps of
//! `O(3HW·22)` each.
//!
//! # Errors
//!
//! `Error::InvalidArgument` with op `"gs.loss"` (or `"gs.psnr"` from [`psnr`]): a zero width or
//! height, a length other than `w·h·3`, or a non-finite value (naming the image and the first
//! such index); also a `lambda_dssim` outside `[0, 1]`.

use crate::error::{Error, Result};

/// The op name in the errors of [`l1`], [`ssim`] and [`loss`].
const OP: &str = "gs.loss";
/// The op name in the errors of [`psnr`].
const PSNR_OP: &str = "gs.psnr";

/// INRIA's default weight of the D-SSIM term (`lambda_dssim`).
pub const LAMBDA_DSSIM: f64 = 0.2;
/// Side of the SSIM window, in pixels.
pub const SSIM_WINDOW: usize = 11;
/// Standard deviation of the SSIM window, in pixels.
pub const SSIM_SIGMA: f64 = 1.5;
/// SSIM constant `C1 = (0.01·L)²` with `L = 1`.
pub const SSIM_C1: f64 = 0.01 * 0.01;
/// SSIM constant `C2 = (0.03·L)²` with `L = 1`.
pub const SSIM_C2: f64 = 0.03 * 0.03;

/// Half the window: the zero padding on each side.
const RADIUS: usize = SSIM_WINDOW / 2;
/// Channels per pixel.
const CH: usize = 3;

/// The loss of one rendered image against its ground truth, with its gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    /// `(1 − λ)·l1 + λ·(1 − ssim)`.
    pub value: f64,
    /// The mean absolute error ([`l1`]).
    pub l1: f64,
    /// The SSIM ([`ssim`]).
    pub ssim: f64,
    /// `d value / d img`, in the layout of the image (`[H, W, 3]`).
    pub grad: Vec<f32>,
}

/// The mean absolute error over all `H·W·3` values.
///
/// Errors: see the module docs.
pub fn l1(img: &[f32], gt: &[f32], w: u32, h: u32) -> Result<f64> {
    let (x, y, _, _) = prepare(OP, img, gt, w, h)?;
    Ok(l1_core(&x, &y, None))
}

/// The INRIA 3DGS SSIM (11×11 Gaussian window, σ = 1.5, zero padding, mean over pixels and
/// channels; see the module docs). 1 for identical images; symmetric in its two images.
///
/// Errors: see the module docs.
pub fn ssim(img: &[f32], gt: &[f32], w: u32, h: u32) -> Result<f64> {
    let (x, y, w, h) = prepare(OP, img, gt, w, h)?;
    Ok(ssim_core(&x, &y, w, h, None))
}

/// The training loss `(1 − λ)·L1 + λ·(1 − SSIM)` of `img` against `gt`, with `λ =
/// lambda_dssim` ([`LAMBDA_DSSIM`] in the INRIA code), and its exact gradient with respect to
/// `img` (see the module docs).
///
/// Errors: see the module docs; `lambda_dssim` must be in `[0, 1]`.
pub fn loss(img: &[f32], gt: &[f32], w: u32, h: u32, lambda_dssim: f64) -> Result<Loss> {
    if !(0.0..=1.0).contains(&lambda_dssim) {
        return Err(Error::invalid(
            OP,
            format!("lambda_dssim must be in [0, 1], got {lambda_dssim}"),
        ));
    }
    let (x, y, w, h) = prepare(OP, img, gt, w, h)?;
    let mut grad = vec![0.0f64; x.len()];
    let (value, l1, ssim) = loss_core(&x, &y, w, h, lambda_dssim, Some(&mut grad));
    Ok(Loss {
        value,
        l1,
        ssim,
        grad: grad.iter().map(|&g| g as f32).collect(),
    })
}

/// The peak signal-to-noise ratio `10·log10(1/MSE)` in dB, for a peak value of 1, with the MSE
/// over all `H·W·3` values as given (not clamped to `[0, 1]`). Identical images (MSE 0) give
/// `f64::INFINITY`.
///
/// Errors: as the other functions, with op `"gs.psnr"`.
pub fn psnr(img: &[f32], gt: &[f32], w: u32, h: u32) -> Result<f64> {
    let (x, y, _, _) = prepare(PSNR_OP, img, gt, w, h)?;
    let sse: f64 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    let mse = sse / x.len() as f64;
    if mse == 0.0 {
        return Ok(f64::INFINITY);
    }
    Ok(-10.0 * mse.log10())
}

/// Checks the shapes and values, and returns both images in f64 with `w, h` as `usize`.
fn prepare(
    op: &'static str,
    img: &[f32],
    gt: &[f32],
    w: u32,
    h: u32,
) -> Result<(Vec<f64>, Vec<f64>, usize, usize)> {
    if w == 0 || h == 0 {
        return Err(Error::invalid(
            op,
            format!("the image size must be at least 1x1, got {w}x{h}"),
        ));
    }
    let (wu, hu) = (w as usize, h as usize);
    let n = wu
        .checked_mul(hu)
        .and_then(|p| p.checked_mul(CH))
        .ok_or_else(|| Error::invalid(op, format!("the image size {w}x{h}x3 overflows")))?;
    for (name, v) in [("img", img), ("gt", gt)] {
        if v.len() != n {
            return Err(Error::invalid(
                op,
                format!(
                    "{name} has {} values, expected {w}x{h}x3 = {n} ([H, W, 3])",
                    v.len()
                ),
            ));
        }
        if let Some(i) = v.iter().position(|a| !a.is_finite()) {
            return Err(Error::invalid(
                op,
                format!("{name}[{i}] is not finite ({})", v[i]),
            ));
        }
    }
    let x = img.iter().map(|&a| f64::from(a)).collect();
    let y = gt.iter().map(|&a| f64::from(a)).collect();
    Ok((x, y, wu, hu))
}

/// Mean absolute error; adds `scale·sign(x − y)/n` to `grad` when given.
fn l1_core(x: &[f64], y: &[f64], grad: Option<(&mut [f64], f64)>) -> f64 {
    let n = x.len() as f64;
    let sum: f64 = x.iter().zip(y).map(|(a, b)| (a - b).abs()).sum();
    if let Some((g, scale)) = grad {
        let s = scale / n;
        for ((gv, a), b) in g.iter_mut().zip(x).zip(y) {
            let d = a - b;
            if d > 0.0 {
                *gv += s;
            } else if d < 0.0 {
                *gv -= s;
            }
        }
    }
    sum / n
}

/// `(value, l1, ssim)` in f64; writes `d value / d x` into `grad` when given.
fn loss_core(
    x: &[f64],
    y: &[f64],
    w: usize,
    h: usize,
    lambda: f64,
    grad: Option<&mut [f64]>,
) -> (f64, f64, f64) {
    match grad {
        Some(g) => {
            g.iter_mut().for_each(|v| *v = 0.0);
            let s = ssim_core(x, y, w, h, Some((&mut *g, -lambda)));
            let l = l1_core(x, y, Some((g, 1.0 - lambda)));
            ((1.0 - lambda) * l + lambda * (1.0 - s), l, s)
        }
        None => {
            let s = ssim_core(x, y, w, h, None);
            let l = l1_core(x, y, None);
            ((1.0 - lambda) * l + lambda * (1.0 - s), l, s)
        }
    }
}

/// The normalised 1-D Gaussian kernel of the SSIM window.
fn kernel() -> [f64; SSIM_WINDOW] {
    let mut g = [0.0; SSIM_WINDOW];
    for (k, v) in g.iter_mut().enumerate() {
        let d = k as f64 - RADIUS as f64;
        *v = (-d * d / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let sum: f64 = g.iter().sum();
    g.iter_mut().for_each(|v| *v /= sum);
    g
}

/// `out = G * src`: the separable, zero-padded, same-size correlation of an `[H, W, 3]` map
/// with `g ⊗ g`, each channel on its own. `tmp` is scratch of the same length.
fn filter(
    src: &[f64],
    w: usize,
    h: usize,
    g: &[f64; SSIM_WINDOW],
    tmp: &mut [f64],
    out: &mut [f64],
) {
    let row_len = w * CH;
    // Row pass: tmp(i, j) = Σ_q g[q − i + R] src(q, j) over the columns q inside the image.
    for (src_row, tmp_row) in src.chunks_exact(row_len).zip(tmp.chunks_exact_mut(row_len)) {
        for i in 0..w {
            let lo = i.saturating_sub(RADIUS);
            let hi = (i + RADIUS).min(w - 1);
            let mut acc = [0.0f64; CH];
            for q in lo..=hi {
                let wt = g[q + RADIUS - i];
                let s = &src_row[q * CH..q * CH + CH];
                for c in 0..CH {
                    acc[c] += wt * s[c];
                }
            }
            tmp_row[i * CH..i * CH + CH].copy_from_slice(&acc);
        }
    }
    // Column pass: out(i, j) = Σ_q g[q − j + R] tmp(i, q) over the rows q inside the image.
    for (j, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        out_row.iter_mut().for_each(|v| *v = 0.0);
        let lo = j.saturating_sub(RADIUS);
        let hi = (j + RADIUS).min(h - 1);
        for q in lo..=hi {
            let wt = g[q + RADIUS - j];
            let t = &tmp[q * row_len..(q + 1) * row_len];
            for (o, v) in out_row.iter_mut().zip(t) {
                *o += wt * v;
            }
        }
    }
}

/// The SSIM in f64; when `grad` is `Some((g, scale))`, adds `scale · d SSIM / d x` to `g`.
fn ssim_core(x: &[f64], y: &[f64], w: usize, h: usize, grad: Option<(&mut [f64], f64)>) -> f64 {
    let n = x.len();
    let g = kernel();
    let mut tmp = vec![0.0; n];
    let mut prod = vec![0.0; n];
    let mut mx = vec![0.0; n];
    let mut my = vec![0.0; n];
    let mut exx = vec![0.0; n];
    let mut eyy = vec![0.0; n];
    let mut exy = vec![0.0; n];
    filter(x, w, h, &g, &mut tmp, &mut mx);
    filter(y, w, h, &g, &mut tmp, &mut my);
    for (p, a) in prod.iter_mut().zip(x) {
        *p = a * a;
    }
    filter(&prod, w, h, &g, &mut tmp, &mut exx);
    for (p, b) in prod.iter_mut().zip(y) {
        *p = b * b;
    }
    filter(&prod, w, h, &g, &mut tmp, &mut eyy);
    for ((p, a), b) in prod.iter_mut().zip(x).zip(y) {
        *p = a * b;
    }
    filter(&prod, w, h, &g, &mut tmp, &mut exy);

    // Per pixel: S, and (reusing the buffers) its partials with respect to μx, E[x²], E[xy].
    let mut sum = 0.0;
    for k in 0..n {
        let (ux, uy) = (mx[k], my[k]);
        let a = 2.0 * ux * uy + SSIM_C1;
        let b = 2.0 * (exy[k] - ux * uy) + SSIM_C2;
        let c = ux * ux + uy * uy + SSIM_C1;
        let d = (exx[k] - ux * ux) + (eyy[k] - uy * uy) + SSIM_C2;
        let cd = c * d;
        let s = a * b / cd;
        sum += s;
        if grad.is_some() {
            mx[k] = 2.0 * uy * (b - a) / cd - 2.0 * ux * s * (1.0 / c - 1.0 / d);
            exx[k] = -s / d;
            exy[k] = 2.0 * a / cd;
        }
    }
    let mean = sum / n as f64;

    if let Some((gout, scale)) = grad {
        let s = scale / n as f64;
        // my, eyy and prod are free: they take the filtered partials.
        filter(&mx, w, h, &g, &mut tmp, &mut my);
        filter(&exx, w, h, &g, &mut tmp, &mut eyy);
        filter(&exy, w, h, &g, &mut tmp, &mut prod);
        for k in 0..n {
            gout[k] += s * (my[k] + 2.0 * x[k] * eyy[k] + y[k] * prod[k]);
        }
    }
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (64-bit LCG) of values in `[0, 1)`.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn image(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next() as f32).collect()
        }
    }

    fn to64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&a| f64::from(a)).collect()
    }

    /// The 1-D weights, computed here independently of `kernel()`.
    fn weights() -> Vec<f64> {
        let raw: Vec<f64> = (-5..=5)
            .map(|d: i32| (-f64::from(d * d) / 4.5).exp())
            .collect();
        let sum: f64 = raw.iter().sum();
        raw.iter().map(|v| v / sum).collect()
    }

    /// SSIM by a direct (non-separable) 2-D zero-padded window over every pixel and channel.
    fn ssim_direct(x: &[f64], y: &[f64], w: usize, h: usize) -> f64 {
        let g = weights();
        let mut total = 0.0;
        for j in 0..h as i64 {
            for i in 0..w as i64 {
                for c in 0..3 {
                    let (mut ux, mut uy, mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    for dj in -5..=5i64 {
                        for di in -5..=5i64 {
                            let (qi, qj) = (i + di, j + dj);
                            if qi < 0 || qj < 0 || qi >= w as i64 || qj >= h as i64 {
                                continue;
                            }
                            let wt = g[(di + 5) as usize] * g[(dj + 5) as usize];
                            let k = (qj as usize * w + qi as usize) * 3 + c;
                            ux += wt * x[k];
                            uy += wt * y[k];
                            xx += wt * x[k] * x[k];
                            yy += wt * y[k] * y[k];
                            xy += wt * x[k] * y[k];
                        }
                    }
                    let (sx, sy, sxy) = (xx - ux * ux, yy - uy * uy, xy - ux * uy);
                    total += (2.0 * ux * uy + SSIM_C1) * (2.0 * sxy + SSIM_C2)
                        / ((ux * ux + uy * uy + SSIM_C1) * (sx + sy + SSIM_C2));
                }
            }
        }
        total / (w * h * 3) as f64
    }

    /// S for constant images `a`, `b` at a pixel whose window has mass `m` inside the image:
    /// μ = m·a, E[x²] = m·a², so σx² = m(1 − m)a², σxy = m(1 − m)ab.
    fn s_const(a: f64, b: f64, m: f64) -> f64 {
        let v = m * (1.0 - m);
        (2.0 * m * m * a * b + SSIM_C1) * (2.0 * v * a * b + SSIM_C2)
            / ((m * m * (a * a + b * b) + SSIM_C1) * (v * (a * a + b * b) + SSIM_C2))
    }

    #[test]
    fn identical_images() {
        let mut r = Lcg(1);
        let (w, h) = (9u32, 7u32);
        let a = r.image(9 * 7 * 3);
        assert_eq!(l1(&a, &a, w, h).unwrap(), 0.0);
        assert!((ssim(&a, &a, w, h).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(psnr(&a, &a, w, h).unwrap(), f64::INFINITY);
        let l = loss(&a, &a, w, h, LAMBDA_DSSIM).unwrap();
        assert!(l.value.abs() < 1e-12, "{}", l.value);
        // SSIM is at its maximum and sign(0) = 0: the gradient vanishes.
        assert!(l.grad.iter().all(|g| g.abs() < 1e-9), "{:?}", l.grad);
    }

    #[test]
    fn constant_offset_l1_and_psnr() {
        let mut r = Lcg(2);
        let (w, h) = (5u32, 4u32);
        // Multiples of 1/64 and an offset of 1/8: exact in f32, so the differences are exact.
        let gt: Vec<f32> = (0..60)
            .map(|_| (r.next() * 48.0).floor() as f32 / 64.0)
            .collect();
        let img: Vec<f32> = gt.iter().map(|v| v + 0.125).collect();
        assert_eq!(l1(&img, &gt, w, h).unwrap(), 0.125);
        assert_eq!(l1(&gt, &img, w, h).unwrap(), 0.125);
        // MSE = 1/64: PSNR = 10·log10(64) = 18.061799739838872 dB.
        let p = psnr(&img, &gt, w, h).unwrap();
        assert!((p - 18.061_799_739_838_87).abs() < 1e-9, "{p}");
        // Errors of 0.5 everywhere: MSE 1/4, PSNR 10·log10(4) = 6.0206 dB.
        let half = vec![0.5f32; 60];
        let zero = vec![0.0f32; 60];
        let p = psnr(&half, &zero, w, h).unwrap();
        assert!((p - 6.020_599_913_279_624).abs() < 1e-9, "{p}");
    }

    #[test]
    fn ssim_of_constant_images_by_hand() {
        let g = weights();
        let (a, b) = (0.7f32, 0.3f32);
        let (af, bf) = (f64::from(a), f64::from(b));
        // 1x1: the window is cut to its centre tap, of mass g5².
        let s = ssim(&[a; 3], &[b; 3], 1, 1).unwrap();
        let want = s_const(af, bf, g[5] * g[5]);
        assert!((s - want).abs() < 1e-14, "{s} vs {want}");
        // Identical constants: σx² = σy² = σxy > 0 there, and S is exactly 1 again.
        assert!((ssim(&[a; 3], &[a; 3], 1, 1).unwrap() - 1.0).abs() < 1e-14);
        // 2x1: each pixel sees itself and its neighbour in the row: mass g5·(g5 + g4).
        let s = ssim(&[a; 6], &[b; 6], 2, 1).unwrap();
        let want = s_const(af, bf, g[5] * (g[5] + g[4]));
        assert!((s - want).abs() < 1e-14, "{s} vs {want}");
        // 4x3: the mass at (i, j) is r_w(i)·r_h(j) with r_n(i) = Σ of g over the taps inside.
        let (w, h) = (4usize, 3usize);
        let r = |i: usize, n: usize| -> f64 { (0..n).map(|q| g[q + 5 - i]).sum::<f64>() };
        let mut want = 0.0;
        for j in 0..h {
            for i in 0..w {
                want += s_const(af, bf, r(i, w) * r(j, h));
            }
        }
        want /= (w * h) as f64;
        let s = ssim(&[a; 36], &[b; 36], 4, 3).unwrap();
        assert!((s - want).abs() < 1e-14, "{s} vs {want}");
        // A full window (mass 1): S = (2ab + C1)/(a² + b² + C1) since both variances vanish.
        let full = s_const(af, bf, 1.0);
        let direct = (2.0 * af * bf + SSIM_C1) / (af * af + bf * bf + SSIM_C1);
        assert!((full - direct).abs() < 1e-15);
        // And a constant pair is not scored as identical.
        assert!(s < 0.9);
    }

    #[test]
    fn ssim_matches_direct_window() {
        let mut r = Lcg(3);
        for &(w, h) in &[(13usize, 10usize), (3, 17), (1, 1), (25, 12)] {
            let x = r.image(w * h * 3);
            let y = r.image(w * h * 3);
            let s = ssim(&x, &y, w as u32, h as u32).unwrap();
            let want = ssim_direct(&to64(&x), &to64(&y), w, h);
            assert!((s - want).abs() < 1e-13, "{w}x{h}: {s} vs {want}");
        }
    }

    #[test]
    fn ssim_is_symmetric() {
        let mut r = Lcg(4);
        let (w, h) = (12u32, 9u32);
        let a = r.image(12 * 9 * 3);
        let b: Vec<f32> = a.iter().map(|v| v * 0.8 + 0.1 * r.next() as f32).collect();
        let s1 = ssim(&a, &b, w, h).unwrap();
        let s2 = ssim(&b, &a, w, h).unwrap();
        assert_eq!(s1, s2);
        assert!(s1 > 0.0 && s1 < 1.0, "{s1}");
    }

    #[test]
    fn loss_combines_terms() {
        let mut r = Lcg(5);
        let (w, h) = (10u32, 6u32);
        let a = r.image(180);
        let b = r.image(180);
        let lv = l1(&a, &b, w, h).unwrap();
        let sv = ssim(&a, &b, w, h).unwrap();
        for lambda in [0.0, LAMBDA_DSSIM, 0.5, 1.0] {
            let l = loss(&a, &b, w, h, lambda).unwrap();
            assert_eq!(l.l1, lv);
            assert_eq!(l.ssim, sv);
            let want = (1.0 - lambda) * lv + lambda * (1.0 - sv);
            assert!((l.value - want).abs() < 1e-15);
            assert_eq!(l.grad.len(), 180);
        }
        // λ = 0: the gradient is sign(img − gt)/n exactly.
        let l = loss(&a, &b, w, h, 0.0).unwrap();
        for k in 0..180 {
            let want = (a[k] - b[k]).signum() / 180.0;
            assert_eq!(l.grad[k], want);
        }
    }

    /// Central differences of `loss_core` (f64) against its analytic gradient.
    fn check_gradient(w: usize, h: usize, lambda: f64, seed: u64) {
        let mut r = Lcg(seed);
        let n = w * h * 3;
        let x = to64(&r.image(n));
        // y near x so that SSIM is in its interesting (high) range, never equal to x.
        let y: Vec<f64> = x
            .iter()
            .map(|v| {
                let d = 0.05 + 0.2 * r.next();
                if r.next() < 0.5 {
                    v + d
                } else {
                    v - d
                }
            })
            .collect();
        let mut grad = vec![0.0; n];
        loss_core(&x, &y, w, h, lambda, Some(&mut grad));
        // Random entries plus the four corners (where the padding cuts the window).
        let mut idx: Vec<usize> = (0..12).map(|_| (r.next() * n as f64) as usize).collect();
        for (i, j) in [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)] {
            idx.push((j * w + i) * 3 + (r.next() * 3.0) as usize);
        }
        let eps = 1e-6;
        let mut scale: f64 = 0.0;
        let mut fds = Vec::new();
        for &k in &idx {
            let mut xp = x.clone();
            xp[k] += eps;
            let mut xm = x.clone();
            xm[k] -= eps;
            let fp = loss_core(&xp, &y, w, h, lambda, None).0;
            let fm = loss_core(&xm, &y, w, h, lambda, None).0;
            let fd = (fp - fm) / (2.0 * eps);
            scale = scale.max(fd.abs());
            fds.push((k, fd));
        }
        for (k, fd) in fds {
            let err = (grad[k] - fd).abs();
            assert!(
                err <= 1e-6 * fd.abs() + 1e-8 * scale,
                "{w}x{h} λ={lambda} k={k}: analytic {} vs fd {fd}",
                grad[k]
            );
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        check_gradient(12, 9, LAMBDA_DSSIM, 6);
        // The SSIM part alone (λ = 1), where the signs of L1 do not help.
        check_gradient(12, 9, 1.0, 7);
        check_gradient(5, 14, 1.0, 8);
        check_gradient(1, 1, 1.0, 9);
        check_gradient(23, 3, 0.5, 10);
    }

    #[test]
    fn public_gradient_is_the_f64_one_rounded() {
        let mut r = Lcg(11);
        let (w, h) = (7usize, 5usize);
        let a = r.image(w * h * 3);
        let b = r.image(w * h * 3);
        let l = loss(&a, &b, w as u32, h as u32, LAMBDA_DSSIM).unwrap();
        let mut g = vec![0.0; w * h * 3];
        let (v, _, _) = loss_core(&to64(&a), &to64(&b), w, h, LAMBDA_DSSIM, Some(&mut g));
        assert_eq!(l.value, v);
        for (p, q) in l.grad.iter().zip(&g) {
            assert_eq!(*p, *q as f32);
        }
    }

    #[test]
    fn bad_inputs() {
        let a = vec![0.5f32; 12];
        let msg = |e: Error| e.to_string();
        let e = msg(l1(&a, &a[..11], 2, 2).unwrap_err());
        assert!(
            e.contains("gs.loss") && e.contains("gt has 11 values"),
            "{e}"
        );
        let e = msg(ssim(&a, &a, 3, 2).unwrap_err());
        assert!(e.contains("img has 12 values") && e.contains("18"), "{e}");
        let e = msg(loss(&[], &[], 0, 4, 0.2).unwrap_err());
        assert!(e.contains("at least 1x1"), "{e}");
        let e = msg(psnr(&[], &[], 4, 0).unwrap_err());
        assert!(e.contains("gs.psnr") && e.contains("at least 1x1"), "{e}");
        let mut b = a.clone();
        b[7] = f32::NAN;
        b[9] = f32::INFINITY;
        let e = msg(ssim(&b, &a, 2, 2).unwrap_err());
        assert!(e.contains("img[7] is not finite"), "{e}");
        let e = msg(psnr(&a, &b, 2, 2).unwrap_err());
        assert!(e.contains("gs.psnr") && e.contains("gt[7]"), "{e}");
        for lambda in [-0.1, 1.5, f64::NAN] {
            let e = msg(loss(&a, &a, 2, 2, lambda).unwrap_err());
            assert!(e.contains("lambda_dssim"), "{e}");
        }
        assert!(matches!(
            l1(&a, &a, 1, 1),
            Err(Error::InvalidArgument { op: "gs.loss", .. })
        ));
    }

    #[test]
    fn handles_a_large_image() {
        // 256x256, as the training driver uses: finite values, gradient of the right length.
        let mut r = Lcg(12);
        let n = 256 * 256 * 3;
        let a = r.image(n);
        let b: Vec<f32> = a.iter().map(|v| v * 0.9).collect();
        let l = loss(&a, &b, 256, 256, LAMBDA_DSSIM).unwrap();
        assert!(
            l.value.is_finite() && l.ssim > 0.5 && l.ssim < 1.0,
            "{} {}",
            l.value,
            l.ssim
        );
        assert_eq!(l.grad.len(), n);
        assert!(l.grad.iter().all(|g| g.is_finite()));
    }
}
