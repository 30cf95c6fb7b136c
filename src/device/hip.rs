//! The HIP executor: libamdhip64 opened at run time with `dlopen` (no ROCm needed to build or
//! to run without an AMD GPU). Loads the embedded code object of a kernel file for the device's
//! architecture (gfx942 or gfx90a) once, on first use, and launches by name with
//! `hipModuleLaunchKernel`, passing the same pointer array as every other executor.
//!
//! Every failure is an [`Error`]: a missing library or no device is `DeviceUnavailable` naming
//! what was tried, a build without the `hip` feature is `Unsupported` (after the library probe,
//! so the message says what the machine has), and a failing HIP call is `Driver` with
//! `hipGetErrorString`'s text.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::ptr;
use std::sync::{Arc, Mutex};

use libloading::Library;

use crate::device::{Backend, Exec, KernelArgs, LaunchConfig, RawEvent, RawMem};
use crate::error::{Error, Result};
use crate::kernels;

const B: &str = "hip";

/// The architectures code objects are built for (see build/hip.rs), best first.
pub(crate) const ARCHS: [&str; 2] = ["gfx942", "gfx90a"];

type HipError = c_int;
type HipModule = *mut c_void;
type HipFunction = *mut c_void;
type HipEvent = *mut c_void;
type HipStream = *mut c_void;

const HIP_SUCCESS: HipError = 0;
const HIP_MEMCPY_HOST_TO_DEVICE: c_int = 1;
const HIP_MEMCPY_DEVICE_TO_HOST: c_int = 2;
const HIP_MEMCPY_DEVICE_TO_DEVICE: c_int = 3;
/// `extra` array markers of `hipModuleLaunchKernel` (hip_runtime_api.h).
const HIP_LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
const HIP_LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;
const HIP_LAUNCH_PARAM_END: usize = 0x03;

/// Library names tried, in order; `$ROCM_PATH/lib/libamdhip64.so` is tried after them.
const LIB_NAMES: [&str; 3] = ["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"];

/// The HIP runtime entry points tessera uses, resolved once from the opened library.
struct Api {
    init: unsafe extern "C" fn(c_uint) -> HipError,
    get_device_count: unsafe extern "C" fn(*mut c_int) -> HipError,
    set_device: unsafe extern "C" fn(c_int) -> HipError,
    device_get_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> HipError,
    get_device_properties: unsafe extern "C" fn(*mut c_void, c_int) -> HipError,
    module_load_data: unsafe extern "C" fn(*mut HipModule, *const c_void) -> HipError,
    module_unload: unsafe extern "C" fn(HipModule) -> HipError,
    module_get_function:
        unsafe extern "C" fn(*mut HipFunction, HipModule, *const c_char) -> HipError,
    #[allow(clippy::type_complexity)]
    module_launch_kernel: unsafe extern "C" fn(
        HipFunction,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        HipStream,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> HipError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> HipError,
    free: unsafe extern "C" fn(*mut c_void) -> HipError,
    memcpy: unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int) -> HipError,
    memcpy_async:
        unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int, HipStream) -> HipError,
    stream_synchronize: unsafe extern "C" fn(HipStream) -> HipError,
    device_synchronize: unsafe extern "C" fn() -> HipError,
    event_create: unsafe extern "C" fn(*mut HipEvent) -> HipError,
    event_destroy: unsafe extern "C" fn(HipEvent) -> HipError,
    event_record: unsafe extern "C" fn(HipEvent, HipStream) -> HipError,
    event_synchronize: unsafe extern "C" fn(HipEvent) -> HipError,
    event_elapsed_time: unsafe extern "C" fn(*mut f32, HipEvent, HipEvent) -> HipError,
    get_error_string: unsafe extern "C" fn(HipError) -> *const c_char,
    /// Keeps the function pointers above valid; dropped last.
    _lib: Library,
}

// SAFETY: Api holds plain C function pointers into a library that stays loaded while the Api
// lives; the HIP runtime's entry points are thread-safe.
unsafe impl Send for Api {}
// SAFETY: as above; Api is immutable after construction.
unsafe impl Sync for Api {}

/// The candidate library paths, in the order they are tried.
fn library_candidates() -> Vec<String> {
    let mut v: Vec<String> = LIB_NAMES.iter().map(|s| s.to_string()).collect();
    if let Some(rocm) = std::env::var_os("ROCM_PATH").filter(|p| !p.is_empty()) {
        let lib = std::path::Path::new(&rocm).join("lib");
        for n in LIB_NAMES {
            v.push(lib.join(n).to_string_lossy().into_owned());
        }
    }
    v
}

/// Open the first library of `candidates` that loads.
fn open_library(candidates: &[String]) -> Result<Library> {
    let mut failures = Vec::new();
    for name in candidates {
        // SAFETY: loading libamdhip64 runs its initialisers, which have no preconditions; the
        // names are the HIP runtime's own.
        match unsafe { Library::new(name.as_str()) } {
            Ok(lib) => return Ok(lib),
            Err(e) => failures.push(format!("{name} ({e})")),
        }
    }
    Err(Error::DeviceUnavailable {
        backend: B,
        msg: format!(
            "the HIP runtime cannot be loaded; tried: {}",
            failures.join("; ")
        ),
    })
}

impl Api {
    fn load(candidates: &[String]) -> Result<Api> {
        let lib = open_library(candidates)?;
        fn sym<T: Copy>(lib: &Library, name: &str) -> Result<T> {
            // SAFETY: each name is resolved with the C signature the HIP runtime API declares
            // for it (hip_runtime_api.h), which is the type `T` the caller asks for.
            unsafe { lib.get::<T>(name) }
                .map(|s| *s)
                .map_err(|e| Error::DeviceUnavailable {
                    backend: B,
                    msg: format!("libamdhip64 lacks {name}: {e}"),
                })
        }
        // ROCm 6 headers map hipGetDeviceProperties to the R0600 entry point; ROCm 5 has only
        // the plain one. Either layout holds gcnArchName, which is all tessera reads.
        let get_device_properties = sym(&lib, "hipGetDevicePropertiesR0600")
            .or_else(|_| sym(&lib, "hipGetDeviceProperties"))?;
        Ok(Api {
            init: sym(&lib, "hipInit")?,
            get_device_count: sym(&lib, "hipGetDeviceCount")?,
            set_device: sym(&lib, "hipSetDevice")?,
            device_get_name: sym(&lib, "hipDeviceGetName")?,
            get_device_properties,
            module_load_data: sym(&lib, "hipModuleLoadData")?,
            module_unload: sym(&lib, "hipModuleUnload")?,
            module_get_function: sym(&lib, "hipModuleGetFunction")?,
            module_launch_kernel: sym(&lib, "hipModuleLaunchKernel")?,
            malloc: sym(&lib, "hipMalloc")?,
            free: sym(&lib, "hipFree")?,
            memcpy: sym(&lib, "hipMemcpy")?,
            memcpy_async: sym(&lib, "hipMemcpyAsync")?,
            stream_synchronize: sym(&lib, "hipStreamSynchronize")?,
            device_synchronize: sym(&lib, "hipDeviceSynchronize")?,
            event_create: sym(&lib, "hipEventCreate")?,
            event_destroy: sym(&lib, "hipEventDestroy")?,
            event_record: sym(&lib, "hipEventRecord")?,
            event_synchronize: sym(&lib, "hipEventSynchronize")?,
            event_elapsed_time: sym(&lib, "hipEventElapsedTime")?,
            get_error_string: sym(&lib, "hipGetErrorString")?,
            _lib: lib,
        })
    }

    /// `Ok` for hipSuccess, else a `Driver` error with the runtime's message.
    fn check(&self, call: &str, e: HipError) -> Result<()> {
        if e == HIP_SUCCESS {
            return Ok(());
        }
        // SAFETY: hipGetErrorString accepts any code and returns a static NUL-terminated string
        // (or null, handled).
        let p = unsafe { (self.get_error_string)(e) };
        let msg = if p.is_null() {
            format!("error {e}")
        } else {
            // SAFETY: p is non-null and points to a static NUL-terminated string.
            let s = unsafe { CStr::from_ptr(p) };
            format!("{} (error {e})", s.to_string_lossy())
        };
        Err(Error::driver(B, call, msg))
    }
}

/// `gfx942` from a `gcnArchName` such as `gfx942:sramecc+:xnack-` (target features dropped).
pub(crate) fn parse_arch_name(gcn: &str) -> Option<&str> {
    let base = gcn.trim().split(':').next()?;
    let digits = base.strip_prefix("gfx")?;
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_hexdigit())).then_some(base)
}

/// The code-object architecture for a device's `gcnArchName`, or a clear error.
pub(crate) fn code_object_arch(gcn: &str) -> Result<&'static str> {
    let arch = parse_arch_name(gcn).ok_or_else(|| Error::Unsupported {
        what: "hip device".into(),
        msg: format!("cannot parse the architecture name {gcn:?}"),
    })?;
    ARCHS
        .iter()
        .copied()
        .find(|a| *a == arch)
        .ok_or_else(|| Error::Unsupported {
            what: format!("hip device {arch}"),
            msg: format!("tessera's code objects are built for {}", ARCHS.join(", ")),
        })
}

/// The first NUL-terminated `gfx<hex>...` string in a `hipDeviceProp_t` image. Scanning keeps
/// the executor independent of the struct layout, which differs between HIP versions;
/// `gcnArchName` is the only field that starts with `gfx` (the marketing name comes first and
/// reads e.g. `AMD Instinct MI300X`).
fn find_gcn_arch_name(props: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 4 <= props.len() {
        if &props[i..i + 3] == b"gfx"
            && props[i + 3].is_ascii_hexdigit()
            && (i == 0 || props[i - 1] == 0)
        {
            let end = props[i..].iter().position(|&b| b == 0).map(|n| i + n)?;
            return std::str::from_utf8(&props[i..end]).ok().map(str::to_string);
        }
        i += 1;
    }
    None
}

/// Kernel names in an AMDGPU code object: the symbols `<name>.kd` (kernel descriptors) of its
/// ELF symbol tables. Malformed input yields what could be read.
pub(crate) fn code_object_kernels(elf: &[u8]) -> Vec<String> {
    fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
        b.get(off..off.checked_add(N)?)?.try_into().ok()
    }
    let u16_at = |off| rd::<2>(elf, off).map(u16::from_le_bytes);
    let u32_at = |off| rd::<4>(elf, off).map(u32::from_le_bytes);
    let u64_at = |off| rd::<8>(elf, off).map(u64::from_le_bytes);
    let mut names = Vec::new();
    if elf.get(0..5) != Some(b"\x7fELF\x02") {
        return names;
    }
    let (Some(shoff), Some(shentsize), Some(shnum)) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c))
    else {
        return names;
    };
    let sh = |i: usize| shoff as usize + i * shentsize as usize;
    for i in 0..shnum as usize {
        // SHT_SYMTAB (2) or SHT_DYNSYM (11); sh_link is the string table's index.
        let Some(ty) = u32_at(sh(i) + 4) else { break };
        if ty != 2 && ty != 11 {
            continue;
        }
        let (Some(off), Some(size), Some(link), Some(entsize)) = (
            u64_at(sh(i) + 0x18),
            u64_at(sh(i) + 0x20),
            u32_at(sh(i) + 0x28),
            u64_at(sh(i) + 0x38),
        ) else {
            continue;
        };
        let Some(stroff) = u64_at(sh(link as usize) + 0x18) else {
            continue;
        };
        if entsize == 0 {
            continue;
        }
        for s in 0..(size / entsize) as usize {
            let Some(name_off) = u32_at(off as usize + s * entsize as usize) else {
                break;
            };
            let start = stroff as usize + name_off as usize;
            let Some(tail) = elf.get(start..) else {
                continue;
            };
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            if let Some(k) = std::str::from_utf8(&tail[..end])
                .ok()
                .and_then(|n| n.strip_suffix(".kd"))
            {
                names.push(k.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Kernel arguments in the two forms `hipModuleLaunchKernel` accepts: `kernelParams` (one
/// pointer per argument, what tessera passes) and the `extra` form (one packed buffer with
/// `HIP_LAUNCH_PARAM_BUFFER_POINTER`/`_SIZE`/`_END`), selected with `TESSERA_HIP_ARG_BUFFER=1`
/// as a diagnostic.
struct LaunchArgs {
    pointers: Vec<*mut c_void>,
    packed: Vec<u8>,
    packed_size: Box<usize>,
}

impl LaunchArgs {
    fn new(args: &KernelArgs) -> Self {
        let packed = args.packed();
        let packed_size = Box::new(packed.len());
        LaunchArgs {
            pointers: args.pointers(),
            packed,
            packed_size,
        }
    }

    /// The `extra` array. Valid while `self` is alive and not moved out of.
    fn extra(&mut self) -> [*mut c_void; 5] {
        [
            HIP_LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
            self.packed.as_mut_ptr() as *mut c_void,
            HIP_LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
            &mut *self.packed_size as *mut usize as *mut c_void,
            HIP_LAUNCH_PARAM_END as *mut c_void,
        ]
    }
}

struct Module {
    raw: HipModule,
    functions: HashMap<String, HipFunction>,
}

pub(crate) struct HipExec {
    api: Arc<Api>,
    ordinal: usize,
    arch: &'static str,
    gcn_arch: String,
    name: String,
    modules: Mutex<HashMap<String, Module>>,
}

// SAFETY: the raw module/function handles are only used under the `modules` mutex, after
// hipSetDevice on the calling thread; the HIP runtime is thread-safe for these handles.
unsafe impl Send for HipExec {}
// SAFETY: as above; all mutation goes through the mutex.
unsafe impl Sync for HipExec {}

impl HipExec {
    pub(crate) fn new(ordinal: usize) -> Result<Self> {
        Self::with_candidates(ordinal, &library_candidates())
    }

    fn with_candidates(ordinal: usize, candidates: &[String]) -> Result<Self> {
        let api = Arc::new(Api::load(candidates)?);
        // SAFETY: hipInit takes flags 0 and has no other preconditions.
        let e = unsafe { (api.init)(0) };
        api.check("hipInit", e)
            .map_err(|err| Error::DeviceUnavailable {
                backend: B,
                msg: format!("no usable AMD GPU: {err}"),
            })?;
        let mut count: c_int = 0;
        // SAFETY: count is a valid out-pointer.
        let e = unsafe { (api.get_device_count)(&mut count) };
        api.check("hipGetDeviceCount", e)
            .map_err(|err| Error::DeviceUnavailable {
                backend: B,
                msg: format!("no usable AMD GPU: {err}"),
            })?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::DeviceUnavailable {
                backend: B,
                msg: format!("no device {ordinal}: {count} HIP device(s) present"),
            });
        }
        if !kernels::HIP_BUILT {
            return Err(Error::Unsupported {
                what: "the hip executor".into(),
                msg: format!(
                    "{count} HIP device(s) present, but tessera was built without the `hip` feature \
                     (rebuild with `--features hip`)"
                ),
            });
        }
        let dev = ordinal as c_int;
        // SAFETY: dev < count.
        api.check("hipSetDevice", unsafe { (api.set_device)(dev) })?;
        let mut name_buf = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes, the length passed.
        api.check("hipDeviceGetName", unsafe {
            (api.device_get_name)(name_buf.as_mut_ptr(), name_buf.len() as c_int, dev)
        })?;
        // SAFETY: hipDeviceGetName NUL-terminates within the given length; the last byte is 0
        // from the initialisation in any case.
        let name = unsafe { CStr::from_ptr(name_buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // hipDeviceProp_t is about 1.5 KiB in every HIP version; 64 KiB of zeroed, 16-byte
        // aligned storage holds any of them.
        let mut props = vec![0u128; 4096];
        // SAFETY: props is writable, aligned and larger than hipDeviceProp_t of any version.
        api.check("hipGetDeviceProperties", unsafe {
            (api.get_device_properties)(props.as_mut_ptr() as *mut c_void, dev)
        })?;
        let gcn_arch = find_gcn_arch_name(bytemuck::cast_slice(&props)).ok_or_else(|| {
            Error::driver(
                B,
                "hipGetDeviceProperties",
                "no gcnArchName (gfx...) in the device properties",
            )
        })?;
        let arch = code_object_arch(&gcn_arch)?;
        Ok(HipExec {
            api,
            ordinal,
            arch,
            gcn_arch,
            name,
            modules: Mutex::new(HashMap::new()),
        })
    }

    fn bind(&self) -> Result<()> {
        bind(&self.api, self.ordinal)
    }

    fn function(&self, module: &str, kernel: &str) -> Result<HipFunction> {
        let mut mods = self
            .modules
            .lock()
            .map_err(|_| Error::driver(B, "module cache", "poisoned"))?;
        if !mods.contains_key(module) {
            let co = kernels::HSACO
                .iter()
                .find(|c| c.module == module && c.arch == self.arch)
                .ok_or_else(|| {
                    Error::kernel(
                        B,
                        kernel,
                        format!(
                            "no code object embedded for module {module} ({})",
                            self.arch
                        ),
                    )
                })?;
            let mut raw: HipModule = ptr::null_mut();
            // SAFETY: co.bytes is a complete code object that outlives the call (static); raw is
            // a valid out-pointer; the device is bound to this thread.
            let e = unsafe {
                (self.api.module_load_data)(&mut raw, co.bytes.as_ptr() as *const c_void)
            };
            self.api
                .check(&format!("hipModuleLoadData({module}, {})", self.arch), e)?;
            mods.insert(
                module.to_string(),
                Module {
                    raw,
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
        let mut f: HipFunction = ptr::null_mut();
        // SAFETY: m.raw is a live module; cname is NUL-terminated; f is a valid out-pointer.
        let e = unsafe { (self.api.module_get_function)(&mut f, m.raw, cname.as_ptr()) };
        self.api.check("hipModuleGetFunction", e).map_err(|err| {
            Error::kernel(
                B,
                kernel,
                format!("not in module {module} ({}): {err}", self.arch),
            )
        })?;
        m.functions.insert(kernel.to_string(), f);
        Ok(f)
    }
}

fn bind(api: &Api, ordinal: usize) -> Result<()> {
    // SAFETY: the ordinal was checked against hipGetDeviceCount when the executor was made.
    api.check("hipSetDevice", unsafe {
        (api.set_device)(ordinal as c_int)
    })
}

impl Drop for HipExec {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        if let Ok(mods) = self.modules.lock() {
            for m in mods.values() {
                // SAFETY: each module was loaded by hipModuleLoadData and is unloaded once, here.
                let _ = unsafe { (self.api.module_unload)(m.raw) };
            }
        }
    }
}

struct HipMem {
    api: Arc<Api>,
    ordinal: usize,
    ptr: *mut c_void,
    /// False for the caller's memory (`DeviceBuffer::borrow_raw`): never freed here.
    owned: bool,
}

// SAFETY: a device pointer is an address valid from any host thread of the process.
unsafe impl Send for HipMem {}
// SAFETY: as above; &self methods only read through the runtime.
unsafe impl Sync for HipMem {}

impl Drop for HipMem {
    fn drop(&mut self) {
        if self.owned && bind(&self.api, self.ordinal).is_ok() {
            // SAFETY: ptr was returned by hipMalloc and is freed once, here.
            let _ = unsafe { (self.api.free)(self.ptr) };
        }
    }
}

impl RawMem for HipMem {
    fn addr(&self) -> u64 {
        self.ptr as u64
    }
    fn write(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        bind(&self.api, self.ordinal)?;
        // SAFETY: the caller checked offset + src.len() <= bytes; the allocation is live and src
        // is a readable host slice. hipMemcpy is synchronous with respect to the null stream.
        let e = unsafe {
            (self.api.memcpy)(
                (self.ptr as *mut u8).add(offset) as *mut c_void,
                src.as_ptr() as *const c_void,
                src.len(),
                HIP_MEMCPY_HOST_TO_DEVICE,
            )
        };
        self.api.check("hipMemcpy(HtoD)", e)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        bind(&self.api, self.ordinal)?;
        if let Some(stream) = super::caller_stream() {
            // SAFETY: `Device::on_stream`'s caller guarantees a live stream of this device.
            let e = unsafe { (self.api.stream_synchronize)(stream) };
            self.api.check("hipStreamSynchronize(caller stream)", e)?;
        }
        // SAFETY: the caller checked offset + dst.len() <= bytes; the allocation is live and dst
        // is a writable host slice. The copy waits for prior work on the null stream (and the
        // caller's stream was synchronised above).
        let e = unsafe {
            (self.api.memcpy)(
                dst.as_mut_ptr() as *mut c_void,
                (self.ptr as *const u8).add(offset) as *const c_void,
                dst.len(),
                HIP_MEMCPY_DEVICE_TO_HOST,
            )
        };
        self.api.check("hipMemcpy(DtoH)", e)
    }
    fn host(&self) -> Option<&[u8]> {
        None
    }
    fn host_mut(&mut self) -> Option<&mut [u8]> {
        None
    }
}

struct HipEventRaw {
    api: Arc<Api>,
    ev: HipEvent,
}

// SAFETY: hipEvent_t handles may be used from any host thread.
unsafe impl Send for HipEventRaw {}
// SAFETY: as above; the event is only read after recording.
unsafe impl Sync for HipEventRaw {}

impl Drop for HipEventRaw {
    fn drop(&mut self) {
        // SAFETY: the event was created by hipEventCreate and is destroyed once, here.
        let _ = unsafe { (self.api.event_destroy)(self.ev) };
    }
}

impl RawEvent for HipEventRaw {
    fn elapsed_ms(&self, later: &dyn RawEvent) -> Result<f32> {
        let later = later
            .as_any()
            .downcast_ref::<HipEventRaw>()
            .ok_or_else(|| Error::invalid("event", "events come from different executors"))?;
        // SAFETY: `later` is a live, recorded event.
        self.api.check("hipEventSynchronize", unsafe {
            (self.api.event_synchronize)(later.ev)
        })?;
        let mut ms = 0f32;
        // SAFETY: both events are live and recorded; ms is a valid out-pointer.
        let e = unsafe { (self.api.event_elapsed_time)(&mut ms, self.ev, later.ev) };
        self.api.check("hipEventElapsedTime", e)?;
        Ok(ms)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Exec for HipExec {
    fn backend(&self) -> Backend {
        Backend::Hip(self.ordinal)
    }

    fn describe(&self) -> String {
        format!(
            "{} ({}), HIP runtime via libamdhip64, code objects: {}",
            self.name, self.gcn_arch, self.arch
        )
    }

    fn alloc(&self, bytes: usize, label: &str) -> Result<Box<dyn RawMem>> {
        self.bind()?;
        let mut p: *mut c_void = ptr::null_mut();
        // hipMalloc of 0 bytes returns null; a 1-byte allocation gives empty buffers an address.
        // SAFETY: p is a valid out-pointer; the device is bound.
        let e = unsafe { (self.api.malloc)(&mut p, bytes.max(1)) };
        self.api
            .check(&format!("hipMalloc({bytes} bytes for {label})"), e)?;
        Ok(Box::new(HipMem {
            api: self.api.clone(),
            ordinal: self.ordinal,
            ptr: p,
            owned: true,
        }))
    }

    unsafe fn borrow(&self, addr: u64, _bytes: usize) -> Result<Box<dyn RawMem>> {
        Ok(Box::new(HipMem {
            api: self.api.clone(),
            ordinal: self.ordinal,
            ptr: addr as *mut c_void,
            owned: false,
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
        let mut la = LaunchArgs::new(args);
        let use_buffer = std::env::var("TESSERA_HIP_ARG_BUFFER").is_ok_and(|v| v == "1");
        let mut extra = la.extra();
        let (params, extra_ptr) = if use_buffer {
            (ptr::null_mut(), extra.as_mut_ptr())
        } else {
            (la.pointers.as_mut_ptr(), ptr::null_mut())
        };
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: f is a live kernel of a loaded module; `params` points to one pointer per
        // argument (or `extra` to the packed buffer and its size), all alive until the call
        // returns, which is when HIP has copied the arguments; null stream.
        let e = unsafe {
            (self.api.module_launch_kernel)(
                f,
                gx,
                gy,
                gz,
                bx,
                by,
                bz,
                cfg.shared_bytes,
                super::caller_stream().unwrap_or(ptr::null_mut()),
                params,
                extra_ptr,
            )
        };
        self.api
            .check("hipModuleLaunchKernel", e)
            .map_err(|err| Error::kernel(B, kernel, format!("launch failed: {err}")))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: no preconditions beyond a bound device.
        self.api.check("hipDeviceSynchronize", unsafe {
            (self.api.device_synchronize)()
        })
    }

    fn kernel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = kernels::HSACO
            .iter()
            .filter(|c| c.arch == self.arch)
            .flat_map(|c| code_object_kernels(c.bytes))
            .collect();
        names.sort();
        names
    }

    fn record_event(&self) -> Result<Box<dyn RawEvent>> {
        self.bind()?;
        let mut ev: HipEvent = ptr::null_mut();
        // SAFETY: ev is a valid out-pointer.
        self.api.check("hipEventCreate", unsafe {
            (self.api.event_create)(&mut ev)
        })?;
        let raw = HipEventRaw {
            api: self.api.clone(),
            ev,
        };
        // SAFETY: ev is a fresh event; the null stream or the caller's live stream.
        self.api.check("hipEventRecord", unsafe {
            (self.api.event_record)(ev, super::caller_stream().unwrap_or(ptr::null_mut()))
        })?;
        Ok(Box::new(raw))
    }

    fn copy(
        &self,
        dst: &mut dyn RawMem,
        dst_off: usize,
        src: &dyn RawMem,
        src_off: usize,
        bytes: usize,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        let (d, s) = (dst.addr() + dst_off as u64, src.addr() + src_off as u64);
        if let Some(stream) = super::caller_stream() {
            // SAFETY: both are live allocations of this device (caller-checked bounds); the
            // stream is the caller's live stream (`Device::on_stream`).
            let e = unsafe {
                (self.api.memcpy_async)(
                    d as *mut c_void,
                    s as *const c_void,
                    bytes,
                    HIP_MEMCPY_DEVICE_TO_DEVICE,
                    stream,
                )
            };
            return self.api.check("hipMemcpyAsync(DtoD)", e);
        }
        // SAFETY: both are live HIP allocations of this executor; the caller checked that
        // `offset + bytes` lies inside each.
        let e = unsafe {
            (self.api.memcpy)(
                d as *mut c_void,
                s as *const c_void,
                bytes,
                HIP_MEMCPY_DEVICE_TO_DEVICE,
            )
        };
        self.api.check("hipMemcpy(DtoD)", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_clean_error() {
        let names = vec![
            "libtessera-no-such-hip.so".to_string(),
            "/nonexistent/libamdhip64.so".to_string(),
        ];
        let err = HipExec::with_candidates(0, &names)
            .err()
            .expect("cannot load");
        match &err {
            Error::DeviceUnavailable { backend, msg } => {
                assert_eq!(*backend, "hip");
                assert!(msg.contains("libtessera-no-such-hip.so"), "{msg}");
                assert!(msg.contains("/nonexistent/libamdhip64.so"), "{msg}");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn probing_gives_a_device_or_a_clean_error() {
        // No machine has usize::MAX HIP devices: without ROCm the library or the driver is
        // missing, with it the ordinal is out of range; either way DeviceUnavailable for hip.
        match HipExec::new(usize::MAX) {
            Ok(e) => panic!("hip:{} opened: {}", usize::MAX, e.describe()),
            Err(Error::DeviceUnavailable { backend, msg }) => {
                assert_eq!(backend, B);
                assert!(!msg.is_empty());
            }
            Err(e) => panic!("hip:{}: expected DeviceUnavailable, got {e:?}", usize::MAX),
        }
        // Device 0: a device, or DeviceUnavailable (no ROCm, no GPU), or Unsupported (a GPU but a
        // build without the `hip` feature); nothing else.
        match HipExec::new(0) {
            Ok(e) => assert!(!e.describe().is_empty()),
            Err(Error::DeviceUnavailable { backend, .. }) => assert_eq!(backend, B),
            Err(Error::Unsupported { what, .. }) => assert_eq!(what, "the hip executor"),
            Err(e) => panic!("hip:0: unexpected error {e:?}"),
        }
    }

    #[test]
    fn candidates_cover_versions() {
        let c = library_candidates();
        assert_eq!(
            &c[..3],
            &["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"]
        );
    }

    #[test]
    fn launch_arguments_both_forms() {
        // (const uint16_t* a, float* out, uint64_t n, uint32_t k, float s)
        let (a, out) = (0x7f00_1000_0000u64, 0x7f00_2000_0100u64);
        let mut args = KernelArgs::new();
        args.push(a)
            .push(out)
            .push(1_000_003u64)
            .push(17u32)
            .push(0.5f32);
        let mut la = LaunchArgs::new(&args);

        // kernelParams: one pointer per argument, each at the argument's value.
        assert_eq!(la.pointers.len(), 5);
        // SAFETY: each pointer points at a live slot of `args` holding a value of that type.
        unsafe {
            assert_eq!(*(la.pointers[0] as *const u64), a);
            assert_eq!(*(la.pointers[1] as *const u64), out);
            assert_eq!(*(la.pointers[2] as *const u64), 1_000_003);
            assert_eq!(*(la.pointers[3] as *const u32), 17);
            assert_eq!(*(la.pointers[4] as *const f32), 0.5);
        }

        // HIP_LAUNCH_PARAM_BUFFER_POINTER: the kernel's argument segment, C layout.
        assert_eq!(la.packed.len(), 32);
        assert_eq!(&la.packed[0..8], &a.to_ne_bytes());
        assert_eq!(&la.packed[8..16], &out.to_ne_bytes());
        assert_eq!(&la.packed[16..24], &1_000_003u64.to_ne_bytes());
        assert_eq!(&la.packed[24..28], &17u32.to_ne_bytes());
        assert_eq!(&la.packed[28..32], &0.5f32.to_ne_bytes());
        let extra = la.extra();
        assert_eq!(extra[0] as usize, HIP_LAUNCH_PARAM_BUFFER_POINTER);
        assert_eq!(extra[1] as *const u8, la.packed.as_ptr());
        assert_eq!(extra[2] as usize, HIP_LAUNCH_PARAM_BUFFER_SIZE);
        // SAFETY: extra[3] points at la.packed_size, alive.
        assert_eq!(unsafe { *(extra[3] as *const usize) }, 32);
        assert_eq!(extra[4] as usize, HIP_LAUNCH_PARAM_END);

        // A u32 before a u64 pads to the u64's alignment, as the kernel ABI does.
        let mut b = KernelArgs::new();
        b.push(3u32).push(a);
        let lb = LaunchArgs::new(&b);
        assert_eq!(lb.packed.len(), 16);
        assert_eq!(&lb.packed[8..16], &a.to_ne_bytes());
    }

    #[test]
    fn arch_names() {
        assert_eq!(parse_arch_name("gfx942:sramecc+:xnack-"), Some("gfx942"));
        assert_eq!(parse_arch_name("gfx90a:sramecc+:xnack-"), Some("gfx90a"));
        assert_eq!(parse_arch_name("gfx1100"), Some("gfx1100"));
        assert_eq!(parse_arch_name(""), None);
        assert_eq!(parse_arch_name("sm_90"), None);
        assert_eq!(parse_arch_name("gfx"), None);
        assert_eq!(
            code_object_arch("gfx942:sramecc+:xnack-").unwrap(),
            "gfx942"
        );
        assert_eq!(code_object_arch("gfx90a").unwrap(), "gfx90a");
        let e = code_object_arch("gfx1100").unwrap_err().to_string();
        assert!(e.contains("gfx1100") && e.contains("gfx942, gfx90a"), "{e}");
        assert!(code_object_arch("bogus").is_err());
    }

    #[test]
    fn arch_name_found_in_properties_image() {
        let mut img = vec![0u8; 2048];
        img[..19].copy_from_slice(b"AMD Instinct MI300X");
        img[300..300 + 22].copy_from_slice(b"gfx942:sramecc+:xnack-");
        assert_eq!(
            find_gcn_arch_name(&img).as_deref(),
            Some("gfx942:sramecc+:xnack-")
        );
        assert_eq!(find_gcn_arch_name(&[0u8; 64]), None);
    }

    #[test]
    fn embedded_code_objects_list_kernels() {
        // Without the `hip` feature there are none; with it every code object names kernels.
        if !kernels::HIP_BUILT {
            assert!(kernels::HSACO.is_empty());
        }
        for co in kernels::HSACO {
            assert!(
                !code_object_kernels(co.bytes).is_empty(),
                "{} {}",
                co.module,
                co.arch
            );
        }
        assert!(code_object_kernels(b"not an elf").is_empty());
        assert!(code_object_kernels(b"\x7fELF\x02truncated").is_empty());
    }
}
