//! Criterion bench of the MoE dispatch ops at the issue-12 size: T = 4096 tokens, top-8, 256
//! virtual experts (64 experts × r = 4), block 64 (32768 flat ids); rows of d = 2048 bf16 on a
//! GPU (d = 64 on the CPU path).
//!
//! * `route_*`: `moe::route_deferred` of `[4096, 256]` f32 logits, top-8, renormalised, at a PSR
//!   step (the mask built on the device) and at inference.
//! * `permute_*`: `moe::permute_deferred` of `x` `[4096, d]` bf16 into the aligned order;
//!   `align_permute_*` both ops together (the align + permute); `copy_ceiling_rows_*`
//!   copies the bytes permute writes (`len·d` bf16) with `tah::copy_range` in the same run.
//! * `combine_*`: `moe::combine_deferred` of the `[len, d]` bf16 rows back to `[4096, d]` bf16.
//! * `load_*`: `moe::load_deferred` of the ids.
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
use half::bf16;
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
    // Route: [T, 256] logits (N = 64, r = 4), top-8.
    let r = 4usize;
    let mut g0 = Rng(0x40);
    let logits: Vec<f32> = (0..T * E).map(|_| (g0.unit() - 0.5) as f32 * 8.0).collect();
    let lb = dev.upload(&logits, "logits").expect("upload");
    let mut params = moe::RouteParams {
        r,
        layer_in_group: 1,
        layer: 5,
        top_k: K,
        renormalize: true,
        psr: Some(moe::Psr {
            step: 500,
            t_s: 100,
            t_e: 1100,
            seed: 7,
        }),
    };
    g.throughput(Throughput::Bytes((T * E * 4 + T * K * 8) as u64));
    g.bench_function(format!("route_psr_T{T}_E{E}_k{K}"), |b| {
        timed(dev, gpu, b, || {
            moe::route_deferred(&lb, T, &params).expect("route");
        })
    });
    params.psr = None;
    g.bench_function(format!("route_inference_T{T}_E{E}_k{K}"), |b| {
        timed(dev, gpu, b, || {
            moe::route_deferred(&lb, T, &params).expect("route");
        })
    });
    // Permute / combine rows: d = 2048 bf16 on a GPU, 64 on the CPU path.
    let d = if gpu { 2048 } else { 64 };
    let x: Vec<bf16> = (0..T * d)
        .map(|i| bf16::from_f32((i % 251) as f32))
        .collect();
    let xb = dev.upload(&x, "x").expect("upload");
    let aligned = moe::align(&idb, K, E, BLOCK).expect("align");
    let row_bytes = (len * d * 2) as u64;
    g.throughput(Throughput::Bytes(row_bytes + (T * d * 2) as u64));
    g.bench_function(format!("permute_T{T}_k{K}_E{E}_d{d}_bf16"), |b| {
        timed(dev, gpu, b, || {
            moe::permute_deferred(&xb, d, &aligned, K, E, BLOCK).expect("permute");
        })
    });
    g.bench_function(format!("align_permute_T{T}_k{K}_E{E}_d{d}_bf16"), |b| {
        timed(dev, gpu, b, || {
            let (a, _) = moe::align_deferred(&idb, K, E, BLOCK).expect("align");
            moe::permute_deferred(&xb, d, &a, K, E, BLOCK).expect("permute");
        })
    });
    let p = moe::permute(&xb, d, &aligned, K, E, BLOCK).expect("permute");
    let w = dev.upload(&vec![0.125f32; T * K], "w").expect("upload");
    g.bench_function(format!("combine_T{T}_k{K}_d{d}_bf16"), |b| {
        timed(dev, gpu, b, || {
            moe::combine_deferred::<bf16, bf16>(&p.rows, &p.positions, &w, d, K).expect("combine");
        })
    });
    g.throughput(Throughput::Bytes((T * K * 4) as u64));
    g.bench_function(format!("load_T{T}_k{K}_E{E}"), |b| {
        timed(dev, gpu, b, || {
            moe::load_deferred(&idb, E / 4, 4).expect("load");
        })
    });
    if gpu {
        let n = len * d;
        let src = dev.alloc::<bf16>(n, "src").expect("alloc");
        let mut dst = dev.alloc::<bf16>(n, "dst").expect("alloc");
        g.throughput(Throughput::Bytes(row_bytes * 2));
        g.bench_function(format!("copy_ceiling_rows_{len}x{d}_bf16"), |b| {
            timed(dev, gpu, b, || {
                tah::copy_range(&src, 0, &mut dst, 0, n).expect("copy");
            })
        });
    }
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
