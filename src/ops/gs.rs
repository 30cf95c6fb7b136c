//! 3D Gaussian Splatting (issue 15): the rasteriser's kernels as typed ops. The f64 oracle and
//! the conventions: [`crate::reference::gs`] and `docs/gs.md`.
//!
//! - [`render`]: `gs.render` (the forward, baseline and BalanceGS layouts) and
//!   `gs.render_backward`; kernels `cuda/gs/render.cu`.

pub mod render;
