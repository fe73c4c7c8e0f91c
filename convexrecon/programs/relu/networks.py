"""Map a convex two-layer solution back to the nonconvex network it encodes.

* ReLU form: each non-zero block ``v`` (pattern ``i``, output ``k``) gives a neuron
  with first-layer weights ``v / sqrt(||v||)`` and output weight ``+sqrt(||v||)`` on
  output ``k``; each ``w`` the same with ``-sqrt(||w||)``. The cone constraints make
  ``relu(X u) = D_i X u``, so the network reproduces the convex model, and its
  weight-decay penalty ``beta/2 (||u||^2 + alpha^2)`` equals ``beta ||v||``.
* Gated form: each block ``U_i = sum_r sigma_r a_r b_r^T`` (SVD) gives neurons
  ``sqrt(sigma_r) a_r`` with output weights ``sqrt(sigma_r) b_r`` behind the fixed
  gate ``g_i``; the penalty sums to ``beta ||U_i||_*``.
* Gated to ReLU (:func:`cone_decomposition`, after Mishkin, Sahiner & Pilanci 2022):
  every gated block is split into a difference of two points of its pattern's cone,
  which gives a cone-form point, hence a ReLU network, with the same predictions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from convexrecon.errors import InputError
from convexrecon.programs.relu_data import gate_shift

__all__ = ["TwoLayerNet", "GatedNet", "recover_network", "network_objective",
           "cone_decomposition"]


class TwoLayerNet(nn.Module):
    """``f(x) = relu(x W1^T) W2`` with ``W1 (m, d)``, ``W2 (m, c)``."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor, *,
                 scalar_output: bool = False) -> None:
        super().__init__()
        self.first = nn.Parameter(first.clone())
        self.second = nn.Parameter(second.clone())
        self.scalar_output = bool(scalar_output)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden activations ``(n, m)``."""
        return torch.relu(x @ self.first.T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.hidden(x) @ self.second
        return out[..., 0] if self.scalar_output else out

    def penalty(self, beta: float) -> torch.Tensor:
        """Weight decay ``beta/2 (||W1||^2 + ||W2||^2)``."""
        return 0.5 * beta * (self.first.pow(2).sum() + self.second.pow(2).sum())


class GatedNet(TwoLayerNet):
    """``f(x) = (1[x G^T >= 0] * (x W1^T)) W2`` with fixed gates ``G (m, d)``."""

    def __init__(self, gates: torch.Tensor, first: torch.Tensor, second: torch.Tensor, *,
                 scalar_output: bool = False) -> None:
        super().__init__(first, second, scalar_output=scalar_output)
        self.register_buffer("gates", gates.clone())

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.gates.T >= 0).to(x.dtype) * (x @ self.first.T)


def network_objective(net: TwoLayerNet, X: torch.Tensor, y: torch.Tensor, beta: float) -> float:
    """``1/2 ||net(X) - y||^2 + beta/2 (||W1||^2 + ||W2||^2)``."""
    with torch.no_grad():
        return float(0.5 * (net(X) - y).pow(2).sum() + net.penalty(beta))


def _relu_neurons(blocks: torch.Tensor, sign: float, tol: float):
    P, d, c = blocks.shape
    nrm = torch.linalg.vector_norm(blocks, dim=1)  # (P, c)
    keep = (nrm > tol).nonzero().tolist()
    first = [blocks[i, :, k] / nrm[i, k].sqrt() for i, k in keep]
    second = []
    for i, k in keep:
        row = torch.zeros(c, dtype=blocks.dtype, device=blocks.device)
        row[k] = sign * nrm[i, k].sqrt()
        second.append(row)
    return first, second


def recover_network(program: Any, x: Any, *, tol: float = 0.0) -> TwoLayerNet:
    """The two-layer network encoded by a solution ``x`` of ``program``.

    Args:
        program: a :class:`~convexrecon.programs.relu.TwoLayerReLU`,
            :class:`~convexrecon.programs.relu.GatedReLU`, or a convolutional program
            (its own ``recover_network`` method is called).
        x: its solution (``(V, W)`` or ``U``).
        tol: drop blocks (or singular values) with norm at most ``tol``.

    Returns:
        A :class:`TwoLayerNet` (ReLU form), :class:`GatedNet` (gated form), or the
        convolutional program's network module.
    """
    from convexrecon.programs.relu import GatedReLU, TwoLayerReLU

    data = getattr(program, "data", None)
    dt, dev = (data.X.dtype, data.X.device) if data is not None else (None, None)
    if isinstance(program, TwoLayerReLU):
        V, W = program._check(x)
        f1, s1 = _relu_neurons(V, 1.0, tol)
        f2, s2 = _relu_neurons(W, -1.0, tol)
        first, second = f1 + f2, s1 + s2
        if not first:
            return TwoLayerNet(torch.zeros(0, data.d, dtype=dt, device=dev),
                               torch.zeros(0, data.c, dtype=dt, device=dev),
                               scalar_output=data.scalar_output)
        return TwoLayerNet(torch.stack(first), torch.stack(second),
                           scalar_output=data.scalar_output)
    if isinstance(program, GatedReLU):
        U = data.check_blocks(x, "x")
        gates = data.patterns.gates
        if gates is None:
            raise InputError("program: expected patterns with gates to recover a gated "
                             "network, got patterns without gates")
        L, S, Vh = torch.linalg.svd(U, full_matrices=False)  # (P,d,r), (P,r), (P,r,c)
        g, f, s = [], [], []
        for i, r in (S > tol).nonzero().tolist():
            root = S[i, r].sqrt()
            g.append(gates[:, i])
            f.append(root * L[i, :, r])
            s.append(root * Vh[i, r, :])
        if not f:
            z = torch.zeros(0, data.d, dtype=dt, device=dev)
            return GatedNet(z, z, torch.zeros(0, data.c, dtype=dt, device=dev),
                            scalar_output=data.scalar_output)
        return GatedNet(torch.stack(g), torch.stack(f), torch.stack(s),
                        scalar_output=data.scalar_output)
    own = getattr(program, "recover_network", None)
    if callable(own):  # the convolutional programs recover their own networks
        return own(x)
    raise InputError(f"program: expected a TwoLayerReLU, GatedReLU or a program with a "
                     f"recover_network method, got {type(program).__name__}")


def cone_decomposition(program: Any, U: Any) -> tuple[Any, tuple[torch.Tensor, torch.Tensor]]:
    """A cone-form (ReLU) point with the predictions of a gated solution ``U``.

    Each block ``U_i`` (each output column) is written as ``v_i - w_i`` with both in
    the cone ``K_i = {u : (2 D_i - I) X u >= 0}`` of its pattern, using its gate:
    ``(2 D_i - I) X g_i = |X g_i| >= 0``, so ``w_i = tau_i g_i`` and ``v_i = U_i +
    tau_i g_i`` are feasible once ``tau_i`` is large enough
    (:func:`~convexrecon.programs.relu_data.gate_shift`; Mishkin, Sahiner & Pilanci,
    2022, use gates the same way). Then ``D_i X v_i - D_i X w_i = D_i X U_i``: the
    ReLU model equals the gated model, and ``recover_network(relu_program, (V, W))``
    is a ReLU network with the gated network's outputs. Its penalty
    ``beta sum_i (||v_i|| + ||w_i||)`` is at least the gated one, and with large
    shifts it can be far larger than the smallest decomposition's
    (:func:`~convexrecon.programs.relu_cvxpy.min_norm_cone_decomposition`, for small
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
    from convexrecon.programs.relu import GatedReLU, TwoLayerReLU

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
