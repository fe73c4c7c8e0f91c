"""scipy interoperability: any :class:`~convexrecon.operators.base.Operator` as a
``scipy.sparse.linalg.LinearOperator``, so that ``lsqr``, ``lsmr``, ``cg``, ``gmres``
and ``eigsh`` run on the project's encoders.

The scipy operator acts on flattened vectors: shape ``(prod(oshape), prod(ishape))``
in C order, ``matvec`` is ``forward``, ``rmatvec`` is ``adjoint`` and ``matmat``
runs every column at once as a batch. numpy arrays are converted to the operator's
dtype and device and back (``.cpu().numpy()``), so a CUDA operator works too, with
one transfer each way per product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    from scipy.sparse.linalg import LinearOperator

    from convexrecon.operators.base import Operator

__all__ = ["to_scipy"]


def _device(op: "Operator") -> torch.device:
    from convexrecon.operators.linalg import _device_of

    dev = _device_of(op)
    return dev if dev is not None else torch.device("cpu")


def to_scipy(op: "Operator") -> "LinearOperator":
    """``op`` as a ``scipy.sparse.linalg.LinearOperator`` on flattened vectors."""
    from scipy.sparse.linalg import LinearOperator

    from convexrecon.operators.base import prod

    n, m = prod(op.ishape), prod(op.oshape)
    device = _device(op)
    np_dtype = torch.empty((), dtype=op.dtype).numpy().dtype

    def apply(fn, shape, v):
        v = np.asarray(v)
        cols = v.ndim == 2
        x = torch.as_tensor(np.ascontiguousarray(v.T if cols else v.reshape(-1)))
        x = x.to(device=device, dtype=op.dtype).reshape(*((x.shape[0],) if cols else ()), *shape)
        with torch.no_grad():
            out = fn(x)
        flat = out.reshape(x.shape[0], -1) if cols else out.reshape(-1)
        arr = flat.detach().cpu().numpy()
        return arr.T if cols else arr

    return LinearOperator(
        shape=(m, n), dtype=np_dtype,
        matvec=lambda v: apply(op.forward, op.ishape, v),
        rmatvec=lambda v: apply(op.adjoint, op.oshape, v),
        matmat=lambda v: apply(op.forward, op.ishape, v),
        rmatmat=lambda v: apply(op.adjoint, op.oshape, v),
    )
