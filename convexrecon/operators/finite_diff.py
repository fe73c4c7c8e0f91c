"""Circular forward finite differences (:class:`FiniteDifference`), the gradient of TV."""

from __future__ import annotations

from typing import Sequence

import torch

from convexrecon._checks import complex_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.fft import normalize_dims

__all__ = ["FiniteDifference"]


class FiniteDifference(Operator):
    """Circular forward differences ``(D x)_d[i] = x[i + e_d] - x[i]`` along each of ``dims``.

    Args:
        ishape: trailing input shape.
        dims: the differentiated dimensions (indices into ``ishape``).
        dtype: complex dtype of the operator.

    ``oshape = (len(dims), *ishape)``: the differences are stacked on a new axis in
    front of the image axes (after any batch dimensions). The adjoint is the negative
    backward difference summed over ``dims`` (a circular divergence, negated).
    """

    def __init__(self, ishape: Sequence[int], *, dims: Sequence[int] = (-2, -1),
                 dtype: torch.dtype = torch.complex64) -> None:
        ishape = tuple(int(s) for s in ishape)
        if any(s < 1 for s in ishape):
            raise InputError(f"ishape: expected positive sizes, got {ishape}")
        dims_n = normalize_dims(dims, len(ishape))
        super().__init__(ishape, (len(dims_n), *ishape), dtype=complex_dtype_of(dtype))
        self.dims = dims_n

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.roll(x, -1, dims=d) - x for d in self.dims]
        return torch.stack(parts, dim=-len(self.ishape) - 1)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        k = -len(self.ishape) - 1
        out = None
        for i, d in enumerate(self.dims):
            yi = y.select(k, i)
            term = torch.roll(yi, 1, dims=d) - yi
            out = term if out is None else out + term
        return out

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for d in self.dims:
            term = 2 * x - torch.roll(x, 1, dims=d) - torch.roll(x, -1, dims=d)
            out = term if out is None else out + term
        return out
