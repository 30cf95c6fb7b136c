//! Criterion bench of bitmask sparsify/densify.
//!
//! * `gpu/*`: on a CUDA or HIP device, timed with device events (`iter_custom`), with throughput
//!   in bytes the op must move. Skipped, with a message, when no GPU is present.
//! * `cpu-path/*`: the native CPU path (rayon reference). These are CPU times of the CPU product
//!   path, never GPU performance.
//!
//! The copy ceiling and achieved/ceiling fractions are printed by `tessera bench`, which measures
//! both in one run.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::bitmask;
use tessera::testing::checkpoint_pair;
use tessera::Device;

const N: usize = 1 << 24;

/// Minimum bytes either op moves for bf16: two dense tensors (read base and new, or read base and
/// write the result), the mask, and the k changed values.
fn bytes_moved(n: usize, k: usize) -> u64 {
    (2 * n * 2 + 4 * n.div_ceil(32) + k * 2) as u64
}

fn run(c: &mut Criterion, group: &str, dev: &Device) {
    let (base, new) = checkpoint_pair::<bf16>(N, 0.23, 7);
    let b = dev.upload(&base, "base").expect("upload");
    let x = dev.upload(&new, "new").expect("upload");
    let s = bitmask::sparsify(&b, &x, 0.0).expect("sparsify");
    let k = s.values.len();
    let gpu = dev.backend().runs_kernels();
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(bytes_moved(N, k)));
    g.bench_function("sparsify_bf16_16M", |bch| {
        if gpu {
            bch.iter_custom(|iters| {
                let stream = dev.default_stream();
                let t0 = stream.record().expect("event");
                for _ in 0..iters {
                    bitmask::sparsify(&b, &x, 0.0).expect("sparsify");
                }
                let t1 = stream.record().expect("event");
                Duration::from_secs_f64(t0.elapsed_ms(&t1).expect("elapsed") as f64 * 1e-3)
            })
        } else {
            bch.iter(|| bitmask::sparsify(&b, &x, 0.0).expect("sparsify"))
        }
    });
    g.bench_function("densify_bf16_16M", |bch| {
        if gpu {
            bch.iter_custom(|iters| {
                let stream = dev.default_stream();
                let t0 = stream.record().expect("event");
                for _ in 0..iters {
                    bitmask::densify(&b, &s).expect("densify");
                }
                let t1 = stream.record().expect("event");
                Duration::from_secs_f64(t0.elapsed_ms(&t1).expect("elapsed") as f64 * 1e-3)
            })
        } else {
            bch.iter(|| bitmask::densify(&b, &s).expect("densify"))
        }
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => run(c, "gpu", &gpu),
        Err(e) => eprintln!("bitmask bench: no GPU ({e}); skipping the gpu group"),
    }
    run(c, "cpu-path", &Device::cpu());
}

criterion_group!(bitmask_benches, benches);
criterion_main!(bitmask_benches);
