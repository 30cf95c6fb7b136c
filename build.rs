//! Builds tessera's kernels three ways (see docs/architecture.md):
//!   * PTX for sm_80 and sm_90a with nvcc when one is found, else the committed `ptx/`;
//!   * AMDGPU code objects for gfx942 and gfx90a with the `hip` feature;
//!   * the host SIMT runtime and every kernel source for the CPU, always (wave32 and wave64).
//!
//! Each step writes a table into OUT_DIR that `src/kernels.rs` includes.

#[path = "build/hip.rs"]
mod hip;
#[path = "build/ptx.rs"]
mod ptx;
#[path = "build/simt.rs"]
mod simt;

use std::path::{Path, PathBuf};

/// A kernel source file: `cuda/<module>.cu`, e.g. module `ckpt/bitmask`.
pub struct KernelSource {
    pub module: String,
    pub path: PathBuf,
}

/// Every `cuda/**/*.cu` except the SIMT runtime's own folder, sorted by module name.
pub fn kernel_sources(root: &Path) -> Vec<KernelSource> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "cu") {
                out.push(p);
            }
        }
    }
    let cuda = root.join("cuda");
    let mut files = Vec::new();
    walk(&cuda, &mut files);
    let mut out: Vec<KernelSource> = files
        .into_iter()
        .filter(|p| !p.starts_with(cuda.join("simt")))
        .map(|p| {
            let rel = p.strip_prefix(&cuda).unwrap().with_extension("");
            KernelSource {
                module: rel.to_string_lossy().replace('\\', "/"),
                path: p,
            }
        })
        .collect();
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-changed=hip");
    println!("cargo:rerun-if-changed=ptx");
    let sources = kernel_sources(&root);
    ptx::build(&root, &out, &sources);
    hip::build(&root, &out, &sources);
    simt::build(&root, &out, &sources);
}
