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

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::attention::{self, MaskMode, Path};
use tessera::ops::featcache;
use tessera::testing::simt;
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
            run_received(c, "gpu", &gpu, 4096, 16);
        }
        Err(e) => eprintln!("featcache bench: no GPU ({e}); skipping the gpu group"),
    }
    run(c, "cpu-path", &Device::cpu(), 1024);
    run(c, "simt", &simt(32, Schedule::InOrder, 2), 1024);
    run_received(c, "cpu-path", &Device::cpu(), 1024, 2);
    run_received(c, "simt", &simt(32, Schedule::InOrder, 2), 1024, 2);
}

criterion_group!(featcache_benches, benches);
criterion_main!(featcache_benches);
