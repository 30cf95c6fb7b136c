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

// ---- data that reaches every path -----------------------------------------------------------------

/// The kinds of checkpoint pair the ckpt rows (bitmask, codec) use. The dense pair alone makes
/// every 256-value pack block full-width (some large change in every block, at every lane group)
/// and, for the codec, had its non-finite values stripped: a block max that reads the wrong lanes
/// or misses a barrier gives the same answer on it. The other kinds are built so that it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    /// [`checkpoint_pair`] at 23%: dense random changes, NaN and -0.0 among them.
    Dense,
    /// A handful of changes: the first and last elements, the edges of mask words (31/32), pack
    /// blocks (255/256) and bitmask blocks (8191/8192), plus `changes` random positions; each by one
    /// ulp up or down, a sign flip, or +0.0 -> -0.0. Most mask words and whole blocks are zero.
    Tiny,
    /// Exactly `changes` changed elements; each moves by one ulp (zigzag delta 1 or 2) except about
    /// one in 300, a large change. So pack blocks have mixed widths, and a block's width is set by
    /// one value at a random lane (or no large value at all).
    Ulp,
    /// Exactly `changes` changed elements among bases that are 1/8 special (NaN with payloads,
    /// signalling NaN, +-Inf, +-0.0, subnormals, the largest finite, the smallest normal) and
    /// 1/16 subnormal; a change goes to a special, one ulp up or down (Inf -> NaN or max finite),
    /// a sign flip, a subnormal, or a random finite value.
    Special,
}

impl PairKind {
    pub fn name(self) -> &'static str {
        match self {
            PairKind::Dense => "dense",
            PairKind::Tiny => "tiny",
            PairKind::Ulp => "ulp",
            PairKind::Special => "special",
        }
    }
}

/// Bit patterns of the special values of `T` (f32, f16, bf16): quiet NaN, signalling NaN, a
/// negative NaN with a payload, +Inf, -Inf, +0.0, -0.0, the smallest subnormal, the largest
/// negative subnormal, a middle subnormal, +-the largest finite, the smallest normal.
fn special_bits<T: Float>() -> [u32; 13] {
    use crate::dtype::DTypeKind;
    match T::KIND {
        DTypeKind::F16 => [
            0x7e00, 0x7c01, 0xfe12, 0x7c00, 0xfc00, 0, 0x8000, 0x0001, 0x83ff, 0x0200, 0x7bff,
            0xfbff, 0x0400,
        ],
        DTypeKind::BF16 => [
            0x7fc0, 0x7f81, 0xffc1, 0x7f80, 0xff80, 0, 0x8000, 0x0001, 0x807f, 0x0040, 0x7f7f,
            0xff7f, 0x0080,
        ],
        _ => [
            0x7fc0_0000,
            0x7f80_0001,
            0xffc0_0123,
            0x7f80_0000,
            0xff80_0000,
            0,
            0x8000_0000,
            0x0000_0001,
            0x807f_ffff,
            0x0040_0000,
            0x7f7f_ffff,
            0xff7f_ffff,
            0x0080_0000,
        ],
    }
}

fn elem_bits<T: Float>(x: T) -> u32 {
    crate::reference::codec::bits_of(x)
}

fn elem_from_bits<T: Float>(b: u32) -> T {
    crate::reference::codec::from_bits(b)
}

/// `x` moved by one unit in the last place of its bit pattern (up or down in magnitude); a zero
/// flips its sign instead (+0.0 and -0.0 are neighbours in the codec's order).
fn ulp_step<T: Float>(x: T, up: bool) -> T {
    let w = 8 * std::mem::size_of::<T>() as u32;
    let sign = 1u32 << (w - 1);
    let b = elem_bits(x);
    if b & !sign == 0 {
        return elem_from_bits(b ^ sign);
    }
    elem_from_bits(if up { b + 1 } else { b - 1 })
}

/// A random subnormal of `T` (exponent field 0, non-zero mantissa, random sign).
fn subnormal<T: Float>(r: &mut Rng) -> T {
    use crate::dtype::DTypeKind;
    let (w, mant) = match T::KIND {
        DTypeKind::F16 => (16, 10),
        DTypeKind::BF16 => (16, 7),
        _ => (32, 23),
    };
    let m = (r.next_u64() % ((1u64 << mant) - 1)) as u32 + 1;
    let s = (r.next_u64() & 1) as u32;
    elem_from_bits((s << (w - 1)) | m)
}

/// `m` distinct indices of `0..n`, ascending (selection sampling: exactly `min(m, n)`).
fn choose(n: usize, m: usize, r: &mut Rng) -> Vec<usize> {
    let mut out = Vec::with_capacity(m.min(n));
    for i in 0..n {
        let (need, left) = (m.min(n) - out.len(), n - i);
        if need > 0 && (r.unit() * left as f64) < need as f64 {
            out.push(i);
        }
    }
    out
}

/// A checkpoint pair of `n` elements of the given kind (see [`PairKind`]; `changes` is the number
/// of changed elements for `Ulp` and `Special`, the number of random extra ones for `Tiny`, and
/// unused for `Dense`).
pub fn pair<T: Float>(kind: PairKind, n: usize, changes: usize, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut r = Rng(seed);
    let finite = |r: &mut Rng| T::from_f64((r.unit() - 0.5) * 0.2);
    match kind {
        PairKind::Dense => checkpoint_pair(n, 0.23, seed),
        PairKind::Tiny => {
            let mut base: Vec<T> = (0..n).map(|_| finite(&mut r)).collect();
            if n > 31 {
                base[31] = T::from_f64(0.0);
            }
            let mut new = base.clone();
            let mut at: Vec<usize> = [0, 31, 32, 255, 256, 8191, 8192, n.saturating_sub(1)]
                .into_iter()
                .chain((0..changes).map(|_| (r.next_u64() % n.max(1) as u64) as usize))
                .filter(|&i| i < n)
                .collect();
            at.sort_unstable();
            at.dedup();
            for (k, &i) in at.iter().enumerate() {
                new[i] = match k % 3 {
                    0 => ulp_step(base[i], true),
                    1 => ulp_step(base[i], false),
                    _ => T::from_f64(-base[i].to_f64()),
                };
            }
            (base, new)
        }
        PairKind::Ulp => {
            let base: Vec<T> = (0..n).map(|_| finite(&mut r)).collect();
            let mut new = base.clone();
            for i in choose(n, changes, &mut r) {
                new[i] = if r.next_u64() % 300 == 0 {
                    let x = finite(&mut r);
                    if elem_bits(x) == elem_bits(base[i]) {
                        ulp_step(x, true)
                    } else {
                        x
                    }
                } else {
                    ulp_step(base[i], r.next_u64() & 1 == 0)
                };
            }
            (base, new)
        }
        PairKind::Special => {
            let sp = special_bits::<T>();
            let base: Vec<T> = (0..n)
                .map(|_| match r.next_u64() % 16 {
                    0 | 1 => elem_from_bits(sp[(r.next_u64() % sp.len() as u64) as usize]),
                    2 => subnormal(&mut r),
                    _ => finite(&mut r),
                })
                .collect();
            let mut new = base.clone();
            let w = 8 * std::mem::size_of::<T>() as u32;
            for i in choose(n, changes, &mut r) {
                let b = elem_bits(base[i]);
                let x: T = match r.next_u64() % 8 {
                    0 | 1 => {
                        let j = (r.next_u64() % sp.len() as u64) as usize;
                        let s = if sp[j] == b {
                            sp[(j + 1) % sp.len()]
                        } else {
                            sp[j]
                        };
                        elem_from_bits(s)
                    }
                    2 => ulp_step(base[i], true),
                    3 => ulp_step(base[i], false),
                    4 => elem_from_bits(b ^ (1 << (w - 1))),
                    5 => subnormal(&mut r),
                    _ => finite(&mut r),
                };
                new[i] = if elem_bits(x) == b {
                    elem_from_bits(b ^ (1 << (w - 1)))
                } else {
                    x
                };
            }
            (base, new)
        }
    }
}

// ---- naming the op that failed ----------------------------------------------------------------

/// The op a kernel belongs to, for kernels that an op reaches through another op (a chain: e.g.
/// `parallel::attention::forward_simulated` runs `attention::forward` and `attention::merge`).
fn op_of_kernel(kernel: &str) -> Option<&'static str> {
    const OPS: &[(&str, &str)] = &[
        ("attn_tile_meta", "attention::forward"),
        ("attn_fwd_", "attention::forward"),
        ("attn_decode_split_", "attention::decode_partials"),
        ("attn_merge", "attention::merge"),
        ("bitmask_mask_", "bitmask::sparsify"),
        ("bitmask_densify_", "bitmask::densify"),
        ("codec_widths_delta_", "codec::delta_encode"),
        ("codec_pack_delta_", "codec::delta_encode"),
        ("codec_unpack_delta_", "codec::delta_decode"),
        ("codec_delta_f32_", "codec::delta_f32"),
        ("codec_to_f32_", "codec::to_f32"),
        ("codec_minmax", "codec::kmeans"),
        ("codec_kmeans_", "codec::kmeans"),
        ("codec_widths_idx", "codec::pack_indices"),
        ("codec_pack_idx", "codec::pack_indices"),
        ("codec_dequantize_", "codec::dequantize"),
        ("tah_select_", "tah::select_hard"),
        ("tah_gather_rows", "tah::gather_rows"),
        ("tah_scatter_rows", "tah::scatter_rows"),
        ("tah_next_input_", "tah::next_depth_input"),
        ("tah_accumulate", "tah::accumulate_logits"),
    ];
    OPS.iter()
        .find(|(prefix, _)| kernel.starts_with(prefix))
        .map(|&(_, op)| op)
}

/// The message of a row whose `op` returned `e`: "`op` failed: ..." and, when the failing kernel
/// belongs to an op that `op` ran inside it, "`op` failed in `inner`: ..." (the kernel's own
/// name follows in the error: "simt: kernel attn_merge: ...").
pub fn failed(op: &str, e: &crate::error::Error) -> String {
    use crate::error::Error;
    let inner = match e {
        Error::Kernel { kernel, .. } => op_of_kernel(kernel).filter(|&i| i != op),
        Error::InvalidArgument { op: inner, .. } if *inner != op => Some(*inner),
        _ => None,
    };
    let msg = e.to_string();
    let msg = msg
        .strip_prefix(op)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(&msg);
    match inner {
        Some(i) => format!("{op} failed in {i}: {msg}"),
        None => format!("{op} failed: {msg}"),
    }
}

/// Run one op of a chain (with the downloads of its outputs) and wait for the device, so that a
/// fault is charged to the op that launched it (HIP launches return before the kernel ends); an
/// error names the op (see [`failed`]).
fn stage<T>(
    dev: &Device,
    op: &str,
    f: impl FnOnce() -> Result<T>,
) -> std::result::Result<T, String> {
    f().and_then(|v| dev.synchronize().map(|()| v))
        .map_err(|e| failed(op, &e))
}

/// Index of the first difference of two slices (the shorter length when one is a prefix).
fn first_diff<A: PartialEq>(a: &[A], b: &[A]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

/// Upload for a check (an error names the upload, not an op).
fn up<T: crate::dtype::DType>(
    dev: &Device,
    x: &[T],
    label: &str,
) -> std::result::Result<crate::device::DeviceBuffer<T>, String> {
    dev.upload(x, label)
        .map_err(|e| format!("upload of {label} failed: {e}"))
}

/// The threshold of the bitmask rows on the non-dense pairs: 2^-10, exact in every dtype, so the
/// tiny pair's changes of exactly tau (dropped) and one ulp more (kept) are exact in f32.
pub const TAU_EDGE: f32 = 1.0 / 1024.0;

/// Check sparsify and densify of one dtype on one device on a pair of `kind` (see [`pair`]) and
/// threshold `tau`. Densify gets the reference mask and values, so each row checks its own op.
fn check_bitmask<T: Float>(
    dev: &Device,
    kind: PairKind,
    n: usize,
    changes: usize,
    tau: f32,
    seed: u64,
) -> [Row; 2] {
    let (mut base, mut new) = pair::<T>(kind, n, changes, seed);
    if kind == PairKind::Tiny {
        // Changes of exactly tau (dropped when tau = TAU_EDGE) and one ulp more (kept).
        for (k, i) in [63usize, 95, 8223]
            .into_iter()
            .filter(|&i| i < n)
            .enumerate()
        {
            base[i] = T::from_f64(0.25);
            let x = T::from_f64(0.25 - TAU_EDGE as f64);
            new[i] = if k == 1 { ulp_step(x, false) } else { x };
        }
    }
    let (ref_mask, ref_vals) = reference::sparsify(&base, &new, tau);
    let ref_dense = reference::densify(&base, &ref_mask, &ref_vals);
    let dt = T::KIND.name();
    let row = |op: &str, r: std::result::Result<(), String>| Row {
        op: op.into(),
        dtype: dt.into(),
        executor: dev.backend().to_string(),
        sizes: format!("{} n={n} tau={tau} changed={}", kind.name(), ref_vals.len()),
        error: "exact".into(),
        pass: r.is_ok(),
        detail: r.err().unwrap_or_default(),
    };
    // Independent of the reference: every mask bit agrees with the elementwise rule.
    let rule_ok = (0..n).all(|i| {
        (ref_mask[i / 32] >> (i % 32) & 1 == 1) == reference::changed(base[i], new[i], tau)
    });
    let sp = (|| {
        let b = up(dev, &base, "base")?;
        let x = up(dev, &new, "new")?;
        let (mask, vals) = stage(dev, "bitmask::sparsify", || {
            let s = bitmask::sparsify(&b, &x, tau)?;
            Ok((s.mask.download()?, s.values.download()?))
        })?;
        if !rule_ok {
            Err("reference mask disagrees with the elementwise rule".to_string())
        } else if let Some(i) = first_diff(&mask, &ref_mask) {
            Err(format!(
                "mask differs from the reference at word {i} (kernel bitmask_mask_{dt})"
            ))
        } else if let Some(i) = first_diff(&bits(&vals), &bits(&ref_vals)) {
            Err(format!(
                "values differ from the reference at {i} ({} vs {} values; kernels \
                 bitmask_scan_counts, bitmask_compact_{dt})",
                vals.len(),
                ref_vals.len()
            ))
        } else {
            Ok(())
        }
    })();
    let dn = (|| {
        let b = up(dev, &base, "base")?;
        let m = up(dev, &ref_mask, "mask")?;
        let v = up(dev, &ref_vals, "values")?;
        let dense = stage(dev, "bitmask::densify", || {
            bitmask::densify_parts(&b, &m, &v)?.download()
        })?;
        if let Some(i) = first_diff(&bits(&dense), &bits(&ref_dense)) {
            Err(format!(
                "densified tensor differs from the reference at {i} (kernel bitmask_densify_{dt})"
            ))
        } else if tau == 0.0 && bits(&dense) != bits(&new) {
            Err("lossless round trip is not exact".to_string())
        } else {
            Ok(())
        }
    })();
    [row("bitmask.sparsify", sp), row("bitmask.densify", dn)]
}

/// Sizes of the dense bitmask rows: empty, one element, a partial word, a bitmask block (8192
/// elements) - 1, exactly, + 1, a prime spanning blocks, and 2^20 + 17.
pub const SIZES: &[usize] = &[0, 1, 33, 8191, 8192, 8193, 100_003, (1 << 20) + 17];

/// The non-dense bitmask cases (kind, n, changes), each at tau 0 and [`TAU_EDGE`].
pub const BITMASK_EDGE_CASES: &[(PairKind, usize, usize)] = &[
    (PairKind::Tiny, 1, 0),
    (PairKind::Tiny, 33, 2),
    (PairKind::Tiny, 8193, 3),
    (PairKind::Tiny, 100_003, 5),
    (PairKind::Ulp, 257, 64),
    (PairKind::Ulp, 100_003, 25_000),
    (PairKind::Special, 1, 1),
    (PairKind::Special, 33, 11),
    (PairKind::Special, 8193, 2_000),
    (PairKind::Special, 100_003, 30_000),
];

/// A tiny pair of more than 256 bitmask blocks, so that the one-block scan of the block counts
/// (`bitmask_scan_counts`) carries over several tiles; f16 only, tau 0 (the scan is the same
/// kernel for every dtype, and the other cases cover the rest).
pub const BITMASK_SCAN_CASE: (PairKind, usize, usize) = (PairKind::Tiny, (1 << 21) + 8193, 5);

/// The bitmask rows of one device: every dtype on the dense pair at [`SIZES`] (tau 0 and 1e-3)
/// and on [`BITMASK_EDGE_CASES`] (tau 0 and [`TAU_EDGE`]), and [`BITMASK_SCAN_CASE`].
fn check_bitmask_all(dev: &Device) -> Vec<Row> {
    let mut cases: Vec<(PairKind, usize, usize, f32, u64)> = Vec::new();
    for (k, &n) in SIZES.iter().enumerate() {
        for tau in [0.0f32, 1e-3] {
            cases.push((PairKind::Dense, n, 0, tau, 0x7e55_e7a0 + k as u64));
        }
    }
    for (k, &(kind, n, changes)) in BITMASK_EDGE_CASES.iter().enumerate() {
        for tau in [0.0f32, TAU_EDGE] {
            cases.push((kind, n, changes, tau, 0xb175_0000 + k as u64));
        }
    }
    let mut rows = Vec::new();
    for (kind, n, changes, tau, seed) in cases {
        rows.extend(check_bitmask::<f32>(dev, kind, n, changes, tau, seed));
        rows.extend(check_bitmask::<f16>(dev, kind, n, changes, tau, seed));
        rows.extend(check_bitmask::<bf16>(dev, kind, n, changes, tau, seed));
    }
    let (kind, n, changes) = BITMASK_SCAN_CASE;
    rows.extend(check_bitmask::<f16>(
        dev,
        kind,
        n,
        changes,
        0.0,
        0xb175_1000,
    ));
    rows
}

/// Run every check on the given devices.
pub fn run(devices: &[(Device, &'static str)]) -> Vec<Row> {
    let mut rows = Vec::new();
    for (dev, _) in devices {
        rows.extend(check_bitmask_all(dev));
        rows.extend(check_codec_all(dev));
        rows.extend(check_attention(dev));
        rows.extend(check_tah(dev));
        rows.extend(check_decode::<f16>(dev));
        rows.extend(check_decode::<bf16>(dev));
        rows.extend(check_merge(dev));
        rows.extend(check_sequence_parallel(dev));
    }
    rows
}

/// Sizes of the dense codec rows (dense tensor lengths; about 23% of the elements change).
pub const CODEC_SIZES: &[usize] = &[1, 4099, 150_001];

/// The non-dense codec cases (kind, n, changes): changed counts of a handful, 255, 256 and 257
/// (a partial, an exactly full, and a full plus a one-value pack block), many mixed-width blocks,
/// and non-finite values.
pub const CODEC_EDGE_CASES: &[(PairKind, usize, usize)] = &[
    (PairKind::Tiny, 8193, 3),
    (PairKind::Ulp, 600, 255),
    (PairKind::Ulp, 509, 256),
    (PairKind::Ulp, 1031, 257),
    (PairKind::Ulp, 30_011, 7_500),
    (PairKind::Special, 1, 1),
    (PairKind::Special, 4099, 1_500),
];

/// The codec rows of one device: every dtype on the dense pairs at [`CODEC_SIZES`] and on
/// [`CODEC_EDGE_CASES`].
fn check_codec_all(dev: &Device) -> Vec<Row> {
    let cases = CODEC_SIZES
        .iter()
        .enumerate()
        .map(|(k, &n)| (PairKind::Dense, n, 0, 0xc0de_c000 + k as u64))
        .chain(
            CODEC_EDGE_CASES
                .iter()
                .enumerate()
                .map(|(k, &(kind, n, c))| (kind, n, c, 0xc0de_e000 + k as u64)),
        );
    let mut rows = Vec::new();
    for (kind, n, changes, seed) in cases {
        rows.extend(check_codec::<f32>(dev, kind, n, changes, seed));
        rows.extend(check_codec::<f16>(dev, kind, n, changes, seed));
        rows.extend(check_codec::<bf16>(dev, kind, n, changes, seed));
    }
    rows
}

/// The codec ops on one dtype and device, one row each, each op given the reference's inputs (so
/// a row fails for its own op only): gather of the changed base and new values, lossless delta
/// encode/decode, the f32 deltas, widening to f32, k-means (4 bits) of the finite deltas (and,
/// when some deltas are NaN or infinite, a row that k-means refuses them with the exact count),
/// index packing, and dequantisation against the base values. Every row but k-means is bit-exact
/// against the reference; k-means reports the largest centroid error relative to the value range.
fn check_codec<T: Float>(
    dev: &Device,
    kind: PairKind,
    n: usize,
    changes: usize,
    seed: u64,
) -> Vec<Row> {
    use crate::ops::codec::{self, Packed};
    use crate::reference::codec as cref;
    const BITS: u32 = 4;
    let (base, new) = pair::<T>(kind, n, changes, seed);
    let (mask, _) = reference::sparsify(&base, &new, 0.0);
    let rb = cref::gather(&base, &mask);
    let rx = cref::gather(&new, &mask);
    let (rw, rwid) = cref::delta_encode(&rb, &rx);
    let rd = cref::delta_f32(&rb, &rx);
    let rf = cref::to_f32(&rx);
    let bad = rd.iter().filter(|v| !v.is_finite()).count();
    // k-means takes finite values: it clusters the deltas with the non-finite ones set to 0.
    let rk: Vec<f32> = rd
        .iter()
        .map(|&v| if v.is_finite() { v } else { 0.0 })
        .collect();
    let (rc, ri, _) = cref::kmeans(&rk, 1 << BITS, 20, 1e-6);
    let (pw, pwid) = cref::pack_indices(&ri, BITS);
    let rq = cref::dequantize(&pw, &pwid, ri.len(), &rc, Some(&rb));
    let dt = T::KIND.name();
    let row = |op: &str, error: String, r: std::result::Result<(), String>| Row {
        op: op.into(),
        dtype: dt.into(),
        executor: dev.backend().to_string(),
        sizes: format!("{} n={n} changed={}", kind.name(), rb.len()),
        error,
        pass: r.is_ok(),
        detail: r.err().unwrap_or_default(),
    };
    let exact = |op: &str, r: std::result::Result<(), String>| row(op, "exact".into(), r);
    let differ = |what: &str, i: usize, kernel: &str| {
        Err(format!(
            "{what} differ from the reference at {i} (kernel {kernel})"
        ))
    };
    let f32_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let packed = |w: &[u32], wid: &[u8], count: usize| -> std::result::Result<Packed, String> {
        Ok(Packed {
            words: up(dev, w, "words")?,
            widths: up(dev, wid, "widths")?,
            count,
        })
    };
    let mut rows = Vec::new();

    let r = (|| {
        let b = up(dev, &base, "base")?;
        let x = up(dev, &new, "new")?;
        let m = up(dev, &mask, "mask")?;
        let (gb, gx) = stage(dev, "codec::gather", || {
            Ok((
                codec::gather(&b, &m, rb.len())?.download()?,
                codec::gather(&x, &m, rb.len())?.download()?,
            ))
        })?;
        match first_diff(&bits(&gb), &bits(&rb)).or(first_diff(&bits(&gx), &bits(&rx))) {
            Some(i) => Err(format!(
                "gathered values differ from the reference at {i} (kernels bitmask_popcount, \
                 bitmask_scan_counts, bitmask_compact_*)"
            )),
            None => Ok(()),
        }
    })();
    rows.push(exact("codec.gather", r));

    let r = (|| {
        let (b, x) = (up(dev, &rb, "base_vals")?, up(dev, &rx, "new_vals")?);
        let (w, wid) = stage(dev, "codec::delta_encode", || {
            let p = codec::delta_encode(&b, &x)?;
            Ok((p.words.download()?, p.widths.download()?))
        })?;
        if let Some(j) = first_diff(&wid, &rwid) {
            differ("block widths", j, &format!("codec_widths_delta_{dt}"))
        } else if w.len() != rw.len() {
            Err(format!(
                "{} packed words, the reference has {} (kernel codec_scan_widths)",
                w.len(),
                rw.len()
            ))
        } else if let Some(i) = first_diff(&w, &rw) {
            differ("packed words", i, &format!("codec_pack_delta_{dt}"))
        } else {
            Ok(())
        }
    })();
    rows.push(exact("codec.delta_encode", r));

    let r = (|| {
        let b = up(dev, &rb, "base_vals")?;
        let p = packed(&rw, &rwid, rb.len())?;
        let dec = stage(dev, "codec::delta_decode", || {
            codec::delta_decode(&b, &p)?.download()
        })?;
        match first_diff(&bits(&dec), &bits(&rx)) {
            Some(i) => differ("decoded values", i, &format!("codec_unpack_delta_{dt}")),
            None => Ok(()),
        }
    })();
    rows.push(exact("codec.delta_decode", r));

    if kind == PairKind::Tiny {
        // The whole tensors (not only the changed values): blocks of unchanged values have
        // width 0 (no words; the decoder's width-0 path).
        let (fw, fwid) = cref::delta_encode(&base, &new);
        let r = (|| {
            let (b, x) = (up(dev, &base, "base")?, up(dev, &new, "new")?);
            let (w, wid) = stage(dev, "codec::delta_encode", || {
                let p = codec::delta_encode(&b, &x)?;
                Ok((p.words.download()?, p.widths.download()?))
            })?;
            if let Some(j) = first_diff(&wid, &fwid) {
                return differ("block widths", j, &format!("codec_widths_delta_{dt}"));
            } else if let Some(i) = first_diff(&w, &fw) {
                return differ("packed words", i, &format!("codec_pack_delta_{dt}"));
            }
            let p = packed(&fw, &fwid, n)?;
            let dec = stage(dev, "codec::delta_decode", || {
                codec::delta_decode(&b, &p)?.download()
            })?;
            match first_diff(&bits(&dec), &bits(&new)) {
                Some(i) => differ("decoded values", i, &format!("codec_unpack_delta_{dt}")),
                None => Ok(()),
            }
        })();
        rows.push(Row {
            sizes: format!("tiny n={n}, all values (width-0 blocks)"),
            ..exact("codec.delta_encode+decode", r)
        });
    }

    let r = (|| {
        let (b, x) = (up(dev, &rb, "base_vals")?, up(dev, &rx, "new_vals")?);
        let d = stage(dev, "codec::delta_f32", || {
            codec::delta_f32(&b, &x)?.download()
        })?;
        match first_diff(&f32_bits(&d), &f32_bits(&rd)) {
            Some(i) => differ("deltas", i, &format!("codec_delta_f32_{dt}")),
            None => Ok(()),
        }
    })();
    rows.push(exact("codec.delta_f32", r));

    let r = (|| {
        let x = up(dev, &rx, "values")?;
        let f = stage(dev, "codec::to_f32", || codec::to_f32(&x)?.download())?;
        match first_diff(&f32_bits(&f), &f32_bits(&rf)) {
            Some(i) => differ("widened values", i, &format!("codec_to_f32_{dt}")),
            None => Ok(()),
        }
    })();
    rows.push(exact("codec.to_f32", r));

    let r = (|| {
        let d = up(dev, &rk, "deltas")?;
        let (c, idx) = stage(dev, "codec::kmeans", || {
            let km = codec::kmeans(&d, BITS, 20, 1e-6)?;
            Ok((km.centroids, km.indices.download()?))
        })?;
        let (lo, hi, _) = cref::min_max(&rk);
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
                        .any(|m| ((rk[i] - m).abs() as f64) <= 1e-6 * range)
            });
        let res = if c.len() != rc.len() || cerr > 1e-5 {
            Err(format!("centroid error {cerr:.2e} > 1e-5 of the range"))
        } else if !idx_ok {
            Err("indices differ from the reference away from a midpoint".into())
        } else {
            Ok(())
        };
        Ok((cerr, res))
    })();
    rows.push(match r {
        Ok((cerr, res)) => row("codec.kmeans", format!("{cerr:.1e}"), res),
        Err(e) => row("codec.kmeans", "-".into(), Err(e)),
    });

    if bad > 0 {
        // The deltas as they are: k-means must refuse them and count every non-finite one (the
        // count is the reduction of codec_minmax).
        let r = (|| {
            let d = up(dev, &rd, "deltas")?;
            match codec::kmeans(&d, BITS, 20, 1e-6) {
                Ok(_) => Err(format!(
                    "codec::kmeans accepted {bad} non-finite values (kernel codec_minmax)"
                )),
                Err(crate::error::Error::InvalidArgument { msg, .. })
                    if msg.contains("values must be finite") =>
                {
                    if msg.contains(&format!(", {bad} are NaN or infinite")) {
                        Ok(())
                    } else {
                        Err(format!(
                            "codec::kmeans: {msg}; the reference counts {bad} (kernel codec_minmax)"
                        ))
                    }
                }
                Err(e) => Err(failed("codec::kmeans", &e)),
            }
        })();
        rows.push(exact("codec.kmeans non-finite", r));
    }

    let r = (|| {
        let i = up(dev, &ri, "indices")?;
        let (w, wid) = stage(dev, "codec::pack_indices", || {
            let p = codec::pack_indices(&i, BITS)?;
            Ok((p.words.download()?, p.widths.download()?))
        })?;
        if let Some(j) = first_diff(&wid, &pwid) {
            differ("block widths", j, "codec_widths_idx")
        } else if let Some(k) = first_diff(&w, &pw) {
            differ("packed words", k, "codec_pack_idx")
        } else {
            Ok(())
        }
    })();
    rows.push(exact("codec.pack_indices", r));

    let r = (|| {
        let p = packed(&pw, &pwid, ri.len())?;
        let b = up(dev, &rb, "base_vals")?;
        let q = stage(dev, "codec::dequantize", || {
            codec::dequantize(&p, &rc, Some(&b))?.download()
        })?;
        match first_diff(&bits(&q), &bits(&rq)) {
            Some(i) => differ("dequantized values", i, &format!("codec_dequantize_{dt}")),
            None => Ok(()),
        }
    })();
    rows.push(exact("codec.dequantize", r));
    rows
}

/// One prefill attention case of the verify rows. Tiles are 64 query rows and 32 keys, so the
/// lengths give partial Q and K/V tiles, and the masks below give every tile class.
struct AttnSpec {
    name: &'static str,
    mode: crate::ops::attention::MaskMode,
    /// Sequence lengths (queries and keys alike; 0 and 1 allowed).
    seqs: &'static [usize],
    heads: usize,
    kv_heads: usize,
    d: usize,
    /// Implicit positions `t + offset` for (queries, keys) (full/causal only).
    offsets: Option<(i32, i32)>,
    /// Runs of invalid key slots: (sequence, first slot, end slot) relative to the sequence.
    invalid: &'static [(usize, usize, usize)],
    /// About 5% of the key slots invalid at random as well.
    random_invalid: bool,
}

/// The prefill cases: which tile classes, row kinds and paths each reaches is in
/// docs/architecture.md ("What each verify row reaches").
const ATTN_SPECS: &[AttnSpec] = &[
    // MHA, D = 128; a whole invalid K/V tile (skipped in full mode too), tiles with some invalid
    // slots (boundary), fully valid tiles; an empty sequence and a one-token sequence whose only
    // key is invalid (its row sees nothing: O = 0, LSE = -inf).
    AttnSpec {
        name: "full",
        mode: MaskMode::Full,
        seqs: &[77, 0, 1, 130],
        heads: 2,
        kv_heads: 2,
        d: 128,
        offsets: None,
        invalid: &[(2, 0, 1), (3, 8, 72)],
        random_invalid: false,
    },
    // GQA 2: tiles past the diagonal skipped, below it fully visible, on it boundary.
    AttnSpec {
        name: "causal",
        mode: MaskMode::Causal,
        seqs: &[77, 130],
        heads: 4,
        kv_heads: 2,
        d: 64,
        offsets: None,
        invalid: &[],
        random_invalid: false,
    },
    // GQA 4, queries ahead of the keys (every row sees keys).
    AttnSpec {
        name: "causal+offset",
        mode: MaskMode::Causal,
        seqs: &[77, 130],
        heads: 4,
        kv_heads: 1,
        d: 64,
        offsets: Some((40, -8)),
        invalid: &[],
        random_invalid: false,
    },
    // Queries behind the keys: rows at positions < 10 see no key, the one-token sequence skips
    // every K/V tile.
    AttnSpec {
        name: "causal-offset",
        mode: MaskMode::Causal,
        seqs: &[1, 77],
        heads: 4,
        kv_heads: 2,
        d: 64,
        offsets: Some((-20, 10)),
        invalid: &[],
        random_invalid: false,
    },
    // TaH two-depth layout (~10% hard positions, KV grouped by depth slot: depth-1 tiles skipped
    // by depth for depth-0 query tiles), 5% invalid slots, and the first 40 depth-0 slots of the
    // first sequence invalid (a whole invalid tile; depth-0 rows at positions < 40 see nothing).
    AttnSpec {
        name: "duo-causal",
        mode: MaskMode::DuoCausal,
        seqs: &[77, 130],
        heads: 4,
        kv_heads: 2,
        d: 128,
        offsets: None,
        invalid: &[(0, 0, 40)],
        random_invalid: true,
    },
];

/// A prefill problem built from an [`AttnSpec`]: packed rows (queries and keys share the
/// layout), positions and depths, key validity (None: all valid) and f32 values exact in `T`.
struct AttnCase {
    mode: crate::ops::attention::MaskMode,
    heads: usize,
    kv_heads: usize,
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

fn attn_case<T: Float>(s: &AttnSpec, seed: u64) -> AttnCase {
    let mut r = Rng(seed);
    let duo = s.mode == MaskMode::DuoCausal;
    let (mut cu, mut pos, mut depth) = (vec![0i32], vec![], vec![]);
    for &len in s.seqs {
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
    let valid = (s.random_invalid || !s.invalid.is_empty()).then(|| {
        let mut v: Vec<u8> = (0..n)
            .map(|_| u8::from(!s.random_invalid || r.unit() >= 0.05))
            .collect();
        for &(b, from, to) in s.invalid {
            let at = cu[b] as usize;
            v[at + from..at + to].fill(0);
        }
        v
    });
    let mut gen = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| T::from_f64((r.unit() - 0.5) * 4.0).to_f64() as f32)
            .collect()
    };
    let q = gen(n * s.heads * s.d);
    let k = gen(n * s.kv_heads * s.d);
    let v = gen(n * s.kv_heads * s.d);
    AttnCase {
        mode: s.mode,
        heads: s.heads,
        kv_heads: s.kv_heads,
        d: s.d,
        cu,
        pos,
        depth,
        valid,
        offsets: s.offsets,
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
        heads: c.heads,
        kv_heads: c.kv_heads,
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
) -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
    use crate::ops::attention::{self as attn, Positions};
    let upc = |x: &[f32]| -> Vec<T> { x.iter().map(|&y| T::from_f64(y as f64)).collect() };
    let (q, k, v) = (
        up(dev, &upc(&c.q), "q")?,
        up(dev, &upc(&c.k), "k")?,
        up(dev, &upc(&c.v), "v")?,
    );
    let cu = up(dev, &c.cu, "cu_seqlens")?;
    let pos = up(dev, &c.pos, "pos")?;
    let depth = up(dev, &c.depth, "depth")?;
    let valid = match &c.valid {
        Some(x) => Some(up(dev, x, "kv_valid")?),
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
    stage(dev, "attention::forward", || {
        let out = attn::forward(&attn::Attention {
            q: &q,
            k: &k,
            v: &v,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.d,
            cu_seqlens_q: &cu,
            cu_seqlens_kv: &cu,
            max_seqlen_q: attn::max_seqlen(&c.cu),
            max_seqlen_kv: attn::max_seqlen(&c.cu),
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
    })
}

/// Prefill attention (`attention::forward`): every case of [`ATTN_SPECS`] x path on one dtype
/// and device. Error: relative L2 of O; pass also needs LSE within 1e-3 (exactly -inf where the
/// reference is -inf).
fn check_attention_dtype<T: crate::ops::attention::HalfFloat>(dev: &Device) -> Vec<Row> {
    use crate::ops::attention::Path;
    let mut rows = Vec::new();
    let paths: &[Path] = if dev.backend().runs_kernels() {
        &[Path::TensorCore, Path::Scalar]
    } else {
        &[Path::Auto]
    };
    for (k, s) in ATTN_SPECS.iter().enumerate() {
        let c = attn_case::<T>(s, 0xa77e_0000 + k as u64);
        let (ro, rl) = attn_reference(&c);
        let mut sizes = format!("seqs {:?} H={}/{} D={}", s.seqs, s.heads, s.kv_heads, s.d);
        if let Some((a, b)) = s.offsets {
            sizes += &format!(" pos q{a:+} kv{b:+}");
        }
        if s.random_invalid || !s.invalid.is_empty() {
            sizes += " invalid slots";
        }
        for &path in paths {
            let label = match path {
                Path::Auto => "auto",
                Path::TensorCore => "tensor-core",
                Path::Scalar => "scalar",
            };
            let mut row = Row {
                op: format!("attention.forward {} {label}", s.name),
                dtype: T::KIND.name().into(),
                executor: dev.backend().to_string(),
                sizes: sizes.clone(),
                error: String::new(),
                pass: false,
                detail: String::new(),
            };
            match attn_run::<T>(dev, &c, path) {
                Err(e) => {
                    row.error = "-".into();
                    row.detail = e;
                }
                Ok((o, l)) => {
                    let (mut num, mut den) = (0f64, 0f64);
                    for (&x, &y) in o.iter().zip(&ro) {
                        num += (x as f64 - y).powi(2);
                        den += y * y;
                    }
                    let e = (num / den.max(f64::MIN_POSITIVE)).sqrt();
                    // A row that sees no key has O = 0 exactly.
                    let zero_bad = rl
                        .iter()
                        .enumerate()
                        .filter(|(_, &y)| y == f64::NEG_INFINITY)
                        .find_map(|(j, _)| {
                            let (h, i) = (j / c.pos.len(), j % c.pos.len());
                            let at = (i * c.heads + h) * c.d;
                            o.get(at..at + c.d)
                                .is_none_or(|r| r.iter().any(|&x| x != 0.0))
                                .then_some((i, h))
                        });
                    let lse_bad = l.iter().zip(&rl).position(|(&x, &y)| {
                        if y == f64::NEG_INFINITY {
                            x != f32::NEG_INFINITY
                        } else {
                            (x as f64 - y).abs() > 1e-3 || x.is_nan()
                        }
                    });
                    row.error = format!("{e:.2e}");
                    row.pass = e <= 1e-2
                        && lse_bad.is_none()
                        && zero_bad.is_none()
                        && o.len() == ro.len()
                        && l.len() == rl.len();
                    if let Some(i) = lse_bad {
                        row.detail = format!("LSE[{i}] {} vs reference {}", l[i], rl[i]);
                    } else if let Some((i, h)) = zero_bad {
                        row.detail = format!("row {i} head {h} sees no key but O is not 0");
                    } else if e > 1e-2 {
                        row.detail = format!("O relative L2 {e:.2e} > 1e-2");
                    } else if o.len() != ro.len() || l.len() != rl.len() {
                        row.detail = "output lengths differ from the reference".into();
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

fn tah_row(
    dev: &Device,
    op: &str,
    dtype: &str,
    sizes: String,
    error: String,
    r: std::result::Result<(), String>,
) -> Row {
    Row {
        op: op.into(),
        dtype: dtype.into(),
        executor: dev.backend().to_string(),
        sizes,
        error,
        pass: r.is_ok(),
        detail: r.err().unwrap_or_default(),
    }
}

/// Selection, gather and scatter on `scores` with `threshold`, rows of width `d`. Gather and
/// scatter get the reference's indices, so each row checks its own op.
fn tah_select_rows(dev: &Device, scores: &[f32], threshold: f64, d: usize, seed: u64) -> Vec<Row> {
    use crate::drivers::tah;
    use crate::reference::tah as tref;
    let mut r = Rng(seed);
    let n = scores.len();
    let want = tref::select_hard(scores, tref::logit_threshold(threshold));
    let hidden: Vec<f32> = (0..n * d).map(|_| r.unit() as f32).collect();
    let gathered = tref::gather_rows(&hidden, &want, d);
    let upd: Vec<f32> = gathered.iter().map(|x| x * 2.0 - 1.0).collect();
    let mut scattered = hidden.clone();
    tref::scatter_rows(&upd, &want, d, &mut scattered);
    let sizes = format!("n={n} thr={threshold} active={} d={d}", want.len());
    let row = |op: &str, res| tah_row(dev, op, "f32", sizes.clone(), "exact".into(), res);
    let sel = (|| {
        let s = up(dev, scores, "scores")?;
        let (count, idx) = stage(dev, "tah::select_hard", || {
            let s = tah::select_hard(&s, threshold)?;
            Ok((s.count, s.indices.download()?))
        })?;
        if count != want.len() {
            Err(format!(
                "count {count}, the reference has {} (kernels tah_select_count, tah_scan_counts)",
                want.len()
            ))
        } else if let Some(i) = first_diff(&idx, &want) {
            Err(format!(
                "indices differ from the reference at {i} (kernel tah_select_compact)"
            ))
        } else {
            Ok(())
        }
    })();
    let gat = (|| {
        let h = up(dev, &hidden, "hidden")?;
        let i = up(dev, &want, "indices")?;
        let g = stage(dev, "tah::gather_rows", || {
            tah::gather_rows(&h, &i, d)?.download()
        })?;
        match first_diff(&g, &gathered) {
            Some(e) => Err(format!("rows differ from the reference at element {e}")),
            None => Ok(()),
        }
    })();
    let sca = (|| {
        let mut dst = up(dev, &hidden, "dst")?;
        let (u, i) = (up(dev, &upd, "upd")?, up(dev, &want, "indices")?);
        let sc = stage(dev, "tah::scatter_rows", || {
            tah::scatter_rows(&u, &i, d, &mut dst)?;
            dst.download()
        })?;
        match first_diff(&sc, &scattered) {
            Some(e) => Err(format!("rows differ from the reference at element {e}")),
            None => Ok(()),
        }
    })();
    vec![
        row("tah.select_hard", sel),
        row("tah.gather_rows", gat),
        row("tah.scatter_rows", sca),
    ]
}

/// The TaH driver kernels on one device: hard-token selection (exact indices and count; NaN,
/// +-Inf, +-0.0, subnormals and scores exactly at the threshold among the scores), row gather and
/// scatter (exact), the next-depth input (top-k ids exact, on distinct and on tied logits with
/// +-0.0; output relative L2 vs the f64 reference, f32 and half embedding tables, vocab up to 152k)
/// and logits accumulation (exact in f32, with +-Inf, +-0.0, subnormals and NaN among the inputs).
fn check_tah(dev: &Device) -> Vec<Row> {
    use crate::drivers::tah;
    use crate::reference::tah as tref;
    let mut rows = Vec::new();
    let mut r = Rng(0x7a4_0001);

    // Selection, gather, scatter: 391 blocks (the one-block scan carries over two tiles), every
    // 97th score special; and 257 scores (one full block and one of a single score) at threshold
    // 0.5, i.e. score > 0: +-0.0 are not selected, the smallest subnormal is.
    let thr = tref::logit_threshold(0.9);
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        thr,
        f32::from_bits(thr.to_bits() + 1),
        -0.0,
        0.0,
        f32::from_bits(1),
    ];
    let scores: Vec<f32> = (0..100_003)
        .map(|i| {
            let s = ((r.unit() - 0.5) * 12.0) as f32;
            if i % 97 == 5 {
                special[(r.next_u64() % special.len() as u64) as usize]
            } else {
                s
            }
        })
        .collect();
    rows.extend(tah_select_rows(dev, &scores, 0.9, 8, 0x7a4_0011));
    let small = [
        0.0,
        -0.0,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let scores: Vec<f32> = (0..257)
        .map(|i| {
            if i % 5 == 0 {
                small[(r.next_u64() % small.len() as u64) as usize]
            } else {
                (r.unit() - 0.5) as f32
            }
        })
        .collect();
    rows.extend(tah_select_rows(dev, &scores, 0.5, 3, 0x7a4_0012));

    // Next-depth input.
    #[allow(clippy::too_many_arguments)]
    fn next_input<E: Float>(
        dev: &Device,
        m: usize,
        vocab: usize,
        k: usize,
        d: usize,
        ties: bool,
        tol: f64,
        seed: u64,
    ) -> TahCase {
        let mut r = Rng(seed);
        let mut cum = Vec::with_capacity(m * vocab);
        for _ in 0..m {
            let mut row: Vec<f32> = (0..vocab)
                .map(|i| {
                    if ties {
                        // 23 levels, each ~vocab/23 times; +0.0 and -0.0 both present.
                        let v = ((i * 7919) % 23) as f32 * 0.25 - 2.75;
                        if v == 0.0 && i % 2 == 1 {
                            -0.0
                        } else {
                            v
                        }
                    } else {
                        (i as f32 - vocab as f32 / 2.0) * (8.0 / vocab as f32)
                    }
                })
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
        let sizes = format!(
            "m={m} V={vocab} k={k} d={d}{}",
            if ties { " tied logits" } else { "" }
        );
        let run = || -> std::result::Result<(Vec<f32>, Vec<u32>), String> {
            let (c, e) = (up(dev, &cum, "cum")?, up(dev, &emb, "emb")?);
            stage(dev, "tah::next_depth_input", || {
                let out = tah::next_depth_input(&c, vocab, k, &e, d)?;
                Ok((out.out.download()?, out.ids.download()?))
            })
        };
        match run() {
            Err(e) => (sizes, "-".into(), Err(e)),
            Ok((o, ids)) => {
                let err = tah_rel_l2(&o, &ro);
                let res = if let Some(i) = first_diff(&ids, &rids) {
                    Err(format!(
                        "top-k ids differ from the reference at {i} (row {}, rank {})",
                        i / k.max(1),
                        i % k.max(1)
                    ))
                } else if err.is_nan() || err > tol {
                    Err(format!("relative L2 {err:.2e} > {tol:.0e}"))
                } else {
                    Ok(())
                };
                (sizes, format!("{err:.2e}"), res)
            }
        }
    }
    let cases: [(&str, TahCase); 6] = [
        (
            "f32",
            next_input::<f32>(dev, 4, 32_000, 100, 64, false, 1e-5, 0x7a4_0002),
        ),
        (
            "bf16",
            next_input::<bf16>(dev, 4, 32_000, 100, 64, false, 1e-5, 0x7a4_0003),
        ),
        (
            "f16",
            next_input::<f16>(dev, 4, 32_000, 256, 64, false, 1e-5, 0x7a4_0004),
        ),
        (
            "bf16",
            next_input::<bf16>(dev, 1, 151_936, 100, 128, false, 1e-5, 0x7a4_0005),
        ),
        // Ties at the k-th value (lowest ids win), a vocab that is not a multiple of the block,
        // d > the block (each thread sums several columns).
        (
            "f32",
            next_input::<f32>(dev, 3, 1_000, 37, 300, true, 1e-5, 0x7a4_0006),
        ),
        // k = vocab < the block: everything selected, ranked with ties and -0.0 < +0.0.
        (
            "bf16",
            next_input::<bf16>(dev, 2, 200, 200, 16, true, 1e-5, 0x7a4_0007),
        ),
    ];
    for (dt, (sizes, err, res)) in cases {
        rows.push(tah_row(dev, "tah.next_depth_input", dt, sizes, err, res));
    }

    // Logits accumulation; every 101st input special. NaN payloads are not defined across
    // executors (x86 keeps an operand's, GPUs return a canonical NaN): a NaN sum must be NaN,
    // every other sum bit-exact.
    let n = (1 << 20) + 17;
    let specials = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        f32::from_bits(3),
        f32::from_bits(0x8000_0005),
        f32::MAX,
        f32::NAN,
    ];
    let draw = |r: &mut Rng, i: usize| {
        if i % 101 == 7 {
            specials[(r.next_u64() % specials.len() as u64) as usize]
        } else {
            ((r.unit() - 0.5) * 20.0) as f32
        }
    };
    let a: Vec<f32> = (0..n).map(|i| draw(&mut r, i)).collect();
    let b: Vec<f32> = (0..n).map(|i| draw(&mut r, i)).collect();
    let mut want = a.clone();
    tref::accumulate_logits(&mut want, &b);
    let res = (|| {
        let mut c = up(dev, &a, "cum")?;
        let l = up(dev, &b, "logits")?;
        let got = stage(dev, "tah::accumulate_logits", || {
            tah::accumulate_logits(&mut c, &l)?;
            c.download()
        })?;
        let same = |x: &f32, y: &f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        match got.iter().zip(&want).position(|(x, y)| !same(x, y)) {
            Some(i) => Err(format!(
                "sum {i} is {} (bits {:#x}), the reference {}",
                got[i],
                got[i].to_bits(),
                want[i]
            )),
            None if got.len() != want.len() => Err("length differs".into()),
            None => Ok(()),
        }
    })();
    rows.push(tah_row(
        dev,
        "tah.accumulate_logits",
        "f32",
        format!("n={n} specials"),
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
    decode_ops(dev, x, splits).map_err(|(_, e)| e)
}

/// [`decode_run`], with the op that failed ("upload", `attention::decode_partials` or
/// `attention::merge`); the device is synchronized after each op, so an asynchronous fault is
/// charged to the op that launched it.
fn decode_ops<T: HalfFloat>(
    dev: &Device,
    x: &DecodeInputs<T>,
    splits: usize,
) -> std::result::Result<DecodeRun, (&'static str, crate::error::Error)> {
    let upl = |e| ("upload", e);
    let q = dev.upload(&x.q, "q").map_err(upl)?;
    let k = dev.upload(&x.k, "k").map_err(upl)?;
    let v = dev.upload(&x.v, "v").map_err(upl)?;
    let cu_q = dev.upload(&x.cu_q, "cu_q").map_err(upl)?;
    let cu_kv = dev.upload(&x.cu_kv, "cu_kv").map_err(upl)?;
    let q_pos = dev.upload(&x.q_pos, "q_pos").map_err(upl)?;
    let kv_pos = dev.upload(&x.kv_pos, "kv_pos").map_err(upl)?;
    let q_depth = dev.upload(&x.q_depth, "q_depth").map_err(upl)?;
    let kv_depth = dev.upload(&x.kv_depth, "kv_depth").map_err(upl)?;
    let kv_valid = dev.upload(&x.kv_valid, "kv_valid").map_err(upl)?;
    let a = attn::Attention {
        q: &q,
        k: &k,
        v: &v,
        heads: x.heads,
        kv_heads: x.kv_heads,
        head_dim: x.head_dim,
        cu_seqlens_q: &cu_q,
        cu_seqlens_kv: &cu_kv,
        max_seqlen_q: attn::max_seqlen(&x.cu_q),
        max_seqlen_kv: attn::max_seqlen(&x.cu_kv),
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
    let partials = || -> Result<_> {
        let p = attn::decode_partials(&a, splits)?;
        dev.synchronize()?;
        let (o, l) = (p.o.download()?, p.lse.download()?);
        Ok((p, o, l))
    };
    let (p, o_part, lse_part) = partials().map_err(|e| ("attention::decode_partials", e))?;
    let merged = || -> Result<_> {
        let m = attn::merge(&p.o, &p.lse, splits, x.total_q(), x.heads, x.head_dim)?;
        dev.synchronize()?;
        Ok((m.o.download()?, m.lse.download()?))
    };
    let (o, lse) = merged().map_err(|e| ("attention::merge", e))?;
    Ok(DecodeRun {
        o_part,
        lse_part,
        o,
        lse,
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

/// One decode case of the verify rows: per-sequence query and key counts, heads, head dim, mode,
/// implicit positions, splits.
struct DecodeCase {
    name: &'static str,
    q_lens: &'static [usize],
    kv_lens: &'static [usize],
    heads: usize,
    kv_heads: usize,
    d: usize,
    mode: MaskMode,
    implicit: bool,
    splits: usize,
}

/// The three explicit-position cases: one per mode over the same ragged batch.
const fn decode_mode_case(name: &'static str, mode: MaskMode) -> DecodeCase {
    DecodeCase {
        name,
        q_lens: &[1, 2, 0, 1],
        kv_lens: &[300, 77, 0, 5],
        heads: 8,
        kv_heads: 2,
        d: 128,
        mode,
        implicit: false,
        splits: 3,
    }
}

const DECODE_CASES: &[DecodeCase] = &[
    decode_mode_case("full", MaskMode::Full),
    decode_mode_case("causal", MaskMode::Causal),
    decode_mode_case("duocausal", MaskMode::DuoCausal),
    // Implicit positions (queries at t + 1): most keys of the long sequences are in the future,
    // so many splits see nothing (-inf partials the merge skips); a query over no keys; a
    // sequence of 2 keys in 4 splits (empty ranges); GQA 12 = a chunk of 8 heads and one of 4;
    // D = 64 (2 elements per lane on wave32, 1 on wave64).
    DecodeCase {
        name: "causal implicit",
        q_lens: &[1, 1, 3, 2],
        kv_lens: &[2, 0, 257, 64],
        heads: 12,
        kv_heads: 1,
        d: 64,
        mode: MaskMode::Causal,
        implicit: true,
        splits: 4,
    },
];

/// Decode rows: [`DECODE_CASES`] on one dtype (errors of the partials, the merged O and LSE
/// against the f64 reference). A failure names the op of the chain it comes from:
/// `attention::decode_partials` (its error, or partials off the reference) or `attention::merge`.
fn check_decode<T: HalfFloat>(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for (ci, c) in DECODE_CASES.iter().enumerate() {
        let x = decode_inputs::<T>(
            c.q_lens,
            c.kv_lens,
            c.heads,
            c.kv_heads,
            c.d,
            c.mode,
            c.implicit,
            0xdec0 + ci as u64,
        );
        let (ro, rl) = x.reference(None);
        let (rpo, rpl) = x.reference_partials(c.splits);
        let r = decode_ops(dev, &x, c.splits)
            .map_err(|(op, e)| {
                if op == "upload" {
                    format!("upload failed: {e}")
                } else {
                    failed(op, &e)
                }
            })
            .map(|run| {
                [
                    rel_l2_inf_aware(&run.o_part, &rpo),
                    rel_l2_inf_aware(&run.lse_part, &rpl),
                    rel_l2_inf_aware(&run.o, &ro),
                    rel_l2_inf_aware(&run.lse, &rl),
                ]
            });
        let worst = r.as_ref().map(|e| e.iter().cloned().fold(0f64, f64::max));
        rows.push(Row {
            op: format!("attention.decode.{}", c.name),
            dtype: T::KIND.name().into(),
            executor: dev.backend().to_string(),
            sizes: format!(
                "q={:?} kv={:?} H={}/{} D={} S={}",
                c.q_lens, c.kv_lens, c.heads, c.kv_heads, c.d, c.splits
            ),
            error: worst.as_ref().map_or("-".into(), |w| format!("{w:.1e}")),
            pass: matches!(worst, Ok(w) if w <= DECODE_TOL),
            detail: match &r {
                Err(e) => e.clone(),
                Ok(e) if e[0].max(e[1]) > DECODE_TOL => format!(
                    "attention::decode_partials: o_part {:.1e} lse_part {:.1e} > {DECODE_TOL:.0e}",
                    e[0], e[1]
                ),
                Ok(e) if e[2].max(e[3]) > DECODE_TOL => format!(
                    "attention::merge: o {:.1e} lse {:.1e} > {DECODE_TOL:.0e} (partials within)",
                    e[2], e[3]
                ),
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

/// Merge rows on random partials (see [`merge_inputs`]): (splits, total_q, heads, D, LSE spread).
/// 3584 outputs (14 full blocks of 256 threads); 960 (a partial last block); one split.
const MERGE_CASES: &[(usize, usize, usize, usize, f64)] = &[
    (5, 7, 4, 128, 150.0),
    (2, 3, 5, 64, 30.0),
    (1, 2, 3, 64, 5.0),
];

fn check_merge(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for (ci, &(splits, total_q, heads, d, spread)) in MERGE_CASES.iter().enumerate() {
        let (o, lse) = merge_inputs(splits, total_q, heads, d, spread, 0x3e76e + ci as u64);
        let (ro, rl) = merge_reference(&o, &lse, splits, total_q, heads, d);
        let run = || -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
            let ob = up(dev, &o, "o_part")?;
            let lb = up(dev, &lse, "lse_part")?;
            stage(dev, "attention::merge", || {
                let m = attn::merge(&ob, &lb, splits, total_q, heads, d)?;
                Ok((m.o.download()?, m.lse.download()?))
            })
        };
        let r = run().map(|(mo, ml)| rel_l2_inf_aware(&mo, &ro).max(rel_l2_inf_aware(&ml, &rl)));
        rows.push(Row {
            op: "attention.merge".into(),
            dtype: "f32".into(),
            executor: dev.backend().to_string(),
            sizes: format!("S={splits} q={total_q} H={heads} D={d} lse±{spread}, -inf rows"),
            error: r.as_ref().map_or("-".into(), |e| format!("{e:.1e}")),
            pass: matches!(r, Ok(e) if e <= MERGE_TOL),
            detail: match r {
                Err(e) => e,
                Ok(e) if e > MERGE_TOL => format!("error {e:.1e} > {MERGE_TOL:.0e}"),
                Ok(_) => String::new(),
            },
        });
    }
    rows
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
        Err(e) => row.detail = failed("parallel::attention::forward_simulated", &e),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::codec as cref;

    /// Width of each 256-value pack block of the gathered changes, and how many values of the
    /// block reach it.
    fn widths_and_holders<T: Float>(base: &[T], new: &[T]) -> Vec<(u32, usize)> {
        let (mask, _) = reference::sparsify(base, new, 0.0);
        let (rb, rx) = (cref::gather(base, &mask), cref::gather(new, &mask));
        let w = 8 * std::mem::size_of::<T>() as u32;
        let zz: Vec<u32> = rb
            .iter()
            .zip(&rx)
            .map(|(&b, &x)| cref::bit_width(cref::delta_zz(elem_bits(b), elem_bits(x), w)))
            .collect();
        zz.chunks(256)
            .map(|c| {
                let m = *c.iter().max().unwrap();
                (m, c.iter().filter(|&&v| v == m).count())
            })
            .collect()
    }

    fn is_subnormal<T: Float>(x: T) -> bool {
        use crate::dtype::DTypeKind;
        let (exp, mant) = match T::KIND {
            DTypeKind::F16 => (0x7c00, 0x03ff),
            DTypeKind::BF16 => (0x7f80, 0x007f),
            _ => (0x7f80_0000, 0x007f_ffff),
        };
        let b = elem_bits(x);
        b & exp == 0 && b & mant != 0
    }

    fn changed<T: Float>(base: &[T], new: &[T]) -> usize {
        base.iter()
            .zip(new)
            .filter(|(b, x)| b.to_bits() != x.to_bits())
            .count()
    }

    fn kinds_reach_their_paths<T: Float>() {
        // Ulp: exactly the asked number of changes, narrow blocks, and blocks whose width is set
        // by a single value.
        let (b, x) = pair::<T>(PairKind::Ulp, 30_011, 7_500, 1);
        assert_eq!(changed(&b, &x), 7_500);
        let wh = widths_and_holders(&b, &x);
        assert!(wh.iter().any(|&(w, _)| w <= 2), "{wh:?}");
        assert!(wh.iter().any(|&(w, k)| w > 4 && k == 1), "{wh:?}");
        let (b, x) = pair::<T>(PairKind::Ulp, 1031, 257, 2);
        assert_eq!(changed(&b, &x), 257);
        // Special: NaN, infinities, zeros of both signs and subnormals on both sides.
        let (b, x) = pair::<T>(PairKind::Special, 4099, 1_500, 3);
        assert_eq!(changed(&b, &x), 1_500);
        for v in [&b, &x] {
            let f: Vec<f64> = v.iter().map(|e| e.to_f64()).collect();
            assert!(f.iter().any(|e| e.is_nan()));
            assert!(f.contains(&f64::INFINITY));
            assert!(f.contains(&f64::NEG_INFINITY));
            assert!(f.iter().any(|&e| e == 0.0 && e.is_sign_negative()));
            assert!(v.iter().any(|&e| is_subnormal(e)));
        }
        // Tiny: a handful of changes, most mask words empty.
        let (b, x) = pair::<T>(PairKind::Tiny, 100_003, 5, 4);
        let c = changed(&b, &x);
        assert!((8..=13).contains(&c), "{c}");
        for at in [0, 31, 8191, 8192, 100_002] {
            assert_ne!(b[at].to_bits(), x[at].to_bits(), "{at}");
        }
    }

    #[test]
    fn pair_kinds_reach_their_paths() {
        kinds_reach_their_paths::<f32>();
        kinds_reach_their_paths::<f16>();
        kinds_reach_their_paths::<bf16>();
    }

    #[test]
    fn a_failure_names_the_op_and_the_inner_op() {
        use crate::error::Error;
        let e = Error::kernel("simt", "attn_merge", "red zone overwritten");
        assert_eq!(
            failed("parallel::attention::forward_simulated", &e),
            "parallel::attention::forward_simulated failed in attention::merge: simt: kernel \
             attn_merge: red zone overwritten"
        );
        assert_eq!(
            failed("attention::merge", &e),
            "attention::merge failed: simt: kernel attn_merge: red zone overwritten"
        );
        let e = Error::invalid("codec::kmeans", "bits must be 2, 3, 4 or 8, got 5");
        assert_eq!(
            failed("codec::kmeans", &e),
            "codec::kmeans failed: bits must be 2, 3, 4 or 8, got 5"
        );
        let e = Error::kernel("simt", "tah_scan_counts", "divergence");
        assert_eq!(
            failed("tah::select_hard", &e),
            "tah::select_hard failed: simt: kernel tah_scan_counts: divergence"
        );
    }
}
