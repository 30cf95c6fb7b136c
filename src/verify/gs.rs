//! `gs.*` checks (issue 15): one random scene in front of a pinhole camera, run through the
//! device pipeline `gs.project` → `gs.bin` → `gs.render` (both layouts) → `gs.render_backward`
//! and `gs.project_backward`, plus `gs.sh_colors` (degree 3), each stage against the f64
//! reference ([`crate::reference::gs`]) on the same inputs the stage saw (the device's own
//! upstream outputs, widened to f64):
//!
//! - projection: radii bit-exact, means2d / depths / conics within [`tol::F32`];
//! - binning (keys, ids, tile ranges) and the sort: bit-exact;
//! - render: image, alpha and final T within 1e-4 absolute (the bar); the BalanceGS
//!   layout bit-identical to the baseline;
//! - backward passes and SH colours: relative L2 within [`tol::F32`] (the scene's Gaussians
//!   are well conditioned: scale ratios at most 3).

use crate::device::{Device, DeviceBuffer};
use crate::ops::gs::bin;
use crate::ops::gs::project::{self, Camera};
use crate::ops::gs::render::{self, Layout, RenderInputs, Rendered};
use crate::reference::gs::{self as reference, project as rproject, raster as rraster};
use crate::testing::{rel_l2, tol, Rng};

use super::{stage, up, Outcome, Row};

/// The image bar of the issue: absolute, in f32.
pub const IMAGE_ABS: f64 = 1e-4;

/// One scene.
pub struct Scene {
    pub cam: Camera,
    pub means: Vec<f32>,
    pub quats: Vec<f32>,
    pub scales: Vec<f32>,
    pub opacities: Vec<f32>,
    pub colors: Vec<f32>,
    pub background: [f32; 3],
}

impl Scene {
    /// `n` Gaussians at depths 2..8 inside a 64×48 view (fx = fy = 60), some behind the camera
    /// or past far (culled), scales 0.02..0.2 with ratios at most 3, opacities 0.1..0.9.
    pub fn generate(n: usize, seed: u64) -> Scene {
        let mut r = Rng(seed);
        let mut u = |lo: f64, hi: f64| (lo + (hi - lo) * r.unit()) as f32;
        let (w, h, f) = (64u32, 48u32, 60.0f32);
        let mut s = Scene {
            cam: Camera {
                viewmat: [
                    1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
                ],
                k: [f, 0.0, 32.0, 0.0, f, 24.0, 0.0, 0.0, 1.0],
                width: w,
                height: h,
                near: 0.01,
                far: 10.0,
            },
            means: Vec::new(),
            quats: Vec::new(),
            scales: Vec::new(),
            opacities: Vec::new(),
            colors: Vec::new(),
            background: [0.1, 0.2, 0.3],
        };
        for i in 0..n {
            let z = match i % 17 {
                0 => -1.0,
                1 => 12.0,
                _ => u(2.0, 8.0),
            };
            let (x, y) = (u(-0.6, 0.6) * z.abs(), u(-0.45, 0.45) * z.abs());
            s.means.extend([x, y, z]);
            s.quats
                .extend([u(-1.0, 1.0), u(-1.0, 1.0), u(-1.0, 1.0), u(0.3, 1.0)]);
            let base = u(0.02, 0.1);
            s.scales
                .extend([base * u(1.0, 2.0), base * u(1.0, 2.0), base * u(1.0, 1.5)]);
            s.opacities.push(u(0.1, 0.9));
            s.colors.extend([u(0.0, 1.0), u(0.0, 1.0), u(0.0, 1.0)]);
        }
        s
    }

    fn n(&self) -> usize {
        self.opacities.len()
    }
}

fn v3(x: &[f32]) -> Vec<[f64; 3]> {
    x.chunks_exact(3)
        .map(|c| [c[0] as f64, c[1] as f64, c[2] as f64])
        .collect()
}
fn v4(x: &[f32]) -> Vec<[f64; 4]> {
    x.chunks_exact(4)
        .map(|c| [c[0] as f64, c[1] as f64, c[2] as f64, c[3] as f64])
        .collect()
}
fn flat<const D: usize>(x: &[[f64; D]]) -> Vec<f64> {
    x.iter().flatten().copied().collect()
}

/// The device's projection, downloaded and widened: the reference's form.
fn widen(means2d: &[f32], depths: &[f32], conics: &[f32], radii: &[i32]) -> reference::Projected {
    reference::Projected {
        means2d: means2d
            .chunks_exact(2)
            .map(|c| [c[0] as f64, c[1] as f64])
            .collect(),
        depths: depths.iter().map(|&d| d as f64).collect(),
        conics: v3(conics),
        radii: radii.to_vec(),
    }
}

fn within(e: f64, limit: f64, what: &str) -> Outcome {
    Outcome {
        error: format!("{e:.2e}"),
        result: if e <= limit {
            Ok(())
        } else {
            Err(format!("{what}: {e:.3e} > {limit:.0e}"))
        },
    }
}

type S<T> = std::result::Result<T, String>;

/// The rows of one device.
pub fn rows(dev: &Device) -> Vec<Row> {
    let s = Scene::generate(150, 0x95);
    let label = format!("N={} 64x48", s.n());
    let mut out: Vec<Row> = Vec::new();
    let mut push = |op: &str, o: Outcome| out.push(o.row(op, "f32", dev, label.clone()));
    let r = (|| -> S<()> {
        let bufs = (
            up(dev, &s.means, "gs.means")?,
            up(dev, &s.quats, "gs.quats")?,
            up(dev, &s.scales, "gs.scales")?,
        );
        let (means, quats, scales) = (v3(&s.means), v4(&s.quats), v3(&s.scales));
        let cam = s.cam.to_reference();
        // Projection.
        let want = rproject::project(&means, &quats, &scales, &cam)?;
        let p = stage(dev, project::OP, || {
            project::project(&bufs.0, &bufs.1, &bufs.2, &s.cam)
        })?;
        let dl = |b: &DeviceBuffer<f32>| b.download().map_err(|e| e.to_string());
        let (m2, dp, cn) = (dl(&p.means2d)?, dl(&p.depths)?, dl(&p.conics)?);
        let radii = p.radii.download().map_err(|e| e.to_string())?;
        let got = widen(&m2, &dp, &cn, &radii);
        push(project::OP, {
            if let Some(i) = (0..s.n()).find(|&i| radii[i] != want.radii[i]) {
                Outcome::not_run(format!(
                    "radii[{i}] = {}, reference {}",
                    radii[i], want.radii[i]
                ))
            } else {
                let e = [
                    rel_l2(&m2, &flat(&want.means2d)),
                    rel_l2(&dp, &want.depths),
                    rel_l2(&cn, &flat(&want.conics)),
                ]
                .into_iter()
                .fold(0.0, f64::max);
                within(e, tol::F32, "means2d/depths/conics")
            }
        });
        // Projection backward, from fixed upstream gradients.
        let mut rng = Rng(0x95b);
        let mut g = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.unit() as f32 - 0.5).collect() };
        let (gm, gc, gd) = (g(2 * s.n()), g(3 * s.n()), g(s.n()));
        let wb = rproject::project_backward(
            &means,
            &quats,
            &scales,
            &cam,
            &gm.chunks_exact(2)
                .map(|c| [c[0] as f64, c[1] as f64])
                .collect::<Vec<_>>(),
            &v3(&gc),
            &gd.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        )?;
        let gb = stage(dev, project::BACKWARD_OP, || {
            project::project_backward(
                &bufs.0,
                &bufs.1,
                &bufs.2,
                &s.cam,
                &dev.upload(&gm, "gs.v_means2d")?,
                &dev.upload(&gc, "gs.v_conics")?,
                &dev.upload(&gd, "gs.v_depths")?,
            )
        })?;
        let e = [
            rel_l2(&dl(&gb.0)?, &flat(&wb.0)),
            rel_l2(&dl(&gb.1)?, &flat(&wb.1)),
            rel_l2(&dl(&gb.2)?, &flat(&wb.2)),
        ]
        .into_iter()
        .fold(0.0, f64::max);
        push(
            project::BACKWARD_OP,
            within(e, tol::F32, "v_means/v_quats/v_scales"),
        );
        // Binning: bit-exact against the reference on the device's projection.
        let (w, h) = (s.cam.width, s.cam.height);
        let want_bins = rraster::bin(&got, w, h);
        let bins = stage(dev, bin::OP, || {
            bin::bin(&p.means2d, &p.depths, &p.radii, w, h)
        })?;
        let got_bins = bins.download().map_err(|e| e.to_string())?;
        push(
            bin::OP,
            Outcome::exact(if got_bins.keys != want_bins.keys {
                Err("keys differ from the reference".into())
            } else if got_bins.ids != want_bins.ids {
                Err("ids differ from the reference".into())
            } else if got_bins.tile_ranges != want_bins.tile_ranges {
                Err("tile ranges differ from the reference".into())
            } else {
                Ok(())
            }),
        );
        // Render, both layouts, against the reference on the device's projection and bins.
        let (op_b, col_b) = (
            up(dev, &s.opacities, "gs.opacities")?,
            up(dev, &s.colors, "gs.colors")?,
        );
        let x = RenderInputs {
            means2d: &p.means2d,
            conics: &p.conics,
            opacities: &op_b,
            colors: &col_b,
            ids: &bins.ids,
            tile_ranges: &bins.tile_ranges,
            tiles_x: bins.tiles_x,
            tiles_y: bins.tiles_y,
            width: w,
            height: h,
            background: s.background,
        };
        let (colors, opac) = (
            v3(&s.colors),
            s.opacities.iter().map(|&o| o as f64).collect::<Vec<_>>(),
        );
        let bg = s.background.map(|b| b as f64);
        let want_r = rraster::render(&got, &colors, &opac, &want_bins, w, h, bg)?;
        let mut outs: Vec<Rendered> = Vec::new();
        for layout in [Layout::Baseline, Layout::Balanced] {
            let r = stage(dev, render::OP, || render::render(&x, layout))?;
            let (img, a, t) = (dl(&r.image)?, dl(&r.alpha)?, dl(&r.final_t)?);
            let e = img
                .iter()
                .zip(flat(&want_r.image))
                .chain(a.iter().zip(want_r.alpha.iter().copied()))
                .chain(t.iter().zip(want_r.final_t.iter().copied()))
                .map(|(&g, w)| (g as f64 - w).abs())
                .fold(0.0, f64::max);
            push(
                &format!("{} ({layout:?})", render::OP),
                within(e, IMAGE_ABS, "image/alpha/final_t (max abs)"),
            );
            outs.push(r);
        }
        let same = (|| -> S<bool> {
            Ok(dl(&outs[0].image)? == dl(&outs[1].image)?
                && dl(&outs[0].final_t)? == dl(&outs[1].final_t)?
                && outs[0].n_contrib.download().map_err(|e| e.to_string())?
                    == outs[1].n_contrib.download().map_err(|e| e.to_string())?)
        })()?;
        push(
            "gs.render (Balanced = Baseline)",
            Outcome::exact(if same {
                Ok(())
            } else {
                Err("the BalanceGS layout's outputs differ from the baseline's".into())
            }),
        );
        // Render backward from the device's forward.
        let px = (w * h) as usize;
        let (vi, va) = (g(3 * px), g(px));
        let want_g = rraster::render_backward(
            &got,
            &colors,
            &opac,
            &want_bins,
            w,
            h,
            bg,
            &want_r,
            &v3(&vi),
            &va.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        )?;
        let (vi_b, va_b) = (up(dev, &vi, "gs.v_image")?, up(dev, &va, "gs.v_alpha")?);
        for (k, layout) in [Layout::Baseline, Layout::Balanced].into_iter().enumerate() {
            let gr = stage(dev, render::BACKWARD_OP, || {
                render::render_backward(&x, &outs[k], &vi_b, &va_b, layout)
            })?;
            let e = [
                rel_l2(
                    &dl(&gr.v_means2d)?,
                    &want_g
                        .v_means2d
                        .iter()
                        .flatten()
                        .copied()
                        .collect::<Vec<_>>(),
                ),
                rel_l2(&dl(&gr.v_conics)?, &flat(&want_g.v_conics)),
                rel_l2(&dl(&gr.v_colors)?, &flat(&want_g.v_colors)),
                rel_l2(&dl(&gr.v_opacities)?, &want_g.v_opacities),
            ]
            .into_iter()
            .fold(0.0, f64::max);
            push(
                &format!("{} ({layout:?})", render::BACKWARD_OP),
                within(e, tol::F32, "v_means2d/v_conics/v_colors/v_opacities"),
            );
        }
        // SH colours, degree 3.
        let k = 16;
        let coeffs = g(s.n() * k * 3);
        let dirs = rproject::view_dirs(&means, &cam)?;
        let c64: Vec<f64> = coeffs.iter().map(|&c| c as f64).collect();
        let want_c = rproject::sh_to_rgb(&rproject::sh_colors(3, &dirs, &c64, k)?);
        let c = stage(dev, project::SH_OP, || {
            project::sh_colors(3, &bufs.0, &s.cam, &dev.upload(&coeffs, "gs.sh")?, k)
        })?;
        push(
            project::SH_OP,
            within(rel_l2(&dl(&c)?, &flat(&want_c)), tol::F32, "colors"),
        );
        Ok(())
    })();
    if let Err(e) = r {
        out.push(Outcome::not_run(e).row("gs pipeline", "f32", dev, "N=150 64x48".into()));
    }
    out
}
