"""cvxpy export of the convex two-layer programs (small sizes only).

Each exporter checks the size (scalar variables plus constraint rows) against
``max_size`` before building anything, so that a too-large problem fails with an
:class:`InputError` naming the limit instead of deep inside cvxpy.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from convexrecon.errors import InputError

__all__ = ["gated_to_cvxpy", "relu_to_cvxpy", "cvxpy_size", "min_norm_cone_decomposition"]


def cvxpy_size(prog, *, constrained: bool) -> int:
    """Scalar variables plus constraint rows of the exported problem."""
    data = prog.data
    n_var = data.P * data.d * data.c * (2 if constrained else 1)
    n_con = 2 * data.P * data.n * data.c if constrained else 0
    return n_var + n_con + data.n * data.c


def _check_size(prog, *, constrained: bool, max_size: int) -> None:
    size = cvxpy_size(prog, constrained=constrained)
    if size > int(max_size):
        data = prog.data
        raise InputError(
            f"to_cvxpy: problem too large for cvxpy (n={data.n}, d={data.d}, P={data.P}, "
            f"c={data.c}: size {size} variables+constraints); the limit is max_size={int(max_size)}"
        )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _to_tensor(a: np.ndarray | None, like: torch.Tensor) -> torch.Tensor:
    if a is None:
        raise InputError("to_x: the cvxpy problem has no solution yet (call problem.solve())")
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(device=like.device, dtype=like.dtype)


def gated_to_cvxpy(prog, *, max_size: int):
    """``(problem, to_x)`` of :class:`~convexrecon.programs.relu.GatedReLU`."""
    import cvxpy as cp

    _check_size(prog, constrained=False, max_size=max_size)
    data = prog.data
    X, Y, Dm = _np(data.X), _np(data.Y), _np(data.Dm)
    P, d, c = data.block_shape
    if c == 1:
        U = cp.Variable((d, P))
        pred = cp.sum(cp.multiply(Dm, X @ U), axis=1)
        obj = 0.5 * cp.sum_squares(pred - Y[:, 0]) + data.beta * cp.sum(cp.norm(U, 2, axis=0))
        problem = cp.Problem(cp.Minimize(obj))

        def to_x() -> torch.Tensor:
            return _to_tensor(U.value, data.X).T.unsqueeze(-1).contiguous()
    else:
        Us = [cp.Variable((d, c)) for _ in range(P)]
        pred = sum(cp.multiply(Dm[:, [i]], X @ Us[i]) for i in range(P))
        obj = 0.5 * cp.sum_squares(pred - Y) + data.beta * sum(cp.normNuc(u) for u in Us)
        problem = cp.Problem(cp.Minimize(obj))

        def to_x() -> torch.Tensor:
            return torch.stack([_to_tensor(u.value, data.X) for u in Us], dim=0)
    return problem, to_x


def relu_to_cvxpy(prog, *, max_size: int):
    """``(problem, to_x)`` of :class:`~convexrecon.programs.relu.TwoLayerReLU`.

    Several output columns give independent scalar programs, summed in one problem.
    """
    import cvxpy as cp

    _check_size(prog, constrained=True, max_size=max_size)
    data = prog.data
    X, Y, Dm = _np(data.X), _np(data.Y), _np(data.Dm)
    E = 2.0 * Dm - 1.0
    P, d, c = data.block_shape
    Vs = [cp.Variable((d, P)) for _ in range(c)]
    Ws = [cp.Variable((d, P)) for _ in range(c)]
    obj = 0
    cons = []
    for k in range(c):
        XV, XW = X @ Vs[k], X @ Ws[k]
        pred = cp.sum(cp.multiply(Dm, XV - XW), axis=1)
        obj = obj + 0.5 * cp.sum_squares(pred - Y[:, k])
        obj = obj + data.beta * (cp.sum(cp.norm(Vs[k], 2, axis=0)) + cp.sum(cp.norm(Ws[k], 2, axis=0)))
        cons += [cp.multiply(E, XV) >= 0, cp.multiply(E, XW) >= 0]
    problem = cp.Problem(cp.Minimize(obj), cons)

    def to_x() -> tuple[torch.Tensor, torch.Tensor]:
        V = torch.stack([_to_tensor(v.value, data.X).T for v in Vs], dim=-1)
        W = torch.stack([_to_tensor(w.value, data.X).T for w in Ws], dim=-1)
        return V.contiguous(), W.contiguous()

    return problem, to_x


ToX = Callable[[], object]


def min_norm_cone_decomposition(program, U, *, solver: str = "CLARABEL",
                                max_size: int | None = None):
    """The cone decomposition of a gated solution with the smallest penalty.

    Like :func:`~convexrecon.programs.relu_recover.cone_decomposition` (same
    predictions), but each block ``U_i`` (each output column) is split as ``v_i -
    w_i`` minimising ``||v_i|| + ||w_i||`` over both cones, by cvxpy: a
    second-order-cone program in ``2 P d c`` variables with ``2 P n c`` rows, for
    small problems (InputError above ``max_size``, the program's cvxpy limit by
    default). Returns ``(relu_program, (V, W))``.
    """
    import cvxpy as cp

    from convexrecon.programs.relu import CVXPY_SIZE_LIMIT
    from convexrecon.programs.relu_recover import relu_twin, shift_into_cones

    relu = relu_twin(program)
    data = program.data
    _check_size(relu, constrained=True,
                max_size=CVXPY_SIZE_LIMIT if max_size is None else max_size)
    U = data.check_blocks(U, "U")
    X, E = _np(data.X), _np(2.0 * data.Dm - 1.0)
    V, cons, obj = [], [], 0
    for j in range(data.c):
        Uj = _np(U[:, :, j].T)                                      # (d, P)
        Vj = cp.Variable(Uj.shape)
        cons += [cp.multiply(E, X @ Vj) >= 0, cp.multiply(E, X @ (Vj - Uj)) >= 0]
        obj = obj + cp.sum(cp.norm(Vj, 2, axis=0)) + cp.sum(cp.norm(Vj - Uj, 2, axis=0))
        V.append(Vj)
    problem = cp.Problem(cp.Minimize(obj), cons)
    problem.solve(solver=solver)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise InputError(f"U: the decomposition program ended {problem.status!r}; expected "
                         "an optimal solution (is every block movable into its cones?)")
    Vt = torch.stack([_to_tensor(Vj.value, U).T for Vj in V], dim=-1)  # (P, d, c)
    return relu, shift_into_cones(data, Vt, Vt - U)  # exactly feasible despite solver tol
