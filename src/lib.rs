//! tessera: hand-written CUDA and HIP kernels for efficient-ML systems, behind typed, safe Rust
//! ops, with a host SIMT executor that runs the same kernel source on a CPU and pure-Rust
//! references that are both the test oracle and the native CPU path.
//!
//! ```no_run
//! use tessera::{Device, ops::bitmask};
//! let dev = Device::best();
//! let base = dev.upload(&[1.0f32, 2.0, 3.0], "base").unwrap();
//! let new = dev.upload(&[1.0f32, 2.5, 3.0], "new").unwrap();
//! let sparse = bitmask::sparsify(&base, &new, 0.0).unwrap();
//! let back = bitmask::densify(&base, &sparse).unwrap();
//! assert_eq!(back.download().unwrap(), vec![1.0, 2.5, 3.0]);
//! ```

#![deny(unsafe_code)]

pub mod bench;
pub mod capi;
pub mod ckpt;
pub mod device;
pub mod drivers;
pub mod dtype;
pub mod error;
pub mod interop;
pub mod kernels;
pub mod ops;
pub mod parallel;
pub mod reference;
pub mod testing;
pub mod topology;
pub mod verify;

pub use device::{
    Backend, Device, DeviceBuffer, Event, LaunchConfig, Schedule, SimtConfig, Stream,
};
pub use dtype::{DType, DTypeKind, Float};
pub use error::{Error, Result};
