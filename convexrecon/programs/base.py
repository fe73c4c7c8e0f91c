"""The base of every program: *what* is minimised.

A program can evaluate its objective, give a relative optimality certificate
(0 at the optimum) and, when small, export itself to cvxpy. Solvers ask the program
for values, gradients, proxes and step sizes; they never guess.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Program"]


class Program:
    """Abstract program. Subclasses implement the three methods below."""

    def value(self, x: Any) -> float:
        """Objective value at ``x``."""
        raise NotImplementedError

    def certificate(self, x: Any) -> float:
        """Relative optimality measure at ``x``; 0 at the optimum."""
        raise NotImplementedError

    def to_cvxpy(self):
        """Build the same problem in cvxpy.

        Returns ``(problem, variables)`` where ``variables`` maps back to this
        program's variable structure (see :func:`convexrecon.solvers.cvxpy_reference`).
        Raises InputError naming the size limit when the problem is too large.
        """
        raise NotImplementedError
