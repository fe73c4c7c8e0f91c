"""Image transforms of the training data: complex <-> real channels, flips, crops,
area resampling, padding and the smooth random phase.

This module depends only on torch, numpy and :mod:`convexrecon.errors` (no operator
import), so :mod:`convexrecon.operators.conv` can re-export the channel functions
without an import cycle.

Randomised transforms take a ``numpy.random.Generator``; they never touch global
random state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from convexrecon.errors import InputError

__all__ = [
    "complex_to_channels", "channels_to_complex", "pad_to_square", "resize_area",
    "random_flip", "random_crop", "smooth_phase",
]


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(N, C, H, W)`` (or ``(N, H, W)``) -> real ``(N, 2C, H, W)``.

    Channel ``2c`` is the real part and ``2c + 1`` the imaginary part of channel ``c``.
    A real input is returned unchanged.
    """
    if not x.is_complex():
        return x
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise InputError(f"complex_to_channels: expected (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    return torch.view_as_real(x).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, w)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels`: real ``(N, 2C, H, W)`` -> complex ``(N, C, H, W)``."""
    if x.ndim != 4 or x.shape[1] % 2:
        raise InputError(f"channels_to_complex: expected (N, 2C, H, W), got {tuple(x.shape)}")
    n, c2, h, w = x.shape
    y = x.reshape(n, c2 // 2, 2, h, w).permute(0, 1, 3, 4, 2).contiguous()
    return torch.view_as_complex(y)


def _image2d(img: np.ndarray, name: str = "image") -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 2 or min(a.shape) < 1:
        raise InputError(f"{name}: expected a 2-D (H, W) array, got shape {a.shape}")
    return a


def pad_to_square(img: np.ndarray, side: int | None = None) -> np.ndarray:
    """Centred zero padding of a 2-D image to ``side x side`` (default: the larger
    side). Larger images are centre cropped along the axes that exceed ``side``."""
    a = _image2d(img)
    side = max(a.shape) if side is None else int(side)
    if side < 1:
        raise InputError(f"side: expected an int >= 1, got {side!r}")
    h, w = a.shape
    t, l = (h - side) // 2, (w - side) // 2
    if t > 0:
        a, h, t = a[t:t + side], side, 0
    if l > 0:
        a, w, l = a[:, l:l + side], side, 0
    out = np.zeros((side, side), dtype=a.dtype)
    t, l = (side - h) // 2, (side - w) // 2
    out[t:t + h, l:l + w] = a
    return out


def resize_area(img: np.ndarray, size: int) -> np.ndarray:
    """Resample a square 2-D image to ``size x size`` by area averaging (adaptive
    average pooling; equal to block averaging when ``size`` divides the side).
    Upsampling (``size`` larger than the side) uses bilinear interpolation."""
    a = _image2d(img)
    size = int(size)
    if size < 1:
        raise InputError(f"size: expected an int >= 1, got {size!r}")
    if a.shape == (size, size):
        return a.copy()
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))[None, None]
    if size <= min(a.shape):
        out = F.adaptive_avg_pool2d(t, (size, size))
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def random_flip(img: np.ndarray, rng: np.random.Generator, *, prob: float = 0.5) -> np.ndarray:
    """Flip left-right and, independently, up-down, each with probability ``prob``."""
    a = _image2d(img)
    if not 0 <= prob <= 1:
        raise InputError(f"prob: expected a number in [0, 1], got {prob!r}")
    lr, ud = rng.random(2) < prob
    if lr:
        a = a[:, ::-1]
    if ud:
        a = a[::-1]
    return np.ascontiguousarray(a)


def random_crop(img: np.ndarray, rng: np.random.Generator, *,
                scale: tuple[float, float] = (0.8, 1.0)) -> np.ndarray:
    """A random square crop of a square image: side ``round(s * N)`` with ``s``
    uniform in ``scale``, at a uniformly random position."""
    a = _image2d(img)
    lo, hi = (float(v) for v in scale)
    if not 0 < lo <= hi <= 1:
        raise InputError(f"scale: expected 0 < lo <= hi <= 1, got {scale!r}")
    n = min(a.shape)
    side = max(1, min(n, int(round(rng.uniform(lo, hi) * n))))
    t = int(rng.integers(0, a.shape[0] - side + 1))
    l = int(rng.integers(0, a.shape[1] - side + 1))
    return a[t:t + side, l:l + side].copy()


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, *,
                 strength: float = 0.5) -> np.ndarray:
    """A smooth random phase map (radians) on ``(H, W)``: a random quadratic in the
    normalised coordinates ``x, y`` in [-1, 1) with coefficients N(0, strength^2),
    plus a constant uniform in [-pi, pi) (the model of the named problems,
    ``convexrecon.problems._data.smooth_phase``)."""
    h, w = (int(s) for s in shape)
    y = (np.arange(h) - h // 2) / (h / 2)
    x = (np.arange(w) - w // 2) / (w / 2)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    c = rng.normal(0.0, strength, size=5)
    return (rng.uniform(-math.pi, math.pi) + c[0] * xx + c[1] * yy + c[2] * xx * yy
            + c[3] * xx ** 2 + c[4] * yy ** 2)
