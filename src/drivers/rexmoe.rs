//! The ReXMoE driver (arXiv 2510.17483): a stack of `L` MoE layers whose routers choose among the
//! experts of a group of `r` adjacent layers, on [`crate::ops::moe::layer`].
//!
//! * Layers are grouped in runs of `r`: group `g` holds layers `g·r ..`. When `r` does not divide
//!   `L`, the **last group is smaller**: it holds the remaining `L mod r` layers, and its routers
//!   score `(L mod r)·N` experts (the documented rule for a short group; no expert is borrowed
//!   from another group). `r = 1` is a conventional MoE (the baseline).
//! * Expert weights are stored once per physical layer: a group's device buffers hold its layers'
//!   experts back to back, which is the virtual-id order `v = j·N + e` the layer op takes, so no
//!   expert is copied per layer.
//! * The stack is residual: `x ← x + moe_l(x)` for `l = 0 .. L` (the residual add is fused into
//!   the combine).
//! * [`measure`] and [`report`] measure what the paper discusses: expert bytes read per token in prefill
//!   and decode (the distinct experts each layer call touched, counted from the routing that ran,
//!   times an expert's bytes) and the wall time of both on the device at hand.
//!
//! Weights are random from a seed ([`Model::random`]) or read from safetensors
//! ([`Model::from_safetensors`]; names below). [`Model::to_safetensors`] writes the same names.
//!
//! | tensor | shape |
//! |---|---|
//! | `layers.{l}.router.weight` | `[r_g·N, d]` (`r_g` the size of layer `l`'s group) |
//! | `layers.{l}.experts.w_gate` | `[N, F, d]` |
//! | `layers.{l}.experts.w_up` | `[N, F, d]` |
//! | `layers.{l}.experts.w_down` | `[N, d, F]` |
//!
//! The file's `__metadata__` holds `r`, `top_k` and `renormalize` (strings); `L`, `N`, `d` and
//! `F` come from the shapes.

use std::collections::HashMap;
use std::time::Instant;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::Serialize;

use crate::device::{Backend, Device, DeviceBuffer};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::moe::{self, ExpertFloat, LayerWeights, Psr, RouteParams};
use crate::testing::Rng;

const OP: &str = "drivers::rexmoe";

/// The shape of a ReXMoE stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// Layers `L`.
    pub layers: usize,
    /// Group size `r` (1: conventional MoE).
    pub r: usize,
    /// Experts per layer `N`.
    pub experts: usize,
    /// Experts per token `k`.
    pub top_k: usize,
    /// Model width `d`.
    pub d: usize,
    /// Expert hidden size `F`.
    pub f: usize,
    /// Renormalise the top-k weights to sum 1.
    pub renormalize: bool,
}

impl Config {
    /// Check the sizes.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.layers == 0 || c.r == 0 || c.experts == 0 || c.d == 0 || c.f == 0 || c.top_k == 0 {
            return Err(Error::invalid(
                OP,
                format!("every size must be >= 1: {c:?}"),
            ));
        }
        if c.top_k > c.experts {
            return Err(Error::invalid(
                OP,
                format!(
                    "top_k = {} > N = {} experts (k must fit the experts a layer always has)",
                    c.top_k, c.experts
                ),
            ));
        }
        if c.r.min(c.layers) * c.experts > moe::MAX_EXPERTS {
            return Err(Error::invalid(
                OP,
                format!(
                    "r·N = {} virtual experts, more than {}",
                    c.r.min(c.layers) * c.experts,
                    moe::MAX_EXPERTS
                ),
            ));
        }
        Ok(())
    }

    /// The group of layer `l`: `(first layer, size)`.
    pub fn group_of(&self, l: usize) -> (usize, usize) {
        let first = l / self.r * self.r;
        (first, self.r.min(self.layers - first))
    }

    /// Bytes of one expert's three matrices in `T`.
    pub fn expert_bytes<T: Float>(&self) -> usize {
        3 * self.f * self.d * std::mem::size_of::<T>()
    }
}

/// One physical layer's experts on the host: (`w_gate`, `w_up`, `w_down`).
type Weights<T> = (Vec<T>, Vec<T>, Vec<T>);

/// The experts of one group, back to back in virtual-id order.
struct Group<T: ExpertFloat> {
    first: usize,
    size: usize,
    w_gate: DeviceBuffer<T>,
    w_up: DeviceBuffer<T>,
    w_down: DeviceBuffer<T>,
}

/// A ReXMoE stack on a device.
pub struct Model<T: ExpertFloat> {
    cfg: Config,
    dev: Device,
    routers: Vec<DeviceBuffer<T>>,
    groups: Vec<Group<T>>,
}

/// Per layer call: how the tokens spread over the experts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LayerLoad {
    /// Tokens routed to each virtual expert of the layer's group (`[r_g·N]`).
    pub per_expert: Vec<i32>,
    /// Entries routed to each physical layer of the group (`[r_g]`).
    pub per_layer: Vec<i32>,
    /// Distinct experts the call read.
    pub touched: usize,
}

/// One forward pass: the output and each layer's load.
pub struct Forward<T: ExpertFloat> {
    pub y: DeviceBuffer<T>,
    pub loads: Vec<LayerLoad>,
}

fn bad_file(msg: impl std::fmt::Display) -> Error {
    Error::Format {
        context: OP.to_string(),
        msg: msg.to_string(),
    }
}

fn st_dtype<T: Float>() -> Result<Dtype> {
    match std::mem::size_of::<T>() {
        2 if T::from_f64(1.0 / 3.0).to_f64() == half::bf16::from_f64(1.0 / 3.0).to_f64() => {
            Ok(Dtype::BF16)
        }
        2 => Ok(Dtype::F16),
        4 => Ok(Dtype::F32),
        _ => Err(Error::invalid(OP, "weights must be bf16, f16 or f32")),
    }
}

impl<T: ExpertFloat> Model<T> {
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Random weights from `seed`: uniform in `±1/√fan_in`, rounded to `T`.
    pub fn random(dev: &Device, cfg: Config, seed: u64) -> Result<Model<T>> {
        cfg.validate()?;
        let mut rng = Rng(seed);
        let mut values = |n: usize, fan_in: usize| -> Vec<T> {
            let a = 1.0 / (fan_in as f64).sqrt();
            (0..n)
                .map(|_| T::from_f64((rng.unit() * 2.0 - 1.0) * a))
                .collect()
        };
        let (n, d, f) = (cfg.experts, cfg.d, cfg.f);
        let mut routers = Vec::new();
        let mut per_layer = Vec::new();
        for l in 0..cfg.layers {
            let (_, size) = cfg.group_of(l);
            routers.push(values(size * n * d, d));
            per_layer.push((
                values(n * f * d, d),
                values(n * f * d, d),
                values(n * d * f, f),
            ));
        }
        Self::assemble(dev, cfg, routers, per_layer)
    }

    fn assemble(
        dev: &Device,
        cfg: Config,
        routers: Vec<Vec<T>>,
        per_layer: Vec<Weights<T>>,
    ) -> Result<Model<T>> {
        let routers = routers
            .iter()
            .enumerate()
            .map(|(l, w)| dev.upload(w, &format!("rexmoe router {l}")))
            .collect::<Result<Vec<_>>>()?;
        let mut groups = Vec::new();
        let mut first = 0;
        while first < cfg.layers {
            let size = cfg.r.min(cfg.layers - first);
            let cat = |pick: &dyn Fn(&Weights<T>) -> &Vec<T>| -> Vec<T> {
                per_layer[first..first + size]
                    .iter()
                    .flat_map(|w| pick(w).iter().copied())
                    .collect()
            };
            groups.push(Group {
                first,
                size,
                w_gate: dev.upload(&cat(&|w| &w.0), "rexmoe w_gate")?,
                w_up: dev.upload(&cat(&|w| &w.1), "rexmoe w_up")?,
                w_down: dev.upload(&cat(&|w| &w.2), "rexmoe w_down")?,
            });
            first += size;
        }
        Ok(Model {
            cfg,
            dev: dev.clone(),
            routers,
            groups,
        })
    }

    /// Read a model from safetensors bytes (names in the module docs).
    pub fn from_safetensors(dev: &Device, bytes: &[u8]) -> Result<Model<T>> {
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad_file)?;
        let st = SafeTensors::deserialize(bytes).map_err(bad_file)?;
        let md: HashMap<String, String> = meta.metadata().clone().unwrap_or_default();
        let get = |key: &str| -> Result<&String> {
            md.get(key)
                .ok_or_else(|| bad_file(format!("__metadata__ has no `{key}`")))
        };
        let num = |key: &str| -> Result<usize> {
            get(key)?
                .parse()
                .map_err(|_| bad_file(format!("__metadata__ `{key}` is not a number")))
        };
        let r = num("r")?;
        let top_k = num("top_k")?;
        let renormalize = match get("renormalize")?.as_str() {
            "true" => true,
            "false" => false,
            o => return Err(bad_file(format!("renormalize = `{o}`, not true/false"))),
        };
        let want = st_dtype::<T>()?;
        let tensor = |name: &str| -> Result<TensorView<'_>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad_file(format!("no tensor `{name}`")))?;
            if t.dtype() != want {
                return Err(bad_file(format!(
                    "`{name}` is {:?}, the model is {want:?}",
                    t.dtype()
                )));
            }
            Ok(t)
        };
        let mut layers = 0;
        while st.tensor(&format!("layers.{layers}.router.weight")).is_ok() {
            layers += 1;
        }
        if layers == 0 {
            return Err(bad_file("no `layers.0.router.weight`"));
        }
        let g0 = tensor("layers.0.experts.w_gate")?;
        let [n, f, d] = <[usize; 3]>::try_from(g0.shape())
            .map_err(|_| bad_file("`layers.0.experts.w_gate` is not [N, F, d]"))?;
        let cfg = Config {
            layers,
            r,
            experts: n,
            top_k,
            d,
            f,
            renormalize,
        };
        cfg.validate()?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<T>> {
            let t = tensor(name)?;
            if t.shape() != shape {
                return Err(bad_file(format!(
                    "`{name}` has shape {:?}, expected {shape:?}",
                    t.shape()
                )));
            }
            let mut v = vec![
                <T as bytemuck::Zeroable>::zeroed();
                t.data().len() / std::mem::size_of::<T>()
            ];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(t.data());
            Ok(v)
        };
        let mut routers = Vec::new();
        let mut per_layer = Vec::new();
        for l in 0..layers {
            let (_, size) = cfg.group_of(l);
            routers.push(read(&format!("layers.{l}.router.weight"), &[size * n, d])?);
            per_layer.push((
                read(&format!("layers.{l}.experts.w_gate"), &[n, f, d])?,
                read(&format!("layers.{l}.experts.w_up"), &[n, f, d])?,
                read(&format!("layers.{l}.experts.w_down"), &[n, d, f])?,
            ));
        }
        Self::assemble(dev, cfg, routers, per_layer)
    }

    /// The model as safetensors bytes (names in the module docs).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let c = &self.cfg;
        let dt = st_dtype::<T>()?;
        let (n, d, f) = (c.experts, c.d, c.f);
        let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (l, w) in self.routers.iter().enumerate() {
            let (_, size) = c.group_of(l);
            let bytes = bytemuck::cast_slice(&w.download()?).to_vec();
            owned.push((
                format!("layers.{l}.router.weight"),
                vec![size * n, d],
                bytes,
            ));
        }
        for g in &self.groups {
            let per = n * f * d;
            let (gate, up, down) = (
                g.w_gate.download()?,
                g.w_up.download()?,
                g.w_down.download()?,
            );
            for j in 0..g.size {
                let l = g.first + j;
                let part = |v: &[T]| bytemuck::cast_slice(&v[j * per..(j + 1) * per]).to_vec();
                owned.push((
                    format!("layers.{l}.experts.w_gate"),
                    vec![n, f, d],
                    part(&gate),
                ));
                owned.push((format!("layers.{l}.experts.w_up"), vec![n, f, d], part(&up)));
                owned.push((
                    format!("layers.{l}.experts.w_down"),
                    vec![n, d, f],
                    part(&down),
                ));
            }
        }
        let views = owned
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(dt, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(bad_file)
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = [
            ("r".to_string(), c.r.to_string()),
            ("top_k".to_string(), c.top_k.to_string()),
            ("renormalize".to_string(), c.renormalize.to_string()),
        ]
        .into();
        safetensors::serialize(views, Some(meta)).map_err(bad_file)
    }

    /// The routing parameters of layer `l`, with PSR at training step `step` if given.
    pub fn route_params(&self, l: usize, psr: Option<Psr>) -> RouteParams {
        let (first, size) = self.cfg.group_of(l);
        RouteParams {
            r: size,
            layer_in_group: l - first,
            layer: l,
            top_k: self.cfg.top_k,
            renormalize: self.cfg.renormalize,
            psr,
        }
    }

    /// Layer `l`'s weights (its router and its group's experts).
    pub fn layer_weights(&self, l: usize) -> LayerWeights<'_, T> {
        let g = &self.groups[l / self.cfg.r];
        LayerWeights {
            w_router: &self.routers[l],
            w_gate: &g.w_gate,
            w_up: &g.w_up,
            w_down: &g.w_down,
        }
    }

    /// The stack on `x` `[T, d]`: `x ← x + moe_l(x)` for every layer; with `psr`, PSR masking at
    /// its step (training), otherwise none (inference).
    pub fn forward(&self, x: &DeviceBuffer<T>, psr: Option<Psr>) -> Result<Forward<T>> {
        let c = &self.cfg;
        let mut h = self.dev.alloc::<T>(x.len(), "rexmoe h")?;
        h.copy_from(x)?;
        let mut loads = Vec::new();
        for l in 0..c.layers {
            let p = self.route_params(l, psr);
            let out = moe::layer_full(&h, c.d, &self.layer_weights(l), &p, Some(&h))?;
            let (_, size) = c.group_of(l);
            let load = moe::load(&out.routed.topk_ids, c.experts, size)?;
            let per_expert = load.per_expert.download()?;
            let per_layer = load.per_layer.download()?;
            let touched = per_expert.iter().filter(|&&n| n > 0).count();
            loads.push(LayerLoad {
                per_expert,
                per_layer,
                touched,
            });
            h = out.y;
        }
        Ok(Forward { y: h, loads })
    }
}

/// One row of [`report`]: a phase (prefill or decode) of a stack with group size `r`.
#[derive(Clone, Debug, Serialize)]
pub struct CostRow {
    pub r: usize,
    /// "prefill" or "decode".
    pub phase: &'static str,
    /// Tokens per forward call (the prompt, or the decode batch).
    pub tokens_per_call: usize,
    /// Forward calls measured.
    pub calls: usize,
    /// Mean over layer calls of the distinct experts read.
    pub experts_touched_per_layer: f64,
    /// Expert bytes read per token: Σ over layer calls of touched experts × expert bytes,
    /// divided by the tokens.
    pub expert_bytes_per_token: f64,
    /// Host wall time per forward call, seconds (the whole stack, device synchronised).
    pub seconds_per_call: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
}

/// What [`report`] measured, and where.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The device, in words.
    pub device: String,
    /// Whether the times are GPU times (false: a CPU executor; its times are not GPU performance).
    pub gpu: bool,
    pub config: Config,
    pub rows: Vec<CostRow>,
}

/// Prefill (`prompt` tokens in one call) and decode (`decode_steps` calls of `decode_batch`
/// tokens) cost of `model`, on random inputs from `seed`. A warm-up call (kernel loading) is not
/// measured.
pub fn measure<T: ExpertFloat>(
    model: &Model<T>,
    prompt: usize,
    decode_batch: usize,
    decode_steps: usize,
    seed: u64,
) -> Result<Vec<CostRow>> {
    let cfg = *model.config();
    let dev = model.device();
    let mut rng = Rng(seed ^ 0x5eed);
    let mut input = |tokens: usize| -> Result<DeviceBuffer<T>> {
        let v: Vec<T> = (0..tokens * cfg.d)
            .map(|_| T::from_f64(rng.unit() * 2.0 - 1.0))
            .collect();
        dev.upload(&v, "rexmoe x")
    };
    model.forward(&input(decode_batch.max(1))?, None)?;
    let mut rows = Vec::new();
    for (phase, tokens, calls) in [
        ("prefill", prompt, 1usize),
        ("decode", decode_batch, decode_steps),
    ] {
        if tokens == 0 || calls == 0 {
            continue;
        }
        let mut secs = 0.0;
        let mut touched = 0usize;
        let mut layer_calls = 0usize;
        for _ in 0..calls {
            let x = input(tokens)?;
            dev.synchronize()?;
            let t0 = Instant::now();
            let fw = model.forward(&x, None)?;
            dev.synchronize()?;
            secs += t0.elapsed().as_secs_f64();
            touched += fw.loads.iter().map(|l| l.touched).sum::<usize>();
            layer_calls += fw.loads.len();
        }
        let total_tokens = (tokens * calls) as f64;
        rows.push(CostRow {
            r: cfg.r,
            phase,
            tokens_per_call: tokens,
            calls,
            experts_touched_per_layer: touched as f64 / layer_calls as f64,
            expert_bytes_per_token: (touched * cfg.expert_bytes::<T>()) as f64 / total_tokens,
            seconds_per_call: secs / calls as f64,
            tokens_per_s: total_tokens / secs,
        });
    }
    Ok(rows)
}

/// [`measure`] on random stacks of `base` with each group size of `rs` (weights random from
/// `seed`: the stacks differ in their routers; the experts' count and sizes are equal).
pub fn report<T: ExpertFloat>(
    dev: &Device,
    base: Config,
    rs: &[usize],
    prompt: usize,
    decode_batch: usize,
    decode_steps: usize,
    seed: u64,
) -> Result<Report> {
    let mut rows = Vec::new();
    for &r in rs {
        let model = Model::<T>::random(dev, Config { r, ..base }, seed)?;
        rows.extend(measure(&model, prompt, decode_batch, decode_steps, seed)?);
    }
    Ok(Report {
        device: dev.describe(),
        gpu: matches!(dev.backend(), Backend::Cuda(_) | Backend::Hip(_)),
        config: base,
        rows,
    })
}

/// The report as a Markdown table.
pub fn markdown(rep: &Report) -> String {
    let mut s = format!(
        "ReXMoE stack: L = {}, N = {}, top-{}, d = {}, F = {} on {}{}\n\n",
        rep.config.layers,
        rep.config.experts,
        rep.config.top_k,
        rep.config.d,
        rep.config.f,
        rep.device,
        if rep.gpu {
            ""
        } else {
            " (a CPU executor: the times are not GPU performance)"
        }
    );
    s.push_str("| r | phase | tokens/call | experts read per layer call | expert bytes per token | s per call | tokens/s |\n");
    s.push_str("|---|---|---|---|---|---|---|\n");
    for r in &rep.rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.0} | {:.4} | {:.1} |\n",
            r.r,
            r.phase,
            r.tokens_per_call,
            r.experts_touched_per_layer,
            r.expert_bytes_per_token,
            r.seconds_per_call,
            r.tokens_per_s
        ));
    }
    s
}
