//! `featcache.select` (issue 14, first op) on every executor present (CPU path; host SIMT
//! wave32 and wave64, in order and shuffled twice; CUDA/HIP when present): classes and the C1
//! list bit-exact against the f64 reference on random scores with ties, all-equal and zero
//! scores, both ends of the cache ratio; bad inputs named.

use proptest::prelude::*;
use tessera::ops::featcache;
use tessera::testing::simt;
use tessera::verify::featcache::{cases, Case};
use tessera::{Device, Error, Schedule};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [
            Schedule::InOrder,
            Schedule::Shuffled(0xfc),
            Schedule::Shuffled(0xfd),
        ] {
            d.push(simt(wave, s, 2));
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

fn check(devs: &[Device], c: &Case) {
    for dev in devs {
        let o = c.outcome(dev);
        assert!(
            o.pass(),
            "{} on {}: {}",
            c.label,
            dev.backend(),
            o.result.unwrap_err()
        );
    }
}

#[test]
fn verify_cases_are_exact() {
    let devs = devices();
    for c in cases() {
        check(&devs, &c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random sizes (0, 1, primes, past one block), tie levels, ratios and masses.
    #[test]
    fn random_selections(
        n in prop::sample::select(vec![0usize, 1, 2, 31, 257, 600]),
        levels in 0u32..6,
        cr in 0.0f64..=1.0,
        low_mass in 0.0f64..=1.0,
        seed in any::<u64>(),
    ) {
        let devs = vec![
            Device::cpu(),
            simt(32, Schedule::Shuffled(seed), 2),
            simt(64, Schedule::Shuffled(seed ^ 1), 2),
        ];
        check(&devs, &Case::generate(n, levels, cr, low_mass, seed));
    }
}

fn expect_invalid<T>(r: tessera::Result<T>, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument { op, msg }) => {
            assert_eq!(op, "featcache.select", "{msg}");
            for n in needles {
                assert!(msg.contains(n), "'{msg}' lacks '{n}'");
            }
        }
        Err(e) => panic!("expected InvalidArgument ({needles:?}), got {e}"),
        Ok(_) => panic!("expected InvalidArgument ({needles:?}), got Ok"),
    }
}

#[test]
fn bad_inputs_are_named() {
    for dev in devices() {
        let ok = [1.0f32, 2.0, 3.0];
        let cf = [0u32, 1, 2];
        expect_invalid(
            featcache::select_host(&dev, &ok, &ok[..2], &cf, 0.5, 0.1),
            &["mismatched lengths", "fut 2"],
        );
        for cr in [-0.1, 1.5, f64::NAN] {
            expect_invalid(
                featcache::select_host(&dev, &ok, &ok, &cf, cr, 0.1),
                &["cr = ", "outside [0, 1]"],
            );
        }
        expect_invalid(
            featcache::select_host(&dev, &ok, &ok, &cf, 0.5, 2.0),
            &["low_mass = 2"],
        );
        expect_invalid(
            featcache::select_host(&dev, &[1.0, f32::NAN, 3.0], &ok, &cf, 0.5, 0.1),
            &["his[1]"],
        );
        expect_invalid(
            featcache::select_host(&dev, &ok, &[1.0, 2.0, -1.0], &cf, 0.5, 0.1),
            &["fut[2]"],
        );
        expect_invalid(
            featcache::select_host(&dev, &ok, &ok, &[0, 256, 1], 0.5, 0.1),
            &["cf[1]", "exp table"],
        );
    }
}
