pub mod bitmask;
