// PLACEHOLDER: replaced by the PTX build step (nvcc or committed ptx/).
use std::path::Path;
pub fn build(_root: &Path, out: &Path, sources: &[crate::KernelSource]) {
    std::fs::write(out.join("ptx_table.rs"), "pub static PTX: &[PtxEntry] = &[];\npub const PTX_ORIGIN: &str = \"none\";\n").unwrap();
    let mods: Vec<String> = sources.iter().map(|s| format!("{:?}", s.module)).collect();
    std::fs::write(out.join("modules.rs"), format!("pub static MODULES: &[&str] = &[{}];\n", mods.join(", "))).unwrap();
}
