//! DLPack's tensor structs, laid out exactly as `dlpack.h` (v0.8 / v1.x `DLTensor`) declares
//! them, and the conversion of a caller's `DLTensor` into a tessera buffer.

use std::ffi::c_void;

use crate::device::{Backend, Device, DeviceBuffer};
use crate::dtype::DTypeKind;
use crate::error::{Error, Result};
use crate::interop::{DynBuffer, Elem};

/// `DLDeviceType` values tessera accepts.
pub const KDL_CPU: i32 = 1;
pub const KDL_CUDA: i32 = 2;
pub const KDL_CUDA_HOST: i32 = 3;
pub const KDL_ROCM: i32 = 10;
pub const KDL_ROCM_HOST: i32 = 11;
pub const KDL_CUDA_MANAGED: i32 = 13;

/// `DLDataTypeCode` values.
pub const KDL_INT: u8 = 0;
pub const KDL_UINT: u8 = 1;
pub const KDL_FLOAT: u8 = 2;
pub const KDL_BFLOAT: u8 = 4;

/// `DLDevice`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

/// `DLDataType`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

/// `DLTensor`: the caller's view of its memory. tessera never frees `data`, `shape` or
/// `strides`.
#[repr(C)]
#[derive(Debug)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    /// Null for a compact row-major tensor.
    pub strides: *mut i64,
    pub byte_offset: u64,
}

/// `DLManagedTensor` (the pre-1.0 capsule payload `__dlpack__` returns by default).
#[repr(C)]
#[derive(Debug)]
pub struct DLManagedTensor {
    pub dl_tensor: DLTensor,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

impl DLDataType {
    /// The DLPack code of `k`.
    pub fn of(k: DTypeKind) -> DLDataType {
        let code = match k {
            DTypeKind::F32 | DTypeKind::F16 => KDL_FLOAT,
            DTypeKind::BF16 => KDL_BFLOAT,
            DTypeKind::I8 | DTypeKind::I16 | DTypeKind::I32 | DTypeKind::I64 => KDL_INT,
            DTypeKind::U8 | DTypeKind::U16 | DTypeKind::U32 | DTypeKind::U64 => KDL_UINT,
        };
        DLDataType {
            code,
            bits: (k.size() * 8) as u8,
            lanes: 1,
        }
    }

    /// The tessera dtype, if it is one tessera's ops take.
    pub fn kind(self) -> Option<DTypeKind> {
        if self.lanes != 1 {
            return None;
        }
        Some(match (self.code, self.bits) {
            (KDL_FLOAT, 32) => DTypeKind::F32,
            (KDL_FLOAT, 16) => DTypeKind::F16,
            (KDL_BFLOAT, 16) => DTypeKind::BF16,
            (KDL_INT, 32) => DTypeKind::I32,
            (KDL_UINT, 32) => DTypeKind::U32,
            (KDL_UINT, 16) => DTypeKind::U16,
            (KDL_UINT, 8) => DTypeKind::U8,
            _ => return None,
        })
    }
}

/// Where a tensor lives, as tessera sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Host,
    Cuda(usize),
    Rocm(usize),
}

/// A validated view of a caller's tensor.
#[derive(Clone, Debug)]
pub struct View {
    pub dtype: DTypeKind,
    pub shape: Vec<u64>,
    /// `data + byte_offset`.
    pub addr: u64,
    pub place: Place,
}

impl View {
    pub fn len(&self) -> u64 {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.len() as usize * self.dtype.size()
    }
}

/// Validate `t` (argument `name` of `op`): non-null, a dtype tessera takes, a device it can run
/// on, a non-negative shape, compact row-major strides (any stride on a size-1 dimension), and a
/// data pointer aligned to the element (16 bytes on GPUs, where kernels load vectors).
///
/// # Safety
/// `t` must be null or point to a `DLTensor` whose `shape` (and `strides`, when not null) point
/// to `ndim` readable `int64_t`s.
pub unsafe fn view(op: &'static str, name: &str, t: *const DLTensor) -> Result<View> {
    let bad = |msg: String| Error::invalid(op, format!("tensor `{name}`: {msg}"));
    // SAFETY: the caller passes null or a valid DLTensor.
    let Some(t) = (unsafe { t.as_ref() }) else {
        return Err(bad("null DLTensor pointer".into()));
    };
    let dtype = t.dtype.kind().ok_or_else(|| {
        bad(format!(
            "unsupported DLPack dtype (code {}, bits {}, lanes {}); tessera takes f32, f16, \
             bf16, i32, u32, u16 and u8",
            t.dtype.code, t.dtype.bits, t.dtype.lanes
        ))
    })?;
    let place = match t.device.device_type {
        KDL_CPU => Place::Host,
        KDL_CUDA => Place::Cuda(
            usize::try_from(t.device.device_id).map_err(|_| bad("negative device id".into()))?,
        ),
        KDL_ROCM => Place::Rocm(
            usize::try_from(t.device.device_id).map_err(|_| bad("negative device id".into()))?,
        ),
        KDL_CUDA_HOST | KDL_ROCM_HOST | KDL_CUDA_MANAGED => {
            return Err(bad(format!(
                "device type {} (pinned or managed memory) is not supported; pass host \
                 (kDLCPU) or device (kDLCUDA/kDLROCM) memory",
                t.device.device_type
            )))
        }
        other => return Err(bad(format!("unsupported DLPack device type {other}"))),
    };
    let ndim = usize::try_from(t.ndim).map_err(|_| bad(format!("ndim {} < 0", t.ndim)))?;
    if ndim > 0 && t.shape.is_null() {
        return Err(bad("null shape with ndim > 0".into()));
    }
    let shape_i: &[i64] = if ndim == 0 {
        &[]
    } else {
        // SAFETY: non-null and `ndim` entries long (the caller's contract).
        unsafe { std::slice::from_raw_parts(t.shape, ndim) }
    };
    let mut shape = Vec::with_capacity(ndim);
    for &d in shape_i {
        shape
            .push(u64::try_from(d).map_err(|_| bad(format!("negative dimension in {shape_i:?}")))?);
    }
    // Strides mean nothing for a tensor without elements (numpy exports `[0]` for an empty 1-D
    // array), so they are only checked when there is data.
    if !t.strides.is_null() && ndim > 0 && !shape_i.contains(&0) {
        // SAFETY: non-null and `ndim` entries long (the caller's contract).
        let strides = unsafe { std::slice::from_raw_parts(t.strides, ndim) };
        let mut want = 1i64;
        for i in (0..ndim).rev() {
            if shape_i[i] != 1 && strides[i] != want {
                return Err(bad(format!(
                    "not contiguous: shape {shape_i:?} strides {strides:?} (elements); tessera \
                     takes compact row-major tensors (call .contiguous() first)"
                )));
            }
            want = want.saturating_mul(shape_i[i].max(1));
        }
    }
    let count = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    let bytes = count.and_then(|c| c.checked_mul(dtype.size() as u64));
    if bytes.is_none_or(|b| b > isize::MAX as u64) {
        return Err(bad(format!("shape {shape:?} is too large")));
    }
    let addr = (t.data as u64)
        .checked_add(t.byte_offset)
        .ok_or_else(|| bad("data + byte_offset overflows".into()))?;
    if addr == 0 && count != Some(0) {
        return Err(bad("null data pointer".into()));
    }
    let align = match place {
        Place::Host => dtype.size() as u64,
        Place::Cuda(_) | Place::Rocm(_) => 16,
    };
    if addr % align != 0 {
        return Err(bad(format!(
            "data + byte_offset = {addr:#x} is not aligned to {align} bytes"
        )));
    }
    Ok(View {
        dtype,
        shape,
        addr,
        place,
    })
}

/// The device that runs a call whose tensors live at `place`: host memory runs on `host` (the
/// native CPU path or the host SIMT executor), device memory on that GPU (one device per
/// ordinal and process, created on first use).
pub fn device_for(op: &'static str, place: Place, host: &Device) -> Result<Device> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static GPUS: OnceLock<Mutex<HashMap<Place, Device>>> = OnceLock::new();
    let open = |p: Place| -> Result<Device> {
        let map = GPUS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(&p) {
            return Ok(d.clone());
        }
        let d = match p {
            Place::Cuda(i) => Device::cuda(i)?,
            Place::Rocm(i) => Device::hip(i)?,
            Place::Host => unreachable!("host memory runs on the host device"),
        };
        map.insert(p, d.clone());
        Ok(d)
    };
    match place {
        Place::Host => Ok(host.clone()),
        p => open(p).map_err(|e| Error::invalid(op, format!("tensors on {p:?}: {e}"))),
    }
}

impl std::hash::Hash for Place {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            Place::Host => 0u8.hash(h),
            Place::Cuda(i) => (1u8, *i).hash(h),
            Place::Rocm(i) => (2u8, *i).hash(h),
        }
    }
}

/// A buffer for `v` on `dev`: the caller's memory itself (CPU path, CUDA, HIP), or, on the host
/// SIMT executor, a red-zoned copy (`staged`; write it back with [`write_back`]).
///
/// # Safety
/// `v` came from [`view`] of a tensor whose memory stays valid, and is not accessed by anyone
/// else, until the returned buffer is dropped and the work queued on it has finished.
pub unsafe fn bind(v: &View, dev: &Device, label: &str) -> Result<(DynBuffer, bool)> {
    let len = v.len() as usize;
    if matches!(dev.backend(), Backend::Simt(_)) {
        let bytes: &[u8] = if len == 0 {
            &[]
        } else {
            // SAFETY: `view` checked a non-null host address; the caller guarantees `bytes()`
            // readable bytes there.
            unsafe { std::slice::from_raw_parts(v.addr as *const u8, v.bytes()) }
        };
        return Ok((DynBuffer::from_bytes(dev, v.dtype, bytes, label)?, true));
    }
    fn borrow<T: Elem>(dev: &Device, addr: u64, len: usize) -> Result<DynBuffer> {
        // SAFETY: forwarded from `bind`'s contract; `view` checked alignment and size.
        unsafe { DeviceBuffer::<T>::borrow_raw(dev, addr, len) }.map(T::wrap)
    }
    let b = match v.dtype {
        DTypeKind::F32 => borrow::<f32>(dev, v.addr, len),
        DTypeKind::F16 => borrow::<half::f16>(dev, v.addr, len),
        DTypeKind::BF16 => borrow::<half::bf16>(dev, v.addr, len),
        DTypeKind::I32 => borrow::<i32>(dev, v.addr, len),
        DTypeKind::U32 => borrow::<u32>(dev, v.addr, len),
        DTypeKind::U16 => borrow::<u16>(dev, v.addr, len),
        DTypeKind::U8 => borrow::<u8>(dev, v.addr, len),
        other => Err(Error::invalid("borrow", format!("dtype {other}"))),
    }?;
    Ok((b, false))
}

/// Copy a staged buffer's first `len` elements back into the caller's host memory at `v`.
///
/// # Safety
/// As [`bind`]: `v`'s memory is valid and writable.
pub unsafe fn write_back(v: &View, buf: &DynBuffer, len: usize) -> Result<()> {
    let bytes = buf.to_bytes()?;
    let n = (len * v.dtype.size()).min(bytes.len()).min(v.bytes());
    if n > 0 {
        // SAFETY: `v.addr` holds `v.bytes()` writable bytes (the caller's contract) and `n`
        // does not exceed it; the source is our own vector.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.addr as *mut u8, n) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_dlpack_h() {
        // dlpack.h on LP64: DLDevice 8 bytes, DLDataType 4, DLTensor 48 with these offsets.
        assert_eq!(std::mem::size_of::<DLDevice>(), 8);
        assert_eq!(std::mem::size_of::<DLDataType>(), 4);
        assert_eq!(std::mem::size_of::<DLTensor>(), 48);
        assert_eq!(std::mem::offset_of!(DLTensor, device), 8);
        assert_eq!(std::mem::offset_of!(DLTensor, ndim), 16);
        assert_eq!(std::mem::offset_of!(DLTensor, dtype), 20);
        assert_eq!(std::mem::offset_of!(DLTensor, shape), 24);
        assert_eq!(std::mem::offset_of!(DLTensor, strides), 32);
        assert_eq!(std::mem::offset_of!(DLTensor, byte_offset), 40);
        assert_eq!(std::mem::size_of::<DLManagedTensor>(), 64);
    }
}
