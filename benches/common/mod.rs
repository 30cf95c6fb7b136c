//! Shared by the criterion benches (`mod common;`).

use std::time::Duration;

use tessera::Device;

/// Time `f` with device events on a GPU (`iter_custom`: GPU time), with the host clock otherwise.
pub fn timed<F: FnMut()>(dev: &Device, gpu: bool, b: &mut criterion::Bencher, mut f: F) {
    if gpu {
        b.iter_custom(|iters| {
            let stream = dev.default_stream();
            let t0 = stream.record().expect("event");
            for _ in 0..iters {
                f();
            }
            let t1 = stream.record().expect("event");
            Duration::from_secs_f64(t0.elapsed_ms(&t1).expect("elapsed") as f64 * 1e-3)
        })
    } else {
        b.iter(&mut f)
    }
}
