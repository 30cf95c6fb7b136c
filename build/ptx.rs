//! PTX step of build.rs: every kernel source to PTX for sm_80 and sm_90a.
//!
//! * With nvcc (`NVCC`, `CUDA_HOME`/`CUDA_PATH` `bin/nvcc`, or `PATH`): compile into
//!   `OUT_DIR/ptx/<module>.<arch>.ptx` with the flags in `build/nvcc-flags.txt`, the same flags
//!   `scripts/regen-ptx.sh` uses for the committed `ptx/`. nvcc runs in the crate root with
//!   relative paths and no line info, so the PTX holds no path and matches the committed files
//!   byte for byte when the toolchain is the pinned one.
//! * Without nvcc, or with `TESSERA_PTX_FROM_COMMITTED=1`: embed the committed
//!   `ptx/<module>.<arch>.ptx`. A module whose committed PTX is missing is left out with a
//!   warning (the CUDA executor reports it missing at run time); the build never fails for lack
//!   of nvcc.
//!
//! Writes `ptx_table.rs` (`PTX`, `PTX_ORIGIN`) and `modules.rs` (`MODULES`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The architectures tessera ships PTX for.
pub const ARCHS: [&str; 2] = ["sm_80", "sm_90a"];

/// The flags in `build/nvcc-flags.txt` (one per line, `#` comments).
fn nvcc_flags(root: &Path) -> Vec<String> {
    let path = root.join("build/nvcc-flags.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("tessera build: cannot read {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// nvcc from `NVCC`, then `CUDA_HOME`/`CUDA_PATH`, then `PATH`.
fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NVCC").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
        println!(
            "cargo:warning=NVCC={} is not a file; looking elsewhere",
            p.display()
        );
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(home).join("bin").join("nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}

/// `nvcc 13.0.88` from `nvcc --version` (`... release 13.0, V13.0.88`).
fn nvcc_version(nvcc: &Path) -> Option<String> {
    let out = Command::new(nvcc).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('V'))?;
    Some(format!("nvcc {}", v.trim_end_matches(',')))
}

fn rel_source(root: &Path, src: &crate::KernelSource) -> String {
    let rel = src.path.strip_prefix(root).unwrap_or(&src.path);
    rel.to_string_lossy().replace('\\', "/")
}

/// Compile every (source, arch) with nvcc, a few at a time. Panics with nvcc's message on failure.
fn compile_all(
    root: &Path,
    nvcc: &Path,
    out_ptx: &Path,
    sources: &[crate::KernelSource],
) -> Vec<(String, String, PathBuf)> {
    let flags = nvcc_flags(root);
    let mut jobs = Vec::new();
    for s in sources {
        for arch in ARCHS {
            let dst = out_ptx.join(format!("{}.{arch}.ptx", s.module));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            jobs.push((s.module.clone(), arch.to_string(), rel_source(root, s), dst));
        }
    }
    let workers: usize = std::env::var("TESSERA_NVCC_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| std::env::var("NUM_JOBS").ok().and_then(|v| v.parse().ok()))
        .unwrap_or(2)
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|sc| {
        for _ in 0..workers.min(jobs.len()) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, arch, src, dst)) = jobs.get(i) else {
                    break;
                };
                let mut cmd = Command::new(nvcc);
                cmd.current_dir(root)
                    .arg("-ptx")
                    .arg(format!("-arch={arch}"))
                    .args(&flags)
                    .args(["-I", "cuda", "-o"])
                    .arg(dst)
                    .arg(src);
                match cmd.output() {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => errors.lock().unwrap().push(format!(
                        "{cmd:?} failed ({}):\n{}{}",
                        o.status,
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )),
                    Err(e) => errors
                        .lock()
                        .unwrap()
                        .push(format!("cannot run {}: {e}", nvcc.display())),
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    if !errors.is_empty() {
        panic!(
            "tessera build: nvcc failed (set TESSERA_PTX_FROM_COMMITTED=1 to use the committed ptx/ instead):\n{}",
            errors.join("\n")
        );
    }
    jobs.into_iter().map(|(m, a, _, d)| (m, a, d)).collect()
}

pub fn build(root: &Path, out: &Path, sources: &[crate::KernelSource]) {
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "TESSERA_PTX_FROM_COMMITTED",
        "TESSERA_NVCC_JOBS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let forced =
        std::env::var("TESSERA_PTX_FROM_COMMITTED").is_ok_and(|v| !v.is_empty() && v != "0");
    let nvcc = if forced { None } else { find_nvcc() };
    let version = nvcc.as_deref().and_then(|n| {
        let v = nvcc_version(n);
        if v.is_none() {
            println!(
                "cargo:warning={} --version failed; using the committed ptx/",
                n.display()
            );
        }
        v
    });

    let (entries, origin) = match (nvcc, version) {
        (Some(nvcc), Some(version)) => {
            let out_ptx = out.join("ptx");
            let _ = std::fs::remove_dir_all(&out_ptx);
            (compile_all(root, &nvcc, &out_ptx, sources), version)
        }
        _ => {
            let mut v = Vec::new();
            for s in sources {
                for arch in ARCHS {
                    let p = root.join("ptx").join(format!("{}.{arch}.ptx", s.module));
                    if p.is_file() {
                        v.push((s.module.clone(), arch.to_string(), p));
                    } else {
                        println!(
                            "cargo:warning=no nvcc and no committed PTX for {} ({arch}): run scripts/regen-ptx.sh; the CUDA executor will not have this module",
                            s.module
                        );
                    }
                }
            }
            (v, "committed ptx/".to_string())
        }
    };

    let mut table = String::from("pub static PTX: &[PtxEntry] = &[\n");
    for (module, arch, path) in &entries {
        table += &format!(
            "    PtxEntry {{ module: {module:?}, arch: {arch:?}, ptx: include_str!({:?}) }},\n",
            path.to_string_lossy()
        );
    }
    table += "];\n";
    table += &format!("pub const PTX_ORIGIN: &str = {origin:?};\n");
    std::fs::write(out.join("ptx_table.rs"), table).unwrap();

    let mods: Vec<String> = sources.iter().map(|s| format!("{:?}", s.module)).collect();
    std::fs::write(
        out.join("modules.rs"),
        format!("pub static MODULES: &[&str] = &[{}];\n", mods.join(", ")),
    )
    .unwrap();
}
