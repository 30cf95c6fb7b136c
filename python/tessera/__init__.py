"""tessera from Python: every op of tessera's op table over DLPack tensors.

    import numpy as np, tessera
    out = tessera.ops.bitmask.sparsify(base=a, new=b)       # a named tuple: out.mask, out.values
    dense = tessera.ops.bitmask.densify(base=a, mask=out.mask, values=out.values).out
    np.from_dlpack(dense)                                    # zero-copy

``tessera.ops.<family>.<op>`` mirrors the Rust path ``tessera::ops::<family>::<op>`` and is
generated from the op table (``tessera.op_table()``, the table ``tessera run --list --json``
prints): keyword-only arguments named as in Rust (a dot becomes an underscore:
``packed.words`` -> ``packed_words``), a docstring and an ``inspect.signature`` built from the
table. See ``tessera.ops`` for the calling convention (``out=``, ``executor=``, ``stream=``).

Tensors: any object with ``__dlpack__`` and ``__dlpack_device__`` (numpy, torch, jax, cupy,
``tessera.Tensor``), compact row-major, on the host (run by the host executor: the native CPU
path by default, or the host SIMT executor) or on a CUDA/ROCm GPU (run there, on the caller's
stream). Inputs are used in place, without a copy (on the SIMT executor, host tensors are copied
into its red-zoned buffers and written back). Outputs are ``tessera.Tensor`` objects that export
``__dlpack__``.

Errors: a bad argument (wrong dtype, shape, device, strides, a missing tensor or parameter, an
out-of-range value) raises ``ValueError`` with tessera's message, which names the op; an unknown
keyword raises ``TypeError``; anything else tessera reports (a device, driver or kernel failure)
raises ``tessera.TesseraError``, a ``RuntimeError``.
"""

import json as _json

from . import _tessera
from ._tessera import Tensor, TesseraError

__version__ = _tessera.__version__

_TABLE = None


def op_table():
    """The op table: a list of dicts, one per op (``name``, ``rust``, ``summary``, ``inputs``,
    ``params``, ``outputs``), as ``tessera run --list --json`` prints it, each output with
    ``data_dependent`` and ``in_place``."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _json.loads(_tessera.op_table_json())
    return _json.loads(_json.dumps(_TABLE))  # a copy: the caller may change it


from . import ops  # noqa: E402  (built from the table above)
from .ops import python_name  # noqa: E402

__all__ = ["ops", "op_table", "python_name", "Tensor", "TesseraError", "__version__"]
