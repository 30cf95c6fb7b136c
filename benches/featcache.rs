//! Criterion bench of the SpecDiff feature-cache ops (issue 14) on device-resident inputs:
//!
//! * `featcache.select`: N tokens with scores from a few levels (many ties), cr = 0.7,
//!   low_mass = 0.1. The ranks are O(N²) compares (docs/specdiff.md).
//! * `featcache.received`: one sequence of N tokens, full attention (a DiT step), bf16, d = 64,
//!   summed over heads; the LSE comes from `attention.forward` on the same device (outside the
//!   timing). Throughput: the `2·d·N²·H` FLOPs of S (plus N²·H exp2).
//!
//! * `gpu/*`: N = 4096 (a 64×64-patch DiT step; received with 16 heads), on a CUDA or HIP
//!   device, timed with device events; skipped, with a message, when no GPU is present. Each
//!   call includes its status read-back (a host wait).
//! * `cpu-path/*` (the reference) and `simt/*` (host SIMT, wave32): N = 1024 (received with 2
//!   heads). CPU times, never GPU performance.
//!
//! The feature-ring ops (`ring_*`): n tokens of width w = 1152 (a DiT-XL hidden size), 30% of
//! them recomputed (m = 0.3·n, shuffled), rings full (three features per token), classes 1 for
//! the recomputed and 2/3 alternating for the others. `gpu/*`: n = 4096; `cpu-path/*` and
//! `simt/*`: n = 1024. Every call includes its status read-back (a host wait). Throughput: the
//! bytes each op must move (gather: m rows read and written; scatter: m rows read, written to x
//! and to the ring; reuse: per class-2/3 token the features it reads (1 or 3) and the row it
//! writes).

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::attention::{self, MaskMode, Path};
use tessera::ops::featcache::{self, Ring};
use tessera::testing::{simt, Rng};
use tessera::verify::attention::Problem;
use tessera::verify::featcache::Case;
use tessera::{Device, Schedule};

fn run(c: &mut Criterion, group: &str, dev: &Device, n: usize) {
    let case = Case::generate(n, 5, 0.7, 0.1, 0xbe);
    let his = dev.upload(&case.his, "his").expect("upload");
    let fut = dev.upload(&case.fut, "fut").expect("upload");
    let cf = dev.upload(&case.cf, "cf").expect("upload");
    let gpu = dev.backend().runs_kernels() && !group.starts_with("simt");
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("select_N{n}"), |b| {
        timed(dev, gpu, b, || {
            featcache::select(&his, &fut, &cf, 0.7, 0.1).expect("select");
        })
    });
    g.finish();
}

fn run_ring(c: &mut Criterion, group: &str, dev: &Device, n: usize) {
    const W: usize = 1152;
    let mut r = Rng(0xbeef);
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        perm.swap(i, (r.next_u64() % (i as u64 + 1)) as usize);
    }
    let m = n * 3 / 10;
    let c1 = dev.upload(&perm[..m], "c1").expect("upload");
    let vals: Vec<f32> = (0..n * W).map(|i| (i % 97) as f32 * 0.01).collect();
    let mut x = dev.upload(&vals, "x").expect("upload");
    let mut ring = Ring::new(dev, n, W).expect("ring");
    let all = dev
        .upload(&(0..n as u32).collect::<Vec<_>>(), "all")
        .expect("upload");
    let x0 = dev.upload(&vals, "x0").expect("upload");
    for t in [3.0f32, 2.0, 1.0] {
        featcache::scatter(&x0, &all, t, &mut x, &mut ring).expect("prefill");
    }
    let rows = dev.upload(&vals[..m * W], "rows").expect("upload");
    let mut class: Vec<u8> = (0..n).map(|i| 2 + (i % 2) as u8).collect();
    for &i in &perm[..m] {
        class[i as usize] = 1;
    }
    let reused = class.iter().filter(|&&c| c != 1).count();
    let class = dev.upload(&class, "class").expect("upload");
    let mut cf = dev.upload(&vec![3u32; n], "cf").expect("upload");
    let gpu = dev.backend().runs_kernels() && !group.starts_with("simt");
    let row = (W * 4) as u64;
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(2 * m as u64 * row));
    g.bench_function(format!("ring_gather_n{n}_w{W}"), |b| {
        timed(dev, gpu, b, || {
            featcache::gather(&x, W, &c1).expect("gather");
        })
    });
    g.throughput(Throughput::Bytes(3 * m as u64 * row));
    g.bench_function(format!("ring_scatter_n{n}_w{W}"), |b| {
        timed(dev, gpu, b, || {
            featcache::scatter(&rows, &c1, 1.0, &mut x, &mut ring).expect("scatter");
        })
    });
    // Class 2 reads one feature, class 3 three (half each).
    g.throughput(Throughput::Bytes(3 * reused as u64 * row));
    g.bench_function(format!("ring_reuse_n{n}_w{W}"), |b| {
        timed(dev, gpu, b, || {
            featcache::reuse(&class, &ring, 1.0, &mut x).expect("reuse");
        })
    });
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("ring_age_n{n}"), |b| {
        timed(dev, gpu, b, || {
            featcache::age(&class, &mut cf).expect("age");
        })
    });
    g.finish();
}

fn run_received(c: &mut Criterion, group: &str, dev: &Device, n: usize, heads: usize) {
    let d = 64;
    let p = Problem::single_sequence::<bf16>(n, heads, heads, d, MaskMode::Full, 0x7ec);
    let u = p.upload::<bf16>(dev).expect("upload");
    let a = u.attention(Path::Auto);
    let lse = attention::forward(&a)
        .and_then(|o| o.checked())
        .expect("attention.forward")
        .lse;
    let gpu = dev.backend().runs_kernels() && !group.starts_with("simt");
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements((2 * d * n * n * heads) as u64));
    g.bench_function(format!("received_full_N{n}_H{heads}_d{d}"), |b| {
        timed(dev, gpu, b, || {
            featcache::received(&a, &lse, false).expect("received");
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => {
            run(c, "gpu", &gpu, 4096);
            run_ring(c, "gpu", &gpu, 4096);
            run_received(c, "gpu", &gpu, 4096, 16);
        }
        Err(e) => eprintln!("featcache bench: no GPU ({e}); skipping the gpu group"),
    }
    run(c, "cpu-path", &Device::cpu(), 1024);
    run_ring(c, "cpu-path", &Device::cpu(), 1024);
    run_received(c, "cpu-path", &Device::cpu(), 1024, 2);
    let sim = simt(32, Schedule::InOrder, 2);
    run(c, "simt", &sim, 1024);
    run_ring(c, "simt", &sim, 1024);
    run_received(c, "simt", &sim, 1024, 2);
}

criterion_group!(featcache_benches, benches);
criterion_main!(featcache_benches);
