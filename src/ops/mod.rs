//! Typed ops. Each op validates its inputs (lengths, dtypes, device identity, sizes), picks the
//! launch geometry, and launches through the device's executor, or runs the reference on the
//! native CPU path. Ops never know which executor runs them.

pub mod attention;
pub mod bitmask;
pub mod codec;

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
    if dev.same(buf.device()) {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!(
                "{what} is on {} but the op runs on {}",
                buf.device().backend(),
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
