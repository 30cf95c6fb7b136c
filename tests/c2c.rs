//! C2C projector fuse on every executor present (CPU path; host SIMT wave32 and wave64, in
//! order and shuffled twice; CUDA/HIP when present) against the f64 reference, for contiguous,
//! paged and token-major caches, mixed head counts, head dims and dtypes; closed gates.

use half::{bf16, f16};
use tessera::ops::c2c::Options;
use tessera::testing::simt;
use tessera::verify::c2c::{dims, Case, Side};
use tessera::{Device, Schedule};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [
            Schedule::InOrder,
            Schedule::Shuffled(0xc2c),
            Schedule::Shuffled(0xc2d),
        ] {
            d.push(simt(wave, s, 2));
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

fn check<
    W: tessera::ops::c2c::HalfFloat,
    S: tessera::ops::c2c::HalfFloat,
    C: tessera::ops::c2c::HalfFloat,
>(
    devs: &[Device],
    c: &Case,
) {
    for dev in devs {
        let o = c.outcome::<W, S, C>(dev);
        println!("{} on {}: {}", c.label, dev.backend(), o.error);
        assert!(
            o.pass(),
            "{} on {}: error {}: {}",
            c.label,
            dev.backend(),
            o.error,
            o.result.unwrap_err()
        );
    }
}

#[test]
fn contiguous_and_paged_mixed_heads() {
    let devs = devices();
    let d = dims(2, 16, 4, 8, 160, 48, 2);
    let c = Case::generate::<bf16, bf16, bf16>(
        d,
        37,
        Side::Paged,
        Side::Contiguous { batch: 2 },
        Options::default(),
        0.7,
        1,
    );
    check::<bf16, bf16, bf16>(&devs, &c);
    let c = Case::generate::<f16, f16, f16>(
        d,
        37,
        Side::Contiguous { batch: 3 },
        Side::Paged,
        Options::default(),
        0.2,
        2,
    );
    check::<f16, f16, f16>(&devs, &c);
}

#[test]
fn driver_prefill_and_decode() {
    for dev in devices() {
        for seed in [3u64, 4] {
            let o = tessera::verify::c2c::driver_outcome::<bf16>(&dev, seed);
            println!("driver seed {seed} on {}: {}", dev.backend(), o.error);
            assert!(
                o.pass(),
                "driver on {}: {}",
                dev.backend(),
                o.result.unwrap_err()
            );
        }
    }
}

fn check_unfused<
    W: tessera::ops::c2c::HalfFloat,
    S: tessera::ops::c2c::HalfFloat,
    C: tessera::ops::c2c::HalfFloat,
>(
    devs: &[Device],
    c: &Case,
) {
    for dev in devs {
        let o = c.outcome_unfused::<W, S, C>(dev);
        println!("unfused {} on {}: {}", c.label, dev.backend(), o.error);
        assert!(
            o.pass(),
            "unfused {} on {}: error {}: {}",
            c.label,
            dev.backend(),
            o.error,
            o.result.unwrap_err()
        );
    }
}

#[test]
fn unfused_baseline_matches_the_reference() {
    let devs = devices();
    // Two FFN blocks (per-block weight copies), paged sharer, contiguous receiver.
    let d = dims(2, 16, 4, 8, 160, 48, 2);
    let c = Case::generate::<bf16, bf16, bf16>(
        d,
        37,
        Side::Paged,
        Side::Contiguous { batch: 2 },
        Options::default(),
        0.7,
        5,
    );
    check_unfused::<bf16, bf16, bf16>(&devs, &c);
    // Mixed dtypes, head dims not multiples of 8, one block, soft gate with tanh GELU.
    let soft = Options {
        gate: tessera::ops::c2c::Gate::Soft { tau: 0.5 },
        gelu: tessera::ops::c2c::Activation::GeluTanh,
    };
    let d = dims(3, 6, 2, 5, 40, 24, 1);
    let c = Case::generate::<f16, bf16, f16>(
        d,
        21,
        Side::Contiguous { batch: 3 },
        Side::Paged,
        soft,
        0.4,
        6,
    );
    check_unfused::<f16, bf16, f16>(&devs, &c);
    // A closed gate: nothing launched, the cache bit-identical.
    let c = Case::generate::<bf16, bf16, bf16>(
        d,
        21,
        Side::TokenMajor,
        Side::Paged,
        Options::default(),
        -0.5,
        7,
    );
    check_unfused::<bf16, bf16, bf16>(&devs, &c);
}
