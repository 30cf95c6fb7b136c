//! The Python side of DLPack: taking tensors out of `__dlpack__` capsules (consumer) and handing
//! tessera's outputs out in them (producer). The C structs `DLTensor`, `DLManagedTensor`, ... are
//! tessera's (`tessera::capi::dlpack`); this adds DLPack 1.x's versioned struct and the capsule
//! protocol of the Python array API (`dltensor` / `dltensor_versioned`, renamed `used_...` once
//! consumed).

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;

use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict};

use tessera::capi::dlpack::{DLDataType, DLDevice, DLManagedTensor, DLTensor};

/// `DLPackVersion`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLPackVersion {
    pub major: u32,
    pub minor: u32,
}

/// `DLManagedTensorVersioned` (DLPack >= 1.0, capsule `dltensor_versioned`). Note the field order,
/// which differs from `DLManagedTensor`'s.
#[repr(C)]
pub struct DLManagedTensorVersioned {
    pub version: DLPackVersion,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    pub flags: u64,
    pub dl_tensor: DLTensor,
}

pub const FLAG_READ_ONLY: u64 = 1 << 0;
pub const FLAG_IS_COPIED: u64 = 1 << 1;

/// The version this package speaks, as consumer (`max_version`) and producer.
pub const VERSION: DLPackVersion = DLPackVersion { major: 1, minor: 0 };

// Capsule names must be static: a consumer replaces the capsule's name pointer.
pub const NAME_LEGACY: &CStr = c"dltensor";
pub const NAME_LEGACY_USED: &CStr = c"used_dltensor";
pub const NAME_VERSIONED: &CStr = c"dltensor_versioned";
pub const NAME_VERSIONED_USED: &CStr = c"used_dltensor_versioned";

#[cfg(target_pointer_width = "64")]
const _: () = {
    // dlpack.h on LP64.
    assert!(std::mem::size_of::<DLManagedTensor>() == 64);
    assert!(std::mem::size_of::<DLManagedTensorVersioned>() == 80);
    assert!(std::mem::offset_of!(DLManagedTensorVersioned, flags) == 24);
    assert!(std::mem::offset_of!(DLManagedTensorVersioned, dl_tensor) == 32);
};

// ------------------------------------------------------------------------------------------------
// Consumer
// ------------------------------------------------------------------------------------------------

/// A managed tensor taken out of a consumed (renamed) capsule: the producer's memory stays alive
/// until this is dropped, which calls the producer's deleter exactly once.
pub enum Managed {
    Legacy(NonNull<DLManagedTensor>),
    Versioned(NonNull<DLManagedTensorVersioned>),
}

// SAFETY: DLPack requires a deleter to be callable from any thread (it acquires the GIL itself
// when it needs it), and the tensor's metadata is not changed after export. We only read it.
unsafe impl Send for Managed {}

impl Managed {
    pub fn tensor(&self) -> &DLTensor {
        // SAFETY: the pointer is valid until `Drop` calls the deleter; we are its only owner.
        unsafe {
            match self {
                Managed::Legacy(p) => &p.as_ref().dl_tensor,
                Managed::Versioned(p) => &p.as_ref().dl_tensor,
            }
        }
    }

    /// DLPack's flags (none for a legacy tensor).
    pub fn flags(&self) -> u64 {
        match self {
            Managed::Legacy(_) => 0,
            // SAFETY: valid until `Drop` (see `tensor`).
            Managed::Versioned(p) => unsafe { p.as_ref().flags },
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        // SAFETY: we own the managed tensor (its capsule was renamed, so the capsule's destructor
        // will not call the deleter) and call its deleter once, here.
        unsafe {
            match self {
                Managed::Legacy(p) => {
                    if let Some(d) = p.as_ref().deleter {
                        d(p.as_ptr())
                    }
                }
                Managed::Versioned(p) => {
                    if let Some(d) = p.as_ref().deleter {
                        d(p.as_ptr())
                    }
                }
            }
        }
    }
}

/// Take ownership of the managed tensor in a capsule returned by `__dlpack__`.
fn take_capsule(cap: &Bound<'_, PyAny>) -> PyResult<Managed> {
    let cap = cap
        .cast::<PyCapsule>()
        .map_err(|_| PyTypeError::new_err("__dlpack__ did not return a capsule"))?;
    let (name, used) = if cap.is_valid_checked(Some(NAME_VERSIONED)) {
        (NAME_VERSIONED, NAME_VERSIONED_USED)
    } else if cap.is_valid_checked(Some(NAME_LEGACY)) {
        (NAME_LEGACY, NAME_LEGACY_USED)
    } else {
        return Err(PyValueError::new_err(
            "__dlpack__ returned a capsule that is not an unconsumed `dltensor` or \
             `dltensor_versioned`",
        ));
    };
    let ptr = cap.pointer_checked(Some(name))?;
    // Rename first: from here on the capsule's destructor leaves the tensor alone and we are its
    // only owner. If renaming fails the capsule still owns it.
    // SAFETY: a valid capsule; the new name is 'static, as the protocol requires.
    if unsafe { ffi::PyCapsule_SetName(cap.as_ptr(), used.as_ptr()) } != 0 {
        return Err(PyErr::fetch(cap.py()));
    }
    let managed = if name == NAME_VERSIONED {
        Managed::Versioned(ptr.cast())
    } else {
        Managed::Legacy(ptr.cast())
    };
    if let Managed::Versioned(p) = &managed {
        // SAFETY: `version` is readable in every DLPack version (it comes first).
        let v = unsafe { p.as_ref().version };
        if v.major != VERSION.major {
            // `managed` drops here: the deleter runs, which the spec allows for any version.
            return Err(PyBufferError::new_err(format!(
                "DLPack version {}.{} is not supported (tessera reads 1.x)",
                v.major, v.minor
            )));
        }
    }
    Ok(managed)
}

/// `obj.__dlpack_device__()`, or a `TypeError` when `obj` is not a DLPack tensor.
pub fn device_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(i32, i32)> {
    let py = obj.py();
    let has = |name: &str| obj.hasattr(name).unwrap_or(false);
    if !has("__dlpack__") || !has("__dlpack_device__") {
        let ty = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(PyTypeError::new_err(format!(
            "{what}: expected a tensor with __dlpack__ and __dlpack_device__ (a numpy array, \
             torch/jax/cupy tensor or tessera.Tensor), got {ty}"
        )));
    }
    obj.call_method0("__dlpack_device__")?
        .extract()
        .map_err(|e| {
            let err = PyValueError::new_err(format!("{what}: bad __dlpack_device__(): {e}"));
            err.set_cause(py, Some(e));
            err
        })
}

/// Consume `obj` through `__dlpack__(stream=stream, max_version=(1, 0))`, falling back to the
/// legacy `__dlpack__(stream=stream)` for producers that do not take `max_version`.
pub fn import(obj: &Bound<'_, PyAny>, stream: Option<isize>, what: &str) -> PyResult<Managed> {
    let py = obj.py();
    let wrap = |e: PyErr| {
        let err = PyValueError::new_err(format!("{what}: __dlpack__ failed: {e}"));
        err.set_cause(py, Some(e));
        err
    };
    let kw = PyDict::new(py);
    kw.set_item("stream", stream)?;
    kw.set_item("max_version", (VERSION.major, VERSION.minor))?;
    let cap = match obj.call_method("__dlpack__", (), Some(&kw)) {
        Ok(c) => c,
        Err(e) if e.is_instance_of::<PyTypeError>(py) => {
            let kw = PyDict::new(py);
            kw.set_item("stream", stream)?;
            obj.call_method("__dlpack__", (), Some(&kw)).map_err(wrap)?
        }
        Err(e) => return Err(wrap(e)),
    };
    take_capsule(&cap).map_err(wrap)
}

// ------------------------------------------------------------------------------------------------
// Producer
// ------------------------------------------------------------------------------------------------

/// One export: the managed-tensor header first (`repr(C)`, so a pointer to the holder is a
/// pointer to the header), the shape and strides it points into, and `keep`, which owns what the
/// data pointer points into (an `Arc` of the tensor's buffer). The deleter drops the whole box:
/// no GIL is needed, from any thread.
#[repr(C)]
struct Holder<M, K> {
    header: M,
    shape: Vec<i64>,
    strides: Vec<i64>,
    _keep: K,
}

unsafe extern "C" fn delete_legacy<K>(p: *mut DLManagedTensor) {
    if !p.is_null() {
        // SAFETY: `p` came from `Box::into_raw` of a `Holder<DLManagedTensor, K>` in `export`
        // (the header is its first field) and DLPack calls the deleter once.
        drop(unsafe { Box::from_raw(p as *mut Holder<DLManagedTensor, K>) });
    }
}

unsafe extern "C" fn delete_versioned<K>(p: *mut DLManagedTensorVersioned) {
    if !p.is_null() {
        // SAFETY: as `delete_legacy`, for the versioned header.
        drop(unsafe { Box::from_raw(p as *mut Holder<DLManagedTensorVersioned, K>) });
    }
}

/// Capsule destructors: free an export nobody consumed (a consumer renames the capsule).
unsafe extern "C" fn capsule_legacy(cap: *mut ffi::PyObject) {
    // SAFETY: called by Python with the GIL on our capsule; the pointer is the managed tensor we
    // stored, whose deleter frees it once.
    unsafe {
        if ffi::PyCapsule_IsValid(cap, NAME_LEGACY.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(cap, NAME_LEGACY.as_ptr()) as *mut DLManagedTensor;
            if let Some(d) = (*p).deleter {
                d(p);
            }
        }
    }
}

unsafe extern "C" fn capsule_versioned(cap: *mut ffi::PyObject) {
    // SAFETY: as `capsule_legacy`.
    unsafe {
        if ffi::PyCapsule_IsValid(cap, NAME_VERSIONED.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(cap, NAME_VERSIONED.as_ptr())
                as *mut DLManagedTensorVersioned;
            if let Some(d) = (*p).deleter {
                d(p);
            }
        }
    }
}

/// What an export describes.
pub struct ExportSpec {
    pub addr: u64,
    pub device: DLDevice,
    pub dtype: DLDataType,
    pub shape: Vec<i64>,
    pub versioned: bool,
    pub flags: u64,
}

/// A capsule holding a managed tensor over `spec.addr`; `keep` owns that memory until the
/// consumer's deleter (or the capsule's destructor, when nobody consumed it) drops it.
pub fn export<K: Send + 'static>(
    py: Python<'_>,
    spec: ExportSpec,
    keep: K,
) -> PyResult<Bound<'_, PyCapsule>> {
    let mut shape = spec.shape;
    let mut strides = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let dl_tensor = DLTensor {
        data: spec.addr as *mut c_void,
        device: spec.device,
        ndim: shape.len() as i32,
        dtype: spec.dtype,
        // Moving the vectors into the holder below does not move their heap blocks.
        shape: shape.as_mut_ptr(),
        strides: strides.as_mut_ptr(),
        byte_offset: 0,
    };
    if spec.versioned {
        let raw = Box::into_raw(Box::new(Holder {
            header: DLManagedTensorVersioned {
                version: VERSION,
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_versioned::<K>),
                flags: spec.flags,
                dl_tensor,
            },
            shape,
            strides,
            _keep: keep,
        }));
        // SAFETY: `raw` is a live, uniquely owned box.
        unsafe { (*raw).header.manager_ctx = raw as *mut c_void };
        // SAFETY: `raw` is a valid DLManagedTensorVersioned*; the destructor frees it unless a
        // consumer renamed the capsule.
        let cap = unsafe {
            PyCapsule::new_with_pointer_and_destructor(
                py,
                NonNull::new_unchecked(raw as *mut c_void),
                NAME_VERSIONED,
                Some(capsule_versioned),
            )
        };
        if cap.is_err() {
            // SAFETY: no capsule owns `raw`: free it here, once.
            unsafe { delete_versioned::<K>(raw as *mut DLManagedTensorVersioned) };
        }
        cap
    } else {
        let raw = Box::into_raw(Box::new(Holder {
            header: DLManagedTensor {
                dl_tensor,
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(delete_legacy::<K>),
            },
            shape,
            strides,
            _keep: keep,
        }));
        // SAFETY: `raw` is a live, uniquely owned box.
        unsafe { (*raw).header.manager_ctx = raw as *mut c_void };
        // SAFETY: as above, for the legacy struct.
        let cap = unsafe {
            PyCapsule::new_with_pointer_and_destructor(
                py,
                NonNull::new_unchecked(raw as *mut c_void),
                NAME_LEGACY,
                Some(capsule_legacy),
            )
        };
        if cap.is_err() {
            // SAFETY: no capsule owns `raw`: free it here, once.
            unsafe { delete_legacy::<K>(raw as *mut DLManagedTensor) };
        }
        cap
    }
}
