"""Centred orthonormal Fourier transforms and the :class:`FFT` operator.

Convention (fastMRI's): ``fftc(x) = fftshift(fft(ifftshift(x), norm="ortho"))`` over
the given dimensions, so the zero frequency sits at index ``N // 2``.

The module also provides :func:`centering_phases`, the diagonal factors that turn
the centred transform into a plain one without any shifts:
``fftc(x) = d_out * fft(d_in * x)`` (elementwise, per axis). For even sizes both
factors are real ``+-1`` checkerboards; for odd sizes they are complex phase ramps.
:class:`~convexrecon.operators.sense.Sense` folds them into its coil maps and mask.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from convexrecon.errors import InputError
from convexrecon.operators.base import Operator

__all__ = ["fftc", "ifftc", "FFT", "normalize_dims", "centering_phases"]


def normalize_dims(dims: Sequence[int] | int, ndim: int, name: str = "dims") -> tuple[int, ...]:
    """Return ``dims`` as unique negative indices into a trailing shape of length ``ndim``.

    Raises InputError if an entry is out of range or repeated.
    """
    if isinstance(dims, int):
        dims = (dims,)
    try:
        dims = tuple(int(d) for d in dims)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a sequence of ints, got {dims!r}") from exc
    if not dims:
        raise InputError(f"{name}: expected at least one dimension, got {dims!r}")
    out = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise InputError(
                f"{name}: expected dimensions in [-{ndim}, {ndim}) for a shape of "
                f"{ndim} dims, got {d}"
            )
        out.append(d - ndim if d >= 0 else d)
    if len(set(out)) != len(out):
        raise InputError(f"{name}: expected distinct dimensions, got {dims!r}")
    return tuple(out)


def fftc(x: torch.Tensor, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal FFT of ``x`` over ``dims``."""
    dims = tuple(dims)
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.fftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


def ifftc(x: torch.Tensor, dims: Sequence[int] = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal inverse FFT of ``x`` over ``dims`` (the adjoint of :func:`fftc`)."""
    dims = tuple(dims)
    x = torch.fft.ifftshift(x, dim=dims)
    x = torch.fft.ifftn(x, dim=dims, norm="ortho")
    return torch.fft.fftshift(x, dim=dims)


def _axis_phases(n: int, *, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis ``(d_in, d_out)`` with ``fftc = d_out * fft(d_in * .)`` on a length-``n`` axis.

    ``ifftshift`` rolls by ``-(n // 2)`` and ``fftshift`` by ``n // 2``. A roll in one
    domain is a phase ramp in the other, so the centred transform is the plain one
    between two diagonal factors:
    ``d_in[j] = exp(2 pi i j b / n)`` and ``d_out[k] = exp(2 pi i (k - b) b / n)``
    with ``b = n // 2``. For even ``n`` these are ``(-1)^j`` and ``(-1)^(k - n/2)``,
    computed exactly as integers.
    """
    b = n // 2
    idx = torch.arange(n, dtype=torch.int64, device=device)
    if n % 2 == 0:
        d_in = 1 - 2 * (idx % 2)
        d_out = 1 - 2 * ((idx - b) % 2)
        return d_in.to(dtype), d_out.to(dtype)
    # odd: exact integer phase indices mod n, then one rounding to float64
    ang_in = 2 * math.pi * ((idx * b) % n).to(torch.float64) / n
    ang_out = 2 * math.pi * (((idx - b) * b) % n).to(torch.float64) / n
    one = torch.ones((), dtype=torch.float64, device=device)
    return torch.polar(one, ang_in).to(dtype), torch.polar(one, ang_out).to(dtype)


def centering_phases(shape: Sequence[int], *, dtype: torch.dtype = torch.complex64,
                     device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal factors ``(d_in, d_out)`` of ``shape`` with ``fftc(x) = d_out * fft(d_in * x)``.

    The transform runs over all dimensions of ``shape`` (orthonormal ``fft``). Both
    factors have unit modulus, so ``ifftc(y) = conj(d_in) * ifft(conj(d_out) * y)``.
    For even sizes they are real ``+-1``; the returned tensors have dtype ``dtype``.
    """
    d_in = torch.ones((), dtype=dtype, device=device)
    d_out = torch.ones((), dtype=dtype, device=device)
    nd = len(shape)
    for axis, n in enumerate(shape):
        a_in, a_out = _axis_phases(int(n), dtype=dtype, device=device)
        view = [1] * nd
        view[axis] = int(n)
        d_in = d_in * a_in.reshape(view)
        d_out = d_out * a_out.reshape(view)
    return d_in, d_out


class FFT(Operator):
    """Centred orthonormal FFT over ``dims`` of a tensor with trailing shape ``ishape``.

    Args:
        ishape: trailing input (and output) shape.
        dims: the transformed dimensions, as indices into ``ishape`` (negative or
            non-negative); default the last two.
        dtype: complex dtype of the operator.
    """

    def __init__(self, ishape: Sequence[int], *, dims: Sequence[int] = (-2, -1),
                 dtype: torch.dtype = torch.complex64) -> None:
        ishape = tuple(int(s) for s in ishape)
        if any(s < 1 for s in ishape):
            raise InputError(f"ishape: expected positive sizes, got {ishape}")
        super().__init__(ishape, ishape, dtype=dtype)
        self.dims = normalize_dims(dims, len(ishape))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return fftc(x, self.dims)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ifftc(y, self.dims)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return x
