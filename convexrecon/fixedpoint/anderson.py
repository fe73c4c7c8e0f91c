"""Anderson acceleration (type II) of ``z = f(z)``, batched with per-sample histories.

With ``g_k = f(z_k) - z_k`` and the last ``m`` differences ``dX``, ``dG`` of iterates
and residuals, the step is::

    gamma   = argmin ||g_k - dG gamma||^2 + lam * s * ||gamma||^2     (s = max diag of dG dG^T)
    z_{k+1} = z_k + beta g_k - (dX + beta dG) gamma

Each sample keeps its own ring buffer and its own ``m x m`` Gram matrix, updated
one row per step (a step costs ``O(m d)``); the small systems are solved together
with ``torch.linalg.solve_ex``. A singular or non-finite solve falls back, for that
sample, to the plain mixing step ``z + beta g``. The returned iterate is the
lowest-residual one of every sample.

The history itself is :class:`AndersonMemory`, a small accelerator object that
solvers on the step protocol (the ADMM of the convex ReLU programs) use directly:
they push accepted pairs ``(x, g)`` and ask for the extrapolated point, which they
may safeguard. A flat vector is a batch of one.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.fixedpoint._common import _Run, check_common
from convexrecon.fixedpoint.stats import FixedPointStats

__all__ = ["anderson", "anderson_coefficients", "AndersonMemory"]


def anderson_coefficients(gram: torch.Tensor, rhs: torch.Tensor, count: torch.Tensor, *,
                          lam: float) -> torch.Tensor:
    """Solve the regularised ``(n, m, m)`` least-squares systems of Anderson.

    Slots at or beyond a sample's ``count`` are empty (zero rows of ``dG``) and get
    coefficient 0; a singular or non-finite solve gives all-zero coefficients (the
    plain mixing step) for that sample. The systems are symmetric positive
    (semi)definite: a batched Cholesky factor solves them (on CPU it costs a small
    fraction of a general solve at these sizes).
    """
    n, m, _ = gram.shape
    full = torch.arange(m, device=gram.device)[None, :] < count[:, None]  # (n, m)
    scale = torch.diagonal(gram, dim1=1, dim2=2).amax(dim=1)  # (n,)
    ok = scale > 0
    scale = torch.where(ok, scale, torch.ones_like(scale))
    diag = torch.where(full, lam * scale[:, None], torch.ones_like(scale)[:, None])
    a = gram * (full[:, :, None] & full[:, None, :]) + torch.diag_embed(diag)
    L, info = torch.linalg.cholesky_ex(a)
    coef = torch.cholesky_solve((rhs * full).unsqueeze(2), L).squeeze(2)
    bad = (info != 0) | ~torch.isfinite(coef).all(dim=1) | ~ok
    return torch.where(bad[:, None], torch.zeros_like(coef), coef)


def anderson(f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, *, max_iter: int = 50,
             tol: float = 1e-4, stop: str = "rel", memory: int = 5, lam: float = 1e-8,
             beta: float = 1.0, batch_dims: int = 1,
             divergence: float = 1e4) -> tuple[torch.Tensor, FixedPointStats]:
    """Solve ``z = f(z)`` by Anderson acceleration, per sample.

    Args:
        f, z0, max_iter, tol, stop, batch_dims, divergence: as
            :func:`~convexrecon.fixedpoint.picard.picard`.
        memory: ``m``, the number of stored differences.
        lam: Tikhonov weight of the least-squares fit, relative to the largest
            diagonal entry of the Gram matrix.
        beta: mixing ``0 < beta <= 1``.

    Returns:
        ``(z, stats)``: the lowest-residual iterate of every sample and its
        :class:`~convexrecon.fixedpoint.stats.FixedPointStats`. Runs without the tape.
    """
    check_common(f, z0, max_iter=max_iter, tol=tol, stop=stop, batch_dims=batch_dims,
                 divergence=divergence)
    if not 0 < float(beta) <= 1:
        raise InputError(f"beta: expected a number in (0, 1], got {beta!r}")
    mem = AndersonMemory(memory, lam=lam)  # checks memory and lam
    run = _Run("anderson", f, z0, tol=tol, stop=stop, batch_dims=batch_dims, divergence=divergence)
    beta = float(beta)

    def step(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        mem.push(x, g)
        return mem.mix(beta=beta)

    return run.iterate(step, max_iter=max_iter)


def _coefficients_host(gram: torch.Tensor, rhs: torch.Tensor, *, lam: float) -> torch.Tensor:
    """:func:`anderson_coefficients` for a few samples on the CPU with every slot
    filled, through numpy: at ``m`` of a few, torch's per-operation dispatch costs
    several times the LAPACK call (measured in ADMM, whose whole step is a few
    hundred microseconds)."""
    g, r = gram.detach().numpy(), rhs.detach().numpy()
    out = np.zeros(r.shape, dtype=r.dtype)
    k = g.shape[1]
    for i in range(g.shape[0]):
        scale = g[i].diagonal().max()
        if not scale > 0:
            continue
        try:
            coef = np.linalg.solve(g[i] + (lam * scale) * np.eye(k), r[i])
        except np.linalg.LinAlgError:
            continue
        if np.isfinite(coef).all():
            out[i] = coef
    return torch.from_numpy(out)


class AndersonMemory:
    """The history of type-II Anderson acceleration, per sample, on flat real vectors.

    Push accepted pairs ``(x_k, g_k)`` with ``g_k = f(x_k) - x_k``; :meth:`mix`
    returns ``x_k + beta g_k - (dX + beta dG) gamma`` for the newest pair, with
    ``gamma`` the regularised least-squares fit of ``g_k`` by the stored residual
    differences ``dG`` (:func:`anderson_coefficients`). ``x`` is ``(n, d)`` (``n``
    samples, each with its own ``m x m`` Gram matrix, updated one row per push) or a
    flat ``(d,)`` vector, a batch of one. Every push fills one slot of every sample; a
    sample that has stopped pushes its unchanged pair, a zero difference that the
    regularised fit ignores, so a sample's steps do not depend on the others. The
    caller safeguards.

    Args:
        memory: ``m``, the number of stored differences.
        lam: Tikhonov weight, relative to the largest diagonal entry of the Gram matrix.
    """

    def __init__(self, memory: int = 5, *, lam: float = 1e-8) -> None:
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise InputError(f"memory: expected an integer >= 1, got {memory!r}")
        if not float(lam) >= 0:
            raise InputError(f"lam: expected a number >= 0, got {lam!r}")
        self.m, self.lam = memory, float(lam)
        self.reset()

    def reset(self) -> None:
        """Forget the history (after a change of the map, e.g. of ADMM's ``rho``)."""
        self.x: torch.Tensor | None = None
        self.g: torch.Tensor | None = None
        self.count = self.head = 0
        self.flat = False

    def push(self, x: torch.Tensor, g: torch.Tensor) -> None:
        """Record the accepted iterate ``x`` and its residual ``g``."""
        self.flat = x.ndim == 1
        x, g = (x[None], g[None]) if self.flat else (x, g)
        if self.x is None or self.x.shape != x.shape or self.x.dtype != x.dtype \
                or self.x.device != x.device:
            n, d = x.shape
            self.dX = x.new_zeros(n, self.m, d)
            self.dG = x.new_zeros(n, self.m, d)
            self.gram = x.new_zeros(n, self.m, self.m)
            self.count = self.head = 0
            self.x, self.g = x, g
            return
        h = self.head
        torch.sub(x, self.x, out=self.dX[:, h])
        torch.sub(g, self.g, out=self.dG[:, h])
        row = torch.bmm(self.dG, self.dG[:, h].unsqueeze(2)).squeeze(2)  # (n, m)
        self.gram[:, h] = row
        self.gram[:, :, h] = row
        self.count = min(self.count + 1, self.m)
        self.head = (h + 1) % self.m
        self.x, self.g = x, g

    def mix(self, *, beta: float = 1.0) -> torch.Tensor:
        """The Anderson point of every sample (the plain mixing step ``x + beta g``
        while the memory is empty or where a sample's fit is singular)."""
        if self.x is None:
            raise InputError("AndersonMemory.mix: push a pair (x, g) first")
        c = self.count
        if c == 0:
            out = self.x + beta * self.g
        else:
            dX, dG = self.dX[:, :c], self.dG[:, :c]
            rhs = torch.bmm(dG, self.g.unsqueeze(2)).squeeze(2)
            gram = self.gram[:, :c, :c]
            if self.x.device.type == "cpu" and self.x.shape[0] <= 8:
                gamma = _coefficients_host(gram, rhs, lam=self.lam)
            else:
                gamma = anderson_coefficients(gram, rhs, torch.full_like(rhs[:, 0], c, dtype=torch.long),
                                              lam=self.lam)
            out = torch.baddbmm((self.x + beta * self.g).unsqueeze(1), gamma.unsqueeze(1),
                                dX + beta * dG, alpha=-1.0).squeeze(1)
        return out[0] if self.flat else out

    def extrapolate(self) -> torch.Tensor | None:
        """:meth:`mix` with ``beta = 1``, or ``None`` while the memory is empty (the
        caller then takes its plain step)."""
        return self.mix() if self.x is not None and self.count else None
