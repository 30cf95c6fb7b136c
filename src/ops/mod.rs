//! Typed ops. Each op validates its inputs (lengths, dtypes, device identity, sizes), picks the
//! launch geometry, and launches its family's typed kernel declarations
//! ([`crate::device::kernel`]), or runs the reference on the native CPU path (`cpu_path`
//! decides). Ops never know which executor runs them.

pub mod attention;
pub mod bitmask;
pub mod codec;
pub mod table;
pub mod tah;

use crate::device::{Device, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Host access for the native CPU path: every buffer of a device without an executor is host
/// memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Host {
    op: &'static str,
}

impl Host {
    /// `b`'s elements. An error (not a panic) if `b` is not host memory, which validation
    /// (`on_device`) rules out before the CPU path runs.
    pub(crate) fn slice<T: DType>(self, b: &DeviceBuffer<T>) -> Result<&[T]> {
        b.host_slice().ok_or_else(|| {
            Error::invalid(
                self.op,
                format!(
                    "a {}-element buffer of the CPU path is not host memory",
                    b.len()
                ),
            )
        })
    }

    /// `b`'s elements, mutable.
    pub(crate) fn slice_mut<T: DType>(self, b: &mut DeviceBuffer<T>) -> Result<&mut [T]> {
        let len = b.len();
        b.host_slice_mut().ok_or_else(|| {
            Error::invalid(
                self.op,
                format!("a {len}-element buffer of the CPU path is not host memory"),
            )
        })
    }
}

/// The one place an op decides between the native CPU path (the reference on host memory:
/// `Some`) and its kernels (`None`: the device has an executor).
pub(crate) fn cpu_path(op: &'static str, dev: &Device) -> Option<Host> {
    (!dev.backend().runs_kernels()).then_some(Host { op })
}

/// Check that `buf` lives on `dev`.
pub(crate) fn on_device<T: DType>(
    op: &'static str,
    what: &str,
    dev: &Device,
    buf: &DeviceBuffer<T>,
) -> Result<()> {
    let other = buf.device();
    if dev.same(other) {
        Ok(())
    } else if other.backend().to_string() == dev.backend().to_string() {
        // Two devices that print alike: say why they are not the same.
        Err(Error::invalid(
            op,
            format!(
                "{what} is on another {} device (instance {}) than the op's (instance {}): each \
                 Device::simt*() or Device::cpu_separate() call makes a new device; use clones \
                 of one handle",
                dev.backend(),
                other.instance(),
                dev.instance()
            ),
        ))
    } else {
        Err(Error::invalid(
            op,
            format!(
                "{what} is on {} but the op runs on {}",
                other.backend(),
                dev.backend()
            ),
        ))
    }
}

/// Check that the base and new inputs of a pairwise op have the same number of elements.
pub(crate) fn same_len(op: &'static str, base: usize, new: usize) -> Result<()> {
    if base != new {
        return Err(Error::invalid(
            op,
            format!("base has {base} elements, new has {new}"),
        ));
    }
    Ok(())
}
