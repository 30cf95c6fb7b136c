//! Cache-to-Cache driver: fuse a sharer model's KV cache into a receiver model's, every target
//! layer, at prefill (all tokens) and at decode (the new tokens only).
//!
//! A [`Fuser`] holds, per target layer `t`, a key and a value projector ([`crate::ops::c2c`])
//! with the layer's gate logit, or nothing (the layer is not fused), and the layer map
//! ([`align::LayerMap`]: `last_aligned` by default, `s = clamp(t + (S − T), 0, S − 1)`). Weights
//! are random from a seed ([`Fuser::random`]) or read from safetensors ([`Fuser::from_safetensors`],
//! names in [`weights`]). [`Fuser::fuse`] runs the projectors of every layer whose gate is open
//! on the rows given ([`Rows`]), in place in the receiver's caches; a closed layer launches
//! nothing. The rows come from where each token sits in the two caches ([`Placement`]) and the
//! token alignment ([`align::align`]): [`rows`] for positions `range` of one sequence, so prefill
//! is `0..n` and decode `n_old..n`.

pub mod align;
pub mod weights;

use std::ops::Range;

use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::c2c::{
    self, CacheLayout, HalfFloat, Options, Projector, ProjectorDims, Rows, Stacked, Workspace,
};
use crate::testing::Rng;

use align::LayerMap;
use weights::{FuserWeights, LayerWeights};

const OP: &str = "c2c.fuse";

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, msg)
}

/// The sizes of a fuser.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Sharer layers `S`.
    pub source_layers: usize,
    /// Receiver layers `T`.
    pub target_layers: usize,
    /// Every projector's sizes.
    pub dims: ProjectorDims,
    /// Source layer of each target layer.
    pub map: LayerMap,
}

impl Config {
    /// The shapes of the bench: a Qwen3-0.6B receiver (28 layers, 8 KV heads of 128)
    /// with a Qwen2.5-0.5B sharer (24 layers, 2 KV heads of 64), hidden 1024, FFN 1024, two
    /// blocks (the public C2C default of three MLP layers), `last_aligned`.
    pub fn qwen3_0_6b_from_qwen2_5_0_5b() -> Config {
        Config {
            source_layers: 24,
            target_layers: 28,
            dims: ProjectorDims {
                hs: 2,
                ds: 64,
                ht: 8,
                dt: 128,
                hidden: 1024,
                ffn: 1024,
                blocks: 2,
            },
            map: LayerMap::LastAligned,
        }
    }
}

/// The projectors of one target layer.
pub struct LayerProjectors<T: HalfFloat> {
    /// On the key cache.
    pub key: Projector<T>,
    /// On the value cache.
    pub value: Projector<T>,
}

/// Every target layer's projectors and the layer map, on one device.
pub struct Fuser<T: HalfFloat> {
    cfg: Config,
    map: Vec<usize>,
    layers: Vec<Option<LayerProjectors<T>>>,
    dev: Device,
}

impl<T: HalfFloat> std::fmt::Debug for Fuser<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fuser({:?}, map {:?})", self.cfg, self.map)
    }
}

/// One side's KV cache of one layer.
pub struct KvCache<'a, T: HalfFloat> {
    /// Keys.
    pub k: &'a DeviceBuffer<T>,
    /// Values.
    pub v: &'a DeviceBuffer<T>,
}

/// The receiver's KV cache of one layer, fused in place.
pub struct KvCacheMut<'a, T: HalfFloat> {
    /// Keys.
    pub k: &'a mut DeviceBuffer<T>,
    /// Values.
    pub v: &'a mut DeviceBuffer<T>,
}

/// What a fuse did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuseStats {
    /// Target layers whose projectors ran.
    pub fused: usize,
    /// Target layers with a closed gate or no projector (nothing launched).
    pub skipped: usize,
    /// Tokens fused per layer.
    pub tokens: usize,
}

impl<T: HalfFloat> Fuser<T> {
    fn check_cfg(cfg: &Config) -> Result<Vec<usize>> {
        cfg.map.resolve(cfg.source_layers, cfg.target_layers)
    }

    /// Random projectors from `seed` for every target layer (weights scaled as in the verify
    /// cases), gate logits uniform in ±1 (about half the layers closed with the hard gate).
    pub fn random(dev: &Device, cfg: Config, seed: u64) -> Result<Fuser<T>> {
        let map = Self::check_cfg(&cfg)?;
        let mut rng = Rng(seed);
        let mut layers = Vec::with_capacity(cfg.target_layers);
        for _ in 0..cfg.target_layers {
            let key = crate::verify::c2c::random_projector::<T>(cfg.dims, &mut rng);
            let value = crate::verify::c2c::random_projector::<T>(cfg.dims, &mut rng);
            let g = (rng.unit() * 2.0 - 1.0) as f32;
            layers.push(Some(LayerProjectors {
                key: Projector::upload(dev, &key, g)?,
                value: Projector::upload(dev, &value, g)?,
            }));
        }
        Ok(Fuser {
            cfg,
            map,
            layers,
            dev: dev.clone(),
        })
    }

    /// From host weights: one entry per target layer (`None`: not fused).
    pub fn from_weights(dev: &Device, cfg: Config, w: &FuserWeights) -> Result<Fuser<T>> {
        let map = Self::check_cfg(&cfg)?;
        if w.layers.len() != cfg.target_layers {
            return Err(invalid(format!(
                "the weights have {} target layers, the config {}",
                w.layers.len(),
                cfg.target_layers
            )));
        }
        let mut layers = Vec::with_capacity(cfg.target_layers);
        for (t, l) in w.layers.iter().enumerate() {
            layers.push(match l {
                None => None,
                Some(LayerWeights {
                    key,
                    value,
                    gate_logit,
                }) => {
                    for (what, p) in [("key", key), ("value", value)] {
                        if p.dims != cfg.dims {
                            return Err(invalid(format!(
                                "layer {t} {what} projector has dims {:?}, the config {:?}",
                                p.dims, cfg.dims
                            )));
                        }
                    }
                    Some(LayerProjectors {
                        key: Projector::upload(dev, key, *gate_logit)?,
                        value: Projector::upload(dev, value, *gate_logit)?,
                    })
                }
            });
        }
        Ok(Fuser {
            cfg,
            map,
            layers,
            dev: dev.clone(),
        })
    }

    /// From safetensors bytes with tessera's names ([`weights`]).
    pub fn from_safetensors(dev: &Device, cfg: Config, bytes: &[u8]) -> Result<Fuser<T>> {
        let w = weights::read(bytes, cfg.dims, cfg.target_layers)?;
        Fuser::from_weights(dev, cfg, &w)
    }

    /// The weights as stored (rounded to `T`), for [`weights::write`].
    pub fn to_weights(&self) -> Result<FuserWeights> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref()
                    .map(|p| {
                        Ok(LayerWeights {
                            key: p.key.to_host()?,
                            value: p.value.to_host()?,
                            gate_logit: p.key.gate_logit(),
                        })
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FuserWeights { layers })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The source layer of each target layer.
    pub fn layer_map(&self) -> &[usize] {
        &self.map
    }

    /// The projectors of target layer `t` (`None`: not fused).
    pub fn layer(&self, t: usize) -> Option<&LayerProjectors<T>> {
        self.layers.get(t).and_then(|l| l.as_ref())
    }

    /// Fuse the sharer's caches (one per source layer) into the receiver's (one per target
    /// layer) on `rows`, every layer whose gate is open; all caches of a side share `layouts`
    /// (sharer, receiver). Errors: cache counts that differ from the layer counts, and every
    /// error of [`c2c::fuse`].
    #[allow(clippy::too_many_arguments)]
    pub fn fuse<S: HalfFloat, C: HalfFloat>(
        &self,
        sharer: &[KvCache<S>],
        src_layout: CacheLayout,
        receiver: &mut [KvCacheMut<C>],
        tgt_layout: CacheLayout,
        rows: &Rows,
        opts: &Options,
        ws: &mut Workspace<T>,
    ) -> Result<FuseStats> {
        if sharer.len() != self.cfg.source_layers || receiver.len() != self.cfg.target_layers {
            return Err(invalid(format!(
                "{} sharer and {} receiver layer caches, the fuser has {} and {} layers",
                sharer.len(),
                receiver.len(),
                self.cfg.source_layers,
                self.cfg.target_layers
            )));
        }
        let mut stats = FuseStats {
            tokens: rows.len(),
            ..FuseStats::default()
        };
        for (t, cache) in receiver.iter_mut().enumerate() {
            let Some(p) = &self.layers[t] else {
                stats.skipped += 1;
                continue;
            };
            let src = &sharer[self.map[t]];
            let ran = c2c::fuse_layer(
                [&p.key, &p.value],
                [(src.k, &mut *cache.k), (src.v, &mut *cache.v)],
                (src_layout, tgt_layout),
                rows,
                opts,
                ws,
            )?;
            if ran {
                stats.fused += 1;
            } else {
                stats.skipped += 1;
            }
        }
        Ok(stats)
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }
}

/// Where one sequence's positions sit in a cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Token-major `[T, H, D]`: slot = position.
    TokenMajor,
    /// Sequence `b` of a contiguous `[B, H, L, D]` cache: slot = `b·L + position`.
    Contiguous {
        /// The sequence.
        b: usize,
        /// `L`.
        len: usize,
    },
    /// A paged cache through this block table.
    Paged(Vec<u32>),
}

impl Placement {
    /// The slots of `positions`.
    pub fn slots(&self, positions: &[usize]) -> Result<Vec<i32>> {
        let slot =
            |s: usize| i32::try_from(s).map_err(|_| invalid(format!("slot {s} exceeds i32")));
        match self {
            Placement::TokenMajor => positions.iter().map(|&p| slot(p)).collect(),
            Placement::Contiguous { b, len } => positions
                .iter()
                .map(|&p| {
                    if p >= *len {
                        return Err(invalid(format!(
                            "position {p} is past the sequence length {len}"
                        )));
                    }
                    slot(b * len + p)
                })
                .collect(),
            Placement::Paged(table) => c2c::paged_slots(table, positions),
        }
    }
}

/// The rows of receiver positions `range` of one sequence: receiver position `p` is fused with
/// sharer position `alignment[p]` ([`align::align`] gives it; the identity when both models
/// share a tokenizer). Prefill is `0..n`, decode `n_old..n`. Errors: a position past the
/// alignment, past a sequence or a block table, and every error of [`Rows::new`].
pub fn rows(
    dev: &Device,
    sharer: (&Placement, &CacheLayout),
    receiver: (&Placement, &CacheLayout),
    alignment: &[usize],
    range: Range<usize>,
) -> Result<Rows> {
    if range.end > alignment.len() {
        return Err(invalid(format!(
            "positions {range:?} but the alignment covers {} receiver tokens",
            alignment.len()
        )));
    }
    let positions: Vec<usize> = range.clone().collect();
    let src_pos: Vec<usize> = alignment[range].to_vec();
    let src = sharer.0.slots(&src_pos)?;
    let tgt = receiver.0.slots(&positions)?;
    Rows::new(dev, &src, &tgt, sharer.1, receiver.1)
}

impl<T: HalfFloat> Fuser<T> {
    /// From stacked device weights ([`c2c::stacked_projectors`]: device copies per projector;
    /// a layer whose gate value under `gate` is 0 gets no projector and is skipped).
    pub fn from_stacked(
        dev: &Device,
        cfg: Config,
        s: &Stacked<T>,
        gate: c2c::Gate,
    ) -> Result<Fuser<T>> {
        let map = Self::check_cfg(&cfg)?;
        let layers = c2c::stacked_projectors(cfg.dims, cfg.target_layers, s, gate)?
            .into_iter()
            .map(|l| l.map(|[key, value]| LayerProjectors { key, value }))
            .collect();
        Ok(Fuser {
            cfg,
            map,
            layers,
            dev: dev.clone(),
        })
    }

    /// Fuse stacked token-major caches in place ([`c2c::fuse_token_major`]): the sharer's
    /// `src_k`/`src_v` `[S, src_tokens, Hs, Ds]` into the receiver's `tgt_k`/`tgt_v` `[T,
    /// tokens, Ht, Dt]`, receiver token `p` with sharer token `alignment[p]`.
    #[allow(clippy::too_many_arguments)]
    pub fn fuse_stacked(
        &self,
        src_k: &DeviceBuffer<T>,
        src_v: &DeviceBuffer<T>,
        src_tokens: usize,
        tgt_k: &mut DeviceBuffer<T>,
        tgt_v: &mut DeviceBuffer<T>,
        tokens: usize,
        alignment: &[usize],
        opts: &Options,
    ) -> Result<FuseStats> {
        let layers: Vec<Option<[&Projector<T>; 2]>> = self
            .layers
            .iter()
            .map(|l| l.as_ref().map(|p| [&p.key, &p.value]))
            .collect();
        let fused = c2c::fuse_token_major(
            &layers,
            &self.map,
            self.cfg.source_layers,
            (src_k, src_v, src_tokens),
            (tgt_k, tgt_v, tokens),
            alignment,
            opts,
        )?;
        Ok(FuseStats {
            fused,
            skipped: self.cfg.target_layers - fused,
            tokens,
        })
    }
}
