//! 3D Gaussian Splatting kernels (issue 15): the typed ops of the rasteriser. Semantics and the
//! f64 oracle: [`crate::reference::gs`]; conventions: `docs/gs.md`.
//!
//! - [`bin`]: `gs.bin`, the 16×16 tile binning with our own device LSD radix sort.

pub mod bin;
