//! Criterion bench of `moe.align` at the issue-12 size: T = 4096 tokens, top-8, 256 experts,
//! block 64 (32768 flat ids).
//!
//! * `gpu/*`: on a CUDA or HIP device, timed with device events (`iter_custom`).
//!   `align_deferred` is the two launches alone (the id check left pending, as inside a layer);
//!   `align` adds the status read-back (a host wait per call). `copy_ceiling` copies the bytes
//!   align must write at least (`sorted_token_ids` + `expert_ids`) with `tah::copy_range`, the
//!   copy ceiling of the same run. Skipped, with a message, when no GPU is present.
//! * `cpu-path/*`: the native CPU path (reference). CPU times, never GPU performance.

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera::ops::{moe, tah};
use tessera::testing::Rng;
use tessera::Device;

const T: usize = 4096;
const K: usize = 8;
const E: usize = 256;
const BLOCK: usize = 64;

fn run(c: &mut Criterion, group: &str, dev: &Device) {
    let mut r = Rng(0x3e_a1);
    let ids: Vec<i32> = (0..T * K)
        .map(|_| (r.next_u64() % E as u64) as i32)
        .collect();
    let idb = dev.upload(&ids, "topk_ids").expect("upload");
    let gpu = dev.backend().runs_kernels();
    let len = T * K + E * (BLOCK - 1);
    let bytes = (T * K * 4 + len * 4 + len.div_ceil(BLOCK) * 4) as u64;
    let mut g = c.benchmark_group(group);
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(bytes));
    let name = format!("T{T}_k{K}_E{E}_block{BLOCK}");
    g.bench_function(format!("align_deferred_{name}"), |b| {
        timed(dev, gpu, b, || {
            moe::align_deferred(&idb, K, E, BLOCK).expect("align");
        })
    });
    g.bench_function(format!("align_{name}"), |b| {
        timed(dev, gpu, b, || {
            moe::align(&idb, K, E, BLOCK).expect("align");
        })
    });
    if gpu {
        let n = len + len.div_ceil(BLOCK);
        let src = dev.alloc::<i32>(n, "src").expect("alloc");
        let mut dst = dev.alloc::<i32>(n, "dst").expect("alloc");
        g.bench_function(format!("copy_ceiling_{n}xi32"), |b| {
            timed(dev, gpu, b, || {
                tah::copy_range(&src, 0, &mut dst, 0, n).expect("copy");
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => run(c, "gpu", &gpu),
        Err(e) => eprintln!("moe bench: no GPU ({e}); skipping the gpu group"),
    }
    run(c, "cpu-path", &Device::cpu());
}

criterion_group!(moe_benches, benches);
criterion_main!(moe_benches);
