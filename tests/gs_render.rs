//! `gs.render` and `gs.render_backward` (issue 15) on every executor present (the CPU path;
//! host SIMT wave32 and wave64, in order and shuffled twice, red zones and poisoned
//! allocations; CUDA/HIP when present) against the f64 reference (`reference::gs::raster`) on
//! small random scenes with partial tiles, bins built on the host with `reference::gs::raster::bin`:
//!
//! - image, alpha, final_t within 1e-4 absolute; n_contrib exact except where an f32 decision
//!   at a threshold (power > 0, α < 1/255, T < 1e-4, the 0.99 cap) may go the other way from
//!   the f64 one: such pixels must be rare and the reference must be within 1e-5 (relative) of
//!   a threshold there;
//! - the baseline and balanced layouts bit-identical;
//! - gradients within ARCHITECTURE §5's f32 class (relative L2 <= 1e-5 per output), not bit-exact
//!   (atomics);
//! - an empty scene renders the background; bad inputs are named errors.

use tessera::ops::gs::render::{self, Layout, RenderInputs};
use tessera::reference::gs::raster::{self as reference, Bins};
use tessera::reference::gs::Projected;
use tessera::testing::simt;
use tessera::{Device, DeviceBuffer, Error, Schedule};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [
            Schedule::InOrder,
            Schedule::Shuffled(0x5a1),
            Schedule::Shuffled(0x5a2),
        ] {
            d.push(simt(wave, s, 2));
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
    /// An f32 value in `[lo, hi)`, widened (the device and the reference see the same input).
    fn f(&mut self, lo: f64, hi: f64) -> f64 {
        f64::from(self.range(lo, hi) as f32)
    }
}

/// A scene in f64 holding f32-representable values, its bins and image size.
struct Scene {
    p: Projected,
    colors: Vec<[f64; 3]>,
    opac: Vec<f64>,
    bg: [f64; 3],
    bins: Bins,
    w: u32,
    h: u32,
}

/// `n` Gaussians on a `w × h` image, means in and a bit outside the image, axis scales in
/// `sc`, opacities in `o` (some > 0.99 hit the cap when `o[1] > 0.99`), a few culled
/// (radius 0), distinct depths.
fn random_scene(seed: u64, n: usize, w: u32, h: u32, sc: [f64; 2], o: [f64; 2]) -> Scene {
    let mut rng = Rng(seed);
    let mut p = Projected::default();
    let (mut colors, mut opac) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mean = [
            rng.f(-6.0, f64::from(w) + 6.0),
            rng.f(-6.0, f64::from(h) + 6.0),
        ];
        let (s1, s2) = (rng.range(sc[0], sc[1]), rng.range(sc[0], sc[1]));
        let th = rng.range(0.0, std::f64::consts::PI);
        let (c, s) = (th.cos(), th.sin());
        let (v1, v2) = (s1 * s1, s2 * s2);
        let (a, b, d) = (
            c * c * v1 + s * s * v2,
            c * s * (v1 - v2),
            s * s * v1 + c * c * v2,
        );
        let det = a * d - b * b;
        let conic = [d / det, -b / det, a / det].map(|v| f64::from(v as f32));
        let culled = rng.next() < 0.1;
        p.means2d.push(mean);
        p.depths.push(rng.f(1.0, 10.0));
        p.conics.push(conic);
        p.radii.push(if culled {
            0
        } else {
            (3.0 * s1.max(s2)).ceil() as i32
        });
        colors.push([rng.f(0.0, 1.0), rng.f(0.0, 1.0), rng.f(0.0, 1.0)]);
        opac.push(rng.f(o[0], o[1]));
    }
    let bg = [rng.f(0.0, 1.0), rng.f(0.0, 1.0), rng.f(0.0, 1.0)];
    let bins = reference::bin(&p, w, h);
    Scene {
        p,
        colors,
        opac,
        bg,
        bins,
        w,
        h,
    }
}

/// The scene's buffers on one device.
struct Up {
    means2d: DeviceBuffer<f32>,
    conics: DeviceBuffer<f32>,
    opacities: DeviceBuffer<f32>,
    colors: DeviceBuffer<f32>,
    ids: DeviceBuffer<u32>,
    tile_ranges: DeviceBuffer<u32>,
}

fn f32s(v: impl IntoIterator<Item = f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

fn upload(dev: &Device, s: &Scene) -> Up {
    let u = |v: Vec<f32>, l: &str| dev.upload(&v, l).unwrap();
    Up {
        means2d: u(f32s(s.p.means2d.iter().flatten().copied()), "means2d"),
        conics: u(f32s(s.p.conics.iter().flatten().copied()), "conics"),
        opacities: u(f32s(s.opac.iter().copied()), "opacities"),
        colors: u(f32s(s.colors.iter().flatten().copied()), "colors"),
        ids: dev.upload(&s.bins.ids, "ids").unwrap(),
        tile_ranges: dev
            .upload(&s.bins.tile_ranges.concat(), "tile_ranges")
            .unwrap(),
    }
}

fn inputs<'a>(s: &Scene, u: &'a Up) -> RenderInputs<'a> {
    RenderInputs {
        means2d: &u.means2d,
        conics: &u.conics,
        opacities: &u.opacities,
        colors: &u.colors,
        ids: &u.ids,
        tile_ranges: &u.tile_ranges,
        tiles_x: s.bins.tiles_x,
        tiles_y: s.bins.tiles_y,
        width: s.w,
        height: s.h,
        background: s.bg.map(|v| v as f32),
    }
}

struct HostRender {
    image: Vec<f32>,
    alpha: Vec<f32>,
    n_contrib: Vec<u32>,
    final_t: Vec<f32>,
}

fn host(r: &render::Rendered) -> HostRender {
    HostRender {
        image: r.image.download().unwrap(),
        alpha: r.alpha.download().unwrap(),
        n_contrib: r.n_contrib.download().unwrap(),
        final_t: r.final_t.download().unwrap(),
    }
}

/// The smallest relative distance to a threshold among the decisions the reference takes at
/// pixel `(i, j)` (replayed in f64 up to its stop).
fn margin(s: &Scene, i: u32, j: u32) -> f64 {
    let (px, py) = (f64::from(i) + 0.5, f64::from(j) + 0.5);
    let t_id = (j / 16) * s.bins.tiles_x + i / 16;
    let [st, en] = s.bins.tile_ranges[t_id as usize];
    let rel = |x: f64, thr: f64| ((x - thr) / thr.abs().max(1e-30)).abs();
    let mut m = f64::INFINITY;
    let mut t = 1.0f64;
    for &g in &s.bins.ids[st as usize..en as usize] {
        let g = g as usize;
        let [mx, my] = s.p.means2d[g];
        let [a, b, c] = s.p.conics[g];
        let (dx, dy) = (mx - px, my - py);
        let power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy;
        m = m.min(power.abs() / (a * dx * dx + c * dy * dy).abs().max(1e-30));
        if power > 0.0 {
            continue;
        }
        let raw = s.opac[g] * power.exp();
        m = m.min(rel(raw, 0.99));
        let alpha = raw.min(0.99);
        m = m.min(rel(alpha, 1.0 / 255.0));
        if alpha < 1.0 / 255.0 {
            continue;
        }
        let next = t * (1.0 - alpha);
        m = m.min(rel(next, 1e-4));
        if next < 1e-4 {
            break;
        }
        t = next;
    }
    m
}

/// The (pixel, Gaussian) pairs the reference blends with the 0.99 cap active.
fn capped(s: &Scene) -> usize {
    let mut n = 0;
    for j in 0..s.h {
        for i in 0..s.w {
            let (px, py) = (f64::from(i) + 0.5, f64::from(j) + 0.5);
            let [st, en] = s.bins.tile_ranges[((j / 16) * s.bins.tiles_x + i / 16) as usize];
            for &g in &s.bins.ids[st as usize..en as usize] {
                let g = g as usize;
                let [mx, my] = s.p.means2d[g];
                let [a, b, c] = s.p.conics[g];
                let (dx, dy) = (mx - px, my - py);
                let power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy;
                n += usize::from(power <= 0.0 && s.opac[g] * power.exp() > 0.99);
            }
        }
    }
    n
}

/// Compares a device render with the reference; returns the pixels whose n_contrib differs.
fn check_forward(s: &Scene, got: &HostRender, label: &str) -> usize {
    let r = reference::render(&s.p, &s.colors, &s.opac, &s.bins, s.w, s.h, s.bg).unwrap();
    let mut flips = 0;
    for q in 0..(s.w * s.h) as usize {
        let (i, j) = (q as u32 % s.w, q as u32 / s.w);
        if got.n_contrib[q] != r.n_contrib[q] {
            let m = margin(s, i, j);
            assert!(
                m < 1e-5,
                "{label}: n_contrib[{q}] {} vs {} with the reference {m} from any threshold",
                got.n_contrib[q],
                r.n_contrib[q]
            );
            flips += 1;
            continue;
        }
        for k in 0..3 {
            let (g, w) = (f64::from(got.image[3 * q + k]), r.image[q][k]);
            assert!((g - w).abs() <= 1e-4, "{label}: image[{q}][{k}] {g} vs {w}");
        }
        let (g, w) = (f64::from(got.alpha[q]), r.alpha[q]);
        assert!((g - w).abs() <= 1e-4, "{label}: alpha[{q}] {g} vs {w}");
        let (g, w) = (f64::from(got.final_t[q]), r.final_t[q]);
        assert!((g - w).abs() <= 1e-4, "{label}: final_t[{q}] {g} vs {w}");
    }
    assert!(
        flips * 200 <= (s.w * s.h) as usize,
        "{label}: {flips} n_contrib flips"
    );
    flips
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Renders `s` on every device in both layouts: matches the reference, layouts bit-identical.
fn forward_case(devs: &[Device], s: &Scene, label: &str) -> usize {
    let mut flips = 0;
    for dev in devs {
        let u = upload(dev, s);
        let x = inputs(s, &u);
        let base = host(&render::render(&x, Layout::Baseline).unwrap());
        let bal = host(&render::render(&x, Layout::Balanced).unwrap());
        let l = format!("{label} on {}", dev.backend());
        flips += check_forward(s, &base, &l);
        assert_eq!(bits(&base.image), bits(&bal.image), "{l}: layouts differ");
        assert_eq!(bits(&base.alpha), bits(&bal.alpha), "{l}");
        assert_eq!(bits(&base.final_t), bits(&bal.final_t), "{l}");
        assert_eq!(base.n_contrib, bal.n_contrib, "{l}");
    }
    flips
}

#[test]
fn forward_matches_reference_both_layouts() {
    let devs = devices();
    let mut flips = 0;
    let mut stopped = 0;
    for seed in 0..4u64 {
        // Translucent, and near-opaque (the cap and the T stop).
        let s = random_scene(seed, 40, 48, 40, [1.0, 7.0], [0.05, 0.95]);
        flips += forward_case(&devs, &s, &format!("translucent seed {seed}"));
        let s = random_scene(100 + seed, 60, 48, 40, [3.0, 12.0], [0.985, 1.0]);
        let r = reference::render(&s.p, &s.colors, &s.opac, &s.bins, s.w, s.h, s.bg).unwrap();
        stopped += r.final_t.iter().filter(|&&t| t < 2e-4).count();
        let nc = capped(&s);
        assert!(nc > 20, "opaque seed {seed}: {nc} capped pairs");
        flips += forward_case(&devs, &s, &format!("opaque seed {seed}"));
    }
    assert!(stopped > 50, "the opaque scenes stop only {stopped} pixels");
    eprintln!("n_contrib flips over all devices and scenes: {flips}");
}

/// More than one 256-Gaussian batch per tile (faint Gaussians, so pixels do not stop early).
#[test]
fn forward_several_batches_per_tile() {
    let devs = devices();
    let s = random_scene(7, 700, 40, 24, [3.0, 12.0], [0.01, 0.08]);
    let longest = s.bins.tile_ranges.iter().map(|[a, b]| b - a).max().unwrap();
    assert!(longest > 512, "longest tile range {longest}");
    forward_case(&devs, &s, "many");
}

#[test]
fn empty_scene_renders_the_background() {
    let mut culled = random_scene(3, 20, 48, 40, [1.0, 7.0], [0.1, 0.9]);
    culled.p.radii.iter_mut().for_each(|r| *r = 0);
    culled.bins = reference::bin(&culled.p, culled.w, culled.h);
    // And no Gaussians at all, on a 1-pixel image.
    let none = random_scene(4, 0, 1, 1, [1.0, 7.0], [0.1, 0.9]);
    for (s, dev) in [&culled, &none]
        .into_iter()
        .flat_map(|s| devices().into_iter().map(move |d| (s, d)))
    {
        assert!(s.bins.ids.is_empty());
        let u = upload(&dev, s);
        let x = inputs(s, &u);
        for layout in [Layout::Baseline, Layout::Balanced] {
            let r = host(&render::render(&x, layout).unwrap());
            let bg = x.background;
            for q in 0..(s.w * s.h) as usize {
                assert_eq!(&r.image[3 * q..3 * q + 3], &bg, "{}", dev.backend());
            }
            assert!(r.alpha.iter().all(|&a| a == 0.0));
            assert!(r.final_t.iter().all(|&t| t == 1.0));
            assert!(r.n_contrib.iter().all(|&c| c == 0));
        }
        let r = render::render(&x, Layout::Baseline).unwrap();
        let n_pix = (s.w * s.h) as usize;
        let vi = dev.upload(&vec![1f32; 3 * n_pix], "vi").unwrap();
        let va = dev.upload(&vec![1f32; n_pix], "va").unwrap();
        let g = render::render_backward(&x, &r, &vi, &va, Layout::Balanced).unwrap();
        for b in [&g.v_means2d, &g.v_conics, &g.v_colors, &g.v_opacities] {
            assert!(b.download().unwrap().iter().all(|&v| v == 0.0));
        }
    }
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite());
        num += (f64::from(g) - w).powi(2);
        den += w * w;
    }
    if num == 0.0 {
        0.0
    } else {
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// The backward on the device's own forward vs the reference backward on the reference
/// forward; relative L2 per gradient within the f32 class (1e-5).
fn backward_case(devs: &[Device], s: &Scene, seed: u64, label: &str) -> f64 {
    let n_pix = (s.w * s.h) as usize;
    let mut rng = Rng(seed ^ 0xBEEF);
    let vi: Vec<f64> = (0..3 * n_pix).map(|_| rng.f(-1.0, 1.0)).collect();
    let va: Vec<f64> = (0..n_pix).map(|_| rng.f(-1.0, 1.0)).collect();
    let vi3: Vec<[f64; 3]> = vi.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    let fwd = reference::render(&s.p, &s.colors, &s.opac, &s.bins, s.w, s.h, s.bg).unwrap();
    let want = reference::render_backward(
        &s.p, &s.colors, &s.opac, &s.bins, s.w, s.h, s.bg, &fwd, &vi3, &va,
    )
    .unwrap();
    let mut worst = 0.0f64;
    for dev in devs {
        let u = upload(dev, s);
        let x = inputs(s, &u);
        let r = render::render(&x, Layout::Balanced).unwrap();
        let l = format!("{label} on {}", dev.backend());
        assert_eq!(
            r.n_contrib.download().unwrap(),
            fwd.n_contrib,
            "{l}: a threshold flip; pick another seed"
        );
        let vib = dev.upload(&f32s(vi.iter().copied()), "v_image").unwrap();
        let vab = dev.upload(&f32s(va.iter().copied()), "v_alpha").unwrap();
        for layout in [Layout::Baseline, Layout::Balanced] {
            let g = render::render_backward(&x, &r, &vib, &vab, layout).unwrap();
            let l = format!("{l} {layout:?}");
            for (name, got, w) in [
                ("v_means2d", &g.v_means2d, want.v_means2d.concat()),
                ("v_conics", &g.v_conics, want.v_conics.concat()),
                ("v_colors", &g.v_colors, want.v_colors.concat()),
                ("v_opacities", &g.v_opacities, want.v_opacities.clone()),
            ] {
                let e = rel_l2(&got.download().unwrap(), &w);
                assert!(e <= 1e-5, "{l}: {name} relative L2 {e:e}");
                assert!(w.iter().any(|&v| v.abs() > 1e-3), "{l}: {name} is trivial");
                worst = worst.max(e);
            }
        }
    }
    worst
}

#[test]
fn backward_matches_reference() {
    let devs = devices();
    let mut worst = 0.0f64;
    for seed in 0..3u64 {
        let s = random_scene(200 + seed, 40, 48, 40, [1.0, 7.0], [0.05, 0.95]);
        worst = worst.max(backward_case(
            &devs,
            &s,
            seed,
            &format!("translucent {seed}"),
        ));
        let s = random_scene(300 + seed, 60, 48, 40, [3.0, 12.0], [0.985, 1.0]);
        let nc = capped(&s);
        assert!(nc > 20, "opaque seed {seed}: {nc} capped pairs");
        worst = worst.max(backward_case(&devs, &s, seed, &format!("opaque {seed}")));
    }
    let s = random_scene(7, 700, 40, 24, [3.0, 12.0], [0.01, 0.08]);
    worst = worst.max(backward_case(&devs, &s, 9, "many"));
    eprintln!("worst gradient relative L2: {worst:e}");
}

fn expect_invalid<T: std::fmt::Debug>(r: tessera::Result<T>, op: &str, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument { op: got, msg }) => {
            assert_eq!(got, op, "{msg}");
            for n in needles {
                assert!(msg.contains(n), "'{msg}' lacks '{n}'");
            }
        }
        Err(e) => panic!("expected InvalidArgument ({needles:?}), got {e}"),
        Ok(v) => panic!("expected InvalidArgument ({needles:?}), got Ok({v:?})"),
    }
}

#[test]
fn bad_inputs_are_named() {
    let s = random_scene(11, 12, 48, 40, [1.0, 7.0], [0.1, 0.9]);
    let referenced = s.bins.ids[0] as usize;
    let n_pix = (s.w * s.h) as usize;
    for dev in devices() {
        let u = upload(&dev, &s);
        let x = inputs(&s, &u);
        let fwd = |x: &RenderInputs| render::render(x, Layout::Balanced);
        let op = render::OP;
        expect_invalid(fwd(&RenderInputs { width: 0, ..x }), op, &["empty"]);
        expect_invalid(fwd(&RenderInputs { height: 0, ..x }), op, &["empty"]);
        expect_invalid(fwd(&RenderInputs { width: 64, ..x }), op, &["tile grid"]);
        let short = dev.upload(&[0f32; 5], "short").unwrap();
        expect_invalid(
            fwd(&RenderInputs {
                colors: &short,
                ..x
            }),
            op,
            &["colors"],
        );
        expect_invalid(
            fwd(&RenderInputs {
                means2d: &short,
                ..x
            }),
            op,
            &["means2d"],
        );
        let short_u = dev.upload(&[0u32; 3], "short").unwrap();
        expect_invalid(
            fwd(&RenderInputs {
                tile_ranges: &short_u,
                ..x
            }),
            op,
            &["tile_ranges"],
        );
        expect_invalid(
            fwd(&RenderInputs {
                background: [0.0, f32::NAN, 0.0],
                ..x
            }),
            op,
            &["background"],
        );
        // Contents: checked on the device (the CPU path: by the reference).
        let mut col = f32s(s.colors.iter().flatten().copied());
        col[3 * 5 + 1] = f32::INFINITY;
        let colb = dev.upload(&col, "colors").unwrap();
        expect_invalid(
            fwd(&RenderInputs { colors: &colb, ..x }),
            op,
            &["colors[5]", "not finite"],
        );
        let mut o = f32s(s.opac.iter().copied());
        o[7] = f32::NAN;
        let ob = dev.upload(&o, "opacities").unwrap();
        expect_invalid(
            fwd(&RenderInputs {
                opacities: &ob,
                ..x
            }),
            op,
            &["opacities[7]"],
        );
        let mut m = f32s(s.p.means2d.iter().flatten().copied());
        m[2 * referenced] = f32::NAN;
        let mb = dev.upload(&m, "means2d").unwrap();
        expect_invalid(
            fwd(&RenderInputs { means2d: &mb, ..x }),
            op,
            &[&format!("means2d[{referenced}]")],
        );
        let mut ids = s.bins.ids.clone();
        ids[2] = 99;
        let idb = dev.upload(&ids, "ids").unwrap();
        expect_invalid(fwd(&RenderInputs { ids: &idb, ..x }), op, &["ids[2]"]);
        let mut tr = s.bins.tile_ranges.concat();
        tr[2 * 4 + 1] = ids.len() as u32 + 1;
        let trb = dev.upload(&tr, "tile_ranges").unwrap();
        expect_invalid(
            fwd(&RenderInputs {
                tile_ranges: &trb,
                ..x
            }),
            op,
            &["tile_ranges[4]"],
        );
        // The backward.
        let bop = render::BACKWARD_OP;
        let r = fwd(&x).unwrap();
        let vi = dev.upload(&vec![0.5f32; 3 * n_pix], "vi").unwrap();
        let va = dev.upload(&vec![0.5f32; n_pix], "va").unwrap();
        let vi_short = dev.upload(&vec![0.5f32; n_pix], "vi").unwrap();
        expect_invalid(
            render::render_backward(&x, &r, &vi_short, &va, Layout::Baseline),
            bop,
            &["v_image"],
        );
        expect_invalid(
            render::render_backward(
                &RenderInputs { width: 0, ..x },
                &r,
                &vi,
                &va,
                Layout::Balanced,
            ),
            bop,
            &["empty"],
        );
        let mut vav = vec![0.5f32; n_pix];
        vav[17] = f32::NAN;
        let vab = dev.upload(&vav, "va").unwrap();
        expect_invalid(
            render::render_backward(&x, &r, &vi, &vab, Layout::Baseline),
            bop,
            &["v_alpha[17]"],
        );
        let mut nc = r.n_contrib.download().unwrap();
        nc[0] = 1000;
        let r2 = render::Rendered {
            image: dev.upload(&r.image.download().unwrap(), "i").unwrap(),
            alpha: dev.upload(&r.alpha.download().unwrap(), "a").unwrap(),
            n_contrib: dev.upload(&nc, "nc").unwrap(),
            final_t: dev.upload(&r.final_t.download().unwrap(), "t").unwrap(),
        };
        expect_invalid(
            render::render_backward(&x, &r2, &vi, &va, Layout::Balanced),
            bop,
            &["n_contrib[0]"],
        );
        assert!(render::render_backward(&x, &r, &vi, &va, Layout::Baseline).is_ok());
    }
}
