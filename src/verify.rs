//! `tessera verify`: run every op on every executor present against the reference, and report a
//! row per (op, dtype, executor, size) with the error (or "exact") and pass/fail.

use half::{bf16, f16};
use serde::Serialize;

use crate::device::{Device, Schedule, SimtConfig};
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::bitmask;
use crate::reference::bitmask as reference;

/// One line of the verify table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: String,
    pub dtype: String,
    pub executor: String,
    pub sizes: String,
    /// "exact" for bit-exact ops, or the relative L2 error.
    pub error: String,
    pub pass: bool,
    /// Why it failed (the mismatch, or the error the op returned).
    pub detail: String,
}

/// Which executors `verify` runs: every one that is present, or only those of one family.
pub fn executors(filter: Option<&str>) -> Vec<(Device, &'static str)> {
    let mut out = Vec::new();
    let want = |f: &str| filter.is_none_or(|x| x == f);
    if want("cuda") {
        if let Ok(d) = Device::cuda(0) {
            out.push((d, "cuda"));
        }
    }
    if want("hip") {
        if let Ok(d) = Device::hip(0) {
            out.push((d, "hip"));
        }
    }
    if want("simt") {
        for (wave, schedule) in [
            (32, Schedule::InOrder),
            (32, Schedule::Shuffled(0x5eed_0001)),
            (32, Schedule::Skewed(0x5eed_0003)),
            (64, Schedule::InOrder),
            (64, Schedule::Shuffled(0x5eed_0002)),
            (64, Schedule::Skewed(0x5eed_0004)),
        ] {
            if let Ok(d) = Device::simt_with(SimtConfig {
                wave,
                schedule,
                workers: 0,
                ..Default::default()
            }) {
                out.push((d, "simt"));
            }
        }
    }
    if want("cpu") {
        out.push((Device::cpu(), "cpu"));
    }
    out
}

/// The executors the test suites run on: the CPU path, host SIMT wave32 and wave64 each with the
/// in-order schedule, the two shuffled `seeds` and a warp-skew schedule, and CUDA/HIP when present.
pub fn test_devices(seeds: [u64; 2]) -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for schedule in [
            Schedule::InOrder,
            Schedule::Shuffled(seeds[0]),
            Schedule::Shuffled(seeds[1]),
            Schedule::Skewed(seeds[0] ^ seeds[1]),
        ] {
            d.extend(
                Device::simt_with(SimtConfig {
                    wave,
                    schedule,
                    workers: 2,
                    ..Default::default()
                })
                .ok(),
            );
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

/// A deterministic generator (splitmix64) so verify needs no RNG crate and is reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A base tensor and a new one where about `frac` of the elements changed, some by a few units in
/// the last place (as consecutive checkpoints do), plus NaN and -0.0 patterns.
pub fn checkpoint_pair<T: Float>(n: usize, frac: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut r = Rng(seed);
    let base: Vec<T> = (0..n)
        .map(|_| T::from_f64((r.unit() - 0.5) * 0.2))
        .collect();
    let new = base
        .iter()
        .map(|&b| {
            if r.unit() >= frac {
                return b;
            }
            match r.next_u64() % 16 {
                0 => T::from_f64(f64::NAN),
                1 => T::from_f64(-0.0),
                2..=9 => T::from_f64(b.to_f64() * (1.0 + (r.unit() - 0.5) * 0.02)),
                _ => T::from_f64((r.unit() - 0.5) * 0.2),
            }
        })
        .collect();
    (base, new)
}

fn bits<T: Float>(v: &[T]) -> Vec<T::Bits> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Check sparsify and densify of one dtype on one device at size `n` and threshold `tau`.
fn check_bitmask<T: Float>(dev: &Device, n: usize, tau: f32, seed: u64) -> (Row, Row) {
    let (base, new) = checkpoint_pair::<T>(n, 0.23, seed);
    let (ref_mask, ref_vals) = reference::sparsify(&base, &new, tau);
    let ref_dense = reference::densify(&base, &ref_mask, &ref_vals);
    let row = |op: &str, r: std::result::Result<(), String>| Row {
        op: op.into(),
        dtype: T::KIND.name().into(),
        executor: dev.backend().to_string(),
        sizes: format!("n={n} tau={tau}"),
        error: "exact".into(),
        pass: r.is_ok(),
        detail: r.err().unwrap_or_default(),
    };
    // Independent of the reference: every mask bit agrees with the elementwise rule.
    let rule_ok = (0..n).all(|i| {
        (ref_mask[i / 32] >> (i % 32) & 1 == 1) == reference::changed(base[i], new[i], tau)
    });

    let run = || -> Result<(Vec<u32>, Vec<T>, Vec<T>)> {
        let b = dev.upload(&base, "base")?;
        let x = dev.upload(&new, "new")?;
        let s = bitmask::sparsify(&b, &x, tau)?;
        let d = bitmask::densify(&b, &s)?;
        Ok((s.mask.download()?, s.values.download()?, d.download()?))
    };
    match run() {
        Err(e) => (
            row("bitmask.sparsify", Err(e.to_string())),
            row("bitmask.densify", Err(e.to_string())),
        ),
        Ok((mask, vals, dense)) => {
            let sp = if !rule_ok {
                Err("reference mask disagrees with the elementwise rule".to_string())
            } else if mask != ref_mask {
                let i = mask
                    .iter()
                    .zip(&ref_mask)
                    .position(|(a, b)| a != b)
                    .unwrap_or(mask.len().min(ref_mask.len()));
                Err(format!("mask differs from the reference at word {i}"))
            } else if bits(&vals) != bits(&ref_vals) {
                Err(format!(
                    "values differ ({} vs {} reference)",
                    vals.len(),
                    ref_vals.len()
                ))
            } else {
                Ok(())
            };
            let dn = if bits(&dense) != bits(&ref_dense) {
                Err("densified tensor differs from the reference".to_string())
            } else if tau == 0.0 && bits(&dense) != bits(&new) {
                Err("lossless round trip is not exact".to_string())
            } else {
                Ok(())
            };
            (row("bitmask.sparsify", sp), row("bitmask.densify", dn))
        }
    }
}

/// Sizes verify uses: edge cases and a size spanning many blocks.
pub const SIZES: &[usize] = &[0, 1, 33, 8191, 100_003, (1 << 20) + 17];

/// Run every check on the given devices.
pub fn run(devices: &[(Device, &'static str)]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (dev, _) in devices {
        for (k, &n) in SIZES.iter().enumerate() {
            for &tau in &[0.0f32, 1e-3] {
                let seed = 0x7e55_e7a0 + k as u64;
                let pairs = [
                    check_bitmask::<f32>(dev, n, tau, seed),
                    check_bitmask::<f16>(dev, n, tau, seed),
                    check_bitmask::<bf16>(dev, n, tau, seed),
                ];
                for (a, b) in pairs {
                    rows.push(a);
                    rows.push(b);
                }
            }
        }
        for (k, &n) in CODEC_SIZES.iter().enumerate() {
            let seed = 0xc0de_c000 + k as u64;
            rows.extend(check_codec::<f32>(dev, n, seed));
            rows.extend(check_codec::<f16>(dev, n, seed));
            rows.extend(check_codec::<bf16>(dev, n, seed));
        }
        rows.extend(check_attention(dev));
        rows.extend(check_tah(dev));
        rows.extend(check_decode::<f16>(dev));
        rows.extend(check_decode::<bf16>(dev));
        rows.push(check_merge(dev));
        rows.extend(check_sequence_parallel(dev));
    }
    rows
}

/// Sizes of the codec rows (dense tensor lengths; about 23% of the elements change).
pub const CODEC_SIZES: &[usize] = &[1, 4099, 150_001];

/// The codec pipeline on one dtype and device: gather the changed base and new values, lossless
/// delta encode/decode, k-means (4 bits) of the f32 deltas, pack the indices and dequantize them
/// against the base values. Every row but k-means is bit-exact against the reference; k-means
/// reports the largest centroid error relative to the value range.
fn check_codec<T: Float>(dev: &Device, n: usize, seed: u64) -> Vec<Row> {
    use crate::ops::codec;
    use crate::reference::codec as cref;
    const BITS: u32 = 4;
    let (base, new) = checkpoint_pair::<T>(n, 0.23, seed);
    // k-means needs finite values: clear the NaN changes of the pair.
    let new: Vec<T> = new
        .iter()
        .zip(&base)
        .map(|(&x, &b)| if x.to_f64().is_finite() { x } else { b })
        .collect();
    let (mask, _) = reference::sparsify(&base, &new, 0.0);
    let rb = cref::gather(&base, &mask);
    let rx = cref::gather(&new, &mask);
    let (rw, rwid) = cref::delta_encode(&rb, &rx);
    let rd = cref::delta_f32(&rb, &rx);
    let (rc, ri, _) = cref::kmeans(&rd, 1 << BITS, 20, 1e-6);
    let (pw, pwid) = cref::pack_indices(&ri, BITS);
    let rq = cref::dequantize(&pw, &pwid, ri.len(), &rc, Some(&rb));
    let row = |op: &str, error: String, r: std::result::Result<(), String>| Row {
        op: op.into(),
        dtype: T::KIND.name().into(),
        executor: dev.backend().to_string(),
        sizes: format!("n={n} changed={}", rb.len()),
        error,
        pass: r.is_ok(),
        detail: r.err().unwrap_or_default(),
    };
    let exact = |op: &str, ok: bool, what: &str| {
        row(
            op,
            "exact".into(),
            if ok {
                Ok(())
            } else {
                Err(format!("{what} differ from the reference"))
            },
        )
    };
    type Out<T> = (
        Vec<T>,
        Vec<u32>,
        Vec<u8>,
        Vec<T>,
        Vec<f32>,
        Vec<u8>,
        Vec<u32>,
        Vec<T>,
    );
    let run = || -> Result<Out<T>> {
        let b = dev.upload(&base, "base")?;
        let x = dev.upload(&new, "new")?;
        let m = dev.upload(&mask, "mask")?;
        let gb = codec::gather(&b, &m, rb.len())?;
        let gx = codec::gather(&x, &m, rb.len())?;
        let p = codec::delta_encode(&gb, &gx)?;
        let dec = codec::delta_decode(&gb, &p)?;
        let d = codec::delta_f32(&gb, &gx)?;
        let km = codec::kmeans(&d, BITS, 20, 1e-6)?;
        let pi = codec::pack_indices(&km.indices, BITS)?;
        let q = codec::dequantize(&pi, &km.centroids, Some(&gb))?;
        Ok((
            gb.download()?,
            p.words.download()?,
            p.widths.download()?,
            dec.download()?,
            km.centroids,
            km.indices.download()?,
            pi.words.download()?,
            q.download()?,
        ))
    };
    match run() {
        Err(e) => [
            "codec.gather",
            "codec.delta_encode",
            "codec.delta_decode",
            "codec.kmeans",
            "codec.dequantize",
        ]
        .iter()
        .map(|op| row(op, "-".into(), Err(e.to_string())))
        .collect(),
        Ok((gb, w, wid, dec, c, idx, piw, q)) => {
            let (lo, hi, _) = cref::min_max(&rd);
            let range = (hi - lo).max(f32::MIN_POSITIVE) as f64;
            let cerr = c
                .iter()
                .zip(&rc)
                .map(|(a, b)| ((*a as f64 - *b as f64) / range).abs())
                .fold(0.0f64, f64::max);
            let mids = cref::midpoints(&rc);
            let idx_ok = idx.len() == ri.len()
                && idx.iter().zip(&ri).enumerate().all(|(i, (a, b))| {
                    a == b
                        || mids
                            .iter()
                            .any(|m| ((rd[i] - m).abs() as f64) <= 1e-6 * range)
                });
            let km = if c.len() != rc.len() || cerr > 1e-5 {
                Err(format!("centroid error {cerr:.2e} > 1e-5 of the range"))
            } else if !idx_ok {
                Err("indices differ from the reference away from a midpoint".into())
            } else {
                Ok(())
            };
            vec![
                exact("codec.gather", bits(&gb) == bits(&rb), "gathered values"),
                exact(
                    "codec.delta_encode",
                    w == rw && wid == rwid,
                    "packed words or widths",
                ),
                exact(
                    "codec.delta_decode",
                    bits(&dec) == bits(&rx),
                    "decoded values",
                ),
                row("codec.kmeans", format!("{cerr:.1e}"), km),
                exact(
                    "codec.dequantize",
                    piw == pw && bits(&q) == bits(&rq),
                    "packed indices or dequantized values",
                ),
            ]
        }
    }
}

/// A small attention problem for the verify rows: two sequences (lengths 77 and 130 tokens),
/// H = 4, H_kv = 2, D = 64 (D = 128 for duo-causal), implicit positions for full/causal (the
/// offset variant: queries at +40, keys at -8) and a TaH two-depth layout with ~10% hard
/// positions and 5% invalid slots for duo-causal, KV grouped by depth slot.
struct AttnCase {
    mode: crate::ops::attention::MaskMode,
    d: usize,
    cu: Vec<i32>,
    pos: Vec<i32>,
    depth: Vec<i32>,
    valid: Option<Vec<u8>>,
    offsets: Option<(i32, i32)>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

const ATTN_H: usize = 4;
const ATTN_HKV: usize = 2;

fn attn_case<T: Float>(
    mode: crate::ops::attention::MaskMode,
    offsets: bool,
    seed: u64,
) -> AttnCase {
    use crate::ops::attention::MaskMode;
    let mut r = Rng(seed);
    let duo = mode == MaskMode::DuoCausal;
    let d = if duo { 128 } else { 64 };
    let (mut cu, mut pos, mut depth) = (vec![0i32], vec![], vec![]);
    for len in [77usize, 130] {
        pos.extend(0..len as i32);
        depth.extend(std::iter::repeat_n(0, len));
        if duo {
            for p in 0..len as i32 {
                if r.unit() < 0.1 {
                    pos.push(p);
                    depth.push(1);
                }
            }
        }
        cu.push(pos.len() as i32);
    }
    let n = pos.len();
    let valid = duo.then(|| (0..n).map(|_| u8::from(r.unit() >= 0.05)).collect());
    let mut gen = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| T::from_f64((r.unit() - 0.5) * 4.0).to_f64() as f32)
            .collect()
    };
    let q = gen(n * ATTN_H * d);
    let k = gen(n * ATTN_HKV * d);
    let v = gen(n * ATTN_HKV * d);
    AttnCase {
        mode,
        d,
        cu,
        pos,
        depth,
        valid,
        offsets: offsets.then_some((40, -8)),
        q,
        k,
        v,
    }
}

fn attn_reference(c: &AttnCase) -> (Vec<f64>, Vec<f64>) {
    let (qo, ko) = c.offsets.unwrap_or((0, 0));
    let qp: Vec<i32> = c.pos.iter().map(|p| p + qo).collect();
    let kp: Vec<i32> = c.pos.iter().map(|p| p + ko).collect();
    let all = vec![1u8; c.pos.len()];
    crate::reference::attention::attention(&crate::reference::attention::Problem {
        q: &c.q,
        k: &c.k,
        v: &c.v,
        heads: ATTN_H,
        kv_heads: ATTN_HKV,
        head_dim: c.d,
        cu_q: &c.cu,
        cu_kv: &c.cu,
        q_pos: &qp,
        kv_pos: &kp,
        q_depth: &c.depth,
        kv_depth: &c.depth,
        kv_valid: c.valid.as_deref().unwrap_or(&all),
        scale: 1.0 / (c.d as f32).sqrt(),
        mode: c.mode,
    })
}

fn attn_run<T: crate::ops::attention::HalfFloat>(
    dev: &Device,
    c: &AttnCase,
    path: crate::ops::attention::Path,
) -> Result<(Vec<f32>, Vec<f32>)> {
    use crate::ops::attention::{self as attn, MaskMode, Positions};
    let up = |x: &[f32]| -> Vec<T> { x.iter().map(|&y| T::from_f64(y as f64)).collect() };
    let (q, k, v) = (
        dev.upload(&up(&c.q), "q")?,
        dev.upload(&up(&c.k), "k")?,
        dev.upload(&up(&c.v), "v")?,
    );
    let cu = dev.upload(&c.cu, "cu_seqlens")?;
    let pos = dev.upload(&c.pos, "pos")?;
    let depth = dev.upload(&c.depth, "depth")?;
    let valid = match &c.valid {
        Some(x) => Some(dev.upload(x, "kv_valid")?),
        None => None,
    };
    let duo = c.mode == MaskMode::DuoCausal;
    let (q_pos, kv_pos) = match (duo, c.offsets) {
        (true, _) => (Positions::Explicit(&pos), Positions::Explicit(&pos)),
        (false, o) => {
            let (a, b) = o.unwrap_or((0, 0));
            (
                Positions::Implicit { offset: a },
                Positions::Implicit { offset: b },
            )
        }
    };
    let out = attn::forward(&attn::Attention {
        q: &q,
        k: &k,
        v: &v,
        heads: ATTN_H,
        kv_heads: ATTN_HKV,
        head_dim: c.d,
        cu_seqlens_q: &cu,
        cu_seqlens_kv: &cu,
        q_pos,
        kv_pos,
        q_depth: duo.then_some(&depth),
        kv_depth: duo.then_some(&depth),
        kv_valid: valid.as_ref(),
        scale: 1.0 / (c.d as f32).sqrt(),
        mode: c.mode,
        path,
    })?;
    Ok((out.o.download()?, out.lse.download()?))
}

/// Prefill attention (`attention::forward`): every mode (causal also with offsets) x path on one
/// dtype and device. Error: relative L2 of O; pass also needs LSE within 1e-3 (exactly -inf
/// where the reference is -inf).
fn check_attention_dtype<T: crate::ops::attention::HalfFloat>(dev: &Device) -> Vec<Row> {
    use crate::ops::attention::{MaskMode, Path};
    let mut rows = Vec::new();
    let paths: &[Path] = if dev.backend().runs_kernels() {
        &[Path::TensorCore, Path::Scalar]
    } else {
        &[Path::Auto]
    };
    let modes = [
        ("full", MaskMode::Full, false),
        ("causal", MaskMode::Causal, false),
        ("causal+offset", MaskMode::Causal, true),
        ("duo-causal", MaskMode::DuoCausal, false),
    ];
    for (k, &(name, mode, off)) in modes.iter().enumerate() {
        let c = attn_case::<T>(mode, off, 0xa77e_0000 + k as u64);
        let (ro, rl) = attn_reference(&c);
        for &path in paths {
            let label = match path {
                Path::Auto => "auto",
                Path::TensorCore => "tensor-core",
                Path::Scalar => "scalar",
            };
            let mut row = Row {
                op: format!("attention.forward {name} {label}"),
                dtype: T::KIND.name().into(),
                executor: dev.backend().to_string(),
                sizes: format!(
                    "seqs 77,130 tokens {} H={ATTN_H} Hkv={ATTN_HKV} D={}",
                    c.pos.len(),
                    c.d
                ),
                error: String::new(),
                pass: false,
                detail: String::new(),
            };
            match attn_run::<T>(dev, &c, path) {
                Err(e) => {
                    row.error = "-".into();
                    row.detail = e.to_string();
                }
                Ok((o, l)) => {
                    let (mut num, mut den) = (0f64, 0f64);
                    for (&x, &y) in o.iter().zip(&ro) {
                        num += (x as f64 - y).powi(2);
                        den += y * y;
                    }
                    let e = (num / den.max(f64::MIN_POSITIVE)).sqrt();
                    let lse_bad = l.iter().zip(&rl).position(|(&x, &y)| {
                        if y == f64::NEG_INFINITY {
                            x != f32::NEG_INFINITY
                        } else {
                            (x as f64 - y).abs() > 1e-3 || x.is_nan()
                        }
                    });
                    row.error = format!("{e:.2e}");
                    row.pass = e <= 1e-2 && lse_bad.is_none() && o.len() == ro.len();
                    if let Some(i) = lse_bad {
                        row.detail = format!("LSE[{i}] {} vs reference {}", l[i], rl[i]);
                    } else if e > 1e-2 {
                        row.detail = format!("O relative L2 {e:.2e} > 1e-2");
                    }
                }
            }
            rows.push(row);
        }
    }
    rows
}

/// Prefill attention rows for both dtypes.
fn check_attention(dev: &Device) -> Vec<Row> {
    let mut rows = check_attention_dtype::<f16>(dev);
    rows.extend(check_attention_dtype::<bf16>(dev));
    rows
}

// ---- TaH driver (drivers::tah) ------------------------------------------------------------------

/// (sizes, error, result) of one next-depth-input case.
type TahCase = (String, String, std::result::Result<(), String>);

/// The TaH driver kernels on one device: hard-token selection (exact indices and count), row
/// gather and scatter (exact), the next-depth input (top-k ids exact on distinct logits, output
/// relative L2 vs the f64 reference, f32 and half embedding tables, vocab up to 152k) and logits
/// accumulation (exact in f32).
fn check_tah(dev: &Device) -> Vec<Row> {
    use crate::drivers::tah;
    use crate::reference::tah as tref;
    let row = |op: &str,
               dtype: &str,
               sizes: String,
               error: String,
               r: std::result::Result<(), String>| Row {
        op: op.into(),
        dtype: dtype.into(),
        executor: dev.backend().to_string(),
        sizes,
        error,
        pass: r.is_ok(),
        detail: r.err().unwrap_or_default(),
    };
    let exact = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("{what} differ from the reference"))
        }
    };
    let mut rows = Vec::new();
    let mut r = Rng(0x7a4_0001);

    // Selection, gather, scatter.
    let n = 100_003usize;
    let scores: Vec<f32> = (0..n).map(|_| ((r.unit() - 0.5) * 12.0) as f32).collect();
    let want = tref::select_hard(&scores, tref::logit_threshold(0.9));
    let d = 8usize;
    let hidden: Vec<f32> = (0..n * d).map(|_| r.unit() as f32).collect();
    let gathered = tref::gather_rows(&hidden, &want, d);
    let upd: Vec<f32> = gathered.iter().map(|x| x * 2.0 - 1.0).collect();
    let mut scattered = hidden.clone();
    tref::scatter_rows(&upd, &want, d, &mut scattered);
    let sizes = format!("n={n} active={} d={d}", want.len());
    type Selected = (usize, Vec<u32>, Vec<f32>, Vec<f32>);
    let run = || -> Result<Selected> {
        let s = tah::select_hard(&dev.upload(&scores, "scores")?, 0.9)?;
        let h = dev.upload(&hidden, "hidden")?;
        let g = tah::gather_rows(&h, &s.indices, d)?;
        let mut dst = dev.upload(&hidden, "dst")?;
        tah::scatter_rows(&dev.upload(&upd, "upd")?, &s.indices, d, &mut dst)?;
        Ok((
            s.count,
            s.indices.download()?,
            g.download()?,
            dst.download()?,
        ))
    };
    match run() {
        Err(e) => {
            for op in ["tah.select_hard", "tah.gather_rows", "tah.scatter_rows"] {
                rows.push(row(
                    op,
                    "f32",
                    sizes.clone(),
                    "exact".into(),
                    Err(e.to_string()),
                ));
            }
        }
        Ok((count, idx, g, sc)) => {
            rows.push(row(
                "tah.select_hard",
                "f32",
                sizes.clone(),
                "exact".into(),
                exact(count == want.len() && idx == want, "indices or count"),
            ));
            rows.push(row(
                "tah.gather_rows",
                "f32",
                sizes.clone(),
                "exact".into(),
                exact(g == gathered, "rows"),
            ));
            rows.push(row(
                "tah.scatter_rows",
                "f32",
                sizes,
                "exact".into(),
                exact(sc == scattered, "rows"),
            ));
        }
    }

    // Next-depth input.
    fn next_input<E: Float>(
        dev: &Device,
        m: usize,
        vocab: usize,
        k: usize,
        d: usize,
        tol: f64,
        seed: u64,
    ) -> TahCase {
        let mut r = Rng(seed);
        let mut cum = Vec::with_capacity(m * vocab);
        for _ in 0..m {
            let mut row: Vec<f32> = (0..vocab)
                .map(|i| (i as f32 - vocab as f32 / 2.0) * (8.0 / vocab as f32))
                .collect();
            for i in (1..vocab).rev() {
                row.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
            }
            cum.extend(row);
        }
        let emb: Vec<E> = (0..vocab * d)
            .map(|_| E::from_f64(r.unit() - 0.5))
            .collect();
        let (ro, rids, _) = tref::next_depth_input(&cum, vocab, k, &emb, d);
        let sizes = format!("m={m} V={vocab} k={k} d={d}");
        let run = || -> Result<(Vec<f32>, Vec<u32>)> {
            let out = tah::next_depth_input(
                &dev.upload(&cum, "cum")?,
                vocab,
                k,
                &dev.upload(&emb, "emb")?,
                d,
            )?;
            Ok((out.out.download()?, out.ids.download()?))
        };
        match run() {
            Err(e) => (sizes, "-".into(), Err(e.to_string())),
            Ok((o, ids)) => {
                let err = tah_rel_l2(&o, &ro);
                let res = if ids != rids {
                    Err("top-k ids differ from the reference".to_string())
                } else if err.is_nan() || err > tol {
                    Err(format!("relative L2 {err:.2e} > {tol:.0e}"))
                } else {
                    Ok(())
                };
                (sizes, format!("{err:.2e}"), res)
            }
        }
    }
    let cases: [(&str, TahCase); 4] = [
        (
            "f32",
            next_input::<f32>(dev, 4, 32_000, 100, 64, 1e-5, 0x7a4_0002),
        ),
        (
            "bf16",
            next_input::<bf16>(dev, 4, 32_000, 100, 64, 1e-5, 0x7a4_0003),
        ),
        (
            "f16",
            next_input::<f16>(dev, 4, 32_000, 256, 64, 1e-5, 0x7a4_0004),
        ),
        (
            "bf16",
            next_input::<bf16>(dev, 1, 151_936, 100, 128, 1e-5, 0x7a4_0005),
        ),
    ];
    for (dt, (sizes, err, res)) in cases {
        rows.push(row("tah.next_depth_input", dt, sizes, err, res));
    }

    // Logits accumulation.
    let n = (1 << 20) + 17;
    let a: Vec<f32> = (0..n).map(|_| ((r.unit() - 0.5) * 20.0) as f32).collect();
    let b: Vec<f32> = (0..n).map(|_| ((r.unit() - 0.5) * 20.0) as f32).collect();
    let mut want = a.clone();
    tref::accumulate_logits(&mut want, &b);
    let run = || -> Result<Vec<f32>> {
        let mut c = dev.upload(&a, "cum")?;
        tah::accumulate_logits(&mut c, &dev.upload(&b, "logits")?)?;
        c.download()
    };
    let res = match run() {
        Err(e) => Err(e.to_string()),
        Ok(got) => exact(
            got.iter()
                .map(|x| x.to_bits())
                .eq(want.iter().map(|x| x.to_bits())),
            "sums",
        ),
    };
    rows.push(row(
        "tah.accumulate_logits",
        "f32",
        format!("n={n}"),
        "exact".into(),
        res,
    ));
    rows
}

/// Relative L2 error of `out` against `reference` (NaN in `out` gives NaN).
fn tah_rel_l2(out: &[f32], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::NAN;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        num += (o as f64 - r) * (o as f64 - r);
        den += r * r;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

// ---- attention decode (flash-decoding) and merge ----------------------------------------------

use crate::ops::attention::{self as attn, HalfFloat, MaskMode};

/// Host-side inputs of one decode problem. Positions, depths and validity are explicit arrays;
/// `q_offset` / `kv_offset` say the positions are implicit (`t + offset`) and the op should be
/// given `Positions::Implicit`.
#[derive(Clone, Debug)]
pub struct DecodeInputs<T> {
    pub q: Vec<T>,
    pub k: Vec<T>,
    pub v: Vec<T>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub cu_q: Vec<i32>,
    pub cu_kv: Vec<i32>,
    pub q_pos: Vec<i32>,
    pub kv_pos: Vec<i32>,
    pub q_depth: Vec<i32>,
    pub kv_depth: Vec<i32>,
    pub kv_valid: Vec<u8>,
    pub q_offset: Option<i32>,
    pub kv_offset: Option<i32>,
    pub scale: f32,
    pub mode: MaskMode,
}

/// A random decode problem: sequence `b` has `q_lens[b]` queries and `kv_lens[b]` keys.
/// Causal/Full: key `t` has position `t`, the queries are the sequence's last positions. Duo-causal
/// (TaH cache layout): the first ~80% of the slots hold depth 0 for positions `0..n0`, the rest
/// depth 1 for random hard positions; queries have random depth 0/1. About 5% of the key slots
/// are invalid. With `implicit`, q positions are `t + offset` (one offset for all sequences) and
/// kv positions `t`, passed as `Positions::Implicit`.
#[allow(clippy::too_many_arguments)]
pub fn decode_inputs<T: Float>(
    q_lens: &[usize],
    kv_lens: &[usize],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    mode: MaskMode,
    implicit: bool,
    seed: u64,
) -> DecodeInputs<T> {
    let mut r = Rng(seed);
    let (tq, tk): (usize, usize) = (q_lens.iter().sum(), kv_lens.iter().sum());
    let mut vals = |n: usize| -> Vec<T> {
        (0..n)
            .map(|_| T::from_f64((r.unit() - 0.5) * 2.0))
            .collect()
    };
    let q = vals(tq * heads * head_dim);
    let k = vals(tk * kv_heads * head_dim);
    let v = vals(tk * kv_heads * head_dim);
    let mut cu_q = vec![0i32];
    let mut cu_kv = vec![0i32];
    let (mut q_pos, mut kv_pos, mut q_depth, mut kv_depth, mut kv_valid) =
        (vec![], vec![], vec![], vec![], vec![]);
    let offset = kv_lens.first().map_or(0, |&l| l as i32) - q_lens.first().map_or(0, |&l| l as i32);
    for (&nq, &nk) in q_lens.iter().zip(kv_lens) {
        cu_q.push(cu_q.last().unwrap() + nq as i32);
        cu_kv.push(cu_kv.last().unwrap() + nk as i32);
        let n0 = if mode == MaskMode::DuoCausal && !implicit {
            nk - nk / 5
        } else {
            nk
        };
        for t in 0..nk {
            if t < n0 {
                kv_pos.push(t as i32);
                kv_depth.push(0);
            } else {
                kv_pos.push((r.next_u64() % n0.max(1) as u64) as i32);
                kv_depth.push(1);
            }
            kv_valid.push(u8::from(r.unit() >= 0.05));
        }
        for t in 0..nq {
            q_pos.push(if implicit {
                t as i32 + offset
            } else {
                (n0 + t) as i32 - nq as i32
            });
            q_depth.push((r.next_u64() % 2) as i32);
        }
    }
    DecodeInputs {
        q,
        k,
        v,
        heads,
        kv_heads,
        head_dim,
        cu_q,
        cu_kv,
        q_pos,
        kv_pos,
        q_depth,
        kv_depth,
        kv_valid,
        q_offset: implicit.then_some(offset),
        kv_offset: implicit.then_some(0),
        scale: 1.0 / (head_dim as f32).sqrt(),
        mode,
    }
}

impl<T: Float> DecodeInputs<T> {
    pub fn total_q(&self) -> usize {
        self.q_pos.len()
    }

    /// The f64 reference with the given key validity (the problem's own by default).
    pub fn reference(&self, valid: Option<&[u8]>) -> (Vec<f64>, Vec<f64>) {
        use crate::reference::attention as r;
        let f = |x: &[T]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
        let (q, k, v) = (f(&self.q), f(&self.k), f(&self.v));
        r::attention(&r::Problem {
            q: &q,
            k: &k,
            v: &v,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            cu_q: &self.cu_q,
            cu_kv: &self.cu_kv,
            q_pos: &self.q_pos,
            kv_pos: &self.kv_pos,
            q_depth: &self.q_depth,
            kv_depth: &self.kv_depth,
            kv_valid: valid.unwrap_or(&self.kv_valid),
            scale: self.scale,
            mode: self.mode,
        })
    }

    /// Reference partials of `splits` splits, concatenated like [`attn::Partials`].
    pub fn reference_partials(&self, splits: usize) -> (Vec<f64>, Vec<f64>) {
        let (mut o, mut l) = (vec![], vec![]);
        for s in 0..splits {
            let mut valid = vec![0u8; self.kv_valid.len()];
            for w in self.cu_kv.windows(2) {
                let (k0, len) = (w[0] as usize, (w[1] - w[0]) as usize);
                let (j0, j1) = (k0 + s * len / splits, k0 + (s + 1) * len / splits);
                valid[j0..j1].copy_from_slice(&self.kv_valid[j0..j1]);
            }
            let (so, sl) = self.reference(Some(&valid));
            o.extend(so);
            l.extend(sl);
        }
        (o, l)
    }
}

/// Partial and merged outputs of one decode run, downloaded.
pub struct DecodeRun {
    pub o_part: Vec<f32>,
    pub lse_part: Vec<f32>,
    pub o: Vec<f32>,
    pub lse: Vec<f32>,
}

/// Upload `x` to `dev` and run `decode_partials` then `merge` (which is what `decode` does).
pub fn decode_run<T: HalfFloat>(
    dev: &Device,
    x: &DecodeInputs<T>,
    splits: usize,
) -> Result<DecodeRun> {
    let q = dev.upload(&x.q, "q")?;
    let k = dev.upload(&x.k, "k")?;
    let v = dev.upload(&x.v, "v")?;
    let cu_q = dev.upload(&x.cu_q, "cu_q")?;
    let cu_kv = dev.upload(&x.cu_kv, "cu_kv")?;
    let q_pos = dev.upload(&x.q_pos, "q_pos")?;
    let kv_pos = dev.upload(&x.kv_pos, "kv_pos")?;
    let q_depth = dev.upload(&x.q_depth, "q_depth")?;
    let kv_depth = dev.upload(&x.kv_depth, "kv_depth")?;
    let kv_valid = dev.upload(&x.kv_valid, "kv_valid")?;
    let a = attn::Attention {
        q: &q,
        k: &k,
        v: &v,
        heads: x.heads,
        kv_heads: x.kv_heads,
        head_dim: x.head_dim,
        cu_seqlens_q: &cu_q,
        cu_seqlens_kv: &cu_kv,
        q_pos: match x.q_offset {
            Some(offset) => attn::Positions::Implicit { offset },
            None => attn::Positions::Explicit(&q_pos),
        },
        kv_pos: match x.kv_offset {
            Some(offset) => attn::Positions::Implicit { offset },
            None => attn::Positions::Explicit(&kv_pos),
        },
        q_depth: Some(&q_depth),
        kv_depth: Some(&kv_depth),
        kv_valid: Some(&kv_valid),
        scale: x.scale,
        mode: x.mode,
        path: attn::Path::Auto,
    };
    let p = attn::decode_partials(&a, splits)?;
    let m = attn::merge(&p.o, &p.lse, splits, x.total_q(), x.heads, x.head_dim)?;
    Ok(DecodeRun {
        o_part: p.o.download()?,
        lse_part: p.lse.download()?,
        o: m.o.download()?,
        lse: m.lse.download()?,
    })
}

/// Relative L2 error of `out` against `reference`, over the entries where the reference is
/// finite; an entry where exactly one of the two is -inf, or any NaN, gives infinity. LSE rows
/// that see no key are -inf in both.
pub fn rel_l2_inf_aware(out: &[f32], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        if o.is_nan() || r.is_nan() {
            return f64::INFINITY;
        }
        if r == f64::NEG_INFINITY || o == f32::NEG_INFINITY {
            if (o == f32::NEG_INFINITY) != (r == f64::NEG_INFINITY) {
                return f64::INFINITY;
            }
            continue;
        }
        num += (o as f64 - r).powi(2);
        den += r * r;
    }
    if num == 0.0 {
        0.0
    } else {
        (num / den.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// Tolerance of the decode rows (f16/bf16 operands, f32 accumulation; the design's bound is 1e-2).
pub const DECODE_TOL: f64 = 4e-3;
/// Tolerance of the merge rows (f32 arithmetic on f32 inputs).
pub const MERGE_TOL: f64 = 1e-5;

/// Decode rows: every mode on one dtype, a small varlen GQA batch split 3 ways (errors of the
/// partials, the merged O and LSE against the f64 reference), plus a merge-only row on random
/// partials with -inf rows.
fn check_decode<T: HalfFloat>(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    let q_lens = [1usize, 2, 0, 1];
    let kv_lens = [300usize, 77, 0, 5];
    let splits = 3;
    for (mi, mode) in [MaskMode::Full, MaskMode::Causal, MaskMode::DuoCausal]
        .into_iter()
        .enumerate()
    {
        let x = decode_inputs::<T>(
            &q_lens,
            &kv_lens,
            8,
            2,
            128,
            mode,
            false,
            0xdec0 + mi as u64,
        );
        let (ro, rl) = x.reference(None);
        let (rpo, rpl) = x.reference_partials(splits);
        let r = decode_run(dev, &x, splits).map(|run| {
            [
                rel_l2_inf_aware(&run.o_part, &rpo),
                rel_l2_inf_aware(&run.lse_part, &rpl),
                rel_l2_inf_aware(&run.o, &ro),
                rel_l2_inf_aware(&run.lse, &rl),
            ]
        });
        let worst = r.as_ref().map(|e| e.iter().cloned().fold(0f64, f64::max));
        rows.push(Row {
            op: format!("attention.decode.{mode:?}").to_lowercase(),
            dtype: T::KIND.name().into(),
            executor: dev.backend().to_string(),
            sizes: format!("q={q_lens:?} kv={kv_lens:?} H=8/2 D=128 S={splits}"),
            error: worst.as_ref().map_or("-".into(), |w| format!("{w:.1e}")),
            pass: matches!(worst, Ok(w) if w <= DECODE_TOL),
            detail: match (&r, &worst) {
                (Err(e), _) => e.to_string(),
                (Ok(e), Ok(w)) if *w > DECODE_TOL => {
                    format!(
                        "o_part {:.1e} lse_part {:.1e} o {:.1e} lse {:.1e}",
                        e[0], e[1], e[2], e[3]
                    )
                }
                _ => String::new(),
            },
        });
    }
    rows
}

/// Random partials for the merge: `[splits, total_q, H, D]` O and `[splits, H, total_q]` LSE with
/// LSE in ±`spread`, about a quarter -inf (their O set to NaN: a merge must not read them), and
/// every LSE of the row `i = 0, h = 0` -inf.
pub fn merge_inputs(
    splits: usize,
    total_q: usize,
    heads: usize,
    head_dim: usize,
    spread: f64,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    let mut lse: Vec<f32> = (0..splits * heads * total_q)
        .map(|_| {
            if r.unit() < 0.25 {
                f32::NEG_INFINITY
            } else {
                ((r.unit() - 0.5) * 2.0 * spread) as f32
            }
        })
        .collect();
    for s in 0..splits {
        if total_q > 0 {
            lse[s * heads * total_q] = f32::NEG_INFINITY;
        }
    }
    let mut o: Vec<f32> = (0..splits * total_q * heads * head_dim)
        .map(|_| (r.unit() - 0.5) as f32 * 4.0)
        .collect();
    for s in 0..splits {
        for i in 0..total_q {
            for h in 0..heads {
                if lse[(s * heads + h) * total_q + i] == f32::NEG_INFINITY {
                    let at = ((s * total_q + i) * heads + h) * head_dim;
                    o[at..at + head_dim].fill(f32::NAN);
                }
            }
        }
    }
    (o, lse)
}

/// The f64 reference merge in the op's layouts.
pub use crate::reference::attention::merge_packed as merge_reference;

fn check_merge(dev: &Device) -> Row {
    let (splits, total_q, heads, d) = (5, 7, 4, 128);
    let (o, lse) = merge_inputs(splits, total_q, heads, d, 150.0, 0x3e76e);
    let (ro, rl) = merge_reference(&o, &lse, splits, total_q, heads, d);
    let run = || -> Result<(Vec<f32>, Vec<f32>)> {
        let ob = dev.upload(&o, "o_part")?;
        let lb = dev.upload(&lse, "lse_part")?;
        let m = attn::merge(&ob, &lb, splits, total_q, heads, d)?;
        Ok((m.o.download()?, m.lse.download()?))
    };
    let r = run().map(|(mo, ml)| rel_l2_inf_aware(&mo, &ro).max(rel_l2_inf_aware(&ml, &rl)));
    Row {
        op: "attention.merge".into(),
        dtype: "f32".into(),
        executor: dev.backend().to_string(),
        sizes: format!("S={splits} q={total_q} H={heads} D={d} lse±150, -inf rows"),
        error: r.as_ref().map_or("-".into(), |e| format!("{e:.1e}")),
        pass: matches!(r, Ok(e) if e <= MERGE_TOL),
        detail: match r {
            Err(e) => e.to_string(),
            Ok(e) if e > MERGE_TOL => format!("error {e:.1e} > {MERGE_TOL:.0e}"),
            Ok(_) => String::new(),
        },
    }
}

// ---- sequence-parallel attention (parallel::attention) ------------------------------------------

/// One sequence-parallel attention row: `forward_simulated` over `n` ranks against the f64
/// reference on the whole sequence (O relative L2 <= 1e-2, LSE within 1e-3).
fn sp_row<T: HalfFloat>(
    dev: &Device,
    name: &str,
    plan: Result<crate::parallel::plan::AllGatherPlan>,
    seq_len: usize,
    causal: bool,
    seed: u64,
) -> Row {
    use crate::parallel::attention as sp;
    let (h, hk, d) = (2usize, 1usize, 64usize);
    let mut r = Rng(seed);
    let mut gen = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| T::from_f64((r.unit() - 0.5) * 4.0).to_f64() as f32)
            .collect()
    };
    let (q, k, v) = (
        gen(seq_len * h * d),
        gen(seq_len * hk * d),
        gen(seq_len * hk * d),
    );
    let pos: Vec<i32> = (0..seq_len as i32).collect();
    let zeros = vec![0i32; seq_len];
    let valid = vec![1u8; seq_len];
    let cu = [0, seq_len as i32];
    let mode = if causal {
        MaskMode::Causal
    } else {
        MaskMode::Full
    };
    let (ro, rl) = crate::reference::attention::attention(&crate::reference::attention::Problem {
        q: &q,
        k: &k,
        v: &v,
        heads: h,
        kv_heads: hk,
        head_dim: d,
        cu_q: &cu,
        cu_kv: &cu,
        q_pos: &pos,
        kv_pos: &pos,
        q_depth: &zeros,
        kv_depth: &zeros,
        kv_valid: &valid,
        scale: 1.0 / (d as f32).sqrt(),
        mode,
    });
    let mut row = Row {
        op: format!("sp_attention {name}"),
        dtype: T::KIND.name().into(),
        executor: dev.backend().to_string(),
        sizes: format!("L={seq_len} H={h} Hkv={hk} D={d}"),
        error: "-".into(),
        pass: false,
        detail: String::new(),
    };
    let run = || -> Result<(Vec<f32>, Vec<f32>, usize, usize)> {
        let plan = plan?;
        let up = |x: &[f32]| -> Vec<T> { x.iter().map(|&y| T::from_f64(y as f64)).collect() };
        let (qb, kb, vb) = (
            dev.upload(&up(&q), "q")?,
            dev.upload(&up(&k), "k")?,
            dev.upload(&up(&v), "v")?,
        );
        let cfg = sp::SpAttention {
            plan: &plan,
            seq_len,
            heads: h,
            kv_heads: hk,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
            causal,
            path: attn::Path::Auto,
        };
        let (out, _) = sp::forward_simulated(&cfg, &qb, &kb, &vb)?;
        Ok((
            out.o.download()?,
            out.lse.download()?,
            plan.n(),
            plan.subs(),
        ))
    };
    match run() {
        Err(e) => row.detail = e.to_string(),
        Ok((o, l, n, subs)) => {
            row.sizes = format!("n={n} rings={subs} {}", row.sizes);
            let e = rel_l2_inf_aware(&o, &ro);
            let lse_bad = l.iter().zip(&rl).position(|(&x, &y)| {
                if y == f64::NEG_INFINITY {
                    x != f32::NEG_INFINITY
                } else {
                    (x as f64 - y).abs() > 1e-3 || x.is_nan()
                }
            });
            row.error = format!("{e:.2e}");
            row.pass = e <= 1e-2 && lse_bad.is_none();
            if let Some(i) = lse_bad {
                row.detail = format!("LSE[{i}] {} vs reference {}", l[i], rl[i]);
            } else if e > 1e-2 {
                row.detail = format!("O relative L2 {e:.2e} > 1e-2");
            }
        }
    }
    row
}

/// Sequence-parallel attention rows: TASP rings (n = 5, 8, and 4 through its fallback) and the
/// single-ring baseline, causal (zigzag) and full, lengths that do not divide into pieces.
fn check_sequence_parallel(dev: &Device) -> Vec<Row> {
    use crate::parallel::plan::AllGatherPlan;
    use crate::topology;
    let tasp =
        |n: usize| topology::hamiltonian_decomposition(n).and_then(|s| AllGatherPlan::new(&s));
    let ring = |n: usize| topology::single_ring(n).and_then(|s| AllGatherPlan::new(&s));
    vec![
        sp_row::<bf16>(dev, "tasp causal", tasp(5), 43, true, 0x5a_0001),
        sp_row::<f16>(dev, "tasp full", tasp(8), 117, false, 0x5a_0002),
        sp_row::<f16>(dev, "tasp-fallback causal", tasp(4), 50, true, 0x5a_0003),
        sp_row::<bf16>(dev, "ring causal", ring(8), 117, true, 0x5a_0004),
    ]
}
