//! Criterion bench of the cost of calling an op by name (`interop::Call`: validation against the
//! op table, shape rules, dispatch) next to calling the Rust op directly, on a small op where the
//! call itself dominates (`tah.accumulate_logits`, 1024 f32). Host wall time per call: on a GPU
//! that is the launch cost (launches are asynchronous); on the CPU path it includes the 1024
//! additions. Not GPU performance in either case.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tessera::interop::{Call, DynBuffer};
use tessera::ops::tah;
use tessera::Device;

const N: usize = 1024;

/// Groups `gpu` (on a GPU: host time, the launch cost) and `cpu-path`.
fn run(c: &mut Criterion, group: &str, dev: &Device) {
    let mut g = c.benchmark_group(group);
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    let logits = dev.upload(&vec![0.5f32; N], "logits").expect("upload");
    let mut cum = dev.upload(&vec![0.0f32; N], "cum").expect("upload");
    g.bench_function("direct_host_time/accumulate_logits_1k", |b| {
        b.iter(|| tah::accumulate_logits(&mut cum, &logits).expect("op"))
    });
    let mut bufs = Some((
        DynBuffer::F32(dev.upload(&vec![0.0f32; N], "cum").expect("upload")),
        DynBuffer::F32(dev.upload(&vec![0.5f32; N], "logits").expect("upload")),
    ));
    g.bench_function("call_host_time/accumulate_logits_1k", |b| {
        b.iter(|| {
            let (cum, logits) = bufs.take().expect("buffers");
            let mut call = Call::new("tah.accumulate_logits", dev).expect("op");
            call.input("cum", cum, vec![N as u64]).expect("cum");
            call.input("logits", logits, vec![N as u64])
                .expect("logits");
            let mut out = call.run().expect("run");
            let cum = out.tensors.pop().expect("cum").buf;
            let logits = out.inputs.pop().expect("logits").1.buf;
            bufs = Some((cum, logits));
        })
    });
    g.finish();
    dev.synchronize().expect("sync");
}

fn benches(c: &mut Criterion) {
    let best = Device::best();
    if best.backend().runs_kernels() {
        run(c, "gpu", &best);
    } else {
        eprintln!("interop bench: no GPU; only the CPU path runs");
    }
    run(c, "cpu-path", &Device::cpu());
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
