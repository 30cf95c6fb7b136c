//! `device::cublaslt`: the optional cuBLASLt GEMM path. Without a GPU these check that it is
//! absent cleanly (no panic, clear errors) and that its arguments are validated on every device;
//! `gpu_cublaslt_*` checks it against an f64 product on a CUDA GPU.

use half::{bf16, f16};
use tessera::device::cublaslt;
use tessera::ops::attention::HalfFloat;
use tessera::testing::{rel_l2, to_dtype, tol, Rng};
use tessera::{DType, Device, Error, Float};

fn host_devices() -> Vec<Device> {
    vec![Device::cpu(), Device::simt()]
}

#[test]
fn not_available_on_the_cpu_path_or_simt() {
    for dev in host_devices() {
        assert!(!cublaslt::available(&dev), "{}", dev.backend());
    }
}

#[test]
fn matmul_off_cuda_is_unsupported() {
    for dev in host_devices() {
        let a = dev.upload(&[bf16::ONE; 4 * 3], "a").unwrap();
        let b = dev.upload(&[bf16::ONE; 5 * 3], "b").unwrap();
        let mut d = dev.alloc::<f32>(4 * 5, "d").unwrap();
        let e = cublaslt::matmul(&a, &b, &mut d, 4, 5, 3).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { .. }),
            "{}: {e}",
            dev.backend()
        );
        let msg = e.to_string();
        assert!(msg.contains("cuBLASLt") && msg.contains("CUDA"), "{msg}");
        // The ops::gemm entry point says the same, and our kernel still runs.
        let e = tessera::ops::gemm::dense_cublaslt(&a, &b, 4, 5, 3, &mut d).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        let e = tessera::ops::gemm::Epilogue::new();
        let ours: Vec<f32> = tessera::ops::gemm::dense::<bf16, f32>(&a, &b, 4, 5, 3, &e)
            .unwrap()
            .download()
            .unwrap();
        assert_eq!(ours, vec![3.0; 20]);
    }
}

#[test]
fn probe_reports_absence_without_panicking() {
    let names = cublaslt::library_candidates();
    assert!(names.iter().any(|n| n == "libcublasLt.so.13"), "{names:?}");
    // Twice: the second answer comes from the cache and must be the same.
    let (first, second) = (cublaslt::probe(), cublaslt::probe());
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            assert!(names.contains(&a.name), "{a:?}");
            assert!(a.version_parts().0 >= 11, "{a:?}");
        }
        (Err(Error::DeviceUnavailable { backend, msg }), Err(e2)) => {
            assert_eq!(*backend, "cublaslt");
            assert_eq!(first.as_ref().unwrap_err().to_string(), e2.to_string());
            // Either no candidate opens (the message lists them) or the one that does is not
            // a usable cuBLASLt.
            assert!(
                (msg.contains("cannot be loaded") && msg.contains("libcublasLt.so.13"))
                    || msg.contains("does not export")
                    || msg.contains("needs 11.0"),
                "{msg}"
            );
        }
        other => panic!("unexpected probe results {other:?}"),
    }
    // Whatever the probe says, a CUDA device (if any) agrees with it and nothing panics.
    if let Ok(gpu) = Device::cuda(0) {
        if first.is_err() {
            assert!(!cublaslt::available(&gpu));
            let a = gpu.upload(&[f16::ONE; 8], "a").unwrap();
            let b = gpu.upload(&[f16::ONE; 8], "b").unwrap();
            let mut d = gpu.alloc::<f32>(4, "d").unwrap();
            let e = cublaslt::matmul(&a, &b, &mut d, 2, 2, 4).unwrap_err();
            assert!(matches!(e, Error::DeviceUnavailable { .. }), "{e}");
        }
    }
}

fn expect_invalid(r: tessera::Result<()>, needle: &str) {
    match r {
        Err(Error::InvalidArgument { op, msg }) => {
            assert_eq!(op, "gemm::cublaslt");
            assert!(msg.contains(needle), "'{needle}' not in: {msg}");
        }
        other => panic!("expected an argument error containing '{needle}', got {other:?}"),
    }
}

/// Arguments are checked before the device: the same errors on every device.
#[test]
fn bad_arguments_are_argument_errors_on_every_device() {
    let mut devs = host_devices();
    devs.extend(Device::cuda(0).ok());
    for dev in devs {
        let a = dev.upload(&[f16::ONE; 4 * 3], "a").unwrap();
        let b = dev.upload(&[f16::ONE; 5 * 3], "b").unwrap();
        let mut d = dev.alloc::<f32>(4 * 5, "d").unwrap();
        expect_invalid(cublaslt::matmul(&a, &b, &mut d, 4, 5, 2), "A must hold");
        expect_invalid(cublaslt::matmul(&a, &b, &mut d, 3, 5, 4), "B must hold");
        expect_invalid(cublaslt::matmul(&a, &b, &mut d, 2, 5, 6), "B must hold");
        let mut d_short = dev.alloc::<f32>(4 * 5 - 1, "d").unwrap();
        expect_invalid(
            cublaslt::matmul(&a, &b, &mut d_short, 4, 5, 3),
            "D must hold",
        );
        expect_invalid(
            cublaslt::matmul(&a, &b, &mut d, usize::MAX, 2, 2),
            "overflow",
        );
        let mut d_u8 = dev.alloc::<u8>(4 * 5, "d").unwrap();
        expect_invalid(
            cublaslt::matmul(&a, &b, &mut d_u8, 4, 5, 3),
            "must be f32, bf16 or f16",
        );
        // f16 inputs with a bf16 output: not a cuBLASLt combination.
        let mut d_bf = dev.alloc::<bf16>(4 * 5, "d").unwrap();
        let e = cublaslt::matmul(&a, &b, &mut d_bf, 4, 5, 3).unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        // Buffers of another device.
        let other = Device::simt();
        let b_other = other.upload(&[f16::ONE; 5 * 3], "b").unwrap();
        expect_invalid(
            cublaslt::matmul(&a, &b_other, &mut d, 4, 5, 3),
            "one device",
        );
    }
}

// ---- on a CUDA GPU -------------------------------------------------------------------------

/// `D[m,n] = Σ_k A[m,k]·B[n,k]` in f64.
fn reference(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut d = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            d[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[j * k + p] as f64)
                .sum();
        }
    }
    d
}

fn to_f32<O: Float>(v: &[O]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn check_on<T: HalfFloat, O: Float + DType>(dev: &Device, m: usize, n: usize, k: usize, seed: u64) {
    let mut rng = Rng(seed);
    let a = rng.values_in::<T>(m * k, 1.0);
    let b = rng.values_in::<T>(n * k, 1.0);
    let da = dev.upload(&to_dtype::<T>(&a), "a").unwrap();
    let db = dev.upload(&to_dtype::<T>(&b), "b").unwrap();
    let mut dd = dev.alloc::<O>(m * n, "d").unwrap();
    cublaslt::matmul(&da, &db, &mut dd, m, n, k).unwrap();
    let out = to_f32(&dd.download().unwrap());
    let err = rel_l2(&out, &reference(&a, &b, m, n, k));
    let what = format!("{m}x{n}x{k} {} -> {}", T::KIND, O::KIND);
    println!("cuBLASLt {what}: rel-L2 {err:.2e}");
    assert!(err <= tol::HALF, "{what}: rel-L2 {err:.3e} > {}", tol::HALF);
}

#[test]
#[ignore = "needs a CUDA GPU with libcublasLt"]
fn gpu_cublaslt_matches_f64() {
    let dev = Device::cuda(0).expect("this test needs a CUDA GPU");
    if let Err(e) = cublaslt::probe() {
        // cuBLASLt is optional at run time: its absence is not a failure (ops::gemm runs our
        // kernel), but say so in the log.
        eprintln!("SKIPPED: cuBLASLt is not usable on this GPU machine: {e}");
        return;
    }
    assert!(cublaslt::available(&dev));
    // 33x17x9: odd dimensions (rows not 16-byte aligned, so less aligned algorithms).
    for (i, &(m, n, k)) in [(64, 48, 80), (256, 256, 256), (33, 17, 9)]
        .iter()
        .enumerate()
    {
        let s = 0xb1a5 + i as u64;
        check_on::<bf16, f32>(&dev, m, n, k, s);
        check_on::<bf16, bf16>(&dev, m, n, k, s);
        check_on::<f16, f32>(&dev, m, n, k, s);
        check_on::<f16, f16>(&dev, m, n, k, s);
    }
    // k = 0: D is zeros (the buffer starts as garbage-free zeros only by chance: fill it first).
    let a = dev.alloc::<bf16>(0, "a").unwrap();
    let b = dev.alloc::<bf16>(0, "b").unwrap();
    let mut d = dev.upload(&[1.5f32; 6], "d").unwrap();
    cublaslt::matmul(&a, &b, &mut d, 2, 3, 0).unwrap();
    assert_eq!(d.download().unwrap(), vec![0f32; 6]);
}
