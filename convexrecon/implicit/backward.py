"""Backward passes of a DEQ: the direction ``u`` that replaces ``g = dL/dz*``.

At the fixed point ``z* = f(z*)`` the exact (implicit-function-theorem) gradient
of a loss ``L(z*)`` with respect to the map's parameters is ``u^T df/dtheta`` with::

    u = J_f(z*)^T u + g          (``ift``: a fixed-point solve of VJPs)

The cheaper directions:

- ``jfb``: ``u = g`` (Jacobian-free backprop, the inversion-free DEQ).
- ``shine``: ``u = -B^T g`` with Broyden's ``B ~ (J_f - I)^-1`` from the forward
  solve, since ``(I - J_f^T)^-1 = -(J_f - I)^-T``. Per sample it falls back to JFB when
  ``||u|| > c ||g||`` (or ``u`` is not finite). ``c`` comes from a measured ``rho``
  (:func:`shine_threshold`): a contraction ``rho`` bounds ``||u_IFT|| <= ||g|| / (1 - rho)``,
  so a longer ``u`` cannot be right. A fixed ``c`` (the reference code's 1.8) is
  below the true ratio once ``rho`` exceeds about 0.8 and switches SHINE off. A
  sample whose measured ``rho`` is 1 or more falls back too: the map is not a
  contraction there, so ``I - J^T`` need not be invertible and the IFT direction
  that ``-B^T g`` estimates may not exist.
- ``shine-opa``: SHINE with outer-problem-aware Broyden updates (the SHINE paper's
  OPA). The forward Broyden makes extra adjoint-Broyden updates of ``B`` along the
  outer gradient (:func:`convexrecon.fixedpoint.broyden`'s ``opa``, driven by
  :class:`~convexrecon.implicit.deq.DEQ`), so ``-B^T g`` is accurate where it is
  used; the backward itself is SHINE's (same fallback rule). Its extra cost (one
  evaluation of ``f`` and one VJP per update) is in the forward.
- ``shine-refine``: the IFT solve started from SHINE's (fallback-checked) ``u``, for a
  few iterations.

An IFT solve that diverges for a sample (a blown-up or NaN residual: ``J^T`` is not a
contraction there) gives that sample JFB's ``g``, and the sample counts as diverged.

Each function returns ``(u, BackwardInfo)``; the time of the whole backward
direction (the ``rho`` power iterations included) is in ``info.seconds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from convexrecon.errors import InputError
from convexrecon.fixedpoint import SOLVERS, BroydenInverse, FixedPointStats
from convexrecon.implicit.stabilize import estimate_rho

__all__ = ["BACKWARDS", "BackwardInfo", "shine_threshold", "ift", "jfb", "shine", "shine_refine",
           "backward_direction"]

BACKWARDS = ("ift", "jfb", "shine", "shine-opa", "shine-refine")

Vjp = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class BackwardInfo:
    """What a backward direction cost and did.

    Attributes:
        mode: one of :data:`BACKWARDS`.
        seconds: wall-clock of the direction (solves, VJPs, ``rho`` estimate).
        vjps: vector-Jacobian products spent.
        rho: ``(*batch,)`` contraction estimate at ``z*`` (SHINE modes), else None.
        threshold: ``(*batch,)`` SHINE's fallback factor ``c``, else None.
        fallback: ``(*batch,)`` bool, samples that fell back to JFB (SHINE's rule, or a
            diverged IFT solve), else None.
        stats: the fixed-point stats of the IFT (or refinement) solve, else None.
    """

    mode: str
    seconds: float = 0.0
    vjps: int = 0
    rho: torch.Tensor | None = None
    threshold: torch.Tensor | None = None
    fallback: torch.Tensor | None = None
    stats: FixedPointStats | None = None

    @property
    def fallback_rate(self) -> float:
        """Fraction of samples that fell back to JFB (NaN when no rule applied)."""
        if self.fallback is None or not self.fallback.numel():
            return float("nan")
        return float(self.fallback.to(torch.float64).mean())


def _norms(v: torch.Tensor, batch_dims: int) -> torch.Tensor:
    v = torch.view_as_real(v) if v.is_complex() else v
    return torch.sqrt(v.pow(2).sum(dim=tuple(range(batch_dims, v.ndim))))


def shine_threshold(rho: torch.Tensor, *, margin: float = 1.1, floor: float = 1.3,
                    rho_max: float = 0.99) -> torch.Tensor:
    """SHINE's per-sample fallback factor ``c = max(floor, margin / (1 - min(rho, rho_max)))``."""
    r = torch.clamp(rho.to(torch.float64), min=0.0, max=float(rho_max))
    return torch.clamp(float(margin) / (1.0 - r), min=float(floor))


def _counting(vjp: Vjp) -> tuple[Vjp, list[int]]:
    count = [0]

    def wrapped(v: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        return vjp(v)

    return wrapped, count


def ift(vjp: Vjp, g: torch.Tensor, *, solver: str = "anderson", max_iter: int = 50,
        tol: float = 1e-6, batch_dims: int = 1, u0: torch.Tensor | None = None,
        mode: str = "ift", **solver_kwargs) -> tuple[torch.Tensor, BackwardInfo]:
    """Solve ``u = J^T u + g`` by the fixed-point ``solver`` (relative tolerance ``tol``)."""
    if solver not in SOLVERS:
        raise InputError(f"solver: expected one of {', '.join(map(repr, SOLVERS))}, got {solver!r}")
    t0 = time.perf_counter()
    vjp_c, count = _counting(vjp)
    u, stats = SOLVERS[solver](lambda u: vjp_c(u) + g, g.clone() if u0 is None else u0,
                               max_iter=max_iter, tol=tol, stop="rel", batch_dims=batch_dims,
                               **solver_kwargs)
    # a diverged solve (J^T not a contraction there) falls back to JFB's g, per sample
    fallback = stats.diverged.to(g.device)
    if bool(fallback.any()):
        u = torch.where(fallback.reshape(fallback.shape + (1,) * (g.ndim - batch_dims)), g.detach(), u)
    return u, BackwardInfo(mode=mode, seconds=time.perf_counter() - t0, vjps=count[0], stats=stats,
                           fallback=fallback if bool(fallback.any()) else None)


def jfb(g: torch.Tensor) -> tuple[torch.Tensor, BackwardInfo]:
    """Jacobian-free backprop: ``u = g``."""
    return g, BackwardInfo(mode="jfb")


def shine(vjp: Vjp, g: torch.Tensor, binv: BroydenInverse, *, batch_dims: int = 1,
          threshold: float | None = None, rho_iters: int = 5,
          generator: torch.Generator | None = None, mode: str = "shine",
          rho: torch.Tensor | None = None, release: bool = False) -> tuple[torch.Tensor, BackwardInfo]:
    """SHINE: ``u = -B^T g`` with a per-sample fallback to ``g``.

    Args:
        threshold: a fixed fallback factor ``c``; ``None`` sets it per sample from a
            ``rho`` estimate of ``rho_iters`` power iterations (:func:`shine_threshold`).
        rho: a ``(*batch,)`` estimate already measured at this ``z*`` (the forward's
            ``monitor_rho`` or ``rho_reg``); it replaces the power iterations.
        release: drop ``binv``'s ``U, V`` once ``-B^T g`` is formed, before the ``rho``
            power iterations (the caller's last use of them: less memory at the peak).
    """
    if not isinstance(binv, BroydenInverse):
        raise InputError(f"backward {mode!r} needs the forward Broyden's inverse-Jacobian estimate "
                         "(solver='broyden')")
    t0 = time.perf_counter()
    with torch.no_grad():
        u = -binv.rmatvec(g.detach())
    if release:
        binv.release()
    vjp_c, count = _counting(vjp)
    if threshold is None:
        if rho is None:
            rho = estimate_rho(vjp_c, g, iters=rho_iters, batch_dims=batch_dims, generator=generator)
        c = shine_threshold(rho)
    else:
        if not float(threshold) > 0:
            raise InputError(f"threshold: expected a number > 0, got {threshold!r}")
        c = torch.full(g.shape[:batch_dims], float(threshold), dtype=torch.float64)
        rho = None
    with torch.no_grad():
        nu, ng = _norms(u, batch_dims), _norms(g, batch_dims)
        c = c.to(nu.device)
        fallback = ~torch.isfinite(nu) | (nu.to(torch.float64) > c * ng.to(torch.float64))
        if rho is not None:  # not a contraction there: no IFT direction for SHINE to estimate
            fallback |= ~(rho.to(fallback.device) < 1.0)
        mask = fallback.reshape(fallback.shape + (1,) * (g.ndim - batch_dims))
        u = torch.where(mask, g.detach(), u)
    info = BackwardInfo(mode=mode, seconds=time.perf_counter() - t0, vjps=count[0], rho=rho,
                        threshold=c, fallback=fallback)
    return u, info


def shine_refine(vjp: Vjp, g: torch.Tensor, binv: BroydenInverse, *, refine_iter: int = 5,
                 solver: str = "anderson", tol: float = 1e-6, batch_dims: int = 1,
                 threshold: float | None = None, rho_iters: int = 5,
                 generator: torch.Generator | None = None, rho: torch.Tensor | None = None,
                 release: bool = False) -> tuple[torch.Tensor, BackwardInfo]:
    """SHINE's ``u`` (:func:`shine`) refined by ``refine_iter`` iterations of the IFT solve."""
    u0, sinfo = shine(vjp, g, binv, batch_dims=batch_dims, threshold=threshold,
                      rho_iters=rho_iters, generator=generator, rho=rho, release=release)
    u, rinfo = ift(vjp, g, solver=solver, max_iter=refine_iter, tol=tol, batch_dims=batch_dims,
                   u0=u0, mode="shine-refine")
    sinfo.mode, sinfo.stats = "shine-refine", rinfo.stats
    sinfo.seconds += rinfo.seconds
    sinfo.vjps += rinfo.vjps
    return u, sinfo


def backward_direction(mode: str, *, vjp: Vjp, g: torch.Tensor, binv: BroydenInverse | None,
                       batch_dims: int, solver: str = "anderson", max_iter: int = 50,
                       tol: float = 1e-6, refine_iter: int = 5, threshold: float | None = None,
                       rho_iters: int = 5, generator: torch.Generator | None = None,
                       rho: torch.Tensor | None = None,
                       release: bool = False) -> tuple[torch.Tensor, BackwardInfo]:
    """Dispatch on ``mode`` (one of :data:`BACKWARDS`); ``rho`` and ``release`` go to
    the SHINE modes (:func:`shine`)."""
    if mode == "ift":
        return ift(vjp, g, solver=solver, max_iter=max_iter, tol=tol, batch_dims=batch_dims)
    if mode == "jfb":
        return jfb(g)
    if mode in ("shine", "shine-opa"):  # OPA differs in the forward only
        return shine(vjp, g, binv, batch_dims=batch_dims, threshold=threshold,
                     rho_iters=rho_iters, generator=generator, mode=mode, rho=rho, release=release)
    if mode == "shine-refine":
        return shine_refine(vjp, g, binv, refine_iter=refine_iter, solver=solver, tol=tol,
                            batch_dims=batch_dims, threshold=threshold, rho_iters=rho_iters,
                            generator=generator, rho=rho, release=release)
    raise InputError(f"backward: expected one of {', '.join(map(repr, BACKWARDS))}, got {mode!r}")
