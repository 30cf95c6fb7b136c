//! SpecDiff's per-token feature ring and its ops (issue 14), re-exported from
//! [`crate::ops::featcache`]: [`gather`] (pack the recomputed tokens' rows), [`scatter`] (write
//! the recomputed rows back and push them into the ring), [`reuse`] (class 2: the newest cached
//! feature; class 3: the weighted sum of the cached features) and [`age`] (the `cf` counters).
//! Semantics and the reference: [`crate::reference::featcache`] ([`reference::Ring`],
//! [`reference::scatter`], ...); kernels: `cuda/featcache/ring.cu`.
//!
//! Every op validates before it writes: lengths, sizes and devices on the host; the contents
//! (indices, classes, ring states, stamp gaps) in a check kernel that records the first bad
//! entry, after which the writing kernel does nothing. The op reads that status word back (a
//! host wait, like `featcache.select`) and, on a fault, downloads the few entries it needs to
//! name it with the reference's own message. So an error leaves `x`, the ring and `cf` as they
//! were, on every executor. `gather` allows repeated indices (a read); `scatter` does not.
//!
//! Exactness: gather, scatter and class 2 are copies, `age` is integer: bit-exact. Class 3 is
//! bit-exact too: the weights and the weighted sum are f64 with each operation rounded on its own
//! (no FMA contraction), the decays `e^(−1)`, `e^(−2)`, `e^(−3)` come from the host
//! ([`reference::reuse_decay`]), and the result is rounded once to f32, exactly as the reference.

use crate::device::kernel::Grid;
use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::{cpu_path, on_device};
use crate::reference::featcache as reference;

use super::EXP_TABLE_LEN;

/// Slots of the per-token feature ring (the last three features).
pub const RING: usize = reference::RING;

/// Op names in errors.
pub const GATHER: &str = "featcache.gather";
pub const SCATTER: &str = "featcache.scatter";
pub const REUSE: &str = "featcache.reuse";
pub const AGE: &str = "featcache.age";
/// [`Ring::new`] and [`Ring::from_parts`].
pub const RING_OP: &str = "featcache.ring";

/// Threads per block (`kThreads`).
const THREADS: u32 = 256;
/// Blocks of the grid-stride kernels at most (thread per entry).
const MAX_BLOCKS: usize = 1024;
/// Blocks of the row kernels at most (block per row).
const MAX_ROW_BLOCKS: usize = 65535;
/// The status word's "nothing found".
const NONE: u32 = u32::MAX;

crate::kernels! {
    module = "featcache/ring";
    /// `rows[j, :] = x[c1[j], :]` (block per row; bad indices recorded).
    pub(crate) struct GatherKernel<'a> = "featcache_ring_gather" block = THREADS {
        x: &'a DeviceBuffer<f32>,
        width: u32,
        n: u32,
        c1: &'a DeviceBuffer<u32>,
        m: u32,
        rows: &'a mut DeviceBuffer<f32>,
        status: &'a mut DeviceBuffer<u32>,
    }
    /// `mark[c1[j]] = none` for the valid indices.
    pub(crate) struct ScatterInitKernel<'a> = "featcache_ring_scatter_init" block = THREADS {
        c1: &'a DeviceBuffer<u32>,
        m: u32,
        n: u32,
        mark: &'a mut DeviceBuffer<u32>,
    }
    /// The first entry of each token; range and ring-state checks.
    pub(crate) struct ScatterMarkKernel<'a> = "featcache_ring_scatter_mark" block = THREADS {
        c1: &'a DeviceBuffer<u32>,
        m: u32,
        n: u32,
        head: &'a DeviceBuffer<u8>,
        len: &'a DeviceBuffer<u8>,
        mark: &'a mut DeviceBuffer<u32>,
        status: &'a mut DeviceBuffer<u32>,
    }
    /// Repeated indices.
    pub(crate) struct ScatterCheckKernel<'a> = "featcache_ring_scatter_check" block = THREADS {
        c1: &'a DeviceBuffer<u32>,
        m: u32,
        n: u32,
        mark: &'a DeviceBuffer<u32>,
        status: &'a mut DeviceBuffer<u32>,
    }
    /// The writes and the pushes (block per row), when the checks found nothing.
    pub(crate) struct ScatterKernel<'a> = "featcache_ring_scatter" block = THREADS {
        rows: &'a DeviceBuffer<f32>,
        c1: &'a DeviceBuffer<u32>,
        m: u32,
        n: u32,
        width: u32,
        t_now: f32,
        x: &'a mut DeviceBuffer<f32>,
        feat: &'a mut DeviceBuffer<f32>,
        stamp: &'a mut DeviceBuffer<f32>,
        head: &'a mut DeviceBuffer<u8>,
        len: &'a mut DeviceBuffer<u8>,
        status: &'a DeviceBuffer<u32>,
    }
    /// Class values, ring states, empty rings, stamp gaps.
    pub(crate) struct ReuseCheckKernel<'a> = "featcache_ring_reuse_check" block = THREADS {
        cls: &'a DeviceBuffer<u8>,
        n: u32,
        head: &'a DeviceBuffer<u8>,
        len: &'a DeviceBuffer<u8>,
        stamp: &'a DeviceBuffer<f32>,
        t_now: f32,
        status: &'a mut DeviceBuffer<u32>,
    }
    /// Class 2 and 3 rows (block per token), when the check found nothing.
    pub(crate) struct ReuseKernel<'a> = "featcache_ring_reuse" block = THREADS {
        cls: &'a DeviceBuffer<u8>,
        n: u32,
        width: u32,
        feat: &'a DeviceBuffer<f32>,
        stamp: &'a DeviceBuffer<f32>,
        head: &'a DeviceBuffer<u8>,
        len: &'a DeviceBuffer<u8>,
        t_now: f32,
        decay1_bits: u64,
        decay2_bits: u64,
        decay3_bits: u64,
        x: &'a mut DeviceBuffer<f32>,
        status: &'a DeviceBuffer<u32>,
    }
    /// Class values.
    pub(crate) struct ClassCheckKernel<'a> = "featcache_ring_class_check" block = THREADS {
        cls: &'a DeviceBuffer<u8>,
        n: u32,
        status: &'a mut DeviceBuffer<u32>,
    }
    /// The `cf` update, when the check found nothing.
    pub(crate) struct AgeKernel<'a> = "featcache_ring_age" block = THREADS {
        cls: &'a DeviceBuffer<u8>,
        n: u32,
        limit: u32,
        cf: &'a mut DeviceBuffer<u32>,
        status: &'a DeviceBuffer<u32>,
    }
}

/// The per-token feature ring: the last (up to) [`RING`] features of each of `n` tokens (width
/// `w`, f32) and the timestep each was computed at. Token `i`'s newest feature is in slot
/// `head[i]`, its k-th newest in `(head[i] + RING − k) % RING` for `k < len[i]`; a push
/// ([`scatter`]) writes slot `(head[i] + 1) % RING` and saturates `len` at [`RING`] (the oldest
/// is overwritten). The fields are public so that a driver can read or checkpoint them; a
/// `head >= RING` or `len > RING` written into them is an error of the ops that read that
/// token, never an access out of bounds.
pub struct Ring {
    /// `[RING, n, w]`.
    pub feat: DeviceBuffer<f32>,
    /// `[RING, n]`: the timestep each feature was computed at.
    pub stamp: DeviceBuffer<f32>,
    /// `[n]`: the slot of the newest feature.
    pub head: DeviceBuffer<u8>,
    /// `[n]`: valid slots, `0..=RING`.
    pub len: DeviceBuffer<u8>,
    n: usize,
    w: usize,
}

impl Ring {
    /// An empty ring on `device` (every `len` 0, `head` 0, features and stamps 0). Errors:
    /// `w == 0`, sizes past `u32::MAX` elements per dimension or overflowing.
    pub fn new(device: &Device, n: usize, w: usize) -> Result<Ring> {
        check_sizes(RING_OP, n, w)?;
        let feat_len = RING
            .checked_mul(n)
            .and_then(|v| v.checked_mul(w))
            .ok_or_else(|| Error::invalid(RING_OP, format!("a ring of {n} × {w} overflows")))?;
        Ok(Ring {
            feat: device.upload(&vec![0f32; feat_len], "featcache.ring.feat")?,
            stamp: device.upload(&vec![0f32; RING * n], "featcache.ring.stamp")?,
            head: device.upload(&vec![0u8; n], "featcache.ring.head")?,
            len: device.upload(&vec![0u8; n], "featcache.ring.len")?,
            n,
            w,
        })
    }

    /// A ring made of existing buffers (the op table's runners; a checkpointed ring), checked:
    /// the lengths must be `[RING, n, w]`, `[RING, n]`, `[n]`, `[n]`, on one device, `w >= 1`.
    pub fn from_parts(
        feat: DeviceBuffer<f32>,
        stamp: DeviceBuffer<f32>,
        head: DeviceBuffer<u8>,
        len: DeviceBuffer<u8>,
        n: usize,
        w: usize,
    ) -> Result<Ring> {
        let r = Ring {
            feat,
            stamp,
            head,
            len,
            n,
            w,
        };
        check_sizes(RING_OP, n, w)?;
        r.check(RING_OP, &r.feat.device().clone())?;
        Ok(r)
    }

    /// The buffers, in the order of [`Ring::from_parts`].
    pub fn into_parts(
        self,
    ) -> (
        DeviceBuffer<f32>,
        DeviceBuffer<f32>,
        DeviceBuffer<u8>,
        DeviceBuffer<u8>,
    ) {
        (self.feat, self.stamp, self.head, self.len)
    }

    /// Tokens.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Feature width.
    pub fn width(&self) -> usize {
        self.w
    }

    /// The device the ring lives on.
    pub fn device(&self) -> &Device {
        self.feat.device()
    }

    /// Download into the host model (tests, checkpoints).
    pub fn to_host(&self) -> Result<reference::Ring> {
        Ok(reference::Ring {
            n: self.n,
            w: self.w,
            feat: self.feat.download()?,
            stamp: self.stamp.download()?,
            head: self.head.download()?,
            len: self.len.download()?,
        })
    }

    /// Upload a host model onto `device`.
    pub fn from_host(device: &Device, r: &reference::Ring) -> Result<Ring> {
        Ring::from_parts(
            device.upload(&r.feat, "featcache.ring.feat")?,
            device.upload(&r.stamp, "featcache.ring.stamp")?,
            device.upload(&r.head, "featcache.ring.head")?,
            device.upload(&r.len, "featcache.ring.len")?,
            r.n,
            r.w,
        )
    }

    /// The buffers hold `n` tokens of width `w` and live on `dev`.
    fn check(&self, op: &'static str, dev: &Device) -> Result<()> {
        let want = [
            ("ring.feat", self.feat.len(), RING * self.n * self.w),
            ("ring.stamp", self.stamp.len(), RING * self.n),
            ("ring.head", self.head.len(), self.n),
            ("ring.len", self.len.len(), self.n),
        ];
        for (what, have, need) in want {
            if have != need {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{what} has {have} elements, a ring of n {} × width {} needs {need}",
                        self.n, self.w
                    ),
                ));
            }
        }
        on_device(op, "ring.feat", dev, &self.feat)?;
        on_device(op, "ring.stamp", dev, &self.stamp)?;
        on_device(op, "ring.head", dev, &self.head)?;
        on_device(op, "ring.len", dev, &self.len)
    }
}

/// `w >= 1`; `n`, `w` within u32 (kernel arguments).
fn check_sizes(op: &'static str, n: usize, w: usize) -> Result<()> {
    if w == 0 {
        return Err(Error::invalid(op, "width is 0"));
    }
    if n > u32::MAX as usize - 1 || w > u32::MAX as usize {
        return Err(Error::invalid(
            op,
            format!("{n} tokens of width {w} exceed the u32 sizes of the kernels"),
        ));
    }
    Ok(())
}

fn blocks(entries: usize) -> Grid {
    Grid::linear(entries.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32)
}

fn row_blocks(rows: usize) -> Grid {
    Grid::linear(rows.clamp(1, MAX_ROW_BLOCKS) as u32)
}

/// One element of `b` (the fault explanations).
fn one<T: crate::dtype::DType>(b: &DeviceBuffer<T>, i: usize) -> Result<T> {
    Ok(b.download_range(i, 1)?[0])
}

/// The first bad entry the check kernels recorded, if any (a host wait).
fn first_bad(status: &DeviceBuffer<u32>) -> Result<Option<usize>> {
    let s = status.download()?[0];
    Ok((s != NONE).then_some(s as usize))
}

/// `rows[j, :] = x[c1[j], :]` (`x` `[n, width]` f32; returns `[c1.len(), width]`). Repeated
/// indices are allowed (a read).
///
/// Errors ([`Error::InvalidArgument`] naming `featcache.gather`): `width` 0 or not dividing
/// `x`'s length, `c1` on another device, sizes past u32, an index `>= n` (found on the device
/// and read back: the first such entry is named).
pub fn gather(
    x: &DeviceBuffer<f32>,
    width: usize,
    c1: &DeviceBuffer<u32>,
) -> Result<DeviceBuffer<f32>> {
    let inv = |m: String| Error::invalid(GATHER, m);
    if width == 0 {
        return Err(inv("width is 0".into()));
    }
    if x.len() % width != 0 {
        return Err(inv(format!(
            "x has {} elements, not a multiple of width {width}",
            x.len()
        )));
    }
    let dev = x.device().clone();
    let (n, m) = (x.len() / width, c1.len());
    check_sizes(GATHER, n, width)?;
    if m > u32::MAX as usize - 1 {
        return Err(inv(format!("{m} indices exceed u32")));
    }
    on_device(GATHER, "c1", &dev, c1)?;
    let mut rows = dev.alloc::<f32>(m * width, "featcache.rows")?;
    if let Some(h) = cpu_path(GATHER, &dev) {
        let r = reference::gather(h.slice(x)?, width, h.slice(c1)?).map_err(inv)?;
        h.slice_mut(&mut rows)?.copy_from_slice(&r);
        return Ok(rows);
    }
    if m == 0 {
        return Ok(rows);
    }
    let mut status = dev.upload(&[NONE], "featcache.status")?;
    GatherKernel {
        x,
        width: width as u32,
        n: n as u32,
        c1,
        m: m as u32,
        rows: &mut rows,
        status: &mut status,
    }
    .launch(&dev, row_blocks(m))?;
    if let Some(j) = first_bad(&status)? {
        return Err(inv(reference::index_fault(j, one(c1, j)?, n)));
    }
    Ok(rows)
}

/// `x[c1[j], :] = rows[j, :]`, and `rows[j]` is pushed into token `c1[j]`'s ring as its newest
/// feature with stamp `t_now` (head advances, len saturates at [`RING`], the oldest is
/// overwritten).
///
/// Errors ([`Error::InvalidArgument`] naming `featcache.scatter`; nothing is written): `x` not
/// `n · w` or `rows` not `c1.len() · w` elements (n, w: the ring's), a ring whose buffers do not
/// hold n × w, a buffer on another device, a non-finite `t_now`; found on the device and read
/// back (the first bad entry is named): an index `>= n`, an index repeated within `c1`, a token
/// whose ring state is corrupt (`head >= RING` or `len > RING`).
pub fn scatter(
    rows: &DeviceBuffer<f32>,
    c1: &DeviceBuffer<u32>,
    t_now: f32,
    x: &mut DeviceBuffer<f32>,
    ring: &mut Ring,
) -> Result<()> {
    let inv = |m: String| Error::invalid(SCATTER, m);
    let dev = x.device().clone();
    let (n, w, m) = (ring.n, ring.w, c1.len());
    ring.check(SCATTER, &dev)?;
    if x.len() != n * w || rows.len() != m * w {
        return Err(inv(format!(
            "mismatched lengths: rows {} (c1 {m} × width {w}), x {} (n {n} × width {w})",
            rows.len(),
            x.len()
        )));
    }
    if !t_now.is_finite() {
        return Err(inv(format!("t_now = {t_now} is not finite")));
    }
    if m > u32::MAX as usize - 1 {
        return Err(inv(format!("{m} indices exceed u32")));
    }
    on_device(SCATTER, "rows", &dev, rows)?;
    on_device(SCATTER, "c1", &dev, c1)?;
    if let Some(h) = cpu_path(SCATTER, &dev) {
        let view = reference::RingMut {
            n,
            w,
            feat: h.slice_mut(&mut ring.feat)?,
            stamp: h.slice_mut(&mut ring.stamp)?,
            head: h.slice_mut(&mut ring.head)?,
            len: h.slice_mut(&mut ring.len)?,
        };
        return reference::scatter(h.slice(rows)?, h.slice(c1)?, t_now, h.slice_mut(x)?, view)
            .map_err(inv);
    }
    if m == 0 {
        return Ok(());
    }
    let mut status = dev.upload(&[NONE], "featcache.status")?;
    let mut mark = dev.alloc::<u32>(n, "featcache.mark")?;
    let (m32, n32) = (m as u32, n as u32);
    ScatterInitKernel {
        c1,
        m: m32,
        n: n32,
        mark: &mut mark,
    }
    .launch(&dev, blocks(m))?;
    ScatterMarkKernel {
        c1,
        m: m32,
        n: n32,
        head: &ring.head,
        len: &ring.len,
        mark: &mut mark,
        status: &mut status,
    }
    .launch(&dev, blocks(m))?;
    ScatterCheckKernel {
        c1,
        m: m32,
        n: n32,
        mark: &mark,
        status: &mut status,
    }
    .launch(&dev, blocks(m))?;
    ScatterKernel {
        rows,
        c1,
        m: m32,
        n: n32,
        width: w as u32,
        t_now,
        x,
        feat: &mut ring.feat,
        stamp: &mut ring.stamp,
        head: &mut ring.head,
        len: &mut ring.len,
        status: &status,
    }
    .launch(&dev, row_blocks(m))?;
    if let Some(j) = first_bad(&status)? {
        let prefix = c1.download_range(0, j + 1)?;
        let c = prefix[j] as usize;
        let state = if c < n {
            Some((one(&ring.head, c)?, one(&ring.len, c)?))
        } else {
            None
        };
        let msg = reference::scatter_fault(&prefix, j, n, state).unwrap_or_else(|| {
            format!("internal: the device flagged c1[{j}], the reference finds no fault")
        });
        return Err(inv(msg));
    }
    Ok(())
}

/// For each token `i`: class 1 (recompute): `x[i]` untouched; class 2: `x[i]` = the newest
/// cached feature (a copy); class 3: `x[i] = Σ_k w_k · feature_k` over the (up to 3) newest
/// cached features, `w` = [`reference::reuse_weights`] of their stamps at `t_now`
/// (`w_k ∝ e^(−k)·(T_{t+k} − T_t)`; fewer than 3 cached: what exists; all gaps 0: all to the
/// newest), f64, rounded once to f32 (bit-exact against the reference).
///
/// Errors ([`Error::InvalidArgument`] naming `featcache.reuse`; nothing is written): `class` not
/// `n` or `x` not `n · w` elements, a ring whose buffers do not hold n × w, a buffer on another
/// device, a non-finite `t_now`; found on the device and read back (the first bad token is
/// named): a class outside 1..=3, and for class 2 and 3 tokens a corrupt ring state, an empty
/// ring, or a stamp gap `stamp − t_now` (f64) that is negative or not finite among the stamps
/// used (class 2: the newest; class 3: all cached).
pub fn reuse(
    class: &DeviceBuffer<u8>,
    ring: &Ring,
    t_now: f32,
    x: &mut DeviceBuffer<f32>,
) -> Result<()> {
    let inv = |m: String| Error::invalid(REUSE, m);
    let dev = x.device().clone();
    let (n, w) = (ring.n, ring.w);
    ring.check(REUSE, &dev)?;
    if class.len() != n || x.len() != n * w {
        return Err(inv(format!(
            "mismatched lengths: class {}, x {} (ring: n {n}, width {w})",
            class.len(),
            x.len()
        )));
    }
    if !t_now.is_finite() {
        return Err(inv(format!("t_now = {t_now} is not finite")));
    }
    on_device(REUSE, "class", &dev, class)?;
    if let Some(h) = cpu_path(REUSE, &dev) {
        let view = reference::RingRef {
            n,
            w,
            feat: h.slice(&ring.feat)?,
            stamp: h.slice(&ring.stamp)?,
            head: h.slice(&ring.head)?,
            len: h.slice(&ring.len)?,
        };
        return reference::reuse(h.slice(class)?, view, t_now, h.slice_mut(x)?).map_err(inv);
    }
    if n == 0 {
        return Ok(());
    }
    let mut status = dev.upload(&[NONE], "featcache.status")?;
    ReuseCheckKernel {
        cls: class,
        n: n as u32,
        head: &ring.head,
        len: &ring.len,
        stamp: &ring.stamp,
        t_now,
        status: &mut status,
    }
    .launch(&dev, blocks(n))?;
    ReuseKernel {
        cls: class,
        n: n as u32,
        width: w as u32,
        feat: &ring.feat,
        stamp: &ring.stamp,
        head: &ring.head,
        len: &ring.len,
        t_now,
        decay1_bits: reference::reuse_decay(1).to_bits(),
        decay2_bits: reference::reuse_decay(2).to_bits(),
        decay3_bits: reference::reuse_decay(3).to_bits(),
        x,
        status: &status,
    }
    .launch(&dev, row_blocks(n))?;
    if let Some(i) = first_bad(&status)? {
        let (c, hd, l) = (one(class, i)?, one(&ring.head, i)?, one(&ring.len, i)?);
        let mut stamps = Vec::new();
        if (hd as usize) < RING && (l as usize) <= RING {
            for k in 0..l as usize {
                let s = (hd as usize + RING - k) % RING;
                stamps.push(one(&ring.stamp, s * n + i)?);
            }
        }
        let msg = reference::reuse_fault(i, c, hd, l, &stamps, t_now).unwrap_or_else(|| {
            format!("internal: the device flagged token {i}, the reference finds no fault")
        });
        return Err(inv(msg));
    }
    Ok(())
}

/// `cf[i] = 0` where `class[i] == 1`, else `cf[i] + 1` saturating at `EXP_TABLE_LEN − 1` (the
/// select op's table bound; a `cf` already past it becomes the bound).
///
/// Errors ([`Error::InvalidArgument`] naming `featcache.age`; nothing is written): lengths that
/// differ, `cf` on another device, a class outside 1..=3 (found on the device and read back:
/// the first such token is named).
pub fn age(class: &DeviceBuffer<u8>, cf: &mut DeviceBuffer<u32>) -> Result<()> {
    let inv = |m: String| Error::invalid(AGE, m);
    let dev = class.device().clone();
    let n = class.len();
    if cf.len() != n {
        return Err(inv(format!(
            "mismatched lengths: class {n}, cf {}",
            cf.len()
        )));
    }
    if n > u32::MAX as usize - 1 {
        return Err(inv(format!("{n} tokens exceed u32")));
    }
    on_device(AGE, "cf", &dev, cf)?;
    let limit = EXP_TABLE_LEN as u32 - 1;
    if let Some(h) = cpu_path(AGE, &dev) {
        return reference::age(h.slice(class)?, h.slice_mut(cf)?, limit).map_err(inv);
    }
    if n == 0 {
        return Ok(());
    }
    let mut status = dev.upload(&[NONE], "featcache.status")?;
    ClassCheckKernel {
        cls: class,
        n: n as u32,
        status: &mut status,
    }
    .launch(&dev, blocks(n))?;
    AgeKernel {
        cls: class,
        n: n as u32,
        limit,
        cf,
        status: &status,
    }
    .launch(&dev, blocks(n))?;
    if let Some(i) = first_bad(&status)? {
        let c = one(class, i)?;
        return Err(inv(reference::age_fault(i, c).unwrap_or_else(|| {
            format!("internal: the device flagged class[{i}] = {c}")
        })));
    }
    Ok(())
}
