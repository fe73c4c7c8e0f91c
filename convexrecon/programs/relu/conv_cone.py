"""The cone-constrained (ReLU) form of the convex two-layer CNN program.

Per output channel ``c`` and pattern ``i`` (``V_ic``, ``W_ic`` filters ``(C, k, k)``):

    min 1/2 || sum_i D_i * conv(X, V_i - W_i) - Y ||^2 + beta sum_{i,c} (||V_ic|| + ||W_ic||)
    s.t. (2 D_i - 1) * conv(X, V_ic) >= 0,  (2 D_i - 1) * conv(X, W_ic) >= 0.

For one output channel this is *exactly* the convex program of a two-layer ReLU CNN
(``k x k`` first layer, ``1 x 1`` second layer, weight decay) restricted to the
sampled patterns. For ``C_out > 1`` it is the decoupled per-channel program: exact
for ReLU networks whose hidden units each feed one output channel, and therefore
an **upper bound** (a restriction, not the exact program) for a fully connected
vector-output ReLU network, whose exact convex form has copositive constraints.

Solver: :class:`ConvReLUAugLag`, an augmented Lagrangian on the cone constraints with
the project's FISTA (exact group soft-thresholding prox) on each subproblem.
Certificate (:meth:`ConvTwoLayerReLUCone.kkt`): the relative Lagrangian duality gap
from the residual and the multipliers, scaled to dual feasibility, plus the
relative constraint violation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.base import Program
from convexrecon.programs.composite import CompositeProgram, ProxTerm, SmoothTerm
from convexrecon.programs.relu_conv import ConvTwoLayerReLU
from convexrecon.solvers.base import Solver, State

__all__ = ["ConvTwoLayerReLUCone", "ConvReLUAugLag", "AugLagState"]


def _group_norms(u: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(u.reshape(*u.shape[:-3], -1), dim=-1)


class ConvTwoLayerReLUCone(Program):
    """The per-channel cone-constrained ReLU form (module docstring).

    Arguments as :class:`~convexrecon.programs.relu_conv.ConvTwoLayerReLU`. Variables
    are tuples ``(V, W)`` of ``(P, C_out, C + bias, k, k)`` tensors.
    """

    _OPTIONS = ("kernel_size", "n_patterns", "seed", "generator", "padding", "bias", "gates",
                "dtype", "lipschitz", "power_iters", "power_tol")

    def __init__(self, X: Any, Y: Any, *, beta: float, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self._OPTIONS))
        if unknown:
            raise InputError(f"ConvTwoLayerReLUCone: unknown options {unknown}; expected some of "
                             f"{list(self._OPTIONS)}")
        self.gated = ConvTwoLayerReLU(X, Y, beta=beta, **kwargs)
        self.op = self.gated.op
        self.Y = self.gated.Y
        self.beta = check_positive(beta, "beta")
        self.shape = self.gated.shape
        self.dtype = self.gated.dtype
        self.sign = 2.0 * self.op.maskf - 1.0  # (N, 1, P, 1, H, W)
        self._knorm: float | None = None

    def set_beta(self, beta: float) -> None:
        self.beta = check_positive(beta, "beta")

    def beta_max(self) -> float:
        """``max_{i,c} ||A_ic^T Y||``: at or above it, zero is optimal."""
        return float(_group_norms(self.gated.smooth.aty).max())

    def zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.gated.zeros()
        return z, z.clone()

    def _stack(self, x: Any) -> torch.Tensor:
        if not (isinstance(x, tuple) and len(x) == 2):
            raise InputError(f"x: expected a tuple (V, W) of tensors {self.shape}, got {type(x).__name__}")
        return torch.stack([self.gated.check_x(x[0], "V"), self.gated.check_x(x[1], "W")])

    # -- maps on stacked variables (2, P, Co, C, k, k) <-> (N, 2, P, Co, H, W) ----------
    def conv(self, s: torch.Tensor) -> torch.Tensor:
        """``(2, P, Co, C, k, k) -> (N, 2, P, Co, H, W)`` (one convolution)."""
        return self.op.conv_all(s)

    def conv_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, 2, P, Co, H, W) -> (2, P, Co, C, k, k)``."""
        return self.op.conv_all_adjoint(z)

    def predict_from_conv(self, z: torch.Tensor) -> torch.Tensor:
        zd = (z[:, 0] - z[:, 1]) * self.op.maskf[:, 0]
        return zd.sum(dim=1)

    def predict(self, x) -> torch.Tensor:
        """Model output ``(N, C_out, H, W)``."""
        return self.predict_from_conv(self.conv(self._stack(x)))

    def k_norm2(self) -> float:
        """``||K||^2 = lambda_max(patches^T patches)`` (cached; per-image chunks)."""
        if self._knorm is None:
            k = self.op.kernel_size
            gram = None
            for img in self.op.x_padded.split(1):
                cols = torch.nn.functional.unfold(img, k)[0].double()
                g = cols @ cols.T
                gram = g if gram is None else gram + g
            self._knorm = float(torch.linalg.eigvalsh(gram)[-1])
        return self._knorm

    # -- objective and certificates -----------------------------------------------------
    def value(self, x) -> float:
        s = self._stack(x)
        r = self.predict_from_conv(self.conv(s)) - self.Y
        return 0.5 * float(r.pow(2).sum()) + self.beta * float(_group_norms(s).sum())

    def violation(self, x) -> float:
        """``||min(slack, 0)|| / ||slack||`` with ``slack = (2D - 1) conv(X, .)``."""
        z = self.conv(self._stack(x)) * self.sign
        den = float(torch.linalg.vector_norm(z))
        return float(torch.linalg.vector_norm(z.clamp(max=0))) / den if den > 0 else 0.0

    def kkt(self, x, *, multipliers: torch.Tensor | None = None) -> dict[str, float]:
        """``primal``, ``dual``, relative ``gap`` and relative ``violation``.

        ``multipliers`` ``(N, 2, P, Co, H, W) >= 0`` (from the solver; zeros if None)."""
        s = self._stack(x)
        z = self.conv(s)
        r = self.Y - self.predict_from_conv(z)  # the dual direction lam = t r
        primal = 0.5 * float(r.pow(2).sum()) + self.beta * float(_group_norms(s).sum())
        mu = torch.zeros_like(z) if multipliers is None else multipliers
        dz = r.unsqueeze(1).unsqueeze(2) * self.op.maskf  # (N, 1, P, Co, H, W)
        signs = torch.tensor([1.0, -1.0], dtype=z.dtype, device=z.device).view(1, 2, 1, 1, 1, 1)
        g = self.conv_adjoint(dz * signs + self.sign * mu)
        ratio = float(_group_norms(g).max()) / self.beta
        f, c = 0.5 * float(r.pow(2).sum()), float((r * self.Y).sum())
        t = c / (2 * f) if f > 0 else math.inf
        t = max(0.0, min(t, 1.0 / ratio if ratio > 0 else math.inf))
        dual = t * c - t * t * f if math.isfinite(t) else -math.inf
        viol = float(torch.linalg.vector_norm((z * self.sign).clamp(max=0)))
        den = float(torch.linalg.vector_norm(z))
        return dict(primal=primal, dual=dual, gap=max(primal - dual, 0.0) / max(abs(primal), 1e-300),
                    violation=viol / den if den > 0 else 0.0)

    def certificate(self, x, *, multipliers: torch.Tensor | None = None) -> float:
        """``max(relative gap, relative violation)``."""
        info = self.kkt(x, multipliers=multipliers)
        return max(info["gap"], info["violation"])

    def to_cvxpy(self, *, max_rows: int = 512, max_unknowns: int = 4096):
        """``(problem, to_x)`` for small sizes; InputError beyond the limits."""
        import cvxpy as cp
        import numpy as np

        op = self.op
        n_rows = op.oshape[0] * op.oshape[2] * op.oshape[3]
        n_unk = 2 * math.prod(self.shape)
        if n_rows > max_rows or n_unk > max_unknowns:
            raise InputError(f"ConvTwoLayerReLUCone.to_cvxpy: expected N*H*W <= {max_rows} and "
                             f"2*P*C_out*C*k*k <= {max_unknowns}, got {n_rows} and {n_unk}")
        xm = op.patch_matrix().detach().cpu().double().numpy()
        dm = op.mask_matrix().detach().cpu().double().numpy()
        ym = self.Y.permute(0, 2, 3, 1).reshape(-1, op.c_out).detach().cpu().double().numpy()
        p, co, d = op.n_patterns, op.c_out, xm.shape[1]
        v = cp.Variable((p * co, d))
        w = cp.Variable((p * co, d))
        cons, cols = [], []
        for c in range(co):
            pred = 0
            for i in range(p):
                j = i * co + c
                sgn = (2 * dm[:, i] - 1)[:, None]
                cons += [cp.multiply(sgn, xm @ v[j][:, None]) >= 0,
                         cp.multiply(sgn, xm @ w[j][:, None]) >= 0]
                pred = pred + cp.multiply(dm[:, i], xm @ (v[j] - w[j]))
            cols.append(pred)
        obj = 0.5 * sum(cp.sum_squares(cols[c] - ym[:, c]) for c in range(co))
        obj = obj + self.beta * (cp.sum(cp.norm(v, 2, axis=1)) + cp.sum(cp.norm(w, 2, axis=1)))
        problem = cp.Problem(cp.Minimize(obj), cons)

        def to_x():
            f = lambda a: torch.as_tensor(np.asarray(a).reshape(self.shape), dtype=self.dtype,  # noqa: E731
                                          device=self.Y.device)
            return f(v.value), f(w.value)

        return problem, to_x


class _ALSmooth(SmoothTerm):
    """Data term plus the augmented-Lagrangian penalty, on stacked ``(2, P, Co, C, k, k)``."""

    def __init__(self, prog: ConvTwoLayerReLUCone, mu: torch.Tensor, rho: float, lip: float) -> None:
        self.prog, self.mu, self.rho, self._lip = prog, mu, rho, lip

    def value_and_grad(self, s):
        p = self.prog
        z = p.conv(s)
        e = p.predict_from_conv(z) - p.Y
        act = (self.mu - self.rho * p.sign * z).clamp(min=0)
        val = 0.5 * e.pow(2).sum() + (act.pow(2).sum() - self.mu.pow(2).sum()) / (2 * self.rho)
        signs = torch.tensor([1.0, -1.0], dtype=z.dtype, device=z.device).view(1, 2, 1, 1, 1, 1)
        gz = e.unsqueeze(1).unsqueeze(2) * p.op.maskf * signs - p.sign * act
        return val, p.conv_adjoint(gz)

    def value(self, s):
        return self.value_and_grad(s)[0]

    def grad(self, s):
        return self.value_and_grad(s)[1]

    def lipschitz(self) -> float:
        return self._lip


class _GroupPenalty(ProxTerm):
    def __init__(self, beta: float) -> None:
        self.beta = beta

    def value(self, s):
        return self.beta * _group_norms(s).sum()

    def prox(self, s, step: float):
        nrm = _group_norms(s)[..., None, None, None]
        return s * (1.0 - step * self.beta / nrm.clamp_min(torch.finfo(s.dtype).tiny)).clamp_min(0.0)


class _ALProgram(CompositeProgram):
    def zeros(self):
        raise InputError("x0: the AL subproblem needs a starting point")


@dataclass
class AugLagState(State):
    """Outer state: stacked variable ``s``, multipliers ``mu``, penalty ``rho``."""

    s: Any = None
    mu: Any = None
    rho: float = 1.0
    violation: float = math.inf


class ConvReLUAugLag(Solver[AugLagState]):
    """Augmented Lagrangian for :class:`ConvTwoLayerReLUCone` (FISTA subproblems).

    Args:
        program: the cone program.
        tol: stop when ``max(gap, violation) <= tol``.
        max_outer: outer iterations (multiplier updates).
        inner_iter: FISTA iterations per subproblem.
        rho: penalty (default ``lipschitz(data) / ||K||^2``); doubled whenever the
            violation does not halve (while above ``tol / 10``; at most 1000-fold).
        time_budget: stop after this many seconds (``None``: no limit).
    """

    def __init__(self, program: ConvTwoLayerReLUCone, *, tol: float = 1e-3, max_outer: int = 50,
                 inner_iter: int = 50, rho: float | None = None,
                 time_budget: float | None = None) -> None:
        super().__init__(max_iter=max_outer, tol=tol, check_every=1)
        if not isinstance(program, ConvTwoLayerReLUCone):
            raise InputError(f"program: expected a ConvTwoLayerReLUCone, got {type(program).__name__}")
        self.program = program
        self.inner_iter = int(inner_iter)
        self.rho0 = None if rho is None else check_positive(rho, "rho")
        self.time_budget = time_budget
        self.multipliers: torch.Tensor | None = None
        self._t0 = 0.0

    def init(self, x0=None) -> AugLagState:
        p = self.program
        self._t0 = time.perf_counter()
        x0 = p.zeros() if x0 is None else x0
        s = p._stack(x0).clone()
        n, co, h, w = p.op.oshape
        mu = torch.zeros(n, 2, p.op.n_patterns, co, h, w, dtype=s.dtype, device=s.device)
        ld = 2.0 * p.gated.smooth.lipschitz()
        rho = self.rho0 if self.rho0 is not None else ld / p.k_norm2()
        self.rho_cap = 1e3 * rho
        return AugLagState(x=(s[0], s[1]), s=s, mu=mu, rho=rho)

    def step(self, state: AugLagState) -> AugLagState:
        from convexrecon.solvers.fista import FISTA

        p = self.program
        lip = 2.0 * p.gated.smooth.lipschitz() + state.rho * p.k_norm2()
        sub = _ALProgram(_ALSmooth(p, state.mu, state.rho, lip), _GroupPenalty(p.beta))
        s = FISTA(sub, max_iter=self.inner_iter, tol=0.0, check_every=0).run(state.s).x
        z = p.conv(s) * p.sign
        mu = (state.mu - state.rho * z).clamp(min=0)
        den = float(torch.linalg.vector_norm(z))
        viol = float(torch.linalg.vector_norm(z.clamp(max=0))) / den if den > 0 else 0.0
        grow = viol > 0.5 * state.violation and viol > 0.1 * self.tol and state.rho < self.rho_cap
        rho = state.rho * 2.0 if grow else state.rho
        self.multipliers = mu
        return AugLagState(x=(s[0], s[1]), it=state.it + 1, certificate=state.certificate,
                           s=s, mu=mu, rho=rho, violation=viol)

    def done(self, state: AugLagState) -> bool:
        if self.time_budget is not None and time.perf_counter() - self._t0 > self.time_budget:
            return True
        return super().done(state)

    def objective(self, state: AugLagState) -> float:
        return self.program.value(state.x)

    def certificate(self, state: AugLagState) -> float:
        return self.program.certificate(state.x, multipliers=state.mu)
