//! Checkpoint codec ops (BitSnap): gather of changed values, the lossless zigzag-delta value
//! codec, per-block bit packing, 1-D k-means and dequantisation.
//!
//! CONTRACT STUB: the signatures below are what the checkpoint driver (`src/ckpt`) codes against.
//! The kernel engineer replaces the bodies (kernels in cuda/ckpt/, reference in
//! src/reference/codec.rs) and may add items; changing a signature must be agreed.

use crate::device::DeviceBuffer;
use crate::dtype::{DType, Float};
use crate::error::{Error, Result};

/// Values per width block of [`Packed`].
pub const PACK_BLOCK: usize = 256;

/// Unsigned integers packed LSB-first at a bit width chosen per block of [`PACK_BLOCK`] values.
/// Block `j` has width `widths[j]` (0..=32) and starts at 32-bit word `8 * sum(widths[..j])`
/// (a full block of width w takes exactly 8w words), so every block decodes independently.
#[derive(Debug)]
pub struct Packed {
    pub words: DeviceBuffer<u32>,
    pub widths: DeviceBuffer<u8>,
    /// Number of packed values.
    pub count: usize,
}

/// 1-D k-means result: `2^bits` centroids sorted ascending and one index per value.
#[derive(Debug)]
pub struct KMeans {
    pub centroids: Vec<f32>,
    pub indices: DeviceBuffer<u8>,
    pub iterations: u32,
}

fn todo(op: &str) -> Error {
    Error::Unsupported { what: op.into(), msg: "contract stub, not yet implemented".into() }
}

/// The elements of `src` whose mask bit is set, in order (`count` = number of set bits).
pub fn gather<T: DType>(_src: &DeviceBuffer<T>, _mask: &DeviceBuffer<u32>, _count: usize) -> Result<DeviceBuffer<T>> {
    Err(todo("codec::gather"))
}

/// Lossless encoding of `new_vals` against `base_vals` (same length): each value becomes
/// zigzag(ord(new) - ord(base)), where ord maps a float's bit pattern to an integer that is
/// monotonic in the float's value, packed at a per-block width.
pub fn delta_encode<T: Float>(_base_vals: &DeviceBuffer<T>, _new_vals: &DeviceBuffer<T>) -> Result<Packed> {
    Err(todo("codec::delta_encode"))
}

/// Inverse of [`delta_encode`]: bit-exact on every executor.
pub fn delta_decode<T: Float>(_base_vals: &DeviceBuffer<T>, _packed: &Packed) -> Result<DeviceBuffer<T>> {
    Err(todo("codec::delta_decode"))
}

/// `new - base` in f32 for each pair (the deltas that delta quantisation clusters).
pub fn delta_f32<T: Float>(_base_vals: &DeviceBuffer<T>, _new_vals: &DeviceBuffer<T>) -> Result<DeviceBuffer<f32>> {
    Err(todo("codec::delta_f32"))
}

/// Widen to f32 (the values that weight quantisation clusters).
pub fn to_f32<T: Float>(_values: &DeviceBuffer<T>) -> Result<DeviceBuffer<f32>> {
    Err(todo("codec::to_f32"))
}

/// 1-D k-means with `2^bits` centroids, `bits` in {2, 3, 4, 8}; deterministic quantile
/// initialisation; stops after `max_iters` or when no centroid moves more than `tol` (relative
/// to the value range).
pub fn kmeans(_values: &DeviceBuffer<f32>, _bits: u32, _max_iters: u32, _tol: f32) -> Result<KMeans> {
    Err(todo("codec::kmeans"))
}

/// Pack `indices` (each < 2^bits) at a fixed width `bits` (every block has width `bits`).
pub fn pack_indices(_indices: &DeviceBuffer<u8>, _bits: u32) -> Result<Packed> {
    Err(todo("codec::pack_indices"))
}

/// Decode packed indices through `centroids`: `out[i] = round_T(base[i] + c[idx[i]])` with a
/// base, `round_T(c[idx[i]])` without (f32 add, then round-to-nearest-even to T). Bit-exact on
/// every executor.
pub fn dequantize<T: Float>(
    _indices: &Packed,
    _centroids: &[f32],
    _base_vals: Option<&DeviceBuffer<T>>,
) -> Result<DeviceBuffer<T>> {
    Err(todo("codec::dequantize"))
}
