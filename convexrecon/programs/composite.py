"""Composite programs ``min_x f(x) + g(x)``: a smooth term plus a prox-friendly term.

FISTA and ISTA work on any :class:`CompositeProgram`. Step sizes come from the smooth
term's ``lipschitz()``; solvers never guess them.
"""

from __future__ import annotations

import torch

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

    def prox(self, x, step: float):
        """``argmin_z step * g(z) + ||z - x||^2 / 2``."""
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
