//! Run any op of the op table ([`crate::ops::table`]) by name, on tensors whose dtype and shape
//! are known only at run time: the engine behind the C ABI ([`crate::capi`]), the Python package
//! and `tessera run`.
//!
//! A [`Call`] collects named input tensors ([`DynBuffer`] + shape), parameters ([`ParamValue`])
//! and, optionally, caller-provided output tensors; [`Call::run`] validates all of them against
//! the table (names, dtypes, shapes, devices), runs the op and returns its outputs by their Rust
//! names. Each op's entry in the table carries its runner (`OpSpec::run`, in `src/interop/runners.rs`), so an
//! op declared in the table is reachable from every interface with no other glue.
//!
//! Outputs: an op that has an `_into` form (`attention.forward`) writes straight into a provided
//! output; the others compute into a new buffer and copy it into the provided one on the
//! device's stream. Outputs whose size depends on the data (`bitmask.sparsify`'s `values`) take
//! a provided tensor of any capacity that fits; [`Output::shape`] says how much was written.

pub mod file;
pub mod shape;

use half::{bf16, f16};

use crate::device::{Device, DeviceBuffer};
use crate::dtype::{DType, DTypeKind};
use crate::error::{Error, Result};
use crate::ops::table::{self, Dtypes, OpSpec, ParamSpec, ParamType, TensorSpec};

/// An op's runner: reads its inputs and parameters from the call, runs the Rust op and puts its
/// outputs.
pub type Runner = fn(&mut Call) -> Result<()>;

/// A device buffer whose element type is chosen at run time.
#[derive(Debug)]
pub enum DynBuffer {
    F32(DeviceBuffer<f32>),
    F16(DeviceBuffer<f16>),
    BF16(DeviceBuffer<bf16>),
    I32(DeviceBuffer<i32>),
    U32(DeviceBuffer<u32>),
    U16(DeviceBuffer<u16>),
    U8(DeviceBuffer<u8>),
}

/// Element types a [`DynBuffer`] can hold.
pub trait Elem: DType {
    fn wrap(b: DeviceBuffer<Self>) -> DynBuffer;
    fn get(b: &DynBuffer) -> Option<&DeviceBuffer<Self>>;
    fn get_mut(b: &mut DynBuffer) -> Option<&mut DeviceBuffer<Self>>;
    /// The typed buffer, or `b` back when it holds another type.
    fn take(b: DynBuffer) -> std::result::Result<DeviceBuffer<Self>, DynBuffer>;
}

macro_rules! elems {
    ($($t:ty => $v:ident),*) => {
        $(impl Elem for $t {
            fn wrap(b: DeviceBuffer<Self>) -> DynBuffer {
                DynBuffer::$v(b)
            }
            fn get(b: &DynBuffer) -> Option<&DeviceBuffer<Self>> {
                match b {
                    DynBuffer::$v(x) => Some(x),
                    _ => None,
                }
            }
            fn get_mut(b: &mut DynBuffer) -> Option<&mut DeviceBuffer<Self>> {
                match b {
                    DynBuffer::$v(x) => Some(x),
                    _ => None,
                }
            }
            fn take(b: DynBuffer) -> std::result::Result<DeviceBuffer<Self>, DynBuffer> {
                match b {
                    DynBuffer::$v(x) => Ok(x),
                    other => Err(other),
                }
            }
        })*
        /// Run `$body` with `$b` bound to the typed buffer inside a `DynBuffer`.
        macro_rules! each_buffer {
            ($x:expr, |$b:ident| $body:expr) => {
                match $x {
                    $(DynBuffer::$v($b) => $body,)*
                }
            };
        }
        /// Run `$body` with the type alias `$t` set to the element type of `kind`.
        macro_rules! with_elem {
            ($kind:expr, $op:expr, |$T:ident| $body:expr) => {
                match $kind {
                    $(DTypeKind::$v => {
                        type $T = $t;
                        $body
                    })*
                    other => Err(Error::invalid($op, format!("dtype {other} is not supported here"))),
                }
            };
        }
    };
}
elems!(f32 => F32, f16 => F16, bf16 => BF16, i32 => I32, u32 => U32, u16 => U16, u8 => U8);

/// Run `$body` with the type alias `$T` set to the float type of `kind` (f32, f16, bf16).
macro_rules! with_float {
    ($kind:expr, $op:expr, |$T:ident| $body:expr) => {
        match $kind {
            DTypeKind::F32 => {
                type $T = f32;
                $body
            }
            DTypeKind::F16 => {
                type $T = half::f16;
                $body
            }
            DTypeKind::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err(Error::invalid(
                $op,
                format!("dtype {other} is not a float type"),
            )),
        }
    };
}

// After the macros: the runners use them.
pub(crate) mod runners;

impl DynBuffer {
    pub fn dtype(&self) -> DTypeKind {
        each_buffer!(self, |b| b.dtype_kind())
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_buffer!(self, |b| b.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> &Device {
        each_buffer!(self, |b| b.device())
    }

    /// The buffer's address on its device ([`DeviceBuffer::device_ptr`]).
    pub fn device_ptr(&self) -> u64 {
        each_buffer!(self, |b| b.device_ptr())
    }

    /// A new buffer of `len` elements of `dtype` on `dev`.
    pub fn alloc(dev: &Device, dtype: DTypeKind, len: usize, label: &str) -> Result<DynBuffer> {
        with_elem!(dtype, "alloc", |T| dev.alloc::<T>(len, label).map(T::wrap))
    }

    /// Upload little-endian element bytes (a whole number of `dtype` elements).
    pub fn from_bytes(
        dev: &Device,
        dtype: DTypeKind,
        bytes: &[u8],
        label: &str,
    ) -> Result<DynBuffer> {
        if bytes.len() % dtype.size() != 0 {
            return Err(Error::invalid(
                "upload",
                format!(
                    "{label}: {} bytes is not a whole number of {dtype} elements",
                    bytes.len()
                ),
            ));
        }
        with_elem!(dtype, "upload", |T| {
            let mut v = vec![<T as bytemuck::Zeroable>::zeroed(); bytes.len() / dtype.size()];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            dev.upload(&v, label).map(T::wrap)
        })
    }

    /// Download the elements as little-endian bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        each_buffer!(self, |b| b
            .download()
            .map(|v| bytemuck::cast_slice(&v).to_vec()))
    }

    /// Copy the first `len` elements of `src` (same dtype and device) into the start of `self`.
    pub fn copy_prefix_from(&mut self, src: &DynBuffer, len: usize) -> Result<()> {
        macro_rules! copy {
            ($($v:ident),*) => {
                match (&mut *self, src) {
                    $((DynBuffer::$v(d), DynBuffer::$v(s)) => d.copy_range_from(0, s, 0, len),)*
                    (d, s) => Err(Error::invalid(
                        "copy",
                        format!("destination is {} but the source is {}", d.dtype(), s.dtype()),
                    )),
                }
            };
        }
        copy!(F32, F16, BF16, I32, U32, U16, U8)
    }

    pub fn get<T: Elem>(&self) -> Option<&DeviceBuffer<T>> {
        T::get(self)
    }

    pub fn get_mut<T: Elem>(&mut self) -> Option<&mut DeviceBuffer<T>> {
        T::get_mut(self)
    }
}

trait KindOf {
    fn dtype_kind(&self) -> DTypeKind;
}
impl<T: DType> KindOf for DeviceBuffer<T> {
    fn dtype_kind(&self) -> DTypeKind {
        T::KIND
    }
}

/// The dtype named `name` (`f32`, `bf16`, ...), as the op table and safetensors spell it.
pub fn dtype_by_name(name: &str) -> Option<DTypeKind> {
    Some(match name {
        "f32" => DTypeKind::F32,
        "f16" => DTypeKind::F16,
        "bf16" => DTypeKind::BF16,
        "i32" => DTypeKind::I32,
        "u32" => DTypeKind::U32,
        "u16" => DTypeKind::U16,
        "u8" => DTypeKind::U8,
        _ => return None,
    })
}

/// Tensors in one line: `name dtypes shape` each, `(optional)` marked, `; `-separated.
pub fn tensor_list(ts: &[TensorSpec]) -> String {
    ts.iter()
        .map(|t| {
            format!(
                "{}{} {} {}",
                t.name,
                if t.optional { " (optional)" } else { "" },
                t.dtypes.names().join("|"),
                t.shape
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error naming every one of `names` that is not an input of `op` (in the order given),
/// with the op's inputs; `Ok` when all are. Interfaces that take tensors by name from a
/// container (`tessera run` from a safetensors file) call it so that a misspelt name is an
/// error rather than ignored: a misspelt *optional* input (`kv_valid`, `q_pos`) would otherwise
/// change the result without a word.
pub fn check_input_names<'a>(
    op: &'static OpSpec,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let extra: Vec<String> = names
        .into_iter()
        .filter(|n| !op.inputs.iter().any(|t| t.name == *n))
        .map(|n| format!("`{n}`"))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(
        op.name,
        format!(
            "{} {} not {} of the op (tensors are taken by their exact names); the op takes: {}",
            extra.join(", "),
            if extra.len() == 1 { "is" } else { "are" },
            if extra.len() == 1 {
                "an input"
            } else {
                "inputs"
            },
            tensor_list(op.inputs)
        ),
    ))
}

/// A parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    F32(f32),
    F64(f64),
    U32(u32),
    I32(i32),
    Usize(usize),
    /// One of the parameter's words.
    Enum(&'static str),
    F32List(Vec<f32>),
}

/// A parameter value as an interface receives it, before it is checked against the table.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<f64>),
}

impl Scalar {
    /// Parse command-line text: an integer, a number, a comma-separated list, or a word.
    pub fn parse(text: &str) -> Scalar {
        let t = text.trim();
        if let Ok(i) = t.parse() {
            return Scalar::Int(i);
        }
        if let Ok(f) = t.parse() {
            return Scalar::Float(f);
        }
        if t.contains(',') || (t.starts_with('[') && t.ends_with(']')) {
            let items: std::result::Result<Vec<f64>, _> = t
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse())
                .collect();
            if let Ok(v) = items {
                return Scalar::List(v);
            }
        }
        Scalar::Str(t.to_string())
    }
}

impl ParamValue {
    /// Convert `v` to parameter `spec`'s type, checking its range.
    pub fn convert(op: &'static str, spec: &ParamSpec, v: &Scalar) -> Result<ParamValue> {
        let bad = |why: String| Error::invalid(op, format!("parameter {}: {why}", spec.name));
        let int = |lo: i128, hi: i128| -> Result<i128> {
            match v {
                Scalar::Int(i) if (lo..=hi).contains(&(*i as i128)) => Ok(*i as i128),
                Scalar::Int(i) => Err(bad(format!("{i} is outside {lo}..={hi}"))),
                Scalar::Float(f) if f.fract() == 0.0 && (lo as f64..=hi as f64).contains(f) => {
                    Ok(*f as i128)
                }
                other => Err(bad(format!("expected an integer, got {other:?}"))),
            }
        };
        let float = || -> Result<f64> {
            match v {
                Scalar::Int(i) => Ok(*i as f64),
                Scalar::Float(f) => Ok(*f),
                other => Err(bad(format!("expected a number, got {other:?}"))),
            }
        };
        Ok(match spec.ty {
            ParamType::F32 => ParamValue::F32(float()? as f32),
            ParamType::F64 => ParamValue::F64(float()?),
            ParamType::U32 => ParamValue::U32(int(0, u32::MAX as i128)? as u32),
            ParamType::I32 => ParamValue::I32(int(i32::MIN as i128, i32::MAX as i128)? as i32),
            ParamType::Usize => ParamValue::Usize(int(0, i64::MAX as i128)? as usize),
            ParamType::Enum(words) => match v {
                Scalar::Str(s) => ParamValue::Enum(
                    words
                        .iter()
                        .find(|w| **w == s.as_str())
                        .ok_or_else(|| bad(format!("`{s}` is not one of {}", words.join(", "))))?,
                ),
                other => {
                    return Err(bad(format!(
                        "expected one of {}, got {other:?}",
                        words.join(", ")
                    )))
                }
            },
            ParamType::F32List => match v {
                Scalar::List(xs) => ParamValue::F32List(xs.iter().map(|&x| x as f32).collect()),
                Scalar::Int(_) | Scalar::Float(_) => ParamValue::F32List(vec![float()? as f32]),
                other => return Err(bad(format!("expected a list of numbers, got {other:?}"))),
            },
        })
    }

    /// This value as a size, for shape rules.
    fn as_size(&self) -> Option<u64> {
        match *self {
            ParamValue::U32(v) => Some(v as u64),
            ParamValue::Usize(v) => Some(v as u64),
            _ => None,
        }
    }
}

/// A tensor: a buffer and its shape (row-major, contiguous).
#[derive(Debug)]
pub struct Arg {
    pub buf: DynBuffer,
    pub shape: Vec<u64>,
}

/// One output of a finished call.
#[derive(Debug)]
pub struct Output {
    /// The output's Rust name.
    pub name: &'static str,
    /// The output: a new buffer, the caller's provided buffer (`provided`), or the input that
    /// was written in place (`in_place`).
    pub buf: DynBuffer,
    /// Its shape. For a provided output of data-dependent size, the part that was written.
    pub shape: Vec<u64>,
    /// Written into the tensor the caller passed as this output.
    pub provided: bool,
    /// An input updated in place (`tah.scatter_rows`'s `dst`), returned as the output.
    pub in_place: bool,
}

/// A finished call's outputs, in the table's order.
#[derive(Debug)]
pub struct Outputs {
    pub op: &'static OpSpec,
    pub tensors: Vec<Output>,
    /// The input tensors that are not outputs, handed back (a caller can reuse them).
    pub inputs: Vec<(&'static str, Arg)>,
}

impl Outputs {
    pub fn get(&self, name: &str) -> Option<&Output> {
        self.tensors.iter().find(|o| o.name == name)
    }
}

/// One op call being assembled: see the module docs.
pub struct Call {
    op: &'static OpSpec,
    device: Device,
    inputs: Vec<Option<Arg>>,
    params: Vec<Option<ParamValue>>,
    provided: Vec<Option<Arg>>,
    /// Per output: the buffer, whether it is the caller's, and how many elements were written.
    results: Vec<Option<(DynBuffer, bool, u64)>>,
    dims: shape::Dims,
    /// Read the device-side checks of input contents before returning on every backend.
    check_contents: bool,
}

/// The op name used in errors about the call itself (the op's own errors name the op).
fn op_error(op: &OpSpec) -> &'static str {
    // OpSpec names are 'static.
    table::find(op.name).map(|o| o.name).unwrap_or("ops")
}

impl Call {
    /// A call of op `name` (`family.op`) on `device`: an error listing the ops when there is no
    /// such op.
    pub fn new(name: &str, device: &Device) -> Result<Call> {
        let op = table::find(name).ok_or_else(|| {
            Error::invalid(
                "run",
                format!(
                    "unknown op `{name}`; the ops are: {}",
                    table::OPS
                        .iter()
                        .map(|o| o.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        Ok(Call {
            op,
            device: device.clone(),
            inputs: op.inputs.iter().map(|_| None).collect(),
            params: op.params.iter().map(|_| None).collect(),
            provided: op.outputs.iter().map(|_| None).collect(),
            results: op.outputs.iter().map(|_| None).collect(),
            dims: shape::Dims::new(),
            check_contents: false,
        })
    }

    pub fn op(&self) -> &'static OpSpec {
        self.op
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub(crate) fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::invalid(op_error(self.op), msg)
    }

    fn names(ts: &[TensorSpec]) -> String {
        tensor_list(ts)
    }

    /// Read the device-side checks of input contents (attention's `cu_seqlens`) before
    /// [`Call::run`] returns, on every backend: one wait on a GPU. Without it they are read at
    /// once on the CPU path and SIMT (which run synchronously), and on a GPU only with
    /// `TESSERA_EAGER_CHECKS=1`. `tessera run` sets it: it waits for the outputs anyway.
    pub fn check_contents(&mut self, yes: bool) {
        self.check_contents = yes;
    }

    /// Give input tensor `name`.
    pub fn input(&mut self, name: &str, buf: DynBuffer, shape: Vec<u64>) -> Result<()> {
        let i = self
            .op
            .inputs
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| {
                self.err(format!(
                    "no input named `{name}`; the inputs are: {}",
                    Self::names(self.op.inputs)
                ))
            })?;
        if self.inputs[i].is_some() {
            return Err(self.err(format!("input `{name}` given twice")));
        }
        self.inputs[i] = Some(Arg { buf, shape });
        Ok(())
    }

    /// Give output tensor `name` for the op to write into (otherwise it allocates one).
    pub fn output(&mut self, name: &str, buf: DynBuffer, shape: Vec<u64>) -> Result<()> {
        let i = self
            .op
            .outputs
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| {
                self.err(format!(
                    "no output named `{name}`; the outputs are: {}",
                    Self::names(self.op.outputs)
                ))
            })?;
        if self.in_place(name) {
            return Err(self.err(format!(
                "`{name}` is updated in place: pass it as an input, not as an output"
            )));
        }
        if self.provided[i].is_some() {
            return Err(self.err(format!("output `{name}` given twice")));
        }
        self.provided[i] = Some(Arg { buf, shape });
        Ok(())
    }

    /// Whether output `name` is an input written in place (`tah.scatter_rows`'s `dst`; not
    /// `attention.merge`'s `o`, an input and a new output of the same name).
    pub fn in_place(&self, name: &str) -> bool {
        self.op
            .inputs
            .iter()
            .any(|t| t.name == name && t.written_in_place())
    }

    /// Set parameter `name`.
    pub fn param(&mut self, name: &str, value: ParamValue) -> Result<()> {
        let i = self.param_index(name)?;
        self.params[i] = Some(value);
        Ok(())
    }

    /// Set parameter `name` from an interface's value, converting and range-checking it.
    pub fn param_scalar(&mut self, name: &str, value: &Scalar) -> Result<()> {
        let i = self.param_index(name)?;
        let v = ParamValue::convert(op_error(self.op), &self.op.params[i], value)?;
        self.params[i] = Some(v);
        Ok(())
    }

    fn param_index(&self, name: &str) -> Result<usize> {
        self.op
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.op.params.iter().map(|p| p.name).collect();
                self.err(if known.is_empty() {
                    format!("no parameter named `{name}`; the op has none")
                } else {
                    format!(
                        "no parameter named `{name}`; the parameters are: {}",
                        known.join(", ")
                    )
                })
            })
    }

    /// Validate everything against the table, run the op and return its outputs.
    pub fn run(mut self) -> Result<Outputs> {
        self.validate()?;
        (self.op.run)(&mut self)?;
        self.finish()
    }

    fn validate(&mut self) -> Result<()> {
        let op = self.op;
        // Parameters: defaults, then required ones.
        for (i, p) in op.params.iter().enumerate() {
            if self.params[i].is_none() {
                match p.default {
                    Some(d) => {
                        let v = ParamValue::convert(op_error(op), p, &Scalar::parse(d))?;
                        self.params[i] = Some(v);
                    }
                    None => {
                        return Err(self.err(format!("missing parameter `{}` ({})", p.name, p.doc)))
                    }
                }
            }
            if let Some(n) = self.params[i].as_ref().and_then(ParamValue::as_size) {
                self.dims.insert(p.name.to_string(), n);
            }
        }
        // Inputs: presence, device, dtype groups, shapes.
        let mut groups: Vec<(Dtypes, DTypeKind, &'static str)> = Vec::new();
        let mut check = |this: &mut Self,
                         spec: &'static TensorSpec,
                         arg: &Arg,
                         what: &str|
         -> Result<()> {
            let dt = arg.buf.dtype();
            if !spec.dtypes.names().contains(&dt.name()) {
                return Err(this.err(format!(
                    "{what} `{}` is {dt}; it must be {}",
                    spec.name,
                    spec.dtypes.names().join(" or ")
                )));
            }
            if spec.dtypes.shared() {
                if let Some((_, k, first)) = groups.iter().find(|(g, _, _)| *g == spec.dtypes) {
                    if *k != dt {
                        return Err(this.err(format!(
                            "{what} `{}` is {dt} but `{first}` is {k}: they must have the same dtype",
                            spec.name
                        )));
                    }
                } else {
                    groups.push((spec.dtypes, dt, spec.name));
                }
            }
            if !arg.buf.device().same(&this.device) {
                let (theirs, ours) = (arg.buf.device().backend(), this.device.backend());
                return Err(this.err(if theirs == ours {
                    format!(
                        "{what} `{}` is on another {theirs} device than the call's",
                        spec.name
                    )
                } else {
                    format!(
                        "{what} `{}` is on {theirs}, the call runs on {ours}",
                        spec.name
                    )
                }));
            }
            let elems = arg.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            if elems != Some(arg.buf.len() as u64) {
                return Err(this.err(format!(
                    "{what} `{}`: shape {:?} does not match its {} elements",
                    spec.name,
                    arg.shape,
                    arg.buf.len()
                )));
            }
            Ok(())
        };
        for (i, spec) in op.inputs.iter().enumerate() {
            let Some(arg) = self.inputs[i].take() else {
                if spec.optional {
                    continue;
                }
                return Err(self.err(format!(
                    "missing input `{}`; the op takes: {}",
                    spec.name,
                    Self::names(op.inputs)
                )));
            };
            let r = check(self, spec, &arg, "input").and_then(|_| {
                shape::bind(spec.shape, &arg.shape, &mut self.dims)
                    .map_err(|e| self.err(format!("input `{}` {e}", spec.name)))
            });
            self.inputs[i] = Some(arg);
            r?;
        }
        for (i, spec) in op.outputs.iter().enumerate() {
            let Some(arg) = self.provided[i].take() else {
                continue;
            };
            let r = check(self, spec, &arg, "output").and_then(|_| {
                match shape::eval(spec.shape, &self.dims) {
                    Some(want) if want != arg.shape => Err(self.err(format!(
                        "output `{}` has shape {:?}, the op writes {want:?} ({})",
                        spec.name, arg.shape, spec.shape
                    ))),
                    Some(_) => Ok(()),
                    // Data-dependent: a 1-D tensor of some capacity (checked when written).
                    None if arg.shape.len() == 1 => Ok(()),
                    None => Err(self.err(format!(
                        "output `{}` must be 1-D (its size depends on the data), got shape {:?}",
                        spec.name, arg.shape
                    ))),
                }
            });
            self.provided[i] = Some(arg);
            r?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Outputs> {
        let mut tensors = Vec::new();
        for (i, spec) in self.op.outputs.iter().enumerate() {
            let in_place = self.in_place(spec.name);
            let (buf, provided, written) = if in_place {
                let j = self.input_index(spec.name)?;
                let arg = self.inputs[j]
                    .take()
                    .ok_or_else(|| self.err("in-place tensor missing"))?;
                let n = arg.buf.len() as u64;
                (arg.buf, false, n)
            } else {
                self.results[i].take().ok_or_else(|| {
                    self.err(format!("internal: output `{}` was not produced", spec.name))
                })?
            };
            let shape = match shape::eval(spec.shape, &self.dims) {
                Some(s)
                    if in_place || !provided || s.iter().product::<u64>() == buf.len() as u64 =>
                {
                    s
                }
                _ if provided => vec![written],
                _ => vec![buf.len() as u64],
            };
            if !provided && shape.iter().product::<u64>() != buf.len() as u64 {
                return Err(self.err(format!(
                    "internal: output `{}` has {} elements, its rule {} gives {shape:?}",
                    spec.name,
                    buf.len(),
                    spec.shape
                )));
            }
            tensors.push(Output {
                name: spec.name,
                buf,
                shape,
                provided,
                in_place,
            });
        }
        let inputs = self
            .op
            .inputs
            .iter()
            .zip(self.inputs)
            .filter_map(|(spec, arg)| arg.map(|a| (spec.name, a)))
            .collect();
        Ok(Outputs {
            op: self.op,
            tensors,
            inputs,
        })
    }
}

/// What runners use.
impl Call {
    fn input_index(&self, name: &str) -> Result<usize> {
        self.op
            .inputs
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| self.err(format!("internal: no input `{name}` in the table")))
    }

    fn output_index(&self, name: &str) -> Result<usize> {
        self.op
            .outputs
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| self.err(format!("internal: no output `{name}` in the table")))
    }

    /// The dtype of input `name` (validated).
    pub(crate) fn dtype_of(&self, name: &str) -> Result<DTypeKind> {
        let i = self.input_index(name)?;
        self.inputs[i]
            .as_ref()
            .map(|a| a.buf.dtype())
            .ok_or_else(|| self.err(format!("missing input `{name}`")))
    }

    /// The dtype of input `name`, `None` when the optional input was not given.
    pub(crate) fn opt_dtype_of(&self, name: &str) -> Result<Option<DTypeKind>> {
        let i = self.input_index(name)?;
        Ok(self.inputs[i].as_ref().map(|a| a.buf.dtype()))
    }

    /// Input `name`, or `None` when an optional input was not given.
    pub(crate) fn opt_inp<T: Elem>(&self, name: &str) -> Result<Option<&DeviceBuffer<T>>> {
        let i = self.input_index(name)?;
        match &self.inputs[i] {
            None => Ok(None),
            Some(a) => a.buf.get::<T>().map(Some).ok_or_else(|| {
                self.err(format!(
                    "input `{name}` is {}, expected {}",
                    a.buf.dtype(),
                    T::KIND
                ))
            }),
        }
    }

    /// Input `name`.
    pub(crate) fn inp<T: Elem>(&self, name: &str) -> Result<&DeviceBuffer<T>> {
        self.opt_inp(name)?
            .ok_or_else(|| self.err(format!("missing input `{name}`")))
    }

    /// Move input `name` out (to update it in place); [`Call::put_back`] returns it.
    pub(crate) fn take_inp(&mut self, name: &str) -> Result<Arg> {
        let i = self.input_index(name)?;
        self.inputs[i]
            .take()
            .ok_or_else(|| self.err(format!("missing input `{name}`")))
    }

    pub(crate) fn put_back(&mut self, name: &str, arg: Arg) -> Result<()> {
        let i = self.input_index(name)?;
        self.inputs[i] = Some(arg);
        Ok(())
    }

    fn param_value(&self, name: &str) -> Result<&ParamValue> {
        let i = self.param_index(name)?;
        self.params[i]
            .as_ref()
            .ok_or_else(|| self.err(format!("missing parameter `{name}`")))
    }

    pub(crate) fn p_f32(&self, name: &str) -> Result<f32> {
        match self.param_value(name)? {
            ParamValue::F32(v) => Ok(*v),
            other => Err(self.err(format!("internal: parameter `{name}` is {other:?}"))),
        }
    }

    pub(crate) fn p_f64(&self, name: &str) -> Result<f64> {
        match self.param_value(name)? {
            ParamValue::F64(v) => Ok(*v),
            other => Err(self.err(format!("internal: parameter `{name}` is {other:?}"))),
        }
    }

    pub(crate) fn p_u32(&self, name: &str) -> Result<u32> {
        match self.param_value(name)? {
            ParamValue::U32(v) => Ok(*v),
            other => Err(self.err(format!("internal: parameter `{name}` is {other:?}"))),
        }
    }

    pub(crate) fn p_i32(&self, name: &str) -> Result<i32> {
        match self.param_value(name)? {
            ParamValue::I32(v) => Ok(*v),
            other => Err(self.err(format!("internal: parameter `{name}` is {other:?}"))),
        }
    }

    pub(crate) fn p_usize(&self, name: &str) -> Result<usize> {
        match self.param_value(name)? {
            ParamValue::Usize(v) => Ok(*v),
            other => Err(self.err(format!("internal: parameter `{name}` is {other:?}"))),
        }
    }

    pub(crate) fn p_enum(&self, name: &str) -> Result<&'static str> {
        match self.param_value(name)? {
            ParamValue::Enum(v) => Ok(v),
            other => Err(self.err(format!("internal: parameter `{name}` is {other:?}"))),
        }
    }

    pub(crate) fn p_list(&self, name: &str) -> Result<&[f32]> {
        match self.param_value(name)? {
            ParamValue::F32List(v) => Ok(v),
            other => Err(self.err(format!("internal: parameter `{name}` is {other:?}"))),
        }
    }

    /// The caller's buffer for output `name`, moved out for an `_into` op; hand it back with
    /// [`Call::put_written`].
    pub(crate) fn take_provided(&mut self, name: &str) -> Result<Option<DynBuffer>> {
        let i = self.output_index(name)?;
        Ok(self.provided[i].take().map(|a| a.buf))
    }

    /// Hand back a buffer [`Call::take_provided`] moved out, unused.
    pub(crate) fn restore_provided(&mut self, name: &str, buf: Option<DynBuffer>) -> Result<()> {
        let i = self.output_index(name)?;
        if let Some(buf) = buf {
            let shape = vec![buf.len() as u64];
            self.provided[i] = Some(Arg { buf, shape });
        }
        Ok(())
    }

    /// The caller's buffer for output `name`, fully written by the op.
    pub(crate) fn put_written(&mut self, name: &str, buf: DynBuffer) -> Result<()> {
        let i = self.output_index(name)?;
        let n = buf.len() as u64;
        self.results[i] = Some((buf, true, n));
        Ok(())
    }

    /// Output `name` as the op produced it: kept, or copied into the caller's buffer.
    pub(crate) fn put<T: Elem>(&mut self, name: &str, buf: DeviceBuffer<T>) -> Result<()> {
        let i = self.output_index(name)?;
        let produced = T::wrap(buf);
        let n = produced.len();
        self.results[i] = Some(match self.provided[i].take() {
            None => (produced, false, n as u64),
            Some(mut dst) => {
                if dst.buf.dtype() != T::KIND {
                    return Err(self.err(format!(
                        "output `{name}` is {}, the op writes {} here",
                        dst.buf.dtype(),
                        T::KIND
                    )));
                }
                if dst.buf.len() < n {
                    return Err(self.err(format!(
                        "output `{name}` needs {n} elements, the given tensor holds {}",
                        dst.buf.len()
                    )));
                }
                dst.buf.copy_prefix_from(&produced, n)?;
                (dst.buf, true, n as u64)
            }
        });
        Ok(())
    }

    /// Output `name` from host values (e.g. `codec.kmeans`'s centroids).
    pub(crate) fn put_host<T: Elem>(&mut self, name: &str, values: &[T]) -> Result<()> {
        let b = self.device.upload(values, name)?;
        self.put(name, b)
    }
}

/// A host executor by name: `cpu` (the native CPU path), `simt` (the host SIMT executor, wave32:
/// the CUDA sources) or `simt64` (wave64: the HIP sources), optionally with a shuffled
/// schedule, `simt-shuffle<seed>` / `simt64-shuffle<seed>`.
pub fn host_device(name: &str) -> Result<Device> {
    use crate::device::{Schedule, SimtConfig};
    let bad = || {
        Error::invalid(
            "host executor",
            format!("`{name}` is not one of cpu, simt, simt64, simt-shuffle<seed>, simt64-shuffle<seed>"),
        )
    };
    if name == "cpu" {
        return Ok(Device::cpu());
    }
    let (wave, rest) = if let Some(r) = name.strip_prefix("simt64") {
        (64, r)
    } else if let Some(r) = name.strip_prefix("simt") {
        (32, r.strip_prefix("32").unwrap_or(r))
    } else {
        return Err(bad());
    };
    let schedule = match rest {
        "" => Schedule::InOrder,
        r => Schedule::Shuffled(
            r.strip_prefix("-shuffle")
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?,
        ),
    };
    Device::simt_with(SimtConfig {
        wave,
        schedule,
        ..SimtConfig::default()
    })
}

/// Whether output `i` of `op` has a size that depends on the data (not on the input shapes and
/// parameters): its rule uses a function of the data (`popcount(mask)`) or a name no input or
/// parameter binds (`tah.select_hard`'s `count`).
pub fn data_dependent(op: &OpSpec, i: usize) -> bool {
    let mut dims = shape::Dims::new();
    for p in op.params {
        if matches!(p.ty, ParamType::U32 | ParamType::Usize) {
            dims.insert(p.name.to_string(), 1);
        }
    }
    for t in op.inputs {
        for d in shape::parse(t.shape) {
            match d {
                shape::Dim::Name(n) => {
                    dims.insert(n, 1);
                }
                shape::Dim::Expr(shape::Expr::Add(a, _)) => {
                    if let shape::Expr::Name(n) = *a {
                        dims.insert(n, 1);
                    }
                }
                _ => {}
            }
        }
    }
    shape::eval(op.outputs[i].shape, &dims).is_none()
}
