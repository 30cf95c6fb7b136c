//! Typed ops. Each op validates its inputs (lengths, dtypes, device identity, sizes), picks the
//! launch geometry, and launches through the device's executor, or runs the reference on the
//! native CPU path. Ops never know which executor runs them.

pub mod attention;
pub mod bitmask;
pub mod codec;
pub mod tah;

use crate::device::{Device, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};

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
