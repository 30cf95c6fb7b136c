//! The 3DGS driver (issue 15; in progress): so far the standard INRIA `.ply` reader and writer
//! ([`ply`]).

pub mod ply;
