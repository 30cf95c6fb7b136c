//! The one error type of the crate. Every message names the op (or subsystem) and what was wrong.

use std::fmt;

/// Result alias used across tessera.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tessera. No user input causes a panic: it becomes one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was given inputs it cannot accept: wrong shape, length, dtype, alignment, device.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// The requested executor or device is not present on this machine (no driver, no library,
    /// no such ordinal). Never a panic: probing a machine without a GPU returns this.
    #[error("{backend}: device unavailable: {msg}")]
    DeviceUnavailable { backend: &'static str, msg: String },

    /// A driver, runtime or library call failed.
    #[error("{backend}: {call} failed: {msg}")]
    Driver {
        backend: &'static str,
        call: String,
        msg: String,
    },

    /// A kernel launch failed, or the host SIMT runtime caught a fault in it (divergent barrier,
    /// red-zone overwrite, argument mismatch). The message names the kernel and what it did.
    #[error("{backend}: kernel {kernel}: {msg}")]
    Kernel {
        backend: &'static str,
        kernel: String,
        msg: String,
    },

    /// The op or kernel is not built for this executor (e.g. HIP without the `hip` feature).
    #[error("{what} is not available: {msg}")]
    Unsupported { what: String, msg: String },

    /// An I/O error with the path or stream it concerned.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A file or stream that does not hold what it claims to (bad magic, checksum, truncation).
    #[error("{context}: {msg}")]
    Format { context: String, msg: String },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl fmt::Display) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.to_string(),
        }
    }

    /// Shorthand for [`Error::Kernel`].
    pub fn kernel(
        backend: &'static str,
        kernel: impl Into<String>,
        msg: impl fmt::Display,
    ) -> Self {
        Error::Kernel {
            backend,
            kernel: kernel.into(),
            msg: msg.to_string(),
        }
    }

    /// Shorthand for [`Error::Driver`].
    pub fn driver(backend: &'static str, call: impl Into<String>, msg: impl fmt::Display) -> Self {
        Error::Driver {
            backend,
            call: call.into(),
            msg: msg.to_string(),
        }
    }
}
