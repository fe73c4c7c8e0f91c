"""ISTA and FISTA (with adaptive restart) on any :class:`CompositeProgram`.

The hot loop costs one application of the smooth term's gradient and one prox per
iteration. For a :class:`~convexrecon.programs.terms.LeastSquares` data term the
gradient is affine, ``grad f(v) = A.N v - A^H y (+ mu v)``, and the loop applies
``A.N`` to the new iterate ``x_{k+1}`` only: the extrapolated point's
``A.N y_{k+1} = A.N x_{k+1} + beta (A.N x_{k+1} - A.N x_k)`` follows by linearity.
Every iterate's ``A.N x`` is then at hand, so objective and certificate checks
(``check_every``) cost no extra ``A.N``, and the function-value restart is free.
The vector updates run in place on the iteration's own temporaries, and the
momentum and restart test stay on the device (no host synchronisation per
iteration).

Restart (O'Donoghue & Candes, 2015): ``"gradient"`` restarts the momentum when
``Re<y_k - x_{k+1}, x_{k+1} - x_k> > 0``; ``"function"`` when the objective goes up.

**Batches** (``batch_dims = k``, least-squares programs such as
:class:`~convexrecon.programs.l1.L1WaveletProgram`): the first ``k`` axes of the
variable index independent systems, as in :class:`~convexrecon.solvers.cg.CG`.
Every system gets its own step (a batched power method,
:meth:`~convexrecon.programs.terms.LeastSquares.lipschitz_per_system`), its own
momentum and restarts, its own certificate, and stops at its own tolerance (it is
then left as it is while the others go on): a batch gives what its systems give one
by one. The recorded certificate is the largest over the systems, the objective
their sum. With ``batch_dims = 0`` the whole variable is one system.

**Cycle spinning** (``cycle_spin=seed``, a :class:`~convexrecon.programs.terms.WaveletL1`
regulariser): every iteration thresholds in a wavelet grid shifted at random
(uniform over the ``2**levels`` distinct circular shifts per axis; the same
sequence for every system, drawn from its own generator seeded with ``seed``, so
batches still equal one-by-one runs). The iteration then no longer minimises one
fixed objective: the objective, the certificate (duality gap), ``tol`` and the
function restart all refer to the *unshifted* objective ``f + lam ||W x||_1``; the
run stops at ``max_iter`` or when that certificate reaches ``tol``.

Variables may be tensors or tuples of tensors (generic smooth terms, ``k = 0``),
real or complex.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from convexrecon._checks import check_choice, check_positive
from convexrecon.errors import InputError
from convexrecon.programs._systems import check_batch_dims, per_system, system_rinner
from convexrecon.programs.composite import CompositeProgram
from convexrecon.programs.terms import LeastSquares
from convexrecon.solvers.base import History, Solver, State, Variable
from convexrecon.tree import tree_map, tree_map2

__all__ = ["ProxGradState", "ISTA", "FISTA"]


@dataclass
class ProxGradState(State):
    """State of ISTA/FISTA.

    Attributes:
        y: the extrapolated point (``x`` for ISTA and right after a restart).
        t: the momentum parameter of every system (float64, the batch shape).
        step: the step size: a number, or one per system (a tensor of the batch shape).
        normal_x: ``A.N x`` (least-squares data terms only, else ``None``).
        normal_y: ``A.N y`` (least-squares data terms only, else ``None``).
        reg_value: ``g(x)`` (per system) when the prox gave it for free, else ``None``.
        objective_value: ``F(x)`` per system when known (function restart), else ``None``.
        restarts: how many times each system's momentum was restarted.
        system_certificate: the last evaluated certificate of every system.
        active: which systems still iterate (``None``: all of them).
        rng: the generator of the cycle-spinning shifts (``None``: fixed transform).
    """

    y: Variable = None
    t: Any = None
    step: Any = 0.0
    normal_x: Any = None
    normal_y: Any = None
    reg_value: Any = None
    objective_value: Any = None
    restarts: Any = None
    system_certificate: Any = None
    active: Any = None
    rng: Any = None


_RESTARTS = ("gradient", "function", "none")


def _leaf(x: Variable) -> torch.Tensor:
    return x[0] if isinstance(x, tuple) else x


def _sys_inner(a: Variable, b: Variable, k: int) -> torch.Tensor:
    """``Re <a, b>`` per system, summed over the leaves of tuple variables."""
    if isinstance(a, tuple):
        return sum(_sys_inner(u, v, k) for u, v in zip(a, b))
    return system_rinner(a, b, k)


def _scaled(v: torch.Tensor, s, like: torch.Tensor) -> Any:
    """``s`` as a multiplier of ``v``: a number, or a per-system tensor broadcast."""
    return s if not isinstance(s, torch.Tensor) else per_system(s.to(like.real.dtype), like)


class _ProxGradient(Solver[ProxGradState]):
    """Shared forward-backward iteration; ``accelerate`` selects FISTA."""

    accelerate = False

    def __init__(self, program: CompositeProgram, *, max_iter: int = 100, tol: float = 0.0,
                 check_every: int = 1, step: float | None = None,
                 restart: bool | str = "none", batch_dims: int = 0,
                 cycle_spin: int | None = None) -> None:
        super().__init__(max_iter=max_iter, tol=tol, check_every=check_every)
        if not isinstance(program, CompositeProgram):
            raise InputError(f"program: expected a CompositeProgram, got {type(program).__name__}")
        self.program = program
        self.step_size = None if step is None else check_positive(step, "step")
        if restart is True:
            restart = "gradient"
        elif restart is False or restart is None:
            restart = "none"
        self.restart = check_choice(str(restart), _RESTARTS, "restart")
        self._ls = program.smooth if isinstance(program.smooth, LeastSquares) else None
        # programs whose value/certificate take normal_x= (RegularizedLeastSquares)
        self._rich = self._ls is not None and hasattr(program, "duality_gap")
        reg = program.reg
        self._prox_value = getattr(reg, "prox_with_value", None) if reg is not None else None
        if batch_dims:
            if self._ls is None or not hasattr(program, "certificate_per_system"):
                raise InputError(f"batch_dims: expected 0 for {type(program).__name__} (per-system "
                                 "runs need a least-squares program with certificate_per_system), "
                                 f"got {batch_dims!r}")
            check_batch_dims(batch_dims, len(self._ls.batch_shape))
        else:
            check_batch_dims(batch_dims, 0)
        self.batch_dims = batch_dims
        if cycle_spin is not None:
            if isinstance(cycle_spin, bool) or not isinstance(cycle_spin, int):
                raise InputError(f"cycle_spin: expected an int seed or None, got {cycle_spin!r}")
            if reg is None or not hasattr(reg, "prox_shifted"):
                raise InputError("cycle_spin: expected a regulariser with random shifts "
                                 f"(WaveletL1), got {type(reg).__name__}")
            reg.shift_period()  # raises InputError for a transform without shifts
        self.cycle_spin = cycle_spin

    # -- helpers ------------------------------------------------------------------
    def _start(self, x0: Variable | None) -> Variable:
        if x0 is None:
            zeros = getattr(self.program, "zeros", None)
            if zeros is None:
                raise InputError("x0: expected a starting point (this program has no zeros()), got None")
            return zeros()
        check = getattr(self.program, "check_x", None)
        if check is not None:
            check(x0, "x0")
        return tree_map(lambda v: v.clone(), x0)

    def _initial_step(self, x: Variable) -> Any:
        if self.step_size is not None:
            return self.step_size
        if not self.batch_dims:
            return 1.0 / self.program.smooth.lipschitz()
        lip = self._ls.lipschitz_per_system(self.batch_dims)
        if bool((lip == lip.reshape(-1)[0]).all()):
            return 1.0 / float(lip.reshape(-1)[0])  # one step for all: a plain number
        return (1.0 / lip).to(device=_leaf(x).device)

    def _prox(self, z: Variable, step: Any, state: ProxGradState, *,
              with_value: bool) -> tuple[Variable, Any]:
        """The prox, and the regulariser's value at its output when ``with_value``
        (only iterations that are evaluated, or function restarts, need it)."""
        reg = self.program.reg
        if reg is None:
            return z, None
        if state.rng is not None:
            axes, period = reg.shift_period()
            shift = torch.randint(0, period, (len(axes),), generator=state.rng).tolist()
            return reg.prox_shifted(z, step, shift), None  # its value is the shifted one
        if with_value and self._prox_value is not None:
            if self.batch_dims:
                return self._prox_value(z, step, self.batch_dims)
            return self._prox_value(z, step)
        return reg.prox(z, step), None

    def _gradient_step(self, y: Variable, ny: Any, step: Any) -> Variable:
        """``z = y - step * grad f(y)``, fused for least-squares terms."""
        if self._ls is None:
            g = self.program.smooth.grad(y)
            return tree_map2(lambda a, b: a - _scaled(b, step, a) * b, y, g)
        ls = self._ls
        if not isinstance(step, torch.Tensor):
            z = torch.add(y, ny, alpha=-step)
            z.add_(ls.aty, alpha=step)
            if ls.mu:
                z.add_(y, alpha=-step * ls.mu)
            return z
        z = ny - ls.aty
        if ls.mu:
            z.add_(y, alpha=ls.mu)
        return z.mul_(-_scaled(z, step, z)).add_(y)

    def _values(self, x, nx, gv) -> torch.Tensor:
        """The objective of every system (float64 tensor of the batch shape)."""
        if self.batch_dims:
            return self.program.value_per_system(x, self.batch_dims, normal_x=nx, reg_value=gv)
        if self._rich:
            v = self.program.value(x, normal_x=nx, reg_value=gv)
        else:
            v = self.program.value(x)
        return torch.tensor(float(v), dtype=torch.float64, device=_leaf(x).device)

    def _certificates(self, state: ProxGradState) -> torch.Tensor:
        if self.batch_dims:
            return self.program.certificate_per_system(
                state.x, self.batch_dims, normal_x=state.normal_x, reg_value=state.reg_value)
        if self._rich:
            c = self.program.certificate(state.x, normal_x=state.normal_x, reg_value=state.reg_value)
        else:
            c = self.program.certificate(state.x)
        return torch.tensor(float(c), dtype=torch.float64)

    # -- protocol -----------------------------------------------------------------
    def init(self, x0: Variable | None = None) -> ProxGradState:
        x = self._start(x0)
        leaf = _leaf(x)
        lead = tuple(leaf.shape[: self.batch_dims])
        nx = self._ls.normal(x) if self._ls is not None else None
        rng = None
        if self.cycle_spin is not None:
            rng = torch.Generator(device="cpu").manual_seed(self.cycle_spin)
        state = ProxGradState(
            x=x, y=x, step=self._initial_step(x), normal_x=nx, normal_y=nx, rng=rng,
            t=torch.ones(lead, dtype=torch.float64, device=leaf.device),
            restarts=torch.zeros(lead, dtype=torch.int64, device=leaf.device))
        if self.restart == "function":
            state.objective_value = self._values(x, nx, None)
        return state

    def step(self, state: ProxGradState) -> ProxGradState:
        step, x, y, k = state.step, state.x, state.y, self.batch_dims
        z = self._gradient_step(y, state.normal_y, step)
        evaluated = bool(self.check_every) and (state.it + 1) % self.check_every == 0
        x_new, gv = self._prox(z, step, state, with_value=evaluated or self.restart == "function")
        active = state.active
        if active is not None:  # systems at their tolerance stay as they are
            x_new = torch.where(per_system(active, x_new), x_new, x)
            gv = None
        nx_new = self._ls.normal(x_new) if self._ls is not None else None
        new = ProxGradState(x=x_new, it=state.it + 1, certificate=state.certificate, y=x_new,
                            t=state.t, step=step, normal_x=nx_new, normal_y=nx_new,
                            reg_value=gv, restarts=state.restarts,
                            system_certificate=state.system_certificate, active=active,
                            rng=state.rng)
        if not self.accelerate:
            return new
        d = tree_map2(lambda a, b: a - b, x_new, x)
        t = state.t
        hit = None
        if self.restart == "gradient":
            hit = (_sys_inner(y, d, k) - _sys_inner(x_new, d, k)) > 0
        elif self.restart == "function":
            new.objective_value = self._values(x_new, nx_new, gv)
            hit = new.objective_value > state.objective_value
        if hit is not None:
            if active is not None:
                hit = hit & active
            t = torch.where(hit, torch.ones_like(t), t)
            new.restarts = state.restarts + hit.to(torch.int64)
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        new.t = t_new
        # y = x_new + beta d and A.N y by linearity, in place on the temporaries
        new.y = tree_map2(lambda a, b: b.mul_(_scaled(b, beta, b)).add_(a), x_new, d)
        if nx_new is not None:
            dn = nx_new - state.normal_x
            new.normal_y = dn.mul_(_scaled(dn, beta, dn)).add_(nx_new)
        return new

    def objective(self, state: ProxGradState) -> float:
        if state.objective_value is not None:
            return float(state.objective_value.sum())
        return float(self._values(state.x, state.normal_x, state.reg_value).sum())

    def certificate(self, state: ProxGradState) -> float:
        return float(self._certificates(state).max())

    def _record(self, state: ProxGradState, history: History, t0: float) -> None:
        """Evaluate every system's certificate; systems at ``tol`` stop (per system)."""
        elapsed = time.perf_counter() - t0
        certs = self._certificates(state)
        if state.active is not None and state.system_certificate is not None:
            certs = torch.where(state.active.to(certs.device), certs,
                                state.system_certificate.to(certs.device))
        state.system_certificate = certs
        if self.tol > 0 and self.batch_dims and certs.numel() > 1:
            active = (certs > self.tol).to(_leaf(state.x).device)
            state.active = None if bool(active.all()) else active
        state.certificate = float(certs.max()) if certs.numel() else 0.0
        history.append(state.it, self.objective(state), state.certificate, elapsed)


class ISTA(_ProxGradient):
    """Proximal gradient descent ``x <- prox_{s g}(x - s grad f(x))``.

    Args:
        program: a :class:`CompositeProgram`.
        max_iter: iteration limit.
        tol: stop when the certificate is at most ``tol`` (0: run ``max_iter``).
        check_every: evaluate objective and certificate every this many iterations
            (0: only at the end).
        step: the step size (default ``1 / L``, per system with ``batch_dims``).
        batch_dims: leading axes of the variable that index independent systems
            (least-squares programs; see the module docstring).
        cycle_spin: seed of random wavelet shifts (``None``: the fixed transform).
    """

    accelerate = False

    def __init__(self, program: CompositeProgram, *, max_iter: int = 100, tol: float = 0.0,
                 check_every: int = 1, step: float | None = None, batch_dims: int = 0,
                 cycle_spin: int | None = None) -> None:
        super().__init__(program, max_iter=max_iter, tol=tol, check_every=check_every,
                         step=step, restart="none", batch_dims=batch_dims, cycle_spin=cycle_spin)


class FISTA(_ProxGradient):
    """Accelerated proximal gradient (Beck & Teboulle) with adaptive restart.

    Args:
        program: a :class:`CompositeProgram`.
        restart: ``True``/``"gradient"`` (default), ``"function"``, or
            ``False``/``"none"``.
        max_iter, tol, check_every, step, batch_dims, cycle_spin: as for :class:`ISTA`.
    """

    accelerate = True

    def __init__(self, program: CompositeProgram, *, restart: bool | str = True,
                 max_iter: int = 100, tol: float = 0.0, check_every: int = 1,
                 step: float | None = None, batch_dims: int = 0,
                 cycle_spin: int | None = None) -> None:
        super().__init__(program, max_iter=max_iter, tol=tol, check_every=check_every,
                         step=step, restart=restart, batch_dims=batch_dims, cycle_spin=cycle_spin)
