"""The deep-equilibrium reconstructor: ``x = f(z*)`` with ``z* = f(z*)``.

Forward: solve for ``z*`` without the tape (Picard, Anderson or Broyden from
:mod:`convexrecon.fixedpoint`), put ``z*`` on the tape (``requires_grad_``) and take
one step ``f(z*)`` with the tape on. Backward: the gradient ``g`` arriving at that
step is replaced by the direction of the chosen mode (:mod:`.backward`): ``ift``,
``jfb``, ``shine``, ``shine-opa`` or ``shine-refine``; the tape of the one step then
carries ``u`` to the parameters. So the memory of training is that of one step of
the map, plus Broyden's ``U, V`` for SHINE.

``shine-opa`` (outer-problem awareness) needs the outer gradient ``dL/dz`` during the
forward solve: pass ``outer_grad=`` (see :func:`outer_grad_from_loss`) to the call, or
wrap the calls in ``with model.outer_problem(outer_grad):``. Every ``opa_every``
Broyden iterations it spends one extra evaluation of ``f`` and one VJP (counted in
``forward_seconds`` and ``DEQInfo.opa_vjps``) on an adjoint-Broyden update that
makes ``B^T`` exact along (nearly) the outer gradient.

Everything a call did is in ``model.last_info`` (:class:`DEQInfo`): the forward
stats, the backward info (filled in during ``loss.backward()``), ``rho`` when
measured, the Jacobian-regularisation term, and per-sample divergence flags.
A warm start is passed as ``z0`` (see :mod:`.warmstart`); at inference there is no
warm start: every call starts from the zero-filled image ``A^H y``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.fixedpoint import SOLVERS, FixedPointStats
from convexrecon.implicit.backward import BACKWARDS, BackwardInfo, backward_direction
from convexrecon.implicit.maps import batch_dims_of
from convexrecon.implicit.stabilize import hutchinson_jac_fro2, jacobian_vjp, power_rho, rho_excess
from convexrecon.operators.base import Operator

__all__ = ["DEQ", "DEQInfo", "outer_grad_from_loss"]

OuterGrad = Callable[[torch.Tensor], torch.Tensor]
SHINE_MODES = ("shine", "shine-opa", "shine-refine")


def outer_grad_from_loss(loss: Callable[[torch.Tensor], torch.Tensor]) -> OuterGrad:
    """``z -> dL/dz`` (shaped like ``z``) of a scalar loss ``L(x)`` of the DEQ output,
    by autograd, for ``shine-opa`` (e.g. ``loss = lambda x: nmse(x, target)``)."""
    if not callable(loss):
        raise InputError(f"loss: expected a callable x -> scalar loss, got {type(loss).__name__}")

    def grad(z: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            zt = z.detach().requires_grad_()
            value = loss(zt)
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise InputError("loss: expected a scalar tensor")
            (out,) = torch.autograd.grad(value, zt)
        return out

    return grad


@dataclass
class DEQInfo:
    """One DEQ call.

    Attributes:
        forward: the forward solve's :class:`FixedPointStats`.
        forward_seconds: its wall-clock.
        backward: the backward direction's :class:`BackwardInfo` (after ``backward()``).
        rho: ``(*batch,)`` contraction estimate at ``z*`` (``monitor_rho``, ``rho_reg`` or SHINE).
        jac_fro2: ``(*batch,)`` Hutchinson estimate of ``||J_f(z*)||_F^2`` (on the
            tape) when Jacobian regularisation is on.
        rho_excess: ``(*batch,)`` ``relu(rho - rho_target)^2`` on the tape when the
            ``rho`` hinge is on (``rho_reg > 0``).
        dof: real unknowns per sample (``2 * prod(A.ishape)`` for complex images).
        opa_vjps: VJPs the forward spent on outer-problem-aware updates (``shine-opa``).
        solver_bytes: bytes of the forward solver's state kept for the backward
            (Broyden's ``U, V``). A SHINE backward releases that state once it has used
            it, so ``forward.inverse_jacobian`` is then None and the next step's solve
            does not run beside the previous step's ``U, V``.
    """

    forward: FixedPointStats
    forward_seconds: float = 0.0
    backward: BackwardInfo | None = None
    rho: torch.Tensor | None = None
    jac_fro2: torch.Tensor | None = field(default=None, repr=False)
    rho_excess: torch.Tensor | None = field(default=None, repr=False)
    dof: int = 1
    opa_vjps: int = 0
    solver_bytes: int = 0

    @property
    def diverged(self) -> torch.Tensor:
        """``(*batch,)`` bool: the forward (or the IFT solve) blew up, or ``rho >= 1``."""
        flags = self.forward.diverged.clone()
        rho = self.rho if self.rho is not None else (self.backward.rho if self.backward else None)
        if rho is not None:
            flags |= (rho.detach().cpu() >= 1.0) | ~torch.isfinite(rho.detach().cpu())
        if self.backward is not None and self.backward.stats is not None:
            flags |= self.backward.stats.diverged.reshape(flags.shape)
        return flags

    @property
    def any_diverged(self) -> bool:
        return bool(self.diverged.any())


class _ImplicitGrad(torch.autograd.Function):
    """Identity forward; backward replaces ``g`` by the backward mode's ``u``."""

    @staticmethod
    def forward(ctx, fz, handle):  # noqa: D102
        ctx.handle = handle
        return fz.clone()

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        return ctx.handle(g), None


class DEQ(nn.Module):
    """A DEQ reconstructor ``forward(y, A, *, z0=None) -> x``.

    Args:
        fmap: the map (:class:`~convexrecon.implicit.maps.ProxGradMap` or
            :class:`~convexrecon.implicit.maps.CGDCMap`).
        solver: forward solver, ``"anderson"``, ``"broyden"`` or ``"picard"``.
        backward: ``"ift"``, ``"jfb"``, ``"shine"``, ``"shine-opa"`` or
            ``"shine-refine"``. SHINE modes need ``solver="broyden"``.
        opa_every: ``shine-opa``'s outer-problem-aware update every this many forward
            iterations.
        max_iter, tol: forward iterations and relative tolerance.
        solver_options: extra keywords of the forward solver (``memory``, ``beta``...).
        backward_solver, backward_max_iter, backward_tol: the IFT solve.
        refine_iter: iterations of ``shine-refine``.
        shine_threshold: a fixed SHINE fallback factor ``c``; ``None`` (default) sets it
            per sample from a measured ``rho``.
        rho_iters: power iterations of the ``rho`` estimate.
        monitor_rho: measure ``rho`` in every training call (divergence detection).
        jac_reg: weight of the Jacobian regulariser (:meth:`extra_loss`); 0 is off.
        jac_probes: Hutchinson probes per call.
        rho_reg: weight of the hinge ``mean relu(rho - rho_target)^2`` on the measured
            contraction (:func:`~convexrecon.implicit.stabilize.rho_excess`, in
            :meth:`extra_loss`); 0 is off. It measures ``rho`` in every training call.
        rho_target: the contraction the hinge holds ``rho`` under, in (0, 1).
        divergence: blow-up factor of the forward residual that counts as divergence.
    """

    def __init__(self, fmap: nn.Module, *, solver: str = "anderson", backward: str = "ift",
                 max_iter: int = 30, tol: float = 1e-3, solver_options: dict[str, Any] | None = None,
                 backward_solver: str = "anderson", backward_max_iter: int = 50,
                 backward_tol: float = 1e-6, refine_iter: int = 5,
                 shine_threshold: float | None = None, rho_iters: int = 5,
                 monitor_rho: bool = False, jac_reg: float = 0.0, jac_probes: int = 1,
                 rho_reg: float = 0.0, rho_target: float = 0.9,
                 divergence: float = 1e4, opa_every: int = 1) -> None:
        super().__init__()
        if not hasattr(fmap, "bind") or not hasattr(fmap, "init"):
            raise InputError(f"fmap: expected a DEQ map with bind(y, A) and init(y, A), got "
                             f"{type(fmap).__name__}")
        for name, value in (("solver", solver), ("backward_solver", backward_solver)):
            if value not in SOLVERS:
                raise InputError(f"{name}: expected one of {', '.join(map(repr, SOLVERS))}, got {value!r}")
        self.fmap = fmap
        self.solver = solver
        self.backward = backward
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.solver_options = dict(solver_options or {})
        self.backward_solver = backward_solver
        self.backward_max_iter, self.backward_tol = int(backward_max_iter), float(backward_tol)
        self.refine_iter = int(refine_iter)
        self.shine_threshold = shine_threshold
        self.rho_iters = int(rho_iters)
        self.monitor_rho = bool(monitor_rho)
        if not float(jac_reg) >= 0:
            raise InputError(f"jac_reg: expected a weight >= 0, got {jac_reg!r}")
        self.jac_reg, self.jac_probes = float(jac_reg), int(jac_probes)
        if not float(rho_reg) >= 0:
            raise InputError(f"rho_reg: expected a weight >= 0, got {rho_reg!r}")
        if not 0 < float(rho_target) < 1:
            raise InputError(f"rho_target: expected a contraction bound in (0, 1), got {rho_target!r}")
        self.rho_reg, self.rho_target = float(rho_reg), float(rho_target)
        self.divergence = float(divergence)
        if isinstance(opa_every, bool) or not isinstance(opa_every, int) or opa_every < 1:
            raise InputError(f"opa_every: expected an integer >= 1, got {opa_every!r}")
        self.opa_every = opa_every
        self._outer_grad: OuterGrad | None = None
        self._opa_count = [0]
        self.last_info: DEQInfo | None = None
        self.check_modes()

    def check_modes(self) -> None:
        """Validate ``solver`` and ``backward`` (they may be reassigned between calls)."""
        if self.solver not in SOLVERS:
            raise InputError(f"solver: expected one of {', '.join(map(repr, SOLVERS))}, got {self.solver!r}")
        if self.backward not in BACKWARDS:
            raise InputError(f"backward: expected one of {', '.join(map(repr, BACKWARDS))}, "
                             f"got {self.backward!r}")
        if self.backward in SHINE_MODES and self.solver != "broyden":
            raise InputError(f"backward={self.backward!r} needs solver='broyden' (SHINE reuses the "
                             f"forward Broyden's inverse-Jacobian estimate), got solver={self.solver!r}")

    @contextmanager
    def outer_problem(self, outer_grad: OuterGrad) -> Iterator["DEQ"]:
        """Within the block, calls without ``outer_grad=`` use this one (``shine-opa``)."""
        if not callable(outer_grad):
            raise InputError(f"outer_grad: expected a callable z -> dL/dz, got {type(outer_grad).__name__}")
        saved, self._outer_grad = self._outer_grad, outer_grad
        try:
            yield self
        finally:
            self._outer_grad = saved

    @staticmethod
    def _opa(f: Callable[[torch.Tensor], torch.Tensor], outer_grad: OuterGrad, count: list[int]):
        """The ``opa`` callable of :func:`~convexrecon.fixedpoint.broyden`: ``sigma = B^T dL/dz``
        and ``w = J_g^T sigma`` at the current iterate (one evaluation of ``f``, one VJP)."""

        def opa(z: torch.Tensor, bt: Callable[[torch.Tensor], torch.Tensor]):
            g = outer_grad(z)
            if not isinstance(g, torch.Tensor) or g.shape != z.shape:
                raise InputError(f"outer_grad: expected a gradient of shape {tuple(z.shape)}, got "
                                 f"{getattr(g, 'shape', type(g).__name__)}")
            sigma = bt(g.detach().to(z.dtype))
            with torch.enable_grad():
                zt = z.detach().requires_grad_()
                (jt,) = torch.autograd.grad(f(zt), zt, sigma)
            count[0] += 1
            return sigma, jt.detach() - sigma

        return opa

    # -- the call ---------------------------------------------------------------
    def solve(self, y: torch.Tensor, A: Operator, *, z0: torch.Tensor | None = None,
              outer_grad: OuterGrad | None = None) -> tuple[torch.Tensor, FixedPointStats, float]:
        """The forward fixed point ``z*`` (no tape), its stats and wall-clock.

        With ``outer_grad`` (Broyden solver only) the solve makes the
        outer-problem-aware updates of ``shine-opa``."""
        nb = batch_dims_of(y, A)
        f = self.fmap.bind(y, A)
        start = self.fmap.init(y, A) if z0 is None else z0
        expect = tuple(y.shape[:nb]) + tuple(A.ishape)
        if tuple(start.shape) != expect:
            raise InputError(f"z0: expected shape {expect}, got {tuple(start.shape)}")
        options = dict(self.solver_options)
        self._opa_count = [0]
        if outer_grad is not None:
            if self.solver != "broyden":
                raise InputError(f"outer_grad: outer-problem-aware updates need solver='broyden', got "
                                 f"{self.solver!r}")
            options.update(opa=self._opa(f, outer_grad, self._opa_count), opa_every=self.opa_every)
        t0 = time.perf_counter()
        with torch.no_grad():
            zs, stats = SOLVERS[self.solver](f, start.detach(), max_iter=self.max_iter, tol=self.tol,
                                             stop="rel", batch_dims=nb, divergence=self.divergence,
                                             **options)
        return zs, stats, time.perf_counter() - t0

    def forward(self, y: torch.Tensor, A: Operator, *, z0: torch.Tensor | None = None,
                outer_grad: OuterGrad | None = None) -> torch.Tensor:
        """``x = f(z*)`` (on the tape when grad is enabled).

        Args:
            z0: a warm start (default ``A^H y``).
            outer_grad: ``z -> dL/dz`` of the training loss, needed by ``shine-opa``
                when grad is enabled (or set by :meth:`outer_problem`); ignored by the
                other modes.
        """
        self.check_modes()
        nb = batch_dims_of(y, A)
        outer = None
        if self.backward == "shine-opa" and torch.is_grad_enabled():
            outer = outer_grad if outer_grad is not None else self._outer_grad
            if outer is None:
                raise InputError("backward='shine-opa' needs the outer gradient during the forward "
                                 "solve: pass outer_grad= (see outer_grad_from_loss) or call the model "
                                 "inside `with model.outer_problem(outer_grad):`")
        zs, stats, secs = self.solve(y, A, z0=z0, outer_grad=outer)
        dof = 1
        for s_ in A.ishape:
            dof *= int(s_)
        info = DEQInfo(forward=stats, forward_seconds=secs, dof=dof * (2 if zs.is_complex() else 1),
                       opa_vjps=self._opa_count[0])
        self.last_info = info
        f = self.fmap.bind(y, A)
        if not torch.is_grad_enabled():
            return f(zs)
        mode = self.backward
        tape_z = mode != "jfb" or self.monitor_rho or self.jac_reg > 0 or self.rho_reg > 0
        zt = zs.detach().requires_grad_(tape_z)
        fz = f(zt)
        vjp = jacobian_vjp(fz, zt) if tape_z else None
        if self.monitor_rho or self.rho_reg > 0:
            info.rho, v = power_rho(vjp, zt, iters=self.rho_iters, batch_dims=nb)
            if self.rho_reg > 0:
                info.rho_excess = rho_excess(fz, zt, v, target=self.rho_target, batch_dims=nb)
        if self.jac_reg > 0:
            info.jac_fro2 = hutchinson_jac_fro2(fz, zt, probes=self.jac_probes, batch_dims=nb)
        binv = stats.inverse_jacobian
        info.solver_bytes = int(binv.nbytes) if binv is not None else 0

        def handle(g: torch.Tensor) -> torch.Tensor:
            nonlocal binv
            if mode in SHINE_MODES and (binv is None or binv.released):
                raise InputError(f"backward {mode!r}: a second backward pass through the same DEQ "
                                 "output; the forward Broyden's U, V were released after the first")
            # SHINE forms -B^T g first and drops U, V (release) before anything else runs;
            # a rho measured in the forward replaces its power iterations
            u, binfo = backward_direction(
                mode, vjp=vjp, g=g, binv=binv, batch_dims=nb, solver=self.backward_solver,
                max_iter=self.backward_max_iter, tol=self.backward_tol,
                refine_iter=self.refine_iter, threshold=self.shine_threshold,
                rho_iters=self.rho_iters, rho=info.rho, release=True)
            info.backward = binfo
            binv = stats.inverse_jacobian = None  # U, V are not needed again
            return u

        return _ImplicitGrad.apply(fz, handle)

    def extra_loss(self) -> torch.Tensor | float:
        """The stabilisers' loss terms of the last call (0 when both are off).

        ``jac_reg * mean ||J_f||_F^2 / d``: the Hutchinson estimate divided by the number
        of real unknowns per sample ``d``, so one weight means the same at every image
        size; plus ``rho_reg * mean relu(rho - rho_target)^2``.
        """
        info = self.last_info
        total: torch.Tensor | float = 0.0
        if info is None:
            return total
        if info.jac_fro2 is not None and self.jac_reg > 0:
            total = total + self.jac_reg * info.jac_fro2.mean() / info.dof
        if info.rho_excess is not None and self.rho_reg > 0:
            total = total + self.rho_reg * info.rho_excess.mean()
        return total
