//! The fault suite: bugs planted in small kernels (`cuda/selftest/faults.cu`, `fault` argument;
//! `cuda/selftest/mma.cu` mode 3), each of which the host SIMT executor must catch. Every case
//! names the mechanism that catches it and checks that mechanism's own evidence (the race
//! detector's message, a wrong result only under the warp-skew schedule, the exact value poisoning
//! produces, the red zone's or the guard page's message, ...), on wave32 and wave64. Where the old
//! runtime missed a fault, the case also shows the blind spot: with the race detector off, the
//! in-order and shuffled schedules give the right answer.

use tessera::device::KernelArgs;
use tessera::{Device, LaunchConfig, Schedule, SimtConfig};

mod common;
use common::SelftestLaunch;

/// What catches a planted fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    /// The shared-memory race detector: the launch fails with "shared-memory race".
    RaceDetector,
    /// The warp-skew schedule: with the race detector off, some skew seed gives a wrong result
    /// while the in-order and shuffled schedules give the right one.
    WarpSkew,
    /// Static `__shared__` poisoned at block start: the result is exactly what 0xFF bytes give.
    StaticSharedPoison,
    /// The red zone after a buffer: the launch fails naming the buffer and the bytes.
    RedZone,
    /// The guard pages after the red zone: the far write faults inside the kernel and the launch
    /// fails naming the buffer, instead of corrupting other memory.
    GuardPage,
    /// The wave64 build compared with the reference (a wave-width bug is right on wave32).
    Wave64VsReference,
    /// The result compared with an f64 reference (a fragment-layout bug).
    Reference,
}

const SCHEDULES: [Schedule; 4] = [
    Schedule::InOrder,
    Schedule::Shuffled(3),
    Schedule::Shuffled(0x5eed_f00d),
    Schedule::Skewed(0x5eed_5e3d),
];

fn simt(wave: u32, schedule: Schedule, racecheck: bool) -> Device {
    Device::simt_with(SimtConfig {
        wave,
        schedule,
        workers: 2,
        racecheck,
    })
    .expect("SIMT device")
}

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn random_u32(n: usize, seed: u64, bits: u32) -> Vec<u32> {
    let mut r = rng(seed);
    (0..n).map(|_| (r() as u32) >> (32 - bits)).collect()
}

/// Mechanism::RaceDetector caught `what`: the launch failed with the detector's message.
fn assert_race(what: &str, d: &Device, r: tessera::Result<Vec<u32>>, kernel: &str) {
    let msg = match r {
        Ok(_) => panic!(
            "{what} on {d:?}: {:?} did not report it",
            Mechanism::RaceDetector
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("shared-memory race (")
            && msg.contains(&format!("in kernel {kernel} on "))
            && msg.contains(", byte ")
            && msg.contains(" it, then thread ("),
        "{what} on {d:?}: {msg}"
    );
}

/// With the race detector off: in order and shuffled give `want`; some skew seed does not.
fn assert_only_skew_catches(
    what: &str,
    wave: u32,
    want: &[u32],
    run: &dyn Fn(&Device) -> tessera::Result<Vec<u32>>,
) {
    for s in [
        Schedule::InOrder,
        Schedule::Shuffled(1),
        Schedule::Shuffled(2),
    ] {
        let d = simt(wave, s, false);
        assert_eq!(
            run(&d).unwrap(),
            want,
            "{what} on {d:?}: expected the blind spot (right answer) here"
        );
    }
    let wrong = (1..=8u64)
        .filter(|&seed| run(&simt(wave, Schedule::Skewed(seed), false)).unwrap() != want)
        .count();
    assert!(
        wrong > 0,
        "{what}, wave{wave}: no warp-skew seed exposed it (mechanism {:?})",
        Mechanism::WarpSkew
    );
}

// ---- missing barriers around a shared tile -----------------------------------------------------------

fn tile_pipeline(d: &Device, x: &[u32], ntiles: u32, fault: u32) -> tessera::Result<Vec<u32>> {
    let threads = 128u32;
    let blocks = x.len() as u32 / (threads * ntiles);
    let input = d.upload(x, "in")?;
    let mut out = d.alloc::<u32>((blocks * threads) as usize, "out")?;
    let mut a = KernelArgs::new();
    a.buf(&input).push(ntiles).buf_mut(&mut out).push(fault);
    d.launch(
        "selftest/faults",
        "selftest_tile_pipeline",
        &LaunchConfig::linear(blocks, threads, 0),
        &a,
    )?;
    out.download()
}

fn tile_pipeline_reference(x: &[u32], ntiles: usize, wave: usize) -> Vec<u32> {
    let n = 128usize;
    let blocks = x.len() / (n * ntiles);
    let mut out = vec![0u32; blocks * n];
    for b in 0..blocks {
        for t in 0..n {
            let w0 = t - t % wave;
            let mut acc = 0u32;
            for k in 0..ntiles {
                let tile = &x[(b * ntiles + k) * n..][..n];
                for l in w0..w0 + wave {
                    acc = acc.wrapping_add(tile[n - 1 - l]);
                }
            }
            out[b * n + t] = acc;
        }
    }
    out
}

#[test]
fn missing_barriers_around_a_shared_tile_are_caught() {
    let ntiles = 5u32;
    let x = random_u32(3 * 128 * ntiles as usize, 21, 20);
    for wave in [32u32, 64] {
        let want = tile_pipeline_reference(&x, ntiles as usize, wave as usize);
        for s in SCHEDULES {
            let d = simt(wave, s, true);
            assert_eq!(tile_pipeline(&d, &x, ntiles, 0).unwrap(), want, "{d:?}");
        }
        for (fault, what) in [
            (1u32, "missing barrier after the tile store"),
            (2, "missing barrier before the next tile overwrites it"),
        ] {
            for s in SCHEDULES {
                let d = simt(wave, s, true);
                assert_race(
                    what,
                    &d,
                    tile_pipeline(&d, &x, ntiles, fault),
                    "selftest_tile_pipeline",
                );
            }
            assert_only_skew_catches(what, wave, &want, &|d| tile_pipeline(d, &x, ntiles, fault));
        }
    }
}

fn ldmatrix_tile(d: &Device, x: &[u16], fault: u32) -> tessera::Result<Vec<u32>> {
    let input = d.upload(x, "in")?;
    let mut out = d.alloc::<u32>(128 * 4, "out")?;
    let mut a = KernelArgs::new();
    a.buf(&input).buf_mut(&mut out).push(fault);
    d.launch(
        "selftest/faults",
        "selftest_ldmatrix_tile",
        &LaunchConfig::linear(1, 128, 0),
        &a,
    )?;
    out.download()
}

#[test]
fn missing_barrier_before_ldmatrix_is_caught() {
    let mut r = rng(5);
    let x: Vec<u16> = (0..256).map(|_| r() as u16).collect();
    // ldmatrix.x4 from the PTX ISA: matrix j (rows 8(j%2).., cols 8(j/2)..); lane l gets row l/4,
    // columns 2(l%4) and 2(l%4)+1, low half first. Every warp reads the same tile.
    let mut want = Vec::new();
    for t in 0..128usize {
        let l = t % 32;
        for j in 0..4 {
            let row = 8 * (j % 2) + l / 4;
            let col = 8 * (j / 2) + 2 * (l % 4);
            want.push(u32::from(x[row * 16 + col]) | (u32::from(x[row * 16 + col + 1]) << 16));
        }
    }
    for s in SCHEDULES {
        let d = simt(32, s, true);
        assert_eq!(ldmatrix_tile(&d, &x, 0).unwrap(), want, "{d:?}");
        assert_race(
            "missing barrier before ldmatrix",
            &d,
            ldmatrix_tile(&d, &x, 1),
            "selftest_ldmatrix_tile",
        );
    }
    assert_only_skew_catches("missing barrier before ldmatrix", 32, &want, &|d| {
        ldmatrix_tile(d, &x, 1)
    });
}

// ---- a shared histogram: a race no schedule can show, and bins never zeroed --------------------------

fn histogram(d: &Device, x: &[u32], per_block: u32, fault: u32) -> tessera::Result<Vec<u32>> {
    let blocks = x.len() as u32 / per_block;
    let input = d.upload(x, "in")?;
    let mut hist = d.alloc::<u32>((blocks * 16) as usize, "hist")?;
    let mut a = KernelArgs::new();
    a.buf(&input).push(per_block).buf_mut(&mut hist).push(fault);
    d.launch(
        "selftest/faults",
        "selftest_shared_histogram",
        &LaunchConfig::linear(blocks, 128, 0),
        &a,
    )?;
    hist.download()
}

#[test]
fn shared_histogram_race_and_unzeroed_bins_are_caught() {
    let per_block = 1000u32;
    let x = random_u32(4 * per_block as usize, 8, 32);
    let mut want = vec![0u32; 4 * 16];
    for (i, v) in x.iter().enumerate() {
        want[i / per_block as usize * 16 + (v % 16) as usize] += 1;
    }
    for wave in [32u32, 64] {
        for s in SCHEDULES {
            let d = simt(wave, s, true);
            assert_eq!(histogram(&d, &x, per_block, 0).unwrap(), want, "{d:?}");
            assert_race(
                "non-atomic += on a shared histogram",
                &d,
                histogram(&d, &x, per_block, 1),
                "selftest_shared_histogram",
            );
            // Mechanism::StaticSharedPoison: every bin starts at 0xFFFFFFFF, so each count comes
            // out exactly one less (mod 2^32), on every block and every schedule.
            let poisoned: Vec<u32> = want.iter().map(|c| c.wrapping_sub(1)).collect();
            assert_eq!(
                histogram(&d, &x, per_block, 2).unwrap(),
                poisoned,
                "{d:?}: bins never zeroed must read the poison ({:?})",
                Mechanism::StaticSharedPoison
            );
        }
        // The blind spot: without the detector no schedule interleaves a fiber's read-modify-write.
        for s in SCHEDULES {
            let d = simt(wave, s, false);
            assert_eq!(histogram(&d, &x, per_block, 1).unwrap(), want, "{d:?}");
        }
    }
}

// ---- a reduction tree with one barrier missing -----------------------------------------------------

fn block_max(d: &Device, x: &[u32], threads: u32, fault: u32) -> tessera::Result<Vec<u32>> {
    let blocks = x.len() as u32 / threads;
    let input = d.upload(x, "in")?;
    let mut out = d.alloc::<u32>(blocks as usize, "max")?;
    let mut a = KernelArgs::new();
    a.buf(&input).buf_mut(&mut out).push(fault);
    d.launch(
        "selftest/faults",
        "selftest_block_max",
        &LaunchConfig::linear(blocks, threads, 0),
        &a,
    )?;
    out.download()
}

#[test]
fn missing_barrier_in_a_reduction_tree_is_caught_even_when_no_result_changes() {
    for threads in [64u32, 256] {
        let random = random_u32(3 * threads as usize, 13, 32);
        let flat = vec![7u32; 3 * threads as usize];
        for wave in [32u32, 64] {
            for (x, name) in [(&random, "random"), (&flat, "constant")] {
                let want: Vec<u32> = x
                    .chunks(threads as usize)
                    .map(|c| *c.iter().max().unwrap())
                    .collect();
                for s in SCHEDULES {
                    let d = simt(wave, s, true);
                    assert_eq!(block_max(&d, x, threads, 0).unwrap(), want, "{d:?}");
                    assert_race(
                        &format!("missing tree barrier ({name} data, {threads} threads)"),
                        &d,
                        block_max(&d, x, threads, 1),
                        "selftest_block_max",
                    );
                }
            }
            // On constant data the fault changes no result: only the race detector can see it.
            let want = vec![7u32; 3];
            for s in SCHEDULES {
                let d = simt(wave, s, false);
                assert_eq!(block_max(&d, &flat, threads, 1).unwrap(), want, "{d:?}");
            }
        }
    }
}

// ---- wave width, out of bounds, fragments ------------------------------------------------------------

#[test]
fn hard_coded_warp_width_is_caught_by_the_wave64_run() {
    let x = random_u32(256, 17, 24);
    for wave in [32usize, 64] {
        let want: Vec<u32> = x
            .chunks(wave)
            .flat_map(|c| {
                let s = c.iter().fold(0u32, |a, &v| a.wrapping_add(v));
                std::iter::repeat_n(s, wave)
            })
            .collect();
        for s in SCHEDULES {
            let d = simt(wave as u32, s, true);
            let run = |fault: u32| {
                let input = d.upload(&x, "in").unwrap();
                let mut out = d.alloc::<u32>(x.len(), "out").unwrap();
                let mut a = KernelArgs::new();
                a.buf(&input).buf_mut(&mut out).push(fault);
                d.launch(
                    "selftest/faults",
                    "selftest_warp_sum",
                    &LaunchConfig::linear(2, 128, 0),
                    &a,
                )
                .unwrap();
                out.download().unwrap()
            };
            assert_eq!(run(0), want, "{d:?}");
            if wave == 32 {
                assert_eq!(run(1), want, "{d:?}: the bug is invisible on 32-lane warps");
            } else {
                assert_ne!(
                    run(1),
                    want,
                    "{d:?}: {:?} must catch the hard-coded width",
                    Mechanism::Wave64VsReference
                );
            }
        }
    }
}

fn far_write(d: &Device, n: u32, far: u32) -> (tessera::Result<()>, Vec<u32>) {
    let x = random_u32(n as usize, 4, 30);
    let input = d.upload(&x, "in").unwrap();
    let mut out = d.alloc::<u32>(n as usize, "row_block").unwrap();
    let mut a = KernelArgs::new();
    a.buf(&input)
        .push(n)
        .push(far)
        .buf_mut(&mut out)
        .push(u32::from(far != u32::MAX));
    let r = d.launch(
        "selftest/faults",
        "selftest_far_write",
        &LaunchConfig::linear(n.div_ceil(64), 64, 0),
        &a,
    );
    let got = out.download().unwrap();
    let want: Vec<u32> = x.iter().map(|v| 2 * v).collect();
    (r, if got == want { got } else { Vec::new() })
}

#[test]
fn out_of_bounds_writes_near_and_far_are_caught() {
    for wave in [32u32, 64] {
        for s in SCHEDULES {
            let d = simt(wave, s, true);
            // A whole 1024-element row (and more) past the end: the guard pages.
            for far in [1024u32, 3 * 1024 + 5, 60_000] {
                let msg = far_write(&d, 1000, far)
                    .0
                    .expect_err("far write")
                    .to_string();
                assert!(
                    msg.contains("selftest_far_write")
                        && msg.contains("segmentation fault")
                        && msg.contains("guard pages after buffer \"row_block\"")
                        && msg.contains(&format!("{} bytes past its end", 4 * far as u64)),
                    "{d:?} ({:?}), far {far}: {msg}",
                    Mechanism::GuardPage
                );
            }
            // Just past the end: the red zone (the launch completes, so every in-bounds element
            // was written too).
            let (r, got) = far_write(&d, 1000, 3);
            assert_eq!(got.len(), 1000, "{d:?}: in-bounds part");
            let msg = r.expect_err("near write").to_string();
            assert!(
                msg.contains("red zone after buffer \"row_block\"")
                    && msg.contains("offsets 12..16 past its end"),
                "{d:?} ({:?}): {msg}",
                Mechanism::RedZone
            );
            // The runtime recovered: a clean launch on the same device works.
            let (r, got) = far_write(&d, 1000, u32::MAX);
            assert!(r.is_ok() && got.len() == 1000, "{d:?}");
        }
    }
}

#[test]
fn off_by_one_is_caught_by_the_red_zone() {
    for wave in [32u32, 64] {
        let d = simt(wave, Schedule::Skewed(1), true);
        let x = random_u32(100, 3, 30);
        let input = d.upload(&x, "input").unwrap();
        let mut out = d.alloc::<u32>(100, "doubled").unwrap();
        let mut a = KernelArgs::new();
        a.buf(&input).push(100u32).buf_mut(&mut out);
        let msg = d
            .launch(
                "selftest/faults",
                "selftest_off_by_one",
                &LaunchConfig::linear(2, 64, 0),
                &a,
            )
            .expect_err("off by one")
            .to_string();
        assert!(
            msg.contains("red zone after buffer \"doubled\"") && msg.contains("offsets 0..4"),
            "{:?}: {msg}",
            Mechanism::RedZone
        );
    }
}

#[test]
fn swapped_fragment_rows_are_caught_by_the_reference() {
    // One 16x16 * 16x8 bf16 tile through selftest_mma_m16n8k16: mode 0 is right, mode 3 swaps
    // A's rows g and g + 8 in the fragment (a layout bug).
    let mut r = rng(99);
    let mut uni = move || ((r() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32;
    let a: Vec<half::bf16> = (0..256).map(|_| half::bf16::from_f32(uni())).collect();
    let b: Vec<half::bf16> = (0..128).map(|_| half::bf16::from_f32(uni())).collect();
    let c: Vec<f32> = (0..128).map(|_| uni()).collect();
    let mut want = vec![0f64; 128];
    for i in 0..16 {
        for j in 0..8 {
            want[i * 8 + j] = c[i * 8 + j] as f64
                + (0..16)
                    .map(|k| a[i * 16 + k].to_f64() * b[k * 8 + j].to_f64())
                    .sum::<f64>();
        }
    }
    let bits = |v: &[half::bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>();
    for s in SCHEDULES {
        let d = simt(32, s, true);
        let run = |mode: u32| {
            let da = d.upload(&bits(&a), "a").unwrap();
            let db = d.upload(&bits(&b), "b").unwrap();
            let dc = d.upload(&c, "c").unwrap();
            let mut out = d.alloc::<f32>(128, "d").unwrap();
            let mut args = KernelArgs::new();
            args.buf(&da)
                .buf(&db)
                .buf(&dc)
                .buf_mut(&mut out)
                .push(1u32)
                .push(1u32)
                .push(0u32)
                .push(0u32)
                .push(mode);
            d.launch(
                "selftest/mma",
                "selftest_mma_m16n8k16",
                &LaunchConfig::linear(1, 32, 0),
                &args,
            )
            .unwrap();
            tessera::testing::rel_l2(&out.download().unwrap(), &want)
        };
        assert!(run(0) < 1e-5, "{d:?}");
        let err = run(3);
        assert!(
            err > 0.1,
            "{d:?}: swapped fragment rows give only {err:e} ({:?})",
            Mechanism::Reference
        );
    }
}
