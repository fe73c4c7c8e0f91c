"""Conjugate gradients for ``(H + mu I) x = b`` with ``H`` Hermitian PSD (CG-SENSE).

``CG(op, b, *, mu)`` solves with an operator ``H`` (e.g. ``A.N``);
``CG.from_program(program)`` (or ``CG(program)``) solves the normal equations
``(A^H A + mu I) x = A^H y`` of a least-squares program
(:class:`~convexrecon.programs.l1.TikhonovProgram` or
:class:`~convexrecon.programs.terms.LeastSquares`).

One ``H`` application per iteration. The certificate is the relative residual
``||(H + mu I) x - b|| / ||b||`` from the CG recursion, and the objective
``1/2 <x, (H + mu I) x> - Re<x, b>`` (plus ``1/2||y||^2`` for programs) also comes
from the recursion: neither costs an operator application.

Batches. By default a batch ``(*batch, *ishape)`` is one block-diagonal system
(global inner products). With ``batch_dims=k`` the first ``k`` axes index
independent systems: every system gets its own step lengths and stops at its own
tolerance (it is left as it is while the others go on), so a batch gives what
solving its systems one by one gives; the certificate is the largest relative
residual. A differentiable solve (the data-consistency step of an unrolled network)
is :func:`cg_solve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_positive, check_trailing_shape
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.programs.terms import LeastSquares, _rinner
from convexrecon.solvers.base import Solver, State
from convexrecon.tree import real_inner

__all__ = ["CGState", "CG", "cg_solve"]


@dataclass
class CGState(State):
    """State of CG: residual ``r = b - (H + mu I) x``, direction ``p``, ``<r, r>``
    (a tensor of the batch shape: one value per system)."""

    r: Any = None
    p: Any = None
    rr: Any = None


class CG(Solver[CGState]):
    """Conjugate gradients on ``(H + mu I) x = b``.

    Args:
        op: a Hermitian PSD operator ``H`` (``ishape == oshape``), or a least-squares
            program / :class:`LeastSquares` term (then ``b`` must be ``None``: it is
            ``A^H y`` and ``H = A.N`` with the term's ``mu``).
        b: the right-hand side ``(*batch, *op.ishape)``.
        mu: Tikhonov shift (for an operator ``op``; a program carries its own).
        max_iter: iteration limit.
        tol: stop when the relative residual is at most ``tol``.
        check_every: record objective and certificate every this many iterations.
        batch_dims: how many leading axes of ``b`` index independent systems
            (``0``: the whole batch is one system).
    """

    def __init__(self, op: Any, b: torch.Tensor | None = None, *, mu: float = 0.0,
                 max_iter: int = 50, tol: float = 1e-6, check_every: int = 1,
                 batch_dims: int = 0) -> None:
        super().__init__(max_iter=max_iter, tol=tol, check_every=check_every)
        ls = getattr(op, "smooth", op)
        self.const = 0.0
        self.program = op if ls is not op else None
        if isinstance(ls, LeastSquares):
            if b is not None:
                raise InputError("b: expected None with a least-squares program (b = A^H y), got a tensor")
            if mu:
                raise InputError(f"mu: expected 0 with a program (set mu on the program), got {mu!r}")
            self.H: Operator = ls.op.N
            self.b = ls.aty
            self.mu = ls.mu
            self.const = 0.5 * ls.y_norm2
        elif isinstance(op, Operator):
            if op.ishape != op.oshape:
                raise InputError(f"op: expected a square operator (ishape == oshape), got {op.ishape} -> {op.oshape}")
            if not isinstance(b, torch.Tensor):
                raise InputError(f"b: expected a tensor, got {type(b).__name__}")
            check_trailing_shape(b, op.ishape, "b")
            self.H, self.b = op, b.to(op.dtype)
            self.mu = check_positive(mu, "mu", strict=False)
        else:
            raise InputError(f"op: expected an Operator, LeastSquares or least-squares program, "
                             f"got {type(op).__name__}")
        most = self.b.ndim - len(self.H.ishape)
        if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) \
                or not 0 <= batch_dims <= most:
            raise InputError(f"batch_dims: expected an integer in [0, {most}] (the leading "
                             f"axes of b {tuple(self.b.shape)} before {self.H.ishape}), "
                             f"got {batch_dims!r}")
        self.batch_dims = batch_dims
        b_norm = torch.sqrt(self._inner(self.b, self.b))
        self.b_norm = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))

    @classmethod
    def from_program(cls, program: Any, *, max_iter: int = 50, tol: float = 1e-6,
                     check_every: int = 1, batch_dims: int = 0) -> "CG":
        """CG on the normal equations of a least-squares program."""
        return cls(program, None, max_iter=max_iter, tol=tol, check_every=check_every,
                   batch_dims=batch_dims)

    def _inner(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``Re <a, b>`` per system: a tensor of the batch shape."""
        return real_inner(a, b, self.batch_dims)

    def _per_system(self, t: torch.Tensor) -> torch.Tensor:
        """A batch-shaped tensor broadcast against ``b``."""
        return t.reshape(t.shape + (1,) * (self.b.ndim - self.batch_dims))

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        hx = self.H.forward(x)
        return hx + self.mu * x if self.mu else hx

    def init(self, x0: torch.Tensor | None = None) -> CGState:
        if x0 is None:
            x = torch.zeros_like(self.b)
            r = self.b.clone()
        else:
            if not isinstance(x0, torch.Tensor) or x0.shape != self.b.shape:
                raise InputError(f"x0: expected a tensor of shape {tuple(self.b.shape)}, "
                                 f"got {getattr(x0, 'shape', type(x0).__name__)}")
            x = x0.to(self.b.dtype).clone()
            r = self.b - self._apply(x)
        rr = self._inner(r, r)
        return CGState(x=x, r=r, p=r, rr=rr, certificate=self._rel(rr))

    def _rel(self, rr: torch.Tensor) -> float:
        """The largest relative residual over the systems."""
        return float((torch.sqrt(torch.clamp(rr, min=0.0)) / self.b_norm).max())

    def step(self, state: CGState) -> CGState:
        hp = self._apply(state.p)
        php = self._inner(state.p, hp)
        # a system at its tolerance (or at residual 0) stays as it is, as if run alone
        live = (state.rr > 0) & (torch.sqrt(state.rr) > self.tol * self.b_norm)
        if bool((live & ~(php > 0)).any()):
            raise InputError("op: expected a positive definite H + mu I, got <p, (H + mu) p> = "
                             f"{float(php[live & ~(php > 0)].min()):g}")
        alpha = self._per_system(torch.where(live, state.rr / torch.where(live, php, 1.0), 0.0))
        x = state.x + alpha * state.p
        r = state.r - alpha * hp
        rr = self._inner(r, r)
        beta = torch.where(live, rr / torch.where(live, state.rr, 1.0), 0.0)
        p = r + self._per_system(beta) * state.p
        return CGState(x=x, it=state.it + 1, certificate=self._rel(rr), r=r, p=p, rr=rr)

    def certificate(self, state: CGState) -> float:
        return self._rel(state.rr)

    def objective(self, state: CGState) -> float:
        # (H + mu) x = b - r  =>  1/2 <x, (H+mu) x> - Re<x, b> = -1/2 Re<x, b + r>
        return -0.5 * float(_rinner(state.x, self.b) + _rinner(state.x, state.r)) + self.const


def cg_solve(op: Operator, b: torch.Tensor, *, mu: float | torch.Tensor = 0.0,
             batch_dims: int = 0, max_iter: int = 50, tol: float = 1e-6) -> torch.Tensor:
    """``x = (H + mu I)^-1 b`` by :class:`CG`, differentiable in ``b`` and ``mu``.

    For a data-consistency step inside a network (MoDL-style unrolling), where
    ``b = A^H y + mu z`` carries the gradient. The backward pass is one more CG
    solve with the same matrix, which is self-adjoint: ``g_b = (H + mu I)^-1 g_x``
    and ``g_mu = -Re <x, g_b>``, so no iterate is stored. That solve is itself a
    ``cg_solve``, so double backward works too. ``H`` is held fixed: no
    gradient reaches its parameters (coil maps, mask). Both solves stop at ``tol``
    or ``max_iter``; the gradient is as accurate as the solves.

    Args:
        op: Hermitian PSD operator ``H`` (e.g. ``A.N``).
        b: right-hand side ``(*batch, *op.ishape)``.
        mu: Tikhonov shift >= 0: a number or a 0-d tensor (may require grad).
        batch_dims: leading axes of ``b`` that index independent systems.
        max_iter, tol: as :class:`CG`, for the forward and the backward solve.
    """
    if not isinstance(op, Operator):
        raise InputError(f"op: expected an Operator, got {type(op).__name__}")
    if isinstance(mu, torch.Tensor):
        if mu.ndim != 0 or mu.is_complex():
            raise InputError(f"mu: expected a real number or 0-d real tensor, got shape "
                             f"{tuple(mu.shape)} {mu.dtype}")
        mu_t = mu
    else:
        mu_t = torch.tensor(check_positive(mu, "mu", strict=False), dtype=torch.float64)
    opts = dict(batch_dims=batch_dims, max_iter=max_iter, tol=tol, check_every=0)
    return _CGSolve.apply(b, mu_t, op, opts)


class _CGSolve(torch.autograd.Function):
    """Forward and backward of :func:`cg_solve`."""

    @staticmethod
    def forward(ctx, b, mu, op, opts):  # noqa: D102
        mu_f = float(mu)
        x = CG(op, b.detach(), mu=mu_f, **opts).run().x
        ctx.op, ctx.opts, ctx.mu, ctx.b_dtype = op, opts, mu_f, b.dtype
        ctx.save_for_backward(x, mu)
        return x

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        # the backward is itself a cg_solve, so double backward works (Jacobian
        # regularisation of a DEQ with a CG data-consistency step)
        x, mu = ctx.saved_tensors
        gb = cg_solve(ctx.op, g, mu=mu, batch_dims=ctx.opts["batch_dims"],
                      max_iter=ctx.opts["max_iter"], tol=ctx.opts["tol"])
        if gb.is_complex() and not ctx.b_dtype.is_complex:
            gb = gb.real  # a real b in a complex system: its gradient is the real part
        gb = gb.to(ctx.b_dtype)
        gmu = None
        if ctx.needs_input_grad[1]:
            gmu = -_rinner(x, gb).to(device=mu.device, dtype=mu.dtype).reshape(mu.shape)
        return gb, gmu, None, None
