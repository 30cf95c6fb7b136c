//! A realistic checkpoint-pair generator for tests and benches.
//!
//! A small transformer's fp32 master weights are trained with AdamW on synthetic gradients
//! (a persistent per-element drift plus noise, so Adam's normalised steps look like real
//! ones); the bf16 checkpoints are round-to-nearest-even casts of the master weights at two
//! steps `steps_between` apart. Embedding rows get gradients only when their token is sampled
//! (Zipf-distributed ids), so rare rows barely move. Norm weights (near 1.0) and biases are
//! 1-D. Early training: a large learning rate; late training: a small, decayed one, where most
//! bf16 values do not change between checkpoints.

use std::path::Path;

use half::bf16;
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};

/// Model and training-stage parameters.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub vocab: usize,
    pub d_model: usize,
    pub layers: usize,
    pub d_ff: usize,
    /// Tokens sampled per step (their embedding rows get gradients).
    pub tokens_per_step: usize,
    pub seed: u64,
}

impl SynthConfig {
    /// About 0.4M parameters: for tests.
    pub fn tiny() -> Self {
        SynthConfig {
            vocab: 1024,
            d_model: 128,
            layers: 2,
            d_ff: 512,
            tokens_per_step: 256,
            seed: 1,
        }
    }
    /// About 23M parameters (the size of the paper's measured model): for the bench.
    pub fn bench() -> Self {
        SynthConfig {
            vocab: 8192,
            d_model: 512,
            layers: 6,
            d_ff: 2048,
            tokens_per_step: 4096,
            seed: 7,
        }
    }
    /// Parameter count.
    pub fn params(&self) -> usize {
        self.tensors()
            .iter()
            .map(|t| t.1.iter().product::<usize>())
            .sum()
    }

    fn tensors(&self) -> Vec<(String, Vec<usize>, Kind)> {
        let (d, f) = (self.d_model, self.d_ff);
        let mut v = vec![("embed.weight".to_string(), vec![self.vocab, d], Kind::Embed)];
        for l in 0..self.layers {
            let p = format!("layers.{l}");
            v.push((format!("{p}.attn_norm.weight"), vec![d], Kind::Norm));
            for q in ["q", "k", "v", "o"] {
                v.push((format!("{p}.attn.{q}.weight"), vec![d, d], Kind::Matrix));
            }
            v.push((format!("{p}.mlp_norm.weight"), vec![d], Kind::Norm));
            v.push((format!("{p}.mlp.up.weight"), vec![f, d], Kind::Matrix));
            v.push((format!("{p}.mlp.up.bias"), vec![f], Kind::Bias));
            v.push((format!("{p}.mlp.down.weight"), vec![d, f], Kind::Matrix));
        }
        v.push(("final_norm.weight".into(), vec![d], Kind::Norm));
        v
    }
}

/// Training stage of a generated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Warm-up peak: lr 1e-3, checkpoints 20 steps apart; nearly every element changes.
    Early,
    /// Decayed: lr 5e-6, checkpoints 20 steps apart; most bf16 values stay the same.
    Late,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Embed,
    Matrix,
    Norm,
    Bias,
}

/// splitmix64 with normals from Box-Muller, both of each pair used.
struct Rng(u64, Option<f32>);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        if let Some(x) = self.1.take() {
            return x;
        }
        let (u, v) = (self.unit(), self.unit());
        let r = (-2.0 * u.ln()).sqrt();
        let (s, c) = (std::f32::consts::TAU * v).sin_cos();
        self.1 = Some(r * s);
        r * c
    }
}

/// Write a pair of consecutive bf16 checkpoints (`base`, then `new`) of `stage` to two
/// safetensors files. Also stores one i64 tensor (a step counter) and `__metadata__`
/// (`{"format": "pt"}`); the same arguments give the same bytes.
// The step index drives the per-step token sample, the bias correction and the checkpoint.
#[allow(clippy::needless_range_loop)]
pub fn write_pair(cfg: &SynthConfig, stage: Stage, base: &Path, new: &Path) -> Result<()> {
    let (lr, warm, between) = match stage {
        Stage::Early => (1e-3f32, 10usize, 20usize),
        Stage::Late => (5e-6f32, 30, 20),
    };
    let (b1, b2, eps, wd) = (0.9f32, 0.999f32, 1e-8f32, 0.1f32);
    let specs = cfg.tensors();
    let mut base_t: Vec<Vec<bf16>> = Vec::new();
    let mut new_t: Vec<Vec<bf16>> = Vec::new();
    for (ti, (_, shape, kind)) in specs.iter().enumerate() {
        let n: usize = shape.iter().product();
        let row = *shape.last().unwrap_or(&1);
        let seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(ti as u64);
        // Which embedding rows are touched at each step (Zipf-like: id = vocab^u - 1).
        let mut touched: Vec<Vec<bool>> = Vec::new();
        if *kind == Kind::Embed {
            let mut r = Rng(seed ^ 0xE5, None);
            let rows = shape[0];
            for _ in 0..warm + between {
                let mut t = vec![false; rows];
                for _ in 0..cfg.tokens_per_step {
                    let id = ((rows as f32).powf(r.unit()) - 1.0) as usize;
                    t[id.min(rows - 1)] = true;
                }
                touched.push(t);
            }
        }
        // Adam's bias corrections per step (a run well past step 0), computed once.
        let corr: Vec<(f32, f32)> = (0..warm + between)
            .map(|s| {
                let step = (s + 100) as i32;
                (1.0 - b1.powi(step), 1.0 - b2.powi(step))
            })
            .collect();
        let decay = if *kind == Kind::Norm || *kind == Kind::Bias {
            0.0
        } else {
            wd
        };
        const CH: usize = 1 << 14;
        let parts: Vec<(Vec<bf16>, Vec<bf16>)> = (0..n.div_ceil(CH))
            .into_par_iter()
            .map(|c| {
                let lo = c * CH;
                let hi = (lo + CH).min(n);
                let mut r = Rng(seed.wrapping_mul(31).wrapping_add(c as u64), None);
                let (mut bo, mut no) = (Vec::with_capacity(hi - lo), Vec::with_capacity(hi - lo));
                for i in lo..hi {
                    let mut w = match kind {
                        Kind::Norm => 1.0 + 0.05 * r.normal(),
                        Kind::Bias => 0.01 * r.normal(),
                        _ => 0.02 * r.normal(),
                    };
                    // Gradient model: drift mu plus noise of scale sigma (per element).
                    let sigma = 1e-3 * (0.5 + r.unit());
                    let mu = 0.3 * sigma * r.normal();
                    let (mut m, mut v) = (0f32, sigma * sigma);
                    let mut out_base = bf16::ZERO;
                    for s in 0..warm + between {
                        let g = if *kind == Kind::Embed
                            && !touched.get(s).is_some_and(|t| t[i / row])
                        {
                            0.0
                        } else {
                            mu + sigma * r.normal()
                        };
                        m = b1 * m + (1.0 - b1) * g;
                        v = b2 * v + (1.0 - b2) * g * g;
                        let mh = m / corr[s].0;
                        let vh = v / corr[s].1;
                        w -= lr * (mh / (vh.sqrt() + eps) + decay * w);
                        if s + 1 == warm {
                            out_base = bf16::from_f32(w);
                        }
                    }
                    bo.push(out_base);
                    no.push(bf16::from_f32(w));
                }
                (bo, no)
            })
            .collect();
        let (mut bv, mut nv) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (b, x) in parts {
            bv.extend(b);
            nv.extend(x);
        }
        base_t.push(bv);
        new_t.push(nv);
    }
    let step_b = 1000i64.to_le_bytes();
    let step_n = (1000 + between as i64).to_le_bytes();
    write_st(&specs, &base_t, &step_b, base)?;
    write_st(&specs, &new_t, &step_n, new)
}

fn write_st(
    specs: &[(String, Vec<usize>, Kind)],
    data: &[Vec<bf16>],
    step: &[u8],
    path: &Path,
) -> Result<()> {
    let err = |e: safetensors::SafeTensorError| Error::Format {
        context: format!("writing {}", path.display()),
        msg: e.to_string(),
    };
    let mut views = Vec::new();
    for ((name, shape, _), d) in specs.iter().zip(data) {
        views.push((
            name.clone(),
            TensorView::new(Dtype::BF16, shape.clone(), bytemuck::cast_slice(d)).map_err(err)?,
        ));
    }
    views.push((
        "step".into(),
        TensorView::new(Dtype::I64, vec![], step).map_err(err)?,
    ));
    // One metadata key: with more, the JSON key order would follow the HashMap's random
    // order and the files would not be byte-for-byte reproducible.
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    // Written beside the target and renamed: a failed write leaves no partial file in its place.
    let tmp = super::format::TempPath::beside("ckpt::synth", path)?;
    safetensors::serialize_to_file(views, Some(meta), tmp.path()).map_err(err)?;
    tmp.persist()
}
