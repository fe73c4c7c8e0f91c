"""Named, seeded, ready-made reconstruction problems: :func:`load` and :func:`names`.

Every problem is returned *scaled* (DESIGN.md, "Scaling"):

- the operator is divided by ``op_scale = sqrt(lambda_max(A.N))`` (Lanczos, see
  :func:`lambda_max`; about 1e-3 relative), so its normal has largest eigenvalue 1
  and a unit gradient step is valid;
- the data are divided by ``data_scale = op_scale * p99(|A_raw^H W y|)``: the 99th
  percentile (over all slices) of the magnitude of the zero-filled image of the
  unscaled operator, density compensated for non-Cartesian data (``W`` the
  Pipe-Menon weights, the identity for Cartesian data). The zero-filled (gridding)
  image approximates the raw image, so the scaled ground truth peaks at about 1 on
  every problem, and a percentile (not ``||A^H y||``) keeps the scale independent of
  ``n_slices`` and of the image size: one regularisation weight means the same on
  every problem. For Cartesian problems (``op_scale ~ 1``) it is the 99th percentile
  of the scaled zero-filled image ``|operator.H(kspace_raw)|``;
- ``ground_truth`` is on the same scale, ``operator(ground_truth) ~ kspace`` (up to
  the noise, ``noise_std`` per sample, when it is known).

Undo the scaling with ``raw_kspace = data_scale * kspace`` and
``raw_image = image * data_scale / op_scale``.

Slices are always a leading batch dimension of size ``n_slices``: ``kspace`` is
``(n, C, H, W)`` (Cartesian), ``(n, C, K)`` (radial) or ``(n, C, Z, K)``
(stack of stars); images are ``(n, *operator.ishape)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.operators.linalg import power_method

__all__ = ["Problem", "RawProblem", "load", "names", "register", "describe", "lambda_max"]

DATA_PERCENTILE = 0.99


@dataclass
class Problem:
    """A scaled reconstruction problem (see the module docstring).

    Attributes:
        name: the registry name.
        operator: the scaled encoding operator (``ishape`` the image, ``oshape`` one
            slice of k-space); it may carry per-slice masks as batch dimensions.
        kspace: scaled measured data ``(n_slices, *operator.oshape)``.
        ground_truth: scaled reference image ``(n_slices, *operator.ishape)`` or None.
        maps: coil sensitivities used by the operator (``(C, *im)`` or per slice).
        mask: bool Cartesian sampling mask broadcastable to ``(n_slices, *im)``, or None.
        traj: non-Cartesian trajectory ``(ndim, K)`` in radians, or None.
        op_scale: ``sqrt(lambda_max(A_raw.N))``; the operator is ``A_raw / op_scale``.
        data_scale: the measured data were divided by this.
        reference: a sentence saying what the ground truth is.
        description: what the problem is and how it was made.
        noise_std: standard deviation of the complex noise per measured sample on the
            scaled data (``E|n|^2``), or None where it is unknown (real data).
        split: "train" or "test".
        slices: indices of the source slices used (see ``meta`` and data/README.md).
        seed: the seed of masks, phases and noise.
        meta: problem-specific extras (e.g. ``pad_shape`` for wavelets, the coil
            compression matrix).
    """

    name: str
    operator: Operator
    kspace: torch.Tensor
    ground_truth: torch.Tensor | None
    maps: torch.Tensor
    mask: torch.Tensor | None
    traj: torch.Tensor | None
    op_scale: float
    data_scale: float
    reference: str
    description: str
    noise_std: float | None = None
    split: str = "test"
    slices: tuple[int, ...] = ()
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RawProblem:
    """What a builder returns: the unscaled problem."""

    operator: Operator
    kspace: torch.Tensor
    ground_truth: torch.Tensor | None
    maps: torch.Tensor
    mask: torch.Tensor | None
    traj: torch.Tensor | None
    reference: str
    description: str
    noise_std: float | None
    slices: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    dcf: torch.Tensor | None = None  # density compensation for the data scale (non-Cartesian)


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., RawProblem]
    summary: str
    splits: tuple[str, ...]
    max_slices: dict[str, int]


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, *, summary: str, splits: tuple[str, ...] = ("test",),
             max_slices: dict[str, int] | None = None):
    """Decorator registering ``builder(split=, n_slices=, seed=, dtype=) -> RawProblem``."""

    def deco(fn: Callable[..., RawProblem]) -> Callable[..., RawProblem]:
        if name in _REGISTRY:
            raise KeyError(f"problem {name!r} registered twice")
        _REGISTRY[name] = _Entry(fn, summary, splits, dict(max_slices or {s: 1 for s in splits}))
        return fn

    return deco


def _ensure_registered() -> None:
    from convexrecon.problems import instances  # noqa: F401  (registers on import)


def names() -> list[str]:
    """The registered problem names, sorted."""
    _ensure_registered()
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    """One line about problem ``name``: summary, splits and slice counts."""
    entry = _entry(name)
    counts = ", ".join(f"{s}: {entry.max_slices[s]}" for s in entry.splits)
    return f"{name}: {entry.summary} (slices per split: {counts})"


def _entry(name: str) -> _Entry:
    _ensure_registered()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InputError(f"name: expected one of {', '.join(sorted(_REGISTRY))}, got {name!r}")
    return _REGISTRY[name]


def load(name: str, *, split: str = "test", n_slices: int = 1, seed: int = 0,
         device: torch.device | str | None = None,
         dtype: torch.dtype = torch.complex64) -> Problem:
    """Build the named problem, scaled (see the module docstring).

    Args:
        name: one of :func:`names`.
        split: "test" or "train" (training and test slices are disjoint; problems
            made from a single real acquisition have only "test").
        n_slices: number of slices (the leading batch dimension).
        seed: seed of every random choice (masks, phases, noise); the same seed gives
            the same problem.
        device: device of the returned tensors and operator.
        dtype: ``torch.complex64`` or ``torch.complex128``.

    Raises:
        InputError: unknown name (the message lists the valid ones), split or dtype,
            or more slices than the split holds.
    """
    entry = _entry(name)
    if split not in entry.splits:
        raise InputError(f"split: expected one of {', '.join(map(repr, entry.splits))} for "
                         f"{name!r}, got {split!r}")
    limit = entry.max_slices[split]
    if isinstance(n_slices, bool) or not isinstance(n_slices, int) or not 1 <= n_slices <= limit:
        raise InputError(f"n_slices: expected an int in [1, {limit}] for {name!r} split {split!r}, "
                         f"got {n_slices!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed: expected an int >= 0, got {seed!r}")
    if dtype not in (torch.complex64, torch.complex128):
        raise InputError(f"dtype: expected torch.complex64 or torch.complex128, got {dtype!r}")
    raw = entry.builder(split=split, n_slices=n_slices, seed=seed, dtype=dtype)
    return _finalize(name, raw, split=split, seed=seed, device=device)


def lambda_max(normal: Operator, x0: torch.Tensor, *, tol: float = 1e-3) -> float:
    """Largest eigenvalue of the Hermitian PSD operator ``normal`` by Lanczos (ARPACK
    ``eigsh``) started at ``x0``; it converges in tens of products where the power
    method needs hundreds (the top of these spectra is clustered). The Ritz value
    approaches from below, to about ``tol`` relative."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    shape, dtype = tuple(x0.shape), x0.dtype
    n = x0.numel()

    def matvec(v: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(v).reshape(shape)).to(dtype)
        with torch.no_grad():
            return normal.forward(x).to(torch.complex128).numpy().reshape(-1)

    lin = LinearOperator((n, n), matvec=matvec, dtype=np.complex128)
    v0 = x0.detach().to(torch.complex128).numpy().reshape(-1)
    if n <= 2:
        return power_method(normal, iters=100, batch=shape[: len(shape) - len(normal.ishape)])
    try:
        vals = eigsh(lin, k=1, which="LA", tol=tol, v0=v0, ncv=min(12, n - 1),
                     maxiter=200, return_eigenvectors=False)
        return float(vals[0])
    except ArpackNoConvergence:
        return power_method(normal, iters=300, tol=1e-7,
                            batch=shape[: len(shape) - len(normal.ishape)])


def _finalize(name: str, raw: RawProblem, *, split: str, seed: int, device) -> Problem:
    with torch.no_grad():
        x0 = raw.operator.adjoint(raw.kspace)
        if not bool(x0.abs().amax() > 0):
            raise InputError(f"{name}: expected nonzero data, got a zero-filled image of zeros")
        lam = lambda_max(raw.operator.N, x0)
        if not lam > 0:
            raise InputError(f"{name}: expected a nonzero operator, got lambda_max = {lam}")
        op_scale = math.sqrt(lam)
        op = (1.0 / op_scale) * raw.operator
        grid = x0 if raw.dcf is None else raw.operator.adjoint(raw.kspace * raw.dcf)
        mags = grid.abs().reshape(-1)
        if mags.numel() > 2 ** 24:
            mags = mags[:: mags.numel() // 2 ** 24 + 1]
        data_scale = op_scale * float(torch.quantile(mags.to(torch.float64), DATA_PERCENTILE))
    kspace = raw.kspace / data_scale
    gt = None if raw.ground_truth is None else raw.ground_truth * (op_scale / data_scale)
    noise = None if raw.noise_std is None else raw.noise_std / data_scale
    if device is not None:
        op = op.to(device)
        kspace = kspace.to(device)
        gt = None if gt is None else gt.to(device)
    mv = (lambda t: t if t is None or device is None else t.to(device))
    return Problem(name=name, operator=op, kspace=kspace, ground_truth=gt, maps=mv(raw.maps),
                   mask=mv(raw.mask), traj=mv(raw.traj), op_scale=op_scale,
                   data_scale=data_scale, reference=raw.reference,
                   description=raw.description, noise_std=noise, split=split,
                   slices=tuple(raw.slices), seed=seed, meta=dict(raw.meta))
