//! TaH driver (drivers::tah) on every executor present (CPU path, host SIMT wave32/wave64 in-order
//! and two shuffled seeds, CUDA/HIP when present) against the reference, plus the end-to-end test:
//! a two-depth prefill and token-by-token decode through the driver against the f64 dense-mask
//! attention over the full set of (position, depth) tokens.

use half::{bf16, f16};
use tessera::drivers::tah::{self, KvCache, Phase};
use tessera::reference::attention as aref;
use tessera::reference::tah as reference;
use tessera::testing::{rel_l2, tol, Rng};
use tessera::verify::tah::{accumulate_outcome, NextInputCase, SelectCase};
use tessera::verify::{assert_rows_pass, Outcome};
use tessera::{Device, Float, Schedule};

fn simt(wave: u32, schedule: Schedule) -> Device {
    tessera::testing::simt(wave, schedule, 2)
}

/// Every executor the tests run on.
fn devices() -> Vec<Device> {
    tessera::testing::test_devices([21, 22])
}

/// Panic with the reason when `o` failed.
fn assert_pass(o: Outcome, what: &str) {
    if let Err(e) = o.result {
        panic!("{what}: error {}: {e}", o.error);
    }
}

#[test]
fn select_hard_exact() {
    let thr = 0.9;
    let lt = reference::logit_threshold(thr);
    for dev in devices() {
        for (c, &n) in [0usize, 1, 31, 255, 256, 257, 1000, 70_001]
            .iter()
            .enumerate()
        {
            let mut r = Rng(0x5e1 + c as u64);
            let mut scores: Vec<f32> = (0..n).map(|_| ((r.unit() - 0.5) * 12.0) as f32).collect();
            // Edge values: exactly at the threshold (not active), just above, NaN.
            for (i, s) in scores.iter_mut().enumerate().take(n.min(6)) {
                *s = match i % 3 {
                    0 => lt,
                    1 => f32::from_bits(lt.to_bits() + 1),
                    _ => f32::NAN,
                };
            }
            // Selection, and gather/scatter of rows of width 3 at the selected indices.
            let case = SelectCase {
                scores,
                threshold: thr,
                d: 3,
                seed: c as u64,
            };
            assert_rows_pass(&case.rows(&dev));
        }
    }
}

#[test]
fn gather_scatter_exact() {
    for dev in devices() {
        for &(n, d, m) in &[
            (1usize, 1usize, 1usize),
            (40, 1, 7),
            (300, 33, 20),
            (17, 64, 0),
        ] {
            let mut r = Rng(n as u64 * 31 + d as u64);
            let src: Vec<f32> = (0..n * d).map(|_| r.unit() as f32).collect();
            let mut idx: Vec<u32> = (0..n as u32).collect();
            for i in (1..idx.len()).rev() {
                idx.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
            }
            idx.truncate(m);
            let want = reference::gather_rows(&src, &idx, d);
            let s = dev.upload(&src, "src").unwrap();
            let ib = dev.upload(&idx, "idx").unwrap();
            let g = tah::gather_rows(&s, &ib, d).unwrap();
            assert_eq!(g.download().unwrap(), want, "gather on {}", dev.backend());
            // Scatter modified rows back into a copy.
            let upd: Vec<f32> = want.iter().map(|x| x + 1.0).collect();
            let mut dst_host = src.clone();
            reference::scatter_rows(&upd, &idx, d, &mut dst_host);
            let mut dst = dev.upload(&src, "dst").unwrap();
            let ub = dev.upload(&upd, "upd").unwrap();
            tah::scatter_rows(&ub, &ib, d, &mut dst).unwrap();
            assert_eq!(
                dst.download().unwrap(),
                dst_host,
                "scatter on {}",
                dev.backend()
            );
            // Positions (i32, d = 1).
            let pos: Vec<i32> = (0..n as i32).map(|p| p * 3 + 1).collect();
            let pb = dev.upload(&pos, "pos").unwrap();
            let gp = tah::gather_rows(&pb, &ib, 1).unwrap();
            assert_eq!(
                gp.download().unwrap(),
                reference::gather_rows(&pos, &idx, 1)
            );
        }
    }
}

/// Logits of `m` rows: distinct values (a shuffled ramp) or heavily tied ones.
fn logits(m: usize, vocab: usize, ties: bool, seed: u64) -> Vec<f32> {
    let mut r = Rng(seed);
    let mut out = Vec::with_capacity(m * vocab);
    for _ in 0..m {
        if ties {
            out.extend((0..vocab).map(|_| ((r.next_u64() % 7) as f32 - 3.0) * 0.75));
        } else {
            let mut row: Vec<f32> = (0..vocab)
                .map(|i| (i as f32 - vocab as f32 / 2.0) * (8.0 / vocab as f32))
                .collect();
            for i in (1..row.len()).rev() {
                row.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
            }
            out.extend(row);
        }
    }
    out
}

fn check_next_input<E: Float>(
    dev: &Device,
    m: usize,
    vocab: usize,
    k: usize,
    d: usize,
    ties: bool,
    tol: f64,
) {
    let cum = logits(m, vocab, ties, (m * 7 + vocab + k) as u64);
    let mut r = Rng(vocab as u64 ^ 0xe3b);
    let emb: Vec<E> = (0..vocab * d)
        .map(|_| E::from_f64(r.unit() - 0.5))
        .collect();
    let what = format!(
        "{} m={m} V={vocab} k={k} d={d} ties={ties} on {}",
        E::KIND,
        dev.backend()
    );
    let case = NextInputCase {
        cum,
        vocab,
        k,
        emb,
        d,
        tol,
        label: what.clone(),
    };
    assert_pass(case.outcome(dev), &what);
}

#[test]
fn next_depth_input_matches_reference() {
    for dev in devices() {
        for &(m, vocab, k, d) in &[
            (1usize, 1usize, 1usize, 1usize),
            (3, 100, 100, 16),
            (2, 1000, 7, 33),
            (2, 5003, 256, 8),
            (1, 4099, 100, 64),
        ] {
            for ties in [false, true] {
                check_next_input::<f32>(&dev, m, vocab, k, d, ties, tol::F32);
            }
            check_next_input::<bf16>(&dev, m, vocab, k, d, false, tol::F32);
            check_next_input::<f16>(&dev, m, vocab, k, d, true, tol::F32);
        }
    }
}

/// Vocab 152k (Qwen3), one row, on the CPU path and SIMT wave32 (GPU when present).
#[test]
fn next_depth_input_vocab_152k() {
    let mut devs = vec![Device::cpu(), simt(32, Schedule::InOrder)];
    devs.extend(Device::cuda(0).ok());
    devs.extend(Device::hip(0).ok());
    for dev in devs {
        check_next_input::<bf16>(&dev, 1, 151_936, 100, 64, false, tol::F32);
    }
}

#[test]
fn accumulate_exact() {
    for dev in devices() {
        for n in [0usize, 1, 1000, 70_001] {
            let a = logits(1, n, false, 5);
            let b = logits(1, n, true, 6);
            assert!(a.iter().chain(&b).all(|x| !x.is_nan()));
            // Bit-exact (NaN payloads aside: there are none here).
            assert_pass(
                accumulate_outcome(&dev, &a, &b),
                &format!("n={n} on {}", dev.backend()),
            );
        }
    }
}

#[test]
fn cache_growth_keeps_contents() {
    let (hkv, d) = (2usize, 8usize);
    let row = hkv * d;
    for dev in devices() {
        let mut cache = KvCache::<bf16>::new(&dev, 2, hkv, d).unwrap();
        let mut want: [Vec<(bf16, bf16)>; 2] = [Vec::new(), Vec::new()];
        let mut wpos: [Vec<i32>; 2] = [Vec::new(), Vec::new()];
        let mut r = Rng(77);
        let mut next = [0i32; 2];
        for step in 0..12 {
            let depth = step % 2;
            let n = 1 + (r.next_u64() % 9) as usize;
            let k: Vec<bf16> = (0..n * row).map(|_| bf16::from_f64(r.unit())).collect();
            let v: Vec<bf16> = (0..n * row).map(|_| bf16::from_f64(r.unit())).collect();
            let pos: Vec<i32> = (0..n)
                .map(|_| {
                    next[depth] += 1 + (r.next_u64() % 3) as i32;
                    next[depth]
                })
                .collect();
            cache
                .append(
                    depth,
                    &dev.upload(&k, "k").unwrap(),
                    &dev.upload(&v, "v").unwrap(),
                    &dev.upload(&pos, "p").unwrap(),
                    None,
                )
                .unwrap();
            want[depth].extend(k.into_iter().zip(v));
            wpos[depth].extend(pos);
        }
        for depth in 0..2 {
            let (k, v, p, m) = cache.slot_contents(depth).unwrap();
            assert!(cache.capacity(depth) >= cache.len(depth) && cache.capacity(depth) > 16);
            let wk: Vec<bf16> = want[depth].iter().map(|x| x.0).collect();
            let wv: Vec<bf16> = want[depth].iter().map(|x| x.1).collect();
            assert_eq!(k, wk, "k depth {depth} on {}", dev.backend());
            assert_eq!(v, wv);
            assert_eq!(p, wpos[depth]);
            assert!(m.iter().all(|&x| x == 1));
        }
        // The view of depth 1: slot 0 then slot 1.
        let view = cache.view(1).unwrap();
        let n0 = cache.len(0);
        assert_eq!(view.len, n0 + cache.len(1));
        let vp = view.pos.download().unwrap();
        assert_eq!(&vp[..n0], &wpos[0][..]);
        assert_eq!(&vp[n0..], &wpos[1][..]);
        let vd = view.depth.download().unwrap();
        assert!(vd[..n0].iter().all(|&x| x == 0) && vd[n0..].iter().all(|&x| x == 1));
        let vk = view.k.download().unwrap();
        assert_eq!(
            vk[n0 * row..].to_vec(),
            want[1].iter().map(|x| x.0).collect::<Vec<_>>()
        );
        // Out-of-order positions are refused.
        let e = cache
            .append(
                0,
                &dev.upload(&vec![bf16::ZERO; row], "k").unwrap(),
                &dev.upload(&vec![bf16::ZERO; row], "v").unwrap(),
                &dev.upload(&[0i32], "p").unwrap(),
                None,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KvCache::append") && e.contains("strictly increase"),
            "{e}"
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    for dev in devices() {
        let s = dev.upload(&[0.0f32; 10], "s").unwrap();
        for t in [0.0, 1.0, f64::NAN, -0.5] {
            let e = tah::select_hard(&s, t).unwrap_err().to_string();
            assert!(
                e.contains("tah::select_hard") && e.contains("threshold"),
                "{e}"
            );
        }
        let idx = dev.upload(&[3u32, 10], "i").unwrap();
        let e = tah::gather_rows(&s, &idx, 1).unwrap_err().to_string();
        assert!(
            e.contains("tah::gather_rows") && e.contains("index 10"),
            "{e}"
        );
        let e = tah::gather_rows(&s, &idx, 3).unwrap_err().to_string();
        assert!(e.contains("rows of width 3"), "{e}");
        let dup = dev.upload(&[3u32, 3], "i").unwrap();
        let src = dev.upload(&[1.0f32, 2.0], "x").unwrap();
        let mut dst = dev.upload(&[0.0f32; 10], "d").unwrap();
        let e = tah::scatter_rows(&src, &dup, 1, &mut dst)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tah::scatter_rows") && e.contains("twice"),
            "{e}"
        );
        let emb = dev.upload(&[bf16::ZERO; 40], "e").unwrap();
        let e = tah::next_depth_input(&s, 10, 11, &emb, 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tah::next_depth_input") && e.contains("k = 11"),
            "{e}"
        );
        let e = tah::next_depth_input(&s, 10, 5, &emb, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("emb has 40"), "{e}");
        let e = tah::next_depth_input(&s, 3, 2, &emb, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not rows of vocab 3"), "{e}");
        let mut c = dev.upload(&[0.0f32; 3], "c").unwrap();
        let e = tah::accumulate_logits(&mut c, &s).unwrap_err().to_string();
        assert!(
            e.contains("tah::accumulate_logits") && e.contains("10"),
            "{e}"
        );
        let mut cache = KvCache::<f16>::new(&dev, 2, 2, 64).unwrap();
        let k = dev.upload(&[f16::ZERO; 100], "k").unwrap();
        let p = dev.upload(&[0i32], "p").unwrap();
        let e = cache.append(0, &k, &k, &p, None).unwrap_err().to_string();
        assert!(e.contains("k has 100 elements"), "{e}");
        let e = cache.append(2, &k, &k, &p, None).unwrap_err().to_string();
        assert!(e.contains("depth 2"), "{e}");
    }
}

/// Everything observable about a cache: per slot, its length and contents.
fn cache_state<T: tessera::ops::attention::HalfFloat>(
    cache: &KvCache<T>,
) -> Vec<(usize, tah::SlotContents<T>)> {
    (0..cache.depths())
        .map(|d| (cache.len(d), cache.slot_contents(d).unwrap()))
        .collect()
}

/// A failed `attend` (issue 9: heads 3 / kv_heads 2 used to grow the cache and then fail) leaves
/// the cache as it was: lengths and contents of every slot, and the next append still checks
/// positions against the last successful one. Covers prefill and decode, a cache that would
/// have to grow, and every reason `attend` refuses a call after the K/V shapes are right.
#[test]
fn failed_attend_leaves_cache_unchanged() {
    let (hkv, d) = (2usize, 64usize);
    for dev in devices() {
        let mut r = Rng(0x5eed);
        let mut rand = |n: usize| -> Vec<bf16> {
            (0..n)
                .map(|_| bf16::from_f64(r.unit() * 2.0 - 1.0))
                .collect()
        };
        let mut cache = KvCache::<bf16>::new(&dev, 2, hkv, d).unwrap();
        // 14 tokens in slot 0 (capacity 16): appending 4 more would grow it.
        let pos0: Vec<i32> = (0..14).collect();
        let (k0, v0) = (rand(14 * hkv * d), rand(14 * hkv * d));
        cache
            .append(
                0,
                &dev.upload(&k0, "k").unwrap(),
                &dev.upload(&v0, "v").unwrap(),
                &dev.upload(&pos0, "p").unwrap(),
                None,
            )
            .unwrap();
        let before = cache_state(&cache);
        let n = 4usize;
        let pos = dev.upload(&[14i32, 15, 16, 17], "pos").unwrap();
        let k = dev.upload(&rand(n * hkv * d), "k").unwrap();
        let v = dev.upload(&rand(n * hkv * d), "v").unwrap();
        let q3 = dev.upload(&rand(n * 3 * d), "q").unwrap();
        let q4 = dev.upload(&rand(n * 4 * d), "q").unwrap();
        let prefill = Phase::Prefill;
        let cases: Vec<(&str, tessera::Result<_>)> = vec![
            (
                "multiple of kv_heads",
                tah::attend(&mut cache, 0, 3, &q3, &k, &v, &pos, None, 0.125, prefill),
            ),
            (
                "multiple of kv_heads",
                tah::attend(
                    &mut cache,
                    1,
                    3,
                    &q3,
                    &k,
                    &v,
                    &pos,
                    None,
                    0.125,
                    Phase::Decode { splits: 2 },
                ),
            ),
            (
                "scale",
                tah::attend(&mut cache, 0, 4, &q4, &k, &v, &pos, None, f32::NAN, prefill),
            ),
            (
                "splits",
                tah::attend(
                    &mut cache,
                    0,
                    4,
                    &q4,
                    &k,
                    &v,
                    &pos,
                    None,
                    0.125,
                    Phase::Decode { splits: 0 },
                ),
            ),
        ];
        for (needle, res) in cases {
            let e = res.expect_err(needle).to_string();
            assert!(
                cache_state(&cache) == before,
                "{needle}: a failed attend changed the cache on {} ({e})",
                dev.backend()
            );
            assert!(e.contains("tah::attend") && e.contains(needle), "{e}");
        }
        // Unsupported head_dim: the cache accepts D = 32, attention does not.
        let mut c32 = KvCache::<bf16>::new(&dev, 1, 1, 32).unwrap();
        let (k1, q1) = (
            dev.upload(&rand(32), "k").unwrap(),
            dev.upload(&rand(32), "q").unwrap(),
        );
        let p1 = dev.upload(&[0i32], "p").unwrap();
        let e = tah::attend(&mut c32, 0, 1, &q1, &k1, &k1, &p1, None, 0.125, prefill)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tah::attend") && e.contains("head_dim 32"),
            "{e}"
        );
        assert_eq!(c32.len(0), 0, "on {}", dev.backend());
        // The failed calls consumed no positions: 14.. is still the next valid append, and a
        // good call appends exactly once.
        tah::attend(&mut cache, 0, 4, &q4, &k, &v, &pos, None, 0.125, prefill).unwrap();
        assert_eq!(cache.len(0), 18);
        assert_eq!(cache.len(1), 0);
        assert_eq!(
            cache.slot_contents(0).unwrap().2,
            (0..18).collect::<Vec<i32>>()
        );
    }
}

/// END-TO-END (needs `attention::forward` and `attention::decode`): a two-depth prefill of 32
/// tokens, then token-by-token decode to 48, with hard tokens chosen by `select_hard` from random
/// decider scores; every attention output is compared with the f64 dense-mask reference over the
/// full set of (position, depth) tokens.
fn end_to_end(dev: &Device) {
    const SEQ: usize = 48;
    const PROMPT: usize = 32;
    let (h, hkv, d) = (4usize, 2usize, 64usize);
    let scale = 1.0 / (d as f32).sqrt();
    let mut r = Rng(0x7a4_e2e);
    let mut rand = |n: usize| -> Vec<bf16> {
        (0..n)
            .map(|_| bf16::from_f64(r.unit() * 2.0 - 1.0))
            .collect()
    };
    // Per (position, depth) Q/K/V (depth 1 values exist for every position; only hard ones are used).
    let q: [Vec<bf16>; 2] = [rand(SEQ * h * d), rand(SEQ * h * d)];
    let k: [Vec<bf16>; 2] = [rand(SEQ * hkv * d), rand(SEQ * hkv * d)];
    let v: [Vec<bf16>; 2] = [rand(SEQ * hkv * d), rand(SEQ * hkv * d)];
    let mut r2 = Rng(0xdec1de);
    // About a quarter hard at sigmoid > 0.9.
    let scores: Vec<f32> = (0..SEQ).map(|_| (r2.unit() * 12.0 - 7.0) as f32).collect();
    let positions: Vec<i32> = (0..SEQ as i32).collect();
    let rows = |x: &[bf16], ps: &[usize], w: usize| -> Vec<bf16> {
        ps.iter().flat_map(|&p| x[p * w..][..w].to_vec()).collect()
    };

    let mut cache = KvCache::<bf16>::new(dev, 2, hkv, d).unwrap();
    // (position, depth) of every query issued, and its O / LSE rows.
    let mut issued: Vec<(usize, usize)> = Vec::new();
    let mut got_o: Vec<f32> = Vec::new();
    let mut got_lse: Vec<f32> = Vec::new();
    // Padding tokens of the prompt: cached with valid = 0, never attended to.
    const PADDING: [usize; 2] = [3, 17];
    let mut run = |cache: &mut KvCache<bf16>,
                   depth: usize,
                   ps: &[usize],
                   phase: Phase,
                   issued: &mut Vec<(usize, usize)>| {
        let qb = dev.upload(&rows(&q[depth], ps, h * d), "q").unwrap();
        let kb = dev.upload(&rows(&k[depth], ps, hkv * d), "k").unwrap();
        let vb = dev.upload(&rows(&v[depth], ps, hkv * d), "v").unwrap();
        let pb = dev
            .upload(&ps.iter().map(|&p| p as i32).collect::<Vec<_>>(), "pos")
            .unwrap();
        let valid: Vec<u8> = ps
            .iter()
            .map(|p| u8::from(depth > 0 || !PADDING.contains(p)))
            .collect();
        let mb = dev.upload(&valid, "valid").unwrap();
        let out = tah::attend(cache, depth, h, &qb, &kb, &vb, &pb, Some(&mb), scale, phase)
            .unwrap_or_else(|e| panic!("attend depth {depth} on {}: {e}", dev.backend()));
        let o = out.o.download().unwrap();
        let lse = out.lse.download().unwrap();
        let n = ps.len();
        got_o.extend(o);
        // LSE is [H, n]: store per query row-major [n, H].
        for i in 0..n {
            for hh in 0..h {
                got_lse.push(lse[hh * n + i]);
            }
        }
        issued.extend(ps.iter().map(|&p| (p, depth)));
    };

    // Prefill: depth 0 for the prompt, then depth 1 for its hard tokens (selected and gathered
    // through the driver).
    let prompt: Vec<usize> = (0..PROMPT).collect();
    run(&mut cache, 0, &prompt, Phase::Prefill, &mut issued);
    let sb = dev.upload(&scores[..PROMPT], "scores").unwrap();
    let sel = tah::select_hard(&sb, 0.9).unwrap();
    let pb = dev.upload(&positions[..PROMPT], "positions").unwrap();
    let hard_pos = tah::gather_rows(&pb, &sel.indices, 1)
        .unwrap()
        .download()
        .unwrap();
    assert_eq!(hard_pos.len(), sel.count);
    let hard: Vec<usize> = hard_pos.iter().map(|&p| p as usize).collect();
    assert!(!hard.is_empty() && hard.len() < PROMPT, "hard set {hard:?}");
    if !hard.is_empty() {
        run(&mut cache, 1, &hard, Phase::Prefill, &mut issued);
    }
    let mut all_hard = hard.clone();
    // Decode, one token at a time.
    for p in PROMPT..SEQ {
        run(
            &mut cache,
            0,
            &[p],
            Phase::Decode { splits: 3 },
            &mut issued,
        );
        let sb = dev.upload(&scores[p..p + 1], "score").unwrap();
        if tah::select_hard(&sb, 0.9).unwrap().count == 1 {
            run(
                &mut cache,
                1,
                &[p],
                Phase::Decode { splits: 2 },
                &mut issued,
            );
            all_hard.push(p);
        }
    }
    assert_eq!(cache.len(0), SEQ);
    assert_eq!(cache.len(1), all_hard.len());

    // Reference: all (position, depth) keys (slot 0 then slot 1) and all issued queries.
    let f = |x: &[bf16]| -> Vec<f32> { x.iter().map(|y| y.to_f32()).collect() };
    let all0: Vec<usize> = (0..SEQ).collect();
    let mut kf = f(&rows(&k[0], &all0, hkv * d));
    kf.extend(f(&rows(&k[1], &all_hard, hkv * d)));
    let mut vf = f(&rows(&v[0], &all0, hkv * d));
    vf.extend(f(&rows(&v[1], &all_hard, hkv * d)));
    let mut kv_pos: Vec<i32> = all0.iter().map(|&p| p as i32).collect();
    kv_pos.extend(all_hard.iter().map(|&p| p as i32));
    let mut kv_depth = vec![0i32; SEQ];
    kv_depth.extend(vec![1i32; all_hard.len()]);
    let mut qf = Vec::new();
    for &(p, dd) in &issued {
        qf.extend(f(&q[dd][p * h * d..][..h * d]));
    }
    let q_pos: Vec<i32> = issued.iter().map(|x| x.0 as i32).collect();
    let q_depth: Vec<i32> = issued.iter().map(|x| x.1 as i32).collect();
    let total_kv = kv_pos.len();
    let kv_valid: Vec<u8> = (0..total_kv)
        .map(|j| u8::from(j >= SEQ || !PADDING.contains(&j)))
        .collect();
    let prob = aref::Problem {
        q: &qf,
        k: &kf,
        v: &vf,
        heads: h,
        kv_heads: hkv,
        head_dim: d,
        cu_q: &[0, issued.len() as i32],
        cu_kv: &[0, total_kv as i32],
        q_pos: &q_pos,
        kv_pos: &kv_pos,
        q_depth: &q_depth,
        kv_depth: &kv_depth,
        kv_valid: &kv_valid,
        scale,
        mode: aref::MaskMode::DuoCausal,
    };
    let (ro, rlse) = aref::attention(&prob);
    let nq = issued.len();
    let rlse_rows: Vec<f64> = (0..nq)
        .flat_map(|i| (0..h).map(move |hh| (i, hh)))
        .map(|(i, hh)| rlse[hh * nq + i])
        .collect();
    let e = rel_l2(&got_o, &ro);
    assert!(e <= 1e-2, "O rel L2 {e} on {}", dev.backend());
    let e = rel_l2(&got_lse, &rlse_rows);
    assert!(e <= 1e-2, "LSE rel L2 {e} on {}", dev.backend());
    // Not vacuous: ignoring the depths (plain causal over the same keys) is far off.
    let (co, _) = aref::attention(&aref::Problem {
        mode: aref::MaskMode::Causal,
        ..prob.clone()
    });
    let e = rel_l2(&got_o, &co);
    assert!(
        e > 5e-2,
        "causal-only mask agrees ({e}): the depths were not exercised"
    );
    eprintln!(
        "end_to_end on {}: {} queries, {} keys ({} hard), O rel L2 {:.2e}",
        dev.backend(),
        nq,
        total_kv,
        all_hard.len(),
        rel_l2(&got_o, &ro)
    );
}

#[test]
fn end_to_end_cpu() {
    end_to_end(&Device::cpu());
}

#[test]
fn end_to_end_simt_wave32() {
    end_to_end(&simt(32, Schedule::InOrder));
}

#[test]
fn end_to_end_simt_wave64() {
    end_to_end(&simt(64, Schedule::Shuffled(5)));
}

#[test]
#[ignore = "needs a CUDA or HIP GPU"]
fn gpu_end_to_end() {
    let dev = tessera::testing::gpu().expect("no CUDA or HIP device");
    end_to_end(&dev);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // No failure persistence: a failing case must not write into the source tree.
        #![proptest_config(ProptestConfig {
            cases: 12,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Random vocab, k, width and value patterns (distinct, few levels, signed zeros and
        /// infinities of the wrong side) on every executor: ids exact, outputs within 1e-5.
        #[test]
        fn next_depth_input_random(
            m in 0usize..4,
            vocab in 1usize..3000,
            kf in 0.0f64..1.0,
            d in 1usize..40,
            pattern in 0u8..3,
            seed: u64,
        ) {
            let k = 1 + ((vocab.min(256) - 1) as f64 * kf) as usize;
            let mut r = Rng(seed);
            let cum: Vec<f32> = (0..m * vocab)
                .map(|_| match pattern {
                    0 => ((r.unit() - 0.5) * 30.0) as f32,
                    1 => ((r.next_u64() % 5) as f32 - 2.0) * 0.5,
                    _ => match r.next_u64() % 4 {
                        0 => 0.0,
                        1 => -0.0,
                        2 => f32::NEG_INFINITY,
                        _ => (r.unit() - 0.7) as f32,
                    },
                })
                .collect();
            // The top-k must not be all -inf (the softmax is undefined then).
            let cum: Vec<f32> = cum
                .chunks(vocab.max(1))
                .flat_map(|row| {
                    let mut row = row.to_vec();
                    row[0] = 1.0;
                    row
                })
                .collect();
            let emb: Vec<f32> = (0..vocab * d).map(|_| (r.unit() - 0.5) as f32).collect();
            let case = NextInputCase {
                cum,
                vocab,
                k,
                emb,
                d,
                tol: tol::F32,
                label: format!("m={m} V={vocab} k={k} d={d} pattern {pattern}"),
            };
            for dev in devices() {
                let o = case.outcome(&dev);
                prop_assert!(o.pass(), "{} on {}: {:?}", case.label, dev.backend(), o.result);
            }
        }

        /// Random lengths and hard fractions: exact indices and counts on every executor.
        #[test]
        fn select_hard_random(n in 0usize..5000, frac in 0.0f64..1.0, seed: u64) {
            let mut r = Rng(seed);
            let scores: Vec<f32> = (0..n)
                .map(|_| if r.unit() < frac { 3.0 + r.unit() as f32 } else { r.unit() as f32 })
                .collect();
            let case = SelectCase { scores, threshold: 0.9, d: 1, seed };
            for dev in devices() {
                let rows = case.rows(&dev);
                prop_assert!(rows.iter().all(|r| r.pass), "{:?}", rows);
            }
        }
    }
}
