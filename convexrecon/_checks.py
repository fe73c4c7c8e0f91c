"""Small input checks shared by the whole package.

Each raises :class:`convexrecon.errors.InputError` with a message that names the
argument, the expectation and what was given.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch

from convexrecon.errors import InputError

__all__ = [
    "as_tensor",
    "check_finite",
    "check_trailing_shape",
    "check_positive",
    "check_choice",
    "complex_dtype_of",
    "real_dtype_of",
]


def as_tensor(
    value: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Convert ``value`` (tensor, numpy array or sequence) to a tensor.

    Raises InputError naming ``name`` if it cannot be converted.
    """
    if isinstance(value, torch.Tensor):
        out = value
    elif isinstance(value, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(value))
    else:
        try:
            out = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"{name}: expected a tensor or array, got {type(value).__name__}"
            ) from exc
    if dtype is not None or device is not None:
        out = out.to(device=device if device is not None else out.device,
                     dtype=dtype if dtype is not None else out.dtype)
    return out


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise InputError if ``x`` holds NaN or Inf."""
    if x.is_floating_point() or x.is_complex():
        if not bool(torch.isfinite(x).all()):
            n_bad = int((~torch.isfinite(x)).sum())
            raise InputError(f"{name}: expected finite values, found {n_bad} NaN/Inf entries")
    return x


def check_trailing_shape(x: torch.Tensor, shape: Sequence[int], name: str) -> None:
    """Raise InputError unless ``x.shape`` ends with ``shape``."""
    shape = tuple(shape)
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise InputError(
            f"{name}: expected shape (*batch, {', '.join(map(str, shape))}), "
            f"got {tuple(x.shape)}"
        )


def check_positive(value: float, name: str, *, strict: bool = True) -> float:
    """Raise InputError unless ``value`` is a finite number > 0 (>= 0 if not strict)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: expected a number, got {value!r}") from exc
    ok = np.isfinite(v) and (v > 0 if strict else v >= 0)
    if not ok:
        raise InputError(f"{name}: expected a finite number {'>' if strict else '>='} 0, got {value!r}")
    return v


def check_choice(value: str, choices: Iterable[str], name: str) -> str:
    """Raise InputError unless ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128,
               torch.complex64: torch.complex64, torch.complex128: torch.complex128}
_REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64,
            torch.float32: torch.float32, torch.float64: torch.float64}


def complex_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """complex64 for float32/complex64, complex128 for float64/complex128."""
    if dtype not in _COMPLEX_OF:
        raise InputError(f"dtype: expected a float or complex dtype, got {dtype}")
    return _COMPLEX_OF[dtype]


def real_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64/float32, float64 for complex128/float64."""
    if dtype not in _REAL_OF:
        raise InputError(f"dtype: expected a float or complex dtype, got {dtype}")
    return _REAL_OF[dtype]
