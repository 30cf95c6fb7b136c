//! Checkpoint codec bench (CPU path): ratio and throughput of each policy on the generator's
//! late and early pairs, side by side in the same run with zstd levels 3 and 19 on the new file
//! and on XOR(new, base) -- what users would otherwise do. These are CPU figures.
//!
//! - Full model (`SynthConfig::bench()`, ~23M parameters, the size of the paper's model):
//!   tessera lossless and the four zstd rows. Fast rows are the best of 3 runs (compress and
//!   decompress each), zstd-19 one run.
//! - Budgets: on a subset model (the same generator with one layer and a 2048-token vocabulary,
//!   ~4M parameters), one run each, next to lossless on the same subset; budgeted compress runs
//!   k-means for several widths and thresholds per tensor and is slow.
//!
//! Environment: `TESSERA_CKPT_BENCH=tiny` (a small model, seconds), `TESSERA_CKPT_BENCH_DIR=dir`
//! (keep the generated pairs there and reuse them), `TESSERA_CKPT_BENCH_ONLY=lossless` (only
//! tessera lossless and zstd-3 on the full model).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tessera::ckpt::{self, synth, CompressOptions};
use tessera::Device;

/// Best of `n` timed runs of `f` (seconds) and the last result.
fn best_of<R>(n: usize, mut f: impl FnMut() -> R) -> (f64, R) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("n > 0"))
}

fn row(pair: &str, method: &str, ratio: f64, orig: usize, cs: f64, ds: f64) {
    println!(
        "| {pair} | {method} | {ratio:.2}x | {:.0} | {:.0} |",
        orig as f64 / 1e6 / cs,
        orig as f64 / 1e6 / ds
    );
}

/// zstd at `level` on `data()`, which is timed with the compression (the XOR for the XOR rows).
fn zstd_row<'a>(pair: &str, what: &str, data: &dyn Fn() -> Cow<'a, [u8]>, level: i32, orig: usize) {
    let runs = if level >= 10 { 1 } else { 3 };
    let (cs, (c, len)) = best_of(runs, || {
        let d = data();
        (zstd::bulk::compress(&d, level).expect("zstd"), d.len())
    });
    let (ds, d) = best_of(runs, || zstd::bulk::decompress(&c, len).expect("zstd"));
    assert_eq!(d.len(), len);
    row(
        pair,
        &format!("zstd-{level} on {what}"),
        orig as f64 / c.len() as f64,
        orig,
        cs,
        ds,
    );
}

fn changed_fraction(base: &Path, new: &Path) -> f64 {
    let (b, n) = (
        ckpt::st::StFile::open(base).unwrap(),
        ckpt::st::StFile::open(new).unwrap(),
    );
    let (mut ch, mut tot) = (0usize, 0usize);
    for t in &n.tensors {
        if t.dtype_name() != "BF16" {
            continue;
        }
        let (x, y) = (n.data(t), b.data(b.get(&t.name).unwrap()));
        for (p, q) in x.chunks_exact(2).zip(y.chunks_exact(2)) {
            ch += (p != q) as usize;
            tot += 1;
        }
    }
    ch as f64 / tot as f64
}

/// Generate (or reuse, with TESSERA_CKPT_BENCH_DIR) the pair of `stage` for `cfg`.
fn pair(
    cfg: &synth::SynthConfig,
    stage: synth::Stage,
    tmp: &Path,
    label: &str,
) -> (PathBuf, PathBuf) {
    // The files are named by stage and model size; delete them after changing the generator.
    let keep = std::env::var_os("TESSERA_CKPT_BENCH_DIR").map(PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp);
    let tag = format!("{stage:?}-{}", cfg.params()).to_lowercase();
    let (b, n) = (
        dir.join(format!("{tag}-base.safetensors")),
        dir.join(format!("{tag}-new.safetensors")),
    );
    let t = Instant::now();
    if keep.is_none() || !(b.exists() && n.exists()) {
        synth::write_pair(cfg, stage, &b, &n).unwrap();
    }
    eprintln!(
        "{label}: {} parameters, pair ready in {:.1} s, {:.1}% of bf16 elements changed",
        cfg.params(),
        t.elapsed().as_secs_f64(),
        100.0 * changed_fraction(&b, &n)
    );
    (b, n)
}

/// tessera compress and decompress of `n` against `b`: one table row.
fn tessera_row(label: &str, b: &Path, n: &Path, budget: f64, runs: usize, tmp: &Path) {
    let dev = Device::cpu();
    let orig = std::fs::metadata(n).unwrap().len() as usize;
    let out = tmp.join("o.tsnap");
    let opts = CompressOptions {
        error_budget: budget,
        keep_exact: vec![],
    };
    let (cs, r) = best_of(runs, || {
        ckpt::compress(n, Some(b), &out, &opts, &dev, &mut |_| {}).unwrap()
    });
    let back = tmp.join("back.safetensors");
    let (ds, _) = best_of(runs, || {
        ckpt::decompress(&out, Some(b), &back, &dev, &mut |_| {}).unwrap()
    });
    if budget == 0.0 {
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(n).unwrap(),
            "lossless round trip"
        );
    }
    let method = if budget == 0.0 {
        "tessera lossless".to_string()
    } else {
        format!("tessera budget {budget:.0e}")
    };
    row(label, &method, r.ratio, orig, cs, ds);
    let mut encs: Vec<_> = r.encodings.iter().collect();
    encs.sort();
    eprintln!("  {label} {method}: encodings {encs:?}");
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let t0 = Instant::now();
    let tiny = std::env::var("TESSERA_CKPT_BENCH").is_ok_and(|v| v == "tiny");
    let only_lossless = std::env::var("TESSERA_CKPT_BENCH_ONLY").is_ok_and(|v| v == "lossless");
    let (full, subset) = if tiny {
        (synth::SynthConfig::tiny(), synth::SynthConfig::tiny())
    } else {
        let b = synth::SynthConfig::bench();
        let s = synth::SynthConfig {
            vocab: 2048,
            layers: 1,
            ..b.clone()
        };
        (b, s)
    };
    let dir = tempfile::tempdir().unwrap();
    println!(
        "checkpoint codec bench, CPU path ({} threads); full model {} parameters, budget subset {} (bf16)",
        rayon::current_num_threads(),
        full.params(),
        subset.params()
    );
    println!("| pair | method | ratio | compress MB/s | decompress MB/s |");
    println!("|---|---|---|---|---|");
    for stage in [synth::Stage::Late, synth::Stage::Early] {
        let sname = format!("{stage:?}").to_lowercase();
        let (b, n) = pair(&full, stage, dir.path(), &sname);
        tessera_row(&sname, &b, &n, 0.0, 3, dir.path());
        let new = std::fs::read(&n).unwrap();
        let base = std::fs::read(&b).unwrap();
        let orig = new.len();
        let xor =
            || -> Cow<[u8]> { Cow::Owned(new.iter().zip(&base).map(|(a, c)| a ^ c).collect()) };
        let plain = || Cow::Borrowed(new.as_slice());
        zstd_row(&sname, "new", &plain, 3, orig);
        zstd_row(&sname, "XOR(new, base)", &xor, 3, orig);
        if !only_lossless {
            zstd_row(&sname, "new", &plain, 19, orig);
            zstd_row(&sname, "XOR(new, base)", &xor, 19, orig);
        }
    }
    if !only_lossless {
        for stage in [synth::Stage::Late, synth::Stage::Early] {
            let sname = format!("{stage:?} (subset)").to_lowercase();
            let (b, n) = pair(&subset, stage, dir.path(), &sname);
            tessera_row(&sname, &b, &n, 0.0, 3, dir.path());
            for budget in [1e-3, 1e-2] {
                tessera_row(&sname, &b, &n, budget, 1, dir.path());
            }
        }
    }
    eprintln!("bench took {:.0} s", t0.elapsed().as_secs_f64());
}
