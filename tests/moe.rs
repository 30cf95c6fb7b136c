//! `moe.align` on every executor present (CPU path and host SIMT wave32/wave64 with in-order,
//! shuffled and skewed schedules, race detector on; CUDA/HIP when a GPU is present), bit-exact
//! against the reference, and its bad-input errors.

use proptest::prelude::*;
use tessera::ops::moe;
use tessera::verify::moe::{AlignCase, Ids, CASES};
use tessera::{Device, Error};

fn devices() -> Vec<Device> {
    tessera::testing::test_devices([21, 22])
}

fn check(devs: &[Device], case: &AlignCase) {
    for dev in devs {
        let o = case.outcome(dev);
        assert!(
            o.pass(),
            "{} on {}: {}",
            case.label,
            dev.backend(),
            o.result.unwrap_err()
        );
    }
}

/// The verify rows' cases, on every test executor.
#[test]
fn verify_cases_on_every_executor() {
    let devs = devices();
    for (j, &(t, k, e, b, ids)) in CASES.iter().enumerate() {
        check(
            &devs,
            &AlignCase::generate(t, k, e, b, ids, 0x7e57 + j as u64),
        );
    }
}

/// Edge shapes: E = 1, block 1, one token, T·k around the tile (256) and chunk (1024) sizes,
/// a block larger than everything, experts with no tokens.
#[test]
fn edge_shapes() {
    let devs = devices();
    let shapes: &[(usize, usize, usize, usize, Ids)] = &[
        (1, 1, 1, 1, Ids::Uniform),
        (255, 1, 3, 1, Ids::Uniform),
        (256, 1, 3, 2, Ids::Skewed),
        (257, 1, 5, 3, Ids::Uniform),
        (128, 8, 16, 4, Ids::Skewed),
        (129, 8, 16, 4, Ids::OneExpert),
        (13, 3, 200, 512, Ids::Uniform),
        (700, 2, 2, 1, Ids::Skewed),
        (64, 4, 1024, 1, Ids::Uniform),
        (3000, 1, 1, 64, Ids::Uniform),
    ];
    for (j, &(t, k, e, b, ids)) in shapes.iter().enumerate() {
        check(
            &devs,
            &AlignCase::generate(t, k, e, b, ids, 0xed6e + j as u64),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random sizes and ids.
    #[test]
    fn random_problems(
        t in 0usize..700,
        k in 1usize..9,
        e in 1usize..300,
        b in 1usize..70,
        kind in prop::sample::select(vec![Ids::Uniform, Ids::Skewed, Ids::OneExpert]),
        seed in any::<u64>(),
    ) {
        check(&devices(), &AlignCase::generate(t, k, e, b, kind, seed));
    }
}

fn assert_invalid(r: tessera::Result<moe::Aligned>, what: &str) {
    match r {
        Err(Error::InvalidArgument { op, msg }) => {
            assert_eq!(op, "moe::align", "{what}: {msg}");
            assert!(!msg.is_empty());
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// Out-of-range ids (negative, == E, far above E, in the last entry of a partial tile and in a
/// later chunk), E = 0, E > MAX_EXPERTS, block_size = 0, k = 0 and a length that is not a
/// multiple of k: each an InvalidArgument naming the op, on every executor.
#[test]
fn bad_inputs_are_errors() {
    for dev in devices() {
        let mut ids: Vec<i32> = (0..3000).map(|i| i % 8).collect();
        let up = |v: &[i32]| dev.upload(v, "topk_ids").unwrap();
        for (pos, bad) in [
            (0usize, -1i32),
            (2999, 8),
            (1500, i32::MAX),
            (1024, i32::MIN),
        ] {
            let keep = ids[pos];
            ids[pos] = bad;
            assert_invalid(
                moe::align(&up(&ids), 4, 8, 16),
                &format!("id {bad} at {pos} on {}", dev.backend()),
            );
            ids[pos] = keep;
        }
        let good = up(&ids);
        assert_invalid(moe::align(&good, 4, 0, 16), "E = 0");
        assert_invalid(
            moe::align(&good, 4, moe::MAX_EXPERTS + 1, 16),
            "E > MAX_EXPERTS",
        );
        assert_invalid(moe::align(&good, 4, 8, 0), "block_size = 0");
        assert_invalid(moe::align(&good, 0, 8, 16), "k = 0");
        assert_invalid(moe::align(&good, 7, 8, 16), "length not a multiple of k");
        assert_invalid(
            moe::align(&good, 4, 1024, usize::MAX / 2),
            "output longer than i32::MAX",
        );
        // The good input still works after the errors.
        let a = moe::align(&good, 4, 8, 16).unwrap();
        let want = tessera::reference::moe::align(&ids, 8, 16);
        assert_eq!(
            a.sorted_token_ids.download().unwrap(),
            want.sorted_token_ids
        );
    }
}
