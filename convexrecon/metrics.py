"""Image-quality metrics in fastMRI's conventions, and the root-sum-of-squares image.

Conventions (the same as fastMRI's evaluation, checked against scikit-image):

- Metrics compare **magnitudes**: complex inputs are reduced to ``abs`` first;
  real inputs are used as given (pass magnitude images).
- Inputs are ``(H, W)`` or ``(*batch, H, W)`` (slices as leading batch dims), as
  torch tensors or numpy arrays, real or complex.
- The data range is the maximum of the reference magnitude over the whole volume
  (all slices), unless ``data_range`` is given.
- :func:`psnr` and :func:`nmse` are computed over the whole volume at once.
- :func:`ssim` is computed per slice with a 7x7 uniform window, ``K1 = 0.01``,
  ``K2 = 0.03`` and the sample covariance (scikit-image's defaults, which fastMRI
  uses), then averaged over slices. Like scikit-image, windows that would cross the
  image border are not counted.
- ``crop=(h, w)`` centre-crops both images (and the mask) before anything else
  (fastMRI crops to the reference size, e.g. 320x320).
- ``mask`` (bool, broadcastable to the images) restricts the metric to a foreground:
  PSNR and NMSE use only masked pixels; SSIM averages its map over masked pixels
  whose 7x7 window lies inside the image.

All three return Python floats.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from convexrecon._checks import as_tensor, check_finite
from convexrecon.errors import InputError
from convexrecon.operators.fft import ifftc

__all__ = ["psnr", "ssim", "nmse", "rss"]

_WIN = 7
_K1 = 0.01
_K2 = 0.03


def _magnitude(value: Any, name: str) -> torch.Tensor:
    x = as_tensor(value, name)
    if x.dtype == torch.bool or not (x.is_floating_point() or x.is_complex()):
        x = x.to(torch.float64)
    if x.ndim < 2:
        raise InputError(f"{name}: expected shape (*batch, H, W), got {tuple(x.shape)}")
    check_finite(x, name)
    x = x.abs() if x.is_complex() else x
    return x.to(torch.float64)


def _center_crop(x: torch.Tensor, crop: Sequence[int], name: str) -> torch.Tensor:
    h, w = (int(c) for c in crop)
    H, W = x.shape[-2:]
    if not (0 < h <= H and 0 < w <= W):
        raise InputError(f"crop: expected (h, w) with 0 < h <= {H} and 0 < w <= {W}, got {tuple(crop)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def _prepare(recon: Any, ref: Any, mask: Any, crop: Sequence[int] | None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    r = _magnitude(recon, "recon")
    g = _magnitude(ref, "ref")
    if r.shape != g.shape:
        raise InputError(f"recon: expected the shape of ref {tuple(g.shape)}, got {tuple(r.shape)}")
    m = None
    if mask is not None:
        m = as_tensor(mask, "mask")
        if m.dtype != torch.bool:
            raise InputError(f"mask: expected a bool array, got dtype {m.dtype}")
        try:
            m = torch.broadcast_to(m.to(r.device), r.shape)
        except RuntimeError as exc:
            raise InputError(
                f"mask: expected a shape broadcastable to {tuple(r.shape)}, got {tuple(m.shape)}"
            ) from exc
    if crop is not None:
        if len(tuple(crop)) != 2:
            raise InputError(f"crop: expected (h, w), got {crop!r}")
        r, g = _center_crop(r, crop, "recon"), _center_crop(g, crop, "ref")
        m = _center_crop(m, crop, "mask") if m is not None else None
    if m is not None and not bool(m.any()):
        raise InputError("mask: expected at least one True pixel, got none")
    return r, g, m


def _range(g: torch.Tensor, data_range: float | None) -> float:
    if data_range is None:
        dr = float(g.max())
    else:
        dr = float(data_range)
    if not math.isfinite(dr) or dr <= 0:
        raise InputError(f"data_range: expected a finite number > 0 (reference maximum), got {dr!r}")
    return dr


def nmse(recon: Any, ref: Any, *, mask: Any = None, crop: Sequence[int] | None = None) -> float:
    """Normalised mean squared error ``||ref - recon||^2 / ||ref||^2`` of magnitudes.

    Args:
        recon: the reconstruction, ``(*batch, H, W)``, real or complex.
        ref: the reference, the same shape.
        mask: optional bool foreground mask broadcastable to the images.
        crop: optional centre crop ``(h, w)`` applied first.
    """
    r, g, m = _prepare(recon, ref, mask, crop)
    if m is not None:
        r, g = r[m], g[m]
    den = float(torch.sum(g * g))
    if den == 0.0:
        raise InputError("ref: expected a nonzero reference, got all zeros")
    return float(torch.sum((g - r) ** 2)) / den


def psnr(recon: Any, ref: Any, *, data_range: float | None = None, mask: Any = None,
         crop: Sequence[int] | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    The MSE is over the whole volume (masked pixels only when ``mask`` is given);
    ``data_range`` defaults to the maximum reference magnitude of the volume
    (after cropping). Returns ``inf`` for identical images.
    """
    r, g, m = _prepare(recon, ref, mask, crop)
    dr = _range(g, data_range)
    if m is not None:
        r, g = r[m], g[m]
    mse = float(torch.mean((g - r) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(dr * dr / mse)


def _ssim_map(x: torch.Tensor, y: torch.Tensor, dr: float) -> torch.Tensor:
    """SSIM map of the valid (fully inside) 7x7 windows: ``(B, H-6, W-6)``."""
    n = _WIN * _WIN
    cov_norm = n / (n - 1.0)

    def mean(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(z[:, None], _WIN, stride=1)[:, 0]

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (_K1 * dr) ** 2, (_K2 * dr) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return num / den


def ssim(recon: Any, ref: Any, *, data_range: float | None = None, mask: Any = None,
         crop: Sequence[int] | None = None) -> float:
    """Structural similarity of magnitudes, per slice, averaged over slices.

    A 7x7 uniform window with ``K1 = 0.01``, ``K2 = 0.03`` and sample covariance
    (scikit-image's ``structural_similarity`` defaults, as fastMRI uses), with one
    ``data_range`` for the whole volume (default: the reference maximum). Each slice's
    SSIM is the mean of its map over windows inside the image (and, with ``mask``,
    centred on a masked pixel; a slice with no such pixel is skipped).
    """
    r, g, m = _prepare(recon, ref, mask, crop)
    dr = _range(g, data_range)
    H, W = g.shape[-2:]
    if H < _WIN or W < _WIN:
        raise InputError(f"ref: expected images of at least {_WIN}x{_WIN} for SSIM, got {H}x{W}")
    smap = _ssim_map(r.reshape(-1, H, W), g.reshape(-1, H, W), dr)
    p = (_WIN - 1) // 2
    if m is None:
        return float(smap.mean(dim=(-2, -1)).mean())
    mm = m.reshape(-1, H, W)[:, p:H - p, p:W - p]
    counts = mm.sum(dim=(-2, -1))
    keep = counts > 0
    if not bool(keep.any()):
        raise InputError(f"mask: expected a masked pixel at least {p} pixels inside the image, got none")
    per_slice = (smap * mm).sum(dim=(-2, -1))[keep] / counts[keep]
    return float(per_slice.mean())


def rss(x: Any, *, coil_axis: int = -3, kspace: bool = False) -> torch.Tensor:
    """Root-sum-of-squares coil combination ``sqrt(sum_c |x_c|^2)``.

    Args:
        x: coil images (or k-space with ``kspace=True``), e.g. ``(*batch, C, H, W)``,
            tensor or numpy array.
        coil_axis: the coil axis (default ``-3``, the package's layout).
        kspace: when True, ``x`` is Cartesian k-space and is first transformed to
            coil images by the centred orthonormal inverse FFT over the last two axes.

    Returns:
        A real tensor with the coil axis removed (float64 for complex128/float64
        input, float32 otherwise).
    """
    t = as_tensor(x, "x")
    if not (t.is_floating_point() or t.is_complex()):
        raise InputError(f"x: expected a float or complex array, got dtype {t.dtype}")
    if not -t.ndim <= coil_axis < t.ndim:
        raise InputError(f"coil_axis: expected an axis of an array with {t.ndim} dims, got {coil_axis}")
    if kspace:
        if t.ndim < 2:
            raise InputError(f"x: expected k-space (*batch, C, H, W), got shape {tuple(t.shape)}")
        t = ifftc(t, (-2, -1))
    mag2 = t.real ** 2 + t.imag ** 2 if t.is_complex() else t * t
    return torch.sqrt(mag2.sum(dim=coil_axis))
