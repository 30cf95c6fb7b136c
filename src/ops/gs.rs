//! 3D Gaussian Splatting kernels (issue 15): the rasteriser's stages as typed ops. The
//! conventions and the f64 reference: `docs/gs.md` and [`crate::reference::gs`].
//!
//! - [`project`]: `gs.project`, the EWA projection and its backward, and the SH colours
//!   (`gs.sh_colors`) and theirs; kernels `cuda/gs/project.cu`.
//! - [`bin`]: `gs.bin`, tile binning with our own stable device radix sort (`gs.sort_pairs`);
//!   kernels `cuda/gs/bin.cu`.
//! - [`render`]: `gs.render` (the forward, baseline and BalanceGS layouts) and
//!   `gs.render_backward`; kernels `cuda/gs/render.cu`.
//! - [`pipeline`]: the whole rasteriser in one call as gsplat's `rasterization()` (project, SH,
//!   bin, render) and its backward: the op table's `gs.render` and `gs.render_backward`.

pub mod bin;
pub mod pipeline;
pub mod project;
pub mod render;
