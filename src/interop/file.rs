//! A call's inputs from a safetensors file and its outputs into one: what `tessera run OP --in
//! X.safetensors -o Y.safetensors` does, here so that it is tested with the library.
//!
//! Inputs are taken by their exact Rust names (`q`, `cu_seqlens_q`, `packed.words`). A tensor
//! whose name is not an input of the op is an error, not ignored ([`super::check_input_names`]);
//! dtypes tessera has no buffers for (I64, F64, BOOL, ...) are errors naming the tensor and
//! what the op takes instead. Outputs are written by their output names, in-place outputs
//! included, with the shapes of [`Output::shape`](super::Output::shape).

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{check_input_names, Call, DynBuffer, Outputs};
use crate::dtype::DTypeKind;
use crate::error::{Error, Result};

/// The tessera dtype of a safetensors dtype, `None` for those tessera has no buffers of.
pub fn dtype_from_safetensors(d: Dtype) -> Option<DTypeKind> {
    Some(match d {
        Dtype::F32 => DTypeKind::F32,
        Dtype::F16 => DTypeKind::F16,
        Dtype::BF16 => DTypeKind::BF16,
        Dtype::I32 => DTypeKind::I32,
        Dtype::U32 => DTypeKind::U32,
        Dtype::U16 => DTypeKind::U16,
        Dtype::U8 => DTypeKind::U8,
        _ => return None,
    })
}

/// The safetensors dtype of a tessera dtype a [`DynBuffer`] can hold.
pub fn dtype_to_safetensors(d: DTypeKind) -> Option<Dtype> {
    Some(match d {
        DTypeKind::F32 => Dtype::F32,
        DTypeKind::F16 => Dtype::F16,
        DTypeKind::BF16 => Dtype::BF16,
        DTypeKind::I32 => Dtype::I32,
        DTypeKind::U32 => Dtype::U32,
        DTypeKind::U16 => Dtype::U16,
        DTypeKind::U8 => Dtype::U8,
        _ => return None,
    })
}

/// How to convert a tensor to one of `want` (tessera dtype names), for error messages.
fn hint(want: &[&str]) -> String {
    let torch = |d: &str| match d {
        "f32" => "float32",
        "f16" => "float16",
        "bf16" => "bfloat16",
        "i32" => "int32",
        "u32" => "uint32",
        "u16" => "uint16",
        _ => "uint8",
    };
    match want.first() {
        Some(d) => format!(" (convert it, e.g. `.to(torch.{})`)", torch(d)),
        None => String::new(),
    }
}

/// Give `call` every tensor of the safetensors data `bytes` (read from `origin`, named in
/// errors) as the input of the same name, uploaded to the call's device. Errors: data that is
/// not safetensors, a name that is not an input of the op, a dtype tessera has no buffers of.
/// Missing inputs, dtypes outside the op's sets and shapes are reported by [`Call::run`].
pub fn inputs_from_safetensors(call: &mut Call, bytes: &[u8], origin: &str) -> Result<()> {
    let op = call.op();
    let st = SafeTensors::deserialize(bytes).map_err(|e| Error::Format {
        context: format!("safetensors {origin}"),
        msg: e.to_string(),
    })?;
    // In the table's order (then any others, by name): errors and uploads are reproducible.
    let mut tensors = st.tensors();
    tensors.sort_by_key(|(name, _)| {
        (
            op.inputs
                .iter()
                .position(|t| t.name == name)
                .unwrap_or(usize::MAX),
            name.clone(),
        )
    });
    check_input_names(op, tensors.iter().map(|(n, _)| n.as_str()))?;
    for (name, view) in &tensors {
        let spec = op.inputs.iter().find(|t| t.name == name);
        let dtype = dtype_from_safetensors(view.dtype()).ok_or_else(|| {
            let names = spec.map(|t| t.dtypes.names()).unwrap_or_default();
            let shape = spec.map(|t| t.shape).unwrap_or_default();
            Error::invalid(
                op.name,
                format!(
                    "tensor `{name}` in {origin} is {}, which tessera does not take; the op \
                     takes `{name}` as {} {shape}{}",
                    view.dtype(),
                    names.join(" or "),
                    hint(names)
                ),
            )
        })?;
        let buf = DynBuffer::from_bytes(call.device(), dtype, view.data(), name)?;
        let shape = view.shape().iter().map(|&d| d as u64).collect();
        call.input(name, buf, shape)?;
    }
    Ok(())
}

/// The outputs as safetensors data: each by its output name, dtype and [`Output::shape`]
/// (the written part of a provided output of data-dependent size), with `metadata` in the
/// header.
///
/// [`Output::shape`]: super::Output::shape
pub fn outputs_to_safetensors(
    outs: &Outputs,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let op = outs.op.name;
    let mut parts = Vec::with_capacity(outs.tensors.len());
    for o in &outs.tensors {
        let dt = o.buf.dtype();
        let st = dtype_to_safetensors(dt)
            .ok_or_else(|| Error::invalid(op, format!("output `{}` is {dt}", o.name)))?;
        let shape: Vec<usize> = o
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::invalid(op, format!("output `{}` is too large", o.name)))?;
        let bytes = shape
            .iter()
            .try_fold(dt.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::invalid(op, format!("output `{}` is too large", o.name)))?;
        let mut data = o.buf.to_bytes()?;
        if data.len() < bytes {
            return Err(Error::invalid(
                op,
                format!(
                    "internal: output `{}` holds {} bytes, its shape {:?} needs {bytes}",
                    o.name,
                    data.len(),
                    o.shape
                ),
            ));
        }
        data.truncate(bytes);
        parts.push((o.name, st, shape, data));
    }
    let err = |e: safetensors::SafeTensorError| Error::Format {
        context: format!("writing the outputs of {op}"),
        msg: e.to_string(),
    };
    let views = parts
        .iter()
        .map(|(name, st, shape, data)| Ok((*name, TensorView::new(*st, shape.clone(), data)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(err)?;
    safetensors::serialize(views, metadata).map_err(err)
}
