//! Corrupt `.tsnap` files: every byte-position class (header, each section, manifest, trailer)
//! mutated or truncated gives an error that names what is wrong, never wrong weights or a
//! panic. Also runs the fuzz corpus (fuzz/corpus/read_tsnap) through the reader.

use std::path::Path;

use tessera::ckpt::{self, synth, CompressOptions};
use tessera::{Device, Error};

struct Fixture {
    _dir: tempfile::TempDir,
    base: std::path::PathBuf,
    bytes: Vec<u8>,
    manifest: ckpt::Manifest,
}

fn fixture(budget: f64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth::SynthConfig {
        vocab: 256,
        d_model: 64,
        layers: 1,
        d_ff: 128,
        tokens_per_step: 64,
        seed: 5,
    };
    let (b, n) = (
        dir.path().join("b.safetensors"),
        dir.path().join("n.safetensors"),
    );
    synth::write_pair(&cfg, synth::Stage::Late, &b, &n).unwrap();
    let out = dir.path().join("f.tsnap");
    let opts = CompressOptions {
        error_budget: budget,
        keep_exact: vec![],
    };
    ckpt::compress(&n, Some(&b), &out, &opts, &Device::cpu(), &mut |_| {}).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let manifest = ckpt::inspect(&out).unwrap();
    Fixture {
        _dir: dir,
        base: b,
        bytes,
        manifest,
    }
}

/// Decode `bytes` fully against the base; returns the error.
fn decode_err(f: &Fixture, bytes: &[u8]) -> Error {
    let base = ckpt::st::StFile::open(&f.base).unwrap();
    let r = match ckpt::Reader::new(bytes) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut out = Vec::new();
    match ckpt::decode_to(&r, Some(&base), &Device::cpu(), &mut out, &mut |_| {}) {
        Ok(()) => panic!("corrupt file decoded without error"),
        Err(e) => e,
    }
}

fn check_positions(f: &Fixture, positions: &[usize], expect: &str) {
    for &p in positions {
        for flip in [0x01u8, 0x80] {
            let mut b = f.bytes.clone();
            b[p] ^= flip;
            let e = decode_err(f, &b);
            assert!(matches!(e, Error::Format { .. }), "byte {p}: {e}");
            let s = e.to_string();
            assert!(s.contains(expect), "byte {p}: expected '{expect}' in: {s}");
        }
    }
}

fn sample(off: u64, len: u64) -> Vec<usize> {
    if len == 0 {
        return vec![];
    }
    let mut v = vec![off, off + len / 2, off + len - 1];
    v.dedup();
    v.into_iter().map(|x| x as usize).collect()
}

#[test]
fn every_byte_class_mutated_is_an_error() {
    for budget in [0.0, 1e-2] {
        let f = fixture(budget);
        let len = f.bytes.len();
        // Header: every byte.
        check_positions(&f, &(0..16).collect::<Vec<_>>(), "tsnap: header");
        // Trailer: every byte.
        check_positions(&f, &(len - 40..len).collect::<Vec<_>>(), "tsnap: ");
        // Manifest: a spread of bytes (each one breaks its checksum).
        let t = &f.bytes[len - 40..];
        let moff = u64::from_le_bytes(t[..8].try_into().unwrap()) as usize;
        let mpos: Vec<usize> = (moff..len - 40).step_by(97).collect();
        check_positions(&f, &mpos, "tsnap: manifest");
        // The stored safetensors header section.
        let h = f.manifest.st_header;
        check_positions(&f, &sample(h.offset, h.len), "safetensors header section");
        // Every section of every tensor, named in the error.
        let mut sections = 0;
        for te in &f.manifest.tensors {
            for (s, name) in te.sections.iter().zip(te.encoding.section_names()) {
                let want = format!("tensor '{}' section '{name}'", te.name);
                check_positions(&f, &sample(s.offset, s.len), &want);
                sections += 1;
            }
        }
        assert!(sections > 10);
    }
}

#[test]
fn truncation_at_any_point_is_an_error() {
    let f = fixture(0.0);
    let len = f.bytes.len();
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((64..len).step_by(len / 200 + 1));
    cuts.extend(len - 41..len);
    for c in cuts {
        let e = decode_err(&f, &f.bytes[..c]);
        assert!(matches!(e, Error::Format { .. }), "cut at {c}: {e}");
    }
    // Appended garbage is an error too (the trailer must be last).
    let mut b = f.bytes.clone();
    b.extend_from_slice(b"garbage");
    decode_err(&f, &b);
}

#[test]
fn wrong_magic_and_version_are_named() {
    let f = fixture(0.0);
    let mut b = f.bytes.clone();
    b[0] = b'X';
    assert!(decode_err(&f, &b).to_string().contains("magic"));
    let mut b = f.bytes.clone();
    b[8] = 2;
    assert!(decode_err(&f, &b).to_string().contains("version 2"));
}

#[test]
fn fuzz_corpus_regression() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/read_tsnap");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        panic!("missing {}", dir.display());
    };
    let dev = Device::cpu();
    let mut n = 0;
    for e in rd {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        // Ok or Err are both fine; a panic fails the test.
        let _ = ckpt::check_bytes(&bytes, &dev);
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}

/// The fuzz seeds: small valid files (raw-only, lossless delta, lossy delta, lossy weights) and
/// their truncations. Each valid seed must inspect and decompress (against its base), and each
/// truncation must be refused by the reader. `TESSERA_WRITE_SEEDS=1 cargo test --release --test
/// ckpt_corrupt seeds` also writes them into `fuzz/corpus/read_tsnap` (regenerating the seeds).
#[test]
fn seeds_decode_and_their_truncations_do_not() {
    let write_to = std::env::var("TESSERA_WRITE_SEEDS")
        .is_ok()
        .then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/read_tsnap"));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = synth::SynthConfig {
        vocab: 64,
        d_model: 16,
        layers: 1,
        d_ff: 32,
        tokens_per_step: 16,
        seed: 11,
    };
    let (b, n) = (tmp.path().join("b.st"), tmp.path().join("n.st"));
    synth::write_pair(&cfg, synth::Stage::Late, &b, &n).unwrap();
    let dev = Device::cpu();
    for (name, base, budget) in [
        ("raw", None, 0.0),
        ("delta", Some(b.as_path()), 0.0),
        ("lossy", Some(b.as_path()), 1e-2),
        ("weights", None, 1e-1),
    ] {
        let out = tmp.path().join(format!("seed-{name}.tsnap"));
        let opts = CompressOptions {
            error_budget: budget,
            keep_exact: vec![],
        };
        ckpt::compress(&n, base, &out, &opts, &dev, &mut |_| {}).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let m = ckpt::inspect(&out).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        assert!(!m.tensors.is_empty(), "seed {name}: no tensors");
        let restored = tmp.path().join(format!("seed-{name}.st"));
        ckpt::decompress(&out, base, &restored, &dev, &mut |_| {})
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        if budget == 0.0 {
            assert_eq!(
                std::fs::read(&restored).unwrap(),
                std::fs::read(&n).unwrap(),
                "seed {name}: a lossless file restores the checkpoint byte for byte"
            );
        }
        let truncated = &bytes[..bytes.len() / 2];
        assert!(
            ckpt::check_bytes(truncated, &dev).is_err(),
            "seed {name}: the truncated file was accepted"
        );
        if let Some(dir) = &write_to {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}.tsnap")), &bytes).unwrap();
            std::fs::write(dir.join(format!("seed-{name}-truncated.tsnap")), truncated).unwrap();
        }
    }
}
