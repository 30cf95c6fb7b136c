//! `gs.bin` (issue 15): the 16×16 tile binning of projected Gaussians, bit-exact against
//! [`crate::reference::gs::raster::bin`], with our own device LSD radix sort ([`sort_pairs`]).
//! Kernels: `cuda/gs/bin.cu` (its header describes each launch).
//!
//! ## What it computes
//!
//! For every Gaussian `g` with `radii[g] > 0`, the tiles `[floor((x − r)/16),
//! ceil((x + r)/16))` × (the same in y), clamped to the grid, computed as the reference does on
//! the f32 inputs widened to f64 (exact; an f32 `x/16 + r/16` could round across a tile edge).
//! One key `(tile << 32) | bits(depth)` per touched tile, emitted Gaussian-major, tiles
//! row-major, then stably sorted by key (equal keys keep id order), and per-tile `[start, end)`
//! ranges (an empty tile gets `[s, s)`, `s` the first index whose tile is `>= t`).
//!
//! ## Device pipeline
//!
//! Per-Gaussian counts → a multi-block exclusive scan (u64) → key emission → an LSD radix sort
//! with 8-bit digits → ranges by binary search. The host reads back two small things, after the
//! scan and before anything is allocated from them: the total M (8 bytes: the keys must be
//! allocated) and the status words (8 bytes: a non-finite mean). The counts themselves never
//! leave the device. The sort only runs the passes whose digits can be non-zero: the four depth
//! digits (bits 0..32) and `ceil(tile_bits / 8)` tile digits, `tile_bits = ceil(log2(tiles))`
//! (a 1-tile image sorts the depth only). [`sort_pairs`] sorts all eight digits.

use crate::device::kernel::Grid;
use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device, DeviceCheck};
use crate::reference::gs as reference;

/// The op name in errors.
pub const OP: &str = "gs.bin";
/// [`sort_pairs`]' name in errors.
pub const SORT_OP: &str = "gs.sort_pairs";
/// Threads per block of every kernel (`gs::kThreads`).
const THREADS: u32 = 256;
/// Values per block of the scan (`gs::kScanChunk`).
const SCAN_CHUNK: usize = 1024;
/// Elements per block of the radix sort (`gs::kSortChunk`).
const SORT_CHUNK: usize = 4096;
/// Grid-stride kernels use at most this many blocks.
const MAX_BLOCKS: usize = 1 << 16;

crate::kernels! {
    module = "gs/bin";
    /// Per-Gaussian tile counts and the input check.
    pub(crate) struct CountKernel<'a> = "gs_bin_count" block = THREADS {
        means2d: &'a DeviceBuffer<f32>,
        radii: &'a DeviceBuffer<i32>,
        n: u32,
        tiles_x: u32,
        tiles_y: u32,
        counts: &'a mut DeviceBuffer<u64>,
        status: &'a mut DeviceBuffer<i32>,
    }
    /// Chunk-local exclusive scan and chunk totals.
    pub(crate) struct ScanBlocksKernel<'a> = "gs_scan_blocks" block = THREADS {
        input: &'a DeviceBuffer<u64>,
        n: u32,
        out: &'a mut DeviceBuffer<u64>,
        block_sums: &'a mut DeviceBuffer<u64>,
    }
    /// Exclusive scan of the chunk totals (one block) and the grand total.
    pub(crate) struct ScanTopKernel<'a> = "gs_scan_top" block = THREADS {
        block_sums: &'a mut DeviceBuffer<u64>,
        nblocks: u32,
        total: &'a mut DeviceBuffer<u64>,
    }
    /// Adds each chunk's prefix.
    pub(crate) struct ScanAddKernel<'a> = "gs_scan_add" block = THREADS {
        out: &'a mut DeviceBuffer<u64>,
        n: u32,
        block_sums: &'a DeviceBuffer<u64>,
    }
    /// Keys and ids in emission order.
    pub(crate) struct EmitKernel<'a> = "gs_bin_emit" block = THREADS {
        means2d: &'a DeviceBuffer<f32>,
        depths: &'a DeviceBuffer<f32>,
        radii: &'a DeviceBuffer<i32>,
        n: u32,
        tiles_x: u32,
        tiles_y: u32,
        offsets: &'a DeviceBuffer<u64>,
        keys: &'a mut DeviceBuffer<u64>,
        ids: &'a mut DeviceBuffer<u32>,
    }
    /// Per-block digit histograms of one radix pass.
    pub(crate) struct SortHistKernel<'a> = "gs_sort_hist" block = THREADS {
        keys: &'a DeviceBuffer<u64>,
        m: u32,
        shift: u32,
        hist: &'a mut DeviceBuffer<u64>,
    }
    /// The stable scatter of one radix pass.
    pub(crate) struct SortScatterKernel<'a> = "gs_sort_scatter" block = THREADS {
        keys_in: &'a DeviceBuffer<u64>,
        ids_in: &'a DeviceBuffer<u32>,
        m: u32,
        shift: u32,
        starts: &'a DeviceBuffer<u64>,
        keys_out: &'a mut DeviceBuffer<u64>,
        ids_out: &'a mut DeviceBuffer<u32>,
    }
    /// Per-tile ranges by binary search of the sorted keys.
    pub(crate) struct RangesKernel<'a> = "gs_bin_ranges" block = THREADS {
        keys: &'a DeviceBuffer<u64>,
        m: u32,
        n_tiles: u32,
        ranges: &'a mut DeviceBuffer<u32>,
    }
}

/// The sorted tile/Gaussian intersections of one image (the output of [`bin`]; the device form
/// of [`reference::raster::Bins`]).
pub struct Bins {
    /// `[M]` sorted keys `(tile << 32) | bits(depth)`.
    pub keys: DeviceBuffer<u64>,
    /// `[M]` the Gaussian id of each key.
    pub ids: DeviceBuffer<u32>,
    /// `[tiles_y · tiles_x · 2]`: `[start, end)` per tile (`ty · tiles_x + tx`).
    pub tile_ranges: DeviceBuffer<u32>,
    /// Tiles per row, `ceil(width / 16)`.
    pub tiles_x: u32,
    /// Tile rows, `ceil(height / 16)`.
    pub tiles_y: u32,
}

impl Bins {
    /// Downloads into the reference's form.
    pub fn download(&self) -> Result<reference::raster::Bins> {
        let r = self.tile_ranges.download()?;
        Ok(reference::raster::Bins {
            keys: self.keys.download()?,
            ids: self.ids.download()?,
            tile_ranges: r.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
            tiles_x: self.tiles_x,
            tiles_y: self.tiles_y,
        })
    }
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, msg)
}

fn non_finite(g: usize) -> Error {
    invalid(format!(
        "means2d[{g}] is not finite (NaN or infinite) for a Gaussian with radius > 0"
    ))
}

/// Grid-stride blocks for `n` threads of work.
fn stride_blocks(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32
}

/// `gs.bin`: bins the projected Gaussians (`means2d [N,2]`, `depths [N]`, `radii [N]`, the
/// outputs of `gs.project`) into the 16×16 tiles of a `width × height` image; the result equals
/// [`reference::raster::bin`] of the widened inputs bit for bit (keys, ids, ranges).
///
/// Errors ([`Error::InvalidArgument`] naming `gs.bin`): `means2d` not of `2·N` or `depths` not
/// of `N` elements, buffers on different devices, a zero width or height, more than
/// `u32::MAX` Gaussians, tiles or intersections, a non-finite mean of a Gaussian with radius
/// `> 0` (found on the device: status words read back before returning). A Gaussian with
/// radius `<= 0` is culled whatever its other values.
pub fn bin(
    means2d: &DeviceBuffer<f32>,
    depths: &DeviceBuffer<f32>,
    radii: &DeviceBuffer<i32>,
    width: u32,
    height: u32,
) -> Result<Bins> {
    let dev = radii.device().clone();
    let n = radii.len();
    if means2d.len() != 2 * n || depths.len() != n {
        return Err(invalid(format!(
            "mismatched lengths: radii {n}, means2d {} (want {}), depths {} (want {n})",
            means2d.len(),
            2 * n,
            depths.len()
        )));
    }
    on_device(OP, "means2d", &dev, means2d)?;
    on_device(OP, "depths", &dev, depths)?;
    if width == 0 || height == 0 {
        return Err(invalid(format!("zero-size image {width}x{height}")));
    }
    if n > u32::MAX as usize {
        return Err(invalid(format!("{n} Gaussians exceed u32::MAX")));
    }
    let (tiles_x, tiles_y) = reference::raster::tile_grid(width, height);
    let n_tiles = tiles_x as u64 * tiles_y as u64;
    if n_tiles > u64::from(u32::MAX) {
        return Err(invalid(format!(
            "{tiles_x}x{tiles_y} tiles exceed u32::MAX (image {width}x{height})"
        )));
    }
    let n_tiles = n_tiles as usize;

    if let Some(h) = cpu_path(OP, &dev) {
        let (m, d, r) = (h.slice(means2d)?, h.slice(depths)?, h.slice(radii)?);
        let mut p = reference::Projected {
            means2d: Vec::with_capacity(n),
            depths: d.iter().map(|&v| f64::from(v)).collect(),
            conics: vec![[0.0; 3]; n],
            radii: r.to_vec(),
        };
        for g in 0..n {
            let xy = [f64::from(m[2 * g]), f64::from(m[2 * g + 1])];
            if r[g] > 0 && !(xy[0].is_finite() && xy[1].is_finite()) {
                return Err(non_finite(g));
            }
            p.means2d.push(xy);
        }
        let b = reference::raster::bin(&p, width, height);
        if b.keys.len() > u32::MAX as usize {
            return Err(too_many(b.keys.len() as u64));
        }
        let ranges: Vec<u32> = b.tile_ranges.iter().flatten().copied().collect();
        return Ok(Bins {
            keys: dev.upload(&b.keys, "gs.keys")?,
            ids: dev.upload(&b.ids, "gs.ids")?,
            tile_ranges: dev.upload(&ranges, "gs.tile_ranges")?,
            tiles_x,
            tiles_y,
        });
    }

    // 1-2. Counts, their exclusive scan, and the total M (read back: the keys are allocated
    // from it).
    let mut offsets = dev.alloc::<u64>(n, "gs.offsets")?;
    let mut m = 0u64;
    if n > 0 {
        let mut counts = dev.alloc::<u64>(n, "gs.counts")?;
        let mut status = dev.upload(&[0i32, i32::MAX], "gs.status")?;
        CountKernel {
            means2d,
            radii,
            n: n as u32,
            tiles_x,
            tiles_y,
            counts: &mut counts,
            status: &mut status,
        }
        .launch(&dev, Grid::linear(stride_blocks(n)))?;
        let mut total = dev.alloc::<u64>(1, "gs.total")?;
        scan(&dev, &counts, &mut offsets, &mut total)?;
        m = total.download()?[0];
        DeviceCheck::on_device(OP, status, explain).check()?;
    }
    if m > u64::from(u32::MAX) {
        return Err(too_many(m));
    }
    let m = m as usize;

    // 3. Emission.
    let mut keys = dev.alloc::<u64>(m, "gs.keys")?;
    let mut ids = dev.alloc::<u32>(m, "gs.ids")?;
    if m > 0 {
        EmitKernel {
            means2d,
            depths,
            radii,
            n: n as u32,
            tiles_x,
            tiles_y,
            offsets: &offsets,
            keys: &mut keys,
            ids: &mut ids,
        }
        .launch(&dev, Grid::linear(stride_blocks(n)))?;
    }
    drop(offsets);

    // 4. The sort, on the digits that can be non-zero.
    let tile_bits = if n_tiles <= 1 {
        0
    } else {
        64 - (n_tiles as u64 - 1).leading_zeros()
    };
    let (keys, ids) = radix_sort(&dev, keys, ids, &digit_shifts(32 + tile_bits))?;

    // 5. Ranges.
    let mut tile_ranges = dev.alloc::<u32>(2 * n_tiles, "gs.tile_ranges")?;
    RangesKernel {
        keys: &keys,
        m: m as u32,
        n_tiles: n_tiles as u32,
        ranges: &mut tile_ranges,
    }
    .launch(&dev, Grid::linear(stride_blocks(n_tiles)))?;
    Ok(Bins {
        keys,
        ids,
        tile_ranges,
        tiles_x,
        tiles_y,
    })
}

fn too_many(m: u64) -> Error {
    invalid(format!("{m} tile/Gaussian intersections exceed u32::MAX"))
}

/// The verdict of the status words `[code, first index]`.
fn explain(op: &'static str, w: &[i32]) -> Result<()> {
    match w {
        [0, ..] => Ok(()),
        &[1, g] => Err(Error::invalid(
            op,
            format!("means2d[{g}] is not finite (NaN or infinite) for a Gaussian with radius > 0"),
        )),
        _ => Err(Error::invalid(op, format!("unknown device status {w:?}"))),
    }
}

/// The shifts of the 8-bit digits that cover bits `0..bits`.
fn digit_shifts(bits: u32) -> Vec<u32> {
    (0..bits.div_ceil(8)).map(|d| 8 * d).collect()
}

/// Exclusive scan of `input` into `out` (same length, > 0), the sum into `total[0]`.
fn scan(
    dev: &Device,
    input: &DeviceBuffer<u64>,
    out: &mut DeviceBuffer<u64>,
    total: &mut DeviceBuffer<u64>,
) -> Result<()> {
    let n = input.len();
    let nb = n.div_ceil(SCAN_CHUNK);
    let mut block_sums = dev.alloc::<u64>(nb, "gs.scan_sums")?;
    ScanBlocksKernel {
        input,
        n: n as u32,
        out: &mut *out,
        block_sums: &mut block_sums,
    }
    .launch(dev, Grid::linear(nb as u32))?;
    ScanTopKernel {
        block_sums: &mut block_sums,
        nblocks: nb as u32,
        total,
    }
    .launch(dev, Grid::linear(1))?;
    ScanAddKernel {
        out,
        n: n as u32,
        block_sums: &block_sums,
    }
    .launch(dev, Grid::linear(nb as u32))
}

/// The stable LSD radix sort of (key, id) pairs on the digits at `shifts` (ascending), owning
/// its inputs; returns the sorted pairs.
fn radix_sort(
    dev: &Device,
    mut keys: DeviceBuffer<u64>,
    mut ids: DeviceBuffer<u32>,
    shifts: &[u32],
) -> Result<(DeviceBuffer<u64>, DeviceBuffer<u32>)> {
    let m = keys.len();
    if m <= 1 || shifts.is_empty() {
        return Ok((keys, ids));
    }
    let nb = m.div_ceil(SORT_CHUNK);
    let mut keys2 = dev.alloc::<u64>(m, "gs.sort_keys")?;
    let mut ids2 = dev.alloc::<u32>(m, "gs.sort_ids")?;
    let mut hist = dev.alloc::<u64>(256 * nb, "gs.sort_hist")?;
    let mut starts = dev.alloc::<u64>(256 * nb, "gs.sort_starts")?;
    let mut total = dev.alloc::<u64>(1, "gs.sort_total")?;
    for &shift in shifts {
        SortHistKernel {
            keys: &keys,
            m: m as u32,
            shift,
            hist: &mut hist,
        }
        .launch(dev, Grid::linear(nb as u32))?;
        scan(dev, &hist, &mut starts, &mut total)?;
        SortScatterKernel {
            keys_in: &keys,
            ids_in: &ids,
            m: m as u32,
            shift,
            starts: &starts,
            keys_out: &mut keys2,
            ids_out: &mut ids2,
        }
        .launch(dev, Grid::linear(nb as u32))?;
        std::mem::swap(&mut keys, &mut keys2);
        std::mem::swap(&mut ids, &mut ids2);
    }
    Ok((keys, ids))
}

/// `gs.sort_pairs`: the device LSD radix sort of `gs.bin` on its own: (key, id) pairs sorted by
/// the whole u64 key (eight 8-bit digits), stably (equal keys keep their input order), into new
/// buffers. Equals a stable host sort by key bit for bit.
///
/// Errors ([`Error::InvalidArgument`] naming `gs.sort_pairs`): lengths that differ, buffers on
/// different devices, more than `u32::MAX` pairs.
pub fn sort_pairs(
    keys: &DeviceBuffer<u64>,
    ids: &DeviceBuffer<u32>,
) -> Result<(DeviceBuffer<u64>, DeviceBuffer<u32>)> {
    let dev = keys.device().clone();
    let m = keys.len();
    if ids.len() != m {
        return Err(Error::invalid(
            SORT_OP,
            format!("mismatched lengths: keys {m}, ids {}", ids.len()),
        ));
    }
    on_device(SORT_OP, "ids", &dev, ids)?;
    if m > u32::MAX as usize {
        return Err(Error::invalid(
            SORT_OP,
            format!("{m} pairs exceed u32::MAX"),
        ));
    }
    let mut k = dev.alloc::<u64>(m, "gs.sort_keys")?;
    let mut i = dev.alloc::<u32>(m, "gs.sort_ids")?;
    if let Some(h) = cpu_path(SORT_OP, &dev) {
        let mut pairs: Vec<(u64, u32)> = h
            .slice(keys)?
            .iter()
            .copied()
            .zip(h.slice(ids)?.iter().copied())
            .collect();
        pairs.sort_by_key(|&(key, _)| key);
        for (dst, (key, _)) in h.slice_mut(&mut k)?.iter_mut().zip(&pairs) {
            *dst = *key;
        }
        for (dst, (_, id)) in h.slice_mut(&mut i)?.iter_mut().zip(&pairs) {
            *dst = *id;
        }
        return Ok((k, i));
    }
    if m == 0 {
        return Ok((k, i));
    }
    k.copy_from(keys)?;
    i.copy_from(ids)?;
    radix_sort(&dev, k, i, &digit_shifts(64))
}

/// Run [`bin`] on `dev` from host slices (tests, verify): upload, bin, download.
pub fn bin_host(
    dev: &Device,
    means2d: &[f32],
    depths: &[f32],
    radii: &[i32],
    width: u32,
    height: u32,
) -> Result<reference::raster::Bins> {
    bin(
        &dev.upload(means2d, "means2d")?,
        &dev.upload(depths, "depths")?,
        &dev.upload(radii, "radii")?,
        width,
        height,
    )?
    .download()
}

/// Run [`sort_pairs`] on `dev` from host slices: upload, sort, download.
pub fn sort_pairs_host(dev: &Device, keys: &[u64], ids: &[u32]) -> Result<(Vec<u64>, Vec<u32>)> {
    let (k, i) = sort_pairs(&dev.upload(keys, "keys")?, &dev.upload(ids, "ids")?)?;
    Ok((k.download()?, i.download()?))
}
