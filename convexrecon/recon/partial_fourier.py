"""Partial-Fourier reconstruction of asymmetrically sampled k-space: POCS and homodyne.

Asymmetric data (an asymmetric echo along the readout axis ``-2`` by default, or
partial Fourier along the phase-encode axis ``-1``) sample one contiguous band
``[lo, hi]`` of the chosen axis that contains the centre ``N // 2`` but lacks one
side. Both methods use the conjugate symmetry of a real-valued image:

- the **symmetric band** ``[c - s, c + s]`` around the centre ``c = N // 2``,
  tapered with a Hann window, gives a low-resolution phase ``phi`` per coil;
- :func:`pocs` alternates ``x <- |x| exp(i phi)`` with restoring the measured
  samples (projection onto convex sets), returning complex coil images that agree
  with the data;
- :func:`homodyne` weighs the band with a ramp (0 at the missing edge, 1 at the
  centre, 2 at the far edge, 2 beyond the symmetric band, so that mirrored weights
  sum to 2), transforms, and keeps the real part after removing ``phi``; the coil
  image is that real image times ``exp(i phi)``.

Coil images are combined like :func:`convexrecon.recon.grappa`: with ``maps`` to a
complex image ``sum_c conj(S_c) x_c``, otherwise by root-sum-of-squares (real).
k-space is ``(*batch, C, H, W)``; the sampled band must be the same for every slice.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from convexrecon.errors import InputError
from convexrecon.operators.fft import fftc, ifftc
from convexrecon.recon._common import (checked_cartesian, combine, complex_kspace, parse_maps,
                                       sampled_columns)

__all__ = ["pocs", "homodyne"]

_LAYOUT = "(*batch, C, H, W)"


def _band(k: torch.Tensor, mask: Any, axis: int) -> tuple[int, int]:
    """The sampled band ``[lo, hi]`` along ``axis`` (shared by every slice)."""
    prof = sampled_columns(k, mask, axis=axis).reshape(-1, k.shape[axis]).any(dim=0)
    idx = torch.nonzero(prof).flatten()
    if idx.numel() == 0:
        raise InputError("kspace: expected sampled k-space, got all zeros")
    lo, hi = int(idx[0]), int(idx[-1])
    if int(idx.numel()) != hi - lo + 1:
        raise InputError(f"kspace: expected one contiguous sampled band along axis {axis} "
                         f"(partial Fourier), got gaps between {lo} and {hi}")
    c = k.shape[axis] // 2
    if not lo < c < hi:
        raise InputError(f"kspace: expected the sampled band [{lo}, {hi}] along axis {axis} to "
                         f"contain the centre {c} with samples on both sides, got otherwise")
    return lo, hi


def _shape_along(w: torch.Tensor, axis: int) -> torch.Tensor:
    return w if axis == -1 else w[:, None]


def _setup(kspace: Any, mask: Any, axis: int) -> tuple[torch.Tensor, int, int, int]:
    if axis not in (-2, -1):
        raise InputError(f"axis: expected -2 (readout) or -1 (phase encode), got {axis!r}")
    k = complex_kspace(kspace, min_ndim=3, layout=_LAYOUT)
    lo, hi = _band(k, mask, axis)
    c = k.shape[axis] // 2
    return k, lo, hi, c


def _phase(k: torch.Tensor, lo: int, hi: int, c: int, axis: int) -> torch.Tensor:
    """Unit-modulus low-resolution phase ``exp(i phi)`` from the symmetric band."""
    n = k.shape[axis]
    s = min(c - lo, hi - c)
    j = torch.arange(n, device=k.device, dtype=k.real.dtype)
    win = torch.where((j - c).abs() <= s, 0.5 + 0.5 * torch.cos(math.pi * (j - c) / (s + 1)),
                      torch.zeros_like(j))
    low = ifftc(k * _shape_along(win, axis).to(k.dtype), (-2, -1))
    mag = low.abs()
    return torch.where(mag > 0, low / mag.clamp_min(torch.finfo(mag.dtype).tiny), torch.ones_like(low))


def _maps(maps: Any, k: torch.Tensor) -> torch.Tensor | None:
    return None if maps is None else parse_maps(maps, checked_cartesian(k))


def pocs(kspace: Any, *, axis: int = -2, iters: int = 10, mask: Any = None,
         maps: Any = None) -> torch.Tensor:
    """POCS partial-Fourier reconstruction (see the module docstring).

    Args:
        kspace: ``(*batch, C, H, W)`` complex, sampled in one contiguous band along
            ``axis`` that contains the centre (the rest zero or masked out).
        axis: the asymmetrically sampled axis: ``-2`` (readout, asymmetric echo) or
            ``-1`` (phase encode).
        iters: number of POCS iterations (>= 1).
        mask: optional bool mask (``(N,)`` along ``axis`` or broadcastable to
            ``(*batch, H, W)``, constant along the other axis); default: nonzero
            k-space.
        maps: optional coil maps ``(*batch, C, H, W)`` for a complex combination;
            without them the result is the root-sum-of-squares (real).

    Returns:
        The image ``(*batch, H, W)``.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters: expected an int >= 1, got {iters!r}")
    k, lo, hi, c = _setup(kspace, mask, axis)
    sampled = torch.zeros(k.shape[axis], dtype=torch.bool, device=k.device)
    sampled[lo:hi + 1] = True
    keep = _shape_along(sampled, axis)
    measured = torch.where(keep, k, torch.zeros_like(k))
    phase = _phase(measured, lo, hi, c, axis)
    x = ifftc(measured, (-2, -1))
    for _ in range(iters):
        est = fftc(x.abs() * phase, (-2, -1))
        x = ifftc(torch.where(keep, measured, est), (-2, -1))
    return combine(x, _maps(maps, k))


def homodyne(kspace: Any, *, axis: int = -2, mask: Any = None, maps: Any = None) -> torch.Tensor:
    """Homodyne partial-Fourier reconstruction (see the module docstring).

    Arguments as :func:`pocs` (without ``iters``). Returns ``(*batch, H, W)``: complex
    with ``maps``, else the root-sum-of-squares of the coil images (real).
    """
    k, lo, hi, c = _setup(kspace, mask, axis)
    n = k.shape[axis]
    s = min(c - lo, hi - c)
    j = torch.arange(n, device=k.device, dtype=k.real.dtype)
    # +1 when the extra samples lie above the centre, -1 when below
    sign = 1.0 if hi - c >= c - lo else -1.0
    ramp = 1.0 + sign * (j - c) / (s + 1)
    w = torch.where((j - c).abs() <= s, ramp, torch.zeros_like(j))
    extra = (j >= lo) & (j <= hi) & ((j - c).abs() > s)
    w = torch.where(extra, torch.full_like(j, 2.0), w)
    w = torch.where((j < lo) | (j > hi), torch.zeros_like(j), w)
    measured_phase = _phase(k, lo, hi, c, axis)
    img = ifftc(k * _shape_along(w, axis).to(k.dtype), (-2, -1))
    real = (img * measured_phase.conj()).real
    return combine(real.to(k.dtype) * measured_phase, _maps(maps, k))
