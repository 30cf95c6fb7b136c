//! Pure-Rust reference implementations: the oracle every executor is tested against, and the
//! native CPU path (`Device::cpu()`). Straightforward code, parallel with rayon where CPU users
//! need the speed.

pub mod attention;
pub mod bitmask;
pub mod c2c;
pub mod codec;
pub mod featcache;
pub mod gemm;
pub mod gmscore;
pub mod gs;
pub mod moe;
pub mod tah;
