//! The SpecDiff driver (arXiv 2509.13848): a small diffusion transformer (DiT) sampled with a
//! rectified-flow Euler sampler, with four ways to spend less compute per step, measured against
//! sampling with no cache.
//!
//! # The model
//!
//! DiT without class labels: patchify (a `p×p` patch of `C` channels is one token, its vector in
//! `(c, py, px)` order, the flattening of DiT's convolution weight), a linear patch embedding plus
//! the fixed 2-D sin-cos position embedding, `L` blocks with adaLN-Zero conditioning on the
//! timestep, and DiT's final layer (adaLN, a linear to `p·p·C` per token in `(py, px, c)` order,
//! unpatchify). A block, with `(shift, scale, gate)` pairs from `adaLN_modulation(silu(c))`:
//!
//! ```text
//! x = x + gate_msa ⊙ proj(attention(q, k, v of LN(x)·(1 + scale_msa) + shift_msa))
//! x = x + gate_mlp ⊙ fc2(gelu_tanh(fc1(LN(x)·(1 + scale_mlp) + shift_mlp)))
//! ```
//!
//! with LayerNorm without affine (eps 1e-6), full (bidirectional) attention, and the timestep
//! embedding `c = mlp(sinusoid(1000·t))` (256 frequencies, `cos` then `sin`). The sampler goes
//! from `t = 1` (noise) to `t = 0` in `S` equal steps: `x ← x + (t_next − t)·v(x, t)`.
//!
//! The matrix products run as tessera ops on the device at hand: every linear is
//! [`crate::ops::gemm::dense`] (bf16 operands, f32 out, bias and GELU fused), attention is
//! [`crate::ops::attention::forward`], and the feature cache is `ops::featcache` (`received`,
//! `select`, `gather`, `scatter`, `reuse`, `age`). The glue between them (LayerNorm and
//! modulation, the gated residuals, the timestep MLP and adaLN matrix-vector products, patchify,
//! the sampler update) is host f32 code: the driver is thin, and on a GPU that glue would cost
//! transfers. FLOPs count the GEMMs and attention (`2mnk` per GEMM, `4·rows·N·d` per attention,
//! `2·rows·N·d` per `received`); the glue's O(N·d) work is not counted.
//!
//! # Modes
//!
//! Every cached mode runs the first `warmup` steps in full (default 2), so each token has cached
//! features and an attention history before any is reused.
//!
//! * [`Mode::NoCache`]: every step computes every token: the reference.
//! * [`Mode::SpecDiff`]: per step, `his` = the attention each token received in the previous step
//!   (summed over heads and blocks; `featcache.received` on the queries that step computed),
//!   `fut` = the attention it receives in a two-step self-speculative look-ahead, and `cf` its
//!   cache count; `featcache.select` splits the tokens into C1 (recomputed), C2 (reuse the
//!   newest cached feature) and C3 (the weighted sum of the last three). The look-ahead (our
//!   reading of the paper, which has no public code): extrapolate the latent two steps with the
//!   previous step's velocity, `x̂ = x + (t_{i+2} − t_i)·v_{i−1}`, embed it and run block 0's
//!   attention on all tokens at `t_{i+2}`; `fut` is `received` of that attention. Its FLOPs are
//!   counted.
//! * [`Mode::Toca`] (ToCa-style): C1 is the top of `received · e^cf` (history only, no look-ahead;
//!   `featcache.select` with `fut = 1` and `low_mass = 1`), every other token reuses its newest
//!   cached feature. ToCa combines several scores; this is the attention-plus-cache-age form.
//! * [`Mode::StepSkip`] (TeaCache-style): the indicator is block 0's modulated input; its relative
//!   L1 change from the previous step accumulates, and while the sum stays below `threshold` the
//!   whole step is skipped and reuses the last computed step's residual (`x_L − x_0`); a computed
//!   step resets the sum.
//!
//! The cached feature of a token is, per block, the block's update `x_{l+1} − x_l` of that token:
//! a partial step gathers the C1 tokens of `x_l` (`featcache.gather`), recomputes them through the
//! block with K and V from every token of `x_l` (so C1 queries see the whole image), scatters the
//! new updates back and into the ring (`featcache.scatter`), fills the other tokens' updates from
//! the ring (`featcache.reuse`), and adds them: `x_{l+1} = x_l + update`. After the blocks,
//! `featcache.age` resets or increments `cf`.
//!
//! # Weights
//!
//! Random from a seed ([`Model::random`]) or read from safetensors ([`Model::from_safetensors`],
//! f32 or bf16; [`Model::to_safetensors`] writes f32). DiT's names, with `d` the hidden size, `P =
//! p·p·C`, `F = mlp_ratio·d`:
//!
//! | tensor | shape |
//! |---|---|
//! | `x_embedder.proj.weight`, `.bias` | `[d, C, p, p]`, `[d]` |
//! | `t_embedder.mlp.0.weight`, `.bias` | `[d, 256]`, `[d]` |
//! | `t_embedder.mlp.2.weight`, `.bias` | `[d, d]`, `[d]` |
//! | `blocks.{l}.adaLN_modulation.1.weight`, `.bias` | `[6d, d]`, `[6d]` |
//! | `blocks.{l}.attn.qkv.weight`, `.bias` | `[3d, d]`, `[3d]` |
//! | `blocks.{l}.attn.proj.weight`, `.bias` | `[d, d]`, `[d]` |
//! | `blocks.{l}.mlp.fc1.weight`, `.bias` | `[F, d]`, `[F]` |
//! | `blocks.{l}.mlp.fc2.weight`, `.bias` | `[d, F]`, `[d]` |
//! | `final_layer.adaLN_modulation.1.weight`, `.bias` | `[2d, d]`, `[2d]` |
//! | `final_layer.linear.weight`, `.bias` | `[P, d]`, `[P]` |
//!
//! The file's `__metadata__` holds `heads`, `height`, `width` and `steps` (strings); `C`, `p`,
//! `d`, `F` and `L` come from the shapes. The position embedding is computed, not stored.

pub mod plot;

use std::collections::HashMap;
use std::time::Instant;

use half::bf16;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::Serialize;

use crate::device::{Backend, Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::attention::{self, Attention};
use crate::ops::featcache::{self, Ring};
use crate::ops::gemm::{self, Activation, Epilogue};
use crate::testing::Rng;

const OP: &str = "drivers::specdiff";
/// Frequencies of the timestep embedding (DiT's `frequency_embedding_size`).
pub const FREQ: usize = 256;
const LN_EPS: f32 = 1e-6;

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, msg)
}

/// The shape of the DiT and the sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Latent height (a multiple of `patch`).
    pub height: usize,
    /// Latent width (a multiple of `patch`).
    pub width: usize,
    /// Latent channels `C`.
    pub channels: usize,
    /// Patch size `p`.
    pub patch: usize,
    /// Hidden size `d`.
    pub hidden: usize,
    /// Attention heads (`d / heads` must be 64 or 128, the head sizes of `attention.forward`).
    pub heads: usize,
    /// Blocks `L`.
    pub blocks: usize,
    /// MLP hidden size over `d`.
    pub mlp_ratio: usize,
    /// Sampling steps `S`.
    pub steps: usize,
}

impl Config {
    /// The curve's model: a 32×32×4 latent in 2×2 patches (256 tokens), `d` 128, 2 heads, 4
    /// blocks, 12 steps.
    pub fn small() -> Config {
        Config {
            height: 32,
            width: 32,
            channels: 4,
            patch: 2,
            hidden: 128,
            heads: 2,
            blocks: 4,
            mlp_ratio: 4,
            steps: 12,
        }
    }

    /// The test model: a 16×16×4 latent (64 tokens), one block, 5 steps (seconds on host SIMT).
    pub fn tiny() -> Config {
        Config {
            height: 16,
            width: 16,
            blocks: 1,
            steps: 5,
            ..Config::small()
        }
    }

    /// Tokens `N`.
    pub fn tokens(&self) -> usize {
        (self.height / self.patch.max(1)) * (self.width / self.patch.max(1))
    }

    /// Values per patch `P = p·p·C`.
    pub fn patch_dim(&self) -> usize {
        self.patch * self.patch * self.channels
    }

    /// `d / heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }

    /// Values in the latent.
    pub fn latent_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Errors: a size of 0, a latent side that `patch` does not divide, `d` not `heads × 64` or
    /// `heads × 128`, an odd `d` for the sin-cos embedding.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if [
            c.height, c.width, c.channels, c.patch, c.hidden, c.heads, c.blocks,
        ]
        .contains(&0)
            || c.mlp_ratio == 0
            || c.steps == 0
        {
            return Err(invalid(format!("a size is 0 in {c:?}")));
        }
        if c.height % c.patch != 0 || c.width % c.patch != 0 {
            return Err(invalid(format!(
                "patch {} does not divide the {}×{} latent",
                c.patch, c.height, c.width
            )));
        }
        if c.hidden % c.heads != 0 || !matches!(c.head_dim(), 64 | 128) {
            return Err(invalid(format!(
                "hidden {} over {} heads is not a head size of 64 or 128",
                c.hidden, c.heads
            )));
        }
        if c.hidden % 4 != 0 {
            return Err(invalid(
                "hidden must be a multiple of 4 (2-D sin-cos embedding)",
            ));
        }
        Ok(())
    }
}

/// A sampling mode.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// Every token at every step.
    NoCache,
    /// SpecDiff's three classes with cache ratio `cr` and C2's `low_mass`.
    SpecDiff {
        /// Cache ratio: the fraction of tokens not recomputed.
        cr: f64,
        /// C2's share of the total score.
        low_mass: f64,
    },
    /// ToCa-style: the top `1 − cr` by `received · e^cf` recomputed, the rest reuse.
    Toca {
        /// Cache ratio.
        cr: f64,
    },
    /// TeaCache-style step skipping below an accumulated relative-change `threshold`.
    StepSkip {
        /// The accumulated relative L1 change below which a step is skipped.
        threshold: f64,
    },
}

impl Mode {
    /// The mode's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::NoCache => "no-cache",
            Mode::SpecDiff { .. } => "specdiff",
            Mode::Toca { .. } => "toca",
            Mode::StepSkip { .. } => "step-skip",
        }
    }

    /// The swept parameter (`cr` or `threshold`), if any.
    pub fn param(&self) -> Option<f64> {
        match *self {
            Mode::NoCache => None,
            Mode::SpecDiff { cr, .. } | Mode::Toca { cr } => Some(cr),
            Mode::StepSkip { threshold } => Some(threshold),
        }
    }

    fn validate(&self) -> Result<()> {
        let unit = |what: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(invalid(format!("{what} = {v} is outside [0, 1]")))
            }
        };
        match *self {
            Mode::NoCache => Ok(()),
            Mode::SpecDiff { cr, low_mass } => unit("cr", cr).and(unit("low_mass", low_mass)),
            Mode::Toca { cr } => unit("cr", cr),
            Mode::StepSkip { threshold } => {
                if threshold.is_finite() && threshold >= 0.0 {
                    Ok(())
                } else {
                    Err(invalid(format!("threshold = {threshold} is not >= 0")))
                }
            }
        }
    }
}

/// One linear layer on the device: `w` `[out, inp]` bf16, `b` `[out]` f32.
struct Linear {
    w: DeviceBuffer<bf16>,
    b: DeviceBuffer<f32>,
    out: usize,
    inp: usize,
}

/// A host matrix-vector layer (`w` `[out, inp]`).
struct HostLinear {
    w: Vec<f32>,
    b: Vec<f32>,
    out: usize,
    inp: usize,
}

impl HostLinear {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        (0..self.out)
            .map(|o| {
                let row = &self.w[o * self.inp..(o + 1) * self.inp];
                self.b[o] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect()
    }
}

struct Block {
    ada: HostLinear,
    q: Linear,
    kv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
}

/// A DiT on a device (see the module docs).
pub struct Model {
    cfg: Config,
    dev: Device,
    /// The tensors by name, host f32 (what [`Model::to_safetensors`] writes).
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    embed: Linear,
    t1: HostLinear,
    t2: HostLinear,
    blocks: Vec<Block>,
    final_ada: HostLinear,
    final_lin: Linear,
    pos: Vec<f32>,
}

/// The tensor names and shapes of a configuration, in file order.
pub fn tensor_shapes(c: &Config) -> Vec<(String, Vec<usize>)> {
    let (d, p, f) = (c.hidden, c.patch, c.mlp_ratio * c.hidden);
    let mut v = vec![
        ("x_embedder.proj.weight".into(), vec![d, c.channels, p, p]),
        ("x_embedder.proj.bias".into(), vec![d]),
        ("t_embedder.mlp.0.weight".into(), vec![d, FREQ]),
        ("t_embedder.mlp.0.bias".into(), vec![d]),
        ("t_embedder.mlp.2.weight".into(), vec![d, d]),
        ("t_embedder.mlp.2.bias".into(), vec![d]),
    ];
    for l in 0..c.blocks {
        for (name, shape) in [
            ("adaLN_modulation.1.weight", vec![6 * d, d]),
            ("adaLN_modulation.1.bias", vec![6 * d]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.qkv.bias", vec![3 * d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("mlp.fc1.weight", vec![f, d]),
            ("mlp.fc1.bias", vec![f]),
            ("mlp.fc2.weight", vec![d, f]),
            ("mlp.fc2.bias", vec![d]),
        ] {
            v.push((format!("blocks.{l}.{name}"), shape));
        }
    }
    v.push((
        "final_layer.adaLN_modulation.1.weight".into(),
        vec![2 * d, d],
    ));
    v.push(("final_layer.adaLN_modulation.1.bias".into(), vec![2 * d]));
    v.push(("final_layer.linear.weight".into(), vec![c.patch_dim(), d]));
    v.push(("final_layer.linear.bias".into(), vec![c.patch_dim()]));
    v
}

fn bad_file(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, format!("safetensors: {msg}"))
}

impl Model {
    /// Random weights from `seed`: every weight uniform in `±1/√fan_in`, biases in `±0.02`.
    pub fn random(dev: &Device, cfg: Config, seed: u64) -> Result<Model> {
        cfg.validate()?;
        let mut rng = Rng(seed);
        let tensors = tensor_shapes(&cfg)
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let a = if shape.len() == 1 {
                    0.02
                } else {
                    1.0 / (shape[1..].iter().product::<usize>() as f64).sqrt()
                };
                let v = (0..n)
                    .map(|_| ((rng.unit() * 2.0 - 1.0) * a) as f32)
                    .collect();
                (name, shape, v)
            })
            .collect();
        Self::assemble(dev, cfg, tensors)
    }

    /// A model from safetensors bytes (names and metadata in the module docs; f32 or bf16).
    ///
    /// Errors: a missing tensor or metadata key, a shape that does not fit the others, another
    /// dtype, a configuration [`Config::validate`] rejects.
    pub fn from_safetensors(dev: &Device, bytes: &[u8]) -> Result<Model> {
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad_file)?;
        let st = SafeTensors::deserialize(bytes).map_err(bad_file)?;
        let md: HashMap<String, String> = meta.metadata().clone().unwrap_or_default();
        let num = |key: &str| -> Result<usize> {
            md.get(key)
                .ok_or_else(|| bad_file(format!("__metadata__ has no `{key}`")))?
                .parse()
                .map_err(|_| bad_file(format!("__metadata__ `{key}` is not a number")))
        };
        let tensor = |name: &str| -> Result<TensorView<'_>> {
            st.tensor(name)
                .map_err(|_| bad_file(format!("no tensor `{name}`")))
        };
        let embed = tensor("x_embedder.proj.weight")?;
        let es = embed.shape().to_vec();
        if es.len() != 4 || es[2] != es[3] {
            return Err(bad_file(format!(
                "`x_embedder.proj.weight` has shape {es:?}, not [d, C, p, p]"
            )));
        }
        let fc1 = tensor("blocks.0.mlp.fc1.weight")?;
        let blocks = (0..)
            .take_while(|l| st.tensor(&format!("blocks.{l}.attn.qkv.weight")).is_ok())
            .count();
        let cfg = Config {
            height: num("height")?,
            width: num("width")?,
            channels: es[1],
            patch: es[2],
            hidden: es[0],
            heads: num("heads")?,
            blocks,
            mlp_ratio: fc1.shape().first().copied().unwrap_or(0) / es[0].max(1),
            steps: num("steps")?,
        };
        cfg.validate()?;
        let tensors = tensor_shapes(&cfg)
            .into_iter()
            .map(|(name, shape)| {
                let t = tensor(&name)?;
                if t.shape() != shape.as_slice() {
                    return Err(bad_file(format!(
                        "`{name}` has shape {:?}, expected {shape:?}",
                        t.shape()
                    )));
                }
                let v: Vec<f32> = match t.dtype() {
                    Dtype::F32 => t
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                    Dtype::BF16 => t
                        .data()
                        .chunks_exact(2)
                        .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                    o => return Err(bad_file(format!("`{name}` is {o:?}, not F32 or BF16"))),
                };
                Ok((name, shape, v))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::assemble(dev, cfg, tensors)
    }

    /// The weights as safetensors (f32, the module docs' names and metadata).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let owned: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(n, s, v)| (n.clone(), s.clone(), bytemuck::cast_slice(v).to_vec()))
            .collect();
        let views = owned
            .iter()
            .map(|(n, s, b)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(bad_file)
            })
            .collect::<Result<Vec<_>>>()?;
        let c = &self.cfg;
        let md: HashMap<String, String> = [
            ("heads", c.heads),
            ("height", c.height),
            ("width", c.width),
            ("steps", c.steps),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        safetensors::serialize(views, Some(md)).map_err(bad_file)
    }

    fn assemble(
        dev: &Device,
        cfg: Config,
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Model> {
        // Every name of tensor_shapes is present: `tensors` was built from it.
        let find = |name: &str| {
            tensors
                .iter()
                .find(|t| t.0 == name)
                .expect("tensor_shapes lists every name")
        };
        let host = |w: &str, b: &str| {
            let (wt, bt) = (find(w), find(b));
            HostLinear {
                w: wt.2.clone(),
                b: bt.2.clone(),
                out: wt.1[0],
                inp: wt.1[1..].iter().product(),
            }
        };
        let device = |w: &[f32], b: &[f32], out: usize, inp: usize| -> Result<Linear> {
            let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
            Ok(Linear {
                w: dev.upload(&wb, "specdiff.w")?,
                b: dev.upload(b, "specdiff.b")?,
                out,
                inp,
            })
        };
        let lin = |name: &str| -> Result<Linear> {
            let h = host(&format!("{name}.weight"), &format!("{name}.bias"));
            device(&h.w, &h.b, h.out, h.inp)
        };
        let d = cfg.hidden;
        let mut blocks = Vec::new();
        for l in 0..cfg.blocks {
            let qkv = host(
                &format!("blocks.{l}.attn.qkv.weight"),
                &format!("blocks.{l}.attn.qkv.bias"),
            );
            blocks.push(Block {
                ada: host(
                    &format!("blocks.{l}.adaLN_modulation.1.weight"),
                    &format!("blocks.{l}.adaLN_modulation.1.bias"),
                ),
                q: device(&qkv.w[..d * d], &qkv.b[..d], d, d)?,
                kv: device(&qkv.w[d * d..], &qkv.b[d..], 2 * d, d)?,
                proj: lin(&format!("blocks.{l}.attn.proj"))?,
                fc1: lin(&format!("blocks.{l}.mlp.fc1"))?,
                fc2: lin(&format!("blocks.{l}.mlp.fc2"))?,
            });
        }
        Ok(Model {
            cfg,
            dev: dev.clone(),
            embed: lin("x_embedder.proj")?,
            t1: host("t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias"),
            t2: host("t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias"),
            final_ada: host(
                "final_layer.adaLN_modulation.1.weight",
                "final_layer.adaLN_modulation.1.bias",
            ),
            final_lin: lin("final_layer.linear")?,
            pos: pos_embed(&cfg),
            blocks,
            tensors,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }
}

/// DiT's fixed 2-D sin-cos position embedding `[N, d]`: the first half of each row embeds the
/// token's row, the second its column, each as `sin` then `cos` of `pos·ω_j`,
/// `ω_j = 10000^(−j/(d/4))`.
fn pos_embed(c: &Config) -> Vec<f32> {
    let (gh, gw, d) = (c.height / c.patch, c.width / c.patch, c.hidden);
    let quarter = d / 4;
    let mut out = vec![0.0f32; gh * gw * d];
    for y in 0..gh {
        for x in 0..gw {
            let row = &mut out[(y * gw + x) * d..(y * gw + x + 1) * d];
            for (half, pos) in [(0, y), (1, x)] {
                for j in 0..quarter {
                    let omega = 10000f64.powf(-(j as f64) / quarter as f64);
                    let a = pos as f64 * omega;
                    row[half * d / 2 + j] = a.sin() as f32;
                    row[half * d / 2 + quarter + j] = a.cos() as f32;
                }
            }
        }
    }
    out
}

/// `[cos(τ·f_j), sin(τ·f_j)]`, `f_j = 10000^(−j/128)`, `τ = 1000·t`.
fn timestep_frequencies(t: f32) -> Vec<f32> {
    let half = FREQ / 2;
    let tau = 1000.0 * t as f64;
    let mut v = vec![0.0f32; FREQ];
    for j in 0..half {
        let a = tau * (-(10000f64.ln()) * j as f64 / half as f64).exp();
        v[j] = a.cos() as f32;
        v[half + j] = a.sin() as f32;
    }
    v
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Per row of `x` (`[rows, d]`): `LN(x)·(1 + scale) + shift`.
fn ln_modulate(x: &[f32], d: usize, shift: &[f32], scale: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let rstd = 1.0 / (var + LN_EPS).sqrt();
        for j in 0..d {
            o[j] = (row[j] - mean) * rstd * (1.0 + scale[j]) + shift[j];
        }
    }
    out
}

/// `x + gate ⊙ y` per row.
fn gated_add(x: &[f32], y: &[f32], d: usize, gate: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(y)
        .enumerate()
        .map(|(i, (a, b))| a + gate[i % d] * b)
        .collect()
}

/// The FLOPs of one sampling run.
#[derive(Default)]
struct Tally {
    flops: f64,
}

/// The six modulation vectors of a block (or two of the final layer).
fn chunks(v: Vec<f32>, d: usize) -> Vec<Vec<f32>> {
    v.chunks_exact(d).map(|c| c.to_vec()).collect()
}

impl Model {
    fn linear(
        &self,
        lin: &Linear,
        x: &[f32],
        rows: usize,
        act: Activation,
        t: &mut Tally,
    ) -> Result<Vec<f32>> {
        if rows == 0 {
            return Ok(Vec::new());
        }
        let a: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let a = self.dev.upload(&a, "specdiff.a")?;
        let epi = Epilogue::<f32>::new().bias(&lin.b).activation(act);
        let y = gemm::dense(&a, &lin.w, rows, lin.out, lin.inp, &epi)?;
        t.flops += gemm::flops(rows, lin.out, lin.inp, false);
        y.download()
    }

    /// Attention of `rows` queries (`q` `[rows, d]`) over all `n` tokens (`kv` `[n, 2d]`: K then
    /// V per token); returns O `[rows, d]` and the attention each token received (summed over
    /// heads).
    fn attend(
        &self,
        q: &[f32],
        kv: &[f32],
        rows: usize,
        n: usize,
        t: &mut Tally,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let c = &self.cfg;
        let d = c.hidden;
        let to = |v: &[f32]| -> Vec<bf16> { v.iter().map(|&x| bf16::from_f32(x)).collect() };
        let (mut k, mut v) = (Vec::with_capacity(n * d), Vec::with_capacity(n * d));
        for row in kv.chunks_exact(2 * d) {
            k.extend_from_slice(&to(&row[..d]));
            v.extend_from_slice(&to(&row[d..]));
        }
        let dev = &self.dev;
        let qb = dev.upload(&to(q), "specdiff.q")?;
        let kb = dev.upload(&k, "specdiff.k")?;
        let vb = dev.upload(&v, "specdiff.v")?;
        let cu_q = dev.upload(&[0, rows as i32], "specdiff.cu_q")?;
        let cu_kv = dev.upload(&[0, n as i32], "specdiff.cu_kv")?;
        let a = Attention::full(&qb, &kb, &vb)
            .heads(c.heads, c.heads)
            .head_dim(c.head_dim())
            .seqlens(&cu_q, &cu_kv, rows, n)
            .build()?;
        let out = attention::forward(&a)?.checked()?;
        let received = featcache::received(&a, &out.lse, false)?.download()?;
        t.flops += 6.0 * (rows * n * d) as f64;
        Ok((out.o.download()?, received))
    }

    /// Block `l` on the rows `xr` (`[r, d]`) with K/V from every token of `x` (`[N, d]`):
    /// the rows' updates and the attention each token received.
    fn block(
        &self,
        l: usize,
        x: &[f32],
        xr: &[f32],
        r: usize,
        m: &[Vec<f32>],
        t: &mut Tally,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let b = &self.blocks[l];
        let (n, d) = (self.cfg.tokens(), self.cfg.hidden);
        let h_all = ln_modulate(x, d, &m[0], &m[1]);
        let kv = self.linear(&b.kv, &h_all, n, Activation::None, t)?;
        let h = ln_modulate(xr, d, &m[0], &m[1]);
        let q = self.linear(&b.q, &h, r, Activation::None, t)?;
        let (o, received) = self.attend(&q, &kv, r, n, t)?;
        let a = self.linear(&b.proj, &o, r, Activation::None, t)?;
        let x1 = gated_add(xr, &a, d, &m[2]);
        let h2 = ln_modulate(&x1, d, &m[3], &m[4]);
        let f = self.linear(&b.fc1, &h2, r, Activation::GeluTanh, t)?;
        let g = self.linear(&b.fc2, &f, r, Activation::None, t)?;
        let x2 = gated_add(&x1, &g, d, &m[5]);
        Ok((x2.iter().zip(xr).map(|(a, b)| a - b).collect(), received))
    }

    /// The conditioning `silu(c)` at time `t`.
    fn cond(&self, t: f32) -> Vec<f32> {
        let h: Vec<f32> = self
            .t1
            .apply(&timestep_frequencies(t))
            .into_iter()
            .map(silu)
            .collect();
        self.t2.apply(&h).into_iter().map(silu).collect()
    }

    /// Patchify and embed a latent (`[H, W, C]`, channels last): tokens `[N, d]`.
    fn embed(&self, latent: &[f32], t: &mut Tally) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let (p, gw) = (c.patch, c.width / c.patch);
        let mut patches = vec![0.0f32; c.tokens() * c.patch_dim()];
        for (tok, out) in patches.chunks_exact_mut(c.patch_dim()).enumerate() {
            let (gy, gx) = (tok / gw, tok % gw);
            for ch in 0..c.channels {
                for py in 0..p {
                    for px in 0..p {
                        let (y, x) = (gy * p + py, gx * p + px);
                        out[(ch * p + py) * p + px] = latent[(y * c.width + x) * c.channels + ch];
                    }
                }
            }
        }
        let e = self.linear(&self.embed, &patches, c.tokens(), Activation::None, t)?;
        Ok(e.iter().zip(&self.pos).map(|(a, b)| a + b).collect())
    }

    /// The final layer and unpatchify: the velocity `[H, W, C]`.
    fn head(&self, x: &[f32], cond: &[f32], t: &mut Tally) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let m = chunks(self.final_ada.apply(cond), c.hidden);
        let h = ln_modulate(x, c.hidden, &m[0], &m[1]);
        let y = self.linear(&self.final_lin, &h, c.tokens(), Activation::None, t)?;
        let (p, gw) = (c.patch, c.width / c.patch);
        let mut v = vec![0.0f32; c.latent_len()];
        for (tok, row) in y.chunks_exact(c.patch_dim()).enumerate() {
            let (gy, gx) = (tok / gw, tok % gw);
            for py in 0..p {
                for px in 0..p {
                    for ch in 0..c.channels {
                        let (yy, xx) = (gy * p + py, gx * p + px);
                        v[(yy * c.width + xx) * c.channels + ch] =
                            row[(py * p + px) * c.channels + ch];
                    }
                }
            }
        }
        Ok(v)
    }
}

/// One sampling run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// The final latent `[H, W, C]`.
    #[serde(skip)]
    pub latent: Vec<f32>,
    /// Per step, the fraction of tokens recomputed (0 for a skipped step).
    pub recomputed: Vec<f64>,
    /// GEMM and attention FLOPs of the run.
    pub flops: f64,
    /// Wall time of the run on the model's device (seconds).
    pub wall_s: f64,
}

/// The standard-normal noise the sampler starts from (Box-Muller on [`Rng`]).
pub fn noise(cfg: &Config, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    (0..cfg.latent_len())
        .map(|_| {
            let u1 = rng.unit().max(1e-300);
            let u2 = rng.unit();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// Full steps before any cached mode reuses a feature.
pub const WARMUP: usize = 2;

/// Samples from `noise` (`[H, W, C]`) with `mode`, computing the first `warmup` steps in full.
///
/// Errors: a noise length that is not the latent's, a mode parameter out of range, and any op's
/// error.
pub fn sample(model: &Model, noise: &[f32], mode: Mode, warmup: usize) -> Result<Sample> {
    mode.validate()?;
    let c = model.cfg;
    if noise.len() != c.latent_len() {
        return Err(invalid(format!(
            "noise has {} values, the latent {}",
            noise.len(),
            c.latent_len()
        )));
    }
    let caching = matches!(mode, Mode::SpecDiff { .. } | Mode::Toca { .. });
    if caching && warmup == 0 {
        return Err(invalid(format!(
            "{} needs warmup >= 1: a cached step reuses what a full step computed",
            mode.name()
        )));
    }
    let start = Instant::now();
    let dev = &model.dev;
    let (n, d, s) = (c.tokens(), c.hidden, c.steps);
    let time = |i: usize| 1.0 - i.min(s) as f32 / s as f32;
    let mut tally = Tally::default();
    let mut latent = noise.to_vec();
    let mut recomputed = Vec::with_capacity(s);
    let mut rings = if caching {
        (0..c.blocks)
            .map(|_| Ring::new(dev, n, d))
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let all: Vec<u32> = (0..n as u32).collect();
    let all_dev = dev.upload(&all, "specdiff.all")?;
    let mut cf = dev.upload(&vec![0u32; n], "specdiff.cf")?;
    // Each block's update `[N, d]`: on a partial step `reuse` writes the non-C1 rows and
    // `scatter` the C1 rows, on a full step `scatter` writes all, so one buffer serves every
    // block of every step.
    let mut update = dev.alloc::<f32>(n * d, "specdiff.update")?;
    let ones = dev.upload(&vec![1.0f32; n], "specdiff.ones")?;
    let mut his = vec![0.0f32; n];
    let mut v_prev: Vec<f32> = Vec::new();
    // Step-skip state: the previous indicator, the accumulated change, the cached residual.
    let mut indicator_prev: Option<Vec<f32>> = None;
    let mut acc = 0.0f64;
    let mut residual: Option<Vec<f32>> = None;
    for i in 0..s {
        let (t, t_next) = (time(i), time(i + 1));
        let cond = model.cond(t);
        let mods: Vec<Vec<Vec<f32>>> = model
            .blocks
            .iter()
            .map(|b| chunks(b.ada.apply(&cond), d))
            .collect();
        let x0 = model.embed(&latent, &mut tally)?;
        let full = i < warmup || mode == Mode::NoCache;
        let mut x = x0.clone();
        let mut his_next = vec![0.0f32; n];
        match mode {
            Mode::StepSkip { threshold } => {
                let ind = ln_modulate(&x0, d, &mods[0][0], &mods[0][1]);
                if let Some(prev) = &indicator_prev {
                    acc += rel_l1(&ind, prev);
                }
                indicator_prev = Some(ind);
                let skip = !full && acc < threshold && residual.is_some();
                if skip {
                    let r = residual.as_ref().expect("checked above");
                    x = x0.iter().zip(r).map(|(a, b)| a + b).collect();
                    recomputed.push(0.0);
                } else {
                    for (l, m) in mods.iter().enumerate() {
                        let (delta, _) = model.block(l, &x, &x, n, m, &mut tally)?;
                        x.iter_mut().zip(&delta).for_each(|(a, b)| *a += b);
                    }
                    residual = Some(x.iter().zip(&x0).map(|(a, b)| a - b).collect());
                    acc = 0.0;
                    recomputed.push(1.0);
                }
            }
            _ if full => {
                for (l, m) in mods.iter().enumerate() {
                    let (delta, rec) = model.block(l, &x, &x, n, m, &mut tally)?;
                    if caching {
                        let rows = dev.upload(&delta, "specdiff.rows")?;
                        featcache::scatter(&rows, &all_dev, t, &mut update, &mut rings[l])?;
                    }
                    x.iter_mut().zip(&delta).for_each(|(a, b)| *a += b);
                    his_next.iter_mut().zip(&rec).for_each(|(a, b)| *a += b);
                }
                recomputed.push(1.0);
            }
            Mode::SpecDiff { cr, .. } | Mode::Toca { cr } => {
                let (fut, low_mass) = match mode {
                    Mode::SpecDiff { low_mass, .. } => {
                        let t_spec = time(i + 2);
                        let guess: Vec<f32> = latent
                            .iter()
                            .zip(&v_prev)
                            .map(|(x, v)| x + (t_spec - t) * v)
                            .collect();
                        let xs = model.embed(&guess, &mut tally)?;
                        let m0 = chunks(model.blocks[0].ada.apply(&model.cond(t_spec)), d);
                        let h = ln_modulate(&xs, d, &m0[0], &m0[1]);
                        let b = &model.blocks[0];
                        let q = model.linear(&b.q, &h, n, Activation::None, &mut tally)?;
                        let kv = model.linear(&b.kv, &h, n, Activation::None, &mut tally)?;
                        let (_, rec) = model.attend(&q, &kv, n, n, &mut tally)?;
                        (Some(dev.upload(&rec, "specdiff.fut")?), low_mass)
                    }
                    _ => (None, 1.0),
                };
                let his_dev = dev.upload(&his, "specdiff.his")?;
                let sel =
                    featcache::select(&his_dev, fut.as_ref().unwrap_or(&ones), &cf, cr, low_mass)?;
                let n1 = sel.c1.len();
                for (l, m) in mods.iter().enumerate() {
                    let x_dev = dev.upload(&x, "specdiff.x")?;
                    featcache::reuse(&sel.class, &rings[l], t, &mut update)?;
                    if n1 > 0 {
                        let xr = featcache::gather(&x_dev, d, &sel.c1)?.download()?;
                        let (delta, rec) = model.block(l, &x, &xr, n1, m, &mut tally)?;
                        let rows = dev.upload(&delta, "specdiff.rows")?;
                        featcache::scatter(&rows, &sel.c1, t, &mut update, &mut rings[l])?;
                        his_next.iter_mut().zip(&rec).for_each(|(a, b)| *a += b);
                    }
                    let u = update.download()?;
                    x.iter_mut().zip(&u).for_each(|(a, b)| *a += b);
                }
                featcache::age(&sel.class, &mut cf)?;
                recomputed.push(n1 as f64 / n as f64);
            }
            Mode::NoCache => unreachable!("no-cache steps are full"),
        }
        if caching {
            his = his_next;
        }
        let v = model.head(&x, &cond, &mut tally)?;
        latent
            .iter_mut()
            .zip(&v)
            .for_each(|(a, b)| *a += (t_next - t) * b);
        v_prev = v;
    }
    dev.synchronize()?;
    Ok(Sample {
        latent,
        recomputed,
        flops: tally.flops,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// `Σ|a − b| / Σ|b|` (0 when `b` is all zero).
fn rel_l1(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).sum();
    let den: f64 = b.iter().map(|y| y.abs() as f64).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// `‖a − b‖₂ / ‖b‖₂`.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// One mode's row of a [`Curve`].
#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    /// The mode and its parameters.
    pub mode: Mode,
    /// Per step, the fraction of tokens recomputed.
    pub recomputed: Vec<f64>,
    /// The mean of `recomputed`.
    pub mean_recomputed: f64,
    /// GEMM and attention FLOPs.
    pub flops: f64,
    /// No-cache FLOPs over these FLOPs.
    pub flops_speedup: f64,
    /// Wall time (seconds) on the curve's device.
    pub wall_s: f64,
    /// No-cache wall time over this wall time.
    pub wall_speedup: f64,
    /// Relative L2 error of the final latent vs no cache.
    pub rel_l2: f64,
}

/// The quality/speed curve of every mode.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    /// The model's shape.
    pub config: Config,
    /// The device it ran on (`Device::describe`).
    pub device: String,
    /// Whether the wall times are GPU times (false: a CPU executor; its times are not GPU
    /// performance).
    pub gpu: bool,
    /// Full steps first.
    pub warmup: usize,
    /// The no-cache run.
    pub baseline: ModeReport,
    /// The cached runs.
    pub points: Vec<ModeReport>,
}

/// Runs no cache (once untimed, then timed), then every mode of `modes`, from the same noise;
/// each row compares with the timed no-cache run.
pub fn curve(model: &Model, noise_seed: u64, modes: &[Mode], warmup: usize) -> Result<Curve> {
    let z = noise(&model.cfg, noise_seed);
    // One untimed run first: the first run on a device pays one-time costs (allocator, kernel
    // loading) that would otherwise count against no cache.
    sample(model, &z, Mode::NoCache, warmup)?;
    let base = sample(model, &z, Mode::NoCache, warmup)?;
    let row = |mode: Mode, s: &Sample| ModeReport {
        mode,
        mean_recomputed: s.recomputed.iter().sum::<f64>() / s.recomputed.len().max(1) as f64,
        recomputed: s.recomputed.clone(),
        flops: s.flops,
        flops_speedup: base.flops / s.flops,
        wall_s: s.wall_s,
        wall_speedup: base.wall_s / s.wall_s,
        rel_l2: rel_l2(&s.latent, &base.latent),
    };
    let points = modes
        .iter()
        .map(|&m| sample(model, &z, m, warmup).map(|s| row(m, &s)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Curve {
        config: model.cfg,
        device: model.dev.describe(),
        gpu: matches!(model.dev.backend(), Backend::Cuda(_) | Backend::Hip(_)),
        warmup,
        baseline: row(Mode::NoCache, &base),
        points,
    })
}

/// The default sweep: SpecDiff (low_mass 0.1) and ToCa-style at cache ratios 0.5, 0.7, 0.8, 0.9;
/// step-skip at thresholds 0.05, 0.1, 0.2, 0.4.
pub fn default_modes() -> Vec<Mode> {
    let crs = [0.5, 0.7, 0.8, 0.9];
    let mut v: Vec<Mode> = crs
        .iter()
        .map(|&cr| Mode::SpecDiff { cr, low_mass: 0.1 })
        .collect();
    v.extend(crs.iter().map(|&cr| Mode::Toca { cr }));
    v.extend(
        [0.05, 0.1, 0.2, 0.4]
            .iter()
            .map(|&threshold| Mode::StepSkip { threshold }),
    );
    v
}

/// The curve as a markdown table.
pub fn markdown(c: &Curve) -> String {
    let mut s = format!(
        "DiT {}×{}×{} latent, patch {}, {} tokens, d {}, {} heads, {} blocks, {} steps ({} full first); device: {}\n\n",
        c.config.height,
        c.config.width,
        c.config.channels,
        c.config.patch,
        c.config.tokens(),
        c.config.hidden,
        c.config.heads,
        c.config.blocks,
        c.config.steps,
        c.warmup,
        c.device
    );
    if !c.gpu {
        s += "Wall times are from a CPU executor: they are not GPU performance.\n\n";
    }
    s += "| mode | cr / threshold | tokens recomputed (mean) | GFLOP | FLOPs speedup | wall (s) | wall speedup | rel L2 vs no cache |\n";
    s += "|---|---|---|---|---|---|---|---|\n";
    for r in std::iter::once(&c.baseline).chain(&c.points) {
        s += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.2}× | {:.3} | {:.2}× | {:.2e} |\n",
            r.mode.name(),
            r.mode.param().map_or("-".into(), |p| format!("{p}")),
            r.mean_recomputed,
            r.flops / 1e9,
            r.flops_speedup,
            r.wall_s,
            r.wall_speedup,
            r.rel_l2
        );
    }
    s
}

#[cfg(test)]
mod tests;
