//! The standard 3D Gaussian Splatting `.ply` file, as the INRIA code (`save_ply` / `load_ply`)
//! writes and reads it.
//!
//! # Format
//!
//! ```text
//! ply
//! format binary_little_endian 1.0
//! element vertex N
//! property float x        (and y, z)
//! property float nx       (and ny, nz: written as zeros, optional on read)
//! property float f_dc_0   (and f_dc_1, f_dc_2: the degree-0 SH coefficient of R, G, B)
//! property float f_rest_0 ... f_rest_{M-1}
//! property float opacity  (the logit: opacity = sigmoid(value))
//! property float scale_0  (and scale_1, scale_2: natural log of the linear scale)
//! property float rot_0    (and rot_1, rot_2, rot_3: the quaternion w x y z, not necessarily unit)
//! end_header
//! <N records of the properties, in header order>
//! ```
//!
//! `M = 3·((d+1)² − 1)` for the SH degree `d` in `0..=3` (0, 9, 24 or 45). The `f_rest`
//! coefficients are stored channel-major, as INRIA's `save_ply` does: all `K − 1` higher-order
//! coefficients of R, then those of G, then those of B, so `f_rest_{c·(K−1) + (k−1)}` is
//! coefficient `k` (1 ≤ k < K) of channel `c`.
//!
//! # What the reader accepts
//!
//! - `binary_little_endian 1.0` (what every 3DGS tool writes), `binary_big_endian 1.0` and
//!   `ascii 1.0`.
//! - Properties in any order, found by name; any scalar PLY type (`float`, `double`, the integer
//!   types, and their `float32` / `uint8` / ... aliases). Values are converted to `f32`.
//! - Unknown properties of the vertex element are skipped, and so are other elements: those
//!   after `vertex` are ignored; those before it are skipped when they have no list properties.
//! - `nx ny nz` are optional (they are not used).
//!
//! Every read error is an `Error::Format` with context `"gs.ply"` and a message naming the
//! problem (a `write_ply` error is an `Error::InvalidArgument` of `gs.ply`): the bad magic, a missing `end_header`, an unsupported format, the missing property,
//! the vertex count against the bytes there are, or the vertex and property holding a non-finite
//! value.

use crate::error::{Error, Result};

const OP: &str = "gs.ply";

/// A set of 3D Gaussians as stored in a 3DGS `.ply`: the raw (pre-activation) parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Splats {
    /// Centres `[N][x, y, z]`.
    pub means: Vec<[f32; 3]>,
    /// Rotations `[N][w, x, y, z]` = `rot_0..rot_3`, not necessarily unit.
    pub quats: Vec<[f32; 4]>,
    /// Natural log of the per-axis scales, `[N][3]` = `scale_0..scale_2`.
    pub log_scales: Vec<[f32; 3]>,
    /// Opacity logits `[N]` (opacity = sigmoid(logit)).
    pub opacity_logits: Vec<f32>,
    /// SH coefficients, `[N, K, 3]` row-major (coefficient-major within a Gaussian: index
    /// `(n·K + k)·3 + c`), `K = (degree + 1)²`; `k = 0` is `f_dc_c`.
    pub sh: Vec<f32>,
    /// SH degree, 0..=3.
    pub degree: u32,
}

impl Splats {
    /// Number of Gaussians (the length of `means`).
    pub fn len(&self) -> usize {
        self.means.len()
    }

    /// True when there are no Gaussians.
    pub fn is_empty(&self) -> bool {
        self.means.is_empty()
    }

    /// Number of SH coefficients per channel, `(degree + 1)²`.
    pub fn sh_coeffs(&self) -> usize {
        sh_coeffs(self.degree)
    }
}

fn sh_coeffs(degree: u32) -> usize {
    let d = degree as usize + 1;
    d * d
}

/// Body encoding named on the `format` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ascii,
    BinaryLe,
    BinaryBe,
}

/// A scalar PLY type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl Scalar {
    fn parse(s: &str) -> Option<Scalar> {
        Some(match s {
            "char" | "int8" => Scalar::I8,
            "uchar" | "uint8" => Scalar::U8,
            "short" | "int16" => Scalar::I16,
            "ushort" | "uint16" => Scalar::U16,
            "int" | "int32" => Scalar::I32,
            "uint" | "uint32" => Scalar::U32,
            "float" | "float32" => Scalar::F32,
            "double" | "float64" => Scalar::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Scalar::I8 | Scalar::U8 => 1,
            Scalar::I16 | Scalar::U16 => 2,
            Scalar::I32 | Scalar::U32 | Scalar::F32 => 4,
            Scalar::F64 => 8,
        }
    }

    /// Decodes one value from exactly `self.size()` bytes.
    fn decode(self, b: &[u8], fmt: Format) -> f64 {
        macro_rules! get {
            ($t:ty, $n:expr) => {{
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                if fmt == Format::BinaryBe {
                    <$t>::from_be_bytes(a) as f64
                } else {
                    <$t>::from_le_bytes(a) as f64
                }
            }};
        }
        match self {
            Scalar::I8 => get!(i8, 1),
            Scalar::U8 => get!(u8, 1),
            Scalar::I16 => get!(i16, 2),
            Scalar::U16 => get!(u16, 2),
            Scalar::I32 => get!(i32, 4),
            Scalar::U32 => get!(u32, 4),
            Scalar::F32 => get!(f32, 4),
            Scalar::F64 => get!(f64, 8),
        }
    }
}

/// One property of an element.
#[derive(Debug, Clone)]
struct Property {
    name: String,
    /// `None` for a list property.
    ty: Option<Scalar>,
}

/// One element declared in the header.
#[derive(Debug, Clone)]
struct Element {
    name: String,
    count: u64,
    props: Vec<Property>,
}

impl Element {
    fn has_list(&self) -> bool {
        self.props.iter().any(|p| p.ty.is_none())
    }

    /// Bytes per record (binary), for an element without list properties.
    fn stride(&self) -> usize {
        self.props
            .iter()
            .filter_map(|p| p.ty)
            .map(Scalar::size)
            .sum()
    }
}

/// The parsed header and the offset where the body starts.
struct Header {
    format: Format,
    elements: Vec<Element>,
    body: usize,
}

fn err(msg: impl std::fmt::Display) -> Error {
    Error::Format {
        context: OP.into(),
        msg: msg.to_string(),
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header> {
    let magic_len = if bytes.starts_with(b"ply\n") {
        4
    } else if bytes.starts_with(b"ply\r\n") {
        5
    } else {
        let shown: String = bytes
            .iter()
            .take(8)
            .map(|&c| if c.is_ascii_graphic() { c as char } else { '.' })
            .collect();
        return Err(err(format!(
            "bad magic: a PLY file starts with the line \"ply\", this one starts with {shown:?}"
        )));
    };
    // Locate the end of the header first, so that a file without one gets that error rather
    // than a complaint about binary bytes read as header lines.
    let marker = b"\nend_header";
    let Some(pos) = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .filter(|&p| p + 1 >= magic_len)
    else {
        return Err(err("missing end_header: the header never ends"));
    };
    let after = pos + marker.len();
    let body = if bytes[after..].starts_with(b"\n") {
        after + 1
    } else if bytes[after..].starts_with(b"\r\n") {
        after + 2
    } else {
        return Err(err(
            "missing end_header: \"end_header\" is not followed by a line break",
        ));
    };
    let text = std::str::from_utf8(&bytes[magic_len..pos + 1])
        .map_err(|_| err("the header is not valid ASCII text"))?;

    let mut format = None;
    let mut elements: Vec<Element> = Vec::new();
    for (ln, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = ln + 2;
        let mut words = line.split_whitespace();
        let Some(kw) = words.next() else { continue };
        match kw {
            "comment" | "obj_info" => {}
            "format" => {
                if format.is_some() {
                    return Err(err(format!("header line {lineno}: a second format line")));
                }
                let kind = words.next().unwrap_or("");
                let version = words.next().unwrap_or("");
                let f = match kind {
                    "binary_little_endian" => Format::BinaryLe,
                    "binary_big_endian" => Format::BinaryBe,
                    "ascii" => Format::Ascii,
                    _ => {
                        return Err(err(format!(
                            "unsupported format {kind:?} (expected binary_little_endian, \
                             binary_big_endian or ascii)"
                        )))
                    }
                };
                if version != "1.0" {
                    return Err(err(format!(
                        "unsupported format version {version:?} (expected 1.0)"
                    )));
                }
                format = Some(f);
            }
            "element" => {
                let (Some(name), Some(count)) = (words.next(), words.next()) else {
                    return Err(err(format!(
                        "header line {lineno}: expected \"element NAME COUNT\", got {line:?}"
                    )));
                };
                let count: u64 = count.parse().map_err(|_| {
                    err(format!(
                        "header line {lineno}: element {name} has a bad count {count:?}"
                    ))
                })?;
                if elements.iter().any(|e| e.name == name) {
                    return Err(err(format!(
                        "header line {lineno}: element {name} declared twice"
                    )));
                }
                elements.push(Element {
                    name: name.to_string(),
                    count,
                    props: Vec::new(),
                });
            }
            "property" => {
                let Some(el) = elements.last_mut() else {
                    return Err(err(format!(
                        "header line {lineno}: a property before any element"
                    )));
                };
                let Some(ty) = words.next() else {
                    return Err(err(format!("header line {lineno}: empty property line")));
                };
                let (ty, name) = if ty == "list" {
                    // property list COUNT_TYPE ITEM_TYPE NAME
                    let (Some(_), Some(_), Some(name)) = (words.next(), words.next(), words.next())
                    else {
                        return Err(err(format!(
                            "header line {lineno}: bad list property {line:?}"
                        )));
                    };
                    (None, name)
                } else {
                    let Some(s) = Scalar::parse(ty) else {
                        return Err(err(format!(
                            "header line {lineno}: unknown property type {ty:?}"
                        )));
                    };
                    let Some(name) = words.next() else {
                        return Err(err(format!(
                            "header line {lineno}: property without a name"
                        )));
                    };
                    (Some(s), name)
                };
                if el.props.iter().any(|p| p.name == name) {
                    return Err(err(format!(
                        "header line {lineno}: property {name} of element {} declared twice",
                        el.name
                    )));
                }
                el.props.push(Property {
                    name: name.to_string(),
                    ty,
                });
            }
            _ => return Err(err(format!("header line {lineno}: unknown keyword {kw:?}"))),
        }
    }
    let Some(format) = format else {
        return Err(err("the header has no format line"));
    };
    Ok(Header {
        format,
        elements,
        body,
    })
}

/// Where a vertex property's value goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Mean(usize),
    Dc(usize),
    Rest(usize),
    Opacity,
    Scale(usize),
    Rot(usize),
}

fn slot_for(name: &str) -> Option<Slot> {
    Some(match name {
        "x" => Slot::Mean(0),
        "y" => Slot::Mean(1),
        "z" => Slot::Mean(2),
        "f_dc_0" => Slot::Dc(0),
        "f_dc_1" => Slot::Dc(1),
        "f_dc_2" => Slot::Dc(2),
        "opacity" => Slot::Opacity,
        "scale_0" => Slot::Scale(0),
        "scale_1" => Slot::Scale(1),
        "scale_2" => Slot::Scale(2),
        "rot_0" => Slot::Rot(0),
        "rot_1" => Slot::Rot(1),
        "rot_2" => Slot::Rot(2),
        "rot_3" => Slot::Rot(3),
        _ => {
            let idx = name.strip_prefix("f_rest_")?;
            // Only canonical decimal indices ("f_rest_7", not "f_rest_07" or "f_rest_+7").
            if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            if idx.len() > 1 && idx.starts_with('0') {
                return None;
            }
            Slot::Rest(idx.parse().ok()?)
        }
    })
}

const REQUIRED: [&str; 14] = [
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
    "rot_0", "rot_1", "rot_2", "rot_3",
];

/// Reads a 3DGS `.ply` file from memory. See the module docs for what is accepted.
pub fn read_ply(bytes: &[u8]) -> Result<Splats> {
    let header = parse_header(bytes)?;
    let Some(vi) = header.elements.iter().position(|e| e.name == "vertex") else {
        return Err(err("the header declares no \"element vertex\""));
    };
    let vertex = &header.elements[vi];
    if let Some(p) = vertex.props.iter().find(|p| p.ty.is_none()) {
        return Err(err(format!(
            "vertex property {} is a list; 3DGS vertex properties are scalars",
            p.name
        )));
    }
    for name in REQUIRED {
        if !vertex.props.iter().any(|p| p.name == name) {
            return Err(err(format!("missing required vertex property {name}")));
        }
    }
    // f_rest_*: indices 0..M with M = 3((d+1)^2 - 1).
    let rest_idx: Vec<usize> = vertex
        .props
        .iter()
        .filter_map(|p| match slot_for(&p.name) {
            Some(Slot::Rest(i)) => Some(i),
            _ => None,
        })
        .collect();
    let rest_count = rest_idx
        .iter()
        .map(|&i| i.saturating_add(1))
        .max()
        .unwrap_or(0);
    let Some(degree) = (0u32..=3).find(|&d| 3 * (sh_coeffs(d) - 1) == rest_count) else {
        return Err(err(format!(
            "the highest f_rest property is f_rest_{}, so there are {rest_count} f_rest \
             coefficients; expected 0, 9, 24 or 45 (3·((d+1)²−1) for SH degree d = 0..=3)",
            rest_count.saturating_sub(1)
        )));
    };
    if rest_idx.len() != rest_count {
        let missing = (0..rest_count).find(|i| !rest_idx.contains(i)).unwrap_or(0);
        return Err(err(format!(
            "missing required vertex property f_rest_{missing} (SH degree {degree} needs \
             f_rest_0..f_rest_{})",
            rest_count - 1
        )));
    }
    let k = sh_coeffs(degree);

    // The columns to decode: (byte offset within a record, type, slot, property index).
    let mut cols = Vec::new();
    let mut off = 0usize;
    for (pi, p) in vertex.props.iter().enumerate() {
        let ty = p.ty.unwrap_or(Scalar::F32);
        if let Some(slot) = slot_for(&p.name) {
            cols.push((off, ty, slot, pi));
        }
        off += ty.size();
    }
    let stride = off;
    let nprops = vertex.props.len();

    let body = &bytes[header.body..];
    let count = vertex.count;

    // Decoded values, one f64 per column per vertex, gathered by the format-specific readers.
    let n: usize;
    let mut values: Vec<f64>;
    match header.format {
        Format::BinaryLe | Format::BinaryBe => {
            // Skip the elements before the vertex element.
            let mut start = 0usize;
            for e in &header.elements[..vi] {
                if e.has_list() {
                    return Err(err(format!(
                        "element {} comes before vertex and has list properties; cannot skip it",
                        e.name
                    )));
                }
                let size = (e.stride() as u64)
                    .checked_mul(e.count)
                    .and_then(|s| usize::try_from(s).ok().and_then(|s| s.checked_add(start)));
                match size {
                    Some(s) if s <= body.len() => start = s,
                    _ => {
                        return Err(err(format!(
                            "short file: element {} ({} records) before vertex does not fit in \
                             the {} body bytes",
                            e.name,
                            e.count,
                            body.len()
                        )))
                    }
                }
            }
            let avail = body.len() - start;
            check_count(count, avail, stride.max(1), "bytes")?;
            n = count as usize; // count <= avail, so it fits in usize
            let need = n * stride; // checked by check_count
            if need > avail {
                let complete = avail / stride;
                return Err(err(format!(
                    "short file: {n} vertices of {stride} bytes need {need} bytes, the body has \
                     {avail}; vertex {complete} (of 0..{n}) is incomplete"
                )));
            }
            let data = &body[start..start + need];
            values = Vec::with_capacity(n * cols.len());
            for rec in data.chunks_exact(stride.max(1)).take(n) {
                for &(o, ty, _, _) in &cols {
                    values.push(ty.decode(&rec[o..o + ty.size()], header.format));
                }
            }
        }
        Format::Ascii => {
            let text = std::str::from_utf8(body)
                .map_err(|_| err("the ascii body is not valid UTF-8 text"))?;
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            for e in &header.elements[..vi] {
                // One record per line in ascii PLY, list properties included.
                for r in 0..e.count {
                    if lines.next().is_none() {
                        return Err(err(format!(
                            "short file: element {} before vertex ends at record {r} of {}",
                            e.name, e.count
                        )));
                    }
                }
            }
            // Every value takes at least one character and one separator.
            check_count(count, body.len() + 1, 2 * nprops, "characters")?;
            n = count as usize;
            // Grown as values are parsed, so a large claimed count costs nothing until the
            // body runs out.
            values = Vec::new();
            let mut rec: Vec<&str> = Vec::with_capacity(nprops);
            for v in 0..n {
                let Some(line) = lines.next() else {
                    return Err(err(format!(
                        "short file: the ascii body ends before vertex {v} (of 0..{n})"
                    )));
                };
                rec.clear();
                rec.extend(line.split_whitespace());
                if rec.len() < nprops {
                    return Err(err(format!(
                        "short file: vertex {v} has {} values, the header declares {nprops}",
                        rec.len()
                    )));
                }
                for &(_, _, _, pi) in &cols {
                    let tok = rec[pi];
                    let x: f64 = tok.parse().map_err(|_| {
                        err(format!(
                            "vertex {v}, property {}: {tok:?} is not a number",
                            vertex.props[pi].name
                        ))
                    })?;
                    values.push(x);
                }
            }
        }
    }

    let mut out = Splats {
        means: vec![[0.0; 3]; n],
        quats: vec![[0.0; 4]; n],
        log_scales: vec![[0.0; 3]; n],
        opacity_logits: vec![0.0; n],
        sh: vec![0.0; n * k * 3],
        degree,
    };
    let ncols = cols.len();
    for v in 0..n {
        for (ci, &(_, _, slot, pi)) in cols.iter().enumerate() {
            let x = values[v * ncols + ci] as f32;
            if !x.is_finite() {
                return Err(err(format!(
                    "non-finite value at vertex {v}, property {}: {} (as f32)",
                    vertex.props[pi].name,
                    values[v * ncols + ci]
                )));
            }
            match slot {
                Slot::Mean(c) => out.means[v][c] = x,
                Slot::Dc(c) => out.sh[v * k * 3 + c] = x,
                Slot::Rest(i) => {
                    let c = i / (k - 1);
                    let kk = 1 + i % (k - 1);
                    out.sh[(v * k + kk) * 3 + c] = x;
                }
                Slot::Opacity => out.opacity_logits[v] = x,
                Slot::Scale(c) => out.log_scales[v][c] = x,
                Slot::Rot(c) => out.quats[v][c] = x,
            }
        }
    }
    Ok(out)
}

/// Rejects a vertex count that could not possibly fit: more vertices than `avail` units (bytes or
/// characters), or a record size whose product with the count overflows.
fn check_count(count: u64, avail: usize, per_vertex: usize, unit: &str) -> Result<()> {
    let fits_at_all = usize::try_from(count).map(|c| c <= avail).unwrap_or(false);
    let product = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(per_vertex));
    if !fits_at_all || product.is_none() {
        return Err(err(format!(
            "vertex count {count} is absurd for a body of {avail} {unit} \
             ({per_vertex} {unit} per vertex)"
        )));
    }
    Ok(())
}

/// Writes `s` as a binary little-endian 3DGS `.ply` (the INRIA layout: normals written as zeros,
/// `f_rest` channel-major). Errors when the arrays disagree in length, the degree is above 3, or
/// a value is not finite (the reader would refuse it).
pub fn write_ply(s: &Splats) -> Result<Vec<u8>> {
    let n = s.means.len();
    if s.degree > 3 {
        return Err(Error::invalid(
            OP,
            format!("SH degree {} is above 3", s.degree),
        ));
    }
    let k = sh_coeffs(s.degree);
    let lens = [
        ("quats", s.quats.len(), n),
        ("log_scales", s.log_scales.len(), n),
        ("opacity_logits", s.opacity_logits.len(), n),
        ("sh", s.sh.len(), n.saturating_mul(k * 3)),
    ];
    for (name, got, want) in lens {
        if got != want {
            return Err(Error::invalid(
                OP,
                format!(
                    "{name} has length {got}, expected {want} for {n} Gaussians of SH degree {}",
                    s.degree
                ),
            ));
        }
    }
    let rest = 3 * (k - 1);
    let mut names: Vec<String> = [
        "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend((0..rest).map(|i| format!("f_rest_{i}")));
    names.extend(
        [
            "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut out = String::from("ply\nformat binary_little_endian 1.0\n");
    out.push_str(&format!("element vertex {n}\n"));
    for name in &names {
        out.push_str(&format!("property float {name}\n"));
    }
    out.push_str("end_header\n");
    let mut bytes = out.into_bytes();
    bytes.reserve(n * names.len() * 4);
    let mut rec: Vec<f32> = Vec::with_capacity(names.len());
    for v in 0..n {
        rec.clear();
        rec.extend_from_slice(&s.means[v]);
        rec.extend_from_slice(&[0.0; 3]);
        let sh = &s.sh[v * k * 3..(v + 1) * k * 3];
        rec.extend((0..3).map(|c| sh[c]));
        for c in 0..3 {
            rec.extend((1..k).map(|kk| sh[kk * 3 + c]));
        }
        rec.push(s.opacity_logits[v]);
        rec.extend_from_slice(&s.log_scales[v]);
        rec.extend_from_slice(&s.quats[v]);
        for (x, name) in rec.iter().zip(&names) {
            if !x.is_finite() {
                return Err(Error::invalid(
                    OP,
                    format!("non-finite value at vertex {v}, property {name}: {x}"),
                ));
            }
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random splat set (xorshift), with distinct values everywhere so
    /// that any misplaced coefficient shows.
    fn sample(n: usize, degree: u32) -> Splats {
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (n as u64) ^ ((degree as u64) << 40);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32
        };
        let k = sh_coeffs(degree);
        Splats {
            means: (0..n).map(|_| [next(), next(), next()]).collect(),
            quats: (0..n).map(|_| [next(), next(), next(), next()]).collect(),
            log_scales: (0..n).map(|_| [next(), next(), next()]).collect(),
            opacity_logits: (0..n).map(|_| next()).collect(),
            sh: (0..n * k * 3).map(|_| next()).collect(),
            degree,
        }
    }

    fn msg(r: Result<Splats>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => {
                let s = e.to_string();
                assert!(s.starts_with("gs.ply: "), "{s}");
                s
            }
        }
    }

    /// Builds a file from header property lines (type, name) and rows of f64 values, each
    /// written in its property's type.
    fn build(format: &str, props: &[(&str, &str)], rows: &[Vec<f64>]) -> Vec<u8> {
        let mut h = format!("ply\nformat {format} 1.0\ncomment hand-built\n");
        h.push_str(&format!("element vertex {}\n", rows.len()));
        for (t, name) in props {
            h.push_str(&format!("property {t} {name}\n"));
        }
        h.push_str("end_header\n");
        let mut b = h.into_bytes();
        for row in rows {
            assert_eq!(row.len(), props.len());
            for ((t, _), &x) in props.iter().zip(row) {
                match *t {
                    "float" => b.extend_from_slice(&(x as f32).to_le_bytes()),
                    "double" => b.extend_from_slice(&x.to_le_bytes()),
                    "uchar" => b.push(x as u8),
                    "int" => b.extend_from_slice(&(x as i32).to_le_bytes()),
                    _ => unreachable!(),
                }
            }
        }
        b
    }

    fn standard_props(degree: u32) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&str, String)> = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1"]
            .iter()
            .map(|s| ("float", s.to_string()))
            .collect();
        v.push(("float", "f_dc_2".into()));
        for i in 0..3 * (sh_coeffs(degree) - 1) {
            v.push(("float", format!("f_rest_{i}")));
        }
        for s in [
            "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
        ] {
            v.push(("float", s.to_string()));
        }
        v
    }

    fn without(props: &[(&'static str, String)], name: &str) -> Vec<(&'static str, String)> {
        props.iter().filter(|p| p.1 != name).cloned().collect()
    }

    fn refs<'a>(p: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        p.iter().map(|(t, n)| (*t, n.as_str())).collect()
    }

    #[test]
    fn round_trip_degree_0_and_3() {
        for degree in [0, 1, 2, 3] {
            let s = sample(37, degree);
            let b = write_ply(&s).unwrap();
            let k = sh_coeffs(degree);
            // 14 required + 3 normals + 3(K-1) rest, 4 bytes each.
            let rec = 4 * (17 + 3 * (k - 1));
            assert!(b.len() >= 37 * rec);
            let body = b.len() - 37 * rec;
            assert!(b[..body].ends_with(b"end_header\n"));
            let r = read_ply(&b).unwrap();
            assert_eq!(r, s, "degree {degree}");
        }
        // Empty set.
        let e = sample(0, 3);
        assert_eq!(read_ply(&write_ply(&e).unwrap()).unwrap(), e);
    }

    #[test]
    fn written_layout_is_inria() {
        // One degree-1 Gaussian with sh[k][c] = 10k + c: f_rest channel-major means
        // f_rest_0..2 = R coefficients 1..3 = 10, 20, 30; f_rest_3..5 = G = 11, 21, 31; ...
        let sh: Vec<f32> = (0..4)
            .flat_map(|k| (0..3).map(move |c| (10 * k + c) as f32))
            .collect();
        let s = Splats {
            means: vec![[1.0, 2.0, 3.0]],
            quats: vec![[0.5, 0.6, 0.7, 0.8]],
            log_scales: vec![[-1.0, -2.0, -3.0]],
            opacity_logits: vec![0.25],
            sh,
            degree: 1,
        };
        let b = write_ply(&s).unwrap();
        let text = String::from_utf8_lossy(&b);
        assert!(text.starts_with(
            "ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
        ));
        let body_at = text.find("end_header\n").unwrap() + "end_header\n".len();
        let vals: Vec<f32> = b[body_at..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let want = [
            1.0, 2.0, 3.0, 0.0, 0.0, 0.0, // x y z nx ny nz
            0.0, 1.0, 2.0, // f_dc
            10.0, 20.0, 30.0, 11.0, 21.0, 31.0, 12.0, 22.0, 32.0, // f_rest
            0.25, -1.0, -2.0, -3.0, 0.5, 0.6, 0.7, 0.8,
        ];
        assert_eq!(vals, want);
    }

    #[test]
    fn shuffled_order_doubles_and_extra_property() {
        // Degree 1 (9 f_rest), properties shuffled, some doubles, an extra uchar "red" and an
        // extra int "id", no normals.
        let mut props: Vec<(&str, String)> = vec![
            ("float", "rot_2".into()),
            ("uchar", "red".into()),
            ("double", "z".into()),
            ("float", "f_rest_8".into()),
            ("float", "opacity".into()),
            ("double", "x".into()),
            ("float", "scale_1".into()),
            ("float", "f_dc_2".into()),
            ("int", "id".into()),
            ("float", "y".into()),
            ("float", "rot_0".into()),
            ("float", "scale_2".into()),
            ("float", "f_dc_0".into()),
            ("float", "rot_3".into()),
            ("float", "scale_0".into()),
            ("float", "f_dc_1".into()),
            ("float", "rot_1".into()),
        ];
        for i in (0..8).rev() {
            props.push(("double", format!("f_rest_{i}")));
        }
        // Value of each property: a code derived from its name.
        let value = |name: &str| -> f64 {
            match name {
                "x" => 1.5,
                "y" => -2.5,
                "z" => 3.25,
                "opacity" => -0.75,
                "red" => 200.0,
                "id" => 12345.0,
                _ => {
                    let (base, idx) = name.rsplit_once('_').unwrap();
                    let i: f64 = idx.parse().unwrap();
                    match base {
                        "f_dc" => 100.0 + i,
                        "f_rest" => 200.0 + i,
                        "scale" => -10.0 - i,
                        "rot" => 0.1 * (i + 1.0),
                        _ => unreachable!(),
                    }
                }
            }
        };
        let row0: Vec<f64> = props.iter().map(|(_, n)| value(n)).collect();
        let row1: Vec<f64> = row0.iter().map(|v| v * 2.0).collect();
        let b = build("binary_little_endian", &refs(&props), &[row0, row1]);
        let s = read_ply(&b).unwrap();
        assert_eq!(s.degree, 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.means, vec![[1.5, -2.5, 3.25], [3.0, -5.0, 6.5]]);
        assert_eq!(s.opacity_logits, vec![-0.75, -1.5]);
        assert_eq!(s.log_scales[0], [-10.0, -11.0, -12.0]);
        assert_eq!(s.quats[0], [0.1, 0.2, 0.3, 0.4]);
        assert_eq!(s.quats[1], [0.2, 0.4, 0.6, 0.8]);
        // sh[0][k][c]: k = 0 is f_dc_c; k >= 1 is f_rest_{c*3 + k-1}.
        for k in 0..4 {
            for c in 0..3 {
                let want = if k == 0 {
                    100.0 + c as f32
                } else {
                    200.0 + (c * 3 + k - 1) as f32
                };
                assert_eq!(s.sh[k * 3 + c], want, "k {k} c {c}");
                assert_eq!(s.sh[12 + k * 3 + c], 2.0 * want);
            }
        }
        // The same file in ascii and big-endian reads the same.
        let mut a = String::from("ply\nformat ascii 1.0\nelement vertex 2\n");
        for (t, n) in &props {
            a.push_str(&format!("property {t} {n}\n"));
        }
        a.push_str("end_header\n");
        for m in [1.0, 2.0] {
            let vals: Vec<String> = props
                .iter()
                .map(|(_, n)| (value(n) * m).to_string())
                .collect();
            a.push_str(&vals.join(" "));
            a.push('\n');
        }
        assert_eq!(read_ply(a.as_bytes()).unwrap(), s);
    }

    #[test]
    fn other_elements_are_skipped() {
        let s = sample(3, 0);
        let std = write_ply(&s).unwrap();
        let text = String::from_utf8_lossy(&std).to_string();
        let at = text.find("element vertex").unwrap();
        let end = text.find("end_header\n").unwrap();
        let body_at = end + 11;
        let mut b = Vec::new();
        b.extend_from_slice(&std[..at]);
        // An element before the vertex element (2 records of 8 bytes) ...
        b.extend_from_slice(b"element camera 2\nproperty double f\n");
        b.extend_from_slice(&std[at..end]);
        // ... and one after it, with a list property.
        b.extend_from_slice(b"element face 1\nproperty list uchar int vertex_indices\n");
        b.extend_from_slice(&std[end..body_at]);
        b.extend_from_slice(&[0xAB; 16]);
        b.extend_from_slice(&std[body_at..]);
        b.extend_from_slice(&[3, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(read_ply(&b).unwrap(), s);
    }

    #[test]
    fn big_endian_reads_the_same() {
        let s = sample(4, 1);
        let le = write_ply(&s).unwrap();
        let text = String::from_utf8_lossy(&le).to_string();
        let body_at = text.find("end_header\n").unwrap() + 11;
        let mut be = text[..body_at]
            .replace("binary_little_endian", "binary_big_endian")
            .into_bytes();
        for c in le[body_at..].chunks_exact(4) {
            be.extend_from_slice(&[c[3], c[2], c[1], c[0]]);
        }
        assert_eq!(read_ply(&be).unwrap(), s);
    }

    #[test]
    fn error_bad_magic() {
        let m = msg(read_ply(b"PLY\nformat ascii 1.0\nend_header\n"));
        assert!(m.contains("bad magic"), "{m}");
        let m = msg(read_ply(b""));
        assert!(m.contains("bad magic"), "{m}");
    }

    #[test]
    fn error_missing_header_end() {
        let s = sample(2, 0);
        let mut b = write_ply(&s).unwrap();
        let text = String::from_utf8_lossy(&b).to_string();
        let at = text.find("end_header").unwrap();
        b[at..at + 10].copy_from_slice(b"end_heade_");
        let m = msg(read_ply(&b));
        assert!(m.contains("missing end_header"), "{m}");
        let m = msg(read_ply(
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n",
        ));
        assert!(m.contains("missing end_header"), "{m}");
    }

    #[test]
    fn error_unsupported_format() {
        let m = msg(read_ply(
            b"ply\nformat binary_middle_endian 1.0\nend_header\n",
        ));
        assert!(
            m.contains("unsupported format \"binary_middle_endian\""),
            "{m}"
        );
        let m = msg(read_ply(
            b"ply\nformat binary_little_endian 2.0\nend_header\n",
        ));
        assert!(m.contains("unsupported format version"), "{m}");
        let m = msg(read_ply(b"ply\nelement vertex 0\nend_header\n"));
        assert!(m.contains("no format line"), "{m}");
    }

    #[test]
    fn error_missing_property() {
        let props = standard_props(3);
        for name in ["x", "f_dc_1", "opacity", "scale_2", "rot_0", "f_rest_17"] {
            let p = without(&props, name);
            let row = vec![0.5; p.len()];
            let m = msg(read_ply(&build("binary_little_endian", &refs(&p), &[row])));
            assert!(
                m.contains(&format!("missing required vertex property {name}")),
                "{name}: {m}"
            );
        }
        // A count of f_rest that is no SH degree: f_rest_0..f_rest_9 (10).
        let mut p = standard_props(1);
        p.push(("float", "f_rest_9".into()));
        let row = vec![0.5; p.len()];
        let m = msg(read_ply(&build("binary_little_endian", &refs(&p), &[row])));
        assert!(m.contains("10 f_rest coefficients"), "{m}");
        // No vertex element at all.
        let m = msg(read_ply(
            b"ply\nformat binary_little_endian 1.0\nelement face 0\nend_header\n",
        ));
        assert!(m.contains("no \"element vertex\""), "{m}");
    }

    #[test]
    fn error_short_file() {
        let s = sample(5, 2);
        let b = write_ply(&s).unwrap();
        let rec = 4 * (17 + 3 * 8);
        // Drop the last byte: vertex 4 is incomplete.
        let m = msg(read_ply(&b[..b.len() - 1]));
        assert!(m.contains("short file") && m.contains("vertex 4"), "{m}");
        // Drop two and a half records: vertex 2 is the first incomplete one.
        let m = msg(read_ply(&b[..b.len() - 2 * rec - rec / 2]));
        assert!(m.contains("short file") && m.contains("vertex 2"), "{m}");
        // ascii: one line missing.
        let p = standard_props(0);
        let mut a = String::from("ply\nformat ascii 1.0\nelement vertex 3\n");
        for (t, n) in &p {
            a.push_str(&format!("property {t} {n}\n"));
        }
        a.push_str("end_header\n");
        for _ in 0..2 {
            a.push_str(&vec!["0.5"; p.len()].join(" "));
            a.push('\n');
        }
        let m = msg(read_ply(a.as_bytes()));
        assert!(m.contains("short file") && m.contains("vertex 2"), "{m}");
    }

    #[test]
    fn error_non_finite() {
        let p = standard_props(0);
        let mut rows = vec![vec![0.5; p.len()]; 3];
        let at = p.iter().position(|x| x.1 == "scale_1").unwrap();
        rows[2][at] = f64::NAN;
        let m = msg(read_ply(&build("binary_little_endian", &refs(&p), &rows)));
        assert!(
            m.contains("non-finite value at vertex 2, property scale_1"),
            "{m}"
        );
        // A double too large for f32 is non-finite too.
        let mut p2 = p.clone();
        p2[0] = ("double", "x".into());
        let mut rows = vec![vec![0.5; p2.len()]; 2];
        rows[1][0] = 1e300;
        let m = msg(read_ply(&build("binary_little_endian", &refs(&p2), &rows)));
        assert!(
            m.contains("non-finite value at vertex 1, property x"),
            "{m}"
        );
        // write refuses non-finite values as well.
        let mut s = sample(2, 1);
        s.sh[4 * 3 + 2] = f32::INFINITY; // Gaussian 1, k 0, c 2 = f_dc_2
        let e = write_ply(&s).unwrap_err().to_string();
        assert!(e.contains("vertex 1, property f_dc_2"), "{e}");
    }

    #[test]
    fn error_absurd_count() {
        let s = sample(2, 0);
        let b = write_ply(&s).unwrap();
        let text = String::from_utf8_lossy(&b).to_string();
        for count in ["99999999999999", "18446744073709551615"] {
            let bad = text.replacen("element vertex 2", &format!("element vertex {count}"), 1);
            // Keep the binary body byte-exact: rebuild from the header text and the old body.
            let hdr_end = bad.find("end_header\n").unwrap() + 11;
            let mut bb = bad.as_bytes()[..hdr_end].to_vec();
            let old_body = text.find("end_header\n").unwrap() + 11;
            bb.extend_from_slice(&b[old_body..]);
            let m = msg(read_ply(&bb));
            assert!(m.contains("absurd"), "{m}");
        }
        // A count that is not a number at all.
        let m = msg(read_ply(
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1e99\nend_header\n",
        ));
        assert!(m.contains("bad count"), "{m}");
    }

    #[test]
    fn write_checks_lengths() {
        let mut s = sample(3, 2);
        s.sh.pop();
        let e = write_ply(&s).unwrap_err().to_string();
        assert!(e.contains("sh has length"), "{e}");
        let mut s = sample(1, 0);
        s.degree = 4;
        assert!(write_ply(&s).unwrap_err().to_string().contains("degree 4"));
    }
}
