"""Elementwise and resizing operators: :class:`Multiply`, :class:`Mask`, :class:`Crop`, :class:`Pad`.

Crop and pad use fastMRI's centre convention: a size-``n`` window of a size-``N``
axis starts at index ``(N - n) // 2``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from convexrecon._checks import as_tensor, complex_dtype_of, real_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator

__all__ = ["Multiply", "Mask", "Crop", "Pad", "as_bool_mask"]


def _shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a sequence of ints, got {shape!r}") from exc
    if any(s < 1 for s in out):
        raise InputError(f"{name}: expected positive sizes, got {out}")
    return out


def _trailing_broadcast(tshape: Sequence[int], shape: Sequence[int], name: str,
                        expected: str) -> tuple[int, ...]:
    """Broadcast the trailing ``len(shape)`` dims of ``tshape`` with ``shape``.

    Raises InputError (naming ``name``) when a trailing size is neither 1 nor
    broadcast-compatible.
    """
    k = len(shape)
    tshape = tuple(tshape)
    trail = (1,) * max(0, k - len(tshape)) + tshape[max(0, len(tshape) - k):]
    try:
        return tuple(torch.broadcast_shapes(trail, tuple(shape)))
    except RuntimeError as exc:
        raise InputError(
            f"{name}: expected a shape whose trailing dims broadcast with {expected} "
            f"{tuple(shape)}, got {tshape}"
        ) from exc


def as_bool_mask(mask, name: str = "mask", *, device=None) -> torch.Tensor:
    """Convert ``mask`` (tensor or array) to a bool tensor.

    Numeric masks are accepted if every value is 0 or 1; anything else raises
    InputError naming ``name``.
    """
    m = as_tensor(mask, name)
    if m.dtype != torch.bool:
        if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise InputError(
                f"{name}: expected a boolean mask (or values in {{0, 1}}), got dtype "
                f"{m.dtype} with other values"
            )
        m = m != 0
    return m.to(device) if device is not None else m


class Multiply(Operator):
    """Multiply by fixed ``weights``: ``y = weights * x`` (broadcast).

    ``oshape`` is the broadcast of ``ishape`` with the last ``len(ishape)`` dims of
    ``weights``; dims of ``weights`` before those are batch dimensions (per-sample
    weights). For example ``Multiply((1, H, W), maps)`` with maps ``(C, H, W)`` maps
    an image to coil images ``(C, H, W)``. The adjoint multiplies by ``conj(weights)``
    and sums over the broadcast dimensions.

    Args:
        ishape: trailing input shape.
        weights: real or complex tensor (or array).
        dtype: complex dtype of the operator; default the complex type of
            ``weights``. Real weights stay real.
    """

    def __init__(self, ishape: Sequence[int], weights, *, dtype: torch.dtype | None = None) -> None:
        ishape = _shape(ishape, "ishape")
        w = as_tensor(weights, "weights")
        if not (w.is_floating_point() or w.is_complex()):
            w = w.to(torch.get_default_dtype())
        cdt = complex_dtype_of(dtype if dtype is not None else w.dtype)
        w = w.to(cdt) if w.is_complex() else w.to(real_dtype_of(cdt))
        oshape = _trailing_broadcast(w.shape, ishape, "weights", "ishape")
        super().__init__(ishape, oshape, dtype=cdt)
        self.weights = w
        k = len(ishape)
        self._sum_dims = tuple(i - k for i in range(k) if ishape[i] == 1 and oshape[i] != 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        w = self.weights.conj() if self.weights.is_complex() else self.weights
        out = y * w
        if self._sum_dims:
            out = out.sum(dim=self._sum_dims, keepdim=True)
        return out

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        w2 = self.weights.abs().square() if self.weights.is_complex() else self.weights.square()
        if self._sum_dims:
            w2 = w2.sum(dim=self._sum_dims, keepdim=True)
        return x * w2


class Mask(Operator):
    """Keep the entries where ``mask`` is true, zero the rest (self-adjoint, idempotent).

    Args:
        shape: trailing input and output shape.
        mask: bool tensor whose trailing dims broadcast to ``shape`` (each 1 or
            equal); leading dims are batch dimensions (per-sample masks).
        dtype: complex dtype of the operator.
    """

    def __init__(self, shape: Sequence[int], mask, *, dtype: torch.dtype = torch.complex64) -> None:
        shape = _shape(shape, "shape")
        m = as_bool_mask(mask)
        got = _trailing_broadcast(m.shape, shape, "mask", "shape")
        if got != shape:
            raise InputError(f"mask: expected trailing dims broadcastable to {shape}, got {tuple(m.shape)}")
        super().__init__(shape, shape, dtype=complex_dtype_of(dtype))
        self.mask = m

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask

    _adjoint = _forward
    _normal = _forward


def _windows(big: Sequence[int], small: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(big, small))


def _check_pair(ishape, oshape, *, crop: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    ishape, oshape = _shape(ishape, "ishape"), _shape(oshape, "oshape")
    if len(ishape) != len(oshape):
        raise InputError(
            f"oshape: expected as many dims as ishape {ishape}, got {oshape}"
        )
    bad = [o > i for i, o in zip(ishape, oshape)] if crop else [o < i for i, o in zip(ishape, oshape)]
    if any(bad):
        rel = "<=" if crop else ">="
        raise InputError(f"oshape: expected every size {rel} ishape {ishape}, got {oshape}")
    return ishape, oshape


def _crop(x: torch.Tensor, big: tuple[int, ...], small: tuple[int, ...]) -> torch.Tensor:
    return x[(..., *_windows(big, small))]


def _pad(y: torch.Tensor, small: tuple[int, ...], big: tuple[int, ...]) -> torch.Tensor:
    lead = y.shape[: y.ndim - len(small)]
    out = y.new_zeros((*lead, *big))
    out[(..., *_windows(big, small))] = y
    return out


class Crop(Operator):
    """Centre crop from ``ishape`` to ``oshape`` (fastMRI convention); the adjoint zero-pads.

    Args:
        ishape: trailing input shape.
        oshape: trailing output shape, same number of dims, each size <= ``ishape``.
        dtype: complex dtype of the operator.
    """

    def __init__(self, ishape: Sequence[int], oshape: Sequence[int], *,
                 dtype: torch.dtype = torch.complex64) -> None:
        ishape, oshape = _check_pair(ishape, oshape, crop=True)
        super().__init__(ishape, oshape, dtype=complex_dtype_of(dtype))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return _crop(x, self.ishape, self.oshape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return _pad(y, self.oshape, self.ishape)


class Pad(Operator):
    """Centred zero padding from ``ishape`` to ``oshape``; the adjoint is the centre crop.

    Args:
        ishape: trailing input shape.
        oshape: trailing output shape, same number of dims, each size >= ``ishape``.
        dtype: complex dtype of the operator.
    """

    def __init__(self, ishape: Sequence[int], oshape: Sequence[int], *,
                 dtype: torch.dtype = torch.complex64) -> None:
        ishape, oshape = _check_pair(ishape, oshape, crop=False)
        super().__init__(ishape, oshape, dtype=complex_dtype_of(dtype))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pad(x, self.ishape, self.oshape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return _crop(y, self.oshape, self.ishape)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        return x
