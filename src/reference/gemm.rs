//! Reference for [`crate::ops::gemm`]: `D = epilogue(A·Bᵀ)`, dense and grouped, in f64 from the
//! (already half-rounded) inputs. It is the oracle of the kernels and the native CPU path
//! (parallel over rows with rayon).
//!
//! Epilogue order, per element `(m, n)` (the kernels' order, in f32 there):
//! `x = acc + bias[n]`, `x = act(x)` — or with SwiGLU `x = silu(acc_gate + bias[n]) ·
//! (acc_up + bias[N + n])` — then `x = x · row_scale[m]`, then `x = x + residual[m, n]`.

use rayon::prelude::*;

/// The activation of the epilogue (`gemm.dense`'s `activation` parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// GELU, tanh form: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// GELU, erf form: `0.5·x·(1 + erf(x/√2))`.
    GeluErf,
    /// SiLU: `x·sigmoid(x) = x / (1 + e^(−x))`.
    Silu,
}

impl Activation {
    /// Every activation, in code order.
    pub const ALL: [Activation; 4] = [
        Activation::None,
        Activation::GeluTanh,
        Activation::GeluErf,
        Activation::Silu,
    ];

    /// The kernels' code (`kAct*` in cuda/gemm/gemm.cu).
    pub fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::GeluTanh => 1,
            Activation::GeluErf => 2,
            Activation::Silu => 3,
        }
    }

    /// The name used by the op table and the verify rows: `none`, `gelu_tanh`, `gelu_erf`,
    /// `silu`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "none",
            Activation::GeluTanh => "gelu_tanh",
            Activation::GeluErf => "gelu_erf",
            Activation::Silu => "silu",
        }
    }

    /// The activation named `s` (see [`Activation::name`]).
    pub fn parse(s: &str) -> Option<Activation> {
        Activation::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The activation of `x`, in f64.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::None => x,
            Activation::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::GeluErf => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
            Activation::Silu => silu(x),
        }
    }
}

/// `x / (1 + e^(−x))`.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// erf in f64 (no libm here): its Maclaurin series for |x| < 2.5, 1 − erfc from erfc's continued
/// fraction (evaluated backwards from a fixed depth) above; within ~1e-13 of erf, far below the
/// f32 kernels' error.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x == 0.0 {
        return x;
    }
    if x.abs() > 6.0 {
        return x.signum();
    }
    // Series for small |x|, continued fraction (via erfc) for larger ones.
    let ax = x.abs();
    let r = if ax < 2.5 {
        // erf(x) = 2/√π Σ (−1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        // |x| < 2.5: the terms fall below 1e-17 of the sum well before 200 of them.
        for n in 1..200 {
            let n = n as f64;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc(x) = e^(−x²)/(x√π) · 1/(1 + 1/(2x²)/(1 + 2/(2x²)/(1 + ...))) (Lentz-free,
        // evaluated backwards from a fixed depth: enough for x >= 2.5).
        let mut f = 0.0;
        for k in (1..=60).rev() {
            f = (k as f64 / 2.0) / (ax + f);
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
        1.0 - erfc
    };
    r.copysign(x)
}

/// One problem for [`gemm`]. Matrices are row-major; every length has been validated.
pub struct Problem<'a> {
    /// `[M, K]`.
    pub a: &'a [f32],
    /// Per group `[N, K]` (the only B, or the SwiGLU gate), groups back to back.
    pub gate: &'a [f32],
    /// SwiGLU only: per group `[N, K]`, the up matrices.
    pub up: Option<&'a [f32]>,
    /// `None`: dense (one group of all rows); else `[G + 1]` valid offsets.
    pub offsets: Option<&'a [i32]>,
    pub m: usize,
    /// Output columns.
    pub n: usize,
    pub k: usize,
    /// `[N]` (`[2N]` with SwiGLU: gate then up), or per group `[G, N]` (`[G, 2N]`) when
    /// `bias_per_group`.
    pub bias: Option<&'a [f32]>,
    pub bias_per_group: bool,
    pub activation: Activation,
    /// `[M]`.
    pub row_scale: Option<&'a [f32]>,
    /// `[M, N]`, the residual's values (already in the output type, widened).
    pub residual: Option<&'a [f64]>,
}

/// The first offset that breaks the grouped contract (`offsets[0] >= 0`, non-decreasing,
/// `offsets[G] <= m`), with its value. `offsets` is non-empty.
pub fn first_bad_offset(offsets: &[i32], m: usize) -> Option<(usize, i32)> {
    let g = offsets.len() - 1;
    (0..=g)
        .find(|&i| {
            let v = offsets[i];
            (i == 0 && v < 0) || (i > 0 && v < offsets[i - 1]) || (i == g && v as i64 > m as i64)
        })
        .map(|i| (i, offsets[i]))
}

/// `D [M, N]` in f64. Rows outside every group are 0.
pub fn gemm(p: &Problem) -> Vec<f64> {
    let (m, n, k) = (p.m, p.n, p.k);
    // Group of each row (None: outside every group).
    let mut group_of: Vec<Option<usize>> = vec![None; m];
    match p.offsets {
        None => group_of.iter_mut().for_each(|g| *g = Some(0)),
        Some(off) => {
            for g in 0..off.len() - 1 {
                group_of[off[g] as usize..off[g + 1] as usize].fill(Some(g));
            }
        }
    }
    let bias_len = if p.up.is_some() { 2 * n } else { n };
    let mut out = vec![0f64; m * n];
    out.par_chunks_mut(n.max(1))
        .take(m)
        .enumerate()
        .for_each(|(row, d)| {
            let Some(g) = group_of[row] else {
                return;
            };
            let arow = &p.a[row * k..(row + 1) * k];
            let dot = |mat: &[f32], col: usize| -> f64 {
                let brow = &mat[(g * n + col) * k..(g * n + col + 1) * k];
                arow.iter()
                    .zip(brow)
                    .map(|(&x, &y)| x as f64 * y as f64)
                    .sum()
            };
            let bias = p.bias.map(|b| {
                if p.bias_per_group {
                    &b[g * bias_len..(g + 1) * bias_len]
                } else {
                    b
                }
            });
            for (col, o) in d.iter_mut().enumerate() {
                let mut x = match p.up {
                    Some(up) => {
                        let (mut gt, mut u) = (dot(p.gate, col), dot(up, col));
                        if let Some(b) = bias {
                            gt += b[col] as f64;
                            u += b[n + col] as f64;
                        }
                        silu(gt) * u
                    }
                    None => {
                        let mut x = dot(p.gate, col);
                        if let Some(b) = bias {
                            x += b[col] as f64;
                        }
                        p.activation.apply(x)
                    }
                };
                if let Some(s) = p.row_scale {
                    x *= s[row] as f64;
                }
                if let Some(r) = p.residual {
                    x += r[row * n + col];
                }
                *o = x;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2), erf(3) to 15 digits.
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.0, -0.842_700_792_949_714_9),
            (0.0, 0.0),
            (1e-300, 1.128_379_167_095_512_6e-300),
            (2.4999, 0.999_592_830_099_666_6),
            (2.5, 0.999_593_047_982_555),
            (6.5, 1.0),
        ] {
            assert!(
                (erf(x) - want).abs() <= 1e-12 * want.abs().max(1e-300),
                "erf({x}) = {}",
                erf(x)
            );
        }
    }

    #[test]
    fn small_dense_and_grouped() {
        // A [3, 2], B [2, 2]: D = A Bᵀ + bias, then row scale.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        let p = Problem {
            a: &a,
            gate: &b,
            up: None,
            offsets: None,
            m: 3,
            n: 2,
            k: 2,
            bias: Some(&[10.0, 20.0]),
            bias_per_group: false,
            activation: Activation::None,
            row_scale: Some(&[1.0, 2.0, 0.5]),
            residual: None,
        };
        assert_eq!(gemm(&p), vec![11.0, 22.0, 26.0, 48.0, 7.5, 13.0]);
        // Two groups: rows 1..2 use B[0] (identity), row 2 B[1] (swap); row 0 is outside.
        let b2 = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let p = Problem {
            gate: &b2,
            offsets: Some(&[1, 2, 3]),
            bias: None,
            row_scale: None,
            ..p
        };
        assert_eq!(gemm(&p), vec![0.0, 0.0, 3.0, 4.0, 6.0, 5.0]);
        assert_eq!(first_bad_offset(&[1, 2, 3], 3), None);
        assert_eq!(first_bad_offset(&[1, 0, 3], 3), Some((1, 0)));
        assert_eq!(first_bad_offset(&[-1, 2], 3), Some((0, -1)));
        assert_eq!(first_bad_offset(&[0, 4], 3), Some((1, 4)));
    }
}
