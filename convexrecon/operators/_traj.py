"""Validation shared by the non-Cartesian operators: trajectories, image sizes, weights."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from convexrecon._checks import as_tensor, check_finite
from convexrecon.errors import InputError

__all__ = ["check_traj", "check_im_size", "check_dcf", "check_kernel"]


def check_traj(traj, im_size: Sequence[int], name: str = "traj") -> torch.Tensor:
    """Validate a trajectory: real ``(ndim, K)``, finite, in ``[-pi, pi)``.

    The bounds are checked in the trajectory's own precision (``-pi`` and ``pi``
    rounded to its dtype). Returns the trajectory as a real tensor.
    """
    t = as_tensor(traj, name)
    if t.is_complex() or not t.is_floating_point():
        raise InputError(f"{name}: expected a real floating tensor (radians), got dtype {t.dtype}")
    ndim = len(im_size)
    if t.ndim != 2 or t.shape[0] != ndim or t.shape[1] < 1:
        raise InputError(
            f"{name}: expected shape (ndim={ndim}, K) with K >= 1, got {tuple(t.shape)}"
        )
    check_finite(t, name)
    pi = torch.tensor(math.pi, dtype=t.dtype)
    lo, hi = float(t.min()), float(t.max())
    if lo < float(-pi) or hi >= float(pi):
        raise InputError(
            f"{name}: expected radians in [-pi, pi), got values in [{lo:.6g}, {hi:.6g}] "
            "(convert grid units with convexrecon.sampling.grid_to_radians)"
        )
    return t


def check_im_size(im_size) -> tuple[int, ...]:
    try:
        size = tuple(int(s) for s in im_size)
    except (TypeError, ValueError) as exc:
        raise InputError(f"im_size: expected a sequence of ints, got {im_size!r}") from exc
    if not 1 <= len(size) <= 3 or any(s < 1 for s in size):
        raise InputError(f"im_size: expected 1 to 3 positive sizes, got {im_size!r}")
    return size


def check_dcf(dcf, k: int, rdt: torch.dtype, device) -> torch.Tensor:
    w = as_tensor(dcf, "dcf")
    if w.is_complex() or w.shape != (k,):
        raise InputError(f"dcf: expected real weights of shape ({k},), got {tuple(w.shape)} {w.dtype}")
    w = check_finite(w.to(device=device, dtype=rdt), "dcf")
    if bool((w < 0).any()):
        raise InputError(f"dcf: expected non-negative weights, got minimum {float(w.min()):.3g}")
    return w


def check_kernel(oversamp, width) -> float:
    """Check the gridding kernel's grid oversampling (a number >= 1) and width (an int
    >= 2); returns the oversampling as a float."""
    try:
        osf = float(oversamp)
    except (TypeError, ValueError) as exc:
        raise InputError(f"oversamp: expected a number >= 1, got {oversamp!r}") from exc
    if not (math.isfinite(osf) and osf >= 1.0):
        raise InputError(f"oversamp: expected a number >= 1, got {oversamp!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 2:
        raise InputError(f"width: expected an int >= 2, got {width!r}")
    return osf
