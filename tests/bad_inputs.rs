//! Bad inputs that used to panic or be misreported (issue 9), on the CPU path, host SIMT wave32
//! and wave64 (CUDA/HIP when present). Small problems only, so that the file also runs in a debug
//! build, where integer overflow panics: `cargo test --test bad_inputs` (no `--release`).
//!
//! - Implicit positions (`t + offset`) that overflow i32 are an `InvalidArgument` naming the op,
//!   for `attention::forward`, `decode` and `decode_partials`; the largest and smallest offsets
//!   that fit run and give the right masks.
//! - Every `Device::cpu()` handle is the same device; buffers of two distinct devices of one
//!   backend are refused with a message that says why.
//! - Invalid `cu_seqlens` contents are an `InvalidArgument` naming the op (read from the call's
//!   device-side check since issue 10), and no kernel follows them out of bounds.
//! - C2C (issue 13): mismatched token counts, slot mappings out of range, wrong weight shapes,
//!   missing weight names and the rest of `c2c_rejects_bad_inputs`.

use half::bf16;
use tessera::ops::attention::{self as attn, Attention, AttentionOut, MaskMode, Path, Positions};
use tessera::verify::attention::{Problem, Uploaded};
use tessera::{Device, Error, Schedule, SimtConfig};

/// The CPU path, SIMT wave32 and wave64 (in order), and CUDA/HIP when present.
fn executors() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        d.push(
            Device::simt_with(SimtConfig {
                wave,
                schedule: Schedule::InOrder,
                workers: 2,
                ..Default::default()
            })
            .expect("SIMT is always built"),
        );
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

fn expect_invalid<T: std::fmt::Debug>(r: tessera::Result<T>, op: &str, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument { op: o, msg }) => {
            assert_eq!(o, op, "{msg}");
            for n in needles {
                assert!(msg.contains(n), "{op}: '{msg}' lacks '{n}'");
            }
        }
        other => panic!("{op}: expected InvalidArgument ({needles:?}), got {other:?}"),
    }
}

const H: usize = 2;
const D: usize = 64;
/// Two sequences of 1 and 2 tokens (queries and keys alike).
const CU: [i32; 3] = [0, 1, 3];

/// All-zero Q, K and V: two sequences (CU), H heads over one K/V head, causal, scale 1/8,
/// uploaded to `dev`.
fn bufs(dev: &Device) -> Uploaded<bf16> {
    let n = CU[2] as usize;
    let pos: Vec<i32> = CU.windows(2).flat_map(|w| 0..w[1] - w[0]).collect();
    Problem {
        heads: H,
        kv_heads: 1,
        head_dim: D,
        cu_q: CU.to_vec(),
        cu_kv: CU.to_vec(),
        q_pos: pos.clone(),
        kv_pos: pos,
        implicit: Some((0, 0)),
        q_depth: vec![0; n],
        kv_depth: vec![0; n],
        kv_valid: None,
        mode: MaskMode::Causal,
        q: vec![0.0; n * H * D],
        k: vec![0.0; n * D],
        v: vec![0.0; n * D],
        scale: 0.125,
    }
    .upload(dev)
    .unwrap()
}

/// The problem of `b` with implicit positions `t + q_off` (queries) and `t + kv_off` (keys).
fn problem(b: &Uploaded<bf16>, q_off: i32, kv_off: i32) -> Attention<'_, bf16> {
    Attention {
        q_pos: Positions::Implicit { offset: q_off },
        kv_pos: Positions::Implicit { offset: kv_off },
        ..b.attention(Path::Auto)
    }
}

/// All-zero inputs, equal offsets, causal: row t of a sequence sees t + 1 keys, all with score
/// 0, so O = 0 and LSE = ln(t + 1).
fn check_equal_offsets(out: &AttentionOut, what: &str) {
    let lse = out.lse.download().unwrap();
    let want: Vec<f32> = (0..H).flat_map(|_| [0f32, 0.0, 2f32.ln()]).collect();
    for (g, w) in lse.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{what}: lse {lse:?}, want {want:?}");
    }
    assert!(
        out.o.download().unwrap().iter().all(|&x| x == 0.0),
        "{what}"
    );
}

/// `Positions::Implicit { offset: i32::MAX }` used to panic in a debug build ("attempt to add
/// with overflow" in ops/attention/prefill.rs, now duo_causal.rs) and to wrap in release and on the kernels.
#[test]
fn forward_rejects_overflowing_positions() {
    for dev in executors() {
        let b = bufs(&dev);
        let on = dev.backend();
        for path in [Path::Auto, Path::Scalar] {
            for (q_off, kv_off, side) in [
                (i32::MAX, 0, "q_pos"),
                (0, i32::MAX, "kv_pos"),
                (i32::MAX, i32::MAX, "q_pos"),
            ] {
                let a = Attention {
                    path,
                    ..problem(&b, q_off, kv_off)
                };
                expect_invalid(
                    attn::forward(&a),
                    "attention",
                    &[side, "overflows i32", &q_off.max(kv_off).to_string()],
                );
            }
            // The extremes that fit: the last token at i32::MAX, the first at i32::MIN.
            for off in [i32::MAX - 1, i32::MIN] {
                let a = Attention {
                    path,
                    ..problem(&b, off, off)
                };
                let out = attn::forward(&a)
                    .unwrap_or_else(|e| panic!("offset {off} {path:?} on {on}: {e}"));
                check_equal_offsets(&out, &format!("forward offset {off} {path:?} on {on}"));
            }
        }
        // Explicit positions need no arithmetic: i32::MAX is a position like any other.
        let pos = dev
            .upload(&[i32::MAX, i32::MAX - 1, i32::MAX], "pos")
            .unwrap();
        let a = Attention {
            q_pos: Positions::Explicit(&pos),
            kv_pos: Positions::Explicit(&pos),
            ..problem(&b, 0, 0)
        };
        check_equal_offsets(&attn::forward(&a).unwrap(), &format!("explicit on {on}"));
    }
}

/// The same for flash-decoding (`decode_partials` used `wrapping_add`).
#[test]
fn decode_rejects_overflowing_positions() {
    for dev in executors() {
        let b = bufs(&dev);
        let on = dev.backend();
        for (q_off, kv_off, side) in [(i32::MAX, 0, "q_pos"), (0, i32::MAX, "kv_pos")] {
            let a = problem(&b, q_off, kv_off);
            let needles = [side, "overflows i32"];
            expect_invalid(attn::decode(&a, 1), "attention::decode", &needles);
            expect_invalid(attn::decode(&a, 2), "attention::decode", &needles);
            expect_invalid(attn::decode_partials(&a, 2), "attention::decode", &needles);
        }
        for off in [i32::MAX - 1, i32::MIN] {
            for splits in [1, 2] {
                let out = attn::decode(&problem(&b, off, off), splits)
                    .unwrap_or_else(|e| panic!("offset {off} on {on}: {e}"));
                check_equal_offsets(&out, &format!("decode offset {off} S={splits} on {on}"));
            }
        }
    }
}

/// `k` uploaded through a second `Device::cpu()` handle gave "k is on cpu but the op runs on
/// cpu": every `Device::cpu()` is now the same device.
#[test]
fn every_cpu_handle_is_one_device() {
    let (a, b) = (Device::cpu(), Device::cpu());
    assert!(a.same(&b));
    let (qa, kb) = (bufs(&a), bufs(&b));
    let p = Attention {
        k: &kb.k,
        v: &kb.v,
        cu_seqlens_kv: &kb.cu_kv,
        ..problem(&qa, 0, 0)
    };
    check_equal_offsets(&attn::forward(&p).unwrap(), "forward, two cpu handles");
    check_equal_offsets(&attn::decode(&p, 2).unwrap(), "decode, two cpu handles");
    let base = a.upload(&[1.0f32, 2.0, 3.0], "base").unwrap();
    let new = b.upload(&[1.0f32, 2.5, 3.0], "new").unwrap();
    let delta = tessera::ops::bitmask::sparsify(&base, &new, 0.0).unwrap();
    let back = tessera::ops::bitmask::densify(&base, &delta).unwrap();
    assert_eq!(back.download().unwrap(), vec![1.0, 2.5, 3.0]);
}

/// Distinct devices that print alike (two SIMT executors, a separate CPU device) are refused
/// with a message that says why, not "k is on cpu but the op runs on cpu".
#[test]
fn distinct_devices_of_one_backend_say_why() {
    for (a, b) in [
        (Device::cpu(), Device::cpu_separate()),
        (Device::simt(), Device::simt()),
    ] {
        assert!(!a.same(&b));
        let (qa, kb) = (bufs(&a), bufs(&b));
        let p = Attention {
            k: &kb.k,
            ..problem(&qa, 0, 0)
        };
        let what = a.backend().to_string();
        expect_invalid(
            attn::forward(&p),
            "attention",
            &["k is on another", &what, "use clones of one handle"],
        );
        expect_invalid(
            attn::decode(&p, 1),
            "attention::decode",
            &["k is on another", &what],
        );
    }
}

/// Invalid `cu_seqlens` contents (issue 10: now checked on the device, so `forward`/`decode`
/// return and the error comes from `AttentionOut::check`; the CPU path reports it at once):
/// every kind gives an `InvalidArgument` naming the op and the array, and none makes a kernel
/// read or write out of bounds (SIMT's red zones and race check would fail the launch).
#[test]
fn invalid_cu_seqlens_are_reported_not_followed() {
    let cases: [(&[i32], usize, &str); 8] = [
        (&[1, 1, 3], 2, "must start at 0, not 1"),
        (&[i32::MIN, 0, 3], 2, "must start at 0"),
        (&[0, 2, 1], 2, "decreases at entry 2 (2 -> 1)"),
        (&[0, -5, 3], 3, "decreases at entry 1 (0 -> -5)"),
        (&[0, i32::MAX, 3], 3, "decreases at entry 2"),
        (&[0, 1, 1000], 2, "ends at 1000, the tensor has 3 tokens"),
        (&[0, 0, 2], 2, "ends at 2"),
        (
            &[0, 0, 3],
            2,
            "sequence 1 has 3 tokens, more than max_seqlen_q 2",
        ),
    ];
    for dev in executors() {
        let b = bufs(&dev);
        let on = dev.backend();
        for (cu, max, needle) in cases {
            let bad = dev.upload(cu, "cu").unwrap();
            let a = Attention {
                cu_seqlens_q: &bad,
                cu_seqlens_kv: &bad,
                max_seqlen_q: max,
                max_seqlen_kv: max,
                ..problem(&b, 0, 0)
            };
            let what = format!("{cu:?} on {on}");
            let forward =
                |path| attn::forward(&Attention { path, ..a }).and_then(AttentionOut::checked);
            expect_invalid(forward(Path::Auto), "attention", &["cu_seqlens_q", needle]);
            expect_invalid(
                forward(Path::Scalar),
                "attention",
                &["cu_seqlens_q", needle],
            );
            for splits in [1, 3] {
                let r = attn::decode(&a, splits).and_then(AttentionOut::checked);
                expect_invalid(r, "attention::decode", &["cu_seqlens_q", needle]);
            }
            // Only the keys' array bad: named as such.
            let kv_only = Attention {
                cu_seqlens_q: &b.cu_q,
                max_seqlen_q: 2,
                ..a
            };
            let r = attn::forward(&kv_only).and_then(AttentionOut::checked);
            let needle = needle.replace("max_seqlen_q", "max_seqlen_kv");
            expect_invalid(r, "attention", &["cu_seqlens_kv", &needle]);
            let r = attn::decode_partials(&kv_only, 2).and_then(|p| p.check.check());
            expect_invalid(r, "attention::decode", &["cu_seqlens_kv", &needle]);
            eprintln!("{what}: reported");
        }
    }
}

/// `moe::align`: out-of-range expert ids (read from the call's device-side check), E = 0,
/// block_size = 0, k = 0 and a length that is not a multiple of k are each an `InvalidArgument`
/// naming the op; sizes whose output would pass i32 are refused before anything is allocated.
#[test]
fn moe_align_rejects_bad_ids_and_sizes() {
    use tessera::ops::moe;
    for dev in executors() {
        let ids: Vec<i32> = (0..40).map(|i| i % 4).collect();
        let good = dev.upload(&ids, "topk_ids").unwrap();
        for (pos, bad) in [(3usize, -1i32), (39, 4), (0, i32::MAX)] {
            let mut v = ids.clone();
            v[pos] = bad;
            let b = dev.upload(&v, "topk_ids").unwrap();
            expect_invalid(moe::align(&b, 2, 4, 8), "moe::align", &["expert id"]);
            // Deferred: the sizes pass, the check reports the ids.
            match moe::align_deferred(&b, 2, 4, 8) {
                Ok((_, check)) => {
                    expect_invalid(check.check(), "moe::align", &["expert id", "[0, 4)"])
                }
                Err(e) => expect_invalid::<()>(Err(e), "moe::align", &["expert id"]),
            }
        }
        expect_invalid(moe::align(&good, 2, 0, 8), "moe::align", &["num_experts"]);
        expect_invalid(moe::align(&good, 2, 4, 0), "moe::align", &["block_size"]);
        expect_invalid(moe::align(&good, 0, 4, 8), "moe::align", &["k must be"]);
        expect_invalid(moe::align(&good, 3, 4, 8), "moe::align", &["multiple of k"]);
        expect_invalid(
            moe::align(&good, 2, 1024, 1 << 22),
            "moe::align",
            &["i32::MAX"],
        );
        let (a, check) = moe::align_deferred(&good, 2, 4, 8).unwrap();
        check.check().unwrap();
        assert_eq!(
            a.num_tokens_post_padded.download().unwrap(),
            vec![tessera::reference::moe::align(&ids, 4, 8).num_tokens_post_padded]
        );
    }
}

/// `moe::route`: bad parameters (r = 0, layer_in_group >= r, top_k = 0, k above the pool or E,
/// a logits length that is not T·r·N, E > MAX_EXPERTS) and bad logits (NaN, +inf, an all −inf
/// row; read from the device-side check) are each an `InvalidArgument` naming the op.
#[test]
fn moe_route_rejects_bad_params_and_logits() {
    use tessera::ops::moe::{self, Psr, RouteParams};
    let p = |r, j, k, psr: Option<Psr>| RouteParams {
        r,
        layer_in_group: j,
        layer: 3,
        top_k: k,
        renormalize: true,
        psr,
    };
    let psr = Some(Psr {
        step: 0,
        t_s: 10,
        t_e: 20,
        seed: 1,
    });
    for dev in executors() {
        let v: Vec<f32> = (0..3 * 16).map(|i| (i % 5) as f32).collect();
        let l = dev.upload(&v, "logits").unwrap();
        assert!(moe::route(&l, 3, &p(2, 1, 2, psr)).is_ok());
        expect_invalid(
            moe::route(&l, 3, &p(0, 0, 2, None)),
            "moe::route",
            &["r must"],
        );
        expect_invalid(
            moe::route(&l, 3, &p(2, 2, 2, None)),
            "moe::route",
            &["layer_in_group"],
        );
        expect_invalid(
            moe::route(&l, 3, &p(2, 1, 0, None)),
            "moe::route",
            &["top_k"],
        );
        expect_invalid(
            moe::route(&l, 3, &p(2, 1, 17, None)),
            "moe::route",
            &["pool"],
        );
        expect_invalid(
            moe::route(&l, 3, &p(2, 1, 9, psr)),
            "moe::route",
            &["pool", "PSR"],
        );
        expect_invalid(
            moe::route(&l, 5, &p(2, 1, 2, None)),
            "moe::route",
            &["tokens·r·N"],
        );
        let big = dev.upload(&vec![0f32; 2 * 1030], "logits").unwrap();
        expect_invalid(
            moe::route(&big, 1, &p(2, 0, 1, None)),
            "moe::route",
            &["MAX_EXPERTS"],
        );
        for (pos, x, needle) in [(5usize, f32::NAN, "NaN"), (40, f32::INFINITY, "+inf")] {
            let mut w = v.clone();
            w[pos] = x;
            let b = dev.upload(&w, "logits").unwrap();
            expect_invalid(
                moe::route(&b, 3, &p(2, 1, 2, None)),
                "moe::route",
                &[needle],
            );
            match moe::route_deferred(&b, 3, &p(2, 1, 2, None)) {
                Ok((_, check)) => expect_invalid(check.check(), "moe::route", &[needle]),
                Err(e) => expect_invalid::<()>(Err(e), "moe::route", &[needle]),
            }
        }
        let mut w = v.clone();
        w[16..32].fill(f32::NEG_INFINITY);
        let b = dev.upload(&w, "logits").unwrap();
        expect_invalid(
            moe::route(&b, 3, &p(2, 1, 2, None)),
            "moe::route",
            &["-inf", "token 1"],
        );
    }
}

/// `moe::permute`, `moe::combine` and `moe::load`: contents that are not an alignment, positions
/// outside the rows, out-of-range ids and bad sizes are each an `InvalidArgument` naming the op.
#[test]
fn moe_permute_combine_load_reject_bad_inputs() {
    use tessera::ops::moe;
    for dev in executors() {
        let ids: Vec<i32> = (0..20).map(|i| (i * 3) % 5).collect();
        let idb = dev.upload(&ids, "ids").unwrap();
        let x: Vec<f32> = (0..10 * 4).map(|i| i as f32).collect();
        let xb = dev.upload(&x, "x").unwrap();
        let a = moe::align(&idb, 2, 5, 4).unwrap();
        assert!(moe::permute(&xb, 4, &a, 2, 5, 4).is_ok());
        let mut s = a.sorted_token_ids.download().unwrap();
        let i = s.iter().position(|&v| v < 20).unwrap();
        s[i] = 99;
        let bad = moe::Aligned {
            sorted_token_ids: dev.upload(&s, "s").unwrap(),
            expert_ids: dev.upload(&a.expert_ids.download().unwrap(), "e").unwrap(),
            num_tokens_post_padded: dev.upload(&[3], "t").unwrap(),
        };
        expect_invalid(moe::permute(&xb, 4, &bad, 2, 5, 4), "moe::permute", &[]);
        expect_invalid(
            moe::permute(&xb, 3, &a, 2, 5, 4),
            "moe::permute",
            &["multiple of d"],
        );
        expect_invalid(
            moe::permute(&xb, 4, &a, 2, 6, 4),
            "moe::permute",
            &["entries"],
        );
        let pos = dev.upload(&[0, 1, 2, 40], "pos").unwrap();
        let w = dev.upload(&[1f32; 4], "w").unwrap();
        let eo = dev.upload(&[1f32; 8 * 4], "eo").unwrap();
        expect_invalid(
            moe::combine::<f32, f32>(&eo, &pos, &w, 4, 2),
            "moe::combine",
            &["positions"],
        );
        expect_invalid(
            moe::combine::<f32, f32>(&eo, &pos, &w, 4, 3),
            "moe::combine",
            &["top_k"],
        );
        expect_invalid(moe::load(&idb, 2, 2), "moe::load", &["expert id"]);
        expect_invalid(moe::load(&idb, 0, 5), "moe::load", &["num_experts"]);
        expect_invalid(moe::load(&idb, 512, 3), "moe::load", &["MAX_EXPERTS"]);
        assert_eq!(
            moe::load(&idb, 5, 1).unwrap().per_layer.download().unwrap(),
            [20]
        );
    }
}

/// `ops::gemm`: length and shape mismatches, sizes past i32, SwiGLU with an activation and a
/// wrong B, and offsets that break the group contract (read from the device-side check when
/// deferred) are each an `InvalidArgument` naming the op; a good call works afterwards.
#[test]
fn gemm_rejects_bad_shapes_and_offsets() {
    use tessera::ops::gemm::{self, Activation, Epilogue};
    for dev in executors() {
        let (m, n, k) = (9, 7, 8);
        let a = dev.upload(&vec![bf16::from_f32(1.0); m * k], "a").unwrap();
        let b = dev
            .upload(&vec![bf16::from_f32(0.5); 2 * n * k], "b")
            .unwrap();
        let bn = dev.upload(&vec![bf16::from_f32(0.5); n * k], "bn").unwrap();
        let e = Epilogue::<f32>::new();
        let dense = "gemm::dense";
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &b, m, n, k, &e),
            dense,
            &["b has"],
        );
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &bn, m + 1, n, k, &e),
            dense,
            &["a has"],
        );
        let short = dev.upload(&[0f32; 3], "short").unwrap();
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &bn, m, n, k, &e.bias(&short)),
            dense,
            &["bias"],
        );
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &bn, m, n, k, &e.row_scale(&short)),
            dense,
            &["row_scale"],
        );
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &bn, m, n, k, &e.residual(&short)),
            dense,
            &["residual"],
        );
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &bn, m, n, k, &e.swiglu()),
            dense,
            &["b has"],
        );
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &b, m, n, k, &e.swiglu().activation(Activation::GeluErf)),
            dense,
            &["activation must be none"],
        );
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &bn, 1 << 31, n, k, &e),
            dense,
            &["i32::MAX"],
        );
        expect_invalid(
            gemm::dense::<bf16, f32>(&a, &bn, m, n, usize::MAX / 4, &e),
            dense,
            &["K = ", "i32::MAX"],
        );
        let grouped = "gemm::grouped";
        for (offs, needle) in [
            (vec![-2, 3, 9], "offsets[0] = -2"),
            (vec![0, 5, 4, 9], "offsets[2] = 4"),
            (vec![0, 3, 10], "offsets[2] = 10"),
        ] {
            let o = dev.upload(&offs, "offsets").unwrap();
            let g = offs.len() - 1;
            let bg = dev
                .upload(&vec![bf16::from_f32(0.5); g * n * k], "bg")
                .unwrap();
            expect_invalid(
                gemm::grouped::<bf16, f32>(&a, &bg, &o, m, n, k, &e),
                grouped,
                &[needle],
            );
            match gemm::grouped_deferred::<bf16, bf16>(&a, &bg, &o, m, n, k, &Epilogue::new()) {
                Ok((_, check)) => expect_invalid(check.check(), grouped, &[needle, "M = 9"]),
                Err(err) => expect_invalid::<()>(Err(err), grouped, &[needle]),
            }
            expect_invalid(
                gemm::grouped_swiglu::<bf16, f32>(&a, &bg, &bg, &o, m, n, k),
                "gemm::grouped_swiglu",
                &[needle],
            );
        }
        let empty = dev.upload::<i32>(&[], "offsets").unwrap();
        expect_invalid(
            gemm::grouped::<bf16, f32>(&a, &bn, &empty, m, n, k, &e),
            grouped,
            &["offsets"],
        );
        let o = dev.upload(&[0, 4, 9], "offsets").unwrap();
        expect_invalid(
            gemm::grouped::<bf16, f32>(&a, &bn, &o, m, n, k, &e),
            grouped,
            &["[G, N, K]"],
        );
        let d = gemm::grouped::<bf16, f32>(&a, &b, &o, m, n, k, &e).unwrap();
        assert!(d.download().unwrap().iter().all(|&x| x == 4.0));
    }
}

/// C2C (issue 13): mismatched token counts, slot mappings out of range, wrong weight shapes,
/// missing weight names, layouts that do not match the projector, bad gates and alignments:
/// each an `InvalidArgument` naming the op and the problem, on every executor.
#[test]
fn c2c_rejects_bad_inputs() {
    use tessera::drivers::c2c::{align, weights, Config, Fuser};
    use tessera::ops::c2c::{
        self, Activation, Cache, CacheLayout, CacheMut, Gate, Options, Projector, Rows, Workspace,
    };
    use tessera::testing::Rng;
    use tessera::verify::c2c::{dims, random_projector};
    let d = dims(1, 8, 2, 8, 16, 8, 1);
    let w = random_projector::<bf16>(d, &mut Rng(9));
    for dev in executors() {
        let sl = CacheLayout::paged(2, 1, 8);
        let tl = CacheLayout::contiguous(1, 2, 8, 8);
        // Rows.
        expect_invalid(
            Rows::new(&dev, &[0, 1], &[0], &sl, &tl),
            "c2c.project",
            &["mismatched token counts", "2 sharer", "1 receiver"],
        );
        expect_invalid(
            Rows::new(&dev, &[0, 32], &[0, 1], &sl, &tl),
            "c2c.project",
            &[
                "sharer slot mapping out of range",
                "slot[1] = 32",
                "32 slots",
            ],
        );
        expect_invalid(
            Rows::new(&dev, &[0, 1], &[-1, 1], &sl, &tl),
            "c2c.project",
            &["receiver slot mapping out of range", "slot[0] = -1"],
        );
        expect_invalid(
            Rows::new(&dev, &[0, 1], &[3, 3], &sl, &tl),
            "c2c.project",
            &["receiver slot 3 is given twice"],
        );
        expect_invalid(
            c2c::paged_slots(&[4, 1], &[0, 40]),
            "c2c.project",
            &["position 40 needs block 2", "has 2"],
        );
        // Weights.
        let mut bad = w.clone();
        bad.w2.pop();
        expect_invalid(
            Projector::<bf16>::upload(&dev, &bad, 1.0),
            "c2c.project",
            &["wrong weight shape: w2", "want 128"],
        );
        expect_invalid(
            Projector::<bf16>::upload(&dev, &w, f32::NAN),
            "c2c.project",
            &["gate_logit must be finite"],
        );
        let up = |v: &[f32]| {
            dev.upload(&tessera::testing::to_dtype::<bf16>(v), "w")
                .unwrap()
        };
        let upf = |v: &[f32]| dev.upload(v, "w").unwrap();
        expect_invalid(
            Projector::from_buffers(
                d,
                up(&w.w_in),
                upf(&w.b_in),
                up(&w.w1),
                up(&w.w2),
                upf(&w.norm),
                up(&w.w_s),
                up(&w.w_s),
                1.0,
            ),
            "c2c.project",
            &["wrong weight shape: w_out", "[Ht·Dt, Hd]"],
        );
        let p = Projector::<bf16>::upload(&dev, &w, 1.0).unwrap();
        // The op and the fuse.
        let src = dev.upload(&[bf16::ZERO; 3 * 8], "src").unwrap();
        let tgt = dev.upload(&[bf16::ZERO; 4 * 16], "tgt").unwrap();
        expect_invalid(
            c2c::project::<bf16, bf16, bf16>(&p, &src, &tgt, 3, &Options::default()),
            "c2c.project",
            &["mismatched token counts", "tgt has 64 elements"],
        );
        let scache = dev.upload(&vec![bf16::ZERO; 32 * 8], "s").unwrap();
        let mut tcache = dev.upload(&vec![bf16::ZERO; 8 * 16], "t").unwrap();
        let rows = Rows::new(&dev, &[0, 1], &[0, 1], &sl, &tl).unwrap();
        let mut ws = Workspace::new();
        let wrong = CacheLayout::contiguous(1, 4, 4, 8);
        expect_invalid(
            c2c::fuse(
                &p,
                &Cache {
                    data: &scache,
                    layout: sl,
                },
                &mut CacheMut {
                    data: &mut tcache,
                    layout: wrong,
                },
                &rows,
                &Options::default(),
                &mut ws,
            ),
            "c2c.project",
            &["receiver cache has 4 heads × 8", "takes 2 × 8"],
        );
        let mut short = dev.upload(&vec![bf16::ZERO; 8 * 16 - 1], "t").unwrap();
        expect_invalid(
            c2c::fuse(
                &p,
                &Cache {
                    data: &scache,
                    layout: sl,
                },
                &mut CacheMut {
                    data: &mut short,
                    layout: tl,
                },
                &rows,
                &Options::default(),
                &mut ws,
            ),
            "c2c.project",
            &["receiver cache has 127 elements", "needs 128"],
        );
        for (opts, needle) in [
            (
                Options {
                    gate: Gate::Soft { tau: 0.0 },
                    gelu: Activation::GeluErf,
                },
                "temperature must be > 0",
            ),
            (
                Options {
                    gate: Gate::Hard,
                    gelu: Activation::Silu,
                },
                "gelu must be gelu_erf or gelu_tanh",
            ),
        ] {
            expect_invalid(
                c2c::fuse(
                    &p,
                    &Cache {
                        data: &scache,
                        layout: sl,
                    },
                    &mut CacheMut {
                        data: &mut tcache,
                        layout: tl,
                    },
                    &rows,
                    &opts,
                    &mut ws,
                ),
                "c2c.project",
                &[needle],
            );
        }
        // The driver: stacked caches with a bad alignment, a layer map out of range.
        let cfg = Config {
            source_layers: 1,
            target_layers: 1,
            dims: d,
            map: align::LayerMap::LastAligned,
        };
        let fuser = Fuser::<bf16>::random(&dev, cfg.clone(), 5).unwrap();
        let sk = dev.upload(&[bf16::ZERO; 3 * 8], "sk").unwrap();
        let mut tk = dev.upload(&[bf16::ZERO; 2 * 16], "tk").unwrap();
        let mut tv = dev.upload(&[bf16::ZERO; 2 * 16], "tv").unwrap();
        expect_invalid(
            fuser.fuse_stacked(
                &sk,
                &sk,
                3,
                &mut tk,
                &mut tv,
                2,
                &[0, 3],
                &Options::default(),
            ),
            "c2c.fuse",
            &["alignment[1] = 3 is past the sharer's 3 tokens"],
        );
        expect_invalid(
            fuser.fuse_stacked(&sk, &sk, 3, &mut tk, &mut tv, 2, &[0], &Options::default()),
            "c2c.fuse",
            &["mismatched token counts", "alignment has 1"],
        );
        let bad_map = Config {
            map: align::LayerMap::Table(vec![1]),
            ..cfg.clone()
        };
        assert!(matches!(
            Fuser::<bf16>::random(&dev, bad_map, 5),
            Err(Error::InvalidArgument {
                op: "c2c.layer_map",
                ..
            })
        ));
        // Safetensors: a missing weight name.
        let fw = fuser.to_weights().unwrap();
        let bytes = weights::write(&fw).unwrap();
        assert!(Fuser::<bf16>::from_safetensors(&dev, cfg.clone(), &bytes).is_ok());
        let st = safetensors_without(&bytes, "layers.0.value.w2");
        expect_invalid(
            Fuser::<bf16>::from_safetensors(&dev, cfg.clone(), &st),
            "c2c.weights",
            &["missing tensor layers.0.value.w2"],
        );
    }
}

/// `bytes` (a safetensors file) without tensor `name`.
fn safetensors_without(bytes: &[u8], name: &str) -> Vec<u8> {
    use safetensors::tensor::TensorView;
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != name)
        .collect();
    safetensors::serialize(views, None).unwrap()
}
