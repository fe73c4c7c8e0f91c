"""Operator helpers: the adjoint (dot) test, the power method and dense matrices."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from convexrecon._checks import real_dtype_of
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator, prod

__all__ = ["dot_test", "power_method", "power_iteration", "to_dense", "randn_like_shape", "inner"]

DENSE_LIMIT = 4096


def randn_like_shape(shape: Sequence[int], *, dtype: torch.dtype, device=None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal tensor of ``shape`` (complex if ``dtype`` is complex)."""
    rdt = real_dtype_of(dtype)
    if dtype.is_complex:
        re = torch.randn(*shape, dtype=rdt, device=device, generator=generator)
        im = torch.randn(*shape, dtype=rdt, device=device, generator=generator)
        return torch.complex(re, im)
    return torch.randn(*shape, dtype=rdt, device=device, generator=generator)


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a, b> = sum(conj(a) * b)`` over all dimensions (a scalar tensor)."""
    return torch.sum(a.conj() * b) if a.is_complex() else torch.sum(a * b)


def dot_test(op: Operator, *, batch: Sequence[int] = (), seed: int = 0,
             real: bool = False, device=None) -> float:
    """Relative adjoint-test error ``|<Ax, y> - <x, A^H y>| / (|<Ax,y>| + tiny)``.

    Args:
        op: the operator.
        batch: leading batch shape of the random test vectors.
        seed: seed of the random test vectors.
        real: compare real parts only (for operators that are only real-linear).
        device: device of the test vectors.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = randn_like_shape((*batch, *op.ishape), dtype=op.dtype, generator=g).to(device)
    y = randn_like_shape((*batch, *op.oshape), dtype=op.dtype, generator=g).to(device)
    ax = op.forward(x)
    y = y.expand_as(ax) if y.shape != ax.shape else y
    lhs = inner(ax, y)
    rhs = inner(x.expand(*ax.shape[: ax.ndim - len(op.oshape)], *op.ishape), op.adjoint(y))
    if real:
        lhs, rhs = lhs.real, rhs.real
    return float(abs(lhs - rhs) / (abs(lhs) + torch.finfo(real_dtype_of(op.dtype)).tiny))


def power_method(op: Operator, *, iters: int = 50, tol: float = 1e-6, seed: int = 0,
                 batch: Sequence[int] = (), device=None) -> float:
    """Largest eigenvalue of a Hermitian positive semidefinite operator (e.g. ``A.N``).

    Stops after ``iters`` iterations or when the estimate changes by less than
    ``tol`` relative.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = randn_like_shape((*batch, *op.ishape), dtype=op.dtype, generator=g).to(device)
    return power_iteration(op.forward, x, iters=iters, tol=tol)


def power_iteration(apply: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, *,
                    iters: int = 50, tol: float = 1e-6) -> float:
    """Largest eigenvalue of the Hermitian positive semidefinite map ``apply`` by power
    iterations from ``x0`` (normalised here), without the tape.

    Stops after ``iters`` iterations or when the estimate changes by less than ``tol``
    relative; 0.0 when ``apply`` returns zero. The loop of :func:`power_method` and of
    the sharded and minibatch programs' Lipschitz constants (each with its own start).
    """
    x = x0 / torch.linalg.vector_norm(x0)
    lam = 0.0
    with torch.no_grad():
        for _ in range(iters):
            z = apply(x)
            new = float(torch.linalg.vector_norm(z))
            if new == 0.0:
                return 0.0
            x = z / new
            done = abs(new - lam) <= tol * new
            lam = new
            if done:
                break
    return lam


def to_dense(op: Operator, *, limit: int = DENSE_LIMIT) -> torch.Tensor:
    """The matrix of ``op`` (``prod(oshape) x prod(ishape)``) for tiny sizes.

    Raises InputError if either dimension exceeds ``limit``.
    """
    n, m = prod(op.ishape), prod(op.oshape)
    if max(n, m) > limit:
        raise InputError(
            f"to_dense: operator too large ({m} x {n}); the limit is {limit} per dimension"
        )
    device = _device_of(op)
    eye = torch.eye(n, dtype=op.dtype, device=device).reshape(n, *op.ishape)
    with torch.no_grad():
        cols = op.forward(eye)
    if cols.shape[0] != n or cols.ndim != 1 + len(op.oshape):
        raise InputError(
            f"to_dense: operator {op.name} carries batch dimensions {tuple(cols.shape[1:cols.ndim - len(op.oshape)])}; "
            "expected an unbatched operator"
        )
    return cols.reshape(n, m).T.contiguous()


def _device_of(op: Operator):
    for v in vars(op).values():
        if isinstance(v, torch.Tensor):
            return v.device
        if isinstance(v, Operator):
            return _device_of(v)
    return None
