//! Thin model drivers built on the ops.

pub mod c2c;
pub mod gs;
pub mod rexmoe;
pub mod rlinf;
pub mod specdiff;
pub mod tah;
