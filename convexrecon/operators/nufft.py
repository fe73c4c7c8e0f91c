"""Non-uniform FFT operator with two backends (FINUFFT, torchkbnufft) and a Toeplitz normal.

Conventions
-----------
* ``traj`` is ``(ndim, K)`` in radians per voxel, in ``[-pi, pi)`` (torchkbnufft's
  convention). Row ``d`` pairs with image axis ``-ndim + d``.
* Scaling: on Cartesian grid points ``2*pi*k/N`` (``k`` in ``[-N/2, N/2)``) the NUFFT
  equals the centred orthonormal FFT ``fftshift(fftn(ifftshift(x), norm="ortho"))``.
  Each row of the (exact) NUDFT matrix has unit norm divided by ``sqrt(prod(im_size))``.
* Density compensation: ``NUFFT(traj, im_size, dcf=w)`` is the operator
  ``W^{1/2} A`` with ``W = diag(w)``. Forward, adjoint and normal are therefore
  consistent: ``forward = W^{1/2} A``, ``adjoint = A^H W^{1/2}`` and
  ``normal = A^H W A``. Weigh measured data by ``sqrt(w)`` before using it with
  this operator (``A^H W y == op.adjoint(sqrt(w) * y)``).
* Backends: ``"finufft"`` (:mod:`.nufft_finufft`, CPU only, accuracy set by
  ``eps``) and ``"torchkbnufft"`` (:mod:`.nufft_tkbn`, any device, accuracy set by
  ``oversamp`` and ``width``). ``backend="auto"`` (the default) takes FINUFFT on
  the CPU and torchkbnufft elsewhere, and is resolved again after ``to(device)``.
* ``normal`` can use the Toeplitz embedding: ``A^H W A`` is a convolution, applied
  by FFTs on a grid twice the image size with a kernel precomputed at construction.
  It matches ``adjoint(forward(x))`` to the accuracy of the NUFFT (about 1e-5 to
  1e-3 relative), not to machine precision. ``toeplitz=None`` (the default) takes
  the faster normal of the backend, as timed by ``benchmarks/operators.py``: the
  Toeplitz one for torchkbnufft, ``adjoint(forward(x))`` for FINUFFT (1.7x faster
  than Toeplitz from 4 coils on; about equal for one coil).
* dtype: inputs must have the operator's precision (a real input of that precision
  is taken as complex); anything else raises ``InputError`` (see
  :meth:`~convexrecon.operators.base.Operator.forward`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from convexrecon._checks import real_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod
from convexrecon.operators._traj import check_dcf, check_im_size, check_kernel, check_traj
from convexrecon.operators.dcf import pipe_menon_dcf
from convexrecon.operators.nufft_finufft import FinufftBackend, default_eps, finufft_available
from convexrecon.operators.nufft_tkbn import TkbnBackend

__all__ = ["NUFFT", "pipe_menon_dcf", "check_traj", "toeplitz_apply", "BACKENDS", "resolve_backend"]

BACKENDS = ("auto", "finufft", "torchkbnufft")
# normal by Toeplitz embedding (True) or by adjoint(forward) (False) when toeplitz=None:
# the faster one per backend in benchmarks/operators.py (docs/BENCHMARKS.md, operators)
TOEPLITZ_DEFAULT = {"finufft": False, "torchkbnufft": True}


def toeplitz_apply(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Apply a Toeplitz-embedded normal operator to ``x`` of shape ``(*batch, *im)``.

    ``kernel`` has shape ``2 * im`` (the FFT of the point-spread function on the
    doubled grid; real for a Hermitian normal operator). The image is zero padded
    at the end of each axis, transformed, multiplied by the kernel, transformed back
    and cropped. (One padded ``fftn`` call measured faster on CPU than pruned 1-D
    FFTs over the non-zero rows, whose strided passes cost more than they save.)
    """
    nd = kernel.ndim
    im = tuple(x.shape[x.ndim - nd:])
    dims = tuple(range(-nd, 0))
    y = torch.fft.fftn(x, s=tuple(kernel.shape), dim=dims, norm="ortho")
    y.mul_(kernel)
    y = torch.fft.ifftn(y, dim=dims, norm="ortho")
    for d, n in zip(dims, im):
        y = y.narrow(d, 0, n)
    return y


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that runs: ``"auto"`` is FINUFFT on the CPU (when installed) and
    torchkbnufft elsewhere; an explicit ``"finufft"`` off the CPU is an error."""
    if backend not in BACKENDS:
        raise InputError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "finufft" if device.type == "cpu" and finufft_available() else "torchkbnufft"
    if backend == "finufft" and device.type != "cpu":
        raise InputError(f"backend: 'finufft' runs on the CPU only, got device {device} "
                         "(use backend='auto' or 'torchkbnufft')")
    return backend


class NUFFT(Operator):
    """Non-uniform FFT ``A`` (optionally density weighted ``W^{1/2} A``).

    Args:
        traj: trajectory ``(ndim, K)``, radians in ``[-pi, pi)``.
        im_size: image size (``ishape``), 1 to 3 dimensions; ``oshape = (K,)``.
        backend: ``"auto"`` (FINUFFT on the CPU, torchkbnufft elsewhere),
            ``"finufft"`` or ``"torchkbnufft"``.
        eps: FINUFFT's relative tolerance (default 1e-4 in complex64, measured
            error about 8e-5, and 1e-12 in complex128); only for the FINUFFT backend.
        oversamp: grid oversampling factor (>= 1) of the torchkbnufft backend; the
            grid is ``ceil(oversamp*N)``.
        width: Kaiser-Bessel kernel width in grid points (torchkbnufft backend).
        dcf: optional ``(K,)`` non-negative weights ``w``; the operator becomes
            ``W^{1/2} A`` so that ``normal = A^H W A`` (see the module docstring).
        toeplitz: use the Toeplitz embedding for ``normal`` (precomputed kernel);
            False: ``normal`` is ``adjoint(forward(x))``; None: the faster of the
            two for the backend (Toeplitz for torchkbnufft, direct for FINUFFT).
        dtype: complex dtype of the computation (complex128 uses a double
            precision plan).

    Inputs may carry any leading batch dimensions: ``(*batch, *im_size)``. ``op(x)``
    on a tensor that requires grad is differentiable: the backward pass is the
    adjoint (:meth:`~convexrecon.operators.base.Operator.autograd_apply`).
    """

    def __init__(self, traj, im_size: Sequence[int], *, backend: str = "auto",
                 eps: float | None = None, oversamp: float = 2.0, width: int = 6, dcf=None,
                 toeplitz: bool | None = None, dtype: torch.dtype = torch.complex64) -> None:
        size = check_im_size(im_size)
        if not (isinstance(dtype, torch.dtype) and dtype.is_complex):
            raise InputError(f"dtype: expected a complex torch dtype, got {dtype!r}")
        t = check_traj(traj, size)
        osf = check_kernel(oversamp, width)
        if eps is not None and not (isinstance(eps, (int, float)) and not isinstance(eps, bool)
                                    and 1e-15 <= float(eps) < 1):
            raise InputError(f"eps: expected a tolerance in [1e-15, 1), got {eps!r}")
        if toeplitz is not None and not isinstance(toeplitz, bool):
            raise InputError(f"toeplitz: expected True, False or None, got {toeplitz!r}")
        super().__init__(size, (t.shape[1],), dtype=dtype)
        rdt = real_dtype_of(dtype)
        self.traj = t.to(dtype=rdt)
        self.im_size = size
        self.grid_size = tuple(max(int(math.ceil(osf * n)), n) for n in size)
        self.oversamp = osf
        self.width = width
        self.eps = None if eps is None else float(eps)
        self.backend_request = backend
        self.toeplitz_request = toeplitz
        self.dcf = None if dcf is None else check_dcf(dcf, t.shape[1], rdt, self.traj.device)
        self.sqrt_dcf = None if self.dcf is None else torch.sqrt(self.dcf)
        self.backend = resolve_backend(backend, self.traj.device)
        if self.eps is not None and self.backend != "finufft":
            raise InputError(f"eps: only used by the 'finufft' backend, got backend {self.backend!r}")
        self._impl = self._make_backend()
        self.kernel = self._toeplitz_kernel() if self.use_toeplitz else None

    # -- construction helpers -------------------------------------------------------
    @property
    def use_toeplitz(self) -> bool:
        """Whether ``normal`` uses the Toeplitz embedding."""
        if self.toeplitz_request is None:
            return TOEPLITZ_DEFAULT[self.backend]
        return self.toeplitz_request

    def _make_backend(self):
        if self.backend == "finufft":
            eps = default_eps(self.dtype) if self.eps is None else self.eps
            return FinufftBackend(self.traj, self.im_size, eps=eps)
        return TkbnBackend(self.traj, self.im_size, grid_size=self.grid_size, width=self.width,
                           dtype=self.dtype)

    def _toeplitz_kernel(self) -> torch.Tensor:
        kern = self._impl.toeplitz_kernel(self.dcf, self.dtype)
        return kern.to(device=self.traj.device, dtype=real_dtype_of(self.dtype)).contiguous()

    def _after_to(self) -> None:
        # Operator.to moved traj, dcf and kernel; backends hold plans or modules
        # built for one device and precision, so rebuild (and re-resolve "auto").
        old_backend = self.backend
        self.backend = resolve_backend(self.backend_request, self.traj.device)
        self._impl = self._make_backend()
        # recompute the kernel in the new precision (or backend) rather than keep a rounded one
        if not self.use_toeplitz:
            self.kernel = None
        elif (self.kernel is None or old_backend != self.backend
              or self.kernel.dtype != real_dtype_of(self.dtype)):
            self.kernel = self._toeplitz_kernel()

    # -- operator -------------------------------------------------------------------
    def _flat(self, x: torch.Tensor, trailing: tuple[int, ...]) -> tuple[torch.Tensor, tuple]:
        batch = tuple(x.shape[: x.ndim - len(trailing)])
        return x.to(self.dtype).reshape(max(prod(batch), 1), *trailing), batch

    def _through_autograd(self, x: torch.Tensor) -> bool:
        # FINUFFT works on numpy arrays, outside autograd: route differentiable calls
        # through the adjoint-based autograd function (whose forward runs without grad).
        return self.backend == "finufft" and x.requires_grad and torch.is_grad_enabled()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._through_autograd(x):
            return self.autograd_apply(x.to(self.dtype))
        xb, batch = self._flat(x, self.im_size)
        y = self._impl.forward(xb)
        if self.sqrt_dcf is not None:
            y = y * self.sqrt_dcf
        return y.reshape(*batch, *self.oshape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if self._through_autograd(y):
            return self.H.autograd_apply(y.to(self.dtype))
        yb, batch = self._flat(y, self.oshape)
        if self.sqrt_dcf is not None:
            yb = yb * self.sqrt_dcf
        x = self._impl.adjoint(yb)
        return x.reshape(*batch, *self.im_size)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is None:
            return self._adjoint(self._forward(x))
        return toeplitz_apply(x.to(self.dtype), self.kernel)

    def __repr__(self) -> str:
        detail = (f"eps={self._impl.eps:g}" if self.backend == "finufft"
                  else f"grid={self.grid_size}, width={self.width}")
        return (f"NUFFT(im_size={self.im_size}, K={self.oshape[0]}, backend={self.backend!r}, "
                f"{detail}, dcf={self.dcf is not None}, toeplitz={self.kernel is not None}, "
                f"dtype={self.dtype})")
