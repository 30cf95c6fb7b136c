//! `tessera spagent sim` end to end: the table, the JSON report and the errors.

use std::process::Command;

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("run tessera")
}

#[test]
fn sim_json_grid() {
    let out = tessera(&[
        "spagent",
        "sim",
        "--agents",
        "1,4",
        "--accuracy",
        "0.5,1",
        "--episodes",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let reports = v["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 4);
    assert_eq!(reports[3]["agents"], 4);
    assert_eq!(reports[3]["accuracy"], 1.0);
    // q = 1: nothing is wasted.
    assert_eq!(reports[1]["speculative"]["wasted_tool_calls"], 0);
    assert!(reports[1]["speedup_mean_episode"].as_f64().unwrap() > 1.0);
}

#[test]
fn sim_table_and_curve_file() {
    let dir = tempfile::tempdir().unwrap();
    let curve = dir.path().join("curve.json");
    std::fs::write(&curve, "[[1, 0.01], [64, 0.02]]").unwrap();
    let out = tessera(&[
        "spagent",
        "sim",
        "--agents",
        "2",
        "--accuracy",
        "0.9",
        "--curve",
        curve.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("1: 10.0 ms, 64: 20.0 ms"), "{s}");
    assert!(s.contains("| 2 | 0.90 |"), "{s}");
}

#[test]
fn sim_bad_inputs() {
    let out = tessera(&["spagent", "sim", "--accuracy", "1.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spagent.sim: accuracy = 1.5"));
    let out = tessera(&["spagent", "sim", "--agents", "0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agents = 0"));
    let dir = tempfile::tempdir().unwrap();
    let curve = dir.path().join("bad.json");
    std::fs::write(&curve, "[[1, 0.02], [8, 0.01]]").unwrap();
    let out = tessera(&["spagent", "sim", "--curve", curve.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not monotone"));
    std::fs::write(&curve, "{\"nope\": 1}").unwrap();
    let out = tessera(&["spagent", "sim", "--curve", curve.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spagent latency curve"));
}
