//! Codec ops (gather, delta encode/decode, delta_f32/to_f32, k-means, pack_indices, dequantize)
//! on every executor present (CPU path and host SIMT wave32/wave64 with in-order and shuffled
//! schedules always; CUDA/HIP when a GPU is present), against the reference, bit for bit.

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::codec::{self, Packed};
use tessera::reference::codec as reference;
use tessera::{Device, Float, Schedule};

/// Every executor the tests run on.
fn devices() -> Vec<Device> {
    tessera::testing::test_devices([21, 22])
}

fn pats<T: Float>(v: &[T]) -> Vec<u32> {
    v.iter().map(|&x| reference::bits_of(x)).collect()
}

/// Delta kinds: 0 unchanged, 1 a few ulps, 2 large random, 3 NaN/inf, 4 signed zero, 5 sign flip.
fn make<T: Float>(n: usize, pattern: &[u8], seed: u64) -> (Vec<T>, Vec<T>) {
    let mut r = tessera::testing::Rng(seed);
    let mut base = Vec::with_capacity(n);
    let mut new = Vec::with_capacity(n);
    let w = 8 * std::mem::size_of::<T>() as u32;
    for i in 0..n {
        let b = T::from_f64((r.unit() - 0.5) * 0.2);
        let bb = reference::bits_of(b);
        let x = match pattern[i % pattern.len()] {
            0 => b,
            1 => {
                let d = (r.next_u64() % 9) as i64 - 4;
                reference::from_bits(reference::unord(
                    (reference::ord(bb, w) as i64 + d) as u32
                        & if w == 32 { u32::MAX } else { 0xffff },
                    w,
                ))
            }
            2 => T::from_f64((r.unit() - 0.5) * 1e4),
            3 => T::from_f64([f64::NAN, f64::INFINITY, f64::NEG_INFINITY][i % 3]),
            4 => T::from_f64(-0.0),
            _ => T::from_f64(-b.to_f64()),
        };
        base.push(if pattern[i % pattern.len()] == 4 {
            T::from_f64(0.0)
        } else {
            b
        });
        new.push(x);
    }
    (base, new)
}

fn download_packed(p: &Packed) -> (Vec<u32>, Vec<u8>) {
    (p.words.download().unwrap(), p.widths.download().unwrap())
}

fn check_delta<T: Float>(dev: &Device, base: &[T], new: &[T]) -> Result<(), TestCaseError> {
    let (rw, rwid) = reference::delta_encode(base, new);
    let b = dev.upload(base, "base").unwrap();
    let x = dev.upload(new, "new").unwrap();
    let p = codec::delta_encode(&b, &x).unwrap();
    prop_assert_eq!(p.count, base.len());
    let (w, wid) = download_packed(&p);
    prop_assert_eq!(&wid, &rwid, "widths on {}", dev.backend());
    prop_assert_eq!(&w, &rw, "words on {}", dev.backend());
    let d = codec::delta_decode(&b, &p).unwrap().download().unwrap();
    prop_assert_eq!(pats(&d), pats(new), "round trip on {}", dev.backend());

    let df = codec::delta_f32(&b, &x).unwrap().download().unwrap();
    prop_assert_eq!(pats(&df), pats(&reference::delta_f32(base, new)));
    let tf = codec::to_f32(&x).unwrap().download().unwrap();
    prop_assert_eq!(pats(&tf), pats(&reference::to_f32(new)));
    Ok(())
}

fn check_gather<T: Float>(
    dev: &Device,
    src: &[T],
    mask_bits: &[bool],
) -> Result<(), TestCaseError> {
    let n = src.len();
    let mut mask = vec![0u32; n.div_ceil(32)];
    for (i, &m) in mask_bits.iter().enumerate().take(n) {
        if m {
            mask[i / 32] |= 1 << (i % 32);
        }
    }
    let want = reference::gather(src, &mask);
    let s = dev.upload(src, "src").unwrap();
    let m = dev.upload(&mask, "mask").unwrap();
    let g = codec::gather(&s, &m, want.len())
        .unwrap()
        .download()
        .unwrap();
    prop_assert_eq!(pats(&g), pats(&want), "gather on {}", dev.backend());
    Ok(())
}

fn interesting_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![
            0usize, 1, 2, 31, 255, 256, 257, 511, 513, 8191, 8209, 30011
        ]),
        0usize..30_000,
    ]
}

fn pattern() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![0u8]),
        Just(vec![1u8]),
        Just(vec![0u8, 0, 0, 1]),
        Just(vec![2u8]),
        Just(vec![3u8, 4, 5, 0]),
        prop::collection::vec(0u8..6, 1..40),
    ]
}

proptest! {
    // No failure persistence: a failing case must not write into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn delta_f32_matches(n in interesting_len(), p in pattern(), seed: u64) {
        let (b, x) = make::<f32>(n, &p, seed);
        for d in devices() { check_delta(&d, &b, &x)?; }
    }

    #[test]
    fn delta_f16_matches(n in interesting_len(), p in pattern(), seed: u64) {
        let (b, x) = make::<f16>(n, &p, seed);
        for d in devices() { check_delta(&d, &b, &x)?; }
    }

    #[test]
    fn delta_bf16_matches(n in interesting_len(), p in pattern(), seed: u64) {
        let (b, x) = make::<bf16>(n, &p, seed);
        for d in devices() { check_delta(&d, &b, &x)?; }
    }

    #[test]
    fn gather_matches(n in interesting_len(), p in prop::collection::vec(any::<bool>(), 1..70), seed: u64) {
        let (src, _) = make::<f32>(n, &[0], seed);
        let m: Vec<bool> = (0..n).map(|i| p[i % p.len()]).collect();
        let (h, _) = make::<bf16>(n, &[0], seed);
        for d in devices() {
            check_gather(&d, &src, &m)?;
            check_gather(&d, &h, &m)?;
        }
    }

    #[test]
    fn pack_and_dequantize_match(n in interesting_len(), bits_i in 0usize..4, seed: u64, with_base in any::<bool>()) {
        let bits = [2u32, 3, 4, 8][bits_i];
        let k = 1usize << bits;
        let mut r = tessera::testing::Rng(seed);
        let idx: Vec<u8> = (0..n).map(|_| (r.next_u64() % k as u64) as u8).collect();
        let cent: Vec<f32> = (0..k).map(|c| (c as f32 - k as f32 / 2.0) * 3.1e-3 + (r.unit() as f32) * 1e-4).collect();
        let (base, _) = make::<bf16>(n, &[0], seed);
        let (basef, _) = make::<f32>(n, &[0], seed);
        let (rw, rwid) = reference::pack_indices(&idx, bits);
        let want_b = reference::dequantize::<bf16>(&rw, &rwid, n, &cent, with_base.then_some(&base[..]));
        let want_h = reference::dequantize::<f16>(&rw, &rwid, n, &cent, None);
        let want_f = reference::dequantize::<f32>(&rw, &rwid, n, &cent, with_base.then_some(&basef[..]));
        for d in devices() {
            let p = codec::pack_indices(&d.upload(&idx, "idx").unwrap(), bits).unwrap();
            let (w, wid) = download_packed(&p);
            prop_assert_eq!(&wid, &rwid);
            prop_assert_eq!(&w, &rw, "packed indices on {}", d.backend());
            let bb = d.upload(&base, "base").unwrap();
            let bf = d.upload(&basef, "basef").unwrap();
            let ob = codec::dequantize::<bf16>(&p, &cent, with_base.then_some(&bb)).unwrap().download().unwrap();
            prop_assert_eq!(pats(&ob), pats(&want_b), "dequantize bf16 on {}", d.backend());
            let oh = codec::dequantize::<f16>(&p, &cent, None).unwrap().download().unwrap();
            prop_assert_eq!(pats(&oh), pats(&want_h), "dequantize f16 on {}", d.backend());
            let of = codec::dequantize::<f32>(&p, &cent, with_base.then_some(&bf)).unwrap().download().unwrap();
            prop_assert_eq!(pats(&of), pats(&want_f), "dequantize f32 on {}", d.backend());
        }
    }
}

/// The shared codec case (what the verify rows run: every op on the changed values of the pair,
/// each given the reference's inputs, bit-exact but k-means, and the whole tensors' delta round
/// trip) on the patterns above.
fn check_case<T: Float>(base: Vec<T>, new: Vec<T>) -> Result<(), TestCaseError> {
    let case = tessera::verify::codec::Case {
        base,
        new,
        kind: "pattern".into(),
        whole: true,
    };
    for d in devices() {
        for row in case.rows(&d) {
            prop_assert!(
                row.pass,
                "{} {} on {} [{}]: {}",
                row.op,
                row.dtype,
                row.executor,
                row.sizes,
                row.detail
            );
        }
    }
    Ok(())
}

fn case_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![0usize, 1, 2, 255, 256, 257, 513, 8209]),
        0usize..5_000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn shared_case_on_patterns(n in case_len(), p in pattern(), seed: u64) {
        let (b, x) = make::<f32>(n, &p, seed);
        check_case(b, x)?;
        let (b, x) = make::<f16>(n, &p, seed);
        check_case(b, x)?;
        let (b, x) = make::<bf16>(n, &p, seed);
        check_case(b, x)?;
    }
}

/// Cases the delta proptests once failed on (they were in tests/codec.proptest-regressions,
/// which proptest no longer reads or writes: failures are not persisted into the source tree).
#[test]
fn delta_past_failures() {
    for seed in [518_621_257_096u64, 7_847_566] {
        let (n, p) = (255, [2u8]);
        for d in devices() {
            let (b, x) = make::<f32>(n, &p, seed);
            check_delta(&d, &b, &x).unwrap();
            let (b, x) = make::<f16>(n, &p, seed);
            check_delta(&d, &b, &x).unwrap();
            let (b, x) = make::<bf16>(n, &p, seed);
            check_delta(&d, &b, &x).unwrap();
        }
    }
}

fn kmeans_case(values: &[f32], bits: u32, iters: u32, tol: f32) {
    let k = 1usize << bits;
    let (rc, ri, rit) = reference::kmeans(values, k, iters, tol);
    let (lo, hi, _) = reference::min_max(values);
    let range = (hi - lo).max(f32::MIN_POSITIVE);
    let mids = reference::midpoints(&rc);
    for d in devices() {
        let km = codec::kmeans(&d.upload(values, "v").unwrap(), bits, iters, tol).unwrap();
        assert_eq!(km.centroids.len(), k);
        assert!(
            km.centroids.windows(2).all(|w| w[0] <= w[1]),
            "sorted on {}",
            d.backend()
        );
        for (a, b) in km.centroids.iter().zip(&rc) {
            assert!(
                ((a - b) / range).abs() <= 1e-5,
                "centroid {a} vs {b} on {}",
                d.backend()
            );
        }
        let idx = km.indices.download().unwrap();
        assert_eq!(idx.len(), values.len());
        for (i, (&a, &b)) in idx.iter().zip(&ri).enumerate() {
            if a != b {
                let near = mids.iter().any(|m| (values[i] - m).abs() <= 1e-6 * range);
                assert!(
                    near,
                    "index {i} ({}) {a} vs {b} on {}",
                    values[i],
                    d.backend()
                );
            }
        }
        // In fact every executor is exact (fixed-point sums): hold it to that.
        assert_eq!(
            pats(&km.centroids),
            pats(&rc),
            "centroids bit-exact on {}",
            d.backend()
        );
        assert_eq!(idx, ri, "indices exact on {}", d.backend());
        assert_eq!(km.iterations, rit);
    }
}

#[test]
fn kmeans_matches_reference() {
    for (n, seed) in [(1usize, 1u64), (31, 2), (257, 3), (4099, 4), (29989, 5)] {
        let mut r = tessera::testing::Rng(seed);
        // A mix of a narrow bulk (small deltas) and wide tails.
        let v: Vec<f32> = (0..n)
            .map(|i| {
                let u = r.unit() as f32 - 0.5;
                if i % 7 == 0 {
                    u * 1e-2
                } else {
                    u * 1e-4
                }
            })
            .collect();
        for bits in [2, 3, 4, 8] {
            kmeans_case(&v, bits, 25, 1e-6);
        }
    }
}

#[test]
fn kmeans_hand_computed() {
    // Two well-separated clusters, k = 4: the clusters split but never mix.
    let v: Vec<f32> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                -1.0 + (i % 10) as f32 * 1e-3
            } else {
                5.0
            }
        })
        .collect();
    for d in devices() {
        let km = codec::kmeans(&d.upload(&v, "v").unwrap(), 2, 50, 0.0).unwrap();
        let idx = km.indices.download().unwrap();
        for (x, &i) in v.iter().zip(&idx) {
            let c = km.centroids[i as usize];
            assert_eq!(*x > 0.0, c > 0.0);
            if *x == 5.0 {
                assert_eq!(c, 5.0);
            }
        }
    }
    // Fewer distinct values than centroids: duplicates, ties to the lowest index.
    kmeans_case(&[1.0, 1.0, 2.0, 2.0, 2.0], 3, 10, 0.0);
    // Constant input.
    kmeans_case(&[0.25; 300], 2, 10, 1e-3);
    // Empty input.
    for d in devices() {
        let km = codec::kmeans(&d.upload(&[] as &[f32], "v").unwrap(), 4, 10, 0.0).unwrap();
        assert_eq!(km.centroids.len(), 16);
        assert!(km.indices.is_empty());
    }
    // max_iters = 0: the quantile initialisation.
    kmeans_case(&(0..100).map(|i| i as f32).collect::<Vec<_>>(), 2, 0, 0.0);
}

#[test]
fn dequantize_rounding_edge_cases() {
    // Sums that land on bf16/f16 ties, subnormals, overflow and NaN bases.
    let cent = [0.0f32, 2f32.powi(-9) * 1.5, 65504.0, 1e-7];
    let base_f: Vec<f32> = vec![
        1.0,
        1.0 + 2f32.powi(-8),
        65504.0,
        3e38,
        -3e38,
        f32::NAN,
        f32::INFINITY,
        -0.0,
        2f32.powi(-25),
        6e-8,
        1.0,
        -1.0,
    ];
    let n = base_f.len() * 4;
    let idx: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
    let base_f: Vec<f32> = (0..n).map(|i| base_f[i / 4]).collect();
    let base_h: Vec<f16> = base_f.iter().map(|&v| f16::from_f32(v)).collect();
    let base_b: Vec<bf16> = base_f.iter().map(|&v| bf16::from_f32(v)).collect();
    let (rw, rwid) = reference::pack_indices(&idx, 2);
    let wb = reference::dequantize::<bf16>(&rw, &rwid, n, &cent, Some(&base_b));
    let wh = reference::dequantize::<f16>(&rw, &rwid, n, &cent, Some(&base_h));
    let wf = reference::dequantize::<f32>(&rw, &rwid, n, &cent, Some(&base_f));
    // The reference is half's from_f32 of the f32 sum.
    for i in 0..n {
        let s = base_h[i].to_f32() + cent[idx[i] as usize];
        assert_eq!(wh[i].to_bits(), f16::from_f32(s).to_bits());
    }
    for d in devices() {
        let p = codec::pack_indices(&d.upload(&idx, "i").unwrap(), 2).unwrap();
        let ob = codec::dequantize(&p, &cent, Some(&d.upload(&base_b, "b").unwrap())).unwrap();
        assert_eq!(
            pats(&ob.download().unwrap()),
            pats(&wb),
            "bf16 on {}",
            d.backend()
        );
        let oh = codec::dequantize(&p, &cent, Some(&d.upload(&base_h, "h").unwrap())).unwrap();
        assert_eq!(
            pats(&oh.download().unwrap()),
            pats(&wh),
            "f16 on {}",
            d.backend()
        );
        let of = codec::dequantize(&p, &cent, Some(&d.upload(&base_f, "f").unwrap())).unwrap();
        assert_eq!(
            pats(&of.download().unwrap()),
            pats(&wf),
            "f32 on {}",
            d.backend()
        );
    }
}

/// Every 16-bit pattern pair class round-trips, including the extreme wrapped differences.
#[test]
fn delta_all_16bit_patterns() {
    let n = 1 << 16;
    let base: Vec<bf16> = (0..n).map(|i| bf16::from_bits(i as u16)).collect();
    let new: Vec<bf16> = (0..n)
        .map(|i| bf16::from_bits((i as u16).wrapping_mul(40503).rotate_left(5)))
        .collect();
    for d in devices() {
        check_delta(&d, &base, &new).unwrap();
    }
}

/// Several thousand pack blocks, so the width scan runs more than one tile.
#[test]
fn many_blocks() {
    let n = 256 * 4096 * 2 + 77;
    let (b, x) = make::<bf16>(n, &[0, 1, 0, 0, 1, 2], 99);
    for d in devices().into_iter().filter(
        |d| !matches!(d.backend(), tessera::Backend::Simt(c) if c.schedule != Schedule::InOrder),
    ) {
        check_delta(&d, &b, &x).unwrap();
    }
}

fn err_text<T: std::fmt::Debug>(r: tessera::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    for dev in devices() {
        let a = dev.upload(&[1.0f32; 40], "a").unwrap();
        let b = dev.upload(&[1.0f32; 41], "b").unwrap();
        let e = err_text(codec::delta_encode(&a, &b));
        assert!(
            e.contains("codec::delta_encode") && e.contains("40") && e.contains("41"),
            "{e}"
        );
        let e = err_text(codec::delta_f32(&a, &b));
        assert!(e.contains("codec::delta_f32"), "{e}");

        // kmeans: bits, tol, non-finite values.
        let e = err_text(codec::kmeans(&a, 5, 10, 0.0));
        assert!(
            e.contains("codec::kmeans: bits must be 2, 3, 4 or 8, got 5"),
            "{e}"
        );
        let e = err_text(codec::kmeans(&a, 2, 10, -1.0));
        assert!(e.contains("tol"), "{e}");
        let nan = dev
            .upload(&[1.0f32, f32::NAN, 2.0, f32::INFINITY], "nan")
            .unwrap();
        let e = err_text(codec::kmeans(&nan, 2, 10, 0.0));
        assert!(e.contains("2 are NaN or infinite"), "{e}");

        // gather: mask length, stray bits, count mismatch, element size.
        let m1 = dev.upload(&[1u32], "m").unwrap();
        let e = err_text(codec::gather(&a, &m1, 1));
        assert!(e.contains("codec::gather: mask has 1 words"), "{e}");
        let m2 = dev.upload(&[0u32, 1 << 9], "m").unwrap();
        let e = err_text(codec::gather(&a, &m2, 1));
        assert!(e.contains("past element 40"), "{e}");
        let m3 = dev.upload(&[0b11u32, 0], "m").unwrap();
        let e = err_text(codec::gather(&a, &m3, 1));
        assert!(e.contains("marks 2 elements, count is 1"), "{e}");
        let wide = dev.upload(&[1u64; 40], "u64").unwrap();
        let e = err_text(codec::gather(&wide, &m3, 2));
        assert!(e.contains("2 or 4 bytes"), "{e}");

        // pack_indices: bits and values that do not fit.
        let idx = dev.upload(&[0u8, 3, 4, 1], "idx").unwrap();
        let e = err_text(codec::pack_indices(&idx, 9));
        assert!(e.contains("bits must be 1..=8"), "{e}");
        let e = err_text(codec::pack_indices(&idx, 2));
        assert!(e.contains("needs 3 bits"), "{e}");

        // Packed streams that do not hold together.
        let p = codec::delta_encode(&a, &a).unwrap();
        let e = err_text(codec::delta_decode(&b, &p));
        assert!(e.contains("packed holds 40 values, base has 41"), "{e}");
        let bad = Packed {
            words: dev.upload(&[0u32; 3], "w").unwrap(),
            widths: dev.upload(&[1u8], "wd").unwrap(),
            count: 40,
        };
        let e = err_text(codec::delta_decode(&a, &bad));
        assert!(
            e.contains("packed.words has 3 words, the widths need 2"),
            "{e}"
        );
        let bad = Packed {
            words: dev.upload(&[0u32; 2], "w").unwrap(),
            widths: dev.upload(&[1u8, 1], "wd").unwrap(),
            count: 40,
        };
        let e = err_text(codec::delta_decode(&a, &bad));
        assert!(e.contains("packed.widths has 2 entries"), "{e}");
        let bad = Packed {
            words: dev.upload(&[0u32; 2], "w").unwrap(),
            widths: dev.upload(&[33u8], "wd").unwrap(),
            count: 40,
        };
        let e = err_text(codec::delta_decode(&a, &bad));
        assert!(e.contains("width of 33 bits"), "{e}");
        let h = dev.upload(&[f16::ZERO; 40], "h").unwrap();
        let bad = Packed {
            words: dev.upload(&[0u32; 85], "w").unwrap(),
            widths: dev.upload(&[17u8], "wd").unwrap(),
            count: 40,
        };
        let e = err_text(codec::delta_decode(&h, &bad));
        assert!(e.contains("at most 16"), "{e}");

        // dequantize: centroid count vs index width, base length.
        let p = codec::pack_indices(&idx, 3).unwrap();
        let e = err_text(codec::dequantize::<f32>(&p, &[0.0; 4], None));
        assert!(
            e.contains("codec::dequantize") && e.contains("4 centroids"),
            "{e}"
        );
        let e = err_text(codec::dequantize::<f32>(&p, &[], None));
        assert!(e.contains("1..=256"), "{e}");
        let e = err_text(codec::dequantize::<f32>(&p, &[0.0; 8], Some(&a)));
        assert!(e.contains("indices hold 4 values, base has 40"), "{e}");
    }
    // Buffers on different devices.
    let cpu = Device::cpu().upload(&[1.0f32; 8], "a").unwrap();
    let simt = Device::simt().upload(&[1.0f32; 8], "b").unwrap();
    let e = err_text(codec::delta_encode(&cpu, &simt));
    assert!(e.contains("new_vals is on simt"), "{e}");
}
