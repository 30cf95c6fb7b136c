//! Every typed kernel declaration (`tessera::kernels::declarations()`) against the kernel
//! sources as built: the host SIMT registry of both waves (name present), and the PTX of every
//! architecture (the `.entry` exists, its `.param` list has the declared count and sizes in
//! order, and `.maxntid` equals the declared block). And the other way round: every PTX entry of
//! a module the ops use is declared, so a kernel cannot be added without its declaration.

use std::collections::{BTreeMap, BTreeSet};

use tessera::device::kernel::KernelDecl;
use tessera::kernels::{declarations, PTX};
use tessera::{Device, SimtConfig};

/// One `.entry` of a PTX text: its parameter sizes in bytes and its `.maxntid` x, if any.
#[derive(Debug)]
struct PtxEntry {
    params: Vec<usize>,
    maxntid: Option<u32>,
}

fn ptx_type_size(ty: &str) -> usize {
    match ty {
        ".u64" | ".s64" | ".b64" | ".f64" => 8,
        ".u32" | ".s32" | ".b32" | ".f32" => 4,
        ".u16" | ".s16" | ".b16" | ".f16" => 2,
        ".u8" | ".s8" | ".b8" => 1,
        other => panic!("unexpected PTX parameter type {other}"),
    }
}

fn parse_ptx(ptx: &str) -> BTreeMap<String, PtxEntry> {
    let mut out = BTreeMap::new();
    let mut lines = ptx.lines().map(str::trim).peekable();
    while let Some(l) = lines.next() {
        let Some(rest) = l
            .strip_prefix(".visible .entry ")
            .or_else(|| l.strip_prefix(".entry "))
        else {
            continue;
        };
        let name = rest.split(['(', ' ']).next().unwrap().to_string();
        let mut params = Vec::new();
        let mut maxntid = None;
        for l in lines.by_ref() {
            if let Some(p) = l.strip_prefix(".param ") {
                let ty = p.split_whitespace().next().unwrap();
                // `.param .align 8 .b8 name[16]`: a by-value struct.
                if ty == ".align" {
                    let (_, tail) = p.split_once('[').expect("array parameter");
                    let n: usize = tail.trim_end_matches([']', ',', ')']).parse().unwrap();
                    params.push(n);
                } else {
                    params.push(ptx_type_size(ty));
                }
            } else if let Some(m) = l.strip_prefix(".maxntid ") {
                maxntid = Some(m.split(',').next().unwrap().trim().parse().unwrap());
            } else if l == "{" {
                break;
            }
        }
        out.insert(name, PtxEntry { params, maxntid });
    }
    out
}

#[test]
fn every_declaration_matches_the_ptx() {
    let decls = declarations();
    assert!(!decls.is_empty());
    let mut by_module: BTreeMap<&str, Vec<&KernelDecl>> = BTreeMap::new();
    for d in &decls {
        by_module.entry(d.module).or_default().push(d);
    }
    let mut problems = Vec::new();
    for arch in ["sm_80", "sm_90a"] {
        for (module, ds) in &by_module {
            let entry = PTX
                .iter()
                .find(|e| e.module == *module && e.arch == arch)
                .unwrap_or_else(|| panic!("no {arch} PTX for module {module}"));
            let entries = parse_ptx(entry.ptx);
            let declared: BTreeSet<&str> = ds.iter().map(|d| d.name.as_str()).collect();
            for d in ds {
                let Some(e) = entries.get(&d.name) else {
                    problems.push(format!("{arch} {module}: no entry {}", d.name));
                    continue;
                };
                let sizes: Vec<usize> = d.params.iter().map(|p| p.size).collect();
                if sizes != e.params {
                    problems.push(format!(
                        "{arch} {}: declared parameter sizes {sizes:?} ({:?}), PTX has {:?}",
                        d.name,
                        d.params.iter().map(|p| p.name).collect::<Vec<_>>(),
                        e.params
                    ));
                }
                if let Some(b) = d.block {
                    if e.maxntid != Some(b) {
                        problems.push(format!(
                            "{arch} {}: declared block {b}, PTX .maxntid {:?}",
                            d.name, e.maxntid
                        ));
                    }
                }
            }
            for name in entries.keys() {
                if !declared.contains(name.as_str()) {
                    problems.push(format!(
                        "{arch} {module}: entry {name} has no Rust declaration"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_declaration_is_registered_on_simt() {
    let decls = declarations();
    for wave in [32, 64] {
        let dev = Device::simt_with(SimtConfig {
            wave,
            ..Default::default()
        })
        .unwrap();
        let names: BTreeSet<String> = dev.kernel_names().into_iter().collect();
        let missing: Vec<&str> = decls
            .iter()
            .map(|d| d.name.as_str())
            .filter(|n| !names.contains(*n))
            .collect();
        assert!(
            missing.is_empty(),
            "wave{wave}: not registered: {missing:?}"
        );
    }
}

#[test]
fn declarations_are_unique_and_named_after_their_module() {
    let decls = declarations();
    let mut seen = BTreeMap::new();
    for d in &decls {
        // The same kernel may be declared twice with different Rust types (the bitmask
        // compaction over raw bits), but then identically at the kernel boundary.
        if let Some(prev) = seen.insert(d.name.clone(), d) {
            let sizes = |d: &KernelDecl| d.params.iter().map(|p| p.size).collect::<Vec<_>>();
            assert_eq!(prev.module, d.module, "{}", d.name);
            assert_eq!(sizes(prev), sizes(d), "{}", d.name);
            assert_eq!(prev.block, d.block, "{}", d.name);
        }
        assert!(
            tessera::kernels::MODULES.contains(&d.module),
            "{}: module {} is not a kernel module",
            d.name,
            d.module
        );
    }
}
