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

// ---- moe.route --------------------------------------------------------------------------------

use tessera::reference::moe as refm;
use tessera::verify::moe::{route_params, Logits, RouteCase, ROUTE_CASES};

fn check_route(devs: &[Device], case: &RouteCase) {
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

/// The route verify rows' cases on every executor (fresh inputs).
#[test]
fn route_verify_cases_on_every_executor() {
    let devs = devices();
    for (i, &(t, n, r, j, k, renorm, psr, kind)) in ROUTE_CASES.iter().enumerate() {
        check_route(
            &devs,
            &RouteCase::generate(
                t,
                n,
                route_params(r, j, k, renorm, psr),
                kind,
                0x7e_57 + i as u64,
            ),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random shapes (T including 0, 1 and primes; N, r, k), PSR on or off, random logits.
    #[test]
    fn route_random_problems(
        t in prop::sample::select(vec![0usize, 1, 2, 3, 5, 31, 97, 131, 300]),
        n in 1usize..40,
        r in 1usize..6,
        jsel in any::<usize>(),
        ksel in any::<usize>(),
        renorm in any::<bool>(),
        psr in prop::option::of((0u64..30, 0u64..20, 0u64..30)),
        kind in prop::sample::select(vec![Logits::Uniform, Logits::Ties, Logits::SomeNegInf]),
        seed in any::<u64>(),
    ) {
        let j = jsel % r;
        let pool = psr.map_or(r * n, |(s, a, b)| refm::psr_pool_size(n, r, s, a, b));
        let k = 1 + ksel % pool;
        check_route(&devices(), &RouteCase::generate(t, n, route_params(r, j, k, renorm, psr), kind, seed));
    }
}

/// The pool size formula by hand: before t_s, in the middle, after t_e, and t_e <= t_s.
#[test]
fn psr_pool_size_by_hand() {
    // N = 64, r = 4: N_t from 64 to 256 over steps 100..1100.
    assert_eq!(refm::psr_pool_size(64, 4, 0, 100, 1100), 64);
    assert_eq!(refm::psr_pool_size(64, 4, 100, 100, 1100), 64);
    // 192 · 400 / 1000 = 76.8 -> 76.
    assert_eq!(refm::psr_pool_size(64, 4, 500, 100, 1100), 64 + 76);
    // 192 · 1 / 1000 = 0.192 -> 0; 192 · 999 / 1000 = 191.8 -> 191.
    assert_eq!(refm::psr_pool_size(64, 4, 101, 100, 1100), 64);
    assert_eq!(refm::psr_pool_size(64, 4, 1099, 100, 1100), 64 + 191);
    assert_eq!(refm::psr_pool_size(64, 4, 1100, 100, 1100), 256);
    assert_eq!(refm::psr_pool_size(64, 4, u64::MAX, 100, 1100), 256);
    // t_e <= t_s: a step function at t_e.
    assert_eq!(refm::psr_pool_size(10, 3, 4, 7, 5), 10);
    assert_eq!(refm::psr_pool_size(10, 3, 5, 7, 5), 30);
    assert_eq!(refm::psr_pool_size(10, 3, 5, 5, 5), 30);
    // r = 1: always N.
    assert_eq!(refm::psr_pool_size(10, 1, 500, 100, 1100), 10);
    // Exact at huge steps (u128: no overflow, no float rounding).
    // (2^63 − 2) / (2^64 − 2) is just below 1/2: 2000 times it floors to 999 (f64 says 1000).
    let big = u64::MAX - 1;
    assert_eq!(refm::psr_pool_size(1000, 3, big / 2, 0, big), 1000 + 1000);
    assert_eq!(
        refm::psr_pool_size(1000, 3, big / 2 - 1, 0, big),
        1000 + 999
    );
}

/// The mask: own experts never masked, exactly r·N − N_t masked, the same for the same
/// (seed, step, layer) and different for another step, layer or seed; none at inference; and
/// the kernel's mask equals the reference's (observed through routing with k = pool).
#[test]
fn psr_mask_rules() {
    let n = 16;
    let mut p = route_params(4, 2, 1, false, Some((300, 100, 1100)));
    let pool = refm::psr_pool_size(n, 4, 300, 100, 1100);
    assert_eq!(pool, 16 + 9);
    let m = refm::psr_mask(n, &p);
    assert_eq!(m.len(), 64);
    assert_eq!(m.iter().filter(|&&x| x).count(), 64 - pool);
    assert!(m[32..48].iter().all(|&x| !x), "own experts masked");
    assert_eq!(refm::psr_mask(n, &p), m, "same seed, step, layer");
    let mut q = p;
    q.psr.as_mut().unwrap().step = 301;
    // Same pool size at step 301 (48·201/1000 -> 9), a new mask.
    assert_eq!(refm::psr_pool_size(n, 4, 301, 100, 1100), pool);
    assert_ne!(refm::psr_mask(n, &q), m, "another step");
    q = p;
    q.layer += 1;
    assert_ne!(refm::psr_mask(n, &q), m, "another layer");
    q = p;
    q.psr.as_mut().unwrap().seed ^= 1;
    assert_ne!(refm::psr_mask(n, &q), m, "another seed");
    q = p;
    q.psr = None;
    assert!(refm::psr_mask(n, &q).iter().all(|&x| !x), "inference");
    // The permutation is a bijection of [0, m) for several m.
    for mm in [1u32, 2, 3, 5, 16, 17, 48, 255, 1023] {
        let mut seen = vec![false; mm as usize];
        for x in 0..mm {
            let y = refm::psr_perm(0x1234, mm, x) as usize;
            assert!(!seen[y]);
            seen[y] = true;
        }
    }
    // The kernel's mask: route every token with k = pool and equal logits; the selected sets
    // are exactly the unmasked experts.
    p.top_k = pool;
    let logits = vec![1.0f32; 3 * 64];
    for dev in devices() {
        let l = dev.upload(&logits, "logits").unwrap();
        let ids = moe::route(&l, 3, &p).unwrap().topk_ids.download().unwrap();
        let want: Vec<i32> = (0..64).filter(|&v| !m[v]).map(|v| v as i32).collect();
        for t in 0..3 {
            assert_eq!(
                ids[t * pool..(t + 1) * pool],
                want[..],
                "on {}",
                dev.backend()
            );
        }
    }
}

/// Ties by hand: equal logits go to the lower id; -0 equals +0; weights of equal logits equal.
#[test]
fn route_ties_by_hand() {
    // T = 2, N = 3, r = 2 (E = 6), inference.
    let logits = [
        1.0f32,
        2.0,
        2.0,
        -0.0,
        0.0,
        2.0, // token 0: 2.0 at 1, 2, 5; then -0/+0 at 3, 4
        0.0,
        -0.0,
        f32::NEG_INFINITY,
        0.0,
        -1.0,
        f32::NEG_INFINITY,
    ];
    let p = route_params(2, 0, 5, false, None);
    for dev in devices() {
        let l = dev.upload(&logits, "logits").unwrap();
        let o = moe::route(&l, 2, &p).unwrap();
        let ids = o.topk_ids.download().unwrap();
        assert_eq!(ids, [1, 2, 5, 0, 3, 0, 1, 3, 4, 2], "on {}", dev.backend());
        let w = o.topk_weights.download().unwrap();
        assert_eq!(w[0], w[1]);
        assert_eq!(w[1], w[2]);
        // Token 1: the -inf expert 2 is picked last with weight 0.
        assert_eq!(w[9], 0.0);
        let z = 3.0f64 + (-1.0f64).exp();
        assert!((w[5] as f64 - 1.0 / z).abs() < 1e-6 * (1.0 / z));
    }
}

fn assert_route_invalid(r: tessera::Result<moe::Routed>, what: &str) {
    match r {
        Err(Error::InvalidArgument { op, msg }) => {
            assert_eq!(op, "moe::route", "{what}: {msg}");
            assert!(!msg.is_empty());
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// Bad parameters and bad logits (NaN, +inf, an all −inf row) are errors on every executor; a
/// NaN in a masked expert is not.
#[test]
fn route_bad_inputs_are_errors() {
    for dev in devices() {
        let b = dev.backend();
        let good: Vec<f32> = (0..5 * 32).map(|i| (i % 13) as f32).collect();
        let l = dev.upload(&good, "logits").unwrap();
        let p = route_params(4, 1, 2, true, None);
        assert!(moe::route(&l, 5, &p).is_ok());
        assert_route_invalid(
            moe::route(&l, 5, &route_params(0, 0, 2, true, None)),
            "r = 0",
        );
        assert_route_invalid(
            moe::route(&l, 5, &route_params(4, 4, 2, true, None)),
            "j >= r",
        );
        assert_route_invalid(
            moe::route(&l, 5, &route_params(4, 1, 0, true, None)),
            "k = 0",
        );
        assert_route_invalid(
            moe::route(&l, 5, &route_params(4, 1, 33, true, None)),
            "k > E",
        );
        assert_route_invalid(
            moe::route(&l, 5, &route_params(4, 1, 9, true, Some((0, 10, 20)))),
            "k > pool",
        );
        assert_route_invalid(moe::route(&l, 3, &p), "length not T·r·N");
        assert_route_invalid(moe::route(&l, 50, &p), "N = 0");
        let big = dev.upload(&vec![0f32; 1028], "logits").unwrap();
        assert_route_invalid(
            moe::route(&big, 1, &route_params(4, 0, 1, false, None)),
            "E > MAX",
        );
        for (pos, x) in [(37usize, f32::NAN), (159, f32::INFINITY)] {
            let mut v = good.clone();
            v[pos] = x;
            let l = dev.upload(&v, "logits").unwrap();
            assert_route_invalid(moe::route(&l, 5, &p), &format!("{x} at {pos} on {b}"));
        }
        let mut v = good.clone();
        v[64..96].fill(f32::NEG_INFINITY);
        let l = dev.upload(&v, "logits").unwrap();
        assert_route_invalid(moe::route(&l, 5, &p), &format!("all -inf row on {b}"));
        // A NaN in a masked expert is ignored: mask everything but the own experts (t < t_s).
        let ps = route_params(4, 1, 2, true, Some((0, 10, 20)));
        let mut v = good.clone();
        v[0] = f32::NAN;
        let l = dev.upload(&v, "logits").unwrap();
        let ids = moe::route(&l, 5, &ps).unwrap().topk_ids.download().unwrap();
        assert!(ids.iter().all(|&i| (8..16).contains(&i)), "{ids:?} on {b}");
        // T = 0.
        let e = dev.upload(&[] as &[f32], "logits").unwrap();
        let o = moe::route(&e, 0, &p).unwrap();
        assert!(o.topk_ids.is_empty() && o.topk_weights.is_empty());
    }
}

// ---- moe.load ---------------------------------------------------------------------------------

use tessera::verify::moe::{LoadCase, LOAD_CASES};

/// The load verify cases and random ones on every executor, bit-exact; bad ids and sizes.
#[test]
fn load_cases_and_bad_inputs() {
    let devs = devices();
    let mut cases: Vec<LoadCase> = LOAD_CASES
        .iter()
        .enumerate()
        .map(|(i, &(n, e, r, ids))| LoadCase::generate(n, e, r, ids, 0x70ad + i as u64))
        .collect();
    cases.push(LoadCase::generate(1, 1, 1, Ids::Uniform, 3));
    cases.push(LoadCase::generate(257, 31, 5, Ids::Skewed, 4));
    for c in &cases {
        for dev in &devs {
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
    for dev in &devs {
        let mut ids: Vec<i32> = (0..600).map(|i| i % 12).collect();
        let ok = dev.upload(&ids, "ids").unwrap();
        let l = moe::load(&ok, 3, 4).unwrap();
        assert_eq!(l.per_layer.download().unwrap(), [150; 4]);
        for (pos, bad) in [(0usize, -1), (599, 12), (300, i32::MIN)] {
            ids[pos] = bad;
            let b = dev.upload(&ids, "ids").unwrap();
            match moe::load(&b, 3, 4) {
                Err(Error::InvalidArgument { op, .. }) => assert_eq!(op, "moe::load"),
                o => panic!("id {bad} on {}: {o:?}", dev.backend()),
            }
            ids[pos] = pos as i32 % 12;
        }
        for (n, r) in [(0, 4), (3, 0), (1025, 1), (257, 4)] {
            assert!(
                matches!(moe::load(&ok, n, r), Err(Error::InvalidArgument { .. })),
                "N={n} r={r}"
            );
        }
    }
}
