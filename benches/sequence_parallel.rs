//! Criterion bench of sequence-parallel attention over n = 8 simulated ranks on one device:
//! TASP rings (`topology::hamiltonian_decomposition(8)`, 7 rings) against the Ring Attention
//! baseline (`topology::single_ring(8)`), causal (zigzag) and full.
//!
//! * `forward`: `parallel::attention::forward_simulated` (split, every step's copies and
//!   attention calls, running merges, reassembly);
//! * `gather`: the copy schedule alone (`parallel::plan::all_gather` of the K/V layout: 7 steps of
//!   device-to-device range copies, a wait after each).
//!
//! Simulated ranks share one device and one stream: copies serialise with each other and with
//! compute, so these times measure the op's compute and the cost of issuing the copy schedule,
//! not link concurrency (TASP issues 7x more, 7x smaller copies per step than the ring). The
//! `gpu/*` group runs on a CUDA or HIP device (L 32k, H 32, H_kv 8, D 128, bf16) timed with
//! device events; it is skipped with a message when no GPU is present. The `cpu-path/*` group
//! uses a tiny case (L 448, H 4, H_kv 1, D 64) on the native CPU path: CPU times, never GPU
//! performance.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use half::bf16;
use tessera::ops::attention::Path;
use tessera::parallel::attention::{self as sp, SpAttention};
use tessera::parallel::plan::{all_gather, AllGatherPlan};
use tessera::parallel::{RankBuffers, Simulated};
use tessera::testing::Rng;
use tessera::topology;
use tessera::{Device, DeviceBuffer};

const N: usize = 8;

struct Case {
    q: DeviceBuffer<bf16>,
    k: DeviceBuffer<bf16>,
    v: DeviceBuffer<bf16>,
    l: usize,
    h: usize,
    hk: usize,
    d: usize,
}

impl Case {
    fn new(dev: &Device, l: usize, h: usize, hk: usize, d: usize) -> Case {
        let mut r = Rng(0x5e9_9a7);
        let mut vals = |n: usize| -> Vec<bf16> {
            (0..n)
                .map(|_| bf16::from_f64(r.unit() * 2.0 - 1.0))
                .collect()
        };
        Case {
            q: dev.upload(&vals(l * h * d), "q").expect("upload"),
            k: dev.upload(&vals(l * hk * d), "k").expect("upload"),
            v: dev.upload(&vals(l * hk * d), "v").expect("upload"),
            l,
            h,
            hk,
            d,
        }
    }

    fn config<'a>(&self, plan: &'a AllGatherPlan, causal: bool) -> SpAttention<'a> {
        SpAttention {
            plan,
            seq_len: self.l,
            heads: self.h,
            kv_heads: self.hk,
            head_dim: self.d,
            scale: 1.0 / (self.d as f32).sqrt(),
            causal,
            path: Path::Auto,
        }
    }
}

fn plans() -> [(&'static str, AllGatherPlan); 2] {
    let tasp = topology::hamiltonian_decomposition(N).expect("decomposition");
    let ring = topology::single_ring(N).expect("ring");
    [
        ("tasp", AllGatherPlan::new(&tasp).expect("plan")),
        ("ring", AllGatherPlan::new(&ring).expect("plan")),
    ]
}

/// The K/V buffer lists of every rank for the layout of `cfg` (own blocks uploaded).
fn gather_buffers(dev: &Device, cfg: &SpAttention) -> RankBuffers<bf16> {
    let layout = sp::kv_layout(cfg).expect("layout");
    RankBuffers {
        bufs: (0..N)
            .map(|r| {
                let own = layout.local_len(r) * layout.token_elems();
                let data = vec![bf16::ONE; own];
                let k = dev.upload(&data, "k").expect("upload");
                let v = dev.upload(&data, "v").expect("upload");
                layout.rank_buffers(dev, r, k, v).expect("buffers")
            })
            .collect(),
    }
}

/// Times `f` with device events on a GPU or the wall clock elsewhere; returns the best per-call
/// seconds through `best`.
fn timed(dev: &Device, iters: u64, best: &mut f64, mut f: impl FnMut()) -> Duration {
    let s = if dev.backend().runs_kernels() {
        let stream = dev.default_stream();
        let t0 = stream.record().expect("event");
        for _ in 0..iters {
            f();
        }
        let t1 = stream.record().expect("event");
        t0.elapsed_ms(&t1).expect("elapsed") as f64 * 1e-3
    } else {
        let t0 = std::time::Instant::now();
        for _ in 0..iters {
            f();
        }
        t0.elapsed().as_secs_f64()
    };
    *best = best.min(s / iters.max(1) as f64);
    Duration::from_secs_f64(s)
}

fn group(c: &mut Criterion, dev: &Device, name: &str, case: &Case, samples: usize) {
    let mut g = c.benchmark_group(name);
    g.sample_size(samples)
        .measurement_time(Duration::from_secs(3));
    let suffix = if dev.backend().runs_kernels() {
        ""
    } else {
        " (CPU)"
    };
    let size = format!("n{N}_L{}_h{}_kv{}_d{}", case.l, case.h, case.hk, case.d);
    for (label, plan) in plans() {
        for causal in [true, false] {
            let cfg = case.config(&plan, causal);
            let mode = if causal { "causal" } else { "full" };
            let bench = format!("forward_{label}_{mode}_{size}{suffix}");
            let mut best = f64::INFINITY;
            let mut stats = None;
            g.bench_function(bench.as_str(), |b| {
                b.iter_custom(|iters| {
                    timed(dev, iters, &mut best, || {
                        let (_, s) = sp::forward_simulated(&cfg, &case.q, &case.k, &case.v)
                            .expect("forward");
                        stats = Some(s);
                    })
                })
            });
            eprintln!("{bench}: best {:.3} ms, {stats:?}", best * 1e3);
        }
        let cfg = case.config(&plan, false);
        let layout = sp::kv_layout(&cfg).expect("layout");
        let mut bufs = gather_buffers(dev, &cfg);
        let mut t = Simulated::new(dev, N).expect("transport");
        let copies: usize = (0..N - 1)
            .map(|s| layout.copies(s).expect("copies").len())
            .sum();
        let bytes = 2 * case.l * case.hk * case.d * 2 * (N - 1) / N;
        let bench = format!("gather_{label}_{size}{suffix}");
        let mut best = f64::INFINITY;
        g.bench_function(bench.as_str(), |b| {
            b.iter_custom(|iters| {
                timed(dev, iters, &mut best, || {
                    all_gather(&layout, &mut bufs, &mut t).expect("gather")
                })
            })
        });
        eprintln!(
            "{bench}: best {:.3} ms for {copies} copies, {:.1} MB per rank received ({:.1} GB/s \
             aggregate over the {N} ranks)",
            best * 1e3,
            bytes as f64 * 1e-6,
            bytes as f64 * N as f64 / best * 1e-9
        );
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    match Device::cuda(0).or_else(|_| Device::hip(0)) {
        Ok(dev) => {
            let case = Case::new(&dev, 32 * 1024, 32, 8, 128);
            group(c, &dev, "gpu", &case, 10);
        }
        Err(e) => eprintln!("sequence_parallel bench: no GPU ({e}); skipping the gpu group"),
    }
    let cpu = Device::cpu();
    let case = Case::new(&cpu, 448, 4, 1, 64);
    group(c, &cpu, "cpu-path", &case, 10);
}

criterion_group!(sp_benches, benches);
criterion_main!(sp_benches);
