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

Solver: :class:`~convexrecon.solvers.auglag.ConvReLUAugLag`, an augmented Lagrangian
on the cone constraints with the project's FISTA (exact group soft-thresholding prox)
on each subproblem. Certificate (:meth:`ConvTwoLayerReLUCone.kkt`): the relative
Lagrangian duality gap from the residual and the multipliers, scaled to dual
feasibility, plus the relative constraint violation. :meth:`recover_network` gives
the ReLU CNN (:class:`~convexrecon.programs.relu.networks.ReLUConvNet`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.base import Program
from convexrecon.programs.duality import best_scale, scale_limit
from convexrecon.programs.relu.blocks import FILTER_DIMS, group_norms
from convexrecon.programs.relu.certificates import KKT
from convexrecon.programs.relu.conv import ConvGatedReLU
from convexrecon.programs.relu.limits import CVXPY_MAX_ROWS, CVXPY_MAX_UNKNOWNS
from convexrecon.programs.relu.networks import ReLUConvNet

__all__ = ["ConvTwoLayerReLUCone"]


def _group_norms(u: torch.Tensor) -> torch.Tensor:
    """Norm of every filter: ``(..., C, k, k) -> (...)``."""
    return group_norms(u, FILTER_DIMS)


class ConvTwoLayerReLUCone(Program):
    """The per-channel cone-constrained ReLU form (module docstring).

    Arguments as :class:`~convexrecon.programs.relu.ConvGatedReLU`. Variables
    are tuples ``(V, W)`` of ``(P, C_out, C + bias, k, k)`` tensors.
    """

    _OPTIONS = ("kernel_size", "n_patterns", "seed", "generator", "padding", "bias", "gates",
                "dtype", "lipschitz", "power_iters", "power_tol")

    def __init__(self, X: Any, Y: Any, *, beta: float, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self._OPTIONS))
        if unknown:
            raise InputError(f"ConvTwoLayerReLUCone: unknown options {unknown}; expected some of "
                             f"{list(self._OPTIONS)}")
        self.gated = ConvGatedReLU(X, Y, beta=beta, **kwargs)
        self.op = self.gated.op
        self.Y = self.gated.Y
        self.beta = check_positive(beta, "beta")
        self.shape = self.gated.shape
        self.dtype = self.gated.dtype
        self.sign = 2.0 * self.op.maskf - 1.0  # (N, 1, P, 1, H, W)
        self._knorm: float | None = None

    def set_beta(self, beta: float) -> None:
        """Change the penalty weight (e.g. to a fraction of :meth:`beta_max`)."""
        self.beta = check_positive(beta, "beta")
        self.gated.set_beta(self.beta)

    @property
    def gates(self) -> torch.Tensor:
        """The gate filters ``(P, C + bias, k, k)`` that made the patterns."""
        return self.gated.gates

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

    def predict_from_conv_adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`predict_from_conv`: ``(N, Co, H, W) -> (N, 2, P, Co, H, W)``
        (the data term's gradient with respect to the convolutions is this map of
        the residual)."""
        signs = torch.tensor([1.0, -1.0], dtype=r.dtype, device=r.device).view(1, 2, 1, 1, 1, 1)
        return r.unsqueeze(1).unsqueeze(2) * self.op.maskf * signs

    def data_lipschitz(self) -> float:
        """``||A||^2`` of ``U -> sum_i D_i conv(X, U_i)`` (the data term on ``(V, W)``
        has twice it)."""
        return self.gated.smooth.lipschitz()

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

    def kkt(self, x, *, multipliers: torch.Tensor | None = None,
            conv_x: torch.Tensor | None = None) -> KKT:
        """:class:`~convexrecon.programs.relu.certificates.KKT` with ``primal`` (the
        objective), ``dual``, the relative ``gap`` and the relative ``violation``.

        ``multipliers`` ``(N, 2, P, Co, H, W) >= 0`` (from the solver; zeros if None);
        ``conv_x``: ``conv(X, x)`` when the caller has it already."""
        s = self._stack(x)
        z = self.conv(s) if conv_x is None else conv_x
        r = self.Y - self.predict_from_conv(z)  # the dual direction lam = t r
        primal = 0.5 * float(r.pow(2).sum()) + self.beta * float(_group_norms(s).sum())
        mu = torch.zeros_like(z) if multipliers is None else multipliers
        g = self.conv_adjoint(self.predict_from_conv_adjoint(r) + self.sign * mu)
        _, dual = best_scale(float((r * self.Y).sum()), float(r.pow(2).sum()),
                             scale_limit(float(_group_norms(g).max()), self.beta))
        viol = float(torch.linalg.vector_norm((z * self.sign).clamp(max=0)))
        den = float(torch.linalg.vector_norm(z))
        return KKT(violation=viol / den if den > 0 else 0.0,
                   gap=max(primal - dual, 0.0) / max(abs(primal), 1e-300),
                   primal=primal, dual=dual)

    def certificate(self, x, *, multipliers: torch.Tensor | None = None) -> float:
        """``max(relative gap, relative violation)``."""
        return self.kkt(x, multipliers=multipliers).max

    def pattern_check(self, x, *, n_fresh: int | None = None, seed: int = 12345) -> float:
        """``max ||A'_ic^T lam|| / beta`` over fresh random gates' patterns ``i`` and
        output channels ``c``, ``lam = Y - Y_hat`` (``n_fresh`` defaults to ``P``).

        Conservative for the cone form (it ignores the cone multipliers), as for
        :meth:`~convexrecon.programs.relu.TwoLayerReLU.pattern_check`: at most ``1``
        proves that no fresh pattern would enter.
        """
        lam = self.Y - self.predict(x)
        fresh = self.gated.fresh_operator(n_fresh, seed)
        return float(_group_norms(fresh.adjoint(lam)).max()) / self.beta

    def recover_network(self, x, *, rtol: float = 1e-9) -> ReLUConvNet:
        """The ReLU CNN of ``(V, W)``: per pattern ``i``, output channel ``c`` and
        filter ``v = V_ic`` of norm above ``rtol`` times the largest, a neuron with
        first-layer filter ``v / sqrt(||v||)`` and second-layer weight
        ``sqrt(||v||)`` on channel ``c`` (``-sqrt(||w||)`` for ``W``). Where the cone
        constraints hold, ``relu(conv(X, v)) = D_i conv(X, v)``: the network
        reproduces :meth:`predict`; its weight decay ``beta/2 (||u||^2 + z^2)``
        equals the penalty ``beta ||v||``.
        """
        s = self._stack(x).detach()                        # (2, P, Co, C, k, k)
        nrm = _group_norms(s)                              # (2, P, Co)
        top = float(nrm.max())
        keep = nrm > rtol * top if top > 0 else torch.zeros_like(nrm, dtype=torch.bool)
        side, idx_p, idx_c = torch.nonzero(keep, as_tuple=True)
        root = nrm[side, idx_p, idx_c].sqrt()
        first = s[side, idx_p, idx_c] / root.view(-1, 1, 1, 1)
        m, co = first.shape[0], self.op.c_out
        second = torch.zeros(co, m, 1, 1, dtype=s.dtype, device=s.device)
        sign = 1.0 - 2.0 * side.to(s.dtype)                # +1 for V, -1 for W
        second[idx_c, torch.arange(m, device=s.device), 0, 0] = sign * root
        g = self.gated
        return ReLUConvNet(first, second, padding=g.padding, bias=g.bias)

    def to_cvxpy(self, *, max_rows: int = CVXPY_MAX_ROWS, max_unknowns: int = CVXPY_MAX_UNKNOWNS):
        """``(problem, to_x)`` for small sizes; InputError beyond the limits."""
        import cvxpy as cp
        import numpy as np

        op = self.op
        n_rows = op.oshape[0] * op.oshape[2] * op.oshape[3]
        n_unk = 2 * math.prod(self.shape)
        if n_rows > max_rows or n_unk > max_unknowns:
            raise InputError(f"ConvTwoLayerReLUCone.to_cvxpy: expected N*H*W <= {max_rows} "
                             f"(CVXPY_MAX_ROWS) and 2*P*C_out*C*k*k <= {max_unknowns} "
                             f"(CVXPY_MAX_UNKNOWNS), got {n_rows} and {n_unk}")
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
