//! cuBLASLt through cudarc's `cublaslt` bindings, loaded at run time: a second dense GEMM path on
//! CUDA (`D = A·Bᵀ`), for the GEMM bench's comparison and as an alternative to tessera's own
//! kernel. It is optional: without libcublasLt [`available`] is false and [`matmul`] returns an
//! error, and the ops keep using their own kernels.
//!
//! cudarc opens libcublasLt on the first cuBLASLt call and **panics** when it cannot (and when a
//! symbol is missing). So every entry point first runs [`probe`]: it opens the library itself
//! with libloading under the names cudarc tries, in cudarc's order (the first that opens is the
//! one cudarc will load), checks that every symbol this module calls is exported, and reads the
//! version. Only then are cudarc's cuBLASLt functions called. See docs/cublaslt.md.
//!
//! Reviewed against cudarc 0.19.10 (`cublaslt::result`, `cublaslt::sys`) and the cuBLASLt
//! documentation (<https://docs.nvidia.com/cuda/cublas/#using-the-cublaslt-api>), **not run on a
//! GPU yet**.
//!
//! ## Row-major to column-major
//! cuBLASLt computes `D = op(A)·op(B)` on column-major matrices. A row-major `[r, c]` matrix with
//! row stride `c` is, read column-major, its transpose: a `c × r` matrix with leading dimension
//! `c`. tessera's `D[m,n] = A[m,k]·B[n,k]ᵀ` (all row-major) is therefore computed as the
//! column-major product `Dᵀ (n × m) = B (n × k) · Aᵀ (k × m)`:
//! - cuBLASLt's "A" is tessera's **B** buffer, stored as a column-major `k × n` matrix (ld `k`),
//!   which is `Bᵀ`; `TRANSA = T` turns it back into `B`, `n × k`;
//! - cuBLASLt's "B" is tessera's **A** buffer, stored as a column-major `k × m` matrix (ld `k`),
//!   which is already `Aᵀ`; `TRANSB = N`;
//! - C and D are column-major `n × m` (ld `n`), which is row-major `D[m,n]`.
//!
//! This is the "TN" layout, cuBLASLt's preferred one for 16-bit tensor-core GEMMs.
//!
//! ## State and streams
//! Each CUDA device (its executor) holds, created on first use: a cuBLASLt handle, a
//! [`WORKSPACE_BYTES`] workspace, an event, and a cache of the heuristic's algorithm per problem
//! (shape, types, pointer alignments). A matmul runs on the stream launches use: the caller's
//! stream inside [`Device::on_stream`], else the device's compute stream. The workspace is shared
//! by every stream of the device; a matmul on a stream other than the previous matmul's first
//! waits (on the device, `cuStreamWaitEvent`) for that previous matmul, so two matmuls never use
//! the workspace at once. Matmuls on one stream are not made to wait for anything.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cudarc::cublaslt::{result as lres, sys as lsys};
use cudarc::driver::{result as dres, sys as dsys, CudaContext};

use crate::device::{cuda::CudaExec, sync_after_launch, Backend, Device, DeviceBuffer};
use crate::dtype::{DType, DTypeKind};
use crate::error::{Error, Result};
use crate::ops::attention::HalfFloat;

/// The op name in argument errors.
const OP: &str = "gemm::cublaslt";
/// The backend name in driver and availability errors.
const B: &str = "cublaslt";

/// Bytes of the per-device workspace handed to cuBLASLt (the heuristic only picks algorithms
/// that fit). 32 MiB is what NVIDIA recommends for Hopper; smaller GPUs need less.
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// Oldest cuBLASLt accepted: 11.0 (bf16 GEMMs and `cublasComputeType_t` appeared there).
const MIN_MAJOR: usize = 11;

/// Every cuBLASLt symbol this module calls (directly or through cudarc's `result` wrappers).
/// [`probe`] checks each, so that cudarc's loader never meets a missing symbol (it panics).
const SYMBOLS: [&str; 13] = [
    "cublasLtGetVersion",
    "cublasLtCreate",
    "cublasLtDestroy",
    "cublasLtMatmulDescCreate",
    "cublasLtMatmulDescDestroy",
    "cublasLtMatmulDescSetAttribute",
    "cublasLtMatrixLayoutCreate",
    "cublasLtMatrixLayoutDestroy",
    "cublasLtMatmulPreferenceCreate",
    "cublasLtMatmulPreferenceDestroy",
    "cublasLtMatmulPreferenceSetAttribute",
    "cublasLtMatmulAlgoGetHeuristic",
    "cublasLtMatmul",
];

/// `cublasOperation_t` values (the enum is not in cudarc's cublaslt `sys`; the attribute is an
/// `int32_t`).
const CUBLAS_OP_N: i32 = 0;
const CUBLAS_OP_T: i32 = 1;

/// The library names cudarc tries for cuBLASLt, in its order, without repeats (with cudarc's
/// `cuda-13000` feature they include `libcublasLt.so`, `libcublasLt.so.13`, `libcublasLt.so.12`
/// and `libcublasLt.so.11`).
pub fn library_candidates() -> Vec<String> {
    let mut names = Vec::new();
    for n in cudarc::get_lib_name_candidates("cublasLt") {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The cuBLASLt library [`probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryInfo {
    /// The name it was opened under (the first of [`library_candidates`] that opens: the one
    /// cudarc loads).
    pub name: String,
    /// `cublasLtGetVersion()`: major·10000 + minor·100 + patch.
    pub version: usize,
}

impl LibraryInfo {
    /// (major, minor, patch).
    pub fn version_parts(&self) -> (usize, usize, usize) {
        (
            self.version / 10000,
            (self.version % 10000) / 100,
            self.version % 100,
        )
    }
}

fn unavailable(msg: impl Into<String>) -> Error {
    Error::DeviceUnavailable {
        backend: B,
        msg: msg.into(),
    }
}

/// Opens the first of `names` that opens and checks that it exports every symbol in [`SYMBOLS`].
/// Returns the name, or why not. Never panics.
fn find_library(names: &[String]) -> std::result::Result<String, String> {
    for name in names {
        // SAFETY: opening a shared library runs its initialisers; libcublasLt's are NVIDIA's own
        // with no preconditions on the caller (for the unit tests' stand-in, libc's libm, the
        // same). The handle is dropped when this function returns; the library stays loaded if
        // cudarc opens it later.
        let Ok(lib) = (unsafe { libloading::Library::new(name) }) else {
            continue;
        };
        // The first name that opens is the one cudarc's loader settles on: check it only.
        let missing: Vec<&str> = SYMBOLS
            .iter()
            .copied()
            // SAFETY: only looks the symbol up (dlsym); the pointer is never called or read.
            .filter(|s| unsafe { lib.get::<*const c_void>(s.as_bytes()) }.is_err())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{name} opens but does not export {} (not a usable cuBLASLt)",
                missing.join(", ")
            ));
        }
        return Ok(name.clone());
    }
    Err(format!(
        "libcublasLt cannot be loaded (tried {}). Install the CUDA toolkit's cuBLAS libraries \
         (libcublasLt) and put them on LD_LIBRARY_PATH",
        names.join(", ")
    ))
}

/// Checks that cuBLASLt can be used by this process: libcublasLt opens under a name cudarc
/// loads, exports every function tessera calls, and is version 11.0 or newer. The result is
/// computed once per process. Never panics; an [`Error::DeviceUnavailable`] (backend
/// `cublaslt`) says what is missing.
pub fn probe() -> Result<LibraryInfo> {
    static PROBE: OnceLock<std::result::Result<LibraryInfo, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let name = find_library(&library_candidates())?;
            // SAFETY: the library cudarc loads (the first candidate that opens, `name`) exports
            // cublasLtGetVersion (checked above), so cudarc's loader neither fails to open it nor
            // misses the symbol; the function has no preconditions.
            let version = unsafe { lsys::cublasLtGetVersion() };
            let info = LibraryInfo { name, version };
            let (major, minor, patch) = info.version_parts();
            if major < MIN_MAJOR {
                return Err(format!(
                    "{} is cuBLASLt {major}.{minor}.{patch}: tessera needs {MIN_MAJOR}.0 or newer",
                    info.name
                ));
            }
            Ok(info)
        })
        .clone()
        .map_err(unavailable)
}

/// Whether cuBLASLt can be used on `dev`: a CUDA device, the library loads ([`probe`]) and the
/// device's cuBLASLt state (handle, workspace) could be created. Never panics.
pub fn available(dev: &Device) -> bool {
    let Some(exec) = dev.cuda_exec() else {
        return false;
    };
    if probe().is_err() {
        return false;
    }
    exec.cublaslt.lock_init(exec).is_ok()
}

/// The cuBLASLt data type of a 16-bit input or an output element type.
fn data_type(kind: DTypeKind) -> Option<lsys::cudaDataType> {
    match kind {
        DTypeKind::F32 => Some(lsys::cudaDataType_t::CUDA_R_32F),
        DTypeKind::F16 => Some(lsys::cudaDataType_t::CUDA_R_16F),
        DTypeKind::BF16 => Some(lsys::cudaDataType_t::CUDA_R_16BF),
        _ => None,
    }
}

/// Checks the output type against cuBLASLt's supported combinations for `CUBLAS_COMPUTE_32F`
/// with 16-bit inputs: D is f32 or the inputs' own type.
fn check_types<T: HalfFloat, O: DType>() -> Result<()> {
    match O::KIND {
        DTypeKind::F32 => Ok(()),
        k if k == T::KIND => Ok(()),
        DTypeKind::F16 | DTypeKind::BF16 => Err(Error::Unsupported {
            what: format!(
                "cuBLASLt GEMM with {} inputs and {} output",
                T::KIND,
                O::KIND
            ),
            msg: "cuBLASLt (32-bit compute) writes D in f32 or in the inputs' type".into(),
        }),
        k => Err(Error::invalid(
            OP,
            format!("the output D must be f32, bf16 or f16; got {k}"),
        )),
    }
}

/// `count` = `a · b` elements, or an argument error naming `what`.
fn product(what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::invalid(OP, format!("{what}: {a} x {b} elements overflow usize")))
}

fn check_len(what: &str, got: usize, want: usize, shape: &str) -> Result<()> {
    if got != want {
        return Err(Error::invalid(
            OP,
            format!("{what} must hold {shape} = {want} elements; it holds {got}"),
        ));
    }
    Ok(())
}

/// A dimension as cuBLASLt's `int64_t`.
fn dim(what: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(OP, format!("{what} = {v} exceeds int64")))
}

/// The largest power of two (at most 256) that divides `addr`: the alignment the heuristic may
/// assume (its default, 256 bytes, would pick algorithms that fault on less aligned, borrowed
/// buffers).
fn alignment(addr: u64) -> u32 {
    if addr == 0 {
        256
    } else {
        1u32 << addr.trailing_zeros().min(8)
    }
}

/// `D[m,n] = A[m,k]·B[n,k]ᵀ` with cuBLASLt, all row-major: A and B in bf16 or f16 (`T`), D in
/// f32 or `T` (`O`), accumulated in f32 (`CUBLAS_COMPUTE_32F`, α = 1, β = 0: D is overwritten),
/// queued on the device's current stream (the caller's inside [`Device::on_stream`]) without a
/// host wait. `k == 0` writes zeros; `m == 0` or `n == 0` does nothing. Counts as one launch in
/// [`Device::launches`]. The transposes are explained in the module documentation.
///
/// Errors: [`Error::InvalidArgument`] (op `gemm::cublaslt`) for a length that is not `m·k`,
/// `n·k` or `m·n`, buffers on different devices, or an output type other than f32, bf16 and f16;
/// [`Error::Unsupported`] when the device is not a CUDA device, or for bf16 inputs with an f16
/// output (or the reverse), which cuBLASLt does not compute; [`Error::DeviceUnavailable`]
/// (backend `cublaslt`) when libcublasLt cannot be used ([`probe`]); [`Error::Driver`] when a
/// CUDA or cuBLASLt call fails (including "no algorithm" from the heuristic). Arguments are
/// checked first, so a bad call is an argument error on every device.
pub fn matmul<T: HalfFloat, O: DType>(
    a: &DeviceBuffer<T>,
    b: &DeviceBuffer<T>,
    d: &mut DeviceBuffer<O>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    check_types::<T, O>()?;
    check_len(
        "A",
        a.len(),
        product("A", m, k)?,
        &format!("[m, k] = [{m}, {k}]"),
    )?;
    check_len(
        "B",
        b.len(),
        product("B", n, k)?,
        &format!("[n, k] = [{n}, {k}]"),
    )?;
    check_len(
        "D",
        d.len(),
        product("D", m, n)?,
        &format!("[m, n] = [{m}, {n}]"),
    )?;
    let dev = a.device();
    for (name, other) in [("B", b.device()), ("D", d.device())] {
        if !other.same(dev) {
            return Err(Error::invalid(
                OP,
                format!(
                    "A is on {} and {name} on {}: all three must be on one device",
                    dev.backend(),
                    other.backend()
                ),
            ));
        }
    }
    let dims = Dims {
        m: dim("m", m)?,
        n: dim("n", n)?,
        k: dim("k", k)?,
    };
    let Some(exec) = dev.cuda_exec() else {
        return Err(Error::Unsupported {
            what: format!("cuBLASLt on {}", dev.backend()),
            msg: "cuBLASLt runs on CUDA devices only; use ops::gemm's own kernel".into(),
        });
    };
    debug_assert!(matches!(dev.backend(), Backend::Cuda(_)));
    if m == 0 || n == 0 {
        return Ok(());
    }
    probe()?;
    let mut guard = exec.cublaslt.lock_init(exec)?;
    let state = guard.as_mut().expect("lock_init created the state");
    state.bind()?;
    let stream = exec.current_stream();
    dev.inner
        .launches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if k == 0 {
        // An empty sum: D = 0 (all-zero bytes are 0.0 in f32, f16 and bf16).
        // SAFETY: `d` is a live allocation of this context holding m·n elements of O (checked
        // above); the memset is ordered on the current stream.
        unsafe { dres::memset_d8_async(d.addr(), 0, d.len() * O::KIND.size(), stream) }
            .map_err(|e| drv("cuMemsetD8Async", e))?;
    } else {
        let key = Key {
            t: T::KIND,
            o: O::KIND,
            dims,
            align: [
                alignment(b.addr()),
                alignment(a.addr()),
                alignment(d.addr()),
            ],
        };
        state.run(&key, b.addr(), a.addr(), d.addr(), stream)?;
    }
    drop(guard);
    if sync_after_launch() {
        // SAFETY: `stream` is the device's compute stream or the caller's live stream of this
        // context (`Device::on_stream`).
        unsafe { dres::stream::synchronize(stream) }.map_err(|e| {
            Error::kernel(
                "cuda",
                "cublasLtMatmul",
                format!("execution failed (TESSERA_SYNC_LAUNCHES=1): {e:?}"),
            )
        })?;
    }
    Ok(())
}

fn drv(call: &str, e: dres::DriverError) -> Error {
    Error::driver("cuda", call, format!("{e:?}"))
}

fn lt_err(call: &str, e: lres::CublasError) -> Error {
    Error::driver(B, call, format!("{:?}", e.0))
}

/// The problem dimensions as cuBLASLt takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Dims {
    m: i64,
    n: i64,
    k: i64,
}

/// What the heuristic's choice depends on: types, shape and the alignment of cuBLASLt's A
/// (tessera's B), B (tessera's A) and C/D.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    t: DTypeKind,
    o: DTypeKind,
    dims: Dims,
    align: [u32; 3],
}

/// Entries of the per-device algorithm cache before it is cleared.
const ALGO_CACHE_MAX: usize = 4096;

/// The per-device cuBLASLt state, held by the CUDA executor (`CudaExec::cublaslt`) and created
/// on first use. The mutex also serialises the matmuls of one device on the host (enqueueing
/// only: it is released before any wait).
#[derive(Default)]
pub(crate) struct Slot(Mutex<Option<State>>);

impl Slot {
    /// The locked state, created first if needed (a failed creation is retried next time).
    fn lock_init(&self, exec: &CudaExec) -> Result<MutexGuard<'_, Option<State>>> {
        let mut g = self
            .0
            .lock()
            .map_err(|_| Error::driver(B, "state lock", "poisoned by a panic"))?;
        if g.is_none() {
            *g = Some(State::new(exec.context().clone())?);
        }
        Ok(g)
    }
}

struct State {
    ctx: Arc<CudaContext>,
    handle: lsys::cublasLtHandle_t,
    workspace: dsys::CUdeviceptr,
    /// Recorded after each matmul on its stream.
    done: dsys::CUevent,
    /// The stream of the last matmul (`done` was recorded there), if any.
    last_stream: Option<usize>,
    algos: HashMap<Key, lsys::cublasLtMatmulAlgo_t>,
}

// SAFETY: the raw handles (cuBLASLt handle, device pointer, event) are plain identifiers that the
// driver and cuBLASLt accept from any thread with the context bound (State::bind runs before
// every use); all access goes through Slot's mutex.
unsafe impl Send for State {}

impl State {
    fn new(ctx: Arc<CudaContext>) -> Result<State> {
        ctx.bind_to_thread()
            .map_err(|e| drv("cuCtxSetCurrent", e))?;
        // Built field by field: Drop releases whatever was created if a later step fails.
        let mut s = State {
            ctx,
            handle: std::ptr::null_mut(),
            workspace: 0,
            done: std::ptr::null_mut(),
            last_stream: None,
            algos: HashMap::new(),
        };
        // SAFETY: plain allocation in the bound context; freed once in Drop.
        s.workspace = unsafe { dres::malloc_sync(WORKSPACE_BYTES) }.map_err(|e| {
            drv(
                &format!("cuMemAlloc({WORKSPACE_BYTES} bytes, workspace)"),
                e,
            )
        })?;
        s.done = dres::event::create(dsys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(|e| drv("cuEventCreate", e))?;
        // `probe` ran before (the only caller, Slot::lock_init, is reached after it), so cudarc's
        // loader finds the library and the symbol.
        s.handle = lres::create_handle().map_err(|e| lt_err("cublasLtCreate", e))?;
        Ok(s)
    }

    fn bind(&self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| drv("cuCtxSetCurrent", e))
    }

    /// The heuristic's algorithm for `key`, cached.
    fn algo(&mut self, key: &Key, ops: &Operands) -> Result<lsys::cublasLtMatmulAlgo_t> {
        if let Some(a) = self.algos.get(key) {
            return Ok(*a);
        }
        let pref = Pref::new()?;
        let ws = WORKSPACE_BYTES as u64;
        pref.set(
            lsys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &ws,
        )?;
        use lsys::cublasLtMatmulPreferenceAttributes_t as P;
        for (attr, align) in [
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align[0]),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align[1]),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align[2]),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align[2]),
        ] {
            pref.set(attr, &align)?;
        }
        // SAFETY: the handle, descriptor, layouts and preference are live (their guards outlive
        // the call) and describe the problem; cudarc asks for one result into a local.
        let heur = unsafe {
            lres::get_matmul_algo_heuristic(
                self.handle,
                ops.desc.0,
                ops.a.0,
                ops.b.0,
                ops.cd.0,
                ops.cd.0,
                pref.0,
            )
        }
        .map_err(|e| {
            Error::driver(
                B,
                "cublasLtMatmulAlgoGetHeuristic",
                format!(
                    "{:?}: no algorithm for D[{}, {}] ({}) = A·Bᵀ ({}, k = {}, alignments {:?})",
                    e.0, key.dims.m, key.dims.n, key.o, key.t, key.dims.k, key.align
                ),
            )
        })?;
        if heur.workspaceSize > WORKSPACE_BYTES {
            return Err(Error::driver(
                B,
                "cublasLtMatmulAlgoGetHeuristic",
                format!(
                    "the algorithm needs {} bytes of workspace, more than the {WORKSPACE_BYTES} \
                     allowed",
                    heur.workspaceSize
                ),
            ));
        }
        if self.algos.len() >= ALGO_CACHE_MAX {
            self.algos.clear();
        }
        self.algos.insert(*key, heur.algo);
        Ok(heur.algo)
    }

    /// Queues `D = A·Bᵀ` on `stream`; `lt_a` is tessera's B and `lt_b` tessera's A (see the module
    /// documentation). The context is bound.
    fn run(
        &mut self,
        key: &Key,
        lt_a: u64,
        lt_b: u64,
        d: u64,
        stream: dsys::CUstream,
    ) -> Result<()> {
        let t = data_type(key.t).expect("HalfFloat is f16 or bf16");
        let o = data_type(key.o).expect("checked by check_types");
        let Dims { m, n, k } = key.dims;
        let ops = Operands {
            desc: Desc::new()?,
            // cuBLASLt's A = tessera's B[n,k] row-major = column-major k × n, ld k; TRANSA = T.
            a: Layout::new(t, k, n, k)?,
            // cuBLASLt's B = tessera's A[m,k] row-major = column-major k × m, ld k; TRANSB = N.
            b: Layout::new(t, k, m, k)?,
            // C = D = tessera's D[m,n] row-major = column-major n × m, ld n.
            cd: Layout::new(o, n, m, n)?,
        };
        use lsys::cublasLtMatmulDescAttributes_t as DA;
        ops.desc
            .set(DA::CUBLASLT_MATMUL_DESC_TRANSA, &CUBLAS_OP_T)?;
        ops.desc
            .set(DA::CUBLASLT_MATMUL_DESC_TRANSB, &CUBLAS_OP_N)?;
        let algo = self.algo(key, &ops)?;

        // The workspace is shared by the device's streams: order this matmul after the previous
        // one when that ran on another stream.
        if let Some(prev) = self.last_stream {
            if prev != stream as usize {
                // SAFETY: `done` is a live event of this context, recorded on `prev` after the
                // previous matmul; `stream` is a live stream of this context.
                unsafe {
                    dres::stream::wait_event(
                        stream,
                        self.done,
                        dsys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                }
                .map_err(|e| drv("cuStreamWaitEvent", e))?;
            }
        }
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: handle, descriptor, layouts and algorithm are live and describe the problem;
        // `lt_a` (n·k of T), `lt_b` (m·k of T) and `d` (m·n of O) are live allocations of this
        // context whose lengths `matmul` checked against the layouts; C aliases D with the same
        // layout (allowed; β = 0 so C is not read); α and β are host f32 scalars (the default
        // pointer mode, scale type 32F) read during the call; the workspace is WORKSPACE_BYTES of
        // device memory no other matmul uses concurrently (the event wait above); `stream`
        // belongs to this context.
        unsafe {
            lres::matmul(
                self.handle,
                ops.desc.0,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                lt_a as *const c_void,
                ops.a.0,
                lt_b as *const c_void,
                ops.b.0,
                d as *const c_void,
                ops.cd.0,
                d as *mut c_void,
                ops.cd.0,
                &algo,
                self.workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream as lsys::cudaStream_t,
            )
        }
        .map_err(|e| lt_err("cublasLtMatmul", e))?;
        // SAFETY: live event and stream of this context.
        unsafe { dres::event::record(self.done, stream) }.map_err(|e| drv("cuEventRecord", e))?;
        self.last_stream = Some(stream as usize);
        Ok(())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        if !self.handle.is_null() {
            // SAFETY: created by cublasLtCreate and destroyed once, here.
            let _ = unsafe { lres::destroy_handle(self.handle) };
        }
        if self.workspace != 0 {
            // SAFETY: allocated by cuMemAlloc in this context and freed once; cuMemFree waits
            // for the work queued on the device that may still use it.
            let _ = unsafe { dres::free_sync(self.workspace) };
        }
        if !self.done.is_null() {
            // SAFETY: created by cuEventCreate and destroyed once.
            let _ = unsafe { dres::event::destroy(self.done) };
        }
    }
}

/// The descriptors of one matmul.
struct Operands {
    desc: Desc,
    a: Layout,
    b: Layout,
    cd: Layout,
}

/// A matmul descriptor: f32 compute, f32 scale type; destroyed on drop.
struct Desc(lsys::cublasLtMatmulDesc_t);

impl Desc {
    fn new() -> Result<Desc> {
        lres::create_matmul_desc(
            lsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            lsys::cudaDataType_t::CUDA_R_32F,
        )
        .map(Desc)
        .map_err(|e| lt_err("cublasLtMatmulDescCreate", e))
    }

    fn set<V: Copy>(&self, attr: lsys::cublasLtMatmulDescAttributes_t, v: &V) -> Result<()> {
        // SAFETY: the descriptor is live; `v` points at size_of::<V>() readable bytes, the
        // attribute's type (int32 for TRANSA/TRANSB) at every call site.
        unsafe {
            lres::set_matmul_desc_attribute(
                self.0,
                attr,
                (v as *const V).cast(),
                std::mem::size_of::<V>(),
            )
        }
        .map_err(|e| lt_err(&format!("cublasLtMatmulDescSetAttribute({attr:?})"), e))
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulDescCreate and destroyed once.
        let _ = unsafe { lres::destroy_matmul_desc(self.0) };
    }
}

/// A column-major matrix layout; destroyed on drop.
struct Layout(lsys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(ty: lsys::cudaDataType, rows: i64, cols: i64, ld: i64) -> Result<Layout> {
        // rows and cols are non-negative (they came from usize).
        lres::create_matrix_layout(ty, rows as u64, cols as u64, ld)
            .map(Layout)
            .map_err(|e| lt_err("cublasLtMatrixLayoutCreate", e))
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatrixLayoutCreate and destroyed once.
        let _ = unsafe { lres::destroy_matrix_layout(self.0) };
    }
}

/// A heuristic preference; destroyed on drop.
struct Pref(lsys::cublasLtMatmulPreference_t);

impl Pref {
    fn new() -> Result<Pref> {
        lres::create_matmul_pref()
            .map(Pref)
            .map_err(|e| lt_err("cublasLtMatmulPreferenceCreate", e))
    }

    fn set<V: Copy>(&self, attr: lsys::cublasLtMatmulPreferenceAttributes_t, v: &V) -> Result<()> {
        // SAFETY: the preference is live; `v` points at size_of::<V>() readable bytes, the
        // attribute's type (uint64 for MAX_WORKSPACE_BYTES, uint32 for the alignments) at every
        // call site.
        unsafe {
            lres::set_matmul_pref_attribute(
                self.0,
                attr,
                (v as *const V).cast(),
                std::mem::size_of::<V>(),
            )
        }
        .map_err(|e| {
            lt_err(
                &format!("cublasLtMatmulPreferenceSetAttribute({attr:?})"),
                e,
            )
        })
    }
}

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulPreferenceCreate and destroyed once.
        let _ = unsafe { lres::destroy_matmul_pref(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_cudarc_and_include_the_sonames() {
        let names = library_candidates();
        for want in [
            "libcublasLt.so",
            "libcublasLt.so.13",
            "libcublasLt.so.12",
            "libcublasLt.so.11",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "duplicate {n}");
        }
    }

    #[test]
    fn a_missing_library_is_reported_not_a_panic() {
        let names = vec!["libtessera-no-such-library.so.0".to_string()];
        let e = find_library(&names).unwrap_err();
        assert!(e.contains("cannot be loaded"), "{e}");
        assert!(e.contains("libtessera-no-such-library.so.0"), "{e}");
    }

    #[test]
    fn a_library_without_the_symbols_is_refused_before_cudarc_sees_it() {
        // libm opens on every glibc system and exports none of cuBLASLt's symbols: the case of
        // a wrong or stub library under a cuBLASLt name, where cudarc's loader would panic on
        // the first missing symbol.
        let names = vec![
            "libtessera-no-such-library.so.0".to_string(),
            "libm.so.6".to_string(),
        ];
        let e = find_library(&names).unwrap_err();
        assert!(e.contains("libm.so.6 opens but does not export"), "{e}");
        assert!(
            e.contains("cublasLtCreate") && e.contains("cublasLtMatmul"),
            "{e}"
        );
    }

    #[test]
    fn alignments_and_types() {
        assert_eq!(alignment(0), 256);
        assert_eq!(alignment(0x1000), 256);
        assert_eq!(alignment(0x1002), 2);
        assert_eq!(alignment(0x1010), 16);
        assert_eq!(alignment(0x1080), 128);
        use half::{bf16, f16};
        assert!(check_types::<bf16, f32>().is_ok());
        assert!(check_types::<bf16, bf16>().is_ok());
        assert!(check_types::<f16, f16>().is_ok());
        assert!(matches!(
            check_types::<bf16, f16>(),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            check_types::<f16, u8>(),
            Err(Error::InvalidArgument { .. })
        ));
        let info = LibraryInfo {
            name: "x".into(),
            version: 130_104,
        };
        assert_eq!(info.version_parts(), (13, 1, 4));
    }
}
