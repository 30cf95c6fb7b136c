//! `tessera specdiff` through the binary: `init` writes a DiT in safetensors, `curve` reads it and
//! prints the JSON curve and writes the PNG; a bad cache ratio is a clear error, not a panic.

use std::process::{Command, Output};

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

#[test]
fn init_then_curve_through_the_binary() {
    let dir = std::env::temp_dir().join(format!("tessera-specdiff-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("dit.safetensors");
    let png = dir.join("curve.png");
    let (m, p) = (model.to_str().unwrap(), png.to_str().unwrap());
    let o = tessera(&[
        "specdiff", "init", "--shape", "tiny", "--seed", "3", "-o", m,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tessera(&[
        "specdiff",
        "curve",
        "--weights",
        m,
        "--backend",
        "cpu",
        "--cr",
        "0.5",
        "--threshold",
        "0.2",
        "--json",
        "--png",
        p,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["config"]["blocks"], 1);
    assert_eq!(v["baseline"]["rel_l2"], 0.0);
    let modes: Vec<&str> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["mode"]["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["spec_diff", "toca", "step_skip"]);
    // 64 tokens, cr 0.5: two full steps, then 32 of 64 per step.
    assert_eq!(
        v["points"][0]["recomputed"],
        serde_json::json!([1.0, 1.0, 0.5, 0.5, 0.5])
    );
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    // A cache ratio outside [0, 1]: a named error, no output.
    let o = tessera(&[
        "specdiff",
        "curve",
        "--weights",
        m,
        "--backend",
        "cpu",
        "--cr",
        "1.5",
        "--no-png",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("drivers::specdiff") && e.contains("cr = 1.5"),
        "{e}"
    );
    assert!(!e.contains("panicked") && o.stdout.is_empty(), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
