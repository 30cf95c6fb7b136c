//! The host SIMT executor: the kernel sources compiled for the CPU (`cuda/simt`, built by
//! `build/simt.rs` into one static library per warp width) and run with one fiber per GPU thread.
//!
//! Launches are synchronous. Memory is host memory with red zones: every allocation has
//! `RED_ZONE` bytes of a known pattern before and after it (the payload starts poisoned with
//! 0xFF), the executor keeps a registry of its live allocations, and after every launch it checks
//! every red zone; an overwrite is an [`Error::Kernel`] naming the buffer and the byte offset.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::device::{
    Backend, Exec, HostEvent, KernelArgs, LaunchConfig, RawEvent, RawMem, Schedule, SimtConfig,
};
use crate::error::{Error, Result};

/// Bytes of guard pattern before and after every SIMT allocation.
pub(crate) const RED_ZONE: usize = 256;

type LaunchFn = unsafe extern "C" fn(
    kernel: *const c_char,
    grid: *const u32,
    block: *const u32,
    shared_bytes: u32,
    params: *mut *mut c_void,
    param_sizes: *const usize,
    nparams: usize,
    schedule: c_int,
    seed: u64,
    workers: u32,
    err: *mut c_char,
    err_len: usize,
) -> c_int;
type CountFn = unsafe extern "C" fn() -> usize;
type NameFn = unsafe extern "C" fn(usize) -> *const c_char;
type ArityFn = unsafe extern "C" fn(usize) -> i64;
type ParamSizeFn = unsafe extern "C" fn(usize, usize) -> i64;
type BlockFn = unsafe extern "C" fn(usize) -> u32;

extern "C" {
    fn tessera_simt_w32_launch(
        kernel: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        params: *mut *mut c_void,
        param_sizes: *const usize,
        nparams: usize,
        schedule: c_int,
        seed: u64,
        workers: u32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tessera_simt_w32_kernel_count() -> usize;
    fn tessera_simt_w32_kernel_name(i: usize) -> *const c_char;
    fn tessera_simt_w32_kernel_arity(i: usize) -> i64;
    fn tessera_simt_w32_kernel_param_size(i: usize, j: usize) -> i64;
    fn tessera_simt_w32_kernel_block(i: usize) -> u32;
    fn tessera_simt_w64_launch(
        kernel: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        params: *mut *mut c_void,
        param_sizes: *const usize,
        nparams: usize,
        schedule: c_int,
        seed: u64,
        workers: u32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tessera_simt_w64_kernel_count() -> usize;
    fn tessera_simt_w64_kernel_name(i: usize) -> *const c_char;
    fn tessera_simt_w64_kernel_arity(i: usize) -> i64;
    fn tessera_simt_w64_kernel_param_size(i: usize, j: usize) -> i64;
    fn tessera_simt_w64_kernel_block(i: usize) -> u32;
    fn tessera_simt_mem_alloc(
        len: usize,
        red: usize,
        map: *mut *mut c_void,
        map_len: *mut usize,
        tail: *mut usize,
    ) -> *mut c_void;
    fn tessera_simt_mem_free(map: *mut c_void, map_len: usize);
    fn tessera_simt_mem_front_guard() -> usize;
    fn tessera_simt_mem_back_guard() -> usize;
}

/// The C entry points of one wave's library.
struct WaveLib {
    launch: LaunchFn,
    count: CountFn,
    name: NameFn,
    arity: ArityFn,
    param_size: ParamSizeFn,
    block: BlockFn,
}

/// One kernel of a SIMT library's registry, as its source exports it.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimtKernel {
    /// The kernel's name (its PTX / code-object symbol).
    pub name: String,
    /// The `blockDim.x` every launch must use (`TESSERA_EXPORT_BLOCK`, with `blockDim.y = z = 1`);
    /// 0 when any block is accepted (`TESSERA_EXPORT`).
    pub block: u32,
    /// The size in bytes of each argument, in order.
    pub param_sizes: Vec<usize>,
}

/// Every kernel registered in the wave32 or wave64 SIMT library (None for another wave), in
/// registry order: module order, then source order. For checks of kernel declarations against
/// the kernel sources.
#[doc(hidden)]
pub fn simt_kernels(wave: u32) -> Option<Vec<SimtKernel>> {
    let lib = match wave {
        32 => &W32,
        64 => &W64,
        _ => return None,
    };
    // SAFETY: the table functions only read the library's registry (built on their first call)
    // and return null / -1 / 0 for indices out of range.
    let n = unsafe { (lib.count)() };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: as above; a non-null name is a static NUL-terminated string.
        let (name, arity, block) = unsafe { ((lib.name)(i), (lib.arity)(i), (lib.block)(i)) };
        if name.is_null() || arity < 0 {
            continue;
        }
        // SAFETY: non-null names point at static C strings in the library.
        let name = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        let param_sizes = (0..arity as usize)
            // SAFETY: `i` < count and `j` < arity.
            .map(|j| unsafe { (lib.param_size)(i, j) })
            .map(|b| usize::try_from(b).unwrap_or(0))
            .collect();
        out.push(SimtKernel {
            name,
            block,
            param_sizes,
        });
    }
    Some(out)
}

const W32: WaveLib = WaveLib {
    launch: tessera_simt_w32_launch,
    count: tessera_simt_w32_kernel_count,
    name: tessera_simt_w32_kernel_name,
    arity: tessera_simt_w32_kernel_arity,
    param_size: tessera_simt_w32_kernel_param_size,
    block: tessera_simt_w32_kernel_block,
};
const W64: WaveLib = WaveLib {
    launch: tessera_simt_w64_launch,
    count: tessera_simt_w64_kernel_count,
    name: tessera_simt_w64_kernel_name,
    arity: tessera_simt_w64_kernel_arity,
    param_size: tessera_simt_w64_kernel_param_size,
    block: tessera_simt_w64_kernel_block,
};

/// The guard byte at index `i` of a red zone.
fn pattern(i: usize) -> u8 {
    0xA5 ^ (i as u8).wrapping_mul(0x1D)
}

/// One host allocation, its own mapping (cuda/simt/memory.cpp): a no-access guard region, then
/// `RED_ZONE` pattern bytes, the payload, and pattern bytes up to the end of the last page (at
/// least `RED_ZONE`), then a larger no-access guard region. The red zones catch near writes after
/// the launch; the guards make a far write fault inside the kernel, which the runtime reports.
struct Region {
    map: NonNull<c_void>,
    map_len: usize,
    payload: NonNull<u8>,
    len: usize,
    /// Pattern bytes after the payload (to the back guard).
    tail: usize,
    label: String,
}

// SAFETY: the region owns its mapping exclusively; the raw pointers are only dereferenced through
// `&self`/`&mut SimtMem` accessors (payload) and by the red-zone check (pattern bytes only).
unsafe impl Send for Region {}
// SAFETY: shared access only reads the pattern bytes or hands out `&[u8]` of the payload.
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize, label: &str) -> Result<Region> {
        let mut map = std::ptr::null_mut();
        let mut map_len = 0usize;
        let mut tail = 0usize;
        // SAFETY: plain FFI call; the out-pointers point at live locals.
        let payload =
            unsafe { tessera_simt_mem_alloc(len, RED_ZONE, &mut map, &mut map_len, &mut tail) };
        let (Some(payload), Some(map)) = (NonNull::new(payload.cast::<u8>()), NonNull::new(map))
        else {
            return Err(Error::driver(
                "simt",
                "alloc",
                format!("out of host memory mapping {len} bytes for {label:?}"),
            ));
        };
        let r = Region {
            map,
            map_len,
            payload,
            len,
            tail,
            label: label.to_string(),
        };
        let (front, body, back) = r.parts();
        for (i, b) in front.iter_mut().enumerate() {
            *b = pattern(i);
        }
        body.fill(0xFF);
        for (i, b) in back.iter_mut().enumerate() {
            *b = pattern(i);
        }
        Ok(r)
    }

    fn payload(&self) -> *mut u8 {
        self.payload.as_ptr()
    }

    /// The front red zone, the payload and the back red zone.
    #[allow(clippy::mut_from_ref)]
    fn parts(&self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        // SAFETY: the mapping holds RED_ZONE readable/writable bytes before the payload and `tail`
        // after it (tessera_simt_mem_alloc); the three ranges are disjoint. Callers use the payload
        // slice only while they hold the buffer (`SimtMem`), and the pattern slices only here and in
        // `check`, under the executor's registry lock or before the region is shared.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.payload().sub(RED_ZONE), RED_ZONE),
                std::slice::from_raw_parts_mut(self.payload(), self.len),
                std::slice::from_raw_parts_mut(self.payload().add(self.len), self.tail),
            )
        }
    }

    /// Names `addr` when it lies in this region's guard pages (a far out-of-bounds access).
    fn guard_hit(&self, addr: u64) -> Option<String> {
        // SAFETY: plain FFI calls returning constants.
        let (fg, bg) = unsafe {
            (
                tessera_simt_mem_front_guard(),
                tessera_simt_mem_back_guard(),
            )
        };
        let start = self.payload() as u64;
        let end = start + self.len as u64;
        let back = end + self.tail as u64;
        let map = self.map.as_ptr() as u64;
        if addr >= back && addr < back + bg as u64 {
            Some(format!(
                "a far out-of-bounds access hit the guard pages after buffer {:?} ({} bytes): \
                 address {addr:#x} is {} bytes past its end",
                self.label,
                self.len,
                addr - end
            ))
        } else if addr >= map && addr < map + fg as u64 {
            Some(format!(
                "a far out-of-bounds access hit the guard pages before buffer {:?} ({} bytes): \
                 address {addr:#x} is {} bytes before its start",
                self.label,
                self.len,
                start - addr
            ))
        } else {
            None
        }
    }

    /// Checks both red zones; repairs them and describes the overwrite when one was hit.
    fn check(&self) -> Option<String> {
        let (front, _, back) = self.parts();
        let bad_front: Vec<usize> = (0..RED_ZONE).filter(|&i| front[i] != pattern(i)).collect();
        let bad_back: Vec<usize> = (0..back.len()).filter(|&i| back[i] != pattern(i)).collect();
        let mut msgs = Vec::new();
        if let (Some(&last), Some(&first)) = (bad_back.last(), bad_back.first()) {
            msgs.push(format!(
                "red zone after buffer {:?} ({} bytes) overwritten: {} byte(s) at offsets {}..{} past its end (buffer bytes {}..{})",
                self.label,
                self.len,
                bad_back.len(),
                first,
                last + 1,
                self.len + first,
                self.len + last + 1
            ));
        }
        if let (Some(&far), Some(&near)) = (bad_front.first(), bad_front.last()) {
            msgs.push(format!(
                "red zone before buffer {:?} ({} bytes) overwritten: {} byte(s) from {} to {} bytes before its start",
                self.label,
                self.len,
                bad_front.len(),
                RED_ZONE - near,
                RED_ZONE - far
            ));
        }
        if msgs.is_empty() {
            return None;
        }
        for (i, b) in front.iter_mut().enumerate() {
            *b = pattern(i);
        }
        for (i, b) in back.iter_mut().enumerate() {
            *b = pattern(i);
        }
        Some(msgs.join("; "))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` describe the mapping made in `Region::new`, unmapped once.
        unsafe { tessera_simt_mem_free(self.map.as_ptr(), self.map_len) }
    }
}

/// A SIMT buffer: host memory guarded by red zones, registered (weakly) with its executor.
struct SimtMem {
    region: Arc<Region>,
}

impl SimtMem {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the payload is `len` initialised bytes owned by the region, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.region.payload(), self.region.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; `&mut self` is the only Rust handle to the payload (the registry only
        // reads guard bytes).
        unsafe { std::slice::from_raw_parts_mut(self.region.payload(), self.region.len) }
    }
}

impl RawMem for SimtMem {
    fn addr(&self) -> u64 {
        self.region.payload() as u64
    }
    fn write(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        self.bytes_mut()[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        dst.copy_from_slice(&self.bytes()[offset..offset + dst.len()]);
        Ok(())
    }
    fn host(&self) -> Option<&[u8]> {
        Some(self.bytes())
    }
    fn host_mut(&mut self) -> Option<&mut [u8]> {
        Some(self.bytes_mut())
    }
}

/// The host SIMT executor for one warp width and schedule.
pub(crate) struct SimtExec {
    config: SimtConfig,
    lib: &'static WaveLib,
    workers: u32,
    live: Mutex<Vec<Weak<Region>>>,
}

impl SimtExec {
    pub(crate) fn new(config: SimtConfig) -> Result<Self> {
        let lib = match config.wave {
            32 => &W32,
            64 => &W64,
            w => {
                return Err(Error::invalid(
                    "simt",
                    format!(
                    "wave size {w} is not supported (32 runs the CUDA sources, 64 the HIP ones)"
                ),
                ))
            }
        };
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(SimtExec {
            config,
            lib,
            workers: u32::try_from(workers).unwrap_or(u32::MAX),
            live: Mutex::new(Vec::new()),
        })
    }

    /// Appends, to a runtime fault message carrying "[fault address 0x...]", which buffer's guard
    /// pages the address lies in.
    fn name_fault(&self, msg: String) -> String {
        let Some(addr) = msg
            .split("[fault address 0x")
            .nth(1)
            .and_then(|t| t.split(']').next())
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            return msg;
        };
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let hit = live
            .iter()
            .filter_map(|w| w.upgrade())
            .find_map(|r| r.guard_hit(addr));
        match hit {
            Some(h) => format!("{msg}: {h}"),
            None => format!("{msg}: not in the guard pages of any live buffer"),
        }
    }

    /// Checks (and repairs) the red zones of every live allocation.
    fn check_red_zones(&self) -> Option<String> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        let msgs: Vec<String> = live
            .iter()
            .filter_map(|w| w.upgrade())
            .filter_map(|r| r.check())
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }
}

impl Exec for SimtExec {
    fn backend(&self) -> Backend {
        Backend::Simt(self.config)
    }

    fn describe(&self) -> String {
        let schedule = match self.config.schedule {
            Schedule::InOrder => "in-order schedule".to_string(),
            Schedule::Shuffled(s) => format!("shuffled schedule (seed {s})"),
            Schedule::Skewed(s) => format!("warp-skew schedule (seed {s})"),
        };
        format!(
            "host SIMT executor, wave{}, {schedule}, {} workers, {} kernels",
            self.config.wave,
            self.workers,
            self.kernel_names().len()
        )
    }

    fn alloc(&self, bytes: usize, label: &str) -> Result<Box<dyn RawMem>> {
        let region = Arc::new(Region::new(bytes, label)?);
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&region));
        Ok(Box::new(SimtMem { region }))
    }

    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &KernelArgs,
    ) -> Result<()> {
        let name = CString::new(kernel)
            .map_err(|_| Error::kernel("simt", kernel, "kernel name contains a NUL byte"))?;
        let mut ptrs = args.pointers();
        let sizes = args.sizes();
        let (schedule, seed) = match self.config.schedule {
            Schedule::InOrder => (0, 0),
            Schedule::Shuffled(s) => (1, s),
            Schedule::Skewed(s) => (2, s),
        };
        // Bit 8 of the schedule word turns the race detector off for this launch.
        let schedule = schedule | if self.config.racecheck { 0 } else { 0x100 };
        let mut err = vec![0u8; 4096];
        // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, grid/block are
        // 3-element arrays, `ptrs`/`sizes` have `ptrs.len()` entries pointing at argument values
        // that `args` keeps alive, and `err` is a writable buffer of `err.len()` bytes. The runtime
        // checks the argument count and sizes against the kernel's C++ signature before calling it
        // and never lets a C++ exception cross this boundary. The kernel itself dereferences the
        // buffer addresses it was given, as on a GPU.
        let rc = unsafe {
            (self.lib.launch)(
                name.as_ptr(),
                cfg.grid.as_ptr(),
                cfg.block.as_ptr(),
                cfg.shared_bytes,
                ptrs.as_mut_ptr(),
                sizes.as_ptr(),
                ptrs.len(),
                schedule,
                seed,
                self.workers,
                err.as_mut_ptr().cast::<c_char>(),
                err.len(),
            )
        };
        let fault = (rc != 0).then(|| {
            let msg = CStr::from_bytes_until_nul(&err)
                .map(|m| m.to_string_lossy().into_owned())
                .unwrap_or_else(|_| format!("launch failed with code {rc}"));
            if rc == 1 {
                format!("{msg} (launched from module {module})")
            } else {
                msg
            }
        });
        let fault = fault.map(|f| self.name_fault(f));
        let red = self.check_red_zones();
        match (fault, red) {
            (None, None) => Ok(()),
            (Some(f), None) => Err(Error::kernel("simt", kernel, f)),
            (None, Some(r)) => Err(Error::kernel("simt", kernel, r)),
            (Some(f), Some(r)) => Err(Error::kernel("simt", kernel, format!("{f}; also {r}"))),
        }
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn kernel_names(&self) -> Vec<String> {
        // SAFETY: the count function only reads the library's registry, built before main.
        let n = unsafe { (self.lib.count)() };
        (0..n)
            .filter_map(|i| {
                // SAFETY: `i` < count; the name is a static NUL-terminated string or null.
                let p = unsafe { (self.lib.name)(i) };
                // SAFETY: non-null names point at static C strings in the library.
                (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            })
            .collect()
    }

    fn record_event(&self) -> Result<Box<dyn RawEvent>> {
        Ok(Box::new(HostEvent(Instant::now())))
    }

    fn copy(
        &self,
        dst: &mut dyn RawMem,
        dst_off: usize,
        src: &dyn RawMem,
        src_off: usize,
        bytes: usize,
    ) -> Result<()> {
        let s = src
            .host()
            .ok_or_else(|| Error::invalid("copy", "source is not host memory"))?;
        let d = dst
            .host_mut()
            .ok_or_else(|| Error::invalid("copy", "destination is not host memory"))?;
        if src_off + bytes > s.len() || dst_off + bytes > d.len() {
            return Err(Error::invalid(
                "copy",
                format!(
                    "{bytes} bytes at {src_off} -> {dst_off} do not fit (source {} bytes, \
                     destination {} bytes)",
                    s.len(),
                    d.len()
                ),
            ));
        }
        d[dst_off..dst_off + bytes].copy_from_slice(&s[src_off..src_off + bytes]);
        Ok(())
    }
}
