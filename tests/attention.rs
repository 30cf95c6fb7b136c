//! Prefill attention (`attention::forward`) on every executor present (CPU path, host SIMT wave32
//! and wave64 in order and with two shuffled schedules each, CUDA/HIP when present), both paths,
//! against the f64 dense-mask reference: full, causal (with positive and negative offsets) and
//! duo-causal (depth-slot and random layouts, invalid slots), GQA 1/2/4, D 64/128, bf16 and f16,
//! varlen batches with empty and length-1 sequences. O: relative L2 <= 1e-2; LSE: abs 1e-3 where
//! finite, exactly -inf where the reference is -inf. Plus error cases.

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::attention::{
    self, Attention, AttentionOut, HalfFloat, MaskMode, Path, Positions,
};
use tessera::testing::{rel_l2, tol, Rng};
use tessera::verify::attention::Problem as Case;
use tessera::Device;

/// Every executor: (device, paths to run on it).
fn devices() -> Vec<Device> {
    tessera::testing::test_devices([21, 22])
}

/// Length of sequence b: mostly random, with empty and length-1 sequences mixed in.
fn seq_len(r: &mut Rng, max: usize) -> usize {
    match r.next_u64() % 6 {
        0 => 0,
        1 => 1,
        _ => (r.next_u64() % max as u64) as usize + 1,
    }
}

/// `layout`: 0 depth-slot grouped (sorted by position inside a slot), 1 random permutation.
#[allow(clippy::too_many_arguments)]
fn make_case<T: HalfFloat>(
    mode: MaskMode,
    batch: usize,
    max_len: usize,
    gqa: usize,
    d: usize,
    hard: f64,
    layout: u32,
    offsets: Option<(i32, i32)>,
    invalid: f64,
    seed: u64,
) -> Case {
    let mut r = Rng(seed);
    let kv_heads = 1 + (r.next_u64() % 2) as usize;
    let heads = kv_heads * gqa;
    let (mut cu_q, mut cu_kv) = (vec![0i32], vec![0i32]);
    let (mut q_pos, mut kv_pos, mut q_depth, mut kv_depth) = (vec![], vec![], vec![], vec![]);
    for _ in 0..batch {
        match mode {
            MaskMode::DuoCausal => {
                let t = seq_len(&mut r, max_len);
                let hard_set: Vec<bool> = (0..t).map(|_| r.unit() < hard).collect();
                // queries: every position at depth 0 then the hard ones at depth 1
                let mut qs: Vec<(i32, i32)> = (0..t as i32).map(|p| (p, 0)).collect();
                qs.extend((0..t).filter(|&p| hard_set[p]).map(|p| (p as i32, 1)));
                let mut ks = qs.clone();
                if layout == 1 {
                    r.shuffle(&mut ks);
                    r.shuffle(&mut qs);
                }
                for (p, dd) in &qs {
                    q_pos.push(*p);
                    q_depth.push(*dd);
                }
                for (p, dd) in &ks {
                    kv_pos.push(*p);
                    kv_depth.push(*dd);
                }
                cu_q.push(q_pos.len() as i32);
                cu_kv.push(kv_pos.len() as i32);
            }
            _ => {
                let (lq, lk) = match offsets {
                    Some(_) => (seq_len(&mut r, max_len), seq_len(&mut r, max_len)),
                    None => {
                        let l = seq_len(&mut r, max_len);
                        (l, l)
                    }
                };
                let (qo, ko) = offsets.unwrap_or((0, 0));
                q_pos.extend((0..lq as i32).map(|t| t + qo));
                kv_pos.extend((0..lk as i32).map(|t| t + ko));
                q_depth.extend(std::iter::repeat_n(0, lq));
                kv_depth.extend(std::iter::repeat_n(0, lk));
                cu_q.push(q_pos.len() as i32);
                cu_kv.push(kv_pos.len() as i32);
            }
        }
    }
    let (tq, tk) = (q_pos.len(), kv_pos.len());
    let kv_valid = (invalid > 0.0).then(|| {
        (0..tk)
            .map(|_| u8::from(r.unit() >= invalid) * (1 + (r.next_u64() % 3) as u8))
            .collect()
    });
    let mut gen = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| T::from_f64((r.unit() - 0.5) * 4.0).to_f32())
            .collect()
    };
    let q = gen(tq * heads * d);
    let k = gen(tk * kv_heads * d);
    let v = gen(tk * kv_heads * d);
    Case {
        heads,
        kv_heads,
        head_dim: d,
        cu_q,
        cu_kv,
        q_pos,
        kv_pos,
        implicit: if mode == MaskMode::DuoCausal {
            None
        } else {
            Some(offsets.unwrap_or((0, 0)))
        },
        q_depth,
        kv_depth,
        kv_valid,
        mode,
        q,
        k,
        v,
        scale: 1.0 / (d as f32).sqrt(),
    }
}

/// The attention case on every executor and path (both kernel paths on a kernel executor):
/// [`Case::check_forward`], the comparison the verify rows make.
fn check<T: HalfFloat>(c: &Case) -> Result<(), TestCaseError> {
    let reference = c.reference();
    for dev in devices() {
        let paths: &[Path] = if dev.backend().runs_kernels() {
            &[Path::Auto, Path::Scalar]
        } else {
            &[Path::Auto]
        };
        for &path in paths {
            let out = c.check_forward_against::<T>(&dev, path, &reference);
            prop_assert!(
                out.pass(),
                "{} {path:?} {:?}: O rel L2 {}: {}",
                dev.backend(),
                c.mode,
                out.error,
                out.result.unwrap_err()
            );
        }
    }
    Ok(())
}

fn check_any(c: &Case, is_bf16: bool) -> Result<(), TestCaseError> {
    if is_bf16 {
        check::<bf16>(c)
    } else {
        check::<f16>(c)
    }
}

fn gqa() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 2, 4])
}
fn head_dim() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![64usize, 128])
}

proptest! {
    // No failure persistence: a failing case must not write into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn full(batch in 1usize..4, g in gqa(), d in head_dim(), bf in any::<bool>(), seed: u64) {
        let c = make_case::<bf16>(MaskMode::Full, batch, 90, g, d, 0.0, 0, None, 0.0, seed);
        check_any(&c, bf)?;
    }

    #[test]
    fn causal(batch in 1usize..4, g in gqa(), d in head_dim(), bf in any::<bool>(),
              invalid in prop::sample::select(vec![0.0, 0.15]), seed: u64) {
        let c = make_case::<bf16>(MaskMode::Causal, batch, 110, g, d, 0.0, 0, None, invalid, seed);
        check_any(&c, bf)?;
    }

    #[test]
    fn causal_offsets(batch in 1usize..3, g in gqa(), d in head_dim(), bf in any::<bool>(),
                      qo in -40i32..80, ko in -40i32..40, seed: u64) {
        let c = make_case::<bf16>(MaskMode::Causal, batch, 90, g, d, 0.0, 0, Some((qo, ko)), 0.0, seed);
        check_any(&c, bf)?;
    }

    #[test]
    fn duo_causal(batch in 1usize..4, g in gqa(), d in head_dim(), bf in any::<bool>(),
                  hard in prop::sample::select(vec![0.06, 0.3, 1.0]), layout in 0u32..2,
                  invalid in prop::sample::select(vec![0.0, 0.1]), seed: u64) {
        let c = make_case::<bf16>(MaskMode::DuoCausal, batch, 100, g, d, hard, layout, None, invalid, seed);
        check_any(&c, bf)?;
    }
}

/// Several Q and K/V tiles per sequence with a depth-slot layout (full, boundary and skipped
/// tiles all occur), both dtypes, D = 128, GQA 4.
#[test]
fn duo_causal_multi_tile() {
    let c = make_case::<bf16>(MaskMode::DuoCausal, 1, 1, 4, 128, 0.06, 0, None, 0.0, 7);
    // one long sequence: rebuild with a fixed length of 200 positions
    let mut r = Rng(99);
    let t = 200usize;
    let hard: Vec<bool> = (0..t).map(|_| r.unit() < 0.06).collect();
    let mut q_pos: Vec<i32> = (0..t as i32).collect();
    let mut q_depth = vec![0; t];
    for p in (0..t).filter(|&p| hard[p]) {
        q_pos.push(p as i32);
        q_depth.push(1);
    }
    let n = q_pos.len();
    let c = Case {
        cu_q: vec![0, n as i32],
        cu_kv: vec![0, n as i32],
        kv_pos: q_pos.clone(),
        kv_depth: q_depth.clone(),
        q: r.values_in::<bf16>(n * c.heads * 128, 2.0),
        k: r.values_in::<bf16>(n * c.kv_heads * 128, 2.0),
        v: r.values_in::<bf16>(n * c.kv_heads * 128, 2.0),
        q_pos,
        q_depth,
        ..c
    };
    check::<bf16>(&c).unwrap();
    check::<f16>(&c).unwrap();
}

/// Every key invalid: O = 0 and LSE = -inf everywhere, on every executor and path.
#[test]
fn no_visible_keys() {
    let mut c = make_case::<f16>(MaskMode::Causal, 2, 40, 2, 64, 0.0, 0, None, 0.0, 5);
    c.kv_valid = Some(vec![0; c.kv_pos.len()]);
    check::<f16>(&c).unwrap();
}

fn expect_err(res: tessera::Result<attention::AttentionOut>, needle: &str) {
    match res {
        Err(tessera::Error::InvalidArgument { msg, .. }) => {
            assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}")
        }
        other => panic!("expected an InvalidArgument with {needle:?}, got {other:?}"),
    }
}

#[test]
fn errors() {
    for dev in [Device::cpu(), Device::simt()] {
        let d = 64;
        // Two heads over one K/V head, one sequence of 4 tokens, implicit positions, causal.
        let mut p = Case::single_sequence::<bf16>(4, 2, 1, d, MaskMode::Causal, 1);
        p.scale = 0.125;
        let up = p.upload::<bf16>(&dev).unwrap();
        let bad_cu = dev.upload(&[0, 3, 2], "cu").unwrap();
        let short_cu = dev.upload(&[0, 3], "cu").unwrap();
        let pos3 = dev.upload(&[0, 1, 2], "pos").unwrap();
        let depth = dev.upload(&[0, 0, 0, 0], "depth").unwrap();
        let base = up.attention(Path::Auto);
        assert!(attention::forward(&base).is_ok());
        let q96 = dev.upload(&vec![bf16::ZERO; 4 * 2 * 96], "q").unwrap();
        expect_err(
            attention::forward(&Attention {
                q: &q96,
                head_dim: 96,
                ..base
            }),
            "head_dim 96, supported: 64, 128",
        );
        expect_err(
            attention::forward(&Attention {
                heads: 3,
                kv_heads: 2,
                ..base
            }),
            "multiple of kv_heads",
        );
        // cu_seqlens contents are checked on the device (the CPU path: at once); the error
        // comes from AttentionOut::check, which the deferred checks need (issue 10).
        expect_err(
            attention::forward(&Attention {
                cu_seqlens_q: &bad_cu,
                cu_seqlens_kv: &bad_cu,
                ..base
            })
            .and_then(AttentionOut::checked),
            "decreases",
        );
        expect_err(
            attention::forward(&Attention {
                cu_seqlens_q: &short_cu,
                ..base
            })
            .and_then(AttentionOut::checked),
            "ends at 3",
        );
        expect_err(
            attention::forward(&Attention {
                max_seqlen_q: 3,
                ..base
            })
            .and_then(AttentionOut::checked),
            "cu_seqlens_q: sequence 0 has 4 tokens, more than max_seqlen_q 3",
        );
        expect_err(
            attention::forward(&Attention {
                q_pos: Positions::Explicit(&pos3),
                ..base
            }),
            "q_pos has 3 elements",
        );
        expect_err(
            attention::forward(&Attention {
                mode: MaskMode::DuoCausal,
                q_depth: Some(&depth),
                ..base
            }),
            "DuoCausal needs",
        );
        expect_err(
            attention::forward(&Attention {
                scale: f32::NAN,
                ..base
            }),
            "scale must be finite",
        );
        let k_short = dev.upload(&vec![bf16::ZERO; 3 * d], "k").unwrap();
        expect_err(
            attention::forward(&Attention {
                k: &k_short,
                ..base
            }),
            "v has",
        );
    }
    // buffers on another device
    let (a, b) = (Device::cpu(), Device::simt());
    let p = Case::single_sequence::<f16>(1, 1, 1, 64, MaskMode::Full, 2);
    let (on_a, on_b) = (p.upload::<f16>(&a).unwrap(), p.upload::<f16>(&b).unwrap());
    expect_err(
        attention::forward(&Attention {
            k: &on_b.k,
            v: &on_b.v,
            ..on_a.attention(Path::Scalar)
        }),
        "k is on",
    );
}

// ---- NaN and Inf (docs/architecture.md, "NaN and Inf in attention") ----------------------------
//
// Each test poisons a finite problem and builds the expected answer from the clean problem's
// reference by the documented rules, independently of the reference's own NaN handling; the
// reference, the CPU path and every kernel path must match it: NaN where NaN, the same infinity
// where infinite, and within the usual tolerances elsewhere.

/// One sequence of `n` tokens at positions `0..n`, random contents, all keys valid.
fn seq_case<T: HalfFloat>(
    mode: MaskMode,
    n: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    seed: u64,
) -> Case {
    let mut c = Case::single_sequence::<T>(n, heads, kv_heads, d, mode, seed);
    if mode == MaskMode::DuoCausal {
        c.implicit = None;
    }
    c
}

/// Whether query token `i` sees key token `j` in `c` (same sequence and visible).
fn sees(c: &Case, i: usize, j: usize) -> bool {
    let seq = |cu: &[i32], t: usize| {
        cu.windows(2)
            .position(|w| (w[0] as usize..w[1] as usize).contains(&t))
    };
    if seq(&c.cu_q, i) != seq(&c.cu_kv, j) {
        return false;
    }
    let valid = c.kv_valid.as_ref().map_or(1, |v| v[j]) != 0;
    valid
        && match c.mode {
            MaskMode::Full => true,
            MaskMode::Causal => c.kv_pos[j] <= c.q_pos[i],
            MaskMode::DuoCausal => c.kv_pos[j] <= c.q_pos[i] && c.kv_depth[j] <= c.q_depth[i],
        }
}

/// Index of element `e` of row `t`, head `h` in a `[tokens, heads, d]` tensor.
fn at(heads: usize, d: usize, t: usize, h: usize, e: usize) -> usize {
    (t * heads + h) * d + e
}

/// The clean reference of `c`, then: rows (i, h) with `nan(i, h)` all NaN (O and LSE); else O
/// entries listed by `inf(i, h)` (d, value) replaced.
fn expected(
    clean: &Case,
    nan: impl Fn(usize, usize) -> bool,
    inf: impl Fn(usize, usize) -> Vec<(usize, f64)>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut o, mut l) = clean.reference();
    let (h_n, d, tq) = (clean.heads, clean.head_dim, clean.q_pos.len());
    for i in 0..tq {
        for h in 0..h_n {
            if nan(i, h) {
                o[at(h_n, d, i, h, 0)..][..d].fill(f64::NAN);
                l[h * tq + i] = f64::NAN;
            } else {
                for (e, x) in inf(i, h) {
                    o[at(h_n, d, i, h, e)] = x;
                }
            }
        }
    }
    (o, l)
}

/// Class-exact comparison (NaN, +-inf) and, on the entries finite in `eo`/`el`, O relative L2
/// <= 1e-2 and LSE abs 1e-3. Returns (O error, LSE error).
fn compare_nonfinite(o: &[f32], l: &[f32], eo: &[f64], el: &[f64]) -> Result<(f64, f64), String> {
    if o.len() != eo.len() || l.len() != el.len() {
        return Err("length mismatch".into());
    }
    let same_class = |x: f32, y: f64| {
        if y.is_nan() {
            x.is_nan()
        } else if y.is_infinite() {
            x as f64 == y
        } else {
            x.is_finite()
        }
    };
    for (n, (&x, &y)) in o.iter().zip(eo).enumerate() {
        if !same_class(x, y) {
            return Err(format!("O[{n}] = {x}, expected {y}"));
        }
    }
    let (fo, feo): (Vec<f32>, Vec<f64>) = o.iter().zip(eo).filter(|(_, y)| y.is_finite()).unzip();
    let eo_err = rel_l2(&fo, &feo);
    if eo_err > tol::HALF {
        return Err(format!("O rel L2 {eo_err:.2e} on the finite entries"));
    }
    let mut el_err = 0f64;
    for (n, (&x, &y)) in l.iter().zip(el).enumerate() {
        if !same_class(x, y) {
            return Err(format!("LSE[{n}] = {x}, expected {y}"));
        }
        if y.is_finite() {
            el_err = el_err.max((x as f64 - y).abs());
        }
    }
    if el_err > tol::LSE_ABS {
        return Err(format!("LSE abs error {el_err:.2e}"));
    }
    Ok((eo_err, el_err))
}

/// `c` (poisoned) against `exp` on the reference, the CPU path and every kernel path; every
/// failure is reported.
fn check_nonfinite<T: HalfFloat>(c: &Case, exp: &(Vec<f64>, Vec<f64>), what: &str) {
    let (ro, rl) = c.reference();
    let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut errs = vec![];
    if let Err(e) = compare_nonfinite(&to32(&ro), &to32(&rl), &exp.0, &exp.1) {
        errs.push(format!("reference: {e}"));
    }
    let mut worst = (0f64, 0f64);
    for dev in devices() {
        let paths: &[Path] = if dev.backend().runs_kernels() {
            &[Path::Auto, Path::Scalar]
        } else {
            &[Path::Auto]
        };
        for &path in paths {
            let (o, l) = c.forward::<T>(&dev, path).unwrap();
            match compare_nonfinite(&o, &l, &exp.0, &exp.1) {
                Ok((eo, el)) => worst = (worst.0.max(eo), worst.1.max(el)),
                Err(e) => errs.push(format!("{} {path:?}: {e}", dev.backend())),
            }
        }
    }
    assert!(
        errs.is_empty(),
        "{what} {}: {} failures:\n{}",
        std::any::type_name::<T>(),
        errs.len(),
        errs.join("\n")
    );
    eprintln!(
        "{what} {}: worst O rel L2 {:.2e}, LSE abs {:.2e}",
        std::any::type_name::<T>(),
        worst.0,
        worst.1
    );
}

/// Defect 1: a NaN in a visible key, a query or a visible value makes exactly the rows that see
/// it NaN, O and LSE (the kernels used to return LSE = -inf for them, and a NaN value used to
/// poison only its column).
#[test]
fn nan_poisons_exactly_the_rows_that_see_it() {
    fn one<T: HalfFloat>() {
        let (heads, kv_heads, d) = (4, 2, 64);
        let clean = seq_case::<T>(MaskMode::Causal, 100, heads, kv_heads, d, 11);
        let mut c = clean.clone();
        c.k[at(kv_heads, d, 40, 1, 3)] = f32::NAN; // rows >= 40 of heads 2, 3
        c.q[at(heads, d, 10, 0, 0)] = f32::NAN; // row 10 of head 0
        c.v[at(kv_heads, d, 70, 0, 5)] = f32::NAN; // rows >= 70 of heads 0, 1 (whole rows)
        let exp = expected(
            &clean,
            |i, h| (h >= 2 && i >= 40) || (i == 10 && h == 0) || (h < 2 && i >= 70),
            |_, _| vec![],
        );
        check_nonfinite::<T>(&c, &exp, "NaN in k, q, v");
    }
    one::<bf16>();
    one::<f16>();
}

/// Defect 2: Inf and NaN in the V rows of keys a query cannot see change nothing for it (the
/// kernels used to compute 0 * Inf on boundary tiles, poisoning the whole 64-row tile); a visible
/// +-Inf in V gives that O entry +-Inf (both signs: NaN), the rest of the row as without it.
#[test]
fn masked_inf_and_nan_in_v_leak_nowhere() {
    fn one<T: HalfFloat>() {
        let (heads, kv_heads, d) = (2, 1, 64);
        let clean = seq_case::<T>(MaskMode::Causal, 100, heads, kv_heads, d, 12);
        let mut c = clean.clone();
        let mut zeroed = clean.clone();
        for (j, e, x) in [
            (32, 5, f32::INFINITY),
            (33, 5, f32::NEG_INFINITY),
            (40, 6, f32::NEG_INFINITY),
            (63, 7, f32::INFINITY),
            (90, 8, f32::NAN),
        ] {
            c.v[at(kv_heads, d, j, 0, e)] = x;
            zeroed.v[at(kv_heads, d, j, 0, e)] = 0.0;
        }
        let exp = expected(
            &zeroed,
            |i, _| i >= 90,
            |i, _| {
                let mut v = vec![];
                if i == 32 {
                    v.push((5, f64::INFINITY));
                } else if i > 32 {
                    v.push((5, f64::NAN));
                }
                if i >= 40 {
                    v.push((6, f64::NEG_INFINITY));
                }
                if i >= 63 {
                    v.push((7, f64::INFINITY));
                }
                v
            },
        );
        check_nonfinite::<T>(&c, &exp, "causal, Inf/NaN in v");
    }
    one::<bf16>();
    one::<f16>();
}

/// Defect 2 in duo mode: an Inf in the V of a depth-1 key does not reach depth-0 rows, and
/// K/V rows of invalid slots holding NaN and Inf reach nobody.
#[test]
fn duo_depth1_inf_and_invalid_slots_leak_nowhere() {
    fn one<T: HalfFloat>() {
        // 60 positions at depth 0, every third one again at depth 1 (rows 60..80), one slot
        // per (position, depth), grouped by depth.
        let (heads, kv_heads, d) = (2, 1, 64);
        let mut clean = seq_case::<T>(MaskMode::DuoCausal, 80, heads, kv_heads, d, 13);
        let pos: Vec<i32> = (0..60).chain((0..60).step_by(3)).collect();
        let depth: Vec<i32> = (0..80).map(|t| i32::from(t >= 60)).collect();
        clean.q_pos = pos.clone();
        clean.kv_pos = pos;
        clean.q_depth = depth.clone();
        clean.kv_depth = depth;
        let mut valid = vec![1u8; 80];
        valid[20] = 0;
        valid[70] = 0;
        clean.kv_valid = Some(valid);
        let mut c = clean.clone();
        let mut zeroed = clean.clone();
        // Key 65: position 15, depth 1. Rows that see it: depth 1, position >= 15.
        c.v[at(kv_heads, d, 65, 0, 4)] = f32::INFINITY;
        zeroed.v[at(kv_heads, d, 65, 0, 4)] = 0.0;
        for j in [20, 70] {
            for e in 0..d {
                c.k[at(kv_heads, d, j, 0, e)] = if e % 2 == 0 { f32::NAN } else { f32::INFINITY };
                c.v[at(kv_heads, d, j, 0, e)] = if e % 2 == 0 { f32::INFINITY } else { f32::NAN };
            }
        }
        let exp = expected(
            &zeroed,
            |_, _| false,
            |i, _| {
                if sees(&clean, i, 65) {
                    vec![(4, f64::INFINITY)]
                } else {
                    vec![]
                }
            },
        );
        assert!((0..80).filter(|&i| sees(&clean, i, 65)).count() >= 10);
        check_nonfinite::<T>(
            &c,
            &exp,
            "duo, Inf in a depth-1 v, NaN/Inf in invalid slots",
        );
    }
    one::<bf16>();
    one::<f16>();
}

/// K: a masked NaN/Inf key changes nothing; a visible one follows IEEE arithmetic on the score:
/// NaN or +inf makes the row NaN, -inf gives the key weight 0 as if it were masked (a row whose
/// every visible score is -inf: O = 0, LSE = -inf).
#[test]
fn inf_and_nan_keys() {
    fn one<T: HalfFloat>() {
        let (heads, kv_heads, d) = (2, 1, 64);
        let mut clean = seq_case::<T>(MaskMode::Causal, 100, heads, kv_heads, d, 14);
        for i in 0..100 {
            for h in 0..heads {
                clean.q[at(heads, d, i, h, 0)] = 1.0; // the sign of q . k where k[0] is infinite
            }
        }
        let mut c = clean.clone();
        c.k[at(kv_heads, d, 0, 0, 0)] = f32::NEG_INFINITY; // score -inf: row 0 sees nothing else
        c.k[at(kv_heads, d, 10, 0, 0)] = f32::NEG_INFINITY; // score -inf
        c.k[at(kv_heads, d, 50, 0, 0)] = f32::INFINITY; // score +inf: rows >= 50 NaN
        c.k[at(kv_heads, d, 35, 0, 9)] = f32::NAN; // rows >= 35 NaN
        let mut masked = clean.clone();
        let mut valid = vec![1u8; 100];
        valid[0] = 0;
        valid[10] = 0;
        masked.kv_valid = Some(valid);
        let exp = expected(&masked, |i, _| i >= 35, |_, _| vec![]);
        assert_eq!(exp.1[0], f64::NEG_INFINITY);
        check_nonfinite::<T>(&c, &exp, "Inf/NaN in k");
    }
    one::<bf16>();
    one::<f16>();
}

/// A visible Inf in V whose weight underflows (to 0 in f16/bf16 P, in f32 exp, and in the
/// rescaling factor when a later tile raises the running max by ~160) still gives +Inf, not NaN:
/// the weight of a key with a finite score is positive.
#[test]
fn inf_in_v_with_vanishing_weight() {
    fn one<T: HalfFloat>() {
        let (heads, kv_heads, d) = (2, 1, 64);
        let mut clean = seq_case::<T>(MaskMode::Causal, 100, heads, kv_heads, d, 15);
        for i in 0..100 {
            for h in 0..heads {
                clean.q[at(heads, d, i, h, 0)] = 30.0;
            }
            // keys 0..32 score about -112, later keys about +112 (scale 1/8)
            clean.k[at(kv_heads, d, i, 0, 0)] = if i < 32 { -30.0 } else { 30.0 };
        }
        let mut c = clean.clone();
        let mut zeroed = clean.clone();
        c.v[at(kv_heads, d, 3, 0, 2)] = f32::INFINITY;
        zeroed.v[at(kv_heads, d, 3, 0, 2)] = 0.0;
        let exp = expected(
            &zeroed,
            |_, _| false,
            |i, _| {
                if i >= 3 {
                    vec![(2, f64::INFINITY)]
                } else {
                    vec![]
                }
            },
        );
        check_nonfinite::<T>(&c, &exp, "Inf in v with a vanishing weight");
    }
    one::<bf16>();
    one::<f16>();
}

/// `forward_into` writes O in f32 (equal to `forward`'s) or in the input type: the f32 result
/// rounded to nearest even in the kernel's epilogue, so bit-equal to `forward`'s O rounded on
/// the host (NaN for NaN). On every executor (SIMT w32/w64, all schedules) and both paths.
#[test]
fn output_in_input_dtype() {
    fn one<T: HalfFloat>(dev: &Device, c: &Case, path: Path) {
        let up = |x: &[f32]| -> Vec<T> { x.iter().map(|&y| T::from_f64(y as f64)).collect() };
        let (q, k, v) = (
            dev.upload(&up(&c.q), "q").unwrap(),
            dev.upload(&up(&c.k), "k").unwrap(),
            dev.upload(&up(&c.v), "v").unwrap(),
        );
        let (cq, ck) = (
            dev.upload(&c.cu_q, "cu_q").unwrap(),
            dev.upload(&c.cu_kv, "cu_kv").unwrap(),
        );
        let (qd, kd) = (
            dev.upload(&c.q_depth, "q_depth").unwrap(),
            dev.upload(&c.kv_depth, "kv_depth").unwrap(),
        );
        let (qp, kp) = (
            dev.upload(&c.q_pos, "q_pos").unwrap(),
            dev.upload(&c.kv_pos, "kv_pos").unwrap(),
        );
        let a = Attention::duo_causal(&q, &k, &v, &qd, &kd)
            .heads(c.heads, c.kv_heads)
            .head_dim(c.head_dim)
            .seqlens(
                &cq,
                &ck,
                attention::max_seqlen(&c.cu_q),
                attention::max_seqlen(&c.cu_kv),
            )
            .positions(Positions::Explicit(&qp), Positions::Explicit(&kp))
            .path(path)
            .build()
            .unwrap();
        let f = attention::forward(&a).unwrap().checked().unwrap();
        let (o32, lse32) = (f.o.download().unwrap(), f.lse.download().unwrap());
        let (tq, n) = (c.q_pos.len(), c.q.len());
        let mut oh = dev.alloc::<T>(n, "o").unwrap();
        let mut of = dev.alloc::<f32>(n, "o").unwrap();
        let (mut l1, mut l2) = (
            dev.alloc::<f32>(c.heads * tq, "lse").unwrap(),
            dev.alloc::<f32>(c.heads * tq, "lse").unwrap(),
        );
        attention::forward_into(&a, &mut oh, &mut l1)
            .unwrap()
            .check()
            .unwrap();
        attention::forward_into(&a, &mut of, &mut l2)
            .unwrap()
            .check()
            .unwrap();
        let on = format!("{} {path:?} {}", dev.backend(), T::KIND);
        let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
        assert!(
            of.download()
                .unwrap()
                .iter()
                .zip(&o32)
                .all(|(&x, &y)| same(x, y)),
            "{on}"
        );
        for l in [&l1, &l2] {
            assert!(
                l.download()
                    .unwrap()
                    .iter()
                    .zip(&lse32)
                    .all(|(&x, &y)| same(x, y)),
                "{on}"
            );
        }
        for (i, (x, y)) in oh.download().unwrap().iter().zip(&o32).enumerate() {
            let want = <T as HalfFloat>::from_f32(*y);
            assert!(
                x.to_bits() == want.to_bits() || (x.to_f32().is_nan() && y.is_nan()),
                "{on}: O[{i}] = {:?}, f32 {y} rounds to {:?}",
                x.to_f32(),
                want.to_f32()
            );
        }
        // A buffer of the wrong length is refused.
        let mut short = dev.alloc::<T>(n - 1, "o").unwrap();
        expect_err(
            attention::forward_into(&a, &mut short, &mut l1).map(|_| unreachable_out(dev)),
            "o has",
        );
    }
    for dev in devices() {
        let paths: &[Path] = if dev.backend().runs_kernels() {
            &[Path::Auto, Path::Scalar]
        } else {
            &[Path::Auto]
        };
        for &path in paths {
            let c = make_case::<bf16>(MaskMode::DuoCausal, 3, 90, 2, 64, 0.3, 1, None, 0.0, 11);
            one::<bf16>(&dev, &c, path);
            let c = make_case::<f16>(MaskMode::DuoCausal, 2, 70, 1, 128, 0.3, 0, None, 0.0, 12);
            one::<f16>(&dev, &c, path);
        }
    }
}

/// A placeholder for `expect_err`'s type when the call under test returns something else.
fn unreachable_out(_: &Device) -> AttentionOut {
    panic!("the call was expected to fail")
}

/// `forward`, `decode_partials` and `decode` make no device-to-host copy (so they can be captured
/// in a CUDA graph and do not stall the caller's stream), and launch as many kernels whatever
/// the contents of `cu_seqlens` (valid, other valid lengths, invalid); reading the check is
/// exactly one copy per pending check.
#[test]
fn no_host_copies() {
    for dev in devices().into_iter().filter(|d| d.backend().runs_kernels()) {
        let (h, d) = (2, 64);
        let q = dev.upload(&vec![bf16::ONE; 6 * h * d], "q").unwrap();
        let kv = dev.upload(&vec![bf16::ONE; 6 * d], "kv").unwrap();
        let cus: Vec<_> = [[0, 2, 6], [0, 4, 6], [0, 7, 6], [3, 2, 6]]
            .iter()
            .map(|c| dev.upload(c, "cu").unwrap())
            .collect();
        let mut launches = vec![];
        for (i, cu) in cus.iter().enumerate() {
            let a = Attention::causal(&q, &kv, &kv)
                .heads(h, 1)
                .head_dim(d)
                .seqlens(cu, cu, 4, 4)
                .build()
                .unwrap();
            let (c0, l0) = (dev.d2h_copies(), dev.launches());
            let f = attention::forward(&a).unwrap();
            let p = attention::decode_partials(&a, 2).unwrap();
            let o = attention::decode(&a, 3).unwrap();
            assert_eq!(
                dev.d2h_copies(),
                c0,
                "{}: a call copied to the host",
                dev.backend()
            );
            launches.push(dev.launches() - l0);
            assert_eq!(f.check().is_ok(), i < 2);
            assert_eq!(p.check.check().is_ok(), i < 2);
            assert_eq!(o.check().is_ok(), i < 2);
            assert_eq!(dev.d2h_copies(), c0 + 3, "one copy per check");
        }
        // forward: metadata + kernel; decode_partials: check + split; decode: those + merge.
        assert_eq!(launches, vec![2 + 2 + 3; 4], "{}", dev.backend());
    }
}

/// The builder gives the same problem as the literal, and names what it misses.
#[test]
fn builder() {
    let dev = Device::cpu();
    let q = dev.upload(&[bf16::ZERO; 2 * 64], "q").unwrap();
    let cu = dev.upload(&[0, 2], "cu").unwrap();
    let depth = dev.upload(&[0, 1], "depth").unwrap();
    let a = Attention::duo_causal(&q, &q, &q, &depth, &depth)
        .heads(1, 1)
        .head_dim(64)
        .seqlens(&cu, &cu, 2, 2)
        .offsets(3, 1)
        .build()
        .unwrap();
    assert_eq!(a.mode, MaskMode::DuoCausal);
    assert_eq!((a.max_seqlen_q, a.max_seqlen_kv), (2, 2));
    assert_eq!(a.scale, 0.125);
    assert!(matches!(a.q_pos, Positions::Implicit { offset: 3 }));
    assert!(matches!(a.kv_pos, Positions::Implicit { offset: 1 }));
    assert!(a.q_depth.is_some() && a.kv_depth.is_some() && a.kv_valid.is_none());
    let full = Attention::full(&q, &q, &q)
        .heads(1, 1)
        .head_dim(64)
        .seqlens(&cu, &cu, 2, 2)
        .scale(0.5)
        .path(Path::Scalar)
        .build()
        .unwrap();
    assert_eq!(
        (full.mode, full.scale, full.path),
        (MaskMode::Full, 0.5, Path::Scalar)
    );
    assert!(full.q_depth.is_none());
    let e = Attention::causal(&q, &q, &q)
        .heads(1, 1)
        .head_dim(64)
        .build();
    expect_err(
        e.map(|_| unreachable_out(&dev)),
        "the builder needs seqlens",
    );
    let e = Attention::causal(&q, &q, &q).head_dim(64).build();
    expect_err(e.map(|_| unreachable_out(&dev)), "the builder needs heads");
}
