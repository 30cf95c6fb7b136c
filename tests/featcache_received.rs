//! `featcache.received` (issue 14) on every executor present (CPU path; host SIMT wave32 and
//! wave64, in order and shuffled twice, red zones on every buffer; CUDA/HIP when present):
//! fresh random attention problems (full, causal with offsets, duo-causal, varlen with several
//! sequences including empty and one-token ones, GQA, invalid key slots, both dtypes and head
//! dims, per head and summed) against the f64 reference within the half-precision tolerance;
//! the summed output equals the per-head outputs summed in head order; full attention's columns
//! sum to queries x heads; the LSE of `attention.forward` fed in end to end; determinism; bad
//! inputs named.

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::attention::{Attention, HalfFloat, MaskMode, Path};
use tessera::ops::featcache;
use tessera::testing::simt;
use tessera::verify::featcache::{received_cases, ReceivedCase};
use tessera::{Device, Error, Schedule};

fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [
            Schedule::InOrder,
            Schedule::Shuffled(0x7ec1),
            Schedule::Shuffled(0x7ec2),
        ] {
            d.push(simt(wave, s, 2));
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

fn assert_pass(c: &ReceivedCase, dev: &Device, o: tessera::verify::Outcome) {
    assert!(
        o.pass(),
        "{} on {}: error {}: {}",
        c.sizes(),
        dev.backend(),
        o.error,
        o.result.unwrap_err()
    );
}

fn verify_cases_dtype<T: HalfFloat>() {
    let devs = devices();
    for c in received_cases::<T>() {
        for dev in &devs {
            assert_pass(&c, dev, c.outcome::<T>(dev));
        }
    }
}

#[test]
fn verify_cases_match_the_reference_f16() {
    verify_cases_dtype::<f16>();
}

#[test]
fn verify_cases_match_the_reference_bf16() {
    verify_cases_dtype::<bf16>();
}

#[test]
fn lse_of_attention_forward_end_to_end() {
    let devs = devices();
    for (name, per_head) in [("causal", false), ("duo-causal", true), ("full", false)] {
        let c = ReceivedCase::spec::<bf16>(name, per_head, 0xe2e);
        for dev in &devs {
            assert_pass(&c, dev, c.outcome_end_to_end::<bf16>(dev));
        }
    }
    let c = ReceivedCase::varlen::<f16>(
        &[3, 64, 0, 17],
        &[50, 100, 9, 17],
        6,
        3,
        128,
        MaskMode::DuoCausal,
        false,
        0xe2f,
    );
    for dev in &devs {
        assert_pass(&c, dev, c.outcome_end_to_end::<f16>(dev));
    }
}

/// The reference LSE rounded to f32, as the op is fed it.
fn lse32(c: &ReceivedCase) -> Vec<f32> {
    c.reference_lse().iter().map(|&x| x as f32).collect()
}

#[test]
fn summed_equals_the_per_head_sum_in_head_order() {
    for (k, dev) in devices().iter().enumerate() {
        let c = ReceivedCase::varlen::<bf16>(
            &[20, 90],
            &[70, 130],
            4,
            1,
            64,
            MaskMode::Causal,
            false,
            0x5a + k as u64,
        );
        let lse = lse32(&c);
        let per = c.run::<bf16>(dev, &lse, true).unwrap();
        let sum = c.run::<bf16>(dev, &lse, false).unwrap();
        let n = c.problem.total_kv();
        assert_eq!((per.len(), sum.len()), (4 * n, n));
        for j in 0..n {
            let mut acc = per[j];
            for h in 1..4 {
                acc += per[h * n + j];
            }
            if dev.backend().runs_kernels() {
                // The head-sum kernel adds the per-head values in head order, in f32: bit-exact.
                assert_eq!(
                    acc.to_bits(),
                    sum[j].to_bits(),
                    "key {j} on {}",
                    dev.backend()
                );
            } else {
                // The CPU path sums in f64 before rounding.
                assert!(
                    (acc - sum[j]).abs() <= 1e-6 * sum[j].abs().max(1.0),
                    "key {j}: {acc} vs {}",
                    sum[j]
                );
            }
        }
    }
}

#[test]
fn full_attention_columns_sum_to_queries_times_heads() {
    for dev in devices() {
        for d in [64, 128] {
            let c = ReceivedCase::varlen::<f16>(
                &[33, 1, 100],
                &[65, 7, 100],
                4,
                2,
                d,
                MaskMode::Full,
                false,
                0xf011 + d as u64,
            );
            let mut c = c;
            c.problem.kv_valid = None; // every key valid: every row sees a key
            let got = c.run::<f16>(&dev, &lse32(&c), false).unwrap();
            let total: f64 = got.iter().map(|&x| x as f64).sum();
            let want = (c.problem.total_q() * 4) as f64;
            assert!(
                (total - want).abs() <= 1e-4 * want,
                "{} D={d}: sum {total}, want {want}",
                dev.backend()
            );
        }
    }
}

#[test]
fn deterministic_over_schedules_and_wave_widths() {
    let c = ReceivedCase::spec::<bf16>("duo-causal", false, 0xde7);
    let lse = lse32(&c);
    let runs: Vec<Vec<u32>> = [
        simt(32, Schedule::InOrder, 2),
        simt(32, Schedule::Shuffled(1), 2),
        simt(64, Schedule::Shuffled(2), 2),
        simt(64, Schedule::InOrder, 1),
    ]
    .iter()
    .map(|dev| {
        c.run::<bf16>(dev, &lse, false)
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    })
    .collect();
    for r in &runs[1..] {
        assert_eq!(r, &runs[0]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Random varlen problems: lengths 0, 1, primes, past one tile; every mode; GQA; both head
    /// dims and dtypes; per head or summed; fresh values.
    #[test]
    fn random_problems(
        seqs in prop::collection::vec(
            (prop::sample::select(vec![0usize, 1, 5, 31, 64, 97]),
             prop::sample::select(vec![0usize, 1, 7, 32, 33, 130])),
            1..4,
        ),
        mode in prop::sample::select(vec![MaskMode::Full, MaskMode::Causal, MaskMode::DuoCausal]),
        heads in prop::sample::select(vec![(1usize, 1usize), (2, 2), (4, 2), (6, 1)]),
        d in prop::sample::select(vec![64usize, 128]),
        half in any::<bool>(),
        per_head in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let (q_lens, kv_lens): (Vec<usize>, Vec<usize>) = seqs.into_iter().unzip();
        let devs = [
            Device::cpu(),
            simt(32, Schedule::Shuffled(seed), 2),
            simt(64, Schedule::Shuffled(seed ^ 1), 2),
        ];
        if half {
            let c = ReceivedCase::varlen::<f16>(&q_lens, &kv_lens, heads.0, heads.1, d, mode, per_head, seed);
            for dev in &devs {
                assert_pass(&c, dev, c.outcome::<f16>(dev));
            }
        } else {
            let c = ReceivedCase::varlen::<bf16>(&q_lens, &kv_lens, heads.0, heads.1, d, mode, per_head, seed);
            for dev in &devs {
                assert_pass(&c, dev, c.outcome::<bf16>(dev));
            }
        }
    }
}

fn expect_invalid<T>(r: tessera::Result<T>, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument { op, msg }) => {
            assert_eq!(op, "featcache.received", "{msg}");
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
    for dev in [
        Device::cpu(),
        simt(32, Schedule::InOrder, 2),
        simt(64, Schedule::InOrder, 2),
    ] {
        let (h, hk, total) = (4, 2, 10);
        let up = |n: usize| dev.upload(&vec![bf16::from_f32(0.5); n], "x").unwrap();
        let (q, k, q96, k96) = (
            up(total * h * 64),
            up(total * hk * 64),
            up(total * h * 96),
            up(total * hk * 96),
        );
        let cu = dev.upload(&[0i32, 4, 10], "cu").unwrap();
        let bad_cu = dev.upload(&[0i32, 6, 5], "cu").unwrap();
        let lse = dev.upload(&vec![0f32; h * total], "lse").unwrap();
        let short = dev.upload(&vec![0f32; h * total - 1], "lse").unwrap();
        let a = Attention::causal(&q, &k, &k)
            .heads(h, hk)
            .head_dim(64)
            .seqlens(&cu, &cu, 6, 6)
            .build()
            .unwrap();
        expect_invalid(featcache::received(&a, &short, false), &["lse", "39", "40"]);
        let a96 = Attention::causal(&q96, &k96, &k96)
            .heads(h, hk)
            .head_dim(96)
            .seqlens(&cu, &cu, 6, 6)
            .build()
            .unwrap();
        expect_invalid(featcache::received(&a96, &lse, true), &["head_dim 96"]);
        let gqa = Attention::causal(&q, &k, &k)
            .heads(h, 3)
            .head_dim(64)
            .seqlens(&cu, &cu, 6, 6)
            .build()
            .unwrap();
        expect_invalid(featcache::received(&gqa, &lse, false), &["kv_heads 3"]);
        // cu_seqlens are checked on the device (read back before returning).
        let dec = Attention::full(&q, &k, &k)
            .heads(h, hk)
            .head_dim(64)
            .seqlens(&bad_cu, &cu, 6, 6)
            .path(Path::Scalar)
            .build()
            .unwrap();
        expect_invalid(
            featcache::received(&dec, &lse, false),
            &["cu_seqlens_q decreases"],
        );
        // A sequence longer than max_seqlen.
        let long = Attention::full(&q, &k, &k)
            .heads(h, hk)
            .head_dim(64)
            .seqlens(&cu, &cu, 5, 6)
            .build()
            .unwrap();
        expect_invalid(
            featcache::received(&long, &lse, false),
            &["more than max_seqlen_q 5"],
        );
        // Duo-causal without depths.
        let mut duo = a;
        duo.mode = MaskMode::DuoCausal;
        expect_invalid(featcache::received(&duo, &lse, false), &["q_depth"]);
    }
}

#[test]
fn verify_rows_pass() {
    for dev in [
        Device::cpu(),
        simt(32, Schedule::Shuffled(0x7e), 2),
        simt(64, Schedule::Shuffled(0x7f), 2),
    ] {
        let rows = tessera::verify::featcache::rows(&dev);
        assert!(rows.iter().any(|r| r.op.starts_with("featcache.received")));
        tessera::verify::assert_rows_pass(&rows);
    }
}
