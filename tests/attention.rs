//! Prefill attention (`attention::forward`) on every executor present (CPU path, host SIMT wave32
//! and wave64 in order and with two shuffled schedules each, CUDA/HIP when present), both paths,
//! against the f64 dense-mask reference: full, causal (with positive and negative offsets) and
//! duo-causal (depth-slot and random layouts, invalid slots), GQA 1/2/4, D 64/128, bf16 and f16,
//! varlen batches with empty and length-1 sequences. O: relative L2 <= 1e-2; LSE: abs 1e-3 where
//! finite, exactly -inf where the reference is -inf. Plus error cases.

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::attention::{self, Attention, HalfFloat, MaskMode, Path, Positions};
use tessera::reference::attention as reference;
use tessera::verify::Rng;
use tessera::Device;

/// Every executor: (device, paths to run on it).
fn devices() -> Vec<Device> {
    tessera::verify::test_devices([21, 22])
}

/// A host-side problem: everything explicit except where `implicit` offsets are used.
#[derive(Clone, Debug)]
struct Case {
    heads: usize,
    kv_heads: usize,
    d: usize,
    cu_q: Vec<i32>,
    cu_kv: Vec<i32>,
    q_pos: Vec<i32>,
    kv_pos: Vec<i32>,
    /// Some((q_offset, kv_offset)): pass positions as `Implicit` (they equal q_pos / kv_pos).
    implicit: Option<(i32, i32)>,
    q_depth: Vec<i32>,
    kv_depth: Vec<i32>,
    kv_valid: Option<Vec<u8>>,
    mode: MaskMode,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scale: f32,
}

fn shuffle<T>(r: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = (r.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
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
                    shuffle(&mut r, &mut ks);
                    shuffle(&mut r, &mut qs);
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
        d,
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

fn reference_of(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let all_valid = vec![1u8; c.kv_pos.len()];
    reference::attention(&reference::Problem {
        q: &c.q,
        k: &c.k,
        v: &c.v,
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: c.d,
        cu_q: &c.cu_q,
        cu_kv: &c.cu_kv,
        q_pos: &c.q_pos,
        kv_pos: &c.kv_pos,
        q_depth: &c.q_depth,
        kv_depth: &c.kv_depth,
        kv_valid: c.kv_valid.as_deref().unwrap_or(&all_valid),
        scale: c.scale,
        mode: c.mode,
    })
}

fn run<T: HalfFloat>(dev: &Device, c: &Case, path: Path) -> tessera::Result<(Vec<f32>, Vec<f32>)> {
    let up = |x: &[f32]| -> Vec<T> { x.iter().map(|&y| T::from_f64(y as f64)).collect() };
    let q = dev.upload(&up(&c.q), "q")?;
    let k = dev.upload(&up(&c.k), "k")?;
    let v = dev.upload(&up(&c.v), "v")?;
    let cq = dev.upload(&c.cu_q, "cu_q")?;
    let ck = dev.upload(&c.cu_kv, "cu_kv")?;
    let qp = dev.upload(&c.q_pos, "q_pos")?;
    let kp = dev.upload(&c.kv_pos, "kv_pos")?;
    let qd = dev.upload(&c.q_depth, "q_depth")?;
    let kd = dev.upload(&c.kv_depth, "kv_depth")?;
    let valid = match &c.kv_valid {
        Some(x) => Some(dev.upload(x, "kv_valid")?),
        None => None,
    };
    let (q_pos, kv_pos) = match c.implicit {
        Some((a, b)) => (
            Positions::Implicit { offset: a },
            Positions::Implicit { offset: b },
        ),
        None => (Positions::Explicit(&qp), Positions::Explicit(&kp)),
    };
    let duo = c.mode == MaskMode::DuoCausal;
    let out = attention::forward(&Attention {
        q: &q,
        k: &k,
        v: &v,
        heads: c.heads,
        kv_heads: c.kv_heads,
        head_dim: c.d,
        cu_seqlens_q: &cq,
        cu_seqlens_kv: &ck,
        q_pos,
        kv_pos,
        q_depth: duo.then_some(&qd),
        kv_depth: duo.then_some(&kd),
        kv_valid: valid.as_ref(),
        scale: c.scale,
        mode: c.mode,
        path,
    })?;
    Ok((out.o.download()?, out.lse.download()?))
}

fn rel_l2(a: &[f32], r: &[f64]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(r) {
        num += (x as f64 - y).powi(2);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

fn check<T: HalfFloat>(c: &Case) -> Result<(), TestCaseError> {
    let (ro, rl) = reference_of(c);
    for dev in devices() {
        let paths: &[Path] = if dev.backend().runs_kernels() {
            &[Path::Auto, Path::Scalar]
        } else {
            &[Path::Auto]
        };
        for &path in paths {
            let (o, l) = run::<T>(&dev, c, path).unwrap();
            let what = format!("{} {path:?} {:?}", dev.backend(), c.mode);
            prop_assert_eq!(o.len(), ro.len());
            prop_assert!(o.iter().all(|x| x.is_finite()), "{}: non-finite O", what);
            let e = rel_l2(&o, &ro);
            prop_assert!(e <= 1e-2, "{}: O rel L2 {}", what, e);
            for (i, (&x, &y)) in l.iter().zip(&rl).enumerate() {
                if y == f64::NEG_INFINITY {
                    prop_assert!(x == f32::NEG_INFINITY, "{}: LSE[{}] {} vs -inf", what, i, x);
                } else {
                    prop_assert!(
                        (x as f64 - y).abs() <= 1e-3,
                        "{}: LSE[{}] {} vs {}",
                        what,
                        i,
                        x,
                        y
                    );
                }
            }
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
    let gen = |r: &mut Rng, n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| bf16::from_f64((r.unit() - 0.5) * 4.0).to_f32())
            .collect()
    };
    let c = Case {
        cu_q: vec![0, n as i32],
        cu_kv: vec![0, n as i32],
        kv_pos: q_pos.clone(),
        kv_depth: q_depth.clone(),
        q: gen(&mut r, n * c.heads * 128),
        k: gen(&mut r, n * c.kv_heads * 128),
        v: gen(&mut r, n * c.kv_heads * 128),
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
        let q = dev.upload(&vec![bf16::ZERO; 4 * 2 * d], "q").unwrap();
        let k = dev.upload(&vec![bf16::ZERO; 4 * d], "k").unwrap();
        let v = dev.upload(&vec![bf16::ZERO; 4 * d], "v").unwrap();
        let cu = dev.upload(&[0, 4], "cu").unwrap();
        let bad_cu = dev.upload(&[0, 3, 2], "cu").unwrap();
        let short_cu = dev.upload(&[0, 3], "cu").unwrap();
        let pos3 = dev.upload(&[0, 1, 2], "pos").unwrap();
        let depth = dev.upload(&[0, 0, 0, 0], "depth").unwrap();
        let base = Attention {
            q: &q,
            k: &k,
            v: &v,
            heads: 2,
            kv_heads: 1,
            head_dim: d,
            cu_seqlens_q: &cu,
            cu_seqlens_kv: &cu,
            q_pos: Positions::Implicit { offset: 0 },
            kv_pos: Positions::Implicit { offset: 0 },
            q_depth: None,
            kv_depth: None,
            kv_valid: None,
            scale: 0.125,
            mode: MaskMode::Causal,
            path: Path::Auto,
        };
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
        expect_err(
            attention::forward(&Attention {
                cu_seqlens_q: &bad_cu,
                cu_seqlens_kv: &bad_cu,
                ..base
            }),
            "decreases",
        );
        expect_err(
            attention::forward(&Attention {
                cu_seqlens_q: &short_cu,
                ..base
            }),
            "ends at 3",
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
    let q = a.upload(&[f16::ZERO; 64], "q").unwrap();
    let k = b.upload(&[f16::ZERO; 64], "k").unwrap();
    let cu = a.upload(&[0, 1], "cu").unwrap();
    expect_err(
        attention::forward(&Attention {
            q: &q,
            k: &k,
            v: &k,
            heads: 1,
            kv_heads: 1,
            head_dim: 64,
            cu_seqlens_q: &cu,
            cu_seqlens_kv: &cu,
            q_pos: Positions::Implicit { offset: 0 },
            kv_pos: Positions::Implicit { offset: 0 },
            q_depth: None,
            kv_depth: None,
            kv_valid: None,
            scale: 0.125,
            mode: MaskMode::Full,
            path: Path::Scalar,
        }),
        "k is on",
    );
}
