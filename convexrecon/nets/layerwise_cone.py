"""The ReLU (cone) form of a layer-wise step: ``--form relu``.

One step fits the residual target ``Y`` from the features ``H`` with the per-channel
cone program of :mod:`convexrecon.programs.relu.conv_cone`, with the same two
changes as the gated step (:class:`~convexrecon.nets.layerwise_program.LayerProgram`):

- **data consistency inside the step**: the model output goes through the DC map
  ``M`` (:class:`~convexrecon.nets.layerwise_program.DCMap`), so the data term is
  ``1/2 ||M (sum_i D_i conv(H, V_i - W_i)) - Y||^2``. The cone constraints
  ``(2 D_i - 1) conv(H, V_ic) >= 0`` (and ``W``) do not involve ``M``;
- **whitened coordinates** (optional): ``V = W_p V'``, ``W = W_p W'`` with the patch
  whitening matrix ``W_p``; the penalty is ``beta`` times the filter norms of the
  whitened ``V', W'`` (a different regulariser, as for the gated form); the
  constraints are on the true pre-activations ``conv(H, W_p V')``.

:class:`LayerConeProgram` is a :class:`~convexrecon.programs.relu.ConvTwoLayerReLUCone`
whose convolution, prediction and its adjoint, and data Lipschitz constant carry
these changes, so :class:`~convexrecon.solvers.auglag.ConvReLUAugLag` (augmented
Lagrangian with FISTA subproblems) solves it unchanged, and its certificate
(``max(relative duality gap, relative violation)``) is that of the composed
program. The recovered network is a
:class:`~convexrecon.programs.relu.networks.ReLUConvNet` with true ReLUs.
"""

from __future__ import annotations

from typing import Any

import torch

from convexrecon.errors import InputError
from convexrecon.nets.layerwise_program import DCMap, WhitenMap, patch_gram
from convexrecon.operators.base import Compose
from convexrecon.operators.linalg import power_method
from convexrecon.programs.relu.blocks import FILTER_DIMS, group_norms
from convexrecon.programs.relu.conv_cone import ConvTwoLayerReLUCone

__all__ = ["LayerConeProgram"]


class LayerConeProgram(ConvTwoLayerReLUCone):
    """The cone program of ``base`` with a DC map on its output and optional
    whitened filter coordinates (module docstring).

    Args:
        base: a :class:`ConvTwoLayerReLUCone` on the features and the target (its
            patterns, images and network recovery are reused; it is not modified).
        dc: the :class:`DCMap` of the training samples, or ``None``.
        whiten: the whitening matrix ``W_p`` ``(C k k, C k k)``, or ``None``.

    Variables are tuples ``(V', W')`` of shape :attr:`shape` (``(P, C_out, C k k,
    1, 1)`` when whitened, else the base's).
    """

    def __init__(self, base: ConvTwoLayerReLUCone, *, dc: DCMap | None = None,
                 whiten: torch.Tensor | None = None) -> None:
        if not isinstance(base, ConvTwoLayerReLUCone):
            raise InputError(f"base: expected a ConvTwoLayerReLUCone, got {type(base).__name__}")
        self.base, self.dc = base, dc
        self.gated, self.op, self.Y = base.gated, base.op, base.Y
        self.beta, self.dtype, self.sign = base.beta, base.dtype, base.sign
        self.wmap: WhitenMap | None = None
        self.shape = base.shape
        self._knorm: float | None = None
        self._lip: float | None = None
        if whiten is not None:
            p, co, c, k, _ = base.op.ishape
            self.wmap = WhitenMap(whiten, n_patterns=p, c_out=co, c_in=c, kernel=k)
            self.shape = tuple(self.wmap.ishape)

    # -- coordinates ------------------------------------------------------------------
    def zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(self.shape, dtype=self.dtype, device=self.Y.device)
        return z, z.clone()

    def _stack(self, x: Any) -> torch.Tensor:
        ok = isinstance(x, tuple) and len(x) == 2 and all(
            isinstance(t, torch.Tensor) and tuple(t.shape) == self.shape for t in x)
        if not ok:
            raise InputError(f"x: expected a tuple (V, W) of tensors {self.shape}, got "
                             f"{type(x).__name__}")
        return torch.stack(list(x))

    def filters(self, x: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V, W)`` in the base program's coordinates (``W_p V'`` when whitened)."""
        s = self._to_base(self._stack(x))
        return s[0], s[1]

    def _to_base(self, s: torch.Tensor) -> torch.Tensor:
        return self.wmap.forward(s) if self.wmap is not None else s

    # -- the composed maps (what the augmented Lagrangian and the certificate use) -----
    def conv(self, s: torch.Tensor) -> torch.Tensor:
        return self.op.conv_all(self._to_base(s))

    def conv_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        g = self.op.conv_all_adjoint(z)
        return self.wmap.adjoint(g) if self.wmap is not None else g

    def predict_from_conv(self, z: torch.Tensor) -> torch.Tensor:
        out = super().predict_from_conv(z)
        return self.dc.apply(out, slot=0) if self.dc is not None else out

    def predict_from_conv_adjoint(self, r: torch.Tensor) -> torch.Tensor:
        # M is self-adjoint; its own CG slot keeps both sequences' warm starts
        return super().predict_from_conv_adjoint(self.dc.apply(r, slot=2) if self.dc is not None else r)

    def data_lipschitz(self) -> float:
        """``||A||^2`` of the (whitened) pattern map; ``||M|| <= 1`` keeps it valid
        with DC. Cached."""
        if self._lip is None:
            if self.wmap is None:
                self._lip = self.base.data_lipschitz()
            else:
                op = Compose(self.op, self.wmap)
                self._lip = 1.02 * power_method(op.N, iters=60, tol=1e-4, device=self.Y.device)
        return self._lip

    def k_norm2(self) -> float:
        """``||K W_p||^2``: the largest eigenvalue of ``W_p^T (P^T P) W_p`` for the
        patch matrix ``P`` (``||K||^2`` without whitening). Cached."""
        if self._knorm is None:
            if self.wmap is None:
                self._knorm = self.base.k_norm2()
            else:
                gram, _ = patch_gram(self.op.x_padded, self.op.kernel_size)
                w = self.wmap.W.double()
                self._knorm = float(torch.linalg.eigvalsh(w.T @ gram @ w)[-1])
        return self._knorm

    def beta_max(self) -> float:
        """``max_{i,c}`` filter norm of the data term's gradient at zero: at or above
        it, zero is optimal."""
        g = self.conv_adjoint(self.predict_from_conv_adjoint(self.Y))
        return float(group_norms(g, FILTER_DIMS).max())

    def pattern_check(self, x, *, n_fresh: int | None = None, seed: int = 12345) -> float:
        raise InputError("pattern_check: not available for the layer-wise cone step "
                         "(use the base ConvTwoLayerReLUCone)")

    def to_cvxpy(self, **kwargs: Any):
        raise InputError("to_cvxpy: not available for the layer-wise cone step "
                         "(use the base ConvTwoLayerReLUCone)")

    def recover_network(self, x: Any, **kwargs: Any):
        """The ReLU CNN of the solution (DC is not part of it; base coordinates)."""
        return self.base.recover_network(self.filters(x), **kwargs)
