"""Conjugate gradients for ``(H + mu I) x = b`` with ``H`` Hermitian PSD (CG-SENSE).

``CG(op, b, *, mu)`` solves with an operator ``H`` (e.g. ``A.N``);
``CG.from_program(program)`` (or ``CG(program)``) solves the normal equations
``(A^H A + mu I) x = A^H y`` of a least-squares program
(:class:`~convexrecon.programs.l1.TikhonovProgram` or
:class:`~convexrecon.programs.terms.LeastSquares`).

One ``H`` application per iteration. The certificate is the relative residual
``||(H + mu I) x - b|| / ||b||`` from the CG recursion, and the objective
``1/2 <x, (H + mu I) x> - Re<x, b>`` (plus ``1/2||y||^2`` for programs) also comes
from the recursion: neither costs an operator application. Batched systems are one
block-diagonal system (global inner products).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_positive, check_trailing_shape
from convexrecon.errors import InputError
from convexrecon.operators.base import Operator
from convexrecon.programs.terms import LeastSquares, _rinner
from convexrecon.solvers.base import Solver, State

__all__ = ["CGState", "CG"]


@dataclass
class CGState(State):
    """State of CG: residual ``r = b - (H + mu I) x``, direction ``p``, ``<r, r>``."""

    r: Any = None
    p: Any = None
    rr: float = 0.0


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
    """

    def __init__(self, op: Any, b: torch.Tensor | None = None, *, mu: float = 0.0,
                 max_iter: int = 50, tol: float = 1e-6, check_every: int = 1) -> None:
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
        self.b_norm = math.sqrt(float(_rinner(self.b, self.b)))

    @classmethod
    def from_program(cls, program: Any, *, max_iter: int = 50, tol: float = 1e-6,
                     check_every: int = 1) -> "CG":
        """CG on the normal equations of a least-squares program."""
        return cls(program, None, max_iter=max_iter, tol=tol, check_every=check_every)

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
        rr = float(_rinner(r, r))
        return CGState(x=x, r=r, p=r, rr=rr, certificate=self._rel(rr))

    def _rel(self, rr: float) -> float:
        return math.sqrt(max(rr, 0.0)) / (self.b_norm if self.b_norm > 0 else 1.0)

    def step(self, state: CGState) -> CGState:
        if state.rr == 0.0:
            return CGState(x=state.x, it=state.it + 1, certificate=0.0, r=state.r, p=state.p, rr=0.0)
        hp = self._apply(state.p)
        php = float(_rinner(state.p, hp))
        if php <= 0:
            raise InputError(f"op: expected a positive definite H + mu I, got <p, (H + mu) p> = {php:g}")
        alpha = state.rr / php
        x = state.x + alpha * state.p
        r = state.r - alpha * hp
        rr = float(_rinner(r, r))
        p = r + (rr / state.rr) * state.p
        return CGState(x=x, it=state.it + 1, certificate=self._rel(rr), r=r, p=p, rr=rr)

    def certificate(self, state: CGState) -> float:
        return self._rel(state.rr)

    def objective(self, state: CGState) -> float:
        # (H + mu) x = b - r  =>  1/2 <x, (H+mu) x> - Re<x, b> = -1/2 Re<x, b + r>
        return -0.5 * float(_rinner(state.x, self.b) + _rinner(state.x, state.r)) + self.const
