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

/// The executors for a case of `entries` flat ids: all of [`devices`], or for the bench-size
/// cases (32768 entries) the CPU path, SIMT w32 and w64 in order and one shuffled schedule each
/// (`tessera verify`, which CI also runs, takes those cases on every schedule).
fn devices_for(entries: usize) -> Vec<Device> {
    if entries < 16384 {
        return devices();
    }
    let mut d = vec![Device::cpu()];
    for (wave, seed) in [(32, 21), (64, 22)] {
        for s in [
            tessera::Schedule::InOrder,
            tessera::Schedule::Shuffled(seed),
        ] {
            d.push(tessera::testing::simt(wave, s, 2));
        }
    }
    d.extend(tessera::testing::gpu());
    d
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

/// `r` is an `InvalidArgument` naming `want_op`, with a message.
fn assert_op_invalid<T: std::fmt::Debug>(r: tessera::Result<T>, want_op: &str, what: &str) {
    match r {
        Err(Error::InvalidArgument { op, msg }) => {
            assert_eq!(op, want_op, "{what}: {msg}");
            assert!(!msg.is_empty());
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

fn assert_invalid(r: tessera::Result<moe::Aligned>, what: &str) {
    assert_op_invalid(r, "moe::align", what)
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
    for (i, &(t, n, r, j, k, renorm, psr, kind)) in ROUTE_CASES.iter().enumerate() {
        check_route(
            &devices_for(t * k),
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
    assert_op_invalid(r, "moe::route", what)
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

// ---- moe.permute / moe.combine ----------------------------------------------------------------

use half::{bf16, f16};
use tessera::verify::moe::{PermuteCase, PERMUTE_CASES};

fn check_permute(devs: &[Device], c: &PermuteCase) {
    for dev in devs {
        for o in [
            c.permute_outcome::<bf16>(dev),
            c.permute_outcome::<f32>(dev),
            c.combine_outcome::<f32, f32>(dev),
            c.combine_outcome::<bf16, bf16>(dev),
            c.combine_outcome::<f16, f32>(dev),
            c.combine_outcome::<f32, f16>(dev),
        ] {
            assert!(
                o.pass(),
                "{} on {}: {}",
                c.label,
                dev.backend(),
                o.result.unwrap_err()
            );
        }
    }
}

/// The permute / combine verify cases on every executor.
#[test]
fn permute_combine_verify_cases() {
    for (i, &(t, d, k, e, b, ids)) in PERMUTE_CASES.iter().enumerate() {
        check_permute(
            &devices_for(t * k),
            &PermuteCase::generate(t, d, k, e, b, ids, 0x7e_9e + i as u64),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Random shapes (0, 1, primes, odd widths), ids and values.
    #[test]
    fn permute_combine_random(
        t in prop::sample::select(vec![0usize, 1, 2, 7, 31, 97, 130]),
        d in prop::sample::select(vec![1usize, 2, 3, 5, 8, 67]),
        k in 1usize..5,
        e in 1usize..40,
        b in 1usize..20,
        kind in prop::sample::select(vec![Ids::Uniform, Ids::Skewed, Ids::OneExpert]),
        seed in any::<u64>(),
    ) {
        check_permute(&devices(), &PermuteCase::generate(t, d, k, e, b, kind, seed));
    }
}

/// Element widths 1, 2 and 8 bytes (the b8/b16/b64 copies), bit-exact, on every executor.
#[test]
fn permute_any_element_type() {
    let (t, d, k, e, b) = (37usize, 3usize, 2usize, 5usize, 4usize);
    let c = PermuteCase::generate(t, d, k, e, b, Ids::Uniform, 5);
    let a = tessera::reference::moe::align(&c.align.topk_ids, e, b);
    let x8: Vec<u8> = (0..t * d).map(|i| (i * 7 % 251) as u8).collect();
    let x64: Vec<u64> = (0..t * d)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    for dev in devices() {
        let ids = dev.upload(&c.align.topk_ids, "ids").unwrap();
        let al = moe::align(&ids, k, e, b).unwrap();
        let p8 = moe::permute(&dev.upload(&x8, "x").unwrap(), d, &al, k, e, b).unwrap();
        let w8 = tessera::reference::moe::permute(
            &x8,
            d,
            &a.sorted_token_ids,
            &a.expert_ids,
            a.num_tokens_post_padded,
            k,
            e,
            b,
        )
        .unwrap();
        assert_eq!(
            p8.rows.download().unwrap(),
            w8.rows,
            "u8 on {}",
            dev.backend()
        );
        let p64 = moe::permute(&dev.upload(&x64, "x").unwrap(), d, &al, k, e, b).unwrap();
        let w64 = tessera::reference::moe::permute(
            &x64,
            d,
            &a.sorted_token_ids,
            &a.expert_ids,
            a.num_tokens_post_padded,
            k,
            e,
            b,
        )
        .unwrap();
        assert_eq!(
            p64.rows.download().unwrap(),
            w64.rows,
            "u64 on {}",
            dev.backend()
        );
        assert_eq!(p64.offsets.download().unwrap(), w64.offsets);
        let x16: Vec<u16> = x8.iter().map(|&v| v as u16 * 3).collect();
        let p16 = moe::permute(&dev.upload(&x16, "x").unwrap(), d, &al, k, e, b).unwrap();
        let w16 = tessera::reference::moe::permute(
            &x16,
            d,
            &a.sorted_token_ids,
            &a.expert_ids,
            a.num_tokens_post_padded,
            k,
            e,
            b,
        )
        .unwrap();
        assert_eq!(
            p16.rows.download().unwrap(),
            w16.rows,
            "u16 on {}",
            dev.backend()
        );
    }
}

/// The whole dispatch path: route -> align -> permute -> (identity experts) -> combine gives
/// back x when the weights are renormalised (f32, within 1e-5), on every executor.
#[test]
fn route_permute_combine_round_trip() {
    let (t, n, r, k, d) = (97usize, 8usize, 4usize, 4usize, 24usize);
    let p = route_params(r, 1, k, true, Some((5, 0, 10)));
    let case = RouteCase::generate(t, n, p, Logits::Uniform, 11);
    let mut g = tessera::testing::Rng(3);
    let x: Vec<f32> = (0..t * d).map(|_| (g.unit() - 0.5) as f32).collect();
    for dev in devices() {
        let l = dev.upload(&case.logits, "logits").unwrap();
        let routed = moe::route(&l, t, &p).unwrap();
        let al = moe::align(&routed.topk_ids, k, r * n, 8).unwrap();
        let xb = dev.upload(&x, "x").unwrap();
        let pm = moe::permute(&xb, d, &al, k, r * n, 8).unwrap();
        let y: Vec<f32> =
            moe::combine::<f32, f32>(&pm.rows, &pm.positions, &routed.topk_weights, d, k)
                .unwrap()
                .download()
                .unwrap();
        let want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let e = tessera::testing::rel_l2(&y, &want);
        assert!(e < 1e-5, "round trip error {e} on {}", dev.backend());
        let ld = moe::load(&routed.topk_ids, n, r).unwrap();
        let pe = ld.per_expert.download().unwrap();
        let off = pm.offsets.download().unwrap();
        for v in 0..r * n {
            let padded = (pe[v] as usize).div_ceil(8) * 8;
            assert_eq!(
                (off[v + 1] - off[v]) as usize,
                padded,
                "expert {v} on {}",
                dev.backend()
            );
        }
    }
}

/// Bad alignments (a bad entry, a missing index, a decreasing expert_ids, a bad total, wrong
/// lengths) are permute errors; bad positions and sizes are combine errors; every executor.
#[test]
fn permute_combine_bad_inputs() {
    let (t, d, k, e, b) = (40usize, 4usize, 2usize, 6usize, 4usize);
    let c = PermuteCase::generate(t, d, k, e, b, Ids::Uniform, 9);
    let a = tessera::reference::moe::align(&c.align.topk_ids, e, b);
    let n = (t * k) as i32;
    for dev in devices() {
        let be = dev.backend();
        let x = dev.upload(&c.x, "x").unwrap();
        let mk = |s: &[i32], ex: &[i32], tot: i32| moe::Aligned {
            sorted_token_ids: dev.upload(s, "s").unwrap(),
            expert_ids: dev.upload(ex, "e").unwrap(),
            num_tokens_post_padded: dev.upload(&[tot], "t").unwrap(),
        };
        let good = mk(&a.sorted_token_ids, &a.expert_ids, a.num_tokens_post_padded);
        assert!(moe::permute(&x, d, &good, k, e, b).is_ok());
        let invalid = |r: tessera::Result<moe::Permuted<f32>>, what: &str| match r {
            Err(Error::InvalidArgument { op, .. }) => assert_eq!(op, "moe::permute", "{what}"),
            o => panic!("{what} on {be}: {o:?}"),
        };
        let first = a.sorted_token_ids.iter().position(|&s| s < n).unwrap();
        let mut s = a.sorted_token_ids.clone();
        s[first] = n + 5;
        invalid(
            moe::permute(
                &x,
                d,
                &mk(&s, &a.expert_ids, a.num_tokens_post_padded),
                k,
                e,
                b,
            ),
            "entry > n",
        );
        s[first] = -3;
        invalid(
            moe::permute(
                &x,
                d,
                &mk(&s, &a.expert_ids, a.num_tokens_post_padded),
                k,
                e,
                b,
            ),
            "entry < 0",
        );
        s[first] = n;
        invalid(
            moe::permute(
                &x,
                d,
                &mk(&s, &a.expert_ids, a.num_tokens_post_padded),
                k,
                e,
                b,
            ),
            "missing index",
        );
        let mut ex = a.expert_ids.clone();
        ex.swap(0, 1);
        if ex != a.expert_ids {
            invalid(
                moe::permute(
                    &x,
                    d,
                    &mk(&a.sorted_token_ids, &ex, a.num_tokens_post_padded),
                    k,
                    e,
                    b,
                ),
                "decreasing",
            );
        }
        ex = a.expert_ids.clone();
        ex[0] = e as i32;
        invalid(
            moe::permute(
                &x,
                d,
                &mk(&a.sorted_token_ids, &ex, a.num_tokens_post_padded),
                k,
                e,
                b,
            ),
            "expert id E",
        );
        invalid(
            moe::permute(
                &x,
                d,
                &mk(
                    &a.sorted_token_ids,
                    &a.expert_ids,
                    a.num_tokens_post_padded + 1,
                ),
                k,
                e,
                b,
            ),
            "total",
        );
        invalid(
            moe::permute(&x, d, &mk(&a.sorted_token_ids, &a.expert_ids, -4), k, e, b),
            "negative total",
        );
        invalid(
            moe::permute(
                &x,
                d,
                &mk(
                    &a.sorted_token_ids[1..],
                    &a.expert_ids,
                    a.num_tokens_post_padded,
                ),
                k,
                e,
                b,
            ),
            "length",
        );
        invalid(moe::permute(&x, d, &good, k, e, 0), "block 0");
        invalid(moe::permute(&x, 0, &good, k, e, b), "d = 0");
        invalid(moe::permute(&x, 3, &good, k, e, b), "x not a multiple of d");
        invalid(moe::permute(&x, d, &good, 0, e, b), "k = 0");
        invalid(moe::permute(&x, d, &good, k, 0, b), "E = 0");
        // combine
        let eo = dev.upload(&vec![1f32; 10 * d], "eo").unwrap();
        let w = dev.upload(&[0.5f32; 6], "w").unwrap();
        let cinv = |r: tessera::Result<DeviceBufferF32>, what: &str| match r {
            Err(Error::InvalidArgument { op, .. }) => assert_eq!(op, "moe::combine", "{what}"),
            o => panic!("{what} on {be}: {o:?}"),
        };
        for bad in [-1, 10, i32::MAX] {
            let pos = dev.upload(&[0, 1, 2, bad, 4, 5], "pos").unwrap();
            cinv(
                moe::combine::<f32, f32>(&eo, &pos, &w, d, 2),
                &format!("position {bad}"),
            );
        }
        let pos = dev.upload(&[0, 1, 2, 3, 4, 5], "pos").unwrap();
        let y = moe::combine::<f32, f32>(&eo, &pos, &w, d, 2)
            .unwrap()
            .download()
            .unwrap();
        assert_eq!(y, vec![1f32; 3 * d]);
        cinv(
            moe::combine::<f32, f32>(&eo, &pos, &w, d, 4),
            "k does not divide",
        );
        cinv(
            moe::combine::<f32, f32>(&eo, &pos, &w, 3, 2),
            "expert_out not multiple of d",
        );
        cinv(moe::combine::<f32, f32>(&eo, &pos, &w, 0, 2), "d = 0");
        cinv(moe::combine::<f32, f32>(&eo, &pos, &w, d, 0), "k = 0");
        let w5 = dev.upload(&[0.5f32; 5], "w").unwrap();
        cinv(
            moe::combine::<f32, f32>(&eo, &pos, &w5, d, 2),
            "weights length",
        );
    }
}

type DeviceBufferF32 = tessera::DeviceBuffer<f32>;

/// `combine_residual`: the residual is added (first) to the weighted sum, f32 accumulation,
/// against the f64 reference plus the residual; a residual of the wrong size is an error.
#[test]
fn combine_with_residual() {
    let (tokens, k, d, rows) = (37usize, 3usize, 29usize, 150usize);
    let mut g = tessera::testing::Rng(0x4e5);
    let out = g.values_in::<f32>(rows * d, 1.0);
    let res: Vec<f32> = g.values_in::<bf16>(tokens * d, 2.0);
    let res_b: Vec<bf16> = tessera::testing::to_dtype(&res);
    let pos: Vec<i32> = (0..tokens * k)
        .map(|_| (g.next_u64() % rows as u64) as i32)
        .collect();
    let w = g.values_in::<f32>(tokens * k, 1.0);
    let mut want = refm::combine(&out, &pos, &w, d, k);
    for (y, r) in want.iter_mut().zip(&res) {
        *y += *r as f64;
    }
    for dev in devices() {
        let ob = dev.upload(&out, "out").unwrap();
        let pb = dev.upload(&pos, "pos").unwrap();
        let wb = dev.upload(&w, "w").unwrap();
        let rb = dev.upload(&res, "res").unwrap();
        let y: Vec<f32> = moe::combine_residual(&ob, &pb, &wb, d, k, Some(&rb))
            .unwrap()
            .download()
            .unwrap();
        let e = tessera::testing::rel_l2(&y, &want);
        assert!(
            e <= tessera::testing::tol::F32,
            "{}: {e:.2e}",
            dev.backend()
        );
        let rbb = dev.upload(&res_b, "res").unwrap();
        let yb: Vec<bf16> = moe::combine_residual(&ob, &pb, &wb, d, k, Some(&rbb))
            .unwrap()
            .download()
            .unwrap();
        let yb: Vec<f32> = yb.iter().map(|v| v.to_f32()).collect();
        let e = tessera::testing::rel_l2(&yb, &want);
        assert!(
            e <= tessera::testing::tol::HALF_AIM,
            "{}: {e:.2e}",
            dev.backend()
        );
        let short = dev.upload(&res[..d], "res").unwrap();
        let r = moe::combine_residual(&ob, &pb, &wb, d, k, Some(&short));
        assert!(
            matches!(&r, Err(Error::InvalidArgument { op: "moe::combine", msg }) if msg.contains("residual")),
            "{r:?}"
        );
    }
}
