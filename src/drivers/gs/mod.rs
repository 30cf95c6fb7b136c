//! The 3DGS driver (issue 15): the standard INRIA `.ply` ([`ply`]), INRIA `cameras.json` and PNG
//! views ([`cameras`]), the synthetic scene ([`scene`]), the L1 + D-SSIM loss ([`loss`]),
//! density control and contributor balance ([`density`]), and training ([`train`]) — the code
//! behind `tessera gs`.

pub mod cameras;
pub mod density;
pub mod loss;
pub mod ply;
pub mod scene;
pub mod train;
