"""Map a convex two-layer solution back to the nonconvex network it encodes.

* ReLU form: each non-zero block ``v`` (pattern ``i``, output ``k``) gives a neuron
  with first-layer weights ``v / sqrt(||v||)`` and output weight ``+sqrt(||v||)`` on
  output ``k``; each ``w`` the same with ``-sqrt(||w||)``. The cone constraints make
  ``relu(X u) = D_i X u``, so the network reproduces the convex model, and its
  weight-decay penalty ``beta/2 (||u||^2 + alpha^2)`` equals ``beta ||v||``.
* Gated form: each block ``U_i = sum_r sigma_r a_r b_r^T`` (SVD) gives neurons
  ``sqrt(sigma_r) a_r`` with output weights ``sqrt(sigma_r) b_r`` behind the fixed
  gate ``g_i``; the penalty sums to ``beta ||U_i||_*``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from convexrecon.errors import InputError

__all__ = ["TwoLayerNet", "GatedNet", "recover_network", "network_objective"]


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
