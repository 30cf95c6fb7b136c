//! HIP step of build.rs (only with the `hip` feature): every module's HIP entry file (its
//! `hip/<module>.hip` override, else the generated one that includes `cuda/<module>.cu`: see
//! `hip_entries` in build.rs) to an AMDGPU code object for gfx942 (MI300) and gfx90a (MI200).
//!
//! Compiler: `HIPCC`, else `$ROCM_PATH/bin/hipcc`, else clang (`TESSERA_CLANG`, `clang-19`,
//! `clang`) with the HIP headers of `TESSERA_HIP_PATH` (default `/usr`, Debian's
//! libamdhip64-dev) and the ROCm device libraries. Debian 12's device libraries lack
//! `oclc_isa_version_942.bc`; it is one constant (`__oclc_ISA_version = 9402`), so this step
//! assembles it with llvm-as into a device-library folder in OUT_DIR (symlinks to the system
//! bitcode plus the generated file). Every compile is
//!
//!   clang -x hip --offload-arch=<gfx> --cuda-device-only --no-gpu-bundle-output -O3 -std=c++17
//!         [--hip-path=<hip> --rocm-device-lib-path=<dir>] -I cuda -o <out>.co <entry>.hip
//!
//! run in the crate root. A failing compile is a build error carrying the compiler's message.
//! Without the feature the table is empty and `HIP_BUILT` is false.
//!
//! Writes `hip_table.rs` (`HSACO`, `HIP_BUILT`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The architectures tessera ships code objects for.
pub const ARCHS: [&str; 2] = ["gfx942", "gfx90a"];

/// Common compile flags (after `--offload-arch`), shared by the hipcc and clang paths.
const FLAGS: &[&str] = &[
    "--cuda-device-only",
    "--no-gpu-bundle-output",
    "-O3",
    "-std=c++17",
];

fn write_table(out: &Path, objects: &[(String, String, PathBuf)], built: bool) {
    let mut t = String::from("pub static HSACO: &[CodeObject] = &[\n");
    for (module, arch, path) in objects {
        t += &format!(
            "    CodeObject {{ module: {module:?}, arch: {arch:?}, bytes: include_bytes!({:?}) }},\n",
            path.to_string_lossy()
        );
    }
    t += "];\n";
    t += &format!("pub const HIP_BUILT: bool = {built};\n");
    std::fs::write(out.join("hip_table.rs"), t).unwrap();
}

fn on_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn env_nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

fn run(cmd: &mut Command, what: &str) -> std::process::Output {
    match cmd.output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "tessera build (hip): {what} failed ({}):\n{cmd:?}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("tessera build (hip): cannot run {what} ({cmd:?}): {e}"),
    }
}

/// The system's AMDGPU device-library folder (the one with `ocml.bc`).
fn system_device_libs(clang: &Path) -> PathBuf {
    if let Some(d) = env_nonempty("TESSERA_ROCM_DEVICE_LIB_PATH") {
        return PathBuf::from(d);
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        for e in rd.flatten() {
            candidates.push(e.path().join("amdgcn/bitcode"));
        }
    }
    candidates.sort();
    candidates.push("/usr/lib/amdgcn/bitcode".into());
    candidates.push("/usr/share/amdgcn/bitcode".into());
    // Next to the compiler's own LLVM (e.g. /usr/lib/llvm-19/lib/amdgcn/bitcode).
    if let Ok(real) = std::fs::canonicalize(clang) {
        if let Some(prefix) = real.parent().and_then(Path::parent) {
            candidates.push(prefix.join("lib/amdgcn/bitcode"));
            candidates.push(prefix.join("amdgcn/bitcode"));
        }
    }
    candidates.into_iter().find(|d| d.join("ocml.bc").is_file()).unwrap_or_else(|| {
        panic!(
            "tessera build (hip): no ROCm device libraries found (ocml.bc); install rocm-device-libs \
             or set TESSERA_ROCM_DEVICE_LIB_PATH"
        )
    })
}

/// llvm-as of the same LLVM as `clang`.
fn find_llvm_as(clang: &Path) -> PathBuf {
    if let Some(p) = env_nonempty("TESSERA_LLVM_AS") {
        return PathBuf::from(p);
    }
    if let Ok(real) = std::fs::canonicalize(clang) {
        let sib = real.with_file_name("llvm-as");
        if sib.is_file() {
            return sib;
        }
    }
    on_path("llvm-as-19").or_else(|| on_path("llvm-as")).unwrap_or_else(|| {
        panic!("tessera build (hip): llvm-as not found (needed for the gfx942 ISA-version bitcode); set TESSERA_LLVM_AS")
    })
}

/// A device-library folder in OUT_DIR: symlinks to the system bitcode, plus any missing
/// `oclc_isa_version_<N>.bc` for the target architectures, assembled from IR written here.
fn device_lib_dir(clang: &Path, out: &Path) -> PathBuf {
    let sys = system_device_libs(clang);
    let dir = out.join("amdgcn-bitcode");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&sys).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "bc") {
            let link = dir.join(p.file_name().unwrap());
            #[cfg(unix)]
            std::os::unix::fs::symlink(&p, &link).unwrap();
            #[cfg(not(unix))]
            std::fs::copy(&p, &link).unwrap();
        }
    }
    for arch in ARCHS {
        let num = arch.trim_start_matches("gfx");
        let bc = dir.join(format!("oclc_isa_version_{num}.bc"));
        if bc.exists() {
            continue;
        }
        // __oclc_ISA_version is major*1000 + minor*100 + stepping: gfx942 -> 9402, gfx90a -> 9010.
        let digits: Vec<u32> = num.chars().map(|c| c.to_digit(16).unwrap()).collect();
        let version = digits[0] * 1000 + digits[1] * 100 + digits[2];
        // The data layout of this clang's amdgcn target, so linking does not warn.
        let o = run(
            Command::new(clang)
                .args([
                    "-target",
                    "amdgcn-amd-amdhsa",
                    "-nogpulib",
                    "-S",
                    "-emit-llvm",
                    "-x",
                    "c",
                    "-o",
                    "-",
                ])
                .arg(if cfg!(windows) { "NUL" } else { "/dev/null" }),
            "clang -emit-llvm (amdgcn data layout)",
        );
        let ir_head: String = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("target datalayout") || l.starts_with("target triple"))
            .map(|l| format!("{l}\n"))
            .collect();
        // Same declaration as the system's oclc_isa_version_940.bc.
        let ir = format!(
            "{ir_head}@__oclc_ISA_version = linkonce_odr protected local_unnamed_addr addrspace(4) constant i32 {version}, align 4\n"
        );
        let ll = out.join(format!("oclc_isa_version_{num}.ll"));
        std::fs::write(&ll, ir).unwrap();
        let llvm_as = find_llvm_as(clang);
        run(
            Command::new(&llvm_as).arg(&ll).arg("-o").arg(&bc),
            "llvm-as (ISA-version bitcode)",
        );
    }
    dir
}

enum Compiler {
    /// hipcc from a ROCm install: finds its own headers and device libraries.
    Hipcc(PathBuf),
    /// Plain clang with `--hip-path` and a device-library folder.
    Clang {
        clang: PathBuf,
        hip_path: PathBuf,
        device_libs: PathBuf,
    },
}

fn find_compiler(out: &Path) -> Compiler {
    if let Some(h) = env_nonempty("HIPCC") {
        return Compiler::Hipcc(PathBuf::from(h));
    }
    if let Some(rocm) = env_nonempty("ROCM_PATH") {
        let h = PathBuf::from(rocm).join("bin/hipcc");
        if h.is_file() {
            return Compiler::Hipcc(h);
        }
    }
    let clang = env_nonempty("TESSERA_CLANG")
        .and_then(|c| on_path(&c))
        .or_else(|| on_path("clang-19"))
        .or_else(|| on_path("clang"))
        .unwrap_or_else(|| {
            panic!("tessera build (hip): no HIP compiler: set HIPCC or ROCM_PATH, or install clang-19 (scripts/install-toolchains.sh)")
        });
    let hip_path = PathBuf::from(env_nonempty("TESSERA_HIP_PATH").unwrap_or_else(|| "/usr".into()));
    if !hip_path.join("include/hip/hip_runtime.h").is_file() {
        panic!(
            "tessera build (hip): {}/include/hip/hip_runtime.h not found: install libamdhip64-dev or set TESSERA_HIP_PATH",
            hip_path.display()
        );
    }
    let device_libs = device_lib_dir(&clang, out);
    Compiler::Clang {
        clang,
        hip_path,
        device_libs,
    }
}

pub fn build(root: &Path, out: &Path, entries: &[crate::HipEntry]) {
    for var in [
        "HIPCC",
        "ROCM_PATH",
        "TESSERA_CLANG",
        "TESSERA_HIP_PATH",
        "TESSERA_ROCM_DEVICE_LIB_PATH",
        "TESSERA_LLVM_AS",
        "TESSERA_HIP_JOBS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_HIP").is_none() {
        write_table(out, &[], false);
        return;
    }
    let compiler = find_compiler(out);
    let out_co = out.join("hsaco");
    let _ = std::fs::remove_dir_all(&out_co);

    let mut jobs = Vec::new();
    for e in entries {
        // Overrides by their path relative to the root (messages name hip/<module>.hip).
        let src = e.path.strip_prefix(root).unwrap_or(&e.path);
        let src = src.to_string_lossy().replace('\\', "/");
        for arch in ARCHS {
            let dst = out_co.join(format!("{}.{arch}.co", e.module));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            jobs.push((e.module.clone(), arch.to_string(), src.clone(), dst));
        }
    }
    let workers: usize = env_nonempty("TESSERA_HIP_JOBS")
        .or_else(|| env_nonempty("NUM_JOBS"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::Mutex::new(Vec::<String>::new());
    let warnings = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|sc| {
        for _ in 0..workers.min(jobs.len()) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, arch, src, dst)) = jobs.get(i) else {
                    break;
                };
                let mut cmd = match &compiler {
                    Compiler::Hipcc(h) => Command::new(h),
                    Compiler::Clang { clang, .. } => Command::new(clang),
                };
                cmd.current_dir(root)
                    .args(["-x", "hip"])
                    .arg(format!("--offload-arch={arch}"))
                    .args(FLAGS);
                if let Compiler::Clang {
                    hip_path,
                    device_libs,
                    ..
                } = &compiler
                {
                    cmd.arg(format!("--hip-path={}", hip_path.display()))
                        .arg(format!("--rocm-device-lib-path={}", device_libs.display()));
                }
                cmd.args(["-I", "cuda", "-o"]).arg(dst).arg(src);
                match cmd.output() {
                    Ok(o) if o.status.success() => {
                        let err = String::from_utf8_lossy(&o.stderr);
                        if !err.trim().is_empty() {
                            warnings
                                .lock()
                                .unwrap()
                                .push(format!("{src} ({arch}): {}", err.trim()));
                        }
                    }
                    Ok(o) => errors.lock().unwrap().push(crate::failed(&cmd, &o)),
                    Err(e) => errors
                        .lock()
                        .unwrap()
                        .push(format!("cannot run {cmd:?}: {e}")),
                }
            });
        }
    });
    crate::finish(
        "tessera build (hip): HIP compile failed",
        warnings.into_inner().unwrap(),
        errors.into_inner().unwrap(),
    );
    let objects: Vec<(String, String, PathBuf)> =
        jobs.into_iter().map(|(m, a, _, d)| (m, a, d)).collect();
    write_table(out, &objects, true);
}
