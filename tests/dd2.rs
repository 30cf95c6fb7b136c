//! The DD2 demo driver (issue 16): the teacher's joint, the estimators, training lowers the KL
//! of the generator's joint from the teacher's, bad settings, and `tessera dd2 demo`.

use std::process::Command;

use tessera::drivers::dd2::{self, Config, Teacher};
use tessera::testing::Rng;
use tessera::Device;

#[test]
fn teacher_joint_is_a_distribution_and_matches_its_samples() {
    let c = Config::default();
    let t = Teacher::random(&c).unwrap();
    let j = t.joint(3);
    assert_eq!(j.len(), 64);
    assert!((j.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    // p(a, b, c) = p0[a] T[a][b] T[b][c] by hand for one sequence (index a·16 + b·4 + c).
    let (a, b, cc) = (2, 0, 3);
    let want = t.p0[a] as f64 * t.trans[a * 4 + b] as f64 * t.trans[b * 4 + cc] as f64;
    assert!((j[a * 16 + b * 4 + cc] - want).abs() < 1e-12);
    let toks = t.sample(3, 200_000, &mut Rng(9));
    let q = dd2::empirical(&toks, 4, 3);
    // 63 degrees of freedom: E[KL] ≈ 63 / (2·200 000) = 1.6e-4.
    assert!(dd2::kl(&q, &j) < 1e-3, "{}", dd2::kl(&q, &j));
}

#[test]
fn estimators_by_hand() {
    let p = [0.5, 0.25, 0.25, 0.0];
    let q = [0.25, 0.25, 0.5, 0.0];
    // KL(q‖p) = 0.25 ln 0.5 + 0 + 0.5 ln 2 = 0.25 ln 2.
    assert!((dd2::kl(&q, &p) - 0.25 * 2f64.ln()).abs() < 1e-15);
    assert!((dd2::tv(&q, &p) - 0.25).abs() < 1e-15);
    // Sequences (1, 0), (1, 0), (0, 1): indices 2, 2, 1 (first token most significant).
    assert_eq!(
        dd2::empirical(&[1, 0, 1, 0, 0, 1], 2, 2),
        vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 0.0]
    );
    // Decoding picks the nearest codebook row.
    let c = Config {
        vocab: 2,
        ..Config::default()
    };
    let t = Teacher::random(&c).unwrap();
    let mut x = t.codebook[8..16].to_vec(); // token 1
    x.extend(t.codebook[0..8].iter().map(|v| v * 0.9)); // near token 0
    assert_eq!(dd2::decode(&t, &x, 2), vec![1, 0]);
}

#[test]
fn training_lowers_the_kl() {
    let c = Config::default();
    let mut last = 0;
    let r = dd2::demo(&Device::cpu(), &c, |s, l| {
        assert!(l.is_finite());
        last = s;
    })
    .unwrap();
    assert_eq!(last, c.steps);
    assert!(r.before.kl > 1.0, "{:?}", r.before);
    // docs/dd2.md: 2.35 → 0.056 nats with these settings.
    assert!(r.after.kl < 0.1, "{:?}", r.after);
    assert!(r.after.kl < r.before.kl / 10.0);
    assert!(r.floor.kl < r.after.kl);
    assert_eq!(r.progress.last().unwrap().step, c.steps);
}

#[test]
fn bad_settings_are_named() {
    for (c, want) in [
        (
            Config {
                dim: 65,
                ..Config::default()
            },
            "dim = 65 is outside 8..=64",
        ),
        (
            Config {
                vocab: 1,
                ..Config::default()
            },
            "vocab = 1",
        ),
        (
            Config {
                lr: f32::NAN,
                ..Config::default()
            },
            "lr = NaN",
        ),
        (
            Config {
                t_max: 1.0,
                ..Config::default()
            },
            "t range",
        ),
    ] {
        let e = dd2::demo(&Device::cpu(), &c, |_, _| {})
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dd2.demo") && e.contains(want), "{e}");
    }
}

#[test]
fn demo_through_the_binary() {
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "dd2",
            "demo",
            "--steps",
            "200",
            "--json",
            "--backend",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["after"]["kl"].as_f64().unwrap() < v["before"]["kl"].as_f64().unwrap());
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["dd2", "demo", "--dim", "4"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("dim = 4 is outside 8..=64"));
}
