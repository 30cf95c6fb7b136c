//! Criterion bench of the C2C projector (issue 13): a Qwen3-0.6B receiver (28 layers, 8 KV heads
//! × 128) fused from a Qwen2.5-0.5B sharer (24 layers, 2 KV heads × 64), projector hidden 1024,
//! FFN 1024, two blocks (`drivers::c2c::Config::qwen3_0_6b_from_qwen2_5_0_5b`), bf16.
//!
//! * `gpu/*` (CUDA or HIP device 0, timed with device events, `iter_custom`):
//!   - `fused_K_M4096`: one projector (a key cache) at M = 4096 tokens, `c2c::fuse` (five fused
//!     GEMM stages), sharer contiguous `[1, 2, 4096, 64]`, receiver contiguous `[1, 8, 4096, 128]`.
//!   - `unfused_K_M4096`: the same through `c2c::fuse_unfused` (gather, `gemm::dense` stages and
//!     elementwise kernels, every intermediate in global memory) in the same run.
//!     Both `Throughput::Elements(tokens)`: criterion prints tokens/s.
//!   - `bytes_fused_K_M4096` and `copy_ceiling_*`: the bytes the fused projector must touch at
//!     least (the sharer and receiver rows read, every weight read once, the receiver rows
//!     written) as `Throughput::Bytes`, against a device copy (`copy_range_from`) that reads half
//!     and writes half of the same number of bytes. A manual event timing of both is printed
//!     with the ratio (fused time / copy time: 1.0 would be the copy ceiling).
//!   - `prefill_28_layers_M1024`: `drivers::c2c::Fuser::fuse` of the whole receiver (28 layers,
//!     key and value, every gate open) at M = 1024 tokens, `Throughput::Elements(tokens)`.
//!
//!   Skipped, with a message, when no GPU is present. The receiver rows are fused in place
//!   again on every iteration (the kernels' work does not depend on the values).
//! * `cpu-path/*` (`Device::cpu()`, the f64 reference) and `simt/*` (the host SIMT executor,
//!   wave32, 2 workers): fused and unfused at a tiny size only (M = 64, hidden 128, FFN 128, one
//!   block, 2×32 sharer and 4×32 receiver heads). CPU times, never GPU performance.

mod common;

use std::time::Duration;

use common::timed;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::bf16;
use tessera::drivers::c2c::weights::{FuserWeights, LayerWeights};
use tessera::drivers::c2c::{Config, Fuser, KvCache, KvCacheMut};
use tessera::ops::c2c::{
    self, Cache, CacheLayout, CacheMut, Options, Projector, ProjectorDims, Rows, UnfusedWorkspace,
    Workspace,
};
use tessera::testing::{simt, Rng};
use tessera::verify::c2c::random_projector;
use tessera::{Device, DeviceBuffer, Schedule};

/// Random bf16 values in ±1.
fn values(n: usize, rng: &mut Rng) -> Vec<bf16> {
    rng.values_in::<bf16>(n, 1.0)
        .into_iter()
        .map(bf16::from_f32)
        .collect()
}

/// One projector (open gate) with contiguous sharer and receiver caches of `m` tokens.
struct One {
    p: Projector<bf16>,
    src: DeviceBuffer<bf16>,
    cache: DeviceBuffer<bf16>,
    sl: CacheLayout,
    cl: CacheLayout,
    rows: Rows,
}

fn one(dev: &Device, d: ProjectorDims, m: usize) -> One {
    let mut rng = Rng(0xc2c13);
    let w = random_projector::<bf16>(d, &mut rng);
    let p = Projector::<bf16>::upload(dev, &w, 1.0).expect("projector");
    let sl = CacheLayout::contiguous(1, d.hs, m, d.ds);
    let cl = CacheLayout::contiguous(1, d.ht, m, d.dt);
    let src = dev
        .upload(&values(sl.min_len().unwrap_or(0), &mut rng), "src")
        .expect("upload");
    let cache = dev
        .upload(&values(cl.min_len().unwrap_or(0), &mut rng), "cache")
        .expect("upload");
    let ids: Vec<i32> = (0..m as i32).collect();
    let rows = Rows::new(dev, &ids, &ids, &sl, &cl).expect("rows");
    One {
        p,
        src,
        cache,
        sl,
        cl,
        rows,
    }
}

impl One {
    fn fused(&mut self, ws: &mut Workspace<bf16>) {
        c2c::fuse(
            &self.p,
            &Cache {
                data: &self.src,
                layout: self.sl,
            },
            &mut CacheMut {
                data: &mut self.cache,
                layout: self.cl,
            },
            &self.rows,
            &Options::default(),
            ws,
        )
        .expect("fuse");
    }

    fn unfused(&mut self, ws: &mut UnfusedWorkspace<bf16>) {
        c2c::fuse_unfused(
            &self.p,
            &Cache {
                data: &self.src,
                layout: self.sl,
            },
            &mut CacheMut {
                data: &mut self.cache,
                layout: self.cl,
            },
            &self.rows,
            &Options::default(),
            ws,
        )
        .expect("fuse_unfused");
    }
}

/// Fused and unfused one projector at `m` tokens.
fn projector(c: &mut Criterion, group: &str, dev: &Device, d: ProjectorDims, m: usize) {
    let gpu = dev.backend().runs_kernels() && group == "gpu";
    let mut o = one(dev, d, m);
    let mut ws = Workspace::new();
    let mut uws = UnfusedWorkspace::new();
    // Warm the workspaces (allocation and the per-block weight copies are not timed).
    o.fused(&mut ws);
    o.unfused(&mut uws);
    let mut g = c.benchmark_group(group);
    if gpu {
        g.sample_size(20)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    } else {
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
    }
    g.throughput(Throughput::Elements(m as u64));
    let name = format!(
        "K_M{m}_Hs{}x{}_Ht{}x{}_Hd{}_F{}_b{}_bf16",
        d.hs, d.ds, d.ht, d.dt, d.hidden, d.ffn, d.blocks
    );
    g.bench_function(format!("fused_{name}"), |b| {
        timed(dev, gpu, b, || o.fused(&mut ws))
    });
    g.bench_function(format!("unfused_{name}"), |b| {
        timed(dev, gpu, b, || o.unfused(&mut uws))
    });
    if gpu {
        // The bytes the fused projector must touch at least.
        let halves = m * (d.k_in() + d.k_out())
            + d.hidden * d.k_in()
            + 2 * d.blocks * d.ffn * d.hidden
            + (d.k_out() + d.ht) * d.hidden;
        let floats = d.hidden + d.blocks * d.hidden;
        let bytes = 2 * halves + 4 * floats;
        // A copy of n bf16 reads and writes 2n bytes each: 4n bytes touched.
        let n = bytes.div_ceil(4);
        let from = dev.alloc::<bf16>(n, "copy.src").expect("alloc");
        let mut to = dev.alloc::<bf16>(n, "copy.dst").expect("alloc");
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(format!("bytes_fused_{name}"), |b| {
            timed(dev, gpu, b, || o.fused(&mut ws))
        });
        g.bench_function(format!("copy_ceiling_{n}xbf16"), |b| {
            timed(dev, gpu, b, || {
                to.copy_range_from(0, &from, 0, n).expect("copy")
            })
        });
        let ms = |f: &mut dyn FnMut()| -> f64 {
            let s = dev.default_stream();
            f();
            let t0 = s.record().expect("event");
            let reps = 50;
            for _ in 0..reps {
                f();
            }
            let t1 = s.record().expect("event");
            t0.elapsed_ms(&t1).expect("elapsed") as f64 / reps as f64
        };
        let tf = ms(&mut || o.fused(&mut ws));
        let tc = ms(&mut || to.copy_range_from(0, &from, 0, n).expect("copy"));
        let gbs = |t: f64| bytes as f64 / (t * 1e-3) / 1e9;
        println!(
            "c2c bytes moved vs copy ceiling ({name}): {bytes} bytes; fused {:.1} µs ({:.0} GB/s), \
             copy {:.1} µs ({:.0} GB/s), fused/copy = {:.2}",
            tf * 1e3,
            gbs(tf),
            tc * 1e3,
            gbs(tc),
            tf / tc
        );
    }
    g.finish();
}

/// The whole receiver (28 layers, key and value, every gate open) at `m` tokens.
fn prefill(c: &mut Criterion, dev: &Device, m: usize) {
    let cfg = Config::qwen3_0_6b_from_qwen2_5_0_5b();
    let d = cfg.dims;
    let mut rng = Rng(0xc2c28);
    let key = random_projector::<bf16>(d, &mut rng);
    let value = random_projector::<bf16>(d, &mut rng);
    let w = FuserWeights {
        layers: (0..cfg.target_layers)
            .map(|_| {
                Some(LayerWeights {
                    key: key.clone(),
                    value: value.clone(),
                    gate_logit: 1.0,
                })
            })
            .collect(),
    };
    let fuser = Fuser::<bf16>::from_weights(dev, cfg.clone(), &w).expect("fuser");
    let sl = CacheLayout::contiguous(1, d.hs, m, d.ds);
    let cl = CacheLayout::contiguous(1, d.ht, m, d.dt);
    let up = |n: usize, rng: &mut Rng| dev.upload(&values(n, rng), "kv").expect("upload");
    let sharer: Vec<(DeviceBuffer<bf16>, DeviceBuffer<bf16>)> = (0..cfg.source_layers)
        .map(|_| {
            let n = sl.min_len().unwrap_or(0);
            (up(n, &mut rng), up(n, &mut rng))
        })
        .collect();
    let mut receiver: Vec<(DeviceBuffer<bf16>, DeviceBuffer<bf16>)> = (0..cfg.target_layers)
        .map(|_| {
            let n = cl.min_len().unwrap_or(0);
            (up(n, &mut rng), up(n, &mut rng))
        })
        .collect();
    let ids: Vec<i32> = (0..m as i32).collect();
    let rows = Rows::new(dev, &ids, &ids, &sl, &cl).expect("rows");
    let mut ws = Workspace::new();
    let src: Vec<KvCache<bf16>> = sharer.iter().map(|(k, v)| KvCache { k, v }).collect();
    let mut run = || {
        let mut dst: Vec<KvCacheMut<bf16>> = receiver
            .iter_mut()
            .map(|(k, v)| KvCacheMut { k, v })
            .collect();
        let st = fuser
            .fuse(&src, sl, &mut dst, cl, &rows, &Options::default(), &mut ws)
            .expect("fuse");
        assert_eq!(st.fused, cfg.target_layers, "every gate is open");
    };
    run();
    let mut g = c.benchmark_group("gpu");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(m as u64));
    g.bench_function(
        format!("prefill_{}_layers_M{m}_bf16", cfg.target_layers),
        |b| timed(dev, true, b, &mut run),
    );
    g.finish();
}

fn benches(c: &mut Criterion) {
    let full = Config::qwen3_0_6b_from_qwen2_5_0_5b().dims;
    match tessera::testing::gpu() {
        Some(gpu) => {
            projector(c, "gpu", &gpu, full, 4096);
            prefill(c, &gpu, 1024);
        }
        None => eprintln!("c2c bench: no GPU; skipping the gpu group"),
    }
    let tiny = ProjectorDims {
        hs: 2,
        ds: 32,
        ht: 4,
        dt: 32,
        hidden: 128,
        ffn: 128,
        blocks: 1,
    };
    projector(c, "cpu-path", &Device::cpu(), tiny, 64);
    projector(c, "simt", &simt(32, Schedule::InOrder, 2), tiny, 64);
}

criterion_group!(c2c_benches, benches);
criterion_main!(c2c_benches);
