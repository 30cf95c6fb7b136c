//! Checkpoint codec end to end: lossless round trips are byte-identical (CPU and SIMT), the
//! error budget holds tensor by tensor, nothing is stored larger than raw, base identity and
//! temporary-file behaviour.

use std::path::{Path, PathBuf};

use half::bf16;
use tessera::ckpt::{self, synth, CompressOptions, Encoding};
use tessera::Device;

fn pair(dir: &Path, stage: synth::Stage, cfg: &synth::SynthConfig) -> (PathBuf, PathBuf) {
    let (b, n) = (dir.join("base.safetensors"), dir.join("new.safetensors"));
    synth::write_pair(cfg, stage, &b, &n).unwrap();
    (b, n)
}

fn roundtrip(dev: &Device, stage: synth::Stage, cfg: &synth::SynthConfig, with_base: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (b, n) = pair(dir.path(), stage, cfg);
    let out = dir.path().join("x.tsnap");
    let base = with_base.then_some(b.as_path());
    let rep = ckpt::compress(
        &n,
        base,
        &out,
        &CompressOptions::default(),
        dev,
        &mut |_| {},
    )
    .unwrap();
    assert!(rep.lossless);
    let back = dir.path().join("back.safetensors");
    ckpt::decompress(&out, base, &back, dev, &mut |_| {}).unwrap();
    assert_eq!(
        std::fs::read(&n).unwrap(),
        std::fs::read(&back).unwrap(),
        "byte-identical"
    );
    let m = ckpt::inspect(&out).unwrap();
    for t in &m.tensors {
        assert!(
            t.stored_bytes() <= t.raw_bytes(),
            "{} stored larger than raw",
            t.name
        );
        assert!(t.encoding.is_exact());
    }
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    rep.ratio
}

#[test]
fn lossless_roundtrip_cpu_late_early_nobase() {
    let cfg = synth::SynthConfig::tiny();
    let dev = Device::cpu();
    let late = roundtrip(&dev, synth::Stage::Late, &cfg, true);
    let early = roundtrip(&dev, synth::Stage::Early, &cfg, true);
    let none = roundtrip(&dev, synth::Stage::Late, &cfg, false);
    eprintln!("ratios: late {late:.2} early {early:.2} nobase {none:.2}");
    assert!(late > 2.0, "late pair ratio {late}");
    assert!(none > 0.95);
}

#[test]
fn lossless_roundtrip_simt() {
    let cfg = synth::SynthConfig {
        vocab: 256,
        d_model: 64,
        layers: 1,
        d_ff: 128,
        tokens_per_step: 64,
        seed: 3,
    };
    roundtrip(&Device::simt(), synth::Stage::Late, &cfg, true);
}

/// The output does not depend on the executor: the CPU path (host codecs straight from the
/// memory map) and the SIMT executor (the device ops) write the same `.tsnap` bytes, lossless
/// and with a budget, with and without a base, and each decodes the other's file identically.
#[test]
fn cpu_and_simt_write_identical_files() {
    let cfg = synth::SynthConfig {
        vocab: 256,
        d_model: 64,
        layers: 1,
        d_ff: 128,
        tokens_per_step: 64,
        seed: 4,
    };
    let (cpu, simt) = (Device::cpu(), Device::simt());
    let dir = tempfile::tempdir().unwrap();
    for stage in [synth::Stage::Late, synth::Stage::Early] {
        let (b, n) = pair(dir.path(), stage, &cfg);
        for (budget, base) in [(0.0, true), (1e-2, true), (1e-1, false)] {
            let base = base.then_some(b.as_path());
            let opts = CompressOptions {
                error_budget: budget,
                keep_exact: vec![],
            };
            let (oc, os) = (dir.path().join("c.tsnap"), dir.path().join("s.tsnap"));
            ckpt::compress(&n, base, &oc, &opts, &cpu, &mut |_| {}).unwrap();
            ckpt::compress(&n, base, &os, &opts, &simt, &mut |_| {}).unwrap();
            let (bc, bs) = (std::fs::read(&oc).unwrap(), std::fs::read(&os).unwrap());
            assert!(
                bc == bs,
                "{stage:?} budget {budget}: CPU and SIMT files differ ({} vs {} bytes)",
                bc.len(),
                bs.len()
            );
            let m = ckpt::inspect(&oc).unwrap();
            if budget > 0.0 {
                assert!(
                    !m.is_lossless(),
                    "{stage:?} budget {budget}: nothing lossy chosen"
                );
            }
            let (dc, ds) = (dir.path().join("c.st"), dir.path().join("s.st"));
            ckpt::decompress(&os, base, &dc, &cpu, &mut |_| {}).unwrap();
            ckpt::decompress(&oc, base, &ds, &simt, &mut |_| {}).unwrap();
            assert_eq!(std::fs::read(&dc).unwrap(), std::fs::read(&ds).unwrap());
        }
    }
}

/// Relative L2 error per tensor of `got` against `new`, relative to `new - base` (f64).
fn tensor_errors(new: &Path, base: &Path, got: &Path) -> Vec<(String, f64)> {
    let (n, b, g) = (
        ckpt::st::StFile::open(new).unwrap(),
        ckpt::st::StFile::open(base).unwrap(),
        ckpt::st::StFile::open(got).unwrap(),
    );
    let f = |x: &[u8]| -> Vec<f64> {
        x.chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect()
    };
    let mut out = Vec::new();
    for t in &n.tensors {
        if t.dtype_name() != "BF16" {
            continue;
        }
        let (x, y, z) = (
            f(n.data(t)),
            f(b.data(b.get(&t.name).unwrap())),
            f(g.data(g.get(&t.name).unwrap())),
        );
        let num: f64 = x
            .iter()
            .zip(&z)
            .map(|(a, c)| (a - c) * (a - c))
            .sum::<f64>()
            .sqrt();
        let den: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, c)| (a - c) * (a - c))
            .sum::<f64>()
            .sqrt();
        let e = if num == 0.0 { 0.0 } else { num / den };
        out.push((t.name.clone(), e));
    }
    out
}

#[test]
fn budget_honoured_per_tensor() {
    let cfg = synth::SynthConfig::tiny();
    let dev = Device::cpu();
    let dir = tempfile::tempdir().unwrap();
    for stage in [synth::Stage::Late, synth::Stage::Early] {
        let (b, n) = pair(dir.path(), stage, &cfg);
        for budget in [1e-3, 1e-2, 1e-1] {
            let out = dir.path().join("q.tsnap");
            let opts = CompressOptions {
                error_budget: budget,
                keep_exact: vec!["attn.q".into()],
            };
            ckpt::compress(&n, Some(&b), &out, &opts, &dev, &mut |_| {}).unwrap();
            let m = ckpt::inspect(&out).unwrap();
            let back = dir.path().join("q.safetensors");
            ckpt::decompress(&out, Some(&b), &back, &dev, &mut |_| {}).unwrap();
            let errs = tensor_errors(&n, &b, &back);
            for (name, e) in &errs {
                let t = m.tensors.iter().find(|t| &t.name == name).unwrap();
                assert!(
                    *e <= budget * (1.0 + 1e-9),
                    "{name}: error {e} > budget {budget} ({:?})",
                    t.encoding
                );
                assert!(
                    (t.stats.error - e).abs() <= 1e-9 + 1e-6 * e,
                    "{name}: recorded {} measured {e}",
                    t.stats.error
                );
                assert!(t.stored_bytes() <= t.raw_bytes(), "{name} larger than raw");
                if t.shape.len() <= 1 || name.contains("attn.q") {
                    assert!(t.encoding.is_exact(), "{name} must stay exact");
                }
            }
        }
    }
}

#[test]
fn wrong_or_missing_base_is_an_error() {
    let cfg = synth::SynthConfig::tiny();
    let dev = Device::cpu();
    let dir = tempfile::tempdir().unwrap();
    let (b, n) = pair(dir.path(), synth::Stage::Late, &cfg);
    let other = dir.path().join("other.safetensors");
    let other_new = dir.path().join("other_new.safetensors");
    synth::write_pair(
        &synth::SynthConfig {
            seed: 99,
            ..cfg.clone()
        },
        synth::Stage::Late,
        &other,
        &other_new,
    )
    .unwrap();
    let out = dir.path().join("d.tsnap");
    ckpt::compress(
        &n,
        Some(&b),
        &out,
        &CompressOptions::default(),
        &dev,
        &mut |_| {},
    )
    .unwrap();
    let back = dir.path().join("back.safetensors");
    let e = ckpt::decompress(&out, Some(&other), &back, &dev, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("base"), "{e}");
    let e = ckpt::decompress(&out, None, &back, &dev, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("--base"), "{e}");
    assert!(!back.exists(), "a failed decompress leaves no output");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .collect();
    assert!(left.is_empty());
}

#[test]
fn interrupted_write_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.tsnap");
    {
        let mut w = ckpt::format::Writer::create(&dest).unwrap();
        w.section(&[b"some bytes"]).unwrap();
        assert!(w.temp_path().exists());
        // dropped without finish: as if the process failed mid-way
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A compress that fails part-way (the new file is not safetensors) leaves nothing either.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    assert!(ckpt::compress(
        &bad,
        None,
        &dest,
        &CompressOptions::default(),
        &Device::cpu(),
        &mut |_| {}
    )
    .is_err());
    assert!(!dest.exists());
}

#[test]
fn keep_exact_patterns() {
    assert!(ckpt::pattern_matches("embed", "model.embed.weight"));
    assert!(ckpt::pattern_matches("*.bias", "layers.0.mlp.up.bias"));
    assert!(!ckpt::pattern_matches("*.bias", "layers.0.mlp.up.bias.x"));
    assert!(ckpt::pattern_matches(
        "layers.?.attn*",
        "layers.3.attn.q.weight"
    ));
    assert!(!ckpt::pattern_matches(
        "layers.?.attn*",
        "layers.13.attn.q.weight"
    ));
}

#[test]
fn inspect_shows_choices() {
    let cfg = synth::SynthConfig::tiny();
    let dir = tempfile::tempdir().unwrap();
    let (b, n) = pair(dir.path(), synth::Stage::Late, &cfg);
    let out = dir.path().join("i.tsnap");
    ckpt::compress(
        &n,
        Some(&b),
        &out,
        &CompressOptions::default(),
        &Device::cpu(),
        &mut |_| {},
    )
    .unwrap();
    let m = ckpt::inspect(&out).unwrap();
    let emb = m.tensors.iter().find(|t| t.name == "embed.weight").unwrap();
    assert!(!matches!(emb.encoding, Encoding::Raw));
    assert!(emb.stats.frac_changed.unwrap() < 0.5);
    assert!(!emb.stats.candidates.is_empty());
    let step = m.tensors.iter().find(|t| t.name == "step").unwrap();
    assert!(matches!(step.encoding, Encoding::Raw));
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

/// Issue 9 (state changed on error): when the last step of a write fails (here the rename, onto
/// a non-empty directory), compress and decompress return the error and leave neither a
/// temporary file nor anything in place of the target.
#[test]
fn failed_rename_leaves_no_temp_file() {
    let cfg = synth::SynthConfig::tiny();
    let dev = Device::cpu();
    let dir = tempfile::tempdir().unwrap();
    let (b, n) = pair(dir.path(), synth::Stage::Late, &cfg);
    let blocked = dir.path().join("blocked");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep"), b"keep").unwrap();
    let e = ckpt::compress(
        &n,
        Some(&b),
        &blocked,
        &CompressOptions::default(),
        &dev,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("renaming"), "{e}");
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    assert_eq!(std::fs::read(blocked.join("keep")).unwrap(), b"keep");

    let out = dir.path().join("d.tsnap");
    ckpt::compress(
        &n,
        Some(&b),
        &out,
        &CompressOptions::default(),
        &dev,
        &mut |_| {},
    )
    .unwrap();
    let e = ckpt::decompress(&out, Some(&b), &blocked, &dev, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("renaming"), "{e}");
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    assert_eq!(std::fs::read(blocked.join("keep")).unwrap(), b"keep");

    // The synthetic checkpoint writer too: nothing half-written, no temporary file.
    let e = synth::write_pair(&cfg, synth::Stage::Late, &blocked, &dir.path().join("x.st"));
    assert!(e.is_err());
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
    assert!(!dir.path().join("x.st").exists());
}

/// Two writers to one destination in one process get distinct temporary files: dropping one
/// (an error on its way) does not delete or truncate the other's.
#[test]
fn two_writers_to_one_destination() {
    use ckpt::format::{Manifest, Reader, Writer};
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.tsnap");
    let mut w1 = Writer::create(&dest).unwrap();
    let st_header = w1.section(&[b"header bytes"]).unwrap();
    let mut w2 = Writer::create(&dest).unwrap();
    w2.section(&[b"other"]).unwrap();
    assert_ne!(w1.temp_path(), w2.temp_path());
    drop(w2);
    let m = Manifest {
        format_version: ckpt::format::VERSION,
        tool: "test".into(),
        base: None,
        error_budget: 0.0,
        keep_exact: vec![],
        st_header,
        file_len: st_header.len,
        file_xxh3: 0,
        tensors: vec![],
    };
    w1.finish(&m).unwrap();
    let bytes = std::fs::read(&dest).unwrap();
    let r = Reader::new(&bytes).unwrap();
    assert_eq!(r.manifest.st_header, st_header);
    assert_eq!(temp_files(dir.path()), Vec::<String>::new());
}
