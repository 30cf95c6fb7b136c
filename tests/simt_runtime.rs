//! The host SIMT runtime, tested through the public API with the kernels in `cuda/selftest`:
//! every kernel against a Rust computation on random inputs, on wave32 and wave64, in order and
//! with shuffled schedules, and the three planted faults (missing barrier, write past the end,
//! divergent barrier) caught.

use tessera::device::KernelArgs;
use tessera::{Device, LaunchConfig, Schedule, SimtConfig};

mod common;
use common::SelftestLaunch;

const SCHEDULES: [Schedule; 4] = [
    Schedule::InOrder,
    Schedule::Shuffled(1),
    Schedule::Shuffled(0x5eed_cafe),
    Schedule::Skewed(0x5eed_beef),
];

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

fn random_u32(n: usize, seed: u64) -> Vec<u32> {
    let mut r = rng(seed);
    (0..n).map(|_| r() as u32).collect()
}

fn dev(wave: u32, schedule: Schedule) -> Device {
    Device::simt_with(SimtConfig {
        wave,
        schedule,
        workers: 2,
        ..Default::default()
    })
    .expect("SIMT device")
}

/// A SIMT device with the race detector off, to show what the schedules alone catch.
fn dev_unchecked(wave: u32, schedule: Schedule) -> Device {
    Device::simt_with(SimtConfig {
        wave,
        schedule,
        workers: 2,
        racecheck: false,
    })
    .expect("SIMT device")
}

/// Every (wave, schedule) combination.
fn devices() -> Vec<Device> {
    [32, 64]
        .into_iter()
        .flat_map(|w| SCHEDULES.into_iter().map(move |s| dev(w, s)))
        .collect()
}

fn wave(d: &Device) -> usize {
    match d.backend() {
        tessera::Backend::Simt(c) => c.wave as usize,
        b => panic!("not SIMT: {b}"),
    }
}

#[test]
fn kernels_are_registered_on_both_waves() {
    for w in [32, 64] {
        let d = dev(w, Schedule::InOrder);
        let names = d.kernel_names();
        for k in [
            "selftest_block_sum",
            "selftest_warp_scan",
            "selftest_histogram",
            "selftest_ballot",
        ] {
            assert!(names.iter().any(|n| n == k), "wave{w} lacks {k}: {names:?}");
        }
        assert!(
            d.describe().contains(&format!("wave{w}")),
            "{}",
            d.describe()
        );
    }
    assert!(Device::simt_with(SimtConfig {
        wave: 16,
        ..Default::default()
    })
    .is_err());
}

#[test]
fn block_sum_static_and_dynamic_shared() {
    for d in devices() {
        for (n, threads) in [(1000usize, 256u32), (4096, 1024), (77, 64)] {
            let data = random_u32(n, n as u64);
            let blocks = n.div_ceil(threads as usize);
            let want: Vec<u32> = data
                .chunks(threads as usize)
                .map(|c| c.iter().fold(0u32, |a, &b| a.wrapping_add(b)))
                .collect();
            let input = d.upload(&data, "in").unwrap();
            for (kernel, shared) in [
                ("selftest_block_sum", 0u32),
                (
                    "selftest_block_sum_warp",
                    4 * (threads / wave(&d) as u32).max(1),
                ),
            ] {
                let mut out = d.alloc::<u32>(blocks, "out").unwrap();
                let mut a = KernelArgs::new();
                a.buf(&input).push(n as u32).buf_mut(&mut out);
                let cfg = LaunchConfig::linear(blocks as u32, threads, shared);
                d.launch("selftest/reduce", kernel, &cfg, &a)
                    .unwrap_or_else(|e| panic!("{d:?} {kernel}: {e}"));
                assert_eq!(
                    out.download().unwrap(),
                    want,
                    "{d:?} {kernel} n={n} threads={threads}"
                );
            }
        }
    }
}

#[test]
fn warp_inclusive_scan_u32_u64_and_rotate() {
    for d in devices() {
        let w = wave(&d);
        // 96 threads: on wave64 the second warp is partial (32 lanes).
        for (n, threads) in [(1000usize, 128u32), (500, 96)] {
            let data: Vec<u32> = random_u32(n, 7).into_iter().map(|x| x >> 8).collect();
            let mut want = vec![0u32; n];
            let mut want64 = vec![0u64; n];
            let data64: Vec<u64> = data.iter().map(|&x| (x as u64) << 20 | 3).collect();
            for i in 0..n {
                let lane = (i % threads as usize) % w;
                want[i] = if lane == 0 {
                    data[i]
                } else {
                    want[i - 1].wrapping_add(data[i])
                };
                want64[i] = if lane == 0 {
                    data64[i]
                } else {
                    want64[i - 1].wrapping_add(data64[i])
                };
            }
            let blocks = n.div_ceil(threads as usize) as u32;
            let cfg = LaunchConfig::linear(blocks, threads, 0);

            let input = d.upload(&data, "in").unwrap();
            let mut out = d.alloc::<u32>(n, "out").unwrap();
            let mut a = KernelArgs::new();
            a.buf(&input).push(n as u32).buf_mut(&mut out);
            d.launch("selftest/scan", "selftest_warp_scan", &cfg, &a)
                .unwrap();
            assert_eq!(out.download().unwrap(), want, "{d:?} u32 threads={threads}");

            let input = d.upload(&data64, "in64").unwrap();
            let mut out = d.alloc::<u64>(n, "out64").unwrap();
            let mut a = KernelArgs::new();
            a.buf(&input).push(n as u32).buf_mut(&mut out);
            d.launch("selftest/scan", "selftest_warp_scan_u64", &cfg, &a)
                .unwrap();
            assert_eq!(
                out.download().unwrap(),
                want64,
                "{d:?} u64 threads={threads}"
            );
        }
        // rotate: full warps only
        let n = 4 * 128;
        let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let input = d.upload(&data, "in").unwrap();
        let mut out = d.alloc::<f32>(n, "out").unwrap();
        let mut a = KernelArgs::new();
        a.buf(&input).buf_mut(&mut out);
        d.launch(
            "selftest/scan",
            "selftest_warp_rotate",
            &LaunchConfig::linear(4, 128, 0),
            &a,
        )
        .unwrap();
        let want: Vec<f32> = (0..n).map(|i| data[i - i % w + (i % w + 1) % w]).collect();
        assert_eq!(out.download().unwrap(), want, "{d:?} rotate");
    }
}

#[test]
fn histogram_with_shared_and_global_atomics() {
    for d in devices() {
        let n = 5000usize;
        let nbins = 37u32;
        let data: Vec<u32> = random_u32(n, 99).into_iter().map(|x| x % 100_000).collect();
        let mut want = vec![0u32; nbins as usize];
        for &x in &data {
            want[(x % nbins) as usize] += 1;
        }
        let fsum: f32 = data.iter().map(|&x| (x % 16) as f32).sum();
        let input = d.upload(&data, "in").unwrap();
        let mut hist = d.upload(&vec![0u32; nbins as usize], "hist").unwrap();
        let mut count = d.upload(&[0u64], "count").unwrap();
        let mut fs = d.upload(&[0f32], "fsum").unwrap();
        let mut mx = d.upload(&[0u32], "max").unwrap();
        let mut a = KernelArgs::new();
        a.buf(&input)
            .push(n as u32)
            .push(nbins)
            .buf_mut(&mut hist)
            .buf_mut(&mut count)
            .buf_mut(&mut fs)
            .buf_mut(&mut mx);
        d.launch(
            "selftest/histogram",
            "selftest_histogram",
            &LaunchConfig::linear(4, 128, 0),
            &a,
        )
        .unwrap();
        assert_eq!(hist.download().unwrap(), want, "{d:?}");
        assert_eq!(count.download().unwrap(), vec![n as u64]);
        assert_eq!(fs.download().unwrap(), vec![fsum]);
        assert_eq!(mx.download().unwrap(), vec![*data.iter().max().unwrap()]);
    }
}

#[test]
fn syncthreads_count_and_or_and_ballot() {
    for d in devices() {
        let w = wave(&d);
        let threads = 256usize;
        let blocks = 3usize;
        let mut data = random_u32(threads * blocks, 5);
        // block 1: all above the threshold; block 2: none
        for x in &mut data[threads..2 * threads] {
            *x |= 0x8000_0000;
        }
        for x in &mut data[2 * threads..] {
            *x &= 0x7fff_ffff;
        }
        let thr = 0x7fff_ffffu32;
        let input = d.upload(&data, "in").unwrap();
        let mut out = d.alloc::<u32>(3 * blocks, "votes").unwrap();
        let mut a = KernelArgs::new();
        a.buf(&input).push(thr).buf_mut(&mut out);
        let cfg = LaunchConfig::linear(blocks as u32, threads as u32, 0);
        d.launch("selftest/votes", "selftest_sync_votes", &cfg, &a)
            .unwrap();
        let mut want = Vec::new();
        for b in data.chunks(threads) {
            let c = b.iter().filter(|&&x| x > thr).count() as u32;
            want.extend([c, (c == threads as u32) as u32, (c > 0) as u32]);
        }
        assert_eq!(out.download().unwrap(), want, "{d:?}");

        let nwarps = threads * blocks / w;
        let mut ballots = d.alloc::<u64>(nwarps, "ballots").unwrap();
        let mut anyall = d.alloc::<u32>(2 * nwarps, "anyall").unwrap();
        let mut a = KernelArgs::new();
        a.buf(&input)
            .push(thr)
            .buf_mut(&mut ballots)
            .buf_mut(&mut anyall);
        d.launch("selftest/votes", "selftest_ballot", &cfg, &a)
            .unwrap();
        let mut wb = Vec::new();
        let mut wa = Vec::new();
        for c in data.chunks(w) {
            let m = c
                .iter()
                .enumerate()
                .fold(0u64, |m, (l, &x)| m | (((x > thr) as u64) << l));
            wb.push(m);
            wa.extend([(m != 0) as u32, (c.iter().all(|&x| x > thr)) as u32]);
        }
        assert_eq!(ballots.download().unwrap(), wb, "{d:?}");
        assert_eq!(anyall.download().unwrap(), wa, "{d:?}");
    }
}

fn neighbor_sum(d: &Device, kernel: &str, data: &[u32], threads: u32) -> tessera::Result<Vec<u32>> {
    let input = d.upload(data, "in")?;
    let mut out = d.alloc::<u32>(data.len(), "out")?;
    let mut a = KernelArgs::new();
    a.buf(&input).buf_mut(&mut out);
    let cfg = LaunchConfig::linear(data.len() as u32 / threads, threads, 4 * threads);
    d.launch("selftest/faults", kernel, &cfg, &a)?;
    out.download()
}

/// Fault 1: a missing barrier. The race detector reports it on every schedule, naming the kernel,
/// the memory, the offset and both threads. With the detector off, in order it happens to work and
/// some shuffled seed exposes it, while the correct variant is right on every seed.
#[test]
fn missing_barrier_is_exposed_by_the_race_detector_and_shuffled_schedules() {
    let threads = 128u32;
    let data: Vec<u32> = random_u32(4 * threads as usize, 11)
        .into_iter()
        .map(|x| x >> 4)
        .collect();
    let want: Vec<u32> = (0..data.len())
        .map(|i| {
            data[i]
                + if i % threads as usize > 0 {
                    data[i - 1]
                } else {
                    0
                }
        })
        .collect();
    for w in [32, 64] {
        for s in SCHEDULES {
            let d = dev(w, s);
            assert_eq!(
                neighbor_sum(&d, "selftest_neighbor_sum", &data, threads).unwrap(),
                want,
                "{d:?}"
            );
            let msg = neighbor_sum(&d, "selftest_neighbor_sum_racy", &data, threads)
                .expect_err("the race detector must report the missing barrier")
                .to_string();
            assert!(
                (msg.contains("shared-memory race (read after write)")
                    || msg.contains("shared-memory race (write after read)"))
                    && msg.contains("in kernel selftest_neighbor_sum_racy")
                    && msg.contains("dynamic shared memory, byte ")
                    && msg.contains(" it, then thread ("),
                "{d:?}: {msg}"
            );
        }
        assert_eq!(
            neighbor_sum(
                &dev_unchecked(w, Schedule::InOrder),
                "selftest_neighbor_sum_racy",
                &data,
                threads
            )
            .unwrap(),
            want
        );
        let mut wrong = 0;
        for seed in 1..=6u64 {
            let d = dev_unchecked(w, Schedule::Shuffled(seed));
            if neighbor_sum(&d, "selftest_neighbor_sum_racy", &data, threads).unwrap() != want {
                wrong += 1;
            }
        }
        assert!(
            wrong > 0,
            "wave{w}: no shuffled seed exposed the missing barrier"
        );
    }
}

/// Fault 2: a write one element past the end is caught by the red zone, naming kernel and buffer.
#[test]
fn write_past_the_end_is_caught_by_the_red_zone() {
    for d in devices() {
        let n = 100usize;
        let data = random_u32(n, 3);
        let input = d.upload(&data, "input").unwrap();
        let mut out = d.alloc::<u32>(n, "doubled").unwrap();
        let mut a = KernelArgs::new();
        a.buf(&input).push(n as u32).buf_mut(&mut out);
        let err = d
            .launch(
                "selftest/faults",
                "selftest_off_by_one",
                &LaunchConfig::linear(2, 64, 0),
                &a,
            )
            .expect_err("the overwrite must be reported");
        let msg = err.to_string();
        assert!(msg.contains("selftest_off_by_one"), "{msg}");
        assert!(msg.contains("\"doubled\""), "{msg}");
        assert!(msg.contains("past its end"), "{msg}");
        assert!(msg.contains("offsets 0..4"), "{msg}");
        // The payload was written; the red zone was repaired, so the next clean launch passes.
        let got = out.download().unwrap();
        assert_eq!(
            got,
            data.iter().map(|x| x.wrapping_mul(2)).collect::<Vec<_>>()
        );
        let mut out2 = d.alloc::<u32>(n + 1, "roomy").unwrap();
        let mut a = KernelArgs::new();
        a.buf(&input).push(n as u32).buf_mut(&mut out2);
        d.launch(
            "selftest/faults",
            "selftest_off_by_one",
            &LaunchConfig::linear(2, 64, 0),
            &a,
        )
        .unwrap();
    }
}

/// Fault 3: __syncthreads in a branch only some threads take is an error naming kernel, block and
/// thread, not a hang.
#[test]
fn divergent_barrier_is_reported_not_hung() {
    for d in devices() {
        let mut out = d.alloc::<u32>(3 * 64, "out").unwrap();
        let mut a = KernelArgs::new();
        a.buf_mut(&mut out).push(16u32);
        let cfg = LaunchConfig {
            grid: [1, 3, 1],
            block: [64, 1, 1],
            shared_bytes: 0,
        };
        let err = d
            .launch("selftest/faults", "selftest_divergent_barrier", &cfg, &a)
            .expect_err("divergent barrier must be reported");
        let msg = err.to_string();
        assert!(msg.contains("selftest_divergent_barrier"), "{msg}");
        assert!(msg.contains("block (0,"), "{msg}");
        assert!(msg.contains("thread (16,0,0) exited"), "{msg}");
        assert!(msg.contains("16 of 64 threads"), "{msg}");
        assert!(msg.contains("selftest/faults.cu:"), "{msg}");
    }
}

#[test]
fn launch_errors_are_clear() {
    let d = dev(32, Schedule::InOrder);
    let mut out = d.alloc::<u32>(64, "out").unwrap();
    let cfg = LaunchConfig::linear(1, 64, 0);
    let e = d
        .launch("selftest/x", "no_such_kernel", &cfg, &KernelArgs::new())
        .unwrap_err();
    assert!(
        e.to_string().contains("no_such_kernel") && e.to_string().contains("no such kernel"),
        "{e}"
    );
    let mut a = KernelArgs::new();
    a.buf_mut(&mut out).push(16u64);
    let e = d
        .launch("selftest/faults", "selftest_divergent_barrier", &cfg, &a)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("argument 1 (counting from 0) is 8 bytes, kernel expects 4"),
        "{e}"
    );
    let mut a = KernelArgs::new();
    a.buf_mut(&mut out);
    let e = d
        .launch("selftest/faults", "selftest_divergent_barrier", &cfg, &a)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("kernel takes 2 arguments, launch passed 1"),
        "{e}"
    );
    let mut a = KernelArgs::new();
    a.buf_mut(&mut out).push(0u32);
    let e = d
        .launch(
            "selftest/faults",
            "selftest_divergent_barrier",
            &LaunchConfig::linear(1, 2048, 0),
            &a,
        )
        .unwrap_err();
    assert!(e.to_string().contains("1..1024"), "{e}");
    // the kernel works when every thread skips the barrier
    d.launch("selftest/faults", "selftest_divergent_barrier", &cfg, &a)
        .unwrap();
    assert_eq!(out.download().unwrap(), (0..64).collect::<Vec<u32>>());
}

/// Times one 256-thread block with 20 barriers (target: well under 0.5 ms).
#[test]
fn barrier_cost_of_one_block() {
    for w in [32, 64] {
        let d = Device::simt_with(SimtConfig {
            wave: w,
            schedule: Schedule::InOrder,
            workers: 1,
            ..Default::default()
        })
        .unwrap();
        let mut out = d.alloc::<u32>(256, "out").unwrap();
        let mut a = KernelArgs::new();
        a.buf_mut(&mut out).push(10u32);
        let cfg = LaunchConfig::linear(1, 256, 0);
        d.launch("selftest/reduce", "selftest_barrier_loop", &cfg, &a)
            .unwrap();
        let reps = 50;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            d.launch("selftest/reduce", "selftest_barrier_loop", &cfg, &a)
                .unwrap();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
        println!("wave{w}: one 256-thread block with 20 barriers: {us:.1} us per launch");
        // out[t] after 10 rounds of acc += acc[(t+1) % 256]
        let mut acc: Vec<u32> = (0..256).collect();
        for _ in 0..10 {
            let prev = acc.clone();
            for t in 0..256 {
                acc[t] = prev[t].wrapping_add(prev[(t + 1) % 256]);
            }
        }
        assert_eq!(out.download().unwrap(), acc);
    }
}

/// A kernel exported with TESSERA_EXPORT_BLOCK refuses any other block on SIMT, with a message
/// naming the kernel, the block it requires and the block given; the right block runs.
#[test]
fn a_kernel_with_an_exported_block_refuses_another() {
    for w in [32, 64] {
        let d = dev(w, Schedule::InOrder);
        let input = d.upload(&random_u32(256, 5), "in").unwrap();
        let mut out = d.alloc::<u32>(256, "out").unwrap();
        for (block, given) in [([64u32, 1, 1], "(64,1,1)"), ([128, 2, 1], "(128,2,1)")] {
            let mut a = KernelArgs::new();
            a.buf(&input).push(1u32).buf_mut(&mut out).push(0u32);
            let cfg = LaunchConfig {
                grid: [1, 1, 1],
                block,
                shared_bytes: 0,
            };
            let e = d
                .launch("selftest/faults", "selftest_tile_pipeline", &cfg, &a)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("kernel selftest_tile_pipeline requires block (128,1,1)")
                    && e.contains(&format!("launch gave {given}")),
                "wave{w}: {e}"
            );
        }
        let mut a = KernelArgs::new();
        a.buf(&input).push(1u32).buf_mut(&mut out).push(0u32);
        d.launch(
            "selftest/faults",
            "selftest_tile_pipeline",
            &LaunchConfig::linear(2, 128, 0),
            &a,
        )
        .unwrap_or_else(|e| panic!("wave{w}: {e}"));
    }
}

/// The kernel table of each wave: every registered kernel with the block its source exports and
/// its argument sizes, the same kernels the device lists.
#[test]
fn the_kernel_table_reports_blocks_and_argument_sizes() {
    use tessera::device::simt::{simt_kernels, SimtKernel};
    assert_eq!(simt_kernels(16), None);
    for w in [32, 64] {
        let table = simt_kernels(w).expect("wave32 and wave64 tables");
        let find = |name: &str| -> &SimtKernel {
            table
                .iter()
                .find(|k| k.name == name)
                .unwrap_or_else(|| panic!("wave{w} table lacks {name}"))
        };
        // TESSERA_EXPORT_BLOCK(selftest_tile_pipeline, kTileThreads): (in, ntiles, out, fault).
        let k = find("selftest_tile_pipeline");
        assert_eq!((k.block, k.param_sizes.clone()), (128, vec![8, 4, 8, 4]));
        // TESSERA_EXPORT: any block. (in, n, out).
        let k = find("selftest_block_sum");
        assert_eq!((k.block, k.param_sizes.clone()), (0, vec![8, 4, 8]));
        // ops' kernels carry the block their launch sites use.
        assert_eq!(find("bitmask_popcount").block, 256);
        assert_eq!(find("codec_minmax").block, 256);
        assert_eq!(find("tah_accumulate_f32").block, 256);
        let names: Vec<String> = table.iter().map(|k| k.name.clone()).collect();
        assert_eq!(names, dev(w, Schedule::InOrder).kernel_names(), "wave{w}");
    }
}
