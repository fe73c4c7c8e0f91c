"""Multi-coil non-Cartesian encoders: :class:`NonCartesianSense` and :class:`StackOfStars`.

Both are built on :class:`~convexrecon.operators.nufft.NUFFT` and share its scaling
and density-compensation conventions: with ``dcf=w`` the operator is
``W^{1/2} A`` and its normal is ``A^H W A``. When the NUFFT uses a Toeplitz
kernel, their ``normal`` applies it to every coil (and partition) instead of a
forward and an adjoint NUFFT, so it agrees with ``adjoint(forward(x))`` to the
NUFFT's accuracy; otherwise ``normal`` is ``adjoint(forward(x))``.
"""

from __future__ import annotations

import torch

from convexrecon._checks import as_tensor, check_finite, complex_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.fft import fftc, ifftc
from convexrecon.operators.nufft import NUFFT, toeplitz_apply

__all__ = ["NonCartesianSense", "StackOfStars"]


def _maps_and_dtype(maps, dtype: torch.dtype | None, min_ndim: int) -> tuple[torch.Tensor, torch.dtype]:
    m = as_tensor(maps, "maps")
    if not (m.is_complex() or m.is_floating_point()):
        raise InputError(f"maps: expected a complex or floating tensor, got dtype {m.dtype}")
    if m.ndim < min_ndim:
        raise InputError(f"maps: expected at least {min_ndim} dimensions, got shape {tuple(m.shape)}")
    if dtype is None:
        dtype = complex_dtype_of(m.dtype)
    elif not (isinstance(dtype, torch.dtype) and dtype.is_complex):
        raise InputError(f"dtype: expected a complex torch dtype, got {dtype!r}")
    return check_finite(m.to(dtype), "maps"), dtype


class NonCartesianSense(Operator):
    """Multi-coil non-Cartesian SENSE: ``y_c = W^{1/2} A (S_c x)``.

    Args:
        maps: coil sensitivities ``(*batch, C, *im)``; ``im`` has ``ndim`` axes, the
            number of rows of ``traj`` (2-D or 3-D).
        traj: ``(ndim, K)`` radians in ``[-pi, pi)``, shared by all coils.
        dcf: optional ``(K,)`` density weights (see :class:`NUFFT`).
        dtype: complex dtype (default: the complex type matching ``maps``).
        backend, eps, oversamp, width, toeplitz: passed to :class:`NUFFT` (FINUFFT
            on the CPU by default; all coils go through one plan).

    ``ishape = im``, ``oshape = (C, K)``.
    """

    def __init__(self, maps, traj, *, dcf=None, dtype: torch.dtype | None = None,
                 backend: str = "auto", eps: float | None = None, oversamp: float = 2.0,
                 width: int = 6, toeplitz: bool | None = None) -> None:
        t = as_tensor(traj, "traj")
        ndim = t.shape[0] if t.ndim == 2 else 2
        m, dtype = _maps_and_dtype(maps, dtype, ndim + 1)
        im = tuple(m.shape[-ndim:])
        self.nufft = NUFFT(t, im, backend=backend, eps=eps, oversamp=oversamp, width=width,
                           dcf=dcf, toeplitz=toeplitz, dtype=dtype)
        n_coils = m.shape[-ndim - 1]
        super().__init__(im, (n_coils, self.nufft.oshape[0]), dtype=dtype)
        self.maps = m
        self._ndim = ndim

    def _coil_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.maps * x.to(self.dtype).unsqueeze(-self._ndim - 1)

    def _combine(self, xc: torch.Tensor) -> torch.Tensor:
        return torch.sum(self.maps.conj() * xc, dim=-self._ndim - 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nufft._forward(self._coil_images(x))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        xc = self.nufft._adjoint(y.to(self.dtype))
        return self._combine(xc)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.nufft.kernel is None:
            return self._adjoint(self._forward(x))
        return self._combine(toeplitz_apply(self._coil_images(x), self.nufft.kernel))


class StackOfStars(Operator):
    """Stack-of-stars SENSE: coil maps, centred orthonormal FFT along z, then the same
    2-D NUFFT (one in-plane trajectory) in every partition.

    Args:
        maps: coil sensitivities ``(*batch, C, Z, H, W)``.
        traj: ``(2, K)`` in-plane trajectory, radians in ``[-pi, pi)``, shared by all
            partitions (see :func:`convexrecon.sampling.stack_of_stars`).
        dcf: optional ``(K,)`` in-plane density weights (see :class:`NUFFT`).
        dtype: complex dtype (default: the complex type matching ``maps``).
        backend, eps, oversamp, width, toeplitz: passed to the in-plane
            :class:`NUFFT` (FINUFFT on the CPU by default).

    ``ishape = (Z, H, W)``, ``oshape = (C, Z, K)``. Since the in-plane normal acts on
    ``(H, W)`` only, it commutes with the z-FFT, which therefore cancels in
    ``normal``: ``A^H W A = S^H T S`` with the 2-D Toeplitz operator ``T`` applied
    per coil and partition.
    """

    def __init__(self, maps, traj, *, dcf=None, dtype: torch.dtype | None = None,
                 backend: str = "auto", eps: float | None = None, oversamp: float = 2.0,
                 width: int = 6, toeplitz: bool | None = None) -> None:
        m, dtype = _maps_and_dtype(maps, dtype, 4)
        t = as_tensor(traj, "traj")
        if t.ndim != 2 or t.shape[0] != 2:
            raise InputError(f"traj: expected an in-plane trajectory of shape (2, K), got {tuple(t.shape)}")
        n_coils, nz, h, w = m.shape[-4:]
        self.nufft = NUFFT(t, (h, w), backend=backend, eps=eps, oversamp=oversamp, width=width,
                           dcf=dcf, toeplitz=toeplitz, dtype=dtype)
        super().__init__((nz, h, w), (n_coils, nz, self.nufft.oshape[0]), dtype=dtype)
        self.maps = m

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        xc = self.maps * x.to(self.dtype).unsqueeze(-4)
        return self.nufft._forward(fftc(xc, dims=(-3,)))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        xc = ifftc(self.nufft._adjoint(y.to(self.dtype)), dims=(-3,))
        return torch.sum(self.maps.conj() * xc, dim=-4)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.nufft.kernel is None:
            return self._adjoint(self._forward(x))
        xc = self.maps * x.to(self.dtype).unsqueeze(-4)
        return torch.sum(self.maps.conj() * toeplitz_apply(xc, self.nufft.kernel), dim=-4)
