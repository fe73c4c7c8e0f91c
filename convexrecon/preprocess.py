"""K-space preprocessing: readout-oversampling removal, centre crops and pads, and the
coil-domain steps (noise prewhitening, coil compression) re-exported from
:mod:`convexrecon.coils`.

FFTs are centred and orthonormal (the package convention), so the image a k-space
array represents is unchanged by :func:`remove_readout_oversampling` apart from the
crop of the field of view.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

import numpy as np
import torch

from convexrecon._checks import as_tensor, check_finite
from convexrecon.coils import coil_compress, prewhiten, whitening_matrix
from convexrecon.errors import InputError

__all__ = [
    "remove_readout_oversampling",
    "center_crop",
    "center_pad",
    "coil_compress",
    "prewhiten",
    "whitening_matrix",
]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _fftc(x: torch.Tensor, dim: int) -> torch.Tensor:
    x = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.fft(x, dim=dim, norm="ortho"), dim=dim)


def _ifftc(x: torch.Tensor, dim: int) -> torch.Tensor:
    x = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.ifft(x, dim=dim, norm="ortho"), dim=dim)


def remove_readout_oversampling(kspace: Any, *, axis: int = -2, factor: int = 2) -> torch.Tensor:
    """Remove readout oversampling: inverse FFT along ``axis``, keep the central
    ``n // factor`` samples of the field of view, FFT back.

    Args:
        kspace: complex k-space, tensor or numpy array, e.g. ``(*batch, C, H, W)`` with
            the readout along ``H`` (``axis=-2``, the default and the fastMRI layout).
        axis: the readout axis.
        factor: oversampling factor (integer >= 1); the readout length must be a
            multiple of it.

    Returns:
        complex tensor with ``shape[axis] == n // factor``. The orthonormal FFTs keep
        the image values, so k-space samples scale by ``sqrt(1 / factor)``.
    """
    ksp = as_tensor(kspace, "kspace")
    if not ksp.is_complex():
        raise InputError(f"kspace: expected a complex array, got dtype {ksp.dtype}")
    check_finite(ksp, "kspace")
    if not -ksp.ndim <= axis < ksp.ndim:
        raise InputError(f"axis: expected an axis of a {ksp.ndim}-D array, got {axis}")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise InputError(f"factor: expected an integer >= 1, got {factor!r}")
    n = ksp.shape[axis]
    if n % factor:
        raise InputError(
            f"kspace: expected a readout length (axis {axis}) divisible by factor={factor}, got {n}"
        )
    if factor == 1:
        return ksp.clone()
    img = _ifftc(ksp, axis)
    keep = n // factor
    start = (n - keep) // 2
    img = img.narrow(axis, start, keep)
    return _fftc(img, axis)


def _crop_starts(have: Sequence[int], want: Sequence[int], name: str) -> list[int]:
    starts = []
    for h, w in zip(have, want):
        if w > h:
            raise InputError(f"{name}: expected a crop shape no larger than {tuple(have)}, got {tuple(want)}")
        starts.append((h - w) // 2)
    return starts


def _check_shape(x: Any, shape: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise InputError(f"shape: expected a sequence of positive integers, got {shape!r}") from exc
    if not out or min(out) < 1:
        raise InputError(f"shape: expected a sequence of positive integers, got {shape!r}")
    if len(out) > x.ndim:
        raise InputError(
            f"{name}: expected at least {len(out)} dimensions for shape {out}, got shape {tuple(x.shape)}"
        )
    return out


def center_crop(x: ArrayT, shape: Sequence[int]) -> ArrayT:
    """Centre crop of the last ``len(shape)`` dimensions (fastMRI convention).

    The crop starts at ``(n - s) // 2`` on every axis, so the sample at index
    ``n // 2`` (the centre of a centred FFT) lands at ``s // 2`` when ``n - s`` is even.
    Works on tensors and numpy arrays and returns the same kind (a view).
    """
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise InputError(f"x: expected a tensor or numpy array, got {type(x).__name__}")
    want = _check_shape(x, shape, "x")
    have = tuple(x.shape[x.ndim - len(want):])
    starts = _crop_starts(have, want, "shape")
    index = (Ellipsis,) + tuple(slice(s, s + w) for s, w in zip(starts, want))
    return x[index]


def center_pad(x: ArrayT, shape: Sequence[int]) -> ArrayT:
    """Zero-pad the last ``len(shape)`` dimensions to ``shape``, centred so that
    :func:`center_crop` undoes it exactly (the adjoint of the crop)."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise InputError(f"x: expected a tensor or numpy array, got {type(x).__name__}")
    want = _check_shape(x, shape, "x")
    have = tuple(x.shape[x.ndim - len(want):])
    for h, w in zip(have, want):
        if w < h:
            raise InputError(f"shape: expected a pad shape no smaller than {have}, got {want}")
    full = tuple(x.shape[: x.ndim - len(want)]) + want
    starts = [(w - h) // 2 for h, w in zip(have, want)]
    index = (Ellipsis,) + tuple(slice(s, s + h) for s, h in zip(starts, have))
    if isinstance(x, torch.Tensor):
        out = torch.zeros(full, dtype=x.dtype, device=x.device)
    else:
        out = np.zeros(full, dtype=x.dtype)
    out[index] = x
    return out
