//! The `.tsnap` container: a fixed header, checksummed data sections written as they are
//! produced, a checksummed JSON manifest, and a fixed-size trailer that locates the manifest.
//!
//! ```text
//! offset 0       header   16 bytes: MAGIC (8) | version u32 LE | header length u32 LE (16)
//! 16 ..          sections raw bytes, each described (offset, len, crc32c) in the manifest
//! M ..           manifest JSON (UTF-8), M and its length and crc32c are in the trailer
//! end - 40       trailer  40 bytes: manifest offset u64 | manifest len u64 | manifest crc32c u32
//!                         | version u32 | trailer crc32c u32 (of the 24 bytes before it)
//!                         | reserved u32 (0) | TRAILER_MAGIC (8)
//! ```
//!
//! Every length read from a file is checked against the file's size before anything is
//! allocated, and every section's checksum is checked before its bytes are used.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// First 8 bytes of every `.tsnap` file.
pub const MAGIC: [u8; 8] = *b"\x89TSNAP\r\n";
/// Last 8 bytes of every complete `.tsnap` file.
pub const TRAILER_MAGIC: [u8; 8] = *b"TSNAPEND";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 16;
/// Bytes of the fixed trailer.
pub const TRAILER_LEN: usize = 40;
/// Largest manifest accepted (a manifest is ~300 bytes per tensor).
pub const MAX_MANIFEST: u64 = 1 << 30;

pub(crate) fn ferr(context: impl Into<String>, msg: impl std::fmt::Display) -> Error {
    Error::Format {
        context: context.into(),
        msg: msg.to_string(),
    }
}

fn io(context: impl Into<String>, source: std::io::Error) -> Error {
    Error::Io {
        context: context.into(),
        source,
    }
}

/// Where a section lives and its checksum.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SectionRef {
    pub offset: u64,
    pub len: u64,
    pub crc32c: u32,
}

/// How the change mask of a delta is stored.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MaskCoding {
    /// `ceil(n / 32)` little-endian u32 words, the layout of [`crate::ops::bitmask`].
    Bits,
    /// Positions of the set bits as gaps (`pos - prev - 1`), Golomb-Rice coded with parameter
    /// `k`, LSB-first bit stream (see `ckpt/maskcode.rs`).
    Rice { k: u32 },
}

/// Encoding of one tensor. Section names in `TensorEntry::sections` are listed per variant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Encoding {
    /// Sections: `data` (the original bytes).
    Raw,
    /// Bitmask delta with the changed values stored raw. Sections: `mask`, `values`.
    /// `tau` = 0 is exact; `tau` > 0 drops changes with |new - base| <= tau (base kept).
    MaskRaw {
        mask: MaskCoding,
        tau: f32,
        count: u64,
    },
    /// Bitmask delta with changed values as zigzag differences of ordered bit patterns against
    /// the base, packed at a per-block width (`ops::codec::delta_encode`).
    /// Sections: `mask`, `widths`, `words`.
    MaskDelta {
        mask: MaskCoding,
        tau: f32,
        count: u64,
    },
    /// As [`Encoding::MaskDelta`], with the zigzag deltas Exp-Golomb coded (one order per
    /// block of 256, see `ckpt/valcode.rs`) instead of bit-packed. Sections: `mask`,
    /// `orders`, `stream`.
    MaskDeltaEg {
        mask: MaskCoding,
        tau: f32,
        count: u64,
    },
    /// Bitmask delta with the changed values' deltas (new - base) cluster-quantised to `bits`
    /// bits. Decode: `round_T(base + centroids[idx])`. Codebook index 0 is NOT reserved: the
    /// mask carries "unchanged". Sections: `mask`, `widths`, `words` (the packed indices).
    MaskQuant {
        mask: MaskCoding,
        tau: f32,
        count: u64,
        bits: u32,
        centroids: Vec<f32>,
    },
    /// Every element's delta cluster-quantised (no mask; for early training where most
    /// elements change). Index 0 not reserved. Sections: `widths`, `words`.
    QuantDelta { bits: u32, centroids: Vec<f32> },
    /// The weights themselves cluster-quantised (no base). Sections: `widths`, `words`.
    QuantWeights { bits: u32, centroids: Vec<f32> },
}

impl Encoding {
    /// Short name for tables.
    pub fn name(&self) -> String {
        match self {
            Encoding::Raw => "raw".into(),
            Encoding::MaskRaw { tau, .. } if *tau == 0.0 => "mask+raw".into(),
            Encoding::MaskRaw { .. } => "mask(tau)+raw".into(),
            Encoding::MaskDelta { tau, .. } if *tau == 0.0 => "mask+delta".into(),
            Encoding::MaskDelta { .. } => "mask(tau)+delta".into(),
            Encoding::MaskDeltaEg { tau, .. } if *tau == 0.0 => "mask+delta-eg".into(),
            Encoding::MaskDeltaEg { .. } => "mask(tau)+delta-eg".into(),
            Encoding::MaskQuant { tau, bits, .. } if *tau == 0.0 => format!("mask+q{bits}"),
            Encoding::MaskQuant { bits, .. } => format!("mask(tau)+q{bits}"),
            Encoding::QuantDelta { bits, .. } => format!("delta-q{bits}"),
            Encoding::QuantWeights { bits, .. } => format!("weights-q{bits}"),
        }
    }

    /// Whether decoding reproduces the original bits exactly.
    pub fn is_exact(&self) -> bool {
        match self {
            Encoding::Raw => true,
            Encoding::MaskRaw { tau, .. }
            | Encoding::MaskDelta { tau, .. }
            | Encoding::MaskDeltaEg { tau, .. } => *tau == 0.0,
            _ => false,
        }
    }

    /// Whether decoding needs the base.
    pub fn needs_base(&self) -> bool {
        !matches!(self, Encoding::Raw | Encoding::QuantWeights { .. })
    }

    /// The section names this encoding stores, in order.
    pub fn section_names(&self) -> &'static [&'static str] {
        match self {
            Encoding::Raw => &["data"],
            Encoding::MaskRaw { .. } => &["mask", "values"],
            Encoding::MaskDeltaEg { .. } => &["mask", "orders", "stream"],
            Encoding::MaskDelta { .. } | Encoding::MaskQuant { .. } => &["mask", "widths", "words"],
            Encoding::QuantDelta { .. } | Encoding::QuantWeights { .. } => &["widths", "words"],
        }
    }
}

/// What the policy measured for a tensor (shown by `inspect`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TensorStats {
    /// Fraction of elements whose bits changed against the base (None without a base).
    pub frac_changed: Option<f64>,
    /// RMS of (new - base) over the changed elements, in f64.
    pub delta_rms: Option<f64>,
    /// Largest |new - base|.
    pub delta_max: Option<f64>,
    /// Relative L2 error of the chosen encoding (see docs/ckpt.md).
    pub error: f64,
    /// Why the tensor was kept exact, if it was forced to be.
    pub exact_reason: Option<String>,
    /// Every candidate tried: (encoding name, stored bytes, relative L2 error; None if not
    /// finite).
    pub candidates: Vec<(String, u64, Option<f64>)>,
    /// Candidates skipped and why (e.g. an op not available on this backend).
    pub notes: Vec<String>,
}

/// One tensor of the original safetensors file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// safetensors dtype name (`BF16`, `F32`, `I64`, ...).
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Byte range in the original file's data area.
    pub data_offsets: [u64; 2],
    pub encoding: Encoding,
    pub sections: Vec<SectionRef>,
    /// xxh3-64 of the tensor bytes the decoder must produce.
    pub xxh3: u64,
    pub stats: TensorStats,
}

impl TensorEntry {
    /// Bytes stored for this tensor (all its sections).
    pub fn stored_bytes(&self) -> u64 {
        self.sections.iter().map(|s| s.len).sum()
    }
    /// Bytes of the tensor in the original file.
    pub fn raw_bytes(&self) -> u64 {
        self.data_offsets[1].saturating_sub(self.data_offsets[0])
    }
}

/// Identity of the base checkpoint a delta file was made against.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaseIdentity {
    /// xxh3-128 (hex) over every base tensor's name, dtype, shape and bytes, in file order.
    pub content_hash: String,
    pub tensors: u64,
}

/// The manifest: everything needed to rebuild the original file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub tool: String,
    pub base: Option<BaseIdentity>,
    pub error_budget: f64,
    pub keep_exact: Vec<String>,
    /// The original safetensors header (8-byte length + JSON), stored verbatim.
    pub st_header: SectionRef,
    /// Size of the original file.
    pub file_len: u64,
    /// xxh3-64 of the whole file the decoder must produce.
    pub file_xxh3: u64,
    /// Tensors in data-offset order.
    pub tensors: Vec<TensorEntry>,
}

impl Manifest {
    /// True when every tensor is stored exactly (decoding reproduces the original file).
    pub fn is_lossless(&self) -> bool {
        self.tensors.iter().all(|t| t.encoding.is_exact())
    }
}

/// A temporary path beside a destination file (same directory, so the final rename is atomic):
/// `.<name>.tmp-<pid>-<n>`, unique within the process. [`TempPath::persist`] renames it onto the
/// destination; dropped without that (an error on the way, or the rename failing) it deletes the
/// temporary file. So a failed write leaves neither a partial file in place of the destination
/// (an existing one stays as it was) nor a temporary file beside it.
pub(crate) struct TempPath {
    path: PathBuf,
    dest: PathBuf,
    persisted: bool,
}

impl TempPath {
    pub(crate) fn beside(op: &'static str, dest: &Path) -> Result<TempPath> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fname = dest
            .file_name()
            .ok_or_else(|| Error::invalid(op, format!("{} is not a file path", dest.display())))?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(TempPath {
            path: dir.join(format!(
                ".{}.tmp-{}-{n}",
                fname.to_string_lossy(),
                std::process::id()
            )),
            dest: dest.to_path_buf(),
            persisted: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Create (truncate) the temporary file.
    pub(crate) fn create(&self) -> Result<File> {
        File::create(&self.path).map_err(|e| io(format!("creating {}", self.path.display()), e))
    }

    /// Rename the temporary file onto the destination (the caller has flushed and synced it).
    pub(crate) fn persist(mut self) -> Result<()> {
        std::fs::rename(&self.path, &self.dest).map_err(|e| {
            io(
                format!(
                    "renaming {} to {}",
                    self.path.display(),
                    self.dest.display()
                ),
                e,
            )
        })?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Streams a `.tsnap` to a temporary file next to the destination; [`Writer::finish`] writes
/// the manifest and trailer, syncs, and renames. A writer dropped unfinished, or whose finish
/// fails, deletes the temporary file, so a failed compress leaves no `.tsnap` behind (and an
/// existing file at the destination as it was).
pub struct Writer {
    out: Option<BufWriter<File>>,
    tmp: TempPath,
    pos: u64,
}

impl Writer {
    pub fn create(dest: &Path) -> Result<Writer> {
        let tmp = TempPath::beside("ckpt", dest)?;
        let f = tmp.create()?;
        let mut w = Writer {
            out: Some(BufWriter::with_capacity(1 << 20, f)),
            tmp,
            pos: 0,
        };
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        w.write_all(&h)?;
        Ok(w)
    }

    /// The temporary path being written (for tests).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    fn write_all(&mut self, b: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("writer is open");
        out.write_all(b)
            .map_err(|e| io(format!("writing {}", self.tmp.path().display()), e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Append a section made of several byte slices; returns where it is and its checksum.
    pub fn section(&mut self, parts: &[&[u8]]) -> Result<SectionRef> {
        let offset = self.pos;
        let mut crc = 0u32;
        for p in parts {
            crc = crc32c::crc32c_append(crc, p);
            self.write_all(p)?;
        }
        Ok(SectionRef {
            offset,
            len: self.pos - offset,
            crc32c: crc,
        })
    }

    /// Write the manifest and trailer, flush, fsync and rename onto the destination.
    pub fn finish(mut self, manifest: &Manifest) -> Result<u64> {
        let json = serde_json::to_vec(manifest)
            .map_err(|e| ferr("tsnap: manifest", format!("cannot serialise: {e}")))?;
        let moff = self.pos;
        self.write_all(&json)?;
        let mut t = Vec::with_capacity(TRAILER_LEN);
        t.extend_from_slice(&moff.to_le_bytes());
        t.extend_from_slice(&(json.len() as u64).to_le_bytes());
        t.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
        t.extend_from_slice(&VERSION.to_le_bytes());
        let tcrc = crc32c::crc32c(&t);
        t.extend_from_slice(&tcrc.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&TRAILER_MAGIC);
        self.write_all(&t)?;
        let out = self.out.take().expect("writer is open");
        let tmp = self.tmp.path().display();
        let f = out
            .into_inner()
            .map_err(|e| io(format!("flushing {tmp}"), e.into_error()))?;
        f.sync_all().map_err(|e| io(format!("syncing {tmp}"), e))?;
        drop(f);
        // On an error above or in the rename, dropping `self.tmp` deletes the temporary file.
        self.tmp.persist()?;
        Ok(self.pos)
    }
}

/// A parsed, validated `.tsnap` held in memory or mapped from disk.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pub manifest: Manifest,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

impl<'a> Reader<'a> {
    /// Parse and validate header, trailer and manifest of `bytes` (a whole `.tsnap` file).
    /// Section checksums are checked when a section is read ([`Reader::section`]); the
    /// manifest's structure (every section inside the file, lengths consistent with shapes
    /// and dtypes) is checked here.
    pub fn new(bytes: &'a [u8]) -> Result<Reader<'a>> {
        let len = bytes.len() as u64;
        if bytes.len() < HEADER_LEN + TRAILER_LEN {
            return Err(ferr(
                "tsnap: header",
                format!("file is {len} bytes, shorter than header + trailer: truncated or not a .tsnap file"),
            ));
        }
        if bytes[..8] != MAGIC {
            return Err(ferr("tsnap: header", "wrong magic: not a .tsnap file"));
        }
        let v = u32_at(bytes, 8);
        if v != VERSION {
            return Err(ferr(
                "tsnap: header",
                format!("unknown format version {v} (this build reads version {VERSION})"),
            ));
        }
        if u32_at(bytes, 12) as usize != HEADER_LEN {
            return Err(ferr("tsnap: header", "bad header length"));
        }
        let t = &bytes[bytes.len() - TRAILER_LEN..];
        if t[32..40] != TRAILER_MAGIC {
            return Err(ferr(
                "tsnap: trailer",
                "missing trailer magic: the file is truncated or was not completely written",
            ));
        }
        if crc32c::crc32c(&t[..24]) != u32_at(t, 24) || u32_at(t, 28) != 0 {
            return Err(ferr("tsnap: trailer", "checksum mismatch"));
        }
        if u32_at(t, 20) != VERSION {
            return Err(ferr("tsnap: trailer", "version differs from the header's"));
        }
        let (moff, mlen, mcrc) = (u64_at(t, 0), u64_at(t, 8), u32_at(t, 16));
        let body_end = len - TRAILER_LEN as u64;
        if moff < HEADER_LEN as u64
            || mlen > MAX_MANIFEST
            || moff.checked_add(mlen) != Some(body_end)
        {
            return Err(ferr(
                "tsnap: trailer",
                format!(
                    "manifest at {moff}+{mlen} does not end where the trailer starts ({body_end})"
                ),
            ));
        }
        let m = &bytes[moff as usize..body_end as usize];
        if crc32c::crc32c(m) != mcrc {
            return Err(ferr("tsnap: manifest", "checksum mismatch"));
        }
        let manifest: Manifest = serde_json::from_slice(m)
            .map_err(|e| ferr("tsnap: manifest", format!("cannot parse: {e}")))?;
        validate(&manifest, moff)?;
        Ok(Reader { bytes, manifest })
    }

    /// The bytes of a section after checking its checksum. `what` names it in errors.
    pub fn section(&self, s: &SectionRef, what: &str) -> Result<&'a [u8]> {
        // Bounds were validated in `new`; re-check cheaply anyway.
        let b = usize::try_from(s.offset)
            .ok()
            .zip(usize::try_from(s.len).ok())
            .and_then(|(o, l)| self.bytes.get(o..o.checked_add(l)?))
            .ok_or_else(|| ferr(format!("tsnap: {what}"), "section lies outside the file"))?;
        if crc32c::crc32c(b) != s.crc32c {
            return Err(ferr(format!("tsnap: {what}"), "checksum mismatch"));
        }
        Ok(b)
    }
}

/// Element size of a safetensors dtype name, None for sub-byte or unknown dtypes.
pub fn dtype_size(name: &str) -> Option<u64> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ"
        | "F8_E5M2FNUZ" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

/// Structural checks of a manifest: sections inside the data area and not overlapping the
/// manifest, tensors contiguous and in order, byte lengths consistent with dtype and shape,
/// encodings with the right number of sections and sane parameters.
fn validate(m: &Manifest, data_end: u64) -> Result<()> {
    let inside = |s: &SectionRef, what: &str| -> Result<()> {
        match s.offset.checked_add(s.len) {
            Some(e) if s.offset >= HEADER_LEN as u64 && e <= data_end => Ok(()),
            _ => Err(ferr(
                format!("tsnap: {what}"),
                format!(
                    "section {}+{} lies outside the data area (16..{data_end})",
                    s.offset, s.len
                ),
            )),
        }
    };
    if m.format_version != VERSION {
        return Err(ferr(
            "tsnap: manifest",
            "format version differs from the header's",
        ));
    }
    inside(&m.st_header, "safetensors header section")?;
    if m.st_header.len < 8 {
        return Err(ferr("tsnap: safetensors header section", "too short"));
    }
    let mut pos = 0u64;
    for t in &m.tensors {
        let ctx = format!("tsnap: tensor '{}'", t.name);
        if t.data_offsets[0] != pos || t.data_offsets[1] < pos {
            return Err(ferr(&ctx, "tensor data offsets are not contiguous"));
        }
        pos = t.data_offsets[1];
        let bytes = t.raw_bytes();
        if let Some(es) = dtype_size(&t.dtype) {
            let n = t
                .shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_mul(es));
            if n != Some(bytes) {
                return Err(ferr(&ctx, "byte length disagrees with dtype and shape"));
            }
        }
        let names = t.encoding.section_names();
        if t.sections.len() != names.len() {
            return Err(ferr(
                &ctx,
                format!(
                    "encoding {} needs {} sections, manifest lists {}",
                    t.encoding.name(),
                    names.len(),
                    t.sections.len()
                ),
            ));
        }
        for (s, n) in t.sections.iter().zip(names) {
            inside(s, &format!("tensor '{}' section '{n}'", t.name))?;
        }
        if !matches!(t.encoding, Encoding::Raw)
            && !matches!(t.dtype.as_str(), "F32" | "F16" | "BF16")
        {
            return Err(ferr(
                &ctx,
                format!("encoding {} on dtype {}", t.encoding.name(), t.dtype),
            ));
        }
        if let Encoding::Raw = t.encoding {
            if t.sections[0].len != bytes {
                return Err(ferr(
                    &ctx,
                    "raw section length differs from the tensor's size",
                ));
            }
        }
    }
    let st_len = m.st_header.len;
    if st_len.checked_add(pos) != Some(m.file_len) {
        return Err(ferr(
            "tsnap: manifest",
            "header plus tensor bytes do not add up to the original file length",
        ));
    }
    Ok(())
}
