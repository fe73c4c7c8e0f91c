"""Composite programs ``min_x f(x) + g(x)``: a smooth term plus a prox-friendly term.

FISTA and ISTA work on any :class:`CompositeProgram`. Step sizes come from the smooth
term's ``lipschitz()``; solvers never guess them.

Batches of independent systems (the first ``batch_dims`` axes of the variable index
them): a prox term's ``prox(x, step)`` then takes one step per system (a tensor of
the batch shape), and programs that give per-system values and certificates
(``value_per_system`` / ``certificate_per_system``) let the solvers treat every
system as if it ran alone.
"""

from __future__ import annotations

import torch

from convexrecon.programs._systems import per_system, system_sumsq
from convexrecon.programs.base import Program
from convexrecon.tree import tree_map2, tree_norm

__all__ = ["SmoothTerm", "ProxTerm", "CompositeProgram"]


class SmoothTerm:
    """A differentiable term with a Lipschitz-continuous gradient."""

    def value(self, x) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, x):
        raise NotImplementedError

    def value_and_grad(self, x):
        """``(value, grad)``; override when the two share work."""
        return self.value(x), self.grad(x)

    def lipschitz(self) -> float:
        """Lipschitz constant of the gradient (cached by implementations)."""
        raise NotImplementedError


class ProxTerm:
    """A term with a cheap proximal operator."""

    def value(self, x) -> torch.Tensor:
        raise NotImplementedError

    def prox(self, x, step):
        """``argmin_z step * g(z) + ||z - x||^2 / 2``; ``step`` is a number or, for a
        batch of systems, a tensor of the leading batch shape (one step per system)."""
        raise NotImplementedError


class CompositeProgram(Program):
    """``f(x) + g(x)`` with ``f`` a :class:`SmoothTerm` and ``g`` a :class:`ProxTerm`.

    The default certificate is the norm of the prox-gradient mapping at step
    ``1/L``, relative to ``||grad f(0)||``-free scale ``max(||x||, 1)``; subclasses
    give sharper ones (duality gaps).
    """

    def __init__(self, smooth: SmoothTerm, reg: ProxTerm | None = None) -> None:
        self.smooth = smooth
        self.reg = reg

    def value(self, x) -> float:
        v = self.smooth.value(x)
        if self.reg is not None:
            v = v + self.reg.value(x)
        return float(v)

    def prox_grad_step(self, x, step: float):
        """One forward-backward step ``prox_{step g}(x - step * grad f(x))``."""
        g = self.smooth.grad(x)
        z = tree_map2(lambda a, b: a - step * b, x, g)
        return self.reg.prox(z, step) if self.reg is not None else z

    def certificate(self, x) -> float:
        step = 1.0 / self.smooth.lipschitz()
        z = self.prox_grad_step(x, step)
        gmap = tree_norm(tree_map2(lambda a, b: a - b, x, z)) / step
        scale = max(float(tree_norm(x)), 1.0)
        return float(gmap) / scale

    def gradient_mapping_per_system(self, x: torch.Tensor, batch_dims: int, *,
                                    grad: torch.Tensor | None = None) -> torch.Tensor:
        """The default certificate for every system of a tensor variable: the norm of
        the prox-gradient mapping at each system's step ``1/L_s`` over
        ``max(||x_s||, 1)`` (float64, shape ``x.shape[:batch_dims]``). Needs a smooth
        term with ``lipschitz_per_system``; ``grad`` skips recomputing the gradient."""
        k = batch_dims
        step = 1.0 / self.smooth.lipschitz_per_system(k)
        g = self.smooth.grad(x) if grad is None else grad
        s = per_system(step.to(x.real.dtype), x)
        z = x - s * g
        if self.reg is not None:
            z = self.reg.prox(z, step.to(x.real.dtype))
        gmap = torch.sqrt(system_sumsq(x - z, k).double()) / step
        return gmap / torch.sqrt(system_sumsq(x, k).double()).clamp_min(1.0)
