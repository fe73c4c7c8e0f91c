"""The nonconvex networks that the convex two-layer programs encode.

Each program's ``recover_network(x)`` builds one of these from a solution (the
module-level :func:`recover_network` calls it):

* ReLU form: each non-zero block ``v`` (pattern ``i``, output ``k``) gives a neuron
  with first-layer weights ``v / sqrt(||v||)`` and output weight ``+sqrt(||v||)`` on
  output ``k``; each ``w`` the same with ``-sqrt(||w||)``. The cone constraints make
  ``relu(X u) = D_i X u``, so the network reproduces the convex model, and its
  weight-decay penalty ``beta/2 (||u||^2 + alpha^2)`` equals ``beta ||v||``.
* Gated form: each block ``U_i = sum_r sigma_r a_r b_r^T`` (SVD) gives neurons
  ``sqrt(sigma_r) a_r`` with output weights ``sqrt(sigma_r) b_r`` behind the fixed
  gate ``g_i``; the penalty sums to ``beta ||U_i||_*``.
* Convolutional forms: :class:`GatedConvNet` (gated CNN; also the ReLU CNN of the
  cone form, whose gates are then the neurons' own filters), with
  :meth:`GatedConvNet.features`, the hidden layer a next layer takes.
* Gated to ReLU: :mod:`convexrecon.programs.relu.decompose`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import torch.nn.functional as F

from convexrecon.errors import InputError
from convexrecon.operators.conv import complex_to_channels, pad_input, pattern_masks

__all__ = ["TwoLayerNet", "GatedNet", "GatedConvNet", "ReLUConvNet", "recover_network", "network_objective",
           "relu_network", "gated_network"]


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


def relu_network(data: Any, V: torch.Tensor, W: torch.Tensor, *, tol: float = 0.0) -> TwoLayerNet:
    """The ReLU network of a cone-form point ``(V, W)`` on pattern data ``data``:
    a neuron per block of norm above ``tol`` (see the module docstring)."""
    f1, s1 = _relu_neurons(V, 1.0, tol)
    f2, s2 = _relu_neurons(W, -1.0, tol)
    first, second = f1 + f2, s1 + s2
    if not first:
        kw = dict(dtype=data.X.dtype, device=data.X.device)
        return TwoLayerNet(torch.zeros(0, data.d, **kw), torch.zeros(0, data.c, **kw),
                           scalar_output=data.scalar_output)
    return TwoLayerNet(torch.stack(first), torch.stack(second),
                       scalar_output=data.scalar_output)


def gated_network(data: Any, U: torch.Tensor, *, tol: float = 0.0) -> GatedNet:
    """The gated network of a gated point ``U`` on pattern data ``data``: a neuron per
    singular value above ``tol`` of every block, behind that block's gate."""
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
        kw = dict(dtype=data.X.dtype, device=data.X.device)
        z = torch.zeros(0, data.d, **kw)
        return GatedNet(z, z, torch.zeros(0, data.c, **kw), scalar_output=data.scalar_output)
    return GatedNet(torch.stack(g), torch.stack(f), torch.stack(s),
                    scalar_output=data.scalar_output)


def recover_network(program: Any, x: Any, **options: Any) -> torch.nn.Module:
    """The network encoded by a solution ``x`` of any convex two-layer ``program``:
    ``program.recover_network(x, **options)`` (a :class:`TwoLayerNet`,
    :class:`GatedNet` or :class:`GatedConvNet`); InputError for other programs."""
    own = getattr(program, "recover_network", None)
    if not callable(own):
        raise InputError(f"program: expected a convex two-layer program (GatedReLU, "
                         f"TwoLayerReLU, ConvGatedReLU, ConvTwoLayerReLUCone), got "
                         f"{type(program).__name__}")
    return own(x, **options)


class GatedConvNet(torch.nn.Module):
    """Gated two-layer CNN: ``f(X) = conv1x1( 1[conv(X, h_g)] >= 0] * conv(X, W1) , W2 )``.

    Args:
        gates: frozen gate filters ``(P, C + bias, k, k)``.
        gate_index: long ``(m,)``, the gate of each hidden neuron.
        first: first-layer filters ``(m, C + bias, k, k)`` (trainable).
        second: second-layer ``1 x 1`` weights ``(C_out, m, 1, 1)`` (trainable).
        padding, bias: as in :class:`~convexrecon.programs.relu.ConvGatedReLU` (the
            constant channel is appended after padding, so its taps are a true bias).
    """

    def __init__(self, gates: torch.Tensor, gate_index: torch.Tensor, first: torch.Tensor,
                 second: torch.Tensor, *, padding: str = "zeros", bias: bool = True) -> None:
        super().__init__()
        self.register_buffer("gates", gates.detach().clone())
        self.register_buffer("gate_index", gate_index.detach().clone().long())
        self.first = torch.nn.Parameter(first.detach().clone())
        self.second = torch.nn.Parameter(second.detach().clone())
        self.padding, self.bias = padding, bool(bias)
        self.kernel_size = int(gates.shape[-1])

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """The hidden gated activations ``(N, m, H, W)``: the input of a next layer.

        Neuron ``j`` is ``1[conv(X, h_g(j)) >= 0] * conv(X, W1_j)`` (its gate's
        indicator times its first-layer filter's response); the neurons are every
        kept singular component of every pattern, in :attr:`gate_index` order, so
        ``conv1x1(features(X), W2) == forward(X)``.
        """
        if X.is_complex():
            X = complex_to_channels(X)
        xp = pad_input(X.to(self.first.dtype), self.kernel_size, padding=self.padding,
                       bias=self.bias)
        gate = pattern_masks(xp, self.gates)[:, self.gate_index].to(xp.dtype)
        return F.conv2d(xp, self.first) * gate

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` (complex: real/imag channels) -> ``(N, C_out, H, W)``."""
        return F.conv2d(self.features(X), self.second)

    def penalty(self, beta: float) -> torch.Tensor:
        """Weight decay ``beta/2 (||W1||^2 + ||W2||^2)``."""
        return 0.5 * beta * (self.first.pow(2).sum() + self.second.pow(2).sum())


class ReLUConvNet(torch.nn.Module):
    """Two-layer ReLU CNN: ``f(X) = conv1x1(relu(conv(X, W1)), W2)``, the network of the
    cone-constrained convolutional program.

    Args:
        first: first-layer filters ``(m, C + bias, k, k)``.
        second: second-layer ``1 x 1`` weights ``(C_out, m, 1, 1)``.
        padding, bias: as in :class:`GatedConvNet`.
    """

    def __init__(self, first: torch.Tensor, second: torch.Tensor, *, padding: str = "zeros",
                 bias: bool = True) -> None:
        super().__init__()
        self.first = torch.nn.Parameter(first.detach().clone())
        self.second = torch.nn.Parameter(second.detach().clone())
        self.padding, self.bias = padding, bool(bias)
        self.kernel_size = int(first.shape[-1])

    def features(self, X: torch.Tensor) -> torch.Tensor:
        """The hidden activations ``relu(conv(X, W1))``: ``(N, m, H, W)``."""
        if X.is_complex():
            X = complex_to_channels(X)
        xp = pad_input(X.to(self.first.dtype), self.kernel_size, padding=self.padding,
                       bias=self.bias)
        return torch.relu(F.conv2d(xp, self.first))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` (complex: real/imag channels) -> ``(N, C_out, H, W)``."""
        return F.conv2d(self.features(X), self.second)

    def penalty(self, beta: float) -> torch.Tensor:
        """Weight decay ``beta/2 (||W1||^2 + ||W2||^2)``."""
        return 0.5 * beta * (self.first.pow(2).sum() + self.second.pow(2).sum())
