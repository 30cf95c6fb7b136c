//! Devices, buffers, streams, events and the kernel executors.
//!
//! This module is the only place that holds `unsafe` code (the crate root denies it elsewhere).
//! Every executor launches a kernel the same way: module (the kernel's source file, e.g. `ckpt/bitmask`),
//! kernel name, grid, block, dynamic shared-memory bytes, and an array of pointers to the
//! argument values, as `cuLaunchKernel` takes it.

#![allow(unsafe_code)]

pub mod args;
pub mod cublaslt;
pub mod cuda;
pub mod hip;
pub mod kernel;
pub mod nccl;
pub mod peer;
pub mod simt;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use args::KernelArgs;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The order in which the host SIMT runtime runs the fibers of a block between barriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// Thread 0, 1, 2, ... every time.
    InOrder,
    /// A seeded permutation of the fibers, drawn afresh at every barrier.
    Shuffled(u64),
    /// Warp skew: one warp runs at a time and its warp collectives complete as soon as its own
    /// lanes arrive, so (seeded) warps run several collectives ahead of others between block
    /// barriers. Exposes a missing `__syncthreads` between warps that the other two schedules
    /// hide (they complete collectives only when every thread of the block waits).
    Skewed(u64),
}

/// Configuration of the host SIMT executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SimtConfig {
    /// 32 runs the CUDA sources; 64 runs the HIP (wave64) sources.
    pub wave: u32,
    pub schedule: Schedule,
    /// OS threads that run blocks in parallel; 0 = one per available core.
    pub workers: usize,
    /// The shared-memory race detector (on by default): a race between threads of a block is a
    /// launch error. Static shared memory is poisoned either way. `TESSERA_SIMT_RACECHECK=0` in
    /// the environment turns it off for the whole process.
    pub racecheck: bool,
}

impl Default for SimtConfig {
    fn default() -> Self {
        SimtConfig {
            wave: 32,
            schedule: Schedule::InOrder,
            workers: 0,
            racecheck: true,
        }
    }
}

/// Which executor a [`Device`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An NVIDIA GPU through the CUDA driver (cudarc), running the PTX tessera embeds.
    Cuda(usize),
    /// An AMD GPU through libamdhip64, running the embedded code objects.
    Hip(usize),
    /// The host SIMT runtime: the kernel sources compiled for the CPU, run with fibers.
    Simt(SimtConfig),
    /// The native CPU path: the pure-Rust reference implementations (parallel, no kernels).
    Cpu,
}

impl Backend {
    /// True when ops run by launching kernels (CUDA, HIP, SIMT), false for the native CPU path.
    pub fn runs_kernels(&self) -> bool {
        !matches!(self, Backend::Cpu)
    }

    /// Short name used in errors, tables and `--backend` (`cuda`, `hip`, `simt`, `cpu`).
    pub fn family(&self) -> &'static str {
        match self {
            Backend::Cuda(_) => "cuda",
            Backend::Hip(_) => "hip",
            Backend::Simt(_) => "simt",
            Backend::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cuda(i) => write!(f, "cuda:{i}"),
            Backend::Hip(i) => write!(f, "hip:{i}"),
            Backend::Simt(c) => {
                write!(f, "simt-w{}", c.wave)?;
                match c.schedule {
                    Schedule::InOrder => Ok(()),
                    Schedule::Shuffled(s) => write!(f, "-shuffle{s}"),
                    Schedule::Skewed(s) => write!(f, "-skew{s}"),
                }
            }
            Backend::Cpu => f.write_str("cpu"),
        }
    }
}

/// Whether every launch is followed by a synchronisation, so that an asynchronous fault is
/// reported by the op that caused it: `TESSERA_SYNC_LAUNCHES=1`, read once. Off by default:
/// launches are asynchronous on CUDA and HIP (the host SIMT executor runs a launch to completion
/// before it returns either way).
pub fn sync_after_launch() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("TESSERA_SYNC_LAUNCHES").is_ok_and(|v| v == "1"))
}

/// Launch geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-D launch of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32, shared_bytes: u32) -> Self {
        LaunchConfig {
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            shared_bytes,
        }
    }
}

/// What an executor must provide. Implemented by `cuda::CudaExec`, `hip::HipExec` and
/// `simt::SimtExec`; the CPU path has no executor.
pub(crate) trait Exec: Send + Sync {
    fn backend(&self) -> Backend;
    /// Human description (device name, architecture, wave size).
    fn describe(&self) -> String;
    /// Allocate `bytes` of device memory. `label` names the buffer in fault reports.
    fn alloc(&self, bytes: usize, label: &str) -> Result<Box<dyn RawMem>>;
    /// Launch `kernel` from `module` (its source file stem, e.g. `ckpt/bitmask`).
    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &KernelArgs,
    ) -> Result<()>;
    /// Wait for all queued work.
    fn synchronize(&self) -> Result<()>;
    /// Names of the kernels this executor can launch.
    fn kernel_names(&self) -> Vec<String>;
    /// Record a timing event on the executor's stream.
    fn record_event(&self) -> Result<Box<dyn RawEvent>>;
    /// Device-to-device copy of `bytes` bytes from byte `src_off` of `src` to byte `dst_off` of
    /// `dst`, ordered on the executor's stream. Bounds are checked by the caller.
    fn copy(
        &self,
        dst: &mut dyn RawMem,
        dst_off: usize,
        src: &dyn RawMem,
        src_off: usize,
        bytes: usize,
    ) -> Result<()>;
    /// Wrap `bytes` of memory at `addr` that the caller owns (never freed by tessera). Only GPU
    /// executors borrow; the host SIMT executor refuses (its buffers carry red zones, so
    /// callers stage host memory into its own allocations: `interop` does).
    ///
    /// # Safety
    /// As [`DeviceBuffer::borrow_raw`].
    unsafe fn borrow(&self, addr: u64, bytes: usize) -> Result<Box<dyn RawMem>> {
        let _ = (addr, bytes);
        Err(Error::invalid(
            "borrow",
            format!(
                "the {} executor does not borrow memory; copy into its buffers",
                self.backend()
            ),
        ))
    }
    /// The CUDA executor behind this trait object (peer copies and NCCL need its context).
    fn as_cuda(&self) -> Option<&cuda::CudaExec> {
        None
    }
}

/// Device memory owned by an executor (or host memory for SIMT/CPU).
pub(crate) trait RawMem: Send + Sync {
    /// The address passed to kernels as a pointer argument.
    fn addr(&self) -> u64;
    /// Copy `src` into the buffer at byte `offset`. Bounds are checked by the caller.
    fn write(&mut self, offset: usize, src: &[u8]) -> Result<()>;
    /// Copy from byte `offset` of the buffer into `dst`. Bounds are checked by the caller.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// The bytes, when they live in host memory (SIMT and CPU).
    fn host(&self) -> Option<&[u8]>;
    fn host_mut(&mut self) -> Option<&mut [u8]>;
}

/// A recorded point in an executor's stream.
pub(crate) trait RawEvent: Send + Sync {
    /// Milliseconds from `self` to `later` (which must be recorded after).
    fn elapsed_ms(&self, later: &dyn RawEvent) -> Result<f32>;
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Host-memory event used by SIMT and CPU: wall-clock time, measured on the CPU.
pub(crate) struct HostEvent(pub Instant);

impl RawEvent for HostEvent {
    fn elapsed_ms(&self, later: &dyn RawEvent) -> Result<f32> {
        let later = later
            .as_any()
            .downcast_ref::<HostEvent>()
            .ok_or_else(|| Error::invalid("event", "events come from different executors"))?;
        Ok(later.0.saturating_duration_since(self.0).as_secs_f32() * 1e3)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// `RawMem::write` of memory that is host memory (bounds checked by the caller).
fn host_write(m: &mut dyn RawMem, offset: usize, src: &[u8]) -> Result<()> {
    let host = m
        .host_mut()
        .ok_or_else(|| Error::invalid("upload", "not host memory"))?;
    host[offset..offset + src.len()].copy_from_slice(src);
    Ok(())
}

/// `RawMem::read` of memory that is host memory (bounds checked by the caller).
fn host_read(m: &dyn RawMem, offset: usize, dst: &mut [u8]) -> Result<()> {
    let host = m
        .host()
        .ok_or_else(|| Error::invalid("download", "not host memory"))?;
    dst.copy_from_slice(&host[offset..offset + dst.len()]);
    Ok(())
}

/// Plain host memory, 256-byte aligned, for the CPU path.
pub(crate) struct HostMem {
    words: Vec<u128>,
    bytes: usize,
}

impl HostMem {
    pub(crate) fn new(bytes: usize) -> Self {
        HostMem {
            words: vec![0u128; bytes.div_ceil(16)],
            bytes,
        }
    }
}

impl RawMem for HostMem {
    fn addr(&self) -> u64 {
        self.words.as_ptr() as u64
    }
    fn write(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        host_write(self, offset, src)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        host_read(self, offset, dst)
    }
    fn host(&self) -> Option<&[u8]> {
        Some(&bytemuck::cast_slice(&self.words)[..self.bytes])
    }
    fn host_mut(&mut self) -> Option<&mut [u8]> {
        let n = self.bytes;
        Some(&mut bytemuck::cast_slice_mut(&mut self.words)[..n])
    }
}

/// Host memory the caller owns (the CPU path's borrowed buffers): never freed here.
pub(crate) struct BorrowedHost {
    ptr: *mut u8,
    bytes: usize,
}

// SAFETY: a BorrowedHost is a pointer to plain bytes; `DeviceBuffer::borrow_raw`'s contract makes
// the caller keep them alive and unaliased while tessera uses them, from whichever thread.
unsafe impl Send for BorrowedHost {}
// SAFETY: as above; `&self` methods only read.
unsafe impl Sync for BorrowedHost {}

impl RawMem for BorrowedHost {
    fn addr(&self) -> u64 {
        self.ptr as u64
    }
    fn write(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        host_write(self, offset, src)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        host_read(self, offset, dst)
    }
    fn host(&self) -> Option<&[u8]> {
        // SAFETY: `borrow_raw`'s caller guarantees `bytes` readable bytes at `ptr` (a dangling,
        // aligned pointer when `bytes == 0`) for the buffer's lifetime.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.bytes) })
    }
    fn host_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: as `host`, and the caller guarantees no other access while tessera holds the
        // buffer, so this unique borrow of `self` is the only access.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr, self.bytes) })
    }
}

thread_local! {
    /// The caller's stream for launches on this thread (`Device::on_stream`); 0 when none.
    static CALLER_STREAM: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The stream `Device::on_stream` set on this thread, if any (a `CUstream` or `hipStream_t`).
pub(crate) fn caller_stream() -> Option<*mut std::ffi::c_void> {
    let s = CALLER_STREAM.with(|c| c.get());
    (s != 0).then_some(s as *mut std::ffi::c_void)
}

static NEXT_DEVICE_ID: AtomicU64 = AtomicU64::new(1);

struct DeviceInner {
    id: u64,
    backend: Backend,
    exec: Option<Box<dyn Exec>>,
    /// Device-to-host copies ([`DeviceBuffer::download`] / [`DeviceBuffer::download_range`]).
    d2h: AtomicU64,
    /// Kernel launches ([`Device::launch`]).
    launches: AtomicU64,
}

/// A place where ops run: a GPU (CUDA or HIP), the host SIMT executor, or the native CPU path.
/// Cheap to clone; clones are the same device.
#[derive(Clone)]
pub struct Device {
    inner: Arc<DeviceInner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.inner.backend)
    }
}

impl Device {
    fn from_exec(exec: Box<dyn Exec>) -> Device {
        let backend = exec.backend();
        Device {
            inner: Arc::new(DeviceInner {
                id: NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed),
                backend,
                exec: Some(exec),
                d2h: AtomicU64::new(0),
                launches: AtomicU64::new(0),
            }),
        }
    }

    /// CUDA, then HIP, then the native CPU path. Never fails and never panics.
    pub fn best() -> Device {
        if let Ok(d) = Device::cuda(0) {
            return d;
        }
        if let Ok(d) = Device::hip(0) {
            return d;
        }
        Device::cpu()
    }

    /// The `ordinal`-th NVIDIA GPU. An error (never a panic) when there is no driver or GPU.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::from_exec(Box::new(cuda::CudaExec::new(ordinal)?)))
    }

    /// The `ordinal`-th AMD GPU. An error when libamdhip64 cannot be opened, no GPU is present,
    /// or the crate was built without the `hip` feature.
    pub fn hip(ordinal: usize) -> Result<Device> {
        Ok(Device::from_exec(Box::new(hip::HipExec::new(ordinal)?)))
    }

    /// The host SIMT executor with wave32 and the in-order schedule.
    pub fn simt() -> Device {
        Device::simt_with(SimtConfig::default()).expect("wave32 SIMT is always built")
    }

    /// The host SIMT executor with a given wave size (32 or 64) and schedule.
    pub fn simt_with(config: SimtConfig) -> Result<Device> {
        Ok(Device::from_exec(Box::new(simt::SimtExec::new(config)?)))
    }

    /// The native CPU path (pure-Rust reference implementations, parallel with rayon). Every call
    /// returns the same device: buffers uploaded through any `Device::cpu()` handle work with
    /// every other.
    pub fn cpu() -> Device {
        static CPU: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
        CPU.get_or_init(Device::cpu_separate).clone()
    }

    /// A native CPU path device distinct from [`Device::cpu`] and from every other call's: for
    /// modelling several host-memory ranks in one process (`parallel::transport::P2p` tests).
    /// Ops refuse to mix its buffers with another device's, as they would two GPUs'.
    pub fn cpu_separate() -> Device {
        Device {
            inner: Arc::new(DeviceInner {
                id: NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed),
                backend: Backend::Cpu,
                exec: None,
                d2h: AtomicU64::new(0),
                launches: AtomicU64::new(0),
            }),
        }
    }

    /// Which executor this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Human description.
    pub fn describe(&self) -> String {
        match &self.inner.exec {
            Some(e) => e.describe(),
            None => format!("native CPU path ({} threads)", rayon::current_num_threads()),
        }
    }

    /// True when both handles are the same device.
    pub fn same(&self, other: &Device) -> bool {
        self.inner.id == other.inner.id
    }

    /// A number that tells apart devices of one backend within a process (for messages).
    pub(crate) fn instance(&self) -> u64 {
        self.inner.id
    }

    /// How many device-to-host copies ([`DeviceBuffer::download`] and
    /// [`DeviceBuffer::download_range`] calls, of any buffer of this device) have run since the
    /// device was created. Each one waits for the device's queued work, so an op that makes none
    /// can be captured in a CUDA graph and does not stall the caller's stream; tests use it to
    /// check that (docs/architecture.md, "What still synchronises"). Clones share the count.
    pub fn d2h_copies(&self) -> u64 {
        self.inner.d2h.load(Ordering::Relaxed)
    }

    /// How many kernel launches (typed or [`Device::launch_raw`]) this device has had (0 on
    /// the CPU path, which launches nothing). Clones share the count.
    pub fn launches(&self) -> u64 {
        self.inner.launches.load(Ordering::Relaxed)
    }

    /// Run `f` with every launch, copy and event of this thread on the caller's `stream` (a
    /// `CUstream` on CUDA, a `hipStream_t` on HIP) instead of the device's own, with no
    /// device-wide synchronisation: the C ABI and the Python package run ops this way. Downloads
    /// inside `f` first wait for `stream`. A null stream keeps the device's stream; on SIMT and
    /// the CPU path there is no stream and `stream` is ignored. Nested calls restore the outer
    /// stream when they return (or unwind).
    ///
    /// # Safety
    /// `stream` must be null or a live stream of this device's context that stays alive until
    /// `f` returns.
    pub unsafe fn on_stream<R>(&self, stream: *mut std::ffi::c_void, f: impl FnOnce() -> R) -> R {
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                CALLER_STREAM.with(|c| c.set(self.0));
            }
        }
        let keep = matches!(self.backend(), Backend::Cuda(_) | Backend::Hip(_));
        let prev = CALLER_STREAM.with(|c| c.get());
        let _restore = Restore(prev);
        if keep && !stream.is_null() {
            CALLER_STREAM.with(|c| c.set(stream as usize));
        }
        f()
    }

    /// Kernel names this device can launch (empty for the CPU path).
    pub fn kernel_names(&self) -> Vec<String> {
        self.inner
            .exec
            .as_ref()
            .map(|e| e.kernel_names())
            .unwrap_or_default()
    }

    /// Wait for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        match &self.inner.exec {
            Some(e) => e.synchronize(),
            None => Ok(()),
        }
    }

    /// The stream ops on this device are queued on.
    pub fn default_stream(&self) -> Stream {
        Stream {
            device: self.clone(),
        }
    }

    pub(crate) fn exec(&self, op: &'static str) -> Result<&dyn Exec> {
        self.inner
            .exec
            .as_deref()
            .ok_or_else(|| Error::invalid(op, "the CPU path launches no kernels"))
    }

    /// Launch a kernel by name: the raw launch path, for runtime tests and users who bring their
    /// own kernels. The ops launch through their typed declarations
    /// ([`kernel`]). `module` is the kernel's source file stem (e.g.
    /// `ckpt/bitmask`).
    ///
    /// # Safety
    /// The arguments must match the kernel's parameters, every pointer must be a live
    /// allocation of this device large enough for every access the kernel makes with these
    /// arguments, and no buffer the kernel writes may be read or written elsewhere until the
    /// launch has completed. Only the host SIMT executor checks the argument count and sizes; a
    /// wrong length or pointer writes out of bounds on a GPU as it does on SIMT.
    pub unsafe fn launch_raw(
        &self,
        module: &str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &KernelArgs,
    ) -> Result<()> {
        self.launch(module, kernel, cfg, args)
    }

    /// The launch behind the typed declarations: the ops validate what the kernel trusts before
    /// they fill a declaration, which is why this is crate-internal rather than `unsafe`.
    pub(crate) fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &KernelArgs,
    ) -> Result<()> {
        let exec = self.exec("launch")?;
        self.inner.launches.fetch_add(1, Ordering::Relaxed);
        exec.launch(module, kernel, cfg, args)?;
        if sync_after_launch() {
            exec.synchronize().map_err(|e| {
                Error::kernel(
                    self.backend().family(),
                    kernel,
                    format!("execution failed (TESSERA_SYNC_LAUNCHES=1): {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// Allocate an uninitialised-contents buffer of `len` elements. On the host SIMT executor the
    /// contents are poisoned (0xFF) and guarded by red zones.
    pub fn alloc<T: DType>(&self, len: usize, label: &str) -> Result<DeviceBuffer<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::invalid("alloc", format!("{len} elements overflow usize")))?;
        let mem: Box<dyn RawMem> = match &self.inner.exec {
            Some(e) => e.alloc(bytes, label)?,
            None => Box::new(HostMem::new(bytes)),
        };
        Ok(DeviceBuffer {
            mem,
            len,
            device: self.clone(),
            _t: PhantomData,
        })
    }

    /// Allocate and upload `data`.
    pub fn upload<T: DType>(&self, data: &[T], label: &str) -> Result<DeviceBuffer<T>> {
        let mut b = self.alloc::<T>(data.len(), label)?;
        b.upload(data)?;
        Ok(b)
    }
}

/// A typed buffer in a device's memory. Upload and download are explicit.
pub struct DeviceBuffer<T: DType> {
    mem: Box<dyn RawMem>,
    len: usize,
    device: Device,
    _t: PhantomData<T>,
}

impl<T: DType> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer<{}>[{}] on {}",
            T::KIND,
            self.len,
            self.device.backend()
        )
    }
}

impl<T: DType> DeviceBuffer<T> {
    /// A buffer over `len` elements of `T` at `addr` that the caller owns: tessera never frees
    /// it. On the CPU path `addr` is a host address; on CUDA and HIP a device address of the
    /// device's context. The host SIMT executor does not borrow (an error): stage host memory
    /// into its buffers, which carry red zones. A zero `addr` is an error unless `len == 0`.
    ///
    /// # Safety
    /// `addr` must point to `len * size_of::<T>()` bytes aligned to `T`, readable and writable
    /// through this device (host memory for the CPU path, device memory of this device's context
    /// for a GPU), alive and not accessed by anyone else (except through other borrowed buffers
    /// that only read it) until the buffer is dropped and the work queued on it has finished.
    pub unsafe fn borrow_raw(device: &Device, addr: u64, len: usize) -> Result<DeviceBuffer<T>> {
        let size = std::mem::size_of::<T>();
        let bytes = len
            .checked_mul(size)
            .ok_or_else(|| Error::invalid("borrow", format!("{len} elements overflow usize")))?;
        if addr == 0 && len > 0 {
            return Err(Error::invalid("borrow", "null data pointer"));
        }
        if addr % std::mem::align_of::<T>() as u64 != 0 {
            return Err(Error::invalid(
                "borrow",
                format!(
                    "address {addr:#x} is not aligned to {} ({size} bytes)",
                    T::KIND
                ),
            ));
        }
        let mem: Box<dyn RawMem> = match &device.inner.exec {
            // SAFETY: forwarded contract.
            Some(e) => unsafe { e.borrow(addr, bytes)? },
            None => {
                let ptr = if len == 0 {
                    std::ptr::NonNull::<T>::dangling().as_ptr() as *mut u8
                } else {
                    addr as *mut u8
                };
                Box::new(BorrowedHost { ptr, bytes })
            }
        };
        Ok(DeviceBuffer {
            mem,
            len,
            device: device.clone(),
            _t: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device that owns this buffer.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The buffer's address as its device sees it: a device pointer on CUDA and HIP, a host
    /// pointer on SIMT and the CPU path (the start of the payload, inside the red zones on SIMT).
    /// For handing the memory to another framework (the Python package exports outputs over
    /// DLPack); reading or writing through it is the caller's responsibility, and it is valid only
    /// while the buffer lives.
    pub fn device_ptr(&self) -> u64 {
        self.mem.addr()
    }

    /// Copy `data` (exactly `len()` elements) into the buffer.
    pub fn upload(&mut self, data: &[T]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::invalid(
                "upload",
                format!(
                    "buffer holds {} elements, data has {}",
                    self.len,
                    data.len()
                ),
            ));
        }
        self.mem.write(0, bytemuck::cast_slice(data))
    }

    /// Copy the buffer to a new host vector.
    pub fn download(&self) -> Result<Vec<T>> {
        self.device.inner.d2h.fetch_add(1, Ordering::Relaxed);
        let mut out = vec![T::zeroed(); self.len];
        self.mem.read(0, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// Copy `len` elements starting at element `start` to the host.
    pub fn download_range(&self, start: usize, len: usize) -> Result<Vec<T>> {
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::invalid(
                "download",
                format!(
                    "range {start}..{start}+{len} is outside {} elements",
                    self.len
                ),
            ));
        }
        self.device.inner.d2h.fetch_add(1, Ordering::Relaxed);
        let mut out = vec![T::zeroed(); len];
        let size = std::mem::size_of::<T>();
        self.mem
            .read(start * size, bytemuck::cast_slice_mut(&mut out))?;
        Ok(out)
    }

    /// The elements as a host slice, when the buffer lives in host memory (CPU, SIMT).
    pub fn host_slice(&self) -> Option<&[T]> {
        self.mem.host().map(bytemuck::cast_slice)
    }

    /// Mutable host view, when the buffer lives in host memory (CPU, SIMT).
    pub fn host_slice_mut(&mut self) -> Option<&mut [T]> {
        self.mem.host_mut().map(bytemuck::cast_slice_mut)
    }

    /// Device-to-device copy of all of `src` into `self` (same device, same length).
    pub fn copy_from(&mut self, src: &DeviceBuffer<T>) -> Result<()> {
        if self.len != src.len {
            return Err(Error::invalid(
                "copy",
                format!(
                    "copy needs the same length ({} vs {} elements)",
                    src.len, self.len
                ),
            ));
        }
        self.copy_range_from(0, src, 0, self.len)
    }

    /// Device-to-device copy of `len` elements of `src` starting at element `src_start` into
    /// `self` at element `dst_start`, ordered on the device's stream (a DMA copy on GPUs, not a
    /// kernel). Both buffers must live on the same device; ranges are checked.
    pub fn copy_range_from(
        &mut self,
        dst_start: usize,
        src: &DeviceBuffer<T>,
        src_start: usize,
        len: usize,
    ) -> Result<()> {
        if !self.device.same(&src.device) {
            return Err(Error::invalid(
                "copy",
                format!(
                    "source is on {} and destination on {}: copies between devices go through \
                     a transport",
                    src.device.backend(),
                    self.device.backend()
                ),
            ));
        }
        let fits = |start: usize, n: usize| start.checked_add(len).is_some_and(|e| e <= n);
        if !fits(src_start, src.len) || !fits(dst_start, self.len) {
            return Err(Error::invalid(
                "copy",
                format!(
                    "{len} elements from {src_start} (source holds {}) to {dst_start} \
                     (destination holds {}) are out of range",
                    src.len, self.len
                ),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        let size = std::mem::size_of::<T>();
        let (d, s, bytes) = (dst_start * size, src_start * size, len * size);
        match &self.device.inner.exec {
            Some(e) => e.copy(&mut *self.mem, d, &*src.mem, s, bytes),
            None => {
                let sm = src.mem.host().expect("cpu memory is host memory");
                self.mem.write(d, &sm[s..s + bytes])
            }
        }
    }

    /// The address kernels receive for this buffer.
    pub(crate) fn addr(&self) -> u64 {
        self.mem.addr()
    }
}

/// An ordered queue of work on a device. Tessera's ops run on the device's default stream.
#[derive(Clone, Debug)]
pub struct Stream {
    device: Device,
}

impl Stream {
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Wait for everything queued on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.device.synchronize()
    }

    /// Record an event at the current point of the stream.
    pub fn record(&self) -> Result<Event> {
        let raw: Box<dyn RawEvent> = match &self.device.inner.exec {
            Some(e) => e.record_event()?,
            None => Box::new(HostEvent(Instant::now())),
        };
        Ok(Event {
            raw,
            backend: self.device.backend(),
        })
    }
}

/// A recorded point in a stream, for timing. On a GPU it is a device event (GPU time); on SIMT
/// and CPU it is the host clock (CPU time, never to be reported as GPU performance).
pub struct Event {
    raw: Box<dyn RawEvent>,
    backend: Backend,
}

impl Event {
    /// Milliseconds between this event and `later`.
    pub fn elapsed_ms(&self, later: &Event) -> Result<f32> {
        if self.backend.family() != later.backend.family() {
            return Err(Error::invalid(
                "event",
                "events come from different devices",
            ));
        }
        self.raw.elapsed_ms(&*later.raw)
    }

    /// True when the time was measured on a GPU.
    pub fn is_gpu_time(&self) -> bool {
        matches!(self.backend, Backend::Cuda(_) | Backend::Hip(_))
    }
}

/// Map a file read-only (checkpoint inputs and `.tsnap` files). Lives here because mapping is
/// `unsafe`: another process may change the file underneath the map. Callers only use mapped
/// bytes they validate (the codec checksums every section and hashes every output).
pub(crate) fn map_file(f: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: read-only mapping; a concurrent writer can only make the bytes inconsistent, which
    // the callers' checksums and output hashes report as errors, never out-of-bounds access.
    unsafe { memmap2::Mmap::map(f) }
}
