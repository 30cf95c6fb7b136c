//! Criterion bench of the ReXMoE layer forward (`moe::layer`), tokens per second for r = 1 and
//! r = 4 at equal expert count per layer and equal top-k.
//!
//! * `gpu/*`: on a CUDA or HIP device, timed with device events. The issue-12 shape: T = 4096
//!   tokens, d = 2048, F = 1024, N = 64 experts per layer, top-8 (r = 4: 256 virtual experts).
//!   The layer waits for its stages' device checks (one status read-back) like a caller of
//!   `moe::layer` does. Skipped, with a message, when no GPU is present.
//! * `simt/*`: the kernels on host SIMT wave32 at a small shape (T = 64, d = 64, F = 64, N = 8,
//!   top-2): CPU times of the emulation, never GPU performance.

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::moe::{self, LayerWeights, RouteParams};
use tessera::testing::Rng;
use tessera::Device;

struct Shape {
    tokens: usize,
    d: usize,
    f: usize,
    n: usize,
    k: usize,
}

fn run(c: &mut Criterion, group: &str, dev: &Device, s: &Shape) {
    let gpu = dev.backend().runs_kernels() && group == "gpu";
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(s.tokens as u64));
    let mut rng = Rng(0x7e);
    let mut vals = |n: usize, a: f64| -> Vec<bf16> {
        (0..n)
            .map(|_| bf16::from_f64((rng.unit() * 2.0 - 1.0) * a))
            .collect()
    };
    let x = dev.upload(&vals(s.tokens * s.d, 1.0), "x").expect("upload");
    for r in [1usize, 4] {
        let e = r * s.n;
        let a = 1.0 / (s.d as f64).sqrt();
        let wr = dev.upload(&vals(e * s.d, a), "w_router").expect("upload");
        let wg = dev
            .upload(&vals(e * s.f * s.d, a), "w_gate")
            .expect("upload");
        let wu = dev.upload(&vals(e * s.f * s.d, a), "w_up").expect("upload");
        let wd = dev
            .upload(&vals(e * s.d * s.f, a), "w_down")
            .expect("upload");
        let w = LayerWeights {
            w_router: &wr,
            w_gate: &wg,
            w_up: &wu,
            w_down: &wd,
        };
        let p = RouteParams {
            r,
            layer_in_group: 0,
            layer: 0,
            top_k: s.k,
            renormalize: true,
            psr: None,
        };
        g.bench_function(
            format!(
                "layer_r{r}_T{}_d{}_F{}_N{}_top{}",
                s.tokens, s.d, s.f, s.n, s.k
            ),
            |b| {
                timed(dev, gpu, b, || {
                    moe::layer(&x, s.d, &w, &p).expect("layer");
                })
            },
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => run(
            c,
            "gpu",
            &gpu,
            &Shape {
                tokens: 4096,
                d: 2048,
                f: 1024,
                n: 64,
                k: 8,
            },
        ),
        Err(e) => eprintln!("rexmoe bench: no GPU ({e}); skipping the gpu group"),
    }
    run(
        c,
        "simt",
        &Device::simt(),
        &Shape {
            tokens: 64,
            d: 64,
            f: 64,
            n: 8,
            k: 2,
        },
    );
}

criterion_group!(rexmoe_benches, benches);
criterion_main!(rexmoe_benches);
