//! The feature-ring ops of issue 14 (`featcache.gather`, `.scatter`, `.reuse`, `.age`) on every
//! executor present (CPU path; host SIMT wave32 and wave64, in order and shuffled twice, with
//! the SIMT red zones and poisoned allocations; CUDA/HIP when present): multi-step sequences
//! (the rings fill and wrap, zero and positive stamp gaps) bit-exact against the host model, and
//! every bad input named, with nothing written.

use proptest::prelude::*;
use tessera::ops::featcache::{self, Ring, RING};
use tessera::reference::featcache as reference;
use tessera::testing::simt;
use tessera::verify::featcache::{ring_cases, RingCase, RING_OPS};
use tessera::{Device, Error, Schedule};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [
            Schedule::InOrder,
            Schedule::Shuffled(0xa1),
            Schedule::Shuffled(0xa2),
        ] {
            d.push(simt(wave, s, 2));
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

fn check(devs: &[Device], c: &RingCase) {
    for dev in devs {
        for (op, o) in RING_OPS.iter().zip(c.outcomes(dev)) {
            assert!(
                o.pass(),
                "{op} {} on {}: {}",
                c.label,
                dev.backend(),
                o.result.unwrap_err()
            );
            assert_eq!(o.error, "exact");
        }
    }
}

#[test]
fn verify_cases_are_exact() {
    let devs = devices();
    for c in ring_cases() {
        check(&devs, &c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Random sizes (1, primes, past one block), widths, step counts and recompute fractions.
    #[test]
    fn random_sequences(
        n in prop::sample::select(vec![1usize, 2, 31, 257, 600]),
        w in prop::sample::select(vec![1usize, 3, 64, 129, 300]),
        steps in 1usize..7,
        frac in 0.05f64..=1.0,
        seed in any::<u64>(),
    ) {
        let devs = vec![
            Device::cpu(),
            simt(32, Schedule::Shuffled(seed), 2),
            simt(64, Schedule::Shuffled(seed ^ 1), 2),
        ];
        check(&devs, &RingCase::generate(n, w, steps, frac, seed));
    }
}

/// The class-3 weights as the issue states them, end to end on every executor: three cached
/// features at t = 13, 12, 11 (newest 11), read at t = 10.
#[test]
fn weighted_reuse_follows_the_formula() {
    for dev in devices() {
        let mut ring = Ring::new(&dev, 2, 2).unwrap();
        let mut x = dev.upload(&[0f32; 4], "x").unwrap();
        for (t, v) in [(13.0, 100.0f32), (12.0, 10.0), (11.0, 1.0)] {
            let rows = dev.upload(&[v, -v], "rows").unwrap();
            let c1 = dev.upload(&[1u32], "c1").unwrap();
            featcache::scatter(&rows, &c1, t, &mut x, &mut ring).unwrap();
        }
        let class = dev.upload(&[1u8, 3], "class").unwrap();
        featcache::reuse(&class, &ring, 10.0, &mut x).unwrap();
        let got = x.download().unwrap();
        let raw = [(-1f64).exp(), 2.0 * (-2f64).exp(), 3.0 * (-3f64).exp()];
        let sum: f64 = raw.iter().sum();
        let want = (raw[0] * 1.0 + raw[1] * 10.0 + raw[2] * 100.0) / sum;
        assert!(
            (got[2] as f64 - want).abs() <= 1e-6 * want,
            "{} on {}",
            got[2],
            dev.backend()
        );
        assert_eq!(got[3], -got[2]);
        assert_eq!(&got[..2], &[0.0, 0.0]);
        let h = ring.to_host().unwrap();
        // Three pushes from head 0: slots 1, 2, 0.
        assert_eq!((h.head[1], h.len[1], h.len[0]), (0, 3, 0));
        // The kernels ran (3 scatters × 4 kernels, the reuse check and the reuse).
        if dev.backend().runs_kernels() {
            assert!(dev.launches() >= 14, "{} launches", dev.launches());
        }
        assert_eq!(h.stamps(1), vec![11.0, 12.0, 13.0]);
    }
}

fn expect_invalid<T>(r: tessera::Result<T>, op: &str, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument { op: got, msg }) => {
            assert_eq!(got, op, "{msg}");
            for n in needles {
                assert!(msg.contains(n), "'{msg}' lacks '{n}'");
            }
        }
        Err(e) => panic!("expected InvalidArgument ({needles:?}), got {e}"),
        Ok(_) => panic!("expected InvalidArgument ({needles:?}), got Ok"),
    }
}

/// A ring of 4 tokens, width 2: tokens 0 and 1 cached at t = 5, token 2 at t = 5 and 4, token
/// 3 never.
fn filled(dev: &Device) -> (Ring, tessera::DeviceBuffer<f32>) {
    let mut ring = Ring::new(dev, 4, 2).unwrap();
    let mut x = dev.upload(&[0f32; 8], "x").unwrap();
    let rows = dev
        .upload(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], "rows")
        .unwrap();
    let c1 = dev.upload(&[0u32, 1, 2], "c1").unwrap();
    featcache::scatter(&rows, &c1, 5.0, &mut x, &mut ring).unwrap();
    let c1 = dev.upload(&[2u32], "c1").unwrap();
    let rows = dev.upload(&[1.5f32, 2.5], "rows").unwrap();
    featcache::scatter(&rows, &c1, 4.0, &mut x, &mut ring).unwrap();
    (ring, x)
}

/// The state a failed call must leave untouched.
fn snapshot(ring: &Ring, x: &tessera::DeviceBuffer<f32>) -> (reference::Ring, Vec<f32>) {
    (ring.to_host().unwrap(), x.download().unwrap())
}

#[test]
fn bad_inputs_are_named_and_write_nothing() {
    for dev in devices() {
        let (mut ring, mut x) = filled(&dev);
        let before = snapshot(&ring, &x);
        let up32 = |v: &[u32]| dev.upload(v, "c1").unwrap();
        let upf = |v: &[f32]| dev.upload(v, "rows").unwrap();
        let up8 = |v: &[u8]| dev.upload(v, "class").unwrap();
        let g = "featcache.gather";
        let s = "featcache.scatter";
        let r = "featcache.reuse";
        let a = "featcache.age";

        // gather: width 0, x not a multiple, an index past n (the first named); repeats allowed.
        expect_invalid(featcache::gather(&x, 0, &up32(&[0])), g, &["width is 0"]);
        expect_invalid(
            featcache::gather(&x, 3, &up32(&[0])),
            g,
            &["multiple of width 3"],
        );
        expect_invalid(
            featcache::gather(&x, 2, &up32(&[1, 9, 4])),
            g,
            &["c1[1] = 9 is not a token (n = 4)"],
        );
        assert_eq!(
            featcache::gather(&x, 2, &up32(&[2, 2]))
                .unwrap()
                .download()
                .unwrap(),
            vec![1.5, 2.5, 1.5, 2.5]
        );

        // scatter: lengths, t_now, index range, repeats, corrupt ring state.
        let rows2 = upf(&[7.0, 7.0, 8.0, 8.0]);
        expect_invalid(
            featcache::scatter(&upf(&[1.0; 3]), &up32(&[0]), 3.0, &mut x, &mut ring),
            s,
            &["mismatched lengths", "rows 3"],
        );
        let mut short = dev.upload(&[0f32; 6], "x").unwrap();
        expect_invalid(
            featcache::scatter(&rows2, &up32(&[0, 1]), 3.0, &mut short, &mut ring),
            s,
            &["mismatched lengths", "x 6"],
        );
        for t in [f32::NAN, f32::INFINITY] {
            expect_invalid(
                featcache::scatter(&rows2, &up32(&[0, 1]), t, &mut x, &mut ring),
                s,
                &["t_now", "is not finite"],
            );
        }
        expect_invalid(
            featcache::scatter(&rows2, &up32(&[3, 4]), 3.0, &mut x, &mut ring),
            s,
            &["c1[1] = 4 is not a token (n = 4)"],
        );
        expect_invalid(
            featcache::scatter(&upf(&[1.0; 6]), &up32(&[3, 1, 3]), 3.0, &mut x, &mut ring),
            s,
            &["c1[2] = 3 repeats c1[0]"],
        );
        // The first bad entry wins: the repeat at 1 before the range error at 2.
        expect_invalid(
            featcache::scatter(&upf(&[1.0; 6]), &up32(&[0, 0, 9]), 3.0, &mut x, &mut ring),
            s,
            &["c1[1] = 0 repeats c1[0]"],
        );
        assert_eq!(snapshot(&ring, &x), before);
        {
            let mut h = ring.to_host().unwrap();
            h.head[1] = RING as u8;
            let mut corrupt = Ring::from_host(&dev, &h).unwrap();
            expect_invalid(
                featcache::scatter(&rows2, &up32(&[0, 1]), 3.0, &mut x, &mut corrupt),
                s,
                &["ring of token 1 is corrupt", "head 3"],
            );
            // reuse reads the corrupt ring only for class 2/3 tokens.
            expect_invalid(
                featcache::reuse(&up8(&[1, 2, 1, 1]), &corrupt, 3.0, &mut x),
                r,
                &["ring of token 1 is corrupt"],
            );
            featcache::reuse(&up8(&[1, 1, 1, 1]), &corrupt, 3.0, &mut x).unwrap();
        }
        assert_eq!(snapshot(&ring, &x), before);

        // reuse: lengths, t_now, classes, empty rings, stamp gaps (class 2: the newest only).
        expect_invalid(
            featcache::reuse(&up8(&[1, 1, 1]), &ring, 3.0, &mut x),
            r,
            &["mismatched lengths", "class 3"],
        );
        expect_invalid(
            featcache::reuse(&up8(&[1, 1, 1, 1]), &ring, f32::NAN, &mut x),
            r,
            &["t_now = NaN is not finite"],
        );
        expect_invalid(
            featcache::reuse(&up8(&[1, 2, 0, 9]), &ring, 3.0, &mut x),
            r,
            &["class[2] = 0 is not 1, 2 or 3"],
        );
        expect_invalid(
            featcache::reuse(&up8(&[2, 1, 1, 3]), &ring, 3.0, &mut x),
            r,
            &["class[3] = 3 but token 3 has no cached feature"],
        );
        // Token 2: stamps 4 (newest), 5. At t = 4.5 the newest is before t_now.
        expect_invalid(
            featcache::reuse(&up8(&[1, 1, 2, 1]), &ring, 4.5, &mut x),
            r,
            &["token 2: cached stamp 4", "t_now = 4.5"],
        );
        // Token 0 at t = 6: class 3, its only stamp 5 is before.
        expect_invalid(
            featcache::reuse(&up8(&[3, 1, 1, 1]), &ring, 6.0, &mut x),
            r,
            &["token 0: cached stamp 5"],
        );
        {
            let mut h = ring.to_host().unwrap();
            let sl = h.slot(1, 0);
            h.stamp[sl * 4 + 1] = f32::INFINITY;
            let bad = Ring::from_host(&dev, &h).unwrap();
            expect_invalid(
                featcache::reuse(&up8(&[1, 3, 1, 1]), &bad, 3.0, &mut x),
                r,
                &["token 1: cached stamp inf", "not finite"],
            );
        }
        assert_eq!(snapshot(&ring, &x), before);

        // age: lengths, class values; nothing written.
        let mut cf = dev.upload(&[1u32, 2, 3, 4], "cf").unwrap();
        expect_invalid(
            featcache::age(&up8(&[1, 2, 3]), &mut cf),
            a,
            &["mismatched lengths: class 3, cf 4"],
        );
        expect_invalid(
            featcache::age(&up8(&[1, 2, 4, 0]), &mut cf),
            a,
            &["class[2] = 4 is not 1, 2 or 3"],
        );
        assert_eq!(cf.download().unwrap(), vec![1, 2, 3, 4]);

        // Ring construction and rings of another size or device.
        expect_invalid(Ring::new(&dev, 4, 0), "featcache.ring", &["width is 0"]);
        expect_invalid(
            Ring::from_parts(
                upf(&[0.0; 5]),
                upf(&[0.0; 6]),
                up8(&[0, 0]),
                up8(&[0, 0]),
                2,
                1,
            ),
            "featcache.ring",
            &["ring.feat has 5 elements"],
        );
        let other_size = Ring::new(&dev, 3, 2).unwrap();
        expect_invalid(
            featcache::reuse(&up8(&[1, 1, 1, 1]), &other_size, 3.0, &mut x),
            r,
            &["mismatched lengths"],
        );
        let elsewhere = Device::cpu_separate();
        let mut far = Ring::new(&elsewhere, 4, 2).unwrap();
        expect_invalid(
            featcache::scatter(&rows2, &up32(&[0, 1]), 3.0, &mut x, &mut far),
            s,
            &["ring.feat is on"],
        );
        expect_invalid(
            featcache::gather(&x, 2, &elsewhere.upload(&[0u32], "c1").unwrap()),
            g,
            &["c1 is on"],
        );
        assert_eq!(snapshot(&ring, &x), before);
    }
}
