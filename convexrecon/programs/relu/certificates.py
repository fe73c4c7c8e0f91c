"""Optimality certificates of the convex two-layer programs.

* Gated form: the duality gap. The dual of
  ``min 1/2||A U - Y||^2 + beta sum_i ||U_i||`` is
  ``max <lam, Y> - 1/2||lam||^2`` s.t. ``||X^T D_i lam||_* <= beta`` (the dual norm:
  Euclidean for one column, spectral for the nuclear penalty). The dual point is
  best feasible multiple of the residual ``Y - A U`` (or of a solver's candidate,
  such as a least-squares fit of ADMM's block dual).
* ReLU form: the KKT triple at ``(V, W)`` with multipliers ``mu >= 0`` of the cone
  constraints ``(2 D_i - I) X u >= 0``:

  - violation: ``max (-(2 D_i - I) X u)_+`` relative to ``max |y|``;
  - stationarity: the minimum-norm subgradient of the Lagrangian in each block,
    ``dist(-(grad_j - H_j mu_j), beta * d||u_j||)`` with ``H_j = X^T (2 D_j - I)``,
    maximised over blocks and divided by ``beta``;
  - complementarity: ``sum |mu * slack|`` relative to the objective value.

  The duality gap of the ReLU form is also available (:func:`relu_gap`): its dual
  is ``max <lam, Y> - 1/2||lam||^2`` over ``lam`` and ``mu >= 0`` subject to
  ``||X^T (s_j D_j lam + (2 D_j - I) mu_j)|| <= beta`` for every block ``j``
  (``s_j = +1`` for ``v``, ``-1`` for ``w``); a candidate ``(lam, mu)`` is scaled
  into that set. With the violation it bounds the relative suboptimality.

* Pattern sufficiency: ``max ||X^T D lam|| / beta`` over freshly sampled patterns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from convexrecon.programs.duality import best_scale, scale_limit

__all__ = ["GapResult", "KKT", "KKTResidual", "gated_gap", "gated_kkt", "gated_dual_point", "scaled_dual", "fresh_ratio",
           "relu_kkt", "relu_gap", "estimate_multipliers"]


@dataclass
class GapResult:
    """Primal and dual values, the gap, and the gap relative to the primal value."""

    primal: float
    dual: float
    gap: float
    relative: float


@dataclass
class KKT:
    """Relative optimality measures of a convex two-layer program at a point, the
    same dataclass for all four programs (0 at the optimum; ``nan``: not measured
    by that program).

    * ``violation``: relative cone-constraint violation (0 for the gated forms);
    * ``stationarity``, ``complementarity``: the rest of the KKT triple (cone form
      on data matrices);
    * ``gap``: relative duality gap, with its ``primal`` and ``dual`` values.

    ``max`` is the largest measured one: the stopping scalar, and what
    ``program.certificate`` returns.
    """

    violation: float = 0.0
    stationarity: float = math.nan
    complementarity: float = math.nan
    gap: float = math.nan
    primal: float = math.nan
    dual: float = math.nan

    @property
    def max(self) -> float:
        parts = [v for v in (self.violation, self.stationarity, self.complementarity, self.gap)
                 if not math.isnan(v)]
        return max(parts) if parts else math.nan


KKTResidual = KKT
"""The former name of :class:`KKT`."""


def _dual_norms(Z: torch.Tensor, *, per_column: bool) -> torch.Tensor:
    """Dual norms of blocks ``(P, d, c)``: Euclidean per column or spectral per block."""
    if per_column or Z.shape[-1] == 1:
        return torch.linalg.vector_norm(Z, dim=1).amax(dim=-1)
    return torch.linalg.matrix_norm(Z, ord=2)


def _scale(data, w: torch.Tensor, Atw: torch.Tensor) -> tuple[float, float]:
    """The best feasible multiple ``t w`` of a candidate ``w`` (with ``Atw = A^T w``):
    ``(t, dual value)`` (:func:`~convexrecon.programs.duality.best_scale`; the
    feasible set is symmetric, ``|t| <= beta / max_i ||X^T D_i w||_*``)."""
    worst = float(_dual_norms(Atw, per_column=False).max())
    return best_scale(float(torch.sum(w * data.Y)), float(torch.sum(w * w)),
                      scale_limit(worst, data.beta), symmetric=True)


def scaled_dual(data, w: torch.Tensor, Atw: torch.Tensor) -> float:
    """Dual value of the gated program at the best feasible multiple of ``w``
    (``(n, c)``), given ``Atw = A^T w`` (``(P, d, c)``): a lower bound on the optimum."""
    return _scale(data, w, Atw)[1]


def _scaled(data, w: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(t w, dual value)`` of :func:`_scale`."""
    t, value = _scale(data, w, data.adjoint(w))
    return t * w, value


KERNEL_LIMIT = 3000


def _kernel_pinv(data):
    """Cached eigendecomposition of the ``n x n`` kernel ``A A^T`` (``None`` if too big)."""
    cached = getattr(data, "_kernel_eig", None)
    if cached is None and data.n <= KERNEL_LIMIT:
        lam, Q = torch.linalg.eigh(data.kernel())
        cut = 1e-10 * max(float(lam.max()), 1e-300)
        inv = torch.where(lam > cut, 1.0 / torch.clamp(lam, min=cut), torch.zeros_like(lam))
        cached = (Q, inv)
        data._kernel_eig = cached
    return cached


def subgradient_dual(prog, U: torch.Tensor) -> torch.Tensor | None:
    """Least-squares dual ``w`` with ``A^T w ~ Z``, ``Z`` the subgradient guess at ``U``.

    ``Z_i = beta U_i / ||U_i||_*``-direction for non-zero blocks (``beta`` times the
    polar factor for several columns) and the residual correlation
    ``X^T D_i (Y - A U)`` clipped to the ``beta`` ball for zero blocks. At the
    optimum ``Z = A^T w*``; the error is first order in the primal error without
    the ``||X||^2`` amplification of the plain residual. ``None`` when ``n`` exceeds
    :data:`KERNEL_LIMIT`.
    """
    data = prog.data
    eig = _kernel_pinv(data)
    if eig is None:
        return None
    Q, inv = eig
    G = data.adjoint(data.Y - data.apply(U))
    gn = _dual_norms(G, per_column=False).reshape(-1, 1, 1)
    Zoff = G * torch.clamp(data.beta / torch.clamp(gn, min=1e-300), max=1.0)
    if U.shape[-1] == 1:
        nrm = torch.linalg.vector_norm(U, dim=1, keepdim=True)
        Zon = data.beta * U / torch.clamp(nrm, min=1e-300)
    else:
        L, _, Vh = torch.linalg.svd(U, full_matrices=False)
        Zon = data.beta * (L @ Vh)
        nrm = torch.linalg.matrix_norm(U, ord="fro").reshape(-1, 1, 1)
    Z = torch.where(nrm > 0, Zon, Zoff)
    return Q @ ((Q.T @ data.apply(Z)) * inv.unsqueeze(-1))


def gated_dual_point(prog, U: torch.Tensor, *, dual: torch.Tensor | None = None) -> torch.Tensor:
    """The best feasible dual point among multiples of the residual ``Y - A U`` and
    of the candidate ``dual`` (``(n, c)``, e.g. from a solver) or, when none is
    given, of :func:`subgradient_dual` (which needs an ``n x n`` eigendecomposition)."""
    data = prog.data
    cands = [data.Y - data.apply(U)]
    if dual is not None:
        cands.append(dual.reshape(data.Y.shape).to(data.Y))
    else:
        w = subgradient_dual(prog, U)
        if w is not None:
            cands.append(w)
    best = max((_scaled(data, w) for w in cands), key=lambda p: p[1])
    return best[0]


def gated_gap(prog, U: torch.Tensor, *, dual: torch.Tensor | None = None) -> GapResult:
    """Duality gap of the gated program at ``U`` (dual point: :func:`gated_dual_point`).

    Any candidate ``dual`` is first scaled into the dual feasible set, so the
    gap is a valid bound whatever the candidate.
    """
    data = prog.data
    lam = gated_dual_point(prog, U, dual=dual)
    primal = float(prog.smooth.value(U) + prog.reg.value(U))
    dual_value = float(torch.sum(lam * data.Y) - 0.5 * torch.sum(lam ** 2))
    gap = max(primal - dual_value, 0.0)
    denom = max(abs(primal), abs(dual_value), 1e-300)
    return GapResult(primal=primal, dual=dual_value, gap=gap, relative=gap / denom)


def gated_kkt(prog, U: torch.Tensor, *, dual: torch.Tensor | None = None) -> KKT:
    """:class:`KKT` of a gated program: no constraints (``violation = 0``) and the
    relative duality gap of :func:`gated_gap` with its primal and dual values."""
    g = gated_gap(prog, U, dual=dual)
    return KKT(violation=0.0, gap=g.relative, primal=g.primal, dual=g.dual)


def fresh_ratio(data, lam: torch.Tensor, *, n_fresh: int, seed: int,
                per_column: bool = False, chunk: int = 256) -> float:
    """``max ||X^T D lam|| / beta`` over ``n_fresh`` patterns from fresh Gaussian gates."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    worst = 0.0
    done = 0
    while done < n_fresh:
        m = min(chunk, n_fresh - done)
        g = torch.randn(data.d, m, generator=gen, dtype=torch.float64).to(
            device=data.X.device, dtype=data.X.dtype)
        Dm = (data.X @ g >= 0).to(data.X.dtype)
        Z = data.xt(Dm.unsqueeze(-1) * lam.unsqueeze(1))
        worst = max(worst, float(_dual_norms(Z, per_column=per_column).max()))
        done += m
    return worst / data.beta


def _stack(prog, x):
    V, W = x
    U = torch.cat([V, W], dim=0)
    R = prog.data.apply(V - W) - prog.data.Y
    G0 = prog.data.adjoint(R)
    grads = torch.cat([G0, -G0], dim=0)
    E2 = torch.cat([prog.E, prog.E], dim=1)
    S = E2.unsqueeze(-1) * prog.data.xu(U)
    return U, R, grads, E2, S


def _zero_blocks(U: torch.Tensor, zero_tol: float) -> torch.Tensor:
    nrm = torch.linalg.vector_norm(U, dim=1)  # (2P, c)
    return nrm <= zero_tol * max(float(nrm.max()), 1e-300)


def estimate_multipliers(prog, x, *, iters: int = 500, act_tol: float = 1e-6,
                         zero_tol: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative least-squares estimate of the cone multipliers ``(mu_v, mu_w)``.

    Each block's multiplier lives on its active set (slack at most ``act_tol``
    times the largest slack) and minimises the stationarity residual, by projected
    accelerated gradient (``iters`` steps, batched over blocks).
    """
    data = prog.data
    U, _, grads, E2, S = _stack(prog, x)
    zero = _zero_blocks(U, zero_tol)
    nrm = torch.linalg.vector_norm(U, dim=1, keepdim=True)
    unit = torch.where(zero.unsqueeze(1), torch.zeros_like(U), U / torch.clamp(nrm, min=1e-300))
    target = grads + data.beta * unit  # want H mu ~ target
    active = (S <= act_tol * max(float(S.abs().max()), 1e-300)).to(U.dtype)
    lip = float(torch.linalg.matrix_norm(data.X, ord=2)) ** 2
    mu = _lstsq_start(data.X, E2, target, active, zero)
    z = mu.clone()
    t = 1.0

    def resid(m):
        return target - data.xt(E2.unsqueeze(-1) * m)

    for _ in range(iters):
        g = -E2.unsqueeze(-1) * data.xu(resid(z))
        new = torch.clamp(z - g / lip, min=0.0) * active
        t_new = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        z = new + ((t - 1.0) / t_new) * (new - mu)
        mu, t = new, t_new
    P = data.P
    return mu[:, :P], mu[:, P:]


def _lstsq_start(X: torch.Tensor, E2: torch.Tensor, target: torch.Tensor,
                 active: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Least-squares multipliers on each non-zero block's (small) active set, clamped >= 0."""
    n, d = X.shape
    mu = torch.zeros(n, *target.shape[::2], dtype=X.dtype, device=X.device)  # (n, 2P, c)
    for j, k in (~zero).nonzero().tolist():
        idx = active[:, j, k].nonzero().flatten()
        if idx.numel() == 0 or idx.numel() > d:
            continue
        H = X[idx].T * E2[idx, j]
        sol = torch.linalg.lstsq(H, target[j, :, k].unsqueeze(-1)).solution[:, 0]
        mu[idx, j, k] = torch.clamp(sol, min=0.0)
    return mu


def relu_kkt(prog, x, *, multipliers=None, zero_tol: float = 1e-7) -> KKT:
    """The relative KKT triple at ``x = (V, W)`` (see the module docstring)."""
    data = prog.data
    if multipliers is None:
        multipliers = estimate_multipliers(prog, x, zero_tol=zero_tol)
    mu = torch.clamp(torch.cat(list(multipliers), dim=1), min=0.0)
    U, R, grads, E2, S = _stack(prog, x)
    zero = _zero_blocks(U, zero_tol)
    nrm = torch.linalg.vector_norm(U, dim=1, keepdim=True)
    g = grads - data.xt(E2.unsqueeze(-1) * mu)  # (2P, d, c)
    unit = U / torch.clamp(nrm, min=1e-300)
    res_nz = torch.linalg.vector_norm(g + data.beta * unit, dim=1)
    res_z = torch.clamp(torch.linalg.vector_norm(g, dim=1) - data.beta, min=0.0)
    stat = torch.where(zero, res_z, res_nz)
    objective = float(0.5 * torch.sum(R ** 2) + data.beta * torch.linalg.vector_norm(U, dim=1).sum())
    yscale = max(float(data.Y.abs().max()), 1e-300)
    return KKT(
        violation=float(torch.clamp(-S, min=0.0).max()) / yscale,
        stationarity=float(stat.max()) / data.beta,
        complementarity=float(torch.sum(torch.abs(mu * S))) / max(objective, 1e-300),
    )


def relu_gap(prog, x, *, multipliers, dual: torch.Tensor | None = None) -> GapResult:
    """Duality gap of the ReLU form at ``x = (V, W)`` (see the module docstring).

    The dual candidate is ``(lam, mu)`` with ``lam`` the residual ``Y - A x`` or,
    when given, ``dual`` (``(n, c)``; the better one is kept) and ``mu`` the
    non-negative part of ``multipliers`` ``(mu_v, mu_w)``. Each output column of
    the pair is scaled by its own ``t_j in [0, t_max_j]`` into the dual feasible
    set (the columns' constraints are separate, as are their block norms), ``t_j``
    maximising the dual value, so the gap is a valid bound for any candidate. The
    primal value is taken at ``x`` as is: read it together with the violation.
    """
    data = prog.data
    V, W = x
    mu = torch.clamp(torch.cat(list(multipliers), dim=1), min=0.0)  # (n, 2P, c)
    E2 = torch.cat([prog.E, prog.E], dim=1)
    Ds = torch.cat([data.Dm, -data.Dm], dim=1)
    R = data.Y - data.apply(V - W)
    primal = float(0.5 * torch.sum(R ** 2) + data.beta * (
        torch.linalg.vector_norm(V, dim=1).sum() + torch.linalg.vector_norm(W, dim=1).sum()))
    cands = [R] if dual is None else [R, dual.reshape(R.shape).to(R)]
    best = -math.inf
    n, N, c = mu.shape
    for lam in cands:
        Z = Ds.unsqueeze(-1) * lam.unsqueeze(1) + E2.unsqueeze(-1) * mu  # (n, 2P, c)
        H = (data.X.T @ Z.reshape(n, N * c)).reshape(-1, N, c)
        worst = torch.linalg.vector_norm(H, dim=0).amax(dim=0).tolist()  # per column
        value = sum(best_scale(a, b, scale_limit(w_j, data.beta))[1] for w_j, a, b in zip(
            worst, (lam * data.Y).sum(0).tolist(), (lam * lam).sum(0).tolist()))
        best = max(best, value)
    gap = max(primal - best, 0.0)
    denom = max(abs(primal), abs(best), 1e-300)
    return GapResult(primal=primal, dual=best, gap=gap, relative=gap / denom)
