//! GEMM rows (`gemm.dense`, `gemm.grouped`, `gemm.grouped_swiglu`): one [`GemmCase`] per
//! (shape, epilogue, grouping), run for an input and output type against the f64 reference
//! (relative L2 within [`tol::HALF`]). `tests/gemm.rs` runs the same cases.

use half::{bf16, f16};

use super::{stage, up, Outcome, Row};
use crate::device::{Device, DeviceBuffer};

use crate::ops::gemm::{self, Activation, Epilogue, GemmOutput, HalfFloat};
use crate::reference::gemm as reference;
use crate::testing::{rel_l2, tol, Rng};

/// How a grouped case splits its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Groups {
    /// Dense (no offsets).
    Dense,
    /// `G` groups, random sizes covering all rows.
    Uniform(usize),
    /// `G` groups: most rows in one, many empty, a few of one row.
    Skewed(usize),
    /// Every row in group 0 of `G` (the others empty).
    AllInOne(usize),
    /// `G` random groups covering only the middle rows (rows before and after are outside).
    Outside(usize),
}

impl Groups {
    pub fn name(self) -> String {
        match self {
            Groups::Dense => "dense".into(),
            Groups::Uniform(g) => format!("G={g} uniform"),
            Groups::Skewed(g) => format!("G={g} skewed"),
            Groups::AllInOne(g) => format!("G={g} all-in-one"),
            Groups::Outside(g) => format!("G={g} rows-outside"),
        }
    }

    /// The offsets `[G + 1]` of `m` rows (`None` for dense).
    pub fn offsets(self, m: usize, r: &mut Rng) -> Option<Vec<i32>> {
        let cuts = |g: usize, lo: usize, hi: usize, r: &mut Rng| -> Vec<i32> {
            let mut c: Vec<i32> = (0..g.saturating_sub(1))
                .map(|_| (lo + (r.next_u64() as usize) % (hi - lo + 1)) as i32)
                .collect();
            c.sort_unstable();
            let mut o = vec![lo as i32];
            o.extend(c);
            o.push(hi as i32);
            o
        };
        match self {
            Groups::Dense => None,
            Groups::Uniform(g) => Some(cuts(g, 0, m, r)),
            Groups::Skewed(g) => {
                // Group g/2 takes all but a few rows; up to 3 groups get one row each.
                let mut sizes = vec![0usize; g];
                let mut left = m;
                for i in 0..g.min(3) {
                    let j = (i * 7 + 1) % g;
                    if left > 0 && j != g / 2 {
                        sizes[j] = 1;
                        left -= 1;
                    }
                }
                sizes[g / 2] += left;
                let mut o = vec![0i32];
                for s in sizes {
                    o.push(o.last().unwrap() + s as i32);
                }
                Some(o)
            }
            Groups::AllInOne(g) => {
                let mut o = vec![0i32];
                o.extend(std::iter::repeat_n(m as i32, g));
                Some(o)
            }
            Groups::Outside(g) => {
                let lo = m / 5;
                let hi = m - m / 7;
                Some(cuts(g, lo, hi.max(lo), r))
            }
        }
    }
}

/// Which epilogue a case uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epi {
    pub bias: bool,
    pub activation: Activation,
    pub row_scale: bool,
    pub residual: bool,
    /// SwiGLU from one B of `[2N, K]` per group.
    pub swiglu: bool,
    /// SwiGLU from two buffers (`grouped_swiglu`; grouped cases only).
    pub swiglu_two: bool,
}

impl Epi {
    pub const NONE: Epi = Epi {
        bias: false,
        activation: Activation::None,
        row_scale: false,
        residual: false,
        swiglu: false,
        swiglu_two: false,
    };
    /// Everything but SwiGLU, with `act`.
    pub const fn all(act: Activation) -> Epi {
        Epi {
            bias: true,
            activation: act,
            row_scale: true,
            residual: true,
            swiglu: false,
            swiglu_two: false,
        }
    }
    pub const fn act(act: Activation) -> Epi {
        Epi {
            activation: act,
            ..Epi::NONE
        }
    }
    pub const SWIGLU: Epi = Epi {
        swiglu: true,
        ..Epi::NONE
    };
    pub const SWIGLU_ALL: Epi = Epi {
        bias: true,
        row_scale: true,
        residual: true,
        swiglu: true,
        ..Epi::NONE
    };
    pub const SWIGLU_TWO: Epi = Epi {
        swiglu_two: true,
        ..Epi::NONE
    };

    pub fn name(self) -> String {
        let mut s = Vec::new();
        if self.swiglu_two {
            s.push("swiglu(2 bufs)".to_string());
        } else if self.swiglu {
            s.push("swiglu".into());
        }
        if self.bias {
            s.push("bias".into());
        }
        if self.activation != Activation::None {
            s.push(self.activation.name().into());
        }
        if self.row_scale {
            s.push("row_scale".into());
        }
        if self.residual {
            s.push("residual".into());
        }
        if s.is_empty() {
            "plain".into()
        } else {
            s.join("+")
        }
    }
}

/// One GEMM problem (values as f32; they are rounded to the input type when run).
pub struct GemmCase {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub groups: Groups,
    pub epi: Epi,
    pub offsets: Option<Vec<i32>>,
    /// `[M, K]`.
    pub a: Vec<f32>,
    /// Per group `[N, K]`, or `[2N, K]` with one-buffer SwiGLU.
    pub b: Vec<f32>,
    /// Two-buffer SwiGLU: per group `[N, K]` up matrices (`b` holds the gates).
    pub up: Option<Vec<f32>>,
    pub bias: Option<Vec<f32>>,
    /// The bias has one row per group.
    pub bias_per_group: bool,
    pub row_scale: Option<Vec<f32>>,
    pub residual: Option<Vec<f32>>,
    pub label: String,
}

impl GemmCase {
    pub fn generate(m: usize, n: usize, k: usize, groups: Groups, epi: Epi, seed: u64) -> GemmCase {
        let mut r = Rng(seed);
        let offsets = groups.offsets(m, &mut r);
        let g = offsets.as_ref().map_or(1, |o| o.len() - 1);
        let swiglu = epi.swiglu || epi.swiglu_two;
        let b_rows = if epi.swiglu { 2 * n } else { n };
        let mut vals = |len: usize, range: f64| -> Vec<f32> {
            (0..len)
                .map(|_| ((r.unit() - 0.5) * 2.0 * range) as f32)
                .collect()
        };
        let a = vals(m * k, 1.0);
        let b = vals(g * b_rows * k, 1.0);
        let up = epi.swiglu_two.then(|| vals(g * n * k, 1.0));
        // Per-group bias on odd seeds of grouped cases.
        let bias_per_group = epi.bias && offsets.is_some() && seed % 2 == 1;
        let bias_rows = if swiglu { 2 * n } else { n };
        let bias = epi
            .bias
            .then(|| vals(bias_rows * if bias_per_group { g } else { 1 }, 1.0));
        let row_scale = epi.row_scale.then(|| vals(m, 2.0));
        let residual = epi.residual.then(|| vals(m * n, 2.0));
        GemmCase {
            m,
            n,
            k,
            groups,
            epi,
            offsets,
            a,
            b,
            up,
            bias,
            bias_per_group,
            row_scale,
            residual,
            label: format!("{m}x{n}x{k} {} {}", groups.name(), epi.name()),
        }
    }

    /// The op name of the case.
    pub fn op(&self) -> &'static str {
        if self.epi.swiglu_two {
            "gemm.grouped_swiglu"
        } else if self.offsets.is_some() {
            "gemm.grouped"
        } else {
            "gemm.dense"
        }
    }

    fn round<T: HalfFloat>(x: &[f32]) -> Vec<T> {
        x.iter().map(|&v| <T as HalfFloat>::from_f32(v)).collect()
    }

    /// The reference from the values rounded to `T` (operands) and `O` (residual).
    pub fn reference<T: HalfFloat, O: GemmOutput>(&self) -> Vec<f64> {
        let widen = |x: &[f32]| -> Vec<f32> {
            x.iter()
                .map(|&v| <T as HalfFloat>::from_f32(v).to_f32())
                .collect()
        };
        let a = widen(&self.a);
        let b = widen(&self.b);
        let up = self.up.as_ref().map(|u| widen(u));
        let (gate, up) = match (&up, self.epi.swiglu) {
            (Some(u), _) => (b, Some(u.clone())),
            (None, true) => {
                let per = self.n * self.k;
                let (mut g, mut u) = (Vec::new(), Vec::new());
                for grp in b.chunks(2 * per.max(1)) {
                    g.extend_from_slice(&grp[..per.min(grp.len())]);
                    u.extend_from_slice(&grp[per.min(grp.len())..]);
                }
                (g, Some(u))
            }
            (None, false) => (b, None),
        };
        let residual: Option<Vec<f64>> = self.residual.as_ref().map(|r| {
            r.iter()
                .map(|&v| <O as GemmOutput>::from_f32(v).to_f64())
                .collect()
        });
        reference::gemm(&reference::Problem {
            a: &a,
            gate: &gate,
            up: up.as_deref(),
            offsets: self.offsets.as_deref(),
            m: self.m,
            n: self.n,
            k: self.k,
            bias: self.bias.as_deref(),
            bias_per_group: self.bias_per_group,
            activation: self.epi.activation,
            row_scale: self.row_scale.as_deref(),
            residual: residual.as_deref(),
        })
    }

    /// Run the op on `dev` (outputs poisoned by the allocator on SIMT; `_into` variants write a
    /// buffer pre-filled with NaN), returning D widened to f32.
    pub fn run<T: HalfFloat, O: GemmOutput>(&self, dev: &Device) -> Result<Vec<f32>, String> {
        let a = up(dev, &Self::round::<T>(&self.a), "a")?;
        let b = up(dev, &Self::round::<T>(&self.b), "b")?;
        let upb = match &self.up {
            Some(u) => Some(up(dev, &Self::round::<T>(u), "up")?),
            None => None,
        };
        let offs = match &self.offsets {
            Some(o) => Some(up(dev, o, "offsets")?),
            None => None,
        };
        let bias = match &self.bias {
            Some(x) => Some(up(dev, x, "bias")?),
            None => None,
        };
        let scale = match &self.row_scale {
            Some(x) => Some(up(dev, x, "row_scale")?),
            None => None,
        };
        let res: Option<DeviceBuffer<O>> = match &self.residual {
            Some(x) => Some(up(
                dev,
                &x.iter()
                    .map(|&v| <O as GemmOutput>::from_f32(v))
                    .collect::<Vec<O>>(),
                "residual",
            )?),
            None => None,
        };
        let mut epi = Epilogue::<O>::new().activation(self.epi.activation);
        epi.bias = bias.as_ref();
        epi.row_scale = scale.as_ref();
        epi.residual = res.as_ref();
        epi.swiglu = self.epi.swiglu;
        let (m, n, k) = (self.m, self.n, self.k);
        let d = stage(dev, self.op(), || match (&offs, &upb) {
            (None, _) => gemm::dense::<T, O>(&a, &b, m, n, k, &epi),
            (Some(o), None) => gemm::grouped::<T, O>(&a, &b, o, m, n, k, &epi),
            (Some(o), Some(u)) => {
                if epi.bias.is_none() && epi.row_scale.is_none() && epi.residual.is_none() {
                    gemm::grouped_swiglu::<T, O>(&a, &b, u, o, m, n, k)
                } else {
                    let nan = vec![<O as GemmOutput>::from_f32(f32::NAN); m * n];
                    let mut d = dev.upload(&nan, "d")?;
                    gemm::grouped_swiglu_into::<T, O>(&a, &b, u, o, m, n, k, &epi, &mut d)?
                        .check()?;
                    Ok(d)
                }
            }
        })?;
        let d = d
            .download()
            .map_err(|e| format!("download of d failed: {e}"))?;
        Ok(d.iter().map(|x| x.to_f32()).collect())
    }

    /// The case for input `T` and output `O` on `dev`, against `reference` (from
    /// [`GemmCase::reference`] with the same types).
    pub fn outcome_against<T: HalfFloat, O: GemmOutput>(
        &self,
        dev: &Device,
        want: &[f64],
    ) -> Outcome {
        match self.run::<T, O>(dev) {
            Err(e) => Outcome::not_run(e),
            Ok(d) => {
                let e = rel_l2(&d, want);
                // Rows outside every group are exactly 0.
                let outside = self.offsets.as_ref().and_then(|o| {
                    let (lo, hi) = (o[0] as usize, o[o.len() - 1] as usize);
                    (0..self.m)
                        .filter(|&r| r < lo || r >= hi)
                        .find(|&r| d[r * self.n..(r + 1) * self.n].iter().any(|&x| x != 0.0))
                });
                let result = if let Some(r) = outside {
                    Err(format!("row {r} is outside every group but not 0"))
                } else if e <= tol::HALF {
                    Ok(())
                } else {
                    Err(format!(
                        "relative L2 {e:.3e} > {:.0e} (kernel gemm_{}_{})",
                        tol::HALF,
                        T::KIND.name(),
                        O::KIND.name()
                    ))
                };
                Outcome {
                    error: format!("{e:.2e}"),
                    result,
                }
            }
        }
    }

    pub fn outcome<T: HalfFloat, O: GemmOutput>(&self, dev: &Device) -> Outcome {
        self.outcome_against::<T, O>(dev, &self.reference::<T, O>())
    }

    /// The verify row for `T` in, `O` out.
    pub fn row<T: HalfFloat, O: GemmOutput>(&self, dev: &Device) -> Row {
        self.outcome::<T, O>(dev).row(
            self.op(),
            &format!("{}->{}", T::KIND.name(), O::KIND.name()),
            dev,
            self.label.clone(),
        )
    }
}

/// Every (input, output) type pair, as a function running a case: for loops over the pairs.
pub type Runner = fn(&GemmCase, &Device) -> Outcome;

/// The six (input, output) pairs and their names.
pub fn type_pairs() -> [(&'static str, Runner); 6] {
    [
        ("bf16->f32", |c, d| c.outcome::<bf16, f32>(d)),
        ("bf16->bf16", |c, d| c.outcome::<bf16, bf16>(d)),
        ("bf16->f16", |c, d| c.outcome::<bf16, f16>(d)),
        ("f16->f32", |c, d| c.outcome::<f16, f32>(d)),
        ("f16->bf16", |c, d| c.outcome::<f16, bf16>(d)),
        ("f16->f16", |c, d| c.outcome::<f16, f16>(d)),
    ]
}

/// The verify cases: (M, N, K, groups, epilogue). Sizes stay small because the SIMT executors
/// emulate every tensor-core instruction.
pub fn cases() -> Vec<(usize, usize, usize, Groups, Epi)> {
    vec![
        (100, 130, 70, Groups::Dense, Epi::NONE),
        (97, 61, 64, Groups::Dense, Epi::all(Activation::GeluTanh)),
        (64, 50, 40, Groups::Dense, Epi::all(Activation::GeluErf)),
        (37, 129, 33, Groups::Dense, Epi::all(Activation::Silu)),
        (90, 70, 48, Groups::Dense, Epi::SWIGLU_ALL),
        (150, 40, 56, Groups::Uniform(5), Epi::all(Activation::Silu)),
        (140, 33, 24, Groups::Skewed(9), Epi::SWIGLU),
        (120, 45, 40, Groups::Outside(4), Epi::SWIGLU_TWO),
    ]
}

/// The gemm rows of one device: every case with bf16 in / f32 out and f16 in / bf16 out, and
/// the first case with every type pair.
pub fn rows(dev: &Device) -> Vec<Row> {
    let mut out = Vec::new();
    for (j, &(m, n, k, g, e)) in cases().iter().enumerate() {
        let c = GemmCase::generate(m, n, k, g, e, 0x6e_3300 + j as u64);
        out.push(c.row::<bf16, f32>(dev));
        out.push(c.row::<f16, bf16>(dev));
        if j == 0 {
            out.push(c.row::<bf16, bf16>(dev));
            out.push(c.row::<bf16, f16>(dev));
            out.push(c.row::<f16, f32>(dev));
            out.push(c.row::<f16, f16>(dev));
        }
    }
    out
}
