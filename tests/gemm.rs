//! `gemm.dense`, `gemm.grouped` and `gemm.grouped_swiglu` on every executor present (CPU path;
//! host SIMT wave32 and wave64, each in order and with two shuffled schedules, race detector on,
//! red zones and poisoned outputs from the SIMT allocator; CUDA/HIP when a GPU is present)
//! against the f64 reference (relative L2 within 1e-2), and their bad-input errors.

use std::sync::Mutex;

use half::{bf16, f16};
use proptest::prelude::*;
use tessera::ops::gemm::{self, Activation, Epilogue};
use tessera::testing::{simt, tol};
use tessera::verify::gemm::{type_pairs, Epi, GemmCase, Groups};
use tessera::{Device, Error, Schedule};

/// CPU, SIMT wave32 / wave64 in order and shuffled twice, and any GPU.
fn devices() -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        for s in [
            Schedule::InOrder,
            Schedule::Shuffled(0x6e33),
            Schedule::Shuffled(0x6e34),
        ] {
            d.push(simt(wave, s, 2));
        }
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

/// CPU, one shuffled SIMT device per wave width, and any GPU (for the larger sweeps).
fn few_devices(seed: u64) -> Vec<Device> {
    let mut d = vec![Device::cpu()];
    for wave in [32, 64] {
        d.push(simt(wave, Schedule::Shuffled(seed), 2));
    }
    d.extend(Device::cuda(0).ok());
    d.extend(Device::hip(0).ok());
    d
}

/// The worst relative L2 error seen over the kernels (not the CPU path), printed at the end of
/// each test (`--nocapture`).
static WORST: Mutex<(f64, String)> = Mutex::new((0.0, String::new()));

fn check_pair(
    devs: &[Device],
    c: &GemmCase,
    pair: &str,
    run: fn(&GemmCase, &Device) -> tessera::verify::Outcome,
) {
    for dev in devs {
        let o = run(c, dev);
        assert!(
            o.pass(),
            "{} {pair} on {}: error {}: {}",
            c.label,
            dev.backend(),
            o.error,
            o.result.unwrap_err()
        );
        if dev.backend().runs_kernels() {
            if let Ok(e) = o.error.parse::<f64>() {
                let mut w = WORST.lock().unwrap();
                if e > w.0 {
                    *w = (e, format!("{} {pair} on {}", c.label, dev.backend()));
                }
            }
        }
    }
}

fn check(devs: &[Device], c: &GemmCase) {
    let pairs = type_pairs();
    // bf16 -> f32 and f16 -> bf16 (both input types, a rounded and an f32 output).
    for &(name, run) in [&pairs[0], &pairs[4]] {
        check_pair(devs, c, name, run);
    }
}

fn report(test: &str) {
    let w = WORST.lock().unwrap();
    eprintln!("{test}: worst kernel rel-L2 so far {:.3e} ({})", w.0, w.1);
    assert!(w.0 <= tol::HALF);
}

/// The verify rows' cases on every executor.
#[test]
fn verify_cases_on_every_executor() {
    let devs = devices();
    for (j, &(m, n, k, g, e)) in tessera::verify::gemm::cases().iter().enumerate() {
        check(&devs, &GemmCase::generate(m, n, k, g, e, 0x7e57 + j as u64));
    }
    report("verify_cases_on_every_executor");
}

/// Every (input, output) type pair with the full epilogue, dense and grouped.
#[test]
fn every_type_pair() {
    let devs = few_devices(5);
    let dense = GemmCase::generate(70, 90, 72, Groups::Dense, Epi::all(Activation::GeluTanh), 3);
    let grouped = GemmCase::generate(90, 40, 40, Groups::Uniform(3), Epi::SWIGLU_ALL, 4);
    for (name, run) in type_pairs() {
        check_pair(&devs, &dense, name, run);
        check_pair(&devs, &grouped, name, run);
    }
    report("every_type_pair");
}

/// Each epilogue on its own and combined, dense and grouped (one-buffer and two-buffer SwiGLU).
#[test]
fn every_epilogue() {
    let devs = few_devices(6);
    let mut epis = vec![Epi::NONE, Epi::SWIGLU, Epi::SWIGLU_ALL];
    for act in Activation::ALL {
        epis.push(Epi::act(act));
        epis.push(Epi::all(act));
    }
    epis.push(Epi {
        bias: true,
        ..Epi::NONE
    });
    epis.push(Epi {
        row_scale: true,
        ..Epi::NONE
    });
    epis.push(Epi {
        residual: true,
        ..Epi::NONE
    });
    for (j, &e) in epis.iter().enumerate() {
        check(
            &devs,
            &GemmCase::generate(45, 70, 40, Groups::Dense, e, 100 + j as u64),
        );
        check(
            &devs,
            &GemmCase::generate(60, 35, 24, Groups::Uniform(4), e, 200 + j as u64),
        );
    }
    for (j, e) in [
        Epi::SWIGLU_TWO,
        Epi {
            bias: true,
            row_scale: true,
            residual: true,
            ..Epi::SWIGLU_TWO
        },
    ]
    .into_iter()
    .enumerate()
    {
        check(
            &devs,
            &GemmCase::generate(70, 30, 32, Groups::Skewed(6), e, 300 + j as u64),
        );
    }
    report("every_epilogue");
}

/// Grouping edge cases: empty groups, one-row groups, skewed sizes, everything in one group,
/// rows outside every group, one group, many groups (more than a block's worth of the scan),
/// groups that start mid-tile, and M = 0 with groups.
#[test]
fn grouped_shapes() {
    let devs = few_devices(7);
    let cases = [
        (130, 24, 16, Groups::Skewed(12)),
        (200, 20, 24, Groups::AllInOne(5)),
        (129, 17, 8, Groups::Outside(3)),
        (77, 9, 9, Groups::Uniform(1)),
        (300, 8, 16, Groups::Uniform(300)),
        (40, 8, 16, Groups::Skewed(600)),
        (0, 16, 16, Groups::Uniform(3)),
        (5, 16, 16, Groups::Uniform(8)),
    ];
    for (j, &(m, n, k, g)) in cases.iter().enumerate() {
        for e in [Epi::all(Activation::Silu), Epi::SWIGLU] {
            check(&devs, &GemmCase::generate(m, n, k, g, e, 400 + j as u64));
        }
    }
    // Explicit offsets: empty first and last groups, a one-row group, a gap before and after.
    let mut c = GemmCase::generate(50, 20, 24, Groups::Uniform(5), Epi::NONE, 9);
    c.offsets = Some(vec![3, 3, 4, 20, 20, 41]);
    c.label = "50x20x24 offsets [3,3,4,20,20,41]".into();
    check(&devs, &c);
    report("grouped_shapes");
}

/// Zero, one and prime sizes; K not a multiple of 8 (element loads) and of the tile.
#[test]
fn edge_sizes() {
    let devs = few_devices(8);
    let shapes = [
        (0, 5, 7),
        (5, 0, 7),
        (5, 7, 0),
        (1, 1, 1),
        (1, 131, 17),
        (131, 1, 31),
        (127, 129, 8),
        (128, 128, 32),
        (3, 5, 33),
        (17, 13, 97),
    ];
    for (j, &(m, n, k)) in shapes.iter().enumerate() {
        // GELU erf without a bias at K = 0: erf of exactly 0 (the reference once looped on it).
        for e in [
            Epi::all(Activation::GeluErf),
            Epi::act(Activation::GeluErf),
            Epi::SWIGLU_ALL,
        ] {
            check(
                &devs,
                &GemmCase::generate(m, n, k, Groups::Dense, e, 500 + j as u64),
            );
        }
        check(
            &devs,
            &GemmCase::generate(m, n, k, Groups::Uniform(3), Epi::SWIGLU_TWO, 600 + j as u64),
        );
    }
    report("edge_sizes");
}

/// `_into` writes every element of a NaN-filled buffer; a deferred check is pending on the
/// kernels and passes.
#[test]
fn into_and_deferred() {
    for dev in few_devices(9) {
        let c = GemmCase::generate(33, 40, 24, Groups::Dense, Epi::NONE, 11);
        let want = c.reference::<bf16, f32>();
        let a = dev
            .upload(&tessera::testing::to_dtype::<bf16>(&c.a), "a")
            .unwrap();
        let b = dev
            .upload(&tessera::testing::to_dtype::<bf16>(&c.b), "b")
            .unwrap();
        let mut d = dev.upload(&vec![f32::NAN; 33 * 40], "d").unwrap();
        gemm::dense_into::<bf16, f32>(&a, &b, 33, 40, 24, &Epilogue::new(), &mut d).unwrap();
        let got = d.download().unwrap();
        assert!(
            tessera::testing::rel_l2(&got, &want) < tol::HALF_AIM,
            "{}",
            dev.backend()
        );

        let offs = dev.upload(&[0, 10, 10, 33], "offsets").unwrap();
        let b3 = dev
            .upload(&vec![bf16::from_f32(0.5); 3 * 40 * 24], "b3")
            .unwrap();
        let (d, check) =
            gemm::grouped_deferred::<bf16, f16>(&a, &b3, &offs, 33, 40, 24, &Epilogue::new())
                .unwrap();
        assert_eq!(check.is_pending(), dev.backend().runs_kernels());
        check.check().unwrap();
        assert_eq!(d.len(), 33 * 40);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Random shapes (0, 1, primes and others), groupings and epilogues.
    #[test]
    fn random_problems(
        m in prop::sample::select(vec![0usize, 1, 2, 7, 31, 64, 97, 130]),
        n in prop::sample::select(vec![0usize, 1, 3, 13, 64, 71, 131]),
        k in prop::sample::select(vec![0usize, 1, 5, 8, 16, 37, 67]),
        g in 0usize..6,
        e in 0usize..5,
        seed in any::<u64>(),
    ) {
        let groups = [Groups::Dense, Groups::Uniform(3), Groups::Skewed(5), Groups::Outside(2),
                      Groups::AllInOne(2), Groups::Uniform(9)][g];
        let epi = [Epi::NONE, Epi::all(Activation::GeluTanh), Epi::SWIGLU, Epi::SWIGLU_ALL,
                   if groups == Groups::Dense { Epi::act(Activation::Silu) } else { Epi::SWIGLU_TWO }][e];
        check(&few_devices(seed), &GemmCase::generate(m, n, k, groups, epi, seed));
    }
}

fn assert_invalid<T: std::fmt::Debug>(r: tessera::Result<T>, op: &str, what: &str) {
    match r {
        Err(Error::InvalidArgument { op: o, msg }) => {
            assert_eq!(o, op, "{what}: {msg}");
            assert!(!msg.is_empty());
        }
        other => panic!("{what}: expected InvalidArgument from {op}, got {other:?}"),
    }
}

/// Offsets that break the contract (negative first, decreasing, last > M, last < first with a
/// decrease in the middle) are errors naming the op on every executor, and the kernels never
/// touch memory outside the buffers (the SIMT red zones are checked after each launch).
#[test]
fn bad_offsets_are_errors() {
    for dev in devices() {
        let (m, n, k) = (40, 24, 16);
        let a = dev.upload(&vec![bf16::from_f32(1.0); m * k], "a").unwrap();
        let b = dev
            .upload(&vec![bf16::from_f32(1.0); 3 * n * k], "b")
            .unwrap();
        let gate = dev
            .upload(&vec![bf16::from_f32(1.0); 3 * n * k], "gate")
            .unwrap();
        for offs in [
            vec![-1, 10, 20, 40],
            vec![0, 30, 20, 40],
            vec![0, 10, 20, 41],
            vec![0, 10, i32::MAX, 40],
            vec![5, 50, 3, 2],
            vec![i32::MIN, i32::MIN, 0, 1],
        ] {
            let o = dev.upload(&offs, "offsets").unwrap();
            let what = format!("offsets {offs:?} on {}", dev.backend());
            assert_invalid(
                gemm::grouped::<bf16, f32>(&a, &b, &o, m, n, k, &Epilogue::new()),
                "gemm::grouped",
                &what,
            );
            assert_invalid(
                gemm::grouped_swiglu::<bf16, bf16>(&a, &gate, &b, &o, m, n, k),
                "gemm::grouped_swiglu",
                &what,
            );
        }
        // The good offsets still work after the errors.
        let o = dev.upload(&[0, 10, 20, 40], "offsets").unwrap();
        let d = gemm::grouped::<bf16, f32>(&a, &b, &o, m, n, k, &Epilogue::new()).unwrap();
        assert!(d.download().unwrap().iter().all(|&x| x == k as f32));
    }
}

/// Length, shape and parameter errors: each an InvalidArgument naming the op.
#[test]
fn bad_shapes_are_errors() {
    for dev in few_devices(10) {
        let a = dev.upload(&[f16::from_f32(1.0); 6 * 4], "a").unwrap();
        let b = dev.upload(&[f16::from_f32(1.0); 5 * 4], "b").unwrap();
        let b2 = dev.upload(&[f16::from_f32(1.0); 10 * 4], "b2").unwrap();
        let f6 = dev.upload(&[1.0f32; 6], "f6").unwrap();
        let f5 = dev.upload(&[1.0f32; 5], "f5").unwrap();
        let e = Epilogue::<f32>::new();
        let dense = "gemm::dense";
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, 6, 5, 3, &e),
            dense,
            "a length",
        );
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, 6, 6, 4, &e),
            dense,
            "b length",
        );
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, 6, 5, 4, &e.bias(&f6)),
            dense,
            "bias",
        );
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, 6, 5, 4, &e.row_scale(&f5)),
            dense,
            "row_scale",
        );
        let r = dev.upload(&[0f32; 29], "r").unwrap();
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, 6, 5, 4, &e.residual(&r)),
            dense,
            "residual",
        );
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, 6, 5, 4, &e.swiglu()),
            dense,
            "swiglu B",
        );
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b2, 6, 5, 4, &e.swiglu().activation(Activation::Silu)),
            dense,
            "swiglu with an activation",
        );
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, usize::MAX / 2, 5, 4, &e),
            dense,
            "M overflow",
        );
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b, 6, 1 << 31, 4, &e),
            dense,
            "N > i32::MAX",
        );
        let mut d = dev.alloc::<f32>(31, "d").unwrap();
        assert_invalid(
            gemm::dense_into::<f16, f32>(&a, &b, 6, 5, 4, &e, &mut d),
            dense,
            "d length",
        );
        let empty = dev.upload::<i32>(&[], "offsets").unwrap();
        assert_invalid(
            gemm::grouped::<f16, f32>(&a, &b, &empty, 6, 5, 4, &e),
            "gemm::grouped",
            "empty offsets",
        );
        let o = dev.upload(&[0, 6], "offsets").unwrap();
        assert_invalid(
            gemm::grouped::<f16, f32>(&a, &b2, &o, 6, 5, 4, &e),
            "gemm::grouped",
            "B of 2 groups for 1",
        );
        assert_invalid(
            gemm::grouped_swiglu::<f16, f32>(&a, &b, &b2, &o, 6, 5, 4),
            "gemm::grouped_swiglu",
            "up length",
        );
        let other = Device::cpu_separate();
        let b_other = other.upload(&[f16::from_f32(1.0); 5 * 4], "b").unwrap();
        assert_invalid(
            gemm::dense::<f16, f32>(&a, &b_other, 6, 5, 4, &e),
            dense,
            "other device",
        );
        // A good call after the errors.
        let d = gemm::dense::<f16, f32>(&a, &b, 6, 5, 4, &e).unwrap();
        assert!(d.download().unwrap().iter().all(|&x| x == 4.0));
    }
}
