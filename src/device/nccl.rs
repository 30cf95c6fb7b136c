//! NCCL through cudarc's `nccl` bindings, loaded at run time: the raw calls behind the
//! multi-process transport (`parallel::transport::Nccl`).
//!
//! cudarc opens libnccl on the first NCCL call and **panics** when it cannot (and when a symbol is
//! missing). So every entry point here first runs [`probe`]: it opens the library itself with
//! libloading under the same names cudarc tries, checks the version, and returns an
//! [`Error::DeviceUnavailable`] naming NCCL when anything is missing. Only then are cudarc's NCCL
//! functions called.
//!
//! Reviewed against cudarc 0.19.10 (`nccl::result`, `nccl::sys`) and NCCL's documented semantics
//! (<https://docs.nvidia.com/deeplearning/nccl/user-guide/docs/>), **not run on a GPU yet**:
//! - one communicator per process and GPU (`ncclCommInitRank`, blocking until every rank joined;
//!   NCCL refuses two ranks on one GPU);
//! - the CUDA device is made current (primary context bound) before `ncclCommInitRank`, as NCCL
//!   requires;
//! - a step is `ncclGroupStart`, one `ncclSend`/`ncclRecv` per local operation, `ncclGroupEnd`;
//!   a send and its receive use the same count and datatype (both derived from the element
//!   type), and operations between the same pair of ranks inside a group are matched in the order
//!   they are posted, so every rank must post the step's copies in the same order;
//! - the operations run on a communicator stream of their own (non-blocking), which first waits
//!   for a fence of the device's compute stream.
//! - the bindings are generated from NCCL 2.30 headers; the functions used exist since NCCL 2.14
//!   (`ncclCommFinalize`), which [`probe`] requires.

use std::ffi::{c_void, CStr};

use cudarc::nccl::{result as nres, sys as nsys};

use crate::device::{cuda, Device, DeviceBuffer};
use crate::dtype::{DType, DTypeKind};
use crate::error::{Error, Result};

const B: &str = "nccl";
/// Oldest NCCL accepted (ncclCommFinalize appeared in 2.14).
const MIN_VERSION: (i32, i32) = (2, 14);

/// The library names cudarc tries, in its order.
pub fn library_candidates() -> Vec<String> {
    let mut names = Vec::new();
    for n in cudarc::get_lib_name_candidates("nccl") {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Names under which NCCL is often installed that cudarc 0.19 does not try (the soname of NCCL 2
/// is `libnccl.so.2`; pip wheels and the runtime-only distribution package ship only that).
const EXTRA_NAMES: [&str; 1] = ["libnccl.so.2"];

fn unavailable(msg: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        backend: B,
        msg: msg.into(),
    }
}

fn can_open(name: &str) -> bool {
    // SAFETY: opening a shared library runs its initialisers; libnccl's are NCCL's own (no
    // preconditions on the caller). The handle is dropped at once (the library stays loaded if
    // cudarc opens it later).
    unsafe { libloading::Library::new(name) }.is_ok()
}

/// The NCCL version as NCCL encodes it (major*10000 + minor*100 + patch for 2.9+).
fn split_version(code: i32) -> (i32, i32, i32) {
    if code >= 10000 {
        (code / 10000, (code % 10000) / 100, code % 100)
    } else {
        (code / 1000, (code % 1000) / 100, code % 100)
    }
}

/// Checks that NCCL can be used by this process: libnccl opens under a name cudarc loads, and
/// its version is at least 2.14. Returns the version (major, minor, patch). Never panics.
pub fn probe() -> Result<(i32, i32, i32)> {
    let names = library_candidates();
    if !names.iter().any(|n| can_open(n)) {
        let hint = match EXTRA_NAMES.iter().find(|n| can_open(n)) {
            Some(found) => format!(
                " {found} is present but cudarc 0.19 does not load that name: put a libnccl.so \
                 symlink to it on LD_LIBRARY_PATH."
            ),
            None => " Install NCCL (libnccl) and put it on LD_LIBRARY_PATH.".into(),
        };
        return Err(unavailable(format!(
            "NCCL is not available: libnccl cannot be loaded (tried {}).{hint}",
            names.join(", ")
        )));
    }
    let code = nres::get_nccl_version().map_err(|e| nccl_err("ncclGetVersion", e, None))?;
    let v = split_version(code);
    if (v.0, v.1) < MIN_VERSION {
        return Err(unavailable(format!(
            "NCCL {}.{}.{} is too old: tessera needs NCCL {}.{} or newer",
            v.0, v.1, v.2, MIN_VERSION.0, MIN_VERSION.1
        )));
    }
    Ok(v)
}

fn result_name(r: nsys::ncclResult_t) -> String {
    // SAFETY: ncclGetErrorString returns a pointer to a static NUL-terminated string for any
    // result code (the library is loaded: callers ran `probe`).
    let p = unsafe { nsys::ncclGetErrorString(r) };
    if p.is_null() {
        return format!("{r:?}");
    }
    // SAFETY: non-null, static, NUL-terminated (NCCL documents the string as constant).
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
    format!("{r:?} ({s})")
}

fn nccl_err(call: &str, e: nres::NcclError, comm: Option<nsys::ncclComm_t>) -> Error {
    let mut msg = result_name(e.0);
    if let Some(c) = comm {
        // SAFETY: `c` is a live communicator; ncclGetLastError returns a NUL-terminated string
        // owned by NCCL (or null).
        let p = unsafe { nsys::ncclGetLastError(c) };
        if !p.is_null() {
            // SAFETY: as above.
            let last = unsafe { CStr::from_ptr(p) }.to_string_lossy();
            if !last.is_empty() {
                msg = format!("{msg}: {last}");
            }
        }
    }
    Error::driver(B, call, msg)
}

/// An NCCL unique id: the 128 bytes rank 0 creates and every rank passes to
/// `ncclCommInitRank`. Plain bytes here; [`NcclId::generate`] needs NCCL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NcclId(pub [u8; 128]);

impl std::fmt::Debug for NcclId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclId({}…)", &self.to_hex()[..16])
    }
}

impl NcclId {
    /// `ncclGetUniqueId`. Without `NCCL_COMM_ID` in the environment this also starts NCCL's
    /// bootstrap root (a listening thread) in this process, which must therefore stay alive
    /// until every rank has joined: call it on rank 0. With `NCCL_COMM_ID=<host>:<port>` it
    /// returns the same id on every process (the root then starts in rank 0's
    /// `ncclCommInitRank`).
    pub fn generate() -> Result<NcclId> {
        probe()?;
        let id = nres::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e, None))?;
        let mut out = [0u8; 128];
        for (o, c) in out.iter_mut().zip(id.internal.iter()) {
            *o = *c as u8;
        }
        Ok(NcclId(out))
    }

    /// 256 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 256 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<NcclId> {
        let s = s.trim();
        let bad = |why: &str| {
            Error::invalid(
                "NcclId::from_hex",
                format!("an NCCL id is 256 hex digits (128 bytes); {why}"),
            )
        };
        if s.len() != 256 {
            return Err(bad(&format!("got {} characters", s.len())));
        }
        let mut out = [0u8; 128];
        for (i, o) in out.iter_mut().enumerate() {
            let pair = s
                .get(2 * i..2 * i + 2)
                .ok_or_else(|| bad("found a non-ASCII character"))?;
            *o = u8::from_str_radix(pair, 16)
                .map_err(|_| bad(&format!("'{pair}' at {} is not hex", 2 * i)))?;
        }
        Ok(NcclId(out))
    }

    fn raw(&self) -> nsys::ncclUniqueId {
        let mut internal = [0 as std::ffi::c_char; 128];
        for (o, b) in internal.iter_mut().zip(self.0.iter()) {
            *o = *b as std::ffi::c_char;
        }
        nsys::ncclUniqueId { internal }
    }
}

/// The NCCL datatype and element count for `len` elements of `T`. Types NCCL names map to
/// themselves; 16-bit integers go as bytes (point-to-point moves bytes, the type only has to
/// match on both sides, which it does since both derive it from `T`).
fn nccl_type<T: DType>(len: usize) -> (nsys::ncclDataType_t, usize) {
    use nsys::ncclDataType_t as N;
    match T::KIND {
        DTypeKind::F32 => (N::ncclFloat32, len),
        DTypeKind::F16 => (N::ncclFloat16, len),
        DTypeKind::BF16 => (N::ncclBfloat16, len),
        DTypeKind::U8 => (N::ncclUint8, len),
        DTypeKind::I8 => (N::ncclInt8, len),
        DTypeKind::U32 => (N::ncclUint32, len),
        DTypeKind::I32 => (N::ncclInt32, len),
        DTypeKind::U64 => (N::ncclUint64, len),
        DTypeKind::I64 => (N::ncclInt64, len),
        DTypeKind::U16 | DTypeKind::I16 => (N::ncclUint8, len * 2),
    }
}

/// One point-to-point operation of a step, on a buffer of the local rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2pOp {
    /// Send `len` elements of buffer `buf` from element `off` to rank `peer`.
    Send {
        buf: usize,
        off: usize,
        len: usize,
        peer: usize,
    },
    /// Receive `len` elements from rank `peer` into buffer `buf` at element `off`.
    Recv {
        buf: usize,
        off: usize,
        len: usize,
        peer: usize,
    },
}

/// An NCCL communicator of one rank, bound to one CUDA device, with its own stream.
pub struct Communicator {
    comm: nsys::ncclComm_t,
    device: Device,
    stream: cuda::CudaCopyStream,
    rank: usize,
    world: usize,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Communicator(rank {} of {} on {})",
            self.rank,
            self.world,
            self.device.backend()
        )
    }
}

fn to_int(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid("nccl", format!("{what} {v} exceeds int")))
}

impl Communicator {
    /// `ncclCommInitRank` for `rank` of `world` on `device` (a CUDA device). Blocks until every
    /// rank has called it with the same id. Errors (never panics) when NCCL or the device is
    /// missing.
    pub fn init(device: &Device, rank: usize, world: usize, id: &NcclId) -> Result<Communicator> {
        if world == 0 || rank >= world {
            return Err(Error::invalid(
                "nccl",
                format!("NCCL rank {rank} of a group of {world}"),
            ));
        }
        probe()?;
        let exec = device.cuda_exec().ok_or_else(|| {
            Error::invalid(
                "nccl",
                format!(
                    "NCCL needs a CUDA device (one GPU per rank); got {}",
                    device.backend()
                ),
            )
        })?;
        let stream = exec.copy_stream()?;
        exec.context()
            .bind_to_thread()
            .map_err(|e| Error::driver("cuda", "cuCtxSetCurrent", format!("{e:?}")))?;
        let mut comm: nsys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id is 128 bytes by value; rank < world; the
        // device's primary context is current on this thread, as NCCL requires.
        unsafe {
            nres::comm_init_rank(
                &mut comm,
                to_int("world size", world)?,
                id.raw(),
                to_int("rank", rank)?,
            )
        }
        .map_err(|e| nccl_err("ncclCommInitRank", e, None))?;
        Ok(Communicator {
            comm,
            device: device.clone(),
            stream,
            rank,
            world,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One grouped step: every op in order, between `ncclGroupStart` and `ncclGroupEnd`, on the
    /// communicator's stream after a fence of the device's compute stream. `bufs` are this
    /// rank's buffers (indexed by the ops). Ranges, peers and devices are checked first.
    pub fn step<T: DType>(&mut self, bufs: &mut [DeviceBuffer<T>], ops: &[P2pOp]) -> Result<()> {
        const OP: &str = "nccl step";
        let size = std::mem::size_of::<T>();
        // Validate everything before touching NCCL: a failure inside a group still needs the
        // group closed.
        let mut calls = Vec::with_capacity(ops.len());
        for op in ops {
            let (send, buf, off, len, peer) = match *op {
                P2pOp::Send {
                    buf,
                    off,
                    len,
                    peer,
                } => (true, buf, off, len, peer),
                P2pOp::Recv {
                    buf,
                    off,
                    len,
                    peer,
                } => (false, buf, off, len, peer),
            };
            if peer >= self.world || peer == self.rank {
                return Err(Error::invalid(
                    OP,
                    format!("peer {peer} for rank {} of {}", self.rank, self.world),
                ));
            }
            let b = bufs.get(buf).ok_or_else(|| {
                Error::invalid(OP, format!("rank {} has no buffer {buf}", self.rank))
            })?;
            if !b.device().same(&self.device) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "buffer {buf} is on {}, the communicator on {}",
                        b.device().backend(),
                        self.device.backend()
                    ),
                ));
            }
            if off.checked_add(len).is_none_or(|e| e > b.len()) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "range {off}..{off}+{len} of buffer {buf} ({} elements)",
                        b.len()
                    ),
                ));
            }
            if len == 0 {
                continue;
            }
            let (ty, count) = nccl_type::<T>(len);
            calls.push((send, b.addr() + (off * size) as u64, ty, count, peer as i32));
        }
        if calls.is_empty() {
            return Ok(());
        }
        let exec = self
            .device
            .cuda_exec()
            .ok_or_else(|| Error::invalid(OP, "communicator device is not CUDA"))?;
        self.stream.wait(&exec.fence()?)?;
        exec.context()
            .bind_to_thread()
            .map_err(|e| Error::driver("cuda", "cuCtxSetCurrent", format!("{e:?}")))?;
        let stream = self.stream.raw() as nsys::cudaStream_t;
        nres::group_start().map_err(|e| nccl_err("ncclGroupStart", e, Some(self.comm)))?;
        let mut first: Option<Error> = None;
        for (send, addr, ty, count, peer) in calls {
            // SAFETY: `addr .. addr + count * size(ty)` lies inside a live allocation of this
            // communicator's device (checked above); `comm` is live and `stream` belongs to the
            // device's context. The buffers outlive the step: Transport::wait (synchronize)
            // waits for the stream before the caller may free or reuse them.
            let r = unsafe {
                if send {
                    nres::send(addr as *const c_void, count, ty, peer, self.comm, stream)
                } else {
                    nres::recv(addr as *mut c_void, count, ty, peer, self.comm, stream)
                }
            };
            if let Err(e) = r {
                let call = if send { "ncclSend" } else { "ncclRecv" };
                first = Some(nccl_err(call, e, Some(self.comm)));
                break;
            }
        }
        // The group is closed even after a failed call.
        let end = nres::group_end().map_err(|e| nccl_err("ncclGroupEnd", e, Some(self.comm)));
        match (first, end) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(()),
        }
    }

    /// Wait on the host for every step queued so far, and surface asynchronous NCCL errors.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize()?;
        let mut async_err = nsys::ncclResult_t::ncclSuccess;
        // SAFETY: `comm` is live; `async_err` is a valid out-pointer.
        unsafe { nsys::ncclCommGetAsyncError(self.comm, &mut async_err) }
            .result()
            .map_err(|e| nccl_err("ncclCommGetAsyncError", e, Some(self.comm)))?;
        if async_err != nsys::ncclResult_t::ncclSuccess
            && async_err != nsys::ncclResult_t::ncclInProgress
        {
            return Err(nccl_err(
                "asynchronous NCCL error",
                nres::NcclError(async_err),
                Some(self.comm),
            ));
        }
        Ok(())
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        if let Some(exec) = self.device.cuda_exec() {
            let _ = exec.context().bind_to_thread();
        }
        // SAFETY: `comm` was created by ncclCommInitRank and is released exactly once, here:
        // finalize (flushes outstanding work) then destroy; abort if finalize fails.
        unsafe {
            if nres::comm_finalize(self.comm).is_ok() {
                let _ = nres::comm_destroy(self.comm);
            } else {
                let _ = nres::comm_abort(self.comm);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use nsys::ncclDataType_t as N;

    #[test]
    fn versions_and_types() {
        assert_eq!(split_version(22105), (2, 21, 5));
        assert_eq!(split_version(21403), (2, 14, 3));
        assert_eq!(split_version(2708), (2, 7, 8));
        assert_eq!(nccl_type::<bf16>(10), (N::ncclBfloat16, 10));
        assert_eq!(nccl_type::<f16>(10), (N::ncclFloat16, 10));
        assert_eq!(nccl_type::<f32>(10), (N::ncclFloat32, 10));
        assert_eq!(nccl_type::<u8>(10), (N::ncclUint8, 10));
        assert_eq!(nccl_type::<u16>(10), (N::ncclUint8, 20));
        assert_eq!(nccl_type::<i16>(3), (N::ncclUint8, 6));
        let names = library_candidates();
        assert!(names.iter().any(|n| n == "libnccl.so"));
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "duplicate {n}");
        }
    }
}
