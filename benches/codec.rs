//! Criterion bench of the codec ops: lossless delta encode/decode of the changed values, k-means
//! (4 bits) of their f32 deltas, and dequantize.
//!
//! * `gpu/*`: on a CUDA or HIP device, timed with device events (`iter_custom`), throughput in
//!   bytes the op must move. Skipped, with a message, when no GPU is present.
//! * `cpu-path/*`: the native CPU path (rayon reference). CPU times, never GPU performance.

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::codec;
use tessera::reference::bitmask as bm_ref;
use tessera::reference::codec as cref;
use tessera::testing::checkpoint_pair;
use tessera::Device;

/// Changed values (about 23% of a 16M-element bf16 tensor).
const N: usize = 1 << 24;

fn run(c: &mut Criterion, group: &str, dev: &Device) {
    let (base, new) = checkpoint_pair::<bf16>(N, 0.23, 7);
    let new: Vec<bf16> = new
        .iter()
        .zip(&base)
        .map(|(&x, &b)| if x.is_finite() { x } else { b })
        .collect();
    let (mask, _) = bm_ref::sparsify(&base, &new, 0.0);
    let (vb, vx) = (cref::gather(&base, &mask), cref::gather(&new, &mask));
    let k = vb.len();
    let b = dev.upload(&vb, "base").expect("upload");
    let x = dev.upload(&vx, "new").expect("upload");
    let p = codec::delta_encode(&b, &x).expect("encode");
    let packed_bytes = 4 * p.words.len() as u64;
    let d = codec::delta_f32(&b, &x).expect("delta");
    let km = codec::kmeans(&d, 4, 10, 1e-6).expect("kmeans");
    let pi = codec::pack_indices(&km.indices, 4).expect("pack");
    let gpu = dev.backend().runs_kernels();
    let mut g = c.benchmark_group(group);
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    // Encode reads both value arrays (twice at most) and writes the packed words.
    g.throughput(Throughput::Bytes(4 * k as u64 + packed_bytes));
    g.bench_function("delta_encode_bf16_3.9M", |bch| {
        timed(dev, gpu, bch, || {
            codec::delta_encode(&b, &x).expect("encode");
        })
    });
    g.bench_function("delta_decode_bf16_3.9M", |bch| {
        timed(dev, gpu, bch, || {
            codec::delta_decode(&b, &p).expect("decode");
        })
    });
    // One k-means iteration reads the f32 values once; ten iterations at most plus the final pass.
    g.throughput(Throughput::Bytes(4 * k as u64 * 11));
    g.bench_function("kmeans4_f32_3.9M_10it", |bch| {
        timed(dev, gpu, bch, || {
            codec::kmeans(&d, 4, 10, 1e-6).expect("kmeans");
        })
    });
    g.throughput(Throughput::Bytes(4 * k as u64 + k as u64 / 2));
    g.bench_function("dequantize4_bf16_3.9M", |bch| {
        timed(dev, gpu, bch, || {
            codec::dequantize(&pi, &km.centroids, Some(&b)).expect("dequantize");
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(gpu) => run(c, "gpu", &gpu),
        Err(e) => eprintln!("codec bench: no GPU ({e}); skipping the gpu group"),
    }
    run(c, "cpu-path", &Device::cpu());
}

criterion_group!(codec_benches, benches);
criterion_main!(codec_benches);
