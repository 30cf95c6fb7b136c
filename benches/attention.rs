//! Criterion bench of prefill attention (`attention::forward`) on the TaH duo-causal layout:
//! one sequence of `seq` positions at two depths, ~6% hard positions re-run at depth 1, K/V
//! grouped by depth slot (sorted by position inside a slot), H = 32, H_kv = 8, D = 128, bf16.
//!
//! * `gpu/*`: on a CUDA or HIP device, seq 4k and 16k, tensor-core and scalar paths, timed with
//!   device events (`iter_custom`). Criterion's "elements" are FLOPs counting only unmasked work
//!   (4 * D per visible (query, key, head) triple), so elem/s reads as FLOP/s; the achieved
//!   TFLOP/s is also printed. Skipped, with a message, when no GPU is present.
//! * `cpu-path/*`: a tiny case (seq 256, H = 4, H_kv = 1) on the native CPU path (the f64
//!   reference). CPU times, never GPU performance.
//!
//! Not measured here: the dense-mask formulation (a [T, total_kv] additive mask with a dense
//! SDPA); `scripts/compare_torch.py` is the place for that comparison on a GPU machine.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::ops::attention::{self, Attention, MaskMode, Path, Positions};
use tessera::verify::Rng;
use tessera::{Device, DeviceBuffer};

struct Layout {
    pos: Vec<i32>,
    depth: Vec<i32>,
    /// Visible (query, key) pairs per head.
    pairs: u64,
}

/// Depth-0 slots for every position, then depth-1 slots for the hard positions; queries and
/// keys share the layout (one prefill over both depths).
fn tah_layout(seq: usize, hard: f64, seed: u64) -> Layout {
    let mut r = Rng(seed);
    let hard_set: Vec<bool> = (0..seq).map(|_| r.unit() < hard).collect();
    let mut pos: Vec<i32> = (0..seq as i32).collect();
    let mut depth = vec![0i32; seq];
    for p in (0..seq).filter(|&p| hard_set[p]) {
        pos.push(p as i32);
        depth.push(1);
    }
    // depth-0 query at p sees p + 1 keys; depth-1 query at p also sees the hard keys <= p
    let mut pairs = 0u64;
    let mut hard_le = 0u64;
    for (p, &h) in hard_set.iter().enumerate() {
        pairs += p as u64 + 1;
        if h {
            hard_le += 1;
            pairs += p as u64 + 1 + hard_le;
        }
    }
    Layout { pos, depth, pairs }
}

const H: usize = 32;
const HKV: usize = 8;
const D: usize = 128;

struct Inputs {
    q: DeviceBuffer<bf16>,
    k: DeviceBuffer<bf16>,
    v: DeviceBuffer<bf16>,
    cu: DeviceBuffer<i32>,
    pos: DeviceBuffer<i32>,
    depth: DeviceBuffer<i32>,
    heads: usize,
    kv_heads: usize,
    d: usize,
}

fn inputs(dev: &Device, l: &Layout, heads: usize, kv_heads: usize, d: usize) -> Inputs {
    let n = l.pos.len();
    let mut r = Rng(3);
    let mut gen = |len: usize| -> Vec<bf16> {
        (0..len)
            .map(|_| bf16::from_f64((r.unit() - 0.5) * 2.0))
            .collect()
    };
    Inputs {
        q: dev.upload(&gen(n * heads * d), "q").expect("upload"),
        k: dev.upload(&gen(n * kv_heads * d), "k").expect("upload"),
        v: dev.upload(&gen(n * kv_heads * d), "v").expect("upload"),
        cu: dev.upload(&[0, n as i32], "cu").expect("upload"),
        pos: dev.upload(&l.pos, "pos").expect("upload"),
        depth: dev.upload(&l.depth, "depth").expect("upload"),
        heads,
        kv_heads,
        d,
    }
}

fn problem(x: &Inputs, path: Path) -> Attention<'_, bf16> {
    Attention {
        q: &x.q,
        k: &x.k,
        v: &x.v,
        heads: x.heads,
        kv_heads: x.kv_heads,
        head_dim: x.d,
        cu_seqlens_q: &x.cu,
        cu_seqlens_kv: &x.cu,
        max_seqlen_q: x.q.len() / (x.heads * x.d),
        max_seqlen_kv: x.q.len() / (x.heads * x.d),
        q_pos: Positions::Explicit(&x.pos),
        kv_pos: Positions::Explicit(&x.pos),
        q_depth: Some(&x.depth),
        kv_depth: Some(&x.depth),
        kv_valid: None,
        scale: 1.0 / (x.d as f32).sqrt(),
        mode: MaskMode::DuoCausal,
        path,
    }
}

fn gpu(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("gpu");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for seq in [4096usize, 16384] {
        let l = tah_layout(seq, 0.06, 11);
        let x = inputs(dev, &l, H, HKV, D);
        let flops = 4 * D as u64 * H as u64 * l.pairs;
        g.throughput(Throughput::Elements(flops));
        for (label, path) in [("tc", Path::TensorCore), ("scalar", Path::Scalar)] {
            let a = problem(&x, path);
            // one timed run for the printed TFLOP/s
            attention::forward(&a).expect("forward");
            let stream = dev.default_stream();
            let t0 = stream.record().expect("event");
            attention::forward(&a).expect("forward");
            let t1 = stream.record().expect("event");
            let ms = t0.elapsed_ms(&t1).expect("elapsed") as f64;
            eprintln!(
                "attention bench: seq {seq} ({} tokens, 2 depths, 6% hard) {label}: {ms:.3} ms, \
                 {:.1} TFLOP/s (unmasked work)",
                l.pos.len(),
                flops as f64 / (ms * 1e-3) / 1e12
            );
            g.bench_function(format!("duo_prefill_seq{seq}_h32_hkv8_d128_{label}"), |b| {
                b.iter_custom(|iters| {
                    let t0 = stream.record().expect("event");
                    for _ in 0..iters {
                        attention::forward(&a).expect("forward");
                    }
                    let t1 = stream.record().expect("event");
                    Duration::from_secs_f64(t0.elapsed_ms(&t1).expect("elapsed") as f64 * 1e-3)
                })
            });
        }
    }
    g.finish();
}

fn cpu(c: &mut Criterion) {
    let dev = Device::cpu();
    let l = tah_layout(256, 0.06, 11);
    let x = inputs(&dev, &l, 4, 1, 64);
    let mut g = c.benchmark_group("cpu-path");
    g.sample_size(10).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(4 * 64 * 4 * l.pairs));
    let a = problem(&x, Path::Auto);
    g.bench_function("duo_prefill_seq256_h4_hkv1_d64", |b| {
        b.iter(|| attention::forward(&a).expect("forward"))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(dev) => gpu(c, &dev),
        Err(e) => eprintln!("attention bench: no GPU ({e}); skipping the gpu group"),
    }
    cpu(c);
}

criterion_group!(attention_benches, benches);
criterion_main!(attention_benches);
