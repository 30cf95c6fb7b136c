//! Generates `src/capi/ops.rs`, the `tessera_<family>_<op>` functions, from the op table: each
//! function takes the op's input tensors in the table's order, its parameters, its output tensors
//! (outputs updated in place are the inputs of that name), a `<name>_len` pointer after each
//! output whose size depends on the data, and the caller's stream.

use std::fmt::Write as _;

use crate::interop::data_dependent;
use crate::ops::table::{OpSpec, ParamType, TensorSpec, OPS};

/// Words that cannot name a parameter in C or C++ get a trailing underscore.
const RESERVED: &[&str] = &[
    "auto",
    "bool",
    "break",
    "case",
    "char",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "false",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "namespace",
    "new",
    "operator",
    "private",
    "protected",
    "public",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "true",
    "typedef",
    "typename",
    "union",
    "unsigned",
    "virtual",
    "void",
    "volatile",
    "while",
    "stream",
];

/// The C name of a Rust tensor or parameter name: `packed.words` -> `packed_words`, `new` ->
/// `new_`.
pub fn c_name(rust: &str) -> String {
    let n = rust.replace('.', "_");
    if RESERVED.contains(&n.as_str()) {
        format!("{n}_")
    } else {
        n
    }
}

/// The C function of an op: `attention.forward` -> `tessera_attention_forward`.
pub fn function_name(op: &OpSpec) -> String {
    format!("tessera_{}", op.name.replace('.', "_"))
}

fn tensor_doc(t: &TensorSpec) -> String {
    format!(
        "`{}` ({}, `{}`{})",
        c_name(t.name),
        t.dtypes.names().join("|"),
        t.shape,
        if t.optional {
            ", optional: may be NULL"
        } else {
            ""
        }
    )
}

fn param_type(ty: ParamType) -> &'static str {
    match ty {
        ParamType::F32 => "f32",
        ParamType::F64 => "f64",
        ParamType::U32 => "u32",
        ParamType::I32 => "i32",
        ParamType::Usize => "u64",
        ParamType::Enum(_) => "*const std::ffi::c_char",
        ParamType::F32List => "*const f32",
    }
}

/// The kind of one argument of a generated C function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// `const DLTensor*`: an input (NULL where optional).
    Tensor,
    /// `DLTensor*`: an output the caller allocated.
    Out,
    /// `int64_t*`: receives a data-dependent output's length (may be NULL).
    Len,
    F32,
    F64,
    U32,
    I32,
    U64,
    /// `const char*`: an enum word (NULL: the default).
    Str,
    /// `const float*` and its `uint64_t` count (two C arguments).
    List,
}

/// The C arguments of `op`'s function before `stream`, in order: inputs, parameters, outputs
/// (each data-dependent one followed by its `_len`), with their C names.
pub fn c_args(op: &OpSpec) -> Vec<(String, ArgKind)> {
    let mut v: Vec<(String, ArgKind)> = op
        .inputs
        .iter()
        .map(|t| (c_name(t.name), ArgKind::Tensor))
        .collect();
    for p in op.params {
        let k = match p.ty {
            ParamType::F32 => ArgKind::F32,
            ParamType::F64 => ArgKind::F64,
            ParamType::U32 => ArgKind::U32,
            ParamType::I32 => ArgKind::I32,
            ParamType::Usize => ArgKind::U64,
            ParamType::Enum(_) => ArgKind::Str,
            ParamType::F32List => ArgKind::List,
        };
        v.push((c_name(p.name), k));
    }
    for (i, t) in op.outputs.iter().enumerate() {
        if op
            .inputs
            .iter()
            .any(|x| x.name == t.name && x.written_in_place())
        {
            continue;
        }
        let n = if op.inputs.iter().any(|x| x.name == t.name) {
            format!("{}_out", c_name(t.name))
        } else {
            c_name(t.name)
        };
        v.push((n.clone(), ArgKind::Out));
        if data_dependent(op, i) {
            v.push((format!("{n}_len"), ArgKind::Len));
        }
    }
    v
}

fn dispatcher(s: &mut String) {
    s.push_str(
        "
/// Call the generated function of op `name` with `args` in its C order (see
         /// [`super::codegen::c_args`]): for tests and bindings that work by name. `None` when
         /// there is no such op or the arguments do not match its signature.
         ///
/// # Safety
/// As the generated function's.
         pub unsafe fn call(name: &str, args: &[CArg], stream: *mut c_void) -> Option<TesseraStatus> {
             match name {
",
    );
    for op in OPS {
        let args = c_args(op);
        let pats: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, (_, k))| match k {
                ArgKind::List => format!("CArg::List(a{i}, a{i}_len)"),
                k => format!("CArg::{k:?}(a{i})"),
            })
            .collect();
        let vals: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, (_, k))| match k {
                ArgKind::List => format!("*a{i}, *a{i}_len"),
                _ => format!("*a{i}"),
            })
            .collect();
        let _ = write!(
            s,
            "        \"{}\" => match args {{
            [{}] => {{
                             // SAFETY: forwarded from this function's contract.
                             Some(unsafe {{ {}({}, stream) }})
            }}
            _ => None,
        }},
",
            op.name,
            pats.join(", "),
            function_name(op),
            vals.join(", ")
        );
    }
    s.push_str(
        "        _ => None,
    }
}
",
    );
}

/// The whole of `src/capi/ops.rs`.
pub fn rust_source() -> String {
    let mut s = String::from(
        "//! Generated from the op table by `capi::codegen::rust_source`; do not edit by hand\n\
         //! (`TESSERA_BLESS=1 cargo test --release --lib capi` regenerates it).\n\n\
         #![allow(clippy::too_many_arguments, non_snake_case)]\n\n\
         use std::ffi::c_void;\n\n\
         use super::dlpack::DLTensor;\n\
         use super::{entry, CArg, Ctx, TesseraStatus};\n\
         use crate::interop::ParamValue;\n",
    );
    for op in OPS {
        function(&mut s, op);
    }
    dispatcher(&mut s);
    s
}

fn function(s: &mut String, op: &OpSpec) {
    let in_place = |t: &TensorSpec| {
        op.inputs
            .iter()
            .any(|i| i.name == t.name && i.written_in_place())
    };
    // An output that shares its name with an input it does not update (`attention.merge`'s
    // `o`) is `<name>_out` in C.
    let out_name = |t: &TensorSpec| {
        if op.inputs.iter().any(|i| i.name == t.name) {
            format!("{}_out", c_name(t.name))
        } else {
            c_name(t.name)
        }
    };
    let _ = write!(
        s,
        "\n/// `{}`: {} (Rust: `tessera::{}`).\n///\n",
        op.name, op.summary, op.rust
    );
    let inputs: Vec<String> = op.inputs.iter().map(tensor_doc).collect();
    let _ = writeln!(s, "/// Inputs: {}.", inputs.join(", "));
    if !op.params.is_empty() {
        let ps: Vec<String> = op
            .params
            .iter()
            .map(|p| {
                let ty = match p.ty {
                    ParamType::Enum(w) => format!("const char*, one of \"{}\"", w.join("\", \"")),
                    ParamType::F32List => {
                        format!("const float*, `{}_len` of them", c_name(p.name))
                    }
                    ParamType::F32 => "float".into(),
                    ParamType::F64 => "double".into(),
                    ParamType::U32 => "uint32_t".into(),
                    ParamType::I32 => "int32_t".into(),
                    ParamType::Usize => "uint64_t".into(),
                };
                let default = match (p.default, p.ty) {
                    (Some(d), ParamType::Enum(_)) => format!(", NULL = \"{d}\""),
                    (Some(d), _) => format!(", usually {d}"),
                    (None, _) => String::new(),
                };
                format!("`{}` ({ty}{default}): {}", c_name(p.name), p.doc)
            })
            .collect();
        let _ = writeln!(s, "///\n/// Parameters: {}.", ps.join("; "));
    }
    let outs: Vec<String> = op
        .outputs
        .iter()
        .enumerate()
        .filter(|(_, t)| !in_place(t))
        .map(|(i, t)| {
            if data_dependent(op, i) {
                format!(
                    "`{n}` ({}, `{}`: its size depends on the data; pass a 1-D tensor with room \
                     for {}; `{n}_len`, when not NULL, receives the number of elements written)",
                    t.dtypes.names().join("|"),
                    t.shape,
                    t.max.unwrap_or("the largest possible result"),
                    n = out_name(t),
                )
            } else {
                format!(
                    "`{}` ({}, `{}`)",
                    out_name(t),
                    t.dtypes.names().join("|"),
                    t.shape
                )
            }
        })
        .collect();
    if !outs.is_empty() {
        let _ = writeln!(
            s,
            "///\n/// Outputs, allocated by the caller: {}.",
            outs.join(", ")
        );
    }
    let updated: Vec<String> = op
        .outputs
        .iter()
        .filter(|t| in_place(t))
        .map(|t| format!("`{}`", c_name(t.name)))
        .collect();
    if !updated.is_empty() {
        let _ = writeln!(s, "///\n/// Updated in place: {}.", updated.join(", "));
    }
    let _ = write!(
        s,
        "///\n/// Tensors on a GPU (kDLCUDA, kDLROCM) run there, queued on `stream` (a CUstream or \
         hipStream_t; NULL: the device's default stream); host tensors (kDLCPU) run on the host \
         executor (`tessera_set_host_executor`) and `stream` is ignored.\n\
         ///\n/// # Safety\n/// Each tensor pointer is NULL (only where allowed) or points to a valid \
         `DLTensor` whose memory stays valid until the call returns (on a GPU: until the work \
         queued on `stream` has finished), and no output aliases another tensor.\n\
         #[no_mangle]\npub unsafe extern \"C\" fn {}(\n",
        function_name(op)
    );
    for t in op.inputs {
        let _ = writeln!(s, "    {}: *const DLTensor,", c_name(t.name));
    }
    for p in op.params {
        let _ = writeln!(s, "    {}: {},", c_name(p.name), param_type(p.ty));
        if p.ty == ParamType::F32List {
            let _ = writeln!(s, "    {}_len: u64,", c_name(p.name));
        }
    }
    for (i, t) in op.outputs.iter().enumerate() {
        if in_place(t) {
            continue;
        }
        let _ = writeln!(s, "    {}: *mut DLTensor,", out_name(t));
        if data_dependent(op, i) {
            let _ = writeln!(s, "    {}_len: *mut i64,", out_name(t));
        }
    }
    let _ = write!(
        s,
        "    stream: *mut c_void,\n) -> TesseraStatus {{\n    entry(\"{name}\", || {{\n        let mut c = Ctx::new(\"{name}\");\n",
        name = op.name
    );
    for t in op.inputs {
        let _ = writeln!(
            s,
            "        // SAFETY: forwarded from this function's contract.\n        unsafe {{ c.input(\"{}\", {}) }}?;",
            t.name,
            c_name(t.name)
        );
    }
    for p in op.params {
        let n = c_name(p.name);
        let line = match p.ty {
            ParamType::F32 => format!("c.param(\"{}\", ParamValue::F32({n}));", p.name),
            ParamType::F64 => format!("c.param(\"{}\", ParamValue::F64({n}));", p.name),
            ParamType::U32 => format!("c.param(\"{}\", ParamValue::U32({n}));", p.name),
            ParamType::I32 => format!("c.param(\"{}\", ParamValue::I32({n}));", p.name),
            ParamType::Usize => format!(
                "c.param(\"{}\", ParamValue::Usize(crate::capi::usize_param(\"{}\", \"{}\", {n})?));",
                p.name, op.name, p.name
            ),
            ParamType::Enum(_) => format!(
                "// SAFETY: forwarded from this function's contract.\n        unsafe {{ c.param_enum(\"{}\", {n}) }}?;",
                p.name
            ),
            ParamType::F32List => format!(
                "// SAFETY: forwarded from this function's contract.\n        unsafe {{ c.param_list(\"{}\", {n}, {n}_len) }}?;",
                p.name
            ),
        };
        let _ = writeln!(s, "        {line}");
    }
    for (i, t) in op.outputs.iter().enumerate() {
        if in_place(t) {
            continue;
        }
        let len = if data_dependent(op, i) {
            format!("{}_len", out_name(t))
        } else {
            "std::ptr::null_mut()".into()
        };
        let _ = writeln!(
            s,
            "        // SAFETY: forwarded from this function's contract.\n        unsafe {{ c.output(\"{}\", {}, {len}) }}?;",
            t.name,
            out_name(t)
        );
    }
    s.push_str(
        "        // SAFETY: forwarded from this function's contract.\n        unsafe { c.run(stream) }\n    })\n}\n",
    );
}
