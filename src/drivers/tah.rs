//! The TaH (Think-at-Hard, arXiv 2511.08577) iteration driver: the thin layer a framework calls
//! around the duo-causal attention kernel for one attention layer.
//!
//! * [`KvCache`]: per depth slot, K and V `[cap, H_kv, D]`, positions (i32) and validity (u8),
//!   grown by doubling with device-to-device copies; [`KvCache::view`] packs slots `0..=d` into
//!   one K/V with the keys grouped by depth slot and sorted by position inside a slot (the layout
//!   that makes the attention kernel's tile skipping effective).
//! * [`select_hard`]: the decider's scores -> the indices of the hard tokens, in order, with an
//!   exact count; [`gather_rows`] / [`scatter_rows`] move hidden states or positions of the active
//!   tokens.
//! * [`next_depth_input`]: the soft-embedding input of the next depth (top-k of the cumulative
//!   logits, softmax, weighted sum of embedding rows).
//! * [`accumulate_logits`]: `cum += logits` across depths.
//! * [`attend`]: append a depth's K/V to the cache and run `attention::forward` (prefill) or
//!   `attention::decode` in duo-causal mode over the cache view.
//!
//! The kernel launches (`cuda/tah/driver.cu`) are the ops of [`crate::ops::tah`], re-exported
//! here. Reference and CPU path: [`crate::reference::tah`].

use crate::device::{Device, DeviceBuffer};
use crate::error::{Error, Result};
use crate::ops::attention::{self, Attention, AttentionOut, HalfFloat, MaskMode, Path, Positions};
use crate::ops::on_device;
pub use crate::ops::tah::*;

/// One depth slot of a [`KvCache`].
#[derive(Debug)]
struct Slot<T: HalfFloat> {
    k: DeviceBuffer<T>,
    v: DeviceBuffer<T>,
    pos: DeviceBuffer<i32>,
    valid: DeviceBuffer<u8>,
    len: usize,
    cap: usize,
    last_pos: Option<i32>,
}

/// The packed keys of depth slots `0..=d`, grouped by slot, sorted by position inside a slot.
#[derive(Debug)]
pub struct CacheView<T: HalfFloat> {
    /// `[len, H_kv, D]`.
    pub k: DeviceBuffer<T>,
    pub v: DeviceBuffer<T>,
    pub pos: DeviceBuffer<i32>,
    pub depth: DeviceBuffer<i32>,
    pub valid: DeviceBuffer<u8>,
    pub len: usize,
}

/// Host copies of one slot: (K, V, positions, validity).
pub type SlotContents<T> = (Vec<T>, Vec<T>, Vec<i32>, Vec<u8>);

/// A per-layer KV cache with one slot per depth. Positions inside a slot strictly increase
/// (appends are checked), so each slot is sorted by position.
#[derive(Debug)]
pub struct KvCache<T: HalfFloat> {
    dev: Device,
    kv_heads: usize,
    head_dim: usize,
    slots: Vec<Slot<T>>,
}

const INITIAL_CAP: usize = 16;

impl<T: HalfFloat> KvCache<T> {
    /// An empty cache of `depths` slots for `kv_heads` heads of `head_dim`.
    pub fn new(dev: &Device, depths: usize, kv_heads: usize, head_dim: usize) -> Result<Self> {
        const OP: &str = "tah::KvCache::new";
        if depths == 0 || kv_heads == 0 || head_dim == 0 {
            return Err(Error::invalid(
                OP,
                format!("depths {depths}, kv_heads {kv_heads}, head_dim {head_dim} must be > 0"),
            ));
        }
        let cap_row = kv_heads
            .checked_mul(head_dim)
            .and_then(|row| row.checked_mul(INITIAL_CAP))
            .ok_or_else(|| {
                Error::invalid(
                    OP,
                    format!("kv_heads {kv_heads} x head_dim {head_dim} overflows usize"),
                )
            })?;
        let mut slots = Vec::with_capacity(depths);
        for _ in 0..depths {
            slots.push(Slot {
                k: dev.alloc(cap_row, "tah.cache.k")?,
                v: dev.alloc(cap_row, "tah.cache.v")?,
                pos: dev.alloc(INITIAL_CAP, "tah.cache.pos")?,
                valid: dev.alloc(INITIAL_CAP, "tah.cache.valid")?,
                len: 0,
                cap: INITIAL_CAP,
                last_pos: None,
            });
        }
        Ok(KvCache {
            dev: dev.clone(),
            kv_heads,
            head_dim,
            slots,
        })
    }

    pub fn depths(&self) -> usize {
        self.slots.len()
    }
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub fn device(&self) -> &Device {
        &self.dev
    }

    fn slot(&self, op: &'static str, depth: usize) -> Result<&Slot<T>> {
        self.slots.get(depth).ok_or_else(|| {
            Error::invalid(
                op,
                format!("depth {depth} but the cache has {} slots", self.slots.len()),
            )
        })
    }

    /// Number of tokens in slot `depth` (0 for a depth the cache does not have).
    pub fn len(&self, depth: usize) -> usize {
        self.slots.get(depth).map_or(0, |s| s.len)
    }
    /// Whether every slot is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| s.len == 0)
    }
    /// Capacity (tokens) of slot `depth`.
    pub fn capacity(&self, depth: usize) -> usize {
        self.slots.get(depth).map_or(0, |s| s.cap)
    }

    /// What [`KvCache::rollback`] restores slot `depth` to: its length and last position.
    fn mark(&self, depth: usize) -> (usize, Option<i32>) {
        let s = &self.slots[depth];
        (s.len, s.last_pos)
    }

    /// Forget what was appended to slot `depth` since `mark` (the bytes past the length are
    /// never read; a grown capacity stays).
    fn rollback(&mut self, depth: usize, mark: (usize, Option<i32>)) {
        let s = &mut self.slots[depth];
        (s.len, s.last_pos) = mark;
    }

    /// Append `n` tokens to slot `depth`: K and V `[n, H_kv, D]`, positions `[n]` strictly
    /// increasing and above the slot's last position, validity `[n]` (all valid when absent).
    /// Everything is checked before the slot changes; on any error the slot's length, contents
    /// and last position are as before (only its capacity may have grown).
    pub fn append(
        &mut self,
        depth: usize,
        k: &DeviceBuffer<T>,
        v: &DeviceBuffer<T>,
        pos: &DeviceBuffer<i32>,
        valid: Option<&DeviceBuffer<u8>>,
    ) -> Result<()> {
        const OP: &str = "tah::KvCache::append";
        let dev = self.dev.clone();
        on_device(OP, "k", &dev, k)?;
        on_device(OP, "v", &dev, v)?;
        on_device(OP, "pos", &dev, pos)?;
        if let Some(m) = valid {
            on_device(OP, "valid", &dev, m)?;
        }
        self.slot(OP, depth)?;
        let row = self.kv_heads * self.head_dim;
        let n = pos.len();
        for (what, b) in [("k", k.len()), ("v", v.len())] {
            if Some(b) != n.checked_mul(row) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{what} has {b} elements, {n} tokens of [H_kv {}, D {}] need {}",
                        self.kv_heads,
                        self.head_dim,
                        n as u128 * row as u128
                    ),
                ));
            }
        }
        if let Some(m) = valid {
            if m.len() != n {
                return Err(Error::invalid(
                    OP,
                    format!("valid has {} entries for {n} tokens", m.len()),
                ));
            }
        }
        let hp = pos.download()?;
        let slot_last = self.slots[depth].last_pos;
        let mut last = slot_last;
        for &p in &hp {
            if last.is_some_and(|l| p <= l) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "positions must strictly increase within depth slot {depth}: {p} after {}",
                        last.unwrap_or_default()
                    ),
                ));
            }
            last = Some(p);
        }
        if n == 0 {
            return Ok(());
        }
        let slot = &mut self.slots[depth];
        let want = slot
            .len
            .checked_add(n)
            .filter(|w| w.checked_mul(row).is_some())
            .ok_or_else(|| Error::invalid(OP, format!("{n} more tokens overflow usize")))?;
        if want > slot.cap {
            let cap = slot
                .cap
                .saturating_mul(2)
                .max(want)
                .min(usize::MAX / row.max(1));
            let mut nk = dev.alloc::<T>(cap * row, "tah.cache.k")?;
            let mut nv = dev.alloc::<T>(cap * row, "tah.cache.v")?;
            let mut np = dev.alloc::<i32>(cap, "tah.cache.pos")?;
            let mut nm = dev.alloc::<u8>(cap, "tah.cache.valid")?;
            copy_range(&slot.k, 0, &mut nk, 0, slot.len * row)?;
            copy_range(&slot.v, 0, &mut nv, 0, slot.len * row)?;
            copy_range(&slot.pos, 0, &mut np, 0, slot.len)?;
            copy_range(&slot.valid, 0, &mut nm, 0, slot.len)?;
            slot.k = nk;
            slot.v = nv;
            slot.pos = np;
            slot.valid = nm;
            slot.cap = cap;
        }
        copy_range(k, 0, &mut slot.k, slot.len * row, n * row)?;
        copy_range(v, 0, &mut slot.v, slot.len * row, n * row)?;
        copy_range(pos, 0, &mut slot.pos, slot.len, n)?;
        match valid {
            Some(m) => copy_range(m, 0, &mut slot.valid, slot.len, n)?,
            None => {
                let ones = dev.upload(&vec![1u8; n], "tah.valid")?;
                copy_range(&ones, 0, &mut slot.valid, slot.len, n)?;
            }
        }
        slot.len += n;
        slot.last_pos = last;
        Ok(())
    }

    /// The contents of slot `depth` on the host: (K, V, positions, validity) of its tokens.
    pub fn slot_contents(&self, depth: usize) -> Result<SlotContents<T>> {
        let s = self.slot("tah::KvCache::slot_contents", depth)?;
        let row = self.kv_heads * self.head_dim;
        Ok((
            s.k.download_range(0, s.len * row)?,
            s.v.download_range(0, s.len * row)?,
            s.pos.download_range(0, s.len)?,
            s.valid.download_range(0, s.len)?,
        ))
    }

    /// Slots `0..=depth` packed into one K/V (grouped by slot, sorted by position inside a slot),
    /// with per-key positions, depths and validity. Copies `O(len)` elements on the device.
    pub fn view(&self, depth: usize) -> Result<CacheView<T>> {
        const OP: &str = "tah::KvCache::view";
        self.slot(OP, depth)?;
        let row = self.kv_heads * self.head_dim;
        let len: usize = self.slots[..=depth].iter().map(|s| s.len).sum();
        let mut k = self.dev.alloc::<T>(len * row, "tah.view.k")?;
        let mut v = self.dev.alloc::<T>(len * row, "tah.view.v")?;
        let mut pos = self.dev.alloc::<i32>(len, "tah.view.pos")?;
        let mut valid = self.dev.alloc::<u8>(len, "tah.view.valid")?;
        let mut depths = Vec::with_capacity(len);
        let mut at = 0;
        for (d, s) in self.slots[..=depth].iter().enumerate() {
            copy_range(&s.k, 0, &mut k, at * row, s.len * row)?;
            copy_range(&s.v, 0, &mut v, at * row, s.len * row)?;
            copy_range(&s.pos, 0, &mut pos, at, s.len)?;
            copy_range(&s.valid, 0, &mut valid, at, s.len)?;
            depths.extend(std::iter::repeat_n(d as i32, s.len));
            at += s.len;
        }
        Ok(CacheView {
            k,
            v,
            pos,
            depth: self.dev.upload(&depths, "tah.view.depth")?,
            valid,
            len,
        })
    }
}

/// Which attention op [`attend`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `attention::forward` (many queries).
    Prefill,
    /// `attention::decode` with `splits` KV splits (few queries).
    Decode { splits: usize },
}

/// One attention layer at depth `depth` for the active tokens of one sequence: append their K/V
/// (`[n, H_kv, D]`, positions `pos` `[n]`, strictly increasing; `valid` `[n]` marks real tokens,
/// padding entries are cached with 0 and never attended to) to slot `depth` of the cache, then
/// attend with Q `[n, H, D]` (positions `pos`, depth `depth`) over slots `0..=depth` in duo-causal
/// mode. Returns O `[n, H, D]` and LSE `[H, n]` (f32). A call that fails leaves the cache as it
/// was (every input is checked before the append, and a later failure rolls the append back).
#[allow(clippy::too_many_arguments)]
pub fn attend<T: HalfFloat>(
    cache: &mut KvCache<T>,
    depth: usize,
    heads: usize,
    q: &DeviceBuffer<T>,
    k: &DeviceBuffer<T>,
    v: &DeviceBuffer<T>,
    pos: &DeviceBuffer<i32>,
    valid: Option<&DeviceBuffer<u8>>,
    scale: f32,
    phase: Phase,
) -> Result<AttentionOut> {
    const OP: &str = "tah::attend";
    let dev = cache.device().clone();
    on_device(OP, "q", &dev, q)?;
    let n = pos.len();
    let (hk, d) = (cache.kv_heads(), cache.head_dim());
    // Everything the attention op would refuse is checked before the cache changes; an error
    // after the append (a device failure) rolls the append back.
    if d != 64 && d != 128 {
        return Err(Error::invalid(
            OP,
            format!("head_dim {d}, supported: 64, 128"),
        ));
    }
    if heads == 0 || heads % hk != 0 || heads > MAX_HEADS {
        return Err(Error::invalid(
            OP,
            format!(
                "heads {heads} must be a positive multiple of kv_heads {hk}, at most {MAX_HEADS}"
            ),
        ));
    }
    if !scale.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("scale must be finite, got {scale}"),
        ));
    }
    if let Phase::Decode { splits } = phase {
        if splits == 0 || splits > MAX_SPLITS {
            return Err(Error::invalid(
                OP,
                format!("splits {splits}, supported: 1..={MAX_SPLITS}"),
            ));
        }
    }
    if Some(q.len()) != n.checked_mul(heads * d) {
        return Err(Error::invalid(
            OP,
            format!(
                "q has {} elements, {n} tokens of [H {heads}, D {d}] need {}",
                q.len(),
                n as u128 * (heads * d) as u128
            ),
        ));
    }
    cache.slot(OP, depth)?;
    let cached: usize = (0..=depth).map(|s| cache.len(s)).sum();
    if depth > i32::MAX as usize || cached.saturating_add(n) > i32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!(
                "depth {depth}, {n} new tokens and {cached} cached keys exceed the int32 offsets"
            ),
        ));
    }
    let mark = cache.mark(depth);
    cache.append(depth, k, v, pos, valid)?;
    let out = attend_cached(cache, depth, heads, q, pos, scale, phase);
    if out.is_err() {
        cache.rollback(depth, mark);
    }
    out
}

/// Largest `heads` of the attention kernels (grid y).
const MAX_HEADS: usize = 65_535;
/// Largest `splits` of `attention::decode` (grid z).
const MAX_SPLITS: usize = 65_535;

/// The attention half of [`attend`], over the cache after the append.
fn attend_cached<T: HalfFloat>(
    cache: &KvCache<T>,
    depth: usize,
    heads: usize,
    q: &DeviceBuffer<T>,
    pos: &DeviceBuffer<i32>,
    scale: f32,
    phase: Phase,
) -> Result<AttentionOut> {
    let dev = cache.device();
    let n = pos.len();
    let view = cache.view(depth)?;
    let q_depth = dev.upload(&vec![depth as i32; n], "tah.q_depth")?;
    let cu_q = dev.upload(&[0, n as i32], "tah.cu_q")?;
    let cu_kv = dev.upload(&[0, view.len as i32], "tah.cu_kv")?;
    let a = Attention {
        q,
        k: &view.k,
        v: &view.v,
        heads,
        kv_heads: cache.kv_heads(),
        head_dim: cache.head_dim(),
        cu_seqlens_q: &cu_q,
        cu_seqlens_kv: &cu_kv,
        max_seqlen_q: n,
        max_seqlen_kv: view.len,
        q_pos: Positions::Explicit(pos),
        kv_pos: Positions::Explicit(&view.pos),
        q_depth: Some(&q_depth),
        kv_depth: Some(&view.depth),
        kv_valid: Some(&view.valid),
        scale,
        mode: MaskMode::DuoCausal,
        path: Path::Auto,
    };
    match phase {
        Phase::Prefill => attention::forward(&a),
        Phase::Decode { splits } => attention::decode(&a, splits),
    }
}
