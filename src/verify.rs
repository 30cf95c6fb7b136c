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
            (64, Schedule::InOrder),
            (64, Schedule::Shuffled(0x5eed_0002)),
        ] {
            if let Ok(d) = Device::simt_with(SimtConfig {
                wave,
                schedule,
                workers: 0,
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
