//! Thin model drivers built on the ops.

pub mod c2c;
pub mod dd2;
pub mod gs;
pub mod rexmoe;
pub mod rlinf;
pub mod spagent;
pub mod specdiff;
pub mod tah;
