//! Flash-decoding (`attention::decode_partials`, `decode`) and the LSE merge (`attention::merge`)
//! on every executor present (CPU path, host SIMT wave32/wave64 in order and shuffled; CUDA/HIP
//! when present) against the f64 reference: partials against the reference on each split's keys,
//! the merged result against attention over all keys, and merge alone against the reference merge.

use half::{bf16, f16};
use tessera::ops::attention::{self as attn, Attention, HalfFloat, MaskMode, Path, Positions};
use tessera::verify::{
    decode_inputs, decode_run, merge_inputs, merge_reference, rel_l2_inf_aware, DecodeInputs,
    DECODE_TOL, MERGE_TOL,
};
use tessera::{Device, Error};

fn devices() -> Vec<Device> {
    tessera::verify::test_devices([21, 22])
}

/// Run one problem with `splits` on every device and compare partials and merged outputs.
fn check<T: HalfFloat>(x: &DecodeInputs<T>, splits: usize, devs: &[Device], what: &str) -> f64 {
    let (ro, rl) = x.reference(None);
    let (rpo, rpl) = x.reference_partials(splits);
    let mut worst = 0f64;
    for dev in devs {
        let run = decode_run(dev, x, splits)
            .unwrap_or_else(|e| panic!("{what} S={splits} on {}: {e}", dev.backend()));
        let errs = [
            ("o_part", rel_l2_inf_aware(&run.o_part, &rpo)),
            ("lse_part", rel_l2_inf_aware(&run.lse_part, &rpl)),
            ("o", rel_l2_inf_aware(&run.o, &ro)),
            ("lse", rel_l2_inf_aware(&run.lse, &rl)),
        ];
        for (name, e) in errs {
            assert!(
                e <= DECODE_TOL,
                "{what} S={splits} {} on {}: {name} error {e:.2e}",
                std::any::type_name::<T>(),
                dev.backend()
            );
            worst = worst.max(e);
        }
    }
    worst
}

#[allow(clippy::type_complexity)]
const BATCHES: &[(&[usize], &[usize])] = &[
    (&[1], &[1]),
    (&[1], &[1999]),
    (&[4], &[700]),
    (&[1, 2, 0, 3, 1], &[513, 0, 0, 129, 64]),
    (&[2, 1], &[5, 3]),
    (&[1, 1], &[0, 17]),
];

fn sweep<T: HalfFloat>() {
    let devs = devices();
    let mut worst = 0f64;
    let mut case = 0u64;
    for (bi, &(ql, kl)) in BATCHES.iter().enumerate() {
        for mode in [MaskMode::Full, MaskMode::Causal, MaskMode::DuoCausal] {
            case += 1;
            // Rotate GQA ratio, head dim and split count over the cases.
            let (heads, kv_heads) = [(2, 2), (4, 2), (8, 2), (4, 1)][case as usize % 4];
            let d = if case % 2 == 0 { 64 } else { 128 };
            let splits = [1usize, 3, 8, 2][(case as usize / 2) % 4];
            let splits = if bi == 4 { 8 } else { splits }; // more splits than keys
            let implicit = mode != MaskMode::DuoCausal && bi % 2 == 1;
            let x = decode_inputs::<T>(ql, kl, heads, kv_heads, d, mode, implicit, case);
            let what = format!("{ql:?}/{kl:?} {mode:?} H={heads}/{kv_heads} D={d}");
            worst = worst.max(check(&x, splits, &devs, &what));
        }
    }
    eprintln!(
        "decode {}: worst relative L2 {worst:.2e}",
        std::any::type_name::<T>()
    );
}

#[test]
fn decode_matches_reference_bf16() {
    sweep::<bf16>();
}

#[test]
fn decode_matches_reference_f16() {
    sweep::<f16>();
}

#[test]
fn decode_large_group_and_many_splits() {
    // Group of 12 query heads per kv head: two head chunks per kv group (8 + 4).
    let devs = devices();
    let x = decode_inputs::<bf16>(&[1, 2], &[300, 41], 24, 2, 64, MaskMode::Causal, false, 99);
    for splits in [1, 5, 64] {
        check(&x, splits, &devs, "group 12");
    }
}

#[test]
fn decode_op_equals_partials_then_merge() {
    for dev in devices() {
        let x = decode_inputs::<f16>(&[1, 1], &[100, 33], 4, 2, 128, MaskMode::Causal, false, 5);
        let q = dev.upload(&x.q, "q").unwrap();
        let k = dev.upload(&x.k, "k").unwrap();
        let v = dev.upload(&x.v, "v").unwrap();
        let cq = dev.upload(&x.cu_q, "cu_q").unwrap();
        let ck = dev.upload(&x.cu_kv, "cu_kv").unwrap();
        let qp = dev.upload(&x.q_pos, "q_pos").unwrap();
        let kv = dev.upload(&x.kv_valid, "kv_valid").unwrap();
        let a = Attention {
            q: &q,
            k: &k,
            v: &v,
            heads: 4,
            kv_heads: 2,
            head_dim: 128,
            cu_seqlens_q: &cq,
            cu_seqlens_kv: &ck,
            q_pos: Positions::Explicit(&qp),
            kv_pos: Positions::Implicit { offset: 0 },
            q_depth: None,
            kv_depth: None,
            kv_valid: Some(&kv),
            scale: x.scale,
            mode: MaskMode::Causal,
            path: Path::Auto,
        };
        let out = attn::decode(&a, 4).unwrap();
        let run = decode_run(&dev, &x, 4).unwrap();
        assert_eq!(out.o.download().unwrap(), run.o, "{}", dev.backend());
        assert_eq!(out.lse.download().unwrap(), run.lse, "{}", dev.backend());
    }
}

#[test]
fn merge_matches_reference() {
    let devs = devices();
    let mut worst = 0f64;
    for (seed, &(splits, total_q, heads, d, spread)) in [
        (1usize, 3usize, 2usize, 64usize, 5.0f64),
        (2, 1, 1, 128, 1.0),
        (5, 7, 4, 128, 150.0),
        (8, 4, 3, 5, 1e4),
        (3, 0, 2, 64, 1.0),
    ]
    .iter()
    .enumerate()
    {
        let (o, lse) = merge_inputs(splits, total_q, heads, d, spread, seed as u64);
        let (ro, rl) = merge_reference(&o, &lse, splits, total_q, heads, d);
        for dev in &devs {
            let ob = dev.upload(&o, "o").unwrap();
            let lb = dev.upload(&lse, "lse").unwrap();
            let m = attn::merge(&ob, &lb, splits, total_q, heads, d).unwrap();
            let (mo, ml) = (m.o.download().unwrap(), m.lse.download().unwrap());
            assert!(
                mo.iter().all(|x| !x.is_nan()),
                "NaN in O on {}",
                dev.backend()
            );
            let e = rel_l2_inf_aware(&mo, &ro).max(rel_l2_inf_aware(&ml, &rl));
            assert!(
                e <= MERGE_TOL,
                "merge S={splits} q={total_q} H={heads} D={d} on {}: {e:.2e}",
                dev.backend()
            );
            if total_q > 0 {
                // Row (i = 0, h = 0) has every LSE = -inf: O = 0, LSE = -inf.
                assert_eq!(ml[0], f32::NEG_INFINITY);
                assert!(mo[..d].iter().all(|&x| x == 0.0));
            }
            worst = worst.max(e);
        }
    }
    eprintln!("merge: worst relative L2 {worst:.2e}");
}

fn expect_invalid<T>(r: tessera::Result<T>, op: &str, needle: &str) {
    match r {
        Err(Error::InvalidArgument { op: o, msg }) => {
            assert_eq!(o, op, "{msg}");
            assert!(msg.contains(needle), "{op}: '{msg}' lacks '{needle}'");
        }
        Err(e) => panic!("{op}: expected InvalidArgument ({needle}), got {e}"),
        Ok(_) => panic!("{op}: expected an error ({needle})"),
    }
}

#[test]
fn decode_errors() {
    for dev in [Device::cpu(), Device::simt()] {
        let up = |x: &[i32]| dev.upload(x, "i32").unwrap();
        let x = decode_inputs::<bf16>(&[1, 1], &[10, 6], 4, 2, 64, MaskMode::DuoCausal, false, 3);
        let q = dev.upload(&x.q, "q").unwrap();
        let k = dev.upload(&x.k, "k").unwrap();
        let v = dev.upload(&x.v, "v").unwrap();
        let (cq, ck) = (up(&x.cu_q), up(&x.cu_kv));
        let (qd, kd) = (up(&x.q_depth), up(&x.kv_depth));
        let kv_pos = up(&x.kv_pos);
        let valid = dev.upload(&x.kv_valid, "valid").unwrap();
        let good = Attention {
            q: &q,
            k: &k,
            v: &v,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            cu_seqlens_q: &cq,
            cu_seqlens_kv: &ck,
            q_pos: Positions::Implicit { offset: 0 },
            kv_pos: Positions::Explicit(&kv_pos),
            q_depth: Some(&qd),
            kv_depth: Some(&kd),
            kv_valid: Some(&valid),
            scale: 0.125,
            mode: MaskMode::DuoCausal,
            path: Path::Auto,
        };
        assert!(attn::decode(&good, 2).is_ok());
        const OP: &str = "attention::decode";
        expect_invalid(attn::decode(&good, 0), OP, "splits");
        expect_invalid(
            attn::decode_partials(
                &Attention {
                    heads: 3,
                    kv_heads: 1,
                    ..good
                },
                2,
            ),
            OP,
            "not a multiple",
        );
        // 4 heads x 64 = 256 = 2 heads x 128: the shape check passes, the head_dim one does not.
        expect_invalid(
            attn::decode(
                &Attention {
                    head_dim: 32,
                    ..good
                },
                1,
            ),
            OP,
            "head_dim 32",
        );
        expect_invalid(
            attn::decode(
                &Attention {
                    kv_heads: 3,
                    ..good
                },
                1,
            ),
            OP,
            "multiple of kv_heads",
        );
        let bad_cu = up(&[0, 2, 1]);
        expect_invalid(
            attn::decode(
                &Attention {
                    cu_seqlens_q: &bad_cu,
                    ..good
                },
                1,
            ),
            OP,
            "decreases",
        );
        let short_cu = up(&[0, 1, 15]);
        expect_invalid(
            attn::decode(
                &Attention {
                    cu_seqlens_kv: &short_cu,
                    ..good
                },
                1,
            ),
            OP,
            "ends at 15",
        );
        let three = up(&[0, 1, 2, 16]);
        expect_invalid(
            attn::decode(
                &Attention {
                    cu_seqlens_kv: &three,
                    ..good
                },
                1,
            ),
            OP,
            "batch + 1",
        );
        let short = up(&[0, 1, 2]);
        expect_invalid(
            attn::decode(
                &Attention {
                    kv_pos: Positions::Explicit(&short),
                    ..good
                },
                1,
            ),
            OP,
            "kv_pos has 3",
        );
        expect_invalid(
            attn::decode(
                &Attention {
                    q_pos: Positions::Explicit(&short),
                    ..good
                },
                1,
            ),
            OP,
            "q_pos has 3",
        );
        expect_invalid(
            attn::decode(
                &Attention {
                    kv_depth: None,
                    ..good
                },
                1,
            ),
            OP,
            "DuoCausal needs",
        );
        expect_invalid(
            attn::decode(
                &Attention {
                    q_depth: Some(&short),
                    ..good
                },
                1,
            ),
            OP,
            "q_depth has 3",
        );
        let bad_valid = dev.upload(&[1u8; 3], "valid").unwrap();
        expect_invalid(
            attn::decode(
                &Attention {
                    kv_valid: Some(&bad_valid),
                    ..good
                },
                1,
            ),
            OP,
            "kv_valid has 3",
        );
        // Depths are ignored outside DuoCausal.
        assert!(attn::decode(
            &Attention {
                q_depth: Some(&short),
                kv_depth: None,
                mode: MaskMode::Causal,
                ..good
            },
            1
        )
        .is_ok());
        let other = if dev.backend().runs_kernels() {
            Device::cpu()
        } else {
            Device::simt()
        };
        let k_other = other.upload(&x.k, "k").unwrap();
        expect_invalid(
            attn::decode(
                &Attention {
                    k: &k_other,
                    ..good
                },
                1,
            ),
            OP,
            "k is on",
        );
        expect_invalid(
            attn::decode(
                &Attention {
                    scale: f32::NAN,
                    ..good
                },
                1,
            ),
            OP,
            "scale",
        );

        const MOP: &str = "attention::merge";
        let o = dev.upload(&[0f32; 2 * 3 * 4 * 64], "o").unwrap();
        let l = dev.upload(&[0f32; 2 * 4 * 3], "l").unwrap();
        assert!(attn::merge(&o, &l, 2, 3, 4, 64).is_ok());
        expect_invalid(attn::merge(&o, &l, 0, 3, 4, 64), MOP, "splits");
        expect_invalid(attn::merge(&o, &l, 2, 3, 4, 32), MOP, "o has");
        let l_short = dev.upload(&[0f32; 23], "l").unwrap();
        expect_invalid(attn::merge(&o, &l_short, 2, 3, 4, 64), MOP, "lse has 23");
        let l_other = other.upload(&[0f32; 24], "l").unwrap();
        expect_invalid(attn::merge(&o, &l_other, 2, 3, 4, 64), MOP, "lse is on");
    }
}
