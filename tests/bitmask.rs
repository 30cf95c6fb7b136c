//! Bitmask sparsify/densify on every executor present (CPU path and host SIMT wave32/wave64 with
//! in-order and shuffled schedules always; CUDA/HIP when a GPU is present), against the reference.

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::bitmask::{self, AnyBuffer};
use tessera::testing::bits;
use tessera::verify::bitmask::Case;
use tessera::{Device, Float};

/// Every executor the tests run on.
fn devices() -> Vec<Device> {
    tessera::testing::test_devices([11, 12])
}

/// Element patterns: 0 unchanged, 1 random change, 2 NaN, 3 -0.0 / +0.0 swap, 4 tiny change.
fn make<T: Float>(n: usize, pattern: &[u8], seed: u64) -> (Vec<T>, Vec<T>) {
    let mut r = tessera::testing::Rng(seed);
    let mut base = Vec::with_capacity(n);
    let mut new = Vec::with_capacity(n);
    for i in 0..n {
        let b = T::from_f64((r.unit() - 0.5) * 4.0);
        let x = match pattern[i % pattern.len()] {
            0 => b,
            1 => T::from_f64((r.unit() - 0.5) * 4.0),
            2 => T::from_f64(f64::NAN),
            3 => T::from_f64(if b.to_f64().is_sign_negative() {
                0.0
            } else {
                -0.0
            }),
            _ => T::from_f64(b.to_f64() * (1.0 + 1e-3)),
        };
        base.push(if pattern[i % pattern.len()] == 3 {
            T::from_f64(0.0)
        } else {
            b
        });
        new.push(x);
    }
    (base, new)
}

/// The shared case (what the verify rows run: sparsify and densify against the reference, bit
/// for bit, and the lossless round trip at tau 0), then densify of the op's own sparse output.
fn check<T: Float>(dev: &Device, base: &[T], new: &[T], tau: f32) -> Result<(), TestCaseError> {
    let case = Case {
        base: base.to_vec(),
        new: new.to_vec(),
        tau,
        label: format!("n={} tau={tau}", base.len()),
    };
    for row in case.rows(dev) {
        prop_assert!(row.pass, "{} on {}: {}", row.op, row.executor, row.detail);
    }
    let b = dev.upload(base, "base").unwrap();
    let x = dev.upload(new, "new").unwrap();
    let s = bitmask::sparsify(&b, &x, tau).unwrap();
    prop_assert_eq!(s.len, base.len());
    let d = bitmask::densify(&b, &s).unwrap().download().unwrap();
    let (rm, rv) = tessera::reference::bitmask::sparsify(base, new, tau);
    prop_assert_eq!(
        bits(&d),
        bits(&tessera::reference::bitmask::densify(base, &rm, &rv)),
        "densify of the op's own output on {}",
        dev.backend()
    );
    Ok(())
}

fn interesting_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![
            0usize, 1, 2, 31, 32, 33, 63, 64, 65, 97, 251, 8191, 8192, 8193, 16411
        ]),
        0usize..40_000,
    ]
}

fn pattern() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![0u8]),       // none changed
        Just(vec![1u8]),       // all changed
        Just(vec![2u8, 0, 3]), // NaN and signed zeros
        prop::collection::vec(0u8..5, 1..64),
    ]
}

proptest! {
    // No failure persistence: a failing case must not write into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn matches_reference_f32(n in interesting_len(), p in pattern(), seed: u64, lossy in any::<bool>()) {
        let (b, x) = make::<f32>(n, &p, seed);
        let tau = if lossy { 1e-2 } else { 0.0 };
        for d in devices() { check(&d, &b, &x, tau)?; }
    }

    #[test]
    fn matches_reference_f16(n in interesting_len(), p in pattern(), seed: u64, lossy in any::<bool>()) {
        let (b, x) = make::<f16>(n, &p, seed);
        let tau = if lossy { 1e-2 } else { 0.0 };
        for d in devices() { check(&d, &b, &x, tau)?; }
    }

    #[test]
    fn matches_reference_bf16(n in interesting_len(), p in pattern(), seed: u64, lossy in any::<bool>()) {
        let (b, x) = make::<bf16>(n, &p, seed);
        let tau = if lossy { 1e-2 } else { 0.0 };
        for d in devices() { check(&d, &b, &x, tau)?; }
    }
}

/// Several blocks' worth of elements, so block offsets and the multi-chunk scan are exercised.
#[test]
fn many_blocks() {
    let n = 8192 * 300 + 5;
    let (b, x) = make::<bf16>(n, &[0, 1, 0, 0, 4, 2], 99);
    for d in devices() {
        check(&d, &b, &x, 0.0).unwrap();
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
        let e = err_text(bitmask::sparsify(&a, &b, 0.0));
        assert!(
            e.contains("bitmask::sparsify") && e.contains("40") && e.contains("41"),
            "{e}"
        );

        for tau in [-1.0f32, f32::NAN, f32::INFINITY] {
            let e = err_text(bitmask::sparsify(&a, &a, tau));
            assert!(e.contains("tau"), "{e}");
        }

        // Mask of the wrong length.
        let vals = dev.upload(&[2.0f32], "v").unwrap();
        let mask = dev.upload(&[1u32], "m").unwrap();
        let e = err_text(bitmask::densify_parts(&a, &mask, &vals));
        assert!(
            e.contains("bitmask::densify") && e.contains("mask has 1 words"),
            "{e}"
        );

        // Bits set past the last element.
        let mask = dev.upload(&[0u32, 1 << 9], "m").unwrap();
        let e = err_text(bitmask::densify_parts(&a, &mask, &vals));
        assert!(e.contains("past element 40"), "{e}");

        // Values that do not match the number of set bits.
        let mask = dev.upload(&[0b11u32, 0], "m").unwrap();
        let e = err_text(bitmask::densify_parts(&a, &mask, &vals));
        assert!(e.contains("marks 2 elements, values has 1"), "{e}");

        // Dtype mismatch through the run-time-typed API.
        let h = dev.upload(&[f16::ZERO; 40], "h").unwrap();
        let a2 = dev.upload(&[1.0f32; 40], "a").unwrap();
        let e = err_text(bitmask::sparsify_any(
            &AnyBuffer::F32(a2),
            &AnyBuffer::F16(h),
            0.0,
        ));
        assert!(e.contains("base is f32 but new is f16"), "{e}");
    }
    // Buffers on different devices.
    let cpu = Device::cpu().upload(&[1.0f32; 8], "a").unwrap();
    let simt = Device::simt().upload(&[1.0f32; 8], "b").unwrap();
    let e = err_text(bitmask::sparsify(&cpu, &simt, 0.0));
    assert!(e.contains("new is on simt"), "{e}");
}
