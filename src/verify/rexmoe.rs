//! ReXMoE layer rows (`moe.layer`, and the layer with experts sharded over simulated ranks), the
//! cases `tests/rexmoe.rs` runs too.
//!
//! - `moe.layer`: the routing (top-k ids) bit-exact against the reference's routing of the
//!   reference logits, and `y` within the half-precision tolerance of the f64 reference.
//! - `moe.layer (expert parallel, R ranks)`: `parallel::moe::layer` over `Simulated` ranks, each
//!   with its own slice of the tokens and its shard of the experts, bit for bit equal to the
//!   single-rank layer on the same device.

use super::{stage, up, Outcome, Row};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::Float;
use crate::ops::moe::{self, ExpertFloat, LayerWeights, Psr, RouteParams};
use crate::parallel::moe as ep;
use crate::parallel::Simulated;
use crate::reference::moe::layer as reference;
use crate::testing::{first_diff, rel_l2, tol, Rng};

/// One layer problem. Values are exact in bf16 and f16 (see [`Rng::values_in`] for the dtype the
/// case is run in).
pub struct LayerCase {
    pub x: Vec<f32>,
    pub w_router: Vec<f32>,
    pub w_gate: Vec<f32>,
    pub w_up: Vec<f32>,
    pub w_down: Vec<f32>,
    pub d: usize,
    pub f: usize,
    pub params: RouteParams,
    pub label: String,
}

/// The sizes of a case: (T, d, F, N, r, layer_in_group, top_k, renormalize, PSR step).
pub type Sizes = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
    Option<u64>,
);

impl LayerCase {
    /// Random inputs in `T`'s grid. With a PSR step, `t_s = 0`, `t_e = 100`.
    pub fn generate<T: Float>(s: Sizes, seed: u64) -> LayerCase {
        let (tokens, d, f, n, r, layer_in_group, top_k, renormalize, step) = s;
        let e = r * n;
        let mut g = Rng(seed);
        let x = g.values_in::<T>(tokens * d, 1.0);
        let a = 1.0 / (d as f64).sqrt();
        let w_router = g.values_in::<T>(e * d, 2.0 * a);
        let w_gate = g.values_in::<T>(e * f * d, a);
        let w_up = g.values_in::<T>(e * f * d, a);
        let w_down = g.values_in::<T>(e * d * f, 1.0 / (f as f64).sqrt());
        let psr = step.map(|step| Psr {
            step,
            t_s: 0,
            t_e: 100,
            seed: seed ^ 0x9a,
        });
        LayerCase {
            x,
            w_router,
            w_gate,
            w_up,
            w_down,
            d,
            f,
            params: RouteParams {
                r,
                layer_in_group,
                layer: layer_in_group + 3,
                top_k,
                renormalize,
                psr,
            },
            label: format!(
                "T={tokens} d={d} F={f} N={n} r={r} j={layer_in_group} k={top_k}{}{}",
                if renormalize { " renorm" } else { "" },
                step.map(|s| format!(" psr@{s}")).unwrap_or_default()
            ),
        }
    }

    fn tokens(&self) -> usize {
        self.x.len() / self.d
    }

    /// The reference on the case's values (as `T`).
    pub fn reference<T: Float>(&self) -> reference::LayerOut {
        let c = |v: &[f32]| -> Vec<T> { v.iter().map(|&y| T::from_f64(y as f64)).collect() };
        let (wr, wg, wu, wd) = (
            c(&self.w_router),
            c(&self.w_gate),
            c(&self.w_up),
            c(&self.w_down),
        );
        reference::layer(
            &c(&self.x),
            self.d,
            self.f,
            &reference::LayerWeights {
                w_router: &wr,
                w_gate: &wg,
                w_up: &wu,
                w_down: &wd,
            },
            &self.params,
        )
    }

    fn upload<T: ExpertFloat>(
        &self,
        dev: &Device,
    ) -> std::result::Result<[DeviceBuffer<T>; 5], String> {
        let c = |v: &[f32]| -> Vec<T> { v.iter().map(|&y| T::from_f64(y as f64)).collect() };
        Ok([
            up(dev, &c(&self.x), "x")?,
            up(dev, &c(&self.w_router), "w_router")?,
            up(dev, &c(&self.w_gate), "w_gate")?,
            up(dev, &c(&self.w_up), "w_up")?,
            up(dev, &c(&self.w_down), "w_down")?,
        ])
    }

    /// `moe::layer` on `dev`: (y as f32, topk_ids).
    pub fn run<T: ExpertFloat>(
        &self,
        dev: &Device,
    ) -> std::result::Result<(Vec<T>, Vec<i32>), String> {
        let [x, wr, wg, wu, wd] = self.upload::<T>(dev)?;
        let w = LayerWeights {
            w_router: &wr,
            w_gate: &wg,
            w_up: &wu,
            w_down: &wd,
        };
        stage(dev, "moe::layer", || {
            let out = moe::layer_full(&x, self.d, &w, &self.params, None)?;
            Ok((out.y.download()?, out.routed.topk_ids.download()?))
        })
    }

    /// The layer against the reference.
    pub fn outcome<T: ExpertFloat>(&self, dev: &Device) -> Outcome {
        let want = self.reference::<T>();
        let (y, ids) = match self.run::<T>(dev) {
            Ok(v) => v,
            Err(e) => return Outcome::not_run(e),
        };
        let y: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
        let e = rel_l2(&y, &want.y);
        let result = if let Some(i) = first_diff(&ids, &want.topk_ids) {
            Err(format!(
                "topk_ids differs at {i}: {:?} vs reference {:?} (moe::route)",
                ids.get(i),
                want.topk_ids.get(i)
            ))
        } else if y.len() != want.y.len() {
            Err(format!("y has {} elements, want {}", y.len(), want.y.len()))
        } else if e.is_nan() || e > tol::HALF {
            Err(format!("y relative L2 error {e:.2e} > {:.0e}", tol::HALF))
        } else {
            Ok(())
        };
        Outcome {
            error: format!("{e:.2e}"),
            result,
        }
    }

    /// The layer with the experts sharded over `ranks` simulated ranks (tokens split unevenly:
    /// rank ρ gets a share growing with ρ, the first rank possibly none), against the
    /// single-rank layer on the same device, bit for bit.
    pub fn ep_outcome<T: ExpertFloat>(&self, dev: &Device, ranks: usize) -> Outcome {
        let r = (|| {
            let (single, _) = self.run::<T>(dev)?;
            let [_, wr, _, _, _] = self.upload::<T>(dev)?;
            let tokens = self.tokens();
            let (d, f) = (self.d, self.f);
            let e = self.w_router.len() / d;
            let c = |v: &[f32]| -> Vec<T> { v.iter().map(|&y| T::from_f64(y as f64)).collect() };
            let x = c(&self.x);
            let (g, u, dn) = (c(&self.w_gate), c(&self.w_up), c(&self.w_down));
            // Token split: weights 0, 1, 2, ... (rank 0 gets none when ranks > 1).
            let total_w: usize = (0..ranks).sum::<usize>().max(1);
            let mut cuts = vec![0usize];
            let mut acc = 0;
            for q in 0..ranks {
                acc += if ranks == 1 { 1 } else { q };
                cuts.push(tokens * acc / if ranks == 1 { 1 } else { total_w });
            }
            let mut bufs = Vec::new();
            for q in 0..ranks {
                let sh = ep::shard(e, ranks, q);
                let per = f * d;
                bufs.push([
                    up(dev, &x[cuts[q] * d..cuts[q + 1] * d], "x shard")?,
                    up(dev, &g[sh.start * per..sh.end * per], "w_gate shard")?,
                    up(dev, &u[sh.start * per..sh.end * per], "w_up shard")?,
                    up(dev, &dn[sh.start * per..sh.end * per], "w_down shard")?,
                ]);
            }
            let inputs: Vec<Option<ep::RankInput<T>>> = bufs
                .iter()
                .map(|b| {
                    Some(ep::RankInput {
                        x: &b[0],
                        w_router: &wr,
                        w_gate: &b[1],
                        w_up: &b[2],
                        w_down: &b[3],
                    })
                })
                .collect();
            let mut xp = Simulated::new(dev, ranks).map_err(|e| e.to_string())?;
            let ys = stage(dev, "parallel::moe::layer", || {
                let (ys, _) = ep::layer(&mut xp, &inputs, ep::EpDims { d, f }, &self.params)?;
                let mut all = Vec::new();
                for y in ys.into_iter().flatten() {
                    all.extend(y.download()?);
                }
                Ok(all)
            })?;
            let (a, b) = (crate::testing::bits(&ys), crate::testing::bits(&single));
            match first_diff(&a, &b) {
                Some(i) => Err(format!(
                    "expert-parallel y differs from the single-rank layer at {i}: {:?} vs {:?}",
                    ys.get(i).map(|v| v.to_f32()),
                    single.get(i).map(|v| v.to_f32())
                )),
                None => Ok(()),
            }
        })();
        Outcome::exact(r)
    }
}

/// The verify cases: a conventional MoE (r = 1), ReXMoE r = 4 at inference and with PSR
/// half-way, a group's middle layer, top-1, odd sizes.
pub const CASES: &[Sizes] = &[
    (37, 64, 48, 8, 1, 0, 2, true, None),
    (29, 32, 40, 4, 4, 2, 4, false, None),
    (29, 32, 40, 4, 4, 1, 4, true, Some(50)),
    (5, 24, 16, 3, 2, 1, 1, false, None),
    (0, 16, 16, 2, 2, 0, 2, true, None),
];

/// The rows of one device.
pub fn rows(dev: &Device) -> Vec<Row> {
    let mut out = Vec::new();
    for (j, &s) in CASES.iter().enumerate() {
        let c = LayerCase::generate::<half::bf16>(s, 0x1a7e + j as u64);
        out.push(
            c.outcome::<half::bf16>(dev)
                .row("moe.layer", "bf16", dev, c.label.clone()),
        );
        if j == 1 {
            let c = LayerCase::generate::<half::f16>(s, 0x1a7f + j as u64);
            out.push(
                c.outcome::<half::f16>(dev)
                    .row("moe.layer", "f16", dev, c.label.clone()),
            );
        }
    }
    for (j, ranks) in [(1usize, 3usize), (2, 4)] {
        let c = LayerCase::generate::<half::bf16>(CASES[j], 0xe9 + j as u64);
        out.push(c.ep_outcome::<half::bf16>(dev, ranks).row(
            &format!("moe.layer (expert parallel, {ranks} simulated ranks)"),
            "bf16",
            dev,
            c.label.clone(),
        ));
    }
    out
}
