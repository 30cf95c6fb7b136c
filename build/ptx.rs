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
//!   The committed PTX is checked against `ptx/sources.sha256`, the SHA-256 of every input
//!   (each `.cu`/`.cuh` under `cuda/` but `cuda/simt/`, and `build/nvcc-flags.txt`) recorded by
//!   `scripts/regen-ptx.sh` when it generated `ptx/`: an input that changed since then (or a
//!   missing record) is a `cargo:warning` that the embedded PTX may be stale.
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
                    Ok(o) => errors.lock().unwrap().push(crate::failed(&cmd, &o)),
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

/// The file (in `ptx/`) where scripts/regen-ptx.sh records the SHA-256 of the PTX's inputs.
const SOURCES_RECORD: &str = "sources.sha256";

/// SHA-256 (FIPS 180-4) of `data`, as lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (wi, b) in w.iter_mut().zip(block.chunks_exact(4)) {
            *wi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for (k, wi) in K.iter().zip(w) {
            let [a, b, c, d, e, f, g, hh] = v;
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(*k)
                .wrapping_add(wi);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            v = [
                t1.wrapping_add(s0.wrapping_add(maj)),
                a,
                b,
                c,
                d.wrapping_add(t1),
                e,
                f,
                g,
            ];
        }
        for (x, y) in h.iter_mut().zip(v) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// The inputs of the PTX, as paths relative to the crate root with `/`, sorted bytewise (as
/// `LC_ALL=C sort` in scripts/regen-ptx.sh): every `.cu` and `.cuh` file under `cuda/` except
/// in `cuda/simt/`, and `build/nvcc-flags.txt`.
fn ptx_inputs(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            if rel == "cuda/simt" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else if rel.ends_with(".cu") || rel.ends_with(".cuh") {
                out.push(rel);
            }
        }
    }
    let mut v = vec!["build/nvcc-flags.txt".to_string()];
    walk(root, &root.join("cuda"), &mut v);
    v.sort();
    v
}

/// Compare the PTX's inputs with `ptx/sources.sha256`; a `cargo:warning` when they differ.
fn warn_if_stale(root: &Path) {
    let record_path = root.join("ptx").join(SOURCES_RECORD);
    let regen = "run scripts/regen-ptx.sh (nvcc 13.0.88) and commit ptx/, or build with nvcc";
    let Ok(record) = std::fs::read_to_string(&record_path) else {
        println!(
            "cargo:warning=the committed ptx/ may be stale: ptx/{SOURCES_RECORD} is missing, so \
             its kernel sources cannot be checked; {regen}"
        );
        return;
    };
    let recorded: std::collections::BTreeMap<&str, &str> = record
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, p)| (p.trim(), h.trim()))
        .collect();
    let mut changed = Vec::new();
    let inputs = ptx_inputs(root);
    for rel in &inputs {
        let now = std::fs::read(root.join(rel)).map(|b| sha256_hex(&b));
        match (recorded.get(rel.as_str()), now) {
            (Some(h), Ok(n)) if *h == n => {}
            (Some(_), _) => changed.push(format!("{rel} changed")),
            (None, _) => changed.push(format!("{rel} is new")),
        }
    }
    for p in recorded.keys() {
        if !inputs.iter().any(|i| i == p) {
            changed.push(format!("{p} was removed"));
        }
    }
    if !changed.is_empty() {
        let n = changed.len();
        changed.truncate(4);
        println!(
            "cargo:warning=the committed ptx/ may be stale: {}{} since ptx/ was generated \
             (ptx/{SOURCES_RECORD}), so the CUDA executor would run the old kernels; {regen}",
            changed.join(", "),
            if n > 4 {
                format!(" and {} more", n - 4)
            } else {
                String::new()
            }
        );
    }
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
            warn_if_stale(root);
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
