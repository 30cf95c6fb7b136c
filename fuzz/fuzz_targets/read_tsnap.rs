//! Fuzz the `.tsnap` reader: header, trailer, manifest parsing and validation, section
//! checksums, and the decoders behind them (on the CPU path, without a base), plus the
//! Rice-coded mask decoder on raw input. Any panic, overflow or unbounded allocation is a bug;
//! errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev = tessera::Device::cpu();
    let _ = tessera::ckpt::check_bytes(data, &dev);
    if data.len() >= 9 {
        let k = (data[0] % 40) as u32;
        let n = u32::from_le_bytes([data[1], data[2], data[3], 0]) as u64;
        let count = u32::from_le_bytes([data[4], data[5], data[6], 0]) as u64;
        let _ = tessera::ckpt::fuzzing::decode_rice_mask(&data[7..], k, n, count, "fuzz");
    }
});
