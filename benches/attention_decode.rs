//! Criterion bench of flash-decoding (`attention::decode` = split-KV partials + `merge`): one
//! query token attending causally to a KV cache, H = 32, H_kv = 8, D = 128, bf16.
//!
//! * `gpu/*`: on a CUDA or HIP device, KV 32k with 16 and 64 splits (and a batch of 8 such
//!   sequences), timed with device events (`iter_custom`). Throughput is the bytes of K and V the
//!   op must read (2 * kv * H_kv * D * 2 bytes), nothing else, so bytes/s reads as K/V bandwidth.
//!   Skipped, with a message, when no GPU is present.
//! * `cpu-path/*`: a tiny case (KV 512, H = 4, H_kv = 1, D = 64) on the native CPU path (the f64
//!   reference per split and the reference merge). CPU times, never GPU performance.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::attention::{self, MaskMode, Path};
use tessera::testing::Rng;
use tessera::verify::attention::{Problem, Uploaded};
use tessera::Device;

/// `batch` sequences of one query (the last position of its sequence: it sees every key) and
/// `kv` keys each, causal, implicit positions, on `dev`.
fn case(
    dev: &Device,
    batch: usize,
    kv: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
) -> Uploaded<bf16> {
    let mut r = Rng(0xdec0de);
    let kv_pos: Vec<i32> = (0..batch).flat_map(|_| 0..kv as i32).collect();
    let p = Problem {
        heads,
        kv_heads,
        head_dim: d,
        cu_q: (0..=batch as i32).collect(),
        cu_kv: (0..=batch).map(|b| (b * kv) as i32).collect(),
        q_pos: vec![kv as i32 - 1; batch],
        kv_depth: vec![0; kv_pos.len()],
        kv_pos,
        implicit: Some((kv as i32 - 1, 0)),
        q_depth: vec![0; batch],
        kv_valid: None,
        mode: MaskMode::Causal,
        q: r.values_in::<bf16>(batch * heads * d, 1.0),
        k: r.values_in::<bf16>(batch * kv * kv_heads * d, 1.0),
        v: r.values_in::<bf16>(batch * kv * kv_heads * d, 1.0),
        scale: 1.0 / (d as f32).sqrt(),
    };
    p.upload(dev).expect("upload")
}

/// Bytes of K and V the op must read.
fn kv_bytes(u: &Uploaded<bf16>) -> u64 {
    (u.k.len() + u.v.len()) as u64 * 2
}

fn gpu(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("gpu");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (batch, splits) in [(1usize, 16usize), (1, 64), (8, 16)] {
        let case = case(dev, batch, 32 * 1024, 32, 8, 128);
        let a = case.attention(Path::Auto);
        g.throughput(Throughput::Bytes(kv_bytes(&case)));
        let name = format!("decode_bf16_b{batch}_kv32k_h32_kv8_d128_s{splits}");
        let mut best = f64::INFINITY;
        g.bench_function(name.as_str(), |bch| {
            bch.iter_custom(|iters| {
                let stream = dev.default_stream();
                let t0 = stream.record().expect("event");
                for _ in 0..iters {
                    attention::decode(&a, splits).expect("decode");
                }
                let t1 = stream.record().expect("event");
                let s = t0.elapsed_ms(&t1).expect("elapsed") as f64 * 1e-3;
                best = best.min(s / iters.max(1) as f64);
                Duration::from_secs_f64(s)
            })
        });
        eprintln!(
            "{name}: best {:.1} us, K/V read {:.0} GB/s",
            best * 1e6,
            kv_bytes(&case) as f64 / best * 1e-9
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    match tessera::testing::gpu() {
        Some(dev) => gpu(c, &dev),
        None => eprintln!("attention_decode bench: no GPU; skipping the gpu group"),
    }
    let cpu = Device::cpu();
    let case = case(&cpu, 1, 512, 4, 1, 64);
    let a = case.attention(Path::Auto);
    let mut g = c.benchmark_group("cpu-path");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(kv_bytes(&case)));
    g.bench_function("decode_bf16_kv512_h4_kv1_d64_s4 (CPU)", |bch| {
        bch.iter(|| attention::decode(&a, 4).expect("decode"))
    });
    g.finish();
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
