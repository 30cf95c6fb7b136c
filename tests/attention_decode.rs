//! Flash-decoding (`attention::decode_partials`, `decode`) and the LSE merge (`attention::merge`)
//! on every executor present (CPU path, host SIMT wave32/wave64 in order and shuffled; CUDA/HIP
//! when present) against the f64 reference: partials against the reference on each split's keys,
//! the merged result against attention over all keys, and merge alone against the reference merge.

use half::{bf16, f16};
use tessera::ops::attention::{
    self as attn, Attention, AttentionOut, HalfFloat, MaskMode, Path, Positions,
};
use tessera::testing::{rel_l2, to_dtype, tol};
use tessera::verify::attention::{
    check_merge, decode_problem, merge_inputs, merge_reference, Problem,
};
use tessera::{Device, Error};

const DECODE_TOL: f64 = tol::HALF_AIM;
const MERGE_TOL: f64 = tol::F32;

fn devices() -> Vec<Device> {
    tessera::testing::test_devices([21, 22])
}

/// Run one problem with `splits` on every device and compare partials and merged outputs (the
/// comparison of the verify rows, [`Problem::check_decode`]).
fn check<T: HalfFloat>(x: &Problem, splits: usize, devs: &[Device], what: &str) -> f64 {
    let mut worst = 0f64;
    for dev in devs {
        let out = x.check_decode::<T>(dev, splits, DECODE_TOL);
        assert!(
            out.pass(),
            "{what} S={splits} {} on {}: error {}: {}",
            std::any::type_name::<T>(),
            dev.backend(),
            out.error,
            out.result.unwrap_err()
        );
        worst = worst.max(out.error.parse::<f64>().unwrap());
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
            let x = decode_problem::<T>(ql, kl, heads, kv_heads, d, mode, implicit, case);
            let what = format!("{ql:?}/{kl:?} {mode:?} H={heads}/{kv_heads} D={d}");
            worst = worst.max(check::<T>(&x, splits, &devs, &what));
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
    let x = decode_problem::<bf16>(&[1, 2], &[300, 41], 24, 2, 64, MaskMode::Causal, false, 99);
    for splits in [1, 5, 64] {
        check::<bf16>(&x, splits, &devs, "group 12");
    }
}

#[test]
fn decode_op_equals_partials_then_merge() {
    for dev in devices() {
        let x = decode_problem::<f16>(&[1, 1], &[100, 33], 4, 2, 128, MaskMode::Causal, false, 5);
        let u = x.upload::<f16>(&dev).unwrap();
        let a = Attention {
            kv_pos: Positions::Implicit { offset: 0 },
            ..u.attention(Path::Auto)
        };
        let out = attn::decode(&a, 4).unwrap();
        let run = x.decode::<f16>(&dev, 4).unwrap();
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
        for dev in &devs {
            // The comparison of the verify rows: O and LSE within MERGE_TOL of the reference.
            let out = check_merge(dev, &o, &lse, splits, total_q, heads, d);
            assert!(
                out.pass(),
                "merge S={splits} q={total_q} H={heads} D={d} on {}: {:?}",
                dev.backend(),
                out.result
            );
            worst = worst.max(out.error.parse::<f64>().unwrap());
            // And: no NaN in O (the -inf splits' NaN O is never read); row (i = 0, h = 0) has
            // every LSE = -inf: O = 0, LSE = -inf.
            let ob = dev.upload(&o, "o").unwrap();
            let lb = dev.upload(&lse, "lse").unwrap();
            let m = attn::merge(&ob, &lb, splits, total_q, heads, d).unwrap();
            let (mo, ml) = (m.o.download().unwrap(), m.lse.download().unwrap());
            assert!(
                mo.iter().all(|x| !x.is_nan()),
                "NaN in O on {}",
                dev.backend()
            );
            if total_q > 0 {
                assert_eq!(ml[0], f32::NEG_INFINITY);
                assert!(mo[..d].iter().all(|&x| x == 0.0));
            }
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
        let x = decode_problem::<bf16>(&[1, 1], &[10, 6], 4, 2, 64, MaskMode::DuoCausal, false, 3);
        let u = x.upload::<bf16>(&dev).unwrap();
        let good = u.attention(Path::Auto);
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
        // cu_seqlens contents are checked on the device (the CPU path: at once); the error
        // comes from AttentionOut::check (issue 10).
        let bad_cu = up(&[0, 2, 1]);
        expect_invalid(
            attn::decode(
                &Attention {
                    cu_seqlens_q: &bad_cu,
                    ..good
                },
                1,
            )
            .and_then(AttentionOut::checked),
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
            )
            .and_then(AttentionOut::checked),
            OP,
            "ends at 15",
        );
        expect_invalid(
            attn::decode(
                &Attention {
                    max_seqlen_kv: 9,
                    ..good
                },
                1,
            )
            .and_then(AttentionOut::checked),
            OP,
            "sequence 0 has 10 tokens, more than max_seqlen_kv 9",
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
        let k_other = other.upload(&to_dtype::<bf16>(&x.k), "k").unwrap();
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

// ---- NaN and Inf (docs/architecture.md, "NaN and Inf in attention") ----------------------------
//
// The expected answers are built from a clean problem's reference by the documented rules,
// independently of the reference's own NaN handling: a NaN in anything a row sees (q, a visible
// key, a visible value), or a +inf score, makes the row's O and LSE NaN; a visible +-Inf in V
// gives that O entry +-Inf (both signs: NaN) whatever the key's weight; masked keys and values
// change nothing.

/// What a poisoned key does to a row that sees it.
#[derive(Clone, Copy, Debug)]
enum Effect {
    /// O and LSE of the row NaN.
    RowNan,
    /// O entry `d` gets `x` (IEEE sum with other infinities of the same entry).
    Entry(usize, f64),
}

/// A poisoned key: key token `j` of kv head `kvh`.
#[derive(Clone, Copy, Debug)]
struct Poison {
    j: usize,
    kvh: usize,
    effect: Effect,
}

fn sees(x: &Problem, i: usize, j: usize) -> bool {
    let seq = |cu: &[i32], t: usize| {
        cu.windows(2)
            .position(|w| (w[0] as usize..w[1] as usize).contains(&t))
    };
    if seq(&x.cu_q, i) != seq(&x.cu_kv, j) {
        return false;
    }
    let p = tessera::reference::attention::Problem {
        q: &[],
        k: &[],
        v: &[],
        heads: x.heads,
        kv_heads: x.kv_heads,
        head_dim: x.head_dim,
        cu_q: &x.cu_q,
        cu_kv: &x.cu_kv,
        q_pos: &x.q_pos,
        kv_pos: &x.kv_pos,
        q_depth: &x.q_depth,
        kv_depth: &x.kv_depth,
        kv_valid: &x.valid(),
        scale: x.scale,
        mode: x.mode,
    };
    tessera::reference::attention::visible(&p, i, j)
}

/// Apply `poisons` (restricted to the keys `in_set` admits) to a clean (O `[q, H, D]`,
/// LSE `[H, q]`) reference.
fn apply(
    x: &Problem,
    (mut o, mut l): (Vec<f64>, Vec<f64>),
    poisons: &[Poison],
    in_set: impl Fn(usize) -> bool,
) -> (Vec<f64>, Vec<f64>) {
    let (h_n, d, tq) = (x.heads, x.head_dim, x.total_q());
    let group = h_n / x.kv_heads;
    for i in 0..tq {
        for h in 0..h_n {
            let seen: Vec<&Poison> = poisons
                .iter()
                .filter(|p| p.kvh == h / group && in_set(p.j) && sees(x, i, p.j))
                .collect();
            let row = &mut o[(i * h_n + h) * d..][..d];
            if seen.iter().any(|p| matches!(p.effect, Effect::RowNan)) {
                row.fill(f64::NAN);
                l[h * tq + i] = f64::NAN;
                continue;
            }
            let mut special = vec![0f64; d];
            for p in seen {
                if let Effect::Entry(e, v) = p.effect {
                    special[e] += v;
                }
            }
            for (r, s) in row.iter_mut().zip(special) {
                if s != 0.0 {
                    *r = s;
                }
            }
        }
    }
    (o, l)
}

/// Class-exact (NaN, +-inf) comparison, and the relative L2 error over the entries finite in
/// `r` (which must be <= `tol`).
fn class_l2(what: &str, out: &[f32], r: &[f64], tol: f64) -> Result<f64, String> {
    if out.len() != r.len() {
        return Err(format!(
            "{what}: {} entries, expected {}",
            out.len(),
            r.len()
        ));
    }
    for (n, (&x, &y)) in out.iter().zip(r).enumerate() {
        let ok = if y.is_nan() {
            x.is_nan()
        } else if y.is_infinite() {
            x as f64 == y
        } else {
            x.is_finite()
        };
        if !ok {
            return Err(format!("{what}: [{n}] = {x}, expected {y}"));
        }
    }
    let (fo, fr): (Vec<f32>, Vec<f64>) = out.iter().zip(r).filter(|(_, y)| y.is_finite()).unzip();
    let e = rel_l2(&fo, &fr);
    if e > tol {
        return Err(format!("{what}: relative L2 {e:.2e} on the finite entries"));
    }
    Ok(e)
}

/// Panic with every failure in `errs` (one line each), if any.
fn report(what: &str, errs: &[String]) {
    let shown: Vec<&str> = errs.iter().take(40).map(|e| e.as_str()).collect();
    assert!(
        errs.is_empty(),
        "{what}: {} failures (first {}):\n{}",
        errs.len(),
        shown.len(),
        shown.join("\n")
    );
}

/// Poison `x` (its clean twin is `clean`: the same problem with the poisoned values finite)
/// and check partials and merged outputs on every device for each split count.
fn check_poisoned<T: HalfFloat>(
    x: &Problem,
    clean: &Problem,
    poisons: &[Poison],
    splits: &[usize],
    what: &str,
) {
    let tq = x.total_q();
    let rows = tq * x.heads;
    let expect = apply(x, clean.reference(), poisons, |_| true);
    let mut errs = vec![];
    // The reference itself follows the rules.
    let (ro, rl) = x.reference();
    let f32s = |v: &[f64]| v.iter().map(|&y| y as f32).collect::<Vec<f32>>();
    errs.extend(class_l2("reference O", &f32s(&ro), &expect.0, 1e-6).err());
    errs.extend(class_l2("reference LSE", &f32s(&rl), &expect.1, 1e-6).err());
    let devs = devices();
    let mut worst = 0f64;
    for &s in splits {
        // Expected partials: split `p` covers keys [k0 + p*len/s, k0 + (p+1)*len/s) of each
        // sequence.
        let (cpo, cpl) = clean.reference_partials(s);
        let (mut epo, mut epl) = (vec![], vec![]);
        for p in 0..s {
            let in_split = |j: usize| {
                x.cu_kv.windows(2).any(|w| {
                    let (k0, len) = (w[0] as usize, (w[1] - w[0]) as usize);
                    (k0 + p * len / s..k0 + (p + 1) * len / s).contains(&j)
                })
            };
            let part = (
                cpo[p * rows * x.head_dim..(p + 1) * rows * x.head_dim].to_vec(),
                cpl[p * rows..(p + 1) * rows].to_vec(),
            );
            let (o, l) = apply(x, part, poisons, in_split);
            epo.extend(o);
            epl.extend(l);
        }
        for dev in &devs {
            let run = x
                .decode::<T>(dev, s)
                .unwrap_or_else(|e| panic!("{what} S={s} on {}: {e}", dev.backend()));
            let tag = |n: &str| {
                format!(
                    "S={s} {} on {}: {n}",
                    std::any::type_name::<T>(),
                    dev.backend()
                )
            };
            for r in [
                class_l2(&tag("o_part"), &run.o_part, &epo, DECODE_TOL),
                class_l2(&tag("lse_part"), &run.lse_part, &epl, DECODE_TOL),
                class_l2(&tag("o"), &run.o, &expect.0, DECODE_TOL),
                class_l2(&tag("lse"), &run.lse, &expect.1, DECODE_TOL),
            ] {
                match r {
                    Ok(e) => worst = worst.max(e),
                    Err(e) => errs.push(e),
                }
            }
        }
    }
    report(what, &errs);
    eprintln!("{what}: worst relative L2 on the finite entries {worst:.2e}");
}

/// The case: one query, four keys (one per warp), a NaN in a visible key. decode used to
/// return o = 1, LSE = 1.18 on SIMT and o = 0, LSE = -inf on the CPU path.
#[test]
fn decode_nan_key_gives_nan() {
    let mut x = decode_problem::<bf16>(&[1], &[4], 1, 1, 64, MaskMode::Causal, false, 31);
    x.kv_valid = Some(vec![1; 4]);
    let clean = x.clone();
    x.k[64 + 17] = f32::NAN; // key 1
    let poisons = [Poison {
        j: 1,
        kvh: 0,
        effect: Effect::RowNan,
    }];
    assert!(sees(&x, 0, 1));
    check_poisoned::<bf16>(&x, &clean, &poisons, &[1, 2, 4], "one query, NaN in key 1");
}

/// GQA duo-causal batch: NaN in visible and masked keys and values, +-Inf in visible and masked
/// values, NaN/Inf in invalid slots.
#[test]
fn decode_nan_and_inf_duo() {
    fn one<T: HalfFloat>() {
        let (heads, kv_heads, d) = (8, 2, 64);
        let mut x = decode_problem::<T>(
            &[2, 1],
            &[300, 41],
            heads,
            kv_heads,
            d,
            MaskMode::DuoCausal,
            false,
            32,
        );
        // Keys: 10 (depth 0, position 10), 250 and 260 (depth 1), 320 (sequence 1, depth 0).
        for j in [10, 11, 12, 250, 260, 320] {
            x.valid_mut()[j] = 1;
        }
        let invalid: Vec<usize> = (0..x.total_kv()).filter(|&j| x.valid()[j] == 0).collect();
        assert!(!invalid.is_empty());
        assert_eq!(
            (
                x.kv_depth[10],
                x.kv_depth[250],
                x.kv_depth[260],
                x.kv_depth[320]
            ),
            (0, 1, 1, 0)
        );
        let clean = x.clone();
        let el = |j: usize, kvh: usize, e: usize| (j * kv_heads + kvh) * d + e;
        let inf = f32::INFINITY;
        let nan = f32::NAN;
        x.v[el(10, 0, 5)] = inf;
        x.v[el(12, 0, 5)] = f32::NEG_INFINITY;
        x.v[el(11, 1, 6)] = f32::NEG_INFINITY;
        x.k[el(250, 1, 3)] = nan;
        x.v[el(260, 0, 7)] = inf;
        x.v[el(320, 0, 9)] = nan;
        for &j in &invalid {
            for kvh in 0..kv_heads {
                x.k[el(j, kvh, 1)] = nan;
                x.v[el(j, kvh, 2)] = inf;
                x.v[el(j, kvh, 4)] = nan;
            }
        }
        let mut clean = clean;
        for (j, kvh, e) in [(10, 0, 5), (12, 0, 5), (11, 1, 6), (260, 0, 7)] {
            clean.v[el(j, kvh, e)] = 0.0;
        }
        let p = |j, kvh, effect| Poison { j, kvh, effect };
        let poisons = [
            p(10, 0, Effect::Entry(5, f64::INFINITY)),
            p(12, 0, Effect::Entry(5, f64::NEG_INFINITY)),
            p(11, 1, Effect::Entry(6, f64::NEG_INFINITY)),
            p(250, 1, Effect::RowNan),
            p(260, 0, Effect::Entry(7, f64::INFINITY)),
            p(320, 0, Effect::RowNan),
        ];
        // Some rows see the depth-1 keys, some do not.
        let seers = |j| (0..x.total_q()).filter(|&i| sees(&x, i, j)).count();
        assert!(
            seers(250) > 0 && seers(250) < x.total_q(),
            "key 250: {} seers",
            seers(250)
        );
        check_poisoned::<T>(
            &x,
            &clean,
            &poisons,
            &[1, 3, 8],
            "duo GQA, NaN/Inf in k and v",
        );
    }
    one::<bf16>();
    one::<f16>();
}

/// A visible Inf in V whose weight underflows (in f32 exp and in the rescaling when a later key
/// raises the running max by ~224; in the merge when its split's LSE is ~224 below the max)
/// still gives +Inf, not NaN. Keys with score -inf (q . k = -inf) are as if masked.
#[test]
fn decode_inf_with_vanishing_weight_and_minus_inf_scores() {
    fn one<T: HalfFloat>() {
        let (heads, kv_heads, d) = (2, 1, 64);
        let mut x = decode_problem::<T>(
            &[1, 1],
            &[200, 40],
            heads,
            kv_heads,
            d,
            MaskMode::Causal,
            false,
            33,
        );
        x.valid_mut().fill(1);
        for t in 0..x.total_q() {
            for h in 0..heads {
                x.q[(t * heads + h) * d] = 30.0;
            }
        }
        for j in 0..240 {
            // keys 0..100 of sequence 0 score about -112, later ones about +112
            x.k[j * d] = if j < 100 { -30.0 } else { 30.0 };
        }
        let mut clean = x.clone();
        x.v[3 * d + 2] = f32::INFINITY;
        clean.v[3 * d + 2] = 0.0;
        // Sequence 1: keys 200 and 239 get score -inf, as if invalid.
        x.k[200 * d] = f32::NEG_INFINITY;
        x.k[239 * d] = f32::NEG_INFINITY;
        clean.valid_mut()[200] = 0;
        clean.valid_mut()[239] = 0;
        let poisons = [Poison {
            j: 3,
            kvh: 0,
            effect: Effect::Entry(2, f64::INFINITY),
        }];
        check_poisoned::<T>(
            &x,
            &clean,
            &poisons,
            &[1, 4, 7],
            "vanishing-weight Inf, -inf scores",
        );
    }
    one::<bf16>();
    one::<f16>();
}

/// Merge on hand-made partials: a NaN (or +inf) LSE makes the row NaN even when another split is
/// finite; an infinite O entry of a split with a finite LSE survives whatever the split's weight
/// (NaN for opposite signs); splits with LSE = -inf are not read.
#[test]
fn merge_nan_and_inf() {
    let (splits, tq, heads, d) = (3, 4, 2, 64);
    let rows = tq * heads;
    let ninf = f32::NEG_INFINITY;
    // per row r = i * heads + h: the LSE of each split
    let lses: [[f32; 3]; 8] = [
        [1.0, f32::NAN, 0.5],      // NaN row
        [1.0, ninf, 0.5],          // finite (split 1 not read)
        [-120.0, 100.0, ninf],     // O[3] of split 0 is +Inf: stays +Inf
        [f32::INFINITY, 0.0, 0.0], // NaN row
        [f32::NAN, ninf, ninf],    // NaN row
        [0.0, 0.0, ninf],          // O[4]: +Inf and -Inf: NaN; O[5]: NaN in split 1: NaN
        [ninf, ninf, ninf],        // O = 0, LSE = -inf
        [2.0, -300.0, 1.0],        // O[6] of split 1 is -Inf: stays -Inf
    ];
    let mut r = tessera::testing::Rng(41);
    let mut o: Vec<f32> = (0..splits * rows * d)
        .map(|_| (r.unit() - 0.5) as f32)
        .collect();
    let mut lse = vec![0f32; splits * rows];
    for (row, ls) in lses.iter().enumerate() {
        let (i, h) = (row / heads, row % heads);
        for s in 0..splits {
            lse[(s * heads + h) * tq + i] = ls[s];
            if ls[s] == ninf {
                o[(s * rows + row) * d..][..d].fill(f32::NAN);
            }
        }
    }
    let oi = |s: usize, row: usize, e: usize| (s * rows + row) * d + e;
    o[oi(0, 2, 3)] = f32::INFINITY;
    o[oi(0, 5, 4)] = f32::INFINITY;
    o[oi(1, 5, 4)] = f32::NEG_INFINITY;
    o[oi(1, 5, 5)] = f32::NAN;
    o[oi(1, 7, 6)] = f32::NEG_INFINITY;
    // Expected: the reference merge of the partials with those entries finite, then the rules.
    let mut fin = o.clone();
    for (s, row, e) in [(0, 2, 3), (0, 5, 4), (1, 5, 4), (1, 5, 5), (1, 7, 6)] {
        fin[oi(s, row, e)] = 0.0;
    }
    let mut fin_lse = lse.clone();
    for (row, ls) in lses.iter().enumerate() {
        let (i, h) = (row / heads, row % heads);
        for s in 0..splits {
            if !ls[s].is_finite() && ls[s] != ninf {
                fin_lse[(s * heads + h) * tq + i] = 0.0;
            }
        }
    }
    let (mut eo, mut el) = merge_reference(&fin, &fin_lse, splits, tq, heads, d);
    for row in [0, 3, 4] {
        let (i, h) = (row / heads, row % heads);
        eo[row * d..][..d].fill(f64::NAN);
        el[h * tq + i] = f64::NAN;
    }
    eo[2 * d + 3] = f64::INFINITY;
    eo[5 * d + 4] = f64::NAN;
    eo[5 * d + 5] = f64::NAN;
    eo[7 * d + 6] = f64::NEG_INFINITY;
    assert_eq!(el[3], f64::NEG_INFINITY); // row 6 = (i 3, h 0): LSE index h * tq + i
    let (ro, rl) = merge_reference(&o, &lse, splits, tq, heads, d);
    let f32s = |v: &[f64]| v.iter().map(|&y| y as f32).collect::<Vec<f32>>();
    let mut errs = vec![];
    errs.extend(class_l2("reference merge O", &f32s(&ro), &eo, 1e-6).err());
    errs.extend(class_l2("reference merge LSE", &f32s(&rl), &el, 1e-6).err());
    for dev in devices() {
        let ob = dev.upload(&o, "o").unwrap();
        let lb = dev.upload(&lse, "lse").unwrap();
        let m = attn::merge(&ob, &lb, splits, tq, heads, d).unwrap();
        let (mo, ml) = (m.o.download().unwrap(), m.lse.download().unwrap());
        let what = dev.backend();
        errs.extend(class_l2(&format!("{what}: O"), &mo, &eo, MERGE_TOL).err());
        errs.extend(class_l2(&format!("{what}: LSE"), &ml, &el, MERGE_TOL).err());
        if !mo[6 * d..7 * d].iter().all(|&x| x == 0.0) {
            errs.push(format!("{what}: row 6 (every LSE -inf) has O != 0"));
        }
    }
    report("merge of NaN/Inf partials", &errs);
}

/// Sequence-parallel use: forward over two halves of the keys, then merge. A NaN key in one half
/// used to give that partial LSE = -inf, so the merge silently dropped it.
#[test]
fn forward_partials_with_nan_merge_to_nan() {
    let (heads, kv_heads, d, tq, tk) = (4, 2, 64, 20, 80);
    let x = decode_problem::<bf16>(&[tq], &[tk], heads, kv_heads, d, MaskMode::Full, false, 34);
    let mut k = x.k.clone();
    k[(10 * kv_heads + 1) * d + 7] = f32::NAN; // key 10 of kv head 1: query heads 2, 3
    let half = tk / 2;
    let mut clean = x.clone();
    clean.valid_mut().fill(1);
    let (ro, rl) = clean.reference();
    let mut errs = vec![];
    for dev in devices() {
        let paths: &[Path] = if dev.backend().runs_kernels() {
            &[Path::Auto, Path::Scalar]
        } else {
            &[Path::Auto]
        };
        for &path in paths {
            let (mut po, mut pl) = (vec![], vec![]);
            for part in 0..2 {
                // The queries over one half of the keys (positions play no part in full mode).
                let n = half * kv_heads * d;
                let mut hp = x.clone();
                hp.k = k[part * n..][..n].to_vec();
                hp.v = x.v[part * n..][..n].to_vec();
                hp.cu_kv = vec![0, half as i32];
                hp.q_pos = (0..tq as i32).collect();
                hp.kv_pos = (0..half as i32).collect();
                hp.kv_depth = vec![0; half];
                hp.kv_valid = None;
                hp.implicit = Some((0, 0));
                let out = hp.forward::<bf16>(&dev, path).unwrap();
                po.extend(out.0);
                pl.extend(out.1);
            }
            let ob = dev.upload(&po, "o_part").unwrap();
            let lb = dev.upload(&pl, "lse_part").unwrap();
            let m = attn::merge(&ob, &lb, 2, tq, heads, d).unwrap();
            let (mo, ml) = (m.o.download().unwrap(), m.lse.download().unwrap());
            let what = format!("{} {path:?}", dev.backend());
            for i in 0..tq {
                for h in 0..heads {
                    let row = &mo[(i * heads + h) * d..][..d];
                    let lse = ml[h * tq + i];
                    if h >= 2 {
                        if !(lse.is_nan() && row.iter().all(|v| v.is_nan())) {
                            errs.push(format!("{what}: row ({i}, {h}) not NaN: LSE {lse}"));
                        }
                    } else {
                        let r = &ro[(i * heads + h) * d..][..d];
                        let e = rel_l2(row, r);
                        if (lse as f64 - rl[h * tq + i]).abs() > 1e-3 || e > 1e-2 {
                            errs.push(format!(
                                "{what}: row ({i}, {h}): LSE {lse}, O error {e:.2e}"
                            ));
                        }
                    }
                }
            }
        }
    }
    report("forward partials with a NaN key, merged", &errs);
}
