//! The whole rasteriser in one call (`ops::gs::pipeline`: the op table's `gs.render` and
//! `gs.render_backward`, issue 15):
//!
//! - the gradients of `rasterize_backward` (render backward → SH backward → project backward,
//!   chained) on the CPU path against central finite differences of the f64 reference pipeline
//!   (`reference::gs`: project → SH → bin → render) of the loss `Σ v_image·image +
//!   Σ v_alpha·alpha`, for RGB colours and SH coefficients of degrees 1 and 3 (so the SH
//!   direction's mean gradient is added);
//! - host SIMT wave32 and wave64 (shuffled) against the CPU path: the image within 1e-4
//!   absolute, the gradients within the f32 class (relative L2), both layouts, on a fixed
//!   scene (end to end, an f32 decision at α = 1/255 or T = 1e-4 can flip against the f64 one
//!   and move a pixel by about T/255: docs/gs.md, "Op table");
//! - a camera behind every Gaussian renders the background with zero gradients (no error);
//! - bad inputs are errors naming the op.
//!
//! The table's runners around these functions are tested by tests/interop.rs.

use tessera::ops::gs::pipeline::{self, Colors, RasterGrads};
use tessera::ops::gs::project::Camera;
use tessera::ops::gs::render::Layout;
use tessera::reference::gs::{project as rproject, raster as rraster};
use tessera::testing::{rel_l2, simt, tol, Rng};
use tessera::verify::gs::Scene;
use tessera::{Device, DeviceBuffer, Error, Schedule};

/// A scene, its SH coefficients (K = 16), the upstream gradients.
struct Case {
    s: Scene,
    coeffs: Vec<f32>,
    v_image: Vec<f32>,
    v_alpha: Vec<f32>,
}

const K: usize = 16;

impl Case {
    fn new(n: usize, seed: u64) -> Case {
        let s = Scene::generate(n, seed);
        let mut r = Rng(seed ^ 0xfd);
        let px = (s.cam.width * s.cam.height) as usize;
        let mut vals = |k: usize, half: f64| -> Vec<f32> {
            (0..k)
                .map(|_| ((r.unit() - 0.5) * 2.0 * half) as f32)
                .collect()
        };
        let coeffs = vals(n * K * 3, 0.4);
        let v_image = vals(3 * px, 1.0);
        let v_alpha = vals(px, 1.0);
        Case {
            s,
            coeffs,
            v_image,
            v_alpha,
        }
    }
}

fn w64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}
fn rows<const D: usize>(v: &[f64]) -> Vec<[f64; D]> {
    v.chunks_exact(D)
        .map(|c| std::array::from_fn(|k| c[k]))
        .collect()
}

/// The parameters the loss is differentiated by, in f64: means, quats, scales, opacities, and
/// the colours (RGB `[N,3]` or the coefficients `[N,K,3]`).
#[derive(Clone)]
struct Params {
    means: Vec<f64>,
    quats: Vec<f64>,
    scales: Vec<f64>,
    opac: Vec<f64>,
    colors: Vec<f64>,
}

/// The f64 reference pipeline's loss `Σ v_image·image + Σ v_alpha·alpha`.
fn loss(c: &Case, p: &Params, sh: Option<u32>) -> f64 {
    let cam = c.s.cam.to_reference();
    let means = rows::<3>(&p.means);
    let proj = rproject::project(&means, &rows(&p.quats), &rows(&p.scales), &cam).unwrap();
    let rgb = match sh {
        None => rows::<3>(&p.colors),
        Some(d) => {
            let dirs = rproject::view_dirs(&means, &cam).unwrap();
            rproject::sh_to_rgb(&rproject::sh_colors(d, &dirs, &p.colors, K).unwrap())
        }
    };
    let (w, h) = (cam.width, cam.height);
    let bins = rraster::bin(&proj, w, h);
    let bg = c.s.background.map(f64::from);
    let r = rraster::render(&proj, &rgb, &p.opac, &bins, w, h, bg).unwrap();
    let img: f64 = r
        .image
        .iter()
        .flatten()
        .zip(&c.v_image)
        .map(|(a, &b)| a * f64::from(b))
        .sum();
    let alpha: f64 = r
        .alpha
        .iter()
        .zip(&c.v_alpha)
        .map(|(a, &b)| a * f64::from(b))
        .sum();
    img + alpha
}

struct Up {
    means: DeviceBuffer<f32>,
    quats: DeviceBuffer<f32>,
    scales: DeviceBuffer<f32>,
    opac: DeviceBuffer<f32>,
    rgb: DeviceBuffer<f32>,
    coeffs: DeviceBuffer<f32>,
    v_image: DeviceBuffer<f32>,
    v_alpha: DeviceBuffer<f32>,
}

fn upload(dev: &Device, c: &Case) -> Up {
    let u = |v: &[f32]| dev.upload(v, "t").unwrap();
    Up {
        means: u(&c.s.means),
        quats: u(&c.s.quats),
        scales: u(&c.s.scales),
        opac: u(&c.s.opacities),
        rgb: u(&c.s.colors),
        coeffs: u(&c.coeffs),
        v_image: u(&c.v_image),
        v_alpha: u(&c.v_alpha),
    }
}

fn colors(u: &Up, sh: Option<u32>) -> Colors<'_> {
    match sh {
        None => Colors::Rgb(&u.rgb),
        Some(d) => Colors::Sh {
            coeffs: &u.coeffs,
            sh_degree: d,
        },
    }
}

fn backward(dev: &Device, c: &Case, cam: &Camera, sh: Option<u32>, layout: Layout) -> RasterGrads {
    let u = upload(dev, c);
    pipeline::rasterize_backward(
        &u.means,
        &u.quats,
        &u.scales,
        &u.opac,
        colors(&u, sh),
        cam,
        c.s.background,
        layout,
        &u.v_image,
        Some(&u.v_alpha),
    )
    .unwrap()
}

/// `[means, quats, scales, opacities, colours]` gradients downloaded.
fn grads(g: &RasterGrads, sh: bool) -> [Vec<f32>; 5] {
    let d = |b: &DeviceBuffer<f32>| b.download().unwrap();
    [
        d(&g.v_means),
        d(&g.v_quats),
        d(&g.v_scales),
        d(&g.v_opacities),
        if sh {
            d(g.v_coeffs.as_ref().expect("v_coeffs for SH"))
        } else {
            d(&g.v_colors)
        },
    ]
}

#[test]
fn gradients_match_finite_differences_of_the_reference() {
    for (sh, seed) in [(None, 0x31), (Some(1), 0x32), (Some(3), 0x33)] {
        let c = Case::new(24, seed);
        let g = grads(
            &backward(&Device::cpu(), &c, &c.s.cam, sh, Layout::Baseline),
            sh.is_some(),
        );
        assert_eq!(g[4].len(), if sh.is_some() { 24 * K * 3 } else { 72 });
        let base = Params {
            means: w64(&c.s.means),
            quats: w64(&c.s.quats),
            scales: w64(&c.s.scales),
            opac: w64(&c.s.opacities),
            colors: w64(if sh.is_some() { &c.coeffs } else { &c.s.colors }),
        };
        let names = ["means", "quats", "scales", "opacities", "colors/coeffs"];
        let h = 1e-6;
        for (k, name) in names.iter().enumerate() {
            let len = g[k].len();
            let mut fd = vec![0.0; len];
            for (i, f) in fd.iter_mut().enumerate() {
                let at = |d: f64| {
                    let mut p = base.clone();
                    let v = match k {
                        0 => &mut p.means,
                        1 => &mut p.quats,
                        2 => &mut p.scales,
                        3 => &mut p.opac,
                        _ => &mut p.colors,
                    };
                    v[i] += d;
                    loss(&c, &p, sh)
                };
                *f = (at(h) - at(-h)) / (2.0 * h);
            }
            let norm = fd.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(
                norm > 0.0,
                "sh {sh:?}: {name}: the loss does not depend on it"
            );
            let e = rel_l2(&g[k], &fd);
            eprintln!("sh {sh:?}: {name}: relative L2 {e:.2e} against finite differences");
            assert!(
                e <= tol::F32,
                "sh {sh:?}: {name}: relative L2 {e:.2e} against finite differences"
            );
        }
    }
}

#[test]
fn simt_matches_the_cpu_path() {
    let c = Case::new(120, 0x41);
    for sh in [None, Some(2)] {
        let want = grads(
            &backward(&Device::cpu(), &c, &c.s.cam, sh, Layout::Baseline),
            sh.is_some(),
        );
        let cu = upload(&Device::cpu(), &c);
        let want_img = pipeline::rasterize(
            &cu.means,
            &cu.quats,
            &cu.scales,
            &cu.opac,
            colors(&cu, sh),
            &c.s.cam,
            c.s.background,
            Layout::Baseline,
        )
        .unwrap()
        .image
        .download()
        .unwrap();
        for (dev, layout) in [
            (simt(32, Schedule::Shuffled(0x9a), 2), Layout::Balanced),
            (simt(64, Schedule::Shuffled(0x9b), 2), Layout::Baseline),
        ] {
            let u = upload(&dev, &c);
            let img = pipeline::rasterize(
                &u.means,
                &u.quats,
                &u.scales,
                &u.opac,
                colors(&u, sh),
                &c.s.cam,
                c.s.background,
                layout,
            )
            .unwrap()
            .image
            .download()
            .unwrap();
            let e = img
                .iter()
                .zip(&want_img)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(e <= 1e-4, "{dev:?} {layout:?}: image max abs {e:.2e}");
            let got = grads(&backward(&dev, &c, &c.s.cam, sh, layout), sh.is_some());
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let e = rel_l2(g, &w64(w));
                assert!(
                    e <= tol::F32,
                    "{layout:?} sh {sh:?}: gradient {k}: relative L2 {e:.2e}"
                );
            }
        }
    }
}

#[test]
fn a_camera_behind_every_gaussian_renders_the_background() {
    let c = Case::new(30, 0x51);
    let mut cam = c.s.cam.clone();
    // Turn the camera around (x and z flipped): every Gaussian in front is now behind; the
    // few at z = -1 are in front but past far... keep far small so they are culled too.
    cam.viewmat[0] = -1.0;
    cam.viewmat[10] = -1.0;
    cam.far = 0.5;
    for dev in [Device::cpu(), simt(32, Schedule::InOrder, 2)] {
        let u = upload(&dev, &c);
        let r = pipeline::rasterize(
            &u.means,
            &u.quats,
            &u.scales,
            &u.opac,
            colors(&u, Some(3)),
            &cam,
            c.s.background,
            Layout::Balanced,
        )
        .unwrap();
        let img = r.image.download().unwrap();
        assert!(img.chunks_exact(3).all(|p| p == c.s.background));
        assert!(r.alpha.download().unwrap().iter().all(|&a| a == 0.0));
        let g = grads(&backward(&dev, &c, &cam, Some(3), Layout::Baseline), true);
        assert!(g.iter().all(|v| v.iter().all(|&x| x == 0.0)));
    }
}

fn expect_invalid<T: std::fmt::Debug>(r: tessera::Result<T>, op: &str, needles: &[&str]) {
    match r {
        Err(e @ Error::InvalidArgument { .. }) => {
            let m = e.to_string();
            assert!(m.starts_with(&format!("{op}: ")), "{m}");
            for n in needles {
                assert!(m.contains(n), "`{n}` not in: {m}");
            }
        }
        other => panic!("{op}: expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_named() {
    let c = Case::new(10, 0x61);
    let dev = Device::cpu();
    let u = upload(&dev, &c);
    let cam = &c.s.cam;
    let bg = c.s.background;
    let fwd = |opac: &DeviceBuffer<f32>, colors: Colors<'_>, cam: &Camera, bg: [f32; 3]| {
        pipeline::rasterize(
            &u.means,
            &u.quats,
            &u.scales,
            opac,
            colors,
            cam,
            bg,
            Layout::Baseline,
        )
    };
    let short = dev.upload(&[0.5f32; 9], "o").unwrap();
    expect_invalid(
        fwd(&short, Colors::Rgb(&u.rgb), cam, bg),
        "gs.render",
        &["opacities", "9", "10"],
    );
    expect_invalid(
        fwd(&u.opac, Colors::Rgb(&u.coeffs), cam, bg),
        "gs.render",
        &["colors", "[10,3]"],
    );
    let sh = |coeffs, sh_degree| Colors::Sh { coeffs, sh_degree };
    expect_invalid(
        fwd(&u.opac, sh(&u.coeffs, 4), cam, bg),
        "gs.render",
        &["sh_degree 4"],
    );
    let k3 = dev.upload(&vec![0.1f32; 10 * 3 * 3], "c").unwrap();
    expect_invalid(
        fwd(&u.opac, sh(&k3, 2), cam, bg),
        "gs.render",
        &["K = 3", "9"],
    );
    expect_invalid(
        fwd(&u.opac, Colors::Rgb(&u.rgb), cam, [0.0, f32::NAN, 0.0]),
        "gs.render",
        &["background"],
    );
    let mut empty = cam.clone();
    empty.width = 0;
    expect_invalid(
        fwd(&u.opac, Colors::Rgb(&u.rgb), &empty, bg),
        "gs.project",
        &["empty"],
    );
    // A stage's own error names the stage.
    let mut means = c.s.means.clone();
    means[4] = f32::INFINITY;
    expect_invalid(
        pipeline::rasterize(
            &dev.upload(&means, "m").unwrap(),
            &u.quats,
            &u.scales,
            &u.opac,
            Colors::Rgb(&u.rgb),
            cam,
            bg,
            Layout::Baseline,
        ),
        "gs.project",
        &["Gaussian 1", "means[1]"],
    );
    // The backward's own inputs.
    let bwd = |vi: &DeviceBuffer<f32>, va: Option<&DeviceBuffer<f32>>, cam: &Camera| {
        pipeline::rasterize_backward(
            &u.means,
            &u.quats,
            &u.scales,
            &u.opac,
            Colors::Rgb(&u.rgb),
            cam,
            bg,
            Layout::Balanced,
            vi,
            va,
        )
    };
    expect_invalid(
        bwd(&short, None, cam),
        "gs.render_backward",
        &["v_image", "9"],
    );
    expect_invalid(
        bwd(&u.v_image, Some(&short), cam),
        "gs.render_backward",
        &["v_alpha", "9"],
    );
    expect_invalid(
        bwd(&u.v_image, None, &empty),
        "gs.render_backward",
        &["empty"],
    );
}
