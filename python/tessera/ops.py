"""``tessera.ops.<family>.<op>``: one function per op of the op table, generated at import.

There is no per-op code: each function, its docstring and its ``inspect.signature`` come from
the table (``tessera.op_table()``), and the call goes to the native module, which runs the op by
name. A new op in the Rust table appears here with no change to this package.

Calling convention (every argument is a keyword):

* Input tensors and parameters take their Rust names (``tessera::ops::<family>::<op>``'s
  arguments or its problem struct's fields). The Python name of a Rust name: dots become
  underscores (``packed.words`` -> ``packed_words``, ``indices.count`` -> ``indices_count``);
  a name that is a Python keyword gets a trailing underscore, and so does an input or
  parameter named like one of the extra keywords below (none is, today). Unlike the C ABI (``new_``), ``new`` stays ``new``.
  ``python_name(rust_name)`` applies the rule.
* A tensor is any object with ``__dlpack__`` and ``__dlpack_device__``; an optional input may
  be left out or passed as ``None``. A parameter is an ``int``, ``float``, ``str`` (an enum's
  word) or a sequence of numbers (a list parameter); ``None`` keeps its default.
* ``out=``: a mapping (or a named tuple, like a previous result) from output names to tensors
  the op writes into instead of allocating; they must have the output's dtype, device and
  shape. An output whose size depends on the data (``bitmask.sparsify``'s ``values``,
  ``tah.select_hard``'s ``indices``, ...) takes a 1-D tensor of any sufficient capacity: the
  result then holds ``tensor[:n]``, a view of the ``n`` elements written (the tensor itself when
  it was filled).
* ``executor=``: what runs ops on host (kDLCPU) tensors: ``"cpu"`` (the native CPU path, the
  default), ``"simt"`` (the host SIMT executor running the CUDA sources, wave32), ``"simt64"``
  (the HIP sources, wave64), ``"simt-shuffle<seed>"`` / ``"simt64-shuffle<seed>"`` (a shuffled
  schedule). Ignored for GPU tensors.
* ``stream=``: for CUDA/ROCm tensors, the stream the op runs on: an ``int`` (a
  ``CUstream``/``hipStream_t`` handle; 0 or 1: the legacy default stream, 2: CUDA's per-thread
  default stream) or a stream object with ``cuda_stream`` (torch) or ``ptr`` (cupy). Default: the
  legacy default stream. The DLPack handshake passes it to every tensor's ``__dlpack__`` so the
  producers' pending work is ordered before the op; no device-wide synchronisation. Ignored for
  host tensors.

The result is a named tuple whose fields are the Rust output names (same rule). Each value is a
new ``tessera.Tensor``, or the caller's own object for an output given in ``out=`` and for an
input the op updates in place (``tah.scatter_rows``'s ``dst``, ``tah.copy_range``'s ``dst``,
``tah.accumulate_logits``'s ``cum``).
"""

import collections as _collections
import inspect as _inspect
import keyword as _keyword
import sys as _sys
import types as _types

from . import _tessera
from . import op_table as _op_table

# Keywords every op function takes besides the table's names.
EXTRA_KEYWORDS = ("out", "executor", "stream")


def python_name(rust_name):
    """The Python name of a Rust tensor, parameter or output name: ``packed.words`` ->
    ``packed_words``; a Python keyword gets a trailing underscore."""
    name = rust_name.replace(".", "_")
    if _keyword.iskeyword(name):
        name += "_"
    return name


def _arg_name(rust_name):
    """The keyword of an input or parameter: ``python_name``, with a trailing underscore when it
    is one of the extra keywords (``out``, ``executor``, ``stream``; no op has one today)."""
    name = python_name(rust_name)
    return name + "_" if name in EXTRA_KEYWORDS else name


def _stream_handle(stream):
    if stream is None or isinstance(stream, int):
        return stream
    for attr in ("cuda_stream", "ptr", "handle"):
        h = getattr(stream, attr, None)
        if isinstance(h, int):
            return h
    try:
        return int(stream.__index__())
    except AttributeError:
        raise TypeError(
            "stream= takes an int (a CUstream/hipStream_t handle) or a stream object with "
            f"`cuda_stream` or `ptr`, got {type(stream).__name__}"
        ) from None


def _default_value(text):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _type_doc(p):
    ty = p["type"]
    if isinstance(ty, dict) and "enum" in ty:
        return "one of " + ", ".join(repr(w) for w in ty["enum"])
    return {
        "f32": "float (f32)",
        "f64": "float (f64)",
        "u32": "int (u32)",
        "i32": "int (i32)",
        "usize": "int (usize)",
        "f32list": "sequence of floats (f32 list)",
    }.get(ty, str(ty))


def _tensor_doc(t, what):
    dtypes = " | ".join(t["dtypes"])
    shown = python_name(t["name"]) if what == "output" else _arg_name(t["name"])
    line = f"    {shown} : {dtypes}, shape {t['shape']}"
    notes = []
    if t.get("optional"):
        notes.append("optional")
    if what == "output":
        if t.get("in_place"):
            notes.append("the input, updated in place")
        elif t.get("data_dependent"):
            cap = f" (at most {t['max']})" if t.get("max") else ""
            notes.append(f"size depends on the data{cap}")
    if t["name"] != shown:
        notes.append(f"Rust `{t['name']}`")
    if notes:
        line += "; " + "; ".join(notes)
    return line


def _docstring(spec, sig, result_name):
    name = spec["name"]
    lines = [
        f"{name}{sig}",
        "",
        spec["summary"][:1].upper() + spec["summary"][1:] + ".",
        "",
        f"Rust: tessera::{spec['rust']}",
        "",
        "Inputs (tensors with __dlpack__, compact row-major, all on one device):",
    ]
    lines += [_tensor_doc(t, "input") for t in spec["inputs"]] or ["    (none)"]
    lines += ["", "Parameters:"]
    for p in spec["params"]:
        default = "required" if p["default"] is None else f"default {p['default']}"
        rust = "" if p["name"] == _arg_name(p["name"]) else f"; Rust `{p['name']}`"
        lines.append(f"    {_arg_name(p['name'])} : {_type_doc(p)}, {default}{rust}")
        lines.append(f"        {p['doc']}")
    if not spec["params"]:
        lines.append("    (none)")
    lines += ["", f"Returns a named tuple {result_name}(" + ", ".join(
        python_name(t["name"]) for t in spec["outputs"]) + "):"]
    lines += [_tensor_doc(t, "output") for t in spec["outputs"]]
    lines += [
        "",
        "Also: out= (a mapping of output tensors to write into), executor= ('cpu', 'simt', "
        "'simt64', ... for host tensors), stream= (CUDA/ROCm stream; default the legacy default "
        "stream). See help(tessera.ops).",
    ]
    return "\n".join(lines)


def _make(spec):
    name = spec["name"]
    family, short = name.split(".", 1)
    inputs = {_arg_name(t["name"]): t["name"] for t in spec["inputs"]}
    params = {_arg_name(p["name"]): p["name"] for p in spec["params"]}
    outputs = {python_name(t["name"]): t["name"] for t in spec["outputs"]}
    clash = (set(inputs) & set(params)) | (set(inputs) | set(params)) & set(EXTRA_KEYWORDS)
    assert not clash, f"{name}: clashing keyword names {clash}"
    result = _collections.namedtuple(f"{family}_{short}", list(outputs))
    result.__module__ = f"tessera.ops.{family}"
    result.__doc__ = f"The outputs of tessera.ops.{name}: " + ", ".join(outputs) + "."

    P = _inspect.Parameter
    sig_params = []
    for t in spec["inputs"]:
        default = None if t.get("optional") else P.empty
        sig_params.append(P(_arg_name(t["name"]), P.KEYWORD_ONLY, default=default))
    for p in spec["params"]:
        default = P.empty if p["default"] is None else _default_value(p["default"])
        sig_params.append(P(_arg_name(p["name"]), P.KEYWORD_ONLY, default=default))
    sig_params += [
        P("out", P.KEYWORD_ONLY, default=None),
        P("executor", P.KEYWORD_ONLY, default="cpu"),
        P("stream", P.KEYWORD_ONLY, default=None),
    ]
    signature = _inspect.Signature(sig_params)
    known = ", ".join(list(inputs) + list(params) + list(EXTRA_KEYWORDS))
    call = _tessera.call

    def op(*args, **kwargs):
        if args:
            raise TypeError(
                f"tessera.ops.{name}() takes keyword arguments only ({len(args)} positional "
                f"given); its keywords are: {known}"
            )
        tensors = []
        values = []
        out = executor = stream = None
        for key, value in kwargs.items():
            rust = inputs.get(key)
            if rust is not None:
                tensors.append((rust, value))
                continue
            rust = params.get(key)
            if rust is not None:
                values.append((rust, value))
            elif key == "out":
                out = value
            elif key == "executor":
                executor = value
            elif key == "stream":
                stream = _stream_handle(value)
            else:
                raise TypeError(
                    f"tessera.ops.{name}() got an unexpected keyword argument {key!r}; its "
                    f"keywords are: {known}"
                )
        provided = []
        if out is not None:
            items = out._asdict().items() if hasattr(out, "_asdict") else None
            if items is None:
                if not hasattr(out, "items"):
                    raise TypeError(
                        f"tessera.ops.{name}(): out= takes a mapping or a named tuple of output "
                        f"tensors ({', '.join(outputs)}), got {type(out).__name__}"
                    )
                items = out.items()
            for key, value in items:
                rust = outputs.get(key)
                if rust is None:
                    raise TypeError(
                        f"tessera.ops.{name}(): out= has no output named {key!r}; the outputs "
                        f"are: {', '.join(outputs)}"
                    )
                if value is not None:
                    provided.append((rust, value))
        return result._make(call(name, tensors, values, provided, executor, stream))

    op.__name__ = short
    op.__qualname__ = short
    op.__module__ = f"tessera.ops.{family}"
    op.__signature__ = signature
    op.__doc__ = _docstring(spec, signature, result.__name__)
    op.spec = spec
    op.Result = result
    return family, short, op


def _build():
    families = {}
    for spec in _op_table():
        family, short, fn = _make(spec)
        mod = families.get(family)
        if mod is None:
            mod = _types.ModuleType(
                f"tessera.ops.{family}",
                f"tessera::ops::{family}: the ops of family `{family}` (see help(tessera.ops)).",
            )
            mod.__all__ = []
            families[family] = mod
            _sys.modules[mod.__name__] = mod
        setattr(mod, short, fn)
        mod.__all__.append(short)
    return families


_FAMILIES = _build()
globals().update(_FAMILIES)
__all__ = ["python_name", "EXTRA_KEYWORDS"] + sorted(_FAMILIES)
