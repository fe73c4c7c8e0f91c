"""Gated solutions as ReLU networks: cone decompositions of the gated program.

Every gated block ``U_i`` is written as a difference ``v_i - w_i`` of two points of
its pattern's cone ``K_i = {u : (2 D_i - I) X u >= 0}``, which gives a point of the
cone-constrained program, hence a ReLU network, with the same predictions (after
Mishkin, Sahiner & Pilanci 2022): :func:`cone_decomposition` along the gates at any
size, :func:`min_norm_cone_decomposition` with the smallest penalty by cvxpy.
"""

from __future__ import annotations

from typing import Any

import torch

from convexrecon.errors import InputError
from convexrecon.programs.relu.cvxpy_export import check_size, to_numpy, to_tensor
from convexrecon.programs.relu.dense import GatedReLU, TwoLayerReLU
from convexrecon.programs.relu.limits import CVXPY_SIZE_LIMIT
from convexrecon.programs.relu.patterns import gate_shift

__all__ = ["cone_decomposition", "min_norm_cone_decomposition", "relu_twin", "shift_into_cones"]


def cone_decomposition(program: Any, U: Any) -> tuple[Any, tuple[torch.Tensor, torch.Tensor]]:
    """A cone-form (ReLU) point with the predictions of a gated solution ``U``.

    Each block ``U_i`` (each output column) is written as ``v_i - w_i`` with both in
    the cone ``K_i = {u : (2 D_i - I) X u >= 0}`` of its pattern, using its gate:
    ``(2 D_i - I) X g_i = |X g_i| >= 0``, so ``w_i = tau_i g_i`` and ``v_i = U_i +
    tau_i g_i`` are feasible once ``tau_i`` is large enough
    (:func:`~convexrecon.programs.relu.patterns.gate_shift`; Mishkin, Sahiner & Pilanci,
    2022, use gates the same way). Then ``D_i X v_i - D_i X w_i = D_i X U_i``: the
    ReLU model equals the gated model, and ``recover_network(relu_program, (V, W))``
    is a ReLU network with the gated network's outputs. Its penalty
    ``beta sum_i (||v_i|| + ||w_i||)`` is at least the gated one, and with large
    shifts it can be far larger than the smallest decomposition's
    (:func:`min_norm_cone_decomposition`, for small
    problems; ``examples/convex_relu.py`` prints both). This one costs two products
    with ``X`` at any size.

    Args:
        program: a :class:`~convexrecon.programs.relu.GatedReLU` whose patterns
            have gates.
        U: its solution ``(P, d, c)``.

    Returns:
        ``(relu_program, (V, W))``: the :class:`~convexrecon.programs.relu.TwoLayerReLU`
        on the same data, patterns and ``beta``, and the feasible point.
    """
    relu = relu_twin(program)
    U = program.data.check_blocks(U, "U")
    return relu, shift_into_cones(program.data, U, torch.zeros_like(U))


def relu_twin(program: Any) -> Any:
    """The cone-form program on a gated program's data, patterns and ``beta``;
    InputError unless ``program`` is a :class:`GatedReLU` whose patterns have gates."""
    if not isinstance(program, GatedReLU):
        raise InputError(f"program: expected a GatedReLU, got {type(program).__name__}")
    data = program.data
    if data.patterns.gates is None:
        raise InputError("program: expected patterns with gates for the cone decomposition, "
                         "got patterns without gates")
    Y = data.Y[:, 0] if data.scalar_output else data.Y
    return TwoLayerReLU(data.X, Y, beta=data.beta, patterns=data.patterns)


def shift_into_cones(data: Any, V: torch.Tensor, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V + tau g, W + tau g)``: both moved along each block's gate ``g_i`` (by one
    ``tau`` per block and column, so ``V - W`` is unchanged) until both satisfy the
    cone constraints; InputError if a block cannot be moved that way."""
    gates = data.patterns.gates
    E = (2.0 * data.Dm - 1.0).unsqueeze(-1)                         # (n, P, 1)
    Xg = (data.X @ gates).abs().unsqueeze(-1)
    tau_v, stuck_v = gate_shift(E * data.xu(V), Xg)
    tau_w, stuck_w = gate_shift(E * data.xu(W), Xg)
    stuck = stuck_v | stuck_w
    if bool(stuck.any()):
        i = int(stuck.any(dim=-1).nonzero()[0])
        raise InputError(f"U: expected every block to be movable into its cone along its "
                         f"gate; pattern {i} violates a row where X g_{i} = 0")
    shift = gates.T.unsqueeze(-1) * torch.maximum(tau_v, tau_w).unsqueeze(1)  # (P, d, c)
    return V + shift, W + shift


def min_norm_cone_decomposition(program, U, *, solver: str = "CLARABEL",
                                max_size: int | None = None):
    """The cone decomposition of a gated solution with the smallest penalty.

    Like :func:`cone_decomposition` (same
    predictions), but each block ``U_i`` (each output column) is split as ``v_i -
    w_i`` minimising ``||v_i|| + ||w_i||`` over both cones, by cvxpy: a
    second-order-cone program in ``2 P d c`` variables with ``2 P n c`` rows, for
    small problems (InputError above ``max_size``, the program's cvxpy limit by
    default). Returns ``(relu_program, (V, W))``.
    """
    import cvxpy as cp

    relu = relu_twin(program)
    data = program.data
    check_size(relu, constrained=True,
                max_size=CVXPY_SIZE_LIMIT if max_size is None else max_size)
    U = data.check_blocks(U, "U")
    X, E = to_numpy(data.X), to_numpy(2.0 * data.Dm - 1.0)
    V, cons, obj = [], [], 0
    for j in range(data.c):
        Uj = to_numpy(U[:, :, j].T)                                      # (d, P)
        Vj = cp.Variable(Uj.shape)
        cons += [cp.multiply(E, X @ Vj) >= 0, cp.multiply(E, X @ (Vj - Uj)) >= 0]
        obj = obj + cp.sum(cp.norm(Vj, 2, axis=0)) + cp.sum(cp.norm(Vj - Uj, 2, axis=0))
        V.append(Vj)
    problem = cp.Problem(cp.Minimize(obj), cons)
    problem.solve(solver=solver)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise InputError(f"U: the decomposition program ended {problem.status!r}; expected "
                         "an optimal solution (is every block movable into its cones?)")
    Vt = torch.stack([to_tensor(Vj.value, U).T for Vj in V], dim=-1)  # (P, d, c)
    return relu, shift_into_cones(data, Vt, Vt - U)  # exactly feasible despite solver tol
