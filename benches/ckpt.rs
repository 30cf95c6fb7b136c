//! Checkpoint codec bench (CPU path): ratio and throughput of each policy on the generator's
//! early and late pairs, side by side in the same run with zstd levels 3 and 19 on the new file
//! and on XOR(new, base) -- what users would otherwise do.
//!
//! `cargo bench --bench ckpt` runs the ~23M-parameter model; `TESSERA_CKPT_BENCH=tiny` a small
//! one. These are CPU figures.

use std::path::Path;
use std::time::Instant;

use tessera::ckpt::{self, synth, CompressOptions};
use tessera::Device;

fn zstd_row(stage: &str, what: &str, data: &[u8], level: i32, orig: usize, prep_s: f64) {
    let t = Instant::now();
    let c = zstd::bulk::compress(data, level).expect("zstd");
    let s = t.elapsed().as_secs_f64() + prep_s;
    let t = Instant::now();
    let d = zstd::bulk::decompress(&c, data.len()).expect("zstd");
    let ds = t.elapsed().as_secs_f64();
    assert_eq!(d.len(), data.len());
    println!(
        "| {stage} | zstd-{level} on {what} | {:.2}x | {:.0} | {:.0} |",
        orig as f64 / c.len() as f64,
        orig as f64 / 1e6 / s,
        orig as f64 / 1e6 / ds
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

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep that quick.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let tiny = std::env::var("TESSERA_CKPT_BENCH").is_ok_and(|v| v == "tiny");
    let cfg = if tiny {
        synth::SynthConfig::tiny()
    } else {
        synth::SynthConfig::bench()
    };
    let dev = Device::cpu();
    let dir = tempfile::tempdir().unwrap();
    println!(
        "checkpoint codec bench, CPU path ({} threads), model {} parameters (bf16)",
        rayon::current_num_threads(),
        cfg.params()
    );
    println!("| pair | method | ratio | compress MB/s | decompress MB/s |");
    println!("|---|---|---|---|---|");
    for stage in [synth::Stage::Late, synth::Stage::Early] {
        let sname = format!("{stage:?}").to_lowercase();
        // TESSERA_CKPT_BENCH_DIR: keep the generated pairs there and reuse them (the files are
        // named by stage and model size; delete them after changing the generator).
        let keep = std::env::var_os("TESSERA_CKPT_BENCH_DIR").map(std::path::PathBuf::from);
        let pdir = keep.as_deref().unwrap_or(dir.path());
        let tag = format!("{sname}-{}", cfg.params());
        let (b, n) = (
            pdir.join(format!("{tag}-base.safetensors")),
            pdir.join(format!("{tag}-new.safetensors")),
        );
        let t = Instant::now();
        if keep.is_none() || !(b.exists() && n.exists()) {
            synth::write_pair(&cfg, stage, &b, &n).unwrap();
        }
        eprintln!(
            "{sname}: generated in {:.1} s, {:.1}% of bf16 elements changed",
            t.elapsed().as_secs_f64(),
            100.0 * changed_fraction(&b, &n)
        );
        let new = std::fs::read(&n).unwrap();
        let base = std::fs::read(&b).unwrap();
        let orig = new.len();
        let quick = std::env::var("TESSERA_CKPT_BENCH_ONLY").is_ok_and(|v| v == "lossless");
        let budgets: &[f64] = if quick { &[0.0] } else { &[0.0, 1e-3, 1e-2] };
        for &budget in budgets {
            let out = dir.path().join("o.tsnap");
            let opts = CompressOptions {
                error_budget: budget,
                keep_exact: vec![],
            };
            let t = Instant::now();
            let r = ckpt::compress(&n, Some(&b), &out, &opts, &dev, &mut |_| {}).unwrap();
            let cs = t.elapsed().as_secs_f64();
            let back = dir.path().join("back.safetensors");
            let t = Instant::now();
            ckpt::decompress(&out, Some(&b), &back, &dev, &mut |_| {}).unwrap();
            let ds = t.elapsed().as_secs_f64();
            if budget == 0.0 {
                assert_eq!(std::fs::read(&back).unwrap(), new);
            }
            let m = ckpt::inspect(&out).unwrap();
            let mut encs: Vec<_> = r.encodings.iter().collect();
            encs.sort();
            let label = if budget == 0.0 {
                "tessera lossless".to_string()
            } else {
                format!("tessera budget {budget:.0e}")
            };
            println!(
                "| {sname} | {label} | {:.2}x | {:.0} | {:.0} |",
                r.ratio,
                orig as f64 / 1e6 / cs,
                orig as f64 / 1e6 / ds
            );
            let rice = m
                .tensors
                .iter()
                .filter(|t| format!("{:?}", t.encoding).contains("Rice"))
                .count();
            eprintln!("  {label}: encodings {encs:?}; rice-coded masks {rice}");
        }
        zstd_row(&sname, "new", &new, 3, orig, 0.0);
        let t = Instant::now();
        let x: Vec<u8> = new.iter().zip(&base).map(|(a, c)| a ^ c).collect();
        let xs = t.elapsed().as_secs_f64();
        zstd_row(&sname, "XOR(new, base)", &x, 3, orig, xs);
        if !quick {
            zstd_row(&sname, "new", &new, 19, orig, 0.0);
            zstd_row(&sname, "XOR(new, base)", &x, 19, orig, xs);
        }
    }
}
