//! 3D Gaussian Splatting kernels (issue 15): the typed ops of the rasteriser's stages. The
//! conventions and the f64 reference: `docs/gs.md` and [`crate::reference::gs`].
//!
//! - [`project`]: `gs.project`, the EWA projection and its backward, and the SH colours
//!   (`gs.sh_colors`) and theirs.

pub mod project;
