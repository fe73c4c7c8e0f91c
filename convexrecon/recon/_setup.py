"""The scaled encoding problem shared by the iterative reconstructions.

Scaling (recorded per slice, so that a batch of slices is the same as each slice on
its own, and so that outputs are rescaled to the input's scale):

- **operator scale** ``s_b = sqrt(lambda_max(A_b^H A_b))`` of slice ``b`` (power
  method started from ``A^H y``); the scaled operator is ``A_s = A @ diag(1 / s_b)``
  and has ``lambda_max(A_s.N) = 1``, so a unit step is valid;
- **data scale** ``d_b`` = the 99th percentile of ``|A_s^H y_b|`` over the image
  (the zero-filled image of the scaled problem); the scaled data is ``y_s = y / d_b``.

The scaled solution ``x_s`` then has intensities of order 1 on every dataset, so a
regularisation weight means the same thing whatever the matrix size, coil count or
scanner scale. It maps back by ``x = x_s * d_b / s_b``.

Sizes a wavelet cannot take are handled by reconstructing on a padded grid with the
centre crop folded into the encoding operator, ``A = Sense @ Crop(padded -> image)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.recon._common import Data, parse, parse_maps

__all__ = ["Scaled", "prepare", "encoding", "default_maps", "PERCENTILE"]

PERCENTILE = 0.99
_POWER_ITERS = 60
_POWER_TOL = 1e-5


@dataclass
class Scaled:
    """The scaled problem ``A_s x = y_s`` and how to map its solution back.

    Attributes:
        data: the parsed input.
        maps: coil maps ``(*batch, C, H, W)``.
        op: the scaled operator on the (possibly padded) grid ``grid``.
        y: the scaled data ``y / d_b``.
        op_scale: ``s_b`` per slice, shape ``batch``.
        data_scale: ``d_b`` per slice, shape ``batch``.
        grid: the reconstruction grid (``im_size`` or padded).
    """

    data: Data
    maps: torch.Tensor
    op: Operator
    y: torch.Tensor
    op_scale: torch.Tensor
    data_scale: torch.Tensor
    grid: tuple[int, int]

    def _image_batch(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(*t.shape, 1, 1)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-crop an image on ``grid`` to the data's image size."""
        (gh, gw), (h, w) = self.grid, self.data.im_size
        top, left = (gh - h) // 2, (gw - w) // 2
        return x[..., top:top + h, left:left + w]

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """The solution of the scaled problem at the input's scale, cropped."""
        factor = self._image_batch(self.data_scale / self.op_scale).to(x.dtype)
        return self.crop(x) * factor

    def with_sampling(self, mask_or_traj: torch.Tensor, y: torch.Tensor) -> "Scaled":
        """The same scales on other sampling (a subset), with scaled data ``y``."""
        data = Data(kspace=y, mask=mask_or_traj if self.data.cartesian else None,
                    traj=None if self.data.cartesian else mask_or_traj,
                    im_size=self.data.im_size, batch=self.data.batch)
        op = encoding(data, self.maps, self.grid, scale=self.op_scale)
        return Scaled(data=data, maps=self.maps, op=op, y=y, op_scale=self.op_scale,
                      data_scale=self.data_scale, grid=self.grid)


def calibration_width(mask: torch.Tensor, *, limit: int = 24) -> int:
    """Side of the largest centred fully sampled square of ``mask`` (all slices), <= limit."""
    h, w = mask.shape[-2:]
    flat = mask.reshape(-1, h, w)
    best = 0
    for n in range(1, min(limit, h, w) + 1):
        top, left = h // 2 - n // 2, w // 2 - n // 2
        if not bool(flat[:, top:top + n, left:left + n].all()):
            break
        best = n
    return best


def default_maps(data: Data, *, device=None) -> torch.Tensor:
    """ESPIRiT maps (Cartesian) or low-resolution maps (non-Cartesian).

    ESPIRiT calibrates on the largest centred fully sampled square of the mask (at
    most 24 wide, at least 8).
    """
    from convexrecon import coils

    if data.cartesian:
        width = calibration_width(data.mask)
        if width < 8:
            raise InputError(f"maps: expected a fully sampled centre of at least 8x8 k-space "
                             f"samples to estimate ESPIRiT maps, got {width}x{width}; pass maps")
        return coils.espirit(data.kspace, calib_width=width, kernel_width=min(6, width - 2),
                             device=device).to(data.kspace.dtype)
    return coils.lowres_maps(data.kspace, data.traj, data.im_size, device=device).to(data.kspace.dtype)


def encoding(data: Data, maps: torch.Tensor, grid: Sequence[int], *,
             scale: torch.Tensor | None = None) -> Operator:
    """``Sense`` / ``NonCartesianSense`` on ``grid`` (crop folded in), times ``1/scale``."""
    from convexrecon.operators.elementwise import Crop

    grid = tuple(int(g) for g in grid)
    if data.cartesian:
        from convexrecon.operators.sense import Sense

        base = Sense(maps, data.mask, dtype=data.kspace.dtype)
    else:
        from convexrecon.operators.noncartesian import NonCartesianSense

        base = NonCartesianSense(maps, data.traj, dtype=data.kspace.dtype)
    op = base if grid == tuple(data.im_size) else base @ Crop(grid, data.im_size, dtype=base.dtype)
    return op if scale is None else _scaled(op, grid, scale)


def _scaled(op: Operator, grid: Sequence[int], scale: torch.Tensor) -> Operator:
    """``op @ diag(1 / scale_b)`` (one scale per slice)."""
    from convexrecon.operators.elementwise import Multiply

    w = (1.0 / scale).reshape(*scale.shape, 1, 1)
    return op @ Multiply(tuple(grid), w, dtype=op.dtype)


def _slice_norms(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=(-2, -1))


def _power(op: Operator, x: torch.Tensor) -> torch.Tensor:
    """Per-slice largest eigenvalue of ``op.N`` started from ``x`` ``(*batch, *grid)``."""
    n = _slice_norms(x)
    x = x / n.clamp_min(torch.finfo(n.dtype).tiny)[..., None, None]
    lam = torch.zeros_like(n)
    for _ in range(_POWER_ITERS):
        z = op.normal(x)
        new = _slice_norms(z)
        x = z / new.clamp_min(torch.finfo(n.dtype).tiny)[..., None, None]
        done = bool(((new - lam).abs() <= _POWER_TOL * new).all())
        lam = new
        if done:
            break
    return lam


def grid_for(im_size: Sequence[int], multiple: int) -> tuple[int, int]:
    """The smallest grid >= ``im_size`` whose sizes divide by ``multiple``."""
    return tuple(int(math.ceil(n / multiple) * multiple) for n in im_size)  # type: ignore[return-value]


def prepare(kspace: Any, maps: Any, mask_or_traj: Any, *,
            multiple: int | Callable[[tuple[int, int]], int] = 1,
            im_size: Sequence[int] | None = None, device=None) -> Scaled:
    """Parse the input, build the encoding operator and scale the problem.

    Args:
        kspace, maps, mask_or_traj: as the public builders take them.
        multiple: the reconstruction grid's sizes must divide by this (wavelets), or
            a function of the image size giving it.
        im_size: image size for non-Cartesian data without maps.
        device: where to compute (default: that of ``kspace``).
    """
    maps_shape = None if maps is None else tuple(getattr(maps, "shape", ()))
    data = parse(kspace, mask_or_traj, im_size=im_size, maps_shape=maps_shape, device=device)
    m = default_maps(data, device=data.kspace.device) if maps is None else parse_maps(maps, data)
    if callable(multiple):
        multiple = multiple(data.im_size)
    grid = grid_for(data.im_size, multiple)
    base = encoding(data, m, grid)
    with torch.no_grad():
        y = data.kspace
        if data.cartesian:
            y = y * data.mask.unsqueeze(-3)
        aty = base.adjoint(y)
        if aty.ndim == 2:
            aty = aty.expand(*data.batch, *grid)
        lam = _power(base, aty.clone())
        if not bool((lam > 0).all()):
            raise InputError("maps: expected coil maps and sampling with a nonzero encoding "
                             "operator for every slice, got lambda_max(A.N) = 0")
        s = torch.sqrt(lam)
        zf = aty / s.reshape(*s.shape, 1, 1).to(aty.dtype)
        (gh, gw), (h, w) = grid, data.im_size
        top, left = (gh - h) // 2, (gw - w) // 2
        mag = zf[..., top:top + h, left:left + w].abs().reshape(*data.batch, -1)
        d = torch.quantile(mag.to(torch.float64), PERCENTILE, dim=-1).to(s.dtype)
    if not bool((d > 0).all()):
        raise InputError("kspace: expected nonzero measured data in every slice, got a slice "
                         "whose zero-filled image is zero")
    op = _scaled(base, grid, s)  # the same operator, not built (and checked) again
    y_s = y / d.reshape(*d.shape, *([1] * (y.ndim - d.ndim))).to(y.dtype)
    return Scaled(data=data, maps=m, op=op, y=y_s, op_scale=s, data_scale=d, grid=grid)
