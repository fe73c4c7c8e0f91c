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

Flat vectors (e.g. an ADMM iterate) are a batch of one: ``z0`` of shape ``(1, d)``.
"""

from __future__ import annotations

from typing import Callable

import torch

from convexrecon.errors import InputError
from convexrecon.fixedpoint._common import _Run, check_common
from convexrecon.fixedpoint.stats import FixedPointStats

__all__ = ["anderson", "anderson_coefficients"]


def anderson_coefficients(gram: torch.Tensor, rhs: torch.Tensor, count: torch.Tensor, *,
                          lam: float) -> torch.Tensor:
    """Solve the regularised ``(n, m, m)`` least-squares systems of Anderson.

    Slots at or beyond a sample's ``count`` are empty (zero rows of ``dG``) and get
    coefficient 0; a singular or non-finite solve gives all-zero coefficients (the
    plain mixing step) for that sample.
    """
    n, m, _ = gram.shape
    slots = torch.arange(m, device=gram.device)
    empty = slots[None, :] >= count[:, None]  # (n, m)
    scale = torch.diagonal(gram, dim1=1, dim2=2).amax(dim=1)  # (n,)
    ok = scale > 0
    scale = torch.where(ok, scale, torch.ones_like(scale))
    diag = torch.where(empty, torch.ones_like(scale)[:, None], lam * scale[:, None])
    a = gram.masked_fill(empty[:, :, None] | empty[:, None, :], 0.0) + torch.diag_embed(diag)
    coef, info = torch.linalg.solve_ex(a, rhs.masked_fill(empty, 0.0))
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
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise InputError(f"memory: expected an integer >= 1, got {memory!r}")
    if not 0 < float(beta) <= 1:
        raise InputError(f"beta: expected a number in (0, 1], got {beta!r}")
    if not float(lam) >= 0:
        raise InputError(f"lam: expected a number >= 0, got {lam!r}")
    run = _Run("anderson", f, z0, tol=tol, stop=stop, batch_dims=batch_dims, divergence=divergence)
    beta, lam = float(beta), float(lam)
    with torch.no_grad():
        x = run.flat(z0).clone()
        n, d = x.shape
        dX = x.new_zeros(n, memory, d)
        dG = x.new_zeros(n, memory, d)
        gram = x.new_zeros(n, memory, memory)
        count = torch.zeros(n, dtype=torch.long, device=x.device)
        head = torch.zeros_like(count)
        rows = torch.arange(n, device=x.device)
        fx, g = run.evaluate(x)
        run.record(x, fx, g, 0)
        x_prev = g_prev = None
        for k in range(max_iter):
            live = run.live
            if not bool(live.any()):
                break
            if x_prev is not None:  # push the newest differences of the live samples
                h = head
                lv = live[:, None]
                dX[rows, h] = torch.where(lv, x - x_prev, dX[rows, h])
                dG[rows, h] = torch.where(lv, g - g_prev, dG[rows, h])
                row = torch.bmm(dG, dG[rows, h].unsqueeze(2)).squeeze(2)  # (n, m)
                new_gram = gram.clone()
                new_gram[rows, h] = row
                new_gram[rows, :, h] = row
                gram = torch.where(live[:, None, None], new_gram, gram)
                count = torch.where(live, torch.clamp(count + 1, max=memory), count)
                head = torch.where(live, (head + 1) % memory, head)
            rhs = torch.bmm(dG, g.unsqueeze(2)).squeeze(2)
            gamma = anderson_coefficients(gram, rhs, count, lam=lam)
            step = x + beta * g - torch.bmm(gamma.unsqueeze(1), dX + beta * dG).squeeze(1)
            x_prev, g_prev = x, g
            x = torch.where(live[:, None], step, x)
            run.advance(live)
            fx, g = run.evaluate(x)
            run.record(x, fx, g, k + 1)
    return run.result()
