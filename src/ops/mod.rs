//! Typed ops. Each op validates its inputs (lengths, dtypes, device identity, sizes), picks the
//! launch geometry, and launches its family's typed kernel declarations
//! ([`crate::device::kernel`]), or runs the reference on the native CPU path (`cpu_path`
//! decides). Ops never know which executor runs them.

pub mod attention;
pub mod bitmask;
pub mod c2c;
pub mod codec;
pub mod featcache;
pub mod gemm;
pub mod gmscore;
pub mod gs;
pub mod moe;
pub mod table;
pub mod tah;

use std::sync::OnceLock;

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

/// Checks of input *contents* that an op ran on the device instead of copying the inputs to the
/// host: today the `cu_seqlens` of the attention ops. The op's kernels guard their indexing, so
/// invalid contents never cause an out-of-bounds access; they record what they found in a few
/// status words and write nothing else. [`DeviceCheck::check`] reads the words back (one
/// device-to-host copy, which waits for the op) and turns a fault into the same
/// [`Error::InvalidArgument`] naming the op that the CPU path returns at once.
///
/// So an op call itself neither copies to the host nor waits (it can be captured in a CUDA
/// graph); call `check` at a point where you synchronise anyway, or set the environment variable
/// `TESSERA_EAGER_CHECKS=1` (read once per process) to have every op check before it returns, as
/// a debugging switch. Until checked, the outputs of a call with invalid contents are
/// unspecified (the kernels leave them unwritten).
#[derive(Debug, Default)]
pub struct DeviceCheck {
    pending: Vec<PendingCheck>,
}

struct PendingCheck {
    op: &'static str,
    status: DeviceBuffer<i32>,
    explain: fn(&'static str, &[i32]) -> Result<()>,
}

impl std::fmt::Debug for PendingCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingCheck({}, {:?})", self.op, self.status)
    }
}

impl DeviceCheck {
    /// Nothing to check (the CPU path, which validates at once, and ops without device checks).
    pub fn none() -> DeviceCheck {
        DeviceCheck::default()
    }

    /// A check of `op` whose kernels write `status`; `explain` maps the words read back to
    /// `Ok` or the op's error.
    pub(crate) fn on_device(
        op: &'static str,
        status: DeviceBuffer<i32>,
        explain: fn(&'static str, &[i32]) -> Result<()>,
    ) -> DeviceCheck {
        DeviceCheck {
            pending: vec![PendingCheck {
                op,
                status,
                explain,
            }],
        }
    }

    /// Add `other`'s checks to these (an op built from other ops carries all of theirs).
    pub fn absorb(&mut self, other: DeviceCheck) {
        self.pending.extend(other.pending);
    }

    /// True when there is something for [`DeviceCheck::check`] to read.
    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Wait for the ops and report the first fault they recorded (one device-to-host copy per
    /// pending check; none when there is nothing pending).
    pub fn check(&self) -> Result<()> {
        for p in &self.pending {
            (p.explain)(p.op, &p.status.download()?)?;
        }
        Ok(())
    }

    /// `self`, checked at once when `TESSERA_EAGER_CHECKS=1`.
    pub(crate) fn eager_if_asked(self) -> Result<DeviceCheck> {
        if eager_checks() {
            self.check()?;
        }
        Ok(self)
    }
}

/// `TESSERA_EAGER_CHECKS=1`: ops check their device-side input checks before returning.
fn eager_checks() -> bool {
    static EAGER: OnceLock<bool> = OnceLock::new();
    *EAGER.get_or_init(|| std::env::var("TESSERA_EAGER_CHECKS").is_ok_and(|v| v == "1"))
}
