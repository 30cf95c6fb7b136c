//! Criterion bench of `ops::gemm` (issue 12's GEMM rates). Throughput is in elements = FLOPs
//! (2·M·N·K), so criterion's "Gelem/s" reads as GFLOP/s (divide by 1000 for TFLOP/s).
//!
//! * `gpu/*` (CUDA or HIP device 0, timed with device events):
//!   - `dense_bf16_4096^3`: bf16 in, bf16 out, no epilogue (target: >= 70% of cuBLASLt in the
//!     same run);
//!   - `cublaslt_dense_bf16_4096^3`: `gemm::dense_cublaslt` on the same buffers, when libcublasLt
//!     is present (CUDA only);
//!   - `dense_bf16_<M>x<N>x<K>` and `grouped256_skewed_bf16_<M>x<N>x<K>`: the same FLOPs once as
//!     one dense GEMM and once as 256 groups of skewed sizes over the same rows (each group its
//!     own B), target: grouped >= 60% of the dense rate;
//!   - `grouped_deferred` leaves the offsets' device check pending (as inside a layer); nothing
//!     is read back per call.
//! * `simt/*` and `cpu-path/*`: small shapes on the host SIMT executor (the kernels, emulated)
//!   and the native CPU path (the f64 reference). CPU times, never GPU performance.

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::gemm::{self, Epilogue};
use tessera::testing::Rng;
use tessera::{Device, DeviceBuffer};

/// Offsets of `groups` skewed groups over `m` rows: sizes drawn from a heavy-tailed
/// distribution (a few groups hold most rows, some are empty), summing to `m`.
fn skewed_offsets(m: usize, groups: usize, seed: u64) -> Vec<i32> {
    let mut r = Rng(seed);
    let w: Vec<f64> = (0..groups)
        .map(|_| {
            let u = r.unit().max(1e-9);
            // Pareto-like weights; a quarter of the groups get nothing.
            if r.next_u64() % 4 == 0 {
                0.0
            } else {
                u.powf(-1.5)
            }
        })
        .collect();
    let total: f64 = w.iter().sum();
    let mut off = vec![0i32];
    let mut acc = 0f64;
    for x in &w {
        acc += x;
        off.push(((acc / total) * m as f64).round() as i32);
    }
    *off.last_mut().unwrap() = m as i32;
    off
}

fn upload_random(dev: &Device, n: usize, seed: u64) -> DeviceBuffer<bf16> {
    let mut r = Rng(seed);
    let v: Vec<bf16> = (0..n)
        .map(|_| bf16::from_f32((r.unit() as f32 - 0.5) * 0.2))
        .collect();
    dev.upload(&v, "x").expect("upload")
}

/// Dense (m, n, k), then 256 skewed groups over the same rows.
fn run(
    c: &mut Criterion,
    group: &str,
    dev: &Device,
    cube: usize,
    (m, n, k): (usize, usize, usize),
    groups: usize,
) {
    let gpu = dev.backend().runs_kernels() && !matches!(dev.backend(), tessera::Backend::Simt(_));
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));

    // Dense cube^3, bf16 -> bf16.
    {
        let a = upload_random(dev, cube * cube, 1);
        let b = upload_random(dev, cube * cube, 2);
        let mut d = dev.alloc::<bf16>(cube * cube, "d").expect("alloc");
        g.throughput(Throughput::Elements(
            gemm::flops(cube, cube, cube, false) as u64
        ));
        g.bench_function(format!("dense_bf16_{cube}^3"), |bch| {
            timed(dev, gpu, bch, || {
                gemm::dense_into::<bf16, bf16>(&a, &b, cube, cube, cube, &Epilogue::new(), &mut d)
                    .expect("gemm");
            })
        });
        // cuBLASLt on the same buffers in the same run (issue 12: ours >= 70% of it). Optional
        // at run time: without the library (or off CUDA) the row is skipped, saying so.
        if tessera::device::cublaslt::available(dev) {
            g.bench_function(format!("cublaslt_dense_bf16_{cube}^3"), |bch| {
                timed(dev, gpu, bch, || {
                    gemm::dense_cublaslt::<bf16, bf16>(&a, &b, cube, cube, cube, &mut d)
                        .expect("cublaslt");
                })
            });
        } else if gpu {
            eprintln!("gemm bench: cuBLASLt is not usable here; no cublaslt row");
        }
    }

    // Equal FLOPs: dense (m, n, k) and `groups` skewed groups over the same m rows.
    let a = upload_random(dev, m * k, 3);
    let bd = upload_random(dev, n * k, 4);
    let bg = upload_random(dev, groups * n * k, 5);
    let offs = dev
        .upload(&skewed_offsets(m, groups, 6), "offsets")
        .expect("upload");
    let mut d = dev.alloc::<bf16>(m * n, "d").expect("alloc");
    g.throughput(Throughput::Elements(gemm::flops(m, n, k, false) as u64));
    g.bench_function(format!("dense_bf16_{m}x{n}x{k}"), |bch| {
        timed(dev, gpu, bch, || {
            gemm::dense_into::<bf16, bf16>(&a, &bd, m, n, k, &Epilogue::new(), &mut d)
                .expect("gemm");
        })
    });
    let mut checks = Vec::new();
    g.bench_function(format!("grouped{groups}_skewed_bf16_{m}x{n}x{k}"), |bch| {
        timed(dev, gpu, bch, || {
            checks.push(
                gemm::grouped_into::<bf16, bf16>(&a, &bg, &offs, m, n, k, &Epilogue::new(), &mut d)
                    .expect("gemm"),
            );
        })
    });
    for c in checks {
        c.check().expect("offsets");
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => run(c, "gpu", &gpu, 4096, (16384, 2048, 1024), 256),
        Err(e) => eprintln!("gemm bench: no GPU ({e}); skipping the gpu group"),
    }
    if let Ok(simt) = Device::simt_with(tessera::SimtConfig::default()) {
        run(c, "simt", &simt, 128, (512, 128, 64), 16);
    }
    run(c, "cpu-path", &Device::cpu(), 128, (512, 128, 64), 16);
}

criterion_group!(gemm_benches, benches);
criterion_main!(gemm_benches);
