//! 3D Gaussian Splatting kernels (issue 15): the rasteriser's stages as typed ops. The
//! conventions and the f64 reference: `docs/gs.md` and [`crate::reference::gs`].
//!
//! - [`project`]: `gs.project`, the EWA projection and its backward, and the SH colours
//!   (`gs.sh_colors`) and theirs; kernels `cuda/gs/project.cu`.
//! - [`render`]: `gs.render` (the forward, baseline and BalanceGS layouts) and
//!   `gs.render_backward`; kernels `cuda/gs/render.cu`.

pub mod project;
pub mod render;
