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
use tessera::ops::attention::{self, Attention, MaskMode, Path, Positions};
use tessera::verify::Rng;
use tessera::{Device, DeviceBuffer};

struct Case {
    q: DeviceBuffer<bf16>,
    k: DeviceBuffer<bf16>,
    v: DeviceBuffer<bf16>,
    cu_q: DeviceBuffer<i32>,
    cu_kv: DeviceBuffer<i32>,
    heads: usize,
    kv_heads: usize,
    d: usize,
    kv: usize,
}

impl Case {
    fn new(dev: &Device, batch: usize, kv: usize, heads: usize, kv_heads: usize, d: usize) -> Case {
        let mut r = Rng(0xdec0de);
        let mut vals = |n: usize| -> Vec<bf16> {
            (0..n)
                .map(|_| bf16::from_f64(r.unit() * 2.0 - 1.0))
                .collect()
        };
        let q = vals(batch * heads * d);
        let k = vals(batch * kv * kv_heads * d);
        let v = vals(batch * kv * kv_heads * d);
        let cu_q: Vec<i32> = (0..=batch as i32).collect();
        let cu_kv: Vec<i32> = (0..=batch).map(|b| (b * kv) as i32).collect();
        Case {
            q: dev.upload(&q, "q").expect("upload"),
            k: dev.upload(&k, "k").expect("upload"),
            v: dev.upload(&v, "v").expect("upload"),
            cu_q: dev.upload(&cu_q, "cu_q").expect("upload"),
            cu_kv: dev.upload(&cu_kv, "cu_kv").expect("upload"),
            heads,
            kv_heads,
            d,
            kv,
        }
    }

    fn attention(&self) -> Attention<'_, bf16> {
        Attention {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.d,
            cu_seqlens_q: &self.cu_q,
            cu_seqlens_kv: &self.cu_kv,
            max_seqlen_q: 1,
            max_seqlen_kv: self.kv,
            // The query is the last position of its sequence: it sees every key.
            q_pos: Positions::Implicit {
                offset: self.kv as i32 - 1,
            },
            kv_pos: Positions::Implicit { offset: 0 },
            q_depth: None,
            kv_depth: None,
            kv_valid: None,
            scale: 1.0 / (self.d as f32).sqrt(),
            mode: MaskMode::Causal,
            path: Path::Auto,
        }
    }

    /// Bytes of K and V the op must read.
    fn kv_bytes(&self) -> u64 {
        (self.k.len() + self.v.len()) as u64 * 2
    }
}

fn gpu(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("gpu");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    for (batch, splits) in [(1usize, 16usize), (1, 64), (8, 16)] {
        let case = Case::new(dev, batch, 32 * 1024, 32, 8, 128);
        let a = case.attention();
        g.throughput(Throughput::Bytes(case.kv_bytes()));
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
            case.kv_bytes() as f64 / best * 1e-9
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(dev) => gpu(c, &dev),
        Err(e) => eprintln!("attention_decode bench: no GPU ({e}); skipping the gpu group"),
    }
    let cpu = Device::cpu();
    let case = Case::new(&cpu, 1, 512, 4, 1, 64);
    let a = case.attention();
    let mut g = c.benchmark_group("cpu-path");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Bytes(case.kv_bytes()));
    g.bench_function("decode_bf16_kv512_h4_kv1_d64_s4 (CPU)", |bch| {
        bch.iter(|| attention::decode(&a, 4).expect("decode"))
    });
    g.finish();
}

criterion_group!(decode_benches, benches);
criterion_main!(decode_benches);
