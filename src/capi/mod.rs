//! The C ABI: one `tessera_<family>_<op>` function per op of the op table, over DLPack
//! `DLTensor`s the caller owns, plus `tessera_last_error`, `tessera_version` and
//! `tessera_set_host_executor`. The header `include/tessera.h` is generated from this module by
//! cbindgen (`cbindgen.toml`) and checked fresh by `tests/header.rs`; the per-op functions in
//! `ops.rs` are generated from the op table by [`codegen::rust_source`] and checked fresh by a
//! unit test (`TESSERA_BLESS=1 cargo test --lib capi` rewrites both files).
//!
//! Every function catches panics (none crosses the boundary), returns a [`TesseraStatus`] and
//! leaves a message naming the op and the problem for [`tessera_last_error`]. See
//! docs/interop.md for ownership, streams, layouts and thread safety.

#![allow(unsafe_code)]

pub mod codegen;
pub mod dlpack;
// Generated (capi::codegen): rustfmt leaves it as generated, so the freshness test holds.
#[rustfmt::skip]
mod ops;

pub use ops::call;

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::interop::{Call, ParamValue};
use dlpack::{DLTensor, View};

pub use dlpack::{DLDataType, DLDevice, DLManagedTensor};

/// What a call returned. `TESSERA_STATUS_OK` is 0; any other value leaves a message for
/// `tessera_last_error`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TesseraStatus {
    Ok = 0,
    /// Bad input: a null or malformed tensor, wrong dtype, shape, strides, alignment or device,
    /// a missing tensor, an unknown or out-of-range parameter.
    InvalidArgument = 1,
    /// The op or kernel is not built for the device.
    Unsupported = 2,
    /// The device's driver or runtime is not present (no GPU, no library).
    DeviceUnavailable = 3,
    /// A driver call or kernel launch failed.
    DeviceError = 4,
    /// An I/O or format error.
    IoError = 5,
    /// A bug in tessera: a panic was caught at the boundary.
    Panic = 6,
}

impl TesseraStatus {
    fn of(e: &Error) -> TesseraStatus {
        match e {
            Error::InvalidArgument { .. } => TesseraStatus::InvalidArgument,
            Error::Unsupported { .. } => TesseraStatus::Unsupported,
            Error::DeviceUnavailable { .. } => TesseraStatus::DeviceUnavailable,
            Error::Driver { .. } | Error::Kernel { .. } => TesseraStatus::DeviceError,
            Error::Io { .. } | Error::Format { .. } => TesseraStatus::IoError,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: String) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

/// Run `f` at the boundary: its error becomes a status and the thread's last error, a panic
/// becomes `TesseraStatus::Panic`.
pub(crate) fn entry(op: &str, f: impl FnOnce() -> Result<()>) -> TesseraStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_last_error(String::new());
            TesseraStatus::Ok
        }
        Ok(Err(e)) => {
            let status = TesseraStatus::of(&e);
            set_last_error(e.to_string());
            status
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!(
                "{op}: internal error (panic caught at the C ABI): {what}"
            ));
            TesseraStatus::Panic
        }
    }
}

/// The message of the last call on this thread that did not return `TESSERA_STATUS_OK` (empty
/// after a successful call). The pointer stays valid until the next tessera call on this thread.
#[no_mangle]
pub extern "C" fn tessera_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// tessera's version, e.g. "0.1.0" (a static string).
#[no_mangle]
pub extern "C" fn tessera_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

static HOST: Mutex<Option<Device>> = Mutex::new(None);

/// The executor that runs ops on host (kDLCPU) tensors: the native CPU path unless
/// `tessera_set_host_executor` chose another.
pub fn host_executor() -> Device {
    let host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    host.clone().unwrap_or_else(Device::cpu)
}

/// Set the executor for host (kDLCPU) tensors, process-wide: "cpu" (the native CPU path, the
/// default), "simt" (the host SIMT executor running the CUDA sources in wave32) or "simt64" (the
/// HIP sources in wave64), optionally with a shuffled schedule: `simt-shuffle<seed>`. On SIMT,
/// host tensors are copied into red-zoned buffers and outputs copied back.
///
/// # Safety
/// `name` must be null (an error) or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn tessera_set_host_executor(name: *const c_char) -> TesseraStatus {
    entry("tessera_set_host_executor", || {
        if name.is_null() {
            return Err(Error::invalid("tessera_set_host_executor", "null name"));
        }
        // SAFETY: non-null and NUL-terminated (the caller's contract).
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        let dev = crate::interop::host_device(&name)?;
        *HOST.lock().unwrap_or_else(|e| e.into_inner()) = Some(dev);
        Ok(())
    })
}

/// One argument of [`call`], by the kind of its C parameter ([`codegen::ArgKind`]).
#[derive(Clone, Copy, Debug)]
pub enum CArg {
    Tensor(*const DLTensor),
    Out(*mut DLTensor),
    Len(*mut i64),
    F32(f32),
    F64(f64),
    U32(u32),
    I32(i32),
    U64(u64),
    Str(*const c_char),
    List(*const f32, u64),
}

/// A `uint64_t` size parameter as `usize`, range-checked like every interface's sizes.
pub(crate) fn usize_param(op: &'static str, name: &str, v: u64) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= i64::MAX as usize)
        .ok_or_else(|| Error::invalid(op, format!("parameter {name}: {v} is too large")))
}

/// One C call being assembled by a generated `tessera_<family>_<op>` function.
pub(crate) struct Ctx {
    op: &'static str,
    inputs: Vec<(&'static str, View)>,
    params: Vec<(&'static str, ParamValue)>,
    outputs: Vec<(&'static str, View, *mut i64)>,
}

impl Ctx {
    pub(crate) fn new(op: &'static str) -> Ctx {
        Ctx {
            op,
            inputs: Vec::new(),
            params: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Input `name`; a null pointer is a missing input (an error unless the input is optional).
    ///
    /// # Safety
    /// `t` is null or a valid `DLTensor` (see [`dlpack::view`]).
    pub(crate) unsafe fn input(&mut self, name: &'static str, t: *const DLTensor) -> Result<()> {
        if t.is_null() {
            return Ok(()); // `Call::run` reports a missing required input by name.
        }
        // SAFETY: forwarded.
        let v = unsafe { dlpack::view(self.op, name, t) }?;
        self.inputs.push((name, v));
        Ok(())
    }

    pub(crate) fn param(&mut self, name: &'static str, v: ParamValue) {
        self.params.push((name, v));
    }

    /// An enum parameter; null keeps the default (an error when there is none).
    ///
    /// # Safety
    /// `s` is null or a NUL-terminated string.
    pub(crate) unsafe fn param_enum(&mut self, name: &'static str, s: *const c_char) -> Result<()> {
        if s.is_null() {
            return Ok(());
        }
        // SAFETY: non-null and NUL-terminated (the caller's contract).
        let word = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
        let spec = crate::ops::table::find(self.op)
            .and_then(|o| o.params.iter().find(|p| p.name == name))
            .ok_or_else(|| Error::invalid(self.op, format!("internal: no parameter {name}")))?;
        let v = ParamValue::convert(self.op, spec, &crate::interop::Scalar::Str(word))?;
        self.params.push((name, v));
        Ok(())
    }

    /// A list parameter of `len` floats at `p`.
    ///
    /// # Safety
    /// `p` is null (only with `len == 0`) or points to `len` readable floats.
    pub(crate) unsafe fn param_list(
        &mut self,
        name: &'static str,
        p: *const f32,
        len: u64,
    ) -> Result<()> {
        let xs = if len == 0 {
            Vec::new()
        } else if p.is_null() {
            return Err(Error::invalid(
                self.op,
                format!("parameter {name}: null pointer with {len} entries"),
            ));
        } else {
            let n = usize::try_from(len)
                .ok()
                .filter(|&n| n <= (1 << 20))
                .ok_or_else(|| {
                    Error::invalid(self.op, format!("parameter {name}: {len} entries"))
                })?;
            // SAFETY: non-null, `n` readable floats (the caller's contract).
            unsafe { std::slice::from_raw_parts(p, n) }.to_vec()
        };
        self.params.push((name, ParamValue::F32List(xs)));
        Ok(())
    }

    /// Output `name`, allocated by the caller; `len_out` (may be null) receives the number of
    /// elements written.
    ///
    /// # Safety
    /// `t` is a valid `DLTensor` (see [`dlpack::view`]); `len_out` is null or writable.
    pub(crate) unsafe fn output(
        &mut self,
        name: &'static str,
        t: *mut DLTensor,
        len_out: *mut i64,
    ) -> Result<()> {
        if t.is_null() {
            return Err(Error::invalid(
                self.op,
                format!("output `{name}` is null: the caller allocates every output"),
            ));
        }
        // SAFETY: forwarded.
        let v = unsafe { dlpack::view(self.op, name, t) }?;
        self.outputs.push((name, v, len_out));
        Ok(())
    }

    /// Bind the tensors, run the op on the device they live on (on `stream` for a GPU), copy
    /// staged outputs back, and report data-dependent lengths.
    ///
    /// # Safety
    /// The tensors' memory is valid as [`dlpack::bind`] requires; `stream` is null or a live
    /// stream of the tensors' GPU.
    pub(crate) unsafe fn run(self, stream: *mut c_void) -> Result<()> {
        let op = self.op;
        let mut places = self
            .inputs
            .iter()
            .map(|(n, v)| (*n, v.place))
            .chain(self.outputs.iter().map(|(n, v, _)| (*n, v.place)));
        let Some((first_name, place)) = places.next() else {
            return Err(Error::invalid(op, "no tensors given"));
        };
        if let Some((n, p)) = places.find(|(_, p)| *p != place) {
            return Err(Error::invalid(
                op,
                format!(
                    "tensors on different devices: `{first_name}` on {place:?}, `{n}` on {p:?}"
                ),
            ));
        }
        let dev = dlpack::device_for(op, place, &host_executor())?;
        let mut call = Call::new(op, &dev)?;
        let mut staged: Vec<(&'static str, View, *mut i64)> = Vec::new();
        for (name, v) in &self.inputs {
            // SAFETY: forwarded.
            let (buf, copy) = unsafe { dlpack::bind(v, &dev, name) }?;
            if copy && call.in_place(name) {
                staged.push((name, v.clone(), std::ptr::null_mut()));
            }
            call.input(name, buf, v.shape.clone())?;
        }
        for (name, v) in self.params {
            call.param(name, v)?;
        }
        let mut lens = Vec::new();
        for (name, v, len) in &self.outputs {
            // SAFETY: forwarded.
            let (buf, copy) = unsafe { dlpack::bind(v, &dev, name) }?;
            if copy {
                staged.push((name, v.clone(), *len));
            }
            lens.push((*name, *len));
            call.output(name, buf, v.shape.clone())?;
        }
        // SAFETY: the caller's contract: `stream` is null or a live stream of `dev`.
        let out = unsafe { dev.on_stream(stream, || call.run()) }?;
        for o in &out.tensors {
            let n: u64 = o.shape.iter().product();
            if let Some((_, v, _)) = staged.iter().find(|(s, _, _)| *s == o.name) {
                // SAFETY: the caller's memory, valid and writable (contract).
                unsafe { dlpack::write_back(v, &o.buf, n as usize) }?;
            }
            if let Some((_, len)) = lens.iter().find(|(s, _)| *s == o.name) {
                if !len.is_null() {
                    // SAFETY: non-null and writable (the caller's contract).
                    unsafe { len.write(n as i64) };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ops_are_fresh() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/capi/ops.rs");
        let want = codegen::rust_source();
        let have = std::fs::read_to_string(path).unwrap_or_default();
        if have != want && std::env::var("TESSERA_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(path, &want).expect("write src/capi/ops.rs");
            return;
        }
        assert!(
            have == want,
            "src/capi/ops.rs is stale: run `TESSERA_BLESS=1 cargo test --release --lib capi`"
        );
    }

    #[test]
    fn panics_do_not_cross_and_errors_are_kept() {
        let s = entry("test.op", || panic!("boom"));
        assert_eq!(s, TesseraStatus::Panic);
        // SAFETY: tessera_last_error returns a NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(tessera_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert!(msg.contains("test.op") && msg.contains("boom"), "{msg}");
        let s = entry("test.op", || Err(Error::invalid("test.op", "bad shape")));
        assert_eq!(s, TesseraStatus::InvalidArgument);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(tessera_last_error()) }
            .to_string_lossy()
            .into_owned();
        assert_eq!(msg, "test.op: bad shape");
        assert_eq!(entry("test.op", || Ok(())), TesseraStatus::Ok);
    }
}
