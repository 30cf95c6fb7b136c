//! Measurements shared by `tessera bench` and the criterion benches: the device's own ceilings
//! (a device-to-device copy for bandwidth) and op timings with the bytes each op must move.
//!
//! On a GPU the times are device events. On the host SIMT executor and the CPU path they are CPU
//! wall-clock times and are labelled as such; they are never GPU performance.

use serde::Serialize;

use crate::device::{Device, DeviceBuffer};
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::bitmask;
use crate::testing::checkpoint_pair;

/// One measured op.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub op: String,
    pub dtype: String,
    pub executor: String,
    pub elements: usize,
    /// Bytes the op must move at minimum (reads of its inputs, writes of its outputs).
    pub bytes: u64,
    /// Median time in milliseconds over the repetitions.
    pub ms: f64,
    pub gbps: f64,
    /// Achieved bandwidth over the copy ceiling measured in the same run (GPU only).
    pub fraction_of_ceiling: Option<f64>,
    /// "gpu" for device-event times, "cpu" for host wall-clock times.
    pub clock: &'static str,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Time `f` `reps` times with the device's stream events; returns the median in ms.
pub fn time_ms(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up: module load, allocator
    let stream = dev.default_stream();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let a = stream.record()?;
        f()?;
        let b = stream.record()?;
        times.push(a.elapsed_ms(&b)? as f64);
    }
    Ok(median(times))
}

/// Device-to-device copy bandwidth in GB/s (read + write bytes over time) for `bytes` bytes.
pub fn copy_ceiling_gbps(dev: &Device, bytes: usize, reps: usize) -> Result<f64> {
    let src: DeviceBuffer<u8> = dev.alloc(bytes, "ceiling.src")?;
    let mut dst: DeviceBuffer<u8> = dev.alloc(bytes, "ceiling.dst")?;
    let ms = time_ms(dev, reps, || dst.copy_from(&src))?;
    Ok(2.0 * bytes as f64 / (ms * 1e-3) / 1e9)
}

/// Time sparsify and densify of `n` elements with about 23% of them changed.
pub fn bitmask_ops<T: Float>(
    dev: &Device,
    n: usize,
    reps: usize,
    ceiling: Option<f64>,
) -> Result<Vec<Measurement>> {
    let (base, new) = checkpoint_pair::<T>(n, 0.23, 42);
    let b = dev.upload(&base, "base")?;
    let x = dev.upload(&new, "new")?;
    let s = bitmask::sparsify(&b, &x, 0.0)?;
    let size = std::mem::size_of::<T>() as u64;
    let (n64, k) = (n as u64, s.values.len() as u64);
    let mask_bytes = 4 * bitmask::mask_words(n) as u64;
    let clock = if dev.backend().runs_kernels() && !matches!(dev.backend(), crate::Backend::Simt(_))
    {
        "gpu"
    } else {
        "cpu"
    };
    let mut out = Vec::new();
    let mut push = |op: &str, bytes: u64, ms: f64| {
        let gbps = bytes as f64 / (ms * 1e-3) / 1e9;
        out.push(Measurement {
            op: op.into(),
            dtype: T::KIND.name().into(),
            executor: dev.backend().to_string(),
            elements: n,
            bytes,
            ms,
            gbps,
            fraction_of_ceiling: ceiling.map(|c| gbps / c),
            clock,
        });
    };
    let ms = time_ms(dev, reps, || bitmask::sparsify(&b, &x, 0.0).map(|_| ()))?;
    push(
        "bitmask.sparsify",
        2 * n64 * size + mask_bytes + k * size,
        ms,
    );
    let ms = time_ms(dev, reps, || bitmask::densify(&b, &s).map(|_| ()))?;
    push(
        "bitmask.densify",
        n64 * size + mask_bytes + k * size + n64 * size,
        ms,
    );
    Ok(out)
}
