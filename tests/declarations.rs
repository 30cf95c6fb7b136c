//! Every typed kernel declaration (`tessera::kernels::declarations()`) against the kernel
//! sources as built: the host SIMT registry of both waves (name, argument sizes, the block the
//! source exports), the PTX of every architecture (the `.entry` exists, its `.param` sizes in
//! order, `.maxntid` equals the declared block) and the `.cu` text (the argument names). And the
//! other way round: every PTX entry of a module the ops use is declared, so a kernel cannot be
//! added without its declaration.

use std::collections::{BTreeMap, BTreeSet};

use tessera::device::kernel::KernelDecl;
use tessera::kernels::{declarations, PTX};

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

/// The kernels defined in a `.cu` source: (name pattern, parameter names). A name pattern may
/// hold token pastes (`bitmask_mask_##sfx`, `attn_fwd_##sfx##_d##D`); each pasted parameter
/// stands for one `_`-free word.
fn source_kernels(src: &str) -> Vec<(String, Vec<String>)> {
    let src = src.replace("\\\n", " ");
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(at) = rest.find("TESSERA_GLOBAL void") {
        rest = &rest[at + "TESSERA_GLOBAL void".len()..];
        let mut head = rest.trim_start();
        if let Some(after) = head.strip_prefix("TESSERA_LAUNCH_BOUNDS(") {
            head = after[after.find(')').unwrap() + 1..].trim_start();
        }
        let open = head.find('(').unwrap();
        let name: String = head[..open].split_whitespace().collect();
        let mut depth = 0;
        let mut close = open;
        for (i, c) in head[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let params = head[open + 1..close]
            .split(',')
            .map(|p| {
                p.trim()
                    .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap()
                    .to_string()
            })
            .filter(|p| !p.is_empty())
            .collect();
        out.push((name, params));
    }
    out
}

/// Whether `name` is an instance of `pattern`. The pattern's `##`-joined tokens after the first
/// are macro parameters (a non-empty word without `_`: `f32`, `bf16`, `64`) unless they start
/// with `_`, in which case they are literal text.
fn instance_of(name: &str, pattern: &str) -> bool {
    let mut parts = pattern.split("##");
    let Some(mut rest) = name.strip_prefix(parts.next().unwrap()) else {
        return false;
    };
    for part in parts {
        if part.starts_with('_') {
            let Some(t) = rest.strip_prefix(part) else {
                return false;
            };
            rest = t;
        } else {
            let end = rest.find('_').unwrap_or(rest.len());
            if end == 0 {
                return false;
            }
            rest = &rest[end..];
        }
    }
    rest.is_empty()
}

/// The Rust field names are the kernel source's parameter names (`new` is `neu` in C++, where
/// `new` is a keyword), so two arguments of the same size cannot be declared swapped.
#[test]
fn declared_argument_names_are_the_source_parameter_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut problems = Vec::new();
    let mut sources = BTreeMap::new();
    for d in declarations() {
        let kernels = sources.entry(d.module).or_insert_with(|| {
            let path = format!("{root}/cuda/{}.cu", d.module);
            source_kernels(&std::fs::read_to_string(&path).expect(&path))
        });
        let matches: Vec<&(String, Vec<String>)> = kernels
            .iter()
            .filter(|(pat, _)| instance_of(&d.name, pat))
            .collect();
        let [(pat, params)] = matches.as_slice() else {
            problems.push(format!(
                "{}: {} definitions in cuda/{}.cu match",
                d.name,
                matches.len(),
                d.module
            ));
            continue;
        };
        let source: Vec<&str> = params
            .iter()
            .map(|p| if p == "neu" { "new" } else { p.as_str() })
            .collect();
        let declared: Vec<&str> = d.params.iter().map(|p| p.name).collect();
        if source != declared {
            problems.push(format!(
                "{} ({pat}): declared {declared:?}, source has {source:?}",
                d.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_source_parser_reads_pasted_names() {
    let src = "#define X(E, sfx) \\\n  TESSERA_GLOBAL void TESSERA_LAUNCH_BOUNDS(k) f_##sfx##_d##D( \\\n \
               const E::Bits* a, uint64_t n) {}\nTESSERA_GLOBAL void g(float* out, int k) {}";
    let k = source_kernels(src);
    assert_eq!(k.len(), 2);
    assert_eq!(k[0].0, "f_##sfx##_d##D");
    assert_eq!(k[0].1, ["a", "n"]);
    assert_eq!(k[1].1, ["out", "k"]);
    assert!(instance_of("f_bf16_d64", &k[0].0));
    assert!(!instance_of("f_bf16", &k[0].0));
    assert!(!instance_of("f_bf16_d64_x", &k[0].0));
    assert!(instance_of("g", "g"));
}

/// Every instance is in the SIMT registry of both waves with the declared argument sizes and
/// block (the registry's block is what `TESSERA_EXPORT_BLOCK` in the source says; 0 = any).
#[test]
fn every_declaration_matches_the_simt_registry() {
    let decls = declarations();
    let mut problems = Vec::new();
    for wave in [32, 64] {
        let table = tessera::device::simt::simt_kernels(wave).expect("a SIMT wave");
        for d in &decls {
            let Some(k) = table.iter().find(|k| k.name == d.name) else {
                problems.push(format!("wave{wave}: {} is not registered", d.name));
                continue;
            };
            let sizes: Vec<usize> = d.params.iter().map(|p| p.size).collect();
            if sizes != k.param_sizes {
                problems.push(format!(
                    "wave{wave} {}: declared sizes {sizes:?}, registry {:?}",
                    d.name, k.param_sizes
                ));
            }
            if d.block.unwrap_or(0) != k.block {
                problems.push(format!(
                    "wave{wave} {}: declared block {:?}, the source exports {}",
                    d.name, d.block, k.block
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
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

/// Every kernel module but the SIMT runtime's self-tests has declarations, so a family whose
/// `declarations()` is not collected in `tessera::kernels::declarations()` fails here.
#[test]
fn every_op_module_is_declared() {
    let decls = declarations();
    let missing: Vec<&str> = tessera::kernels::MODULES
        .iter()
        .copied()
        .filter(|m| !m.starts_with("selftest/"))
        .filter(|m| !decls.iter().any(|d| d.module == *m))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without declarations: {missing:?}"
    );
}
