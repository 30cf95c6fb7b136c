//! Thin model drivers built on the ops.

pub mod tah;
