//! C2C projector fuse on every executor present (CPU path; host SIMT wave32 and wave64, in
//! order and shuffled twice, red zones and poisoned buffers from the SIMT allocator; CUDA/HIP
//! when present) against the f64 reference, for contiguous, paged and token-major caches, mixed
//! head counts, head dims and dtypes; closed gates (bit-identical, no launch); the driver's
//! prefill and decode; the unfused baseline; random shapes (proptest).

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::c2c::{Activation, Gate, HalfFloat, Options};
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

/// CPU, one shuffled SIMT device per wave width, and any GPU (for the random sweep).
fn few_devices(seed: u64) -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        d.push(simt(wave, Schedule::Shuffled(seed), 2));
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

/// The fused path (or the unfused baseline) on every device, against the reference.
fn check<W: HalfFloat, S: HalfFloat, C: HalfFloat>(devs: &[Device], c: &Case, unfused: bool) {
    let what = if unfused { "unfused " } else { "" };
    for dev in devs {
        let o = if unfused {
            c.outcome_unfused::<W, S, C>(dev)
        } else {
            c.outcome::<W, S, C>(dev)
        };
        println!("{what}{} on {}: {}", c.label, dev.backend(), o.error);
        assert!(
            o.pass(),
            "{what}{} on {}: error {}: {}",
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
    check::<bf16, bf16, bf16>(&devs, &c, false);
    let c = Case::generate::<f16, f16, f16>(
        d,
        37,
        Side::Contiguous { batch: 3 },
        Side::Paged,
        Options::default(),
        0.2,
        2,
    );
    check::<f16, f16, f16>(&devs, &c, false);
}

/// Mixed dtypes (a cache of the other half type converted on load), head dims that are not
/// multiples of 8 (element loads), the soft gate with tanh GELU, and closed gates.
#[test]
fn mixed_dtypes_element_loads_and_gates() {
    let devs = devices();
    let soft = Options {
        gate: Gate::Soft { tau: 0.5 },
        gelu: Activation::GeluTanh,
    };
    let d = dims(3, 6, 2, 5, 40, 24, 1);
    let c = Case::generate::<bf16, f16, bf16>(
        d,
        21,
        Side::TokenMajor,
        Side::Paged,
        Options::default(),
        1.5,
        3,
    );
    check::<bf16, f16, bf16>(&devs, &c, false);
    let c = Case::generate::<f16, bf16, f16>(
        d,
        21,
        Side::Contiguous { batch: 3 },
        Side::Paged,
        soft,
        -0.4,
        4,
    );
    check::<f16, bf16, f16>(&devs, &c, false);
    // Closed hard gates (logit 0 and below): bit-identical, no launch.
    for logit in [0.0, -2.0] {
        let c = Case::generate::<bf16, bf16, f16>(
            d,
            21,
            Side::Paged,
            Side::Contiguous { batch: 2 },
            Options::default(),
            logit,
            5,
        );
        check::<bf16, bf16, f16>(&devs, &c, false);
    }
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
    check::<bf16, bf16, bf16>(&devs, &c, true);
    // Mixed dtypes, head dims not multiples of 8, one block, soft gate with tanh GELU.
    let soft = Options {
        gate: Gate::Soft { tau: 0.5 },
        gelu: Activation::GeluTanh,
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
    check::<f16, bf16, f16>(&devs, &c, true);
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
    check::<bf16, bf16, bf16>(&devs, &c, true);
}

fn side(i: usize) -> Side {
    [
        Side::TokenMajor,
        Side::Contiguous { batch: 1 },
        Side::Contiguous { batch: 3 },
        Side::Paged,
    ][i]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// Random sizes (0, 1, primes and others; hidden sizes across column tiles; no FFN block),
    /// layouts, dtype combinations and gates.
    #[test]
    fn random_problems(
        tokens in prop::sample::select(vec![0usize, 1, 2, 13, 37, 131]),
        hs in 1usize..4,
        ds in prop::sample::select(vec![1usize, 7, 8, 16]),
        ht in 1usize..5,
        dt in prop::sample::select(vec![1usize, 5, 8, 24]),
        hidden in prop::sample::select(vec![1usize, 17, 64, 129]),
        ffn in prop::sample::select(vec![1usize, 31, 48]),
        blocks in 0usize..3,
        sides in (0usize..4, 0usize..4),
        types in 0usize..4,
        soft in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let d = dims(hs, ds, ht, dt, hidden, ffn, blocks);
        let opts = if soft {
            Options { gate: Gate::Soft { tau: 0.7 }, gelu: Activation::GeluTanh }
        } else {
            Options::default()
        };
        let devs = few_devices(seed);
        let (s, t) = (side(sides.0), side(sides.1));
        match types {
            0 => check::<bf16, bf16, bf16>(&devs, &Case::generate::<bf16, bf16, bf16>(d, tokens, s, t, opts, 0.9, seed), false),
            1 => check::<f16, f16, f16>(&devs, &Case::generate::<f16, f16, f16>(d, tokens, s, t, opts, 0.9, seed), false),
            2 => check::<bf16, f16, bf16>(&devs, &Case::generate::<bf16, f16, bf16>(d, tokens, s, t, opts, 0.9, seed), false),
            _ => check::<f16, bf16, bf16>(&devs, &Case::generate::<f16, bf16, bf16>(d, tokens, s, t, opts, 0.9, seed), false),
        }
    }
}
