"""Pipe-Menon density compensation with a precomputed sparse gridding matrix.

The Pipe-Menon iteration ``w <- w / |G G^H w|`` needs only the gridding matrix
``G`` (``K`` points x grid cells, a scipy CSR matrix): every point touches ``width**ndim`` cells, with
the separable Kaiser-Bessel weights of torchkbnufft's kernel (``kbwidth = 2.34``,
``alpha = kbwidth * width``, order 0, distances rounded to 1/1024 of a cell as in
its kernel table) on a grid ``ceil(oversamp * N)``. ``G`` is
built once from ``(K, width**ndim)`` cell indices and weights; each iteration is
two sparse products costing ``O(K * width**ndim)``, with no FFT and no table
interpolation.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import scipy.sparse
import torch

from convexrecon.errors import InputError
from convexrecon.operators._traj import check_im_size, check_kernel, check_traj

__all__ = ["pipe_menon_dcf", "gridding_matrix"]

KB_WIDTH = 2.34  # torchkbnufft's kbwidth: alpha = KB_WIDTH * width
TABLE_OVERSAMP = 2 ** 10  # torchkbnufft's table: distances rounded to 1/1024 of a cell


@functools.lru_cache(maxsize=8)
def _kb_table(width: int) -> torch.Tensor:
    """Kaiser-Bessel weights at every distance ``m / TABLE_OVERSAMP``, ``|m| <=
    width / 2 * TABLE_OVERSAMP`` (zero at the ends), order 0, ``alpha = KB_WIDTH * width``."""
    alpha = KB_WIDTH * width
    half = int(round(width / 2 * TABLE_OVERSAMP))
    u = torch.arange(-half, half + 1, dtype=torch.float64) / half
    arg = alpha * torch.sqrt(torch.clamp(1 - u * u, min=0))
    kb = torch.special.i0(arg) / torch.special.i0(torch.tensor(alpha, dtype=torch.float64))
    return torch.where(u.abs() < 1, kb, torch.zeros((), dtype=torch.float64))


def _axis_weights(coord: torch.Tensor, n_image: int, n_grid: int, width: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell indices ``(K, width)`` and complex Kaiser-Bessel weights along one axis.

    The phase is torchkbnufft's: ``exp(i*pi*(g + (N - 1) * c) / G)`` for a point at
    grid coordinate ``g`` and an unwrapped cell ``c``. It cancels between
    neighbouring points, except across the periodic edge of the grid, where it
    decides how wrapped neighbours add up.
    """
    g = coord * (n_grid / (2 * math.pi))  # grid units, centred on 0
    first = torch.floor(g - width / 2)
    cells = first[:, None] + torch.arange(1, width + 1, dtype=g.dtype, device=g.device)
    # distances in table steps, rounded as torchkbnufft's kernel table rounds them
    steps = torch.round((g[:, None] - cells) * TABLE_OVERSAMP).long()
    table = _kb_table(width).to(g.device)
    kb = table[steps + (table.numel() - 1) // 2]
    phase = (math.pi / n_grid) * (g[:, None] + (n_image - 1) * cells)
    return torch.remainder(cells, n_grid).long(), torch.polar(kb, phase)


def gridding_matrix(traj: torch.Tensor, im_size: Sequence[int], grid_size: Sequence[int], *,
                    width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse gridding matrix ``G`` as ``(indices, weights)``, each ``(K, width**ndim)``.

    ``indices`` are flat (C-order) cells of a grid of ``grid_size``; ``weights`` are
    the products of the per-axis complex Kaiser-Bessel weights (complex128).
    """
    t = traj.to(torch.float64)
    k = t.shape[1]
    idx = torch.zeros(k, 1, dtype=torch.long, device=t.device)
    wts = torch.ones(k, 1, dtype=torch.complex128, device=t.device)
    for coord, n, m in zip(t, im_size, grid_size):
        cells, w = _axis_weights(coord, int(n), int(m), width)
        idx = (idx[:, :, None] * int(m) + cells[:, None, :]).reshape(k, -1)
        wts = (wts[:, :, None] * w[:, None, :]).reshape(k, -1)
    return idx, wts


def pipe_menon_dcf(traj, im_size: Sequence[int], *, iters: int = 20, oversamp: float = 2.0,
                   width: int = 6) -> torch.Tensor:
    """Pipe-Menon density compensation weights for ``traj``.

    Iterates ``w <- w / |G G^H w|`` with ``G`` the Kaiser-Bessel gridding matrix
    (torchkbnufft's kernel, so the weights agree with torchkbnufft's
    ``calc_density_compensation_function`` to about 1e-3), then normalises them so
    that ``sum(w) == prod(im_size)``: the point-spread function of ``A^H W A``
    (the normal of ``NUFFT(traj, im_size, dcf=w)``) then peaks at 1, as for a
    fully sampled Cartesian grid with unit weights.

    Args:
        traj: ``(ndim, K)`` radians in ``[-pi, pi)``.
        im_size: image size.
        iters: number of fixed-point iterations (>= 1).
        oversamp: grid oversampling of the gridding (>= 1).
        width: kernel width of the gridding in grid points (>= 2).

    Returns:
        ``(K,)`` real non-negative weights on the trajectory's device, in its real
        dtype (float32 for float32 input, else float64).

    The matrix holds ``K * width**ndim`` entries (about 12 bytes each, twice for its
    transpose): 1.2M entries for 32k 2-D points, but ``width**3 = 216`` per point in
    3-D, so large 3-D trajectories need a smaller ``width`` or a subset of points.
    """
    size = check_im_size(im_size)
    t = check_traj(traj, size)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters: expected an int >= 1, got {iters!r}")
    osf = check_kernel(oversamp, width)
    out_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    grid = [max(int(math.ceil(osf * n)), n) for n in size]
    idx, wts = gridding_matrix(t.cpu(), size, grid, width=width)
    k, per_point = idx.shape
    data = wts.reshape(-1).to(torch.complex64).numpy()
    cells, ptr = idx.reshape(-1).numpy(), np.arange(0, k * per_point + 1, per_point)
    g = scipy.sparse.csr_matrix((data, cells, ptr), shape=(k, math.prod(grid)))
    # the same arrays read column-wise are G^T: conjugated, G^H without a transpose
    g_h = scipy.sparse.csc_matrix((data.conj(), cells, ptr), shape=(math.prod(grid), k))
    # single precision products (memory bound; their rounding, ~1e-7, is far below
    # the 1e-3 agreement with torchkbnufft's table), double precision weights
    w = np.ones(k)
    for _ in range(iters):
        back = g @ (g_h @ w.astype(np.complex64))  # G G^H w
        w = w / np.maximum(np.abs(back).astype(np.float64), np.finfo(np.float32).tiny)
    w = torch.from_numpy(w * (math.prod(size) / w.sum()))
    return w.to(device=t.device, dtype=out_dtype)
