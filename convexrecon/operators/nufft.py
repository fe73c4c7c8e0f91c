"""Non-uniform FFT operator (torchkbnufft backend) with a Toeplitz normal operator.

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
* ``normal`` uses the Toeplitz embedding: ``A^H W A`` is a convolution, applied by
  FFTs on a grid twice the image size with a kernel precomputed at construction.
  It matches ``adjoint(forward(x))`` to the interpolation accuracy of the NUFFT
  (about 1e-5 to 1e-3 relative with the default oversampling and width), not to
  machine precision.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from convexrecon._checks import as_tensor, check_finite, real_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod

__all__ = ["NUFFT", "pipe_menon_dcf", "check_traj", "toeplitz_apply"]


def _tkbn():
    """Import torchkbnufft lazily (it compiles TorchScript functions at import)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated",
                                category=DeprecationWarning)
        import torchkbnufft as tkbn
    return tkbn


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


def _check_im_size(im_size) -> tuple[int, ...]:
    try:
        size = tuple(int(s) for s in im_size)
    except (TypeError, ValueError) as exc:
        raise InputError(f"im_size: expected a sequence of ints, got {im_size!r}") from exc
    if not 1 <= len(size) <= 3 or any(s < 1 for s in size):
        raise InputError(f"im_size: expected 1 to 3 positive sizes, got {im_size!r}")
    return size


def _check_dcf(dcf, k: int, rdt: torch.dtype, device) -> torch.Tensor:
    w = as_tensor(dcf, "dcf")
    if w.is_complex() or w.shape != (k,):
        raise InputError(f"dcf: expected real weights of shape ({k},), got {tuple(w.shape)} {w.dtype}")
    w = check_finite(w.to(device=device, dtype=rdt), "dcf")
    if bool((w < 0).any()):
        raise InputError(f"dcf: expected non-negative weights, got minimum {float(w.min()):.3g}")
    return w


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


class NUFFT(Operator):
    """Non-uniform FFT ``A`` (optionally density weighted ``W^{1/2} A``).

    Args:
        traj: trajectory ``(ndim, K)``, radians in ``[-pi, pi)``.
        im_size: image size (``ishape``), 1 to 3 dimensions; ``oshape = (K,)``.
        oversamp: grid oversampling factor (>= 1); the grid is ``ceil(oversamp*N)``.
        width: Kaiser-Bessel kernel width in grid points (``numpoints``).
        dcf: optional ``(K,)`` non-negative weights ``w``; the operator becomes
            ``W^{1/2} A`` so that ``normal = A^H W A`` (see the module docstring).
        toeplitz: use the Toeplitz embedding for ``normal`` (precomputed kernel).
            If False, ``normal`` is ``adjoint(forward(x))``.
        dtype: complex dtype of the computation.

    Inputs may carry any leading batch dimensions: ``(*batch, *im_size)``.
    """

    def __init__(self, traj, im_size: Sequence[int], *, oversamp: float = 2.0,
                 width: int = 6, dcf=None, toeplitz: bool = True,
                 dtype: torch.dtype = torch.complex64) -> None:
        size = _check_im_size(im_size)
        if not (isinstance(dtype, torch.dtype) and dtype.is_complex):
            raise InputError(f"dtype: expected a complex torch dtype, got {dtype!r}")
        t = check_traj(traj, size)
        try:
            osf = float(oversamp)
        except (TypeError, ValueError) as exc:
            raise InputError(f"oversamp: expected a number >= 1, got {oversamp!r}") from exc
        if not (math.isfinite(osf) and osf >= 1.0):
            raise InputError(f"oversamp: expected a number >= 1, got {oversamp!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 2:
            raise InputError(f"width: expected an int >= 2, got {width!r}")
        super().__init__(size, (t.shape[1],), dtype=dtype)
        rdt = real_dtype_of(dtype)
        self.traj = t.to(dtype=rdt)
        self.im_size = size
        self.grid_size = tuple(max(int(math.ceil(osf * n)), n) for n in size)
        self.oversamp = osf
        self.width = width
        self.use_toeplitz = bool(toeplitz)
        self.dcf = None if dcf is None else _check_dcf(dcf, t.shape[1], rdt, self.traj.device)
        self.sqrt_dcf = None if self.dcf is None else torch.sqrt(self.dcf)
        # torchkbnufft's norm="ortho" normalises by the oversampled grid size; this
        # factor restores the orthonormal convention on the image grid.
        self._scale = math.sqrt(prod(self.grid_size) / prod(size))
        self._mods: dict = {}
        self._build_modules()
        self.kernel = self._toeplitz_kernel() if self.use_toeplitz else None

    # -- construction helpers -------------------------------------------------------
    def _build_modules(self) -> None:
        tkbn = _tkbn()
        kw = dict(im_size=self.im_size, grid_size=self.grid_size, numpoints=self.width,
                  dtype=self.dtype, device=self.traj.device)
        # held in a dict so that Operator.to (which moves nn.Modules in place) leaves
        # them alone; _after_to rebuilds them for the new device and dtype.
        self._mods = {"fwd": tkbn.KbNufft(**kw), "adj": tkbn.KbNufftAdjoint(**kw)}

    def _toeplitz_kernel(self) -> torch.Tensor:
        tkbn = _tkbn()
        weights = None if self.dcf is None else self.dcf.reshape(1, -1)
        kern = tkbn.calc_toeplitz_kernel(self.traj, list(self.im_size), weights=weights,
                                         norm="ortho", grid_size=list(self.grid_size),
                                         numpoints=self.width)
        # The kernel of a Hermitian operator is real up to rounding.
        return (kern.real * self._scale ** 2).contiguous()

    def _after_to(self) -> None:
        old_rdt = self._mods["fwd"].table_0.real.dtype if self._mods else None
        self._build_modules()
        if self.use_toeplitz and old_rdt != real_dtype_of(self.dtype):
            # recompute in the new precision rather than keep a rounded kernel
            self.kernel = self._toeplitz_kernel()

    # -- layout helpers -------------------------------------------------------------
    def _as_tkbn(self, x: torch.Tensor, trailing: tuple[int, ...]) -> tuple[torch.Tensor, tuple]:
        batch = tuple(x.shape[: x.ndim - len(trailing)])
        x = x.to(self.dtype).reshape(1, max(prod(batch), 1), *trailing)
        return x, batch

    # -- operator -------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        xb, batch = self._as_tkbn(x, self.im_size)
        y = self._mods["fwd"](xb.contiguous(), self.traj, norm="ortho") * self._scale
        if self.sqrt_dcf is not None:
            y = y * self.sqrt_dcf
        return y.reshape(*batch, *self.oshape)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        yb, batch = self._as_tkbn(y, self.oshape)
        if self.sqrt_dcf is not None:
            yb = yb * self.sqrt_dcf
        x = self._mods["adj"](yb.contiguous(), self.traj, norm="ortho") * self._scale
        return x.reshape(*batch, *self.im_size)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is None:
            return self._adjoint(self._forward(x))
        return toeplitz_apply(x.to(self.dtype), self.kernel)

    def __repr__(self) -> str:
        return (f"NUFFT(im_size={self.im_size}, K={self.oshape[0]}, grid={self.grid_size}, "
                f"width={self.width}, dcf={self.dcf is not None}, toeplitz={self.use_toeplitz}, "
                f"dtype={self.dtype})")


def pipe_menon_dcf(traj, im_size: Sequence[int], *, iters: int = 20, oversamp: float = 2.0,
                   width: int = 6) -> torch.Tensor:
    """Pipe-Menon density compensation weights for ``traj``.

    Iterates ``w <- w / |G G^H w|`` with ``G`` the Kaiser-Bessel interpolation
    (torchkbnufft's ``calc_density_compensation_function``), then normalises the
    weights so that ``sum(w) == prod(im_size)``: the point-spread function of
    ``A^H W A`` (the normal of ``NUFFT(traj, im_size, dcf=w)``) then peaks at 1, as
    for a fully sampled Cartesian grid with unit weights.

    Args:
        traj: ``(ndim, K)`` radians in ``[-pi, pi)``.
        im_size: image size.
        iters: number of fixed-point iterations (>= 1).
        oversamp: grid oversampling of the interpolation.
        width: kernel width of the interpolation.

    Returns:
        ``(K,)`` real non-negative weights in the trajectory's real dtype
        (float32 for float32 input, else float64).
    """
    size = _check_im_size(im_size)
    t = check_traj(traj, size)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise InputError(f"iters: expected an int >= 1, got {iters!r}")
    osf = float(oversamp)
    if not (math.isfinite(osf) and osf >= 1.0):
        raise InputError(f"oversamp: expected a number >= 1, got {oversamp!r}")
    tkbn = _tkbn()
    t = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32)
    grid = [max(int(math.ceil(osf * n)), n) for n in size]
    w = tkbn.calc_density_compensation_function(t, list(size), num_iterations=iters,
                                                grid_size=grid, numpoints=width)
    w = w.reshape(-1).real.to(t.dtype)
    return w * (prod(size) / w.sum())
