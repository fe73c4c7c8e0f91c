"""ADMM with exact, factorised linear steps for the convex two-layer programs.

Both solvers split the block variable ``u`` from a copy ``q`` that carries the
block penalty (group or nuclear prox). The ReLU form also splits the cone
constraints, ``s = (2 D - I) X u >= 0``. Because ``(2 D - I)^2 = I`` the Gram of
that split is ``I (x) X^T X``, so every ``u``-step solves

    (A^T A + rho (I (x) M)) u = r,      M = I (gated) or I + gamma X^T X (ReLU),

with ``A u = sum_j s_j D_j X u_j``. The factorisation (:class:`BlockSystem`) is an
eigendecomposition computed once: of the ``n x n`` matrix ``A (I (x) M^-1) A^T =
m (X M^-1 X^T) * (D D^T)`` through the Woodbury identity when ``n`` is below the
number of unknowns, else of the (small) primal matrix. Any ``rho`` then costs
nothing, so the penalty is adapted freely by residual balancing.

Both solvers stop on the program's own certificate (the relative duality gap for
the gated form; the KKT triple, plus ``violation <= feas_tol``, for the ReLU form)
and accept a warm start ``x0`` and the unscaled dual (``run(x0, dual=...)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from convexrecon._checks import check_positive
from convexrecon.errors import InputError
from convexrecon.programs.relu import GatedReLU, TwoLayerReLU, prox_group, prox_nuclear
from convexrecon.solvers.base import Result, Solver, State

__all__ = ["BlockSystem", "ADMMGated", "ADMMReLU", "ADMMState"]


class BlockSystem:
    """Factorised solver of ``(A^T A + rho (I (x) M)) U = R`` for blocks ``(N, d, c)``.

    Args:
        X: data ``(n, d)``.
        Ds: signed patterns ``(n, N)``: column ``j`` is ``s_j * diag(D_j)``.
        M: SPD ``(d, d)`` metric of the penalty, or ``None`` for the identity.
    """

    def __init__(self, X: torch.Tensor, Ds: torch.Tensor, M: torch.Tensor | None = None) -> None:
        self.X, self.Ds = X, Ds
        n, d = X.shape
        N = Ds.shape[1]
        if M is None:
            self.Mih = None  # M^{-1/2} = I
        else:
            ev, Q = torch.linalg.eigh(M)
            self.Mih = (Q * ev.rsqrt()) @ Q.T
        self.woodbury = n <= N * d
        if self.woodbury:
            Xt = X if self.Mih is None else X @ self.Mih
            K = (Xt @ Xt.T) * (Ds @ Ds.T)
        else:
            Xt = X if self.Mih is None else X @ self.Mih
            Amat = (Ds.unsqueeze(-1) * Xt.unsqueeze(1)).reshape(n, N * d)
            K = Amat.T @ Amat
        lam, self.Q = torch.linalg.eigh(K)
        self.lam = torch.clamp(lam, min=0.0)

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of the factorised Gram (nonzero part of ``A M^-1 A^T``)."""
        return self.lam

    def apply(self, U: torch.Tensor) -> torch.Tensor:
        """``A U = sum_j s_j D_j X U_j``: ``(N, d, c) -> (n, c)``."""
        N, d, c = U.shape
        XU = (self.X @ U.permute(1, 0, 2).reshape(d, N * c)).reshape(-1, N, c)
        return (XU * self.Ds.unsqueeze(-1)).sum(dim=1)

    def adjoint(self, R: torch.Tensor) -> torch.Tensor:
        """``A^T R``: ``(n, c) -> (N, d, c)``."""
        n, c = R.shape
        N, d = self.Ds.shape[1], self.X.shape[1]
        Z = (self.Ds.unsqueeze(-1) * R.unsqueeze(1)).reshape(n, N * c)
        return (self.X.T @ Z).reshape(d, N, c).permute(1, 0, 2)

    def _mih(self, U: torch.Tensor) -> torch.Tensor:
        return U if self.Mih is None else self.Mih @ U

    def solve(self, R: torch.Tensor, rho: float) -> torch.Tensor:
        """``U = (A^T A + rho (I (x) M))^{-1} R`` for ``R`` of shape ``(N, d, c)``."""
        Rt = self._mih(R)  # M^{-1/2} R, system in the whitened variable
        if self.woodbury:
            Z = self.apply(self._mih(Rt))
            W = self.Q @ ((self.Q.T @ Z) / (rho + self.lam).unsqueeze(-1))
            Ut = (Rt - self._mih(self.adjoint(W))) / rho
        else:
            N, d, c = Rt.shape
            flat = Rt.reshape(N * d, c)
            Ut = (self.Q @ ((self.Q.T @ flat) / (rho + self.lam).unsqueeze(-1))).reshape(N, d, c)
        return self._mih(Ut)


@dataclass
class ADMMState(State):
    """ADMM state. ``x`` is the returned (group-sparse) iterate ``q`` in program
    format; ``dual`` the unscaled dual of the split(s); ``rho`` the current penalty."""

    u: Any = None
    q: Any = None
    lam: Any = None
    s: Any = None
    nu: Any = None
    rho: float = 1.0
    primal_residual: float = math.inf
    dual_residual: float = math.inf
    violation: float = math.inf
    n_rho_updates: int = 0


class _ADMMBase(Solver[ADMMState]):
    """Shared options, penalty adaptation and the dtype/device handling."""

    def __init__(self, program, *, max_iter: int = 10000, tol: float = 1e-6,
                 check_every: int = 10, rho: float | None = None, alpha: float = 1.6,
                 adapt_every: int = 20, adapt_factor: float = 3.0, balance: float = 3.0,
                 dtype: torch.dtype | None = torch.float64) -> None:
        super().__init__(max_iter=max_iter, tol=tol, check_every=check_every)
        if rho is not None:
            check_positive(rho, "rho")
        if not (0.0 < float(alpha) < 2.0):
            raise InputError(f"alpha: expected a relaxation in (0, 2), got {alpha!r}")
        if int(adapt_every) < 0:
            raise InputError(f"adapt_every: expected an integer >= 0, got {adapt_every!r}")
        if float(adapt_factor) <= 1.0:
            raise InputError(f"adapt_factor: expected a number > 1, got {adapt_factor!r}")
        self.user_program = program
        self.program = program.to(dtype=dtype) if dtype is not None else program
        self.rho0 = rho
        self.alpha = float(alpha)
        self.adapt_every = int(adapt_every)
        self.adapt_factor = float(adapt_factor)
        self.balance = check_positive(balance, "balance")
        self._dual0 = None

    def run(self, x0: Any = None, callback: Callable[[ADMMState], Any] | None = None, *,
            dual: Any = None) -> Result:
        """Iterate from ``x0`` (and the unscaled ``dual`` of a previous run)."""
        self._dual0 = dual
        try:
            res = super().run(x0, callback)
        finally:
            self._dual0 = None
        res.converged = res.converged and self._feasible(res.state)
        dt = self.user_program.data.X.dtype
        res.x = tuple(t.to(dt) for t in res.x) if isinstance(res.x, tuple) else res.x.to(dt)
        return res

    def _feasible(self, state: ADMMState) -> bool:
        return True

    def _default_rho(self, system: BlockSystem) -> float:
        if self.rho0 is not None:
            return self.rho0
        lam = system.eigenvalues
        return float(lam.mean()) if float(lam.mean()) > 0 else 1.0

    def _adapt(self, state: ADMMState, r_rel: float, s_rel: float) -> None:
        """Residual balancing: scale ``rho`` by ``sqrt(r_rel / s_rel)`` when off by
        more than ``adapt_factor``; scaled duals are rescaled to stay consistent."""
        if not self.adapt_every or state.it % self.adapt_every or s_rel <= 0 or r_rel <= 0:
            return
        ratio = math.sqrt(self.balance * r_rel / s_rel)
        if ratio > self.adapt_factor or ratio < 1.0 / self.adapt_factor:
            ratio = min(max(ratio, 1e-3), 1e3)
            state.rho *= ratio
            state.lam = state.lam / ratio
            if state.nu is not None:
                state.nu = state.nu / ratio
            state.n_rho_updates += 1

    def _x0_blocks(self, x0: Any) -> torch.Tensor:
        raise NotImplementedError


def _tiny(t: torch.Tensor) -> float:
    return float(torch.finfo(t.dtype).tiny)


class ADMMGated(_ADMMBase):
    """ADMM for :class:`~convexrecon.programs.relu.GatedReLU` (split ``u = q``).

    Options (keyword-only): ``max_iter``, ``tol`` (relative duality gap),
    ``check_every``, ``rho`` (initial penalty; default from the spectrum),
    ``alpha`` (over-relaxation), ``adapt_every``/``adapt_factor``/``balance``
    (residual balancing: every ``adapt_every`` iterations ``rho`` is scaled by
    ``sqrt(balance * r_rel / s_rel)`` when that is off by more than
    ``adapt_factor``; ``balance=3`` biases towards a larger ``rho``, which suits
    the duality-gap stopping rule), ``dtype`` (compute precision, float64 by default).
    """

    def __init__(self, program: GatedReLU, **opts: Any) -> None:
        if not isinstance(program, GatedReLU):
            raise InputError(f"program: expected a GatedReLU, got {type(program).__name__}")
        super().__init__(program, **opts)
        data = self.program.data
        self.system = BlockSystem(data.X, data.Dm)
        self.ATy = self.system.adjoint(data.Y)
        self.prox = prox_group if data.c == 1 else prox_nuclear

    def init(self, x0: Any = None) -> ADMMState:
        data = self.program.data
        q = data.zeros() if x0 is None else data.check_blocks(x0, "x0").to(data.X)
        rho = self._default_rho(self.system)
        lam = torch.zeros_like(q) if self._dual0 is None else \
            data.check_blocks(self._dual0, "dual").to(data.X) / rho
        return ADMMState(x=q, u=q.clone(), q=q, lam=lam, rho=rho)

    def step(self, st: ADMMState) -> ADMMState:
        rho, a = st.rho, self.alpha
        u = self.system.solve(self.ATy + rho * (st.q - st.lam), rho)
        uh = a * u + (1.0 - a) * st.q
        q = self.prox(uh + st.lam, self.program.beta / rho)
        lam = st.lam + uh - q
        r = float(torch.linalg.vector_norm(u - q))
        sres = rho * float(torch.linalg.vector_norm(q - st.q))
        st.primal_residual, st.dual_residual = r, sres
        st.u, st.q, st.lam, st.x, st.it = u, q, lam, q, st.it + 1
        scale_p = max(float(torch.linalg.vector_norm(u)), float(torch.linalg.vector_norm(q)), _tiny(u))
        scale_d = max(rho * float(torch.linalg.vector_norm(lam)), _tiny(u))
        self._adapt(st, r / scale_p, sres / scale_d)
        return st

    def objective(self, st: ADMMState) -> float:
        return self.program.value(st.x)

    def certificate(self, st: ADMMState) -> float:
        return self.program.certificate(st.x)

    def dual(self, st: ADMMState) -> torch.Tensor:
        """The unscaled dual ``rho * lam`` (pass to ``run(dual=...)`` to warm start)."""
        return st.rho * st.lam


class ADMMReLU(_ADMMBase):
    """ADMM for :class:`~convexrecon.programs.relu.TwoLayerReLU`.

    Splits ``u = (V; W) = q`` (group prox) and ``s = (2 D - I) X u >= 0``. Stops
    when the KKT maximum is at most ``tol`` and the relative violation at most
    ``feas_tol``. ``gamma`` weights the constraint split against the consensus
    split; by default ``1 / ||X||_2^2`` so that both are on the same scale;
    ``adapt_gamma=True`` also balances it (with a refactorisation; experimental,
    off by default). Other options as :class:`ADMMGated`.
    """

    def __init__(self, program: TwoLayerReLU, *, feas_tol: float = 1e-6,
                 gamma: float | None = None, adapt_gamma: bool = False,
                 **opts: Any) -> None:
        if not isinstance(program, TwoLayerReLU):
            raise InputError(f"program: expected a TwoLayerReLU, got {type(program).__name__}")
        super().__init__(program, **opts)
        self.feas_tol = check_positive(feas_tol, "feas_tol")
        data = self.program.data
        X = data.X
        if gamma is None:
            gamma = 1.0 / max(float(torch.linalg.matrix_norm(X, ord=2)) ** 2, 1e-300)
        self.gamma = self.gamma0 = check_positive(gamma, "gamma")
        self.adapt_gamma = bool(adapt_gamma)
        P = data.P
        self.E2 = torch.cat([self.program.E, self.program.E], dim=1)  # (n, 2P)
        self.Ds = torch.cat([data.Dm, -data.Dm], dim=1)
        self.XtX = X.T @ X
        self._factor()
        self.ATy = self.system.adjoint(data.Y)
        self.P = P
        self._last_kkt = None

    def _factor(self) -> None:
        X = self.program.data.X
        M = torch.eye(X.shape[1], dtype=X.dtype, device=X.device) + self.gamma * self.XtX
        self.system = BlockSystem(X, self.Ds, M)

    def _adapt_gamma(self, st: ADMMState, r_rel: float, s_rel: float) -> None:
        """Balance the constraint split separately (every ``10 * adapt_every``
        iterations, refactoring when ``gamma`` changes by more than 10x)."""
        if (not self.adapt_gamma or not self.adapt_every or st.it % (10 * self.adapt_every)
                or r_rel <= 0 or s_rel <= 0):
            return
        ratio = math.sqrt(self.balance * r_rel / s_rel)
        if ratio > 10.0 or ratio < 0.1:
            ratio = min(max(ratio, 1e-2), 1e2)
            self.gamma *= ratio
            st.nu = st.nu / ratio
            self._factor()
            st.n_rho_updates += 1

    def _G(self, U: torch.Tensor) -> torch.Tensor:
        return self.E2.unsqueeze(-1) * self.program.data.xu(U)

    def _GT(self, S: torch.Tensor) -> torch.Tensor:
        return self.program.data.xt(self.E2.unsqueeze(-1) * S)

    def init(self, x0: Any = None) -> ADMMState:
        data = self.program.data
        if self.gamma != self.gamma0:  # a previous run adapted it
            self.gamma = self.gamma0
            self._factor()
        if x0 is None:
            q = torch.cat(self.program.zeros(), dim=0)
        else:
            V, W = self.program._check(x0)
            q = torch.cat([V, W], dim=0).to(data.X)
        rho = self._default_rho(self.system)
        s = torch.clamp(self._G(q), min=0.0)
        lam = torch.zeros_like(q)
        nu = torch.zeros_like(s)
        if self._dual0 is not None:
            if not isinstance(self._dual0, tuple) or len(self._dual0) != 2:
                raise InputError("dual: expected the tuple (consensus dual (2P, d, c), "
                                 f"cone dual (n, 2P, c)), got {type(self._dual0).__name__}")
            lam = self._dual0[0].to(q) / rho
            nu = self._dual0[1].to(q) / (rho * self.gamma)
        return ADMMState(x=self._split(q), u=q.clone(), q=q, lam=lam, s=s, nu=nu, rho=rho)

    def _split(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q[: self.P], q[self.P:]

    def step(self, st: ADMMState) -> ADMMState:
        rho, a, g = st.rho, self.alpha, self.gamma
        rhs = self.ATy + rho * (st.q - st.lam) + (rho * g) * self._GT(st.s - st.nu)
        u = self.system.solve(rhs, rho)
        Gu = self._G(u)
        uh = a * u + (1.0 - a) * st.q
        gh = a * Gu + (1.0 - a) * st.s
        q = prox_group(uh + st.lam, self.program.beta / rho)
        s = torch.clamp(gh + st.nu, min=0.0)
        lam = st.lam + uh - q
        nu = st.nu + gh - s
        nrm = torch.linalg.vector_norm
        rq, rs = float(nrm(u - q)), math.sqrt(g) * float(nrm(Gu - s))
        dq = rho * float(nrm(q - st.q))
        ds = rho * g * float(nrm(self._GT(s - st.s))) / math.sqrt(g)
        st.primal_residual, st.dual_residual = math.hypot(rq, rs), math.hypot(dq, ds)
        st.u, st.q, st.s, st.lam, st.nu, st.it = u, q, s, lam, nu, st.it + 1
        st.x = self._split(q)
        tiny = _tiny(u)
        sc_q = max(float(nrm(u)), float(nrm(q)), tiny)
        sc_s = max(math.sqrt(g) * max(float(nrm(Gu)), float(nrm(s))), tiny)
        dl_q = max(rho * float(nrm(lam)), tiny)
        dl_s = max(rho * math.sqrt(g) * float(nrm(nu)), tiny)
        self._adapt(st, math.hypot(rq, rs) / max(sc_q, sc_s), math.hypot(dq, ds) / max(dl_q, dl_s))
        self._adapt_gamma(st, (rs / sc_s) / max(rq / sc_q, tiny), (ds / dl_s) / max(dq / dl_q, tiny))
        return st

    def multipliers(self, st: ADMMState) -> tuple[torch.Tensor, torch.Tensor]:
        """Cone multipliers ``mu = -rho gamma nu >= 0`` as ``(mu_v, mu_w)``."""
        mu = torch.clamp(-(st.rho * self.gamma) * st.nu, min=0.0)
        return mu[:, : self.P], mu[:, self.P:]

    def dual(self, st: ADMMState) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled duals ``(rho lam, rho gamma nu)`` for ``run(dual=...)``."""
        return st.rho * st.lam, st.rho * self.gamma * st.nu

    def objective(self, st: ADMMState) -> float:
        return self.program.value(st.x)

    def certificate(self, st: ADMMState) -> float:
        kkt = self.program.kkt(st.x, multipliers=self.multipliers(st))
        st.violation = kkt.violation
        self._last_kkt = kkt
        return kkt.max

    def _feasible(self, state: ADMMState) -> bool:
        return state.violation <= self.feas_tol

    def done(self, st: ADMMState) -> bool:
        if st.it >= self.max_iter:
            return True
        return self.tol > 0 and st.certificate <= self.tol and st.violation <= self.feas_tol
