"""ADMM with exact, factorised linear steps for the convex two-layer programs.

Both solvers split the block variable ``u`` from a copy ``q`` that carries the
block penalty (group or nuclear prox). The ReLU form also splits the cone
constraints, ``s = (2 D - I) X u >= 0``. Because ``(2 D - I)^2 = I`` the Gram of
that split is ``I (x) X^T X``, so every ``u``-step solves

    (A^T A + rho (I (x) M)) u = r,      M = I (gated) or I + gamma X^T X (ReLU),

by a Cholesky factor of the ``n x n`` Woodbury kernel
(:class:`~convexrecon.solvers.admm_core.BlockSystem`), refactored when the penalty
``rho`` is adapted (magnitude or residual balancing).

ADMM is run as the Douglas-Rachford fixed-point map of ``z = q + lam`` (and
``z_s = s + nu``): ``q = prox(z)``, ``lam = z - q``, ``u = u-step(2 q - z)``,
``T(z) = z + alpha (u - q)``. The map is accelerated by safeguarded type-II
Anderson acceleration (``anderson`` = memory, ``0`` disables): the extrapolated
point is kept only when its fixed-point residual is at most ``safeguard`` times
the previous one; else the plain step is taken. The memory is cleared whenever
``rho`` changes.

Both solvers stop on the program's own certificate: the relative duality gap for
the gated form, with the dual point the best feasible multiple of the residual
``Y - A u`` of the least-squares step (whose correlation ``A^T (Y - A u)`` that
step returns, so the check costs one ``A q``); the KKT triple with
ADMM's cone multipliers ``mu = -rho gamma nu >= 0`` (plus ``violation <=
feas_tol``) for the ReLU form. Warm starts: ``run(x0, dual=...)`` (passed to
``init``). The Anderson memory and every other quantity a run changes live in
:class:`ADMMState`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_choice, check_positive
from convexrecon.errors import InputError
from convexrecon.programs.relu import GatedReLU, TwoLayerReLU, prox_group, prox_nuclear
from convexrecon.programs.relu.certificates import scaled_dual
from convexrecon.fixedpoint.anderson import AndersonMemory
from convexrecon.solvers.admm_core import BlockSystem
from convexrecon.solvers.base import Solver, State

__all__ = ["BlockSystem", "ADMMGated", "ADMMReLU", "ADMMState"]


@dataclass
class ADMMState(State):
    """ADMM state at the fixed-point variable ``z`` (flat; the cone part weighted
    by ``sqrt(gamma)``). ``x`` is the (group-sparse) ``q`` in program format;
    ``q, u, lam`` (and ``s, nu``) the ADMM variables derived from ``z``; ``g`` the
    fixed-point residual ``T(z) - z`` (norm ``g_norm``); ``rho`` the current
    penalty. Gated form: ``AU`` the fit ``A u`` and ``G = A^T (Y - A u)`` of the last
    least-squares step, ``primal`` the objective at ``q`` once certified.
    ``dual_residual`` is updated on the iterations that may adapt ``rho``. ``aa``
    the Anderson accelerator of this run (``None`` when disabled), ``kkt`` the
    last :class:`~convexrecon.programs.relu.KKT` (ReLU form, ``stop="kkt"``)."""

    z: Any = None
    g: Any = None
    u: Any = None
    q: Any = None
    lam: Any = None
    s: Any = None
    nu: Any = None
    AU: Any = None
    G: Any = None
    primal: float | None = None
    g_norm: float = math.inf
    rho: float = 1.0
    primal_residual: float = math.inf
    dual_residual: float = math.inf
    violation: float = math.inf
    n_rho_updates: int = 0
    n_evals: int = 0
    n_accelerated: int = 0
    aa: Any = None
    kkt: Any = None


@dataclass
class _Eval:
    """One evaluation of the ADMM map at ``z``."""

    g: torch.Tensor
    q: torch.Tensor
    u: torch.Tensor
    lam: torch.Tensor
    s: torch.Tensor | None
    nu: torch.Tensor | None
    r_rel: float
    g_norm: float
    AU: torch.Tensor | None = None
    G: torch.Tensor | None = None


class _ADMMBase(Solver[ADMMState]):
    """Shared options, the accelerated fixed-point loop and penalty adaptation."""

    def __init__(self, program, *, max_iter: int = 10000, tol: float = 1e-6,
                 check_every: int = 10, rho: float | None = None, alpha: float = 1.0,
                 adapt_every: int = 20, adapt_factor: float = 3.0, balance: float = 3.0,
                 anderson: int = 8, safeguard: float = 1.0,
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
        if int(anderson) < 0:
            raise InputError(f"anderson: expected a memory >= 0 (0 disables), got {anderson!r}")
        self.user_program = program
        self.program = program.to(dtype=dtype) if dtype is not None else program
        self.rho0 = rho
        self.alpha = float(alpha)
        self.adapt_every = int(adapt_every)
        self.adapt_factor = float(adapt_factor)
        self.balance = check_positive(balance, "balance")
        self.safeguard = check_positive(safeguard, "safeguard")
        self.anderson = int(anderson)

    # -- subclass hooks -------------------------------------------------------------
    def _eval(self, z: torch.Tensor, rho: float) -> _Eval:
        raise NotImplementedError

    def _pack_q(self, ev: _Eval) -> torch.Tensor:
        """The projected part ``(q, sqrt(gamma) s)`` of ``z`` as a flat vector."""
        raise NotImplementedError

    def _x(self, q: torch.Tensor) -> Any:
        raise NotImplementedError

    # -- protocol -------------------------------------------------------------------
    def converged(self, state: ADMMState) -> bool:
        return super().converged(state) and self._feasible(state)

    def solution(self, state: ADMMState) -> Any:
        """The iterate in the user program's dtype."""
        dt = self.user_program.data.X.dtype
        x = state.x
        return tuple(t.to(dt) for t in x) if isinstance(x, tuple) else x.to(dt)

    def _start(self, z: torch.Tensor, rho: float, aa: AndersonMemory | None = None) -> ADMMState:
        """A fresh state at ``z`` with penalty ``rho``; ``aa`` (reset) or a new
        Anderson accelerator carries the memory."""
        if aa is None and self.anderson > 0:
            aa = AndersonMemory(self.anderson, lam=1e-10)
        elif aa is not None:
            aa.reset()
        st = ADMMState(x=None, z=z, rho=rho, aa=aa)
        self._set(st, z, self._eval(z, rho))
        st.n_evals = 1
        if aa is not None:
            aa.push(z, st.g)
        return st

    def _set(self, st: ADMMState, z: torch.Tensor, ev: _Eval) -> None:
        st.z, st.g, st.q, st.u, st.lam, st.s, st.nu = z, ev.g, ev.q, ev.u, ev.lam, ev.s, ev.nu
        st.AU, st.G, st.primal, st.g_norm = ev.AU, ev.G, None, ev.g_norm
        st.x = self._x(ev.q)
        st.primal_residual = ev.r_rel

    def step(self, st: ADMMState) -> ADMMState:
        rho = st.rho
        g_norm = st.g_norm
        track = self._adapting(st.it + 1)  # the dual residual is needed only then
        q_old = self._pack_q_state(st) if track else None
        ev = None
        aa = st.aa
        z_new = aa.extrapolate() if aa is not None else None
        if z_new is not None:
            ev = self._eval(z_new, rho)
            st.n_evals += 1
            if ev.g_norm <= self.safeguard * g_norm:
                st.n_accelerated += 1
            else:
                ev = None
        if ev is None:
            z_new = st.z + st.g
            ev = self._eval(z_new, rho)
            st.n_evals += 1
        if aa is not None:
            aa.push(z_new, ev.g)
        self._set(st, z_new, ev)
        if track:
            q_new = self._pack_q(ev)
            lam_norm = max(float(torch.linalg.vector_norm(z_new - q_new)), _tiny(z_new))
            st.dual_residual = float(torch.linalg.vector_norm(q_new - q_old)) / lam_norm
        st.it += 1
        self._adapt(st)
        return st

    def _pack_q_state(self, st: ADMMState) -> torch.Tensor:
        return self._pack_q(_Eval(g=st.g, q=st.q, u=st.u, lam=st.lam, s=st.s, nu=st.nu,
                                  r_rel=st.primal_residual, g_norm=st.g_norm, AU=st.AU, G=st.G))

    def _feasible(self, state: ADMMState) -> bool:
        return True

    def _default_rho(self, system: BlockSystem) -> float:
        if self.rho0 is not None:
            return self.rho0
        mean = system.mean_eigenvalue
        return mean if mean > 0 else 1.0

    def _adapt(self, st: ADMMState) -> None:
        """Residual balancing: every ``adapt_every`` iterations scale ``rho`` by
        ``sqrt(balance * r_rel / s_rel)`` when that is off by more than
        ``adapt_factor``; ``z`` is moved so that ``q`` and ``rho lam`` are kept."""
        r_rel, s_rel = st.primal_residual, st.dual_residual
        if not self._adapting(st.it) or s_rel <= 0 or r_rel <= 0:
            return
        ratio = self._target_ratio(st, r_rel, s_rel)
        if not math.isfinite(ratio) or self.adapt_factor >= ratio >= 1.0 / self.adapt_factor:
            return
        ratio = min(max(ratio, 1e-3), 1e3)
        qp = self._pack_q_state(st)
        z = qp + (st.z - qp) / ratio
        new = self._start(z, st.rho * ratio, st.aa)
        new.it, new.certificate = st.it, st.certificate
        new.n_rho_updates = st.n_rho_updates + 1
        new.n_evals += st.n_evals
        new.n_accelerated = st.n_accelerated
        new.dual_residual = st.dual_residual
        st.__dict__.update(new.__dict__)

    def _adapting(self, it: int) -> bool:
        """Whether iteration ``it`` may adapt ``rho``."""
        return bool(self.adapt_every) and it % self.adapt_every == 0

    def _target_ratio(self, st: ADMMState, r_rel: float, s_rel: float) -> float:
        """Residual balancing: ``sqrt(balance * r_rel / s_rel)``."""
        return math.sqrt(self.balance * r_rel / s_rel)

    def objective(self, st: ADMMState) -> float:
        return self.program.value(st.x)


def _tiny(t: torch.Tensor) -> float:
    return float(torch.finfo(t.dtype).tiny)


class ADMMGated(_ADMMBase):
    """ADMM for :class:`~convexrecon.programs.relu.GatedReLU` (split ``u = q``).

    Every map evaluation is one least-squares step
    (:meth:`~convexrecon.solvers.admm_core.BlockSystem.least_squares_step`), which
    also returns the fit ``A u`` and the correlation ``A^T (Y - A u)``; the
    certificate uses them: the dual point is the best feasible multiple of the
    residual ``Y - A u``, and the primal value is taken at the returned ``q``.

    Options (keyword-only): ``max_iter``, ``tol`` (relative duality gap),
    ``check_every`` (default 2), ``rho`` (initial penalty; default from the
    minimum-norm least-squares fit), ``alpha`` (over-relaxation, default 1.6),
    ``adapt_every``/``adapt_factor`` (every ``adapt_every`` iterations ``rho`` is
    rescaled to ``||rho lam|| / ||q||`` when that is off by more than
    ``adapt_factor``), ``anderson`` (Anderson memory, default 3; 0 disables),
    ``safeguard`` (accept the Anderson point when its residual is at most this
    times the last), ``dtype`` (compute precision, float64 by default).
    """

    def __init__(self, program: GatedReLU, **opts: Any) -> None:
        if not isinstance(program, GatedReLU):
            raise InputError(f"program: expected a GatedReLU, got {type(program).__name__}")
        for key, value in (("check_every", 2), ("alpha", 1.6), ("anderson", 3)):
            opts.setdefault(key, value)
        super().__init__(program, **opts)
        data = self.program.data
        self.system = BlockSystem(data.X, data.Dm)
        self.pre = self.system.target(data.Y)
        self.shape = data.block_shape
        self.prox = prox_group if data.c == 1 else prox_nuclear

    def init(self, x0: Any = None, *, dual: Any = None) -> ADMMState:
        """Start at ``x0`` (zeros by default) and the unscaled block ``dual`` of a
        previous run (:meth:`dual`; zeros by default)."""
        data = self.program.data
        q = data.zeros() if x0 is None else data.check_blocks(x0, "x0").to(data.X)
        rho = self._default_rho(self.system)
        lam = torch.zeros_like(q) if dual is None else \
            data.check_blocks(dual, "dual").to(data.X) / rho
        return self._start((q + lam).reshape(-1), rho)

    def _default_rho(self, system: BlockSystem) -> float:
        """Magnitude balancing ``rho = ||rho lam|| / ||q||`` at a guess: every block
        dual has norm ``<= beta`` and these programs nearly interpolate, so
        ``rho0 = beta sqrt(P) / ||u_ls||`` with ``u_ls`` the minimum-norm
        least-squares solution (regularised by ``1e-6`` of the mean eigenvalue; an
        estimate, so solved in single precision)."""
        if self.rho0 is not None:
            return self.rho0
        Y = self.program.data.Y
        delta = 1e-6 * max(system.mean_eigenvalue, 1e-300)
        if system.woodbury:
            w = system.rough_kernel_solve(Y, delta)  # u_ls = A^T w, ||u_ls||^2 = <w, K w>
            sq = float(torch.sum(w * Y)) - delta * float(torch.sum(w * w))
        else:
            N, d, c = self.shape
            u = system.rough_kernel_solve(self.pre.reshape(N * d, c), delta)
            sq = float(torch.sum(u * u))
        if not sq > 0:
            return super()._default_rho(system)
        return self.program.beta * math.sqrt(self.shape[0]) / math.sqrt(sq)

    def _target_ratio(self, st: ADMMState, r_rel: float, s_rel: float) -> float:
        """Magnitude balancing: ``||lam|| / ||q||`` (scaled dual against primal)."""
        q = float(torch.linalg.vector_norm(st.q))
        return float(torch.linalg.vector_norm(st.lam)) / q if q > 0 else math.inf

    def _eval(self, z: torch.Tensor, rho: float) -> _Eval:
        Z = z.reshape(self.shape)
        q = self.prox(Z, self.program.beta / rho)
        lam = Z - q
        u, AU, G = self.system.least_squares_step(q - lam, rho, self.program.data.Y, self.pre)
        d = u - q
        nrm = torch.linalg.vector_norm
        scale = max(float(nrm(u)), float(nrm(q)), _tiny(u))
        dn = float(nrm(d))
        return _Eval(g=(self.alpha * d).reshape(-1), q=q, u=u, lam=lam, s=None, nu=None,
                     r_rel=dn / scale, g_norm=self.alpha * dn, AU=AU, G=G)

    def _pack_q(self, ev: _Eval) -> torch.Tensor:
        return ev.q.reshape(-1)

    def _x(self, q: torch.Tensor) -> torch.Tensor:
        return q

    def certificate(self, st: ADMMState) -> float:
        """Relative duality gap: primal at ``q``, dual from the residual ``Y - A u``
        (:func:`~convexrecon.programs.relu_certificates.scaled_dual`)."""
        data = self.program.data
        fit = 0.5 * float(torch.sum((self.system.apply(st.q) - data.Y) ** 2))
        st.primal = fit + float(self.program.reg.value(st.q))
        dual_value = scaled_dual(data, data.Y - st.AU, st.G)
        return max(st.primal - dual_value, 0.0) / max(abs(st.primal), abs(dual_value), 1e-300)

    def objective(self, st: ADMMState) -> float:
        return st.primal if st.primal is not None else self.program.value(st.x)

    def dual(self, st: ADMMState) -> torch.Tensor:
        """The unscaled dual ``rho * lam`` (pass to ``run(dual=...)`` to warm start)."""
        return st.rho * st.lam


class ADMMReLU(_ADMMBase):
    """ADMM for :class:`~convexrecon.programs.relu.TwoLayerReLU`.

    Splits ``u = (V; W) = q`` (group prox) and ``s = (2 D - I) X u >= 0``. Stops
    when the KKT maximum is at most ``tol`` and the relative violation at most
    ``feas_tol``. ``gamma`` weights the constraint split against the consensus
    split; by default ``1 / ||X||_2^2`` so that both are on the same scale. Other
    options as :class:`ADMMGated`.
    """

    def __init__(self, program: TwoLayerReLU, *, feas_tol: float = 1e-6,
                 gamma: float | None = None, stop: str = "kkt", **opts: Any) -> None:
        if not isinstance(program, TwoLayerReLU):
            raise InputError(f"program: expected a TwoLayerReLU, got {type(program).__name__}")
        super().__init__(program, **opts)
        self.feas_tol = check_positive(feas_tol, "feas_tol")
        self.stop = check_choice(stop, ("gap", "kkt"), "stop")
        data = self.program.data
        X = data.X
        if gamma is None:
            gamma = 1.0 / max(float(torch.linalg.matrix_norm(X, ord=2)) ** 2, 1e-300)
        self.gamma = check_positive(gamma, "gamma")
        self.sg = math.sqrt(self.gamma)
        self.P = data.P
        self.E2 = torch.cat([self.program.E, self.program.E], dim=1)  # (n, 2P)
        self.Ds = torch.cat([data.Dm, -data.Dm], dim=1)
        M = torch.eye(X.shape[1], dtype=X.dtype, device=X.device) + self.gamma * (X.T @ X)
        self.system = BlockSystem(X, self.Ds, M)
        self.ATy = self.system.adjoint(data.Y)
        self.qshape = (2 * self.P, data.d, data.c)
        self.sshape = (data.n, 2 * self.P, data.c)
        self.nq = math.prod(self.qshape)

    def _G(self, U: torch.Tensor) -> torch.Tensor:
        N, d, c = U.shape
        XU = (self.system.X @ U.permute(1, 0, 2).reshape(d, N * c)).reshape(-1, N, c)
        return self.E2.unsqueeze(-1) * XU

    def _GT(self, S: torch.Tensor) -> torch.Tensor:
        n, N, c = S.shape
        Z = (self.E2.unsqueeze(-1) * S).reshape(n, N * c)
        return (self.system.Xt_ @ Z).reshape(-1, N, c).permute(1, 0, 2)

    def init(self, x0: Any = None, *, dual: Any = None) -> ADMMState:
        """Start at ``x0`` (zeros by default) and the unscaled duals ``(consensus,
        cone)`` of a previous run (:meth:`dual`; zeros by default)."""
        data = self.program.data
        if x0 is None:
            q = torch.cat(self.program.zeros(), dim=0)
        else:
            V, W = self.program._check(x0)
            q = torch.cat([V, W], dim=0).to(data.X)
        rho = self._default_rho(self.system)
        s = torch.clamp(self._G(q), min=0.0)
        lam = torch.zeros_like(q)
        nu = torch.zeros_like(s)
        if dual is not None:
            if not isinstance(dual, tuple) or len(dual) != 2:
                raise InputError("dual: expected the tuple (consensus dual (2P, d, c), "
                                 f"cone dual (n, 2P, c)), got {type(dual).__name__}")
            lam = dual[0].to(q) / rho
            nu = dual[1].to(q) / (rho * self.gamma)
        z = torch.cat([(q + lam).reshape(-1), self.sg * (s + nu).reshape(-1)])
        return self._start(z, rho)

    def _eval(self, z: torch.Tensor, rho: float) -> _Eval:
        zq = z[: self.nq].reshape(self.qshape)
        zs = z[self.nq:].reshape(self.sshape) / self.sg
        q = prox_group(zq, self.program.beta / rho)
        s = torch.clamp(zs, min=0.0)
        lam, nu = zq - q, zs - s
        rhs = self.ATy + rho * (q - lam) + (rho * self.gamma) * self._GT(s - nu)
        u = self.system.solve(rhs, rho)
        Gu = self._G(u)
        dq, ds = u - q, self.sg * (Gu - s)
        nrm = torch.linalg.vector_norm
        g = self.alpha * torch.cat([dq.reshape(-1), ds.reshape(-1)])
        scale = max(float(nrm(u)), float(nrm(q)),
                    self.sg * max(float(nrm(Gu)), float(nrm(s))), _tiny(u))
        dn = math.hypot(float(nrm(dq)), float(nrm(ds)))
        return _Eval(g=g, q=q, u=u, lam=lam, s=s, nu=nu, r_rel=dn / scale,
                     g_norm=self.alpha * dn)

    def _pack_q(self, ev: _Eval) -> torch.Tensor:
        return torch.cat([ev.q.reshape(-1), self.sg * ev.s.reshape(-1)])

    def _x(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q[: self.P], q[self.P:]

    def multipliers(self, st: ADMMState) -> tuple[torch.Tensor, torch.Tensor]:
        """Cone multipliers ``mu = -rho gamma nu >= 0`` as ``(mu_v, mu_w)``."""
        mu = torch.clamp(-(st.rho * self.gamma) * st.nu, min=0.0)
        return mu[:, : self.P], mu[:, self.P:]

    def dual(self, st: ADMMState) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled duals ``(rho lam, rho gamma nu)`` for ``run(dual=...)``."""
        return st.rho * st.lam, st.rho * self.gamma * st.nu

    def certificate(self, st: ADMMState) -> float:
        mult = self.multipliers(st)
        if self.stop == "kkt":
            kkt = self.program.kkt(st.x, multipliers=mult)
            st.kkt = kkt
            st.violation = kkt.violation
            return kkt.max
        st.violation = self.program.violation(st.x)
        w = self.program.data.Y - self.system.apply(st.u)
        return self.program.gap(st.x, multipliers=mult, dual=w).relative

    def _feasible(self, state: ADMMState) -> bool:
        return state.violation <= self.feas_tol

    def done(self, st: ADMMState) -> bool:
        if st.it >= self.max_iter:
            return True
        return self.tol > 0 and st.certificate <= self.tol and st.violation <= self.feas_tol
