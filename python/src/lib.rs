//! `tessera._tessera`: the native module of the Python package `tessera`.
//!
//! It has no per-op code: [`call`] runs any op of tessera's op table by name
//! (`tessera::interop::Call`) on DLPack tensors, and [`op_table_json`] hands the table to
//! `tessera/ops.py`, which builds `tessera.ops.<family>.<op>` from it. The sequence of a call
//! follows the C ABI's (`tessera::capi`): import every tensor zero-copy through `__dlpack__`,
//! validate it (`capi::dlpack::view`), choose the device from where the tensors live, bind them
//! (borrowed on CPU/CUDA/HIP, staged on SIMT), run on the caller's stream with the GIL released,
//! copy staged outputs back, then release the producers' tensors.

mod dlpack;

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyBufferError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyFloat, PyInt, PyList, PySlice, PyString, PyTuple};

use tessera::capi::dlpack::{
    self as cdl, DLDataType, DLDevice, Place, View, KDL_CPU, KDL_CUDA, KDL_ROCM,
};
use tessera::device::Device;
use tessera::interop::{self, Call, DynBuffer, Scalar};
use tessera::ops::table;
use tessera::{DTypeKind, Error};

pyo3::create_exception!(
    _tessera,
    TesseraError,
    PyRuntimeError,
    "An error tessera reports that is not a bad argument: a device, driver or kernel failure, an \
     op not built for the device. Bad arguments raise ValueError."
);

/// tessera's error on its way to Python (a newtype: the orphan rule forbids
/// `From<tessera::Error> for PyErr` here).
struct TsError(Error);

impl From<Error> for TsError {
    fn from(e: Error) -> Self {
        TsError(e)
    }
}

impl From<TsError> for PyErr {
    fn from(e: TsError) -> PyErr {
        let msg = e.0.to_string();
        match e.0 {
            Error::InvalidArgument { .. } => PyValueError::new_err(msg),
            _ => TesseraError::new_err(msg),
        }
    }
}

fn ts<T>(r: tessera::Result<T>) -> PyResult<T> {
    r.map_err(|e| PyErr::from(TsError(e)))
}

/// The host executor named `name`, one per name and process (SIMT devices keep their kernels).
fn host_executor(name: &str) -> PyResult<Device> {
    static HOSTS: OnceLock<Mutex<HashMap<String, Device>>> = OnceLock::new();
    let mut map = HOSTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = map.get(name) {
        return Ok(d.clone());
    }
    let d = ts(interop::host_device(name))?;
    map.insert(name.to_string(), d.clone());
    Ok(d)
}

fn dl_device(place: Place) -> DLDevice {
    match place {
        Place::Host => DLDevice {
            device_type: KDL_CPU,
            device_id: 0,
        },
        Place::Cuda(i) => DLDevice {
            device_type: KDL_CUDA,
            device_id: i as i32,
        },
        Place::Rocm(i) => DLDevice {
            device_type: KDL_ROCM,
            device_id: i as i32,
        },
    }
}

/// A stream as the caller gives it, for tensors of DLPack device type `device_type`: the value
/// passed to `__dlpack__(stream=...)` (the handshake) and the stream handle launches go on (0: the
/// device's own stream, which is the legacy default stream on CUDA and the null stream on HIP).
fn stream_for(device_type: i32, stream: Option<i64>) -> PyResult<(Option<isize>, usize)> {
    let bad = |why: &str| {
        PyValueError::new_err(format!(
            "stream={}: {why}",
            stream.map_or("None".into(), |s| s.to_string())
        ))
    };
    Ok(match device_type {
        // CUDA: 0 (torch's spelling) and 1 are the legacy default stream, 2 the per-thread
        // default stream (CU_STREAM_PER_THREAD is the handle 2), anything larger a CUstream.
        KDL_CUDA => match stream {
            None | Some(0) | Some(1) => (Some(1), 0),
            Some(s) if s >= 2 => (Some(s as isize), s as usize),
            Some(_) => return Err(bad("a CUDA stream is a CUstream handle, 0, 1 or 2")),
        },
        // ROCm: 0 is the null stream; 1 and 2 mean nothing there (DLPack forbids them).
        KDL_ROCM => match stream {
            None | Some(0) => (Some(0), 0),
            Some(s) if s > 2 => (Some(s as isize), s as usize),
            Some(_) => return Err(bad("a ROCm stream is a hipStream_t handle or 0")),
        },
        // Host memory has no stream: DLPack requires None, and `stream=` is ignored.
        _ => (None, 0),
    })
}

// ------------------------------------------------------------------------------------------------
// Tensor
// ------------------------------------------------------------------------------------------------

/// A tensor tessera allocated (an op's output), owned by this object and shared with the
/// consumers of its DLPack exports.
struct Owned {
    buf: DynBuffer,
    /// Where the elements start, as the device sees them (host pointer for CPU/SIMT).
    addr: u64,
    shape: Vec<u64>,
    dtype: DTypeKind,
    place: Place,
    /// The stream the tensor was written on (0: the device's own stream).
    stream: usize,
}

impl Owned {
    fn new(buf: DynBuffer, shape: Vec<u64>, place: Place, stream: usize) -> Owned {
        let addr = buf.device_ptr();
        let dtype = buf.dtype();
        Owned {
            buf,
            addr,
            shape,
            dtype,
            place,
            stream,
        }
    }
}

/// A tensor produced by a tessera op: exports `__dlpack__` / `__dlpack_device__`, so
/// `numpy.from_dlpack(t)` and `torch.from_dlpack(t)` view it without a copy. Host tensors are
/// also numpy arrays through `numpy()` / `numpy.asarray(t)`.
#[pyclass(module = "tessera", name = "Tensor", frozen)]
struct Tensor {
    inner: Arc<Owned>,
}

fn dtype_numpy_name(k: DTypeKind) -> &'static str {
    match k {
        DTypeKind::F32 => "float32",
        DTypeKind::F16 => "float16",
        DTypeKind::BF16 => "bfloat16",
        DTypeKind::U8 => "uint8",
        DTypeKind::U16 => "uint16",
        DTypeKind::U32 => "uint32",
        DTypeKind::U64 => "uint64",
        DTypeKind::I8 => "int8",
        DTypeKind::I16 => "int16",
        DTypeKind::I32 => "int32",
        DTypeKind::I64 => "int64",
    }
}

impl Tensor {
    /// The stream handle a consumer's `stream=` names (for this tensor's device type), `None`
    /// for "do not synchronise" (-1).
    fn consumer_stream(&self, stream: Option<i64>) -> PyResult<Option<usize>> {
        match (self.inner.place, stream) {
            (Place::Host, _) => Ok(None),
            (_, Some(-1)) => Ok(None),
            (p, s) => {
                let t = dl_device(p).device_type;
                stream_for(t, s).map(|(_, h)| Some(h))
            }
        }
    }
}

#[pymethods]
impl Tensor {
    /// The shape, a tuple of ints.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.shape.iter().copied())
    }

    #[getter]
    fn ndim(&self) -> usize {
        self.inner.shape.len()
    }

    /// Number of elements.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.shape.iter().product()
    }

    #[getter]
    fn nbytes(&self) -> u64 {
        self.size() * self.inner.dtype.size() as u64
    }

    /// The element type as tessera and the op table name it: `f32`, `f16`, `bf16`, `i32`,
    /// `u32`, `u16` or `u8`.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.inner.dtype.name()
    }

    /// The device: `cpu`, `cuda:<i>` or `rocm:<i>`.
    #[getter]
    fn device(&self) -> String {
        match self.inner.place {
            Place::Host => "cpu".into(),
            Place::Cuda(i) => format!("cuda:{i}"),
            Place::Rocm(i) => format!("rocm:{i}"),
        }
    }

    /// What ran the op that made it: `cpu`, `simt-w32`, `simt-w64`, `cuda:<i>`, `hip:<i>`.
    #[getter]
    fn executor(&self) -> String {
        self.inner.buf.device().backend().to_string()
    }

    fn __len__(&self) -> usize {
        self.inner.shape.first().copied().unwrap_or(0) as usize
    }

    fn __repr__(&self) -> String {
        let shape: Vec<String> = self.inner.shape.iter().map(|d| d.to_string()).collect();
        format!(
            "tessera.Tensor(shape=({}{}), dtype={}, device={})",
            shape.join(", "),
            if shape.len() == 1 { "," } else { "" },
            self.inner.dtype.name(),
            self.device()
        )
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        let d = dl_device(self.inner.place);
        (d.device_type, d.device_id)
    }

    /// Export as a DLPack capsule (the array API's protocol): a versioned capsule when
    /// `max_version` is (1, x) or later, the legacy one otherwise. `stream`: the consumer's
    /// stream (CUDA/ROCm); work on the tensor's stream is finished first when it differs (-1:
    /// no synchronisation). `dl_device=(1, 0)` copies a GPU tensor to the host (unless
    /// `copy=False`); `copy=True` exports a copy.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<i64>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let me = &self.inner;
        let here = self.__dlpack_device__();
        // Make the data ready for the consumer's stream.
        if let Some(handle) = self.consumer_stream(stream)? {
            if handle != me.stream {
                let dev = me.buf.device().clone();
                let s = me.stream;
                // SAFETY: `s` is the stream the tensor's op ran on, which the caller promised to
                // keep alive while it uses the op's results.
                ts(py.detach(move || unsafe {
                    dev.on_stream(s as *mut c_void, || dev.synchronize())
                }))?;
            }
        }
        let to_host = match dl_device {
            None => false,
            Some(d) if d == here => false,
            Some((t, 0)) if t == KDL_CPU && me.place != Place::Host => {
                if copy == Some(false) {
                    return Err(PyBufferError::new_err(
                        "a GPU tensor reaches the host only by a copy (copy=False was given)",
                    ));
                }
                true
            }
            Some(d) => {
                return Err(PyBufferError::new_err(format!(
                    "cannot export a tensor on {here:?} to device {d:?}"
                )))
            }
        };
        let versioned = matches!(max_version, Some((major, _)) if major >= 1);
        let (keep, flags) = if to_host || copy == Some(true) {
            let inner = Arc::clone(me);
            let copied = py.detach(move || -> tessera::Result<Owned> {
                if to_host {
                    let bytes = inner.buf.to_bytes()?;
                    let cpu = Device::cpu();
                    let b = DynBuffer::from_bytes(&cpu, inner.dtype, &bytes, "export copy")?;
                    Ok(Owned::new(b, inner.shape.clone(), Place::Host, 0))
                } else {
                    let dev = inner.buf.device().clone();
                    let n = inner.buf.len();
                    // SAFETY: the stream the tensor was written on (see above).
                    unsafe {
                        dev.on_stream(inner.stream as *mut c_void, || {
                            let mut b = DynBuffer::alloc(&dev, inner.dtype, n, "export copy")?;
                            b.copy_prefix_from(&inner.buf, n)?;
                            dev.synchronize()?;
                            Ok(Owned::new(b, inner.shape.clone(), inner.place, 0))
                        })
                    }
                }
            });
            (Arc::new(ts(copied)?), dlpack::FLAG_IS_COPIED)
        } else {
            (Arc::clone(me), 0)
        };
        let spec = dlpack::ExportSpec {
            addr: keep.addr,
            device: self::dl_device(keep.place),
            dtype: DLDataType::of(keep.dtype),
            shape: keep.shape.iter().map(|&d| d as i64).collect(),
            versioned,
            flags,
        };
        dlpack::export(py, spec, keep)
    }

    /// The tensor as a numpy array: a zero-copy view for a host tensor, a copy for a GPU one.
    /// (numpy has no bfloat16: a bf16 tensor comes back as its raw uint16 bits.)
    fn numpy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let np = py.import("numpy")?;
        let me = &slf.get().inner;
        let shape = PyTuple::new(py, me.shape.iter().copied())?;
        if me.place == Place::Host && me.dtype != DTypeKind::BF16 {
            return np.call_method1("from_dlpack", (slf,));
        }
        let inner = Arc::clone(me);
        let bytes = ts(py.detach(move || {
            // SAFETY: the stream the tensor was written on (see `__dlpack__`).
            unsafe {
                inner
                    .buf
                    .device()
                    .on_stream(inner.stream as *mut c_void, || inner.buf.to_bytes())
            }
        }))?;
        let name = match me.dtype {
            DTypeKind::BF16 => "uint16",
            k => dtype_numpy_name(k),
        };
        let arr = np.call_method1(
            "frombuffer",
            (pyo3::types::PyBytes::new(py, &bytes), np.getattr(name)?),
        )?;
        arr.call_method1("reshape", (shape,))?.call_method0("copy")
    }

    #[pyo3(signature = (dtype=None, copy=None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut a = Self::numpy(slf)?;
        if let Some(dt) = dtype {
            a = a.call_method1("astype", (dt,))?;
        } else if copy == Some(true) {
            a = a.call_method0("copy")?;
        }
        Ok(a)
    }
}

// ------------------------------------------------------------------------------------------------
// Calls
// ------------------------------------------------------------------------------------------------

/// A parameter value from Python: str -> a word, int-like (`__index__`) -> an integer, a
/// sequence -> a list of numbers, anything float-like -> a number.
fn scalar(op: &str, name: &str, v: &Bound<'_, PyAny>) -> PyResult<Scalar> {
    let bad = |what: String| PyValueError::new_err(format!("{op}: parameter {name}: {what}"));
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Scalar::Str(s.extract::<String>()?));
    }
    if v.is_instance_of::<PyInt>() {
        return v
            .extract::<i64>()
            .map(Scalar::Int)
            .map_err(|e| bad(format!("{e}")));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(Scalar::Float(v.extract::<f64>()?));
    }
    // A sequence (list, tuple, 1-D array): a list parameter. (len() fails on a 0-d array.)
    if v.len().is_ok() {
        let mut xs = Vec::new();
        for x in v.try_iter()? {
            xs.push(
                x?.extract::<f64>()
                    .map_err(|e| bad(format!("list entries must be numbers ({e})")))?,
            );
        }
        return Ok(Scalar::List(xs));
    }
    // numpy integer scalars and 0-d integer arrays.
    if v.hasattr("__index__")? {
        if let Ok(i) = v.call_method0("__index__").and_then(|i| i.extract::<i64>()) {
            return Ok(Scalar::Int(i));
        }
    }
    v.extract::<f64>().map(Scalar::Float).map_err(|_| {
        let ty = v
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        bad(format!(
            "expected a number, a word or a list of numbers, got {ty}"
        ))
    })
}

/// One tensor of a call: the caller's object and what tessera took from it.
struct Taken<'py> {
    name: &'static str,
    obj: Bound<'py, PyAny>,
    view: View,
    read_only: bool,
}

/// Run op `op` (`family.op`) on the named tensors and parameters (Rust names) and return its
/// outputs in the table's order: a new `Tensor`, or the caller's own object for an output given
/// in `outputs` (sliced to the written part when the op wrote less than it holds) or updated in
/// place. `executor` runs host tensors ("cpu", "simt", "simt64", "simt-shuffle<seed>", ...);
/// `stream` is the CUDA/ROCm stream for GPU tensors (None: the legacy default stream).
#[pyfunction]
#[pyo3(signature = (op, inputs, params, outputs, executor=None, stream=None))]
fn call<'py>(
    py: Python<'py>,
    op: &str,
    inputs: Vec<(String, Bound<'py, PyAny>)>,
    params: Vec<(String, Bound<'py, PyAny>)>,
    outputs: Vec<(String, Bound<'py, PyAny>)>,
    executor: Option<&str>,
    stream: Option<i64>,
) -> PyResult<Bound<'py, PyList>> {
    let spec = ts(table::find(op).ok_or_else(|| {
        let ops: Vec<&str> = table::OPS.iter().map(|o| o.name).collect();
        Error::invalid(
            "run",
            format!("unknown op `{op}`; the ops are: {}", ops.join(", ")),
        )
    }))?;
    let opn = spec.name;
    let tensor_name = |name: &str, list: &'static [table::TensorSpec]| -> PyResult<&'static str> {
        list.iter()
            .find(|t| t.name == name)
            .map(|t| t.name)
            .ok_or_else(|| {
                let known: Vec<&str> = list.iter().map(|t| t.name).collect();
                PyValueError::new_err(format!(
                    "{opn}: no tensor named `{name}`; the op's are: {}",
                    known.join(", ")
                ))
            })
    };

    // 1. Take every tensor (zero-copy), in the caller's order. The
    // `Managed`s hold the producers' memory until the end of the call; dropping them (last, after
    // every tessera buffer over that memory) calls the producers' deleters once.
    let mut managed: Vec<dlpack::Managed> = Vec::new();
    let mut taken_in: Vec<Taken<'py>> = Vec::new();
    let mut taken_out: Vec<Taken<'py>> = Vec::new();
    let mut launch_stream = 0usize;
    let all = inputs
        .into_iter()
        .map(|(n, o)| (n, o, false))
        .chain(outputs.into_iter().map(|(n, o)| (n, o, true)));
    for (name, obj, is_out) in all {
        if obj.is_none() {
            continue; // an absent tensor: `Call::run` names it when it is required.
        }
        let name = tensor_name(&name, if is_out { spec.outputs } else { spec.inputs })?;
        let what = format!(
            "{opn}: {} `{name}`",
            if is_out { "output" } else { "input" }
        );
        let (device_type, _) = dlpack::device_of(&obj, &what)?;
        let (handshake, handle) = stream_for(device_type, stream)?;
        if device_type != KDL_CPU {
            launch_stream = handle;
        }
        let m = dlpack::import(&obj, handshake, &what)?;
        // SAFETY: the producer's tensor is valid (shape/strides readable) while `m` lives.
        let view = ts(unsafe { cdl::view(opn, name, m.tensor()) })?;
        let read_only = m.flags() & dlpack::FLAG_READ_ONLY != 0;
        managed.push(m);
        let t = Taken {
            name,
            obj,
            view,
            read_only,
        };
        if is_out {
            taken_out.push(t);
        } else {
            taken_in.push(t);
        }
    }

    // 2. Where the call runs.
    let mut places = taken_in
        .iter()
        .chain(&taken_out)
        .map(|t| (t.name, t.view.place));
    let Some((first, place)) = places.next() else {
        return Err(TsError(Error::invalid(opn, "no tensors given")).into());
    };
    if let Some((n, p)) = places.find(|(_, p)| *p != place) {
        return Err(TsError(Error::invalid(
            opn,
            format!("tensors on different devices: `{first}` on {place:?}, `{n}` on {p:?}"),
        ))
        .into());
    }
    let host = host_executor(executor.unwrap_or("cpu"))?;
    let dev = ts(cdl::device_for(opn, place, &host))?;
    let mut call = ts(Call::new(opn, &dev))?;

    // 3. Written tensors: writable, and sharing memory with no other tensor of the call (the
    // kernels and the CPU path assume it).
    let updated = |name: &str| {
        spec.inputs
            .iter()
            .any(|t| t.name == name && t.written_in_place())
    };
    let written: Vec<&Taken> = taken_in
        .iter()
        .filter(|t| updated(t.name))
        .chain(&taken_out)
        .collect();
    for w in &written {
        if w.read_only {
            return Err(TsError(Error::invalid(
                opn,
                format!("`{}` is read-only, but the op writes it", w.name),
            ))
            .into());
        }
        let (a0, a1) = (w.view.addr, w.view.addr + w.view.bytes() as u64);
        for t in taken_in.iter().chain(&taken_out) {
            let (b0, b1) = (t.view.addr, t.view.addr + t.view.bytes() as u64);
            if !std::ptr::eq(*w, t) && a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1 {
                return Err(TsError(Error::invalid(
                    opn,
                    format!(
                        "`{}` shares memory with `{}`; a tensor the op writes must not overlap \
                         another tensor",
                        w.name, t.name
                    ),
                ))
                .into());
            }
        }
    }

    // 4. Bind and run, as `capi::Ctx::run` does.
    for (name, v) in &params {
        if v.is_none() {
            continue; // the default
        }
        let pname = spec
            .params
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.name)
            .unwrap_or("?");
        let s = scalar(opn, if pname == "?" { name } else { pname }, v)?;
        ts(call.param_scalar(name, &s))?;
    }
    // (name, view, staged: copy back after the call)
    let mut staged: Vec<(&'static str, View)> = Vec::new();
    for t in &taken_in {
        // SAFETY: the producer's memory stays valid (`managed`) and untouched by Python code
        // while the buffer lives: the call holds the GIL except inside `detach`, where only this
        // call uses it; the buffer is dropped before `managed`.
        let (buf, copy) = ts(unsafe { cdl::bind(&t.view, &dev, t.name) })?;
        if copy && updated(t.name) {
            staged.push((t.name, t.view.clone()));
        }
        ts(call.input(t.name, buf, t.view.shape.clone()))?;
    }
    for t in &taken_out {
        // SAFETY: as for the inputs.
        let (buf, copy) = ts(unsafe { cdl::bind(&t.view, &dev, t.name) })?;
        if copy {
            staged.push((t.name, t.view.clone()));
        }
        ts(call.output(t.name, buf, t.view.shape.clone()))?;
    }
    let run = py.detach(|| -> tessera::Result<interop::Outputs> {
        // SAFETY: `launch_stream` is 0 (the device's own stream) or the caller's stream of the
        // tensors' GPU, which the caller keeps alive during the call (the DLPack handshake).
        let out = unsafe { dev.on_stream(launch_stream as *mut c_void, || call.run()) }?;
        for o in &out.tensors {
            if let Some((_, v)) = staged.iter().find(|(n, _)| *n == o.name) {
                let n: u64 = o.shape.iter().product();
                // SAFETY: the caller's host memory, valid and writable (checked above).
                unsafe { cdl::write_back(v, &o.buf, n as usize) }?;
            }
        }
        Ok(out)
    });
    let out = ts(run)?;

    // 5. The results.
    let result = PyList::empty(py);
    let mut keep_alive = Vec::new();
    for o in out.tensors {
        let caller = if o.in_place {
            taken_in.iter().find(|t| t.name == o.name)
        } else if o.provided {
            taken_out.iter().find(|t| t.name == o.name)
        } else {
            None
        };
        match caller {
            Some(t) => {
                let written: u64 = o.shape.iter().product();
                let obj = if !o.in_place && o.shape.len() == 1 && written < t.view.len() {
                    t.obj
                        .get_item(PySlice::new(py, 0, written as isize, 1))
                        .map_err(|e| {
                            let err = PyTypeError::new_err(format!(
                                "{opn}: output `{}`: cannot slice the written part [:{written}]",
                                o.name
                            ));
                            err.set_cause(py, Some(e));
                            err
                        })?
                } else {
                    t.obj.clone()
                };
                result.append(obj)?;
                keep_alive.push(o.buf); // borrowed: dropped before the producers' tensors
            }
            None => {
                let owned = Owned::new(o.buf, o.shape, place, launch_stream);
                result.append(Bound::new(
                    py,
                    Tensor {
                        inner: Arc::new(owned),
                    },
                )?)?;
            }
        }
    }
    drop(keep_alive);
    drop(managed);
    Ok(result)
}

/// The op table as JSON (what `tessera run --list --json` prints), each output with
/// `data_dependent` (its size depends on the data) and `in_place` (an input written in place).
#[pyfunction]
fn op_table_json() -> PyResult<String> {
    let mut v = serde_json::to_value(table::OPS)
        .map_err(|e| PyRuntimeError::new_err(format!("op table: {e}")))?;
    if let Some(ops) = v.as_array_mut() {
        for (op, spec) in ops.iter_mut().zip(table::OPS) {
            if let Some(outs) = op.get_mut("outputs").and_then(|o| o.as_array_mut()) {
                for (i, o) in outs.iter_mut().enumerate() {
                    let in_place = spec
                        .inputs
                        .iter()
                        .any(|t| t.name == spec.outputs[i].name && t.written_in_place());
                    o["data_dependent"] = (!in_place && interop::data_dependent(spec, i)).into();
                    o["in_place"] = in_place.into();
                }
            }
        }
    }
    serde_json::to_string(&v).map_err(|e| PyRuntimeError::new_err(format!("op table: {e}")))
}

/// Check an executor name ("cpu", "simt", "simt64", "simt-shuffle<seed>", ...) and create it.
#[pyfunction]
fn check_executor(name: &str) -> PyResult<()> {
    host_executor(name).map(|_| ())
}

#[pymodule]
fn _tessera(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tensor>()?;
    m.add_function(wrap_pyfunction!(call, m)?)?;
    m.add_function(wrap_pyfunction!(op_table_json, m)?)?;
    m.add_function(wrap_pyfunction!(check_executor, m)?)?;
    m.add("TesseraError", m.py().get_type::<TesseraError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
