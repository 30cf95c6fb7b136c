//! The CUDA executor: cudarc's driver API, loaded at run time (no toolkit at build time, no
//! driver needed unless a CUDA device is asked for). Loads the embedded PTX of a kernel file once,
//! on first use, and launches by name with `cuLaunchKernel`.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaStream};

use crate::device::{Backend, Exec, KernelArgs, LaunchConfig, RawEvent, RawMem};
use crate::error::{Error, Result};
use crate::kernels;

const B: &str = "cuda";

fn drv(call: &str, e: result::DriverError) -> Error {
    Error::driver(B, call, format!("{e:?}"))
}

/// True when the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: is_culib_present only tries to dlopen the driver library by its known names and
    // drops the handle; it has no preconditions.
    unsafe { sys::is_culib_present() }
}

struct Module {
    raw: sys::CUmodule,
    arch: &'static str,
    functions: HashMap<String, sys::CUfunction>,
}

pub(crate) struct CudaExec {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    sm: u32,
    name: String,
    modules: Mutex<HashMap<String, Module>>,
    /// cuBLASLt's handle and workspace for this device, created on first use
    /// (`device::cublaslt`).
    pub(crate) cublaslt: super::cublaslt::Slot,
}

// SAFETY: the raw CUmodule/CUfunction handles are only used under the `modules` mutex with the
// context bound to the calling thread; the driver API is thread-safe for these handles.
unsafe impl Send for CudaExec {}
// SAFETY: as above; all mutation goes through the mutex.
unsafe impl Sync for CudaExec {}

impl CudaExec {
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(Error::DeviceUnavailable {
                backend: B,
                msg: "the CUDA driver library (libcuda.so) cannot be loaded".into(),
            });
        }
        let count = CudaContext::device_count().map_err(|e| Error::DeviceUnavailable {
            backend: B,
            msg: format!("cuInit/cuDeviceGetCount failed: {e:?}"),
        })?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::DeviceUnavailable {
                backend: B,
                msg: format!("no device {ordinal}: {count} CUDA device(s) present"),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| drv("cuCtx (primary) retain", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| drv("cuDeviceGetAttribute", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let stream = ctx.default_stream();
        Ok(CudaExec {
            ctx,
            stream,
            ordinal,
            sm: (major * 10 + minor) as u32,
            name,
            modules: Mutex::new(HashMap::new()),
            cublaslt: Default::default(),
        })
    }

    /// The stream launches go on: the caller's (`Device::on_stream`) or the compute stream.
    pub(crate) fn current_stream(&self) -> sys::CUstream {
        super::caller_stream()
            .map(|s| s as sys::CUstream)
            .unwrap_or_else(|| self.stream.cu_stream())
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv("cuCtxSetCurrent", e))
    }

    fn function(&self, module: &str, kernel: &str) -> Result<sys::CUfunction> {
        let mut mods = self
            .modules
            .lock()
            .map_err(|_| Error::driver(B, "module cache", "poisoned"))?;
        if !mods.contains_key(module) {
            let entry = kernels::ptx_for(module, self.sm).ok_or_else(|| {
                Error::kernel(
                    B,
                    kernel,
                    format!("no PTX embedded for module {module} (sm_{})", self.sm),
                )
            })?;
            let src = CString::new(entry.ptx)
                .map_err(|_| Error::kernel(B, kernel, "embedded PTX contains a NUL byte"))?;
            // SAFETY: `src` is a NUL-terminated PTX image that outlives the call; the context is
            // bound to this thread.
            let raw = unsafe { result::module::load_data(src.as_ptr() as *const c_void) }
                .map_err(|e| drv(&format!("cuModuleLoadData({module}, {})", entry.arch), e))?;
            mods.insert(
                module.to_string(),
                Module {
                    raw,
                    arch: entry.arch,
                    functions: HashMap::new(),
                },
            );
        }
        let m = mods.get_mut(module).expect("inserted above");
        if let Some(f) = m.functions.get(kernel) {
            return Ok(*f);
        }
        let cname =
            CString::new(kernel).map_err(|_| Error::kernel(B, kernel, "name has a NUL byte"))?;
        // SAFETY: m.raw is a live module of this context; cname is NUL-terminated.
        let f = unsafe { result::module::get_function(m.raw, cname) }.map_err(|e| {
            Error::kernel(
                B,
                kernel,
                format!("not in module {module} ({}): {e:?}", m.arch),
            )
        })?;
        m.functions.insert(kernel.to_string(), f);
        Ok(f)
    }
}

impl Drop for CudaExec {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        if let Ok(mods) = self.modules.lock() {
            for m in mods.values() {
                // SAFETY: each module was loaded in this context and is unloaded once, here.
                let _ = unsafe { result::module::unload(m.raw) };
            }
        }
    }
}

struct CudaMem {
    ctx: Arc<CudaContext>,
    ptr: sys::CUdeviceptr,
    /// False for the caller's memory (`DeviceBuffer::borrow_raw`): never freed here.
    owned: bool,
    /// The caller's stream this was allocated on, stream-ordered (`Device::on_stream`): freed
    /// on it without a device-wide wait when it is still the thread's stream at drop.
    ordered_on: Option<usize>,
}

impl Drop for CudaMem {
    fn drop(&mut self) {
        if !self.owned || self.ctx.bind_to_thread().is_err() {
            return;
        }
        if let Some(s) = self.ordered_on {
            if super::caller_stream() == Some(s as *mut c_void) {
                // SAFETY: ptr came from cuMemAllocAsync on stream `s`, which is still the
                // caller's live stream (`Device::on_stream`); freed once, ordered after the work
                // queued on `s` that used it.
                if unsafe { result::free_async(self.ptr, s as sys::CUstream) }.is_ok() {
                    return;
                }
            }
        }
        // SAFETY: ptr was returned by cuMemAlloc or cuMemAllocAsync in this context and is
        // freed once; cuMemFree frees either kind after waiting for the device.
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}

impl RawMem for CudaMem {
    fn addr(&self) -> u64 {
        self.ptr
    }
    fn write(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv("cuCtxSetCurrent", e))?;
        // SAFETY: the caller checked offset + src.len() <= bytes; the allocation is live.
        unsafe { result::memcpy_htod_sync(self.ptr + offset as u64, src) }
            .map_err(|e| drv("cuMemcpyHtoD", e))
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv("cuCtxSetCurrent", e))?;
        if let Some(s) = super::caller_stream() {
            // SAFETY: `Device::on_stream`'s caller guarantees a live stream of this context.
            unsafe { result::stream::synchronize(s as sys::CUstream) }
                .map_err(|e| drv("cuStreamSynchronize(caller stream)", e))?;
        }
        // SAFETY: the caller checked offset + dst.len() <= bytes; the allocation is live. The
        // synchronous copy waits for prior work on the legacy default stream we launch on (and
        // the caller's stream was synchronised above).
        unsafe { result::memcpy_dtoh_sync(dst, self.ptr + offset as u64) }
            .map_err(|e| drv("cuMemcpyDtoH", e))
    }
    fn host(&self) -> Option<&[u8]> {
        None
    }
    fn host_mut(&mut self) -> Option<&mut [u8]> {
        None
    }
}

struct CudaEventRaw {
    ev: sys::CUevent,
}
// SAFETY: CUevent handles may be used from any thread with the context bound.
unsafe impl Send for CudaEventRaw {}
// SAFETY: as above; the event is only read after recording.
unsafe impl Sync for CudaEventRaw {}

impl Drop for CudaEventRaw {
    fn drop(&mut self) {
        // SAFETY: the event was created by cuEventCreate and is destroyed once.
        let _ = unsafe { result::event::destroy(self.ev) };
    }
}

impl RawEvent for CudaEventRaw {
    fn elapsed_ms(&self, later: &dyn RawEvent) -> Result<f32> {
        let later = later
            .as_any()
            .downcast_ref::<CudaEventRaw>()
            .ok_or_else(|| Error::invalid("event", "events come from different executors"))?;
        // SAFETY: both events are live and were recorded; synchronize waits for `later`.
        unsafe {
            result::event::synchronize(later.ev).map_err(|e| drv("cuEventSynchronize", e))?;
            result::event::elapsed(self.ev, later.ev).map_err(|e| drv("cuEventElapsedTime", e))
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Exec for CudaExec {
    fn backend(&self) -> Backend {
        Backend::Cuda(self.ordinal)
    }

    fn describe(&self) -> String {
        format!(
            "{} (sm_{}), CUDA driver via cudarc, PTX: {}",
            self.name,
            self.sm,
            kernels::PTX_ORIGIN
        )
    }

    fn alloc(&self, bytes: usize, _label: &str) -> Result<Box<dyn RawMem>> {
        self.bind()?;
        // On the caller's stream, allocate stream-ordered (no device-wide wait when the buffer
        // is freed there); fall back to cuMemAlloc when the device has no memory pools.
        if let Some(s) = super::caller_stream() {
            // SAFETY: the caller's live stream of this context (`Device::on_stream`).
            if let Ok(ptr) = unsafe { result::malloc_async(s as sys::CUstream, bytes.max(1)) } {
                return Ok(Box::new(CudaMem {
                    ctx: self.ctx.clone(),
                    ptr,
                    owned: true,
                    ordered_on: Some(s as usize),
                }));
            }
        }
        // cuMemAlloc rejects 0 bytes; a 1-byte allocation gives empty buffers a valid address.
        // SAFETY: plain allocation in the bound context.
        let ptr = unsafe { result::malloc_sync(bytes.max(1)) }
            .map_err(|e| drv(&format!("cuMemAlloc({bytes} bytes)"), e))?;
        Ok(Box::new(CudaMem {
            ctx: self.ctx.clone(),
            ptr,
            owned: true,
            ordered_on: None,
        }))
    }

    unsafe fn borrow(&self, addr: u64, _bytes: usize) -> Result<Box<dyn RawMem>> {
        Ok(Box::new(CudaMem {
            ctx: self.ctx.clone(),
            ptr: addr,
            owned: false,
            ordered_on: None,
        }))
    }

    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &KernelArgs,
    ) -> Result<()> {
        self.bind()?;
        let f = self.function(module, kernel)?;
        let mut params = args.pointers();
        // SAFETY: `f` is a function of a live module; `params` points at argument values that
        // live as long as `args`, and the op that built `args` matched the kernel's signature;
        // every pointer argument is a live allocation of this context.
        unsafe {
            result::launch_kernel(
                f,
                (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
                (cfg.block[0], cfg.block[1], cfg.block[2]),
                cfg.shared_bytes,
                self.current_stream(),
                &mut params,
            )
        }
        .map_err(|e| Error::kernel(B, kernel, format!("cuLaunchKernel: {e:?}")))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        if let Some(s) = super::caller_stream() {
            // SAFETY: `Device::on_stream`'s caller guarantees a live stream of this context.
            unsafe { result::stream::synchronize(s as sys::CUstream) }
                .map_err(|e| drv("cuStreamSynchronize(caller stream)", e))?;
        }
        self.stream
            .synchronize()
            .map_err(|e| drv("cuStreamSynchronize", e))
    }

    fn kernel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = kernels::PTX
            .iter()
            .filter(|e| e.arch == "sm_80")
            .flat_map(|e| kernels::ptx_entries(e.ptx))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    fn record_event(&self) -> Result<Box<dyn RawEvent>> {
        self.bind()?;
        let ev = result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| drv("cuEventCreate", e))?;
        // SAFETY: ev is a fresh event; the stream belongs to the bound context.
        unsafe { result::event::record(ev, self.current_stream()) }
            .map_err(|e| drv("cuEventRecord", e))?;
        Ok(Box::new(CudaEventRaw { ev }))
    }

    fn copy(
        &self,
        dst: &mut dyn RawMem,
        dst_off: usize,
        src: &dyn RawMem,
        src_off: usize,
        bytes: usize,
    ) -> Result<()> {
        self.bind()?;
        let (d, s) = (dst.addr() + dst_off as u64, src.addr() + src_off as u64);
        // SAFETY: both are allocations of this context and the caller checked that
        // `offset + bytes` lies inside each; the copy is ordered on the launch stream.
        unsafe { result::memcpy_dtod_async(d, s, bytes, self.current_stream()) }
            .map_err(|e| drv("cuMemcpyDtoDAsync", e))
    }

    fn as_cuda(&self) -> Option<&CudaExec> {
        Some(self)
    }
}

// ---- Copies between devices (single-process multi-GPU transport) ----
//
// The compute stream of every CUDA device is the context's legacy default stream (see
// `CudaExec::new`). Peer copies run on separate non-blocking streams ("copy streams", one per
// device and channel, owned by `device::peer::PeerGroup`) so that they overlap with compute; the
// ordering between the two is made explicit with events ("fences").

impl CudaExec {
    /// The context (the device's primary context).
    pub(crate) fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// A fence: an event recorded at the current end of the compute stream.
    pub(crate) fn fence(&self) -> Result<CudaFence> {
        let ev = self
            .ctx
            .new_event(None)
            .map_err(|e| drv("cuEventCreate", e))?;
        ev.record(&self.stream)
            .map_err(|e| drv("cuEventRecord", e))?;
        Ok(CudaFence(ev))
    }

    /// Make the compute stream wait for a fence (of any context).
    pub(crate) fn compute_wait(&self, f: &CudaFence) -> Result<()> {
        self.stream
            .wait(&f.0)
            .map_err(|e| drv("cuStreamWaitEvent", e))
    }

    /// A new non-blocking stream on this device for peer copies.
    pub(crate) fn copy_stream(&self) -> Result<CudaCopyStream> {
        let s = self
            .ctx
            .new_stream()
            .map_err(|e| drv("cuStreamCreate(non-blocking)", e))?;
        Ok(CudaCopyStream(s))
    }

    /// Copy `bytes` from `src_addr` of `src`'s context to `dst_addr` of `dst`'s context, queued on
    /// `dst`'s compute stream after a fence of `src`'s compute stream; `src`'s compute stream then
    /// waits for the copy, so work queued later on either device is ordered after it.
    pub(crate) fn peer_copy_ordered(
        dst: &CudaExec,
        dst_addr: u64,
        src: &CudaExec,
        src_addr: u64,
        bytes: usize,
    ) -> Result<()> {
        let before = src.fence()?;
        dst.compute_wait(&before)?;
        dst.bind()?;
        // SAFETY: both addresses are live allocations of their contexts (CudaMem) and the caller
        // (DeviceBuffer::copy_range_from_peer) checked that `addr + bytes` lies inside each; the
        // copy is queued on dst's compute stream, which belongs to the bound context.
        unsafe {
            result::memcpy_peer_async(
                dst.ctx.cu_ctx(),
                dst_addr,
                src.ctx.cu_ctx(),
                src_addr,
                bytes,
                dst.stream.cu_stream(),
            )
        }
        .map_err(|e| drv("cuMemcpyPeerAsync", e))?;
        let after = dst.fence()?;
        src.compute_wait(&after)
    }
}

/// Enable `from`'s context to access `to`'s memory directly (NVLink or PCIe peer-to-peer) when the
/// hardware allows it. Returns whether the path is direct. "Already enabled" counts as enabled;
/// when the pair cannot be peers (no P2P path, too many peers), copies between them still work:
/// `cuMemcpyPeerAsync` stages them through host memory.
pub(crate) fn enable_peer_access(from: &CudaExec, to: &CudaExec) -> Result<bool> {
    if from.ordinal == to.ordinal {
        return Err(Error::invalid(
            "peer access",
            format!(
                "cuda:{} and cuda:{} are the same GPU",
                from.ordinal, to.ordinal
            ),
        ));
    }
    let mut can: std::ffi::c_int = 0;
    // SAFETY: `can` is a valid out-pointer; both CUdevice handles come from live contexts.
    unsafe { sys::cuDeviceCanAccessPeer(&mut can, from.ctx.cu_device(), to.ctx.cu_device()) }
        .result()
        .map_err(|e| drv("cuDeviceCanAccessPeer", e))?;
    if can == 0 {
        return Ok(false);
    }
    from.bind()?;
    // SAFETY: `from`'s context is current on this thread and `to`'s context is a live primary
    // context of another device; flags must be 0.
    let r = unsafe { sys::cuCtxEnablePeerAccess(to.ctx.cu_ctx(), 0) };
    match r {
        sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED => {
            Ok(true)
        }
        sys::CUresult::CUDA_ERROR_TOO_MANY_PEERS
        | sys::CUresult::CUDA_ERROR_PEER_ACCESS_UNSUPPORTED => Ok(false),
        e => Err(Error::driver(
            B,
            format!(
                "cuCtxEnablePeerAccess(cuda:{} -> cuda:{})",
                from.ordinal, to.ordinal
            ),
            format!("{e:?}"),
        )),
    }
}

/// An event recorded on a compute stream.
pub(crate) struct CudaFence(cudarc::driver::CudaEvent);

/// A non-blocking stream for peer copies.
pub(crate) struct CudaCopyStream(Arc<CudaStream>);

impl CudaCopyStream {
    /// Order everything queued later on this stream after `f`.
    pub(crate) fn wait(&self, f: &CudaFence) -> Result<()> {
        self.0.wait(&f.0).map_err(|e| drv("cuStreamWaitEvent", e))
    }

    /// Queue a copy of `bytes` from `src_addr` (memory of `src`'s context) to `dst_addr` (memory
    /// of `dst`'s context). The caller checked both ranges against live allocations.
    pub(crate) fn peer_copy(
        &self,
        dst: &CudaExec,
        dst_addr: u64,
        src: &CudaExec,
        src_addr: u64,
        bytes: usize,
    ) -> Result<()> {
        self.0
            .context()
            .bind_to_thread()
            .map_err(|e| drv("cuCtxSetCurrent", e))?;
        // SAFETY: the addresses are live allocations of the named contexts and the caller
        // (device::peer) checked `addr + bytes` against each buffer; the stream belongs to the
        // bound context. The buffers are not freed before the copy lands: PeerGroup::synchronize
        // (Transport::wait) and PeerGroup's Drop wait for this stream.
        unsafe {
            result::memcpy_peer_async(
                dst.ctx.cu_ctx(),
                dst_addr,
                src.ctx.cu_ctx(),
                src_addr,
                bytes,
                self.0.cu_stream(),
            )
        }
        .map_err(|e| drv("cuMemcpyPeerAsync", e))
    }

    /// The raw stream handle (for NCCL calls).
    pub(crate) fn raw(&self) -> sys::CUstream {
        self.0.cu_stream()
    }

    /// Wait (on the host) for everything queued on this stream.
    pub(crate) fn synchronize(&self) -> Result<()> {
        self.0
            .synchronize()
            .map_err(|e| drv("cuStreamSynchronize(copy stream)", e))
    }
}
