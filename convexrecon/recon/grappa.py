"""GRAPPA: k-space parallel imaging for 1-D Cartesian undersampling.

The phase-encode axis is the last axis (``-1``, fastMRI's columns) and the readout
axis is ``-2``; k-space is ``(*batch, C, H, W)``. Each missing column is predicted,
for all coils at once, from its nearest acquired columns (``kernel[1]`` of them,
half on each side where possible) over ``kernel[0]`` neighbouring readout points, by
weights fitted with regularised least squares on a fully sampled calibration block.

Sampling need not be regular: missing columns are grouped by the offsets of their
source columns (the kernel *geometry*); one set of weights is fitted per geometry.
A geometry wider than the calibration block drops its farthest source columns until
it fits; a column with no usable source stays zero. Acquired columns are never
changed. Every slice of the batch is calibrated and filled on its own.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.operators.fft import ifftc
from convexrecon.recon._common import (checked_cartesian, combine, complex_kspace, parse_maps,
                                       sampled_columns)

__all__ = ["grappa", "grappa_kspace", "find_calibration"]

_LAYOUT = "(*batch, C, H, W)"
_OVERDETERMINED = 3


def find_calibration(kspace: Any, *, mask: Any = None) -> torch.Tensor:
    """The fully sampled central block of columns of 1-D undersampled k-space.

    Returns ``(*batch, C, H, Wc)``: the longest contiguous run of acquired columns
    around the centre ``W // 2`` (the shortest over the batch). Raises InputError if
    the centre column is not acquired.
    """
    k = complex_kspace(kspace, min_ndim=3, layout=_LAYOUT)
    return _calibration(k, sampled_columns(k, mask, axis=-1))


def _calibration(k: torch.Tensor, acquired: torch.Tensor) -> torch.Tensor:
    """:func:`find_calibration` on checked k-space and its ``(*batch, W)`` column profile."""
    prof = acquired.reshape(-1, k.shape[-1])
    c = k.shape[-1] // 2
    if not bool(prof[:, c].all()):
        raise InputError("calib: expected the centre column W // 2 to be acquired to find the "
                         "calibration region, got an unsampled centre; pass calib explicitly")
    lo, hi = 0, k.shape[-1] - 1
    for p in prof:
        a = c
        while a - 1 >= 0 and bool(p[a - 1]):
            a -= 1
        b = c
        while b + 1 < k.shape[-1] and bool(p[b + 1]):
            b += 1
        lo, hi = max(lo, a), min(hi, b)
    return k[..., lo:hi + 1]


def _geometry(x: int, acquired: list[int], n_src: int, width: int, *, n_rows: int,
              n_coils: int, kh: int) -> tuple[int, ...]:
    """Offsets of the source columns of missing column ``x``.

    The farthest sources are dropped until the geometry fits in the calibration
    width with at least ``_OVERDETERMINED`` times as many training equations as
    unknowns per target coil.
    """
    left = [a - x for a in reversed(acquired) if a < x]
    right = [a - x for a in acquired if a > x]
    nl = min(len(left), max(n_src // 2, n_src - len(right)))
    nr = min(len(right), n_src - nl)
    offs = sorted(left[:nl] + right[:nr])
    def ok(o: list[int]) -> bool:
        n_cols = width - (max(max(o), 0) - min(min(o), 0))
        return n_cols >= 1 and n_cols * n_rows >= _OVERDETERMINED * n_coils * len(o) * kh

    while offs and not ok(offs):
        offs.remove(max(offs, key=abs))
    return tuple(offs)


def _features(k: torch.Tensor, cols: torch.Tensor, offsets: Sequence[int], kh: int) -> torch.Tensor:
    """Source features ``(R - kh + 1, m, C * n_o * kh)`` for target columns ``cols``.

    ``k`` is ``(C, R, W)``; output row ``r`` is centred on input row ``r + kh // 2``.
    """
    off = torch.tensor(offsets, dtype=torch.long, device=k.device)
    src = k[:, :, cols[:, None] + off[None, :]]  # (C, R, m, n_o)
    rows = k.shape[1] - kh + 1
    stack = torch.stack([src[:, d:d + rows] for d in range(kh)], dim=-1)  # (C, rows, m, n_o, kh)
    return stack.permute(1, 2, 0, 3, 4).reshape(rows, cols.numel(), -1)


def _fit(calib: torch.Tensor, offsets: Sequence[int], kh: int, reg: float) -> torch.Tensor:
    """Weights ``(C * n_o * kh, C)`` mapping source features to the target column."""
    n_c, h_c, w_c = calib.shape
    lo, hi = max(0, -min(offsets)), w_c - max(0, max(offsets))
    cols = torch.arange(lo, hi, device=calib.device)
    feats = _features(calib, cols, offsets, kh).reshape(-1, n_c * len(offsets) * kh)
    p = kh // 2
    target = calib[:, p:h_c - p, lo:hi].permute(1, 2, 0).reshape(-1, n_c)
    gram = feats.mH @ feats
    lam = reg * float(gram.diagonal().real.mean()) + torch.finfo(feats.real.dtype).tiny
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + lam * eye, feats.mH @ target)


def _fill_slice(k: torch.Tensor, calib: torch.Tensor, acquired: torch.Tensor,
                kh: int, n_src: int, reg: float, max_distance: int) -> torch.Tensor:
    n_c, h, w = k.shape
    acq = [int(i) for i in torch.nonzero(acquired).flatten()]
    if not acq:
        raise InputError("kspace: expected at least one acquired column per slice, got none")
    groups: dict[tuple[int, ...], list[int]] = {}
    for x in range(w):
        if not bool(acquired[x]) and min(abs(a - x) for a in acq) <= max_distance:
            geo = _geometry(x, acq, n_src, calib.shape[-1], n_rows=calib.shape[-2] - kh + 1,
                            n_coils=n_c, kh=kh)
            groups.setdefault(geo, []).append(x)
    out = k.clone()
    p = kh // 2
    padded = torch.nn.functional.pad(k, (0, 0, p, p))
    for offsets, xs in groups.items():
        if not offsets:
            continue
        weights = _fit(calib, offsets, kh, reg)
        cols = torch.tensor(xs, dtype=torch.long, device=k.device)
        pred = _features(padded, cols, offsets, kh) @ weights  # (H, m, C)
        out[:, :, cols] = pred.permute(2, 0, 1)
    return out


def grappa_kspace(kspace: Any, calib: Any = None, *, kernel: Sequence[int] = (5, 4),
                  mask: Any = None, reg: float = 1e-3, max_distance: int = 2) -> torch.Tensor:
    """Fill the missing phase-encode columns of 1-D undersampled k-space by GRAPPA.

    Args:
        kspace: ``(*batch, C, H, W)`` complex, undersampled along the last axis
            (missing columns are zero unless ``mask`` says which are acquired).
        calib: fully sampled calibration k-space ``(*batch, C, Hc, Wc)`` (or without
            batch dims, shared). ``None``: the contiguous acquired block around the
            centre column (see :func:`find_calibration`). It is not inserted into the
            output.
        kernel: ``(readout points, source columns)``: an odd number of neighbouring
            readout points and the number of nearest acquired columns used (split
            between both sides where possible).
        mask: optional bool mask ``(W,)`` or broadcastable to ``(*batch, H, W)``,
            constant along the readout axis; default: nonzero columns of ``kspace``.
        reg: Tikhonov regularisation of the weight fit, relative to the mean
            diagonal of the normal matrix.
        max_distance: columns farther than this from every acquired column are
            left zero (extrapolating GRAPPA weights over wide gaps amplifies
            errors; regular sampling up to R = 5 has no gap wider than 2).

    Returns:
        The filled k-space, the shape and dtype of ``kspace``.
    """
    k = complex_kspace(kspace, min_ndim=3, layout=_LAYOUT)
    try:
        kh, n_src = (int(v) for v in kernel)
    except (TypeError, ValueError) as exc:
        raise InputError(f"kernel: expected (readout points, source columns), got {kernel!r}") from exc
    if kh < 1 or kh % 2 == 0 or n_src < 1:
        raise InputError(f"kernel: expected an odd number of readout points >= 1 and >= 1 source "
                         f"columns, got {tuple(kernel)}")
    reg = check_positive(reg, "reg", strict=False)
    acquired = sampled_columns(k, mask, axis=-1)
    if calib is None:
        cal = _calibration(k, acquired)
    else:
        cal = complex_kspace(calib, min_ndim=3, layout=_LAYOUT).to(device=k.device, dtype=k.dtype)
    if cal.shape[-3] != k.shape[-3]:
        raise InputError(f"calib: expected {k.shape[-3]} coils like kspace, got shape {tuple(cal.shape)}")
    if cal.shape[-2] < kh:
        raise InputError(f"calib: expected at least kernel[0]={kh} readout points, got shape {tuple(cal.shape)}")
    batch = tuple(k.shape[:-3])
    try:
        cal = torch.broadcast_to(cal, (*batch, *cal.shape[-3:]))
    except RuntimeError as exc:
        raise InputError(f"calib: expected batch dims broadcastable to {batch}, got {tuple(cal.shape)}") from exc
    n_c, h, w = k.shape[-3:]
    flat_k = k.reshape(-1, n_c, h, w)
    flat_cal = cal.reshape(-1, *cal.shape[-3:])
    flat_acq = acquired.reshape(-1, w)
    if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 1:
        raise InputError(f"max_distance: expected an int >= 1, got {max_distance!r}")
    out = [_fill_slice(flat_k[i], flat_cal[i], flat_acq[i], kh, n_src, reg, max_distance)
           for i in range(flat_k.shape[0])]
    return torch.stack(out).reshape(k.shape)


def grappa(kspace: Any, calib: Any = None, *, kernel: Sequence[int] = (5, 4), mask: Any = None,
           maps: Any = None, reg: float = 1e-3, max_distance: int = 2) -> torch.Tensor:
    """GRAPPA reconstruction of 1-D undersampled Cartesian k-space, coil-combined.

    Fills the k-space with :func:`grappa_kspace` (same arguments), transforms each
    coil with the centred orthonormal inverse FFT and combines the coils:

    - with ``maps`` ``(*batch, C, H, W)``: ``sum_c conj(S_c) x_c``, a **complex** image;
    - without: root-sum-of-squares, a **real** non-negative image (for the coil images
      themselves use ``ifftc(grappa_kspace(...))``).

    Returns ``(*batch, H, W)``.
    """
    filled = grappa_kspace(kspace, calib, kernel=kernel, mask=mask, reg=reg,
                           max_distance=max_distance)
    coil_images = ifftc(filled, (-2, -1))
    if maps is not None:
        maps = parse_maps(maps, checked_cartesian(filled))
    return combine(coil_images, maps)
