use super::*;
use crate::testing;

#[test]
fn config_validation_names_the_problem() {
    Config::small().validate().unwrap();
    Config::tiny().validate().unwrap();
    let e = Config {
        patch: 3,
        ..Config::tiny()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("drivers::specdiff") && e.contains("patch 3"),
        "{e}"
    );
    let e = Config {
        heads: 4,
        ..Config::tiny()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("head size"), "{e}");
    assert_eq!(Config::small().tokens(), 256);
    assert_eq!(Config::tiny().tokens(), 64);
    assert_eq!(Config::small().patch_dim(), 16);
}

#[test]
fn embeddings_and_layernorm_by_hand() {
    // Token (row 0, column 1) of a 2-token-wide grid, d = 8: quarter 2, ω = 1, 0.01.
    let c = Config {
        height: 2,
        width: 4,
        patch: 2,
        hidden: 8,
        ..Config::tiny()
    };
    let p = pos_embed(&c);
    let row1 = &p[8..16];
    assert_eq!(&row1[..4], &[0.0, 0.0, 1.0, 1.0]); // y = 0: sin 0, cos 0
    assert_eq!(row1[4], 1f64.sin() as f32);
    assert_eq!(row1[5], 0.01f64.sin() as f32);
    assert_eq!(row1[6], 1f64.cos() as f32);
    let f = timestep_frequencies(0.5);
    assert_eq!(f[0], 500f64.cos() as f32);
    assert_eq!(f[FREQ / 2], 500f64.sin() as f32);
    // LN of [1, 3] is [-1, 1] (up to eps); scale 1 doubles, shift 0.5 adds.
    let y = ln_modulate(&[1.0, 3.0], 2, &[0.5, 0.5], &[1.0, 1.0]);
    assert!(
        (y[0] + 1.5).abs() < 1e-5 && (y[1] - 2.5).abs() < 1e-5,
        "{y:?}"
    );
    assert_eq!(rel_l2(&[1.0, 1.0], &[1.0, 1.0]), 0.0);
    assert!((rel_l1(&[2.0, 0.0], &[1.0, 1.0]) - 1.0).abs() < 1e-12);
}

#[test]
fn safetensors_round_trip_and_errors() {
    let dev = Device::cpu();
    let m = Model::random(&dev, Config::tiny(), 7).unwrap();
    let bytes = m.to_safetensors().unwrap();
    let back = Model::from_safetensors(&dev, &bytes).unwrap();
    assert_eq!(back.config(), m.config());
    assert_eq!(back.tensors, m.tensors);
    let z = noise(&Config::tiny(), 1);
    let a = sample(&m, &z, Mode::NoCache, WARMUP).unwrap();
    let b = sample(&back, &z, Mode::NoCache, WARMUP).unwrap();
    assert_eq!(a.latent, b.latent);
    // A file without the metadata, and a wrong shape, are named.
    let e = Model::from_safetensors(&dev, &bytes[..bytes.len() / 2])
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("drivers::specdiff") && e.contains("safetensors"),
        "{e}"
    );
    let mut t = m.tensors.clone();
    t.retain(|x| x.0 != "blocks.0.mlp.fc2.bias");
    let m2 = Model { tensors: t, ..m };
    let e = Model::from_safetensors(&dev, &m2.to_safetensors().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no tensor `blocks.0.mlp.fc2.bias`"), "{e}");
    // A scalar where fc1's weight belongs (the MLP width comes from its shape): an error.
    let mut t = m2.tensors.clone();
    t.push(("blocks.0.mlp.fc2.bias".into(), vec![128], vec![0.0; 128]));
    for x in t.iter_mut().filter(|x| x.0 == "blocks.0.mlp.fc1.weight") {
        *x = (x.0.clone(), vec![], vec![1.0]);
    }
    let m3 = Model { tensors: t, ..m2 };
    let e = Model::from_safetensors(&dev, &m3.to_safetensors().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a size is 0"), "{e}");
}

/// Every token recomputed (cr = 0) or a step-skip threshold of 0 reproduce no cache bit for bit:
/// the cached paths recompute the same rows with the same ops, only gathered and scattered.
#[test]
fn degenerate_modes_equal_no_cache() {
    let dev = Device::cpu();
    let m = Model::random(&dev, Config::tiny(), 3).unwrap();
    let z = noise(m.config(), 4);
    let base = sample(&m, &z, Mode::NoCache, WARMUP).unwrap();
    assert_eq!(base.recomputed, vec![1.0; 5]);
    for mode in [
        Mode::SpecDiff {
            cr: 0.0,
            low_mass: 0.1,
        },
        Mode::Toca { cr: 0.0 },
        Mode::StepSkip { threshold: 0.0 },
    ] {
        let s = sample(&m, &z, mode, WARMUP).unwrap();
        assert_eq!(s.recomputed, vec![1.0; 5], "{mode:?}");
        assert_eq!(rel_l2(&s.latent, &base.latent), 0.0, "{mode:?}");
    }
    // The look-ahead costs FLOPs; ToCa at cr = 0 costs exactly what no cache does.
    let spec = sample(
        &m,
        &z,
        Mode::SpecDiff {
            cr: 0.0,
            low_mass: 0.1,
        },
        WARMUP,
    )
    .unwrap();
    assert!(spec.flops > base.flops);
    let toca = sample(&m, &z, Mode::Toca { cr: 0.0 }, WARMUP).unwrap();
    assert_eq!(toca.flops, base.flops);
}

#[test]
fn cached_modes_recompute_the_selected_share() {
    let dev = Device::cpu();
    let m = Model::random(&dev, Config::tiny(), 5).unwrap();
    let z = noise(m.config(), 6);
    let base = sample(&m, &z, Mode::NoCache, WARMUP).unwrap();
    // cr = 0.75 of 64 tokens: 16 recomputed after the two full steps.
    for mode in [
        Mode::SpecDiff {
            cr: 0.75,
            low_mass: 0.1,
        },
        Mode::Toca { cr: 0.75 },
    ] {
        let s = sample(&m, &z, mode, WARMUP).unwrap();
        assert_eq!(s.recomputed, vec![1.0, 1.0, 0.25, 0.25, 0.25], "{mode:?}");
        assert!(s.flops < base.flops, "{mode:?}");
        let e = rel_l2(&s.latent, &base.latent);
        assert!(e > 0.0 && e < 1.0, "{mode:?}: {e}");
    }
    // Nothing recomputed: every partial step reuses everything.
    let s = sample(&m, &z, Mode::Toca { cr: 1.0 }, WARMUP).unwrap();
    assert_eq!(s.recomputed, vec![1.0, 1.0, 0.0, 0.0, 0.0]);
    // A huge threshold skips every step after the warm-up.
    let s = sample(&m, &z, Mode::StepSkip { threshold: 1e9 }, WARMUP).unwrap();
    assert_eq!(s.recomputed, vec![1.0, 1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn bad_inputs_are_named() {
    let dev = Device::cpu();
    let m = Model::random(&dev, Config::tiny(), 1).unwrap();
    let z = noise(m.config(), 1);
    for (mode, what) in [
        (
            Mode::SpecDiff {
                cr: 1.5,
                low_mass: 0.1,
            },
            "cr = 1.5",
        ),
        (
            Mode::SpecDiff {
                cr: 0.5,
                low_mass: f64::NAN,
            },
            "low_mass",
        ),
        (Mode::Toca { cr: -0.1 }, "cr = -0.1"),
        (
            Mode::StepSkip {
                threshold: f64::NAN,
            },
            "threshold",
        ),
    ] {
        let e = sample(&m, &z, mode, WARMUP).unwrap_err().to_string();
        assert!(e.contains("drivers::specdiff") && e.contains(what), "{e}");
    }
    let e = sample(&m, &z[1..], Mode::NoCache, WARMUP)
        .unwrap_err()
        .to_string();
    assert!(e.contains("noise has 1023 values"), "{e}");
    let e = sample(&m, &z, Mode::Toca { cr: 0.5 }, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("warmup"), "{e}");
}

/// The modes end to end on host SIMT (wave32 and wave64, shuffled schedules): the same
/// recomputed shares as the CPU path, and latents close to it.
#[test]
fn modes_run_on_simt() {
    let cpu = Device::cpu();
    let cfg = Config {
        steps: 4,
        ..Config::tiny()
    };
    let mc = Model::random(&cpu, cfg, 9).unwrap();
    let z = noise(&cfg, 2);
    let modes = [
        Mode::NoCache,
        Mode::SpecDiff {
            cr: 0.5,
            low_mass: 0.1,
        },
        Mode::StepSkip { threshold: 1e9 },
    ];
    let want: Vec<Sample> = modes
        .iter()
        .map(|&md| sample(&mc, &z, md, WARMUP).unwrap())
        .collect();
    for (dev, wave) in [
        (
            testing::simt(32, crate::device::Schedule::Shuffled(11), 2),
            32,
        ),
        (
            testing::simt(64, crate::device::Schedule::Shuffled(12), 2),
            64,
        ),
    ] {
        let ms = Model::random(&dev, cfg, 9).unwrap();
        for (md, w) in modes.iter().zip(&want) {
            let launches = dev.launches();
            let s = sample(&ms, &z, *md, WARMUP).unwrap();
            assert!(
                dev.launches() > launches,
                "wave{wave} {md:?}: no kernel ran"
            );
            assert_eq!(s.recomputed, w.recomputed, "wave{wave} {md:?}");
            let e = rel_l2(&s.latent, &w.latent);
            assert!(e < 2e-2, "wave{wave} {md:?}: {e}");
        }
    }
}

#[test]
fn curve_table_and_plot() {
    let dev = Device::cpu();
    let m = Model::random(&dev, Config::tiny(), 2).unwrap();
    let modes = [
        Mode::SpecDiff {
            cr: 0.5,
            low_mass: 0.1,
        },
        Mode::Toca { cr: 0.5 },
        Mode::StepSkip { threshold: 0.3 },
    ];
    let c = curve(&m, 1, &modes, WARMUP).unwrap();
    assert_eq!(c.points.len(), 3);
    assert_eq!(c.baseline.rel_l2, 0.0);
    assert_eq!(c.baseline.flops_speedup, 1.0);
    let md = markdown(&c);
    assert!(
        md.contains("| specdiff | 0.5 |") && md.contains("| step-skip | 0.3 |"),
        "{md}"
    );
    assert!(!c.gpu && md.contains("not GPU performance"), "{md}");
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["points"][0]["mode"]["mode"], "spec_diff");
    let dir = std::env::temp_dir().join(format!("tessera-specdiff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("curve.png");
    plot::png(&c, &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&dir).unwrap();
}
