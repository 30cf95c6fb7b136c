//! Criterion bench of the 3DGS rasteriser (issue 15) on device-resident inputs: a scene of N
//! Gaussians in front of a `W×H` pinhole camera (fx = fy = 0.8·W), half of them in one dense
//! cluster covering about a ninth of the image (BalanceGS's skewed density: its tiles hold many
//! more Gaussians than the others) and half spread over the view, depths 2..8, scales so a
//! Gaussian covers a few pixels to a few tiles, opacities 0.1..0.9, RGB colours.
//!
//! * `project_N*`: `gs.project` (includes its status read-back, a host wait).
//! * `bin_N*`: `gs.bin` of that projection (includes the read-back of M and the status).
//! * `render_{baseline,balanced}_*`: `gs.render` (the stage op) of those bins, each layout.
//! * `render_backward_{baseline,balanced}_*`: `gs.render_backward` (the stage op) from that
//!   forward, a random `v_image` and `v_alpha`.
//! * `pipeline_{forward,backward}_*`: the table's `gs.render` / `gs.render_backward`
//!   ([`tessera::ops::gs::pipeline`]: project, bin, render; backward reruns the forward), baseline
//!   layout.
//!
//! Groups: `gpu/*` (N = 2^20 at 1920×1080, on a CUDA or HIP device, timed with device events;
//! skipped, with a message, when no GPU is present); `cpu-path/*` (the f64 reference) and
//! `simt/*` (host SIMT, wave32): N = 1000 at 96×64 on the CPU path, N = 400 at 64×48 on SIMT
//! (its backward interprets every shuffle: seconds per call at larger sizes). CPU times, never
//! GPU performance.

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera::ops::gs::bin;
use tessera::ops::gs::pipeline::{self, Colors};
use tessera::ops::gs::project::{self, Camera};
use tessera::ops::gs::render::{self, Layout, RenderInputs};
use tessera::testing::{simt, Rng};
use tessera::{Device, Schedule};

/// The bench scene (see the module docs): `(cam, means, quats, scales, opacities, colors)`.
type Scene = (Camera, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn scene(n: usize, w: u32, h: u32, seed: u64) -> Scene {
    let f = 0.8 * w as f32;
    let cam = Camera {
        viewmat: [
            1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        ],
        k: [
            f,
            0.0,
            w as f32 / 2.0,
            0.0,
            f,
            h as f32 / 2.0,
            0.0,
            0.0,
            1.0,
        ],
        width: w,
        height: h,
        near: 0.01,
        far: 100.0,
    };
    let mut r = Rng(seed);
    let mut u = |lo: f32, hi: f32| lo + (hi - lo) * r.unit() as f32;
    // Half-extents of the view at depth 1, and a Gaussian's size: about 1..40 pixels at z = 5
    // for W = 96 (the same fraction of the image at other sizes, scaled by sqrt(1000 / N) so
    // the per-pixel depth complexity stays alike).
    let (hx, hy) = (w as f32 / (2.0 * f), h as f32 / (2.0 * f));
    let size = 0.02 * (1000.0 / n as f32).sqrt().min(1.0) * 10.0;
    let (mut means, mut quats, mut scales, mut opac, mut colors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let z = u(2.0, 8.0);
        let (x, y) = if i % 2 == 0 {
            // The dense cluster: a third of the width and height, left of centre.
            (u(-0.5, -0.17) * hx * z, u(-0.17, 0.17) * hy * z)
        } else {
            (u(-1.0, 1.0) * hx * z, u(-1.0, 1.0) * hy * z)
        };
        means.extend([x, y, z]);
        quats.extend([u(0.3, 1.0), u(-1.0, 1.0), u(-1.0, 1.0), u(-1.0, 1.0)]);
        let base = size * u(0.1, 1.0);
        scales.extend([base * u(1.0, 2.0), base * u(1.0, 2.0), base * u(1.0, 1.5)]);
        opac.push(u(0.1, 0.9));
        colors.extend([u(0.0, 1.0), u(0.0, 1.0), u(0.0, 1.0)]);
    }
    (cam, means, quats, scales, opac, colors)
}

fn run(c: &mut Criterion, group: &str, dev: &Device, n: usize, w: u32, h: u32) {
    let (cam, m, q, s, o, col) = scene(n, w, h, 0x65);
    let upf = |v: &[f32], label: &str| dev.upload(v, label).expect("upload");
    let (means, quats, scales) = (upf(&m, "means"), upf(&q, "quats"), upf(&s, "scales"));
    let (opac, colors) = (upf(&o, "opacities"), upf(&col, "colors"));
    let bg = [0.1f32, 0.2, 0.3];
    let p = project::project(&means, &quats, &scales, &cam).expect("project");
    let bins = bin::bin(&p.means2d, &p.depths, &p.radii, w, h).expect("bin");
    let x = RenderInputs {
        means2d: &p.means2d,
        conics: &p.conics,
        opacities: &opac,
        colors: &colors,
        ids: &bins.ids,
        tile_ranges: &bins.tile_ranges,
        tiles_x: bins.tiles_x,
        tiles_y: bins.tiles_y,
        width: w,
        height: h,
        background: bg,
    };
    let px = w as usize * h as usize;
    let mut r = Rng(0x66);
    let vi = upf(&r_vals(&mut r, 3 * px), "v_image");
    let va = upf(&r_vals(&mut r, px), "v_alpha");
    let fwd = render::render(&x, Layout::Baseline).expect("render");
    let isect = bins.ids.len();
    eprintln!("gs bench {group}: N = {n}, {w}x{h}, {isect} tile intersections");
    let gpu = dev.backend().runs_kernels() && !group.starts_with("simt");
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("project_N{n}"), |b| {
        timed(dev, gpu, b, || {
            project::project(&means, &quats, &scales, &cam).expect("project");
        })
    });
    g.bench_function(format!("bin_N{n}_{w}x{h}"), |b| {
        timed(dev, gpu, b, || {
            bin::bin(&p.means2d, &p.depths, &p.radii, w, h).expect("bin");
        })
    });
    g.throughput(Throughput::Elements(px as u64));
    for (name, layout) in [
        ("baseline", Layout::Baseline),
        ("balanced", Layout::Balanced),
    ] {
        g.bench_function(format!("render_{name}_N{n}_{w}x{h}"), |b| {
            timed(dev, gpu, b, || {
                render::render(&x, layout).expect("render");
            })
        });
    }
    for (name, layout) in [
        ("baseline", Layout::Baseline),
        ("balanced", Layout::Balanced),
    ] {
        g.bench_function(format!("render_backward_{name}_N{n}_{w}x{h}"), |b| {
            timed(dev, gpu, b, || {
                render::render_backward(&x, &fwd, &vi, &va, layout).expect("render_backward");
            })
        });
    }
    g.bench_function(format!("pipeline_forward_N{n}_{w}x{h}"), |b| {
        timed(dev, gpu, b, || {
            pipeline::rasterize(
                &means,
                &quats,
                &scales,
                &opac,
                Colors::Rgb(&colors),
                &cam,
                bg,
                Layout::Baseline,
            )
            .expect("gs.render");
        })
    });
    g.bench_function(format!("pipeline_backward_N{n}_{w}x{h}"), |b| {
        timed(dev, gpu, b, || {
            pipeline::rasterize_backward(
                &means,
                &quats,
                &scales,
                &opac,
                Colors::Rgb(&colors),
                &cam,
                bg,
                Layout::Baseline,
                &vi,
                Some(&va),
            )
            .expect("gs.render_backward");
        })
    });
    g.finish();
}

fn r_vals(r: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.unit() as f32 - 0.5).collect()
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => run(c, "gpu", &gpu, 1 << 20, 1920, 1080),
        Err(e) => eprintln!("gs bench: no GPU ({e}); skipping the gpu group"),
    }
    run(c, "cpu-path", &Device::cpu(), 1000, 96, 64);
    run(c, "simt", &simt(32, Schedule::InOrder, 2), 400, 64, 48);
}

criterion_group!(gs_benches, benches);
criterion_main!(gs_benches);
