//! Copies between the devices of one process: the single-process multi-GPU transport
//! (`parallel::transport::P2p`) is built on these.
//!
//! - [`DeviceBuffer::copy_range_from_peer`]: one cross-device copy, ordered with the compute work
//!   of both devices (simple, serialises with compute);
//! - [`PeerGroup`]: n devices of one backend with one copy stream per (device, channel) on CUDA,
//!   so the copies of one step run concurrently with each other and with compute.
//!
//! Backends:
//! - **host memory** (the SIMT executor and the native CPU path): a cross-device copy is a host
//!   `memcpy`, done at once (SIMT launches are synchronous, so nothing is in flight);
//! - **CUDA**: `cuMemcpyPeerAsync` from the source context to the destination context. At group
//!   creation every ordered pair gets `cuCtxEnablePeerAccess` where `cuDeviceCanAccessPeer` allows it
//!   ("already enabled" counts as enabled); pairs without a peer path still copy, staged by the
//!   driver through host memory. A copy of channel `c` runs on the **source** device's copy stream
//!   `c` (non-blocking, created on first use), after fences of both devices' compute streams taken
//!   at the start of the step;
//! - **HIP**: not implemented (RCCL and HIP peer copies are a later issue): an
//!   [`Error::Unsupported`];
//! - mixed backends: an [`Error::InvalidArgument`].

use std::collections::HashSet;

use crate::device::{cuda, Backend, Device, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The most copy channels (streams per device) a group opens.
pub const MAX_CHANNELS: usize = 256;

impl Device {
    /// The CUDA executor of this device, if it is a CUDA device.
    pub(crate) fn cuda_exec(&self) -> Option<&cuda::CudaExec> {
        self.inner.exec.as_deref().and_then(|e| e.as_cuda())
    }
}

/// How two devices exchange bytes.
enum Path {
    /// The same device: a plain device copy.
    Same,
    /// Both in host memory (SIMT, CPU).
    Host,
    /// Two CUDA devices.
    Cuda,
}

fn path(op: &'static str, dst: &Device, src: &Device) -> Result<Path> {
    if dst.same(src) {
        return Ok(Path::Same);
    }
    match (src.backend(), dst.backend()) {
        (Backend::Simt(_) | Backend::Cpu, Backend::Simt(_) | Backend::Cpu)
            if src.backend().family() == dst.backend().family() =>
        {
            Ok(Path::Host)
        }
        (Backend::Cuda(_), Backend::Cuda(_)) => Ok(Path::Cuda),
        (Backend::Hip(_), Backend::Hip(_)) => Err(Error::Unsupported {
            what: format!("{op} between HIP devices"),
            msg: "HIP peer copies (and RCCL) are not implemented yet".into(),
        }),
        (s, d) => Err(Error::invalid(
            op,
            format!(
                "source is on {s} and destination on {d}: copies between devices need one backend"
            ),
        )),
    }
}

fn check_ranges(
    op: &'static str,
    dst_len: usize,
    dst_start: usize,
    src_len: usize,
    src_start: usize,
    len: usize,
) -> Result<()> {
    let fits = |start: usize, n: usize| start.checked_add(len).is_some_and(|e| e <= n);
    if !fits(src_start, src_len) || !fits(dst_start, dst_len) {
        return Err(Error::invalid(
            op,
            format!(
                "{len} elements from {src_start} (source holds {src_len}) to {dst_start} \
                 (destination holds {dst_len}) are out of range"
            ),
        ));
    }
    Ok(())
}

/// Host `memcpy` between two host-memory buffers.
fn host_copy<T: DType>(
    op: &'static str,
    dst: &mut DeviceBuffer<T>,
    dst_start: usize,
    src: &DeviceBuffer<T>,
    src_start: usize,
    len: usize,
) -> Result<()> {
    let s = src
        .host_slice()
        .ok_or_else(|| Error::invalid(op, "source is not in host memory"))?;
    let s = &s[src_start..src_start + len];
    let d = dst
        .host_slice_mut()
        .ok_or_else(|| Error::invalid(op, "destination is not in host memory"))?;
    d[dst_start..dst_start + len].copy_from_slice(s);
    Ok(())
}

fn cuda_of<'a>(op: &'static str, d: &'a Device) -> Result<&'a cuda::CudaExec> {
    d.cuda_exec()
        .ok_or_else(|| Error::invalid(op, format!("{} is not a CUDA device", d.backend())))
}

impl<T: DType> DeviceBuffer<T> {
    /// Copy `len` elements of `src` (on any device of the same backend) starting at element
    /// `src_start` into `self` at element `dst_start`. On one device this is
    /// [`DeviceBuffer::copy_range_from`]. Between host-memory devices (SIMT, CPU) it is a host
    /// `memcpy`. Between CUDA devices it is `cuMemcpyPeerAsync` queued on the destination
    /// device's stream after the source device's queued work, and the source device's stream
    /// waits for it: ordered with both devices' work, so it does not overlap with compute (use
    /// [`PeerGroup`] for that). Between HIP devices it is not implemented yet; mixed backends are
    /// an error.
    pub fn copy_range_from_peer(
        &mut self,
        dst_start: usize,
        src: &DeviceBuffer<T>,
        src_start: usize,
        len: usize,
    ) -> Result<()> {
        const OP: &str = "copy_range_from_peer";
        let p = path(OP, &self.device, &src.device)?;
        check_ranges(OP, self.len, dst_start, src.len, src_start, len)?;
        if len == 0 {
            return Ok(());
        }
        match p {
            Path::Same => self.copy_range_from(dst_start, src, src_start, len),
            Path::Host => host_copy(OP, self, dst_start, src, src_start, len),
            Path::Cuda => {
                let size = std::mem::size_of::<T>();
                let (d, s) = (cuda_of(OP, &self.device)?, cuda_of(OP, &src.device)?);
                cuda::CudaExec::peer_copy_ordered(
                    d,
                    self.addr() + (dst_start * size) as u64,
                    s,
                    src.addr() + (src_start * size) as u64,
                    len * size,
                )
            }
        }
    }
}

/// n devices of one backend that copy between each other, one copy stream per (device, channel)
/// on CUDA. A step of copies is opened with [`PeerGroup::step`]; [`PeerGroup::synchronize`]
/// waits for every copy queued so far.
///
/// Contract (as [`crate::parallel::Transport`]'s): between queuing a step and
/// [`PeerGroup::synchronize`], no work may write a copy's source or touch its destination. The
/// copies of a step wait for the work queued on both devices before the step began.
pub struct PeerGroup {
    devices: Vec<Device>,
    host: bool,
    /// `streams[device][channel]`, created on first use (CUDA only).
    streams: Vec<Vec<Option<cuda::CudaCopyStream>>>,
    /// `direct[from][to]`: peer access enabled from `from`'s context to `to`'s memory.
    direct: Vec<Vec<bool>>,
}

impl std::fmt::Debug for PeerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .devices
            .iter()
            .map(|d| d.backend().to_string())
            .collect();
        write!(f, "PeerGroup[{}]", names.join(", "))
    }
}

impl PeerGroup {
    /// A group over distinct devices of one backend. On CUDA, enables peer access between every
    /// ordered pair where the hardware allows it.
    pub fn new(devices: &[Device]) -> Result<PeerGroup> {
        const OP: &str = "PeerGroup::new";
        if devices.is_empty() {
            return Err(Error::invalid(OP, "needs at least one device"));
        }
        let family = devices[0].backend().family();
        for (i, d) in devices.iter().enumerate() {
            if d.backend().family() != family {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "device 0 is {} and device {i} is {}: a group needs one backend",
                        devices[0].backend(),
                        d.backend()
                    ),
                ));
            }
            for (j, e) in devices[..i].iter().enumerate() {
                let gpu_twice = matches!(d.backend(), Backend::Cuda(_) | Backend::Hip(_))
                    && d.backend() == e.backend();
                if d.same(e) || gpu_twice {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "devices {j} and {i} are the same device ({}): one rank per device",
                            d.backend()
                        ),
                    ));
                }
            }
        }
        let n = devices.len();
        let mut direct = vec![vec![false; n]; n];
        let host = match family {
            "simt" | "cpu" => true,
            "cuda" => {
                for a in 0..n {
                    for b in 0..n {
                        if a != b {
                            direct[a][b] = cuda::enable_peer_access(
                                cuda_of(OP, &devices[a])?,
                                cuda_of(OP, &devices[b])?,
                            )?;
                        }
                    }
                }
                false
            }
            _ => {
                return Err(Error::Unsupported {
                    what: "peer copies between HIP devices".into(),
                    msg: "HIP peer copies (and RCCL) are not implemented yet".into(),
                })
            }
        };
        Ok(PeerGroup {
            devices: devices.to_vec(),
            host,
            streams: (0..n).map(|_| Vec::new()).collect(),
            direct,
        })
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The index of a device in the group.
    pub fn index_of(&self, d: &Device) -> Option<usize> {
        self.devices.iter().position(|e| e.same(d))
    }

    /// True when copies from device `from` to device `to` go over a direct peer path (CUDA peer
    /// access enabled). Always true between host-memory devices.
    pub fn direct(&self, from: usize, to: usize) -> bool {
        self.host
            || self
                .direct
                .get(from)
                .and_then(|r| r.get(to))
                .copied()
                .unwrap_or(false)
    }

    /// Open a step: on CUDA, fences every device's compute stream; the step's copies wait for
    /// the fences of their source and destination devices.
    pub fn step(&mut self) -> Result<PeerStep<'_>> {
        let fences = if self.host {
            Vec::new()
        } else {
            self.devices
                .iter()
                .map(|d| cuda_of("PeerGroup::step", d).and_then(|c| c.fence()))
                .collect::<Result<Vec<_>>>()?
        };
        Ok(PeerStep {
            group: self,
            fences,
            waited: HashSet::new(),
        })
    }

    /// Wait on the host for every copy queued so far, then for every device's queued work.
    pub fn synchronize(&self) -> Result<()> {
        let mut first: Option<Error> = None;
        for s in self.streams.iter().flatten().flatten() {
            if let Err(e) = s.synchronize() {
                first.get_or_insert(e);
            }
        }
        for d in &self.devices {
            if let Err(e) = d.synchronize() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn stream(&mut self, device: usize, channel: usize) -> Result<&cuda::CudaCopyStream> {
        let list = &mut self.streams[device];
        if list.len() <= channel {
            list.resize_with(channel + 1, || None);
        }
        if list[channel].is_none() {
            let s = cuda_of("PeerGroup", &self.devices[device])?.copy_stream()?;
            list[channel] = Some(s);
        }
        Ok(list[channel].as_ref().expect("created above"))
    }
}

impl Drop for PeerGroup {
    fn drop(&mut self) {
        // Let copies in flight land before the streams go (errors were or will be reported by
        // synchronize; a drop cannot report them).
        for s in self.streams.iter().flatten().flatten() {
            let _ = s.synchronize();
        }
    }
}

/// The copies of one step of a [`PeerGroup`]: independent of each other, run concurrently.
pub struct PeerStep<'g> {
    group: &'g mut PeerGroup,
    /// Per device: the fence of its compute stream when the step opened (CUDA only).
    fences: Vec<cuda::CudaFence>,
    /// (stream device, channel, fence device) pairs already ordered in this step.
    waited: HashSet<(usize, usize, usize)>,
}

impl PeerStep<'_> {
    /// Queue a copy of `len` elements of `src` (from element `src_start`) into `dst` at element
    /// `dst_start`, on copy channel `channel`. Both buffers must live on devices of the group.
    pub fn copy<T: DType>(
        &mut self,
        dst: &mut DeviceBuffer<T>,
        dst_start: usize,
        src: &DeviceBuffer<T>,
        src_start: usize,
        len: usize,
        channel: usize,
    ) -> Result<()> {
        const OP: &str = "PeerStep::copy";
        let g = &mut *self.group;
        let si = g.index_of(src.device()).ok_or_else(|| {
            Error::invalid(
                OP,
                format!("source is on {}, not in the group", src.device().backend()),
            )
        })?;
        let di = g.index_of(dst.device()).ok_or_else(|| {
            Error::invalid(
                OP,
                format!(
                    "destination is on {}, not in the group",
                    dst.device().backend()
                ),
            )
        })?;
        if channel >= MAX_CHANNELS {
            return Err(Error::invalid(
                OP,
                format!("channel {channel}: at most {MAX_CHANNELS} channels"),
            ));
        }
        check_ranges(OP, dst.len(), dst_start, src.len(), src_start, len)?;
        if len == 0 {
            return Ok(());
        }
        if si == di {
            return dst.copy_range_from(dst_start, src, src_start, len);
        }
        if g.host {
            return host_copy(OP, dst, dst_start, src, src_start, len);
        }
        for fence_dev in [si, di] {
            if self.waited.insert((si, channel, fence_dev)) {
                let f = &self.fences[fence_dev];
                self.group.stream(si, channel)?.wait(f)?;
            }
        }
        let g = &mut *self.group;
        let size = std::mem::size_of::<T>();
        let (dc, sc) = (cuda_of(OP, dst.device())?, cuda_of(OP, src.device())?);
        let (daddr, saddr) = (
            dst.addr() + (dst_start * size) as u64,
            src.addr() + (src_start * size) as u64,
        );
        g.stream(si, channel)?
            .peer_copy(dc, daddr, sc, saddr, len * size)
    }
}
