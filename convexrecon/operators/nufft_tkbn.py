"""torchkbnufft backend of :class:`~convexrecon.operators.nufft.NUFFT` (any device).

Table-interpolated Kaiser-Bessel gridding on a grid ``ceil(oversamp * N)`` with
``width`` neighbours per axis. It runs wherever torch runs (CPU and CUDA) and is
differentiable by torch's autograd, but on the CPU it is several times slower
than FINUFFT.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["TkbnBackend", "tkbn"]


def tkbn():
    """Import torchkbnufft lazily (it compiles TorchScript functions at import)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated",
                                category=DeprecationWarning)
        import torchkbnufft as module
    return module


class TkbnBackend:
    """Orthonormal centred NUFFT through torchkbnufft's ``KbNufft`` modules.

    Args:
        traj: ``(ndim, K)`` radians in ``[-pi, pi)`` (its device is used).
        im_size: image size.
        grid_size: oversampled grid size.
        width: kernel width in grid points (``numpoints``).
        dtype: complex dtype of the modules' tables.
    """

    name = "torchkbnufft"

    def __init__(self, traj: torch.Tensor, im_size: Sequence[int], *, grid_size: Sequence[int],
                 width: int, dtype: torch.dtype) -> None:
        module = tkbn()
        self.traj = traj
        self.im_size = tuple(int(n) for n in im_size)
        self.grid_size = tuple(int(n) for n in grid_size)
        self.width = int(width)
        kw = dict(im_size=self.im_size, grid_size=self.grid_size, numpoints=self.width,
                  dtype=dtype, device=traj.device)
        self.fwd = module.KbNufft(**kw)
        self.adj = module.KbNufftAdjoint(**kw)
        # torchkbnufft's norm="ortho" normalises by the oversampled grid size; this
        # factor restores the orthonormal convention on the image grid.
        self._scale = math.sqrt(math.prod(self.grid_size) / math.prod(self.im_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *im_size) -> (B, K)``."""
        y = self.fwd(x.unsqueeze(0).contiguous(), self.traj, norm="ortho")
        return y[0] * self._scale

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, K) -> (B, *im_size)``."""
        x = self.adj(y.unsqueeze(0).contiguous(), self.traj, norm="ortho")
        return x[0] * self._scale

    def toeplitz_kernel(self, weights: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Real kernel on the doubled grid (torchkbnufft's ``calc_toeplitz_kernel``)."""
        w = None if weights is None else weights.reshape(1, -1)
        kern = tkbn().calc_toeplitz_kernel(self.traj, list(self.im_size), weights=w, norm="ortho",
                                           grid_size=list(self.grid_size), numpoints=self.width)
        # The kernel of a Hermitian operator is real up to rounding.
        return (kern.real * self._scale ** 2).contiguous()
