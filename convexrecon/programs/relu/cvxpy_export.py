"""cvxpy export of the convex two-layer programs on data matrices (small sizes only).

Each exporter checks the size (scalar variables plus constraint rows) against
``max_size`` before building anything, so that a too-large problem fails with an
:class:`InputError` naming the limit instead of deep inside cvxpy.
"""

from __future__ import annotations

import numpy as np
import torch

from convexrecon.errors import InputError
from convexrecon.programs.relu.limits import CVXPY_SIZE_LIMIT

__all__ = ["gated_to_cvxpy", "relu_to_cvxpy", "cvxpy_size", "check_size", "to_numpy", "to_tensor"]


def cvxpy_size(prog, *, constrained: bool) -> int:
    """Scalar variables plus constraint rows of the exported problem."""
    data = prog.data
    n_var = data.P * data.d * data.c * (2 if constrained else 1)
    n_con = 2 * data.P * data.n * data.c if constrained else 0
    return n_var + n_con + data.n * data.c


def check_size(prog, *, constrained: bool, max_size: int) -> None:
    size = cvxpy_size(prog, constrained=constrained)
    if size > int(max_size):
        data = prog.data
        raise InputError(
            f"to_cvxpy: problem too large for cvxpy (n={data.n}, d={data.d}, P={data.P}, "
            f"c={data.c}: size {size} variables+constraints); the limit is max_size={int(max_size)}"
        )


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def to_tensor(a: np.ndarray | None, like: torch.Tensor) -> torch.Tensor:
    if a is None:
        raise InputError("to_x: the cvxpy problem has no solution yet (call problem.solve())")
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(device=like.device, dtype=like.dtype)


def gated_to_cvxpy(prog, *, max_size: int = CVXPY_SIZE_LIMIT):
    """``(problem, to_x)`` of :class:`~convexrecon.programs.relu.GatedReLU`."""
    import cvxpy as cp

    check_size(prog, constrained=False, max_size=max_size)
    data = prog.data
    X, Y, Dm = to_numpy(data.X), to_numpy(data.Y), to_numpy(data.Dm)
    P, d, c = data.block_shape
    if c == 1:
        U = cp.Variable((d, P))
        pred = cp.sum(cp.multiply(Dm, X @ U), axis=1)
        obj = 0.5 * cp.sum_squares(pred - Y[:, 0]) + data.beta * cp.sum(cp.norm(U, 2, axis=0))
        problem = cp.Problem(cp.Minimize(obj))

        def to_x() -> torch.Tensor:
            return to_tensor(U.value, data.X).T.unsqueeze(-1).contiguous()
    else:
        Us = [cp.Variable((d, c)) for _ in range(P)]
        pred = sum(cp.multiply(Dm[:, [i]], X @ Us[i]) for i in range(P))
        obj = 0.5 * cp.sum_squares(pred - Y) + data.beta * sum(cp.normNuc(u) for u in Us)
        problem = cp.Problem(cp.Minimize(obj))

        def to_x() -> torch.Tensor:
            return torch.stack([to_tensor(u.value, data.X) for u in Us], dim=0)
    return problem, to_x


def relu_to_cvxpy(prog, *, max_size: int = CVXPY_SIZE_LIMIT):
    """``(problem, to_x)`` of :class:`~convexrecon.programs.relu.TwoLayerReLU`.

    Several output columns give independent scalar programs, summed in one problem.
    """
    import cvxpy as cp

    check_size(prog, constrained=True, max_size=max_size)
    data = prog.data
    X, Y, Dm = to_numpy(data.X), to_numpy(data.Y), to_numpy(data.Dm)
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
        V = torch.stack([to_tensor(v.value, data.X).T for v in Vs], dim=-1)
        W = torch.stack([to_tensor(w.value, data.X).T for w in Ws], dim=-1)
        return V.contiguous(), W.contiguous()

    return problem, to_x
