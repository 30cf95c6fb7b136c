//! `gs.bin` and its device radix sort `gs.sort_pairs` (issue 15) on every executor present (CPU
//! path; host SIMT wave32 and wave64, each in order and with two shuffled schedules, red zones
//! checked after every launch; CUDA/HIP when present): keys, ids and tile ranges bit-exact
//! against `reference::gs::raster::bin` on random projected scenes with Gaussians at exact tile
//! edges, radius 0 and negative, off-image boxes, huge radii, equal depths and non-finite means
//! of culled Gaussians; the sort bit-exact against a stable host sort; bad inputs named.

use tessera::ops::gs::bin;
use tessera::reference::gs::{raster, Projected};
use tessera::testing::{simt, Rng};
use tessera::{Device, Error, Schedule};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [
            Schedule::InOrder,
            Schedule::Shuffled(0x65b1),
            Schedule::Shuffled(0x65b2),
        ] {
            d.push(simt(wave, s, 2));
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

/// A projected scene as the op takes it (f32) and as the reference takes it (widened).
struct Scene {
    means2d: Vec<f32>,
    depths: Vec<f32>,
    radii: Vec<i32>,
    width: u32,
    height: u32,
}

impl Scene {
    fn reference(&self) -> raster::Bins {
        let n = self.radii.len();
        let p = Projected {
            means2d: (0..n)
                .map(|g| {
                    [
                        f64::from(self.means2d[2 * g]),
                        f64::from(self.means2d[2 * g + 1]),
                    ]
                })
                .collect(),
            depths: self.depths.iter().map(|&d| f64::from(d)).collect(),
            conics: vec![[1.0, 0.0, 1.0]; n],
            radii: self.radii.clone(),
        };
        raster::bin(&p, self.width, self.height)
    }
}

/// A coordinate that lands on or next to a tile edge for radius `r`: `16k ± r` exactly, one f32
/// ulp either side, or a fractional offset; sometimes the binade case `63 + 2⁻¹⁸` with r = 1.
fn edge_coord(rng: &mut Rng, r: i32, extent: u32) -> f32 {
    let k = (rng.unit() * f64::from(extent / 16 + 2)) as i32 - 1;
    let sign = if rng.unit() < 0.5 { -1 } else { 1 };
    let x = (16 * k + sign * r) as f32;
    match (rng.unit() * 5.0) as u32 {
        0 => x,
        1 => f32::from_bits(x.to_bits() + 1),
        2 => f32::from_bits(x.to_bits().saturating_sub(1)),
        3 => x + 0.25,
        _ => 63.0 + (2.0f32).powi(-18),
    }
}

fn random_scene(seed: u64, n: usize, width: u32, height: u32) -> Scene {
    let mut rng = Rng(seed);
    let depth_levels = [0.5f32, 1.25, 2.0, 7.5];
    let (mut means2d, mut depths, mut radii) = (Vec::new(), Vec::new(), Vec::new());
    for g in 0..n {
        let u = rng.unit();
        let r = if u < 0.08 {
            0
        } else if u < 0.1 {
            -3
        } else if u < 0.12 {
            (width.max(height) + 40) as i32
        } else {
            1 + (rng.unit() * 40.0) as i32
        };
        let trap = g % 29 == 3;
        let r = if trap { 1 } else { r };
        let (x, y) = if trap {
            // f32 x/16 + 1/16 rounds down onto a tile edge for these (see tile_edges_by_hand).
            let x = [63.0 + (2.0f32).powi(-18), 127.0 + (2.0f32).powi(-17)][g % 2];
            (x, (rng.unit() * f64::from(height)) as f32)
        } else if rng.unit() < 0.35 {
            let x = edge_coord(&mut rng, r.max(1), width);
            let y = if rng.unit() < 0.5 {
                edge_coord(&mut rng, r.max(1), height)
            } else {
                (rng.unit() * f64::from(height)) as f32
            };
            if rng.unit() < 0.5 {
                (x, y)
            } else {
                (y.min(width as f32 + 50.0), x)
            }
        } else {
            // Includes boxes entirely off the image.
            (
                ((rng.unit() * 1.6 - 0.3) * f64::from(width)) as f32,
                ((rng.unit() * 1.6 - 0.3) * f64::from(height)) as f32,
            )
        };
        // Culled Gaussians may carry garbage: non-finite means are fine at radius <= 0.
        let (x, y) = if r <= 0 && g % 5 == 0 {
            (f32::NAN, f32::INFINITY)
        } else {
            (x, y)
        };
        means2d.extend([x, y]);
        // Many equal depths (equal keys in a tile) and some distinct ones.
        depths.push(if rng.unit() < 0.7 {
            depth_levels[(rng.unit() * 4.0) as usize]
        } else {
            (0.01 + rng.unit() * 50.0) as f32
        });
        radii.push(r);
    }
    Scene {
        means2d,
        depths,
        radii,
        width,
        height,
    }
}

fn check_scene(devs: &[Device], s: &Scene, label: &str) {
    let want = s.reference();
    for dev in devs {
        let got = bin::bin_host(dev, &s.means2d, &s.depths, &s.radii, s.width, s.height)
            .unwrap_or_else(|e| panic!("{label} on {}: {e}", dev.backend()));
        assert_eq!(
            (got.tiles_x, got.tiles_y),
            (want.tiles_x, want.tiles_y),
            "{label}"
        );
        assert_eq!(
            got.keys.len(),
            want.keys.len(),
            "{label} on {}: M",
            dev.backend()
        );
        if let Some(i) = (0..want.keys.len()).find(|&i| got.keys[i] != want.keys[i]) {
            panic!("{label} on {}: keys differ first at {i}", dev.backend());
        }
        if let Some(i) = (0..want.ids.len()).find(|&i| got.ids[i] != want.ids[i]) {
            panic!("{label} on {}: ids differ first at {i}", dev.backend());
        }
        assert_eq!(
            got.tile_ranges,
            want.tile_ranges,
            "{label} on {}: tile ranges",
            dev.backend()
        );
    }
}

#[test]
fn random_scenes_match_reference() {
    let devs = devices();
    // (N, width, height): one tile, sizes not multiple of 16, > 256 tiles (two tile digits),
    // and one scene whose M spans several sort blocks.
    let shapes = [
        (0usize, 64u32, 48u32),
        (1, 16, 16),
        (37, 1, 1),
        (200, 100, 70),
        (300, 300, 290),
        (1500, 130, 97),
    ];
    for (k, &(n, w, h)) in shapes.iter().enumerate() {
        let s = random_scene(0x6b1_0000 + k as u64, n, w, h);
        check_scene(&devs, &s, &format!("scene {k} (N {n}, {w}x{h})"));
    }
    // The large scene has many intersections (several sort blocks) and many duplicate keys.
    let s = random_scene(0x6b1_0005, 1500, 130, 97);
    let m = s.reference().keys.len();
    assert!(m > 2 * 4096, "M = {m}");
    let b = s.reference();
    assert!(b.keys.windows(2).filter(|w| w[0] == w[1]).count() > 1000);
}

#[test]
fn tile_edges_by_hand() {
    // 80x48 image (5x3 tiles): the reference's rule at exact edges, in f32 inputs.
    let ulp_above = |x: f32| f32::from_bits(x.to_bits() + 1);
    let ulp_below = |x: f32| f32::from_bits(x.to_bits() - 1);
    let binade = 63.0 + (2.0f32).powi(-18);
    // The trap an f32 kernel falls into: x/16 + r/16 rounds to 4.0 exactly, so ceil misses
    // tile 4 (the exact x + r is 64 + 2^-18).
    assert_eq!((binade / 16.0 + 1.0 / 16.0).ceil(), 4.0);
    let gs: [(f32, f32, i32); 9] = [
        (21.0, 10.0, 5),            // x - r = 16 exactly: tile 0 untouched
        (27.0, 10.0, 5),            // x + r = 32 exactly: tile 2 untouched
        (ulp_above(27.0), 10.0, 5), // just past: tile 2 touched
        (ulp_below(21.0), 10.0, 5), // just before: tile 0 touched
        (binade, 10.0, 1),          // x + r just past 64: tile 4 touched
        (ulp_below(63.0), 47.0, 1), // x + r just below 64: tile 4 not
        (-3.0, -3.0, 3),            // x + r = 0 exactly: off the image
        (83.0, 20.0, 3),            // x - r = 80 exactly: off the image
        (32.0, 24.0, 1000),         // covers everything
    ];
    let s = Scene {
        means2d: gs.iter().flat_map(|g| [g.0, g.1]).collect(),
        depths: vec![1.0; gs.len()],
        radii: gs.iter().map(|g| g.2).collect(),
        width: 80,
        height: 48,
    };
    let want = s.reference();
    // Spot checks of the reference itself (one per rule), then every device.
    let tiles_of = |g: u32| -> Vec<u64> {
        (0..want.ids.len())
            .filter(|&i| want.ids[i] == g)
            .map(|i| want.keys[i] >> 32)
            .collect()
    };
    assert_eq!(tiles_of(0), vec![1]);
    assert_eq!(tiles_of(1), vec![1]);
    assert_eq!(tiles_of(2), vec![1, 2]);
    assert_eq!(tiles_of(3), vec![0, 1]);
    assert_eq!(tiles_of(4), vec![3, 4]);
    assert_eq!(tiles_of(5), vec![13]);
    assert!(tiles_of(6).is_empty() && tiles_of(7).is_empty());
    assert_eq!(tiles_of(8).len(), 15);
    check_scene(&devices(), &s, "tile edges");
}

fn stable_sort(keys: &[u64], ids: &[u32]) -> (Vec<u64>, Vec<u32>) {
    let mut p: Vec<(u64, u32)> = keys.iter().copied().zip(ids.iter().copied()).collect();
    p.sort_by_key(|&(k, _)| k);
    p.into_iter().unzip()
}

#[test]
fn sort_pairs_is_a_stable_sort() {
    let devs = devices();
    let mut rng = Rng(0x50a7);
    for &m in &[0usize, 1, 2, 255, 256, 257, 4095, 4096, 4097, 9001] {
        for variant in 0..3 {
            let keys: Vec<u64> = (0..m)
                .map(|_| match variant {
                    // Few distinct keys, spread over all eight digits: many duplicates.
                    0 => [0u64, 1, 0xff00, 1 << 40, u64::MAX, 0x8000_0000_0000_0001]
                        [(rng.unit() * 6.0) as usize],
                    // gs.bin-like keys: small tile, f32 depth bits from few levels.
                    1 => {
                        ((rng.unit() * 40.0) as u64) << 32
                            | u64::from([1.0f32, 2.5, 3.0][(rng.unit() * 3.0) as usize].to_bits())
                    }
                    // Full 64-bit random.
                    _ => rng.next_u64(),
                })
                .collect();
            // ids: a permutation (so stability is visible) or repeated values.
            let mut ids: Vec<u32> = (0..m as u32).collect();
            if variant == 2 {
                rng.shuffle(&mut ids);
            }
            let want = stable_sort(&keys, &ids);
            if variant == 0 && m >= 4096 {
                // The data tells a stable sort from an unstable one.
                let mut u: Vec<(u64, u32)> =
                    keys.iter().copied().zip(ids.iter().copied()).collect();
                u.sort_unstable_by_key(|&(k, _)| std::cmp::Reverse(k));
                u.reverse();
                assert_ne!(u.iter().map(|p| p.1).collect::<Vec<_>>(), want.1);
            }
            for dev in &devs {
                let got = bin::sort_pairs_host(dev, &keys, &ids)
                    .unwrap_or_else(|e| panic!("m {m} v{variant} on {}: {e}", dev.backend()));
                assert!(
                    got == want,
                    "m {m} variant {variant} on {}: differs from the stable host sort",
                    dev.backend()
                );
            }
        }
    }
}

fn expect_invalid<T>(r: tessera::Result<T>, op: &str, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument { op: o, msg }) => {
            assert_eq!(o, op, "{msg}");
            for n in needles {
                assert!(msg.contains(n), "'{msg}' lacks '{n}'");
            }
        }
        Err(e) => panic!("expected InvalidArgument ({needles:?}), got {e}"),
        Ok(_) => panic!("expected InvalidArgument ({needles:?}), got Ok"),
    }
}

#[test]
fn bad_inputs_are_named() {
    for dev in devices() {
        let m = [10.0f32, 10.0, 20.0, 20.0];
        let d = [1.0f32, 2.0];
        let r = [3i32, 4];
        expect_invalid(
            bin::bin_host(&dev, &m[..3], &d, &r, 32, 32),
            "gs.bin",
            &["mismatched lengths", "means2d 3"],
        );
        expect_invalid(
            bin::bin_host(&dev, &m, &d[..1], &r, 32, 32),
            "gs.bin",
            &["mismatched lengths", "depths 1"],
        );
        expect_invalid(
            bin::bin_host(&dev, &m, &d, &r, 0, 32),
            "gs.bin",
            &["zero-size image 0x32"],
        );
        expect_invalid(
            bin::bin_host(&dev, &m, &d, &r, 32, 0),
            "gs.bin",
            &["zero-size image"],
        );
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut mb = m;
            mb[3] = bad;
            expect_invalid(
                bin::bin_host(&dev, &mb, &d, &r, 32, 32),
                "gs.bin",
                &["means2d[1]", "not finite"],
            );
        }
        // The first bad Gaussian is named.
        let mut mb = vec![5.0f32; 2 * 600];
        mb[2 * 577] = f32::NAN;
        mb[2 * 301 + 1] = f32::INFINITY;
        expect_invalid(
            bin::bin_host(&dev, &mb, &[1.0; 600], &[2; 600], 32, 32),
            "gs.bin",
            &["means2d[301]"],
        );
        // A non-finite mean at radius 0 is culled, not an error.
        let ok = bin::bin_host(&dev, &[f32::NAN, 1.0, 20.0, 20.0], &d, &[0, 5], 32, 32).unwrap();
        assert_eq!(ok.ids, vec![1, 1, 1, 1]);
        expect_invalid(
            bin::sort_pairs_host(&dev, &[1, 2, 3], &[0, 1]),
            "gs.sort_pairs",
            &["mismatched lengths", "keys 3, ids 2"],
        );
    }
    // Buffers on different devices.
    let a = simt(32, Schedule::InOrder, 1);
    let b = simt(32, Schedule::InOrder, 1);
    let r = bin::bin(
        &b.upload(&[1.0f32, 1.0], "m").unwrap(),
        &a.upload(&[1.0f32], "d").unwrap(),
        &a.upload(&[1i32], "r").unwrap(),
        16,
        16,
    );
    expect_invalid(r, "gs.bin", &["means2d is on another"]);
}

/// CPU-only timings for docs/gs.md (not GPU performance): `cargo test --release --test gs_bin
/// timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_cpu_only() {
    use std::time::Instant;
    let s = random_scene(0x7131, 20_000, 640, 480);
    let m = s.reference().keys.len();
    let cfg = |wave| tessera::SimtConfig {
        wave,
        racecheck: false,
        ..Default::default()
    };
    for (name, dev) in [
        ("cpu path", Device::cpu()),
        ("simt w32", Device::simt_with(cfg(32)).unwrap()),
        ("simt w64", Device::simt_with(cfg(64)).unwrap()),
    ] {
        let (means, depths, radii) = (
            dev.upload(&s.means2d, "m").unwrap(),
            dev.upload(&s.depths, "d").unwrap(),
            dev.upload(&s.radii, "r").unwrap(),
        );
        let _ = bin::bin(&means, &depths, &radii, 640, 480).unwrap();
        let t = Instant::now();
        let reps = 3;
        for _ in 0..reps {
            let _ = bin::bin(&means, &depths, &radii, 640, 480).unwrap();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(reps);
        println!("gs.bin N 20000, 640x480, M {m}: {name} {ms:.1} ms");
        let mut rng = Rng(9);
        let keys: Vec<u64> = (0..1_000_000).map(|_| rng.next_u64()).collect();
        let ids: Vec<u32> = (0..1_000_000).collect();
        let (k, i) = (
            dev.upload(&keys, "k").unwrap(),
            dev.upload(&ids, "i").unwrap(),
        );
        let t = Instant::now();
        let _ = bin::sort_pairs(&k, &i).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!("gs.sort_pairs 1M random u64: {name} {ms:.1} ms");
    }
}
