//! Thin model drivers built on the ops.

pub mod rexmoe;
pub mod tah;
