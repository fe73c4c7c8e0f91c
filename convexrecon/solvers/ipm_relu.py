"""Primal-dual interior-point method for the cone-constrained two-layer ReLU program.

Conic form. For :class:`~convexrecon.programs.relu.TwoLayerReLU` with one output
column, stack the ``N = 2P`` blocks as ``u_j`` (``v_i`` then ``w_i``), with signs
``s_j = +1`` (``v``) / ``-1`` (``w``), patterns ``D_j`` and ``E_j = 2 D_j - I``.
Internally ``y`` and ``X`` are divided by their root-mean-square entries ``sigma``
and ``kappa`` (and ``beta`` by ``sigma kappa``: the same program in ``u kappa /
sigma``, so that the fixed starting point is as far from the solution whatever the
scale of the data), and the objective is divided by that ``beta`` (``y`` and ``A``
scaled by its inverse square root) so that the second-order-cone duals are
``O(1)``. In these units:

    min_{u, t}  1/2 ||A u - y||^2 + sum_j t_j,     A u = sum_j s_j D_j X u_j,
    s.t.  s_lin = E_j X u_j >= 0                    (n linear cones per block),
          s_soc = (t_j, u_j) in Q^{d+1}             (one second-order cone per block).

In the convention ``G x + s = h, s in K`` with duals ``z`` (``z_lin`` are the cone
multipliers ``mu`` of the program, in units of ``beta``) the method is Mehrotra's
predictor-corrector with Nesterov-Todd scaling ``W`` (``W^-1 s = W z = lambda``;
:mod:`convexrecon.solvers.soc`) from the infeasible start ``u = 0, t = 0,
s_lin = 1, z_lin = 1/sqrt(n), s_soc = z_soc = (1, 0)``.

Newton system. Each direction solves ``[P G^T; G -W^T W] [dx; dz] = [-r_x; xi]``
with ``xi = -r_z + W (lambda \\ r_c)``. Eliminating ``dz`` and then ``dt`` (the SOC
block in the closed form ``eta^-2 [(I - h h^T) + h h^T / (2 w0^2 - 1)]``, ``h`` the
unit vector part of the scaling point, which stays accurate as the cones become
degenerate) leaves

    (A^T A + blockdiag_j B_j) du = r,   B_j = X^T diag(z_j / s_j) X + (SOC block),

solved by Woodbury with the ``n x n`` kernel ``K = I + sum_i D_i X (B_vi^-1 + B_wi^-1)
X^T D_i`` (``v`` and ``w`` blocks of pattern ``i`` share ``D_i``; accumulated on that
pattern's rows only): one Cholesky of ``K`` and ``N`` small ``d x d`` Cholesky
factors per iteration (a jitter is added to a ``B_j`` whose factorisation fails),
two solves (predictor, corrector) each followed by ``refine`` steps of iterative
refinement. ``dz`` of the cones is then ``W^-1 (lambda \\ r_c - W^-1 ds)``, with no
explicit ``W^-2``. Step lengths for the cones are taken in the NT-scaled space
(``lambda + a W^-1 ds``, ``lambda + a W dz``), times ``step_fraction``. The centring
parameter is ``sigma = (mu_aff / mu)^3``; when the affine step is below ``0.1``
the second-order correction is dropped and ``sigma >= 0.5`` (a centring step).
When ``K`` cannot be factorised the run stops (``state.failed``), no exception.

Certificate. The iterate ``u`` is made exactly feasible by shifting each block along
its gate: ``E_j X g_j = |X g_j| >= 0``, so ``u_j + tau_j g_j`` with ``tau_j = max_k
viol_jk / |X g_j|_k`` satisfies every constraint (a block whose violated rows have
``X g_j = 0``, or all blocks when the patterns came without gates, are left as
they are). The relative duality gap is then
:func:`~convexrecon.programs.relu.certificates.relu_gap` at the repaired point
with the dual candidate ``lam = y - A u`` and the IPM's multipliers ``beta z_lin``;
``stop="gap"`` stops when it is at most ``tol`` and the violation at most
``feas_tol``; ``stop="kkt"`` also requires the program's KKT maximum with those
multipliers to be at most ``tol`` (the certificate is then the larger of the two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_choice, check_positive
from convexrecon.errors import InputError
from convexrecon.programs.relu import TwoLayerReLU, gate_shift
from convexrecon.programs.relu.certificates import relu_gap
from convexrecon.solvers.admm_core import cholesky_solve
from convexrecon.solvers.base import Solver, State
from convexrecon.solvers.soc import (identity, jprod, jsolve, lin_step, nt_scaling,
                                     soc_step, w_apply)

__all__ = ["IPMReLU", "IPMState"]

_SMALL_STEP = 0.1      # affine step below this: centring step
_SIGMA_CENTER = 0.5    # minimum centring parameter of a centring step
_JITTER = 1e-13        # first relative jitter tried on a d x d block that fails Cholesky


@dataclass
class IPMState(State):
    """Interior-point state (internal units: objective divided by ``beta``).

    ``U`` ``(d, N)`` the blocks as columns (``v`` then ``w``), ``t`` ``(N,)`` their
    epigraph variables, ``sl, zl`` ``(n, N)`` linear slacks and duals, ``ss, zs``
    ``(N, d+1)`` second-order-cone slacks and duals. Set by the certificate: ``x``
    the repaired point ``(V, W)``, ``violation``, ``multipliers`` ``(mu_v, mu_w)``
    (each ``(n, P, 1)``, program units), ``gap`` the relative duality gap, ``kkt``
    the KKT maximum (``stop="kkt"`` only) and ``mu`` the complementarity measure
    ``s^T z / degree`` in program units. ``failed`` when the Newton system could not
    be factorised; ``step_size`` the last step length.
    """

    U: Any = None
    t: Any = None
    sl: Any = None
    zl: Any = None
    ss: Any = None
    zs: Any = None
    violation: float = math.inf
    multipliers: Any = None
    gap: float = math.inf
    kkt: float = math.inf
    mu: float = math.inf
    step_size: float = 0.0
    failed: bool = False


def _complementarity(sl, zl, ss, zs, degree: int) -> float:
    """``s^T z / degree`` over the linear and second-order cones."""
    return (float((sl * zl).sum()) + float((ss * zs).sum())) / degree


def _rms(T: torch.Tensor) -> float:
    """Root-mean-square entry of ``T`` (1 for an all-zero ``T``)."""
    rms = float(torch.linalg.vector_norm(T)) / math.sqrt(T.numel())
    return rms if rms > 0 else 1.0


class _Structure:
    """The program's data in internal units and the maps ``A``, ``G`` on ``(d, N)``.

    Internal units: ``y`` divided by ``sigma`` and ``X`` by ``kappa``, their
    root-mean-square entries, so ``u`` is ``kappa / sigma`` times the program's and
    ``beta`` divided by ``sigma kappa`` (the same program, rescaled, which keeps the
    fixed starting point equally far from every problem's solution); then ``y`` and
    ``A`` divided by ``sqrt(beta / (sigma kappa))``. ``unit = sigma / kappa``
    converts ``u`` back.
    """

    def __init__(self, program: TwoLayerReLU) -> None:
        data = program.data
        self.n, self.d = data.X.shape
        self.sigma, self.kappa = _rms(data.Y), _rms(data.X)
        self.unit = self.sigma / self.kappa
        X = data.X / self.kappa
        self.X, self.Xt = X, X.T.contiguous()
        self.P, self.N = data.P, 2 * data.P
        self.degree = self.n * self.N + self.N   # cone degree: n per block plus one SOC
        scale = 1.0 / math.sqrt(data.beta / (self.sigma * self.kappa))
        self.c2 = scale * scale
        self.Ds = torch.cat([data.Dm, -data.Dm], 1) * scale   # (n, N)
        self.E2 = torch.cat([program.E, program.E], 1)        # (n, N)
        self.y = data.Y[:, 0] * (scale / self.sigma)
        self.XX = (X.unsqueeze(2) * X.unsqueeze(1)).reshape(self.n, self.d * self.d)
        rows = [data.D[:, i].nonzero().flatten() for i in range(self.P)]
        self.Xp = [X[r] for r in rows]
        self.flat = [(r.unsqueeze(1) * self.n + r.unsqueeze(0)).reshape(-1) for r in rows]

    def A(self, U: torch.Tensor) -> torch.Tensor:
        return (self.Ds * (self.X @ U)).sum(1)

    def AT(self, r: torch.Tensor) -> torch.Tensor:
        return self.Xt @ (self.Ds * r[:, None])

    def G(self, U: torch.Tensor) -> torch.Tensor:
        return self.E2 * (self.X @ U)

    def GT(self, S: torch.Tensor) -> torch.Tensor:
        return self.Xt @ (self.E2 * S)


class _Newton:
    """The factorised Newton system at one iterate; :meth:`solve` gives a direction."""

    def __init__(self, S: _Structure, st: IPMState, refine: int) -> None:
        self.S, self.refine = S, refine
        X, d, N = S.X, S.d, S.N
        self.st = st
        self.wl = st.zl / st.sl                                  # W^-2 of the linear cones
        self.rl = torch.sqrt(st.sl / st.zl)                      # W of the linear cones
        self.laml = torch.sqrt(st.sl * st.zl)
        self.eta, self.wb = nt_scaling(st.ss, st.zs)
        self.lams = w_apply(self.eta, self.wb, st.zs)
        w0, w1 = self.wb[:, 0], self.wb[:, 1:]
        tiny = torch.finfo(X.dtype).tiny
        h = w1 / torch.clamp(torch.linalg.vector_norm(w1, dim=1), min=tiny)[:, None]
        ie2 = 1.0 / self.eta ** 2
        q = 2 * w0 * w0 - 1
        B = (self.wl.T @ S.XX).reshape(N, d, d)
        B = B + ((1.0 / q - 1.0) * ie2)[:, None, None] * (h.unsqueeze(2) * h.unsqueeze(1))
        B.diagonal(dim1=1, dim2=2).add_(ie2[:, None])
        self.B = B
        self.a = ie2 * q                                         # t-t entry of the SOC block
        self.b = -(2 * ie2 * w0)[:, None] * w1                   # u-t coupling (N, d)
        L, info = torch.linalg.cholesky_ex(B)
        eye = torch.eye(d, dtype=X.dtype, device=X.device)
        top = B.diagonal(dim1=1, dim2=2).amax(1)
        k = 0
        while bool((info > 0).any()) and k < 10:
            k += 1
            L, info = torch.linalg.cholesky_ex(B + (_JITTER * 10 ** k * top)[:, None, None] * eye)
        Bi = torch.cholesky_inverse(L)
        self.Bi = 0.5 * (Bi + Bi.transpose(1, 2))
        Sm = self.Bi[: S.P] + self.Bi[S.P:]
        Kf = torch.zeros(S.n * S.n, dtype=X.dtype, device=X.device)
        for i in range(S.P):
            Xi = S.Xp[i]
            Kf.index_add_(0, S.flat[i], ((Xi @ Sm[i]) @ Xi.T).reshape(-1), alpha=S.c2)
        K = Kf.reshape(S.n, S.n)
        K = 0.5 * (K + K.T)
        K.diagonal().add_(1.0)
        LK, infoK = torch.linalg.cholesky_ex(K)
        self.ok = int(infoK) == 0 and bool(torch.isfinite(LK.diagonal()).all())
        self.LK = LK
        # residuals of the conic KKT conditions
        res = S.A(st.U) - S.y
        self.rx_u = S.AT(res) - S.GT(st.zl) - st.zs[:, 1:].T   # (d, N)
        self.rx_t = 1.0 - st.zs[:, 0]                            # (N,)
        self.rz_l = st.sl - S.G(st.U)
        self.rz_s = st.ss - torch.cat([st.t[:, None], st.U.T], 1)

    def _binv(self, R: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.Bi, R.T.unsqueeze(2))[:, :, 0].T

    def _hsolve(self, r: torch.Tensor) -> torch.Tensor:
        """``(A^T A + B)^-1 r`` by Woodbury."""
        S = self.S
        v = self._binv(r)
        q = cholesky_solve(self.LK, S.A(v)[:, None])[:, 0]
        return v - self._binv(S.AT(q))

    def solve(self, rc_l: torch.Tensor, rc_s: torch.Tensor):
        """Direction ``(dU, dt, dsl, dss, dzl, dzs)`` for complementarity targets
        ``lambda o (W^-1 ds + W dz) = rc`` (linear and SOC parts)."""
        S, eta, wb = self.S, self.eta, self.wb
        xi_l = self.rz_l + rc_l / self.laml * self.rl
        ls = jsolve(self.lams, rc_s)
        xi_s = self.rz_s + w_apply(eta, wb, ls)
        wxi_s = w_apply(eta, wb, w_apply(eta, wb, xi_s, inverse=True), inverse=True)
        ru = -self.rx_u + S.GT(self.wl * xi_l) + wxi_s[:, 1:].T
        rt = -self.rx_t + wxi_s[:, 0]
        rhs = ru - self.b.T * (rt / self.a)
        dU = self._hsolve(rhs)
        for _ in range(self.refine):
            Hd = S.AT(S.A(dU)) + torch.bmm(self.B, dU.T.unsqueeze(2))[:, :, 0].T
            dU = dU + self._hsolve(rhs - Hd)
        dt = (rt - (self.b.T * dU).sum(0)) / self.a
        Gdx_l = -S.G(dU)
        dzl = self.wl * (Gdx_l + xi_l)
        dsl = -self.rz_l - Gdx_l
        dss = -self.rz_s + torch.cat([dt[:, None], dU.T], 1)
        dzs = w_apply(eta, wb, ls - w_apply(eta, wb, dss, inverse=True), inverse=True)
        return dU, dt, dsl, dss, dzl, dzs

    def max_step(self, dsl, dss, dzl, dzs) -> float:
        """Step to the boundary of all cones (SOCs measured in the scaled space)."""
        st, eta, wb = self.st, self.eta, self.wb
        return min(lin_step(st.sl, dsl), lin_step(st.zl, dzl),
                   soc_step(self.lams, w_apply(eta, wb, dss, inverse=True)),
                   soc_step(self.lams, w_apply(eta, wb, dzs)))


class IPMReLU(Solver[IPMState]):
    """Interior-point method for :class:`~convexrecon.programs.relu.TwoLayerReLU`
    with one output column (see the module docstring).

    Options (keyword-only): ``max_iter`` (predictor-corrector iterations),
    ``tol`` (relative duality gap, > 0), ``feas_tol`` (relative violation of the
    repaired point), ``check_every`` (certificate every this many iterations),
    ``stop`` (``"gap"`` or ``"kkt"``: also require the KKT maximum <= ``tol``),
    ``step_fraction`` (fraction of the step to the boundary, in (0, 1)),
    ``refine`` (iterative-refinement steps per Newton solve), ``dtype`` (compute
    precision, float64 by default; ``None`` keeps the program's: in float32 the
    Newton systems become too ill-conditioned to reach a tight gap, so the run
    stops early with ``state.failed``).

    ``run()`` starts from its own interior point (no ``x0``; warm starts: ADMMReLU).
    ``res.x`` is the repaired feasible point ``(V, W)`` in the program's dtype and
    ``res.state.multipliers`` the cone multipliers ``(mu_v, mu_w)`` in that dtype.
    """

    def __init__(self, program: TwoLayerReLU, *, max_iter: int = 100, tol: float = 1e-4,
                 feas_tol: float = 1e-6, check_every: int = 1, stop: str = "gap",
                 step_fraction: float = 0.99, refine: int = 2,
                 dtype: torch.dtype | None = torch.float64) -> None:
        if not isinstance(program, TwoLayerReLU):
            raise InputError(f"program: expected a TwoLayerReLU, got {type(program).__name__}")
        if program.data.c != 1:
            raise InputError("program: IPMReLU expects a TwoLayerReLU with one output column, "
                             f"got c={program.data.c} columns (for several: Columnwise(program), or "
                             "solve(program, method='ipm'))")
        super().__init__(max_iter=max_iter, tol=check_positive(tol, "tol"),
                         check_every=check_every)
        self.feas_tol = check_positive(feas_tol, "feas_tol")
        self.stop = check_choice(stop, ("gap", "kkt"), "stop")
        frac = check_positive(step_fraction, "step_fraction")
        if not frac < 1.0:
            raise InputError(f"step_fraction: expected a number in (0, 1), got {step_fraction!r}")
        self.step_fraction = frac
        if isinstance(refine, bool) or int(refine) != refine or int(refine) < 0:
            raise InputError(f"refine: expected an integer >= 0, got {refine!r}")
        self.refine = int(refine)
        self.user_program = program
        self.program = program.to(dtype=dtype) if dtype is not None else program
        self.S = _Structure(self.program)
        data = self.program.data
        g = data.patterns.gates
        self.gates = None if g is None else torch.cat([g, g], 1)            # (d, N)
        self.absXg = None if g is None else (self.S.X @ self.gates).abs()   # (n, N)

    # -- protocol -------------------------------------------------------------------
    def converged(self, st: IPMState) -> bool:
        return super().converged(st) and st.violation <= self.feas_tol

    def solution(self, st: IPMState) -> tuple[torch.Tensor, torch.Tensor]:
        """The repaired point ``(V, W)`` in the user program's dtype."""
        dt = self.user_program.data.X.dtype
        return tuple(t.to(dt) for t in st.x)

    def init(self, x0: Any = None) -> IPMState:
        """The fixed interior starting point (no ``x0``: warm starts need ADMMReLU)."""
        if x0 is not None:
            raise InputError("x0: the interior-point method starts from its own interior "
                             "point and takes no x0 (for warm starts use ADMMReLU)")
        S = self.S
        X = S.X
        kw = dict(dtype=X.dtype, device=X.device)
        U = torch.zeros(S.d, S.N, **kw)
        ss = torch.zeros(S.N, S.d + 1, **kw)
        ss[:, 0] = 1.0
        return IPMState(x=self._to_x(U), U=U, t=torch.zeros(S.N, **kw),
                        sl=torch.ones(S.n, S.N, **kw),
                        zl=torch.full((S.n, S.N), 1.0 / math.sqrt(S.n), **kw),
                        ss=ss, zs=ss.clone())

    def step(self, st: IPMState) -> IPMState:
        """One Mehrotra predictor-corrector iteration."""
        S = self.S
        nw = _Newton(S, st, self.refine)
        if not nw.ok:
            st.failed = True
            return st
        degree = S.degree
        mu = _complementarity(st.sl, st.zl, st.ss, st.zs, degree)
        # predictor (affine scaling)
        rc_l = -nw.laml * nw.laml
        rc_s = -jprod(nw.lams, nw.lams)
        _, _, dsl, dss, dzl, dzs = nw.solve(rc_l, rc_s)
        a_aff = min(1.0, nw.max_step(dsl, dss, dzl, dzs))
        mu_aff = _complementarity(st.sl + a_aff * dsl, st.zl + a_aff * dzl,
                                  st.ss + a_aff * dss, st.zs + a_aff * dzs, degree)
        if not (math.isfinite(a_aff) and math.isfinite(mu_aff)):
            st.failed = True
            return st
        sigma = min(1.0, (max(mu_aff, 0.0) / mu) ** 3)
        corr = 1.0
        if a_aff < _SMALL_STEP:   # poor affine step: centre, without the second-order term
            corr, sigma = 0.0, max(sigma, _SIGMA_CENTER)
        # corrector: rc = -lam o lam - (W^-1 ds_aff) o (W dz_aff) + sigma mu e
        eta, wb = nw.eta, nw.wb
        rc_l = rc_l - corr * (dsl / nw.rl) * (dzl * nw.rl) + sigma * mu
        rc_s = (rc_s - corr * jprod(w_apply(eta, wb, dss, inverse=True), w_apply(eta, wb, dzs))
                + sigma * mu * identity(nw.lams))
        dU, dt, dsl, dss, dzl, dzs = nw.solve(rc_l, rc_s)
        amax = nw.max_step(dsl, dss, dzl, dzs)
        if math.isnan(amax):
            st.failed = True
            return st
        a = min(1.0, self.step_fraction * amax)
        st.U = st.U + a * dU
        st.t = st.t + a * dt
        st.sl, st.zl = st.sl + a * dsl, st.zl + a * dzl
        st.ss, st.zs = st.ss + a * dss, st.zs + a * dzs
        st.step_size = a
        st.x = self._to_x(st.U)
        st.it += 1
        return st

    def certificate(self, st: IPMState) -> float:
        """Relative duality gap at the repaired point (and, for ``stop="kkt"``, the
        larger of it and the KKT maximum); sets ``x``, ``violation``,
        ``multipliers``, ``gap``, ``mu`` (and ``kkt``) on the state."""
        prog, S = self.program, self.S
        beta = prog.data.beta
        x = self._to_x(self._repair(st.U))
        mult = self._multipliers(st.zl)
        V, W = self._to_x(st.U)
        lam = prog.data.Y - prog.data.apply(V - W)               # residual at the iterate
        st.x = x
        st.violation = prog.violation(x)
        st.gap = relu_gap(prog, x, multipliers=mult, dual=lam).relative
        st.multipliers = tuple(m.to(self.user_program.data.X.dtype) for m in mult)
        st.mu = beta * S.unit * _complementarity(st.sl, st.zl, st.ss, st.zs, S.degree)
        if self.stop == "kkt":
            st.kkt = prog.kkt(x, multipliers=mult).max
            return max(st.gap, st.kkt)
        return st.gap

    def objective(self, st: IPMState) -> float:
        return self.program.value(st.x)

    def done(self, st: IPMState) -> bool:
        if st.it >= self.max_iter or st.failed:
            return True
        return st.certificate <= self.tol and st.violation <= self.feas_tol

    def multipliers(self, st: IPMState) -> tuple[torch.Tensor, torch.Tensor]:
        """Cone multipliers ``(mu_v, mu_w)`` (each ``(n, P, 1)``) at ``st``."""
        if st.multipliers is not None:
            return st.multipliers
        return self._multipliers(st.zl)

    def _multipliers(self, zl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear-cone duals ``(n, N)`` (internal units) -> ``(mu_v, mu_w)``."""
        mz = zl * (self.program.data.beta / self.S.kappa)
        return mz[:, : self.S.P, None], mz[:, self.S.P:, None]

    # -- helpers --------------------------------------------------------------------
    def _to_x(self, U: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Columns ``(d, N)`` (internal units) -> program variable ``(V, W)``, each
        ``(P, d, 1)``."""
        Ut = U.T.unsqueeze(-1) * self.S.unit
        return Ut[: self.S.P].contiguous(), Ut[self.S.P:].contiguous()

    def _repair(self, U: torch.Tensor) -> torch.Tensor:
        """Shift each block along its gate until feasible (see the module docstring)."""
        if self.gates is None:
            return U
        tau, _ = gate_shift(self.S.G(U), self.absXg)  # stuck blocks are left as they are
        return U + self.gates * tau
