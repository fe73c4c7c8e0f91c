"""FINUFFT backend of :class:`~convexrecon.operators.nufft.NUFFT` (CPU).

The forward operator is FINUFFT's type 2 transform (uniform modes to non-uniform
points, ``isign=-1``) and the adjoint is the same plan's ``execute_adjoint`` (type
1, ``isign=+1``), so forward and adjoint are exact adjoints of each other up to
rounding: both use one kernel, one grid and one deconvolution. FINUFFT's modes are
centred (``-N//2 .. (N-1)//2``, row ``d`` of the trajectory pairs with image axis
``d``), which is exactly the package's centred FFT convention; only the orthonormal
factor ``1/sqrt(prod(im_size))`` is applied here.

Plans
-----
A FINUFFT plan fixes the trajectory, the precision, the tolerance and grid
oversampling (:func:`default_upsampfac`), FFTW's ``MEASURE`` planning, the
spreading order (:func:`is_ordered`), the number of threads and the
number of transforms per call (``n_trans``). :class:`FinufftBackend` keeps a small
cache of plans keyed by ``(n_trans, dtype, threads)``; the trajectory is the
backend's own. Threads follow :func:`torch.get_num_threads` at call time, so a
thread setting means the same for every backend. Plans cannot be copied or
pickled: ``__getstate__`` drops them, a copy or an unpickled backend (a worker
process) rebuilds them lazily on first use, and a forked process notices the new
process id and rebuilds its own. A lock serialises calls on one backend, because
a FINUFFT plan holds working buffers.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from convexrecon.errors import InputError

__all__ = ["FinufftBackend", "finufft_available", "default_eps", "default_upsampfac"]

MAX_PLANS = 4  # plans kept per backend (distinct batch sizes / precisions / threads)
FFTW_MEASURE = 0  # FFTW planner flag: time candidate FFTs once per shape (wisdom is kept)


def is_ordered(traj: np.ndarray, im_size: Sequence[int]) -> bool:
    """True when at least 90% of consecutive samples lie within one grid cell of each
    other (readouts: radial, spiral, Cartesian lines); FINUFFT then spreads in the
    given order, which was faster than its bin sort for radial trajectories."""
    if traj.shape[1] < 2:
        return True
    cells = np.abs(np.diff(traj, axis=1)) * (np.asarray(im_size, dtype=np.float64)[:, None] / (2 * np.pi))
    return bool(np.mean(cells.max(axis=0) <= 1.0) >= 0.9)


def finufft_available() -> bool:
    """True when the ``finufft`` package imports."""
    try:
        import finufft  # noqa: F401
    except ImportError:
        return False
    return True


def default_eps(dtype: torch.dtype) -> float:
    """Default FINUFFT tolerance: 1e-4 in single precision (measured error about 8e-5
    against the exact NUDFT; single precision itself floors near 1e-5), 1e-12 in
    double precision."""
    return 1e-12 if dtype == torch.complex128 else 1e-4


def default_upsampfac(dtype: torch.dtype, eps: float) -> float:
    """FINUFFT's grid oversampling: 1.25 where its kernel reaches ``eps`` without
    clipping (``eps >= 1e-4`` in single, ``>= 1e-9`` in double precision), else 2.

    The smaller grid was 4 to 5x faster for 8 coils of 256x256 through 64 x 512
    radial samples (one thread), at an error of 8e-5 instead of 6e-5 for eps=1e-4.
    """
    return 1.25 if eps >= (1e-9 if dtype == torch.complex128 else 1e-4) else 2.0


def _np_complex(dtype: torch.dtype) -> str:
    return "complex128" if dtype == torch.complex128 else "complex64"


class FinufftBackend:
    """Orthonormal centred NUFFT on the CPU through FINUFFT plans.

    Args:
        traj: ``(ndim, K)`` radians in ``[-pi, pi)`` on the CPU.
        im_size: image size (``ndim`` entries).
        eps: FINUFFT's requested relative tolerance (>= 1e-15; single precision
            cannot reach below about 1e-6).
    """

    name = "finufft"

    def __init__(self, traj: torch.Tensor, im_size: Sequence[int], *, eps: float) -> None:
        if traj.device.type != "cpu":
            raise InputError(f"backend: 'finufft' runs on the CPU, got a trajectory on {traj.device} "
                             "(use backend='torchkbnufft' on other devices)")
        import finufft  # noqa: F401  (fail here, at construction, when missing)

        self.im_size = tuple(int(n) for n in im_size)
        self.eps = float(eps)
        t = traj.detach().to(torch.float64).numpy()
        # one contiguous copy of each row per precision (FINUFFT keeps pointers to them)
        self._pts = {
            "complex128": [np.ascontiguousarray(r, dtype=np.float64) for r in t],
            "complex64": [np.ascontiguousarray(r, dtype=np.float32) for r in t],
        }
        self.n_points = int(t.shape[1])
        # FFTW_MEASURE: 15 to 30% faster transforms for a one-off planning cost (0.7 s
        # for 8 x 320^2 under load; FFTW's wisdom makes later plans of the shape free)
        self._opts = {"fftw": FFTW_MEASURE, "spread_sort": 0 if is_ordered(t, self.im_size) else 2}
        self._scale = 1.0 / math.sqrt(math.prod(self.im_size))
        self._reset()

    # -- plan cache -------------------------------------------------------------------
    def _reset(self) -> None:
        self._plans: OrderedDict = OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in ("_plans", "_lock", "_pid"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _plan(self, n_trans: int, dtype: torch.dtype):
        import finufft

        if self._pid != os.getpid():  # forked: the parent's plans are not ours
            self._reset()
        cdt = _np_complex(dtype)
        threads = max(int(torch.get_num_threads()), 1)
        key = (n_trans, cdt, threads)
        plan = self._plans.get(key)
        if plan is None:
            plan = finufft.Plan(2, self.im_size, n_trans=n_trans, eps=self.eps, dtype=cdt,
                                nthreads=threads, upsampfac=default_upsampfac(dtype, self.eps),
                                **self._opts)
            plan.setpts(*self._pts[cdt])
            self._plans[key] = plan
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    # -- transforms -------------------------------------------------------------------
    def _run(self, data: torch.Tensor, adjoint: bool) -> np.ndarray:
        if data.device.type != "cpu":
            raise InputError(f"input: the 'finufft' backend expects CPU tensors, got {data.device}")
        arr = data.detach().resolve_conj().resolve_neg().contiguous().numpy()
        n_trans = arr.shape[0]
        with self._lock:
            plan = self._plan(n_trans, data.dtype)
            src = arr if n_trans > 1 else arr[0]
            out = plan.execute_adjoint(src) if adjoint else plan.execute(src)
        return out.reshape(n_trans, *out.shape[out.ndim - (len(self.im_size) if adjoint else 1):])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *im_size) -> (B, K)``: the orthonormal centred NUFFT."""
        y = torch.from_numpy(self._run(x, adjoint=False))
        return y.mul_(self._scale)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, K) -> (B, *im_size)``: the adjoint of :meth:`forward`."""
        x = torch.from_numpy(self._run(y, adjoint=True))
        return x.mul_(self._scale)

    def toeplitz_kernel(self, weights: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Real kernel on the doubled grid for :func:`~convexrecon.operators.nufft.toeplitz_apply`.

        The normal ``A^H W A`` is a convolution with ``psf(d) = sum_j w_j
        exp(i traj_j . d) / prod(im_size)``; one type 1 transform onto ``2 * im_size``
        modes gives ``psf`` for every ``d`` in ``[-N, N)``, and the FFT of its
        circulant arrangement is the kernel.
        """
        import finufft

        cdt = _np_complex(dtype)
        w = np.ones(self.n_points) if weights is None else weights.detach().double().cpu().numpy()
        big = tuple(2 * n for n in self.im_size)
        plan = finufft.Plan(1, big, n_trans=1, eps=self.eps, dtype=cdt,
                            nthreads=max(int(torch.get_num_threads()), 1),
                            upsampfac=default_upsampfac(dtype, self.eps))
        plan.setpts(*self._pts[cdt])
        psf = plan.execute(w.astype(cdt)) * (self._scale ** 2)
        kern = np.fft.fftn(np.fft.ifftshift(psf))
        return torch.from_numpy(np.ascontiguousarray(kern.real))
