//! Every kernel module `cuda/<family>/<name>.cu` is complete: its committed PTX for each target
//! architecture (`ptx/<family>/<name>.<arch>.ptx`, what the build embeds without nvcc), its HIP
//! entry (see [`hip_entry`]), and a check that runs it: a `tessera verify` family
//! ([`tessera::verify::FAMILIES`]) or, for the `selftest` modules (no op: the executor's own
//! tests), an integration test that launches it by name. And no verify family names a module that
//! does not exist.

use std::path::{Path, PathBuf};

/// The PTX targets (build/ptx.rs `ARCHS`).
const PTX_ARCHS: [&str; 2] = ["sm_80", "sm_90a"];

/// The tests that launch the selftest modules by name (`"selftest/<name>"`).
const SELFTEST_TESTS: [&str; 3] = ["simt_runtime.rs", "mma.rs", "fault_suite.rs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every kernel module, as `"<family>/<name>"`, sorted.
fn modules() -> Vec<String> {
    let mut out = vec![];
    let cuda = root().join("cuda");
    for fam in std::fs::read_dir(&cuda).unwrap() {
        let fam = fam.unwrap().path();
        if !fam.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&fam).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "cu") {
                out.push(format!(
                    "{}/{}",
                    fam.file_name().unwrap().to_str().unwrap(),
                    f.file_stem().unwrap().to_str().unwrap()
                ));
            }
        }
    }
    out.sort();
    out
}

/// The HIP entry of `module`: today a committed `hip/<module>.hip` that includes the CUDA source.
/// (When the build generates the entry files unless an override exists, this is the one place
/// to change: an override, if present, must still include the source.)
fn hip_entry(root: &Path, module: &str) -> Result<(), String> {
    let path = root.join("hip").join(format!("{module}.hip"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let include = format!("cuda/{module}.cu\"");
    if text.contains(&include) {
        Ok(())
    } else {
        Err(format!("{} does not include {include}", path.display()))
    }
}

/// The committed PTX of `module` for every target: present, and a PTX module with an entry.
fn ptx(root: &Path, module: &str) -> Result<(), String> {
    for arch in PTX_ARCHS {
        let path = root.join("ptx").join(format!("{module}.{arch}.ptx"));
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !(text.contains(".version") && text.contains(".entry")) {
            return Err(format!("{} has no .version or no .entry", path.display()));
        }
    }
    Ok(())
}

#[test]
fn every_module_has_ptx_hip_and_a_check() {
    let root = root();
    let modules = modules();
    assert!(modules.len() >= 11, "{modules:?}");
    let selftest_sources: String = SELFTEST_TESTS
        .iter()
        .map(|t| std::fs::read_to_string(root.join("tests").join(t)).unwrap())
        .collect();
    let mut errs = vec![];
    for m in &modules {
        errs.extend(ptx(&root, m).err());
        errs.extend(hip_entry(&root, m).err());
        let by_verify = tessera::verify::FAMILIES
            .iter()
            .any(|f| f.modules.contains(&m.as_str()));
        let by_test = m.starts_with("selftest/") && selftest_sources.contains(&format!("\"{m}\""));
        if !by_verify && !by_test {
            errs.push(format!(
                "{m}: no verify family runs it (tessera::verify::FAMILIES) and it is not a \
                 selftest module launched by {SELFTEST_TESTS:?}"
            ));
        }
    }
    for f in tessera::verify::FAMILIES {
        assert!(
            !f.modules.is_empty(),
            "verify family {} runs no module",
            f.name
        );
        for m in f.modules {
            if !modules.iter().any(|x| x == m) {
                errs.push(format!(
                    "verify family {} names a missing module {m}",
                    f.name
                ));
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// The checks above can fail: a module with no PTX, no HIP entry, or an entry that does not
/// include it is reported.
#[test]
fn the_checks_catch_a_missing_file() {
    let root = root();
    assert!(ptx(&root, "ckpt/bitmask").is_ok());
    assert!(ptx(&root, "ckpt/no_such_module").is_err());
    assert!(hip_entry(&root, "ckpt/bitmask").is_ok());
    assert!(hip_entry(&root, "ckpt/no_such_module").is_err());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("hip/ckpt")).unwrap();
    std::fs::write(
        dir.path().join("hip/ckpt/codec.hip"),
        "#include \"../../cuda/ckpt/bitmask.cu\"\n",
    )
    .unwrap();
    assert!(hip_entry(dir.path(), "ckpt/codec").is_err());
}
