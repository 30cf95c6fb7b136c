//! C2C projector checks: one projector fused into a receiver cache (token-major, contiguous
//! `[B, H, L, D]` or paged) from a sharer cache (any of the three), against the f64 reference
//! ([`crate::reference::c2c`]). The fused rows must be within the f16/bf16 tolerance; every other
//! element of the receiver cache must be bit-identical to before (no stray write), and a closed
//! gate must leave the whole cache bit-identical and launch nothing.

use crate::device::Device;
use crate::dtype::Float;
use crate::ops::c2c::{
    self, Activation, Cache, CacheLayout, CacheMut, Gate, HalfFloat, Options, ProjectorDims,
    ProjectorHost, Rows, UnfusedWorkspace, Workspace, PAGE,
};
use crate::reference::c2c as reference;
use crate::testing::{rel_l2, tol, Rng};

use super::{stage, up, Outcome, Row};

/// How a case lays out one cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `[T, H, D]`, slot = token.
    TokenMajor,
    /// `[batch, H, L, D]`, the tokens at random distinct slots.
    Contiguous {
        /// Sequences.
        batch: usize,
    },
    /// Paged `[blocks, 16, H, D]` through a shuffled block table.
    Paged,
}

impl Side {
    fn name(self) -> String {
        match self {
            Side::TokenMajor => "token-major".into(),
            Side::Contiguous { batch } => format!("contiguous B={batch}"),
            Side::Paged => "paged".into(),
        }
    }

    /// The layout for `tokens` tokens and the slot of each (distinct), from `rng`.
    fn place(
        self,
        tokens: usize,
        heads: usize,
        dim: usize,
        rng: &mut Rng,
    ) -> (CacheLayout, Vec<i32>) {
        match self {
            Side::TokenMajor => (
                CacheLayout::token_major(tokens, heads, dim),
                (0..tokens as i32).collect(),
            ),
            Side::Contiguous { batch } => {
                let len = (tokens + 3).div_ceil(batch.max(1));
                let layout = CacheLayout::contiguous(batch.max(1), heads, len, dim);
                let mut all: Vec<i32> = (0..layout.slots as i32).collect();
                rng.shuffle(&mut all);
                all.truncate(tokens);
                (layout, all)
            }
            Side::Paged => {
                let blocks = tokens.div_ceil(PAGE) + 2;
                let mut table: Vec<u32> = (0..blocks as u32).collect();
                rng.shuffle(&mut table);
                let positions: Vec<usize> = (0..tokens).collect();
                let slots = c2c::paged_slots(&table, &positions).expect("positions fit the table");
                (CacheLayout::paged(blocks, heads, dim), slots)
            }
        }
    }
}

/// One projector fuse with its inputs.
#[derive(Clone, Debug)]
pub struct Case {
    pub label: String,
    pub w: ProjectorHost,
    pub gate_logit: f32,
    pub opts: Options,
    pub tokens: usize,
    pub src_layout: CacheLayout,
    pub tgt_layout: CacheLayout,
    /// Sharer slot of each token (the receiver token's aligned sharer token; may repeat).
    pub src_slots: Vec<i32>,
    pub tgt_slots: Vec<i32>,
    /// The whole sharer and receiver caches (values exact in their types).
    pub src: Vec<f32>,
    pub tgt: Vec<f32>,
}

fn uniform<T: Float>(rng: &mut Rng, n: usize, half_range: f64) -> Vec<f32> {
    rng.values_in::<T>(n, half_range)
}

/// Random weights exact in `W`, scaled so the correction is of the order of the receiver's
/// values (so the output error measures the projector, not only the residual).
pub fn random_projector<W: Float>(d: ProjectorDims, rng: &mut Rng) -> ProjectorHost {
    let s = |k: usize| 1.0 / (k.max(1) as f64).sqrt();
    ProjectorHost {
        dims: d,
        w_in: uniform::<W>(rng, d.hidden * d.k_in(), 1.7 * s(d.k_in())),
        b_in: uniform::<f32>(rng, d.hidden, 0.5),
        w1: uniform::<W>(rng, d.blocks * d.ffn * d.hidden, 1.7 * s(d.hidden)),
        w2: uniform::<W>(rng, d.blocks * d.hidden * d.ffn, 1.7 * s(d.ffn)),
        norm: (0..d.blocks * d.hidden)
            .map(|_| (0.5 + rng.unit()) as f32)
            .collect(),
        w_out: uniform::<W>(rng, d.k_out() * d.hidden, 3.0 * s(d.hidden)),
        w_s: uniform::<W>(rng, d.ht * d.hidden, 6.0 * s(d.hidden)),
    }
}

impl Case {
    /// A case: weights in `W`, the sharer cache in `S`, the receiver in `C`.
    #[allow(clippy::too_many_arguments)]
    pub fn generate<W: Float, S: Float, C: Float>(
        d: ProjectorDims,
        tokens: usize,
        src_side: Side,
        tgt_side: Side,
        opts: Options,
        gate_logit: f32,
        seed: u64,
    ) -> Case {
        let mut rng = Rng(seed);
        let w = random_projector::<W>(d, &mut rng);
        let (tgt_layout, tgt_slots) = tgt_side.place(tokens, d.ht, d.dt, &mut rng);
        // The sharer holds its own token count (a little more or less than the receiver's);
        // receiver tokens map to sharer tokens many-to-one, in order (as an alignment does).
        let sharer_tokens = (tokens * 3 / 4).max(1);
        let (src_layout, sharer_slots) = src_side.place(sharer_tokens, d.hs, d.ds, &mut rng);
        let src_slots = (0..tokens)
            .map(|i| sharer_slots[i * sharer_tokens / tokens.max(1)])
            .collect();
        let src = uniform::<S>(&mut rng, src_layout.min_len().unwrap_or(0), 1.0);
        let tgt = uniform::<C>(&mut rng, tgt_layout.min_len().unwrap_or(0), 1.0);
        let gate = match opts.gate {
            Gate::Hard => "hard".to_string(),
            Gate::Soft { tau } => format!("soft τ={tau}"),
        };
        Case {
            label: format!(
                "tokens={tokens} Hs×Ds={}×{} Ht×Dt={}×{} Hd={} F={} blocks={} src {} tgt {} gate {gate} logit {gate_logit} {}",
                d.hs, d.ds, d.ht, d.dt, d.hidden, d.ffn, d.blocks,
                src_side.name(), tgt_side.name(), opts.gelu.name()
            ),
            w,
            gate_logit,
            opts,
            tokens,
            src_layout,
            tgt_layout,
            src_slots,
            tgt_slots,
            src,
            tgt,
        }
    }

    /// The receiver cache after the fuse, per the reference (f64), with the weights as stored
    /// in `W`.
    pub fn reference(&self) -> Vec<f64> {
        let d = self.w.dims;
        let sl = self.src_layout;
        let xs: Vec<f64> = self
            .src_slots
            .iter()
            .flat_map(|&s| {
                (0..d.hs).flat_map(move |h| (0..d.ds).map(move |e| sl.offset(s as usize, h, e)))
            })
            .map(|i| self.src[i] as f64)
            .collect();
        let idx = self.tgt_index();
        let ts: Vec<f64> = idx.iter().map(|&i| self.tgt[i] as f64).collect();
        let g = self.opts.gate.value(self.gate_logit);
        let out = reference::project(&self.w, g, self.opts.gelu, &xs, &ts, self.tokens);
        let mut all: Vec<f64> = self.tgt.iter().map(|&v| v as f64).collect();
        for (&i, v) in idx.iter().zip(out) {
            all[i] = v;
        }
        all
    }

    /// The receiver cache offsets of the fused elements, token by token.
    pub fn tgt_index(&self) -> Vec<usize> {
        let d = self.w.dims;
        let tl = self.tgt_layout;
        self.tgt_slots
            .iter()
            .flat_map(|&s| {
                (0..d.ht).flat_map(move |h| (0..d.dt).map(move |e| tl.offset(s as usize, h, e)))
            })
            .collect()
    }

    /// The fuse on `dev`: the receiver cache after it and the kernel launches it made.
    pub fn run<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
        &self,
        dev: &Device,
    ) -> std::result::Result<(Vec<C>, u64), String> {
        self.run_with::<W, S, C>(dev, false)
    }

    /// [`Case::run`] through `c2c::fuse_unfused` (the unfused baseline) when `unfused`.
    fn run_with<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
        &self,
        dev: &Device,
        unfused: bool,
    ) -> std::result::Result<(Vec<C>, u64), String> {
        let src: Vec<S> = self.src.iter().map(|&x| S::from_f32(x)).collect();
        let tgt: Vec<C> = self.tgt.iter().map(|&x| C::from_f32(x)).collect();
        let src = up(dev, &src, "c2c.src")?;
        let mut cache = up(dev, &tgt, "c2c.cache")?;
        stage(dev, "c2c.project", || {
            let p = c2c::Projector::<W>::upload(dev, &self.w, self.gate_logit)?;
            let rows = Rows::new(
                dev,
                &self.src_slots,
                &self.tgt_slots,
                &self.src_layout,
                &self.tgt_layout,
            )?;
            dev.synchronize()?;
            let before = dev.launches();
            let s = Cache {
                data: &src,
                layout: self.src_layout,
            };
            let mut c = CacheMut {
                data: &mut cache,
                layout: self.tgt_layout,
            };
            if unfused {
                let mut ws = UnfusedWorkspace::new();
                c2c::fuse_unfused(&p, &s, &mut c, &rows, &self.opts, &mut ws)?;
            } else {
                c2c::fuse(&p, &s, &mut c, &rows, &self.opts, &mut Workspace::new())?;
            }
            let launches = dev.launches() - before;
            Ok((cache.download()?, launches))
        })
    }

    /// The fuse against the reference: the fused elements within the f16/bf16 tolerance, the
    /// rest of the cache bit-identical; a closed gate: the whole cache bit-identical and no
    /// launch.
    pub fn outcome<W: HalfFloat, S: HalfFloat, C: HalfFloat>(&self, dev: &Device) -> Outcome {
        self.outcome_with::<W, S, C>(dev, false)
    }

    /// [`Case::outcome`] of the unfused baseline (`c2c::fuse_unfused`): the same reference,
    /// tolerance and bit-identity checks.
    pub fn outcome_unfused<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
        &self,
        dev: &Device,
    ) -> Outcome {
        self.outcome_with::<W, S, C>(dev, true)
    }

    fn outcome_with<W: HalfFloat, S: HalfFloat, C: HalfFloat>(
        &self,
        dev: &Device,
        unfused: bool,
    ) -> Outcome {
        let (out, launches) = match self.run_with::<W, S, C>(dev, unfused) {
            Ok(v) => v,
            Err(e) => return Outcome::not_run(e),
        };
        let before: Vec<C> = self.tgt.iter().map(|&x| C::from_f32(x)).collect();
        let g = self.opts.gate.value(self.gate_logit);
        if g == 0.0 {
            let r = if launches != 0 {
                Err(format!("a closed gate launched {launches} kernels"))
            } else if let Some(i) =
                (0..out.len()).find(|&i| out[i].to_bits() != before[i].to_bits())
            {
                Err(format!("a closed gate changed cache element {i}"))
            } else {
                Ok(())
            };
            return Outcome::exact(r);
        }
        let want = self.reference();
        let idx = self.tgt_index();
        let mut fused = vec![false; out.len()];
        for &i in &idx {
            fused[i] = true;
        }
        if let Some(i) =
            (0..out.len()).find(|&i| !fused[i] && out[i].to_bits() != before[i].to_bits())
        {
            return Outcome {
                error: "-".into(),
                result: Err(format!(
                    "cache element {i} is not a fused row's but changed"
                )),
            };
        }
        let got: Vec<f32> = idx.iter().map(|&i| out[i].to_f32()).collect();
        let exp: Vec<f64> = idx.iter().map(|&i| want[i]).collect();
        let e = rel_l2(&got, &exp);
        let result = if e.is_nan() || e > tol::HALF {
            Err(format!(
                "fused rows relative L2 error {e:.2e} > {:.0e}",
                tol::HALF
            ))
        } else {
            Ok(())
        };
        Outcome {
            error: format!("{e:.2e}"),
            result,
        }
    }
}

/// Dims of the verify and test cases: mixed head counts and dims, a hidden size over two column
/// tiles, head dims that are not multiples of 8 (element loads).
pub fn dims(
    hs: usize,
    ds: usize,
    ht: usize,
    dt: usize,
    hidden: usize,
    ffn: usize,
    blocks: usize,
) -> ProjectorDims {
    ProjectorDims {
        hs,
        ds,
        ht,
        dt,
        hidden,
        ffn,
        blocks,
    }
}

/// The rows of one device.
pub fn rows(dev: &Device) -> Vec<Row> {
    use half::{bf16, f16};
    let mut out = Vec::new();
    let soft = Options {
        gate: Gate::Soft { tau: 0.5 },
        gelu: Activation::GeluTanh,
    };
    let hard = Options::default();
    let d1 = dims(2, 16, 4, 8, 160, 48, 2);
    let c = Case::generate::<bf16, bf16, bf16>(
        d1,
        37,
        Side::Paged,
        Side::Contiguous { batch: 2 },
        hard,
        0.7,
        0xc2c0,
    );
    out.push(
        c.outcome::<bf16, bf16, bf16>(dev)
            .row("c2c.project", "bf16", dev, c.label),
    );
    let c = Case::generate::<f16, f16, f16>(
        d1,
        37,
        Side::Contiguous { batch: 3 },
        Side::Paged,
        soft,
        -0.3,
        0xc2c1,
    );
    out.push(
        c.outcome::<f16, f16, f16>(dev)
            .row("c2c.project", "f16", dev, c.label),
    );
    let d2 = dims(3, 6, 2, 5, 40, 24, 1);
    let c =
        Case::generate::<bf16, f16, bf16>(d2, 21, Side::TokenMajor, Side::Paged, hard, 1.5, 0xc2c2);
    out.push(c.outcome::<bf16, f16, bf16>(dev).row(
        "c2c.project",
        "w bf16, src f16, tgt bf16",
        dev,
        c.label,
    ));
    let c =
        Case::generate::<bf16, bf16, bf16>(d1, 37, Side::Paged, Side::Paged, hard, -0.7, 0xc2c3);
    out.push(c.outcome::<bf16, bf16, bf16>(dev).row(
        "c2c.project (gate off)",
        "bf16",
        dev,
        c.label,
    ));
    let c = Case::generate::<bf16, f16, bf16>(
        d1,
        37,
        Side::Paged,
        Side::Contiguous { batch: 2 },
        hard,
        0.7,
        0xc2c5,
    );
    out.push(c.outcome_unfused::<bf16, f16, bf16>(dev).row(
        "c2c.project (unfused baseline)",
        "w bf16, src f16, tgt bf16",
        dev,
        c.label,
    ));
    out.push(driver_outcome::<bf16>(dev, 0xc2c4).row(
        "c2c.fuse (prefill; prefill + decode)",
        "bf16",
        dev,
        "S=3 T=4 last_aligned, 29 tokens, paged sharer, contiguous receiver".into(),
    ));
    out
}

/// Per layer, the K and V caches.
type LayerCaches<T> = Vec<(Vec<T>, Vec<T>)>;

/// The driver on one device: a small fuser (S = 3 sharer layers, T = 4 receiver layers,
/// `last_aligned`, random gates so some layers are closed) over a paged sharer and a contiguous
/// receiver with a token alignment; prefill of all tokens against the reference layer by layer
/// (closed layers bit-identical, launches counted), and prefill of the first tokens then decode
/// of the rest bit-identical to the one-shot prefill.
pub fn driver_outcome<T: HalfFloat>(dev: &Device, seed: u64) -> Outcome {
    use crate::drivers::c2c::{
        self as drv, align::LayerMap, Config, Fuser, KvCache, KvCacheMut, Placement,
    };
    let d = dims(2, 8, 3, 16, 64, 40, 1);
    let cfg = Config {
        source_layers: 3,
        target_layers: 4,
        dims: d,
        map: LayerMap::LastAligned,
    };
    let r = (|| -> std::result::Result<(String, f64), String> {
        let fuser = Fuser::<T>::random(dev, cfg.clone(), seed).map_err(|e| e.to_string())?;
        let mut rng = Rng(seed ^ 0x5eed);
        let (n_tgt, n_src, n0) = (29usize, 23usize, 17usize);
        // Receiver token p aligned to sharer token floor(p·n_src / n_tgt).
        let alignment: Vec<usize> = (0..n_tgt).map(|p| p * n_src / n_tgt).collect();
        let mut table: Vec<u32> = (0..4).collect();
        rng.shuffle(&mut table);
        let src_layout = CacheLayout::paged(4, d.hs, d.ds);
        let tgt_layout = CacheLayout::contiguous(2, d.ht, 32, d.dt);
        let (sp, tp) = (
            Placement::Paged(table),
            Placement::Contiguous { b: 1, len: 32 },
        );
        // Random K and V caches of `layers` layers in `layout`.
        let mut caches = |layers: usize, layout: &CacheLayout| -> LayerCaches<T> {
            let n = layout.min_len().unwrap_or(0);
            let mut f = || -> Vec<T> {
                rng.values_in::<T>(n, 1.0)
                    .iter()
                    .map(|&x| T::from_f32(x))
                    .collect()
            };
            (0..layers).map(|_| (f(), f())).collect()
        };
        let src = caches(3, &src_layout);
        let tgt = caches(4, &tgt_layout);
        let e = |e: crate::error::Error| super::failed("c2c.fuse", &e);
        let sbufs: Vec<_> = src
            .iter()
            .map(|(k, v)| Ok((up(dev, k, "c2c.sk")?, up(dev, v, "c2c.sv")?)))
            .collect::<std::result::Result<Vec<_>, String>>()?;
        // The fuse over positions bounds[0]..bounds[1], bounds[1]..bounds[2], ...: the
        // receiver caches after it, the launches and the layers fused.
        let run = |bounds: &[usize]| -> std::result::Result<(LayerCaches<T>, u64, usize), String> {
            let mut tb: Vec<_> = tgt
                .iter()
                .map(|(k, v)| Ok((up(dev, k, "c2c.tk")?, up(dev, v, "c2c.tv")?)))
                .collect::<std::result::Result<Vec<_>, String>>()?;
            let sharer: Vec<KvCache<T>> = sbufs.iter().map(|(k, v)| KvCache { k, v }).collect();
            let mut ws = Workspace::new();
            dev.synchronize().map_err(e)?;
            let before = dev.launches();
            let mut fused = 0;
            for w in bounds.windows(2) {
                let rows = drv::rows(
                    dev,
                    (&sp, &src_layout),
                    (&tp, &tgt_layout),
                    &alignment,
                    w[0]..w[1],
                )
                .map_err(e)?;
                let mut receiver: Vec<KvCacheMut<T>> =
                    tb.iter_mut().map(|(k, v)| KvCacheMut { k, v }).collect();
                let st = fuser
                    .fuse(
                        &sharer,
                        src_layout,
                        &mut receiver,
                        tgt_layout,
                        &rows,
                        &Options::default(),
                        &mut ws,
                    )
                    .map_err(e)?;
                fused = st.fused;
            }
            let launches = dev.launches() - before;
            let out = tb
                .iter()
                .map(|(k, v)| Ok((k.download().map_err(e)?, v.download().map_err(e)?)))
                .collect::<std::result::Result<Vec<_>, String>>()?;
            Ok((out, launches, fused))
        };
        let (once, launches, fused) = run(&[0, n_tgt])?;
        let (twice, _, _) = run(&[0, n0, n_tgt])?;
        // The reference, layer by layer.
        let map = fuser.layer_map().to_vec();
        let positions: Vec<usize> = (0..n_tgt).collect();
        let tslots = tp.slots(&positions).map_err(e)?;
        let sslots = sp.slots(&alignment).map_err(e)?;
        let mut worst = 0.0f64;
        let mut open = 0usize;
        for t in 0..4 {
            let p = fuser.layer(t).ok_or("a random fuser has every layer")?;
            for (which, proj) in [(0usize, &p.key), (1, &p.value)] {
                let w = proj.to_host().map_err(e)?;
                let pick =
                    |x: &(Vec<T>, Vec<T>)| if which == 0 { x.0.clone() } else { x.1.clone() };
                let (s_all, t_all, got) = (pick(&src[map[t]]), pick(&tgt[t]), pick(&once[t]));
                let case = Case {
                    label: String::new(),
                    w,
                    gate_logit: proj.gate_logit(),
                    opts: Options::default(),
                    tokens: n_tgt,
                    src_layout,
                    tgt_layout,
                    src_slots: sslots.clone(),
                    tgt_slots: tslots.clone(),
                    src: s_all.iter().map(|x| x.to_f32()).collect(),
                    tgt: t_all.iter().map(|x| x.to_f32()).collect(),
                };
                let g = Gate::Hard.value(proj.gate_logit());
                if g == 0.0 {
                    if let Some(i) =
                        (0..got.len()).find(|&i| got[i].to_bits() != t_all[i].to_bits())
                    {
                        return Err(format!("closed layer {t} changed element {i}"));
                    }
                    continue;
                }
                open += (which == 0) as usize;
                let want = case.reference();
                let idx = case.tgt_index();
                let g32: Vec<f32> = idx.iter().map(|&i| got[i].to_f32()).collect();
                let w64: Vec<f64> = idx.iter().map(|&i| want[i]).collect();
                worst = worst.max(rel_l2(&g32, &w64));
            }
        }
        if fused != open {
            return Err(format!("{fused} layers fused, {open} have an open gate"));
        }
        let per_projector = 3 + 2 * d.blocks as u64;
        if dev.backend().runs_kernels() && launches != 2 * open as u64 * per_projector {
            return Err(format!(
                "{launches} launches for {open} open layers, want {}",
                2 * open as u64 * per_projector
            ));
        }
        for t in 0..4 {
            for (a, b) in [(&once[t].0, &twice[t].0), (&once[t].1, &twice[t].1)] {
                if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
                    return Err(format!(
                        "layer {t}: prefill then decode differs from prefill at {i}"
                    ));
                }
            }
        }
        if worst.is_nan() || worst > tol::HALF {
            return Err(format!("relative L2 error {worst:.2e} > {:.0e}", tol::HALF));
        }
        Ok((format!("{open} of 4 layers open"), worst))
    })();
    match r {
        Ok((_, worst)) => Outcome {
            error: format!("{worst:.2e}"),
            result: Ok(()),
        },
        Err(msg) => Outcome::not_run(msg),
    }
}
