//! Criterion bench of the TaH driver kernels at Qwen3-1.7B sizes: the next-depth input (top-100
//! of 152k cumulative logits, softmax, weighted sum of bf16 embedding rows of width 2048), logits
//! accumulation and hard-token selection.
//!
//! * `gpu/*`: on a CUDA or HIP device, timed with device events (`iter_custom`), throughput in the
//!   bytes the op must move at least (the top-k kernel reads each logits row 5 times: 4 radix
//!   passes and the collection pass). Skipped, with a message, when no GPU is present.
//! * `cpu-path/*`: the native CPU path (reference), with 4 rows and width 64. CPU times, never GPU
//!   performance.

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::drivers::tah;
use tessera::testing::Rng;
use tessera::Device;

const VOCAB: usize = 151_936;
const TOP_K: usize = 100;

fn run(c: &mut Criterion, group: &str, dev: &Device, rows: usize, hidden: usize) {
    let mut r = Rng(0x7a4b);
    let cum: Vec<f32> = (0..rows * VOCAB)
        .map(|_| ((r.unit() - 0.5) * 20.0) as f32)
        .collect();
    let emb: Vec<bf16> = (0..VOCAB * hidden)
        .map(|_| bf16::from_f64(r.unit() - 0.5))
        .collect();
    let scores: Vec<f32> = (0..4096)
        .map(|_| ((r.unit() - 0.5) * 12.0) as f32)
        .collect();
    let cb = dev.upload(&cum, "cum").expect("upload");
    let mut acc = dev.upload(&cum, "acc").expect("upload");
    let eb = dev.upload(&emb, "emb").expect("upload");
    let sb = dev.upload(&scores, "scores").expect("upload");
    let gpu = dev.backend().runs_kernels();
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(
        (rows * VOCAB * 4 + rows * TOP_K * hidden * 2 + rows * hidden * 4) as u64,
    ));
    g.bench_function(
        format!("next_depth_input_bf16_{rows}x152k_k100_d{hidden}"),
        |b| {
            timed(dev, gpu, b, || {
                tah::next_depth_input(&cb, VOCAB, TOP_K, &eb, hidden).expect("next input");
            })
        },
    );
    g.throughput(Throughput::Bytes((rows * VOCAB * 12) as u64));
    g.bench_function(format!("accumulate_logits_f32_{rows}x152k"), |b| {
        timed(dev, gpu, b, || {
            tah::accumulate_logits(&mut acc, &cb).expect("accumulate");
        })
    });
    g.throughput(Throughput::Elements(scores.len() as u64));
    g.bench_function("select_hard_4096", |b| {
        timed(dev, gpu, b, || {
            tah::select_hard(&sb, 0.9).expect("select");
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => run(c, "gpu", &gpu, 64, 2048),
        Err(e) => eprintln!("tah bench: no GPU ({e}); skipping the gpu group"),
    }
    run(c, "cpu-path", &Device::cpu(), 4, 64);
}

criterion_group!(tah_benches, benches);
criterion_main!(tah_benches);
