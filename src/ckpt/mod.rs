//! Checkpoint compression (BitSnap): safetensors in, `.tsnap` out, and back.
//!
//! - [`compress`]: each tensor of a safetensors checkpoint, against an optional base checkpoint,
//!   gets the smallest encoding the policy finds within the error budget; sections are
//!   streamed to a temporary file that is renamed when complete.
//! - [`decompress`]: rebuilds the safetensors file (byte for byte in lossless mode) and checks
//!   every section checksum, every tensor's hash and the whole file's hash on the way.
//! - [`inspect`]: the manifest, with each tensor's encoding, ratio and error.
//!
//! Format: [`mod@format`] (writer, reader, manifest). Rules and reasoning: docs/ckpt.md.
//!
//! Public: these drivers with their options and reports, [`mod@format`], the safetensors input
//! [`st`] and the synthetic checkpoint pairs of [`synth`]. Everything else is internal to
//! `ckpt`; the `fuzzing` feature adds `ckpt::fuzzing`, what the fuzz targets (`fuzz/`) call
//! besides [`check_bytes`].

// Layering: a module uses only modules on rows above its own, so the uses form a DAG.
//   bits, format, st   leaves: LSB-first bit streams, the .tsnap container, safetensors input
//   maskcode, valcode  the Rice mask coder and the Exp-Golomb value coder (bits, format)
//   synth              synthetic checkpoint pairs (format)
//   sections           section checks shared by both decoders, typed views of section bytes,
//                      and the kernel path's decoder `decode_typed` (format, maskcode, valcode)
//   hostdec            the CPU path's decoder (sections, format, valcode)
//   delta              the change mask, exact sizes and builders of the masked deltas (bits,
//                      format, maskcode, valcode; its unit tests decode with hostdec)
//   policy             per-tensor candidates, measured through a decoder, and the choice
//                      (delta, sections, hostdec, format, valcode)
//   mod.rs             compress / decompress / inspect (policy, sections, hostdec, delta,
//                      format, st)
// The element formulas that encoders and decoders share (zigzag deltas, `delta_value`,
// rounding) are in `reference::codec`, below all of these.

mod bits;
mod delta;
pub mod format;
mod hostdec;
mod maskcode;
mod policy;
mod sections;
pub mod st;
pub mod synth;
mod valcode;

/// What the fuzz targets (`fuzz/`) call besides [`check_bytes`]; only with the `fuzzing`
/// feature.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::maskcode::decode as decode_rice_mask;
}

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::{bf16, f16};
use safetensors::tensor::Dtype;
use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::device::Device;
use crate::error::{Error, Result};

pub use format::{Encoding, Manifest, MaskCoding, Reader, SectionRef, TensorEntry, TensorStats};

/// Options of [`compress`].
#[derive(Clone, Debug, Default)]
pub struct CompressOptions {
    /// Largest relative L2 error allowed per tensor; 0 = lossless.
    pub error_budget: f64,
    /// Tensors whose name matches one of these stay exact: a pattern with `*` or `?` is a glob
    /// over the whole name, any other pattern matches as a substring.
    pub keep_exact: Vec<String>,
}

/// Progress of a long operation, reported after each tensor.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub tensor: &'a str,
}

/// Summary of a [`compress`] run.
#[derive(Clone, Debug, Serialize)]
pub struct CompressReport {
    pub output: PathBuf,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub ratio: f64,
    pub tensors: usize,
    pub lossless: bool,
    pub seconds: f64,
    pub backend: String,
    /// Encoding name -> number of tensors.
    pub encodings: HashMap<String, usize>,
}

/// Summary of a [`decompress`] run.
#[derive(Clone, Debug, Serialize)]
pub struct DecompressReport {
    pub output: PathBuf,
    pub output_bytes: u64,
    pub tensors: usize,
    pub lossless: bool,
    pub seconds: f64,
    pub backend: String,
}

/// Whether `name` matches a `--keep-exact` pattern (glob with `*`/`?`, else substring).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return name.contains(pattern);
    }
    fn glob(p: &[char], s: &[char]) -> bool {
        // Iterative wildcard match with backtracking to the last '*'.
        let (mut pi, mut si) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while si < s.len() {
            if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some(pi);
                mark = si;
                pi += 1;
            } else if let Some(st) = star {
                pi = st + 1;
                mark += 1;
                si = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    glob(&p, &s)
}

fn io(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

/// Compress `new` (against `base` when given) into `out`.
pub fn compress(
    new: &Path,
    base: Option<&Path>,
    out: &Path,
    opts: &CompressOptions,
    dev: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<CompressReport> {
    let t0 = Instant::now();
    if !(opts.error_budget.is_finite() && opts.error_budget >= 0.0) {
        return Err(Error::invalid(
            "ckpt::compress",
            format!(
                "error budget must be finite and >= 0, got {}",
                opts.error_budget
            ),
        ));
    }
    let nf = st::StFile::open(new)?;
    let bf = base.map(st::StFile::open).transpose()?;
    let base_index: HashMap<&str, &st::StTensor> = bf
        .as_ref()
        .map(|b| b.tensors.iter().map(|t| (t.name.as_str(), t)).collect())
        .unwrap_or_default();
    let mut w = format::Writer::create(out)?;
    let hdr = nf.header_bytes();
    let st_header = w.section(&[hdr])?;
    let mut fh = Xxh3::new();
    fh.update(hdr);
    let total: u64 = nf.tensors.iter().map(|t| (t.end - t.start) as u64).sum();
    let mut done = 0u64;
    let mut entries = Vec::with_capacity(nf.tensors.len());
    let mut encodings: HashMap<String, usize> = HashMap::new();
    for t in &nf.tensors {
        let data = nf.data(t);
        let base_data = base_index
            .get(t.name.as_str())
            .filter(|b| b.dtype == t.dtype && b.shape == t.shape)
            .map(|b| bf.as_ref().expect("base").data(b));
        let mut exact_reason = None;
        if t.shape.len() <= 1 {
            exact_reason = Some("1-D tensor (norm, bias or scalar)".to_string());
        } else if let Some(p) = opts.keep_exact.iter().find(|p| pattern_matches(p, &t.name)) {
            exact_reason = Some(format!("matches --keep-exact '{p}'"));
        }
        let exact_only = exact_reason.is_some();
        let mut produced = |b: &[u8]| fh.update(b);
        let choice = match t.dtype {
            Dtype::BF16 => policy::encode_tensor::<bf16>(
                dev,
                &t.name,
                data,
                base_data,
                opts.error_budget,
                exact_only,
                &mut produced,
            )?,
            Dtype::F16 => policy::encode_tensor::<f16>(
                dev,
                &t.name,
                data,
                base_data,
                opts.error_budget,
                exact_only,
                &mut produced,
            )?,
            Dtype::F32 => policy::encode_tensor::<f32>(
                dev,
                &t.name,
                data,
                base_data,
                opts.error_budget,
                exact_only,
                &mut produced,
            )?,
            _ => {
                exact_reason = Some(format!("dtype {} is stored raw", t.dtype));
                produced(data);
                policy::Choice {
                    encoding: Encoding::Raw,
                    sections: vec![delta::Section::Borrowed(data)],
                    recon_xxh3: None,
                    stats: TensorStats::default(),
                }
            }
        };
        let mut stats = choice.stats;
        if stats.exact_reason.is_none() {
            stats.exact_reason = exact_reason;
        }
        if base.is_some() && base_data.is_none() && stats.notes.is_empty() {
            stats
                .notes
                .push("no base tensor of this name, dtype and shape".into());
        }
        let xxh3 = choice.recon_xxh3.unwrap_or_else(|| xxh3_64(data));
        // Sections go to the file as soon as the tensor's choice is made, then are dropped.
        let mut sections = Vec::with_capacity(choice.sections.len());
        for s in &choice.sections {
            sections.push(w.section(&[s.bytes()])?);
        }
        drop(choice.sections);
        *encodings.entry(choice.encoding.name()).or_default() += 1;
        entries.push(TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype_name(),
            shape: t.shape.iter().map(|&d| d as u64).collect(),
            data_offsets: [t.start as u64, t.end as u64],
            encoding: choice.encoding,
            sections,
            xxh3,
            stats,
        });
        done += data.len() as u64;
        progress(Progress {
            done_bytes: done,
            total_bytes: total,
            tensor: &t.name,
        });
    }
    let manifest = Manifest {
        format_version: format::VERSION,
        tool: format!("tessera {}", env!("CARGO_PKG_VERSION")),
        base: bf.as_ref().map(|b| format::BaseIdentity {
            content_hash: b.content_hash(),
            tensors: b.tensors.len() as u64,
        }),
        error_budget: opts.error_budget,
        keep_exact: opts.keep_exact.clone(),
        st_header,
        file_len: nf.bytes().len() as u64,
        file_xxh3: fh.digest(),
        tensors: entries,
    };
    let lossless = manifest.is_lossless();
    let tensors = manifest.tensors.len();
    let out_bytes = w.finish(&manifest)?;
    let in_bytes = nf.bytes().len() as u64;
    Ok(CompressReport {
        output: out.to_path_buf(),
        input_bytes: in_bytes,
        output_bytes: out_bytes,
        ratio: in_bytes as f64 / out_bytes.max(1) as f64,
        tensors,
        lossless,
        seconds: t0.elapsed().as_secs_f64(),
        backend: dev.backend().to_string(),
        encodings,
    })
}

/// Read and validate the manifest of a `.tsnap` file (header, trailer, manifest checksum and
/// structure; section checksums are checked by [`decompress`]).
pub fn inspect(path: &Path) -> Result<Manifest> {
    let f = File::open(path).map_err(|e| io(format!("opening {}", path.display()), e))?;
    // Read-only map; every byte used is checksummed.
    let map =
        crate::device::map_file(&f).map_err(|e| io(format!("mapping {}", path.display()), e))?;
    Ok(Reader::new(&map)?.manifest)
}

/// Decode every tensor of a parsed `.tsnap` into `sink`, in the original file's order, checking
/// section checksums, tensor hashes and the whole-file hash. `base` must be the checkpoint the
/// file was made against when any tensor is a delta.
pub fn decode_to(
    r: &Reader,
    base: Option<&st::StFile>,
    dev: &Device,
    sink: &mut dyn Write,
    progress: &mut dyn FnMut(Progress),
) -> Result<()> {
    let m = &r.manifest;
    let needs_base = m.tensors.iter().any(|t| t.encoding.needs_base());
    match (&m.base, base) {
        (Some(id), Some(b)) => {
            let h = b.content_hash();
            if h != id.content_hash {
                return Err(format::ferr(
                    "tsnap: base",
                    format!(
                        "the given base is not the checkpoint this file was compressed against (base content hash {h}, file expects {})",
                        id.content_hash
                    ),
                ));
            }
        }
        (Some(id), None) if needs_base => {
            return Err(format::ferr(
                "tsnap: base",
                format!(
                    "this file is a delta against a base checkpoint (content hash {}); pass it with --base",
                    id.content_hash
                ),
            ));
        }
        _ => {}
    }
    let base_index: HashMap<&str, &st::StTensor> = base
        .map(|b| b.tensors.iter().map(|t| (t.name.as_str(), t)).collect())
        .unwrap_or_default();
    let hdr = r.section(&m.st_header, "safetensors header section")?;
    check_st_header(hdr, m)?;
    let werr = |e| io("writing the decompressed file".into(), e);
    let mut fh = Xxh3::new();
    fh.update(hdr);
    sink.write_all(hdr).map_err(werr)?;
    let total: u64 = m.tensors.iter().map(|t| t.raw_bytes()).sum();
    let mut done = 0u64;
    for t in &m.tensors {
        let ctx = format!("tsnap: tensor '{}'", t.name);
        let names = t.encoding.section_names();
        let mut secs = Vec::with_capacity(t.sections.len());
        for (s, n) in t.sections.iter().zip(names) {
            secs.push(r.section(s, &format!("tensor '{}' section '{n}'", t.name))?);
        }
        let bytes = t.raw_bytes();
        let base_data = || -> Option<&[u8]> {
            let bt = base_index.get(t.name.as_str())?;
            let shape: Vec<u64> = bt.shape.iter().map(|&d| d as u64).collect();
            (bt.dtype_name() == t.dtype && shape == t.shape).then(|| base.expect("base").data(bt))
        };
        let mut emit = |out: &[u8]| -> Result<()> {
            if out.len() as u64 != bytes || xxh3_64(out) != t.xxh3 {
                return Err(format::ferr(
                    &ctx,
                    "decoded bytes do not match the recorded hash (corrupt file or wrong base)",
                ));
            }
            fh.update(out);
            sink.write_all(out).map_err(werr)
        };
        if let Encoding::Raw = t.encoding {
            emit(secs[0])?;
        } else {
            let es = format::dtype_size(&t.dtype).unwrap_or(1);
            let n = usize::try_from(bytes / es).map_err(|_| format::ferr(&ctx, "too large"))?;
            match t.dtype.as_str() {
                "BF16" => decode_one::<bf16>(dev, t, n, &secs, base_data(), &ctx, &mut emit)?,
                "F16" => decode_one::<f16>(dev, t, n, &secs, base_data(), &ctx, &mut emit)?,
                "F32" => decode_one::<f32>(dev, t, n, &secs, base_data(), &ctx, &mut emit)?,
                d => return Err(format::ferr(&ctx, format!("encoded tensor of dtype {d}"))),
            }
        }
        done += bytes;
        progress(Progress {
            done_bytes: done,
            total_bytes: total,
            tensor: &t.name,
        });
    }
    if fh.digest() != m.file_xxh3 {
        return Err(format::ferr(
            "tsnap: manifest",
            "the rebuilt file does not match the recorded file hash",
        ));
    }
    Ok(())
}

fn decode_one<T: crate::dtype::Float>(
    dev: &Device,
    t: &TensorEntry,
    n: usize,
    secs: &[&[u8]],
    base: Option<&[u8]>,
    ctx: &str,
    emit: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    if !dev.backend().runs_kernels() {
        // CPU path: decoded on the host from the mapped sections and base into one buffer of
        // the tensor's size, which is checked against its hash before it is written.
        let bh = base.map(sections::view::<T>);
        let mut out: Vec<u8> = Vec::new();
        hostdec::decode::<T>(&t.encoding, n, secs, bh.as_deref(), ctx, &mut |c| {
            // The first chunk comes only after the sections were checked against `n`, so
            // the size is bounded by the file (or the base) by then.
            if out.capacity() == 0 {
                out.reserve_exact(n * std::mem::size_of::<T>());
            }
            out.extend_from_slice(bytemuck::cast_slice(c));
            Ok(())
        })?;
        return emit(&out);
    }
    let bd = match base {
        Some(b) if t.encoding.needs_base() => {
            Some(dev.upload(&sections::view::<T>(b), "ckpt.base")?)
        }
        _ => None,
    };
    let v = sections::decode_typed::<T>(dev, &t.encoding, n, secs, bd.as_ref(), ctx)?;
    drop(bd);
    // On the CPU path the decoded buffer is host memory and is written without a copy.
    emit(&sections::buf_bytes(&v)?)
}

/// The stored safetensors header must describe exactly the manifest's tensors.
fn check_st_header(hdr: &[u8], m: &Manifest) -> Result<()> {
    let bad = |msg: &str| format::ferr("tsnap: safetensors header section", msg);
    let n = u64::from_le_bytes(hdr[..8].try_into().expect("8 bytes"));
    if n.checked_add(8) != Some(hdr.len() as u64) {
        return Err(bad("length prefix disagrees with the section"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&hdr[8..]).map_err(|_| bad("not a JSON safetensors header"))?;
    let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let count = obj.keys().filter(|k| *k != "__metadata__").count();
    if count != m.tensors.len() {
        return Err(bad("tensor count differs from the manifest"));
    }
    for t in &m.tensors {
        let e = obj
            .get(&t.name)
            .ok_or_else(|| bad("a manifest tensor is missing"))?;
        let offs = e.get("data_offsets").and_then(|o| o.as_array());
        let ok = e.get("dtype").and_then(|d| d.as_str()) == Some(t.dtype.as_str())
            && offs.is_some_and(|o| {
                o.len() == 2
                    && o[0].as_u64() == Some(t.data_offsets[0])
                    && o[1].as_u64() == Some(t.data_offsets[1])
            });
        if !ok {
            return Err(bad("a tensor's dtype or offsets differ from the manifest"));
        }
    }
    Ok(())
}

/// Decompress `input` (against `base` when it is a delta) into the safetensors file `out`,
/// written to a temporary name beside it and renamed when complete and verified.
pub fn decompress(
    input: &Path,
    base: Option<&Path>,
    out: &Path,
    dev: &Device,
    progress: &mut dyn FnMut(Progress),
) -> Result<DecompressReport> {
    let t0 = Instant::now();
    let f = File::open(input).map_err(|e| io(format!("opening {}", input.display()), e))?;
    // Read-only map; every byte used is checksummed.
    let map =
        crate::device::map_file(&f).map_err(|e| io(format!("mapping {}", input.display()), e))?;
    let r = Reader::new(&map)?;
    let bf = base.map(st::StFile::open).transpose()?;
    // Dropped on any error below (the rename included), `tmp` deletes the temporary file.
    let tmp = format::TempPath::beside("ckpt::decompress", out)?;
    let mut bw = BufWriter::with_capacity(1 << 20, tmp.create()?);
    decode_to(&r, bf.as_ref(), dev, &mut bw, progress)?;
    let file = bw
        .into_inner()
        .map_err(|e| io(format!("flushing {}", tmp.path().display()), e.into_error()))?;
    file.sync_all()
        .map_err(|e| io(format!("syncing {}", tmp.path().display()), e))?;
    drop(file);
    tmp.persist()?;
    Ok(DecompressReport {
        output: out.to_path_buf(),
        output_bytes: r.manifest.file_len,
        tensors: r.manifest.tensors.len(),
        lossless: r.manifest.is_lossless(),
        seconds: t0.elapsed().as_secs_f64(),
        backend: dev.backend().to_string(),
    })
}

/// Parse and fully decode a `.tsnap` held in memory without a base, discarding the output:
/// the fuzz target's and the corpus regression test's entry point. Never panics.
pub fn check_bytes(bytes: &[u8], dev: &Device) -> Result<()> {
    let r = Reader::new(bytes)?;
    decode_to(&r, None, dev, &mut std::io::sink(), &mut |_| {})
}

/// The human-readable `inspect` table: one row per tensor with its encoding, stored bytes,
/// ratio, error and the measurements the policy decided on.
pub fn inspect_table(m: &Manifest) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let stored: u64 = m.tensors.iter().map(|t| t.stored_bytes()).sum();
    let _ = writeln!(
        s,
        "tsnap v{} by {}: {} tensors, original {} bytes, sections {} bytes, {}",
        m.format_version,
        m.tool,
        m.tensors.len(),
        m.file_len,
        stored,
        if m.is_lossless() { "lossless" } else { "lossy" }
    );
    match &m.base {
        Some(b) => {
            let _ = writeln!(
                s,
                "base: content hash {} ({} tensors)",
                b.content_hash, b.tensors
            );
        }
        None => {
            let _ = writeln!(s, "base: none");
        }
    }
    let _ = writeln!(
        s,
        "error budget: {}  keep exact: {:?}",
        m.error_budget, m.keep_exact
    );
    let _ = writeln!(
        s,
        "{:<36} {:<5} {:<16} {:>11} {:>8} {:>9} {:>8} {:>9}  note",
        "tensor", "dtype", "encoding", "stored", "ratio", "error", "changed", "delta rms"
    );
    for t in &m.tensors {
        let ratio = t.raw_bytes() as f64 / t.stored_bytes().max(1) as f64;
        let ch = t
            .stats
            .frac_changed
            .map_or("-".into(), |f| format!("{:.1}%", f * 100.0));
        let rms = t.stats.delta_rms.map_or("-".into(), |f| format!("{f:.2e}"));
        let note = t.stats.exact_reason.clone().unwrap_or_default();
        let _ = writeln!(
            s,
            "{:<36} {:<5} {:<16} {:>11} {:>7.2}x {:>9.2e} {:>8} {:>9}  {}",
            t.name,
            t.dtype,
            t.encoding.name(),
            t.stored_bytes(),
            ratio,
            t.stats.error,
            ch,
            rms,
            note
        );
    }
    s
}
