//! Criterion bench of DD2's fused Gaussian-mixture score (issue 16) on device-resident inputs:
//! `gmscore.forward` (score and lse) and `gmscore.backward` (the two gradients, from the saved
//! score and lse), dense p (every codeword weighted), σ = 0.5, α = 0.8.
//!
//! * `gpu/*`: P = 4096 positions (a batch of 16 sequences of 256 tokens), V = 16384, d = 8 and
//!   64, on a CUDA or HIP device, timed with device events; skipped, with a message, when no GPU
//!   is present. Each call includes its input check and status read-back (a host wait).
//! * `cpu-path/*` (the f64 reference, rayon) and `simt/*` (host SIMT, wave32): P = 64, V = 1024,
//!   d = 8 and 64. CPU times, never GPU performance.
//!
//! Throughput: the (position, codeword) pairs of one pass, `P·V` (each about `4·d` FLOPs, one
//! `exp` and one `ln`).

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera::ops::gmscore;
use tessera::testing::{simt, Rng};
use tessera::{Device, Schedule};

fn run(c: &mut Criterion, group: &str, dev: &Device, n: usize, v: usize, d: usize) {
    let mut r = Rng(0x6d5);
    let mut sym =
        |k: usize| -> Vec<f32> { (0..k).map(|_| (r.unit() * 2.0 - 1.0) as f32).collect() };
    let codebook = sym(v * d);
    let x = sym(n * d);
    let s_gen = sym(n * d);
    let p: Vec<f32> = vec![1.0 / v as f32; n * v];
    let up = |x: &[f32], what: &str| dev.upload(x, what).expect("upload");
    let (cb, p, x, s_gen) = (
        up(&codebook, "codebook"),
        up(&p, "p"),
        up(&x, "x_t"),
        up(&s_gen, "s_gen"),
    );
    let (alpha, sigma) = (up(&vec![0.8; n], "alpha"), up(&vec![0.5; n], "sigma"));
    let f = gmscore::forward(&cb, &p, &x, &alpha, &sigma, d).expect("forward");
    let gpu = dev.backend().runs_kernels() && !group.starts_with("simt");
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements((n * v) as u64));
    g.bench_function(format!("forward_P{n}_V{v}_d{d}"), |b| {
        timed(dev, gpu, b, || {
            gmscore::forward(&cb, &p, &x, &alpha, &sigma, d).expect("forward");
        })
    });
    g.bench_function(format!("backward_P{n}_V{v}_d{d}"), |b| {
        timed(dev, gpu, b, || {
            gmscore::backward(&cb, &p, &x, &alpha, &sigma, d, &s_gen, &f.score, &f.lse)
                .expect("backward");
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => {
            for d in [8, 64] {
                run(c, "gpu", &gpu, 4096, 16384, d);
            }
        }
        Err(e) => eprintln!("gmscore bench: no GPU ({e}); skipping the gpu group"),
    }
    let sim = simt(32, Schedule::InOrder, 2);
    for d in [8, 64] {
        run(c, "cpu-path", &Device::cpu(), 64, 1024, d);
        run(c, "simt", &sim, 64, 1024, d);
    }
}

criterion_group!(gmscore_benches, benches);
criterion_main!(gmscore_benches);
